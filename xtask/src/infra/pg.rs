//! A throwaway PostgreSQL cluster driven through the real server binaries
//! (`initdb`, `pg_ctl`, `psql`, `pg_basebackup`), run as the `postgres` OS
//! user when we are root, as PostgreSQL requires.
//!
//! Everything the server runs (the `walg` binary, its config file) must be
//! reachable by that user, so a [`Workdir`] copies them into a directory it
//! creates with permissive modes and hands ownership of cluster directories
//! to `postgres`.
//!
//! A cluster runs a [`Server`]: the system's (Debian's 15) unless a scenario
//! names another major version (installed by [`crate::infra::pg_versions`]).
//! The client programs (`psql`, `pgbench`, `pg_basebackup`, `pg_resetwal`)
//! are always the system's: psql and pgbench 15 talk to every server from 13
//! on; `pg_basebackup` 15 refuses servers newer than itself, which is why
//! [`Cluster::low_level_backup`] exists.

use std::collections::BTreeMap;
use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The directory of the PostgreSQL server binaries.
pub fn bindir() -> Result<PathBuf> {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").is_file() {
            return Ok(dir);
        }
    }
    let mut found: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => Ok(bin),
        None => bail!("no PostgreSQL server binaries: install postgresql (apt-get install postgresql) so initdb is in /usr/lib/postgresql/*/bin"),
    }
}

/// The PostgreSQL server a cluster runs: its major version and the
/// directory of its `initdb`, `pg_ctl` and `postgres`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub major: u32,
    pub bindir: PathBuf,
}

impl Server {
    /// The system's server ([`bindir`]).
    pub fn system() -> Result<Server> {
        Server::at(&bindir()?)
    }

    /// The server whose binaries are in `bindir`, its major version asked
    /// of `postgres --version` (as the server's user: it must be able to
    /// run them).
    pub fn at(bindir: &Path) -> Result<Server> {
        let out = run(as_postgres(&bindir.join("postgres")).arg("--version"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let major = major_of(&text)
            .with_context(|| format!("no major version in `postgres --version`: {text}"))?;
        Ok(Server {
            major,
            bindir: bindir.to_path_buf(),
        })
    }
}

/// The major version in `postgres --version`'s output
/// (`postgres (PostgreSQL) 18.4`, `postgres (PostgreSQL) 15.18 (Debian ...)`).
pub fn major_of(version: &str) -> Option<u32> {
    let rest = version.split("(PostgreSQL) ").nth(1)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Whether we run as root (then the server runs as `postgres`).
pub fn is_root() -> bool {
    // The owner of /proc/self is our effective uid: no unsafe libc call needed.
    fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// Makes sure the `postgres` OS user exists (root only).
pub fn ensure_postgres_user() -> Result<()> {
    if !is_root() {
        return Ok(());
    }
    let exists = Command::new("id")
        .arg("postgres")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?
        .success();
    if !exists {
        run(Command::new("useradd").args(["--system", "--create-home", "postgres"]))?;
    }
    Ok(())
}

/// A command run as the server's OS user.
pub fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// Runs a command, failing with its output when it fails.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let out = cmd.output().with_context(|| format!("run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed with {}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

/// Gives a path to the server's OS user.
pub fn chown_postgres(path: &Path) -> Result<()> {
    if is_root() {
        run(Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(path))?;
    }
    Ok(())
}

pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A directory for one test run, reachable by the server's OS user.
#[derive(Debug)]
pub struct Workdir {
    pub path: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Workdir {
    pub fn new(label: &str) -> Result<Workdir> {
        let tmp = tempfile::Builder::new()
            .prefix(&format!("walg-{label}-"))
            .tempdir_in("/tmp")?;
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755))?;
        let keep = std::env::var_os("XTASK_KEEP_WORKDIR").is_some();
        let path = tmp.path().to_path_buf();
        Ok(Workdir {
            path,
            _tmp: if keep {
                std::mem::forget(tmp);
                None
            } else {
                Some(tmp)
            },
        })
    }

    /// Copies the walg binary in so the server's user can run it.
    pub fn install_walg(&self, built: &Path) -> Result<PathBuf> {
        let dest = self.path.join("walg");
        fs::copy(built, &dest)
            .with_context(|| format!("copy {} into the work directory", built.display()))?;
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o755))?;
        Ok(dest)
    }

    /// Writes a walg config file (JSON, WAL-G keys) readable by the server.
    pub fn write_config(
        &self,
        name: &str,
        settings: &BTreeMap<String, serde_json::Value>,
    ) -> Result<PathBuf> {
        let path = self.path.join(name);
        fs::write(&path, serde_json::to_vec_pretty(settings)?)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644))?;
        Ok(path)
    }

    /// A directory owned by the server's user (an archive, say).
    pub fn owned_dir(&self, name: &str) -> Result<PathBuf> {
        let p = self.path.join(name);
        fs::create_dir_all(&p)?;
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755))?;
        chown_postgres(&p)?;
        Ok(p)
    }
}

