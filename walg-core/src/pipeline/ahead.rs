//! Upload-ahead: while PostgreSQL's archiver waits for one `wal-push`, push
//! the next `.ready` files too, and let the later calls for them return at
//! once.
//!
//! PostgreSQL archives strictly one file at a time, so a backlog drains at
//! one storage round trip per segment. Uploading the next `.ready` files in
//! parallel turns that into one round trip per batch. Each upload-ahead
//! success leaves a marker in `pg_wal/walg_data/walg_archive_status/<name>`
//! (WAL-G's location: inside the cluster, never a shared `/tmp`) naming the
//! storage and key it went to, and the local file's stamp (device, inode,
//! size, modification time) taken before it was read. The archiver's later
//! call for that file trusts the marker when the file still has that stamp:
//! the marker was written only after the storage confirmed the upload, so
//! no request is needed (WAL-G and pgBackRest's async spool trust their
//! markers the same way; one round trip per segment would cap the drain
//! rate on a distant storage). A marker without a stamp, or a file whose
//! stamp changed, falls back to a `stat` with the recorded size, then to a
//! normal push.
//!
//! What this module does not do: rename PostgreSQL's `.ready` files (only
//! the archiver does that, on our exit 0), or decide the concurrency.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::store::Store;
use crate::wal::WalName;

/// Marker directory relative to `pg_wal`.
pub const MARKER_DIR: &str = "walg_data/walg_archive_status";

/// What a marker records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    /// The storage the file went to.
    pub storage: String,
    /// The object key.
    pub key: String,
    /// Stored object size.
    pub stored_size: u64,
    /// Size of the local file when it was pushed.
    pub source_size: u64,
    /// The local file's stamp before it was read.
    pub source_stamp: Option<FileStamp>,
}

/// What tells one local file from another without reading it: device,
/// inode, size and modification time (ns). WAL files are written once and
/// renamed into place, so a recycled or rewritten file gets a new stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

impl FileStamp {
    pub fn of(path: &Path) -> io::Result<FileStamp> {
        use std::os::unix::fs::MetadataExt;
        let m = fs::metadata(path)?;
        Ok(FileStamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        })
    }

    fn encode(&self) -> String {
        format!("{}:{}:{}:{}", self.dev, self.ino, self.len, self.mtime_ns)
    }

    fn decode(text: &str) -> Option<FileStamp> {
        let mut it = text.split(':');
        let stamp = FileStamp {
            dev: it.next()?.parse().ok()?,
            ino: it.next()?.parse().ok()?,
            len: it.next()?.parse().ok()?,
            mtime_ns: it.next()?.parse().ok()?,
        };
        it.next().is_none().then_some(stamp)
    }
}

impl Marker {
    fn encode(&self) -> String {
        // One `key=value` per line: trivially parsed, and a torn write (a
        // crash) fails to parse and is ignored.
        let stamp = self
            .source_stamp
            .map(|s| format!("source_stamp={}\n", s.encode()))
            .unwrap_or_default();
        format!(
            "storage={}\nkey={}\nstored_size={}\nsource_size={}\n{stamp}end\n",
            self.storage, self.key, self.stored_size, self.source_size
        )
    }

    fn decode(text: &str) -> Option<Marker> {
        let mut storage = None;
        let mut key = None;
        let mut stored = None;
        let mut source = None;
        let mut stamp = None;
        let mut complete = false;
        for line in text.lines() {
            if line == "end" {
                complete = true;
                continue;
            }
            let (k, v) = line.split_once('=')?;
            match k {
                "storage" => storage = Some(v.to_string()),
                "key" => key = Some(v.to_string()),
                "stored_size" => stored = v.parse().ok(),
                "source_size" => source = v.parse().ok(),
                "source_stamp" => stamp = Some(FileStamp::decode(v)?),
                _ => {}
            }
        }
        complete.then_some(())?;
        Some(Marker {
            storage: storage?,
            key: key?,
            stored_size: stored?,
            source_size: source?,
            source_stamp: stamp,
        })
    }
}

/// The upload-ahead state of one `pg_wal` directory.
#[derive(Debug, Clone)]
pub struct AheadDir {
    pg_wal: PathBuf,
}

impl AheadDir {
    /// `pg_wal` is the directory of the file being pushed; upload-ahead only
    /// applies when it has PostgreSQL's `archive_status` beside the files.
    pub fn for_file(path: &Path) -> Option<AheadDir> {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        dir.join("archive_status").is_dir().then(|| AheadDir {
            pg_wal: dir.to_path_buf(),
        })
    }

