//! The bucket layout, shared with WAL-G: `<prefix>/wal_005/<file name>[.<ext>]`.
//!
//! The storage prefix is the store's business; keys here are relative to it.

use std::fmt;

use crate::wal::WalName;

/// Directory of WAL files under the storage prefix (WAL-G's `wal_005`).
pub const WAL_PREFIX: &str = "wal_005/";

/// A compression method and its file extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    /// Stored under the bare file name.
    None,
    #[default]
    Lz4,
    Zstd,
    Brotli,
}

/// Why a compression setting was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown compression method {0:?} in WALG_COMPRESSION_METHOD (known: lz4, zstd, brotli, none)"
)]
pub struct UnknownCompression(pub String);

impl Compression {
    /// Every method, in the order wal-fetch probes the non-preferred ones.
    pub const ALL: [Compression; 4] = [
        Compression::Lz4,
        Compression::Zstd,
        Compression::Brotli,
        Compression::None,
    ];

    /// The extension appended to the file name, `None` for uncompressed.
    pub fn extension(self) -> Option<&'static str> {
        match self {
            Compression::None => None,
            Compression::Lz4 => Some("lz4"),
            Compression::Zstd => Some("zst"),
            Compression::Brotli => Some("br"),
        }
    }

    pub fn from_extension(ext: &str) -> Option<Compression> {
        match ext {
            "lz4" => Some(Compression::Lz4),
            "zst" => Some(Compression::Zstd),
            "br" => Some(Compression::Brotli),
            _ => None,
        }
    }

    /// Parses a `WALG_COMPRESSION_METHOD` value.
    pub fn from_setting(value: &str) -> Result<Compression, UnknownCompression> {
        match value.trim().to_ascii_lowercase().as_str() {
            "lz4" => Ok(Compression::Lz4),
            "zstd" | "zst" => Ok(Compression::Zstd),
            "brotli" | "br" => Ok(Compression::Brotli),
            "none" | "" => Ok(Compression::None),
            other => Err(UnknownCompression(other.to_string())),
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::None => "none",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
            Compression::Brotli => "brotli",
        })
    }
}

/// Key of a WAL file stored with a compression.
pub fn wal_key(name: &WalName, compression: Compression) -> String {
    match compression.extension() {
        Some(ext) => format!("{WAL_PREFIX}{name}.{ext}"),
        None => format!("{WAL_PREFIX}{name}"),
    }
}

/// Splits a stored key back into the WAL name and its compression, if the key
/// is a WAL file in the layout (an unknown extension yields `None`).
pub fn parse_wal_key(key: &str) -> Option<(WalName, Compression)> {
    let file = key.strip_prefix(WAL_PREFIX)?;
    if let Ok(name) = WalName::parse(file) {
        return Some((name, Compression::None));
    }
    let (stem, ext) = file.rsplit_once('.')?;
    let compression = Compression::from_extension(ext)?;
    Some((WalName::parse(stem).ok()?, compression))
}

/// Keys to probe when fetching `name`: the configured compression first, then
/// the others, then the bare name, as WAL-G does.
pub fn fetch_candidates(name: &WalName, preferred: Compression) -> Vec<(String, Compression)> {
    let mut order = vec![preferred];
    order.extend(
        Compression::ALL
            .iter()
            .copied()
            .filter(|c| *c != preferred && *c != Compression::None),
    );
    if preferred != Compression::None {
        order.push(Compression::None);
    }
    order.into_iter().map(|c| (wal_key(name, c), c)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> WalName {
        WalName::parse(s).expect("valid name")
    }

    #[test]
    fn keys_match_walg_layout() {
        let n = name("000000010000000000000003");
        assert_eq!(
            wal_key(&n, Compression::Lz4),
            "wal_005/000000010000000000000003.lz4"
        );
        assert_eq!(
            wal_key(&n, Compression::Zstd),
            "wal_005/000000010000000000000003.zst"
        );
        assert_eq!(
            wal_key(&n, Compression::Brotli),
            "wal_005/000000010000000000000003.br"
        );
        assert_eq!(
            wal_key(&n, Compression::None),
            "wal_005/000000010000000000000003"
        );
        assert_eq!(
            wal_key(&name("00000002.history"), Compression::Lz4),
            "wal_005/00000002.history.lz4"
        );
    }

    #[test]
    fn parses_keys_back() {
        assert_eq!(
            parse_wal_key("wal_005/000000010000000000000003.zst"),
            Some((name("000000010000000000000003"), Compression::Zstd))
        );
        assert_eq!(
            parse_wal_key("wal_005/00000002.history"),
            Some((name("00000002.history"), Compression::None))
        );
        assert_eq!(parse_wal_key("wal_005/000000010000000000000003.lzma"), None);
        assert_eq!(parse_wal_key("basebackups_005/x"), None);
    }

    #[test]
    fn fetch_order_is_preferred_then_others_then_bare() {
        let n = name("000000010000000000000003");
        let keys: Vec<String> = fetch_candidates(&n, Compression::Zstd)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(
            keys,
            [
                "wal_005/000000010000000000000003.zst",
                "wal_005/000000010000000000000003.lz4",
                "wal_005/000000010000000000000003.br",
                "wal_005/000000010000000000000003",
            ]
        );
        let keys = fetch_candidates(&n, Compression::None);
        assert_eq!(keys.len(), 4);
        assert_eq!(keys[0].0, "wal_005/000000010000000000000003");
    }
}
