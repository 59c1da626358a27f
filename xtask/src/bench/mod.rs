//! `cargo xtask bench`: how fast walg archives and restores real WAL, side by
//! side with pgBackRest and a `cp`-plus-fsync floor, as a report.
//!
//! It makes a corpus of real segments with a throwaway PostgreSQL (a pgbench
//! TPC-B run and a high-entropy insert workload, kept apart so results and
//! compression can be told per kind), keeps that cluster running so
//! pgBackRest stanzas can be created for it, and then, for file storage and
//! S3, lets the peers take turns, alternating their order every repetition
//! (the file pushes of walg, walg `none` and `dd` take turns segment by
//! segment).
//! S3 is `s3s-fs` (a Rust S3 server on the local file system that serves
//! requests in parallel, unlike moto), reached by both peers over TLS
//! through the same local proxy (pgBackRest speaks S3 over https only), once
//! directly (`s3`) and once through the xtask's proxy shaped like a network
//! to a cloud region (`s3-shaped`: 20 ms per request and per new connection,
//! 100 MB/s per connection and direction):
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
//! Every child runs as the `postgres` OS user (set directly with
//! `Command::uid`, not through `runuser`, whose PAM session would add
//! milliseconds to every call) with a clean environment. The report (medians,
//! walg/peer ratios, compression ratios, settings) is printed and written to
//! `target/bench/report.md`.
//!
//! What it does not do: assert targets (a benchmark is a report, not a test),
//! measure GCS or Azure, measure pgBackRest with 1 GiB segments (it needs a
//! cluster made with them), or tune the peers beyond the settings it states. A
//! peer that fails is reported as `failed: <reason>`, never hidden and never
//! fatal for the other peers.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};

use crate::infra::emulators::BUCKET;
use crate::infra::pg::{self, Cluster, Workdir};
use crate::infra::proxy::{Proxy, Shape};
use crate::infra::setup;
use crate::{build_walg, repo_root, target_dir};

pub mod archive;
pub mod crypto;

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

/// `cargo xtask bench`.
pub fn run(args: &[String]) -> Result<()> {
    if args.first().map(String::as_str) == Some("verify") {
        return crate::bench::archive::run();
    }
    let started = Instant::now();
    let repo = repo_root();
    let runs = env_usize("WALG_BENCH_RUNS", 3)?.max(1);
    let concurrency = env_usize("WALG_BENCH_CONCURRENCY", 8)?.max(1);

    setup::postgres()?;
    if !have("pgbackrest") {
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
    let report = render(
        &bench,
        &rows,
        &memory,
        &large,
        compression.as_ref(),
        runs,
        &times,
        &repo,
    );
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

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd} >/dev/null 2>&1"))
        .status()
        .is_ok_and(|s| s.success())
}

// ---------------------------------------------------------------------------
// The corpus

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workload {
    Pgbench,
    Entropy,
}

impl Workload {
    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug)]
struct Segment {
    name: String,
    workload: Workload,
    path: PathBuf,
}

#[derive(Debug)]
struct Corpus {
    segments: Vec<Segment>,
    segment_size: u64,
}

impl Corpus {
    fn count(&self, w: Workload) -> usize {
        self.segments.iter().filter(|s| s.workload == w).count()
    }
}

/// The segment number of a WAL file name, for a given segment size.
fn segno(name: &str, segment_size: u64) -> Result<u64> {
    ensure!(name.len() >= 24, "not a WAL file name: {name:?}");
    let log = u64::from_str_radix(&name[8..16], 16)
        .with_context(|| format!("parse WAL file name {name:?}"))?;
    let seg = u64::from_str_radix(&name[16..24], 16)
        .with_context(|| format!("parse WAL file name {name:?}"))?;
    Ok(log * (0x1_0000_0000 / segment_size) + seg)
}

fn current_segno(c: &Cluster, segment_size: u64) -> Result<u64> {
    segno(
        &c.sql("select pg_walfile_name(pg_current_wal_lsn())")?,
        segment_size,
    )
}

/// Runs the two workloads on a new cluster whose `archive_command` copies
/// every finished segment into `corpus_dir`, so the corpus is exactly what
/// PostgreSQL archived. Returns the cluster still running (pgBackRest's
/// `stanza-create` needs it).
fn make_corpus(dir: &Path, corpus_dir: &Path) -> Result<(Cluster, Corpus)> {
    let conf = format!(
        "archive_mode = on\narchive_command = 'test ! -f {0}/%f && cp %p {0}/%f'\n\
         checkpoint_timeout = 30s\nmax_wal_size = 1GB\n",
        corpus_dir.display()
    );
    let mut cluster = Cluster::init(dir, &conf, &[]).context("create the corpus cluster")?;
    cluster.start().context("start the corpus cluster")?;
    let segment_size: u64 = cluster
        .sql("select setting::bigint * (case unit when '8kB' then 8192 when 'B' then 1 else 1048576 end) from pg_settings where name = 'wal_segment_size'")?
        .parse()
        .context("read wal_segment_size")?;

    // pgbench: the initial load, then TPC-B with a few clients; the short
    // checkpoint_timeout gives the full-page images real OLTP WAL has.
    let start = current_segno(&cluster, segment_size)?;
    cluster
        .pgbench(&["-i", "-s", "10", "-q"])
        .context("run pgbench -i")?;
    let deadline = Instant::now() + Duration::from_secs(240);
    while current_segno(&cluster, segment_size)? - start < PER_WORKLOAD && Instant::now() < deadline
    {
        cluster
            .pgbench(&["-n", "-c", "4", "-j", "2", "-T", "10"])
            .context("run pgbench TPC-B")?;
    }
    let boundary = cluster
        .switch_and_wait_archived(ARCHIVE_WAIT)
        .context("archive the last pgbench segment")?;
    let pgbench_count = segno(&boundary, segment_size)? - start + 1;

    // High entropy: random text and numbers, which compress about as badly
    // as real data does, unlike pgbench's filler columns.
    let want = PER_WORKLOAD.max(MIN_SEGMENTS as u64 + 4 - pgbench_count.min(MIN_SEGMENTS as u64));
    let entropy_start = segno(&boundary, segment_size)?;
    cluster.sql("create table walg_bench_entropy (a text, b double precision)")?;
    while current_segno(&cluster, segment_size)? - entropy_start < want {
        cluster.sql(
            "insert into walg_bench_entropy select md5(random()::text) || random(), random() * 1e9 \
             from generate_series(1, 300000)",
        )?;
    }
    let last = cluster
        .switch_and_wait_archived(ARCHIVE_WAIT)
        .context("archive the last high-entropy segment")?;

    let mut segments = Vec::new();
    for entry in
        fs::read_dir(corpus_dir).with_context(|| format!("list {}", corpus_dir.display()))?
    {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.len() != 24
            || !name.chars().all(|c| c.is_ascii_hexdigit())
            || name.as_str() > last.as_str()
        {
            continue;
        }
        let workload = if name.as_str() <= boundary.as_str() {
            Workload::Pgbench
        } else {
            Workload::Entropy
        };
        segments.push(Segment {
            name,
            workload,
            path: entry.path(),
        });
    }
    segments.sort_by(|a, b| a.name.cmp(&b.name));
    ensure!(
        segments.len() >= MIN_SEGMENTS,
        "the corpus has {} segments, the backlog test needs at least {MIN_SEGMENTS}",
        segments.len()
    );
    Ok((
        cluster,
        Corpus {
            segments,
            segment_size,
        },
    ))
}

