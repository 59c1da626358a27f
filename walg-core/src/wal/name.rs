//! WAL file names, timelines, segment arithmetic and LSNs.
//!
//! PostgreSQL names a segment `TTTTTTTTXXXXXXXXYYYYYYYY`: the timeline, then
//! the segment number split into "log" (segment number / segments per 4 GiB)
//! and "seg" (the remainder). How many segments fit in 4 GiB depends on the
//! segment size chosen at initdb (1 MiB to 1 GiB), so nothing here assumes
//! 16 MiB. Besides segments there are `<tli>.history`, `<segment>.partial`
//! and `<segment>.<offset>.backup` files.
//!
//! This module only parses and prints names; it never touches the disk.

use std::fmt;
use std::str::FromStr;

/// Smallest segment size PostgreSQL accepts (`--wal-segsize=1`).
pub const MIN_SEGMENT_SIZE: u64 = 1 << 20;
/// Largest segment size PostgreSQL accepts (`--wal-segsize=1024`).
pub const MAX_SEGMENT_SIZE: u64 = 1 << 30;
/// PostgreSQL's default segment size.
pub const DEFAULT_SEGMENT_SIZE: u64 = 16 << 20;

/// Whether `size` is a segment size PostgreSQL could have been initialised with.
pub fn is_valid_segment_size(size: u64) -> bool {
    size.is_power_of_two() && (MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&size)
}

/// Segments per 4 GiB "xlogid" for a segment size (256 for 16 MiB).
pub fn segments_per_xlog_id(segment_size: u64) -> u64 {
    0x1_0000_0000 / segment_size
}

/// A WAL segment: timeline and absolute segment number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Segment {
    pub timeline: u32,
    /// The "log" part of the name (high 8 hex digits after the timeline).
    pub log: u32,
    /// The "seg" part of the name (low 8 hex digits).
    pub seg: u32,
}

impl Segment {
    /// Absolute segment number for a given segment size.
    pub fn number(&self, segment_size: u64) -> u64 {
        u64::from(self.log) * segments_per_xlog_id(segment_size) + u64::from(self.seg)
    }

    /// The segment with absolute number `number` on `timeline`.
    pub fn from_number(timeline: u32, number: u64, segment_size: u64) -> Segment {
        let per = segments_per_xlog_id(segment_size);
        Segment {
            timeline,
            log: (number / per) as u32,
            seg: (number % per) as u32,
        }
    }

    /// The segment after this one on the same timeline.
    pub fn next(&self, segment_size: u64) -> Segment {
        Segment::from_number(self.timeline, self.number(segment_size) + 1, segment_size)
    }

    /// The LSN at which this segment starts.
    pub fn start_lsn(&self, segment_size: u64) -> Lsn {
        Lsn(self.number(segment_size) * segment_size)
    }

    /// Whether the name could exist with this segment size (seg in range).
    pub fn fits(&self, segment_size: u64) -> bool {
        u64::from(self.seg) < segments_per_xlog_id(segment_size)
    }
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08X}{:08X}{:08X}", self.timeline, self.log, self.seg)
    }
}

/// Any file name PostgreSQL asks an archiver to store or restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WalName {
    /// `000000010000000000000003`
    Segment(Segment),
    /// `00000002.history`
    History { timeline: u32 },
    /// `000000010000000000000003.partial`
    Partial(Segment),
    /// `000000010000000000000003.00000028.backup`
    Backup { segment: Segment, offset: u32 },
}

/// Why a string is not a WAL file name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name:?} is not a WAL file name (expected 24 hex digits such as 000000010000000000000001, <timeline>.history, <segment>.partial or <segment>.<offset>.backup)")]
pub struct NotWalName {
    pub name: String,
}

fn hex8(s: &str) -> Option<u32> {
    if s.len() == 8 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        u32::from_str_radix(s, 16).ok()
    } else {
        None
    }
}

fn parse_segment(s: &str) -> Option<Segment> {
    if s.len() != 24 || !s.is_ascii() {
        return None;
    }
    let segment = Segment {
        timeline: hex8(&s[0..8])?,
        log: hex8(&s[8..16])?,
        seg: hex8(&s[16..24])?,
    };
    // Timeline 0 never exists in PostgreSQL.
    (segment.timeline != 0).then_some(segment)
}

impl WalName {
    /// Parses a bare file name (no directory part).
    pub fn parse(name: &str) -> Result<WalName, NotWalName> {
        let err = || NotWalName {
            name: name.to_string(),
        };
        if let Some(tli) = name.strip_suffix(".history") {
            let timeline = hex8(tli).filter(|t| *t != 0).ok_or_else(err)?;
            return Ok(WalName::History { timeline });
        }
        if let Some(seg) = name.strip_suffix(".partial") {
            return parse_segment(seg).map(WalName::Partial).ok_or_else(err);
        }
        if let Some(rest) = name.strip_suffix(".backup") {
            let (seg, off) = rest.split_once('.').ok_or_else(err)?;
            let segment = parse_segment(seg).ok_or_else(err)?;
            let offset = hex8(off).ok_or_else(err)?;
            return Ok(WalName::Backup { segment, offset });
        }
        parse_segment(name).map(WalName::Segment).ok_or_else(err)
    }

    /// The segment, for a plain segment name.
    pub fn segment(&self) -> Option<Segment> {
        match self {
            WalName::Segment(s) => Some(*s),
            _ => None,
        }
    }

