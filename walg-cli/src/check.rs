//! `walg check`: the pre-flight a DBA runs (as the `postgres` user) before
//! turning `archive_mode` on, or a monitoring system runs every few minutes.
//!
//! It verifies what would otherwise fail at 3 a.m.: the configuration
//! parses and holds none of the packaged example's `change-me`
//! placeholders (found before any request is made); a config file holding
//! secrets is not readable by other users; every storage answers and
//! accepts a real write (the probe of `st check --write`: list, upload,
//! delete); the status cache location is private and writable; and, when
//! PostgreSQL can be reached, that the running server's `archive_command` /
//! `restore_command` call walg with the same configuration and that
//! `wal_level` / `archive_mode` allow archiving.
//!
//! Each failure is said once: its row holds the detail (for a storage, the
//! cause walg-storage classified and the setting to fix), the verdict line
//! names the first failure's cause.
//!
//! The rules about command strings and settings live in
//! `walg_core::doctor::preflight`; this module gathers the inputs and renders the
//! [`Report`]. It never changes the server or the archive (the write probe
//! deletes its object).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use walg_core::doctor::preflight::{archiving_enabled, check_walg_call};
use walg_core::store::error::Cause;

use crate::shared::config::{
    default_config_file, file_values, is_secret_setting, visit_settings, Config, Raw, PLACEHOLDER,
};
use crate::shared::format::mib;
use crate::shared::output::{out, print_text};
use crate::shared::{pgconn, storage};

/// Exit code when nothing failed but something could not be verified or
/// deserves a look (a warning).
pub const EXIT_WARN: u8 = 2;

/// The verdict of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Not verified (PostgreSQL not reachable) or works but deserves a look.
    Warn,
    Fail,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// `config`, `storage <name>`, `status cache`, `postgresql`,
    /// `archiving`, `archive_command`, `restore_command`.
    pub name: String,
    pub status: Status,
    /// What was found, and for a problem what to do.
    pub message: String,
    /// Why a storage failed, as walg-storage classified it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<Cause>,
    /// What the verdict line says of this check when it is the first
    /// failure: the cause without the detail; the message when unset.
    #[serde(skip)]
    pub headline: Option<String>,
}

/// What `walg check` found; `--json` prints this value.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The worst status of all checks.
    pub status: Status,
    /// The one line that matters.
    pub summary: String,
    /// The config file read, if any.
    pub config_file: Option<PathBuf>,
    pub checks: Vec<Check>,
}

impl Report {
    fn new(config_file: Option<PathBuf>, checks: Vec<Check>) -> Report {
        let status = checks.iter().map(|c| c.status).max().unwrap_or(Status::Ok);
        let summary = match checks
            .iter()
            .find(|c| c.status == status && status != Status::Ok)
        {
            None => format!("all is well: {} checks passed", checks.len()),
            Some(c) if status == Status::Fail => format!("FAILED: {}: {}", c.name, c.headline()),
            Some(c) => format!("no failures, but look at {}: {}", c.name, c.headline()),
        };
        Report {
            status,
            summary,
            config_file,
            checks,
        }
    }

    /// 0 all is well, 2 warnings only, 1 a failure.
    pub fn exit_code(&self) -> u8 {
        match self.status {
            Status::Ok => 0,
            Status::Warn => EXIT_WARN,
            Status::Fail => 1,
        }
    }

    /// The human rendering: the summary first, then one line per check.
    pub fn render(&self) -> String {
        let mut out = format!("walg check: {}\n", self.summary);
        for c in &self.checks {
            out.push_str(&format!(
                "{:<5} {:<16} {}\n",
                c.status.label(),
                c.name,
                c.message
            ));
        }
        out
    }
}

fn check(name: impl Into<String>, status: Status, message: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        status,
        message: message.into(),
        cause: None,
        headline: None,
    }
}

impl Check {
    fn headline(&self) -> &str {
        self.headline.as_deref().unwrap_or(&self.message)
    }
}

