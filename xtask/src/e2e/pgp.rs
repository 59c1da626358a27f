//! End-to-end checks of OpenPGP encryption (`WALG_PGP_KEY`) through the real
//! `walg` binary against GnuPG, an implementation that is not ours.
//!
//! `openpgp_gpg`: walg pushes a real segment with a public key and gpg
//! decrypts it (binary literal packet, no compression packet, MDC); gpg
//! encrypts a segment (`--compress-algo none`) and walg fetches it with the
//! private key, given inline; a keyring of two keys reads objects of either.
//! Then the bad inputs: a public key for fetch, the wrong key, a missing or
//! wrong passphrase, a tampered object: exit 1, nothing written, no key or
//! passphrase text in the output at debug level.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{ensure, Context, Result};

use super::fixture::{all_output, snapshot, walg_with_env, LocalSegment};
use crate::infra::pg::Workdir;

const PASSPHRASE: &str = "pgp-e2e-passphrase-secret";

fn gpg(home: &Path, args: &[&str]) -> Result<Vec<u8>> {
    let out = Command::new("gpg")
        .env("GNUPGHOME", home)
        .arg("--batch")
        .args(args)
        .output()
        .context("run gpg (apt-get install gnupg, or `cargo xtask setup`)")?;
    ensure!(
        out.status.success(),
        "gpg {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out.stdout)
}

/// Generates a key as ENCRYPTION.md's batch recipe does, and returns its
/// armored public and secret keys.
fn make_key(home: &Path, who: &str, passphrase: Option<&str>) -> Result<(String, String)> {
    let protection = match passphrase {
        Some(p) => format!("Passphrase: {p}"),
        None => "%no-protection".to_string(),
    };
    let params = home.join(format!("{who}.params"));
    fs::write(
        &params,
        format!(
            // A parameter block starts with Key-Type; the passphrase is one
            // of its parameters.
            "Key-Type: RSA\nKey-Length: 2048\nSubkey-Type: RSA\nSubkey-Length: 2048\n\
             Name-Real: {who}\nName-Email: {who}@example.invalid\nExpire-Date: 0\n{protection}\n%commit\n"
        ),
    )?;
    let p = params.display().to_string();
    let email = format!("{who}@example.invalid");
    let mut loopback = vec![];
    if let Some(pp) = passphrase {
        loopback = vec!["--pinentry-mode", "loopback", "--passphrase", pp];
    }
    let mut gen = loopback.clone();
    gen.extend(["--gen-key", p.as_str()]);
    gpg(home, &gen)?;
    let public = gpg(home, &["--armor", "--export", &email])?;
    let mut exp = loopback.clone();
    exp.extend(["--armor", "--export-secret-keys", email.as_str()]);
    let secret = gpg(home, &exp)?;
    Ok((String::from_utf8(public)?, String::from_utf8(secret)?))
}

pub fn openpgp_gpg(built: &Path) -> Result<()> {
    let work = Workdir::new("pgp-gpg")?;
    let bin = work.install_walg(built)?;
    let gnupg = work.path.join("gnupg");
    fs::create_dir_all(&gnupg)?;
    Command::new("chmod").arg("700").arg(&gnupg).status()?;
    let (a_pub, a_sec) = make_key(&gnupg, "walg-a", None)?;
    let (_, b_sec) = make_key(&gnupg, "walg-b", None)?;
    let (c_pub, c_sec) = make_key(&gnupg, "walg-c", Some(PASSPHRASE))?;
    let a_pub_path = work.path.join("a.pub.asc");
    fs::write(&a_pub_path, &a_pub)?;
    let a_pub_arg = a_pub_path.display().to_string();

    let seg = LocalSegment::new(&work, &["--wal-segsize=1"])?;
    let (seg_name, segment, seg_arg) = (seg.name.as_str(), &seg.bytes, seg.arg());
    let object_in = |archive: &str| {
        work.path
            .join(archive)
            .join("wal_005")
            .join(format!("{seg_name}.lz4"))
    };

    // 1. walg writes with the public key only; gpg reads.
    let walg_arch = work.path.join("arch-walg").display().to_string();
    let out = walg_with_env(
        &bin,
        &work.path,
        &[
            ("WALG_FILE_PREFIX", &walg_arch),
            ("WALG_PGP_KEY_PATH", &a_pub_arg),
        ],
        &["wal-push", &seg_arg],
    )?;
    ensure!(
        out.status.success(),
        "wal-push with a public key: {}",
        all_output(&out)
    );
    let obj = object_in("arch-walg");
    ensure!(
        obj.exists(),
        "the object keeps WAL-G's name {}",
        obj.display()
    );
    let obj_arg = obj.display().to_string();
    let packets = String::from_utf8_lossy(&gpg(&gnupg, &["--list-packets", &obj_arg])?).to_string();
    ensure!(
        packets.contains("pubkey enc packet: version 3")
            && packets.contains("mdc_method: 2")
            && packets.contains("literal data packet")
            && !packets.contains("compressed packet"),
        "walg's object is not PKESK v3 + SEIPD/MDC + literal without compression: {packets}"
    );
    let lz4_out = work.path.join("gpg-decrypted.lz4");
    let lz4_out_arg = lz4_out.display().to_string();
    gpg(&gnupg, &["--yes", "-o", &lz4_out_arg, "-d", &obj_arg])?;
    let raw = Command::new("lz4")
        .arg("-d")
        .arg("-c")
        .arg(&lz4_out)
        .output()?;
    ensure!(raw.status.success(), "lz4 -d of gpg's output failed");
    ensure!(
        raw.stdout == *segment,
        "gpg + lz4 do not give back the segment"
    );
    println!(
        "  gpg decrypts walg's object ({} bytes) and lz4 restores the segment",
        fs::metadata(&obj)?.len()
    );

    // 2. gpg writes (no compression, as WAL-G's data is compressed); walg reads
    //    with the private key given inline, with WAL-G's literal "\n".
    let foreign = object_in("gpg");
    fs::create_dir_all(foreign.parent().context("an object has a directory")?)?;
    let plain_lz4 = work.path.join("seg.lz4");
    ensure!(
        Command::new("lz4")
            .arg("-q")
            .arg("-f")
            .arg(&seg.path)
            .arg(&plain_lz4)
            .status()?
            .success(),
        "lz4 compression failed"
    );
    let foreign_arg = foreign.display().to_string();
    let plain_lz4_arg = plain_lz4.display().to_string();
    gpg(
        &gnupg,
        &[
            "--trust-model",
            "always",
            "--compress-algo",
            "none",
            "-r",
            "walg-a@example.invalid",
            "-o",
            &foreign_arg,
            "-e",
            &plain_lz4_arg,
        ],
    )?;
    let gpg_arch = work.path.join("gpg").display().to_string();
    let inline_sec = a_sec.replace('\n', "\\n");
    let out_dir = work.path.join("out");
    fs::create_dir_all(&out_dir)?;
    let dest = out_dir.join(seg_name);
    let dest_arg = dest.display().to_string();
    let out = walg_with_env(
        &bin,
        &work.path,
        &[
            ("WALG_FILE_PREFIX", &gpg_arch),
            ("WALG_PGP_KEY", &inline_sec),
        ],
        &["wal-fetch", seg_name, &dest_arg],
    )?;
    ensure!(
        out.status.success(),
        "wal-fetch of gpg's object: {}",
        all_output(&out)
    );
    ensure!(
        fs::read(&dest)? == *segment,
        "walg's fetch of gpg's object differs"
    );
    fs::remove_file(&dest)?;
    println!("  walg decrypts gpg's object (--compress-algo none) into the segment");

    // 3. Rotation: a keyring of the new and the old secret key reads objects
    //    written to the old key.
    let ring = format!("{b_sec}\n{a_sec}");
    let out = walg_with_env(
        &bin,
        &work.path,
        &[("WALG_FILE_PREFIX", &walg_arch), ("WALG_PGP_KEY", &ring)],
        &["wal-fetch", seg_name, &dest_arg],
    )?;
    ensure!(
        out.status.success(),
        "wal-fetch with a keyring: {}",
        all_output(&out)
    );
    ensure!(fs::read(&dest)? == *segment, "keyring fetch differs");
    fs::remove_file(&dest)?;
    println!("  a keyring (new key + old key) reads the objects of the old key");

    // 4. Bad inputs.
    let tampered = object_in("tampered");
    fs::create_dir_all(tampered.parent().context("an object has a directory")?)?;
    let mut t = fs::read(&obj)?;
    let mid = t.len() / 2;
    t[mid] ^= 1;
    fs::write(&tampered, t)?;
    let c_sec_path = work.path.join("c.sec.asc");
    fs::write(&c_sec_path, &c_sec)?;
    let c_sec_arg = c_sec_path.display().to_string();
    let tampered_arch = work.path.join("tampered").display().to_string();
    // Key material that must never be printed: a line from the middle of
    // each armored key, and the passphrase.
    let mid_line = |k: &str| -> String {
        let lines: Vec<&str> = k.lines().filter(|l| l.len() > 40).collect();
        lines[lines.len() / 2].to_string()
    };
    let secrets = [
        mid_line(&a_pub),
        mid_line(&a_sec),
        mid_line(&b_sec),
        mid_line(&c_sec),
        mid_line(&c_pub),
        PASSPHRASE.to_string(),
    ];
    let (pub_path, c_path) = (a_pub_arg.as_str(), c_sec_arg.as_str());
    let (walg_a, tampered_a) = (walg_arch.as_str(), tampered_arch.as_str());
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            "public key for fetch",
            vec![("WALG_PGP_KEY_PATH", pub_path)],
            walg_a,
            "holds only public keys",
        ),
        (
            "wrong key",
            vec![("WALG_PGP_KEY", b_sec.as_str())],
            walg_a,
            "no key of WALG_PGP_KEY opens the object",
        ),
        (
            "missing passphrase",
            vec![("WALG_PGP_KEY_PATH", c_path)],
            walg_a,
            "WALG_PGP_KEY_PASSPHRASE is missing or wrong",
        ),
        (
            "wrong passphrase",
            vec![
                ("WALG_PGP_KEY_PATH", c_path),
                ("WALG_PGP_KEY_PASSPHRASE", "wrong-pass"),
            ],
            walg_a,
            "WALG_PGP_KEY_PASSPHRASE is missing or wrong",
        ),
        (
            "tampered object",
            vec![("WALG_PGP_KEY", a_sec.as_str())],
            tampered_a,
            "OpenPGP object damaged or tampered with",
        ),
        (
            "envelope PGP",
            vec![("WALG_ENVELOPE_PGP_KEY", a_pub.as_str())],
            walg_a,
            "WALG_ENVELOPE_PGP_KEY is set, but walg does not implement",
        ),
        (
            "external gpg key id",
            vec![("WALG_GPG_KEY_ID", "walg-a")],
            walg_a,
            "WALG_GPG_KEY_ID is set, but walg does not implement",
        ),
    ];
    // Earlier fetches may have left prefetched segments under out/.wal-g;
    // a refused fetch must add nothing.
    let out_before = snapshot(&out_dir);
    for (what, env, archive, needle) in cases {
        let before = snapshot(&work.path.join("arch-walg"));
        let mut env = env;
        env.push(("WALG_FILE_PREFIX", archive));
        let out = walg_with_env(&bin, &work.path, &env, &["wal-fetch", seg_name, &dest_arg])?;
        let text = all_output(&out);
        ensure!(
            out.status.code() == Some(1),
            "{what}: expected exit 1, got {:?}: {text}",
            out.status.code()
        );
        ensure!(
            text.contains(needle),
            "{what}: the message should contain {needle:?}: {text}"
        );
        for s in &secrets {
            ensure!(
                !text.contains(s.as_str()),
                "{what}: key text appears in walg's output: {text}"
            );
        }
        let out_after = snapshot(&out_dir);
        ensure!(
            !dest.exists() && out_after == out_before,
            "{what}: wal-fetch left files in {}: {:?}",
            out_dir.display(),
            out_after
                .iter()
                .filter(|f| !out_before.contains(f))
                .map(|(p, _)| p)
                .collect::<Vec<_>>()
        );
        ensure!(
            snapshot(&work.path.join("arch-walg")) == before,
            "{what}: the archive changed"
        );
        let line = text
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_default();
        println!("  {what}: exit 1, nothing written: {}", line.trim());
    }
    Ok(())
}
