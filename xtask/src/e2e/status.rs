//! `walg wal-status` against real clusters, one scenario per cause of a
//! growing pg_wal, each asserting the `--json` verdict online and, where
//! the cause is visible on disk, again offline with the server stopped and
//! `--pgdata` only. Small segments (`--wal-segsize=1`) keep them quick.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use super::fixture::{file_settings, Walg};
use crate::infra::pg::{self, as_postgres, Cluster, Workdir};

/// What every scenario shares: a work directory, walg installed in it, a
/// cluster, and an archive directory the server can write.
struct Fixture {
    work: Workdir,
    walg: PathBuf,
    cluster: Cluster,
    archive: PathBuf,
}

const BASE_CONF: &str = "min_wal_size = 2MB\nmax_wal_size = 4MB\narchive_timeout = 0\n";

fn fixture(label: &str, built: &Path, conf: impl Fn(&Path) -> String) -> Result<Fixture> {
    let work = Workdir::new(label)?;
    let walg = work.install_walg(built)?;
    let archive = work.owned_dir("archive")?;
    let extra = format!("{BASE_CONF}{}", conf(&archive));
    let mut cluster = Cluster::init(&work.path.join("pg"), &extra, &["--wal-segsize=1"])?;
    cluster.start()?;
    cluster.sql("create table t (x int)")?;
    Ok(Fixture {
        work,
        walg,
        cluster,
        archive,
    })
}

/// Writes a little and switches segments `n` times; returns the names of
/// the finished segments.
fn gen(c: &Cluster, n: usize) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for _ in 0..n {
        c.sql("insert into t select generate_series(1, 100)")?;
        names.push(c.sql("select pg_walfile_name(pg_switch_wal())")?);
    }
    Ok(names)
}

