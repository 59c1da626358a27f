//! Memory bounds of large segments: one `wal-push` and one `wal-fetch` of a
//! large WAL segment (up to `initdb --wal-segsize=1024`) must each peak below
//! [`RSS_LIMIT_KIB`], whatever the storage. The peak is the child's own
//! `ru_maxrss` (GNU time's `%M`, from `wait4(2)`), never a timing.
//!
//! The segment is a sparse file: a valid long page header and zeros, so the
//! test costs no disk for its source. It is pushed with compression `none`,
//! so every byte crosses the storage path (a store that buffered the object
//! would need more than the segment), and on file storage also with `lz4`, so
//! the codec threads are measured too. The fetched copy is compared with
//! `cmp`.
//!
//! What this module does not do: run PostgreSQL (the header is all
//! `wal-push` checks), or time anything.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context, Result};

use super::fixture::{emulator_settings, file_settings, Set, Settings, Walg};
use crate::infra::emulators::{Emulators, Kind};
use crate::infra::pg::Workdir;

/// The bound the issue sets: 64 MiB of peak resident memory per process.
pub const RSS_LIMIT_KIB: u64 = 64 * 1024;
/// Segment 2 of log 0 (LSN 0/80000000 with 1 GiB segments).
const SEGMENT_NAME: &str = "000000010000000000000002";

/// A child's exit and its peak resident set.
#[derive(Debug)]
pub struct Measured {
    pub success: bool,
    pub code: i32,
    pub max_rss_kib: u64,
    pub stderr: String,
}

/// A 1 GiB segment on file storage, with compression `none` and `lz4`.
pub fn file_1gib(built: &Path) -> Result<()> {
    let work = Workdir::new("mem-file")?;
    let archive = work.owned_dir("archive")?;
    let settings = file_settings(&archive);
    let peaks = large_segment_memory(built, "mem-file", &settings, &["none", "lz4"], 1024)?;
    println!("  file storage, 1 GiB segment, peak RSS (KiB): {peaks:?}");
    Ok(())
}

/// A 256 MiB segment over an emulator (four times the bound, so a store
/// that buffered the object fails; the emulators keep every byte in their
/// own memory, and 1 GiB through them takes minutes).
pub fn emulator_256mib(built: &Path, emus: &Emulators, kind: Kind) -> Result<()> {
    let settings = emulator_settings(emus, kind, &format!("e2e-mem/{}", kind.name()))?;
    let label = format!("mem-{}", kind.name());
    let peaks = large_segment_memory(built, &label, &settings, &["none"], 256)?;
    println!(
        "  {}, 256 MiB segment, peak RSS (KiB): {peaks:?}",
        kind.name()
    );
    Ok(())
}

/// Runs `program args` to completion under GNU time and reads the child's
/// own peak RSS (`%M`, from its `wait4(2)` rusage). Output goes to files
/// under `dir` so a chatty child cannot block on a pipe.
pub fn run_measured(program: &Path, args: &[&OsStr], dir: &Path, label: &str) -> Result<Measured> {
    let rss_path = dir.join(format!("{label}.rss"));
    let err_path = dir.join(format!("{label}.stderr"));
    let status = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&rss_path)
        .arg(program)
        .args(args)
        .stdout(File::create(dir.join(format!("{label}.stdout")))?)
        .stderr(File::create(&err_path)?)
        .status()
        .with_context(|| format!("run {label} under /usr/bin/time (apt-get install time)"))?;
    let text = fs::read_to_string(&rss_path).unwrap_or_default();
    // With a failing child GNU time writes "Command exited with non-zero
    // status N" before the figure: the figure is the last line.
    let max_rss_kib = text
        .lines()
        .last()
        .and_then(|l| l.trim().parse::<u64>().ok())
        .with_context(|| format!("{label}: no peak RSS from /usr/bin/time in {text:?}"))?;
    Ok(Measured {
        success: status.success(),
        code: status.code().unwrap_or(-1),
        max_rss_kib,
        stderr: fs::read_to_string(&err_path).unwrap_or_default(),
    })
}