/// The server settings `walg check` looks at.
#[derive(Debug, Clone, Default)]
pub struct ServerSettings {
    /// `server_version`.
    pub version: String,
    pub wal_level: String,
    pub archive_mode: String,
    pub archive_command: String,
    /// PostgreSQL 15+: when set, `archive_command` is not used.
    pub archive_library: String,
    pub restore_command: String,
    /// `data_directory`: relative paths in the commands are relative to it.
    pub data_directory: Option<PathBuf>,
}

/// `walg check [--json] [--conninfo ...]`: runs the checks, prints the
/// report, returns the exit code.
pub async fn command(config: Option<&Path>, json: bool, conninfo: Option<String>) -> u8 {
    let server = server_settings(conninfo).await;
    let report = run(config, server).await;
    if json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => out!("{text}"),
            Err(e) => {
                tracing::error!("encode the check report as JSON: {e}");
                return 1;
            }
        }
    } else {
        print_text(&report.render());
    }
    report.exit_code()
}

/// How long the settings query may take.
const QUERY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads the settings of the running server through libpq-style settings
/// (`--conninfo`, `PGHOST`, ...; by default the local socket).
async fn server_settings(conninfo: Option<String>) -> Result<ServerSettings, String> {
    let target =
        pgconn::config(&pgconn::ConnSource::from_env(conninfo)).map_err(|e| format!("{e:#}"))?;
    let client = pgconn::connect(&target)
        .await
        .map_err(|e| format!("{e:#}"))?;
    // pg_settings hides what this role may not read instead of failing.
    let sql = "select name, setting from pg_settings where name in ('server_version', 'wal_level', \
               'archive_mode', 'archive_command', 'archive_library', 'restore_command', 'data_directory')";
    let rows = tokio::time::timeout(QUERY_TIMEOUT, client.query(sql, &[]))
        .await
        .map_err(|_| {
            format!(
                "query the settings of {}: no answer within {QUERY_TIMEOUT:?}",
                target.description
            )
        })?
        .map_err(|e| format!("query the settings of {}: {e}", target.description))?;
    let mut s = ServerSettings::default();
    let mut seen = Vec::new();
    for row in rows {
        let name: String = row.try_get(0).map_err(|e| e.to_string())?;
        let value: Option<String> = row.try_get(1).map_err(|e| e.to_string())?;
        let value = value.unwrap_or_default();
        match name.as_str() {
            "server_version" => s.version = value,
            "wal_level" => s.wal_level = value,
            "archive_mode" => s.archive_mode = value,
            "archive_command" => s.archive_command = value,
            "archive_library" => s.archive_library = value,
            "restore_command" => s.restore_command = value,
            "data_directory" => s.data_directory = Some(PathBuf::from(value)),
            _ => {}
        }
        seen.push(name);
    }
    if !seen.iter().any(|n| n == "archive_command") {
        return Err(format!(
            "connected to {}, but this role cannot read archive_command (run walg check as postgres, or grant pg_read_all_settings)",
            target.description
        ));
    }
    Ok(s)
}

/// Runs every check. `server` is what was read from PostgreSQL, or why it
/// could not be reached.
pub async fn run(config: Option<&Path>, server: Result<ServerSettings, String>) -> Report {
    let mut checks = Vec::new();
    let raw = match Raw::load(config) {
        Ok(raw) => raw,
        Err(e) => {
            checks.push(check("config", Status::Fail, format!("{e:#}")));
            return Report::new(None, checks);
        }
    };
    let source = raw.source.clone();
    let cfg = match Config::from_raw(&raw) {
        Ok(cfg) => cfg,
        Err(e) => {
            let msg = match &source {
                Some(p) => format!("{}: {e:#}", p.display()),
                None => format!("settings from the environment: {e:#}"),
            };
            checks.push(check("config", Status::Fail, msg));
            return Report::new(source, checks);
        }
    };
    let storages: Vec<String> = cfg
        .storages
        .iter()
        .map(|s| format!("{} ({}://{})", s.name, s.scheme, s.location))
        .collect();
    let from = match &source {
        Some(p) => p.display().to_string(),
        None => "environment only (no config file)".to_string(),
    };
    let config_status = if cfg.warnings.is_empty() {
        Status::Ok
    } else {
        Status::Warn
    };
    let mut msg = format!("{from}: storage {}", storages.join(", "));
    for w in &cfg.warnings {
        msg.push_str(&format!("; {w}"));
    }
    let placeholders = raw.placeholders();
    if placeholders.is_empty() {
        checks.push(check("config", config_status, msg));
    } else {
        // The packaged example, not yet edited: say so instead of sending
        // requests to a bucket called change-me-bucket.
        let mut c = check(
            "config",
            Status::Fail,
            format!(
                "{from}: {} still hold{} the example's {PLACEHOLDER:?} placeholder; set the real bucket and credentials, then run walg check again (no storage was contacted)",
                placeholders.join(", "),
                if placeholders.len() == 1 { "s" } else { "" },
            ),
        );
        c.headline = Some(format!(
            "the config still holds the example's {PLACEHOLDER:?} placeholders ({})",
            placeholders.join(", ")
        ));
        checks.push(c);
    }
    if let Some(path) = &source {
        checks.extend(check_config_file(path));
    }

    if placeholders.is_empty() {
        checks.extend(check_storages(&cfg).await);
    }
    checks.extend(check_server(source.as_deref(), server));
    Report::new(source, checks)
}

