//! `cargo xtask bench encryption`: what libsodium and OpenPGP encryption
//! cost on `wal-push` and `wal-fetch`, against the same release walg without
//! a key.
//!
//! A corpus of real 16 MiB segments (half pgbench TPC-B, half high-entropy
//! inserts) is made by a throwaway PostgreSQL; then, for file storage and
//! lz4, each variant pushes every segment (one process per segment, as the
//! archiver runs it) and fetches every segment back, the variants taking
//! turns segment by segment in a rotating order. Upload-ahead and prefetch are off so each
//! call moves exactly one segment. Medians per variant and their ratio are
//! printed and written to `target/bench/encryption.md`.
//!
//! A report, not a test: it asserts correctness (every fetched segment is
//! the original), never a timing.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};

use crate::infra::pg::{Cluster, Workdir};
use crate::infra::setup;
use crate::{build_walg, repo_root, target_dir};

const PER_WORKLOAD: usize = 12;
const KEY: &str = "4c0829fdfe7ae1987918edc585b1a90556d901eaea963c7625bb5734576dfb59";

#[derive(Debug, Clone, Copy, PartialEq)]
enum Variant {
    Plain,
    Sodium,
    Pgp,
}

impl Variant {
    const ALL: [Variant; 3] = [Variant::Plain, Variant::Sodium, Variant::Pgp];

    fn label(self) -> &'static str {
        match self {
            Variant::Plain => "lz4",
            Variant::Sodium => "lz4 + libsodium",
            Variant::Pgp => "lz4 + OpenPGP",
        }
    }
}

fn corpus(work: &Workdir) -> Result<Vec<PathBuf>> {
    let dir = work.owned_dir("corpus")?;
    let conf = format!(
        "archive_mode = on\narchive_command = 'test ! -f {0}/%f && cp %p {0}/%f'\ncheckpoint_timeout = 30s\nmax_wal_size = 1GB\n",
        dir.display()
    );
    let mut c = Cluster::init(&work.path.join("cluster"), &conf, &[])?;
    c.start()?;
    let segno = |c: &Cluster| -> Result<u64> {
        let name = c.sql("select pg_walfile_name(pg_current_wal_lsn())")?;
        Ok(u64::from_str_radix(&name[8..], 16)?)
    };
    let start = segno(&c)?;
    c.pgbench(&["-i", "-s", "10", "-q"])?;
    while segno(&c)? - start < PER_WORKLOAD as u64 {
        c.pgbench(&["-n", "-c", "4", "-j", "2", "-T", "5"])?;
    }
    let mid = segno(&c)?;
    c.sql("create table entropy (a text, b double precision)")?;
    while segno(&c)? - mid < PER_WORKLOAD as u64 {
        c.sql("insert into entropy select md5(random()::text) || random(), random() * 1e9 from generate_series(1, 300000)")?;
    }
    c.switch_and_wait_archived(Duration::from_secs(180))?;
    c.stop()?;
    let mut segs: Vec<PathBuf> = fs::read_dir(&dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.len() == 24 && n.chars().all(|c| c.is_ascii_hexdigit()))
        })
        .collect();
    segs.sort();
    Ok(segs)
}

