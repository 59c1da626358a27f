//! `cargo xtask dist`: the release binary and a Debian package.
//!
//! The package is assembled by hand and built with `dpkg-deb`, Debian's own
//! tool, which is on every Debian machine (cargo-deb would do the same job
//! but costs a `cargo install` of a few hundred crates on a fresh CI
//! machine). It contains:
//!
//! - `/usr/bin/walg`;
//! - man pages and bash/zsh/fish completions generated from the clap
//!   definitions by the binary itself (`walg dist-assets`);
//! - `/etc/walg/walg.json`, an example config, mode 0640, group `postgres`
//!   (in the archive when the group exists on the build machine, and set
//!   again by `postinst` when the group exists on the target), a conffile so
//!   that upgrades keep the user's edits;
//! - `/usr/share/doc/walg/copyright`.
//!
//! What this module does not do: sign the package or make a source package.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};

use crate::infra::pg;

/// The example config the package installs. Every value must be edited, so
/// an untouched file fails `walg check` loudly instead of archiving
/// somewhere unexpected.
pub const EXAMPLE_CONFIG: &str = r#"{
  "WALG_S3_PREFIX": "s3://change-me-bucket/pg",
  "AWS_REGION": "eu-west-1",
  "AWS_ACCESS_KEY_ID": "change-me",
  "AWS_SECRET_ACCESS_KEY": "change-me",
  "WALG_COMPRESSION_METHOD": "lz4"
}
"#;

const POSTINST: &str = r#"#!/bin/sh
# The config holds storage credentials: readable by root and the postgres
# group only (PostgreSQL's archive_command runs as postgres).
set -e
if [ "$1" = configure ] && getent group postgres >/dev/null 2>&1; then
    chgrp postgres /etc/walg/walg.json
    chmod 0640 /etc/walg/walg.json
fi
exit 0
"#;

/// How fast to compress the package: `xz` for releases, `gzip -1` for tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Release,
    Fast,
}

fn run(cmd: &mut Command) -> Result<std::process::Output> {
    pg::run(cmd)
}

