//! Storages through the real binary: failures that must be clear errors
//! within a bound (a hanging endpoint, a wrong key, a missing bucket, a
//! refused connection, TLS to a plain-HTTP endpoint, a malformed prefix),
//! each one line of stderr that says the cause first and the setting to
//! fix; `walg check` on the packaged example config; the `walg st` commands (`status`, `check`,
//! `transfer` on two file storages; `clean` of the temp files of dead
//! writers and an incomplete S3 multipart upload, a live writer's kept),
//! and the time of one push and one fetch per backend (reported, not
//! asserted).

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde_json::json;

use super::fixture::{
    code, emulator_settings, file_failover, file_settings, ready_backlog, s3_request, say, stderr,
    stdout, unique_path, FileFailover, Set, Settings, Walg,
};
use crate::infra::emulators::{Emulators, Kind, BUCKET};
use crate::infra::pg::{Cluster, Workdir};

/// The first line of a failed call's stderr, as PostgreSQL logs it: the
/// call, then the storage's own line (cause, then the setting to fix), with
/// every one of `words`, under 250 characters, without opendal's context.
fn first_line_says(what: &str, out: &std::process::Output, words: &[&str]) -> Result<()> {
    let err = stderr(out);
    let line = err.lines().next().unwrap_or("");
    ensure!(
        line.starts_with("ERROR wal-push ") && line.contains(": storage \"default\""),
        "{what}: the first line should be the failed call and its storage: {err}"
    );
    for w in words {
        ensure!(
            line.contains(w),
            "{what}: {w:?} is not in the first line: {line}"
        );
    }
    ensure!(
        line.len() < 250 && !line.contains("context: {"),
        "{what}: the first line should be short and free of opendal's context ({} characters): {line}",
        line.len()
    );
    println!("  {what}: {line}");
    Ok(())
}

