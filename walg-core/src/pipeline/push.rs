//! The wal-push pipeline: validate a local WAL file, compress it on the fly,
//! store it under `wal_005/<name>.<ext>` with create-only-if-absent, and
//! settle a conflict by comparing contents.
//!
//! PostgreSQL's contract: exit 0 only when the file is durably stored;
//! re-archiving an identical copy succeeds (the `.ready` -> `.done` rename is
//! not durable, so a file can be offered twice); a different copy fails, and
//! `.history` files are never overwritten.
//!
//! What this module does not do: pick a storage (the caller passes one,
//! possibly a failover store), retry (the store's layers do), or upload
//! other `.ready` files ahead.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::crypto::Encryption;
use crate::pipeline::budget::MemoryBudget;
use crate::pipeline::codec::Compression;
use crate::pipeline::share::{Admission, Admitted, TransferShare};
use crate::pipeline::stream::{
    decode_error_to_store, decode_into, hash_file, FileBody, HashWriter,
};
use crate::store::error::{ErrorKind, StoreError};
use crate::store::{Body, PutOptions, Store};
use crate::wal::layout::wal_key;
use crate::wal::page::{HeaderError, LongPageHeader, LONG_HEADER_LEN};
use crate::wal::{is_valid_segment_size, NotWalName, WalName};

/// How to push.
#[derive(Debug, Clone)]
pub struct PushOptions {
    pub compression: Compression,
    /// Applied after compression; the object name does not change.
    pub encryption: Encryption,
    /// Refuse to replace a stored copy with different content
    /// (`WALG_PREVENT_WAL_OVERWRITE`, default true). `.history` files are
    /// never replaced regardless.
    pub prevent_overwrite: bool,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            compression: Compression::Lz4,
            encryption: Encryption::None,
            prevent_overwrite: true,
        }
    }
}

/// What a successful push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    /// The file was stored now, on `storage`.
    Stored {
        key: String,
        storage: String,
        source_bytes: u64,
        stored_bytes: u64,
    },
    /// An identical copy was already stored; nothing was written.
    AlreadyStored { key: String },
    /// A different copy was replaced (only with overwrite allowed).
    Overwritten {
        key: String,
        storage: String,
        source_bytes: u64,
        stored_bytes: u64,
    },
}

