//! `cargo xtask bench`: reports of how fast walg is, never tests.
//!
//! Three reports, each its own command: `cargo xtask bench` (this module and
//! the files beside it: walg against pgBackRest and a `cp`-plus-fsync floor),
//! `bench encryption` ([`crypto`]: what libsodium and OpenPGP cost) and
//! `bench verify` ([`archive`]: `wal-verify` and `wal-show` over a million
//! objects), `bench memory` ([`memory`]: peak RSS of every codec on every
//! storage with the release build). Each builds the release binary, prints its report and writes it
//! under `target/bench/`.
//!
//! The contract: a bench asserts correctness (the bytes came back, every
//! segment reached the archive) and never a timing; a peer that fails is
//! reported as `failed: <reason>`, never hidden and never fatal for the other
//! peers. Nothing here is run by `cargo xtask test`, and nothing in
//! [`crate::e2e`] depends on a bench (the dependency runs the other way: the
//! 1 GiB memory rows reuse [`crate::e2e::memory`]).
//!
//! # `cargo xtask bench`
//!
//! It makes a corpus of real segments with a throwaway PostgreSQL
//! ([`corpus`]: a pgbench TPC-B run and a high-entropy insert workload, kept
//! apart so results and compression can be told per kind), keeps that
//! cluster running so pgBackRest stanzas can be created for it, and then, for
//! file storage and S3, lets the peers take turns, alternating their order
//! every repetition (the file pushes of walg, walg `none` and `dd` take turns
//! segment by segment).
//! S3 is `s3s-fs` ([`s3`]: a Rust S3 server on the local file system that
//! serves requests in parallel, unlike moto), reached by both peers over TLS
//! through the same local proxy (pgBackRest speaks S3 over https only), once
//! directly (`s3`) and once through the xtask's proxy shaped like a network
//! to a cloud region (`s3-shaped`: 20 ms per request and per new connection,
//! 100 MB/s per connection and direction). What is measured ([`cases`]):
//!
//! - sequential push, one process per segment, as PostgreSQL's archiver runs
//!   `archive_command` (cwd = data directory, `%p` = `pg_wal/<segment>`);
//! - a backlog of `.ready` files drained with the archiver's semantics
//!   (oldest `.ready` first, `.ready` -> `.done` on exit 0): walg with
//!   upload-ahead, walg sequential, pgBackRest with `archive-async`;
//! - sequential fetch into `pg_wal/RECOVERYXLOG`, with and without walg's
//!   prefetch, against pgBackRest `archive-get` sync and async;
//! - peak resident memory (`/usr/bin/time -f %M`) of one push and one fetch
//!   of a 16 MiB segment, and (walg only) of a 1 GiB one on file and S3.
//!
//! Every child runs as the `postgres` OS user ([`children`]: set directly
//! with `Command::uid`, not through `runuser`, whose PAM session would add
//! milliseconds to every call) with a clean environment; [`peers`] says how
//! each peer is configured and invoked, [`runner`] runs and times them. The
//! report ([`report`]: medians, walg/peer ratios, compression ratios,
//! settings) is printed and written to `target/bench/report.md`.
//!
//! What it does not do: assert targets (a benchmark is a report, not a test),
//! measure GCS or Azure, measure pgBackRest with 1 GiB segments (it needs a
//! cluster made with them), or tune the peers beyond the settings it states.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::infra::pg::Workdir;
use crate::infra::setup;
use crate::{build_walg, repo_root, target_dir};

use cases::{MemoryRow, Peer, Row, Sample, Scenario, Storage};
use children::{Identity, Watchdog};
use corpus::{make_corpus, Workload};
use report::{render, Results, Times};
use runner::Bench;
use s3::S3;

pub mod archive;
mod cases;
mod children;
mod corpus;
pub mod crypto;
mod memory;
mod peers;
mod report;
mod runner;
pub(crate) mod s3;

