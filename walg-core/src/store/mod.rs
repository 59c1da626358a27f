//! Where objects live, as walg sees it: the [`Store`] trait (this file),
//! its error classes ([`error`]), and the in-memory and fault-injecting
//! stores tests and downstream tools stack ([`memory`]).
//!
//! Must not know: opendal or any backend (those are `walg-storage`'s), WAL
//! names beyond keys as strings, codecs, encryption, settings.
//!
//! Invariant: the trait is object-safe; an error carries its retry and
//! failover class ([`ErrorKind`]), and "not found" is never a failure of the
//! storage.
//!
//! The `Store` trait: the five object operations walg needs from a storage.
//!
//! The trait is object-safe (`Arc<dyn Store>`) so backends, the failover
//! layer and test doubles (in-memory, fault-injecting) can be stacked and
//! chosen at run time from a registry. Keys are relative to the storage's
//! prefix and use `/` separators (`wal_005/000000010000000000000003.lz4`).
//!
//! Bodies are streams of chunks, never whole files: a push holds at most a few
//! chunks of a segment in memory. An upload body is a [`Body`], which can be
//! opened again, so the failover layer can retry the same file on another
//! storage within one call.
//!
//! What this module does not do: timeouts, retries and health tracking are
//! layers around a `Store` (see `walg-storage` and `walg-failover`).

pub mod error;
pub mod memory;

pub use error::{ErrorKind, StoreError};

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;

/// A stream of object bytes.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, StoreError>> + Send>>;

/// A listing delivered page by page (see [`Store::list_pages`]).
pub type ListPages<'a> =
    Pin<Box<dyn Stream<Item = Result<Vec<ObjectMeta>, StoreError>> + Send + 'a>>;

/// Objects per page that [`Store::list_pages`] implementations aim for.
pub const LIST_PAGE: usize = 1000;

/// Metadata of a stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Key relative to the storage prefix.
    pub key: String,
    /// Stored (compressed) size in bytes.
    pub size: u64,
}

/// Options of [`Store::put`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// Fail with [`crate::ErrorKind::Conflict`] when the key already exists.
    /// Backends that cannot do this atomically check with `stat` first and
    /// say so in [`Store::atomic_if_not_exists`].
    pub if_not_exists: bool,
}

/// An upload body that can be read more than once.
pub trait Body: Send + Sync {
    /// Starts a fresh read of the whole body.
    fn open(&self) -> ByteStream;
    /// The exact length, when known before reading.
    fn len_hint(&self) -> Option<u64> {
        None
    }
    /// When the body is a local file stored exactly as it is (no
    /// compression, no encryption). A store on the same machine may then
    /// copy it in the kernel instead of streaming it through `open`; it must
    /// refuse a file of another length than [`LocalFile::len`].
    fn local_file(&self) -> Option<LocalFile> {
        None
    }
}

/// A local file a store may copy as it is (see [`Body::local_file`]).
#[derive(Clone)]
pub struct LocalFile {
    pub path: std::path::PathBuf,
    /// The length the file must have.
    pub len: u64,
    /// Called after each piece copied, as a streamed body's chunks would
    /// be pulled: a watchdog on silence sees the copy moving.
    pub progress: Option<std::sync::Arc<dyn Fn() + Send + Sync>>,
}

impl fmt::Debug for LocalFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalFile")
            .field("path", &self.path)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl Body for Bytes {
    fn open(&self) -> ByteStream {
        let b = self.clone();
        Box::pin(futures::stream::once(async move { Ok(b) }))
    }
    fn len_hint(&self) -> Option<u64> {
        Some(self.len() as u64)
    }
}

/// An object storage as walg sees it.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// A short, credential-free name used in messages and the status cache:
    /// a failover name such as `default`, or a URL such as `s3://bucket/path`.
    fn name(&self) -> &str;

    /// Whether `put` with `if_not_exists` is atomic on this storage.
    fn atomic_if_not_exists(&self) -> bool {
        false
    }

    /// Stores `body` under `key`. The object is durable, and complete under its
    /// final key, when this returns `Ok`; a failure never leaves a partial
    /// object under `key`.
    async fn put(&self, key: &str, body: &dyn Body, opts: PutOptions) -> Result<(), StoreError>;

    /// Like [`Store::put`], and says where the object went: this store's
    /// name, or, for a store made of several storages, the member(s) that
    /// took it. Upload-ahead markers and log lines name the real storage.
    async fn put_located(
        &self,
        key: &str,
        body: &dyn Body,
        opts: PutOptions,
    ) -> Result<String, StoreError> {
        self.put(key, body, opts).await?;
        Ok(self.name().to_string())
    }

    /// Reads the object; [`crate::ErrorKind::NotFound`] when absent.
    async fn get(&self, key: &str) -> Result<ByteStream, StoreError>;

    /// Metadata; [`crate::ErrorKind::NotFound`] when absent.
    async fn stat(&self, key: &str) -> Result<ObjectMeta, StoreError>;

    /// Objects whose key starts with `prefix` (files only, no directories),
    /// sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError>;

    /// Objects whose key starts with `prefix`, page by page, in no particular
    /// order, so that a caller can fold an archive of millions of objects
    /// without holding the whole listing. Backends that page natively
    /// (object stores, directory readers) override this; the default is one
    /// page from [`Store::list`].
    fn list_pages<'a>(&'a self, prefix: &'a str) -> ListPages<'a> {
        Box::pin(futures::stream::once(self.list(prefix)))
    }

    /// Removes the object; removing an absent object succeeds.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
}

/// A shared, dynamically chosen store.
pub type DynStore = Arc<dyn Store>;

#[async_trait]
impl<S: Store + ?Sized> Store for Arc<S> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn atomic_if_not_exists(&self) -> bool {
        (**self).atomic_if_not_exists()
    }
    async fn put(&self, key: &str, body: &dyn Body, opts: PutOptions) -> Result<(), StoreError> {
        (**self).put(key, body, opts).await
    }
    async fn put_located(
        &self,
        key: &str,
        body: &dyn Body,
        opts: PutOptions,
    ) -> Result<String, StoreError> {
        (**self).put_located(key, body, opts).await
    }
    async fn get(&self, key: &str) -> Result<ByteStream, StoreError> {
        (**self).get(key).await
    }
    async fn stat(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        (**self).stat(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        (**self).list(prefix).await
    }
    fn list_pages<'a>(&'a self, prefix: &'a str) -> ListPages<'a> {
        (**self).list_pages(prefix)
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        (**self).delete(key).await
    }
}

/// Reads a whole stream into memory. For small objects and tests only.
pub async fn read_all(mut stream: ByteStream) -> Result<Vec<u8>, StoreError> {
    use futures::StreamExt;
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}
