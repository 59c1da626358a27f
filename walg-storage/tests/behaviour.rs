//! One behaviour suite for the `Store` trait, run against every backend the
//! registry opens: `file` and `mem` always, `s3`, `gs` and `azure` against
//! emulators whose endpoints are given in the environment:
//!
//! - `WALG_TEST_S3_ENDPOINT` (+ optional `WALG_TEST_S3_BUCKET`, default `walg-test`)
//! - `WALG_TEST_GS_ENDPOINT` (+ optional `WALG_TEST_GS_BUCKET`)
//! - `WALG_TEST_AZ_ENDPOINT` (+ optional `WALG_TEST_AZ_CONTAINER`,
//!   `WALG_TEST_AZ_ACCOUNT`, `WALG_TEST_AZ_KEY`; Azurite's dev account by default)
//!
//! `cargo xtask` starts the emulators and sets these. Under `CI=true` a
//! missing endpoint fails the test; elsewhere it prints a "skipped" line.
//! Each run writes under a fresh prefix in the bucket, so runs do not see
//! each other's objects.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use walg_core::store::error::{Cause, ErrorKind, StoreError};
use walg_core::store::{read_all, Body, ByteStream, DynStore, PutOptions};
use walg_storage::{Registry, StorageSpec};

const MIB: usize = 1024 * 1024;
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// A deterministic body of `len` bytes made lazily in 1 MiB chunks; each
/// chunk is stamped with its index and the seed so a reordered, repeated or
/// foreign chunk shows.
struct Pattern {
    len: usize,
    seed: u64,
}

impl Pattern {
    fn chunk(seed: u64, index: usize, len: usize) -> Bytes {
        let mut x = seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut v = Vec::with_capacity(len);
        while v.len() < len {
            // xorshift64: cheap, and incompressible enough for a storage test.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.extend_from_slice(&x.to_le_bytes());
        }
        v.truncate(len);
        Bytes::from(v)
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len);
        for i in 0..self.len.div_ceil(MIB) {
            out.extend_from_slice(&Pattern::chunk(self.seed, i, MIB.min(self.len - i * MIB)));
        }
        out
    }
}

impl Body for Pattern {
    fn open(&self) -> ByteStream {
        let (len, seed) = (self.len, self.seed);
        Box::pin(
            futures::stream::iter(0..len.div_ceil(MIB))
                .map(move |i| Ok(Pattern::chunk(seed, i, MIB.min(len - i * MIB)))),
        )
    }
    fn len_hint(&self) -> Option<u64> {
        Some(self.len as u64)
    }
}

fn unique_prefix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("behaviour-{}-{nanos}", std::process::id())
}

/// The endpoint in `var`, or `None` (skip) outside CI; panics under CI.
fn endpoint(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{var} is not set under CI=true: start the emulators (cargo xtask) and export their endpoints")
        }
        _ => {
            eprintln!("skipped: set {var} to run this test against its emulator (cargo xtask starts them)");
            None
        }
    }
}

