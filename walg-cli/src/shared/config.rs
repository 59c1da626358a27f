//! Configuration: figment layers parsed into a raw map of WAL-G setting
//! names, then validated into the typed values the library crates take.
//!
//! Layers, lowest first: built-in defaults < config file < environment.
//! Flags are applied by the commands on top. The config file is the first
//! of: `--config`, `WALG_CONFIG_PATH`, `$HOME/.walg.json` if it exists,
//! [`SYSTEM_CONFIG`] if it exists (what the Debian package installs). JSON,
//! TOML or YAML by extension, with WAL-G's upper-case keys.
//!
//! Only this crate reads the environment and config files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use figment::providers::{Env, Format, Json, Toml, Yaml};
use figment::Figment;
use serde_json::Value;
use walg_core::archive::gaps::Budget;
use walg_core::crypto::{sodium_key, trim_key_file, Encryption, KeyError, KeyTransform, SodiumKey};
use walg_core::Compression;
use walg_failover::{DrainConfig, DrainMode, FailoverConfig, WritePolicy};

/// The failover-section setting that marks a spill storage.
pub const SPILL_SETTING: &str = "WALG_FAILOVER_SPILL";
use walg_storage::{Settings, StorageSpec};

/// Prefixes of environment variables that are ours or WAL-G's storage settings.
const ENV_PREFIXES: &[&str] = &[
    "WALG_",
    "AWS_",
    "GOOGLE_",
    "AZURE_",
    "GCS_",
    "STORAGE_EMULATOR_HOST",
    "S3_",
    // Encryption settings outside the WALG_ namespace, read only to refuse them.
    "WALE_GPG_KEY_ID",
    "YC_CSE_KMS_KEY_ID",
];

/// The settings that choose the storage, in WAL-G's order of precedence.
const PREFIX_SETTINGS: &[(&str, &str)] = &[
    ("WALG_S3_PREFIX", "s3"),
    ("WALG_GS_PREFIX", "gs"),
    ("WALG_AZ_PREFIX", "azure"),
    ("WALG_FILE_PREFIX", "file"),
];

/// Settings walg understands; any other `WALG_*` key gets a warning (it may
/// be a WAL-G setting for a feature walg lacks).
const KNOWN_WALG: &[&str] = &[
    "WALG_S3_PREFIX",
    "WALG_GS_PREFIX",
    "WALG_AZ_PREFIX",
    "WALG_FILE_PREFIX",
    "WALG_COMPRESSION_METHOD",
    "WALG_PREVENT_WAL_OVERWRITE",
    "WALG_UPLOAD_CONCURRENCY",
    "WALG_UPLOAD_AHEAD_MEMORY",
    "WALG_DOWNLOAD_CONCURRENCY",
    "WALG_CONFIG_PATH",
    "WALG_FAILOVER_STORAGES",
    "WALG_FAILOVER_STORAGES_CHECK",
    "WALG_FAILOVER_STORAGES_CHECK_TIMEOUT",
    "WALG_FAILOVER_STORAGES_CHECK_SIZE",
    "WALG_FAILOVER_STORAGES_CACHE_LIFETIME",
    "WALG_FAILOVER_STORAGES_CACHE_FILE",
    "WALG_FAILOVER_STORAGES_WRITE_POLICY",
    "WALG_FAILOVER_STORAGES_DRAIN",
    "WALG_FAILOVER_STORAGES_DRAIN_MAX_FILES",
    "WALG_FAILOVER_STORAGES_DRAIN_MAX_TIME",
    "WALG_TARGET_STORAGE",
    "WALG_STORAGE_TIMEOUT",
    "WALG_STORAGE_RETRIES",
    "WALG_PREFETCH_DIR",
    "WALG_LOG_LEVEL",
    "WALG_S3_STORAGE_CLASS",
    "WALG_S3_SSE",
    "WALG_S3_SSE_KMS_ID",
    "WALG_GS_ENDPOINT",
    "WALG_AZ_ENDPOINT",
    "WALG_LIBSODIUM_KEY",
    "WALG_LIBSODIUM_KEY_PATH",
    "WALG_LIBSODIUM_KEY_TRANSFORM",
    "WALG_LIBSODIUM_OLD_KEYS",
    "WALG_LIBSODIUM_OLD_KEYS_PATH",
    "WALG_PGP_KEY",
    "WALG_PGP_KEY_PATH",
    "WALG_PGP_KEY_PASSPHRASE",
    "WALG_STATUS_EXTERNAL_ARCHIVER",
    "WALG_IDENTITY_FROM_ENV",
    "WALG_PG_WAL_BUDGET",
];

/// Environment variables outside the prefixes above that choose or configure
/// a workload identity (see walg-storage's `credentials`); `HOME` locates
/// `~/.aws/credentials` and gcloud's well-known file.
const IDENTITY_ENV: &[&str] = &[
    "HOME",
    "GCE_METADATA_HOST",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
];

/// WAL-G encryption settings walg does not implement (cloud KMS, envelope
/// encryption, keys fetched from an external gpg). Archiving in clear text
/// what the user asked to be encrypted would be a silent leak, so each is an
/// error, never a warning.
const UNSUPPORTED_ENCRYPTION: &[&str] = &[
    "WALG_GPG_KEY_ID",
    "WALE_GPG_KEY_ID",
    "WALG_CSE_KMS_ID",
    "YC_CSE_KMS_KEY_ID",
    "WALG_ENVELOPE_PGP_KEY",
    "WALG_ENVELOPE_PGP_KEY_PATH",
    "WALG_ENVELOPE_PGP_YC_CSE_KMS_KEY_ID",
];

/// The system-wide config file, read when no other is given.
pub const SYSTEM_CONFIG: &str = "/etc/walg/walg.json";

/// The config file used when neither `--config` nor `WALG_CONFIG_PATH` is
/// given: `$HOME/.walg.json` (WAL-G's default), else [`SYSTEM_CONFIG`],
/// whichever exists first.
pub fn default_config_file() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| Path::new(&h).join(".walg.json"));
    home.into_iter()
        .chain(std::iter::once(PathBuf::from(SYSTEM_CONFIG)))
        .find(|p| p.is_file())
}

/// Settings that hold key material: taken from the environment verbatim
/// (figment would read a key made only of digits as a number), never handed
/// to storage backends, never printed.
const KEY_SETTINGS: &[&str] = &[
    "WALG_LIBSODIUM_KEY",
    "WALG_LIBSODIUM_OLD_KEYS",
    "WALG_PGP_KEY",
    "WALG_PGP_KEY_PASSPHRASE",
    "WALG_ENVELOPE_PGP_KEY",
];

