//! Why a storage call failed, classified once for every backend: from the
//! provider's answer (HTTP status, its error code and message, a region
//! header) and from the transport's error chain (name resolution, TCP, TLS,
//! local I/O), into a [`Cause`] with a short phrase and a fix that names the
//! setting to change.
//!
//! A [`Site`] is what a message may say about one storage: its credential-free
//! URL, the setting that chose it, its endpoint, where its credentials come
//! from, and the secret values that must never be printed.
//!
//! What this module does not do: decide retries or failover (the
//! [`ErrorKind`] is `opendal_store`'s, and does not change with the cause),
//! or log. The backend's whole answer travels in
//! [`Explanation::detail`]; `guard` logs it at debug level once per call.

// Each backend feature uses part of this module.
#![cfg_attr(
    not(all(feature = "fs", feature = "s3", feature = "gcs", feature = "azure")),
    allow(dead_code, unused_imports)
)]

use std::error::Error as StdError;
use std::path::Path;

use walg_core::store::error::{Cause, ErrorKind, Explanation};

/// Longest quote of a provider's message in a one-line explanation.
const QUOTE: usize = 60;

/// Which kind of storage, for the names of its settings and permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    S3,
    Gcs,
    Azure,
    File,
}

impl Backend {
    fn prefix_setting(self) -> &'static str {
        match self {
            Backend::S3 => "WALG_S3_PREFIX",
            Backend::Gcs => "WALG_GS_PREFIX",
            Backend::Azure => "WALG_AZ_PREFIX",
            Backend::File => "WALG_FILE_PREFIX",
        }
    }

    fn endpoint_setting(self) -> &'static str {
        match self {
            Backend::S3 => "AWS_ENDPOINT",
            Backend::Gcs => "WALG_GS_ENDPOINT",
            Backend::Azure => "WALG_AZ_ENDPOINT",
            Backend::File => "WALG_FILE_PREFIX",
        }
    }

    fn bucket_word(self) -> &'static str {
        match self {
            Backend::Azure => "container",
            Backend::File => "directory",
            Backend::S3 | Backend::Gcs => "bucket",
        }
    }
}

/// Where a storage's credentials come from, as a message names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    /// Who asked, for a phrase: `key id "AKIA..."`, `the SAS token`.
    pub who: String,
    /// What to change when they are rejected, naming the settings.
    pub fix: String,
}

impl Identity {
    pub(crate) fn new(who: impl Into<String>, fix: impl Into<String>) -> Self {
        Identity {
            who: who.into(),
            fix: fix.into(),
        }
    }
}

/// What messages may say about one storage.
#[derive(Debug, Clone)]
pub(crate) struct Site {
    pub backend: Backend,
    /// `s3://bucket/path`, without credentials.
    pub url: String,
    /// The bucket or container (the directory for `file`).
    pub bucket: String,
    /// The configured endpoint (`AWS_ENDPOINT`, ...), when one is set.
    pub endpoint: Option<String>,
    /// The configured region (S3).
    pub region: Option<String>,
    pub identity: Identity,
    /// Values never to print (keys, tokens).
    pub secrets: Vec<String>,
    /// The credential source's last failure, when walg chose the source.
    #[cfg(any(feature = "s3", feature = "gcs", feature = "azure"))]
    pub credentials: Option<std::sync::Arc<crate::credentials::Tracker>>,
}

impl Site {
    pub(crate) fn new(backend: Backend, url: impl Into<String>, bucket: impl Into<String>) -> Self {
        Site {
            backend,
            url: url.into(),
            bucket: bucket.into(),
            endpoint: None,
            region: None,
            identity: Identity::new("the credentials", "check the credentials"),
            secrets: Vec::new(),
            #[cfg(any(feature = "s3", feature = "gcs", feature = "azure"))]
            credentials: None,
        }
    }

    /// `text` with every secret value and URL signature masked.
    pub(crate) fn redact(&self, text: &str) -> String {
        redact(text, &self.secrets)
    }

    fn explanation(&self, cause: Cause, what: String, fix: String, detail: String) -> Explanation {
        Explanation {
            cause,
            location: self.url.clone(),
            what: self.redact(&what),
            fix: self.redact(&fix),
            detail,
        }
    }

