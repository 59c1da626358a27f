//! The archiver: who consumes the `.ready` files (`archive_command`, an
//! archive library, an external program, nothing), whether it keeps up,
//! fails or is missing, and its check.
//!
//! PostgreSQL removes a segment only once its `.ready` became `.done`, so an
//! archiver that falls behind, fails, or does not exist holds WAL
//! independently of every other source.

use super::rules::*;
use super::*;

/// Who consumes the `.ready` files; `None` when the settings are unknown.
pub(super) fn consumer(ctx: &Ctx<'_>) -> Option<Consumer> {
    if !ctx.archiving_active()? {
        return Some(Consumer::None);
    }
    let s = &ctx.o.settings;
    if s.archive_library
        .as_deref()
        .is_some_and(|l| !l.trim().is_empty())
    {
        return Some(Consumer::ArchiveLibrary);
    }
    Some(if ctx.archive_configured()? {
        Consumer::ArchiveCommand
    } else if ctx.o.external_archiver || external_evidence(ctx).is_some() {
        Consumer::External
    } else {
        Consumer::None
    })
}

/// Why a program outside PostgreSQL must be consuming `.ready` files, when
/// `archive_mode` is on with nothing to archive with: WAL files PostgreSQL's
/// own archiver cannot have marked done. It archives strictly in order, so
/// a `.done` newer than a waiting `.ready` is not its doing; and, online,
/// `pg_stat_archiver` says how far it archived itself: files past that
/// point marked done (older than the oldest waiting file, or still `.done`)
/// were someone else's. `None` when nothing tells (then only
/// `--external-archiver` does: an external program that stopped before
/// PostgreSQL's archiver ever archived, once a checkpoint removed its last
/// `.done` files, looks exactly like no consumer at all).
pub(super) fn external_evidence(ctx: &Ctx<'_>) -> Option<String> {
    let o = ctx.o;
    let files = o.status_files.as_ref()?;
    let segno = |n: &str| segno_of(n, ctx.segsz);
    let oldest_ready = ctx.ready().and_then(|r| r.first().copied());
    // Online: PostgreSQL's archiver stopped at its last archived file; the
    // files between it and the oldest waiting one went without it.
    if let (Some(a), Some(oldest)) = (o.archiver.as_ref(), oldest_ready) {
        if let (Some(own), Some(first)) = (
            a.last_archived_wal.as_deref().and_then(segno),
            segno(&oldest.name),
        ) {
            if first > own + 1 {
                return Some(format!(
                    "{} WAL files between {} (the last PostgreSQL's archiver archived, pg_stat_archiver) and {} (the oldest waiting) were marked done without it: it never skips a file",
                    first - own - 1,
                    a.last_archived_wal.as_deref().unwrap_or("?"),
                    oldest.name
                ));
            }
        }
    }
    let mut done: Vec<&StatusFile> = files
        .iter()
        .filter(|f| !f.ready && seg_of(&f.name).is_some())
        .collect();
    done.sort_by(|a, b| a.name[8..].cmp(&b.name[8..]));
    let newest_done = done.last()?;
    if let Some(oldest) = oldest_ready {
        if segno(&newest_done.name) > segno(&oldest.name) {
            return Some(format!(
                "{}.done although the older {} still waits: PostgreSQL's archiver never skips a file",
                newest_done.name, oldest.name
            ));
        }
    }
    match o.archiver.as_ref() {
        Some(a) => {
            let own = a.last_archived_wal.as_deref().and_then(segno);
            let foreign = done
                .iter()
                .filter(|f| own.is_none_or(|own| segno(&f.name) > Some(own)))
                .count();
            (foreign > 0).then(|| {
                format!(
                    "{foreign} .done files (newest {}) that PostgreSQL's archiver did not write (pg_stat_archiver: {})",
                    newest_done.name,
                    a.last_archived_wal
                        .as_deref()
                        .map(|l| format!("last archived {l}"))
                        .unwrap_or_else(|| "nothing archived".into())
                )
            })
        }
        None if ctx.ready().is_some_and(|r| r.is_empty()) => Some(format!(
            "{} .done files (newest {}) while PostgreSQL has nothing to archive with",
            done.len(),
            newest_done.name
        )),
        None => None,
    }
}