/// Whether a setting is one of the encryption settings: they are global
/// (like compression), so storage backends never see them.
fn is_encryption_setting(key: &str) -> bool {
    key.starts_with("WALG_LIBSODIUM_")
        || key.starts_with("WALG_PGP_")
        || key.starts_with("WALG_ENVELOPE_")
        || KEY_SETTINGS.contains(&key)
}

/// The merged settings, by upper-case WAL-G name.
#[derive(Clone, Default)]
pub struct Raw {
    values: BTreeMap<String, Value>,
    /// Where the config file came from, for messages.
    pub source: Option<PathBuf>,
}

impl std::fmt::Debug for Raw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut m = f.debug_map();
        for (k, v) in &self.values {
            if KEY_SETTINGS.contains(&k.as_str()) || Settings::is_secret(k) {
                m.entry(k, &"***");
            } else {
                m.entry(k, v);
            }
        }
        m.finish()
    }
}

fn value_to_string(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        other => Some(other.to_string()),
    }
}

impl Raw {
    /// Loads the layers. `config` is the `--config` flag.
    pub fn load(config: Option<&Path>) -> Result<Raw> {
        let path = match config {
            Some(p) => Some(p.to_path_buf()),
            None => match std::env::var_os("WALG_CONFIG_PATH").filter(|v| !v.is_empty()) {
                Some(p) => Some(PathBuf::from(p)),
                None => default_config_file(),
            },
        };
        let mut figment = Figment::new();
        if let Some(path) = &path {
            if !path.is_file() {
                bail!("config file {} does not exist or is not a file (given by --config or WALG_CONFIG_PATH)", path.display());
            }
            if let Err(e) = std::fs::File::open(path) {
                if e.kind() == std::io::ErrorKind::PermissionDenied {
                    bail!("config file {} is not readable by this user: {e}; it must be readable by the user PostgreSQL runs as (the package installs it as root:postgres, mode 0640)", path.display());
                }
                return Err(e).with_context(|| format!("open config file {}", path.display()));
            }
            figment = file_layer(figment, path);
        }
        figment = figment.merge(
            Env::raw()
                .lowercase(false)
                .filter(|k| ENV_PREFIXES.iter().any(|p| k.as_str().starts_with(p))),
        );
        let map: BTreeMap<String, Value> = figment.extract().with_context(|| match &path {
            Some(p) => format!("read config file {}", p.display()),
            None => "read settings from the environment".to_string(),
        })?;
        let mut values: BTreeMap<String, Value> = map
            .into_iter()
            .map(|(k, v)| (k.to_ascii_uppercase(), v))
            .collect();
        for key in KEY_SETTINGS.iter().chain(IDENTITY_ENV) {
            if let Ok(v) = std::env::var(key) {
                values.insert(key.to_string(), Value::String(v));
            }
        }
        Ok(Raw {
            values,
            source: path,
        })
    }

    /// Builds a `Raw` from explicit values (tests).
    #[cfg(test)]
    pub fn from_pairs(pairs: &[(&str, Value)]) -> Raw {
        Raw {
            values: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            source: None,
        }
    }

    pub fn get(&self, key: &str) -> Option<String> {
        self.values
            .get(key)
            .and_then(value_to_string)
            .filter(|s| !s.trim().is_empty())
    }

    pub fn value(&self, key: &str) -> Option<&Value> {
        self.values.get(key)
    }

    pub fn bool(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => match v.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => bail!("{key}={v:?} is not a boolean (use true or false)"),
            },
        }
    }

    pub fn u64(&self, key: &str, default: u64) -> Result<u64> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse()
                .with_context(|| format!("{key}={v:?} is not a whole number")),
        }
    }

    pub fn duration(&self, key: &str, default: Duration) -> Result<Duration> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => parse_duration(&v)
                .with_context(|| format!("{key}={v:?} is not a duration (such as 30s, 5m, 1h)")),
        }
    }

    /// Unknown `WALG_*` keys, for one warning each.
    pub fn unknown_keys(&self) -> Vec<&str> {
        self.values
            .keys()
            .filter(|k| k.starts_with("WALG_") && !KNOWN_WALG.contains(&k.as_str()))
            .map(String::as_str)
            .collect()
    }

    /// Every scalar setting as a string, for storage backends.
    fn settings(&self) -> Settings {
        self.values
            .iter()
            .filter(|(k, _)| k.as_str() != "WALG_FAILOVER_STORAGES" && !is_encryption_setting(k))
            .filter_map(|(k, v)| value_to_string(v).map(|s| (k.clone(), s)))
            .collect()
    }
}

/// Adds the config file at `path` to `figment`, in the format its
/// extension says (JSON by default).
fn file_layer(figment: Figment, path: &Path) -> Figment {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "toml" => figment.merge(Toml::file_exact(path)),
        "yaml" | "yml" => figment.merge(Yaml::file_exact(path)),
        _ => figment.merge(Json::file_exact(path)),
    }
}

/// The settings written in the config file at `path` alone (no
/// environment), by upper-case name, failover sections as nested maps.
pub fn file_values(path: &Path) -> Result<BTreeMap<String, Value>> {
    let map: BTreeMap<String, Value> = file_layer(Figment::new(), path)
        .extract()
        .with_context(|| format!("read config file {}", path.display()))?;
    Ok(map
        .into_iter()
        .map(|(k, v)| (k.to_ascii_uppercase(), v))
        .collect())
}

/// Whether a setting holds a secret: key material or a storage credential.
pub fn is_secret_setting(key: &str) -> bool {
    let key = key.to_ascii_uppercase();
    KEY_SETTINGS.contains(&key.as_str()) || Settings::is_secret(&key)
}

/// The placeholder the packaged example config (`/etc/walg/walg.json`)
/// holds in every value a user must change (see xtask's `dist`).
pub const PLACEHOLDER: &str = "change-me";

/// Visits every scalar setting of `values`, failover sections included, as
/// `(path, key, value)`: `path` is `WALG_FAILOVER_STORAGES.backup.` for a
/// setting of the failover storage `backup`, empty at the top level.
pub fn visit_settings(values: &BTreeMap<String, Value>, f: &mut dyn FnMut(&str, &str, &Value)) {
    fn walk(
        path: &str,
        map: &serde_json::Map<String, Value>,
        f: &mut dyn FnMut(&str, &str, &Value),
    ) {
        for (k, v) in map {
            match v {
                Value::Object(inner) => walk(&format!("{path}{k}."), inner, f),
                v => f(path, k, v),
            }
        }
    }
    for (k, v) in values {
        match v {
            Value::Object(inner) => walk(&format!("{k}."), inner, f),
            // The environment gives the failover map as a JSON string.
            Value::String(text) if k == "WALG_FAILOVER_STORAGES" => {
                match serde_json::from_str::<serde_json::Map<String, Value>>(text) {
                    Ok(inner) => walk(&format!("{k}."), &inner, f),
                    Err(_) => f("", k, v),
                }
            }
            v => f("", k, v),
        }
    }
}

