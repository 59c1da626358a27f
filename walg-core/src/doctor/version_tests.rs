//! Rules of the retention sources newer versions added and of the false
//! alarms of issue 20, on synthetic observations (1 MiB segments).

use super::*;

const MB: u64 = 1 << 20;
const NOW: f64 = 1_800_000_000.0;

fn seg(n: u64) -> String {
    name_of(n, 1, MB)
}

fn lsn_at(segno: u64, offset: u64) -> Lsn {
    Lsn(segno * MB + offset)
}

/// The matrix's healthy cluster: 1 MiB segments, max_wal_size 4MB,
/// min_wal_size 2MB, archiving through archive_command, at segment 100
/// right after a CHECKPOINT (REDO in the current segment), `bytes` in
/// pg_wal.
fn small(bytes: u64) -> Observation {
    let mut o = Observation::new(Mode::Online, NOW, MB);
    o.major_version = Some(17);
    o.timeline = Some(1);
    o.in_recovery = Some(false);
    o.current_lsn = Some(lsn_at(100, 0x4000));
    o.redo_lsn = Some(lsn_at(100, 0x28));
    o.checkpoint_time = Some(NOW - 1.0);
    o.settings = Settings {
        archive_mode: Some("on".into()),
        archive_command: Some("walg wal-push %p".into()),
        archive_library: Some(String::new()),
        wal_level: Some("replica".into()),
        wal_keep_size: Some(0),
        max_slot_wal_keep_size: Some(-1),
        max_wal_size: Some(4 * MB as i64),
        min_wal_size: Some(2 * MB as i64),
        checkpoint_timeout: Some(300.0),
        checkpoint_completion_target: Some(0.9),
        ..Settings::default()
    };
    o.archiver = Some(ArchiverStats {
        archived_count: 98,
        last_archived_wal: Some(seg(98)),
        last_archived_time: Some(NOW - 2.0),
        ..Default::default()
    });
    o.status_files = Some(vec![StatusFile {
        name: seg(98),
        ready: false,
        mtime: NOW - 3.0,
        ctime: None,
    }]);
    o.slots = Some(vec![]);
    o.pg_wal = Some(WalDir {
        bytes,
        segments: bytes / MB,
        fs_total: Some(10_000 * MB),
        fs_available: Some(8_000 * MB),
        ..Default::default()
    });
    o
}

fn check<'a>(r: &'a Report, id: &str) -> &'a Check {
    r.checks
        .iter()
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("no {id} check in {:#?}", r.checks))
}

fn ok(r: &Report) {
    assert_eq!(r.status, Status::Ok, "{}\n{:#?}", r.headline, r.checks);
    assert_eq!(r.cause.kind, CauseKind::None, "{}", r.headline);
    assert!(r.headline.contains("healthy"), "{}", r.headline);
}

// --- Point 6: no false alarms -------------------------------------------

/// "pg_wal holds 5.0 MiB (over max_wal_size 4.0 MiB)" right after a
/// CHECKPOINT on 13, 16 and 17: the segment just finished still waits a
/// second for the archiver, and the recycled ones reach REDO's segment +
/// max_wal_size - 1.
#[test]
fn five_mib_after_a_checkpoint_with_max_wal_size_4mb_is_ok() {
    let mut o = small(5 * MB);
    if let Some(f) = o.status_files.as_mut() {
        f.push(StatusFile {
            name: seg(99),
            ready: true,
            mtime: NOW - 0.5,
            ctime: None,
        });
    }
    let r = diagnose(&o, &Thresholds::default());
    ok(&r);
    let c = check(&r, "pg_wal_size");
    assert_eq!(c.status, Status::Ok);
    assert!(
        c.summary
            .contains("over max_wal_size 4.0 MiB, within what PostgreSQL's recycling"),
        "{}",
        c.summary
    );
    // 99 (waiting a moment) to 103 (the recycling horizon), plus one.
    assert_eq!(r.pg_wal.normal_max_bytes, Some(6 * MB));
}

/// The same without a waiting file: one segment preallocated past the
/// current one when it is nearly full, recycled ones up to the horizon.
#[test]
fn preallocated_and_recycled_segments_are_not_retention() {
    let mut o = small(5 * MB);
    o.current_lsn = Some(lsn_at(103, 0xF0000));
    let r = diagnose(&o, &Thresholds::default());
    ok(&r);
    // 100 (REDO) to 104 (preallocated), plus one.
    assert_eq!(r.pg_wal.normal_max_bytes, Some(6 * MB));
}

