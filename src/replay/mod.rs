//! Replay: the engine over a bounded input, into the offline store.
//!
//! Processing time is the stream time (the greatest event time seen), so
//! early panes and `emitted_at` are what a live run over real-time data
//! would have produced, and two replays of one input give the same rows in
//! files of the same names. The end of input moves the watermark to
//! +infinity: every open window fires.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Pipeline;
use crate::engine::{Engine, PaneBuf, ProcessingTime};
use crate::event::{Decoder, EventBatch, Reason, Refusal};
use crate::plan::Plan;
use crate::sink::dead_letter::{DeadLetterWriter, Position};
use crate::sink::parquet::{ParquetSink, ParquetSinkError};
use crate::source::file::{self, Input, InputError};
use crate::time::{Clock, Micros};

mod objects;
mod parallel;
pub use parallel::{owner, split_hash, Shard, CHUNK_BYTES};

/// Errors that stop a replay (bad records never do).
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Parquet(#[from] ParquetSinkError),
    #[error("failed to write dead letters to {path}")]
    DeadLetter {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("online store: {0}")]
    Online(String),
    /// A sharded replay found files of the same run written by a run split
    /// otherwise (unsharded, or into a different number of shards): its
    /// rows would be doubled.
    #[error(
        "{dir} holds {file}, written by an unsharded replay or one with another shard count of the same input; \
         --shard {shard} would double its rows: remove the earlier output, or replay without --shard"
    )]
    ShardConflict {
        dir: PathBuf,
        file: String,
        shard: String,
    },
    #[error("offline store")]
    Storage(#[from] crate::storage::StorageError),
    /// Another thread of a parallel replay failed (its error is reported).
    #[error("replay stopped")]
    Stopped,
}

/// A progress callback: (bytes read, input size if known, records).
pub type Progress = Box<dyn FnMut(u64, Option<u64>, u64)>;

/// What to replay.
pub struct ReplayOptions {
    pub pipeline: Pipeline,
    pub input: PathBuf,
    /// Root of the offline store (`<output>/<group>/date=.../`).
    pub output: PathBuf,
    /// Only events with `from <= time < to` are processed.
    pub from: Option<Micros>,
    pub to: Option<Micros>,
    /// The wall clock for the `max_future` check.
    pub wall_clock: Arc<dyn Clock>,
    /// Called every few thousand records with (bytes read, size if known, records).
    pub progress: Option<Progress>,
    /// Also hand every pane (retractions aside) to an online writer
    /// (`--online`: the Redis writer of the daemon, same compare-and-set).
    pub online: Option<tokio::sync::mpsc::Sender<crate::sink::redis::OnlineMsg>>,
    /// Engine threads (`--threads`; 0: one per core). With one thread and
    /// no shard the replay runs on the calling thread.
    pub threads: usize,
    /// Compute only this shard's keys (`--shard I/N`).
    pub shard: Option<Shard>,
    /// Bytes of JSON lines per chunk of a parallel replay (default
    /// [`parallel::CHUNK_BYTES`]; tests make it small).
    pub chunk_bytes: Option<usize>,
}

impl ReplayOptions {
    /// Options with the defaults: the whole input, the system clock, one
    /// thread per core, no progress callback, no online store.
    pub fn new(pipeline: Pipeline, input: PathBuf, output: PathBuf) -> ReplayOptions {
        ReplayOptions {
            pipeline,
            input,
            output,
            from: None,
            to: None,
            wall_clock: Arc::new(crate::time::SystemClock),
            progress: None,
            online: None,
            threads: 0,
            shard: None,
            chunk_bytes: None,
        }
    }
}

/// Panes on their way to the online writer, sent in batches.
/// The end of the input: the engine's last panes go to the online feed
/// (which is then sent and closed) and the sink, whose files are closed.
fn finish(
    engine: &mut Engine,
    out: &mut PaneBuf,
    mut online: Option<OnlineFeed>,
    sink: &mut ParquetSink,
) -> Result<(), ReplayError> {
    engine.finish(out);
    if let Some(o) = online.as_mut() {
        o.push(out)?;
        o.send()?;
    }
    drop(online);
    sink.write(out)?;
    sink.finish()?;
    Ok(())
}

