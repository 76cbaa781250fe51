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
//! Writes go through one Lua script, loaded once per connection, called
//! with up to [`ROWS_PER_CALL`] hashes at a time. For each it compares
//! `(_window_end, _gen, _pane)` with what is stored and, only when the new
//! pane is not older, sets its fields in place and deletes the fields of
//! features that are null now. Window end first: a late pane or a replay
//! never replaces a newer window. The generation rises each time a
//! partition is restored from a checkpoint, so the panes recomputed after a
//! crash replace those the crashed run wrote past its last checkpoint,
//! whatever their pane numbers.
//!
//! The writer is a task fed by a bounded channel of pane batches (the
//! engine thread does no formatting). It gathers what is queued (up to
//! [`MAX_COALESCE`] rows), keeps only the newest pane of each key, and
//! writes them in round trips of 256 rows, several in flight on one
//! multiplexed connection, reporting each round trip's rows as soon as
//! Redis acknowledges them. When Redis fails it
//! reconnects and retries with exponential backoff (writes are idempotent
//! under the compare-and-set). While it retries the channel fills up and
//! the engine thread blocks on it: consumption pauses and memory stays
//! bounded.

pub mod conn;
pub mod recovery;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::aggregate::Value;
use crate::config::RedisEndpoint;
use crate::engine::{PaneBuf, PaneMeta};
use crate::event::{EncodedKey, KeyPart};

/// Rows per script call.
pub const ROWS_PER_CALL: usize = 128;