impl Raw {
    /// Settings (failover sections included) still holding the packaged
    /// example's [`PLACEHOLDER`], by name.
    pub fn placeholders(&self) -> Vec<String> {
        let mut found = Vec::new();
        visit_settings(&self.values, &mut |path, key, value| {
            if value_to_string(value).is_some_and(|v| v.contains(PLACEHOLDER)) {
                found.push(format!("{path}{key}"));
            }
        });
        found
    }
}

/// Parses `30s`, `5m`, `1h30m`, `500ms`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let t = text.trim();
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    Ok(humantime::parse_duration(t)?)
}

/// Parses `1mb`, `512kb`, `1048576`.
pub fn parse_size(text: &str) -> Result<u64> {
    let t = text.trim().to_ascii_lowercase();
    let (num, mult) = match t.find(|c: char| !c.is_ascii_digit()) {
        None => (t.as_str(), 1),
        Some(i) => {
            let mult = match t[i..].trim() {
                "b" => 1,
                "k" | "kb" | "kib" => 1 << 10,
                "m" | "mb" | "mib" => 1 << 20,
                "g" | "gb" | "gib" => 1 << 30,
                other => bail!("unknown size unit {other:?} in {text:?} (use b, kb, mb, gb)"),
            };
            (&t[..i], mult)
        }
    };
    let n: u64 = num
        .parse()
        .with_context(|| format!("{text:?} is not a size such as 1mb"))?;
    Ok(n * mult)
}

/// Parses `WALG_PG_WAL_BUDGET`: a size (`50gb`, as [`parse_size`]) or a
/// percentage of the file system holding pg_wal (`80%`).
pub fn parse_budget(text: &str) -> Result<Budget> {
    let t = text.trim();
    if let Some(p) = t.strip_suffix('%') {
        let p: f64 = p.trim().parse().with_context(|| {
            format!("WALG_PG_WAL_BUDGET={text:?} is not a percentage such as 80%")
        })?;
        if !(p > 0.0 && p <= 100.0) {
            bail!("WALG_PG_WAL_BUDGET={text:?}: a percentage must be above 0 and at most 100");
        }
        return Ok(Budget::Percent(p));
    }
    let b = parse_size(t).with_context(|| {
        format!(
            "WALG_PG_WAL_BUDGET={text:?} is not a size such as 50gb or a percentage such as 80%"
        )
    })?;
    if b == 0 {
        bail!("WALG_PG_WAL_BUDGET={text:?}: a budget of 0 would give up every failed segment; unset it to keep every segment");
    }
    Ok(Budget::Bytes(b))
}

/// Storage selection from one set of settings (the top level or a failover
/// section).
fn storage_from(name: &str, raw: &Raw, where_: &str) -> Result<Option<StorageSpec>> {
    let set: Vec<(&str, &str, String)> = PREFIX_SETTINGS
        .iter()
        .filter_map(|(k, scheme)| raw.get(k).map(|v| (*k, *scheme, v)))
        .collect();
    if set.len() > 1 {
        let names: Vec<&str> = set.iter().map(|(k, _, _)| *k).collect();
        bail!(
            "{where_} sets {}; set exactly one storage prefix",
            names.join(" and ")
        );
    }
    let Some((key, scheme, value)) = set.into_iter().next() else {
        return Ok(None);
    };
    let location = if scheme == "file" {
        value.strip_prefix("file://").unwrap_or(&value).to_string()
    } else {
        let expected = match scheme {
            "s3" => "s3://",
            "gs" => "gs://",
            _ => "azure://",
        };
        match value.split_once("://") {
            Some((s, rest)) if format!("{s}://") == expected || (scheme == "gs" && s == "gcs") => {
                rest.to_string()
            }
            _ => bail!("{key}={value:?} in {where_} is malformed: expected {expected}bucket/path"),
        }
    };
    if location.trim_matches('/').is_empty() {
        bail!("{key}={value:?} in {where_} names no bucket or directory");
    }
    let mut spec = StorageSpec::new(name, scheme, location);
    spec.settings = raw.settings();
    spec.timeout = raw.duration("WALG_STORAGE_TIMEOUT", walg_storage::spec::DEFAULT_TIMEOUT)?;
    spec.retries = raw.u64(
        "WALG_STORAGE_RETRIES",
        u64::from(walg_storage::spec::DEFAULT_RETRIES),
    )? as u32;
    Ok(Some(spec))
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `default` first, then failovers in name order.
    pub storages: Vec<StorageSpec>,
    pub compression: Compression,
    /// Global, like compression: every storage gets the same bytes.
    pub encryption: Encryption,
    pub prevent_overwrite: bool,
    pub upload_concurrency: usize,
    /// What the files uploaded ahead of one push may hold together
    /// (`WALG_UPLOAD_AHEAD_MEMORY`).
    pub upload_ahead_memory: usize,
    pub download_concurrency: usize,
    pub prefetch_dir: Option<PathBuf>,
    /// `cache_path` is only the `WALG_FAILOVER_STORAGES_CACHE_FILE`
    /// override here; the per-user default is resolved when the storages are
    /// opened.
    pub failover: FailoverConfig,
    /// Failover storages marked `WALG_FAILOVER_SPILL`: written only when
    /// every other storage failed, drained back with move.
    pub spill: Vec<String>,
    /// `WALG_PG_WAL_BUDGET`: when set, a segment whose push fails on
    /// every storage while pg_wal is over it is given up on purpose.
    pub pg_wal_budget: Option<(String, Budget)>,
    pub warnings: Vec<String>,
}