/// More than recycling explains, but only the next checkpoint holds it and
/// nothing grows (max_wal_size was just lowered, say): OK, said plainly.
#[test]
fn surplus_the_next_checkpoint_removes_is_not_a_warning() {
    let r = diagnose(&small(12 * MB), &Thresholds::default());
    ok(&r);
    let c = check(&r, "pg_wal_size");
    assert!(
        c.summary
            .contains("the next checkpoint removes the surplus"),
        "{}",
        c.summary
    );
}

/// Past the allowance while a slot holds WAL and pg_wal grows: a warning.
#[test]
fn surplus_held_by_an_inactive_slot_is_a_warning() {
    let mut o = small(14 * MB);
    o.slots = Some(vec![SlotObs {
        name: "s1".into(),
        slot_type: "physical".into(),
        active: Some(false),
        restart_lsn: Some(lsn_at(87, 0x28)),
        ..SlotObs::default()
    }]);
    let r = diagnose(&o, &Thresholds::default());
    assert_eq!(r.cause.kind, CauseKind::ReplicationSlot);
    assert_eq!(check(&r, "pg_wal_size").status, Status::Warning);
    assert_eq!(r.status, Status::Warning);
}

/// A large wal_keep_size explains a large pg_wal: no warning.
#[test]
fn wal_keep_size_explains_a_large_pg_wal() {
    let mut o = small(34 * MB);
    o.settings.wal_keep_size = Some(32 * MB as i64);
    let r = diagnose(&o, &Thresholds::default());
    assert_eq!(r.status, Status::Ok, "{:#?}", r.checks);
    assert_eq!(r.cause.kind, CauseKind::WalKeepSize);
    assert_eq!(check(&r, "wal_keep_size").status, Status::Ok);
}

/// A streaming standby a segment behind (active slot, little WAL) is the
/// normal trail, not a warning.
#[test]
fn active_slot_a_little_behind_is_normal() {
    let mut o = small(6 * MB);
    o.slots = Some(vec![SlotObs {
        name: "standby1".into(),
        slot_type: "physical".into(),
        active: Some(true),
        restart_lsn: Some(lsn_at(99, 0x100)),
        ..SlotObs::default()
    }]);
    let r = diagnose(&o, &Thresholds::default());
    assert_eq!(r.status, Status::Ok, "{:#?}", r.checks);
    assert_eq!(check(&r, "pg_wal_size").status, Status::Ok);
}

// --- Point 5: the seed's external archiver ------------------------------

/// archive_mode = on, archive_command = '', an external program renames
/// `.ready` to `.done` and keeps up: OK, consumer external.
#[test]
fn external_archiver_keeping_up_is_ok() {
    let mut o = small(4 * MB);
    o.settings.archive_command = Some(String::new());
    o.archiver = Some(ArchiverStats::default());
    o.status_files = Some(
        (96..=99)
            .map(|n| StatusFile {
                name: seg(n),
                ready: false,
                mtime: NOW - (100 - n) as f64 * 10.0,
                ctime: None,
            })
            .collect(),
    );
    let r = diagnose(&o, &Thresholds::default());
    ok(&r);
    assert_eq!(r.archiver.consumer, Some(Consumer::External));
    let c = check(&r, "archiver");
    assert!(
        c.summary
            .contains("an external program consumes the .ready files and keeps up"),
        "{}",
        c.summary
    );
    assert!(
        c.evidence
            .iter()
            .any(|e| e.contains("that PostgreSQL's archiver did not write")),
        "{:?}",
        c.evidence
    );
    let json = serde_json::to_value(&r).expect("json");
    assert_eq!(json["archiver"]["consumer"], "external");
}

/// Nothing configured and nothing waiting: OK, with the line that some
/// external program must be consuming `.ready` files, or nothing is
/// archived at all.
#[test]
fn nothing_configured_and_nothing_waiting_is_ok() {
    let mut o = small(4 * MB);
    o.settings.archive_command = Some(String::new());
    o.archiver = Some(ArchiverStats::default());
    o.status_files = Some(vec![]);
    let r = diagnose(&o, &Thresholds::default());
    assert_eq!(r.status, Status::Ok, "{:#?}", r.checks);
    assert_eq!(r.archiver.consumer, Some(Consumer::None));
    let c = check(&r, "archiver");
    assert!(
        c.summary.contains(
            "some external program must be consuming the .ready files, or nothing is archived at all"
        ),
        "{}",
        c.summary
    );
}

