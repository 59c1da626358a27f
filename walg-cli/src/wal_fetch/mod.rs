//! `walg wal-fetch NAME DESTINATION` (restore_command): one WAL file from
//! the storages into the place PostgreSQL asks for, served from the
//! prefetch directory when the background prefetcher ([`prefetch`], the
//! hidden `walg wal-prefetch`) already downloaded it; then a warning when
//! the segment belongs to another cluster than the archive.
//!
//! The fetching itself (candidates, decompression, decryption, the atomic
//! write) is [`walg_core::pipeline::fetch`]; this module gathers the
//! settings and logs one line per file.

pub mod prefetch;

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use walg_core::archive::identity;
use walg_core::pipeline::fetch::{fetch_file, FetchOptions};
use walg_core::store::Store;
use walg_core::WalName;

use crate::shared::config::Config;
use crate::shared::format::mib;
use crate::shared::gaps;
use crate::shared::load_config;
use crate::shared::storage::{self, Opened};

/// Runs `wal-fetch`. A name in no storage is a
/// [`walg_core::pipeline::fetch::FetchError`] that `main` maps to exit code 74.
pub async fn run(config: Option<&Path>, name: &str, dest: &Path) -> Result<()> {
    let started = Instant::now();
    // Refuse a bad name before touching the configuration or any storage.
    let wal = walg_core::pipeline::fetch::validate_name(name)?;
    let cfg = load_config(config)?;
    if let walg_core::crypto::Encryption::Pgp(k) = &cfg.encryption {
        if let Some(why) = k.decrypt_refusal() {
            anyhow::bail!("{why}");
        }
    }
    if let Some(got) = prefetch::take(&cfg, &wal, dest) {
        tracing::info!(
            "fetched {name} from the prefetch directory into {}: {}, {} ms",
            dest.display(),
            mib(got),
            started.elapsed().as_millis()
        );
        warn_if_foreign(&cfg, None, &wal, dest).await;
        prefetch::spawn(config, &cfg, &wal, dest);
        return Ok(());
    }
    let Opened { store, .. } = storage::open(&cfg)?;
    let opts = FetchOptions {
        compression: cfg.compression,
        encryption: cfg.encryption.clone(),
    };
    let got = match fetch_file(store.as_ref(), name, dest, &opts).await {
        Ok(got) => got,
        Err(e) => {
            // A segment wal-push gave up on purpose: say so, not "not found".
            if e.is_not_found() {
                if let Some(r) = gaps::fetch_explanation(store.as_ref(), &wal).await {
                    return Err(gaps::DeclaredGapReached(gaps::fetch_message(&wal, &r)).into());
                }
            }
            return Err(anyhow::Error::new(e).context(format!("wal-fetch {name}")));
        }
    };
    warn_if_foreign(&cfg, Some(store.as_ref()), &wal, dest).await;
    prefetch::spawn(config, &cfg, &wal, dest);
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

/// The key under which `wal-fetch` caches the identity of the storages it
/// reads: all of them, since a read may be served by any.
fn read_key(cfg: &Config) -> String {
    let all: Vec<String> = cfg.storages.iter().map(storage::fingerprint).collect();
    format!("read:{}", all.join("|"))
}

/// After a fetch: warns when the segment written to `dest` carries another
/// system identifier than the archive's. Costs no request while the cached
/// identity is fresh; never fails the fetch.
/// `store` is what the fetch read through; `None` (a segment taken from the
/// prefetch directory) opens the storages only if the cache cannot answer.
pub async fn warn_if_foreign(cfg: &Config, store: Option<&dyn Store>, name: &WalName, dest: &Path) {
    if !matches!(name, WalName::Segment(_)) {
        return;
    }
    let Ok(segment_id) = identity::segment_system_id(dest) else {
        return;
    };
    let cache = storage::identity_cache(cfg);
    let key = read_key(cfg);
    if cache.lookup(&key) == Some(segment_id) {
        return;
    }
    // Unknown or different: ask the archive (it may have been adopted by a
    // new cluster; the old identifiers are in `previous`).
    let opened;
    let store = match store {
        Some(s) => s,
        None => match storage::open(cfg) {
            Ok(o) => {
                opened = o.store;
                opened.as_ref()
            }
            Err(_) => return,
        },
    };
    let archive = match identity::read_identity(store).await {
        Ok(Some(id)) => id,
        Ok(None) => return,
        Err(e) => {
            tracing::debug!("read the archive identity: {e}");
            return;
        }
    };
    if archive.knows(segment_id) {
        if archive.system_identifier == segment_id.to_string() {
            tokio::task::spawn_blocking(move || cache.remember(&key, segment_id))
                .await
                .ok();
        }
        return;
    }
    tracing::warn!(
        "{name} carries system identifier {segment_id} in its page header, but the archive belongs \
         to the cluster with system identifier {}; this archive may hold WAL of two clusters \
         (check which cluster wrote {name} before relying on this restore)",
        archive.system_identifier
    );
}