/// What kind of archiver trouble, if the archiver binds.
pub(super) fn archive_kind(ctx: &Ctx<'_>, consumer: Option<Consumer>) -> CauseKind {
    if consumer == Some(Consumer::External) {
        // An external program's failures are invisible: judged as a backlog.
        return CauseKind::ArchiveBacklog;
    }
    if ctx.archive_configured() == Some(false) {
        return CauseKind::ArchiveNotConfigured;
    }
    let o = ctx.o;
    if let Some(a) = &o.archiver {
        let failing = a.failed_count > 0
            && match (a.last_failed_time, a.last_archived_time) {
                (Some(f), Some(s)) => f >= s,
                (Some(_), None) => true,
                _ => false,
            };
        return if failing {
            CauseKind::ArchiveFailing
        } else {
            CauseKind::ArchiveBacklog
        };
    }
    // Offline: no progress since the oldest waiting file appeared means the
    // archiver was stuck, not slow.
    if let (Some(ready), Some(files)) = (ctx.ready(), &o.status_files) {
        if let Some(oldest) = ready.first() {
            let last_done = files
                .iter()
                .filter(|f| !f.ready)
                .filter_map(|f| f.ctime)
                .fold(None::<f64>, |m, c| Some(m.map_or(c, |m| m.max(c))));
            let stuck = match last_done {
                Some(d) => d < oldest.mtime,
                None => true,
            };
            if stuck && o.now - oldest.mtime > 1.0 {
                return CauseKind::ArchiveFailing;
            }
        }
    }
    CauseKind::ArchiveBacklog
}

pub(super) fn archiver_report(ctx: &Ctx<'_>, consumer: Option<Consumer>) -> ArchiverReport {
    let o = ctx.o;
    let ready = ctx.ready();
    let oldest = ready.as_ref().and_then(|r| r.first().copied());
    let a = o.archiver.as_ref();
    ArchiverReport {
        archive_mode: o.settings.archive_mode.clone(),
        configured: ctx.archive_configured(),
        consumer,
        ready_count: ctx.all_ready_count(),
        oldest_ready: oldest.map(|f| f.name.clone()),
        oldest_ready_age_seconds: oldest.map(|f| o.now - f.mtime),
        archived_count: a.map(|a| a.archived_count),
        failed_count: a.map(|a| a.failed_count),
        last_failed_wal: a.and_then(|a| a.last_failed_wal.clone()),
        last_failed_age_seconds: a.and_then(|a| a.last_failed_time).map(|t| o.now - t),
        last_archived_wal: a.and_then(|a| a.last_archived_wal.clone()).or_else(|| {
            // Offline: the most recently renamed `.done`.
            o.status_files.as_ref().and_then(|f| {
                f.iter()
                    .filter(|f| !f.ready && f.ctime.is_some())
                    .max_by(|x, y| x.ctime.unwrap_or(0.0).total_cmp(&y.ctime.unwrap_or(0.0)))
                    .map(|f| f.name.clone())
            })
        }),
        last_archived_age_seconds: a
            .and_then(|a| a.last_archived_time)
            .or_else(|| {
                o.status_files.as_ref().and_then(|f| {
                    f.iter()
                        .filter(|f| !f.ready)
                        .filter_map(|f| f.ctime)
                        .fold(None, |m: Option<f64>, c| Some(m.map_or(c, |m| m.max(c))))
                })
            })
            .map(|t| o.now - t),
        wal_rate_bytes_per_second: o
            .status_files
            .as_deref()
            .and_then(|f| wal_rate(f, ctx.segsz, o.now)),
        archive_rate_bytes_per_second: o
            .status_files
            .as_deref()
            .and_then(|f| archive_rate(f, ctx.segsz, o.now)),
    }
}