    /// "the bucket does not exist": for a listing that found no bucket, or
    /// an answer the provider coded so.
    pub(crate) fn bucket_missing(&self, answer: Option<&Answer>, detail: String) -> Explanation {
        let at = answer
            .and_then(|a| a.origin.clone())
            .or_else(|| self.endpoint.clone())
            .map(|o| format!(" at {o}"))
            .unwrap_or_default();
        self.explanation(
            Cause::BucketMissing,
            format!(
                "the {} {:?} does not exist{at}",
                self.backend.bucket_word(),
                self.bucket
            ),
            format!("create it or fix {}", self.backend.prefix_setting()),
            detail,
        )
    }

    /// Classifies an opendal error of `op` whose retry/failover class is
    /// `kind`. `None` for answers (not found, already exists), which are not
    /// failures.
    pub(crate) fn explain(
        &self,
        op: &str,
        kind: ErrorKind,
        err: &opendal::Error,
    ) -> Option<Explanation> {
        if matches!(kind, ErrorKind::NotFound | ErrorKind::Conflict) {
            return None;
        }
        let detail = self.redact(&with_causes(err));
        if let Some(x) = self.identity_failure(err, &detail) {
            return Some(x);
        }
        let answer = Answer::of(err);
        if let Some(t) = Transport::of(err) {
            return Some(self.transport(t, &answer, op, detail));
        }
        Some(self.answered(op, kind, &answer, detail))
    }

    /// The credential source's failure, when `err` is opendal's "could not
    /// load a credential" (its chain hides the provider's error, which the
    /// tracker kept): cause `identity`, naming the source and the setting.
    pub(crate) fn identity_failure(
        &self,
        err: &opendal::Error,
        detail: &str,
    ) -> Option<Explanation> {
        #[cfg(any(feature = "s3", feature = "gcs", feature = "azure"))]
        {
            let text = err.to_string();
            let loading = text.contains("LoadCredential")
                || text.contains("loading credential")
                || detail.contains("failed to load signing credential");
            let failure = self.credentials.as_ref()?.failure()?;
            if loading {
                return Some(self.explanation(
                    Cause::Identity,
                    failure.what,
                    failure.fix,
                    detail.to_string(),
                ));
            }
            None
        }
        #[cfg(not(any(feature = "s3", feature = "gcs", feature = "azure")))]
        {
            let _ = (err, detail);
            None
        }
    }

    /// Whether the credential source's last failure was transient (a
    /// timeout, an unreachable endpoint).
    pub(crate) fn identity_transient(&self) -> Option<bool> {
        #[cfg(any(feature = "s3", feature = "gcs", feature = "azure"))]
        {
            self.credentials.as_ref()?.failure().map(|f| f.transient)
        }
        #[cfg(not(any(feature = "s3", feature = "gcs", feature = "azure")))]
        None
    }

    /// Classifies a local I/O error met while doing `doing` (`create
    /// directory`) on `path`. `None` for answers (not found, exists).
    pub(crate) fn explain_io(
        &self,
        doing: &str,
        path: &Path,
        err: &std::io::Error,
    ) -> Option<Explanation> {
        use std::io::ErrorKind as K;
        let detail = format!("{doing} {}: {err}", path.display());
        // A writer's temp file says nothing to the reader: name the
        // directory of the archive instead.
        let shown = match path.to_str() {
            Some(p) if p.contains("/.walg-tmp-") => Path::new(&self.bucket),
            _ => path,
        };
        let p = shown.display();
        let root = Path::new(&self.bucket).display();
        let (cause, what, fix) = match err.kind() {
            K::NotFound | K::AlreadyExists => return None,
            K::StorageFull | K::QuotaExceeded => (
                Cause::DiskFull,
                format!("no space left on the file system of {root}"),
                format!(
                    "free space there or point {} elsewhere",
                    self.backend.prefix_setting()
                ),
            ),
            K::PermissionDenied => (
                Cause::LocalPermission,
                format!("permission denied to {doing} {p} as {}", current_user()),
                format!(
                    "give that user access (chown or chmod) or fix {}",
                    self.backend.prefix_setting()
                ),
            ),
            K::ReadOnlyFilesystem => (
                Cause::LocalPermission,
                format!("the file system of {root} is read-only"),
                format!(
                    "remount it read-write or point {} elsewhere",
                    self.backend.prefix_setting()
                ),
            ),
            _ => (
                Cause::Unexpected,
                format!("{doing} {p} failed: {}", quote(&err.to_string())),
                "check the file system (dmesg)".to_string(),
            ),
        };
        Some(self.explanation(cause, what, fix, detail))
    }

