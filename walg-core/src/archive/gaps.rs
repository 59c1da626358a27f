//! Declared gaps: WAL segments `wal-push` gave up on purpose because every
//! storage failed while `pg_wal` was over its declared budget
//! (`WALG_PG_WAL_BUDGET`), so PostgreSQL could remove them instead of
//! filling its disk.
//!
//! This module owns the vocabulary every command shares:
//!
//! - [`Budget`] and [`decide`]: the budget (a size, or a percentage of the
//!   file system holding `pg_wal`) and the pure decision to give a failed
//!   segment up or fail the push as always;
//! - [`GapRecord`]: what a given-up segment leaves behind (system
//!   identifier, time, reason, `pg_wal`'s size and the budget), as JSON,
//!   under `walg_gaps/<segment>.json` in the archive ([`record_key`]);
//! - [`GapJournal`]: the local, durable copy of the records in
//!   `pg_wal/walg_data/walg_gaps/` (beside upload-ahead's markers: inside
//!   the cluster, found by whoever has the data directory), pending until a
//!   storage accepts them, then moved to `uploaded/`;
//! - [`DeclaredGaps`]: the union of what the archive and the journal say,
//!   by segment, for `wal-verify`, `wal-show`, `wal-status` and `wal-fetch`.
//!
//! Invariant: a segment is given up only when a record of it is durable
//! somewhere (the journal, else the archive); `.history`, `.backup` and
//! `.partial` files are never given up. A damaged record is reported and
//! treated as unknown, never trusted and never a crash.
//!
//! What this module does not do: measure `pg_wal` or the file system, read
//! settings, or log (the CLI gathers and reports); it does not rename
//! PostgreSQL's `.ready` files (PostgreSQL marks the segment `.done` on the
//! exit 0 that follows a decision to give it up).

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::wal::{Segment, WalName};

/// The archive's prefix for gap records (beside `wal_005/`).
pub const GAPS_PREFIX: &str = "walg_gaps/";
/// The journal directory relative to `pg_wal`.
pub const JOURNAL_DIR: &str = "walg_data/walg_gaps";
/// The `format` field of a record.
pub const FORMAT: &str = "walg-declared-gap";
const VERSION: u32 = 1;
/// Larger files are not records.
const MAX_LEN: u64 = 1 << 16;

/// `WALG_PG_WAL_BUDGET`: how much WAL `pg_wal` may hold before a segment
/// whose push failed on every storage is given up.
#[derive(Debug, Clone, PartialEq)]
pub enum Budget {
    Bytes(u64),
    /// Percent (0 < p <= 100) of the file system holding `pg_wal`.
    Percent(f64),
}

impl Budget {
    /// The budget in bytes; a percentage needs the file system's size.
    pub fn bytes(&self, fs_total: Option<u64>) -> Option<u64> {
        match self {
            Budget::Bytes(b) => Some(*b),
            Budget::Percent(p) => fs_total.map(|t| (t as f64 * p / 100.0) as u64),
        }
    }

    /// As an operator wrote it (`50 GiB`, `80%`).
    pub fn describe(&self) -> String {
        match self {
            Budget::Bytes(b) => human(*b),
            Budget::Percent(p) => format!("{p}% of pg_wal's file system"),
        }
    }
}

/// `27.0 MiB`: the doctor's sizes, without knowing the doctor.
fn human(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// What `pg_wal` holds now, as the caller measured it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgWalUsage {
    /// Bytes of the WAL files directly in `pg_wal`.
    pub wal_bytes: u64,
    /// Size of the file system holding `pg_wal` (statvfs).
    pub fs_total: Option<u64>,
}

/// What to do with a push that failed.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Fail as always (exit 1): PostgreSQL keeps the file and retries.
    Fail { why: String },
    /// Give the segment up: record it, then exit 0.
    GiveUp { budget_bytes: u64, wal_bytes: u64 },
}

