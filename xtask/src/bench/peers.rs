//! How each peer is configured and invoked: walg's JSON config, pgBackRest's
//! config and stanza, `dd` for the copy-plus-fsync floor; the argument
//! vectors of one push and one fetch.
//!
//! It does not time anything; [`super::runner`] does.

use std::ffi::OsString;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::cases::{Peer, Scenario, Storage};
use super::runner::Bench;
use super::s3::{S3_KEY, S3_SECRET};
use super::{PREFETCH, STANZA};
use crate::infra::emulators::BUCKET;
use crate::infra::pg;

/// How one peer is invoked.
#[derive(Debug)]
pub(super) enum Tool {
    Walg(PathBuf),
    Pgbr(PathBuf),
    Dd(PathBuf),
}

impl Tool {
    pub(super) fn push(&self, walg: &Path, seg: &str) -> Vec<OsString> {
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

    pub(super) fn fetch(&self, walg: &Path, seg: &str) -> Result<Vec<OsString>> {
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

pub(super) fn argv(parts: &[&std::ffi::OsStr]) -> Vec<OsString> {
    parts.iter().map(|p| p.to_os_string()).collect()
}

impl Bench<'_> {
    /// Writes the configuration for `peer` in `dir`, against the archive of
    /// the run in `archive_run` (itself for pushes), and creates the
    /// pgBackRest stanza when this run makes the archive.
    pub(super) fn tool(
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
}

/// A short, stable prefix for an archive id (FNV-1a).
pub(super) fn short_prefix(id: &str) -> String {
    let hash = id.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    format!("a{hash:08x}")
}
