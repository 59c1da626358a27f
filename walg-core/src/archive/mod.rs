//! The archive as a whole, for the archive commands: the map of which
//! storage holds which WAL file (this file), [`verify`] (`wal-verify`'s walk
//! and statuses), [`prune`] (`wal-repair` and `wal-prune` plans) and
//! [`identity`] (the system identifier an archive belongs to, and the store
//! layer that claims or checks it before a process's first WAL write).
//!
//! Must not know: how objects are encoded (the pipeline's), which backend a
//! storage is, the doctor, settings or the environment. Plans are values:
//! the caller carries out copies and deletes.
//!
//! Invariant: listings are folded page by page; the map keeps a small
//! fixed-size entry per copy and no key strings; nothing here deletes.
//!
//! One map of the WAL archive across every storage: which storage holds
//! which WAL file, under which key, and how large it is.
//!
//! [`list_archive`] lists `wal_005/` on each named storage page by page
//! ([`Store::list_pages`](crate::Store::list_pages)), concurrently, and folds the pages into an
//! [`ArchiveMap`]; it is the one listing that `wal-show`, `wal-verify`,
//! `wal-repair`, `wal-prune` (and any status command) share. The map keeps
//! one small fixed-size entry per (file, storage) and no key strings, so an
//! archive of a million objects costs tens of megabytes. [`ArchiveMap::show`]
//! summarises it per timeline for `wal-show`.
//!
//! What this module does not do: download files (history and `.backup`
//! contents are the caller's), decide what recovery needs
//! ([`crate::archive::verify`]) or what to delete ([`crate::archive::prune`]).

pub mod gaps;
pub mod identity;
pub mod prune;
pub mod verify;

use std::collections::{BTreeMap, BTreeSet};

use futures::StreamExt;
use serde::Serialize;

use crate::pipeline::codec::Compression;
use crate::store::DynStore;
use crate::wal::history::HistoryRecord;
use crate::wal::layout::{parse_wal_key, wal_key, WAL_PREFIX};
use crate::wal::{Segment, WalName};

/// Most storages one map can hold (one bit each in a mask).
pub const MAX_STORAGES: usize = 64;

/// Names listed in reports before a list is cut short (counts stay exact).
pub const NAMES_SHOWN: usize = 1000;

/// One copy of a WAL file on one storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copy {
    pub name: WalName,
    /// Index into [`ArchiveMap::storages`].
    pub storage: u8,
    pub compression: Compression,
    pub size: u64,
}

impl Copy {
    /// The object's key under the storage prefix.
    pub fn key(&self) -> String {
        wal_key(&self.name, self.compression)
    }
}

/// What the listing of one storage gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StorageListing {
    pub name: String,
    /// WAL files listed (copies; a file stored twice with two compressions
    /// counts twice).
    pub objects: u64,
    pub bytes: u64,
    /// Objects under `wal_005/` that are not WAL files walg can read
    /// (unknown extensions, temporary files of other tools).
    pub foreign: u64,
    /// Why the storage could not be listed; its copies are then absent from
    /// the map.
    pub error: Option<String>,
}

/// Sort order of names: timeline, then position, then kind.
fn order(name: &WalName) -> (u32, u32, u32, u8, u32) {
    match name {
        WalName::Segment(s) => (s.timeline, s.log, s.seg, 0, 0),
        WalName::Partial(s) => (s.timeline, s.log, s.seg, 1, 0),
        WalName::Backup { segment: s, offset } => (s.timeline, s.log, s.seg, 2, *offset),
        WalName::History { timeline } => (*timeline, u32::MAX, u32::MAX, 3, 0),
    }
}

/// The union of the storages' listings.
#[derive(Debug, Clone, Default)]
pub struct ArchiveMap {
    storages: Vec<StorageListing>,
    /// Sorted by (name order, storage).
    copies: Vec<Copy>,
}

/// Folds listing pages into an [`ArchiveMap`].
#[derive(Debug, Default)]
pub struct ArchiveBuilder {
    map: ArchiveMap,
}

