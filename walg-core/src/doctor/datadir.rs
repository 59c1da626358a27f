//! Reading a data directory: what `wal-status` observes from the files alone.
//!
//! [`read_data_dir`] fills the parts of an [`Observation`] that the files
//! hold: `global/pg_control` (through [`crate::pg::control`]),
//! `pg_wal/archive_status` with the times of each status file, the entries of
//! `pg_wal` sorted into segments, temporary and foreign files, the space of
//! its file system, and, offline, the slot state files and the retention
//! settings of `postgresql.conf` and its includes (with PostgreSQL's
//! defaults). Online, the SQL observation wins and the files add what SQL
//! does not say.
//!
//! This is the doctor's only module that touches the file system; the rules
//! stay pure functions of the observation. A downstream monitoring tool
//! diagnoses a data directory offline with it:
//!
//! ```no_run
//! use walg_core::doctor::{datadir, diagnose, Mode, Observation, Thresholds};
//!
//! let now = std::time::SystemTime::now()
//!     .duration_since(std::time::UNIX_EPOCH)
//!     .map(|d| d.as_secs_f64())
//!     .unwrap_or(0.0);
//! let mut o = Observation::new(Mode::Offline, now, 0);
//! let mut problems = Vec::new();
//! datadir::read_data_dir("/var/lib/postgresql/17/main".as_ref(), &mut o, false, &mut problems);
//! o.problems = problems;
//! let report = diagnose(&o, &Thresholds::default());
//! println!("{:?} {}", report.status, report.headline);
//! ```
//!
//! Reading problems are collected as `(what, why)` pairs, never fatal: a
//! damaged control file still leaves `pg_wal` read, and the report says
//! which part it could not see.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{ForeignFile, Observation, SlotObs, StatusFile, WalDir};
use crate::pg::{control, pgconf, slot};
use crate::wal::page::LongPageHeader;
use crate::wal::{Lsn, Segment, WalName};

pub fn split_status(file: &str) -> Option<(String, bool)> {
    if let Some(n) = file.strip_suffix(".ready") {
        Some((n.to_string(), true))
    } else {
        file.strip_suffix(".done").map(|n| (n.to_string(), false))
    }
}

/// Sorts the top-level entries of pg_wal into segments, PostgreSQL's other
/// files, known tools' files, temporary files and foreign files.
pub fn classify_wal_dir(
    entries: &[(String, u64, f64)],
    now: f64,
    status: Option<&[StatusFile]>,
) -> WalDir {
    let mut d = WalDir::default();
    let mut names = BTreeSet::new();
    for (name, bytes, mtime) in entries {
        d.bytes += bytes;
        names.insert(name.as_str());
        let file = ForeignFile {
            name: name.clone(),
            bytes: *bytes,
            age_seconds: now - mtime,
        };
        match WalName::parse(name) {
            Ok(WalName::Segment(_)) => d.segments += 1,
            Ok(_) => {}
            Err(_) => {
                if name.starts_with("xlogtemp.")
                    || name == "RECOVERYXLOG"
                    || name == "RECOVERYHISTORY"
                {
                    d.temp.push(file);
                } else if !matches!(
                    name.as_str(),
                    "archive_status" | "summaries" | "walg_data" | ".wal-g"
                ) {
                    d.foreign.push(file);
                }
            }
        }
    }
    if let Some(status) = status {
        d.orphan_status = status
            .iter()
            .filter(|f| f.ready && !names.contains(f.name.as_str()))
            .map(|f| f.name.clone())
            .collect();
    }
    d
}

