//! Storage errors: their retry/failover class, and what a DBA reads.
//!
//! Every backend maps its native errors onto [`ErrorKind`] so the failover
//! layer and the CLI can decide what to do without knowing the backend:
//! `NotFound` is an answer (never a reason to fail over), `Conflict` is an
//! answer too (the object exists), everything else means the storage did not
//! do what was asked.
//!
//! A failure a backend could classify also carries an [`Explanation`]: its
//! [`Cause`] (finer than the kind: a bucket that does not exist, a refused
//! connection, an untrusted certificate), what happened in a short phrase,
//! and what to change, naming the setting. The error then prints as one
//! line, cause first: `storage "default" (s3://nobucket/pg): the bucket
//! "nobucket" does not exist at http://127.0.0.1:9000; create it or fix
//! WALG_S3_PREFIX`. The backend's full answer (URIs, headers) stays in
//! [`Explanation::detail`], for debug logs.
//!
//! What this module does not do: classify anything. Backends do
//! (`walg-storage` from the provider's answer and the transport's error
//! chain); this is only the vocabulary they share with their callers.

use std::fmt;

/// What went wrong, in the terms callers act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The object does not exist. The storage answered; it is healthy.
    NotFound,
    /// A create-only-if-absent write found an object already there.
    Conflict,
    /// The call did not finish within its deadline.
    Timeout,
    /// The storage could not be reached or answered with a retryable failure
    /// (connection refused, reset, 5xx, throttling).
    Unavailable,
    /// Credentials were refused or lack a permission.
    PermissionDenied,
    /// The storage is configured wrongly (missing bucket, malformed prefix).
    Config,
    /// Stored data could not be decoded or failed validation.
    Corrupt,
    /// The storage answered, but a rule forbids the write (the archive
    /// belongs to another cluster). An answer, never a reason to fail over.
    Refused,
    /// Anything else; not worth retrying on the same storage.
    Other,
}

impl ErrorKind {
    /// Worth retrying the same call on the same storage after a backoff.
    pub fn is_transient(self) -> bool {
        matches!(self, ErrorKind::Timeout | ErrorKind::Unavailable)
    }

    /// The storage failed to serve the call: the failover layer marks it
    /// dead and moves on. `NotFound` and `Conflict` are answers, not failures.
    pub fn is_storage_failure(self) -> bool {
        !matches!(
            self,
            ErrorKind::NotFound | ErrorKind::Conflict | ErrorKind::Corrupt | ErrorKind::Refused
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not found",
            ErrorKind::Conflict => "already exists",
            ErrorKind::Timeout => "timed out",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::PermissionDenied => "permission denied",
            ErrorKind::Config => "misconfigured",
            ErrorKind::Corrupt => "corrupt",
            ErrorKind::Refused => "refused",
            ErrorKind::Other => "failed",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a storage call failed, in terms of what to fix. Finer than
/// [`ErrorKind`], which says what callers do (retry, fail over, give up) and
/// does not change with the cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Cause {
    /// The storage's host name does not resolve.
    NameResolution,
    /// Nothing listens at the endpoint.
    ConnectionRefused,
    /// The connection was reset or closed mid-request.
    ConnectionReset,
    /// The server's TLS certificate is not signed by a trusted authority.
    TlsUntrusted,
    /// `https://` was used against an endpoint that speaks plain HTTP.
    TlsToPlainHttp,
    /// The certificate does not name the host that was asked for.
    TlsNameMismatch,
    /// Another TLS failure (an expired certificate, a refused handshake).
    Tls,
    /// No answer within the deadline.
    Timeout,
    /// The storage does not accept the credentials (unknown key, wrong
    /// secret, expired token).
    CredentialsRejected,
    /// The credentials could not be had from their configured source (a
    /// token file that cannot be read, an STS or token endpoint that
    /// refuses, a metadata endpoint that does not answer).
    Identity,
    /// The credentials are accepted but lack a permission for the call.
    PermissionMissing,
    /// The bucket or container does not exist.
    BucketMissing,
    /// The bucket lives in another region, or behind another endpoint.
    WrongRegion,
    /// The storage asks for fewer requests (503 SlowDown, 429).
    Throttled,
    /// The object is larger than the storage (or a proxy) accepts.
    TooLarge,
    /// The local file system is full.
    DiskFull,
    /// A local path is not writable or readable by this user.
    LocalPermission,
    /// Anything else: the explanation quotes the provider's own code and
    /// message.
    Unexpected,
}

impl Cause {
    /// A stable identifier (`bucket-missing`), as in JSON reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::NameResolution => "name-resolution",
            Cause::ConnectionRefused => "connection-refused",
            Cause::ConnectionReset => "connection-reset",
            Cause::TlsUntrusted => "tls-untrusted",
            Cause::TlsToPlainHttp => "tls-to-plain-http",
            Cause::TlsNameMismatch => "tls-name-mismatch",
            Cause::Tls => "tls",
            Cause::Timeout => "timeout",
            Cause::CredentialsRejected => "credentials-rejected",
            Cause::Identity => "identity",
            Cause::PermissionMissing => "permission-missing",
            Cause::BucketMissing => "bucket-missing",
            Cause::WrongRegion => "wrong-region",
            Cause::Throttled => "throttled",
            Cause::TooLarge => "too-large",
            Cause::DiskFull => "disk-full",
            Cause::LocalPermission => "local-permission",
            Cause::Unexpected => "unexpected",
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a DBA reads about a failed storage call: the cause, what happened,
/// what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    pub cause: Cause,
    /// The storage, without credentials (`s3://bucket/path`); empty when
    /// the layer that explains does not know it.
    pub location: String,
    /// What happened: a short lowercase phrase that names the thing that
    /// failed (`the bucket "nobucket" does not exist at http://...`).
    pub what: String,
    /// What to change, naming the setting (`create it or fix WALG_S3_PREFIX`).
    pub fix: String,
    /// The backend's whole answer (operation, URI, headers, provider
    /// message), secrets masked. For debug logs, never the one-line message.
    pub detail: String,
}

/// An error from a [`crate::Store`] call. The message names the operation,
/// the storage and the key, or, when the backend explained the failure, the
/// storage, the cause and the fix; it never contains credentials.
#[derive(Debug)]
pub struct StoreError {
    pub kind: ErrorKind,
    pub op: &'static str,
    pub store: String,
    pub key: String,
    /// For an explained error, `what; fix` of the explanation (kept in step
    /// by [`StoreError::explained`] and [`StoreError::add_note`]).
    pub message: String,
    /// Why, when the backend could tell (see the module doc).
    pub explanation: Option<Box<Explanation>>,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.explanation {
            // Cause first: the storage, then what happened and the fix. The
            // operation and key seldom matter to the fix (a missing bucket
            // fails every key) and the explanation names them when they do.
            Some(x) if x.location.is_empty() => {
                write!(f, "storage {:?}: {}", self.store, self.message)
            }
            Some(x) => write!(
                f,
                "storage {:?} ({}): {}",
                self.store, x.location, self.message
            ),
            None => write!(
                f,
                "{} {:?} on storage {:?}: {}: {}",
                self.op, self.key, self.store, self.kind, self.message
            ),
        }
    }
}

impl std::error::Error for StoreError {}

impl StoreError {
    pub fn new(
        kind: ErrorKind,
        op: &'static str,
        store: impl Into<String>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        StoreError {
            kind,
            op,
            store: store.into(),
            key: key.into(),
            message: message.into(),
            explanation: None,
        }
    }

