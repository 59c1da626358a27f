//! `wal-show`, `wal-verify`, `wal-repair`, `wal-prune`: the archive seen
//! across every configured storage (the primary `default` and each
//! failover).
//!
//! Each command lists every storage once ([`walg_core::archive::list_archive`]),
//! downloads the few small files it needs (`.history`, one `.backup`),
//! calls the planning code in `walg-core` and renders the report as text or
//! JSON. Deleting and copying happen here, one object at a time, in the
//! order the plan gives. Progress goes to stderr on a terminal only.
//!
//! What this module does not do: decide what is missing or what to delete
//! (`walg_core::archive::verify`, `walg_core::archive::prune`).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{ArgGroup, Subcommand};
use sha2::{Digest, Sha256};
use walg_core::archive::gaps::GAPS_PREFIX;
use walg_core::archive::prune::{prune_gap_records, prune_plan, repair_plan, Retention};
use walg_core::archive::verify::{verify, ServerPosition, Status, VerifyOptions};
use walg_core::archive::{list_archive, ArchiveMap, ShowReport};
use walg_core::pipeline::codec::decompress;
use walg_core::store::{read_all, DynStore};
use walg_core::wal::history::{parse_backup_history, parse_history, HistoryRecord};
use walg_core::wal::{Segment, WalName, DEFAULT_SEGMENT_SIZE};
use walg_core::{ErrorKind, PutOptions};

use crate::shared::config::Config;
use crate::shared::format::human;
use crate::shared::load_config;
use crate::shared::output::{out, print_json};
use crate::shared::{gaps, pgconn, storage};

/// The archive commands (flattened into walg's command list, where their
/// names are `wal-*` like the others).
#[derive(Debug, Subcommand)]
#[allow(clippy::enum_variant_names)]
pub enum ArchiveCommand {
    /// Timelines, segment ranges, gaps, .partial and .backup files, for the
    /// union of all storages and for each storage.
    #[command(
        name = "wal-show",
        after_help = "Example:\n  walg wal-show\n  walg wal-show --json | jq '.timelines[] | {timeline, gaps}'\n\n\
Exit codes: 0 listed (gaps are reported, not an error); 1 error."
    )]
    WalShow {
        /// Print the report as JSON (schema in docs/archive-commands.md).
        #[arg(long, conflicts_with = "walg_json")]
        json: bool,
        /// Print WAL-G's `wal-show --detailed-json` array (over the union).
        #[arg(long)]
        walg_json: bool,
    },
    /// Check that every segment from the oldest backup to the newest WAL is
    /// archived, following timelines, and that the primary holds it all.
    #[command(
        name = "wal-verify",
        after_help = "Example:\n  walg wal-verify\n  walg wal-verify --json --from 000000010000000000000010\n  PGHOST=/var/run/postgresql walg wal-verify --connect\n\n\
Exit codes: 0 OK (every segment on the primary); 1 WARNING (complete only\n\
with a failover's copies: run wal-repair; or a segment still uploading; or a\n\
storage could not be listed); 2 FAILURE (a segment or history file in no\n\
storage, timelines that contradict each other, or the check could not run);\n\
3 DECLARED_GAP (segments given up on purpose by wal-push over\n\
WALG_PG_WAL_BUDGET, nothing worse: take a new base backup)."
    )]
    WalVerify {
        /// Print the report as JSON (schema in docs/archive-commands.md).
        #[arg(long)]
        json: bool,
        /// Start at this segment (or .backup name) instead of the oldest backup.
        #[arg(long, value_name = "NAME")]
        from: Option<String>,
        /// Ask the server (libpq settings: PGHOST, PGPORT, ... or --conninfo)
        /// for its current segment and timeline; segments of the last
        /// WALG_UPLOAD_CONCURRENCY are "still uploading", not lost.
        #[arg(long)]
        connect: bool,
        /// libpq connection string for --connect.
        #[arg(long, value_name = "CONNINFO", requires = "connect")]
        conninfo: Option<String>,
    },
    /// Copy to the primary storage every WAL file that only failovers hold,
    /// byte for byte, verified (a dry run without --confirm).
    #[command(
        name = "wal-repair",
        after_help = "Example:\n  walg wal-repair            # what would be copied\n  walg wal-repair --confirm  # copy, verify each copy\n\n\
Never deletes anything. Exit codes: 0 done (or nothing to do); 1 error."
    )]
    WalRepair {
        /// Copy (without it nothing changes).
        #[arg(long)]
        confirm: bool,
        /// Print the plan and results as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete WAL older than a retention boundary on every storage (a dry
    /// run without --confirm).
    #[command(
        name = "wal-prune",
        group(ArgGroup::new("boundary").required(true).args(["retain_backups", "before"])),
        after_help = "Example:\n  walg wal-prune --retain-backups 2            # dry run: counts, bytes, ranges\n  walg wal-prune --retain-backups 2 --confirm\n  walg wal-prune --before 000000010000000000000042 --confirm\n\n\
Deletes segments, .partial and .backup files before the boundary on its\n\
timeline and older ones, oldest first; never a .history file.\n\
Exit codes: 0 done (or dry run); 1 refused or failed."
    )]
    WalPrune {
        /// Keep the WAL needed by the newest N backups (.backup files).
        #[arg(long, value_name = "N")]
        retain_backups: Option<usize>,
        /// Keep this segment (or .backup / .partial name) and everything after it.
        #[arg(long, value_name = "NAME")]
        before: Option<String>,
        /// Delete (without it nothing changes).
        #[arg(long)]
        confirm: bool,
        /// Print the plan and results as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs an archive command; returns its exit code.
pub async fn run(config: Option<&Path>, cmd: &ArchiveCommand) -> u8 {
    let result = match cmd {
        ArchiveCommand::WalShow { json, walg_json } => show(config, *json, *walg_json).await,
        ArchiveCommand::WalVerify {
            json,
            from,
            connect,
            conninfo,
        } => wal_verify(config, *json, from.as_deref(), *connect, conninfo.clone()).await,
        ArchiveCommand::WalRepair { confirm, json } => repair(config, *confirm, *json).await,
        ArchiveCommand::WalPrune {
            retain_backups,
            before,
            confirm,
            json,
        } => prune(config, *retain_backups, before.as_deref(), *confirm, *json).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            // wal-verify's codes are a monitoring contract: a check that
            // cannot run is not a mere warning.
            if matches!(cmd, ArchiveCommand::WalVerify { .. }) {
                Status::Failure.exit_code()
            } else {
                1
            }
        }
    }
}

