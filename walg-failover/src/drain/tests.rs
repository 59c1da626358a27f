//! Tests of the drain journal and the drain: what is journaled, the order
//! and bounds of a pass, move and copy, a primary that dies mid-pass, lost
//! and damaged journals, differing copies, two drainers, the lock, and the
//! spill storage under both write policies. In-memory and fault-injecting
//! stores, an injected clock; no sleeping.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use walg_core::store::memory::{Fault, FaultStore, MemoryStore};
use walg_core::store::{ListPages, ObjectMeta};
use walg_core::Store;

use super::*;
use crate::clock::ManualClock;
use crate::{FailoverConfig, Member, WritePolicy};

const PRIMARY_DOWN: Fault = Fault::Fail(ErrorKind::Unavailable);

fn seg(n: u32) -> String {
    format!("wal_005/0000000100000000000000{n:02X}.lz4")
}

fn body(n: u32) -> Bytes {
    Bytes::from(format!("segment {n} ").repeat(100))
}

/// A store that fails every put once its budget of puts is spent, and
/// counts puts: a primary that dies in the middle of a drain.
#[derive(Debug)]
struct Dying {
    inner: MemoryStore,
    puts_left: AtomicI64,
    puts: AtomicU64,
    /// Keys stored, in the order they were.
    order: std::sync::Mutex<Vec<String>>,
}

impl Dying {
    fn new(inner: MemoryStore, puts: i64) -> Self {
        Dying {
            inner,
            puts_left: AtomicI64::new(puts),
            puts: AtomicU64::new(0),
            order: Default::default(),
        }
    }
}

