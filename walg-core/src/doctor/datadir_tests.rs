//! `datadir`'s tests: real files in temporary data directories.

use super::*;
use crate::doctor::{diagnose, Mode, Status, Thresholds};

#[test]
fn wal_dir_classification() {
    let e = |n: &str| (n.to_string(), 100u64, 0.0);
    let d = classify_wal_dir(
        &[
            e("000000010000000000000001"),
            e("000000010000000000000002.partial"),
            e("00000002.history"),
            e("000000010000000000000001.00000028.backup"),
            e("archive_status"),
            e("walg_data"),
            e(".wal-g"),
            e("xlogtemp.1234"),
            e("000000010000000000000001.bak"),
            e("core"),
        ],
        10_000.0,
        Some(&[StatusFile {
            name: "000000010000000000000009".into(),
            ready: true,
            mtime: 0.0,
            ctime: None,
        }]),
    );
    assert_eq!(d.segments, 1);
    assert_eq!(d.bytes, 1000);
    assert_eq!(
        d.foreign
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>(),
        vec!["000000010000000000000001.bak", "core"]
    );
    assert_eq!(d.temp.len(), 1);
    assert_eq!(
        d.orphan_status,
        vec!["000000010000000000000009".to_string()]
    );
}

/// A data directory whose pg_control is damaged or of an unknown
/// version: the check says UNKNOWN with the parser's reason, and the
/// rest of the directory is still read.
#[test]
fn damaged_control_file_is_unknown_not_fatal() {
    const PG15: &[u8] = include_bytes!("../../testdata/pg_control.pg15");
    for (label, patch, expect) in [
        ("flipped byte", 0usize, "checksum mismatch"),
        ("version 2000", 8, "version 2000"),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(dir.path().join("global")).expect("mkdir");
        fs::create_dir_all(dir.path().join("pg_wal/archive_status")).expect("mkdir");
        let mut b = PG15.to_vec();
        if patch == 8 {
            b[8..12].copy_from_slice(&2000u32.to_le_bytes());
        } else {
            b[patch] ^= 0x10;
        }
        fs::write(dir.path().join("global/pg_control"), &b).expect("write");
        fs::write(
            dir.path().join("postgresql.conf"),
            "archive_mode = on\narchive_command = 'x'\n",
        )
        .expect("write");
        let seg = dir.path().join("pg_wal/000000010000000000000003");
        fs::File::create(&seg)
            .and_then(|f| f.set_len(1 << 20))
            .expect("segment");
        let mut o = Observation::new(Mode::Offline, 1_800_000_000.0, 0);
        let mut problems = Vec::new();
        read_data_dir(dir.path(), &mut o, false, &mut problems);
        assert!(
            problems.iter().any(|(_, m)| m.contains(expect)),
            "{label}: {problems:?}"
        );
        assert!(o.pg_wal.is_some(), "{label}: pg_wal still read");
        assert_eq!(segment_size_from_files(dir.path()), Some(1 << 20));
        o.segment_size = 1 << 20;
        o.problems = problems;
        let r = diagnose(&o, &Thresholds::default());
        let read = r
            .checks
            .iter()
            .find(|c| c.id == "read")
            .expect("read check");
        assert_eq!(read.status, Status::Unknown, "{label}");
        assert!(read.summary.contains(expect), "{label}: {}", read.summary);
    }
}

