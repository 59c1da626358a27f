//! `walg wal-status`: gathers what PostgreSQL, its data directory and the
//! archive say about WAL retention, hands it to
//! `walg_core::doctor::diagnose`, and prints the report as text, JSON or
//! a node-exporter textfile.
//!
//! Read-only: it runs only `SELECT`s and reads files; nothing is written to
//! the cluster or the data directory. Each source degrades on its own: a
//! missing privilege or an unreadable file becomes an UNKNOWN line, not a
//! failed command. Without a reachable server, `--pgdata` alone is enough
//! (offline mode): that is when a DBA needs it most.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use walg_core::doctor::datadir::{
    classify_wal_dir, read_data_dir_with, segment_size_from_files, split_status, ReadOptions,
};
use walg_core::doctor::{
    self, diagnose, human_bytes, human_secs, ArchiveObs, ArchiverStats, Mode, Observation,
    OldestXact, Report, SlotObs, StatusFile, SummarizerObs, Thresholds,
};
use walg_core::pg::pgconf;
use walg_core::store::Store;
use walg_core::wal::layout::fetch_candidates;
use walg_core::wal::{Lsn, WalName};
use walg_core::Compression;

use crate::shared::config::{Config, Raw};
use crate::shared::output::{out, print_text};
use crate::shared::{gaps, pgconn};

/// Flags of `wal-status`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
  sudo -u postgres walg wal-status                      # local server through the default socket\n  \
  walg wal-status --pgdata /var/lib/postgresql/16/main  # also read pg_wal directly; works with the server down\n  \
  PGHOST=db1 PGUSER=monitor walg wal-status --json     # as a pg_monitor role, for a script\n  \
  walg wal-status --prometheus /var/lib/node_exporter/walg.prom  # for node_exporter's textfile collector\n\n\
Exit codes: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (nothing could be read).")]
pub struct Args {
    /// Connection string (key=value or postgresql:// URI); else PGHOST,
    /// PGPORT, PGUSER, PGDATABASE, PGPASSWORD, PGPASSFILE, ... as libpq.
    #[arg(long, value_name = "CONNINFO")]
    pub conninfo: Option<String>,
    /// The data directory: read pg_control, slots, archive_status and pg_wal
    /// directly (default PGDATA). Without a server, this is offline mode.
    #[arg(long, value_name = "DIR", env = "PGDATA")]
    pub pgdata: Option<PathBuf>,
    /// Do not connect; read only --pgdata.
    #[arg(long)]
    pub offline: bool,
    /// Print the report as JSON (schema in docs/wal-status.md).
    #[arg(long)]
    pub json: bool,
    /// Also write the metrics as a node-exporter textfile (atomically).
    #[arg(long, value_name = "FILE")]
    pub prometheus: Option<PathBuf>,
    /// Do not look into the archive even if walg's storage is configured.
    #[arg(long)]
    pub no_archive_check: bool,
    /// Oldest .ready age for a WARNING backlog.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub ready_age_warn: Duration,
    /// Oldest .ready age for a CRITICAL backlog.
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = parse_duration)]
    pub ready_age_crit: Duration,
    /// .ready count for a WARNING backlog.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub ready_count_warn: usize,
    /// Free space of pg_wal's file system (percent) for a WARNING.
    #[arg(long, value_name = "PCT", default_value_t = 10.0)]
    pub fs_free_warn: f64,
    /// Free space of pg_wal's file system (percent) for a CRITICAL.
    #[arg(long, value_name = "PCT", default_value_t = 5.0)]
    pub fs_free_crit: f64,
    /// Time until pg_wal's file system is full for a WARNING.
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_duration)]
    pub full_warn: Duration,
    /// Time until pg_wal's file system is full for a CRITICAL.
    #[arg(long, value_name = "DURATION", default_value = "2h", value_parser = parse_duration)]
    pub full_crit: Duration,
    /// WAL a slot may retain before a WARNING (default: max_wal_size), e.g. 10GB.
    #[arg(long, value_name = "SIZE")]
    pub slot_retained_warn: Option<String>,
    /// A program outside PostgreSQL archives the .ready files (archive_mode
    /// on, archive_command and archive_library empty): judge its backlog by
    /// the --ready-* thresholds. Also WALG_STATUS_EXTERNAL_ARCHIVER=true.
    #[arg(long)]
    pub external_archiver: bool,
    /// The cluster's server binaries, where its own pg_controldata is (for a
    /// pg_control layout walg does not know); else /usr/lib/postgresql/<major>/bin,
    /// then PATH.
    #[arg(long, value_name = "DIR")]
    pub pg_bin: Option<PathBuf>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}"))
}

impl Args {
    fn thresholds(&self) -> Result<Thresholds> {
        let slot =
            match &self.slot_retained_warn {
                Some(s) => Some(pgconf::parse_bytes(s, 1).filter(|v| *v >= 0).with_context(
                    || format!("--slot-retained-warn {s:?} is not a size such as 10GB"),
                )? as u64),
                None => None,
            };
        Ok(Thresholds {
            ready_age_warn: self.ready_age_warn.as_secs_f64(),
            ready_age_crit: self.ready_age_crit.as_secs_f64(),
            ready_count_warn: self.ready_count_warn,
            fs_free_warn_pct: self.fs_free_warn,
            fs_free_crit_pct: self.fs_free_crit,
            full_warn_seconds: self.full_warn.as_secs_f64(),
            full_crit_seconds: self.full_crit.as_secs_f64(),
            slot_retained_warn: slot,
            ..Thresholds::default()
        })
    }
}