/// Runs `walg wal-status --json` as the postgres user; returns the exit
/// code and the parsed report.
fn wal_status(f: &Fixture, online: bool, extra: &[&str]) -> Result<(i32, Value)> {
    let mut cmd = as_postgres(&f.walg);
    // The file system is the machine's: its free space, and how soon a
    // test's burst of WAL would fill it, are not what a scenario asserts.
    cmd.args(["wal-status", "--json"])
        .args(["--fs-free-warn", "0.5", "--fs-free-crit", "0.1"])
        .args(["--full-warn", "1m", "--full-crit", "30s"])
        .args(extra)
        .env("HOME", &f.work.path);
    if online {
        cmd.env("PGHOST", &f.cluster.dir)
            .env("PGPORT", f.cluster.port.to_string())
            .env("PGUSER", "postgres");
    } else {
        cmd.arg("--pgdata").arg(&f.cluster.data).arg("--offline");
    }
    let out = cmd.output().context("run walg wal-status")?;
    let code = out.status.code().unwrap_or(-1);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(&stdout).with_context(|| {
        format!(
            "wal-status printed no JSON (exit {code})\nstdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    println!(
        "    {}: {}",
        if online { "online " } else { "offline" },
        v["headline"].as_str().unwrap_or("?")
    );
    Ok((code, v))
}

/// Runs `walg wal-status --json` online or offline and asserts the verdict:
/// `status`, its exit code, the cause `kind` and the mode; returns the
/// report for the scenario's own assertions.
fn verdict(f: &Fixture, online: bool, extra: &[&str], status: &str, kind: &str) -> Result<Value> {
    let (code, v) = wal_status(f, online, extra)?;
    let mode = if online { "online" } else { "offline" };
    let got_status = v["status"].as_str().unwrap_or("?");
    let got_kind = v["cause"]["kind"].as_str().unwrap_or("?");
    let want_code = match status {
        "OK" => 0,
        "WARNING" => 1,
        "CRITICAL" => 2,
        _ => 3,
    };
    ensure!(
        got_status == status && got_kind == kind && code == want_code && v["mode"] == mode,
        "expected {status}/{kind}/{mode} (exit {want_code}), got {got_status}/{got_kind}/{} (exit {code}):\n{}",
        v["mode"],
        serde_json::to_string_pretty(&v)?
    );
    Ok(v)
}

/// `archive_command` lines that copy each segment into `archive`.
fn copy_to(archive: &Path) -> String {
    format!(
        "archive_mode = on\narchive_command = 'cp %p {}/%f'\n",
        archive.display()
    )
}

/// Waits until the last of `names` is archived, then checkpoints so
/// PostgreSQL removes or recycles what it no longer needs.
fn settle(c: &Cluster, names: &[String]) -> Result<()> {
    c.wait_archived(names.last().context("no segment")?, Duration::from_secs(60))?;
    c.sql("checkpoint")?;
    Ok(())
}

fn check_status<'a>(v: &'a Value, id: &str) -> &'a str {
    v["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["id"] == id))
        .and_then(|c| c["status"].as_str())
        .unwrap_or("absent")
}

fn stop_for_offline(f: &mut Fixture) -> Result<()> {
    f.cluster.stop()
}

/// Archiving through walg into a file storage, nothing held: exit 0 online
/// and offline; the archive check finds what PostgreSQL archived.
pub fn healthy(built: &Path) -> Result<()> {
    let work_cfg = Workdir::new("status-healthy-cfg")?;
    let archive = work_cfg.owned_dir("archive")?;
    let walg = Walg::new(&work_cfg, built, "walg.json", &file_settings(&archive))?;
    let mut f = fixture("status-healthy", built, |_| walg.archiving())?;
    let names = gen(&f.cluster, 3)?;
    settle(&f.cluster, &names)?;
    let config = walg.config.display().to_string();
    let v = verdict(&f, true, &["--config", &config], "OK", "none")?;
    ensure!(
        check_status(&v, "archive") == "OK",
        "archive check: {}",
        v["checks"]
    );
    ensure!(v["archiver"]["ready_count"] == 0, "{}", v["archiver"]);
    stop_for_offline(&mut f)?;
    verdict(&f, false, &["--config", &config], "OK", "none")?;
    Ok(())
}

/// `archive_command = false`: the archiver binds and names the segment.
pub fn failing(built: &Path) -> Result<()> {
    let mut f = fixture("status-failing", built, |_| {
        "archive_mode = on\narchive_command = 'false'\n".into()
    })?;
    let names = gen(&f.cluster, 5)?;
    f.cluster.wait_failed(3, Duration::from_secs(30))?;
    f.cluster.sql("checkpoint")?;
    let v = verdict(&f, true, &[], "CRITICAL", "archive_failing")?;
    ensure!(
        v["cause"]["segment"] == names[0].as_str(),
        "stuck segment {} != {}",
        v["cause"]["segment"],
        names[0]
    );
    ensure!(v["archiver"]["ready_count"].as_u64() >= Some(5));
    stop_for_offline(&mut f)?;
    let v = verdict(&f, false, &[], "CRITICAL", "archive_failing")?;
    ensure!(v["cause"]["segment"] == names[0].as_str());
    Ok(())
}

/// A command that fails on one segment only: strict order blocks the rest.
pub fn stuck_on_one(built: &Path) -> Result<()> {
    // The command refuses a segment once a marker file names it.
    let mut f = fixture("status-stuck", built, |arch| {
        format!(
            "archive_mode = on\narchive_command = 'test ! -f {}/refuse.%f && cp %p {}/%f'\n",
            arch.display(),
            arch.display()
        )
    })?;
    let first = gen(&f.cluster, 1)?;
    f.cluster
        .wait_archived(&first[0], Duration::from_secs(30))?;
    // After a switch the position sits on the boundary, which
    // pg_walfile_name attributes to the previous segment: write first.
    f.cluster.sql("insert into t values (1)")?;
    let current = f
        .cluster
        .sql("select pg_walfile_name(pg_current_wal_insert_lsn())")?;
    std::fs::write(f.archive.join(format!("refuse.{current}")), "")?;
    let names = gen(&f.cluster, 4)?;
    ensure!(names[0] == current, "{names:?} {current}");
    f.cluster.wait_failed(3, Duration::from_secs(30))?;
    f.cluster.sql("checkpoint")?;
    let v = verdict(&f, true, &[], "CRITICAL", "archive_failing")?;
    ensure!(v["cause"]["segment"] == current.as_str(), "{}", v["cause"]);
    ensure!(v["archiver"]["last_archived_wal"] == first[0].as_str());
    ensure!(v["archiver"]["last_failed_wal"] == current.as_str());
    stop_for_offline(&mut f)?;
    let v = verdict(&f, false, &[], "CRITICAL", "archive_failing")?;
    ensure!(v["cause"]["segment"] == current.as_str(), "{}", v["cause"]);
    Ok(())
}

/// A slow command, no failures: a backlog.
pub fn slow(built: &Path) -> Result<()> {
    let f = fixture("status-slow", built, |arch| {
        format!(
            "archive_mode = on\narchive_command = 'sleep 1 && cp %p {}/%f'\n",
            arch.display()
        )
    })?;
    gen(&f.cluster, 12)?;
    f.cluster.sql("checkpoint")?;
    let v = verdict(
        &f,
        true,
        &["--ready-count-warn", "4"],
        "WARNING",
        "archive_backlog",
    )?;
    ensure!(v["archiver"]["failed_count"] == 0);
    Ok(())
}

/// `archive_mode = on` with an empty command: no failures ever counted.
pub fn not_configured(built: &Path) -> Result<()> {
    let mut f = fixture("status-noconf", built, |_| {
        "archive_mode = on\narchive_command = ''\n".into()
    })?;
    gen(&f.cluster, 3)?;
    f.cluster.sql("checkpoint")?;
    let v = verdict(&f, true, &[], "CRITICAL", "archive_not_configured")?;
    ensure!(v["archiver"]["failed_count"] == 0);
    stop_for_offline(&mut f)?;
    verdict(&f, false, &[], "CRITICAL", "archive_not_configured")?;
    Ok(())
}

/// An inactive physical slot holds WAL beyond max_wal_size.
pub fn inactive_slot(built: &Path) -> Result<()> {
    let mut f = fixture("status-slot", built, copy_to)?;
    f.cluster
        .sql("select pg_create_physical_replication_slot('s1', true)")?;
    let names = gen(&f.cluster, 12)?;
    settle(&f.cluster, &names)?;
    let v = verdict(&f, true, &[], "WARNING", "replication_slot")?;
    ensure!(v["cause"]["slot"] == "s1");
    let slot = &v["slots"][0];
    ensure!(
        slot["name"] == "s1" && slot["active"] == false && slot["type"] == "physical",
        "{slot}"
    );
    ensure!(slot["retained_bytes"].as_u64() > Some(10 << 20), "{slot}");
    stop_for_offline(&mut f)?;
    let v = verdict(&f, false, &[], "WARNING", "replication_slot")?;
    ensure!(v["cause"]["slot"] == "s1");
    Ok(())
}

/// A logical slot whose restart_lsn is pinned by an open transaction.
pub fn logical_slot_pinned(built: &Path) -> Result<()> {
    let mut f = fixture("status-logical", built, |arch| {
        format!("wal_level = logical\n{}", copy_to(arch))
    })?;
    f.cluster
        .sql("select pg_create_logical_replication_slot('l1', 'test_decoding')")?;
    let mut open = OpenTransaction::start(&f.cluster)?;
    let names = gen(&f.cluster, 8)?;
    f.cluster
        .sql("select count(*) from pg_logical_slot_get_changes('l1', NULL, NULL)")?;
    settle(&f.cluster, &names)?;
    let quiet = ["--ready-count-warn", "100"];
    let v = verdict(&f, true, &quiet, "WARNING", "replication_slot");
    open.end();
    let v = v?;
    ensure!(v["cause"]["slot"] == "l1");
    let summary = v["cause"]["summary"].as_str().unwrap_or("");
    ensure!(
        summary.contains("pinned by an old transaction"),
        "{summary}"
    );
    // On disk the slot still holds its old restart_lsn.
    stop_for_offline(&mut f)?;
    let v = verdict(&f, false, &quiet, "WARNING", "replication_slot")?;
    ensure!(v["cause"]["slot"] == "l1" && v["slots"][0]["type"] == "logical");
    Ok(())
}

/// A slot invalidated by max_slot_wal_keep_size while archiving is stuck:
/// the archiver stays the binding cause.
pub fn invalidated_slot_archiver_binds(built: &Path) -> Result<()> {
    let mut f = fixture("status-invalid", built, |_| {
        "archive_mode = on\narchive_command = ''\nmax_slot_wal_keep_size = 3MB\n".into()
    })?;
    f.cluster
        .sql("select pg_create_physical_replication_slot('s1', true)")?;
    gen(&f.cluster, 10)?;
    f.cluster.sql("checkpoint")?;
    f.cluster.wait_for(
        "select wal_status from pg_replication_slots where slot_name = 's1'",
        "lost",
        Duration::from_secs(30),
    )?;
    for online in [true, false] {
        if !online {
            stop_for_offline(&mut f)?;
        }
        let v = verdict(&f, online, &[], "CRITICAL", "archive_not_configured")?;
        ensure!(v["slots"][0]["wal_status"] == "lost", "{}", v["slots"]);
    }
    Ok(())
}

/// A large wal_keep_size keeps WAL beyond max_wal_size.
pub fn wal_keep_size(built: &Path) -> Result<()> {
    let mut f = fixture("status-keep", built, |arch| {
        format!("{}wal_keep_size = 32MB\n", copy_to(arch))
    })?;
    let names = gen(&f.cluster, 40)?;
    settle(&f.cluster, &names)?;
    let quiet = ["--ready-count-warn", "100"];
    verdict(&f, true, &quiet, "WARNING", "wal_keep_size")?;
    stop_for_offline(&mut f)?;
    verdict(&f, false, &quiet, "WARNING", "wal_keep_size")?;
    Ok(())
}

/// A standby with `archive_mode = always` and a failing command: its own
/// `.ready` files hold its pg_wal.
pub fn standby_always(built: &Path) -> Result<()> {
    let f = fixture("status-standby", built, copy_to)?;
    let sb_dir = f.work.path.join("standby");
    std::fs::create_dir_all(&sb_dir)?;
    pg::chown_postgres(&sb_dir)?;
    let backup = f.work.owned_dir("standby-backup")?;
    pg::run(
        as_postgres(&f.cluster.bindir.join("pg_basebackup"))
            .arg("-h")
            .arg(&f.cluster.dir)
            .args(["-p", &f.cluster.port.to_string(), "-U", "postgres"])
            .args(["-X", "stream", "-R", "-c", "fast", "-D"])
            .arg(&backup),
    )?;
    let mut standby = Cluster::from_backup(
        &backup,
        &sb_dir,
        "archive_mode = always\narchive_command = 'false'\n",
    )?;
    standby.start()?;
    gen(&f.cluster, 5)?;
    standby.wait_failed(3, Duration::from_secs(60))?;
    f.cluster.sql("checkpoint")?;
    std::thread::sleep(Duration::from_millis(500));
    standby.sql("checkpoint")?;
    let mut sb = Fixture {
        work: Workdir::new("status-standby-run")?,
        walg: f.walg.clone(),
        cluster: standby,
        archive: f.archive.clone(),
    };
    let v = verdict(&sb, true, &[], "CRITICAL", "archive_failing")?;
    ensure!(v["server"]["in_recovery"] == true);
    stop_for_offline(&mut sb)?;
    let v = verdict(&sb, false, &[], "CRITICAL", "archive_failing")?;
    ensure!(v["server"]["in_recovery"] == true, "{}", v["server"]);
    // The primary itself is fine.
    let (_, v) = wal_status(&f, true, &["--ready-count-warn", "100"])?;
    if v["cause"]["kind"] != "none" {
        bail!("primary: {v}");
    }
    Ok(())
}

/// A psql session holding a transaction (with an xid) open until dropped.
struct OpenTransaction {
    child: Child,
}

impl OpenTransaction {
    fn start(c: &Cluster) -> Result<OpenTransaction> {
        let mut child = as_postgres(&c.bindir.join("psql"))
            .arg("-h")
            .arg(&c.dir)
            .args(["-p", &c.port.to_string(), "-U", "postgres", "-X", "-q"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start psql")?;
        {
            use std::io::Write;
            let stdin = child.stdin.as_mut().context("psql stdin")?;
            stdin.write_all(b"begin;\ninsert into t values (42);\n")?;
            stdin.flush()?;
        }
        c.wait_for(
            "select count(*) > 0 from pg_stat_activity where backend_xid is not null and pid <> pg_backend_pid()",
            "t",
            Duration::from_secs(30),
        )?;
        Ok(OpenTransaction { child })
    }

    fn end(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OpenTransaction {
    fn drop(&mut self) {
        self.end();
    }
}

/// `walg wal-status` for the demo: prints its text output.
pub fn demo_status(walg: &Path, config: &Path, cluster: &Cluster) -> Result<String> {
    let out = Command::new(walg)
        .arg("--config")
        .arg(config)
        .arg("wal-status")
        .arg("--pgdata")
        .arg(&cluster.data)
        .env("PGHOST", &cluster.dir)
        .env("PGPORT", cluster.port.to_string())
        .env("PGUSER", "postgres")
        .output()
        .context("run walg wal-status")?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
