//! Azure Blob's credential sources, in order: the account key, a SAS token,
//! workload identity (a federated token exchanged at Microsoft Entra ID),
//! managed identity (`IDENTITY_ENDPOINT` with `IDENTITY_HEADER`, else the
//! instance metadata service), a user-assigned identity chosen by
//! `AZURE_CLIENT_ID`.

use std::sync::Arc;

use reqsign_azure_storage::{
    Credential, ImdsCredentialProvider, StaticCredentialProvider,
    WorkloadIdentityCredentialProvider,
};
use reqsign_core::{Context, ProvideCredential};

use super::{read_token_file, Common, Failure, Tracker};
use crate::spec::{StorageError, StorageSpec};

/// The instance metadata service's token endpoint.
pub(crate) const IMDS: &str = "http://169.254.169.254/metadata/identity/oauth2/token";
/// Microsoft Entra ID's default authority.
pub(crate) const AUTHORITY: &str = "https://login.microsoftonline.com";

/// The chosen source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    AccountKey {
        account: String,
    },
    Sas,
    WorkloadIdentity {
        client_id: String,
        tenant_id: String,
        token_file: String,
        authority: String,
    },
    ManagedIdentity {
        endpoint: String,
        /// `IDENTITY_HEADER` is sent (App Service, Container Apps, Arc).
        header: bool,
        client_id: Option<String>,
    },
    /// An emulator behind `WALG_AZ_ENDPOINT`, nothing configured.
    Anonymous,
}

impl Source {
    pub(crate) fn label(&self) -> String {
        match self {
            Source::AccountKey { account } => format!("account key of {account:?}"),
            Source::Sas => "SAS token".to_string(),
            Source::WorkloadIdentity {
                client_id,
                tenant_id,
                token_file,
                authority,
            } => format!(
                "workload identity client {client_id} in tenant {tenant_id} (token file {token_file}, authority {authority})"
            ),
            Source::ManagedIdentity {
                endpoint,
                client_id,
                ..
            } => format!(
                "managed identity {}({endpoint})",
                client_id
                    .as_ref()
                    .map(|c| format!("client {c} "))
                    .unwrap_or_else(|| "system-assigned ".to_string())
            ),
            Source::Anonymous => "anonymous requests (emulator endpoint)".to_string(),
        }
    }

    pub(crate) fn fix(&self) -> &'static str {
        match self {
            Source::AccountKey { .. } => "fix AZURE_STORAGE_ACCESS_KEY or AZURE_STORAGE_ACCOUNT",
            Source::Sas => "renew AZURE_STORAGE_SAS_TOKEN",
            Source::WorkloadIdentity { .. } => {
                "fix AZURE_FEDERATED_TOKEN_FILE, AZURE_CLIENT_ID, AZURE_TENANT_ID or AZURE_AUTHORITY_HOST (the identity's federated credential)"
            }
            Source::ManagedIdentity { .. } => {
                "fix IDENTITY_ENDPOINT / IDENTITY_HEADER, or the managed identity chosen by AZURE_CLIENT_ID"
            }
            Source::Anonymous => "set AZURE_STORAGE_ACCESS_KEY or AZURE_STORAGE_SAS_TOKEN",
        }
    }
}

