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
//! window is not archived yet, or a storage could not be listed; `FAILURE`
//! a segment or the timeline's history is in no storage, or timelines
//! contradict each other.
//!
//! What this module does not do: list storages, download history files or
//! ask the server (the caller passes what it found).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::archive::{ArchiveMap, NAMES_SHOWN};
use crate::wal::history::{consistent, Ancestry, HistoryRecord, Span};
use crate::wal::{Segment, WalName};

/// Overall and per-part verdicts; the exit code of `wal-verify`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Ok,
    Warning,
    Failure,
}

impl Status {
    pub fn exit_code(self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::Warning => 1,
            Status::Failure => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warning => "WARNING",
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
            let oldest = map
                .backups()
                .into_iter()
                .filter_map(|b| match b {
                    WalName::Backup { segment, .. }
                        if ancestry.timeline_of(segment.number(size)) == segment.timeline =>
                    {
                        Some((segment.number(size), b))
                    }
                    _ => None,
                })
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
    let mut per: Vec<(u64, Missing, u64)> = (0..n).map(|_| (0, Missing::new(), 0)).collect();
    for num in from..=to {
        let seg = ancestry.segment(num, size);
        let mask = map.mask(&WalName::Segment(seg));
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
        storages: checks,
        problems,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::map_from_keys;
    use crate::archive::tests::seg_keys;
    use crate::wal::history::parse_history;

    const MIB: u64 = 1 << 20;

    struct Case {
        keys: Vec<(usize, String)>,
        histories: Vec<(u32, &'static str)>,
        size: u64,
        from: Option<&'static str>,
        server: Option<(u32, &'static str)>,
    }

    impl Case {
        fn new(size: u64) -> Case {
            Case {
                keys: Vec::new(),
                histories: Vec::new(),
                size,
                from: None,
                server: None,
            }
        }
        fn segs(mut self, storage: usize, tli: u32, r: std::ops::RangeInclusive<u64>) -> Case {
            for k in seg_keys(tli, r, self.size) {
                self.keys.push((storage, k));
            }
            self
        }
        fn key(mut self, storage: usize, k: &str) -> Case {
            self.keys.push((storage, format!("wal_005/{k}")));
            self
        }
        fn history(mut self, tli: u32, text: &'static str) -> Case {
            self.histories.push((tli, text));
            self = self.key(0, &format!("{tli:08X}.history.lz4"));
            self
        }
        fn run(&self) -> VerifyReport {
            let refs: Vec<(usize, &str)> =
                self.keys.iter().map(|(s, k)| (*s, k.as_str())).collect();
            let map = map_from_keys(&["default", "failover"], &refs);
            let opts = VerifyOptions {
                segment_size: self.size,
                histories: self
                    .histories
                    .iter()
                    .map(|(t, h)| (*t, parse_history(h).map_err(|e| e.to_string())))
                    .collect(),
                from: self
                    .from
                    .map(|f| WalName::parse(f).expect("name").segment().expect("segment")),
                server: self.server.map(|(tli, cur)| ServerPosition {
                    timeline: tli,
                    current: WalName::parse(cur)
                        .expect("name")
                        .segment()
                        .expect("segment"),
                }),
                uploading_window: 2,
            };
            verify(&map, &opts)
        }
    }

    fn check(
        case: Case,
        status: Status,
        union_missing: &[&str],
        primary_missing: &[&str],
    ) -> VerifyReport {
        let r = case.run();
        assert_eq!(r.status, status, "{r:#?}");
        assert_eq!(r.union.missing, union_missing, "{r:#?}");
        assert_eq!(r.storages["default"].missing, primary_missing, "{r:#?}");
        r
    }

    #[test]
    fn complete_primary_is_ok_and_starts_at_the_oldest_backup() {
        let r = check(
            Case::new(16 * MIB)
                .segs(0, 1, 3..=9)
                .key(0, "000000010000000000000005.00000028.backup.lz4")
                .key(0, "000000010000000000000007.00000028.backup.lz4"),
            Status::Ok,
            &[],
            &[],
        );
        assert_eq!(r.range.from.as_deref(), Some("000000010000000000000005"));
        assert_eq!(r.range.to.as_deref(), Some("000000010000000000000009"));
        assert_eq!(r.segments_checked, 5);
        assert!(r.summary.starts_with("OK: 5 segments"), "{}", r.summary);
        assert_eq!(r.status.exit_code(), 0);
    }

    #[test]
    fn segments_on_a_failover_only_are_a_warning() {
        let r = check(
            Case::new(16 * MIB)
                .segs(0, 1, 1..=3)
                .segs(1, 1, 4..=5)
                .segs(0, 1, 6..=6),
            Status::Warning,
            &[],
            &["000000010000000000000004", "000000010000000000000005"],
        );
        assert_eq!(r.storages["failover"].status, "INCOMPLETE");
        assert_eq!(r.storages["failover"].only_here, 2);
        assert_eq!(r.storages["default"].status, "WARNING");
        assert!(r.summary.contains("wal-repair"), "{}", r.summary);
        assert_eq!(r.status.exit_code(), 1);
    }

    #[test]
    fn a_segment_in_no_storage_is_a_failure() {
        let r = check(
            Case::new(16 * MIB).segs(0, 1, 1..=3).segs(0, 1, 5..=6),
            Status::Failure,
            &["000000010000000000000004"],
            &["000000010000000000000004"],
        );
        assert!(
            r.summary.contains("000000010000000000000004"),
            "{}",
            r.summary
        );
        assert_eq!(r.status.exit_code(), 2);
    }

    #[test]
    fn gaps_at_a_timeline_switch() {
        // Promotion inside segment 5: timeline 1 is read up to 4, timeline 2
        // from 5. The parent's 5 exists only as .partial and is not a gap;
        // timeline 1's 6.. (the old primary kept running) are not expected.
        let base = || {
            Case::new(16 * MIB)
                .segs(0, 1, 1..=4)
                .key(0, "000000010000000000000005.partial.lz4")
                .segs(0, 1, 6..=7)
                .history(2, "1\t0/5000060\tno recovery target specified\n")
        };
        let r = check(base().segs(0, 2, 5..=8), Status::Ok, &[], &[]);
        assert_eq!(r.range.timeline, Some(2));
        assert_eq!(r.timelines.len(), 2);
        // Timeline 2's first segment is missing: recovery would not read
        // timeline 1's copy of it.
        check(
            base().segs(0, 2, 6..=8),
            Status::Failure,
            &["000000020000000000000005"],
            &["000000020000000000000005"],
        );
        // Timeline 1's last full segment before the switch is missing.
        let r = check(
            Case::new(16 * MIB)
                .segs(0, 1, 1..=3)
                .segs(0, 2, 5..=6)
                .history(2, "1\t0/5000060\tx\n"),
            Status::Failure,
            &["000000010000000000000004"],
            &["000000010000000000000004"],
        );
        assert_eq!(r.range.from.as_deref(), Some("000000010000000000000001"));
        // The history file is missing everywhere.
        let r = check(
            Case::new(16 * MIB).segs(0, 1, 1..=4).segs(0, 2, 5..=6),
            Status::Failure,
            &[],
            &[],
        );
        assert!(
            r.problems.iter().any(|p| p.contains("00000002.history")),
            "{r:#?}"
        );
    }

    #[test]
    fn two_switches_within_one_segment() {
        // Timeline 2 lived only inside segment 5; nothing of it is expected.
        let h3 = "1\t0/5000100\tx\n\n2\t0/5000200\tx\n";
        let r = check(
            Case::new(16 * MIB)
                .segs(0, 1, 1..=4)
                .segs(0, 3, 5..=7)
                .history(2, "1\t0/5000100\tx\n")
                .history(3, h3),
            Status::Ok,
            &[],
            &[],
        );
        let tl: Vec<u32> = r.timelines.iter().map(|s| s.timeline).collect();
        assert_eq!(tl, vec![1, 3]);
        // A history that contradicts its ancestor's.
        let r = check(
            Case::new(16 * MIB)
                .segs(0, 1, 1..=4)
                .segs(0, 3, 5..=7)
                .history(2, "1\t0/4000100\tx\n")
                .history(3, h3),
            Status::Failure,
            &[],
            &[],
        );
        assert!(
            r.problems.iter().any(|p| p.contains("contradict")),
            "{r:#?}"
        );
    }

    #[test]
    fn segment_size_other_than_16_mib() {
        // 1 MiB: 4096 segments per 4 GiB, so 00000FFF is followed by
        // 0000000100000000, and a switch at 0/1002028 lies in segment 0x10.
        let r = check(
            Case::new(MIB)
                .segs(0, 1, 0xFFE..=0x1003)
                .key(0, "000000010000000000000FFE.00000028.backup.lz4"),
            Status::Ok,
            &[],
            &[],
        );
        assert_eq!(r.segments_checked, 6);
        assert_eq!(r.range.to.as_deref(), Some("000000010000000100000003"));
        // Read with 16 MiB segments, 00000FFF cannot exist: the size is wrong.
        let r = Case::new(16 * MIB)
            .key(0, "000000010000000000000FFF.lz4")
            .key(0, "000000010000000100000000.lz4")
            .run();
        assert_eq!(r.status, Status::Failure);
        assert!(r.problems[0].contains("segment size is wrong"), "{r:#?}");
        let r = check(
            Case::new(MIB)
                .segs(0, 1, 0x0E..=0x0F)
                .segs(0, 2, 0x10..=0x11)
                .history(2, "1\t0/1002028\tx\n"),
            Status::Ok,
            &[],
            &[],
        );
        assert_eq!(r.range.from.as_deref(), Some("00000001000000000000000E"));
        // 1 GiB: four segments per 4 GiB.
        check(Case::new(1 << 30).segs(0, 1, 3..=6), Status::Ok, &[], &[]);
        let r = Case::new(1 << 30)
            .key(0, "000000010000000000000003.lz4")
            .key(0, "000000010000000100000001.lz4")
            .run();
        assert_eq!(r.union.missing, vec!["000000010000000100000000"]);
    }

    #[test]
    fn server_position_and_uploading_window() {
        // Current segment 10: 9 and 8 are in the window of 2, 7 is lost.
        let r = check(
            Case::new(16 * MIB)
                .segs(0, 1, 1..=6)
                .starting_at("000000010000000000000002")
                .server(1, "00000001000000000000000A"),
            Status::Failure,
            &["000000010000000000000007"],
            &["000000010000000000000007"],
        );
        assert_eq!(
            r.union.uploading,
            vec!["000000010000000000000008", "000000010000000000000009"]
        );
        assert_eq!(r.range.from.as_deref(), Some("000000010000000000000002"));
        let r = check(
            Case::new(16 * MIB)
                .segs(0, 1, 1..=8)
                .server(1, "00000001000000000000000A"),
            Status::Warning,
            &[],
            &[],
        );
        assert_eq!(r.union.uploading.len(), 1);
        // A stale primary: the storage already holds a newer timeline.
        let r = check(
            Case::new(16 * MIB)
                .segs(0, 1, 1..=8)
                .history(2, "1\t0/5000000\tx\n")
                .segs(0, 2, 5..=6)
                .server(1, "000000010000000000000009"),
            Status::Failure,
            &[],
            &[],
        );
        assert!(
            r.problems.iter().any(|p| p.contains("stale primary")),
            "{r:#?}"
        );
    }

    impl Case {
        fn starting_at(mut self, s: &'static str) -> Case {
            self.from = Some(s);
            self
        }
        fn server(mut self, tli: u32, cur: &'static str) -> Case {
            self.server = Some((tli, cur));
            self
        }
    }

    #[test]
    fn json_shape() {
        let r = Case::new(16 * MIB)
            .segs(0, 1, 1..=3)
            .segs(1, 1, 4..=4)
            .run();
        let v: serde_json::Value = serde_json::to_value(&r).expect("json");
        assert_eq!(v["status"], "WARNING");
        assert_eq!(v["range"]["timeline"], 1);
        assert_eq!(v["range"]["from"], "000000010000000000000001");
        assert_eq!(v["union"]["status"], "OK");
        assert_eq!(
            v["storages"]["default"]["missing"][0],
            "000000010000000000000004"
        );
        assert_eq!(v["storages"]["failover"]["status"], "INCOMPLETE");
    }
}