/// Shows progress on a terminal, nothing in a pipe.
struct Progress {
    tty: bool,
    last: Mutex<Instant>,
    counts: Mutex<BTreeMap<String, u64>>,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            tty: std::io::stderr().is_terminal(),
            last: Mutex::new(Instant::now()),
            counts: Mutex::new(BTreeMap::new()),
        }
    }

    fn listed(&self, storage: &str, n: u64) {
        if !self.tty {
            return;
        }
        let Ok(mut counts) = self.counts.lock() else {
            return;
        };
        counts.insert(storage.to_string(), n);
        let line: Vec<String> = counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
        self.line(&format!("listing wal_005/: {}", line.join(", ")));
    }

    fn step(&self, what: &str, done: usize, total: usize) {
        if self.tty {
            self.line(&format!("{what} {done}/{total}"));
        }
    }

    fn line(&self, text: &str) {
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        if last.elapsed().as_millis() >= 200 {
            *last = Instant::now();
            eprint!("\r\x1b[2K{text}");
        }
    }

    fn done(&self) {
        if self.tty {
            eprint!("\r\x1b[2K");
        }
    }
}

/// Every configured storage, primary first.
fn stores(cfg: &Config) -> Result<Vec<(String, DynStore)>> {
    let opened = storage::open_all(cfg)?;
    let Some(failover) = opened.failover else {
        bail!("no storages configured (set WALG_FILE_PREFIX, WALG_S3_PREFIX, WALG_GS_PREFIX or WALG_AZ_PREFIX)")
    };
    Ok(failover
        .members()
        .iter()
        .map(|m| (m.name().to_string(), m.store().clone()))
        .collect())
}

