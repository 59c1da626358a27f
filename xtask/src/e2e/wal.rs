//! walg's main job end to end: a real PostgreSQL archives through
//! `walg wal-push` to each storage and a new cluster recovers through
//! `walg wal-fetch` (with a timeline switch); the command-line contract
//! checked from outside; upload-ahead, restore prefetch, and archiving that
//! keeps up under the heaviest pgbench load.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};

use super::fixture::{
    self, archiving_cluster, code, emulator_settings, file_settings, ready_backlog,
    recovered_cluster, sizes_under, stderr, LocalSegment, Set, Settings, Walg,
};
use crate::infra::emulators::{Emulators, Kind};
use crate::infra::pg::{self, table_digest, Cluster, Workdir};

const ARCHIVE_WAIT: Duration = Duration::from_secs(120);

/// What a round trip measured.
#[derive(Debug, Default)]
pub struct RoundTrip {
    pub segments_archived: u64,
    /// `count:md5` of the demo table, identical on both clusters.
    pub rows: String,
    /// `walg wal-status` of the source cluster before it stopped (demo only).
    pub status: Option<String>,
}

/// [`round_trip`] on a file storage.
pub fn file_round_trip(built: &Path) -> Result<()> {
    let work = Workdir::new("file")?;
    let archive = work.owned_dir("archive")?;
    round_trip(built, "file", &file_settings(&archive), true).map(|_| ())
}

/// [`round_trip`] on an emulator, under `e2e/<kind>`.
pub fn emulator_round_trip(built: &Path, emus: &Emulators, kind: Kind) -> Result<()> {
    let settings = emulator_settings(emus, kind, &format!("e2e/{}", kind.name()))?;
    round_trip(built, kind.name(), &settings, true).map(|_| ())
}

/// [`round_trip`] of 64 MiB segments (issue 14) on an emulator.
pub fn emulator_round_trip_64(built: &Path, emus: &Emulators, kind: Kind) -> Result<()> {
    let settings = emulator_settings(emus, kind, &format!("e2e-seg64/{}", kind.name()))?;
    let label = format!("{}-seg64", kind.name());
    round_trip_with(built, &label, &settings, true, &["--wal-segsize=64"]).map(|_| ())
}

/// Archives a throwaway cluster through walg with `settings`, restores a new
/// cluster from the archive through walg, promotes it (timeline 2, whose
/// history file is archived too) and compares the data.
pub fn round_trip(
    built: &Path,
    label: &str,
    settings: &Settings,
    quiet: bool,
) -> Result<RoundTrip> {
    round_trip_with(built, label, settings, quiet, &[])
}

