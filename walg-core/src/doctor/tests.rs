//! Binding-cause and check rules on synthetic observations (1 MiB segments).

use super::*;

const MB: u64 = 1 << 20;
const NOW: f64 = 1_800_000_000.0;

fn seg(n: u64) -> String {
    name_of(n, 1, MB)
}

fn lsn_at(segno: u64, offset: u64) -> Lsn {
    Lsn(segno * MB + offset)
}

/// A primary at segment 100 with its last checkpoint at segment 98,
/// archiving on and working, max_wal_size 64 MiB.
fn base() -> Observation {
    let mut o = Observation::new(Mode::Online, NOW, MB);
    o.timeline = Some(1);
    o.in_recovery = Some(false);
    o.current_lsn = Some(lsn_at(100, 0x2000));
    o.redo_lsn = Some(lsn_at(98, 0x100));
    o.checkpoint_time = Some(NOW - 60.0);
    o.settings = Settings {
        archive_mode: Some("on".into()),
        archive_command: Some("walg wal-push %p".into()),
        archive_library: Some(String::new()),
        wal_level: Some("replica".into()),
        wal_keep_size: Some(0),
        max_slot_wal_keep_size: Some(-1),
        max_wal_size: Some(64 * MB as i64),
        min_wal_size: Some(2 * MB as i64),
        checkpoint_timeout: Some(300.0),
        checkpoint_completion_target: Some(0.9),
        ..Settings::default()
    };
    o.archiver = Some(ArchiverStats {
        archived_count: 99,
        last_archived_wal: Some(seg(99)),
        last_archived_time: Some(NOW - 5.0),
        ..Default::default()
    });
    o.status_files = Some(vec![StatusFile {
        name: seg(99),
        ready: false,
        mtime: NOW - 6.0,
        ctime: None,
    }]);
    o.slots = Some(vec![]);
    o.pg_wal = Some(WalDir {
        bytes: 10 * MB,
        segments: 10,
        fs_total: Some(1000 * MB),
        fs_available: Some(800 * MB),
        ..Default::default()
    });
    o
}

fn ready(o: &mut Observation, from: u64, to: u64, first_mtime: f64) {
    let files = o.status_files.get_or_insert_with(Vec::new);
    for (i, n) in (from..=to).enumerate() {
        files.push(StatusFile {
            name: seg(n),
            ready: true,
            mtime: first_mtime + i as f64 * 10.0,
            ctime: None,
        });
    }
}

fn slot(name: &str, restart: Lsn, active: bool) -> SlotObs {
    SlotObs {
        name: name.into(),
        slot_type: "physical".into(),
        active: Some(active),
        active_pid: None,
        temporary: false,
        restart_lsn: Some(restart),
        confirmed_flush: None,
        wal_status: Some("extended".into()),
        safe_wal_size: None,
        invalidated: false,
        database: None,
        plugin: None,
        ..SlotObs::default()
    }
}

fn check_ids(r: &Report, status: Status) -> Vec<&'static str> {
    r.checks
        .iter()
        .filter(|c| c.status == status)
        .map(|c| c.id)
        .collect()
}

#[test]
fn healthy_cluster_is_ok_with_no_cause() {
    let r = diagnose(&base(), &Thresholds::default());
    assert_eq!(r.status, Status::Ok, "{:#?}", r.checks);
    assert_eq!(r.cause.kind, CauseKind::None);
    assert!(r.headline.contains("healthy"), "{}", r.headline);
    assert_eq!(r.retention.len(), 1);
    assert_eq!(r.retention[0].kind, CauseKind::Checkpoint);
}