/// Whether a segment whose push failed is given up. `storage_failure`:
/// the push failed because the storages failed (not a refusal, a
/// different stored copy or an unreadable local file, which a gap would
/// hide). `usage`: the measurement, or why it failed.
pub fn decide(
    name: &WalName,
    budget: Option<&Budget>,
    storage_failure: bool,
    usage: Result<PgWalUsage, String>,
) -> Decision {
    let fail = |why: String| Decision::Fail { why };
    let Some(budget) = budget else {
        return fail("no WALG_PG_WAL_BUDGET is set".into());
    };
    if !matches!(name, WalName::Segment(_)) {
        return fail(format!(
            "{name} is not a segment; only segments are given up"
        ));
    }
    if !storage_failure {
        return fail("the push was refused, not a storage failure".into());
    }
    let usage = match usage {
        Ok(u) => u,
        Err(e) => return fail(format!("pg_wal's size could not be measured ({e})")),
    };
    let Some(budget_bytes) = budget.bytes(usage.fs_total) else {
        return fail("the size of pg_wal's file system is unknown".into());
    };
    if usage.wal_bytes <= budget_bytes {
        return fail(format!(
            "pg_wal holds {} of WAL, within WALG_PG_WAL_BUDGET {}",
            human(usage.wal_bytes),
            human(budget_bytes)
        ));
    }
    Decision::GiveUp {
        budget_bytes,
        wal_bytes: usage.wal_bytes,
    }
}

/// A given-up segment, as stored in the archive and the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GapRecord {
    pub format: String,
    pub version: u32,
    pub segment: String,
    /// The cluster's system identifier, in decimal (empty when unknown).
    #[serde(default)]
    pub system_identifier: String,
    /// When it was given up: RFC 3339, UTC.
    pub time: String,
    pub time_unix: u64,
    /// Why: the storages' error.
    pub reason: String,
    /// Bytes of WAL in `pg_wal` when it was given up.
    pub pg_wal_bytes: u64,
    /// `WALG_PG_WAL_BUDGET` as set, and in bytes.
    pub budget: String,
    pub budget_bytes: u64,
    #[serde(default)]
    pub host: String,
}

impl GapRecord {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        segment: Segment,
        system_id: Option<u64>,
        time: String,
        time_unix: u64,
        reason: String,
        pg_wal_bytes: u64,
        budget: String,
        budget_bytes: u64,
        host: String,
    ) -> GapRecord {
        GapRecord {
            format: FORMAT.into(),
            version: VERSION,
            segment: segment.to_string(),
            system_identifier: system_id.map(|s| s.to_string()).unwrap_or_default(),
            time,
            time_unix,
            reason,
            pg_wal_bytes,
            budget,
            budget_bytes,
            host,
        }
    }

    /// Parses a record, saying why it is not one.
    pub fn parse(raw: &[u8]) -> Result<GapRecord, String> {
        if raw.len() as u64 > MAX_LEN {
            return Err(format!("it is larger than {MAX_LEN} bytes"));
        }
        let r: GapRecord =
            serde_json::from_slice(raw).map_err(|e| format!("it is not valid JSON ({e})"))?;
        if r.format != FORMAT {
            return Err(format!("its format is {:?}, not {FORMAT:?}", r.format));
        }
        if r.version != VERSION {
            return Err(format!(
                "it has version {}, this walg reads {VERSION}",
                r.version
            ));
        }
        match WalName::parse(&r.segment) {
            Ok(WalName::Segment(_)) => Ok(r),
            _ => Err(format!("{:?} is not a segment name", r.segment)),
        }
    }

    pub fn render(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// One sentence for logs and reports.
    pub fn describe(&self) -> String {
        format!(
            "{} was given up on purpose by wal-push at {}: every storage failed ({}) while pg_wal held {}, over WALG_PG_WAL_BUDGET {} ({})",
            self.segment,
            self.time,
            self.reason,
            human(self.pg_wal_bytes),
            self.budget,
            human(self.budget_bytes)
        )
    }
}

/// The archive key of a segment's record.
pub fn record_key(segment: &str) -> String {
    format!("{GAPS_PREFIX}{segment}.json")
}

/// The segment a record key names.
pub fn segment_of_key(key: &str) -> Option<Segment> {
    let name = key.rsplit('/').next()?.strip_suffix(".json")?;
    WalName::parse(name).ok()?.segment()
}

/// The `pg_wal/walg_data/walg_gaps/` journal of one cluster.
#[derive(Debug, Clone)]
pub struct GapJournal {
    dir: PathBuf,
}

/// One entry of the journal.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalEntry {
    pub segment: String,
    /// `Err`: the file exists but is not a record (the message says why).
    pub record: Result<GapRecord, String>,
    /// Accepted by a storage already.
    pub uploaded: bool,
}

impl GapJournal {
    /// The journal of the `pg_wal` directory holding `wal_file`.
    pub fn for_file(wal_file: &Path) -> GapJournal {
        let pg_wal = wal_file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        GapJournal::in_pg_wal(pg_wal)
    }

