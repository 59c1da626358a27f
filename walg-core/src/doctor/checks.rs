//! The checks: one verdict per concern (archiver, slots, checkpoints,
//! `pg_wal` and its file system, the archive's content), each a function of
//! the rules' context.

use super::rules::*;
use super::*;

pub(super) fn archiver_report(ctx: &Ctx<'_>) -> ArchiverReport {
    let o = ctx.o;
    let ready = ctx.ready();
    let oldest = ready.as_ref().and_then(|r| r.first().copied());
    let a = o.archiver.as_ref();
    ArchiverReport {
        archive_mode: o.settings.archive_mode.clone(),
        configured: ctx.archive_configured(),
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
            let evidence = archiver_evidence(a);
            let oldest = a.oldest_ready.clone().unwrap_or_default();
            match kind {
                CauseKind::ArchiveNotConfigured => out.push(Check {
                    id: "archiver",
                    status: if ready > 0 { Status::Critical } else { Status::Warning },
                    summary: format!(
                        "archive_mode = {} but archive_command and archive_library are empty: {ready} WAL files wait, none will ever be archived",
                        mode.unwrap_or("on")
                    ),
                    evidence,
                    remedy: Some(
                        "ALTER SYSTEM SET archive_command = 'walg wal-push %p'; SELECT pg_reload_conf();  (or ALTER SYSTEM SET archive_mode = off and restart if nothing should be archived)".into(),
                    ),
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
                _ if ready > 0
                    && (age > t.ready_age_warn || ready as usize >= t.ready_count_warn) =>
                {
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

pub(super) fn archiver_evidence(a: &ArchiverReport) -> Vec<String> {
    let mut e = Vec::new();
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

pub(super) fn slot_checks(ctx: &Ctx<'_>) -> (Vec<SlotReport>, Vec<Check>) {
    let o = ctx.o;
    let Some(slots) = &o.slots else {
        return (vec![], vec![]);
    };
    let max_wal = o.settings.max_wal_size.filter(|m| *m > 0).map(|m| m as u64);
    let warn_at = ctx.t.slot_retained_warn.or(max_wal);
    let mut reports = Vec::new();
    let mut checks = Vec::new();
    for s in slots {
        let retained = s.restart_lsn.and_then(|l| {
            let (cur, _) = ctx.cur?;
            Some(cur.0.saturating_sub(l.0))
        });
        let wal_status = s.wal_status.clone().or_else(|| {
            // Offline: what GetWALAvailability would say.
            if s.invalidated {
                return Some("lost".into());
            }
            let r = retained?;
            Some(match max_wal {
                Some(m) if r > m + ctx.segsz => "extended".into(),
                _ => "reserved".into(),
            })
        });
        reports.push(SlotReport {
            name: s.name.clone(),
            slot_type: s.slot_type.clone(),
            active: s.active,
            temporary: s.temporary,
            restart_lsn: s.restart_lsn.map(|l| l.to_string()),
            retained_bytes: retained,
            wal_status: wal_status.clone(),
            safe_wal_size: s.safe_wal_size,
        });
        let activity = match s.active {
            Some(true) => "active",
            Some(false) => "inactive",
            None => "activity unknown offline",
        };
        let mut evidence = vec![format!(
            "{} slot, {activity}, restart_lsn {}, wal_status {}",
            s.slot_type,
            s.restart_lsn
                .map(|l| l.to_string())
                .unwrap_or_else(|| "none".into()),
            wal_status.as_deref().unwrap_or("unknown")
        )];
        if let Some(safe) = s.safe_wal_size {
            evidence.push(format!(
                "safe_wal_size {}: max_slot_wal_keep_size invalidates the slot after that much more WAL",
                human_bytes(safe.max(0) as u64)
            ));
        }
        let drop_sql = format!(
            "SELECT pg_drop_replication_slot('{}');",
            s.name.replace('\'', "''")
        );
        let lost = s.invalidated || wal_status.as_deref() == Some("lost");
        if lost {
            checks.push(Check {
                id: "replication_slot",
                status: Status::Warning,
                summary: format!(
                    "replication slot \"{}\" is invalidated: it holds no WAL any more, and its consumer can no longer resume from it",
                    s.name
                ),
                evidence,
                remedy: Some(format!(
                    "rebuild the consumer (a new base backup for a standby) and recreate the slot; {drop_sql}"
                )),
            });
            continue;
        }
        let Some(retained) = retained else {
            continue;
        };
        let mut status = Status::Ok;
        let mut summary = format!(
            "replication slot \"{}\" ({} , {activity}) retains {}",
            s.name,
            s.slot_type,
            human_bytes(retained)
        )
        .replace(" ,", ",");
        let mut remedy = None;
        if warn_at.is_some_and(|w| retained > w) || wal_status.as_deref() == Some("unreserved") {
            status = Status::Warning;
            remedy = Some(if s.active == Some(true) {
                format!(
                    "the consumer is connected but lags: check pg_stat_replication for slot \"{}\"; if it cannot catch up, set max_slot_wal_keep_size to bound what a slot may hold",
                    s.name
                )
            } else {
                format!(
                    "restart the slot's consumer (standby, pg_receivewal, logical subscriber), or drop the slot if nothing uses it: {drop_sql}  Bound the damage with ALTER SYSTEM SET max_slot_wal_keep_size = '...'; SELECT pg_reload_conf();"
                )
            });
        }
        if s.slot_type == "logical" {
            if let (Some(c), Some(r)) = (s.confirmed_flush, s.restart_lsn) {
                let behind = c.0.saturating_sub(r.0);
                if behind > ctx.segsz {
                    evidence.push(format!(
                        "confirmed_flush_lsn {c} is {} ahead of restart_lsn: decoding must restart from an old transaction",
                        human_bytes(behind)
                    ));
                    if let Some(x) = &o.oldest_xact {
                        let age = o.now - x.xact_start;
                        let what = if x.prepared {
                            format!(
                                "prepared transaction {:?} ({} old)",
                                x.gid.as_deref().unwrap_or("?"),
                                human_secs(age)
                            )
                        } else {
                            format!(
                                "transaction of pid {} open for {}{}",
                                x.pid,
                                human_secs(age),
                                x.state
                                    .as_deref()
                                    .map(|s| format!(" ({s})"))
                                    .unwrap_or_default()
                            )
                        };
                        summary.push_str(&format!("; pinned by the {what}"));
                        if status == Status::Ok
                            && (age > ctx.t.xact_age_warn || behind > ctx.segsz * 4)
                        {
                            status = Status::Warning;
                        }
                        remedy = Some(if x.prepared {
                            format!(
                                "COMMIT PREPARED or ROLLBACK PREPARED {:?}; the slot advances once no older transaction is open",
                                x.gid.as_deref().unwrap_or("?")
                            )
                        } else {
                            format!(
                                "end the old transaction (SELECT pg_terminate_backend({}); if it must go); the slot advances once no older transaction is open",
                                x.pid
                            )
                        });
                    }
                }
            }
        }
        checks.push(Check {
            id: "replication_slot",
            status,
            summary,
            evidence,
            remedy,
        });
    }
    (reports, checks)
}

pub(super) fn keep_check(ctx: &Ctx<'_>, sources: &[(u64, Retention, u8)]) -> Option<Check> {
    let keep = ctx.o.settings.wal_keep_size?;
    if keep <= 0 {
        return None;
    }
    let max_wal = ctx.o.settings.max_wal_size.unwrap_or(i64::MAX);
    let binding = sources
        .first()
        .is_some_and(|(_, r, _)| r.kind == CauseKind::WalKeepSize);
    let status = if binding && keep > max_wal {
        Status::Warning
    } else {
        Status::Ok
    };
    Some(Check {
        id: "wal_keep_size",
        status,
        summary: format!(
            "wal_keep_size = {} keeps that much WAL at all times{}",
            human_bytes(keep as u64),
            if binding {
                " and holds the oldest segment now"
            } else {
                ""
            }
        ),
        evidence: vec![format!(
            "max_wal_size {}",
            ctx.o
                .settings
                .max_wal_size
                .map(|m| human_bytes(m.max(0) as u64))
                .unwrap_or_else(|| "unknown".into())
        )],
        remedy: (status != Status::Ok).then(|| {
            "wal_keep_size explains a large pg_wal, never a growing one; lower it if standbys use slots or an archive: ALTER SYSTEM SET wal_keep_size = '1GB'; SELECT pg_reload_conf();".into()
        }),
    })
}

/// A checkpoint (or restartpoint) that should have happened long ago.
pub(super) fn checkpoint_stuck(ctx: &Ctx<'_>) -> bool {
    let o = ctx.o;
    let (Some(time), Some(timeout), Some((cur, _)), Some(redo)) = (
        o.checkpoint_time,
        o.settings.checkpoint_timeout,
        ctx.cur,
        o.redo_lsn,
    ) else {
        return false;
    };
    let distance = cur.0.saturating_sub(redo.0);
    let age = o.now - time;
    let max_wal = o.settings.max_wal_size.unwrap_or(i64::MAX).max(0) as u64;
    // An idle server skips checkpoints: age alone means nothing.
    (age > 2.0 * timeout + 60.0 && distance > 2 * ctx.segsz) || distance > max_wal.saturating_mul(2)
}

pub(super) fn checkpoint_check(ctx: &Ctx<'_>) -> Option<Check> {
    let o = ctx.o;
    let redo = o.redo_lsn?;
    let (cur, _) = ctx.cur?;
    let distance = cur.0.saturating_sub(redo.0);
    let age = o.checkpoint_time.map(|t| o.now - t);
    let what = if o.in_recovery == Some(true) {
        "restartpoint"
    } else {
        "checkpoint"
    };
    let stuck = checkpoint_stuck(ctx);
    Some(Check {
        id: "checkpoint",
        status: if stuck { Status::Warning } else { Status::Ok },
        summary: format!(
            "last {what}{}; REDO {redo} is {} behind",
            age.map(|a| format!(" {} ago", human_secs(a))).unwrap_or_default(),
            human_bytes(distance)
        ),
        evidence: vec![format!(
            "checkpoint_timeout {}, max_wal_size {}",
            o.settings
                .checkpoint_timeout
                .map(human_secs)
                .unwrap_or_else(|| "unknown".into()),
            o.settings
                .max_wal_size
                .map(|m| human_bytes(m.max(0) as u64))
                .unwrap_or_else(|| "unknown".into())
        )],
        remedy: stuck.then(|| {
            if o.in_recovery == Some(true) {
                "a standby removes WAL only at restartpoints, which follow the primary's checkpoint records: check that the standby replays (pg_stat_wal_receiver, replay lag) and that the primary checkpoints".into()
            } else {
                "checkpoints are late or failing: look for checkpointer errors in the server log; run CHECKPOINT; consider a lower checkpoint_timeout or max_wal_size".into()
            }
        }),
    })
}

pub(super) fn wal_report(
    ctx: &Ctx<'_>,
    sources: &[(u64, Retention, u8)],
    a: &ArchiverReport,
) -> (WalReport, bool) {
    let o = ctx.o;
    let d = o.pg_wal.as_ref();
    let binding = sources.first().map(|(_, r, _)| r.kind);
    // pg_wal grows while a source other than the checkpoint binds: nothing
    // is removed and every new segment stays.
    let growing = matches!(
        binding,
        Some(
            CauseKind::ArchiveFailing
                | CauseKind::ArchiveNotConfigured
                | CauseKind::ArchiveBacklog
                | CauseKind::ReplicationSlot
        )
    ) && {
        let inactive_or_stuck = match binding {
            Some(CauseKind::ReplicationSlot) => o
                .slots
                .as_ref()
                .and_then(|s| {
                    s.iter()
                        .find(|s| Some(&s.name) == sources.first().map(|x| &x.1.detail))
                })
                .is_none_or(|s| s.active != Some(true)),
            _ => true,
        };
        inactive_or_stuck
    };
    let growth = if growing {
        match (
            binding,
            a.wal_rate_bytes_per_second,
            a.archive_rate_bytes_per_second,
        ) {
            (Some(CauseKind::ArchiveBacklog), Some(w), Some(r)) => Some((w - r).max(0.0)),
            (_, Some(w), _) => Some(w),
            _ => None,
        }
    } else {
        None
    };
    let available = d.and_then(|d| d.fs_available);
    let until_full = match (growth, available) {
        (Some(g), Some(f)) if g > 0.0 => Some(f as f64 / g),
        _ => None,
    };
    (
        WalReport {
            bytes: d.map(|d| d.bytes),
            segments: d.map(|d| d.segments),
            max_wal_size_bytes: o.settings.max_wal_size,
            fs_total_bytes: d.and_then(|d| d.fs_total),
            fs_free_bytes: available,
            growth_bytes_per_second: growth,
            seconds_until_full: until_full,
        },
        growing,
    )
}

pub(super) fn pg_wal_checks(ctx: &Ctx<'_>, w: &WalReport, growing: bool) -> Vec<Check> {
    let o = ctx.o;
    let t = ctx.t;
    let mut out = Vec::new();
    if let Some(bytes) = w.bytes {
        let max = o.settings.max_wal_size;
        let over = max.is_some_and(|m| m > 0 && bytes as f64 > m as f64 * 1.1);
        out.push(Check {
            id: "pg_wal_size",
            status: if over { Status::Warning } else { Status::Ok },
            summary: format!(
                "pg_wal holds {}{}{}",
                human_bytes(bytes),
                max.map(|m| format!(
                    " ({} max_wal_size {})",
                    if over { "over" } else { "within" },
                    human_bytes(m.max(0) as u64)
                ))
                .unwrap_or_default(),
                if growing { " and grows" } else { "" }
            ),
            evidence: w
                .segments
                .map(|s| vec![format!("{s} segment files")])
                .unwrap_or_default(),
            remedy: over.then(|| {
                "max_wal_size is a soft limit; pg_wal exceeds it because of the binding cause above: fix that, not max_wal_size".into()
            }),
        });
    }
    if let (Some(total), Some(free)) = (w.fs_total_bytes, w.fs_free_bytes) {
        let pct = if total > 0 {
            free as f64 * 100.0 / total as f64
        } else {
            0.0
        };
        let mut status = if pct < t.fs_free_crit_pct {
            Status::Critical
        } else if pct < t.fs_free_warn_pct {
            Status::Warning
        } else {
            Status::Ok
        };
        let mut summary = format!(
            "file system of pg_wal: {} free of {} ({pct:.0}%)",
            human_bytes(free),
            human_bytes(total)
        );
        if let (Some(g), Some(s)) = (w.growth_bytes_per_second, w.seconds_until_full) {
            summary.push_str(&format!(
                "; full in about {} at {}/s",
                human_secs(s),
                human_bytes(g as u64)
            ));
            if s < t.full_crit_seconds {
                status = Status::Critical;
            } else if s < t.full_warn_seconds && status == Status::Ok {
                status = Status::Warning;
            }
        }
        out.push(Check {
            id: "filesystem",
            status,
            summary,
            evidence: vec![],
            remedy: (status != Status::Ok).then(|| {
                "a full pg_wal stops PostgreSQL (PANIC): fix the binding cause first; as a last resort add space to the file system holding pg_wal. Never delete files from pg_wal by hand".into()
            }),
        });
    }
    if let Some(d) = &o.pg_wal {
        let old_temp: Vec<&ForeignFile> =
            d.temp.iter().filter(|f| f.age_seconds > 3600.0).collect();
        if !d.foreign.is_empty() || !old_temp.is_empty() || !d.orphan_status.is_empty() {
            let mut evidence: Vec<String> = d
                .foreign
                .iter()
                .chain(old_temp.iter().copied())
                .take(20)
                .map(|f| {
                    format!(
                        "{} ({}, {} old)",
                        f.name,
                        human_bytes(f.bytes),
                        human_secs(f.age_seconds)
                    )
                })
                .collect();
            evidence.extend(
                d.orphan_status
                    .iter()
                    .take(10)
                    .map(|n| format!("archive_status/{n}.ready without its segment")),
            );
            let bytes: u64 = d
                .foreign
                .iter()
                .chain(old_temp.iter().copied())
                .map(|f| f.bytes)
                .sum();
            out.push(Check {
                id: "foreign_files",
                status: Status::Warning,
                summary: format!(
                    "{} files in pg_wal are not PostgreSQL's ({}); PostgreSQL never removes them",
                    d.foreign.len() + old_temp.len() + d.orphan_status.len(),
                    human_bytes(bytes)
                ),
                evidence,
                remedy: Some(
                    "move them out of pg_wal after checking what wrote them (a copy left by hand, an old tool); never remove segment files".into(),
                ),
            });
        } else {
            out.push(Check {
                id: "foreign_files",
                status: Status::Ok,
                summary: "no foreign or orphan files in pg_wal".into(),
                evidence: vec![],
                remedy: None,
            });
        }
    }
    out
}

pub(super) fn archive_content_checks(ctx: &Ctx<'_>) -> Vec<Check> {
    let Some(a) = &ctx.o.archive else {
        return vec![];
    };
    let mut out = Vec::new();
    let missing: Vec<&String> = a
        .archived
        .iter()
        .filter(|(_, s)| s.is_none())
        .map(|(n, _)| n)
        .collect();
    if !a.errors.is_empty() {
        out.push(Check {
            id: "archive",
            status: Status::Unknown,
            summary: format!("could not check the archive: {}", a.errors.join("; ")),
            evidence: vec![],
            remedy: Some("walg st check shows each storage's state".into()),
        });
    } else if !missing.is_empty() {
        out.push(Check {
            id: "archive",
            status: Status::Critical,
            summary: format!(
                "PostgreSQL marked {} archived but no configured storage has it",
                missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            ),
            evidence: vec![
                "archive_command may point to another archive than walg's settings, or the archive lost files".into(),
            ],
            remedy: Some(
                "compare archive_command with walg's configuration; take a new base backup once archiving is right (walg wal-verify checks the whole archive)".into(),
            ),
        });
    } else if !a.archived.is_empty() {
        out.push(Check {
            id: "archive",
            status: Status::Ok,
            summary: format!(
                "the archive holds what PostgreSQL marked archived ({})",
                a.archived
                    .iter()
                    .map(|(n, s)| format!("{n} in {}", s.as_deref().unwrap_or("?")))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            evidence: vec![],
            remedy: None,
        });
    }
    if let Some((name, Some(storage))) = &a.oldest_ready {
        out.push(Check {
            id: "archive_conflict",
            status: Status::Warning,
            summary: format!(
                "{name} still waits for the archiver but storage {storage:?} already holds it"
            ),
            evidence: vec![
                "if archive_command keeps failing on it, the stored copy differs from the local one".into(),
            ],
            remedy: Some(
                "another cluster may archive into the same prefix, or a different copy was stored; compare the system identifiers; never remove the local file".into(),
            ),
        });
    }
    out
}
