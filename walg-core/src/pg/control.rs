//! `global/pg_control`: the few fields of PostgreSQL's control file that
//! tell where WAL retention stands (the REDO pointer of the last checkpoint,
//! its time, the timeline, the segment size, the cluster state).
//!
//! The file is 8192 bytes written in the server's native byte order; only
//! little-endian machines are understood. Every layout of PostgreSQL 13 to 19
//! is known (`pg_control_version` 1300 for 13–16, 1700, 1800, and 19's
//! `19xx`): the version picks the layout and the CRC-32C stored after the
//! struct must match. A version walg does not know (a 19 whose final layout
//! differs from the betas', a future 20) is read only when one of the known
//! layouts, with its CRC at the known offset or further on (fields appended
//! before the CRC), has a matching CRC and sane fields: a checksum that
//! matches by chance at a wrong offset is a one in four billion event, and
//! the float-format, block-size and segment-size fields must still make
//! sense. Anything else is refused rather than read with guessed offsets.
//!
//! [`parse_controldata`] reads the output of the cluster's own
//! `pg_controldata` instead, the doctor's next resort for a layout walg does
//! not know. This module does no I/O.

use crate::pg::crc32c::crc32c;
use crate::wal::Lsn;

/// `pg_control_version` values whose layout is known for sure. 19's final
/// value is not (the betas wrote 1902; see [`parse`] for how any 19xx is read).
pub const KNOWN_VERSIONS: &[u32] = &[1300, 1700, 1800, 1902];

/// `floatFormat`: the double PostgreSQL stores to detect a foreign byte order.
const FLOAT_FORMAT: f64 = 1_234_567.0;

/// `PG_CONTROL_MAX_SAFE_SIZE`: the struct, CRC included, never grows past it.
const MAX_SAFE_SIZE: usize = 512;

/// Where one `ControlFileData` layout keeps the fields walg reads (x86-64
/// offsets, from PostgreSQL's `pg_control.h` of each release; see
/// `POSTGRES_VERSIONS.md` §2.3). Fields before `checkPointCopy.time` sit at
/// the same offsets in every layout.
#[derive(Debug)]
struct Layout {
    name: &'static str,
    /// `checkPointCopy.wal_level` (17+: in former padding).
    checkpoint_wal_level: Option<usize>,
    /// `checkPointCopy.logicalDecodingEnabled` (19).
    logical_decoding: Option<usize>,
    checkpoint_time: usize,
    min_recovery_point: usize,
    wal_level: usize,
    max_align: usize,
    float_format: usize,
    blcksz: usize,
    xlog_blcksz: usize,
    xlog_seg_size: usize,
    data_checksum_version: usize,
    crc: usize,
}

/// PostgreSQL 13–16 (1300).
const L1300: Layout = Layout {
    name: "1300",
    checkpoint_wal_level: None,
    logical_decoding: None,
    checkpoint_time: 104,
    min_recovery_point: 136,
    wal_level: 172,
    max_align: 204,
    float_format: 208,
    blcksz: 216,
    xlog_blcksz: 224,
    xlog_seg_size: 228,
    data_checksum_version: 252,
    crc: 288,
};

/// PostgreSQL 17 (1700): `CheckPoint.wal_level` in former padding, nothing
/// else moves.
const L1700: Layout = Layout {
    name: "1700",
    checkpoint_wal_level: Some(60),
    ..L1300
};

/// PostgreSQL 18 (1800): `default_char_signedness` after
/// `data_checksum_version` pushes the nonce to 257 and the CRC to 292.
const L1800: Layout = Layout {
    name: "1800",
    crc: 292,
    ..L1700
};

/// PostgreSQL 19 (the betas' 1902): `CheckPoint` grows to 96 bytes
/// (`logicalDecodingEnabled`, a 64-bit `nextMultiOffset`), and
/// `slru_pages_per_segment` follows `relseg_size`.
const L19: Layout = Layout {
    name: "19",
    checkpoint_wal_level: Some(60),
    logical_decoding: Some(64),
    checkpoint_time: 112,
    min_recovery_point: 144,
    wal_level: 180,
    max_align: 212,
    float_format: 216,
    blcksz: 224,
    xlog_blcksz: 236,
    xlog_seg_size: 240,
    data_checksum_version: 264,
    crc: 304,
};

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

