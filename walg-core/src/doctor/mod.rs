//! Why `pg_wal` grows: the checks of `walg wal-status` and the binding
//! cause, computed from plain observations.
//!
//! PostgreSQL removes a segment at a checkpoint only when it is older than
//! every retention source: the REDO pointer of the checkpoint, the oldest
//! `restart_lsn` of the valid replication slots (capped by
//! `max_slot_wal_keep_size`), `wal_keep_size` behind the current segment,
//! and, independently, an archiver that has not yet archived it (`.ready`).
//! The source holding the oldest segment is the binding cause; fixing it
//! frees WAL only down to the next one, which is reported too.
//!
//! The caller gathers an [`Observation`] (from SQL, from the data directory,
//! or both) and calls [`diagnose`]; nothing here does I/O or reads a clock,
//! so every rule is unit-tested on synthetic observations. The report is
//! `serde::Serialize`: `wal-status --json` prints it as is.

pub mod preflight;

use serde::Serialize;

use crate::wal::{Lsn, Segment, WalName};

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
    fn rank(self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::Unknown => 1,
            Status::Warning => 2,
            Status::Critical => 3,
        }
    }
}

/// Where the data came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A connection to the server (and possibly the data directory).
    Online,
    /// The data directory only: the server is down or unreachable.
    Offline,
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
#[derive(Debug, Clone, PartialEq)]
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

/// Everything `wal-status` could gather; every part is optional.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub mode: Mode,
    /// Seconds since the epoch.
    pub now: f64,
    pub server_version: Option<String>,
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
    /// Things that could not be read: `(area, message)`.
    pub problems: Vec<(String, String)>,
}

impl Observation {
    pub fn new(mode: Mode, now: f64, segment_size: u64) -> Observation {
        Observation {
            mode,
            now,
            server_version: None,
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
            problems: Vec::new(),
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
}

/// The directory and its file system.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct WalReport {
    pub bytes: Option<u64>,
    pub segments: Option<u64>,
    pub max_wal_size_bytes: Option<i64>,
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
    pub in_recovery: Option<bool>,
    pub system_identifier: Option<String>,
    pub timeline: Option<u32>,
    pub segment_size: u64,
    pub current_lsn: Option<String>,
    pub current_segment: Option<String>,
    pub redo_lsn: Option<String>,
    pub checkpoint_age_seconds: Option<f64>,
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
    pub pg_wal: WalReport,
    pub server: ServerReport,
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

fn seg_of(name: &str) -> Option<Segment> {
    let base = name.strip_suffix(".partial").unwrap_or(name);
    match WalName::parse(base).ok()? {
        WalName::Segment(s) => Some(s),
        _ => None,
    }
}

/// Segment number of a WAL file name, timeline ignored (as
/// `RemoveOldXlogFiles` compares names from the 9th character on).
fn segno_of(name: &str, segsz: u64) -> Option<u64> {
    seg_of(name).map(|s| s.number(segsz))
}

fn name_of(segno: u64, tli: u32, segsz: u64) -> String {
    Segment::from_number(tli, segno, segsz).to_string()
}

struct Ctx<'a> {
    o: &'a Observation,
    t: &'a Thresholds,
    segsz: u64,
    /// Current position and its segment number.
    cur: Option<(Lsn, u64)>,
}

impl Ctx<'_> {
    fn retained(&self, segno: u64) -> Option<u64> {
        let (lsn, _) = self.cur?;
        Some(lsn.0.saturating_sub(segno * self.segsz))
    }

    fn archiving_active(&self) -> Option<bool> {
        let mode = self.o.settings.archive_mode.as_deref()?;
        Some(match mode {
            "always" => true,
            "on" => self.o.in_recovery != Some(true),
            _ => false,
        })
    }

    fn archive_configured(&self) -> Option<bool> {
        let s = &self.o.settings;
        let cmd = s.archive_command.as_deref()?;
        let lib = s.archive_library.as_deref().unwrap_or("");
        Some(!(cmd.trim().is_empty() || cmd == "(disabled)") || !lib.trim().is_empty())
    }

    /// `.ready` WAL files (segments and partials), oldest first.
    fn ready(&self) -> Option<Vec<&StatusFile>> {
        let files = self.o.status_files.as_ref()?;
        let mut r: Vec<&StatusFile> = files
            .iter()
            .filter(|f| f.ready && seg_of(&f.name).is_some())
            .collect();
        r.sort_by(|a, b| a.name[8..].cmp(&b.name[8..]).then(a.name.cmp(&b.name)));
        Some(r)
    }

    fn all_ready_count(&self) -> Option<u64> {
        self.o
            .status_files
            .as_ref()
            .map(|f| f.iter().filter(|f| f.ready).count() as u64)
    }
}

/// WAL generation rate from the completion times of the segments whose
/// status files are still there (`.ready` and `.done`, by mtime).
fn wal_rate(files: &[StatusFile], segsz: u64, now: f64) -> Option<f64> {
    let mut times: Vec<f64> = files
        .iter()
        .filter(|f| seg_of(&f.name).is_some() && now - f.mtime < 3600.0)
        .map(|f| f.mtime)
        .collect();
    if times.len() < 3 {
        return None;
    }
    times.sort_by(f64::total_cmp);
    // Up to now, not to the newest file: a burst followed by silence is not
    // a sustained rate.
    let span = now.max(times[times.len() - 1]) - times[0];
    (span >= 1.0).then(|| (times.len() - 1) as f64 * segsz as f64 / span)
}

/// Archive rate from when recent `.done` files were renamed (ctime).
fn archive_rate(files: &[StatusFile], segsz: u64, now: f64) -> Option<f64> {
    let mut times: Vec<f64> = files
        .iter()
        .filter(|f| !f.ready && seg_of(&f.name).is_some())
        .filter_map(|f| f.ctime)
        .filter(|c| now - c < 3600.0)
        .collect();
    if times.len() < 3 {
        return None;
    }
    times.sort_by(f64::total_cmp);
    let span = times[times.len() - 1] - times[0];
    (span >= 1.0).then(|| (times.len() - 1) as f64 * segsz as f64 / span)
}