/// [`round_trip`] with extra `initdb` arguments for the source cluster
/// (`--wal-segsize=64`: large segments through the same streaming path).
pub fn round_trip_with(
    built: &Path,
    label: &str,
    settings: &Settings,
    quiet: bool,
    initdb_args: &[&str],
) -> Result<RoundTrip> {
    let started = Instant::now();
    let work = Workdir::new(label)?;
    let walg = Walg::new(&work, built, "walg.json", settings)?;
    let say = |m: &str| {
        if !quiet {
            fixture::say(m);
        }
    };

    let mut source =
        archiving_cluster(&work, &walg, "source", "archive_timeout = 0\n", initdb_args)?;
    say(&format!(
        "source cluster on port {} archiving through walg",
        source.port
    ));

    source
        .sql("create table walg_demo (id bigint primary key, payload text, n double precision)")?;
    source.sql(
        "insert into walg_demo select g, md5(g::text), random() from generate_series(1, 20000) g",
    )?;
    let backup = work.path.join("backup");
    source.basebackup(&backup)?;
    say("base backup taken (pg_basebackup -X none waited for its WAL to be archived)");

    // Enough WAL for several segments, with data that does not compress to nothing.
    for round in 0..4 {
        source.sql(&format!(
            "insert into walg_demo select g, repeat(md5(random()::text), 8), random() \
             from generate_series({} , {}) g",
            100_000 + round * 60_000,
            100_000 + round * 60_000 + 59_999
        ))?;
        source.switch_and_wait_archived(ARCHIVE_WAIT)?;
    }
    source.sql("update walg_demo set n = n + 1 where id % 7 = 0")?;
    let digest = table_digest(&source, "walg_demo")?;
    let last = source.switch_and_wait_archived(ARCHIVE_WAIT)?;
    let archived = source.archived_count()?;
    let failed = source.failed_count()?;
    ensure!(
        failed == 0,
        "source pg_stat_archiver.failed_count = {failed}\n{}",
        pg::tail(&source.log_text(), 40)
    );
    say(&format!(
        "{archived} files archived, last segment {last}, failed_count 0"
    ));
    let status = if quiet {
        None
    } else {
        Some(super::status::demo_status(
            &walg.bin,
            &walg.config,
            &source,
        )?)
    };
    source.stop()?;

    // Recover a new cluster from the backup and the archive.
    let mut restored = recovered_cluster(
        &walg,
        &backup,
        &work.path.join("restored"),
        &walg.archiving(),
        Duration::from_secs(180),
    )
    .context("wait for the restored cluster to finish recovery and promote")?;
    let log = restored.log_text();
    ensure!(
        log.contains(&format!("restored log file \"{last}\" from archive")),
        "recovery did not restore the last archived segment {last} through walg; log tail:\n{}",
        pg::tail(&log, 40)
    );
    let got = table_digest(&restored, "walg_demo")?;
    ensure!(
        got == digest,
        "restored data differs: source {digest}, restored {got}"
    );
    say(&format!(
        "restored cluster has the same {} rows, checksum {}",
        digest.split(':').next().unwrap_or("?"),
        digest.split(':').nth(1).unwrap_or("?")
    ));

    // The promotion started timeline 2: its history file must be archived.
    let tli = restored.sql("select substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)")?;
    ensure!(
        tli == "00000002",
        "restored cluster is on timeline {tli}, expected 00000002"
    );
    restored.switch_and_wait_archived(ARCHIVE_WAIT)?;
    let out = walg.fetch("00000002.history", &work.path.join("history-check"))?;
    ensure!(
        out.status.success(),
        "00000002.history was not archived: {}",
        stderr(&out)
    );
    let failed = restored.failed_count()?;
    ensure!(
        failed == 0,
        "restored pg_stat_archiver.failed_count = {failed}\n{}",
        pg::tail(&restored.log_text(), 40)
    );
    say("timeline 2 promoted, 00000002.history archived and fetched back, failed_count 0");
    restored.stop()?;

    say(&format!(
        "round trip took {:.1}s",
        started.elapsed().as_secs_f64()
    ));
    Ok(RoundTrip {
        segments_archived: archived,
        rows: digest,
        status,
    })
}

