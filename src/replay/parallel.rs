//! Parallel and sharded replay (`--threads N`, `--shard I/N`).
//!
//! The input is cut into chunks in order: about [`json_chunk_bytes`] of
//! whole lines of JSON (a range of the memory-mapped file, or lines copied from a
//! stream), or a part of one Parquet row group, 65,536 rows or a quarter of
//! the group when that is more (read through the offset index when the
//! file has one). Each of the `N` worker threads
//! decodes every `N`th chunk, and then reads every chunk in input order with
//! its own engine:
//!
//! - an event of a key the thread owns ([`owner`]) is processed as one
//!   engine would;
//! - any other event only moves the thread's clock
//!   ([`Engine::observe_foreign`]): stream time and the watermark advance
//!   on every thread exactly as on one engine that saw every event, so
//!   every pane has the `emitted_at`, `watermark` and late decision of a
//!   single-threaded run.
//!
//! The checks that depend on no key's state (undecodable records, the
//! `max_future` check, bad values) run once, where the chunk is decoded;
//! their dead letters are written by thread 0 of shard 0. Each thread
//! writes its own Parquet files (`part-<run>[-s<I>of<N>]-t<thread>-<seq>`)
//! and dead letters, so that encoding runs in parallel too; at the end the
//! run removes the files of its run identifier (and shard) it did not
//! write. docs/semantics.md, section 7, states the rules.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::{kept_with, peak_memory_bytes, run_id, OnlineFeed, ReplayError, ReplayOptions};
use super::{ReplaySummary, ENTRY_AHEAD, TILES_AHEAD, WINDOWS_AHEAD};
use crate::engine::{key_hash, Engine, EngineStats, PaneBuf, ProcessingTime};
use crate::event::{Decoder, EventBatch, EventRef, Reason, Refusal};
use crate::plan::PlanRef;
use crate::sink::dead_letter::{DeadLetterWriter, Position};
use crate::sink::parquet::ParquetSink;
use crate::source::file::{self, Input, InputError, LineReader, ParquetRows};
use crate::time::{Clock, Micros};

/// The Parquet part size in bytes (about 16 per row: 65,536 rows, or a
/// quarter of the row group when that is more).
pub const CHUNK_BYTES: usize = 1 << 20;

/// Bytes of JSON lines per chunk with `threads` threads: 64 MiB over the
/// threads, from 1 to 16 MiB. Every chunk costs each thread a fixed share
/// of time (with 2 threads on the standard set, 1 MiB chunks took 3.21 s
/// and 16 MiB ones 2.98 s), and about `2 * threads + 1` chunks are decoded
/// at once, so memory stays bounded whatever the thread count.
pub fn json_chunk_bytes(threads: u32) -> usize {
    ((64usize << 20) / threads.max(1) as usize).clamp(1 << 20, 16 << 20)
}

/// Which of `count` shards a run computes (`--shard index/count`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// Parses `I/N` with `0 <= I < N`.
    pub fn parse(s: &str) -> Result<Shard, String> {
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| format!("--shard {s:?}: expected I/N, e.g. 0/4"))?;
        let index: u32 = i
            .trim()
            .parse()
            .map_err(|_| format!("--shard {s:?}: {i:?} is not a shard number"))?;
        let count: u32 = n
            .trim()
            .parse()
            .map_err(|_| format!("--shard {s:?}: {n:?} is not a shard count"))?;
        if count == 0 || index >= count {
            return Err(format!(
                "--shard {s:?}: the shard number must be at least 0 and below the count"
            ));
        }
        if count > 4096 {
            return Err(format!("--shard {s:?}: at most 4096 shards"));
        }
        Ok(Shard { index, count })
    }

    /// The part of file names that says which shard wrote them.
    pub fn tag(&self) -> String {
        format!("s{}of{}", self.index, self.count)
    }
}

