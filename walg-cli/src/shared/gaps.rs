//! The declared pg_wal budget (`WALG_PG_WAL_BUDGET`) as the commands meet
//! it: `wal-push` measures `pg_wal` after a push failed on every storage
//! and gives the segment up on purpose when it is over the budget
//! ([`after_failed_push`]), and uploads pending gap records once a storage
//! accepts writes again ([`upload_pending`]); `wal-fetch` explains a
//! missing segment that was given up ([`fetch_explanation`]); `wal-verify`,
//! `wal-show` and `wal-status` read the records of the archive
//! ([`archive_gaps`]) and of the local journal.
//!
//! The decision and the record format are `walg_core::archive::gaps`; this
//! module measures, writes, uploads and logs.
//!
//! What it does not do: touch PostgreSQL's `.ready` files (the exit 0 of a
//! given-up push makes PostgreSQL mark the segment `.done` and remove it at
//! its next checkpoint), or give up anything but a plain segment.

use std::path::Path;
use std::time::SystemTime;

use anyhow::Result;
use walg_core::archive::gaps::{
    decide, record_key, segment_of_key, Decision, DeclaredGaps, GapJournal, GapRecord, PgWalUsage,
    GAPS_PREFIX,
};
use walg_core::pipeline::ahead::AheadDir;
use walg_core::pipeline::push::PushError;
use walg_core::store::{read_all, DynStore, Store};
use walg_core::{ErrorKind, PutOptions, WalName};

use super::config::Config;
use super::storage::host;

/// Pending records uploaded by one push at most: a long outage leaves
/// thousands, and each push must stay cheap.
const UPLOAD_PER_CALL: usize = 64;
/// Pending records uploaded at once.
const UPLOAD_WINDOW: usize = 16;
/// Records read from the archive to say when and why.
pub const RECORDS_READ: usize = 100;

/// `wal-fetch` reached a segment that was given up on purpose: PostgreSQL
/// gets the "not found" exit code, the log gets why.
#[derive(Debug)]
pub struct DeclaredGapReached(pub String);

impl std::fmt::Display for DeclaredGapReached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DeclaredGapReached {}

/// Measures `pg_wal`: the sizes of the WAL files directly in it (one
/// directory read, nothing below it) and its file system's size.
pub fn measure(pg_wal: &Path) -> Result<PgWalUsage, String> {
    let mut wal_bytes = 0u64;
    let rd = std::fs::read_dir(pg_wal).map_err(|e| format!("read {}: {e}", pg_wal.display()))?;
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if WalName::parse(name).is_err() {
            continue;
        }
        if let Ok(m) = e.metadata() {
            if m.is_file() {
                wal_bytes += m.len();
            }
        }
    }
    let fs_total = rustix::fs::statvfs(pg_wal)
        .ok()
        .map(|s| s.f_blocks * s.f_frsize);
    Ok(PgWalUsage {
        wal_bytes,
        fs_total,
    })
}

fn now_rfc3339() -> (String, u64) {
    let now = SystemTime::now();
    let unix = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    (humantime::format_rfc3339_seconds(now).to_string(), unix)
}

