//! End-to-end failover scenario: a real PostgreSQL archiving through the real
//! `walg` binary to a primary S3 storage (the moto emulator, reached through
//! a counting [`Proxy`] that can refuse or blackhole it) with a file-system
//! failover storage, under a pgbench load.
//!
//! Steps:
//! 1. Request counts with the walg binary run directly on real 1 MiB
//!    segments through the proxy (own cache file): cold cache, fresh cache,
//!    cold again, a blackholed primary with a fresh "alive" verdict, then
//!    with a fresh "dead" verdict.
//! 2. The cluster: `archive_command = walg wal-push %p`, the status cache at
//!    its default per-user location (WALG_FAILOVER_STORAGES_CACHE_FILE
//!    unset; for the `postgres` user under its home). The first archived
//!    segment creates the cache file. Data, `pg_basebackup -X none`,
//!    `pgbench -i`, then a pgbench load in a background thread while the
//!    proxy goes PassThrough -> Refuse -> PassThrough -> Blackhole ->
//!    PassThrough, forcing segments with `pg_switch_wal()`.
//! 3. A new cluster recovered from the backup through `walg wal-fetch` with
//!    the same failover config must have the source's data and must have
//!    restored every segment from the backup's start to the last archived.
//!
//! Bounds asserted: per outage, `pg_stat_archiver.failed_count` grows by at
//! most 1: PostgreSQL runs one archive_command at a time, so at the switch at
//! most one call is in flight; every call started after the switch finds the
//! primary failing (in its own call, or dead in the cache) and writes the same
//! file to the failover within that call. Once the primary is back, a new
//! segment reaches S3 within the cache lifetime plus the slack of one probe
//! and a few archive calls.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use super::fixture::{
    archiving_cluster, emulator_settings, failover_to_files, is_segment, ready_backlog, s3_keys,
    s3_proxy, say, stderr, stored_names, unique_path, Set, Settings, Walg,
};
use crate::infra::emulators::{Emulators, Kind};
use crate::infra::pg::{self, table_digest, Cluster, Workdir};
use crate::infra::proxy::{Mode, Proxy, Request};

const STORAGE_TIMEOUT: &str = "2s";
const STORAGE_RETRIES: &str = "1";
const CHECK_TIMEOUT: &str = "3s";
const CACHE_LIFETIME: Duration = Duration::from_secs(10);
const ARCHIVE_WAIT: Duration = Duration::from_secs(90);
/// An outage lasts at least this long and covers at least 3 forced segments.
const OUTAGE_MIN: Duration = Duration::from_secs(8);
/// How long after the primary returns a new segment must be on it.
const RETURN_BOUND: Duration = Duration::from_secs(30);
const PROBE_NEEDLE: &str = "walg_failover_check";
const CACHE_FILE_NAME: &str = "storage_status.json";

/// WAL-G settings: primary S3 through the proxy, failover `backup` on files.
fn settings(emus: &Emulators, proxy: &Proxy, s3_path: &str, backup: &Path) -> Result<Settings> {
    let mut s = emulator_settings(emus, Kind::S3, s3_path)?;
    s.set("AWS_ENDPOINT", proxy.url())
        .set("WALG_STORAGE_TIMEOUT", STORAGE_TIMEOUT)
        .set("WALG_STORAGE_RETRIES", STORAGE_RETRIES)
        .set("WALG_FAILOVER_STORAGES_CHECK_TIMEOUT", CHECK_TIMEOUT)
        .set(
            "WALG_FAILOVER_STORAGES_CACHE_LIFETIME",
            format!("{}s", CACHE_LIFETIME.as_secs()),
        );
    failover_to_files(&mut s, backup);
    Ok(s)
}

/// Segment names stored on the file storage rooted at `root`.
fn file_segments(root: &Path) -> BTreeSet<String> {
    stored_names(root)
        .iter()
        .filter_map(|n| {
            let stem = n.strip_suffix(".lz4")?;
            is_segment(stem).then(|| stem.to_string())
        })
        .collect()
}

