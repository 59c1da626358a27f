//! A [`Store`] over any opendal `Operator`, and the mapping of opendal errors
//! onto walg's [`ErrorKind`].
//!
//! Every object backend (S3, GCS, Azure Blob, and the read side of the file
//! system) is one `OpendalStore` with a few per-backend choices in
//! [`PutMode`]. Bodies are streamed both ways: `put` holds an object that
//! fits one request and sends it whole, and feeds a larger one's chunks to
//! an opendal `Writer` that sends parts (both sized by the transfer's
//! memory budget); `get` hands opendal's byte stream through.
//!
//! What this module does not do: timeouts and retries (see [`crate::guard`]),
//! reading settings (see the backend modules), durability of local files
//! (see [`crate::fs`]), or wording a failure for the reader (see
//! [`crate::cause`]). No opendal type leaves this crate.

// Each backend feature uses part of this module.
#![cfg_attr(
    not(all(feature = "fs", feature = "s3", feature = "gcs", feature = "azure")),
    allow(dead_code, unused_imports)
)]

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use opendal::Operator;
use walg_core::pipeline::budget::{MemoryBudget, PartRules, UploadPlan};
use walg_core::store::error::{ErrorKind, StoreError};
use walg_core::store::{Body, ByteStream, ListPages, ObjectMeta, PutOptions, Store, LIST_PAGE};

use crate::cause::{with_causes, Answer, Site};

/// Installs opendal's HTTP transport once per process; without it every
/// HTTP call fails with "default HTTP transport is not installed".
///
/// TLS uses rustls with the ring provider, installed as the process default
/// unless the application installed its own first (reqwest is built without
/// a provider of its own: its default, aws-lc-rs, is a long C build).
#[cfg(any(feature = "s3", feature = "gcs", feature = "azure"))]
pub(crate) fn install_http_transport() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err means a provider is already installed, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        opendal::install_default();
        // `opendal::install_default` installs reqwest only with opendal's
        // `http-transport-reqwest` feature, which we leave off (it brings
        // aws-lc-rs); install it here. First install wins, so this is a no-op
        // if the application installed a transport of its own.
        opendal_http_transport_reqwest::install_default();
    });
}

/// How a backend uploads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PutMode {
    /// Within the transfer's memory budget: an object of at most
    /// `single_request_max` bytes is held whole and sent in one request (a
    /// 16 MiB segment costs one round trip, and create-if-absent is best
    /// supported on plain PUTs); a larger one streams through an opendal
    /// writer in parts of `part` bytes, of which the writer holds the
    /// service's `parts_held` (S3 multipart, Azure blocks, GCS resumable
    /// pieces for create-if-absent or XML multipart otherwise). Memory is
    /// bounded whatever the segment size.
    Planned(UploadPlan),
}

impl Default for PutMode {
    /// For a store whose writes do not go through opendal (the file
    /// system's): any plan within the budget.
    fn default() -> Self {
        PutMode::within_budget(&PartRules {
            min_part: 1 << 20,
            max_part: usize::MAX,
            max_parts: u64::MAX,
            align: 1,
            parts_held: 2,
            fixed: 0,
        })
    }
}

impl PutMode {
    /// The plan the default budget gives a service with `rules`.
    pub(crate) fn within_budget(rules: &PartRules) -> PutMode {
        PutMode::Planned(MemoryBudget::DEFAULT.upload(rules))
    }
}

/// A store backed by an opendal operator.
pub(crate) struct OpendalStore {
    name: String,
    /// What messages may say about this storage (its credential-free URL,
    /// settings, identity) and the secrets they must not.
    site: Arc<Site>,
    op: Operator,
    put_mode: PutMode,
    /// The service refuses a create-if-absent write atomically. When false,
    /// `put` with `if_not_exists` checks with `stat` first.
    atomic_if_not_exists: bool,
    /// Whether a NotFound needs a check that the bucket exists before it is
    /// believed. Some services (fake-gcs-server) answer a missing bucket
    /// with the same bare 404 as a missing object.
    check_bucket: bool,
    /// The bucket was seen to exist; NotFound now means the object.
    bucket_ok: AtomicBool,
    /// Ask the service for create-if-absent even where it is not trusted to
    /// honour it (after the `stat` check). On GCS this selects opendal's
    /// resumable writer, the one real GCS gets, so an emulator that ignores
    /// the condition still exercises the same upload protocol.
    send_if_not_exists: bool,
}