/// Bound of each SQL query.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound of the whole archive check.
const ARCHIVE_TIMEOUT: Duration = Duration::from_secs(20);

fn epoch_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Runs the command; returns the exit code (the worst check).
pub async fn run(config: Option<&Path>, args: &Args) -> Result<u8> {
    let thresholds = args.thresholds()?;
    // The setting is read here; a configuration that cannot be loaded at
    // all is reported by the archive check, as before.
    let external = args.external_archiver
        || match Raw::load(config) {
            Ok(raw) => raw.bool("WALG_STATUS_EXTERNAL_ARCHIVER", false)?,
            Err(_) => false,
        };
    let mut obs = gather(config, args).await;
    obs.external_archiver = external;
    let report = diagnose(&obs, &thresholds);
    if let Some(path) = &args.prometheus {
        write_prometheus(path, &report)
            .with_context(|| format!("write metrics to {}", path.display()))?;
    }
    if args.json {
        let text = serde_json::to_string_pretty(&report)?;
        out!("{text}");
    } else {
        print_text(&render_text(&report));
    }
    Ok(report.status.exit_code())
}

async fn gather(config: Option<&Path>, args: &Args) -> Observation {
    let mut problems: Vec<(String, String)> = Vec::new();
    let mut online = None;
    if !args.offline {
        match pgconn::config(&pgconn::ConnSource::from_env(args.conninfo.clone())) {
            Ok(target) => match pgconn::connect(&target).await {
                Ok(client) => online = Some((client, target.description)),
                Err(e) => {
                    tracing::debug!("{e:#}");
                    problems.push(("the server".into(), format!("{e:#}")));
                }
            },
            Err(e) => problems.push(("the connection settings".into(), format!("{e:#}"))),
        }
    }
    let (mut obs, server_dir) = match &online {
        Some((client, _)) => sql_observation(client, &mut problems).await,
        None => (Observation::new(Mode::Offline, epoch_now(), 0), None),
    };

    // The data directory: the flag, else (online) the server's own when it
    // is readable here (it must then belong to the same cluster).
    let pgdata = args
        .pgdata
        .clone()
        .or_else(|| server_dir.filter(|d| d.join("global/pg_control").exists()));
    if let Some(dir) = &pgdata {
        let opts = ReadOptions {
            online: online.is_some(),
            pg_bin: args.pg_bin.clone(),
            path: std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).collect())
                .unwrap_or_default(),
        };
        read_data_dir_with(dir, &mut obs, &opts, &mut problems);
    }
    if online.is_none() {
        if pgdata.is_none() {
            problems.push((
                "the data directory".into(),
                "no --pgdata (or PGDATA) given, and no server reachable".into(),
            ));
        } else {
            // The connection failure is the expected state offline: keep it
            // as evidence, not as a problem.
            problems.retain(|(a, _)| a != "the server" && a != "the connection settings");
        }
    }
    if obs.segment_size == 0 {
        // No pg_control and no server: a segment file's size tells.
        obs.segment_size = pgdata
            .as_deref()
            .and_then(segment_size_from_files)
            .unwrap_or(walg_core::wal::DEFAULT_SEGMENT_SIZE);
    }
    if !args.no_archive_check {
        archive_observation(config, &mut obs, &mut problems).await;
    }
    // The declared pg_wal budget and the segments given up under it.
    obs.budget =
        gaps::status_observation(config, pgdata.as_deref(), &obs, !args.no_archive_check).await;
    obs.failover_drain = drain_observation(config);
    obs.problems = problems;
    obs
}

/// Per failover storage, what waits to drain back to the primary, from the
/// drain journals beside the status cache (no storage request).
fn drain_observation(config: Option<&Path>) -> Vec<walg_core::doctor::FailoverDrain> {
    let Some(cfg) = Raw::load(config)
        .ok()
        .and_then(|raw| Config::from_raw(&raw).ok())
    else {
        return Vec::new();
    };
    if cfg.storages.len() < 2 {
        return Vec::new();
    }
    let Ok(crate::shared::storage::Opened {
        failover: Some(f), ..
    }) = crate::shared::storage::open(&cfg)
    else {
        return Vec::new();
    };
    walg_failover::drain::backlog(&f)
        .into_iter()
        .map(|b| walg_core::doctor::FailoverDrain {
            storage: b.storage,
            mode: b.mode.as_str().to_string(),
            spill: b.spill,
            journal: b.journal.to_string(),
            files: b.files,
            oldest_file: b.oldest_key,
            oldest_since: b.oldest_since_ms.map(|ms| ms as f64 / 1000.0),
            oldest_age_seconds: None,
        })
        .collect()
}

async fn query(
    client: &tokio_postgres::Client,
    sql: &str,
) -> Result<Vec<tokio_postgres::Row>, String> {
    match tokio::time::timeout(QUERY_TIMEOUT, client.query(sql, &[])).await {
        Ok(Ok(rows)) => Ok(rows),
        Ok(Err(e)) => Err(e
            .as_db_error()
            .map(|d| d.message().to_string())
            .unwrap_or_else(|| e.to_string())),
        Err(_) => Err(format!("no answer within {QUERY_TIMEOUT:?}")),
    }
}

