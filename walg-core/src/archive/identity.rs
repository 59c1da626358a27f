//! The archive identity: which PostgreSQL cluster's WAL an archive holds.
//!
//! Every WAL segment carries its cluster's system identifier in the long
//! page header of its first page. An archive remembers the identifier of the
//! cluster whose WAL it holds in one small object, [`IDENTITY_KEY`], at the
//! root of the storage prefix, next to `wal_005/` (WAL-G lists only
//! `wal_005/` and `basebackups_005/`, so it never sees it). The rule:
//!
//! - A push of a segment to a storage without an identity claims it for the
//!   segment's cluster (create-if-absent; of two concurrent claims one wins
//!   and the other compares).
//! - A push of a segment whose identifier differs from the storage's is
//!   refused ([`ErrorKind::Refused`]): nothing is stored, the failover layer
//!   does not try another storage, and the message names both identifiers
//!   in decimal (as `pg_controldata` prints them) and the storage.
//! - Every storage keeps its own identity; failover storages are checked
//!   when a write reaches them.
//! - A deliberate new cluster in the same prefix adopts the archive with
//!   [`adopt`] (`walg st identity --adopt ID --confirm`); the old identifier
//!   is kept in [`ArchiveIdentity::previous`], so fetching its WAL later
//!   raises no warning.
//!
//! A verified identity is remembered per storage in an [`IdentityCache`]
//! file next to the failover status cache, so in the steady state a push
//! makes no extra request: the storage is asked again only when the cached
//! verification is older than the cache lifetime.
//!
//! What this module does not do: read the environment or choose where the
//! cache lives (the CLI does), or check `.history` files, which carry no
//! system identifier.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::store::error::{ErrorKind, StoreError};
use crate::store::{read_all, Body, ByteStream, DynStore, ObjectMeta, PutOptions, Store};
use crate::wal::layout::parse_wal_key;
use crate::wal::page::{LongPageHeader, LONG_HEADER_LEN};

/// Key of the identity object, relative to the storage prefix.
pub const IDENTITY_KEY: &str = "walg_archive_identity.json";
/// The `format` field of the identity object.
pub const FORMAT: &str = "walg-archive-identity";
/// The `format` field of the local cache file.
pub const CACHE_FORMAT: &str = "walg-archive-identity-cache";
/// File name of the cache, next to the status cache.
pub const CACHE_FILE_NAME: &str = "archive_identity.json";
const VERSION: u32 = 1;
const MAX_LEN: usize = 1 << 16;

/// The identity object stored in an archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveIdentity {
    pub format: String,
    pub version: u32,
    /// The cluster's system identifier, in decimal (JSON numbers lose
    /// precision above 2^53 in many readers).
    pub system_identifier: String,
    /// Unix seconds when this identity was written.
    pub since_unix: u64,
    /// The host that wrote it.
    #[serde(default)]
    pub host: String,
    /// Identifiers the archive held before a deliberate adoption, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous: Vec<String>,
}

impl ArchiveIdentity {
    /// A new identity for `system_id`, written by `host`.
    pub fn new(system_id: u64, host: &str) -> Self {
        ArchiveIdentity {
            format: FORMAT.to_string(),
            version: VERSION,
            system_identifier: system_id.to_string(),
            since_unix: unix_secs(SystemTime::now()),
            host: host.to_string(),
            previous: Vec::new(),
        }
    }

    /// Parses the stored object, saying why it is not a valid identity.
    pub fn parse(raw: &[u8]) -> Result<Self, String> {
        if raw.len() > MAX_LEN {
            return Err(format!("it is larger than {MAX_LEN} bytes"));
        }
        let id: ArchiveIdentity =
            serde_json::from_slice(raw).map_err(|e| format!("it is not valid JSON ({e})"))?;
        if id.format != FORMAT {
            return Err(format!("its format is {:?}, not {FORMAT:?}", id.format));
        }
        if id.version != VERSION {
            return Err(format!(
                "it has version {}, this walg reads version {VERSION}",
                id.version
            ));
        }
        id.system_id()?;
        Ok(id)
    }

