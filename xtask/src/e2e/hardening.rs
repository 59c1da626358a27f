//! End-to-end hardening scenarios: what a DBA eventually hits and walg must
//! survive, each through the real `walg` binary.
//!
//! - `unopenable_primary`: a primary file storage whose directory cannot be
//!   created (its path runs through a regular file) with a live failover:
//!   every push and fetch succeeds through the failover; alone, the same
//!   primary fails as before. The commands a person pipes into `head` do
//!   not panic when stdout is a closed pipe.
//! - `archive_identity`: two real clusters, one archive: the second is
//!   refused, a foreign segment fetched warns, adoption lets it through.
//! - `sigkill_archiving`: a third of the pushes SIGKILLed under pgbench,
//!   through failover storages: nothing lost, no temp file, same data back.
//! - `status_cache_processes`: 24 concurrent processes against a dead
//!   primary: all succeed, the cache file always valid, probes bounded.
//! - `no_hardlink_filesystem`: create-if-absent on a vfat image.
//!
//! The leftovers of killed writers are cleaned by `walg st clean`, whose
//! scenario is with the other `st` commands in [`super::storage`].

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::json;

use super::fixture::{
    archiving_cluster, code, failover_to_files, file_failover, file_settings, files_under,
    is_segment, ready_backlog, recovered_cluster, say, stderr, stdout, stored_names, FileFailover,
    Set, Settings, Walg,
};
use crate::infra::pg::{self, Cluster, Workdir};

/// A primary that cannot be opened counts as dead: push and fetch go to the
/// failover, the status cache records it dead, and a fetch of a segment no
/// storage has is an error (1), never "not found" (74), because the primary
/// could not be asked. Without a failover the error is the open error.
pub fn unopenable_primary(built: &Path) -> Result<()> {
    let work = Workdir::new("unopenable")?;
    let blocker = work.path.join("blocker");
    fs::write(&blocker, "a regular file where a directory should be\n")?;
    let primary = blocker.join("archive");
    let FileFailover {
        walg,
        backup,
        cache,
        ..
    } = FileFailover::new(&work, built, &primary)?;
    let (data, names) = ready_backlog(&work, 3)?;

    for n in &names {
        let out = walg.push(&data.join("pg_wal").join(n))?;
        ensure!(
            out.status.success(),
            "push {n} with an unopenable primary and a live failover: exit {}: {}",
            code(&out),
            stderr(&out)
        );
        ensure!(
            backup.join("wal_005").join(format!("{n}.lz4")).is_file(),
            "{n} is not on the failover storage: {}",
            stderr(&out)
        );
    }
    let status = fs::read_to_string(&cache)?;
    ensure!(
        status.contains("\"default\"") && status.contains("could not be opened"),
        "the status cache should record the primary as dead because it could not be opened: {status}"
    );
    say(&format!(
        "{} segments pushed to the failover; primary recorded dead in the status cache",
        names.len()
    ));

    let dest = work.path.join("fetched");
    for n in &names {
        let out = walg.fetch(n, &dest)?;
        ensure!(
            out.status.success(),
            "fetch {n} with an unopenable primary: exit {}: {}",
            code(&out),
            stderr(&out)
        );
        ensure!(
            fs::read(&dest)? == fs::read(data.join("pg_wal").join(n))?,
            "{n}: fetched bytes differ"
        );
    }
    let out = walg.fetch("0000000100000000000000F0", &dest)?;
    ensure!(
        code(&out) == 1 && stderr(&out).contains("could not be opened"),
        "a segment no storage has, with the primary unopenable, must be exit 1 (not 74) naming the open failure; got {}: {}",
        code(&out),
        stderr(&out)
    );
    let out = walg.run(&["st", "status"])?;
    ensure!(
        out.status.success() && stdout(&out).contains("dead"),
        "st status with an unopenable primary: {} {}",
        stdout(&out),
        stderr(&out)
    );
    say("fetches served by the failover; a missing segment is exit 1, not 74");

    // `walg ... | head`: a reader that went away is not a crash. Rust
    // ignores SIGPIPE, so a println! to a closed pipe panics (exit 101).
    let pgdata = data.display().to_string();
    for args in [
        vec!["st", "status"],
        vec!["st", "clean", "--json"],
        vec!["wal-show"],
        vec!["wal-verify", "--json"],
        vec!["wal-status", "--offline", "--pgdata", &pgdata],
        vec!["wal-status", "--offline", "--json", "--pgdata", &pgdata],
    ] {
        let out = walg.run_closed_stdout(&args)?;
        ensure!(
            code(&out) != 101 && !stderr(&out).contains("panicked"),
            "walg {} with stdout a closed pipe crashed: exit {}: {}",
            args.join(" "),
            code(&out),
            stderr(&out)
        );
    }
    say("st status, st clean, wal-show, wal-verify, wal-status into a closed pipe: no panic");

    // Alone, the same storage fails as it always did.
    let alone = Walg::new(&work, built, "alone.json", &file_settings(&primary))?;
    let out = alone.push(&data.join("pg_wal").join(&names[0]))?;
    let msg = stderr(&out);
    ensure!(
        code(&out) == 1
            && msg.contains("open storage \"default\"")
            && msg.contains("Not a directory"),
        "a lone unopenable storage: expected exit 1 naming it: {msg}"
    );
    say("without a failover: exit 1, open storage \"default\" ... Not a directory");
    Ok(())
}