/// A whole offline data directory of real files: the control file, a
/// slot state file, status files, `pg_wal` entries and a configuration
/// with an include; each lands in its part of the observation.
#[test]
fn offline_directory_fills_the_observation() {
    const PG15: &[u8] = include_bytes!("../../testdata/pg_control.pg15");
    const SLOT: &[u8] = include_bytes!("../../testdata/slot_physical.pg15");
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    for sub in ["global", "pg_wal/archive_status", "pg_replslot/standby1"] {
        fs::create_dir_all(d.join(sub)).expect("mkdir");
    }
    fs::write(d.join("global/pg_control"), PG15).expect("write");
    fs::write(d.join("pg_replslot/standby1/state"), SLOT).expect("write");
    fs::write(
        d.join("postgresql.conf"),
        "archive_mode = on\ninclude 'extra.conf'\nmax_wal_size = 2GB\n",
    )
    .expect("write");
    fs::write(d.join("extra.conf"), "wal_keep_size = 64MB\n").expect("write");
    for n in ["000000010000000000000003", "000000010000000000000004"] {
        fs::File::create(d.join("pg_wal").join(n))
            .and_then(|f| f.set_len(16 << 20))
            .expect("segment");
    }
    fs::write(d.join("pg_wal/core"), b"x").expect("write");
    fs::write(
        d.join("pg_wal/archive_status/000000010000000000000003.done"),
        b"",
    )
    .expect("write");
    fs::write(
        d.join("pg_wal/archive_status/000000010000000000000004.ready"),
        b"",
    )
    .expect("write");

    let mut o = Observation::new(Mode::Offline, 1_800_000_000.0, 0);
    let mut problems = Vec::new();
    read_data_dir(d, &mut o, false, &mut problems);
    assert!(problems.is_empty(), "{problems:?}");
    let c = control::parse(PG15).expect("control");
    assert_eq!(o.system_identifier, Some(c.system_identifier));
    assert_eq!(o.redo_lsn, Some(c.redo));
    assert_eq!(o.segment_size, u64::from(c.wal_segment_size));
    let status = o.status_files.as_ref().expect("status files");
    assert_eq!(status.len(), 2);
    assert_eq!(status.iter().filter(|f| f.ready).count(), 1);
    assert!(status.iter().all(|f| f.ctime.is_some()));
    let w = o.pg_wal.as_ref().expect("pg_wal");
    assert_eq!(w.segments, 2);
    assert_eq!(w.bytes, 2 * (16 << 20) + 1);
    assert_eq!(w.foreign.len(), 1);
    assert!(w.fs_total.is_some() && w.fs_available.is_some());
    let slots = o.slots.as_ref().expect("slots");
    assert_eq!(slots.len(), 1);
    assert_eq!(slots[0].slot_type, "physical");
    assert_eq!(o.settings.archive_mode.as_deref(), Some("on"));
    assert_eq!(o.settings.max_wal_size, Some(2 << 30));
    assert_eq!(o.settings.wal_keep_size, Some(64 << 20));
    assert_eq!(
        o.settings.min_wal_size,
        Some(80 << 20),
        "PostgreSQL's default"
    );
}

const MB: u64 = 1 << 20;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/testdata/{name}", env!("CARGO_MANIFEST_DIR"));
    fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A sparse 1 MiB segment named `name` whose long page header says it is
/// segment `written` (a recycled file keeps the header of the segment it
/// used to be).
fn write_segment(pg_wal: &Path, name: &str, written: u64) {
    let WalName::Segment(s) =
        WalName::parse(&format!("00000001{:08X}{:08X}", 0, written)).expect("name")
    else {
        panic!("{name} is not a segment name");
    };
    let f = fs::File::create(pg_wal.join(name)).expect("create");
    f.set_len(MB).expect("size");
    let h = crate::wal::page::LongPageHeader {
        magic: 0xD118,
        info: 0x0006,
        timeline: s.timeline,
        page_addr: s.start_lsn(MB).0,
        system_id: 1,
        segment_size: MB as u32,
        block_size: 8192,
    };
    std::io::Write::write_all(&mut &f, &crate::wal::page::encode_long_header(&h)).expect("header");
}

/// A stopped cluster of major `major` built from the real files of that
/// version (`testdata/README.md`): its pg_control, `PG_VERSION`, the named
/// slots' state files, `postgresql.conf`, segments `first..=last` written,
/// and `recycled` files ahead of them (with old headers).
fn cluster(
    major: u32,
    slots: &[&str],
    conf: &str,
    (first, last, recycled): (u64, u64, u64),
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    for sub in ["global", "pg_wal/archive_status", "pg_replslot"] {
        fs::create_dir_all(d.join(sub)).expect("mkdir");
    }
    fs::write(
        d.join("global/pg_control"),
        fixture(&format!("pg_control.pg{major}")),
    )
    .expect("write");
    fs::write(d.join("PG_VERSION"), format!("{major}\n")).expect("write");
    for s in slots {
        fs::create_dir_all(d.join("pg_replslot").join(s)).expect("mkdir");
        fs::write(
            d.join("pg_replslot").join(s).join("state"),
            fixture(&format!("slot_{s}.pg{major}")),
        )
        .expect("write");
    }
    fs::write(d.join("postgresql.conf"), conf).expect("write");
    for n in first..=last + recycled {
        let written = if n <= last {
            n
        } else {
            n.saturating_sub(8).max(1)
        };
        write_segment(
            &d.join("pg_wal"),
            &format!("00000001{:08X}{:08X}", 0, n),
            written,
        );
    }
    dir
}

