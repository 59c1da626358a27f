//! What the scenarios share, so each reads as setup, action, assertions:
//! walg's settings ([`Settings`] and the storages they name), the `walg`
//! binary as the server runs it ([`Walg`]), clusters archiving or
//! recovering through it, real WAL segments to push, and readers of what a
//! storage holds.
//!
//! It asserts nothing about walg: a helper here returns what it observed
//! (an [`Output`], file names, keys) and the scenario decides what is right.
//! A setup step that fails is an `Err` naming what failed.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};

use crate::infra::emulators::{Emulators, Kind, BUCKET};
use crate::infra::pg::{self, Cluster, Workdir};
use crate::infra::proxy::Proxy;

// ---------------------------------------------------------------------------
// Settings

/// Settings for a config file: WAL-G keys to values.
pub type Settings = BTreeMap<String, Value>;

/// Sets one setting: `s.set("WALG_UPLOAD_CONCURRENCY", 1)`.
pub trait Set {
    fn set(&mut self, key: &str, value: impl Into<Value>) -> &mut Self;
}

impl Set for Settings {
    fn set(&mut self, key: &str, value: impl Into<Value>) -> &mut Self {
        self.insert(key.to_string(), value.into());
        self
    }
}

/// A file storage at `archive`.
pub fn file_settings(archive: &Path) -> Settings {
    let mut s = Settings::new();
    s.set("WALG_FILE_PREFIX", archive.display().to_string());
    s
}

/// An emulator's storage under `path` in the test bucket.
pub fn emulator_settings(emus: &Emulators, kind: Kind, path: &str) -> Result<Settings> {
    Ok(emus
        .settings_for(kind, path)
        .with_context(|| format!("the {} emulator is not running", kind.name()))?
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect())
}

/// Adds a file-storage failover named `backup` at `backup`; the status
/// cache stays wherever `s` says (by default, the user's state directory).
/// The drain back to the primary is off: these scenarios check what each
/// storage holds after an outage, and reads that need both storages
/// (`failover_drain_back` tests the drain).
pub fn failover_to_files(s: &mut Settings, backup: &Path) {
    s.set(
        "WALG_FAILOVER_STORAGES",
        json!({"backup": {"WALG_FILE_PREFIX": backup.display().to_string()}}),
    )
    .set("WALG_FAILOVER_STORAGES_DRAIN", "off");
}

/// Adds a file-storage failover named `backup` at `backup`, with the
/// status cache at `cache`.
pub fn file_failover(s: &mut Settings, backup: &Path, cache: &Path) {
    failover_to_files(s, backup);
    s.set(
        "WALG_FAILOVER_STORAGES_CACHE_FILE",
        cache.display().to_string(),
    );
}

/// walg on two file storages: a primary and a failover `backup`, the
/// status cache in the work directory, one upload at a time.
#[derive(Debug)]
pub struct FileFailover {
    pub walg: Walg,
    /// What `walg` was configured with, to derive variants from.
    pub settings: Settings,
    /// The failover storage, `work/backup`.
    pub backup: PathBuf,
    /// The status cache, `work/state/status.json`.
    pub cache: PathBuf,
}

impl FileFailover {
    /// The primary at `primary`; the config is `work/walg.json`.
    pub fn new(work: &Workdir, built: &Path, primary: &Path) -> Result<FileFailover> {
        let backup = work.path.join("backup");
        let cache = work.path.join("state/status.json");
        let mut settings = file_settings(primary);
        file_failover(&mut settings, &backup, &cache);
        settings.set("WALG_UPLOAD_CONCURRENCY", 1);
        let walg = Walg::new(work, built, "walg.json", &settings)?;
        Ok(FileFailover {
            walg,
            settings,
            backup,
            cache,
        })
    }
}