const STATE_NAMES: [(ClusterState, &str); 7] = [
    (ClusterState::StartingUp, "starting up"),
    (ClusterState::ShutDown, "shut down"),
    (ClusterState::ShutDownInRecovery, "shut down in recovery"),
    (ClusterState::ShuttingDown, "shutting down"),
    (ClusterState::InCrashRecovery, "in crash recovery"),
    (ClusterState::InArchiveRecovery, "in archive recovery"),
    (ClusterState::InProduction, "in production"),
];

impl ClusterState {
    fn from_raw(v: u32) -> ClusterState {
        STATE_NAMES
            .get(v as usize)
            .map(|(s, _)| *s)
            .unwrap_or(ClusterState::Unknown(v))
    }

    fn raw(self) -> u32 {
        match self {
            ClusterState::Unknown(v) => v,
            s => STATE_NAMES.iter().position(|(x, _)| *x == s).unwrap_or(0) as u32,
        }
    }

    /// As `pg_controldata` prints it.
    pub fn describe(self) -> String {
        match self {
            ClusterState::Unknown(v) => format!("unrecognized status code {v}"),
            s => STATE_NAMES
                .iter()
                .find(|(x, _)| *x == s)
                .map(|(_, n)| n.to_string())
                .unwrap_or_default(),
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
    /// PostgreSQL 19: logical decoding was on at the last checkpoint (a
    /// logical slot raised `effective_wal_level` above `wal_level`).
    pub logical_decoding_enabled: Option<bool>,
    pub block_size: u32,
    pub wal_block_size: u32,
    pub wal_segment_size: u32,
    pub data_checksum_version: u32,
    /// How the file was read: the layout (`1300`, `1700`, `1800`, `19`,
    /// with `crc at N` when found by its checksum), or `pg_controldata`.
    pub layout: String,
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

    /// The major version, from the catalog version: the release whose
    /// catalog version is the first at or above it (a development or beta
    /// cluster carries a value between two releases'). `PG_VERSION` says it
    /// better; this is for a data directory without one.
    pub fn major_version(&self) -> Option<u32> {
        if (1900..2000).contains(&self.pg_control_version) {
            return Some(19);
        }
        const RELEASES: [(u32, u32); 7] = [
            (13, 202_007_201),
            (14, 202_107_181),
            (15, 202_209_061),
            (16, 202_307_071),
            (17, 202_406_281),
            (18, 202_506_291),
            (19, 202_605_131),
        ];
        RELEASES
            .iter()
            .find(|(_, cat)| self.catalog_version <= *cat)
            .map(|(m, _)| *m)
    }
}

/// Why bytes are not a control file walg can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("pg_control is {0} bytes, too short (expected 8192)")]
    TooShort(usize),
    #[error(
        "pg_control version {0} is not one walg knows, and no known layout (1300, 1700, 1800, 19) \
         has a matching CRC-32C; refusing to guess its layout"
    )]
    UnknownVersion(u32),
    #[error(
        "pg_control checksum mismatch (stored {stored:08x}, computed {computed:08x}): \
         the file is corrupt or was written by a machine of another byte order"
    )]
    Crc { stored: u32, computed: u32 },
    #[error("pg_control was written with another byte order or float format")]
    ForeignFormat,
    #[error("pg_controldata output: {0}")]
    Controldata(String),
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

fn f64_at(b: &[u8], off: usize) -> f64 {
    f64::from_bits(u64_at(b, off))
}

/// The layout a `pg_control_version` is known to have.
fn known_layout(version: u32) -> Option<&'static Layout> {
    match version {
        1300 => Some(&L1300),
        1700 => Some(&L1700),
        1800 => Some(&L1800),
        1902 => Some(&L19),
        _ => None,
    }
}