fn offline(d: &Path, opts: &ReadOptions) -> (Observation, crate::doctor::Report) {
    let mut o = Observation::new(Mode::Offline, 1_800_000_000.0, 0);
    let mut problems = Vec::new();
    read_data_dir_with(d, &mut o, opts, &mut problems);
    o.problems = problems;
    let r = diagnose(&o, &Thresholds::default());
    (o, r)
}

const SMALL: &str = "max_wal_size = 4MB\nmin_wal_size = 2MB\nwal_level = logical\n";

/// A healthy stopped cluster of every version 13 to 18 is OK offline:
/// pg_control read by its layout, REDO at the shutdown checkpoint, and
/// `pg_wal` holding what recycling keeps.
#[test]
fn healthy_stopped_cluster_of_every_version_is_ok() {
    // (major, REDO's segment)
    for (major, redo_seg) in [(13u32, 0xDu64), (16, 0xD), (17, 0xC), (18, 0x10)] {
        let dir = cluster(major, &[], SMALL, (redo_seg, redo_seg, 3));
        let (o, r) = offline(dir.path(), &ReadOptions::default());
        assert!(o.problems.is_empty(), "{major}: {:?}", o.problems);
        assert_eq!(o.major_version, Some(major));
        assert_eq!(
            r.status,
            Status::Ok,
            "{major}: {} {:#?}",
            r.headline,
            r.checks
        );
        assert_eq!(r.cause.kind, crate::doctor::CauseKind::None, "{major}");
        assert!(r.headline.contains("healthy"), "{major}: {}", r.headline);
        assert_eq!(r.server.major_version, Some(major));
    }
}

/// 18 offline with a forgotten slot: the slot, read with 18's format, is
/// the named cause; the slot invalidated by `idle_replication_slot_timeout`
/// is said so and holds nothing.
#[test]
fn forgotten_slot_is_the_cause_offline_on_18() {
    // phys1's restart_lsn is 0/F00058 (segment 0xF); WAL written up to
    // segment 0x1C: 13 MiB held.
    let dir = cluster(18, &["phys1", "idle1", "lost1"], SMALL, (0xF, 0x1C, 0));
    let (o, r) = offline(dir.path(), &ReadOptions::default());
    assert!(o.problems.is_empty(), "{:?}", o.problems);
    assert_eq!(r.cause.kind, crate::doctor::CauseKind::ReplicationSlot);
    assert_eq!(r.cause.slot.as_deref(), Some("phys1"));
    assert_eq!(r.status, Status::Warning, "{:#?}", r.checks);
    assert!(
        r.headline
            .contains("replication slot \"phys1\" (physical) holds 13.0 MiB of WAL"),
        "{}",
        r.headline
    );
    let reasons: Vec<(&str, Option<&str>)> = r
        .slots
        .iter()
        .map(|s| (s.name.as_str(), s.invalidation_reason.as_deref()))
        .collect();
    assert_eq!(
        reasons,
        vec![
            ("idle1", Some("idle_timeout")),
            ("lost1", Some("wal_removed")),
            ("phys1", None)
        ]
    );
    let idle = r
        .checks
        .iter()
        .find(|c| c.summary.contains("\"idle1\""))
        .expect("idle1 check");
    assert!(
        idle.summary
            .contains("was invalidated by idle_replication_slot_timeout"),
        "{}",
        idle.summary
    );
}