/// Lists every storage into one map.
async fn listing(stores: &[(String, DynStore)], progress: &Progress) -> ArchiveMap {
    let map = list_archive(stores, &|name, n| progress.listed(name, n)).await;
    progress.done();
    for s in map.storages() {
        if let Some(e) = &s.error {
            tracing::warn!("storage {:?} could not be listed: {e}", s.name);
        }
    }
    map
}

/// Downloads and decompresses a small WAL file (history, `.backup`) from
/// the first storage that has it.
async fn small_file(
    stores: &[(String, DynStore)],
    map: &ArchiveMap,
    name: &WalName,
) -> Result<String> {
    let mut last_err = None;
    for c in map.copies_of(name) {
        let (storage, store) = &stores[usize::from(c.storage)];
        let key = c.key();
        let got = async {
            let data = read_all(store.get(&key).await?).await?;
            let plain = decompress(c.compression, &data)
                .with_context(|| format!("decompress {key} from {storage:?}"))?;
            Ok::<_, anyhow::Error>(String::from_utf8_lossy(&plain).into_owned())
        }
        .await;
        match got {
            Ok(text) => return Ok(text),
            Err(e) => last_err = Some(e.context(format!("read {key} from {storage:?}"))),
        }
    }
    Err(last_err.unwrap_or_else(|| anyhow::anyhow!("{name} is in no storage")))
}

/// Every `.history` file of the union, parsed.
async fn histories(
    stores: &[(String, DynStore)],
    map: &ArchiveMap,
) -> BTreeMap<u32, Result<Vec<HistoryRecord>, String>> {
    let mut out = BTreeMap::new();
    for tli in map.timelines() {
        let name = WalName::History { timeline: tli };
        if map.copies_of(&name).is_empty() {
            continue;
        }
        let parsed = match small_file(stores, map, &name).await {
            Ok(text) => parse_history(&text).map_err(|e| format!("{name}: {e}")),
            Err(e) => Err(format!("{e:#}")),
        };
        out.insert(tli, parsed);
    }
    out
}

fn ok_histories(
    h: &BTreeMap<u32, Result<Vec<HistoryRecord>, String>>,
) -> BTreeMap<u32, Vec<HistoryRecord>> {
    h.iter()
        .filter_map(|(t, r)| r.as_ref().ok().map(|r| (*t, r.clone())))
        .collect()
}

/// The segment size: from the newest `.backup` file (its START WAL
/// LOCATION names both an LSN and a file), else from the newest segment's
/// page header, else PostgreSQL's default.
async fn segment_size(stores: &[(String, DynStore)], map: &ArchiveMap) -> (u64, String) {
    if let Some(b) = map.backups().last() {
        if let Ok(text) = small_file(stores, map, b).await {
            if let Some(size) = parse_backup_history(&text)
                .ok()
                .and_then(|h| h.segment_size())
            {
                return (size, format!("from {b}"));
            }
        }
    }
    let newest = map
        .copies()
        .iter()
        .rev()
        .find(|c| matches!(c.name, WalName::Segment(_)) && c.size > 0);
    if let Some(c) = newest {
        let (_, store) = &stores[usize::from(c.storage)];
        if let Ok(stream) = store.get(&c.key()).await {
            if let Ok(data) = read_all(stream).await {
                if let Ok(plain) = decompress(c.compression, &data) {
                    if let Ok(h) = walg_core::wal::page::LongPageHeader::parse(&plain) {
                        if walg_core::wal::is_valid_segment_size(u64::from(h.segment_size)) {
                            return (
                                u64::from(h.segment_size),
                                format!("from {}'s page header", c.name),
                            );
                        }
                    }
                }
            }
        }
    }
    (
        DEFAULT_SEGMENT_SIZE,
        "PostgreSQL's default (no .backup file or readable segment to tell)".into(),
    )
}

/// What `--connect` learns from the server.
#[derive(Debug)]
struct Server {
    timeline: u32,
    /// The segment being written.
    current: Segment,
    segment_size: u64,
}