    /// The endpoint as a message names it: the request's origin, else the
    /// configured endpoint, else the storage URL.
    fn host(&self, answer: &Answer) -> String {
        answer
            .origin
            .clone()
            .or_else(|| self.endpoint.clone())
            .unwrap_or_else(|| self.url.clone())
    }

    /// What to change when the endpoint itself is wrong.
    fn endpoint_fix(&self) -> String {
        match (self.backend, &self.endpoint) {
            (Backend::File, _) => format!("fix {}", Backend::File.prefix_setting()),
            (b, Some(_)) => format!("fix {}", b.endpoint_setting()),
            (Backend::S3, None) => "check WALG_S3_PREFIX and AWS_REGION".to_string(),
            (Backend::Azure, None) => "check AZURE_STORAGE_ACCOUNT".to_string(),
            (Backend::Gcs, None) => "check WALG_GS_PREFIX".to_string(),
        }
    }

    fn transport(&self, t: Transport, answer: &Answer, op: &str, detail: String) -> Explanation {
        let host = self.host(answer);
        // TLS speaks of a server, not a URL: `127.0.0.1:9000`.
        let server = host
            .split_once("://")
            .map_or(host.as_str(), |(_, a)| a)
            .to_string();
        let ep = self.endpoint_fix();
        let (cause, what, fix) = match t {
            Transport::Dns => (
                Cause::NameResolution,
                format!(
                    "cannot resolve the host name {:?} (DNS)",
                    answer.host.as_deref().unwrap_or(&host)
                ),
                format!("{ep}, or the host's DNS"),
            ),
            Transport::Refused => (
                Cause::ConnectionRefused,
                format!("the connection to {host} was refused"),
                format!("check that the storage runs there, or {ep}"),
            ),
            Transport::Reset => (
                Cause::ConnectionReset,
                format!("the connection to {host} was closed mid-request"),
                "check the storage and any proxy or firewall on the way".to_string(),
            ),
            Transport::TimedOut => (
                Cause::Timeout,
                format!("connecting to {host} timed out"),
                format!("check the network path to the storage, or {ep}"),
            ),
            Transport::Untrusted => (
                Cause::TlsUntrusted,
                format!("the TLS certificate of {server} is not signed by a trusted CA"),
                "for a private CA set SSL_CERT_FILE to its PEM file".to_string(),
            ),
            Transport::PlainHttp => (
                Cause::TlsToPlainHttp,
                format!("{server} speaks plain HTTP, not TLS"),
                match self.endpoint {
                    Some(_) => format!(
                        "write http:// in {}, or enable TLS on the server",
                        self.backend.endpoint_setting()
                    ),
                    None => "enable TLS on the server, or reach it through http://".to_string(),
                },
            ),
            Transport::NameMismatch(presented) => {
                let asked = answer.host.as_deref().unwrap_or(&server);
                (
                    Cause::TlsNameMismatch,
                    if presented.is_empty() {
                        format!("the TLS certificate of {server} is not valid for {asked:?}")
                    } else {
                        format!(
                            "the TLS certificate of {server} names {}, not {asked:?}",
                            quote(&presented.join(", "))
                        )
                    },
                    match self.endpoint {
                        Some(_) => format!(
                            "put a name it holds in {}, or reissue it",
                            self.backend.endpoint_setting()
                        ),
                        None => "reissue the certificate for this name".to_string(),
                    },
                )
            }
            Transport::Tls(why) => (
                Cause::Tls,
                format!("the TLS handshake with {server} failed: {}", quote(&why)),
                match self.endpoint {
                    Some(_) => format!(
                        "check its TLS setup, or write http:// in {}",
                        self.backend.endpoint_setting()
                    ),
                    None => "check the server's TLS setup and SSL_CERT_FILE".to_string(),
                },
            ),
            Transport::Io(cause, why) => {
                let path = Path::new(&self.bucket);
                let (what, fix) = match cause {
                    Cause::DiskFull => (
                        format!("no space left on the file system of {}", path.display()),
                        format!(
                            "free space there or point {} elsewhere",
                            self.backend.prefix_setting()
                        ),
                    ),
                    _ => (
                        format!(
                            "permission denied to {} under {} as {}",
                            op_verb(op),
                            path.display(),
                            current_user()
                        ),
                        format!(
                            "give that user access (chown or chmod) or fix {}",
                            self.backend.prefix_setting()
                        ),
                    ),
                };
                let _ = why;
                (cause, what, fix)
            }
            Transport::Other(why) => (
                Cause::Unexpected,
                format!("the request to {host} failed: {}", quote(&why)),
                "WALG_LOG_LEVEL=debug logs the whole answer".to_string(),
            ),
        };
        self.explanation(cause, what, fix, detail)
    }

