//! The WAL corpus every peer archives and restores: real segments from a
//! throwaway PostgreSQL, archived by PostgreSQL itself (`cp` as
//! `archive_command`), from two workloads kept apart so results and
//! compression can be told per kind.
//!
//! It does not run a peer or time anything.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};

use super::{ARCHIVE_WAIT, MIN_SEGMENTS, PER_WORKLOAD};
use crate::infra::pg::Cluster;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Workload {
    Pgbench,
    Entropy,
}

impl Workload {
    pub(super) fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug)]
pub(super) struct Segment {
    pub(super) name: String,
    pub(super) workload: Workload,
    pub(super) path: PathBuf,
}

#[derive(Debug)]
pub(super) struct Corpus {
    pub(super) segments: Vec<Segment>,
    pub(super) segment_size: u64,
}

impl Corpus {
    pub(super) fn count(&self, w: Workload) -> usize {
        self.segments.iter().filter(|s| s.workload == w).count()
    }
}

/// The segment number of a WAL file name, for a given segment size.
pub(super) fn segno(name: &str, segment_size: u64) -> Result<u64> {
    ensure!(name.len() >= 24, "not a WAL file name: {name:?}");
    let log = u64::from_str_radix(&name[8..16], 16)
        .with_context(|| format!("parse WAL file name {name:?}"))?;
    let seg = u64::from_str_radix(&name[16..24], 16)
        .with_context(|| format!("parse WAL file name {name:?}"))?;
    Ok(log * (0x1_0000_0000 / segment_size) + seg)
}

pub(super) fn current_segno(c: &Cluster, segment_size: u64) -> Result<u64> {
    segno(
        &c.sql("select pg_walfile_name(pg_current_wal_lsn())")?,
        segment_size,
    )
}

/// Runs the two workloads on a new cluster whose `archive_command` copies
/// every finished segment into `corpus_dir`, so the corpus is exactly what
/// PostgreSQL archived. Returns the cluster still running (pgBackRest's
/// `stanza-create` needs it).
pub(super) fn make_corpus(dir: &Path, corpus_dir: &Path) -> Result<(Cluster, Corpus)> {
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
