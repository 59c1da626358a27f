//! S3's credential sources, in the AWS SDKs' order: static keys, a shared
//! config profile, web identity (IRSA), container credentials (ECS, EKS Pod
//! Identity), instance metadata (IMDSv2).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use reqsign_aws_v4::{
    AssumeRoleWithWebIdentityCredentialProvider, Credential, ECSCredentialProvider,
    IMDSv2CredentialProvider, ProfileCredentialProvider, StaticCredentialProvider,
};
use reqsign_core::{Context, ProvideCredential};

use super::{read_token_file, Common, Failure, Redirect, Tracker};
use crate::spec::{StorageError, StorageSpec};

/// The instance metadata service's default address.
pub(crate) const IMDS: &str = "http://169.254.169.254";
/// ECS's credential endpoint, base of `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`.
pub(crate) const ECS: &str = "http://169.254.170.2";

/// How a container endpoint wants to be authorized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ContainerAuth {
    None,
    /// `AWS_CONTAINER_AUTHORIZATION_TOKEN` (a secret: never printed).
    Token,
    /// `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` (EKS Pod Identity).
    TokenFile(String),
}

/// The chosen source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    Static {
        key_id: String,
        session: bool,
    },
    Profile {
        name: String,
        credentials: PathBuf,
        config: PathBuf,
    },
    WebIdentity {
        role_arn: String,
        token_file: String,
        session_name: String,
        /// Base URL of STS: `AWS_ENDPOINT_URL_STS` or the region's.
        sts: String,
        region: String,
    },
    Container {
        url: String,
        auth: ContainerAuth,
    },
    InstanceMetadata {
        endpoint: String,
    },
}

impl Source {
    /// What `walg check` prints.
    pub(crate) fn label(&self) -> String {
        match self {
            Source::Static { key_id, session } => format!(
                "static keys (key id {key_id:?}{})",
                if *session {
                    ", with a session token"
                } else {
                    ""
                }
            ),
            Source::Profile {
                name,
                credentials,
                config,
            } => format!(
                "profile {name:?} ({} or {})",
                credentials.display(),
                config.display()
            ),
            Source::WebIdentity {
                role_arn,
                token_file,
                sts,
                ..
            } => format!("web identity role {role_arn} (token file {token_file}, STS {sts})"),
            Source::Container { url, auth } => format!(
                "container credentials {url}{}",
                match auth {
                    ContainerAuth::None => String::new(),
                    ContainerAuth::Token => " (authorization token)".to_string(),
                    ContainerAuth::TokenFile(f) => format!(" (authorization token file {f})"),
                }
            ),
            Source::InstanceMetadata { endpoint } => {
                format!("instance metadata (IMDSv2 at {endpoint})")
            }
        }
    }

    /// What to change when this source fails.
    pub(crate) fn fix(&self) -> &'static str {
        match self {
            Source::Static { .. } => "fix AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
            Source::Profile { .. } => {
                "fix AWS_PROFILE, AWS_SHARED_CREDENTIALS_FILE or AWS_CONFIG_FILE"
            }
            Source::WebIdentity { .. } => {
                "fix AWS_ROLE_ARN, AWS_WEB_IDENTITY_TOKEN_FILE or AWS_ENDPOINT_URL_STS"
            }
            Source::Container { .. } => {
                "fix AWS_CONTAINER_CREDENTIALS_FULL_URI (or _RELATIVE_URI) and its authorization token"
            }
            Source::InstanceMetadata { .. } => {
                "fix AWS_EC2_METADATA_SERVICE_ENDPOINT or the instance's role, or set AWS_EC2_METADATA_DISABLED=true and another source"
            }
        }
    }
}

/// Hosts a plain-http container endpoint may name (the AWS SDKs' rule: any
/// loopback address, ECS's and EKS Pod Identity's link-local addresses).
fn container_host_allowed(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return url.starts_with("https://");
    };
    let authority = rest.split('/').next().unwrap_or("");
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority.split(':').next().unwrap_or("")
    };
    host == "localhost"
        || host.starts_with("127.")
        || host == "::1"
        || host == "169.254.170.2"
        || host == "169.254.170.23"
        || host.eq_ignore_ascii_case("fd00:ec2::23")
}

