//! Deadlines and bounded retries around any [`Store`].
//!
//! Every built-in backend is wrapped in a [`Guarded`] store so that nothing
//! waits forever: `stat`, `list`, `delete` and opening a `get` each have one
//! deadline; a transfer has a deadline on silence instead (an upload fails
//! when the backend has pulled no body chunk for `timeout`, a download when
//! no chunk arrives for `timeout`), so a large object on a slow but live link
//! still completes. Transient failures ([`ErrorKind::is_transient`]) are
//! retried `retries` times with exponential backoff; an upload is retried
//! from a fresh `Body::open()`. A storage that accepts connections and never
//! answers therefore fails a put after about `timeout * (retries + 1)` plus
//! the backoff.
//!
//! Logging: one debug line per call that failed or needed retries, with the
//! backend's whole answer ([`Explanation::detail`]: URI, headers, provider
//! message); never one line per attempt. The error itself says the cause in
//! one line, with the number of attempts.
//!
//! What this module does not do: retry a download mid-stream (the caller has
//! consumed part of it), or fail over to another storage (`walg-failover`).

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use tokio::time::Instant;
use walg_core::store::error::{Cause, ErrorKind, Explanation, StoreError};
use walg_core::store::{Body, ByteStream, DynStore, ObjectMeta, PutOptions, Store};

/// First backoff; doubled on each retry, capped at [`MAX_BACKOFF`].
const BASE_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A store whose calls have deadlines and retries.
pub struct Guarded {
    inner: DynStore,
    /// Credential-free description used in messages (`s3://bucket/path`).
    label: String,
    timeout: Duration,
    retries: u32,
}

impl fmt::Debug for Guarded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guarded")
            .field("label", &self.label)
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .field("inner", &self.inner)
            .finish()
    }
}

/// Formats a duration the way WAL-G settings are written (`5s`, `250ms`).
pub(crate) fn fmt_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 && d.as_secs() > 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

fn backoff(attempt: u32) -> Duration {
    BASE_BACKOFF
        .saturating_mul(1u32 << attempt.min(10))
        .min(MAX_BACKOFF)
}

impl Guarded {
    /// Wraps `inner`; `label` names the storage in timeout messages and must
    /// not contain credentials.
    pub fn new(inner: DynStore, label: impl Into<String>, timeout: Duration, retries: u32) -> Self {
        Guarded {
            inner,
            label: label.into(),
            timeout,
            retries,
        }
    }

    /// Wraps `inner` and returns it as a shared store.
    pub fn wrap(
        inner: DynStore,
        label: impl Into<String>,
        timeout: Duration,
        retries: u32,
    ) -> DynStore {
        Arc::new(Guarded::new(inner, label, timeout, retries))
    }

    fn timeout_error(&self, op: &'static str, key: &str, what: &str) -> StoreError {
        let after = fmt_duration(self.timeout);
        StoreError::explained(
            ErrorKind::Timeout,
            op,
            self.inner.name(),
            key,
            Explanation {
                cause: Cause::Timeout,
                location: self.label.clone(),
                what: format!("timed out after {after}: {what}"),
                fix: "check that the storage answers, or raise WALG_STORAGE_TIMEOUT".to_string(),
                detail: format!("{op} {key:?} on {}: {what} within {after}", self.label),
            },
        )
    }

    /// Runs `call` until it succeeds, fails for good, or the retries are
    /// used up.
    async fn retrying<T, F, Fut>(
        &self,
        op: &'static str,
        key: &str,
        mut call: F,
    ) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let mut attempt = 0;
        // The first failure of a call that later succeeds, for its one log line.
        let mut first: Option<String> = None;
        loop {
            match call().await {
                Ok(v) => {
                    if let Some(first) = first {
                        tracing::debug!(storage = %self.inner.name(), op, key, attempts = attempt + 1, "storage call succeeded after retries; first failure: {first}");
                    }
                    return Ok(v);
                }
                Err(e) if e.is_transient() && attempt < self.retries => {
                    tracing::trace!(storage = %self.inner.name(), op, key, attempt, error = %e, "retrying storage call");
                    first.get_or_insert_with(|| detail(&e));
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                Err(mut e) => {
                    if attempt > 0 {
                        e.add_note(&format!("{} attempts", attempt + 1));
                    }
                    if e.kind.is_storage_failure() {
                        tracing::debug!(storage = %self.inner.name(), op, key, attempts = attempt + 1, "storage call failed: {}", detail(&e));
                    }
                    return Err(e);
                }
            }
        }
    }