/// The slots of real 13, 16 and 17 servers read by their own major, with
/// the invalidated one's reason.
#[test]
fn slots_of_13_16_17_are_read_by_their_major() {
    for major in [13u32, 16, 17] {
        let dir = cluster(major, &["phys1", "logi1", "lost1"], SMALL, (0xB, 0x14, 0));
        let (o, r) = offline(dir.path(), &ReadOptions::default());
        assert!(o.problems.is_empty(), "{major}: {:?}", o.problems);
        let slots = o.slots.as_ref().expect("slots");
        assert_eq!(slots.len(), 3);
        let lost = slots.iter().find(|s| s.name == "lost1").expect("lost1");
        assert_eq!(lost.invalidation_reason.as_deref(), Some("wal_removed"));
        assert_eq!(r.cause.kind, crate::doctor::CauseKind::ReplicationSlot);
        // wal_level = logical in the configuration: the logical slot is fine.
        assert!(r.checks.iter().all(|c| c.id != "wal_level"), "{major}");
    }
}

/// A logical slot under `wal_level = replica` stops PostgreSQL 13-18 from
/// starting; 19 raises effective_wal_level instead.
#[test]
fn logical_slot_under_wal_level_replica() {
    let dir = cluster(17, &["logi1"], "max_wal_size = 4MB\n", (0xB, 0xC, 2));
    let (_, r) = offline(dir.path(), &ReadOptions::default());
    let c = r
        .checks
        .iter()
        .find(|c| c.id == "wal_level")
        .expect("wal_level check");
    assert_eq!(c.status, Status::Warning);
    assert!(
        c.summary.contains("PostgreSQL 17 refuses to start"),
        "{}",
        c.summary
    );
}

/// An unknown pg_control version: the cluster's own pg_controldata (here
/// one in `--pg-bin` printing what 15's prints, for version 2000) reads
/// it; one that warns is refused, and the error names what was tried.
#[test]
fn unknown_layout_falls_back_to_pg_controldata() {
    use std::os::unix::fs::PermissionsExt;
    let dir = cluster(18, &[], SMALL, (0x6, 0x6, 3));
    let mut b = fixture("pg_control.pg15");
    b[8..12].copy_from_slice(&2000u32.to_le_bytes());
    fs::write(dir.path().join("global/pg_control"), &b).expect("write");
    fs::write(dir.path().join("PG_VERSION"), "20\n").expect("write");
    let text = String::from_utf8(fixture("pg_controldata.pg15.txt"))
        .expect("utf-8")
        .replace(
            "pg_control version number:            1300",
            "pg_control version number:            2000",
        );
    let bin = tempfile::tempdir().expect("tempdir");
    let exe = bin.path().join("pg_controldata");
    let write_exe = |body: &str| {
        fs::write(&exe, format!("#!/bin/sh\ncat <<'EOF'\n{body}EOF\n")).expect("write");
        fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).expect("chmod");
    };
    write_exe(&text);
    let opts = ReadOptions {
        pg_bin: Some(bin.path().to_path_buf()),
        ..ReadOptions::default()
    };
    let (o, r) = offline(dir.path(), &opts);
    assert!(o.problems.is_empty(), "{:?}", o.problems);
    assert_eq!(o.redo_lsn, Some("0/616DD8".parse().expect("lsn")));
    assert_eq!(o.major_version, Some(20));
    assert!(
        r.server
            .version
            .as_deref()
            .is_some_and(|v| v.contains("read as pg_controldata")),
        "{:?}",
        r.server.version
    );

    write_exe(&format!(
        "WARNING: Calculated CRC checksum does not match value stored in file.\n{text}"
    ));
    let (o, r) = offline(dir.path(), &opts);
    let (_, why) = o
        .problems
        .iter()
        .find(|(a, _)| a.ends_with("pg_control"))
        .expect("a pg_control problem");
    assert!(why.contains("version 2000"), "{why}");
    assert!(why.contains("pg_controldata refused"), "{why}");
    assert!(why.contains(&exe.display().to_string()), "{why}");
    assert_eq!(r.status, Status::Warning);

    // Nothing to run: the error says where it looked.
    let (o, _) = offline(dir.path(), &ReadOptions::default());
    let (_, why) = o.problems.first().expect("problem");
    assert!(
        why.contains("no pg_controldata found (no --pg-bin, /usr/lib/postgresql/20/bin, PATH)"),
        "{why}"
    );
}

