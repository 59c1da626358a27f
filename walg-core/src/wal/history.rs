//! Timeline history files (`00000002.history`), backup history files
//! (`<segment>.<offset>.backup`) and the walk over a timeline's ancestry.
//!
//! A timeline's history file lists its ancestors, oldest first, each with the
//! LSN at which the next timeline branched off. [`Ancestry`] turns that into
//! "which timeline's copy of segment N does recovery read": the newest
//! timeline of the ancestry that had begun by segment N. The segment that
//! holds a switch point exists on both timelines; the child's copy is the
//! one recovery reads, so the parent's (often only a `.partial`) is not
//! expected. Several switches inside one segment simply leave the middle
//! timelines with no segment of their own.
//!
//! What this module does not do: read storages or decide what is missing
//! (see [`crate::archive`]). It parses text and does arithmetic.

use std::fmt;

use serde::Serialize;

use crate::wal::{
    is_valid_segment_size, Lsn, Segment, WalName, MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE,
};

/// One record of a `.history` file: `parent` was left at `switch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryRecord {
    /// The timeline that ended (the parent of the next one).
    pub timeline: u32,
    /// First LSN not on `timeline`.
    #[serde(serialize_with = "lsn_text")]
    pub switch: Lsn,
    /// Why recovery ended there (`no recovery target specified`, ...).
    pub reason: String,
}

fn lsn_text<S: serde::Serializer>(lsn: &Lsn, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(lsn)
}

/// Why a history file could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {what}")]
pub struct HistoryError {
    pub line: usize,
    pub what: String,
}

/// Parses a timeline history file the way PostgreSQL's
/// `readTimeLineHistory` does: blank lines and `#` comments are skipped,
/// each record is `<parent tli>\t<switch lsn>\t<reason>`. Records must name
/// increasing timelines at non-decreasing switch points.
pub fn parse_history(text: &str) -> Result<Vec<HistoryRecord>, HistoryError> {
    let mut out: Vec<HistoryRecord> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let err = |what: String| HistoryError {
            line: line_no,
            what,
        };
        let mut fields = trimmed.splitn(3, ['\t', ' ']);
        let tli = fields.next().unwrap_or_default();
        let timeline: u32 = tli
            .parse()
            .map_err(|_| err(format!("{tli:?} is not a timeline number")))?;
        let lsn_field = fields
            .next()
            .ok_or_else(|| err("no switch point after the timeline".into()))?
            .trim();
        let switch: Lsn = lsn_field
            .parse()
            .map_err(|_| err(format!("{lsn_field:?} is not an LSN")))?;
        let reason = fields.next().unwrap_or_default().trim().to_string();
        if let Some(prev) = out.last() {
            if timeline <= prev.timeline {
                return Err(err(format!(
                    "timeline {timeline} does not follow timeline {}",
                    prev.timeline
                )));
            }
            if switch < prev.switch {
                return Err(err(format!(
                    "switch point {switch} is before the previous one, {}",
                    prev.switch
                )));
            }
        }
        out.push(HistoryRecord {
            timeline,
            switch,
            reason,
        });
    }
    Ok(out)
}

/// Where one timeline of an ancestry is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Span {
    pub timeline: u32,
    /// First segment number read from this timeline.
    pub first: u64,
    /// Last segment number read from this timeline (`None`: open-ended, the
    /// newest timeline).
    pub last: Option<u64>,
}

/// The timelines recovery to `timeline` reads, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ancestry {
    pub timeline: u32,
    pub records: Vec<HistoryRecord>,
    /// Timeline begin positions (segment numbers), oldest first: the root
    /// begins at 0, each next timeline at the segment of its switch point.
    begins: Vec<(u32, u64)>,
}

impl Ancestry {
    /// The ancestry of `timeline` from its history records (none for a
    /// timeline without a history file, such as 1).
    pub fn new(timeline: u32, records: Vec<HistoryRecord>, segment_size: u64) -> Ancestry {
        let mut begins = Vec::with_capacity(records.len() + 1);
        let mut start = 0u64;
        for r in &records {
            begins.push((r.timeline, start));
            start = r.switch.0 / segment_size;
        }
        begins.push((timeline, start));
        Ancestry {
            timeline,
            records,
            begins,
        }
    }

