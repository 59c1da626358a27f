//! Why `pg_wal` grows: the checks of `walg wal-status` and the binding
//! cause, computed from plain observations.
//!
//! PostgreSQL removes a segment at a checkpoint only when it is older than
//! every retention source: the REDO pointer of the checkpoint, the oldest
//! `restart_lsn` of the valid replication slots (capped by
//! `max_slot_wal_keep_size`), `wal_keep_size` behind the current segment,
//! and, independently, an archiver that has not yet archived it (`.ready`).
//! The source holding the oldest segment is the binding cause; fixing it
//! frees WAL only down to the next one, which is reported too.
//!
//! The caller gathers an [`Observation`] (from SQL, from the data directory,
//! or both) and calls [`diagnose`]; nothing here does I/O or reads a clock,
//! so every rule is unit-tested on synthetic observations. The report is
//! `serde::Serialize`: `wal-status --json` prints it as is.

mod checks;
pub mod datadir;
mod observation;
pub mod preflight;
mod report;
mod rules;

#[cfg(test)]
use crate::wal::Lsn;
pub use observation::*;
pub use report::*;
pub use rules::diagnose;
#[cfg(test)]
use rules::*;

#[cfg(test)]
mod tests;
