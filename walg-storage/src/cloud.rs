//! The object-store backends: `s3`, `gs` (alias `gcs`) and `azure` (aliases
//! `az`, `azblob`), built from WAL-G setting names in [`StorageSpec::settings`].
//!
//! Each factory validates the location and settings (a malformed one is a
//! [`StorageError::Config`] naming the WAL-G setting), builds an opendal
//! operator, and wraps it in a [`Guarded`] store with the spec's timeout and
//! retries. Secrets are handed to opendal and to the message redactor, and
//! nowhere else: no `Debug` or error message prints them.
//!
//! What this module does not do: read environment variables (the CLI puts
//! them into the settings), or detect a bucket's region (set `AWS_REGION`).

// Each backend feature uses part of the shared helpers.
#![cfg_attr(
    not(all(feature = "s3", feature = "gcs", feature = "azure")),
    allow(dead_code, unused_imports)
)]

use std::sync::Arc;

use opendal::Operator;
use walg_core::pipeline::budget::PartRules;
use walg_core::store::DynStore;

use crate::cause::{redact, Backend, Identity, Site};
use crate::credentials::Tracker;
use crate::guard::Guarded;
use crate::opendal_store::{install_http_transport, OpendalStore, PutMode};
use crate::spec::{StorageError, StorageSpec};

const MIB: usize = 1 << 20;

/// S3 multipart uploads: parts of 5 MiB to 5 GiB, at most 10,000 of them;
/// opendal's multipart writer holds the part being sent and the next one.
const S3_PARTS: PartRules = PartRules {
    min_part: 5 * MIB,
    max_part: 5 << 30,
    max_parts: 10_000,
    align: 1,
    parts_held: 2,
    fixed: 0,
};

/// GCS: a create-if-absent write (every wal-push) is a resumable upload,
/// which opendal sends in fixed 8 MiB pieces (multiples of 256 KiB, as GCS
/// wants) and of which it keeps one pending besides the two chunks its
/// writer holds; chunks are at least 5 MiB there, and a plain overwrite is
/// an XML multipart upload (S3's limits).
const GCS_PARTS: PartRules = PartRules {
    min_part: 5 * MIB,
    max_part: 5 << 30,
    max_parts: 10_000,
    align: 256 << 10,
    parts_held: 2,
    fixed: 8 * MIB,
};

/// Azure block blobs: blocks up to 4000 MiB, at most 50,000 of them;
/// opendal's block writer holds the block being sent and the next one.
const AZURE_PARTS: PartRules = PartRules {
    min_part: MIB,
    max_part: 4000 * MIB,
    max_parts: 50_000,
    align: 1,
    parts_held: 2,
    fixed: 0,
};

/// Splits `bucket/path/in/bucket` into the bucket and an opendal root
/// (`/path/in/bucket/`).
fn split_location<'a>(
    spec: &'a StorageSpec,
    setting: &str,
    what: &str,
) -> Result<(&'a str, String), StorageError> {
    let location = spec.location.trim();
    let (bucket, path) = location.split_once('/').unwrap_or((location, ""));
    if bucket.is_empty() {
        return Err(spec.config_error(
            setting,
            format!(
                "no {what} in {:?}; expected {}://{what}/path",
                spec.location, spec.scheme
            ),
        ));
    }
    if bucket.contains(|c: char| c.is_whitespace() || c == '?' || c == '#' || c == '\\') {
        return Err(spec.config_error(setting, format!("invalid {what} name {bucket:?}")));
    }
    let path = path.trim_matches('/');
    let root = if path.is_empty() {
        "/".to_string()
    } else {
        format!("/{path}/")
    };
    Ok((bucket, root))
}

fn url_of(scheme: &str, bucket: &str, root: &str) -> String {
    format!("{scheme}://{bucket}{}", root.trim_end_matches('/'))
}

