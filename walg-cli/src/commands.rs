//! The subcommands and the mapping of their failures to exit codes.

use std::path::Path;
use std::time::{Instant, SystemTime};

use anyhow::{bail, Context, Result};
use walg_core::pipeline::ahead::{AheadDir, FileStamp, Marker};
use walg_core::pipeline::fetch::{fetch_file, FetchError, FetchOptions};
use walg_core::pipeline::push::{
    push_file, push_validated, validate_local, PushOptions, PushOutcome,
};
use walg_core::store::Store;
use walg_core::ErrorKind;

use crate::config::{Config, Raw};
use crate::storage::{self, Opened};
use crate::{Cli, Command, StCommand, EXIT_NOT_FOUND};

pub(crate) fn load_config(cli: &Cli) -> Result<Config> {
    let raw = Raw::load(cli.config.as_deref())?;
    let cfg = Config::from_raw(&raw)?;
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    Ok(cfg)
}

/// Runs a command and returns its exit code.
pub async fn run(cli: Cli) -> u8 {
    if let Command::WalStatus(args) = &cli.command {
        // Its own exit codes: the monitoring convention.
        return match crate::wal_status::run(cli.config.as_deref(), args).await {
            Ok(code) => code,
            Err(e) => {
                tracing::error!("{e:#}");
                3
            }
        };
    }
    let result = match &cli.command {
        Command::WalPush { path } => wal_push(&cli, path).await,
        Command::WalFetch { name, destination } => wal_fetch(&cli, name, destination).await,
        Command::WalPrefetch {
            name,
            pg_wal,
            destination_name,
            segment_size,
        } => crate::prefetch::run(&cli, name, pg_wal, destination_name, *segment_size).await,
        Command::St { command } => st(&cli, command).await,
        Command::DistAssets { dir } => crate::dist_assets::run(dir),
        Command::Check { json, conninfo } => {
            return crate::check::command(cli.config.as_deref(), *json, conninfo.clone()).await
        }
        Command::Archive(command) => return crate::archive::run(&cli, command).await,
        Command::WalStatus(_) => Ok(()),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            let not_found = e
                .downcast_ref::<FetchError>()
                .is_some_and(FetchError::is_not_found);
            if not_found {
                // Normal at the end of recovery: PostgreSQL asks for the
                // next segment until one is missing.
                tracing::info!("{e:#}");
                EXIT_NOT_FOUND
            } else {
                tracing::error!("{e:#}");
                1
            }
        }
    }
}

pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

async fn wal_push(cli: &Cli, path: &Path) -> Result<()> {
    let started = Instant::now();
    // Refuse a bad file before touching the configuration or any storage.
    let (name, len) = validate_local(path).with_context(|| format!("push {}", path.display()))?;
    let cfg = load_config(cli)?;
    // A segment's page header names its cluster: every storage checks it
    // against the archive identity before its first WAL write.
    let system_id = matches!(name, walg_core::WalName::Segment(_))
        .then(|| walg_core::archive::identity::segment_system_id(path).ok())
        .flatten();
    let Opened { store, .. } = storage::open_guarded(&cfg, system_id)?;
    let opts = PushOptions {
        compression: cfg.compression,
        encryption: cfg.encryption.clone(),
        prevent_overwrite: cfg.prevent_overwrite,
    };
    let ahead = if cfg.upload_concurrency > 1 {
        AheadDir::for_file(path)
    } else {
        None
    };

    if let Some(ahead) = &ahead {
        if let Some(marker) = ahead.verified(store.as_ref(), &name, path, len).await {
            ahead.remove_marker(&name);
            ahead.clean_stale();
            tracing::info!(
                "{name} was uploaded ahead to {} on {:?}; already stored (upload-ahead), {} ms",
                marker.key,
                marker.storage,
                started.elapsed().as_millis()
            );
            return Ok(());
        }
    }

    // Push the requested file and, in parallel, the next `.ready` files.
    let others = ahead
        .as_ref()
        .map(|a| a.ready_files(&name, cfg.upload_concurrency - 1))
        .unwrap_or_default();
    let opts = &opts;
    let main = push_validated(store.as_ref(), path, &name, len, opts);
    let side = futures::future::join_all(others.iter().map(|(n, p)| {
        let store = store.clone();
        async move {
            // Stamped before it is read: a file that changes while it is
            // pushed gets a marker its later call will not trust.
            let stamp = FileStamp::of(p).ok();
            (n, p, stamp, push_file(store.as_ref(), p, opts).await)
        }
    }));
    let (outcome, side) = tokio::join!(main, side);

    if let Some(ahead) = &ahead {
        let mut failed = Vec::new();
        for (other, other_path, stamp, result) in side {
            match result {
                Ok(o) => {
                    let (key, storage, stored) = match o {
                        PushOutcome::Stored {
                            key,
                            storage,
                            stored_bytes,
                            ..
                        }
                        | PushOutcome::Overwritten {
                            key,
                            storage,
                            stored_bytes,
                            ..
                        } => (key, storage, stored_bytes),
                        PushOutcome::AlreadyStored { key } => match store.stat(&key).await {
                            Ok(m) => (key, store.name().to_string(), m.size),
                            Err(_) => continue,
                        },
                    };
                    let source_size = std::fs::metadata(other_path).map(|m| m.len()).unwrap_or(0);
                    let marker = Marker {
                        storage,
                        key,
                        stored_size: stored,
                        source_size,
                        source_stamp: stamp,
                    };
                    if let Err(e) = ahead.write_marker(other, &marker) {
                        tracing::warn!("record upload-ahead of {other}: {e}; PostgreSQL's own call will push it again");
                    }
                }
                Err(e) => failed.push(format!("{other}: {e:#}")),
            }
        }
        if !failed.is_empty() {
            // One line, not one per file: when the storage is down they all
            // fail for the same reason, and the requested file's error says it.
            let msg = format!(
                "upload-ahead of {} file(s) failed; PostgreSQL's own calls will push them (first: {})",
                failed.len(),
                failed[0]
            );
            if outcome.is_ok() {
                tracing::warn!("{msg}");
            } else {
                tracing::debug!("{msg}");
            }
        }
        ahead.clean_stale();
    }

    let outcome = outcome
        .with_context(|| format!("push {} to storage {:?}", path.display(), store.name()))?;
    let ms = started.elapsed().as_millis();
    let extra = if others.is_empty() {
        String::new()
    } else {
        format!(" (+{} uploaded ahead)", others.len())
    };
    match outcome {
        PushOutcome::Stored {
            key,
            storage,
            source_bytes,
            stored_bytes,
        }
        | PushOutcome::Overwritten {
            key,
            storage,
            source_bytes,
            stored_bytes,
        } => {
            tracing::info!(
                "pushed {name} to {key} on {storage:?}: {} -> {} {}{}, {ms} ms{extra}",
                mib(source_bytes),
                mib(stored_bytes),
                cfg.compression,
                if cfg.encryption.is_none() {
                    String::new()
                } else {
                    format!(" + {}", cfg.encryption.name())
                }
            );
        }
        PushOutcome::AlreadyStored { key } => {
            tracing::info!(
                "{name} already stored as {key} on {:?} with identical content, {ms} ms{extra}",
                store.name()
            );
        }
    }
    Ok(())
}