impl Config {
    pub fn from_raw(raw: &Raw) -> Result<Config> {
        if let Some(key) = UNSUPPORTED_ENCRYPTION.iter().find(|k| raw.get(k).is_some()) {
            bail!("{key} is set, but walg does not implement this kind of encryption; refusing to archive or restore without it (walg encrypts with WALG_LIBSODIUM_KEY or WALG_PGP_KEY; unset {key} only if unencrypted WAL is acceptable)");
        }
        let encryption = encryption_from(raw)?;
        let mut warnings: Vec<String> = raw
            .unknown_keys()
            .iter()
            .map(|k| format!("unknown setting {k} ignored (walg does not use it)"))
            .collect();
        if raw.get("WALG_IDENTITY_FROM_ENV").is_some() {
            warnings.push("WALG_IDENTITY_FROM_ENV is a setting of a failover section (WALG_FAILOVER_STORAGES.<name>); the primary storage always uses the environment's identity".to_string());
        }
        let primary = storage_from("default", raw, "the configuration")?;
        let mut storages: Vec<StorageSpec> = primary.into_iter().collect();
        let mut spill = Vec::new();
        if let Some(value) = raw.value("WALG_FAILOVER_STORAGES") {
            let parsed;
            let map = match value {
                Value::Object(m) => m,
                Value::String(s) => {
                    parsed = serde_json::from_str::<Value>(s).context(
                        "WALG_FAILOVER_STORAGES is not a JSON object of name -> storage settings",
                    )?;
                    parsed.as_object().context(
                        "WALG_FAILOVER_STORAGES must be a JSON object of name -> settings",
                    )?
                }
                _ => bail!("WALG_FAILOVER_STORAGES must be a map of name -> storage settings"),
            };
            // serde_json's map is sorted by key: failovers are tried in name order.
            for (name, section) in map {
                let Value::Object(section) = section else {
                    bail!("WALG_FAILOVER_STORAGES.{name} must be a map of settings");
                };
                if name == "default" {
                    bail!("WALG_FAILOVER_STORAGES.default: the name `default` is reserved for the primary storage");
                }
                let sub = Raw {
                    values: section
                        .iter()
                        .map(|(k, v)| (k.to_ascii_uppercase(), v.clone()))
                        .collect(),
                    source: raw.source.clone(),
                };
                for k in sub.values.keys() {
                    // A key in one section only would leave the other
                    // storages (and a reader of any of them) in clear text.
                    if is_encryption_setting(k) || UNSUPPORTED_ENCRYPTION.contains(&k.as_str()) {
                        bail!("WALG_FAILOVER_STORAGES.{name} sets {k}: encryption is global, like compression (every storage gets the same bytes); set it at the top level instead");
                    }
                    let storage_key = PREFIX_SETTINGS.iter().any(|(p, _)| p == k)
                        || [
                            "AWS_",
                            "GOOGLE_",
                            "AZURE_",
                            "GCS_",
                            "S3_",
                            "WALG_S3_",
                            "WALG_GS_",
                            "WALG_AZ_",
                            "STORAGE_EMULATOR_HOST",
                        ]
                        .iter()
                        .any(|p| k.starts_with(p))
                        || k == "WALG_STORAGE_TIMEOUT"
                        || k == "WALG_STORAGE_RETRIES"
                        || k == SPILL_SETTING
                        || k == "WALG_IDENTITY_FROM_ENV"
                        || IDENTITY_ENV.contains(&k.as_str());
                    if !storage_key {
                        warnings.push(format!(
                            "unknown setting {k} in failover storage {name:?} ignored"
                        ));
                    }
                }
                // A section is self-contained: credentials and endpoints are not
                // inherited from the top level (a failover is usually another
                // provider or account); timeouts and retries are.
                let mut merged = sub.clone();
                for key in ["WALG_STORAGE_TIMEOUT", "WALG_STORAGE_RETRIES"] {
                    if let (None, Some(v)) = (sub.values.get(key), raw.values.get(key)) {
                        merged.values.insert(key.to_string(), v.clone());
                    }
                }
                // Nor is the workload identity (a role, a token file, a
                // metadata endpoint), unless the section asks for it: a
                // failover in another account must not borrow the primary's
                // role by accident.
                if sub
                    .bool("WALG_IDENTITY_FROM_ENV", false)
                    .with_context(|| format!("failover storage {name:?}"))?
                {
                    for key in walg_storage::credentials::IDENTITY_SETTINGS {
                        if let (None, Some(v)) = (sub.values.get(*key), raw.values.get(*key)) {
                            merged.values.insert(key.to_string(), v.clone());
                        }
                    }
                }
                if sub
                    .bool(SPILL_SETTING, false)
                    .with_context(|| format!("failover storage {name:?}"))?
                {
                    spill.push(name.clone());
                }
                let spec = storage_from(name, &merged, &format!("failover storage {name:?}"))?
                    .with_context(|| format!("failover storage {name:?} sets no storage prefix (WALG_S3_PREFIX, WALG_GS_PREFIX, WALG_AZ_PREFIX or WALG_FILE_PREFIX)"))?;
                storages.push(spec);
            }
        }
        if storages.is_empty() || storages[0].name != "default" {
            bail!("no storage configured: set one of WALG_S3_PREFIX, WALG_GS_PREFIX, WALG_AZ_PREFIX or WALG_FILE_PREFIX");
        }
        let compression = Compression::from_setting(
            &raw.get("WALG_COMPRESSION_METHOD")
                .unwrap_or_else(|| "lz4".into()),
        )?;
        let has_failovers = storages.len() > 1;
        let failover = FailoverConfig {
            check: raw.bool("WALG_FAILOVER_STORAGES_CHECK", has_failovers)?,
            check_timeout: raw.duration(
                "WALG_FAILOVER_STORAGES_CHECK_TIMEOUT",
                Duration::from_secs(30),
            )?,
            check_size: match raw.get("WALG_FAILOVER_STORAGES_CHECK_SIZE") {
                Some(v) => parse_size(&v).context("WALG_FAILOVER_STORAGES_CHECK_SIZE")?,
                None => 1 << 20,
            },
            cache_lifetime: raw.duration(
                "WALG_FAILOVER_STORAGES_CACHE_LIFETIME",
                Duration::from_secs(15 * 60),
            )?,
            cache_path: raw
                .get("WALG_FAILOVER_STORAGES_CACHE_FILE")
                .map(PathBuf::from),
            write_policy: match raw
                .get("WALG_FAILOVER_STORAGES_WRITE_POLICY")
                .as_deref()
                .map(str::to_ascii_lowercase)
                .as_deref()
            {
                None | Some("first") | Some("first-alive") => WritePolicy::FirstAlive,
                Some("all") => WritePolicy::All,
                Some(other) => {
                    bail!("WALG_FAILOVER_STORAGES_WRITE_POLICY={other:?} is not one of first, all")
                }
            },
            target: raw.get("WALG_TARGET_STORAGE"),
            drain: DrainConfig {
                mode: match raw
                    .get("WALG_FAILOVER_STORAGES_DRAIN")
                    .as_deref()
                    .map(str::to_ascii_lowercase)
                    .as_deref()
                {
                    None => None,
                    Some("copy") => Some(DrainMode::Copy),
                    Some("move") => Some(DrainMode::Move),
                    Some("off") => Some(DrainMode::Off),
                    Some(other) => {
                        bail!(
                            "WALG_FAILOVER_STORAGES_DRAIN={other:?} is not one of copy, move, off"
                        )
                    }
                },
                max_files: raw.u64("WALG_FAILOVER_STORAGES_DRAIN_MAX_FILES", 32)? as usize,
                max_time: raw.duration(
                    "WALG_FAILOVER_STORAGES_DRAIN_MAX_TIME",
                    Duration::from_secs(10),
                )?,
                // Resolved beside the status cache when the storages are opened.
                dir: None,
            },
        };
        if let Some(t) = &failover.target {
            if !storages.iter().any(|s| &s.name == t) {
                let names: Vec<&str> = storages.iter().map(|s| s.name.as_str()).collect();
                bail!(
                    "WALG_TARGET_STORAGE={t:?} names no configured storage (configured: {})",
                    names.join(", ")
                );
            }
        }
        let upload_concurrency = raw.u64("WALG_UPLOAD_CONCURRENCY", 16)?.clamp(1, 256) as usize;
        let download_concurrency = raw.u64("WALG_DOWNLOAD_CONCURRENCY", 10)?.clamp(1, 256) as usize;
        let upload_ahead_memory = match raw.get("WALG_UPLOAD_AHEAD_MEMORY") {
            Some(v) => {
                let bytes = parse_size(&v).context("WALG_UPLOAD_AHEAD_MEMORY")?;
                if bytes < 4 << 20 {
                    bail!("WALG_UPLOAD_AHEAD_MEMORY={v:?} is below 4MB, one pipeline's worth; set WALG_UPLOAD_CONCURRENCY=1 to turn upload-ahead off");
                }
                usize::try_from(bytes).unwrap_or(usize::MAX)
            }
            None => walg_core::pipeline::share::TransferShare::UPLOAD_AHEAD,
        };
        Ok(Config {
            storages,
            compression,
            encryption,
            prevent_overwrite: raw.bool("WALG_PREVENT_WAL_OVERWRITE", true)?,
            upload_concurrency,
            upload_ahead_memory,
            download_concurrency,
            prefetch_dir: raw.get("WALG_PREFETCH_DIR").map(PathBuf::from),
            failover,
            spill,
            pg_wal_budget: match raw.get("WALG_PG_WAL_BUDGET") {
                Some(v) if !v.trim().is_empty() => Some((v.trim().to_string(), parse_budget(&v)?)),
                _ => None,
            },
            warnings,
        })
    }
}

