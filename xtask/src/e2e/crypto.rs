//! End-to-end checks of encryption through the real `walg` binary.
//!
//! - `libsodium_interop`: PyNaCl (libsodium itself, `sodium_ref.py`, written
//!   from WAL-G's framing rules, not from walg) decrypts every object walg
//!   writes and walg restores every object PyNaCl writes: sizes 0, 1, 8191,
//!   8192, 8193 and a full 16 MiB segment with compression `none`, plus an
//!   lz4 segment checked with the `lz4` tool.
//! - `encryption_bad_input`: each bad key or object is a clear error with
//!   exit 1, nothing is written, and no key text appears in the output even
//!   at `WALG_LOG_LEVEL=debug`.
//! - `libsodium_failover_rotation`: a real PostgreSQL archives with libsodium
//!   through failover storages, a new cluster recovers through `wal-fetch`;
//!   then the key is rotated and a second recovery still reads the segments
//!   written with the old key.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use serde_json::json;

use super::fixture::{
    all_output, archiving_cluster, file_settings, recovered_cluster, snapshot, stored_names,
    walg_with_env, LocalSegment, Set, Walg,
};
use crate::infra::pg::{self, table_digest, Workdir};

const ARCHIVE_WAIT: Duration = Duration::from_secs(120);
const SODIUM_REF: &str = include_str!("sodium_ref.py");

/// WAL-G's published test vectors (`internal/crypto/libsodium/crypter_test.go`).
const HEX_KEY: &str = "4c0829fdfe7ae1987918edc585b1a90556d901eaea963c7625bb5734576dfb59";
const BASE64_KEY: &str = "jv81yb3v3gNePrY0JmJ4q2j2NrqcM7tDYSHFoZ0tTIw=";
const RAW_KEY: &str = "TEST_LIBSODIUM_KEY_______";

/// WAL-G's libsodium object size for `n` plaintext bytes.
fn sealed_len(n: u64) -> u64 {
    24 + n / 8192 * 8209 + n % 8192 + 17
}

/// Deterministic bytes that do not compress.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The reference implementation, run from the tools venv.
struct Reference {
    python: PathBuf,
    script: PathBuf,
}

impl Reference {
    fn new(repo: &Path, work: &Workdir) -> Result<Reference> {
        let python = crate::infra::emulators::python(repo);
        ensure!(
            python.exists(),
            "the tools venv ({}) is missing: run `cargo xtask setup`",
            python.display()
        );
        let script = work.path.join("sodium_ref.py");
        fs::write(&script, SODIUM_REF)?;
        Ok(Reference { python, script })
    }

