//! Cloud storage without keys (issue 22): every credential source of every
//! backend against the fake identity services of [`crate::infra::identity`]
//! and the emulators, run as the server runs walg (the `postgres` user when
//! root), with an environment of exactly the variables a pod would get and
//! `WALG_LOG_LEVEL=trace`.
//!
//! - [`s3_sources`]: web identity (IRSA) with an STS endpoint override,
//!   container credentials (EKS Pod Identity, token file), IMDSv2 and a
//!   shared credentials profile each archive and restore a real segment;
//!   static keys win over all of them;
//! - [`s3_broken`]: a configured source that fails is an error naming the
//!   source and the setting, exit 1, nothing stored, and never the instance
//!   role instead (the defect that opened the issue): an unreadable token
//!   file, an expired token, an STS refusal, a half-configured role, a
//!   hanging metadata endpoint (bounded by `WALG_STORAGE_TIMEOUT`), a
//!   malformed credentials file;
//! - [`refresh`]: credentials that expire within the signer's margin are
//!   fetched again within one call; long-lived ones once per call;
//! - [`failover_own_identity`]: a failover section uses its own identity and
//!   borrows the primary's only with `WALG_IDENTITY_FROM_ENV=true`;
//! - [`gcs_sources`]: the GCE metadata server and a workload identity
//!   federation file through fake-gcs-server (which ignores tokens: the
//!   fake's checked calls prove walg's side);
//! - [`azure_sources`]: workload identity and a user-assigned managed
//!   identity through an Azurite of its own with TLS and `--oauth basic`,
//!   which checks the bearer token's audience, issuer and expiry.
//!
//! Every walg call's output is checked for every secret the fakes handed out
//! and every token they were sent.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context, Result};

use super::fixture::{
    code, emulator_settings, s3_keys, say, stderr, stdout, unique_path, LocalSegment, Set,
    Settings, Walg,
};
use super::Env;
use crate::infra::emulators::{self, Emulators, Kind, AZURE_ACCOUNT, BUCKET};
use crate::infra::identity::{self, Behaviour, FakeIdentity, TENANT};
use crate::infra::pg::{self, Workdir};

const ROLE: &str = "arn:aws:iam::123456789012:role/walg-archiver";
const CLIENT_ID: &str = "6f1c0d1e-0000-4000-8000-00000000c11d";

/// A work directory, walg installed with a config, a real segment, a HOME
/// of its own, and the fake identity services.
struct Bench {
    work: Workdir,
    walg: Walg,
    seg: LocalSegment,
    home: PathBuf,
    fake: FakeIdentity,
    /// Every output so far, for the secret check.
    outputs: std::cell::RefCell<Vec<String>>,
    /// Values no output may contain (tokens sent to the fakes).
    sent: Vec<String>,
}

impl Bench {
    fn new(e: &Env, label: &str, settings: &Settings) -> Result<Bench> {
        let work = Workdir::new(label)?;
        let walg = Walg::new(&work, &e.walg, "walg.json", settings)?;
        let seg = LocalSegment::new(&work, &[])?;
        let home = work.owned_dir("home")?;
        let token = identity::service_account_token(3600);
        let fake = FakeIdentity::start(Behaviour {
            token: token.clone(),
            container_auth: container_auth(),
            identity_header: format!("identity-header-{}", std::process::id()),
            client_id: CLIENT_ID.to_string(),
            lifetime: Duration::from_secs(3600),
            sts_denies: false,
        })?;
        Ok(Bench {
            sent: vec![token],
            work,
            walg,
            seg,
            home,
            fake,
            outputs: Default::default(),
        })
    }