/// The command-line contract on file storage with a real segment:
/// not found is 74; bad names and files are refused with a clear message and
/// nothing written; identical re-push is 0; a different copy is 1 and the
/// stored copy is untouched; lz4/zstd files interoperate with the CLI tools.
pub fn cli_contract(built: &Path) -> Result<()> {
    let work = Workdir::new("contract")?;
    let archive = work.path.join("archive");
    fs::create_dir_all(&archive)?;
    let walg = Walg::new(&work, built, "walg.json", &file_settings(&archive))?;
    // A real segment from a real cluster (1 MiB segments: also proves the
    // segment size is not hard-coded), in `local/`.
    let seg = LocalSegment::new(&work, &["--wal-segsize=1"])?;
    let local = work.path.join("local");
    let seg_name = seg.name.as_str();
    let original = &seg.bytes;
    ensure!(
        original.len() == 1 << 20,
        "expected a 1 MiB segment, got {}",
        original.len()
    );

    let out = walg.push(&seg.path)?;
    ensure!(code(&out) == 0, "wal-push failed: {}", stderr(&out));
    let stored_key = archive.join("wal_005").join(format!("{seg_name}.lz4"));
    let stored = fs::read(&stored_key).with_context(|| format!("read {}", stored_key.display()))?;

    // Identical re-push: 0.
    let out = walg.push(&seg.path)?;
    ensure!(
        code(&out) == 0,
        "identical re-push must succeed: {}",
        stderr(&out)
    );
    // Different re-push: 1, stored copy untouched.
    let mut changed = original.clone();
    changed[500_000] ^= 0xFF;
    fs::write(&seg.path, &changed)?;
    let out = walg.push(&seg.path)?;
    ensure!(
        code(&out) == 1,
        "different re-push must exit 1, got {}: {}",
        code(&out),
        stderr(&out)
    );
    ensure!(
        stderr(&out).contains("different content"),
        "unclear message: {}",
        stderr(&out)
    );
    ensure!(
        fs::read(&stored_key)? == stored,
        "stored copy changed after a refused re-push"
    );
    fs::write(&seg.path, original)?;

    // Fetch it back; missing segment is 74 and writes nothing.
    let dest = local.join("RESTORED");
    let out = walg.fetch(seg_name, &dest)?;
    ensure!(
        code(&out) == 0 && fs::read(&dest)? == *original,
        "fetch back failed: {}",
        stderr(&out)
    );
    let missing = local.join("MISSING");
    let out = walg.fetch("0000000100000000000000FF", &missing)?;
    ensure!(
        code(&out) == 74,
        "missing segment must exit 74, got {}: {}",
        code(&out),
        stderr(&out)
    );
    ensure!(!missing.exists(), "a missing segment must write nothing");

    // Bad inputs: clear error, non-zero, nothing written.
    let before = sizes_under(&archive);
    for (args, needle) in [
        (vec!["wal-fetch", "../../etc/passwd", "x"], "cannot contain"),
        (vec!["wal-fetch", "..", "x"], "cannot contain"),
        (vec!["wal-fetch", "notawalfile", "x"], "not a WAL file name"),
        (
            vec!["wal-push", "/nonexistent/000000010000000000000001"],
            "No such file",
        ),
        (vec!["wal-push", "/etc/hostname"], "not a WAL file name"),
    ] {
        let out = walg.run(&args)?;
        ensure!(
            code(&out) == 1,
            "{args:?} must exit 1, got {}: {}",
            code(&out),
            stderr(&out)
        );
        ensure!(
            stderr(&out).contains(needle),
            "{args:?}: message lacks {needle:?}: {}",
            stderr(&out)
        );
    }
    ensure!(
        !local.join("x").exists(),
        "a refused fetch wrote its destination"
    );
    let truncated = work.path.join("trunc");
    fs::create_dir_all(&truncated)?;
    let tseg = truncated.join("000000010000000000000042");
    fs::write(&tseg, &original[..100_000])?;
    let out = walg.push(&tseg)?;
    ensure!(
        code(&out) == 1 && stderr(&out).contains("not a complete WAL segment"),
        "truncated segment: {}",
        stderr(&out)
    );
    ensure!(
        sizes_under(&archive) == before,
        "bad inputs changed the archive"
    );

    // Interoperability with the lz4 and zstd command-line tools.
    let decompress = |tool: &str, object: &Path| {
        Command::new(tool)
            .args(["-d", "-c"])
            .arg(object)
            .output()
            .with_context(|| format!("run {tool} (apt-get install {tool})"))
    };
    let out = decompress("lz4", &stored_key)?;
    ensure!(
        out.status.success() && out.stdout == *original,
        "lz4 -d of walg's object differs from the segment"
    );
    let zarchive = work.path.join("zarchive");
    let mut zs = file_settings(&zarchive);
    zs.set("WALG_COMPRESSION_METHOD", "zstd");
    let zwalg = Walg::new(&work, built, "walg-zstd.json", &zs)?;
    let out = zwalg.push(&seg.path)?;
    ensure!(code(&out) == 0, "zstd push: {}", stderr(&out));
    let zkey = zarchive.join("wal_005").join(format!("{seg_name}.zst"));
    let out = decompress("zstd", &zkey)?;
    ensure!(
        out.status.success() && out.stdout == *original,
        "zstd -d of walg's object differs from the segment"
    );
    // And the reverse: objects made by the tools are fetched.
    for (tool, ext) in [("lz4", "lz4"), ("zstd", "zst")] {
        let other = work.path.join(format!("{tool}-made"));
        fs::create_dir_all(other.join("wal_005"))?;
        let obj = other.join("wal_005").join(format!("{seg_name}.{ext}"));
        let mut cmd = Command::new(tool);
        cmd.args(["-q", "-f"]).arg(&seg.path);
        if tool == "zstd" {
            cmd.arg("-o");
        }
        pg::run(cmd.arg(&obj))?;
        let w = Walg::new(
            &work,
            built,
            &format!("walg-{tool}.json"),
            &file_settings(&other),
        )?;
        let dest = local.join(format!("from-{tool}"));
        let out = w.fetch(seg_name, &dest)?;
        ensure!(
            code(&out) == 0,
            "fetch of a {tool}-made object: {}",
            stderr(&out)
        );
        ensure!(
            fs::read(&dest)? == *original,
            "{tool}-made object fetched wrong bytes"
        );
    }
    Ok(())
}

