//! `walg st status | check | transfer | clean | identity`: the storages one
//! by one (the primary `default` and each failover), their health as the
//! status cache records it, and their maintenance.
//!
//! Health, probes and the status cache are [`walg_failover`]'s; leftovers of
//! killed uploads are [`walg_storage::clean`]'s; the identity rule is
//! [`walg_core::archive::identity`]'s. This module gathers the inputs and
//! prints; `transfer` copies one object at a time and verifies each copy.

mod clean;
mod identity;

use std::path::Path;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use walg_core::ErrorKind;

use crate::shared::drain;
use crate::shared::format::{ago, mib};
use crate::shared::load_config;
use crate::shared::output::out;
use crate::shared::storage;

// The `st` subcommands (a plain comment: clap would take a doc comment as help).
#[derive(Debug, Subcommand)]
pub enum StCommand {
    /// Each storage: alive or dead, when last checked or used, whether that
    /// is within WALG_FAILOVER_STORAGES_CACHE_LIFETIME; and the cache file.
    Status,
    /// Probe every storage now (list; with --write also upload and delete a
    /// small object) and record the result in the status cache.
    Check {
        /// Also probe writes.
        #[arg(long)]
        write: bool,
    },
    /// Copy WAL written to a failover storage back to another storage
    /// (the primary by default), verifying each copy.
    Transfer {
        /// Storage to copy from (a failover storage's name).
        #[arg(long)]
        source: String,
        /// Storage to copy to.
        #[arg(long, default_value = "default")]
        target: String,
        /// Remove each object from the source once its copy is verified.
        #[arg(long)]
        remove_source: bool,
    },
    /// Find, and with --confirm remove, what killed uploads left behind:
    /// temp files on file storage, incomplete multipart uploads on S3.
    #[command(
        after_help = "A temp file of a dead walg process on this host is removed whatever its age; \
other leftovers only when older than --older-than. A live writer's temp file is never touched.\n\n\
Examples:\n  walg st clean                        # dry run\n  walg st clean --older-than 6h --confirm\n  walg st clean --json\n\n\
Exit codes: 0 done (or nothing to do); 1 a storage could not be cleaned or a removal failed."
    )]
    Clean {
        /// Leftovers younger than this are kept (a duration: 30m, 6h, 2d).
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        older_than: std::time::Duration,
        /// Remove (without it: a dry run that only lists).
        #[arg(long)]
        confirm: bool,
        /// Print the reports as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Which cluster's WAL each storage holds (the system identifier a
    /// wal-push checks every segment against); --adopt hands the archive to
    /// a deliberate new cluster.
    #[command(
        after_help = "Examples:\n  walg st identity\n  walg st identity --adopt 7301234567890123456            # dry run\n  walg st identity --adopt 7301234567890123456 --confirm"
    )]
    Identity {
        /// Make every storage the archive of this system identifier (as
        /// `pg_controldata` prints it); the old one is kept as previous.
        #[arg(long, value_name = "SYSTEM_ID")]
        adopt: Option<u64>,
        /// Write the adoption (without it: a dry run).
        #[arg(long)]
        confirm: bool,
    },
}

/// Runs an `st` command.
pub async fn run(config: Option<&Path>, command: &StCommand) -> Result<()> {
    let cfg = load_config(config)?;
    let opened = storage::open_all(&cfg)?;
    let Some(failover) = opened.failover else {
        bail!("no storages configured")
    };
    match command {
        StCommand::Status => {
            match failover.cache_path() {
                Some(p) if failover.cache().is_persistent() => {
                    out!("status cache: {}", p.display())
                }
                Some(p) => out!("status cache: {} (unusable, kept in memory)", p.display()),
                None => out!(
                    "status cache: in memory only (set WALG_FAILOVER_STORAGES_CACHE_FILE or HOME)"
                ),
            }
            out!(
                "cache lifetime: {}",
                humantime::format_duration(cfg.failover.cache_lifetime)
            );
            out!(
                "{:<16} {:<8} {:<22} {:<22} {:<8} LOCATION / LAST ERROR",
                "STORAGE",
                "STATUS",
                "LAST CHECKED",
                "LAST USED",
                "FRESH"
            );
            for s in failover.status().await {
                let status = match s.alive {
                    Some(true) => "alive",
                    Some(false) => "dead",
                    None => "unknown",
                };
                let detail = s
                    .last_error
                    .clone()
                    .unwrap_or_else(|| s.fingerprint.clone());
                out!(
                    "{:<16} {:<8} {:<22} {:<22} {:<8} {}",
                    s.name,
                    status,
                    ago(s.last_checked),
                    ago(s.last_used),
                    if s.fresh { "yes" } else { "expired" },
                    detail
                );
            }
            print_backlog(&failover);
            Ok(())
        }
        StCommand::Check { write } => {
            let mut dead = Vec::new();
            for (name, result) in failover.check(*write).await {
                match result {
                    Ok(()) => out!(
                        "{name}: alive ({} probe; credentials from {})",
                        if *write { "read and write" } else { "read" },
                        cfg.storages
                            .iter()
                            .find(|s| s.name == name)
                            .map(crate::check::credential_source)
                            .unwrap_or_default()
                    ),
                    Err(e) => {
                        out!("{name}: dead: {e}");
                        dead.push(name);
                    }
                }
            }
            if !dead.is_empty() {
                bail!("storages not alive: {}", dead.join(", "));
            }
            Ok(())
        }
        StCommand::Transfer {
            source,
            target,
            remove_source,
        } => transfer(&failover, source, target, *remove_source).await,
        StCommand::Clean {
            older_than,
            confirm,
            json,
        } => clean::run(&cfg, *older_than, *confirm, *json).await,
        StCommand::Identity { adopt, confirm } => identity::run(&cfg, *adopt, *confirm).await,
    }
}