/// Asks the server where it writes: its timeline, its current segment
/// (of `lsn - 1`, as WAL-G does, so a segment just switched away from still
/// counts as in flight) and its segment size. On a standby the position is
/// the last received (or replayed) LSN.
async fn server_position(conninfo: Option<String>) -> Result<Server> {
    let target = pgconn::config(&pgconn::ConnSource::from_env(conninfo))?;
    let client = pgconn::connect(&target).await?;
    // pg_control_checkpoint().timeline_id lags right after a promotion;
    // the current WAL file name does not.
    let sql = "select (select setting from pg_settings where name = 'wal_segment_size'),                case when pg_is_in_recovery()                  then coalesce(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::text                  else pg_current_wal_lsn()::text end,                case when pg_is_in_recovery()                  then coalesce((select received_tli from pg_stat_wal_receiver),                                (select timeline_id from pg_control_checkpoint()))::text                  else ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int::text end";
    let row = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        client.query_one(sql, &[]),
    )
    .await
    .map_err(|_| anyhow::anyhow!("query {}: no answer within 30s", target.description))?
    .with_context(|| format!("query the WAL position of {}", target.description))?;
    let size: String = row.get(0);
    let lsn: String = row.get(1);
    let tli: String = row.get(2);
    let segment_size: u64 = size
        .parse()
        .with_context(|| format!("wal_segment_size {size:?} from {}", target.description))?;
    if !walg_core::wal::is_valid_segment_size(segment_size) {
        bail!(
            "{} reports wal_segment_size {segment_size}, not a valid segment size",
            target.description
        );
    }
    let lsn: walg_core::Lsn = lsn
        .parse()
        .with_context(|| format!("LSN {lsn:?} from {}", target.description))?;
    let timeline: u32 = tli
        .parse()
        .with_context(|| format!("timeline {tli:?} from {}", target.description))?;
    let current = walg_core::Lsn(lsn.0.saturating_sub(1)).segment(timeline, segment_size);
    Ok(Server {
        timeline,
        current,
        segment_size,
    })
}

async fn show(config: Option<&Path>, json: bool, walg_json: bool) -> Result<u8> {
    let cfg = load_config(config)?;
    let stores = stores(&cfg)?;
    let progress = Progress::new();
    let map = listing(&stores, &progress).await;
    if map.storages().iter().all(|s| s.error.is_some()) {
        bail!("no storage could be listed");
    }
    let (size, _) = segment_size(&stores, &map).await;
    let hist = ok_histories(&histories(&stores, &map).await);
    let mut report = map.show(size, &hist);
    let (declared, errors) = declared_gaps(&stores, size).await;
    report.mark_declared(&declared);
    for e in errors {
        tracing::warn!("{e}");
    }
    if walg_json {
        // WAL-G prints one compact array without a trailing newline.
        use std::io::Write as _;
        let _ = write!(
            std::io::stdout(),
            "{}",
            serde_json::to_string(&report.walg_json(&hist))?
        );
        return Ok(0);
    }
    if json {
        print_json(&report)?;
        return Ok(0);
    }
    print_show(&report);
    Ok(0)
}