    /// One call with a single deadline.
    async fn deadline<T>(
        &self,
        op: &'static str,
        key: &str,
        fut: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(self.timeout_error(op, key, "no answer")),
        }
    }

    /// One upload, failed when the backend stops pulling the body for
    /// `timeout` (it is blocked on the network).
    async fn put_once(
        &self,
        key: &str,
        body: &dyn Body,
        opts: PutOptions,
    ) -> Result<(), StoreError> {
        let start = Instant::now();
        let progress = Arc::new(AtomicU64::new(0));
        let watched = WatchedBody {
            inner: body,
            progress: progress.clone(),
            start,
        };
        let upload = self.inner.put(key, &watched, opts);
        let watchdog = async {
            loop {
                let last = start + Duration::from_nanos(progress.load(Ordering::Relaxed));
                let idle = Instant::now().saturating_duration_since(last);
                if idle >= self.timeout {
                    return;
                }
                tokio::time::sleep(self.timeout - idle).await;
            }
        };
        tokio::select! {
            r = upload => r,
            () = watchdog => Err(self.timeout_error("put", key, "upload made no progress")),
        }
    }
}

/// The backend's whole answer for a debug line: the explanation's detail,
/// else the message.
fn detail(e: &StoreError) -> String {
    match &e.explanation {
        Some(x) if !x.detail.is_empty() => x.detail.clone(),
        _ => e.to_string(),
    }
}

/// A body that records when the backend last pulled a chunk.
struct WatchedBody<'a> {
    inner: &'a dyn Body,
    progress: Arc<AtomicU64>,
    start: Instant,
}

impl WatchedBody<'_> {
    /// Records "the backend pulled something now".
    fn toucher(&self) -> impl Fn() + Send + Sync + 'static {
        let progress = self.progress.clone();
        let start = self.start;
        move || {
            let nanos = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
            progress.store(nanos, Ordering::Relaxed);
        }
    }
}

impl Body for WatchedBody<'_> {
    fn open(&self) -> ByteStream {
        let touch = self.toucher();
        touch();
        Box::pin(self.inner.open().inspect(move |_| touch()))
    }
    fn len_hint(&self) -> Option<u64> {
        self.inner.len_hint()
    }
    fn local_file(&self) -> Option<walg_core::store::LocalFile> {
        let mut local = self.inner.local_file()?;
        let touch = self.toucher();
        let inner = local.progress.take();
        local.progress = Some(Arc::new(move || {
            touch();
            if let Some(inner) = &inner {
                inner();
            }
        }));
        Some(local)
    }
}

/// Fails a download stream when no chunk arrives within `timeout`.
fn silence_limited(stream: ByteStream, timeout: Duration, error: StoreError) -> ByteStream {
    let state = (stream, Some(error));
    Box::pin(futures::stream::unfold(
        state,
        move |(mut stream, error)| async move {
            let error = error?;
            match tokio::time::timeout(timeout, stream.next()).await {
                Ok(Some(item)) => Some((item, (stream, Some(error)))),
                Ok(None) => None,
                // Yield the timeout once, then end the stream.
                Err(_) => Some((Err(error), (stream, None))),
            }
        },
    ))
}