/// `pg_control_system()`'s system identifier of a running cluster.
fn system_id(c: &Cluster) -> Result<u64> {
    c.sql("select system_identifier from pg_control_system()")?
        .parse()
        .context("parse the system identifier")
}

/// Segment names in `root/wal_005`, whatever the compression.
fn stored_segments(root: &Path) -> BTreeSet<String> {
    stored_names(root)
        .iter()
        .filter_map(|n| n.split('.').next().filter(|stem| is_segment(stem)))
        .map(str::to_string)
        .collect()
}

/// Temp files (`.walg-tmp-` in the name) anywhere under `root`.
fn temp_files(root: &Path) -> Vec<PathBuf> {
    files_under(root)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().contains(".walg-tmp-"))
        })
        .collect()
}

/// Two real clusters, one archive. The second, initialised separately and
/// moved far ahead with `pg_resetwal -l` so its names cannot collide,
/// is refused (nothing of it stored, the error names both identifiers and
/// the archive); `wal-fetch` warns about a foreign segment; `st identity
/// --adopt ID` is a dry run, `--confirm` hands the archive to the new
/// cluster, which then archives.
pub fn archive_identity(built: &Path) -> Result<()> {
    let work = Workdir::new("identity")?;
    let archive = work.owned_dir("archive")?;
    let mut s = file_settings(&archive);
    s.set(
        "WALG_FAILOVER_STORAGES_CACHE_FILE",
        work.path.join("state/status.json").display().to_string(),
    )
    .set("WALG_UPLOAD_CONCURRENCY", 1);
    let walg = Walg::new(&work, built, "walg.json", &s)?;
    pg::chown_postgres(&work.owned_dir("state")?)?;

    let mut a = archiving_cluster(&work, &walg, "a", "", &["--wal-segsize=1"])?;
    let a_id = system_id(&a)?;
    a.sql("create table t (x text); insert into t select md5(g::text) from generate_series(1, 1000) g")?;
    let a_seg = a.switch_and_wait_archived(Duration::from_secs(60))?;
    a.stop()?;
    let ident = fs::read_to_string(archive.join("walg_archive_identity.json"))
        .context("the first push must write the archive identity")?;
    ensure!(
        ident.contains(&format!("\"{a_id}\"")),
        "the identity should name cluster {a_id}: {ident}"
    );
    say(&format!(
        "cluster A ({a_id}) archived {a_seg} and claimed the archive"
    ));

    let mut b = Cluster::init(
        &work.path.join("b"),
        &walg.archiving(),
        &["--wal-segsize=1"],
    )?;
    pg::run(
        pg::as_postgres(&b.bindir.join("pg_resetwal"))
            .args(["-l", "000000010000001000000001", "-D"])
            .arg(&b.data),
    )?;
    b.start()?;
    let b_id = system_id(&b)?;
    ensure!(
        a_id != b_id,
        "two initdb runs gave the same system identifier"
    );
    b.sql("create table t (x text); insert into t select md5(g::text) from generate_series(1, 1000) g")?;
    let b_seg = b.sql("select pg_walfile_name(pg_switch_wal())")?;
    b.wait_failed(1, Duration::from_secs(30))?;
    let log = b.log_text();
    ensure!(
        log.contains(&a_id.to_string())
            && log.contains(&b_id.to_string())
            && log.contains(&archive.display().to_string())
            && log.contains("refus"),
        "the refusal should name both identifiers ({a_id}, {b_id}) and the archive; log tail:\n{}",
        pg::tail(&log, 20)
    );
    ensure!(
        stored_segments(&archive)
            .iter()
            .all(|n| !n.starts_with("0000000100000010")),
        "a segment of cluster B was stored: {:?}",
        stored_segments(&archive)
    );
    let line = log
        .lines()
        .find(|l| l.contains("refus"))
        .unwrap_or_default()
        .to_string();
    say(&format!("cluster B ({b_id}) refused: {}", line.trim()));

    // wal-fetch of a foreign segment planted in the archive warns.
    let plant = work.path.join("plant");
    let mut p = s.clone();
    p.set("WALG_FILE_PREFIX", plant.display().to_string());
    let planter = Walg::new(&work, built, "plant.json", &p)?;
    let out = planter.push(&b.data.join("pg_wal").join(&b_seg))?;
    ensure!(
        out.status.success(),
        "push to a scratch archive: {}",
        stderr(&out)
    );
    let key = format!("{b_seg}.lz4");
    fs::copy(
        plant.join("wal_005").join(&key),
        archive.join("wal_005").join(&key),
    )?;
    let dest = work.path.join("fetched");
    let out = walg.fetch(&b_seg, &dest)?;
    ensure!(
        out.status.success()
            && stderr(&out).contains("WARN")
            && stderr(&out).contains(&b_id.to_string()),
        "fetching a foreign segment should succeed with a warning naming {b_id}: {}",
        stderr(&out)
    );
    fs::remove_file(archive.join("wal_005").join(&key))?;
    say("wal-fetch of a planted foreign segment: exit 0 with a warning");

    // The documented way through for a deliberate new cluster.
    let id = b_id.to_string();
    let out = walg.run(&["st", "identity", "--adopt", &id])?;
    ensure!(
        out.status.success() && stdout(&out).contains("would adopt"),
        "dry run: {} {}",
        stdout(&out),
        stderr(&out)
    );
    ensure!(
        fs::read_to_string(archive.join("walg_archive_identity.json"))?
            .contains(&format!("\"{a_id}\"")),
        "a dry run changed the identity"
    );
    let out = walg.run(&["st", "identity", "--adopt", &id, "--confirm"])?;
    ensure!(
        out.status.success() && stdout(&out).contains("adopted"),
        "adopt: {} {}",
        stdout(&out),
        stderr(&out)
    );
    b.wait_archived(&b_seg, Duration::from_secs(90))
        .context("cluster B archives once the archive is adopted for it")?;
    let out = walg.run(&["st", "identity"])?;
    ensure!(
        stdout(&out).contains(&format!("system identifier {b_id}"))
            && stdout(&out).contains(&format!("previously {a_id}")),
        "st identity after adoption: {}",
        stdout(&out)
    );
    say(&format!(
        "after `st identity --adopt {b_id} --confirm` cluster B archived {b_seg}; A kept as previous"
    ));
    b.stop()?;
    Ok(())
}