/// The compare-and-set over several hashes (layout 2): KEYS are the
/// hashes; ARGV starts with the number of features `n` and their names
/// (sent once per call), then holds per key: the version field `_v`
/// ([`version_field`]), `_window_start`, `_window_end`, `_emitted_at`,
/// `_pane`, the TTL in ms (`0`: none) and the values of the features that are not null,
/// in feature order. A key is written when its stored version is not newer
/// (byte order of the 40-digit prefix; a hash of layout 1, without `_v`, is
/// compared by its `_window_end`, `_gen`, `_pane` and migrated: `_gen` is
/// deleted). Fields are updated in place; the fields of features
/// that are null now are deleted unless the stored `_v` says the hash
/// already lacks exactly those. Returns how many hashes were written. (On
/// a Redis Cluster the keys of one call share a slot.)
pub const CAS_BODY: &str = r#"
local n = tonumber(ARGV[1])
local names = {}
for j = 1, n do names[j] = ARGV[1 + j] end
local shapes = {}
local function shape(mask)
  local s = shapes[mask]
  if s then return s end
  local t = {'_v', '', '_window_start', '', '_window_end', '', '_emitted_at', '', '_pane', ''}
  local d = {}
  for j = 1, n do
    if string.byte(mask, j) == 49 then d[#d + 1] = names[j]
    else t[#t + 1] = names[j]; t[#t + 1] = '' end
  end
  s = {t, (#t - 10) / 2, d}
  shapes[mask] = s
  return s
end
local i = n + 2
local written = 0
for k = 1, #KEYS do
  local key, v = KEYS[k], ARGV[i]
  local s
  if #v == 40 then s = shape('') else s = shape(string.sub(v, 49)) end
  local t, nv, d = s[1], s[2], s[3]
  local cur = redis.call('HGET', key, '_v')
  local ok, legacy = true, false
  if cur then
    if cur > v and string.sub(cur, 1, 40) ~= string.sub(v, 1, 40) then ok = false end
  else
    local cwe = redis.call('HGET', key, '_window_end')
    if cwe then
      legacy = true
      cwe = tonumber(cwe)
      local we = tonumber(ARGV[i + 2])
      if cwe > we then ok = false
      elseif cwe == we then
        local c = redis.call('HMGET', key, '_gen', '_pane')
        local gen = tonumber(string.sub(v, 17, 32), 16)
        local pane = tonumber(string.sub(v, 33, 40), 16)
        local cgen, cpane = tonumber(c[1]) or 0, tonumber(c[2]) or 0
        if cgen > gen or (cgen == gen and cpane > pane) then ok = false end
      end
    end
  end
  if ok then
    t[2] = v; t[4] = ARGV[i + 1]; t[6] = ARGV[i + 2]; t[8] = ARGV[i + 3]; t[10] = ARGV[i + 4]
    for j = 1, nv do t[10 + 2 * j] = ARGV[i + 5 + j] end
    redis.call('HSET', key, unpack(t))
    if legacy then
      redis.call('HDEL', key, '_gen', unpack(d))
    elseif cur and #d > 0 and string.sub(cur, 41) ~= string.sub(v, 41) then
      redis.call('HDEL', key, unpack(d))
    end
    local ttl = ARGV[i + 5]
    if ttl ~= '0' then redis.call('PEXPIRE', key, ttl) end
    written = written + 1
  end
  i = i + 6 + nv
end
return written
"#;

/// The compare-and-set as Redis calls it: a Redis Function (Redis 7 and
/// later: stored, replicated and persisted by the server, so a promoted
/// replica or a restarted server has it), else (no `FUNCTION` command, or
/// an ACL user not allowed `FUNCTION LOAD`) a script (`EVALSHA`). The
/// library and function names carry a digest of the body, so rill versions
/// with different bodies can share a server.
#[derive(Debug)]
pub struct Cas {
    sha: String,
    library: String,
    function: String,
    /// Whether the server took the function (set on each connection).
    functions: std::sync::atomic::AtomicBool,
}

impl Cas {
    pub fn new() -> Cas {
        let sha = redis::Script::new(CAS_BODY).get_hash().to_string();
        Cas {
            library: format!("rill_{}", &sha[..12]),
            function: format!("rill_cas_{}", &sha[..12]),
            sha,
            functions: std::sync::atomic::AtomicBool::new(true),
        }
    }

    /// The library source for `FUNCTION LOAD`.
    fn library_code(&self) -> String {
        format!(
            "#!lua name={}\nlocal function cas(KEYS, ARGV)\n{CAS_BODY}\nend\nredis.register_function('{}', cas)\n",
            self.library, self.function
        )
    }

    /// Loads the function (or, on a server without functions, the script)
    /// on every primary behind `c`.
    async fn load(&self, c: &mut conn::OnlineConn) -> redis::RedisResult<()> {
        use std::sync::atomic::Ordering;
        let loaded: redis::RedisResult<redis::Value> = redis::cmd("FUNCTION")
            .arg("LOAD")
            .arg("REPLACE")
            .arg(self.library_code())
            .query_async(c)
            .await;
        match loaded {
            Ok(_) => {
                self.functions.store(true, Ordering::Release);
                Ok(())
            }
            Err(e) if is_unknown_command(&e) || is_no_permission(&e) => {
                let sha: String = redis::cmd("SCRIPT")
                    .arg("LOAD")
                    .arg(CAS_BODY)
                    .query_async(c)
                    .await?;
                debug_assert_eq!(sha, self.sha);
                self.functions.store(false, Ordering::Release);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// A call of the compare-and-set over `nkeys` keys (the keys and
    /// arguments follow).
    fn cmd(&self, nkeys: usize) -> redis::Cmd {
        let mut c = if self.functions.load(std::sync::atomic::Ordering::Acquire) {
            let mut c = redis::cmd("FCALL");
            c.arg(&self.function);
            c
        } else {
            let mut c = redis::cmd("EVALSHA");
            c.arg(&self.sha);
            c
        };
        c.arg(nkeys);
        c
    }
}

impl Default for Cas {
    fn default() -> Self {
        Cas::new()
    }
}

/// A user whose ACL allows scripts but not `FUNCTION LOAD`.
fn is_no_permission(e: &redis::RedisError) -> bool {
    e.to_string().to_ascii_lowercase().contains("noperm")
}

/// A server without `FUNCTION` (before Redis 7, or the command renamed
/// away).
fn is_unknown_command(e: &redis::RedisError) -> bool {
    let t = e.to_string().to_ascii_lowercase();
    t.contains("unknown command") || t.contains("unknown subcommand")
}

/// The version field `_v` of a pane: 40 hexadecimal digits whose byte
/// order is the order of `(window_end, generation, pane)` (16 digits of the
/// window end in microseconds with its sign bit flipped, 16 of the
/// generation, 8 of the pane index); when some features are null, followed
/// by 8 digits naming the feature list ([`names_digest`]) and one `0` or
/// `1` per feature (`1`: null, so the field is absent).
pub fn version_field(
    window_end: i64,
    generation: u64,
    pane: u32,
    nulls: Option<(&str, &[bool])>,
    out: &mut String,
) {
    use std::fmt::Write as _;
    let _ = write!(
        out,
        "{:016x}{:016x}{:08x}",
        (window_end as u64) ^ (1 << 63),
        generation,
        pane
    );
    if let Some((digest, mask)) = nulls {
        out.push_str(digest);
        out.extend(mask.iter().map(|&n| if n { '1' } else { '0' }));
    }
}

/// `(window_end, generation, pane)` of a version field.
pub fn parse_version(v: &str) -> Option<(i64, u64, u32)> {
    let hex = |r: std::ops::Range<usize>| v.get(r);
    let we = u64::from_str_radix(hex(0..16)?, 16).ok()? ^ (1 << 63);
    let generation = u64::from_str_radix(hex(16..32)?, 16).ok()?;
    let pane = u32::from_str_radix(hex(32..40)?, 16).ok()?;
    Some((we as i64, generation, pane))
}

/// 8 hexadecimal digits naming a feature list (FNV-1a over the names, each
/// ended by a zero byte): a null mask is only comparable under the same list.
pub fn names_digest(names: &[String]) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for n in names {
        for &b in n.as_bytes().iter().chain(&[0u8]) {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
    }
    format!("{h:08x}")
}

/// A client for `endpoint` whose connections set `TCP_NODELAY`: pipelined
/// commands from concurrent callers are sent at once instead of waiting
/// for the previous reply's ACK (Nagle). The endpoint's user and password
/// replace the URL's; a `rediss://` URL uses TLS (through the system's
/// OpenSSL) with the endpoint's CA file and client certificate when given,
/// else the system's trust store. Errors never hold the password.
pub fn client(endpoint: &RedisEndpoint) -> redis::RedisResult<redis::Client> {
    use redis::IntoConnectionInfo;
    let mut info = endpoint
        .url
        .as_str()
        .into_connection_info()
        .map_err(|e| redacted_error(e, endpoint))?
        .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
    let mut redis_info = info.redis_settings().clone();
    if let Some(u) = &endpoint.username {
        redis_info = redis_info.set_username(u);
    }
    if let Some(p) = &endpoint.password {
        redis_info = redis_info.set_password(p.expose());
    }
    info = info.set_redis_settings(redis_info);
    let tls_files = endpoint.ca_file.is_some() || endpoint.cert_file.is_some();
    if !tls_files {
        return redis::Client::open(info);
    }
    let read = |f: &std::path::Path| {
        std::fs::read(f).map_err(|e| {
            redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "cannot read a TLS file",
                format!("{}: {e}", f.display()),
            ))
        })
    };
    let root_cert = endpoint.ca_file.as_deref().map(read).transpose()?;
    let client_tls = match (&endpoint.cert_file, &endpoint.key_file) {
        (Some(c), Some(k)) => Some(redis::ClientTlsConfig {
            client_cert: read(c)?,
            client_key: read(k)?,
        }),
        _ => None,
    };
    redis::Client::build_with_tls(
        info,
        redis::TlsCertificates {
            client_tls,
            root_cert,
        },
    )
}

/// The client library's error with any trace of the URL's password removed.
pub(crate) fn redacted_error(e: redis::RedisError, endpoint: &RedisEndpoint) -> redis::RedisError {
    let text = e.to_string();
    let safe = match endpoint.password.as_ref() {
        Some(p) if !p.expose().is_empty() => text.replace(p.expose(), "***"),
        _ => text,
    }
    .replace(&endpoint.url, &endpoint.display());
    redis::RedisError::from((
        redis::ErrorKind::InvalidClientConfig,
        "invalid Redis URL",
        safe,
    ))
}

/// The Redis key of an entity's hash in a group.
pub fn online_key(prefix: &str, group: &str, key: &EncodedKey) -> String {
    let mut s = String::with_capacity(prefix.len() + group.len() + 24);
    push_key(prefix, group, key, &mut s);
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

/// Percent-encodes `%`, `|` (the separator of key values), `{` and `}`
/// (the hash tag's braces) and control characters (newlines among them),
/// so that the entity part is injective: two entities never share a key,
/// and a key never spans lines in `redis-cli` or a log. `:` stays as it
/// is: the braces delimit the entity, and IDs like `user:42` are common.
fn escape_into(t: &str, s: &mut String) {
    use std::fmt::Write as _;
    for c in t.chars() {
        match c {
            '%' => s.push_str("%25"),
            '|' => s.push_str("%7C"),
            '{' => s.push_str("%7B"),
            '}' => s.push_str("%7D"),
            c if c.is_ascii_control() => {
                let _ = write!(s, "%{:02X}", c as u8);
            }
            c => s.push(c),
        }
    }
}

pub use crate::sink::value_text;

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

/// Panes for the online store, as the engine emitted them (no per-row
/// formatting on the engine thread).
#[derive(Debug)]
pub struct OnlineBatch {
    /// Panes (no retractions: the pane that follows replaces the value).
    pub panes: PaneBuf,
    /// Restore generation of each pane's partition.
    pub generations: Vec<u64>,
    /// When the panes were emitted (latency).
    pub emitted: Instant,
    /// Panes written again to a store that lost them ([`recovery`]): the
    /// TTL is what was left of it since the pane was emitted.
    pub rewrite: bool,
}

/// How a group's rows are written.
#[derive(Debug, Clone)]
pub struct OnlineLayout {
    pub prefix: String,
    pub group: String,
    pub names: Vec<String>,
    /// Key TTL in ms (0: none).
    pub ttl_ms: u64,
}

impl OnlineLayout {
    /// The layout of a pipeline's online rows.
    pub fn of(p: &crate::config::Pipeline) -> OnlineLayout {
        OnlineLayout {
            prefix: p
                .redis
                .as_ref()
                .map_or("rill".into(), |r| r.key_prefix.clone()),
            group: p.name.clone(),
            names: p.features.iter().map(|f| f.name.clone()).collect(),
            ttl_ms: p
                .redis
                .as_ref()
                .and_then(|r| r.ttl)
                .map_or(0, |t| (t / 1000) as u64),
        }
    }

    /// The rows of a batch (the embedded store, tests).
    pub fn rows(&self, b: &OnlineBatch) -> Vec<OnlineRow> {
        b.panes
            .iter()
            .zip(&b.generations)
            .map(|((m, v), g)| OnlineRow::of(&self.prefix, &self.group, &self.names, m, v, *g))
            .collect()
    }
}

/// What the writer receives.
#[derive(Debug)]
pub enum OnlineMsg {
    Panes(OnlineBatch),
    /// Answered once every earlier row is acknowledged by Redis.
    Flush(oneshot::Sender<()>),
}

/// Counters and latencies the writer reports.
pub trait OnlineObserver: Send + Sync + 'static {
    /// `rows` panes emitted `emit_to_online` ago are now in the store.
    fn written(&self, rows: usize, emit_to_online: Duration);
    /// One pipelined write took this long.
    fn written_latency(&self, write_latency: Duration);
    fn failed(&self, error: &str);
}

/// Rows gathered from the queue before one coalesced write: when Redis
/// falls behind, the rows of a key that a later row supersedes are not
/// written at all.
pub const MAX_COALESCE: usize = 65_536;

/// Runs the writer until the channel closes.
pub async fn run_writer(
    endpoint: RedisEndpoint,
    layout: OnlineLayout,
    rx: mpsc::Receiver<OnlineMsg>,
    obs: std::sync::Arc<dyn OnlineObserver>,
) {
    run_writer_with_marker(endpoint, layout, rx, obs, None).await
}

/// Runs the writer until the channel closes, keeping `marker` in the store
/// (checked on every new connection and at every flush, see [`recovery`]).
pub async fn run_writer_with_marker(
    endpoint: RedisEndpoint,
    layout: OnlineLayout,
    mut rx: mpsc::Receiver<OnlineMsg>,
    obs: std::sync::Arc<dyn OnlineObserver>,
    marker: Option<Arc<recovery::LossMarker>>,
) {
    let mut conn: Option<conn::OnlineConn> = None;
    let cluster = endpoint.cluster_nodes().is_some();
    let script = Cas::new();
    let mut pending: Vec<OnlineBatch> = Vec::new();
    let mut rows = 0usize;
    let mut flushes: Vec<oneshot::Sender<()>> = Vec::new();
    let mut closed = false;
    let mut outage: Option<Instant> = None;
    loop {
        if pending.is_empty() && flushes.is_empty() {
            if closed {
                break;
            }
            match rx.recv().await {
                Some(m) => take(m, &mut pending, &mut rows, &mut flushes),
                None => break,
            }
        }
        // Gather what is already queued.
        while rows < MAX_COALESCE && flushes.is_empty() {
            match rx.try_recv() {
                Ok(m) => take(m, &mut pending, &mut rows, &mut flushes),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        if !pending.is_empty() {
            let mut chosen = newest_per_key(&pending);
            if cluster {
                // A call's keys must share a slot: ordered by slot, a round
                // trip's calls carry several keys each instead of one.
                by_slot(&layout, &pending, &mut chosen);
            }
            write_all(
                &endpoint,
                &mut conn,
                &mut outage,
                &script,
                &layout,
                &pending,
                &chosen,
                &*obs,
                marker.as_deref(),
            )
            .await;
            let done = Instant::now();
            // Rows a newer pane of their key replaced were not written
            // themselves: they count as written when their batch is done.
            let mut counted = vec![0usize; pending.len()];
            for &(b, _) in &chosen {
                counted[b as usize] += 1;
            }
            for (b, n) in pending.iter().zip(counted) {
                if b.panes.len() > n {
                    obs.written(b.panes.len() - n, done - b.emitted);
                }
            }
            pending.clear();
            rows = 0;
        }
        if !flushes.is_empty() {
            if let Some(m) = &marker {
                // A store that lost its data while idle shows it here; an
                // unreachable one is checked again on reconnection.
                let checked = async {
                    let c = connect(&endpoint, &mut conn, &script, None).await?;
                    m.check(c, &layout.group).await
                };
                if let Ok(Err(e)) | Err(e) = tokio::time::timeout(Duration::from_secs(2), checked)
                    .await
                    .map_err(|_| {
                        redis::RedisError::from((redis::ErrorKind::Io, "marker check timed out"))
                    })
                {
                    tracing::debug!(error = %e, "online store marker not checked");
                    conn = None;
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
    pending: &mut Vec<OnlineBatch>,
    rows: &mut usize,
    flushes: &mut Vec<oneshot::Sender<()>>,
) {
    match m {
        OnlineMsg::Panes(b) => {
            *rows += b.panes.len();
            pending.push(b);
        }
        OnlineMsg::Flush(tx) => flushes.push(tx),
    }
}

/// (batch, row) of the newest pane of each key, in emission order.
fn newest_per_key(pending: &[OnlineBatch]) -> Vec<(u32, u32)> {
    use std::hash::BuildHasher;
    let hasher = rustc_hash::FxBuildHasher;
    let mut table: hashbrown::HashTable<(u32, u32)> = hashbrown::HashTable::new();
    let meta = |(b, r): (u32, u32)| pending[b as usize].panes.get(r as usize).0;
    let rank = |(b, r): (u32, u32)| {
        let m = meta((b, r));
        (
            m.window_end,
            pending[b as usize].generations[r as usize],
            m.pane_index,
        )
    };
    for (bi, b) in pending.iter().enumerate() {
        for ri in 0..b.panes.len() {
            let id = (bi as u32, ri as u32);
            let key = meta(id).key.bytes();
            let h = hasher.hash_one(key);
            match table.find_mut(h, |&other| meta(other).key.bytes() == key) {
                Some(slot) => {
                    if rank(id) >= rank(*slot) {
                        *slot = id;
                    }
                }
                None => {
                    table.insert_unique(h, id, |&x| hasher.hash_one(meta(x).key.bytes()));
                }
            }
        }
    }
    let mut out: Vec<(u32, u32)> = table.into_iter().collect();
    out.sort_unstable();
    out
}

/// Groups `rows` by the hash slot of their keys: the slots in the order
/// of their first row, each slot's rows in emission order.
fn by_slot(layout: &OnlineLayout, pending: &[OnlineBatch], rows: &mut [(u32, u32)]) {
    let mut buf = String::with_capacity(64);
    let mut at: std::collections::HashMap<conn::Slot, usize> = Default::default();
    let mut groups: Vec<Vec<(u32, u32)>> = Vec::new();
    for &(b, r) in rows.iter() {
        let (m, _) = pending[b as usize].panes.get(r as usize);
        buf.clear();
        push_key(&layout.prefix, &layout.group, &m.key, &mut buf);
        let i = *at.entry(conn::slot_of(buf.as_bytes())).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[i].push((b, r));
    }
    for (dst, row) in rows.iter_mut().zip(groups.into_iter().flatten()) {
        *dst = row;
    }
}

/// Rows per pipelined round trip.
const ROWS_PER_PIPELINE: usize = 2 * ROWS_PER_CALL;

/// Round trips in flight at once on the multiplexed connection.
const MAX_IN_FLIGHT: usize = 4;

/// Writes `rows` (by batch and row, or by slot on a cluster) in round trips of
/// [`ROWS_PER_PIPELINE`], several in flight: Redis works on one while the
/// next is formatted, and each round trip's rows are reported as soon as it
/// is acknowledged (a window's panes become readable in order, not all at
/// the end of the write). On a failure it reconnects and goes on, with
/// exponential backoff, from the first round trip not acknowledged (writes
/// are idempotent under the compare-and-set). Returns once every row is in.
#[allow(clippy::too_many_arguments)]
async fn write_all(
    endpoint: &RedisEndpoint,
    conn: &mut Option<conn::OnlineConn>,
    outage: &mut Option<Instant>,
    script: &Cas,
    layout: &OnlineLayout,
    pending: &[OnlineBatch],
    rows: &[(u32, u32)],
    obs: &dyn OnlineObserver,
    marker: Option<&recovery::LossMarker>,
) {
    let mut backoff = Duration::from_millis(50);
    let mut at = 0;
    let mut in_flight: std::collections::VecDeque<(
        usize,
        usize,
        Instant,
        tokio::task::JoinHandle<redis::RedisResult<()>>,
    )> = std::collections::VecDeque::new();
    let mut next = 0;
    // An outage is logged when it starts and when it ends, not per retry.
    let fail = |e: &redis::RedisError, outage: &mut Option<Instant>| {
        obs.failed(&e.to_string());
        if outage.is_none() {
            tracing::warn!(redis = %endpoint.display(), error = %e, "redis unavailable: writes wait and retry (the engine pauses its partitions)");
            *outage = Some(Instant::now());
        }
    };
    while at < rows.len() {
        // Keep the pipe full.
        while next < rows.len() && in_flight.len() < MAX_IN_FLIGHT {
            let c = match connect(
                endpoint,
                conn,
                script,
                marker.map(|m| (m, layout.group.as_str())),
            )
            .await
            {
                Ok(c) => c.clone(),
                Err(e) => {
                    fail(&e, outage);
                    break;
                }
            };
            let end = (next + ROWS_PER_PIPELINE).min(rows.len());
            let cmds = calls(script, layout, pending, &rows[next..end], c.is_cluster());
            let started = Instant::now();
            let task = tokio::spawn(async move {
                let mut c = c;
                let fut = c.query_all::<i64>(cmds);
                tokio::time::timeout(Duration::from_secs(30), fut)
                    .await
                    .map_err(|_| {
                        redis::RedisError::from((redis::ErrorKind::Io, "write timed out"))
                    })?
                    .map(|_| ())
            });
            in_flight.push_back((next, end, started, task));
            next = end;
        }
        let Some((start, end, started, task)) = in_flight.pop_front() else {
            // Not connected: wait and try again.
            *conn = None;
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
            continue;
        };
        let result = task.await.unwrap_or_else(|e| {
            Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "write task failed",
                e.to_string(),
            )))
        });
        match result {
            Ok(()) => {
                debug_assert_eq!(start, at);
                let done = Instant::now();
                obs.written_latency(done - started);
                if done - started >= SLOW_WRITE {
                    log_slow_write(endpoint, done - started);
                }
                // Report per run of rows of one batch.
                let mut i = start;
                while i < end {
                    let b = rows[i].0;
                    let mut j = i;
                    while j < end && rows[j].0 == b {
                        j += 1;
                    }
                    obs.written(j - i, done - pending[b as usize].emitted);
                    i = j;
                }
                at = end;
                backoff = Duration::from_millis(50);
                if let Some(since) = outage.take() {
                    tracing::info!(redis = %endpoint.display(), lasted_s = since.elapsed().as_secs_f64(), "redis available again");
                }
            }
            Err(e) => {
                fail(&e, outage);
                // Later round trips may have landed too; they are written
                // again (the compare-and-set makes that harmless).
                for (_, _, _, t) in in_flight.drain(..) {
                    t.abort();
                }
                *conn = None;
                next = at;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// A round trip this long is reported as a slow store.
const SLOW_WRITE: Duration = Duration::from_secs(1);

/// Logs a slow round trip, at most once a minute per process.
fn log_slow_write(endpoint: &RedisEndpoint, took: Duration) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last = LAST.load(Ordering::Relaxed);
    if (last == 0 || now >= last + 60)
        && LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(redis = %endpoint.display(), took_s = took.as_secs_f64(), "redis slow: one write round trip took over a second (rill_redis_write_seconds has the distribution)");
    }
}

/// The connection, opened (and the compare-and-set loaded: on a cluster,
/// on every primary) when there is none.
async fn connect<'c>(
    endpoint: &RedisEndpoint,
    conn: &'c mut Option<conn::OnlineConn>,
    script: &Cas,
    marker: Option<(&recovery::LossMarker, &str)>,
) -> redis::RedisResult<&'c mut conn::OnlineConn> {
    if conn.is_none() {
        let mut c = conn::connect(endpoint, Duration::from_secs(5)).await?;
        // Loaded on every new connection: a server without functions that
        // restarted has lost the script.
        script.load(&mut c).await?;
        // A new connection may reach a restarted, emptied store.
        if let Some((m, group)) = marker {
            m.check(&mut c, group).await?;
        }
        *conn = Some(c);
    }
    Ok(conn.as_mut().expect("connected above"))
}

use crate::sink::write_value_text as write_value;

/// The compare-and-set calls that write `rows`, each with the slot of its
/// keys: calls of at most [`ROWS_PER_CALL`] rows in order; on a cluster a
/// call also ends where the slot changes (a call's keys must share a slot:
/// the writer has grouped the rows by slot, see [`by_slot`]).
fn calls(
    script: &Cas,
    layout: &OnlineLayout,
    pending: &[OnlineBatch],
    rows: &[(u32, u32)],
    cluster: bool,
) -> Vec<(conn::Slot, redis::Cmd)> {
    let digest = names_digest(&layout.names);
    let mut out = Vec::new();
    let mut nulls: Vec<bool> = Vec::new();
    let mut buf = String::with_capacity(64);
    // The keys of the call being built, one after the other.
    let mut keys = String::new();
    let mut ends: Vec<usize> = Vec::with_capacity(ROWS_PER_CALL);
    let mut rest = rows;
    while !rest.is_empty() {
        keys.clear();
        ends.clear();
        let mut slot = None;
        for &(b, r) in rest.iter().take(ROWS_PER_CALL) {
            let (m, _) = pending[b as usize].panes.get(r as usize);
            let start = keys.len();
            push_key(&layout.prefix, &layout.group, &m.key, &mut keys);
            let this = conn::slot_of(&keys.as_bytes()[start..]);
            match slot {
                None => slot = Some(this),
                Some(s) if cluster && s != this => {
                    keys.truncate(start);
                    break;
                }
                Some(_) => {}
            }
            ends.push(keys.len());
        }
        let (chunk, after) = rest.split_at(ends.len());
        rest = after;
        let mut cmd = script.cmd(chunk.len());
        let mut start = 0;
        for &end in &ends {
            cmd.arg(&keys.as_bytes()[start..end]);
            start = end;
        }
        cmd.arg(layout.names.len());
        for n in &layout.names {
            cmd.arg(n.as_str());
        }
        for &(b, r) in chunk {
            let batch = &pending[b as usize];
            let (m, values) = batch.panes.get(r as usize);
            let ttl = if batch.rewrite && layout.ttl_ms > 0 {
                let age_ms = (crate::time::Clock::now(&crate::time::SystemClock) - m.emitted_at)
                    .max(0) as u64
                    / 1000;
                layout.ttl_ms.saturating_sub(age_ms).max(1)
            } else {
                layout.ttl_ms
            };
            nulls.clear();
            nulls.extend(values.iter().map(|v| matches!(v, Value::Null)));
            buf.clear();
            version_field(
                m.window_end,
                batch.generations[r as usize],
                m.pane_index,
                nulls
                    .contains(&true)
                    .then_some((digest.as_str(), &nulls[..])),
                &mut buf,
            );
            cmd.arg(buf.as_bytes())
                .arg(m.window_start)
                .arg(m.window_end)
                .arg(m.emitted_at)
                .arg(m.pane_index)
                .arg(ttl);
            for v in values.iter() {
                buf.clear();
                if write_value(v, &mut buf) {
                    cmd.arg(buf.as_bytes());
                }
            }
        }
        let Some(slot) = slot else { break };
        out.push((slot, cmd));
    }
    out
}

/// Appends the Redis key of `key` in `group` to `s`.
fn push_key(prefix: &str, group: &str, key: &EncodedKey, s: &mut String) {
    s.push_str(prefix);
    s.push_str(":{");
    let mut i = 0;
    while let Some(part) = key.part(i) {
        if i > 0 {
            s.push('|');
        }
        match part {
            KeyPart::Int(v) => {
                use std::fmt::Write as _;
                let _ = write!(s, "{v}");
            }
            KeyPart::Str(t) => escape_into(t, s),
        }
        i += 1;
    }
    s.push_str("}:");
    s.push_str(group);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entity() -> impl Strategy<Value = Vec<String>> {
        let part = proptest::collection::vec(
            prop_oneof![
                Just('a'),
                Just(':'),
                Just('{'),
                Just('}'),
                Just('|'),
                Just('%'),
                Just('\n'),
                Just('\r'),
                Just('\u{0}'),
                Just('7'),
                Just('C'),
                Just('é'),
            ],
            0..6,
        )
        .prop_map(|cs| cs.into_iter().collect::<String>());
        proptest::collection::vec(part, 1..3)
    }

    proptest! {
        /// Two different entities (of the same number of key fields) never
        /// share a Redis key, and no key holds a line break.
        #[test]
        fn entity_keys_are_injective(a in entity(), b in entity()) {
            let ka = online_key_text("rill", "g", &a);
            let kb = online_key_text("rill", "g", &b);
            prop_assert!(!ka.contains('\n') && !ka.contains('\r'));
            if a.len() == b.len() && a != b {
                prop_assert_ne!(ka, kb);
            }
        }
    }

    proptest! {
        /// The byte order of version fields is the order of (window end,
        /// generation, pane), before 1970 too, and they parse back.
        #[test]
        fn version_fields_order_as_their_tuples(
            a in (any::<i64>(), any::<u64>(), any::<u32>()),
            b in (any::<i64>(), any::<u64>(), any::<u32>()),
            mask in proptest::collection::vec(any::<bool>(), 1..5),
        ) {
            let (mut va, mut vb) = (String::new(), String::new());
            version_field(a.0, a.1, a.2, None, &mut va);
            version_field(b.0, b.1, b.2, Some(("0badcafe", &mask)), &mut vb);
            prop_assert_eq!(va.len(), 40);
            prop_assert_eq!(vb.len(), 48 + mask.len());
            prop_assert_eq!(va[..40].cmp(&vb[..40]), a.cmp(&b));
            prop_assert_eq!(parse_version(&va), Some(a));
            prop_assert_eq!(parse_version(&vb), Some(b));
        }
    }

    #[test]
    fn keys_with_separators_and_newlines_are_encoded() {
        let k = online_key_text("rill", "g", &["a|b".into(), "{x}\n:y%".into()]);
        assert_eq!(k, "rill:{a%7Cb|%7Bx%7D%0A:y%25}:g");
    }
}