/// Chooses the source from the storage's settings alone.
pub(crate) fn select(spec: &StorageSpec) -> Result<Source, StorageError> {
    let s = &spec.settings;
    if s.get("AZURE_STORAGE_ACCESS_KEY").is_some() {
        let Some(account) = s.get("AZURE_STORAGE_ACCOUNT") else {
            return Err(spec.config_error(
                "AZURE_STORAGE_ACCOUNT",
                "an access key needs the account name",
            ));
        };
        return Ok(Source::AccountKey {
            account: account.to_string(),
        });
    }
    if s.get("AZURE_STORAGE_SAS_TOKEN").is_some() {
        return Ok(Source::Sas);
    }
    if let Some(token_file) = s.get("AZURE_FEDERATED_TOKEN_FILE") {
        let need = |k: &str| {
            s.get(k).map(str::to_string).ok_or_else(|| {
                spec.config_error(
                    k,
                    "AZURE_FEDERATED_TOKEN_FILE is set but this is not; workload identity needs AZURE_CLIENT_ID and AZURE_TENANT_ID (the webhook sets all three)",
                )
            })
        };
        let authority = s
            .get("AZURE_AUTHORITY_HOST")
            .unwrap_or(AUTHORITY)
            .trim_end_matches('/')
            .to_string();
        if !authority.starts_with("https://") && !authority.starts_with("http://") {
            return Err(spec.config_error(
                "AZURE_AUTHORITY_HOST",
                format!("expected an https:// URL, got {authority:?}"),
            ));
        }
        return Ok(Source::WorkloadIdentity {
            client_id: need("AZURE_CLIENT_ID")?,
            tenant_id: need("AZURE_TENANT_ID")?,
            token_file: token_file.to_string(),
            authority,
        });
    }
    let client_id = s.get("AZURE_CLIENT_ID").map(str::to_string);
    match (s.get("IDENTITY_ENDPOINT"), s.get("IDENTITY_HEADER")) {
        (Some(ep), Some(_)) => {
            return Ok(Source::ManagedIdentity {
                endpoint: ep.to_string(),
                header: true,
                client_id,
            })
        }
        (Some(_), None) => {
            return Err(spec.config_error(
                "IDENTITY_HEADER",
                "IDENTITY_ENDPOINT is set but its header secret is not",
            ))
        }
        (None, _) => {}
    }
    if s.get("WALG_AZ_ENDPOINT").is_some() && client_id.is_none() {
        return Ok(Source::Anonymous);
    }
    Ok(Source::ManagedIdentity {
        endpoint: IMDS.to_string(),
        header: false,
        client_id,
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
        let mut common = Common::new(spec, source.label(), tracker);
        // The signing crate's managed-identity provider reads its endpoint,
        // header secret and client id from these names.
        if let Source::ManagedIdentity {
            endpoint,
            header,
            client_id,
        } = &source
        {
            let env = &mut common.env;
            env.retain(|k, _| !k.starts_with("AZURE_") && k != "AZBLOB_ENDPOINT");
            env.insert("AZURE_IMDS_ENDPOINT".into(), endpoint.clone());
            if *header {
                if let Some(h) = spec.settings.get("IDENTITY_HEADER") {
                    env.insert("AZURE_MSI_SECRET".into(), h.to_string());
                }
            }
            if let Some(c) = client_id {
                env.insert("AZURE_CLIENT_ID".into(), c.clone());
            }
        }
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
        let env = &self.common.env;
        match &self.source {
            Source::AccountKey { account } => {
                let key = env
                    .get("AZURE_STORAGE_ACCESS_KEY")
                    .cloned()
                    .unwrap_or_default();
                StaticCredentialProvider::new_shared_key(account, &key)
                    .provide_credential(&ctx)
                    .await
                    .map_err(|e| self.failed(&e, &[]))
            }
            Source::Sas => {
                let sas = env
                    .get("AZURE_STORAGE_SAS_TOKEN")
                    .cloned()
                    .unwrap_or_default();
                StaticCredentialProvider::new_sas_token(sas.trim_start_matches('?'))
                    .provide_credential(&ctx)
                    .await
                    .map_err(|e| self.failed(&e, &[]))
            }
            Source::WorkloadIdentity {
                client_id,
                tenant_id,
                token_file,
                authority,
            } => {
                // The crate skips an unreadable token file silently (no
                // credential, the next source): read it here.
                let token =
                    read_token_file(&self.common, token_file, "AZURE_FEDERATED_TOKEN_FILE").await?;
                WorkloadIdentityCredentialProvider::new()
                    .with_client_id(client_id.clone())
                    .with_tenant_id(tenant_id.clone())
                    .with_authority_host(authority.clone())
                    .with_subject_token(token.clone())
                    .provide_credential(&ctx)
                    .await
                    .map_err(|e| self.failed(&e, &[&token]))
            }
            Source::ManagedIdentity { endpoint, .. } => ImdsCredentialProvider::new()
                .with_endpoint(endpoint.clone())
                .provide_credential(&ctx)
                .await
                .map_err(|e| self.failed(&e, &[])),
            Source::Anonymous => Ok(None),
        }
    }

    fn endpoint(&self) -> String {
        match &self.source {
            Source::WorkloadIdentity { authority, .. } => authority.clone(),
            Source::ManagedIdentity { endpoint, .. } => endpoint.clone(),
            _ => "nothing".to_string(),
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
        let mut s = StorageSpec::new("default", "azure", "c/p");
        s.settings = settings.iter().copied().collect();
        s
    }

    const WORKLOAD: &[(&str, &str)] = &[
        ("AZURE_STORAGE_ACCOUNT", "acct"),
        ("AZURE_CLIENT_ID", "00000000-0000-0000-0000-000000000001"),
        ("AZURE_TENANT_ID", "tenant"),
        (
            "AZURE_FEDERATED_TOKEN_FILE",
            "/var/run/secrets/azure/tokens/azure-identity-token",
        ),
        ("IDENTITY_ENDPOINT", "http://127.0.0.1:1/msi/token"),
        ("IDENTITY_HEADER", "h"),
    ];

    #[test]
    fn keys_then_sas_then_workload_then_managed() {
        let mut all = WORKLOAD.to_vec();
        all.push(("AZURE_STORAGE_SAS_TOKEN", "sv=1&sig=x"));
        assert_eq!(select(&spec(&all)).expect("valid"), Source::Sas);
        all.push(("AZURE_STORAGE_ACCESS_KEY", "a2V5"));
        assert!(matches!(select(&spec(&all)), Ok(Source::AccountKey { .. })));
        assert!(
            matches!(select(&spec(WORKLOAD)), Ok(Source::WorkloadIdentity { authority, .. }) if authority == AUTHORITY)
        );
        let managed = spec(
            &WORKLOAD[..2]
                .iter()
                .copied()
                .chain(WORKLOAD[4..].iter().copied())
                .collect::<Vec<_>>(),
        );
        assert_eq!(
            select(&managed).expect("valid").label(),
            "managed identity client 00000000-0000-0000-0000-000000000001 (http://127.0.0.1:1/msi/token)"
        );
        assert_eq!(
            select(&spec(&[("AZURE_STORAGE_ACCOUNT", "a")]))
                .expect("valid")
                .label(),
            format!("managed identity system-assigned ({IMDS})")
        );
        assert_eq!(
            select(&spec(&[("WALG_AZ_ENDPOINT", "http://127.0.0.1:10000/a")])).expect("valid"),
            Source::Anonymous
        );
    }

    #[test]
    fn half_a_workload_identity_is_an_error() {
        let no_tenant = spec(&[
            ("AZURE_CLIENT_ID", "c"),
            ("AZURE_FEDERATED_TOKEN_FILE", "/t"),
        ]);
        match select(&no_tenant) {
            Err(StorageError::Config { setting, .. }) => assert_eq!(setting, "AZURE_TENANT_ID"),
            other => panic!("{other:?}"),
        }
        let no_header = spec(&[("IDENTITY_ENDPOINT", "http://127.0.0.1:1/")]);
        assert!(select(&no_header).is_err());
    }
}
