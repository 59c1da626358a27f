//! Opens the configured storages: the one storage, or, when failover
//! storages are configured, a failover store made of `default` and the
//! failovers in name order, with its status cache file. Also where the
//! archive identity's local cache lives and this host's name, which the
//! identity guard of a wal-push records.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use walg_core::archive::identity::{IdentityCache, IdentityGuard, CACHE_FILE_NAME};
use walg_core::store::DynStore;
use walg_failover::{default_cache_path, DrainConfig, FailoverConfig, FailoverStore, Member};
use walg_storage::{Registry, StorageSpec};

use super::config::Config;

/// The opened storages.
#[derive(Debug, Clone)]
pub struct Opened {
    /// What the commands read and write through.
    pub store: DynStore,
    /// The failover store, when failovers are configured.
    pub failover: Option<Arc<FailoverStore>>,
}

fn open_one(registry: &Registry, spec: &StorageSpec) -> Result<DynStore> {
    registry.open(spec).with_context(|| {
        format!(
            "open storage {:?} ({}://{})",
            spec.name, spec.scheme, spec.location
        )
    })
}

/// Opens one member of a failover store. A storage that cannot be opened
/// although its settings are well-formed (a directory that cannot be
/// created, a mount that vanished) becomes a member that fails every call:
/// it counts as dead, the health model records it like a failed upload, and
/// the next storage takes over. A malformed setting stays an error.
fn open_member(
    registry: &Registry,
    spec: &StorageSpec,
    wrap: &dyn Fn(DynStore, &StorageSpec) -> DynStore,
) -> Result<Member> {
    let fp = fingerprint(spec);
    match registry.open(spec) {
        Ok(store) => Ok(Member::new(spec.name.clone(), wrap(store, spec)).with_fingerprint(fp)),
        Err(e) if !e.is_config() => {
            tracing::debug!("open storage {:?}: {e}; counting it as dead", spec.name);
            Ok(Member::unopened(spec.name.clone(), fp, e.to_string()))
        }
        Err(e) => Err(e).with_context(|| {
            format!(
                "open storage {:?} ({}://{})",
                spec.name, spec.scheme, spec.location
            )
        }),
    }
}

/// A credential-free identity of a storage for the status cache: a verdict
/// about `default` is not reused once `default` points somewhere else.
pub fn fingerprint(spec: &StorageSpec) -> String {
    let endpoint = [
        "AWS_ENDPOINT",
        "WALG_GS_ENDPOINT",
        "STORAGE_EMULATOR_HOST",
        "WALG_AZ_ENDPOINT",
        "AZURE_STORAGE_ACCOUNT",
    ]
    .iter()
    .filter_map(|k| spec.settings.get(k))
    .collect::<Vec<_>>()
    .join(",");
    let base = format!("{}://{}", spec.scheme, spec.location.trim_end_matches('/'));
    if endpoint.is_empty() || spec.scheme == "file" {
        base
    } else {
        format!("{base} at {endpoint}")
    }
}

/// The home directory of the current user from /etc/passwd, for processes
/// started without `$HOME` (common under systemd).
fn passwd_home() -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").ok()?.uid().to_string();
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() >= 6 && f[2] == uid && !f[5].is_empty()).then(|| PathBuf::from(f[5]))
    })
}

/// Where the status cache lives: the override, else a per-user state
/// directory; never a predictable name in a shared /tmp.
pub fn cache_path(cfg: &Config) -> Option<PathBuf> {
    if let Some(p) = &cfg.failover.cache_path {
        return Some(p.clone());
    }
    let xdg = std::env::var_os("XDG_STATE_HOME").map(PathBuf::from);
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .filter(|h| h.is_absolute())
        .or_else(passwd_home);
    default_cache_path(xdg.as_deref(), home.as_deref())
}

/// This host's name, for the identity object and temp-file names.
pub fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".to_string())
}

/// The verified-identity cache: next to the storage status cache, trusted
/// for the status cache's lifetime.
pub fn identity_cache(cfg: &Config) -> IdentityCache {
    let path = cache_path(cfg).and_then(|p| p.parent().map(|d| d.join(CACHE_FILE_NAME)));
    IdentityCache::new(path, cfg.failover.cache_lifetime)
}

/// Opens what the commands use.
pub fn open(cfg: &Config) -> Result<Opened> {
    open_guarded(cfg, None)
}

/// Opens what the commands use; with `system_id`, every storage checks the
/// archive identity before its first WAL write (see
/// [`walg_core::archive::identity`]), each storage its own.
pub fn open_guarded(cfg: &Config, system_id: Option<u64>) -> Result<Opened> {
    let registry = Registry::with_builtin();
    let guard = |store: DynStore, spec: &StorageSpec| -> DynStore {
        match system_id {
            Some(id) => {
                IdentityGuard::wrap(store, id, fingerprint(spec), host(), identity_cache(cfg))
            }
            None => store,
        }
    };
    let only_one = cfg.storages.len() == 1 && cfg.failover.target.is_none();
    if only_one {
        let spec = &cfg.storages[0];
        return Ok(Opened {
            store: guard(open_one(&registry, spec)?, spec),
            failover: None,
        });
    }
    let mut members = Vec::new();
    for spec in &cfg.storages {
        // A target storage is used alone: do not build the others.
        if cfg
            .failover
            .target
            .as_ref()
            .is_some_and(|t| t != &spec.name)
        {
            continue;
        }
        if cfg.failover.target.is_some() {
            // Used alone: nothing to fail over to, so its error is the answer.
            let store = guard(open_one(&registry, spec)?, spec);
            members.push(Member::new(spec.name.clone(), store).with_fingerprint(fingerprint(spec)));
        } else {
            let spill = cfg.spill.contains(&spec.name);
            members.push(open_member(&registry, spec, &guard)?.with_spill(spill));
        }
    }
    if cfg.failover.target.is_some() && members.len() == 1 {
        return Ok(Opened {
            store: members.remove(0).store().clone(),
            failover: None,
        });
    }
    let cache_path = cache_path(cfg);
    let config = FailoverConfig {
        // The drain journals live beside the status cache.
        drain: DrainConfig {
            dir: cache_path
                .as_deref()
                .and_then(walg_failover::drain::dir_beside),
            ..cfg.failover.drain.clone()
        },
        cache_path,
        // The target was applied above by building only that member.
        target: None,
        ..cfg.failover.clone()
    };
    let failover =
        Arc::new(FailoverStore::new(members, config).context("configure failover storages")?);
    Ok(Opened {
        store: failover.clone(),
        failover: Some(failover),
    })
}

/// Opens every configured storage for the `st` commands (target ignored).
pub fn open_all(cfg: &Config) -> Result<Opened> {
    let mut cfg = cfg.clone();
    cfg.failover.target = None;
    if cfg.storages.len() == 1 {
        // Still a failover store of one, so `st status` and `st check` work
        // the same way for a single storage.
        let registry = Registry::with_builtin();
        let member = open_member(&registry, &cfg.storages[0], &|s, _| s)?;
        let config = FailoverConfig {
            cache_path: cache_path(&cfg),
            cache_lifetime: cfg.failover.cache_lifetime,
            ..FailoverConfig::default()
        };
        let f = Arc::new(FailoverStore::new(vec![member], config)?);
        return Ok(Opened {
            store: f.clone(),
            failover: Some(f),
        });
    }
    open(&cfg)
}