/// Computes the report.
pub fn diagnose(o: &Observation, t: &Thresholds) -> Report {
    let segsz = o.segment_size;
    let tli = o.timeline.unwrap_or(1);
    let cur = o.current_lsn.map(|l| (l, l.0 / segsz));
    let ctx = Ctx { o, t, segsz, cur };
    let mut checks = Vec::new();

    // Retention sources.
    let mut sources: Vec<(u64, Retention, u8)> = Vec::new();
    let push_source =
        |sources: &mut Vec<(u64, Retention, u8)>, segno: u64, kind, detail: String, prio| {
            let retained = ctx.retained(segno).unwrap_or(0);
            sources.push((
                segno,
                Retention {
                    kind,
                    detail,
                    oldest_segment: name_of(segno, tli, segsz),
                    retained_bytes: retained,
                },
                prio,
            ));
        };

    // The archiver.
    let archiver_kind = archive_kind(&ctx);
    let ready = ctx.ready();
    if ctx.archiving_active() != Some(false) {
        if let Some(oldest) = ready.as_ref().and_then(|r| r.first()) {
            if let Some(segno) = segno_of(&oldest.name, segsz) {
                push_source(
                    &mut sources,
                    segno,
                    archiver_kind,
                    format!("{}.ready", oldest.name),
                    0,
                );
            }
        }
    }

    // Slots.
    let slot_keep = o.settings.max_slot_wal_keep_size.filter(|v| *v >= 0);
    if let (Some(slots), Some((_, cur_seg))) = (&o.slots, cur) {
        let holding = slots
            .iter()
            .filter(|s| !s.invalidated && s.wal_status.as_deref() != Some("lost"))
            .filter_map(|s| s.restart_lsn.map(|l| (l, s)))
            .min_by_key(|(l, _)| *l);
        if let Some((lsn, slot)) = holding {
            let mut segno = lsn.0 / segsz;
            if let Some(keep) = slot_keep {
                let keep_segs = keep as u64 / segsz;
                if cur_seg.saturating_sub(segno) > keep_segs {
                    segno = cur_seg - keep_segs;
                }
            }
            push_source(
                &mut sources,
                segno,
                CauseKind::ReplicationSlot,
                slot.name.clone(),
                1,
            );
        }
    }

    // wal_keep_size.
    if let (Some(keep), Some((_, cur_seg))) = (o.settings.wal_keep_size, cur) {
        let keep_segs = keep.max(0) as u64 / segsz;
        if keep_segs > 0 {
            let segno = cur_seg.saturating_sub(keep_segs).max(1);
            push_source(
                &mut sources,
                segno,
                CauseKind::WalKeepSize,
                format!("wal_keep_size = {}", human_bytes(keep as u64)),
                2,
            );
        }
    }

    // The last checkpoint.
    if let Some(redo) = o.redo_lsn {
        push_source(
            &mut sources,
            redo.0 / segsz,
            CauseKind::Checkpoint,
            format!("REDO {redo}"),
            3,
        );
    }
    sources.sort_by_key(|(segno, _, prio)| (*segno, *prio));

    // Checks.
    let archiver = archiver_report(&ctx);
    checks.extend(archive_checks(&ctx, &archiver, archiver_kind));
    let (slot_reports, slot_checks) = slot_checks(&ctx);
    checks.extend(slot_checks);
    checks.extend(keep_check(&ctx, &sources));
    checks.extend(checkpoint_check(&ctx));
    let (wal_report, growing) = wal_report(&ctx, &sources, &archiver);
    checks.extend(pg_wal_checks(&ctx, &wal_report, growing));
    checks.extend(archive_content_checks(&ctx));
    for (area, msg) in &o.problems {
        checks.push(Check {
            id: "read",
            status: Status::Unknown,
            summary: format!("could not read {area}: {msg}"),
            evidence: vec![],
            remedy: {
                let m = msg.to_ascii_lowercase();
                (m.contains("permission denied") || m.contains("hidden from this role")).then(|| {
                    "run walg wal-status as a role with pg_monitor, or as the postgres OS user with --pgdata".into()
                })
            },
        });
    }

    // The binding cause and the next one.
    let binding = sources.first().map(|(_, r, _)| r.clone());
    let over_max = match (wal_report.bytes, o.settings.max_wal_size) {
        (Some(b), Some(m)) if m > 0 => b as f64 > m as f64 * 1.1,
        _ => false,
    };
    let cause = match &binding {
        Some(r) if r.kind == CauseKind::Checkpoint && !over_max && !checkpoint_stuck(&ctx) => {
            no_cause(&wal_report)
        }
        Some(r) => cause_for(&ctx, r, &archiver),
        None => no_cause(&wal_report),
    };
    let next_cause = sources
        .iter()
        .skip(1)
        .find(|(_, r, _)| binding.as_ref().is_some_and(|b| b.kind != r.kind))
        .map(|(_, r, _)| cause_for(&ctx, r, &archiver));

    let retention: Vec<Retention> = sources.into_iter().map(|(_, r, _)| r).collect();
    checks.sort_by_key(|c| std::cmp::Reverse(c.status.rank()));

    let anything_read = o.current_lsn.is_some()
        || o.status_files.is_some()
        || o.archiver.is_some()
        || o.pg_wal.is_some()
        || o.slots.is_some();
    let worst = checks
        .iter()
        .map(|c| c.status)
        .max_by_key(|s| s.rank())
        .unwrap_or(Status::Ok);
    let status = if !anything_read {
        Status::Unknown
    } else if worst == Status::Unknown {
        // Something could not be looked at: not a clean bill of health.
        Status::Warning
    } else {
        worst
    };
    let headline = headline(&ctx, &cause, &wal_report, growing, &checks, status);
    let server = ServerReport {
        version: o.server_version.clone(),
        in_recovery: o.in_recovery,
        system_identifier: o.system_identifier.map(|s| s.to_string()),
        timeline: o.timeline,
        segment_size: segsz,
        current_lsn: o.current_lsn.map(|l| l.to_string()),
        current_segment: cur.map(|(_, s)| name_of(s, tli, segsz)),
        redo_lsn: o.redo_lsn.map(|l| l.to_string()),
        checkpoint_age_seconds: o.checkpoint_time.map(|c| o.now - c),
    };
    Report {
        status,
        mode: o.mode,
        headline,
        cause,
        next_cause,
        retention,
        archiver,
        slots: slot_reports,
        pg_wal: wal_report,
        server,
        checks,
    }
}

