//! GCS's credential sources, in Application Default Credentials' order: the
//! file `GOOGLE_APPLICATION_CREDENTIALS` names (a service-account key, an
//! external account of workload identity federation, an authorized user),
//! gcloud's well-known file, the metadata server (`GCE_METADATA_HOST`).

use std::path::PathBuf;
use std::sync::Arc;

use reqsign_core::{Context, ProvideCredential};
use reqsign_google::{Credential, FileCredentialProvider, VmMetadataCredentialProvider};

use super::{read_token_file, Common, Failure, Tracker};
use crate::spec::{StorageError, StorageSpec};

/// The metadata server's default host.
pub(crate) const METADATA: &str = "metadata.google.internal";

/// The chosen source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// A credentials file; `setting` is the one that named it.
    File { path: String, setting: &'static str },
    /// The metadata server (GKE Workload Identity, a VM's service account).
    Metadata { host: String },
    /// An emulator behind an endpoint override, nothing configured.
    Anonymous,
}

/// What a credentials file holds, from its `type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FileKind {
    ServiceAccount {
        email: String,
    },
    ExternalAccount {
        audience: String,
        token_file: Option<String>,
        /// `credential_source.format` is there (the signing crate needs it;
        /// gcloud writes `{"type": "text"}`).
        format: bool,
    },
    AuthorizedUser,
    Other(String),
}

/// Reads the kind of a credentials file from its JSON text.
pub(crate) fn file_kind(text: &str) -> Result<FileKind, String> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not valid JSON ({e})"))?;
    let field = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
    match v.get("type").and_then(|t| t.as_str()) {
        Some("service_account") => Ok(FileKind::ServiceAccount {
            email: field("client_email"),
        }),
        Some("external_account") => Ok(FileKind::ExternalAccount {
            audience: field("audience"),
            token_file: v
                .pointer("/credential_source/file")
                .and_then(|f| f.as_str())
                .map(str::to_string),
            format: v.pointer("/credential_source/format").is_some(),
        }),
        Some("authorized_user") => Ok(FileKind::AuthorizedUser),
        Some(other) => Ok(FileKind::Other(other.to_string())),
        None => Err(
            "no \"type\" field (expected service_account, external_account or authorized_user)"
                .to_string(),
        ),
    }
}

impl FileKind {
    fn label(&self, path: &str) -> String {
        match self {
            FileKind::ServiceAccount { email } => {
                format!("service account {email} (key file {path})")
            }
            FileKind::ExternalAccount {
                audience,
                token_file,
                ..
            } => format!(
                "workload identity federation {audience} ({path}{})",
                token_file
                    .as_ref()
                    .map(|f| format!(", token file {f}"))
                    .unwrap_or_default()
            ),
            FileKind::AuthorizedUser => format!("authorized user ({path})"),
            FileKind::Other(t) => format!("{t} credentials ({path})"),
        }
    }
}

impl Source {
    /// What `walg check` prints; reads the file's kind when there is one.
    pub(crate) fn label(&self) -> String {
        match self {
            Source::File { path, .. } => match std::fs::read_to_string(path)
                .map_err(|e| e.to_string())
                .and_then(|t| file_kind(&t))
            {
                Ok(kind) => kind.label(path),
                Err(_) => format!("credentials file {path}"),
            },
            Source::Metadata { host } => format!("metadata server (http://{host})"),
            Source::Anonymous => "anonymous requests (emulator endpoint)".to_string(),
        }
    }

    pub(crate) fn fix(&self) -> &'static str {
        match self {
            Source::File { setting, .. } if *setting == "HOME" => {
                "fix or remove gcloud's application_default_credentials.json, or set GOOGLE_APPLICATION_CREDENTIALS"
            }
            Source::File { .. } => "fix GOOGLE_APPLICATION_CREDENTIALS or the file it names",
            Source::Metadata { .. } => {
                "fix GCE_METADATA_HOST or the workload's service account (GKE Workload Identity)"
            }
            Source::Anonymous => "set GOOGLE_APPLICATION_CREDENTIALS",
        }
    }
}

/// Chooses the source from the storage's settings alone.
pub(crate) fn select(spec: &StorageSpec) -> Result<Source, StorageError> {
    let s = &spec.settings;
    if let Some(path) = s.get("GOOGLE_APPLICATION_CREDENTIALS") {
        return Ok(Source::File {
            path: path.to_string(),
            setting: "GOOGLE_APPLICATION_CREDENTIALS",
        });
    }
    if let Some(home) = s.get("HOME") {
        let adc = PathBuf::from(home).join(".config/gcloud/application_default_credentials.json");
        if adc.is_file() {
            return Ok(Source::File {
                path: adc.to_string_lossy().to_string(),
                setting: "HOME",
            });
        }
    }
    if let Some(host) = s.get("GCE_METADATA_HOST") {
        if host.contains("://") || host.contains('/') {
            return Err(spec.config_error(
                "GCE_METADATA_HOST",
                format!("expected host[:port], got {host:?}"),
            ));
        }
        return Ok(Source::Metadata {
            host: host.to_string(),
        });
    }
    if s.get("WALG_GS_ENDPOINT").is_some() || s.get("STORAGE_EMULATOR_HOST").is_some() {
        return Ok(Source::Anonymous);
    }
    Ok(Source::Metadata {
        host: METADATA.to_string(),
    })
}

/// The one provider opendal gets.
pub(crate) struct Provider {
    source: Source,
    common: Common,
}