fn text(row: &tokio_postgres::Row, i: usize) -> Option<String> {
    row.try_get::<_, Option<String>>(i).ok().flatten()
}

fn float(row: &tokio_postgres::Row, i: usize) -> Option<f64> {
    row.try_get::<_, Option<f64>>(i).ok().flatten()
}

fn lsn(row: &tokio_postgres::Row, i: usize) -> Option<Lsn> {
    text(row, i).and_then(|s| s.parse().ok())
}

/// A row of `pg_replication_slots` as JSON (with `inactive_epoch`, the
/// seconds of `inactive_since`), whatever columns the version has.
fn slot_from_json(v: &serde_json::Value) -> SlotObs {
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    let b = |k: &str| v.get(k).and_then(|x| x.as_bool());
    let wal_status = s("wal_status");
    let invalidation_reason = s("invalidation_reason");
    SlotObs {
        name: s("slot_name").unwrap_or_default(),
        slot_type: s("slot_type").unwrap_or_default(),
        active: b("active"),
        active_pid: v
            .get("active_pid")
            .and_then(|x| x.as_i64())
            .map(|p| p as i32),
        temporary: b("temporary").unwrap_or(false),
        restart_lsn: s("restart_lsn").and_then(|l| l.parse().ok()),
        confirmed_flush: s("confirmed_flush_lsn").and_then(|l| l.parse().ok()),
        safe_wal_size: v.get("safe_wal_size").and_then(|x| x.as_i64()),
        // 16's `conflicting` is true for any invalidated logical slot.
        invalidated: wal_status.as_deref() == Some("lost")
            || invalidation_reason.is_some()
            || b("conflicting") == Some(true),
        wal_status,
        invalidation_reason,
        inactive_since: v.get("inactive_epoch").and_then(|x| x.as_f64()),
        synced: b("synced").unwrap_or(false),
        database: s("database"),
        plugin: s("plugin"),
    }
}

