//! The vocabulary of WAL, shared by everything else in walg.
//!
//! - `name` (re-exported here): WAL file names for any segment size,
//!   timelines, segments and [`Lsn`]s.
//! - [`page`]: the long page header that opens every segment.
//! - [`layout`]: the bucket layout WAL-G uses, `wal_005/<name>[.<ext>]`, and
//!   the compression methods as names and extensions.
//! - [`history`]: `.history` and `.backup` files and timeline ancestry
//!   (which timeline's copy of each segment recovery reads).
//!
//! Must not know: storages, codecs' bytes, encryption, PostgreSQL's other
//! files, the archive commands.
//!
//! Invariant: pure functions of names, text and bytes; nothing here does I/O
//! beyond the `Read`/`Write` it is handed.

mod name;

pub mod history;
pub mod layout;
pub mod page;

pub use name::*;
