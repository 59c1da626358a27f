//! [`FailoverStore`]: a [`Store`] made of named member stores in priority
//! order, with write and read policies driven by a per-storage health model.
//!
//! Policies:
//!
//! - Writes (`put`, `delete`) with [`WritePolicy::FirstAlive`] go to the
//!   first storage believed alive. A storage failure marks that member dead
//!   and the same key and body are retried on the next member within the
//!   same call; the call fails only when every member failed, and the error
//!   lists each member's failure. `delete` follows the same policy, so with
//!   `FirstAlive` it removes the object from one member only; a caller that
//!   must remove every copy uses [`FailoverStore::member`] per member.
//! - With [`WritePolicy::All`] every member believed alive gets the write,
//!   and the call succeeds only when all of them stored it. A member that
//!   fails its probe is dead, not one of the alive ones, and is left out; a
//!   member that fails the upload itself fails the call (and is marked
//!   dead, so PostgreSQL's retry a second later succeeds without it). A
//!   `Conflict` on some members is returned after the others were written,
//!   so the caller can compare the existing copy.
//! - A `Conflict` (the object exists) or another answer from a healthy
//!   storage is returned as is, never failed over.
//! - Members with a fresh "dead" verdict are skipped without a request. When
//!   no other member is left (all skipped or failed), the dead ones are tried
//!   anyway, in order, as a last resort: failing an archive without asking
//!   the storage that may have recovered would only grow `pg_wal`.
//! - Reads (`get`, `stat`) ask every member in priority order, members not
//!   known dead first, then the ones with a fresh dead verdict (a storage
//!   that was dead for writes may still hold the only copy). `NotFound` is
//!   returned only when every member answered `NotFound`; when any member
//!   failed and none had the object, the failure is returned, never
//!   `NotFound`. Reads never probe: their outcome is the observation.
//! - `list` is the union of every member's listing, deduplicated by key
//!   (the first member in priority order wins) and sorted. Members that fail
//!   are left out with a warning; the call fails only when all fail.
//!
//! Health: every operation's outcome, uploads included, is recorded in the
//! [`StatusCache`]. A member without a fresh verdict is probed before a write
//! when `check` is on and another member could take the write instead: the
//! probe lists a small prefix, then puts `check_size` bytes under
//! `walg_failover_check/` and deletes them, all within `check_timeout`. The
//! last usable member is not probed, since its upload is its own probe and
//! a failed upload is handled like a failed probe. So a write with a fresh
//! cache makes no probe request at all, and one with a cold cache makes at
//! most one probe per member. With `check` off, a member without a fresh
//! verdict is simply tried, and a fresh "dead" verdict (from a failed
//! operation) is still honoured. Status transitions are logged once: WARN when
//! a storage goes down, INFO when it is back.
//!
//! What this module does not do: it does not build stores from settings
//! (`walg-storage`), read the environment or configuration files (`walg-cli`)
//! or retry a call on the same storage (a layer below).

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use walg_core::store::error::{Cause, Explanation};
use walg_core::store::DynStore;
use walg_core::{Body, ByteStream, ErrorKind, ObjectMeta, PutOptions, Store, StoreError};

use crate::cache::{Observation, StatusCache, Transition, Verdict};
use crate::clock::{from_unix_ms, unix_ms, Clock, SystemClock};
use crate::drain::journal::Journal;
use crate::drain::{is_wal_key, DrainConfig, DrainMode};

/// Prefix of the objects health probes write and list.
pub const PROBE_PREFIX: &str = "walg_failover_check/";

/// Where writes go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WritePolicy {
    /// The first member believed alive; the next one if it fails (WAL-G's
    /// behaviour).
    #[default]
    FirstAlive,
    /// Every member believed alive; success only when all of them stored it.
    All,
}

/// Settings of a [`FailoverStore`], as plain values. The CLI fills them from
/// `WALG_FAILOVER_STORAGES_*`; this crate reads no environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverConfig {
    /// Probe members without a fresh verdict before writing to them.
    pub check: bool,
    /// Upper bound of one probe (list + put + delete).
    pub check_timeout: Duration,
    /// Bytes a write probe uploads.
    pub check_size: u64,
    /// How long a verdict stays fresh.
    pub cache_lifetime: Duration,
    /// The status cache file; `None` keeps the status in memory only. See
    /// [`crate::default_cache_path`].
    pub cache_path: Option<PathBuf>,
    /// Where writes go.
    pub write_policy: WritePolicy,
    /// Use only this member (by name), for every operation.
    pub target: Option<String>,
    /// The drain back to the primary and its journals (see [`crate::drain`]).
    pub drain: DrainConfig,
}

