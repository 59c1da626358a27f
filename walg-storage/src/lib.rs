//! walg-storage: the storage backends and the registry that chooses them.
//!
//! Open a storage from a URL through the registry, then use it through
//! `walg-core`'s [`Store`](walg_core::Store) trait:
//!
//! ```
//! use walg_core::store::{read_all, PutOptions, Store};
//! use walg_storage::{Registry, StorageSpec};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let archive = dir.path().join("archive");
//! # let archive = archive.to_str().ok_or("path is not UTF-8")?;
//! let registry = Registry::with_builtin();
//! // What WALG_FILE_PREFIX=/var/lib/walg or WALG_S3_PREFIX=s3://bucket/path select.
//! let store = registry.open(&StorageSpec::from_url("default", &format!("file://{archive}")))?;
//! tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
//!     let body = bytes::Bytes::from_static(b"hello");
//!     store.put("wal_005/hello", &body, PutOptions { if_not_exists: true }).await?;
//!     assert_eq!(read_all(store.get("wal_005/hello").await?).await?, b"hello");
//!     Ok::<_, walg_core::StoreError>(())
//! })?;
//! # Ok(())
//! # }
//! ```
//!
//! This is the only crate that imports opendal; no opendal type appears in a
//! public signature (opendal changes its API often). A [`Registry`] value maps
//! a lowercase scheme (`file`, `s3`, `gs`, `azure`, `mem`, plus aliases) to a
//! factory that turns a [`StorageSpec`] into a [`walg_core::store::DynStore`].
//! Downstream tools and tests register their own schemes on their own
//! registry value; there is no global registry.
//!
//! # Features
//!
//! One per backend, all on by default: `fs` (`file`), `s3`, `gcs` (`gs`,
//! `gcs`), `azure` (`azure`, `az`, `azblob`). A tool that needs only S3
//! depends on `walg-storage = { version = "0.1", default-features = false,
//! features = ["s3"] }` and compiles neither the other opendal services nor
//! their signing crates. The `mem` scheme is always there.
//!
//! What this crate does not do: read environment variables or config files
//! (the CLI builds the `StorageSpec`), or fail over between storages
//! (`walg-failover`).

#[cfg(any(feature = "fs", feature = "s3", feature = "gcs", feature = "azure"))]
mod cause;
pub mod clean;
#[cfg(any(feature = "s3", feature = "gcs", feature = "azure"))]
pub mod cloud;
#[cfg(feature = "identity")]
pub mod credentials;
#[cfg(feature = "fs")]
pub mod fs;
pub mod guard;
#[cfg(feature = "s3")]
mod multipart;
#[cfg(any(feature = "fs", feature = "s3", feature = "gcs", feature = "azure"))]
mod opendal_store;
pub mod registry;
pub mod spec;

#[cfg(feature = "azure")]
pub use cloud::open_azure;
#[cfg(feature = "gcs")]
pub use cloud::open_gcs;
#[cfg(feature = "s3")]
pub use cloud::open_s3;
#[cfg(feature = "fs")]
pub use fs::FileStore;
pub use guard::Guarded;
pub use registry::{Factory, Registry};
pub use spec::{Settings, StorageError, StorageSpec};