fn pg_wal_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// After a push failed: gives the segment up on purpose when the budget
/// says so and a record of it is durable somewhere (`Ok`: exit 0), else
/// returns the push's error as always (exit 1).
pub async fn after_failed_push(
    cfg: &Config,
    store: &dyn Store,
    path: &Path,
    name: &WalName,
    system_id: Option<u64>,
    err: PushError,
) -> Result<()> {
    let failed = |err: PushError| anyhow::Error::new(err).context(format!("wal-push {name}"));
    let Some((budget_text, budget)) = &cfg.pg_wal_budget else {
        return Err(failed(err));
    };
    let storage_failure = matches!(&err, PushError::Store(e) if e.kind.is_storage_failure());
    let pg_wal = pg_wal_of(path);
    let usage = if storage_failure && name.segment().is_some() {
        measure(pg_wal)
    } else {
        Err("not measured".into())
    };
    let (budget_bytes, wal_bytes) = match decide(name, Some(budget), storage_failure, usage) {
        Decision::Fail { why } => {
            tracing::debug!("{name} is kept: {why}");
            return Err(failed(err));
        }
        Decision::GiveUp {
            budget_bytes,
            wal_bytes,
        } => (budget_bytes, wal_bytes),
    };
    let Some(segment) = name.segment() else {
        return Err(failed(err));
    };
    let (time, unix) = now_rfc3339();
    let reason: String = format!("{err}").chars().take(600).collect();
    let record = GapRecord::new(
        segment,
        system_id,
        time,
        unix,
        reason,
        wal_bytes,
        budget_text.clone(),
        budget_bytes,
        host(),
    );
    let journal = GapJournal::for_file(path);
    let recorded = match journal.write(&record) {
        Ok(p) => format!(
            "recorded in {} (it goes to the archive as {} with the next push a storage accepts)",
            p.display(),
            record_key(&record.segment)
        ),
        Err(local) => {
            // Nowhere durable yet: the archive is the last chance, and
            // without a record the segment is kept.
            let body = bytes::Bytes::from(record.render());
            match store
                .put(
                    &record_key(&record.segment),
                    &body,
                    PutOptions {
                        if_not_exists: true,
                    },
                )
                .await
            {
                Ok(()) => format!(
                    "recorded in the archive as {} (the local journal {} could not be written: {local})",
                    record_key(&record.segment),
                    journal.dir().display()
                ),
                Err(e) if e.kind == ErrorKind::Conflict => format!(
                    "already recorded in the archive as {} (the local journal {} could not be written: {local})",
                    record_key(&record.segment),
                    journal.dir().display()
                ),
                Err(remote) => {
                    return Err(failed(err).context(format!(
                        "pg_wal holds {} of WAL, over WALG_PG_WAL_BUDGET={budget_text} ({}), but the gap could not be recorded anywhere (local journal {}: {local}; archive: {remote}); keeping {name} rather than losing it silently",
                        walg_core::doctor::human_bytes(wal_bytes),
                        walg_core::doctor::human_bytes(budget_bytes),
                        journal.dir().display()
                    )));
                }
            }
        }
    };
    if let Some(ahead) = AheadDir::for_file(path) {
        ahead.remove_marker(name);
    }
    tracing::error!(
        "wal-push {name}: GIVEN UP ON PURPOSE: every storage failed ({}) while pg_wal holds {} of WAL, over WALG_PG_WAL_BUDGET={budget_text} ({}); exiting 0 so PostgreSQL can remove {name}: point-in-time recovery across {name} is lost until a new base backup is taken; {recorded}",
        record.reason,
        walg_core::doctor::human_bytes(wal_bytes),
        walg_core::doctor::human_bytes(budget_bytes),
    );
    Ok(())
}

/// After a push succeeded: uploads pending gap records (at most
/// [`UPLOAD_PER_CALL`]). Costs one directory read when there are none;
/// never fails the push.
pub async fn upload_pending(store: &dyn Store, path: &Path) {
    let journal = GapJournal::for_file(path);
    let names = journal.pending_names();
    if names.is_empty() {
        return;
    }
    let mut uploaded = 0usize;
    for chunk in names
        .iter()
        .take(UPLOAD_PER_CALL)
        .collect::<Vec<_>>()
        .chunks(UPLOAD_WINDOW)
    {
        let results = futures::future::join_all(chunk.iter().map(|seg| {
            let journal = &journal;
            async move {
                let record = match journal.read_pending(seg) {
                    Ok(r) if r.segment == **seg => r,
                    Ok(r) => {
                        return Err(Some(format!("it names {}, not {seg}", r.segment)));
                    }
                    Err(why) => return Err(Some(why)),
                };
                let body = bytes::Bytes::from(record.render());
                match store
                    .put(
                        &record_key(seg),
                        &body,
                        PutOptions {
                            if_not_exists: true,
                        },
                    )
                    .await
                {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind == ErrorKind::Conflict => Ok(()),
                    Err(e) => {
                        tracing::debug!("upload gap record {seg}: {e}");
                        Err(None)
                    }
                }
            }
        }))
        .await;
        let mut storage_failed = false;
        for (seg, r) in chunk.iter().zip(results) {
            match r {
                Ok(()) => match journal.mark_uploaded(seg) {
                    Ok(()) => uploaded += 1,
                    Err(e) => tracing::warn!(
                        "gap record of {seg} is in the archive, but moving it to {}/uploaded failed: {e}; it will be uploaded again (harmless)",
                        journal.dir().display()
                    ),
                },
                Err(Some(why)) => {
                    let aside = journal.set_aside(seg);
                    tracing::warn!(
                        "the local gap record of {seg} in {} is damaged ({why}); {}: the gap is treated as unknown (walg wal-status reports it; wal-verify still shows {seg} missing)",
                        journal.dir().display(),
                        match aside {
                            Ok(()) => format!("set aside as {seg}.json.corrupt"),
                            Err(e) => format!("it could not be set aside ({e})"),
                        }
                    );
                }
                Err(None) => storage_failed = true,
            }
        }
        if storage_failed {
            break;
        }
    }
    if uploaded > 0 {
        tracing::info!(
            "recorded {uploaded} declared gap(s) in the archive under {GAPS_PREFIX} ({} still pending)",
            journal.pending_names().len()
        );
    }
}

