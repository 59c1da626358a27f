//! `walg st clean [--older-than AGE] [--confirm] [--json]`: finds, and with
//! `--confirm` removes, what killed uploads left behind on every configured
//! storage (file storage temp files, incomplete S3 multipart uploads).
//!
//! The work is [`walg_storage::clean::clean`]; this module renders it.

use std::time::Duration;

use anyhow::{bail, Result};
use walg_storage::clean::{clean, CleanReport};

use crate::shared::config::Config;
use crate::shared::output::out;

pub async fn run(cfg: &Config, older_than: Duration, confirm: bool, json: bool) -> Result<()> {
    let mut reports: Vec<CleanReport> = Vec::new();
    let mut unreachable = Vec::new();
    for spec in &cfg.storages {
        match clean(spec, older_than, confirm).await {
            Ok(r) => reports.push(r),
            Err(e) => {
                unreachable.push(spec.name.clone());
                reports.push(CleanReport {
                    storage: spec.name.clone(),
                    location: format!("{}://{}", spec.scheme, spec.location),
                    dry_run: !confirm,
                    items: Vec::new(),
                    note: Some(format!("not cleaned: {e}")),
                });
            }
        }
    }
    let found: usize = reports.iter().map(|r| r.items.len()).sum();
    let removed: usize = reports
        .iter()
        .flat_map(|r| &r.items)
        .filter(|i| i.removed)
        .count();
    let failed: usize = reports
        .iter()
        .flat_map(|r| &r.items)
        .filter(|i| i.error.is_some())
        .count();
    if json {
        out!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        let age = humantime::format_duration(older_than);
        if confirm {
            out!("st clean: removed {removed} of {found} leftover(s) of killed uploads (older than {age}, or of dead local processes)");
        } else {
            out!("st clean: {found} leftover(s) of killed uploads (older than {age}, or of dead local processes); dry run, nothing removed: run again with --confirm");
        }
        for r in &reports {
            out!("{} ({}): {} item(s)", r.storage, r.location, r.items.len());
            if let Some(note) = &r.note {
                out!("  {note}");
            }
            for i in &r.items {
                let state = match (&i.error, i.removed) {
                    (Some(e), _) => format!("failed: {e}"),
                    (None, true) => "removed".into(),
                    (None, false) => "would remove".into(),
                };
                out!(
                    "  {} {} ({} old): {state}",
                    i.kind,
                    i.key,
                    humantime::format_duration(Duration::from_secs(i.age_secs))
                );
            }
        }
    }
    if failed > 0 || !unreachable.is_empty() {
        bail!(
            "st clean incomplete: {failed} removal(s) failed; storages not cleaned: {}",
            if unreachable.is_empty() {
                "none".to_string()
            } else {
                unreachable.join(", ")
            }
        );
    }
    Ok(())
}