    /// A failure the storage answered (an HTTP status, a provider code).
    fn answered(&self, op: &str, kind: ErrorKind, a: &Answer, detail: String) -> Explanation {
        let host = self.host(a);
        let code = a.code.as_deref().unwrap_or("");
        let status = a.status.unwrap_or(0);
        // `NoSuchBucket`, or `403`, or `503 SlowDown` for a phrase.
        let answered = match (a.status, a.code.as_deref()) {
            (Some(s), Some(c)) => format!("{s} {c}"),
            (Some(s), None) => s.to_string(),
            (None, Some(c)) => c.to_string(),
            (None, None) => String::new(),
        };
        let is = |codes: &[&str]| codes.iter().any(|c| c.eq_ignore_ascii_case(code));
        let msg = a.message.as_deref().unwrap_or("");
        let msg_has = |s: &str| msg.to_ascii_lowercase().contains(s);

        let bucket_missing = is(&["NoSuchBucket", "ContainerNotFound"])
            || msg_has("bucket does not exist")
            || msg_has("container does not exist")
            || msg_has("bucket not found");
        if bucket_missing {
            return self.bucket_missing(Some(a), detail);
        }
        let credentials = is(&[
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "AuthenticationFailed",
            "InvalidAuthenticationInfo",
            "NoAuthenticationInformation",
            "ExpiredToken",
            "InvalidToken",
            "TokenRefreshRequired",
            "InvalidClientTokenId",
            "AuthorizationQueryParametersError",
        ]) || status == 401
            // Azurite answers a wrong shared key so; Azure itself says
            // AuthenticationFailed.
            || (is(&["AuthorizationFailure"]) && msg_has("authenticate"));
        let region = a.region.clone();
        let (cause, what, fix) = if credentials {
            (
                Cause::CredentialsRejected,
                format!("the storage rejected {} ({answered})", self.identity.who),
                self.identity.fix.clone(),
            )
        } else if is(&[
            "PermanentRedirect",
            "TemporaryRedirect",
            "AuthorizationHeaderMalformed",
            "IllegalLocationConstraintException",
            "IncorrectEndpoint",
        ]) || matches!(status, 301 | 307)
            || (region.is_some() && status == 400)
        {
            let configured = self.region.as_deref().unwrap_or("us-east-1");
            match region.as_deref() {
                Some(r) if r != configured => (
                    Cause::WrongRegion,
                    format!(
                        "the bucket {:?} is in region {r}, not {configured} ({answered})",
                        self.bucket
                    ),
                    format!("set AWS_REGION={r}"),
                ),
                _ => (
                    Cause::WrongRegion,
                    format!(
                        "{host} says the bucket {:?} is served by another region or endpoint ({answered})",
                        self.bucket
                    ),
                    "fix AWS_REGION or AWS_ENDPOINT".to_string(),
                ),
            }
        } else if is(&[
            "SlowDown",
            "ServerBusy",
            "RequestLimitExceeded",
            "TooManyRequests",
        ]) || status == 429
            || kind == ErrorKind::Unavailable && a.rate_limited
        {
            let setting = if op == "put" {
                "WALG_UPLOAD_CONCURRENCY"
            } else {
                "WALG_DOWNLOAD_CONCURRENCY"
            };
            (
                Cause::Throttled,
                format!("{host} asks for fewer requests ({answered})"),
                format!("lower {setting} or raise the storage's request limits"),
            )
        } else if is(&[
            "EntityTooLarge",
            "RequestEntityTooLarge",
            "RequestBodyTooLarge",
        ]) || status == 413
        {
            (
                Cause::TooLarge,
                format!("{host} refused the object as too large ({answered})"),
                "raise the size limit of the storage or of a proxy in front of it".to_string(),
            )
        } else if status == 403
            || kind == ErrorKind::PermissionDenied
            || is(&[
                "AccessDenied",
                "AuthorizationFailure",
                "AuthorizationPermissionMismatch",
                "AuthorizationResourceTypeMismatch",
                "AllAccessDisabled",
                "InsufficientAccountPermissions",
            ])
        {
            (
                Cause::PermissionMissing,
                format!(
                    "{} may not {} in {} ({answered})",
                    self.identity.who,
                    op_verb(op),
                    self.url
                ),
                self.permission_fix(op),
            )
        } else {
            let quoted = match (a.message.as_deref(), a.status, a.code.as_deref()) {
                (Some(m), _, _) if !m.is_empty() => format!(": {}", quote(m)),
                _ => String::new(),
            };
            let what = if answered.is_empty() {
                format!("{} failed{quoted}", op_verb_ing(op))
            } else {
                // `500 InternalError: We encountered...`: the provider's
                // own words, after the storage's name and location.
                format!("{answered}{quoted}")
            };
            (
                Cause::Unexpected,
                what,
                "WALG_LOG_LEVEL=debug logs the whole answer".to_string(),
            )
        };
        self.explanation(cause, what, fix, detail)
    }

