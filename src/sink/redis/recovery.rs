//! Recovery of an online store that lost its data (a Redis restarted
//! without persistence, a failover to an empty replica, a FLUSHALL).
//!
//! The writer keeps a marker key in Redis, `{prefix}:{%marker}:{group}`
//! (`%m` never occurs in an entity's part of a key: a `%` there always
//! starts a two-digit hex escape), holding a token. It reads the marker on
//! every new connection and at every checkpoint's flush. When the marker
//! is missing, the store lost what the group wrote (or is new): the writer
//! sets a fresh token (`SET NX`, so that instances sharing the store agree
//! on one) and publishes it.
//!
//! Each partition keeps the latest pane it sent online for each key (its
//! [`OnlineImage`]), in memory and in its checkpoint, together with the
//! token of the store it was written to. A partition whose token differs
//! from the store's current one, because the marker was re-created while it
//! ran or because it was restored from a checkpoint taken before, writes
//! its whole image again, with the panes' own window, generation and pane
//! number (the compare-and-set keeps anything newer) and the TTL that was
//! left. The checkpoint stores the new token only after that rewrite is
//! acknowledged, so a crash in between rewrites again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::aggregate::Value;
use crate::engine::{PaneBuf, PaneMeta, Timing};
use crate::event::EncodedKey;
use crate::time::Micros;

/// The latest online pane of each key of one partition.
#[derive(Debug, Default, Clone)]
pub struct OnlineImage {
    rows: HashMap<Vec<u8>, ImageRow, rustc_hash::FxBuildHasher>,
}

#[derive(Debug, Clone)]
struct ImageRow {
    window_start: Micros,
    window_end: Micros,
    emitted_at: Micros,
    generation: u64,
    pane: u32,
    values: Vec<Value>,
}

impl ImageRow {
    fn rank(&self) -> (Micros, u64, u32) {
        (self.window_end, self.generation, self.pane)
    }
}

/// One key's row in a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageEntry {
    /// The encoded key, base64.
    pub key: String,
    pub window_start: Micros,
    pub window_end: Micros,
    pub emitted_at: Micros,
    pub generation: u64,
    pub pane: u32,
    pub values: Vec<Value>,
}

impl OnlineImage {
    /// Keeps `m` if it is not older than the key's row (the order of the
    /// compare-and-set).
    pub fn note(&mut self, m: &PaneMeta, values: &[Value], generation: u64) {
        let rank = (m.window_end, generation, m.pane_index);
        match self.rows.get_mut(m.key.bytes()) {
            Some(r) => {
                if rank >= r.rank() {
                    r.window_start = m.window_start;
                    r.window_end = m.window_end;
                    r.emitted_at = m.emitted_at;
                    r.generation = generation;
                    r.pane = m.pane_index;
                    r.values.clone_from_slice(values);
                }
            }
            None => {
                self.rows.insert(
                    m.key.bytes().to_vec(),
                    ImageRow {
                        window_start: m.window_start,
                        window_end: m.window_end,
                        emitted_at: m.emitted_at,
                        generation,
                        pane: m.pane_index,
                        values: values.to_vec(),
                    },
                );
            }
        }
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Forgets the keys whose TTL (µs, 0: none) ran out by `now`.
    pub fn expire(&mut self, now: Micros, ttl: Micros) {
        if ttl > 0 {
            self.rows
                .retain(|_, r| r.emitted_at.saturating_add(ttl) > now);
        }
    }

    /// The rows as panes for the writer, `chunk` at a time, each with its
    /// generation; keys whose TTL ran out by `now` are left out.
    pub fn batches(
        &self,
        width: usize,
        partition: u32,
        now: Micros,
        ttl: Micros,
        chunk: usize,
    ) -> Vec<(PaneBuf, Vec<u64>)> {
        let mut out = Vec::new();
        let mut panes = PaneBuf::new(width);
        let mut gens = Vec::new();
        let mut keys: Vec<&Vec<u8>> = self.rows.keys().collect();
        keys.sort_unstable();
        for k in keys {
            let r = &self.rows[k];
            if ttl > 0 && r.emitted_at.saturating_add(ttl) <= now {
                continue;
            }
            panes.push(
                PaneMeta {
                    key: EncodedKey::new(k),
                    window_start: r.window_start,
                    window_end: r.window_end,
                    pane_index: r.pane,
                    timing: Timing::OnTime,
                    is_final: false,
                    retraction: false,
                    partition,
                    emitted_at: r.emitted_at,
                    watermark: None,
                },
                &r.values,
            );
            gens.push(r.generation);
            if panes.len() >= chunk {
                out.push((
                    std::mem::replace(&mut panes, PaneBuf::new(width)),
                    std::mem::take(&mut gens),
                ));
            }
        }
        if !panes.is_empty() {
            out.push((panes, gens));
        }
        out
    }

    /// The rows for a checkpoint, sorted by key.
    pub fn entries(&self) -> Vec<ImageEntry> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut v: Vec<ImageEntry> = self
            .rows
            .iter()
            .map(|(k, r)| ImageEntry {
                key: b64.encode(k),
                window_start: r.window_start,
                window_end: r.window_end,
                emitted_at: r.emitted_at,
                generation: r.generation,
                pane: r.pane,
                values: r.values.clone(),
            })
            .collect();
        v.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        v
    }

