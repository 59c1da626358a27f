//! `wal-verify`: can the archive, taken as the union of every storage,
//! restore from the oldest backup to the newest WAL, and does the primary
//! storage hold all of it by itself?
//!
//! The walk runs over segment numbers from the start of the oldest `.backup`
//! (or an explicit start) to the newest segment of the newest timeline (or
//! up to the server's current segment), and for each number expects the
//! copy of the timeline recovery would read ([`Ancestry::timeline_of`]):
//! switches inside a segment, several switches in one segment and any
//! segment size are handled by that one rule. Segments present but outside
//! the ancestry (orphan timelines, parents' copies after a switch,
//! `.partial` files) are never gaps.
//!
//! Statuses: `OK` every expected segment is on the primary; `WARNING` the
//! union is complete but the primary lacks something a failover holds
//! (`wal-repair` fixes it), a segment of the server's "still uploading"
//! window is not archived yet, or a storage could not be listed; `DECLARED_GAP`
//! segments are in no storage because `wal-push` gave them up on purpose
//! over the declared pg_wal budget (their `walg_gaps/` records say when and
//! why; the report names the backups that cannot be rolled forward past
//! them); `FAILURE` a segment or the timeline's history is in no storage
//! without such a record, or timelines contradict each other.
//!
//! What this module does not do: list storages, download history files or
//! ask the server (the caller passes what it found).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::archive::gaps::{DeclaredGaps, GapRun};
use crate::archive::{ArchiveMap, NAMES_SHOWN};
use crate::wal::history::{consistent, Ancestry, HistoryRecord, Span};
use crate::wal::{Segment, WalName};

/// Overall and per-part verdicts; the exit code of `wal-verify`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Ok,
    Warning,
    /// Segments given up on purpose (declared gaps), nothing worse.
    #[serde(rename = "DECLARED_GAP")]
    DeclaredGap,
    Failure,
}

impl Status {
    pub fn exit_code(self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::Warning => 1,
            Status::Failure => 2,
            Status::DeclaredGap => 3,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warning => "WARNING",
            Status::DeclaredGap => "DECLARED_GAP",
            Status::Failure => "FAILURE",
        }
    }
}

/// What the server reported (through a connection), if anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerPosition {
    pub timeline: u32,
    /// The segment being written (segment of `current_lsn - 1`); never
    /// expected in the archive.
    pub current: Segment,
}

/// Inputs of [`verify`] beyond the map.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    pub segment_size: u64,
    /// Parsed `.history` files by timeline; an `Err` is a file that exists
    /// but could not be read or parsed.
    pub histories: BTreeMap<u32, Result<Vec<HistoryRecord>, String>>,
    /// Start here instead of at the oldest backup.
    pub from: Option<Segment>,
    pub server: Option<ServerPosition>,
    /// Segments before the server's current one that may still be on their
    /// way (WAL-G's `WALG_UPLOAD_CONCURRENCY` window).
    pub uploading_window: u64,
    /// Segments given up on purpose (`walg_gaps/` records), with the
    /// records that were read.
    pub declared: DeclaredGaps,
}

/// The checked range.
#[derive(Debug, Clone, Serialize)]
pub struct Range {
    pub from: Option<String>,
    pub to: Option<String>,
    /// The timeline followed (the newest one, or the server's).
    pub timeline: Option<u32>,
    /// Why the range starts where it does.
    pub from_source: String,
    /// Why the range ends where it does.
    pub to_source: String,
}

/// Verdict over the union of all storages.
#[derive(Debug, Clone, Serialize)]
pub struct UnionCheck {
    pub status: Status,
    /// Expected segments in no storage (the first [`NAMES_SHOWN`]).
    pub missing: Vec<String>,
    pub missing_count: u64,
    /// Expected segments not archived yet but inside the server's
    /// uploading window.
    pub uploading: Vec<String>,
}