/// Everything the server tells through SQL, and its `data_directory`.
async fn sql_observation(
    client: &tokio_postgres::Client,
    problems: &mut Vec<(String, String)>,
) -> (Observation, Option<PathBuf>) {
    let mut o = Observation::new(Mode::Online, epoch_now(), 0);
    let mut data_dir = None;
    match query(
        client,
        "select extract(epoch from clock_timestamp())::float8, current_setting('server_version'), pg_is_in_recovery()::text, \
         current_setting('server_version_num')",
    )
    .await
    {
        Ok(rows) => {
            if let Some(r) = rows.first() {
                o.now = float(r, 0).unwrap_or(o.now);
                o.server_version = text(r, 1);
                o.in_recovery = text(r, 2).map(|s| s == "true");
                o.major_version = text(r, 3)
                    .and_then(|v| v.parse::<u32>().ok())
                    .map(|v| v / 10000);
            }
        }
        Err(e) => problems.push(("the server's state".into(), e)),
    }

    // Settings, with their units.
    let names = [
        "archive_mode",
        "archive_command",
        "archive_library",
        "wal_level",
        "wal_keep_size",
        "max_slot_wal_keep_size",
        "max_wal_size",
        "min_wal_size",
        "checkpoint_timeout",
        "checkpoint_completion_target",
        "wal_segment_size",
        "data_directory",
        "summarize_wal",
        "idle_replication_slot_timeout",
        "effective_wal_level",
    ];
    let list = names
        .iter()
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(",");
    match query(
        client,
        &format!(
            "select name::text, setting::text, unit::text from pg_settings where name in ({list})"
        ),
    )
    .await
    {
        Ok(rows) => {
            let mut m: BTreeMap<String, (String, String)> = BTreeMap::new();
            for r in &rows {
                if let (Some(n), Some(v)) = (text(r, 0), text(r, 1)) {
                    m.insert(n, (v, text(r, 2).unwrap_or_default()));
                }
            }
            let bytes = |n: &str| {
                m.get(n).and_then(|(v, u)| {
                    let unit = match u.as_str() {
                        "8kB" => 8192,
                        "kB" => 1024,
                        "MB" => 1 << 20,
                        "GB" => 1 << 30,
                        _ => 1,
                    };
                    pgconf::parse_bytes(v, 1).map(|x| if x < 0 { -1 } else { x * unit })
                })
            };
            let s = &mut o.settings;
            s.archive_mode = m.get("archive_mode").map(|x| x.0.clone());
            s.archive_command = m.get("archive_command").map(|x| x.0.clone());
            s.archive_library = m.get("archive_library").map(|x| x.0.clone());
            s.wal_level = m.get("wal_level").map(|x| x.0.clone());
            s.wal_keep_size = bytes("wal_keep_size");
            s.max_slot_wal_keep_size = bytes("max_slot_wal_keep_size");
            s.max_wal_size = bytes("max_wal_size");
            s.min_wal_size = bytes("min_wal_size");
            s.checkpoint_timeout = m
                .get("checkpoint_timeout")
                .and_then(|(v, _)| v.parse().ok());
            s.checkpoint_completion_target = m
                .get("checkpoint_completion_target")
                .and_then(|(v, _)| v.parse().ok());
            s.summarize_wal = m.get("summarize_wal").map(|(v, _)| v == "on");
            s.idle_replication_slot_timeout =
                m.get("idle_replication_slot_timeout").and_then(|(v, u)| {
                    let unit = match u.as_str() {
                        "ms" => 0.001,
                        "min" => 60.0,
                        "h" => 3600.0,
                        "d" => 86400.0,
                        _ => 1.0,
                    };
                    v.parse::<f64>().ok().map(|x| x * unit)
                });
            s.effective_wal_level = m.get("effective_wal_level").map(|x| x.0.clone());
            if let Some(seg) = bytes("wal_segment_size") {
                o.segment_size = seg as u64;
            }
            // pg_read_all_settings (in pg_monitor) is needed to see these.
            if s.archive_command.as_deref() == Some("(disabled)")
                || (s.archive_command.is_none() && m.contains_key("archive_mode"))
            {
                problems.push((
                    "archive_command".into(),
                    "hidden from this role (grant pg_monitor or pg_read_all_settings)".into(),
                ));
                s.archive_command = None;
            }
            data_dir = m.get("data_directory").map(|x| PathBuf::from(&x.0));
        }
        Err(e) => problems.push(("pg_settings".into(), e)),
    }

    let cur_sql = if o.in_recovery == Some(true) {
        "select coalesce(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::text"
    } else {
        "select pg_current_wal_lsn()::text"
    };
    match query(client, cur_sql).await {
        Ok(rows) => o.current_lsn = rows.first().and_then(|r| lsn(r, 0)),
        Err(e) => problems.push(("the current WAL position".into(), e)),
    }
    match query(
        client,
        "select timeline_id, redo_lsn::text, extract(epoch from checkpoint_time)::float8 from pg_control_checkpoint()",
    )
    .await
    {
        Ok(rows) => {
            if let Some(r) = rows.first() {
                o.timeline = r.try_get::<_, Option<i32>>(0).ok().flatten().map(|t| t as u32);
                o.redo_lsn = lsn(r, 1);
                o.checkpoint_time = float(r, 2);
            }
        }
        Err(e) => tracing::debug!("pg_control_checkpoint(): {e}"),
    }
    if let Ok(rows) = query(
        client,
        "select system_identifier::text from pg_control_system()",
    )
    .await
    {
        o.system_identifier = rows
            .first()
            .and_then(|r| text(r, 0))
            .and_then(|s| s.parse().ok());
    }
    if o.segment_size == 0 {
        // pg_control_init() says it on every version, with or without
        // pg_settings' wal_segment_size.
        if let Ok(rows) = query(
            client,
            "select bytes_per_wal_segment::int8 from pg_control_init()",
        )
        .await
        {
            if let Some(v) = rows
                .first()
                .and_then(|r| r.try_get::<_, Option<i64>>(0).ok().flatten())
            {
                o.segment_size = v.max(0) as u64;
            }
        }
    }
    if o.settings.summarize_wal == Some(true) {
        match query(
            client,
            "select summarized_lsn::text, pending_lsn::text, summarizer_pid, \
             (select count(*) from pg_available_wal_summaries()) from pg_get_wal_summarizer_state()",
        )
        .await
        {
            Ok(rows) => {
                o.summarizer = rows.first().map(|r| SummarizerObs {
                    summarized_lsn: lsn(r, 0),
                    pending_lsn: lsn(r, 1),
                    running: Some(r.try_get::<_, Option<i32>>(2).ok().flatten().is_some()),
                    summaries: r
                        .try_get::<_, Option<i64>>(3)
                        .ok()
                        .flatten()
                        .map(|n| n.max(0) as u64),
                })
            }
            Err(e) => problems.push(("pg_get_wal_summarizer_state()".into(), e)),
        }
    }
    match query(
        client,
        "select archived_count, last_archived_wal::text, extract(epoch from last_archived_time)::float8, \
         failed_count, last_failed_wal::text, extract(epoch from last_failed_time)::float8, \
         extract(epoch from stats_reset)::float8 from pg_stat_archiver",
    )
    .await
    {
        Ok(rows) => {
            if let Some(r) = rows.first() {
                o.archiver = Some(ArchiverStats {
                    archived_count: r.try_get::<_, i64>(0).unwrap_or(0),
                    last_archived_wal: text(r, 1),
                    last_archived_time: float(r, 2),
                    failed_count: r.try_get::<_, i64>(3).unwrap_or(0),
                    last_failed_wal: text(r, 4),
                    last_failed_time: float(r, 5),
                    stats_reset: float(r, 6),
                });
            }
        }
        Err(e) => problems.push(("pg_stat_archiver".into(), e)),
    }
    // Every version's columns at once: a row as JSON has the columns the
    // server has (invalidation_reason, inactive_since and synced are 17+).
    match query(
        client,
        "select (to_jsonb(s) || jsonb_build_object('inactive_epoch', \
         extract(epoch from (to_jsonb(s)->>'inactive_since')::timestamptz)))::text \
         from pg_replication_slots s order by slot_name",
    )
    .await
    {
        Ok(rows) => {
            o.slots = Some(
                rows.iter()
                    .filter_map(|r| text(r, 0))
                    .filter_map(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                    .map(|v| slot_from_json(&v))
                    .collect(),
            )
        }
        Err(e) => problems.push(("pg_replication_slots".into(), e)),
    }
    // The oldest transaction with an xid: what logical decoding restarts from.
    let mut oldest: Option<OldestXact> = None;
    if let Ok(rows) = query(
        client,
        "select pid, extract(epoch from xact_start)::float8, state::text from pg_stat_activity \
         where backend_xid is not null and xact_start is not null order by xact_start limit 1",
    )
    .await
    {
        oldest = rows.first().and_then(|r| {
            Some(OldestXact {
                pid: r.try_get::<_, Option<i32>>(0).ok().flatten()?,
                xact_start: float(r, 1)?,
                state: text(r, 2),
                prepared: false,
                gid: None,
            })
        });
    }
    if let Ok(rows) = query(
        client,
        "select gid::text, extract(epoch from prepared)::float8 from pg_prepared_xacts order by prepared limit 1",
    )
    .await
    {
        if let Some(p) = rows.first().and_then(|r| {
            Some(OldestXact {
                pid: 0,
                xact_start: float(r, 1)?,
                state: None,
                prepared: true,
                gid: text(r, 0),
            })
        }) {
            if oldest.as_ref().is_none_or(|x| p.xact_start < x.xact_start) {
                oldest = Some(p);
            }
        }
    }
    o.oldest_xact = oldest;
    match query(
        client,
        "select name::text, extract(epoch from modification)::float8 from pg_ls_archive_statusdir()",
    )
    .await
    {
        Ok(rows) => {
            o.status_files = Some(
                rows.iter()
                    .filter_map(|r| {
                        let n = text(r, 0)?;
                        let (name, ready) = split_status(&n)?;
                        Some(StatusFile {
                            name,
                            ready,
                            mtime: float(r, 1)?,
                            ctime: None,
                        })
                    })
                    .collect(),
            )
        }
        Err(e) => problems.push(("pg_ls_archive_statusdir()".into(), e)),
    }
    match query(
        client,
        "select name::text, size, extract(epoch from modification)::float8 from pg_ls_waldir()",
    )
    .await
    {
        Ok(rows) => {
            let entries: Vec<(String, u64, f64)> = rows
                .iter()
                .filter_map(|r| {
                    Some((
                        text(r, 0)?,
                        r.try_get::<_, Option<i64>>(1).ok().flatten()?.max(0) as u64,
                        float(r, 2).unwrap_or(o.now),
                    ))
                })
                .collect();
            o.pg_wal = Some(classify_wal_dir(&entries, o.now, o.status_files.as_deref()));
        }
        Err(e) => problems.push(("pg_ls_waldir()".into(), e)),
    }
    (o, data_dir)
}

/// Asks walg's configured storages whether what PostgreSQL marked archived
/// is there, and whether the oldest waiting file already is.
async fn archive_observation(
    config: Option<&Path>,
    o: &mut Observation,
    problems: &mut Vec<(String, String)>,
) {
    let raw = match Raw::load(config) {
        Ok(r) => r,
        Err(e) => {
            problems.push(("walg's configuration".into(), format!("{e:#}")));
            return;
        }
    };
    let cfg = match Config::from_raw(&raw) {
        Ok(c) => c,
        Err(e) => {
            let msg = format!("{e:#}");
            // No storage configured: nothing to check, not a problem.
            if !msg.contains("no storage configured") {
                problems.push(("walg's configuration".into(), msg));
            }
            return;
        }
    };
    let mut archived: Vec<String> = Vec::new();
    if let Some(l) = o
        .archiver
        .as_ref()
        .and_then(|a| a.last_archived_wal.clone())
    {
        archived.push(l);
    } else if let Some(files) = &o.status_files {
        if let Some(f) = files
            .iter()
            .filter(|f| !f.ready && f.ctime.is_some())
            .max_by(|a, b| a.ctime.unwrap_or(0.0).total_cmp(&b.ctime.unwrap_or(0.0)))
        {
            archived.push(f.name.clone());
        }
    }
    let oldest_ready = o.status_files.as_ref().and_then(|files| {
        files
            .iter()
            .filter(|f| f.ready)
            .min_by(|a, b| a.name.cmp(&b.name))
            .map(|f| f.name.clone())
    });
    if archived.is_empty() && oldest_ready.is_none() {
        return;
    }
    let registry = walg_storage::Registry::with_builtin();
    let mut stores = Vec::new();
    let mut errors = Vec::new();
    for spec in &cfg.storages {
        match registry.open(spec) {
            Ok(s) => stores.push((spec.name.clone(), s)),
            Err(e) => errors.push(format!("open storage {:?}: {e}", spec.name)),
        }
    }
    let compression = cfg.compression;
    let work = async {
        let mut found = Vec::new();
        for name in &archived {
            found.push((
                name.clone(),
                locate(&stores, name, compression, &mut errors).await,
            ));
        }
        let ready = match &oldest_ready {
            Some(n) => Some((
                n.clone(),
                locate(&stores, n, compression, &mut errors).await,
            )),
            None => None,
        };
        (found, ready, errors)
    };
    match tokio::time::timeout(ARCHIVE_TIMEOUT, work).await {
        Ok((archived, oldest_ready, errors)) => {
            o.archive = Some(ArchiveObs {
                archived,
                oldest_ready,
                errors,
            })
        }
        Err(_) => {
            o.archive = Some(ArchiveObs {
                errors: vec![format!("no answer within {ARCHIVE_TIMEOUT:?}")],
                ..Default::default()
            })
        }
    }
}

/// The first storage holding `name` under any extension.
async fn locate(
    stores: &[(String, walg_core::store::DynStore)],
    name: &str,
    compression: Compression,
    errors: &mut Vec<String>,
) -> Option<String> {
    let wal = WalName::parse(name).ok()?;
    for (storage, store) in stores {
        for (key, _) in fetch_candidates(&wal, compression) {
            match store.stat(&key).await {
                Ok(_) => return Some(storage.clone()),
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    errors.push(format!("storage {storage:?}: {e}"));
                    break;
                }
            }
        }
    }
    None
}

