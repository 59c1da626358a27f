//! The `file` backend: objects as files under a directory (`WALG_FILE_PREFIX`),
//! a local disk or a mounted network file system.
//!
//! Reads, stat, listing and deletes go through opendal's fs service. Uploads
//! do not: opendal's fs writer either writes in place (a crash leaves a torn
//! object under its final name) or, with `atomic_write_dir`, renames a temp
//! file without fsyncing the directory, and its create-if-absent is a
//! check-then-rename that two writers can both pass. walg's contract with
//! PostgreSQL is "exit 0 only when the file is durably stored", so `put`
//! here writes a temp file next to the final name, fsyncs it, publishes it
//! with rename(2) (or link(2), which fails atomically when the name exists,
//! for create-if-absent) and fsyncs the directory before returning.
//!
//! What this module does not do: locking across hosts on file systems whose
//! link(2) is not atomic (some FUSE mounts), or cleaning up temp files left by
//! a crash (they are hidden from `list` and harmless).

use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use walg_core::error::{ErrorKind, StoreError};
use walg_core::store::{Body, ByteStream, ObjectMeta, PutOptions, Store};

use crate::opendal_store::{OpendalStore, PutMode, UPLOAD_CHUNK};
use crate::spec::{StorageError, StorageSpec};

/// Marks temp files; `list` hides names that contain it.
const TMP_MARK: &str = ".walg-tmp-";

/// A directory of objects.
#[derive(Debug)]
pub struct FileStore {
    root: PathBuf,
    inner: OpendalStore,
}

impl FileStore {
    /// Opens (and creates, if missing) the directory `spec.location`.
    pub fn open(spec: &StorageSpec) -> Result<FileStore, StorageError> {
        const SETTING: &str = "WALG_FILE_PREFIX";
        let location = spec.location.trim();
        if location.is_empty() {
            return Err(spec.config_error(
                SETTING,
                "empty directory path; set it to the archive directory",
            ));
        }
        let root = PathBuf::from(location);
        std::fs::create_dir_all(&root).map_err(|e| {
            spec.config_error(
                SETTING,
                format!("cannot create directory {}: {e}", root.display()),
            )
        })?;
        let root = root.canonicalize().map_err(|e| {
            spec.config_error(
                SETTING,
                format!("cannot resolve directory {}: {e}", root.display()),
            )
        })?;
        let root_str = root.to_str().ok_or_else(|| {
            spec.config_error(
                SETTING,
                format!("directory {} is not valid UTF-8", root.display()),
            )
        })?;
        let builder = opendal::services::Fs::default().root(root_str);
        let op = opendal::Operator::new(builder).map_err(|e| {
            spec.config_error(SETTING, format!("cannot open directory {root_str}: {e}"))
        })?;
        let url = format!("file://{root_str}");
        // The put mode is unused (put is implemented here), but the read
        // side is a regular opendal store.
        let inner = OpendalStore::new(
            &spec.name,
            url,
            op,
            PutMode::Chunked {
                chunk: UPLOAD_CHUNK,
            },
            true,
            Vec::new(),
        );
        Ok(FileStore { root, inner })
    }

    /// The directory objects live in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Resolves a key to a path under the root, refusing anything that
    /// could escape it.
    fn path_of(&self, op: &'static str, key: &str) -> Result<PathBuf, StoreError> {
        let bad = |why: &str| {
            StoreError::new(
                ErrorKind::Other,
                op,
                self.name(),
                key,
                format!("invalid key for {}: {why}", self.inner.url()),
            )
        };
        if key.is_empty() || key.ends_with('/') {
            return Err(bad("a key names a file"));
        }
        let rel = Path::new(key);
        for c in rel.components() {
            match c {
                Component::Normal(name) if !name.to_string_lossy().contains(TMP_MARK) => {}
                _ => {
                    return Err(bad(
                        "keys are relative paths without `.`, `..` or temp-file names",
                    ))
                }
            }
        }
        Ok(self.root.join(rel))
    }

