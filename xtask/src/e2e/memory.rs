//! Memory bounds of large segments: one `wal-push` and one `wal-fetch` of a
//! large WAL segment (up to `initdb --wal-segsize=1024`) must each peak below
//! [`RSS_LIMIT_KIB`] with the settings people use: every codec (lz4, zstd,
//! brotli, none), with and without libsodium, on every storage. The peak is
//! the child's own `ru_maxrss` (GNU time's `%M`, from `wait4(2)`; GNU time
//! is a small parent on purpose: a child keeps the high-water mark of the
//! process that forked it until it execs, so measuring from a large parent
//! reports the parent), never a timing.
//!
//! The matrix ([`file_matrix`], [`emulator_matrix`]): a segment of random
//! hex text with a zeroed tail on every page (like a page of md5 rows: lz4
//! keeps most of it, zstd and brotli about half), written once per
//! scenario and pushed and fetched once per case: 1 GiB on file storage
//! (256 MiB with brotli, whose encoder takes a minute per GiB on two cores),
//! 256 MiB over each emulator (four times the bound, so a store that held
//! the object fails; the emulators keep every byte in their own memory,
//! hence the object is pruned after each case). The fetched copy is
//! compared with `cmp`. [`large_segment_memory`] (the bench's 1 GiB rows)
//! pushes a sparse segment instead, which costs no disk.
//!
//! [`upload_ahead_backlog`]: one `wal-push` with a backlog of sixteen
//! `.ready` 16 MiB segments of that text and the default upload-ahead
//! (`WALG_UPLOAD_CONCURRENCY` 16), lz4 + libsodium, on file storage and
//! over the S3 emulator: the process pushes all sixteen at once, each held
//! whole for its one request, and must stay below the same bound (it
//! peaked at 132 to 145 MiB before the files moved ahead shared one bound).
//!
//! What this module does not do: run PostgreSQL (the header is all
//! `wal-push` checks), or time anything.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::Write;
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
/// The segment after it: `wal-prune --before` it deletes the pushed copy.
const NEXT_SEGMENT: &str = "000000010000000000000003";
/// Every codec walg writes.
pub const CODECS: [&str; 4] = ["lz4", "zstd", "brotli", "none"];
/// The libsodium key of the encrypted cases (32 bytes, hex).
const SODIUM_KEY: &str = "6d656d6f72792d6d61747269782d6b65792d666f722d77616c672d7465737473";

/// A child's exit and its peak resident set.
#[derive(Debug)]
pub struct Measured {
    pub success: bool,
    pub code: i32,
    pub max_rss_kib: u64,
    pub stderr: String,
}

/// File storage: a 1 GiB segment with lz4, zstd and none, a 256 MiB one
/// with brotli, each with and without libsodium.
pub fn file_matrix(built: &Path) -> Result<()> {
    let work = Workdir::new("mem-file")?;
    let archive = work.owned_dir("archive")?;
    let settings = file_settings(&archive);
    let mut peaks = matrix(built, &work, &settings, &["lz4", "zstd", "none"], 1024)?;
    peaks.extend(matrix(built, &work, &settings, &["brotli"], 256)?);
    report("file", &peaks)
}

/// An emulator: a 256 MiB segment with every codec, with and without
/// libsodium.
pub fn emulator_matrix(built: &Path, emus: &Emulators, kind: Kind) -> Result<()> {
    let settings = emulator_settings(emus, kind, &format!("e2e-mem/{}", kind.name()))?;
    let work = Workdir::new(&format!("mem-{}", kind.name()))?;
    let peaks = matrix(built, &work, &settings, &CODECS, 256)?;
    report(kind.name(), &peaks)
}

/// One measured case: what was run and its peak.
#[derive(Debug)]
pub struct Peak {
    pub what: String,
    pub kib: u64,
}

/// Prints the peaks and fails naming every case at or above the bound.
fn report(storage: &str, peaks: &[Peak]) -> Result<()> {
    for p in peaks {
        println!(
            "  {storage}: {:<38} {:>6.1} MiB",
            p.what,
            p.kib as f64 / 1024.0
        );
    }
    let over: Vec<String> = peaks
        .iter()
        .filter(|p| p.kib >= RSS_LIMIT_KIB)
        .map(|p| format!("{} peaked at {} KiB", p.what, p.kib))
        .collect();
    ensure!(
        over.is_empty(),
        "{storage}: above the {RSS_LIMIT_KIB} KiB bound: {}",
        over.join("; ")
    );
    Ok(())
}

