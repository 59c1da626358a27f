//! End-to-end scenarios: a real PostgreSQL archiving through the real `walg`
//! binary, a base backup, recovery of a new cluster through `walg wal-fetch`,
//! a timeline switch, and the command-line contract checked from outside.
//!
//! Each scenario returns `Err` with enough context (server log tails, walg
//! output) to diagnose a failure without rerunning it.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};

use crate::infra::pg::{self, table_digest, Cluster, Workdir};

pub mod archive;
pub mod crypto;
pub mod dist;
pub mod failover;
pub mod hardening;
pub mod memory;
pub mod pgp;
pub mod status;

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

/// Settings for a config file: WAL-G keys to values.
pub type Settings = BTreeMap<String, Value>;

/// Adds a file-storage failover named `backup` at `backup`, with the
/// status cache at `cache`.
pub fn file_failover(s: &mut Settings, backup: &Path, cache: &Path) {
    s.insert(
        "WALG_FAILOVER_STORAGES".into(),
        json!({"backup": {"WALG_FILE_PREFIX": backup.display().to_string()}}),
    );
    s.insert(
        "WALG_FAILOVER_STORAGES_CACHE_FILE".into(),
        json!(cache.display().to_string()),
    );
}

pub fn file_settings(archive: &Path) -> Settings {
    let mut s = Settings::new();
    s.insert(
        "WALG_FILE_PREFIX".into(),
        json!(archive.display().to_string()),
    );
    s
}

/// The walg binary as the server will run it, plus its config.
#[derive(Debug, Clone)]
pub struct Walg {
    pub bin: PathBuf,
    pub config: PathBuf,
}

impl Walg {
    pub fn new(
        work: &Workdir,
        built: &Path,
        config_name: &str,
        settings: &Settings,
    ) -> Result<Walg> {
        let bin = work.path.join("walg");
        if !bin.exists() {
            work.install_walg(built)?;
        }
        Ok(Walg {
            bin,
            config: work.write_config(config_name, settings)?,
        })
    }

    pub fn archive_command(&self) -> String {
        format!(
            "{} --config {} wal-push %p",
            self.bin.display(),
            self.config.display()
        )
    }

    pub fn restore_command(&self) -> String {
        format!(
            "{} --config {} wal-fetch %f %p",
            self.bin.display(),
            self.config.display()
        )
    }

