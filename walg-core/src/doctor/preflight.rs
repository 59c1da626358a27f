//! Rules of the pre-flight check (`walg check`) that need no I/O: whether a
//! server's `archive_command` / `restore_command` really call walg, and
//! whether `wal_level` / `archive_mode` let PostgreSQL archive at all.
//!
//! The command strings are read the way `/bin/sh` would split them (quotes,
//! backslashes, `VAR=value` prefixes, `&&`/`;`/`|` chains), which is enough
//! for the one-liners people put in `postgresql.conf`; anything cleverer
//! (a wrapper script) is reported as "does not call walg" so a person looks.
//!
//! What this module does not do: connect to PostgreSQL, read config files or
//! decide whether two config paths are the same file (the CLI does).

use std::fmt;

/// How a server command calls walg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalgCall {
    /// The program as written (`walg`, `/usr/bin/walg`).
    pub program: String,
    /// `VAR=value` assignments before the program, in order.
    pub env: Vec<(String, String)>,
    /// `--config FILE` given on the command line.
    pub config_flag: Option<String>,
    /// `wal-push`, `wal-fetch`, ...
    pub subcommand: String,
    /// The arguments after the subcommand (`%p`, or `%f %p`).
    pub args: Vec<String>,
}

impl WalgCall {
    /// The config file this call names, by flag or by `WALG_CONFIG_PATH=`;
    /// `None` means walg's default lookup.
    pub fn config(&self) -> Option<&str> {
        self.config_flag.as_deref().or_else(|| {
            self.env
                .iter()
                .rev()
                .find(|(k, _)| k == "WALG_CONFIG_PATH")
                .map(|(_, v)| v.as_str())
                .filter(|v| !v.is_empty())
        })
    }
}

/// Why a server command does not do what walg needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandProblem {
    /// The setting is empty.
    Empty,
    /// No part of the command runs a program named `walg`.
    NotWalg { programs: Vec<String> },
    /// walg is called with another subcommand.
    WrongSubcommand { found: String, expected: String },
    /// A placeholder PostgreSQL substitutes is not passed.
    MissingPlaceholder { placeholder: String },
}

impl fmt::Display for CommandProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandProblem::Empty => write!(f, "it is empty"),
            CommandProblem::NotWalg { programs }
                if programs.iter().any(|p| basename(p) == "wal-g") =>
            {
                write!(f, "it runs WAL-G ({}), not walg", programs.join(", "))
            }
            CommandProblem::NotWalg { programs } => {
                write!(f, "it does not call walg (it runs {})", programs.join(", "))
            }
            CommandProblem::WrongSubcommand { found, expected } => {
                write!(f, "it calls walg {found}, expected walg {expected}")
            }
            CommandProblem::MissingPlaceholder { placeholder } => {
                write!(f, "it does not pass {placeholder} to walg")
            }
        }
    }
}

fn basename(program: &str) -> &str {
    program.rsplit('/').next().unwrap_or(program)
}

