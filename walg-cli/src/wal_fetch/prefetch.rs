//! The background half of restore prefetch: `wal-fetch` hands over a
//! prefetched file when there is one, then starts a detached
//! `walg wal-prefetch` process that downloads the next segments while
//! PostgreSQL replays. One prefetcher runs at a time per directory (a lock
//! file in `running/`); a second one exits at once.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};

use anyhow::{Context, Result};
use walg_core::pipeline::fetch::FetchOptions;
use walg_core::pipeline::prefetch::{default_dir, PrefetchDir};
use walg_core::wal::WalName;

use crate::shared::config::{Config, Raw};
use crate::shared::storage::{self, Opened};

fn dir_for(cfg: &Config, dest: &Path) -> PrefetchDir {
    PrefetchDir::new(
        cfg.prefetch_dir
            .clone()
            .unwrap_or_else(|| default_dir(dest)),
    )
}

fn enabled(cfg: &Config) -> bool {
    cfg.download_concurrency > 1
}

/// Hands over a prefetched copy of `name`, if a valid one is there.
pub fn take(cfg: &Config, name: &WalName, dest: &Path) -> Option<u64> {
    if !enabled(cfg) {
        return None;
    }
    dir_for(cfg, dest).take(name, dest)
}

/// Starts the background prefetcher after a successful fetch of `name`.
/// Failing to start it only costs speed, so errors are logged at debug.
pub fn spawn(config: Option<&Path>, cfg: &Config, name: &WalName, dest: &Path) {
    if !enabled(cfg) || name.segment().is_none() {
        return;
    }
    let pf = dir_for(cfg, dest);
    let Some(segment) = name.segment() else {
        return;
    };
    let Ok(meta) = std::fs::metadata(dest) else {
        return;
    };
    // Nothing to do when the next segments are all here already: spare the
    // process start.
    if pf
        .wanted(&segment, meta.len(), cfg.download_concurrency)
        .is_empty()
    {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut cmd = Process::new(exe);
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    let pg_wal = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    cmd.arg("wal-prefetch")
        .arg(name.to_string())
        .arg(&pg_wal)
        .arg(dest.file_name().unwrap_or_default())
        .arg(meta.len().to_string());
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    // Its own process group: PostgreSQL's signals to the restore command's
    // group must not cut a download in the middle (it would be retried anyway).
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    if let Err(e) = cmd.spawn() {
        tracing::debug!("start the prefetcher: {e}");
    }
}

/// `walg wal-prefetch NAME PG_WAL DEST_NAME SEGMENT_SIZE`: downloads the
/// segments after NAME.
pub async fn run(
    config: Option<&Path>,
    name: &str,
    pg_wal: &Path,
    dest_name: &Path,
    size: u64,
) -> Result<()> {
    let wal = WalName::parse(name)?;
    let Some(segment) = wal.segment() else {
        return Ok(());
    };
    let raw = Raw::load(config)?;
    let cfg = Config::from_raw(&raw)?;
    let dest = pg_wal.join(dest_name);
    let pf = dir_for(&cfg, &dest);
    std::fs::create_dir_all(pf.running())
        .with_context(|| format!("create {}", pf.running().display()))?;
    let lock = File::create(pf.running().join(".lock")).context("open the prefetch lock")?;
    if lock.try_lock().is_err() {
        return Ok(()); // another prefetcher is at work
    }
    // The segment size is that of the segment just restored, passed by the
    // parent: by now PostgreSQL may have consumed or replaced the file.
    // Never assumed to be 16 MiB.
    if !walg_core::wal::is_valid_segment_size(size) {
        return Ok(());
    }
    pf.clean(&segment);
    let wanted = pf.wanted(&segment, size, cfg.download_concurrency);
    if wanted.is_empty() {
        return Ok(());
    }
    let Opened { store, .. } = storage::open(&cfg)?;
    let n = pf
        .fill(
            store.as_ref(),
            &wanted,
            &FetchOptions {
                compression: cfg.compression,
                encryption: cfg.encryption.clone(),
            },
            cfg.download_concurrency,
        )
        .await;
    tracing::debug!("prefetched {n} segments after {name}");
    Ok(())
}
