//! The long page header at the start of every WAL segment.
//!
//! The first page of a segment carries `XLogLongPageHeaderData`: the usual
//! page header (magic, info flags, timeline, page address, remaining length),
//! then the cluster's system identifier, the segment size and the WAL block
//! size. walg reads it to validate a segment before handing it to PostgreSQL
//! (a file of the wrong size or for the wrong position is FATAL to recovery)
//! and to learn the segment size without hard-coding 16 MiB.
//!
//! Layout (little-endian on every platform PostgreSQL supports for WAL
//! shipping between identical builds; the same in 13 to 19):
//! `u16 magic, u16 info, u32 tli, u64 pageaddr, u32 rem_len, [4 pad],
//!  u64 sysid, u32 seg_size, u32 xlog_blcksz` = 40 bytes.
//!
//! The magic changes with every major version and says how to read the
//! `xlp_info` flags: 19 dropped `XLP_BKP_REMOVABLE` and renumbered
//! `XLP_FIRST_IS_OVERWRITE_CONTRECORD` from 0x8 to 0x4, so bit 0x4 means
//! different things before and after. The magic is decided first, then the
//! flags are checked against that version's `XLP_ALL_FLAGS`, as PostgreSQL's
//! own reader does. A magic of no version walg knows (a future one) is
//! accepted with the long-header flag alone: its other bits are not guessed.

use crate::wal::{is_valid_segment_size, Segment};

/// Size of the long page header.
pub const LONG_HEADER_LEN: usize = 40;
/// `XLP_LONG_HEADER` flag in `xlp_info` (0x2 in every version).
const XLP_LONG_HEADER: u16 = 0x0002;

/// `XLOG_PAGE_MAGIC` of each major version (POSTGRES_VERSIONS.md §1).
/// 19: the betas' two values; 19 GA's is unverified and, if different, is
/// read as an unknown magic.
pub const PAGE_MAGICS: &[(u16, u32)] = &[
    (0xD106, 13),
    (0xD10D, 14),
    (0xD110, 15),
    (0xD113, 16),
    (0xD116, 17),
    (0xD118, 18),
    (0xD120, 19),
    (0xD121, 19),
];

/// The major version whose WAL carries `magic`.
pub fn major_for_magic(magic: u16) -> Option<u32> {
    PAGE_MAGICS
        .iter()
        .find(|(m, _)| *m == magic)
        .map(|(_, v)| *v)
}

/// `XLP_ALL_FLAGS` of a major version: 0x7 in 19 (first-is-contrecord,
/// long header, overwrite-contrecord); 0xF before (with bkp-removable, and
/// overwrite-contrecord at 0x8, back-patched into 13 and 14 minors, so a
/// late 13.x writes it too).
fn all_flags(major: u32) -> u16 {
    if major >= 19 {
        0x0007
    } else {
        0x000F
    }
}

/// The fields of a segment's long page header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LongPageHeader {
    /// WAL format magic (`0xD110` for PostgreSQL 15); differs per major version.
    pub magic: u16,
    pub info: u16,
    pub timeline: u32,
    pub page_addr: u64,
    pub system_id: u64,
    pub segment_size: u32,
    pub block_size: u32,
}

/// Why the first bytes of a file are not a valid segment header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("file is {0} bytes, too short for a WAL page header")]
    TooShort(usize),
    #[error("bad WAL magic 0x{0:04X}: not a PostgreSQL WAL segment")]
    BadMagic(u16),
    #[error("first page lacks the long header flag: not the start of a WAL segment")]
    NotLongHeader,
    #[error("page info bits 0x{info:04X} are invalid for PostgreSQL {major}'s WAL (magic 0x{magic:04X})")]
    InvalidInfoBits { info: u16, magic: u16, major: u32 },
    #[error("segment size {0} in the header is not a power of two between 1 MiB and 1 GiB")]
    BadSegmentSize(u32),
    #[error("WAL block size {0} in the header is not a power of two between 1 KiB and 64 KiB")]
    BadBlockSize(u32),
    #[error("header says timeline {found}, page address {found_addr:X}; the file name says timeline {expected}, address {expected_addr:X}")]
    WrongPosition {
        found: u32,
        found_addr: u64,
        expected: u32,
        expected_addr: u64,
    },
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes([
        b[at],
        b[at + 1],
        b[at + 2],
        b[at + 3],
        b[at + 4],
        b[at + 5],
        b[at + 6],
        b[at + 7],
    ])
}