/// The stable hash that splits keys over shards and threads: 64-bit
/// FNV-1a over the key's encoded bytes followed by one `0xff` byte (the
/// function that names replay runs), then the 64-bit finalizer of
/// MurmurHash3 (`fmix64`) so that the high bits, which choose the part,
/// depend on every byte. Fixed across builds, machines and versions.
#[inline]
pub fn split_hash(encoded_key: &[u8]) -> u64 {
    let mut h = super::fnv1a(&[encoded_key]);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Of `n` equal parts of the hash range, the one `h` falls in.
#[inline]
fn part(h: u64, n: u64) -> u64 {
    ((h as u128 * n as u128) >> 64) as u64
}

/// Which shard of `shards` and which thread of `threads` hold a key of
/// split hash `h`: the hash range is cut into `shards * threads` equal
/// parts, shard `s` holds the `threads` parts from `s * threads`, so a
/// key's shard does not depend on the thread count.
#[inline]
pub fn owner(h: u64, shards: u32, threads: u32) -> (u32, u32) {
    let slot = part(h, shards as u64 * threads as u64) as u32;
    (slot / threads, slot % threads)
}

/// Marks an event of a key of another shard.
const FOREIGN: u16 = u16::MAX;

/// Where the bytes of a chunk's dead letters are.
#[derive(Default)]
enum Raw {
    /// A range of the memory-mapped input, from this offset.
    Mapped(usize),
    /// Lines copied out of a stream.
    Owned(Vec<u8>),
    /// Parquet rows (a dead letter of a row has no raw bytes).
    #[default]
    None,
}

/// What is cut from the input in order, before decoding.
enum Piece {
    /// A byte range of the mapped file (whole lines).
    Mapped(usize, usize),
    /// Lines of a stream: bytes, and per line (start, end, number, length).
    Lines(Vec<u8>, Vec<(usize, usize, u64, usize)>),
    /// Rows of a Parquet row group, and the share of the file's bytes
    /// read at their end.
    Group(file::ParquetPart, u64),
}

/// A decoded chunk, read by every thread.
#[derive(Default)]
struct Chunk {
    events: EventBatch,
    /// Per event: the thread that owns its key, or [`FOREIGN`].
    owner: Vec<u16>,
    /// Per event: its line (relative to the chunk's first line when
    /// `relative_lines`) or row, and its bytes in `raw`.
    pos: Vec<u64>,
    span: Vec<(u32, u32)>,
    /// Records refused by the checks that need no state.
    refused: Vec<(Refusal, u64, (u32, u32))>,
    raw: Raw,
    relative_lines: bool,
    lines: u64,
    records: u64,
    blank_lines: u64,
    out_of_range: u64,
    /// Input bytes consumed up to the end of this chunk.
    progress: u64,
}

impl Chunk {
    /// Empties the chunk, keeping its buffers' memory.
    fn clear(&mut self) {
        self.events.clear();
        self.owner.clear();
        self.pos.clear();
        self.span.clear();
        self.refused.clear();
        self.raw = Raw::None;
        self.relative_lines = false;
        self.lines = 0;
        self.records = 0;
        self.blank_lines = 0;
        self.out_of_range = 0;
        self.progress = 0;
    }
}

/// What the input is, for cutting it into pieces.
enum Cutter<'a> {
    Mapped {
        data: &'a [u8],
        at: usize,
    },
    Stream(&'a mut LineReader),
    Parquet {
        groups: Vec<u64>,
        /// The next row group, and the next row in it.
        next: (usize, usize),
        size: u64,
    },
}

impl Cutter<'_> {
    fn next(&mut self, chunk_bytes: usize) -> Result<Option<Piece>, InputError> {
        match self {
            Cutter::Mapped { data, at } => {
                if *at >= data.len() {
                    return Ok(None);
                }
                let start = *at;
                let mut end = (start + chunk_bytes).min(data.len());
                if end < data.len() && data[end - 1] != b'\n' {
                    end = match memchr::memchr(b'\n', &data[end..]) {
                        Some(i) => end + i + 1,
                        None => data.len(),
                    };
                }
                *at = end;
                Ok(Some(Piece::Mapped(start, end)))
            }
            Cutter::Stream(reader) => {
                reader.begin_batch();
                let mut bytes = 0;
                let mut n = 0;
                while bytes < chunk_bytes {
                    if !reader.read_line()? {
                        break;
                    }
                    bytes += reader.batch().line(n).bytes.len() + 1;
                    n += 1;
                }
                if n == 0 {
                    return Ok(None);
                }
                let batch = reader.batch();
                let mut data = Vec::with_capacity(bytes);
                let mut lines = Vec::with_capacity(n);
                for i in 0..n {
                    let l = batch.line(i);
                    let start = data.len();
                    data.extend_from_slice(l.bytes);
                    lines.push((start, data.len(), l.number, l.len));
                }
                Ok(Some(Piece::Lines(data, lines)))
            }
            Cutter::Parquet { groups, next, size } => {
                while next.0 < groups.len() && next.1 as u64 >= groups[next.0] {
                    *next = (next.0 + 1, 0);
                }
                if next.0 >= groups.len() {
                    return Ok(None);
                }
                let (g, a) = *next;
                // About 16 bytes per row: 65,536 rows for the default chunk;
                // but a row group in at most four parts, as each part reads
                // the footer and decodes the dictionaries and first page
                // of its columns again.
                let per_chunk = (chunk_bytes / 16)
                    .max(groups[g].div_ceil(4) as usize)
                    .max(1);
                let b = (a + per_chunk).min(groups[g] as usize);
                *next = (g, b);
                let before = groups[..g].iter().sum::<u64>();
                let total = groups.iter().sum::<u64>().max(1);
                let read = *size * (before + b as u64) / total;
                let part = file::ParquetPart {
                    group: g,
                    rows: a..b,
                    first_row: before + a as u64 + 1,
                };
                Ok(Some(Piece::Group(part, read)))
            }
        }
    }
}