    /// The system identifier as a number.
    pub fn system_id(&self) -> Result<u64, String> {
        self.system_identifier.parse().map_err(|_| {
            format!(
                "system_identifier {:?} is not a decimal number",
                self.system_identifier
            )
        })
    }

    /// Whether `system_id` is this identity's or one it replaced.
    pub fn knows(&self, system_id: u64) -> bool {
        let s = system_id.to_string();
        self.system_identifier == s || self.previous.contains(&s)
    }

    /// The bytes to store.
    pub fn render(&self) -> Bytes {
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        Bytes::from(out)
    }
}

/// The system identifier in the page header of the WAL segment at `path`.
pub fn segment_system_id(path: &Path) -> std::io::Result<u64> {
    let mut head = [0u8; LONG_HEADER_LEN];
    fs::File::open(path)?.read_exact(&mut head)?;
    LongPageHeader::parse(&head)
        .map(|h| h.system_id)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))
}

/// The refusal of a segment from another cluster.
pub fn foreign_message(segment_id: u64, archive_id: u64, location: &str) -> String {
    format!(
        "the segment belongs to the cluster with system identifier {segment_id} (from its page header), \
         but {location} holds WAL of the cluster with system identifier {archive_id}; \
         refusing to mix two clusters' WAL in one archive. Point this cluster at another prefix, \
         or, if it is a deliberate new cluster for this archive, run \
         `walg st identity --adopt {segment_id} --confirm`"
    )
}

fn refused(store: &str, key: &str, message: String) -> StoreError {
    StoreError::new(ErrorKind::Refused, "put", store, key, message)
}

/// Reads the identity of `store`: `None` when it has none.
pub async fn read_identity(store: &dyn Store) -> Result<Option<ArchiveIdentity>, StoreError> {
    let stream = match store.get(IDENTITY_KEY).await {
        Ok(s) => s,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e),
    };
    let raw = read_all(stream).await?;
    ArchiveIdentity::parse(&raw).map(Some).map_err(|why| {
        StoreError::new(
            ErrorKind::Corrupt,
            "get",
            store.name(),
            IDENTITY_KEY,
            format!(
                "the archive identity is unreadable: {why}; inspect it, then remove it or run \
                 `walg st identity --adopt SYSTEM_ID --confirm` to rewrite it"
            ),
        )
    })
}

/// What [`adopt`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Adoption {
    /// The identifier the storage held before, if any.
    pub before: Option<String>,
    /// What it holds now (or would, in a dry run).
    pub after: ArchiveIdentity,
    /// Whether anything had to change.
    pub changed: bool,
}

/// Makes `store` the archive of the cluster `system_id`, keeping the old
/// identifier in `previous`. With `write: false` only says what it would do.
pub async fn adopt(
    store: &dyn Store,
    system_id: u64,
    host: &str,
    write: bool,
) -> Result<Adoption, StoreError> {
    let current = read_identity(store).await?;
    let before = current.as_ref().map(|c| c.system_identifier.clone());
    let mut after = ArchiveIdentity::new(system_id, host);
    if let Some(c) = &current {
        if c.system_identifier == after.system_identifier {
            return Ok(Adoption {
                before,
                after: c.clone(),
                changed: false,
            });
        }
        after.previous = c.previous.clone();
        after.previous.retain(|p| p != &after.system_identifier);
        after.previous.push(c.system_identifier.clone());
    }
    if write {
        store
            .put(IDENTITY_KEY, &after.render(), PutOptions::default())
            .await?;
    }
    Ok(Adoption {
        before,
        after,
        changed: true,
    })
}