    /// Runs walg directly (as the current user) with this config.
    pub fn run(&self, args: &[&str]) -> Result<Output> {
        Ok(Command::new(&self.bin)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()?)
    }
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
            println!("  {m}");
        }
    };

    let archive_conf = format!(
        "archive_mode = on\narchive_command = '{}'\narchive_timeout = 0\n",
        walg.archive_command()
    );
    let mut source = Cluster::init(&work.path.join("source"), &archive_conf, initdb_args)?;
    source.start()?;
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
    let archived: u64 = source
        .sql("select archived_count from pg_stat_archiver")?
        .parse()?;
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
        Some(crate::e2e::status::demo_status(
            &walg.bin,
            &walg.config,
            &source,
        )?)
    };
    source.stop()?;

    // Recover a new cluster from the backup and the archive.
    let recover_conf = format!(
        "restore_command = '{}'\narchive_mode = on\narchive_command = '{}'\n",
        walg.restore_command(),
        walg.archive_command()
    );
    let mut restored = Cluster::from_backup(&backup, &work.path.join("restored"), &recover_conf)?;
    fs::write(restored.data.join("recovery.signal"), "")?;
    pg::chown_postgres(&restored.data)?;
    restored.start()?;
    restored
        .wait_for("select pg_is_in_recovery()", "f", Duration::from_secs(180))
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
    let probe = work.path.join("history-check");
    let out = walg.run(&[
        "wal-fetch",
        "00000002.history",
        &probe.display().to_string(),
    ])?;
    ensure!(
        out.status.success(),
        "00000002.history was not archived: {}",
        String::from_utf8_lossy(&out.stderr)
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

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
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
    // segment size is not hard-coded).
    let mut c = Cluster::init(&work.path.join("pg"), "", &["--wal-segsize=1"])?;
    c.start()?;
    c.sql("create table t as select g from generate_series(1, 50000) g")?;
    let seg_name = c.sql("select pg_walfile_name(pg_current_wal_lsn())")?;
    // Copy right after the switch: without archiving, a checkpoint would
    // recycle the finished segment under a new name.
    c.sql("select pg_switch_wal()")?;
    let seg_path = c.data.join("pg_wal").join(&seg_name);
    let local = work.path.join("local");
    fs::create_dir_all(&local)?;
    let seg = local.join(&seg_name);
    fs::copy(&seg_path, &seg)?;
    c.stop()?;
    let original = fs::read(&seg)?;
    ensure!(
        original.len() == 1 << 20,
        "expected a 1 MiB segment, got {}",
        original.len()
    );

    let out = walg.run(&["wal-push", &seg.display().to_string()])?;
    ensure!(code(&out) == 0, "wal-push failed: {}", text(&out));
    let stored_key = archive.join("wal_005").join(format!("{seg_name}.lz4"));
    let stored = fs::read(&stored_key).with_context(|| format!("read {}", stored_key.display()))?;

    // Identical re-push: 0.
    let out = walg.run(&["wal-push", &seg.display().to_string()])?;
    ensure!(
        code(&out) == 0,
        "identical re-push must succeed: {}",
        text(&out)
    );
    // Different re-push: 1, stored copy untouched.
    let mut changed = original.clone();
    changed[500_000] ^= 0xFF;
    fs::write(&seg, &changed)?;
    let out = walg.run(&["wal-push", &seg.display().to_string()])?;
    ensure!(
        code(&out) == 1,
        "different re-push must exit 1, got {}: {}",
        code(&out),
        text(&out)
    );
    ensure!(
        text(&out).contains("different content"),
        "unclear message: {}",
        text(&out)
    );
    ensure!(
        fs::read(&stored_key)? == stored,
        "stored copy changed after a refused re-push"
    );
    fs::write(&seg, &original)?;

    // Fetch it back; missing segment is 74 and writes nothing.
    let dest = local.join("RESTORED");
    let out = walg.run(&["wal-fetch", &seg_name, &dest.display().to_string()])?;
    ensure!(
        code(&out) == 0 && fs::read(&dest)? == original,
        "fetch back failed: {}",
        text(&out)
    );
    let missing = local.join("MISSING");
    let out = walg.run(&[
        "wal-fetch",
        "0000000100000000000000FF",
        &missing.display().to_string(),
    ])?;
    ensure!(
        code(&out) == 74,
        "missing segment must exit 74, got {}: {}",
        code(&out),
        text(&out)
    );
    ensure!(!missing.exists(), "a missing segment must write nothing");

    // Bad inputs: clear error, non-zero, nothing written.
    let before: Vec<_> = walk(&archive);
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
            text(&out)
        );
        ensure!(
            text(&out).contains(needle),
            "{args:?}: message lacks {needle:?}: {}",
            text(&out)
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
    let out = walg.run(&["wal-push", &tseg.display().to_string()])?;
    ensure!(
        code(&out) == 1 && text(&out).contains("not a complete WAL segment"),
        "truncated segment: {}",
        text(&out)
    );
    ensure!(walk(&archive) == before, "bad inputs changed the archive");

    // Interoperability with the lz4 and zstd command-line tools.
    let out = Command::new("lz4")
        .args(["-d", "-c"])
        .arg(&stored_key)
        .output()
        .context("run lz4 (apt-get install lz4)")?;
    ensure!(
        out.status.success() && out.stdout == original,
        "lz4 -d of walg's object differs from the segment"
    );
    let zarchive = work.path.join("zarchive");
    let mut zs = file_settings(&zarchive);
    zs.insert("WALG_COMPRESSION_METHOD".into(), json!("zstd"));
    let zwalg = Walg::new(&work, built, "walg-zstd.json", &zs)?;
    let out = zwalg.run(&["wal-push", &seg.display().to_string()])?;
    ensure!(code(&out) == 0, "zstd push: {}", text(&out));
    let zkey = zarchive.join("wal_005").join(format!("{seg_name}.zst"));
    let out = Command::new("zstd")
        .args(["-d", "-c"])
        .arg(&zkey)
        .output()
        .context("run zstd (apt-get install zstd)")?;
    ensure!(
        out.status.success() && out.stdout == original,
        "zstd -d of walg's object differs from the segment"
    );
    // And the reverse: objects made by the tools are fetched.
    for (tool, ext) in [("lz4", "lz4"), ("zstd", "zst")] {
        let other = work.path.join(format!("{tool}-made"));
        fs::create_dir_all(other.join("wal_005"))?;
        let obj = other.join("wal_005").join(format!("{seg_name}.{ext}"));
        let mut cmd = Command::new(tool);
        cmd.args(["-q", "-f"]).arg(&seg);
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
        let out = w.run(&["wal-fetch", &seg_name, &dest.display().to_string()])?;
        ensure!(
            code(&out) == 0,
            "fetch of a {tool}-made object: {}",
            text(&out)
        );
        ensure!(
            fs::read(&dest)? == original,
            "{tool}-made object fetched wrong bytes"
        );
    }
    Ok(())
}

