//! The WAL summarizer of PostgreSQL 17+ (`summarize_wal = on`), a retention
//! source of its own: `KeepLogSeg` keeps every segment from the oldest
//! unsummarized LSN on, after the `max_slot_wal_keep_size` cap, so nothing
//! bounds it. Summaries end at checkpoint REDO points, so a working
//! summarizer trails the REDO pointer by up to a checkpoint cycle: that is
//! normal. It is a cause when it stopped (no process online) or trails by
//! more than `max_wal_size`.

use super::rules::*;
use super::*;
use crate::wal::Lsn;

/// What the summarizer holds, when it is on and its position is known.
pub(super) struct Summarizer {
    pub(super) lsn: Lsn,
    pub(super) segno: u64,
    pub(super) retained: Option<u64>,
    /// Stopped or far behind: a cause, not the normal trail.
    pub(super) lagging: bool,
}

pub(super) fn summarizer(ctx: &Ctx<'_>) -> Option<Summarizer> {
    let o = ctx.o;
    if o.settings.summarize_wal != Some(true) {
        return None;
    }
    let sum = o.summarizer.as_ref()?;
    let lsn = sum.summarized_lsn.filter(|l| l.0 > 0)?;
    let segno = lsn.0 / ctx.segsz;
    let retained = ctx.cur.map(|(cur, _)| cur.0.saturating_sub(lsn.0));
    let behind_redo = o.redo_lsn.is_some_and(|r| segno < r.0 / ctx.segsz);
    let limit = o
        .settings
        .max_wal_size
        .filter(|m| *m > 0)
        .map(|m| m as u64)
        .unwrap_or(1 << 30);
    let lagging = behind_redo
        && (sum.running == Some(false) || retained.is_some_and(|r| r > limit + ctx.segsz));
    Some(Summarizer {
        lsn,
        segno,
        retained,
        lagging,
    })
}

pub(super) fn summarizer_report(ctx: &Ctx<'_>) -> Option<SummarizerReport> {
    let o = ctx.o;
    if o.settings.summarize_wal != Some(true) {
        return None;
    }
    let sum = o.summarizer.clone().unwrap_or_default();
    Some(SummarizerReport {
        summarized_lsn: sum.summarized_lsn.map(|l| l.to_string()),
        pending_lsn: sum.pending_lsn.map(|l| l.to_string()),
        running: sum.running,
        retained_bytes: summarizer(ctx).and_then(|s| s.retained),
        summaries: sum.summaries,
    })
}

pub(super) fn summarizer_check(ctx: &Ctx<'_>) -> Option<Check> {
    let o = ctx.o;
    if o.settings.summarize_wal != Some(true) {
        return None;
    }
    let sum = o.summarizer.as_ref();
    let mut evidence = Vec::new();
    if let Some(n) = sum.and_then(|s| s.summaries) {
        evidence.push(format!("{n} summary files in pg_wal/summaries"));
    }
    if let Some(p) = sum.and_then(|s| s.pending_lsn) {
        evidence.push(format!("pending_lsn {p}"));
    }
    let Some(s) = summarizer(ctx) else {
        return Some(Check {
            id: "wal_summarizer",
            status: Status::Ok,
            summary: "summarize_wal = on: the WAL summarizer has summarized nothing yet, so it holds nothing".into(),
            evidence,
            remedy: None,
        });
    };
    let held = s
        .retained
        .map(|r| format!(", {} behind the current position", human_bytes(r)))
        .unwrap_or_default();
    Some(if s.lagging {
        Check {
            id: "wal_summarizer",
            status: Status::Warning,
            summary: format!(
                "the WAL summarizer {} at {}{held}: PostgreSQL keeps all WAL it has not summarized, and max_slot_wal_keep_size does not bound that",
                if sum.and_then(|s| s.running) == Some(false) {
                    "is not running; it stopped"
                } else {
                    "lags: it has summarized only up to"
                },
                s.lsn
            ),
            evidence,
            remedy: Some(summarizer_remedy()),
        }
    } else {
        Check {
            id: "wal_summarizer",
            status: Status::Ok,
            summary: format!(
                "the WAL summarizer keeps up: summarized up to {}{held}",
                s.lsn
            ),
            evidence,
            remedy: None,
        }
    })
}

pub(super) fn summarizer_remedy() -> String {
    "look for walsummarizer errors in the server log and check pg_get_wal_summarizer_state(); if no incremental backup needs the summaries: ALTER SYSTEM SET summarize_wal = off; SELECT pg_reload_conf();".into()
}