    /// The permission `op` needs, per backend.
    fn permission_fix(&self, op: &str) -> String {
        match self.backend {
            Backend::S3 => {
                let action = match op {
                    "put" => "s3:PutObject",
                    "list" => "s3:ListBucket",
                    "delete" => "s3:DeleteObject",
                    _ => "s3:GetObject",
                };
                format!("grant {action} on the bucket to that identity")
            }
            Backend::Gcs => {
                let permission = match op {
                    "put" => "storage.objects.create",
                    "list" => "storage.objects.list",
                    "delete" => "storage.objects.delete",
                    _ => "storage.objects.get",
                };
                format!("grant {permission} on the bucket to that identity")
            }
            Backend::Azure if self.identity.who.contains("SAS") => {
                let letter = match op {
                    "put" => "w",
                    "list" => "l",
                    "delete" => "d",
                    _ => "r",
                };
                format!("issue AZURE_STORAGE_SAS_TOKEN with the {letter} permission")
            }
            Backend::Azure => {
                "check the account's network rules and the identity's role (Storage Blob Data Contributor)"
                    .to_string()
            }
            Backend::File => format!("fix {}", Backend::File.prefix_setting()),
        }
    }
}

/// `read objects`, as in "may not read objects".
fn op_verb(op: &str) -> &'static str {
    match op {
        "put" => "write objects",
        "list" => "list objects",
        "delete" => "delete objects",
        _ => "read objects",
    }
}

fn op_verb_ing(op: &str) -> &'static str {
    match op {
        "put" => "writing",
        "list" => "listing",
        "delete" => "deleting",
        _ => "reading",
    }
}

/// `user postgres (uid 105)`: who this process is, for a permission message.
pub(crate) fn current_user() -> String {
    use std::os::unix::fs::MetadataExt;
    // The owner of /proc/self is the effective uid; no libc call needed.
    let Ok(uid) = std::fs::metadata("/proc/self").map(|m| m.uid()) else {
        return "this user".to_string();
    };
    let name = std::fs::read_to_string("/etc/passwd").ok().and_then(|p| {
        p.lines().find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_string())
        })
    });
    match name {
        Some(n) => format!("user {n} (uid {uid})"),
        None => format!("uid {uid}"),
    }
}

