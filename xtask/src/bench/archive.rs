//! `cargo xtask bench verify`: how long `wal-verify` and `wal-show` take
//! over a large file-storage archive (100,000 segments, and one million
//! objects unless `WALG_BENCH_VERIFY_MILLION=0`), with empty objects: the
//! cost measured is listing and planning, not downloading.
//!
//! The archive has one `.backup` file at the first segment, so `wal-verify`
//! walks the whole range. Figures: wall time and peak RSS of the release
//! binary (`/usr/bin/time`).

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};

use crate::infra::pg::Workdir;
use crate::infra::setup;
use crate::{build_walg, repo_root};

/// Creates `count` empty segments of timeline 1 (16 MiB numbering) from
/// segment 1, and one `.backup` file.
fn make_archive(root: &Path, count: u64) -> Result<()> {
    let dir = root.join("wal_005");
    fs::create_dir_all(&dir)?;
    for n in 1..=count {
        let name = format!("00000001{:08X}{:08X}.lz4", n / 256, n % 256);
        fs::File::create(dir.join(name))?;
    }
    fs::File::create(dir.join("000000010000000000000001.00000028.backup.lz4"))?;
    Ok(())
}

struct Measured {
    secs: f64,
    max_rss_kib: u64,
    stdout: String,
    code: i32,
}

fn measure(walg: &Path, config: &Path, args: &[&str]) -> Result<Measured> {
    let started = Instant::now();
    let out = Command::new("/usr/bin/time")
        .args(["-f", "%M"])
        .arg(walg)
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .context("run /usr/bin/time walg")?;
    let secs = started.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let max_rss_kib = stderr
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0);
    Ok(Measured {
        secs,
        max_rss_kib,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        code: out.status.code().unwrap_or(-1),
    })
}

pub fn run() -> Result<()> {
    let repo = repo_root();
    if !Path::new("/usr/bin/time").is_file() {
        setup::apt(&["time"])?;
    }
    println!("bench verify: building walg (release) ...");
    let built = build_walg(&repo, true)?;
    let work = Workdir::new("bench-verify")?;
    let walg = work.install_walg(&built)?;
    let mut sizes = vec![100_000u64];
    if std::env::var("WALG_BENCH_VERIFY_MILLION").as_deref() != Ok("0") {
        sizes.push(1_000_000);
    }
    println!(
        "{:>10} {:>10} {:>12} {:>12} {:>12} {:>12}",
        "SEGMENTS", "CREATE S", "VERIFY S", "VERIFY RSS", "SHOW S", "SHOW RSS"
    );
    for count in sizes {
        let root = work.path.join(format!("archive-{count}"));
        let t = Instant::now();
        make_archive(&root, count)?;
        let create = t.elapsed().as_secs_f64();
        let settings = crate::e2e::fixture::file_settings(&root);
        let config = work.write_config(&format!("walg-{count}.json"), &settings)?;
        let v = measure(&walg, &config, &["wal-verify", "--json"])?;
        if v.code != 0 {
            bail!(
                "wal-verify exited {} over {count} segments:\n{}",
                v.code,
                v.stdout
            );
        }
        let report: serde_json::Value = serde_json::from_str(&v.stdout)?;
        ensure!(
            report["segments_checked"] == count && report["status"] == "OK",
            "wal-verify did not check {count} segments: {report:#}"
        );
        let s = measure(&walg, &config, &["wal-show", "--json"])?;
        ensure!(s.code == 0, "wal-show exited {}", s.code);
        println!(
            "{:>10} {:>10.1} {:>12.2} {:>9} MiB {:>12.2} {:>9} MiB",
            count,
            create,
            v.secs,
            v.max_rss_kib / 1024,
            s.secs,
            s.max_rss_kib / 1024
        );
        fs::remove_dir_all(&root).ok();
    }
    Ok(())
}
