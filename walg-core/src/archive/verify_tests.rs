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
    declared: Vec<&'static str>,
}

impl Case {
    fn new(size: u64) -> Case {
        Case {
            keys: Vec::new(),
            histories: Vec::new(),
            size,
            from: None,
            server: None,
            declared: Vec::new(),
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
        let refs: Vec<(usize, &str)> = self.keys.iter().map(|(s, k)| (*s, k.as_str())).collect();
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
            declared: {
                let mut d = crate::archive::gaps::DeclaredGaps::default();
                for n in &self.declared {
                    d.add(n, None);
                }
                d
            },
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

#[test]
fn given_up_segments_are_a_declared_gap_naming_the_backups_they_stop() {
    let mut case = Case::new(16 * MIB)
        .segs(0, 1, 1..=4)
        .segs(0, 1, 7..=9)
        .key(0, "000000010000000000000002.00000028.backup.lz4")
        .key(0, "000000010000000000000008.00000028.backup.lz4");
    case.declared = vec!["000000010000000000000005", "000000010000000000000006"];
    let r = check(case, Status::DeclaredGap, &[], &[]);
    assert_eq!(r.status.exit_code(), 3);
    assert_eq!(r.declared.count, 2);
    assert_eq!(r.declared.runs.len(), 1);
    assert_eq!(r.declared.runs[0].run.from, "000000010000000000000005");
    assert_eq!(r.declared.runs[0].run.to, "000000010000000000000006");
    assert_eq!(
        r.declared.runs[0].backups_stop_here,
        ["000000010000000000000002.00000028.backup"]
    );
    assert_eq!(
        r.declared.first_backup_after.as_deref(),
        Some("000000010000000000000008.00000028.backup")
    );
    assert_eq!(r.storages["default"].status, "OK");
    assert!(
        r.summary
            .starts_with("DECLARED_GAP: 2 segment(s) given up on purpose"),
        "{}",
        r.summary
    );
    assert!(
        r.summary.contains("cannot be rolled forward"),
        "{}",
        r.summary
    );
    let json = serde_json::to_value(&r).expect("json");
    assert_eq!(json["status"], "DECLARED_GAP");
    assert_eq!(json["declared"]["runs"][0]["count"], 2);
}

#[test]
fn an_unexplained_segment_beside_a_declared_one_is_still_a_failure() {
    let mut case = Case::new(16 * MIB)
        .segs(0, 1, 1..=4)
        .segs(0, 1, 7..=9)
        .key(0, "000000010000000000000002.00000028.backup.lz4");
    case.declared = vec!["000000010000000000000005"];
    let r = check(
        case,
        Status::Failure,
        &["000000010000000000000006"],
        &["000000010000000000000006"],
    );
    assert_eq!(r.declared.count, 1);
    assert!(r.declared.first_backup_after.is_none());
    assert!(
        r.summary.starts_with("FAILURE: 1 segment(s) in no storage"),
        "{}",
        r.summary
    );
}