fn render_text(r: &Report) -> String {
    let mut s = String::new();
    s.push_str(&format!("{}: {}\n", r.status.as_str(), r.headline));
    if r.cause.kind != doctor::CauseKind::None {
        s.push_str(&format!(
            "\ncause: {} ({})\n",
            r.cause.summary,
            serde_json::to_value(r.cause.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        ));
        if let Some(fix) = &r.cause.remedy {
            s.push_str(&format!("  fix: {fix}\n"));
        }
        if let Some(n) = &r.next_cause {
            s.push_str(&format!("  then: {}\n", n.summary));
        }
    }
    s.push_str("\nchecks, worst first:\n");
    for c in &r.checks {
        s.push_str(&format!(
            "  {:<8} {:<16} {}\n",
            c.status.as_str(),
            c.id,
            c.summary
        ));
        for e in &c.evidence {
            s.push_str(&format!("  {:<8} {:<16}   {e}\n", "", ""));
        }
        if let Some(fix) = &c.remedy {
            s.push_str(&format!("  {:<8} {:<16}   fix: {fix}\n", "", ""));
        }
    }
    if !r.retention.is_empty() {
        s.push_str("\nwhat holds WAL, oldest first:\n");
        for x in &r.retention {
            s.push_str(&format!(
                "  {:<24} {}  {:>10}  {}\n",
                serde_json::to_value(x.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                x.oldest_segment,
                human_bytes(x.retained_bytes),
                x.detail
            ));
        }
    }
    let v = &r.server;
    s.push_str(&format!(
        "\n{} mode; {}; timeline {}; segment size {}; current {}; REDO {}{}\n",
        match r.mode {
            Mode::Online => "online",
            Mode::Offline => "offline",
        },
        v.version
            .as_deref()
            .map(|v| format!("PostgreSQL {v}"))
            .unwrap_or_else(|| "server version unknown".into())
            .replace("PostgreSQL offline", "offline"),
        v.timeline
            .map(|t| t.to_string())
            .unwrap_or_else(|| "?".into()),
        human_bytes(v.segment_size),
        v.current_lsn.as_deref().unwrap_or("?"),
        v.redo_lsn.as_deref().unwrap_or("?"),
        v.checkpoint_age_seconds
            .map(|a| format!(" ({} ago)", human_secs(a)))
            .unwrap_or_default()
    ));
    s
}

/// Metrics for node_exporter's textfile collector, named after
/// postgres_exporter's where it has one, prefixed `walg_`.
pub fn prometheus_text(r: &Report) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, help: &str, kind: &str, samples: Vec<(String, f64)>| {
        if samples.is_empty() {
            return;
        }
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, v) in samples {
            out.push_str(&format!("{name}{labels} {v}\n"));
        }
    };
    let one = |v: Option<f64>| v.map(|v| vec![(String::new(), v)]).unwrap_or_default();
    let esc = |s: &str| {
        s.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    };
    metric(
        "walg_wal_status",
        "Overall wal-status verdict (1 for the current status).",
        "gauge",
        ["OK", "WARNING", "CRITICAL", "UNKNOWN"]
            .iter()
            .map(|s| {
                (
                    format!("{{status=\"{s}\"}}"),
                    f64::from(u8::from(r.status.as_str() == *s)),
                )
            })
            .collect(),
    );
    metric(
        "walg_wal_status_code",
        "Overall wal-status verdict as an exit code: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.",
        "gauge",
        one(Some(f64::from(r.status.exit_code()))),
    );
    let kind = serde_json::to_value(r.cause.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    metric(
        "walg_wal_retention_cause",
        "The retention source holding the oldest WAL segment (1 for the binding cause).",
        "gauge",
        vec![(format!("{{kind=\"{kind}\"}}"), 1.0)],
    );
    metric(
        "walg_wal_retention_bytes",
        "Bytes of WAL each retention source holds back.",
        "gauge",
        r.retention
            .iter()
            .map(|x| {
                (
                    format!(
                        "{{kind=\"{}\",detail=\"{}\"}}",
                        serde_json::to_value(x.kind)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_string))
                            .unwrap_or_default(),
                        esc(&x.detail)
                    ),
                    x.retained_bytes as f64,
                )
            })
            .collect(),
    );
    let a = &r.archiver;
    metric(
        "walg_archiver_ready_files",
        "WAL files waiting for the archiver (.ready).",
        "gauge",
        one(a.ready_count.map(|v| v as f64)),
    );
    metric(
        "walg_archiver_oldest_ready_age_seconds",
        "Age of the oldest .ready file.",
        "gauge",
        one(a.oldest_ready_age_seconds.or(a.ready_count.map(|_| 0.0))),
    );
    metric(
        "walg_archiver_consumer",
        "What consumes the .ready files (1 for the current one): archive_command, archive_library, external or none.",
        "gauge",
        a.consumer
            .and_then(|c| serde_json::to_value(c).ok())
            .and_then(|v| v.as_str().map(str::to_string))
            .map(|c| vec![(format!("{{consumer=\"{c}\"}}"), 1.0)])
            .unwrap_or_default(),
    );
    metric(
        "walg_stat_archiver_archived_count",
        "pg_stat_archiver.archived_count.",
        "counter",
        one(a.archived_count.map(|v| v as f64)),
    );
    metric(
        "walg_stat_archiver_failed_count",
        "pg_stat_archiver.failed_count.",
        "counter",
        one(a.failed_count.map(|v| v as f64)),
    );
    metric(
        "walg_stat_archiver_last_archive_age",
        "Seconds since the last successful archive.",
        "gauge",
        one(a.last_archived_age_seconds),
    );
    let slots = &r.slots;
    let label = |s: &doctor::SlotReport| {
        format!(
            "{{slot_name=\"{}\",slot_type=\"{}\"}}",
            esc(&s.name),
            esc(&s.slot_type)
        )
    };
    metric(
        "walg_replication_slot_slot_is_active",
        "Whether the slot has a consumer connected.",
        "gauge",
        slots
            .iter()
            .filter_map(|s| Some((label(s), f64::from(u8::from(s.active?)))))
            .collect(),
    );
    metric(
        "walg_replication_slot_retained_bytes",
        "WAL the slot holds back.",
        "gauge",
        slots
            .iter()
            .filter_map(|s| Some((label(s), s.retained_bytes? as f64)))
            .collect(),
    );
    metric(
        "walg_replication_slot_safe_wal_size_bytes",
        "WAL that may still be written before the slot is invalidated.",
        "gauge",
        slots
            .iter()
            .filter_map(|s| Some((label(s), s.safe_wal_size? as f64)))
            .collect(),
    );
    metric(
        "walg_replication_slot_wal_status",
        "The slot's wal_status (1 for the current one).",
        "gauge",
        slots
            .iter()
            .filter_map(|s| {
                Some((
                    format!(
                        "{{slot_name=\"{}\",slot_type=\"{}\",wal_status=\"{}\"}}",
                        esc(&s.name),
                        esc(&s.slot_type),
                        esc(s.wal_status.as_deref()?)
                    ),
                    1.0,
                ))
            })
            .collect(),
    );
    let w = &r.pg_wal;
    metric(
        "walg_wal_size_bytes",
        "Bytes under pg_wal.",
        "gauge",
        one(w.bytes.map(|v| v as f64)),
    );
    metric(
        "walg_wal_segments",
        "Segment files in pg_wal.",
        "gauge",
        one(w.segments.map(|v| v as f64)),
    );
    metric(
        "walg_wal_filesystem_free_bytes",
        "Bytes available on pg_wal's file system.",
        "gauge",
        one(w.fs_free_bytes.map(|v| v as f64)),
    );
    metric(
        "walg_wal_filesystem_size_bytes",
        "Size of pg_wal's file system.",
        "gauge",
        one(w.fs_total_bytes.map(|v| v as f64)),
    );
    metric(
        "walg_wal_growth_bytes_per_second",
        "Estimated growth of pg_wal.",
        "gauge",
        one(w.growth_bytes_per_second),
    );
    metric(
        "walg_wal_seconds_until_full",
        "Estimated time until pg_wal's file system is full.",
        "gauge",
        one(w.seconds_until_full),
    );
    metric(
        "walg_checkpoint_age_seconds",
        "Seconds since the last checkpoint or restartpoint.",
        "gauge",
        one(r.server.checkpoint_age_seconds),
    );
    metric(
        "walg_failover_drain_files",
        "WAL files on a failover storage only, waiting to drain back to the primary.",
        "gauge",
        r.failover_drain
            .iter()
            .map(|d| {
                (
                    format!("{{storage=\"{}\"}}", esc(&d.storage)),
                    d.files as f64,
                )
            })
            .collect(),
    );
    metric(
        "walg_failover_drain_oldest_age_seconds",
        "Seconds the oldest WAL file waiting on a failover storage has waited to drain back.",
        "gauge",
        r.failover_drain
            .iter()
            .filter_map(|d| {
                d.oldest_age_seconds
                    .map(|a| (format!("{{storage=\"{}\"}}", esc(&d.storage)), a))
            })
            .collect(),
    );
    if let Some(b) = &r.budget {
        metric(
            "walg_wal_given_up_segments_total",
            "WAL segments wal-push gave up on purpose over WALG_PG_WAL_BUDGET (declared gaps), from the local gap journal and the archive.",
            "counter",
            one(Some(b.given_up_segments as f64)),
        );
        metric(
            "walg_wal_budget_bytes",
            "WALG_PG_WAL_BUDGET in bytes (a percentage resolved on pg_wal's file system).",
            "gauge",
            one(b.budget_bytes.map(|v| v as f64)),
        );
    }
    metric(
        "walg_wal_status_check",
        "Each check's verdict: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.",
        "gauge",
        {
            let mut seen: BTreeMap<String, f64> = BTreeMap::new();
            for c in &r.checks {
                let e = seen.entry(c.id.to_string()).or_insert(0.0);
                *e = e.max(f64::from(c.status.exit_code()));
            }
            seen.into_iter()
                .map(|(id, v)| (format!("{{check=\"{id}\"}}"), v))
                .collect()
        },
    );
    out
}

