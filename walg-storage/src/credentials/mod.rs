//! Where a cloud storage's credentials come from.
//!
//! walg chooses the source itself, from the storage's own settings and in the
//! order each cloud's SDKs use (see `docs/storages.md`, "where walg gets
//! credentials"), and hands opendal a chain of exactly one provider: the one
//! for that source. opendal's own default chains try every source in turn and
//! take the next when one fails, so a pod whose web-identity token file could
//! not be read silently wrote with the node's instance-metadata role. Here a
//! source that is configured and fails is an error that names the source
//! and the setting; nothing broader is tried.
//!
//! Each backend module has two halves: `select` (pure: settings in, the
//! chosen source or a configuration error out; unit-tested) and a thin
//! provider that fetches the credentials of that source, mostly through the
//! signing crate's own provider for it (`reqsign`), with the gaps filled
//! here: the STS endpoint override, the token files read (and a JWT's
//! expiry checked) with errors naming the file, Azure's `IDENTITY_ENDPOINT`
//! / `IDENTITY_HEADER`, and a deadline on every fetch.
//!
//! The provider sees only the storage's settings as its environment (never
//! the process environment), so a failover section uses its own identity
//! unless the CLI copied the top level's into it.
//!
//! A failed fetch is recorded in the storage's [`Tracker`]: opendal's chain
//! turns a provider's error into "no credential", so `opendal_store` reads
//! the recorded failure back to explain the call (cause `identity`).
//! Temporary credentials are fetched again before they expire: the signer
//! caches a credential only while it has more than the signing crate's
//! margin left (AWS and GCS two minutes, Azure 20 seconds).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use reqsign_core::{Context, HttpSend, StaticEnv};

use crate::spec::{Settings, StorageError, StorageSpec};

#[cfg(feature = "s3")]
pub(crate) mod aws;
#[cfg(feature = "azure")]
pub(crate) mod azure;
#[cfg(feature = "gcs")]
pub(crate) mod gcs;

/// Why credentials could not be had from the chosen source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    /// `web identity role arn:...: cannot read the token file /x: ...`.
    pub what: String,
    /// What to change, naming the setting.
    pub fix: String,
    /// A timeout or an unreachable endpoint (worth a retry), not a refusal.
    pub transient: bool,
}

/// The chosen source of one storage's credentials and its last failure.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    last: Mutex<Option<Failure>>,
}

impl Tracker {
    pub(crate) fn new() -> Arc<Tracker> {
        Arc::new(Tracker::default())
    }

    fn record(&self, failure: Option<Failure>) {
        if let Ok(mut last) = self.last.lock() {
            *last = failure;
        }
    }

    /// The failure of the last fetch, if it failed.
    pub(crate) fn failure(&self) -> Option<Failure> {
        self.last.lock().ok().and_then(|l| l.clone())
    }
}

/// What a provider shares: the source's label, the settings it may see,
/// its deadline and tracker.
#[derive(Clone)]
pub(crate) struct Common {
    pub label: String,
    pub env: HashMap<String, String>,
    pub home: Option<PathBuf>,
    pub timeout: Duration,
    pub tracker: Arc<Tracker>,
    /// Values to mask in any message (keys, tokens read from files).
    pub secrets: Vec<String>,
}

impl fmt::Debug for Common {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The environment holds secrets: only the label.
        f.debug_struct("Common")
            .field("label", &self.label)
            .finish()
    }
}

impl Common {
    pub(crate) fn new(spec: &StorageSpec, label: String, tracker: Arc<Tracker>) -> Common {
        let env: HashMap<String, String> = spec
            .settings
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let secrets = spec
            .settings
            .iter()
            .filter(|(k, _)| Settings::is_secret(k))
            .map(|(_, v)| v.to_string())
            .filter(|v| !v.is_empty())
            .collect();
        Common {
            label,
            home: spec.settings.get("HOME").map(PathBuf::from),
            env,
            // Below the storage call's own deadline, so the call fails with
            // this source's name rather than a bare timeout.
            timeout: spec.timeout.mul_f64(0.75).max(Duration::from_millis(100)),
            tracker,
            secrets,
        }
    }

