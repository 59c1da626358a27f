//! Reading a data directory: what `wal-status` observes from the files alone.
//!
//! [`read_data_dir`] fills the parts of an [`Observation`] that the files
//! hold: the major version (`PG_VERSION`), `global/pg_control` (through
//! [`crate::pg::control`]; a layout walg does not know through the
//! cluster's own `pg_controldata`, found with `--pg-bin`, Debian's
//! `/usr/lib/postgresql/<major>/bin` or `PATH`), `pg_wal/summaries` (17+),
//! `pg_wal/archive_status` with the times of each status file, the entries of
//! `pg_wal` sorted into segments, temporary and foreign files, the space of
//! its file system, and, offline, the slot state files (read by the major
//! version that wrote them) and the retention settings of
//! `postgresql.conf` and its includes (with PostgreSQL's defaults).
//! Online, the SQL observation wins and the files add what SQL does not
//! say: a file that cannot be read while SQL answered the same question is
//! a note, never a warning.
//!
//! This is the doctor's only module that touches the file system (and runs
//! `pg_controldata`, with a deadline); the rules
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

/// How to read a data directory.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// A server answered: its SQL observation is already in the
    /// [`Observation`] and wins; the files only add to it, and a file that
    /// cannot be read is a note, not a problem, when SQL said the same.
    pub online: bool,
    /// The cluster's server binaries (`--pg-bin`): where its own
    /// `pg_controldata` is, for a `pg_control` layout walg does not know.
    pub pg_bin: Option<PathBuf>,
    /// The directories of `PATH`, searched last for `pg_controldata` (the
    /// caller's: this crate reads no environment).
    pub path: Vec<PathBuf>,
}

/// Reads the data directory: pg_control, slots, archive_status, pg_wal and
/// its file system; offline also the settings. `online`: see
/// [`ReadOptions::online`].
pub fn read_data_dir(
    dir: &Path,
    o: &mut Observation,
    online: bool,
    problems: &mut Vec<(String, String)>,
) {
    let opts = ReadOptions {
        online,
        ..ReadOptions::default()
    };
    read_data_dir_with(dir, o, &opts, problems)
}

/// The major version in `PG_VERSION` (`13`, `16`, ...).
pub fn pg_version(dir: &Path) -> Option<u32> {
    fs::read_to_string(dir.join("PG_VERSION"))
        .ok()?
        .trim()
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// Where the cluster's own `pg_controldata` may be, in the order tried:
/// `--pg-bin`, Debian's `/usr/lib/postgresql/<major>/bin`, then `PATH`.
pub fn controldata_candidates(major: Option<u32>, opts: &ReadOptions) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(b) = &opts.pg_bin {
        out.push(b.join("pg_controldata"));
    }
    if let Some(m) = major {
        out.push(PathBuf::from(format!(
            "/usr/lib/postgresql/{m}/bin/pg_controldata"
        )));
    }
    out.extend(opts.path.iter().map(|d| d.join("pg_controldata")));
    out
}

/// Runs `pg_controldata` on `dir` (C locale, UTC, at most 10 s) and reads
/// its output; the version it prints must be the file's.
fn run_controldata(
    exe: &Path,
    dir: &Path,
    file_version: u32,
) -> Result<control::ControlFile, String> {
    use std::process::{Command, Stdio};
    let mut child = Command::new(exe)
        .arg("-D")
        .arg(dir)
        .env("LC_ALL", "C")
        .env("TZ", "UTC")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("no answer within 10 s".into());
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!("{}: {}", out.status, err.trim()));
    }
    let c = control::parse_controldata(&text).map_err(|e| e.to_string())?;
    if c.pg_control_version != file_version {
        return Err(format!(
            "it knows pg_control version {}, the file is {file_version}",
            c.pg_control_version
        ));
    }
    Ok(c)
}

/// `global/pg_control` by its layout, else by the cluster's own
/// `pg_controldata`; the error names everything tried.
pub fn read_control(
    dir: &Path,
    major: Option<u32>,
    opts: &ReadOptions,
) -> Result<control::ControlFile, String> {
    let path = dir.join("global/pg_control");
    let bytes = fs::read(&path).map_err(|e| e.to_string())?;
    let err = match control::parse(&bytes) {
        Ok(c) => return Ok(c),
        Err(e @ control::ControlError::UnknownVersion(_)) => e,
        Err(e) => return Err(e.to_string()),
    };
    let version = control::u32_at(&bytes, 8);
    let mut tried = Vec::new();
    for exe in controldata_candidates(major, opts) {
        if !exe.is_file() {
            continue;
        }
        match run_controldata(&exe, dir, version) {
            Ok(c) => return Ok(c),
            Err(e) => tried.push(format!("{}: {e}", exe.display())),
        }
    }
    let searched = if tried.is_empty() {
        format!(
            "no pg_controldata found ({}{}PATH)",
            opts.pg_bin
                .as_ref()
                .map(|b| format!("--pg-bin {}, ", b.display()))
                .unwrap_or_else(|| "no --pg-bin, ".into()),
            major
                .map(|m| format!("/usr/lib/postgresql/{m}/bin, "))
                .unwrap_or_default()
        )
    } else {
        format!("pg_controldata refused: {}", tried.join("; "))
    };
    Err(format!("{err}; {searched}"))
}