fn write_prometheus(path: &Path, r: &Report) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(prometheus_text(r).as_bytes())?;
    tmp.as_file().sync_all()?;
    let perm = std::os::unix::fs::PermissionsExt::from_mode(0o644);
    fs::set_permissions(tmp.path(), perm)?;
    tmp.persist(path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use walg_core::doctor::WalDir;

    use super::*;

    #[test]
    fn prometheus_names() {
        let mut o = Observation::new(Mode::Offline, 1000.0, 1 << 20);
        o.settings.archive_mode = Some("off".into());
        o.pg_wal = Some(WalDir {
            bytes: 5,
            segments: 1,
            ..Default::default()
        });
        let r = diagnose(&o, &Thresholds::default());
        let t = prometheus_text(&r);
        assert!(t.contains("walg_wal_size_bytes 5\n"), "{t}");
        assert!(t.contains("walg_wal_status{status=\"OK\"} 1\n"), "{t}");
        assert!(t.contains("# TYPE walg_wal_status gauge\n"), "{t}");
        for line in t.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("walg_"), "{line}");
        }
    }

    #[test]
    fn prometheus_counts_given_up_segments() {
        let mut o = Observation::new(Mode::Offline, 1000.0, 1 << 20);
        o.settings.archive_mode = Some("on".into());
        o.pg_wal = Some(WalDir {
            bytes: 5,
            segments: 1,
            ..Default::default()
        });
        o.budget = Some(walg_core::doctor::BudgetObs {
            budget: Some("30MB".into()),
            budget_bytes: Some(30 << 20),
            wal_bytes: Some(5),
            given_up: vec![walg_core::doctor::GivenUp {
                segment: "000000010000000000000005".into(),
                time: Some(900.0),
                reason: None,
            }],
            newest_backup: None,
            problems: vec![],
        });
        let t = prometheus_text(&diagnose(&o, &Thresholds::default()));
        assert!(
            t.contains("# TYPE walg_wal_given_up_segments_total counter\n"),
            "{t}"
        );
        assert!(t.contains("walg_wal_given_up_segments_total 1\n"), "{t}");
        assert!(t.contains("walg_wal_budget_bytes 31457280\n"), "{t}");
    }

    /// Rows of `pg_replication_slots` as 13 and 18 send them through
    /// to_jsonb (18 adds invalidation_reason, inactive_since, synced).
    #[test]
    fn slots_of_every_version_from_json() {
        let v13: serde_json::Value = serde_json::from_str(
            r#"{"slot_name":"lost1","plugin":null,"slot_type":"physical","datoid":null,"database":null,
                "temporary":false,"active":false,"active_pid":null,"xmin":null,"catalog_xmin":null,
                "restart_lsn":null,"confirmed_flush_lsn":null,"wal_status":"lost","safe_wal_size":null,
                "inactive_epoch":null}"#,
        )
        .expect("json");
        let s = slot_from_json(&v13);
        assert_eq!(s.name, "lost1");
        assert!(s.invalidated);
        assert_eq!(s.invalidation_reason, None);
        assert_eq!(s.active, Some(false));
        let v18: serde_json::Value = serde_json::from_str(
            r#"{"slot_name":"idle1","plugin":null,"slot_type":"physical","datoid":null,"database":null,
                "temporary":false,"active":false,"active_pid":null,"xmin":null,"catalog_xmin":null,
                "restart_lsn":"0/E00108","confirmed_flush_lsn":null,"wal_status":"lost","safe_wal_size":null,
                "two_phase":false,"two_phase_at":null,"inactive_since":"2026-12-06T06:19:57.44144+00:00",
                "conflicting":null,"invalidation_reason":"idle_timeout","failover":false,"synced":false,
                "inactive_epoch":1796537997.44144}"#,
        )
        .expect("json");
        let s = slot_from_json(&v18);
        assert!(s.invalidated);
        assert_eq!(s.invalidation_reason.as_deref(), Some("idle_timeout"));
        assert_eq!(s.restart_lsn, Some("0/E00108".parse().expect("lsn")));
        assert_eq!(s.inactive_since, Some(1_796_537_997.441_44));
        let v16: serde_json::Value = serde_json::from_str(
            r#"{"slot_name":"sub","slot_type":"logical","active":true,"active_pid":4242,
                "restart_lsn":"0/C001B8","confirmed_flush_lsn":"0/C001F0","wal_status":"reserved",
                "safe_wal_size":-1,"conflicting":false,"plugin":"pgoutput","database":"app"}"#,
        )
        .expect("json");
        let s = slot_from_json(&v16);
        assert!(!s.invalidated);
        assert_eq!(s.active_pid, Some(4242));
        assert_eq!(s.plugin.as_deref(), Some("pgoutput"));
        assert_eq!(s.safe_wal_size, Some(-1));
    }
}
