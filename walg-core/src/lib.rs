//! walg-core: the vocabulary and logic of a PostgreSQL WAL archiver.
//!
//! WAL file names and LSNs ([`wal`]), the segment page header ([`page`]),
//! the bucket layout ([`layout`]), streaming codecs ([`codec`]), the
//! object-safe [`Store`] trait with its error classes ([`store`]) and the
//! push and fetch pipelines ([`push`], [`fetch`]) that other tools can reuse
//! without the CLI.
//!
//! This crate deliberately knows nothing of opendal, environment variables,
//! configuration files or logging subscribers.

pub mod ahead;
pub mod codec;
pub mod control;
pub mod crc32c;
pub mod crypto;
pub mod diagnosis;
pub mod error;
pub mod fetch;
pub mod layout;
pub mod lz4frame;
pub mod memory;
pub mod openpgp;
pub mod page;
pub mod pgconf;
pub mod prefetch;
pub mod push;
pub mod slot;
pub mod store;
pub mod stream;
pub mod wal;

pub use codec::Compression;
pub use error::{ErrorKind, StoreError};
pub use layout::WAL_PREFIX;
pub use store::{Body, ByteStream, ObjectMeta, PutOptions, Store};
pub use wal::{Lsn, WalName};
