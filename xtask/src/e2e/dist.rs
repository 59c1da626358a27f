//! The Debian package as a DBA would use it: build it (from the debug binary,
//! to keep CI fast; `cargo xtask dist` uses the release one), unpack it into
//! a scratch root with `dpkg-deb -x`, and run the installed binary:
//! `--version`, then `walg check` against a real PostgreSQL archiving through
//! that binary to a file storage, once healthy (exit 0) and once with the
//! storage made unwritable (a clear error, exit 1).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};

use super::fixture::{archiving_cluster, Walg};
use crate::infra::dist::{build_deb, Compression};
use crate::infra::pg::{self, Cluster, Workdir};

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `walg check` run as the server's user, connecting like `psql` would.
fn check(walg: &Path, config: &Path, cluster: &Cluster, json: bool) -> Result<Output> {
    let mut cmd = pg::as_postgres(walg);
    cmd.arg("--config").arg(config).arg("check");
    if json {
        cmd.arg("--json");
    }
    cmd.env("PGHOST", &cluster.dir)
        .env("PGPORT", cluster.port.to_string())
        .env("PGUSER", "postgres")
        .env("PGDATABASE", "postgres")
        .env_remove("WALG_CONFIG_PATH");
    cmd.output().context("run the installed walg check")
}

pub fn package_install(built: &Path) -> Result<()> {
    let work = Workdir::new("deb")?;
    let deb = build_deb(built, &work.path.join("dist"), Compression::Fast)?;
    let size = fs::metadata(&deb)?.len();
    println!(
        "  package {} ({:.1} MiB, debug build without debug info)",
        deb.display(),
        size as f64 / 1048576.0
    );

    // What the package holds, with the config's owner and mode.
    let listing = pg::run(Command::new("dpkg-deb").arg("--contents").arg(&deb))?;
    let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
    for want in [
        "./usr/bin/walg",
        "./usr/share/man/man1/walg.1.gz",
        "./usr/share/man/man1/walg-check.1.gz",
        "./usr/share/bash-completion/completions/walg",
        "./usr/share/zsh/vendor-completions/_walg",
        "./usr/share/fish/vendor_completions.d/walg.fish",
        "./etc/walg/walg.json",
    ] {
        ensure!(
            listing.contains(want),
            "the package lacks {want}:\n{listing}"
        );
    }
    let config_line = listing
        .lines()
        .find(|l| l.ends_with("./etc/walg/walg.json"))
        .context("no config line")?;
    ensure!(
        config_line.starts_with("-rw-r----- root/postgres"),
        "/etc/walg/walg.json should be root/postgres 0640 in the package: {config_line}"
    );
    let control = pg::run(Command::new("dpkg-deb").arg("--info").arg(&deb))?;
    let control = String::from_utf8_lossy(&control.stdout).into_owned();
    ensure!(
        control.contains("conffiles") && control.contains("postinst"),
        "control files: {control}"
    );

    // Install into a scratch root.
    let root = work.path.join("root");
    pg::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
    // dpkg-deb -x leaves the top directory with the staging mode; the server's
    // user must be able to reach the binary.
    fs::set_permissions(&root, fs::Permissions::from_mode(0o755))?;
    let walg = root.join("usr/bin/walg");
    let out = pg::run(Command::new(&walg).arg("--version"))?;
    let version = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        version.starts_with("walg "),
        "--version printed {version:?}"
    );
    let man = pg::run(Command::new("sh").arg("-c").arg(format!(
        "gzip -dc {} | head -c 4096",
        root.join("usr/share/man/man1/walg.1.gz").display()
    )))?;
    ensure!(
        String::from_utf8_lossy(&man.stdout).contains(".TH walg"),
        "walg.1 is not a man page"
    );

    // The DBA edits the installed example: a file storage.
    let archive = work.owned_dir("archive")?;
    let state = work.owned_dir("state")?;
    fs::set_permissions(&state, fs::Permissions::from_mode(0o700))?;
    let config = root.join("etc/walg/walg.json");
    let settings = json!({
        "WALG_FILE_PREFIX": archive.display().to_string(),
        "WALG_FAILOVER_STORAGES_CACHE_FILE": state.join("storage_status.json").display().to_string(),
    });
    fs::write(&config, serde_json::to_vec_pretty(&settings)?)?;
    fs::set_permissions(&config, fs::Permissions::from_mode(0o640))?;
    if pg::is_root() {
        pg::run(Command::new("chgrp").arg("postgres").arg(&config))?;
    }

    let installed = Walg {
        bin: walg.clone(),
        config: config.clone(),
    };
    let mut cluster = archiving_cluster(&work, &installed, "pg", "", &["--wal-segsize=1"])?;
    // The installed binary archives for real.
    cluster.sql("create table t as select generate_series(1, 1000) as i")?;
    cluster
        .switch_and_wait_archived(Duration::from_secs(60))
        .with_context(|| {
            format!(
                "archiving through the installed walg\n{}",
                pg::tail(&cluster.log_text(), 20)
            )
        })?;

    // Healthy: exit 0, and the first line says so.
    let out = check(&walg, &config, &cluster, false)?;
    println!("{}", String::from_utf8_lossy(&out.stdout).trim_end());
    ensure!(
        out.status.code() == Some(0),
        "walg check on a healthy setup:\n{}",
        text(&out)
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        stdout.starts_with("walg check: all is well"),
        "{}",
        text(&out)
    );
    for line in [
        "storage default",
        "status cache",
        "archiving",
        "archive_command",
    ] {
        ensure!(
            stdout
                .lines()
                .any(|l| l.starts_with("ok") && l.contains(line)),
            "no ok line for {line}:\n{stdout}"
        );
    }
    let out = check(&walg, &config, &cluster, true)?;
    let report: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("walg check --json output is not JSON:\n{}", text(&out)))?;
    ensure!(report["status"] == "ok", "json status: {report}");
    ensure!(
        report["checks"].as_array().is_some_and(|c| c.len() >= 6),
        "json checks: {report}"
    );

    // Unwritable storage: a clear error and a non-zero exit.
    // Every directory of it: the probe writes below the top one.
    pg::run(Command::new("chmod").args(["-R", "a-w"]).arg(&archive))?;
    let out = check(&walg, &config, &cluster, false);
    pg::run(Command::new("chmod").args(["-R", "u+w"]).arg(&archive))?;
    let out = out?;
    println!("{}", String::from_utf8_lossy(&out.stdout).trim_end());
    ensure!(
        out.status.code() == Some(1),
        "walg check with an unwritable storage:\n{}",
        text(&out)
    );
    let first = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    ensure!(
        first.starts_with("walg check: FAILED: storage default")
            && first.contains(&archive.display().to_string())
            && first.to_lowercase().contains("permission denied"),
        "the first line should name the storage, its directory and the cause:\n{}",
        text(&out)
    );

    // A server whose archive_command reads another config is caught.
    let other = work.path.join("other.json");
    fs::write(&other, serde_json::to_vec_pretty(&settings)?)?;
    fs::set_permissions(&other, fs::Permissions::from_mode(0o644))?;
    let out = check(&walg, &other, &cluster, false)?;
    ensure!(
        out.status.code() == Some(1)
            && String::from_utf8_lossy(&out.stdout).contains("archive_command"),
        "a config mismatch should fail on archive_command:\n{}",
        text(&out)
    );
    cluster.stop()?;
    Ok(())
}
