//! Planning `wal-repair` (what the primary lacks and where to copy it from)
//! and `wal-prune` (what lies before a retention boundary, on every
//! storage).
//!
//! Retention is WAL-only: the boundary is the start segment of the N-th
//! newest `.backup` file in the union (or a name given by the user), the
//! way `pg_archivecleanup` takes `%r`. A file is deleted when it is a
//! segment, `.partial` or `.backup` file whose segment number is before the
//! boundary's, on the boundary's timeline or an older one. `.history` files
//! are never deleted (they are tiny and recovery needs them to follow
//! timelines), nor is anything on a timeline newer than the boundary's (a
//! timeline that branched later may still need its own early segments).
//! Deletions are ordered oldest first, every copy of a file together, so an
//! interrupted run leaves a contiguous archive.
//!
//! What this module does not do: touch a storage. The CLI carries out the
//! plans.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::archive::{ArchiveMap, Copy};
use crate::wal::{Segment, WalName};

/// One object to copy to the primary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RepairCopy {
    pub name: String,
    /// The key on the source, copied unchanged (same compression, same bytes).
    pub key: String,
    pub source: String,
    pub size: u64,
}

/// Every file of the union that the primary (storage 0) lacks, with the
/// first storage (in priority order) that holds it. History files come
/// first, since recovery reads them first; then by timeline and position.
pub fn repair_plan(map: &ArchiveMap) -> Vec<RepairCopy> {
    let mut out: Vec<RepairCopy> = map
        .files()
        .filter(|f| f.iter().all(|c| c.storage != 0))
        .map(|f| {
            let c = &f[0];
            RepairCopy {
                name: c.name.to_string(),
                key: c.key(),
                source: map.storages()[usize::from(c.storage)].name.clone(),
                size: c.size,
            }
        })
        .collect();
    out.sort_by_key(|c| !c.name.ends_with(".history"));
    out
}

/// How the boundary is chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retention {
    /// Keep the WAL of the newest N backups (`.backup` files).
    Backups(usize),
    /// Keep everything from this file on (a segment, `.partial` or
    /// `.backup` name; its segment is the boundary).
    Before(WalName),
}

/// Why pruning was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PruneError {
    #[error("no .backup file in any storage, so there is no backup to retain; give an explicit boundary with --before <segment>")]
    NoBackups,
    #[error("--retain-backups must be at least 1 (0 would delete the WAL of every backup)")]
    RetainZero,
    #[error("{0} is a timeline history file; --before takes a segment, .partial or .backup name")]
    HistoryBoundary(String),
    #[error("--before {boundary} is after the start of the newest backup, {newest}: that backup would lose WAL it needs; choose a name at or before {newest_segment}")]
    AfterNewestBackup {
        boundary: String,
        newest: String,
        newest_segment: String,
    },
    #[error("the primary storage {0:?} could not be listed; refusing to prune from a partial view (fix it or use WALG_TARGET_STORAGE)")]
    Unlisted(String),
}

/// One object to delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Deletion {
    pub storage: String,
    pub key: String,
    pub name: String,
    pub size: u64,
}

/// What a prune deletes on one storage.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StoragePrune {
    pub objects: u64,
    pub bytes: u64,
    pub segments: u64,
    pub partials: u64,
    pub backups: u64,
    /// Records of segments given up on purpose (`walg_gaps/`), deleted
    /// with the WAL they explain.
    pub gap_records: u64,
    /// Oldest and newest file deleted.
    pub first: Option<String>,
    pub last: Option<String>,
}

/// The `wal-prune` plan; `--json` prints it (plus what was done).
#[derive(Debug, Clone, Serialize)]
pub struct PrunePlan {
    /// The first segment kept (on its timeline and older ones).
    pub boundary: Option<String>,
    /// Why the boundary is there.
    pub boundary_source: String,
    /// `.backup` files in the union, oldest first.
    pub backups: Vec<String>,
    pub storages: BTreeMap<String, StoragePrune>,
    /// `.history` files kept (never deleted).
    pub histories_kept: u64,
    /// Deletions, oldest first; each file's copies together.
    #[serde(skip)]
    pub deletions: Vec<Deletion>,
}