/// One line of at most [`QUOTE`] characters.
fn quote(text: &str) -> String {
    let line = text.split(['\n', '\r']).next().unwrap_or("").trim();
    if line.chars().count() <= QUOTE {
        return line.to_string();
    }
    let cut: String = line.chars().take(QUOTE).collect();
    format!("{}...", cut.trim_end())
}

/// What the provider answered, read from an opendal error.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    pub status: Option<u16>,
    /// The provider's error code (`NoSuchBucket`, `ContainerNotFound`).
    pub code: Option<String>,
    /// The provider's message for it.
    pub message: Option<String>,
    /// `scheme://host[:port]` of the request.
    pub origin: Option<String>,
    /// The host alone.
    pub host: Option<String>,
    /// The region the provider says the bucket is in.
    pub region: Option<String>,
    /// opendal's kind says the service throttles.
    pub rate_limited: bool,
}

impl Answer {
    /// Reads what opendal keeps of the answer. opendal offers its context
    /// (URI, response status and headers) only through `Display`, so this
    /// reads that text; the provider's error document is the message
    /// (`S3Error { code: "...", message: "..." }`, or the raw body).
    pub(crate) fn of(err: &opendal::Error) -> Answer {
        let text = err.to_string();
        let mut a = Answer {
            rate_limited: err.kind() == opendal::ErrorKind::RateLimited,
            ..Answer::default()
        };
        if let Some(i) = text.find("response: Parts { status: ") {
            let rest = &text[i + "response: Parts { status: ".len()..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            a.status = digits.parse().ok();
        }
        let uri = ["uri: ", "url: "].iter().find_map(|k| {
            let i = text.find(k)?;
            let rest = &text[i + k.len()..];
            Some(rest[..rest.find([',', ' ']).unwrap_or(rest.len())].to_string())
        });
        if let Some(uri) = uri {
            if let Some((scheme, rest)) = uri.split_once("://") {
                let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
                // userinfo never belongs in a message
                let authority = authority.rsplit('@').next().unwrap_or(authority);
                a.origin = Some(format!("{scheme}://{authority}"));
                let host = match authority.strip_prefix('[') {
                    Some(v6) => v6.split(']').next().unwrap_or(v6),
                    None => authority.split(':').next().unwrap_or(authority),
                };
                a.host = Some(host.to_string());
            }
        }
        a.region = header(&text, "x-amz-bucket-region");
        let msg = err.message();
        if msg.contains("GcsError") {
            // GCS: a numeric code; the reason is the word to quote.
            a.code = debug_string(msg, "reason: ").filter(|r| !r.is_empty());
            a.message = debug_string(msg, "message: ");
        } else if msg.contains("code: \"") {
            a.code = debug_string(msg, "code: ").filter(|c| !c.is_empty());
            a.message = debug_string(msg, "message: ").filter(|m| !m.is_empty());
        } else if msg.contains("<Code>") {
            a.code = xml_element(msg, "Code");
            a.message = xml_element(msg, "Message");
        } else if !msg.trim().is_empty() {
            a.message = Some(quote(msg));
        }
        if a.code.is_none() {
            a.code = header(&text, "x-ms-error-code");
        }
        if let Some(m) = &a.message {
            // "the region 'us-east-1' is wrong; expecting 'eu-central-1'"
            if let Some(i) = m.find("expecting '") {
                let rest = &m[i + "expecting '".len()..];
                a.region = a
                    .region
                    .or_else(|| rest.split('\'').next().map(str::to_string));
            }
            // Azure and S3 append request ids and times; they say nothing
            // to a reader.
            let cut = m.find("\nRequestId:").or_else(|| m.find(" RequestId:"));
            a.message = Some(quote(&m[..cut.unwrap_or(m.len())]));
        }
        a
    }
}

/// `"name": "value"` in a debug-printed header map.
fn header(text: &str, name: &str) -> Option<String> {
    let key = format!("\"{name}\": \"");
    let i = text.find(&key)?;
    let rest = &text[i + key.len()..];
    Some(rest[..rest.find('"')?].to_string())
}

/// The string after `field` in a `Debug` print: `code: "NoSuchBucket"`.
fn debug_string(text: &str, field: &str) -> Option<String> {
    let mut from = 0;
    while let Some(i) = text[from..].find(field) {
        let start = from + i + field.len();
        let rest = &text[start..];
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = quoted.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some('n') => out.push('\n'),
                        Some(c) => out.push(c),
                        None => break,
                    },
                    '"' => return Some(out),
                    c => out.push(c),
                }
            }
            return None;
        }
        from = start;
    }
    None
}

