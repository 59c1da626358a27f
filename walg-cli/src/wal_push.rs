//! `walg wal-push PATH` (archive_command): one WAL file into the storages,
//! and with `WALG_UPLOAD_CONCURRENCY` > 1 the next `.ready` files beside it
//! (upload-ahead), each recorded by a marker its own later call trusts.
//!
//! The pushing itself (validation, compression, encryption, the
//! create-if-absent upload, the identity guard) is
//! [`walg_core::pipeline::push`] and [`walg_core::pipeline::ahead`]; this
//! module gathers the settings and logs one line per file.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use walg_core::pipeline::ahead::{AheadDir, FileStamp, Marker};
use walg_core::pipeline::push::{
    push_file_shared, push_validated, validate_local, PushOptions, PushOutcome,
};
use walg_core::pipeline::share::TransferShare;
use walg_core::store::Store;

use crate::shared::drain;
use crate::shared::format::mib;
use crate::shared::gaps;
use crate::shared::load_config;
use crate::shared::storage::{self, Opened};

/// Runs `wal-push`.
pub async fn run(config: Option<&Path>, path: &Path) -> Result<()> {
    let started = Instant::now();
    // Refuse a bad file before touching the configuration or any storage.
    let (name, len) =
        validate_local(path).with_context(|| format!("wal-push {}", path.display()))?;
    let cfg = load_config(config)?;
    // A segment's page header names its cluster: every storage checks it
    // against the archive identity before its first WAL write.
    let system_id = matches!(name, walg_core::WalName::Segment(_))
        .then(|| walg_core::archive::identity::segment_system_id(path).ok())
        .flatten();
    let Opened { store, failover } = storage::open_guarded(&cfg, system_id)?;
    // The files this call pushes ahead and the drain share one bound of
    // memory; the requested file (the oldest) goes first on its own budget.
    let share = TransferShare::new(cfg.upload_ahead_memory);
    let requested = share.enter_unshared(0);
    // WAL left on a failover storage goes back to the primary beside this push.
    let drain = drain::start(failover, share.clone());
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
            drop(requested);
            drain.finish().await;
            return Ok(());
        }
    }

    // Push the requested file and, in parallel, the next `.ready` files.
    let others = ahead
        .as_ref()
        .map(|a| a.ready_files(&name, cfg.upload_concurrency - 1))
        .unwrap_or_default();
    let opts = &opts;
    let main = async {
        let outcome = push_validated(store.as_ref(), path, &name, len, opts).await;
        drop(requested);
        outcome
    };
    let side = futures::future::join_all(others.iter().enumerate().map(|(i, (n, p))| {
        let store = store.clone();
        let share = &share;
        async move {
            // Stamped before it is read: a file that changes while it is
            // pushed gets a marker its later call will not trust.
            let stamp = FileStamp::of(p).ok();
            let pushed = push_file_shared(store.as_ref(), p, opts, share, i as u64 + 1).await;
            (n, p, stamp, pushed)
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

    // The storage's error names the storage, the cause and the fix; this
    // only says which call of PostgreSQL's failed.
    let outcome = match outcome {
        Ok(o) => o,
        // Over WALG_PG_WAL_BUDGET a segment may be given up on purpose.
        Err(e) => {
            return gaps::after_failed_push(&cfg, store.as_ref(), path, &name, system_id, e).await
        }
    };
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
    // Gap records a failed call left behind, now that a storage answers.
    gaps::upload_pending(store.as_ref(), path).await;
    drain.finish().await;
    Ok(())
}
