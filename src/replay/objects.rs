//! A replay whose output is object storage (`--output s3://bucket/prefix`).
//!
//! The replay runs as it does over a local directory, in a local staging
//! directory that first holds an empty stand-in for every object already
//! under the group's and its dead letters' prefixes. The replay's own rules
//! then decide, exactly as for a local directory, which earlier files are
//! its run's stale ones (removed), which belong to other runs or shards
//! (left alone) and whether a sharded run would double rows (refused).
//! At the end every file the replay wrote goes up under its final name (a
//! whole object: a rerun replaces it atomically), and only then are the
//! objects whose stand-ins the replay removed deleted.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{ReplayError, ReplayOptions, ReplaySummary};
use crate::storage::{self, Mirror, StorageError};

/// The prefixes a replay of `pipeline` writes under, relative to the root.
fn prefixes(pipeline: &str) -> [String; 2] {
    [pipeline.to_string(), format!("_dead_letter/{pipeline}")]
}

/// Files under `dir`, recursively, relative to `root` with `/` separators.
fn local_files(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            local_files(root, &path, out);
        } else if let Ok(rel) = path.strip_prefix(root) {
            let rel: Vec<&str> = rel.iter().filter_map(|c| c.to_str()).collect();
            out.push((rel.join("/"), path));
        }
    }
}

pub(super) fn run(mut opts: ReplayOptions, m: Mirror) -> Result<ReplaySummary, ReplayError> {
    let err = |e: StorageError| ReplayError::Storage(e);
    let _ = std::fs::remove_dir_all(&m.local);
    // Stand-ins of the objects there are: (relative path -> inode).
    let mut stand_ins: HashMap<String, u64> = HashMap::new();
    for prefix in prefixes(&opts.pipeline.name) {
        for rel in storage::list(&storage::join(&m.url, &prefix)).map_err(err)? {
            let rel = format!("{prefix}/{rel}");
            let path = m.local_of(&rel);
            let local = |source| {
                err(StorageError::Local {
                    what: "failed to stage",
                    path: path.clone(),
                    source,
                })
            };
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(local)?;
            }
            std::fs::File::create(&path).map_err(local)?;
            let ino = std::fs::metadata(&path).map_err(local)?.ino();
            stand_ins.insert(rel, ino);
        }
    }
    opts.output = m.local.clone();
    let result = super::run_local(opts);
    let uploaded = match &result {
        Ok(s) => publish(&m, s, &stand_ins),
        Err(_) => Ok(()),
    };
    let _ = std::fs::remove_dir_all(&m.local);
    let mut s = result.map_err(|e| match e {
        // Name the bucket, not the staging directory.
        ReplayError::ShardConflict { dir, file, shard } => ReplayError::ShardConflict {
            dir: m.url_of(&dir).map_or(dir, PathBuf::from),
            file,
            shard,
        },
        e => e,
    })?;
    uploaded.map_err(err)?;
    let url = |p: &String| m.url_of(Path::new(p)).unwrap_or_else(|| p.clone());
    s.files = s.files.iter().map(url).collect();
    s.dead_letter_file = s.dead_letter_file.as_ref().map(url);
    s.dead_letter_files = s.dead_letter_files.iter().map(url).collect();
    Ok(s)
}

/// Uploads what the replay wrote, then deletes the objects whose
/// stand-ins it removed (its stale files).
fn publish(
    m: &Mirror,
    s: &ReplaySummary,
    stand_ins: &HashMap<String, u64>,
) -> Result<(), StorageError> {
    let mut files = Vec::new();
    for prefix in prefixes(&s.pipeline) {
        local_files(&m.local, &m.local_of(&prefix), &mut files);
    }
    let mut present = std::collections::HashSet::new();
    for (rel, path) in &files {
        present.insert(rel.clone());
        let untouched = stand_ins.get(rel).is_some_and(|&ino| {
            std::fs::metadata(path).is_ok_and(|md| md.ino() == ino && md.len() == 0)
        });
        if !untouched {
            storage::put_file(path, &storage::join(&m.url, rel))?;
        }
    }
    for rel in stand_ins.keys() {
        if !present.contains(rel) {
            storage::delete(&storage::join(&m.url, rel))?;
        }
    }
    Ok(())
}
