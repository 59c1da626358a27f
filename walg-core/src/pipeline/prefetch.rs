//! Restore prefetch: while PostgreSQL replays one segment, the next ones are
//! downloaded into a prefetch directory, so the next `wal-fetch` is a rename.
//!
//! The layout is WAL-G's: `<pg_wal>/.wal-g/prefetch/<segment>` for finished
//! downloads and `.../prefetch/running/` for downloads in progress (a
//! download is renamed out of `running/` only once complete and validated).
//! A prefetched file is validated again (size, page header, position) before
//! it is handed to PostgreSQL, since the directory outlives processes.
//!
//! What this module does not do: start the background process (the CLI
//! does), or prefetch anything but plain segments.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use futures::StreamExt;

use crate::pipeline::fetch::{fetch_file, FetchOptions};
use crate::store::Store;
use crate::wal::page::{LongPageHeader, LONG_HEADER_LEN};
use crate::wal::{is_valid_segment_size, Segment, WalName};

/// Files from other timelines, or leftovers, older than this are removed.
const STALE_AGE: Duration = Duration::from_secs(600);

/// A prefetch directory.
#[derive(Debug, Clone)]
pub struct PrefetchDir {
    pub dir: PathBuf,
}

/// The default prefetch directory for a restore destination (`%p`).
pub fn default_dir(dest: &Path) -> PathBuf {
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    parent.join(".wal-g").join("prefetch")
}

/// Checks a local segment file: size, header, position.
pub fn validate_segment_file(path: &Path, segment: &Segment) -> Result<u64, String> {
    let len = fs::metadata(path).map_err(|e| e.to_string())?.len();
    if !is_valid_segment_size(len) {
        return Err(format!("size {len} is not a WAL segment size"));
    }
    let mut head = [0u8; LONG_HEADER_LEN];
    fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .map_err(|e| e.to_string())?;
    let h = LongPageHeader::parse(&head).map_err(|e| e.to_string())?;
    if u64::from(h.segment_size) != len {
        return Err(format!(
            "size {len} differs from the header's segment size {}",
            h.segment_size
        ));
    }
    h.check_position(segment).map_err(|e| e.to_string())?;
    Ok(len)
}

