//! PostgreSQL's own files, as the doctor reads them offline.
//!
//! - [`control`]: `global/pg_control` (CRC-checked, per `pg_control` version).
//! - [`slot`]: replication slot state files (`pg_replslot/*/state`).
//! - [`pgconf`]: `postgresql.conf` syntax, includes and units.
//! - [`crc32c`]: the CRC-32C PostgreSQL stamps on both binary files.
//!
//! Must not know: storages, the pipeline, the retention rules (those are the
//! doctor's: this module says what a file holds, not what it means for
//! `pg_wal`).
//!
//! Invariant: parsers of bytes and text handed in; reading the files is the
//! caller's (the doctor's data-directory reader), so every parser is tested
//! on fixed bytes.

pub mod control;
pub mod crc32c;
pub mod pgconf;
pub mod slot;