    /// The image of a checkpoint's rows (entries that do not decode are skipped).
    pub fn from_entries(entries: &[ImageEntry]) -> OnlineImage {
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut img = OnlineImage::default();
        for e in entries {
            let Ok(k) = b64.decode(&e.key) else {
                continue;
            };
            img.rows.insert(
                k,
                ImageRow {
                    window_start: e.window_start,
                    window_end: e.window_end,
                    emitted_at: e.emitted_at,
                    generation: e.generation,
                    pane: e.pane,
                    values: e.values.clone(),
                },
            );
        }
        img
    }
}

/// The store's current token, shared by a group's writer and its worker.
#[derive(Debug)]
pub struct LossMarker {
    /// The marker's Redis key.
    pub key: String,
    token: Mutex<Option<String>>,
    version: AtomicU64,
}

impl LossMarker {
    pub fn new(prefix: &str, group: &str) -> LossMarker {
        LossMarker {
            key: format!("{prefix}:{{%marker}}:{group}"),
            token: Mutex::new(None),
            version: AtomicU64::new(0),
        }
    }

    /// (version, token): the version changes each time the token does.
    pub fn current(&self) -> (u64, Option<String>) {
        let t = self.token.lock().map(|t| t.clone()).unwrap_or(None);
        (self.version.load(Ordering::Acquire), t)
    }

    /// Reads the marker, creating it when missing; publishes a changed token.
    pub async fn check(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        group: &str,
    ) -> redis::RedisResult<()> {
        let mut got: Option<String> = redis::cmd("GET").arg(&self.key).query_async(conn).await?;
        let created = got.is_none();
        if created {
            let fresh = new_token();
            let _: Option<String> = redis::cmd("SET")
                .arg(&self.key)
                .arg(&fresh)
                .arg("NX")
                .query_async(conn)
                .await?;
            got = redis::cmd("GET").arg(&self.key).query_async(conn).await?;
        }
        let Some(now) = got else {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "the marker key vanished right after it was set",
            )));
        };
        let mut cur = self
            .token
            .lock()
            .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "marker lock poisoned")))?;
        if cur.as_deref() != Some(now.as_str()) {
            if cur.is_some() {
                tracing::warn!(group, marker = %self.key, "the online store lost its data (its marker is gone): every partition writes its latest panes again");
            } else if created {
                tracing::info!(group, marker = %self.key, "no marker in the online store (new, or emptied while rill was down): restored partitions write their latest panes again");
            }
            *cur = Some(now);
            self.version.fetch_add(1, Ordering::AcqRel);
        }
        Ok(())
    }
}

/// A token unlikely to repeat: wall time in ns, the process id, a counter.
fn new_token() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{ns:x}-{:x}-{:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}
