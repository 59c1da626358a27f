//! The storage status cache: one small JSON file shared by every walg
//! process of a user, remembering which storages were alive or dead and when.
//!
//! PostgreSQL starts a new `walg wal-push` for every segment, so what one
//! process learned about a storage (it is down, or it is fine) has to reach
//! the next process through a file, or every segment would probe every
//! storage again. This module owns that file:
//!
//! - Freshness is per storage: an entry is fresh while
//!   `now - max(checked_at, used_at) < lifetime`.
//! - Entries are keyed by the storage name and carry a fingerprint of the
//!   storage's identity; an entry whose fingerprint differs from the
//!   configured storage's is ignored, so a configuration change never reuses
//!   a stale verdict.
//! - The file is created by the first process that learns something; a
//!   missing file is normal and silent.
//! - Writes are read-merge-write under an exclusive `flock` on a sibling
//!   `<file>.lock`, through a temporary file in the same directory that is
//!   fsynced and renamed over the file, then the directory is fsynced.
//!   Merging keeps, per storage, the newest observation, so a newer "dead"
//!   verdict written by another process is never lost.
//! - A torn, empty, foreign or other-version file is ignored with one warning
//!   and rewritten. A location that cannot be used (unwritable directory, a
//!   directory or a symbolic link at the path, ...) degrades the cache to
//!   memory with one warning; the cache never fails an operation.
//! - Files are created with mode 0600 (directories walg creates: 0700) and
//!   opened with `O_NOFOLLOW`: a symbolic link at the path is never followed.
//!
//! When the file is written (the refresh rule): only when something material
//! changed for a storage compared with what the file holds, that is, the
//! entry is missing or has another fingerprint, its alive/dead status
//! differs, or our observation is at least a quarter of the lifetime newer
//! than the file's. A status change is therefore always written, and a
//! storage in steady use is rewritten at most about every `lifetime / 4`,
//! which keeps its entry fresh for other processes without a write per
//! segment.
//!
//! What this module does not do: it never talks to a storage, never probes,
//! and never decides which storage to use; see [`crate::FailoverStore`].
//! Its file I/O is blocking; async callers run it on a blocking thread.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::clock::{from_unix_ms, unix_ms, Clock};

/// The `format` field of every cache file.
pub const FORMAT: &str = "walg-storage-status";
/// The `version` field this walg reads and writes.
pub const VERSION: u32 = 1;
/// File name under the state directory, see [`default_cache_path`].
pub const FILE_NAME: &str = "storage_status.json";

/// How long a flush waits for another process's lock before giving up on
/// this update. Writers hold the lock for one small read and write, so a
/// longer wait means something is stuck; the verdict stays in memory.
const LOCK_WAIT: Duration = Duration::from_secs(5);
/// Error texts are kept short: the file is read by every segment's process.
const MAX_ERROR_LEN: usize = 512;
/// A larger file is not ours; reading it whole would waste time and memory.
const MAX_FILE_LEN: u64 = 1 << 20;

/// The default location of the cache file:
/// `$XDG_STATE_HOME/walg/storage_status.json`, else
/// `$HOME/.local/state/walg/storage_status.json`, else `None` (the caller
/// then keeps the status in memory or uses an explicit path). Relative or
/// empty values are ignored, as the XDG base directory spec requires.
///
/// A pure function: the caller reads the environment. There is deliberately
/// no fallback to a shared directory such as `/tmp`, where a predictable
/// name could be pre-created by another user.
pub fn default_cache_path(xdg_state_home: Option<&Path>, home: Option<&Path>) -> Option<PathBuf> {
    let usable = |p: &&Path| p.is_absolute();
    if let Some(state) = xdg_state_home.filter(usable) {
        return Some(state.join("walg").join(FILE_NAME));
    }
    home.filter(usable)
        .map(|h| h.join(".local").join("state").join("walg").join(FILE_NAME))
}

/// What the cache knows about one storage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Identity of the storage the verdict is about (its URL, credential-free).
    pub fingerprint: String,
    /// The verdict of the newest observation.
    pub alive: bool,
    /// When a probe last checked the storage, in Unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_at_ms: Option<u64>,
    /// When a real operation last used the storage, in Unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_at_ms: Option<u64>,
    /// Why the storage is dead; absent while it is alive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Entry {
    /// The time of the newest observation, in Unix milliseconds.
    pub fn observed_at_ms(&self) -> u64 {
        self.checked_at_ms
            .unwrap_or(0)
            .max(self.used_at_ms.unwrap_or(0))
    }

    /// Whether this observation should replace `other` when merging. On a
    /// tie "dead" wins: failing over once too often is cheaper than sending
    /// a segment to a dead storage.
    pub fn supersedes(&self, other: &Entry) -> bool {
        let (a, b) = (self.observed_at_ms(), other.observed_at_ms());
        a > b || (a == b && !self.alive && other.alive)
    }
}

