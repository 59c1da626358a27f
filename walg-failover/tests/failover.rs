//! Behaviour of `FailoverStore` over fault-injecting in-memory members, with
//! a manual clock: failover within a call, skipping dead members, recovery,
//! probe counts with fresh and cold caches, read and list policies.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use walg_core::store::memory::{Fault, FaultStore, MemoryStore};
use walg_core::store::{read_all, DynStore};
use walg_core::{Body, ByteStream, ErrorKind, ObjectMeta, PutOptions, Store, StoreError};
use walg_failover::{
    FailoverConfig, FailoverError, FailoverStore, ManualClock, Member, WritePolicy,
};

const LIFE: Duration = Duration::from_secs(15 * 60);
const NAMES: [&str; 3] = ["default", "b", "c"];

/// Members `default`, `b`, `c` (as many as asked), a status cache file in a
/// temporary directory and a manual clock. Each `store()` call is a new
/// FailoverStore over the same members and file: a new walg process.
struct Fixture {
    mem: Vec<MemoryStore>,
    fault: Vec<FaultStore>,
    clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Fixture {
    fn new(n: usize) -> Self {
        let mem: Vec<MemoryStore> = NAMES[..n]
            .iter()
            .map(|n| MemoryStore::new(format!("mem://{n}")))
            .collect();
        let fault = mem
            .iter()
            .map(|m| FaultStore::new(Arc::new(m.clone())))
            .collect();
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("walg").join("storage_status.json");
        Fixture {
            mem,
            fault,
            clock: Arc::new(ManualClock::at_unix_secs(1_700_000_000)),
            _dir: dir,
            path,
        }
    }

    fn config(&self) -> FailoverConfig {
        FailoverConfig {
            check_size: 16,
            cache_lifetime: LIFE,
            cache_path: Some(self.path.clone()),
            ..FailoverConfig::default()
        }
    }

    fn store(&self) -> FailoverStore {
        self.store_with(self.config())
    }

    fn store_with(&self, config: FailoverConfig) -> FailoverStore {
        let members = self
            .fault
            .iter()
            .zip(NAMES)
            .map(|(f, n)| Member::new(n, Arc::new(f.clone()) as DynStore))
            .collect();
        FailoverStore::with_clock(members, config, self.clock.clone()).expect("valid config")
    }

    fn calls(&self) -> Vec<u64> {
        self.fault.iter().map(|f| f.calls()).collect()
    }

    /// Calls made since `before`, per member.
    fn since(&self, before: &[u64]) -> Vec<u64> {
        self.calls()
            .iter()
            .zip(before)
            .map(|(a, b)| a - b)
            .collect()
    }

    fn set(&self, i: usize, fault: Fault) {
        self.fault[i].set_fault(fault);
    }

    /// The objects of member `i`, without probe leftovers.
    fn keys(&self, i: usize) -> Vec<String> {
        self.mem[i].keys()
    }
}

async fn put(store: &FailoverStore, key: &str) -> Result<(), StoreError> {
    store
        .put(key, &Bytes::from_static(b"segment"), PutOptions::default())
        .await
}

async fn alive(store: &FailoverStore) -> Vec<Option<bool>> {
    store.status().await.into_iter().map(|s| s.alive).collect()
}

#[tokio::test]
async fn a_failed_primary_fails_over_within_the_same_call() {
    // Cold cache: the primary's probe fails, so the upload goes to `b`
    // (the last member, not probed: its upload is its own probe).
    let f = Fixture::new(2);
    f.set(0, Fault::Fail(ErrorKind::Unavailable));
    let store = f.store();
    put(&store, "k1").await.expect("failover");
    assert_eq!(f.calls(), [1, 1]);
    assert_eq!(f.keys(1), ["k1"]);
    assert_eq!(alive(&store).await, [Some(false), Some(true)]);

    // Fresh alive verdict, then the upload itself fails: retried on `b`
    // within the same call.
    let f = Fixture::new(2);
    let warm = f.store();
    put(&warm, "k0").await.expect("warm up");
    f.set(0, Fault::FailWrites(ErrorKind::Timeout));
    let before = f.calls();
    let store = f.store();
    put(&store, "k1").await.expect("failover");
    assert_eq!(f.since(&before), [1, 1]);
    assert_eq!(f.keys(0), ["k0"]);
    assert_eq!(f.keys(1), ["k1"]);
    assert_eq!(alive(&store).await, [Some(false), Some(true)]);

    // Without checks the upload to the primary is the only request to it.
    let f = Fixture::new(2);
    f.set(0, Fault::FailWrites(ErrorKind::PermissionDenied));
    let store = f.store_with(FailoverConfig {
        check: false,
        ..f.config()
    });
    put(&store, "k1").await.expect("failover");
    assert_eq!(f.calls(), [1, 1]);
    assert_eq!(f.keys(1), ["k1"]);
}

#[tokio::test]
async fn a_dead_primary_is_skipped_at_once_while_its_verdict_is_fresh() {
    let f = Fixture::new(2);
    f.set(0, Fault::Fail(ErrorKind::Unavailable));
    put(&f.store(), "k1").await.expect("failover");
    for n in 2..5 {
        f.clock.advance(Duration::from_secs(60));
        let before = f.calls();
        put(&f.store(), &format!("k{n}")).await.expect("failover");
        assert_eq!(
            f.since(&before),
            [0, 1],
            "call {n}: no request to the dead primary"
        );
    }
    assert_eq!(f.keys(1), ["k1", "k2", "k3", "k4"]);
}

#[tokio::test]
async fn a_recovered_primary_is_preferred_again_once_probed_alive() {
    let f = Fixture::new(2);
    f.set(0, Fault::Fail(ErrorKind::Unavailable));
    put(&f.store(), "k1").await.expect("failover");
    f.set(0, Fault::None);

    // Still within the lifetime of the dead verdict: skipped.
    f.clock.advance(LIFE - Duration::from_secs(1));
    let before = f.calls();
    put(&f.store(), "k2").await.expect("failover");
    assert_eq!(f.since(&before), [0, 1]);

    // Expired: probed (list, put, delete), then used.
    f.clock.advance(Duration::from_secs(1));
    let before = f.calls();
    let store = f.store();
    put(&store, "k3").await.expect("primary");
    assert_eq!(f.since(&before), [4, 0]);
    assert_eq!(f.keys(0), ["k3"]);
    assert_eq!(alive(&store).await[0], Some(true));

    // And the next process goes straight to it.
    let before = f.calls();
    put(&f.store(), "k4").await.expect("primary");
    assert_eq!(f.since(&before), [1, 0]);
}

#[tokio::test]
async fn a_fresh_cache_makes_no_probe_and_a_cold_one_at_most_one_per_storage() {
    let f = Fixture::new(3);
    let store = f.store();
    put(&store, "k1").await.expect("cold");
    assert_eq!(
        f.calls(),
        [4, 0, 0],
        "one probe (list, put, delete) plus the upload"
    );
    assert!(
        store.cache().warnings().is_empty(),
        "{:?}",
        store.cache().warnings()
    );
    assert!(
        f.path.exists(),
        "the first run that learned something created the file"
    );

    for n in 2..10 {
        let before = f.calls();
        put(&f.store(), &format!("k{n}")).await.expect("fresh");
        assert_eq!(f.since(&before), [1, 0, 0], "fresh cache: the upload only");
    }

    // Cold cache, primary down: one failed probe request, one probe of `b`.
    let f = Fixture::new(3);
    f.set(0, Fault::Fail(ErrorKind::Unavailable));
    put(&f.store(), "k1").await.expect("failover");
    assert_eq!(f.calls(), [1, 4, 0]);

    // Everything down: each member asked once, and the error names each.
    let f = Fixture::new(3);
    for i in 0..3 {
        f.set(i, Fault::Fail(ErrorKind::Unavailable));
    }
    let err = put(&f.store(), "k1").await.expect_err("all down");
    assert_eq!(f.calls(), [1, 1, 1]);
    assert_eq!(err.kind, ErrorKind::Unavailable);
    for name in NAMES {
        assert!(
            err.message.contains(&format!("{name}: unavailable")),
            "{err}"
        );
    }
}

#[tokio::test]
async fn when_every_storage_is_known_dead_the_dead_ones_are_tried_anyway() {
    let f = Fixture::new(2);
    f.set(0, Fault::Fail(ErrorKind::Unavailable));
    f.set(1, Fault::Fail(ErrorKind::Unavailable));
    put(&f.store(), "k1").await.expect_err("all down");
    f.set(0, Fault::None);
    let before = f.calls();
    let store = f.store();
    put(&store, "k2").await.expect("the primary recovered");
    assert_eq!(f.since(&before), [1, 0]);
    assert_eq!(alive(&store).await, [Some(true), Some(false)]);
}

#[tokio::test]
async fn a_conflict_is_an_answer_and_is_not_failed_over() {
    let f = Fixture::new(2);
    let store = f.store();
    put(&store, "k1").await.expect("first");
    let before = f.calls();
    let err = store
        .put(
            "k1",
            &Bytes::from_static(b"other"),
            PutOptions {
                if_not_exists: true,
            },
        )
        .await
        .expect_err("exists");
    assert_eq!(err.kind, ErrorKind::Conflict);
    assert_eq!(f.since(&before), [1, 0]);
    assert!(f.keys(1).is_empty());
    assert_eq!(alive(&store).await[0], Some(true));
}

#[tokio::test]
async fn write_policy_all_stores_on_every_alive_storage() {
    let all = |f: &Fixture| {
        f.store_with(FailoverConfig {
            write_policy: WritePolicy::All,
            ..f.config()
        })
    };

    let f = Fixture::new(2);
    put(&all(&f), "k1").await.expect("both");
    assert_eq!(f.keys(0), ["k1"]);
    assert_eq!(f.keys(1), ["k1"]);

    // A member that fails its probe is dead, not one of the alive ones.
    let f = Fixture::new(2);
    f.set(1, Fault::FailWrites(ErrorKind::Unavailable));
    put(&all(&f), "k1").await.expect("the alive one");
    assert_eq!(f.keys(0), ["k1"]);
    assert!(f.keys(1).is_empty());

    // A member believed alive that fails the upload fails the call.
    let f = Fixture::new(2);
    put(&all(&f), "k0").await.expect("warm up");
    f.set(1, Fault::FailWrites(ErrorKind::Unavailable));
    let err = put(&all(&f), "k1").await.expect_err("b failed");
    assert!(err.message.contains("b: unavailable"), "{err}");
    assert_eq!(f.keys(0), ["k0", "k1"]);

    // A conflict on one member is returned after writing the others, so the
    // caller can compare the existing copy.
    let f = Fixture::new(2);
    f.mem[0]
        .put("k1", &Bytes::from_static(b"old"), PutOptions::default())
        .await
        .expect("seed");
    let err = all(&f)
        .put(
            "k1",
            &Bytes::from_static(b"new"),
            PutOptions {
                if_not_exists: true,
            },
        )
        .await
        .expect_err("conflict");
    assert_eq!(err.kind, ErrorKind::Conflict);
    assert_eq!(f.mem[1].object("k1").as_deref(), Some(&b"new"[..]));
}

#[derive(Debug, Clone, Copy)]
enum Has {
    Object,
    Nothing,
    Failing,
}

#[derive(Debug, PartialEq)]
enum Read {
    Found(&'static str),
    NotFound,
    Failed(ErrorKind),
}

#[tokio::test]
async fn reads_say_not_found_only_when_every_storage_said_so() {
    async fn check(members: [Has; 2], expected: Read, expected_calls: [u64; 2]) {
        let f = Fixture::new(2);
        for (i, has) in members.iter().enumerate() {
            match has {
                Has::Object => {
                    let body = Bytes::from(NAMES[i]);
                    f.mem[i]
                        .put("k", &body, PutOptions::default())
                        .await
                        .expect("seed");
                }
                Has::Nothing => {}
                Has::Failing => f.set(i, Fault::Fail(ErrorKind::Unavailable)),
            }
        }
        let store = f.store();
        let got = match store.get("k").await {
            Ok(stream) => {
                let body = read_all(stream).await.expect("read");
                Read::Found(
                    NAMES[NAMES
                        .iter()
                        .position(|n| n.as_bytes() == body)
                        .expect("known body")],
                )
            }
            Err(e) if e.kind == ErrorKind::NotFound => Read::NotFound,
            Err(e) => Read::Failed(e.kind),
        };
        assert_eq!(got, expected, "get with {members:?}");
        assert_eq!(f.calls(), expected_calls, "get with {members:?}");

        let stat = match store.stat("k").await {
            Ok(_) => None,
            Err(e) => Some(e.kind),
        };
        let expected_stat = match expected {
            Read::Found(_) => None,
            Read::NotFound => Some(ErrorKind::NotFound),
            Read::Failed(k) => Some(k),
        };
        assert_eq!(stat, expected_stat, "stat with {members:?}");
    }
    use Has::*;
    check([Nothing, Nothing], Read::NotFound, [1, 1]).await;
    check([Object, Nothing], Read::Found("default"), [1, 0]).await;
    check([Object, Object], Read::Found("default"), [1, 0]).await;
    check([Nothing, Object], Read::Found("b"), [1, 1]).await;
    check([Failing, Object], Read::Found("b"), [1, 1]).await;
    check([Object, Failing], Read::Found("default"), [1, 0]).await;
    check(
        [Failing, Nothing],
        Read::Failed(ErrorKind::Unavailable),
        [1, 1],
    )
    .await;
    check(
        [Nothing, Failing],
        Read::Failed(ErrorKind::Unavailable),
        [1, 1],
    )
    .await;
    check(
        [Failing, Failing],
        Read::Failed(ErrorKind::Unavailable),
        [1, 1],
    )
    .await;
}

#[tokio::test]
async fn reads_ask_dead_storages_last() {
    let f = Fixture::new(2);
    f.set(0, Fault::Fail(ErrorKind::Unavailable));
    put(&f.store(), "k0")
        .await
        .expect("failover marks the primary dead");
    f.set(0, Fault::None);
    for (m, name) in f.mem.iter().zip(NAMES) {
        m.put("k", &Bytes::from(name), PutOptions::default())
            .await
            .expect("seed");
    }
    f.mem[0]
        .put(
            "only-on-primary",
            &Bytes::from_static(b"p"),
            PutOptions::default(),
        )
        .await
        .expect("seed");

    let before = f.calls();
    let store = f.store();
    let body = read_all(store.get("k").await.expect("found"))
        .await
        .expect("read");
    assert_eq!(body, b"b");
    assert_eq!(f.since(&before), [0, 1]);

    // Not on the alive member: the dead one is still asked, and a read that
    // works does not overturn its "dead" verdict (only writes prove that).
    let body = read_all(store.get("only-on-primary").await.expect("found"))
        .await
        .expect("read");
    assert_eq!(body, b"p");
    assert_eq!(alive(&store).await, [Some(false), Some(true)]);
}

#[tokio::test]
async fn list_is_the_sorted_union_of_the_members() {
    let f = Fixture::new(2);
    for (i, keys) in [["a/1", "a/2"], ["a/2", "a/0"]].iter().enumerate() {
        for k in keys {
            f.mem[i]
                .put(k, &Bytes::from(NAMES[i]), PutOptions::default())
                .await
                .expect("seed");
        }
    }
    f.mem[1]
        .put("other/x", &Bytes::from_static(b"x"), PutOptions::default())
        .await
        .expect("seed");
    let store = f.store();
    let listed = store.list("a/").await.expect("list");
    let keys: Vec<&str> = listed.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(keys, ["a/0", "a/1", "a/2"]);
    // The first member in priority order wins a duplicate.
    assert_eq!(listed[2].size, "default".len() as u64);

    f.set(0, Fault::Fail(ErrorKind::Unavailable));
    let keys: Vec<String> = store
        .list("a/")
        .await
        .expect("partial")
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(keys, ["a/0", "a/2"]);
    f.set(1, Fault::Fail(ErrorKind::Unavailable));
    let err = store.list("a/").await.expect_err("all failed");
    assert_eq!(err.kind, ErrorKind::Unavailable);
}

#[tokio::test]
async fn delete_goes_to_the_first_alive_storage() {
    let f = Fixture::new(2);
    for m in &f.mem {
        m.put("k", &Bytes::from_static(b"x"), PutOptions::default())
            .await
            .expect("seed");
    }
    f.set(0, Fault::FailWrites(ErrorKind::Unavailable));
    f.store_with(FailoverConfig {
        check: false,
        ..f.config()
    })
    .delete("k")
    .await
    .expect("delete");
    assert_eq!(f.keys(0), ["k"]);
    assert!(f.keys(1).is_empty());
}

#[tokio::test]
async fn a_target_uses_only_that_storage() {
    let f = Fixture::new(3);
    let store = f.store_with(FailoverConfig {
        target: Some("b".into()),
        ..f.config()
    });
    assert_eq!(store.name(), "b");
    put(&store, "k").await.expect("put");
    assert_eq!(
        f.calls(),
        [0, 1, 0],
        "no probe: the target is the only choice"
    );
    read_all(store.get("k").await.expect("get"))
        .await
        .expect("read");
    assert_eq!(f.calls(), [0, 2, 0]);

    f.set(1, Fault::Fail(ErrorKind::Unavailable));
    put(&store, "k2")
        .await
        .expect_err("no failover away from the target");
    assert_eq!(f.calls(), [0, 3, 0]);
}

#[tokio::test]
async fn invalid_configurations_are_refused() {
    let m = |n: &str| {
        Member::new(
            n,
            Arc::new(MemoryStore::new(format!("mem://{n}"))) as DynStore,
        )
    };
    let cfg = FailoverConfig::default;
    assert!(matches!(
        FailoverStore::new(vec![], cfg()),
        Err(FailoverError::NoMembers)
    ));
    assert!(matches!(
        FailoverStore::new(vec![m("default"), m("default")], cfg()),
        Err(FailoverError::DuplicateName(n)) if n == "default"
    ));
    assert!(matches!(
        FailoverStore::new(vec![m("")], cfg()),
        Err(FailoverError::EmptyName)
    ));
    let err = FailoverStore::new(
        vec![m("default"), m("b")],
        FailoverConfig {
            target: Some("nope".into()),
            ..cfg()
        },
    )
    .expect_err("unknown target");
    assert_eq!(
        err.to_string(),
        "target storage \"nope\" is not configured; the configured storages are: default, b"
    );
}

#[tokio::test]
async fn check_probes_every_member_and_status_reports_it() {
    let f = Fixture::new(2);
    f.set(1, Fault::FailWrites(ErrorKind::PermissionDenied));
    let store = f.store();
    assert_eq!(
        store
            .status()
            .await
            .iter()
            .map(|s| s.alive)
            .collect::<Vec<_>>(),
        [None, None]
    );

    let read_only = store.check(false).await;
    assert!(read_only.iter().all(|(_, r)| r.is_ok()), "{read_only:?}");
    assert_eq!(f.calls(), [1, 1]);

    let results = store.check(true).await;
    let names: Vec<&str> = results.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["default", "b"]);
    assert!(results[0].1.is_ok());
    assert_eq!(
        results[1].1.as_ref().map_err(|e| e.kind).expect_err("b"),
        ErrorKind::PermissionDenied
    );
    assert!(f.keys(0).is_empty(), "the probe object is deleted");

