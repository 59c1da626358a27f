//! walg-core: the vocabulary and logic of a PostgreSQL WAL archiver.
//!
//! One folder per subsystem, each cut by what it must not know (its
//! `mod.rs` says so):
//!
//! - [`wal`]: WAL names, LSNs, page headers, `.history`/`.backup` files,
//!   the bucket layout. Knows nothing else.
//! - [`pg`]: PostgreSQL's own files (`pg_control`, slot state,
//!   `postgresql.conf`, CRC-32C), parsed from bytes handed in.
//! - [`store`]: the object-safe [`Store`] trait, its error classes, the
//!   in-memory and fault-injecting stores.
//! - [`crypto`]: WAL-G's libsodium and OpenPGP formats.
//! - [`pipeline`]: codecs, stages, push, fetch, upload-ahead, prefetch: one
//!   file to a `Store` and back.
//! - [`archive`]: the archive map across storages, `wal-verify`, the repair
//!   and prune plans, the archive identity.
//! - [`doctor`]: why `pg_wal` grows (observation, rules, checks, report),
//!   reading a data directory, and `walg check`'s rules.
//!
//! //! Push a WAL segment and fetch it back, as `wal-push` and `wal-fetch` do
//! (here into an in-memory store; `walg-storage` opens real ones):
//!
//! ```
//! use walg_core::pipeline::fetch::{fetch_file, FetchOptions};
//! use walg_core::store::memory::MemoryStore;
//! use walg_core::wal::page::synthetic_segment;
//! use walg_core::pipeline::push::{push_file, PushOptions, PushOutcome};
//! use walg_core::{Compression, WalName};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! // A 1 MiB segment (initdb --wal-segsize=1) with a valid page header.
//! let name = WalName::parse("000000010000000000000003")?;
//! let WalName::Segment(segment) = name else { unreachable!() };
//! let path = dir.path().join(name.to_string());
//! std::fs::write(&path, synthetic_segment(&segment, 1 << 20, 42, 7))?;
//!
//! let store = MemoryStore::new("mem");
//! let opts = PushOptions { compression: Compression::Zstd, ..PushOptions::default() };
//! tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
//!     let outcome = push_file(&store, &path, &opts).await?;
//!     assert!(matches!(outcome, PushOutcome::Stored { ref key, .. } if key == "wal_005/000000010000000000000003.zst"));
//!     // Offering the same file again succeeds without writing (PostgreSQL may).
//!     assert!(matches!(push_file(&store, &path, &opts).await?, PushOutcome::AlreadyStored { .. }));
//!
//!     let restored = dir.path().join("RECOVERYXLOG");
//!     fetch_file(&store, &name.to_string(), &restored, &FetchOptions { compression: Compression::Lz4, ..FetchOptions::default() }).await?;
//!     assert_eq!(std::fs::read(&restored)?, std::fs::read(&path)?);
//!     Ok::<_, Box<dyn std::error::Error>>(())
//! })?;
//! # Ok(())
//! # }
//! ```
//!
//! This crate deliberately knows nothing of opendal, environment variables,
//! configuration files or logging subscribers.

pub mod archive;
pub mod crypto;
pub mod doctor;
pub mod pg;
pub mod pipeline;
pub mod store;
pub mod wal;

pub use store::error::{ErrorKind, StoreError};
pub use store::{Body, ByteStream, ListPages, ObjectMeta, PutOptions, Store};
pub use wal::layout::Compression;
pub use wal::layout::WAL_PREFIX;
pub use wal::{Lsn, WalName};