fn walk(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), e.metadata().map(|m| m.len()).unwrap_or(0)));
            }
        }
    }
    out.sort();
    out
}

/// Total bytes and number of objects under a file-storage archive.
pub fn archive_usage(archive: &Path) -> (u64, u64) {
    let files = walk(archive);
    (files.iter().map(|(_, n)| n).sum(), files.len() as u64)
}

/// A named end-to-end test.
pub type Test = (&'static str, Box<dyn Fn() -> Result<()> + Send + Sync>);

/// Runs tests on `XTASK_E2E_JOBS` threads (default 2: scenarios spend
/// most of their time waiting on PostgreSQL and storages, and use free
/// ports, so two at a time halve the wall time on two cores) and prints a
/// summary line CI can read.
pub fn run_tests(tests: Vec<Test>) -> Result<()> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    let jobs = std::env::var("XTASK_E2E_JOBS")
        .ok()
        .and_then(|j| j.parse::<usize>().ok())
        .filter(|j| *j > 0)
        .unwrap_or(2);
    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, &'static str, Result<()>, f64)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(tests.len().max(1)) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some((name, test)) = tests.get(i) else {
                    break;
                };
                let start = Instant::now();
                println!("e2e {name} ...");
                let r = test();
                let secs = start.elapsed().as_secs_f64();
                match &r {
                    Ok(()) => println!("e2e {name} ... ok ({secs:.1}s)"),
                    Err(e) => println!("e2e {name} ... FAILED ({secs:.1}s)\n{e:#}"),
                }
                if let Ok(mut v) = results.lock() {
                    v.push((i, *name, r, secs));
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_default();
    let failed: Vec<&str> = results
        .iter()
        .filter(|(_, _, r, _)| r.is_err())
        .map(|(_, n, _, _)| *n)
        .collect();
    println!(
        "\ne2e: {} passed, {} failed, {:.0}s on {jobs} threads",
        results.len() - failed.len(),
        failed.len(),
        started.elapsed().as_secs_f64()
    );
    if !failed.is_empty() {
        bail!("end-to-end tests failed: {}", failed.join(", "));
    }
    Ok(())
}