/// Writes a `segsize_mib` segment of text under `work` and pushes and
/// fetches it once per codec in `codecs`, without and with libsodium,
/// pruning the stored copy after each case.
pub fn matrix(
    built: &Path,
    work: &Workdir,
    settings: &Settings,
    codecs: &[&str],
    segsize_mib: u64,
) -> Result<Vec<Peak>> {
    let size = segsize_mib << 20;
    let pg_wal = work.path.join(format!("pg_wal-{segsize_mib}"));
    fs::create_dir_all(&pg_wal)?;
    let segment = pg_wal.join(SEGMENT_NAME);
    write_text_segment(&segment, size)?;
    let mut peaks = Vec::new();
    for &codec in codecs {
        for sodium in [false, true] {
            let mut s = settings.clone();
            s.set("WALG_COMPRESSION_METHOD", codec)
                // Upload-ahead and prefetch would start more work; only one
                // file's transfer is under test.
                .set("WALG_UPLOAD_CONCURRENCY", "1")
                .set("WALG_DOWNLOAD_CONCURRENCY", "1");
            if sodium {
                s.set("WALG_LIBSODIUM_KEY", SODIUM_KEY)
                    .set("WALG_LIBSODIUM_KEY_TRANSFORM", "hex");
            }
            let case = format!(
                "{segsize_mib} MiB {codec}{}",
                if sodium { " + libsodium" } else { "" }
            );
            let label = format!(
                "{segsize_mib}-{codec}-{}",
                if sodium { "sodium" } else { "plain" }
            );
            let (push, fetch) = push_and_fetch(built, work, &s, &segment, &label, &case)?;
            peaks.push(Peak {
                what: format!("wal-push {case}"),
                kib: push,
            });
            peaks.push(Peak {
                what: format!("wal-fetch {case}"),
                kib: fetch,
            });
        }
    }
    fs::remove_file(&segment)?;
    Ok(peaks)
}

/// One measured `wal-push` and `wal-fetch` of `segment` with `settings`,
/// the fetched copy compared and the stored one pruned; returns the peaks.
fn push_and_fetch(
    built: &Path,
    work: &Workdir,
    settings: &Settings,
    segment: &Path,
    label: &str,
    case: &str,
) -> Result<(u64, u64)> {
    let walg = Walg::new(work, built, &format!("walg-{label}.json"), settings)?;
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
        &format!("push-{label}"),
    )?;
    ensure!(
        push.success,
        "wal-push of {case} exited {}: {}",
        push.code,
        push.stderr
    );
    let dest = work.path.join(format!("restored-{label}"));
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
        &format!("fetch-{label}"),
    )?;
    ensure!(
        fetch.success,
        "wal-fetch of {case} exited {}: {}",
        fetch.code,
        fetch.stderr
    );
    let same = Command::new("cmp")
        .arg(segment)
        .arg(&dest)
        .status()
        .context("run cmp")?;
    ensure!(
        same.success(),
        "the fetched {case} differs from the pushed one"
    );
    fs::remove_file(&dest)?;
    let pruned = Command::new(&walg.bin)
        .arg("--config")
        .arg(config)
        .args(["wal-prune", "--before", NEXT_SEGMENT, "--confirm"])
        .output()
        .context("run walg wal-prune")?;
    ensure!(
        pruned.status.success(),
        "wal-prune after {case}: {}",
        String::from_utf8_lossy(&pruned.stderr)
    );
    Ok((push.max_rss_kib, fetch.max_rss_kib))
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

/// A valid long page header for segment 2 of log 0 of `size` bytes.
fn long_header(size: u64) -> [u8; 40] {
    long_header_of(size, 2)
}

/// A valid long page header for segment `segno` of timeline 1.
fn long_header_of(size: u64, segno: u64) -> [u8; 40] {
    let mut header = [0u8; 40];
    header[0..2].copy_from_slice(&0xD110u16.to_le_bytes()); // PostgreSQL 15 magic
    header[2..4].copy_from_slice(&0x0002u16.to_le_bytes()); // XLP_LONG_HEADER
    header[4..8].copy_from_slice(&1u32.to_le_bytes()); // timeline
    header[8..16].copy_from_slice(&(segno * size).to_le_bytes()); // page address
    header[24..32].copy_from_slice(&7u64.to_le_bytes()); // system identifier
    header[32..36].copy_from_slice(&(size as u32).to_le_bytes());
    header[36..40].copy_from_slice(&8192u32.to_le_bytes()); // block size
    header
}

/// Writes a sparse segment of `size` bytes with a valid long page header.
fn write_sparse_segment(path: &Path, size: u64) -> Result<()> {
    let f = File::create(path)?;
    f.write_all_at(&long_header(size), 0)?;
    f.set_len(size)?;
    Ok(())
}

/// Writes a segment of `size` bytes whose 8 KiB pages hold 6 KiB of
/// random hex text and 2 KiB of zeros (the first page starting with a
/// valid long page header), the same bytes every time.
fn write_text_segment(path: &Path, size: u64) -> Result<()> {
    write_text_segment_of(path, size, 2, 0x9E37_79B9_7F4A_7C15)
}

