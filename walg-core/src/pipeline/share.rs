//! One process's memory for the transfers it runs side by side: the
//! requested push and the files uploaded ahead with it.
//!
//! [`MemoryBudget`](super::budget::MemoryBudget) bounds one transfer. A
//! `wal-push` with upload-ahead (`WALG_UPLOAD_CONCURRENCY`, 16 by default)
//! runs up to that many at once, and each may hold a whole compressed
//! segment for its one request: sixteen 16 MiB segments that do not
//! compress are a quarter of a GiB. A [`TransferShare`] is what the files
//! moved beside the requested one may hold together; each counts the bytes
//! it has handed to the storage (which holds them until its request ends)
//! and the pipeline it started, and waits for room before holding more.
//!
//! Waiting transfers that each hold part of the share could wait for each
//! other forever, so the oldest transfer in flight (in WAL order: the one
//! PostgreSQL needs first) never waits: it proceeds on the per-transfer
//! budget it always had, and when it ends the next oldest becomes the one
//! that does not wait. So the process holds at most the share plus one
//! transfer's budget, whatever the concurrency, and a backlog of segments
//! that compress well still moves many at a time (a pgbench segment is
//! about 3 MiB compressed) while one of incompressible segments moves a few.
//!
//! What this module does not know: files, storages, settings.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::store::{Body, ByteStream, LocalFile};

const KIB: usize = 1024;

/// The memory the transfers of one process share (see the module).
#[derive(Debug)]
pub struct TransferShare {
    kib: Arc<Semaphore>,
    total_kib: usize,
    in_flight: Mutex<BTreeSet<u64>>,
    changed: Notify,
}

impl TransferShare {
    /// What the files uploaded ahead of one `wal-push` may hold together:
    /// with the binary (about 12 MiB) and the requested file's own budget
    /// (about 22 MiB), a process stays under 64 MiB.
    pub const UPLOAD_AHEAD: usize = 24 << 20;

    /// A share of `bytes` (at least one pipeline's worth).
    pub fn new(bytes: usize) -> Arc<Self> {
        let total_kib = bytes.div_ceil(KIB).max(4 * KIB);
        Arc::new(TransferShare {
            kib: Arc::new(Semaphore::new(total_kib)),
            total_kib,
            in_flight: Mutex::new(BTreeSet::new()),
            changed: Notify::new(),
        })
    }

    /// Registers a transfer that holds nothing from the share (the
    /// requested file, on its own budget) but is older than the others:
    /// while it runs, none of them proceeds without room.
    pub fn enter_unshared(self: &Arc<Self>, order: u64) -> Admission {
        self.lock().insert(order);
        Admission {
            share: self.clone(),
            order,
            pipeline: Mutex::new(None),
            held: Mutex::new(Vec::new()),
        }
    }

    /// Admits a transfer, `order` its place in WAL order (lower goes
    /// first), once `pipeline` bytes (its chunks in flight) are free or it
    /// is the oldest in flight.
    pub async fn admit(self: &Arc<Self>, order: u64, pipeline: usize) -> Admission {
        let admission = self.enter_unshared(order);
        if let Some(permit) = admission.acquire(pipeline).await {
            *lock(&admission.pipeline) = Some(permit);
        }
        admission
    }

    /// Bytes of the share held now (for tests and logs).
    pub fn held(&self) -> usize {
        (self.total_kib - self.kib.available_permits()) * KIB
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<u64>> {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_oldest(&self, order: u64) -> bool {
        self.lock().first() == Some(&order)
    }
}

/// One transfer's place in a [`TransferShare`]; what it holds is given back
/// when it is dropped (when the transfer ended, stored or failed).
#[derive(Debug)]
pub struct Admission {
    share: Arc<TransferShare>,
    order: u64,
    /// The pipeline's reservation, given back when the body's stream ends
    /// (its stages have finished and dropped their buffers).
    pipeline: Mutex<Option<OwnedSemaphorePermit>>,
    /// The chunks handed to the storage, held until the request ends.
    held: Mutex<Vec<OwnedSemaphorePermit>>,
}

impl Admission {
    /// Waits until `bytes` more may be held, or returns at once when this
    /// transfer is the oldest in flight.
    pub async fn reserve(&self, bytes: usize) {
        if let Some(permit) = self.acquire(bytes).await {
            lock(&self.held).push(permit);
        }
    }

    /// Room for `bytes` from the share, or `None` when this transfer may
    /// go on without it (the oldest in flight).
    async fn acquire(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        let share = &self.share;
        let need = bytes.div_ceil(KIB).clamp(1, share.total_kib) as u32;
        loop {
            // Registered before looking, so the oldest leaving between the
            // look and the wait still wakes us.
            let changed = share.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if share.is_oldest(self.order) {
                return None;
            }
            tokio::select! {
                permit = share.kib.clone().acquire_many_owned(need) => return permit.ok(),
                _ = &mut changed => {}
            }
        }
    }

    /// Gives back what the body handed to the storage so far: a retried
    /// request reads the body again from the start.
    fn restart(&self) {
        lock(&self.held).clear();
    }

    /// The body's stream ended: its pipeline holds nothing any more.
    fn pipeline_done(&self) {
        lock(&self.pipeline).take();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.share.lock().remove(&self.order);
        self.share.changed.notify_waiters();
    }
}

/// A body whose chunks are counted in a transfer's [`Admission`] before the
/// storage gets them.
pub struct Admitted<'a> {
    inner: &'a dyn Body,
    admission: Arc<Admission>,
}

impl std::fmt::Debug for Admitted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admitted")
            .field("admission", &self.admission)
            .finish_non_exhaustive()
    }
}