impl Default for FailoverConfig {
    fn default() -> Self {
        FailoverConfig {
            check: true,
            check_timeout: Duration::from_secs(30),
            check_size: 1 << 20,
            cache_lifetime: Duration::from_secs(15 * 60),
            cache_path: None,
            write_policy: WritePolicy::FirstAlive,
            target: None,
            drain: DrainConfig::default(),
        }
    }
}

/// One named storage of a [`FailoverStore`].
#[derive(Debug, Clone)]
pub struct Member {
    name: String,
    store: DynStore,
    fingerprint: String,
    spill: bool,
}

impl Member {
    /// A member called `name` (`default` for the primary). Its status cache
    /// fingerprint is `store.name()`, the storage's credential-free URL.
    pub fn new(name: impl Into<String>, store: DynStore) -> Self {
        let fingerprint = store.name().to_string();
        Member {
            name: name.into(),
            store,
            fingerprint,
            spill: false,
        }
    }

    /// A member whose storage could not be opened (a directory that cannot
    /// be created, a mount that vanished): every call on it fails with
    /// [`ErrorKind::Unavailable`] and `reason`, so it counts as dead for the
    /// call like a storage that failed an upload, and the next member takes
    /// over. `fingerprint` is the one the opened storage would have had.
    pub fn unopened(
        name: impl Into<String>,
        fingerprint: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        let name = name.into();
        let store = Arc::new(Unopened {
            name: name.clone(),
            reason: reason.into(),
        });
        Member {
            name,
            store,
            fingerprint: fingerprint.into(),
            spill: false,
        }
    }

    /// Overrides the fingerprint: any credential-free string that changes
    /// when the storage's identity changes (endpoint, bucket, prefix).
    pub fn with_fingerprint(mut self, fingerprint: impl Into<String>) -> Self {
        self.fingerprint = fingerprint.into();
        self
    }

    /// Marks a spill storage: written only when every other storage failed
    /// (also under [`WritePolicy::All`]), and drained back with move.
    pub fn with_spill(mut self, spill: bool) -> Self {
        self.spill = spill;
        self
    }

    /// Whether this is a spill storage.
    pub fn is_spill(&self) -> bool {
        self.spill
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn store(&self) -> &DynStore {
        &self.store
    }

    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

/// The stand-in for a member whose storage could not be opened.
#[derive(Debug)]
struct Unopened {
    name: String,
    reason: String,
}

impl Unopened {
    fn fail(&self, op: &'static str, key: &str) -> StoreError {
        StoreError::new(
            ErrorKind::Unavailable,
            op,
            self.name.clone(),
            key,
            format!("the storage could not be opened: {}", self.reason),
        )
    }
}

#[async_trait]
impl Store for Unopened {
    fn name(&self) -> &str {
        &self.name
    }
    async fn put(&self, key: &str, _: &dyn Body, _: PutOptions) -> Result<(), StoreError> {
        Err(self.fail("put", key))
    }
    async fn get(&self, key: &str) -> Result<ByteStream, StoreError> {
        Err(self.fail("get", key))
    }
    async fn stat(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        Err(self.fail("stat", key))
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        Err(self.fail("list", prefix))
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        Err(self.fail("delete", key))
    }
}

/// A [`FailoverStore`] could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum FailoverError {
    #[error("no storage configured; configure at least the default storage")]
    NoMembers,
    #[error("a failover storage has an empty name; give every failover storage a name")]
    EmptyName,
    #[error("storage name {0:?} is configured twice; give every failover storage a unique name")]
    DuplicateName(String),
    #[error("target storage {target:?} is not configured; the configured storages are: {known}")]
    UnknownTarget { target: String, known: String },
}

/// What the status cache knows about one member, for `walg st status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberStatus {
    pub name: String,
    pub fingerprint: String,
    /// The last verdict, `None` when never observed (under this fingerprint).
    pub alive: Option<bool>,
    pub last_checked: Option<SystemTime>,
    pub last_used: Option<SystemTime>,
    /// Whether the verdict is within the cache lifetime.
    pub fresh: bool,
    /// Why the member is dead.
    pub last_error: Option<String>,
}