    /// The timeline whose copy of segment `number` recovery reads: the
    /// newest one that had begun by then.
    pub fn timeline_of(&self, number: u64) -> u32 {
        self.begins
            .iter()
            .rev()
            .find(|(_, first)| *first <= number)
            .map_or(self.begins[0].0, |(t, _)| *t)
    }

    /// Whether `timeline` is this timeline or one of its ancestors.
    pub fn contains(&self, timeline: u32) -> bool {
        self.begins.iter().any(|(t, _)| *t == timeline)
    }

    /// The segment-number range read from each timeline; timelines that own
    /// no segment (two switches inside one segment) are left out.
    pub fn spans(&self) -> Vec<Span> {
        let mut out = Vec::new();
        for (i, (tli, first)) in self.begins.iter().enumerate() {
            let last = match self.begins.get(i + 1) {
                // The next timeline begins in the same segment: this one is
                // never read.
                Some((_, next)) if *next <= *first => continue,
                Some((_, next)) => Some(next - 1),
                None => None,
            };
            out.push(Span {
                timeline: *tli,
                first: *first,
                last,
            });
        }
        out
    }

    /// The segment recovery reads for segment number `number`.
    pub fn segment(&self, number: u64, segment_size: u64) -> Segment {
        Segment::from_number(self.timeline_of(number), number, segment_size)
    }

    /// Where `timeline` branched from its parent, if it did.
    pub fn switch_of(&self, timeline: u32) -> Option<(u32, Lsn)> {
        let i = self.begins.iter().position(|(t, _)| *t == timeline)?;
        let parent = self.records.get(i.checked_sub(1)?)?;
        Some((parent.timeline, parent.switch))
    }
}

/// Checks that an ancestor's history agrees with a descendant's: the
/// ancestor's records must be the first records of the descendant's.
pub fn consistent(ancestor: &[HistoryRecord], descendant: &[HistoryRecord]) -> bool {
    ancestor.len() <= descendant.len()
        && ancestor
            .iter()
            .zip(descendant)
            .all(|(a, d)| a.timeline == d.timeline && a.switch == d.switch)
}

/// The content of a backup history file (`.backup`), written by
/// `pg_backup_stop` on a primary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupHistory {
    #[serde(serialize_with = "lsn_text")]
    pub start_lsn: Lsn,
    pub start_wal: String,
    #[serde(serialize_with = "lsn_text")]
    pub stop_lsn: Lsn,
    pub stop_wal: String,
    pub start_time: Option<String>,
    pub stop_time: Option<String>,
    pub label: Option<String>,
    pub start_timeline: Option<u32>,
    pub stop_timeline: Option<u32>,
    pub backup_from: Option<String>,
}

fn location(value: &str) -> Option<(Lsn, String)> {
    // `0/2000028 (file 000000010000000000000002)`
    let (lsn, rest) = value.split_once(' ')?;
    let file = rest.trim().strip_prefix("(file ")?.strip_suffix(')')?;
    WalName::parse(file).ok()?.segment()?;
    Some((lsn.parse().ok()?, file.to_string()))
}