    let status = store.status().await;
    assert_eq!(status[0].alive, Some(true));
    assert_eq!(status[1].alive, Some(false));
    assert!(status.iter().all(|s| s.fresh && s.last_checked.is_some()));
    assert!(
        status[1]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("injected")),
        "{status:?}"
    );
    assert_eq!(status[1].fingerprint, "mem://b");
    assert_eq!(store.cache_path().as_deref(), Some(f.path.as_path()));
    assert!(store.member("b").is_some());
    assert!(store.member("nope").is_none());

    // Persisted: another process sees the verdicts.
    f.clock.advance(LIFE);
    let later = f.store().status().await;
    assert_eq!(later[1].alive, Some(false));
    assert!(!later[1].fresh);
}

/// A store whose calls never finish, to exercise the probe timeout.
#[derive(Debug)]
struct Hang;

#[async_trait]
impl Store for Hang {
    fn name(&self) -> &str {
        "hang://"
    }
    async fn put(&self, _: &str, _: &dyn Body, _: PutOptions) -> Result<(), StoreError> {
        futures::future::pending().await
    }
    async fn get(&self, _: &str) -> Result<ByteStream, StoreError> {
        futures::future::pending().await
    }
    async fn stat(&self, _: &str) -> Result<ObjectMeta, StoreError> {
        futures::future::pending().await
    }
    async fn list(&self, _: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        futures::future::pending().await
    }
    async fn delete(&self, _: &str) -> Result<(), StoreError> {
        futures::future::pending().await
    }
}