/// The region's STS endpoint (regional, as the current SDKs use).
fn regional_sts(region: &str) -> String {
    if region.starts_with("cn-") {
        format!("https://sts.{region}.amazonaws.com.cn")
    } else {
        format!("https://sts.{region}.amazonaws.com")
    }
}

/// Chooses the source from the storage's settings alone. `exists` says
/// whether a file exists (the default shared credentials file is used only
/// when it is there).
pub(crate) fn select(
    spec: &StorageSpec,
    exists: &dyn Fn(&Path) -> bool,
) -> Result<Source, StorageError> {
    let s = &spec.settings;
    match (s.get("AWS_ACCESS_KEY_ID"), s.get("AWS_SECRET_ACCESS_KEY")) {
        (Some(id), Some(_)) => {
            return Ok(Source::Static {
                key_id: id.to_string(),
                session: s.get("AWS_SESSION_TOKEN").is_some(),
            })
        }
        (Some(_), None) => {
            return Err(spec.config_error(
                "AWS_SECRET_ACCESS_KEY",
                "AWS_ACCESS_KEY_ID is set but the secret is not",
            ))
        }
        (None, Some(_)) => {
            return Err(spec.config_error(
                "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY is set but the key id is not",
            ))
        }
        (None, None) => {}
    }
    let home = s.get("HOME").map(PathBuf::from);
    let in_home = |name: &str| home.as_ref().map(|h| h.join(".aws").join(name));
    let credentials = s
        .get("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| in_home("credentials"));
    let config = s
        .get("AWS_CONFIG_FILE")
        .map(PathBuf::from)
        .or_else(|| in_home("config"));
    // A profile named, or a credentials file named or present: the
    // profile is the source (and its failure an error).
    let profile_chosen = s.get("AWS_PROFILE").is_some()
        || s.get("AWS_SHARED_CREDENTIALS_FILE").is_some()
        || (s.get("AWS_CONFIG_FILE").is_some() && s.get("AWS_ROLE_ARN").is_none())
        || credentials.as_deref().is_some_and(exists);
    if profile_chosen {
        let (Some(credentials), Some(config)) = (credentials, config) else {
            return Err(spec.config_error(
                "AWS_SHARED_CREDENTIALS_FILE",
                "a profile is chosen but neither it nor HOME says where the shared files are",
            ));
        };
        return Ok(Source::Profile {
            name: s.get("AWS_PROFILE").unwrap_or("default").to_string(),
            credentials,
            config,
        });
    }
    match (s.get("AWS_ROLE_ARN"), s.get("AWS_WEB_IDENTITY_TOKEN_FILE")) {
        (Some(role_arn), Some(token_file)) => {
            if !role_arn.starts_with("arn:") {
                return Err(spec.config_error(
                    "AWS_ROLE_ARN",
                    format!("{role_arn:?} is not a role ARN (arn:aws:iam::<account>:role/<name>)"),
                ));
            }
            let region = s.get("AWS_REGION").unwrap_or("us-east-1").to_string();
            let sts = match s.get("AWS_ENDPOINT_URL_STS") {
                Some(ep) if ep.starts_with("http://") || ep.starts_with("https://") => {
                    ep.trim_end_matches('/').to_string()
                }
                Some(ep) => {
                    return Err(spec.config_error(
                        "AWS_ENDPOINT_URL_STS",
                        format!("expected an http:// or https:// URL, got {ep:?}"),
                    ))
                }
                None => regional_sts(&region),
            };
            return Ok(Source::WebIdentity {
                role_arn: role_arn.to_string(),
                token_file: token_file.to_string(),
                session_name: s.get("AWS_ROLE_SESSION_NAME").unwrap_or("walg").to_string(),
                sts,
                region,
            });
        }
        (Some(_), None) => return Err(spec.config_error(
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_ROLE_ARN is set but the web identity token file is not; set both (IRSA sets both)",
        )),
        (None, Some(_)) => {
            return Err(spec.config_error(
                "AWS_ROLE_ARN",
                "AWS_WEB_IDENTITY_TOKEN_FILE is set but the role is not; set both (IRSA sets both)",
            ))
        }
        (None, None) => {}
    }
    let full = s.get("AWS_CONTAINER_CREDENTIALS_FULL_URI");
    let relative = s.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
    if full.is_some() || relative.is_some() {
        let url = match (relative, full) {
            // The SDKs prefer the relative URI (ECS) when both are set.
            (Some(rel), _) => format!("{ECS}/{}", rel.trim_start_matches('/')),
            (None, Some(full)) => {
                if !container_host_allowed(full) {
                    return Err(spec.config_error(
                        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                        format!("{full:?} is neither https:// nor a loopback, ECS or EKS Pod Identity address"),
                    ));
                }
                full.to_string()
            }
            (None, None) => unreachable!("one is set"),
        };
        let auth = match (
            s.get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"),
            s.get("AWS_CONTAINER_AUTHORIZATION_TOKEN"),
        ) {
            (Some(file), _) => ContainerAuth::TokenFile(file.to_string()),
            (None, Some(_)) => ContainerAuth::Token,
            (None, None) => ContainerAuth::None,
        };
        return Ok(Source::Container { url, auth });
    }
    let disabled = s
        .get("AWS_EC2_METADATA_DISABLED")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if disabled {
        return Err(spec.config_error(
            "AWS_EC2_METADATA_DISABLED",
            "no AWS credential source: no static keys, profile, web identity or container credentials are set and instance metadata is disabled",
        ));
    }
    let endpoint = s
        .get("AWS_EC2_METADATA_SERVICE_ENDPOINT")
        .unwrap_or(IMDS)
        .trim_end_matches('/')
        .to_string();
    if !endpoint.starts_with("http://") && !endpoint.starts_with("https://") {
        return Err(spec.config_error(
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
            format!("expected an http:// URL, got {endpoint:?}"),
        ));
    }
    Ok(Source::InstanceMetadata { endpoint })
}

/// The one provider opendal gets: fetches from the chosen source only.
pub(crate) struct Provider {
    source: Source,
    common: Common,
    imds: IMDSv2CredentialProvider,
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
        let imds = match &source {
            Source::InstanceMetadata { endpoint } => {
                IMDSv2CredentialProvider::new().with_endpoint(endpoint.clone())
            }
            _ => IMDSv2CredentialProvider::new(),
        };
        Provider {
            source,
            common,
            imds,
        }
    }

    fn failed(&self, err: &reqsign_core::Error, extra: &[&str]) -> Failure {
        // A refusal (4xx, an invalid token, a malformed file) is no reason
        // to retry; what the signing crate marks retryable (a transport
        // failure, a 5xx) is.
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
            Source::Static { key_id, .. } => {
                let s = &self.common.env;
                let secret = s.get("AWS_SECRET_ACCESS_KEY").cloned().unwrap_or_default();
                let p = StaticCredentialProvider::new(key_id, &secret);
                let p = match s.get("AWS_SESSION_TOKEN") {
                    Some(t) => p.with_session_token(t),
                    None => p,
                };
                p.provide_credential(&ctx)
                    .await
                    .map_err(|e| self.failed(&e, &[]))
            }
            Source::Profile {
                name,
                credentials,
                config,
            } => {
                let p = ProfileCredentialProvider::new()
                    .with_profile(name.clone())
                    .with_credentials_file(credentials.to_string_lossy().to_string())
                    .with_config_file(config.to_string_lossy().to_string());
                match p.provide_credential(&ctx).await {
                    Ok(Some(c)) => Ok(Some(c)),
                    Ok(None) => Err(self.common.failure(
                        format!("no access key for profile {name:?} in either file"),
                        self.source.fix(),
                        false,
                    )),
                    Err(e) => Err(self.failed(&e, &[])),
                }
            }
            Source::WebIdentity {
                role_arn,
                token_file,
                session_name,
                sts,
                region,
            } => {
                let token =
                    read_token_file(&self.common, token_file, "AWS_WEB_IDENTITY_TOKEN_FILE")
                        .await?;
                let p = AssumeRoleWithWebIdentityCredentialProvider::new()
                    .with_role_arn(role_arn.clone())
                    .with_subject_token(token.clone())
                    .with_role_session_name(session_name.clone())
                    .with_region(region.clone())
                    .with_regional_sts_endpoint();
                // The crate asks https://sts.<region>.amazonaws.com/; send
                // that request where the settings say STS is.
                let ctx = ctx.clone().with_http_send(Redirect {
                    base: ctx.clone(),
                    from: format!("{}/", regional_sts(region)),
                    to: sts.clone(),
                });
                p.provide_credential(&ctx).await.map_err(|e| {
                    let mut f = self.failed(&e, &[&token]);
                    f.what = format!("{} (STS AssumeRoleWithWebIdentity at {sts})", f.what);
                    f
                })
            }
            Source::Container { url, auth } => {
                let mut p = ECSCredentialProvider::new().with_endpoint(url.clone());
                let mut extra = Vec::new();
                match auth {
                    ContainerAuth::None => {}
                    ContainerAuth::Token => {
                        if let Some(t) = self.common.env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN") {
                            p = p.with_auth_token(t.clone());
                        }
                    }
                    ContainerAuth::TokenFile(file) => {
                        let token = read_token_file(
                            &self.common,
                            file,
                            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                        )
                        .await?;
                        extra.push(token.clone());
                        p = p.with_auth_token(token);
                    }
                }
                let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
                p.provide_credential(&ctx)
                    .await
                    .map_err(|e| self.failed(&e, &extra))
            }
            Source::InstanceMetadata { .. } => self
                .imds
                .provide_credential(&ctx)
                .await
                .map_err(|e| self.failed(&e, &[])),
        }
    }

    fn endpoint(&self) -> String {
        match &self.source {
            Source::WebIdentity { sts, .. } => format!("STS at {sts}"),
            Source::Container { url, .. } => url.clone(),
            Source::InstanceMetadata { endpoint } => endpoint.clone(),
            Source::Profile { .. } | Source::Static { .. } => "the shared files".to_string(),
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
        let mut s = StorageSpec::new("default", "s3", "b/p");
        s.settings = settings.iter().copied().collect();
        s
    }

    fn none(_: &Path) -> bool {
        false
    }

    fn err_setting(r: Result<Source, StorageError>) -> String {
        match r {
            Err(StorageError::Config { setting, .. }) => setting,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    const IRSA: &[(&str, &str)] = &[
        ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/walg"),
        ("AWS_WEB_IDENTITY_TOKEN_FILE", "/var/run/secrets/token"),
        (
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "http://169.254.170.23/v1/credentials",
        ),
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:1"),
        ("AWS_REGION", "eu-west-1"),
    ];

    #[test]
    fn static_keys_win_over_every_other_source() {
        let mut all: Vec<(&str, &str)> = IRSA.to_vec();
        all.extend([
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
            ("AWS_PROFILE", "other"),
        ]);
        let got = select(&spec(&all), &|_| true).expect("valid");
        assert_eq!(
            got,
            Source::Static {
                key_id: "AKIDEXAMPLE".into(),
                session: false
            }
        );
        assert_eq!(got.label(), "static keys (key id \"AKIDEXAMPLE\")");
    }

    #[test]
    fn web_identity_before_container_and_instance_metadata() {
        let got = select(&spec(IRSA), &none).expect("valid");
        assert!(matches!(&got, Source::WebIdentity { sts, session_name, .. }
            if sts == "https://sts.eu-west-1.amazonaws.com" && session_name == "walg"));
        assert_eq!(
            got.label(),
            "web identity role arn:aws:iam::123456789012:role/walg (token file /var/run/secrets/token, STS https://sts.eu-west-1.amazonaws.com)"
        );
        let mut with_sts = IRSA.to_vec();
        with_sts.push(("AWS_ENDPOINT_URL_STS", "http://127.0.0.1:9/"));
        assert!(
            matches!(select(&spec(&with_sts), &none), Ok(Source::WebIdentity { sts, .. }) if sts == "http://127.0.0.1:9")
        );
    }

    #[test]
    fn half_a_web_identity_is_an_error_not_a_fallback() {
        let role_only = spec(&[
            ("AWS_ROLE_ARN", "arn:aws:iam::1:role/r"),
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:1"),
        ]);
        assert_eq!(
            err_setting(select(&role_only, &none)),
            "AWS_WEB_IDENTITY_TOKEN_FILE"
        );
        let file_only = spec(&[("AWS_WEB_IDENTITY_TOKEN_FILE", "/t")]);
        assert_eq!(err_setting(select(&file_only, &none)), "AWS_ROLE_ARN");
        let bad_arn = spec(&[
            ("AWS_ROLE_ARN", "walg"),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", "/t"),
        ]);
        assert_eq!(err_setting(select(&bad_arn, &none)), "AWS_ROLE_ARN");
    }

    #[test]
    fn profiles_named_or_present() {
        let named = spec(&[("AWS_PROFILE", "backup"), ("HOME", "/home/pg")]);
        assert_eq!(
            select(&named, &none).expect("valid"),
            Source::Profile {
                name: "backup".into(),
                credentials: PathBuf::from("/home/pg/.aws/credentials"),
                config: PathBuf::from("/home/pg/.aws/config"),
            }
        );
        // The default credentials file counts only when it exists.
        let home = spec(&[("HOME", "/home/pg")]);
        assert!(matches!(
            select(&home, &none),
            Ok(Source::InstanceMetadata { .. })
        ));
        assert!(
            matches!(select(&home, &|_| true), Ok(Source::Profile { name, .. }) if name == "default")
        );
        // A profile beats web identity, as in the SDKs.
        let mut both = IRSA.to_vec();
        both.extend([("AWS_PROFILE", "p"), ("HOME", "/h")]);
        assert!(matches!(
            select(&spec(&both), &none),
            Ok(Source::Profile { .. })
        ));
    }

    #[test]
    fn container_endpoints() {
        let rel = spec(&[(
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "/v2/credentials/x",
        )]);
        assert_eq!(
            select(&rel, &none).expect("valid"),
            Source::Container {
                url: "http://169.254.170.2/v2/credentials/x".into(),
                auth: ContainerAuth::None
            }
        );
        let pod = spec(&[
            (
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "http://169.254.170.23/v1/credentials",
            ),
            (
                "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount/eks-pod-identity-token",
            ),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "ignored"),
        ]);
        assert!(matches!(
            select(&pod, &none),
            Ok(Source::Container {
                auth: ContainerAuth::TokenFile(_),
                ..
            })
        ));
        let remote = spec(&[(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "http://10.0.0.1/creds",
        )]);
        assert_eq!(
            err_setting(select(&remote, &none)),
            "AWS_CONTAINER_CREDENTIALS_FULL_URI"
        );
        let local = spec(&[(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "http://127.0.0.1:8080/creds",
        )]);
        assert!(select(&local, &none).is_ok());
    }

    #[test]
    fn instance_metadata_last_and_can_be_disabled() {
        assert_eq!(
            select(&spec(&[]), &none).expect("valid").label(),
            "instance metadata (IMDSv2 at http://169.254.169.254)"
        );
        let off = spec(&[("AWS_EC2_METADATA_DISABLED", "true")]);
        assert_eq!(
            err_setting(select(&off, &none)),
            "AWS_EC2_METADATA_DISABLED"
        );
    }
}