// The signing crate's providers keep tokens (IMDSv2's session token) in
// their `Debug`, which its credential chain logs: only the source's label.
impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("source", &self.common.label)
            .finish()
    }
}

impl Provider {
    pub(crate) fn new(spec: &StorageSpec, source: Source, tracker: Arc<Tracker>) -> Provider {
        let common = Common::new(spec, source.label(), tracker);
        Provider { source, common }
    }

    fn failed(&self, err: &reqsign_core::Error, extra: &[&str]) -> Failure {
        let transient = err.is_retryable();
        self.common.failure(
            self.common.describe(err, extra),
            self.source.fix(),
            transient,
        )
    }

    async fn fetch(&self, ctx: &Context) -> Result<Option<Credential>, Failure> {
        let ctx = self.common.context(ctx);
        match &self.source {
            Source::File { path, setting } => {
                let text = tokio::fs::read_to_string(path).await.map_err(|e| {
                    self.common.failure(
                        format!("cannot read {path}: {e}"),
                        &format!(
                            "fix {setting} (the file must be readable by the user walg runs as)"
                        ),
                        false,
                    )
                })?;
                let kind = file_kind(&text).map_err(|why| {
                    self.common.failure(
                        format!("{path} is malformed: {why}"),
                        self.source.fix(),
                        false,
                    )
                })?;
                if let FileKind::ExternalAccount { format: false, .. } = &kind {
                    return Err(self.common.failure(
                        format!("{path} has no credential_source.format"),
                        "add \"format\": {\"type\": \"text\"} to credential_source (as gcloud iam workload-identity-pools create-cred-config writes it)",
                        false,
                    ));
                }
                let mut extra = Vec::new();
                if let FileKind::ExternalAccount {
                    token_file: Some(f),
                    ..
                } = &kind
                {
                    // Read here for an error that names the file; the
                    // provider reads it again for the exchange.
                    extra.push(read_token_file(&self.common, f, "credential_source.file").await?);
                }
                let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
                FileCredentialProvider::new(path.clone())
                    .provide_credential(&ctx)
                    .await
                    .map_err(|e| self.failed(&e, &extra))
            }
            Source::Metadata { host } => {
                let p = VmMetadataCredentialProvider::new().with_endpoint(host.clone());
                match p.provide_credential(&ctx).await {
                    Ok(Some(c)) => Ok(Some(c)),
                    // The crate hides the status of a refusal.
                    Ok(None) => Err(self.common.failure(
                        format!("http://{host} refused a token for the default service account"),
                        self.source.fix(),
                        false,
                    )),
                    Err(e) => Err(self.failed(&e, &[])),
                }
            }
            Source::Anonymous => Ok(None),
        }
    }

    fn endpoint(&self) -> String {
        match &self.source {
            Source::Metadata { host } => format!("the metadata server http://{host}"),
            Source::File { .. } => "the token endpoint of the credentials file".to_string(),
            Source::Anonymous => "nothing".to_string(),
        }
    }
}

impl ProvideCredential for Provider {
    type Credential = Credential;

    async fn provide_credential(&self, ctx: &Context) -> reqsign_core::Result<Option<Credential>> {
        self.common
            .run(&self.endpoint(), self.source.fix(), self.fetch(ctx))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(settings: &[(&str, &str)]) -> StorageSpec {
        let mut s = StorageSpec::new("default", "gs", "b/p");
        s.settings = settings.iter().copied().collect();
        s
    }

    #[test]
    fn order_file_then_metadata() {
        let both = spec(&[
            ("GOOGLE_APPLICATION_CREDENTIALS", "/k.json"),
            ("GCE_METADATA_HOST", "127.0.0.1:8080"),
        ]);
        assert!(matches!(select(&both), Ok(Source::File { .. })));
        let md = spec(&[
            ("GCE_METADATA_HOST", "127.0.0.1:8080"),
            ("WALG_GS_ENDPOINT", "http://x"),
        ]);
        assert_eq!(
            select(&md).expect("valid").label(),
            "metadata server (http://127.0.0.1:8080)"
        );
        assert_eq!(
            select(&spec(&[("WALG_GS_ENDPOINT", "http://x")])).expect("valid"),
            Source::Anonymous
        );
        assert_eq!(
            select(&spec(&[])).expect("valid"),
            Source::Metadata {
                host: METADATA.into()
            }
        );
        assert!(select(&spec(&[("GCE_METADATA_HOST", "http://x")])).is_err());
    }

    #[test]
    fn file_kinds() {
        assert_eq!(
            file_kind(
                r#"{"type":"service_account","client_email":"a@p.iam.gserviceaccount.com","private_key":"k"}"#
            ),
            Ok(FileKind::ServiceAccount {
                email: "a@p.iam.gserviceaccount.com".into()
            })
        );
        let ext = r#"{"type":"external_account","audience":"//iam.googleapis.com/x","token_url":"http://127.0.0.1/token","credential_source":{"file":"/var/run/token","format":{"type":"text"}}}"#;
        assert!(matches!(
            file_kind(ext),
            Ok(FileKind::ExternalAccount { format: true, .. })
        ));
        assert_eq!(
            file_kind(ext).expect("valid").label("/c.json"),
            "workload identity federation //iam.googleapis.com/x (/c.json, token file /var/run/token)"
        );
        assert!(file_kind("{not json").is_err());
        assert!(file_kind("{}").is_err());
    }
}
