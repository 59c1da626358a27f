//! Tests of the status cache file: freshness, the refresh rule, bad and
//! unusable files, privacy and concurrent writers.

use std::os::unix::fs::PermissionsExt;
use std::time::UNIX_EPOCH;

use super::*;
use crate::clock::ManualClock;

const LIFE: Duration = Duration::from_secs(15 * 60);
const T0: u64 = 1_700_000_000;

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::at_unix_secs(T0))
}

fn cache_at(path: &Path, clock: &Arc<ManualClock>) -> StatusCache {
    StatusCache::new(Some(path.to_path_buf()), LIFE, clock.clone())
}

fn temp() -> tempfile::TempDir {
    tempfile::tempdir().expect("create a temporary directory")
}

fn read_json(path: &Path) -> BTreeMap<String, Entry> {
    let raw = fs::read(path).expect("read the cache file");
    parse(&raw).expect("the cache file is valid")
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path)
        .expect("stat")
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn default_cache_path_prefers_xdg_state_then_home_and_never_tmp() {
    fn check(xdg: Option<&str>, home: Option<&str>, expected: Option<&str>) {
        let got = default_cache_path(xdg.map(Path::new), home.map(Path::new));
        assert_eq!(
            got.as_deref(),
            expected.map(Path::new),
            "xdg={xdg:?} home={home:?}"
        );
    }
    check(Some("/s"), Some("/h"), Some("/s/walg/storage_status.json"));
    check(
        None,
        Some("/h"),
        Some("/h/.local/state/walg/storage_status.json"),
    );
    check(
        Some(""),
        Some("/h"),
        Some("/h/.local/state/walg/storage_status.json"),
    );
    check(
        Some("relative"),
        Some("/h"),
        Some("/h/.local/state/walg/storage_status.json"),
    );
    check(None, Some("relative"), None);
    check(None, Some(""), None);
    check(None, None, None);
}

#[test]
fn verdicts_expire_per_storage_after_the_lifetime() {
    let clock = clock();
    let cache = StatusCache::new(None, LIFE, clock.clone());
    cache.record("a", "fa", Observation::Used, true, None);
    clock.advance(Duration::from_secs(60));
    cache.record(
        "b",
        "fb",
        Observation::Checked,
        false,
        Some("unavailable: boom"),
    );
    assert_eq!(cache.verdict("a", "fa"), Verdict::Alive);
    assert_eq!(cache.verdict("b", "fb"), Verdict::Dead);

    // "a" expires first: freshness is per storage, not per file.
    clock.advance(LIFE - Duration::from_secs(60) - Duration::from_millis(1));
    assert_eq!(cache.verdict("a", "fa"), Verdict::Alive);
    clock.advance(Duration::from_millis(1));
    assert_eq!(cache.verdict("a", "fa"), Verdict::Unknown);
    assert_eq!(cache.verdict("b", "fb"), Verdict::Dead);
    clock.advance(Duration::from_secs(60));
    assert_eq!(cache.verdict("b", "fb"), Verdict::Unknown);

    // A later use refreshes the verdict.
    cache.record("a", "fa", Observation::Used, true, None);
    assert_eq!(cache.verdict("a", "fa"), Verdict::Alive);
    assert_eq!(
        cache.entry("b", "fb").and_then(|e| e.error),
        Some("unavailable: boom".to_string())
    );
}

#[test]
fn another_fingerprint_does_not_reuse_a_verdict() {
    let cache = StatusCache::new(None, LIFE, clock());
    cache.record(
        "default",
        "s3://old-bucket",
        Observation::Used,
        false,
        Some("down"),
    );
    assert_eq!(cache.verdict("default", "s3://old-bucket"), Verdict::Dead);
    assert_eq!(
        cache.verdict("default", "s3://new-bucket"),
        Verdict::Unknown
    );
    assert_eq!(cache.entry("default", "s3://new-bucket"), None);
}

#[test]
fn transitions_are_reported_once() {
    let cache = StatusCache::new(None, LIFE, clock());
    let mut seen = Vec::new();
    for alive in [true, true, false, false, true, true] {
        seen.push(cache.record("a", "f", Observation::Used, alive, Some("e")));
    }
    use Transition::*;
    assert_eq!(seen, [Unchanged, Unchanged, Down, Unchanged, Up, Unchanged]);
    // A storage first seen dead is news too.
    assert_eq!(
        cache.record("b", "f", Observation::Checked, false, Some("e")),
        Down
    );
}