/// The fields that tell a right layout from a wrong one.
fn sane(b: &[u8], l: &Layout) -> bool {
    let pow2_in = |v: u32, lo: u32, hi: u32| v.is_power_of_two() && (lo..=hi).contains(&v);
    f64_at(b, l.float_format) == FLOAT_FORMAT
        && u32_at(b, l.max_align) == 8
        && pow2_in(u32_at(b, l.blcksz), 1024, 32768)
        && pow2_in(u32_at(b, l.xlog_blcksz), 1024, 65536)
        && crate::wal::is_valid_segment_size(u64::from(u32_at(b, l.xlog_seg_size)))
}

fn crc_matches(b: &[u8], at: usize) -> bool {
    u32_at(b, at) == crc32c(&b[..at])
}

/// Parses and checks a control file's bytes.
///
/// A known version is read with its layout and must have a matching CRC.
/// Any other version (19's final one, a future one) is read with the first
/// known layout, newest first, whose CRC matches at its offset or at a later
/// 4-byte boundary below `PG_CONTROL_MAX_SAFE_SIZE`, and whose fields are
/// sane; [`ControlFile::layout`] says which.
pub fn parse(bytes: &[u8]) -> Result<ControlFile, ControlError> {
    if bytes.len() < MAX_SAFE_SIZE {
        return Err(ControlError::TooShort(bytes.len()));
    }
    let version = u32_at(bytes, 8);
    if let Some(l) = known_layout(version) {
        let stored = u32_at(bytes, l.crc);
        let computed = crc32c(&bytes[..l.crc]);
        if stored != computed {
            return Err(ControlError::Crc { stored, computed });
        }
        if f64_at(bytes, l.float_format) != FLOAT_FORMAT {
            return Err(ControlError::ForeignFormat);
        }
        return Ok(read_fields(bytes, l, l.name.to_string()));
    }
    // 19's final layout is expected to be the betas' (any 19xx tries it
    // first); a future version most likely appends to 18's or 19's.
    for l in [&L19, &L1800, &L1700, &L1300] {
        if !sane(bytes, l) {
            continue;
        }
        for at in (l.crc..MAX_SAFE_SIZE - 4).step_by(4) {
            if crc_matches(bytes, at) {
                let name = if at == l.crc {
                    format!("{} (for version {version}, by its CRC)", l.name)
                } else {
                    format!("{} (for version {version}, CRC at {at})", l.name)
                };
                return Ok(read_fields(bytes, l, name));
            }
        }
    }
    Err(ControlError::UnknownVersion(version))
}

fn read_fields(bytes: &[u8], l: &Layout, layout: String) -> ControlFile {
    ControlFile {
        system_identifier: u64_at(bytes, 0),
        pg_control_version: u32_at(bytes, 8),
        catalog_version: u32_at(bytes, 12),
        state: ClusterState::from_raw(u32_at(bytes, 16)),
        time: u64_at(bytes, 24) as i64,
        checkpoint: Lsn(u64_at(bytes, 32)),
        redo: Lsn(u64_at(bytes, 40)),
        timeline: u32_at(bytes, 48),
        prev_timeline: u32_at(bytes, 52),
        checkpoint_time: u64_at(bytes, l.checkpoint_time) as i64,
        min_recovery_point: Lsn(u64_at(bytes, l.min_recovery_point)),
        wal_level: u32_at(bytes, l.wal_level),
        logical_decoding_enabled: l.logical_decoding.map(|o| bytes[o] != 0),
        block_size: u32_at(bytes, l.blcksz),
        wal_block_size: u32_at(bytes, l.xlog_blcksz),
        wal_segment_size: u32_at(bytes, l.xlog_seg_size),
        data_checksum_version: u32_at(bytes, l.data_checksum_version),
        layout,
    }
}

