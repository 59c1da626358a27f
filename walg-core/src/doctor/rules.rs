//! The retention rules: which source holds the oldest segment (the binding
//! cause), the next one, and the rates that say whether `pg_wal` grows.
//!
//! PostgreSQL's rules as `RemoveOldXlogFiles` and `KeepLogSeg` apply them;
//! [`diagnose`] is the entry point and assembles the report from the
//! checks in [`super::checks`].

use super::archiver::*;
use super::budget::*;
use super::checks::*;
use super::drain::*;
use super::slots::*;
use super::summarizer::*;
use super::*;
use crate::wal::{Lsn, Segment, WalName};

pub(super) fn seg_of(name: &str) -> Option<Segment> {
    let base = name.strip_suffix(".partial").unwrap_or(name);
    match WalName::parse(base).ok()? {
        WalName::Segment(s) => Some(s),
        _ => None,
    }
}

/// Segment number of a WAL file name, timeline ignored (as
/// `RemoveOldXlogFiles` compares names from the 9th character on).
pub(super) fn segno_of(name: &str, segsz: u64) -> Option<u64> {
    seg_of(name).map(|s| s.number(segsz))
}

pub(super) fn name_of(segno: u64, tli: u32, segsz: u64) -> String {
    Segment::from_number(tli, segno, segsz).to_string()
}

pub(super) struct Ctx<'a> {
    pub(super) o: &'a Observation,
    pub(super) t: &'a Thresholds,
    pub(super) segsz: u64,
    /// Current position and its segment number.
    pub(super) cur: Option<(Lsn, u64)>,
}

impl Ctx<'_> {
    pub(super) fn retained(&self, segno: u64) -> Option<u64> {
        let (lsn, _) = self.cur?;
        Some(lsn.0.saturating_sub(segno * self.segsz))
    }

    pub(super) fn archiving_active(&self) -> Option<bool> {
        let mode = self.o.settings.archive_mode.as_deref()?;
        Some(match mode {
            "always" => true,
            "on" => self.o.in_recovery != Some(true),
            _ => false,
        })
    }

    pub(super) fn archive_configured(&self) -> Option<bool> {
        let s = &self.o.settings;
        let cmd = s.archive_command.as_deref()?;
        let lib = s.archive_library.as_deref().unwrap_or("");
        Some(!(cmd.trim().is_empty() || cmd == "(disabled)") || !lib.trim().is_empty())
    }

    /// `.ready` WAL files (segments and partials), oldest first.
    pub(super) fn ready(&self) -> Option<Vec<&StatusFile>> {
        let files = self.o.status_files.as_ref()?;
        let mut r: Vec<&StatusFile> = files
            .iter()
            .filter(|f| f.ready && seg_of(&f.name).is_some())
            .collect();
        r.sort_by(|a, b| a.name[8..].cmp(&b.name[8..]).then(a.name.cmp(&b.name)));
        Some(r)
    }

    pub(super) fn all_ready_count(&self) -> Option<u64> {
        self.o
            .status_files
            .as_ref()
            .map(|f| f.iter().filter(|f| f.ready).count() as u64)
    }
}

/// WAL generation rate from the completion times of the segments whose
/// status files are still there (`.ready` and `.done`, by mtime).
pub(super) fn wal_rate(files: &[StatusFile], segsz: u64, now: f64) -> Option<f64> {
    let mut times: Vec<f64> = files
        .iter()
        .filter(|f| seg_of(&f.name).is_some() && now - f.mtime < 3600.0)
        .map(|f| f.mtime)
        .collect();
    if times.len() < 3 {
        return None;
    }
    times.sort_by(f64::total_cmp);
    // Up to now, not to the newest file: a burst followed by silence is not
    // a sustained rate.
    let span = now.max(times[times.len() - 1]) - times[0];
    (span >= 1.0).then(|| (times.len() - 1) as f64 * segsz as f64 / span)
}

/// Archive rate from when recent `.done` files were renamed (ctime).
pub(super) fn archive_rate(files: &[StatusFile], segsz: u64, now: f64) -> Option<f64> {
    let mut times: Vec<f64> = files
        .iter()
        .filter(|f| !f.ready && seg_of(&f.name).is_some())
        .filter_map(|f| f.ctime)
        .filter(|c| now - c < 3600.0)
        .collect();
    if times.len() < 3 {
        return None;
    }
    times.sort_by(f64::total_cmp);
    let span = times[times.len() - 1] - times[0];
    (span >= 1.0).then(|| (times.len() - 1) as f64 * segsz as f64 / span)
}