    /// A file only the server's user can read (0600), holding `text`.
    fn secret_file(&self, name: &str, text: &str) -> Result<String> {
        let p = self.work.path.join(name);
        fs::write(&p, text)?;
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600))?;
        pg::chown_postgres(&p)?;
        Ok(p.display().to_string())
    }

    /// The token file the fakes expect.
    fn token_file(&self) -> Result<String> {
        self.secret_file("token", &self.sent[0])
    }

    /// walg as the server runs it, with exactly `env` (plus PATH, HOME and
    /// trace logging).
    fn walg(&self, env: &[(&str, String)], args: &[&str]) -> Result<Output> {
        let mut c: Command = pg::as_postgres(&self.walg.bin);
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.home)
            .env("WALG_LOG_LEVEL", "trace")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .arg("--config")
            .arg(&self.walg.config)
            .args(args)
            .stdin(Stdio::null());
        let out = c.output().with_context(|| format!("run walg {args:?}"))?;
        self.outputs
            .borrow_mut()
            .push(format!("{}{}", stdout(&out), stderr(&out)));
        Ok(out)
    }

    /// `walg st check`'s line for `storage`.
    fn check_line(&self, env: &[(&str, String)], storage: &str) -> Result<String> {
        let out = self.walg(env, &["st", "check"])?;
        stdout(&out)
            .lines()
            .find(|l| l.starts_with(&format!("{storage}: ")))
            .map(str::to_string)
            .with_context(|| {
                format!(
                    "walg st check printed no line for {storage}: {}{}",
                    stdout(&out),
                    pg::tail(&stderr(&out), 15)
                )
            })
    }

    /// `walg check`'s storage row, `OK    storage default  ...`.
    fn walg_check_row(&self, env: &[(&str, String)]) -> Result<String> {
        let out = self.walg(env, &["check"])?;
        let text = stdout(&out);
        text.lines()
            .find(|l| {
                let w: Vec<&str> = l.split_whitespace().take(3).collect();
                w.len() == 3 && w[1] == "storage" && w[2] == "default"
            })
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .with_context(|| format!("walg check printed no storage row: {text}"))
    }

    /// Pushes the segment and fetches it back; both must succeed.
    fn round_trip(&self, env: &[(&str, String)], what: &str) -> Result<()> {
        let out = self.walg(env, &["wal-push", &self.seg.arg()])?;
        ensure!(
            code(&out) == 0,
            "{what}: wal-push failed ({}): {}",
            code(&out),
            pg::tail(&stderr(&out), 10)
        );
        let dest = self.work.owned_dir("restore")?.join(&self.seg.name);
        let _ = fs::remove_file(&dest);
        let out = self.walg(
            env,
            &["wal-fetch", &self.seg.name, &dest.display().to_string()],
        )?;
        ensure!(
            code(&out) == 0,
            "{what}: wal-fetch failed ({}): {}",
            code(&out),
            pg::tail(&stderr(&out), 10)
        );
        ensure!(
            fs::read(&dest)? == self.seg.bytes,
            "{what}: the restored segment differs from the pushed one"
        );
        Ok(())
    }

    /// A wal-push that must fail with exit 1 and say each of `needles` in
    /// its first error line; returns that line.
    fn push_fails(&self, env: &[(&str, String)], needles: &[&str]) -> Result<String> {
        let out = self.walg(env, &["wal-push", &self.seg.arg()])?;
        let err = stderr(&out);
        ensure!(
            code(&out) == 1,
            "wal-push should exit 1, got {}: {}",
            code(&out),
            pg::tail(&err, 10)
        );
        let line = err
            .lines()
            .find(|l| l.contains("ERROR") || l.starts_with("walg") || l.contains("error"))
            .unwrap_or("")
            .to_string();
        let all = err.replace('\n', " ");
        for n in needles {
            ensure!(
                all.contains(n),
                "wal-push's error should name {n:?}: {}",
                pg::tail(&err, 8)
            );
        }
        Ok(if line.is_empty() {
            pg::tail(&err, 1)
        } else {
            line
        })
    }

    /// No output so far holds a secret the fakes issued or were sent.
    fn no_secret_in_output(&self) -> Result<()> {
        let mut secrets = self.fake.issued_secrets();
        secrets.extend(self.sent.iter().cloned());
        let outputs = self.outputs.borrow();
        for (i, text) in outputs.iter().enumerate() {
            for s in &secrets {
                ensure!(
                    !text.contains(s.as_str()),
                    "output of walg call {i} holds a secret handed out by the fake identity service ({}...): {}",
                    &s[..s.len().min(12)],
                    text.lines()
                        .find(|l| l.contains(s.as_str()))
                        .unwrap_or("")
                        .replace(s.as_str(), "<SECRET>")
                );
            }
        }
        say(&format!(
            "no secret of {} in {} walg outputs at trace level ({} lines)",
            secrets.len(),
            outputs.len(),
            outputs.iter().map(|o| o.lines().count()).sum::<usize>()
        ));
        Ok(())
    }
}

