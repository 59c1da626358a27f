//! WAL waiting on a failover storage to drain back to the primary: a
//! WARNING while any does (a restore that reads only the primary finds a
//! gap, and a spill disk lost with its host loses them), with the remedy.
//!
//! Pure: reads the [`FailoverDrain`] rows the caller gathered from the
//! drain journals (walg-failover's), and the observation's clock.

use serde::Serialize;

use super::rules::Ctx;
use super::*;

/// What waits on one failover storage to be copied back to the primary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailoverDrain {
    pub storage: String,
    /// `copy`, `move` or `off`.
    pub mode: String,
    /// A spill storage (written only when every other storage failed).
    pub spill: bool,
    /// `ok`, `missing` (no journal yet: the next wal-push lists the
    /// storage once) or `damaged` (the next wal-push rebuilds it).
    pub journal: String,
    /// Files waiting to drain back.
    pub files: u64,
    /// The oldest waiting file's key.
    pub oldest_file: Option<String>,
    /// When it was written to the failover (seconds since the epoch).
    pub oldest_since: Option<f64>,
    /// How long it has waited (filled by the report).
    pub oldest_age_seconds: Option<f64>,
}

pub(super) fn drain_rows(ctx: &Ctx<'_>) -> Vec<FailoverDrain> {
    ctx.o
        .failover_drain
        .iter()
        .map(|d| FailoverDrain {
            oldest_age_seconds: d.oldest_since.map(|s| (ctx.o.now - s).max(0.0)),
            ..d.clone()
        })
        .collect()
}

pub(super) fn drain_checks(rows: &[FailoverDrain]) -> Vec<Check> {
    if rows.is_empty() {
        return Vec::new();
    }
    let waiting: Vec<&FailoverDrain> = rows.iter().filter(|d| d.files > 0).collect();
    let damaged: Vec<&FailoverDrain> = rows.iter().filter(|d| d.journal == "damaged").collect();
    let mut checks = Vec::new();
    if !waiting.is_empty() {
        let files: u64 = waiting.iter().map(|d| d.files).sum();
        let off = waiting.iter().any(|d| d.mode == "off");
        checks.push(Check {
            id: "failover_drain",
            status: Status::Warning,
            summary: format!(
                "{files} WAL file(s) are on a failover storage only and wait to drain back to the primary"
            ),
            evidence: waiting
                .iter()
                .map(|d| {
                    format!(
                        "{}{}: {} file(s), the oldest {}{} ({})",
                        d.storage,
                        if d.spill { " (spill)" } else { "" },
                        d.files,
                        d.oldest_file.as_deref().unwrap_or("?"),
                        d.oldest_since
                            .zip(d.oldest_age_seconds)
                            .map(|(_, a)| format!(" written {} ago", human_secs(a)))
                            .unwrap_or_default(),
                        d.mode
                    )
                })
                .collect(),
            remedy: Some(if off {
                "WALG_FAILOVER_STORAGES_DRAIN is off: run walg wal-repair --confirm to copy them to the primary".into()
            } else {
                "they drain back in the background of the next wal-push calls once the primary is alive (walg st status shows the primary's state); to do it now: walg wal-repair --confirm".into()
            }),
        });
    }
    for d in damaged {
        checks.push(Check {
            id: "failover_drain",
            status: Status::Warning,
            summary: format!(
                "the drain journal of failover storage {:?} is not trusted; the next wal-push rebuilds it from a listing",
                d.storage
            ),
            evidence: vec![],
            remedy: Some("nothing to do unless it stays; walg wal-repair shows what the primary lacks".into()),
        });
    }
    if checks.is_empty() {
        checks.push(Check {
            id: "failover_drain",
            status: Status::Ok,
            summary: "no WAL waits on a failover storage to drain back to the primary".into(),
            evidence: vec![],
            remedy: None,
        });
    }
    checks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(files: u64, journal: &str, mode: &str) -> FailoverDrain {
        FailoverDrain {
            storage: "spill".into(),
            mode: mode.into(),
            spill: true,
            journal: journal.into(),
            files,
            oldest_file: (files > 0).then(|| "wal_005/000000010000000000000003.lz4".into()),
            oldest_since: (files > 0).then_some(1000.0),
            oldest_age_seconds: (files > 0).then_some(600.0),
        }
    }

    fn check(rows: &[FailoverDrain], expected: &[(Status, &str)]) {
        let got: Vec<(Status, String)> = drain_checks(rows)
            .into_iter()
            .map(|c| {
                (
                    c.status,
                    format!("{} {:?} {:?}", c.summary, c.evidence, c.remedy),
                )
            })
            .collect();
        assert_eq!(got.len(), expected.len(), "{got:?}");
        for ((s, text), (es, part)) in got.iter().zip(expected) {
            assert_eq!(s, es, "{text}");
            assert!(text.contains(part), "{text:?} lacks {part:?}");
        }
    }

    #[test]
    fn waiting_files_warn_with_their_age_and_the_remedy() {
        check(&[], &[]);
        check(&[row(0, "ok", "move")], &[(Status::Ok, "no WAL waits")]);
        check(
            &[row(3, "ok", "move")],
            &[(Status::Warning, "3 WAL file(s)")],
        );
        check(
            &[row(3, "ok", "move")],
            &[(Status::Warning, "written 10 min ago")],
        );
        check(
            &[row(2, "ok", "off")],
            &[(Status::Warning, "wal-repair --confirm")],
        );
        check(
            &[row(0, "damaged", "copy")],
            &[(Status::Warning, "rebuilds it from a listing")],
        );
        check(
            &[row(0, "missing", "copy")],
            &[(Status::Ok, "no WAL waits")],
        );
    }
}
