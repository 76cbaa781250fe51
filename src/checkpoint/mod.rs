//! Checkpoints: one JSON document per (pipeline, topic, partition) under
//! the state directory, replaced whole, so a reader sees the old checkpoint
//! or the new one, never a mix. The state directory is a local (or shared)
//! directory, where a checkpoint is written aside and renamed, or a URL in
//! object storage (`s3://bucket/prefix`, see docs/storage.md), where each
//! checkpoint is one object written with a conditional put.
//!
//! Fencing (object storage): the store remembers the version of each
//! partition's object it last read or wrote, and writes only over that
//! version (or, when there was none, only if there still is none). A new
//! owner claims a partition by loading its checkpoint and storing it again
//! with a raised generation before it touches any file; from then on a
//! former owner that still runs (a zombie: paused, partitioned away) has a
//! stale version, and its next write is refused with
//! [`CheckpointError::Fenced`]: it can neither overwrite the new owner's
//! state nor publish the files of an epoch it did not store.
//!
//! A checkpoint holds the partition's engine state, the next offset to
//! read, the restore generation (see `sink::redis`) and the Parquet files
//! closed in the epoch it ends. Those files are renamed into place only
//! after the checkpoint is on disk; a restart publishes any a crash left
//! behind and deletes every other temporary file of the partition. Rows
//! therefore appear exactly once: with the checkpoint whose offsets follow
//! them, or not at all (and are recomputed from those offsets).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::engine::PartitionState;
use crate::storage::{self, StorageError, Version};

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
    #[error("checkpoint store")]
    Storage(#[from] StorageError),
    /// Another instance claimed the partition since this one last read or
    /// wrote its checkpoint: this instance no longer owns it.
    #[error("checkpoint {path} was claimed by another instance: partition {partition} is no longer ours")]
    Fenced { path: PathBuf, partition: i32 },
}

/// The version of each partition's object last read or written
/// (`None`: there was none), shared by the clones of a store.
type Seen = Arc<Mutex<HashMap<i32, Option<Version>>>>;

/// Where the checkpoints of one pipeline and topic live.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    /// Object storage: the version of each partition's object this
    /// instance last read or wrote (`None`: there was none). Shared by the
    /// clones of the store (the rebalance callback loads, the worker stores).
    seen: Option<Seen>,
}

impl Store {
    pub fn new(state_dir: &Path, pipeline: &str, topic: &str) -> Store {
        let remote = storage::is_url(state_dir);
        Store {
            dir: state_dir.join(pipeline).join(topic),
            seen: remote.then(|| Arc::new(Mutex::new(HashMap::new()))),
        }
    }

    pub fn path(&self, partition: i32) -> PathBuf {
        self.dir.join(format!("partition-{partition}.json"))
    }

    fn url(&self, partition: i32) -> String {
        self.path(partition).to_string_lossy().into_owned()
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Option<Version>>> {
        self.seen
            .as_ref()
            .expect("only object-storage stores track versions")
            .lock()
            .expect("checkpoint versions poisoned: a checkpoint call panicked")
    }

    /// The checkpoint of `partition`, if one was written.
    pub fn load(&self, partition: i32) -> Result<Option<Checkpoint>, CheckpointError> {
        let path = self.path(partition);
        let bytes = if self.seen.is_some() {
            match storage::get(&self.url(partition))? {
                Some((b, v)) => {
                    self.seen().insert(partition, Some(v));
                    b.to_vec()
                }
                None => {
                    self.seen().insert(partition, None);
                    return Ok(None);
                }
            }
        } else {
            match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(source) => return Err(CheckpointError::Read { path, source }),
            }
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

    /// Writes a checkpoint atomically and durably. In object storage the
    /// write is conditional on the version this store last saw, and
    /// refused with [`CheckpointError::Fenced`] when the partition was
    /// claimed since (or was never loaded by this store).
    pub fn store(&self, c: &Checkpoint) -> Result<(), CheckpointError> {
        let body = serde_json::to_vec(c).expect("checkpoints serialize");
        if self.seen.is_some() {
            return self.store_object(c.partition, body);
        }
        let path = self.path(c.partition);
        let err = |source| CheckpointError::Write {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&self.dir).map_err(err)?;
        let tmp = self
            .dir
            .join(format!(".partition-{}.json.tmp", c.partition));
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(&body).map_err(err)?;
        f.sync_all().map_err(err)?;
        std::fs::rename(&tmp, &path).map_err(err)?;
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    fn store_object(&self, partition: i32, body: Vec<u8>) -> Result<(), CheckpointError> {
        let url = self.url(partition);
        let fenced = || CheckpointError::Fenced {
            path: self.path(partition),
            partition,
        };
        let expected = match self.seen().get(&partition) {
            Some(v) => v.clone(),
            None => return Err(fenced()),
        };
        match storage::put_if(&url, body.clone(), expected.as_ref())? {
            Ok(v) => {
                self.seen().insert(partition, Some(v));
                Ok(())
            }
            Err(storage::Conflict) => {
                // A retried request whose first try was stored: the object
                // holds exactly this checkpoint.
                if let Some((stored, v)) = storage::get(&url)? {
                    if stored.as_ref() == body.as_slice() {
                        self.seen().insert(partition, Some(v));
                        return Ok(());
                    }
                }
                self.seen().remove(&partition);
                Err(fenced())
            }
        }
    }
}