/// The on-disk shape of the cache file.
#[derive(Debug, Serialize, Deserialize)]
struct CacheFile {
    format: String,
    version: u32,
    #[serde(default)]
    storages: BTreeMap<String, Entry>,
}

/// The cache's opinion of a storage right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Seen alive within the lifetime.
    Alive,
    /// Seen failing within the lifetime.
    Dead,
    /// Never seen, seen under another fingerprint, or the verdict expired.
    Unknown,
}

/// Where an observation came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observation {
    /// A health probe (updates `checked_at`).
    Checked,
    /// A real operation (updates `used_at`).
    Used,
}

/// How an observation changed a storage's status, for logging transitions
/// once instead of on every call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Nothing worth a log line: same status as before, or first seen alive.
    Unchanged,
    /// Was alive or unknown, now dead.
    Down,
    /// Was dead, now alive.
    Up,
}

/// The status cache: in memory, backed by a file unless none was configured
/// or the file turned out unusable.
#[derive(Debug)]
pub struct StatusCache {
    configured: Option<PathBuf>,
    lifetime: Duration,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
    /// Serializes this process's file I/O so two flushes of one cache do not
    /// both rewrite the file; other processes are kept out by the flock.
    io: Mutex<()>,
}

#[derive(Debug, Default)]
struct State {
    /// The file in use; `None` once degraded to memory (or never configured).
    path: Option<PathBuf>,
    loaded: bool,
    /// What this process knows: the file's entries merged with its own
    /// observations, newest per storage.
    mem: BTreeMap<String, Entry>,
    /// What the file held when last read or written.
    disk: BTreeMap<String, Entry>,
    /// The file is unreadable or has loose permissions: write it at the next
    /// flush even if nothing material changed.
    rewrite: bool,
    warnings: Vec<String>,
}

impl StatusCache {
    /// A cache backed by `path` (`None`: memory only). Does no I/O: the file
    /// is read at the first [`StatusCache::load`].
    pub fn new(path: Option<PathBuf>, lifetime: Duration, clock: Arc<dyn Clock>) -> Self {
        StatusCache {
            configured: path.clone(),
            lifetime,
            clock,
            state: Mutex::new(State {
                path,
                ..State::default()
            }),
            io: Mutex::new(()),
        }
    }

    /// The configured file, whether or not it is still in use.
    pub fn path(&self) -> Option<&Path> {
        self.configured.as_deref()
    }

    /// Whether verdicts are still persisted to the file (false when no file
    /// was configured or the cache degraded to memory).
    pub fn is_persistent(&self) -> bool {
        self.state().path.is_some()
    }

    /// The time on this cache's clock (injected in tests).
    pub(crate) fn clock_now(&self) -> SystemTime {
        self.clock.now()
    }

    /// How long a verdict stays fresh.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// The warnings this cache logged so far, for tests and `st status`.
    pub fn warnings(&self) -> Vec<String> {
        self.state().warnings.clone()
    }

    /// Whether the file was read (or found missing) already.
    pub fn is_loaded(&self) -> bool {
        self.state().loaded
    }

    /// Reads the file once; later calls do nothing. Blocking.
    pub fn load(&self) {
        if !self.is_loaded() {
            self.reload();
        }
    }

    /// Reads the file again and merges it into memory, newest observation
    /// per storage winning. Blocking.
    pub fn reload(&self) {
        let Some(path) = self.state().path.clone() else {
            self.state().loaded = true;
            return;
        };
        let _io = lock(&self.io);
        let outcome = read_file(&path);
        let mut st = self.state();
        st.loaded = true;
        match outcome {
            Ok(ReadOutcome::Missing) => st.disk.clear(),
            Ok(ReadOutcome::Valid {
                entries,
                loose_mode,
            }) => {
                merge_into(&mut st.mem, &entries);
                st.disk = entries;
                st.rewrite |= loose_mode;
            }
            Ok(ReadOutcome::Invalid(reason)) => {
                st.disk.clear();
                if !st.rewrite {
                    st.rewrite = true;
                    let msg = format!(
                        "ignoring storage status cache {}: {reason}; it will be rewritten",
                        path.display()
                    );
                    warn(&mut st, msg);
                }
            }
            Err(reason) => degrade(&mut st, &path, &reason),
        }
    }