#[tokio::test]
async fn a_hanging_storage_is_abandoned_after_the_check_timeout() {
    let backup = MemoryStore::new("mem://b");
    let members = vec![
        Member::new("default", Arc::new(Hang) as DynStore),
        Member::new("b", Arc::new(backup.clone()) as DynStore),
    ];
    let config = FailoverConfig {
        check_timeout: Duration::from_millis(50),
        ..FailoverConfig::default()
    };
    let store = FailoverStore::new(members, config).expect("valid");
    put(&store, "k")
        .await
        .expect("failover after the probe timed out");
    assert_eq!(backup.keys(), ["k"]);
    let status = store.status().await;
    assert_eq!(status[0].alive, Some(false));
    assert!(
        status[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.starts_with("timed out")),
        "{status:?}"
    );
}

#[tokio::test]
async fn an_unusable_cache_location_never_fails_the_archive() {
    let f = Fixture::new(2);
    let blocker = f._dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"x").expect("write");
    let store = f.store_with(FailoverConfig {
        cache_path: Some(blocker.join("storage_status.json")),
        ..f.config()
    });
    f.set(0, Fault::Fail(ErrorKind::Unavailable));
    put(&store, "k1").await.expect("archived");
    put(&store, "k2").await.expect("archived");
    assert_eq!(
        store.cache().warnings().len(),
        1,
        "{:?}",
        store.cache().warnings()
    );
    assert!(!store.cache().is_persistent());
    // The in-memory verdict still spares the dead primary.
    assert_eq!(f.calls()[0], 1);
}

