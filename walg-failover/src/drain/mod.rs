//! Drain-back: WAL that went to a failover storage while the primary was
//! down returns to the primary by itself, in the background of later
//! `wal-push` calls.
//!
//! What it owns:
//!
//! - [`journal`]: per failover storage, a small durable record of the files
//!   written there that the primary did not take. [`crate::FailoverStore`]
//!   appends to it after such a write (a failed append never fails the
//!   write: it marks the journal for a rebuild).
//! - [`drain`]: one bounded pass (at most [`DrainConfig::max_files`] files
//!   and [`DrainConfig::max_time`]) that copies journaled files to the
//!   primary in WAL order (`.history` first), each with create-if-absent,
//!   then reads the primary's copy back and compares it byte for byte with
//!   the failover's (as `wal-repair` does, streamed, never a whole file in
//!   memory), and only then, with [`DrainMode::Move`], deletes the
//!   failover's copy and marks the record done.
//! - [`backlog`]: what waits, per failover storage, for `wal-status` and
//!   `walg st status`, read from the journals alone.
//!
//! Invariants:
//!
//! - A file is deleted from a failover only after the primary answered
//!   with a copy identical to it; a crash at any step leaves it on both
//!   storages or on the failover, never on neither.
//! - A journal is never trusted blindly: a missing one is rebuilt from a
//!   listing (the failover's; in copy mode also the primary's, for
//!   `wal-repair`'s plan), a damaged one too, with one warning.
//!   A journaled file that is on no storage any more is dropped with a
//!   warning; one whose copies differ is left on both with a warning.
//! - One drainer at a time per drain directory: a non-blocking `flock` on
//!   `drain.lock`; a process that cannot take it does not drain.
//! - A drain never fails its caller: a primary that fails stops the pass
//!   (recorded in the health model, logged once at INFO), a failover that
//!   fails is skipped. Two hosts draining the same archive each copy with
//!   create-if-absent, so a file is stored once and compared by both.
//!
//! What it does not do: choose where a push goes (that is the failover
//! policy), read settings, or run on its own: the caller (`wal-push`)
//! starts a pass and bounds the wait.

pub mod journal;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use walg_core::archive::list_archive;
use walg_core::pipeline::share::{Admitted, TransferShare};
use walg_core::store::DynStore;
use walg_core::wal::layout::parse_wal_key;
use walg_core::{Body, ByteStream, ErrorKind, PutOptions, StoreError, WalName};

use crate::clock::unix_ms;
use crate::failover::FailoverStore;
use journal::{Journal, Loaded, Pending};

/// The lock file a drainer holds under the drain directory.
pub const LOCK_FILE: &str = "drain.lock";
/// The drain directory's name beside the status cache file.
pub const DIR_NAME: &str = "drain";

/// What happens to a failover's copy once the primary holds a verified one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DrainMode {
    /// Keep it (the failover stays a second copy).
    Copy,
    /// Delete it.
    Move,
    /// No drain: files stay on the failover until `wal-repair`.
    Off,
}

impl DrainMode {
    pub fn as_str(self) -> &'static str {
        match self {
            DrainMode::Copy => "copy",
            DrainMode::Move => "move",
            DrainMode::Off => "off",
        }
    }
}

/// Settings of the drain, as plain values (the CLI reads
/// `WALG_FAILOVER_STORAGES_DRAIN*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrainConfig {
    /// `None`: copy for an ordinary failover, move for a spill storage.
    /// `Some(Off)` turns every drain and journal off; `Some(Copy | Move)`
    /// applies to ordinary failovers (a spill storage is always moved).
    pub mode: Option<DrainMode>,
    /// Files copied back per pass at most.
    pub max_files: usize,
    /// How long one pass may run.
    pub max_time: Duration,
    /// Where the journals and the drain lock live; `None` disables both.
    pub dir: Option<PathBuf>,
}