    /// The entry for storage `name` if it is about the storage identified by
    /// `fingerprint`.
    pub fn entry(&self, name: &str, fingerprint: &str) -> Option<Entry> {
        self.state()
            .mem
            .get(name)
            .filter(|e| e.fingerprint == fingerprint)
            .cloned()
    }

    /// Whether `entry` is fresh now.
    pub fn is_fresh(&self, entry: &Entry) -> bool {
        let now = unix_ms(self.clock.now());
        let lifetime = self.lifetime.as_millis() as u64;
        let observed = entry.observed_at_ms();
        // An observation from the future (a clock stepped back) counts as
        // fresh only within one lifetime, so it cannot pin a verdict forever.
        if observed > now {
            return observed - now < lifetime;
        }
        now - observed < lifetime
    }

    /// The fresh verdict on a storage, or `Unknown`.
    pub fn verdict(&self, name: &str, fingerprint: &str) -> Verdict {
        match self.entry(name, fingerprint) {
            Some(e) if self.is_fresh(&e) => {
                if e.alive {
                    Verdict::Alive
                } else {
                    Verdict::Dead
                }
            }
            _ => Verdict::Unknown,
        }
    }

    /// Records an observation of a storage in memory; [`StatusCache::flush`]
    /// persists it. Returns the status transition it caused. An observation
    /// older than what the cache already holds for the storage is dropped.
    pub fn record(
        &self,
        name: &str,
        fingerprint: &str,
        kind: Observation,
        alive: bool,
        error: Option<&str>,
    ) -> Transition {
        let now = unix_ms(self.clock.now());
        let mut st = self.state();
        let prev = st
            .mem
            .get(name)
            .filter(|e| e.fingerprint == fingerprint)
            .cloned();
        if prev.as_ref().is_some_and(|p| p.observed_at_ms() > now) {
            // The file already holds a later observation (another process
            // was faster); under newest-wins ours would be discarded anyway.
            return Transition::Unchanged;
        }
        let transition = match (&prev, alive) {
            (Some(p), false) if p.alive => Transition::Down,
            (None, false) => Transition::Down,
            (Some(p), true) if !p.alive => Transition::Up,
            _ => Transition::Unchanged,
        };
        let mut entry = prev.unwrap_or_else(|| Entry {
            fingerprint: fingerprint.to_string(),
            alive,
            checked_at_ms: None,
            used_at_ms: None,
            error: None,
        });
        // The observation keeps its own time, never an entry's later one:
        // borrowing it would let an old observation beat a newer one in the
        // merge.
        match kind {
            Observation::Checked => entry.checked_at_ms = Some(now),
            Observation::Used => entry.used_at_ms = Some(now),
        }
        entry.alive = alive;
        entry.error = if alive {
            None
        } else {
            error.map(truncate_error)
        };
        st.mem.insert(name.to_string(), entry);
        transition
    }

    /// Whether [`StatusCache::flush`] would write the file now.
    pub fn needs_flush(&self) -> bool {
        let st = self.state();
        st.path.is_some() && (st.rewrite || !material(&st.mem, &st.disk, self.lifetime).is_empty())
    }