/// Collects formatted log lines of the current thread.
#[derive(Clone, Default)]
struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn lines(&self, level: &str) -> Vec<String> {
        let raw = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        String::from_utf8_lossy(&raw)
            .lines()
            .filter(|l| l.contains(level))
            .map(String::from)
            .collect()
    }
}

#[tokio::test]
async fn status_transitions_are_logged_once_and_a_normal_run_is_quiet() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .finish();
    // The test runtime is single-threaded, so a thread-local subscriber
    // sees every event the store emits outside blocking tasks.
    let _guard = tracing::subscriber::set_default(subscriber);

    let f = Fixture::new(2);
    for n in 0..3 {
        put(&f.store(), &format!("ok{n}")).await.expect("healthy");
    }
    assert!(logs.lines("WARN").is_empty(), "{:?}", logs.lines("WARN"));

    f.set(0, Fault::Fail(ErrorKind::Unavailable));
    for n in 0..3 {
        f.clock.advance(LIFE);
        put(&f.store(), &format!("down{n}"))
            .await
            .expect("failover");
    }
    let warns = logs.lines("WARN");
    assert_eq!(warns.len(), 1, "{warns:?}");
    assert!(
        warns[0].contains("storage \"default\" is down"),
        "{warns:?}"
    );

    f.set(0, Fault::None);
    for n in 0..3 {
        f.clock.advance(LIFE);
        put(&f.store(), &format!("up{n}")).await.expect("primary");
    }
    let infos = logs.lines("INFO");
    assert_eq!(infos.len(), 1, "{infos:?}");
    assert!(
        infos[0].contains("storage \"default\" is back up"),
        "{infos:?}"
    );
    assert_eq!(logs.lines("WARN").len(), 1);
}

