//! The version matrix: walg against a real server of every PostgreSQL
//! major version from 13 to 18 (15 is the system's, the others installed by
//! [`crate::infra::pg_versions`]), one `version_<major>` scenario per
//! version, all the same function ([`matrix`]).
//!
//! Each backs a row of the support table in `docs/wal-status.md`: a cluster
//! with 1 MiB segments archives under a pgbench load through `walg
//! wal-push`; `walg check` passes against it; `walg wal-status` reads it
//! healthy, with a forgotten slot and with a failing `archive_command`,
//! online and offline; a base backup taken with the low-level API (which
//! every version has; `pg_basebackup` 15 refuses newer servers) is restored
//! through `walg wal-fetch` into a second cluster, which promotes to
//! timeline 2 and archives its history file.
//!
//! What it does not cover: the causes of a growing pg_wal one by one (that
//! is [`super::status`], on the system's server, and its false-alarm
//! scenarios on several versions).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::Value;

use super::fixture::{self, code, file_settings, say, status_code, stderr, Look, Set, Walg};
use super::Env;
use crate::infra::pg::{self, as_postgres, table_digest, Cluster, Workdir};
use crate::infra::pg_versions;

const ARCHIVE_WAIT: Duration = Duration::from_secs(120);

/// The forgotten slot of the slot case.
const SLOT: &str = "forgotten";