/// Why `name` is not in the archive, when it was given up on purpose: the
/// archive's record, else the local journal's (a restore on the same host).
pub async fn fetch_explanation(store: &dyn Store, name: &WalName) -> Option<GapRecord> {
    let seg = name.segment()?;
    if !matches!(name, WalName::Segment(_)) {
        return None;
    }
    let key = record_key(&seg.to_string());
    let stream = store.get(&key).await.ok()?;
    let raw = read_all(stream).await.ok()?;
    GapRecord::parse(&raw).ok()
}

/// The message `wal-fetch` logs when recovery reaches a given-up segment.
pub fn fetch_message(name: &WalName, r: &GapRecord) -> String {
    format!(
        "wal-fetch {name}: recovery stops here: {name} is not in the archive because wal-push gave it up on purpose at {} on host {:?} (every storage failed: {}; pg_wal held {}, over WALG_PG_WAL_BUDGET {}); the WAL after it cannot be replayed from this base backup: restore from a base backup taken after {} to reach later data",
        r.time,
        r.host,
        r.reason,
        walg_core::doctor::human_bytes(r.pg_wal_bytes),
        r.budget,
        r.time
    )
}

/// Declared gaps of the archive: the `walg_gaps/` listing of every
/// storage, with the records of at most `limit` of them, those in
/// `wanted` first. Storage errors are returned, not fatal.
pub async fn archive_gaps(
    stores: &[(String, DynStore)],
    wanted: &dyn Fn(&DeclaredGaps) -> Vec<String>,
    limit: usize,
) -> (DeclaredGaps, Vec<String>) {
    let mut gaps = DeclaredGaps::default();
    let mut errors = Vec::new();
    let mut holder: std::collections::BTreeMap<String, usize> = Default::default();
    for (i, (name, store)) in stores.iter().enumerate() {
        match store.list(GAPS_PREFIX).await {
            Ok(objs) => {
                for o in objs {
                    if let Some(seg) = segment_of_key(&o.key) {
                        let s = seg.to_string();
                        gaps.add(&s, None);
                        holder.entry(s).or_insert(i);
                    }
                }
            }
            Err(e) if e.kind == ErrorKind::NotFound => {}
            Err(e) => errors.push(format!("list {GAPS_PREFIX} on {name:?}: {e}")),
        }
    }
    let mut read = wanted(&gaps);
    read.extend(gaps.names().map(str::to_string));
    let mut done = 0;
    for seg in read {
        if done >= limit {
            break;
        }
        if gaps.record(&seg).is_some() {
            continue;
        }
        let Some(&i) = holder.get(&seg) else { continue };
        done += 1;
        let key = record_key(&seg);
        let got = async {
            let raw = read_all(stores[i].1.get(&key).await.map_err(|e| e.to_string())?)
                .await
                .map_err(|e| e.to_string())?;
            GapRecord::parse(&raw)
        }
        .await;
        match got {
            Ok(r) if r.segment == seg => gaps.add(&seg, Some(r)),
            Ok(r) => errors.push(format!("{key} names {}, not {seg}", r.segment)),
            Err(e) => errors.push(format!(
                "{key} on {:?} is unreadable ({e}); treated as a declared gap without details",
                stores[i].0
            )),
        }
    }
    (gaps, errors)
}

/// Declared gaps of the local journal of `pg_wal`, and the damaged files
/// (treated as unknown).
pub fn journal_gaps(pg_wal: &Path) -> (DeclaredGaps, Vec<String>) {
    let journal = GapJournal::in_pg_wal(pg_wal);
    let mut gaps = DeclaredGaps::default();
    let mut problems = Vec::new();
    for e in journal.entries() {
        match e.record {
            Ok(r) => gaps.add(&e.segment, Some(r)),
            Err(why) => problems.push(format!(
                "the gap record of {} in {} is damaged ({why}); treated as unknown",
                e.segment,
                journal.dir().display()
            )),
        }
    }
    (gaps, problems)
}