/// Every storage: list, upload and delete a probe; then the status cache.
async fn check_storages(cfg: &Config) -> Vec<Check> {
    let mut checks = Vec::new();
    let opened = match storage::open_all(cfg) {
        Ok(o) => o,
        Err(e) => {
            checks.push(check("storage", Status::Fail, format!("{e:#}")));
            return checks;
        }
    };
    let Some(failover) = opened.failover else {
        checks.push(check("storage", Status::Fail, "no storages configured"));
        return checks;
    };
    let started = Instant::now();
    let results = failover.check(true).await;
    let ms = started.elapsed().as_millis();
    for (name, result) in results {
        let url = cfg
            .storages
            .iter()
            .find(|s| s.name == name)
            .map(|s| format!("{}://{}", s.scheme, s.location))
            .unwrap_or_default();
        let credentials = cfg
            .storages
            .iter()
            .find(|s| s.name == name)
            .map(credential_source)
            .unwrap_or_default();
        checks.push(match result {
            Ok(()) => check(
                format!("storage {name}"),
                Status::Ok,
                format!(
                    "{url}: credentials from {credentials}; listed, wrote and deleted a {} probe ({ms} ms)",
                    mib(cfg.failover.check_size)
                ),
            ),
            Err(e) => storage_failure(&name, &url, &e),
        });
    }
    checks.push(check_cache(
        failover.cache_path().as_deref(),
        failover.cache().is_persistent(),
        &failover.cache().warnings(),
        cfg.storages.len() > 1,
    ));
    checks
}

/// Where a storage's credentials come from, as walg-storage chose them
/// (`web identity role arn:...`); never a secret.
pub fn credential_source(spec: &walg_storage::StorageSpec) -> String {
    walg_storage::credentials::describe(spec).unwrap_or_else(|e| e.to_string())
}

/// A storage that failed its probe: the row says the cause and the fix once
/// (the storage's own explanation), the verdict line the cause alone.
fn storage_failure(name: &str, url: &str, e: &walg_core::StoreError) -> Check {
    match &e.explanation {
        Some(x) => {
            let mut c = check(
                format!("storage {name}"),
                Status::Fail,
                format!("{url}: {}", e.message),
            );
            c.cause = Some(x.cause);
            c.headline = Some(x.what.clone());
            c
        }
        None => check(
            format!("storage {name}"),
            Status::Fail,
            format!("{url}: {e}; wal-push would fail (fix the storage or its settings, then run walg check again)"),
        ),
    }
}

