//! The doctor's report: verdicts, the binding cause, the retention sources,
//! per-part reports, and human sizes and durations.
//!
//! Rendering-free: these are plain `serde::Serialize` values (`wal-status
//! --json` prints them as they are); text and metrics are the caller's.

use serde::Serialize;

use super::Mode;

/// Check and overall verdicts, in the monitoring convention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Ok,
    Warning,
    Critical,
    Unknown,
}

impl Status {
    /// The exit code a monitoring system expects (Nagios convention).
    pub fn exit_code(self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::Warning => 1,
            Status::Critical => 2,
            Status::Unknown => 3,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warning => "WARNING",
            Status::Critical => "CRITICAL",
            Status::Unknown => "UNKNOWN",
        }
    }

    /// Severity for "worst first": UNKNOWN ranks between OK and WARNING,
    /// a check that could not look is not a problem found.
    pub(super) fn rank(self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::Unknown => 1,
            Status::Warning => 2,
            Status::Critical => 3,
        }
    }
}

/// The kinds of retention source a cause can be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CauseKind {
    None,
    ArchiveNotConfigured,
    ArchiveFailing,
    ArchiveBacklog,
    ReplicationSlot,
    WalKeepSize,
    Checkpoint,
    /// 17+: the WAL summarizer has not summarized the oldest WAL yet.
    WalSummarizer,
}

/// What consumes the `.ready` files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Consumer {
    /// PostgreSQL's archiver running `archive_command`.
    ArchiveCommand,
    /// PostgreSQL's archiver with an archive module (15+).
    ArchiveLibrary,
    /// `archive_mode` on with neither: a program outside PostgreSQL archives
    /// the files and renames `.ready` to `.done` (declared, or seen by the
    /// `.done` files it leaves).
    External,
    /// Nothing: archiving is off, or on with nothing to consume the files.
    None,
}

/// One check's verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    pub id: &'static str,
    pub status: Status,
    pub summary: String,
    pub evidence: Vec<String>,
    pub remedy: Option<String>,
}

/// The binding cause (or the next one).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cause {
    pub kind: CauseKind,
    pub summary: String,
    pub remedy: Option<String>,
    /// The WAL file to blame (the one the archiver is stuck on).
    pub segment: Option<String>,
    /// The slot to blame.
    pub slot: Option<String>,
    /// Bytes of WAL this source holds back (from its oldest segment to the
    /// current position).
    pub retained_bytes: Option<u64>,
}

/// One retention source and how much it holds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Retention {
    pub kind: CauseKind,
    /// Slot name, `.ready` file, setting.
    pub detail: String,
    pub oldest_segment: String,
    pub retained_bytes: u64,
}

/// The archiver's state.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct ArchiverReport {
    pub archive_mode: Option<String>,
    pub configured: Option<bool>,
    /// Who consumes `.ready` files; `None` when the settings are unknown.
    pub consumer: Option<Consumer>,
    pub ready_count: Option<u64>,
    pub oldest_ready: Option<String>,
    pub oldest_ready_age_seconds: Option<f64>,
    pub archived_count: Option<i64>,
    pub failed_count: Option<i64>,
    pub last_failed_wal: Option<String>,
    pub last_failed_age_seconds: Option<f64>,
    pub last_archived_wal: Option<String>,
    pub last_archived_age_seconds: Option<f64>,
    /// WAL written per second, from the completion times of the segments
    /// still in pg_wal.
    pub wal_rate_bytes_per_second: Option<f64>,
    /// Archived per second, from when the recent `.done` files appeared.
    pub archive_rate_bytes_per_second: Option<f64>,
}

/// One slot's state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlotReport {
    pub name: String,
    #[serde(rename = "type")]
    pub slot_type: String,
    pub active: Option<bool>,
    pub temporary: bool,
    pub restart_lsn: Option<String>,
    pub retained_bytes: Option<u64>,
    pub wal_status: Option<String>,
    pub safe_wal_size: Option<i64>,
    /// `wal_removed`, `rows_removed`, `wal_level_insufficient`, `idle_timeout`.
    pub invalidation_reason: Option<String>,
    /// 17+: seconds since the slot was released (since the server start,
    /// at most, after a restart).
    pub inactive_seconds: Option<f64>,
}