fn walg(bin: &Path, variant: Variant, archive: &Path, args: &[&str]) -> Result<()> {
    // An Ed25519/Curve25519 test key without a passphrase: it encrypts and
    // decrypts.
    let pgp_key = repo_root().join("walg-core/testdata/pgp/a.sec");
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("WALG_FILE_PREFIX", archive)
        .env("WALG_COMPRESSION_METHOD", "lz4")
        .env("WALG_UPLOAD_CONCURRENCY", "1")
        .env("WALG_DOWNLOAD_CONCURRENCY", "1")
        .env("WALG_LOG_LEVEL", "warn")
        .args(args);
    match variant {
        Variant::Plain => {}
        Variant::Sodium => {
            cmd.env("WALG_LIBSODIUM_KEY", KEY)
                .env("WALG_LIBSODIUM_KEY_TRANSFORM", "hex");
        }
        Variant::Pgp => {
            cmd.env("WALG_PGP_KEY_PATH", &pgp_key);
        }
    }
    let out = cmd.output()?;
    ensure!(
        out.status.success(),
        "walg {args:?} ({}) failed: {}",
        variant.label(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

pub fn run() -> Result<()> {
    let repo = repo_root();
    let runs: usize = std::env::var("WALG_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .max(1);
    setup::postgres()?;
    println!("bench encryption: building walg (release) ...");
    let built = build_walg(&repo, true)?;
    let work = Workdir::new("bench-crypto")?;
    let bin = work.install_walg(&built)?;
    println!("bench encryption: making a corpus of real segments ...");
    let segs = corpus(&work)?;
    ensure!(
        segs.len() >= 2 * PER_WORKLOAD,
        "corpus too small: {}",
        segs.len()
    );
    let n = segs.len();
    let mut push = [Vec::new(), Vec::new(), Vec::new()];
    let mut fetch = [Vec::new(), Vec::new(), Vec::new()];
    let mut stored = [0u64; 3];
    for r in 0..runs {
        // The variants take turns segment by segment, their order rotating
        // every segment: this VM's disk slows down after gigabytes of
        // writes, and whole runs one after the other would hand that to
        // whichever variant came last.
        let archive = |i: usize| work.path.join(format!("archive-{r}-{i}"));
        let dest_dir = |i: usize| work.path.join(format!("restore-{r}-{i}"));
        let order = |k: usize| {
            let mut order = Variant::ALL;
            order.rotate_left((k + r) % Variant::ALL.len());
            order
        };
        let mut pushed = [Duration::ZERO; 3];
        for (k, s) in segs.iter().enumerate() {
            for v in order(k) {
                let i = v as usize;
                let t = Instant::now();
                walg(
                    &bin,
                    v,
                    &archive(i),
                    &["wal-push", &s.display().to_string()],
                )?;
                pushed[i] += t.elapsed();
            }
        }
        let mut fetched = [Duration::ZERO; 3];
        for v in Variant::ALL {
            fs::create_dir_all(dest_dir(v as usize))?;
        }
        for (k, s) in segs.iter().enumerate() {
            let name = s.file_name().and_then(|n| n.to_str()).context("name")?;
            for v in order(k) {
                let i = v as usize;
                let dest = dest_dir(i).join("RECOVERYXLOG");
                let t = Instant::now();
                walg(
                    &bin,
                    v,
                    &archive(i),
                    &["wal-fetch", name, &dest.display().to_string()],
                )?;
                fetched[i] += t.elapsed();
                fs::remove_file(&dest)?;
            }
        }
        for v in Variant::ALL {
            let i = v as usize;
            push[i].push(pushed[i]);
            fetch[i].push(fetched[i]);
            stored[i] = fs::read_dir(archive(i).join("wal_005"))?
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum();
            // Correctness, outside the timing: the last segment fetched
            // again must be the original.
            let last = segs.last().context("empty corpus")?;
            let name = last.file_name().and_then(|n| n.to_str()).context("name")?;
            let dest = dest_dir(i).join(name);
            walg(
                &bin,
                v,
                &archive(i),
                &["wal-fetch", name, &dest.display().to_string()],
            )?;
            ensure!(
                fs::read(&dest)? == fs::read(last)?,
                "{} restored a different segment",
                v.label()
            );
            fs::remove_dir_all(dest_dir(i))?;
            fs::remove_dir_all(archive(i))?;
        }
        println!("bench encryption: run {} of {runs} done", r + 1);
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0 / n as f64;
    let push: Vec<Duration> = push.into_iter().map(median).collect();
    let fetch: Vec<Duration> = fetch.into_iter().map(median).collect();
    let ratio = |v: &[Duration], i: usize| v[i].as_secs_f64() / v[0].as_secs_f64();
    let mut report = String::new();
    writeln!(
        report,
        "# walg encryption cost\n\n{n} real 16 MiB segments ({PER_WORKLOAD} pgbench, {PER_WORKLOAD} high-entropy), file storage, lz4, one process per segment, upload-ahead and prefetch off, the variants taking turns segment by segment, medians of {runs} runs, release build; encryption runs in a pipeline stage of its own.\n"
    )?;
    writeln!(
        report,
        "| | lz4 | lz4 + libsodium | ratio | lz4 + OpenPGP | ratio |\n|---|---:|---:|---:|---:|---:|"
    )?;
    for (what, v) in [("push", &push), ("fetch", &fetch)] {
        writeln!(
            report,
            "| {what}, ms/segment | {:.1} | {:.1} | {:.3}x | {:.1} | {:.3}x |",
            ms(v[0]),
            ms(v[1]),
            ratio(v, 1),
            ms(v[2]),
            ratio(v, 2)
        )?;
    }
    let mib = |b: u64| b as f64 / 1048576.0;
    writeln!(
        report,
        "| stored MiB | {:.1} | {:.1} | {:.4}x | {:.1} | {:.4}x |",
        mib(stored[0]),
        mib(stored[1]),
        stored[1] as f64 / stored[0] as f64,
        mib(stored[2]),
        stored[2] as f64 / stored[0] as f64
    )?;
    println!("\n{report}");
    let out = target_dir(&repo).join("bench");
    fs::create_dir_all(&out)?;
    fs::write(out.join("encryption.md"), &report)?;
    println!("written to {}", out.join("encryption.md").display());
    Ok(())
}