/// Parses a `.backup` file. `LABEL` runs to the end of its line.
pub fn parse_backup_history(text: &str) -> Result<BackupHistory, HistoryError> {
    let mut start = None;
    let mut stop = None;
    let mut b = BackupHistory {
        start_lsn: Lsn(0),
        start_wal: String::new(),
        stop_lsn: Lsn(0),
        stop_wal: String::new(),
        start_time: None,
        stop_time: None,
        label: None,
        start_timeline: None,
        stop_timeline: None,
        backup_from: None,
    };
    for (i, line) in text.lines().enumerate() {
        let Some((key, value)) = line.split_once(": ") else {
            continue;
        };
        let bad = |what: &str| HistoryError {
            line: i + 1,
            what: format!("{key}: {value:?} is not {what}"),
        };
        match key {
            "START WAL LOCATION" => {
                start = Some(location(value).ok_or_else(|| bad("an LSN and a file"))?)
            }
            "STOP WAL LOCATION" => {
                stop = Some(location(value).ok_or_else(|| bad("an LSN and a file"))?)
            }
            "START TIME" => b.start_time = Some(value.to_string()),
            "STOP TIME" => b.stop_time = Some(value.to_string()),
            "LABEL" => b.label = Some(value.to_string()),
            "BACKUP FROM" => b.backup_from = Some(value.to_string()),
            "START TIMELINE" => {
                b.start_timeline = Some(value.trim().parse().map_err(|_| bad("a timeline"))?)
            }
            "STOP TIMELINE" => {
                b.stop_timeline = Some(value.trim().parse().map_err(|_| bad("a timeline"))?)
            }
            _ => {}
        }
    }
    let missing = |what: &str| HistoryError {
        line: 0,
        what: format!("no {what} line"),
    };
    (b.start_lsn, b.start_wal) = start.ok_or_else(|| missing("START WAL LOCATION"))?;
    (b.stop_lsn, b.stop_wal) = stop.ok_or_else(|| missing("STOP WAL LOCATION"))?;
    Ok(b)
}