/// Debian's own pg_controldata of 15 on the real 15 file (the binary the
/// fallback runs for a 15 cluster), when this machine has it.
#[test]
fn real_pg_controldata_15() {
    let exe = Path::new("/usr/lib/postgresql/15/bin/pg_controldata");
    if !exe.is_file() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{} is missing (apt-get install postgresql-15)",
            exe.display()
        );
        eprintln!("skipped outside CI: {} is missing", exe.display());
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    fs::create_dir_all(dir.path().join("global")).expect("mkdir");
    fs::write(
        dir.path().join("global/pg_control"),
        fixture("pg_control.pg15"),
    )
    .expect("write");
    let c = run_controldata(exe, dir.path(), 1300).expect("run");
    let file = control::parse(&fixture("pg_control.pg15")).expect("parse");
    assert_eq!(c.redo, file.redo);
    assert_eq!(c.system_identifier, file.system_identifier);
    assert_eq!(c.checkpoint_time, file.checkpoint_time);
    assert_eq!(c.wal_segment_size, file.wal_segment_size);
    // It refuses the 18 file: another version's binary is not trusted.
    fs::write(
        dir.path().join("global/pg_control"),
        fixture("pg_control.pg18"),
    )
    .expect("write");
    let err = run_controldata(exe, dir.path(), 1800).unwrap_err();
    assert!(err.contains("refused") || err.contains("1800"), "{err}");
}

/// Online, files only add: a pg_control walg cannot read, when the server's
/// SQL answered, is a note on an OK report, not a warning.
#[test]
fn online_unreadable_pg_control_is_a_note_when_sql_answered() {
    let dir = cluster(18, &[], SMALL, (0x10, 0x10, 3));
    let mut b = fixture("pg_control.pg18");
    b[8..12].copy_from_slice(&2100u32.to_le_bytes());
    fs::write(dir.path().join("global/pg_control"), &b).expect("write");
    let mut o = Observation::new(Mode::Online, 1_800_000_000.0, MB);
    o.major_version = Some(21);
    o.current_lsn = Some("0/1000128".parse().expect("lsn"));
    o.redo_lsn = Some("0/1000128".parse().expect("lsn"));
    o.checkpoint_time = Some(1_800_000_000.0 - 30.0);
    o.timeline = Some(1);
    o.in_recovery = Some(false);
    o.settings.archive_mode = Some("off".into());
    o.settings.max_wal_size = Some(4 * MB as i64);
    o.settings.min_wal_size = Some(2 * MB as i64);
    o.settings.checkpoint_timeout = Some(300.0);
    o.slots = Some(vec![]);
    let mut problems = Vec::new();
    let opts = ReadOptions {
        online: true,
        ..ReadOptions::default()
    };
    read_data_dir_with(dir.path(), &mut o, &opts, &mut problems);
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(o.notes.len(), 1, "{:?}", o.notes);
    let r = diagnose(&o, &Thresholds::default());
    assert_eq!(r.status, Status::Ok, "{} {:#?}", r.headline, r.checks);
    assert!(r
        .checks
        .iter()
        .any(|c| c.id == "read" && c.status == Status::Ok && c.summary.contains("answered")));
}

/// 17's summaries directory offline: the newest summary's end is how far
/// the summarizer got.
#[test]
fn summaries_tell_how_far_the_summarizer_got() {
    let dir = cluster(
        17,
        &[],
        "max_wal_size = 4MB\nsummarize_wal = on\n",
        (0x3, 0xE, 0),
    );
    let s = dir.path().join("pg_wal/summaries");
    fs::create_dir_all(&s).expect("mkdir");
    for (start, end) in [(0x10_0028u64, 0x30_0028u64), (0x30_0028, 0x40_0060)] {
        // Names are timeline, start and end LSN: 8 + 16 + 16 hex digits.
        fs::write(
            s.join(format!("{:08X}{start:016X}{end:016X}.summary", 1)),
            b"",
        )
        .expect("write");
    }
    fs::write(s.join("junk.summary"), b"").expect("write");
    let (o, r) = offline(dir.path(), &ReadOptions::default());
    let sum = o.summarizer.as_ref().expect("summarizer");
    assert_eq!(sum.summaries, Some(2));
    assert_eq!(sum.summarized_lsn, Some(crate::wal::Lsn(0x40_0060)));
    assert_eq!(o.settings.summarize_wal, Some(true));
    assert_eq!(
        r.cause.kind,
        crate::doctor::CauseKind::WalSummarizer,
        "{}",
        r.headline
    );
}
