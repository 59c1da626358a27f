//! `cargo xtask`: walg's developer tasks.
//!
//! - `demo`: walg's main job on a local default, for a newcomer.
//! - `test`: everything CI runs: unit and behaviour tests, then the
//!   end-to-end tests with a real PostgreSQL and the storage emulators.
//! - `e2e`: only the end-to-end tests.
//! - `setup`: installs what the tests need (Debian packages, emulators).
//! - `dist`: the release binary and a Debian package (`target/dist/`).
//!
//! Every task installs its own prerequisites, so a fresh machine needs no
//! manual step.

mod bench;
mod e2e;
mod infra;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use e2e::{
    archive as archive_e2e, crypto as crypto_e2e, dist as dist_e2e, failover as failover_e2e,
};
use e2e::{hardening as hardening_e2e, memory as memory_e2e, pgp as pgp_e2e, status as status_e2e};
use infra::{dist, emulators, pg, setup};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn target_dir(repo: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("target"))
}

/// Builds the `walg` binary and returns its path.
fn build_walg(repo: &Path, release: bool) -> Result<PathBuf> {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(repo)
        .args(["build", "--quiet", "-p", "walg-cli", "--bin", "walg"]);
    if release {
        cmd.arg("--release");
    }
    let status = cmd.status().context("run cargo build")?;
    if !status.success() {
        bail!("cargo build of walg failed");
    }
    Ok(target_dir(repo)
        .join(if release { "release" } else { "debug" })
        .join("walg"))
}

/// An emulator's walg settings under `prefix`, as config-file values.
fn emulator_settings(
    emus: &emulators::Emulators,
    kind: emulators::Kind,
    prefix: &str,
) -> Result<e2e::Settings> {
    let pairs = emus
        .settings_for(kind, &format!("{prefix}/{}", kind.name()))
        .context("emulator not running")?;
    Ok(pairs
        .into_iter()
        .map(|(k, v)| (k, serde_json::Value::String(v)))
        .collect())
}

fn usage() -> ! {
    eprintln!("usage: cargo xtask <demo|test|e2e|setup|bench|dist>");
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("demo") => demo(),
        Some("test") => test(&args[1..]),
        Some("e2e") => e2e(&args[1..]),
        Some("setup") => setup::all(&repo_root()),
        Some("bench") => bench::run(&args[1..]),
        Some("dist") => dist::run_dist(&repo_root()),
        _ => usage(),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn demo() -> Result<()> {
    let repo = repo_root();
    setup::postgres()?;
    println!("building walg ...");
    let walg = build_walg(&repo, false)?;
    let work = pg::Workdir::new("demo")?;
    let archive = work.owned_dir("archive")?;
    println!(
        "walg demo: archive a throwaway PostgreSQL to {} and restore it",
        archive.display()
    );
    let started = Instant::now();
    let report = e2e::round_trip(&walg, "demo", &e2e::file_settings(&archive), false)?;
    let (stored, objects) = e2e::archive_usage(&archive);
    let segs = walk_segments(&archive);
    let source = segs as u64 * (16 << 20);
    println!();
    println!("summary");
    println!(
        "  archived by PostgreSQL   {} files (pg_stat_archiver.archived_count, source cluster)",
        report.segments_archived
    );
    println!(
        "  objects in the archive   {objects} ({segs} segments, {} other)",
        objects - segs as u64
    );
    println!(
        "  bytes stored             {:.1} MiB for {:.1} MiB of WAL",
        stored as f64 / 1048576.0,
        source as f64 / 1048576.0
    );
    println!(
        "  compression ratio        {:.2}x (lz4)",
        if stored > 0 {
            source as f64 / stored as f64
        } else {
            0.0
        }
    );
    println!("  restored data            identical ({})", report.rows);
    println!(
        "  time                     {:.1}s",
        started.elapsed().as_secs_f64()
    );
    if let Some(status) = &report.status {
        println!();
        println!("walg wal-status of the source cluster, just before it stopped:");
        for line in status.lines() {
            println!("  {line}");
        }
    }
    Ok(())
}

fn walk_segments(archive: &Path) -> usize {
    std::fs::read_dir(archive.join("wal_005"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.len() == 28 && n.ends_with(".lz4")
        })
        .count()
}

fn test(args: &[String]) -> Result<()> {
    let repo = repo_root();
    setup::all(&repo)?;
    let emus = Arc::new(
        emulators::Emulators::start(&repo, &emulators::Kind::ALL)
            .context("start the storage emulators")?,
    );
    println!("emulators: {emus:?}");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&repo)
        .args(["test", "--workspace"])
        .envs(emus.env())
        .status()?;
    if !status.success() {
        bail!("cargo test --workspace failed");
    }
    // The downstream-tool example (built by cargo test above) must also run.
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&repo)
        .args([
            "run",
            "--quiet",
            "-p",
            "walg-failover",
            "--example",
            "downstream_tool",
        ])
        .status()?;
    if !status.success() {
        bail!("the example downstream_tool failed");
    }
    run_e2e(&repo, emus, args)
}

