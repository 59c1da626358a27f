//! walg-failover: a [`walg_core::Store`] made of named stores, for archiving
//! that keeps going when a storage fails.
//!
//! [`FailoverStore`] applies the write and read policies over its members;
//! [`StatusCache`] remembers, across the short-lived processes PostgreSQL
//! starts per segment, which storages were alive or dead and when; the
//! [`Clock`] is injectable so tests move time instead of sleeping.
//!
//! Wiring it up, as the CLI does (the primary `default` first, then the
//! failovers sorted by name):
//!
//! ```
//! use std::{path::Path, sync::Arc};
//! use walg_core::{store::memory::MemoryStore, store::DynStore, PutOptions, Store};
//! use walg_failover::{default_cache_path, FailoverConfig, FailoverStore, Member};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let state = tempfile::tempdir()?;
//! # let xdg_state_home = Some(state.path());
//! // The caller reads XDG_STATE_HOME / HOME (or an explicit override).
//! let cache_path = default_cache_path(xdg_state_home, None::<&Path>);
//! let members = vec![
//!     Member::new("default", Arc::new(MemoryStore::new("mem://primary")) as DynStore),
//!     Member::new("backup", Arc::new(MemoryStore::new("mem://backup")) as DynStore),
//! ];
//! let store = FailoverStore::new(members, FailoverConfig { cache_path, ..Default::default() })?;
//! tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
//!     store.put("wal_005/000000010000000000000001.lz4", &bytes::Bytes::from_static(b"..."),
//!               PutOptions { if_not_exists: true }).await?;
//!     for s in store.status().await {
//!         println!("{}: alive={:?} fresh={}", s.name, s.alive, s.fresh);
//!     }
//!     Ok::<_, walg_core::StoreError>(())
//! })?;
//! # Ok(())
//! # }
//! ```
//!
//! This crate knows only `walg-core`'s `Store` trait: it never builds a
//! backend, reads environment variables or configuration files, or installs
//! a logging subscriber (it logs through `tracing` macros only).

pub mod cache;
pub mod clock;
pub mod drain;
pub mod failover;

pub use cache::{default_cache_path, StatusCache};
pub use clock::{Clock, ManualClock, SystemClock};
pub use drain::{drain, drain_within, Backlog, DrainConfig, DrainMode, DrainReport};
pub use failover::{
    FailoverConfig, FailoverError, FailoverStore, Member, MemberStatus, WritePolicy,
};