// ---------------------------------------------------------------------------
// Who runs what

/// The OS user children run as: `postgres` when we are root (as the server
/// would run them), else ourselves.
#[derive(Debug)]
struct Identity {
    ids: Option<(u32, u32)>,
    home: PathBuf,
}

impl Identity {
    fn new(home: PathBuf) -> Result<Identity> {
        if !pg::is_root() {
            return Ok(Identity { ids: None, home });
        }
        let id = |flag: &str| -> Result<u32> {
            let out = pg::run(Command::new("id").args([flag, "postgres"]))?;
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .context("parse the postgres user's id")
        };
        Ok(Identity {
            ids: Some((id("-u")?, id("-g")?)),
            home,
        })
    }
}

/// Kills the one child being waited for if it outlives [`CMD_TIMEOUT`]:
/// `Child::wait` has no timeout, and polling `try_wait` would add latency to
/// every timed call.
#[derive(Debug, Clone, Default)]
struct Watchdog(Arc<Mutex<Option<(u32, Instant)>>>);

impl Watchdog {
    fn start() -> Watchdog {
        let w = Watchdog::default();
        let slot = w.0.clone();
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(250));
            let due = match *slot.lock().unwrap_or_else(PoisonError::into_inner) {
                Some((pid, deadline)) if Instant::now() > deadline => Some(pid),
                _ => None,
            };
            if let Some(pid) = due {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
        });
        w
    }

    fn arm(&self, pid: u32) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((pid, Instant::now() + CMD_TIMEOUT));
    }

    fn disarm(&self) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

/// A child process killed (with its process group) when dropped.
#[derive(Debug)]
struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill")
            .args(["-TERM", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ---------------------------------------------------------------------------
// The S3 emulator

/// s3s-fs on 127.0.0.1, behind two TLS proxies (socat): one straight to
/// it, one through the shaping proxy. Both peers use TLS: pgBackRest speaks
/// S3 over https only, and walg trusts the proxies' self-signed certificate
/// through `SSL_CERT_FILE`, so neither pays a cost the other does not.
#[derive(Debug)]
struct S3 {
    /// The server's root; the bucket is the directory [`BUCKET`] in it.
    root: PathBuf,
    /// The CA certificate walg is given (pgBackRest does not verify).
    cert: PathBuf,
    tls_port: u16,
    shaped_tls_port: u16,
    _tls: Group,
    _shaped_tls: Group,
    _shaper: Proxy,
    _server: Group,
}

/// The version of s3s-fs that builds with this machine's Rust.
const S3S_VERSION: &str = "0.14.1";
const S3_KEY: &str = "walg-test";
const S3_SECRET: &str = "walg-test-secret";
/// What a network to a cloud region adds: one round trip per request and
/// per new connection, and one stream's bandwidth.
const SHAPE: Shape = Shape {
    round_trip: Duration::from_millis(20),
    bytes_per_sec: 100_000_000,
};

/// Installs s3s-fs under `<repo>/.tmp/tools/s3s` (once; ~5 minutes on two
/// cores) and returns the binary.
fn install_s3s(repo: &Path) -> Result<PathBuf> {
    let root = repo.join(".tmp/tools/s3s");
    let bin = root.join("bin/s3s-fs");
    if bin.is_file() {
        return Ok(bin);
    }
    println!("bench: installing s3s-fs {S3S_VERSION} (cargo install, once) ...");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "install",
            &format!("s3s-fs@{S3S_VERSION}"),
            "--locked",
            "--features",
            "binary",
            "--root",
        ])
        .arg(&root)
        .env("CARGO_TARGET_DIR", target_dir(repo).join("s3s-fs"))
        .status()
        .context("run cargo install s3s-fs")?;
    ensure!(
        status.success(),
        "cargo install s3s-fs@{S3S_VERSION} failed"
    );
    Ok(bin)
}

fn wait_listening(port: u16, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        ensure!(
            Instant::now() < deadline,
            "{what} did not listen on port {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// `socat` terminating TLS on `port` and forwarding to `upstream`.
fn tls_proxy(pem: &Path, port: u16, upstream: u16, log: &Path) -> Result<Group> {
    let log = File::create(log)?;
    let child = Command::new("socat")
        .arg("-b262144")
        .arg(format!(
            "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert={},verify=0",
            pem.display()
        ))
        .arg(format!("TCP:127.0.0.1:{upstream},nodelay"))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("start socat as a TLS proxy")?;
    let group = Group(child);
    wait_listening(port, "the TLS proxy")?;
    Ok(group)
}

/// A CA and a server certificate for 127.0.0.1 signed by it (rustls, like
/// any strict client, refuses a self-signed CA certificate used as the
/// server's own). Returns the CA certificate (what clients trust) and the
/// proxies' key + certificate file.
fn make_certificates(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let p = |name: &str| dir.join(name);
    let openssl = |args: &[&str]| -> Result<()> {
        pg::run(Command::new("openssl").args(args).current_dir(dir))
            .map(|_| ())
            .with_context(|| format!("openssl {}", args[0]))
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=walg bench CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ])?;
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "key.pem",
        "-out",
        "server.csr",
    ])?;
    fs::write(
        p("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "cert.pem",
    ])?;
    fs::write(
        p("proxy.pem"),
        [fs::read(p("key.pem"))?, fs::read(p("cert.pem"))?].concat(),
    )
    .context("write the proxies' pem file")?;
    fs::set_permissions(p("proxy.pem"), fs::Permissions::from_mode(0o600))?;
    fs::set_permissions(p("ca.pem"), fs::Permissions::from_mode(0o644))?;
    Ok((p("ca.pem"), p("proxy.pem")))
}

impl S3 {
    fn start(repo: &Path, work: &Path) -> Result<S3> {
        let bin = install_s3s(repo)?;
        if !have("socat") {
            setup::apt(&["socat"])?;
        }
        let root = work.join("s3s");
        fs::create_dir_all(root.join(BUCKET))?;
        let port = pg::free_port()?;
        let log = File::create(work.join("s3s-fs.log"))?;
        let server = Group(
            Command::new(&bin)
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--access-key", S3_KEY, "--secret-key", S3_SECRET])
                .arg(&root)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .process_group(0)
                .spawn()
                .context("start s3s-fs")?,
        );
        wait_listening(port, "s3s-fs")?;
        let shaper = Proxy::start_shaped(format!("127.0.0.1:{port}").parse()?, SHAPE)?;
        let shaper_port: u16 = shaper
            .url()
            .rsplit(':')
            .next()
            .unwrap_or_default()
            .parse()
            .context("the shaping proxy's port")?;

        let tls = work.join("tls");
        fs::create_dir_all(&tls)?;
        let (cert, pem) = make_certificates(&tls)?;
        fs::set_permissions(&tls, fs::Permissions::from_mode(0o755))?;
        let tls_port = pg::free_port()?;
        let tls_proxy_plain = tls_proxy(&pem, tls_port, port, &tls.join("socat.log"))?;
        let shaped_tls_port = pg::free_port()?;
        let tls_proxy_shaped = tls_proxy(
            &pem,
            shaped_tls_port,
            shaper_port,
            &tls.join("socat-shaped.log"),
        )?;
        Ok(S3 {
            root,
            cert,
            tls_port,
            shaped_tls_port,
            _tls: tls_proxy_plain,
            _shaped_tls: tls_proxy_shaped,
            _shaper: shaper,
            _server: server,
        })
    }

    fn port(&self, storage: Storage) -> u16 {
        match storage {
            Storage::S3Shaped => self.shaped_tls_port,
            _ => self.tls_port,
        }
    }

