//! End-to-end scenarios: a real PostgreSQL archiving through the real `walg`
//! binary to real storages (a file system, the S3, GCS and Azure emulators),
//! recovering through it, and walg's commands checked from outside.
//!
//! The contract: every scenario is a function of the built binary (and the
//! emulators or the repository when it needs them) that sets up, acts, and
//! asserts, returning `Err` with enough context (server log tails, walg
//! output) to diagnose a failure without rerunning it. Scenarios share
//! [`fixture`], never each other's code; each makes its own work directory,
//! clusters on free ports and bucket paths, so any two run side by side.
//! A scenario whose prerequisite is missing fails; none passes by skipping.
//!
//! [`scenarios`] is the table `cargo xtask e2e [FILTER]` runs (a scenario
//! runs when its name contains FILTER); [`run_tests`] runs them two at a
//! time. One file per area:
//!
//! - [`wal`]: archive and recover on every storage, the CLI contract,
//!   upload-ahead, prefetch, keeping up under load;
//! - [`storage`]: storage errors, the `walg st` commands, per-backend
//!   timings;
//! - [`failover`]: failover storages under a pgbench load and outages;
//! - [`drain`]: WAL spilled during an outage drains back to the primary;
//! - [`hardening`]: what a DBA eventually hits (SIGKILL, an unopenable
//!   storage, two clusters on one archive, a file system without links);
//! - [`status`]: `walg wal-status`, one cluster per cause of a growing pg_wal,
//!   and the false alarms of a healthy cluster on several versions;
//! - [`versions`]: the version matrix, every PostgreSQL major from 13 to 18
//!   archived, restored and diagnosed;
//! - [`archive`]: `wal-verify`, `wal-repair`, `wal-prune`, `wal-show`;
//! - [`crypto`] and [`pgp`]: libsodium and OpenPGP against other
//!   implementations;
//! - [`memory`]: peak memory of large segments;
//! - [`gaps`]: the declared pg_wal budget, segments given up on purpose;
//! - [`dist`]: the Debian package installed and checked;
//! - [`identity`]: cloud storage without keys, every credential source of
//!   every backend against fake identity services.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Result};

use crate::infra::emulators::{Emulators, Kind};

pub mod archive;
pub mod crypto;
pub mod dist;
pub mod drain;
pub mod failover;
pub mod fixture;
pub mod gaps;
pub mod hardening;
pub mod identity;
pub mod memory;
pub mod pgp;
pub mod status;
pub mod storage;
pub mod versions;
pub mod wal;

/// What a scenario may use: the built `walg`, the running emulators and
/// the repository root.
#[derive(Debug, Clone)]
pub struct Env {
    pub walg: PathBuf,
    pub emus: Arc<Emulators>,
    pub repo: PathBuf,
}

/// One end-to-end scenario.
pub type Scenario = fn(&Env) -> Result<()>;

