//! The online sink: the latest pane of each (feature group, entity) as a
//! Redis hash (SPEC 6).
//!
//! Layout: key `{prefix}:{<entity>}:<group>`, where `<entity>` is the key
//! values joined by `|` (each value with `%`, `|`, `{` and `}`
//! percent-encoded), so the braces make the entity a Redis Cluster hash tag
//! and every group of one entity lands on one slot. One field per feature,
//! named as the feature, holding decimal text in shortest round-trip form
//! (absent when null), plus `_window_start`, `_window_end`, `_emitted_at`
//! (epoch microseconds), `_pane` (pane index) and `_gen` (the partition's
//! restore generation). The key expires after the group's TTL.
//!
//! Writes go through one Lua script, loaded once per connection, that
//! compares `(_window_end, _gen, _pane)` with what is stored and replaces
//! the whole hash only when the new pane is newer. Window end first: a late
//! pane or a replay never replaces a newer window. The generation rises
//! each time a partition is restored from a checkpoint, so the panes
//! recomputed after a crash replace those the crashed run wrote past its
//! last checkpoint, whatever their pane numbers.
//!
//! The writer is a task fed by a bounded channel of batches. It pipelines
//! up to [`MAX_PIPELINE`] script calls per round trip, and when Redis fails
//! it reconnects and retries the same batch with exponential backoff
//! (writes are idempotent under the compare-and-set). While it retries the
//! channel fills up and the engine thread blocks on it: consumption pauses
//! and memory stays bounded.

use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::aggregate::Value;
use crate::engine::PaneMeta;
use crate::event::{EncodedKey, KeyPart};

/// Script calls per pipelined round trip.
pub const MAX_PIPELINE: usize = 512;

/// The compare-and-set: KEYS[1] the hash; ARGV = window_end, gen, pane,
/// ttl in ms (0: none), then field/value pairs. Returns 1 when written.
pub const CAS_SCRIPT: &str = r#"
local cur = redis.call('HMGET', KEYS[1], '_window_end', '_gen', '_pane')
local we, gen, pane = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if cur[1] then
  local cwe, cgen, cpane = tonumber(cur[1]), tonumber(cur[2]) or 0, tonumber(cur[3]) or 0
  if cwe > we then return 0 end
  if cwe == we then
    if cgen > gen then return 0 end
    if cgen == gen and cpane > pane then return 0 end
  end
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], '_window_end', ARGV[1], '_gen', ARGV[2], '_pane', ARGV[3], unpack(ARGV, 5))
local ttl = tonumber(ARGV[4])
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
"#;

/// The Redis key of an entity's hash in a group.
pub fn online_key(prefix: &str, group: &str, key: &EncodedKey) -> String {
    let mut s = String::with_capacity(prefix.len() + group.len() + 24);
    s.push_str(prefix);
    s.push_str(":{");
    let mut i = 0;
    while let Some(part) = key.part(i) {
        if i > 0 {
            s.push('|');
        }
        match part {
            KeyPart::Int(v) => s.push_str(&v.to_string()),
            KeyPart::Str(t) => escape_into(t, &mut s),
        }
        i += 1;
    }
    s.push_str("}:");
    s.push_str(group);
    s
}

/// The entity part of a key from key values given as text (the read API).
pub fn online_key_text(prefix: &str, group: &str, parts: &[String]) -> String {
    let mut s = format!("{prefix}:{{");
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            s.push('|');
        }
        escape_into(p, &mut s);
    }
    s.push_str("}:");
    s.push_str(group);
    s
}

fn escape_into(t: &str, s: &mut String) {
    for c in t.chars() {
        match c {
            '%' => s.push_str("%25"),
            '|' => s.push_str("%7C"),
            '{' => s.push_str("%7B"),
            '}' => s.push_str("%7D"),
            c => s.push(c),
        }
    }
}

/// A feature value as Redis text; `None` for null (the field is left out).
pub fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::Int(i) => Some(i.to_string()),
        Value::Float(f) if f.is_finite() => Some(crate::sink::format_f64(*f)),
        Value::Float(f) if f.is_nan() => Some("nan".into()),
        Value::Float(f) => Some(if *f > 0.0 { "inf" } else { "-inf" }.into()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Str(s) => Some(s.clone()),
    }
}

/// One hash write.
#[derive(Debug, Clone)]
pub struct OnlineRow {
    pub key: String,
    pub window_start: i64,
    pub window_end: i64,
    pub emitted_at: i64,
    pub generation: u64,
    pub pane: u32,
    /// (feature, text) for the non-null features.
    pub fields: Vec<(String, String)>,
}

