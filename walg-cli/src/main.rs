//! `walg`: PostgreSQL's archive_command and restore_command, WAL-G compatible.
//!
//! This binary is thin: it parses flags and settings, installs the tracing
//! subscriber (stderr, which PostgreSQL copies into its log), opens the
//! storages through the registry and calls the pipelines in `walg-core`.
//! Exit codes are decided here and only here.
//!
//! # Layout: commands stand alone
//!
//! - This file: the clap definitions of the top-level commands, `main`, and
//!   [`run`], the dispatch that maps each command's result to an exit code.
//! - Command modules, one per command or command group, each gathering its
//!   inputs, calling the library and rendering the report: [`wal_push`],
//!   [`wal_fetch`] (with its background prefetcher, the hidden
//!   `wal-prefetch`), [`wal_status`], [`archive`] (`wal-show`, `wal-verify`,
//!   `wal-repair`, `wal-prune`), [`st`] (`status`, `check`, `transfer`,
//!   `clean`, `identity`), [`check`], [`dist_assets`]. A command group that
//!   has subcommands or flags of its own defines them in its module
//!   ([`archive::ArchiveCommand`], [`st::StCommand`], [`wal_status::Args`]).
//! - [`shared`]: what every command uses (settings, storages, the
//!   PostgreSQL connection, size and duration formatting, JSON and
//!   pipe-safe output).
//!
//! The rule: a command module imports [`shared`] and the library crates,
//! never another command module (nor this file); what two commands need
//! moves into [`shared`]. Dependencies point one way: `main` -> commands ->
//! `shared` -> walg-core, walg-storage, walg-failover.

mod archive;
mod check;
mod dist_assets;
mod shared;
mod st;
mod wal_fetch;
mod wal_push;
mod wal_status;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use walg_core::pipeline::fetch::FetchError;

/// Exit code for "the file is not in the archive" (WAL-G's wal-fetch contract).
pub const EXIT_NOT_FOUND: u8 = 74;

#[derive(Debug, Parser)]
#[command(
    name = "walg",
    version,
    about = "PostgreSQL WAL archiver: archive_command and restore_command, WAL-G compatible",
    long_about = "PostgreSQL WAL archiver: archive_command and restore_command, WAL-G compatible.\n\n\
In postgresql.conf:\n  archive_mode = on\n  archive_command = 'walg wal-push %p'\n  restore_command = 'walg wal-fetch %f %p'\n\n\
Storage is chosen by one of WALG_FILE_PREFIX, WALG_S3_PREFIX, WALG_GS_PREFIX, WALG_AZ_PREFIX\n\
(environment or config file). Failover storages: WALG_FAILOVER_STORAGES in the config file.",
    after_help = "Exit codes: 0 success; 1 error; wal-fetch 74 when the file is in no storage."
)]
struct Cli {
    /// Config file (JSON, TOML or YAML with WAL-G's setting names); default
    /// WALG_CONFIG_PATH, else ~/.walg.json, else /etc/walg/walg.json,
    /// whichever exists first.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Archive one WAL file (archive_command = 'walg wal-push %p').
    ///
    /// Exit 0 only once the file is durably stored, or an identical copy
    /// already was. A different copy already stored is refused (exit 1).
    #[command(name = "wal-push")]
    WalPush {
        /// Path of the WAL file, usually pg_wal/<name> relative to the data directory.
        path: PathBuf,
    },
    /// Restore one WAL file (restore_command = 'walg wal-fetch %f %p').
    ///
    /// Exit 0 when written to DESTINATION, 74 when no storage has it, 1 on error.
    #[command(name = "wal-fetch")]
    WalFetch {
        /// WAL file name, such as 000000010000000000000003 or 00000002.history.
        name: String,
        /// Where PostgreSQL wants the file (%p).
        destination: PathBuf,
    },
    /// Background restore prefetch, started by wal-fetch.
    #[command(name = "wal-prefetch", hide = true)]
    WalPrefetch {
        name: String,
        pg_wal: PathBuf,
        destination_name: PathBuf,
        segment_size: u64,
    },
    /// Pre-flight: config, storages (real write probe), status cache, and
    /// the running server's archive_command / restore_command and settings.
    #[command(
        after_help = "Run it as the user PostgreSQL runs as, on the database server:\n  sudo -u postgres walg check\n  sudo -u postgres walg check --json\n\nExit codes: 0 all is well; 1 something fails (the first line says what); \
2 nothing fails but something could not be verified (PostgreSQL not reachable) or needs a look."
    )]
    Check {
        /// Print the report as JSON (schema in docs/install.md).
        #[arg(long)]
        json: bool,
        /// Connection string (key=value or postgresql:// URI); else PGHOST,
        /// PGPORT, PGUSER, ... as libpq, by default the local socket.
        #[arg(long, value_name = "CONNINFO")]
        conninfo: Option<String>,
    },
    /// Writes man pages and shell completions into DIR (for packaging).
    #[command(name = "dist-assets", hide = true)]
    DistAssets { dir: PathBuf },
    #[command(flatten)]
    Archive(archive::ArchiveCommand),
    /// Why pg_wal grows: archiver, slots, wal_keep_size, checkpoints, disk.
    ///
    /// Inspects one cluster (through libpq settings or --conninfo, and/or
    /// --pgdata, which also works with the server down) and prints the
    /// binding cause first, then every check with its remedy. Read-only.
    #[command(name = "wal-status")]
    WalStatus(wal_status::Args),
    /// Storage status and maintenance (failover storages).
    St {
        #[command(subcommand)]
        command: st::StCommand,
    },
}

