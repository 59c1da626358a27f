//! walg-storage: the storage backends and the registry that chooses them.
//!
//! This is the only crate that imports opendal; no opendal type appears in a
//! public signature (opendal changes its API often). A [`Registry`] value maps
//! a lowercase scheme (`file`, `s3`, `gs`, `azure`, `mem`, plus aliases) to a
//! factory that turns a [`StorageSpec`] into a [`walg_core::store::DynStore`].
//! Downstream tools and tests register their own schemes on their own
//! registry value; there is no global registry.
//!
//! What this crate does not do: read environment variables or config files
//! (the CLI builds the `StorageSpec`), or fail over between storages
//! (`walg-failover`).

pub mod clean;
pub mod cloud;
pub mod fs;
pub mod guard;
mod multipart;
mod opendal_store;
pub mod registry;
pub mod spec;

pub use cloud::{open_azure, open_gcs, open_s3};
pub use fs::FileStore;
pub use guard::Guarded;
pub use registry::{Factory, Registry};
pub use spec::{Settings, StorageError, StorageSpec};
