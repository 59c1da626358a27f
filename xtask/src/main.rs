//! `cargo xtask`: walg's developer tasks.
//!
//! - `demo`: walg's main job on a local default, for a newcomer.
//! - `test`: everything CI runs: the lint pass ([`lint`]: `cargo fmt
//!   --check`, `cargo clippy -D warnings`) first, then unit and behaviour
//!   tests, the downstream-tool example, and the end-to-end scenarios with a
//!   real PostgreSQL and the storage emulators.
//! - `lint`: only the lint pass.
//! - `e2e [FILTER]`: only the end-to-end scenarios, or those whose name
//!   contains FILTER (`cargo xtask e2e status_` runs the wal-status ones).
//! - `setup`: installs what the tests need (rustfmt and clippy, Debian
//!   packages, the PostgreSQL servers of the version matrix, emulators).
//! - `bench [verify|encryption|memory]`: the benchmark reports.
//! - `dist`: the release binary and a Debian package (`target/dist/`).
//!
//! The tree follows the tasks: [`infra`] is what they stand on (PostgreSQL
//! clusters, emulators, the proxy, installation, packaging), [`e2e`] the
//! scenarios and their shared fixture, [`bench`] the reports, [`lint`] the
//! lint pass; this file only strings them together. Every task installs its
//! own prerequisites, so a fresh machine needs no manual step.

mod bench;
mod e2e;
mod infra;
mod lint;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use e2e::fixture::{archive_usage, file_settings, stored_names};
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

/// The cargo that runs us (`CARGO`), in `repo`.
fn cargo(repo: &Path) -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(repo);
    cmd
}

/// Builds the `walg` binary and returns its path.
fn build_walg(repo: &Path, release: bool) -> Result<PathBuf> {
    let mut cmd = cargo(repo);
    cmd.args(["build", "--quiet", "-p", "walg-cli", "--bin", "walg"]);
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

fn usage() -> ! {
    eprintln!(
        "usage: cargo xtask <demo|test|lint|e2e [FILTER]|setup|bench [verify|encryption|memory]|dist>"
    );
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("demo") => demo(),
        Some("test") => test(&args[1..]),
        Some("lint") => lint::run(&repo_root()),
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
    let report = e2e::wal::round_trip(&walg, "demo", &file_settings(&archive), false)?;
    let (stored, objects) = archive_usage(&archive);
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

/// The lz4 segments (`<24 hex>.lz4`) in a file-storage archive.
fn walk_segments(archive: &Path) -> usize {
    stored_names(archive)
        .iter()
        .filter(|n| n.len() == 28 && n.ends_with(".lz4"))
        .count()
}

/// Installs what the tests need and starts every emulator.
fn prepare(repo: &Path) -> Result<Arc<emulators::Emulators>> {
    setup::all(repo)?;
    let emus = emulators::Emulators::start(repo, &emulators::Kind::ALL)
        .context("start the storage emulators")?;
    Ok(Arc::new(emus))
}

fn test(args: &[String]) -> Result<()> {
    let repo = repo_root();
    // Formatting and lints first: they fail in minutes, the rest in an hour.
    lint::run(&repo)?;
    let emus = prepare(&repo)?;
    println!("emulators: {emus:?}");
    let status = cargo(&repo)
        .args(["test", "--workspace"])
        .envs(emus.env())
        .status()?;
    if !status.success() {
        bail!("cargo test --workspace failed");
    }
    // The downstream-tool example (built by cargo test above) must also run.
    let status = cargo(&repo)
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
    let emus = prepare(&repo)?;
    run_e2e(&repo, emus, args)
}

fn run_e2e(repo: &Path, emus: Arc<emulators::Emulators>, args: &[String]) -> Result<()> {
    let env = e2e::Env {
        walg: build_walg(repo, false)?,
        emus,
        repo: repo.to_path_buf(),
    };
    let tests = e2e::select(args.first().map(String::as_str));
    e2e::run_tests(&env, &tests)
}