fn print_show(r: &ShowReport) {
    let segments: u64 = r.timelines.iter().map(|t| t.segments).sum();
    let gaps: Vec<_> = r.timelines.iter().flat_map(|t| &t.gaps).collect();
    let missing: u64 = gaps.iter().map(|g| g.count).sum();
    let listed = r.storages.iter().filter(|s| s.error.is_none()).count();
    let mut head = format!(
        "{} timeline(s), {segments} segment(s) across {listed} storage(s); ",
        r.timelines.len()
    );
    if gaps.is_empty() {
        head.push_str("no gaps");
    } else {
        head.push_str(&format!(
            "{} gap(s), {missing} segment(s) in no storage",
            gaps.len()
        ));
        if r.declared_segments > 0 {
            head.push_str(&format!(
                " ({} given up on purpose: declared gaps)",
                r.declared_segments
            ));
        }
    }
    let primary = r.storages.first().map(|s| s.name.as_str());
    for (s, o) in &r.only_on {
        if Some(s.as_str()) != primary {
            head.push_str(&format!("; {} only on {s:?}", o.count));
        }
    }
    out!("{head}");
    out!();
    out!(
        "{:<4} {:<6} {:<12} {:<24} {:<24} {:>7} {:>8} {:>5} {:>7} {:>7}  STATUS",
        "TLI",
        "PARENT",
        "SWITCHPOINT",
        "START SEGMENT",
        "END SEGMENT",
        "RANGE",
        "SEGMENTS",
        "GAPS",
        "PARTIAL",
        "BACKUPS"
    );
    for t in &r.timelines {
        out!(
            "{:<4} {:<6} {:<12} {:<24} {:<24} {:>7} {:>8} {:>5} {:>7} {:>7}  {}",
            t.timeline,
            t.parent.map_or("-".into(), |p| p.to_string()),
            t.switch_point.clone().unwrap_or_else(|| "-".into()),
            t.first_segment.clone().unwrap_or_else(|| "-".into()),
            t.last_segment.clone().unwrap_or_else(|| "-".into()),
            t.segment_range,
            t.segments,
            t.gaps.len(),
            t.partials.len(),
            t.backups.len(),
            if t.gaps.is_empty() {
                "OK"
            } else if t.gaps.iter().all(|g| g.declared == g.count) {
                "DECLARED_GAP"
            } else {
                "LOST_SEGMENTS"
            }
        );
    }
    out!();
    out!(
        "{:<16} {:<4} {:>8} {:<24} {:<24} {:>5}",
        "STORAGE",
        "TLI",
        "SEGMENTS",
        "START SEGMENT",
        "END SEGMENT",
        "GAPS"
    );
    for t in &r.timelines {
        for (name, s) in r
            .storages
            .iter()
            .filter_map(|l| t.storages.get(&l.name).map(|s| (&l.name, s)))
            .filter(|(_, s)| s.segments > 0)
        {
            out!(
                "{:<16} {:<4} {:>8} {:<24} {:<24} {:>5}",
                name,
                t.timeline,
                s.segments,
                s.first_segment.clone().unwrap_or_else(|| "-".into()),
                s.last_segment.clone().unwrap_or_else(|| "-".into()),
                s.gaps
            );
        }
    }
    for s in &r.storages {
        if let Some(e) = &s.error {
            out!("{:<16} could not be listed: {e}", s.name);
        } else if s.foreign > 0 {
            out!(
                "{:<16} {} object(s) under wal_005/ that are not WAL files walg reads",
                s.name,
                s.foreign
            );
        }
    }
    for t in &r.timelines {
        if !t.gaps.is_empty() || !t.partials.is_empty() || !t.backups.is_empty() {
            out!();
            out!("timeline {}:", t.timeline);
        }
        for g in &t.gaps {
            let declared = match g.declared {
                0 => String::new(),
                d if d == g.count => ", DECLARED_GAP: given up on purpose by wal-push".into(),
                d => format!(", {d} of them given up on purpose by wal-push"),
            };
            out!(
                "  gap      {} .. {} ({} segment(s){declared})",
                g.from,
                g.to,
                g.count
            );
        }
        for p in &t.partials {
            out!("  partial  {p}");
        }
        for b in &t.backups {
            out!("  backup   {b}");
        }
    }
    if !r.declared_runs.is_empty() {
        out!();
        for run in &r.declared_runs {
            out!("declared gap: {}", run.describe());
        }
    }
    for (s, o) in r
        .only_on
        .iter()
        .filter(|(s, _)| Some(s.as_str()) != primary)
    {
        out!();
        let shown: Vec<&str> = o.segments.iter().take(10).map(String::as_str).collect();
        let more = if o.count as usize > shown.len() {
            format!(" and {} more", o.count as usize - shown.len())
        } else {
            String::new()
        };
        out!("only on {s:?}: {}{more}", shown.join(", "));
    }
}

fn parse_name(what: &str, name: &str) -> Result<WalName> {
    WalName::parse(name).with_context(|| format!("{what} {name:?}"))
}

fn segment_arg(what: &str, name: &str) -> Result<Segment> {
    match parse_name(what, name)? {
        WalName::Segment(s) | WalName::Partial(s) | WalName::Backup { segment: s, .. } => Ok(s),
        WalName::History { .. } => {
            bail!("{what} {name:?} is a history file; give a segment or .backup name")
        }
    }
}

