//! The backend registry: scheme -> factory.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use walg_core::memory::MemoryStore;
use walg_core::store::DynStore;

use crate::cloud::{open_azure, open_gcs, open_s3};
use crate::fs::FileStore;
use crate::guard::Guarded;
use crate::spec::{StorageError, StorageSpec};

/// Opens a storage from its spec.
pub type Factory = Arc<dyn Fn(&StorageSpec) -> Result<DynStore, StorageError> + Send + Sync>;

/// Maps lowercase schemes to factories. A value, not a global: each tool or
/// test builds the registry it wants.
#[derive(Clone, Default)]
pub struct Registry {
    factories: BTreeMap<String, Factory>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("schemes", &self.schemes())
            .finish()
    }
}

impl Registry {
    /// A registry with no schemes.
    pub fn empty() -> Self {
        Registry::default()
    }

    /// A registry with walg's own backends.
    pub fn with_builtin() -> Self {
        let mut r = Registry::empty();
        r.register("mem", |spec: &StorageSpec| {
            Ok(Arc::new(MemoryStore::new(&spec.name)) as DynStore)
        });
        r.register("file", open_file);
        r.register("s3", open_s3);
        for scheme in ["gs", "gcs"] {
            r.register(scheme, open_gcs);
        }
        for scheme in ["azure", "az", "azblob"] {
            r.register(scheme, open_azure);
        }
        r
    }

    /// Adds or replaces a scheme.
    pub fn register<F>(&mut self, scheme: &str, factory: F) -> &mut Self
    where
        F: Fn(&StorageSpec) -> Result<DynStore, StorageError> + Send + Sync + 'static,
    {
        self.factories
            .insert(scheme.to_ascii_lowercase(), Arc::new(factory));
        self
    }

    /// The registered schemes, sorted.
    pub fn schemes(&self) -> Vec<&str> {
        self.factories.keys().map(String::as_str).collect()
    }

    /// Opens the storage `spec` describes.
    pub fn open(&self, spec: &StorageSpec) -> Result<DynStore, StorageError> {
        let scheme = spec.scheme.to_ascii_lowercase();
        let factory = self
            .factories
            .get(&scheme)
            .ok_or_else(|| StorageError::UnknownScheme {
                scheme: spec.scheme.clone(),
                known: self.schemes().join(", "),
            })?;
        factory(spec)
    }
}

/// The `file` backend, guarded by the spec's timeout and retries.
pub fn open_file(spec: &StorageSpec) -> Result<DynStore, StorageError> {
    let store = FileStore::open(spec)?;
    let label = format!("file://{}", store.root().display());
    Ok(Guarded::wrap(
        Arc::new(store),
        label,
        spec.timeout,
        spec.retries,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_scheme_lists_known_ones() {
        let r = Registry::with_builtin();
        let err = r
            .open(&StorageSpec::new("default", "ftp", "x"))
            .expect_err("ftp is unknown");
        let text = err.to_string();
        assert!(text.contains("\"ftp\"") && text.contains("mem"), "{text}");
    }

    #[test]
    fn downstream_can_register_a_scheme() {
        let mut r = Registry::empty();
        r.register("Test", |spec: &StorageSpec| {
            Ok(Arc::new(MemoryStore::new(&spec.name)) as DynStore)
        });
        let store = r
            .open(&StorageSpec::new("x", "test", ""))
            .expect("registered");
        assert_eq!(store.name(), "x");
    }
}
