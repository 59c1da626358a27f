//! What the doctor is given: the observation of a server, its data
//! directory and its archive, each part optional, and the thresholds.
//!
//! Filled by the caller from SQL and by [`super::datadir`] from the files;
//! nothing here reads anything.

use serde::Serialize;

use crate::wal::Lsn;

/// Where the data came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A connection to the server (and possibly the data directory).
    Online,
    /// The data directory only: the server is down or unreachable.
    Offline,
}

/// `pg_stat_archiver`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ArchiverStats {
    pub archived_count: i64,
    pub last_archived_wal: Option<String>,
    pub last_archived_time: Option<f64>,
    pub failed_count: i64,
    pub last_failed_wal: Option<String>,
    pub last_failed_time: Option<f64>,
    pub stats_reset: Option<f64>,
}

/// One file of `pg_wal/archive_status`.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusFile {
    /// The WAL file name without `.ready`/`.done`.
    pub name: String,
    pub ready: bool,
    /// Modification time: when PostgreSQL created the `.ready` file, which is
    /// about when the segment was completed (a rename keeps it).
    pub mtime: f64,
    /// Change time, when known (read from the data directory): for a `.done`
    /// file, when the archiver renamed it, i.e. when it was archived.
    pub ctime: Option<f64>,
}

/// A replication slot, from `pg_replication_slots` or its state file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SlotObs {
    pub name: String,
    /// `physical` or `logical`.
    pub slot_type: String,
    /// Unknown offline.
    pub active: Option<bool>,
    pub active_pid: Option<i32>,
    pub temporary: bool,
    pub restart_lsn: Option<Lsn>,
    pub confirmed_flush: Option<Lsn>,
    /// `reserved`, `extended`, `unreserved`, `lost` (computed offline).
    pub wal_status: Option<String>,
    pub safe_wal_size: Option<i64>,
    pub invalidated: bool,
    /// Why it was invalidated (`wal_removed`, `rows_removed`,
    /// `wal_level_insufficient`, 18's `idle_timeout`): 17+'s
    /// `invalidation_reason`, or the state file's cause.
    pub invalidation_reason: Option<String>,
    /// 17+: when the slot was last released (seconds since the epoch). Not
    /// on disk: after a restart it is the server's start time.
    pub inactive_since: Option<f64>,
    /// 17+: synchronised from the primary (not idle-invalidated on a standby).
    pub synced: bool,
    pub database: Option<String>,
    pub plugin: Option<String>,
}

/// The oldest open transaction that has an xid (what pins logical decoding).
#[derive(Debug, Clone, PartialEq)]
pub struct OldestXact {
    pub pid: i32,
    pub xact_start: f64,
    pub state: Option<String>,
    /// `true` for a prepared transaction (`pg_prepared_xacts`).
    pub prepared: bool,
    pub gid: Option<String>,
}

/// Settings that govern retention, already in bytes and seconds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settings {
    pub archive_mode: Option<String>,
    pub archive_command: Option<String>,
    pub archive_library: Option<String>,
    pub wal_level: Option<String>,
    pub wal_keep_size: Option<i64>,
    /// -1: unlimited.
    pub max_slot_wal_keep_size: Option<i64>,
    pub max_wal_size: Option<i64>,
    pub min_wal_size: Option<i64>,
    pub checkpoint_timeout: Option<f64>,
    pub checkpoint_completion_target: Option<f64>,
    /// 17+: the WAL summarizer runs (and holds WAL it has not summarized).
    pub summarize_wal: Option<bool>,
    /// 18+: seconds an inactive slot may stay before a checkpoint
    /// invalidates it (0: never).
    pub idle_replication_slot_timeout: Option<f64>,
    /// 19+: `wal_level` as in effect (raised to `logical` while a logical
    /// slot exists).
    pub effective_wal_level: Option<String>,
}

/// One file directly in `pg_wal` that is not PostgreSQL's.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ForeignFile {
    pub name: String,
    pub bytes: u64,
    pub age_seconds: f64,
}

/// The `pg_wal` directory and its file system.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WalDir {
    /// Bytes of every file under `pg_wal`.
    pub bytes: u64,
    /// Segment files (including recycled ones not yet used).
    pub segments: u64,
    pub foreign: Vec<ForeignFile>,
    /// `xlogtemp.<pid>` and similar leftovers.
    pub temp: Vec<ForeignFile>,
    /// `.ready` files whose segment is missing.
    pub orphan_status: Vec<String>,
    pub fs_total: Option<u64>,
    pub fs_available: Option<u64>,
}

/// The WAL summarizer of PostgreSQL 17+ (`summarize_wal = on`): WAL it has
/// not summarized yet is kept, whatever `max_slot_wal_keep_size` says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SummarizerObs {
    /// How far it has summarized (`pg_get_wal_summarizer_state()`, offline
    /// the end of the newest `pg_wal/summaries/*.summary`).
    pub summarized_lsn: Option<Lsn>,
    /// How far it has read.
    pub pending_lsn: Option<Lsn>,
    /// Online: whether the walsummarizer process exists (its pid).
    pub running: Option<bool>,
    /// Summary files in `pg_wal/summaries`.
    pub summaries: Option<u64>,
}

