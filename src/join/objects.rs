//! A join whose offline store is object storage (`s3://bucket/prefix`):
//! the groups' files are copied to a local directory of this join's own,
//! joined from there exactly as a local store, and removed afterwards.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::JoinError;
use crate::storage;

/// A local copy of the groups' offline files, removed when dropped.
#[derive(Debug)]
pub struct StagedOffline {
    pub dir: PathBuf,
}

impl Drop for StagedOffline {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// When `offline` is a URL, copies the files of each group (`name` or
/// `name:features`) to a new local directory and returns it; a local
/// `offline` is used as it is (`None`). Each call gets a directory of its
/// own, so joins running at once in one process do not share files.
pub fn stage_offline(
    offline: &Path,
    groups: &[String],
) -> Result<Option<StagedOffline>, JoinError> {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let storage_err = |e: storage::StorageError| JoinError::Input(e.to_string());
    let Some(m) = storage::Mirror::of(offline).map_err(storage_err)? else {
        return Ok(None);
    };
    // This call's own directory under the URL's staging directory.
    let m = storage::Mirror {
        local: m
            .local
            .join(format!("join-{}", CALLS.fetch_add(1, Ordering::Relaxed))),
        url: m.url,
    };
    let staged = StagedOffline {
        dir: m.local.clone(),
    };
    let _ = std::fs::remove_dir_all(&staged.dir);
    for g in groups {
        let name = g.split_once(':').map_or(g.as_str(), |(n, _)| n);
        storage::download(&storage::join(&m.url, name), &m.local_of(name)).map_err(storage_err)?;
    }
    Ok(Some(staged))
}
