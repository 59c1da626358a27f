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
//! Create-if-absent is chosen by probing, not by configuration: link(2)
//! first; on a file system without hard links (vfat, SMB/CIFS, some FUSE and
//! NFS setups) `renameat2(RENAME_NOREPLACE)`; where that is refused too, an
//! exclusive create (`O_EXCL`) of the final name as a placeholder that the
//! temp file then replaces by rename(2). The placeholder is empty for the
//! moment between the two calls; an empty file under a final name older
//! than [`PLACEHOLDER_STALE`] is a crashed writer's and is replaced (walg
//! never stores an empty object under a WAL key). See [`create_method`].
//!
//! Temp files live in `<root>/.walg-tmp-dir/`, named after the writer:
//! `<name>.walg-tmp-<host>_<pid namespace>_<pid>_<start time>_<n>`. The
//! first put of a process removes the temp files of dead processes of the
//! same host and pid namespace (a pid whose start time differs is another
//! process), never a live writer's; [`clean`] does the same for `walg st
//! clean`, plus old temp files of other hosts older than a chosen age.
//!
//! What this module does not do: locking across hosts on file systems whose
//! link(2) is not atomic (some FUSE mounts).

use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use futures::StreamExt;
use walg_core::store::error::{ErrorKind, StoreError};
use walg_core::store::{Body, ByteStream, ObjectMeta, PutOptions, Store};

use crate::cause::{Backend, Site};
use crate::opendal_store::{OpendalStore, PutMode};
use crate::spec::{StorageError, StorageSpec};

/// Marks temp files; `list` hides names that contain it.
pub const TMP_MARK: &str = ".walg-tmp-";
/// The directory under the root that holds temp files (hidden by `list`).
pub const TMP_DIR: &str = ".walg-tmp-dir";
/// An empty file under a final name older than this is the placeholder of a
/// writer that crashed between its exclusive create and its rename.
pub const PLACEHOLDER_STALE: std::time::Duration = std::time::Duration::from_secs(120);

/// How create-if-absent publishes a temp file, in probing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateMethod {
    /// link(2), then unlink of the temp name.
    Link,
    /// renameat2(2) with RENAME_NOREPLACE.
    RenameNoReplace,
    /// O_EXCL placeholder, then rename(2) over it.
    Exclusive,
}

