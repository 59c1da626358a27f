//! What a backend needs to open a storage: scheme, location and settings.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// Why a storage could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("unknown storage scheme {scheme:?} (known: {known})")]
    UnknownScheme { scheme: String, known: String },
    #[error("storage scheme {scheme:?} is not compiled in: build walg-storage with its `{feature}` feature")]
    NotCompiled { scheme: String, feature: String },
    #[error("storage {storage:?}: {setting}: {message}")]
    Config {
        storage: String,
        setting: String,
        message: String,
    },
    /// The settings are well-formed but the storage could not be opened now
    /// (a directory that cannot be created, a mount that vanished). A
    /// failover store counts such a member as dead for the call instead of
    /// failing it.
    #[error("storage {storage:?}: {message}")]
    Unavailable { storage: String, message: String },
}

impl StorageError {
    /// Whether the error is about the settings themselves (malformed or
    /// unknown), which no failover can work around.
    pub fn is_config(&self) -> bool {
        !matches!(self, StorageError::Unavailable { .. })
    }
}

/// Settings by their WAL-G names (`AWS_REGION`, `AWS_ENDPOINT`, ...).
/// `Debug` prints the values of secret-looking keys as `***`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Settings(BTreeMap<String, String>);

impl Settings {
    pub fn new() -> Self {
        Settings::default()
    }
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.0.insert(key.into(), value.into());
    }
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
    /// Whether a key names a secret that must never be printed.
    pub fn is_secret(key: &str) -> bool {
        let k = key.to_ascii_uppercase();
        [
            "SECRET",
            "PASSWORD",
            "TOKEN",
            "ACCESS_KEY",
            "CREDENTIALS_JSON",
            "LIBSODIUM_KEY",
            "SAS",
            "IDENTITY_HEADER",
        ]
        .iter()
        .any(|s| k.contains(s))
            && k != "AWS_ACCESS_KEY_ID"
            // A token file's path names where the token is, not the token.
            && !k.ends_with("_TOKEN_FILE")
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Settings {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Settings(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (k, v) in &self.0 {
            if Settings::is_secret(k) {
                m.entry(k, &"***");
            } else {
                m.entry(k, v);
            }
        }
        m.finish()
    }
}

/// Everything needed to open one storage.
#[derive(Debug, Clone)]
pub struct StorageSpec {
    /// Name used in messages and the failover status cache (`default`, ...).
    pub name: String,
    /// Lowercase scheme: `file`, `s3`, `gs`, `azure`, `mem`, or a registered one.
    pub scheme: String,
    /// What follows `scheme://`: `bucket/path`, `container/path`, or a
    /// file-system path for `file`.
    pub location: String,
    /// The rest of the settings, by WAL-G name.
    pub settings: Settings,
    /// Deadline of one storage call, and of silence within a transfer.
    pub timeout: Duration,
    /// How many times a transient failure is retried, with backoff.
    pub retries: u32,
}

/// Default per-call deadline.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default number of retries of a transient failure.
pub const DEFAULT_RETRIES: u32 = 2;

impl StorageSpec {
    /// A spec with default timeout and retries.
    pub fn new(
        name: impl Into<String>,
        scheme: impl Into<String>,
        location: impl Into<String>,
    ) -> Self {
        StorageSpec {
            name: name.into(),
            scheme: scheme.into().to_ascii_lowercase(),
            location: location.into(),
            settings: Settings::new(),
            timeout: DEFAULT_TIMEOUT,
            retries: DEFAULT_RETRIES,
        }
    }

    /// Parses `scheme://location`; a plain path means `file`.
    pub fn from_url(name: impl Into<String>, url: &str) -> Self {
        match url.split_once("://") {
            Some((scheme, location)) => StorageSpec::new(name, scheme, location),
            None => StorageSpec::new(name, "file", url),
        }
    }

    /// This storage cannot be opened now, though its settings are fine.
    pub fn unavailable(&self, message: impl Into<String>) -> StorageError {
        StorageError::Unavailable {
            storage: self.name.clone(),
            message: message.into(),
        }
    }

    /// A configuration error about `setting` of this storage.
    pub fn config_error(&self, setting: &str, message: impl Into<String>) -> StorageError {
        StorageError::Config {
            storage: self.name.clone(),
            setting: setting.to_string(),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_secrets() {
        let s: Settings = [
            ("AWS_SECRET_ACCESS_KEY", "hunter2"),
            ("AWS_ACCESS_KEY_ID", "AKIA"),
            ("AZURE_STORAGE_ACCESS_KEY", "azkey"),
            ("AZURE_STORAGE_SAS_TOKEN", "sv=1"),
            ("AWS_SESSION_TOKEN", "tok"),
            ("AWS_REGION", "us-east-1"),
        ]
        .into_iter()
        .collect();
        let text = format!("{s:?}");
        for secret in ["hunter2", "azkey", "sv=1", "tok\""] {
            assert!(!text.contains(secret), "{secret} leaked in {text}");
        }
        assert!(text.contains("us-east-1") && text.contains("AKIA"));
    }

    #[test]
    fn parses_urls() {
        let s = StorageSpec::from_url("default", "s3://bucket/path/to");
        assert_eq!(
            (s.scheme.as_str(), s.location.as_str()),
            ("s3", "bucket/path/to")
        );
        let s = StorageSpec::from_url("default", "/var/lib/wal");
        assert_eq!(
            (s.scheme.as_str(), s.location.as_str()),
            ("file", "/var/lib/wal")
        );
    }
}