/// What `wal-status` needs of the budget: the setting (resolved on
/// pg_wal's file system), pg_wal's WAL bytes, the given-up segments of the
/// journal and of the archive (unless `archive` is false), and the newest
/// `.backup` file seen. `None` when there is no budget and nothing was
/// ever given up.
pub async fn status_observation(
    config: Option<&Path>,
    pgdata: Option<&Path>,
    obs: &walg_core::doctor::Observation,
    archive: bool,
) -> Option<walg_core::doctor::BudgetObs> {
    use walg_core::doctor::{BudgetObs, GivenUp};
    let cfg = super::config::Raw::load(config)
        .ok()
        .and_then(|raw| Config::from_raw(&raw).ok());
    let pg_wal = pgdata.map(|d| d.join("pg_wal"));
    let usage = pg_wal.as_deref().and_then(|p| measure(p).ok());
    let wal_bytes = usage
        .map(|u| u.wal_bytes)
        .or(obs.pg_wal.as_ref().map(|w| w.bytes));
    let fs_total = usage
        .and_then(|u| u.fs_total)
        .or(obs.pg_wal.as_ref().and_then(|w| w.fs_total));
    let (mut declared, problems) = match &pg_wal {
        Some(p) => journal_gaps(p),
        None => (DeclaredGaps::default(), Vec::new()),
    };
    if archive {
        if let Some(cfg) = &cfg {
            let registry = walg_storage::Registry::with_builtin();
            let stores: Vec<(String, DynStore)> = cfg
                .storages
                .iter()
                .filter_map(|spec| registry.open(spec).ok().map(|s| (spec.name.clone(), s)))
                .collect();
            let newest =
                |d: &DeclaredGaps| d.names().last().map(str::to_string).into_iter().collect();
            if let Ok((remote, errors)) = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                archive_gaps(&stores, &newest, 1),
            )
            .await
            {
                for e in errors {
                    tracing::debug!("{e}");
                }
                for n in remote.names() {
                    declared.add(n, remote.record(n).cloned());
                }
            }
        }
    }
    let budget = cfg.as_ref().and_then(|c| c.pg_wal_budget.clone());
    if budget.is_none() && declared.is_empty() && problems.is_empty() {
        return None;
    }
    // The newest `.backup` file: pg_wal keeps the newest one (PostgreSQL
    // removes older, archived ones when a backup ends).
    let mut backups: Vec<String> = obs
        .status_files
        .iter()
        .flatten()
        .map(|f| f.name.clone())
        .collect();
    if let Some(p) = &pg_wal {
        backups.extend(
            std::fs::read_dir(p)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned()),
        );
    }
    let newest_backup = backups
        .into_iter()
        .filter(|n| matches!(WalName::parse(n), Ok(WalName::Backup { .. })))
        .max_by(|a, b| (&a[8..], &a[..8]).cmp(&(&b[8..], &b[..8])));
    Some(BudgetObs {
        budget: budget.as_ref().map(|(text, _)| text.clone()),
        budget_bytes: budget.as_ref().and_then(|(_, b)| b.bytes(fs_total)),
        wal_bytes,
        given_up: declared
            .names()
            .map(|n| GivenUp {
                segment: n.to_string(),
                time: declared.record(n).map(|r| r.time_unix as f64),
                reason: declared.record(n).map(|r| r.reason.clone()),
            })
            .collect(),
        newest_backup,
        problems,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::Value;
    use walg_core::store::memory::{Fault, FaultStore, MemoryStore};
    use walg_core::StoreError;

    use super::*;
    use crate::shared::config::Raw;

    const SEG: &str = "000000010000000000000010";

    /// A pg_wal holding one 2 MiB segment, a budget of 1 MiB, and a push of
    /// it that failed on every storage.
    fn setup(tmp: &Path) -> (Config, std::path::PathBuf, WalName) {
        let pg_wal = tmp.join("pg_wal");
        std::fs::create_dir_all(pg_wal.join("archive_status")).expect("dir");
        let path = pg_wal.join(SEG);
        std::fs::write(&path, vec![0u8; 2 << 20]).expect("segment");
        let raw = Raw::from_pairs(&[
            (
                "WALG_FILE_PREFIX",
                Value::String(tmp.join("a").display().to_string()),
            ),
            ("WALG_PG_WAL_BUDGET", Value::String("1mb".into())),
        ]);
        let cfg = Config::from_raw(&raw).expect("config");
        (cfg, path, WalName::parse(SEG).expect("name"))
    }

    fn failed() -> PushError {
        PushError::Store(StoreError::new(
            ErrorKind::Unavailable,
            "put",
            "default",
            "wal_005/x",
            "down",
        ))
    }

    fn store(fault: Fault) -> (Arc<MemoryStore>, FaultStore) {
        let mem = Arc::new(MemoryStore::new("default"));
        let f = FaultStore::new(mem.clone());
        f.set_fault(fault);
        (mem, f)
    }

    #[tokio::test]
    async fn over_the_budget_the_segment_is_given_up_and_recorded() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (cfg, path, name) = setup(tmp.path());
        let (mem, f) = store(Fault::Fail(ErrorKind::Unavailable));
        after_failed_push(&cfg, &f, &path, &name, Some(42), failed())
            .await
            .expect("given up");
        let journal = GapJournal::for_file(&path);
        assert_eq!(journal.pending_names(), vec![SEG]);
        let r = journal.read_pending(SEG).expect("record");
        assert_eq!(r.system_identifier, "42");
        assert_eq!(r.budget, "1mb");
        assert!(r.pg_wal_bytes >= 2 << 20);
        // The next successful push uploads it, once.
        f.set_fault(Fault::None);
        upload_pending(&f, &path).await;
        assert!(mem.object(&record_key(SEG)).is_some());
        assert!(journal.pending_names().is_empty());
        assert_eq!(journal.entries().len(), 1);
        let explained = fetch_explanation(&f, &name).await.expect("record");
        assert!(fetch_message(&name, &explained).contains("gave it up on purpose"));
    }

    #[tokio::test]
    async fn without_a_durable_record_the_segment_is_kept() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (cfg, path, name) = setup(tmp.path());
        // The journal cannot be created: walg_data is a file.
        std::fs::write(path.parent().expect("pg_wal").join("walg_data"), b"").expect("file");
        let (_, f) = store(Fault::Fail(ErrorKind::Unavailable));
        let e = after_failed_push(&cfg, &f, &path, &name, None, failed())
            .await
            .expect_err("kept");
        let msg = format!("{e:#}");
        assert!(msg.contains("could not be recorded anywhere"), "{msg}");
        // A storage that takes the small record is durable enough.
        let (mem, f) = store(Fault::None);
        after_failed_push(&cfg, &f, &path, &name, None, failed())
            .await
            .expect("given up");
        assert!(mem.object(&record_key(SEG)).is_some());
    }

    #[tokio::test]
    async fn a_refusal_or_a_history_file_is_never_given_up() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (cfg, path, name) = setup(tmp.path());
        let (_, f) = store(Fault::Fail(ErrorKind::Unavailable));
        let refused = PushError::Store(StoreError::new(
            ErrorKind::Refused,
            "put",
            "default",
            "wal_005/x",
            "another cluster",
        ));
        assert!(after_failed_push(&cfg, &f, &path, &name, None, refused)
            .await
            .is_err());
        let hist = WalName::parse("00000002.history").expect("name");
        assert!(after_failed_push(&cfg, &f, &path, &hist, None, failed())
            .await
            .is_err());
        assert!(GapJournal::for_file(&path).pending_names().is_empty());
    }

    #[tokio::test]
    async fn a_damaged_pending_record_is_set_aside_not_uploaded() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (_, path, _) = setup(tmp.path());
        let journal = GapJournal::for_file(&path);
        std::fs::create_dir_all(journal.dir()).expect("dir");
        std::fs::write(journal.dir().join(format!("{SEG}.json")), b"{\"half").expect("w");
        let (mem, f) = store(Fault::None);
        upload_pending(&f, &path).await;
        assert!(mem.object(&record_key(SEG)).is_none());
        assert!(journal.pending_names().is_empty());
        let (gaps, problems) = journal_gaps(path.parent().expect("pg_wal"));
        assert!(gaps.is_empty());
        assert_eq!(problems.len(), 1, "{problems:?}");
    }
}