#[async_trait]
impl Store for Dying {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn atomic_if_not_exists(&self) -> bool {
        true
    }
    async fn put(&self, key: &str, body: &dyn Body, opts: PutOptions) -> Result<(), StoreError> {
        self.puts.fetch_add(1, Ordering::SeqCst);
        if self.puts_left.fetch_sub(1, Ordering::SeqCst) <= 0 {
            return Err(StoreError::new(
                ErrorKind::Unavailable,
                "put",
                self.inner.name(),
                key,
                "connection refused",
            ));
        }
        self.inner.put(key, body, opts).await?;
        self.order
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(key.to_string());
        Ok(())
    }
    async fn get(&self, key: &str) -> Result<ByteStream, StoreError> {
        self.inner.get(key).await
    }
    async fn stat(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        self.inner.stat(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.inner.list(prefix).await
    }
    fn list_pages<'a>(&'a self, prefix: &'a str) -> ListPages<'a> {
        self.inner.list_pages(prefix)
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.inner.delete(key).await
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    primary_mem: MemoryStore,
    primary: FaultStore,
    spill: MemoryStore,
}

impl Fixture {
    fn new() -> Fixture {
        let primary_mem = MemoryStore::new("mem://primary");
        Fixture {
            dir: tempfile::tempdir().expect("temporary directory"),
            clock: Arc::new(ManualClock::at_unix_secs(1_700_000_000)),
            primary: FaultStore::new(Arc::new(primary_mem.clone())),
            primary_mem,
            spill: MemoryStore::new("mem://spill"),
        }
    }

    fn drain_dir(&self) -> PathBuf {
        self.dir.path().join("walg").join(DIR_NAME)
    }

    fn config(&self, mode: Option<DrainMode>, max_files: usize) -> FailoverConfig {
        FailoverConfig {
            check_size: 16,
            cache_path: Some(self.dir.path().join("walg").join("storage_status.json")),
            drain: DrainConfig {
                mode,
                max_files,
                max_time: Duration::from_secs(60),
                dir: Some(self.drain_dir()),
            },
            ..FailoverConfig::default()
        }
    }

    fn store_with(&self, primary: DynStore, spill: bool, config: FailoverConfig) -> FailoverStore {
        let members = vec![
            Member::new("default", primary),
            Member::new("spill", Arc::new(self.spill.clone()) as DynStore).with_spill(spill),
        ];
        FailoverStore::with_clock(members, config, self.clock.clone()).expect("valid config")
    }

    fn store(&self, mode: Option<DrainMode>) -> FailoverStore {
        self.store_with(Arc::new(self.primary.clone()), true, self.config(mode, 32))
    }

    fn journal(&self) -> Journal {
        Journal::new(&self.drain_dir(), "spill", "mem://spill")
    }

    fn waiting(&self) -> Vec<String> {
        match self.journal().load() {
            Loaded::Valid(e) => e.into_keys().collect(),
            other => panic!("journal not valid: {other:?}"),
        }
    }

    /// Pushes segments `ns` while the primary is down: they go to the spill.
    async fn spill_during_outage(&self, ns: &[u32]) {
        let store = self.store(None);
        self.primary.set_fault(PRIMARY_DOWN);
        for &n in ns {
            store
                .put(
                    &seg(n),
                    &body(n),
                    PutOptions {
                        if_not_exists: true,
                    },
                )
                .await
                .expect("the spill takes the segment");
        }
        self.primary.set_fault(Fault::None);
        // The dead verdict expires; the primary is usable again.
        self.clock.advance(Duration::from_secs(16 * 60));
    }
}

#[test]
fn journal_records_adds_and_dones_and_rejects_what_it_cannot_trust() {
    let dir = tempfile::tempdir().expect("tempdir");
    let j = Journal::new(dir.path(), "spill", "file:///spill");
    assert_eq!(j.load(), Loaded::Missing);
    j.add(&[&seg(1), &seg(2)], 10).expect("add");
    j.add(&[&seg(3)], 20).expect("add");
    j.done(&[&seg(2)]).expect("done");
    let Loaded::Valid(e) = j.load() else {
        panic!("valid journal expected")
    };
    assert_eq!(e.keys().cloned().collect::<Vec<_>>(), vec![seg(1), seg(3)]);
    assert_eq!(e[&seg(3)].since_ms, 20);

    // Another storage's journal under the same name is a different file.
    let other = Journal::new(dir.path(), "spill", "file:///elsewhere");
    assert_ne!(other.path(), j.path());

    fn check(content: &str, expected: &str) {
        let dir = tempfile::tempdir().expect("tempdir");
        let j = Journal::new(dir.path(), "spill", "file:///spill");
        fs::write(j.path(), content).expect("write");
        match j.load() {
            Loaded::Damaged(why) => assert!(why.contains(expected), "{why}"),
            other => panic!("{content:?}: expected damaged, got {other:?}"),
        }
    }
    let header = r#"{"format":"walg-drain-journal","version":1,"storage":"spill","fingerprint":"file:///spill"}"#;
    check("", "empty");
    check(&format!("{header}\n{{\"add\":\"k\",\"at"), "torn");
    check(&format!("{header}\nnot json\n"), "record 2 is malformed");
    check("{\"format\":\"other\"}\n", "header");
    check(
        &header.replace("file:///spill", "file:///x").to_string(),
        "torn",
    );
    check(
        &format!("{}\n", header.replace("file:///spill", "file:///x")),
        "another storage",
    );
    check(
        &format!("{}\n", header.replace("\"version\":1", "\"version\":9")),
        "version 9",
    );
}

#[test]
fn a_failed_append_marks_the_journal_for_a_rebuild_and_a_rewrite_clears_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let j = Journal::new(dir.path(), "spill", "file:///spill");
    j.add(&[&seg(1)], 1).expect("add");
    j.mark_damaged();
    assert!(matches!(j.load(), Loaded::Damaged(_)));
    let mut extra = BTreeMap::new();
    extra.insert(
        seg(2),
        Pending {
            key: seg(2),
            since_ms: 2,
        },
    );
    let now = j.rewrite(&extra).expect("rewrite");
    // The record already in the file survives the rebuild's union.
    assert_eq!(
        now.keys().cloned().collect::<Vec<_>>(),
        vec![seg(1), seg(2)]
    );
    assert_eq!(j.load(), Loaded::Valid(now));
}

#[tokio::test]
async fn a_journal_that_cannot_be_written_never_fails_the_push() {
    let f = Fixture::new();
    // The drain directory's place is taken by a file: nothing can be
    // created under it.
    fs::create_dir_all(f.dir.path().join("walg")).expect("mkdir");
    fs::write(f.drain_dir(), b"in the way").expect("write");
    let store = f.store(None);
    f.primary.set_fault(PRIMARY_DOWN);
    store
        .put(&seg(1), &body(1), PutOptions::default())
        .await
        .expect("the push succeeds on the spill");
    assert_eq!(f.spill.keys(), vec![seg(1)]);
}

#[tokio::test]
async fn only_files_the_primary_did_not_take_are_journaled() {
    let f = Fixture::new();
    let store = f.store(None);
    store
        .put(&seg(1), &body(1), PutOptions::default())
        .await
        .expect("primary takes it");
    assert_eq!(f.journal().load(), Loaded::Missing);
    f.primary.set_fault(PRIMARY_DOWN);
    store
        .put(&seg(2), &body(2), PutOptions::default())
        .await
        .expect("spill takes it");
    // Probe objects and other non-WAL keys are never journaled.
    store
        .put("walg_gaps/x.json", &body(0), PutOptions::default())
        .await
        .expect("spill takes it");
    assert_eq!(f.waiting(), vec![seg(2)]);
    // A retry that finds it on the spill (a crash after the put, before
    // the journal) journals it again, once.
    store
        .put(
            &seg(2),
            &body(2),
            PutOptions {
                if_not_exists: true,
            },
        )
        .await
        .expect_err("it exists");
    assert_eq!(f.waiting(), vec![seg(2)]);
}

#[tokio::test]
async fn a_pass_moves_every_journaled_file_in_wal_order_verified() {
    let f = Fixture::new();
    f.spill_during_outage(&[3, 1, 2]).await;
    // A history file written during the outage goes first.
    f.spill
        .put("wal_005/00000002.history", &body(9), PutOptions::default())
        .await
        .expect("put");
    f.journal()
        .add(&["wal_005/00000002.history"], 5)
        .expect("add");

    let recording = Arc::new(Dying::new(f.primary_mem.clone(), i64::MAX));
    let store = f.store_with(recording.clone(), true, f.config(None, 32));
    let r = drain(&store).await;
    assert_eq!(r.skipped, None, "{r:?}");
    let s = &r.storages[0];
    assert_eq!((s.copied, s.removed, s.remaining), (4, 4, 0), "{s:?}");
    assert_eq!(
        *recording.order.lock().expect("lock"),
        vec![
            "wal_005/00000002.history".to_string(),
            seg(1),
            seg(2),
            seg(3)
        ]
    );
    for n in 1..=3 {
        assert_eq!(f.primary_mem.object(&seg(n)), Some(body(n)));
    }
    assert!(f.spill.keys().is_empty(), "{:?}", f.spill.keys());
    assert!(f.waiting().is_empty());
    // Nothing left: the next pass does not even take the lock.
    let r = drain(&store).await;
    assert_eq!(
        r.skipped.as_deref(),
        Some("nothing waits on a failover storage")
    );
}

#[tokio::test]
async fn copy_mode_keeps_the_failover_copy_and_off_does_nothing() {
    let f = Fixture::new();
    f.spill_during_outage(&[1, 2]).await;
    let members = |spill| {
        vec![
            Member::new("default", Arc::new(f.primary.clone()) as DynStore),
            Member::new("spill", Arc::new(f.spill.clone()) as DynStore).with_spill(spill),
        ]
    };
    let off = FailoverStore::with_clock(
        members(true),
        f.config(Some(DrainMode::Off), 32),
        f.clock.clone(),
    )
    .expect("config");
    assert!(drain(&off).await.skipped.is_some());
    assert!(f.primary_mem.keys().is_empty());

    // An ordinary failover (not spill) drains with copy by default.
    let copy = FailoverStore::with_clock(members(false), f.config(None, 32), f.clock.clone())
        .expect("config");
    let r = drain(&copy).await;
    assert_eq!(r.storages[0].mode, Some(DrainMode::Copy));
    assert_eq!(r.storages[0].copied, 2);
    assert_eq!(r.storages[0].removed, 0);
    assert_eq!(f.primary_mem.keys(), vec![seg(1), seg(2)]);
    assert_eq!(f.spill.keys(), vec![seg(1), seg(2)]);
    assert!(f.waiting().is_empty());
}

#[tokio::test]
async fn a_pass_is_bounded_by_its_file_count() {
    let f = Fixture::new();
    f.spill_during_outage(&[1, 2, 3, 4, 5]).await;
    let store = f.store_with(Arc::new(f.primary.clone()), true, f.config(None, 2));
    let r = drain(&store).await;
    assert_eq!(r.storages[0].copied, 2);
    assert_eq!(r.storages[0].remaining, 3);
    assert_eq!(f.primary_mem.keys(), vec![seg(1), seg(2)]);
    assert_eq!(f.waiting(), vec![seg(3), seg(4), seg(5)]);
    drain(&store).await;
    drain(&store).await;
    assert_eq!(f.primary_mem.keys().len(), 5);
    assert!(f.spill.keys().is_empty());
}

#[tokio::test]
async fn beside_pushes_in_flight_a_pass_waits_for_room_in_their_share() {
    let f = Fixture::new();
    f.spill_during_outage(&[1, 2, 3]).await;
    let store = f.store_with(Arc::new(f.primary.clone()), true, f.config(None, 32));
    let share = TransferShare::new(4 << 20);
    // The requested file and a file pushed ahead that holds the whole share.
    let requested = share.enter_unshared(0);
    let ahead = share.admit(1, 4 << 20).await;
    let mut pass = tokio::spawn({
        let share = share.clone();
        async move { drain_within(&store, Some(share)).await }
    });
    assert!(
        tokio::time::timeout(Duration::from_millis(100), &mut pass)
            .await
            .is_err(),
        "no room in the share: the drain waits"
    );
    assert!(f.primary_mem.keys().is_empty());
    // The file ahead is stored: its memory is free, the drain goes on
    // (the requested file still in flight).
    drop(ahead);
    let r = tokio::time::timeout(Duration::from_secs(10), pass)
        .await
        .expect("the drain proceeds once there is room")
        .expect("task");
    assert_eq!(r.storages[0].copied, 3, "{r:?}");
    assert_eq!(share.held(), 0, "the drain gave back what it held");
    drop(requested);
}

#[tokio::test]
async fn a_primary_that_dies_mid_pass_stops_it_and_leaves_every_file_somewhere() {
    let f = Fixture::new();
    f.spill_during_outage(&[1, 2, 3, 4]).await;
    let dying = Arc::new(Dying::new(f.primary_mem.clone(), 2));
    let store = f.store_with(dying.clone(), true, f.config(None, 32));
    let r = drain(&store).await;
    let s = &r.storages[0];
    assert_eq!(s.copied, 2);
    assert!(s
        .stopped
        .as_deref()
        .unwrap_or("")
        .contains("connection refused"));
    // One failed request, then the pass stopped.
    assert_eq!(dying.puts.load(Ordering::SeqCst), 3);
    assert_eq!(f.primary_mem.keys(), vec![seg(1), seg(2)]);
    assert_eq!(f.spill.keys(), vec![seg(3), seg(4)]);
    assert_eq!(f.waiting(), vec![seg(3), seg(4)]);
    // The health model now calls the primary dead: the next pass waits.
    let r = drain(&store).await;
    assert_eq!(r.skipped.as_deref(), Some("the primary storage is down"));
}

#[tokio::test]
async fn a_crash_between_copy_and_delete_is_finished_by_the_next_pass() {
    let f = Fixture::new();
    f.spill_during_outage(&[1]).await;
    // The copy reached the primary, then the drainer died: the journal
    // still lists it and the spill still holds it.
    f.primary_mem
        .put(&seg(1), &body(1), PutOptions::default())
        .await
        .expect("put");
    let r = drain(&f.store(None)).await;
    let s = &r.storages[0];
    assert_eq!((s.copied, s.already_present, s.removed), (0, 1, 1), "{s:?}");
    assert!(f.spill.keys().is_empty());
    assert_eq!(f.primary_mem.object(&seg(1)), Some(body(1)));
}

#[tokio::test]
async fn a_different_copy_on_the_primary_is_never_deleted_from_the_failover() {
    let f = Fixture::new();
    f.spill_during_outage(&[1]).await;
    f.primary_mem
        .put(
            &seg(1),
            &Bytes::from_static(b"other"),
            PutOptions::default(),
        )
        .await
        .expect("put");
    let r = drain(&f.store(None)).await;
    assert_eq!(r.storages[0].differ, vec![seg(1)]);
    assert_eq!(r.storages[0].removed, 0);
    assert_eq!(f.spill.object(&seg(1)), Some(body(1)));
    assert_eq!(
        f.primary_mem.object(&seg(1)),
        Some(Bytes::from_static(b"other"))
    );
}

#[tokio::test]
async fn a_lost_or_damaged_journal_is_rebuilt_from_a_listing() {
    let f = Fixture::new();
    f.spill_during_outage(&[1, 2]).await;
    // Lost: the state directory was wiped.
    fs::remove_dir_all(f.drain_dir()).expect("remove");
    let r = drain(&f.store(None)).await;
    assert_eq!(r.storages[0].rebuilt, Some(2));
    assert_eq!(r.storages[0].copied, 2);
    assert!(f.spill.keys().is_empty());

    // Damaged: a torn record. The listing, not the journal, decides.
    f.spill_during_outage(&[3]).await;
    f.spill
        .put(&seg(4), &body(4), PutOptions::default())
        .await
        .expect("put");
    let mut raw = fs::read(f.journal().path()).expect("read");
    raw.extend_from_slice(b"{\"add\":\"wal_005/0000");
    fs::write(f.journal().path(), raw).expect("write");
    let r = drain(&f.store(None)).await;
    assert_eq!(r.storages[0].rebuilt, Some(2), "{r:?}");
    assert_eq!(f.primary_mem.keys().len(), 4);
    assert!(f.spill.keys().is_empty());
    assert!(f.waiting().is_empty());

    // A new host with an empty spill: the listing finds nothing, and the
    // empty journal written then spares the next calls a listing.
    fs::remove_dir_all(f.drain_dir()).expect("remove");
    let r = drain(&f.store(None)).await;
    assert_eq!(r.storages[0].rebuilt, Some(0));
    assert_eq!(f.journal().load(), Loaded::Valid(BTreeMap::new()));
}

#[tokio::test]
async fn a_journaled_file_gone_from_both_storages_is_dropped() {
    let f = Fixture::new();
    f.spill_during_outage(&[1]).await;
    f.spill.delete(&seg(1)).await.expect("delete");
    let r = drain(&f.store(None)).await;
    assert_eq!(r.storages[0].vanished, 1);
    assert!(f.waiting().is_empty());
}

#[tokio::test]
async fn one_drainer_at_a_time() {
    let f = Fixture::new();
    f.spill_during_outage(&[1]).await;
    let held = take_lock(&f.drain_dir()).expect("lock").expect("free");
    let r = drain(&f.store(None)).await;
    assert_eq!(
        r.skipped.as_deref(),
        Some("another walg process is draining")
    );
    drop(held);
    assert_eq!(drain(&f.store(None)).await.storages[0].copied, 1);
}

#[tokio::test]
async fn two_hosts_draining_one_archive_store_each_file_once() {
    // Two hosts, each with its own journal, both spilled the same files to
    // one shared failover (a mount both see).
    let f = Fixture::new();
    f.spill_during_outage(&[1, 2, 3]).await;
    let other_dir = tempfile::tempdir().expect("tempdir");
    let other_drain = other_dir.path().join("walg").join(DIR_NAME);
    Journal::new(&other_drain, "spill", "mem://spill")
        .add(&[&seg(1), &seg(2), &seg(3)], 1)
        .expect("add");
    let counted = Arc::new(Dying::new(f.primary_mem.clone(), i64::MAX));
    let a = f.store_with(counted.clone(), true, f.config(None, 2));
    let mut cfg = f.config(None, 32);
    cfg.cache_path = Some(other_dir.path().join("walg").join("storage_status.json"));
    cfg.drain.dir = Some(other_drain.clone());
    let b = f.store_with(counted.clone(), true, cfg);
    let (ra, rb) = tokio::join!(drain(&a), drain(&b));
    drain(&a).await;
    let copied: u64 = [&ra, &rb].iter().map(|r| r.storages[0].copied).sum();
    assert_eq!(copied, 3, "{ra:?} {rb:?}");
    assert_eq!(f.primary_mem.keys(), vec![seg(1), seg(2), seg(3)]);
    for n in 1..=3 {
        assert_eq!(f.primary_mem.object(&seg(n)), Some(body(n)));
    }
    assert!(f.spill.keys().is_empty());
    assert!(f.waiting().is_empty());
}

#[tokio::test]
async fn a_spill_storage_is_written_only_when_every_other_storage_failed() {
    for policy in [WritePolicy::FirstAlive, WritePolicy::All] {
        let f = Fixture::new();
        // "aaa" sorts before "backup" but is the spill: still tried last.
        let backup = MemoryStore::new("mem://backup");
        let members = vec![
            Member::new("default", Arc::new(f.primary.clone()) as DynStore),
            Member::new("aaa", Arc::new(f.spill.clone()) as DynStore).with_spill(true),
            Member::new("backup", Arc::new(backup.clone()) as DynStore),
        ];
        let mut cfg = f.config(None, 32);
        cfg.write_policy = policy;
        let store = FailoverStore::with_clock(members, cfg, f.clock.clone()).expect("config");
        store
            .put(&seg(1), &body(1), PutOptions::default())
            .await
            .expect("put");
        assert!(f.spill.keys().is_empty(), "{policy:?}");
        if policy == WritePolicy::All {
            assert_eq!(backup.keys(), vec![seg(1)]);
        }
        f.primary.set_fault(PRIMARY_DOWN);
        let _ = store.put(&seg(2), &body(2), PutOptions::default()).await;
        assert!(
            f.spill.keys().is_empty(),
            "{policy:?}: {:?}",
            f.spill.keys()
        );
        let backup_fault = FaultStore::new(Arc::new(backup.clone()));
        backup_fault.set_fault(PRIMARY_DOWN);
        let members = vec![
            Member::new("default", Arc::new(f.primary.clone()) as DynStore),
            Member::new("aaa", Arc::new(f.spill.clone()) as DynStore).with_spill(true),
            Member::new("backup", Arc::new(backup_fault) as DynStore),
        ];
        let mut cfg = f.config(None, 32);
        cfg.write_policy = policy;
        let store = FailoverStore::with_clock(members, cfg, f.clock.clone()).expect("config");
        store
            .put(&seg(3), &body(3), PutOptions::default())
            .await
            .expect("the spill rides out the outage");
        assert_eq!(f.spill.keys(), vec![seg(3)], "{policy:?}");
        let j = Journal::new(&f.drain_dir(), "aaa", "mem://spill");
        assert!(matches!(j.load(), Loaded::Valid(e) if e.contains_key(&seg(3))));
    }
}

#[tokio::test]
async fn backlog_counts_what_waits_per_failover_storage() {
    let f = Fixture::new();
    let store = f.store(None);
    assert_eq!(backlog(&store)[0].journal, "missing");
    f.spill_during_outage(&[2, 1]).await;
    let b = &backlog(&f.store(None))[0];
    assert_eq!((b.storage.as_str(), b.files, b.journal), ("spill", 2, "ok"));
    assert_eq!(b.mode, DrainMode::Move);
    // Recorded at the same time: the first in WAL order is the oldest.
    assert_eq!(b.oldest_key.as_deref(), Some(seg(1).as_str()));
    assert_eq!(b.oldest_since_ms, Some(1_700_000_000_000));
}

#[tokio::test]
async fn same_bytes_compares_whatever_the_chunking() {
    fn stream(chunks: &[&'static [u8]]) -> ByteStream {
        let items: Vec<Result<Bytes, StoreError>> =
            chunks.iter().map(|c| Ok(Bytes::from_static(c))).collect();
        Box::pin(futures::stream::iter(items))
    }
    async fn check(a: &[&'static [u8]], b: &[&'static [u8]], expected: bool) {
        assert_eq!(
            same_bytes(stream(a), stream(b)).await.expect("no error"),
            expected,
            "{a:?} vs {b:?}"
        );
    }
    check(&[b"abc", b"def"], &[b"a", b"", b"bcdef"], true).await;
    check(&[], &[b""], true).await;
    check(&[b"abc"], &[b"abcd"], false).await;
    check(&[b"abcd"], &[b"abc"], false).await;
    check(&[b"abc", b"def"], &[b"abcdeg"], false).await;
}

#[tokio::test]
async fn a_rebuild_lists_the_primary_only_when_it_must() {
    // An empty failover on a new host: the primary is not listed at all.
    let f = Fixture::new();
    let before = f.primary.calls();
    let r = drain(&f.store(Some(DrainMode::Copy))).await;
    assert_eq!(r.storages[0].rebuilt, Some(0), "{r:?}");
    assert_eq!(f.primary.calls(), before, "the primary was asked");

    // Copy mode with history on the failover: only what the primary lacks.
    let f = Fixture::new();
    for n in [1, 2] {
        f.spill
            .put(&seg(n), &body(n), PutOptions::default())
            .await
            .expect("put");
    }
    f.primary_mem
        .put(&seg(1), &body(1), PutOptions::default())
        .await
        .expect("put");
    let members = vec![
        Member::new("default", Arc::new(f.primary.clone()) as DynStore),
        Member::new("spill", Arc::new(f.spill.clone()) as DynStore),
    ];
    let store =
        FailoverStore::with_clock(members, f.config(None, 32), f.clock.clone()).expect("config");
    let r = drain(&store).await;
    let s = &r.storages[0];
    assert_eq!((s.rebuilt, s.copied, s.removed), (Some(1), 1, 0), "{s:?}");
    assert_eq!(f.spill.keys(), vec![seg(1), seg(2)]);
    assert_eq!(f.primary_mem.keys(), vec![seg(1), seg(2)]);
}
