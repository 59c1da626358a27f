//! The checks of the checkpoint, `wal_keep_size`, `pg_wal`'s size and file
//! system, and the archive's content, each a function of the rules'
//! context (the archiver's, the slots' and the summarizer's are in their
//! own modules).
//!
//! `pg_wal` over `max_wal_size` is not a problem by itself: PostgreSQL
//! keeps WAL since the REDO pointer, recycles segments ahead of the insert
//! position up to `XLOGfileslop`'s horizon (at most REDO's segment +
//! `max_wal_size` - 1), preallocates one, and keeps `wal_keep_size`. The
//! size check warns only past that, and only while a source other than the
//! next checkpoint holds WAL or `pg_wal` grows.

use super::rules::*;
use super::*;

pub(super) fn keep_check(ctx: &Ctx<'_>, sources: &[Source]) -> Option<Check> {
    let keep = ctx.o.settings.wal_keep_size?;
    if keep <= 0 {
        return None;
    }
    let binding = sources
        .first()
        .is_some_and(|s| s.r.kind == CauseKind::WalKeepSize);
    Some(Check {
        id: "wal_keep_size",
        status: Status::Ok,
        summary: format!(
            "wal_keep_size = {} keeps that much WAL at all times{}: it explains a large pg_wal, never a growing one",
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
        remedy: None,
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

/// The most `pg_wal` holds without a problem (see the module's doc): from
/// the oldest of the REDO segment and the sources judged normal, to the
/// later of one segment past the current one (preallocated) and the
/// recycling horizon; plus one segment for `.partial`, `.history` and
/// `.backup` files.
pub(super) fn normal_max_bytes(ctx: &Ctx<'_>, sources: &[Source]) -> Option<u64> {
    let o = ctx.o;
    let (_, cur_seg) = ctx.cur?;
    let redo_seg = o.redo_lsn?.0 / ctx.segsz;
    let max_segs = (o.settings.max_wal_size.filter(|m| *m > 0)? as u64 / ctx.segsz).max(2);
    let oldest = sources
        .iter()
        .filter(|s| s.explained)
        .map(|s| s.segno)
        .fold(redo_seg.min(cur_seg), u64::min);
    let newest = (cur_seg + 1).max(redo_seg + max_segs - 1);
    Some((newest - oldest + 2) * ctx.segsz)
}

pub(super) fn wal_report(
    ctx: &Ctx<'_>,
    sources: &[Source],
    cause: Option<&Retention>,
    a: &ArchiverReport,
) -> (WalReport, bool) {
    let o = ctx.o;
    let d = o.pg_wal.as_ref();
    let kind = cause.map(|r| r.kind);
    // pg_wal grows while a source other than the checkpoint holds WAL and
    // does not advance: nothing is removed and every new segment stays.
    let growing = match kind {
        Some(
            CauseKind::ArchiveFailing
            | CauseKind::ArchiveNotConfigured
            | CauseKind::ArchiveBacklog
            | CauseKind::WalSummarizer,
        ) => true,
        Some(CauseKind::ReplicationSlot) => o
            .slots
            .as_ref()
            .and_then(|s| s.iter().find(|s| Some(&s.name) == cause.map(|r| &r.detail)))
            .is_none_or(|s| s.active != Some(true)),
        _ => false,
    };
    let growth = if growing {
        match (
            kind,
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
            normal_max_bytes: normal_max_bytes(ctx, sources),
            fs_total_bytes: d.and_then(|d| d.fs_total),
            fs_free_bytes: available,
            growth_bytes_per_second: growth,
            seconds_until_full: until_full,
        },
        growing,
    )
}

pub(super) fn pg_wal_checks(
    ctx: &Ctx<'_>,
    w: &WalReport,
    cause: Option<&Retention>,
    growing: bool,
) -> Vec<Check> {
    let o = ctx.o;
    let t = ctx.t;
    let mut out = Vec::new();
    if let Some(bytes) = w.bytes {
        let max = o.settings.max_wal_size.filter(|m| *m > 0).map(|m| m as u64);
        let over_max = max.is_some_and(|m| bytes > m);
        // Without the REDO pointer or the current position, the old rule of
        // thumb: 10% over max_wal_size.
        let allowance = w
            .normal_max_bytes
            .or(max.map(|m| m + m / 10))
            .unwrap_or(u64::MAX);
        let beyond = over_max && bytes > allowance;
        let held = cause.is_some_and(|c| c.kind != CauseKind::WalKeepSize);
        let warn = beyond && (held || growing);
        let within = match (max, over_max) {
            (Some(m), false) => format!(" (within max_wal_size {})", human_bytes(m)),
            (Some(m), true) if !beyond => format!(
                " (over max_wal_size {}, within what PostgreSQL's recycling and wal_keep_size keep: up to {})",
                human_bytes(m),
                human_bytes(allowance)
            ),
            (Some(m), true) => format!(
                " (over max_wal_size {}, beyond the {} PostgreSQL's recycling and wal_keep_size keep{})",
                human_bytes(m),
                human_bytes(allowance),
                if warn {
                    ""
                } else {
                    "; the next checkpoint removes the surplus"
                }
            ),
            (None, _) => String::new(),
        };
        out.push(Check {
            id: "pg_wal_size",
            status: if warn { Status::Warning } else { Status::Ok },
            summary: format!(
                "pg_wal holds {}{within}{}",
                human_bytes(bytes),
                if growing { " and grows" } else { "" }
            ),
            evidence: w
                .segments
                .map(|s| vec![format!("{s} segment files")])
                .unwrap_or_default(),
            remedy: warn.then(|| {
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
        // Given up on purpose: the budget's checks say it.
        .filter(|n| !super::budget::is_given_up(ctx, n))
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