    /// `ctx` seeing only this storage's settings as its environment.
    pub(crate) fn context(&self, ctx: &Context) -> Context {
        ctx.clone().with_env(StaticEnv {
            home_dir: self.home.clone(),
            envs: self.env.clone(),
        })
    }

    fn redact(&self, text: &str, extra: &[&str]) -> String {
        let mut all: Vec<String> = self.secrets.clone();
        all.extend(
            extra
                .iter()
                .filter(|s| !s.is_empty())
                .map(|s| s.to_string()),
        );
        crate::cause::redact(text, &all)
    }

    pub(crate) fn failure(&self, what: impl fmt::Display, fix: &str, transient: bool) -> Failure {
        Failure {
            what: self.redact(&format!("{}: {what}", self.label), &[]),
            fix: fix.to_string(),
            transient,
        }
    }

    /// Runs one fetch with the deadline; records and logs the outcome.
    /// `endpoint` names what a timeout waited for; `fix` is the fix of a
    /// failure the fetch did not classify itself.
    pub(crate) async fn run<C, F>(
        &self,
        endpoint: &str,
        fix: &str,
        fetch: F,
    ) -> reqsign_core::Result<Option<C>>
    where
        F: Future<Output = Result<Option<C>, Failure>>,
    {
        let outcome = match tokio::time::timeout(self.timeout, fetch).await {
            Err(_) => Err(self.failure(
                format!(
                    "no answer from {endpoint} within {}",
                    crate::guard::fmt_duration(self.timeout)
                ),
                &format!("check that it runs and answers, or {fix} (WALG_STORAGE_TIMEOUT bounds the wait)"),
                true,
            )),
            Ok(Ok(Some(c))) => Ok(c),
            Ok(Ok(None)) => Err(self.failure("found no credentials", fix, false)),
            Ok(Err(f)) => Err(f),
        };
        match outcome {
            Ok(c) => {
                self.tracker.record(None);
                tracing::debug!(source = %self.label, "storage credentials fetched");
                Ok(Some(c))
            }
            Err(f) => {
                tracing::debug!(source = %self.label, "storage credentials failed: {}", f.what);
                let message = f.what.clone();
                self.tracker.record(Some(f));
                Err(reqsign_core::Error::credential_invalid(message))
            }
        }
    }

    /// A signing crate's error as one line: its message and its sources,
    /// secrets (and `extra`, such as a token just read) masked.
    pub(crate) fn describe(&self, err: &reqsign_core::Error, extra: &[&str]) -> String {
        let mut text = err.to_string();
        let mut source = std::error::Error::source(err);
        let mut depth = 0;
        while let Some(s) = source {
            let more = s.to_string();
            if !text.contains(&more) {
                text.push_str(": ");
                text.push_str(&more);
            }
            source = s.source();
            depth += 1;
            if depth > 4 {
                break;
            }
        }
        self.redact(&text, extra)
    }
}

/// Sends requests whose URL starts with `from` to `to` instead: the STS
/// endpoint override (`AWS_ENDPOINT_URL_STS`), which the signing crate's
/// web identity provider lacks (it always asks `https://sts...`).
#[derive(Debug)]
pub(crate) struct Redirect {
    pub base: Context,
    pub from: String,
    pub to: String,
}

impl HttpSend for Redirect {
    async fn http_send(
        &self,
        mut req: http::Request<Bytes>,
    ) -> reqsign_core::Result<http::Response<Bytes>> {
        let uri = req.uri().to_string();
        if let Some(rest) = uri.strip_prefix(&self.from) {
            let target = format!("{}/{}", self.to.trim_end_matches('/'), rest);
            *req.uri_mut() = target.parse().map_err(|e| {
                reqsign_core::Error::config_invalid(format!("invalid endpoint {target:?}"))
                    .with_source(e)
            })?;
        }
        self.base.http_send(req).await
    }
}