#[test]
fn first_run_creates_a_private_file_without_warning() {
    let dir = temp();
    let path = dir.path().join("state").join("walg").join(FILE_NAME);
    let clock = clock();
    let cache = cache_at(&path, &clock);
    cache.load();
    assert_eq!(cache.verdict("a", "fa"), Verdict::Unknown);
    assert!(!cache.needs_flush(), "nothing learned, nothing to write");
    cache.flush();
    assert!(
        !path.exists(),
        "the file is created only once something is learned"
    );

    cache.record("a", "fa", Observation::Used, true, None);
    cache.flush();
    assert!(cache.warnings().is_empty(), "{:?}", cache.warnings());
    assert!(cache.is_persistent());
    assert_eq!(mode(&path), 0o600);
    assert_eq!(
        mode(&path.with_file_name(format!("{FILE_NAME}.lock"))),
        0o600
    );
    assert_eq!(mode(path.parent().expect("parent")), 0o700);
    let raw: serde_json::Value =
        serde_json::from_slice(&fs::read(&path).expect("read")).expect("json");
    assert_eq!(raw["format"], FORMAT);
    assert_eq!(raw["version"], VERSION);
    assert_eq!(raw["storages"]["a"]["alive"], true);
    assert_eq!(raw["storages"]["a"]["used_at_ms"], T0 * 1000);

    // The next process sees the verdict without probing or warning.
    let next = cache_at(&path, &clock);
    next.load();
    assert_eq!(next.verdict("a", "fa"), Verdict::Alive);
    assert!(next.warnings().is_empty());
    // No temporary files are left behind.
    let names: Vec<String> = fs::read_dir(path.parent().expect("parent"))
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn torn_empty_garbage_and_foreign_files_warn_once_and_are_rewritten() {
    let cases: &[(&str, &[u8])] = &[
        ("empty", b""),
        ("whitespace", b"  \n"),
        (
            "torn",
            br#"{"format":"walg-storage-status","version":1,"storages":{"a":{"fingerp"#,
        ),
        ("garbage", &[0xff, 0x00, 0x13, 0x37, 0xfe]),
        ("foreign json", br#"{"hello":"world"}"#),
        ("json array", b"[1,2,3]"),
        (
            "other version",
            br#"{"format":"walg-storage-status","version":99,"storages":{}}"#,
        ),
        (
            "malformed entry",
            br#"{"format":"walg-storage-status","version":1,"storages":{"a":{"alive":"yes"}}}"#,
        ),
    ];
    for (what, content) in cases {
        let dir = temp();
        let path = dir.path().join(FILE_NAME);
        fs::write(&path, content).expect("write");
        let clock = clock();
        let cache = cache_at(&path, &clock);
        cache.load();
        cache.reload();
        assert_eq!(cache.warnings().len(), 1, "{what}: {:?}", cache.warnings());
        assert!(cache.warnings()[0].contains("will be rewritten"), "{what}");
        assert_eq!(cache.verdict("a", "fa"), Verdict::Unknown, "{what}");
        assert!(
            cache.is_persistent(),
            "{what}: a bad file is not a bad location"
        );

        // Rewritten even though nothing was learned.
        assert!(cache.needs_flush(), "{what}");
        cache.flush();
        assert!(read_json(&path).is_empty(), "{what}");
        cache.record("a", "fa", Observation::Used, false, Some("down"));
        cache.flush();
        assert!(!read_json(&path)["a"].alive, "{what}");
        assert_eq!(cache.warnings().len(), 1, "{what}");

        let next = cache_at(&path, &clock);
        next.load();
        assert!(next.warnings().is_empty(), "{what}: {:?}", next.warnings());
        assert_eq!(next.verdict("a", "fa"), Verdict::Dead, "{what}");
    }
}

#[test]
fn unusable_locations_degrade_to_memory_with_one_warning() {
    let dir = temp();
    let file = dir.path().join("a-file");
    fs::write(&file, b"x").expect("write");
    let is_dir = dir.path().join("is-a-dir");
    fs::create_dir(&is_dir).expect("mkdir");
    let cases: Vec<(&str, PathBuf)> = vec![
        (
            "parent is a regular file",
            file.join("walg").join(FILE_NAME),
        ),
        ("path is a directory", is_dir.clone()),
        (
            "under /proc",
            PathBuf::from("/proc/walg-test-no-such/storage_status.json"),
        ),
    ];
    for (what, path) in cases {
        let clock = clock();
        let cache = cache_at(&path, &clock);
        cache.load();
        cache.record("a", "fa", Observation::Used, false, Some("down"));
        cache.flush();
        cache.record("a", "fa", Observation::Used, true, None);
        cache.flush();
        assert_eq!(cache.warnings().len(), 1, "{what}: {:?}", cache.warnings());
        assert!(cache.warnings()[0].contains("in memory"), "{what}");
        assert!(!cache.is_persistent(), "{what}");
        // The status still works, in memory.
        assert_eq!(cache.verdict("a", "fa"), Verdict::Alive, "{what}");
    }
    assert!(is_dir.is_dir());
}

#[test]
fn a_symlink_at_the_path_is_not_followed() {
    let dir = temp();
    let target = dir.path().join("precious");
    fs::write(&target, b"do not touch").expect("write");
    let dangling = dir.path().join("does-not-exist");
    for (what, to) in [("to a file", &target), ("dangling", &dangling)] {
        let path = dir.path().join(format!("link-{}", what.replace(' ', "-")));
        std::os::unix::fs::symlink(to, &path).expect("symlink");
        let clock = clock();
        let cache = cache_at(&path, &clock);
        cache.load();
        cache.record("a", "fa", Observation::Used, true, None);
        cache.flush();
        assert_eq!(cache.warnings().len(), 1, "{what}: {:?}", cache.warnings());
        assert!(cache.warnings()[0].contains("symbolic link"), "{what}");
        assert!(!cache.is_persistent(), "{what}");
        assert!(
            fs::symlink_metadata(&path)
                .expect("lstat")
                .file_type()
                .is_symlink(),
            "{what}"
        );
    }
    assert_eq!(fs::read(&target).expect("read"), b"do not touch");
    assert!(!dangling.exists());
}

#[test]
fn a_symlink_at_the_lock_path_is_not_followed() {
    let dir = temp();
    let path = dir.path().join(FILE_NAME);
    let target = dir.path().join("elsewhere");
    std::os::unix::fs::symlink(&target, dir.path().join(format!("{FILE_NAME}.lock")))
        .expect("symlink");
    let cache = cache_at(&path, &clock());
    cache.load();
    cache.record("a", "fa", Observation::Used, true, None);
    cache.flush();
    assert_eq!(cache.warnings().len(), 1, "{:?}", cache.warnings());
    assert!(!cache.is_persistent());
    assert!(
        !target.exists(),
        "the lock must not be created through the link"
    );
    assert!(!path.exists());
}

#[test]
fn loose_permissions_are_tightened_silently() {
    let dir = temp();
    let path = dir.path().join(FILE_NAME);
    let clock = clock();
    let first = cache_at(&path, &clock);
    first.record("a", "fa", Observation::Used, true, None);
    first.flush();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");

    let next = cache_at(&path, &clock);
    next.load();
    assert!(next.needs_flush());
    next.flush();
    assert_eq!(mode(&path), 0o600);
    assert!(next.warnings().is_empty());
    assert!(read_json(&path)["a"].alive);
}

#[test]
fn the_file_is_refreshed_only_on_material_changes() {
    let dir = temp();
    let path = dir.path().join(FILE_NAME);
    let clock = clock();
    let cache = cache_at(&path, &clock);
    cache.load();
    cache.record("a", "fa", Observation::Used, true, None);
    cache.flush();
    let written_at = |p: &Path| read_json(p)["a"].used_at_ms;
    assert_eq!(written_at(&path), Some(T0 * 1000));

    // Same status, newer by less than a quarter of the lifetime: no write.
    clock.advance(LIFE / 4 - Duration::from_secs(1));
    cache.record("a", "fa", Observation::Used, true, None);
    assert!(!cache.needs_flush());
    cache.flush();
    assert_eq!(written_at(&path), Some(T0 * 1000));

    // A quarter of the lifetime newer: refreshed so other processes keep
    // seeing a fresh entry.
    clock.advance(Duration::from_secs(1));
    cache.record("a", "fa", Observation::Used, true, None);
    assert!(cache.needs_flush());
    cache.flush();
    let refreshed = T0 * 1000 + (LIFE / 4).as_millis() as u64;
    assert_eq!(written_at(&path), Some(refreshed));

    // A status change is written at once.
    clock.advance(Duration::from_millis(10));
    cache.record("a", "fa", Observation::Used, false, Some("down"));
    assert!(cache.needs_flush());
    cache.flush();
    assert!(!read_json(&path)["a"].alive);
}

#[test]
fn a_newer_dead_verdict_survives_an_older_alive_one() {
    let dir = temp();
    let path = dir.path().join(FILE_NAME);
    let early = clock();
    let late = Arc::new(ManualClock::at_unix_secs(T0 + 100));

    // Both processes start before either learned anything.
    let a = cache_at(&path, &late);
    let b = cache_at(&path, &early);
    a.load();
    b.load();
    a.record("s", "f", Observation::Used, false, Some("down"));
    a.flush();
    b.record("s", "f", Observation::Checked, true, None);
    b.flush();

    let on_disk = read_json(&path);
    assert!(!on_disk["s"].alive, "{on_disk:?}");
    // And the older process learns the newer verdict from the merge.
    assert_eq!(b.entry("s", "f").map(|e| e.alive), Some(false));
}

#[test]
fn sixteen_concurrent_writers_keep_a_valid_file_and_the_newest_verdicts() {
    const WRITERS: u64 = 16;
    const ROUNDS: u64 = 20;
    let dir = temp();
    let path = dir.path().join(FILE_NAME);
    let base = UNIX_EPOCH + Duration::from_secs(T0);
    // Observation time of writer k in round r, unique over all writers.
    let at = move |k: u64, r: u64| base + Duration::from_millis(r * 100 + k);
    let alive = |k: u64, r: u64| (k + r).is_multiple_of(2);

    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let path = path.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            let mut reads = 0u64;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                match fs::read(&path) {
                    Ok(raw) => {
                        parse(&raw).expect("a reader never sees a torn file");
                        reads += 1;
                    }
                    Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound),
                }
            }
            reads
        })
    };
    let writers: Vec<_> = (0..WRITERS)
        .map(|k| {
            let path = path.clone();
            std::thread::spawn(move || {
                for r in 0..ROUNDS {
                    // A fresh instance per round, like one process per segment.
                    // A zero lifetime makes every newer observation material.
                    let clock = Arc::new(ManualClock::new(at(k, r)));
                    let cache = StatusCache::new(Some(path.clone()), Duration::ZERO, clock);
                    cache.load();
                    let err = (!alive(k, r)).then_some("down");
                    cache.record(
                        &format!("s{}", k % 4),
                        "f",
                        Observation::Used,
                        alive(k, r),
                        err,
                    );
                    cache.record("shared", "f", Observation::Checked, alive(k, r), err);
                    cache.flush();
                    assert!(cache.warnings().is_empty(), "{:?}", cache.warnings());
                }
            })
        })
        .collect();
    for w in writers {
        w.join().expect("writer thread");
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(reader.join().expect("reader thread") > 0);

    let on_disk = read_json(&path);
    let newest = |ks: &[u64]| {
        let (k, r) = ks
            .iter()
            .map(|&k| (k, ROUNDS - 1))
            .max_by_key(|&(k, r)| at(k, r))
            .expect("some");
        (unix_ms(at(k, r)), alive(k, r))
    };
    let mut expected = BTreeMap::new();
    for s in 0..4 {
        let ks: Vec<u64> = (0..WRITERS).filter(|k| k % 4 == s).collect();
        expected.insert(format!("s{s}"), newest(&ks));
    }
    expected.insert(
        "shared".to_string(),
        newest(&(0..WRITERS).collect::<Vec<_>>()),
    );
    let got: BTreeMap<String, (u64, bool)> = on_disk
        .iter()
        .map(|(n, e)| (n.clone(), (e.observed_at_ms(), e.alive)))
        .collect();
    assert_eq!(got, expected);
    assert_eq!(mode(&path), 0o600);
    let leftovers: Vec<_> = fs::read_dir(dir.path())
        .expect("list")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