impl ArchiveBuilder {
    /// Adds a storage; returns its index. Storage 0 is the primary.
    pub fn storage(&mut self, name: impl Into<String>) -> u8 {
        assert!(
            self.map.storages.len() < MAX_STORAGES,
            "more than {MAX_STORAGES} storages"
        );
        self.map.storages.push(StorageListing {
            name: name.into(),
            objects: 0,
            bytes: 0,
            foreign: 0,
            error: None,
        });
        (self.map.storages.len() - 1) as u8
    }

    /// Adds one listed key of storage `storage`.
    pub fn add(&mut self, storage: u8, key: &str, size: u64) {
        let listing = &mut self.map.storages[usize::from(storage)];
        match parse_wal_key(key) {
            Some((name, compression)) => {
                listing.objects += 1;
                listing.bytes += size;
                self.map.copies.push(Copy {
                    name,
                    storage,
                    compression,
                    size,
                });
            }
            None => listing.foreign += 1,
        }
    }

    /// Records that `storage` could not be listed: what it gave is dropped,
    /// since a partial listing would show false gaps.
    pub fn failed(&mut self, storage: u8, error: impl Into<String>) {
        self.map.copies.retain(|c| c.storage != storage);
        let listing = &mut self.map.storages[usize::from(storage)];
        listing.error = Some(error.into());
        listing.objects = 0;
        listing.bytes = 0;
    }

    pub fn finish(mut self) -> ArchiveMap {
        self.map
            .copies
            .sort_unstable_by_key(|c| (order(&c.name), c.storage, c.compression as u8));
        self.map
    }
}

/// Lists `wal_005/` on every storage (the first is the primary) page by
/// page and concurrently, folding each page into the map as it arrives (no
/// key string outlives its page). A storage that fails is recorded in its
/// [`StorageListing::error`], not fatal: callers decide what an incomplete
/// view means. `progress` is called after each page with the storage's
/// name and its objects so far.
pub async fn list_archive(
    stores: &[(String, DynStore)],
    progress: &(dyn Fn(&str, u64) + Sync),
) -> ArchiveMap {
    let folds = futures::future::join_all(stores.iter().enumerate().map(
        |(i, (name, store))| async move {
            let mut b = ArchiveBuilder::default();
            // Every fold has all storages so the indexes match the merge.
            for (n, _) in stores {
                b.storage(n.clone());
            }
            let i = i as u8;
            let mut pages = store.list_pages(WAL_PREFIX);
            let mut seen = 0u64;
            while let Some(page) = pages.next().await {
                match page {
                    Ok(page) => {
                        seen += page.len() as u64;
                        for o in &page {
                            b.add(i, &o.key, o.size);
                        }
                        progress(name, seen);
                    }
                    Err(e) => {
                        b.failed(i, e.to_string());
                        break;
                    }
                }
            }
            (i, b.map)
        },
    ));
    let mut out = ArchiveBuilder::default();
    for (n, _) in stores {
        out.storage(n.clone());
    }
    for (i, map) in folds.await {
        let i = usize::from(i);
        out.map.storages[i] = map.storages[i].clone();
        out.map.copies.extend(map.copies);
    }
    out.finish()
}

/// A gap: segments `from..=to` (names) on one timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gap {
    pub from: String,
    pub to: String,
    pub count: u64,
    /// Segments of the gap that `wal-push` gave up on purpose (declared
    /// gaps, `walg_gaps/`); the rest are missing without explanation.
    pub declared: u64,
}

impl ArchiveMap {
    pub fn storages(&self) -> &[StorageListing] {
        &self.storages
    }

    /// Index of a storage by name.
    pub fn storage_index(&self, name: &str) -> Option<u8> {
        self.storages
            .iter()
            .position(|s| s.name == name)
            .map(|i| i as u8)
    }

    /// Every copy, sorted by name (timeline, position, kind), then storage.
    pub fn copies(&self) -> &[Copy] {
        &self.copies
    }