/// Upload-ahead: the first call stores the next `.ready` files too and
/// marks them; later calls for them return at once without uploading; a
/// marker whose object vanished is not trusted; `.ready` files are never
/// renamed by walg.
pub fn upload_ahead(built: &Path) -> Result<()> {
    let work = Workdir::new("ahead")?;
    let archive = work.path.join("archive");
    let mut settings = file_settings(&archive);
    settings.set("WALG_UPLOAD_CONCURRENCY", 4);
    let walg = Walg::new(&work, built, "walg.json", &settings)?;
    let (data, names) = ready_backlog(&work, 6)?;
    // As the archiver runs it: from the data directory, `%p` relative.
    let push = |name: &str| -> Result<String> {
        let out = walg
            .command(&["wal-push", &format!("pg_wal/{name}")])
            .current_dir(&data)
            .output()?;
        ensure!(out.status.success(), "wal-push {name}: {}", stderr(&out));
        Ok(stderr(&out))
    };
    let ready = |name: &str| data.join(format!("pg_wal/archive_status/{name}.ready"));
    let mark_done = |name: &str| {
        fs::rename(
            ready(name),
            data.join(format!("pg_wal/archive_status/{name}.done")),
        )
    };
    let stored = |name: &str| archive.join("wal_005").join(format!("{name}.lz4"));

    let log = push(&names[0])?;
    ensure!(
        log.contains("+3 uploaded ahead"),
        "first call should upload 3 ahead: {log}"
    );
    for n in &names[..4] {
        ensure!(stored(n).is_file(), "{n} not stored by upload-ahead");
    }
    let markers = data.join("pg_wal/walg_data/walg_archive_status");
    ensure!(
        markers.join(&names[1]).is_file(),
        "no marker for {}",
        names[1]
    );
    ensure!(
        fs::read_to_string(markers.join(&names[1]))?.contains("storage="),
        "marker does not name the storage"
    );
    ensure!(
        names.iter().all(|n| ready(n).is_file()),
        "walg renamed a .ready file"
    );
    // Play the archiver: mark the first done; the second is answered from its marker.
    mark_done(&names[0])?;
    let log = push(&names[1])?;
    ensure!(
        log.contains("uploaded ahead"),
        "second call should be answered by its marker: {log}"
    );
    ensure!(
        !markers.join(&names[1]).exists(),
        "marker not removed after use"
    );
    mark_done(&names[1])?;
    // A marker is trusted without a request only while the file keeps the
    // stamp (device, inode, size, mtime) it had when it was uploaded ahead;
    // a file touched since is checked against the storage, and with its
    // object gone it is pushed again.
    let third = data.join("pg_wal").join(&names[2]);
    let touched = Command::new("touch")
        .args(["-m", "-d", "2001-01-01 00:00:00"])
        .arg(&third)
        .status()?;
    ensure!(touched.success(), "touch {}", third.display());
    fs::remove_file(stored(&names[2]))?;
    let log = push(&names[2])?;
    ensure!(
        log.contains("pushing again") && log.contains("pushed"),
        "a marker of a changed file was trusted without its object: {log}"
    );
    ensure!(stored(&names[2]).is_file(), "{} not re-pushed", names[2]);
    Ok(())
}

/// Restore prefetch: after one fetch, the next segments appear in
/// `.wal-g/prefetch` beside the destination, and the next fetch is served
/// from there; a missing segment ends prefetching without errors.
pub fn prefetch(built: &Path) -> Result<()> {
    let work = Workdir::new("prefetch")?;
    let archive = work.path.join("archive");
    let mut settings = file_settings(&archive);
    settings
        .set("WALG_UPLOAD_CONCURRENCY", 1)
        .set("WALG_DOWNLOAD_CONCURRENCY", 3);
    let walg = Walg::new(&work, built, "walg.json", &settings)?;
    let (data, names) = ready_backlog(&work, 5)?;
    let segment = |n: &str| data.join("pg_wal").join(n);
    for n in &names {
        let out = walg.push(&segment(n))?;
        ensure!(out.status.success(), "push {n}: {}", stderr(&out));
    }
    let restore = work.path.join("restore/pg_wal");
    fs::create_dir_all(&restore)?;
    let dest = restore.join("RECOVERYXLOG");
    let out = walg.fetch(&names[0], &dest)?;
    ensure!(out.status.success(), "fetch {}: {}", names[0], stderr(&out));
    let prefetched = restore.join(".wal-g/prefetch").join(&names[1]);
    let start = Instant::now();
    while !prefetched.exists() && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    ensure!(
        prefetched.exists(),
        "{} was not prefetched into {}",
        names[1],
        prefetched.display()
    );
    let out = walg.fetch(&names[1], &dest)?;
    ensure!(
        out.status.success() && stderr(&out).contains("prefetch directory"),
        "second fetch not served by prefetch: {}",
        stderr(&out)
    );
    ensure!(
        fs::read(&dest)? == fs::read(segment(&names[1]))?,
        "prefetched bytes differ"
    );
    // Walk to the end: the segment after the last is "not found" (74).
    for n in &names[2..] {
        let out = walg.fetch(n, &dest)?;
        ensure!(out.status.success(), "fetch {n}: {}", stderr(&out));
        ensure!(
            fs::read(&dest)? == fs::read(segment(n))?,
            "{n}: wrong bytes"
        );
    }
    let out = walg.fetch("0000000100000000000000FF", &dest)?;
    ensure!(code(&out) == 74, "after the end: {}", stderr(&out));
    Ok(())
}