/// Storage failures through the real binary: an endpoint that accepts TCP
/// and never answers makes wal-push fail within the configured timeout plus
/// a margin, naming the storage and the timeout; a wrong key, a missing
/// bucket, a refused connection, TLS to a plain-HTTP endpoint and a
/// malformed prefix are clear errors naming what to fix; `walg check` on
/// the packaged example config names its placeholders before any request,
/// and its mode.
pub fn storage_errors(built: &Path, emus: &Emulators) -> Result<()> {
    let work = Workdir::new("errors")?;
    let (data, names) = ready_backlog(&work, 1)?;
    let seg = data.join("pg_wal").join(&names[0]);

    // A listener that accepts and never answers.
    let hang = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = hang.local_addr()?.port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in hang.incoming().flatten() {
            held.push(s); // keep every connection open, say nothing
        }
    });
    let mut s = emulator_settings(emus, Kind::S3, "errors")?;
    s.set("AWS_ENDPOINT", format!("http://127.0.0.1:{port}"))
        .set("WALG_STORAGE_TIMEOUT", "2s")
        .set("WALG_STORAGE_RETRIES", 1)
        .set("WALG_UPLOAD_CONCURRENCY", 1);
    let w = Walg::new(&work, built, "hang.json", &s)?;
    let start = Instant::now();
    let out = w.push(&seg)?;
    let took = start.elapsed();
    // Bound: (retries + 1) attempts of at most the timeout each, plus backoff
    // and process start; 2s * 2 + margin.
    ensure!(
        code(&out) == 1,
        "hanging storage: expected exit 1, got {}: {}",
        code(&out),
        stderr(&out)
    );
    ensure!(
        took < Duration::from_secs(15),
        "hanging storage: wal-push took {took:?}, configured timeout 2s x 2 attempts"
    );
    let msg = stderr(&out);
    ensure!(
        msg.contains("timed out") && msg.contains("2s"),
        "message should say it timed out after 2s: {msg}"
    );
    ensure!(
        msg.contains("default") || msg.contains("s3://"),
        "message should name the storage: {msg}"
    );
    first_line_says(
        "hanging endpoint",
        &out,
        &["timed out after 2s", "(2 attempts)", "WALG_STORAGE_TIMEOUT"],
    )?;
    println!(
        "  hanging endpoint: wal-push exit 1 after {:.1}s (timeout 2s, 1 retry)",
        took.as_secs_f64()
    );

    // Wrong key (Azurite checks signatures).
    let mut s = emulator_settings(emus, Kind::Azure, "errors")?;
    s.set(
        "AZURE_STORAGE_ACCESS_KEY",
        "d3Jvbmcga2V5IHdyb25nIGtleSB3cm9uZyBrZXk=",
    )
    .set("WALG_STORAGE_RETRIES", 0);
    let w = Walg::new(&work, built, "wrongkey.json", &s)?;
    let out = w.push(&seg)?;
    let msg = stderr(&out);
    ensure!(code(&out) == 1, "wrong key: expected exit 1: {msg}");
    ensure!(
        !msg.contains("d3Jvbmcga2V5"),
        "the key leaked into the message: {msg}"
    );
    ensure!(
        msg.to_lowercase().contains("permission denied") || msg.contains("AZURE_STORAGE"),
        "wrong key message unclear: {msg}"
    );
    first_line_says(
        "wrong key",
        &out,
        &[
            "the storage rejected the account key of",
            "fix AZURE_STORAGE_ACCESS_KEY",
        ],
    )?;

    // Missing bucket.
    let mut s = emulator_settings(emus, Kind::S3, "errors")?;
    s.set("WALG_S3_PREFIX", "s3://walg-no-such-bucket/x");
    let w = Walg::new(&work, built, "nobucket.json", &s)?;
    let out = w.push(&seg)?;
    let msg = stderr(&out);
    ensure!(
        code(&out) == 1 && msg.contains("walg-no-such-bucket"),
        "missing bucket: {msg}"
    );
    first_line_says(
        "missing bucket",
        &out,
        &[
            "(s3://walg-no-such-bucket/x): the bucket \"walg-no-such-bucket\" does not exist at http://127.0.0.1:",
            "create it or fix WALG_S3_PREFIX",
        ],
    )?;

    // Nothing listens: a port just closed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut s = emulator_settings(emus, Kind::S3, "errors")?;
    s.set("AWS_ENDPOINT", format!("http://127.0.0.1:{closed}"))
        .set("WALG_STORAGE_RETRIES", 0)
        .set("WALG_UPLOAD_CONCURRENCY", 1);
    let w = Walg::new(&work, built, "refused.json", &s)?;
    let out = w.push(&seg)?;
    ensure!(
        code(&out) == 1,
        "refused: expected exit 1: {}",
        stderr(&out)
    );
    first_line_says(
        "refused connection",
        &out,
        &[
            &format!("the connection to http://127.0.0.1:{closed} was refused"),
            "AWS_ENDPOINT",
        ],
    )?;

    // https:// against the emulator, which speaks plain HTTP.
    let mut s = emulator_settings(emus, Kind::S3, "errors")?;
    let endpoint = emus.endpoint(Kind::S3).context("the S3 emulator")?;
    s.set("AWS_ENDPOINT", endpoint.replace("http://", "https://"))
        .set("WALG_STORAGE_RETRIES", 0)
        .set("WALG_UPLOAD_CONCURRENCY", 1);
    let w = Walg::new(&work, built, "tls.json", &s)?;
    let out = w.push(&seg)?;
    ensure!(code(&out) == 1, "tls: expected exit 1: {}", stderr(&out));
    first_line_says(
        "TLS to plain HTTP",
        &out,
        &[
            "speaks plain HTTP, not TLS",
            "write http:// in AWS_ENDPOINT",
        ],
    )?;

    // The packaged example config, untouched and readable by everyone.
    let example = work.path.join("example.json");
    fs::write(&example, crate::infra::dist::EXAMPLE_CONFIG)?;
    fs::set_permissions(
        &example,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )?;
    let out = std::process::Command::new(&w.bin)
        .arg("--config")
        .arg(&example)
        .arg("check")
        // No server to ask: the report's point is the config.
        .env("PGHOST", work.path.join("no-server"))
        .output()
        .context("run walg check")?;
    let report = stdout(&out);
    let verdict = report.lines().next().unwrap_or("");
    ensure!(
        code(&out) == 1
            && verdict.starts_with("walg check: FAILED: config: the config still holds the example's \"change-me\" placeholders"),
        "example config: the verdict should name the placeholders: {report}{}",
        stderr(&out)
    );
    ensure!(
        !report.contains("storage default") && !report.contains("change-me-bucket."),
        "example config: no storage may be asked: {report}"
    );
    ensure!(
        report.contains("mode 0644")
            && report.contains("chmod 0640")
            && report.contains("root:postgres"),
        "example config: the world-readable file with secrets should be a warning: {report}"
    );
    ensure!(
        !stderr(&out).contains("WARN"),
        "example config: each finding once, in the report: {}",
        stderr(&out)
    );
    println!("  example config: {verdict}");

    // Malformed prefix.
    let mut s = Settings::new();
    s.set("WALG_S3_PREFIX", "walg-test/no-scheme");
    let w = Walg::new(&work, built, "malformed.json", &s)?;
    let out = w.push(&seg)?;
    let msg = stderr(&out);
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
    let FileFailover {
        walg,
        settings,
        cache,
        ..
    } = FileFailover::new(&work, built, &work.path.join("primary"))?;
    let mut forced = settings.clone();
    forced.set("WALG_TARGET_STORAGE", "backup");
    let to_backup = Walg::new(&work, built, "backup-only.json", &forced)?;
    let mut only_primary = settings.clone();
    only_primary.set("WALG_TARGET_STORAGE", "default");
    let from_primary = Walg::new(&work, built, "primary-only.json", &only_primary)?;

    let (data, names) = ready_backlog(&work, 3)?;
    let segment = |n: &str| data.join("pg_wal").join(n);
    for n in &names {
        let out = to_backup.push(&segment(n))?;
        ensure!(
            out.status.success() && stderr(&out).contains("\"backup\""),
            "push to backup: {}",
            stderr(&out)
        );
    }
    let dest = work.path.join("fetched");
    let out = from_primary.fetch(&names[0], &dest)?;
    ensure!(
        code(&out) == 74,
        "primary should not have {} yet: {}",
        names[0],
        stderr(&out)
    );

    let out = walg.run(&["st", "check", "--write"])?;
    let text = stdout(&out);
    ensure!(
        out.status.success() && text.contains("default: alive") && text.contains("backup: alive"),
        "st check: {text} {}",
        stderr(&out)
    );
    let out = walg.run(&["st", "status"])?;
    let text = stdout(&out);
    ensure!(out.status.success(), "st status: {}", stderr(&out));
    ensure!(
        text.contains(&cache.display().to_string()) && text.contains("alive"),
        "st status output: {text}"
    );
    ensure!(cache.is_file(), "status cache not written by st check");

    let out = walg.run(&["st", "transfer", "--source", "backup"])?;
    let text = stdout(&out);
    ensure!(
        out.status.success() && text.contains("3 copied"),
        "st transfer: {text} {}",
        stderr(&out)
    );
    for n in &names {
        let out = from_primary.fetch(n, &dest)?;
        ensure!(
            out.status.success(),
            "fetch {n} from the primary after transfer: {}",
            stderr(&out)
        );
        ensure!(
            fs::read(&dest)? == fs::read(segment(n))?,
            "{n}: transferred bytes differ"
        );
    }
    // Again: nothing to copy, everything verified identical.
    let out = walg.run(&["st", "transfer", "--source", "backup"])?;
    let text = stdout(&out);
    ensure!(
        out.status.success() && text.contains("0 copied, 3 already present"),
        "second transfer: {text}"
    );
    Ok(())
}