/// Adds to `plan` the declared-gap records (`walg_gaps/<segment>.json`,
/// listed per storage in `records` as (storage, key, size)) of segments
/// before its boundary, on the boundary's timeline or an older one, as the
/// WAL they explain is: a record outlives nothing it describes. They go
/// after every WAL deletion in the plan's order, so a prune interrupted
/// before its last window leaves records of gaps already pruned, and
/// every record of a segment the kept backups need stays.
pub fn prune_gap_records(plan: &mut PrunePlan, records: &[(String, String, u64)]) {
    let Some(b) = plan
        .boundary
        .as_deref()
        .and_then(|n| WalName::parse(n).ok())
        .and_then(|n| n.segment())
    else {
        return;
    };
    let mut doomed: Vec<(Segment, &(String, String, u64))> = records
        .iter()
        .filter_map(|r| crate::archive::gaps::segment_of_key(&r.1).map(|s| (s, r)))
        .filter(|(s, _)| s.timeline <= b.timeline && (s.log, s.seg) < (b.log, b.seg))
        .collect();
    doomed.sort_by_key(|(s, r)| (s.log, s.seg, s.timeline, r.0.clone()));
    for (seg, (storage, key, size)) in doomed {
        let p = plan.storages.entry(storage.clone()).or_default();
        p.objects += 1;
        p.bytes += size;
        p.gap_records += 1;
        plan.deletions.push(Deletion {
            storage: storage.clone(),
            key: key.clone(),
            name: format!("{seg} (declared gap record)"),
            size: *size,
        });
    }
}

fn position(s: &Segment) -> (u32, u32, u32) {
    (s.timeline, s.log, s.seg)
}

fn segment_of(name: &WalName) -> Option<Segment> {
    match name {
        WalName::Segment(s) | WalName::Partial(s) | WalName::Backup { segment: s, .. } => Some(*s),
        WalName::History { .. } => None,
    }
}