/// Reads a token file (a projected service-account token), naming the file
/// and the setting in the error; checks a JWT's expiry claim.
pub(crate) async fn read_token_file(
    common: &Common,
    path: &str,
    setting: &str,
) -> Result<String, Failure> {
    let read = tokio::fs::read_to_string(path).await;
    let token = match read {
        Ok(t) => t.trim().to_string(),
        Err(e) => {
            let why = match e.kind() {
                std::io::ErrorKind::PermissionDenied => format!(
                    "the token file {path} is not readable by this user ({})",
                    crate::cause::current_user()
                ),
                std::io::ErrorKind::NotFound => format!("the token file {path} does not exist"),
                _ => format!("cannot read the token file {path}: {e}"),
            };
            return Err(common.failure(
                why,
                &format!("fix {setting} (the file must be readable by the user walg runs as)"),
                false,
            ));
        }
    };
    if token.is_empty() {
        return Err(common.failure(
            format!("the token file {path} is empty"),
            &format!("fix {setting}"),
            false,
        ));
    }
    if let Some(exp) = jwt_expiry(&token) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        if exp <= now {
            return Err(common.failure(
                format!(
                    "the token in {path} expired {} ago",
                    crate::guard::fmt_duration(Duration::from_secs((now - exp) as u64))
                ),
                &format!("renew the token in {setting} (the kubelet rotates projected tokens; check the pod's service account token volume)"),
                false,
            ));
        }
    }
    Ok(token)
}

/// The `exp` claim of a JWT, when `token` is one.
pub(crate) fn jwt_expiry(token: &str) -> Option<i64> {
    let mut parts = token.split('.');
    let (_, payload, _) = (parts.next()?, parts.next()?, parts.next()?);
    let bytes = base64url(payload)?;
    let text = std::str::from_utf8(&bytes).ok()?;
    let at = text.find("\"exp\"")?;
    let rest = text[at + 5..].trim_start().strip_prefix(':')?.trim_start();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Decodes unpadded base64url (a JWT part).
fn base64url(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Whether a file exists, for the choice of a shared credentials file.
pub(crate) fn file_exists(path: &Path) -> bool {
    path.is_file()
}

/// Where a storage's credentials come from, as `walg check` prints it
/// (`static keys (key id "AKIA...")`, `web identity role arn:...`,
/// `instance metadata (http://169.254.169.254)`); never a secret. An error
/// when the settings choose no usable source.
pub fn describe(spec: &StorageSpec) -> Result<String, StorageError> {
    match spec.scheme.as_str() {
        #[cfg(feature = "s3")]
        "s3" => aws::select(spec, &file_exists).map(|s| s.label()),
        #[cfg(feature = "gcs")]
        "gs" | "gcs" => gcs::select(spec).map(|s| s.label()),
        #[cfg(feature = "azure")]
        "azure" | "az" | "azblob" => azure::select(spec).map(|s| s.label()),
        "file" => Ok("the local file system (no credentials)".to_string()),
        _ => Ok("the backend's own settings".to_string()),
    }
}

/// The settings of `spec` that a failover section copies from the top level
/// when it sets `WALG_IDENTITY_FROM_ENV=true`: every variable that selects or
/// configures a workload identity (not static keys, which belong to an
/// account).
pub const IDENTITY_SETTINGS: &[&str] = &[
    "HOME",
    "AWS_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_SESSION_NAME",
    "AWS_ENDPOINT_URL_STS",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_EC2_METADATA_SERVICE_ENDPOINT",
    "AWS_EC2_METADATA_DISABLED",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GCE_METADATA_HOST",
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_AUTHORITY_HOST",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_jwt_expiry() {
        // {"alg":"none"} . {"sub":"x","exp":1700000000} . sig
        let token = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4IiwiZXhwIjoxNzAwMDAwMDAwfQ.c2ln";
        assert_eq!(jwt_expiry(token), Some(1_700_000_000));
        assert_eq!(jwt_expiry("not-a-jwt"), None);
        assert_eq!(jwt_expiry("a.b"), None);
    }
}
