//! The data pipeline: how one WAL file becomes an object and back.
//!
//! - [`codec`]: streaming lz4/zstd/brotli/none; [`lz4frame`]: standard lz4
//!   frames compressed on two threads, read without the content checksum
//!   when encryption already authenticated them.
//! - [`stream`]: the stages (read | compress | encrypt on push; decrypt |
//!   decompress | write on fetch), each a blocking thread joined by bounded
//!   channels, bridged to async streams.
//! - [`budget`]: the one memory budget of a transfer, from which the
//!   chunk size, the channel depths and the storages' upload plans (one
//!   request or parts, and their size) are derived; [`share`]: what the
//!   files one process moves side by side (upload-ahead) hold together.
//! - [`push`] and [`fetch`]: one file to a [`Store`](crate::Store) and back,
//!   with WAL-G's exit-code semantics (already stored, not found).
//! - [`ahead`] (upload-ahead markers) and [`prefetch`]: the next few files
//!   in the background of one call.
//!
//! Must not know: which storage is behind the `Store` (opendal, failover),
//! settings or the environment, the archive commands, the doctor.
//!
//! Invariant: a push holds a few chunks of a segment in memory, never the
//! whole file (OpenPGP excepted: it encrypts whole objects), and what the
//! pipeline and the storage hold together stays within the
//! [`budget::MemoryBudget`]; a body stream
//! ends cleanly only when its last stage says it finished; a fetch never
//! leaves a partial or unvalidated file under the destination name. Push
//! compresses, then encrypts; the object name never says whether it is
//! encrypted.

pub mod ahead;
pub mod budget;
pub mod codec;
pub mod fetch;
pub mod lz4frame;
pub mod prefetch;
pub mod push;
pub mod share;
pub mod stream;