/// A store made of named members in priority order. See the module docs for
/// its policies.
#[derive(Debug)]
pub struct FailoverStore {
    name: String,
    members: Vec<Member>,
    /// Indexes of the members operations use: all, or just the target.
    active: Vec<usize>,
    config: FailoverConfig,
    cache: Arc<StatusCache>,
    /// One per member, so concurrent calls in one process (upload-ahead)
    /// probe a member once instead of once each.
    probing: Vec<tokio::sync::Mutex<()>>,
    /// Which members took each key written by this process, for
    /// [`Store::put_located`].
    placed: std::sync::Mutex<std::collections::HashMap<String, Vec<String>>>,
    /// Which members hold each key after a write of this process (stored it
    /// or answered that it exists), for the drain journal.
    held: std::sync::Mutex<std::collections::HashMap<String, Vec<usize>>>,
}

/// A write, so both policies share one code path for `put` and `delete`.
enum WriteOp<'a> {
    Put {
        key: &'a str,
        body: &'a dyn Body,
        opts: PutOptions,
    },
    Delete {
        key: &'a str,
    },
}

impl WriteOp<'_> {
    fn name(&self) -> &'static str {
        match self {
            WriteOp::Put { .. } => "put",
            WriteOp::Delete { .. } => "delete",
        }
    }
    fn key(&self) -> &str {
        match self {
            WriteOp::Put { key, .. } | WriteOp::Delete { key } => key,
        }
    }
    async fn apply(&self, store: &dyn Store) -> Result<(), StoreError> {
        match self {
            WriteOp::Put { key, body, opts } => store.put(key, *body, *opts).await,
            WriteOp::Delete { key } => store.delete(key).await,
        }
    }
}

/// Whether a member takes a write, see [`FailoverStore::ready_for_write`].
enum Readiness {
    Use,
    KnownDead,
    ProbeFailed(StoreError),
}

/// Failures of one call, by member name, for the error message.
type Failures = Vec<(String, StoreError)>;

impl FailoverStore {
    /// Builds the store from members in priority order (the CLI passes
    /// `default` first, then the failovers sorted by name), with the real
    /// clock. No I/O happens until the first operation.
    pub fn new(members: Vec<Member>, config: FailoverConfig) -> Result<Self, FailoverError> {
        Self::with_clock(members, config, Arc::new(SystemClock))
    }