/// A path in a bucket no other run uses (`e2e/<label>-<pid>-<ms>`).
pub fn unique_path(label: &str) -> String {
    format!(
        "e2e/{label}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    )
}

// ---------------------------------------------------------------------------
// The walg binary

/// The walg binary as the server will run it, plus its config.
#[derive(Debug, Clone)]
pub struct Walg {
    pub bin: PathBuf,
    pub config: PathBuf,
}

impl Walg {
    /// Installs the built binary into `work` (once) and writes `settings`
    /// as `work/<config_name>`.
    pub fn new(
        work: &Workdir,
        built: &Path,
        config_name: &str,
        settings: &Settings,
    ) -> Result<Walg> {
        let bin = work.path.join("walg");
        if !bin.exists() {
            work.install_walg(built)?;
        }
        Ok(Walg {
            bin,
            config: work.write_config(config_name, settings)?,
        })
    }

    pub fn archive_command(&self) -> String {
        format!(
            "{} --config {} wal-push %p",
            self.bin.display(),
            self.config.display()
        )
    }

    pub fn restore_command(&self) -> String {
        format!(
            "{} --config {} wal-fetch %f %p",
            self.bin.display(),
            self.config.display()
        )
    }

    /// `postgresql.conf` lines: archiving on, through this walg.
    pub fn archiving(&self) -> String {
        format!(
            "archive_mode = on\narchive_command = '{}'\n",
            self.archive_command()
        )
    }

    /// `postgresql.conf` lines: restoring through this walg.
    pub fn restoring(&self) -> String {
        format!("restore_command = '{}'\n", self.restore_command())
    }

    /// walg with this config and `args`, to run as the current user.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--config").arg(&self.config).args(args);
        c
    }

    /// Runs walg directly (as the current user) with this config.
    pub fn run(&self, args: &[&str]) -> Result<Output> {
        Ok(self.command(args).output()?)
    }

    /// Runs walg with its stdout a pipe whose reading end is already closed
    /// (`walg ... | head` after head exited): every write to stdout fails
    /// with EPIPE.
    pub fn run_closed_stdout(&self, args: &[&str]) -> Result<Output> {
        let (reader, writer) = std::io::pipe()?;
        drop(reader);
        Ok(self
            .command(args)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()?)
    }

    /// `wal-push <path>`.
    pub fn push(&self, path: &Path) -> Result<Output> {
        self.run(&["wal-push", &path.display().to_string()])
    }

    /// `wal-fetch <name> <dest>`.
    pub fn fetch(&self, name: &str, dest: &Path) -> Result<Output> {
        self.run(&["wal-fetch", name, &dest.display().to_string()])
    }

    /// Starts `wal-push <path>` without waiting, its stderr piped: one of
    /// several processes racing.
    pub fn spawn_push(&self, path: &Path) -> std::io::Result<Child> {
        self.command(&["wal-push", &path.display().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
    }
}

/// Runs walg as the current user with exactly `env` (nothing inherited
/// from the caller's environment but PATH), at debug level.
pub fn walg_with_env(
    bin: &Path,
    home: &Path,
    env: &[(&str, &str)],
    args: &[&str],
) -> Result<Output> {
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("WALG_LOG_LEVEL", "debug")
        .envs(env.iter().copied())
        .args(args);
    cmd.output().with_context(|| format!("run walg {args:?}"))
}

/// A child's exit code (-1 when a signal ended it).
pub fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Both streams, stdout first: where a secret must not appear.
pub fn all_output(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A line of a scenario's report.
pub fn say(m: &str) {
    println!("  {m}");
}

// ---------------------------------------------------------------------------
// Clusters

/// A new cluster in `work/<name>` archiving through `walg`, with `extra`
/// `postgresql.conf` lines after walg's, started.
pub fn archiving_cluster(
    work: &Workdir,
    walg: &Walg,
    name: &str,
    extra: &str,
    initdb_args: &[&str],
) -> Result<Cluster> {
    let conf = format!("{}{extra}", walg.archiving());
    let mut c = Cluster::init(&work.path.join(name), &conf, initdb_args)?;
    c.start()?;
    Ok(c)
}

/// A cluster recovered from `backup` into `dir` through `walg`'s
/// restore_command (with `extra` lines after it), started and waited for
/// until recovery ends.
pub fn recovered_cluster(
    walg: &Walg,
    backup: &Path,
    dir: &Path,
    extra: &str,
    timeout: Duration,
) -> Result<Cluster> {
    let conf = format!("{}{extra}", walg.restoring());
    let mut c = Cluster::for_recovery(backup, dir, &conf)?;
    c.start()?;
    c.wait_recovered(timeout)?;
    Ok(c)
}

/// A real segment of a fresh cluster in `work/<label>` (16 MiB unless
/// `initdb_args` say otherwise), copied out right after its switch.
pub fn real_segment(
    work: &Workdir,
    label: &str,
    initdb_args: &[&str],
) -> Result<(String, Vec<u8>)> {
    let mut c = Cluster::init(&work.path.join(label), "", initdb_args)?;
    c.start()?;
    c.sql("create table t as select g, md5(g::text) from generate_series(1, 30000) g")?;
    let name = c.sql("select pg_walfile_name(pg_current_wal_lsn())")?;
    c.sql("select pg_switch_wal()")?;
    let data = fs::read(c.data.join("pg_wal").join(&name))?;
    c.stop()?;
    Ok((name, data))
}

/// A real segment in a file of its own name under `work/local`.
#[derive(Debug)]
pub struct LocalSegment {
    pub name: String,
    pub bytes: Vec<u8>,
    /// `work/local/<name>`.
    pub path: PathBuf,
}

impl LocalSegment {
    pub fn new(work: &Workdir, initdb_args: &[&str]) -> Result<LocalSegment> {
        let (name, bytes) = real_segment(work, "pg", initdb_args)?;
        let local = work.path.join("local");
        fs::create_dir_all(&local)?;
        let path = local.join(&name);
        fs::write(&path, &bytes)?;
        Ok(LocalSegment { name, bytes, path })
    }

    /// The path as an argument.
    pub fn arg(&self) -> String {
        self.path.display().to_string()
    }
}

/// Makes a fake data directory whose `pg_wal` holds `count` real segments of
/// a fresh cluster, each with a `.ready` file, as PostgreSQL's archiver
/// would see them. Returns (data dir, segment names).
pub fn ready_backlog(work: &Workdir, count: usize) -> Result<(PathBuf, Vec<String>)> {
    let archive_conf = "archive_mode = on\narchive_command = '/bin/false'\n";
    let mut c = Cluster::init(
        &work.path.join("backlog-src"),
        archive_conf,
        &["--wal-segsize=1"],
    )?;
    c.start()?;
    c.sql("create table t (x text)")?;
    let mut names = Vec::new();
    for _ in 0..count {
        c.sql("insert into t select md5(g::text) from generate_series(1, 2000) g")?;
        names.push(c.sql("select pg_walfile_name(pg_switch_wal())")?);
    }
    c.stop()?;
    let data = work.path.join("fake-data");
    let pg_wal = data.join("pg_wal");
    fs::create_dir_all(pg_wal.join("archive_status"))?;
    for n in &names {
        fs::copy(c.data.join("pg_wal").join(n), pg_wal.join(n))?;
        fs::write(pg_wal.join("archive_status").join(format!("{n}.ready")), "")?;
    }
    Ok((data, names))
}

// ---------------------------------------------------------------------------
// walg wal-status

/// How `walg wal-status` looks at a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Look {
    /// Through the server's socket only (SQL, no data directory).
    Sql,
    /// Through the socket and the data directory (`--pgdata`).
    Online,
    /// The data directory only, the server down (`--pgdata --offline`).
    Offline,
}

impl Look {
    /// The report's `mode` for this look.
    pub fn mode(self) -> &'static str {
        match self {
            Look::Sql | Look::Online => "online",
            Look::Offline => "offline",
        }
    }
}

/// Runs `walg wal-status --json` with `extra` flags as the server's user
/// (HOME `home`) against `cluster`; returns the exit code and the report,
/// and prints its headline. The file system is the machine's: its free
/// space, and how soon a test's burst of WAL would fill it, are not what a
/// scenario looks at, so those thresholds are set out of the way.
pub fn wal_status(
    walg: &Path,
    cluster: &Cluster,
    home: &Path,
    look: Look,
    extra: &[&str],
) -> Result<(i32, Value)> {
    let mut cmd = pg::as_postgres(walg);
    cmd.args(["wal-status", "--json"])
        .args(["--fs-free-warn", "0.5", "--fs-free-crit", "0.1"])
        .args(["--full-warn", "1m", "--full-crit", "30s"])
        .args(extra)
        .env("HOME", home)
        .env_remove("PGDATA");
    if look != Look::Offline {
        cmd.env("PGHOST", &cluster.dir)
            .env("PGPORT", cluster.port.to_string())
            .env("PGUSER", "postgres");
    }
    match look {
        Look::Sql => {}
        Look::Online => {
            cmd.arg("--pgdata").arg(&cluster.data);
        }
        Look::Offline => {
            cmd.arg("--pgdata").arg(&cluster.data).arg("--offline");
        }
    }
    let out = cmd.output().context("run walg wal-status")?;
    let code = code(&out);
    let printed = stdout(&out);
    let v: Value = serde_json::from_str(&printed).with_context(|| {
        format!(
            "wal-status printed no JSON (exit {code})\nstdout: {printed}\nstderr: {}",
            stderr(&out)
        )
    })?;
    say(&format!(
        "  {:<7}: {}",
        match look {
            Look::Sql => "sql",
            Look::Online => "online",
            Look::Offline => "offline",
        },
        v["headline"].as_str().unwrap_or("?")
    ));
    Ok((code, v))
}

/// The exit code `wal-status` documents for a status (0 OK, 1 WARNING,
/// 2 CRITICAL, 3 UNKNOWN).
pub fn status_code(status: &str) -> i32 {
    match status {
        "OK" => 0,
        "WARNING" => 1,
        "CRITICAL" => 2,
        _ => 3,
    }
}

// ---------------------------------------------------------------------------
// What a storage holds

/// Whether `n` is a WAL segment name (24 hex digits).
pub fn is_segment(n: &str) -> bool {
    n.len() == 24 && n.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The file names (not paths) under `wal_005/` of the file storage at
/// `root`; empty when there is none.
pub fn stored_names(root: &Path) -> BTreeSet<String> {
    fs::read_dir(root.join("wal_005"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Every file below `dir`, sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Every file below `dir` with its size.
pub fn sizes_under(dir: &Path) -> Vec<(PathBuf, u64)> {
    files_under(dir)
        .into_iter()
        .map(|p| {
            let len = fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            (p, len)
        })
        .collect()
}

/// Every file below `dir` with its contents.
pub fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    files_under(dir)
        .into_iter()
        .map(|p| {
            let data = fs::read(&p).unwrap_or_default();
            (p, data)
        })
        .collect()
}

/// Total bytes and number of objects under a file-storage archive.
pub fn archive_usage(archive: &Path) -> (u64, u64) {
    let files = sizes_under(archive);
    (files.iter().map(|(_, n)| n).sum(), files.len() as u64)
}

/// One raw HTTP/1.0 request to the S3 emulator, asked directly (not
/// through a proxy, so a proxy's counts stay walg's own; moto checks no
/// signature). Fails unless the answer is 2xx; returns all of it.
pub fn s3_request(emus: &Emulators, method: &str, path_and_query: &str) -> Result<String> {
    let ep = emus
        .endpoint(Kind::S3)
        .context("the S3 emulator is not running")?;
    let addr: SocketAddr = ep
        .trim_start_matches("http://")
        .parse()
        .context("parse the S3 endpoint")?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(
        s,
        "{method} {path_and_query} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n"
    )?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    ensure!(
        body.starts_with("HTTP/1.") && body.split(' ').nth(1).is_some_and(|c| c.starts_with('2')),
        "S3 {method} {path_and_query}: {}",
        pg::tail(&body, 5)
    );
    Ok(body)
}

/// Keys under `prefix` in the S3 emulator's bucket.
pub fn s3_keys(emus: &Emulators, prefix: &str) -> Result<Vec<String>> {
    let body = s3_request(
        emus,
        "GET",
        &format!("/{BUCKET}?list-type=2&max-keys=1000&prefix={prefix}"),
    )?;
    ensure!(
        !body.contains("<IsTruncated>true"),
        "S3 listing of {prefix} truncated"
    );
    Ok(body
        .split("<Key>")
        .skip(1)
        .filter_map(|p| p.split("</Key>").next())
        .map(str::to_string)
        .collect())
}

/// A [`Proxy`] in front of the S3 emulator, passing through until told
/// otherwise.
pub fn s3_proxy(emus: &Emulators) -> Result<Proxy> {
    let moto: SocketAddr = emus
        .endpoint(Kind::S3)
        .context("the S3 emulator is not running")?
        .trim_start_matches("http://")
        .parse()?;
    Proxy::start(moto)
}