#[test]
fn failing_archiver_binds_and_names_the_segment() {
    let mut o = base();
    o.archiver = Some(ArchiverStats {
        archived_count: 9,
        last_archived_wal: Some(seg(9)),
        last_archived_time: Some(NOW - 3000.0),
        failed_count: 40,
        last_failed_wal: Some(seg(10)),
        last_failed_time: Some(NOW - 20.0),
        stats_reset: None,
    });
    o.status_files = Some(vec![]);
    ready(&mut o, 10, 99, NOW - 2820.0);
    if let Some(d) = o.pg_wal.as_mut() {
        d.bytes = 91 * MB;
    }
    let r = diagnose(&o, &Thresholds::default());
    assert_eq!(r.cause.kind, CauseKind::ArchiveFailing);
    assert_eq!(r.cause.segment.as_deref(), Some(seg(10).as_str()));
    assert_eq!(r.status, Status::Critical);
    // Failing since the oldest .ready appeared (47 min), not the last success.
    assert!(
        r.headline.contains(&format!(
            "archive_command has failed on {} for 47 min",
            seg(10)
        )),
        "{}",
        r.headline
    );
    assert!(r.headline.contains("growing"), "{}", r.headline);
    assert_eq!(r.cause.retained_bytes, Some(90 * MB + 0x2000));
    // Once archiving works, nothing but the normal checkpoint cycle holds
    // WAL: no next cause.
    assert_eq!(r.next_cause, None);
    assert_eq!(r.archiver.ready_count, Some(90));
    assert_eq!(r.archiver.oldest_ready.as_deref(), Some(seg(10).as_str()));
    // 90 segments completed from 47 min ago until 32 min ago, none since:
    // 89 MiB over 47 min, not the burst rate of 100 KiB/s.
    let rate = r.pg_wal.growth_bytes_per_second.expect("growth");
    assert!((rate - 89.0 * MB as f64 / 2820.0).abs() < 1.0, "{rate}");
    assert!(r.pg_wal.seconds_until_full.is_some());
}

#[test]
fn empty_archive_command_is_not_configured_and_has_no_failures() {
    let mut o = base();
    o.settings.archive_command = Some(String::new());
    o.archiver = Some(ArchiverStats::default());
    o.status_files = Some(vec![]);
    ready(&mut o, 90, 99, NOW - 100.0);
    let r = diagnose(&o, &Thresholds::default());
    assert_eq!(r.cause.kind, CauseKind::ArchiveNotConfigured);
    assert_eq!(r.archiver.consumer, Some(Consumer::None));
    assert_eq!(r.status, Status::Critical);
    assert!(r
        .cause
        .remedy
        .as_deref()
        .unwrap_or("")
        .contains("archive_command"));
}

#[test]
fn slow_archiver_is_a_backlog() {
    let mut o = base();
    ready(&mut o, 60, 99, NOW - 400.0);
    let r = diagnose(&o, &Thresholds::default());
    assert_eq!(r.cause.kind, CauseKind::ArchiveBacklog);
    assert_eq!(r.status, Status::Warning, "{:#?}", r.checks);
    assert_eq!(r.checks[0].id, "archiver");
    // pg_wal grows at the WAL rate: 800 MiB free last about 2.2 hours.
    assert!(check_ids(&r, Status::Warning).contains(&"filesystem"));
}

#[test]
fn inactive_slot_binds_then_the_checkpoint() {
    let mut o = base();
    o.slots = Some(vec![
        slot("s1", lsn_at(20, 0x28), false),
        slot("s2", lsn_at(99, 0), true),
    ]);
    if let Some(d) = o.pg_wal.as_mut() {
        d.bytes = 81 * MB;
    }
    let r = diagnose(&o, &Thresholds::default());
    assert_eq!(r.cause.kind, CauseKind::ReplicationSlot);
    assert_eq!(r.cause.slot.as_deref(), Some("s1"));
    assert_eq!(r.cause.retained_bytes, Some(80 * MB + 0x2000));
    assert!(r
        .cause
        .remedy
        .as_deref()
        .unwrap_or("")
        .contains("pg_drop_replication_slot('s1')"));
    assert_eq!(r.status, Status::Warning);
    assert_eq!(r.slots.len(), 2);
    assert_eq!(r.slots[0].retained_bytes, Some(80 * MB + 0x2000 - 0x28));
    assert_eq!(r.next_cause, None);
}

#[test]
fn max_slot_wal_keep_size_caps_what_a_slot_holds() {
    let mut o = base();
    o.settings.max_slot_wal_keep_size = Some(8 * MB as i64);
    o.settings.wal_keep_size = Some(16 * MB as i64);
    o.slots = Some(vec![slot("s1", lsn_at(20, 0), false)]);
    let r = diagnose(&o, &Thresholds::default());
    // The slot is capped at segment 92, wal_keep_size reaches back to 84.
    assert_eq!(r.cause.kind, CauseKind::WalKeepSize, "{:?}", r.retention);
    assert_eq!(r.retention[1].kind, CauseKind::ReplicationSlot);
    assert_eq!(r.retention[1].oldest_segment, seg(92));
}