#[tokio::test]
async fn put_located_names_the_member_that_took_the_write() {
    use std::sync::Arc;
    use walg_core::store::memory::{Fault, FaultStore, MemoryStore};
    use walg_core::store::DynStore;
    use walg_failover::{FailoverConfig, FailoverStore, Member};
    let primary = FaultStore::new(Arc::new(MemoryStore::new("mem://primary")));
    let backup = MemoryStore::new("mem://backup");
    let store = FailoverStore::new(
        vec![
            Member::new("default", Arc::new(primary.clone()) as DynStore),
            Member::new("backup", Arc::new(backup.clone()) as DynStore),
        ],
        FailoverConfig {
            check: false,
            ..FailoverConfig::default()
        },
    )
    .expect("valid config");
    let body = bytes::Bytes::from_static(b"wal");
    let opts = walg_core::PutOptions {
        if_not_exists: true,
    };
    assert_eq!(
        store.put_located("k1", &body, opts).await.expect("put"),
        "default"
    );
    primary.set_fault(Fault::Fail(walg_core::ErrorKind::Unavailable));
    assert_eq!(
        store
            .put_located("k2", &body, opts)
            .await
            .expect("failover put"),
        "backup"
    );
    assert!(backup.object("k2").is_some());
}

/// A member that could not be opened is dead for the call: writes go to the
/// next member, reads are served by the others, "not found" anywhere else is
/// a failure (the unopened member may hold it), never `NotFound`, and the
/// status cache records it dead.
#[tokio::test]
async fn an_unopened_member_is_dead_for_the_call() {
    let f = Fixture::new(2);
    let members = vec![
        Member::unopened(
            "default",
            "file:///gone",
            "cannot create directory /gone: Not a directory",
        ),
        Member::new("b", Arc::new(f.fault[1].clone()) as DynStore),
    ];
    let store = FailoverStore::with_clock(members, f.config(), f.clock.clone()).expect("config");
    store
        .put(
            "k",
            &Bytes::from_static(b"v"),
            PutOptions {
                if_not_exists: true,
            },
        )
        .await
        .expect("the next member takes the write");
    assert_eq!(f.mem[1].object("k").as_deref(), Some(&b"v"[..]));
    let got = read_all(store.get("k").await.expect("read from the next member"))
        .await
        .expect("read");
    assert_eq!(got, b"v");
    let err = store.get("absent").await.err().expect("missing");
    assert_ne!(err.kind, ErrorKind::NotFound, "{err}");
    assert!(err.message.contains("could not be opened"), "{err}");
    let status = store.status().await;
    assert_eq!(status[0].alive, Some(false), "{status:?}");
    assert!(
        status[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("Not a directory")),
        "{status:?}"
    );
}
