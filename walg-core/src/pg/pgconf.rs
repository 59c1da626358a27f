//! PostgreSQL's configuration file syntax: `postgresql.conf`,
//! `postgresql.auto.conf` and what they `include`, and the units of the
//! settings that govern WAL retention.
//!
//! Used when the server cannot be asked (`walg wal-status --pgdata` with the
//! server down). The file reading is the caller's: [`load`] takes a reader
//! function, so this module does no I/O. Deliberately not reproduced:
//! command-line `-c` options and settings from outside the data directory
//! that the caller did not pass in (Debian's `/etc/postgresql/...`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One `name = value` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub value: String,
    pub file: PathBuf,
    pub line: usize,
}

/// Parses the lines of one file. Names are lower-cased, values unquoted;
/// malformed lines are returned as errors (`file:line: message`) and skipped.
pub fn parse(text: &str, file: &Path) -> (Vec<Entry>, Vec<String>) {
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        match parse_line(raw) {
            Ok(None) => {}
            Ok(Some((name, value))) => entries.push(Entry {
                name,
                value,
                file: file.to_path_buf(),
                line: line_no,
            }),
            Err(e) => errors.push(format!("{}:{line_no}: {e}", file.display())),
        }
    }
    (entries, errors)
}

fn parse_line(raw: &str) -> Result<Option<(String, String)>, String> {
    let s = raw.trim_start();
    if s.is_empty() || s.starts_with('#') {
        return Ok(None);
    }
    let name_end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-'))
        .unwrap_or(s.len());
    if name_end == 0 {
        return Err(format!("cannot parse {raw:?}"));
    }
    let name = s[..name_end].to_ascii_lowercase();
    let mut rest = s[name_end..].trim_start();
    if let Some(r) = rest.strip_prefix('=') {
        rest = r.trim_start();
    }
    let value = if let Some(q) = rest.strip_prefix('\'') {
        let mut out = String::new();
        let mut chars = q.chars().peekable();
        let mut closed = false;
        while let Some(c) = chars.next() {
            match c {
                '\'' if chars.peek() == Some(&'\'') => {
                    chars.next();
                    out.push('\'');
                }
                '\'' => {
                    closed = true;
                    break;
                }
                '\\' => match chars.next() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some('r') => out.push('\r'),
                    Some(o) => out.push(o),
                    None => {}
                },
                c => out.push(c),
            }
        }
        if !closed {
            return Err(format!("unterminated quoted string in {raw:?}"));
        }
        out
    } else {
        let end = rest
            .find(|c: char| c.is_whitespace() || c == '#')
            .unwrap_or(rest.len());
        rest[..end].to_string()
    };
    Ok(Some((name, value)))
}

/// The effective settings of a set of files: the last value wins, as in
/// PostgreSQL.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub values: BTreeMap<String, Entry>,
    /// Lines that could not be parsed, includes that could not be read.
    pub problems: Vec<String>,
}

impl Settings {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(|e| e.value.as_str())
    }
}

/// Reads `postgresql.conf` then `postgresql.auto.conf` under `data_dir`,
/// following `include`, `include_if_exists` and `include_dir`, with the
/// given reader (`read(path)` for files, `list(dir)` for `include_dir`).
pub fn load(
    data_dir: &Path,
    read: &dyn Fn(&Path) -> std::io::Result<String>,
    list: &dyn Fn(&Path) -> std::io::Result<Vec<PathBuf>>,
) -> Settings {
    let mut s = Settings::default();
    for (name, required) in [("postgresql.conf", true), ("postgresql.auto.conf", false)] {
        load_file(&data_dir.join(name), required, 0, read, list, &mut s);
    }
    s
}

fn load_file(
    path: &Path,
    required: bool,
    depth: usize,
    read: &dyn Fn(&Path) -> std::io::Result<String>,
    list: &dyn Fn(&Path) -> std::io::Result<Vec<PathBuf>>,
    s: &mut Settings,
) {
    // PostgreSQL stops at 10 levels of nesting.
    if depth > 10 {
        s.problems
            .push(format!("{}: includes nested too deeply", path.display()));
        return;
    }
    let text = match read(path) {
        Ok(t) => t,
        Err(e) => {
            if required || e.kind() != std::io::ErrorKind::NotFound {
                s.problems.push(format!("read {}: {e}", path.display()));
            }
            return;
        }
    };
    let (entries, errors) = parse(&text, path);
    s.problems.extend(errors);
    let base = path.parent().unwrap_or(Path::new("."));
    for e in entries {
        let target = || {
            let p = PathBuf::from(&e.value);
            if p.is_absolute() {
                p
            } else {
                base.join(p)
            }
        };
        match e.name.as_str() {
            "include" => load_file(&target(), true, depth + 1, read, list, s),
            "include_if_exists" => load_file(&target(), false, depth + 1, read, list, s),
            "include_dir" => match list(&target()) {
                Ok(mut files) => {
                    files.retain(|f| {
                        f.extension().is_some_and(|x| x == "conf")
                            && !f
                                .file_name()
                                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                    });
                    files.sort();
                    for f in files {
                        load_file(&f, true, depth + 1, read, list, s);
                    }
                }
                Err(err) => s
                    .problems
                    .push(format!("list {}: {err}", target().display())),
            },
            _ => {
                s.values.insert(e.name.clone(), e);
            }
        }
    }
}