/// How many `.ready` files wait, asked of the server.
const READY_COUNT: &str =
    "select count(*) from pg_ls_dir('pg_wal/archive_status') f where f like '%.ready'";

/// Under the heaviest pgbench load this machine drives (no fsync, many
/// clients, WAL-heavy initialisation), archiving through walg keeps up: the
/// number of `.ready` files waiting stays bounded and drains to zero.
pub fn archive_keeps_up(built: &Path) -> Result<String> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let work = Workdir::new("load")?;
    let archive = work.owned_dir("archive")?;
    let walg = Walg::new(&work, built, "walg.json", &file_settings(&archive))?;
    let c = archiving_cluster(
        &work,
        &walg,
        "pg",
        "max_wal_size = 64MB\ncheckpoint_timeout = 30s\n",
        &[],
    )?;
    let status_dir = c.data.join("pg_wal/archive_status");
    let stop = Arc::new(AtomicBool::new(false));
    let max_ready = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (stop, max_ready, dir) = (stop.clone(), max_ready.clone(), status_dir.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let n = fs::read_dir(&dir)
                    .map(|d| {
                        d.flatten()
                            .filter(|e| e.file_name().to_string_lossy().ends_with(".ready"))
                            .count()
                    })
                    .unwrap_or(0);
                max_ready.fetch_max(n, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let drain = |c: &Cluster, timeout: Duration| {
        c.wait_for(&format!("select ({READY_COUNT}) = 0"), "t", timeout)
    };
    // A burst first: pgbench's initialisation writes WAL as fast as the
    // machine can (COPY, no fsync). Report how high the backlog got and how
    // fast it drained.
    let started = Instant::now();
    let init = c.pgbench(&["-i", "-q", "-s", "40"]);
    let burst_secs = started.elapsed().as_secs_f64();
    let burst_peak = max_ready.swap(0, Ordering::Relaxed);
    let drained = drain(&c, Duration::from_secs(180));
    let drain_secs = started.elapsed().as_secs_f64() - burst_secs;
    // Then a sustained load: the backlog must stay bounded throughout.
    max_ready.store(0, Ordering::Relaxed);
    let archived_before = c.archived_count()?;
    let load_started = Instant::now();
    let load = c.pgbench(&["-c", "8", "-j", "2", "-T", "40", "-N"]);
    let load_secs = load_started.elapsed().as_secs_f64();
    let steady_peak = max_ready.load(Ordering::Relaxed);
    let drained_after = drain(&c, Duration::from_secs(120));
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    init?;
    load?;
    drained.with_context(|| {
        format!(
            "the .ready backlog after the burst did not drain: {} waiting",
            c.sql(READY_COUNT).unwrap_or_default()
        )
    })?;
    drained_after.context("the .ready backlog did not drain after the sustained load")?;
    let archived = c.archived_count()?;
    let failed = c.failed_count()?;
    ensure!(
        failed == 0,
        "failed_count {failed} under load\n{}",
        pg::tail(&c.log_text(), 30)
    );
    let steady = archived - archived_before;
    ensure!(
        steady >= 10,
        "the sustained load archived only {steady} files; not a meaningful load"
    );
    // Bounded: never more waiting than two upload-ahead batches (16 each).
    ensure!(
        steady_peak <= 32,
        "up to {steady_peak} .ready files waited under sustained load: archiving did not keep up \
         ({steady} archived in {load_secs:.0}s; burst peak {burst_peak}, drained {drain_secs:.0}s after {burst_secs:.0}s)"
    );
    let report = format!(
        "burst (pgbench -i -s 40): peak {burst_peak} .ready, written in {burst_secs:.0}s, drained {drain_secs:.0}s later; \
         sustained (8 clients, {load_secs:.0}s): {steady} files archived ({:.1}/s), at most {steady_peak} .ready waiting; failed_count 0",
        steady as f64 / load_secs
    );
    println!("  {report}");
    Ok(report)
}
