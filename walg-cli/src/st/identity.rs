//! `walg st identity [--adopt ID [--confirm]]`: which cluster's WAL each
//! storage holds, and the deliberate hand-over of the archive to a new
//! cluster.
//!
//! The rule itself (claim, verify, refuse, adopt) is in
//! [`walg_core::archive::identity`]; this module only gathers inputs and prints.
//! Where the identity cache lives and this host's name are in
//! [`crate::shared::storage`] (wal-push's guard and wal-fetch's warning use
//! them too).

use anyhow::{bail, Context, Result};
use walg_core::archive::identity;

use crate::shared::config::Config;
use crate::shared::output::out;
use crate::shared::storage::{self, host};

/// `walg st identity`: each storage's identity; with `--adopt ID` what
/// adopting the archive for cluster ID would change; with `--confirm` too,
/// does it on every storage that can be reached.
pub async fn run(cfg: &Config, adopt: Option<u64>, confirm: bool) -> Result<()> {
    let opened = storage::open_all(cfg)?;
    let Some(failover) = opened.failover else {
        bail!("no storages configured")
    };
    let cache = storage::identity_cache(cfg);
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
                    out!(
                        "{name}: system identifier {} (since {}, written by {}{previous}) at {location}",
                        id.system_identifier,
                        humantime::format_rfc3339_seconds(
                            std::time::UNIX_EPOCH + std::time::Duration::from_secs(id.since_unix)
                        ),
                        id.host
                    );
                }
                Ok(None) => {
                    out!("{name}: no identity yet (the next wal-push claims it) at {location}")
                }
                Err(e) => {
                    out!("{name}: unknown: {e}");
                    failed.push(name.to_string());
                }
            },
            Some(id) => match identity::adopt(store, id, &host(), confirm).await {
                Ok(a) if !a.changed => {
                    out!("{name}: already the archive of system identifier {id}")
                }
                Ok(a) => {
                    let before = a.before.as_deref().unwrap_or("none");
                    if confirm {
                        cache.forget(&location);
                        out!("{name}: adopted for system identifier {id} (was {before})");
                    } else {
                        out!(
                            "{name}: would adopt for system identifier {id} (now {before}); \
                             run again with --confirm"
                        );
                    }
                }
                Err(e) => {
                    out!("{name}: not adopted: {e}");
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