impl OnlineRow {
    /// The row of a pane of `group` (retractions are not written online:
    /// the pane that follows replaces the value).
    pub fn of(
        prefix: &str,
        group: &str,
        names: &[String],
        m: &PaneMeta,
        values: &[Value],
        generation: u64,
    ) -> OnlineRow {
        OnlineRow {
            key: online_key(prefix, group, &m.key),
            window_start: m.window_start,
            window_end: m.window_end,
            emitted_at: m.emitted_at,
            generation,
            pane: m.pane_index,
            fields: names
                .iter()
                .zip(values)
                .filter_map(|(n, v)| value_text(v).map(|t| (n.clone(), t)))
                .collect(),
        }
    }
}

/// What the writer receives.
#[derive(Debug)]
pub enum OnlineMsg {
    /// Rows and the moment their panes were emitted (latency).
    Rows(Vec<OnlineRow>, Instant),
    /// Answered once every earlier row is acknowledged by Redis.
    Flush(oneshot::Sender<()>),
}

/// Counters and latencies the writer reports.
pub trait OnlineObserver: Send + Sync + 'static {
    fn written(&self, rows: usize, write_latency: Duration, emit_to_online: Duration);
    fn failed(&self, error: &str);
}

/// Runs the writer until the channel closes. `ttl` in ms (0: none).
pub async fn run_writer(
    url: String,
    ttl_ms: u64,
    mut rx: mpsc::Receiver<OnlineMsg>,
    obs: std::sync::Arc<dyn OnlineObserver>,
) {
    let mut conn: Option<redis::aio::MultiplexedConnection> = None;
    let script = redis::Script::new(CAS_SCRIPT);
    let mut batch: Vec<(OnlineRow, Instant)> = Vec::new();
    let mut flushes: Vec<oneshot::Sender<()>> = Vec::new();
    let mut closed = false;
    while !closed || !batch.is_empty() {
        if batch.is_empty() && flushes.is_empty() {
            match rx.recv().await {
                Some(m) => take(m, &mut batch, &mut flushes),
                None => break,
            }
        }
        // Gather what is already queued, up to a pipeline's worth.
        while batch.len() < MAX_PIPELINE {
            match rx.try_recv() {
                Ok(m) => {
                    let flush = matches!(m, OnlineMsg::Flush(_));
                    take(m, &mut batch, &mut flushes);
                    if flush {
                        break;
                    }
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        let mut backoff = Duration::from_millis(50);
        while !batch.is_empty() {
            let n = batch.len().min(MAX_PIPELINE);
            let started = Instant::now();
            match write(&url, &mut conn, &script, &batch[..n], ttl_ms).await {
                Ok(()) => {
                    let done = Instant::now();
                    let oldest = batch[..n].iter().map(|(_, t)| *t).min().unwrap_or(done);
                    obs.written(n, done - started, done - oldest);
                    batch.drain(..n);
                    backoff = Duration::from_millis(50);
                }
                Err(e) => {
                    obs.failed(&e.to_string());
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "redis write failed, retrying");
                    conn = None;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        for f in flushes.drain(..) {
            let _ = f.send(());
        }
    }
}

fn take(
    m: OnlineMsg,
    batch: &mut Vec<(OnlineRow, Instant)>,
    flushes: &mut Vec<oneshot::Sender<()>>,
) {
    match m {
        OnlineMsg::Rows(rows, at) => batch.extend(rows.into_iter().map(|r| (r, at))),
        OnlineMsg::Flush(tx) => flushes.push(tx),
    }
}

async fn write(
    url: &str,
    conn: &mut Option<redis::aio::MultiplexedConnection>,
    script: &redis::Script,
    rows: &[(OnlineRow, Instant)],
    ttl_ms: u64,
) -> redis::RedisResult<()> {
    if conn.is_none() {
        let client = redis::Client::open(url)?;
        let mut c = tokio::time::timeout(
            Duration::from_secs(5),
            client.get_multiplexed_async_connection(),
        )
        .await
        .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "connect timed out")))??;
        // Loaded once per connection (a restarted Redis has lost it).
        let _: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(CAS_SCRIPT)
            .query_async(&mut c)
            .await?;
        *conn = Some(c);
    }
    let c = conn.as_mut().expect("connected above");
    let mut pipe = redis::pipe();
    for (r, _) in rows {
        let cmd = pipe
            .cmd("EVALSHA")
            .arg(script.get_hash())
            .arg(1)
            .arg(&r.key)
            .arg(r.window_end)
            .arg(r.generation)
            .arg(r.pane)
            .arg(ttl_ms)
            .arg("_window_start")
            .arg(r.window_start)
            .arg("_emitted_at")
            .arg(r.emitted_at);
        for (k, v) in &r.fields {
            cmd.arg(k).arg(v);
        }
    }
    let fut = pipe.query_async::<Vec<i64>>(c);
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "write timed out")))??;
    Ok(())
}