    /// walg's settings for `storage`, archiving under `prefix`.
    fn walg_settings(&self, storage: Storage, prefix: &str) -> Vec<(&'static str, String)> {
        vec![
            ("WALG_S3_PREFIX", format!("s3://{BUCKET}/{prefix}")),
            (
                "AWS_ENDPOINT",
                format!("https://127.0.0.1:{}", self.port(storage)),
            ),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_S3_FORCE_PATH_STYLE", "true".into()),
            ("AWS_ACCESS_KEY_ID", S3_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", S3_SECRET.into()),
        ]
    }

    /// Removes every object (the bucket is a directory).
    fn reset(&self) -> Result<()> {
        let bucket = self.root.join(BUCKET);
        for entry in fs::read_dir(&bucket)? {
            let path = entry?.path();
            if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            }
            .with_context(|| format!("remove {}", path.display()))?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// What is measured

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Storage {
    File,
    /// s3s-fs over TLS on loopback.
    S3,
    /// The same through the shaping proxy.
    S3Shaped,
}

impl Storage {
    const ALL: [Storage; 3] = [Storage::File, Storage::S3, Storage::S3Shaped];

    fn name(self) -> &'static str {
        match self {
            Storage::File => "file",
            Storage::S3 => "s3",
            Storage::S3Shaped => "s3-shaped",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Push,
    Backlog,
    Fetch,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Push => "push",
            Scenario::Backlog => "backlog",
            Scenario::Fetch => "fetch",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    /// walg one file per call (upload and download concurrency 1).
    Walg,
    /// The same with compression `none`: the bytes `cp` writes.
    WalgNone,
    /// walg with upload-ahead (backlog).
    WalgAhead,
    /// walg with restore prefetch (fetch).
    WalgPrefetch,
    /// pgBackRest synchronous archive-push / archive-get.
    Pgbr,
    /// pgBackRest with archive-async=y.
    PgbrAsync,
    /// `dd conv=fsync`: copy plus fsync in one process, the floor.
    CpFsync,
}

impl Peer {
    fn slug(self) -> &'static str {
        match self {
            Peer::Walg => "walg",
            Peer::WalgNone => "walg-none",
            Peer::WalgAhead => "walg-ahead",
            Peer::WalgPrefetch => "walg-prefetch",
            Peer::Pgbr => "pgbr",
            Peer::PgbrAsync => "pgbr-async",
            Peer::CpFsync => "cp",
        }
    }

    fn is_walg(self) -> bool {
        matches!(
            self,
            Peer::Walg | Peer::WalgNone | Peer::WalgAhead | Peer::WalgPrefetch
        )
    }
}

/// One measurement: wall time, and for per-segment scenarios the time per
/// workload kind.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    total: Duration,
    by_kind: Option<[Duration; 2]>,
}

#[derive(Debug)]
struct Row {
    scenario: Scenario,
    storage: Storage,
    peer: Peer,
    samples: Vec<Sample>,
    failed: Option<String>,
}

impl Row {
    fn all() -> Vec<Row> {
        let mut rows = Vec::new();
        for storage in Storage::ALL {
            let mut add = |scenario, peers: &[Peer]| {
                for &peer in peers {
                    rows.push(Row {
                        scenario,
                        storage,
                        peer,
                        samples: Vec::new(),
                        failed: None,
                    });
                }
            };
            if storage == Storage::File {
                add(
                    Scenario::Push,
                    &[Peer::Walg, Peer::WalgNone, Peer::Pgbr, Peer::CpFsync],
                );
            } else {
                add(Scenario::Push, &[Peer::Walg, Peer::Pgbr]);
            }
            add(
                Scenario::Backlog,
                &[Peer::WalgAhead, Peer::Walg, Peer::PgbrAsync],
            );
            add(
                Scenario::Fetch,
                &[Peer::Walg, Peer::WalgPrefetch, Peer::Pgbr, Peer::PgbrAsync],
            );
        }
        rows
    }

    fn label(&self, concurrency: usize) -> String {
        match (self.scenario, self.peer) {
            (_, Peer::Walg) => "walg (concurrency 1)".into(),
            (_, Peer::WalgNone) => "walg compression none (concurrency 1)".into(),
            (_, Peer::WalgAhead) => format!("walg upload-ahead ({concurrency})"),
            (_, Peer::WalgPrefetch) => format!("walg prefetch ({PREFETCH})"),
            (Scenario::Fetch, Peer::Pgbr) => "pgBackRest archive-get".into(),
            (_, Peer::Pgbr) => "pgBackRest archive-push".into(),
            (Scenario::Fetch, Peer::PgbrAsync) => {
                format!("pgBackRest archive-get async ({concurrency})")
            }
            (_, Peer::PgbrAsync) => format!("pgBackRest archive-push async ({concurrency})"),
            (_, Peer::CpFsync) => "cp + fsync (dd conv=fsync)".into(),
        }
    }

    fn median(&self) -> Option<Sample> {
        if self.failed.is_some() || self.samples.is_empty() {
            return None;
        }
        let total = median(self.samples.iter().map(|s| s.total).collect());
        let by_kind = if self.samples.iter().all(|s| s.by_kind.is_some()) {
            let k = |i: usize| {
                median(
                    self.samples
                        .iter()
                        .filter_map(|s| s.by_kind.map(|k| k[i]))
                        .collect(),
                )
            };
            Some([k(0), k(1)])
        } else {
            None
        };
        Some(Sample { total, by_kind })
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    match v.len() {
        0 => Duration::ZERO,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2,
    }
}

#[derive(Debug)]
struct MemoryRow {
    label: &'static str,
    kib: Vec<u64>,
    failed: Option<String>,
}

impl MemoryRow {
    fn all() -> Vec<MemoryRow> {
        [
            "walg wal-push",
            "walg wal-fetch",
            "pgBackRest archive-push",
            "pgBackRest archive-get",
        ]
        .into_iter()
        .map(|label| MemoryRow {
            label,
            kib: Vec::new(),
            failed: None,
        })
        .collect()
    }
}

/// Stored bytes per workload kind, for walg and pgBackRest (file storage).
#[derive(Debug, Default)]
struct Compression {
    raw: [u64; 2],
    walg: Option<[u64; 2]>,
    pgbr: Option<[u64; 2]>,
}

/// How one peer is invoked.
#[derive(Debug)]
enum Tool {
    Walg(PathBuf),
    Pgbr(PathBuf),
    Dd(PathBuf),
}

impl Tool {
    fn push(&self, walg: &Path, seg: &str) -> Vec<OsString> {
        let p = format!("pg_wal/{seg}");
        match self {
            Tool::Walg(cfg) => argv(&[
                walg.as_os_str(),
                "--config".as_ref(),
                cfg.as_os_str(),
                "wal-push".as_ref(),
                p.as_ref(),
            ]),
            Tool::Pgbr(cfg) => argv(&[
                "pgbackrest".as_ref(),
                format!("--config={}", cfg.display()).as_ref(),
                format!("--stanza={STANZA}").as_ref(),
                "archive-push".as_ref(),
                p.as_ref(),
            ]),
            Tool::Dd(dest) => argv(&[
                "dd".as_ref(),
                format!("if={p}").as_ref(),
                format!("of={}", dest.join(seg).display()).as_ref(),
                "bs=1M".as_ref(),
                "conv=fsync".as_ref(),
                "status=none".as_ref(),
            ]),
        }
    }

    fn fetch(&self, walg: &Path, seg: &str) -> Result<Vec<OsString>> {
        let dest = "pg_wal/RECOVERYXLOG";
        Ok(match self {
            Tool::Walg(cfg) => argv(&[
                walg.as_os_str(),
                "--config".as_ref(),
                cfg.as_os_str(),
                "wal-fetch".as_ref(),
                seg.as_ref(),
                dest.as_ref(),
            ]),
            Tool::Pgbr(cfg) => argv(&[
                "pgbackrest".as_ref(),
                format!("--config={}", cfg.display()).as_ref(),
                format!("--stanza={STANZA}").as_ref(),
                "archive-get".as_ref(),
                seg.as_ref(),
                dest.as_ref(),
            ]),
            Tool::Dd(_) => bail!("cp has no fetch"),
        })
    }
}

fn argv(parts: &[&std::ffi::OsStr]) -> Vec<OsString> {
    parts.iter().map(|p| p.to_os_string()).collect()
}

#[derive(Debug)]
struct Bench<'a> {
    runs_dir: PathBuf,
    identity: Identity,
    walg: PathBuf,
    corpus: Corpus,
    cluster_data: PathBuf,
    cluster_socket: PathBuf,
    cluster_port: u16,
    concurrency: usize,
    watchdog: Watchdog,
    s3: Option<&'a S3>,
}

impl Bench<'_> {
    fn run_dir(&self, r: usize, storage: Storage, scenario: Scenario, peer: Peer) -> PathBuf {
        self.runs_dir.join(format!(
            "r{r}-{}-{}-{}",
            storage.name(),
            scenario.name(),
            peer.slug()
        ))
    }

    /// The run whose archive a fetch reads: the same repetition's sequential
    /// push by the same program.
    fn source_of(&self, r: usize, storage: Storage, peer: Peer) -> PathBuf {
        self.run_dir(
            r,
            storage,
            Scenario::Push,
            if peer.is_walg() {
                Peer::Walg
            } else {
                Peer::Pgbr
            },
        )
    }

    fn measure(
        &self,
        r: usize,
        storage: Storage,
        scenario: Scenario,
        peer: Peer,
    ) -> Result<Sample> {
        let dir = self.run_dir(r, storage, scenario, peer);
        fresh_dir(&dir)?;
        let log = File::create(dir.join("commands.log")).context("create the command log")?;
        let result = match scenario {
            Scenario::Push => {
                let pgdata = self.pgdata(&dir.join("pgdata"), true, false)?;
                let tool = self.tool(&dir, storage, scenario, peer, &dir, &pgdata)?;
                let sample = self.push_each(&tool, &pgdata, &log)?;
                self.verify(storage, peer, &dir)?;
                Ok(sample)
            }
            Scenario::Backlog => {
                let pgdata = self.pgdata(&dir.join("pgdata"), true, true)?;
                let tool = self.tool(&dir, storage, scenario, peer, &dir, &pgdata)?;
                let sample = self.drain(&tool, &pgdata, &log)?;
                self.verify(storage, peer, &dir)?;
                Ok(sample)
            }
            Scenario::Fetch => {
                let source = self.source_of(r, storage, peer);
                ensure!(
                    source.join("pushed").exists(),
                    "no archive to fetch from: this repetition's push by the same program failed"
                );
                let pgdata = self.pgdata(&dir.join("pgdata"), false, false)?;
                let tool = self.tool(&dir, storage, scenario, peer, &source, &pgdata)?;
                self.fetch_each(&tool, &pgdata, &log)
            }
        };
        self.wait_quiet(&dir);
        if scenario != Scenario::Fetch && result.is_ok() {
            fs::write(dir.join("pushed"), "").context("mark the archive complete")?;
        }
        result.with_context(|| format!("see {}", dir.join("commands.log").display()))
    }

    /// A data directory as the peers see it: `global/pg_control` and
    /// `PG_VERSION` of the corpus cluster (pgBackRest checks the system id),
    /// `pg_wal` with hard links to the corpus and, for a backlog, a `.ready`
    /// file for every segment.
    fn pgdata(&self, dir: &Path, segments: bool, ready: bool) -> Result<PathBuf> {
        let status = dir.join("pg_wal").join("archive_status");
        fs::create_dir_all(&status).with_context(|| format!("create {}", status.display()))?;
        fs::create_dir_all(dir.join("global"))?;
        fs::copy(
            self.cluster_data.join("global/pg_control"),
            dir.join("global/pg_control"),
        )
        .context("copy pg_control")?;
        fs::copy(self.cluster_data.join("PG_VERSION"), dir.join("PG_VERSION"))
            .context("copy PG_VERSION")?;
        if segments {
            for s in &self.corpus.segments {
                fs::hard_link(&s.path, dir.join("pg_wal").join(&s.name))
                    .with_context(|| format!("link {} into the fake pg_wal", s.name))?;
                if ready {
                    File::create(status.join(format!("{}.ready", s.name)))?;
                }
            }
        }
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        pg::chown_postgres(dir)?;
        Ok(dir.to_path_buf())
    }

    /// Writes the configuration for `peer` in `dir`, against the archive of
    /// the run in `archive_run` (itself for pushes), and creates the
    /// pgBackRest stanza when this run makes the archive.
    fn tool(
        &self,
        dir: &Path,
        storage: Storage,
        scenario: Scenario,
        peer: Peer,
        archive_run: &Path,
        pgdata: &Path,
    ) -> Result<Tool> {
        let archive_id = archive_run
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // s3s-fs keeps per-object metadata in a file named after the
        // base64 of bucket and key (plus an upload id): pgBackRest's keys
        // under a long prefix exceed 255 bytes there ("File name too long",
        // a 500). A short prefix keeps every peer's keys well inside.
        let archive_id = if storage == Storage::File {
            archive_id
        } else {
            short_prefix(&archive_id)
        };
        let tool = match peer {
            Peer::CpFsync => {
                let dest = dir.join("repo");
                fs::create_dir_all(&dest)?;
                Tool::Dd(dest)
            }
            Peer::Walg | Peer::WalgNone | Peer::WalgAhead | Peer::WalgPrefetch => {
                let mut s = serde_json::Map::new();
                match storage {
                    Storage::File => {
                        s.insert(
                            "WALG_FILE_PREFIX".into(),
                            json!(archive_run.join("repo").display().to_string()),
                        );
                    }
                    Storage::S3 | Storage::S3Shaped => {
                        let s3 = self.s3.context("S3 is not running")?;
                        for (k, v) in s3.walg_settings(storage, &archive_id) {
                            s.insert(k.into(), json!(v));
                        }
                    }
                }
                let method = if peer == Peer::WalgNone {
                    "none"
                } else {
                    "lz4"
                };
                s.insert("WALG_COMPRESSION_METHOD".into(), json!(method));
                let up = if peer == Peer::WalgAhead {
                    self.concurrency
                } else {
                    1
                };
                let down = if peer == Peer::WalgPrefetch {
                    PREFETCH
                } else {
                    1
                };
                s.insert("WALG_UPLOAD_CONCURRENCY".into(), json!(up));
                s.insert("WALG_DOWNLOAD_CONCURRENCY".into(), json!(down));
                let cfg = dir.join("walg.json");
                fs::write(&cfg, serde_json::to_vec_pretty(&Value::Object(s))?)
                    .context("write the walg config")?;
                Tool::Walg(cfg)
            }
            Peer::Pgbr | Peer::PgbrAsync => {
                let repo = match storage {
                    Storage::File => format!("repo1-path={}\n", archive_run.join("repo").display()),
                    Storage::S3 | Storage::S3Shaped => {
                        let s3 = self.s3.context("S3 is not running")?;
                        format!(
                            "repo1-type=s3\nrepo1-s3-bucket={BUCKET}\nrepo1-s3-endpoint=127.0.0.1\nrepo1-storage-port={}\n\
                             repo1-s3-region=us-east-1\nrepo1-s3-key={S3_KEY}\nrepo1-s3-key-secret={S3_SECRET}\n\
                             repo1-s3-uri-style=path\nrepo1-storage-verify-tls=n\nrepo1-path=/{archive_id}\n",
                            s3.port(storage)
                        )
                    }
                };
                let conf = |pg1: &Path| {
                    format!(
                        "[global]\n{repo}compress-type=lz4\nlog-path={dir}/log\nlock-path={dir}/lock\nspool-path={dir}/spool\n\
                         log-level-console=warn\nlog-level-stderr=warn\narchive-async={async_}\nprocess-max={pm}\n\
                         archive-get-queue-max={queue}MiB\n\n[{STANZA}]\npg1-path={pg1}\npg1-socket-path={sock}\npg1-port={port}\n",
                        dir = dir.display(),
                        async_ = if peer == Peer::PgbrAsync { "y" } else { "n" },
                        pm = if peer == Peer::PgbrAsync { self.concurrency } else { 1 },
                        queue = (self.corpus.segment_size >> 20) * PREFETCH as u64,
                        pg1 = pg1.display(),
                        sock = self.cluster_socket.display(),
                        port = self.cluster_port,
                    )
                };
                // A packaged install has its log directory; without one
                // pgBackRest warns on every call and skips its log file.
                for sub in ["log", "lock", "spool"] {
                    fs::create_dir_all(dir.join(sub))
                        .with_context(|| format!("create the pgBackRest {sub} directory"))?;
                }
                let cfg = dir.join("pgbackrest.conf");
                fs::write(&cfg, conf(pgdata)).context("write the pgBackRest config")?;
                if scenario != Scenario::Fetch {
                    // stanza-create checks pg1-path against the running
                    // server's data_directory, so it gets the real one.
                    let stanza_cfg = dir.join("stanza.conf");
                    fs::write(&stanza_cfg, conf(&self.cluster_data))
                        .context("write the pgBackRest stanza config")?;
                    pg::chown_postgres(dir)?;
                    let log = File::create(dir.join("stanza.log"))?;
                    let cmd = self.command(
                        &argv(&[
                            "pgbackrest".as_ref(),
                            format!("--config={}", stanza_cfg.display()).as_ref(),
                            format!("--stanza={STANZA}").as_ref(),
                            "stanza-create".as_ref(),
                        ]),
                        dir,
                    );
                    self.exec(cmd, &log, "pgbackrest stanza-create")
                        .with_context(|| {
                            format!(
                                "create the pgBackRest stanza; see {}",
                                dir.join("stanza.log").display()
                            )
                        })?;
                }
                Tool::Pgbr(cfg)
            }
        };
        pg::chown_postgres(dir)?;
        Ok(tool)
    }

    fn command(&self, argv: &[OsString], cwd: &Path) -> Command {
        let mut c = Command::new(&argv[0]);
        c.args(&argv[1..])
            .current_dir(cwd)
            .env_clear()
            .env("PATH", CHILD_PATH)
            .env("HOME", &self.identity.home)
            .env("LANG", "C.UTF-8")
            .stdin(Stdio::null());
        if let Some(s3) = self.s3 {
            // walg's TLS roots (rustls-native-certs) come from this file.
            c.env("SSL_CERT_FILE", &s3.cert);
        }
        if let Some((uid, gid)) = self.identity.ids {
            c.uid(uid).gid(gid);
        }
        c
    }

    fn exec(&self, mut cmd: Command, log: &File, what: &str) -> Result<()> {
        cmd.stdout(log.try_clone()?).stderr(log.try_clone()?);
        let mut child = cmd.spawn().with_context(|| format!("start {what}"))?;
        self.watchdog.arm(child.id());
        let status = child.wait();
        self.watchdog.disarm();
        let status = status.with_context(|| format!("wait for {what}"))?;
        ensure!(status.success(), "{what} exited with {status}");
        Ok(())
    }

    fn push_each(&self, tool: &Tool, pgdata: &Path, log: &File) -> Result<Sample> {
        settle(&self.corpus);
        let mut kinds = [Duration::ZERO; 2];
        for s in &self.corpus.segments {
            let cmd = self.command(&tool.push(&self.walg, &s.name), pgdata);
            let t = Instant::now();
            self.exec(cmd, log, &format!("push {}", s.name))?;
            kinds[s.workload.index()] += t.elapsed();
        }
        Ok(Sample {
            total: kinds[0] + kinds[1],
            by_kind: Some(kinds),
        })
    }

    /// Sequential pushes of several peers, interleaved segment by segment
    /// (the peers' order rotating every segment), so a disk whose speed
    /// depends on what was written just before (this VM's disk wrote 16 MiB
    /// with `dd conv=fsync` in 17 ms fresh and in 56 ms after 2 GiB of
    /// other writes) weighs on every peer alike. One result per peer.
    fn measure_interleaved(
        &self,
        r: usize,
        storage: Storage,
        peers: &[Peer],
    ) -> Vec<Result<Sample>> {
        struct Run {
            dir: PathBuf,
            log: File,
            pgdata: PathBuf,
            tool: Tool,
            kinds: [Duration; 2],
            failed: Option<anyhow::Error>,
        }
        let runs: Vec<Result<Run>> = peers
            .iter()
            .map(|&peer| {
                let dir = self.run_dir(r, storage, Scenario::Push, peer);
                fresh_dir(&dir)?;
                let log =
                    File::create(dir.join("commands.log")).context("create the command log")?;
                let pgdata = self.pgdata(&dir.join("pgdata"), true, false)?;
                let tool = self.tool(&dir, storage, Scenario::Push, peer, &dir, &pgdata)?;
                Ok(Run {
                    dir,
                    log,
                    pgdata,
                    tool,
                    kinds: [Duration::ZERO; 2],
                    failed: None,
                })
            })
            .collect();
        let mut runs: Vec<Result<Run>> = runs;
        settle(&self.corpus);
        for (k, s) in self.corpus.segments.iter().enumerate() {
            for j in 0..runs.len() {
                let Ok(run) = &mut runs[(j + k) % peers.len()] else {
                    continue;
                };
                if run.failed.is_some() {
                    continue;
                }
                let cmd = self.command(&run.tool.push(&self.walg, &s.name), &run.pgdata);
                let t = Instant::now();
                match self.exec(cmd, &run.log, &format!("push {}", s.name)) {
                    Ok(()) => run.kinds[s.workload.index()] += t.elapsed(),
                    Err(e) => run.failed = Some(e),
                }
            }
        }
        runs.into_iter()
            .zip(peers)
            .map(|(run, &peer)| {
                let run = run?;
                self.wait_quiet(&run.dir);
                let see = || format!("see {}", run.dir.join("commands.log").display());
                if let Some(e) = run.failed {
                    return Err(e).with_context(see);
                }
                self.verify(storage, peer, &run.dir).with_context(see)?;
                fs::write(run.dir.join("pushed"), "").context("mark the archive complete")?;
                Ok(Sample {
                    total: run.kinds[0] + run.kinds[1],
                    by_kind: Some(run.kinds),
                })
            })
            .collect()
    }

    /// PostgreSQL's archiver loop: oldest `.ready` first, one call at a
    /// time, `.ready` -> `.done` on success.
    fn drain(&self, tool: &Tool, pgdata: &Path, log: &File) -> Result<Sample> {
        let status = pgdata.join("pg_wal").join("archive_status");
        settle(&self.corpus);
        let started = Instant::now();
        let mut done = 0;
        loop {
            let oldest = fs::read_dir(&status)?
                .filter_map(|e| {
                    e.ok()?
                        .file_name()
                        .to_str()?
                        .strip_suffix(".ready")
                        .map(str::to_string)
                })
                .min();
            let Some(seg) = oldest else { break };
            self.exec(
                self.command(&tool.push(&self.walg, &seg), pgdata),
                log,
                &format!("archive {seg}"),
            )?;
            fs::rename(
                status.join(format!("{seg}.ready")),
                status.join(format!("{seg}.done")),
            )
            .with_context(|| format!("mark {seg} done"))?;
            done += 1;
        }
        let elapsed = started.elapsed();
        ensure!(
            done == self.corpus.segments.len(),
            "archived {done} of {} segments",
            self.corpus.segments.len()
        );
        Ok(Sample {
            total: elapsed,
            by_kind: None,
        })
    }

    /// PostgreSQL's restore loop: each segment into `pg_wal/RECOVERYXLOG`,
    /// checked for size, then removed.
    fn fetch_each(&self, tool: &Tool, pgdata: &Path, log: &File) -> Result<Sample> {
        let dest = pgdata.join("pg_wal").join("RECOVERYXLOG");
        settle(&self.corpus);
        let mut kinds = [Duration::ZERO; 2];
        for s in &self.corpus.segments {
            let cmd = self.command(&tool.fetch(&self.walg, &s.name)?, pgdata);
            let t = Instant::now();
            self.exec(cmd, log, &format!("fetch {}", s.name))?;
            kinds[s.workload.index()] += t.elapsed();
            let len = fs::metadata(&dest)
                .with_context(|| format!("stat the fetched {}", s.name))?
                .len();
            ensure!(
                len == self.corpus.segment_size,
                "fetched {} has {len} bytes, not {}",
                s.name,
                self.corpus.segment_size
            );
            fs::remove_file(&dest).with_context(|| format!("remove the fetched {}", s.name))?;
        }
        Ok(Sample {
            total: kinds[0] + kinds[1],
            by_kind: Some(kinds),
        })
    }

    /// On file storage, checks that every corpus segment reached the archive
    /// (a success exit is not proof enough, upload-ahead markers included).
    fn verify(&self, storage: Storage, peer: Peer, dir: &Path) -> Result<()> {
        if storage != Storage::File {
            return Ok(());
        }
        let stored = stored_sizes(&dir.join("repo"), &self.corpus);
        let missing: Vec<&str> = self
            .corpus
            .segments
            .iter()
            .filter(|s| stored[self.index(&s.name)].is_none())
            .map(|s| s.name.as_str())
            .collect();
        ensure!(
            missing.is_empty(),
            "{} reported success but {} segments are not in its archive, e.g. {}",
            peer.slug(),
            missing.len(),
            missing[0]
        );
        Ok(())
    }

    fn index(&self, name: &str) -> usize {
        self.corpus
            .segments
            .iter()
            .position(|s| s.name == name)
            .unwrap_or(usize::MAX)
    }

    /// Waits until no process started for this run is left (pgBackRest's
    /// async workers outlive the call that forked them), so it cannot steal
    /// CPU from the next peer; kills stragglers after 30 s.
    fn wait_quiet(&self, dir: &Path) {
        let needle = dir.to_string_lossy().into_owned();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let pids = processes_mentioning(&needle);
            if pids.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                for pid in pids {
                    let _ = Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .stderr(Stdio::null())
                        .status();
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn compression(&self, r: usize) -> Compression {
        let mut c = Compression::default();
        for s in &self.corpus.segments {
            c.raw[s.workload.index()] += self.corpus.segment_size;
        }
        let per_kind = |dir: PathBuf| -> Option<[u64; 2]> {
            let sizes = stored_sizes(&dir.join("repo"), &self.corpus);
            let mut out = [0; 2];
            for (s, size) in self.corpus.segments.iter().zip(sizes) {
                out[s.workload.index()] += size?;
            }
            Some(out)
        };
        c.walg = per_kind(self.run_dir(r, Storage::File, Scenario::Push, Peer::Walg));
        c.pgbr = per_kind(self.run_dir(r, Storage::File, Scenario::Push, Peer::Pgbr));
        c
    }

    fn cleanup(&self, r: usize, storage: Storage) {
        let prefix = format!("r{r}-{}-", storage.name());
        for entry in fs::read_dir(&self.runs_dir).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
        if storage != Storage::File {
            if let Some(s3) = self.s3 {
                if let Err(e) = s3.reset() {
                    println!("bench: {e:#}");
                }
            }
        }
    }

    /// Peak RSS of one push and one fetch of a full high-entropy segment.
    fn memory(&self, r: usize, rows: &mut [MemoryRow]) {
        let seg = self
            .corpus
            .segments
            .iter()
            .find(|s| s.workload == Workload::Entropy)
            .unwrap_or(&self.corpus.segments[0])
            .name
            .clone();
        for (i, walg) in [(0usize, true), (2, false)] {
            if rows[i].failed.is_some() && rows[i + 1].failed.is_some() {
                continue;
            }
            let peer = if walg { Peer::Walg } else { Peer::Pgbr };
            let dir = self.runs_dir.join(format!("r{r}-mem-{}", peer.slug()));
            let result = (|| -> Result<(u64, u64)> {
                fresh_dir(&dir)?;
                let log = File::create(dir.join("commands.log"))?;
                let pgdata = self.pgdata(&dir.join("pgdata"), true, false)?;
                let tool = self.tool(&dir, Storage::File, Scenario::Push, peer, &dir, &pgdata)?;
                let push =
                    self.peak_kib(&tool.push(&self.walg, &seg), &pgdata, &dir, &log, "push")?;
                let fetch =
                    self.peak_kib(&tool.fetch(&self.walg, &seg)?, &pgdata, &dir, &log, "fetch")?;
                Ok((push, fetch))
            })();
            self.wait_quiet(&dir);
            let _ = fs::remove_dir_all(&dir);
            match result {
                Ok((push, fetch)) => {
                    rows[i].kib.push(push);
                    rows[i + 1].kib.push(fetch);
                }
                Err(e) => {
                    rows[i].failed = Some(format!("{e:#}"));
                    rows[i + 1].failed = Some(format!("{e:#}"));
                }
            }
        }
    }

    /// Peak RSS of one walg push and fetch of a sparse 1 GiB segment
    /// (compression `none`, so every byte crosses the storage path), on
    /// file storage and on S3.
    fn large_memory(&self, built: &Path) -> Vec<(String, Result<Vec<(String, u64)>, String>)> {
        let mut out = Vec::new();
        let dir = self.runs_dir.join("mem-1gib");
        let file = (|| {
            fresh_dir(&dir)?;
            let settings = crate::e2e::file_settings(&dir.join("repo"));
            crate::e2e::memory::large_segment_memory(
                built,
                "bench-1gib-file",
                &settings,
                &["none"],
                1024,
            )
        })();
        let _ = fs::remove_dir_all(&dir);
        out.push(("file".to_string(), file.map_err(|e| format!("{e:#}"))));
        let s3 = match self.s3 {
            None => Err("S3 is not running".to_string()),
            Some(s3) => {
                let settings = s3
                    .walg_settings(Storage::S3, "mem-1gib")
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), json!(v)))
                    .collect();
                let r = crate::e2e::memory::large_segment_memory(
                    built,
                    "bench-1gib-s3",
                    &settings,
                    &["none"],
                    1024,
                )
                .map_err(|e| format!("{e:#}"));
                let _ = s3.reset();
                r
            }
        };
        out.push(("s3".to_string(), s3));
        out
    }