    /// Persists material changes (see the module docs for the rule) with a
    /// locked read-merge-write. Does nothing when nothing material changed.
    /// Never fails: an unusable file degrades the cache to memory. Blocking.
    pub fn flush(&self) {
        if !self.needs_flush() {
            return;
        }
        let _io = lock(&self.io);
        // Take the snapshot under the I/O lock so a concurrent flush's
        // result is already merged in.
        let (path, ours, rewrite) = {
            let st = self.state();
            let Some(path) = st.path.clone() else { return };
            if !st.rewrite && material(&st.mem, &st.disk, self.lifetime).is_empty() {
                return;
            }
            (path, st.mem.clone(), st.rewrite)
        };
        match write_merged(&path, &ours, rewrite) {
            Ok(written) => {
                let mut st = self.state();
                merge_into(&mut st.mem, &written);
                st.disk = written;
                st.rewrite = false;
            }
            Err(WriteError::Busy) => {
                let msg = format!(
                    "storage status cache {} stayed locked for {}s; its update is kept in memory \
                     for this run (check for a stuck walg process)",
                    path.display(),
                    LOCK_WAIT.as_secs()
                );
                warn(&mut self.state(), msg);
            }
            Err(WriteError::Unusable(reason)) => degrade(&mut self.state(), &path, &reason),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

/// Converts a stored timestamp for display.
pub fn to_system_time(ms: u64) -> SystemTime {
    from_unix_ms(ms)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the state consistent between
    // statements; a panic in another thread does not corrupt it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn warn(st: &mut State, msg: String) {
    if st.warnings.contains(&msg) {
        return;
    }
    tracing::warn!("{msg}");
    st.warnings.push(msg);
}

fn degrade(st: &mut State, path: &Path, reason: &str) {
    st.path = None;
    st.rewrite = false;
    let msg = format!(
        "storage status cache {} is unusable: {reason}; keeping storage status in memory for \
         this run (configure a private, writable cache file)",
        path.display()
    );
    warn(st, msg);
}

fn truncate_error(e: &str) -> String {
    if e.len() <= MAX_ERROR_LEN {
        return e.to_string();
    }
    let mut end = MAX_ERROR_LEN;
    while !e.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &e[..end])
}

/// Merges `from` into `into`, keeping the newest observation per storage.
fn merge_into(into: &mut BTreeMap<String, Entry>, from: &BTreeMap<String, Entry>) {
    for (name, theirs) in from {
        match into.get(name) {
            Some(ours) if !theirs.supersedes(ours) => {}
            _ => {
                into.insert(name.clone(), theirs.clone());
            }
        }
    }
}

/// Names of storages whose in-memory entry differs materially from the file.
fn material(
    mem: &BTreeMap<String, Entry>,
    disk: &BTreeMap<String, Entry>,
    lifetime: Duration,
) -> Vec<String> {
    let refresh = (lifetime.as_millis() / 4) as u64;
    mem.iter()
        .filter(|(name, ours)| match disk.get(*name) {
            None => true,
            Some(theirs) if !ours.supersedes(theirs) => false,
            Some(theirs) => {
                theirs.fingerprint != ours.fingerprint
                    || theirs.alive != ours.alive
                    || ours
                        .observed_at_ms()
                        .saturating_sub(theirs.observed_at_ms())
                        >= refresh
            }
        })
        .map(|(name, _)| name.clone())
        .collect()
}

enum ReadOutcome {
    Missing,
    Valid {
        entries: BTreeMap<String, Entry>,
        loose_mode: bool,
    },
    /// Readable but not a valid cache file: ignore it and rewrite it.
    Invalid(String),
}

/// Opens an existing file for reading without following a symbolic link
/// and without blocking on a FIFO someone put at the path.
fn open_nofollow(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
}

/// Opens (creating it 0600) a lock file without following a symbolic link
/// and without blocking on a FIFO; shared by the status cache and the drain.
pub(crate) fn open_lock_file(path: &Path) -> std::io::Result<fs::File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
}

fn is_symlink_error(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc::ELOOP)
}

/// Reads and validates the cache file. `Err` means the location is unusable.
fn read_file(path: &Path) -> Result<ReadOutcome, String> {
    let mut file = match open_nofollow(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ReadOutcome::Missing),
        Err(e) if is_symlink_error(&e) => {
            return Err("it is a symbolic link, which walg does not follow".to_string())
        }
        Err(e) => return Err(format!("cannot open it: {e}")),
    };
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot stat it: {e}"))?;
    if !meta.is_file() {
        return Err("it is not a regular file".to_string());
    }
    let loose_mode = meta.mode() & 0o077 != 0;
    let mut raw = Vec::new();
    (&mut file)
        .take(MAX_FILE_LEN + 1)
        .read_to_end(&mut raw)
        .map_err(|e| format!("cannot read it: {e}"))?;
    Ok(match parse(&raw) {
        Ok(entries) => ReadOutcome::Valid {
            entries,
            loose_mode,
        },
        Err(reason) => ReadOutcome::Invalid(reason),
    })
}

/// Parses the file content, saying why it is not a valid cache file.
fn parse(raw: &[u8]) -> Result<BTreeMap<String, Entry>, String> {
    if raw.len() as u64 > MAX_FILE_LEN {
        return Err(format!(
            "it is larger than {MAX_FILE_LEN} bytes, not a walg status file"
        ));
    }
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Err("it is empty (an interrupted write?)".to_string());
    }
    let value: serde_json::Value = serde_json::from_slice(raw).map_err(|e| {
        format!("it is not valid JSON ({e}); a torn write or another program's file")
    })?;
    match value.get("format").and_then(|f| f.as_str()) {
        Some(FORMAT) => {}
        _ => {
            return Err(format!(
                "it is not a walg storage status file (no \"format\": \"{FORMAT}\")"
            ))
        }
    }
    match value.get("version").and_then(|v| v.as_u64()) {
        Some(v) if v == u64::from(VERSION) => {}
        Some(v) => {
            return Err(format!(
                "it has format version {v}, this walg reads version {VERSION}"
            ))
        }
        None => return Err("it has no format version".to_string()),
    }
    let file: CacheFile =
        serde_json::from_value(value).map_err(|e| format!("it has malformed entries ({e})"))?;
    Ok(file.storages)
}

