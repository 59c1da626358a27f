//! A connection to PostgreSQL configured the way libpq would configure it.
//!
//! tokio-postgres reads no environment variable and no password file, so
//! this module maps libpq's (`PGHOST`, `PGPORT`, `PGUSER`, `PGDATABASE`,
//! `PGPASSWORD`, `PGPASSFILE`, `PGSSLMODE`, `PGCONNECT_TIMEOUT`,
//! `PGAPPNAME`, `PGOPTIONS`) onto a `tokio_postgres::Config`, with the same
//! precedence as libpq: a keyword in `--conninfo` beats the environment,
//! which beats the defaults. A host starting with `/` is a Unix socket
//! directory; with no host at all, the usual socket directories are tried.
//!
//! Deliberately not here: TLS (`sslmode=require` and stricter are refused
//! with a clear error rather than silently connecting in clear text) and
//! `PGSERVICE` files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::{Client, Config, NoTls};

/// Socket directories libpq builds use by default (Debian's first, then
/// upstream's), tried in this order when no host is given.
const DEFAULT_SOCKET_DIRS: &[&str] = &["/var/run/postgresql", "/tmp"];

/// How long a connection attempt may take when `PGCONNECT_TIMEOUT` is unset:
/// libpq waits forever, a monitoring command must not.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the connection settings come from: a conninfo string (keyword=value
/// or a `postgresql://` URI) and the libpq environment variables.
#[derive(Debug, Clone, Default)]
pub struct ConnSource {
    pub conninfo: Option<String>,
    /// libpq variables (`PGHOST`, ...), usually from the process environment.
    pub env: BTreeMap<String, String>,
    /// The home directory, for `~/.pgpass`.
    pub home: Option<PathBuf>,
}

impl ConnSource {
    /// The conninfo string plus the libpq variables of this process.
    pub fn from_env(conninfo: Option<String>) -> ConnSource {
        let env = std::env::vars()
            .filter(|(k, _)| k.starts_with("PG"))
            .collect();
        ConnSource {
            conninfo,
            env,
            home: std::env::var_os("HOME").map(PathBuf::from),
        }
    }