impl Default for DrainConfig {
    fn default() -> Self {
        DrainConfig {
            mode: None,
            max_files: 32,
            max_time: Duration::from_secs(10),
            dir: None,
        }
    }
}

impl DrainConfig {
    /// The mode of a failover storage.
    pub fn mode_of(&self, spill: bool) -> DrainMode {
        match (self.mode, spill) {
            (Some(DrainMode::Off), _) => DrainMode::Off,
            (_, true) => DrainMode::Move,
            (Some(m), false) => m,
            (None, false) => DrainMode::Copy,
        }
    }
}

/// The drain directory beside a status cache file.
pub fn dir_beside(cache_file: &Path) -> Option<PathBuf> {
    cache_file.parent().map(|d| d.join(DIR_NAME))
}

/// What one pass did on one failover storage.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StorageDrain {
    pub storage: String,
    pub mode: Option<DrainMode>,
    /// Copied to the primary and verified.
    pub copied: u64,
    pub bytes: u64,
    /// Already on the primary (another drainer, or a crash after the copy)
    /// and verified identical.
    pub already_present: u64,
    /// Deleted from the failover after verification (move).
    pub removed: u64,
    /// Journaled but on no storage any more, dropped.
    pub vanished: u64,
    /// Copies that differ: left on both.
    pub differ: Vec<String>,
    /// Records the journal still holds after the pass.
    pub remaining: u64,
    /// The journal was rebuilt from a listing, with this many records.
    pub rebuilt: Option<u64>,
    /// Why the pass stopped early on this storage.
    pub stopped: Option<String>,
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DrainReport {
    /// Why nothing was attempted (off, nothing waits, the primary is down,
    /// another process drains).
    pub skipped: Option<String>,
    pub storages: Vec<StorageDrain>,
    /// The pass hit its time bound.
    pub timed_out: bool,
    /// How long the pass took, in milliseconds (lock to last record).
    pub elapsed_ms: u64,
}

impl DrainReport {
    fn skip(reason: impl Into<String>) -> DrainReport {
        DrainReport {
            skipped: Some(reason.into()),
            ..DrainReport::default()
        }
    }

    /// Files copied or found present and verified, over every storage.
    pub fn drained(&self) -> u64 {
        self.storages
            .iter()
            .map(|s| s.copied + s.already_present)
            .sum()
    }
}

/// What waits on one failover storage, from its journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Backlog {
    pub storage: String,
    pub mode: DrainMode,
    /// Whether the storage is a spill storage.
    pub spill: bool,
    /// `ok`, `missing` (no journal yet: the next drain lists the storage)
    /// or `damaged` (the next drain rebuilds it from a listing).
    pub journal: &'static str,
    /// The reason the journal is damaged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// Files waiting to be copied back to the primary.
    pub files: u64,
    /// When the oldest of them was written (Unix milliseconds).
    pub oldest_since_ms: Option<u64>,
    /// The oldest file's key.
    pub oldest_key: Option<String>,
}

/// What waits on each failover storage of `store`, read from the journals
/// alone (no storage request). Empty without a drain directory.
pub fn backlog(store: &FailoverStore) -> Vec<Backlog> {
    let cfg = &store.config().drain;
    let Some(dir) = &cfg.dir else {
        return Vec::new();
    };
    store.members()[1..]
        .iter()
        .map(|m| {
            let j = Journal::new(dir, m.name(), m.fingerprint());
            let mut b = Backlog {
                storage: m.name().to_string(),
                mode: cfg.mode_of(m.is_spill()),
                spill: m.is_spill(),
                journal: "ok",
                problem: None,
                files: 0,
                oldest_since_ms: None,
                oldest_key: None,
            };
            match j.load() {
                Loaded::Missing => b.journal = "missing",
                Loaded::Damaged(e) => {
                    b.journal = "damaged";
                    b.problem = Some(e);
                }
                Loaded::Valid(entries) => {
                    b.files = entries.len() as u64;
                    if let Some(p) = entries.values().min_by_key(|p| (p.since_ms, order(&p.key))) {
                        b.oldest_since_ms = Some(p.since_ms);
                        b.oldest_key = Some(p.key.clone());
                    }
                }
            }
            b
        })
        .collect()
}