#[test]
fn invalidated_slot_while_archiving_is_stuck_leaves_the_archiver_binding() {
    let mut o = base();
    o.settings.archive_command = Some(String::new());
    o.archiver = Some(ArchiverStats::default());
    o.status_files = Some(vec![]);
    ready(&mut o, 30, 99, NOW - 600.0);
    let mut s = slot("s1", lsn_at(10, 0), false);
    s.restart_lsn = None;
    s.invalidated = true;
    s.wal_status = Some("lost".into());
    o.slots = Some(vec![s]);
    let r = diagnose(&o, &Thresholds::default());
    assert_eq!(r.cause.kind, CauseKind::ArchiveNotConfigured);
    let slot_check = r
        .checks
        .iter()
        .find(|c| c.id == "replication_slot")
        .expect("slot check");
    assert_eq!(slot_check.status, Status::Warning);
    assert!(slot_check.summary.contains("invalidated"));
}

#[test]
fn large_wal_keep_size_binds() {
    let mut o = base();
    o.settings.wal_keep_size = Some(90 * MB as i64);
    if let Some(d) = o.pg_wal.as_mut() {
        d.bytes = 91 * MB;
    }
    let r = diagnose(&o, &Thresholds::default());
    assert_eq!(r.cause.kind, CauseKind::WalKeepSize);
    assert_eq!(r.cause.segment.as_deref(), Some(seg(10).as_str()));
    // Large by design, not a problem: pg_wal is within what wal_keep_size
    // explains.
    assert_eq!(r.status, Status::Ok, "{:#?}", r.checks);
    // wal_keep_size is constant: pg_wal is large, not growing.
    assert!(!r.headline.contains("growing"), "{}", r.headline);
}

#[test]
fn a_tie_blames_the_source_that_would_stay() {
    let mut o = base();
    o.slots = Some(vec![slot("s1", lsn_at(98, 0), false)]);
    let r = diagnose(&o, &Thresholds::default());
    assert_eq!(r.retention[0].kind, CauseKind::ReplicationSlot);
}

#[test]
fn offline_no_progress_since_the_oldest_ready_is_failing() {
    let mut o = base();
    o.mode = Mode::Offline;
    o.archiver = None;
    o.slots = None;
    o.status_files = Some(vec![StatusFile {
        name: seg(9),
        ready: false,
        mtime: NOW - 4000.0,
        ctime: Some(NOW - 3900.0),
    }]);
    ready(&mut o, 10, 20, NOW - 3000.0);
    let r = diagnose(&o, &Thresholds::default());
    assert_eq!(r.cause.kind, CauseKind::ArchiveFailing);
    assert_eq!(r.cause.segment.as_deref(), Some(seg(10).as_str()));
    assert_eq!(
        r.archiver.last_archived_wal.as_deref(),
        Some(seg(9).as_str())
    );

    // A .done renamed after the oldest .ready appeared: progress, a backlog.
    let mut o2 = o.clone();
    if let Some(f) = o2.status_files.as_mut() {
        f[0].ctime = Some(NOW - 100.0);
    }
    assert_eq!(
        diagnose(&o2, &Thresholds::default()).cause.kind,
        CauseKind::ArchiveBacklog
    );
}

#[test]
fn standby_with_archive_mode_on_does_not_wait_for_its_archiver() {
    let mut o = base();
    o.in_recovery = Some(true);
    o.archiver = Some(ArchiverStats::default());
    ready(&mut o, 10, 20, NOW - 3000.0);
    let r = diagnose(&o, &Thresholds::default());
    assert_eq!(r.cause.kind, CauseKind::None);
    o.settings.archive_mode = Some("always".into());
    o.archiver = Some(ArchiverStats {
        failed_count: 3,
        last_failed_wal: Some(seg(10)),
        last_failed_time: Some(NOW - 1.0),
        ..Default::default()
    });
    let r = diagnose(&o, &Thresholds::default());
    assert_eq!(r.cause.kind, CauseKind::ArchiveFailing);
}

#[test]
fn logical_slot_pinned_by_an_old_transaction() {
    let mut o = base();
    let mut s = slot("l1", lsn_at(50, 0), true);
    s.slot_type = "logical".into();
    s.confirmed_flush = Some(lsn_at(99, 0));
    o.slots = Some(vec![s]);
    o.oldest_xact = Some(OldestXact {
        pid: 4242,
        xact_start: NOW - 7200.0,
        state: Some("idle in transaction".into()),
        prepared: false,
        gid: None,
    });
    let r = diagnose(&o, &Thresholds::default());
    assert_eq!(r.cause.kind, CauseKind::ReplicationSlot);
    assert!(
        r.cause.summary.contains("pinned by an old transaction"),
        "{}",
        r.cause.summary
    );
    let c = r
        .checks
        .iter()
        .find(|c| c.id == "replication_slot")
        .expect("check");
    assert_eq!(c.status, Status::Warning);
    assert!(c
        .remedy
        .as_deref()
        .unwrap_or("")
        .contains("pg_terminate_backend(4242)"));
}