/// Reads the data directory: pg_control, slots, archive_status, pg_wal and
/// its file system; offline also the settings.
pub fn read_data_dir(
    dir: &Path,
    o: &mut Observation,
    online: bool,
    problems: &mut Vec<(String, String)>,
) {
    let now = o.now;
    if !dir.join("global").is_dir() {
        problems.push((
            dir.display().to_string(),
            "is not a PostgreSQL data directory (no global/ in it)".into(),
        ));
        return;
    }
    let control_path = dir.join("global/pg_control");
    let control = match fs::read(&control_path) {
        Ok(b) => match control::parse(&b) {
            Ok(c) => Some(c),
            Err(e) => {
                problems.push((control_path.display().to_string(), e.to_string()));
                None
            }
        },
        Err(e) => {
            problems.push((control_path.display().to_string(), e.to_string()));
            None
        }
    };
    if let Some(c) = &control {
        if online {
            if o.system_identifier
                .is_some_and(|s| s != c.system_identifier)
            {
                problems.push((
                    dir.display().to_string(),
                    format!(
                        "belongs to cluster {}, the server is {}; ignoring the directory",
                        c.system_identifier,
                        o.system_identifier.unwrap_or(0)
                    ),
                ));
                return;
            }
        } else {
            o.now = now;
            o.segment_size = u64::from(c.wal_segment_size);
            o.timeline = Some(c.timeline);
            o.redo_lsn = Some(c.redo);
            o.checkpoint_time = Some(c.checkpoint_time as f64);
            o.in_recovery = Some(
                matches!(
                    c.state,
                    control::ClusterState::InArchiveRecovery
                        | control::ClusterState::ShutDownInRecovery
                ) || dir.join("standby.signal").exists(),
            );
            o.server_version = Some(format!(
                "offline, pg_control {} ({})",
                c.pg_control_version,
                c.state.describe()
            ));
        }
        o.system_identifier = Some(c.system_identifier);
        if o.redo_lsn.is_none() {
            o.redo_lsn = Some(c.redo);
            o.checkpoint_time = Some(c.checkpoint_time as f64);
        }
        if o.segment_size == 0 {
            o.segment_size = u64::from(c.wal_segment_size);
        }
    }

    let pg_wal = dir.join("pg_wal");
    // archive_status, with ctime (when a .done was renamed: archived).
    match fs::read_dir(pg_wal.join("archive_status")) {
        Ok(rd) => {
            let mut files = Vec::new();
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some((wal, ready)) = split_status(&name) else {
                    continue;
                };
                let Ok(meta) = e.metadata() else { continue };
                files.push(StatusFile {
                    name: wal,
                    ready,
                    mtime: meta.mtime() as f64 + meta.mtime_nsec() as f64 / 1e9,
                    ctime: Some(meta.ctime() as f64 + meta.ctime_nsec() as f64 / 1e9),
                });
            }
            o.status_files = Some(files);
        }
        Err(e) => problems.push((
            pg_wal.join("archive_status").display().to_string(),
            e.to_string(),
        )),
    }
    match fs::read_dir(&pg_wal) {
        Ok(rd) => {
            let mut entries = Vec::new();
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let Ok(meta) = e.metadata() else { continue };
                let bytes = if meta.is_dir() {
                    dir_bytes(&e.path(), 0)
                } else {
                    meta.len()
                };
                entries.push((name, bytes, meta.mtime() as f64));
            }
            if !online || o.current_lsn.is_none() {
                if let Some(l) = newest_written(&pg_wal, &entries, o.segment_size) {
                    let checkpoint = control.as_ref().map(|c| c.checkpoint).unwrap_or(Lsn(0));
                    o.current_lsn = Some(if l > checkpoint { l } else { checkpoint });
                } else if let Some(c) = &control {
                    o.current_lsn = Some(c.checkpoint);
                }
            }
            o.pg_wal = Some(classify_wal_dir(&entries, now, o.status_files.as_deref()));
        }
        Err(e) => problems.push((pg_wal.display().to_string(), e.to_string())),
    }
    if let Some(d) = o.pg_wal.as_mut() {
        match rustix::fs::statvfs(&pg_wal) {
            Ok(s) => {
                d.fs_total = Some(s.f_blocks * s.f_frsize);
                d.fs_available = Some(s.f_bavail * s.f_frsize);
            }
            Err(e) => problems.push((
                format!("the file system of {}", pg_wal.display()),
                e.to_string(),
            )),
        }
    }

    if !online {
        // Slots from their state files.
        let mut slots = Vec::new();
        let slot_dir = fs::read_dir(dir.join("pg_replslot"));
        if let Err(e) = &slot_dir {
            problems.push((dir.join("pg_replslot").display().to_string(), e.to_string()));
        }
        if let Ok(rd) = slot_dir {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.ends_with(".tmp") || !e.path().is_dir() {
                    continue;
                }
                let state = e.path().join("state");
                match fs::read(&state)
                    .map_err(|e| e.to_string())
                    .and_then(|b| slot::parse(&b).map_err(|e| e.to_string()))
                {
                    Ok(s) => slots.push(SlotObs {
                        name: s.name.clone(),
                        slot_type: s.slot_type.as_str().into(),
                        active: None,
                        active_pid: None,
                        temporary: false,
                        restart_lsn: s.restart_lsn,
                        confirmed_flush: Some(s.confirmed_flush),
                        wal_status: None,
                        safe_wal_size: None,
                        invalidated: s.invalidated,
                        database: None,
                        plugin: Some(s.plugin),
                    }),
                    Err(err) => problems.push((state.display().to_string(), err)),
                }
            }
        }
        slots.sort_by(|a, b| a.name.cmp(&b.name));
        if dir.join("pg_replslot").is_dir() {
            o.slots = Some(slots);
        }

        // Settings from the configuration files, with PostgreSQL's defaults.
        let read = |p: &Path| fs::read_to_string(p);
        let list = |p: &Path| -> std::io::Result<Vec<PathBuf>> {
            Ok(fs::read_dir(p)?.flatten().map(|e| e.path()).collect())
        };
        let conf = pgconf::load(dir, &read, &list);
        for p in &conf.problems {
            problems.push(("the configuration files".into(), p.clone()));
        }
        let get = |n: &str, d: &str| conf.get(n).unwrap_or(d).to_string();
        let s = &mut o.settings;
        s.archive_mode = Some(get("archive_mode", "off"));
        s.archive_command = Some(get("archive_command", ""));
        s.archive_library = Some(get("archive_library", ""));
        s.wal_level = Some(get("wal_level", "replica"));
        s.wal_keep_size = pgconf::parse_bytes(&get("wal_keep_size", "0"), 1 << 20);
        s.max_slot_wal_keep_size =
            pgconf::parse_bytes(&get("max_slot_wal_keep_size", "-1"), 1 << 20);
        s.max_wal_size = pgconf::parse_bytes(&get("max_wal_size", "1GB"), 1 << 20);
        s.min_wal_size = pgconf::parse_bytes(&get("min_wal_size", "80MB"), 1 << 20);
        s.checkpoint_timeout = pgconf::parse_seconds(&get("checkpoint_timeout", "5min"), 1.0);
        s.checkpoint_completion_target = get("checkpoint_completion_target", "0.9").parse().ok();
    }
}