/// Checks `store`'s identity against `system_id`, claiming a storage that
/// has none. `Ok` when the archive is this cluster's; an error of kind
/// [`ErrorKind::Refused`] when it is another's; a storage failure as is.
pub async fn verify_or_claim(
    store: &dyn Store,
    system_id: u64,
    host: &str,
    location: &str,
    key: &str,
) -> Result<(), StoreError> {
    for _ in 0..2 {
        match read_identity(store).await? {
            Some(id) => {
                let archive = id.system_id().unwrap_or(0);
                if archive == system_id {
                    return Ok(());
                }
                return Err(refused(
                    store.name(),
                    key,
                    foreign_message(system_id, archive, location),
                ));
            }
            None => {
                let mine = ArchiveIdentity::new(system_id, host);
                match store
                    .put(
                        IDENTITY_KEY,
                        &mine.render(),
                        PutOptions {
                            if_not_exists: true,
                        },
                    )
                    .await
                {
                    Ok(()) => {
                        tracing::info!(
                            storage = store.name(),
                            "{location} has no archive identity yet; claimed it for system identifier {system_id}"
                        );
                        return Ok(());
                    }
                    // Another process claimed it first: read what it wrote.
                    Err(e) if e.kind == ErrorKind::Conflict => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Err(StoreError::new(
        ErrorKind::Unavailable,
        "get",
        store.name(),
        IDENTITY_KEY,
        "the archive identity changed while it was being claimed; try again",
    ))
}

// ---- the local cache -------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CacheEntry {
    system_identifier: String,
    verified_at_unix: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct CacheFile {
    format: String,
    version: u32,
    #[serde(default)]
    storages: BTreeMap<String, CacheEntry>,
}

/// Verified identities by storage fingerprint, in a small file shared by
/// the per-segment processes. A missing, torn or foreign file is simply
/// empty; a write that fails is skipped (the next process asks the storage
/// once more). Writes go through a temp file and a rename, so readers never
/// see a torn file; two writers racing can lose one entry, which costs one
/// extra verification later, never a wrong answer.
#[derive(Debug, Clone)]
pub struct IdentityCache {
    path: Option<PathBuf>,
    lifetime: Duration,
}

impl IdentityCache {
    /// A cache in `path` (`None`: nothing is remembered) whose entries are
    /// trusted for `lifetime`.
    pub fn new(path: Option<PathBuf>, lifetime: Duration) -> Self {
        IdentityCache { path, lifetime }
    }

    /// The file, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn read(&self) -> BTreeMap<String, CacheEntry> {
        let Some(path) = &self.path else {
            return BTreeMap::new();
        };
        let Ok(f) = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
        else {
            return BTreeMap::new();
        };
        let mut raw = Vec::new();
        if f.take(MAX_LEN as u64).read_to_end(&mut raw).is_err() {
            return BTreeMap::new();
        }
        match serde_json::from_slice::<CacheFile>(&raw) {
            Ok(c) if c.format == CACHE_FORMAT && c.version == VERSION => c.storages,
            _ => BTreeMap::new(),
        }
    }

    /// The identifier cached for `storage` within the lifetime.
    pub fn lookup(&self, storage: &str) -> Option<u64> {
        let e = self.read().remove(storage)?;
        let age = unix_secs(SystemTime::now()).abs_diff(e.verified_at_unix);
        (age < self.lifetime.as_secs()).then_some(())?;
        e.system_identifier.parse().ok()
    }

    /// Remembers that `storage` holds the archive of `system_id`, verified now.
    pub fn remember(&self, storage: &str, system_id: u64) {
        let Some(path) = &self.path else { return };
        let mut entries = self.read();
        entries.insert(
            storage.to_string(),
            CacheEntry {
                system_identifier: system_id.to_string(),
                verified_at_unix: unix_secs(SystemTime::now()),
            },
        );
        if let Err(e) = write_atomically(path, &entries) {
            tracing::debug!("archive identity cache {}: {e}", path.display());
        }
    }

    /// Forgets `storage` (after an adoption changed its identity).
    pub fn forget(&self, storage: &str) {
        let Some(path) = &self.path else { return };
        let mut entries = self.read();
        if entries.remove(storage).is_some() {
            if let Err(e) = write_atomically(path, &entries) {
                tracing::debug!("archive identity cache {}: {e}", path.display());
            }
        }
    }
}

fn write_atomically(path: &Path, entries: &BTreeMap<String, CacheEntry>) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
    }
    let file = CacheFile {
        format: CACHE_FORMAT.to_string(),
        version: VERSION,
        storages: entries.clone(),
    };
    let mut bytes = serde_json::to_vec_pretty(&file).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let tmp = dir.join(format!(".{name}.{}.{nanos}.tmp", std::process::id()));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

// ---- the guard -------------------------------------------------------------

/// A [`Store`] layer that checks the archive identity before the first WAL
/// write of the process, once per storage: wrap each failover member (or
/// the one storage) so every storage keeps its own identity. Other keys
/// (probes, the identity itself) pass through unchecked.
#[derive(Debug)]
pub struct IdentityGuard {
    inner: DynStore,
    system_id: u64,
    /// Credential-free identity of the storage: the cache key and the
    /// location named in messages.
    location: String,
    host: String,
    cache: IdentityCache,
    verified: tokio::sync::Mutex<bool>,
}

impl IdentityGuard {
    /// Guards `inner` for WAL of the cluster `system_id`.
    pub fn wrap(
        inner: DynStore,
        system_id: u64,
        location: impl Into<String>,
        host: impl Into<String>,
        cache: IdentityCache,
    ) -> DynStore {
        Arc::new(IdentityGuard {
            inner,
            system_id,
            location: location.into(),
            host: host.into(),
            cache,
            verified: tokio::sync::Mutex::new(false),
        })
    }

    async fn ensure(&self, key: &str) -> Result<(), StoreError> {
        let mut verified = self.verified.lock().await;
        if *verified {
            return Ok(());
        }
        if self.cache.lookup(&self.location) == Some(self.system_id) {
            *verified = true;
            return Ok(());
        }
        verify_or_claim(
            self.inner.as_ref(),
            self.system_id,
            &self.host,
            &self.location,
            key,
        )
        .await?;
        *verified = true;
        let cache = self.cache.clone();
        let (location, id) = (self.location.clone(), self.system_id);
        // Small, but file I/O with an fsync: off the async thread.
        let _ = tokio::task::spawn_blocking(move || cache.remember(&location, id)).await;
        Ok(())
    }
}

/// Whether a write of `key` is WAL that must match the archive identity.
fn is_wal(key: &str) -> bool {
    parse_wal_key(key).is_some()
}

#[async_trait]
impl Store for IdentityGuard {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn atomic_if_not_exists(&self) -> bool {
        self.inner.atomic_if_not_exists()
    }
    async fn put(&self, key: &str, body: &dyn Body, opts: PutOptions) -> Result<(), StoreError> {
        if is_wal(key) {
            self.ensure(key).await?;
        }
        self.inner.put(key, body, opts).await
    }
    async fn put_located(
        &self,
        key: &str,
        body: &dyn Body,
        opts: PutOptions,
    ) -> Result<String, StoreError> {
        if is_wal(key) {
            self.ensure(key).await?;
        }
        self.inner.put_located(key, body, opts).await
    }
    async fn get(&self, key: &str) -> Result<ByteStream, StoreError> {
        self.inner.get(key).await
    }
    async fn stat(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        self.inner.stat(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.inner.delete(key).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    const SEG: &str = "wal_005/000000010000000000000003.lz4";

    fn guard(store: &MemoryStore, id: u64, cache: &IdentityCache) -> DynStore {
        IdentityGuard::wrap(
            Arc::new(store.clone()),
            id,
            "mem://archive",
            "host-a",
            cache.clone(),
        )
    }

    async fn put(s: &DynStore, key: &str) -> Result<(), StoreError> {
        s.put(key, &Bytes::from_static(b"x"), PutOptions::default())
            .await
    }

    #[tokio::test]
    async fn first_push_claims_then_foreign_is_refused_storing_nothing() {
        let store = MemoryStore::new("mem");
        let none = IdentityCache::new(None, Duration::from_secs(60));
        put(&guard(&store, 7, &none), SEG).await.expect("claim");
        let id =
            ArchiveIdentity::parse(&store.object(IDENTITY_KEY).expect("identity")).expect("valid");
        assert_eq!(
            (id.system_identifier.as_str(), id.host.as_str()),
            ("7", "host-a")
        );

        let other = "wal_005/000000010000001000000001.lz4";
        let err = put(&guard(&store, 12345678901234567890, &none), other)
            .await
            .expect_err("foreign");
        assert_eq!(err.kind, ErrorKind::Refused);
        for needle in ["12345678901234567890", " 7;", "mem://archive", "--adopt"] {
            assert!(err.message.contains(needle), "{needle}: {err}");
        }
        assert!(store.object(other).is_none(), "nothing stored");
        // Non-WAL keys are not checked.
        put(&guard(&store, 9, &none), "walg_failover_check/x")
            .await
            .expect("probe passes");
    }

    #[tokio::test]
    async fn the_cache_spares_the_request_and_expires() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = IdentityCache::new(
            Some(dir.path().join("state/archive_identity.json")),
            Duration::from_secs(600),
        );
        let store = MemoryStore::new("mem");
        put(&guard(&store, 7, &cache), SEG).await.expect("claim");
        assert_eq!(cache.lookup("mem://archive"), Some(7));
        // With the identity gone from the storage, a cached verification is
        // trusted (no request), an expired one is not.
        store
            .delete(IDENTITY_KEY)
            .await
            .expect("remove the identity");
        store
            .put(
                IDENTITY_KEY,
                &ArchiveIdentity::new(8, "h").render(),
                PutOptions::default(),
            )
            .await
            .expect("foreign identity");
        put(&guard(&store, 7, &cache), SEG)
            .await
            .expect("cached verification");
        let expired = IdentityCache::new(cache.path().map(Path::to_path_buf), Duration::ZERO);
        assert_eq!(expired.lookup("mem://archive"), None);
        let err = put(&guard(&store, 7, &expired), SEG)
            .await
            .expect_err("re-verified");
        assert_eq!(err.kind, ErrorKind::Refused);
    }

    #[tokio::test]
    async fn adoption_keeps_the_previous_identifier() {
        let store = MemoryStore::new("mem");
        let none = IdentityCache::new(None, Duration::from_secs(60));
        put(&guard(&store, 7, &none), SEG).await.expect("claim");
        let dry = adopt(&store, 8, "h", false).await.expect("dry run");
        assert!(dry.changed && dry.before.as_deref() == Some("7"));
        assert_eq!(
            read_identity(&store)
                .await
                .expect("read")
                .map(|i| i.system_identifier),
            Some("7".to_string())
        );
        adopt(&store, 8, "h", true).await.expect("adopt");
        let id = read_identity(&store).await.expect("read").expect("some");
        assert!(id.knows(8) && id.knows(7) && !id.knows(9), "{id:?}");
        put(&guard(&store, 8, &none), SEG)
            .await
            .expect("new cluster");
        assert!(!adopt(&store, 8, "h", true).await.expect("again").changed);
    }

    #[test]
    fn rejects_bad_identity_objects() {
        let check = |raw: &str, needle: &str| {
            let err = ArchiveIdentity::parse(raw.as_bytes()).expect_err(raw);
            assert!(err.contains(needle), "{raw}: {err}");
        };
        check("", "not valid JSON");
        check(
            r#"{"format":"x","version":1,"system_identifier":"1","since_unix":0}"#,
            "format",
        );
        check(
            r#"{"format":"walg-archive-identity","version":2,"system_identifier":"1","since_unix":0}"#,
            "version 2",
        );
        check(
            r#"{"format":"walg-archive-identity","version":1,"system_identifier":"x1","since_unix":0}"#,
            "not a decimal",
        );
    }
}
