//! `walg`: PostgreSQL's archive_command and restore_command, WAL-G compatible.
//!
//! This binary is thin: it parses flags and settings, installs the tracing
//! subscriber (stderr, which PostgreSQL copies into its log), opens the
//! storages through the registry and calls the pipelines in `walg-core`.
//! Exit codes are decided here and only here.

mod archive;
mod check;
mod clean;
mod commands;
mod config;
mod dist_assets;
mod identity;
mod pgconn;
mod prefetch;
mod storage;
mod wal_status;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
        /// Print the report as JSON (schema in the README).
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
        command: StCommand,
    },
}

#[derive(Debug, Subcommand)]
enum StCommand {
    /// Each storage: alive or dead, when last checked or used, whether that
    /// is within WALG_FAILOVER_STORAGES_CACHE_LIFETIME; and the cache file.
    Status,
    /// Probe every storage now (list; with --write also upload and delete a
    /// small object) and record the result in the status cache.
    Check {
        /// Also probe writes.
        #[arg(long)]
        write: bool,
    },
    /// Copy WAL written to a failover storage back to another storage
    /// (the primary by default), verifying each copy.
    Transfer {
        /// Storage to copy from (a failover storage's name).
        #[arg(long)]
        source: String,
        /// Storage to copy to.
        #[arg(long, default_value = "default")]
        target: String,
        /// Remove each object from the source once its copy is verified.
        #[arg(long)]
        remove_source: bool,
    },
    /// Find, and with --confirm remove, what killed uploads left behind:
    /// temp files on file storage, incomplete multipart uploads on S3.
    #[command(
        after_help = "A temp file of a dead walg process on this host is removed whatever its age; \
other leftovers only when older than --older-than. A live writer's temp file is never touched.\n\n\
Examples:\n  walg st clean                        # dry run\n  walg st clean --older-than 6h --confirm\n  walg st clean --json\n\n\
Exit codes: 0 done (or nothing to do); 1 a storage could not be cleaned or a removal failed."
    )]
    Clean {
        /// Leftovers younger than this are kept (a duration: 30m, 6h, 2d).
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        older_than: std::time::Duration,
        /// Remove (without it: a dry run that only lists).
        #[arg(long)]
        confirm: bool,
        /// Print the reports as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Which cluster's WAL each storage holds (the system identifier a
    /// wal-push checks every segment against); --adopt hands the archive to
    /// a deliberate new cluster.
    #[command(
        after_help = "Examples:\n  walg st identity\n  walg st identity --adopt 7301234567890123456            # dry run\n  walg st identity --adopt 7301234567890123456 --confirm"
    )]
    Identity {
        /// Make every storage the archive of this system identifier (as
        /// `pg_controldata` prints it); the old one is kept as previous.
        #[arg(long, value_name = "SYSTEM_ID")]
        adopt: Option<u64>,
        /// Write the adoption (without it: a dry run).
        #[arg(long)]
        confirm: bool,
    },
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
    let code = runtime.block_on(commands::run(cli));
    // Do not wait for abandoned background work (a hung storage call that lost
    // its race with a timeout must not delay the exit).
    runtime.shutdown_background();
    ExitCode::from(code)
}
