//! Installs what the tasks need on a fresh machine: PostgreSQL server
//! binaries, the lz4 and zstd tools (interoperability checks) and the other
//! Debian packages the scenarios use; the emulators through
//! [`crate::infra::emulators::install`].
//! Idempotent: nothing is installed twice.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Result};

use crate::infra::pg;

/// Whether `cmd` is on the PATH.
pub fn have(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd} >/dev/null 2>&1"))
        .status()
        .is_ok_and(|s| s.success())
}

/// Installs Debian packages (only when something is missing).
pub fn apt(packages: &[&str]) -> Result<()> {
    if packages.is_empty() {
        return Ok(());
    }
    if !pg::is_root() {
        bail!(
            "missing packages {packages:?}: install them (apt-get install {})",
            packages.join(" ")
        );
    }
    println!("installing {} ...", packages.join(" "));
    let env = [("DEBIAN_FRONTEND", "noninteractive")];
    let ok = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .envs(env)
            .status()
            .is_ok_and(|s| s.success())
    };
    let install: Vec<&str> = ["install", "-y", "-q", "--no-install-recommends"]
        .into_iter()
        .chain(packages.iter().copied())
        .collect();
    // The package lists may be stale or absent on a fresh machine: update
    // them only when an install fails.
    if !ok(&install) {
        if !ok(&["update", "-q"]) {
            bail!("apt-get update failed");
        }
        if !ok(&install) {
            bail!("apt-get install {} failed", packages.join(" "));
        }
    }
    Ok(())
}

/// PostgreSQL server binaries, the postgres OS user, lz4, zstd, GNU time,
/// gpg and dosfstools (mkfs.vfat).
pub fn postgres() -> Result<()> {
    let mut missing = Vec::new();
    if pg::bindir().is_err() {
        missing.push("postgresql");
    }
    // Peak memory of a child (`/usr/bin/time -f %M`) in the memory tests.
    if !Path::new("/usr/bin/time").is_file() {
        missing.push("time");
    }
    for (command, package) in [
        ("psql", "postgresql-client"),
        ("lz4", "lz4"),
        ("zstd", "zstd"),
        // gpg checks walg's OpenPGP objects and makes foreign ones.
        ("gpg", "gnupg"),
        // A file system without hard links for the create-if-absent test.
        ("mkfs.vfat", "dosfstools"),
        // Mounts the vfat image where the kernel has no vfat driver.
        ("fusefat", "fusefat"),
    ] {
        if !have(command) {
            missing.push(package);
        }
    }
    apt(&missing)?;
    pg::bindir()?;
    pg::ensure_postgres_user()
}

/// Everything the test suite needs.
pub fn all(repo: &Path) -> Result<()> {
    postgres()?;
    crate::infra::emulators::install(repo)
}