/// Where a key came from, for messages (never the key itself).
fn key_source(setting: &str, path: Option<&Path>) -> String {
    match path {
        Some(p) => format!("{setting} ({})", p.display()),
        None => setting.to_string(),
    }
}

/// Reads a key file: trimmed, and an empty one is an error.
fn read_key_file(setting: &str, path: &Path) -> Result<Vec<u8>> {
    let content = std::fs::read(path).with_context(|| {
        format!(
            "read the key file {} given by {setting} (check that it exists and is readable by this user)",
            path.display()
        )
    })?;
    let key = trim_key_file(&content).to_vec();
    if key.is_empty() {
        bail!(
            "the key file {} given by {setting} is empty",
            path.display()
        );
    }
    Ok(key)
}

fn parse_key(text: &[u8], transform: KeyTransform, source: &str) -> Result<SodiumKey> {
    sodium_key(text, transform).map_err(|e| {
        let hint = match e {
            KeyError::UnknownTransform(_) => "",
            _ => {
                "; make a key with `openssl rand -hex 32` and set WALG_LIBSODIUM_KEY_TRANSFORM=hex"
            }
        };
        anyhow::anyhow!("{source}: libsodium key: {e}{hint}")
    })
}

/// The libsodium keys, by WAL-G's rules: `WALG_LIBSODIUM_KEY` (used as
/// given) wins over `WALG_LIBSODIUM_KEY_PATH` (trimmed);
/// `WALG_LIBSODIUM_KEY_TRANSFORM` applies to every key. Old keys, for
/// reading only, come from `WALG_LIBSODIUM_OLD_KEYS` (comma-separated) and
/// `WALG_LIBSODIUM_OLD_KEYS_PATH` (one a line). Everything is checked here,
/// when walg starts, before any segment moves.
fn encryption_from(raw: &Raw) -> Result<Encryption> {
    let pgp = pgp_from(raw)?;
    if let Some(pgp) = pgp {
        if let Some(k) = ["WALG_LIBSODIUM_KEY", "WALG_LIBSODIUM_KEY_PATH"]
            .into_iter()
            .find(|k| raw.get(k).is_some())
        {
            bail!("both {k} and an OpenPGP key (WALG_PGP_KEY or WALG_PGP_KEY_PATH) are set; an archive has one encryption: keep only one");
        }
        return Ok(pgp);
    }
    libsodium_from(raw)
}