/// [`write_text_segment`] for segment `segno`, its text drawn from `seed`.
fn write_text_segment_of(path: &Path, size: u64, segno: u64, seed: u64) -> Result<()> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = std::io::BufWriter::with_capacity(1 << 20, File::create(path)?);
    let mut state = seed;
    let mut page = [0u8; 8192];
    for n in 0..size / 8192 {
        for pair in page[..6144].chunks_exact_mut(16) {
            // xorshift64: 16 hex digits per step.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            for (i, b) in pair.iter_mut().enumerate() {
                *b = HEX[((state >> (4 * i)) & 15) as usize];
            }
        }
        if n == 0 {
            page[..40].copy_from_slice(&long_header_of(size, segno));
        }
        out.write_all(&page)?;
    }
    out.flush()?;
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

/// One `wal-push` of the oldest of sixteen `.ready` 16 MiB segments with
/// upload-ahead 16 (see the module): below [`RSS_LIMIT_KIB`], every file
/// stored, the newest fetched back equal.
pub fn upload_ahead_backlog(built: &Path, emus: &Emulators) -> Result<()> {
    const FILES: u64 = 16;
    const SIZE: u64 = 16 << 20;
    let work = Workdir::new("mem-ahead")?;
    let names: Vec<String> = (2..2 + FILES)
        .map(|n| format!("0000000100000000000000{n:02X}"))
        .collect();
    let archive = work.owned_dir("archive")?;
    let storages = [
        ("file", file_settings(&archive)),
        ("s3", emulator_settings(emus, Kind::S3, "e2e-mem/ahead")?),
    ];
    let mut peaks = Vec::new();
    for (storage, settings) in storages {
        // A pg_wal of its own per storage: the first push leaves
        // upload-ahead markers and `.done` files behind.
        let pg_wal = work.path.join(format!("pg_wal-{storage}"));
        fs::create_dir_all(pg_wal.join("archive_status"))?;
        for (i, name) in names.iter().enumerate() {
            write_text_segment_of(&pg_wal.join(name), SIZE, 2 + i as u64, 0x5EED + i as u64)?;
            fs::write(
                pg_wal.join("archive_status").join(format!("{name}.ready")),
                b"",
            )?;
        }
        let mut s = settings;
        s.set("WALG_COMPRESSION_METHOD", "lz4")
            .set("WALG_UPLOAD_CONCURRENCY", "16")
            .set("WALG_DOWNLOAD_CONCURRENCY", "1")
            .set("WALG_LIBSODIUM_KEY", SODIUM_KEY)
            .set("WALG_LIBSODIUM_KEY_TRANSFORM", "hex");
        let walg = Walg::new(&work, built, &format!("walg-ahead-{storage}.json"), &s)?;
        let config = walg.config.as_os_str();
        let first = pg_wal.join(&names[0]);
        let push = run_measured(
            &walg.bin,
            &[
                OsStr::new("--config"),
                config,
                OsStr::new("wal-push"),
                first.as_os_str(),
            ],
            &work.path,
            &format!("ahead-push-{storage}"),
        )?;
        ensure!(
            push.success && push.stderr.contains(&format!("+{} uploaded ahead", FILES - 1)),
            "{storage}: wal-push with a backlog of {FILES} exited {} without uploading the others ahead: {}",
            push.code,
            push.stderr
        );
        let last = names.last().expect("sixteen names");
        let dest = work.path.join(format!("restored-ahead-{storage}"));
        let fetched = Command::new(&walg.bin)
            .arg("--config")
            .arg(config)
            .args(["wal-fetch", last])
            .arg(&dest)
            .output()
            .context("run walg wal-fetch")?;
        ensure!(
            fetched.status.success(),
            "{storage}: wal-fetch {last} after the backlog: {}",
            String::from_utf8_lossy(&fetched.stderr)
        );
        let same = Command::new("cmp")
            .arg(pg_wal.join(last))
            .arg(&dest)
            .status()?;
        ensure!(same.success(), "{storage}: {last} came back different");
        fs::remove_file(&dest)?;
        let pruned = Command::new(&walg.bin)
            .arg("--config")
            .arg(config)
            .args([
                "wal-prune",
                "--before",
                "000000010000000000000020",
                "--confirm",
            ])
            .output()
            .context("run walg wal-prune")?;
        ensure!(
            pruned.status.success(),
            "{storage}: wal-prune after the backlog: {}",
            String::from_utf8_lossy(&pruned.stderr)
        );
        peaks.push(Peak {
            what: format!("wal-push + {} ahead, 16 MiB lz4 + libsodium", FILES - 1),
            kib: push.max_rss_kib,
        });
        report(storage, &peaks[peaks.len() - 1..])?;
    }
    Ok(())
}
