//! `global/pg_control`: the few fields of PostgreSQL's control file that
//! tell where WAL retention stands (the REDO pointer of the last checkpoint,
//! its time, the timeline, the segment size, the cluster state).
//!
//! The file is 8192 bytes written in the server's native byte order; only
//! little-endian machines with the layouts of PostgreSQL 13–17
//! (`pg_control_version` 1300 and 1700) are understood. Anything else is
//! refused with an error rather than read with guessed offsets. The
//! CRC-32C over the struct is always checked. This module does no I/O.

use crate::pg::crc32c::crc32c;
use crate::wal::Lsn;

/// Versions whose layout this parser knows (PG13–16, PG17).
pub const KNOWN_VERSIONS: &[u32] = &[1300, 1700];

/// Offset of the CRC, which covers every byte before it.
const CRC_OFFSET: usize = 288;

/// `floatFormat`: the double PostgreSQL stores to detect a foreign byte order.
const FLOAT_FORMAT: f64 = 1_234_567.0;

/// What `pg_controldata` calls "Database cluster state".
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterState {
    StartingUp,
    ShutDown,
    ShutDownInRecovery,
    ShuttingDown,
    InCrashRecovery,
    InArchiveRecovery,
    InProduction,
    Unknown(u32),
}

impl ClusterState {
    fn from_raw(v: u32) -> ClusterState {
        match v {
            0 => ClusterState::StartingUp,
            1 => ClusterState::ShutDown,
            2 => ClusterState::ShutDownInRecovery,
            3 => ClusterState::ShuttingDown,
            4 => ClusterState::InCrashRecovery,
            5 => ClusterState::InArchiveRecovery,
            6 => ClusterState::InProduction,
            other => ClusterState::Unknown(other),
        }
    }

    /// As `pg_controldata` prints it.
    pub fn describe(self) -> String {
        match self {
            ClusterState::StartingUp => "starting up".into(),
            ClusterState::ShutDown => "shut down".into(),
            ClusterState::ShutDownInRecovery => "shut down in recovery".into(),
            ClusterState::ShuttingDown => "shutting down".into(),
            ClusterState::InCrashRecovery => "in crash recovery".into(),
            ClusterState::InArchiveRecovery => "in archive recovery".into(),
            ClusterState::InProduction => "in production".into(),
            ClusterState::Unknown(v) => format!("unrecognized status code {v}"),
        }
    }
}

/// The fields walg uses.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ControlFile {
    pub system_identifier: u64,
    pub pg_control_version: u32,
    pub catalog_version: u32,
    pub state: ClusterState,
    /// Last update of the file, seconds since the epoch.
    pub time: i64,
    /// The latest checkpoint record.
    pub checkpoint: Lsn,
    /// Its REDO pointer: the oldest WAL a crash recovery would need.
    pub redo: Lsn,
    pub timeline: u32,
    pub prev_timeline: u32,
    /// Time of the latest checkpoint, seconds since the epoch.
    pub checkpoint_time: i64,
    pub min_recovery_point: Lsn,
    /// 0 minimal, 1 replica, 2 logical.
    pub wal_level: u32,
    pub block_size: u32,
    pub wal_block_size: u32,
    pub wal_segment_size: u32,
    pub data_checksum_version: u32,
}

impl ControlFile {
    /// `wal_level` as a setting value.
    pub fn wal_level_name(&self) -> &'static str {
        match self.wal_level {
            0 => "minimal",
            1 => "replica",
            2 => "logical",
            _ => "unknown",
        }
    }
}

/// Why bytes are not a control file walg can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("pg_control is {0} bytes, too short (expected 8192)")]
    TooShort(usize),
    #[error(
        "pg_control version {0} is not one walg knows (PostgreSQL 13-17: 1300, 1700); \
         refusing to guess its layout"
    )]
    UnknownVersion(u32),
    #[error(
        "pg_control checksum mismatch (stored {stored:08x}, computed {computed:08x}): \
         the file is corrupt or was written by a machine of another byte order"
    )]
    Crc { stored: u32, computed: u32 },
    #[error("pg_control was written with another byte order or float format")]
    ForeignFormat,
}

/// A little-endian u32 at `off` (also used for slot state files).
pub(crate) fn u32_at(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}

/// A little-endian u64 at `off`.
pub(crate) fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

/// Parses and checks a control file's bytes.
pub fn parse(bytes: &[u8]) -> Result<ControlFile, ControlError> {
    if bytes.len() < CRC_OFFSET + 4 {
        return Err(ControlError::TooShort(bytes.len()));
    }
    let version = u32_at(bytes, 8);
    if !KNOWN_VERSIONS.contains(&version) {
        return Err(ControlError::UnknownVersion(version));
    }
    let stored = u32_at(bytes, CRC_OFFSET);
    let computed = crc32c(&bytes[..CRC_OFFSET]);
    if stored != computed {
        return Err(ControlError::Crc { stored, computed });
    }
    if f64::from_le_bytes(
        bytes[208..216]
            .try_into()
            .map_err(|_| ControlError::ForeignFormat)?,
    ) != FLOAT_FORMAT
    {
        return Err(ControlError::ForeignFormat);
    }
    Ok(ControlFile {
        system_identifier: u64_at(bytes, 0),
        pg_control_version: version,
        catalog_version: u32_at(bytes, 12),
        state: ClusterState::from_raw(u32_at(bytes, 16)),
        time: u64_at(bytes, 24) as i64,
        checkpoint: Lsn(u64_at(bytes, 32)),
        redo: Lsn(u64_at(bytes, 40)),
        timeline: u32_at(bytes, 48),
        prev_timeline: u32_at(bytes, 52),
        checkpoint_time: u64_at(bytes, 104) as i64,
        min_recovery_point: Lsn(u64_at(bytes, 136)),
        wal_level: u32_at(bytes, 172),
        block_size: u32_at(bytes, 216),
        wal_block_size: u32_at(bytes, 224),
        wal_segment_size: u32_at(bytes, 228),
        data_checksum_version: u32_at(bytes, 252),
    })
}