fn env(pairs: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    pairs.to_vec()
}

/// The S3 emulator's settings under a fresh path, without the static keys.
fn s3_without_keys(emus: &Emulators, label: &str) -> Result<(Settings, String)> {
    let path = unique_path(label);
    let mut s = emulator_settings(emus, Kind::S3, &path)?;
    s.remove("AWS_ACCESS_KEY_ID");
    s.remove("AWS_SECRET_ACCESS_KEY");
    s.set("WALG_STORAGE_RETRIES", 0);
    Ok((s, path))
}

fn stored(emus: &Emulators, path: &str, name: &str) -> Result<bool> {
    Ok(s3_keys(emus, path)?.iter().any(|k| k.contains(name)))
}

/// S3: each source archives and restores; static keys win.
pub fn s3_sources(e: &Env) -> Result<()> {
    let (settings, path) = s3_without_keys(&e.emus, "identity-s3")?;
    let b = Bench::new(e, "identity-s3", &settings)?;
    let token_file = b.token_file()?;
    let f = &b.fake;
    let imds = format!("{}/imds", f.url());

    // Web identity (IRSA), STS at the fake; the node's IMDS is there too
    // and must not be asked.
    let irsa = env(&[
        ("AWS_ROLE_ARN", ROLE.to_string()),
        ("AWS_WEB_IDENTITY_TOKEN_FILE", token_file.clone()),
        ("AWS_ROLE_SESSION_NAME", "pg-main".to_string()),
        ("AWS_ENDPOINT_URL_STS", format!("{}/sts", f.url())),
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.clone()),
    ]);
    let line = b.check_line(&irsa, "default")?;
    ensure!(
        line.contains(&format!(
            "credentials from web identity role {ROLE} (token file {token_file}, STS {}/sts)",
            f.url()
        )),
        "st check: {line}"
    );
    say(&format!("web identity: {line}"));
    say(&format!("walg check: {}", b.walg_check_row(&irsa)?));
    b.round_trip(&irsa, "web identity")?;
    ensure!(f.calls("sts") >= 3, "STS calls: {}", f.summary());
    ensure!(
        f.refused("sts") == 0 && f.calls("imds-credentials") == 0,
        "web identity: {} {:?}",
        f.summary(),
        f.problems()
    );
    ensure!(
        f.problems()
            .iter()
            .any(|p| p.contains(ROLE) && p.contains("session pg-main")),
        "STS saw another role or session name: {:?}",
        f.problems()
    );
    say(&format!(
        "web identity: pushed and fetched; fake {}",
        f.summary()
    ));

    // Container credentials: EKS Pod Identity (token file).
    f.reset();
    let auth_file = b.secret_file("pod-identity-token", &container_auth())?;
    let pod = env(&[
        (
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            format!("{}/container/creds", f.url()),
        ),
        ("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", auth_file.clone()),
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.clone()),
    ]);
    let line = b.check_line(&pod, "default")?;
    ensure!(
        line.contains(&format!("credentials from container credentials {}/container/creds (authorization token file {auth_file})", f.url())),
        "st check: {line}"
    );
    say(&format!("pod identity: {line}"));
    say(&format!("walg check: {}", b.walg_check_row(&pod)?));
    b.round_trip(&pod, "pod identity")?;
    ensure!(
        f.calls("container") >= 3
            && f.refused("container") == 0
            && f.calls("imds-credentials") == 0,
        "pod identity: {} {:?}",
        f.summary(),
        f.problems()
    );

    // Instance metadata (IMDSv2).
    f.reset();
    let vm = env(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.clone())]);
    let line = b.check_line(&vm, "default")?;
    ensure!(
        line.contains(&format!(
            "credentials from instance metadata (IMDSv2 at {imds})"
        )),
        "st check: {line}"
    );
    say(&format!("instance metadata: {line}"));
    say(&format!("walg check: {}", b.walg_check_row(&vm)?));
    b.round_trip(&vm, "instance metadata")?;
    ensure!(
        f.calls("imds-token") >= 1
            && f.calls("imds-credentials") >= 1
            && f.refused("imds-credentials") == 0,
        "instance metadata: {} {:?}",
        f.summary(),
        f.problems()
    );

    // A shared credentials file and a named profile.
    f.reset();
    let creds = b.secret_file(
        "aws-credentials",
        "[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = default-secret-value\n\n[archive]\naws_access_key_id = AKIDARCHIVE\naws_secret_access_key = archive-secret-value-123\n",
    )?;
    let profile = env(&[
        ("AWS_PROFILE", "archive".to_string()),
        ("AWS_SHARED_CREDENTIALS_FILE", creds.clone()),
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.clone()),
    ]);
    let line = b.check_line(&profile, "default")?;
    ensure!(
        line.contains(&format!("credentials from profile \"archive\" ({creds} or")),
        "st check: {line}"
    );
    say(&format!("profile: {line}"));
    say(&format!("walg check: {}", b.walg_check_row(&profile)?));
    b.round_trip(&profile, "profile")?;
    ensure!(f.calls("imds-credentials") == 0, "profile: {}", f.summary());

    // Static keys win over every other source configured at once.
    f.reset();
    let mut all = irsa.clone();
    all.extend(pod.iter().cloned());
    all.extend(profile.iter().cloned());
    all.push(("AWS_ACCESS_KEY_ID", "AKIDSTATICWINS".to_string()));
    all.push((
        "AWS_SECRET_ACCESS_KEY",
        "static-secret-value-456".to_string(),
    ));
    let line = b.check_line(&all, "default")?;
    ensure!(
        line.contains("credentials from static keys (key id \"AKIDSTATICWINS\")"),
        "st check: {line}"
    );
    say(&format!("static keys: {line}"));
    say(&format!("walg check: {}", b.walg_check_row(&all)?));
    b.round_trip(&all, "static keys")?;
    ensure!(
        f.calls("sts") + f.calls("container") + f.calls("imds-credentials") + f.refused("sts") == 0,
        "static keys asked an identity service: {}",
        f.summary()
    );
    ensure!(
        stored(&e.emus, &path, &b.seg.name)?,
        "the segment is not in the bucket"
    );
    let mut b = b;
    b.sent.push("default-secret-value".into());
    b.sent.push("archive-secret-value-123".into());
    b.sent.push("static-secret-value-456".into());
    b.sent.push(container_auth());
    b.sent.push("imds-session-token-of-the-fake".into());
    b.no_secret_in_output()
}