/// Writes a sparse segment of `size` bytes with a valid long page header.
fn write_sparse_segment(path: &Path, size: u64) -> Result<()> {
    let mut header = [0u8; 40];
    header[0..2].copy_from_slice(&0xD110u16.to_le_bytes()); // PostgreSQL 15 magic
    header[2..4].copy_from_slice(&0x0002u16.to_le_bytes()); // XLP_LONG_HEADER
    header[4..8].copy_from_slice(&1u32.to_le_bytes()); // timeline
    header[8..16].copy_from_slice(&(2 * size).to_le_bytes()); // page address
    header[24..32].copy_from_slice(&7u64.to_le_bytes()); // system identifier
    header[32..36].copy_from_slice(&(size as u32).to_le_bytes());
    header[36..40].copy_from_slice(&8192u32.to_le_bytes()); // block size
    let f = File::create(path)?;
    f.write_all_at(&header, 0)?;
    f.set_len(size)?;
    Ok(())
}

/// One push and one fetch of a `segsize_mib` segment per compression in
/// `compressions`, each below [`RSS_LIMIT_KIB`]; returns the peaks as
/// `(what, KiB)` for reports.
pub fn large_segment_memory(
    built: &Path,
    label: &str,
    settings: &Settings,
    compressions: &[&str],
    segsize_mib: u64,
) -> Result<Vec<(String, u64)>> {
    let size = segsize_mib << 20;
    ensure!(
        size >= 2 * RSS_LIMIT_KIB * 1024,
        "a {segsize_mib} MiB segment is too small to show that memory is bounded"
    );
    let work = Workdir::new(label)?;
    let pg_wal = work.path.join("pg_wal");
    fs::create_dir_all(&pg_wal)?;
    let segment = pg_wal.join(SEGMENT_NAME);
    write_sparse_segment(&segment, size)?;
    let mut peaks = Vec::new();
    for &compression in compressions {
        let mut settings = settings.clone();
        // Prefetch would start a background process per call; only the
        // call's own memory is under test.
        settings
            .set("WALG_COMPRESSION_METHOD", compression)
            .set("WALG_DOWNLOAD_CONCURRENCY", "1");
        let walg = Walg::new(&work, built, &format!("walg-{compression}.json"), &settings)?;
        let config = walg.config.as_os_str();
        let push = run_measured(
            &walg.bin,
            &[
                OsStr::new("--config"),
                config,
                OsStr::new("wal-push"),
                segment.as_os_str(),
            ],
            &work.path,
            &format!("push-{compression}"),
        )?;
        ensure!(
            push.success,
            "{label}: wal-push of a {segsize_mib} MiB segment ({compression}) exited {}: {}",
            push.code,
            push.stderr
        );
        let dest: PathBuf = work.path.join(format!("restored-{compression}"));
        let fetch = run_measured(
            &walg.bin,
            &[
                OsStr::new("--config"),
                config,
                OsStr::new("wal-fetch"),
                OsStr::new(SEGMENT_NAME),
                dest.as_os_str(),
            ],
            &work.path,
            &format!("fetch-{compression}"),
        )?;
        ensure!(
            fetch.success,
            "{label}: wal-fetch of a {segsize_mib} MiB segment ({compression}) exited {}: {}",
            fetch.code,
            fetch.stderr
        );
        let same = Command::new("cmp")
            .arg(&segment)
            .arg(&dest)
            .status()
            .context("run cmp")?;
        ensure!(
            same.success(),
            "{label}: the fetched {segsize_mib} MiB segment ({compression}) differs from the pushed one"
        );
        fs::remove_file(&dest)?;
        for (what, m) in [("wal-push", &push), ("wal-fetch", &fetch)] {
            ensure!(
                m.max_rss_kib < RSS_LIMIT_KIB,
                "{label}: {what} of a {segsize_mib} MiB segment ({compression}) peaked at {} KiB, above the {} KiB bound",
                m.max_rss_kib,
                RSS_LIMIT_KIB
            );
            peaks.push((format!("{what} {compression}"), m.max_rss_kib));
        }
    }
    Ok(peaks)
}