/// Segments of the range in no storage because `wal-push` gave them up on
/// purpose.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeclaredCheck {
    pub count: u64,
    /// Runs of consecutive given-up segments, each with its first readable
    /// record (when, why, pg_wal's size, the budget).
    pub runs: Vec<DeclaredRun>,
    /// The oldest `.backup` after the newest declared gap: the first base
    /// backup from which the archive restores to its end.
    pub first_backup_after: Option<String>,
}

/// One run, and the backups that stop at it.
#[derive(Debug, Clone, Serialize)]
pub struct DeclaredRun {
    #[serde(flatten)]
    pub run: GapRun,
    /// `.backup` files recovery from which stops at this run: they cannot
    /// be rolled forward past it.
    pub backups_stop_here: Vec<String>,
}

/// Verdict for one storage.
#[derive(Debug, Clone, Serialize)]
pub struct StorageCheck {
    /// `primary` (the storage WAL belongs on) or `failover`.
    pub role: &'static str,
    /// Primary: `OK`, `WARNING` (lacks what a failover holds), `FAILURE`
    /// (lacks what no storage holds). Failover: `OK` when complete,
    /// `INCOMPLETE` otherwise (a failover need not be complete).
    /// `UNREACHABLE` when it could not be listed.
    pub status: &'static str,
    /// Expected segments it holds.
    pub present: u64,
    /// Expected segments it lacks (the first [`NAMES_SHOWN`]).
    pub missing: Vec<String>,
    pub missing_count: u64,
    /// Expected segments that only this storage holds.
    pub only_here: u64,
    pub error: Option<String>,
}

/// The `wal-verify` report; `--json` prints it as is.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub status: Status,
    /// One line saying what matters.
    pub summary: String,
    pub range: Range,
    pub segment_size: u64,
    pub segments_checked: u64,
    /// The timelines walked, with the segment numbers read from each.
    pub timelines: Vec<Span>,
    pub union: UnionCheck,
    /// Given-up segments (empty when there are none).
    pub declared: DeclaredCheck,
    pub storages: BTreeMap<String, StorageCheck>,
    /// Everything else that lowered the status, one sentence each.
    pub problems: Vec<String>,
}

struct Missing {
    names: Vec<String>,
    count: u64,
}

impl Missing {
    fn new() -> Self {
        Missing {
            names: Vec::new(),
            count: 0,
        }
    }
    fn push(&mut self, name: impl FnOnce() -> String) {
        self.count += 1;
        if self.names.len() < NAMES_SHOWN {
            self.names.push(name());
        }
    }
}

fn names(m: &[String], count: u64) -> String {
    let shown: Vec<&str> = m.iter().take(3).map(String::as_str).collect();
    if count as usize > shown.len() {
        format!(
            "{} and {} more",
            shown.join(", "),
            count as usize - shown.len()
        )
    } else {
        shown.join(", ")
    }
}

