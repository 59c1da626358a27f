//! walg-failover: a [`walg_core::Store`] made of named stores, for archiving
//! that keeps going when a storage fails.
//!
//! [`FailoverStore`] applies the write and read policies over its members;
//! [`StatusCache`] remembers, across the short-lived processes PostgreSQL
//! starts per segment, which storages were alive or dead and when; the
//! [`Clock`] is injectable so tests move time instead of sleeping.
//!
//! This crate knows only `walg-core`'s `Store` trait: it never builds a
//! backend, reads environment variables or configuration files, or installs
//! a logging subscriber (it logs through `tracing` macros only).

pub mod cache;
pub mod clock;
pub mod failover;

pub use cache::{default_cache_path, StatusCache};
pub use clock::{Clock, ManualClock, SystemClock};
pub use failover::{FailoverConfig, FailoverError, FailoverStore, Member, MemberStatus, WritePolicy};
