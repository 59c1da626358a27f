//! The declared pg_wal budget (`WALG_PG_WAL_BUDGET`), end to end: every
//! storage fails while `pg_wal` sits on a small file system, and the server
//! keeps running because `wal-push` gives segments up on purpose, loudly.
//!
//! `pg_wal_budget_gap`: a cluster with 1 MiB segments whose `pg_wal` is a
//! 64 MiB tmpfs, archiving to a file primary and a file failover, with the
//! budget at 40% of that file system. A base backup (A) is taken; both
//! storages are then replaced by plain files (every write fails) while
//! INSERTs and `pg_switch_wal()` write more WAL than the tmpfs holds: the
//! server keeps running, `wal-push` gives segments up (ERROR lines in the
//! server log, records in `pg_wal/walg_data/walg_gaps/`), and `wal-status`
//! is CRITICAL (`pg_wal_budget`) with the given-up count in its metric.
//! The storages come back: the records reach the archive (`walg_gaps/`),
//! `wal-status` warns that the gap is newer than the newest base backup,
//! `wal-verify` says DECLARED_GAP naming backup A, `wal-show` marks the
//! gap. A second base backup (B) clears the warning. A restore from A stops
//! at the first given-up segment with walg's message in its log; one from
//! B recovers the source's data. `wal-prune --retain-backups 1` then
//! deletes the gap's records with the WAL before B, and `wal-verify` has
//! no gap left to declare.
//!
//! What it does not cover: a budget given as a size (the unit tests do),
//! the drain of failover storages (the failover scenarios).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::Value;

use super::fixture::{
    self, code, file_failover, file_settings, recovered_cluster, say, stdout, Look, Set, Walg,
};
use crate::infra::pg::{self, table_digest, Cluster, Workdir};

const ARCHIVE_WAIT: Duration = Duration::from_secs(90);
/// The tmpfs under pg_wal, and the budget on it.
const TMPFS_MB: u64 = 64;
const BUDGET: &str = "40%";

/// Unmounts on drop (after the cluster that uses it stopped).
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// A storage that fails every call: its directory moved aside and a plain
/// file in its place (nothing can be created under a file, whoever asks).
struct Broken {
    path: PathBuf,
    aside: PathBuf,
}

impl Broken {
    fn new(path: &Path) -> Result<Broken> {
        let aside = path.with_extension("aside");
        fs::rename(path, &aside)?;
        fs::write(path, b"not a directory: this storage is down\n")?;
        Ok(Broken {
            path: path.to_path_buf(),
            aside,
        })
    }

    fn repair(self) -> Result<()> {
        fs::remove_file(&self.path)?;
        fs::rename(&self.aside, &self.path)?;
        Ok(())
    }
}

/// Given-up segments in the local journal (pending and uploaded).
fn journal(pg_wal: &Path) -> Vec<String> {
    let dir = pg_wal.join("walg_data/walg_gaps");
    let mut out: Vec<String> = [dir.clone(), dir.join("uploaded")]
        .iter()
        .flat_map(|d| fs::read_dir(d).into_iter().flatten().flatten())
        .filter_map(|e| {
            e.file_name()
                .to_string_lossy()
                .strip_suffix(".json")
                .map(str::to_string)
        })
        .collect();
    out.sort();
    out
}