/// One retention source: the oldest segment it holds, and whether it holds
/// it as PostgreSQL normally does.
pub(super) struct Source {
    pub(super) segno: u64,
    pub(super) r: Retention,
    /// Order among sources holding the same segment: the one that would
    /// stay when another is fixed comes first.
    prio: u8,
    /// Worth naming as the cause: a problem, an inactive slot, or
    /// `wal_keep_size` (a setting that explains a large pg_wal).
    pub(super) is_cause: bool,
    /// Counted in pg_wal's normal size: the next checkpoint frees it, or its
    /// own check finds nothing wrong.
    pub(super) explained: bool,
}

/// Computes the report.
pub fn diagnose(o: &Observation, t: &Thresholds) -> Report {
    let segsz = o.segment_size;
    let tli = o.timeline.unwrap_or(1);
    let cur = o.current_lsn.map(|l| (l, l.0 / segsz));
    let ctx = Ctx { o, t, segsz, cur };
    let mut checks = Vec::new();
    let consumer = consumer(&ctx);
    let archiver = archiver_report(&ctx, consumer);
    let summarizer = summarizer(&ctx);

    // Retention sources.
    let mut sources: Vec<Source> = Vec::new();
    let mut push_source =
        |segno: u64, kind, detail: String, prio, is_cause: bool, explained: bool| {
            sources.push(Source {
                segno,
                r: Retention {
                    kind,
                    detail,
                    oldest_segment: name_of(segno, tli, segsz),
                    retained_bytes: ctx.retained(segno).unwrap_or(0),
                },
                prio,
                is_cause,
                explained,
            });
        };

    // The archiver: a backlog within the thresholds is the normal lag of
    // an archiver that keeps up.
    let archiver_kind = archive_kind(&ctx, consumer);
    if ctx.archiving_active() != Some(false) {
        if let Some(oldest) = ctx.ready().as_ref().and_then(|r| r.first().copied()) {
            if let Some(segno) = segno_of(&oldest.name, segsz) {
                let normal =
                    archiver_kind == CauseKind::ArchiveBacklog && !archiver_behind(&ctx, &archiver);
                push_source(
                    segno,
                    archiver_kind,
                    format!("{}.ready", oldest.name),
                    0,
                    !normal,
                    normal,
                );
            }
        }
    }

    // Slots.
    let slot_keep = o.settings.max_slot_wal_keep_size.filter(|v| *v >= 0);
    if let (Some(slots), Some((cur_lsn, cur_seg))) = (&o.slots, cur) {
        let holding = slots
            .iter()
            .filter(|s| !s.invalidated && s.wal_status.as_deref() != Some("lost"))
            .filter_map(|s| s.restart_lsn.map(|l| (l, s)))
            .min_by_key(|(l, _)| *l);
        if let Some((lsn, slot)) = holding {
            let mut segno = lsn.0 / segsz;
            if let Some(keep) = slot_keep {
                let keep_segs = keep as u64 / segsz;
                if cur_seg.saturating_sub(segno) > keep_segs {
                    segno = cur_seg - keep_segs;
                }
            }
            // An active slot holding less than the warning threshold is a
            // consumer a little behind: normal. An inactive one is named
            // even when it holds little: nothing advances it.
            let warn_at = t.slot_retained_warn.or(o
                .settings
                .max_wal_size
                .filter(|m| *m > 0)
                .map(|m| m as u64));
            let small = warn_at.is_some_and(|w| cur_lsn.0.saturating_sub(lsn.0) <= w);
            // Decoding pinned by an old transaction (see the slot's check).
            let pinned = slot.slot_type == "logical"
                && o.oldest_xact.is_some()
                && slot
                    .confirmed_flush
                    .is_some_and(|c| c.0.saturating_sub(lsn.0) > segsz);
            let normal = slot.active == Some(true) && small && !pinned;
            push_source(
                segno,
                CauseKind::ReplicationSlot,
                slot.name.clone(),
                1,
                !normal,
                normal,
            );
        }
    }

    // wal_keep_size: constant, so it explains a large pg_wal, never a
    // growing one.
    if let (Some(keep), Some((_, cur_seg))) = (o.settings.wal_keep_size, cur) {
        let keep_segs = keep.max(0) as u64 / segsz;
        if keep_segs > 0 {
            let segno = cur_seg.saturating_sub(keep_segs).max(1);
            push_source(
                segno,
                CauseKind::WalKeepSize,
                format!("wal_keep_size = {}", human_bytes(keep as u64)),
                2,
                true,
                true,
            );
        }
    }

    // The last checkpoint.
    if let Some(redo) = o.redo_lsn {
        let stuck = checkpoint_stuck(&ctx);
        push_source(
            redo.0 / segsz,
            CauseKind::Checkpoint,
            format!("REDO {redo}"),
            3,
            stuck,
            !stuck,
        );
    }

    // The WAL summarizer (17+): it trails the REDO pointer by up to a
    // checkpoint cycle when it works, so a tie goes to the checkpoint.
    if let Some(s) = &summarizer {
        push_source(
            s.segno,
            CauseKind::WalSummarizer,
            format!("summarized up to {}", s.lsn),
            4,
            s.lagging,
            !s.lagging,
        );
    }
    sources.sort_by_key(|s| (s.segno, s.prio));

    // Checks.
    checks.extend(archive_checks(&ctx, &archiver, archiver_kind));
    let (slot_reports, slot_checks) = slot_checks(&ctx);
    checks.extend(slot_checks);
    checks.extend(wal_level_check(&ctx));
    checks.extend(summarizer_check(&ctx));
    checks.extend(keep_check(&ctx, &sources));
    checks.extend(checkpoint_check(&ctx));

    // The cause: the oldest source that is one (a source holding WAL as
    // PostgreSQL normally does is not), and the next one of another kind.
    let cause_at = sources.iter().position(|s| s.is_cause);
    let cause_source = cause_at.map(|i| &sources[i].r);
    let (wal_report, growing) = wal_report(&ctx, &sources, cause_source, &archiver);
    checks.extend(pg_wal_checks(&ctx, &wal_report, cause_source, growing));
    checks.extend(archive_content_checks(&ctx));
    let failover_drain = drain_rows(&ctx);
    checks.extend(drain_checks(&failover_drain));
    let (budget_checks, budget) = budget_checks(&ctx);
    checks.extend(budget_checks);
    for (area, msg) in &o.problems {
        checks.push(Check {
            id: "read",
            status: Status::Unknown,
            summary: format!("could not read {area}: {msg}"),
            evidence: vec![],
            remedy: {
                let m = msg.to_ascii_lowercase();
                (m.contains("permission denied") || m.contains("hidden from this role")).then(|| {
                    "run walg wal-status as a role with pg_monitor, or as the postgres OS user with --pgdata".into()
                })
            },
        });
    }
    for (area, msg) in &o.notes {
        checks.push(Check {
            id: "read",
            status: Status::Ok,
            summary: format!("{area}: {msg}"),
            evidence: vec![],
            remedy: None,
        });
    }

    let cause = match cause_source {
        Some(r) => cause_for(&ctx, r, &archiver),
        None => no_cause(&wal_report),
    };
    let next_cause = cause_at.and_then(|i| {
        sources
            .iter()
            .skip(i + 1)
            .find(|s| s.is_cause && s.r.kind != sources[i].r.kind)
            .map(|s| cause_for(&ctx, &s.r, &archiver))
    });

    let retention: Vec<Retention> = sources.into_iter().map(|s| s.r).collect();
    checks.sort_by_key(|c| std::cmp::Reverse(c.status.rank()));

    let anything_read = o.current_lsn.is_some()
        || o.status_files.is_some()
        || o.archiver.is_some()
        || o.pg_wal.is_some()
        || o.slots.is_some();
    let worst = checks
        .iter()
        .map(|c| c.status)
        .max_by_key(|s| s.rank())
        .unwrap_or(Status::Ok);
    let status = if !anything_read {
        Status::Unknown
    } else if worst == Status::Unknown {
        // Something could not be looked at: not a clean bill of health.
        Status::Warning
    } else {
        worst
    };
    let headline = headline(&ctx, &cause, &wal_report, growing, &checks, status);
    let server = ServerReport {
        version: o.server_version.clone(),
        major_version: o.major_version,
        in_recovery: o.in_recovery,
        system_identifier: o.system_identifier.map(|s| s.to_string()),
        timeline: o.timeline,
        segment_size: segsz,
        current_lsn: o.current_lsn.map(|l| l.to_string()),
        current_segment: cur.map(|(_, s)| name_of(s, tli, segsz)),
        redo_lsn: o.redo_lsn.map(|l| l.to_string()),
        checkpoint_age_seconds: o.checkpoint_time.map(|c| o.now - c),
    };
    Report {
        status,
        mode: o.mode,
        headline,
        cause,
        next_cause,
        retention,
        archiver,
        slots: slot_reports,
        summarizer: summarizer_report(&ctx),
        pg_wal: wal_report,
        server,
        failover_drain,
        budget,
        checks,
    }
}