/// S3: a configured source that fails is an error, never a fallback.
pub fn s3_broken(e: &Env) -> Result<()> {
    let (mut settings, path) = s3_without_keys(&e.emus, "identity-broken")?;
    settings.set("WALG_STORAGE_TIMEOUT", "2s");
    let b = Bench::new(e, "identity-broken", &settings)?;
    let f = &b.fake;
    let imds = format!("{}/imds", f.url());
    let irsa = |token_file: &str| {
        env(&[
            ("AWS_ROLE_ARN", ROLE.to_string()),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token_file.to_string()),
            ("AWS_ENDPOINT_URL_STS", format!("{}/sts", f.url())),
            // The node's role answers: walg must not take it.
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.clone()),
        ])
    };

    // The issue's defect: a token file the server's user cannot read.
    let unreadable = b.work.path.join("root-only-token");
    fs::write(&unreadable, &b.sent[0])?;
    fs::set_permissions(&unreadable, fs::Permissions::from_mode(0o000))?;
    let unreadable = unreadable.display().to_string();
    let line = b.push_fails(
        &irsa(&unreadable),
        &[
            "identity",
            "web identity role",
            ROLE,
            &unreadable,
            "not readable",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
        ],
    )?;
    say(&format!("unreadable token file: {line}"));

    // A token that expired.
    let expired = b.secret_file("expired-token", &identity::service_account_token(-300))?;
    let line = b.push_fails(
        &irsa(&expired),
        &[
            "web identity role",
            &expired,
            "expired",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
        ],
    )?;
    say(&format!("expired token: {line}"));

    // STS refuses.
    let token_file = b.token_file()?;
    f.behave(|b| b.sts_denies = true);
    let line = b.push_fails(
        &irsa(&token_file),
        &["web identity role", "AccessDenied", "AWS_ROLE_ARN"],
    )?;
    f.behave(|b| b.sts_denies = false);
    say(&format!("STS error: {line}"));
    ensure!(f.refused("sts") >= 1, "STS was not asked: {}", f.summary());

    // Half a role.
    let half = env(&[
        ("AWS_ROLE_ARN", ROLE.to_string()),
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.clone()),
    ]);
    let line = b.push_fails(&half, &["AWS_WEB_IDENTITY_TOKEN_FILE"])?;
    say(&format!("role without token file: {line}"));

    // A malformed shared credentials file.
    let bad = b.secret_file("bad-credentials", "[default\naws_access_key_id AKID\n=\n")?;
    let malformed = env(&[
        ("AWS_SHARED_CREDENTIALS_FILE", bad.clone()),
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.clone()),
    ]);
    let line = b.push_fails(
        &malformed,
        &["profile \"default\"", &bad, "AWS_SHARED_CREDENTIALS_FILE"],
    )?;
    say(&format!("malformed credentials file: {line}"));

    // Never the node's role instead, and nothing stored.
    ensure!(
        f.calls("imds-credentials") == 0 && f.calls("imds-token") == 0,
        "a broken source fell back to instance metadata: {}",
        f.summary()
    );
    ensure!(
        !stored(&e.emus, &path, &b.seg.name)?,
        "a failed push stored the segment"
    );

    // A metadata endpoint that accepts and never answers: bounded.
    let started = std::time::Instant::now();
    let hang = env(&[(
        "AWS_EC2_METADATA_SERVICE_ENDPOINT",
        format!("{}/hang", f.url()),
    )]);
    let line = b.push_fails(
        &hang,
        &[
            "instance metadata",
            "no answer",
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
            "WALG_STORAGE_TIMEOUT",
        ],
    )?;
    say(&format!(
        "hanging metadata endpoint: {line} (returned after {:.1} s, WALG_STORAGE_TIMEOUT=2s)",
        started.elapsed().as_secs_f64()
    ));
    ensure!(f.calls("hang") >= 1, "the hanging endpoint was not asked");
    ensure!(
        !stored(&e.emus, &path, &b.seg.name)?,
        "a failed push stored the segment"
    );
    let mut b = b;
    b.sent.push("aws_access_key_id AKID".into());
    b.no_secret_in_output()
}

