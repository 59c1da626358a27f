//! Server log lines about WAL retention, as every version 13 to 19 writes
//! them.
//!
//! PostgreSQL 17 began quoting setting names in its messages
//! (`"archive_mode" enabled, yet archiving is not configured`, where 15 and
//! 16 wrote `archive_mode enabled, ...`), and the wording itself changed
//! across versions (13–14 say `archive_command is not set`; 13–15 say
//! `invalidating slot "s1" because its restart_lsn ... exceeds
//! max_slot_wal_keep_size`, 16+ `invalidating obsolete replication slot
//! "s1"`). [`classify`] takes every form: it drops the quotes around setting
//! names first ([`unquote_settings`]), then matches the unquoted wording of
//! each version. Anything in walg or its tests that matches server log text
//! goes through here, so a new version's wording is taught in one place.
//!
//! Text in, text out: no I/O.

/// Settings whose names PostgreSQL 17+ quotes in the messages below.
const SETTINGS: &[&str] = &[
    "archive_mode",
    "archive_command",
    "archive_library",
    "max_slot_wal_keep_size",
    "idle_replication_slot_timeout",
    "wal_keep_size",
    "wal_level",
    "summarize_wal",
    "max_wal_size",
    "checkpoint_timeout",
];

/// What a server log line says about WAL retention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogEvent {
    /// `archive_mode` on, nothing to archive with: `.ready` files pile up
    /// unless an external program consumes them.
    ArchiveNotConfigured,
    /// 16+: both `archive_command` and `archive_library` set (FATAL for
    /// the archiver).
    ArchiveBothSet,
    /// One failed attempt of `archive_command`.
    ArchiveCommandFailed,
    /// Three failed attempts in a row on one file.
    ArchiveFailedTooManyTimes { file: String },
    /// A slot was invalidated (by `max_slot_wal_keep_size`, or 18's
    /// `idle_replication_slot_timeout`).
    SlotInvalidated { slot: String, idle_timeout: bool },
    /// Checkpoints come faster than `checkpoint_warning`.
    CheckpointsTooFrequent,
}

/// The line with the quotes around known setting names removed:
/// `"archive_mode" enabled` becomes `archive_mode enabled`.
pub fn unquote_settings(line: &str) -> String {
    let mut out = line.to_string();
    for s in SETTINGS {
        out = out.replace(&format!("\"{s}\""), s);
    }
    out
}

/// The first double-quoted token after `after`.
fn quoted_after(line: &str, after: &str) -> Option<String> {
    let rest = &line[line.find(after)? + after.len()..];
    let start = rest.find('"')? + 1;
    let len = rest[start..].find('"')?;
    Some(rest[start..start + len].to_string())
}

/// Recognises a server log line (the message part, or a whole line with
/// its prefix), in any version's wording and quoting.
pub fn classify(line: &str) -> Option<LogEvent> {
    let l = unquote_settings(line);
    if l.contains("archive_mode enabled, yet archiving is not configured")
        || l.contains("archive_mode enabled, yet archive_command is not set")
    {
        return Some(LogEvent::ArchiveNotConfigured);
    }
    if l.contains("both archive_command and archive_library set") {
        return Some(LogEvent::ArchiveBothSet);
    }
    if l.contains("failed too many times, will try again later") {
        let file = quoted_after(&l, "archiving write-ahead log file").unwrap_or_default();
        return Some(LogEvent::ArchiveFailedTooManyTimes { file });
    }
    if l.contains("archive command failed with exit code")
        || l.contains("archive command was terminated by signal")
        || l.contains("archive command failed with unrecognized status")
    {
        return Some(LogEvent::ArchiveCommandFailed);
    }
    if l.contains("invalidating obsolete replication slot") || l.contains("invalidating slot \"") {
        let slot = quoted_after(&l, "slot").unwrap_or_default();
        return Some(LogEvent::SlotInvalidated {
            slot,
            idle_timeout: false,
        });
    }
    if l.contains("exceeds the configured idle_replication_slot_timeout duration") {
        // 18's DETAIL line of an idle-timeout invalidation.
        return Some(LogEvent::SlotInvalidated {
            slot: String::new(),
            idle_timeout: true,
        });
    }
    if l.contains("checkpoints are occurring too frequently") {
        return Some(LogEvent::CheckpointsTooFrequent);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(line: &str, expected: Option<LogEvent>) {
        assert_eq!(classify(line), expected, "{line}");
    }

    #[test]
    fn every_version_wording_and_quoting() {
        use LogEvent::*;
        // 13–14, 15–16, 17+.
        check(
            "WARNING:  archive_mode enabled, yet archive_command is not set",
            Some(ArchiveNotConfigured),
        );
        check(
            "2026-12-06 06:19:52 UTC [42] WARNING:  archive_mode enabled, yet archiving is not configured",
            Some(ArchiveNotConfigured),
        );
        check(
            "WARNING:  \"archive_mode\" enabled, yet archiving is not configured",
            Some(ArchiveNotConfigured),
        );
        check(
            "FATAL:  both archive_command and archive_library set",
            Some(ArchiveBothSet),
        );
        check(
            "FATAL:  both \"archive_command\" and \"archive_library\" set",
            Some(ArchiveBothSet),
        );
        check(
            "LOG:  archive command failed with exit code 1",
            Some(ArchiveCommandFailed),
        );
        check(
            "WARNING:  archiving write-ahead log file \"000000010000000000000003\" failed too many times, will try again later",
            Some(ArchiveFailedTooManyTimes {
                file: "000000010000000000000003".into(),
            }),
        );
        // 13–15, then 16+ (with the setting quoted in 17+'s DETAIL/HINT).
        check(
            "LOG:  invalidating slot \"s1\" because its restart_lsn 0/15007C8 exceeds max_slot_wal_keep_size",
            Some(SlotInvalidated {
                slot: "s1".into(),
                idle_timeout: false,
            }),
        );
        check(
            "LOG:  invalidating obsolete replication slot \"lost_1\"",
            Some(SlotInvalidated {
                slot: "lost_1".into(),
                idle_timeout: false,
            }),
        );
        check(
            "DETAIL:  The slot's idle time of 0min 02s exceeds the configured \"idle_replication_slot_timeout\" duration of 0min 01s.",
            Some(SlotInvalidated {
                slot: String::new(),
                idle_timeout: true,
            }),
        );
        check(
            "LOG:  checkpoints are occurring too frequently (2 seconds apart)",
            Some(CheckpointsTooFrequent),
        );
        check("LOG:  checkpoint complete: wrote 3 buffers", None);
        // A slot named like a setting keeps its quotes elsewhere.
        assert_eq!(
            unquote_settings("HINT:  You might need to increase \"max_slot_wal_keep_size\"."),
            "HINT:  You might need to increase max_slot_wal_keep_size."
        );
    }
}