/// Every scenario, by name, in the order they start (after [`LONG`]).
pub fn scenarios() -> Vec<(&'static str, Scenario)> {
    vec![
        ("file_archive_and_recover", |e| {
            wal::file_round_trip(&e.walg)
        }),
        ("cli_contract", |e| wal::cli_contract(&e.walg)),
        ("package_install", |e| dist::package_install(&e.walg)),
        ("storage_commands", |e| storage::storage_commands(&e.walg)),
        // Issue 22: credentials from workload identities.
        ("identity_s3_sources", identity::s3_sources),
        ("identity_s3_broken", identity::s3_broken),
        ("identity_refresh", identity::refresh),
        ("identity_failover_own", identity::failover_own_identity),
        ("identity_gcs_sources", identity::gcs_sources),
        ("identity_azure_sources", identity::azure_sources),
        ("upload_ahead", |e| wal::upload_ahead(&e.walg)),
        ("prefetch", |e| wal::prefetch(&e.walg)),
        ("archive_keeps_up", |e| {
            wal::archive_keeps_up(&e.walg).map(|_| ())
        }),
        // wal-status: one real cluster per cause of a growing pg_wal.
        ("status_healthy", |e| status::healthy(&e.walg)),
        ("status_failing", |e| status::failing(&e.walg)),
        ("status_stuck_on_one", |e| status::stuck_on_one(&e.walg)),
        ("status_slow", |e| status::slow(&e.walg)),
        ("status_not_configured", |e| status::not_configured(&e.walg)),
        ("status_inactive_slot", |e| status::inactive_slot(&e.walg)),
        ("status_logical_slot", |e| {
            status::logical_slot_pinned(&e.walg)
        }),
        ("status_invalidated_slot", |e| {
            status::invalidated_slot_archiver_binds(&e.walg)
        }),
        ("status_wal_keep_size", |e| status::wal_keep_size(&e.walg)),
        ("status_standby_always", |e| status::standby_always(&e.walg)),
        // Issue 20's false alarms: a new cluster after a checkpoint on
        // every version, the external archiver on 15, 16 and 17.
        ("status_after_checkpoint_13", |e| {
            status::after_checkpoint(e, 13)
        }),
        ("status_after_checkpoint_14", |e| {
            status::after_checkpoint(e, 14)
        }),
        ("status_after_checkpoint_15", |e| {
            status::after_checkpoint(e, 15)
        }),
        ("status_after_checkpoint_16", |e| {
            status::after_checkpoint(e, 16)
        }),
        ("status_after_checkpoint_17", |e| {
            status::after_checkpoint(e, 17)
        }),
        ("status_after_checkpoint_18", |e| {
            status::after_checkpoint(e, 18)
        }),
        ("status_external_archiver_15", |e| {
            status::external_archiver(e, 15)
        }),
        ("status_external_archiver_16", |e| {
            status::external_archiver(e, 16)
        }),
        ("status_external_archiver_17", |e| {
            status::external_archiver(e, 17)
        }),
        // The version matrix (issue 20): one function, one row per server
        // (the system's 15 and every version pg_versions installs).
        ("version_13", |e| versions::matrix(e, 13)),
        ("version_14", |e| versions::matrix(e, 14)),
        ("version_15", |e| versions::matrix(e, 15)),
        ("version_16", |e| versions::matrix(e, 16)),
        ("version_17", |e| versions::matrix(e, 17)),
        ("version_18", |e| versions::matrix(e, 18)),
        ("s3_archive_and_recover", |e| {
            wal::emulator_round_trip(&e.walg, &e.emus, Kind::S3)
        }),
        ("gcs_archive_and_recover", |e| {
            wal::emulator_round_trip(&e.walg, &e.emus, Kind::Gcs)
        }),
        ("azure_archive_and_recover", |e| {
            wal::emulator_round_trip(&e.walg, &e.emus, Kind::Azure)
        }),
        ("storage_timings", |e| {
            storage::storage_timings(&e.walg, &e.emus).map(|_| ())
        }),
        ("storage_errors", |e| {
            storage::storage_errors(&e.walg, &e.emus)
        }),
        ("failover", |e| failover::run(&e.walg, &e.emus)),
        // Issue 21: WAL spilled during an outage drains back by itself.
        ("failover_drain_back", |e| {
            drain::failover_drain_back(&e.walg, &e.emus)
        }),
        // Large segments (issue 14): 64 MiB segments archived and restored
        // over the S3 and GCS emulators.
        ("s3_segsize_64_archive_and_recover", |e| {
            wal::emulator_round_trip_64(&e.walg, &e.emus, Kind::S3)
        }),
        ("gcs_segsize_64_archive_and_recover", |e| {
            wal::emulator_round_trip_64(&e.walg, &e.emus, Kind::Gcs)
        }),
        ("libsodium_interop", |e| {
            crypto::libsodium_interop(&e.walg, &e.repo)
        }),
        ("encryption_bad_input", |e| crypto::bad_input(&e.walg)),
        ("libsodium_failover_rotation", |e| {
            crypto::failover_rotation(&e.walg, &e.repo)
        }),
        ("archive_health_verify_repair", |e| {
            archive::verify_repair(&e.walg, &e.emus)
        }),
        ("archive_health_prune", |e| archive::prune(&e.walg, &e.emus)),
        ("unopenable_primary", |e| {
            hardening::unopenable_primary(&e.walg)
        }),
        ("archive_identity", |e| hardening::archive_identity(&e.walg)),
        ("status_cache_processes", |e| {
            hardening::status_cache_processes(&e.walg)
        }),
        ("no_hardlink_filesystem", |e| {
            hardening::no_hardlink_filesystem(&e.walg)
        }),
        ("st_clean", |e| storage::st_clean(&e.walg, &e.emus)),
        ("sigkill_archiving", |e| {
            hardening::sigkill_archiving(&e.walg).map(|_| ())
        }),
        // Bounded memory (issues 14 and 23): every codec, with and without
        // libsodium, a 1 GiB segment on file storage and a 256 MiB one over
        // each emulator (four times the bound, so a store that buffered the
        // object fails; the emulators keep every byte in their own memory,
        // and 1 GiB through them takes minutes).
        ("file_segment_memory", |e| memory::file_matrix(&e.walg)),
        ("upload_ahead_memory", |e| {
            memory::upload_ahead_backlog(&e.walg, &e.emus)
        }),
        ("s3_segment_memory", |e| {
            memory::emulator_matrix(&e.walg, &e.emus, Kind::S3)
        }),
        ("gcs_segment_memory", |e| {
            memory::emulator_matrix(&e.walg, &e.emus, Kind::Gcs)
        }),
        ("azure_segment_memory", |e| {
            memory::emulator_matrix(&e.walg, &e.emus, Kind::Azure)
        }),
        ("openpgp_gpg", |e| pgp::openpgp_gpg(&e.walg)),
        // Issue 21: every storage fails, pg_wal on a small file system
        // with WALG_PG_WAL_BUDGET: segments given up on purpose, reported
        // everywhere, a restore stops at the gap with walg's message.
        ("pg_wal_budget_gap", |e| gaps::pg_wal_budget_gap(&e.walg)),
    ]
}

