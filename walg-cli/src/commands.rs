//! The subcommands and the mapping of their failures to exit codes.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use walg_core::fetch::{fetch_file, FetchError, FetchOptions};
use walg_core::push::{push_file, PushOptions, PushOutcome};

use crate::config::{Config, Raw};
use crate::{Cli, Command, EXIT_NOT_FOUND};

fn load_config(cli: &Cli) -> Result<Config> {
    let raw = Raw::load(cli.config.as_deref())?;
    let cfg = Config::from_raw(&raw)?;
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    Ok(cfg)
}

/// Runs a command and returns its exit code.
pub async fn run(cli: Cli) -> u8 {
    match &cli.command {
        Command::WalPush { path } => match wal_push(&cli, path).await {
            Ok(()) => 0,
            Err(e) => {
                tracing::error!("{e:#}");
                1
            }
        },
        Command::WalFetch { name, destination } => match wal_fetch(&cli, name, destination).await {
            Ok(()) => 0,
            Err(e) => {
                let not_found = e.downcast_ref::<FetchError>().is_some_and(FetchError::is_not_found);
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
        },
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

async fn wal_push(cli: &Cli, path: &Path) -> Result<()> {
    let started = Instant::now();
    let cfg = load_config(cli)?;
    let store = crate::storage::open(&cfg)?;
    let opts = PushOptions { compression: cfg.compression, prevent_overwrite: cfg.prevent_overwrite };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let outcome = push_file(store.as_ref(), path, &opts)
        .await
        .with_context(|| format!("push {} to storage {:?}", path.display(), store.name()))?;
    let ms = started.elapsed().as_millis();
    match outcome {
        PushOutcome::Stored { key, source_bytes, stored_bytes } | PushOutcome::Overwritten { key, source_bytes, stored_bytes } => {
            tracing::info!(
                "pushed {name} to {key} on {:?}: {} -> {} {}, {ms} ms",
                store.name(),
                mib(source_bytes),
                mib(stored_bytes),
                cfg.compression
            );
        }
        PushOutcome::AlreadyStored { key } => {
            tracing::info!("{name} already stored as {key} on {:?} with identical content, {ms} ms", store.name());
        }
    }
    Ok(())
}

async fn wal_fetch(cli: &Cli, name: &str, dest: &Path) -> Result<()> {
    let started = Instant::now();
    // Refuse a bad name before touching the configuration or any storage.
    walg_core::fetch::validate_name(name)?;
    let cfg = load_config(cli)?;
    let store = crate::storage::open(&cfg)?;
    let opts = FetchOptions { compression: cfg.compression };
    let got = fetch_file(store.as_ref(), name, dest, &opts).await?;
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