    fn peak_kib(
        &self,
        argv: &[OsString],
        pgdata: &Path,
        dir: &Path,
        log: &File,
        what: &str,
    ) -> Result<u64> {
        let out = dir.join(format!("{what}.rss"));
        let mut wrapped: Vec<OsString> = vec![
            "/usr/bin/time".into(),
            "-f".into(),
            "%M".into(),
            "-o".into(),
            out.clone().into(),
        ];
        wrapped.extend(argv.iter().cloned());
        self.exec(
            self.command(&wrapped, pgdata),
            log,
            &format!("{what} under /usr/bin/time"),
        )?;
        let text = fs::read_to_string(&out).with_context(|| format!("read {}", out.display()))?;
        text.lines()
            .last()
            .unwrap_or_default()
            .trim()
            .parse()
            .with_context(|| format!("parse peak RSS from {text:?}"))
    }
}

/// Before a timed run: writes back every dirty page, so no peer's fsyncs
/// pay for what the one before it wrote, and reads the corpus into the page
/// cache, as PostgreSQL's archiver finds WAL it has just written (pgBackRest
/// drops the files it read from the cache, so whichever peer ran after it
/// read cold files: 13 against 39 ms per segment for the same `cp`).
fn settle(corpus: &Corpus) {
    let _ = Command::new("sync").status();
    for s in &corpus.segments {
        if let Ok(mut f) = File::open(&s.path) {
            let _ = std::io::copy(&mut f, &mut std::io::sink());
        }
    }
}