struct OnlineFeed {
    tx: tokio::sync::mpsc::Sender<crate::sink::redis::OnlineMsg>,
    batch: crate::sink::redis::OnlineBatch,
}

impl OnlineFeed {
    fn new(
        tx: tokio::sync::mpsc::Sender<crate::sink::redis::OnlineMsg>,
        width: usize,
    ) -> OnlineFeed {
        OnlineFeed {
            tx,
            batch: Self::empty(width),
        }
    }

    fn empty(width: usize) -> crate::sink::redis::OnlineBatch {
        crate::sink::redis::OnlineBatch {
            rewrite: false,
            panes: crate::engine::PaneBuf::new(width),
            generations: Vec::new(),
            emitted: Instant::now(),
        }
    }

    fn push(&mut self, out: &crate::engine::PaneBuf) -> Result<(), ReplayError> {
        for (m, values) in out.iter() {
            if !m.retraction {
                if self.batch.panes.is_empty() {
                    self.batch.emitted = Instant::now();
                }
                self.batch.panes.push(m.clone(), values);
                // A replay writes with generation 0: it never replaces what a
                // daemon restored and recomputed for the same pane.
                self.batch.generations.push(0);
            }
        }
        if self.batch.panes.len() >= 4096 {
            self.send()?;
        }
        Ok(())
    }

    fn send(&mut self) -> Result<(), ReplayError> {
        if self.batch.panes.is_empty() {
            return Ok(());
        }
        let width = self.batch.panes.width();
        let b = std::mem::replace(&mut self.batch, Self::empty(width));
        // A full queue waits here until Redis catches up.
        self.tx
            .blocking_send(crate::sink::redis::OnlineMsg::Panes(b))
            .map_err(|_| ReplayError::Online("the Redis writer stopped".into()))
    }
}

/// What a replay did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReplaySummary {
    pub pipeline: String,
    pub input: String,
    /// Records read (lines or rows), blank lines excluded.
    pub records: u64,
    /// Events that reached a window.
    pub events: u64,
    pub blank_lines: u64,
    pub out_of_range: u64,
    pub dead_letters: BTreeMap<String, u64>,
    pub dead_letters_total: u64,
    pub late_events_kept: u64,
    pub late_events_dropped: u64,
    pub windows: u64,
    pub panes: u64,
    pub retractions: u64,
    pub rows: u64,
    pub files: Vec<String>,
    pub dead_letter_file: Option<String>,
    pub seconds: f64,
    pub events_per_second: f64,
    pub peak_memory_bytes: Option<u64>,
    /// Panes acknowledged by Redis (`--online`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub online_rows: Option<u64>,
    /// Hopping windows: the tiles held at the end of the input, and the
    /// bytes their rows, numbers and partial merges take.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tiles_held: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tile_state_bytes: Option<u64>,
    /// A parallel replay: every dead-letter file written (one per thread
    /// that refused something; `dead_letter_file` is the first).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dead_letter_files: Vec<String>,
    /// The engine threads used.
    pub threads: u32,
    /// The shard computed (`s<I>of<N>`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
}

/// Rows per step of the key look-ahead on Parquet input.
const KEY_PREFETCH_CHUNK: usize = 16;

/// Lines decoded per block on JSON input. The look-ahead does not cross
/// blocks, so a block's first events wait on memory: with 64 lines, one
/// event in eight did.
const LINE_BATCH: usize = 256;

/// How many events ahead of the engine a key's entry is fetched.
const ENTRY_AHEAD: usize = 8;

/// How many events ahead a hopping key's state is fetched (its entry
/// arrived by then).
const WINDOWS_AHEAD: usize = 4;
/// Step four (hopping windows): the newest end of the key's tiles.
const TILES_AHEAD: usize = 2;

/// Records between progress reports and wall-clock updates.
const TICK_RECORDS: u64 = 65_536;

/// What became of a line of a block.
enum Item {
    /// Blank or outside `[from, to)`.
    Skip,
    /// The next event of the block's [`EventBatch`].
    Event,
    Refused(Refusal),
}

/// Whether event time `t` lies in `[from, to)`.
#[inline]
fn in_range(t: Micros, (from, to): (Micros, Micros)) -> bool {
    from <= t && t < to
}