async fn wal_verify(
    config: Option<&Path>,
    json: bool,
    from: Option<&str>,
    connect: bool,
    conninfo: Option<String>,
) -> Result<u8> {
    let from = from.map(|f| segment_arg("--from", f)).transpose()?;
    let cfg = load_config(config)?;
    let server = if connect {
        Some(server_position(conninfo).await?)
    } else {
        None
    };
    let stores = stores(&cfg)?;
    let progress = Progress::new();
    let map = listing(&stores, &progress).await;
    if map.storages().iter().all(|s| s.error.is_some()) {
        bail!("no storage could be listed");
    }
    let (size, _) = match &server {
        Some(s) => (s.segment_size, "from the server".to_string()),
        None => segment_size(&stores, &map).await,
    };
    let opts = VerifyOptions {
        segment_size: size,
        histories: histories(&stores, &map).await,
        from,
        server: server.as_ref().map(|s| ServerPosition {
            timeline: s.timeline,
            current: s.current,
        }),
        uploading_window: cfg.upload_concurrency as u64,
        declared: {
            let (declared, errors) = declared_gaps(&stores, size).await;
            for e in errors {
                tracing::warn!("{e}");
            }
            declared
        },
    };
    let report = verify(&map, &opts);
    if json {
        print_json(&report)?;
    } else {
        out!("{}", report.summary);
        out!();
        let r = &report.range;
        out!(
            "range:    {} .. {} on timeline {} ({} segments of {})",
            r.from.as_deref().unwrap_or("-"),
            r.to.as_deref().unwrap_or("-"),
            r.timeline.map_or("-".into(), |t| t.to_string()),
            report.segments_checked,
            human(report.segment_size)
        );
        out!("from:     {}", r.from_source);
        out!("to:       {}", r.to_source);
        for s in &report.timelines {
            let name = |n| Segment::from_number(s.timeline, n, report.segment_size);
            match s.last {
                Some(l) if s.first == 0 => {
                    out!("follows:  timeline {} up to {}", s.timeline, name(l))
                }
                Some(l) => out!(
                    "follows:  timeline {} from {} to {}",
                    s.timeline,
                    name(s.first),
                    name(l)
                ),
                None => out!("follows:  timeline {} from {}", s.timeline, name(s.first)),
            }
        }
        out!(
            "union:    {} ({} missing{})",
            report.union.status.as_str(),
            report.union.missing_count,
            if report.union.uploading.is_empty() {
                String::new()
            } else {
                format!(", {} uploading", report.union.uploading.len())
            }
        );
        let mut storages: Vec<_> = report.storages.iter().collect();
        storages.sort_by_key(|(_, c)| c.role != "primary");
        for (name, c) in storages {
            out!(
                "{:<9} {} {} ({} present, {} missing, {} only here)",
                format!("{name}:"),
                c.status,
                c.role,
                c.present,
                c.missing_count,
                c.only_here
            );
        }
        if report.declared.count > 0 {
            out!(
                "declared: {} ({} segment(s) given up on purpose by wal-push)",
                Status::DeclaredGap.as_str(),
                report.declared.count
            );
            for d in &report.declared.runs {
                out!("declared gap: {}", d.run.describe());
                if !d.backups_stop_here.is_empty() {
                    out!(
                        "  cannot be rolled forward past it: {}",
                        d.backups_stop_here.join(", ")
                    );
                }
            }
            match &report.declared.first_backup_after {
                Some(b) => out!("  a restore to the end starts from {b} or later"),
                None => out!("  no base backup after the newest gap: take one now"),
            }
        }
        for m in report.union.missing.iter().take(20) {
            out!("missing everywhere: {m}");
        }
        if report.union.missing_count > 20 {
            out!(
                "missing everywhere: ... {} more",
                report.union.missing_count - 20
            );
        }
        for p in &report.problems {
            out!("problem:  {p}");
        }
    }
    Ok(report.status.exit_code())
}

/// Declared gaps of every storage, with the record of each run's first
/// segment (when and why).
async fn declared_gaps(
    stores: &[(String, DynStore)],
    segment_size: u64,
) -> (walg_core::archive::gaps::DeclaredGaps, Vec<String>) {
    gaps::archive_gaps(
        stores,
        &|d| d.runs(segment_size).into_iter().map(|r| r.from).collect(),
        gaps::RECORDS_READ,
    )
    .await
}

