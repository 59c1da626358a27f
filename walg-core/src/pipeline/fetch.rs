//! The wal-fetch pipeline: find a WAL file under any of its possible keys,
//! decompress it into a temporary file beside the destination, validate it,
//! and rename it into place, so PostgreSQL never sees a partial or wrong file.
//!
//! PostgreSQL's contract: non-zero means "not available"; a successful exit
//! with a file of the wrong size is FATAL to recovery, hence the validation.
//! "Not found" is reported only when every candidate key answered not found;
//! a storage that failed is an error, never "not found".
//!
//! What this module does not do: prefetch the next segments, or choose among
//! storages (a failover store does that behind the `Store` trait).

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::crypto::Encryption;
use crate::pipeline::budget::MemoryBudget;
use crate::pipeline::codec::Compression;
use crate::pipeline::stream::{decode_into, DecodeError};
use crate::store::error::StoreError;
use crate::store::Store;
use crate::wal::layout::fetch_candidates;
use crate::wal::page::{LongPageHeader, LONG_HEADER_LEN};
use crate::wal::{is_valid_segment_size, WalName};

/// How to fetch.
#[derive(Debug, Clone, Default)]
pub struct FetchOptions {
    /// The configured compression, probed first.
    pub compression: Compression,
    /// Every object is decrypted with it before decompression (WAL-G does
    /// not mark encrypted objects, so there is nothing to detect).
    pub encryption: Encryption,
}