impl LongPageHeader {
    /// Parses and sanity-checks the header at the start of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<LongPageHeader, HeaderError> {
        if bytes.len() < LONG_HEADER_LEN {
            return Err(HeaderError::TooShort(bytes.len()));
        }
        let h = LongPageHeader {
            magic: u16_at(bytes, 0),
            info: u16_at(bytes, 2),
            timeline: u32_at(bytes, 4),
            page_addr: u64_at(bytes, 8),
            system_id: u64_at(bytes, 24),
            segment_size: u32_at(bytes, 32),
            block_size: u32_at(bytes, 36),
        };
        // Every WAL format since PostgreSQL 9.0 uses 0xD0xx/0xD1xx magics.
        if h.magic & 0xFE00 != 0xD000 {
            return Err(HeaderError::BadMagic(h.magic));
        }
        if let Some(major) = major_for_magic(h.magic) {
            if h.info & !all_flags(major) != 0 {
                return Err(HeaderError::InvalidInfoBits {
                    info: h.info,
                    magic: h.magic,
                    major,
                });
            }
        }
        if h.info & XLP_LONG_HEADER == 0 {
            return Err(HeaderError::NotLongHeader);
        }
        if !is_valid_segment_size(u64::from(h.segment_size)) {
            return Err(HeaderError::BadSegmentSize(h.segment_size));
        }
        if !h.block_size.is_power_of_two() || !(1024..=65536).contains(&h.block_size) {
            return Err(HeaderError::BadBlockSize(h.block_size));
        }
        Ok(h)
    }

    /// The major version that wrote this WAL, when its magic is known.
    pub fn major_version(&self) -> Option<u32> {
        major_for_magic(self.magic)
    }

    /// `XLP_FIRST_IS_OVERWRITE_CONTRECORD`: 0x8 before 19, 0x4 in 19 (where
    /// 0x4 used to be `XLP_BKP_REMOVABLE`). `None` for an unknown magic.
    pub fn first_is_overwrite_contrecord(&self) -> Option<bool> {
        let bit = if self.major_version()? >= 19 {
            0x4
        } else {
            0x8
        };
        Some(self.info & bit != 0)
    }

    /// Checks that this header belongs at the start of `segment`.
    pub fn check_position(&self, segment: &Segment) -> Result<(), HeaderError> {
        let expected_addr = segment.start_lsn(u64::from(self.segment_size)).0;
        if self.timeline != segment.timeline || self.page_addr != expected_addr {
            return Err(HeaderError::WrongPosition {
                found: self.timeline,
                found_addr: self.page_addr,
                expected: segment.timeline,
                expected_addr,
            });
        }
        Ok(())
    }
}

/// Builds a header; used by tests and tools that synthesise segments.
pub fn encode_long_header(h: &LongPageHeader) -> [u8; LONG_HEADER_LEN] {
    let mut b = [0u8; LONG_HEADER_LEN];
    b[0..2].copy_from_slice(&h.magic.to_le_bytes());
    b[2..4].copy_from_slice(&h.info.to_le_bytes());
    b[4..8].copy_from_slice(&h.timeline.to_le_bytes());
    b[8..16].copy_from_slice(&h.page_addr.to_le_bytes());
    b[24..32].copy_from_slice(&h.system_id.to_le_bytes());
    b[32..36].copy_from_slice(&h.segment_size.to_le_bytes());
    b[36..40].copy_from_slice(&h.block_size.to_le_bytes());
    b
}

