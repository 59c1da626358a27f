//! Starts the drain back to the primary beside a `wal-push` and says what
//! it did: one INFO line when files went back, nothing otherwise.
//!
//! The drain itself (the journals, the bounded pass, the verification) is
//! [`walg_failover::drain`]; this module only runs a pass as a task of the
//! call, so it overlaps the requested push, and waits for it before the
//! process exits (the pass bounds itself by `WALG_FAILOVER_STORAGES_DRAIN_MAX_TIME`).
//! A pass never fails the call: whatever it could not do waits for the next.

use std::sync::Arc;

use walg_core::pipeline::share::TransferShare;
use walg_failover::{DrainReport, FailoverStore};

use crate::shared::format::ago;

/// A pass running in the background of the call.
pub struct Running(Option<tokio::task::JoinHandle<DrainReport>>);

/// Starts a pass when failover storages are configured; the objects it
/// copies back count in `share`, the memory of the files the call pushes.
pub fn start(failover: Option<Arc<FailoverStore>>, share: Arc<TransferShare>) -> Running {
    Running(
        failover.map(|f| {
            tokio::spawn(async move { walg_failover::drain_within(&f, Some(share)).await })
        }),
    )
}

impl Running {
    /// Waits for the pass and logs what it did.
    pub async fn finish(self) {
        let Some(handle) = self.0 else { return };
        let report = match handle.await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!("drain task: {e}");
                return;
            }
        };
        log(&report);
    }
}

fn log(r: &DrainReport) {
    if let Some(why) = &r.skipped {
        tracing::debug!("no drain back to the primary: {why}");
        return;
    }
    for s in &r.storages {
        if s.copied + s.already_present + s.removed == 0 {
            continue;
        }
        tracing::info!(
            storage = %s.storage,
            "drained {} file(s) ({} bytes) from failover storage {:?} back to the primary in {} ms, each verified{}{}; {} still waiting{}",
            s.copied + s.already_present,
            s.bytes,
            s.storage,
            r.elapsed_ms,
            if s.removed > 0 {
                format!(", {} removed from {:?}", s.removed, s.storage)
            } else {
                String::new()
            },
            if s.already_present > 0 {
                format!(" ({} were already there)", s.already_present)
            } else {
                String::new()
            },
            s.remaining,
            if r.timed_out {
                " (WALG_FAILOVER_STORAGES_DRAIN_MAX_TIME reached)"
            } else {
                ""
            }
        );
    }
}

/// "since 12 min ago" for a backlog's oldest record.
pub fn since(ms: Option<u64>) -> String {
    ago(ms.map(|ms| std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)))
}