/// A short, stable prefix for an archive id (FNV-1a).
fn short_prefix(id: &str) -> String {
    let hash = id.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    format!("a{hash:08x}")
}

fn fresh_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("remove {}", dir.display()))?;
    }
    fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    pg::chown_postgres(dir)
}

/// The stored size of each corpus segment under `repo` (any layout: walg's
/// `wal_005/<seg>.lz4`, pgBackRest's `archive/<stanza>/<ver>/<dir>/<seg>-<sha1>.lz4`,
/// a plain copy), by corpus index.
fn stored_sizes(repo: &Path, corpus: &Corpus) -> Vec<Option<u64>> {
    let mut out = vec![None; corpus.segments.len()];
    let mut stack = vec![repo.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(base) = name.get(..24) else { continue };
            // Temp files of an interrupted write are not stored segments.
            if name.contains("tmp") || name.ends_with(".partial") {
                continue;
            }
            if let Ok(i) = corpus
                .segments
                .binary_search_by(|s| s.name.as_str().cmp(base))
            {
                out[i] = Some(meta.len());
            }
        }
    }
    out
}

fn processes_mentioning(needle: &str) -> Vec<u32> {
    let me = std::process::id();
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = fs::read(e.path().join("cmdline")).ok()?;
            (pid != me && String::from_utf8_lossy(&cmdline).contains(needle)).then_some(pid)
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The report

fn secs(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64())
}

