//! The bench's S3: s3s-fs on 127.0.0.1 behind TLS proxies, once direct and
//! once through the shaping proxy, so both peers pay the same TLS and the
//! same simulated network.
//!
//! It does not measure anything, and is not the e2e scenarios' S3 (moto, in
//! [`crate::infra::emulators`]), which serves one request at a time.

use std::fs::{self, File};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};

use super::cases::Storage;
use super::children::Group;
use crate::infra::emulators::BUCKET;
use crate::infra::pg;
use crate::infra::proxy::{Proxy, Shape};
use crate::infra::setup;
use crate::target_dir;

/// s3s-fs on 127.0.0.1, behind two TLS proxies (socat): one straight to
/// it, one through the shaping proxy. Both peers use TLS: pgBackRest speaks
/// S3 over https only, and walg trusts the proxies' self-signed certificate
/// through `SSL_CERT_FILE`, so neither pays a cost the other does not.
#[derive(Debug)]
pub(super) struct S3 {
    /// The server's root; the bucket is the directory [`BUCKET`] in it.
    pub(super) root: PathBuf,
    /// The CA certificate walg is given (pgBackRest does not verify).
    pub(super) cert: PathBuf,
    pub(super) tls_port: u16,
    pub(super) shaped_tls_port: u16,
    pub(super) _tls: Group,
    pub(super) _shaped_tls: Group,
    pub(super) _shaper: Proxy,
    pub(super) _server: Group,
}

/// The version of s3s-fs that builds with this machine's Rust.
pub(super) const S3S_VERSION: &str = "0.14.1";
pub(super) const S3_KEY: &str = "walg-test";
pub(super) const S3_SECRET: &str = "walg-test-secret";
/// What a network to a cloud region adds: one round trip per request and
/// per new connection, and one stream's bandwidth.
pub(super) const SHAPE: Shape = Shape {
    round_trip: Duration::from_millis(20),
    bytes_per_sec: 100_000_000,
};

/// Installs s3s-fs under `<repo>/.tmp/tools/s3s` (once; ~5 minutes on two
/// cores) and returns the binary.
pub(super) fn install_s3s(repo: &Path) -> Result<PathBuf> {
    let root = repo.join(".tmp/tools/s3s");
    let bin = root.join("bin/s3s-fs");
    if bin.is_file() {
        return Ok(bin);
    }
    println!("bench: installing s3s-fs {S3S_VERSION} (cargo install, once) ...");
    let status = crate::cargo(repo)
        .args([
            "install",
            &format!("s3s-fs@{S3S_VERSION}"),
            "--locked",
            "--features",
            "binary",
            "--root",
        ])
        .arg(&root)
        .env("CARGO_TARGET_DIR", target_dir(repo).join("s3s-fs"))
        .status()
        .context("run cargo install s3s-fs")?;
    ensure!(
        status.success(),
        "cargo install s3s-fs@{S3S_VERSION} failed"
    );
    Ok(bin)
}

pub(super) fn wait_listening(port: u16, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        ensure!(
            Instant::now() < deadline,
            "{what} did not listen on port {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// `socat` terminating TLS on `port` and forwarding to `upstream`.
pub(super) fn tls_proxy(pem: &Path, port: u16, upstream: u16, log: &Path) -> Result<Group> {
    let log = File::create(log)?;
    let child = Command::new("socat")
        .arg("-b262144")
        .arg(format!(
            "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert={},verify=0",
            pem.display()
        ))
        .arg(format!("TCP:127.0.0.1:{upstream},nodelay"))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("start socat as a TLS proxy")?;
    let group = Group(child);
    wait_listening(port, "the TLS proxy")?;
    Ok(group)
}

/// A CA and a server certificate for 127.0.0.1 signed by it (rustls, like
/// any strict client, refuses a self-signed CA certificate used as the
/// server's own). Returns the CA certificate (what clients trust) and the
/// proxies' key + certificate file.
pub(crate) fn make_certificates(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let p = |name: &str| dir.join(name);
    let openssl = |args: &[&str]| -> Result<()> {
        pg::run(Command::new("openssl").args(args).current_dir(dir))
            .map(|_| ())
            .with_context(|| format!("openssl {}", args[0]))
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=walg bench CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ])?;
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "key.pem",
        "-out",
        "server.csr",
    ])?;
    fs::write(
        p("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "cert.pem",
    ])?;
    fs::write(
        p("proxy.pem"),
        [fs::read(p("key.pem"))?, fs::read(p("cert.pem"))?].concat(),
    )
    .context("write the proxies' pem file")?;
    fs::set_permissions(p("proxy.pem"), fs::Permissions::from_mode(0o600))?;
    fs::set_permissions(p("ca.pem"), fs::Permissions::from_mode(0o644))?;
    Ok((p("ca.pem"), p("proxy.pem")))
}