fn env_or(var: &str, default: &str) -> String {
    std::env::var(var)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

fn open(spec: &StorageSpec) -> DynStore {
    Registry::with_builtin()
        .open(spec)
        .unwrap_or_else(|e| panic!("open {spec:?}: {e}"))
}

fn s3_spec(endpoint: &str, bucket: &str, path: &str) -> StorageSpec {
    let mut spec = StorageSpec::new("s3-test", "s3", format!("{bucket}/{path}"));
    spec.settings = [
        ("AWS_ENDPOINT", endpoint),
        ("AWS_REGION", "us-east-1"),
        ("AWS_S3_FORCE_PATH_STYLE", "true"),
        ("AWS_ACCESS_KEY_ID", "walg-test"),
        ("AWS_SECRET_ACCESS_KEY", "walg-test-secret"),
    ]
    .into_iter()
    .collect();
    spec
}

fn gs_spec(endpoint: &str, bucket: &str, path: &str) -> StorageSpec {
    let mut spec = StorageSpec::new("gs-test", "gs", format!("{bucket}/{path}"));
    spec.settings = [("WALG_GS_ENDPOINT", endpoint)].into_iter().collect();
    spec
}

fn az_spec(endpoint: &str, container: &str, path: &str, key: &str) -> StorageSpec {
    let mut spec = StorageSpec::new("az-test", "azure", format!("{container}/{path}"));
    spec.settings = [
        ("WALG_AZ_ENDPOINT", endpoint.to_string()),
        (
            "AZURE_STORAGE_ACCOUNT",
            env_or("WALG_TEST_AZ_ACCOUNT", "devstoreaccount1"),
        ),
        ("AZURE_STORAGE_ACCESS_KEY", key.to_string()),
    ]
    .into_iter()
    .collect();
    spec
}

// ---- the cases -------------------------------------------------------------

async fn round_trip_segment(store: &DynStore) {
    let body = Pattern {
        len: 16 * MIB,
        seed: 1,
    };
    let key = "wal_005/000000010000000000000003.lz4";
    // Create-if-absent, as every wal-push writes a segment (on GCS this is
    // the resumable protocol; see `gs_backend`).
    store
        .put(
            key,
            &body,
            PutOptions {
                if_not_exists: true,
            },
        )
        .await
        .expect("put a 16 MiB segment");
    let got = read_all(store.get(key).await.expect("get the segment"))
        .await
        .expect("read the segment");
    assert!(
        got == body.bytes(),
        "{}: segment came back different ({} bytes)",
        store.name(),
        got.len()
    );
    let meta = store.stat(key).await.expect("stat the segment");
    assert_eq!((meta.key.as_str(), meta.size), (key, 16 * MIB as u64));
}

async fn list_with_prefix(store: &DynStore) {
    let keys = [
        "list/wal_005/000000010000000000000001",
        "list/wal_005/000000010000000000000002",
        "list/wal_005/000000020000000000000001",
        "list/other/x",
    ];
    // Written out of order: the listing must sort.
    for (i, key) in keys.iter().enumerate().rev() {
        store
            .put(key, &Bytes::from(vec![b'x'; i + 1]), PutOptions::default())
            .await
            .expect("put");
    }
    let listed = store
        .list("list/wal_005/00000001")
        .await
        .expect("list a key prefix");
    let names: Vec<_> = listed.iter().map(|m| m.key.as_str()).collect();
    assert_eq!(names, &keys[..2], "{}", store.name());
    assert_eq!(listed[1].size, 2);
    let all = store.list("list/").await.expect("list a directory prefix");
    let names: Vec<_> = all.iter().map(|m| m.key.as_str()).collect();
    let mut expected = keys.to_vec();
    expected.sort();
    assert_eq!(names, expected, "{}: files only, sorted", store.name());
    assert!(store
        .list("list/none/")
        .await
        .expect("list an empty prefix")
        .is_empty());
    // The paged listing gives the same objects (in any order).
    let mut paged = Vec::new();
    let mut pages = store.list_pages("list/");
    while let Some(page) = pages.next().await {
        paged.extend(page.expect("list a page"));
    }
    paged.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(paged, all, "{}: list_pages = list", store.name());
    let mut pages = store.list_pages("list/none/");
    while let Some(page) = pages.next().await {
        assert!(page.expect("list an empty prefix").is_empty());
    }
}

async fn delete_and_not_found(store: &DynStore) {
    let key = "del/object";
    store
        .put(key, &Bytes::from_static(b"bye"), PutOptions::default())
        .await
        .expect("put");
    store.delete(key).await.expect("delete");
    let err = store.stat(key).await.expect_err("stat after delete");
    assert_eq!(err.kind, ErrorKind::NotFound, "{err}");
    store
        .delete(key)
        .await
        .expect("deleting an absent object succeeds");
    store
        .delete("del/never-existed")
        .await
        .expect("deleting a never-written object succeeds");

    let err = store
        .get("missing/000000010000000000000001.lz4")
        .await
        .err()
        .expect("get of a missing object fails");
    assert_eq!(err.kind, ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains(store.name()), "{err}");
    let err = store
        .stat("missing/000000010000000000000001.lz4")
        .await
        .expect_err("stat of a missing object");
    assert_eq!(err.kind, ErrorKind::NotFound, "{err}");
}

async fn create_only_if_absent(store: &DynStore) {
    let key = "ine/00000002.history";
    let opts = PutOptions {
        if_not_exists: true,
    };
    store
        .put(key, &Bytes::from_static(b"first"), opts)
        .await
        .expect("first create");
    let err = store
        .put(key, &Bytes::from_static(b"second"), opts)
        .await
        .expect_err("second create");
    assert_eq!(err.kind, ErrorKind::Conflict, "{}: {err}", store.name());
    let got = read_all(store.get(key).await.expect("get"))
        .await
        .expect("read");
    assert_eq!(
        got,
        b"first",
        "{}: the first object must survive",
        store.name()
    );
    // An object bigger than one upload part (multipart on S3 and Azure)
    // must be refused as well.
    let big = Pattern {
        len: 17 * MIB,
        seed: 11,
    };
    store
        .put("ine/big", &big, opts)
        .await
        .expect("first create of a big object");
    let err = store
        .put(
            "ine/big",
            &Pattern {
                len: 17 * MIB,
                seed: 12,
            },
            opts,
        )
        .await
        .expect_err("second create of a big object");
    assert_eq!(err.kind, ErrorKind::Conflict, "{}: {err}", store.name());
    let got = read_all(store.get("ine/big").await.expect("get"))
        .await
        .expect("read");
    assert!(
        got == big.bytes(),
        "{}: the first big object must survive",
        store.name()
    );
    // A plain put still overwrites.
    store
        .put(key, &Bytes::from_static(b"third"), PutOptions::default())
        .await
        .expect("overwrite");
    assert_eq!(
        read_all(store.get(key).await.expect("get"))
            .await
            .expect("read"),
        b"third"
    );
}

async fn concurrent_writers(store: &DynStore) {
    let bodies: Vec<_> = (0..8)
        .map(|i| Pattern {
            len: MIB + i * 1000,
            seed: 100 + i as u64,
        })
        .collect();
    let puts = bodies.iter().enumerate().map(|(i, b)| async move {
        let key = format!("conc/{i:02}");
        store
            .put(&key, b, PutOptions::default())
            .await
            .map(|()| key)
    });
    let results = futures::future::join_all(puts).await;
    for (i, r) in results.into_iter().enumerate() {
        let key = r.unwrap_or_else(|e| panic!("concurrent put {i}: {e}"));
        let got = read_all(store.get(&key).await.expect("get"))
            .await
            .expect("read");
        assert!(got == bodies[i].bytes(), "{}: {key} mixed up", store.name());
    }
    assert_eq!(store.list("conc/").await.expect("list").len(), 8);
}

async fn large_object_streamed(store: &DynStore) {
    let body = Pattern {
        len: 40 * MIB + 123,
        seed: 7,
    };
    let key = "big/object";
    store
        .put(
            key,
            &body,
            PutOptions {
                if_not_exists: true,
            },
        )
        .await
        .expect("put 40 MiB");
    assert_eq!(store.stat(key).await.expect("stat").size, body.len as u64);
    // Compare chunk by chunk as the download streams.
    let expected = body.bytes();
    let mut stream = store.get(key).await.expect("get 40 MiB");
    let mut offset = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("read a chunk");
        assert!(
            chunk[..] == expected[offset..offset + chunk.len()],
            "{}: differs at {offset}",
            store.name()
        );
        offset += chunk.len();
    }
    assert_eq!(offset, expected.len());
}

