//! The drain journal of one failover storage: which WAL files were written
//! to it while the primary did not take them, so a later `wal-push` knows
//! what to copy back without listing any storage.
//!
//! The file is a JSON line per record under the drain directory (next to
//! the status cache): a header naming the storage and its fingerprint, then
//! `{"add": KEY, "at_ms": T}` when a file lands on the failover only, and
//! `{"done": KEY}` once the primary holds a verified copy. Appends take an
//! exclusive `flock` on the file itself and check, under the lock, that the
//! path still names the file they opened (a compaction may have renamed a
//! new file over it), so no record is written into an unlinked file.
//! Compaction and rebuilds write a temporary file, fsync it and rename it
//! over the journal, then fsync the directory.
//!
//! A journal is trusted only when every line parses and the last one ends
//! with a newline: a torn append, a foreign header or a failed append (which
//! leaves a `<journal>.rebuild` marker beside it) makes it damaged, and the
//! drain rebuilds it from a listing. A missing journal is normal on a new
//! host and is also rebuilt, once.
//!
//! What this module does not do: talk to a storage or decide what to copy;
//! see [`crate::drain`]. Its file I/O is blocking.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The `format` field of a journal's header.
pub const FORMAT: &str = "walg-drain-journal";
/// The header `version` this walg reads and writes.
pub const VERSION: u32 = 1;
/// A larger file is not a journal walg wrote (a million records is ~80 MB).
const MAX_FILE_LEN: u64 = 256 << 20;
/// How long an append waits for another process's lock.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// One file waiting on a failover storage to be copied back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pending {
    /// The object's key (`wal_005/<name>.<ext>`).
    pub key: String,
    /// When it was recorded (Unix milliseconds).
    pub since_ms: u64,
}

/// What reading a journal gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loaded {
    /// No journal: never written on this host, or lost.
    Missing,
    /// Unreadable, torn, foreign or marked for a rebuild: not to be trusted.
    Damaged(String),
    /// The files waiting, by key.
    Valid(BTreeMap<String, Pending>),
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    format: String,
    version: u32,
    storage: String,
    fingerprint: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    add: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    done: Option<String>,
}

/// The journal of one failover storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Journal {
    path: PathBuf,
    storage: String,
    fingerprint: String,
}

impl Journal {
    /// The journal of storage `name` (identified by `fingerprint`) under
    /// `dir`. The file name carries a hash of the fingerprint, so a
    /// storage renamed to point elsewhere gets a journal of its own.
    pub fn new(dir: &Path, name: &str, fingerprint: &str) -> Journal {
        let safe: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Journal {
            path: dir.join(format!("{safe}-{:016x}.journal", fnv1a(fingerprint))),
            storage: name.to_string(),
            fingerprint: fingerprint.to_string(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn storage(&self) -> &str {
        &self.storage
    }

    /// The marker a failed append leaves: the journal misses a record.
    fn marker(&self) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(".rebuild");
        PathBuf::from(p)
    }

    /// Reads the journal.
    pub fn load(&self) -> Loaded {
        if fs::symlink_metadata(self.marker()).is_ok() {
            return Loaded::Damaged("a record could not be written to it".to_string());
        }
        let raw = match read_nofollow(&self.path) {
            Ok(Some(raw)) => raw,
            Ok(None) => return Loaded::Missing,
            Err(e) => return Loaded::Damaged(e),
        };
        match self.parse(&raw, false) {
            Ok(entries) => Loaded::Valid(entries),
            Err(e) => Loaded::Damaged(e),
        }
    }

    /// Parses a journal; `lenient` keeps what parses (for a rebuild's union).
    fn parse(&self, raw: &[u8], lenient: bool) -> Result<BTreeMap<String, Pending>, String> {
        let text = std::str::from_utf8(raw).map_err(|_| "it is not text".to_string())?;
        if !lenient && !text.is_empty() && !text.ends_with('\n') {
            return Err("its last record is torn (an interrupted write)".to_string());
        }
        let mut lines = text.lines();
        let header = match lines.next() {
            None => return Err("it is empty".to_string()),
            Some(h) => serde_json::from_str::<Header>(h)
                .map_err(|e| format!("its header is not a walg drain journal's ({e})"))?,
        };
        if header.format != FORMAT || header.version != VERSION {
            return Err(format!(
                "it is not a version {VERSION} {FORMAT} (found {} version {})",
                header.format, header.version
            ));
        }
        if header.fingerprint != self.fingerprint {
            return Err(format!(
                "it is about another storage ({})",
                header.fingerprint
            ));
        }
        let mut out = BTreeMap::new();
        for (n, line) in lines.enumerate() {
            let rec = match serde_json::from_str::<Line>(line) {
                Ok(r) => r,
                Err(_) if lenient => continue,
                Err(e) => return Err(format!("record {} is malformed ({e})", n + 2)),
            };
            match (rec.add, rec.done) {
                (Some(key), None) => {
                    let since_ms = rec.at_ms.unwrap_or(0);
                    out.entry(key.clone()).or_insert(Pending { key, since_ms });
                }
                (None, Some(key)) => {
                    out.remove(&key);
                }
                _ if lenient => {}
                _ => return Err(format!("record {} is neither add nor done", n + 2)),
            }
        }
        Ok(out)
    }

    /// Records that `keys` were written to this storage only. On failure a
    /// marker is left (when even that is possible) so the next drain
    /// rebuilds the journal from a listing.
    pub fn add(&self, keys: &[&str], at_ms: u64) -> Result<(), String> {
        let lines: Vec<Line> = keys
            .iter()
            .map(|k| Line {
                add: Some(k.to_string()),
                at_ms: Some(at_ms),
                done: None,
            })
            .collect();
        self.append(&lines).inspect_err(|_| self.mark_damaged())
    }

    /// Records that `keys` no longer wait (the primary holds verified
    /// copies). A failure leaves them in the journal: draining them again
    /// finds them on the primary.
    pub fn done(&self, keys: &[&str]) -> Result<(), String> {
        let lines: Vec<Line> = keys
            .iter()
            .map(|k| Line {
                done: Some(k.to_string()),
                ..Line::default()
            })
            .collect();
        self.append(&lines)
    }

    pub(crate) fn mark_damaged(&self) {
        let _ = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(self.marker());
    }

    fn header_line(&self) -> String {
        let h = Header {
            format: FORMAT.to_string(),
            version: VERSION,
            storage: self.storage.clone(),
            fingerprint: self.fingerprint.clone(),
        };
        format!("{}\n", serde_json::to_string(&h).unwrap_or_default())
    }

    fn append(&self, lines: &[Line]) -> Result<(), String> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut text = String::new();
        for l in lines {
            text.push_str(&serde_json::to_string(l).map_err(|e| e.to_string())?);
            text.push('\n');
        }
        let file = self.open_locked()?;
        let mut file = file;
        let len = file.metadata().map_err(|e| e.to_string())?.len();
        if len == 0 {
            text.insert_str(0, &self.header_line());
        }
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_data())
            .map_err(|e| format!("cannot append to {}: {e}", self.path.display()))?;
        if len == 0 {
            sync_dir(&self.path);
        }
        Ok(())
    }