/// The OpenPGP keyring, by WAL-G's rules: `WALG_PGP_KEY` (armored text,
/// literal `\n` turned into newlines) wins over `WALG_PGP_KEY_PATH`;
/// `WALG_PGP_KEY_PASSPHRASE` unlocks the secret keys. Parsed and unlocked
/// here, when walg starts.
fn pgp_from(raw: &Raw) -> Result<Option<Encryption>> {
    let passphrase = raw.get("WALG_PGP_KEY_PASSPHRASE");
    let (armored, setting) = if let Some(text) = raw.get("WALG_PGP_KEY") {
        (
            text.replace("\\n", "\n").into_bytes(),
            "WALG_PGP_KEY".to_string(),
        )
    } else if let Some(p) = raw.get("WALG_PGP_KEY_PATH").map(PathBuf::from) {
        let content = std::fs::read(&p).with_context(|| {
            format!(
                "read the key file {} given by WALG_PGP_KEY_PATH (check that it exists and is readable by this user)",
                p.display()
            )
        })?;
        if trim_key_file(&content).is_empty() {
            bail!(
                "the key file {} given by WALG_PGP_KEY_PATH is empty",
                p.display()
            );
        }
        (content, key_source("WALG_PGP_KEY_PATH", Some(&p)))
    } else {
        if passphrase.is_some() {
            bail!("WALG_PGP_KEY_PASSPHRASE is set without WALG_PGP_KEY or WALG_PGP_KEY_PATH; set the key too");
        }
        return Ok(None);
    };
    let keys = walg_core::crypto::openpgp::pgp_keys(
        &armored,
        passphrase.as_deref().map(str::as_bytes),
        &setting,
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    Ok(Some(Encryption::Pgp(std::sync::Arc::new(keys))))
}

fn libsodium_from(raw: &Raw) -> Result<Encryption> {
    let inline = raw.get("WALG_LIBSODIUM_KEY");
    let path = raw.get("WALG_LIBSODIUM_KEY_PATH").map(PathBuf::from);
    let old_inline = raw.get("WALG_LIBSODIUM_OLD_KEYS");
    let old_path = raw.get("WALG_LIBSODIUM_OLD_KEYS_PATH").map(PathBuf::from);
    let transform = || -> Result<KeyTransform> {
        match raw.get("WALG_LIBSODIUM_KEY_TRANSFORM") {
            None => Ok(KeyTransform::None),
            Some(t) => KeyTransform::from_setting(t.trim())
                .map_err(|e| anyhow::anyhow!("WALG_LIBSODIUM_KEY_TRANSFORM: {e}")),
        }
    };
    let main = if let Some(text) = &inline {
        parse_key(text.as_bytes(), transform()?, "WALG_LIBSODIUM_KEY")?
    } else if let Some(p) = &path {
        parse_key(
            &read_key_file("WALG_LIBSODIUM_KEY_PATH", p)?,
            transform()?,
            &key_source("WALG_LIBSODIUM_KEY_PATH", Some(p)),
        )?
    } else {
        let old_set = if old_inline.is_some() {
            Some("WALG_LIBSODIUM_OLD_KEYS")
        } else {
            old_path.as_ref().map(|_| "WALG_LIBSODIUM_OLD_KEYS_PATH")
        };
        if let Some(k) = old_set {
            bail!("{k} is set without WALG_LIBSODIUM_KEY or WALG_LIBSODIUM_KEY_PATH: old keys only read, a main key writes; set the current key too");
        }
        return Ok(Encryption::None);
    };
    let transform = transform()?;
    let mut old = Vec::new();
    if let Some(list) = &old_inline {
        for (i, text) in list.split(',').map(str::trim).enumerate() {
            if text.is_empty() {
                continue;
            }
            let source = format!("WALG_LIBSODIUM_OLD_KEYS entry {}", i + 1);
            old.push(parse_key(text.as_bytes(), transform, &source)?);
        }
    }
    if let Some(p) = &old_path {
        let content = std::fs::read(p).with_context(|| {
            format!(
                "read the key file {} given by WALG_LIBSODIUM_OLD_KEYS_PATH (check that it exists and is readable by this user)",
                p.display()
            )
        })?;
        if trim_key_file(&content).is_empty() {
            bail!(
                "the key file {} given by WALG_LIBSODIUM_OLD_KEYS_PATH is empty",
                p.display()
            );
        }
        for (i, line) in content.split(|b| *b == b'\n').enumerate() {
            let text = trim_key_file(line);
            if text.is_empty() {
                continue;
            }
            let source = format!(
                "{} line {}",
                key_source("WALG_LIBSODIUM_OLD_KEYS_PATH", Some(p)),
                i + 1
            );
            old.push(parse_key(text, transform, &source)?);
        }
    }
    // The main key is tried first anyway; a copy among the old ones only
    // costs a failed attempt per object.
    old.retain(|k| *k != main);
    Ok(Encryption::libsodium(main, old))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(pairs: &[(&str, Value)], expected: std::result::Result<&str, &str>) {
        let got = Config::from_raw(&Raw::from_pairs(pairs));
        match (got, expected) {
            (Ok(cfg), Ok(want)) => {
                let desc: Vec<String> = cfg
                    .storages
                    .iter()
                    .map(|s| format!("{}={}://{}", s.name, s.scheme, s.location))
                    .collect();
                assert_eq!(desc.join(" "), want);
            }
            (Err(e), Err(needle)) => assert!(
                format!("{e:#}").contains(needle),
                "{e:#} should contain {needle}"
            ),
            (got, want) => panic!("got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn chooses_storages() {
        check(
            &[("WALG_FILE_PREFIX", json!("/var/wal"))],
            Ok("default=file:///var/wal"),
        );
        check(
            &[("WALG_S3_PREFIX", json!("s3://bucket/p"))],
            Ok("default=s3://bucket/p"),
        );
        check(&[("WALG_GS_PREFIX", json!("gs://b"))], Ok("default=gs://b"));
        check(
            &[("WALG_AZ_PREFIX", json!("azure://c/x"))],
            Ok("default=azure://c/x"),
        );
        check(&[], Err("no storage configured"));
        check(
            &[
                ("WALG_S3_PREFIX", json!("s3://b")),
                ("WALG_FILE_PREFIX", json!("/x")),
            ],
            Err("WALG_S3_PREFIX and WALG_FILE_PREFIX"),
        );
        check(
            &[("WALG_S3_PREFIX", json!("bucket/p"))],
            Err("WALG_S3_PREFIX=\"bucket/p\" in the configuration is malformed"),
        );
        check(
            &[("WALG_S3_PREFIX", json!("s3://"))],
            Err("names no bucket"),
        );
        check(
            &[
                ("WALG_FILE_PREFIX", json!("/a")),
                (
                    "WALG_FAILOVER_STORAGES",
                    json!({"zz": {"WALG_FILE_PREFIX": "/z"}, "b1": {"WALG_S3_PREFIX": "s3://x"}}),
                ),
            ],
            Ok("default=file:///a b1=s3://x zz=file:///z"),
        );
        check(
            &[
                ("WALG_FILE_PREFIX", json!("/a")),
                (
                    "WALG_FAILOVER_STORAGES",
                    json!(r#"{"b": {"WALG_FILE_PREFIX": "/b"}}"#),
                ),
            ],
            Ok("default=file:///a b=file:///b"),
        );
        check(
            &[
                ("WALG_FILE_PREFIX", json!("/a")),
                ("WALG_FAILOVER_STORAGES", json!({"b": {"AWS_REGION": "x"}})),
            ],
            Err("failover storage \"b\" sets no storage prefix"),
        );
        check(
            &[
                ("WALG_FILE_PREFIX", json!("/a")),
                ("WALG_TARGET_STORAGE", json!("nope")),
            ],
            Err("names no configured storage"),
        );
        check(
            &[
                ("WALG_FILE_PREFIX", json!("/a")),
                ("WALG_CSE_KMS_ID", json!("arn:aws:kms:x")),
            ],
            Err("WALG_CSE_KMS_ID is set, but walg does not implement"),
        );
    }

    #[test]
    fn a_failover_section_borrows_the_identity_only_when_it_says_so() {
        let pairs = |section: Value| {
            vec![
                ("WALG_S3_PREFIX", json!("s3://a/p")),
                ("AWS_ROLE_ARN", json!("arn:aws:iam::1:role/primary")),
                ("AWS_WEB_IDENTITY_TOKEN_FILE", json!("/var/run/token")),
                ("AWS_ACCESS_KEY_ID", json!("AKIDPRIMARY")),
                ("WALG_FAILOVER_STORAGES", json!({ "b": section })),
            ]
        };
        let cfg = Config::from_raw(&Raw::from_pairs(&pairs(
            json!({"WALG_S3_PREFIX": "s3://b/p"}),
        )))
        .expect("valid");
        let b = &cfg.storages[1].settings;
        assert_eq!(b.get("AWS_ROLE_ARN"), None);
        assert_eq!(b.get("AWS_WEB_IDENTITY_TOKEN_FILE"), None);
        let cfg = Config::from_raw(&Raw::from_pairs(&pairs(
            json!({"WALG_S3_PREFIX": "s3://b/p", "WALG_IDENTITY_FROM_ENV": true, "AWS_ROLE_SESSION_NAME": "own"}),
        )))
        .expect("valid");
        let b = &cfg.storages[1].settings;
        assert_eq!(b.get("AWS_ROLE_ARN"), Some("arn:aws:iam::1:role/primary"));
        assert_eq!(b.get("AWS_ROLE_SESSION_NAME"), Some("own"));
        // Static keys belong to an account: never copied.
        assert_eq!(b.get("AWS_ACCESS_KEY_ID"), None);
        let bad = Config::from_raw(&Raw::from_pairs(&pairs(
            json!({"WALG_S3_PREFIX": "s3://b/p", "WALG_IDENTITY_FROM_ENV": "maybe"}),
        )));
        let msg = format!("{:#}", bad.expect_err("not a boolean"));
        assert!(
            msg.contains("WALG_IDENTITY_FROM_ENV") && msg.contains("\"b\""),
            "{msg}"
        );
    }

    fn check_keys(pairs: &[(&str, Value)], expected: std::result::Result<(&str, usize), &str>) {
        let mut all = vec![("WALG_FILE_PREFIX", json!("/a"))];
        all.extend(pairs.iter().cloned());
        let got = Config::from_raw(&Raw::from_pairs(&all));
        match (got, expected) {
            (Ok(cfg), Ok((name, old))) => {
                assert_eq!(cfg.encryption.name(), name);
                match &cfg.encryption {
                    Encryption::Libsodium(k) => assert_eq!(k.old.len(), old),
                    Encryption::None | Encryption::Pgp(_) => assert_eq!(old, 0),
                }
                // Storages never see key material.
                for s in &cfg.storages {
                    assert!(
                        !s.settings.iter().any(|(k, _)| k.contains("LIBSODIUM")),
                        "{:?}",
                        s.settings
                    );
                }
                assert!(!format!("{cfg:?}").contains("TEST_LIBSODIUM"), "{cfg:?}");
            }
            (Err(e), Err(needle)) => {
                let msg = format!("{e:#}");
                assert!(msg.contains(needle), "{msg} should contain {needle}");
                assert!(!msg.contains("TEST_LIBSODIUM"), "key in {msg}");
            }
            (got, want) => panic!("got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn encryption_settings() {
        let hex = "4c0829fdfe7ae1987918edc585b1a90556d901eaea963c7625bb5734576dfb59";
        check_keys(&[], Ok(("none", 0)));
        check_keys(
            &[("WALG_LIBSODIUM_KEY", json!("TEST_LIBSODIUM_KEY_______"))],
            Ok(("libsodium", 0)),
        );
        check_keys(
            &[
                ("WALG_LIBSODIUM_KEY", json!(hex)),
                ("WALG_LIBSODIUM_KEY_TRANSFORM", json!("hex")),
                (
                    "WALG_LIBSODIUM_OLD_KEYS",
                    json!(format!("{}, ,{hex}", "ab".repeat(32))),
                ),
            ],
            // The main key repeated among the old ones is dropped.
            Ok(("libsodium", 1)),
        );
        check_keys(
            &[("WALG_LIBSODIUM_KEY", json!("TEST_LIBSODIUM"))],
            Err("WALG_LIBSODIUM_KEY: libsodium key: key length must not be less than 25, got 14"),
        );
        check_keys(
            &[
                ("WALG_LIBSODIUM_KEY", json!("TEST_LIBSODIUM_KEY_______")),
                ("WALG_LIBSODIUM_KEY_TRANSFORM", json!("Hex")),
            ],
            Err("WALG_LIBSODIUM_KEY_TRANSFORM: unknown key transform \"Hex\""),
        );
        check_keys(
            &[(
                "WALG_LIBSODIUM_OLD_KEYS",
                json!("TEST_LIBSODIUM_KEY_______"),
            )],
            Err("WALG_LIBSODIUM_OLD_KEYS is set without WALG_LIBSODIUM_KEY"),
        );
        check_keys(
            &[
                ("WALG_LIBSODIUM_KEY", json!("TEST_LIBSODIUM_KEY_______")),
                (
                    "WALG_LIBSODIUM_OLD_KEYS",
                    json!("TEST_LIBSODIUM_KEY_______,TEST_LIBSODIUM"),
                ),
            ],
            Err("WALG_LIBSODIUM_OLD_KEYS entry 2: libsodium key: key length"),
        );
        check_keys(
            &[("WALG_LIBSODIUM_KEY_PATH", json!("/nonexistent/walg.key"))],
            Err("read the key file /nonexistent/walg.key given by WALG_LIBSODIUM_KEY_PATH"),
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = dir.path().join("empty.key");
        std::fs::write(&empty, " \n").expect("write");
        check_keys(
            &[(
                "WALG_LIBSODIUM_KEY_PATH",
                json!(empty.display().to_string()),
            )],
            Err("is empty"),
        );
        let file = dir.path().join("walg.key");
        std::fs::write(&file, format!("  {hex}\n")).expect("write");
        let old = dir.path().join("old.keys");
        std::fs::write(
            &old,
            format!("{}\n\n{}\n", "cd".repeat(32), "ef".repeat(32)),
        )
        .expect("write");
        check_keys(
            &[
                ("WALG_LIBSODIUM_KEY_PATH", json!(file.display().to_string())),
                ("WALG_LIBSODIUM_KEY_TRANSFORM", json!("hex")),
                (
                    "WALG_LIBSODIUM_OLD_KEYS_PATH",
                    json!(old.display().to_string()),
                ),
            ],
            Ok(("libsodium", 2)),
        );
        std::fs::write(&old, format!("{}\nnot hex\n", "cd".repeat(32))).expect("write");
        check_keys(
            &[
                ("WALG_LIBSODIUM_KEY_PATH", json!(file.display().to_string())),
                ("WALG_LIBSODIUM_KEY_TRANSFORM", json!("hex")),
                (
                    "WALG_LIBSODIUM_OLD_KEYS_PATH",
                    json!(old.display().to_string()),
                ),
            ],
            Err("line 2: libsodium key: while hex decoding key"),
        );
        let pgp_pub = include_str!("../../../walg-core/testdata/pgp/a.pub");
        let pgp_sec = include_str!("../../../walg-core/testdata/pgp/c.sec");
        check_keys(&[("WALG_PGP_KEY", json!(pgp_pub))], Ok(("openpgp", 0)));
        // WAL-G's inline form: literal "\n" for newlines.
        check_keys(
            &[("WALG_PGP_KEY", json!(pgp_pub.replace('\n', "\\n")))],
            Ok(("openpgp", 0)),
        );
        check_keys(
            &[
                ("WALG_PGP_KEY", json!(pgp_sec)),
                ("WALG_PGP_KEY_PASSPHRASE", json!("correct horse")),
            ],
            Ok(("openpgp", 0)),
        );
        check_keys(
            &[("WALG_PGP_KEY", json!(pgp_sec)), ("WALG_PGP_KEY_PASSPHRASE", json!("wrong"))],
            Err("WALG_PGP_KEY: the secret key cannot be unlocked: WALG_PGP_KEY_PASSPHRASE is missing or wrong"),
        );
        check_keys(
            &[("WALG_PGP_KEY", json!("x"))],
            Err("WALG_PGP_KEY is not an ASCII-armored OpenPGP key"),
        );
        check_keys(
            &[("WALG_PGP_KEY_PASSPHRASE", json!("x"))],
            Err("WALG_PGP_KEY_PASSPHRASE is set without WALG_PGP_KEY"),
        );
        check_keys(
            &[
                ("WALG_PGP_KEY", json!(pgp_pub)),
                ("WALG_LIBSODIUM_KEY", json!("TEST_LIBSODIUM_KEY_______")),
            ],
            Err("both WALG_LIBSODIUM_KEY and an OpenPGP key"),
        );
        for unsupported in [
            "WALG_GPG_KEY_ID",
            "YC_CSE_KMS_KEY_ID",
            "WALG_ENVELOPE_PGP_KEY_PATH",
        ] {
            check_keys(
                &[(unsupported, json!("x"))],
                Err(&format!(
                    "{unsupported} is set, but walg does not implement"
                )),
            );
        }
        check_keys(
            &[(
                "WALG_FAILOVER_STORAGES",
                json!({"b": {"WALG_FILE_PREFIX": "/b", "WALG_LIBSODIUM_KEY": "TEST_LIBSODIUM_KEY_______"}}),
            )],
            Err("WALG_FAILOVER_STORAGES.b sets WALG_LIBSODIUM_KEY: encryption is global"),
        );
        let raw = Raw::from_pairs(&[("WALG_LIBSODIUM_KEY", json!("TEST_LIBSODIUM_KEY_______"))]);
        assert!(!format!("{raw:?}").contains("TEST_LIBSODIUM"));
    }

    #[test]
    fn spill_storages_and_the_drain_settings() {
        let cfg = Config::from_raw(&Raw::from_pairs(&[
            ("WALG_FILE_PREFIX", json!("/a")),
            (
                "WALG_FAILOVER_STORAGES",
                json!({"spill": {"WALG_FILE_PREFIX": "/s", "WALG_FAILOVER_SPILL": true},
                       "nfs": {"WALG_FILE_PREFIX": "/n"}}),
            ),
            ("WALG_FAILOVER_STORAGES_DRAIN", json!("Move")),
            ("WALG_FAILOVER_STORAGES_DRAIN_MAX_FILES", json!(5)),
            ("WALG_FAILOVER_STORAGES_DRAIN_MAX_TIME", json!("3s")),
        ]))
        .expect("valid");
        assert_eq!(cfg.spill, vec!["spill".to_string()]);
        assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
        let d = &cfg.failover.drain;
        assert_eq!(d.mode, Some(DrainMode::Move));
        assert_eq!((d.max_files, d.max_time), (5, Duration::from_secs(3)));
        let defaults = Config::from_raw(&Raw::from_pairs(&[("WALG_FILE_PREFIX", json!("/a"))]))
            .expect("valid");
        assert_eq!(defaults.failover.drain.mode, None);
        assert_eq!(defaults.failover.drain.max_files, 32);
        check(
            &[
                ("WALG_FILE_PREFIX", json!("/a")),
                ("WALG_FAILOVER_STORAGES_DRAIN", json!("sometimes")),
            ],
            Err("is not one of copy, move, off"),
        );
        check(
            &[
                ("WALG_FILE_PREFIX", json!("/a")),
                (
                    "WALG_FAILOVER_STORAGES",
                    json!({"spill": {"WALG_FILE_PREFIX": "/s", "WALG_FAILOVER_SPILL": "maybe"}}),
                ),
            ],
            Err("failover storage \"spill\""),
        );
    }

    #[test]
    fn parses_values() {
        assert_eq!(parse_duration("30s").expect("30s"), Duration::from_secs(30));
        assert_eq!(
            parse_duration("15m").expect("15m"),
            Duration::from_secs(900)
        );
        assert_eq!(parse_duration("45").expect("45"), Duration::from_secs(45));
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_size("1mb").expect("1mb"), 1 << 20);
        assert_eq!(parse_size("512KB").expect("kb"), 512 << 10);
        assert_eq!(parse_size("100").expect("bytes"), 100);
        assert!(parse_size("1tb").is_err());
        let raw = Raw::from_pairs(&[
            ("WALG_FILE_PREFIX", json!("/a")),
            ("WALG_PREVENT_WAL_OVERWRITE", json!(false)),
            ("WALG_COMPRESSION_METHOD", json!("zstd")),
            ("WALG_UPLOAD_CONCURRENCY", json!(4)),
            ("WALG_DELTA_MAX_STEPS", json!(3)),
        ]);
        let cfg = Config::from_raw(&raw).expect("valid");
        assert!(!cfg.prevent_overwrite);
        assert_eq!(cfg.compression, Compression::Zstd);
        assert_eq!(cfg.upload_concurrency, 4);
        assert_eq!(
            cfg.upload_ahead_memory,
            walg_core::pipeline::share::TransferShare::UPLOAD_AHEAD
        );
        assert_eq!(cfg.warnings.len(), 1, "{:?}", cfg.warnings);
        assert!(cfg.warnings[0].contains("WALG_DELTA_MAX_STEPS"));
        let bad = Raw::from_pairs(&[
            ("WALG_FILE_PREFIX", json!("/a")),
            ("WALG_COMPRESSION_METHOD", json!("lzma")),
        ]);
        assert!(format!("{:#}", Config::from_raw(&bad).expect_err("lzma"))
            .contains("unknown compression"));
    }
}