/// Why a push failed.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error(transparent)]
    NotWalName(#[from] NotWalName),
    #[error("read {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{} is not a complete WAL segment: {reason}; refusing to archive it", path.display())]
    InvalidSegment { path: PathBuf, reason: String },
    #[error("{name} is already stored as {key} on storage {store:?} with different content; refusing to overwrite it ({hint})")]
    Different {
        name: String,
        key: String,
        store: String,
        hint: &'static str,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl PushError {
    fn io(path: &Path, source: io::Error) -> Self {
        PushError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Checks that `path` names a WAL file, exists and, for a segment, is
/// complete: a valid segment size matching its page header, at the position
/// its name says. Returns the name and the file size.
pub fn validate_local(path: &Path) -> Result<(WalName, u64), PushError> {
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let name = WalName::parse(file_name)?;
    let meta = std::fs::metadata(path).map_err(|e| PushError::io(path, e))?;
    if !meta.is_file() {
        return Err(PushError::io(path, io::Error::other("not a regular file")));
    }
    let len = meta.len();
    if let WalName::Segment(segment) = name {
        let invalid = |reason: String| PushError::InvalidSegment {
            path: path.to_path_buf(),
            reason,
        };
        if !is_valid_segment_size(len) {
            return Err(invalid(format!(
                "size {len} is not a WAL segment size (a power of two, 1 MiB to 1 GiB)"
            )));
        }
        let mut head = [0u8; LONG_HEADER_LEN];
        let mut f = std::fs::File::open(path).map_err(|e| PushError::io(path, e))?;
        io::Read::read_exact(&mut f, &mut head).map_err(|e| PushError::io(path, e))?;
        let header = LongPageHeader::parse(&head).map_err(|e| invalid(e.to_string()))?;
        if u64::from(header.segment_size) != len {
            return Err(invalid(format!(
                "size {len} differs from the segment size {} in its header",
                header.segment_size
            )));
        }
        header
            .check_position(&segment)
            .map_err(|e: HeaderError| invalid(e.to_string()))?;
    }
    Ok((name, len))
}

/// Pushes one local WAL file to `store`.
pub async fn push_file(
    store: &dyn Store,
    path: &Path,
    opts: &PushOptions,
) -> Result<PushOutcome, PushError> {
    let (name, len) = validate_local(path)?;
    push_validated(store, path, &name, len, opts).await
}

/// Pushes one local WAL file beside others, within the process's
/// [`TransferShare`]: waits for room before starting and before holding
/// each chunk, unless it is the oldest file in flight (`order` is its place
/// in WAL order among them).
pub async fn push_file_shared(
    store: &dyn Store,
    path: &Path,
    opts: &PushOptions,
    share: &Arc<TransferShare>,
    order: u64,
) -> Result<PushOutcome, PushError> {
    let (name, len) = validate_local(path)?;
    let channels = if opts.encryption.is_none() { 1 } else { 2 };
    let admission = Arc::new(
        share
            .admit(order, MemoryBudget::pipeline_bytes(channels))
            .await,
    );
    push_inner(store, path, &name, len, opts, Some(admission)).await
}

/// Pushes a file already checked by [`validate_local`], which returned
/// `name` and `len`; callers that validate first do not pay for it twice.
pub async fn push_validated(
    store: &dyn Store,
    path: &Path,
    name: &WalName,
    len: u64,
    opts: &PushOptions,
) -> Result<PushOutcome, PushError> {
    push_inner(store, path, name, len, opts, None).await
}

async fn push_inner(
    store: &dyn Store,
    path: &Path,
    name: &WalName,
    len: u64,
    opts: &PushOptions,
    admission: Option<Arc<Admission>>,
) -> Result<PushOutcome, PushError> {
    let name = *name;
    let key = wal_key(&name, opts.compression);
    let file_body = FileBody::encrypted(path, opts.compression, opts.encryption.clone(), len);
    let admitted = admission.map(|a| Admitted::new(&file_body, a));
    let body: &dyn Body = match &admitted {
        Some(a) => a,
        None => &file_body,
    };
    // A racing writer of the same key may be between claiming it and
    // publishing its object: on file systems without hard links it claims
    // the name with an empty placeholder, and a FUSE file system may show
    // the name absent, or the file incomplete, while the placeholder is
    // replaced. So an object that differs is read again a few times before
    // it is called different, and one that vanished sends us back to the
    // create (about 0.3 s at most, only when something is in our way).
    let mut tries = 0u64;
    'create: loop {
        match store
            .put_located(
                &key,
                body,
                PutOptions {
                    if_not_exists: true,
                },
            )
            .await
        {
            Ok(storage) => {
                return Ok(PushOutcome::Stored {
                    key,
                    storage,
                    source_bytes: len,
                    stored_bytes: file_body.produced(),
                });
            }
            Err(e) if e.kind() == ErrorKind::Conflict => {}
            Err(e) => return Err(e.into()),
        }
        // Something is stored under the key: the same file archived before
        // (the archiver may offer a file twice), or a different one.
        loop {
            let found =
                stored_copy_matches(store, &key, opts.compression, &opts.encryption, path).await;
            let vanished =
                matches!(&found, Err(PushError::Store(e)) if e.kind() == ErrorKind::NotFound);
            match found {
                Ok(true) => {
                    tracing::info!(file = %name, key, storage = store.name(), "identical copy already stored; nothing to do");
                    return Ok(PushOutcome::AlreadyStored { key });
                }
                Ok(false) if tries >= 5 => break 'create,
                Err(e) if !vanished || tries >= 5 => return Err(e),
                _ => {}
            }
            tries += 1;
            tracing::debug!(
                key,
                storage = store.name(),
                vanished,
                "the object in our way may still be being published; looking again"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20 * tries)).await;
            if vanished {
                continue 'create;
            }
        }
    }
    if name.is_history() || opts.prevent_overwrite {
        let hint = if name.is_history() {
            "timeline history files are never overwritten; another cluster may be archiving to this prefix"
        } else {
            "another cluster may be archiving to this prefix; set WALG_PREVENT_WAL_OVERWRITE=false to allow replacing segments"
        };
        return Err(PushError::Different {
            name: name.to_string(),
            key,
            store: store.name().to_string(),
            hint,
        });
    }
    tracing::warn!(file = %name, key, storage = store.name(), "replacing a stored copy with different content (WALG_PREVENT_WAL_OVERWRITE=false)");
    let storage = store
        .put_located(
            &key,
            body,
            PutOptions {
                if_not_exists: false,
            },
        )
        .await?;
    Ok(PushOutcome::Overwritten {
        key,
        storage,
        source_bytes: len,
        stored_bytes: file_body.produced(),
    })
}

/// Whether the object at `key` decrypts and decompresses to exactly the
/// bytes of `path`.
pub async fn stored_copy_matches(
    store: &dyn Store,
    key: &str,
    compression: Compression,
    encryption: &Encryption,
    path: &Path,
) -> Result<bool, PushError> {
    let stream = store.get(key).await?;
    let stored = match decode_into(stream, compression, encryption, HashWriter::default()).await {
        Ok(h) => h.digest(),
        Err(e) => {
            let e = decode_error_to_store(e, store.name(), key);
            if e.kind() == ErrorKind::Corrupt {
                // An undecodable stored copy is certainly not our file.
                tracing::warn!(key, storage = store.name(), error = %e, "stored copy does not decode");
                return Ok(false);
            }
            return Err(e.into());
        }
    };
    let local = hash_file(path).await.map_err(|e| PushError::io(path, e))?;
    Ok(stored == local)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;
    use crate::wal::page::synthetic_segment;
    use crate::wal::Segment;

    fn write_segment(dir: &Path, seg: u32, seed: u64) -> PathBuf {
        let s = Segment {
            timeline: 1,
            log: 0,
            seg,
        };
        let path = dir.join(s.to_string());
        std::fs::write(&path, synthetic_segment(&s, 1 << 20, 99, seed)).expect("write segment");
        path
    }

    /// A store whose first creates meet a racing writer's claim that is gone
    /// by the time we read it.
    #[derive(Debug)]
    struct Racing {
        inner: MemoryStore,
        conflicts: std::sync::atomic::AtomicU32,
    }

    #[async_trait::async_trait]
    impl Store for Racing {
        fn name(&self) -> &str {
            self.inner.name()
        }
        async fn put(
            &self,
            key: &str,
            body: &dyn crate::store::Body,
            opts: PutOptions,
        ) -> Result<(), StoreError> {
            use std::sync::atomic::Ordering;
            if opts.if_not_exists && self.conflicts.load(Ordering::SeqCst) > 0 {
                self.conflicts.fetch_sub(1, Ordering::SeqCst);
                return Err(StoreError::new(
                    ErrorKind::Conflict,
                    "put",
                    "racing",
                    key,
                    "claimed",
                ));
            }
            self.inner.put(key, body, opts).await
        }
        async fn get(&self, key: &str) -> Result<crate::store::ByteStream, StoreError> {
            self.inner.get(key).await
        }
        async fn stat(&self, key: &str) -> Result<crate::store::ObjectMeta, StoreError> {
            self.inner.stat(key).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<crate::store::ObjectMeta>, StoreError> {
            self.inner.list(prefix).await
        }
        async fn delete(&self, key: &str) -> Result<(), StoreError> {
            self.inner.delete(key).await
        }
    }

    #[tokio::test]
    async fn an_object_that_vanishes_after_a_conflict_is_created_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write_segment(dir.path(), 4, 1);
        let opts = PushOptions::default();
        let store = Racing {
            inner: MemoryStore::new("mem"),
            conflicts: 2.into(),
        };
        let out = push_file(&store, &path, &opts)
            .await
            .expect("pushed after the race");
        assert!(matches!(out, PushOutcome::Stored { .. }), "{out:?}");
        assert_eq!(store.inner.keys(), ["wal_005/000000010000000000000004.lz4"]);
        // A claim that never turns into an object is an error, not a loop.
        let stuck = Racing {
            inner: MemoryStore::new("mem"),
            conflicts: 100.into(),
        };
        let err = push_file(&stuck, &path, &opts)
            .await
            .expect_err("never created");
        assert!(
            err.to_string().contains("not found") || err.to_string().contains("NotFound"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn push_is_idempotent_and_refuses_different_copies() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = MemoryStore::new("mem");
        let path = write_segment(dir.path(), 3, 1);
        let opts = PushOptions::default();
        let first = push_file(&store, &path, &opts).await.expect("first push");
        assert!(matches!(first, PushOutcome::Stored { .. }), "{first:?}");
        assert_eq!(store.keys(), ["wal_005/000000010000000000000003.lz4"]);
        let again = push_file(&store, &path, &opts)
            .await
            .expect("identical re-push");
        assert!(matches!(again, PushOutcome::AlreadyStored { .. }));
        let before = store.object("wal_005/000000010000000000000003.lz4");
        write_segment(dir.path(), 3, 2);
        let err = push_file(&store, &path, &opts)
            .await
            .expect_err("different copy");
        assert!(matches!(err, PushError::Different { .. }), "{err}");
        assert_eq!(
            store.object("wal_005/000000010000000000000003.lz4"),
            before,
            "stored copy untouched"
        );
        let allow = PushOptions {
            prevent_overwrite: false,
            ..opts
        };
        let replaced = push_file(&store, &path, &allow)
            .await
            .expect("overwrite allowed");
        assert!(matches!(replaced, PushOutcome::Overwritten { .. }));
    }

    #[tokio::test]
    async fn history_files_are_never_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = MemoryStore::new("mem");
        let path = dir.path().join("00000002.history");
        std::fs::write(&path, "1\t0/3000000\tno recovery target specified\n").expect("write");
        let opts = PushOptions {
            prevent_overwrite: false,
            ..PushOptions::default()
        };
        push_file(&store, &path, &opts).await.expect("first push");
        std::fs::write(&path, "1\t0/4000000\tother\n").expect("write");
        let err = push_file(&store, &path, &opts)
            .await
            .expect_err("history is immutable");
        assert!(err.to_string().contains("never overwritten"), "{err}");
    }

    #[tokio::test]
    async fn rejects_bad_input_without_storing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = MemoryStore::new("mem");
        let check = |path: PathBuf, needle: &'static str| {
            let store = store.clone();
            async move {
                let err = push_file(&store, &path, &PushOptions::default())
                    .await
                    .expect_err("must fail");
                assert!(
                    err.to_string().contains(needle),
                    "{err} should mention {needle}"
                );
            }
        };
        check(dir.path().join("000000010000000000000009"), "No such file").await;
        std::fs::write(dir.path().join("notwal"), b"x").expect("write");
        check(dir.path().join("notwal"), "not a WAL file name").await;
        let path = write_segment(dir.path(), 4, 1);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open");
        f.set_len(1000).expect("truncate");
        check(path, "not a complete WAL segment").await;
        let wrong_place = write_segment(dir.path(), 5, 1);
        std::fs::rename(&wrong_place, dir.path().join("000000010000000000000006")).expect("rename");
        check(
            dir.path().join("000000010000000000000006"),
            "file name says",
        )
        .await;
        assert!(
            store.keys().is_empty(),
            "nothing stored: {:?}",
            store.keys()
        );
    }

    #[tokio::test]
    async fn every_compression_round_trips_through_the_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write_segment(dir.path(), 7, 5);
        for c in Compression::ALL {
            let store = MemoryStore::new("mem");
            push_file(
                &store,
                &path,
                &PushOptions {
                    compression: c,
                    prevent_overwrite: true,
                    ..PushOptions::default()
                },
            )
            .await
            .expect("push");
            let key = wal_key(
                &WalName::parse("000000010000000000000007").expect("name"),
                c,
            );
            let stored = store.object(&key).expect("stored");
            let original = std::fs::read(&path).expect("read");
            assert_eq!(
                crate::pipeline::codec::decompress(c, &stored).expect("decompress"),
                original,
                "{c}"
            );
        }
    }

    /// wal-push takes the segments of every version 13 to 19: each magic
    /// with the flags its version writes (19's 0x4 is overwrite-contrecord,
    /// 13-18's is bkp-removable), and a magic of a version walg does not
    /// know yet; a flag bit 19 does not have is refused.
    #[test]
    fn validate_local_takes_every_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let with = |magic: u16, info: u16| {
            let path = write_segment(dir.path(), 7, 3);
            let mut b = std::fs::read(&path).expect("read");
            b[0..2].copy_from_slice(&magic.to_le_bytes());
            b[2..4].copy_from_slice(&info.to_le_bytes());
            std::fs::write(&path, b).expect("write");
            validate_local(&path)
                .map(|(name, len)| (name.to_string(), len))
                .map_err(|e| e.to_string())
        };
        let ok: Result<(String, u64), String> =
            Ok(("000000010000000000000007".to_string(), 1u64 << 20));
        for magic in [0xD106, 0xD10D, 0xD110, 0xD113, 0xD116, 0xD118] {
            assert_eq!(with(magic, 0x0006), ok, "{magic:#x}");
            assert_eq!(with(magic, 0x000B), ok, "{magic:#x}");
        }
        for magic in [0xD120u16, 0xD121] {
            assert_eq!(with(magic, 0x0007), ok, "{magic:#x}");
            assert!(with(magic, 0x000A)
                .unwrap_err()
                .contains("invalid for PostgreSQL 19"));
        }
        assert_eq!(with(0xD130, 0x0006), ok, "a future version's magic");
    }
}