    pub fn in_pg_wal(pg_wal: &Path) -> GapJournal {
        GapJournal {
            dir: pg_wal.join(JOURNAL_DIR),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn uploaded_dir(&self) -> PathBuf {
        self.dir.join("uploaded")
    }

    /// Writes a pending record durably: a temporary file, fsync, rename,
    /// fsync of the directory. An error means it may not be on disk.
    pub fn write(&self, r: &GapRecord) -> io::Result<PathBuf> {
        fs::create_dir_all(&self.dir)?;
        let path = self.dir.join(format!("{}.json", r.segment));
        let tmp = self
            .dir
            .join(format!(".{}.{}.tmp", r.segment, std::process::id()));
        let result = (|| {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            f.write_all(&r.render())?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            fs::File::open(&self.dir)?.sync_all()?;
            // The parent too: the directory may have just been created.
            if let Some(p) = self.dir.parent() {
                fs::File::open(p)?.sync_all()?;
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map(|()| path)
    }

    /// Moves a pending record to `uploaded/` once a storage accepted it.
    pub fn mark_uploaded(&self, segment: &str) -> io::Result<()> {
        let up = self.uploaded_dir();
        fs::create_dir_all(&up)?;
        let name = format!("{segment}.json");
        fs::rename(self.dir.join(&name), up.join(&name))
    }

    /// Sets a damaged pending file aside (`<name>.corrupt`) so it is
    /// reported once by the push that found it, then by `wal-status`.
    pub fn set_aside(&self, segment: &str) -> io::Result<()> {
        let name = format!("{segment}.json");
        fs::rename(
            self.dir.join(&name),
            self.dir.join(format!("{name}.corrupt")),
        )
    }

    /// Names of pending records, cheaply: one directory read, nothing
    /// parsed; empty when there is no journal.
    pub fn pending_names(&self) -> Vec<String> {
        let mut out: Vec<String> = fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                let seg = n.strip_suffix(".json")?;
                matches!(WalName::parse(seg), Ok(WalName::Segment(_))).then(|| seg.to_string())
            })
            .collect();
        out.sort();
        out
    }

    /// Reads one pending record.
    pub fn read_pending(&self, segment: &str) -> Result<GapRecord, String> {
        read_record(&self.dir.join(format!("{segment}.json")))
    }

    /// Every entry, pending and uploaded, plus damaged files (set aside or
    /// not) as `Err`, sorted by segment.
    pub fn entries(&self) -> Vec<JournalEntry> {
        let mut out = Vec::new();
        for (dir, uploaded) in [(self.dir.clone(), false), (self.uploaded_dir(), true)] {
            for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                let (seg, corrupt) =
                    match (n.strip_suffix(".json"), n.strip_suffix(".json.corrupt")) {
                        (Some(s), _) => (s.to_string(), false),
                        (_, Some(s)) => (s.to_string(), true),
                        _ => continue,
                    };
                if !matches!(WalName::parse(&seg), Ok(WalName::Segment(_))) {
                    continue;
                }
                let record = if corrupt {
                    Err(read_record(&e.path())
                        .err()
                        .unwrap_or_else(|| "set aside as damaged".into()))
                } else {
                    read_record(&e.path()).and_then(|r| {
                        if r.segment == seg {
                            Ok(r)
                        } else {
                            Err(format!("it names {}, not {seg}", r.segment))
                        }
                    })
                };
                out.push(JournalEntry {
                    segment: seg,
                    record,
                    uploaded,
                });
            }
        }
        out.sort_by(|a, b| a.segment.cmp(&b.segment));
        out
    }
}

fn read_record(path: &Path) -> Result<GapRecord, String> {
    let len = fs::metadata(path).map_err(|e| e.to_string())?.len();
    if len > MAX_LEN {
        return Err(format!("it is larger than {MAX_LEN} bytes"));
    }
    let raw = fs::read(path).map_err(|e| e.to_string())?;
    GapRecord::parse(&raw)
}

/// What is known of one declared segment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Declared {
    pub segment: String,
    /// `None`: only the name is known (a record listed but not read, or
    /// damaged).
    pub record: Option<GapRecord>,
}

/// Every declared gap known, by segment name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeclaredGaps {
    by_name: BTreeMap<String, Option<GapRecord>>,
}