fn render(entries: &BTreeMap<String, Entry>) -> Result<Vec<u8>, String> {
    let file = CacheFile {
        format: FORMAT.to_string(),
        version: VERSION,
        storages: entries.clone(),
    };
    let mut out = serde_json::to_vec_pretty(&file).map_err(|e| format!("cannot encode it: {e}"))?;
    out.push(b'\n');
    Ok(out)
}

enum WriteError {
    /// Another process held the lock too long; try again at the next flush.
    Busy,
    /// The location cannot be used at all.
    Unusable(String),
}

/// Read-merge-write under the lock. Returns what the file holds afterwards.
fn write_merged(
    path: &Path,
    ours: &BTreeMap<String, Entry>,
    force: bool,
) -> Result<BTreeMap<String, Entry>, WriteError> {
    let unusable = WriteError::Unusable;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| unusable("the path has no file name".to_string()))?
        .to_string_lossy()
        .into_owned();
    if !dir.exists() {
        // Only the directories created here get 0700; existing ones are the
        // user's choice.
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| unusable(format!("cannot create directory {}: {e}", dir.display())))?;
    }

    let lock_path = dir.join(format!("{file_name}.lock"));
    let lock_file = open_lock_file(&lock_path).map_err(|e| {
        if is_symlink_error(&e) {
            unusable(format!(
                "its lock file {} is a symbolic link",
                lock_path.display()
            ))
        } else {
            unusable(format!(
                "cannot open lock file {}: {e}",
                lock_path.display()
            ))
        }
    })?;
    match lock_file.metadata() {
        Ok(m) if m.is_file() => {}
        Ok(_) => {
            return Err(unusable(format!(
                "lock file {} is not a regular file",
                lock_path.display()
            )))
        }
        Err(e) => {
            return Err(unusable(format!(
                "cannot stat lock file {}: {e}",
                lock_path.display()
            )))
        }
    }
    acquire(&lock_file, &lock_path)?;

    // Under the lock: read what other processes wrote and merge.
    let (mut merged, valid) = match read_file(path) {
        Ok(ReadOutcome::Missing) => (BTreeMap::new(), false),
        Ok(ReadOutcome::Valid {
            entries,
            loose_mode,
        }) => (entries, !loose_mode),
        Ok(ReadOutcome::Invalid(_)) => (BTreeMap::new(), false),
        Err(reason) => return Err(unusable(reason)),
    };
    let before = merged.clone();
    merge_into(&mut merged, ours);
    if valid && !force && merged == before {
        return Ok(merged);
    }

    let bytes = render(&merged).map_err(unusable)?;
    let tmp = dir.join(format!(
        ".{file_name}.{}.{}.tmp",
        std::process::id(),
        unix_nanos_now()
    ));
    if let Err(e) = write_new_file(&tmp, &bytes) {
        let _ = fs::remove_file(&tmp);
        return Err(unusable(format!("cannot write {}: {e}", tmp.display())));
    }
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(unusable(format!(
            "cannot rename {} into place: {e}",
            tmp.display()
        )));
    }
    // Make the rename itself durable. Some file systems refuse fsync on a
    // directory; the data is still in place, so this is not an error.
    if let Err(e) = File::open(&dir).and_then(|d| d.sync_all()) {
        tracing::debug!("fsync of directory {} failed: {e}", dir.display());
    }
    drop(lock_file);
    Ok(merged)
}

/// Takes the exclusive lock, waiting at most [`LOCK_WAIT`].
fn acquire(file: &File, path: &Path) -> Result<(), WriteError> {
    match lock_within(file, LOCK_WAIT) {
        Ok(true) => Ok(()),
        Ok(false) => Err(WriteError::Busy),
        Err(e) => Err(WriteError::Unusable(format!(
            "cannot lock {}: {e}",
            path.display()
        ))),
    }
}

/// Takes `file`'s exclusive lock, waiting at most `wait`; `Ok(false)` when
/// another process kept it that long.
pub(crate) fn lock_within(file: &File, wait: Duration) -> std::io::Result<bool> {
    let deadline = Instant::now() + wait;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(true),
            Err(fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(fs::TryLockError::WouldBlock) => return Ok(false),
            Err(fs::TryLockError::Error(e)) => return Err(e),
        }
    }
}

fn write_new_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn unix_nanos_now() -> u128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