/// WAL order of a key: `.history` first, then timeline, position, kind.
fn order(key: &str) -> (u8, u32, u32, u32, u8, u32) {
    match parse_wal_key(key).map(|(n, _)| n) {
        Some(WalName::History { timeline }) => (0, timeline, 0, 0, 0, 0),
        Some(WalName::Segment(s)) => (1, s.timeline, s.log, s.seg, 0, 0),
        Some(WalName::Partial(s)) => (1, s.timeline, s.log, s.seg, 1, 0),
        Some(WalName::Backup { segment: s, offset }) => (1, s.timeline, s.log, s.seg, 2, offset),
        None => (2, 0, 0, 0, 0, 0),
    }
}

/// Whether a key is a WAL file a drain copies back.
pub fn is_wal_key(key: &str) -> bool {
    parse_wal_key(key).is_some()
}

/// Runs one bounded pass over every failover storage of `store`. Never
/// fails: what went wrong is in the report and logged once.
pub async fn drain(store: &FailoverStore) -> DrainReport {
    drain_within(store, None).await
}

/// Where a drain's copies stand among the transfers of a [`TransferShare`]:
/// after every file the call pushes (a drain is never the transfer
/// PostgreSQL waits for).
pub const DRAIN_ORDER: u64 = u64::MAX;

/// [`drain`] beside the pushes of the same process: each object copied
/// back to the primary is counted in `share` (the memory the files pushed
/// ahead share) and waits for room while other transfers are in flight,
/// so a drain running beside an upload-ahead backlog adds nothing to the
/// process's bound. Alone, it is the oldest in flight and never waits.
pub async fn drain_within(store: &FailoverStore, share: Option<Arc<TransferShare>>) -> DrainReport {
    let cfg = store.config().drain.clone();
    let Some(dir) = cfg.dir.clone() else {
        return DrainReport::skip("no drain directory (no status cache file)");
    };
    if cfg.mode == Some(DrainMode::Off) {
        return DrainReport::skip("WALG_FAILOVER_STORAGES_DRAIN is off");
    }
    if store.members().len() < 2 || !store.primary_active() {
        return DrainReport::skip("no failover storage");
    }
    // The common case reads one small file per failover and stops here.
    let journals: Vec<(usize, Journal, Loaded)> = (1..store.members().len())
        .map(|i| {
            let m = &store.members()[i];
            let j = Journal::new(&dir, m.name(), m.fingerprint());
            let loaded = j.load();
            (i, j, loaded)
        })
        .filter(|(i, _, loaded)| {
            !matches!(loaded, Loaded::Valid(e) if e.is_empty())
                && cfg.mode_of(store.members()[*i].is_spill()) != DrainMode::Off
        })
        .collect();
    if journals.is_empty() {
        return DrainReport::skip("nothing waits on a failover storage");
    }
    if store.primary_known_dead().await {
        return DrainReport::skip("the primary storage is down");
    }
    let _lock = match take_lock(&dir) {
        Ok(Some(l)) => l,
        Ok(None) => return DrainReport::skip("another walg process is draining"),
        Err(e) => {
            tracing::info!("drain back to the primary skipped: {e}");
            return DrainReport::skip(e);
        }
    };
    let started = std::time::Instant::now();
    let mut report = DrainReport::default();
    let pass = run(store, &cfg, journals, share.as_ref(), &mut report);
    if tokio::time::timeout(cfg.max_time, pass).await.is_err() {
        report.timed_out = true;
    }
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    report
}