/// Builds control-file bytes in the layout of `c.pg_control_version`
/// (1300, 1700, 1800, or any 19xx for 19's), for tests and tools that need
/// a synthetic one.
pub fn encode(c: &ControlFile) -> Vec<u8> {
    let l = match c.pg_control_version {
        1700 => &L1700,
        1800 => &L1800,
        1900..=1999 => &L19,
        _ => &L1300,
    };
    let mut b = vec![0u8; 8192];
    let put32 =
        |b: &mut Vec<u8>, off: usize, v: u32| b[off..off + 4].copy_from_slice(&v.to_le_bytes());
    let put64 =
        |b: &mut Vec<u8>, off: usize, v: u64| b[off..off + 8].copy_from_slice(&v.to_le_bytes());
    put64(&mut b, 0, c.system_identifier);
    put32(&mut b, 8, c.pg_control_version);
    put32(&mut b, 12, c.catalog_version);
    put32(&mut b, 16, c.state.raw());
    put64(&mut b, 24, c.time as u64);
    put64(&mut b, 32, c.checkpoint.0);
    put64(&mut b, 40, c.redo.0);
    put32(&mut b, 48, c.timeline);
    put32(&mut b, 52, c.prev_timeline);
    b[56] = 1; // fullPageWrites
    if let Some(o) = l.checkpoint_wal_level {
        put32(&mut b, o, c.wal_level);
    }
    if let Some(o) = l.logical_decoding {
        b[o] = u8::from(c.logical_decoding_enabled == Some(true));
    }
    put64(&mut b, l.checkpoint_time, c.checkpoint_time as u64);
    put64(&mut b, l.min_recovery_point, c.min_recovery_point.0);
    put32(&mut b, l.wal_level, c.wal_level);
    put32(&mut b, l.max_align, 8);
    put64(&mut b, l.float_format, FLOAT_FORMAT.to_bits());
    put32(&mut b, l.blcksz, c.block_size);
    put32(&mut b, l.xlog_blcksz, c.wal_block_size);
    put32(&mut b, l.xlog_seg_size, c.wal_segment_size);
    put32(&mut b, l.data_checksum_version, c.data_checksum_version);
    let crc = crc32c(&b[..l.crc]);
    put32(&mut b, l.crc, crc);
    b
}

/// Reads what `pg_controldata` printed (run with `LC_ALL=C` and `TZ=UTC`,
/// so that its `%c` times are in a known form and zone).
///
/// Output with a `WARNING` (a CRC or version mismatch: the binary is not
/// the cluster's version, "the results below are untrustworthy") is
/// refused, as is output missing the REDO pointer, the timeline or the
/// segment size.
pub fn parse_controldata(text: &str) -> Result<ControlFile, ControlError> {
    let bad = |m: String| ControlError::Controldata(m);
    if let Some(w) = text.lines().find(|l| l.starts_with("WARNING")) {
        return Err(bad(format!("refused: {}", w.trim())));
    }
    let fields: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    let get = |k: &str| fields.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
    let need = |k: &str| get(k).ok_or_else(|| bad(format!("no {k:?} line")));
    let num = |k: &str| -> Result<u64, ControlError> {
        need(k)?
            .parse()
            .map_err(|_| bad(format!("{k:?} is not a number")))
    };
    let lsn = |k: &str| -> Result<Lsn, ControlError> {
        need(k)?
            .parse()
            .map_err(|_| bad(format!("{k:?} is not an LSN")))
    };
    let opt_num = |k: &str| get(k).and_then(|v| v.parse::<u64>().ok());
    let time = |k: &str| get(k).and_then(parse_c_time).unwrap_or(0);
    let state = match get("Database cluster state") {
        Some(s) => STATE_NAMES
            .iter()
            .find(|(_, n)| *n == s)
            .map(|(st, _)| *st)
            .unwrap_or(ClusterState::Unknown(u32::MAX)),
        None => ClusterState::Unknown(u32::MAX),
    };
    let wal_level = match get("wal_level setting") {
        Some("minimal") => 0,
        Some("replica") => 1,
        Some("logical") => 2,
        _ => u32::MAX,
    };
    let seg = num("Bytes per WAL segment")?;
    if !crate::wal::is_valid_segment_size(seg) {
        return Err(bad(format!("segment size {seg} is not a valid one")));
    }
    Ok(ControlFile {
        system_identifier: num("Database system identifier")?,
        pg_control_version: num("pg_control version number")? as u32,
        catalog_version: opt_num("Catalog version number").unwrap_or(0) as u32,
        state,
        time: time("pg_control last modified"),
        checkpoint: lsn("Latest checkpoint location")?,
        redo: lsn("Latest checkpoint's REDO location")?,
        timeline: num("Latest checkpoint's TimeLineID")? as u32,
        prev_timeline: opt_num("Latest checkpoint's PrevTimeLineID").unwrap_or(0) as u32,
        checkpoint_time: time("Time of latest checkpoint"),
        min_recovery_point: get("Minimum recovery ending location")
            .and_then(|v| v.parse().ok())
            .unwrap_or(Lsn(0)),
        wal_level,
        logical_decoding_enabled: None,
        block_size: opt_num("Database block size").unwrap_or(8192) as u32,
        wal_block_size: opt_num("WAL block size").unwrap_or(8192) as u32,
        wal_segment_size: seg as u32,
        data_checksum_version: opt_num("Data page checksum version").unwrap_or(0) as u32,
        layout: "pg_controldata".into(),
    })
}