/// What kind of archiver trouble, if the archiver binds.
fn archive_kind(ctx: &Ctx<'_>) -> CauseKind {
    if ctx.archive_configured() == Some(false) {
        return CauseKind::ArchiveNotConfigured;
    }
    let o = ctx.o;
    if let Some(a) = &o.archiver {
        let failing = a.failed_count > 0
            && match (a.last_failed_time, a.last_archived_time) {
                (Some(f), Some(s)) => f >= s,
                (Some(_), None) => true,
                _ => false,
            };
        return if failing {
            CauseKind::ArchiveFailing
        } else {
            CauseKind::ArchiveBacklog
        };
    }
    // Offline: no progress since the oldest waiting file appeared means the
    // archiver was stuck, not slow.
    if let (Some(ready), Some(files)) = (ctx.ready(), &o.status_files) {
        if let Some(oldest) = ready.first() {
            let last_done = files
                .iter()
                .filter(|f| !f.ready)
                .filter_map(|f| f.ctime)
                .fold(None::<f64>, |m, c| Some(m.map_or(c, |m| m.max(c))));
            let stuck = match last_done {
                Some(d) => d < oldest.mtime,
                None => true,
            };
            if stuck && o.now - oldest.mtime > 1.0 {
                return CauseKind::ArchiveFailing;
            }
        }
    }
    CauseKind::ArchiveBacklog
}

fn archiver_report(ctx: &Ctx<'_>) -> ArchiverReport {
    let o = ctx.o;
    let ready = ctx.ready();
    let oldest = ready.as_ref().and_then(|r| r.first().copied());
    let a = o.archiver.as_ref();
    ArchiverReport {
        archive_mode: o.settings.archive_mode.clone(),
        configured: ctx.archive_configured(),
        ready_count: ctx.all_ready_count(),
        oldest_ready: oldest.map(|f| f.name.clone()),
        oldest_ready_age_seconds: oldest.map(|f| o.now - f.mtime),
        archived_count: a.map(|a| a.archived_count),
        failed_count: a.map(|a| a.failed_count),
        last_failed_wal: a.and_then(|a| a.last_failed_wal.clone()),
        last_failed_age_seconds: a.and_then(|a| a.last_failed_time).map(|t| o.now - t),
        last_archived_wal: a.and_then(|a| a.last_archived_wal.clone()).or_else(|| {
            // Offline: the most recently renamed `.done`.
            o.status_files.as_ref().and_then(|f| {
                f.iter()
                    .filter(|f| !f.ready && f.ctime.is_some())
                    .max_by(|x, y| x.ctime.unwrap_or(0.0).total_cmp(&y.ctime.unwrap_or(0.0)))
                    .map(|f| f.name.clone())
            })
        }),
        last_archived_age_seconds: a
            .and_then(|a| a.last_archived_time)
            .or_else(|| {
                o.status_files.as_ref().and_then(|f| {
                    f.iter()
                        .filter(|f| !f.ready)
                        .filter_map(|f| f.ctime)
                        .fold(None, |m: Option<f64>, c| Some(m.map_or(c, |m| m.max(c))))
                })
            })
            .map(|t| o.now - t),
        wal_rate_bytes_per_second: o
            .status_files
            .as_deref()
            .and_then(|f| wal_rate(f, ctx.segsz, o.now)),
        archive_rate_bytes_per_second: o
            .status_files
            .as_deref()
            .and_then(|f| archive_rate(f, ctx.segsz, o.now)),
    }
}