/// One PostgreSQL cluster.
#[derive(Debug)]
pub struct Cluster {
    /// The server it runs.
    pub server: Server,
    /// The client programs' directory: the system's, whatever the server.
    pub bindir: PathBuf,
    pub dir: PathBuf,
    pub data: PathBuf,
    pub port: u16,
    pub log: PathBuf,
    running: bool,
}

impl Cluster {
    /// `initdb` a new cluster of the system's server under `dir` with the
    /// given extra settings.
    pub fn init(dir: &Path, extra_conf: &str, initdb_args: &[&str]) -> Result<Cluster> {
        Cluster::init_on(&Server::system()?, dir, extra_conf, initdb_args)
    }

    /// `initdb` a new cluster of `server` under `dir` with the given extra
    /// settings.
    pub fn init_on(
        server: &Server,
        dir: &Path,
        extra_conf: &str,
        initdb_args: &[&str],
    ) -> Result<Cluster> {
        fs::create_dir_all(dir)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
        chown_postgres(dir)?;
        let data = dir.join("data");
        run(as_postgres(&server.bindir.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data)
            .args(initdb_args))?;
        Cluster::configured(server.clone(), dir, data, extra_conf)
    }

    /// A cluster of the system's server from a base backup copied into
    /// `dir/data`.
    pub fn from_backup(backup: &Path, dir: &Path, extra_conf: &str) -> Result<Cluster> {
        Cluster::from_backup_on(&Server::system()?, backup, dir, extra_conf)
    }

    /// A cluster of `server` from a base backup copied into `dir/data`.
    pub fn from_backup_on(
        server: &Server,
        backup: &Path,
        dir: &Path,
        extra_conf: &str,
    ) -> Result<Cluster> {
        fs::create_dir_all(dir)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
        let data = dir.join("data");
        run(Command::new("cp").arg("-a").arg(backup).arg(&data))?;
        fs::set_permissions(&data, fs::Permissions::from_mode(0o700))?;
        chown_postgres(dir)?;
        Cluster::configured(server.clone(), dir, data, extra_conf)
    }

    /// A cluster whose data directory `dir/data` is in place, on a free
    /// port, with our test settings and then `extra_conf` appended.
    fn configured(server: Server, dir: &Path, data: PathBuf, extra_conf: &str) -> Result<Cluster> {
        let cluster = Cluster {
            server,
            bindir: bindir()?,
            dir: dir.to_path_buf(),
            port: free_port()?,
            log: dir.join("log"),
            data,
            running: false,
        };
        cluster.append_conf(&cluster.base_conf())?;
        cluster.append_conf(extra_conf)?;
        Ok(cluster)
    }

    /// A cluster from a base backup, set to recover (`recovery.signal`)
    /// with `conf` (its `restore_command`, say), not started yet.
    pub fn for_recovery(backup: &Path, dir: &Path, conf: &str) -> Result<Cluster> {
        Cluster::for_recovery_on(&Server::system()?, backup, dir, conf)
    }

