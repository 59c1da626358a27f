//! `pg_replslot/<name>/state`: a replication slot as PostgreSQL saved it
//! (`ReplicationSlotOnDisk` in `src/backend/replication/slot.c`).
//!
//! This is how walg sees slots while the server is down: the slot's
//! `restart_lsn` is what holds WAL back. Versions 2 (PG13–15), 3 (PG16) and
//! 5 (PG17) are read; the data length tells PG13's shorter layout apart.
//! The magic number and the CRC-32C are always checked. No I/O here.

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
    /// WAL or was invalidated.
    pub restart_lsn: Option<Lsn>,
    /// The slot was invalidated (its WAL was removed, or, PG16+, another
    /// cause): it holds nothing any more and its consumer cannot resume.
    pub invalidated: bool,
    pub confirmed_flush: Lsn,
    pub plugin: String,
    pub version: u32,
}

/// Why bytes are not a slot state file walg can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlotError {
    #[error("slot state file is {0} bytes, too short")]
    TooShort(usize),
    #[error("slot state file has magic {0:#010x}, expected 0x01051ca1")]
    BadMagic(u32),
    #[error("slot state file version {version} with length {length} is not one walg knows (PostgreSQL 13-17)")]
    UnknownVersion { version: u32, length: u32 },
    #[error("slot state file checksum mismatch (stored {stored:08x}, computed {computed:08x}): the file is corrupt")]
    Crc { stored: u32, computed: u32 },
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// Parses and checks a slot state file.
pub fn parse(bytes: &[u8]) -> Result<SlotState, SlotError> {
    if bytes.len() < HEADER {
        return Err(SlotError::TooShort(bytes.len()));
    }
    let magic = u32_at(bytes, 0);
    if magic != MAGIC {
        return Err(SlotError::BadMagic(magic));
    }
    let version = u32_at(bytes, 8);
    let length = u32_at(bytes, 12);
    // PG13 has no two-phase fields: the plugin follows confirmed_flush.
    let plugin_off = match (version, length) {
        (2, 168) => 120,
        (2 | 3 | 5, 184..=200) => 129,
        _ => return Err(SlotError::UnknownVersion { version, length }),
    };
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
    let invalidated = if version >= 3 {
        u32_at(bytes, 104) != 0
    } else {
        // PG13–15 keep the old restart_lsn in `invalidated_at`.
        u64_at(bytes, 104) != 0
    };
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
        confirmed_flush: Lsn(u64_at(bytes, 112)),
        plugin: cstr(&bytes[plugin_off..plugin_off + NAME_LEN]),
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

    #[test]
    fn real_files() {
        let p = parse(PHYSICAL).expect("physical");
        assert_eq!(p.name, "phys1");
        assert_eq!(p.slot_type, SlotType::Physical);
        assert_eq!(p.restart_lsn, Some("0/600768".parse().expect("lsn")));
        assert!(!p.invalidated);
        assert_eq!(p.plugin, "");
        assert_eq!(p.version, 2);

        let l = parse(LOGICAL).expect("logical");
        assert_eq!(l.name, "logi1");
        assert_eq!(l.slot_type, SlotType::Logical);
        assert_eq!(l.database, 5);
        assert_eq!(l.restart_lsn, Some("0/600818".parse().expect("lsn")));
        assert_eq!(l.confirmed_flush, "0/600850".parse().expect("lsn"));
        assert_eq!(l.catalog_xmin, 724);
        assert_eq!(l.plugin, "test_decoding");
    }

    #[test]
    fn invalidated_slot_holds_nothing() {
        // PG15 invalidation: restart_lsn 0, the old value in invalidated_at.
        let mut b = PHYSICAL.to_vec();
        let old = b[96..104].to_vec();
        b[104..112].copy_from_slice(&old);
        b[96..104].fill(0);
        reseal(&mut b);
        let s = parse(&b).expect("parse");
        assert!(s.invalidated);
        assert_eq!(s.restart_lsn, None);
    }

    #[test]
    fn corruption_is_reported() {
        let mut b = PHYSICAL.to_vec();
        b[100] ^= 0x01;
        assert!(matches!(parse(&b), Err(SlotError::Crc { .. })));
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
