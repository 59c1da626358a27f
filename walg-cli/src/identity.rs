//! The archive identity from the command line: where its cache lives, the
//! warning `wal-fetch` gives for a segment of another cluster, and
//! `walg st identity [--adopt ID [--confirm]]`.
//!
//! The rule itself (claim, verify, refuse, adopt) is in
//! [`walg_core::archive::identity`]; this module only gathers inputs and prints.

use std::path::Path;

use anyhow::{bail, Context, Result};
use walg_core::archive::identity::{self, IdentityCache, CACHE_FILE_NAME};
use walg_core::store::Store;
use walg_core::WalName;

use crate::config::Config;
use crate::storage;

/// This host's name, for the identity object and temp-file names.
pub fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".to_string())
}

/// The verified-identity cache: next to the storage status cache, trusted
/// for the status cache's lifetime.
pub fn cache(cfg: &Config) -> IdentityCache {
    let path = storage::cache_path(cfg).and_then(|p| p.parent().map(|d| d.join(CACHE_FILE_NAME)));
    IdentityCache::new(path, cfg.failover.cache_lifetime)
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
    let cache = cache(cfg);
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

/// `walg st identity`: each storage's identity; with `--adopt ID` what
/// adopting the archive for cluster ID would change; with `--confirm` too,
/// does it on every storage that can be reached.
pub async fn st_identity(cfg: &Config, adopt: Option<u64>, confirm: bool) -> Result<()> {
    let opened = storage::open_all(cfg)?;
    let Some(failover) = opened.failover else {
        bail!("no storages configured")
    };
    let cache = cache(cfg);
    let mut failed = Vec::new();
    if adopt.is_none() && confirm {
        bail!("--confirm needs --adopt SYSTEM_ID: the system identifier of the new cluster");
    }
    for (m, spec) in failover.members().iter().zip(&cfg.storages) {
        let name = m.name();
        let store = m.store().as_ref();
        let location = storage::fingerprint(spec);
        match adopt {
            None => match identity::read_identity(store).await {
                Ok(Some(id)) => {
                    let previous = if id.previous.is_empty() {
                        String::new()
                    } else {
                        format!(", previously {}", id.previous.join(", "))
                    };
                    println!(
                        "{name}: system identifier {} (since {}, written by {}{previous}) at {location}",
                        id.system_identifier,
                        humantime::format_rfc3339_seconds(
                            std::time::UNIX_EPOCH + std::time::Duration::from_secs(id.since_unix)
                        ),
                        id.host
                    );
                }
                Ok(None) => {
                    println!("{name}: no identity yet (the next wal-push claims it) at {location}")
                }
                Err(e) => {
                    println!("{name}: unknown: {e}");
                    failed.push(name.to_string());
                }
            },
            Some(id) => match identity::adopt(store, id, &host(), confirm).await {
                Ok(a) if !a.changed => {
                    println!("{name}: already the archive of system identifier {id}")
                }
                Ok(a) => {
                    let before = a.before.as_deref().unwrap_or("none");
                    if confirm {
                        cache.forget(&location);
                        println!("{name}: adopted for system identifier {id} (was {before})");
                    } else {
                        println!(
                            "{name}: would adopt for system identifier {id} (now {before}); \
                             run again with --confirm"
                        );
                    }
                }
                Err(e) => {
                    println!("{name}: not adopted: {e}");
                    failed.push(name.to_string());
                }
            },
        }
    }
    if !failed.is_empty() {
        return Err(anyhow::anyhow!(
            "storages not reached: {}",
            failed.join(", ")
        ))
        .context("archive identity");
    }
    Ok(())
}
