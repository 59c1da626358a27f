//! The declared pg_wal budget (`WALG_PG_WAL_BUDGET`) and the segments
//! `wal-push` gave up under it: CRITICAL while the budget is being used
//! (pg_wal over it, or segments given up with nothing archived since),
//! WARNING while a given-up segment is newer than the newest base backup
//! (point-in-time recovery from that backup stops at it), each with its
//! remedy.
//!
//! Pure: reads the [`BudgetObs`] the caller gathered (the setting, pg_wal's
//! WAL bytes, the gap journal and the archive's `walg_gaps/` records, the
//! newest `.backup` file seen) and the archiver's state.

use super::rules::Ctx;
use super::*;

/// Position of a WAL file name for ordering (segment part, then timeline):
/// PostgreSQL's own comparison, from the 9th character on.
fn position(name: &str) -> (&str, &str) {
    (name.get(8..24).unwrap_or(""), name.get(..8).unwrap_or(""))
}

/// The newest `.done` segment PostgreSQL counts as archived: the archiver's
/// last archived file, else the highest `.done` status file.
fn last_archived(ctx: &Ctx<'_>) -> Option<String> {
    if let Some(l) = ctx
        .o
        .archiver
        .as_ref()
        .and_then(|a| a.last_archived_wal.clone())
    {
        return Some(l);
    }
    ctx.o
        .status_files
        .as_ref()?
        .iter()
        .filter(|f| !f.ready && f.name.len() == 24)
        .map(|f| f.name.clone())
        .max_by(|a, b| position(a).cmp(&position(b)))
}

pub(super) fn budget_checks(ctx: &Ctx<'_>) -> (Vec<Check>, Option<BudgetReport>) {
    let Some(b) = &ctx.o.budget else {
        return (vec![], None);
    };
    let mut checks = Vec::new();
    for p in &b.problems {
        checks.push(Check {
            id: "declared_gap",
            status: Status::Unknown,
            summary: format!("could not read a gap record: {p}"),
            evidence: vec![],
            remedy: Some(
                "wal-verify still reports the segment missing; look at the file, then remove it once the gap is understood".into(),
            ),
        });
    }
    let newest = b
        .given_up
        .iter()
        .max_by(|x, y| position(&x.segment).cmp(&position(&y.segment)));
    let over = matches!((b.wal_bytes, b.budget_bytes), (Some(w), Some(l)) if w > l);
    let archived_since = match (newest, last_archived(ctx)) {
        (Some(g), Some(l)) => position(&l) > position(&g.segment),
        (Some(_), None) => false,
        (None, _) => true,
    };
    let budget_text = b.budget.clone().unwrap_or_else(|| "(not set)".into());
    let limit = b
        .budget_bytes
        .map(|l| format!(" ({})", human_bytes(l)))
        .unwrap_or_default();
    let size = b
        .wal_bytes
        .map(human_bytes)
        .unwrap_or_else(|| "an unknown amount".into());
    let newest_text = newest.map(|g| {
        format!(
            "{}{}",
            g.segment,
            g.time
                .map(|t| format!(" {} ago", human_secs(ctx.o.now - t)))
                .unwrap_or_default()
        )
    });
    let fix_storage = "make a storage accept writes again (walg st check shows each storage's error); segments are given up only while every storage fails; then take a new base backup: point-in-time recovery across the given-up segments is lost";
    if over || !archived_since {
        let mut evidence = vec![format!("{} segment(s) given up so far", b.given_up.len())];
        if let Some(r) = newest.and_then(|g| g.reason.clone()) {
            evidence.push(format!("the newest was given up because: {r}"));
        }
        checks.push(Check {
            id: "pg_wal_budget",
            status: Status::Critical,
            summary: if !archived_since {
                format!(
                    "wal-push is giving segments up on purpose: {} given up, the newest {}, nothing archived since (pg_wal {size}, WALG_PG_WAL_BUDGET {budget_text}{limit})",
                    b.given_up.len(),
                    newest_text.clone().unwrap_or_default()
                )
            } else {
                format!(
                    "pg_wal holds {size} of WAL, over WALG_PG_WAL_BUDGET {budget_text}{limit}: a segment whose push fails on every storage is given up on purpose"
                )
            },
            evidence,
            remedy: Some(fix_storage.into()),
        });
    } else if b.budget.is_some() {
        checks.push(Check {
            id: "pg_wal_budget",
            status: Status::Ok,
            summary: format!(
                "pg_wal holds {size} of WAL, within WALG_PG_WAL_BUDGET {budget_text}{limit}"
            ),
            evidence: vec![],
            remedy: None,
        });
    }
    // A gap newer than the newest base backup: recovery from it stops there.
    let after_backup = newest.filter(|g| {
        b.newest_backup
            .as_deref()
            .is_none_or(|bk| position(bk) <= position(&g.segment))
    });
    if let Some(g) = after_backup {
        checks.push(Check {
            id: "declared_gap",
            status: Status::Warning,
            summary: format!(
                "{} segment(s) were given up on purpose, the newest {} after the newest base backup ({}): recovery from it stops at the gap",
                b.given_up.len(),
                newest_text.clone().unwrap_or_else(|| g.segment.clone()),
                b.newest_backup.as_deref().unwrap_or("none seen")
            ),
            evidence: vec![],
            remedy: Some(
                "take a new base backup now; walg wal-verify lists the gaps and the backups they cut off".into(),
            ),
        });
    } else if let Some(g) = newest {
        checks.push(Check {
            id: "declared_gap",
            status: Status::Ok,
            summary: format!(
                "{} segment(s) given up on purpose, the newest {}, before the newest base backup {}",
                b.given_up.len(),
                g.segment,
                b.newest_backup.as_deref().unwrap_or("?")
            ),
            evidence: vec![],
            remedy: None,
        });
    }
    let report = BudgetReport {
        budget: b.budget.clone(),
        budget_bytes: b.budget_bytes,
        wal_bytes: b.wal_bytes,
        over_budget: over,
        given_up_segments: b.given_up.len() as u64,
        newest_given_up: newest.map(|g| g.segment.clone()),
        newest_given_up_age_seconds: newest.and_then(|g| g.time).map(|t| ctx.o.now - t),
        newest_backup: b.newest_backup.clone(),
    };
    (checks, Some(report))
}

/// Whether PostgreSQL's archived file `name` is a declared gap (not in
/// the archive on purpose).
pub(super) fn is_given_up(ctx: &Ctx<'_>, name: &str) -> bool {
    ctx.o
        .budget
        .as_ref()
        .is_some_and(|b| b.given_up.iter().any(|g| g.segment == name))
}