/// The chunks between the threads that decode them and the threads that
/// read them.
struct Board<'a> {
    state: Mutex<BoardState>,
    changed: Condvar,
    cutter: Mutex<Cutter<'a>>,
    /// The memory-mapped input, whose pages are handed back to the kernel
    /// once every thread is done with their chunk.
    mapped: Option<file::MappedPages<'a>>,
}

struct BoardState {
    /// Decoded chunks not yet read by every thread, and how many still will.
    chunks: BTreeMap<usize, (Arc<Chunk>, usize)>,
    /// The next chunk to cut.
    next_cut: usize,
    /// The number of chunks, once the input's end was cut.
    end: Option<usize>,
    /// A thread failed: the others stop.
    failed: bool,
    /// The mapped byte range of the chunk removed last.
    removed: Option<(usize, usize)>,
    /// Emptied chunks every thread is done with, whose buffers the next
    /// chunks decoded reuse (no growth, no fresh pages per chunk).
    spare: Vec<Chunk>,
}

impl<'a> Board<'a> {
    fn new(cutter: Cutter<'a>, mapped: Option<file::MappedPages<'a>>) -> Board<'a> {
        Board {
            state: Mutex::new(BoardState {
                chunks: BTreeMap::new(),
                next_cut: 0,
                end: None,
                failed: false,
                removed: None,
                spare: Vec::new(),
            }),
            changed: Condvar::new(),
            cutter: Mutex::new(cutter),
            mapped,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BoardState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fail(&self) {
        self.lock().failed = true;
        self.changed.notify_all();
    }

    /// Cuts chunk `c` once every earlier chunk was cut; `None` past the end
    /// (or when another thread failed).
    fn cut(&self, c: usize, chunk_bytes: usize) -> Result<Option<Piece>, InputError> {
        let mut st = self.lock();
        loop {
            if st.failed || st.end.is_some_and(|e| c >= e) {
                return Ok(None);
            }
            if st.next_cut == c {
                break;
            }
            st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        drop(st);
        let piece = self
            .cutter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .next(chunk_bytes);
        let mut st = self.lock();
        match &piece {
            Ok(Some(_)) => st.next_cut = c + 1,
            Ok(None) => st.end = Some(c),
            Err(_) => st.failed = true,
        }
        drop(st);
        self.changed.notify_all();
        piece
    }

    /// An empty chunk to decode into.
    fn empty_chunk(&self) -> Chunk {
        self.lock().spare.pop().unwrap_or_default()
    }

    /// Keeps a chunk every thread is done with for reuse (at most `keep`).
    fn recycle(&self, mut chunk: Chunk, keep: usize) {
        chunk.clear();
        let mut st = self.lock();
        if st.spare.len() < keep {
            st.spare.push(chunk);
        }
    }

    fn publish(&self, c: usize, chunk: Chunk, readers: usize) {
        self.lock().chunks.insert(c, (Arc::new(chunk), readers));
        self.changed.notify_all();
    }

    /// Chunk `c` once decoded; `None` at the end (or on failure).
    fn take(&self, c: usize) -> Option<Arc<Chunk>> {
        let mut st = self.lock();
        loop {
            if st.failed {
                return None;
            }
            if let Some((chunk, left)) = st.chunks.get_mut(&c) {
                let chunk = chunk.clone();
                *left -= 1;
                if *left == 0 {
                    st.chunks.remove(&c);
                    // Chunks are removed in order, once every thread took
                    // them: every thread is past the chunk removed before
                    // this one, so its pages can go (the process's resident
                    // memory stays a few chunks, not the file).
                    let now = match chunk.raw {
                        Raw::Mapped(start) => Some((start, chunk.progress as usize)),
                        _ => None,
                    };
                    if let (Some(r), Some((a, b))) = (self.mapped, st.removed) {
                        r.release(a, b);
                    }
                    st.removed = now;
                }
                return Some(chunk);
            }
            if st.end.is_some_and(|e| c >= e) {
                return None;
            }
            st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// How a thread decodes pieces into chunks.
struct Decoding<'a> {
    dec: Decoder,
    range: (Micros, Micros),
    wall: &'a dyn Clock,
    shard: Shard,
    threads: u32,
    columns: &'a [String],
    /// The mapped input, for [`Piece::Mapped`].
    mapped: Option<&'a [u8]>,
    /// The Parquet input: its path, and its bytes when read from standard input.
    parquet: Option<(&'a Path, Option<&'a bytes::Bytes>)>,
}

impl Decoding<'_> {
    /// Decodes `piece` into `c` (an empty chunk, maybe one read before,
    /// whose buffers are reused).
    fn decode(
        &mut self,
        engine: &mut Engine,
        piece: Piece,
        mut c: Chunk,
    ) -> Result<Chunk, InputError> {
        let wall = self.wall.now();
        match piece {
            Piece::Mapped(start, end) => {
                let data = &self.mapped.expect("a mapped input")[start..end];
                c.raw = Raw::Mapped(start);
                c.relative_lines = true;
                c.progress = end as u64;
                let mut at = 0usize;
                while at < data.len() {
                    let rest = &data[at..];
                    c.lines += 1;
                    let line = c.lines;
                    if let Some((len, advance, decoded)) =
                        self.dec.decode_json_line(rest, file::MAX_LINE_BYTES)
                    {
                        c.records += 1;
                        let span = (at as u32, (at + len) as u32);
                        Self::stage(
                            &mut c,
                            engine,
                            decoded,
                            self.range,
                            wall,
                            line,
                            span,
                            self.shard,
                            self.threads,
                            None,
                        );
                        at += advance;
                        continue;
                    }
                    let (len, advance) = match memchr::memchr(b'\n', rest) {
                        Some(i) => (i, i + 1),
                        None => (rest.len(), rest.len()),
                    };
                    let full = if rest[..len].last() == Some(&b'\r') {
                        len - 1
                    } else {
                        len
                    };
                    let shown = full.min(file::MAX_LINE_BYTES);
                    let span = (at as u32, (at + shown) as u32);
                    self.line(&mut c, engine, &rest[..shown], full, line, span, wall);
                    at += advance;
                }
            }
            Piece::Lines(data, lines) => {
                for &(start, end, number, len) in &lines {
                    c.lines += 1;
                    let span = (start as u32, end as u32);
                    self.line(&mut c, engine, &data[start..end], len, number, span, wall);
                }
                c.raw = Raw::Owned(data);
            }
            Piece::Group(part, read) => {
                c.progress = read;
                let (path, bytes) = self.parquet.expect("a Parquet input");
                let mut rows = ParquetRows::open_part(
                    path,
                    bytes.cloned(),
                    8192,
                    Arc::new(AtomicU64::new(0)),
                    self.columns,
                    Some(&part),
                )?;
                rows.also_hash_keys(split_hash);
                loop {
                    rows.prefetch_dict_key_hashes(16);
                    let hashes = rows.dict_key_hashes(0);
                    let Some((row, decoded)) = rows.next_row(&mut self.dec)? else {
                        break;
                    };
                    c.records += 1;
                    Self::stage(
                        &mut c,
                        engine,
                        decoded,
                        self.range,
                        wall,
                        row,
                        (0, 0),
                        self.shard,
                        self.threads,
                        hashes,
                    );
                }
            }
        }
        Ok(c)
    }

    /// A line the fast decoder did not take: blank (skipped), oversized
    /// (`full` bytes long; refused) or decoded in full and staged.
    #[allow(clippy::too_many_arguments)]
    fn line(
        &mut self,
        c: &mut Chunk,
        engine: &mut Engine,
        bytes: &[u8],
        full: usize,
        number: u64,
        span: (u32, u32),
        wall: Micros,
    ) {
        let oversized = full > file::MAX_LINE_BYTES;
        if !oversized && bytes.iter().all(|b| b.is_ascii_whitespace()) {
            c.blank_lines += 1;
            return;
        }
        c.records += 1;
        if oversized {
            return c.refused.push((oversized_refusal(full), number, span));
        }
        let decoded = self.dec.decode_json(bytes);
        Self::stage(
            c,
            engine,
            decoded,
            self.range,
            wall,
            number,
            span,
            self.shard,
            self.threads,
            None,
        );
    }

    /// Adds a decoded record to the chunk: an event when it is in range
    /// and passes the checks that need no state, else a refusal.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn stage(
        c: &mut Chunk,
        engine: &mut Engine,
        decoded: Result<EventRef<'_>, Refusal>,
        range: (Micros, Micros),
        wall: Micros,
        pos: u64,
        span: (u32, u32),
        shard: Shard,
        threads: u32,
        hashes: Option<(u64, u64)>,
    ) {
        let ev = match decoded {
            Ok(ev) => ev,
            Err(r) => return c.refused.push((r, pos, span)),
        };
        if !super::in_range(ev.time, range) {
            c.out_of_range += 1;
            return;
        }
        if let Err(r) = engine.admit(&ev, wall) {
            return c.refused.push((r, pos, span));
        }
        // (From a Parquet dictionary: the hashes of the key's encoding,
        // computed once per distinct key of the row group.)
        let (key, split) = hashes.unwrap_or_else(|| (key_hash(ev.key), split_hash(ev.key)));
        debug_assert_eq!((key, split), (key_hash(ev.key), split_hash(ev.key)));
        let (s, t) = owner(split, shard.count, threads);
        c.owner
            .push(if s == shard.index { t as u16 } else { FOREIGN });
        c.events.push(&ev, key);
        c.pos.push(pos);
        c.span.push(span);
    }
}

fn oversized_refusal(len: usize) -> Refusal {
    Refusal::new(
        Reason::Oversized,
        format!(
            "record of {len} bytes exceeds {} bytes",
            file::MAX_LINE_BYTES
        ),
    )
}

/// What one thread did.
struct Done {
    stats: EngineStats,
    records: u64,
    blank_lines: u64,
    out_of_range: u64,
    files: Vec<PathBuf>,
    rows: u64,
    dead_letters: BTreeMap<Reason, u64>,
    dead_letter_file: Option<PathBuf>,
    tiles: Option<(u64, u64)>,
}

/// Everything the threads share.
struct Shared<'a> {
    plan: PlanRef,
    pipeline: &'a crate::config::Pipeline,
    output: &'a Path,
    from: Option<Micros>,
    to: Option<Micros>,
    wall: &'a dyn Clock,
    sharded: bool,
    board: Board<'a>,
    name: String,
    rid: String,
    threads: u32,
    shard: Shard,
    chunk_bytes: usize,
    columns: Vec<String>,
    mapped: Option<&'a [u8]>,
    parquet: Option<(&'a Path, Option<&'a bytes::Bytes>)>,
    size: Option<u64>,
    online: Option<tokio::sync::mpsc::Sender<crate::sink::redis::OnlineMsg>>,
}

/// How many chunks a thread decodes ahead of the one it reads.
fn ahead(threads: u32) -> usize {
    2 * threads as usize + 1
}

/// One worker: decodes its share of the chunks and runs its engine over all of them.
fn work(
    sh: &Shared<'_>,
    me: u32,
    mut progress: Option<&mut super::Progress>,
) -> Result<Done, ReplayError> {
    let p = &sh.pipeline;
    let mut engine = Engine::new(&sh.plan, ProcessingTime::StreamTime);
    engine.set_input_end(sh.to);
    let tag = if sh.sharded {
        format!("-{}", sh.shard.tag())
    } else {
        String::new()
    };
    let mut sink = ParquetSink::new(sh.output, &sh.plan, &format!("{}{tag}-t{me}", sh.rid));
    let dl_dir = sh.output.join("_dead_letter");
    let mut dl = DeadLetterWriter::new(&dl_dir, &p.name, &format!("{}{tag}-t{me}", sh.rid));
    let dl_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ReplayError::DeadLetter { path, source }
    };
    let mut online = sh
        .online
        .clone()
        .map(|tx| OnlineFeed::new(tx, p.features.len()));
    let mut decoding = Decoding {
        dec: Decoder::new(sh.plan.decode.clone()),
        range: (sh.from.unwrap_or(i64::MIN), sh.to.unwrap_or(i64::MAX)),
        wall: sh.wall,
        shard: sh.shard,
        threads: sh.threads,
        columns: &sh.columns,
        mapped: sh.mapped,
        parquet: sh.parquet,
    };
    let writes_stateless = me == 0 && sh.shard.index == 0;
    let mut out = PaneBuf::new(p.features.len());
    let mut own: Vec<u32> = Vec::new();
    let mut next_decode = me as usize;
    let mut lines_before = 0u64;
    let mut d = Done {
        stats: EngineStats::default(),
        records: 0,
        blank_lines: 0,
        out_of_range: 0,
        files: Vec::new(),
        rows: 0,
        dead_letters: BTreeMap::new(),
        dead_letter_file: None,
        tiles: None,
    };
    let mut c = 0usize;
    loop {
        // Decode this thread's chunks up to a few ahead of the one it reads.
        while next_decode < c + ahead(sh.threads) {
            match sh.board.cut(next_decode, sh.chunk_bytes)? {
                None => break,
                Some(piece) => {
                    let chunk = decoding.decode(&mut engine, piece, sh.board.empty_chunk())?;
                    sh.board.publish(next_decode, chunk, sh.threads as usize);
                    next_decode += sh.threads as usize;
                }
            }
        }
        let Some(chunk) = sh.board.take(c) else {
            break;
        };
        c += 1;
        let base = if chunk.relative_lines {
            lines_before
        } else {
            0
        };
        lines_before += chunk.lines;
        d.records += chunk.records;
        d.blank_lines += chunk.blank_lines;
        d.out_of_range += chunk.out_of_range;
        let position = |n: u64| -> Position {
            if sh.parquet.is_some() {
                Position::Row {
                    file: sh.name.clone(),
                    row: n,
                }
            } else {
                Position::File {
                    file: sh.name.clone(),
                    line: base + n,
                }
            }
        };
        let raw = |(a, b): (u32, u32)| -> &[u8] {
            match &chunk.raw {
                Raw::Mapped(start) => {
                    &sh.mapped.expect("mapped")[start + a as usize..start + b as usize]
                }
                Raw::Owned(v) => &v[a as usize..b as usize],
                Raw::None => b"",
            }
        };
        if writes_stateless {
            for (r, n, span) in &chunk.refused {
                dl.write(r, &position(*n), raw(*span))
                    .map_err(dl_err(dl.path()))?;
            }
        }
        own.clear();
        own.extend(
            chunk
                .owner
                .iter()
                .enumerate()
                .filter(|(_, &o)| o == me as u16)
                .map(|(i, _)| i as u32),
        );
        let ev = &chunk.events;
        let mut k = 0usize;
        for i in 0..ev.len() {
            if chunk.owner[i] != me as u16 {
                engine.observe_foreign(ev.time(i), &mut out);
            } else {
                if let Some(&j) = own.get(k + ENTRY_AHEAD) {
                    engine.prefetch_key_slot(ev.hash(j as usize));
                }
                if let Some(&j) = own.get(k + WINDOWS_AHEAD) {
                    engine.prefetch_key_entry(ev.hash(j as usize));
                    engine.prefetch_key_windows(ev.hash(j as usize));
                }
                if let Some(&j) = own.get(k + TILES_AHEAD) {
                    engine.prefetch_key_tiles(ev.hash(j as usize));
                }
                k += 1;
                let r = engine
                    .process_hashed(&ev.get(i), ev.hash(i), &mut out)
                    .and_then(|()| kept_with(&mut engine));
                if let Err(r) = r {
                    dl.write(&r, &position(chunk.pos[i]), raw(chunk.span[i]))
                        .map_err(dl_err(dl.path()))?;
                }
            }
            if !out.is_empty() {
                if let Some(o) = online.as_mut() {
                    o.push(&out)?;
                }
                sink.write(&mut out)?;
            }
        }
        sink.on_watermark(engine.watermark())?;
        if let Some(f) = progress.as_mut() {
            f(chunk.progress, sh.size, d.records);
        }
        // The last thread done with the chunk hands its buffers back.
        if let Some(done) = Arc::into_inner(chunk) {
            sh.board.recycle(done, sh.threads as usize + 1);
        }
    }
    if sh.board.lock().failed {
        // Another thread's error is the one reported.
        return Err(ReplayError::Stopped);
    }
    d.tiles = engine.tile_memory();
    super::finish(&mut engine, &mut out, online, &mut sink)?;
    dl.finish().map_err(dl_err(dl.path()))?;
    d.stats = engine.stats.clone();
    d.files = sink.files().to_vec();
    d.rows = sink.rows();
    d.dead_letters = dl.counts().clone();
    d.dead_letter_file = (dl.total() > 0).then(|| dl.path().to_path_buf());
    Ok(d)
}