    /// Copies grouped by file.
    pub fn files(&self) -> impl Iterator<Item = &[Copy]> + '_ {
        self.copies.chunk_by(|a, b| a.name == b.name)
    }

    /// The copies of one file.
    pub fn copies_of(&self, name: &WalName) -> &[Copy] {
        let key = order(name);
        let start = self.copies.partition_point(|c| order(&c.name) < key);
        let end = start + self.copies[start..].partition_point(|c| c.name == *name);
        &self.copies[start..end]
    }

    /// Bit `i` set when storage `i` holds `name`.
    pub fn mask(&self, name: &WalName) -> u64 {
        self.copies_of(name)
            .iter()
            .fold(0, |m, c| m | 1u64 << c.storage)
    }

    /// Timelines that have at least one segment, `.partial`, `.backup` or
    /// `.history` file.
    pub fn timelines(&self) -> BTreeSet<u32> {
        self.files().map(|f| f[0].name.timeline()).collect()
    }

    /// Segments (plain, complete ones) of one timeline, in order.
    pub fn segments(&self, timeline: u32) -> impl Iterator<Item = (Segment, u64)> + '_ {
        let start = self.copies.partition_point(|c| order(&c.name).0 < timeline);
        self.copies[start..]
            .chunk_by(|a, b| a.name == b.name)
            .take_while(move |f| f[0].name.timeline() == timeline)
            .filter_map(|f| {
                let seg = f[0].name.segment()?;
                Some((seg, f.iter().fold(0u64, |m, c| m | 1u64 << c.storage)))
            })
    }

    /// Every `.backup` file of the union, oldest first (timeline, then
    /// position, as WAL-G and pgBackRest order names).
    pub fn backups(&self) -> Vec<WalName> {
        self.files()
            .map(|f| f[0].name)
            .filter(|n| matches!(n, WalName::Backup { .. }))
            .collect()
    }

    /// Highest timeline with a plain segment.
    pub fn newest_segment_timeline(&self) -> Option<u32> {
        self.copies
            .iter()
            .rev()
            .find(|c| matches!(c.name, WalName::Segment(_)))
            .map(|c| c.name.timeline())
    }

    /// Summary per timeline and storage for `wal-show`. `histories` holds
    /// the parsed `.history` file of each timeline that has one.
    pub fn show(
        &self,
        segment_size: u64,
        histories: &BTreeMap<u32, Vec<HistoryRecord>>,
    ) -> ShowReport {
        let n = self.storages.len();
        let mut timelines = Vec::new();
        let mut only_on: Vec<(u64, Vec<String>)> = vec![(0, Vec::new()); n];
        for tli in self.timelines() {
            let (parent, switch_point) = histories
                .get(&tli)
                .and_then(|r| r.last())
                .map_or((None, None), |r| {
                    (Some(r.timeline), Some(r.switch.to_string()))
                });
            let mut t = TimelineShow {
                timeline: tli,
                parent,
                switch_point,
                history: false,
                first_segment: None,
                last_segment: None,
                segment_range: 0,
                segments: 0,
                gaps: Vec::new(),
                partials: Vec::new(),
                backups: Vec::new(),
                storages: BTreeMap::new(),
            };
            let mut per: Vec<StorageTimeline> = vec![StorageTimeline::default(); n];
            let mut last_per: Vec<Option<u64>> = vec![None; n];
            let mut last: Option<u64> = None;
            let start = self.copies.partition_point(|c| order(&c.name).0 < tli);
            for file in self.copies[start..]
                .chunk_by(|a, b| a.name == b.name)
                .take_while(|f| f[0].name.timeline() == tli)
            {
                let name = file[0].name;
                match name {
                    WalName::Segment(seg) => {
                        let num = seg.number(segment_size);
                        if let Some(prev) = last {
                            if num > prev + 1 {
                                t.gaps.push(gap(tli, prev + 1, num - 1, segment_size));
                            }
                        } else {
                            t.first_segment = Some(seg.to_string());
                        }
                        t.last_segment = Some(seg.to_string());
                        last = Some(num);
                        t.segments += 1;
                        let mut holders = 0;
                        for c in file {
                            let s = usize::from(c.storage);
                            if last_per[s] == Some(num) {
                                continue; // a second compression of the same file
                            }
                            holders += 1;
                            let p = &mut per[s];
                            match last_per[s] {
                                Some(prev) if num > prev + 1 => p.gaps += 1,
                                None => p.first_segment = Some(seg.to_string()),
                                _ => {}
                            }
                            p.last_segment = Some(seg.to_string());
                            p.segments += 1;
                            last_per[s] = Some(num);
                        }
                        if holders == 1 && n > 1 {
                            let o = &mut only_on[usize::from(file[0].storage)];
                            o.0 += 1;
                            if o.1.len() < NAMES_SHOWN {
                                o.1.push(seg.to_string());
                            }
                        }
                    }
                    WalName::Partial(_) => t.partials.push(name.to_string()),
                    WalName::Backup { .. } => t.backups.push(name.to_string()),
                    WalName::History { .. } => t.history = true,
                }
            }
            if let (Some(f), Some(l)) = (&t.first_segment, &t.last_segment) {
                let f = WalName::parse(f).ok().and_then(|n| n.segment());
                let l = WalName::parse(l).ok().and_then(|n| n.segment());
                if let (Some(f), Some(l)) = (f, l) {
                    t.segment_range =
                        (l.number(segment_size) + 1).saturating_sub(f.number(segment_size));
                }
            }
            for (i, p) in per.into_iter().enumerate() {
                if self.storages[i].error.is_none() {
                    t.storages.insert(self.storages[i].name.clone(), p);
                }
            }
            timelines.push(t);
        }
        ShowReport {
            segment_size,
            storages: self.storages.clone(),
            timelines,
            only_on: self
                .storages
                .iter()
                .zip(only_on)
                .filter(|(_, (count, _))| *count > 0)
                .map(|(s, (count, segments))| (s.name.clone(), OnlyOn { count, segments }))
                .collect(),
            declared_segments: 0,
            declared_runs: Vec::new(),
        }
    }
}

