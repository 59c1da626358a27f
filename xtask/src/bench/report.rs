//! The report: the settings, medians, walg/peer ratios, memory and
//! compression tables, as Markdown.
//!
//! It measures nothing; it renders what [`super::runner`] measured.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::cases::{Compression, MemoryRow, Peer, Row, Scenario, Storage};
use super::corpus::Workload;
use super::runner::{Bench, LargeMemory};
use super::s3::{S3S_VERSION, SHAPE};
use super::PREFETCH;

pub(super) fn secs(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64())
}

pub(super) fn ms_per(d: Duration, n: usize) -> String {
    if n == 0 {
        return "-".into();
    }
    format!("{:.1}", d.as_secs_f64() * 1000.0 / n as f64)
}

pub(super) fn one_line(s: &str) -> String {
    let s = s.replace('\n', " ").replace('|', "/");
    if s.chars().count() > 300 {
        format!("{}...", s.chars().take(300).collect::<String>())
    } else {
        s
    }
}

pub(super) fn tool_version(cmd: &[&str]) -> String {
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
pub(super) struct Times {
    pub(super) build: Duration,
    pub(super) corpus: Duration,
    pub(super) all: Duration,
    pub(super) loads: Vec<String>,
}

/// What the repetitions measured, for [`render`].
#[derive(Debug)]
pub(super) struct Results<'a> {
    pub(super) rows: &'a [Row],
    pub(super) memory: &'a [MemoryRow],
    pub(super) large: &'a LargeMemory,
    pub(super) compression: Option<&'a Compression>,
}

pub(super) fn render(
    b: &Bench<'_>,
    results: &Results<'_>,
    runs: usize,
    times: &Times,
    repo: &Path,
) -> String {
    let Results {
        rows,
        memory,
        large,
        compression,
    } = *results;
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