    /// `.history` files must never be overwritten with different content.
    pub fn is_history(&self) -> bool {
        matches!(self, WalName::History { .. })
    }

    pub fn timeline(&self) -> u32 {
        match self {
            WalName::Segment(s) | WalName::Partial(s) | WalName::Backup { segment: s, .. } => {
                s.timeline
            }
            WalName::History { timeline } => *timeline,
        }
    }
}

impl fmt::Display for WalName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalName::Segment(s) => write!(f, "{s}"),
            WalName::History { timeline } => write!(f, "{timeline:08X}.history"),
            WalName::Partial(s) => write!(f, "{s}.partial"),
            WalName::Backup { segment, offset } => write!(f, "{segment}.{offset:08X}.backup"),
        }
    }
}

impl FromStr for WalName {
    type Err = NotWalName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        WalName::parse(s)
    }
}

/// A WAL location, printed the way PostgreSQL prints it (`16/B374D848`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The segment containing this LSN.
    pub fn segment(&self, timeline: u32, segment_size: u64) -> Segment {
        Segment::from_number(timeline, self.0 / segment_size, segment_size)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// Serialized as PostgreSQL prints it (`16/B374D848`).
impl serde::Serialize for Lsn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Why a string is not an LSN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an LSN (expected two hex numbers such as 16/B374D848)")]
pub struct NotLsn(pub String);

impl FromStr for Lsn {
    type Err = NotLsn;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || NotLsn(s.to_string());
        let (hi, lo) = s.split_once('/').ok_or_else(err)?;
        let ok =
            |p: &str| !p.is_empty() && p.len() <= 8 && p.bytes().all(|b| b.is_ascii_hexdigit());
        if !ok(hi) || !ok(lo) {
            return Err(err());
        }
        let hi = u64::from_str_radix(hi, 16).map_err(|_| err())?;
        let lo = u64::from_str_radix(lo, 16).map_err(|_| err())?;
        Ok(Lsn(hi << 32 | lo))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Option<WalName>) {
        let got = WalName::parse(input).ok();
        assert_eq!(got, expected, "parse {input:?}");
        if let Some(name) = got {
            assert_eq!(
                name.to_string(),
                input
                    .to_ascii_uppercase()
                    .replace(".HISTORY", ".history")
                    .replace(".PARTIAL", ".partial")
                    .replace(".BACKUP", ".backup")
            );
        }
    }

    fn seg(timeline: u32, log: u32, seg: u32) -> Segment {
        Segment { timeline, log, seg }
    }

    #[test]
    fn parses_names() {
        check(
            "000000010000000000000003",
            Some(WalName::Segment(seg(1, 0, 3))),
        );
        check(
            "0000000A000000FF000000FE",
            Some(WalName::Segment(seg(10, 255, 254))),
        );
        check("00000002.history", Some(WalName::History { timeline: 2 }));
        check(
            "000000010000000000000003.partial",
            Some(WalName::Partial(seg(1, 0, 3))),
        );
        check(
            "000000010000000000000003.00000028.backup",
            Some(WalName::Backup {
                segment: seg(1, 0, 3),
                offset: 0x28,
            }),
        );
        check("", None);
        check("00000001000000000000003", None);
        check("0000000100000000000000033", None);
        check("00000000000000000000000A", None);
        check("../00000001000000000000003", None);
        check("0000000100000000000000G3", None);
        check("00000001.histor", None);
        check("00000000.history", None);
        check("000000010000000000000003.backup", None);
        check("00000001000000000000000é", None);
        check("/etc/passwd", None);
    }

    #[test]
    fn segment_arithmetic_depends_on_segment_size() {
        assert_eq!(segments_per_xlog_id(16 << 20), 256);
        assert_eq!(segments_per_xlog_id(1 << 20), 4096);
        assert_eq!(segments_per_xlog_id(1 << 30), 4);
        assert_eq!(seg(1, 0, 0xFF).next(16 << 20), seg(1, 1, 0));
        assert_eq!(seg(1, 0, 0xFF).next(1 << 20), seg(1, 0, 0x100));
        assert_eq!(seg(1, 2, 3).next(1 << 30), seg(1, 3, 0));
        assert_eq!(seg(1, 1, 2).number(16 << 20), 258);
        assert_eq!(seg(1, 1, 2).start_lsn(16 << 20).to_string(), "1/2000000");
        assert!(!seg(1, 0, 4).fits(1 << 30));
        for size in [1u64 << 20, 16 << 20, 1 << 30] {
            assert!(is_valid_segment_size(size));
        }
        assert!(!is_valid_segment_size(3 << 20));
        assert!(!is_valid_segment_size(2 << 30));
    }

    #[test]
    fn lsn_round_trips() {
        for (text, value) in [
            ("0/0", 0u64),
            ("16/B374D848", 0x16_B374_D848),
            ("FFFFFFFF/FFFFFFFF", u64::MAX),
        ] {
            let lsn: Lsn = text.parse().expect("valid lsn");
            assert_eq!(lsn, Lsn(value));
            assert_eq!(lsn.to_string(), text);
        }
        for bad in ["", "1", "1/", "/1", "G/0", "123456789/0"] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad:?} should not parse");
        }
        assert_eq!(Lsn(0x1_0300_0028).segment(1, 16 << 20), seg(1, 1, 3));
    }
}