/// A directory of objects.
#[derive(Debug)]
pub struct FileStore {
    root: PathBuf,
    inner: OpendalStore,
    /// The create-if-absent method found to work (index into the probing
    /// order); starts with link(2).
    method: std::sync::atomic::AtomicU8,
    /// Whether this process already removed dead writers' temp files.
    swept: std::sync::atomic::AtomicBool,
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
        // A directory that cannot be created or resolved is a storage that
        // is down (a vanished mount, a path through a regular file), not a
        // malformed setting: a failover storage can take over.
        std::fs::create_dir_all(&root).map_err(|e| {
            let site = Site::new(Backend::File, format!("file://{location}"), location);
            spec.unavailable(match site.explain_io("create directory", &root, &e) {
                Some(x) => format!("{}; {}", x.what, x.fix),
                None => format!("{SETTING}: cannot create directory {}: {e}", root.display()),
            })
        })?;
        let root = root.canonicalize().map_err(|e| {
            spec.unavailable(format!(
                "{SETTING}: cannot resolve directory {}: {e}",
                root.display()
            ))
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
            Site::new(Backend::File, url, root_str),
            op,
            PutMode::default(),
            true,
        );
        Ok(FileStore {
            root,
            inner,
            method: std::sync::atomic::AtomicU8::new(0),
            swept: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The create-if-absent method in use (after probing, the one that worked).
    pub fn create_method(&self) -> CreateMethod {
        METHODS[usize::from(self.method.load(Ordering::Relaxed)).min(METHODS.len() - 1)]
    }

    /// Starts probing at `method` (tests of the fallbacks on file systems
    /// that support the earlier ones).
    #[doc(hidden)]
    pub fn force_create_method(&self, method: CreateMethod) {
        let i = METHODS.iter().position(|m| *m == method).unwrap_or(0);
        self.method.store(i as u8, Ordering::Relaxed);
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
        let kind = StoreError::from_io(op, self.name(), key, err).kind;
        match self.inner.site().explain_io(what, path, err) {
            Some(x) => StoreError::explained(kind, op, self.name(), key, x),
            None => StoreError::new(
                kind,
                op,
                self.name(),
                key,
                format!("{what} {}: {err}", path.display()),
            ),
        }
    }

    async fn write_and_publish(
        &self,
        key: &str,
        body: &dyn Body,
        tmp: &Path,
        target: &Path,
        opts: PutOptions,
    ) -> Result<(), StoreError> {
        // One blocking thread writes and fsyncs the temp file, pulling the
        // body's chunks itself: no copy (tokio::fs would copy each chunk
        // into its own buffer and hop to the blocking pool once per write)
        // and no second queue of chunks between the body and the writer (a
        // 16 MiB push held two more of the pipeline's buffers with one).
        // A local file stored as it is (compression `none`, no encryption)
        // is copied by the kernel (copy_file_range): no pass through user
        // space at all.
        let local = body.local_file();
        let stream = match local {
            Some(_) => None,
            None => Some(body.open()),
        };
        let runtime = tokio::runtime::Handle::current();
        let tmp_owned = tmp.to_path_buf();
        let writer = tokio::task::spawn_blocking(move || -> Result<(), Failed> {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp_owned)
                .map_err(|e| Failed::Io("create temp file", e))?;
            if let Some(local) = local {
                copy_file(&local, &file).map_err(|(what, e)| Failed::Io(what, e))?;
            }
            if let Some(mut stream) = stream {
                let (mut written, mut queued) = (0u64, 0u64);
                // The stream is async: this thread waits on it while the
                // runtime's own thread drives any I/O behind it.
                while let Some(chunk) = runtime.block_on(stream.next()) {
                    let chunk = chunk.map_err(Failed::Body)?;
                    file.write_all(&chunk).map_err(|e| Failed::Io("write", e))?;
                    written += chunk.len() as u64;
                    if written - queued >= WRITEBACK_STEP {
                        start_writeback(&file, queued, written - queued);
                        queued = written;
                    }
                }
            }
            file.sync_all().map_err(|e| Failed::Io("fsync", e))
        });
        let written = writer.await.map_err(|e| {
            self.io_err(
                "put",
                key,
                "write",
                tmp,
                &std::io::Error::other(e.to_string()),
            )
        })?;
        match written {
            Ok(()) => {}
            Err(Failed::Body(e)) => return Err(e),
            Err(Failed::Io(what, e)) => return Err(self.io_err("put", key, what, tmp, &e)),
        }

        if opts.if_not_exists {
            self.publish_if_absent(key, tmp, target).await?;
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

/// Why writing a temp file failed: the body (its own error, passed on as
/// it is) or the local disk (what was being done, and the I/O error).
enum Failed {
    Body(StoreError),
    Io(&'static str, std::io::Error),
}

/// Copies `local`, which must be exactly `local.len` bytes long, into
/// `file` a MiB at a time (std uses copy_file_range, falling back to
/// sendfile or read and write where the file systems do not support it),
/// starting writeback and reporting progress after each MiB.
fn copy_file(
    local: &walg_core::store::LocalFile,
    file: &std::fs::File,
) -> Result<(), (&'static str, std::io::Error)> {
    let (source, len) = (&local.path, local.len);
    let named =
        |e: std::io::Error| std::io::Error::new(e.kind(), format!("{}: {e}", source.display()));
    let from = std::fs::File::open(source).map_err(|e| ("read", named(e)))?;
    let mut copied = 0u64;
    loop {
        let mut to = file;
        let n = std::io::copy(&mut (&from).take(WRITEBACK_STEP), &mut to)
            .map_err(|e| ("copy", named(e)))?;
        if n == 0 {
            break;
        }
        start_writeback(file, copied, n);
        copied += n;
        if let Some(progress) = &local.progress {
            progress();
        }
        if copied > len {
            break;
        }
    }
    if copied != len {
        return Err((
            "read",
            named(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("file changed size while reading: expected {len} bytes, read {copied}"),
            )),
        ));
    }
    Ok(())
}

/// Bytes written before the kernel is asked to start writing them back.
const WRITEBACK_STEP: u64 = 1 << 20;

/// Asks the kernel to start writing `len` bytes at `offset` to disk now,
/// without waiting, as PostgreSQL does for its own files when it has no
/// `sync_file_range` (`POSIX_FADV_DONTNEED` starts writeback of dirty pages
/// and leaves them cached until written): the disk then works while the
/// rest is still being compressed and written, and the final fsync waits
/// only for the tail. On this machine, writing and fsyncing 16 MiB in 1 MiB
/// writes took 9.0 ms this way instead of 13.4. Only a hint: errors are
/// ignored, the fsync is what makes the file durable.
fn start_writeback(file: &std::fs::File, offset: u64, len: u64) {
    if let Some(len) = std::num::NonZeroU64::new(len) {
        let _ = rustix::fs::fadvise(file, offset, Some(len), rustix::fs::Advice::DontNeed);
    }
}

const METHODS: [CreateMethod; 3] = [
    CreateMethod::Link,
    CreateMethod::RenameNoReplace,
    CreateMethod::Exclusive,
];

/// Whether an error of link(2) or renameat2(2) means "this file system does
/// not do that" rather than a real failure.
fn unsupported(e: &std::io::Error) -> bool {
    use rustix::io::Errno;
    let codes = [
        Errno::PERM,
        Errno::OPNOTSUPP,
        Errno::NOSYS,
        Errno::INVAL,
        Errno::MLINK,
    ]
    .map(|e| e.raw_os_error());
    e.raw_os_error().is_some_and(|c| codes.contains(&c))
}

fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE).map_err(std::io::Error::from)
}

/// Creates `target` empty and exclusively; an empty `target` older than
/// [`PLACEHOLDER_STALE`] (a crashed writer's placeholder) is replaced once.
fn create_placeholder(target: &Path) -> std::io::Result<()> {
    for attempt in 0..2 {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(target)
        {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt == 0 => {
                let stale = std::fs::symlink_metadata(target).is_ok_and(|m| {
                    m.is_file()
                        && m.len() == 0
                        && m.modified()
                            .ok()
                            .and_then(|t| t.elapsed().ok())
                            .is_some_and(|age| age > PLACEHOLDER_STALE)
                });
                if !stale {
                    return Err(e);
                }
                tracing::warn!(
                    "removing {}: an empty placeholder left by a writer that crashed",
                    target.display()
                );
                std::fs::remove_file(target)?;
            }
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::from(std::io::ErrorKind::AlreadyExists))
}

impl FileStore {
    /// Publishes `tmp` as `target` only if `target` does not exist: of two
    /// concurrent writers exactly one wins, and the loser's object is
    /// untouched. Tries the methods in order, remembering the first that
    /// the file system supports.
    async fn publish_if_absent(
        &self,
        key: &str,
        tmp: &Path,
        target: &Path,
    ) -> Result<(), StoreError> {
        let conflict = || {
            StoreError::new(
                ErrorKind::Conflict,
                "put",
                self.name(),
                key,
                format!("{} already exists", target.display()),
            )
        };
        loop {
            let method = self.create_method();
            let (tmp_, target_) = (tmp.to_path_buf(), target.to_path_buf());
            let result = tokio::task::spawn_blocking(move || match method {
                CreateMethod::Link => std::fs::hard_link(&tmp_, &target_),
                CreateMethod::RenameNoReplace => rename_noreplace(&tmp_, &target_),
                CreateMethod::Exclusive => {
                    create_placeholder(&target_)?;
                    std::fs::rename(&tmp_, &target_).inspect_err(|_| {
                        // Our own placeholder: do not leave it to block the key.
                        let _ = std::fs::remove_file(&target_);
                    })
                }
            })
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r);
            match result {
                Ok(()) => {
                    if method == CreateMethod::Link {
                        // Published; a failure to drop the temp name only
                        // leaves a hidden file behind.
                        let _ = tokio::fs::remove_file(tmp).await;
                    }
                    return Ok(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(conflict()),
                Err(e) if unsupported(&e) && method != CreateMethod::Exclusive => {
                    let next = METHODS
                        .iter()
                        .position(|m| *m == method)
                        .map_or(2, |i| i + 1);
                    tracing::debug!(
                        "{:?} is not supported under {} ({e}); trying {:?}",
                        method,
                        self.root.display(),
                        METHODS[next]
                    );
                    self.method.store(next as u8, Ordering::Relaxed);
                }
                Err(e) => return Err(self.io_err("put", key, "publish", target, &e)),
            }
        }
    }

    /// Removes, once per process, the temp files of dead writers of this
    /// host (see [`sweep_dead`]). Never fails a put.
    async fn sweep_once(&self) {
        if self.swept.swap(true, Ordering::Relaxed) {
            return;
        }
        let dir = self.root.join(TMP_DIR);
        let _ = tokio::task::spawn_blocking(move || {
            for (path, _) in dead_temp_files(&dir, None) {
                match std::fs::remove_file(&path) {
                    Ok(()) => tracing::info!(
                        "removed {}, left by a wal-push that was killed",
                        path.display()
                    ),
                    Err(e) => tracing::debug!("remove {}: {e}", path.display()),
                }
            }
        })
        .await;
    }
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Who wrote a temp file, from its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Writer {
    pub host: String,
    pub pid_ns: u64,
    pub pid: u32,
    pub start: u64,
}

impl Writer {
    /// This process.
    pub fn me() -> &'static Writer {
        static ME: std::sync::OnceLock<Writer> = std::sync::OnceLock::new();
        ME.get_or_init(|| Writer {
            host: host_name(),
            pid_ns: pid_namespace(),
            pid: std::process::id(),
            start: start_time(std::process::id()).unwrap_or(0),
        })
    }

    /// Parses the writer out of a temp file name.
    pub fn of(name: &str) -> Option<Writer> {
        let (_, tail) = name.split_once(TMP_MARK)?;
        let mut parts = tail.rsplitn(5, '_');
        let _n: u64 = parts.next()?.parse().ok()?;
        let start = parts.next()?.parse().ok()?;
        let pid = parts.next()?.parse().ok()?;
        let pid_ns = parts.next()?.parse().ok()?;
        let host = parts.next()?.to_string();
        Some(Writer {
            host,
            pid_ns,
            pid,
            start,
        })
    }

    /// Whether this writer is certainly gone: same host and pid namespace
    /// as us, and its pid is free or belongs to a process started at
    /// another time. Anything we cannot tell counts as alive.
    pub fn is_dead(&self) -> bool {
        let me = Writer::me();
        if self.host != me.host || self.pid_ns != me.pid_ns || me.pid_ns == 0 {
            return false;
        }
        if self.pid == me.pid && self.start == me.start {
            return false;
        }
        match std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(_) => false,
            Ok(stat) => parse_start_time(&stat).is_some_and(|s| s != self.start),
        }
    }
}

fn host_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let clean: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    if clean.is_empty() {
        "unknown-host".to_string()
    } else {
        clean
    }
}

/// The inode of our pid namespace: pids are comparable only within one.
fn pid_namespace() -> u64 {
    std::fs::read_link("/proc/self/ns/pid")
        .ok()
        .and_then(|l| {
            let l = l.to_string_lossy().into_owned();
            l.strip_prefix("pid:[")?.strip_suffix(']')?.parse().ok()
        })
        .unwrap_or(0)
}

/// Field 22 of `/proc/<pid>/stat`: the start time in clock ticks since boot.
fn parse_start_time(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

fn start_time(pid: u32) -> Option<u64> {
    parse_start_time(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The temp files in `dir` whose writer is dead (see [`Writer::is_dead`]),
/// plus, with `older_than`, those of any writer not known alive that are
/// older than that. Returns each path with its age.
pub fn dead_temp_files(
    dir: &Path,
    older_than: Option<std::time::Duration>,
) -> Vec<(PathBuf, std::time::Duration)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.contains(TMP_MARK) {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let age = meta
            .modified()
            .ok()
            .and_then(|t| t.elapsed().ok())
            .unwrap_or_default();
        let writer = Writer::of(&name);
        let dead = writer.as_ref().is_some_and(Writer::is_dead);
        let mine_alive = writer.as_ref().is_some_and(|w| {
            let me = Writer::me();
            w.host == me.host && w.pid_ns == me.pid_ns && !w.is_dead()
        });
        let old = older_than.is_some_and(|limit| age >= limit);
        if dead || (old && !mine_alive) {
            out.push((entry.path(), age));
        }
    }
    out
}

fn tmp_path(root: &Path, target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let me = Writer::me();
    root.join(TMP_DIR).join(format!(
        "{name}{TMP_MARK}{}_{}_{}_{}_{n}",
        me.host, me.pid_ns, me.pid, me.start
    ))
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
        self.sweep_once().await;
        let tmp_dir = self.root.join(TMP_DIR);
        if tokio::fs::metadata(&tmp_dir).await.is_err() {
            tokio::fs::create_dir_all(&tmp_dir)
                .await
                .map_err(|e| self.io_err("put", key, "create directory", &tmp_dir, &e))?;
        }
        let tmp = tmp_path(&self.root, &target);
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
    async fn every_create_method_keeps_the_first_object() {
        let opts = PutOptions {
            if_not_exists: true,
        };
        for method in METHODS {
            let tmp = tempfile::tempdir().expect("tempdir");
            let store = open(tmp.path());
            store.force_create_method(method);
            store
                .put("w/k", &Bytes::from_static(b"first"), opts)
                .await
                .expect("first put");
            let err = store
                .put("w/k", &Bytes::from_static(b"second"), opts)
                .await
                .expect_err("second put");
            assert_eq!(err.kind, ErrorKind::Conflict, "{method:?}: {err}");
            assert_eq!(
                std::fs::read(tmp.path().join("w/k")).expect("read"),
                b"first"
            );
            assert_eq!(
                store.create_method(),
                method,
                "no fallback on a full file system"
            );
            let left = std::fs::read_dir(tmp.path().join(TMP_DIR))
                .expect("tmp dir")
                .count();
            assert_eq!(left, 0, "{method:?} left temp files");
        }
    }

    #[tokio::test]
    async fn a_stale_empty_placeholder_is_replaced_a_fresh_one_is_not() {
        let opts = PutOptions {
            if_not_exists: true,
        };
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = open(tmp.path());
        store.force_create_method(CreateMethod::Exclusive);
        std::fs::create_dir_all(tmp.path().join("w")).expect("mkdir");
        let target = tmp.path().join("w/k");
        std::fs::File::create(&target).expect("placeholder");
        let err = store
            .put("w/k", &Bytes::from_static(b"data"), opts)
            .await
            .expect_err("a fresh placeholder is another writer's");
        assert_eq!(err.kind, ErrorKind::Conflict);
        let old = std::time::SystemTime::now() - PLACEHOLDER_STALE * 2;
        std::fs::File::options()
            .write(true)
            .open(&target)
            .and_then(|f| f.set_modified(old))
            .expect("age the placeholder");
        store
            .put("w/k", &Bytes::from_static(b"data"), opts)
            .await
            .expect("a stale placeholder is replaced");
        assert_eq!(std::fs::read(&target).expect("read"), b"data");
    }

    #[test]
    fn temp_names_tell_the_writer() {
        let me = Writer::me();
        let path = tmp_path(Path::new("/r"), Path::new("/r/wal_005/x.lz4"));
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        assert_eq!(Writer::of(&name).as_ref(), Some(me), "{name}");
        assert!(!me.is_dead(), "we are alive");
        let reused = Writer {
            start: me.start + 1,
            ..me.clone()
        };
        assert!(
            reused.is_dead(),
            "same pid, other start time: another process"
        );
        let elsewhere = Writer {
            host: "elsewhere".into(),
            pid: u32::MAX,
            ..me.clone()
        };
        assert!(
            !elsewhere.is_dead(),
            "another host's writer is never judged"
        );
        assert_eq!(
            Writer::of(".x.walg-tmp-123-4"),
            None,
            "legacy names carry no writer"
        );
        assert_eq!(
            parse_start_time("1 (a) b) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 777 19"),
            Some(777)
        );
    }

    /// A file stored as it is goes through the kernel copy: the same bytes
    /// as the streaming path, and a file of another length than the one
    /// the push saw is refused with nothing left under the key.
    #[tokio::test]
    async fn a_local_file_is_copied_whole_or_not_at_all() {
        use walg_core::pipeline::codec::Compression;
        use walg_core::pipeline::stream::FileBody;
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = open(&tmp.path().join("store"));
        let source = tmp.path().join("segment");
        let data: Vec<u8> = (0..(3u32 << 20) + 5).map(|i| (i % 253) as u8).collect();
        std::fs::write(&source, &data).expect("write source");
        let body = FileBody::new(&source, Compression::None, data.len() as u64);
        assert!(body.local_file().is_some());
        store
            .put("wal/a", &body, PutOptions::default())
            .await
            .expect("put");
        assert!(std::fs::read(tmp.path().join("store/wal/a")).expect("stored") == data);
        assert_eq!(body.produced(), data.len() as u64);
        // The same through the streaming path (a compressed body is never local).
        assert!(FileBody::new(&source, Compression::Lz4, data.len() as u64)
            .local_file()
            .is_none());
        for wrong in [data.len() as u64 - 1, data.len() as u64 + 1] {
            let body = FileBody::new(&source, Compression::None, wrong);
            let err = store
                .put("wal/b", &body, PutOptions::default())
                .await
                .expect_err("length differs");
            assert!(err.to_string().contains("changed size"), "{err}");
            assert!(!tmp.path().join("store/wal/b").exists());
        }
        let left = std::fs::read_dir(tmp.path().join("store").join(TMP_DIR))
            .expect("temp dir")
            .count();
        assert_eq!(left, 0, "temp files left behind");
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