/// Per failover storage, what waits to drain back to the primary (from
/// the drain journals alone).
fn print_backlog(failover: &walg_failover::FailoverStore) {
    let backlog = walg_failover::drain::backlog(failover);
    if backlog.is_empty() {
        return;
    }
    match &failover.config().drain.dir {
        Some(d) => out!("drain back to the primary (journals in {}):", d.display()),
        None => out!("drain back to the primary:"),
    }
    for b in backlog {
        let what = match b.journal {
            "missing" => "no journal yet (the next wal-push lists this storage once)".to_string(),
            "damaged" => format!(
                "journal not trusted ({}); the next wal-push rebuilds it from a listing",
                b.problem.as_deref().unwrap_or("damaged")
            ),
            _ if b.files == 0 => "nothing waits".to_string(),
            _ => format!(
                "{} file(s) wait, the oldest written {} ({})",
                b.files,
                drain::since(b.oldest_since_ms),
                b.oldest_key.as_deref().unwrap_or("?")
            ),
        };
        out!(
            "  {:<16} {:<11} {what}",
            b.storage,
            format!(
                "{}{}",
                b.mode.as_str(),
                if b.spill { ", spill" } else { "" }
            )
        );
    }
}

async fn transfer(
    failover: &walg_failover::FailoverStore,
    source: &str,
    target: &str,
    remove_source: bool,
) -> Result<()> {
    use sha2::{Digest, Sha256};
    if source == target {
        bail!("--source and --target are both {source:?}; name two different storages");
    }
    let names: Vec<&str> = failover.members().iter().map(|m| m.name()).collect();
    let from = failover.member(source).with_context(|| {
        format!(
            "no storage named {source:?} (configured: {})",
            names.join(", ")
        )
    })?;
    let to = failover.member(target).with_context(|| {
        format!(
            "no storage named {target:?} (configured: {})",
            names.join(", ")
        )
    })?;
    let objects = from
        .list(walg_core::WAL_PREFIX)
        .await
        .with_context(|| format!("list WAL on {source:?}"))?;
    let (mut copied, mut present, mut bytes) = (0u64, 0u64, 0u64);
    for obj in objects {
        if walg_core::wal::layout::parse_wal_key(&obj.key).is_none() {
            continue;
        }
        let data = walg_core::store::read_all(from.get(&obj.key).await?)
            .await
            .with_context(|| format!("read {} from {source:?}", obj.key))?;
        let want = Sha256::digest(&data);
        let body = bytes::Bytes::from(data);
        match to
            .put(
                &obj.key,
                &body,
                walg_core::PutOptions {
                    if_not_exists: true,
                },
            )
            .await
        {
            Ok(()) => copied += 1,
            Err(e) if e.kind() == ErrorKind::Conflict => present += 1,
            Err(e) => return Err(e).with_context(|| format!("copy {} to {target:?}", obj.key)),
        }
        // Verify: what the target holds now is byte-for-byte what the source holds.
        let back = walg_core::store::read_all(to.get(&obj.key).await?).await?;
        if Sha256::digest(&back) != want {
            bail!("{} on {target:?} differs from the copy on {source:?}; left both in place, compare them before removing either", obj.key);
        }
        bytes += body.len() as u64;
        if remove_source {
            from.delete(&obj.key).await.with_context(|| {
                format!("remove {} from {source:?} after a verified copy", obj.key)
            })?;
        }
        tracing::info!(
            "transferred {} from {source:?} to {target:?} (verified)",
            obj.key
        );
    }
    out!("transfer {source} -> {target}: {copied} copied, {present} already present (verified identical), {} total", mib(bytes));
    Ok(())
}