impl BackupHistory {
    /// The segment size that makes `START WAL LOCATION`'s LSN fall in its
    /// named file, when exactly one does.
    pub fn segment_size(&self) -> Option<u64> {
        let seg = WalName::parse(&self.start_wal).ok()?.segment()?;
        let mut found = None;
        let mut size = MIN_SEGMENT_SIZE;
        while size <= MAX_SEGMENT_SIZE {
            debug_assert!(is_valid_segment_size(size));
            if seg.fits(size) && seg.number(size) == self.start_lsn.0 / size {
                if found.is_some() {
                    return None;
                }
                found = Some(size);
            }
            size <<= 1;
        }
        found
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.last {
            Some(last) => write!(
                f,
                "timeline {} segments {}..={}",
                self.timeline, self.first, last
            ),
            None => write!(f, "timeline {} segments {}..", self.timeline, self.first),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn check_history(text: &str, expected: Result<Vec<(u32, &str)>, usize>) {
        let got = parse_history(text)
            .map(|r| {
                r.into_iter()
                    .map(|r| (r.timeline, r.switch.to_string()))
                    .collect::<Vec<_>>()
            })
            .map_err(|e| e.line);
        let expected = expected.map(|v| {
            v.into_iter()
                .map(|(t, l)| (t, l.to_string()))
                .collect::<Vec<_>>()
        });
        assert_eq!(got, expected, "{text:?}");
    }

    #[test]
    fn parses_history_files() {
        check_history(
            "1\t0/3025B20\tno recovery target specified\n",
            Ok(vec![(1, "0/3025B20")]),
        );
        // Deeper files have blank lines between records.
        check_history(
            "1\t0/3025B20\tno recovery target specified\n\n2\t0/5000060\tno recovery target specified\n",
            Ok(vec![(1, "0/3025B20"), (2, "0/5000060")]),
        );
        // PG19's zero-padded low half, comments, reasons with spaces.
        check_history(
            "# comment\n1\t0/02000028\tbefore 2026-11-23 13:50:24+00\n",
            Ok(vec![(1, "0/2000028")]),
        );
        // Timeline 16 (WAL-G #840 parsed it with the wrong bit size).
        check_history("16\t1/0\tx\n", Ok(vec![(16, "1/0")]));
        check_history("", Ok(vec![]));
        check_history("x\t0/1\tr\n", Err(1));
        check_history("1\tzz\tr\n", Err(1));
        check_history("2\t0/5\tr\n\n1\t0/6\tr\n", Err(3));
        check_history("1\t0/6\tr\n2\t0/5\tr\n", Err(2));
    }

    fn rec(timeline: u32, switch: &str) -> HistoryRecord {
        HistoryRecord {
            timeline,
            switch: switch.parse().expect("lsn"),
            reason: String::new(),
        }
    }

    fn check_walk(a: &Ancestry, expected: &[(u64, u32)]) {
        for (number, tli) in expected {
            assert_eq!(a.timeline_of(*number), *tli, "segment {number}");
        }
    }

    #[test]
    fn walk_steps_to_the_parent_below_the_switch_segment() {
        // 16 MiB segments, switch inside segment 3.
        let a = Ancestry::new(2, vec![rec(1, "0/3025B20")], 16 * MIB);
        check_walk(&a, &[(1, 1), (2, 1), (3, 2), (4, 2), (1000, 2)]);
        assert_eq!(
            a.spans(),
            vec![
                Span {
                    timeline: 1,
                    first: 0,
                    last: Some(2)
                },
                Span {
                    timeline: 2,
                    first: 3,
                    last: None
                },
            ]
        );
        // A switch exactly on a segment boundary.
        let a = Ancestry::new(2, vec![rec(1, "0/3000000")], 16 * MIB);
        check_walk(&a, &[(2, 1), (3, 2)]);
        assert_eq!(a.switch_of(2), Some((1, "0/3000000".parse().expect("lsn"))));
        assert_eq!(a.switch_of(1), None);
    }

    #[test]
    fn two_switches_within_one_segment() {
        // Timeline 2 lived only inside segment 3: it owns no segment.
        let a = Ancestry::new(3, vec![rec(1, "0/3000100"), rec(2, "0/3000200")], 16 * MIB);
        check_walk(&a, &[(2, 1), (3, 3), (4, 3)]);
        let spans: Vec<u32> = a.spans().iter().map(|s| s.timeline).collect();
        assert_eq!(spans, vec![1, 3]);
        assert!(a.contains(2));
    }

    #[test]
    fn other_segment_sizes() {
        // 1 MiB segments: 0/3025B20 lies in segment 0x30.
        let a = Ancestry::new(2, vec![rec(1, "0/3025B20")], MIB);
        check_walk(&a, &[(0x2F, 1), (0x30, 2)]);
        assert_eq!(a.segment(0x30, MIB).to_string(), "000000020000000000000030");
        // 1 GiB segments: four per 4 GiB, 1/40000000 is segment 5 (log 1, seg 1).
        let a = Ancestry::new(2, vec![rec(1, "1/40000000")], 1 << 30);
        check_walk(&a, &[(4, 1), (5, 2)]);
        assert_eq!(
            a.segment(5, 1 << 30).to_string(),
            "000000020000000100000001"
        );
    }

    #[test]
    fn consistency_of_histories() {
        let parent = vec![rec(1, "0/3000000")];
        let child = vec![rec(1, "0/3000000"), rec(2, "0/5000000")];
        assert!(consistent(&parent, &child));
        assert!(consistent(&[], &child));
        assert!(!consistent(&[rec(1, "0/4000000")], &child));
        assert!(!consistent(&child, &parent));
    }

    const BACKUP: &str = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)
STOP WAL LOCATION: 0/2000100 (file 000000010000000000000002)
CHECKPOINT LOCATION: 0/2000060
BACKUP METHOD: streamed
BACKUP FROM: primary
START TIME: 2026-11-23 13:50:24 UTC
LABEL: my: label
START TIMELINE: 1
STOP TIME: 2026-11-23 13:50:25 UTC
STOP TIMELINE: 1
";

    #[test]
    fn parses_backup_files() {
        let b = parse_backup_history(BACKUP).expect("parse");
        assert_eq!(b.start_lsn.to_string(), "0/2000028");
        assert_eq!(b.start_wal, "000000010000000000000002");
        assert_eq!(b.stop_wal, "000000010000000000000002");
        assert_eq!(b.label.as_deref(), Some("my: label"));
        assert_eq!(b.start_timeline, Some(1));
        assert_eq!(b.backup_from.as_deref(), Some("primary"));
        assert_eq!(b.segment_size(), Some(16 * MIB));
        // PG19 zero-padding, 1 MiB segments.
        let b = parse_backup_history(
            "START WAL LOCATION: 0/02000028 (file 000000010000000000000020)\nSTOP WAL LOCATION: 0/02100000 (file 000000010000000000000021)\n",
        )
        .expect("parse");
        assert_eq!(b.segment_size(), Some(MIB));
        assert!(parse_backup_history("LABEL: x\n").is_err());
        assert!(parse_backup_history("START WAL LOCATION: 0/2 (file nope)\n").is_err());
    }
}
