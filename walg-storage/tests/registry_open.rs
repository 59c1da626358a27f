//! A downstream crate registers its own scheme on its own registry value,
//! without touching walg-storage: here `faulty://<scheme>://<location>`, which
//! opens any registered storage and wraps it in walg-core's `FaultStore`.

use std::sync::Arc;

use bytes::Bytes;
use walg_core::store::error::ErrorKind;
use walg_core::store::memory::{Fault, FaultStore};
use walg_core::store::{read_all, DynStore, PutOptions};
use walg_storage::{Registry, StorageSpec};

/// Walg's backends plus `faulty`. The `FAULT` setting chooses the fault:
/// `none`, `unavailable` (every call) or `readonly` (writes refused).
fn registry_with_faulty() -> Registry {
    let mut registry = Registry::with_builtin();
    let base = registry.clone();
    registry.register("faulty", move |spec: &StorageSpec| {
        let mut inner_spec = StorageSpec::from_url(spec.name.clone(), &spec.location);
        inner_spec.settings = spec.settings.clone();
        inner_spec.timeout = spec.timeout;
        inner_spec.retries = spec.retries;
        let inner = base.open(&inner_spec)?;
        let store = FaultStore::new(inner);
        let fault = match spec.settings.get("FAULT").unwrap_or("none") {
            "none" => Fault::None,
            "unavailable" => Fault::Fail(ErrorKind::Unavailable),
            "readonly" => Fault::FailWrites(ErrorKind::PermissionDenied),
            other => {
                return Err(spec.config_error(
                    "FAULT",
                    format!("unknown fault {other:?}; use none, unavailable or readonly"),
                ))
            }
        };
        store.set_fault(fault);
        Ok(Arc::new(store) as DynStore)
    });
    registry
}

fn faulty(location: &str, fault: &str) -> StorageSpec {
    let mut spec = StorageSpec::new("faulty-test", "faulty", location);
    spec.settings.set("FAULT", fault);
    spec
}

#[tokio::test]
async fn a_registered_scheme_wraps_a_builtin_file_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = registry_with_faulty();
    let location = format!("file://{}", dir.path().display());
    let store = registry
        .open(&faulty(&location, "none"))
        .expect("open faulty over file");
    store
        .put(
            "wal_005/a",
            &Bytes::from_static(b"data"),
            PutOptions::default(),
        )
        .await
        .expect("put passes through");
    assert_eq!(
        std::fs::read(dir.path().join("wal_005/a")).expect("on disk"),
        b"data"
    );

    let readonly = registry
        .open(&faulty(&location, "readonly"))
        .expect("open read-only");
    let err = readonly
        .put(
            "wal_005/b",
            &Bytes::from_static(b"x"),
            PutOptions::default(),
        )
        .await
        .expect_err("write refused");
    assert_eq!(err.kind, ErrorKind::PermissionDenied);
    let got = read_all(readonly.get("wal_005/a").await.expect("reads pass"))
        .await
        .expect("read");
    assert_eq!(got, b"data");
}

#[tokio::test]
async fn an_unavailable_fault_fails_every_call() {
    let registry = registry_with_faulty();
    let store = registry
        .open(&faulty("mem://x", "unavailable"))
        .expect("open faulty over mem");
    let err = store.stat("k").await.expect_err("stat fails");
    assert_eq!(err.kind, ErrorKind::Unavailable);
    assert!(err.kind.is_storage_failure());
}

#[test]
fn the_new_scheme_is_listed_and_validates_its_settings() {
    let registry = registry_with_faulty();
    assert!(registry.schemes().contains(&"faulty") && registry.schemes().contains(&"s3"));
    let err = registry
        .open(&faulty("mem://x", "gremlins"))
        .expect_err("bad fault");
    assert!(err.to_string().contains("FAULT"), "{err}");
    // The builtin registry is untouched.
    let err = Registry::with_builtin()
        .open(&faulty("mem://x", "none"))
        .expect_err("not registered there");
    assert!(err.to_string().contains("faulty"), "{err}");
}