/// Makes a fake data directory whose `pg_wal` holds `count` real segments of
/// a fresh cluster, each with a `.ready` file, as PostgreSQL's archiver
/// would see them. Returns (data dir, segment names).
pub fn ready_backlog(work: &Workdir, count: usize) -> Result<(PathBuf, Vec<String>)> {
    let archive_conf = "archive_mode = on\narchive_command = '/bin/false'\n";
    let mut c = Cluster::init(
        &work.path.join("backlog-src"),
        archive_conf,
        &["--wal-segsize=1"],
    )?;
    c.start()?;
    c.sql("create table t (x text)")?;
    let mut names = Vec::new();
    for _ in 0..count {
        c.sql("insert into t select md5(g::text) from generate_series(1, 2000) g")?;
        names.push(c.sql("select pg_walfile_name(pg_switch_wal())")?);
    }
    c.stop()?;
    let data = work.path.join("fake-data");
    let pg_wal = data.join("pg_wal");
    fs::create_dir_all(pg_wal.join("archive_status"))?;
    for n in &names {
        fs::copy(c.data.join("pg_wal").join(n), pg_wal.join(n))?;
        fs::write(pg_wal.join("archive_status").join(format!("{n}.ready")), "")?;
    }
    Ok((data, names))
}

/// Upload-ahead: the first call stores the next `.ready` files too and
/// marks them; later calls for them return at once without uploading; a
/// marker whose object vanished is not trusted; `.ready` files are never
/// renamed by walg.
pub fn upload_ahead(built: &Path) -> Result<()> {
    let work = Workdir::new("ahead")?;
    let archive = work.path.join("archive");
    let mut settings = file_settings(&archive);
    settings.insert("WALG_UPLOAD_CONCURRENCY".into(), json!(4));
    let walg = Walg::new(&work, built, "walg.json", &settings)?;
    let (data, names) = ready_backlog(&work, 6)?;
    let push = |name: &str| -> Result<String> {
        let out = Command::new(&walg.bin)
            .current_dir(&data)
            .arg("--config")
            .arg(&walg.config)
            .args(["wal-push", &format!("pg_wal/{name}")])
            .output()?;
        ensure!(out.status.success(), "wal-push {name}: {}", text(&out));
        Ok(text(&out))
    };
    let log = push(&names[0])?;
    ensure!(
        log.contains("+3 uploaded ahead"),
        "first call should upload 3 ahead: {log}"
    );
    for n in &names[..4] {
        ensure!(
            archive.join("wal_005").join(format!("{n}.lz4")).is_file(),
            "{n} not stored by upload-ahead"
        );
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
        names.iter().all(|n| data
            .join("pg_wal/archive_status")
            .join(format!("{n}.ready"))
            .is_file()),
        "walg renamed a .ready file"
    );
    // Play the archiver: mark the first done; the second is answered from its marker.
    fs::rename(
        data.join(format!("pg_wal/archive_status/{}.ready", names[0])),
        data.join(format!("pg_wal/archive_status/{}.done", names[0])),
    )?;
    let log = push(&names[1])?;
    ensure!(
        log.contains("uploaded ahead"),
        "second call should be answered by its marker: {log}"
    );
    ensure!(
        !markers.join(&names[1]).exists(),
        "marker not removed after use"
    );
    fs::rename(
        data.join(format!("pg_wal/archive_status/{}.ready", names[1])),
        data.join(format!("pg_wal/archive_status/{}.done", names[1])),
    )?;
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
    fs::remove_file(archive.join("wal_005").join(format!("{}.lz4", names[2])))?;
    let log = push(&names[2])?;
    ensure!(
        log.contains("pushing again") && log.contains("pushed"),
        "a marker of a changed file was trusted without its object: {log}"
    );
    ensure!(
        archive
            .join("wal_005")
            .join(format!("{}.lz4", names[2]))
            .is_file(),
        "{} not re-pushed",
        names[2]
    );
    Ok(())
}