fn stopped_consumer(o: &mut Observation, done: &[u64]) {
    o.settings.archive_command = Some(String::new());
    o.archiver = Some(ArchiverStats::default());
    let mut files: Vec<StatusFile> = done
        .iter()
        .map(|n| StatusFile {
            name: seg(*n),
            ready: false,
            mtime: NOW - 900.0,
            ctime: None,
        })
        .collect();
    files.extend((80..=99).map(|n| StatusFile {
        name: seg(n),
        ready: true,
        mtime: NOW - 600.0 + (n - 80) as f64 * 30.0,
        ctime: None,
    }));
    o.status_files = Some(files);
    if let Some(d) = o.pg_wal.as_mut() {
        d.bytes = 24 * MB;
    }
}

/// The external program stopped: `.ready` files pile up. With its `.done`
/// files still there, or declared with --external-archiver, it is a
/// backlog of consumer "external" judged by the archiver's thresholds;
/// with nothing to tell, archive_not_configured as before.
#[test]
fn external_archiver_falling_behind_is_a_backlog() {
    let mut o = small(24 * MB);
    stopped_consumer(&mut o, &[78, 79]);
    let r = diagnose(&o, &Thresholds::default());
    assert_eq!(r.cause.kind, CauseKind::ArchiveBacklog, "{}", r.headline);
    assert_eq!(r.archiver.consumer, Some(Consumer::External));
    assert_eq!(r.status, Status::Warning);
    assert!(
        r.headline
            .contains("the external program consuming .ready files is behind: 20 WAL files wait"),
        "{}",
        r.headline
    );
    assert_eq!(check(&r, "archiver").status, Status::Warning);

    // No .done left (a checkpoint removed them): nothing tells.
    let mut o = small(24 * MB);
    stopped_consumer(&mut o, &[]);
    let r = diagnose(&o, &Thresholds::default());
    assert_eq!(r.cause.kind, CauseKind::ArchiveNotConfigured);
    assert_eq!(r.archiver.consumer, Some(Consumer::None));
    assert_eq!(r.status, Status::Critical);
    assert!(check(&r, "archiver")
        .remedy
        .as_deref()
        .is_some_and(|m| m.contains("--external-archiver")));

    // Declared.
    o.external_archiver = true;
    let r = diagnose(&o, &Thresholds::default());
    assert_eq!(r.cause.kind, CauseKind::ArchiveBacklog);
    assert_eq!(r.archiver.consumer, Some(Consumer::External));
    assert_eq!(r.status, Status::Warning);
    // Older than the critical age: critical, as PostgreSQL's archiver.
    let t = Thresholds {
        ready_age_crit: 500.0,
        ..Thresholds::default()
    };
    assert_eq!(diagnose(&o, &t).status, Status::Critical);
    // Under both thresholds: it keeps up.
    let t = Thresholds {
        ready_age_warn: 1000.0,
        ready_count_warn: 50,
        ..Thresholds::default()
    };
    let r = diagnose(&o, &t);
    assert_eq!(check(&r, "archiver").status, Status::Ok);
}

/// A `.done` newer than a waiting `.ready` cannot be PostgreSQL's archiver
/// (it never skips a file), even offline.
#[test]
fn out_of_order_done_files_are_an_external_consumer() {
    let mut o = small(24 * MB);
    o.mode = Mode::Offline;
    stopped_consumer(&mut o, &[]);
    o.archiver = None;
    if let Some(f) = o.status_files.as_mut() {
        f.retain(|f| f.name != seg(95));
        f.push(StatusFile {
            name: seg(95),
            ready: false,
            mtime: NOW - 60.0,
            ctime: Some(NOW - 50.0),
        });
    }
    let r = diagnose(&o, &Thresholds::default());
    assert_eq!(r.archiver.consumer, Some(Consumer::External));
    assert_eq!(r.cause.kind, CauseKind::ArchiveBacklog);
}

