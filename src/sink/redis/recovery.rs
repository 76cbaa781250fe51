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

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::aggregate::Value;
use crate::engine::{PaneBuf, PaneMeta, Timing};
use crate::event::EncodedKey;
use crate::time::Micros;

/// The latest online pane of each key of one partition: rows and their
/// values in two flat vectors (a short key is inline in its row), found
/// through an index of row numbers, so that noting a pane touches the
/// index, one row and one run of values.
#[derive(Debug, Default, Clone)]
pub struct OnlineImage {
    index: hashbrown::HashTable<u32>,
    rows: Vec<ImageRow>,
    /// `width` values per row.
    values: Vec<Value>,
    width: usize,
}

#[derive(Debug, Clone)]
struct ImageRow {
    hash: u64,
    key: EncodedKey,
    window_start: Micros,
    window_end: Micros,
    emitted_at: Micros,
    generation: u64,
    pane: u32,
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

fn hash_of(key: &[u8]) -> u64 {
    use std::hash::BuildHasher;
    rustc_hash::FxBuildHasher.hash_one(key)
}

impl OnlineImage {
    /// Keeps `m` if it is not older than the key's row (the order of the
    /// compare-and-set).
    pub fn note(&mut self, m: &PaneMeta, values: &[Value], generation: u64) {
        let key = m.key.bytes();
        let h = hash_of(key);
        let rows = &self.rows;
        let found = self
            .index
            .find(h, |&i| {
                let r = &rows[i as usize];
                r.hash == h && r.key.bytes() == key
            })
            .copied();
        match found {
            Some(i) => {
                let r = &mut self.rows[i as usize];
                if (m.window_end, generation, m.pane_index) >= r.rank() {
                    r.window_start = m.window_start;
                    r.window_end = m.window_end;
                    r.emitted_at = m.emitted_at;
                    r.generation = generation;
                    r.pane = m.pane_index;
                    let w = self.width;
                    self.values[i as usize * w..(i as usize + 1) * w].clone_from_slice(values);
                }
            }
            None => self.push(h, m.key.clone(), m, values, generation),
        }
    }