fn archive_checks(ctx: &Ctx<'_>, a: &ArchiverReport, kind: CauseKind) -> Vec<Check> {
    let o = ctx.o;
    let t = ctx.t;
    let mut out = Vec::new();
    let mode = o.settings.archive_mode.as_deref();
    let ready = a.ready_count.unwrap_or(0);
    let age = a.oldest_ready_age_seconds.unwrap_or(0.0);
    match (ctx.archiving_active(), mode) {
        (None, _) => out.push(Check {
            id: "archiver",
            status: Status::Unknown,
            summary: "archive_mode could not be read".into(),
            evidence: vec![],
            remedy: None,
        }),
        (Some(false), Some(m)) => out.push(Check {
            id: "archiver",
            status: Status::Ok,
            summary: if m == "on" && o.in_recovery == Some(true) {
                "standby with archive_mode = on: the primary archives; set archive_mode = always to archive here too".into()
            } else {
                format!("archive_mode = {m}: nothing is archived, and nothing waits for the archiver")
            },
            evidence: vec![],
            remedy: None,
        }),
        _ => {
            let evidence = archiver_evidence(a);
            let oldest = a.oldest_ready.clone().unwrap_or_default();
            match kind {
                CauseKind::ArchiveNotConfigured => out.push(Check {
                    id: "archiver",
                    status: if ready > 0 { Status::Critical } else { Status::Warning },
                    summary: format!(
                        "archive_mode = {} but archive_command and archive_library are empty: {ready} WAL files wait, none will ever be archived",
                        mode.unwrap_or("on")
                    ),
                    evidence,
                    remedy: Some(
                        "ALTER SYSTEM SET archive_command = 'walg wal-push %p'; SELECT pg_reload_conf();  (or ALTER SYSTEM SET archive_mode = off and restart if nothing should be archived)".into(),
                    ),
                }),
                CauseKind::ArchiveFailing if ready > 0 => {
                    let stuck = a
                        .last_failed_wal
                        .clone()
                        .filter(|f| o.mode == Mode::Online && !f.is_empty())
                        .unwrap_or_else(|| oldest.clone());
                    let since = failing_since(ctx, a);
                    out.push(Check {
                        id: "archiver",
                        status: Status::Critical,
                        summary: match since {
                            Some(s) => format!(
                                "archive_command has failed on {stuck} for {}; {ready} WAL files wait",
                                human_secs(s)
                            ),
                            None => format!("archive_command is failing on {stuck}; {ready} WAL files wait"),
                        },
                        evidence,
                        remedy: Some(format!(
                            "read the server log for \"archive command failed\" and the command's own error on {stuck}; the archiver retries the oldest file forever and never skips it. Test by hand as the postgres user: cd $PGDATA && {}",
                            o.settings
                                .archive_command
                                .as_deref()
                                .filter(|c| !c.is_empty())
                                .map(|c| c.replace("%p", &format!("pg_wal/{stuck}")).replace("%f", &stuck))
                                .unwrap_or_else(|| "<archive_command>".into())
                        )),
                    });
                }
                _ if ready > 0
                    && (age > t.ready_age_warn || ready as usize >= t.ready_count_warn) =>
                {
                    let status = if age > t.ready_age_crit {
                        Status::Critical
                    } else {
                        Status::Warning
                    };
                    let mut summary = format!(
                        "archiving is behind: {ready} WAL files wait, the oldest ({oldest}) for {}",
                        human_secs(age)
                    );
                    if let (Some(w), Some(r)) =
                        (a.wal_rate_bytes_per_second, a.archive_rate_bytes_per_second)
                    {
                        summary.push_str(&format!(
                            "; WAL is written at {}/s, archived at {}/s",
                            human_bytes(w as u64),
                            human_bytes(r as u64)
                        ));
                    }
                    out.push(Check {
                        id: "archiver",
                        status,
                        summary,
                        evidence,
                        remedy: Some(
                            "archiving is slower than WAL generation: raise WALG_UPLOAD_CONCURRENCY (walg uploads the next .ready files ahead), use a faster storage or compression (WALG_COMPRESSION_METHOD=lz4), or check the storage's latency".into(),
                        ),
                    });
                }
                _ => out.push(Check {
                    id: "archiver",
                    status: Status::Ok,
                    summary: match &a.last_archived_wal {
                        Some(l) => format!(
                            "archiving keeps up: {ready} WAL files wait; last archived {l}{}",
                            a.last_archived_age_seconds
                                .map(|s| format!(" {} ago", human_secs(s)))
                                .unwrap_or_default()
                        ),
                        None => format!("archiving keeps up: {ready} WAL files wait"),
                    },
                    evidence,
                    remedy: None,
                }),
            }
        }
    }
    out
}

fn failing_since(ctx: &Ctx<'_>, a: &ArchiverReport) -> Option<f64> {
    // Failing since the later of the last success and the oldest waiting
    // file's creation: nothing was archived after that.
    let o = ctx.o;
    let oldest = a.oldest_ready_age_seconds;
    let last_ok = a.last_archived_age_seconds;
    match (oldest, last_ok) {
        (Some(r), Some(l)) => Some(r.min(l)),
        (Some(r), None) => Some(r),
        (None, l) => l.or_else(|| o.archiver.as_ref()?.last_failed_time.map(|t| o.now - t)),
    }
}

fn archiver_evidence(a: &ArchiverReport) -> Vec<String> {
    let mut e = Vec::new();
    if let Some(n) = a.ready_count {
        let mut s = format!("{n} .ready files");
        if let (Some(o), Some(age)) = (&a.oldest_ready, a.oldest_ready_age_seconds) {
            s.push_str(&format!(", oldest {o} ({} old)", human_secs(age)));
        }
        e.push(s);
    }
    if let Some(f) = a.failed_count {
        let mut s = format!("pg_stat_archiver: failed_count {f}");
        if let Some(w) = &a.last_failed_wal {
            s.push_str(&format!(", last_failed_wal {w}"));
            if let Some(age) = a.last_failed_age_seconds {
                s.push_str(&format!(" {} ago", human_secs(age)));
            }
        }
        if let Some(w) = &a.last_archived_wal {
            s.push_str(&format!(", last_archived_wal {w}"));
            if let Some(age) = a.last_archived_age_seconds {
                s.push_str(&format!(" {} ago", human_secs(age)));
            }
        }
        e.push(s);
    } else if let Some(w) = &a.last_archived_wal {
        e.push(format!(
            "last archived (newest .done): {w}{}",
            a.last_archived_age_seconds
                .map(|s| format!(", {} ago", human_secs(s)))
                .unwrap_or_default()
        ));
    }
    if let Some(w) = a.wal_rate_bytes_per_second {
        e.push(format!("WAL rate about {}/s", human_bytes(w as u64)));
    }
    e
}