    /// [`Cluster::for_recovery`] on `server`.
    pub fn for_recovery_on(
        server: &Server,
        backup: &Path,
        dir: &Path,
        conf: &str,
    ) -> Result<Cluster> {
        let cluster = Cluster::from_backup_on(server, backup, dir, conf)?;
        fs::write(cluster.data.join("recovery.signal"), "")?;
        chown_postgres(&cluster.data)?;
        Ok(cluster)
    }

    fn base_conf(&self) -> String {
        format!(
            "\n# walg test settings\nport = {}\nunix_socket_directories = '{}'\nlisten_addresses = ''\nwal_level = replica\n\
             fsync = off\nsynchronous_commit = off\nfull_page_writes = on\nmax_wal_senders = 4\nlog_line_prefix = '%m [%p] '\n",
            self.port,
            self.dir.display()
        )
    }

    pub fn append_conf(&self, text: &str) -> Result<()> {
        use std::io::Write;
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(self.data.join("postgresql.conf"))?;
        writeln!(f, "{text}")?;
        Ok(())
    }

    pub fn start(&mut self) -> Result<()> {
        self.start_with_env(&[])
    }

    pub fn start_with_env(&mut self, env: &[(String, String)]) -> Result<()> {
        let mut cmd = as_postgres(&self.server.bindir.join("pg_ctl"));
        cmd.arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log)
            .args(["-w", "-t", "120", "start"]);
        if is_root() {
            // runuser resets nothing we pass through env for the child, but be explicit.
            for (k, v) in env {
                cmd.env(k, v);
            }
        } else {
            cmd.envs(env.iter().map(|(k, v)| (k, v)));
        }
        let out = cmd.output()?;
        if !out.status.success() {
            bail!(
                "pg_ctl start failed: {}\nserver log:\n{}",
                String::from_utf8_lossy(&out.stderr),
                self.log_text()
            );
        }
        self.running = true;
        Ok(())
    }

    pub fn stop(&mut self) -> Result<()> {
        if self.running {
            run(as_postgres(&self.server.bindir.join("pg_ctl"))
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "fast", "-w", "stop"]))?;
            self.running = false;
        }
        Ok(())
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn psql_cmd(&self) -> Command {
        let mut c = as_postgres(&self.bindir.join("psql"));
        c.arg("-h").arg(&self.dir).args([
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-X",
            "-A",
            "-t",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
        ]);
        c
    }

    /// Runs SQL and returns the trimmed output.
    pub fn sql(&self, sql: &str) -> Result<String> {
        let out = run(self.psql_cmd().arg("-c").arg(sql))
            .with_context(|| format!("sql on port {}: {sql}", self.port))?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Polls `sql` until it returns `want`, or fails after `timeout`.
    pub fn wait_for(&self, sql: &str, want: &str, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        let mut last = String::new();
        while start.elapsed() < timeout {
            match self.sql(sql) {
                Ok(v) if v == want => return Ok(()),
                Ok(v) => last = v,
                Err(e) => last = format!("{e:#}"),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        bail!(
            "waited {timeout:?} for `{sql}` to return {want:?}; last: {last}\nserver log tail:\n{}",
            tail(&self.log_text(), 40)
        )
    }

    /// Switches to a new segment (writing something first so the switch
    /// happens) and waits until the finished segment is archived.
    pub fn switch_and_wait_archived(&self, timeout: Duration) -> Result<String> {
        self.sql(
            "create table if not exists walg_switch (x int); insert into walg_switch values (1)",
        )?;
        let seg = self.sql("select pg_walfile_name(pg_switch_wal())")?;
        self.wait_archived(&seg, timeout)?;
        Ok(seg)
    }

    /// Waits until `pg_stat_archiver` has archived `segment` (or later).
    pub fn wait_archived(&self, segment: &str, timeout: Duration) -> Result<()> {
        self.wait_for(
            &format!("select coalesce(last_archived_wal, '') >= '{segment}' from pg_stat_archiver"),
            "t",
            timeout,
        )
    }

    /// Waits until recovery has ended (the server promoted itself).
    pub fn wait_recovered(&self, timeout: Duration) -> Result<()> {
        self.wait_for("select pg_is_in_recovery()", "f", timeout)
    }

    /// Waits until `pg_stat_archiver.failed_count` reaches `n`.
    pub fn wait_failed(&self, n: u64, timeout: Duration) -> Result<()> {
        self.wait_for(
            &format!("select failed_count >= {n} from pg_stat_archiver"),
            "t",
            timeout,
        )
    }

    /// `pg_stat_archiver.archived_count`.
    pub fn archived_count(&self) -> Result<u64> {
        Ok(self
            .sql("select archived_count from pg_stat_archiver")?
            .parse()?)
    }

    /// `pg_stat_archiver.failed_count`.
    pub fn failed_count(&self) -> Result<u64> {
        Ok(self
            .sql("select failed_count from pg_stat_archiver")?
            .parse()?)
    }

    /// `pg_basebackup -X none` into `dest` (waits for the WAL it needs to be archived).
    pub fn basebackup(&self, dest: &Path) -> Result<()> {
        if let Some(parent) = dest.parent() {
            chown_postgres(parent).ok();
        }
        run(as_postgres(&self.bindir.join("pg_basebackup"))
            .arg("-h")
            .arg(&self.dir)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-X",
                "none",
                "-c",
                "fast",
                "-D",
            ])
            .arg(dest))?;
        Ok(())
    }

    /// A base backup into `dest` through the low-level API, which every
    /// server version has (`pg_basebackup` 15 refuses servers newer than
    /// itself): in one psql session, `pg_backup_start` (before 15,
    /// `pg_start_backup(label, fast, false)`: non-exclusive), the data
    /// directory copied while the session stays open, then `pg_backup_stop`
    /// (`pg_stop_backup(false)`), which waits until the WAL the backup needs
    /// is archived and returns the `labelfile` written as `backup_label`.
    /// No tablespaces, so no `tablespace_map`.
    pub fn low_level_backup(&self, dest: &Path) -> Result<()> {
        use std::io::Write;
        let (start, stop) = if self.server.major >= 15 {
            (
                "select pg_backup_start('walg e2e', true);",
                "select labelfile from pg_backup_stop();",
            )
        } else {
            (
                "select pg_start_backup('walg e2e', true, false);",
                "select labelfile from pg_stop_backup(false);",
            )
        };
        // psql runs a `\!` command only after the statement before it ended:
        // the marker says the backup has started.
        let started = self.dir.join("backup-started");
        let label_out = self.dir.join("backup-label.out");
        for f in [&started, &label_out] {
            let _ = fs::remove_file(f);
        }
        let mut psql = self
            .psql_cmd()
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("start psql for the base backup")?;
        let mut stdin = psql.stdin.take().context("psql stdin")?;
        writeln!(stdin, "{start}\n\\! touch {}", started.display())?;
        stdin.flush()?;
        let deadline = Instant::now() + Duration::from_secs(120);
        while !started.exists() {
            if psql.try_wait()?.is_some() || Instant::now() > deadline {
                drop(stdin);
                let out = psql.wait_with_output()?;
                bail!(
                    "{start} did not complete: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        copy_data_dir(&self.data, dest)
            .with_context(|| format!("copy {} to {}", self.data.display(), dest.display()))?;
        writeln!(stdin, "\\o {}\n{stop}\n\\o\n\\q", label_out.display())?;
        drop(stdin);
        loop {
            if let Some(status) = psql.try_wait()? {
                let mut err = String::new();
                if let Some(mut e) = psql.stderr.take() {
                    use std::io::Read;
                    e.read_to_string(&mut err)?;
                }
                if !status.success() {
                    bail!("{stop} failed with {status}: {err}");
                }
                break;
            }
            if Instant::now() > deadline {
                let _ = psql.kill();
                let _ = psql.wait();
                bail!(
                    "{stop} did not return in time (the WAL the backup needs not archived?)\nserver log tail:\n{}",
                    tail(&self.log_text(), 40)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Unaligned tuples-only output: the value and one newline after it.
        let label = fs::read_to_string(&label_out)
            .with_context(|| format!("read {}", label_out.display()))?;
        let label = label.strip_suffix('\n').unwrap_or(&label);
        if !label.starts_with("START WAL LOCATION:") {
            bail!("{stop} returned no labelfile: {label:?}");
        }
        fs::write(dest.join("backup_label"), label)?;
        fs::set_permissions(dest, fs::Permissions::from_mode(0o700))?;
        chown_postgres(dest)
    }

    /// Runs pgbench with the given arguments against this cluster.
    pub fn pgbench(&self, args: &[&str]) -> Result<String> {
        let out = run(&mut self.pgbench_command(args))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The pgbench command [`Cluster::pgbench`] runs, for a load run on
    /// another thread while the test goes on.
    pub fn pgbench_command(&self, args: &[&str]) -> Command {
        let mut c = as_postgres(&self.bindir.join("pgbench"));
        c.arg("-h")
            .arg(&self.dir)
            .args(["-p", &self.port.to_string(), "-U", "postgres"])
            .args(args)
            .arg("postgres");
        c
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.running {
            let _ = as_postgres(&self.server.bindir.join("pg_ctl"))
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "immediate", "-w", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Directories of a data directory whose contents a base backup leaves
/// out (PostgreSQL's "Backing Up the Data Directory"): the server recreates
/// or refills them; `pg_wal` comes from the archive.
const BACKUP_EMPTIED: &[&str] = &[
    "pg_wal",
    "pg_replslot",
    "pg_dynshmem",
    "pg_notify",
    "pg_serial",
    "pg_snapshots",
    "pg_stat_tmp",
    "pg_subtrans",
];

/// Files of a data directory a base backup leaves out.
const BACKUP_SKIPPED: &[&str] = &["postmaster.pid", "postmaster.opts", "backup_label"];

/// Copies a running cluster's data directory as a base backup does: the
/// directories of [`BACKUP_EMPTIED`] empty (`pg_wal/archive_status` made),
/// [`BACKUP_SKIPPED`] and `pg_internal.init` left out, and a file that
/// vanishes while we copy (the server removes temporary files) skipped.
pub fn copy_data_dir(src: &Path, dest: &Path) -> Result<()> {
    fn walk(src: &Path, dest: &Path, top: bool) -> Result<()> {
        fs::create_dir_all(dest)?;
        let entries = match fs::read_dir(src) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("list {}", src.display())),
        };
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let from = entry.path();
            let to = dest.join(&*name);
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                if top && BACKUP_EMPTIED.contains(&&*name) {
                    fs::create_dir_all(&to)?;
                    if name == "pg_wal" {
                        fs::create_dir_all(to.join("archive_status"))?;
                    }
                } else {
                    walk(&from, &to, false)?;
                }
            } else if (top && BACKUP_SKIPPED.contains(&&*name)) || name == "pg_internal.init" {
                continue;
            } else {
                match fs::copy(&from, &to) {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e).with_context(|| format!("copy {}", from.display())),
                }
            }
        }
        Ok(())
    }
    walk(src, dest, true)
}

pub fn tail(text: &str, lines: usize) -> String {
    let v: Vec<&str> = text.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// A checksum of a table's contents, stable across clusters.
pub fn table_digest(c: &Cluster, table: &str) -> Result<String> {
    c.sql(&format!("select count(*) || ':' || coalesce(md5(string_agg(md5(t::text), '' order by t::text)), '') from {table} t"))
}

#[cfg(test)]
mod tests {
    use super::major_of;

    fn check(version: &str, expected: Option<u32>) {
        assert_eq!(major_of(version), expected, "{version:?}");
    }

    #[test]
    fn major_of_reads_postgres_version() {
        check("postgres (PostgreSQL) 18.4\n", Some(18));
        check(
            "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n",
            Some(15),
        );
        check("postgres (PostgreSQL) 19beta1\n", Some(19));
        check("postgres (PostgreSQL) 9.6.24\n", Some(9));
        check("something else", None);
    }
}