    fn push(&mut self, h: u64, key: EncodedKey, m: &PaneMeta, values: &[Value], generation: u64) {
        if self.rows.is_empty() {
            self.width = values.len();
        }
        debug_assert_eq!(values.len(), self.width);
        let i = self.rows.len() as u32;
        self.rows.push(ImageRow {
            hash: h,
            key,
            window_start: m.window_start,
            window_end: m.window_end,
            emitted_at: m.emitted_at,
            generation,
            pane: m.pane_index,
        });
        self.values.extend_from_slice(values);
        let rows = &self.rows;
        self.index.insert_unique(h, i, |&j| rows[j as usize].hash);
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Forgets the keys whose TTL (µs, 0: none) ran out by `now`.
    pub fn expire(&mut self, now: Micros, ttl: Micros) {
        if ttl == 0
            || self
                .rows
                .iter()
                .all(|r| r.emitted_at.saturating_add(ttl) > now)
        {
            return;
        }
        let w = self.width;
        let mut kept = OnlineImage::default();
        for (i, r) in self.rows.iter().enumerate() {
            if r.emitted_at.saturating_add(ttl) > now {
                let meta = self.meta(r, 0);
                kept.push(
                    r.hash,
                    r.key.clone(),
                    &meta,
                    &self.values[i * w..(i + 1) * w],
                    r.generation,
                );
            }
        }
        *self = kept;
    }

    fn meta(&self, r: &ImageRow, partition: u32) -> PaneMeta {
        PaneMeta {
            key: r.key.clone(),
            window_start: r.window_start,
            window_end: r.window_end,
            pane_index: r.pane,
            timing: Timing::OnTime,
            is_final: false,
            retraction: false,
            partition,
            emitted_at: r.emitted_at,
            watermark: None,
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
        for (i, r) in self.rows.iter().enumerate() {
            if ttl > 0 && r.emitted_at.saturating_add(ttl) <= now {
                continue;
            }
            panes.push(
                self.meta(r, partition),
                &self.values[i * self.width..(i + 1) * self.width],
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
        let w = self.width;
        let mut v: Vec<ImageEntry> = self
            .rows
            .iter()
            .enumerate()
            .map(|(i, r)| ImageEntry {
                key: b64.encode(r.key.bytes()),
                window_start: r.window_start,
                window_end: r.window_end,
                emitted_at: r.emitted_at,
                generation: r.generation,
                pane: r.pane,
                values: self.values[i * w..(i + 1) * w].to_vec(),
            })
            .collect();
        v.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        v
    }

    /// The image of a checkpoint's rows (entries that do not decode, or
    /// whose width differs from the first's, are skipped).
    pub fn from_entries(entries: &[ImageEntry]) -> OnlineImage {
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut img = OnlineImage::default();
        for e in entries {
            let Ok(k) = b64.decode(&e.key) else {
                continue;
            };
            if !img.rows.is_empty() && e.values.len() != img.width {
                continue;
            }
            let key = EncodedKey::new(&k);
            let meta = PaneMeta {
                key: key.clone(),
                window_start: e.window_start,
                window_end: e.window_end,
                pane_index: e.pane,
                timing: Timing::OnTime,
                is_final: false,
                retraction: false,
                partition: 0,
                emitted_at: e.emitted_at,
                watermark: None,
            };
            img.note(&meta, &e.values, e.generation);
        }
        img
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pane(key: &str, end: Micros, pane: u32, emitted_at: Micros) -> PaneMeta {
        PaneMeta {
            key: EncodedKey::new(key.as_bytes()),
            window_start: end - 10,
            window_end: end,
            pane_index: pane,
            timing: Timing::OnTime,
            is_final: true,
            retraction: false,
            partition: 0,
            emitted_at,
            watermark: None,
        }
    }

    #[test]
    fn the_image_keeps_the_newest_pane_per_key_and_survives_a_checkpoint() {
        let mut img = OnlineImage::default();
        img.note(&pane("a", 20, 0, 1), &[Value::Int(1)], 1);
        img.note(&pane("a", 10, 0, 2), &[Value::Int(2)], 1); // older window: ignored
        img.note(&pane("b", 10, 0, 3), &[Value::Int(3)], 1);
        img.note(&pane("a", 20, 0, 4), &[Value::Int(4)], 2); // later generation wins
        let back = OnlineImage::from_entries(&img.entries());
        let rows = |i: &OnlineImage| {
            let (p, g) = i.batches(1, 0, 0, 0, 10).remove(0);
            let mut v: Vec<(Vec<u8>, Micros, Vec<Value>, u64)> = p
                .iter()
                .zip(g)
                .map(|((m, v), g)| (m.key.bytes().to_vec(), m.window_end, v.to_vec(), g))
                .collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        let want = vec![
            (b"a".to_vec(), 20, vec![Value::Int(4)], 2),
            (b"b".to_vec(), 10, vec![Value::Int(3)], 1),
        ];
        assert_eq!(rows(&img), want);
        assert_eq!(rows(&back), want);
        // TTL: b, emitted at 3, is gone at 3 + 5.
        img.expire(8, 5);
        assert_eq!(img.len(), 1);
        assert_eq!(rows(&img)[0].0, b"a".to_vec());
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

    /// Changes each time the token does (one atomic load: the worker asks
    /// on every turn of its loop).
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// (version, token): the version changes each time the token does.
    pub fn current(&self) -> (u64, Option<String>) {
        let t = self.token.lock().map(|t| t.clone()).unwrap_or(None);
        (self.version.load(Ordering::Acquire), t)
    }

    /// Reads the marker, creating it when missing; publishes a changed token.
    /// On a Redis Cluster there is one marker per range of slots (so one
    /// on each primary at least), and the token is theirs together: a
    /// shard that lost its data shows as a changed token too.
    pub async fn check(
        &self,
        conn: &mut super::conn::OnlineConn,
        group: &str,
    ) -> redis::RedisResult<()> {
        let keys = if conn.is_cluster() {
            cluster_marker_keys(conn, &self.key).await?
        } else {
            vec![self.key.clone()]
        };
        let mut created = false;
        let mut parts = Vec::with_capacity(keys.len());
        for key in &keys {
            let (c, token) = read_or_create(conn, key).await?;
            created |= c;
            parts.push(token);
        }
        let now = parts.join(",");
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

/// The marker's token at `key`, set first when missing (`true`: it was).
async fn read_or_create(
    conn: &mut super::conn::OnlineConn,
    key: &str,
) -> redis::RedisResult<(bool, String)> {
    let mut got: Option<String> = redis::cmd("GET").arg(key).query_async(conn).await?;
    let created = got.is_none();
    if created {
        let _: Option<String> = redis::cmd("SET")
            .arg(key)
            .arg(new_token())
            .arg("NX")
            .query_async(conn)
            .await?;
        got = redis::cmd("GET").arg(key).query_async(conn).await?;
    }
    match got {
        Some(t) => Ok((created, t)),
        None => Err(redis::RedisError::from((
            redis::ErrorKind::Io,
            "the marker key vanished right after it was set",
        ))),
    }
}

/// One marker key per slot range of the cluster (`CLUSTER SLOTS`), in the
/// range's first slot: the `%marker` hash tag of `key` becomes `%marker<n>`
/// with the smallest `n` that hashes to that slot.
async fn cluster_marker_keys(
    conn: &mut super::conn::OnlineConn,
    key: &str,
) -> redis::RedisResult<Vec<String>> {
    let ranges: Vec<redis::Value> = redis::cmd("CLUSTER").arg("SLOTS").query_async(conn).await?;
    let mut starts: Vec<i64> = ranges
        .iter()
        .filter_map(|r| match r {
            redis::Value::Array(v) => match v.first() {
                Some(redis::Value::Int(s)) => Some(*s),
                _ => None,
            },
            _ => None,
        })
        .collect();
    starts.sort_unstable();
    if starts.is_empty() {
        return Err(redis::RedisError::from((
            redis::ErrorKind::Io,
            "the cluster reports no slots",
        )));
    }
    let (head, tail) = key
        .split_once("{%marker}")
        .expect("a marker key holds the {%marker} tag");
    Ok(starts
        .into_iter()
        .filter_map(|start| redis::cluster_routing::Slot::new(u16::try_from(start).ok()?))
        .map(|want| {
            let n = (0u32..)
                .find(|n| super::conn::slot_of(format!("%marker{n}").as_bytes()) == want)
                .expect("every slot has a tag");
            format!("{head}{{%marker{n}}}{tail}")
        })
        .collect())
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