/// Reports (does not assert) the time of one `wal-push` and one `wal-fetch`
/// of a real 16 MiB segment through the binary, per backend: the medians of
/// five distinct segments. Asserts only that every call succeeded and the
/// bytes came back.
pub fn storage_timings(built: &Path, emus: &Emulators) -> Result<String> {
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
        backends.push((
            kind.name().into(),
            emulator_settings(emus, kind, "timings")?,
        ));
    }
    for (label, mut settings) in backends {
        settings
            .set("WALG_UPLOAD_CONCURRENCY", 1)
            .set("WALG_DOWNLOAD_CONCURRENCY", 1);
        let w = Walg::new(&work, built, &format!("{label}.json"), &settings)?;
        let (mut push, mut fetch) = (Vec::new(), Vec::new());
        for n in &names {
            let t = Instant::now();
            let out = w.push(&segs.join(n))?;
            push.push(t.elapsed().as_secs_f64() * 1000.0);
            ensure!(out.status.success(), "{label}: push {n}: {}", stderr(&out));
            let dest = work.path.join(format!("fetched-{label}"));
            let t = Instant::now();
            let out = w.fetch(n, &dest)?;
            fetch.push(t.elapsed().as_secs_f64() * 1000.0);
            ensure!(out.status.success(), "{label}: fetch {n}: {}", stderr(&out));
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

/// Field 22 of /proc/<pid>/stat (start time in clock ticks).
fn start_ticks(pid: u32) -> Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = &stat[stat.rfind(')').context("stat")? + 1..];
    after
        .split_whitespace()
        .nth(19)
        .context("stat field 22")?
        .parse()
        .context("start time")
}

/// `walg st clean` on a primary S3 storage and a file failover: a dry run
/// lists the temp file of a dead local writer, an old temp file of another
/// host and an incomplete multipart upload, and removes nothing; with
/// `--confirm` they are gone, and a live writer's temp file is kept.
pub fn st_clean(built: &Path, emus: &Emulators) -> Result<()> {
    let work = Workdir::new("clean")?;
    let backup = work.path.join("backup");
    let s3_path = unique_path("clean");
    let mut s = emulator_settings(emus, Kind::S3, &s3_path)?;
    file_failover(&mut s, &backup, &work.path.join("state/status.json"));
    let walg = Walg::new(&work, built, "walg.json", &s)?;

    // Writers: one alive (a sleeping child), one dead (a child that exited).
    let host: String = fs::read_to_string("/proc/sys/kernel/hostname")?
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    let ns = fs::read_link("/proc/self/ns/pid")?
        .to_string_lossy()
        .trim_start_matches("pid:[")
        .trim_end_matches(']')
        .to_string();
    let mut alive = std::process::Command::new("sleep").arg("60").spawn()?;
    let alive_start = start_ticks(alive.id())?;
    let mut gone = std::process::Command::new("true").spawn()?;
    let gone_pid = gone.id();
    let gone_start = start_ticks(gone_pid).unwrap_or(1);
    gone.wait()?;
    let tmp = backup.join(".walg-tmp-dir");
    fs::create_dir_all(&tmp)?;
    let live = tmp.join(format!(
        "a.lz4.walg-tmp-{host}_{ns}_{}_{alive_start}_0",
        alive.id()
    ));
    let dead = tmp.join(format!(
        "b.lz4.walg-tmp-{host}_{ns}_{gone_pid}_{gone_start}_0"
    ));
    let foreign = tmp.join("c.lz4.walg-tmp-otherhost_1_2_3_0");
    let fresh_foreign = tmp.join("d.lz4.walg-tmp-otherhost_1_2_3_0");
    for p in [&live, &dead, &foreign, &fresh_foreign] {
        fs::write(p, b"partial upload")?;
    }
    let two_days_ago = std::time::SystemTime::now() - Duration::from_secs(2 * 86_400);
    for p in [&live, &foreign] {
        fs::File::options()
            .write(true)
            .open(p)?
            .set_modified(two_days_ago)?;
    }
    let key = format!("{s3_path}/wal_005/000000010000000000000042.lz4");
    s3_request(emus, "POST", &format!("/{BUCKET}/{key}?uploads"))?;

    let out = walg.run(&["st", "clean", "--older-than", "0s"])?;
    let text = stdout(&out);
    ensure!(
        out.status.success(),
        "st clean dry run: {text} {}",
        stderr(&out)
    );
    let first = text.lines().next().unwrap_or_default();
    ensure!(
        first.contains("4 leftover") && first.contains("dry run"),
        "first line should count 4 leftovers in a dry run: {text}"
    );
    ensure!(
        text.contains("multipart upload") && text.contains(&key) && !text.contains("a.lz4"),
        "dry run should list the upload and not the live writer's file: {text}"
    );
    ensure!(
        dead.exists() && foreign.exists(),
        "a dry run removed something"
    );
    say(&format!("dry run: {first}"));

    // moto reports every upload as initiated in 2010, so the upload is
    // "old" here; the fresh temp file of another host is not.
    let out = walg.run(&["st", "clean", "--older-than", "1h", "--confirm", "--json"])?;
    ensure!(
        out.status.success(),
        "st clean --confirm: {} {}",
        stdout(&out),
        stderr(&out)
    );
    let reports: serde_json::Value = serde_json::from_str(&stdout(&out))?;
    let removed = reports
        .as_array()
        .map(|a| {
            a.iter()
                .flat_map(|r| r["items"].as_array().cloned().unwrap_or_default())
                .filter(|i| i["removed"] == json!(true))
                .count()
        })
        .unwrap_or(0);
    ensure!(
        !dead.exists() && !foreign.exists() && live.exists() && fresh_foreign.exists(),
        "after --confirm --older-than 1h: dead {} old foreign {} live {} fresh foreign {} (expected false false true true)",
        dead.exists(),
        foreign.exists(),
        live.exists(),
        fresh_foreign.exists()
    );
    let uploads = s3_request(emus, "GET", &format!("/{BUCKET}?uploads&prefix={s3_path}/"))?;
    ensure!(
        !uploads.contains("<Upload>"),
        "the multipart upload was not aborted: {uploads}"
    );
    alive.kill().ok();
    alive.wait().ok();
    say(&format!(
        "--older-than 1h --confirm --json: {removed} removed (dead writer's temp file, another host's 2-day-old one, the multipart upload); the live writer's and a fresh one kept"
    ));
    Ok(())
}