/// Takes the drain lock without waiting; `None` when another process holds it.
fn take_lock(dir: &Path) -> Result<Option<fs::File>, String> {
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let path = dir.join(LOCK_FILE);
    let f = crate::cache::open_lock_file(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    match f.try_lock() {
        Ok(()) => Ok(Some(f)),
        Err(fs::TryLockError::WouldBlock) => Ok(None),
        Err(fs::TryLockError::Error(e)) => Err(format!("cannot lock {}: {e}", path.display())),
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(f).await.ok()
}

async fn run(
    store: &FailoverStore,
    cfg: &DrainConfig,
    journals: Vec<(usize, Journal, Loaded)>,
    share: Option<&Arc<TransferShare>>,
    report: &mut DrainReport,
) {
    let primary = store.members()[0].store().clone();
    let mut budget = cfg.max_files;
    for (i, journal, loaded) in journals {
        let member = &store.members()[i];
        let mode = cfg.mode_of(member.is_spill());
        let source = member.store().clone();
        report.storages.push(StorageDrain {
            storage: member.name().to_string(),
            mode: Some(mode),
            ..StorageDrain::default()
        });
        let r = report.storages.last_mut().expect("just pushed");
        let entries = match loaded {
            Loaded::Valid(e) => e,
            Loaded::Missing | Loaded::Damaged(_) => {
                let damaged = match &loaded {
                    Loaded::Damaged(why) => Some(why.clone()),
                    _ => None,
                };
                match rebuild(store, &journal, &primary, &source, mode).await {
                    Ok(entries) => {
                        r.rebuilt = Some(entries.len() as u64);
                        match damaged {
                            Some(why) => tracing::warn!(
                                storage = member.name(),
                                "drain journal {} of storage {:?} was not trusted ({why}); rebuilt it from a listing: {} file(s) to copy back to the primary",
                                journal.path().display(), member.name(), entries.len()
                            ),
                            None if !entries.is_empty() => tracing::warn!(
                                storage = member.name(),
                                "no drain journal for storage {:?} ({}); a listing found {} file(s) the primary may lack, copying them back",
                                member.name(), journal.path().display(), entries.len()
                            ),
                            None => {}
                        }
                        entries
                    }
                    Err(e) => {
                        tracing::info!(storage = member.name(), "drain journal of storage {:?} could not be rebuilt now: {e}; the next wal-push tries again (or run walg wal-repair)", member.name());
                        r.stopped = Some(e);
                        continue;
                    }
                }
            }
        };
        let mut todo: Vec<Pending> = entries.into_values().collect();
        todo.sort_by_key(|p| order(&p.key));
        r.remaining = todo.len() as u64;
        for p in todo {
            if budget == 0 {
                break;
            }
            budget -= 1;
            match copy_back(&source, &primary, &p.key, share).await {
                Ok(outcome) => {
                    store.observe_primary(Ok(())).await;
                    match outcome {
                        Outcome::Copied(n) => {
                            r.copied += 1;
                            r.bytes += n;
                        }
                        Outcome::Present => r.already_present += 1,
                        Outcome::Vanished => {
                            r.vanished += 1;
                            tracing::warn!(storage = member.name(), "{} was journaled on storage {:?} but neither it nor the primary holds it any more (removed by hand?); dropped from the journal (walg wal-verify shows any gap)", p.key, member.name());
                        }
                        Outcome::OnPrimaryOnly => {}
                        Outcome::Differs => {
                            tracing::warn!(storage = member.name(), "{} on the primary differs from the copy on storage {:?}; left both in place and dropped it from the drain journal: compare them (walg wal-verify)", p.key, member.name());
                            r.differ.push(p.key.clone());
                        }
                    }
                    if matches!(outcome, Outcome::Copied(_) | Outcome::Present)
                        && mode == DrainMode::Move
                    {
                        match source.delete(&p.key).await {
                            Ok(()) => r.removed += 1,
                            Err(e) => {
                                // Verified on the primary; the failover keeps a
                                // copy until the next pass deletes it.
                                tracing::info!(storage = member.name(), "drain: could not remove {} from storage {:?} after its verified copy: {e}", p.key, member.name());
                                r.stopped = Some(e.to_string());
                                break;
                            }
                        }
                    }
                    let j = journal.clone();
                    let key = p.key.clone();
                    match blocking(move || j.done(&[&key])).await {
                        Some(Ok(())) => r.remaining = r.remaining.saturating_sub(1),
                        Some(Err(e)) => tracing::debug!("drain journal: {e}"),
                        None => {}
                    }
                }
                Err(Fail::Primary(e)) => {
                    store.observe_primary(Err(&e)).await;
                    tracing::info!("drain back to the primary stopped: {e}; {} file(s) wait on {:?} for the next wal-push", r.remaining, member.name());
                    r.stopped = Some(e.to_string());
                    return;
                }
                Err(Fail::Source(e)) => {
                    tracing::info!(storage = member.name(), "drain from storage {:?} stopped: {e}; its files wait for the next wal-push", member.name());
                    r.stopped = Some(e.to_string());
                    break;
                }
            }
        }
        // Keep the journal short: rewrite it with what still waits.
        let j = journal.clone();
        if let Some(Ok(left)) = blocking(move || j.rewrite(&BTreeMap::new())).await {
            r.remaining = left.len() as u64;
        }
    }
}

/// Rebuilds a journal from a listing: the files on `source` that the
/// primary lacks (`wal-repair`'s plan), and in move mode every WAL file on
/// `source` (those on both still need their failover copy verified and
/// removed). The failover is listed first: an empty one (the usual case on
/// a new host) and move mode spare the primary's listing, which can be
/// long on a large archive.
async fn rebuild(
    store: &FailoverStore,
    journal: &Journal,
    primary: &DynStore,
    source: &DynStore,
    mode: DrainMode,
) -> Result<BTreeMap<String, Pending>, String> {
    let failed = |map: &walg_core::archive::ArchiveMap| {
        map.storages().iter().find_map(|s| {
            s.error
                .as_ref()
                .map(|e| format!("could not list storage {:?}: {e}", s.name))
        })
    };
    let own = vec![(journal.storage().to_string(), source.clone())];
    let map = list_archive(&own, &|_, _| {}).await;
    if let Some(e) = failed(&map) {
        return Err(e);
    }
    let now = unix_ms(SystemTime::now());
    let mut found = BTreeMap::new();
    if mode == DrainMode::Move {
        for c in map.copies() {
            let key = c.key();
            found.insert(key.clone(), Pending { key, since_ms: now });
        }
    } else if !map.copies().is_empty() {
        let both = vec![
            (store.members()[0].name().to_string(), primary.clone()),
            own[0].clone(),
        ];
        let map = list_archive(&both, &|_, _| {}).await;
        if let Some(e) = failed(&map) {
            return Err(e);
        }
        for copies in map.files() {
            if copies.iter().any(|c| c.storage == 0) {
                continue;
            }
            for c in copies.iter().filter(|c| c.storage == 1) {
                let key = c.key();
                found.insert(key.clone(), Pending { key, since_ms: now });
            }
        }
    }
    let j = journal.clone();
    blocking(move || j.rewrite(&found))
        .await
        .ok_or_else(|| "the journal task failed".to_string())?
}

enum Outcome {
    /// Copied, with the stored size, and verified.
    Copied(u64),
    /// The primary already held an identical copy.
    Present,
    /// Not on the failover any more, but on the primary.
    OnPrimaryOnly,
    /// On neither storage.
    Vanished,
    /// The primary holds a different object under the key.
    Differs,
}

enum Fail {
    Primary(StoreError),
    Source(StoreError),
}

/// Copies one object to the primary (create-if-absent) and verifies it;
/// within `share` when given (see [`drain_within`]).
async fn copy_back(
    source: &DynStore,
    primary: &DynStore,
    key: &str,
    share: Option<&Arc<TransferShare>>,
) -> Result<Outcome, Fail> {
    let meta = match source.stat(key).await {
        Ok(m) => m,
        Err(e) if e.kind == ErrorKind::NotFound => {
            return match primary.stat(key).await {
                Ok(_) => Ok(Outcome::OnPrimaryOnly),
                Err(e) if e.kind == ErrorKind::NotFound => Ok(Outcome::Vanished),
                Err(e) => Err(Fail::Primary(e)),
            }
        }
        Err(e) => return Err(Fail::Source(e)),
    };
    let body = SourceBody {
        store: source.clone(),
        key: key.to_string(),
        size: meta.size,
    };
    let admitted = match share {
        Some(share) => Some(Admitted::new(
            &body,
            Arc::new(share.admit(DRAIN_ORDER, 0).await),
        )),
        None => None,
    };
    let put_body: &dyn Body = match &admitted {
        Some(a) => a,
        None => &body,
    };
    let copied = match primary
        .put(
            key,
            put_body,
            PutOptions {
                if_not_exists: true,
            },
        )
        .await
    {
        Ok(()) => true,
        Err(e) if e.kind == ErrorKind::Conflict => false,
        Err(e) => return Err(Fail::Primary(e)),
    };
    // The primary holds the object now: what the put held is given back
    // before the comparison, which holds a chunk of each side at most.
    drop(admitted);
    let theirs = match primary.get(key).await {
        Ok(s) => s,
        Err(e) => return Err(Fail::Primary(e)),
    };
    let ours = match source.get(key).await {
        Ok(s) => s,
        Err(e) if e.kind == ErrorKind::NotFound => {
            // Another drainer verified the primary's copy and moved it
            // meanwhile: the primary holds a copy.
            return Ok(if copied {
                Outcome::Copied(meta.size)
            } else {
                Outcome::OnPrimaryOnly
            });
        }
        Err(e) => return Err(Fail::Source(e)),
    };
    match same_bytes(ours, theirs).await {
        Ok(true) if copied => Ok(Outcome::Copied(meta.size)),
        Ok(true) => Ok(Outcome::Present),
        Ok(false) => Ok(Outcome::Differs),
        Err(e) => Err(Fail::Primary(e)),
    }
}

/// A body read from another store each time it is opened.
struct SourceBody {
    store: DynStore,
    key: String,
    size: u64,
}

impl Body for SourceBody {
    fn open(&self) -> ByteStream {
        let store = self.store.clone();
        let key = self.key.clone();
        Box::pin(futures::stream::once(async move { store.get(&key).await }).try_flatten())
    }
    fn len_hint(&self) -> Option<u64> {
        Some(self.size)
    }
}

/// Compares two streams byte for byte, whatever their chunking, holding at
/// most one chunk of each.
pub(crate) async fn same_bytes(mut a: ByteStream, mut b: ByteStream) -> Result<bool, StoreError> {
    let (mut x, mut y) = (Bytes::new(), Bytes::new());
    let (mut a_done, mut b_done) = (false, false);
    loop {
        while x.is_empty() && !a_done {
            match a.next().await {
                Some(c) => x = c?,
                None => a_done = true,
            }
        }
        while y.is_empty() && !b_done {
            match b.next().await {
                Some(c) => y = c?,
                None => b_done = true,
            }
        }
        match (x.is_empty(), y.is_empty()) {
            (true, true) => return Ok(true),
            (true, false) | (false, true) => return Ok(false),
            (false, false) => {}
        }
        let n = x.len().min(y.len());
        if x[..n] != y[..n] {
            return Ok(false);
        }
        x = x.slice(n..);
        y = y.slice(n..);
    }
}

#[cfg(test)]
mod tests;