impl PrefetchDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        PrefetchDir { dir: dir.into() }
    }

    pub fn running(&self) -> PathBuf {
        self.dir.join("running")
    }

    /// Moves a prefetched, valid copy of `name` to `dest`; returns its size.
    /// An invalid copy is removed and `None` returned, so the caller fetches
    /// from storage.
    pub fn take(&self, name: &WalName, dest: &Path) -> Option<u64> {
        let segment = name.segment()?;
        let path = self.dir.join(name.to_string());
        if !path.exists() {
            return None;
        }
        match validate_segment_file(&path, &segment) {
            Ok(len) => match fs::rename(&path, dest) {
                Ok(()) => Some(len),
                Err(e) => {
                    // Another file system (WALG_PREFETCH_DIR elsewhere): copy.
                    tracing::debug!("rename prefetched {name}: {e}; copying");
                    let copied = fs::copy(&path, dest).ok()?;
                    let _ = fs::remove_file(&path);
                    Some(copied)
                }
            },
            Err(reason) => {
                tracing::warn!(
                    "prefetched {name} is invalid ({reason}); removed it, fetching from storage"
                );
                let _ = fs::remove_file(&path);
                None
            }
        }
    }

    /// The next `count` segments after `current` that are not prefetched yet.
    pub fn wanted(&self, current: &Segment, segment_size: u64, count: usize) -> Vec<Segment> {
        let mut out = Vec::new();
        let mut s = *current;
        for _ in 0..count {
            s = s.next(segment_size);
            if !self.dir.join(s.to_string()).exists() {
                out.push(s);
            }
        }
        out
    }

    /// Removes segments at or before `current` on its timeline (consumed or
    /// skipped), other timelines' and partial leftovers older than ten minutes.
    pub fn clean(&self, current: &Segment) {
        let now = SystemTime::now();
        let old = |p: &Path| {
            fs::metadata(p)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age > STALE_AGE)
        };
        for dir in [self.dir.clone(), self.running()] {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    continue;
                }
                let name = e.file_name().to_string_lossy().into_owned();
                let remove = match WalName::parse(&name).ok().and_then(|n| n.segment()) {
                    Some(s) if s.timeline == current.timeline => s <= *current || old(&p),
                    _ => old(&p),
                };
                if remove {
                    let _ = fs::remove_file(&p);
                }
            }
        }
    }

    /// Downloads `segments` (in order, `concurrency` at a time) into the
    /// directory. Stops at the first segment the storage does not have: the
    /// later ones cannot exist yet, so asking for them would only be a storm
    /// of "not found" requests. Returns how many were prefetched.
    pub async fn fill(
        &self,
        store: &dyn Store,
        segments: &[Segment],
        opts: &FetchOptions,
        concurrency: usize,
    ) -> usize {
        if fs::create_dir_all(self.running()).is_err() {
            return 0;
        }
        let running = self.running();
        let mut fetches = futures::stream::iter(segments.iter().map(|s| {
            let tmp = running.join(s.to_string());
            async move {
                let r = fetch_file(store, &s.to_string(), &tmp, opts).await;
                (*s, tmp, r)
            }
        }))
        .buffered(concurrency.max(1));
        let mut done = 0;
        while let Some((segment, tmp, result)) = fetches.next().await {
            match result {
                Ok(_) => {
                    if fs::rename(&tmp, self.dir.join(segment.to_string())).is_ok() {
                        done += 1;
                    }
                }
                Err(e) => {
                    let _ = fs::remove_file(&tmp);
                    if !e.is_not_found() {
                        tracing::debug!("prefetch {segment}: {e}");
                    }
                    break;
                }
            }
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::codec::{compress, Compression};
    use crate::store::memory::{FaultStore, MemoryStore};
    use crate::store::PutOptions;
    use crate::wal::page::synthetic_segment;
    use bytes::Bytes;
    use std::sync::Arc;

    const SIZE: u64 = 1 << 20;

    fn seg(n: u32) -> Segment {
        Segment {
            timeline: 1,
            log: 0,
            seg: n,
        }
    }

    async fn store_with(segments: &[u32]) -> MemoryStore {
        let store = MemoryStore::new("mem");
        for n in segments {
            let data = synthetic_segment(&seg(*n), SIZE, 1, u64::from(*n));
            let key = format!("wal_005/{}.lz4", seg(*n));
            store
                .put(
                    &key,
                    &Bytes::from(compress(Compression::Lz4, &data).expect("lz4")),
                    PutOptions::default(),
                )
                .await
                .expect("put");
        }
        store
    }

    #[tokio::test]
    async fn prefetches_then_hands_over_valid_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pf = PrefetchDir::new(dir.path().join("prefetch"));
        let store = store_with(&[2, 3, 4]).await;
        let wanted = pf.wanted(&seg(1), SIZE, 3);
        assert_eq!(wanted, [seg(2), seg(3), seg(4)]);
        assert_eq!(
            pf.fill(&store, &wanted, &FetchOptions::default(), 2).await,
            3
        );
        assert!(pf.wanted(&seg(1), SIZE, 3).is_empty());
        let dest = dir.path().join("RECOVERYXLOG");
        let name = WalName::Segment(seg(2));
        assert_eq!(pf.take(&name, &dest), Some(SIZE));
        assert_eq!(
            fs::read(&dest).expect("read"),
            synthetic_segment(&seg(2), SIZE, 1, 2)
        );
        // A corrupted prefetched file is refused and removed.
        fs::write(pf.dir.join(seg(3).to_string()), b"garbage").expect("write");
        assert_eq!(pf.take(&WalName::Segment(seg(3)), &dest), None);
        assert!(!pf.dir.join(seg(3).to_string()).exists());
        // A file for another position is refused too.
        fs::copy(
            pf.dir.join(seg(4).to_string()),
            pf.dir.join(seg(5).to_string()),
        )
        .expect("copy");
        assert_eq!(pf.take(&WalName::Segment(seg(5)), &dest), None);
        pf.clean(&seg(4));
        assert!(
            !pf.dir.join(seg(4).to_string()).exists(),
            "consumed segments cleaned"
        );
    }

    #[tokio::test]
    async fn a_missing_segment_stops_the_prefetch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pf = PrefetchDir::new(dir.path().join("prefetch"));
        let counting = FaultStore::new(Arc::new(store_with(&[2]).await));
        let wanted = pf.wanted(&seg(1), SIZE, 10);
        assert_eq!(
            pf.fill(&counting, &wanted, &FetchOptions::default(), 1)
                .await,
            1
        );
        // Segment 2 found (1 request), segment 3 missing (4 probed keys), then stop.
        assert_eq!(
            counting.calls(),
            5,
            "no requests past the first missing segment"
        );
    }
}