/// The check `id` of a wal-status report: (status, summary).
fn check_of(v: &Value, id: &str) -> (String, String) {
    v["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["id"] == id))
        .map(|c| {
            (
                c["status"].as_str().unwrap_or("").to_string(),
                c["summary"].as_str().unwrap_or("").to_string(),
            )
        })
        .unwrap_or_default()
}

pub fn pg_wal_budget_gap(built: &Path) -> Result<()> {
    ensure!(pg::is_root(), "mounting a tmpfs for pg_wal needs root");
    // Setup: two file storages, the budget, a cluster whose pg_wal is a
    // small tmpfs.
    let work = Workdir::new("gaps")?;
    let primary = work.owned_dir("primary")?;
    let failover = work.owned_dir("failover")?;
    let state = work.owned_dir("state")?;
    let cache = state.join("status.json");
    let mut s = file_settings(&primary);
    file_failover(&mut s, &failover, &cache);
    s.set("WALG_UPLOAD_CONCURRENCY", 1)
        .set("WALG_STORAGE_RETRIES", 0)
        .set("WALG_PG_WAL_BUDGET", BUDGET);
    let walg = Walg::new(&work, built, "walg.json", &s)?;
    let config = walg.config.display().to_string();
    let conf = format!(
        "{}archive_timeout = 0\nmax_wal_size = 8MB\nmin_wal_size = 2MB\nwal_keep_size = 0\ncheckpoint_timeout = 30s\n",
        walg.archiving()
    );
    // Declared before the cluster: dropped (unmounted) after it stopped.
    let mounted;
    let mut c = Cluster::init(&work.path.join("db"), &conf, &["--wal-segsize=1"])?;
    let pg_wal = c.data.join("pg_wal");
    let orig = c.data.join("pg_wal.orig");
    fs::rename(&pg_wal, &orig)?;
    fs::create_dir(&pg_wal)?;
    pg::run(
        std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={TMPFS_MB}m,mode=0700"))
            .arg("tmpfs")
            .arg(&pg_wal),
    )
    .context("mount a tmpfs for pg_wal")?;
    mounted = Mount(pg_wal.clone());
    pg::run(
        std::process::Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", orig.display()))
            .arg(&pg_wal),
    )?;
    fs::remove_dir_all(&orig)?;
    pg::chown_postgres(&pg_wal)?;
    c.start()?;
    c.sql("create table t (id serial, pad text)")?;
    c.sql("insert into t (pad) select md5(g::text) from generate_series(1, 2000) g")?;
    let backup_a = work.path.join("backup-a");
    c.low_level_backup(&backup_a)
        .context("base backup A (before the outage)")?;
    c.switch_and_wait_archived(ARCHIVE_WAIT)?;
    say(&format!(
        "pg_wal on a {TMPFS_MB} MiB tmpfs, WALG_PG_WAL_BUDGET={BUDGET}; base backup A taken"
    ));

    // Action: both storages fail; write more WAL than the tmpfs holds.
    let broken = [Broken::new(&primary)?, Broken::new(&failover)?];
    let start_lsn = c.sql("select pg_current_wal_lsn()")?;
    let mut rounds = 0;
    loop {
        rounds += 1;
        c.sql("insert into t (pad) select md5(g::text) || md5(g::text) from generate_series(1, 6000) g")?;
        c.sql("select pg_switch_wal()")?;
        if rounds % 4 == 0 {
            c.sql("checkpoint")?;
        }
        let written: u64 = c
            .sql(&format!(
                "select pg_wal_lsn_diff(pg_current_wal_lsn(), '{start_lsn}')::bigint"
            ))?
            .parse()?;
        if written > (2 * TMPFS_MB) << 20 && journal(&pg_wal).len() >= 8 {
            say(&format!(
                "outage: {} MiB of WAL written in {rounds} rounds onto a {TMPFS_MB} MiB pg_wal; the server kept running",
                written >> 20
            ));
            break;
        }
        ensure!(
            rounds < 400,
            "after {rounds} rounds ({} MiB of WAL) only {} segment(s) were given up; server log:\n{}",
            written >> 20,
            journal(&pg_wal).len(),
            pg::tail(&c.log_text(), 30)
        );
    }
    ensure!(c.sql("select 1")? == "1", "the server stopped answering");
    let log = c.log_text();
    ensure!(
        !log.contains("PANIC"),
        "the server panicked:\n{}",
        pg::tail(&log, 30)
    );
    let given_up = journal(&pg_wal);
    let first_gap = given_up.first().context("no given-up segment")?.clone();
    ensure!(
        log.contains(&format!("wal-push {first_gap}: GIVEN UP ON PURPOSE")),
        "no ERROR line for {first_gap} in the server log:\n{}",
        pg::tail(&log, 20)
    );
    say(&format!(
        "{} segment(s) given up, the first {first_gap}",
        given_up.len()
    ));

    // wal-status during the outage: CRITICAL, and the metric.
    let prom = state.join("walg.prom");
    let prom_s = prom.display().to_string();
    let (rc, v) = fixture::wal_status(
        &walg.bin,
        &c,
        &state,
        Look::Online,
        &["--config", &config, "--prometheus", &prom_s],
    )?;
    let (st, summary) = check_of(&v, "pg_wal_budget");
    ensure!(
        v["status"] == "CRITICAL" && rc == 2 && st == "CRITICAL",
        "wal-status during the outage (exit {rc}): {st} {summary}\n{v:#}"
    );
    let metrics = fs::read_to_string(&prom)?;
    let counted: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("walg_wal_given_up_segments_total "))
        .context("no walg_wal_given_up_segments_total in the metrics")?
        .parse()?;
    ensure!(
        counted >= given_up.len() as f64,
        "metric {counted}, journal {}",
        given_up.len()
    );
    let status_outage = v["headline"].as_str().unwrap_or("").to_string();
    say(&format!("wal-status (outage): CRITICAL: {status_outage}"));
    say(&format!("  pg_wal_budget: {summary}"));
    say(&format!("  walg_wal_given_up_segments_total {counted}"));

    // The storages come back: the backlog and the gap records go out.
    for b in broken {
        b.repair()?;
    }
    let _ = fs::remove_file(&cache);
    for _ in 0..3 {
        c.switch_and_wait_archived(ARCHIVE_WAIT)?;
    }
    c.sql("checkpoint")?;
    let given_up = journal(&pg_wal);
    let mut stored: Vec<String> = Vec::new();
    for _ in 0..60 {
        stored = fs::read_dir(primary.join("walg_gaps"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_string_lossy()
                    .strip_suffix(".json")
                    .map(str::to_string)
            })
            .collect();
        stored.sort();
        if stored == given_up {
            break;
        }
        c.switch_and_wait_archived(ARCHIVE_WAIT)?;
    }
    ensure!(
        stored == given_up,
        "gap records in the archive {stored:?}, in the journal {given_up:?}"
    );
    say(&format!(
        "storages back: {} gap record(s) under walg_gaps/ on the primary",
        stored.len()
    ));
    let (rc, v) = fixture::wal_status(&walg.bin, &c, &state, Look::Online, &["--config", &config])?;
    let (st, gap_summary) = check_of(&v, "declared_gap");
    ensure!(
        st == "WARNING" && check_of(&v, "pg_wal_budget").0 == "OK" && rc >= 1,
        "wal-status after the outage (exit {rc}): declared_gap {st} {gap_summary}\n{v:#}"
    );
    let status_after = format!(
        "{}: {}",
        v["status"].as_str().unwrap_or("?"),
        v["headline"].as_str().unwrap_or("")
    );
    say(&format!("wal-status (after): {status_after}"));
    say(&format!("  declared_gap: {gap_summary}"));

    // wal-verify: DECLARED_GAP, naming the backup that stops at it.
    let out = walg.run(&["wal-verify", "--json"])?;
    let rv: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("wal-verify --json: {}", fixture::all_output(&out)))?;
    let backup_a_name = rv["declared"]["runs"][0]["backups_stop_here"][0]
        .as_str()
        .unwrap_or("")
        .to_string();
    ensure!(
        code(&out) == 3
            && rv["status"] == "DECLARED_GAP"
            && rv["declared"]["count"].as_u64() == Some(given_up.len() as u64)
            && rv["union"]["missing_count"] == 0
            && backup_a_name.ends_with(".backup"),
        "wal-verify (exit {}): {rv:#}",
        code(&out)
    );
    let text = walg.run(&["wal-verify"])?;
    let verify_headline = stdout(&text).lines().next().unwrap_or("").to_string();
    ensure!(
        verify_headline.starts_with("DECLARED_GAP:"),
        "{}",
        stdout(&text)
    );
    say(&format!("wal-verify: {verify_headline}"));

    // wal-show marks the gap.
    let out = walg.run(&["wal-show", "--json"])?;
    let sv: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("wal-show --json: {}", fixture::all_output(&out)))?;
    ensure!(
        sv["declared_segments"].as_u64() == Some(given_up.len() as u64)
            && sv["timelines"][0]["gaps"][0]["declared"] == sv["timelines"][0]["gaps"][0]["count"],
        "wal-show: {sv:#}"
    );
    let show = stdout(&walg.run(&["wal-show"])?);
    ensure!(show.contains("DECLARED_GAP"), "wal-show:\n{show}");
    say(&format!(
        "wal-show: {}",
        show.lines().next().unwrap_or_default()
    ));

    // A new base backup (B) clears the warning.
    let backup_b = work.path.join("backup-b");
    c.low_level_backup(&backup_b)
        .context("base backup B (after the outage)")?;
    c.sql("insert into t (pad) values ('after backup b')")?;
    c.switch_and_wait_archived(ARCHIVE_WAIT)?;
    let digest = table_digest(&c, "t")?;
    let (_, v) = fixture::wal_status(&walg.bin, &c, &state, Look::Online, &["--config", &config])?;
    ensure!(
        check_of(&v, "declared_gap").0 == "OK",
        "wal-status after backup B: {:?}\n{v:#}",
        check_of(&v, "declared_gap")
    );
    c.stop()?;

    // Restore from A: recovery stops at the gap, with walg's message. It
    // promotes there: it must not archive its new timeline into the archive
    // the restore from B reads.
    let from_a = recovered_cluster(
        &walg,
        &backup_a,
        &work.path.join("from-a"),
        "archive_mode = off\n",
        Duration::from_secs(120),
    )
    .context("restore from backup A")?;
    let log_a = from_a.log_text();
    let message = format!("wal-fetch {first_gap}: recovery stops here: {first_gap} is not in the archive because wal-push gave it up on purpose");
    ensure!(
        log_a.contains(&message),
        "the restore from A does not say why it stopped at {first_gap}:\n{}",
        pg::tail(&log_a, 30)
    );
    let line = log_a
        .lines()
        .find(|l| l.contains(&message))
        .unwrap_or_default();
    say(&format!(
        "restore from A stops at {first_gap}: {}",
        line.chars().take(220).collect::<String>()
    ));
    drop(from_a);

    // Restore from B: the source's data.
    let from_b = recovered_cluster(
        &walg,
        &backup_b,
        &work.path.join("from-b"),
        "",
        Duration::from_secs(120),
    )
    .context("restore from backup B")?;
    ensure!(
        table_digest(&from_b, "t")? == digest,
        "the restore from B differs from the source"
    );
    say("restore from B: same data as the source");
    drop(from_b);

    // wal-prune keeping backup B deletes the WAL before it and the records
    // of the gap with it; wal-verify then has nothing to declare.
    let records = |root: &Path| -> usize {
        fs::read_dir(root.join("walg_gaps"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| e.path().is_file())
                    .count()
            })
            .unwrap_or(0)
    };
    let before = records(&primary) + records(&failover);
    ensure!(
        before >= given_up.len(),
        "{before} gap record(s) before the prune"
    );
    let out = walg.run(&["wal-prune", "--retain-backups", "1", "--confirm"])?;
    ensure!(
        out.status.success() && records(&primary) + records(&failover) == 0,
        "wal-prune --retain-backups 1 --confirm (exit {}) left {} gap record(s): {}",
        code(&out),
        records(&primary) + records(&failover),
        fixture::all_output(&out)
    );
    let pruned = stdout(&out).lines().next().unwrap_or_default().to_string();
    let out = walg.run(&["wal-verify"])?;
    let verified = stdout(&out);
    ensure!(
        !verified.contains("DECLARED_GAP"),
        "wal-verify after the prune (exit {}): {verified}",
        code(&out)
    );
    say(&format!(
        "wal-prune --retain-backups 1 --confirm: {pruned}; {before} gap record(s) deleted with the WAL; wal-verify (exit {}): {}",
        code(&out),
        verified.lines().next().unwrap_or_default()
    ));
    drop(c);
    drop(mounted);
    Ok(())
}
