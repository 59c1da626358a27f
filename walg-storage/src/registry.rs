//! The backend registry: scheme -> factory.
//!
//! Which built-in schemes exist depends on the crate's features (`fs`, `s3`,
//! `gcs`, `azure`); asking for one that was compiled out is an error that
//! names the feature to enable.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use walg_core::store::memory::MemoryStore;
use walg_core::store::DynStore;

use crate::spec::{StorageError, StorageSpec};

/// Every built-in scheme with the feature that compiles it.
const BUILTIN: &[(&str, &str)] = &[
    ("file", "fs"),
    ("s3", "s3"),
    ("gs", "gcs"),
    ("gcs", "gcs"),
    ("azure", "azure"),
    ("az", "azure"),
    ("azblob", "azure"),
];

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

    /// A registry with walg's own backends: `mem` always, and `file`, `s3`,
    /// `gs`/`gcs`, `azure`/`az`/`azblob` as the crate's features allow.
    pub fn with_builtin() -> Self {
        let mut r = Registry::empty();
        r.register("mem", |spec: &StorageSpec| {
            Ok(Arc::new(MemoryStore::new(&spec.name)) as DynStore)
        });
        #[cfg(feature = "fs")]
        r.register("file", open_file);
        #[cfg(feature = "s3")]
        r.register("s3", crate::cloud::open_s3);
        #[cfg(feature = "gcs")]
        for scheme in ["gs", "gcs"] {
            r.register(scheme, crate::cloud::open_gcs);
        }
        #[cfg(feature = "azure")]
        for scheme in ["azure", "az", "azblob"] {
            r.register(scheme, crate::cloud::open_azure);
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
        let Some(factory) = self.factories.get(&scheme) else {
            if let Some((_, feature)) = BUILTIN.iter().find(|(s, _)| *s == scheme) {
                return Err(StorageError::NotCompiled {
                    scheme,
                    feature: (*feature).to_string(),
                });
            }
            return Err(StorageError::UnknownScheme {
                scheme: spec.scheme.clone(),
                known: self.schemes().join(", "),
            });
        };
        factory(spec)
    }
}

/// The `file` backend, guarded by the spec's timeout and retries.
#[cfg(feature = "fs")]
pub fn open_file(spec: &StorageSpec) -> Result<DynStore, StorageError> {
    use crate::fs::FileStore;
    use crate::guard::Guarded;
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
    fn a_compiled_out_scheme_names_its_feature() {
        let r = Registry::empty();
        let err = r
            .open(&StorageSpec::new("default", "gs", "b/p"))
            .expect_err("nothing registered");
        assert!(err.to_string().contains("`gcs` feature"), "{err}");
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