fn s3_segments(emus: &Emulators, s3_path: &str) -> Result<BTreeSet<String>> {
    Ok(s3_keys(emus, &format!("{s3_path}/wal_005/"))?
        .iter()
        .filter_map(|k| {
            let stem = k.rsplit('/').next()?.strip_suffix(".lz4")?;
            is_segment(stem).then(|| stem.to_string())
        })
        .collect())
}

/// Request counts of one walg call, through the proxy.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    total: usize,
    probe_list: usize,
    probe_put: usize,
    probe_delete: usize,
    wal_put: usize,
    /// Requests that met the blackhole (never answered).
    blackholed: usize,
}

impl Counts {
    fn of(reqs: &[Request]) -> Counts {
        let probe = |m: &str| {
            reqs.iter()
                .filter(|r| r.method == m && r.target.contains(PROBE_NEEDLE))
                .count()
        };
        Counts {
            total: reqs.len(),
            probe_list: probe("GET"),
            probe_put: probe("PUT"),
            probe_delete: probe("DELETE"),
            wal_put: reqs
                .iter()
                .filter(|r| r.method == "PUT" && r.target.contains("/wal_005/"))
                .count(),
            blackholed: reqs.iter().filter(|r| r.mode == Mode::Blackhole).count(),
        }
    }
    fn probes(&self) -> usize {
        self.probe_list + self.probe_put + self.probe_delete
    }
    fn show(&self) -> String {
        format!(
            "{} requests: probe list {} / put {} / delete {}, WAL PUT {}{}",
            self.total,
            self.probe_list,
            self.probe_put,
            self.probe_delete,
            self.wal_put,
            if self.blackholed > 0 {
                format!(" ({} blackholed)", self.blackholed)
            } else {
                String::new()
            }
        )
    }
}

/// Where walg run as the server's user keeps its status cache by default.
fn default_cache_file() -> Result<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
    {
        // runuser keeps XDG_STATE_HOME, so the server's walg sees it too.
        return Ok(x.join("walg").join(CACHE_FILE_NAME));
    }
    let home = if pg::is_root() {
        let passwd = fs::read_to_string("/etc/passwd")?;
        passwd
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() >= 6 && f[0] == "postgres").then(|| PathBuf::from(f[5]))
            })
            .context("no postgres user in /etc/passwd")?
    } else {
        PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?)
    };
    Ok(home
        .join(".local")
        .join("state")
        .join("walg")
        .join(CACHE_FILE_NAME))
}