/// Restore prefetch: after one fetch, the next segments appear in
/// `.wal-g/prefetch` beside the destination, and the next fetch is served
/// from there; a missing segment ends prefetching without errors.
pub fn prefetch(built: &Path) -> Result<()> {
    let work = Workdir::new("prefetch")?;
    let archive = work.path.join("archive");
    let mut settings = file_settings(&archive);
    settings.insert("WALG_UPLOAD_CONCURRENCY".into(), json!(1));
    settings.insert("WALG_DOWNLOAD_CONCURRENCY".into(), json!(3));
    let walg = Walg::new(&work, built, "walg.json", &settings)?;
    let (data, names) = ready_backlog(&work, 5)?;
    for n in &names {
        let out = walg.run(&[
            "wal-push",
            &data.join("pg_wal").join(n).display().to_string(),
        ])?;
        ensure!(out.status.success(), "push {n}: {}", text(&out));
    }
    let restore = work.path.join("restore/pg_wal");
    fs::create_dir_all(&restore)?;
    let dest = restore.join("RECOVERYXLOG");
    let out = walg.run(&["wal-fetch", &names[0], &dest.display().to_string()])?;
    ensure!(out.status.success(), "fetch {}: {}", names[0], text(&out));
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
    let out = walg.run(&["wal-fetch", &names[1], &dest.display().to_string()])?;
    ensure!(
        out.status.success() && text(&out).contains("prefetch directory"),
        "second fetch not served by prefetch: {}",
        text(&out)
    );
    ensure!(
        fs::read(&dest)? == fs::read(data.join("pg_wal").join(&names[1]))?,
        "prefetched bytes differ"
    );
    // Walk to the end: the segment after the last is "not found" (74).
    for n in &names[2..] {
        let out = walg.run(&["wal-fetch", n, &dest.display().to_string()])?;
        ensure!(out.status.success(), "fetch {n}: {}", text(&out));
        ensure!(
            fs::read(&dest)? == fs::read(data.join("pg_wal").join(n))?,
            "{n}: wrong bytes"
        );
    }
    let out = walg.run(&[
        "wal-fetch",
        "0000000100000000000000FF",
        &dest.display().to_string(),
    ])?;
    ensure!(code(&out) == 74, "after the end: {}", text(&out));
    Ok(())
}

