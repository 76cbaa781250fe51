//! Checkpoints: one JSON file per (pipeline, topic, partition) under the
//! state directory, written aside and renamed, so a reader sees the old
//! checkpoint or the new one, never a mix.
//!
//! A checkpoint holds the partition's engine state, the next offset to
//! read, the restore generation (see `sink::redis`) and the Parquet files
//! closed in the epoch it ends. Those files are renamed into place only
//! after the checkpoint is on disk; a restart publishes any a crash left
//! behind and deletes every other temporary file of the partition. Rows
//! therefore appear exactly once: with the checkpoint whose offsets follow
//! them, or not at all (and are recomputed from those offsets).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::engine::PartitionState;

/// Format version of the file. Version 2 saves the partition's own
/// watermark in the state; version 1 saved the pipeline watermark there,
/// which a restored partition continues from (its windows up to it fired).
pub const CHECKPOINT_VERSION: u32 = 2;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    pub version: u32,
    pub pipeline: String,
    pub topic: String,
    pub partition: i32,
    /// Incremented each time the partition is restored.
    pub generation: u64,
    /// First offset not yet reflected in the state; `None` before any
    /// record (start from the group's `start` policy).
    pub next_offset: Option<i64>,
    /// Checkpoints written so far for this partition.
    pub epoch: u64,
    pub state: Option<PartitionState>,
    /// (temporary, final) paths of the Parquet files this checkpoint publishes.
    pub pending_files: Vec<(PathBuf, PathBuf)>,
    /// The latest online pane of each key (`sink::redis::recovery`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub online_image: Vec<crate::sink::redis::recovery::ImageEntry>,
    /// The online store's marker token the image was last written under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online_token: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("failed to read checkpoint {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("checkpoint {path} is not valid")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("checkpoint {path} has format version {version}, newer than this rill reads ({CHECKPOINT_VERSION})")]
    Version { path: PathBuf, version: u32 },
    #[error("failed to write checkpoint {path}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where the checkpoints of one pipeline and topic live.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn new(state_dir: &Path, pipeline: &str, topic: &str) -> Store {
        Store {
            dir: state_dir.join(pipeline).join(topic),
        }
    }

    pub fn path(&self, partition: i32) -> PathBuf {
        self.dir.join(format!("partition-{partition}.json"))
    }

    /// The checkpoint of `partition`, if one was written.
    pub fn load(&self, partition: i32) -> Result<Option<Checkpoint>, CheckpointError> {
        let path = self.path(partition);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(CheckpointError::Read { path, source }),
        };
        let c: Checkpoint =
            serde_json::from_slice(&bytes).map_err(|source| CheckpointError::Parse {
                path: path.clone(),
                source,
            })?;
        if c.version > CHECKPOINT_VERSION {
            return Err(CheckpointError::Version {
                path,
                version: c.version,
            });
        }
        Ok(Some(c))
    }

    /// Writes a checkpoint atomically and durably.
    pub fn store(&self, c: &Checkpoint) -> Result<(), CheckpointError> {
        let path = self.path(c.partition);
        let err = |source| CheckpointError::Write {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&self.dir).map_err(err)?;
        let tmp = self
            .dir
            .join(format!(".partition-{}.json.tmp", c.partition));
        let body = serde_json::to_vec(c).expect("checkpoints serialize");
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(&body).map_err(err)?;
        f.sync_all().map_err(err)?;
        std::fs::rename(&tmp, &path).map_err(err)?;
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}