/// Walks the archive; see the module documentation.
pub fn verify(map: &ArchiveMap, opts: &VerifyOptions) -> VerifyReport {
    let size = opts.segment_size;
    let mut problems: Vec<String> = Vec::new();
    let mut status = Status::Ok;
    let raise = |s: Status, status: &mut Status| *status = (*status).max(s);
    let storages = map.storages();
    let primary_ok = storages.first().is_some_and(|s| s.error.is_none());
    for s in storages {
        if let Some(e) = &s.error {
            problems.push(format!("storage {:?} could not be listed: {e}", s.name));
            raise(Status::Warning, &mut status);
        }
    }

    // Names that cannot exist with this segment size mean the size is wrong,
    // and every gap computed with it would be too.
    let misfits: Vec<String> = map
        .files()
        .filter_map(|f| f[0].name.segment())
        .filter(|s| !s.fits(size))
        .map(|s| s.to_string())
        .take(3)
        .collect();
    if !misfits.is_empty() {
        problems.push(format!(
            "{} cannot exist with {} MiB segments: the segment size is wrong (set it with the server connection or check the archive)",
            misfits.join(", "),
            size >> 20
        ));
        raise(Status::Failure, &mut status);
    }

    // The timeline to follow.
    let newest = map.newest_segment_timeline();
    let highest_in_storage = map.timelines().into_iter().max();
    let timeline = match (opts.server, newest) {
        (Some(server), _) => {
            if let Some(h) = highest_in_storage.filter(|h| *h > server.timeline) {
                problems.push(format!(
                    "the storage holds timeline {h}, newer than the server's timeline {}: a stale primary may be archiving into a storage that a promoted server already uses",
                    server.timeline
                ));
                raise(Status::Failure, &mut status);
            }
            Some(server.timeline)
        }
        (None, t) => t,
    };

    let empty = |status: Status, summary: String, problems: Vec<String>| VerifyReport {
        status,
        summary,
        range: Range {
            from: None,
            to: None,
            timeline,
            from_source: String::new(),
            to_source: String::new(),
        },
        segment_size: size,
        segments_checked: 0,
        timelines: Vec::new(),
        union: UnionCheck {
            status,
            missing: Vec::new(),
            missing_count: 0,
            uploading: Vec::new(),
        },
        declared: DeclaredCheck::default(),
        storages: BTreeMap::new(),
        problems,
    };
    let Some(timeline) = timeline else {
        problems.push("no WAL segment in any storage".into());
        let st = status.max(Status::Warning);
        return empty(st, "no WAL segment in any storage".into(), problems);
    };

    // Its ancestry.
    let records = if timeline == 1 {
        Vec::new()
    } else {
        let hist = WalName::History { timeline }.to_string();
        match opts.histories.get(&timeline) {
            Some(Ok(r)) => {
                if map.mask(&WalName::History { timeline }) & 1 == 0 && primary_ok {
                    problems.push(format!(
                        "{hist} is not on the primary storage ({:?}); another storage holds it",
                        storages[0].name
                    ));
                    raise(Status::Warning, &mut status);
                }
                r.clone()
            }
            Some(Err(e)) => {
                problems.push(format!("{hist} cannot be read: {e}"));
                raise(Status::Failure, &mut status);
                Vec::new()
            }
            None => {
                problems.push(format!(
                    "{hist} is in no storage: recovery cannot follow timeline {timeline}"
                ));
                raise(Status::Failure, &mut status);
                Vec::new()
            }
        }
    };
    // Ancestors' own histories must agree with it.
    for r in &records {
        if let Some(Ok(anc)) = opts.histories.get(&r.timeline) {
            if !consistent(anc, &records) {
                problems.push(format!(
                    "timelines contradict each other: {} does not begin like {}",
                    WalName::History { timeline },
                    WalName::History {
                        timeline: r.timeline
                    }
                ));
                raise(Status::Failure, &mut status);
            }
        }
    }
    let ancestry = Ancestry::new(timeline, records, size);
    if let Some(server) = opts.server {
        if !ancestry.contains(server.current.timeline) {
            problems.push(format!(
                "the server writes timeline {} but follows timeline {timeline}",
                server.current.timeline
            ));
            raise(Status::Failure, &mut status);
        }
    }

    // Where to start.
    let (from, from_source) = match opts.from {
        Some(s) => (Some(s.number(size)), format!("--from {s}")),
        None => {
            let oldest = backups_on_their_timeline(map, &ancestry, size)
                .into_iter()
                .min_by_key(|(n, _)| *n);
            match oldest {
                Some((n, b)) => (Some(n), format!("start of the oldest backup, {b}")),
                None => {
                    let first = ancestry
                        .spans()
                        .iter()
                        .filter_map(|sp| {
                            map.segments(sp.timeline)
                                .map(|(s, _)| s.number(size))
                                .find(|n| *n >= sp.first && sp.last.is_none_or(|l| *n <= l))
                        })
                        .min();
                    (
                        first,
                        "oldest archived segment (no .backup file in any storage)".into(),
                    )
                }
            }
        }
    };

    // Where to stop.
    let (to, to_source, window_from) = match opts.server {
        Some(server) => {
            let cur = server.current.number(size);
            let to = cur.checked_sub(1);
            (
                to,
                format!(
                    "segment before the server's current one, {}",
                    server.current
                ),
                cur.saturating_sub(opts.uploading_window),
            )
        }
        None => {
            let last = map.segments(timeline).map(|(s, _)| s.number(size)).last();
            let last = last.or_else(|| {
                // The newest timeline may have no segment yet: fall back to
                // the newest segment read from its ancestry.
                ancestry
                    .spans()
                    .iter()
                    .filter_map(|sp| {
                        map.segments(sp.timeline)
                            .map(|(s, _)| s.number(size))
                            .filter(|n| *n >= sp.first && sp.last.is_none_or(|l| *n <= l))
                            .last()
                    })
                    .max()
            });
            (
                last,
                "newest archived segment of the timeline".to_string(),
                u64::MAX,
            )
        }
    };
    let (Some(from), Some(to)) = (from, to) else {
        problems.push("no segment to check".into());
        let st = status.max(Status::Warning);
        return empty(st, "no WAL segment to check".into(), problems);
    };
    // A start after the end: the walk still checks the start segment.
    let to = to.max(from);

    let n = storages.len();
    let mut union = Missing::new();
    let mut uploading = Vec::new();
    let mut declared = DeclaredGaps::default();
    let mut declared_nums: Vec<u64> = Vec::new();
    let mut per: Vec<(u64, Missing, u64)> = (0..n).map(|_| (0, Missing::new(), 0)).collect();
    for num in from..=to {
        let seg = ancestry.segment(num, size);
        let mask = map.mask(&WalName::Segment(seg));
        if mask == 0 && !opts.declared.is_empty() && opts.declared.contains(&seg.to_string()) {
            // Given up on purpose: its own status, not a storage's lack.
            let name = seg.to_string();
            declared.add(&name, opts.declared.record(&name).cloned());
            declared_nums.push(num);
            continue;
        }
        if mask == 0 {
            if num >= window_from {
                uploading.push(seg.to_string());
            } else {
                union.push(|| seg.to_string());
            }
        }
        for (i, p) in per.iter_mut().enumerate() {
            if mask & (1 << i) != 0 {
                p.0 += 1;
                if mask == 1 << i {
                    p.2 += 1;
                }
            } else if num < window_from {
                p.1.push(|| seg.to_string());
            }
        }
    }

    let union_status = if union.count > 0 {
        Status::Failure
    } else if !declared.is_empty() {
        Status::DeclaredGap
    } else if !uploading.is_empty() {
        Status::Warning
    } else {
        Status::Ok
    };
    raise(union_status, &mut status);
    if !uploading.is_empty() {
        problems.push(format!(
            "{} segment(s) before the server's current one are not archived yet (within the uploading window of {}): {}",
            uploading.len(),
            opts.uploading_window,
            names(&uploading, uploading.len() as u64)
        ));
    }
    let mut checks = BTreeMap::new();
    for (i, (s, (present, missing, only))) in storages.iter().zip(per).enumerate() {
        let role = if i == 0 { "primary" } else { "failover" };
        let st = if s.error.is_some() {
            "UNREACHABLE"
        } else if missing.count == 0 {
            "OK"
        } else if i == 0 {
            if union.count > 0 {
                "FAILURE"
            } else {
                "WARNING"
            }
        } else {
            "INCOMPLETE"
        };
        if i == 0 && s.error.is_none() && missing.count > union.count {
            raise(Status::Warning, &mut status);
        }
        checks.insert(
            s.name.clone(),
            StorageCheck {
                role,
                status: st,
                present,
                missing: missing.names,
                missing_count: missing.count,
                only_here: only,
                error: s.error.clone(),
            },
        );
    }

    // Declared gaps: the runs, and which backups stop at each.
    let mut declared_check = DeclaredCheck {
        count: declared_nums.len() as u64,
        ..DeclaredCheck::default()
    };
    if !declared.is_empty() {
        let backups = backups_on_their_timeline(map, &ancestry, size);
        let mut prev_end: Option<u64> = None;
        for run in declared.runs(size) {
            let start = WalName::parse(&run.from)
                .ok()
                .and_then(|n| n.segment())
                .map_or(0, |s| s.number(size));
            let end = start + run.count - 1;
            let stop: Vec<String> = backups
                .iter()
                .filter(|(n, _)| prev_end.is_none_or(|p| *n > p) && *n <= end)
                .map(|(_, b)| b.to_string())
                .collect();
            declared_check.runs.push(DeclaredRun {
                run,
                backups_stop_here: stop,
            });
            prev_end = Some(end);
        }
        declared_check.first_backup_after = backups
            .iter()
            .find(|(n, _)| prev_end.is_some_and(|p| *n > p))
            .map(|(_, b)| b.to_string());
    }

    let checked = to - from + 1;
    let first = ancestry.segment(from, size).to_string();
    let last = ancestry.segment(to, size).to_string();
    let summary = match status {
        _ if union.count > 0 => format!(
            "FAILURE: {} segment(s) in no storage: {}",
            union.count,
            names(&union.names, union.count)
        ),
        Status::Failure => format!("FAILURE: {}", problems.last().cloned().unwrap_or_default()),
        Status::DeclaredGap => format!("DECLARED_GAP: {}", declared_sentence(&declared_check)),
        _ => {
            let primary = storages.first().map(|s| s.name.clone()).unwrap_or_default();
            let lacking = checks.get(&primary).map_or(0, |c| c.missing_count);
            if lacking > 0 {
                let c = &checks[&primary];
                format!(
                    "WARNING: every segment is archived, but the primary storage {primary:?} lacks {lacking} that another storage holds ({}); run wal-repair",
                    names(&c.missing, lacking)
                )
            } else if status == Status::Warning {
                format!("WARNING: {}", problems.first().cloned().unwrap_or_default())
            } else {
                format!("OK: {checked} segments from {first} to {last}, all on the primary storage {primary:?}")
            }
        }
    };
    let timelines = ancestry
        .spans()
        .into_iter()
        .filter(|s| s.last.is_none_or(|l| l >= from) && s.first <= to)
        .collect();
    VerifyReport {
        status,
        summary,
        range: Range {
            from: Some(first),
            to: Some(last),
            timeline: Some(timeline),
            from_source,
            to_source,
        },
        segment_size: size,
        segments_checked: checked,
        timelines,
        union: UnionCheck {
            status: union_status,
            missing: union.names,
            missing_count: union.count,
            uploading,
        },
        declared: declared_check,
        storages: checks,
        problems,
    }
}