    fn io_err(
        &self,
        op: &'static str,
        key: &str,
        what: &str,
        path: &Path,
        err: &std::io::Error,
    ) -> StoreError {
        let mut e = StoreError::from_io(op, self.name(), key, err);
        e.message = format!("{what} {}: {err}", path.display());
        e
    }

    async fn write_and_publish(
        &self,
        key: &str,
        body: &dyn Body,
        tmp: &Path,
        target: &Path,
        opts: PutOptions,
    ) -> Result<(), StoreError> {
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(tmp)
            .await
            .map_err(|e| self.io_err("put", key, "create temp file", tmp, &e))?;
        let mut stream = body.open();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            file.write_all(&chunk)
                .await
                .map_err(|e| self.io_err("put", key, "write", tmp, &e))?;
        }
        file.flush()
            .await
            .map_err(|e| self.io_err("put", key, "write", tmp, &e))?;
        file.sync_all()
            .await
            .map_err(|e| self.io_err("put", key, "fsync", tmp, &e))?;
        drop(file);

        if opts.if_not_exists {
            // link(2) refuses an existing name atomically: of two concurrent
            // writers exactly one wins, and the loser's object is untouched.
            match tokio::fs::hard_link(tmp, target).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Err(StoreError::new(
                        ErrorKind::Conflict,
                        "put",
                        self.name(),
                        key,
                        format!("{} already exists", target.display()),
                    ));
                }
                Err(e) => return Err(self.io_err("put", key, "link", target, &e)),
            }
            // The object is published; a failure to drop the temp name only
            // leaves a hidden file behind.
            let _ = tokio::fs::remove_file(tmp).await;
        } else {
            tokio::fs::rename(tmp, target)
                .await
                .map_err(|e| self.io_err("put", key, "rename to", target, &e))?;
        }
        let dir = target.parent().unwrap_or(&self.root);
        sync_dir(dir)
            .await
            .map_err(|e| self.io_err("put", key, "fsync directory", dir, &e))
    }
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn tmp_path(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    target.with_file_name(format!(".{name}{TMP_MARK}{}-{n}", std::process::id()))
}

/// fsyncs a directory so that a rename or link in it survives a crash.
async fn sync_dir(dir: &Path) -> std::io::Result<()> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || std::fs::File::open(&dir)?.sync_all())
        .await
        .map_err(std::io::Error::other)?
}

#[async_trait]
impl Store for FileStore {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn atomic_if_not_exists(&self) -> bool {
        true
    }

    async fn put(&self, key: &str, body: &dyn Body, opts: PutOptions) -> Result<(), StoreError> {
        let target = self.path_of("put", key)?;
        let dir = target.parent().unwrap_or(&self.root).to_path_buf();
        if tokio::fs::metadata(&dir).await.is_err() {
            tokio::fs::create_dir_all(&dir)
                .await
                .map_err(|e| self.io_err("put", key, "create directory", &dir, &e))?;
            // New directories must themselves be durable entries of their
            // parents, up to the root.
            let mut d = dir.parent();
            while let Some(p) = d {
                sync_dir(p)
                    .await
                    .map_err(|e| self.io_err("put", key, "fsync directory", p, &e))?;
                if p == self.root {
                    break;
                }
                d = p.parent();
            }
        }
        let tmp = tmp_path(&target);
        let result = self.write_and_publish(key, body, &tmp, &target, opts).await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }

    async fn get(&self, key: &str) -> Result<ByteStream, StoreError> {
        self.path_of("get", key)?;
        self.inner.get(key).await
    }

    async fn stat(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        self.path_of("stat", key)?;
        self.inner.stat(key).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        if prefix.split('/').any(|c| c == "..") {
            return Err(StoreError::new(
                ErrorKind::Other,
                "list",
                self.name(),
                prefix,
                "invalid prefix: `..`",
            ));
        }
        let mut objects = self.inner.list(prefix).await?;
        objects.retain(|o| !o.key.contains(TMP_MARK));
        Ok(objects)
    }