    fn marker_dir(&self) -> PathBuf {
        self.pg_wal.join(MARKER_DIR)
    }

    fn marker_path(&self, name: &WalName) -> PathBuf {
        self.marker_dir().join(name.to_string())
    }

    /// Reads the marker of `name`, if any (an unreadable one is ignored).
    pub fn marker(&self, name: &WalName) -> Option<Marker> {
        fs::read_to_string(self.marker_path(name))
            .ok()
            .and_then(|t| Marker::decode(&t))
    }

    /// Records that `name` is stored.
    pub fn write_marker(&self, name: &WalName, marker: &Marker) -> io::Result<()> {
        let dir = self.marker_dir();
        fs::create_dir_all(&dir)?;
        let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        fs::write(&tmp, marker.encode())?;
        fs::rename(&tmp, self.marker_path(name))
    }

    pub fn remove_marker(&self, name: &WalName) {
        let _ = fs::remove_file(self.marker_path(name));
    }

    /// Whether the marker of `name` proves the file at `path` is stored:
    /// the local file still has the recorded size, and either still has the
    /// recorded stamp (no request) or the storage has the object at the
    /// recorded size. Anything else means "push it normally".
    pub async fn verified(
        &self,
        store: &dyn Store,
        name: &WalName,
        path: &Path,
        local_size: u64,
    ) -> Option<Marker> {
        let marker = self.marker(name)?;
        if marker.source_size != local_size {
            return None;
        }
        if let (Some(recorded), Ok(now)) = (marker.source_stamp, FileStamp::of(path)) {
            if recorded == now {
                return Some(marker);
            }
        }
        match store.stat(&marker.key).await {
            Ok(meta) if meta.size == marker.stored_size => Some(marker),
            Ok(meta) => {
                tracing::warn!(file = %name, key = marker.key, recorded = marker.stored_size, found = meta.size, "upload-ahead marker does not match the stored object; pushing again");
                None
            }
            Err(e) => {
                tracing::warn!(file = %name, key = marker.key, error = %e, "upload-ahead marker not confirmed by the storage; pushing again");
                None
            }
        }
    }

    /// Up to `limit` `.ready` files other than `current`, oldest first
    /// (timeline history files first, as PostgreSQL does), that have no
    /// marker yet.
    pub fn ready_files(&self, current: &WalName, limit: usize) -> Vec<(WalName, PathBuf)> {
        if limit == 0 {
            return Vec::new();
        }
        let Ok(entries) = fs::read_dir(self.pg_wal.join("archive_status")) else {
            return Vec::new();
        };
        let mut names: Vec<WalName> = entries
            .flatten()
            .filter_map(|e| {
                let n = e.file_name();
                let n = n.to_str()?.strip_suffix(".ready")?.to_string();
                WalName::parse(&n).ok()
            })
            .filter(|n| n != current)
            .collect();
        names.sort_by_key(|n| (!n.is_history(), n.to_string()));
        let marker_dir = self.marker_dir();
        names
            .into_iter()
            .filter(|n| !marker_dir.join(n.to_string()).exists())
            .map(|n| {
                let p = self.pg_wal.join(n.to_string());
                (n, p)
            })
            .filter(|(_, p)| p.is_file())
            .take(limit)
            .collect()
    }