fn gap(timeline: u32, from: u64, to: u64, segment_size: u64) -> Gap {
    Gap {
        from: Segment::from_number(timeline, from, segment_size).to_string(),
        to: Segment::from_number(timeline, to, segment_size).to_string(),
        count: to - from + 1,
        declared: 0,
    }
}

/// `wal-show`: the archive per timeline, for the union and each storage.
#[derive(Debug, Clone, Serialize)]
pub struct ShowReport {
    pub segment_size: u64,
    pub storages: Vec<StorageListing>,
    pub timelines: Vec<TimelineShow>,
    /// Segments that only one storage holds, by storage (only with two or
    /// more storages).
    pub only_on: BTreeMap<String, OnlyOn>,
    /// Segments given up on purpose by `wal-push` (declared gaps) among
    /// the gaps, and the records that say when and why (the first of each
    /// run).
    pub declared_segments: u64,
    pub declared_runs: Vec<gaps::GapRun>,
}

/// One timeline in `wal-show`.
#[derive(Debug, Clone, Serialize)]
pub struct TimelineShow {
    pub timeline: u32,
    /// From the last record of this timeline's `.history` file.
    pub parent: Option<u32>,
    pub switch_point: Option<String>,
    /// Whether `<timeline>.history` is archived.
    pub history: bool,
    pub first_segment: Option<String>,
    pub last_segment: Option<String>,
    /// `last - first + 1`.
    pub segment_range: u64,
    /// Segments present in at least one storage.
    pub segments: u64,
    /// Runs of segments absent from every storage, within `first..=last`.
    pub gaps: Vec<Gap>,
    pub partials: Vec<String>,
    pub backups: Vec<String>,
    pub storages: BTreeMap<String, StorageTimeline>,
}

/// One timeline on one storage.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StorageTimeline {
    pub segments: u64,
    pub first_segment: Option<String>,
    pub last_segment: Option<String>,
    /// Runs of segments this storage lacks between its first and last.
    pub gaps: u64,
}