/// Runs a replay over `threads` engine threads (and one shard of several).
/// Refuses a sharded run over output of the same run identifier split
/// otherwise: a shard removes only its own files, so an unsharded run's
/// files (or those of another shard count) would stay beside it and double
/// its rows (docs/semantics.md, section 7).
fn check_split(
    opts: &ReplayOptions,
    plan: &PlanRef,
    rid: &str,
    sd: Shard,
) -> Result<(), ReplayError> {
    let ours = |rest: &str| -> bool {
        // `s<I>of<N>-...` with this run's N.
        let Some(r) = rest.strip_prefix('s') else {
            return false;
        };
        let Some((i, r)) = r.split_once("of") else {
            return false;
        };
        let Some((n, _)) = r.split_once('-') else {
            return false;
        };
        i.parse::<u32>().is_ok() && n.parse::<u32>().ok() == Some(sd.count)
    };
    let sink = ParquetSink::new(&opts.output, plan, rid);
    let head = format!("part-{rid}-");
    if let Some(f) = sink
        .published(&format!("{rid}-"))
        .into_iter()
        .find(|f| !ours(&f[head.len()..]))
    {
        return Err(ReplayError::ShardConflict {
            dir: opts.output.clone(),
            file: f,
            shard: format!("{}/{}", sd.index, sd.count),
        });
    }
    Ok(())
}

