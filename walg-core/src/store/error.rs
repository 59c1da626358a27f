//! Storage errors and their retry/failover class.
//!
//! Every backend maps its native errors onto [`ErrorKind`] so the failover
//! layer and the CLI can decide what to do without knowing the backend:
//! `NotFound` is an answer (never a reason to fail over), `Conflict` is an
//! answer too (the object exists), everything else means the storage did not
//! do what was asked.

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

/// An error from a [`crate::Store`] call. The message names the operation,
/// the storage and the key; it never contains credentials.
#[derive(Debug, thiserror::Error)]
#[error("{op} {key:?} on storage {store:?}: {kind}: {message}")]
pub struct StoreError {
    pub kind: ErrorKind,
    pub op: &'static str,
    pub store: String,
    pub key: String,
    pub message: String,
}

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