impl fmt::Debug for OpendalStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The operator's own Debug may print its configuration; print only
        // what identifies the storage.
        f.debug_struct("OpendalStore")
            .field("name", &self.name)
            .field("url", &self.site.url)
            .field("put_mode", &self.put_mode)
            .field("atomic_if_not_exists", &self.atomic_if_not_exists)
            .finish_non_exhaustive()
    }
}

impl OpendalStore {
    pub(crate) fn new(
        name: impl Into<String>,
        mut site: Site,
        op: Operator,
        put_mode: PutMode,
        atomic_if_not_exists: bool,
    ) -> Self {
        site.secrets.retain(|s| !s.is_empty());
        OpendalStore {
            name: name.into(),
            site: Arc::new(site),
            op,
            put_mode,
            atomic_if_not_exists,
            check_bucket: false,
            bucket_ok: AtomicBool::new(false),
            send_if_not_exists: false,
        }
    }

    /// Sends create-if-absent to the service even when it is not atomic
    /// there (see the field).
    pub(crate) fn sending_if_not_exists(mut self) -> Self {
        self.send_if_not_exists = true;
        self
    }

    /// Makes the first NotFound of this store check that the bucket exists,
    /// so that a missing bucket is reported as a configuration error.
    pub(crate) fn checking_bucket(mut self) -> Self {
        self.check_bucket = true;
        self
    }

    /// Turns a NotFound into a configuration error when the bucket itself
    /// is missing. Costs one listing request per process at most.
    async fn confirm_not_found(&self, err: StoreError) -> StoreError {
        if err.kind != ErrorKind::NotFound
            || !self.check_bucket
            || self.bucket_ok.load(Ordering::Relaxed)
        {
            return err;
        }
        match self.op.list_with("").limit(1).await {
            Ok(_) => {
                self.bucket_ok.store(true, Ordering::Relaxed);
                err
            }
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => {
                self.bucket_missing(err.op, &err.key, Some(&e))
            }
            Err(e) => self.error(err.op, &err.key, &e),
        }
    }

    /// A configuration error: the bucket or container does not exist.
    fn bucket_missing(
        &self,
        op: &'static str,
        key: &str,
        err: Option<&opendal::Error>,
    ) -> StoreError {
        let answer = err.map(Answer::of);
        let detail = err
            .map(|e| self.site.redact(&with_causes(e)))
            .unwrap_or_default();
        StoreError::explained(
            ErrorKind::Config,
            op,
            &self.name,
            key,
            self.site.bucket_missing(answer.as_ref(), detail),
        )
    }

    pub(crate) fn url(&self) -> &str {
        &self.site.url
    }

    pub(crate) fn site(&self) -> &Site {
        &self.site
    }

    pub(crate) fn error(&self, op: &'static str, key: &str, err: &opendal::Error) -> StoreError {
        map_error(op, &self.name, &self.site, key, err)
    }

    async fn put_planned(
        &self,
        key: &str,
        body: &dyn Body,
        plan: UploadPlan,
        native_ine: bool,
    ) -> Result<(), StoreError> {
        let mut stream = body.open();
        // Hold the object until it outgrows one request. A body error here
        // has sent nothing, so there is nothing to abort.
        let mut held: Vec<Bytes> = Vec::new();
        let mut held_len = 0usize;
        let mut beyond = None;
        while let Some(next) = stream.next().await {
            let bytes = next?;
            if held_len + bytes.len() > plan.single_request_max {
                beyond = Some(bytes);
                break;
            }
            held_len += bytes.len();
            held.push(bytes);
        }
        let Some(beyond) = beyond else {
            return self
                .op
                .write_with(key, opendal::Buffer::from(held))
                .if_not_exists(native_ine)
                .await
                .map(|_| ())
                .map_err(|e| self.error("put", key, &e));
        };
        let mut writer = self
            .op
            .writer_with(key)
            .chunk(plan.part)
            .concurrent(1)
            .if_not_exists(native_ine)
            .await
            .map_err(|e| self.error("put", key, &e))?;
        // The held chunks go first, each released once the writer has sent
        // the part it went into.
        for bytes in held.into_iter().chain([beyond]) {
            if let Err(e) = writer.write(bytes).await {
                let _ = writer.abort().await;
                return Err(self.error("put", key, &e));
            }
        }
        while let Some(next) = stream.next().await {
            let bytes = match next {
                Ok(b) => b,
                Err(e) => {
                    // The body failed (e.g. the local WAL file vanished); do
                    // not complete a partial object.
                    let _ = writer.abort().await;
                    return Err(e);
                }
            };
            if let Err(e) = writer.write(bytes).await {
                let _ = writer.abort().await;
                return Err(self.error("put", key, &e));
            }
        }
        if let Err(e) = writer.close().await {
            // A refused or failed multipart completion leaves uploaded parts
            // behind (billed until a lifecycle rule removes them).
            let _ = writer.abort().await;
            return Err(self.error("put", key, &e));
        }
        Ok(())
    }
}