async fn repair(config: Option<&Path>, confirm: bool, json: bool) -> Result<u8> {
    let cfg = load_config(config)?;
    let stores = stores(&cfg)?;
    if stores.len() < 2 {
        bail!("only one storage is configured; wal-repair copies from failover storages (WALG_FAILOVER_STORAGES) to the primary");
    }
    let progress = Progress::new();
    let map = listing(&stores, &progress).await;
    if let Some(e) = &map.storages()[0].error {
        bail!(
            "the primary storage {:?} could not be listed: {e}",
            stores[0].0
        );
    }
    let plan = repair_plan(&map);
    let bytes: u64 = plan.iter().map(|c| c.size).sum();
    let primary = &stores[0];
    #[derive(serde::Serialize)]
    struct Out<'a> {
        confirm: bool,
        primary: &'a str,
        files: usize,
        bytes: u64,
        copies: &'a [walg_core::archive::prune::RepairCopy],
        copied: usize,
        already_present: usize,
    }
    if !confirm {
        if json {
            print_json(&Out {
                confirm,
                primary: &primary.0,
                files: plan.len(),
                bytes,
                copies: &plan,
                copied: 0,
                already_present: 0,
            })?;
        } else if plan.is_empty() {
            out!("nothing to repair: the primary storage {:?} holds every WAL file the other storages hold", primary.0);
        } else {
            out!(
                "dry run: would copy {} file(s), {}, to the primary storage {:?}; add --confirm to copy",
                plan.len(),
                human(bytes),
                primary.0
            );
            for c in &plan {
                out!("  {} from {:?} ({} bytes)", c.key, c.source, c.size);
            }
        }
        return Ok(0);
    }
    let (mut copied, mut present) = (0usize, 0usize);
    for (i, c) in plan.iter().enumerate() {
        progress.step("copying", i, plan.len());
        let source = stores
            .iter()
            .find(|(n, _)| *n == c.source)
            .map(|(_, s)| s)
            .context("source storage vanished")?;
        let data = read_all(
            source
                .get(&c.key)
                .await
                .with_context(|| format!("read {} from {:?}", c.key, c.source))?,
        )
        .await
        .with_context(|| format!("read {} from {:?}", c.key, c.source))?;
        let want = Sha256::digest(&data);
        let body = bytes::Bytes::from(data);
        match primary
            .1
            .put(
                &c.key,
                &body,
                PutOptions {
                    if_not_exists: true,
                },
            )
            .await
        {
            Ok(()) => copied += 1,
            Err(e) if e.kind() == ErrorKind::Conflict => present += 1,
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "copy {} from {:?} to {:?} ({copied} copied before it)",
                        c.key, c.source, primary.0
                    )
                })
            }
        }
        let back = read_all(primary.1.get(&c.key).await?).await?;
        if Sha256::digest(&back) != want {
            bail!(
                "{} on {:?} differs from the copy on {:?}; left both in place, compare them",
                c.key,
                primary.0,
                c.source
            );
        }
        tracing::info!(
            "copied {} from {:?} to {:?} (verified)",
            c.key,
            c.source,
            primary.0
        );
    }
    progress.done();
    if json {
        print_json(&Out {
            confirm,
            primary: &primary.0,
            files: plan.len(),
            bytes,
            copies: &plan,
            copied,
            already_present: present,
        })?;
    } else {
        out!(
            "repaired: copied {copied} file(s), {}, to the primary storage {:?}, each verified byte for byte{}",
            human(bytes),
            primary.0,
            if present > 0 {
                format!("; {present} appeared there meanwhile")
            } else {
                String::new()
            }
        );
    }
    Ok(0)
}

/// The declared-gap records (`walg_gaps/`) of every storage as (storage,
/// key, size); a storage whose records cannot be listed keeps them.
async fn gap_records(stores: &[(String, DynStore)]) -> Vec<(String, String, u64)> {
    let mut out = Vec::new();
    for (name, store) in stores {
        match store.list(GAPS_PREFIX).await {
            Ok(objects) => out.extend(objects.into_iter().map(|o| (name.clone(), o.key, o.size))),
            Err(e) if e.kind == ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(
                "list {GAPS_PREFIX} on {name:?}: {e}; its declared-gap records are kept"
            ),
        }
    }
    out
}

