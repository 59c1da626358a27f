//! End-to-end drain back to the primary (issue 21, first half): a real
//! PostgreSQL under pgbench archives through the real `walg` binary to the
//! S3 emulator (reached through the fault-switching [`Proxy`]) with a
//! file-storage **spill** failover (`"WALG_FAILOVER_SPILL": true`).
//!
//! Steps:
//! 1. The cluster (1 MiB segments), a base backup, `pgbench -i`, a pgbench
//!    load in a background thread; segments reach S3.
//! 2. The outage: the proxy refuses connections for a while; segments are
//!    forced with `pg_switch_wal()`. Archiving never fails
//!    (`pg_stat_archiver.failed_count` grows by at most one, the call in
//!    flight at the switch, as in the failover scenario), every segment of
//!    the outage is on the spill and none on S3; `walg st status`,
//!    `wal-status --json` and its Prometheus file show the files waiting.
//! 3. The emulator comes back; a few more segments are forced. Within those
//!    `wal-push` calls every spilled file is on S3 (the emulator's own
//!    listing, not walg's), the spill holds no WAL any more (drained with
//!    move), `walg wal-verify` against the primary alone (a config without
//!    the failover) says OK.
//! 4. A new cluster restored from the backup with the primary-only config
//!    restores every segment and has the same data.
//!
//! Figures printed for the closing note: outage length, files and bytes
//! spilled, how many `wal-push` calls and seconds the drain took.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::json;

use super::fixture::{
    archiving_cluster, code, emulator_settings, is_segment, recovered_cluster, s3_keys, s3_proxy,
    say, stderr, stdout, unique_path, Set, Walg,
};
use crate::infra::emulators::{Emulators, Kind};
use crate::infra::pg::{self, table_digest, Cluster, Workdir};
use crate::infra::proxy::Mode;

const CACHE_LIFETIME: Duration = Duration::from_secs(5);
const ARCHIVE_WAIT: Duration = Duration::from_secs(60);
/// The outage lasts at least this long and spills at least this many.
const OUTAGE_MIN: Duration = Duration::from_secs(8);
const OUTAGE_SEGMENTS: usize = 6;
/// After the primary returns, the spill must be empty within this many
/// forced segments, plus [`DRAIN_SEGMENTS_PER_PASS`] for every pass of
/// [`DRAIN_MAX_FILES`] the backlog needs (an idle machine spills more
/// segments in the same outage: 37 to 133 were seen).
const DRAIN_SEGMENTS: usize = 20;
const DRAIN_SEGMENTS_PER_PASS: usize = 10;
/// `WALG_FAILOVER_STORAGES_DRAIN_MAX_FILES`'s default.
const DRAIN_MAX_FILES: usize = 32;

/// WAL objects (`wal_005/<name>.<ext>`) in the spill directory, with sizes.
fn spilled(spill: &Path) -> Result<BTreeMap<String, u64>> {
    let dir = spill.join("wal_005");
    let mut out = BTreeMap::new();
    let Ok(entries) = fs::read_dir(&dir) else {
        return Ok(out);
    };
    for e in entries {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.get(..24).is_some_and(is_segment) || name.contains(".history") {
            out.insert(name, e.metadata()?.len());
        }
    }
    Ok(out)
}

/// Object names under `wal_005/` in the emulator's own listing.
fn on_s3(emus: &Emulators, s3_path: &str) -> Result<Vec<String>> {
    Ok(s3_keys(emus, &format!("{s3_path}/wal_005/"))?
        .iter()
        .filter_map(|k| k.rsplit('/').next().map(str::to_string))
        .collect())
}

/// The pgbench load, in short runs until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Result<()>>>,
}