impl<'a> Admitted<'a> {
    pub fn new(inner: &'a dyn Body, admission: Arc<Admission>) -> Self {
        Admitted { inner, admission }
    }
}

impl Body for Admitted<'_> {
    fn open(&self) -> ByteStream {
        self.admission.restart();
        let admission = self.admission.clone();
        let ended = self.admission.clone();
        let chunks = self.inner.open().then(move |chunk| {
            let admission = admission.clone();
            async move {
                if let Ok(bytes) = &chunk {
                    admission.reserve(Bytes::len(bytes)).await;
                }
                chunk
            }
        });
        let end = futures::stream::once(async move {
            ended.pipeline_done();
            None
        });
        Box::pin(chunks.map(Some).chain(end).filter_map(std::future::ready))
    }
    fn len_hint(&self) -> Option<u64> {
        self.inner.len_hint()
    }
    fn local_file(&self) -> Option<LocalFile> {
        self.inner.local_file()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MIB: usize = 1 << 20;

    #[tokio::test]
    async fn the_oldest_never_waits_and_the_others_wait_for_room() {
        let share = TransferShare::new(4 * MIB);
        let main = share.enter_unshared(0);
        let a = share.admit(1, 3 * MIB).await;
        assert_eq!(share.held(), 3 * MIB);
        // Room for 1 MiB more: b is admitted, then waits for its chunk.
        let b = Arc::new(share.admit(2, MIB).await);
        let b2 = b.clone();
        let waiting = tokio::spawn(async move { b2.reserve(2 * MIB).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "no room and not the oldest");
        // The requested file holds nothing from the share and never waits.
        main.reserve(100 * MIB).await;
        drop(main);
        // a is now the oldest: it proceeds past the share.
        a.reserve(10 * MIB).await;
        assert!(!waiting.is_finished());
        drop(a);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("b proceeds once a ended")
            .unwrap();
        drop(b);
        assert_eq!(share.held(), 0);
    }

    #[tokio::test]
    async fn many_transfers_over_a_small_share_all_finish() {
        let share = TransferShare::new(4 * MIB);
        let tasks: Vec<_> = (0..16u64)
            .map(|order| {
                let share = share.clone();
                tokio::spawn(async move {
                    let a = share.admit(order, MIB).await;
                    for _ in 0..6 {
                        a.reserve(MIB / 2).await;
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .expect("no transfer waits forever")
                .unwrap();
        }
        assert_eq!(share.held(), 0);
    }

    #[tokio::test]
    async fn a_retried_body_gives_back_what_it_handed_over() {
        let share = TransferShare::new(8 * MIB);
        let _older = share.enter_unshared(0);
        let admission = Arc::new(share.admit(1, MIB).await);
        let data = Bytes::from(vec![7u8; 3 * MIB]);
        let body = Admitted::new(&data, admission.clone());
        assert_eq!(share.held(), MIB, "the pipeline's reservation");
        for _ in 0..3 {
            let read: Vec<_> = body.open().collect().await;
            assert_eq!(read.len(), 1);
            assert_eq!(
                share.held(),
                3 * MIB,
                "the chunks handed over, not the ended pipeline's reservation"
            );
        }
        drop(body);
        drop(admission);
        assert_eq!(share.held(), 0);
    }
}