/// A config file that holds secrets must not be readable by other users
/// (as ssh refuses a private key that others can read); the package
/// installs it as root:postgres, mode 0640.
fn check_config_file(path: &Path) -> Option<Check> {
    let meta = std::fs::metadata(path).ok()?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o006 == 0 {
        return None;
    }
    let mut secrets = Vec::new();
    if let Ok(values) = file_values(path) {
        visit_settings(&values, &mut |prefix, key, value| {
            let set = !matches!(value, serde_json::Value::Null)
                && value.as_str().is_none_or(|v| !v.trim().is_empty());
            if set && is_secret_setting(key) {
                secrets.push(format!("{prefix}{key}"));
            }
        });
    }
    if secrets.is_empty() {
        return None;
    }
    let owner = format!(
        "{}:{}",
        account_name("/etc/passwd", meta.uid()),
        account_name("/etc/group", meta.gid())
    );
    let who = if mode & 0o002 != 0 {
        "every user can read and change it"
    } else {
        "every user can read it"
    };
    let p = path.display();
    let mut c = check(
        "config file",
        Status::Warn,
        format!(
            "{p} holds secrets ({}) and {who} (mode {mode:04o}, owner {owner}); run chmod 0640 {p} and chown root:postgres {p}",
            secrets.join(", ")
        ),
    );
    c.headline = Some(format!(
        "{p} holds secrets and {who} (mode {mode:04o}, owner {owner}); chmod 0640 it, owner root:postgres"
    ));
    Some(c)
}

/// The name of `id` in `/etc/passwd` or `/etc/group`, else the number.
fn account_name(file: &str, id: u32) -> String {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| {
                let f: Vec<&str> = line.split(':').collect();
                (f.len() > 2 && f[2] == id.to_string()).then(|| f[0].to_string())
            })
        })
        .unwrap_or_else(|| id.to_string())
}

/// The status cache: present or creatable, writable (the probe above wrote
/// it), private (the file 0600 and ours; the directory not writable by
/// others). With one storage wal-push does not use it: problems only warn.
fn check_cache(path: Option<&Path>, persistent: bool, warnings: &[String], used: bool) -> Check {
    let bad = if used { Status::Fail } else { Status::Warn };
    let name = "status cache";
    let Some(path) = path else {
        return check(name, bad, "no location: HOME is not set; set WALG_FAILOVER_STORAGES_CACHE_FILE to a file in a private directory");
    };
    if !persistent {
        let why = warnings
            .last()
            .cloned()
            .unwrap_or_else(|| "unusable".into());
        return check(
            name,
            bad,
            format!("{} cannot be used ({why}); set WALG_FAILOVER_STORAGES_CACHE_FILE to a file in a private directory", path.display()),
        );
    }
    let uid = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
    let mut problems = Vec::new();
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => problems.push("it is a symbolic link".to_string()),
        Ok(m) => {
            if m.permissions().mode() & 0o077 != 0 {
                problems.push(format!(
                    "its mode is {:04o}, expected 0600",
                    m.permissions().mode() & 0o7777
                ));
            }
            if uid.is_some_and(|u| u != m.uid()) {
                problems.push(format!("it is owned by uid {}, not by this user", m.uid()));
            }
        }
        Err(e) => problems.push(format!("it was not written: {e}")),
    }
    if let Some(dir) = path.parent() {
        if let Ok(m) = std::fs::metadata(dir) {
            let mode = m.permissions().mode();
            if mode & 0o022 != 0 && mode & 0o1000 == 0 {
                problems.push(format!(
                    "its directory {} is writable by other users (mode {:04o})",
                    dir.display(),
                    mode & 0o7777
                ));
            }
        }
    }
    if problems.is_empty() {
        let note = if used {
            ""
        } else {
            " (used by the st commands; wal-push with one storage does not need it)"
        };
        check(
            name,
            Status::Ok,
            format!("{}: private and writable{note}", path.display()),
        )
    } else {
        check(
            name,
            bad,
            format!(
                "{}: {}; other users could change which storage walg writes to",
                path.display(),
                problems.join("; ")
            ),
        )
    }
}

/// Two config files are the same when they resolve to the same file.
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => a == b,
    }
}