pub(super) fn archive_checks(ctx: &Ctx<'_>, a: &ArchiverReport, kind: CauseKind) -> Vec<Check> {
    let o = ctx.o;
    let t = ctx.t;
    let mut out = Vec::new();
    let mode = o.settings.archive_mode.as_deref();
    let ready = a.ready_count.unwrap_or(0);
    let age = a.oldest_ready_age_seconds.unwrap_or(0.0);
    match (ctx.archiving_active(), mode) {
        (None, _) => out.push(Check {
            id: "archiver",
            status: Status::Unknown,
            summary: "archive_mode could not be read".into(),
            evidence: vec![],
            remedy: None,
        }),
        (Some(false), Some(m)) => out.push(Check {
            id: "archiver",
            status: Status::Ok,
            summary: if m == "on" && o.in_recovery == Some(true) {
                "standby with archive_mode = on: the primary archives; set archive_mode = always to archive here too".into()
            } else {
                format!("archive_mode = {m}: nothing is archived, and nothing waits for the archiver")
            },
            evidence: vec![],
            remedy: None,
        }),
        _ => {
            let evidence = archiver_evidence(ctx, a);
            let oldest = a.oldest_ready.clone().unwrap_or_default();
            let external = a.consumer == Some(Consumer::External);
            let behind = archiver_behind(ctx, a);
            match kind {
                CauseKind::ArchiveNotConfigured if ready == 0 => out.push(Check {
                    id: "archiver",
                    status: Status::Ok,
                    summary: format!(
                        "archive_mode = {} with neither archive_command nor archive_library, and no WAL file waits: some external program must be consuming the .ready files, or nothing is archived at all",
                        mode.unwrap_or("on")
                    ),
                    evidence,
                    remedy: None,
                }),
                CauseKind::ArchiveNotConfigured => out.push(Check {
                    id: "archiver",
                    status: Status::Critical,
                    summary: format!(
                        "archive_mode = {} but archive_command and archive_library are empty: {ready} WAL files wait, and nothing shows an external program consuming them",
                        mode.unwrap_or("on")
                    ),
                    evidence,
                    remedy: Some(
                        "ALTER SYSTEM SET archive_command = 'walg wal-push %p'; SELECT pg_reload_conf();  (or ALTER SYSTEM SET archive_mode = off and restart if nothing should be archived). If a program outside PostgreSQL archives the .ready files, say so with --external-archiver (WALG_STATUS_EXTERNAL_ARCHIVER=true): its backlog is then judged by age and count".into(),
                    ),
                }),
                _ if external && behind => {
                    let status = if age > t.ready_age_crit {
                        Status::Critical
                    } else {
                        Status::Warning
                    };
                    out.push(Check {
                        id: "archiver",
                        status,
                        summary: format!(
                            "the external program consuming .ready files is behind: {ready} WAL files wait, the oldest ({oldest}) for {}",
                            human_secs(age)
                        ),
                        evidence,
                        remedy: Some(external_remedy()),
                    });
                }
                _ if external => out.push(Check {
                    id: "archiver",
                    status: Status::Ok,
                    summary: format!(
                        "archive_mode = {} with neither archive_command nor archive_library: an external program consumes the .ready files and keeps up ({ready} WAL files wait)",
                        mode.unwrap_or("on")
                    ),
                    evidence,
                    remedy: None,
                }),
                CauseKind::ArchiveFailing if ready > 0 => {
                    let stuck = a
                        .last_failed_wal
                        .clone()
                        .filter(|f| o.mode == Mode::Online && !f.is_empty())
                        .unwrap_or_else(|| oldest.clone());
                    let since = failing_since(ctx, a);
                    out.push(Check {
                        id: "archiver",
                        status: Status::Critical,
                        summary: match since {
                            Some(s) => format!(
                                "archive_command has failed on {stuck} for {}; {ready} WAL files wait",
                                human_secs(s)
                            ),
                            None => format!("archive_command is failing on {stuck}; {ready} WAL files wait"),
                        },
                        evidence,
                        remedy: Some(format!(
                            "read the server log for \"archive command failed\" and the command's own error on {stuck}; the archiver retries the oldest file forever and never skips it. Test by hand as the postgres user: cd $PGDATA && {}",
                            o.settings
                                .archive_command
                                .as_deref()
                                .filter(|c| !c.is_empty())
                                .map(|c| c.replace("%p", &format!("pg_wal/{stuck}")).replace("%f", &stuck))
                                .unwrap_or_else(|| "<archive_command>".into())
                        )),
                    });
                }
                _ if behind => {
                    let status = if age > t.ready_age_crit {
                        Status::Critical
                    } else {
                        Status::Warning
                    };
                    let mut summary = format!(
                        "archiving is behind: {ready} WAL files wait, the oldest ({oldest}) for {}",
                        human_secs(age)
                    );
                    if let (Some(w), Some(r)) =
                        (a.wal_rate_bytes_per_second, a.archive_rate_bytes_per_second)
                    {
                        summary.push_str(&format!(
                            "; WAL is written at {}/s, archived at {}/s",
                            human_bytes(w as u64),
                            human_bytes(r as u64)
                        ));
                    }
                    out.push(Check {
                        id: "archiver",
                        status,
                        summary,
                        evidence,
                        remedy: Some(
                            "archiving is slower than WAL generation: raise WALG_UPLOAD_CONCURRENCY (walg uploads the next .ready files ahead), use a faster storage or compression (WALG_COMPRESSION_METHOD=lz4), or check the storage's latency".into(),
                        ),
                    });
                }
                _ => out.push(Check {
                    id: "archiver",
                    status: Status::Ok,
                    summary: match &a.last_archived_wal {
                        Some(l) => format!(
                            "archiving keeps up: {ready} WAL files wait; last archived {l}{}",
                            a.last_archived_age_seconds
                                .map(|s| format!(" {} ago", human_secs(s)))
                                .unwrap_or_default()
                        ),
                        None => format!("archiving keeps up: {ready} WAL files wait"),
                    },
                    evidence,
                    remedy: None,
                }),
            }
        }
    }
    out
}