    /// Removes markers whose file is gone from `pg_wal` (archived, then
    /// recycled by a checkpoint) and leftover temporary files.
    pub fn clean_stale(&self) {
        let Ok(entries) = fs::read_dir(self.marker_dir()) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            let stale_tmp = name.starts_with('.') && name.ends_with(".tmp");
            if stale_tmp || !self.pg_wal.join(name).exists() {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;
    use crate::store::PutOptions;
    use bytes::Bytes;

    fn setup() -> (tempfile::TempDir, AheadDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let pg_wal = dir.path().join("pg_wal");
        fs::create_dir_all(pg_wal.join("archive_status")).expect("mkdir");
        let ahead = AheadDir::for_file(&pg_wal.join("000000010000000000000001"))
            .expect("has archive_status");
        (dir, ahead)
    }

    fn ready(ahead: &AheadDir, name: &str) {
        fs::write(ahead.pg_wal.join(name), b"x").expect("write");
        fs::write(
            ahead
                .pg_wal
                .join("archive_status")
                .join(format!("{name}.ready")),
            b"",
        )
        .expect("write");
    }

    #[test]
    fn picks_oldest_ready_files_history_first() {
        let (_d, ahead) = setup();
        for n in [
            "000000010000000000000001",
            "000000010000000000000003",
            "000000010000000000000002",
            "00000002.history",
        ] {
            ready(&ahead, n);
        }
        fs::write(
            ahead
                .pg_wal
                .join("archive_status")
                .join("000000010000000000000009.done"),
            b"",
        )
        .expect("write");
        let current = WalName::parse("000000010000000000000001").expect("name");
        let got: Vec<String> = ahead
            .ready_files(&current, 2)
            .into_iter()
            .map(|(n, _)| n.to_string())
            .collect();
        assert_eq!(got, ["00000002.history", "000000010000000000000002"]);
        let m = Marker {
            storage: "s".into(),
            key: "k".into(),
            stored_size: 1,
            source_size: 1,
            source_stamp: None,
        };
        ahead
            .write_marker(&WalName::parse("00000002.history").expect("name"), &m)
            .expect("marker");
        let got: Vec<String> = ahead
            .ready_files(&current, 5)
            .into_iter()
            .map(|(n, _)| n.to_string())
            .collect();
        assert_eq!(
            got,
            ["000000010000000000000002", "000000010000000000000003"],
            "marked files are skipped"
        );
    }

    #[tokio::test]
    async fn a_marker_counts_only_when_the_object_is_stored() {
        let (_d, ahead) = setup();
        let store = MemoryStore::new("mem");
        let name = WalName::parse("000000010000000000000002").expect("name");
        let m = Marker {
            storage: "mem".into(),
            key: "wal_005/x.lz4".into(),
            stored_size: 3,
            source_size: 10,
            source_stamp: None,
        };
        let path = ahead.pg_wal.join(name.to_string());
        fs::write(&path, b"0123456789").expect("write");
        ahead.write_marker(&name, &m).expect("marker");
        assert_eq!(ahead.marker(&name), Some(m.clone()));
        assert!(
            ahead.verified(&store, &name, &path, 10).await.is_none(),
            "object missing"
        );
        store
            .put(
                "wal_005/x.lz4",
                &Bytes::from_static(b"abc"),
                PutOptions::default(),
            )
            .await
            .expect("put");
        assert_eq!(ahead.verified(&store, &name, &path, 10).await, Some(m));
        assert!(
            ahead.verified(&store, &name, &path, 11).await.is_none(),
            "local file changed"
        );
        store
            .put(
                "wal_005/x.lz4",
                &Bytes::from_static(b"abcd"),
                PutOptions::default(),
            )
            .await
            .expect("put");
        assert!(
            ahead.verified(&store, &name, &path, 10).await.is_none(),
            "stored size differs"
        );
    }

    /// A marker with the file's stamp is trusted without a request; a file
    /// with another stamp (rewritten, or another file under the name) is not.
    #[tokio::test]
    async fn a_stamped_marker_needs_no_request() {
        let (_d, ahead) = setup();
        let store = MemoryStore::new("mem");
        let name = WalName::parse("000000010000000000000005").expect("name");
        let path = ahead.pg_wal.join(name.to_string());
        fs::write(&path, b"0123456789").expect("write");
        let m = Marker {
            storage: "mem".into(),
            key: "wal_005/y.lz4".into(),
            stored_size: 3,
            source_size: 10,
            source_stamp: Some(FileStamp::of(&path).expect("stamp")),
        };
        ahead.write_marker(&name, &m).expect("marker");
        assert_eq!(
            ahead.marker(&name),
            Some(m.clone()),
            "the stamp round-trips"
        );
        assert_eq!(
            ahead.verified(&store, &name, &path, 10).await,
            Some(m),
            "trusted: the object is not even in this store, so no request was made"
        );
        // Another file under the same name (new inode): not trusted, and the
        // storage does not have the object either.
        fs::remove_file(&path).expect("rm");
        fs::write(&path, b"9876543210").expect("write");
        assert!(ahead.verified(&store, &name, &path, 10).await.is_none());
    }

    #[test]
    fn torn_markers_are_ignored_and_stale_ones_cleaned() {
        let (_d, ahead) = setup();
        let name = WalName::parse("000000010000000000000004").expect("name");
        fs::create_dir_all(ahead.marker_dir()).expect("mkdir");
        fs::write(ahead.marker_path(&name), "storage=x\nkey=y\n").expect("write");
        assert_eq!(ahead.marker(&name), None);
        ahead.clean_stale();
        assert!(
            !ahead.marker_path(&name).exists(),
            "marker of a file gone from pg_wal removed"
        );
    }
}