/// Which config file a server command reads: its `--config` or
/// `WALG_CONFIG_PATH=` (relative to the data directory, where the server
/// runs it), else walg's default lookup for this user.
fn command_config(named: Option<&str>, data_directory: Option<&Path>) -> (Option<PathBuf>, String) {
    match named {
        Some(p) => {
            let p = PathBuf::from(p);
            let p = match data_directory {
                Some(d) if p.is_relative() => d.join(p),
                _ => p,
            };
            let shown = p.display().to_string();
            (Some(p), shown)
        }
        None => {
            let found = default_config_file();
            let shown = match &found {
                Some(p) => format!("the default lookup, which finds {}", p.display()),
                None => "the default lookup, which finds no file".to_string(),
            };
            (found, shown)
        }
    }
}

/// Whether the program in a command exists and can be run.
fn program_problem(program: &str) -> Option<String> {
    let runnable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        return (!runnable(Path::new(program)))
            .then(|| format!("{program} does not exist or is not executable"));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path).any(|d| runnable(&d.join(program)));
    (!found).then(|| {
        format!(
            "{program} is not in this PATH ({}); write the full path, such as /usr/bin/walg",
            path.to_string_lossy()
        )
    })
}

fn check_command(
    name: &str,
    value: &str,
    subcommand: &str,
    placeholders: &[&str],
    ours: Option<&Path>,
    data_directory: Option<&Path>,
) -> Check {
    let call = match check_walg_call(value, subcommand, placeholders) {
        Ok(call) => call,
        Err(problem) => {
            let example = if subcommand == "wal-push" {
                "archive_command = '/usr/bin/walg wal-push %p'"
            } else {
                "restore_command = '/usr/bin/walg wal-fetch %f %p'"
            };
            return check(
                name,
                Status::Fail,
                format!("{value:?}: {problem}; set {example}"),
            );
        }
    };
    if let Some(p) = program_problem(&call.program) {
        return check(name, Status::Fail, format!("{value:?}: {p}"));
    }
    let (theirs, shown) = command_config(call.config(), data_directory);
    let same = match (&theirs, ours) {
        (Some(a), Some(b)) => same_file(a, b),
        (None, None) => true,
        _ => false,
    };
    if same {
        let what = match ours {
            Some(p) => format!("the same config ({})", p.display()),
            None => "no config file, like this check (settings from the environment: make sure the server's environment has them)".to_string(),
        };
        check(
            name,
            Status::Ok,
            format!("{value:?} calls walg {subcommand} with {what}"),
        )
    } else {
        let ours_shown = ours.map_or("no config file".to_string(), |p| p.display().to_string());
        check(
            name,
            Status::Fail,
            format!("{value:?} reads {shown}, but this check read {ours_shown}: the server would archive with other settings; add --config {ours_shown} to the command, or run walg check with the server's config"),
        )
    }
}