async fn suite(store: DynStore) {
    let t = Instant::now();
    round_trip_segment(&store).await;
    list_with_prefix(&store).await;
    delete_and_not_found(&store).await;
    create_only_if_absent(&store).await;
    concurrent_writers(&store).await;
    large_object_streamed(&store).await;
    eprintln!(
        "{}: behaviour suite passed in {:?}",
        store.name(),
        t.elapsed()
    );
}

// ---- one test per backend ---------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_backend() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = StorageSpec::new(
        "file-test",
        "file",
        dir.path().join("archive").to_string_lossy(),
    );
    suite(open(&spec)).await;
    // Listing on the file system must not show directories or temp files.
    assert!(dir.path().join("archive/wal_005").is_dir());
    // A listing larger than a page comes in several pages, none too large.
    let many = dir.path().join("archive/many");
    std::fs::create_dir_all(&many).expect("mkdir");
    for i in 0..2500 {
        std::fs::File::create(many.join(format!("{i:05}"))).expect("create");
    }
    let store = open(&spec);
    let mut pages = store.list_pages("many/");
    let (mut count, mut n) = (0, 0);
    while let Some(page) = pages.next().await {
        let page = page.expect("page");
        assert!(page.len() <= walg_core::store::LIST_PAGE);
        count += 1;
        n += page.len();
    }
    assert_eq!((n, count > 2), (2500, true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mem_backend() {
    let store = open(&StorageSpec::new("mem-test", "mem", ""));
    assert!(store.atomic_if_not_exists());
    suite(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_backend() {
    let Some(ep) = endpoint("WALG_TEST_S3_ENDPOINT") else {
        return;
    };
    let bucket = env_or("WALG_TEST_S3_BUCKET", "walg-test");
    suite(open(&s3_spec(&ep, &bucket, &unique_prefix()))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gs_backend() {
    let Some(ep) = endpoint("WALG_TEST_GS_ENDPOINT") else {
        return;
    };
    let bucket = env_or("WALG_TEST_GS_BUCKET", "walg-test");
    let store = open(&gs_spec(&ep, &bucket, &unique_prefix()));
    // fake-gcs-server ignores create-only-if-absent; the store must say so.
    // It also refuses XML multipart uploads ("invalid uploadType"), which
    // opendal uses for plain writes above one 8 MiB chunk on real GCS; the
    // big objects of the suite are written create-if-absent, the resumable
    // protocol every wal-push uses, which it takes.
    assert!(!store.atomic_if_not_exists());
    suite(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn azure_backend() {
    let Some(ep) = endpoint("WALG_TEST_AZ_ENDPOINT") else {
        return;
    };
    let container = env_or("WALG_TEST_AZ_CONTAINER", "walg-test");
    let key = env_or("WALG_TEST_AZ_KEY", AZURITE_KEY);
    let store = open(&az_spec(&ep, &container, &unique_prefix(), &key));
    assert!(store.atomic_if_not_exists());
    suite(store).await;
}

// ---- failures ----------------------------------------------------------------

/// A storage that accepts TCP connections and never answers must fail a put
/// within about timeout * (retries + 1) plus backoff, naming the storage and
/// the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_endpoint_times_out() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    let mut spec = s3_spec(&format!("http://{addr}"), "hang-bucket", "p");
    spec.timeout = Duration::from_secs(2);
    spec.retries = 1;
    let store = open(&spec);
    let start = Instant::now();
    let err = store
        .put(
            "wal_005/000000010000000000000001.lz4",
            &Pattern { len: MIB, seed: 3 },
            PutOptions::default(),
        )
        .await
        .expect_err("a silent storage must fail the put");
    let elapsed = start.elapsed();
    assert!(elapsed < Duration::from_secs(15), "took {elapsed:?}");
    assert!(
        matches!(err.kind, ErrorKind::Timeout | ErrorKind::Unavailable),
        "{err}"
    );
    check_line(
        &err,
        Cause::Timeout,
        &[
            "storage \"s3-test\" (s3://hang-bucket/p): timed out after 2s",
            "2 attempts",
            "WALG_STORAGE_TIMEOUT",
        ],
    );
    // The same bound holds for the other calls.
    let err = store.stat("x").await.expect_err("stat on a silent storage");
    assert_eq!(err.kind, ErrorKind::Timeout, "{err}");
    check_line(&err, Cause::Timeout, &["no answer", "WALG_STORAGE_TIMEOUT"]);
}

/// A missing bucket is a configuration error, never "object not found"
/// (which failover would take as a healthy answer), and every call says so
/// first: `the bucket "walg-no-such-bucket" does not exist at http://...;
/// create it or fix WALG_S3_PREFIX`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_bucket_is_a_config_error() {
    let mut stores = Vec::new();
    if let Some(ep) = endpoint("WALG_TEST_S3_ENDPOINT") {
        let words = [
            "the bucket \"walg-no-such-bucket\" does not exist at http://",
            "create it or fix WALG_S3_PREFIX",
        ];
        stores.push((open(&s3_spec(&ep, "walg-no-such-bucket", "p")), words));
    }
    if let Some(ep) = endpoint("WALG_TEST_GS_ENDPOINT") {
        let words = [
            "the bucket \"walg-no-such-bucket\" does not exist at http://",
            "create it or fix WALG_GS_PREFIX",
        ];
        stores.push((open(&gs_spec(&ep, "walg-no-such-bucket", "p")), words));
    }
    if let Some(ep) = endpoint("WALG_TEST_AZ_ENDPOINT") {
        let words = [
            "the container \"walg-no-such-container\" does not exist at http://",
            "create it or fix WALG_AZ_PREFIX",
        ];
        stores.push((
            open(&az_spec(
                &ep,
                "walg-no-such-container",
                "p",
                &env_or("WALG_TEST_AZ_KEY", AZURITE_KEY),
            )),
            words,
        ));
    }
    for (store, words) in stores {
        let err = store
            .put("k", &Bytes::from_static(b"v"), PutOptions::default())
            .await
            .expect_err("put");
        assert_eq!(err.kind, ErrorKind::Config, "{}: put: {err}", store.name());
        check_line(&err, Cause::BucketMissing, &words);
        let err = store.get("k").await.err().expect("get");
        assert_eq!(err.kind, ErrorKind::Config, "{}: get: {err}", store.name());
        check_line(&err, Cause::BucketMissing, &words);
        let err = store.stat("k").await.expect_err("stat");
        assert_eq!(err.kind, ErrorKind::Config, "{}: stat: {err}", store.name());
        check_line(&err, Cause::BucketMissing, &words);
        let err = store.list("").await.expect_err("list");
        assert_eq!(err.kind, ErrorKind::Config, "{}: list: {err}", store.name());
        check_line(&err, Cause::BucketMissing, &words);
    }
}

/// Azurite checks the shared key; a wrong one is refused, and the key never
/// appears in the message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_azure_key_is_permission_denied() {
    let Some(ep) = endpoint("WALG_TEST_AZ_ENDPOINT") else {
        return;
    };
    let container = env_or("WALG_TEST_AZ_CONTAINER", "walg-test");
    // A well-formed key (base64 of 64 bytes) that is not the account's.
    let wrong = "d3JvbmctLWtleS0td3Jvbmcta2V5LS13cm9uZy0ta2V5LS13cm9uZy0ta2V5LS13cm9uZy0ta2V5LS0xMjM0NTY3OA==";
    let store = open(&az_spec(&ep, &container, "wrong-key", wrong));
    let err = store
        .put("k", &Bytes::from_static(b"v"), PutOptions::default())
        .await
        .expect_err("put with a wrong key");
    assert_eq!(err.kind, ErrorKind::PermissionDenied, "{err}");
    check_line(
        &err,
        Cause::CredentialsRejected,
        &[
            "the storage rejected the account key of \"devstoreaccount1\" (403 AuthorizationFailure)",
            "fix AZURE_STORAGE_ACCESS_KEY",
        ],
    );
    let text = format!("{err} {err:?} {store:?}");
    assert!(!text.contains(wrong), "the key leaked: {text}");
}

// ---- failures as a DBA reads them ---------------------------------------------

/// The longest a storage error's line may be: the CLI adds its command
/// and the file (`ERROR wal-push 000000010000000000000042: `, 41
/// characters), and the whole line must stay under 250.
const BOUND: usize = 205;

/// The error's one line (what the CLI logs) names the cause and `words`,
/// is short, and holds none of opendal's context.
fn check_line(err: &StoreError, cause: Cause, words: &[&str]) {
    let line = err.to_string();
    assert_eq!(err.cause(), Some(cause), "{line}");
    for w in words {
        assert!(line.contains(w), "{w:?} is not in {line:?}");
    }
    assert!(line.len() < BOUND, "{} characters: {line}", line.len());
    assert!(
        !line.contains("context: {") && !line.contains('\n'),
        "{line}"
    );
}

/// Each backend with its endpoint replaced by `endpoint`, and the setting
/// that names it.
fn every_backend_at(endpoint: &str) -> Vec<(DynStore, &'static str)> {
    let mut s3 = s3_spec(endpoint, "walg-test", "p");
    let mut gs = gs_spec(endpoint, "walg-test", "p");
    let mut az = az_spec(
        &format!("{endpoint}/devstoreaccount1"),
        "walg-test",
        "p",
        AZURITE_KEY,
    );
    for spec in [&mut s3, &mut gs, &mut az] {
        spec.retries = 0;
        spec.timeout = Duration::from_secs(10);
    }
    vec![
        (open(&s3), "AWS_ENDPOINT"),
        (open(&gs), "WALG_GS_ENDPOINT"),
        (open(&az), "WALG_AZ_ENDPOINT"),
    ]
}

/// A port on 127.0.0.1 where nothing listens: every backend says the
/// connection was refused and names its endpoint setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connection_names_the_endpoint() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    for (store, setting) in every_backend_at(&format!("http://127.0.0.1:{port}")) {
        let err = store.get("wal_005/x").await.err().expect("get");
        assert_eq!(err.kind, ErrorKind::Unavailable, "{err}");
        let refused = format!("127.0.0.1:{port} was refused");
        check_line(&err, Cause::ConnectionRefused, &[&refused, setting]);
    }
}

/// `https://` against each emulator's plain-HTTP port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_a_plain_http_emulator_says_so() {
    let mut stores = Vec::new();
    if let Some(ep) = endpoint("WALG_TEST_S3_ENDPOINT") {
        let ep = ep.replace("http://", "https://");
        stores.push((open(&s3_spec(&ep, "walg-test", "p")), "AWS_ENDPOINT"));
    }
    if let Some(ep) = endpoint("WALG_TEST_GS_ENDPOINT") {
        let ep = ep.replace("http://", "https://");
        stores.push((open(&gs_spec(&ep, "walg-test", "p")), "WALG_GS_ENDPOINT"));
    }
    if let Some(ep) = endpoint("WALG_TEST_AZ_ENDPOINT") {
        let ep = ep.replace("http://", "https://");
        let key = env_or("WALG_TEST_AZ_KEY", AZURITE_KEY);
        stores.push((
            open(&az_spec(&ep, "walg-test", "p", &key)),
            "WALG_AZ_ENDPOINT",
        ));
    }
    for (store, setting) in stores {
        let err = store.stat("wal_005/x").await.expect_err("stat over TLS");
        let fix = format!("write http:// in {setting}");
        check_line(
            &err,
            Cause::TlsToPlainHttp,
            &["speaks plain HTTP, not TLS", &fix],
        );
    }
}

/// A full local file system: the write fails naming the directory and
/// WALG_FILE_PREFIX, and a read-only one says it is read-only. Needs a
/// small tmpfs (root: `mount -t tmpfs -o size=1m`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_and_read_only_local_disks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mnt = dir.path().join("small");
    std::fs::create_dir(&mnt).expect("mkdir");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!(
                "cannot mount a 1 MiB tmpfs at {} (needs root) under CI=true",
                mnt.display()
            );
        }
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    struct Unmount<'a>(&'a std::path::Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&mnt);
    let archive = mnt.join("archive");
    let store = open(&StorageSpec::new(
        "default",
        "file",
        archive.to_string_lossy(),
    ));
    let err = store
        .put(
            "wal_005/000000010000000000000001",
            &Pattern {
                len: 2 * MIB,
                seed: 5,
            },
            PutOptions {
                if_not_exists: true,
            },
        )
        .await
        .expect_err("2 MiB into 1 MiB");
    let archive_shown = archive.display().to_string();
    check_line(
        &err,
        Cause::DiskFull,
        &[
            "no space left on the file system of",
            &archive_shown,
            "WALG_FILE_PREFIX",
        ],
    );
    assert!(err.kind.is_storage_failure(), "{err}");

    let remounted = std::process::Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    assert!(remounted, "remount {} read-only", mnt.display());
    let err = store
        .put(
            "wal_005/000000010000000000000002",
            &Bytes::from_static(b"v"),
            PutOptions::default(),
        )
        .await
        .expect_err("a write to a read-only file system");
    check_line(
        &err,
        Cause::LocalPermission,
        &["is read-only", "WALG_FILE_PREFIX"],
    );
}