    fn var(&self, name: &str) -> Option<&str> {
        self.env
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

/// A connection target, described without its password (for messages).
#[derive(Debug, Clone)]
pub struct Target {
    pub config: Config,
    pub description: String,
}

/// Builds the tokio-postgres configuration from `src`, as libpq would.
pub fn config(src: &ConnSource) -> Result<Target> {
    let mut cfg = match &src.conninfo {
        Some(s) => Config::from_str(s).map_err(|e| anyhow!("parse --conninfo: {e}"))?,
        None => Config::new(),
    };
    if cfg.get_hosts().is_empty() {
        let hosts: Vec<String> = match src.var("PGHOST") {
            Some(h) => h.split(',').map(|s| s.trim().to_string()).collect(),
            None => DEFAULT_SOCKET_DIRS
                .iter()
                .filter(|d| Path::new(d).is_dir())
                .map(|d| d.to_string())
                .collect(),
        };
        if hosts.is_empty() {
            bail!(
                "no PostgreSQL host: set PGHOST (a host name, or a Unix socket directory such as /var/run/postgresql) or --conninfo"
            );
        }
        for h in hosts {
            if h.starts_with('/') {
                cfg.host_path(h);
            } else {
                cfg.host(&h);
            }
        }
    }
    if cfg.get_hostaddrs().is_empty() {
        if let Some(a) = src.var("PGHOSTADDR") {
            for a in a.split(',') {
                let ip = a
                    .trim()
                    .parse()
                    .map_err(|_| anyhow!("PGHOSTADDR {a:?} is not an IP address"))?;
                cfg.hostaddr(ip);
            }
        }
    }
    if cfg.get_ports().is_empty() {
        if let Some(p) = src.var("PGPORT") {
            for p in p.split(',') {
                let port = p
                    .trim()
                    .parse()
                    .map_err(|_| anyhow!("PGPORT {p:?} is not a port number"))?;
                cfg.port(port);
            }
        }
    }
    if cfg.get_user().is_none() {
        let user = src
            .var("PGUSER")
            .map(str::to_string)
            .or_else(os_user)
            .context("no PostgreSQL user: set PGUSER")?;
        cfg.user(&user);
    }
    if cfg.get_dbname().is_none() {
        let db = src
            .var("PGDATABASE")
            .map(str::to_string)
            .or_else(|| cfg.get_user().map(str::to_string));
        if let Some(db) = db {
            cfg.dbname(&db);
        }
    }
    if cfg.get_password().is_none() {
        if let Some(p) = src.var("PGPASSWORD") {
            cfg.password(p);
        } else if let Some(p) = passfile_password(src, &cfg) {
            cfg.password(p);
        }
    }
    if cfg.get_connect_timeout().is_none() {
        let t = match src.var("PGCONNECT_TIMEOUT") {
            Some(t) => {
                let secs: u64 = t
                    .trim()
                    .parse()
                    .map_err(|_| anyhow!("PGCONNECT_TIMEOUT {t:?} is not a number of seconds"))?;
                // libpq: 0 means wait forever, and values below 2 mean 2.
                if secs == 0 {
                    DEFAULT_CONNECT_TIMEOUT
                } else {
                    Duration::from_secs(secs.max(2))
                }
            }
            None => DEFAULT_CONNECT_TIMEOUT,
        };
        cfg.connect_timeout(t);
    }
    if cfg.get_application_name().is_none() {
        cfg.application_name(src.var("PGAPPNAME").unwrap_or("walg"));
    }
    if cfg.get_options().is_none() {
        if let Some(o) = src.var("PGOPTIONS") {
            cfg.options(o);
        }
    }
    let explicit_ssl = src
        .conninfo
        .as_deref()
        .is_some_and(|c| c.contains("sslmode"));
    let sslmode = if explicit_ssl {
        None
    } else {
        src.var("PGSSLMODE")
    };
    match sslmode {
        Some("disable") | Some("allow") => {
            cfg.ssl_mode(SslMode::Disable);
        }
        Some("prefer") | None => {
            if !explicit_ssl {
                cfg.ssl_mode(SslMode::Prefer);
            }
        }
        Some(m @ ("require" | "verify-ca" | "verify-full")) => {
            bail!("PGSSLMODE={m}: walg connects without TLS; use a Unix socket or a trusted network, or unset PGSSLMODE")
        }
        Some(m) => bail!("PGSSLMODE={m:?} is not an sslmode (disable, allow, prefer, require, verify-ca, verify-full)"),
    }
    if cfg.get_ssl_mode() == SslMode::Require {
        bail!("sslmode=require: walg connects without TLS; use a Unix socket or a trusted network");
    }
    let description = describe(&cfg);
    Ok(Target {
        config: cfg,
        description,
    })
}

/// `user@host:port/db`, no password.
fn describe(cfg: &Config) -> String {
    let host = cfg
        .get_hosts()
        .iter()
        .map(|h| match h {
            Host::Tcp(h) => h.clone(),
            Host::Unix(p) => p.display().to_string(),
        })
        .collect::<Vec<_>>()
        .join(",");
    let port = cfg
        .get_ports()
        .first()
        .map(|p| p.to_string())
        .unwrap_or_else(|| "5432".into());
    format!(
        "{}@{}:{}/{}",
        cfg.get_user().unwrap_or("?"),
        host,
        port,
        cfg.get_dbname().unwrap_or("?")
    )
}

/// The name of the OS user running walg (libpq's default user name).
fn os_user() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").ok()?.uid().to_string();
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() >= 3 && f[2] == uid).then(|| f[0].to_string())
    })
}

/// The password from `PGPASSFILE` or `~/.pgpass`, as libpq finds it: the
/// first matching line; a file group or others can read is ignored with a
/// warning, as libpq does.
fn passfile_password(src: &ConnSource, cfg: &Config) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let path = match src.var("PGPASSFILE") {
        Some(p) => PathBuf::from(p),
        None => src.home.as_ref()?.join(".pgpass"),
    };
    let meta = std::fs::metadata(&path).ok()?;
    if !meta.is_file() {
        return None;
    }
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            "password file {} has group or world access; it is ignored (chmod 0600 it)",
            path.display()
        );
        return None;
    }
    let text = std::fs::read_to_string(&path).ok()?;
    let host = match cfg.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => {
            let p = p.display().to_string();
            // libpq matches the default socket directory as "localhost".
            if DEFAULT_SOCKET_DIRS.contains(&p.as_str()) {
                "localhost".to_string()
            } else {
                p
            }
        }
        None => "localhost".to_string(),
    };
    let port = cfg
        .get_ports()
        .first()
        .map(|p| p.to_string())
        .unwrap_or_else(|| "5432".into());
    let fields = [
        host.as_str(),
        port.as_str(),
        cfg.get_dbname().unwrap_or(""),
        cfg.get_user().unwrap_or(""),
    ];
    pgpass_lookup(&text, &fields)
}