/// Credentials that expire within the signer's margin are fetched again
/// within one call.
pub fn refresh(e: &Env) -> Result<()> {
    let (settings, _) = s3_without_keys(&e.emus, "identity-refresh")?;
    let mut b = Bench::new(e, "identity-refresh", &settings)?;
    let irsa = env(&[
        ("AWS_ROLE_ARN", ROLE.to_string()),
        ("AWS_WEB_IDENTITY_TOKEN_FILE", b.token_file()?),
        ("AWS_ENDPOINT_URL_STS", format!("{}/sts", b.fake.url())),
    ]);
    // The same call twice, each into a fresh prefix (the archive identity
    // read and written, the segment checked and written: several signed
    // requests), once with credentials for an hour, once for 60 s.
    let mut counts = Vec::new();
    for lifetime in [3600, 60] {
        let (settings, _) = s3_without_keys(&e.emus, &format!("identity-refresh-{lifetime}"))?;
        b.walg = Walg::new(
            &b.work,
            &e.walg,
            &format!("refresh-{lifetime}.json"),
            &settings,
        )?;
        b.fake.reset();
        b.fake
            .behave(|x| x.lifetime = Duration::from_secs(lifetime));
        let out = b.walg(&irsa, &["wal-push", &b.seg.arg()])?;
        ensure!(code(&out) == 0, "wal-push: {}", pg::tail(&stderr(&out), 8));
        counts.push(b.fake.calls("sts"));
    }
    // An hour: fetched once per call. 60 s is under the two minutes the
    // signer wants left, so each request of the same call gets fresh
    // credentials before the old ones expire.
    ensure!(
        counts[0] == 1,
        "credentials valid for an hour were fetched {} times in one call",
        counts[0]
    );
    ensure!(
        counts[1] >= 2,
        "credentials expiring within the refresh margin were fetched only {} times in one call",
        counts[1]
    );
    say(&format!(
        "STS calls in one wal-push: {} with 1 h credentials, {} with 60 s credentials",
        counts[0], counts[1]
    ));
    b.no_secret_in_output()
}