/// Deletions in flight at once; they are started oldest first, so an
/// interrupted run leaves at most this many holes just before what remains.
const DELETE_WINDOW: usize = 16;

async fn prune(
    config: Option<&Path>,
    retain: Option<usize>,
    before: Option<&str>,
    confirm: bool,
    json: bool,
) -> Result<u8> {
    let retention = match (retain, before) {
        (Some(n), _) => Retention::Backups(n),
        (None, Some(b)) => Retention::Before(parse_name("--before", b)?),
        (None, None) => bail!("give --retain-backups N or --before NAME"),
    };
    let cfg = load_config(config)?;
    let stores = stores(&cfg)?;
    let progress = Progress::new();
    let map = listing(&stores, &progress).await;
    let mut plan = prune_plan(&map, &retention)?;
    if plan.boundary.is_some() {
        prune_gap_records(&mut plan, &gap_records(&stores).await);
    }
    let total: u64 = plan.storages.values().map(|s| s.objects).sum();
    let bytes: u64 = plan.storages.values().map(|s| s.bytes).sum();
    let unlisted: Vec<&str> = map
        .storages()
        .iter()
        .filter(|s| s.error.is_some())
        .map(|s| s.name.as_str())
        .collect();
    #[derive(serde::Serialize)]
    struct Out<'a> {
        confirm: bool,
        objects: u64,
        bytes: u64,
        deleted: u64,
        #[serde(flatten)]
        plan: &'a walg_core::archive::prune::PrunePlan,
        not_listed: &'a [&'a str],
    }
    let mut deleted = 0u64;
    if confirm && total > 0 {
        let by_name: BTreeMap<&str, &DynStore> =
            stores.iter().map(|(n, s)| (n.as_str(), s)).collect();
        for chunk in plan.deletions.chunks(DELETE_WINDOW) {
            progress.step("deleting", deleted as usize, plan.deletions.len());
            let results = futures::future::join_all(chunk.iter().map(|d| async {
                let store = by_name
                    .get(d.storage.as_str())
                    .context("storage vanished")?;
                store
                    .delete(&d.key)
                    .await
                    .with_context(|| format!("delete {} from {:?}", d.key, d.storage))
            }))
            .await;
            for r in results {
                r.with_context(|| {
                    format!("wal-prune stopped after deleting {deleted} of {total} object(s), oldest first; what remains is contiguous, run it again")
                })?;
                deleted += 1;
            }
        }
        progress.done();
    }
    if json {
        print_json(&Out {
            confirm,
            objects: total,
            bytes,
            deleted,
            plan: &plan,
            not_listed: &unlisted,
        })?;
        return Ok(0);
    }
    let boundary = plan.boundary.as_deref().unwrap_or("-");
    if plan.boundary.is_none() {
        out!("nothing to prune: {}", plan.boundary_source);
        return Ok(0);
    }
    if confirm {
        out!(
            "pruned: deleted {deleted} object(s), {}, before {boundary} ({})",
            human(bytes),
            plan.boundary_source
        );
    } else if total == 0 {
        out!(
            "nothing to prune before {boundary} ({})",
            plan.boundary_source
        );
    } else {
        out!(
            "dry run: would delete {total} object(s), {}, before {boundary} ({}); add --confirm to delete",
            human(bytes),
            plan.boundary_source
        );
    }
    for (name, s) in &plan.storages {
        if s.objects == 0 {
            out!("  {name}: nothing");
            continue;
        }
        out!(
            "  {name}: {} object(s) ({} segment(s), {} .partial, {} .backup{}), {}, {} .. {}",
            s.objects,
            s.segments,
            s.partials,
            s.backups,
            if s.gap_records > 0 {
                format!(", {} declared-gap record(s)", s.gap_records)
            } else {
                String::new()
            },
            human(s.bytes),
            s.first.as_deref().unwrap_or("-"),
            s.last.as_deref().unwrap_or("-")
        );
    }
    out!(
        "  kept: every .history file ({}), every file from {boundary} on",
        plan.histories_kept
    );
    for s in unlisted {
        out!("  {s}: could not be listed; nothing deleted there");
    }
    Ok(0)
}
