//! In-memory and fault-injecting stores: test doubles for the logic above
//! the storage layer (failover, pipelines), and for downstream tools' tests.
//!
//! They are not a cache and not meant for production data.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use crate::store::error::{ErrorKind, StoreError};
use crate::store::{Body, ByteStream, DynStore, ObjectMeta, PutOptions, Store};

/// A store that keeps objects in a map. Cloning shares the map.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    name: String,
    objects: Arc<Mutex<BTreeMap<String, Bytes>>>,
}

impl MemoryStore {
    pub fn new(name: impl Into<String>) -> Self {
        MemoryStore {
            name: name.into(),
            objects: Arc::default(),
        }
    }

    /// The keys currently stored, sorted.
    pub fn keys(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// The stored bytes of `key`, if any.
    pub fn object(&self, key: &str) -> Option<Bytes> {
        self.lock().get(key).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Bytes>> {
        // A poisoned map only means another test thread panicked mid-insert;
        // the map itself is still consistent.
        self.objects.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn name(&self) -> &str {
        &self.name
    }
    fn atomic_if_not_exists(&self) -> bool {
        true
    }
    async fn put(&self, key: &str, body: &dyn Body, opts: PutOptions) -> Result<(), StoreError> {
        let mut stream = body.open();
        let mut buf = Vec::new();
        while let Some(chunk) = stream.next().await {
            buf.extend_from_slice(&chunk?);
        }
        let mut map = self.lock();
        if opts.if_not_exists && map.contains_key(key) {
            return Err(StoreError::new(
                ErrorKind::Conflict,
                "put",
                &self.name,
                key,
                "object exists",
            ));
        }
        map.insert(key.to_string(), Bytes::from(buf));
        Ok(())
    }
    async fn get(&self, key: &str) -> Result<ByteStream, StoreError> {
        match self.object(key) {
            Some(b) => Ok(b.open()),
            None => Err(StoreError::new(
                ErrorKind::NotFound,
                "get",
                &self.name,
                key,
                "no such object",
            )),
        }
    }
    async fn stat(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        match self.object(key) {
            Some(b) => Ok(ObjectMeta {
                key: key.to_string(),
                size: b.len() as u64,
            }),
            None => Err(StoreError::new(
                ErrorKind::NotFound,
                "stat",
                &self.name,
                key,
                "no such object",
            )),
        }
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        Ok(self
            .lock()
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| ObjectMeta {
                key: k.clone(),
                size: v.len() as u64,
            })
            .collect())
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.lock().remove(key);
        Ok(())
    }
}

/// How a [`FaultStore`] misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Pass every call through.
    #[default]
    None,
    /// Fail every call with this kind.
    Fail(ErrorKind),
    /// Fail only writes (put, delete) with this kind.
    FailWrites(ErrorKind),
}

/// Wraps any store and injects failures; counts calls so tests can assert
/// how many requests an operation made.
#[derive(Debug, Clone)]
pub struct FaultStore {
    inner: DynStore,
    fault: Arc<Mutex<Fault>>,
    calls: Arc<AtomicU64>,
}

impl FaultStore {
    pub fn new(inner: DynStore) -> Self {
        FaultStore {
            inner,
            fault: Arc::default(),
            calls: Arc::default(),
        }
    }
    /// Changes the behaviour of this store and every clone of it.
    pub fn set_fault(&self, fault: Fault) {
        *self.fault.lock().unwrap_or_else(|e| e.into_inner()) = fault;
    }
    /// Number of calls made so far (all operations).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }
    fn check(&self, op: &'static str, key: &str, write: bool) -> Result<(), StoreError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let fault = *self.fault.lock().unwrap_or_else(|e| e.into_inner());
        match fault {
            Fault::Fail(kind) => Err(StoreError::new(
                kind,
                op,
                self.inner.name(),
                key,
                "injected fault",
            )),
            Fault::FailWrites(kind) if write => Err(StoreError::new(
                kind,
                op,
                self.inner.name(),
                key,
                "injected fault",
            )),
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl Store for FaultStore {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn atomic_if_not_exists(&self) -> bool {
        self.inner.atomic_if_not_exists()
    }
    async fn put(&self, key: &str, body: &dyn Body, opts: PutOptions) -> Result<(), StoreError> {
        self.check("put", key, true)?;
        self.inner.put(key, body, opts).await
    }
    async fn get(&self, key: &str) -> Result<ByteStream, StoreError> {
        self.check("get", key, false)?;
        self.inner.get(key).await
    }
    async fn stat(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        self.check("stat", key, false)?;
        self.inner.stat(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.check("list", prefix, false)?;
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.check("delete", key, true)?;
        self.inner.delete(key).await
    }
}
