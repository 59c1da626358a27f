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
//! - `observation` (re-exported): what the doctor is given, every part
//!   optional; [`datadir`] fills it from a data directory's files, the
//!   caller from SQL and the archive.
//! - `rules` ([`diagnose`]): the retention sources, the binding cause, the
//!   next one, the rates; `checks`: the checkpoint, `wal_keep_size`,
//!   `pg_wal`'s size and file system, the archive's content; `archiver`:
//!   who consumes `.ready` files (an external program too) and whether it
//!   keeps up; `slots`: what each slot holds, its invalidation (18's idle
//!   timeout included), `wal_level` against the slots (19's
//!   `effective_wal_level`); `summarizer`: 17's WAL summarizer; `budget`:
//!   the declared pg_wal budget and the segments given up under it.
//! - `report` (re-exported): the rendering-free result, `serde::Serialize`
//!   (`wal-status --json` prints it as is); text and metrics are the
//!   caller's.
//! - [`preflight`]: the rules of `walg check` (does a server command really
//!   call walg, do the settings allow archiving).
//!
//! Must not know: storages, the pipeline, SQL connections, settings of walg
//! or the environment.
//!
//! Invariant: only [`datadir`] touches the file system; the rules and checks
//! do no I/O and read no clock, so every rule is unit-tested on synthetic
//! observations.

mod archiver;
mod budget;
mod checks;
pub mod datadir;
mod drain;
mod observation;
pub mod preflight;
mod report;
mod rules;
mod slots;
mod summarizer;

#[cfg(test)]
use crate::wal::Lsn;
pub use drain::FailoverDrain;
pub use observation::*;
pub use report::*;
pub use rules::diagnose;
#[cfg(test)]
use rules::*;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod version_tests;