fn slot_checks(ctx: &Ctx<'_>) -> (Vec<SlotReport>, Vec<Check>) {
    let o = ctx.o;
    let Some(slots) = &o.slots else {
        return (vec![], vec![]);
    };
    let max_wal = o.settings.max_wal_size.filter(|m| *m > 0).map(|m| m as u64);
    let warn_at = ctx.t.slot_retained_warn.or(max_wal);
    let mut reports = Vec::new();
    let mut checks = Vec::new();
    for s in slots {
        let retained = s.restart_lsn.and_then(|l| {
            let (cur, _) = ctx.cur?;
            Some(cur.0.saturating_sub(l.0))
        });
        let wal_status = s.wal_status.clone().or_else(|| {
            // Offline: what GetWALAvailability would say.
            if s.invalidated {
                return Some("lost".into());
            }
            let r = retained?;
            Some(match max_wal {
                Some(m) if r > m + ctx.segsz => "extended".into(),
                _ => "reserved".into(),
            })
        });
        reports.push(SlotReport {
            name: s.name.clone(),
            slot_type: s.slot_type.clone(),
            active: s.active,
            temporary: s.temporary,
            restart_lsn: s.restart_lsn.map(|l| l.to_string()),
            retained_bytes: retained,
            wal_status: wal_status.clone(),
            safe_wal_size: s.safe_wal_size,
        });
        let activity = match s.active {
            Some(true) => "active",
            Some(false) => "inactive",
            None => "activity unknown offline",
        };
        let mut evidence = vec![format!(
            "{} slot, {activity}, restart_lsn {}, wal_status {}",
            s.slot_type,
            s.restart_lsn
                .map(|l| l.to_string())
                .unwrap_or_else(|| "none".into()),
            wal_status.as_deref().unwrap_or("unknown")
        )];
        if let Some(safe) = s.safe_wal_size {
            evidence.push(format!(
                "safe_wal_size {}: max_slot_wal_keep_size invalidates the slot after that much more WAL",
                human_bytes(safe.max(0) as u64)
            ));
        }
        let drop_sql = format!(
            "SELECT pg_drop_replication_slot('{}');",
            s.name.replace('\'', "''")
        );
        let lost = s.invalidated || wal_status.as_deref() == Some("lost");
        if lost {
            checks.push(Check {
                id: "replication_slot",
                status: Status::Warning,
                summary: format!(
                    "replication slot \"{}\" is invalidated: it holds no WAL any more, and its consumer can no longer resume from it",
                    s.name
                ),
                evidence,
                remedy: Some(format!(
                    "rebuild the consumer (a new base backup for a standby) and recreate the slot; {drop_sql}"
                )),
            });
            continue;
        }
        let Some(retained) = retained else {
            continue;
        };
        let mut status = Status::Ok;
        let mut summary = format!(
            "replication slot \"{}\" ({} , {activity}) retains {}",
            s.name,
            s.slot_type,
            human_bytes(retained)
        )
        .replace(" ,", ",");
        let mut remedy = None;
        if warn_at.is_some_and(|w| retained > w) || wal_status.as_deref() == Some("unreserved") {
            status = Status::Warning;
            remedy = Some(if s.active == Some(true) {
                format!(
                    "the consumer is connected but lags: check pg_stat_replication for slot \"{}\"; if it cannot catch up, set max_slot_wal_keep_size to bound what a slot may hold",
                    s.name
                )
            } else {
                format!(
                    "restart the slot's consumer (standby, pg_receivewal, logical subscriber), or drop the slot if nothing uses it: {drop_sql}  Bound the damage with ALTER SYSTEM SET max_slot_wal_keep_size = '...'; SELECT pg_reload_conf();"
                )
            });
        }
        if s.slot_type == "logical" {
            if let (Some(c), Some(r)) = (s.confirmed_flush, s.restart_lsn) {
                let behind = c.0.saturating_sub(r.0);
                if behind > ctx.segsz {
                    evidence.push(format!(
                        "confirmed_flush_lsn {c} is {} ahead of restart_lsn: decoding must restart from an old transaction",
                        human_bytes(behind)
                    ));
                    if let Some(x) = &o.oldest_xact {
                        let age = o.now - x.xact_start;
                        let what = if x.prepared {
                            format!(
                                "prepared transaction {:?} ({} old)",
                                x.gid.as_deref().unwrap_or("?"),
                                human_secs(age)
                            )
                        } else {
                            format!(
                                "transaction of pid {} open for {}{}",
                                x.pid,
                                human_secs(age),
                                x.state
                                    .as_deref()
                                    .map(|s| format!(" ({s})"))
                                    .unwrap_or_default()
                            )
                        };
                        summary.push_str(&format!("; pinned by the {what}"));
                        if status == Status::Ok
                            && (age > ctx.t.xact_age_warn || behind > ctx.segsz * 4)
                        {
                            status = Status::Warning;
                        }
                        remedy = Some(if x.prepared {
                            format!(
                                "COMMIT PREPARED or ROLLBACK PREPARED {:?}; the slot advances once no older transaction is open",
                                x.gid.as_deref().unwrap_or("?")
                            )
                        } else {
                            format!(
                                "end the old transaction (SELECT pg_terminate_backend({}); if it must go); the slot advances once no older transaction is open",
                                x.pid
                            )
                        });
                    }
                }
            }
        }
        checks.push(Check {
            id: "replication_slot",
            status,
            summary,
            evidence,
            remedy,
        });
    }
    (reports, checks)
}

fn keep_check(ctx: &Ctx<'_>, sources: &[(u64, Retention, u8)]) -> Option<Check> {
    let keep = ctx.o.settings.wal_keep_size?;
    if keep <= 0 {
        return None;
    }
    let max_wal = ctx.o.settings.max_wal_size.unwrap_or(i64::MAX);
    let binding = sources
        .first()
        .is_some_and(|(_, r, _)| r.kind == CauseKind::WalKeepSize);
    let status = if binding && keep > max_wal {
        Status::Warning
    } else {
        Status::Ok
    };
    Some(Check {
        id: "wal_keep_size",
        status,
        summary: format!(
            "wal_keep_size = {} keeps that much WAL at all times{}",
            human_bytes(keep as u64),
            if binding {
                " and holds the oldest segment now"
            } else {
                ""
            }
        ),
        evidence: vec![format!(
            "max_wal_size {}",
            ctx.o
                .settings
                .max_wal_size
                .map(|m| human_bytes(m.max(0) as u64))
                .unwrap_or_else(|| "unknown".into())
        )],
        remedy: (status != Status::Ok).then(|| {
            "wal_keep_size explains a large pg_wal, never a growing one; lower it if standbys use slots or an archive: ALTER SYSTEM SET wal_keep_size = '1GB'; SELECT pg_reload_conf();".into()
        }),
    })
}