/// PostgreSQL archives through an `archive_command` that SIGKILLs about a
/// third of the `walg wal-push` runs at a random moment: two runs in three
/// are chosen for a SIGKILL 0-12 ms after their start, and about 60% of
/// those are still running then (the rest, mostly upload-ahead
/// confirmations, finish within milliseconds) (never the same file three times in a row,
/// which would park the archiver for 60 s), while
/// pgbench runs, through a primary file storage and a file failover; the
/// primary is made unwritable for a while so the failover takes writes
/// too. Afterwards: every segment from the base backup on is in one of the
/// storages, no temp file is left, and a cluster recovered from the backup
/// has the same data. Returns a summary with the number of kills.
pub fn sigkill_archiving(built: &Path) -> Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let work = Workdir::new("sigkill")?;
    let primary = work.owned_dir("primary")?;
    let backup = work.owned_dir("backup")?;
    let state = work.owned_dir("state")?;
    let mut s = file_settings(&primary);
    file_failover(&mut s, &backup, &state.join("status.json"));
    s.set("WALG_FAILOVER_STORAGES_CACHE_LIFETIME", "3s")
        .set("WALG_UPLOAD_CONCURRENCY", 2);
    let walg = Walg::new(&work, built, "walg.json", &s)?;
    let counts = work.owned_dir("counts")?;
    let script = work.path.join("killer.sh");
    fs::write(
        &script,
        format!(
            r#"#!/bin/bash
# archive_command wrapper: SIGKILL two walg runs in three at a random moment 0-12 ms after their start.
f=$(basename "$1")
echo run >> {counts}/runs
{walg} --config {config} wal-push "$1" &
pid=$!
streak=$(cat {counts}/streak-$f 2>/dev/null || echo 0)
if [ $((RANDOM % 3)) -ne 0 ] && [ "$streak" -lt 2 ]; then
  echo "$f" >> {counts}/chosen
  sleep 0.$(printf %03d $((RANDOM % 12)))
  if kill -9 $pid 2>/dev/null; then
    echo "$f" >> {counts}/kills
    echo $((streak + 1)) > {counts}/streak-$f
    wait $pid
    exit 1
  fi
fi
wait $pid
rc=$?
rm -f {counts}/streak-$f
exit $rc
"#,
            counts = counts.display(),
            walg = walg.bin.display(),
            config = walg.config.display()
        ),
    )?;
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755))?;
    let conf = format!(
        "archive_mode = on\narchive_command = '{} %p'\nmax_wal_size = 64MB\n",
        script.display()
    );
    let mut src = Cluster::init(&work.path.join("src"), &conf, &["--wal-segsize=1"])?;
    src.start()?;
    src.pgbench(&["-i", "-s", "2", "-q"])?;
    let bb = work.path.join("basebackup");
    src.basebackup(&bb)?;
    let first = src.sql("select pg_walfile_name(pg_current_wal_lsn())")?;

    let mut pgbench = src.pgbench_command(&["-n", "-c", "4", "-T", "24"]);
    let load = std::thread::spawn(move || pg::run(&mut pgbench));
    // Primary unwritable from 6 s to 12 s: writes fail over to `backup`.
    std::thread::sleep(Duration::from_secs(6));
    // The server's user owns the directories, so mode bits stop it.
    let dirs = [
        primary.clone(),
        primary.join("wal_005"),
        primary.join(".walg-tmp-dir"),
    ];
    for d in &dirs {
        fs::set_permissions(d, fs::Permissions::from_mode(0o500)).ok();
    }
    std::thread::sleep(Duration::from_secs(6));
    for d in &dirs {
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).ok();
    }
    match load.join() {
        Ok(r) => {
            r.context("pgbench load")?;
        }
        Err(_) => anyhow::bail!("the pgbench thread panicked"),
    }
    let digest = pg::table_digest(&src, "pgbench_accounts")?;
    let last = src.switch_and_wait_archived(Duration::from_secs(180))?;
    src.stop()?;
    let swept = src
        .log_text()
        .lines()
        .filter(|l| l.contains("left by a wal-push that was killed"))
        .count();

    let runs = fs::read_to_string(counts.join("runs"))
        .unwrap_or_default()
        .lines()
        .count();
    let kills = fs::read_to_string(counts.join("kills"))
        .unwrap_or_default()
        .lines()
        .count();
    let chosen = fs::read_to_string(counts.join("chosen"))
        .unwrap_or_default()
        .lines()
        .count();
    let push_ms: Vec<u64> = {
        let log = src.log_text();
        let mut v: Vec<u64> = log
            .lines()
            .filter(|l| l.contains("pushed "))
            .filter_map(|l| {
                l[..l.rfind(" ms")?]
                    .rsplit(", ")
                    .next()?
                    .trim()
                    .parse()
                    .ok()
            })
            .collect();
        v.sort_unstable();
        v
    };
    let median_ms = push_ms.get(push_ms.len() / 2).copied().unwrap_or(0);
    ensure!(
        kills >= 10,
        "only {kills} of {runs} pushes were killed mid-run; the test needs at least 10 to mean something"
    );
    let stored: BTreeSet<String> = stored_segments(&primary)
        .union(&stored_segments(&backup))
        .cloned()
        .collect();
    let on_backup = stored_segments(&backup).len();
    // Every segment from the base backup's to the last archived one.
    let mut missing = Vec::new();
    // 1 MiB segments: 4096 per 4 GiB of LSN (the middle 8 digits).
    let number = |n: &str| -> Result<u64> {
        Ok(u64::from_str_radix(&n[8..16], 16)? * 4096 + u64::from_str_radix(&n[16..24], 16)?)
    };
    let tli = &first[..8];
    let (first_no, last_no) = (number(&first)?, number(&last)?);
    for no in first_no..=last_no {
        let name = format!("{tli}{:08X}{:08X}", no / 4096, no % 4096);
        if !stored.contains(&name) {
            missing.push(name);
        }
    }
    ensure!(
        missing.is_empty(),
        "segments missing from both storages: {missing:?}"
    );
    let leftover_before = temp_files(&primary).len() + temp_files(&backup).len();
    let out = walg.run(&["st", "clean", "--older-than", "0s", "--confirm"])?;
    ensure!(
        out.status.success(),
        "st clean: {} {}",
        stdout(&out),
        stderr(&out)
    );
    let left: Vec<PathBuf> = temp_files(&primary)
        .into_iter()
        .chain(temp_files(&backup))
        .collect();
    ensure!(left.is_empty(), "temp files left after st clean: {left:?}");

    let mut restored = recovered_cluster(
        &walg,
        &bb,
        &work.path.join("restored"),
        "",
        Duration::from_secs(180),
    )?;
    let got = pg::table_digest(&restored, "pgbench_accounts")?;
    ensure!(got == digest, "restored data differs: {digest} vs {got}");
    restored.stop()?;
    let summary = format!(
        "{kills} of {runs} wal-push runs SIGKILLed mid-run ({chosen} chosen at random, two in three, for a kill 0-12 ms after start; \
         the others had finished by then; median push {median_ms} ms); {} segments {first}..{last} all stored ({on_backup} on the failover); \
         {swept} temp file(s) of killed pushes removed by later pushes, {leftover_before} left for st clean, 0 after; restore identical",
        last_no - first_no + 1
    );
    say(&summary);
    Ok(summary)
}