async fn wal_fetch(cli: &Cli, name: &str, dest: &Path) -> Result<()> {
    let started = Instant::now();
    // Refuse a bad name before touching the configuration or any storage.
    let wal = walg_core::pipeline::fetch::validate_name(name)?;
    let cfg = load_config(cli)?;
    if let walg_core::crypto::Encryption::Pgp(k) = &cfg.encryption {
        if let Some(why) = k.decrypt_refusal() {
            anyhow::bail!("{why}");
        }
    }
    if let Some(got) = crate::prefetch::take(&cfg, &wal, dest) {
        tracing::info!(
            "fetched {name} from the prefetch directory into {}: {}, {} ms",
            dest.display(),
            mib(got),
            started.elapsed().as_millis()
        );
        crate::identity::warn_if_foreign(&cfg, None, &wal, dest).await;
        crate::prefetch::spawn(cli, &cfg, &wal, dest);
        return Ok(());
    }
    let Opened { store, .. } = storage::open(&cfg)?;
    let opts = FetchOptions {
        compression: cfg.compression,
        encryption: cfg.encryption.clone(),
    };
    let got = fetch_file(store.as_ref(), name, dest, &opts).await?;
    crate::identity::warn_if_foreign(&cfg, Some(store.as_ref()), &wal, dest).await;
    crate::prefetch::spawn(cli, &cfg, &wal, dest);
    tracing::info!(
        "fetched {name} from {} on {:?} into {}: {}, {} ms",
        got.key,
        store.name(),
        dest.display(),
        mib(got.bytes),
        started.elapsed().as_millis()
    );
    Ok(())
}

fn ago(t: Option<SystemTime>) -> String {
    match t.and_then(|t| SystemTime::now().duration_since(t).ok()) {
        Some(d) => format!(
            "{} ago",
            humantime::format_duration(std::time::Duration::from_secs(d.as_secs()))
        ),
        None => "never".into(),
    }
}

async fn st(cli: &Cli, command: &StCommand) -> Result<()> {
    let cfg = load_config(cli)?;
    let opened = storage::open_all(&cfg)?;
    let Some(failover) = opened.failover else {
        bail!("no storages configured")
    };
    match command {
        StCommand::Status => {
            match failover.cache_path() {
                Some(p) if failover.cache().is_persistent() => {
                    println!("status cache: {}", p.display())
                }
                Some(p) => println!("status cache: {} (unusable, kept in memory)", p.display()),
                None => println!(
                    "status cache: in memory only (set WALG_FAILOVER_STORAGES_CACHE_FILE or HOME)"
                ),
            }
            println!(
                "cache lifetime: {}",
                humantime::format_duration(cfg.failover.cache_lifetime)
            );
            println!(
                "{:<16} {:<8} {:<22} {:<22} {:<8} LOCATION / LAST ERROR",
                "STORAGE", "STATUS", "LAST CHECKED", "LAST USED", "FRESH"
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
                println!(
                    "{:<16} {:<8} {:<22} {:<22} {:<8} {}",
                    s.name,
                    status,
                    ago(s.last_checked),
                    ago(s.last_used),
                    if s.fresh { "yes" } else { "expired" },
                    detail
                );
            }
            Ok(())
        }
        StCommand::Check { write } => {
            let mut dead = Vec::new();
            for (name, result) in failover.check(*write).await {
                match result {
                    Ok(()) => println!(
                        "{name}: alive ({} probe)",
                        if *write { "read and write" } else { "read" }
                    ),
                    Err(e) => {
                        println!("{name}: dead: {e}");
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
        } => crate::clean::run(&cfg, *older_than, *confirm, *json).await,
        StCommand::Identity { adopt, confirm } => {
            crate::identity::st_identity(&cfg, *adopt, *confirm).await
        }
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
    println!("transfer {source} -> {target}: {copied} copied, {present} already present (verified identical), {} total", mib(bytes));
    Ok(())
}