/// A checkpoint (or restartpoint) that should have happened long ago.
fn checkpoint_stuck(ctx: &Ctx<'_>) -> bool {
    let o = ctx.o;
    let (Some(time), Some(timeout), Some((cur, _)), Some(redo)) = (
        o.checkpoint_time,
        o.settings.checkpoint_timeout,
        ctx.cur,
        o.redo_lsn,
    ) else {
        return false;
    };
    let distance = cur.0.saturating_sub(redo.0);
    let age = o.now - time;
    let max_wal = o.settings.max_wal_size.unwrap_or(i64::MAX).max(0) as u64;
    // An idle server skips checkpoints: age alone means nothing.
    (age > 2.0 * timeout + 60.0 && distance > 2 * ctx.segsz) || distance > max_wal.saturating_mul(2)
}

fn checkpoint_check(ctx: &Ctx<'_>) -> Option<Check> {
    let o = ctx.o;
    let redo = o.redo_lsn?;
    let (cur, _) = ctx.cur?;
    let distance = cur.0.saturating_sub(redo.0);
    let age = o.checkpoint_time.map(|t| o.now - t);
    let what = if o.in_recovery == Some(true) {
        "restartpoint"
    } else {
        "checkpoint"
    };
    let stuck = checkpoint_stuck(ctx);
    Some(Check {
        id: "checkpoint",
        status: if stuck { Status::Warning } else { Status::Ok },
        summary: format!(
            "last {what}{}; REDO {redo} is {} behind",
            age.map(|a| format!(" {} ago", human_secs(a))).unwrap_or_default(),
            human_bytes(distance)
        ),
        evidence: vec![format!(
            "checkpoint_timeout {}, max_wal_size {}",
            o.settings
                .checkpoint_timeout
                .map(human_secs)
                .unwrap_or_else(|| "unknown".into()),
            o.settings
                .max_wal_size
                .map(|m| human_bytes(m.max(0) as u64))
                .unwrap_or_else(|| "unknown".into())
        )],
        remedy: stuck.then(|| {
            if o.in_recovery == Some(true) {
                "a standby removes WAL only at restartpoints, which follow the primary's checkpoint records: check that the standby replays (pg_stat_wal_receiver, replay lag) and that the primary checkpoints".into()
            } else {
                "checkpoints are late or failing: look for checkpointer errors in the server log; run CHECKPOINT; consider a lower checkpoint_timeout or max_wal_size".into()
            }
        }),
    })
}

fn wal_report(
    ctx: &Ctx<'_>,
    sources: &[(u64, Retention, u8)],
    a: &ArchiverReport,
) -> (WalReport, bool) {
    let o = ctx.o;
    let d = o.pg_wal.as_ref();
    let binding = sources.first().map(|(_, r, _)| r.kind);
    // pg_wal grows while a source other than the checkpoint binds: nothing
    // is removed and every new segment stays.
    let growing = matches!(
        binding,
        Some(
            CauseKind::ArchiveFailing
                | CauseKind::ArchiveNotConfigured
                | CauseKind::ArchiveBacklog
                | CauseKind::ReplicationSlot
        )
    ) && {
        let inactive_or_stuck = match binding {
            Some(CauseKind::ReplicationSlot) => o
                .slots
                .as_ref()
                .and_then(|s| {
                    s.iter()
                        .find(|s| Some(&s.name) == sources.first().map(|x| &x.1.detail))
                })
                .is_none_or(|s| s.active != Some(true)),
            _ => true,
        };
        inactive_or_stuck
    };
    let growth = if growing {
        match (
            binding,
            a.wal_rate_bytes_per_second,
            a.archive_rate_bytes_per_second,
        ) {
            (Some(CauseKind::ArchiveBacklog), Some(w), Some(r)) => Some((w - r).max(0.0)),
            (_, Some(w), _) => Some(w),
            _ => None,
        }
    } else {
        None
    };
    let available = d.and_then(|d| d.fs_available);
    let until_full = match (growth, available) {
        (Some(g), Some(f)) if g > 0.0 => Some(f as f64 / g),
        _ => None,
    };
    (
        WalReport {
            bytes: d.map(|d| d.bytes),
            segments: d.map(|d| d.segments),
            max_wal_size_bytes: o.settings.max_wal_size,
            fs_total_bytes: d.and_then(|d| d.fs_total),
            fs_free_bytes: available,
            growth_bytes_per_second: growth,
            seconds_until_full: until_full,
        },
        growing,
    )
}