/// Step 1: request counts of single wal-push calls made directly.
fn request_counts(
    work: &Workdir,
    built: &Path,
    emus: &Emulators,
    proxy: &Proxy,
    report: &mut Vec<String>,
) -> Result<()> {
    let (data, names) = ready_backlog(work, 5)?;
    let backup = work.path.join("count-backup");
    fs::create_dir_all(&backup)?;
    let s3_path = format!("e2e/failover-counts-{}", std::process::id());
    let cache = work.path.join("count-state").join(CACHE_FILE_NAME);
    let mut s = settings(emus, proxy, &s3_path, &backup)?;
    s.set(
        "WALG_FAILOVER_STORAGES_CACHE_FILE",
        cache.display().to_string(),
    )
    .set("WALG_UPLOAD_CONCURRENCY", "1");
    let walg = Walg::new(work, built, "walg-counts.json", &s)?;
    let push = |name: &str| -> Result<(Counts, Duration, String)> {
        let mark = proxy.mark();
        let t = Instant::now();
        let out = walg.push(&data.join("pg_wal").join(name))?;
        let took = t.elapsed();
        // Blackholed requests are counted when their bytes arrive; give the
        // proxy's threads a moment.
        std::thread::sleep(Duration::from_millis(100));
        ensure!(
            out.status.success(),
            "wal-push {name} failed: {}",
            stderr(&out)
        );
        Ok((Counts::of(&proxy.since(mark)), took, stderr(&out)))
    };

    ensure!(
        !cache.exists(),
        "{} exists before the first run",
        cache.display()
    );
    let (cold, t_cold, log) = push(&names[0])?;
    ensure!(
        cache.is_file(),
        "the first wal-push did not create the cache file {}",
        cache.display()
    );
    ensure!(
        !log.to_lowercase().contains("cache"),
        "the first wal-push mentioned the cache: {log}"
    );
    ensure!(
        cold.probe_list <= 1 && cold.probe_put <= 1 && cold.probe_delete <= 1,
        "cold cache: more than one probe of S3: {}",
        cold.show()
    );
    ensure!(
        cold.wal_put == 1,
        "cold cache: expected 1 WAL upload to S3: {}",
        cold.show()
    );

    let (fresh, t_fresh, _) = push(&names[1])?;
    ensure!(
        fresh.probes() == 0,
        "fresh cache: wal-push made probe requests: {}",
        fresh.show()
    );
    ensure!(
        fresh.wal_put == 1 && fresh.total == 1,
        "fresh cache: expected exactly one request (the WAL PUT): {}",
        fresh.show()
    );

    fs::remove_file(&cache)?;
    let (cold2, _, _) = push(&names[2])?;
    ensure!(
        cold2.probe_list <= 1 && cold2.probe_put <= 1 && cold2.probe_delete <= 1,
        "cold cache again: more than one probe: {}",
        cold2.show()
    );
    ensure!(
        !backup.join("walg_failover_check").exists(),
        "the file failover storage was probed although it was the last usable storage"
    );
    let on_s3 = s3_segments(emus, &s3_path)?;
    ensure!(
        names[..3].iter().all(|n| on_s3.contains(n)),
        "segments pushed with S3 alive are not on S3: {on_s3:?}"
    );

    proxy.set_mode(Mode::Blackhole)?;
    let blackholed = push(&names[3]);
    let dead_skip = push(&names[4]);
    proxy.set_mode(Mode::PassThrough)?;
    let (bh, t_bh, _) = blackholed?;
    let (skip, t_skip, _) = dead_skip?;
    let on_backup = file_segments(&backup);
    ensure!(
        on_backup.contains(&names[3]) && on_backup.contains(&names[4]),
        "blackholed pushes did not land on the failover: {on_backup:?}"
    );
    ensure!(
        skip.total == 0,
        "a fresh dead verdict must skip S3 without any request: {}",
        skip.show()
    );
    ensure!(
        t_skip < Duration::from_secs(2),
        "a push skipping a dead primary took {t_skip:?}"
    );

    let lines = [
        format!(
            "cold cache (no file):      {} ({:.0} ms); file storage: 0 probes (last usable member)",
            cold.show(),
            t_cold.as_secs_f64() * 1e3
        ),
        format!(
            "fresh cache:               {} ({:.0} ms)",
            fresh.show(),
            t_fresh.as_secs_f64() * 1e3
        ),
        format!("cold cache (file deleted): {}", cold2.show()),
        format!(
            "blackhole, fresh 'alive':  {} ({:.1} s until failover to files)",
            bh.show(),
            t_bh.as_secs_f64()
        ),
        format!(
            "blackhole, fresh 'dead':   {} ({:.0} ms)",
            skip.show(),
            t_skip.as_secs_f64() * 1e3
        ),
    ];
    for l in &lines {
        say(l);
    }
    report.extend(lines.iter().map(|l| format!("direct wal-push, {l}")));
    Ok(())
}

/// The pgbench load, in short runs until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Result<u64>>>,
}