/// One version of the matrix, end to end (see the module doc).
pub fn matrix(env: &Env, major: u32) -> Result<()> {
    // Setup: a cluster of `major` archiving through walg to a file storage.
    let server = pg_versions::server(&env.repo, major)?;
    let work = Workdir::new(&format!("version-{major}"))?;
    let archive = work.owned_dir("archive")?;
    let state = work.owned_dir("state")?;
    let mut settings = file_settings(&archive);
    settings.set(
        "WALG_FAILOVER_STORAGES_CACHE_FILE",
        state.join("storage_status.json").display().to_string(),
    );
    let walg = Walg::new(&work, &env.walg, "walg.json", &settings)?;
    let mut source = Cluster::init_on(
        &server,
        &work.path.join("source"),
        &format!("{}archive_timeout = 0\n", walg.archiving()),
        &["--wal-segsize=1"],
    )?;
    source.start()?;
    let version = source.sql("show server_version")?;
    ensure!(
        version.starts_with(&format!("{major}.")),
        "asked for PostgreSQL {major}, the server is {version}"
    );
    say(&format!("PostgreSQL {version}, 1 MiB segments"));

    // Archive under load, a base backup taken meanwhile.
    source.pgbench(&["-i", "-q", "-s", "1"])?;
    let load = source
        .pgbench_command(&["-n", "-c", "2", "-T", "3"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("start pgbench")?;
    let backup = work.path.join("backup");
    let backed_up = source.low_level_backup(&backup);
    let load = load.wait_with_output()?;
    backed_up.context("base backup with the low-level API")?;
    ensure!(
        load.status.success(),
        "pgbench against {version}: {}",
        stderr(&load)
    );
    let accounts = table_digest(&source, "pgbench_accounts")?;
    let history = table_digest(&source, "pgbench_history")?;
    let last = source.switch_and_wait_archived(ARCHIVE_WAIT)?;
    ensure!(
        source.failed_count()? == 0,
        "archiving failed:\n{}",
        pg::tail(&source.log_text(), 30)
    );
    say(&format!(
        "{} segments archived under pgbench, up to {last}; base backup taken",
        source.archived_count()?
    ));

    // walg check: config, storage, and the server's archiving settings.
    let v = check(&walg, &source)?;
    ensure!(v["status"] == "ok", "walg check: {v:#}");
    let pg_check = v["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "postgresql"))
        .and_then(|c| c["message"].as_str())
        .unwrap_or("");
    ensure!(
        pg_check.contains(&format!("PostgreSQL {major}.")),
        "walg check's postgresql line: {pg_check:?}"
    );

    let config = walg.config.display().to_string();
    let with_archive = ["--config", config.as_str()];
    let status = |c: &Cluster, look, extra: &[&str], status, kind| {
        verdict(&walg, c, &work.path, look, extra, status, kind)
    };

    // wal-status, healthy: OK over SQL alone, with the files, and offline.
    for look in [Look::Sql, Look::Online] {
        status(&source, look, &with_archive, "OK", "none")?;
    }
    source.stop()?;
    status(&source, Look::Offline, &with_archive, "OK", "none")?;
    source.start()?;

    // wal-status, a forgotten physical slot holding WAL.
    source.sql(&format!(
        "select pg_create_physical_replication_slot('{SLOT}', true)"
    ))?;
    let names = segments(&source, 8)?;
    source.wait_archived(names.last().context("no segment")?, ARCHIVE_WAIT)?;
    source.sql("checkpoint")?;
    let slot_warn = ["--slot-retained-warn", "4MB"];
    for look in [Look::Online, Look::Offline] {
        if look == Look::Offline {
            source.stop()?;
        }
        let v = status(&source, look, &slot_warn, "WARNING", "replication_slot")?;
        ensure!(v["cause"]["slot"] == SLOT, "{}", v["cause"]);
    }
    source.start()?;
    source.sql(&format!("select pg_drop_replication_slot('{SLOT}')"))?;

    // wal-status, a failing archive_command (set as a DBA would).
    source.sql("alter system set archive_command = 'false'")?;
    source.sql("select pg_reload_conf()")?;
    let failed_before = source.failed_count()?;
    segments(&source, 4)?;
    source.wait_failed(failed_before + 3, Duration::from_secs(60))?;
    source.sql("checkpoint")?;
    // The archiver may have archived a segment with the old command before
    // it reloaded: the stuck one is the one PostgreSQL says failed.
    let stuck = source.sql("select last_failed_wal from pg_stat_archiver")?;
    for look in [Look::Online, Look::Offline] {
        if look == Look::Offline {
            source.stop()?;
        }
        let v = status(&source, look, &[], "CRITICAL", "archive_failing")?;
        ensure!(
            v["cause"]["segment"] == stuck.as_str(),
            "the stuck segment is {stuck}, the cause names {}",
            v["cause"]
        );
    }

    // Restore: the backup recovers through walg wal-fetch, promotes to
    // timeline 2 and archives its history file through walg wal-push.
    let mut restored = Cluster::for_recovery_on(
        &server,
        &backup,
        &work.path.join("restored"),
        &format!("{}{}", walg.restoring(), walg.archiving()),
    )?;
    restored.start()?;
    restored
        .wait_recovered(Duration::from_secs(180))
        .context("wait for the restored cluster to recover and promote")?;
    let log = restored.log_text();
    ensure!(
        log.contains(&format!("restored log file \"{last}\" from archive")),
        "recovery did not restore {last} through walg; log tail:\n{}",
        pg::tail(&log, 30)
    );
    ensure!(
        table_digest(&restored, "pgbench_accounts")? == accounts
            && table_digest(&restored, "pgbench_history")? == history,
        "the restored pgbench tables differ from the source's"
    );
    let tli = restored.sql("select substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)")?;
    ensure!(tli == "00000002", "restored cluster on timeline {tli}");
    restored.switch_and_wait_archived(ARCHIVE_WAIT)?;
    let out = walg.fetch("00000002.history", &work.path.join("history"))?;
    ensure!(
        out.status.success(),
        "00000002.history was not archived: {}",
        stderr(&out)
    );
    ensure!(
        restored.failed_count()? == 0,
        "the restored cluster failed to archive"
    );
    say("restored through wal-fetch: same pgbench data; timeline 2's history archived");
    restored.stop()?;
    Ok(())
}

/// Writes a little and switches segments `n` times; returns the names of
/// the finished segments.
fn segments(c: &Cluster, n: usize) -> Result<Vec<String>> {
    c.sql("create table if not exists filler (x int)")?;
    let mut names = Vec::new();
    for _ in 0..n {
        c.sql("insert into filler select generate_series(1, 100)")?;
        names.push(c.sql("select pg_walfile_name(pg_switch_wal())")?);
    }
    Ok(names)
}

/// `walg check --json` as the server's user, connected to `c`.
fn check(walg: &Walg, c: &Cluster) -> Result<Value> {
    let out = as_postgres(&walg.bin)
        .arg("--config")
        .arg(&walg.config)
        .args(["check", "--json"])
        .env("PGHOST", &c.dir)
        .env("PGPORT", c.port.to_string())
        .env("PGUSER", "postgres")
        .env("PGDATABASE", "postgres")
        .output()
        .context("run walg check")?;
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "walg check --json printed no JSON (exit {}): {}",
            code(&out),
            fixture::all_output(&out)
        )
    })
}

/// Runs `walg wal-status --json` and asserts the verdict: status, its exit
/// code, the cause's kind and the mode. Returns the report for the
/// scenario's own assertions.
fn verdict(
    walg: &Walg,
    c: &Cluster,
    home: &Path,
    look: Look,
    extra: &[&str],
    status: &str,
    kind: &str,
) -> Result<Value> {
    let (code, v) = fixture::wal_status(&walg.bin, c, home, look, extra)?;
    ensure!(
        v["status"] == status
            && v["cause"]["kind"] == kind
            && v["mode"] == look.mode()
            && code == status_code(status),
        "PostgreSQL {}: expected {status}/{kind}/{} (exit {}), got {}/{}/{} (exit {code}):\n{v:#}",
        c.server.major,
        look.mode(),
        status_code(status),
        v["status"],
        v["cause"]["kind"],
        v["mode"],
    );
    Ok(v)
}