/// One sentence: how many segments were given up, the first run's when
/// and why, which backups stop at the gaps and where a restore may start.
/// The backups whose segment recovery reads on their own timeline (a
/// backup of a timeline the ancestry left is no starting point), with
/// their segment numbers.
fn backups_on_their_timeline(
    map: &ArchiveMap,
    ancestry: &Ancestry,
    size: u64,
) -> Vec<(u64, WalName)> {
    map.backups()
        .into_iter()
        .filter_map(|b| match b {
            WalName::Backup { segment, .. }
                if ancestry.timeline_of(segment.number(size)) == segment.timeline =>
            {
                Some((segment.number(size), b))
            }
            _ => None,
        })
        .collect()
}

fn declared_sentence(d: &DeclaredCheck) -> String {
    let mut s = format!(
        "{} segment(s) given up on purpose by wal-push (WALG_PG_WAL_BUDGET) in {} run(s)",
        d.count,
        d.runs.len()
    );
    if let Some(r) = d.runs.first() {
        s.push_str(&format!("; first: {}", r.run.describe()));
    }
    let stop: Vec<&str> = d
        .runs
        .iter()
        .flat_map(|r| r.backups_stop_here.iter().map(String::as_str))
        .collect();
    if !stop.is_empty() {
        s.push_str(&format!(
            "; backup(s) {} cannot be rolled forward past the gap",
            stop.join(", ")
        ));
    }
    match &d.first_backup_after {
        Some(b) => s.push_str(&format!("; a restore to the end starts from {b} or later")),
        None => s.push_str("; no base backup after the newest gap: take one now"),
    }
    s
}

#[cfg(test)]
#[path = "verify_tests.rs"]
mod tests;
