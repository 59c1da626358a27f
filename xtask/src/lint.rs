//! The lint pass `cargo xtask test` starts with: `cargo fmt --all -- --check`
//! and `cargo clippy --workspace --all-targets -- -D warnings`, so a
//! formatting slip or a lint fails in the first minutes, not after the
//! end-to-end scenarios.
//!
//! It changes no file (no `cargo fmt` without `--check`, no `clippy --fix`):
//! it stops at the first failing step, says what to run to fix it, and
//! prints how long it took. `XTASK_SKIP_LINT=1` skips it for local
//! iteration; under `CI=true` that variable is refused, so CI always lints.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::infra::setup;

/// One step: what it runs, and what to do when it fails.
struct Step {
    args: &'static [&'static str],
    fix: &'static str,
}

const STEPS: [Step; 2] = [
    Step {
        args: &["fmt", "--all", "--", "--check"],
        fix: "the diff above is what `cargo fmt --all` would change: run it and commit the result",
    },
    Step {
        args: &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        fix: "fix the warnings above (the same command shows them again)",
    },
];

/// Whether `XTASK_SKIP_LINT` asks to skip the lint pass.
fn skip_requested() -> bool {
    std::env::var("XTASK_SKIP_LINT").is_ok_and(|v| !v.is_empty() && v != "0")
}

fn on_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Runs the lint pass in `repo`, failing at the first step that fails.
pub fn run(repo: &Path) -> Result<()> {
    if skip_requested() {
        if on_ci() {
            bail!(
                "XTASK_SKIP_LINT is set under CI=true: it is for local iteration only; \
                 unset it so CI runs cargo fmt --check and cargo clippy"
            );
        }
        println!("lint: skipped (XTASK_SKIP_LINT is set; CI never skips it)");
        return Ok(());
    }
    setup::rust_components(repo)?;
    let started = Instant::now();
    for step in &STEPS {
        let shown = format!("cargo {}", step.args.join(" "));
        println!("lint: {shown} ...");
        let t = Instant::now();
        let status = crate::cargo(repo)
            .args(step.args)
            .status()
            .with_context(|| format!("run {shown}"))?;
        let secs = t.elapsed().as_secs_f64();
        if !status.success() {
            bail!(
                "lint: `{shown}` failed after {secs:.1}s: {} \
                 (XTASK_SKIP_LINT=1 skips the lint pass while iterating locally)",
                step.fix
            );
        }
        println!("lint: {shown} ok ({secs:.1}s)");
    }
    println!(
        "lint: fmt and clippy clean in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
