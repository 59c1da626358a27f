//! Installs what the tasks need on a fresh machine: the rustfmt and clippy
//! components (the lint pass), PostgreSQL server binaries (Debian's, and
//! every other major version of the matrix through
//! [`crate::infra::pg_versions::install`]), the lz4 and zstd tools
//! (interoperability checks) and the other Debian packages the scenarios
//! use; the emulators through [`crate::infra::emulators::install`].
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
/// gpg, dosfstools (mkfs.vfat) and openssl.
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
        // Certificates for the https emulators (Azurite with OAuth in the
        // identity scenarios, the bench's S3).
        ("openssl", "openssl"),
    ] {
        if !have(command) {
            missing.push(package);
        }
    }
    apt(&missing)?;
    pg::bindir()?;
    pg::ensure_postgres_user()
}

/// rustfmt and clippy, which the lint pass of `cargo xtask test` runs:
/// added with rustup when `rustup component list --installed` lacks them.
/// Without rustup (a distribution's cargo) they must already be there.
pub fn rust_components(repo: &Path) -> Result<()> {
    let listed = Command::new("rustup")
        .args(["component", "list", "--installed"])
        .current_dir(repo)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    let Some(listed) = listed else {
        for (sub, component) in [("fmt", "rustfmt"), ("clippy", "clippy")] {
            let there = crate::cargo(repo)
                .args([sub, "--version"])
                .output()
                .is_ok_and(|o| o.status.success());
            if !there {
                bail!(
                    "`cargo {sub}` is missing and rustup is not available to add it: \
                     install {component} (`rustup component add {component}`, or the \
                     distribution's {component} package)"
                );
            }
        }
        return Ok(());
    };
    let missing = missing_components(&listed);
    if missing.is_empty() {
        return Ok(());
    }
    println!("installing the Rust components {} ...", missing.join(" "));
    let added = Command::new("rustup")
        .args(["component", "add"])
        .args(&missing)
        .current_dir(repo)
        .status()
        .is_ok_and(|s| s.success());
    if !added {
        bail!(
            "rustup component add {} failed: the lint pass needs them",
            missing.join(" ")
        );
    }
    Ok(())
}

/// Which of rustfmt and clippy `rustup component list --installed` lacks
/// (its lines look like `clippy-x86_64-unknown-linux-gnu`).
fn missing_components(listed: &str) -> Vec<&'static str> {
    ["rustfmt", "clippy"]
        .into_iter()
        .filter(|c| {
            !listed
                .lines()
                .any(|l| l.trim() == *c || l.trim().starts_with(&format!("{c}-")))
        })
        .collect()
}

/// The servers of the other major versions. Under `CI=true` a failed
/// install fails setup; elsewhere (a machine without the registry, say) it
/// is a warning, and the version scenarios fail naming what is missing.
pub fn postgres_versions(repo: &Path) -> Result<()> {
    match crate::infra::pg_versions::install(repo) {
        Ok(()) => Ok(()),
        Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!(
                "warning: {e:#}\nwarning: the version_* scenarios will fail until it is installed"
            );
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Everything the test suite needs.
pub fn all(repo: &Path) -> Result<()> {
    rust_components(repo)?;
    postgres()?;
    postgres_versions(repo)?;
    crate::infra::emulators::install(repo)
}

#[cfg(test)]
mod tests {
    use super::missing_components;

    fn check(listed: &str, expected: &[&str]) {
        assert_eq!(missing_components(listed), expected, "{listed:?}");
    }

    #[test]
    fn missing_components_reads_rustup_lines() {
        let host = "x86_64-unknown-linux-gnu";
        check(
            &format!("cargo-{host}\nclippy-{host}\nrustc-{host}\nrustfmt-{host}\n"),
            &[],
        );
        check(
            &format!("cargo-{host}\nrustc-{host}\n"),
            &["rustfmt", "clippy"],
        );
        check(&format!("cargo-{host}\nrustfmt-{host}\n"), &["clippy"]);
        // A name that merely starts like a wanted one does not count.
        check("clippyish\nrustfmt\n", &["clippy"]);
        check("", &["rustfmt", "clippy"]);
    }
}