/// Accepts connections and closes them at once, counting them: a storage
/// endpoint that is down, whose every request is visible.
struct DeadEndpoint {
    port: u16,
    connections: Arc<AtomicUsize>,
}

impl DeadEndpoint {
    fn start() -> Result<DeadEndpoint> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        std::thread::spawn(move || {
            for s in listener.incoming().flatten() {
                count.fetch_add(1, Ordering::SeqCst);
                drop(s);
            }
        });
        Ok(DeadEndpoint { port, connections })
    }

    fn count(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// 24 concurrent walg processes (not threads) against a dead primary and
/// a live failover, twice: every push succeeds; a reader that keeps
/// parsing the status cache file while they run never sees an invalid
/// file; the first wave (cold cache) reaches the dead primary at most once
/// per process, the second (fresh "dead" verdict) not at all.
pub fn status_cache_processes(built: &Path) -> Result<()> {
    const N: usize = 24;
    let work = Workdir::new("cache-procs")?;
    let dead = DeadEndpoint::start()?;
    let backup = work.path.join("backup");
    let cache = work.path.join("state/status.json");
    let mut s = Settings::new();
    for (k, v) in [
        ("WALG_S3_PREFIX", "s3://walg/cache-test".to_string()),
        ("AWS_ENDPOINT", format!("http://127.0.0.1:{}", dead.port)),
        ("AWS_ACCESS_KEY_ID", "walg".into()),
        ("AWS_SECRET_ACCESS_KEY", "walg-secret".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("WALG_STORAGE_TIMEOUT", "3s".into()),
        ("WALG_STORAGE_RETRIES", "0".into()),
        ("WALG_FAILOVER_STORAGES_CHECK_TIMEOUT", "3s".into()),
        ("WALG_UPLOAD_CONCURRENCY", "1".into()),
        (
            "WALG_FAILOVER_STORAGES_CACHE_FILE",
            cache.display().to_string(),
        ),
    ] {
        s.set(k, v);
    }
    failover_to_files(&mut s, &backup);
    let walg = Walg::new(&work, built, "walg.json", &s)?;
    let (data, names) = ready_backlog(&work, N)?;

    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (stop, cache) = (stop.clone(), cache.clone());
        std::thread::spawn(move || -> (usize, Vec<String>) {
            let (mut reads, mut bad) = (0usize, Vec::new());
            while !stop.load(Ordering::SeqCst) {
                if let Ok(raw) = fs::read(&cache) {
                    reads += 1;
                    let ok = serde_json::from_slice::<serde_json::Value>(&raw).is_ok_and(|v| {
                        v.get("format").and_then(|f| f.as_str()) == Some("walg-storage-status")
                            && v.get("storages").is_some_and(|s| s.is_object())
                    });
                    if !ok && bad.len() < 3 {
                        bad.push(String::from_utf8_lossy(&raw).into_owned());
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            (reads, bad)
        })
    };
    let mut waves = Vec::new();
    for wave in 1..=2 {
        let before = dead.count();
        let children: Vec<_> = names
            .iter()
            .map(|n| walg.spawn_push(&data.join("pg_wal").join(n)))
            .collect::<std::io::Result<_>>()?;
        let mut failed = Vec::new();
        for (n, c) in names.iter().zip(children) {
            let out = c.wait_with_output()?;
            if !out.status.success() {
                failed.push(format!("{n}: {}", stderr(&out)));
            }
        }
        ensure!(failed.is_empty(), "wave {wave}: pushes failed: {failed:?}");
        waves.push(dead.count() - before);
    }
    stop.store(true, Ordering::SeqCst);
    let (reads, bad) = watcher
        .join()
        .map_err(|_| anyhow::anyhow!("the cache watcher panicked"))?;
    ensure!(
        bad.is_empty(),
        "the status cache file was invalid while read: {bad:?}"
    );
    ensure!(reads > 0, "the status cache file was never seen");
    ensure!(
        stored_segments(&backup).len() == N,
        "expected {N} segments on the failover, found {}",
        stored_segments(&backup).len()
    );
    ensure!(
        waves[0] <= N,
        "cold cache: {} requests reached the dead primary from {N} processes (at most one probe each)",
        waves[0]
    );
    ensure!(
        waves[1] == 0,
        "fresh \"dead\" verdict: {} requests still reached the dead primary",
        waves[1]
    );
    let status = fs::read_to_string(&cache)?;
    let v: serde_json::Value = serde_json::from_str(&status)?;
    ensure!(
        v["storages"]["default"]["alive"] == json!(false)
            && v["storages"]["backup"]["alive"] == json!(true),
        "final cache: {status}"
    );
    say(&format!(
        "2 waves of {N} concurrent wal-push processes: all succeeded; requests to the dead primary {} then {}; \
         the cache file was parsed {reads} times while written, always valid",
        waves[0], waves[1]
    ));
    Ok(())
}

/// Unmounts on drop.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// Create-if-absent on a file system without hard links (a vfat image,
/// loop-mounted, or through FUSE where the kernel has no vfat driver): the file storage notices link(2) is refused and uses the
/// next method; re-pushing is idempotent, eight processes racing on one
/// segment all succeed with one object stored, a different copy is refused.
pub fn no_hardlink_filesystem(built: &Path) -> Result<()> {
    ensure!(pg::is_root(), "mounting a vfat image needs root");
    let work = Workdir::new("vfat")?;
    let img = work.path.join("vfat.img");
    let mnt = work.path.join("mnt");
    fs::create_dir_all(&mnt)?;
    pg::run(
        std::process::Command::new("truncate")
            .args(["-s", "64M"])
            .arg(&img),
    )?;
    pg::run(std::process::Command::new("mkfs.vfat").arg(&img))
        .context("mkfs.vfat (package dosfstools)")?;
    // The kernel's vfat driver if it has one, else the same image through
    // FUSE (fusefat): neither has hard links.
    let kernel = std::process::Command::new("mount")
        .args(["-t", "vfat", "-o", "loop"])
        .arg(&img)
        .arg(&mnt)
        .output()?;
    let how = if kernel.status.success() {
        "loop-mounted vfat"
    } else {
        pg::run(
            std::process::Command::new("fusefat")
                .args(["-o", "rw+"])
                .arg(&img)
                .arg(&mnt),
        )
        .with_context(|| {
            format!(
                "mount the vfat image: the kernel refused ({}) and fusefat failed (package fusefat)",
                String::from_utf8_lossy(&kernel.stderr).trim()
            )
        })?;
        "vfat image through fusefat"
    };
    let _mounted = Mount(mnt.clone());
    let archive = mnt.join("archive");
    let mut s = file_settings(&archive);
    s.set("WALG_UPLOAD_CONCURRENCY", 1);
    let walg = Walg::new(&work, built, "walg.json", &s)?;
    let (data, names) = ready_backlog(&work, 2)?;
    let push = |path: &Path| -> Result<Output> {
        Ok(walg
            .command(&["wal-push", &path.display().to_string()])
            .env("WALG_LOG_LEVEL", "debug")
            .output()?)
    };
    let seg0 = data.join("pg_wal").join(&names[0]);
    let out = push(&seg0)?;
    let log = stderr(&out);
    ensure!(out.status.success(), "push on vfat: {log}");
    let method = log
        .lines()
        .filter(|l| l.contains("is not supported under"))
        .filter_map(|l| {
            let (what, rest) = l
                .trim()
                .trim_start_matches("DEBUG ")
                .split_once(" is not")?;
            Some(format!("{what} refused, {}", rest.rsplit("; ").next()?))
        })
        .collect::<Vec<_>>()
        .join("; ");
    ensure!(
        !method.is_empty(),
        "link(2) should be refused on vfat and another method chosen: {log}"
    );
    let out = push(&seg0)?;
    ensure!(
        out.status.success() && stderr(&out).contains("already stored"),
        "identical re-push on vfat: {}",
        stderr(&out)
    );

    let seg1 = data.join("pg_wal").join(&names[1]);
    let children: Vec<_> = (0..8)
        .map(|_| walg.spawn_push(&seg1))
        .collect::<std::io::Result<_>>()?;
    for c in children {
        let out = c.wait_with_output()?;
        ensure!(
            out.status.success(),
            "racing push on vfat: {}",
            stderr(&out)
        );
    }
    let objects: Vec<String> = fs::read_dir(archive.join("wal_005"))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    ensure!(
        objects.len() == 2 && temp_files(&archive).is_empty(),
        "expected exactly two objects and no temp file after the race: {objects:?} {:?}",
        temp_files(&archive)
    );

    let other = work.path.join("other");
    fs::create_dir_all(&other)?;
    let changed = other.join(&names[1]);
    let mut bytes = fs::read(&seg1)?;
    let at = bytes.len() / 2;
    bytes[at] ^= 0xFF;
    fs::write(&changed, &bytes)?;
    let out = push(&changed)?;
    ensure!(
        code(&out) == 1 && stderr(&out).contains("different content"),
        "a different copy on vfat must be refused: {}",
        stderr(&out)
    );
    let dest = work.path.join("fetched");
    let out = walg.fetch(&names[1], &dest)?;
    ensure!(
        out.status.success() && fs::read(&dest)? == fs::read(&seg1)?,
        "fetch from vfat: {}",
        stderr(&out)
    );
    say(&format!(
        "{how}: {method}; idempotent re-push, 8 racing pushes -> 1 object, different copy refused"
    ));
    Ok(())
}