/// The size of the segment files in `pg_wal`, when it is a valid segment size.
pub fn segment_size_from_files(data: &Path) -> Option<u64> {
    fs::read_dir(data.join("pg_wal"))
        .ok()?
        .flatten()
        .filter(|e| {
            matches!(
                WalName::parse(&e.file_name().to_string_lossy()),
                Ok(WalName::Segment(_))
            )
        })
        .filter_map(|e| e.metadata().ok().map(|m| m.len()))
        .find(|len| crate::wal::is_valid_segment_size(*len))
}

fn dir_bytes(dir: &Path, depth: usize) -> u64 {
    if depth > 4 {
        return 0;
    }
    let Ok(rd) = fs::read_dir(dir) else { return 0 };
    rd.flatten()
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            Some(if m.is_dir() {
                dir_bytes(&e.path(), depth + 1)
            } else {
                m.len()
            })
        })
        .sum()
}

/// The start of the newest segment PostgreSQL has written: the highest name
/// whose first page header matches it (recycled files still carry the
/// header of the segment they used to be).
fn newest_written(pg_wal: &Path, entries: &[(String, u64, f64)], segsz: u64) -> Option<Lsn> {
    if segsz == 0 {
        return None;
    }
    let mut segs: Vec<Segment> = entries
        .iter()
        .filter_map(|(n, _, _)| match WalName::parse(n).ok()? {
            WalName::Segment(s) => Some(s),
            _ => None,
        })
        .collect();
    segs.sort_by_key(|s| std::cmp::Reverse((s.number(segsz), s.timeline)));
    for s in segs.into_iter().take(64) {
        let Ok(mut f) = fs::File::open(pg_wal.join(s.to_string())) else {
            continue;
        };
        let mut buf = [0u8; 64];
        if std::io::Read::read_exact(&mut f, &mut buf).is_err() {
            continue;
        }
        if let Ok(h) = LongPageHeader::parse(&buf) {
            if h.check_position(&s).is_ok() {
                return Some(s.start_lsn(segsz));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
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
            ("version 1800", 8, "version 1800"),
        ] {
            let dir = tempfile::tempdir().expect("tempdir");
            fs::create_dir_all(dir.path().join("global")).expect("mkdir");
            fs::create_dir_all(dir.path().join("pg_wal/archive_status")).expect("mkdir");
            let mut b = PG15.to_vec();
            if patch == 8 {
                b[8..12].copy_from_slice(&1800u32.to_le_bytes());
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
}