/// What a successful fetch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub key: String,
    pub bytes: u64,
}

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("refusing to fetch {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    #[error("{name} not found in storage {store:?} (looked for {tried})")]
    NotFound {
        name: String,
        store: String,
        tried: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{key} on storage {store:?} is corrupt: {reason}; the destination was not written")]
    Corrupt {
        key: String,
        store: String,
        reason: String,
    },
    #[error("write {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

impl FetchError {
    /// "Not available" in PostgreSQL's sense: exit 74 in WAL-G's contract.
    pub fn is_not_found(&self) -> bool {
        matches!(self, FetchError::NotFound { .. })
    }
}

/// Checks a requested name: a bare WAL file name, never a path.
pub fn validate_name(name: &str) -> Result<WalName, FetchError> {
    let invalid = |reason: &str| FetchError::InvalidName {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    if name.is_empty() {
        return Err(invalid("the name is empty"));
    }
    if name.contains('/') || name.contains('\\') || name.contains("..") || name.contains('\0') {
        return Err(invalid(
            "a WAL file name cannot contain '/', '\\', '..' or NUL",
        ));
    }
    WalName::parse(name).map_err(|e| invalid(&e.to_string()))
}

/// Counts bytes and keeps the first page header while writing to a file.
struct CheckingWriter {
    out: BufWriter<File>,
    head: Vec<u8>,
    len: u64,
}

impl Write for CheckingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        if self.head.len() < LONG_HEADER_LEN {
            let take = (LONG_HEADER_LEN - self.head.len()).min(n);
            self.head.extend_from_slice(&buf[..take]);
        }
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Checks a restored segment: a segment size, matching its header, at the
/// position the name says.
fn validate_segment(name: &WalName, head: &[u8], len: u64) -> Result<(), String> {
    let WalName::Segment(segment) = name else {
        return Ok(());
    };
    if !is_valid_segment_size(len) {
        return Err(format!("decompressed size {len} is not a WAL segment size"));
    }
    let header = LongPageHeader::parse(head).map_err(|e| e.to_string())?;
    if u64::from(header.segment_size) != len {
        return Err(format!(
            "decompressed size {len} differs from the segment size {} in its header",
            header.segment_size
        ));
    }
    header.check_position(segment).map_err(|e| e.to_string())
}

/// Removes the temporary file unless disarmed.
struct TempGuard(Option<PathBuf>);

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Fetches `name` from `store` into `dest`.
pub async fn fetch_file(
    store: &dyn Store,
    name: &str,
    dest: &Path,
    opts: &FetchOptions,
) -> Result<Fetched, FetchError> {
    let wal = validate_name(name)?;
    let candidates = fetch_candidates(&wal, opts.compression);
    let mut failure: Option<StoreError> = None;
    for (key, compression) in &candidates {
        let stream = match store.get(key).await {
            Ok(s) => s,
            Err(e) if e.is_not_found() => continue,
            Err(e) => {
                // Keep looking: the file may be stored under another extension.
                // But this storage failed, so the final answer is never "not found".
                failure.get_or_insert(e);
                continue;
            }
        };
        return restore(
            store,
            &wal,
            key,
            *compression,
            &opts.encryption,
            stream,
            dest,
        )
        .await;
    }
    match failure {
        Some(e) => Err(e.into()),
        None => Err(FetchError::NotFound {
            name: wal.to_string(),
            store: store.name().to_string(),
            tried: candidates
                .iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

async fn restore(
    store: &dyn Store,
    wal: &WalName,
    key: &str,
    compression: Compression,
    encryption: &Encryption,
    stream: crate::store::ByteStream,
    dest: &Path,
) -> Result<Fetched, FetchError> {
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = dest.file_name().and_then(|n| n.to_str()).unwrap_or("wal");
    let tmp = dir.join(format!(".{file_name}.walg-{}.tmp", std::process::id()));
    let io_err = |source| FetchError::Io {
        path: tmp.clone(),
        source,
    };
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io_err)?;
    let mut guard = TempGuard(Some(tmp.clone()));
    let writer = CheckingWriter {
        out: BufWriter::with_capacity(MemoryBudget::DEFAULT.chunk(), file),
        head: Vec::new(),
        len: 0,
    };
    let mut writer = match decode_into(stream, compression, encryption, writer).await {
        Ok(w) => w,
        Err(DecodeError::Store(e)) => return Err(e.into()),
        Err(DecodeError::Corrupt(e)) => {
            let mut reason = e.to_string();
            if encryption.is_none() {
                reason.push_str(crate::crypto::ENCRYPTED_HINT);
            }
            return Err(FetchError::Corrupt {
                key: key.to_string(),
                store: store.name().to_string(),
                reason,
            });
        }
        Err(DecodeError::Sink(e)) => return Err(io_err(e)),
    };
    writer.flush().map_err(io_err)?;
    validate_segment(wal, &writer.head, writer.len).map_err(|mut reason| {
        // Random bytes can pass for a short brotli stream: an encrypted
        // object read without a key may decode and only fail here.
        if encryption.is_none() {
            reason.push_str(crate::crypto::ENCRYPTED_HINT);
        }
        FetchError::Corrupt {
            key: key.to_string(),
            store: store.name().to_string(),
            reason,
        }
    })?;
    drop(writer);
    std::fs::rename(&tmp, dest).map_err(|source| FetchError::Io {
        path: dest.to_path_buf(),
        source,
    })?;
    guard.0 = None;
    let bytes = std::fs::metadata(dest).map(|m| m.len()).unwrap_or(0);
    Ok(Fetched {
        key: key.to_string(),
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::codec::compress;
    use crate::pipeline::push::{push_file, PushOptions};
    use crate::store::error::ErrorKind;
    use crate::store::memory::{Fault, FaultStore, MemoryStore};
    use crate::store::{PutOptions, Store};
    use crate::wal::page::synthetic_segment;
    use crate::wal::Segment;
    use bytes::Bytes;
    use std::sync::Arc;

    fn segment(seg: u32) -> (String, Vec<u8>) {
        let s = Segment {
            timeline: 1,
            log: 0,
            seg,
        };
        (
            s.to_string(),
            synthetic_segment(&s, 1 << 20, 5, u64::from(seg)),
        )
    }

    #[tokio::test]
    async fn fetches_what_push_stored_under_any_extension() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = MemoryStore::new("mem");
        let (name, data) = segment(3);
        let src = dir.path().join(&name);
        std::fs::write(&src, &data).expect("write");
        push_file(
            &store,
            &src,
            &PushOptions {
                compression: Compression::Zstd,
                ..PushOptions::default()
            },
        )
        .await
        .expect("push");
        let dest = dir.path().join("RECOVERYXLOG");
        // Configured lz4, stored zstd: found by the second probe.
        let got = fetch_file(&store, &name, &dest, &FetchOptions::default())
            .await
            .expect("fetch");
        assert_eq!(got.key, format!("wal_005/{name}.zst"));
        assert_eq!(std::fs::read(&dest).expect("read"), data);
    }

    #[tokio::test]
    async fn encrypted_objects_round_trip_and_fail_closed() {
        use crate::crypto::{sodium_key, KeyTransform};
        let key = |t: &str| sodium_key(t.as_bytes(), KeyTransform::None).expect("key");
        let old = Encryption::libsodium(key("OLD_LIBSODIUM_KEY________"), vec![]);
        let rotated = Encryption::libsodium(
            key("NEW_LIBSODIUM_KEY________"),
            vec![key("OLD_LIBSODIUM_KEY________")],
        );
        let new_only = Encryption::libsodium(key("NEW_LIBSODIUM_KEY________"), vec![]);
        let dir = tempfile::tempdir().expect("tempdir");
        let (name, data) = segment(6);
        let src = dir.path().join(&name);
        std::fs::write(&src, &data).expect("write");
        for c in Compression::ALL {
            let store = MemoryStore::new("mem");
            let push = PushOptions {
                compression: c,
                encryption: old.clone(),
                ..PushOptions::default()
            };
            push_file(&store, &src, &push).await.expect("push");
            let stored = store.keys();
            let plain = compress(c, &data).expect("compress");
            assert_ne!(
                store.object(&stored[0]).expect("object")[..16],
                plain[..16],
                "{c}: stored in clear"
            );
            // Re-pushing the same file with the rotated keys finds the old
            // copy identical.
            let again = PushOptions {
                encryption: rotated.clone(),
                ..push.clone()
            };
            let outcome = push_file(&store, &src, &again).await.expect("re-push");
            assert!(
                matches!(
                    outcome,
                    crate::pipeline::push::PushOutcome::AlreadyStored { .. }
                ),
                "{c}: {outcome:?}"
            );
            let dest = dir.path().join("RECOVERYXLOG");
            let fetch = |encryption: &Encryption| FetchOptions {
                compression: c,
                encryption: encryption.clone(),
            };
            fetch_file(&store, &name, &dest, &fetch(&rotated))
                .await
                .expect("old key reads");
            assert_eq!(std::fs::read(&dest).expect("read"), data, "{c}");
            std::fs::remove_file(&dest).expect("rm");
            for (e, needle) in [
                (&new_only, "does not authenticate"),
                (&Encryption::None, "set WALG_LIBSODIUM_KEY"),
            ] {
                let err = fetch_file(&store, &name, &dest, &fetch(e))
                    .await
                    .expect_err("must fail");
                assert!(matches!(err, FetchError::Corrupt { .. }), "{c}: {err}");
                assert!(err.to_string().contains(needle), "{c}: {err}");
                assert!(!dest.exists(), "{c}: destination written");
            }
        }
        assert_eq!(
            std::fs::read_dir(dir.path()).expect("ls").count(),
            1,
            "only the source file: no temporary file left"
        );
    }

    #[tokio::test]
    async fn not_found_only_when_every_key_is_absent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("x");
        let store = MemoryStore::new("mem");
        let err = fetch_file(
            &store,
            "000000010000000000000009",
            &dest,
            &FetchOptions::default(),
        )
        .await
        .expect_err("absent");
        assert!(err.is_not_found(), "{err}");
        let faulty = FaultStore::new(Arc::new(store));
        faulty.set_fault(Fault::Fail(ErrorKind::Unavailable));
        let err = fetch_file(
            &faulty,
            "000000010000000000000009",
            &dest,
            &FetchOptions::default(),
        )
        .await
        .expect_err("down");
        assert!(
            !err.is_not_found(),
            "a failing storage is not 'not found': {err}"
        );
        assert!(!dest.exists());
    }

    #[tokio::test]
    async fn rejects_paths_and_bad_names_before_any_request() {
        let dir = tempfile::tempdir().expect("tempdir");
        let faulty = FaultStore::new(Arc::new(MemoryStore::new("mem")));
        for bad in [
            "../000000010000000000000001",
            "a/b",
            "..",
            "",
            "notawalfile",
            "000000010000000000000001/..",
        ] {
            let err = fetch_file(
                &faulty,
                bad,
                &dir.path().join("d"),
                &FetchOptions::default(),
            )
            .await
            .expect_err(bad);
            assert!(
                matches!(err, FetchError::InvalidName { .. }),
                "{bad}: {err}"
            );
        }
        assert_eq!(faulty.calls(), 0);
        assert_eq!(
            std::fs::read_dir(dir.path()).expect("ls").count(),
            0,
            "nothing written"
        );
    }

    #[tokio::test]
    async fn corrupt_or_misplaced_objects_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = MemoryStore::new("mem");
        let dest = dir.path().join("d");
        let (name, data) = segment(4);
        // Truncated lz4 frame.
        let mut packed = compress(Compression::Lz4, &data).expect("compress");
        packed.truncate(packed.len() / 2);
        store
            .put(
                &format!("wal_005/{name}.lz4"),
                &Bytes::from(packed),
                PutOptions::default(),
            )
            .await
            .expect("put");
        let err = fetch_file(&store, &name, &dest, &FetchOptions::default())
            .await
            .expect_err("truncated");
        assert!(matches!(err, FetchError::Corrupt { .. }), "{err}");
        // A valid segment stored under another segment's name.
        let (other, _) = segment(5);
        let packed = compress(Compression::Lz4, &data).expect("compress");
        store
            .put(
                &format!("wal_005/{other}.lz4"),
                &Bytes::from(packed),
                PutOptions::default(),
            )
            .await
            .expect("put");
        let err = fetch_file(&store, &other, &dest, &FetchOptions::default())
            .await
            .expect_err("misplaced");
        assert!(err.to_string().contains("file name says"), "{err}");
        assert!(!dest.exists());
        assert_eq!(
            std::fs::read_dir(dir.path()).expect("ls").count(),
            0,
            "temporary files removed"
        );
    }
}