#[test]
fn stuck_checkpoints_are_the_cause_only_when_wal_piles_up() {
    let mut o = base();
    o.redo_lsn = Some(lsn_at(10, 0));
    o.checkpoint_time = Some(NOW - 3600.0);
    if let Some(d) = o.pg_wal.as_mut() {
        d.bytes = 91 * MB;
    }
    let r = diagnose(&o, &Thresholds::default());
    assert_eq!(r.cause.kind, CauseKind::Checkpoint);
    // An idle server: an old checkpoint but no WAL since.
    let mut idle = base();
    idle.checkpoint_time = Some(NOW - 86400.0);
    idle.redo_lsn = Some(lsn_at(100, 0x100));
    let r = diagnose(&idle, &Thresholds::default());
    assert_eq!(r.status, Status::Ok, "{:#?}", r.checks);
}

#[test]
fn foreign_files_and_full_disks_are_reported() {
    let mut o = base();
    if let Some(d) = o.pg_wal.as_mut() {
        d.foreign.push(ForeignFile {
            name: "000000010000000000000001.bak".into(),
            bytes: MB,
            age_seconds: 99999.0,
        });
        d.fs_available = Some(30 * MB);
    }
    let r = diagnose(&o, &Thresholds::default());
    assert_eq!(r.status, Status::Critical);
    assert_eq!(r.checks[0].id, "filesystem");
    assert!(check_ids(&r, Status::Warning).contains(&"foreign_files"));
}

#[test]
fn nothing_read_is_unknown_and_partial_reads_warn() {
    let o = Observation::new(Mode::Offline, NOW, MB);
    assert_eq!(diagnose(&o, &Thresholds::default()).status, Status::Unknown);
    let mut o = base();
    o.problems.push((
        "pg_ls_archive_statusdir()".into(),
        "permission denied".into(),
    ));
    let r = diagnose(&o, &Thresholds::default());
    assert_eq!(r.status, Status::Warning);
}

#[test]
fn archive_contents_are_checked() {
    let mut o = base();
    o.archive = Some(ArchiveObs {
        archived: vec![(seg(99), None)],
        oldest_ready: None,
        errors: vec![],
    });
    let r = diagnose(&o, &Thresholds::default());
    assert_eq!(r.status, Status::Critical);
    assert_eq!(r.checks[0].id, "archive");
    o.archive = Some(ArchiveObs {
        archived: vec![(seg(99), Some("default".into()))],
        oldest_ready: Some((seg(100), Some("default".into()))),
        errors: vec![],
    });
    let r = diagnose(&o, &Thresholds::default());
    assert_eq!(check_ids(&r, Status::Warning), vec!["archive_conflict"]);
}

/// The declared pg_wal budget: `budget` set to 30 MiB, pg_wal holding
/// `wal` MiB, segments `given_up` given up a minute ago, the newest
/// `.backup` at segment `backup`.
fn budget(wal: u64, given_up: &[u64], backup: Option<u64>) -> Observation {
    let mut o = base();
    o.budget = Some(BudgetObs {
        budget: Some("30MB".into()),
        budget_bytes: Some(30 * MB),
        wal_bytes: Some(wal * MB),
        given_up: given_up
            .iter()
            .map(|n| GivenUp {
                segment: seg(*n),
                time: Some(NOW - 60.0),
                reason: Some("every storage failed".into()),
            })
            .collect(),
        newest_backup: backup.map(|b| format!("{}.00000028.backup", seg(b))),
        problems: vec![],
    });
    o
}

fn budget_check(r: &Report, id: &str) -> (Status, String, Option<String>) {
    let c = r
        .checks
        .iter()
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("no {id} check: {:#?}", r.checks));
    (c.status, c.summary.clone(), c.remedy.clone())
}