    /// Like [`FailoverStore::new`] with an injected clock (tests).
    pub fn with_clock(
        members: Vec<Member>,
        config: FailoverConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, FailoverError> {
        if members.is_empty() {
            return Err(FailoverError::NoMembers);
        }
        for (i, m) in members.iter().enumerate() {
            if m.name.is_empty() {
                return Err(FailoverError::EmptyName);
            }
            if members[..i].iter().any(|o| o.name == m.name) {
                return Err(FailoverError::DuplicateName(m.name.clone()));
            }
        }
        let active: Vec<usize> = match &config.target {
            None => (0..members.len()).collect(),
            Some(t) => match members.iter().position(|m| &m.name == t) {
                Some(i) => vec![i],
                None => {
                    let known = members
                        .iter()
                        .map(|m| m.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ");
                    return Err(FailoverError::UnknownTarget {
                        target: t.clone(),
                        known,
                    });
                }
            },
        };
        let name = match active.as_slice() {
            [only] => members[*only].name.clone(),
            _ => format!(
                "failover({})",
                members
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let cache = Arc::new(StatusCache::new(
            config.cache_path.clone(),
            config.cache_lifetime,
            clock,
        ));
        let probing = members
            .iter()
            .map(|_| tokio::sync::Mutex::new(()))
            .collect();
        Ok(FailoverStore {
            name,
            members,
            active,
            config,
            cache,
            probing,
            placed: Default::default(),
            held: Default::default(),
        })
    }

    /// The members in priority order.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The member called `name`, unwrapped (no health tracking), e.g. for
    /// `walg st transfer --source NAME`.
    pub fn member(&self, name: &str) -> Option<DynStore> {
        self.members
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.store.clone())
    }

    /// The settings this store was built with.
    pub fn config(&self) -> &FailoverConfig {
        &self.config
    }

    /// The configured status cache file (see [`StatusCache::is_persistent`]
    /// through [`FailoverStore::cache`] for whether it is still in use).
    pub fn cache_path(&self) -> Option<PathBuf> {
        self.cache.path().map(|p| p.to_path_buf())
    }

    /// The status cache, for inspection.
    pub fn cache(&self) -> &StatusCache {
        &self.cache
    }

    /// What the status cache knows about every member, in priority order.
    pub async fn status(&self) -> Vec<MemberStatus> {
        self.ensure_loaded().await;
        self.members
            .iter()
            .map(|m| match self.cache.entry(&m.name, &m.fingerprint) {
                Some(e) => MemberStatus {
                    name: m.name.clone(),
                    fingerprint: m.fingerprint.clone(),
                    alive: Some(e.alive),
                    last_checked: e.checked_at_ms.map(from_unix_ms),
                    last_used: e.used_at_ms.map(from_unix_ms),
                    fresh: self.cache.is_fresh(&e),
                    last_error: e.error.clone(),
                },
                None => MemberStatus {
                    name: m.name.clone(),
                    fingerprint: m.fingerprint.clone(),
                    alive: None,
                    last_checked: None,
                    last_used: None,
                    fresh: false,
                    last_error: None,
                },
            })
            .collect()
    }

    /// Probes every member now (concurrently), records the results in the
    /// status cache and returns them in priority order. `write: false` only
    /// lists; `write: true` also puts and deletes a `check_size` object.
    pub async fn check(&self, write: bool) -> Vec<(String, Result<(), StoreError>)> {
        self.ensure_loaded().await;
        // The caller reports these results itself: a storage found down is
        // said once, by the caller, not also as a warning here.
        let probes = (0..self.members.len()).map(|i| async move {
            let _guard = self.probing[i].lock().await;
            (
                self.members[i].name.clone(),
                self.probe(i, write, false).await,
            )
        });
        let results = futures::future::join_all(probes).await;
        self.flush().await;
        results
    }

    // ---- the cache, off the async threads -------------------------------

    async fn blocking(&self, f: impl FnOnce(&StatusCache) + Send + 'static) {
        let cache = self.cache.clone();
        // A failed blocking task loses only a cache update, which the cache
        // tolerates by design; the operation itself must not fail for it.
        if let Err(e) = tokio::task::spawn_blocking(move || f(&cache)).await {
            tracing::debug!("storage status cache task failed: {e}");
        }
    }

    /// Reads the cache file if this is the first operation. Returns whether
    /// it read it now.
    async fn ensure_loaded(&self) -> bool {
        if self.cache.is_loaded() {
            return false;
        }
        self.blocking(|c| c.load()).await;
        true
    }

    async fn flush(&self) {
        if self.cache.needs_flush() {
            self.blocking(|c| c.flush()).await;
        }
    }

    // ---- health ----------------------------------------------------------

    fn verdict(&self, i: usize) -> Verdict {
        let m = &self.members[i];
        self.cache.verdict(&m.name, &m.fingerprint)
    }

    /// Records an outcome and logs a status transition once.
    fn observe(&self, i: usize, kind: Observation, outcome: Result<(), &StoreError>) {
        self.observe_and_tell(i, kind, outcome, true)
    }

    /// Records an outcome; a transition to down is a warning when `tell`,
    /// else silent (the caller reports the failure itself).
    fn observe_and_tell(
        &self,
        i: usize,
        kind: Observation,
        outcome: Result<(), &StoreError>,
        tell: bool,
    ) {
        let m = &self.members[i];
        let error = outcome.err().map(|e| format!("{}: {}", e.kind, e.message));
        let alive = error.is_none();
        match self
            .cache
            .record(&m.name, &m.fingerprint, kind, alive, error.as_deref())
        {
            Transition::Down if tell => tracing::warn!(
                storage = %m.name,
                "storage {:?} is down ({}); walg uses the next alive storage until it recovers",
                m.name,
                error.as_deref().unwrap_or("failed")
            ),
            // The caller says it, once.
            Transition::Down => {}
            Transition::Up => {
                tracing::info!(storage = %m.name, "storage {:?} is back up; walg prefers it again", m.name)
            }
            Transition::Unchanged => {}
        }
    }

    /// Records the outcome of a real operation: healthy answers (including
    /// `NotFound`, `Conflict`) as alive, storage failures as dead.
    fn observe_result<T>(&self, i: usize, result: &Result<T, StoreError>) {
        match result {
            Err(e) if e.kind.is_storage_failure() => self.observe(i, Observation::Used, Err(e)),
            _ => self.observe(i, Observation::Used, Ok(())),
        }
    }

    /// Like [`Self::observe_result`] for reads, except that a read that works
    /// does not overturn a fresh "dead" verdict: that verdict may come from a
    /// failed write, and only a write (or a probe) proves writes work again.
    fn observe_read<T>(&self, i: usize, result: &Result<T, StoreError>) {
        let healthy = !matches!(result, Err(e) if e.kind.is_storage_failure());
        if healthy && self.verdict(i) == Verdict::Dead {
            return;
        }
        self.observe_result(i, result);
    }

    /// One probe of member `i`, bounded by `check_timeout`, recorded; `tell`
    /// as in [`Self::observe_and_tell`].
    async fn probe(&self, i: usize, write: bool, tell: bool) -> Result<(), StoreError> {
        let m = &self.members[i];
        let store = &m.store;
        let run = async {
            match store.list(PROBE_PREFIX).await {
                Err(e) if e.kind.is_storage_failure() => return Err(e),
                _ => {}
            }
            if write {
                let key = format!("{PROBE_PREFIX}{}-{}", std::process::id(), unique_suffix());
                let size = usize::try_from(self.config.check_size)
                    .unwrap_or(usize::MAX)
                    .min(1 << 30);
                let body = Bytes::from(vec![0u8; size]);
                store.put(&key, &body, PutOptions::default()).await?;
                store.delete(&key).await?;
            }
            Ok(())
        };
        let result = match tokio::time::timeout(self.config.check_timeout, run).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::explained(
                ErrorKind::Timeout,
                "check",
                m.name.clone(),
                PROBE_PREFIX,
                Explanation {
                    cause: Cause::Timeout,
                    location: String::new(),
                    what: format!(
                        "timed out after {:?}: the storage check (list, write, delete) did not finish",
                        self.config.check_timeout
                    ),
                    fix: "check the storage, or raise WALG_FAILOVER_STORAGES_CHECK_TIMEOUT"
                        .to_string(),
                    detail: String::new(),
                },
            )),
        };
        self.observe_and_tell(i, Observation::Checked, result.as_ref().map(|_| ()), tell);
        result
    }

    /// Decides whether member `i` takes a write now: skips it when known
    /// dead, probes it when unknown and `probe_unknown`. `reloaded` makes the
    /// cache file be re-read at most once per call, and only when some
    /// verdict is unknown (another process may have just learned it).
    async fn ready_for_write(
        &self,
        i: usize,
        probe_unknown: bool,
        reloaded: &mut bool,
    ) -> Readiness {
        let mut verdict = self.verdict(i);
        if verdict == Verdict::Unknown && !*reloaded {
            *reloaded = true;
            self.blocking(|c| c.reload()).await;
            verdict = self.verdict(i);
        }
        match verdict {
            Verdict::Dead => return Readiness::KnownDead,
            Verdict::Alive => return Readiness::Use,
            Verdict::Unknown if !self.config.check || !probe_unknown => return Readiness::Use,
            Verdict::Unknown => {}
        }
        let _guard = self.probing[i].lock().await;
        // A concurrent call of this process may have probed it meanwhile.
        match self.verdict(i) {
            Verdict::Dead => return Readiness::KnownDead,
            Verdict::Alive => return Readiness::Use,
            Verdict::Unknown => {}
        }
        match self.probe(i, true, true).await {
            Ok(()) => Readiness::Use,
            Err(e) => Readiness::ProbeFailed(e),
        }
    }

    async fn write(&self, op: WriteOp<'_>) -> Result<(), StoreError> {
        let reloaded = self.ensure_loaded().await;
        self.held_lock().remove(op.key());
        let result = match self.config.write_policy {
            WritePolicy::FirstAlive => self.write_first_alive(&op, reloaded).await,
            WritePolicy::All => self.write_all(&op, reloaded).await,
        };
        let held = self.held_lock().remove(op.key()).unwrap_or_default();
        if matches!(op, WriteOp::Put { .. }) {
            self.journal_failover_only(op.key(), &held).await;
        }
        self.flush().await;
        result
    }

    fn held_lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Vec<usize>>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a WAL file that failover members hold and the primary did
    /// not take in the drain journals of those members. A journal that
    /// cannot be written never fails the write: it is marked for a rebuild
    /// from a listing, with one warning.
    async fn journal_failover_only(&self, key: &str, held: &[usize]) {
        let Some(dir) = &self.config.drain.dir else {
            return;
        };
        if held.is_empty() || held.contains(&0) || !self.primary_active() || !is_wal_key(key) {
            return;
        }
        let now = unix_ms(self.cache.clock_now());
        for &i in held {
            let m = &self.members[i];
            if self.config.drain.mode_of(m.spill) == DrainMode::Off {
                continue;
            }
            let journal = Journal::new(dir, &m.name, &m.fingerprint);
            let k = key.to_string();
            let j = journal.clone();
            let result = tokio::task::spawn_blocking(move || j.add(&[&k], now))
                .await
                .unwrap_or_else(|e| Err(e.to_string()));
            if let Err(e) = result {
                tracing::warn!(
                    storage = %m.name,
                    "{key} is stored on storage {:?} but could not be recorded in its drain journal ({e}); the next drain rebuilds the journal from a listing",
                    m.name
                );
            }
        }
    }

    /// Whether the primary (`default`, the first member) is in use.
    pub(crate) fn primary_active(&self) -> bool {
        self.active.contains(&0)
    }

    /// Whether the status cache holds a fresh "dead" verdict on the primary.
    pub(crate) async fn primary_known_dead(&self) -> bool {
        self.ensure_loaded().await;
        self.verdict(0) == Verdict::Dead
    }

    /// Records the outcome of a drain's request to the primary in the
    /// health model (a failure marks it dead for the next calls).
    pub(crate) async fn observe_primary(&self, outcome: Result<(), &StoreError>) {
        match outcome {
            Err(e) if e.kind.is_storage_failure() => self.observe(0, Observation::Used, Err(e)),
            Err(_) => {}
            Ok(()) if self.verdict(0) == Verdict::Dead => {}
            Ok(()) => self.observe(0, Observation::Used, Ok(())),
        }
        self.flush().await;
    }

    /// Write order: ordinary members in priority order, then spill members.
    fn write_order(&self) -> Vec<usize> {
        let (spill, regular): (Vec<usize>, Vec<usize>) =
            self.active.iter().partition(|&&i| self.members[i].spill);
        regular.into_iter().chain(spill).collect()
    }

    async fn write_first_alive(&self, op: &WriteOp<'_>, reloaded: bool) -> Result<(), StoreError> {
        let order = self.write_order();
        let mut failures = Failures::new();
        match self
            .write_first_alive_in(&order, op, reloaded, &mut failures)
            .await
        {
            Some(r) => r,
            None => Err(self.all_failed(op.name(), op.key(), &failures)),
        }
    }

    /// The first-alive policy over `order`; `None` when every member
    /// failed (their failures are in `failures`).
    async fn write_first_alive_in(
        &self,
        order: &[usize],
        op: &WriteOp<'_>,
        mut reloaded: bool,
        failures: &mut Failures,
    ) -> Option<Result<(), StoreError>> {
        let mut skipped = Vec::new();
        for (pos, &i) in order.iter().enumerate() {
            // Probing pays only when another member could take the write.
            let others = order[pos + 1..]
                .iter()
                .any(|&j| self.verdict(j) != Verdict::Dead);
            match self.ready_for_write(i, others, &mut reloaded).await {
                Readiness::Use => {}
                Readiness::KnownDead => {
                    skipped.push(i);
                    continue;
                }
                Readiness::ProbeFailed(e) => {
                    failures.push((self.members[i].name.clone(), e));
                    continue;
                }
            }
            match self.attempt(i, op).await {
                Ok(r) => return Some(r),
                Err(e) => failures.push((self.members[i].name.clone(), e)),
            }
        }
        // Last resort: the members skipped as dead may have recovered.
        for i in skipped {
            match self.attempt(i, op).await {
                Ok(r) => return Some(r),
                Err(e) => failures.push((self.members[i].name.clone(), e)),
            }
        }
        None
    }

    async fn write_all(&self, op: &WriteOp<'_>, mut reloaded: bool) -> Result<(), StoreError> {
        let mut failures = Failures::new();
        let mut probe_failures = Failures::new();
        let mut skipped = Vec::new();
        let mut answer: Option<StoreError> = None;
        let mut stored = 0usize;
        // Spill members are not among "all": they take the write only when
        // every other member failed.
        let (spill, regular): (Vec<usize>, Vec<usize>) =
            self.active.iter().partition(|&&i| self.members[i].spill);
        let usable = regular
            .iter()
            .filter(|&&j| self.verdict(j) != Verdict::Dead)
            .count();
        for &i in &regular {
            match self.ready_for_write(i, usable > 1, &mut reloaded).await {
                Readiness::Use => {}
                Readiness::KnownDead => {
                    skipped.push(i);
                    continue;
                }
                // A member failing its probe is dead, not one of the alive
                // members that must all store the object.
                Readiness::ProbeFailed(e) => {
                    probe_failures.push((self.members[i].name.clone(), e));
                    continue;
                }
            }
            match self.attempt(i, op).await {
                Ok(Ok(())) => stored += 1,
                Ok(Err(e)) => {
                    answer.get_or_insert(e);
                }
                Err(e) => failures.push((self.members[i].name.clone(), e)),
            }
        }
        if stored == 0 && answer.is_none() && failures.is_empty() {
            // Nothing was believed alive: try the dead ones rather than fail
            // without a request.
            for i in skipped {
                match self.attempt(i, op).await {
                    Ok(Ok(())) => stored += 1,
                    Ok(Err(e)) => {
                        answer.get_or_insert(e);
                    }
                    Err(e) => failures.push((self.members[i].name.clone(), e)),
                }
            }
        }
        if stored == 0 && answer.is_none() && !spill.is_empty() {
            let mut spill_failures = Failures::new();
            if let Some(r) = self
                .write_first_alive_in(&spill, op, reloaded, &mut spill_failures)
                .await
            {
                return r;
            }
            failures.extend(spill_failures);
        }
        if !failures.is_empty() || (stored == 0 && answer.is_none()) {
            let mut all = probe_failures;
            all.extend(failures);
            return Err(self.all_failed(op.name(), op.key(), &all));
        }
        match answer {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Runs a write on member `i` and records the outcome. `Ok(result)` is an
    /// answer to return (success or e.g. `Conflict`); `Err` is a storage
    /// failure to fail over from.
    async fn attempt(
        &self,
        i: usize,
        op: &WriteOp<'_>,
    ) -> Result<Result<(), StoreError>, StoreError> {
        let result = op.apply(self.members[i].store.as_ref()).await;
        self.observe_result(i, &result);
        match result {
            Err(e) if e.kind.is_storage_failure() => Err(e),
            Err(e) if e.kind == ErrorKind::Conflict && matches!(op, WriteOp::Put { .. }) => {
                self.held_lock()
                    .entry(op.key().to_string())
                    .or_default()
                    .push(i);
                Ok(Err(e))
            }
            Ok(()) => {
                if let WriteOp::Put { key, .. } = op {
                    self.held_lock().entry(key.to_string()).or_default().push(i);
                    let mut placed = self.placed.lock().unwrap_or_else(|e| e.into_inner());
                    placed
                        .entry(key.to_string())
                        .or_default()
                        .push(self.members[i].name.clone());
                }
                if Some(&i) != self.active.first() {
                    tracing::debug!(storage = %self.members[i].name, key = op.key(), "{} on failover storage", op.name());
                }
                Ok(Ok(()))
            }
            answer => Ok(answer),
        }
    }

    fn all_failed(&self, op: &'static str, key: &str, failures: &Failures) -> StoreError {
        let kind = failures
            .last()
            .map(|(_, e)| e.kind)
            .unwrap_or(ErrorKind::Unavailable);
        // Each storage's own cause and fix, once; the kind word only where
        // the storage did not explain its failure.
        let detail = failures
            .iter()
            .map(|(name, e)| match &e.explanation {
                Some(_) => format!("{name}: {}", e.message),
                None => format!("{name}: {}: {}", e.kind, e.message),
            })
            .collect::<Vec<_>>()
            .join("; ");
        StoreError::new(
            kind,
            op,
            self.name.clone(),
            key,
            format!("every storage failed: {detail}"),
        )
    }

    /// Members for a read: not known dead first, then known dead, each
    /// group in priority order.
    fn read_order(&self) -> Vec<usize> {
        let (dead, rest): (Vec<usize>, Vec<usize>) = self
            .active
            .iter()
            .partition(|&&i| self.verdict(i) == Verdict::Dead);
        rest.into_iter().chain(dead).collect()
    }

    async fn read<T, F, Fut>(&self, op: &'static str, key: &str, f: F) -> Result<T, StoreError>
    where
        F: Fn(DynStore) -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        self.ensure_loaded().await;
        let result = self.read_inner(op, key, f).await;
        self.flush().await;
        result
    }

    async fn read_inner<T, F, Fut>(
        &self,
        op: &'static str,
        key: &str,
        f: F,
    ) -> Result<T, StoreError>
    where
        F: Fn(DynStore) -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let mut failures = Failures::new();
        let mut answer: Option<StoreError> = None;
        for i in self.read_order() {
            let result = f(self.members[i].store.clone()).await;
            self.observe_read(i, &result);
            match result {
                Ok(v) => return Ok(v),
                Err(e) if e.kind == ErrorKind::NotFound => {}
                Err(e) if !e.kind.is_storage_failure() => {
                    // E.g. a corrupt copy: another member may have a good one.
                    answer.get_or_insert(e);
                }
                Err(e) => failures.push((self.members[i].name.clone(), e)),
            }
        }
        if !failures.is_empty() {
            return Err(self.all_failed(op, key, &failures));
        }
        if let Some(e) = answer {
            return Err(e);
        }
        let names = self
            .active
            .iter()
            .map(|&i| self.members[i].name.as_str())
            .collect::<Vec<_>>();
        Err(StoreError::new(
            ErrorKind::NotFound,
            op,
            self.name.clone(),
            key,
            format!("not found in any storage ({})", names.join(", ")),
        ))
    }
}

/// Makes probe keys of concurrent processes and calls distinct.
fn unique_suffix() -> u128 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    nanos.wrapping_add(u128::from(COUNTER.fetch_add(1, Ordering::Relaxed)))
}

#[async_trait]
impl Store for FailoverStore {
    fn name(&self) -> &str {
        &self.name
    }