pub(super) fn run(
    mut opts: ReplayOptions,
    threads: u32,
    shard: Shard,
) -> Result<ReplaySummary, ReplayError> {
    let started = Instant::now();
    let rid = run_id(&opts.pipeline.name, &opts.input, opts.from, opts.to);
    let plan = crate::plan::Plan::new(&opts.pipeline);
    if let Some(sd) = opts.shard {
        check_split(&opts, &plan, &rid, sd)?;
    }
    let columns: Vec<String> = plan.decode.fields.iter().map(|(n, _)| n.clone()).collect();
    let mut opened = file::open(&opts.input, 8192, &columns)?;
    let name = opened.name.clone();
    let size = opened.size;
    let mut progress = opts.progress.take();
    let online = opts.online.take();
    let (mapped, parquet, cutter, release) = match &mut opened.input {
        Input::Lines(reader) => match reader.mapped_all().is_some() {
            true => {
                let r: &LineReader = reader;
                let data = r.mapped_all().expect("a mapped input");
                (Some(data), None, Cutter::Mapped { data, at: 0 }, r.pages())
            }
            false => (None, None, Cutter::Stream(reader), None),
        },
        Input::Parquet(rows) => {
            let (path, bytes) = rows.source();
            let groups = file::parquet_row_groups(path, bytes)?;
            let size = size.unwrap_or(0);
            (
                None,
                Some((path, bytes)),
                Cutter::Parquet {
                    groups,
                    next: (0, 0),
                    size,
                },
                None,
            )
        }
    };
    let sh = Shared {
        plan: plan.clone(),
        pipeline: &opts.pipeline,
        output: &opts.output,
        from: opts.from,
        to: opts.to,
        wall: opts.wall_clock.as_ref(),
        sharded: opts.shard.is_some(),
        board: Board::new(cutter, release),
        name: name.clone(),
        rid: rid.clone(),
        threads,
        shard,
        chunk_bytes: opts
            .chunk_bytes
            .unwrap_or(if parquet.is_some() {
                CHUNK_BYTES
            } else {
                json_chunk_bytes(threads)
            })
            .max(1),
        columns: columns.clone(),
        mapped,
        parquet,
        size,
        online,
    };
    let results: Vec<Result<Done, ReplayError>> =
        std::thread::scope(|s| {
            let sh = &sh;
            let others: Vec<_> = (1..threads)
                .map(|me| {
                    s.spawn(move || {
                        let r = work(sh, me, None);
                        if r.is_err() {
                            sh.board.fail();
                        }
                        r
                    })
                })
                .collect();
            let first = work(sh, 0, progress.as_mut());
            if first.is_err() {
                sh.board.fail();
            }
            let mut all = vec![first];
            for h in others {
                all.push(h.join().unwrap_or_else(|_| {
                    Err(ReplayError::Online("a replay thread panicked".into()))
                }));
            }
            all
        });
    drop(sh);
    // The first real error: a thread stopped by another's failure says so.
    let mut done = Vec::new();
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok(d) => done.push(d),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        let real = errors
            .iter()
            .position(|e| !matches!(e, ReplayError::Stopped))
            .unwrap_or(0);
        return Err(errors.swap_remove(real));
    }
    let p = &opts.pipeline;
    let mut s = ReplaySummary {
        pipeline: p.name.clone(),
        input: name,
        ..Default::default()
    };
    let mut stats = EngineStats::default();
    let mut files: Vec<PathBuf> = Vec::new();
    let mut letters: Vec<PathBuf> = Vec::new();
    let mut counts: BTreeMap<Reason, u64> = BTreeMap::new();
    let mut tiles: Option<(u64, u64)> = None;
    for (i, d) in done.iter().enumerate() {
        if i == 0 {
            s.records = d.records;
            s.blank_lines = d.blank_lines;
            s.out_of_range = d.out_of_range;
        }
        stats.add(&d.stats);
        files.extend(d.files.iter().cloned());
        letters.extend(d.dead_letter_file.iter().cloned());
        for (r, n) in &d.dead_letters {
            *counts.entry(*r).or_default() += n;
        }
        s.rows += d.rows;
        if let Some((n, b)) = d.tiles {
            let t = tiles.get_or_insert((0, 0));
            t.0 += n;
            t.1 += b;
        }
    }
    // Files of this run (and shard) that no thread wrote now are stale.
    let prefix = match opts.shard {
        Some(sd) => format!("{rid}-{}-", sd.tag()),
        None => format!("{rid}-"),
    };
    ParquetSink::new(&opts.output, &plan, &rid).remove_stale_except(&prefix, &files)?;
    crate::sink::dead_letter::remove_stale(
        &opts.output.join("_dead_letter"),
        &p.name,
        &rid,
        opts.shard.map(|sd| sd.tag()).as_deref(),
        &letters,
    )
    .map_err(|source| ReplayError::DeadLetter {
        path: opts.output.join("_dead_letter"),
        source,
    })?;
    files.sort();
    letters.sort();
    if let Some(f) = progress.as_mut() {
        f(size.unwrap_or(0), size, s.records);
    }
    let elapsed = started.elapsed().max(Duration::from_micros(1));
    s.events = stats.events;
    s.late_events_kept = stats.late_kept;
    s.late_events_dropped = stats.late_dropped;
    s.windows = stats.windows_opened;
    s.panes = stats.panes;
    s.retractions = stats.retractions;
    s.files = files.iter().map(|f| f.display().to_string()).collect();
    s.dead_letters = counts
        .iter()
        .map(|(r, n)| (r.as_str().to_string(), *n))
        .collect();
    s.dead_letters_total = counts.values().sum();
    s.dead_letter_file = letters.first().map(|f| f.display().to_string());
    s.dead_letter_files = letters.iter().map(|f| f.display().to_string()).collect();
    if let Some((n, bytes)) = tiles {
        s.tiles_held = Some(n);
        s.tile_state_bytes = Some(bytes);
    }
    s.threads = threads;
    s.shard = opts.shard.map(|sd| sd.tag());
    s.seconds = elapsed.as_secs_f64();
    s.events_per_second = s.records as f64 / s.seconds;
    s.peak_memory_bytes = peak_memory_bytes();
    Ok(s)
}