/// JSON names each consumer.
#[test]
fn consumer_names() {
    let name = |o: &Observation| {
        serde_json::to_value(diagnose(o, &Thresholds::default()).archiver.consumer).expect("json")
    };
    let mut o = small(4 * MB);
    assert_eq!(name(&o), "archive_command");
    o.settings.archive_library = Some("basic_archive".into());
    assert_eq!(name(&o), "archive_library");
    o.settings.archive_library = Some(String::new());
    o.settings.archive_mode = Some("off".into());
    assert_eq!(name(&o), "none");
}

// --- Point 4: every retention source of every version --------------------

fn summarizing(summarized: Lsn, running: Option<bool>) -> Observation {
    let mut o = small(30 * MB);
    o.settings.summarize_wal = Some(true);
    o.summarizer = Some(SummarizerObs {
        summarized_lsn: Some(summarized),
        pending_lsn: Some(summarized),
        running,
        summaries: None,
    });
    o
}

/// 17+: a summarizer far behind holds WAL as a cause of its own, with the
/// summarized LSN, how much it holds and the remedy; max_slot_wal_keep_size
/// does not bound it.
#[test]
fn stuck_wal_summarizer_is_its_own_cause() {
    let mut o = summarizing(lsn_at(72, 0x60), Some(true));
    o.settings.max_slot_wal_keep_size = Some(2 * MB as i64);
    let r = diagnose(&o, &Thresholds::default());
    assert_eq!(r.cause.kind, CauseKind::WalSummarizer, "{}", r.headline);
    assert_eq!(r.cause.segment.as_deref(), Some(seg(72).as_str()));
    assert_eq!(r.cause.retained_bytes, Some(28 * MB + 0x4000));
    assert!(
        r.cause
            .summary
            .contains("has summarized only up to 0/4800060"),
        "{}",
        r.cause.summary
    );
    assert!(r
        .cause
        .summary
        .contains("max_slot_wal_keep_size does not bound"));
    assert!(r
        .cause
        .remedy
        .as_deref()
        .is_some_and(|m| m.contains("summarize_wal = off")));
    assert_eq!(check(&r, "wal_summarizer").status, Status::Warning);
    assert_eq!(r.status, Status::Warning);
    assert!(r.headline.contains("growing"), "{}", r.headline);
    let s = r.summarizer.expect("summarizer report");
    assert_eq!(s.summarized_lsn.as_deref(), Some("0/4800060"));
}

/// A summarizer that is not running and behind the REDO pointer is a
/// cause even before it holds much.
#[test]
fn stopped_wal_summarizer_is_a_cause() {
    let r = diagnose(
        &summarizing(lsn_at(98, 0x60), Some(false)),
        &Thresholds::default(),
    );
    assert_eq!(r.cause.kind, CauseKind::WalSummarizer);
    assert!(
        r.cause.summary.contains("is not running"),
        "{}",
        r.cause.summary
    );
}

/// A working summarizer trails the REDO pointer by up to a checkpoint
/// cycle (summaries end at REDO points): normal.
#[test]
fn wal_summarizer_trailing_a_checkpoint_cycle_is_normal() {
    let mut o = summarizing(lsn_at(97, 0x28), Some(true));
    if let Some(d) = o.pg_wal.as_mut() {
        d.bytes = 7 * MB;
    }
    let r = diagnose(&o, &Thresholds::default());
    ok(&r);
    assert_eq!(check(&r, "wal_summarizer").status, Status::Ok);
    // It holds the oldest segment, and is not the cause.
    assert_eq!(r.retention[0].kind, CauseKind::WalSummarizer);
}

fn idle_slot(inactive_for: Option<f64>) -> Observation {
    let mut o = small(6 * MB);
    o.major_version = Some(18);
    o.settings.idle_replication_slot_timeout = Some(600.0);
    o.slots = Some(vec![SlotObs {
        name: "idle".into(),
        slot_type: "physical".into(),
        active: Some(false),
        restart_lsn: Some(lsn_at(99, 0x28)),
        inactive_since: inactive_for.map(|s| NOW - s),
        ..SlotObs::default()
    }]);
    o
}