/// Runs a command and returns its exit code.
async fn run(cli: Cli) -> u8 {
    let config = cli.config.as_deref();
    if let Command::WalStatus(args) = &cli.command {
        // Its own exit codes: the monitoring convention.
        return match wal_status::run(config, args).await {
            Ok(code) => code,
            Err(e) => {
                tracing::error!("{e:#}");
                3
            }
        };
    }
    let result = match &cli.command {
        Command::WalPush { path } => wal_push::run(config, path).await,
        Command::WalFetch { name, destination } => wal_fetch::run(config, name, destination).await,
        Command::WalPrefetch {
            name,
            pg_wal,
            destination_name,
            segment_size,
        } => wal_fetch::prefetch::run(config, name, pg_wal, destination_name, *segment_size).await,
        Command::St { command } => st::run(config, command).await,
        Command::DistAssets { dir } => dist_assets::run(dir, Cli::command()),
        Command::Check { json, conninfo } => {
            return check::command(config, *json, conninfo.clone()).await
        }
        Command::Archive(command) => return archive::run(config, command).await,
        Command::WalStatus(_) => Ok(()),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            if let Some(gap) = e.downcast_ref::<shared::gaps::DeclaredGapReached>() {
                // Recovery ends at a segment given up on purpose: "not
                // found" for PostgreSQL, the reason in its log.
                tracing::error!("{gap}");
                return EXIT_NOT_FOUND;
            }
            let not_found = e
                .downcast_ref::<FetchError>()
                .is_some_and(FetchError::is_not_found);
            if not_found {
                // Normal at the end of recovery: PostgreSQL asks for the
                // next segment until one is missing.
                tracing::info!("{e:#}");
                EXIT_NOT_FOUND
            } else {
                tracing::error!("{e:#}");
                1
            }
        }
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("WALG_LOG_LEVEL")
        .ok()
        .and_then(|l| EnvFilter::try_new(l).ok())
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .with_ansi(false)
        .init();
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_tracing();
    // wal-push moves several files at once (upload-ahead, the drain), whose
    // freed objects glibc would otherwise keep; a fetch streams one file and
    // measured about 6% slower with the fixed threshold, so it keeps glibc's.
    if matches!(cli.command, Command::WalPush { .. }) {
        walg_core::pipeline::budget::return_freed_buffers_to_the_os();
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = runtime.block_on(run(cli));
    // Do not wait for abandoned background work (a hung storage call that lost
    // its race with a timeout must not delay the exit).
    runtime.shutdown_background();
    ExitCode::from(code)
}