/// Storage failures through the real binary: an endpoint that accepts TCP
/// and never answers makes wal-push fail within the configured timeout plus
/// a margin, naming the storage and the timeout; a wrong key, a missing
/// bucket and a malformed prefix are clear errors naming what to fix.
pub fn storage_errors(built: &Path, emus: &crate::infra::emulators::Emulators) -> Result<()> {
    use crate::infra::emulators::Kind;
    let work = Workdir::new("errors")?;
    let (data, names) = ready_backlog(&work, 1)?;
    let seg = data.join("pg_wal").join(&names[0]).display().to_string();
    let to_settings = |pairs: Vec<(String, String)>| -> Settings {
        pairs.into_iter().map(|(k, v)| (k, json!(v))).collect()
    };

    // A listener that accepts and never answers.
    let hang = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = hang.local_addr()?.port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in hang.incoming().flatten() {
            held.push(s); // keep every connection open, say nothing
        }
    });
    let mut s = to_settings(
        emus.settings_for(Kind::S3, "errors")
            .context("s3 emulator")?,
    );
    s.insert(
        "AWS_ENDPOINT".into(),
        json!(format!("http://127.0.0.1:{port}")),
    );
    s.insert("WALG_STORAGE_TIMEOUT".into(), json!("2s"));
    s.insert("WALG_STORAGE_RETRIES".into(), json!(1));
    s.insert("WALG_UPLOAD_CONCURRENCY".into(), json!(1));
    let w = Walg::new(&work, built, "hang.json", &s)?;
    let start = Instant::now();
    let out = w.run(&["wal-push", &seg])?;
    let took = start.elapsed();
    // Bound: (retries + 1) attempts of at most the timeout each, plus backoff
    // and process start; 2s * 2 + margin.
    ensure!(
        code(&out) == 1,
        "hanging storage: expected exit 1, got {}: {}",
        code(&out),
        text(&out)
    );
    ensure!(
        took < Duration::from_secs(15),
        "hanging storage: wal-push took {took:?}, configured timeout 2s x 2 attempts"
    );
    let msg = text(&out);
    ensure!(
        msg.contains("timed out") && msg.contains("2s"),
        "message should say it timed out after 2s: {msg}"
    );
    ensure!(
        msg.contains("default") || msg.contains("s3://"),
        "message should name the storage: {msg}"
    );
    println!(
        "  hanging endpoint: wal-push exit 1 after {:.1}s (timeout 2s, 1 retry)",
        took.as_secs_f64()
    );

    // Wrong key (Azurite checks signatures).
    let mut s = to_settings(
        emus.settings_for(Kind::Azure, "errors")
            .context("azure emulator")?,
    );
    s.insert(
        "AZURE_STORAGE_ACCESS_KEY".into(),
        json!("d3Jvbmcga2V5IHdyb25nIGtleSB3cm9uZyBrZXk="),
    );
    s.insert("WALG_STORAGE_RETRIES".into(), json!(0));
    let w = Walg::new(&work, built, "wrongkey.json", &s)?;
    let out = w.run(&["wal-push", &seg])?;
    let msg = text(&out);
    ensure!(code(&out) == 1, "wrong key: expected exit 1: {msg}");
    ensure!(
        !msg.contains("d3Jvbmcga2V5"),
        "the key leaked into the message: {msg}"
    );
    ensure!(
        msg.to_lowercase().contains("permission denied") || msg.contains("AZURE_STORAGE"),
        "wrong key message unclear: {msg}"
    );

    // Missing bucket.
    let mut s = to_settings(
        emus.settings_for(Kind::S3, "errors")
            .context("s3 emulator")?,
    );
    s.insert("WALG_S3_PREFIX".into(), json!("s3://walg-no-such-bucket/x"));
    let w = Walg::new(&work, built, "nobucket.json", &s)?;
    let out = w.run(&["wal-push", &seg])?;
    let msg = text(&out);
    ensure!(
        code(&out) == 1 && msg.contains("walg-no-such-bucket"),
        "missing bucket: {msg}"
    );

    // Malformed prefix.
    let mut s = Settings::new();
    s.insert("WALG_S3_PREFIX".into(), json!("walg-test/no-scheme"));
    let w = Walg::new(&work, built, "malformed.json", &s)?;
    let out = w.run(&["wal-push", &seg])?;
    let msg = text(&out);
    ensure!(
        code(&out) == 1 && msg.contains("WALG_S3_PREFIX") && msg.contains("s3://"),
        "malformed prefix: {msg}"
    );
    Ok(())
}