fn check_server(ours: Option<&Path>, server: Result<ServerSettings, String>) -> Vec<Check> {
    let s = match server {
        Ok(s) => s,
        Err(why) => {
            return vec![check(
                "postgresql",
                Status::Warn,
                format!("not checked: {why}; run walg check as the postgres user on the database server (or set PGHOST/PGPORT) to check archive_command and the archiving settings"),
            )]
        }
    };
    let mut checks = vec![check(
        "postgresql",
        Status::Ok,
        format!("connected, PostgreSQL {}", s.version),
    )];
    checks.push(match archiving_enabled(&s.wal_level, &s.archive_mode) {
        Ok(()) => check(
            "archiving",
            Status::Ok,
            format!("wal_level={}, archive_mode={}", s.wal_level, s.archive_mode),
        ),
        Err(e) => check("archiving", Status::Fail, e),
    });
    let data = s.data_directory.as_deref();
    if !s.archive_library.is_empty() {
        checks.push(check(
            "archive_command",
            Status::Fail,
            format!("archive_library = {:?} is set, so archive_command is not used; set archive_library = '' and archive_command = '/usr/bin/walg wal-push %p'", s.archive_library),
        ));
    } else {
        checks.push(check_command(
            "archive_command",
            &s.archive_command,
            "wal-push",
            &["%p"],
            ours,
            data,
        ));
    }
    if s.restore_command.trim().is_empty() {
        checks.push(check(
            "restore_command",
            Status::Ok,
            "not set (needed only on a cluster being restored or a standby: restore_command = '/usr/bin/walg wal-fetch %f %p')",
        ));
    } else {
        checks.push(check_command(
            "restore_command",
            &s.restore_command,
            "wal-fetch",
            &["%f", "%p"],
            ours,
            data,
        ));
    }
    checks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(archive_command: &str) -> ServerSettings {
        ServerSettings {
            version: "15.8".into(),
            wal_level: "replica".into(),
            archive_mode: "on".into(),
            archive_command: archive_command.into(),
            ..ServerSettings::default()
        }
    }

    fn statuses(checks: &[Check]) -> Vec<(&str, Status)> {
        checks.iter().map(|c| (c.name.as_str(), c.status)).collect()
    }

    #[test]
    fn server_checks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = dir.path().join("walg.json");
        std::fs::write(&cfg, "{}").expect("write");
        let other = dir.path().join("other.json");
        std::fs::write(&other, "{}").expect("write");
        // /bin/sh stands in for an installed walg: same checks, a real file.
        let walg = dir.path().join("walg");
        std::os::unix::fs::symlink("/bin/sh", &walg).expect("symlink");
        let cmd = |config: &Path| {
            format!(
                "{} --config {} wal-push %p",
                walg.display(),
                config.display()
            )
        };

        let got = check_server(Some(&cfg), Ok(server(&cmd(&cfg))));
        assert_eq!(
            statuses(&got),
            [
                ("postgresql", Status::Ok),
                ("archiving", Status::Ok),
                ("archive_command", Status::Ok),
                ("restore_command", Status::Ok)
            ]
        );

        let got = check_server(Some(&cfg), Ok(server(&cmd(&other))));
        assert_eq!(got[2].status, Status::Fail);
        assert!(
            got[2].message.contains("this check read"),
            "{}",
            got[2].message
        );

        let got = check_server(Some(&cfg), Ok(server("/nonexistent/walg wal-push %p")));
        assert!(
            got[2].message.contains("does not exist"),
            "{}",
            got[2].message
        );

        let got = check_server(Some(&cfg), Ok(server("cp %p /archive/%f")));
        assert!(
            got[2].message.contains("does not call walg"),
            "{}",
            got[2].message
        );

        let mut s = server(&cmd(&cfg));
        s.archive_mode = "off".into();
        assert_eq!(check_server(Some(&cfg), Ok(s))[1].status, Status::Fail);

        let got = check_server(Some(&cfg), Err("connection refused".into()));
        assert_eq!(statuses(&got), [("postgresql", Status::Warn)]);
    }

    #[test]
    fn report_summary_leads_with_the_worst() {
        let r = Report::new(
            None,
            vec![
                check("config", Status::Ok, "fine"),
                check("postgresql", Status::Warn, "not checked"),
                check("storage default", Status::Fail, "permission denied"),
            ],
        );
        assert_eq!(r.exit_code(), 1);
        assert!(r
            .render()
            .starts_with("walg check: FAILED: storage default: permission denied\n"));
        let r = Report::new(None, vec![check("config", Status::Ok, "fine")]);
        assert_eq!(
            (r.exit_code(), r.summary.as_str()),
            (0, "all is well: 1 checks passed")
        );
    }

    /// The packaged example config (xtask's `dist::EXAMPLE_CONFIG`).
    const EXAMPLE: &str = r#"{
  "WALG_S3_PREFIX": "s3://change-me-bucket/pg",
  "AWS_REGION": "eu-west-1",
  "AWS_ACCESS_KEY_ID": "change-me",
  "AWS_SECRET_ACCESS_KEY": "change-me",
  "WALG_COMPRESSION_METHOD": "lz4"
}
"#;

    #[tokio::test]
    async fn example_placeholders_fail_before_any_request() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = dir.path().join("walg.json");
        std::fs::write(&cfg, EXAMPLE).expect("write");
        std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let r = run(Some(&cfg), Err("not asked".into())).await;
        assert_eq!(
            statuses(&r.checks),
            [("config", Status::Fail), ("postgresql", Status::Warn)],
            "no storage row: nothing was asked of change-me-bucket"
        );
        let line = r.render();
        let verdict = line.lines().next().expect("a verdict");
        assert!(
            verdict.starts_with("walg check: FAILED: config: the config still holds the example's \"change-me\" placeholders (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, WALG_S3_PREFIX)"),
            "{verdict}"
        );
        assert!(r.checks[0].message.contains("no storage was contacted"));
    }

    #[test]
    fn a_config_with_secrets_readable_by_others_is_a_warning() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = dir.path().join("walg.json");
        std::fs::write(&cfg, EXAMPLE).expect("write");
        std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let c = check_config_file(&cfg).expect("a warning");
        assert_eq!(c.status, Status::Warn);
        let meta = std::fs::metadata(&cfg).expect("stat");
        let owner = format!(
            "owner {}:{}",
            account_name("/etc/passwd", meta.uid()),
            account_name("/etc/group", meta.gid())
        );
        for w in [
            cfg.to_str().expect("utf-8"),
            "AWS_SECRET_ACCESS_KEY",
            "mode 0644",
            &owner,
            "chmod 0640",
            "chown root:postgres",
        ] {
            assert!(c.message.contains(w), "{w:?} not in {}", c.message);
        }
        std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        assert!(check_config_file(&cfg).is_none());
        // Readable by all but without secrets: nothing to hide.
        std::fs::write(&cfg, r#"{"WALG_FILE_PREFIX": "/var/lib/walg"}"#).expect("write");
        std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(check_config_file(&cfg).is_none());
        // A failover section's secret counts too.
        std::fs::write(
            &cfg,
            r#"{"WALG_FILE_PREFIX": "/a", "WALG_FAILOVER_STORAGES": {"b": {"WALG_AZ_PREFIX": "azure://c/p", "AZURE_STORAGE_SAS_TOKEN": "sv=1&sig=x"}}}"#,
        )
        .expect("write");
        let c = check_config_file(&cfg).expect("a warning");
        assert!(
            c.message
                .contains("WALG_FAILOVER_STORAGES.b.AZURE_STORAGE_SAS_TOKEN"),
            "{}",
            c.message
        );
    }

    #[test]
    fn a_storage_failure_is_said_once() {
        use walg_core::store::error::{Explanation, StoreError};
        use walg_core::ErrorKind;
        let e = StoreError::explained(
            ErrorKind::Unavailable,
            "list",
            "default",
            "walg_failover_check/",
            Explanation {
                cause: Cause::NameResolution,
                location: "s3://b/pg".into(),
                what: "cannot resolve the host name \"b.s3.eu-west-1.amazonaws.com\" (DNS)".into(),
                fix: "check WALG_S3_PREFIX and AWS_REGION, or the host's DNS".into(),
                detail: "Unexpected (temporary) at list, context: { url: https://b.s3... }".into(),
            },
        );
        let r = Report::new(
            None,
            vec![
                check("config", Status::Ok, "fine"),
                storage_failure("default", "s3://b/pg", &e),
            ],
        );
        let text = r.render();
        assert!(
            text.starts_with("walg check: FAILED: storage default: cannot resolve the host name \"b.s3.eu-west-1.amazonaws.com\" (DNS)\n"),
            "{text}"
        );
        assert!(text.contains("FAIL  storage default  s3://b/pg: cannot resolve the host name \"b.s3.eu-west-1.amazonaws.com\" (DNS); check WALG_S3_PREFIX and AWS_REGION"), "{text}");
        assert_eq!(
            text.matches("check WALG_S3_PREFIX").count(),
            1,
            "the fix once: {text}"
        );
        assert!(!text.contains("context: {"), "{text}");
        assert_eq!(r.checks[1].cause, Some(Cause::NameResolution));
    }

    #[test]
    fn cache_privacy() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
        let file = dir.path().join("status.json");
        std::fs::write(&file, "{}").expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(check_cache(Some(&file), true, &[], true).status, Status::Ok);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let c = check_cache(Some(&file), true, &[], true);
        assert!(
            c.status == Status::Fail && c.message.contains("0644"),
            "{}",
            c.message
        );
        assert_eq!(
            check_cache(Some(&file), true, &[], false).status,
            Status::Warn
        );
        assert_eq!(check_cache(None, false, &[], true).status, Status::Fail);
    }
}
