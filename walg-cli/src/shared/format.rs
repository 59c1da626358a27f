//! Sizes and durations for people, the same way in every command.
//!
//! Only formatting: no parsing (durations and sizes in settings are parsed
//! in [`super::config`], in flags by clap).

use std::time::SystemTime;

/// Bytes in MiB with one decimal (`16.0 MiB`): the unit of the per-file
/// log lines of wal-push and wal-fetch.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// Bytes for people: `812 bytes`, `13.7 KiB`, `1.2 MiB`, `3.4 GiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// How long ago `t` was, in whole seconds (`3m 12s ago`), or `never`.
pub fn ago(t: Option<SystemTime>) -> String {
    match t.and_then(|t| SystemTime::now().duration_since(t).ok()) {
        Some(d) => format!(
            "{} ago",
            humantime::format_duration(std::time::Duration::from_secs(d.as_secs()))
        ),
        None => "never".into(),
    }
}