/// Segments held by a single storage.
#[derive(Debug, Clone, Serialize)]
pub struct OnlyOn {
    pub count: u64,
    /// The first [`NAMES_SHOWN`] of them.
    pub segments: Vec<String>,
}

/// WAL-G's `wal-show --detailed-json` element (`TimelineInfo`), over the
/// union of the storages. `backups` is omitted: walg keeps no base backups.
#[derive(Debug, Clone, Serialize)]
pub struct WalgTimelineInfo {
    pub id: u32,
    pub parent_id: u32,
    pub switch_point_lsn: u64,
    pub start_segment: String,
    pub end_segment: String,
    pub segments_count: u64,
    pub missing_segments: Vec<String>,
    pub segment_range_size: u64,
    pub status: &'static str,
}

impl ShowReport {
    /// Marks the segments of the gaps that were given up on purpose.
    pub fn mark_declared(&mut self, declared: &gaps::DeclaredGaps) {
        let size = self.segment_size;
        let mut within = gaps::DeclaredGaps::default();
        for t in &mut self.timelines {
            for g in &mut t.gaps {
                let (Some(from), Some(to)) = (
                    WalName::parse(&g.from).ok().and_then(|n| n.segment()),
                    WalName::parse(&g.to).ok().and_then(|n| n.segment()),
                ) else {
                    continue;
                };
                for n in from.number(size)..=to.number(size) {
                    let name = Segment::from_number(t.timeline, n, size).to_string();
                    if declared.contains(&name) {
                        g.declared += 1;
                        within.add(&name, declared.record(&name).cloned());
                    }
                }
            }
        }
        self.declared_segments = within.len() as u64;
        self.declared_runs = within.runs(size);
    }

    /// The report in WAL-G's `wal-show --detailed-json` shape.
    pub fn walg_json(
        &self,
        histories: &BTreeMap<u32, Vec<HistoryRecord>>,
    ) -> Vec<WalgTimelineInfo> {
        self.timelines
            .iter()
            .filter_map(|t| {
                let first = t.first_segment.clone()?;
                let last = t.last_segment.clone()?;
                let (parent_id, switch) = histories
                    .get(&t.timeline)
                    .and_then(|r| r.last())
                    .map_or((0, 0), |r| (r.timeline, r.switch.0));
                let mut missing = Vec::new();
                for g in &t.gaps {
                    let (Some(from), Some(to)) = (
                        WalName::parse(&g.from).ok().and_then(|n| n.segment()),
                        WalName::parse(&g.to).ok().and_then(|n| n.segment()),
                    ) else {
                        continue;
                    };
                    let (a, b) = (from.number(self.segment_size), to.number(self.segment_size));
                    for n in a..=b {
                        missing.push(
                            Segment::from_number(t.timeline, n, self.segment_size).to_string(),
                        );
                    }
                }
                Some(WalgTimelineInfo {
                    id: t.timeline,
                    parent_id,
                    switch_point_lsn: switch,
                    start_segment: first,
                    end_segment: last,
                    segments_count: t.segments,
                    status: if missing.is_empty() {
                        "OK"
                    } else {
                        "LOST_SEGMENTS"
                    },
                    missing_segments: missing,
                    segment_range_size: t.segment_range,
                })
            })
            .collect()
    }
}