/// Splits one `.pgpass` line into its five fields, honouring `\:` and `\\`.
fn pgpass_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    if let Some(last) = fields.last_mut() {
                        last.push(n);
                    }
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => {
                if let Some(last) = fields.last_mut() {
                    last.push(c);
                }
            }
        }
    }
    fields
}

/// The password of the first line matching `[host, port, db, user]`.
pub fn pgpass_lookup(text: &str, want: &[&str; 4]) -> Option<String> {
    for line in text.lines() {
        if line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let f = pgpass_fields(line);
        if f.len() != 5 {
            continue;
        }
        if f[..4].iter().zip(want).all(|(f, w)| f == "*" || f == w) {
            return Some(f[4].clone());
        }
    }
    None
}

/// Connects and drives the connection in the background of the current
/// runtime. Every query the caller makes should still be bounded by a
/// timeout of its own; `statement_timeout` is set for the session too.
pub async fn connect(target: &Target) -> Result<Client> {
    let timeout = target
        .config
        .get_connect_timeout()
        .copied()
        .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    let attempt = target.config.connect(NoTls);
    let (client, connection) = tokio::time::timeout(timeout + Duration::from_secs(1), attempt)
        .await
        .map_err(|_| {
            anyhow!(
                "connect to {}: timed out after {timeout:?}",
                target.description
            )
        })?
        .with_context(|| format!("connect to {}", target.description))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("postgres connection ended: {e}");
        }
    });
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(conninfo: Option<&str>, env: &[(&str, &str)]) -> ConnSource {
        ConnSource {
            conninfo: conninfo.map(str::to_string),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            home: None,
        }
    }

    #[test]
    fn env_maps_like_libpq() {
        let t = config(&src(
            None,
            &[
                ("PGHOST", "/run/pg"),
                ("PGPORT", "5433"),
                ("PGUSER", "mon"),
                ("PGPASSWORD", "s3cret"),
                ("PGCONNECT_TIMEOUT", "1"),
            ],
        ))
        .expect("config");
        let c = &t.config;
        assert_eq!(c.get_hosts(), &[Host::Unix("/run/pg".into())]);
        assert_eq!(c.get_ports(), &[5433]);
        assert_eq!(c.get_user(), Some("mon"));
        assert_eq!(c.get_dbname(), Some("mon"), "dbname defaults to the user");
        assert_eq!(c.get_password(), Some(&b"s3cret"[..]));
        assert_eq!(c.get_connect_timeout(), Some(&Duration::from_secs(2)));
        assert!(!t.description.contains("s3cret"));
    }

    #[test]
    fn conninfo_beats_environment() {
        let t = config(&src(
            Some("host=db1 port=6000 user=a dbname=x"),
            &[("PGHOST", "db2"), ("PGPORT", "7000"), ("PGUSER", "b")],
        ))
        .expect("config");
        assert_eq!(t.config.get_hosts(), &[Host::Tcp("db1".into())]);
        assert_eq!(t.config.get_ports(), &[6000]);
        assert_eq!(t.config.get_user(), Some("a"));
        assert_eq!(t.config.get_dbname(), Some("x"));
    }

    #[test]
    fn bad_settings_are_clear_errors() {
        let e = config(&src(None, &[("PGHOST", "h"), ("PGPORT", "x")])).expect_err("bad PGPORT");
        assert!(e.to_string().contains("PGPORT"), "{e}");
        let e = config(&src(None, &[("PGHOST", "h"), ("PGSSLMODE", "verify-full")]))
            .expect_err("verify-full");
        assert!(e.to_string().contains("PGSSLMODE"), "{e}");
        let e = config(&src(Some("host=h sslmode=require"), &[])).expect_err("sslmode=require");
        assert!(e.to_string().contains("sslmode"), "{e}");
    }

    #[test]
    fn pgpass_rules() {
        let text = "# comment\n\
                    other:5432:*:*:no\n\
                    localhost:5432:db\\:x:mon:pa\\:ss\n\
                    *:*:*:mon:fallback\n";
        assert_eq!(
            pgpass_lookup(text, &["localhost", "5432", "db:x", "mon"]).as_deref(),
            Some("pa:ss")
        );
        assert_eq!(
            pgpass_lookup(text, &["h", "1", "d", "mon"]).as_deref(),
            Some("fallback")
        );
        assert_eq!(pgpass_lookup(text, &["h", "1", "d", "u"]), None);
    }
}