/// A synthetic segment of `size` bytes for `segment`, with a valid long
/// header and deterministic pseudo-random content. For tests and benches.
pub fn synthetic_segment(segment: &Segment, size: u64, system_id: u64, seed: u64) -> Vec<u8> {
    let header = LongPageHeader {
        magic: 0xD110,
        info: XLP_LONG_HEADER,
        timeline: segment.timeline,
        page_addr: segment.start_lsn(size).0,
        system_id,
        segment_size: size as u32,
        block_size: 8192,
    };
    let mut out = vec![0u8; size as usize];
    // xorshift: cheap, deterministic; half the bytes stay zero so the data
    // compresses roughly like real WAL with padding.
    let mut x = seed | 1;
    for chunk in out.chunks_mut(16) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let n = chunk.len().min(8);
        chunk[..n].copy_from_slice(&x.to_le_bytes()[..n]);
    }
    out[..LONG_HEADER_LEN].copy_from_slice(&encode_long_header(&header));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(log: u32, seg: u32) -> Segment {
        Segment {
            timeline: 1,
            log,
            seg,
        }
    }

    #[test]
    fn parses_synthetic_header() {
        let s = seg(0, 3);
        let data = synthetic_segment(&s, 1 << 20, 42, 7);
        let h = LongPageHeader::parse(&data).expect("valid header");
        assert_eq!(h.system_id, 42);
        assert_eq!(h.segment_size, 1 << 20);
        assert_eq!(h.check_position(&s), Ok(()));
        assert!(matches!(
            h.check_position(&seg(0, 4)),
            Err(HeaderError::WrongPosition { .. })
        ));
    }

    /// Every version's magic with every flag it may set is accepted; bit
    /// 0x4 is read by the magic (19: overwrite-contrecord; before:
    /// bkp-removable), and 0x8 is refused on 19 as PostgreSQL 19 refuses it.
    #[test]
    fn every_version_magic_and_flags() {
        let s = seg(0, 3);
        let with = |magic: u16, info: u16| {
            let mut data = synthetic_segment(&s, 1 << 20, 42, 7);
            data[0..2].copy_from_slice(&magic.to_le_bytes());
            data[2..4].copy_from_slice(&info.to_le_bytes());
            LongPageHeader::parse(&data)
        };
        for (magic, major) in PAGE_MAGICS.iter().copied() {
            let all = if major >= 19 { 0x7 } else { 0xF };
            for info in 0..=all {
                let h = with(magic, info | XLP_LONG_HEADER)
                    .unwrap_or_else(|e| panic!("{major} info {info:#x}: {e}"));
                assert_eq!(h.major_version(), Some(major));
                assert_eq!(h.check_position(&s), Ok(()));
            }
            let overwrite = if major >= 19 { 0x4 } else { 0x8 };
            let h = with(magic, XLP_LONG_HEADER | overwrite).expect("overwrite");
            assert_eq!(h.first_is_overwrite_contrecord(), Some(true), "{major}");
            let h = with(magic, XLP_LONG_HEADER | 0x1).expect("contrecord");
            assert_eq!(h.first_is_overwrite_contrecord(), Some(false), "{major}");
        }
        // 0x4 on 18 is XLP_BKP_REMOVABLE, not an overwrite.
        let h = with(0xD118, XLP_LONG_HEADER | 0x4).expect("18");
        assert_eq!(h.first_is_overwrite_contrecord(), Some(false));
        assert_eq!(
            with(0xD121, XLP_LONG_HEADER | 0x8),
            Err(HeaderError::InvalidInfoBits {
                info: 0xA,
                magic: 0xD121,
                major: 19
            })
        );
        assert!(matches!(
            with(0xD116, XLP_LONG_HEADER | 0x10),
            Err(HeaderError::InvalidInfoBits { major: 17, .. })
        ));
        // A magic walg does not know yet (19 GA's, a future 20): the long
        // header flag is all that is read.
        let h = with(0xD130, XLP_LONG_HEADER | 0x30).expect("future magic");
        assert_eq!(h.major_version(), None);
        assert_eq!(h.first_is_overwrite_contrecord(), None);
        assert_eq!(with(0xD130, 0x1), Err(HeaderError::NotLongHeader));
    }

    /// The first 40 bytes of a segment written by real 13, 16, 17 and 18
    /// servers (the clusters of `testdata/README.md`): info 0x0006 is the
    /// long header plus `XLP_BKP_REMOVABLE`, the bit 19 gives another
    /// meaning.
    #[test]
    fn real_headers_of_13_to_18() {
        let cases = [
            (
                13,
                "00000001000000000000000C",
                "06d10600010000000000c000000000000000000000000000c5a91f0287fe146b0000100000200000",
                7_716_071_917_402_171_845u64,
            ),
            (
                16,
                "00000001000000000000000C",
                "13d10600010000000000c0000000000000000000000000002f9a6fc188fe146b0000100000200000",
                7_716_071_924_906_826_287,
            ),
            (
                17,
                "00000001000000000000000B",
                "16d10600010000000000b0000000000000000000000000009a7a26798afe146b0000100000200000",
                7_716_071_932_284_009_114,
            ),
            (
                18,
                "00000001000000000000000F",
                "18d10600010000000000f00000000000000000000000000010fc96288cfe146b0000100000200000",
                7_716_071_939_522_362_384,
            ),
        ];
        for (major, name, hex, sysid) in cases {
            let bytes: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
                .collect();
            let h = LongPageHeader::parse(&bytes).unwrap_or_else(|e| panic!("{major}: {e}"));
            assert_eq!(h.major_version(), Some(major));
            assert_eq!(h.info, 0x0006);
            assert_eq!(h.first_is_overwrite_contrecord(), Some(false));
            assert_eq!(h.system_id, sysid);
            assert_eq!(h.segment_size, 1 << 20);
            let crate::wal::WalName::Segment(s) = crate::wal::WalName::parse(name).expect("name")
            else {
                panic!("{name} is a segment name");
            };
            assert_eq!(h.check_position(&s), Ok(()), "{major}");
        }
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(
            LongPageHeader::parse(&[0u8; 10]),
            Err(HeaderError::TooShort(10))
        );
        assert_eq!(
            LongPageHeader::parse(&[0u8; 64]),
            Err(HeaderError::BadMagic(0))
        );
        let mut data = synthetic_segment(&seg(0, 1), 1 << 20, 1, 1);
        data[2] = 0;
        assert_eq!(
            LongPageHeader::parse(&data),
            Err(HeaderError::NotLongHeader)
        );
        let mut data = synthetic_segment(&seg(0, 1), 1 << 20, 1, 1);
        data[32..36].copy_from_slice(&(3u32 << 20).to_le_bytes());
        assert_eq!(
            LongPageHeader::parse(&data),
            Err(HeaderError::BadSegmentSize(3 << 20))
        );
    }
}
