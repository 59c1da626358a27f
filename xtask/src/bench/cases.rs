//! What is measured: the storages, the scenarios and the peers, the table
//! of rows the report prints, and the samples that fill it.
//!
//! Plain values: nothing here runs a process.

use std::time::Duration;

use super::PREFETCH;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Storage {
    File,
    /// s3s-fs over TLS on loopback.
    S3,
    /// The same through the shaping proxy.
    S3Shaped,
}

impl Storage {
    pub(super) const ALL: [Storage; 3] = [Storage::File, Storage::S3, Storage::S3Shaped];

    pub(super) fn name(self) -> &'static str {
        match self {
            Storage::File => "file",
            Storage::S3 => "s3",
            Storage::S3Shaped => "s3-shaped",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scenario {
    Push,
    Backlog,
    Fetch,
}

impl Scenario {
    pub(super) fn name(self) -> &'static str {
        match self {
            Scenario::Push => "push",
            Scenario::Backlog => "backlog",
            Scenario::Fetch => "fetch",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Peer {
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
    pub(super) fn slug(self) -> &'static str {
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

    pub(super) fn is_walg(self) -> bool {
        matches!(
            self,
            Peer::Walg | Peer::WalgNone | Peer::WalgAhead | Peer::WalgPrefetch
        )
    }
}

/// One measurement: wall time, and for per-segment scenarios the time per
/// workload kind.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Sample {
    pub(super) total: Duration,
    pub(super) by_kind: Option<[Duration; 2]>,
}

#[derive(Debug)]
pub(super) struct Row {
    pub(super) scenario: Scenario,
    pub(super) storage: Storage,
    pub(super) peer: Peer,
    pub(super) samples: Vec<Sample>,
    pub(super) failed: Option<String>,
}

impl Row {
    pub(super) fn all() -> Vec<Row> {
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

    pub(super) fn label(&self, concurrency: usize) -> String {
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

    pub(super) fn median(&self) -> Option<Sample> {
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

pub(super) fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    match v.len() {
        0 => Duration::ZERO,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2,
    }
}

#[derive(Debug)]
pub(super) struct MemoryRow {
    pub(super) label: &'static str,
    pub(super) kib: Vec<u64>,
    pub(super) failed: Option<String>,
}

impl MemoryRow {
    pub(super) fn all() -> Vec<MemoryRow> {
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
pub(super) struct Compression {
    pub(super) raw: [u64; 2],
    pub(super) walg: Option<[u64; 2]>,
    pub(super) pgbr: Option<[u64; 2]>,
}
