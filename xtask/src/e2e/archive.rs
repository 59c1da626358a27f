//! End-to-end scenarios of the archive commands (`wal-show`, `wal-verify`,
//! `wal-repair`, `wal-prune`) with a real PostgreSQL (1 MiB segments), the
//! real `walg` binary, the S3 emulator as the primary storage and a file
//! storage as the failover.
//!
//! - `archive_health_verify_repair`: an S3 outage (a refusing proxy) sends
//!   segments to the failover; `wal-verify` says WARNING and names exactly
//!   those; a segment removed from the only storage that held it makes it
//!   FAILURE naming that segment; `wal-repair` (dry run, then `--confirm`)
//!   copies them home and `wal-verify` says OK; a cluster restored from the
//!   backup promotes to timeline 2 and `wal-verify` follows it.
//! - `archive_health_prune`: three `pg_basebackup`s with WAL between them (written
//!   to both storages), then `wal-prune --retain-backups 2 --confirm`
//!   deletes exactly the files before the second-newest backup's start on
//!   both storages; that backup restores to the same data through
//!   `wal-fetch`, the oldest no longer starts.
//!
//! The expectations are computed from the storages' own listings (S3 asked
//! directly, the failover read with `read_dir`), not from walg's output.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::Value;

use super::fixture::{
    archiving_cluster, code, emulator_settings, file_failover, recovered_cluster, s3_keys,
    s3_proxy, say, stdout, stored_names, unique_path, Set, Settings, Walg,
};
use crate::infra::emulators::{Emulators, Kind};
use crate::infra::pg::{self, table_digest, Cluster, Workdir};
use crate::infra::proxy::Mode;

const ARCHIVE_WAIT: Duration = Duration::from_secs(90);
const CACHE_LIFETIME_SECS: u64 = 2;

/// Primary S3 at `endpoint` (the emulator or a proxy in front of it),
/// failover `backup` on files, a private status cache.
fn settings(
    emus: &Emulators,
    endpoint: Option<String>,
    s3_path: &str,
    backup: &Path,
    cache: &Path,
) -> Result<Settings> {
    let mut s = emulator_settings(emus, Kind::S3, s3_path)?;
    if let Some(ep) = endpoint {
        s.set("AWS_ENDPOINT", ep);
    }
    s.set("WALG_STORAGE_TIMEOUT", "2s")
        .set("WALG_STORAGE_RETRIES", "0")
        .set(
            "WALG_FAILOVER_STORAGES_CACHE_LIFETIME",
            format!("{CACHE_LIFETIME_SECS}s"),
        );
    file_failover(&mut s, backup, cache);
    Ok(s)
}

/// Runs walg directly with a status cache of its own (the server's file
/// belongs to the `postgres` user).
fn walg(w: &Walg, work: &Workdir, args: &[&str]) -> Result<Output> {
    walg_env(w, work, args, &[])
}

fn walg_env(w: &Walg, work: &Workdir, args: &[&str], env: &[(&str, String)]) -> Result<Output> {
    let out = std::process::Command::new(&w.bin)
        .arg("--config")
        .arg(&w.config)
        .args(args)
        .env(
            "WALG_FAILOVER_STORAGES_CACHE_FILE",
            work.path.join("cli-cache.json"),
        )
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()?;
    Ok(out)
}

/// `wal-verify --connect --json` against `c` through libpq variables.
fn verify_connected(w: &Walg, work: &Workdir, c: &Cluster) -> Result<Value> {
    let env = [
        ("PGHOST", c.dir.display().to_string()),
        ("PGPORT", c.port.to_string()),
        ("PGUSER", "postgres".to_string()),
        ("PGDATABASE", "postgres".to_string()),
    ];
    let args = ["wal-verify", "--connect", "--json"];
    let o = walg_env(w, work, &args, &env)?;
    ensure!(code(&o) == 0, "expected exit 0: {}", describe(&args, &o));
    serde_json::from_slice(&o.stdout).with_context(|| describe(&args, &o))
}

