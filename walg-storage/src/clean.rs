//! `walg st clean`: what crashed uploads leave behind, found and removed.
//!
//! - File storage: temp files (names containing `.walg-tmp-`) anywhere under
//!   the root, whose writer is a dead process of this host (see
//!   [`crate::fs::Writer::is_dead`]) or that are older than the chosen age
//!   and not a live local writer's. A live writer's temp file is never
//!   touched, whatever its age.
//! - S3: incomplete multipart uploads under the prefix older than the
//!   chosen age are aborted (see [`crate::multipart`]).
//! - GCS and Azure: nothing to do; uncommitted blocks and resumable upload
//!   sessions expire on their own after about a week, and the report says so.
//!
//! Without `confirm` this only reports (a dry run).

use std::time::Duration;

use serde::Serialize;

use crate::spec::{StorageError, StorageSpec};

/// One leftover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CleanItem {
    /// `temp file` or `multipart upload`.
    pub kind: &'static str,
    /// Path (file storage) or key (object storage).
    pub key: String,
    pub age_secs: u64,
    /// Whether it was removed (always false in a dry run).
    pub removed: bool,
    /// Why removing it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What `clean` found on one storage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CleanReport {
    pub storage: String,
    pub location: String,
    pub dry_run: bool,
    pub items: Vec<CleanItem>,
    /// Why there is nothing to clean on this kind of storage, if so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Finds (and with `confirm` removes) the leftovers of crashed uploads on
/// the storage `spec` describes that are older than `older_than` (temp
/// files of dead local writers regardless of age).
pub async fn clean(
    spec: &StorageSpec,
    older_than: Duration,
    confirm: bool,
) -> Result<CleanReport, StorageError> {
    let mut report = CleanReport {
        storage: spec.name.clone(),
        location: format!("{}://{}", spec.scheme, spec.location),
        dry_run: !confirm,
        items: Vec::new(),
        note: None,
    };
    match spec.scheme.as_str() {
        #[cfg(feature = "fs")]
        "file" => {
            let root = std::path::PathBuf::from(spec.location.trim());
            let items = tokio::task::spawn_blocking(move || clean_dir(&root, older_than, confirm))
                .await
                .map_err(|e| spec.unavailable(format!("clean task failed: {e}")))?;
            report.items = items;
        }
        #[cfg(feature = "s3")]
        "s3" => {
            report.items = crate::multipart::clean(spec, older_than, confirm).await?;
        }
        "gs" | "gcs" => {
            report.note = Some(
                "nothing to clean: walg uploads to GCS in single requests or resumable sessions, \
                 which expire by themselves after a week"
                    .into(),
            )
        }
        "azure" | "az" | "azblob" => report.note = Some(
            "nothing to clean: uncommitted Azure blocks are discarded by the service after a week"
                .into(),
        ),
        other => {
            report.note = Some(format!(
            "nothing to clean on a {other:?} storage (or this walg was built without its backend)"
        ))
        }
    }
    Ok(report)
}

#[cfg(feature = "fs")]
fn clean_dir(root: &std::path::Path, older_than: Duration, confirm: bool) -> Vec<CleanItem> {
    use crate::fs::{dead_temp_files, TMP_MARK};
    let mut dirs = vec![root.to_path_buf()];
    let mut items = Vec::new();
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(entry.path());
            }
        }
        // Only directories with a temp file are worth the per-file checks.
        let has_temp = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().contains(TMP_MARK));
        if !has_temp {
            continue;
        }
        for (path, age) in dead_temp_files(&dir, Some(older_than)) {
            let mut item = CleanItem {
                kind: "temp file",
                key: path.display().to_string(),
                age_secs: age.as_secs(),
                removed: false,
                error: None,
            };
            if confirm {
                match std::fs::remove_file(&path) {
                    Ok(()) => item.removed = true,
                    Err(e) => item.error = Some(e.to_string()),
                }
            }
            items.push(item);
        }
    }
    items.sort_by(|a, b| a.key.cmp(&b.key));
    items
}

#[cfg(all(test, feature = "fs"))]
mod tests {
    use super::*;
    use crate::fs::TMP_MARK;

    #[tokio::test]
    async fn removes_dead_and_old_temp_files_never_a_live_writers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let me = crate::fs::Writer::me();
        let tmp = dir.path().join(crate::fs::TMP_DIR);
        std::fs::create_dir_all(&tmp).expect("mkdir");
        let name =
            |pid: u32, start: u64| format!("x{TMP_MARK}{}_{}_{pid}_{start}_0", me.host, me.pid_ns);
        // Ours (alive), a dead pid of this host, an old file of another host,
        // a fresh file of another host, an old-style name next to a target.
        let live = tmp.join(name(me.pid, me.start));
        let dead = tmp.join(name(me.pid, me.start + 1));
        let other_old = tmp.join(format!("x{TMP_MARK}elsewhere_1_2_3_0"));
        let legacy = dir.path().join(format!(".y{TMP_MARK}123-4"));
        for p in [&live, &dead, &other_old, &legacy] {
            std::fs::write(p, b"partial").expect("write");
        }
        let spec = StorageSpec::new("default", "file", dir.path().to_string_lossy());
        let dry = clean(&spec, Duration::from_secs(3600), false)
            .await
            .expect("dry run");
        let keys: Vec<&str> = dry.items.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, [dead.display().to_string()], "{dry:?}");
        assert!(dead.exists() && dry.dry_run, "a dry run removes nothing");

        let done = clean(&spec, Duration::ZERO, true).await.expect("clean");
        assert!(done.items.iter().all(|i| i.removed), "{done:?}");
        assert!(live.exists(), "a live writer's temp file must stay");
        for p in [&dead, &other_old, &legacy] {
            assert!(!p.exists(), "{} left", p.display());
        }
    }
}