/// `walg st status`, `st check --write` and `st transfer` on two file
/// storages: WAL written to the failover (forced with WALG_TARGET_STORAGE)
/// is copied back to the primary, verified, and fetched from it alone.
pub fn storage_commands(built: &Path) -> Result<()> {
    let work = Workdir::new("st")?;
    let primary = work.path.join("primary");
    let backup = work.path.join("backup");
    let cache = work.path.join("state/status.json");
    let mut s = file_settings(&primary);
    file_failover(&mut s, &backup, &cache);
    s.insert("WALG_UPLOAD_CONCURRENCY".into(), json!(1));
    let walg = Walg::new(&work, built, "walg.json", &s)?;
    let mut forced = s.clone();
    forced.insert("WALG_TARGET_STORAGE".into(), json!("backup"));
    let to_backup = Walg::new(&work, built, "backup-only.json", &forced)?;
    let mut only_primary = s.clone();
    only_primary.insert("WALG_TARGET_STORAGE".into(), json!("default"));
    let from_primary = Walg::new(&work, built, "primary-only.json", &only_primary)?;

    let (data, names) = ready_backlog(&work, 3)?;
    for n in &names {
        let out = to_backup.run(&[
            "wal-push",
            &data.join("pg_wal").join(n).display().to_string(),
        ])?;
        ensure!(
            out.status.success() && text(&out).contains("\"backup\""),
            "push to backup: {}",
            text(&out)
        );
    }
    let dest = work.path.join("fetched");
    let out = from_primary.run(&["wal-fetch", &names[0], &dest.display().to_string()])?;
    ensure!(
        code(&out) == 74,
        "primary should not have {} yet: {}",
        names[0],
        text(&out)
    );

    let out = walg.run(&["st", "check", "--write"])?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.success()
            && stdout.contains("default: alive")
            && stdout.contains("backup: alive"),
        "st check: {stdout} {}",
        text(&out)
    );
    let out = walg.run(&["st", "status"])?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(out.status.success(), "st status: {}", text(&out));
    ensure!(
        stdout.contains(&cache.display().to_string()) && stdout.contains("alive"),
        "st status output: {stdout}"
    );
    ensure!(cache.is_file(), "status cache not written by st check");

    let out = walg.run(&["st", "transfer", "--source", "backup"])?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.success() && stdout.contains("3 copied"),
        "st transfer: {stdout} {}",
        text(&out)
    );
    for n in &names {
        let out = from_primary.run(&["wal-fetch", n, &dest.display().to_string()])?;
        ensure!(
            out.status.success(),
            "fetch {n} from the primary after transfer: {}",
            text(&out)
        );
        ensure!(
            fs::read(&dest)? == fs::read(data.join("pg_wal").join(n))?,
            "{n}: transferred bytes differ"
        );
    }
    // Again: nothing to copy, everything verified identical.
    let out = walg.run(&["st", "transfer", "--source", "backup"])?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.success() && stdout.contains("0 copied, 3 already present"),
        "second transfer: {stdout}"
    );
    Ok(())
}

/// Under the heaviest pgbench load this machine drives (no fsync, many
/// clients, WAL-heavy initialisation), archiving through walg keeps up: the
/// number of `.ready` files waiting stays bounded and drains to zero.
pub fn archive_keeps_up(built: &Path) -> Result<String> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let work = Workdir::new("load")?;
    let archive = work.owned_dir("archive")?;
    let walg = Walg::new(&work, built, "walg.json", &file_settings(&archive))?;
    let conf = format!("archive_mode = on\narchive_command = '{}'\nmax_wal_size = 64MB\ncheckpoint_timeout = 30s\n", walg.archive_command());
    let mut c = Cluster::init(&work.path.join("pg"), &conf, &[])?;
    c.start()?;
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
    let ready_now = |c: &Cluster| -> Result<String> {
        c.sql("select count(*) from pg_ls_dir('pg_wal/archive_status') f where f like '%.ready'")
    };
    // A burst first: pgbench's initialisation writes WAL as fast as the
    // machine can (COPY, no fsync). Report how high the backlog got and how
    // fast it drained.
    let started = Instant::now();
    let init = c.pgbench(&["-i", "-q", "-s", "40"]);
    let burst_secs = started.elapsed().as_secs_f64();
    let burst_peak = max_ready.swap(0, Ordering::Relaxed);
    let drained = c.wait_for(
        &format!(
            "select ({}) = 0",
            "select count(*) from pg_ls_dir('pg_wal/archive_status') f where f like '%.ready'"
        ),
        "t",
        Duration::from_secs(180),
    );
    let drain_secs = started.elapsed().as_secs_f64() - burst_secs;
    // Then a sustained load: the backlog must stay bounded throughout.
    max_ready.store(0, Ordering::Relaxed);
    let archived_before: u64 = c
        .sql("select archived_count from pg_stat_archiver")?
        .parse()?;
    let load_started = Instant::now();
    let load = c.pgbench(&["-c", "8", "-j", "2", "-T", "40", "-N"]);
    let load_secs = load_started.elapsed().as_secs_f64();
    let steady_peak = max_ready.load(Ordering::Relaxed);
    let drained_after = c.wait_for(
        &format!(
            "select ({}) = 0",
            "select count(*) from pg_ls_dir('pg_wal/archive_status') f where f like '%.ready'"
        ),
        "t",
        Duration::from_secs(120),
    );
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    init?;
    load?;
    drained.with_context(|| {
        format!(
            "the .ready backlog after the burst did not drain: {} waiting",
            ready_now(&c).unwrap_or_default()
        )
    })?;
    drained_after.context("the .ready backlog did not drain after the sustained load")?;
    let archived: u64 = c
        .sql("select archived_count from pg_stat_archiver")?
        .parse()?;
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