/// 18: a slot inactive longer than idle_replication_slot_timeout is
/// invalidated by the next checkpoint, said plainly; one not yet there
/// gets an evidence line with the time left.
#[test]
fn idle_replication_slot_timeout() {
    let r = diagnose(&idle_slot(Some(900.0)), &Thresholds::default());
    let c = check(&r, "replication_slot");
    assert_eq!(c.status, Status::Warning);
    assert!(
        c.summary.contains(
            "has been inactive for 15 min, longer than idle_replication_slot_timeout = 10 min: the next checkpoint invalidates it"
        ),
        "{}",
        c.summary
    );
    assert_eq!(r.slots[0].inactive_seconds, Some(900.0));

    let r = diagnose(&idle_slot(Some(120.0)), &Thresholds::default());
    let c = check(&r, "replication_slot");
    assert_eq!(c.status, Status::Ok);
    assert!(
        c.evidence
            .iter()
            .any(|e| e
                .contains("the first checkpoint after 8 min more of inactivity invalidates it")),
        "{:?}",
        c.evidence
    );

    // Invalidated for it.
    let mut o = idle_slot(Some(900.0));
    if let Some(s) = o.slots.as_mut() {
        s[0].invalidated = true;
        s[0].invalidation_reason = Some("idle_timeout".into());
        s[0].wal_status = Some("lost".into());
    }
    let r = diagnose(&o, &Thresholds::default());
    let c = check(&r, "replication_slot");
    assert_eq!(c.status, Status::Warning);
    assert!(
        c.summary
            .contains("\"idle\" was invalidated by idle_replication_slot_timeout (now 10 min)"),
        "{}",
        c.summary
    );
    assert_eq!(
        r.slots[0].invalidation_reason.as_deref(),
        Some("idle_timeout")
    );

    // An active slot, or no timeout: nothing to say.
    let mut o = idle_slot(Some(900.0));
    o.settings.idle_replication_slot_timeout = Some(0.0);
    assert_eq!(
        check(&diagnose(&o, &Thresholds::default()), "replication_slot").status,
        Status::Ok
    );
}

/// 19: a logical slot under wal_level = replica is not a misconfiguration
/// (effective_wal_level); before 19 the server would not start with it.
#[test]
fn effective_wal_level_on_19() {
    let mut o = small(4 * MB);
    o.major_version = Some(19);
    o.settings.effective_wal_level = Some("logical".into());
    o.slots = Some(vec![SlotObs {
        name: "sub1".into(),
        slot_type: "logical".into(),
        active: Some(true),
        restart_lsn: Some(lsn_at(100, 0x28)),
        confirmed_flush: Some(lsn_at(100, 0x100)),
        ..SlotObs::default()
    }]);
    let r = diagnose(&o, &Thresholds::default());
    ok(&r);
    let c = check(&r, "wal_level");
    assert_eq!(c.status, Status::Ok);
    assert!(
        c.summary
            .contains("PostgreSQL 19 raises effective_wal_level"),
        "{}",
        c.summary
    );

    o.major_version = Some(18);
    o.mode = Mode::Offline;
    let r = diagnose(&o, &Thresholds::default());
    let c = check(&r, "wal_level");
    assert_eq!(c.status, Status::Warning);
    assert!(
        c.summary.contains("PostgreSQL 18 refuses to start"),
        "{}",
        c.summary
    );
}

/// Online: PostgreSQL's archiver archived up to segment 70 (the command
/// worked, then was emptied); 71 to 79 were marked done without it, so an
/// external program took over and has now stopped at 80.
#[test]
fn files_marked_done_past_the_archivers_last_are_an_external_consumer() {
    let mut o = small(24 * MB);
    stopped_consumer(&mut o, &[]);
    o.archiver = Some(ArchiverStats {
        archived_count: 70,
        last_archived_wal: Some(seg(70)),
        last_archived_time: Some(NOW - 5000.0),
        ..Default::default()
    });
    let r = diagnose(&o, &Thresholds::default());
    assert_eq!(r.archiver.consumer, Some(Consumer::External));
    assert_eq!(r.cause.kind, CauseKind::ArchiveBacklog);
    assert!(
        check(&r, "archiver")
            .evidence
            .iter()
            .any(|e| e.contains("9 WAL files between")),
        "{:?}",
        check(&r, "archiver").evidence
    );
    // The command emptied right after its last success: 71 still waits,
    // nothing went without PostgreSQL's archiver.
    o.archiver = Some(ArchiverStats {
        archived_count: 79,
        last_archived_wal: Some(seg(79)),
        last_archived_time: Some(NOW - 5000.0),
        ..Default::default()
    });
    let r = diagnose(&o, &Thresholds::default());
    assert_eq!(r.archiver.consumer, Some(Consumer::None));
    assert_eq!(r.cause.kind, CauseKind::ArchiveNotConfigured);
}
