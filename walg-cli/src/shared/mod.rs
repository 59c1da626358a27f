//! What every command uses: the settings, the storages, the PostgreSQL
//! connection and the output helpers. Commands import this module and never
//! each other, so each command can be read and changed alone.
//!
//! - [`config`]: figment layers into the typed settings; [`load_config`]
//!   reads them the way most commands want (warnings logged).
//! - [`storage`]: opens the configured storages (one, or a failover store),
//!   the status cache's and the identity cache's locations, this host's name.
//! - [`pgconn`]: a libpq-style connection to PostgreSQL.
//! - [`format`]: sizes and durations for people.
//! - [`drain`]: a drain back to the primary in the background of a call.
//! - [`gaps`]: the declared pg_wal budget: giving a segment up on purpose,
//!   its records in the journal and the archive, and reading them back.
//! - [`output`]: stdout that survives a closed pipe, and JSON printing.
//!
//! What it deliberately does not hold: anything one command alone needs
//! (that stays in the command's module), clap definitions (in `main.rs` and
//! the command modules that own their flags), and exit-code decisions
//! (`main.rs` maps errors to codes).

pub mod config;
pub mod drain;
pub mod format;
pub mod gaps;
pub mod output;
pub mod pgconn;
pub mod storage;

use std::path::Path;

use anyhow::Result;

use self::config::{Config, Raw};

/// Reads the settings (`--config` FILE, else the default lookup, then the
/// environment) and logs their warnings.
pub fn load_config(config: Option<&Path>) -> Result<Config> {
    let raw = Raw::load(config)?;
    let cfg = Config::from_raw(&raw)?;
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    Ok(cfg)
}