fn write_mode(path: &Path, content: &[u8], mode: u32) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(path, content).with_context(|| format!("write {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn gzip_into(src: &Path, dest: &Path) -> Result<()> {
    let out = run(Command::new("gzip").args(["-9", "-n", "-c"]).arg(src))?;
    write_mode(dest, &out.stdout, 0o644)
}

fn group_exists(name: &str) -> bool {
    Command::new("getent")
        .args(["group", name])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The version `walg --version` reports (`walg 0.1.0` -> `0.1.0`).
fn version_of(walg: &Path) -> Result<String> {
    let out = run(Command::new(walg).arg("--version"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .nth(1)
        .map(str::to_string)
        .with_context(|| format!("parse the version out of {text:?}"))
}

/// Builds `walg_<version>_<arch>.deb` from the binary `walg` into `out_dir`
/// and returns its path.
pub fn build_deb(walg: &Path, out_dir: &Path, compression: Compression) -> Result<PathBuf> {
    let version = version_of(walg)?;
    let arch = String::from_utf8(run(Command::new("dpkg").arg("--print-architecture"))?.stdout)?
        .trim()
        .to_string();
    fs::create_dir_all(out_dir)?;
    let stage = tempfile::Builder::new()
        .prefix("walg-deb-")
        .tempdir_in(out_dir)?;
    let root = stage.path().join("root");
    let assets = stage.path().join("assets");

    // The binary, without debug info (a debug build is ten times larger).
    let bin = root.join("usr/bin/walg");
    fs::create_dir_all(bin.parent().context("no parent")?)?;
    run(Command::new("objcopy")
        .arg("--strip-debug")
        .arg(walg)
        .arg(&bin))?;
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755))?;

    // Man pages and completions, from the binary itself.
    run(Command::new(walg).arg("dist-assets").arg(&assets))?;
    let mut pages = 0;
    for entry in fs::read_dir(assets.join("man"))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .context("no name")?
            .to_string_lossy()
            .into_owned();
        gzip_into(&path, &root.join(format!("usr/share/man/man1/{name}.gz")))?;
        pages += 1;
    }
    ensure!(pages > 1, "walg dist-assets wrote {pages} man pages");
    for (from, to) in [
        ("walg.bash", "usr/share/bash-completion/completions/walg"),
        ("_walg", "usr/share/zsh/vendor-completions/_walg"),
        ("walg.fish", "usr/share/fish/vendor_completions.d/walg.fish"),
    ] {
        let content = fs::read(assets.join("completions").join(from))
            .with_context(|| format!("read the generated completion {from}"))?;
        write_mode(&root.join(to), &content, 0o644)?;
    }

    // The example config: root:postgres 0640.
    let config = root.join("etc/walg/walg.json");
    write_mode(&config, EXAMPLE_CONFIG.as_bytes(), 0o640)?;
    fs::set_permissions(root.join("etc/walg"), fs::Permissions::from_mode(0o755))?;
    let as_root = pg::is_root();
    if as_root && group_exists("postgres") {
        run(Command::new("chown").arg("root:postgres").arg(&config))?;
    }
    write_mode(
        &root.join("usr/share/doc/walg/copyright"),
        b"Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
Upstream-Name: walg\nSource: https://github.com/walg-rs/walg\n\n\
Files: *\nLicense: Apache-2.0\n On Debian systems the full text of the Apache License 2.0 is in\n /usr/share/common-licenses/Apache-2.0.\n",
        0o644,
    )?;

    // Control files.
    let installed_kb = String::from_utf8(run(Command::new("du").args(["-sk"]).arg(&root))?.stdout)?
        .split_whitespace()
        .next()
        .unwrap_or("0")
        .to_string();
    let control = format!(
        "Package: walg\nVersion: {version}\nArchitecture: {arch}\nMaintainer: walg developers <https://github.com/walg-rs/walg>\n\
Installed-Size: {installed_kb}\nDepends: libc6\nSuggests: postgresql\nSection: database\nPriority: optional\n\
Homepage: https://github.com/walg-rs/walg\n\
Description: PostgreSQL WAL archiver (archive_command and restore_command)\n \
WAL-G compatible wal-push and wal-fetch over S3, Google Cloud Storage, Azure\n \
Blob and file-system storage, with failover storages. Run `walg check` as the\n \
postgres user before turning archive_mode on.\n"
    );
    let debian = root.join("DEBIAN");
    write_mode(&debian.join("control"), control.as_bytes(), 0o644)?;
    write_mode(&debian.join("conffiles"), b"/etc/walg/walg.json\n", 0o644)?;
    write_mode(&debian.join("postinst"), POSTINST.as_bytes(), 0o755)?;
    // dpkg-deb refuses group-writable control directories (umask 002).
    for dir in walk_dirs(&root)? {
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
    }

    let deb = out_dir.join(format!("walg_{version}_{arch}.deb"));
    let mut cmd = Command::new("dpkg-deb");
    cmd.arg("--build");
    if !as_root {
        // Without root the staged files belong to us; record them as root's
        // (postinst sets the config's group on the target).
        cmd.arg("--root-owner-group");
    }
    match compression {
        Compression::Release => cmd.arg("-Zxz"),
        Compression::Fast => cmd.args(["-Zgzip", "-z1"]),
    };
    cmd.arg(&root).arg(&deb);
    run(&mut cmd).context("dpkg-deb --build")?;
    Ok(deb)
}

fn walk_dirs(root: &Path) -> Result<Vec<PathBuf>> {
    let mut dirs = vec![root.to_path_buf()];
    let mut i = 0;
    while i < dirs.len() {
        for entry in fs::read_dir(&dirs[i])? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                dirs.push(entry.path());
            }
        }
        i += 1;
    }
    Ok(dirs)
}

/// `cargo xtask dist`: release build, package, a summary.
pub fn run_dist(repo: &Path) -> Result<()> {
    if Command::new("dpkg-deb").arg("--version").output().is_err() {
        bail!("dpkg-deb is missing: this task builds a Debian package; run it on Debian or Ubuntu (apt-get install dpkg)");
    }
    println!("building the release binary ...");
    let walg = crate::build_walg(repo, true)?;
    let out = crate::target_dir(repo).join("dist");
    let deb = build_deb(&walg, &out, Compression::Release)?;
    let size = fs::metadata(&deb)?.len();
    let listing = run(Command::new("dpkg-deb").arg("--contents").arg(&deb))?;
    println!("{}", String::from_utf8_lossy(&listing.stdout));
    println!(
        "package: {} ({:.1} MiB; binary {:.1} MiB)",
        deb.display(),
        size as f64 / 1048576.0,
        fs::metadata(&walg)?.len() as f64 / 1048576.0
    );
    println!("install: apt-get install {}", deb.display());
    Ok(())
}