    /// Atomic only when every member used is.
    fn atomic_if_not_exists(&self) -> bool {
        self.active
            .iter()
            .all(|&i| self.members[i].store.atomic_if_not_exists())
    }

    async fn put(&self, key: &str, body: &dyn Body, opts: PutOptions) -> Result<(), StoreError> {
        self.write(WriteOp::Put { key, body, opts }).await
    }

    /// Names the member(s) that took the object (several under the `All`
    /// policy), joined by `+`.
    async fn put_located(
        &self,
        key: &str,
        body: &dyn Body,
        opts: PutOptions,
    ) -> Result<String, StoreError> {
        self.placed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        self.write(WriteOp::Put { key, body, opts }).await?;
        let names = self
            .placed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key)
            .unwrap_or_default();
        Ok(if names.is_empty() {
            self.name.clone()
        } else {
            names.join("+")
        })
    }

    async fn get(&self, key: &str) -> Result<ByteStream, StoreError> {
        self.read("get", key, |s| async move { s.get(key).await })
            .await
    }

    async fn stat(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        self.read("stat", key, |s| async move { s.stat(key).await })
            .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.ensure_loaded().await;
        let mut union: BTreeMap<String, ObjectMeta> = BTreeMap::new();
        let mut failures = Failures::new();
        let mut answered = 0usize;
        for i in self.read_order() {
            let result = self.members[i].store.list(prefix).await;
            self.observe_read(i, &result);
            match result {
                Ok(objects) => {
                    answered += 1;
                    for o in objects {
                        union.entry(o.key.clone()).or_insert(o);
                    }
                }
                Err(e) if !e.kind.is_storage_failure() => answered += 1,
                Err(e) => failures.push((self.members[i].name.clone(), e)),
            }
        }
        self.flush().await;
        if answered == 0 {
            return Err(self.all_failed("list", prefix, &failures));
        }
        for (name, e) in &failures {
            tracing::warn!(storage = %name, "listing {prefix:?} without storage {name:?}, which failed: {}: {}", e.kind, e.message);
        }
        Ok(union.into_values().collect())
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.write(WriteOp::Delete { key }).await
    }
}