fn parse_bool(spec: &StorageSpec, setting: &str) -> Result<Option<bool>, StorageError> {
    match spec
        .settings
        .get(setting)
        .map(|v| v.trim().to_ascii_lowercase())
    {
        None => Ok(None),
        Some(v) if ["true", "1", "yes", "on"].contains(&v.as_str()) => Ok(Some(true)),
        Some(v) if ["false", "0", "no", "off"].contains(&v.as_str()) => Ok(Some(false)),
        Some(v) => Err(spec.config_error(setting, format!("expected true or false, got {v:?}"))),
    }
}

fn secrets(spec: &StorageSpec) -> Vec<String> {
    spec.settings
        .iter()
        .filter(|(k, _)| crate::spec::Settings::is_secret(k))
        .map(|(_, v)| v.to_string())
        .collect()
}

/// What messages may say about a cloud storage: `url` (credential-free),
/// its bucket, endpoint, region and identity, and the secrets to mask.
fn site(
    spec: &StorageSpec,
    backend: Backend,
    url: &str,
    bucket: &str,
    endpoint: Option<String>,
    identity: Identity,
    tracker: Arc<Tracker>,
) -> Site {
    let mut site = Site::new(backend, url, bucket);
    site.endpoint = endpoint;
    site.region = spec.settings.get("AWS_REGION").map(str::to_string);
    site.identity = identity;
    site.secrets = secrets(spec);
    site.credentials = Some(tracker);
    site
}

fn finish(
    spec: &StorageSpec,
    setting: &str,
    site: Site,
    op: Result<Operator, opendal::Error>,
    put_mode: PutMode,
    atomic: bool,
) -> Result<DynStore, StorageError> {
    finish_with(spec, setting, site, op, put_mode, atomic, |s| s)
}

fn finish_with(
    spec: &StorageSpec,
    setting: &str,
    site: Site,
    op: Result<Operator, opendal::Error>,
    put_mode: PutMode,
    atomic: bool,
    adjust: impl FnOnce(OpendalStore) -> OpendalStore,
) -> Result<DynStore, StorageError> {
    let url = site.url.clone();
    let op = op.map_err(|e| {
        spec.config_error(
            setting,
            format!(
                "cannot configure {url}: {}",
                redact(&e.to_string(), &site.secrets)
            ),
        )
    })?;
    let store = adjust(OpendalStore::new(&spec.name, site, op, put_mode, atomic).checking_bucket());
    Ok(Guarded::wrap(
        Arc::new(store),
        url,
        spec.timeout,
        spec.retries,
    ))
}