/// Builds a map from `(storage, key)` pairs, for tests and tools that
/// already hold a listing.
pub fn map_from_keys(storages: &[&str], keys: &[(usize, &str)]) -> ArchiveMap {
    let mut b = ArchiveBuilder::default();
    for s in storages {
        b.storage(*s);
    }
    for (s, k) in keys {
        b.add(*s as u8, k, 0);
    }
    b.finish()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;
    use crate::store::{PutOptions, Store};
    use crate::wal::history::parse_history;
    use std::sync::Arc;

    const MIB: u64 = 1 << 20;

    /// Keys `wal_005/<tli><seg>.lz4` for segment numbers `range` (16 MiB
    /// numbering unless the names say otherwise).
    pub(crate) fn seg_keys(
        tli: u32,
        range: std::ops::RangeInclusive<u64>,
        size: u64,
    ) -> Vec<String> {
        range
            .map(|n| format!("wal_005/{}.lz4", Segment::from_number(tli, n, size)))
            .collect()
    }

    #[test]
    fn folds_keys_and_groups_copies() {
        let map = map_from_keys(
            &["default", "backup"],
            &[
                (0, "wal_005/000000010000000000000001.lz4"),
                (1, "wal_005/000000010000000000000001.lz4"),
                (0, "wal_005/000000010000000000000002.zst"),
                (1, "wal_005/000000010000000000000003"),
                (0, "wal_005/00000002.history.lz4"),
                (0, "wal_005/000000010000000000000002.00000028.backup.lz4"),
                (0, "wal_005/garbage.tmp"),
                (0, "wal_005/000000010000000000000004.lzma"),
            ],
        );
        assert_eq!(map.storages()[0].foreign, 2);
        assert_eq!(map.storages()[0].objects, 4);
        let n = |s: &str| WalName::parse(s).expect("name");
        assert_eq!(map.mask(&n("000000010000000000000001")), 0b11);
        assert_eq!(map.mask(&n("000000010000000000000003")), 0b10);
        assert_eq!(map.mask(&n("000000010000000000000009")), 0);
        assert_eq!(
            map.copies_of(&n("000000010000000000000002"))[0].key(),
            "wal_005/000000010000000000000002.zst"
        );
        assert_eq!(map.timelines().into_iter().collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(map.backups().len(), 1);
        assert_eq!(map.segments(1).count(), 3);
        assert_eq!(map.segments(2).count(), 0);
        assert_eq!(map.newest_segment_timeline(), Some(1));
    }

    #[test]
    fn show_reports_gaps_per_timeline_and_storage() {
        let mut keys: Vec<(usize, String)> = Vec::new();
        // Timeline 1: 1..=10 on default except 4..=5, which the failover holds;
        // 8 is nowhere. Timeline 2 from 6 (switch at 0/6000028, 16 MiB).
        for (i, k) in seg_keys(1, 1..=10, 16 * MIB).into_iter().enumerate() {
            let n = i as u64 + 1;
            match n {
                4 | 5 => keys.push((1, k)),
                8 => {}
                _ => keys.push((0, k)),
            }
        }
        keys.push((0, "wal_005/000000010000000000000006.partial.lz4".into()));
        for k in seg_keys(2, 6..=7, 16 * MIB) {
            keys.push((0, k));
        }
        keys.push((0, "wal_005/00000002.history.lz4".into()));
        let refs: Vec<(usize, &str)> = keys.iter().map(|(s, k)| (*s, k.as_str())).collect();
        let map = map_from_keys(&["default", "failover"], &refs);
        let mut h = BTreeMap::new();
        h.insert(
            2,
            parse_history("1\t0/6000028\tno recovery target specified\n").expect("h"),
        );
        let r = map.show(16 * MIB, &h);
        let t1 = &r.timelines[0];
        assert_eq!(t1.segments, 9);
        assert_eq!(t1.segment_range, 10);
        assert_eq!(
            t1.gaps,
            vec![Gap {
                from: "000000010000000000000008".into(),
                to: "000000010000000000000008".into(),
                count: 1,
                declared: 0
            }]
        );
        assert_eq!(t1.partials, vec!["000000010000000000000006.partial"]);
        assert_eq!(t1.storages["default"].segments, 7);
        assert_eq!(t1.storages["default"].gaps, 2);
        assert_eq!(t1.storages["failover"].segments, 2);
        let t2 = &r.timelines[1];
        assert_eq!(
            (t2.parent, t2.switch_point.as_deref()),
            (Some(1), Some("0/6000028"))
        );
        assert!(t2.history);
        assert_eq!(r.only_on["failover"].count, 2);
        assert_eq!(r.only_on["default"].count, 9);
        let walg = r.walg_json(&h);
        assert_eq!(walg[0].missing_segments, vec!["000000010000000000000008"]);
        assert_eq!(walg[0].status, "LOST_SEGMENTS");
        assert_eq!(
            (walg[1].parent_id, walg[1].switch_point_lsn),
            (1, 0x6000028)
        );
        let json = serde_json::to_string(&walg[1]).expect("json");
        assert!(json.contains("\"switch_point_lsn\":100663336"), "{json}");
    }

    #[test]
    fn gaps_use_the_segment_size() {
        // 1 MiB segments: 4096 per 4 GiB, so 00000FFF is followed by
        // 0000000100000000; with 16 MiB, 000000FF is.
        let keys = seg_keys(1, 0xFFE..=0x1001, MIB);
        assert_eq!(keys[2], "wal_005/000000010000000100000000.lz4");
        let refs: Vec<(usize, &str)> = keys.iter().map(|k| (0, k.as_str())).collect();
        let map = map_from_keys(&["default"], &refs);
        let r = map.show(MIB, &BTreeMap::new());
        assert!(r.timelines[0].gaps.is_empty());
        assert_eq!(r.timelines[0].segment_range, 4);
        let keys = seg_keys(1, 0xFE..=0x101, 16 * MIB);
        assert_eq!(keys[2], "wal_005/000000010000000100000000.lz4");
        let refs: Vec<(usize, &str)> = keys.iter().map(|k| (0, k.as_str())).collect();
        let map = map_from_keys(&["default"], &refs);
        assert!(map.show(16 * MIB, &BTreeMap::new()).timelines[0]
            .gaps
            .is_empty());
        // Read with the wrong size the same names show a gap, never a panic.
        let r = map.show(MIB, &BTreeMap::new());
        assert_eq!(r.timelines[0].gaps.len(), 1);
    }

    #[tokio::test]
    async fn lists_every_storage_in_pages() {
        let a = Arc::new(MemoryStore::new("a"));
        let b = Arc::new(MemoryStore::new("b"));
        for k in seg_keys(1, 1..=3, 16 * MIB) {
            a.put(&k, &bytes::Bytes::from_static(b"x"), PutOptions::default())
                .await
                .expect("put");
        }
        b.put(
            "wal_005/000000010000000000000004.lz4",
            &bytes::Bytes::from_static(b"yy"),
            PutOptions::default(),
        )
        .await
        .expect("put");
        let stores: Vec<(String, DynStore)> = vec![("default".into(), a), ("other".into(), b)];
        let seen = std::sync::Mutex::new(Vec::new());
        let map = list_archive(&stores, &|name, n| {
            seen.lock().expect("lock").push((name.to_string(), n))
        })
        .await;
        assert_eq!(map.storages()[0].objects, 3);
        assert_eq!(map.storages()[1].bytes, 2);
        assert_eq!(map.segments(1).count(), 4);
        assert!(!seen.lock().expect("lock").is_empty());
    }

    #[test]
    fn show_marks_the_declared_part_of_a_gap() {
        let mut keys: Vec<(usize, String)> = Vec::new();
        for k in seg_keys(1, 1..=3, 16 * MIB)
            .into_iter()
            .chain(seg_keys(1, 7..=8, 16 * MIB))
        {
            keys.push((0, k));
        }
        let refs: Vec<(usize, &str)> = keys.iter().map(|(s, k)| (*s, k.as_str())).collect();
        let map = map_from_keys(&["default"], &refs);
        let mut r = map.show(16 * MIB, &BTreeMap::new());
        let mut d = gaps::DeclaredGaps::default();
        // 4 and 5 given up on purpose, 6 lost, 9 declared but outside any gap.
        for n in [4u64, 5, 9] {
            d.add(&Segment::from_number(1, n, 16 * MIB).to_string(), None);
        }
        r.mark_declared(&d);
        let g = &r.timelines[0].gaps;
        assert_eq!(g.len(), 1);
        assert_eq!((g[0].count, g[0].declared), (3, 2));
        assert_eq!(r.declared_segments, 2);
        assert_eq!(r.declared_runs.len(), 1);
        assert_eq!(r.declared_runs[0].to, "000000010000000000000005");
    }
}