/// A failover section does not inherit the primary's identity.
pub fn failover_own_identity(e: &Env) -> Result<()> {
    let (mut settings, _) = s3_without_keys(&e.emus, "identity-failover")?;
    let mut backup = emulator_settings(&e.emus, Kind::S3, &unique_path("identity-failover-b"))?;
    backup.remove("AWS_ACCESS_KEY_ID");
    backup.remove("AWS_SECRET_ACCESS_KEY");
    let b0 = Bench::new(e, "identity-failover", &settings)?;
    let imds = format!("{}/imds", b0.fake.url());
    backup.set("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.clone());
    let cache = b0.work.owned_dir("cache")?.join("status.json");
    settings.set(
        "WALG_FAILOVER_STORAGES_CACHE_FILE",
        cache.display().to_string(),
    );
    settings.set(
        "WALG_FAILOVER_STORAGES",
        serde_json::json!({ "backup": backup.clone() }),
    );
    let mut b = b0;
    b.walg = Walg::new(&b.work, &e.walg, "failover.json", &settings)?;
    let f = &b.fake;
    let irsa = env(&[
        ("AWS_ROLE_ARN", ROLE.to_string()),
        ("AWS_WEB_IDENTITY_TOKEN_FILE", b.token_file()?),
        ("AWS_ENDPOINT_URL_STS", format!("{}/sts", f.url())),
    ]);
    let out = b.walg(&irsa, &["st", "check"])?;
    let text = stdout(&out);
    ensure!(
        code(&out) == 0,
        "st check: {text}{}",
        pg::tail(&stderr(&out), 8)
    );
    ensure!(
        text.contains(&format!(
            "default: alive (read probe; credentials from web identity role {ROLE}"
        )) && text.contains(&format!(
            "backup: alive (read probe; credentials from instance metadata (IMDSv2 at {imds}))"
        )),
        "st check: {text}"
    );
    ensure!(
        f.calls("sts") >= 1 && f.calls("imds-credentials") >= 1,
        "each storage should have used its own identity: {}",
        f.summary()
    );
    say(&format!(
        "own identity: {}",
        text.trim().replace('\n', " | ")
    ));

    // With WALG_IDENTITY_FROM_ENV the section takes the environment's role.
    backup.set("WALG_IDENTITY_FROM_ENV", true);
    backup.remove("AWS_EC2_METADATA_SERVICE_ENDPOINT");
    settings.set(
        "WALG_FAILOVER_STORAGES",
        serde_json::json!({ "backup": backup }),
    );
    b.walg = Walg::new(&b.work, &e.walg, "failover-inherit.json", &settings)?;
    f.reset();
    let out = b.walg(&irsa, &["st", "check"])?;
    let text = stdout(&out);
    ensure!(
        text.contains(&format!(
            "backup: alive (read probe; credentials from web identity role {ROLE}"
        )),
        "st check with WALG_IDENTITY_FROM_ENV: {text}{}",
        pg::tail(&stderr(&out), 8)
    );
    ensure!(
        f.calls("sts") >= 2 && f.calls("imds-credentials") == 0,
        "both storages should have assumed the role: {}",
        f.summary()
    );
    say(&format!(
        "WALG_IDENTITY_FROM_ENV=true: {}",
        text.trim().replace('\n', " | ")
    ));
    b.no_secret_in_output()
}

/// GCS: the metadata server and a workload identity federation file.
pub fn gcs_sources(e: &Env) -> Result<()> {
    let settings = emulator_settings(&e.emus, Kind::Gcs, &unique_path("identity-gcs"))?;
    let b = Bench::new(e, "identity-gcs", &settings)?;
    let f = &b.fake;
    let gke = env(&[("GCE_METADATA_HOST", f.host())]);
    let line = b.check_line(&gke, "default")?;
    ensure!(
        line.contains(&format!(
            "credentials from metadata server (http://{})",
            f.host()
        )),
        "st check: {line}"
    );
    say(&format!("GCE metadata server: {line}"));
    say(&format!("walg check: {}", b.walg_check_row(&gke)?));
    b.round_trip(&gke, "metadata server")?;
    ensure!(
        f.calls("gce-metadata") >= 1 && f.refused("gce-metadata") == 0,
        "metadata server: {} {:?}",
        f.summary(),
        f.problems()
    );

    f.reset();
    let token_file = b.token_file()?;
    let audience =
        "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/pg/providers/k8s";
    let config = b.secret_file(
        "wif.json",
        &serde_json::json!({
            "type": "external_account",
            "audience": audience,
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "token_url": format!("{}/gcp/token", f.url()),
            "credential_source": {"file": token_file, "format": {"type": "text"}},
        })
        .to_string(),
    )?;
    let wif = env(&[("GOOGLE_APPLICATION_CREDENTIALS", config.clone())]);
    let line = b.check_line(&wif, "default")?;
    ensure!(
        line.contains(&format!("credentials from workload identity federation {audience} ({config}, token file {token_file})")),
        "st check: {line}"
    );
    say(&format!("workload identity federation: {line}"));
    say(&format!("walg check: {}", b.walg_check_row(&wif)?));
    b.round_trip(&wif, "workload identity federation")?;
    ensure!(
        f.calls("gcp-sts") >= 1 && f.refused("gcp-sts") == 0,
        "workload identity federation: {} {:?}",
        f.summary(),
        f.problems()
    );

    // A malformed credentials file is an error naming it.
    let bad = b.secret_file("bad.json", "{\"type\": \"service_account\", ")?;
    let line = b.push_fails(
        &env(&[
            ("GOOGLE_APPLICATION_CREDENTIALS", bad.clone()),
            ("GCE_METADATA_HOST", f.host()),
        ]),
        &[&bad, "malformed", "GOOGLE_APPLICATION_CREDENTIALS"],
    )?;
    ensure!(
        f.calls("gce-metadata") == 0,
        "a broken file fell back to the metadata server"
    );
    say(&format!("malformed credentials file: {line}"));
    b.no_secret_in_output()
}

/// Azure: workload identity and a managed identity through an Azurite with
/// TLS and OAuth.
pub fn azure_sources(e: &Env) -> Result<()> {
    let work = Workdir::new("identity-azurite")?;
    let tls = work.path.join("tls");
    fs::create_dir_all(&tls)?;
    let (ca, pem) = crate::bench::s3::make_certificates(&tls)?;
    let port = pg::free_port()?;
    let log = work.path.join("azurite.log");
    let out = fs::File::create(&log)?;
    let child = Command::new(emulators::azurite_blob(&e.repo))
        .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
        .args([
            "--inMemoryPersistence",
            "--disableTelemetry",
            "--skipApiVersionCheck",
            "--loose",
        ])
        .args(["--oauth", "basic"])
        .arg("--cert")
        .arg(tls.join("cert.pem"))
        .arg("--key")
        .arg(tls.join("key.pem"))
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .context("start Azurite with TLS and OAuth")?;
    let _azurite = Kill(child);
    let _ = pem;
    let endpoint = format!("https://127.0.0.1:{port}/{AZURE_ACCOUNT}");
    // The container, created with a bearer token (and a junk token refused:
    // this Azurite checks tokens).
    let token = identity::jwt(&format!(
        r#"{{"aud":"https://storage.azure.com","iss":"https://sts.windows.net/{TENANT}/","nbf":{n},"iat":{n},"exp":{x},"oid":"setup","tid":"{TENANT}"}}"#,
        n = now() - 60,
        x = now() + 600
    ));
    let script = format!(
        "import ssl, urllib.request, time, sys\nctx = ssl.create_default_context(cafile={ca:?})\ndef put(tok):\n    r = urllib.request.Request('{endpoint}/{BUCKET}?restype=container', method='PUT', headers={{'Authorization': 'Bearer ' + tok, 'x-ms-version': '2021-08-06', 'Content-Length': '0'}})\n    try:\n        return urllib.request.urlopen(r, context=ctx, timeout=10).status\n    except urllib.error.HTTPError as e:\n        return e.code\nfor i in range(100):\n    try:\n        junk = put('junk.junk.junk')\n        break\n    except Exception:\n        time.sleep(0.2)\nelse:\n    sys.exit('Azurite did not start')\nprint(junk, put('{token}'))\n",
        ca = ca.display().to_string()
    );
    let out = pg::run(
        Command::new(emulators::python(&e.repo))
            .arg("-c")
            .arg(&script),
    )
    .with_context(|| format!("create the container; Azurite log: {}", log.display()))?;
    let codes = String::from_utf8_lossy(&out.stdout).trim().to_string();
    ensure!(
        codes == "403 201",
        "Azurite with --oauth basic answered {codes} to a junk and a valid token (want 403 201)"
    );
    say("Azurite (TLS, --oauth basic): a junk bearer token is refused (403), a valid one creates the container (201)");

    let mut settings = Settings::new();
    settings.set(
        "WALG_AZ_PREFIX",
        format!("azure://{BUCKET}/{}", unique_path("identity-az")),
    );
    settings.set("WALG_AZ_ENDPOINT", endpoint.clone());
    settings.set("AZURE_STORAGE_ACCOUNT", AZURE_ACCOUNT);
    settings.set("WALG_STORAGE_RETRIES", 0);
    let b = Bench::new(e, "identity-azure", &settings)?;
    let f = &b.fake;
    let ssl = ("SSL_CERT_FILE", ca.display().to_string());

    let workload = env(&[
        ("AZURE_CLIENT_ID", CLIENT_ID.to_string()),
        ("AZURE_TENANT_ID", TENANT.to_string()),
        ("AZURE_FEDERATED_TOKEN_FILE", b.token_file()?),
        ("AZURE_AUTHORITY_HOST", f.url()),
        ssl.clone(),
    ]);
    let line = b.check_line(&workload, "default")?;
    ensure!(
        line.contains(&format!(
            "credentials from workload identity client {CLIENT_ID} in tenant {TENANT}"
        )),
        "st check: {line}"
    );
    say(&format!("workload identity: {line}"));
    say(&format!("walg check: {}", b.walg_check_row(&workload)?));
    b.round_trip(&workload, "workload identity")?;
    ensure!(
        f.calls("entra") >= 1 && f.refused("entra") == 0,
        "workload identity: {} {:?}",
        f.summary(),
        f.problems()
    );

    f.reset();
    let header = format!("identity-header-{}", std::process::id());
    let managed = env(&[
        ("AZURE_CLIENT_ID", CLIENT_ID.to_string()),
        ("IDENTITY_ENDPOINT", format!("{}/msi/token", f.url())),
        ("IDENTITY_HEADER", header.clone()),
        ssl.clone(),
    ]);
    let line = b.check_line(&managed, "default")?;
    ensure!(
        line.contains(&format!(
            "credentials from managed identity client {CLIENT_ID} ({}/msi/token)",
            f.url()
        )),
        "st check: {line}"
    );
    say(&format!("managed identity: {line}"));
    say(&format!("walg check: {}", b.walg_check_row(&managed)?));
    b.round_trip(&managed, "managed identity")?;
    ensure!(
        f.calls("msi") >= 1 && f.refused("msi") == 0,
        "managed identity: {} {:?}",
        f.summary(),
        f.problems()
    );

    // Half a workload identity.
    let line = b.push_fails(
        &env(&[
            ("AZURE_FEDERATED_TOKEN_FILE", b.token_file()?),
            ("AZURE_CLIENT_ID", CLIENT_ID.into()),
            ssl,
        ]),
        &["AZURE_TENANT_ID"],
    )?;
    say(&format!("workload identity without tenant: {line}"));
    let mut b = b;
    b.sent.push(header);
    b.sent.push(token);
    b.no_secret_in_output()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Kills a child on drop.
struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The container endpoint's authorization token (the fake expects it).
fn container_auth() -> String {
    format!("pod-identity-{}", std::process::id())
}
