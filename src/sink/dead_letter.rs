//! Dead letters: refused records, one JSON object per line, with the reason,
//! a detail, the source position and the raw bytes (SPEC 5).
//!
//! Files appear atomically (written aside, renamed on close) and are named by
//! the run identifier, so a replay of the same input replaces its own file.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;

use crate::event::{Reason, Refusal};

/// Raw bytes kept per dead letter; longer records are cut and flagged.
pub const MAX_RAW_BYTES: usize = 64 * 1024;

/// Where a record came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    File {
        file: String,
        line: u64,
    },
    Row {
        file: String,
        row: u64,
    },
    Kafka {
        topic: String,
        partition: i32,
        offset: i64,
    },
}

/// A dead-letter writer for one pipeline.
pub struct DeadLetterWriter {
    pipeline: String,
    tmp: PathBuf,
    dest: PathBuf,
    out: Option<BufWriter<File>>,
    counts: BTreeMap<Reason, u64>,
}

impl DeadLetterWriter {
    /// Writes to `<dir>/<pipeline>/part-<run_id>.jsonl` once the first letter comes.
    pub fn new(dir: &Path, pipeline: &str, run_id: &str) -> DeadLetterWriter {
        let d = dir.join(pipeline);
        DeadLetterWriter {
            pipeline: pipeline.to_string(),
            tmp: d.join(format!(".part-{run_id}.jsonl.tmp")),
            dest: d.join(format!("part-{run_id}.jsonl")),
            out: None,
            counts: BTreeMap::new(),
        }
    }

    /// Counts per reason so far.
    pub fn counts(&self) -> &BTreeMap<Reason, u64> {
        &self.counts
    }

    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// The file written on close.
    pub fn path(&self) -> &Path {
        &self.dest
    }

    /// Records one refused record.
    pub fn write(&mut self, refusal: &Refusal, pos: &Position, raw: &[u8]) -> std::io::Result<()> {
        *self.counts.entry(refusal.reason).or_default() += 1;
        if self.out.is_none() {
            if let Some(parent) = self.tmp.parent() {
                std::fs::create_dir_all(parent)?;
            }
            self.out = Some(BufWriter::with_capacity(
                256 * 1024,
                File::create(&self.tmp)?,
            ));
        }
        let out = self.out.as_mut().expect("opened above");
        let line = dead_letter_json(&self.pipeline, refusal, pos, raw);
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")
    }

    /// Flushes and renames the file into place (if anything was written).
    pub fn finish(&mut self) -> std::io::Result<()> {
        if let Some(mut out) = self.out.take() {
            out.flush()?;
            out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            std::fs::rename(&self.tmp, &self.dest)?;
        } else if self.dest.exists() {
            // A clean re-run of the same input: its earlier letters are stale.
            std::fs::remove_file(&self.dest)?;
        }
        Ok(())
    }
}

impl DeadLetterWriter {
    /// Flushes and syncs the file but leaves it under its temporary name,
    /// returning its (temporary, final) paths when anything was written:
    /// the daemon publishes it with the checkpoint that covers its records.
    pub fn close_deferred(&mut self) -> std::io::Result<Option<(PathBuf, PathBuf)>> {
        match self.out.take() {
            Some(mut out) => {
                out.flush()?;
                out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
                Ok(Some((self.tmp.clone(), self.dest.clone())))
            }
            None => Ok(None),
        }
    }

    /// Removes the file being written, unpublished (a revoked partition).
    pub fn discard(&mut self) {
        if self.out.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Removes the dead-letter files of replay run `run_id` in
/// `<dir>/<pipeline>/` that are not in `keep`: `part-<run_id>.jsonl` and
/// `part-<run_id>-*.jsonl`, or with `shard` only `part-<run_id>-<shard>-*.jsonl`
/// (a shard cleans up only its own). Returns how many were removed.
pub fn remove_stale(
    dir: &Path,
    pipeline: &str,
    run_id: &str,
    shard: Option<&str>,
    keep: &[PathBuf],
) -> std::io::Result<usize> {
    let d = dir.join(pipeline);
    let Ok(entries) = std::fs::read_dir(&d) else {
        return Ok(0);
    };
    let whole = format!("part-{run_id}.jsonl");
    let prefix = match shard {
        Some(s) => format!("part-{run_id}-{s}-"),
        None => format!("part-{run_id}-"),
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let ours = (shard.is_none() && name == whole)
            || (name.starts_with(&prefix) && name.ends_with(".jsonl"));
        if ours && !keep.contains(&e.path()) {
            std::fs::remove_file(e.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Removes the unpublished files of `<dir>/<pipeline>/` whose run
/// identifier starts with `prefix` and that are not in `keep` (left by a
/// crashed or revoked run). Returns how many were removed.
pub fn remove_unpublished(
    dir: &Path,
    pipeline: &str,
    prefix: &str,
    keep: &[(PathBuf, PathBuf)],
) -> usize {
    let mut removed = 0;
    let Ok(files) = std::fs::read_dir(dir.join(pipeline)) else {
        return 0;
    };
    for f in files.flatten() {
        let name = f.file_name().to_string_lossy().into_owned();
        let path = f.path();
        if super::is_unpublished(&name, prefix)
            && !keep.iter().any(|(t, _)| *t == path)
            && std::fs::remove_file(&path).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

/// One dead letter as a JSON line (without the newline).
pub fn dead_letter_json(pipeline: &str, refusal: &Refusal, pos: &Position, raw: &[u8]) -> String {
    let truncated = raw.len() > MAX_RAW_BYTES;
    let kept = &raw[..raw.len().min(MAX_RAW_BYTES)];
    let source = match pos {
        Position::File { file, line } => serde_json::json!({ "file": file, "line": line }),
        Position::Row { file, row } => serde_json::json!({ "file": file, "row": row }),
        Position::Kafka {
            topic,
            partition,
            offset,
        } => {
            serde_json::json!({ "topic": topic, "partition": partition, "offset": offset })
        }
    };
    let mut obj = serde_json::json!({
        "pipeline": pipeline,
        "reason": refusal.reason.as_str(),
        "detail": refusal.detail,
        "source": source,
        "raw_len": raw.len(),
        "raw_truncated": truncated,
    });
    match std::str::from_utf8(kept) {
        Ok(s) => obj["raw"] = serde_json::Value::String(s.to_string()),
        Err(_) => {
            obj["raw_base64"] =
                serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(kept))
        }
    }
    obj.to_string()
}
