//! `pg_replslot/<name>/state`: a replication slot as PostgreSQL saved it
//! (`ReplicationSlotOnDisk` in `src/backend/replication/slot.c`).
//!
//! This is how walg sees slots while the server is down: the slot's
//! `restart_lsn` is what holds WAL back. A state file is readable only by
//! the major version that wrote it, and the file alone does not say which:
//! 17 and 18 share `SLOT_VERSION` 5 and the 200-byte size but store the
//! invalidation cause differently (17 an enum, 18 bit flags). So the caller
//! passes the major version (from `PG_VERSION`), and the file must be the
//! one that version writes:
//!
//! | major | version | data length | at 104 |
//! |---|---|---|---|
//! | 13 | 2 | 168 | `invalidated_at` (the old `restart_lsn`) |
//! | 14–15 | 2 | 184 | `invalidated_at` |
//! | 16–17 | 3, 5 | 184 | cause: 1 wal_removed, 2 rows_removed, 3 wal_level_insufficient |
//! | 18 | 5 | 184 | flags: 1 wal_removed, 2 rows_removed, 4 wal_level_insufficient, 8 idle_timeout |
//!
//! A major past 18 is read as 18 when it still writes version 5 (19's
//! `SLOT_VERSION` is unverified). The magic number and the CRC-32C are
//! always checked. No I/O here.

use crate::pg::control::{u32_at, u64_at};
use crate::pg::crc32c::crc32c;
use crate::wal::Lsn;

const MAGIC: u32 = 0x0105_1CA1;
/// Bytes before the slot data: magic, checksum, version, length.
const HEADER: usize = 16;
const NAME_LEN: usize = 64;

/// What kind of slot it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SlotType {
    Physical,
    Logical,
}

impl SlotType {
    pub fn as_str(self) -> &'static str {
        match self {
            SlotType::Physical => "physical",
            SlotType::Logical => "logical",
        }
    }
}

/// A slot as saved on disk.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SlotState {
    pub name: String,
    pub slot_type: SlotType,
    /// Database OID (0 for a physical slot).
    pub database: u32,
    pub xmin: u32,
    pub catalog_xmin: u32,
    /// The oldest WAL the slot needs; `None` when the slot never reserved
    /// WAL or was invalidated (an invalidated slot holds nothing, even
    /// where PostgreSQL keeps its old `restart_lsn`).
    pub restart_lsn: Option<Lsn>,
    /// The slot was invalidated: it holds no WAL any more and its consumer
    /// cannot resume from it.
    pub invalidated: bool,
    /// Why, as `pg_replication_slots.invalidation_reason` (17+) names it:
    /// `wal_removed`, `rows_removed`, `wal_level_insufficient`,
    /// `idle_timeout`; 13–15 know only `wal_removed`.
    pub invalidation_reason: Option<String>,
    pub confirmed_flush: Lsn,
    pub plugin: String,
    /// 17+: a slot synchronised from the primary (never idle-invalidated on
    /// a standby).
    pub synced: bool,
    /// The file's `SLOT_VERSION`.
    pub version: u32,
}

/// Why bytes are not a slot state file walg can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlotError {
    #[error("slot state file is {0} bytes, too short")]
    TooShort(usize),
    #[error("slot state file has magic {0:#010x}, expected 0x01051ca1")]
    BadMagic(u32),
    #[error("slot state file version {version} with length {length} is not one {expected} writes")]
    UnknownVersion {
        version: u32,
        length: u32,
        expected: String,
    },
    #[error("slot state file checksum mismatch (stored {stored:08x}, computed {computed:08x}): the file is corrupt")]
    Crc { stored: u32, computed: u32 },
}

/// How a major version stores the invalidation at offset 104.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    /// 13–15: `invalidated_at`, the old `restart_lsn` (0: valid).
    InvalidatedAt,
    /// 16–17: a cause enum.
    Enum,
    /// 18: cause bit flags.
    Flags,
}