#[async_trait]
impl Store for OpendalStore {
    fn name(&self) -> &str {
        &self.name
    }

    fn atomic_if_not_exists(&self) -> bool {
        self.atomic_if_not_exists
    }

    async fn put(&self, key: &str, body: &dyn Body, opts: PutOptions) -> Result<(), StoreError> {
        let native_ine =
            opts.if_not_exists && (self.atomic_if_not_exists || self.send_if_not_exists);
        if opts.if_not_exists && !self.atomic_if_not_exists {
            // Not atomic: a concurrent writer can still slip in between the
            // stat and the write. `atomic_if_not_exists()` tells callers so.
            match self.stat(key).await {
                Ok(_) => {
                    return Err(StoreError::new(
                        ErrorKind::Conflict,
                        "put",
                        &self.name,
                        key,
                        format!("object already exists in {}", self.site.url),
                    ))
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        let result = match self.put_mode {
            PutMode::Planned(plan) => self.put_planned(key, body, plan, native_ine).await,
        };
        match result {
            Ok(()) => {
                self.bucket_ok.store(true, Ordering::Relaxed);
                Ok(())
            }
            // Writing an object cannot miss the object: the bucket is gone.
            Err(e) if e.kind == ErrorKind::NotFound && self.check_bucket => {
                Err(self.bucket_missing("put", key, None))
            }
            Err(e) => Err(e),
        }
    }

    async fn get(&self, key: &str) -> Result<ByteStream, StoreError> {
        match self.get_inner(key).await {
            Ok(s) => Ok(s),
            Err(e) => Err(self.confirm_not_found(e).await),
        }
    }

    async fn stat(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        match self.stat_inner(key).await {
            Ok(m) => Ok(m),
            Err(e) => Err(self.confirm_not_found(e).await),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.list_inner(prefix).await
    }

    fn list_pages<'a>(&'a self, prefix: &'a str) -> ListPages<'a> {
        // opendal's lister pages on its own (1000 keys per request on the
        // object stores, a directory reader on the file system); this only
        // groups its entries so callers see a few large steps.
        let dir = match prefix.rfind('/') {
            Some(i) => &prefix[..=i],
            None => "",
        };
        enum State {
            Start,
            Listing(opendal::Lister),
            Done,
        }
        Box::pin(futures::stream::try_unfold(
            State::Start,
            move |state| async move {
                let mut lister = match state {
                    State::Done => return Ok(None),
                    State::Listing(l) => l,
                    State::Start => match self.op.lister_with(dir).recursive(true).await {
                        Ok(l) => l,
                        Err(e)
                            if e.kind() == opendal::ErrorKind::NotFound && !self.check_bucket =>
                        {
                            return Ok(Some((Vec::new(), State::Done)))
                        }
                        Err(e) => return Err(self.list_error(prefix, &e)),
                    },
                };
                let mut page = Vec::with_capacity(LIST_PAGE);
                while page.len() < LIST_PAGE {
                    match lister.next().await {
                        None => return Ok(Some((page, State::Done))),
                        Some(Err(e))
                            if e.kind() == opendal::ErrorKind::NotFound && !self.check_bucket =>
                        {
                            return Ok(Some((page, State::Done)))
                        }
                        Some(Err(e)) => return Err(self.list_error(prefix, &e)),
                        Some(Ok(entry)) => {
                            let path = entry.path();
                            if entry.metadata().is_file()
                                && !path.ends_with('/')
                                && path.starts_with(prefix)
                            {
                                page.push(ObjectMeta {
                                    key: path.to_string(),
                                    size: entry.metadata().content_length(),
                                });
                            }
                        }
                    }
                }
                Ok(Some((page, State::Listing(lister))))
            },
        ))
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.delete_inner(key).await
    }
}

impl OpendalStore {
    async fn get_inner(&self, key: &str) -> Result<ByteStream, StoreError> {
        let reader = self
            .op
            .reader(key)
            .await
            .map_err(|e| self.error("get", key, &e))?;
        let stream = reader
            .into_stream(..)
            .await
            .map_err(|e| self.error("get", key, &e))?;
        let name = self.name.clone();
        let site = self.site.clone();
        let owned_key = key.to_string();
        let mut stream = stream
            .map(move |item| match item {
                Ok(buf) => Ok(futures::stream::iter(Iterator::map(
                    buf,
                    Ok::<Bytes, StoreError>,
                ))),
                Err(e) => Err(map_error("get", &name, &site, &owned_key, &e)),
            })
            .try_flatten()
            .boxed();
        // Readers are lazy: a missing object only shows on the first read.
        // Pull the first chunk here so that `get` itself reports NotFound.
        match stream.next().await {
            None => Ok(Box::pin(futures::stream::empty())),
            Some(Err(e)) => Err(e),
            Some(Ok(first)) => Ok(Box::pin(
                futures::stream::once(async move { Ok(first) }).chain(stream),
            )),
        }
    }

    async fn stat_inner(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        let meta = self
            .op
            .stat(key)
            .await
            .map_err(|e| self.error("stat", key, &e))?;
        if meta.is_dir() {
            return Err(StoreError::new(
                ErrorKind::NotFound,
                "stat",
                &self.name,
                key,
                format!("{key} is a directory in {}, not an object", self.site.url),
            ));
        }
        Ok(ObjectMeta {
            key: key.to_string(),
            size: meta.content_length(),
        })
    }

    async fn list_inner(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        // opendal lists directories; list the one that contains the prefix
        // and filter here, so `wal_005/0000000100` means a key prefix on
        // every backend.
        let dir = match prefix.rfind('/') {
            Some(i) => &prefix[..=i],
            None => "",
        };
        let entries = match self.op.list_with(dir).recursive(true).await {
            Ok(entries) => entries,
            // A prefix whose directory does not exist (file system) simply
            // has no objects.
            Err(e) if e.kind() == opendal::ErrorKind::NotFound && !self.check_bucket => Vec::new(),
            // Object stores list any prefix of an existing bucket.
            Err(e) => return Err(self.list_error(prefix, &e)),
        };
        let mut out: Vec<ObjectMeta> = entries
            .into_iter()
            .filter(|e| e.metadata().is_file() && !e.path().ends_with('/'))
            .filter(|e| e.path().starts_with(prefix))
            .map(|e| ObjectMeta {
                key: e.path().to_string(),
                size: e.metadata().content_length(),
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn list_error(&self, prefix: &str, err: &opendal::Error) -> StoreError {
        if err.kind() == opendal::ErrorKind::NotFound {
            return self.bucket_missing("list", prefix, Some(err));
        }
        self.error("list", prefix, err)
    }

    async fn delete_inner(&self, key: &str) -> Result<(), StoreError> {
        match self.op.delete(key).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.error("delete", key, &e)),
        }
    }
}

/// Maps an opendal error onto walg's kinds, with an explanation of every
/// failure (see [`crate::cause`]) and a credential-free message.
pub(crate) fn map_error(
    op: &'static str,
    store: &str,
    site: &Site,
    key: &str,
    err: &opendal::Error,
) -> StoreError {
    let detail = site.redact(&with_causes(err));
    let mut kind = classify(err, &detail);
    if let Some(x) = site.identity_failure(err, &detail) {
        // No credentials, no call: a refusal or an unreadable token is a
        // configuration error (not retried), a silent endpoint transient.
        kind = match site.identity_transient() {
            Some(true) => ErrorKind::Unavailable,
            _ => ErrorKind::Config,
        };
        return StoreError::explained(kind, op, store, key, x);
    }
    match site.explain(op, kind, err) {
        Some(x) => StoreError::explained(kind, op, store, key, x),
        // Answers, not failures: a short message, no context.
        None => {
            let answer = match kind {
                ErrorKind::Conflict => "the object already exists",
                _ => "no such object",
            };
            StoreError::new(kind, op, store, key, format!("{}: {answer}", site.url))
        }
    }
}

fn classify(err: &opendal::Error, text: &str) -> ErrorKind {
    use opendal::ErrorKind as O;
    // A missing bucket or container is answered with 404 like a missing
    // object; it is a configuration problem, never "object not found"
    // (which the failover layer treats as a healthy answer).
    let missing_bucket = [
        "NoSuchBucket",
        "ContainerNotFound",
        "bucket does not exist",
        "Bucket not found",
    ]
    .iter()
    .any(|m| text.contains(m));
    if missing_bucket {
        return ErrorKind::Config;
    }
    match err.kind() {
        O::NotFound => ErrorKind::NotFound,
        O::ConditionNotMatch | O::AlreadyExists => ErrorKind::Conflict,
        O::PermissionDenied => ErrorKind::PermissionDenied,
        O::ConfigInvalid => ErrorKind::Config,
        O::RateLimited => ErrorKind::Unavailable,
        _ if err.is_temporary() => ErrorKind::Unavailable,
        // Connection-level failures of the HTTP transport (refused, reset,
        // TLS) come as Unexpected "send http request"; the storage did not
        // answer, so they are unavailability, not a bad request.
        O::Unexpected
            if text.contains("send http request")
                || text.contains("read data from http response") =>
        {
            ErrorKind::Unavailable
        }
        _ => ErrorKind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cause::Backend;
    use walg_core::store::error::Cause;

    fn site() -> Site {
        Site::new(Backend::S3, "s3://b/p", "b")
    }

    fn check(kind: opendal::ErrorKind, msg: &str, temporary: bool, expected: ErrorKind) {
        let mut e = opendal::Error::new(kind, msg);
        if temporary {
            e = e.set_temporary();
        }
        let got = map_error("put", "default", &site(), "k", &e);
        assert_eq!(got.kind, expected, "{kind:?} {msg:?} -> {got}");
    }

    #[test]
    fn classifies_opendal_errors() {
        use opendal::ErrorKind as O;
        check(O::NotFound, "no such key", false, ErrorKind::NotFound);
        check(
            O::NotFound,
            "NoSuchBucket: The specified bucket does not exist",
            false,
            ErrorKind::Config,
        );
        check(O::NotFound, "ContainerNotFound", false, ErrorKind::Config);
        check(
            O::ConditionNotMatch,
            "precondition failed",
            false,
            ErrorKind::Conflict,
        );
        check(O::AlreadyExists, "exists", false, ErrorKind::Conflict);
        check(
            O::PermissionDenied,
            "AccessDenied",
            false,
            ErrorKind::PermissionDenied,
        );
        check(O::ConfigInvalid, "bad endpoint", false, ErrorKind::Config);
        check(O::RateLimited, "slow down", true, ErrorKind::Unavailable);
        check(
            O::Unexpected,
            "internal error",
            true,
            ErrorKind::Unavailable,
        );
        check(
            O::Unexpected,
            "send http request",
            false,
            ErrorKind::Unavailable,
        );
        check(O::Unexpected, "weird", false, ErrorKind::Other);
    }

    /// A cause two levels down (where reqwest keeps a TLS failure) reaches
    /// the message, with a hint for a certificate problem.
    #[test]
    fn nested_causes_reach_the_message() {
        #[derive(Debug)]
        struct Wrapper(std::io::Error);
        impl std::fmt::Display for Wrapper {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("error sending request")
            }
        }
        impl std::error::Error for Wrapper {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let inner = std::io::Error::other("invalid peer certificate: UnknownIssuer");
        let e = opendal::Error::new(opendal::ErrorKind::Unexpected, "send http request")
            .set_source(Wrapper(inner))
            .set_temporary();
        let got = map_error("get", "default", &site(), "k", &e);
        assert_eq!(got.kind, ErrorKind::Unavailable);
        assert_eq!(got.cause(), Some(Cause::TlsUntrusted), "{got}");
        assert!(got.message.contains("SSL_CERT_FILE"), "{}", got.message);
        let detail = &got.explanation.as_ref().expect("explained").detail;
        assert!(
            detail.contains("invalid peer certificate: UnknownIssuer"),
            "{detail}"
        );
    }
}