fn ms_per(d: Duration, n: usize) -> String {
    if n == 0 {
        return "-".into();
    }
    format!("{:.1}", d.as_secs_f64() * 1000.0 / n as f64)
}

fn one_line(s: &str) -> String {
    let s = s.replace('\n', " ").replace('|', "/");
    if s.chars().count() > 300 {
        format!("{}...", s.chars().take(300).collect::<String>())
    } else {
        s
    }
}

fn tool_version(cmd: &[&str]) -> String {
    Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_string()
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Where the bench's own time went, and how busy the machine was.
#[derive(Debug)]
struct Times {
    build: Duration,
    corpus: Duration,
    all: Duration,
    loads: Vec<String>,
}

fn render(
    b: &Bench<'_>,
    rows: &[Row],
    memory: &[MemoryRow],
    large: &[(String, Result<Vec<(String, u64)>, String>)],
    compression: Option<&Compression>,
    runs: usize,
    times: &Times,
    repo: &Path,
) -> String {
    let n = b.corpus.segments.len();
    let (np, ne) = (
        b.corpus.count(Workload::Pgbench),
        b.corpus.count(Workload::Entropy),
    );
    let commit = tool_version(&[
        "git",
        "-C",
        &repo.display().to_string(),
        "log",
        "-1",
        "--format=%h %s",
    ]);
    let mut o = String::new();
    let _ = writeln!(o, "# walg bench\n");
    let _ = writeln!(o, "- walg: release build of {commit}");
    let _ = writeln!(
        o,
        "- peers: {}, cp + fsync = `dd bs=1M conv=fsync` (one process per segment)",
        tool_version(&["pgbackrest", "version"])
    );
    let _ = writeln!(
        o,
        "- machine: {} CPUs; storage: file system under /tmp; S3 = s3s-fs {S3S_VERSION} on 127.0.0.1 (its files under /tmp), both peers over https through the same local socat TLS proxy (pgBackRest speaks S3 over TLS only); s3-shaped = the same through a proxy adding {} ms per request and per new connection and {} MB/s per connection and direction",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        SHAPE.round_trip.as_millis(),
        SHAPE.bytes_per_sec / 1_000_000
    );
    let _ = writeln!(
        o,
        "- corpus: {n} real segments of {} MiB archived by PostgreSQL: {np} from pgbench (-i -s 10, then TPC-B -c 4 -j 2, checkpoint_timeout 30s), {ne} high-entropy (md5(random())||random(), random()*1e9 inserts)",
        b.corpus.segment_size >> 20
    );
    let _ = writeln!(
        o,
        "- compression lz4 for all; every call is one process run as the postgres user from the data directory with %p = pg_wal/<segment> (fetch: %p = pg_wal/RECOVERYXLOG, removed after each call)"
    );
    let _ = writeln!(
        o,
        "- concurrency {c}: walg WALG_UPLOAD_CONCURRENCY={c} (backlog upload-ahead), pgBackRest process-max={c} (async push and get); walg prefetch WALG_DOWNLOAD_CONCURRENCY={PREFETCH}, pgBackRest archive-get-queue-max={q}MiB ({PREFETCH} segments); \"concurrency 1\" rows set WALG_UPLOAD_CONCURRENCY=1 and WALG_DOWNLOAD_CONCURRENCY=1",
        c = b.concurrency,
        q = (b.corpus.segment_size >> 20) * PREFETCH as u64
    );
    let _ = writeln!(
        o,
        "- medians of {runs} repetitions (WALG_BENCH_RUNS), peers alternating order (file push: walg, walg none and dd taking turns segment by segment); 1-minute load average at the start of each repetition: {}",
        times.loads.join(", ")
    );
    let _ = writeln!(
        o,
        "- bench time {:.0}s in all: release build {:.0}s, corpus {:.0}s, measurements {:.0}s\n",
        times.all.as_secs_f64(),
        times.build.as_secs_f64(),
        times.corpus.as_secs_f64(),
        (times.all.saturating_sub(times.build + times.corpus)).as_secs_f64()
    );

    let _ = writeln!(o, "## Time (medians)\n");
    let _ = writeln!(
        o,
        "| scenario | storage | peer | total s | ms/segment | pgbench ms/seg | entropy ms/seg |"
    );
    let _ = writeln!(o, "|---|---|---|---:|---:|---:|---:|");
    for row in rows {
        let label = row.label(b.concurrency);
        let (sc, st) = (row.scenario.name(), row.storage.name());
        match (row.median(), &row.failed) {
            (_, Some(e)) => {
                let _ = writeln!(
                    o,
                    "| {sc} | {st} | {label} | failed: {} | | | |",
                    one_line(e)
                );
            }
            (Some(m), None) => {
                let (p, e) = match m.by_kind {
                    Some(k) => (ms_per(k[0], np), ms_per(k[1], ne)),
                    None => ("-".into(), "-".into()),
                };
                let _ = writeln!(
                    o,
                    "| {sc} | {st} | {label} | {} | {} | {p} | {e} |",
                    secs(m.total),
                    ms_per(m.total, n)
                );
            }
            (None, None) => {
                let _ = writeln!(o, "| {sc} | {st} | {label} | not run | | | |");
            }
        }
    }

    let find = |sc: Scenario, st: Storage, p: Peer| {
        rows.iter()
            .find(|r| r.scenario == sc && r.storage == st && r.peer == p)
    };
    let ratio = |a: (Scenario, Storage, Peer), bb: (Scenario, Storage, Peer)| -> String {
        let (Some(x), Some(y)) = (find(a.0, a.1, a.2), find(bb.0, bb.1, bb.2)) else {
            return "n/a".into();
        };
        match (x.median(), y.median()) {
            (Some(x), Some(y)) if !y.total.is_zero() => {
                format!("{:.2}x", x.total.as_secs_f64() / y.total.as_secs_f64())
            }
            _ => "n/a (a side failed)".into(),
        }
    };
    use Peer::*;
    use Scenario::*;
    use Storage::{File as F, S3Shaped as X, S3 as S};
    let _ = writeln!(
        o,
        "\n## walg / peer (time ratio, lower is better for walg)\n"
    );
    let _ = writeln!(o, "| comparison | ratio | target |");
    let _ = writeln!(o, "|---|---:|---|");
    type Key = (Scenario, Storage, Peer);
    let mut pairs: Vec<(String, Key, Key, &str)> = vec![
        (
            "push file: walg / pgBackRest archive-push".into(),
            (Push, F, Walg),
            (Push, F, Pgbr),
            "<= 0.75x",
        ),
        (
            "push file: walg / cp + fsync".into(),
            (Push, F, Walg),
            (Push, F, CpFsync),
            "<= 1.0x",
        ),
        (
            "push file: walg compression none / cp + fsync".into(),
            (Push, F, WalgNone),
            (Push, F, CpFsync),
            "<= 1.0x",
        ),
        (
            "backlog file: walg upload-ahead / pgBackRest async".into(),
            (Backlog, F, WalgAhead),
            (Backlog, F, PgbrAsync),
            "< 1.0x",
        ),
        (
            "backlog file: walg upload-ahead / walg sequential".into(),
            (Backlog, F, WalgAhead),
            (Backlog, F, Walg),
            "",
        ),
        (
            "fetch file: walg / pgBackRest archive-get".into(),
            (Fetch, F, Walg),
            (Fetch, F, Pgbr),
            "<= 0.8x",
        ),
        (
            "fetch file: walg prefetch / pgBackRest async get".into(),
            (Fetch, F, WalgPrefetch),
            (Fetch, F, PgbrAsync),
            "",
        ),
        (
            "fetch file: walg prefetch / walg sequential".into(),
            (Fetch, F, WalgPrefetch),
            (Fetch, F, Walg),
            "",
        ),
    ];
    for st in [S, X] {
        let n = st.name();
        let shaped = st == X;
        pairs.extend([
            (
                format!("push {n}: walg / pgBackRest archive-push"),
                (Push, st, Walg),
                (Push, st, Pgbr),
                "",
            ),
            (
                format!("backlog {n}: walg upload-ahead / walg sequential"),
                (Backlog, st, WalgAhead),
                (Backlog, st, Walg),
                if shaped { "<= 0.33x" } else { "" },
            ),
            (
                format!("backlog {n}: walg upload-ahead / pgBackRest async"),
                (Backlog, st, WalgAhead),
                (Backlog, st, PgbrAsync),
                if shaped { "< 1.0x" } else { "" },
            ),
            (
                format!("fetch {n}: walg / pgBackRest archive-get"),
                (Fetch, st, Walg),
                (Fetch, st, Pgbr),
                "",
            ),
            (
                format!("fetch {n}: walg prefetch / walg sequential"),
                (Fetch, st, WalgPrefetch),
                (Fetch, st, Walg),
                if shaped { "<= 0.5x" } else { "" },
            ),
            (
                format!("fetch {n}: walg prefetch / pgBackRest async get"),
                (Fetch, st, WalgPrefetch),
                (Fetch, st, PgbrAsync),
                if shaped { "< 1.0x" } else { "" },
            ),
        ]);
    }
    for (label, a, bb, target) in pairs {
        let _ = writeln!(o, "| {label} | {} | {target} |", ratio(a, bb));
    }

    let _ = writeln!(
        o,
        "\n## Peak resident memory, one call, file storage, one high-entropy segment (median)\n"
    );
    let _ = writeln!(o, "| process | peak RSS MiB |");
    let _ = writeln!(o, "|---|---:|");
    for m in memory {
        let v = match &m.failed {
            Some(e) => format!("failed: {}", one_line(e)),
            None if m.kib.is_empty() => "not run".into(),
            None => {
                let mut k = m.kib.clone();
                k.sort_unstable();
                format!("{:.1}", k[k.len() / 2] as f64 / 1024.0)
            }
        };
        let target = if m.label == "walg wal-push" {
            " (target <= 16)"
        } else {
            ""
        };
        let _ = writeln!(o, "| {}{target} | {v} |", m.label);
    }

    let _ = writeln!(
        o,
        "\n## Peak resident memory, walg, one 1 GiB segment (compression none, sparse source)\n"
    );
    let _ = writeln!(o, "| storage | peak RSS MiB (target < 64) |");
    let _ = writeln!(o, "|---|---|");
    for (storage, result) in large {
        let v = match result {
            Err(e) => format!("failed: {}", one_line(e)),
            Ok(peaks) => peaks
                .iter()
                .map(|(what, kib)| format!("{what} {:.1}", *kib as f64 / 1024.0))
                .collect::<Vec<_>>()
                .join(", "),
        };
        let _ = writeln!(o, "| {storage} | {v} |");
    }

    let _ = writeln!(
        o,
        "\n## Compression ratio (WAL bytes / stored bytes, lz4, file storage)\n"
    );
    let _ = writeln!(o, "| workload | segments | walg | pgBackRest |");
    let _ = writeln!(o, "|---|---:|---:|---:|");
    match compression {
        None => {
            let _ = writeln!(o, "| (not measured) | | | |");
        }
        Some(c) => {
            let r = |stored: Option<[u64; 2]>, i: usize| match stored {
                Some(s) if s[i] > 0 => format!("{:.2}", c.raw[i] as f64 / s[i] as f64),
                _ => "n/a".into(),
            };
            let _ = writeln!(
                o,
                "| pgbench | {np} | {} | {} |",
                r(c.walg, 0),
                r(c.pgbr, 0)
            );
            let _ = writeln!(
                o,
                "| high-entropy | {ne} | {} | {} |",
                r(c.walg, 1),
                r(c.pgbr, 1)
            );
        }
    }
    o
}