fn pg_wal_checks(ctx: &Ctx<'_>, w: &WalReport, growing: bool) -> Vec<Check> {
    let o = ctx.o;
    let t = ctx.t;
    let mut out = Vec::new();
    if let Some(bytes) = w.bytes {
        let max = o.settings.max_wal_size;
        let over = max.is_some_and(|m| m > 0 && bytes as f64 > m as f64 * 1.1);
        out.push(Check {
            id: "pg_wal_size",
            status: if over { Status::Warning } else { Status::Ok },
            summary: format!(
                "pg_wal holds {}{}{}",
                human_bytes(bytes),
                max.map(|m| format!(
                    " ({} max_wal_size {})",
                    if over { "over" } else { "within" },
                    human_bytes(m.max(0) as u64)
                ))
                .unwrap_or_default(),
                if growing { " and grows" } else { "" }
            ),
            evidence: w
                .segments
                .map(|s| vec![format!("{s} segment files")])
                .unwrap_or_default(),
            remedy: over.then(|| {
                "max_wal_size is a soft limit; pg_wal exceeds it because of the binding cause above: fix that, not max_wal_size".into()
            }),
        });
    }
    if let (Some(total), Some(free)) = (w.fs_total_bytes, w.fs_free_bytes) {
        let pct = if total > 0 {
            free as f64 * 100.0 / total as f64
        } else {
            0.0
        };
        let mut status = if pct < t.fs_free_crit_pct {
            Status::Critical
        } else if pct < t.fs_free_warn_pct {
            Status::Warning
        } else {
            Status::Ok
        };
        let mut summary = format!(
            "file system of pg_wal: {} free of {} ({pct:.0}%)",
            human_bytes(free),
            human_bytes(total)
        );
        if let (Some(g), Some(s)) = (w.growth_bytes_per_second, w.seconds_until_full) {
            summary.push_str(&format!(
                "; full in about {} at {}/s",
                human_secs(s),
                human_bytes(g as u64)
            ));
            if s < t.full_crit_seconds {
                status = Status::Critical;
            } else if s < t.full_warn_seconds && status == Status::Ok {
                status = Status::Warning;
            }
        }
        out.push(Check {
            id: "filesystem",
            status,
            summary,
            evidence: vec![],
            remedy: (status != Status::Ok).then(|| {
                "a full pg_wal stops PostgreSQL (PANIC): fix the binding cause first; as a last resort add space to the file system holding pg_wal. Never delete files from pg_wal by hand".into()
            }),
        });
    }
    if let Some(d) = &o.pg_wal {
        let old_temp: Vec<&ForeignFile> =
            d.temp.iter().filter(|f| f.age_seconds > 3600.0).collect();
        if !d.foreign.is_empty() || !old_temp.is_empty() || !d.orphan_status.is_empty() {
            let mut evidence: Vec<String> = d
                .foreign
                .iter()
                .chain(old_temp.iter().copied())
                .take(20)
                .map(|f| {
                    format!(
                        "{} ({}, {} old)",
                        f.name,
                        human_bytes(f.bytes),
                        human_secs(f.age_seconds)
                    )
                })
                .collect();
            evidence.extend(
                d.orphan_status
                    .iter()
                    .take(10)
                    .map(|n| format!("archive_status/{n}.ready without its segment")),
            );
            let bytes: u64 = d
                .foreign
                .iter()
                .chain(old_temp.iter().copied())
                .map(|f| f.bytes)
                .sum();
            out.push(Check {
                id: "foreign_files",
                status: Status::Warning,
                summary: format!(
                    "{} files in pg_wal are not PostgreSQL's ({}); PostgreSQL never removes them",
                    d.foreign.len() + old_temp.len() + d.orphan_status.len(),
                    human_bytes(bytes)
                ),
                evidence,
                remedy: Some(
                    "move them out of pg_wal after checking what wrote them (a copy left by hand, an old tool); never remove segment files".into(),
                ),
            });
        } else {
            out.push(Check {
                id: "foreign_files",
                status: Status::Ok,
                summary: "no foreign or orphan files in pg_wal".into(),
                evidence: vec![],
                remedy: None,
            });
        }
    }
    out
}