/// Adds a decoded record of a block to its events (fetching its key's
/// index slot) when it lies in `[from, to)`.
#[inline(always)]
fn stage(
    decoded: Result<crate::event::EventRef<'_>, Refusal>,
    range: (Micros, Micros),
    engine: &Engine,
    events: &mut EventBatch,
    s: &mut ReplaySummary,
) -> Item {
    match decoded {
        Ok(ev) if !in_range(ev.time, range) => {
            s.out_of_range += 1;
            Item::Skip
        }
        Ok(ev) => {
            let h = crate::engine::key_hash(ev.key);
            engine.prefetch_key_slot(h);
            events.push(&ev, h);
            Item::Event
        }
        Err(r) => Item::Refused(r),
    }
}

/// Hands a decoded record to the engine when it lies in `[from, to)`;
/// `hash` is its key's hash when the caller knows it.
fn feed(
    decoded: Result<crate::event::EventRef<'_>, Refusal>,
    hash: Option<u64>,
    (from, to): (Micros, Micros),
    engine: &mut Engine,
    out: &mut crate::engine::PaneBuf,
    s: &mut ReplaySummary,
) -> Result<(), Refusal> {
    let ev = decoded?;
    if !in_range(ev.time, (from, to)) {
        s.out_of_range += 1;
        return Ok(());
    }
    match hash {
        Some(h) => engine.process_hashed(&ev, h, out),
        None => engine.process(&ev, out),
    }?;
    kept_with(engine)
}

/// `Err` with the dead letter of an event the engine kept all the same (a
/// late event that missed some of its hopping windows).
#[inline]
fn kept_with(engine: &mut Engine) -> Result<(), Refusal> {
    match engine.take_partial_refusal() {
        None => Ok(()),
        Some(r) => Err(r),
    }
}

/// A stable 64-bit FNV-1a hash (file names must not change across builds).
pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in *p {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The run identifier of a replay: same pipeline name, input and range, same files.
pub fn run_id(pipeline: &str, input: &Path, from: Option<Micros>, to: Option<Micros>) -> String {
    let input = if input == Path::new("-") {
        "-".to_string()
    } else {
        std::fs::canonicalize(input)
            .unwrap_or_else(|_| input.to_path_buf())
            .display()
            .to_string()
    };
    let from = from.map(|f| f.to_string()).unwrap_or_default();
    let to = to.map(|f| f.to_string()).unwrap_or_default();
    format!(
        "r{:016x}",
        fnv1a(&[
            pipeline.as_bytes(),
            input.as_bytes(),
            from.as_bytes(),
            to.as_bytes()
        ])
    )
}

/// Peak resident memory of this process, from `/proc/self/status`.
pub fn peak_memory_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The engine threads a replay with `threads` (0: one per core) uses.
pub fn threads_for(threads: usize) -> u32 {
    let n = if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    };
    n.clamp(1, 1024) as u32
}

/// Runs a replay to the end of its input: on the calling thread, or over
/// several engine threads ([`parallel`]) with the same rows as one.
pub fn run(opts: ReplayOptions) -> Result<ReplaySummary, ReplayError> {
    match crate::storage::Mirror::of(&opts.output)? {
        Some(m) => objects::run(opts, m),
        None => run_local(opts),
    }
}

/// [`run`] into a local directory.
fn run_local(opts: ReplayOptions) -> Result<ReplaySummary, ReplayError> {
    let threads = threads_for(opts.threads);
    if threads == 1 && opts.shard.is_none() {
        return run_single(opts);
    }
    let shard = opts.shard.unwrap_or(Shard { index: 0, count: 1 });
    parallel::run(opts, threads, shard)
}