/// Builds control-file bytes (tests and tools that need a synthetic one).
pub fn encode(c: &ControlFile) -> Vec<u8> {
    let mut b = vec![0u8; 8192];
    let put32 =
        |b: &mut Vec<u8>, off: usize, v: u32| b[off..off + 4].copy_from_slice(&v.to_le_bytes());
    b[0..8].copy_from_slice(&c.system_identifier.to_le_bytes());
    put32(&mut b, 8, c.pg_control_version);
    put32(&mut b, 12, c.catalog_version);
    let state = match c.state {
        ClusterState::StartingUp => 0,
        ClusterState::ShutDown => 1,
        ClusterState::ShutDownInRecovery => 2,
        ClusterState::ShuttingDown => 3,
        ClusterState::InCrashRecovery => 4,
        ClusterState::InArchiveRecovery => 5,
        ClusterState::InProduction => 6,
        ClusterState::Unknown(v) => v,
    };
    put32(&mut b, 16, state);
    b[24..32].copy_from_slice(&(c.time as u64).to_le_bytes());
    b[32..40].copy_from_slice(&c.checkpoint.0.to_le_bytes());
    b[40..48].copy_from_slice(&c.redo.0.to_le_bytes());
    put32(&mut b, 48, c.timeline);
    put32(&mut b, 52, c.prev_timeline);
    b[104..112].copy_from_slice(&(c.checkpoint_time as u64).to_le_bytes());
    b[136..144].copy_from_slice(&c.min_recovery_point.0.to_le_bytes());
    put32(&mut b, 172, c.wal_level);
    put32(&mut b, 204, 8);
    b[208..216].copy_from_slice(&FLOAT_FORMAT.to_le_bytes());
    put32(&mut b, 216, c.block_size);
    put32(&mut b, 224, c.wal_block_size);
    put32(&mut b, 228, c.wal_segment_size);
    put32(&mut b, 252, c.data_checksum_version);
    let crc = crc32c(&b[..CRC_OFFSET]);
    put32(&mut b, CRC_OFFSET, crc);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `global/pg_control` of a PostgreSQL 15 cluster made with
    /// `initdb --wal-segsize=1` and stopped cleanly (see `testdata/`).
    const PG15: &[u8] = include_bytes!("../../testdata/pg_control.pg15");

    #[test]
    fn real_pg15_file() {
        let c = parse(PG15).expect("parse a real pg_control");
        assert_eq!(c.pg_control_version, 1300);
        assert_eq!(c.state, ClusterState::ShutDown);
        assert_eq!(c.wal_segment_size, 1 << 20);
        assert_eq!(c.block_size, 8192);
        assert_eq!(c.wal_block_size, 8192);
        assert_eq!(c.timeline, 1);
        assert!(c.checkpoint_time > 1_600_000_000);
        // Values as pg_controldata printed them for this file.
        assert_eq!(c.system_identifier, 7_711_380_130_970_939_288);
        assert_eq!(c.catalog_version, 202_209_061);
        assert_eq!(c.redo, "0/616DD8".parse().expect("lsn"));
        assert_eq!(c.checkpoint, "0/616DD8".parse().expect("lsn"));
        assert_eq!(c.wal_level_name(), "logical");
    }

    #[test]
    fn flipped_byte_is_a_crc_error() {
        for off in [0usize, 40, 100, 287] {
            let mut b = PG15.to_vec();
            b[off] ^= 0x40;
            match parse(&b) {
                Err(ControlError::Crc { .. }) => {}
                other => panic!("flip at {off}: {other:?}"),
            }
        }
        let mut b = PG15.to_vec();
        b[0] ^= 1;
        let msg = parse(&b).unwrap_err().to_string();
        assert!(msg.contains("checksum mismatch"), "{msg}");
    }

    #[test]
    fn unknown_versions_are_refused() {
        let mut b = PG15.to_vec();
        b[8..12].copy_from_slice(&1800u32.to_le_bytes());
        assert_eq!(parse(&b), Err(ControlError::UnknownVersion(1800)));
        // Big-endian bytes of 1300 read as little-endian are not 1300 either.
        let mut b = PG15.to_vec();
        b[8..12].copy_from_slice(&1300u32.to_be_bytes());
        assert!(matches!(parse(&b), Err(ControlError::UnknownVersion(_))));
        assert_eq!(parse(&PG15[..100]), Err(ControlError::TooShort(100)));
    }

    #[test]
    fn encode_round_trips() {
        let c = parse(PG15).expect("parse");
        let again = parse(&encode(&c)).expect("parse encoded");
        assert_eq!(again, c);
    }
}