    fn run(&self, op: &str, key: &str, src: &Path, dst: &Path) -> Result<()> {
        let out = Command::new(&self.python)
            .arg(&self.script)
            .args([op, key])
            .arg(src)
            .arg(dst)
            .output()?;
        if !out.status.success() {
            bail!(
                "PyNaCl {op} of {} failed: {}",
                src.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}

pub fn libsodium_interop(built: &Path, repo: &Path) -> Result<()> {
    let work = Workdir::new("sodium-interop")?;
    let bin = work.install_walg(built)?;
    let reference = Reference::new(repo, &work)?;
    let local = work.path.join("local");
    let seg = LocalSegment::new(&work, &[])?;
    let (seg_name, segment) = (seg.name.clone(), seg.bytes.clone());
    ensure!(segment.len() == 16 << 20, "expected a 16 MiB segment");

    // Objects: timeline history files of the sizes around a piece boundary
    // (wal-push takes any size for them), and the real segment.
    let mut objects: Vec<(String, Vec<u8>, &str)> = [0usize, 1, 8191, 8192, 8193]
        .iter()
        .enumerate()
        .map(|(i, n)| {
            (
                format!("{:08X}.history", i + 2),
                noise(*n, i as u64 + 1),
                "hex",
            )
        })
        .collect();
    objects.push((seg_name.clone(), segment.clone(), "none"));
    // walg with the key of `transform`, compression `none`, on `archive`.
    let keyed = |transform: &str, archive: &Path, args: &[&str]| -> Result<Output> {
        let key = match transform {
            "hex" => HEX_KEY,
            "base64" => BASE64_KEY,
            _ => RAW_KEY,
        };
        let prefix = archive.display().to_string();
        let env = [
            ("WALG_LIBSODIUM_KEY", key),
            ("WALG_LIBSODIUM_KEY_TRANSFORM", transform),
            ("WALG_FILE_PREFIX", prefix.as_str()),
            ("WALG_COMPRESSION_METHOD", "none"),
        ];
        walg_with_env(&bin, &work.path, &env, args)
    };
    let spec = |transform: &str| match transform {
        "hex" => format!("hex:{HEX_KEY}"),
        "base64" => format!("base64:{BASE64_KEY}"),
        _ => format!("none:{RAW_KEY}"),
    };

    // walg writes, PyNaCl reads.
    let written = work.path.join("by-walg");
    for (name, data, transform) in &objects {
        let src = local.join(name);
        fs::write(&src, data)?;
        let out = keyed(
            transform,
            &written,
            &["wal-push", &src.display().to_string()],
        )?;
        ensure!(
            out.status.success(),
            "wal-push {name}: {}",
            all_output(&out)
        );
        let stored = written.join("wal_005").join(name);
        let len = fs::metadata(&stored)?.len();
        ensure!(
            len == sealed_len(data.len() as u64),
            "{name}: walg stored {len} bytes for {} plaintext bytes, WAL-G's framing gives {}",
            data.len(),
            sealed_len(data.len() as u64)
        );
        let plain = work.path.join(format!("{name}.pynacl"));
        reference.run("decrypt", &spec(transform), &stored, &plain)?;
        ensure!(
            fs::read(&plain)? == *data,
            "{name}: PyNaCl's decryption of walg's object differs from the original"
        );
        println!(
            "  walg -> PyNaCl: {name} ({} bytes, key transform {transform}) ok",
            data.len()
        );
    }

    // lz4 + libsodium: PyNaCl decrypts, the lz4 tool decompresses.
    let lz4_archive = work.path.join("by-walg-lz4");
    let prefix = lz4_archive.display().to_string();
    let env = [
        ("WALG_FILE_PREFIX", prefix.as_str()),
        ("WALG_LIBSODIUM_KEY", BASE64_KEY),
        ("WALG_LIBSODIUM_KEY_TRANSFORM", "base64"),
    ];
    let out = walg_with_env(&bin, &work.path, &env, &["wal-push", &seg.arg()])?;
    ensure!(out.status.success(), "wal-push lz4: {}", all_output(&out));
    let stored = lz4_archive.join("wal_005").join(format!("{seg_name}.lz4"));
    let frame = work.path.join("segment.lz4");
    reference.run("decrypt", &spec("base64"), &stored, &frame)?;
    let unpacked = work.path.join("segment.unpacked");
    pg::run(
        Command::new("lz4")
            .args(["-d", "-f", "-q"])
            .arg(&frame)
            .arg(&unpacked),
    )?;
    ensure!(
        fs::read(&unpacked)? == segment,
        "PyNaCl + lz4 -d of walg's lz4+libsodium segment differs from the original"
    );
    println!("  walg -> PyNaCl -> lz4 -d: {seg_name} (lz4 + libsodium) ok");

    // PyNaCl writes in WAL-G's framing, walg reads.
    let foreign = work.path.join("by-pynacl");
    fs::create_dir_all(foreign.join("wal_005"))?;
    for (name, data, transform) in &objects {
        reference.run(
            "encrypt",
            &spec(transform),
            &local.join(name),
            &foreign.join("wal_005").join(name),
        )?;
        let dest = work.path.join(format!("{name}.restored"));
        let out = keyed(
            transform,
            &foreign,
            &["wal-fetch", name, &dest.display().to_string()],
        )?;
        ensure!(
            out.status.success(),
            "wal-fetch of PyNaCl's {name}: {}",
            all_output(&out)
        );
        ensure!(
            fs::read(&dest)? == *data,
            "{name}: walg's decryption of PyNaCl's object differs from the original"
        );
        println!(
            "  PyNaCl -> walg: {name} ({} bytes, key transform {transform}) ok",
            data.len()
        );
    }
    Ok(())
}

pub fn bad_input(built: &Path) -> Result<()> {
    let work = Workdir::new("crypto-bad")?;
    let bin = work.install_walg(built)?;
    let seg = LocalSegment::new(&work, &["--wal-segsize=1"])?;
    let (seg_name, seg_arg) = (seg.name.clone(), seg.arg());

    let good = [
        ("WALG_LIBSODIUM_KEY", HEX_KEY),
        ("WALG_LIBSODIUM_KEY_TRANSFORM", "hex"),
    ];
    let archive_of = |name: &str| work.path.join(name);
    let prefix = |name: &str| archive_of(name).display().to_string();

    // Archives to fetch from: encrypted, clear text, truncated at a piece
    // boundary, tampered.
    for (name, keyed) in [("enc", true), ("plain", false)] {
        let p = prefix(name);
        let mut env = vec![("WALG_FILE_PREFIX", p.as_str())];
        if keyed {
            env.extend(good);
        }
        let out = walg_with_env(&bin, &work.path, &env, &["wal-push", &seg_arg])?;
        ensure!(
            out.status.success(),
            "setup push to {name}: {}",
            all_output(&out)
        );
    }
    let object = |archive: &str| {
        archive_of(archive)
            .join("wal_005")
            .join(format!("{seg_name}.lz4"))
    };
    let sealed = fs::read(object("enc"))?;
    ensure!(
        sealed[..4] != [0x04, 0x22, 0x4D, 0x18],
        "the encrypted object starts like a clear-text lz4 frame"
    );
    let pieces = (sealed.len() - 24) / 8209;
    ensure!(
        pieces >= 2,
        "the encrypted object is too small for the test"
    );
    for (name, bytes) in [
        ("trunc", sealed[..24 + (pieces - 1) * 8209].to_vec()),
        ("tampered", {
            let mut t = sealed.clone();
            let mid = t.len() / 2;
            t[mid] ^= 0x01;
            t
        }),
    ] {
        let dir = archive_of(name).join("wal_005");
        fs::create_dir_all(&dir)?;
        fs::write(dir.join(format!("{seg_name}.lz4")), bytes)?;
    }
    let empty_key = work.path.join("empty.key");
    fs::write(&empty_key, "  \n")?;
    let empty_key = empty_key.display().to_string();
    let missing_key = work.path.join("no-such.key").display().to_string();

    let short_hex = "ab".repeat(22);
    let bad_hex = "zz".repeat(32);
    let wrong_key = "00".repeat(32);
    let forty = "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDEyMzQ1Njc4OQ==";
    // Every key text any case uses: none may appear in any output.
    let secrets: Vec<&str> = vec![
        HEX_KEY,
        &short_hex,
        &bad_hex,
        &wrong_key,
        forty,
        "not*base64*at*all*secretvalue",
        "short_secret",
        "-----BEGIN PGP PUBLIC KEY BLOCK-----",
    ];

    struct Case<'a> {
        what: &'a str,
        env: Vec<(&'a str, &'a str)>,
        fetch_from: Option<&'a str>,
        needle: &'a str,
    }
    let hex = ("WALG_LIBSODIUM_KEY_TRANSFORM", "hex");
    let cases = vec![
        Case {
            what: "hex key of 22 bytes",
            env: vec![("WALG_LIBSODIUM_KEY", short_hex.as_str()), hex],
            fetch_from: None,
            needle:
                "WALG_LIBSODIUM_KEY: libsodium key: key must be exactly 32 bytes (got 22 bytes)",
        },
        Case {
            what: "bad hex",
            env: vec![("WALG_LIBSODIUM_KEY", bad_hex.as_str()), hex],
            fetch_from: None,
            needle: "while hex decoding key",
        },
        Case {
            what: "bad base64",
            env: vec![
                ("WALG_LIBSODIUM_KEY", "not*base64*at*all*secretvalue"),
                ("WALG_LIBSODIUM_KEY_TRANSFORM", "base64"),
            ],
            fetch_from: None,
            needle: "while base64 decoding key",
        },
        Case {
            what: "base64 key of 40 bytes",
            env: vec![
                ("WALG_LIBSODIUM_KEY", forty),
                ("WALG_LIBSODIUM_KEY_TRANSFORM", "base64"),
            ],
            fetch_from: None,
            needle: "exactly 32 bytes (got 40 bytes)",
        },
        Case {
            what: "raw key under 25 bytes",
            env: vec![("WALG_LIBSODIUM_KEY", "short_secret")],
            fetch_from: None,
            needle: "must not be less than 25, got 12",
        },
        Case {
            what: "unknown transform",
            env: vec![
                ("WALG_LIBSODIUM_KEY", HEX_KEY),
                ("WALG_LIBSODIUM_KEY_TRANSFORM", "HEX"),
            ],
            fetch_from: None,
            needle: "unknown key transform \"HEX\"",
        },
        Case {
            what: "unreadable key file",
            env: vec![("WALG_LIBSODIUM_KEY_PATH", missing_key.as_str()), hex],
            fetch_from: None,
            needle: "read the key file",
        },
        Case {
            what: "empty key file",
            env: vec![("WALG_LIBSODIUM_KEY_PATH", empty_key.as_str()), hex],
            fetch_from: None,
            needle: "is empty",
        },
        Case {
            what: "bad old key",
            env: vec![
                ("WALG_LIBSODIUM_KEY", HEX_KEY),
                ("WALG_LIBSODIUM_OLD_KEYS", short_hex.as_str()),
                hex,
            ],
            fetch_from: None,
            needle: "WALG_LIBSODIUM_OLD_KEYS entry 1",
        },
        Case {
            what: "old keys without a main key",
            env: vec![("WALG_LIBSODIUM_OLD_KEYS", HEX_KEY), hex],
            fetch_from: None,
            needle: "without WALG_LIBSODIUM_KEY",
        },
        Case {
            what: "AWS KMS",
            env: vec![("WALG_CSE_KMS_ID", "arn:aws:kms:eu-west-1:1:key/x")],
            fetch_from: None,
            needle: "WALG_CSE_KMS_ID is set, but walg does not implement",
        },
        Case {
            what: "envelope PGP",
            env: vec![(
                "WALG_ENVELOPE_PGP_KEY",
                "-----BEGIN PGP PUBLIC KEY BLOCK-----",
            )],
            fetch_from: None,
            needle: "WALG_ENVELOPE_PGP_KEY is set, but walg does not implement",
        },
        Case {
            what: "wrong key on fetch",
            env: vec![("WALG_LIBSODIUM_KEY", wrong_key.as_str()), hex],
            fetch_from: Some("enc"),
            needle: "does not authenticate with the libsodium key",
        },
        Case {
            what: "object cut at a piece boundary",
            env: good.to_vec(),
            fetch_from: Some("trunc"),
            needle: "ends without its final piece",
        },
        Case {
            what: "tampered object",
            env: good.to_vec(),
            fetch_from: Some("tampered"),
            needle: "does not authenticate",
        },
        Case {
            what: "encrypted object fetched without a key",
            env: vec![],
            fetch_from: Some("enc"),
            needle: "set WALG_LIBSODIUM_KEY",
        },
        Case {
            what: "clear-text object fetched with a key",
            env: good.to_vec(),
            fetch_from: Some("plain"),
            needle: "clear-text lz4 frame",
        },
    ];

    for case in &cases {
        let out_dir = work.path.join("out");
        fs::create_dir_all(&out_dir)?;
        let target = archive_of("target");
        let before = snapshot(&work.path.join("enc"));
        let (args, archive) = match case.fetch_from {
            Some(a) => (
                vec![
                    "wal-fetch".to_string(),
                    seg_name.clone(),
                    out_dir.join(&seg_name).display().to_string(),
                ],
                prefix(a),
            ),
            None => (
                vec!["wal-push".to_string(), seg_arg.clone()],
                target.display().to_string(),
            ),
        };
        let mut env = case.env.clone();
        env.push(("WALG_FILE_PREFIX", &archive));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = walg_with_env(&bin, &work.path, &env, &args)?;
        let text = all_output(&out);
        ensure!(
            out.status.code() == Some(1),
            "{}: expected exit 1, got {:?}: {text}",
            case.what,
            out.status.code()
        );
        ensure!(
            text.contains(case.needle),
            "{}: the message should contain {:?}: {text}",
            case.what,
            case.needle
        );
        for s in &secrets {
            ensure!(
                !text.contains(s),
                "{}: key text {s:?} appears in walg's output: {text}",
                case.what
            );
        }
        ensure!(
            !target.exists(),
            "{}: wal-push wrote to the archive {}",
            case.what,
            target.display()
        );
        ensure!(
            snapshot(&out_dir).is_empty(),
            "{}: wal-fetch left files in the destination directory: {:?}",
            case.what,
            snapshot(&out_dir)
                .iter()
                .map(|(p, _)| p)
                .collect::<Vec<_>>()
        );
        ensure!(
            snapshot(&work.path.join("enc")) == before,
            "{}: the stored archive changed",
            case.what
        );
        let line = text
            .lines()
            .find(|l| l.contains(case.needle))
            .unwrap_or_default();
        println!("  {}: exit 1, nothing written: {}", case.what, line.trim());
    }
    Ok(())
}

/// The lz4 segments (`<24 hex>.lz4`) in a file storage, sorted.
fn segments_in(archive: &Path) -> Vec<String> {
    stored_names(archive)
        .into_iter()
        .filter(|n| n.len() == 28 && n.ends_with(".lz4"))
        .collect()
}

pub fn failover_rotation(built: &Path, repo: &Path) -> Result<()> {
    let work = Workdir::new("sodium-failover")?;
    let primary = work.owned_dir("primary")?;
    let backup1 = work.owned_dir("backup1")?;
    let state = work.owned_dir("state")?;
    let reference = Reference::new(repo, &work)?;
    let old_key = HEX_KEY;
    let new_key = "a2b7e7dd0d1c66f5e3f4c1d9a40a0b5cf3a1e4c0d2b6e8f90112233445566778";
    let settings = |key: &str, old: Option<&str>| {
        let mut s = file_settings(&primary);
        s.set(
            "WALG_FAILOVER_STORAGES",
            json!({ "backup1": { "WALG_FILE_PREFIX": backup1.display().to_string() } }),
        )
        .set(
            "WALG_FAILOVER_STORAGES_CACHE_FILE",
            state.join("status.json").display().to_string(),
        )
        .set("WALG_LIBSODIUM_KEY", key)
        .set("WALG_LIBSODIUM_KEY_TRANSFORM", "hex");
        if let Some(old) = old {
            s.set("WALG_LIBSODIUM_OLD_KEYS", old);
        }
        s
    };
    let walg = Walg::new(&work, built, "walg.json", &settings(old_key, None))?;
    let mut source = archiving_cluster(
        &work,
        &walg,
        "source",
        "archive_timeout = 0\n",
        &["--wal-segsize=1"],
    )?;
    source.sql("create table crypt (id bigint primary key, payload text)")?;
    source.sql("insert into crypt select g, md5(g::text) from generate_series(1, 5000) g")?;
    let backup = work.path.join("backup");
    source.basebackup(&backup)?;
    let write = |from: i64| -> Result<String> {
        source.sql(&format!(
            "insert into crypt select g, repeat(md5(g::text), 4) from generate_series({from}, {}) g",
            from + 4999
        ))?;
        source.switch_and_wait_archived(ARCHIVE_WAIT)
    };
    write(10_000)?;
    // The primary stops accepting writes: the next segments go to backup1.
    let wal_dir = primary.join("wal_005");
    fs::set_permissions(&wal_dir, fs::Permissions::from_mode(0o555))?;
    write(20_000)?;
    write(30_000)?;
    fs::set_permissions(&wal_dir, fs::Permissions::from_mode(0o755))?;
    let last_old = write(40_000)?;
    let on_backup = segments_in(&backup1);
    ensure!(
        !on_backup.is_empty(),
        "no segment went to the failover storage while the primary refused writes\n{}",
        pg::tail(&source.log_text(), 30)
    );
    let on_primary = segments_in(&primary);
    println!(
        "  archived with the old key: {} segments on default, {} on backup1",
        on_primary.len(),
        on_backup.len()
    );
    // The stored bytes are libsodium objects holding lz4 frames: checked
    // with PyNaCl, not with walg.
    let sample = backup1.join("wal_005").join(&on_backup[0]);
    let inner = work.path.join("sample.lz4");
    reference.run("decrypt", &format!("hex:{old_key}"), &sample, &inner)?;
    ensure!(
        fs::read(&inner)?.starts_with(&[0x04, 0x22, 0x4D, 0x18]),
        "PyNaCl's decryption of {} is not an lz4 frame",
        sample.display()
    );
    let digest_old = table_digest(&source, "crypt")?;

    // Recovery 1: the same key.
    recover(&work, &backup, &walg, "restored1", &last_old, &digest_old)?;
    println!("  recovered a new cluster through wal-fetch from both storages ({last_old})");

    // Rotation: a new main key, the old one kept for reading. The config
    // file is rewritten in place, as an operator would.
    work.write_config("walg.json", &settings(new_key, Some(old_key)))?;
    write(50_000)?;
    let last_new = write(60_000)?;
    let digest_new = table_digest(&source, "crypt")?;
    source.stop()?;
    let newest = stored_object(&[&primary, &backup1], &last_new)?;
    let check = work.path.join("newest.lz4");
    reference.run("decrypt", &format!("hex:{new_key}"), &newest, &check)?;
    ensure!(
        reference
            .run("decrypt", &format!("hex:{old_key}"), &newest, &check)
            .is_err(),
        "a segment archived after the rotation still decrypts with the old key"
    );

    // Without the old key, an old segment is refused with a clear error.
    let first_old = on_primary
        .first()
        .map(|n| n.trim_end_matches(".lz4").to_string())
        .context("no segment on the primary")?;
    let no_old = Walg::new(&work, built, "new-only.json", &settings(new_key, None))?;
    let dest = work.path.join("probe");
    let out = no_old.fetch(&first_old, &dest)?;
    ensure!(
        out.status.code() == Some(1) && !dest.exists(),
        "fetching an old segment without WALG_LIBSODIUM_OLD_KEYS must exit 1 and write nothing: {}",
        all_output(&out)
    );

    // Recovery 2: new key + old key reads the segments of both.
    recover(&work, &backup, &walg, "restored2", &last_new, &digest_new)?;
    println!(
        "  key rotated: recovery read the old-key segments ({first_old}..{last_old}) and the new-key ones (..{last_new})"
    );
    Ok(())
}

/// Where `name` is stored, in whichever storage took it.
fn stored_object(archives: &[&Path], name: &str) -> Result<PathBuf> {
    archives
        .iter()
        .map(|a| a.join("wal_005").join(format!("{name}.lz4")))
        .find(|p| p.exists())
        .with_context(|| format!("{name} is in no storage"))
}

/// Recovers `backup` into `work/<label>` through `walg` and checks that
/// it restored `last` and has the data of `digest`.
fn recover(
    work: &Workdir,
    backup: &Path,
    walg: &Walg,
    label: &str,
    last: &str,
    digest: &str,
) -> Result<()> {
    // No archiving from the recovered cluster: its new timeline would
    // change what the next recovery from the same archive follows.
    let mut restored = recovered_cluster(
        walg,
        backup,
        &work.path.join(label),
        "archive_mode = off\n",
        Duration::from_secs(120),
    )
    .with_context(|| format!("wait for {label} to finish recovery"))?;
    let log = restored.log_text();
    ensure!(
        log.contains(&format!("restored log file \"{last}\" from archive")),
        "{label} did not restore {last} through walg; log tail:\n{}",
        pg::tail(&log, 30)
    );
    let got = table_digest(&restored, "crypt")?;
    ensure!(got == digest, "{label}: data differs: {got} vs {digest}");
    restored.stop()?;
    Ok(())
}