pub(super) fn cause_for(ctx: &Ctx<'_>, r: &Retention, a: &ArchiverReport) -> Cause {
    let o = ctx.o;
    let retained = Some(r.retained_bytes);
    match r.kind {
        CauseKind::ArchiveNotConfigured => Cause {
            kind: r.kind,
            summary: format!(
                "archive_mode = {} but no archive_command or archive_library is set: {} WAL files wait forever",
                o.settings.archive_mode.as_deref().unwrap_or("on"),
                a.ready_count.unwrap_or(0)
            ),
            remedy: Some("ALTER SYSTEM SET archive_command = 'walg wal-push %p'; SELECT pg_reload_conf();  (if a program outside PostgreSQL consumes the .ready files: --external-archiver)".into()),
            segment: a.oldest_ready.clone(),
            slot: None,
            retained_bytes: retained,
        },
        CauseKind::ArchiveFailing => {
            let what = if a.consumer == Some(Consumer::ArchiveLibrary) {
                "archive_library"
            } else {
                "archive_command"
            };
            let stuck = a
                .last_failed_wal
                .clone()
                .filter(|_| o.mode == Mode::Online)
                .or_else(|| a.oldest_ready.clone());
            let since = failing_since(ctx, a);
            let stuck_s = stuck.clone().unwrap_or_default();
            Cause {
                kind: r.kind,
                summary: match since {
                    Some(s) => format!("{what} has failed on {stuck_s} for {}", human_secs(s)),
                    None => format!("{what} is failing on {stuck_s}"),
                },
                remedy: Some(format!(
                    "fix {what} (the server log has its error for {stuck_s}); PostgreSQL retries it forever and archives the rest once it succeeds"
                )),
                segment: stuck,
                slot: None,
                retained_bytes: retained,
            }
        }
        CauseKind::ArchiveBacklog => Cause {
            kind: r.kind,
            summary: format!(
                "{}: {} WAL files wait, the oldest {} for {}",
                if a.consumer == Some(Consumer::External) {
                    "the external program consuming .ready files is behind"
                } else {
                    "archiving is slower than WAL generation"
                },
                a.ready_count.unwrap_or(0),
                a.oldest_ready.as_deref().unwrap_or("?"),
                a.oldest_ready_age_seconds.map(human_secs).unwrap_or_else(|| "?".into())
            ),
            remedy: Some(if a.consumer == Some(Consumer::External) {
                external_remedy()
            } else {
                "raise WALG_UPLOAD_CONCURRENCY, or use a faster storage; the backlog drains once archiving outpaces WAL".into()
            }),
            segment: a.oldest_ready.clone(),
            slot: None,
            retained_bytes: retained,
        },
        CauseKind::ReplicationSlot => {
            let slot = o
                .slots
                .as_ref()
                .and_then(|s| s.iter().find(|s| s.name == r.detail));
            let activity = match slot.and_then(|s| s.active) {
                Some(true) => "active",
                Some(false) => "inactive",
                None => "",
            };
            let kind = slot.map(|s| s.slot_type.as_str()).unwrap_or("");
            let desc = [kind, activity]
                .iter()
                .filter(|s| !s.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join(", ");
            let pinned = slot.is_some_and(|s| s.slot_type == "logical") && o.oldest_xact.is_some();
            Cause {
                kind: r.kind,
                summary: format!(
                    "replication slot \"{}\"{} holds {} of WAL{}",
                    r.detail,
                    if desc.is_empty() { String::new() } else { format!(" ({desc})") },
                    human_bytes(r.retained_bytes),
                    if pinned { ", pinned by an old transaction" } else { "" }
                ),
                remedy: Some(if pinned {
                    "end the oldest open transaction (see the replication_slot check); the slot then advances".into()
                } else if slot.and_then(|s| s.active) == Some(true) {
                    "the consumer lags: check it (pg_stat_replication); set max_slot_wal_keep_size to bound the slot".into()
                } else {
                    format!(
                        "restart the slot's consumer, or drop the slot if unused: SELECT pg_drop_replication_slot('{}');",
                        r.detail.replace('\'', "''")
                    )
                }),
                segment: Some(r.oldest_segment.clone()),
                slot: Some(r.detail.clone()),
                retained_bytes: retained,
            }
        }
        CauseKind::WalKeepSize => Cause {
            kind: r.kind,
            summary: format!("{} keeps {} of WAL", r.detail, human_bytes(r.retained_bytes)),
            remedy: Some("lower wal_keep_size if nothing needs it: ALTER SYSTEM SET wal_keep_size = '...'; SELECT pg_reload_conf();".into()),
            segment: Some(r.oldest_segment.clone()),
            slot: None,
            retained_bytes: retained,
        },
        CauseKind::Checkpoint => Cause {
            kind: r.kind,
            summary: format!(
                "WAL since the last checkpoint's {} ({} ) waits for the next checkpoint",
                r.detail,
                human_bytes(r.retained_bytes)
            )
            .replace(" )", ")"),
            remedy: Some(
                "WAL is removed only at checkpoints: check the checkpointer (server log), run CHECKPOINT, or lower checkpoint_timeout / max_wal_size".into(),
            ),
            segment: Some(r.oldest_segment.clone()),
            slot: None,
            retained_bytes: retained,
        },
        CauseKind::WalSummarizer => Cause {
            kind: r.kind,
            summary: format!(
                "the WAL summarizer (summarize_wal = on) {} {}: it holds {} of WAL, which max_slot_wal_keep_size does not bound",
                if o.summarizer.as_ref().and_then(|s| s.running) == Some(false) {
                    "is not running; it stopped at"
                } else {
                    "has summarized only up to"
                },
                r.detail.trim_start_matches("summarized up to "),
                human_bytes(r.retained_bytes)
            ),
            remedy: Some(summarizer_remedy()),
            segment: Some(r.oldest_segment.clone()),
            slot: None,
            retained_bytes: retained,
        },
        CauseKind::None => no_cause(&WalReport::default()),
    }
}

pub(super) fn no_cause(w: &WalReport) -> Cause {
    Cause {
        kind: CauseKind::None,
        summary: match (w.bytes, w.max_wal_size_bytes) {
            (Some(b), Some(m)) => format!(
                "nothing holds WAL beyond the normal checkpoint cycle (pg_wal {} of max_wal_size {})",
                human_bytes(b),
                human_bytes(m.max(0) as u64)
            ),
            _ => "nothing holds WAL beyond the normal checkpoint cycle".into(),
        },
        remedy: None,
        segment: None,
        slot: None,
        retained_bytes: None,
    }
}

pub(super) fn headline(
    ctx: &Ctx<'_>,
    cause: &Cause,
    w: &WalReport,
    growing: bool,
    checks: &[Check],
    status: Status,
) -> String {
    let size = w.bytes.map(|b| {
        format!(
            "pg_wal {}{}",
            human_bytes(b),
            if growing { " and growing" } else { "" }
        )
    });
    // While the declared budget is in use, wal-push gives segments up
    // instead of letting pg_wal grow: that is the news, and an estimate of
    // when the disk fills would be false.
    let budget_in_use = checks
        .iter()
        .find(|c| c.id == "pg_wal_budget" && c.status == Status::Critical);
    let full = w
        .seconds_until_full
        .filter(|s| *s < ctx.t.full_warn_seconds && budget_in_use.is_none())
        .map(|s| format!(" (disk full in about {})", human_secs(s)))
        .unwrap_or_default();
    if status == Status::Unknown {
        let why = checks
            .iter()
            .find(|c| c.id == "read")
            .map(|c| c.summary.clone())
            .unwrap_or_else(|| "no source answered".into());
        return format!("nothing could be read: {why}");
    }
    let lead = match cause.kind {
        _ if budget_in_use.is_some() => {
            budget_in_use.map(|c| c.summary.clone()).unwrap_or_default()
        }
        CauseKind::None => {
            let worst = checks.first().filter(|c| c.status != Status::Ok);
            match worst {
                Some(c) => c.summary.clone(),
                None if status == Status::Ok => match &ctx.o.settings.archive_mode {
                    Some(m) if m != "off" => {
                        "healthy: archiving keeps up and nothing holds extra WAL".into()
                    }
                    _ => "healthy: nothing holds extra WAL".into(),
                },
                None => cause.summary.clone(),
            }
        }
        _ => cause.summary.clone(),
    };
    match size {
        Some(s) => format!("{s}{full}; {lead}"),
        None => lead,
    }
}