/// Reports (does not assert) the time of one `wal-push` and one `wal-fetch`
/// of a real 16 MiB segment through the binary, per backend: the medians of
/// five distinct segments. Asserts only that every call succeeded and the
/// bytes came back.
pub fn storage_timings(built: &Path, emus: &crate::infra::emulators::Emulators) -> Result<String> {
    use crate::infra::emulators::Kind;
    let work = Workdir::new("timings")?;
    // Five real 16 MiB segments with pgbench-like content.
    let mut c = Cluster::init(
        &work.path.join("src"),
        "archive_mode = on\narchive_command = '/bin/false'\n",
        &[],
    )?;
    c.start()?;
    c.sql("create table t (a bigint, b text)")?;
    let mut names = Vec::new();
    for i in 0..5 {
        c.sql(&format!("insert into t select g, md5(g::text) || md5((g+{i})::text) from generate_series(1, 150000) g"))?;
        names.push(c.sql("select pg_walfile_name(pg_switch_wal())")?);
    }
    c.stop()?;
    let segs = work.path.join("segs");
    fs::create_dir_all(&segs)?;
    for n in &names {
        fs::copy(c.data.join("pg_wal").join(n), segs.join(n))?;
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let mut lines = vec![
        "backend   wal-push (ms)  wal-fetch (ms)   median of 5 x 16 MiB, lz4, debug build"
            .to_string(),
    ];
    let mut backends: Vec<(String, Settings)> =
        vec![("file".into(), file_settings(&work.path.join("archive")))];
    for kind in Kind::ALL {
        let pairs = emus.settings_for(kind, "timings").context("emulator")?;
        backends.push((
            kind.name().into(),
            pairs.into_iter().map(|(k, v)| (k, json!(v))).collect(),
        ));
    }
    for (label, mut settings) in backends {
        settings.insert("WALG_UPLOAD_CONCURRENCY".into(), json!(1));
        settings.insert("WALG_DOWNLOAD_CONCURRENCY".into(), json!(1));
        let w = Walg::new(&work, built, &format!("{label}.json"), &settings)?;
        let (mut push, mut fetch) = (Vec::new(), Vec::new());
        for n in &names {
            let t = Instant::now();
            let out = w.run(&["wal-push", &segs.join(n).display().to_string()])?;
            push.push(t.elapsed().as_secs_f64() * 1000.0);
            ensure!(out.status.success(), "{label}: push {n}: {}", text(&out));
            let dest = work.path.join(format!("fetched-{label}"));
            let t = Instant::now();
            let out = w.run(&["wal-fetch", n, &dest.display().to_string()])?;
            fetch.push(t.elapsed().as_secs_f64() * 1000.0);
            ensure!(out.status.success(), "{label}: fetch {n}: {}", text(&out));
            ensure!(
                fs::read(&dest)? == fs::read(segs.join(n))?,
                "{label}: {n} came back different"
            );
        }
        lines.push(format!(
            "{label:<9} {:>13.0}  {:>14.0}",
            median(push),
            median(fetch)
        ));
    }
    let report = lines.join("\n");
    println!("{report}");
    Ok(report)
}