/// The pgBackRest stanza made for the corpus cluster.
const STANZA: &str = "bench";
/// Segments wanted from each workload; the backlog test needs at least
/// [`MIN_SEGMENTS`] in all.
const PER_WORKLOAD: u64 = 36;
const MIN_SEGMENTS: usize = 64;
/// No single archive or restore call may take longer than this; a hung peer
/// is killed and reported as failed.
const CMD_TIMEOUT: Duration = Duration::from_secs(180);
const ARCHIVE_WAIT: Duration = Duration::from_secs(180);
/// WAL-G's default prefetch depth.
const PREFETCH: usize = 10;
const CHILD_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// `cargo xtask bench [verify|encryption|memory]`.
pub fn run(args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("verify") => archive::run(),
        Some("encryption") => crypto::run(),
        Some("memory") => memory::run(),
        _ => peers_report(),
    }
}

/// `cargo xtask bench`: walg against pgBackRest and `cp` + fsync.
fn peers_report() -> Result<()> {
    let started = Instant::now();
    let repo = repo_root();
    let runs = env_usize("WALG_BENCH_RUNS", 3)?.max(1);
    let concurrency = env_usize("WALG_BENCH_CONCURRENCY", 8)?.max(1);

    setup::postgres()?;
    if !setup::have("pgbackrest") {
        setup::apt(&["pgbackrest"])?;
    }
    if !Path::new("/usr/bin/time").is_file() {
        setup::apt(&["time"])?;
    }
    println!("bench: building walg (release) ...");
    let built = build_walg(&repo, true)?;
    let build_time = started.elapsed();

    let work = Workdir::new("bench")?;
    let walg = work.install_walg(&built)?;
    let home = work.owned_dir("home")?;
    let corpus_dir = work.owned_dir("corpus")?;
    let runs_dir = work.owned_dir("runs")?;
    let watchdog = Watchdog::start();

    println!(
        "bench: making the WAL corpus with a real PostgreSQL in {} ...",
        work.path.display()
    );
    let corpus_started = Instant::now();
    let (cluster, corpus) = make_corpus(&work.path.join("cluster"), &corpus_dir)?;
    let corpus_time = corpus_started.elapsed();
    println!(
        "bench: corpus of {} segments of {} MiB ({} pgbench, {} high-entropy) in {:.0}s",
        corpus.segments.len(),
        corpus.segment_size >> 20,
        corpus.count(Workload::Pgbench),
        corpus.count(Workload::Entropy),
        corpus_time.as_secs_f64()
    );

    println!("bench: starting s3s-fs and the TLS and shaping proxies ...");
    let s3 = S3::start(&repo, &work.path).map_err(|e| format!("{e:#}"));
    match &s3 {
        Err(e) => println!("bench: S3 unavailable, S3 rows will be reported as failed: {e}"),
        // For the children this process runs directly (the 1 GiB memory
        // runs); the peers' commands get it explicitly.
        Ok(s3) => std::env::set_var("SSL_CERT_FILE", &s3.cert),
    }

    let bench = Bench {
        runs_dir,
        identity: Identity::new(home)?,
        walg,
        corpus,
        cluster_data: cluster.data.clone(),
        cluster_socket: cluster.dir.clone(),
        cluster_port: cluster.port,
        concurrency,
        watchdog,
        s3: s3.as_ref().ok(),
    };
    let mut rows = Row::all();
    if let Err(e) = &s3 {
        for row in rows.iter_mut().filter(|r| r.storage != Storage::File) {
            row.failed = Some(format!("S3: {e}"));
        }
    }
    let mut memory = MemoryRow::all();
    let mut compression = None;
    let mut loads = Vec::new();

    for r in 0..runs {
        // Other work on the machine skews every number; the report shows it.
        let load = fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .next()
            .unwrap_or("?")
            .to_string();
        println!("bench: repetition {}/{runs} (load average {load})", r + 1);
        loads.push(load);
        for storage in Storage::ALL {
            for scenario in [Scenario::Push, Scenario::Fetch, Scenario::Backlog] {
                let mut order: Vec<usize> = (0..rows.len())
                    .filter(|&i| rows[i].storage == storage && rows[i].scenario == scenario)
                    .collect();
                // Alternate the order so no peer always runs on a warmer
                // (or more fragmented) machine than the others.
                if r % 2 == 1 {
                    order.reverse();
                }
                // On file storage, whichever peer ran right after
                // pgBackRest's push measured ~25 ms per segment slower, the
                // same for `cp` and walg, even after a sync and with the
                // corpus in the page cache: the disk is still busy with what
                // pgBackRest wrote. Its push goes last, so it slows no one.
                // The other file pushes run interleaved, segment by segment.
                let mut interleaved: Vec<(usize, Result<Sample>)> = Vec::new();
                if storage == Storage::File && scenario == Scenario::Push {
                    order.sort_by_key(|&i| rows[i].peer == Peer::Pgbr);
                    let together: Vec<usize> = order
                        .iter()
                        .copied()
                        .filter(|&i| rows[i].peer != Peer::Pgbr && rows[i].failed.is_none())
                        .collect();
                    let peers: Vec<Peer> = together.iter().map(|&i| rows[i].peer).collect();
                    interleaved = together
                        .into_iter()
                        .zip(bench.measure_interleaved(r, storage, &peers))
                        .collect();
                    order.retain(|&i| rows[i].peer == Peer::Pgbr);
                }
                let mut measured = interleaved.into_iter();
                let mut order = order.into_iter();
                loop {
                    let (i, result) = match measured.next() {
                        Some(done) => done,
                        None => match order.next() {
                            Some(i) if rows[i].failed.is_some() => continue,
                            Some(i) => (i, bench.measure(r, storage, scenario, rows[i].peer)),
                            None => break,
                        },
                    };
                    let label = rows[i].label(concurrency);
                    match result {
                        Ok(sample) => {
                            println!(
                                "  {:<8} {:<5} {:<34} {:>7.2}s",
                                scenario.name(),
                                storage.name(),
                                label,
                                sample.total.as_secs_f64()
                            );
                            rows[i].samples.push(sample);
                        }
                        Err(e) => {
                            println!(
                                "  {:<8} {:<5} {label:<34} failed: {e:#}",
                                scenario.name(),
                                storage.name()
                            );
                            rows[i].failed = Some(format!("{e:#}"));
                        }
                    }
                }
                if r == 0 && storage == Storage::File && scenario == Scenario::Push {
                    compression = Some(bench.compression(r));
                }
            }
            bench.cleanup(r, storage);
        }
        bench.memory(r, &mut memory);
    }
    println!("bench: peak memory of 1 GiB segments ...");
    let large = bench.large_memory(&built);

    let elapsed = started.elapsed();
    let times = Times {
        build: build_time,
        corpus: corpus_time,
        all: elapsed,
        loads,
    };
    let results = Results {
        rows: &rows,
        memory: &memory,
        large: &large,
        compression: compression.as_ref(),
    };
    let report = render(&bench, &results, runs, &times, &repo);
    println!("\n{report}");
    let out_dir = target_dir(&repo).join("bench");
    fs::create_dir_all(&out_dir).with_context(|| format!("create {}", out_dir.display()))?;
    let out = out_dir.join("report.md");
    fs::write(&out, &report).with_context(|| format!("write {}", out.display()))?;
    println!(
        "bench: report written to {} ({:.0}s in all)",
        out.display(),
        elapsed.as_secs_f64()
    );
    drop(bench);
    drop(s3);
    drop(cluster);
    Ok(())
}

fn env_usize(name: &str, default: usize) -> Result<usize> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .with_context(|| format!("parse {name}={v:?} as a number")),
        Err(_) => Ok(default),
    }
}
