//! PostgreSQL's own files, as the doctor reads them offline.
//!
//! - [`control`]: `global/pg_control` (CRC-checked; the layouts of 13 to 19,
//!   an unknown version only by a matching CRC), and `pg_controldata` output.
//! - [`slot`]: replication slot state files (`pg_replslot/*/state`), read by
//!   the major version that wrote them.
//! - [`pgconf`]: `postgresql.conf` syntax, includes and units.
//! - [`crc32c`]: the CRC-32C PostgreSQL stamps on both binary files.
//! - [`logtext`]: server log lines about retention, in every version's
//!   wording (17+ quote setting names).
//!
//! Must not know: storages, the pipeline, the retention rules (those are the
//! doctor's: this module says what a file holds, not what it means for
//! `pg_wal`).
//!
//! Invariant: parsers of bytes and text handed in (`pg_controldata`'s
//! output included: running it is the doctor's); reading the files is the
//! caller's (the doctor's data-directory reader), so every parser is tested
//! on fixed bytes.

pub mod control;
pub mod crc32c;
pub mod logtext;
pub mod pgconf;
pub mod slot;