/// What the archive (walg's configured storages) says.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ArchiveObs {
    /// Names the archive was asked about, with the storage holding each
    /// (`None`: in no storage).
    pub archived: Vec<(String, Option<String>)>,
    /// The oldest `.ready` file, and where it is already stored, if anywhere.
    pub oldest_ready: Option<(String, Option<String>)>,
    /// Storage errors while checking.
    pub errors: Vec<String>,
}

/// A segment `wal-push` gave up on purpose over the declared budget.
#[derive(Debug, Clone, PartialEq)]
pub struct GivenUp {
    pub segment: String,
    /// When (seconds since the epoch), from its record.
    pub time: Option<f64>,
    pub reason: Option<String>,
}

/// The declared pg_wal budget (`WALG_PG_WAL_BUDGET`) and the segments
/// given up under it, from walg's settings, pg_wal, the gap journal and
/// the archive's `walg_gaps/`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BudgetObs {
    /// The setting as written; `None`: not set.
    pub budget: Option<String>,
    /// In bytes (a percentage resolved on pg_wal's file system).
    pub budget_bytes: Option<u64>,
    /// Bytes of the WAL files directly in pg_wal, as `wal-push` measures.
    pub wal_bytes: Option<u64>,
    /// Every given-up segment known.
    pub given_up: Vec<GivenUp>,
    /// The newest `.backup` file seen (pg_wal and its archive_status).
    pub newest_backup: Option<String>,
    /// Damaged gap records, treated as unknown.
    pub problems: Vec<String>,
}

/// Everything `wal-status` could gather; every part is optional.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub mode: Mode,
    /// Seconds since the epoch.
    pub now: f64,
    pub server_version: Option<String>,
    /// 13, 14, ... (`server_version_num`, offline `PG_VERSION`).
    pub major_version: Option<u32>,
    pub in_recovery: Option<bool>,
    pub system_identifier: Option<u64>,
    pub segment_size: u64,
    pub timeline: Option<u32>,
    /// The insert position (a standby: the last received or replayed).
    pub current_lsn: Option<Lsn>,
    pub redo_lsn: Option<Lsn>,
    pub checkpoint_time: Option<f64>,
    pub settings: Settings,
    pub archiver: Option<ArchiverStats>,
    pub status_files: Option<Vec<StatusFile>>,
    pub slots: Option<Vec<SlotObs>>,
    pub oldest_xact: Option<OldestXact>,
    pub pg_wal: Option<WalDir>,
    pub archive: Option<ArchiveObs>,
    pub summarizer: Option<SummarizerObs>,
    /// Per failover storage, what waits to drain back to the primary (from
    /// walg's drain journals).
    pub failover_drain: Vec<super::FailoverDrain>,
    /// The declared pg_wal budget and the given-up segments.
    pub budget: Option<BudgetObs>,
    /// Declared by the user (`--external-archiver`): with `archive_mode` on
    /// and neither `archive_command` nor `archive_library`, an external
    /// program archives the `.ready` files and renames them `.done`.
    pub external_archiver: bool,
    /// Things that could not be read: `(area, message)`.
    pub problems: Vec<(String, String)>,
    /// Things a file could not tell but another source (SQL) did: said in
    /// the report, never a warning.
    pub notes: Vec<(String, String)>,
}

impl Observation {
    pub fn new(mode: Mode, now: f64, segment_size: u64) -> Observation {
        Observation {
            mode,
            now,
            server_version: None,
            major_version: None,
            in_recovery: None,
            system_identifier: None,
            segment_size,
            timeline: None,
            current_lsn: None,
            redo_lsn: None,
            checkpoint_time: None,
            settings: Settings::default(),
            archiver: None,
            status_files: None,
            slots: None,
            oldest_xact: None,
            pg_wal: None,
            archive: None,
            summarizer: None,
            failover_drain: Vec::new(),
            budget: None,
            external_archiver: false,
            problems: Vec::new(),
            notes: Vec::new(),
        }
    }
}

/// Thresholds; the defaults suit a production server.
#[derive(Debug, Clone, PartialEq)]
pub struct Thresholds {
    /// Oldest `.ready` age (seconds) for a WARNING / CRITICAL backlog.
    pub ready_age_warn: f64,
    pub ready_age_crit: f64,
    /// `.ready` count for a WARNING backlog.
    pub ready_count_warn: usize,
    /// File system free space (percent) for WARNING / CRITICAL.
    pub fs_free_warn_pct: f64,
    pub fs_free_crit_pct: f64,
    /// Time until the file system is full (seconds) for WARNING / CRITICAL.
    pub full_warn_seconds: f64,
    pub full_crit_seconds: f64,
    /// Bytes a slot may retain before a WARNING (default: `max_wal_size`).
    pub slot_retained_warn: Option<u64>,
    /// Age (seconds) of the oldest transaction pinning a logical slot.
    pub xact_age_warn: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            ready_age_warn: 300.0,
            ready_age_crit: 1800.0,
            ready_count_warn: 16,
            fs_free_warn_pct: 10.0,
            fs_free_crit_pct: 5.0,
            full_warn_seconds: 86400.0,
            full_crit_seconds: 7200.0,
            slot_retained_warn: None,
            xact_age_warn: 3600.0,
        }
    }
}