/// Splits a command line as `/bin/sh` would into words, with the operators
/// `&&`, `||`, `;` and `|` as words of their own.
pub fn split_command(cmd: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = cmd.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    cur.push(c);
                }
            }
            '"' => {
                in_word = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => {
                            if let Some(n) = chars.next() {
                                cur.push(n);
                            }
                        }
                        c => cur.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            ';' | '|' | '&' => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
                let mut op = c.to_string();
                if (c == '|' || c == '&') && chars.peek() == Some(&c) {
                    chars.next();
                    op.push(c);
                }
                words.push(op);
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

fn is_operator(word: &str) -> bool {
    matches!(word, ";" | "|" | "||" | "&&" | "&")
}

fn is_assignment(word: &str) -> Option<(String, String)> {
    let (k, v) = word.split_once('=')?;
    let valid = !k.is_empty()
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !k.starts_with(|c: char| c.is_ascii_digit());
    valid.then(|| (k.to_string(), v.to_string()))
}

/// Parses one simple command (no operators) that runs walg.
fn parse_simple(words: &[String]) -> Result<WalgCall, String> {
    let mut i = 0;
    let mut env = Vec::new();
    while let Some((k, v)) = words.get(i).and_then(|w| is_assignment(w)) {
        env.push((k, v));
        i += 1;
    }
    // `env VAR=value walg ...`
    if words.get(i).is_some_and(|w| basename(w) == "env") {
        i += 1;
        while let Some((k, v)) = words.get(i).and_then(|w| is_assignment(w)) {
            env.push((k, v));
            i += 1;
        }
    }
    let program = words.get(i).cloned().unwrap_or_default();
    if basename(&program) != "walg" {
        return Err(program);
    }
    i += 1;
    let mut config_flag = None;
    let mut subcommand = String::new();
    let mut args = Vec::new();
    while i < words.len() {
        let w = &words[i];
        if w == "--config" {
            config_flag = words.get(i + 1).cloned();
            i += 2;
            continue;
        }
        if let Some(v) = w.strip_prefix("--config=") {
            config_flag = Some(v.to_string());
        } else if subcommand.is_empty() && !w.starts_with('-') {
            subcommand = w.clone();
        } else if !subcommand.is_empty() {
            args.push(w.clone());
        }
        i += 1;
    }
    Ok(WalgCall {
        program,
        env,
        config_flag,
        subcommand,
        args,
    })
}

/// Checks that `cmd` calls `walg <subcommand>` passing every placeholder
/// (`archive_command`: `wal-push` with `%p`; `restore_command`: `wal-fetch`
/// with `%f` and `%p`). In a chain (`test ... && walg ...`) the first part
/// that runs walg counts.
pub fn check_walg_call(
    cmd: &str,
    subcommand: &str,
    placeholders: &[&str],
) -> Result<WalgCall, CommandProblem> {
    let words = split_command(cmd);
    if words.is_empty() {
        return Err(CommandProblem::Empty);
    }
    let mut programs = Vec::new();
    let mut call = None;
    for part in words.split(|w| is_operator(w)) {
        if part.is_empty() {
            continue;
        }
        match parse_simple(part) {
            Ok(c) => {
                call = Some(c);
                break;
            }
            Err(program) if !program.is_empty() => programs.push(program),
            Err(_) => {}
        }
    }
    let call = call.ok_or(CommandProblem::NotWalg { programs })?;
    if call.subcommand != subcommand {
        return Err(CommandProblem::WrongSubcommand {
            found: call.subcommand.clone(),
            expected: subcommand.to_string(),
        });
    }
    for p in placeholders {
        if !call.args.iter().any(|a| a.contains(p)) {
            return Err(CommandProblem::MissingPlaceholder {
                placeholder: (*p).to_string(),
            });
        }
    }
    Ok(call)
}

/// Whether `wal_level` and `archive_mode` let the server archive WAL; the
/// error says what to set.
pub fn archiving_enabled(wal_level: &str, archive_mode: &str) -> Result<(), String> {
    let mut wrong = Vec::new();
    if !matches!(wal_level, "replica" | "logical") {
        wrong.push(format!(
            "wal_level is {wal_level:?}: set wal_level = replica (restart needed)"
        ));
    }
    if !matches!(archive_mode, "on" | "always") {
        wrong.push(format!(
            "archive_mode is {archive_mode:?}: set archive_mode = on (restart needed)"
        ));
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(wrong.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(
        cmd: &str,
        subcommand: &str,
        placeholders: &[&str],
        expected: Result<(&str, Option<&str>), &str>,
    ) {
        let got = check_walg_call(cmd, subcommand, placeholders);
        match (got, expected) {
            (Ok(call), Ok((program, config))) => {
                assert_eq!(
                    (call.program.as_str(), call.config()),
                    (program, config),
                    "{cmd}"
                )
            }
            (Err(problem), Err(text)) => {
                let shown = problem.to_string();
                assert!(shown.contains(text), "{cmd}: {shown:?} lacks {text:?}")
            }
            (got, expected) => panic!("{cmd}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn archive_commands() {
        let push = |cmd: &str, expected| check(cmd, "wal-push", &["%p"], expected);
        push("walg wal-push %p", Ok(("walg", None)));
        push("/usr/bin/walg wal-push %p", Ok(("/usr/bin/walg", None)));
        push(
            "/usr/bin/walg --config /etc/walg/walg.json wal-push %p",
            Ok(("/usr/bin/walg", Some("/etc/walg/walg.json"))),
        );
        push(
            "walg wal-push --config=/a.json %p",
            Ok(("walg", Some("/a.json"))),
        );
        push(
            "WALG_CONFIG_PATH='/etc/my walg.json' walg wal-push \"%p\"",
            Ok(("walg", Some("/etc/my walg.json"))),
        );
        push(
            "env WALG_LOG_LEVEL=warn walg wal-push %p",
            Ok(("walg", None)),
        );
        push(
            "test ! -f /stop && /opt/walg wal-push %p",
            Ok(("/opt/walg", None)),
        );
        push("", Err("empty"));
        push(
            "cp %p /mnt/archive/%f",
            Err("does not call walg (it runs cp)"),
        );
        push(
            "envdir /etc/wal-g.d/env wal-g wal-push %p",
            Err("does not call walg"),
        );
        push("wal-g wal-push %p", Err("runs WAL-G"));
        push(
            "walg wal-fetch %f %p",
            Err("calls walg wal-fetch, expected walg wal-push"),
        );
        push("walg wal-push", Err("does not pass %p"));
    }

    #[test]
    fn restore_commands() {
        let fetch = |cmd: &str, expected| check(cmd, "wal-fetch", &["%f", "%p"], expected);
        fetch("walg wal-fetch %f %p", Ok(("walg", None)));
        fetch("walg wal-fetch %f", Err("does not pass %p"));
        fetch("walg wal-fetch \"%f\" '%p'", Ok(("walg", None)));
    }

    #[test]
    fn splits_like_sh() {
        assert_eq!(
            split_command(r#"a 'b c' "d \"e\"" f\ g h&&i;j|k"#),
            ["a", "b c", "d \"e\"", "f g", "h", "&&", "i", ";", "j", "|", "k"]
        );
    }

    #[test]
    fn archiving_settings() {
        assert!(archiving_enabled("replica", "on").is_ok());
        assert!(archiving_enabled("logical", "always").is_ok());
        let err = archiving_enabled("minimal", "off").expect_err("both wrong");
        assert!(
            err.contains("wal_level = replica") && err.contains("archive_mode = on"),
            "{err}"
        );
    }
}