/// Plans a prune; see the module documentation.
pub fn prune_plan(map: &ArchiveMap, retention: &Retention) -> Result<PrunePlan, PruneError> {
    if let Some(s) = map.storages().first().filter(|s| s.error.is_some()) {
        return Err(PruneError::Unlisted(s.name.clone()));
    }
    let backups = map.backups();
    let backup_names: Vec<String> = backups.iter().map(|b| b.to_string()).collect();
    let newest = backups.last().copied();
    let (boundary, source) = match retention {
        Retention::Backups(0) => return Err(PruneError::RetainZero),
        Retention::Backups(n) => {
            if backups.is_empty() {
                return Err(PruneError::NoBackups);
            }
            if *n > backups.len() {
                (
                    None,
                    format!(
                        "only {} backup(s) in the archive, fewer than the {n} to retain: nothing to prune",
                        backups.len()
                    ),
                )
            } else {
                let b = backups[backups.len() - n];
                (
                    segment_of(&b),
                    format!("start of backup {n} from the newest, {b}"),
                )
            }
        }
        Retention::Before(name) => {
            let Some(seg) = segment_of(name) else {
                return Err(PruneError::HistoryBoundary(name.to_string()));
            };
            if let Some(nb) = newest.and_then(|b| segment_of(&b).map(|s| (b, s))) {
                if position(&seg) > position(&nb.1) {
                    return Err(PruneError::AfterNewestBackup {
                        boundary: name.to_string(),
                        newest: nb.0.to_string(),
                        newest_segment: nb.1.to_string(),
                    });
                }
            }
            (Some(seg), format!("--before {name}"))
        }
    };

    let mut storages: BTreeMap<String, StoragePrune> = map
        .storages()
        .iter()
        .filter(|s| s.error.is_none())
        .map(|s| (s.name.clone(), StoragePrune::default()))
        .collect();
    let mut histories_kept = 0;
    let mut doomed: Vec<&[Copy]> = Vec::new();
    for file in map.files() {
        let name = file[0].name;
        let Some(seg) = segment_of(&name) else {
            histories_kept += 1;
            continue;
        };
        let Some(b) = boundary else { continue };
        if seg.timeline <= b.timeline && (seg.log, seg.seg) < (b.log, b.seg) {
            doomed.push(file);
        }
    }
    // Oldest first: by position, then timeline, then kind.
    doomed.sort_by_key(|f| {
        let s = segment_of(&f[0].name).unwrap_or(Segment {
            timeline: 0,
            log: 0,
            seg: 0,
        });
        (s.log, s.seg, s.timeline)
    });
    let mut deletions = Vec::new();
    for file in doomed {
        for c in file {
            let storage = map.storages()[usize::from(c.storage)].name.clone();
            let p = storages.entry(storage.clone()).or_default();
            p.objects += 1;
            p.bytes += c.size;
            match c.name {
                WalName::Segment(_) => p.segments += 1,
                WalName::Partial(_) => p.partials += 1,
                WalName::Backup { .. } => p.backups += 1,
                WalName::History { .. } => {}
            }
            let n = c.name.to_string();
            if p.first.is_none() {
                p.first = Some(n.clone());
            }
            p.last = Some(n.clone());
            deletions.push(Deletion {
                storage,
                key: c.key(),
                name: n,
                size: c.size,
            });
        }
    }
    Ok(PrunePlan {
        boundary: boundary.map(|b| b.to_string()),
        boundary_source: source,
        backups: backup_names,
        storages,
        histories_kept,
        deletions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::map_from_keys;

    fn map(keys: &[(usize, &str)]) -> ArchiveMap {
        let owned: Vec<(usize, String)> = keys
            .iter()
            .map(|(s, k)| (*s, format!("wal_005/{k}.lz4")))
            .collect();
        let refs: Vec<(usize, &str)> = owned.iter().map(|(s, k)| (*s, k.as_str())).collect();
        map_from_keys(&["default", "failover"], &refs)
    }

    fn check(m: &ArchiveMap, r: Retention, boundary: Option<&str>, deleted: &[(&str, &str)]) {
        let plan = prune_plan(m, &r).expect("plan");
        assert_eq!(plan.boundary.as_deref(), boundary);
        let got: Vec<(&str, &str)> = plan
            .deletions
            .iter()
            .map(|d| (d.storage.as_str(), d.name.as_str()))
            .collect();
        assert_eq!(got, deleted);
    }

    const ARCHIVE: &[(usize, &str)] = &[
        (0, "000000010000000000000001"),
        (0, "000000010000000000000002"),
        (0, "000000010000000000000002.00000028.backup"),
        (0, "000000010000000000000003"),
        (1, "000000010000000000000003"),
        (0, "000000010000000000000004"),
        (0, "000000010000000000000004.00000060.backup"),
        (0, "000000010000000000000005"),
        (0, "000000010000000000000006.partial"),
        (0, "00000002.history"),
        (0, "000000020000000000000006"),
        (0, "000000020000000000000006.00000028.backup"),
        (0, "000000020000000000000007"),
    ];

    #[test]
    fn retain_backups() {
        let m = map(ARCHIVE);
        // Keep 2: the boundary is 000000010000000000000004 (backup on the
        // parent timeline); the copy on the failover goes too.
        check(
            &m,
            Retention::Backups(2),
            Some("000000010000000000000004"),
            &[
                ("default", "000000010000000000000001"),
                ("default", "000000010000000000000002"),
                ("default", "000000010000000000000002.00000028.backup"),
                ("default", "000000010000000000000003"),
                ("failover", "000000010000000000000003"),
            ],
        );
        // Keep 1: the boundary is on timeline 2; everything before 6 on
        // timelines 1 and 2 goes, the .partial at 6 and the history stay.
        let plan = prune_plan(&m, &Retention::Backups(1)).expect("plan");
        assert_eq!(plan.boundary.as_deref(), Some("000000020000000000000006"));
        assert_eq!(plan.deletions.len(), 8);
        assert_eq!(
            plan.deletions.last().map(|d| d.name.as_str()),
            Some("000000010000000000000005")
        );
        assert_eq!(plan.histories_kept, 1);
        assert_eq!(plan.storages["default"].backups, 2);
        assert_eq!(plan.storages["failover"].objects, 1);
        // Keep more than exist: nothing.
        check(&m, Retention::Backups(4), None, &[]);
    }

    #[test]
    fn gap_records_go_with_the_wal_they_explain() {
        let m = map(ARCHIVE);
        let record = |storage: &str, seg: &str| {
            (
                storage.to_string(),
                crate::archive::gaps::record_key(seg),
                100,
            )
        };
        let records = vec![
            record("default", "000000010000000000000003"),
            record("failover", "000000010000000000000003"),
            record("default", "000000010000000000000005"),
            // On timeline 2 before the boundary of `Backups(2)` (on 1).
            record("default", "000000020000000000000002"),
            ("default".to_string(), "walg_gaps/notes.txt".to_string(), 9),
        ];
        let mut plan = prune_plan(&m, &Retention::Backups(2)).expect("plan");
        let wal = plan.deletions.len();
        prune_gap_records(&mut plan, &records);
        let added: Vec<(&str, &str)> = plan.deletions[wal..]
            .iter()
            .map(|d| (d.storage.as_str(), d.key.as_str()))
            .collect();
        assert_eq!(
            added,
            [
                ("default", "walg_gaps/000000010000000000000003.json"),
                ("failover", "walg_gaps/000000010000000000000003.json"),
            ],
            "before the boundary (000000010000000000000004) on its timeline only, after the WAL"
        );
        assert_eq!(plan.storages["default"].gap_records, 1);
        assert_eq!(plan.storages["failover"].objects, 2);
        // Keep 1 (boundary 000000020000000000000006): the records before
        // it on timelines 1 and 2 go.
        let mut plan = prune_plan(&m, &Retention::Backups(1)).expect("plan");
        prune_gap_records(&mut plan, &records);
        assert_eq!(
            plan.deletions
                .iter()
                .filter(|d| d.key.starts_with("walg_gaps/"))
                .count(),
            4
        );
        // No boundary: nothing.
        let mut plan = prune_plan(&m, &Retention::Backups(9)).expect("plan");
        prune_gap_records(&mut plan, &records);
        assert!(plan.deletions.is_empty());
    }

    #[test]
    fn boundary_on_a_parent_timeline() {
        // --before a timeline-1 name while timeline 2 exists: only timeline 1
        // before it goes, nothing of timeline 2.
        let keys: Vec<(usize, &str)> = ARCHIVE
            .iter()
            .copied()
            .chain([(0, "000000020000000000000003")])
            .collect();
        let m = map(&keys);
        let before = WalName::parse("000000010000000000000004").expect("name");
        let plan = prune_plan(&m, &Retention::Before(before)).expect("plan");
        assert!(plan
            .deletions
            .iter()
            .all(|d| d.name.starts_with("00000001")));
        assert_eq!(plan.deletions.len(), 5);
    }

    #[test]
    fn refusals() {
        let m = map(&[(0, "000000010000000000000001")]);
        assert_eq!(
            prune_plan(&m, &Retention::Backups(1)).expect_err("refused"),
            PruneError::NoBackups
        );
        let m = map(ARCHIVE);
        assert_eq!(
            prune_plan(&m, &Retention::Backups(0)).expect_err("refused"),
            PruneError::RetainZero
        );
        let after = WalName::parse("000000020000000000000007").expect("name");
        assert!(matches!(
            prune_plan(&m, &Retention::Before(after)),
            Err(PruneError::AfterNewestBackup { .. })
        ));
        let h = WalName::parse("00000002.history").expect("name");
        assert!(matches!(
            prune_plan(&m, &Retention::Before(h)),
            Err(PruneError::HistoryBoundary(_))
        ));
        // A .backup name as boundary means its segment.
        let b = WalName::parse("000000010000000000000004.00000060.backup").expect("name");
        let plan = prune_plan(&m, &Retention::Before(b)).expect("plan");
        assert_eq!(plan.boundary.as_deref(), Some("000000010000000000000004"));
    }

    #[test]
    fn repair_copies_what_the_primary_lacks() {
        let m = map(&[
            (0, "000000010000000000000001"),
            (1, "000000010000000000000002"),
            (1, "000000010000000000000003"),
            (0, "000000010000000000000003"),
            (1, "00000002.history"),
        ]);
        let plan = repair_plan(&m);
        let names: Vec<&str> = plan.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, vec!["00000002.history", "000000010000000000000002"]);
        assert_eq!(plan[1].key, "wal_005/000000010000000000000002.lz4");
        assert_eq!(plan[1].source, "failover");
    }
}
