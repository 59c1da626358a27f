//! A downstream tool built on walg's crates, without the `walg` binary.
//!
//! It registers its own backend scheme (`flaky://`, a file-system store
//! wrapped in `walg-core`'s fault injector) on its own registry value, builds
//! a failover store from two members (`default` on `flaky://`, which is
//! down, and `backup` on `file://`), pushes a WAL segment through
//! `walg-core`'s push pipeline, and fetches it back.
//!
//! It depends on `walg-storage` with `default-features = false, features =
//! ["fs"]`: no S3, GCS or Azure code is compiled for it.
//!
//! Run: `cargo run -p walg-failover --example downstream_tool [DIR]`
//! (DIR defaults to a temporary directory).

use std::error::Error;
use std::path::PathBuf;
use std::sync::Arc;

use walg_core::pipeline::fetch::{fetch_file, FetchOptions};
use walg_core::pipeline::push::{push_file, PushOptions, PushOutcome};
use walg_core::store::error::ErrorKind;
use walg_core::store::memory::{Fault, FaultStore};
use walg_core::store::DynStore;
use walg_core::wal::page::synthetic_segment;
use walg_core::WalName;
use walg_failover::{FailoverConfig, FailoverStore, Member};
use walg_storage::{Registry, StorageSpec};

/// walg's backends plus `flaky://<path>`: a file store whose `FLAKY` setting
/// (`none` or `down`) injects failures, the way a tool would test its
/// failover handling.
fn registry() -> Registry {
    let mut registry = Registry::with_builtin();
    let builtin = registry.clone();
    registry.register("flaky", move |spec: &StorageSpec| {
        let mut inner = StorageSpec::new(spec.name.clone(), "file", spec.location.clone());
        inner.timeout = spec.timeout;
        inner.retries = 0;
        let store = FaultStore::new(builtin.open(&inner)?);
        match spec.settings.get("FLAKY").unwrap_or("none") {
            "none" => {}
            "down" => store.set_fault(Fault::Fail(ErrorKind::Unavailable)),
            other => {
                return Err(
                    spec.config_error("FLAKY", format!("expected none or down, got {other:?}"))
                )
            }
        }
        Ok(Arc::new(store) as DynStore)
    });
    registry
}

fn main() -> Result<(), Box<dyn Error>> {
    let scratch = tempfile::tempdir()?;
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| scratch.path().to_path_buf());
    let location = |sub: &str| -> Result<String, Box<dyn Error>> {
        Ok(dir
            .join(sub)
            .to_str()
            .ok_or("directory is not UTF-8")?
            .to_string())
    };

    // The two members, opened through the registry by URL, as a config would.
    let registry = registry();
    let mut primary =
        StorageSpec::from_url("default", &format!("flaky://{}", location("primary")?));
    primary.settings.set("FLAKY", "down");
    let backup = StorageSpec::from_url("backup", &format!("file://{}", location("backup")?));
    let members = vec![
        Member::new("default", registry.open(&primary)?),
        Member::new("backup", registry.open(&backup)?),
    ];
    // No cache file: verdicts live in memory for this one process.
    let store = FailoverStore::new(members, FailoverConfig::default())?;

    // A 1 MiB WAL segment with a valid page header, as `initdb --wal-segsize=1` makes.
    let name = WalName::parse("000000010000000000000007")?;
    let WalName::Segment(segment) = name else {
        return Err("not a segment name".into());
    };
    let wal = dir.join("pg_wal");
    std::fs::create_dir_all(&wal)?;
    let path = wal.join(name.to_string());
    std::fs::write(
        &path,
        synthetic_segment(&segment, 1 << 20, 7_000_000_000, 1),
    )?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let outcome = push_file(&store, &path, &PushOptions::default()).await?;
        let PushOutcome::Stored {
            key,
            storage,
            source_bytes,
            stored_bytes,
        } = outcome
        else {
            return Err(format!("expected a new copy, got {outcome:?}").into());
        };
        println!("pushed {name} as {key} to {storage:?}: {source_bytes} -> {stored_bytes} bytes");
        if storage != "backup" {
            return Err(format!(
                "expected the push to fail over to \"backup\", it went to {storage:?}"
            )
            .into());
        }
        for s in store.status().await {
            println!("storage {}: alive={:?}", s.name, s.alive);
        }

        let restored = wal.join("RECOVERYXLOG");
        let got = fetch_file(
            &store,
            &name.to_string(),
            &restored,
            &FetchOptions::default(),
        )
        .await?;
        if std::fs::read(&restored)? != std::fs::read(&path)? {
            return Err("the fetched segment differs from the pushed one".into());
        }
        println!("fetched {name} from {}: identical", got.key);
        Ok::<_, Box<dyn Error>>(())
    })?;
    Ok(())
}