fn xml_element(text: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let i = text.find(&open)? + open.len();
    let end = text[i..].find(&format!("</{name}>"))?;
    Some(text[i..i + end].trim().to_string())
}

/// A failure below HTTP: the request got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Transport {
    Dns,
    Refused,
    Reset,
    TimedOut,
    Untrusted,
    PlainHttp,
    /// The certificate's names, when the TLS library says them.
    NameMismatch(Vec<String>),
    Tls(String),
    /// A local file-system failure under opendal's fs service.
    Io(Cause, String),
    Other(String),
}

impl Transport {
    /// Reads the error chain below opendal: reqwest, hyper, the resolver,
    /// rustls and the OS. Structured errors (rustls, `io::Error` kinds) are
    /// read as values; the resolver's failure only says so in words.
    pub(crate) fn of(err: &opendal::Error) -> Option<Transport> {
        let mut texts = Vec::new();
        let mut io_kind = None;
        let mut cur: Option<&(dyn StdError + 'static)> = StdError::source(err);
        while let Some(e) = cur {
            let (tls, kind) = look_inside(e);
            if tls.is_some() {
                return tls;
            }
            io_kind = io_kind.or(kind);
            texts.push(e.to_string());
            cur = e.source();
        }
        if texts.is_empty() {
            return None;
        }
        let text = texts.join(": ");
        Some(Transport::from_text(&text, io_kind))
    }

    fn from_text(text: &str, io_kind: Option<std::io::ErrorKind>) -> Transport {
        use std::io::ErrorKind as K;
        let lower = text.to_ascii_lowercase();
        let has = |s: &str| lower.contains(s);
        if has("dns error") || has("failed to lookup address") || has("name or service not known") {
            return Transport::Dns;
        }
        if has("handshake eof") {
            // The server closed the connection instead of answering the
            // TLS hello: a plain-HTTP server that hangs up on garbage does.
            return Transport::Tls("the server hung up".to_string());
        }
        match io_kind {
            Some(K::ConnectionRefused) => return Transport::Refused,
            Some(K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof) => {
                return Transport::Reset
            }
            Some(K::TimedOut) => return Transport::TimedOut,
            Some(K::StorageFull | K::QuotaExceeded) => {
                return Transport::Io(Cause::DiskFull, text.to_string())
            }
            Some(K::PermissionDenied | K::ReadOnlyFilesystem) => {
                return Transport::Io(Cause::LocalPermission, text.to_string())
            }
            _ => {}
        }
        if has("connection refused") {
            Transport::Refused
        } else if has("invalidcontenttype") || has("corrupt message") {
            Transport::PlainHttp
        } else if has("unknownissuer") {
            Transport::Untrusted
        } else if has("notvalidforname") || has("not valid for name") {
            Transport::NameMismatch(Vec::new())
        } else if has("connection reset")
            || has("connection closed before message completed")
            || has("broken pipe")
        {
            Transport::Reset
        } else if has("timed out") {
            Transport::TimedOut
        } else if has("certificate") || has("tls") || has("handshake") {
            Transport::Tls(last_part(text))
        } else {
            Transport::Other(last_part(text))
        }
    }
}

/// A TLS failure in `e`, and the most telling I/O error kind. An
/// `io::Error` hides what it wraps from `source()` (hyper and tokio-rustls
/// wrap a rustls error in two of them), so this looks through `get_ref()`.
fn look_inside(e: &(dyn StdError + 'static)) -> (Option<Transport>, Option<std::io::ErrorKind>) {
    let mut e = e;
    let mut kind = None;
    for _ in 0..8 {
        if let Some(t) = tls_error(e) {
            return (Some(t), kind);
        }
        let Some(io) = e.downcast_ref::<std::io::Error>() else {
            break;
        };
        if io.kind() != std::io::ErrorKind::Other {
            kind = Some(io.kind());
        }
        match io.get_ref() {
            Some(inner) => e = inner,
            None => break,
        }
    }
    (None, kind)
}

/// `s3.example` from rustls's `DnsName("s3.example")`.
fn presented_name(name: &str) -> String {
    name.strip_prefix("DnsName(\"")
        .and_then(|n| n.strip_suffix("\")"))
        .unwrap_or(name)
        .to_string()
}

/// The innermost part of a chain joined by `: `, which says the most.
fn last_part(text: &str) -> String {
    text.rsplit(": ")
        .find(|p| !p.trim().is_empty())
        .unwrap_or(text)
        .to_string()
}

#[cfg(any(feature = "s3", feature = "gcs", feature = "azure"))]
fn tls_error(e: &(dyn StdError + 'static)) -> Option<Transport> {
    use rustls::{CertificateError as C, Error as R, InvalidMessage};
    let r = e.downcast_ref::<R>()?;
    Some(match r {
        R::InvalidCertificate(C::UnknownIssuer) => Transport::Untrusted,
        R::InvalidCertificate(C::NotValidForNameContext { presented, .. }) => {
            Transport::NameMismatch(presented.iter().map(|n| presented_name(n)).collect())
        }
        R::InvalidCertificate(C::NotValidForName) => Transport::NameMismatch(Vec::new()),
        R::InvalidMessage(InvalidMessage::InvalidContentType) => Transport::PlainHttp,
        other => Transport::Tls(other.to_string()),
    })
}

#[cfg(not(any(feature = "s3", feature = "gcs", feature = "azure")))]
fn tls_error(_: &(dyn StdError + 'static)) -> Option<Transport> {
    None
}

/// opendal's message with the causes below it: the HTTP client says "error
/// sending request" and keeps the reason (a refused connection, a
/// certificate the system does not trust) in its sources.
pub(crate) fn with_causes(err: &opendal::Error) -> String {
    let mut text = err.to_string();
    let mut cause = StdError::source(err);
    for _ in 0..8 {
        let Some(e) = cause else { break };
        let s = e.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        cause = e.source();
    }
    text
}

/// Masks secret values and URL signatures (Azure SAS `sig=`) in `text`.
///
/// A secret is masked only where it stands as a whole value: not where it is
/// part of a longer word. A placeholder secret such as `change-me` then
/// never masks part of a bucket named `change-me-bucket`; a real secret is
/// long and random and appears only as itself.
pub(crate) fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        if s.len() >= 4 {
            out = mask_whole(&out, s);
        }
    }
    // SAS tokens travel in URLs, which opendal puts into error contexts.
    let mut result = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(i) = rest.find("sig=") {
        result.push_str(&rest[..i + 4]);
        result.push_str("***");
        rest = &rest[i + 4..];
        let end = rest.find(['&', ' ', ',', '"', ')']).unwrap_or(rest.len());
        rest = &rest[end..];
    }
    result.push_str(rest);
    result
}

/// Characters that continue a word (a name, a key): a secret next to one
/// of them is part of something longer.
fn word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '-' || c == '_'
}

/// Whether the text next to a match continues a word: a word character, or
/// a dot inside a name (`change-me.example.com`), not one ending a sentence.
fn continues(mut next: impl Iterator<Item = char>) -> bool {
    match next.next() {
        Some('.') => next.next().is_some_and(char::is_alphanumeric),
        Some(c) => word_char(c),
        None => false,
    }
}

fn mask_whole(text: &str, secret: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut from = 0;
    while let Some(i) = text[from..].find(secret) {
        let start = from + i;
        let end = start + secret.len();
        let whole = !continues(text[..start].chars().rev()) && !continues(text[end..].chars());
        out.push_str(&text[from..start]);
        out.push_str(if whole { "***" } else { secret });
        from = end;
    }
    out.push_str(&text[from..]);
    out
}

#[cfg(test)]
mod tests;