/// A replay on the calling thread, with one engine.
fn run_single(mut opts: ReplayOptions) -> Result<ReplaySummary, ReplayError> {
    let started = Instant::now();
    let p = &opts.pipeline;
    let rid = run_id(&p.name, &opts.input, opts.from, opts.to);
    let plan = Plan::new(p);
    let mut dec = Decoder::new(plan.decode.clone());
    let mut engine = Engine::new(&plan, ProcessingTime::StreamTime);
    engine.set_wall_clock(opts.wall_clock.now());
    engine.set_input_end(opts.to);
    let mut sink = ParquetSink::new(&opts.output, &plan, &rid);
    let dl_dir = opts.output.join("_dead_letter");
    let mut dl = DeadLetterWriter::new(&dl_dir, &p.name, &rid);
    let dl_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ReplayError::DeadLetter { path, source }
    };
    let columns: Vec<String> = dec.plan.fields.iter().map(|(n, _)| n.clone()).collect();
    let mut opened = file::open(&opts.input, 8192, &columns)?;
    let name = opened.name.clone();
    let mut out = crate::engine::PaneBuf::new(p.features.len());
    let mut online = opts
        .online
        .take()
        .map(|tx| OnlineFeed::new(tx, p.features.len()));
    let mut s = ReplaySummary {
        pipeline: p.name.clone(),
        input: name.clone(),
        ..Default::default()
    };
    let (from, to) = (opts.from.unwrap_or(i64::MIN), opts.to.unwrap_or(i64::MAX));
    let tick = |records: u64,
                engine: &mut Engine,
                sink: &mut ParquetSink,
                progress: &mut Option<Progress>|
     -> Result<(), ReplayError> {
        engine.set_wall_clock(opts.wall_clock.now());
        sink.on_watermark(engine.watermark())?;
        if let Some(f) = progress.as_mut() {
            f(
                opened.progress.load(Ordering::Relaxed),
                opened.size,
                records,
            );
        }
        Ok(())
    };
    match &mut opened.input {
        Input::Lines(reader) => {
            // Lines are decoded a block at a time; each event's key hash
            // then fetches its index slot at once and its entry a few events
            // before the engine needs it, so that cache misses overlap.
            let mut events = EventBatch::new();
            let mut items: Vec<Item> = Vec::with_capacity(LINE_BATCH);
            loop {
                reader.begin_batch();
                let before = s.records;
                events.clear();
                items.clear();
                while items.len() < LINE_BATCH {
                    // A mapped file's records are decoded in place; a valid
                    // one tells where its line ends.
                    if let Some(rest) = reader.mapped_rest() {
                        if rest.is_empty() {
                            break;
                        }
                        if let Some((len, advance, decoded)) =
                            dec.decode_json_line(rest, file::MAX_LINE_BYTES)
                        {
                            s.records += 1;
                            let item = stage(decoded, (from, to), &engine, &mut events, &mut s);
                            items.push(item);
                            reader.take_mapped_line(len, advance);
                            continue;
                        }
                    }
                    // Anything else (streams, blank or broken lines) is cut
                    // into lines first.
                    if !reader.read_line()? {
                        break;
                    }
                    let lines = reader.batch();
                    let line = lines.line(lines.len() - 1);
                    if line.bytes.iter().all(|b| b.is_ascii_whitespace()) && !line.oversized {
                        s.blank_lines += 1;
                        items.push(Item::Skip);
                        continue;
                    }
                    s.records += 1;
                    if line.oversized {
                        items.push(Item::Refused(Refusal::new(
                            Reason::Oversized,
                            format!(
                                "record of {} bytes exceeds {} bytes",
                                line.len,
                                file::MAX_LINE_BYTES
                            ),
                        )));
                        continue;
                    }
                    let item = stage(
                        dec.decode_json(line.bytes),
                        (from, to),
                        &engine,
                        &mut events,
                        &mut s,
                    );
                    items.push(item);
                }
                if items.is_empty() {
                    break;
                }
                let lines = reader.batch();
                let mut e = 0;
                for (i, item) in items.drain(..).enumerate() {
                    let result = match item {
                        Item::Skip => continue,
                        Item::Refused(r) => Err(r),
                        Item::Event => {
                            if e + ENTRY_AHEAD < events.len() {
                                engine.prefetch_key_entry(events.hash(e + ENTRY_AHEAD));
                            }
                            if e + WINDOWS_AHEAD < events.len() {
                                engine.prefetch_key_windows(events.hash(e + WINDOWS_AHEAD));
                            }
                            if e + TILES_AHEAD < events.len() {
                                engine.prefetch_key_tiles(events.hash(e + TILES_AHEAD));
                            }
                            let r = engine
                                .process_hashed(&events.get(e), events.hash(e), &mut out)
                                .and_then(|()| kept_with(&mut engine));
                            e += 1;
                            r
                        }
                    };
                    if let Err(r) = result {
                        let line = lines.line(i);
                        let pos = Position::File {
                            file: name.clone(),
                            line: line.number,
                        };
                        dl.write(&r, &pos, line.bytes).map_err(dl_err(dl.path()))?;
                    }
                    if !out.is_empty() {
                        if let Some(o) = online.as_mut() {
                            o.push(&out)?;
                        }
                        sink.write(&mut out)?;
                    }
                }
                if s.records / TICK_RECORDS != before / TICK_RECORDS {
                    tick(s.records, &mut engine, &mut sink, &mut opts.progress)?;
                }
            }
        }
        Input::Parquet(rows) => {
            // The keys of rows a little ahead are known without decoding
            // them: their key-index entries are fetched into cache in steps
            // that never wait on memory (text, then index slot, then entry),
            // so that the cache misses of many rows overlap.
            const C: usize = KEY_PREFETCH_CHUNK;
            let mut buf = Vec::new();
            let mut hashes = [0u64; 4 * C];
            loop {
                let r = rows.row_in_batch();
                if r % C == 0 {
                    rows.prefetch_key_text(3 * C, C);
                    rows.upcoming_key_hashes(2 * C, C, &mut buf, |i, h| {
                        hashes[i % (4 * C)] = h;
                        engine.prefetch_key_slot(h);
                    });
                    for i in r + C..r + 2 * C {
                        engine.prefetch_key_entry(hashes[i % (4 * C)]);
                    }
                    for i in r..r + C {
                        engine.prefetch_key_windows(hashes[i % (4 * C)]);
                    }
                }
                // Known without hashing the decoded key again.
                let hash = rows.dict_key_hash(0);
                let Some((row, result)) = rows.next_row(&mut dec)? else {
                    break;
                };
                s.records += 1;
                let result = feed(result, hash, (from, to), &mut engine, &mut out, &mut s);
                if let Err(r) = result {
                    dl.write(
                        &r,
                        &Position::Row {
                            file: name.clone(),
                            row,
                        },
                        b"",
                    )
                    .map_err(dl_err(dl.path()))?;
                }
                if !out.is_empty() {
                    if let Some(o) = online.as_mut() {
                        o.push(&out)?;
                    }
                    sink.write(&mut out)?;
                }
                if s.records % TICK_RECORDS == 0 {
                    tick(s.records, &mut engine, &mut sink, &mut opts.progress)?;
                }
            }
        }
    }
    let tiles = engine.tile_memory();
    finish(&mut engine, &mut out, online, &mut sink)?;
    sink.remove_stale()?;
    dl.finish().map_err(dl_err(dl.path()))?;
    // Letters of an earlier parallel run of the same input are stale too.
    let keep: Vec<PathBuf> = (dl.total() > 0)
        .then(|| dl.path().to_path_buf())
        .into_iter()
        .collect();
    crate::sink::dead_letter::remove_stale(&dl_dir, &p.name, &rid, None, &keep)
        .map_err(dl_err(&dl_dir))?;
    if let Some(f) = opts.progress.as_mut() {
        f(
            opened.progress.load(Ordering::Relaxed),
            opened.size,
            s.records,
        );
    }
    let elapsed = started.elapsed().max(Duration::from_micros(1));
    let st = &engine.stats;
    s.events = st.events;
    s.late_events_kept = st.late_kept;
    s.late_events_dropped = st.late_dropped;
    s.windows = st.windows_opened;
    s.panes = st.panes;
    s.retractions = st.retractions;
    s.rows = sink.rows();
    s.files = sink
        .files()
        .iter()
        .map(|f| f.display().to_string())
        .collect();
    s.dead_letters = dl
        .counts()
        .iter()
        .map(|(r, n)| (r.as_str().to_string(), *n))
        .collect();
    if let Some((n, bytes)) = tiles {
        s.tiles_held = Some(n);
        s.tile_state_bytes = Some(bytes);
    }
    s.dead_letters_total = dl.total();
    s.dead_letter_file = (dl.total() > 0).then(|| dl.path().display().to_string());
    s.threads = 1;
    s.seconds = elapsed.as_secs_f64();
    s.events_per_second = s.records as f64 / s.seconds;
    s.peak_memory_bytes = peak_memory_bytes();
    Ok(s)
}