/// The longest scenarios, started first so the two threads finish together.
pub const LONG: &[&str] = &[
    "sigkill_archiving",
    "failover",
    "archive_keeps_up",
    "archive_health_prune",
];

/// The scenarios whose name contains `filter` (all without one), the
/// [`LONG`] ones first.
pub fn select(filter: Option<&str>) -> Vec<(&'static str, Scenario)> {
    let mut tests = scenarios();
    tests.sort_by_key(|(name, _)| LONG.iter().position(|l| l == name).unwrap_or(LONG.len()));
    if let Some(f) = filter {
        tests.retain(|(name, _)| name.contains(f));
    }
    tests
}

/// How one scenario ended.
#[derive(Debug)]
struct Outcome {
    name: &'static str,
    result: Result<()>,
}

/// Runs scenarios on `XTASK_E2E_JOBS` threads (default 2: scenarios spend
/// most of their time waiting on PostgreSQL and storages, and use free
/// ports, so two at a time halve the wall time on two cores) and prints a
/// summary line CI can read.
pub fn run_tests(env: &Env, tests: &[(&'static str, Scenario)]) -> Result<()> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    let jobs = std::env::var("XTASK_E2E_JOBS")
        .ok()
        .and_then(|j| j.parse::<usize>().ok())
        .filter(|j| *j > 0)
        .unwrap_or(2);
    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Outcome>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(tests.len().max(1)) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some((name, test)) = tests.get(i) else {
                    break;
                };
                let start = Instant::now();
                println!("e2e {name} ...");
                let result = test(env);
                let secs = start.elapsed().as_secs_f64();
                match &result {
                    Ok(()) => println!("e2e {name} ... ok ({secs:.1}s)"),
                    Err(e) => println!("e2e {name} ... FAILED ({secs:.1}s)\n{e:#}"),
                }
                if let Ok(mut v) = results.lock() {
                    v.push(Outcome { name, result });
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_default();
    let failed: Vec<&str> = results
        .iter()
        .filter(|o| o.result.is_err())
        .map(|o| o.name)
        .collect();
    println!(
        "\ne2e: {} passed, {} failed, {:.0}s on {jobs} threads",
        results.len() - failed.len(),
        failed.len(),
        started.elapsed().as_secs_f64()
    );
    if !failed.is_empty() {
        bail!("end-to-end tests failed: {}", failed.join(", "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_names_are_unique_and_the_long_ones_exist() {
        let names: Vec<&str> = scenarios().iter().map(|(n, _)| *n).collect();
        let unique: std::collections::BTreeSet<&str> = names.iter().copied().collect();
        assert_eq!(unique.len(), names.len(), "a scenario name repeats");
        for long in LONG {
            assert!(
                names.contains(long),
                "LONG names {long}, no scenario has it"
            );
        }
    }

    #[test]
    fn every_server_has_its_version_scenario() {
        let names: Vec<&str> = scenarios().iter().map(|(n, _)| *n).collect();
        // The installed servers and the system's 15.
        let majors: Vec<u32> = crate::infra::pg_versions::PINNED
            .iter()
            .map(|(m, _)| *m)
            .chain([15])
            .collect();
        for major in &majors {
            let name = format!("version_{major}");
            assert!(names.contains(&name.as_str()), "no scenario {name}");
        }
        let rows = names.iter().filter(|n| n.starts_with("version_")).count();
        assert_eq!(rows, majors.len(), "{names:?}");
    }

    fn check(filter: Option<&str>, expected_first: &[&str], expected_len: usize) {
        let got: Vec<&str> = select(filter).iter().map(|(n, _)| *n).collect();
        assert_eq!(got.len(), expected_len, "{filter:?}: {got:?}");
        assert_eq!(&got[..expected_first.len()], expected_first, "{filter:?}");
    }

    #[test]
    fn select_starts_the_long_ones_first_and_filters_by_substring() {
        check(None, LONG, scenarios().len());
        check(Some("cli_contract"), &["cli_contract"], 1);
        // The ten wal-status causes, the nine false alarms, and the status
        // cache scenario.
        check(Some("status_"), &["status_healthy", "status_failing"], 20);
        check(Some("version_"), &["version_13", "version_14"], 6);
        check(
            Some("archive_"),
            &["archive_keeps_up", "archive_health_prune"],
            10,
        );
        check(Some("no such scenario"), &[], 0);
    }
}