impl DeclaredGaps {
    /// Adds a segment, with its record when read; a record never replaces
    /// another, a name never replaces a record.
    pub fn add(&mut self, segment: &str, record: Option<GapRecord>) {
        let e = self.by_name.entry(segment.to_string()).or_insert(None);
        if e.is_none() {
            *e = record;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn contains(&self, segment: &str) -> bool {
        self.by_name.contains_key(segment)
    }

    pub fn record(&self, segment: &str) -> Option<&GapRecord> {
        self.by_name.get(segment).and_then(|r| r.as_ref())
    }

    /// Names in WAL order (timeline, then position).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// Names of declared segments without a record yet.
    pub fn unread(&self) -> Vec<String> {
        self.by_name
            .iter()
            .filter(|(_, r)| r.is_none())
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Runs of consecutive declared segments on one timeline.
    pub fn runs(&self, segment_size: u64) -> Vec<GapRun> {
        let mut out: Vec<GapRun> = Vec::new();
        let mut last: Option<(u32, u64)> = None;
        for (name, rec) in &self.by_name {
            let Some(seg) = WalName::parse(name).ok().and_then(|n| n.segment()) else {
                continue;
            };
            let num = seg.number(segment_size);
            match (last, out.last_mut()) {
                (Some((t, n)), Some(run)) if t == seg.timeline && num == n + 1 => {
                    run.to = name.clone();
                    run.count += 1;
                    if run.first_record.is_none() {
                        run.first_record = rec.clone();
                    }
                }
                _ => out.push(GapRun {
                    from: name.clone(),
                    to: name.clone(),
                    count: 1,
                    first_record: rec.clone(),
                }),
            }
            last = Some((seg.timeline, num));
        }
        out
    }
}

/// Consecutive declared segments.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GapRun {
    pub from: String,
    pub to: String,
    pub count: u64,
    /// The first record of the run that could be read: when and why.
    pub first_record: Option<GapRecord>,
}

impl GapRun {
    /// `A .. B (n segment(s)), given up from <time>: <reason>`.
    pub fn describe(&self) -> String {
        let range = if self.count == 1 {
            self.from.clone()
        } else {
            format!("{} .. {}", self.from, self.to)
        };
        match &self.first_record {
            Some(r) => format!(
                "{range} ({} segment(s)) given up on purpose by wal-push from {}: every storage failed while pg_wal held {}, over WALG_PG_WAL_BUDGET {}",
                self.count,
                r.time,
                human(r.pg_wal_bytes),
                r.budget
            ),
            None => format!(
                "{range} ({} segment(s)) given up on purpose by wal-push (no readable record)",
                self.count
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1 << 20;

    fn seg(n: &str) -> WalName {
        WalName::parse(n).expect("name")
    }

    fn check(
        name: &str,
        budget: Option<Budget>,
        storage: bool,
        usage: Result<PgWalUsage, String>,
        give_up: bool,
    ) {
        let d = decide(&seg(name), budget.as_ref(), storage, usage.clone());
        assert_eq!(
            matches!(d, Decision::GiveUp { .. }),
            give_up,
            "{name} {budget:?} {storage} {usage:?}: {d:?}"
        );
    }

    #[test]
    fn decision() {
        let s = "000000010000000000000010";
        let over = Ok(PgWalUsage {
            wal_bytes: 60 * MB,
            fs_total: Some(100 * MB),
        });
        let under = Ok(PgWalUsage {
            wal_bytes: 40 * MB,
            fs_total: Some(100 * MB),
        });
        check(s, Some(Budget::Bytes(50 * MB)), true, over.clone(), true);
        check(s, Some(Budget::Bytes(50 * MB)), true, under.clone(), false);
        check(s, Some(Budget::Percent(50.0)), true, over.clone(), true);
        check(s, Some(Budget::Percent(50.0)), true, under, false);
        // Without a budget, a refusal, or an unknown size: fail as always.
        check(s, None, true, over.clone(), false);
        check(s, Some(Budget::Bytes(MB)), false, over.clone(), false);
        check(
            s,
            Some(Budget::Bytes(MB)),
            true,
            Err("denied".into()),
            false,
        );
        check(
            s,
            Some(Budget::Percent(10.0)),
            true,
            Ok(PgWalUsage {
                wal_bytes: 60 * MB,
                fs_total: None,
            }),
            false,
        );
        // History, backup and partial files are never given up.
        for n in [
            "00000002.history",
            "000000010000000000000002.00000028.backup",
            "000000010000000000000002.partial",
        ] {
            check(n, Some(Budget::Bytes(1)), true, over.clone(), false);
        }
    }

    fn record(s: &str) -> GapRecord {
        GapRecord::new(
            WalName::parse(s).expect("n").segment().expect("seg"),
            Some(7_000_000_000_000_000_001),
            "2026-12-06T10:00:00Z".into(),
            1_796_551_200,
            "every storage failed".into(),
            60 * MB,
            "50mb".into(),
            50 * MB,
            "db1".into(),
        )
    }

    #[test]
    fn records_round_trip_and_bad_ones_say_why() {
        let r = record("000000010000000000000010");
        assert_eq!(GapRecord::parse(&r.render()), Ok(r.clone()));
        assert_eq!(r.system_identifier, "7000000000000000001");
        assert!(r
            .describe()
            .contains("000000010000000000000010 was given up on purpose"));
        for (raw, why) in [
            (&b"{"[..], "not valid JSON"),
            (br#"{"format":"x","version":1}"#, "not valid JSON"),
        ] {
            let e = GapRecord::parse(raw).expect_err("bad");
            assert!(e.contains(why), "{e}");
        }
        let mut other = r.clone();
        other.format = "other".into();
        assert!(GapRecord::parse(&other.render())
            .expect_err("format")
            .contains("format"));
        other = r.clone();
        other.segment = "00000002.history".into();
        assert!(GapRecord::parse(&other.render()).is_err());
        assert_eq!(
            record_key("000000010000000000000010"),
            "walg_gaps/000000010000000000000010.json"
        );
        assert_eq!(
            segment_of_key("pg/walg_gaps/000000010000000000000010.json").map(|s| s.to_string()),
            Some("000000010000000000000010".into())
        );
        assert_eq!(segment_of_key("walg_gaps/x.json"), None);
    }

    #[test]
    fn journal_pending_uploaded_and_damaged() {
        let tmp = tempfile::tempdir().expect("tmp");
        let pg_wal = tmp.path().join("pg_wal");
        fs::create_dir_all(&pg_wal).expect("dir");
        let j = GapJournal::for_file(&pg_wal.join("000000010000000000000010"));
        assert!(j.pending_names().is_empty());
        assert!(j.entries().is_empty());
        j.write(&record("000000010000000000000010")).expect("write");
        j.write(&record("000000010000000000000011")).expect("write");
        assert_eq!(
            j.pending_names(),
            vec!["000000010000000000000010", "000000010000000000000011"]
        );
        j.mark_uploaded("000000010000000000000010").expect("mark");
        assert_eq!(j.pending_names(), vec!["000000010000000000000011"]);
        // A damaged file: an entry with the reason, never a panic.
        fs::write(j.dir().join("000000010000000000000012.json"), b"{\"half").expect("w");
        let e = j.entries();
        assert_eq!(e.len(), 3);
        assert!(e[0].uploaded && e[0].record.is_ok());
        assert!(!e[1].uploaded && e[1].record.is_ok());
        assert!(e[2]
            .record
            .as_ref()
            .expect_err("damaged")
            .contains("not valid JSON"));
        assert!(j.read_pending("000000010000000000000012").is_err());
        j.set_aside("000000010000000000000012").expect("aside");
        assert_eq!(j.pending_names(), vec!["000000010000000000000011"]);
        let e = j.entries();
        assert_eq!(e.len(), 3);
        assert!(e[2].record.is_err());
    }

    #[test]
    fn journal_write_fails_where_it_cannot_write() {
        let tmp = tempfile::tempdir().expect("tmp");
        // pg_wal is a file: the journal cannot be created under it.
        let pg_wal = tmp.path().join("pg_wal");
        fs::write(&pg_wal, b"").expect("file");
        let j = GapJournal::in_pg_wal(&pg_wal);
        assert!(j.write(&record("000000010000000000000010")).is_err());
    }

    #[test]
    fn runs_group_consecutive_segments() {
        let mut d = DeclaredGaps::default();
        for s in [
            "000000010000000000000010",
            "000000010000000000000011",
            "000000010000000000000013",
            "000000020000000000000014",
        ] {
            d.add(s, None);
        }
        d.add(
            "000000010000000000000011",
            Some(record("000000010000000000000011")),
        );
        let runs = d.runs(16 * MB);
        assert_eq!(runs.len(), 3);
        assert_eq!(runs[0].count, 2);
        assert_eq!(runs[0].to, "000000010000000000000011");
        assert!(runs[0].first_record.is_some());
        assert!(runs[0].describe().contains("given up on purpose"));
        assert_eq!(runs[1].count, 1);
        assert!(runs[1].describe().contains("no readable record"));
        assert_eq!(d.unread().len(), 3);
        assert!(d.contains("000000020000000000000014"));
    }
}