impl S3 {
    pub(super) fn start(repo: &Path, work: &Path) -> Result<S3> {
        let bin = install_s3s(repo)?;
        if !setup::have("socat") {
            setup::apt(&["socat"])?;
        }
        let root = work.join("s3s");
        fs::create_dir_all(root.join(BUCKET))?;
        let port = pg::free_port()?;
        let log = File::create(work.join("s3s-fs.log"))?;
        let server = Group(
            Command::new(&bin)
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--access-key", S3_KEY, "--secret-key", S3_SECRET])
                .arg(&root)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .process_group(0)
                .spawn()
                .context("start s3s-fs")?,
        );
        wait_listening(port, "s3s-fs")?;
        let shaper = Proxy::start_shaped(format!("127.0.0.1:{port}").parse()?, SHAPE)?;
        let shaper_port: u16 = shaper
            .url()
            .rsplit(':')
            .next()
            .unwrap_or_default()
            .parse()
            .context("the shaping proxy's port")?;

        let tls = work.join("tls");
        fs::create_dir_all(&tls)?;
        let (cert, pem) = make_certificates(&tls)?;
        fs::set_permissions(&tls, fs::Permissions::from_mode(0o755))?;
        let tls_port = pg::free_port()?;
        let tls_proxy_plain = tls_proxy(&pem, tls_port, port, &tls.join("socat.log"))?;
        let shaped_tls_port = pg::free_port()?;
        let tls_proxy_shaped = tls_proxy(
            &pem,
            shaped_tls_port,
            shaper_port,
            &tls.join("socat-shaped.log"),
        )?;
        Ok(S3 {
            root,
            cert,
            tls_port,
            shaped_tls_port,
            _tls: tls_proxy_plain,
            _shaped_tls: tls_proxy_shaped,
            _shaper: shaper,
            _server: server,
        })
    }

    pub(super) fn port(&self, storage: Storage) -> u16 {
        match storage {
            Storage::S3Shaped => self.shaped_tls_port,
            _ => self.tls_port,
        }
    }

    /// walg's settings for `storage`, archiving under `prefix`.
    pub(super) fn walg_settings(
        &self,
        storage: Storage,
        prefix: &str,
    ) -> Vec<(&'static str, String)> {
        vec![
            ("WALG_S3_PREFIX", format!("s3://{BUCKET}/{prefix}")),
            (
                "AWS_ENDPOINT",
                format!("https://127.0.0.1:{}", self.port(storage)),
            ),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_S3_FORCE_PATH_STYLE", "true".into()),
            ("AWS_ACCESS_KEY_ID", S3_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", S3_SECRET.into()),
        ]
    }

    /// Removes every object (the bucket is a directory).
    pub(super) fn reset(&self) -> Result<()> {
        let bucket = self.root.join(BUCKET);
        for entry in fs::read_dir(&bucket)? {
            let path = entry?.path();
            if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            }
            .with_context(|| format!("remove {}", path.display()))?;
        }
        Ok(())
    }
}