/// A backlog past the thresholds (oldest `.ready` age or count): the same
/// test for PostgreSQL's archiver and an external program.
pub(super) fn archiver_behind(ctx: &Ctx<'_>, a: &ArchiverReport) -> bool {
    let ready = a.ready_count.unwrap_or(0);
    let age = a.oldest_ready_age_seconds.unwrap_or(0.0);
    ready > 0 && (age > ctx.t.ready_age_warn || ready as usize >= ctx.t.ready_count_warn)
}

/// What to do when an external consumer falls behind.
pub(super) fn external_remedy() -> String {
    "check the program outside PostgreSQL that archives pg_wal/<file> and renames pg_wal/archive_status/<file>.ready to .done: it stopped or is slower than WAL generation; PostgreSQL keeps every segment whose .ready is still there".into()
}

pub(super) fn failing_since(ctx: &Ctx<'_>, a: &ArchiverReport) -> Option<f64> {
    // Failing since the later of the last success and the oldest waiting
    // file's creation: nothing was archived after that.
    let o = ctx.o;
    let oldest = a.oldest_ready_age_seconds;
    let last_ok = a.last_archived_age_seconds;
    match (oldest, last_ok) {
        (Some(r), Some(l)) => Some(r.min(l)),
        (Some(r), None) => Some(r),
        (None, l) => l.or_else(|| o.archiver.as_ref()?.last_failed_time.map(|t| o.now - t)),
    }
}

pub(super) fn archiver_evidence(ctx: &Ctx<'_>, a: &ArchiverReport) -> Vec<String> {
    let mut e = Vec::new();
    if a.consumer == Some(Consumer::External) {
        e.push(match external_evidence(ctx) {
            Some(why) => format!("external consumer: {why}"),
            None => "external consumer: declared (--external-archiver)".into(),
        });
    }
    if let Some(n) = a.ready_count {
        let mut s = format!("{n} .ready files");
        if let (Some(o), Some(age)) = (&a.oldest_ready, a.oldest_ready_age_seconds) {
            s.push_str(&format!(", oldest {o} ({} old)", human_secs(age)));
        }
        e.push(s);
    }
    if let Some(f) = a.failed_count {
        let mut s = format!("pg_stat_archiver: failed_count {f}");
        if let Some(w) = &a.last_failed_wal {
            s.push_str(&format!(", last_failed_wal {w}"));
            if let Some(age) = a.last_failed_age_seconds {
                s.push_str(&format!(" {} ago", human_secs(age)));
            }
        }
        if let Some(w) = &a.last_archived_wal {
            s.push_str(&format!(", last_archived_wal {w}"));
            if let Some(age) = a.last_archived_age_seconds {
                s.push_str(&format!(" {} ago", human_secs(age)));
            }
        }
        e.push(s);
    } else if let Some(w) = &a.last_archived_wal {
        e.push(format!(
            "last archived (newest .done): {w}{}",
            a.last_archived_age_seconds
                .map(|s| format!(", {} ago", human_secs(s)))
                .unwrap_or_default()
        ));
    }
    if let Some(w) = a.wal_rate_bytes_per_second {
        e.push(format!("WAL rate about {}/s", human_bytes(w as u64)));
    }
    e
}