impl Load {
    fn start(c: &Cluster) -> Load {
        let mut pgbench = c.pgbench_command(&["-n", "-c", "2", "-T", "2", "-R", "300"]);
        pgbench.stdin(Stdio::null());
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || -> Result<u64> {
            let mut txns = 0u64;
            while !flag.load(Ordering::SeqCst) {
                let out = pg::run(&mut pgbench)?;
                let text = String::from_utf8_lossy(&out.stdout);
                txns += text
                    .lines()
                    .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
                    .and_then(|v| v.split('/').next()?.trim().parse::<u64>().ok())
                    .unwrap_or(0);
            }
            Ok(txns)
        });
        Load {
            stop,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> Result<u64> {
        self.stop.store(true, Ordering::SeqCst);
        match self.handle.take().map(JoinHandle::join) {
            Some(Ok(r)) => r.context("pgbench load"),
            Some(Err(_)) => bail!("the pgbench thread panicked"),
            None => Ok(0),
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Writes a row, switches WAL and waits for the finished segment to be archived.
fn force_segment(c: &Cluster, phase: &str) -> Result<(String, Duration)> {
    let t = Instant::now();
    c.sql(&format!("insert into failover_data (phase, payload) select '{phase}', md5(g::text) from generate_series(1, 200) g"))?;
    let seg = c
        .switch_and_wait_archived(ARCHIVE_WAIT)
        .with_context(|| format!("archive a segment during {phase}"))?;
    Ok((seg, t.elapsed()))
}

/// `pushed NAME ... N ms` lines walg wrote into the server log: (name, ms, line).
fn push_times(log: &str) -> Vec<(String, u64, String)> {
    log.lines()
        .filter_map(|l| {
            let i = l.find("pushed ")?;
            let name = l.get(i + 7..i + 31)?;
            let end = l.rfind(" ms")?;
            let ms = l[..end].rsplit(", ").next()?.trim().parse().ok()?;
            is_segment(name).then(|| (name.to_string(), ms, l.trim().to_string()))
        })
        .collect()
}

struct Outage {
    label: &'static str,
    segments: usize,
    lasted: Duration,
    failed: u64,
    slowest_push_ms: u64,
    pushes: usize,
    /// walg's log line of the slowest push.
    slowest_line: String,
    push_ms: Vec<u64>,
    /// Requests from the switch back until a new segment was on S3.
    return_requests: Counts,
    slowest_forced: Duration,
    back_after: Duration,
    down_logged: usize,
    up_logged: usize,
}

struct Scenario<'a> {
    c: &'a Cluster,
    proxy: &'a Proxy,
    emus: &'a Emulators,
    s3_path: &'a str,
    backup: &'a Path,
}

impl Scenario<'_> {
    /// A new segment lands on S3 (PassThrough).
    fn wait_on_s3(&self, phase: &str, bound: Duration) -> Result<(Duration, usize)> {
        let t = Instant::now();
        let mut forced = 0;
        loop {
            let (seg, _) = force_segment(self.c, phase)?;
            forced += 1;
            if s3_segments(self.emus, self.s3_path)?.contains(&seg) {
                return Ok((t.elapsed(), forced));
            }
            if t.elapsed() > bound {
                bail!("no new segment reached S3 within {bound:?} after it returned ({forced} segments forced, last {seg} went elsewhere)\n{}", pg::tail(&self.c.log_text(), 30));
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn outage(&self, mode: Mode, label: &'static str) -> Result<Outage> {
        let failed_before = self.c.failed_count()?;
        let log_at = self.c.log_text().len();
        let t0 = Instant::now();
        self.proxy.set_mode(mode)?;
        let mut segs = Vec::new();
        let mut slowest_forced = Duration::ZERO;
        while segs.len() < 3 || t0.elapsed() < OUTAGE_MIN {
            let (seg, took) = force_segment(self.c, label)?;
            slowest_forced = slowest_forced.max(took);
            segs.push(seg);
        }
        let lasted = t0.elapsed();
        let on_backup = file_segments(self.backup);
        let on_s3 = s3_segments(self.emus, self.s3_path)?;
        for s in &segs {
            ensure!(
                on_backup.contains(s),
                "{label}: {s} was archived but is not on the failover storage"
            );
            ensure!(
                !on_s3.contains(s),
                "{label}: {s} reached S3 during the outage: the outage was not real"
            );
        }
        let failed = self.c.failed_count()? - failed_before;
        ensure!(
            failed <= 1,
            "{label}: failed_count grew by {failed} during the outage (bound 1: one archive_command in flight at the switch)\n{}",
            pg::tail(&self.c.log_text(), 60)
        );
        let log = self.c.log_text();
        let window = log.get(log_at..).unwrap_or("");
        let times = push_times(window);
        let down_logged = window
            .lines()
            .filter(|l| l.contains("storage \"default\" is down"))
            .count();
        ensure!(
            down_logged >= 1,
            "{label}: walg did not log that storage \"default\" is down"
        );

        let log_at = log.len();
        let mark = self.proxy.mark();
        self.proxy.set_mode(Mode::PassThrough)?;
        let (back_after, _) = self.wait_on_s3(&format!("after-{label}"), RETURN_BOUND)?;
        // It was taken back after a probe (list + put + delete), not blindly.
        let probe = Counts::of(&self.proxy.since(mark));
        ensure!(
            probe.probe_list >= 1 && probe.probe_put >= 1 && probe.probe_delete >= 1,
            "after {label}: S3 was used again without a complete probe: {}",
            probe.show()
        );
        let log = self.c.log_text();
        let up_logged = log
            .get(log_at..)
            .unwrap_or("")
            .lines()
            .filter(|l| l.contains("storage \"default\" is back up"))
            .count();
        ensure!(
            up_logged >= 1,
            "after {label}: walg did not log that storage \"default\" is back up"
        );
        Ok(Outage {
            label,
            segments: segs.len(),
            lasted,
            failed,
            slowest_push_ms: times.iter().map(|t| t.1).max().unwrap_or(0),
            pushes: times.len(),
            slowest_line: times
                .iter()
                .max_by_key(|t| t.1)
                .map(|t| t.2.clone())
                .unwrap_or_default(),
            push_ms: times.iter().map(|t| t.1).collect(),
            return_requests: probe,
            slowest_forced,
            back_after,
            down_logged,
            up_logged,
        })
    }
}

/// First and last segment names -> every name in between (same timeline).
fn segment_range(first: &str, last: &str, seg_size: u64) -> Result<Vec<String>> {
    let per = 0x1_0000_0000u64 / seg_size;
    let parse = |n: &str| -> Result<(u32, u64)> {
        ensure!(is_segment(n), "{n:?} is not a segment name");
        let tli = u32::from_str_radix(&n[..8], 16)?;
        let log = u64::from_str_radix(&n[8..16], 16)?;
        let seg = u64::from_str_radix(&n[16..], 16)?;
        Ok((tli, log * per + seg))
    };
    let (tli, a) = parse(first)?;
    let (tli2, b) = parse(last)?;
    ensure!(
        tli == tli2 && a <= b,
        "segment range {first}..{last} is not on one timeline in order"
    );
    Ok((a..=b)
        .map(|n| format!("{tli:08X}{:08X}{:08X}", n / per, n % per))
        .collect())
}

fn wal_segment_size(c: &Cluster) -> Result<u64> {
    // In bytes (unit B) since PostgreSQL 11.
    let v = c.sql("select setting from pg_settings where name = 'wal_segment_size'")?;
    Ok(v.parse()?)
}

/// Runs the failover scenario against the S3 emulator.
pub fn run(built: &Path, emus: &Emulators) -> Result<()> {
    let started = Instant::now();
    let work = Workdir::new("failover")?;
    let proxy = s3_proxy(emus)?;
    say(&format!(
        "proxy {} -> moto {}",
        proxy.url(),
        emus.endpoint(Kind::S3).unwrap_or_default()
    ));
    let mut report = Vec::new();

    // 1. Request counts, with the binary run directly.
    request_counts(&work, built, emus, &proxy, &mut report)?;

    // 2. The cluster, archiving through the failover config.
    let backup = work.owned_dir("backup-storage")?;
    let s3_path = unique_path("failover");
    let walg = Walg::new(
        &work,
        built,
        "walg.json",
        &settings(emus, &proxy, &s3_path, &backup)?,
    )?;
    let cache = default_cache_file()?;
    if cache.exists() {
        fs::remove_file(&cache)
            .with_context(|| format!("remove the stale status cache {}", cache.display()))?;
        say(&format!(
            "removed a status cache left by an earlier run: {}",
            cache.display()
        ));
    }
    let mut source = archiving_cluster(
        &work,
        &walg,
        "source",
        "archive_timeout = 0\nmax_wal_size = 256MB\n",
        &[],
    )?;
    let seg_size = wal_segment_size(&source)?;
    source.sql("create table failover_data (id bigserial primary key, phase text not null, payload text, at timestamptz default now())")?;
    let (first, _) = force_segment(&source, "start")?;
    ensure!(
        cache.is_file(),
        "the status cache {} does not exist after the first wal-push ({first})",
        cache.display()
    );
    let meta = fs::symlink_metadata(&cache)?;
    ensure!(
        meta.permissions().mode() & 0o777 == 0o600,
        "status cache mode is {:o}, expected 600",
        meta.permissions().mode() & 0o777
    );
    if pg::is_root() {
        let pg_uid = fs::metadata(&source.data)?.uid();
        ensure!(
            meta.uid() == pg_uid,
            "status cache owned by uid {}, expected the server's {pg_uid}",
            meta.uid()
        );
    }
    serde_json::from_slice::<serde_json::Value>(&fs::read(&cache)?)
        .context("the status cache is not JSON")?;
    say(&format!(
        "first segment {first} archived; status cache created at its default place {} (mode 600)",
        cache.display()
    ));

    source.sql("insert into failover_data (phase, payload) select 'base', md5(g::text) from generate_series(1, 5000) g")?;
    let backup_dir = work.path.join("basebackup");
    source.basebackup(&backup_dir)?;
    let label = fs::read_to_string(backup_dir.join("backup_label"))?;
    let start_seg = label
        .lines()
        .find_map(|l| l.strip_prefix("START WAL LOCATION: "))
        .and_then(|l| l.split("(file ").nth(1))
        .and_then(|l| l.strip_suffix(')'))
        .context("no START WAL LOCATION in backup_label")?
        .to_string();
    source.pgbench(&["-i", "-s", "2", "-q"])?;
    say(&format!(
        "base backup taken (starts at {start_seg}); pgbench -i -s 2 done"
    ));

    let load = Load::start(&source);
    let sc = Scenario {
        c: &source,
        proxy: &proxy,
        emus,
        s3_path: &s3_path,
        backup: &backup,
    };
    let (t, _) = sc.wait_on_s3("passthrough", RETURN_BOUND)?;
    say(&format!(
        "pgbench running; S3 receives WAL through the proxy ({:.1}s)",
        t.as_secs_f64()
    ));
    let failed_at_start = source.failed_count()?;
    let mut outages = Vec::new();
    for (mode, label) in [(Mode::Refuse, "refuse"), (Mode::Blackhole, "blackhole")] {
        let o = sc.outage(mode, label)?;
        say(&format!(
            "{}: {:.1}s, {} segments forced onto the failover (slowest {:.1}s), failed_count +{}, slowest wal-push {} ms of {}; back on S3 {:.1}s after the switch back",
            o.label,
            o.lasted.as_secs_f64(),
            o.segments,
            o.slowest_forced.as_secs_f64(),
            o.failed,
            o.slowest_push_ms,
            o.pushes,
            o.back_after.as_secs_f64()
        ));
        outages.push(o);
    }
    let txns = load.finish()?;

    // walg st status, as the server's user (its default cache file).
    let out = pg::run(
        pg::as_postgres(&walg.bin)
            .arg("--config")
            .arg(&walg.config)
            .args(["st", "status"]),
    )?;
    let status = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        status.contains(&cache.display().to_string()),
        "st status does not name the cache file {}:\n{status}",
        cache.display()
    );
    let default_line = status
        .lines()
        .find(|l| l.starts_with("default "))
        .with_context(|| format!("st status lacks default:\n{status}"))?;
    ensure!(
        default_line.contains("alive"),
        "st status does not show default alive:\n{status}"
    );
    ensure!(
        status.lines().any(|l| l.starts_with("backup ")),
        "st status lacks backup:\n{status}"
    );
    println!(
        "  walg st status:\n{}",
        status
            .lines()
            .map(|l| format!("    {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // The final state, recorded right before the last archived segment.
    let accounts = table_digest(&source, "pgbench_accounts")?;
    let history = table_digest(&source, "pgbench_history")?;
    let ours = table_digest(&source, "failover_data")?;
    let last = source.switch_and_wait_archived(ARCHIVE_WAIT)?;
    let failed_total = source.failed_count()? - failed_at_start;
    let archived = source.archived_count()?;
    source.stop()?;
    let log = source.log_text();
    let cache_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.to_lowercase().contains("cache"))
        .collect();
    ensure!(
        cache_lines.is_empty(),
        "the server log mentions the cache:\n{}",
        cache_lines.join("\n")
    );
    let bound = outages.len() as u64;
    ensure!(
        failed_total <= bound,
        "failed_count grew by {failed_total} over the load, bound {bound} (one per outage)"
    );

    let on_s3 = s3_segments(emus, &s3_path)?;
    let on_backup = file_segments(&backup);
    let range = segment_range(&start_seg, &last, seg_size)?;
    for s in &range {
        ensure!(
            on_s3.contains(s) || on_backup.contains(s),
            "{s} is in neither storage"
        );
    }
    let only_backup = range.iter().filter(|s| !on_s3.contains(*s)).count();
    let only_s3 = range.iter().filter(|s| !on_backup.contains(*s)).count();
    ensure!(only_backup > 0 && only_s3 > 0, "recovery must need both storages: {only_s3} only on S3, {only_backup} only on the failover");
    say(&format!(
        "source: {archived} files archived, {} segments from {start_seg} to {last}: {only_s3} only on S3, {only_backup} only on the failover, {} on both; failed_count +{failed_total}; {txns} pgbench transactions",
        range.len(),
        range.len() - only_s3 - only_backup
    ));

    // 3. Recover a new cluster through walg wal-fetch with the failover config.
    let mut restored = Cluster::for_recovery(
        &backup_dir,
        &work.path.join("restored"),
        &format!("{}archive_mode = off\n", walg.restoring()),
    )?;
    let t = Instant::now();
    restored.start()?;
    restored
        .wait_recovered(Duration::from_secs(180))
        .context("wait for the recovered cluster to finish recovery")?;
    let recovery = t.elapsed();
    let rlog = restored.log_text();
    let missing: Vec<&String> = range
        .iter()
        .filter(|s| !rlog.contains(&format!("restored log file \"{s}\" from archive")))
        .collect();
    ensure!(
        missing.is_empty(),
        "recovery did not restore {} segments: {:?}\n{}",
        missing.len(),
        missing,
        pg::tail(&rlog, 40)
    );
    ensure!(
        table_digest(&restored, "pgbench_accounts")? == accounts,
        "pgbench_accounts differs after recovery"
    );
    ensure!(
        table_digest(&restored, "pgbench_history")? == history,
        "pgbench_history differs after recovery"
    );
    ensure!(
        table_digest(&restored, "failover_data")? == ours,
        "failover_data differs after recovery"
    );
    restored.stop()?;
    say(&format!("recovered cluster restored all {} segments {start_seg}..{last} from both storages in {:.1}s; data identical", range.len(), recovery.as_secs_f64()));

    println!("  failover report:");
    for l in &report {
        println!("    {l}");
    }
    for o in &outages {
        println!(
            "    {}: lasted {:.1}s, {} segments archived to the failover, failed_count +{} (bound 1), wal-push times {:?} ms, slowest: {}\n      'down' logged {}x; primary back in use {:.1}s after it returned, after a probe ('back up' logged {}x; cache lifetime {}s; requests meanwhile: {})",
            o.label,
            o.lasted.as_secs_f64(),
            o.segments,
            o.failed,
            o.push_ms,
            o.slowest_line,
            o.down_logged,
            o.back_after.as_secs_f64(),
            o.up_logged,
            CACHE_LIFETIME.as_secs(),
            o.return_requests.show()
        );
    }
    println!(
        "    proxy saw {} requests in all; total {:.1}s",
        proxy.requests().len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