/// The (version, length) pairs a major writes, and its encoding.
fn format_of(major: u32) -> (&'static [(u32, u32)], Encoding) {
    match major {
        ..=13 => (&[(2, 168)], Encoding::InvalidatedAt),
        14 | 15 => (&[(2, 184)], Encoding::InvalidatedAt),
        16 => (&[(3, 184)], Encoding::Enum),
        17 => (&[(5, 184)], Encoding::Enum),
        _ => (&[(5, 184)], Encoding::Flags),
    }
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn reason(encoding: Encoding, raw: u64) -> Option<String> {
    if raw == 0 {
        return None;
    }
    let name = |v: u64| match v {
        1 => "wal_removed".to_string(),
        2 => "rows_removed".to_string(),
        3 if encoding == Encoding::Enum => "wal_level_insufficient".to_string(),
        4 if encoding == Encoding::Flags => "wal_level_insufficient".to_string(),
        8 if encoding == Encoding::Flags => "idle_timeout".to_string(),
        other => format!("unknown cause {other}"),
    };
    Some(match encoding {
        Encoding::InvalidatedAt => "wal_removed".to_string(),
        Encoding::Enum => name(raw),
        Encoding::Flags => (0..32)
            .map(|b| 1u64 << b)
            .filter(|bit| raw & bit != 0)
            .map(name)
            .collect::<Vec<_>>()
            .join(","),
    })
}

/// Parses and checks a slot state file written by PostgreSQL `major`.
pub fn parse_for(bytes: &[u8], major: u32) -> Result<SlotState, SlotError> {
    let (formats, encoding) = format_of(major);
    parse_with(bytes, |version, length| {
        formats
            .contains(&(version, length))
            .then_some(encoding)
            .ok_or_else(|| SlotError::UnknownVersion {
                version,
                length,
                expected: format!("PostgreSQL {major}"),
            })
    })
}

/// Parses a slot state file without knowing the major version that wrote
/// it, telling the formats apart by version and length. Version 5 is read
/// with 17's enum for the causes 17 and 18 share (1, 2) and 17's
/// `wal_level_insufficient` (3), and with 18's flags for 4 and 8: only
/// [`parse_for`] is exact.
pub fn parse(bytes: &[u8]) -> Result<SlotState, SlotError> {
    let mut s = parse_with(bytes, |version, length| match (version, length) {
        (2, 168 | 184) => Ok(Encoding::InvalidatedAt),
        (3 | 5, 184) => Ok(Encoding::Enum),
        _ => Err(SlotError::UnknownVersion {
            version,
            length,
            expected: "PostgreSQL 13-18".into(),
        }),
    })?;
    if s.version == 5 {
        let raw = u32_at(bytes, 104);
        if raw > 3 {
            s.invalidation_reason = reason(Encoding::Flags, u64::from(raw));
        }
    }
    Ok(s)
}

fn parse_with(
    bytes: &[u8],
    encoding_of: impl Fn(u32, u32) -> Result<Encoding, SlotError>,
) -> Result<SlotState, SlotError> {
    if bytes.len() < HEADER {
        return Err(SlotError::TooShort(bytes.len()));
    }
    let magic = u32_at(bytes, 0);
    if magic != MAGIC {
        return Err(SlotError::BadMagic(magic));
    }
    let version = u32_at(bytes, 8);
    let length = u32_at(bytes, 12);
    let encoding = encoding_of(version, length)?;
    // 13 has no two-phase fields: the plugin follows confirmed_flush.
    let plugin_off = if length == 168 { 120 } else { 129 };
    let end = HEADER + length as usize;
    if bytes.len() < end || end < plugin_off + NAME_LEN {
        return Err(SlotError::TooShort(bytes.len()));
    }
    let stored = u32_at(bytes, 4);
    let computed = crc32c(&bytes[8..end]);
    if stored != computed {
        return Err(SlotError::Crc { stored, computed });
    }
    let database = u32_at(bytes, 80);
    let restart = u64_at(bytes, 96);
    let raw_cause = match encoding {
        Encoding::InvalidatedAt => u64_at(bytes, 104),
        Encoding::Enum | Encoding::Flags => u64::from(u32_at(bytes, 104)),
    };
    let invalidation_reason = reason(encoding, raw_cause);
    let invalidated = invalidation_reason.is_some();
    Ok(SlotState {
        name: cstr(&bytes[16..16 + NAME_LEN]),
        slot_type: if database == 0 {
            SlotType::Physical
        } else {
            SlotType::Logical
        },
        database,
        xmin: u32_at(bytes, 88),
        catalog_xmin: u32_at(bytes, 92),
        restart_lsn: (restart != 0 && !invalidated).then_some(Lsn(restart)),
        invalidated,
        invalidation_reason,
        confirmed_flush: Lsn(u64_at(bytes, 112)),
        plugin: cstr(&bytes[plugin_off..plugin_off + NAME_LEN]),
        synced: version >= 5 && end > 193 && bytes[193] != 0,
        version,
    })
}

/// Rewrites the CRC of a state file after its bytes were changed (tests).
pub fn reseal(bytes: &mut [u8]) {
    let end = HEADER + u32_at(bytes, 12) as usize;
    let crc = crc32c(&bytes[8..end]);
    bytes[4..8].copy_from_slice(&crc.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Saved by PostgreSQL 15 at a checkpoint (see `testdata/`): a physical
    /// slot made with `immediately_reserve`, and a `test_decoding` slot.
    const PHYSICAL: &[u8] = include_bytes!("../../testdata/slot_physical.pg15");
    const LOGICAL: &[u8] = include_bytes!("../../testdata/slot_logical.pg15");

    /// Saved by real 13, 16, 17 and 18 servers (see `testdata/README.md`):
    /// `phys1` physical, `logi1` test_decoding, `lost1` invalidated by
    /// `max_slot_wal_keep_size`, 18's `idle1` by
    /// `idle_replication_slot_timeout`.
    fn real(name: &str, major: u32) -> Vec<u8> {
        let path = format!(
            "{}/testdata/slot_{name}.pg{major}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn lsn(s: &str) -> Lsn {
        s.parse().expect("lsn")
    }

    #[test]
    fn real_pg15_files() {
        let p = parse_for(PHYSICAL, 15).expect("physical");
        assert_eq!(p.name, "phys1");
        assert_eq!(p.slot_type, SlotType::Physical);
        assert_eq!(p.restart_lsn, Some(lsn("0/600768")));
        assert!(!p.invalidated);
        assert_eq!(p.plugin, "");
        assert_eq!(p.version, 2);

        let l = parse_for(LOGICAL, 15).expect("logical");
        assert_eq!(l.name, "logi1");
        assert_eq!(l.slot_type, SlotType::Logical);
        assert_eq!(l.database, 5);
        assert_eq!(l.restart_lsn, Some(lsn("0/600818")));
        assert_eq!(l.confirmed_flush, lsn("0/600850"));
        assert_eq!(l.catalog_xmin, 724);
        assert_eq!(l.plugin, "test_decoding");
        assert_eq!(parse(LOGICAL), Ok(l));
    }

    /// What `pg_replication_slots` said on each server before it stopped.
    #[test]
    fn real_files_of_every_version() {
        // (major, slot, restart_lsn, invalidation_reason, SLOT_VERSION)
        type Case = (
            u32,
            &'static str,
            Option<&'static str>,
            Option<&'static str>,
            u32,
        );
        let cases: [Case; 13] = [
            (13, "phys1", Some("0/C00108"), None, 2),
            (13, "logi1", Some("0/C001B8"), None, 2),
            (13, "lost1", None, Some("wal_removed"), 2),
            (16, "phys1", Some("0/C00108"), None, 3),
            (16, "logi1", Some("0/C001B8"), None, 3),
            (16, "lost1", None, Some("wal_removed"), 3),
            (17, "phys1", Some("0/B00108"), None, 5),
            (17, "logi1", Some("0/B001D8"), None, 5),
            (17, "lost1", None, Some("wal_removed"), 5),
            (18, "phys1", Some("0/F00058"), None, 5),
            (18, "logi1", Some("0/F00128"), None, 5),
            (18, "lost1", None, Some("wal_removed"), 5),
            // 18 keeps restart_lsn (0/E00108) for causes other than
            // wal_removed; the slot holds nothing all the same.
            (18, "idle1", None, Some("idle_timeout"), 5),
        ];
        for (major, name, restart, why, version) in cases {
            let s = parse_for(&real(name, major), major)
                .unwrap_or_else(|e| panic!("{name} of {major}: {e}"));
            assert_eq!(s.name, name);
            assert_eq!(s.version, version, "{name} of {major}");
            assert_eq!(s.restart_lsn, restart.map(lsn), "{name} of {major}");
            assert_eq!(s.invalidation_reason.as_deref(), why, "{name} of {major}");
            assert_eq!(s.invalidated, why.is_some());
            assert!(!s.synced);
            if name == "logi1" {
                assert_eq!(s.slot_type, SlotType::Logical);
                assert_eq!(s.plugin, "test_decoding");
            } else {
                assert_eq!(s.slot_type, SlotType::Physical);
            }
            // Without the major version the same answer (no ambiguous value
            // among these files).
            assert_eq!(parse(&real(name, major)), Ok(s.clone()));
        }
        // A file read as another major's is refused, not misread.
        let err = parse_for(&real("phys1", 13), 14).unwrap_err();
        assert!(err.to_string().contains("PostgreSQL 14"), "{err}");
        assert!(parse_for(&real("phys1", 16), 17).is_err());
        assert!(parse_for(&real("phys1", 17), 18).is_ok(), "same format");
    }

    /// 17 and 18 share SLOT_VERSION 5: the stored 3 or 4 means different
    /// things, and only the major version tells.
    #[test]
    fn seventeen_and_eighteen_encode_causes_differently() {
        let with_cause = |major: u32, v: u32| {
            let mut b = real("logi1", major);
            b[104..108].copy_from_slice(&v.to_le_bytes());
            reseal(&mut b);
            b
        };
        let why = |b: &[u8], major| parse_for(b, major).expect("parse").invalidation_reason;
        assert_eq!(
            why(&with_cause(17, 3), 17).as_deref(),
            Some("wal_level_insufficient")
        );
        assert_eq!(why(&with_cause(17, 2), 17).as_deref(), Some("rows_removed"));
        assert_eq!(
            why(&with_cause(18, 3), 18).as_deref(),
            Some("wal_removed,rows_removed")
        );
        assert_eq!(
            why(&with_cause(18, 4), 18).as_deref(),
            Some("wal_level_insufficient")
        );
        assert_eq!(
            why(&with_cause(17, 4), 17).as_deref(),
            Some("unknown cause 4")
        );
        // A rows_removed slot keeps its restart_lsn on disk but holds nothing.
        let s = parse_for(&with_cause(18, 2), 18).expect("parse");
        assert!(s.invalidated);
        assert_eq!(s.restart_lsn, None);
        // 19 (SLOT_VERSION unverified) is read as 18 while it writes 5.
        assert_eq!(why(&with_cause(18, 8), 19).as_deref(), Some("idle_timeout"));
    }

    #[test]
    fn invalidated_slot_holds_nothing() {
        // PG15 invalidation: restart_lsn 0, the old value in invalidated_at.
        let mut b = PHYSICAL.to_vec();
        let old = b[96..104].to_vec();
        b[104..112].copy_from_slice(&old);
        b[96..104].fill(0);
        reseal(&mut b);
        let s = parse_for(&b, 15).expect("parse");
        assert!(s.invalidated);
        assert_eq!(s.invalidation_reason.as_deref(), Some("wal_removed"));
        assert_eq!(s.restart_lsn, None);
    }

    #[test]
    fn corruption_is_reported() {
        let mut b = PHYSICAL.to_vec();
        b[100] ^= 0x01;
        assert!(matches!(parse_for(&b, 15), Err(SlotError::Crc { .. })));
        let mut b = PHYSICAL.to_vec();
        b[0] = 0;
        assert!(matches!(parse(&b), Err(SlotError::BadMagic(_))));
        let mut b = PHYSICAL.to_vec();
        b[8] = 9;
        assert!(matches!(parse(&b), Err(SlotError::UnknownVersion { .. })));
        assert!(matches!(
            parse(&PHYSICAL[..60]),
            Err(SlotError::TooShort(60))
        ));
    }
}