fn archive_content_checks(ctx: &Ctx<'_>) -> Vec<Check> {
    let Some(a) = &ctx.o.archive else {
        return vec![];
    };
    let mut out = Vec::new();
    let missing: Vec<&String> = a
        .archived
        .iter()
        .filter(|(_, s)| s.is_none())
        .map(|(n, _)| n)
        .collect();
    if !a.errors.is_empty() {
        out.push(Check {
            id: "archive",
            status: Status::Unknown,
            summary: format!("could not check the archive: {}", a.errors.join("; ")),
            evidence: vec![],
            remedy: Some("walg st check shows each storage's state".into()),
        });
    } else if !missing.is_empty() {
        out.push(Check {
            id: "archive",
            status: Status::Critical,
            summary: format!(
                "PostgreSQL marked {} archived but no configured storage has it",
                missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            ),
            evidence: vec![
                "archive_command may point to another archive than walg's settings, or the archive lost files".into(),
            ],
            remedy: Some(
                "compare archive_command with walg's configuration; take a new base backup once archiving is right (walg wal-verify checks the whole archive)".into(),
            ),
        });
    } else if !a.archived.is_empty() {
        out.push(Check {
            id: "archive",
            status: Status::Ok,
            summary: format!(
                "the archive holds what PostgreSQL marked archived ({})",
                a.archived
                    .iter()
                    .map(|(n, s)| format!("{n} in {}", s.as_deref().unwrap_or("?")))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            evidence: vec![],
            remedy: None,
        });
    }
    if let Some((name, Some(storage))) = &a.oldest_ready {
        out.push(Check {
            id: "archive_conflict",
            status: Status::Warning,
            summary: format!(
                "{name} still waits for the archiver but storage {storage:?} already holds it"
            ),
            evidence: vec![
                "if archive_command keeps failing on it, the stored copy differs from the local one".into(),
            ],
            remedy: Some(
                "another cluster may archive into the same prefix, or a different copy was stored; compare the system identifiers; never remove the local file".into(),
            ),
        });
    }
    out
}

fn cause_for(ctx: &Ctx<'_>, r: &Retention, a: &ArchiverReport) -> Cause {
    let o = ctx.o;
    let retained = Some(r.retained_bytes);
    match r.kind {
        CauseKind::ArchiveNotConfigured => Cause {
            kind: r.kind,
            summary: format!(
                "archive_mode = {} but no archive_command or archive_library is set: {} WAL files wait forever",
                o.settings.archive_mode.as_deref().unwrap_or("on"),
                a.ready_count.unwrap_or(0)
            ),
            remedy: Some("ALTER SYSTEM SET archive_command = 'walg wal-push %p'; SELECT pg_reload_conf();".into()),
            segment: a.oldest_ready.clone(),
            slot: None,
            retained_bytes: retained,
        },
        CauseKind::ArchiveFailing => {
            let stuck = a
                .last_failed_wal
                .clone()
                .filter(|_| o.mode == Mode::Online)
                .or_else(|| a.oldest_ready.clone());
            let since = failing_since(ctx, a);
            let stuck_s = stuck.clone().unwrap_or_default();
            Cause {
                kind: r.kind,
                summary: match since {
                    Some(s) => format!("archive_command has failed on {stuck_s} for {}", human_secs(s)),
                    None => format!("archive_command is failing on {stuck_s}"),
                },
                remedy: Some(format!(
                    "fix archive_command (the server log has its error for {stuck_s}); PostgreSQL retries it forever and archives the rest once it succeeds"
                )),
                segment: stuck,
                slot: None,
                retained_bytes: retained,
            }
        }
        CauseKind::ArchiveBacklog => Cause {
            kind: r.kind,
            summary: format!(
                "archiving is slower than WAL generation: {} WAL files wait, the oldest {} for {}",
                a.ready_count.unwrap_or(0),
                a.oldest_ready.as_deref().unwrap_or("?"),
                a.oldest_ready_age_seconds.map(human_secs).unwrap_or_else(|| "?".into())
            ),
            remedy: Some("raise WALG_UPLOAD_CONCURRENCY, or use a faster storage; the backlog drains once archiving outpaces WAL".into()),
            segment: a.oldest_ready.clone(),
            slot: None,
            retained_bytes: retained,
        },
        CauseKind::ReplicationSlot => {
            let slot = o
                .slots
                .as_ref()
                .and_then(|s| s.iter().find(|s| s.name == r.detail));
            let activity = match slot.and_then(|s| s.active) {
                Some(true) => "active",
                Some(false) => "inactive",
                None => "",
            };
            let kind = slot.map(|s| s.slot_type.as_str()).unwrap_or("");
            let desc = [kind, activity]
                .iter()
                .filter(|s| !s.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join(", ");
            let pinned = slot.is_some_and(|s| s.slot_type == "logical") && o.oldest_xact.is_some();
            Cause {
                kind: r.kind,
                summary: format!(
                    "replication slot \"{}\"{} holds {} of WAL{}",
                    r.detail,
                    if desc.is_empty() { String::new() } else { format!(" ({desc})") },
                    human_bytes(r.retained_bytes),
                    if pinned { ", pinned by an old transaction" } else { "" }
                ),
                remedy: Some(if pinned {
                    "end the oldest open transaction (see the replication_slot check); the slot then advances".into()
                } else if slot.and_then(|s| s.active) == Some(true) {
                    "the consumer lags: check it (pg_stat_replication); set max_slot_wal_keep_size to bound the slot".into()
                } else {
                    format!(
                        "restart the slot's consumer, or drop the slot if unused: SELECT pg_drop_replication_slot('{}');",
                        r.detail.replace('\'', "''")
                    )
                }),
                segment: Some(r.oldest_segment.clone()),
                slot: Some(r.detail.clone()),
                retained_bytes: retained,
            }
        }
        CauseKind::WalKeepSize => Cause {
            kind: r.kind,
            summary: format!("{} keeps {} of WAL", r.detail, human_bytes(r.retained_bytes)),
            remedy: Some("lower wal_keep_size if nothing needs it: ALTER SYSTEM SET wal_keep_size = '...'; SELECT pg_reload_conf();".into()),
            segment: Some(r.oldest_segment.clone()),
            slot: None,
            retained_bytes: retained,
        },
        CauseKind::Checkpoint => Cause {
            kind: r.kind,
            summary: format!(
                "WAL since the last checkpoint's {} ({} ) waits for the next checkpoint",
                r.detail,
                human_bytes(r.retained_bytes)
            )
            .replace(" )", ")"),
            remedy: Some(
                "WAL is removed only at checkpoints: check the checkpointer (server log), run CHECKPOINT, or lower checkpoint_timeout / max_wal_size".into(),
            ),
            segment: Some(r.oldest_segment.clone()),
            slot: None,
            retained_bytes: retained,
        },
        CauseKind::None => no_cause(&WalReport::default()),
    }
}

fn no_cause(w: &WalReport) -> Cause {
    Cause {
        kind: CauseKind::None,
        summary: match (w.bytes, w.max_wal_size_bytes) {
            (Some(b), Some(m)) => format!(
                "nothing holds WAL beyond the normal checkpoint cycle (pg_wal {} of max_wal_size {})",
                human_bytes(b),
                human_bytes(m.max(0) as u64)
            ),
            _ => "nothing holds WAL beyond the normal checkpoint cycle".into(),
        },
        remedy: None,
        segment: None,
        slot: None,
        retained_bytes: None,
    }
}

fn headline(
    ctx: &Ctx<'_>,
    cause: &Cause,
    w: &WalReport,
    growing: bool,
    checks: &[Check],
    status: Status,
) -> String {
    let size = w.bytes.map(|b| {
        format!(
            "pg_wal {}{}",
            human_bytes(b),
            if growing { " and growing" } else { "" }
        )
    });
    let full = w
        .seconds_until_full
        .filter(|s| *s < ctx.t.full_warn_seconds)
        .map(|s| format!(" (disk full in about {})", human_secs(s)))
        .unwrap_or_default();
    if status == Status::Unknown {
        let why = checks
            .iter()
            .find(|c| c.id == "read")
            .map(|c| c.summary.clone())
            .unwrap_or_else(|| "no source answered".into());
        return format!("nothing could be read: {why}");
    }
    let lead = match cause.kind {
        CauseKind::None => {
            let worst = checks.first().filter(|c| c.status != Status::Ok);
            match worst {
                Some(c) => c.summary.clone(),
                None if status == Status::Ok => match &ctx.o.settings.archive_mode {
                    Some(m) if m != "off" => {
                        "healthy: archiving keeps up and nothing holds extra WAL".into()
                    }
                    _ => "healthy: nothing holds extra WAL".into(),
                },
                None => cause.summary.clone(),
            }
        }
        _ => cause.summary.clone(),
    };
    match size {
        Some(s) => format!("{s}{full}; {lead}"),
        None => lead,
    }
}

#[cfg(test)]
mod tests;