    /// Opens the journal for appending, creating it (and its directory),
    /// with the lock held and the path still naming the opened file.
    fn open_locked(&self) -> Result<File, String> {
        let dir = parent(&self.path);
        if !dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|e| format!("cannot create directory {}: {e}", dir.display()))?;
        }
        for _ in 0..5 {
            let file = OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(&self.path)
                .map_err(|e| format!("cannot open {}: {e}", self.path.display()))?;
            lock(&file, &self.path)?;
            let ours = file.metadata().map_err(|e| e.to_string())?;
            if !ours.is_file() {
                return Err(format!("{} is not a regular file", self.path.display()));
            }
            match fs::symlink_metadata(&self.path) {
                Ok(now) if now.ino() == ours.ino() && now.dev() == ours.dev() => return Ok(file),
                // Replaced by a compaction while we waited: open the new one.
                _ => continue,
            }
        }
        Err(format!(
            "{} kept being replaced while walg opened it",
            self.path.display()
        ))
    }

    /// Rewrites the journal with only what still waits, plus `extra`
    /// (a rebuild's findings), merged with whatever parses in the current
    /// file (a record appended after a rebuild's listing must survive it),
    /// and clears the rebuild marker. Returns what the journal now holds.
    pub fn rewrite(
        &self,
        extra: &BTreeMap<String, Pending>,
    ) -> Result<BTreeMap<String, Pending>, String> {
        let lock_file = self.open_locked()?;
        let current = read_nofollow(&self.path)
            .ok()
            .flatten()
            .and_then(|raw| self.parse(&raw, true).ok())
            .unwrap_or_default();
        let mut merged = current;
        for (k, p) in extra {
            merged.entry(k.clone()).or_insert_with(|| p.clone());
        }
        let mut text = self.header_line();
        for p in merged.values() {
            let l = Line {
                add: Some(p.key.clone()),
                at_ms: Some(p.since_ms),
                done: None,
            };
            text.push_str(&serde_json::to_string(&l).map_err(|e| e.to_string())?);
            text.push('\n');
        }
        let dir = parent(&self.path);
        let tmp = dir.join(format!(
            ".{}.{}.tmp",
            self.path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            std::process::id()
        ));
        let written = (|| -> std::io::Result<()> {
            let _ = fs::remove_file(&tmp);
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, &self.path)
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(format!("cannot rewrite {}: {e}", self.path.display()));
        }
        sync_dir(&self.path);
        drop(lock_file);
        let _ = fs::remove_file(self.marker());
        Ok(merged)
    }
}

/// The directory of a path (`.` for a bare name).
fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn sync_dir(path: &Path) {
    if let Err(e) = File::open(parent(path)).and_then(|d| d.sync_all()) {
        tracing::debug!("fsync of the directory of {}: {e}", path.display());
    }
}

/// Reads a whole file without following a symbolic link; `None` if absent.
fn read_nofollow(path: &Path) -> Result<Option<Vec<u8>>, String> {
    let mut f = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot open it: {e}")),
    };
    let meta = f.metadata().map_err(|e| format!("cannot stat it: {e}"))?;
    if !meta.is_file() {
        return Err("it is not a regular file".to_string());
    }
    if meta.len() > MAX_FILE_LEN {
        return Err(format!("it is larger than {MAX_FILE_LEN} bytes"));
    }
    let mut raw = Vec::new();
    f.read_to_end(&mut raw)
        .map_err(|e| format!("cannot read it: {e}"))?;
    Ok(Some(raw))
}

/// Takes the exclusive lock on `file`, waiting at most [`LOCK_WAIT`].
fn lock(file: &File, path: &Path) -> Result<(), String> {
    match crate::cache::lock_within(file, LOCK_WAIT) {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!(
            "{} stayed locked for {}s",
            path.display(),
            LOCK_WAIT.as_secs()
        )),
        Err(e) => Err(format!("cannot lock {}: {e}", path.display())),
    }
}

/// FNV-1a, 64 bits: a stable, dependency-free hash for file names.
fn fnv1a(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}