#[test]
fn pg_wal_over_its_budget_is_critical_with_the_remedy() {
    let r = diagnose(&budget(40, &[], Some(90)), &Thresholds::default());
    let (status, summary, remedy) = budget_check(&r, "pg_wal_budget");
    assert_eq!(status, Status::Critical, "{summary}");
    assert!(
        summary.contains("over WALG_PG_WAL_BUDGET 30MB"),
        "{summary}"
    );
    assert!(remedy.expect("remedy").contains("new base backup"));
    assert_eq!(r.status, Status::Critical);
    let b = r.budget.expect("budget report");
    assert!(b.over_budget);
    assert_eq!(b.given_up_segments, 0);
}

#[test]
fn segments_being_given_up_are_critical_and_not_a_lost_archive() {
    // PostgreSQL counts 99 archived: wal-push gave it up on purpose.
    let mut o = budget(20, &[97, 98, 99], Some(90));
    o.archive = Some(ArchiveObs {
        archived: vec![(seg(99), None)],
        oldest_ready: None,
        errors: vec![],
    });
    let r = diagnose(&o, &Thresholds::default());
    let (status, summary, _) = budget_check(&r, "pg_wal_budget");
    assert_eq!(status, Status::Critical, "{summary}");
    assert!(
        summary.contains("giving segments up on purpose"),
        "{summary}"
    );
    assert!(summary.contains(&seg(99)), "{summary}");
    assert!(
        r.headline.contains("giving segments up on purpose") && !r.headline.contains("disk full"),
        "the headline leads with the budget: {}",
        r.headline
    );
    assert!(
        r.checks
            .iter()
            .all(|c| c.id != "archive" || c.status != Status::Critical),
        "{:#?}",
        r.checks
    );
    // The gaps are newer than the newest backup too.
    assert_eq!(budget_check(&r, "declared_gap").0, Status::Warning);
    assert_eq!(r.budget.expect("report").given_up_segments, 3);
}

#[test]
fn a_gap_newer_than_the_newest_backup_is_a_warning_until_a_new_one() {
    // Archived since (99 > 95), within the budget: only the backup matters.
    let r = diagnose(&budget(20, &[94, 95], Some(90)), &Thresholds::default());
    assert_eq!(budget_check(&r, "pg_wal_budget").0, Status::Ok);
    let (status, summary, remedy) = budget_check(&r, "declared_gap");
    assert_eq!(status, Status::Warning, "{summary}");
    assert!(remedy.expect("remedy").contains("take a new base backup"));
    assert_eq!(r.status, Status::Warning);
    let r = diagnose(&budget(20, &[94, 95], None), &Thresholds::default());
    assert_eq!(budget_check(&r, "declared_gap").0, Status::Warning);
    // A backup after the gap: OK.
    let r = diagnose(&budget(20, &[94, 95], Some(97)), &Thresholds::default());
    assert_eq!(budget_check(&r, "declared_gap").0, Status::Ok);
    assert_eq!(r.status, Status::Ok);
    // No budget and no gap: no check at all.
    let r = diagnose(&base(), &Thresholds::default());
    assert!(r
        .checks
        .iter()
        .all(|c| c.id != "pg_wal_budget" && c.id != "declared_gap"));
    assert!(r.budget.is_none());
}

#[test]
fn a_damaged_gap_record_is_unknown_not_a_crash() {
    let mut o = budget(20, &[], Some(90));
    if let Some(b) = o.budget.as_mut() {
        b.problems
            .push("000000010000000000000050.json: not valid JSON".into());
    }
    let r = diagnose(&o, &Thresholds::default());
    assert_eq!(budget_check(&r, "declared_gap").0, Status::Unknown);
    assert_eq!(r.status, Status::Warning);
}

#[test]
fn a_budget_in_use_leads_the_headline_over_the_failing_archiver() {
    // Every storage fails: the archiver fails on 100 while wal-push gives
    // segments up, so pg_wal stays within the budget.
    let mut o = budget(40, &[97, 98, 99], Some(90));
    o.archiver = Some(ArchiverStats {
        archived_count: 99,
        last_archived_wal: Some(seg(99)),
        last_archived_time: Some(NOW - 2.0),
        failed_count: 3,
        last_failed_wal: Some(seg(100)),
        last_failed_time: Some(NOW - 1.0),
        stats_reset: None,
    });
    o.status_files = Some(vec![]);
    ready(&mut o, 100, 100, NOW - 5.0);
    let r = diagnose(&o, &Thresholds::default());
    assert_eq!(r.status, Status::Critical);
    assert!(
        r.headline.contains("giving segments up on purpose") && !r.headline.contains("disk full"),
        "{}",
        r.headline
    );
}
