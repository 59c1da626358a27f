//! `cargo xtask bench memory`: the peak resident memory of one `wal-push`
//! and one `wal-fetch` of a 16 MiB and of a 256 MiB segment with the
//! release build, every codec with and without libsodium, on file storage
//! and over each emulator, as one table per size; then one push with an
//! upload-ahead backlog of sixteen 16 MiB segments on file storage and S3.
//!
//! It runs the cases of [`crate::e2e::memory`] (the same segment of hex
//! text, the same GNU time accounting) with a release binary and reports
//! them; the bound itself is asserted by `cargo xtask e2e memory` on the
//! debug build `cargo xtask test` uses. Written to
//! `target/bench/memory.md`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;

use anyhow::Result;

use crate::e2e::fixture::{emulator_settings, file_settings};
use crate::e2e::memory::{matrix, upload_ahead_backlog, Peak, CODECS};
use crate::infra::emulators::{self, Emulators, Kind};
use crate::infra::pg::Workdir;
use crate::{build_walg, repo_root, target_dir};

/// Segment sizes measured, MiB.
const SIZES: [u64; 2] = [16, 256];

/// `cargo xtask bench memory`.
pub fn run() -> Result<()> {
    let repo = repo_root();
    emulators::install(&repo)?;
    println!("bench memory: building walg (release) ...");
    let built = build_walg(&repo, true)?;
    let emus = Emulators::start(&repo, &Kind::ALL)?;
    let mut out = String::from(
        "# Peak RSS of one call (MiB, push / fetch), release build\n\n\
         A segment of random hex text with a zeroed tail on every page; \
         GNU time's `%M`.\n",
    );
    for size in SIZES {
        let mut columns: Vec<(String, Vec<Peak>)> = Vec::new();
        let work = Workdir::new(&format!("bench-mem-{size}"))?;
        let archive = work.owned_dir("archive")?;
        println!("bench memory: {size} MiB on file storage ...");
        columns.push((
            "file".into(),
            matrix(&built, &work, &file_settings(&archive), &CODECS, size)?,
        ));
        for kind in Kind::ALL {
            println!("bench memory: {size} MiB on {} ...", kind.name());
            let settings =
                emulator_settings(&emus, kind, &format!("bench-mem/{}/{size}", kind.name()))?;
            columns.push((
                kind.name().to_string(),
                matrix(&built, &work, &settings, &CODECS, size)?,
            ));
        }
        out.push_str(&table(size, &columns));
    }
    println!("bench memory: upload-ahead backlog ...");
    upload_ahead_backlog(&built, &emus)?;
    print!("{out}");
    let dir = target_dir(&repo).join("bench");
    fs::create_dir_all(&dir)?;
    let path = dir.join("memory.md");
    fs::write(&path, &out)?;
    println!("bench memory: written to {}", path.display());
    Ok(())
}

/// One markdown table: a row per case, a column per storage, each cell
/// `push / fetch`.
fn table(size: u64, columns: &[(String, Vec<Peak>)]) -> String {
    let mut rows: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (i, (_, peaks)) in columns.iter().enumerate() {
        for p in peaks {
            let Some((op, case)) = p.what.split_once(' ') else {
                continue;
            };
            let case = case.trim_start_matches(&format!("{size} MiB ")).to_string();
            let cells = rows
                .entry(case)
                .or_insert_with(|| vec![String::new(); columns.len()]);
            let mib = format!("{:.1}", p.kib as f64 / 1024.0);
            let cell = &mut cells[i];
            if op == "wal-push" {
                *cell = format!("{mib}{}", cell.trim_start_matches(' '));
            } else {
                let _ = write!(cell, " / {mib}");
            }
        }
    }
    let mut s = format!(
        "\n## {size} MiB segment\n\n| | {} |\n|---|{}\n",
        columns
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(" | "),
        "---:|".repeat(columns.len())
    );
    for (case, cells) in rows {
        let _ = writeln!(s, "| {case} | {} |", cells.join(" | "));
    }
    s
}
