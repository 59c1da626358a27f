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
//! shipping between identical builds):
//! `u16 magic, u16 info, u32 tli, u64 pageaddr, u32 rem_len, [4 pad],
//!  u64 sysid, u32 seg_size, u32 xlog_blcksz` = 40 bytes.

use crate::wal::{is_valid_segment_size, Segment};

/// Size of the long page header.
pub const LONG_HEADER_LEN: usize = 40;
/// `XLP_LONG_HEADER` flag in `xlp_info`.
const XLP_LONG_HEADER: u16 = 0x0002;

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