fn e2e(args: &[String]) -> Result<()> {
    let repo = repo_root();
    setup::all(&repo)?;
    let emus = Arc::new(
        emulators::Emulators::start(&repo, &emulators::Kind::ALL)
            .context("start the storage emulators")?,
    );
    run_e2e(&repo, emus, args)
}

fn run_e2e(repo: &Path, emus: Arc<emulators::Emulators>, args: &[String]) -> Result<()> {
    let walg = build_walg(repo, false)?;
    let filter = args.first().cloned();
    let mut tests: Vec<e2e::Test> = Vec::new();
    {
        let walg = walg.clone();
        tests.push((
            "file_archive_and_recover",
            Box::new(move || {
                let work = pg::Workdir::new("file")?;
                let archive = work.owned_dir("archive")?;
                e2e::round_trip(&walg, "file", &e2e::file_settings(&archive), true).map(|_| ())
            }),
        ));
    }
    {
        let walg = walg.clone();
        tests.push(("cli_contract", Box::new(move || e2e::cli_contract(&walg))));
    }
    {
        let walg = walg.clone();
        tests.push((
            "package_install",
            Box::new(move || dist_e2e::package_install(&walg)),
        ));
    }
    {
        let walg = walg.clone();
        tests.push((
            "storage_commands",
            Box::new(move || e2e::storage_commands(&walg)),
        ));
    }
    {
        let walg = walg.clone();
        tests.push(("upload_ahead", Box::new(move || e2e::upload_ahead(&walg))));
    }
    {
        let walg = walg.clone();
        tests.push(("prefetch", Box::new(move || e2e::prefetch(&walg))));
    }
    {
        let walg = walg.clone();
        tests.push((
            "archive_keeps_up",
            Box::new(move || e2e::archive_keeps_up(&walg).map(|_| ())),
        ));
    }
    // wal-status: one real cluster per cause of a growing pg_wal.
    let status_cases: [(&'static str, fn(&Path) -> Result<()>); 10] = [
        ("status_healthy", status_e2e::healthy),
        ("status_failing", status_e2e::failing),
        ("status_stuck_on_one", status_e2e::stuck_on_one),
        ("status_slow", status_e2e::slow),
        ("status_not_configured", status_e2e::not_configured),
        ("status_inactive_slot", status_e2e::inactive_slot),
        ("status_logical_slot", status_e2e::logical_slot_pinned),
        (
            "status_invalidated_slot",
            status_e2e::invalidated_slot_archiver_binds,
        ),
        ("status_wal_keep_size", status_e2e::wal_keep_size),
        ("status_standby_always", status_e2e::standby_always),
    ];
    for (name, case) in status_cases {
        let walg = walg.clone();
        tests.push((name, Box::new(move || case(&walg))));
    }
    for kind in emulators::Kind::ALL {
        let walg = walg.clone();
        let emus = emus.clone();
        let name: &'static str = match kind {
            emulators::Kind::S3 => "s3_archive_and_recover",
            emulators::Kind::Gcs => "gcs_archive_and_recover",
            emulators::Kind::Azure => "azure_archive_and_recover",
        };
        tests.push((
            name,
            Box::new(move || {
                let pairs = emus
                    .settings_for(kind, &format!("e2e/{}", kind.name()))
                    .context("emulator not running")?;
                let settings = pairs
                    .into_iter()
                    .map(|(k, v)| (k, serde_json::Value::String(v)))
                    .collect();
                e2e::round_trip(&walg, kind.name(), &settings, true).map(|_| ())
            }),
        ));
    }
    {
        let walg = walg.clone();
        let emus = emus.clone();
        tests.push((
            "storage_timings",
            Box::new(move || e2e::storage_timings(&walg, &emus).map(|_| ())),
        ));
    }
    {
        let walg = walg.clone();
        let emus = emus.clone();
        tests.push((
            "storage_errors",
            Box::new(move || e2e::storage_errors(&walg, &emus)),
        ));
    }
    {
        let walg = walg.clone();
        let emus = emus.clone();
        tests.push((
            "failover",
            Box::new(move || failover_e2e::run(&walg, &emus)),
        ));
    }
    // Large segments (issue 14): 64 MiB segments archived and restored over
    // the S3 and GCS emulators; peak memory of a 1 GiB segment's push and
    // fetch on file storage and S3.
    for kind in [emulators::Kind::S3, emulators::Kind::Gcs] {
        let walg = walg.clone();
        let emus = emus.clone();
        let name: &'static str = match kind {
            emulators::Kind::Gcs => "gcs_segsize_64_archive_and_recover",
            _ => "s3_segsize_64_archive_and_recover",
        };
        tests.push((
            name,
            Box::new(move || {
                let settings = emulator_settings(&emus, kind, "e2e-seg64")?;
                let label = format!("{}-seg64", kind.name());
                e2e::round_trip_with(&walg, &label, &settings, true, &["--wal-segsize=64"])
                    .map(|_| ())
            }),
        ));
    }
    {
        let walg = walg.clone();
        let repo = repo.to_path_buf();
        tests.push((
            "libsodium_interop",
            Box::new(move || crypto_e2e::libsodium_interop(&walg, &repo)),
        ));
    }
    {
        let walg = walg.clone();
        tests.push((
            "encryption_bad_input",
            Box::new(move || crypto_e2e::bad_input(&walg)),
        ));
    }
    {
        let walg = walg.clone();
        let repo = repo.to_path_buf();
        tests.push((
            "libsodium_failover_rotation",
            Box::new(move || crypto_e2e::failover_rotation(&walg, &repo)),
        ));
    }
    {
        let walg = walg.clone();
        let emus = emus.clone();
        tests.push((
            "archive_health_verify_repair",
            Box::new(move || archive_e2e::verify_repair(&walg, &emus)),
        ));
    }
    {
        let walg = walg.clone();
        let emus = emus.clone();
        tests.push((
            "archive_health_prune",
            Box::new(move || archive_e2e::prune(&walg, &emus)),
        ));
    }
    {
        let walg = walg.clone();
        tests.push((
            "unopenable_primary",
            Box::new(move || hardening_e2e::unopenable_primary(&walg)),
        ));
    }
    {
        let walg = walg.clone();
        tests.push((
            "archive_identity",
            Box::new(move || hardening_e2e::archive_identity(&walg)),
        ));
    }
    {
        let walg = walg.clone();
        tests.push((
            "status_cache_processes",
            Box::new(move || hardening_e2e::status_cache_processes(&walg)),
        ));
    }
    {
        let walg = walg.clone();
        tests.push((
            "no_hardlink_filesystem",
            Box::new(move || hardening_e2e::no_hardlink_filesystem(&walg)),
        ));
    }
    {
        let walg = walg.clone();
        let emus = emus.clone();
        tests.push((
            "st_clean",
            Box::new(move || hardening_e2e::st_clean(&walg, &emus)),
        ));
    }
    {
        let walg = walg.clone();
        tests.push((
            "sigkill_archiving",
            Box::new(move || hardening_e2e::sigkill_archiving(&walg).map(|_| ())),
        ));
    }
    // Bounded memory (issue 14): a 1 GiB segment on file storage, and a
    // 256 MiB one over the S3 and GCS emulators (four times the bound, so a
    // store that buffered the object fails; the emulators keep every byte
    // in their own memory, and 1 GiB through them takes minutes).
    {
        let walg = walg.clone();
        tests.push((
            "file_1gib_segment_memory",
            Box::new(move || {
                let work = pg::Workdir::new("mem-file")?;
                let archive = work.owned_dir("archive")?;
                let peaks = memory_e2e::large_segment_memory(
                    &walg,
                    "mem-file",
                    &e2e::file_settings(&archive),
                    &["none", "lz4"],
                    1024,
                )?;
                println!("  file storage, 1 GiB segment, peak RSS (KiB): {peaks:?}");
                Ok(())
            }),
        ));
    }
    for kind in [emulators::Kind::S3, emulators::Kind::Gcs] {
        let walg = walg.clone();
        let emus = emus.clone();
        let name: &'static str = match kind {
            emulators::Kind::Gcs => "gcs_256mib_segment_memory",
            _ => "s3_256mib_segment_memory",
        };
        tests.push((
            name,
            Box::new(move || {
                let settings = emulator_settings(&emus, kind, "e2e-mem")?;
                let label = format!("mem-{}", kind.name());
                let peaks =
                    memory_e2e::large_segment_memory(&walg, &label, &settings, &["none"], 256)?;
                println!(
                    "  {}, 256 MiB segment, peak RSS (KiB): {peaks:?}",
                    kind.name()
                );
                Ok(())
            }),
        ));
    }
    {
        let walg = walg.clone();
        tests.push(("openpgp_gpg", Box::new(move || pgp_e2e::openpgp_gpg(&walg))));
    }
    // The longest scenarios first, so the two threads finish together.
    const LONG: &[&str] = &[
        "sigkill_archiving",
        "failover",
        "archive_keeps_up",
        "archive_health_prune",
    ];
    tests.sort_by_key(|(name, _)| LONG.iter().position(|l| l == name).unwrap_or(LONG.len()));
    if let Some(f) = filter {
        tests.retain(|(name, _)| name.contains(f.as_str()));
    }
    e2e::run_tests(tests)
}