    /// An error with its explanation; the message becomes `what; fix`.
    pub fn explained(
        kind: ErrorKind,
        op: &'static str,
        store: impl Into<String>,
        key: impl Into<String>,
        explanation: Explanation,
    ) -> Self {
        StoreError {
            kind,
            op,
            store: store.into(),
            key: key.into(),
            message: format!("{}; {}", explanation.what, explanation.fix),
            explanation: Some(Box::new(explanation)),
        }
    }

    /// The cause, when the backend explained the failure.
    pub fn cause(&self) -> Option<Cause> {
        self.explanation.as_ref().map(|x| x.cause)
    }

    /// Adds a short note to what happened (`3 attempts`): inside the
    /// explanation, before the fix, or at the end of a plain message.
    pub fn add_note(&mut self, note: &str) {
        match &mut self.explanation {
            Some(x) => {
                x.what = format!("{} ({note})", x.what);
                self.message = format!("{}; {}", x.what, x.fix);
            }
            None => self.message = format!("{} ({note})", self.message),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn is_not_found(&self) -> bool {
        self.kind == ErrorKind::NotFound
    }

    pub fn is_transient(&self) -> bool {
        self.kind.is_transient()
    }

    /// Builds an error from an I/O error, classifying the common kinds.
    pub fn from_io(op: &'static str, store: &str, key: &str, err: &std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        let kind = match err.kind() {
            K::NotFound => ErrorKind::NotFound,
            K::AlreadyExists => ErrorKind::Conflict,
            K::PermissionDenied => ErrorKind::PermissionDenied,
            K::TimedOut => ErrorKind::Timeout,
            K::ConnectionRefused
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::BrokenPipe
            | K::Interrupted => ErrorKind::Unavailable,
            K::InvalidData | K::UnexpectedEof => ErrorKind::Corrupt,
            _ => ErrorKind::Other,
        };
        StoreError::new(kind, op, store, key, err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn explained() -> StoreError {
        StoreError::explained(
            ErrorKind::Config,
            "get",
            "default",
            "walg_archive_identity.json",
            Explanation {
                cause: Cause::BucketMissing,
                location: "s3://nobucket/pg".to_string(),
                what: "the bucket \"nobucket\" does not exist at http://127.0.0.1:9000".to_string(),
                fix: "create it or fix WALG_S3_PREFIX".to_string(),
                detail: "ConfigInvalid (permanent) at read, context: { uri: ... }".to_string(),
            },
        )
    }

    #[test]
    fn an_explained_error_says_the_cause_first_in_one_line() {
        let e = explained();
        assert_eq!(
            e.to_string(),
            "storage \"default\" (s3://nobucket/pg): the bucket \"nobucket\" does not exist at \
             http://127.0.0.1:9000; create it or fix WALG_S3_PREFIX"
        );
        assert_eq!(e.cause(), Some(Cause::BucketMissing));
        assert_eq!(e.kind, ErrorKind::Config);
    }

    #[test]
    fn notes_go_before_the_fix() {
        let mut e = explained();
        e.add_note("3 attempts");
        assert!(
            e.to_string().ends_with(
                "at http://127.0.0.1:9000 (3 attempts); create it or fix WALG_S3_PREFIX"
            ),
            "{e}"
        );
        let mut plain = StoreError::new(ErrorKind::Timeout, "put", "m", "k", "no answer");
        plain.add_note("2 attempts");
        assert_eq!(
            plain.to_string(),
            "put \"k\" on storage \"m\": timed out: no answer (2 attempts)"
        );
        assert_eq!(Cause::TlsToPlainHttp.as_str(), "tls-to-plain-http");
    }
}
