//! Replication slots: what each holds, whether it was or is about to be
//! invalidated (`max_slot_wal_keep_size`, 18's
//! `idle_replication_slot_timeout`), and whether `wal_level` allows the
//! slots that exist (19's `effective_wal_level` raises it on its own).

use super::rules::*;
use super::*;

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
            invalidation_reason: s.invalidation_reason.clone(),
            inactive_seconds: s
                .inactive_since
                .filter(|_| s.active != Some(true))
                .map(|t| (o.now - t).max(0.0)),
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
                    "replication slot \"{}\" {}: it holds no WAL any more, and its consumer can no longer resume from it",
                    s.name,
                    invalidated_because(ctx, s.invalidation_reason.as_deref())
                ),
                evidence,
                remedy: Some(format!(
                    "rebuild the consumer (a new base backup for a standby) and recreate the slot; {drop_sql}"
                )),
            });
            continue;
        }
        let idle = idle_timeout(ctx, s);
        if let Some(IdleTimeout::Soon(line)) = &idle {
            evidence.push(line.clone());
        }
        if let Some(IdleTimeout::Next { idle, timeout }) = idle {
            checks.push(Check {
                id: "replication_slot",
                status: Status::Warning,
                summary: format!(
                    "replication slot \"{}\" has been inactive for {}, longer than idle_replication_slot_timeout = {}: the next checkpoint invalidates it{}",
                    s.name,
                    human_secs(idle),
                    human_secs(timeout),
                    retained
                        .map(|r| format!(" (it holds {} of WAL)", human_bytes(r)))
                        .unwrap_or_default()
                ),
                evidence,
                remedy: Some(format!(
                    "reconnect its consumer before the next checkpoint, or raise the timeout (ALTER SYSTEM SET idle_replication_slot_timeout = '...'; SELECT pg_reload_conf();); if nothing uses the slot: {drop_sql}"
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

/// "was invalidated because ...", in plain words per cause.
fn invalidated_because(ctx: &Ctx<'_>, reason: Option<&str>) -> String {
    match reason {
        Some("idle_timeout") => format!(
            "was invalidated by idle_replication_slot_timeout{} after staying inactive longer than that",
            ctx.o
                .settings
                .idle_replication_slot_timeout
                .filter(|t| *t > 0.0)
                .map(|t| format!(" (now {})", human_secs(t)))
                .unwrap_or_default()
        ),
        Some("wal_removed") => {
            "was invalidated because the WAL it needed was removed (max_slot_wal_keep_size)".into()
        }
        Some("rows_removed") => {
            "was invalidated because rows its logical decoding needed were removed (rows_removed)"
                .into()
        }
        Some("wal_level_insufficient") => {
            "was invalidated because wal_level became too low for it (wal_level_insufficient)"
                .into()
        }
        Some(other) => format!("was invalidated ({other})"),
        None => "is invalidated".into(),
    }
}

/// 18's `idle_replication_slot_timeout` for one valid slot.
enum IdleTimeout {
    /// Inactive longer than the timeout: the next checkpoint invalidates it.
    Next { idle: f64, timeout: f64 },
    /// Not yet: an evidence line saying when.
    Soon(String),
}

/// Whether the timeout applies to `s` (a valid, inactive slot that holds
/// WAL, not a synced slot on a standby), as `CanInvalidateIdleSlot` of 18.
fn idle_timeout(ctx: &Ctx<'_>, s: &SlotObs) -> Option<IdleTimeout> {
    let o = ctx.o;
    let timeout = o
        .settings
        .idle_replication_slot_timeout
        .filter(|t| *t > 0.0)?;
    if s.restart_lsn.is_none()
        || s.active == Some(true)
        || (s.synced && o.in_recovery == Some(true))
    {
        return None;
    }
    Some(match (s.inactive_since, o.mode) {
        (Some(since), _) => {
            let idle = (o.now - since).max(0.0);
            if idle > timeout {
                IdleTimeout::Next { idle, timeout }
            } else {
                IdleTimeout::Soon(format!(
                    "idle_replication_slot_timeout = {}: the first checkpoint after {} more of inactivity invalidates it",
                    human_secs(timeout),
                    human_secs(timeout - idle)
                ))
            }
        }
        (None, Mode::Offline) => IdleTimeout::Soon(format!(
            "idle_replication_slot_timeout = {}: once the server runs again, the first checkpoint {} after its start invalidates this slot unless its consumer connects (the inactivity clock restarts at server start)",
            human_secs(timeout),
            human_secs(timeout)
        )),
        (None, Mode::Online) => return None,
    })
}

/// Whether `wal_level` allows the slots that exist. PostgreSQL 13 to 18
/// refuse to start with a logical slot under `wal_level` below `logical`
/// ("logical replication slot ... exists, but wal_level < logical"), or
/// any slot under `minimal`; 19 raises `effective_wal_level` to `logical`
/// while a logical slot exists, so `replica` is enough there.
pub(super) fn wal_level_check(ctx: &Ctx<'_>) -> Option<Check> {
    let o = ctx.o;
    let slots = o.slots.as_ref()?;
    let level = o.settings.wal_level.as_deref()?;
    let logical: Vec<&str> = slots
        .iter()
        .filter(|s| s.slot_type == "logical" && !s.invalidated)
        .map(|s| s.name.as_str())
        .collect();
    let any = slots.iter().find(|s| !s.invalidated)?;
    let nineteen = o.major_version.is_some_and(|m| m >= 19);
    let effective = o
        .settings
        .effective_wal_level
        .as_deref()
        .map(|e| format!("effective_wal_level = {e}"));
    let refuses = |what: String| {
        let version = o
            .major_version
            .map(|m| format!("PostgreSQL {m}"))
            .unwrap_or_else(|| "PostgreSQL before 19".into());
        Check {
            id: "wal_level",
            status: Status::Warning,
            summary: what.replace("{version}", &version),
            evidence: effective.clone().into_iter().collect(),
            remedy: Some(
                "set wal_level = logical (or replica for physical slots) before the next start, or drop the slots that need it".into(),
            ),
        }
    };
    match level {
        "minimal" => Some(refuses(format!(
            "wal_level = minimal while replication slot \"{}\" exists: {{version}} refuses to start (\"replication slot ... exists, but wal_level < replica\")",
            any.name
        ))),
        "replica" if !logical.is_empty() && nineteen => Some(Check {
            id: "wal_level",
            status: Status::Ok,
            summary: format!(
                "wal_level = replica with logical slot \"{}\": PostgreSQL 19 raises effective_wal_level to logical while a logical slot exists",
                logical[0]
            ),
            evidence: effective.into_iter().collect(),
            remedy: None,
        }),
        "replica" if !logical.is_empty() && o.mode == Mode::Offline => Some(refuses(format!(
            "wal_level = replica while logical slot \"{}\" exists: {{version}} refuses to start (\"logical replication slot ... exists, but wal_level < logical\")",
            logical[0]
        ))),
        _ => None,
    }
}