/// A memory setting in bytes (`wal_keep_size`, `max_wal_size`, ...), whose
/// bare numbers are in `default_unit` bytes (1 MiB for those). `-1` stays
/// negative (for `max_slot_wal_keep_size`: unlimited).
pub fn parse_bytes(value: &str, default_unit: i64) -> Option<i64> {
    let v = value.trim();
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '-' || c == '.'))
        .unwrap_or(v.len());
    let (num, unit) = (v[..split].trim(), v[split..].trim());
    let n: f64 = num.parse().ok()?;
    let mult: i64 = match unit {
        "" => default_unit,
        "B" => 1,
        "kB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        "TB" => 1 << 40,
        _ => return None,
    };
    if n < 0.0 {
        return Some(-1);
    }
    Some((n * mult as f64) as i64)
}

/// A time setting in seconds (`checkpoint_timeout`), bare numbers in
/// `default_unit` seconds.
pub fn parse_seconds(value: &str, default_unit: f64) -> Option<f64> {
    let v = value.trim();
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '-' || c == '.'))
        .unwrap_or(v.len());
    let (num, unit) = (v[..split].trim(), v[split..].trim());
    let n: f64 = num.parse().ok()?;
    let mult = match unit {
        "" => default_unit,
        "us" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "min" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        _ => return None,
    };
    Some(n * mult)
}

/// A boolean setting as PostgreSQL accepts it.
pub fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" | "t" | "y" => Some(true),
        "off" | "false" | "no" | "0" | "f" | "n" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_line(line: &str, expected: Option<(&str, &str)>) {
        let got = parse_line(line).expect("parse");
        assert_eq!(
            got,
            expected.map(|(a, b)| (a.to_string(), b.to_string())),
            "{line:?}"
        );
    }

    #[test]
    fn lines() {
        check_line("# comment", None);
        check_line("   ", None);
        check_line("archive_mode = on", Some(("archive_mode", "on")));
        check_line("Archive_Mode=on # trailing", Some(("archive_mode", "on")));
        check_line("wal_keep_size 64MB", Some(("wal_keep_size", "64MB")));
        check_line(
            "archive_command = 'walg --config ''/etc/w.json'' wal-push %p'",
            Some(("archive_command", "walg --config '/etc/w.json' wal-push %p")),
        );
        check_line(
            "archive_command = 'a\\'b' # x",
            Some(("archive_command", "a'b")),
        );
        check_line("archive_command = ''", Some(("archive_command", "")));
        assert!(parse_line("x = 'open").is_err());
    }

    #[test]
    fn last_value_wins_and_includes_are_followed() {
        let files: BTreeMap<PathBuf, &str> = [
            (
                "/d/postgresql.conf",
                "archive_mode = on\ninclude 'extra.conf'\ninclude_if_exists 'missing.conf'\ninclude_dir 'conf.d'\nwal_keep_size = 1GB\n",
            ),
            ("/d/extra.conf", "archive_command = 'false'\n"),
            ("/d/conf.d/a.conf", "wal_keep_size = 2GB\n"),
            ("/d/conf.d/b.conf", "max_wal_size = 3GB\n"),
            ("/d/postgresql.auto.conf", "archive_command = 'walg wal-push %p'\n"),
        ]
        .into_iter()
        .map(|(p, t)| (PathBuf::from(p), t))
        .collect();
        let read = |p: &Path| {
            files
                .get(p)
                .map(|t| t.to_string())
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
        };
        let list = |d: &Path| {
            Ok(files
                .keys()
                .filter(|p| p.parent() == Some(d))
                .cloned()
                .collect())
        };
        let s = load(Path::new("/d"), &read, &list);
        assert!(s.problems.is_empty(), "{:?}", s.problems);
        assert_eq!(s.get("archive_mode"), Some("on"));
        assert_eq!(s.get("archive_command"), Some("walg wal-push %p"));
        // conf.d came before the later line in postgresql.conf.
        assert_eq!(s.get("wal_keep_size"), Some("1GB"));
        assert_eq!(s.get("max_wal_size"), Some("3GB"));
    }

    #[test]
    fn units() {
        assert_eq!(parse_bytes("64MB", 1 << 20), Some(64 << 20));
        assert_eq!(parse_bytes("1GB", 1 << 20), Some(1 << 30));
        assert_eq!(parse_bytes("512", 1 << 20), Some(512 << 20));
        assert_eq!(parse_bytes("-1", 1 << 20), Some(-1));
        assert_eq!(parse_bytes("80 kB", 1 << 20), Some(80 << 10));
        assert_eq!(parse_bytes("5 lightyears", 1), None);
        assert_eq!(parse_seconds("5min", 1.0), Some(300.0));
        assert_eq!(parse_seconds("300", 1.0), Some(300.0));
        assert_eq!(parse_seconds("1h", 1.0), Some(3600.0));
        assert_eq!(parse_bool("On"), Some(true));
        assert_eq!(parse_bool("always"), None);
    }
}