fn describe(args: &[&str], o: &Output) -> String {
    format!(
        "walg {} exited {}\nstdout:\n{}\nstderr:\n{}",
        args.join(" "),
        code(o),
        pg::tail(&stdout(o), 40),
        pg::tail(&String::from_utf8_lossy(&o.stderr), 20)
    )
}

/// Runs walg expecting exit code `want` and JSON on stdout.
fn walg_json(w: &Walg, work: &Workdir, args: &[&str], want: i32) -> Result<Value> {
    let o = walg(w, work, args)?;
    ensure!(
        code(&o) == want,
        "expected exit {want}: {}",
        describe(args, &o)
    );
    serde_json::from_slice(&o.stdout).with_context(|| describe(args, &o))
}

/// File names under `wal_005/` on S3.
fn s3_names(emus: &Emulators, s3_path: &str) -> Result<BTreeSet<String>> {
    Ok(s3_keys(emus, &format!("{s3_path}/wal_005/"))?
        .iter()
        .filter_map(|k| k.rsplit('/').next().map(str::to_string))
        .collect())
}

fn segment_of(file: &str) -> Option<&str> {
    let stem = file.get(..24)?;
    stem.bytes().all(|b| b.is_ascii_hexdigit()).then_some(stem)
}

/// Plain segment names (`<24 hex>.lz4`).
fn segments(files: &BTreeSet<String>) -> BTreeSet<String> {
    files
        .iter()
        .filter_map(|f| {
            let s = f.strip_suffix(".lz4")?;
            (s.len() == 24 && segment_of(s).is_some()).then(|| s.to_string())
        })
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The cluster whose WAL the archive holds: 1 MiB segments, archiving
/// through `w`, with the table [`write_rows`] fills.
fn source_cluster(work: &Workdir, w: &Walg) -> Result<Cluster> {
    let c = archiving_cluster(
        work,
        w,
        "source",
        "archive_timeout = 0\n",
        &["--wal-segsize=1"],
    )?;
    c.sql("create table archive_data (id bigserial primary key, phase text, payload text)")?;
    Ok(c)
}

/// Writes rows tagged `phase`, switches WAL and waits for the finished
/// segment to be archived; returns its name.
fn write_rows(c: &Cluster, phase: &str) -> Result<String> {
    c.sql(&format!(
        "insert into archive_data (phase, payload) select '{phase}', md5(g::text) from generate_series(1, 300) g"
    ))?;
    c.switch_and_wait_archived(ARCHIVE_WAIT)
        .with_context(|| format!("archive a segment during {phase}"))
}

/// Restores `backup` into `dir` through `walg wal-fetch` and waits for the
/// end of recovery.
fn restore(w: &Walg, backup: &Path, dir: &Path) -> Result<Cluster> {
    recovered_cluster(w, backup, dir, "", Duration::from_secs(120))
        .context("wait for recovery to finish")
}

pub fn verify_repair(built: &Path, emus: &Emulators) -> Result<()> {
    let work = Workdir::new("archive-verify")?;
    let proxy = s3_proxy(emus)?;
    let backup_root = work.owned_dir("backup-storage")?;
    let state = work.owned_dir("state")?;
    let s3_path = unique_path("archive-verify");
    let w = Walg::new(
        &work,
        built,
        "walg.json",
        &settings(
            emus,
            Some(proxy.url()),
            &s3_path,
            &backup_root,
            &state.join("cache.json"),
        )?,
    )?;
    let mut source = source_cluster(&work, &w)?;
    write_rows(&source, "before")?;
    let backup = work.path.join("basebackup");
    source.basebackup(&backup)?;
    write_rows(&source, "after backup")?;

    // The outage: S3 refuses connections, walg writes to the failover.
    proxy.set_mode(Mode::Refuse)?;
    for i in 0..3 {
        write_rows(&source, &format!("outage {i}"))?;
    }
    proxy.set_mode(Mode::PassThrough)?;
    std::thread::sleep(Duration::from_secs(CACHE_LIFETIME_SECS + 1));
    write_rows(&source, "after outage")?;
    let last = write_rows(&source, "after outage 2")?;
    ensure!(
        s3_names(emus, &s3_path)?
            .iter()
            .any(|f| f.starts_with(&last)),
        "{last} did not reach S3 after the outage"
    );
    let on_s3 = segments(&s3_names(emus, &s3_path)?);
    let on_file = segments(&stored_names(&backup_root));
    let outage: Vec<String> = on_file.difference(&on_s3).cloned().collect();
    ensure!(
        !outage.is_empty(),
        "no segment went to the failover during the outage"
    );
    say(&format!(
        "outage sent {} segment(s) to the failover: {}",
        outage.len(),
        outage.join(", ")
    ));

    // WARNING naming exactly those.
    let v = walg_json(&w, &work, &["wal-verify", "--json"], 1)?;
    ensure!(v["status"] == "WARNING", "wal-verify: {v:#}");
    ensure!(v["union"]["status"] == "OK", "wal-verify: {v:#}");
    ensure!(
        strings(&v["storages"]["default"]["missing"]) == outage,
        "wal-verify names {:?} as missing from the primary, the failover alone holds {outage:?}",
        v["storages"]["default"]["missing"]
    );
    ensure!(v["range"]["timeline"] == 1, "wal-verify: {v:#}");
    let text = stdout(&walg(&w, &work, &["wal-verify"])?);
    ensure!(
        text.starts_with("WARNING:") && text.contains(&outage[0]),
        "wal-verify text output:\n{text}"
    );
    say(&format!(
        "wal-verify: {}",
        text.lines().next().unwrap_or("")
    ));

    // A segment gone from the only storage that held it: FAILURE naming it.
    let victim = &outage[0];
    let victim_file = backup_root.join("wal_005").join(format!("{victim}.lz4"));
    let aside = work.path.join("aside.lz4");
    fs::rename(&victim_file, &aside)?;
    let v = walg_json(&w, &work, &["wal-verify", "--json"], 2)?;
    ensure!(
        v["status"] == "FAILURE" && strings(&v["union"]["missing"]) == [victim.clone()],
        "after removing {victim} everywhere, wal-verify: {v:#}"
    );
    ensure!(
        v["summary"]
            .as_str()
            .is_some_and(|s| s.contains(victim.as_str())),
        "summary does not name {victim}: {v:#}"
    );
    say(&format!(
        "{victim} removed everywhere: wal-verify FAILURE naming it"
    ));
    fs::rename(&aside, &victim_file)?;

    // wal-repair: a dry run changes nothing, --confirm copies them home.
    let dry = walg_json(&w, &work, &["wal-repair", "--json"], 0)?;
    let planned: Vec<String> = dry["copies"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    ensure!(
        planned == outage,
        "wal-repair plans {planned:?}, expected {outage:?}"
    );
    ensure!(
        segments(&s3_names(emus, &s3_path)?) == on_s3,
        "the dry run changed S3"
    );
    let done = walg_json(&w, &work, &["wal-repair", "--confirm", "--json"], 0)?;
    ensure!(done["copied"] == outage.len(), "wal-repair: {done:#}");
    let now_s3 = segments(&s3_names(emus, &s3_path)?);
    for s in &outage {
        ensure!(now_s3.contains(s), "{s} is not on S3 after wal-repair");
        let a = fs::read(backup_root.join("wal_005").join(format!("{s}.lz4")))?;
        ensure!(!a.is_empty(), "{s} is empty on the failover");
    }
    ensure!(
        segments(&stored_names(&backup_root)).is_superset(&outage.iter().cloned().collect()),
        "wal-repair removed something from the failover"
    );
    let v = walg_json(&w, &work, &["wal-verify", "--json"], 0)?;
    ensure!(v["status"] == "OK", "after wal-repair: {v:#}");
    say(&format!(
        "wal-repair --confirm copied {} segment(s); wal-verify OK",
        outage.len()
    ));
    let v = verify_connected(&w, &work, &source)?;
    ensure!(
        v["status"] == "OK"
            && v["range"]["timeline"] == 1
            && v["range"]["to_source"]
                .as_str()
                .is_some_and(|s| s.contains("server")),
        "wal-verify --connect: {v:#}"
    );
    say(&format!(
        "wal-verify --connect: OK up to {} ({})",
        v["range"]["to"], v["range"]["to_source"]
    ));

    // Promotion: a cluster restored from the backup starts timeline 2.
    let digest = table_digest(&source, "archive_data")?;
    source.stop()?;
    let mut promoted = recovered_cluster(
        &w,
        &backup,
        &work.path.join("promoted"),
        &w.archiving(),
        Duration::from_secs(120),
    )?;
    ensure!(
        table_digest(&promoted, "archive_data")? == digest,
        "the promoted cluster's data differs from the source's"
    );
    let tli = promoted.sql("select timeline_id from pg_control_checkpoint()")?;
    promoted.sql("checkpoint")?;
    write_rows(&promoted, "timeline 2")?;
    let t2_last = write_rows(&promoted, "timeline 2 again")?;
    ensure!(
        t2_last.starts_with("00000002"),
        "promoted to {t2_last}, tli {tli}"
    );
    let v = verify_connected(&w, &work, &promoted)?;
    ensure!(
        v["status"] == "OK" && v["range"]["timeline"] == 2,
        "wal-verify --connect on timeline 2: {v:#}"
    );
    promoted.stop()?;
    let v = walg_json(&w, &work, &["wal-verify", "--json"], 0)?;
    ensure!(
        v["status"] == "OK" && v["range"]["timeline"] == 2 && v["range"]["to"] == t2_last.as_str(),
        "after the promotion: {v:#}"
    );
    let followed: Vec<u64> = v["timelines"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s["timeline"].as_u64()).collect())
        .unwrap_or_default();
    ensure!(
        followed == [1, 2],
        "wal-verify followed {followed:?}: {v:#}"
    );
    let show = walg_json(&w, &work, &["wal-show", "--json"], 0)?;
    let t2 = show["timelines"]
        .as_array()
        .and_then(|a| a.iter().find(|t| t["timeline"] == 2))
        .context("wal-show has no timeline 2")?;
    ensure!(
        t2["parent"] == 1 && t2["history"] == true && t2["last_segment"] == t2_last.as_str(),
        "wal-show: {show:#}"
    );
    say(&format!(
        "promoted to timeline 2; wal-verify OK through {t2_last}, following timelines 1 and 2"
    ));
    Ok(())
}

pub fn prune(built: &Path, emus: &Emulators) -> Result<()> {
    let work = Workdir::new("archive-prune")?;
    let backup_root = work.owned_dir("backup-storage")?;
    let state = work.owned_dir("state")?;
    let s3_path = unique_path("archive-prune");
    let mut s = settings(
        emus,
        None,
        &s3_path,
        &backup_root,
        &state.join("cache.json"),
    )?;
    s.set("WALG_FAILOVER_STORAGES_WRITE_POLICY", "all");
    let w = Walg::new(&work, built, "walg.json", &s)?;
    let mut source = source_cluster(&work, &w)?;
    let mut backups = Vec::new();
    for i in 1..=3 {
        write_rows(&source, &format!("before backup {i}"))?;
        write_rows(&source, &format!("before backup {i}, again"))?;
        let dir = work.path.join(format!("basebackup{i}"));
        source.basebackup(&dir)?;
        backups.push(dir);
    }
    write_rows(&source, "after the backups")?;
    let digest = table_digest(&source, "archive_data")?;
    source.stop()?;

    let before_s3 = s3_names(emus, &s3_path)?;
    let before_file = stored_names(&backup_root);
    let mut backup_files: Vec<&String> =
        before_s3.iter().filter(|f| f.contains(".backup")).collect();
    backup_files.sort();
    ensure!(
        backup_files.len() == 3,
        "expected 3 .backup files on S3: {backup_files:?}"
    );
    let boundary = &backup_files[1][..24];
    let oldest_start = &backup_files[0][..24];
    let doomed = |names: &BTreeSet<String>| -> BTreeSet<String> {
        names
            .iter()
            .filter(|f| !f.contains(".history"))
            .filter(|f| segment_of(f).is_some_and(|s| s < boundary))
            .cloned()
            .collect()
    };
    let (gone_s3, gone_file) = (doomed(&before_s3), doomed(&before_file));
    ensure!(
        !gone_s3.is_empty() && !gone_file.is_empty(),
        "nothing before {boundary} to prune"
    );

    let dry = walg_json(
        &w,
        &work,
        &["wal-prune", "--retain-backups", "2", "--json"],
        0,
    )?;
    ensure!(
        dry["boundary"] == boundary && dry["objects"] == gone_s3.len() + gone_file.len(),
        "wal-prune dry run: {dry:#}\nexpected {} + {} objects before {boundary}",
        gone_s3.len(),
        gone_file.len()
    );
    ensure!(
        s3_names(emus, &s3_path)? == before_s3 && stored_names(&backup_root) == before_file,
        "the dry run deleted something"
    );
    let text = stdout(&walg(&w, &work, &["wal-prune", "--retain-backups", "2"])?);
    say(&format!("wal-prune: {}", text.lines().next().unwrap_or("")));

    let done = walg_json(
        &w,
        &work,
        &["wal-prune", "--retain-backups", "2", "--confirm", "--json"],
        0,
    )?;
    ensure!(done["deleted"] == done["objects"], "wal-prune: {done:#}");
    let after_s3 = s3_names(emus, &s3_path)?;
    let after_file = stored_names(&backup_root);
    let want_s3: BTreeSet<String> = before_s3.difference(&gone_s3).cloned().collect();
    let want_file: BTreeSet<String> = before_file.difference(&gone_file).cloned().collect();
    ensure!(
        after_s3 == want_s3,
        "S3 after wal-prune differs: deleted too much {:?}, left {:?}",
        want_s3.difference(&after_s3).collect::<Vec<_>>(),
        after_s3.difference(&want_s3).collect::<Vec<_>>()
    );
    ensure!(
        after_file == want_file,
        "the failover after wal-prune differs: deleted too much {:?}, left {:?}",
        want_file.difference(&after_file).collect::<Vec<_>>(),
        after_file.difference(&want_file).collect::<Vec<_>>()
    );
    say(&format!(
        "wal-prune --retain-backups 2 --confirm deleted {} object(s) before {boundary} on S3 and {} on the failover",
        gone_s3.len(),
        gone_file.len()
    ));
    let v = walg_json(&w, &work, &["wal-verify", "--json"], 0)?;
    ensure!(
        v["range"]["from"] == boundary,
        "wal-verify after pruning starts at {} (expected {boundary}): {v:#}",
        v["range"]["from"]
    );

    // The second-newest backup restores to the same data.
    let mut restored = restore(&w, &backups[1], &work.path.join("restored2"))?;
    let got = table_digest(&restored, "archive_data")?;
    ensure!(
        got == digest,
        "backup 2 restored to {got}, the source had {digest}"
    );
    restored.stop()?;
    say("backup 2 restored through wal-fetch: same data");

    // The oldest one cannot start: its WAL is gone.
    let mut old = Cluster::for_recovery(&backups[0], &work.path.join("restored1"), &w.restoring())?;
    let started = old.start();
    let up = started.is_ok() && old.wait_recovered(Duration::from_secs(15)).is_ok();
    let log = old.log_text();
    ensure!(!up, "backup 1 still restored after its WAL was pruned");
    ensure!(
        log.contains(oldest_start),
        "the failed restore of backup 1 does not mention its start segment {oldest_start}:\n{}",
        pg::tail(&log, 20)
    );
    say(&format!(
        "backup 1 no longer restores ({oldest_start} is gone)"
    ));
    Ok(())
}