#[async_trait]
impl Store for Guarded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn atomic_if_not_exists(&self) -> bool {
        self.inner.atomic_if_not_exists()
    }

    async fn put(&self, key: &str, body: &dyn Body, opts: PutOptions) -> Result<(), StoreError> {
        self.retrying("put", key, || self.put_once(key, body, opts))
            .await
    }

    async fn get(&self, key: &str) -> Result<ByteStream, StoreError> {
        let stream = self
            .retrying("get", key, || {
                self.deadline("get", key, self.inner.get(key))
            })
            .await?;
        Ok(silence_limited(
            stream,
            self.timeout,
            self.timeout_error("get", key, "download stalled"),
        ))
    }

    async fn stat(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        self.retrying("stat", key, || {
            self.deadline("stat", key, self.inner.stat(key))
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.retrying("list", prefix, || {
            self.deadline("list", prefix, self.inner.list(prefix))
        })
        .await
    }

    fn list_pages<'a>(&'a self, prefix: &'a str) -> walg_core::store::ListPages<'a> {
        // One deadline per page: a long listing of a live storage completes,
        // a storage that stops answering fails within `timeout`. Pages are
        // not retried (a restarted listing would repeat what was delivered).
        let inner = self.inner.list_pages(prefix);
        Box::pin(futures::stream::unfold(
            Some(inner),
            move |state| async move {
                let mut inner = state?;
                match tokio::time::timeout(self.timeout, inner.next()).await {
                    Ok(None) => None,
                    Ok(Some(Ok(page))) => Some((Ok(page), Some(inner))),
                    Ok(Some(Err(e))) => Some((Err(e), None)),
                    Err(_) => Some((
                        Err(self.timeout_error("list", prefix, "listing stalled")),
                        None,
                    )),
                }
            },
        ))
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.retrying("delete", key, || {
            self.deadline("delete", key, self.inner.delete(key))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::sync::atomic::AtomicU32;
    use walg_core::store::memory::MemoryStore;

    /// Hangs the first `hangs` puts forever, then delegates.
    #[derive(Debug)]
    struct Hanging {
        inner: MemoryStore,
        hangs: AtomicU32,
    }

    #[async_trait]
    impl Store for Hanging {
        fn name(&self) -> &str {
            self.inner.name()
        }
        async fn put(
            &self,
            key: &str,
            body: &dyn Body,
            opts: PutOptions,
        ) -> Result<(), StoreError> {
            if self.hangs.load(Ordering::SeqCst) > 0 {
                self.hangs.fetch_sub(1, Ordering::SeqCst);
                std::future::pending::<()>().await;
            }
            self.inner.put(key, body, opts).await
        }
        async fn get(&self, key: &str) -> Result<ByteStream, StoreError> {
            self.inner.get(key).await
        }
        async fn stat(&self, key: &str) -> Result<ObjectMeta, StoreError> {
            std::future::pending::<()>().await;
            self.inner.stat(key).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
            self.inner.list(prefix).await
        }
        async fn delete(&self, key: &str) -> Result<(), StoreError> {
            self.inner.delete(key).await
        }
    }

    fn guarded(hangs: u32, retries: u32) -> (MemoryStore, Guarded) {
        let mem = MemoryStore::new("m");
        let inner = Arc::new(Hanging {
            inner: mem.clone(),
            hangs: AtomicU32::new(hangs),
        });
        (
            mem,
            Guarded::new(inner, "mem://m", Duration::from_millis(100), retries),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_put_is_retried_then_succeeds() {
        let (mem, g) = guarded(1, 1);
        g.put("k", &Bytes::from_static(b"v"), PutOptions::default())
            .await
            .expect("second attempt");
        assert_eq!(mem.object("k").as_deref(), Some(&b"v"[..]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_put_times_out_naming_storage_and_deadline() {
        let (_, g) = guarded(5, 1);
        let err = g
            .put("k", &Bytes::from_static(b"v"), PutOptions::default())
            .await
            .expect_err("hangs");
        assert_eq!(err.kind, ErrorKind::Timeout);
        let text = err.to_string();
        assert!(
            text.contains("mem://m") && text.contains("100ms") && text.contains("2 attempts"),
            "{text}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_stat_times_out() {
        let (_, g) = guarded(0, 0);
        let err = g.stat("k").await.expect_err("hangs");
        assert_eq!(err.kind, ErrorKind::Timeout, "{err}");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(0), Duration::from_millis(200));
        assert_eq!(backoff(1), Duration::from_millis(400));
        assert_eq!(backoff(30), MAX_BACKOFF);
        assert_eq!(fmt_duration(Duration::from_secs(5)), "5s");
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1500ms");
    }
}