    fn list_pages<'a>(&'a self, prefix: &'a str) -> walg_core::store::ListPages<'a> {
        use futures::StreamExt;
        if prefix.split('/').any(|c| c == "..") {
            let err = StoreError::new(
                ErrorKind::Other,
                "list",
                self.name(),
                prefix,
                "invalid prefix: `..`",
            );
            return Box::pin(futures::stream::once(async move { Err(err) }));
        }
        Box::pin(self.inner.list_pages(prefix).map(|page| {
            page.map(|mut objects| {
                objects.retain(|o| !o.key.contains(TMP_MARK));
                objects
            })
        }))
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.path_of("delete", key)?;
        self.inner.delete(key).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use walg_core::store::read_all;

    fn open(dir: &Path) -> FileStore {
        FileStore::open(&StorageSpec::new("local", "file", dir.to_string_lossy()))
            .expect("open file store")
    }

    #[tokio::test]
    async fn put_creates_parents_and_leaves_no_temp_files() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = open(tmp.path());
        let key = "wal_005/000000010000000000000003.lz4";
        store
            .put(key, &Bytes::from_static(b"segment"), PutOptions::default())
            .await
            .expect("put");
        assert_eq!(
            std::fs::read(tmp.path().join(key)).expect("read back"),
            b"segment"
        );
        let names: Vec<_> = std::fs::read_dir(tmp.path().join("wal_005"))
            .expect("read dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        assert_eq!(
            read_all(store.get(key).await.expect("get"))
                .await
                .expect("read"),
            b"segment"
        );
    }

    #[tokio::test]
    async fn create_if_absent_keeps_the_first_object() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = open(tmp.path());
        let opts = PutOptions {
            if_not_exists: true,
        };
        store
            .put("a/b", &Bytes::from_static(b"first"), opts)
            .await
            .expect("first put");
        let err = store
            .put("a/b", &Bytes::from_static(b"second"), opts)
            .await
            .expect_err("second put");
        assert_eq!(err.kind, ErrorKind::Conflict, "{err}");
        assert_eq!(
            std::fs::read(tmp.path().join("a/b")).expect("read"),
            b"first"
        );
        assert_eq!(store.list("a/").await.expect("list").len(), 1);
    }

    #[tokio::test]
    async fn a_failing_body_leaves_nothing_under_the_key() {
        struct Broken;
        impl Body for Broken {
            fn open(&self) -> ByteStream {
                Box::pin(futures::stream::iter(vec![
                    Ok(Bytes::from_static(b"partial")),
                    Err(StoreError::new(
                        ErrorKind::Other,
                        "read",
                        "local",
                        "x",
                        "source vanished",
                    )),
                ]))
            }
        }
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = open(tmp.path());
        store
            .put("d/x", &Broken, PutOptions::default())
            .await
            .expect_err("body fails");
        assert!(!tmp.path().join("d/x").exists());
        assert_eq!(
            std::fs::read_dir(tmp.path().join("d"))
                .expect("dir")
                .count(),
            0,
            "temp file left behind"
        );
    }

    #[tokio::test]
    async fn keys_cannot_escape_the_root() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = open(&tmp.path().join("root"));
        for key in ["../x", "/etc/passwd", "a/../../x", "", "a/"] {
            let err = store
                .put(key, &Bytes::from_static(b"x"), PutOptions::default())
                .await;
            assert!(err.is_err(), "{key:?} accepted");
        }
        assert!(!tmp.path().join("x").exists());
    }

    #[test]
    fn empty_location_names_the_setting() {
        let err = FileStore::open(&StorageSpec::new("default", "file", "")).expect_err("empty");
        assert!(err.to_string().contains("WALG_FILE_PREFIX"), "{err}");
    }
}