/// `strftime("%c")` in the C locale, read as UTC: `Mon Nov 23 14:53:21 2026`.
fn parse_c_time(s: &str) -> Option<i64> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [_, mon, day, hms, year] = parts.as_slice() else {
        return None;
    };
    let month = MONTHS.iter().position(|m| m == mon)? as i64 + 1;
    let day: i64 = day.parse().ok()?;
    let year: i64 = year.parse().ok()?;
    let mut t = hms.split(':').map(|x| x.parse::<i64>().ok());
    let (h, m, sec) = (t.next()??, t.next()??, t.next()??);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86400 + h * 3600 + m * 60 + sec)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `global/pg_control` of real clusters made with `initdb --wal-segsize=1`
    /// and stopped cleanly (see `testdata/README.md`).
    const PG13: &[u8] = include_bytes!("../../testdata/pg_control.pg13");
    const PG15: &[u8] = include_bytes!("../../testdata/pg_control.pg15");
    const PG16: &[u8] = include_bytes!("../../testdata/pg_control.pg16");
    const PG17: &[u8] = include_bytes!("../../testdata/pg_control.pg17");
    const PG18: &[u8] = include_bytes!("../../testdata/pg_control.pg18");
    /// `LC_ALL=C TZ=UTC pg_controldata` (15) on the 15 file.
    const CONTROLDATA15: &str = include_str!("../../testdata/pg_controldata.pg15.txt");

    fn lsn(s: &str) -> Lsn {
        s.parse().expect("lsn")
    }

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
        assert_eq!(c.redo, lsn("0/616DD8"));
        assert_eq!(c.checkpoint, lsn("0/616DD8"));
        assert_eq!(c.wal_level_name(), "logical");
        assert_eq!(c.layout, "1300");
        assert_eq!(c.major_version(), Some(15));
    }

    /// Files of real 13, 16, 17 and 18 servers, with the values their
    /// `pg_control_system()` reported before the clean shutdown.
    #[test]
    fn real_files_of_every_layout() {
        // (file, version, layout, system id, catalog, major, REDO, checksums)
        type Case = (
            &'static [u8],
            u32,
            &'static str,
            u64,
            u32,
            u32,
            &'static str,
            u32,
        );
        let cases: [Case; 4] = [
            (
                PG13,
                1300,
                "1300",
                7_716_071_917_402_171_845,
                202_007_201,
                13,
                "0/D00108",
                0,
            ),
            (
                PG16,
                1300,
                "1300",
                7_716_071_924_906_826_287,
                202_307_071,
                16,
                "0/D00108",
                0,
            ),
            (
                PG17,
                1700,
                "1700",
                7_716_071_932_284_009_114,
                202_406_281,
                17,
                "0/C00128",
                0,
            ),
            // 18 enables data checksums by default.
            (
                PG18,
                1800,
                "1800",
                7_716_071_939_522_362_384,
                202_506_291,
                18,
                "0/1000128",
                1,
            ),
        ];
        for (bytes, version, layout, sysid, cat, major, redo, checksums) in cases {
            let c = parse(bytes).unwrap_or_else(|e| panic!("{version}: {e}"));
            assert_eq!(c.pg_control_version, version);
            assert_eq!(c.layout, layout);
            assert_eq!(c.system_identifier, sysid, "{version}");
            assert_eq!(c.catalog_version, cat);
            assert_eq!(c.major_version(), Some(major));
            assert_eq!(c.state, ClusterState::ShutDown);
            assert_eq!(c.redo, lsn(redo), "{version}");
            assert_eq!(
                c.checkpoint, c.redo,
                "a shutdown checkpoint is its own REDO"
            );
            assert_eq!(c.timeline, 1);
            assert_eq!(c.wal_segment_size, 1 << 20);
            assert_eq!(c.wal_block_size, 8192);
            assert_eq!(c.wal_level_name(), "logical");
            assert_eq!(c.data_checksum_version, checksums, "{version}");
            assert!(c.checkpoint_time > 1_700_000_000, "{version}");
            assert_eq!(c.logical_decoding_enabled, None);
            let again = parse(&encode(&c)).expect("parse encoded");
            assert_eq!(again, c, "{version} encode round trip");
        }
    }

    fn sample(version: u32) -> ControlFile {
        ControlFile {
            system_identifier: 7_500_000_000_000_000_001,
            pg_control_version: version,
            catalog_version: 202_605_131,
            state: ClusterState::InProduction,
            time: 1_800_000_100,
            checkpoint: lsn("1/2000060"),
            redo: lsn("1/2000028"),
            timeline: 3,
            prev_timeline: 2,
            checkpoint_time: 1_800_000_000,
            min_recovery_point: Lsn(0),
            wal_level: 1,
            logical_decoding_enabled: Some(true),
            block_size: 8192,
            wal_block_size: 8192,
            wal_segment_size: 16 << 20,
            data_checksum_version: 1,
            layout: "19".into(),
        }
    }

    /// 19's layout, written from the 19 structs' offsets (the betas' 1902;
    /// see POSTGRES_VERSIONS.md §2.3 and §7).
    #[test]
    fn nineteen_layout_from_bytes() {
        let c = sample(1902);
        let b = encode(&c);
        // The offsets that moved in 19, checked on the bytes themselves.
        assert_eq!(u64_at(&b, 112), 1_800_000_000, "checkpoint time");
        assert_eq!(u32_at(&b, 180), 1, "wal_level");
        assert_eq!(u32_at(&b, 240), 16 << 20, "xlog_seg_size");
        assert_eq!(u32_at(&b, 264), 1, "data_checksum_version");
        assert_eq!(b[64], 1, "logicalDecodingEnabled");
        assert_eq!(u32_at(&b, 304), crc32c(&b[..304]), "crc");
        let got = parse(&b).expect("19");
        assert_eq!(got, c);
        assert_eq!(got.major_version(), Some(19));

        // A 19 GA whose version is not the betas' reads the same way,
        // found by its CRC.
        let b = encode(&sample(1907));
        let got = parse(&b).expect("19 GA");
        assert_eq!(got.redo, c.redo);
        assert_eq!(got.wal_segment_size, 16 << 20);
        assert_eq!(got.checkpoint_time, 1_800_000_000);
        assert_eq!(got.layout, "19 (for version 1907, by its CRC)");
        assert_eq!(got.major_version(), Some(19));
    }

    #[test]
    fn unknown_versions_are_read_only_by_a_matching_crc() {
        // A 19 with a field appended before the CRC (as "Record initial
        // state of data checksums in controlfile" proposed): the CRC moves.
        let mut b = encode(&sample(1905));
        b[304..308].copy_from_slice(&[1, 0, 0, 0]);
        let crc = crc32c(&b[..308]);
        b[308..312].copy_from_slice(&crc.to_le_bytes());
        let got = parse(&b).expect("moved CRC");
        assert_eq!(got.layout, "19 (for version 1905, CRC at 308)");
        assert_eq!(got.timeline, 3);

        // A "version 2000" written in 18's layout.
        let mut c18 = sample(1800);
        c18.logical_decoding_enabled = None;
        let mut b = encode(&c18);
        b[8..12].copy_from_slice(&2000u32.to_le_bytes());
        let crc = crc32c(&b[..292]);
        b[292..296].copy_from_slice(&crc.to_le_bytes());
        let got = parse(&b).expect("18's layout");
        assert_eq!(got.layout, "1800 (for version 2000, by its CRC)");
        assert_eq!(got.checkpoint_time, 1_800_000_000);

        // No matching CRC anywhere: refused, never guessed.
        let mut b = PG15.to_vec();
        b[8..12].copy_from_slice(&2000u32.to_le_bytes());
        assert_eq!(parse(&b), Err(ControlError::UnknownVersion(2000)));
        let msg = parse(&b).unwrap_err().to_string();
        assert!(msg.contains("1300, 1700, 1800, 19"), "{msg}");
        // Big-endian bytes of 1300 read as little-endian are not 1300 either.
        let mut b = PG15.to_vec();
        b[8..12].copy_from_slice(&1300u32.to_be_bytes());
        assert!(matches!(parse(&b), Err(ControlError::UnknownVersion(_))));
        assert_eq!(parse(&PG15[..100]), Err(ControlError::TooShort(100)));
    }

    #[test]
    fn flipped_byte_is_a_crc_error() {
        for (file, crc_at) in [(PG15, 288usize), (PG17, 288), (PG18, 292)] {
            for off in [0usize, 40, 100, crc_at - 1] {
                let mut b = file.to_vec();
                b[off] ^= 0x40;
                match parse(&b) {
                    Err(ControlError::Crc { .. }) => {}
                    other => panic!("flip at {off}: {other:?}"),
                }
            }
        }
        let mut b = PG15.to_vec();
        b[0] ^= 1;
        let msg = parse(&b).unwrap_err().to_string();
        assert!(msg.contains("checksum mismatch"), "{msg}");
        // 18's file read with 17's CRC offset would not match: the version
        // decides.
        let mut b = PG18.to_vec();
        b[8..12].copy_from_slice(&1700u32.to_le_bytes());
        assert!(matches!(parse(&b), Err(ControlError::Crc { .. })));
    }

    #[test]
    fn pg_controldata_output() {
        let c = parse_controldata(CONTROLDATA15).expect("parse");
        let file = parse(PG15).expect("file");
        assert_eq!(c.system_identifier, file.system_identifier);
        assert_eq!(c.pg_control_version, 1300);
        assert_eq!(c.catalog_version, file.catalog_version);
        assert_eq!(c.state, ClusterState::ShutDown);
        assert_eq!(c.redo, file.redo);
        assert_eq!(c.checkpoint, file.checkpoint);
        assert_eq!(c.timeline, 1);
        assert_eq!(c.wal_segment_size, 1 << 20);
        assert_eq!(c.wal_level_name(), "logical");
        assert_eq!(c.checkpoint_time, file.checkpoint_time, "%c read as UTC");
        assert_eq!(c.time, file.time);
        assert_eq!(c.layout, "pg_controldata");

        // Another version's binary warns that its results are untrustworthy.
        let warned = format!(
            "WARNING: Calculated CRC checksum does not match value stored in file.\n{CONTROLDATA15}"
        );
        let msg = parse_controldata(&warned).unwrap_err().to_string();
        assert!(msg.contains("refused") && msg.contains("CRC"), "{msg}");
        let cut: String = CONTROLDATA15
            .lines()
            .filter(|l| !l.starts_with("Latest checkpoint's REDO location"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(parse_controldata(&cut)
            .unwrap_err()
            .to_string()
            .contains("REDO"));
        assert_eq!(parse_c_time("Thu Jan  1 00:00:00 1970"), Some(0));
        assert_eq!(
            parse_c_time("Sun Dec  6 06:20:01 2026"),
            Some(1_796_538_001)
        );
        assert_eq!(parse_c_time("yesterday"), None);
    }
}