impl Load {
    fn start(c: &Cluster) -> Load {
        let mut pgbench = c.pgbench_command(&["-n", "-c", "2", "-T", "2", "-R", "200"]);
        pgbench.stdin(Stdio::null());
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || -> Result<()> {
            while !flag.load(Ordering::SeqCst) {
                pg::run(&mut pgbench)?;
            }
            Ok(())
        });
        Load {
            stop,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        match self.handle.take().map(JoinHandle::join) {
            Some(Ok(r)) => r.context("pgbench load"),
            Some(Err(_)) => bail!("the pgbench thread panicked"),
            None => Ok(()),
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

fn force_segment(c: &Cluster, phase: &str) -> Result<String> {
    c.sql(&format!(
        "insert into drain_data (phase, payload) select '{phase}', md5(g::text) from generate_series(1, 200) g"
    ))?;
    c.switch_and_wait_archived(ARCHIVE_WAIT)
        .with_context(|| format!("archive a segment during {phase}"))
}

/// walg's lines for successful `wal-push` calls (one per call).
fn push_calls(log: &str) -> usize {
    log.lines()
        .filter(|l| {
            l.contains("] pushed ")
                || l.contains(" pushed 0")
                || l.contains("(upload-ahead)")
                || l.contains("with identical content")
        })
        .count()
}

pub fn failover_drain_back(built: &Path, emus: &Emulators) -> Result<()> {
    let started = Instant::now();
    let work = Workdir::new("drain")?;
    let proxy = s3_proxy(emus)?;
    let spill = work.owned_dir("spill")?;
    let state = work.owned_dir("state")?;
    let s3_path = unique_path("drain");

    let primary_only = emulator_settings(emus, Kind::S3, &s3_path)?;
    let mut s = emulator_settings(emus, Kind::S3, &s3_path)?;
    s.set("AWS_ENDPOINT", proxy.url())
        .set("WALG_STORAGE_TIMEOUT", "2s")
        .set("WALG_STORAGE_RETRIES", "0")
        .set("WALG_FAILOVER_STORAGES_CHECK_TIMEOUT", "3s")
        .set(
            "WALG_FAILOVER_STORAGES_CACHE_LIFETIME",
            format!("{}s", CACHE_LIFETIME.as_secs()),
        )
        .set(
            "WALG_FAILOVER_STORAGES_CACHE_FILE",
            state.join("storage_status.json").display().to_string(),
        )
        .set(
            "WALG_FAILOVER_STORAGES",
            json!({"spill": {
                "WALG_FILE_PREFIX": spill.display().to_string(),
                "WALG_FAILOVER_SPILL": true
            }}),
        );
    let walg = Walg::new(&work, built, "walg.json", &s)?;
    let primary_walg = Walg::new(&work, built, "walg-primary.json", &primary_only)?;

    // 1. The cluster, its backup and a load.
    let mut source = archiving_cluster(
        &work,
        &walg,
        "source",
        "archive_timeout = 0\nmax_wal_size = 64MB\n",
        &["--wal-segsize=1"],
    )?;
    source.sql(
        "create table drain_data (id bigserial primary key, phase text not null, payload text)",
    )?;
    let first = force_segment(&source, "start")?;
    let backup_dir = work.path.join("basebackup");
    source.basebackup(&backup_dir)?;
    source.pgbench(&["-i", "-s", "1", "-q"])?;
    let load = Load::start(&source);
    let before = force_segment(&source, "before")?;
    ensure!(
        on_s3(emus, &s3_path)?
            .iter()
            .any(|n| n.starts_with(&before)),
        "{before} did not reach S3 before the outage"
    );
    ensure!(
        spilled(&spill)?.is_empty(),
        "the spill was written while S3 was up: {:?}",
        spilled(&spill)?
    );
    say(&format!(
        "archiving from {first} to S3 through the proxy; backup taken; pgbench running"
    ));

    // 2. The outage.
    let failed_before = source.failed_count()?;
    let t0 = Instant::now();
    proxy.set_mode(Mode::Refuse)?;
    let mut outage = Vec::new();
    while outage.len() < OUTAGE_SEGMENTS || t0.elapsed() < OUTAGE_MIN {
        outage.push(force_segment(&source, "outage")?);
    }
    let lasted = t0.elapsed();
    let failed = source.failed_count()? - failed_before;
    ensure!(
        failed <= 1,
        "failed_count grew by {failed} during the outage (bound 1: the call in flight at the switch)\n{}",
        pg::tail(&source.log_text(), 40)
    );
    let spill_files = spilled(&spill)?;
    let s3_now = on_s3(emus, &s3_path)?;
    for seg in &outage {
        ensure!(
            spill_files.keys().any(|k| k.starts_with(seg.as_str())),
            "{seg} was archived during the outage but is not on the spill"
        );
        ensure!(
            !s3_now.iter().any(|k| k.starts_with(seg.as_str())),
            "{seg} reached S3 during the outage: the outage was not real"
        );
    }
    let spilled_bytes: u64 = spill_files.values().sum();

    // Visibility while files wait: st status, wal-status --json and metrics.
    let st = pg::run(
        pg::as_postgres(&walg.bin)
            .arg("--config")
            .arg(&walg.config)
            .args(["st", "status"]),
    )?;
    let st_text = stdout(&st);
    let st_line = st_text
        .lines()
        .find(|l| l.trim_start().starts_with("spill") && l.contains("file(s) wait"))
        .with_context(|| format!("st status does not show the spill's backlog:\n{st_text}"))?
        .trim()
        .to_string();
    let prom = work.path.join("walg.prom");
    let ws = walg
        .command(&[
            "wal-status",
            "--json",
            "--offline",
            "--no-archive-check",
            "--pgdata",
            &source.data.display().to_string(),
            "--prometheus",
            &prom.display().to_string(),
        ])
        .output()?;
    let report: serde_json::Value = serde_json::from_slice(&ws.stdout)
        .with_context(|| format!("wal-status --json: {}", stderr(&ws)))?;
    let waiting = report["failover_drain"][0]["files"].as_u64().unwrap_or(0);
    ensure!(
        report["failover_drain"][0]["storage"] == "spill" && waiting >= outage.len() as u64,
        "wal-status --json does not show the {} files waiting on the spill: {}",
        outage.len(),
        report["failover_drain"]
    );
    let metrics = fs::read_to_string(&prom)?;
    let metric = metrics
        .lines()
        .find(|l| l.starts_with("walg_failover_drain_files{storage=\"spill\"}"))
        .with_context(|| format!("no walg_failover_drain_files metric:\n{metrics}"))?
        .to_string();
    say(&format!(
        "outage {:.1}s: {} segments forced, {} files ({} bytes) spilled, failed_count +{failed}; st status: {st_line}; {metric}",
        lasted.as_secs_f64(),
        outage.len(),
        spill_files.len(),
        spilled_bytes
    ));

    // 3. The emulator comes back: the following wal-push calls drain.
    let log_at = source.log_text().len();
    let back = Instant::now();
    proxy.set_mode(Mode::PassThrough)?;
    let waiting = spilled(&spill)?.len();
    let bound = DRAIN_SEGMENTS + DRAIN_SEGMENTS_PER_PASS * waiting.div_ceil(DRAIN_MAX_FILES);
    let mut forced = 0;
    let mut first_drain: Option<Duration> = None;
    loop {
        force_segment(&source, "after")?;
        forced += 1;
        let log = source.log_text();
        if first_drain.is_none() && log[log_at..].contains("drained ") {
            first_drain = Some(back.elapsed());
        }
        if spilled(&spill)?.is_empty() {
            break;
        }
        if forced >= bound {
            bail!(
                "the spill still holds {:?} after {forced} segments forced since S3 returned ({waiting} were waiting)\n{}",
                spilled(&spill)?.keys().collect::<Vec<_>>(),
                pg::tail(&log, 40)
            );
        }
    }
    let drained_after = back.elapsed();
    let log = source.log_text();
    let window = &log[log_at..];
    let calls = push_calls(window);
    let drain_lines: Vec<&str> = window.lines().filter(|l| l.contains("drained ")).collect();
    let errors: Vec<&str> = window
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("drain"))
        .collect();
    ensure!(
        errors.is_empty(),
        "the drain logged errors:\n{}",
        errors.join("\n")
    );
    let s3_after = on_s3(emus, &s3_path)?;
    for name in spill_files.keys() {
        ensure!(
            s3_after.contains(name),
            "{name} was spilled but is not in the emulator's listing after the drain"
        );
    }
    say(&format!(
        "S3 back: spill empty after {forced} forced segments ({calls} wal-push calls), {:.1}s after the switch back; first drain {:.1}s after it (cache lifetime {}s); {} wal-push call(s) drained:",
        drained_after.as_secs_f64(),
        first_drain.unwrap_or_default().as_secs_f64(),
        CACHE_LIFETIME.as_secs(),
        drain_lines.len()
    ));
    for l in &drain_lines {
        say(&format!("  {}", l.trim()));
    }

    // The journal agrees: nothing waits.
    let st = pg::run(
        pg::as_postgres(&walg.bin)
            .arg("--config")
            .arg(&walg.config)
            .args(["st", "status"]),
    )?;
    ensure!(
        stdout(&st)
            .lines()
            .any(|l| l.trim_start().starts_with("spill") && l.contains("nothing waits")),
        "st status after the drain:\n{}",
        stdout(&st)
    );
    load.finish()?;
    let accounts = table_digest(&source, "pgbench_accounts")?;
    let ours = table_digest(&source, "drain_data")?;
    let last = source.switch_and_wait_archived(ARCHIVE_WAIT)?;
    source.stop()?;

    // wal-verify against the primary alone.
    let v = primary_walg.run(&["wal-verify", "--json"])?;
    let verdict: serde_json::Value = serde_json::from_slice(&v.stdout)
        .with_context(|| format!("wal-verify --json: {}", stderr(&v)))?;
    ensure!(
        code(&v) == 0 && verdict["status"] == "OK",
        "wal-verify against the primary alone (exit {}): {verdict:#}",
        code(&v)
    );
    let headline = stdout(&primary_walg.run(&["wal-verify"])?)
        .lines()
        .next()
        .unwrap_or("")
        .to_string();

    // 4. A new cluster restores from the primary alone.
    let restored_dir = work.path.join("restored");
    let t = Instant::now();
    let mut restored = recovered_cluster(
        &primary_walg,
        &backup_dir,
        &restored_dir,
        "archive_mode = off\n",
        Duration::from_secs(120),
    )?;
    let rlog = restored.log_text();
    for seg in &outage {
        ensure!(
            rlog.contains(&format!("restored log file \"{seg}\" from archive")),
            "recovery from the primary alone did not restore {seg}\n{}",
            pg::tail(&rlog, 30)
        );
    }
    ensure!(
        table_digest(&restored, "pgbench_accounts")? == accounts,
        "pgbench_accounts differs after recovery from the primary alone"
    );
    ensure!(
        table_digest(&restored, "drain_data")? == ours,
        "drain_data differs after recovery from the primary alone"
    );
    restored.stop()?;
    say(&format!(
        "wal-verify (primary alone): {headline}; restored up to {last} from the primary alone in {:.1}s, data identical; total {:.1}s",
        t.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}