/// `s3://bucket/path` (`WALG_S3_PREFIX`). Reads `AWS_ENDPOINT`, `AWS_REGION`
/// (default `us-east-1`), `AWS_S3_FORCE_PATH_STYLE`, `AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `WALG_S3_STORAGE_CLASS`,
/// `WALG_S3_SSE` (`AES256` or `aws:kms`) and `WALG_S3_SSE_KMS_ID`.
#[cfg(feature = "s3")]
pub fn open_s3(spec: &StorageSpec) -> Result<DynStore, StorageError> {
    const SETTING: &str = "WALG_S3_PREFIX";
    install_http_transport();
    let (bucket, root) = split_location(spec, SETTING, "bucket")?;
    let s = &spec.settings;
    let mut b = opendal::services::S3::default().bucket(bucket).root(&root);
    let endpoint = s.get("AWS_ENDPOINT");
    if let Some(ep) = endpoint {
        if !ep.starts_with("http://") && !ep.starts_with("https://") {
            return Err(spec.config_error(
                "AWS_ENDPOINT",
                format!("expected an http:// or https:// URL, got {ep:?}"),
            ));
        }
        b = b.endpoint(ep);
    }
    // opendal would otherwise read AWS_REGION from the process environment;
    // the settings are the only source, and us-east-1 is what S3-compatible
    // servers (and WAL-G with an endpoint) expect.
    b = b.region(s.get("AWS_REGION").unwrap_or("us-east-1"));
    // WAL-G's default is virtual-host style; S3-compatible servers behind a
    // custom endpoint (MinIO, moto, an IP address) mostly need path style,
    // so without an explicit setting an endpoint implies path style.
    let path_style = parse_bool(spec, "AWS_S3_FORCE_PATH_STYLE")?.unwrap_or(endpoint.is_some());
    if !path_style {
        b = b.enable_virtual_host_style();
    }
    // walg chooses the one credential source (see `credentials`); opendal
    // gets a chain of that provider alone and reads no environment.
    let source = crate::credentials::aws::select(spec, &crate::credentials::file_exists)?;
    let identity = match &source {
        crate::credentials::aws::Source::Static { key_id, session } => Identity::new(
            format!(
                "key id {key_id:?}{}",
                if *session {
                    " with a session token"
                } else {
                    ""
                }
            ),
            if *session {
                "fix AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN"
            } else {
                "fix AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            },
        ),
        other => Identity::new(other.label(), other.fix()),
    };
    let tracker = Tracker::new();
    let provider = crate::credentials::aws::Provider::new(spec, source, tracker.clone());
    b = b
        .disable_config_load()
        .disable_ec2_metadata()
        .credential_provider_chain(reqsign_core::ProvideCredentialChain::new().push(provider));
    if let Some(class) = s.get("WALG_S3_STORAGE_CLASS") {
        b = b.default_storage_class(class);
    }
    match s.get("WALG_S3_SSE") {
        None => {}
        Some("AES256") => b = b.server_side_encryption_with_s3_key(),
        Some("aws:kms") => {
            b = match s.get("WALG_S3_SSE_KMS_ID") {
                Some(id) => b.server_side_encryption_with_customer_managed_kms_key(id),
                None => b.server_side_encryption_with_aws_managed_kms_key(),
            }
        }
        Some(other) => {
            return Err(spec.config_error(
                "WALG_S3_SSE",
                format!("expected AES256 or aws:kms, got {other:?}"),
            ))
        }
    }
    let url = url_of("s3", bucket, &root);
    let endpoint = endpoint.map(str::to_string);
    let site = site(spec, Backend::S3, &url, bucket, endpoint, identity, tracker);
    // S3 (and moto, MinIO) honour If-None-Match on PUT.
    finish(
        spec,
        SETTING,
        site,
        Operator::new(b),
        PutMode::within_budget(&S3_PARTS),
        true,
    )
}

/// `gs://bucket/path` (`WALG_GS_PREFIX`). Reads `GOOGLE_APPLICATION_CREDENTIALS`
/// and an endpoint override `WALG_GS_ENDPOINT` (or `STORAGE_EMULATOR_HOST`).
#[cfg(feature = "gcs")]
pub fn open_gcs(spec: &StorageSpec) -> Result<DynStore, StorageError> {
    const SETTING: &str = "WALG_GS_PREFIX";
    install_http_transport();
    let (bucket, root) = split_location(spec, SETTING, "bucket")?;
    let s = &spec.settings;
    let mut b = opendal::services::Gcs::default().bucket(bucket).root(&root);
    let endpoint = match (s.get("WALG_GS_ENDPOINT"), s.get("STORAGE_EMULATOR_HOST")) {
        (Some(ep), _) => Some(ep.to_string()),
        // The Google client libraries accept a bare host:port here.
        (None, Some(host)) if host.contains("://") => Some(host.to_string()),
        (None, Some(host)) => Some(format!("http://{host}")),
        (None, None) => None,
    };
    if let Some(ep) = &endpoint {
        b = b.endpoint(ep);
    }
    let source = crate::credentials::gcs::select(spec)?;
    let url = url_of("gs", bucket, &root);
    let tracker = Tracker::new();
    let identity = match &source {
        crate::credentials::gcs::Source::Anonymous => {
            // An emulator: no token to fetch, no VM metadata server to ask.
            b = b
                .skip_signature()
                .disable_vm_metadata()
                .disable_config_load();
            Identity::new("anonymous requests", "set GOOGLE_APPLICATION_CREDENTIALS")
        }
        other => {
            let identity = Identity::new(other.label(), other.fix());
            let provider =
                crate::credentials::gcs::Provider::new(spec, other.clone(), tracker.clone());
            b = b
                .disable_vm_metadata()
                .disable_config_load()
                .credential_provider_chain(
                    reqsign_core::ProvideCredentialChain::new().push(provider),
                );
            identity
        }
    };
    let site = site(
        spec,
        Backend::Gcs,
        &url,
        bucket,
        endpoint.clone(),
        identity,
        tracker,
    );
    // Streamed like every backend, so a 1 GiB segment never sits in memory.
    // A create-if-absent write (every wal-push) is a resumable upload with
    // ifGenerationMatch=0 in 8 MiB pieces; a plain overwrite is one request
    // up to one chunk and an XML multipart upload above. fake-gcs-server
    // takes resumable uploads but ignores ifGenerationMatch=0, so behind an
    // endpoint override create-if-absent is checked with a stat first, and
    // the condition is still sent so the emulator gets the same protocol as
    // GCS.
    let atomic = endpoint.is_none();
    finish_with(
        spec,
        SETTING,
        site,
        Operator::new(b),
        PutMode::within_budget(&GCS_PARTS),
        atomic,
        OpendalStore::sending_if_not_exists,
    )
}

/// `azure://container/path` (`WALG_AZ_PREFIX`). Reads `AZURE_STORAGE_ACCOUNT`,
/// `AZURE_STORAGE_ACCESS_KEY`, `AZURE_STORAGE_SAS_TOKEN` and an endpoint
/// override `WALG_AZ_ENDPOINT` (default `https://<account>.blob.core.windows.net`).
#[cfg(feature = "azure")]
pub fn open_azure(spec: &StorageSpec) -> Result<DynStore, StorageError> {
    const SETTING: &str = "WALG_AZ_PREFIX";
    install_http_transport();
    let (container, root) = split_location(spec, SETTING, "container")?;
    let s = &spec.settings;
    let account = s.get("AZURE_STORAGE_ACCOUNT");
    let configured = s
        .get("WALG_AZ_ENDPOINT")
        .map(|ep| ep.trim_end_matches('/').to_string());
    let endpoint = match (s.get("WALG_AZ_ENDPOINT"), account) {
        (Some(ep), _) => ep.trim_end_matches('/').to_string(),
        (None, Some(acc)) => format!("https://{acc}.blob.core.windows.net"),
        (None, None) => {
            return Err(spec.config_error(
                "AZURE_STORAGE_ACCOUNT",
                "not set; set the storage account name",
            ))
        }
    };
    let mut b = opendal::services::Azblob::default()
        .container(container)
        .root(&root)
        .endpoint(&endpoint);
    if let Some(acc) = account {
        b = b.account_name(acc);
    }
    let source = crate::credentials::azure::select(spec)?;
    let tracker = Tracker::new();
    let identity = match &source {
        crate::credentials::azure::Source::AccountKey { account } => Identity::new(
            format!("the account key of {account:?}"),
            "fix AZURE_STORAGE_ACCESS_KEY or AZURE_STORAGE_ACCOUNT",
        ),
        crate::credentials::azure::Source::Sas => {
            Identity::new("the SAS token", "renew AZURE_STORAGE_SAS_TOKEN")
        }
        crate::credentials::azure::Source::Anonymous => Identity::new(
            "anonymous requests",
            "set AZURE_STORAGE_ACCESS_KEY or AZURE_STORAGE_SAS_TOKEN",
        ),
        other => Identity::new(other.label(), other.fix()),
    };
    if source == crate::credentials::azure::Source::Anonymous {
        b = b.skip_signature();
    } else {
        let provider = crate::credentials::azure::Provider::new(spec, source, tracker.clone());
        b = b.credential_provider_chain(reqsign_core::ProvideCredentialChain::new().push(provider));
    }
    let url = url_of("azure", container, &root);
    let site = site(
        spec,
        Backend::Azure,
        &url,
        container,
        configured,
        identity,
        tracker,
    );
    finish(
        spec,
        SETTING,
        site,
        Operator::new(b),
        PutMode::within_budget(&AZURE_PARTS),
        true,
    )
}

#[cfg(all(test, feature = "s3", feature = "gcs", feature = "azure"))]
mod tests {
    use super::*;

    fn spec(scheme: &str, location: &str, settings: &[(&str, &str)]) -> StorageSpec {
        let mut s = StorageSpec::new("default", scheme, location);
        s.settings = settings.iter().copied().collect();
        s
    }

    fn check_config_error(result: Result<DynStore, StorageError>, setting: &str) {
        match result {
            Err(e @ StorageError::Config { .. }) => assert!(e.to_string().contains(setting), "{e}"),
            Err(e) => panic!("expected a config error naming {setting}, got {e}"),
            Ok(s) => panic!("expected a config error naming {setting}, opened {s:?}"),
        }
    }

    #[test]
    fn splits_locations() {
        let s = spec("s3", "bucket/a/b/", &[]);
        assert_eq!(
            split_location(&s, "X", "bucket").expect("valid"),
            ("bucket", "/a/b/".to_string())
        );
        let s = spec("s3", "bucket", &[]);
        assert_eq!(
            split_location(&s, "X", "bucket").expect("valid"),
            ("bucket", "/".to_string())
        );
    }

    #[test]
    fn malformed_locations_name_the_setting() {
        check_config_error(open_s3(&spec("s3", "", &[])), "WALG_S3_PREFIX");
        check_config_error(open_s3(&spec("s3", "/path", &[])), "WALG_S3_PREFIX");
        check_config_error(open_gcs(&spec("gs", "", &[])), "WALG_GS_PREFIX");
        check_config_error(
            open_azure(&spec("azure", "", &[("AZURE_STORAGE_ACCOUNT", "a")])),
            "WALG_AZ_PREFIX",
        );
        check_config_error(
            open_azure(&spec("azure", "c/p", &[])),
            "AZURE_STORAGE_ACCOUNT",
        );
        check_config_error(
            open_s3(&spec("s3", "b", &[("WALG_S3_SSE", "rot13")])),
            "WALG_S3_SSE",
        );
        check_config_error(
            open_s3(&spec("s3", "b", &[("AWS_ENDPOINT", "localhost:9000")])),
            "AWS_ENDPOINT",
        );
        check_config_error(
            open_s3(&spec("s3", "b", &[("AWS_S3_FORCE_PATH_STYLE", "maybe")])),
            "AWS_S3_FORCE_PATH_STYLE",
        );
    }

    #[test]
    fn debug_of_a_store_hides_credentials() {
        let store = open_s3(&spec(
            "s3",
            "bucket/p",
            &[
                ("AWS_ENDPOINT", "http://127.0.0.1:1"),
                ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
                ("AWS_SECRET_ACCESS_KEY", "verysecretvalue"),
                ("AWS_SESSION_TOKEN", "sessiontokenvalue"),
            ],
        ))
        .expect("valid s3 spec");
        let text = format!("{store:?}");
        assert!(
            !text.contains("verysecretvalue") && !text.contains("sessiontokenvalue"),
            "{text}"
        );
        assert!(text.contains("s3://bucket/p"), "{text}");
        let store = open_azure(&spec(
            "azure",
            "c/p",
            &[
                ("AZURE_STORAGE_ACCOUNT", "acct"),
                ("AZURE_STORAGE_SAS_TOKEN", "sv=2020&sig=topsecretsig"),
            ],
        ))
        .expect("valid azure spec");
        assert!(!format!("{store:?}").contains("topsecretsig"));
    }
}