/// The WAL summarizer (17+, `summarize_wal = on`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SummarizerReport {
    pub summarized_lsn: Option<String>,
    pub pending_lsn: Option<String>,
    pub running: Option<bool>,
    /// WAL from the summarized LSN to the current position.
    pub retained_bytes: Option<u64>,
    /// Summary files in `pg_wal/summaries`.
    pub summaries: Option<u64>,
}

/// The directory and its file system.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct WalReport {
    pub bytes: Option<u64>,
    pub segments: Option<u64>,
    pub max_wal_size_bytes: Option<i64>,
    /// The most pg_wal holds without a problem: WAL since the oldest of the
    /// REDO pointer, `wal_keep_size` and the sources judged normal, up to
    /// PostgreSQL's recycling horizon (`XLOGfileslop`'s upper bound: REDO's
    /// segment + max_wal_size - 1) and one preallocated segment, plus one
    /// segment for `.partial`, `.history` and `.backup` files.
    pub normal_max_bytes: Option<u64>,
    pub fs_total_bytes: Option<u64>,
    pub fs_free_bytes: Option<u64>,
    /// How fast pg_wal grows, when it can be estimated.
    pub growth_bytes_per_second: Option<f64>,
    pub seconds_until_full: Option<f64>,
}

/// Facts about the server.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct ServerReport {
    pub version: Option<String>,
    pub major_version: Option<u32>,
    pub in_recovery: Option<bool>,
    pub system_identifier: Option<String>,
    pub timeline: Option<u32>,
    pub segment_size: u64,
    pub current_lsn: Option<String>,
    pub current_segment: Option<String>,
    pub redo_lsn: Option<String>,
    pub checkpoint_age_seconds: Option<f64>,
}

/// The declared pg_wal budget and the segments given up under it.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct BudgetReport {
    /// `WALG_PG_WAL_BUDGET` as set.
    pub budget: Option<String>,
    pub budget_bytes: Option<u64>,
    /// Bytes of the WAL files in pg_wal, as `wal-push` measures them.
    pub wal_bytes: Option<u64>,
    pub over_budget: bool,
    /// Segments given up on purpose (declared gaps) known locally and in
    /// the archive.
    pub given_up_segments: u64,
    pub newest_given_up: Option<String>,
    pub newest_given_up_age_seconds: Option<f64>,
    /// The newest `.backup` file seen.
    pub newest_backup: Option<String>,
}

/// The result of `wal-status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub status: Status,
    pub mode: Mode,
    pub headline: String,
    pub cause: Cause,
    /// What would hold WAL next if the cause were fixed.
    pub next_cause: Option<Cause>,
    pub retention: Vec<Retention>,
    pub archiver: ArchiverReport,
    pub slots: Vec<SlotReport>,
    pub summarizer: Option<SummarizerReport>,
    pub pg_wal: WalReport,
    pub server: ServerReport,
    /// Per failover storage, the WAL waiting to drain back to the primary.
    pub failover_drain: Vec<super::FailoverDrain>,
    /// The declared pg_wal budget (`WALG_PG_WAL_BUDGET`), when set or when
    /// segments were given up.
    pub budget: Option<BudgetReport>,
    /// Worst first.
    pub checks: Vec<Check>,
}

/// Human sizes: `3.1 GiB`, `640 MiB`, `12 KiB`.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else if v >= 100.0 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Human durations: `47 min`, `3.2 h`, `12 s`, `2.5 d`.
pub fn human_secs(s: f64) -> String {
    let s = s.max(0.0);
    if s < 120.0 {
        format!("{s:.0} s")
    } else if s < 7200.0 {
        format!("{:.0} min", s / 60.0)
    } else if s < 172_800.0 {
        format!("{:.1} h", s / 3600.0)
    } else {
        format!("{:.1} d", s / 86400.0)
    }
}