/// Reads the data directory with [`ReadOptions`].
pub fn read_data_dir_with(
    dir: &Path,
    o: &mut Observation,
    opts: &ReadOptions,
    problems: &mut Vec<(String, String)>,
) {
    let online = opts.online;
    let now = o.now;
    if !dir.join("global").is_dir() {
        problems.push((
            dir.display().to_string(),
            "is not a PostgreSQL data directory (no global/ in it)".into(),
        ));
        return;
    }
    let major = pg_version(dir);
    if o.major_version.is_none() {
        o.major_version = major;
    }
    let control_path = dir.join("global/pg_control");
    let control = match read_control(dir, o.major_version, opts) {
        Ok(c) => Some(c),
        Err(e) => {
            let area = control_path.display().to_string();
            if online && o.redo_lsn.is_some() {
                // SQL (pg_control_checkpoint()) said what the file would.
                o.notes.push((
                    area,
                    format!(
                        "not read ({e}); the server's pg_control_checkpoint() answered instead"
                    ),
                ));
            } else {
                problems.push((area, e));
            }
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
                "offline{}, pg_control {}{} ({})",
                major.map(|m| format!(" {m}")).unwrap_or_default(),
                c.pg_control_version,
                if c.layout == c.pg_control_version.to_string() {
                    String::new()
                } else {
                    format!(" read as {}", c.layout)
                },
                c.state.describe()
            ));
            if o.major_version.is_none() {
                o.major_version = c.major_version();
            }
            if c.logical_decoding_enabled == Some(true) {
                o.settings.effective_wal_level = Some("logical".into());
            }
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
        Err(e) => {
            let area = pg_wal.join("archive_status").display().to_string();
            if online && o.status_files.is_some() {
                o.notes.push((
                    area,
                    format!("not read ({e}); pg_ls_archive_statusdir() answered instead"),
                ));
            } else {
                problems.push((area, e.to_string()));
            }
        }
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
        Err(e) => {
            let area = pg_wal.display().to_string();
            if online && o.pg_wal.is_some() {
                o.notes.push((
                    area,
                    format!("not read ({e}); pg_ls_waldir() answered instead"),
                ));
            } else {
                problems.push((area, e.to_string()));
            }
        }
    }
    read_summaries(&pg_wal.join("summaries"), o);
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
                // Read by the major version that wrote it (17 and 18 share
                // a format version but not the meaning of the cause).
                let parse = |b: &[u8]| match o.major_version {
                    Some(m) => slot::parse_for(b, m),
                    None => slot::parse(b),
                };
                match fs::read(&state)
                    .map_err(|e| e.to_string())
                    .and_then(|b| parse(&b).map_err(|e| e.to_string()))
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
                        invalidation_reason: s.invalidation_reason,
                        inactive_since: None,
                        synced: s.synced,
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
        // Without a readable postgresql.conf (Debian keeps it in /etc), a
        // default is a guess: wal_level is then left unknown.
        let conf_read = !conf
            .problems
            .iter()
            .any(|p| p.contains("postgresql.conf:") || p.ends_with("postgresql.conf"));
        let s = &mut o.settings;
        s.archive_mode = Some(get("archive_mode", "off"));
        s.archive_command = Some(get("archive_command", ""));
        s.archive_library = Some(get("archive_library", ""));
        s.wal_level = conf
            .get("wal_level")
            .map(str::to_string)
            .or_else(|| conf_read.then(|| "replica".to_string()));
        s.summarize_wal = Some(pgconf::parse_bool(&get("summarize_wal", "off")).unwrap_or(false));
        s.idle_replication_slot_timeout =
            pgconf::parse_seconds(&get("idle_replication_slot_timeout", "0"), 1.0);
        s.wal_keep_size = pgconf::parse_bytes(&get("wal_keep_size", "0"), 1 << 20);
        s.max_slot_wal_keep_size =
            pgconf::parse_bytes(&get("max_slot_wal_keep_size", "-1"), 1 << 20);
        s.max_wal_size = pgconf::parse_bytes(&get("max_wal_size", "1GB"), 1 << 20);
        s.min_wal_size = pgconf::parse_bytes(&get("min_wal_size", "80MB"), 1 << 20);
        s.checkpoint_timeout = pgconf::parse_seconds(&get("checkpoint_timeout", "5min"), 1.0);
        s.checkpoint_completion_target = get("checkpoint_completion_target", "0.9").parse().ok();
    }
}

/// `pg_wal/summaries/*.summary` (17+): the end of the newest is how far the
/// summarizer got (`TTTTTTTT` timeline, start and end LSN as 16 hex digits
/// each). Online, SQL's `pg_get_wal_summarizer_state()` wins for the
/// position; the files add their count.
fn read_summaries(dir: &Path, o: &mut Observation) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    let mut count = 0u64;
    let mut newest: Option<Lsn> = None;
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".summary") else {
            continue;
        };
        if stem.len() != 40 || !stem.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        count += 1;
        if let Ok(end) = u64::from_str_radix(&stem[24..40], 16) {
            newest = Some(newest.map_or(Lsn(end), |n| n.max(Lsn(end))));
        }
    }
    let sum = o.summarizer.get_or_insert_with(Default::default);
    sum.summaries = Some(count);
    if sum.summarized_lsn.is_none() {
        sum.summarized_lsn = newest;
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
#[path = "datadir_tests.rs"]
mod tests;
