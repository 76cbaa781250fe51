//! The windowed aggregation operator: events in, panes out (SPEC 1-4).
//!
//! [`Engine`] keeps, per entity key, its open windows with their accumulators
//! and pane bookkeeping, a timer index of event-time deadlines (on-time at
//! `end`, expiry at `end + allowed_lateness`), the watermark tracker, and the
//! lists of windows with new data for processing-time triggers. It does no
//! I/O and reads no clock: processing time is either the stream time (the
//! greatest event time seen: replay) or what the caller sets (the daemon).
//!
//! Invariants: the watermark never moves back; every window that ends
//! normally emits exactly one pane with `is_final`, its last; a key's on-time
//! panes are emitted in increasing `end`; a window swallowed by a session
//! merge emits no further pane.

mod hopping;
use hopping::HOP_REF;
mod keys;
mod partitioned;
mod snapshot;
#[cfg(test)]
mod tests;

pub use partitioned::PartitionedEngine;
pub use snapshot::{PartitionState, RestoreError, WindowState};

use std::collections::BTreeMap;

use crate::mem::prefetch;
use keys::KeyIndex;
use smallvec::SmallVec;

use crate::aggregate::{Heavy, Input, Value};
use crate::config::expr::Val;
use crate::config::{Accumulation, LateTrigger, WindowKind};
use crate::event::{short_eq, EncodedKey, EventRef, FieldVal, Reason, Refusal};
use crate::plan::PlanRef;
use crate::time::watermark::{PartitionWatermark, WATERMARK_MAX, WATERMARK_MIN};
use crate::time::Micros;
use crate::window::{sessions_meet, LastTumbling};

/// Why a pane fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Timing {
    Early,
    OnTime,
    Late,
}

impl Timing {
    pub fn as_str(self) -> &'static str {
        match self {
            Timing::Early => "EARLY",
            Timing::OnTime => "ON_TIME",
            Timing::Late => "LATE",
        }
    }
}

/// One emitted row, owned: a pane of a window of a key, or the retraction
/// of one. Its metadata fields read through `Deref` (`pane.window_end`).
#[derive(Debug, Clone, PartialEq)]
pub struct Pane {
    pub meta: PaneMeta,
    /// One value per feature, in the pipeline's order.
    pub values: Box<[Value]>,
}

impl std::ops::Deref for Pane {
    type Target = PaneMeta;
    fn deref(&self) -> &PaneMeta {
        &self.meta
    }
}

/// A pane's row without its values (which live in [`PaneBuf`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PaneMeta {
    pub key: EncodedKey,
    pub window_start: Micros,
    pub window_end: Micros,
    pub pane_index: u32,
    pub timing: Timing,
    pub is_final: bool,
    pub retraction: bool,
    /// Source partition of the key's events (0 in replay).
    pub partition: u32,
    /// Processing time of emission.
    pub emitted_at: Micros,
    /// The watermark at emission; `None` before the first watermark and at
    /// the end of a bounded input (where it is +infinity).
    pub watermark: Option<Micros>,
}

/// Emitted panes, owned by the caller: row metadata plus one flat vector of
/// values (`width` per row), so that emitting allocates nothing per pane.
#[derive(Debug, Clone, Default)]
pub struct PaneBuf {
    width: usize,
    meta: Vec<PaneMeta>,
    values: Vec<Value>,
}

impl PaneBuf {
    /// A buffer for panes of `width` features.
    pub fn new(width: usize) -> PaneBuf {
        PaneBuf {
            width,
            meta: Vec::with_capacity(1024),
            values: Vec::with_capacity(1024 * width),
        }
    }

    pub fn len(&self) -> usize {
        self.meta.len()
    }

    pub fn is_empty(&self) -> bool {
        self.meta.is_empty()
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn clear(&mut self) {
        self.meta.clear();
        self.values.clear();
    }

    /// Row `i`: its metadata and values.
    pub fn get(&self, i: usize) -> (&PaneMeta, &[Value]) {
        (
            &self.meta[i],
            &self.values[i * self.width..(i + 1) * self.width],
        )
    }

    /// Every row.
    pub fn iter(&self) -> impl Iterator<Item = (&PaneMeta, &[Value])> {
        self.meta.iter().zip(self.values.chunks(self.width.max(1)))
    }

    /// Appends a row.
    pub fn push(&mut self, meta: PaneMeta, values: &[Value]) {
        debug_assert_eq!(values.len(), self.width);
        self.meta.push(meta);
        self.values.extend_from_slice(values);
    }

    /// Moves every row out as owned [`Pane`]s.
    pub fn take_panes(&mut self) -> Vec<Pane> {
        let out = self
            .iter()
            .map(|(m, v)| Pane {
                meta: m.clone(),
                values: v.into(),
            })
            .collect();
        self.clear();
        out
    }
}

/// Where processing time comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessingTime {
    /// The greatest event time seen so far (replay).
    StreamTime,
    /// Set by the caller through [`Engine::set_processing_time`].
    External,
}

/// Counters a run reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineStats {
    pub events: u64,
    pub late_kept: u64,
    pub late_dropped: u64,
    pub windows_opened: u64,
    pub panes: u64,
    pub retractions: u64,
    pub session_merges: u64,
}

impl EngineStats {
    /// Adds another engine's counters to these.
    pub fn add(&mut self, o: &EngineStats) {
        self.events += o.events;
        self.late_kept += o.late_kept;
        self.late_dropped += o.late_dropped;
        self.windows_opened += o.windows_opened;
        self.panes += o.panes;
        self.retractions += o.retractions;
        self.session_merges += o.session_merges;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimerKind {
    OnTime,
    Expire,
    /// The next window of a hopping key is due (`slot` is the key's
    /// hopping state, `id` its id).
    HopNext,
}

/// Which partials of a hopping key a pane's value is read through
/// (`window::tiles`); other windows ignore it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// On time, in end order.
    OnTime,
    /// At expiry, in end order.
    Closing,
    /// Early panes: windows near the on-time cursor, read aside.
    PeekOnTime,
    /// Anything else (late panes), read aside.
    Peek,
}

/// `Window::hop` of a window that is not a hopping window.
const NO_HOP: u32 = u32::MAX;

/// A deadline of window `slot`, valid while that slot still holds window `id`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timer {
    slot: u32,
    id: u64,
    kind: TimerKind,
}

#[derive(Debug, Clone)]
struct LastPane {
    start: Micros,
    end: Micros,
    pane_index: u32,
    timing: Timing,
    values: Box<[Value]>,
}

#[derive(Debug)]
struct Window {
    /// Unique for the life of the engine; timers name it to detect reuse of the slot.
    id: u64,
    key: EncodedKey,
    key_hash: u64,
    start: Micros,
    end: Micros,
    next_pane: u32,
    live: bool,
    /// The on-time moment has passed (on-time pane fired, or the window was
    /// opened by a late event): from now on only late panes.
    past_on_time: bool,
    dirty: bool,
    in_early_list: bool,
    in_late_list: bool,
    last: Option<Box<LastPane>>,
    /// A hopping window: its key's hopping state, and its window number.
    hop: u32,
    hop_m: i64,
    /// An open tile of a hopping key (its key's hopping state): it gives no
    /// panes, and moves to the key's tiles when the watermark passes its end.
    tile_of: u32,
}

/// The hash of an encoded key in the key index.
#[inline]
pub fn key_hash(b: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut h = rustc_hash::FxHasher::default();
    h.write(b);
    h.finish()
}

/// Entry of the key index: the encoded key and its windows, so that an event
/// finds its window without touching any other memory.
///
/// Aligned to cache lines (an entry is two of them): an entry never spans
/// more lines than its size needs, and the look-ahead fetches exactly its
/// two lines.
#[derive(Debug)]
#[repr(C, align(64))]
struct KeyEntry {
    key: EncodedKey,
    /// This key's windows. A reference whose slot no longer holds that window
    /// is stale and is pruned when the key next opens a window, so that
    /// dropping a window needs no lookup. Three fit in the entry's two lines
    /// (a busy key's open window and the ones before it that the watermark
    /// has not yet closed); a key with more keeps them on the heap, a miss
    /// the look-ahead does not cover.
    windows: SmallVec<[WinRef; 3]>,
}

const _: () = assert!(std::mem::size_of::<KeyEntry>() == 128);

#[derive(Debug, Clone, Copy)]
struct WinRef {
    slot: u32,
    id: u64,
    /// Start when listed (tumbling windows never move).
    start: i64,
}

#[inline]
fn to_val(f: FieldVal<'_>) -> Val<'_> {
    match f {
        FieldVal::Missing | FieldVal::Null | FieldVal::Nested => Val::Null,
        FieldVal::Bool(b) => Val::Bool(b),
        FieldVal::Num(n) => Val::Num(n),
        FieldVal::Str(s) => Val::Str(std::borrow::Cow::Borrowed(s)),
    }
}

#[inline]
fn to_input(f: FieldVal<'_>) -> Input<'_> {
    match f {
        FieldVal::Missing | FieldVal::Null => Input::Missing,
        FieldVal::Nested => Input::Nested,
        FieldVal::Bool(b) => Input::Bool(b),
        FieldVal::Num(n) => Input::Num(n),
        FieldVal::Str(s) => Input::Str(s),
    }
}

/// The operator. See the module documentation.
pub struct Engine {
    window: WindowKind,
    last_tumbling: LastTumbling,
    /// Hopping: the first kept window, and the watermark it is for.
    kept_at: Option<(Micros, i64)>,
    allowed_lateness: Micros,
    early_every: Option<Micros>,
    late: LateTrigger,
    accumulation: Accumulation,
    max_future: Micros,
    plan: PlanRef,
    keys: KeyIndex<KeyEntry>,
    slab: Vec<Window>,
    /// Accumulator rows of the slab's windows (slot `i` owns row `i`):
    /// fixed-size words, `row_words` per row, and variable-size states.
    words: Vec<u64>,
    heavy: Vec<Heavy>,
    row_words: usize,
    row_heavies: usize,
    free: Vec<u32>,
    live_windows: usize,
    /// The source partition whose keys this engine holds.
    partition: u32,
    wm: PartitionWatermark,
    timers: BTreeMap<Micros, Vec<Timer>>,
    early_list: Vec<(u32, u64)>,
    late_list: Vec<(u32, u64)>,
    mode: ProcessingTime,
    now: Micros,
    wall: Micros,
    seq: u64,
    next_window_id: u64,
    filter_bits: Vec<bool>,
    /// Hopping windows: the grid, and the state of each key.
    grid: Option<crate::window::hopping::Grid>,
    hops: Vec<crate::window::hopping::HopKey>,
    hop_free: Vec<u32>,
    /// A hopping window's value, computed for a pane.
    scratch: crate::window::tiles::Row,
    /// A refusal that goes with an event the engine kept (a late event
    /// that missed some of its hopping windows): the caller dead-letters
    /// it too ([`Engine::take_partial_refusal`]).
    partial_refusal: Option<Refusal>,
    /// Replay: events at or after this bound were not read (`--to`).
    input_end: Option<Micros>,
    /// The end of a bounded input is being fired (no hopping tile is dropped).
    finishing: bool,
    pub stats: EngineStats,
}

impl Engine {
    /// An engine for the keys of partition 0 (replay, tests).
    pub fn new(plan: &PlanRef, mode: ProcessingTime) -> Engine {
        Engine::for_partition(plan, mode, 0)
    }

    /// An engine for the keys of source partition `partition`, assigned
    /// now: its watermark starts at -infinity.
    pub fn for_partition(plan: &PlanRef, mode: ProcessingTime, partition: u32) -> Engine {
        let p = &plan.pipeline;
        let n_filters = plan.filters.len();
        Engine {
            window: p.window,
            last_tumbling: LastTumbling::default(),
            kept_at: None,
            allowed_lateness: p.allowed_lateness,
            early_every: p.early_every,
            late: p.late,
            accumulation: p.accumulation,
            max_future: p.max_future,
            plan: plan.clone(),
            keys: KeyIndex::new(),
            slab: Vec::new(),
            words: Vec::new(),
            heavy: Vec::new(),
            row_words: plan.row.words(),
            row_heavies: plan.row.heavies(),
            free: Vec::new(),
            live_windows: 0,
            partition,
            wm: PartitionWatermark::new(p.max_out_of_orderness, p.idle_timeout, WATERMARK_MIN),
            timers: BTreeMap::new(),
            early_list: Vec::new(),
            late_list: Vec::new(),
            mode,
            now: WATERMARK_MIN,
            wall: i64::MAX,
            seq: 0,
            next_window_id: 0,
            filter_bits: vec![false; n_filters],
            grid: match p.window {
                WindowKind::Hopping {
                    size,
                    slide,
                    offset,
                } => Some(crate::window::hopping::Grid::new(size, slide, offset)),
                _ => None,
            },
            hops: Vec::new(),
            hop_free: Vec::new(),
            scratch: crate::window::tiles::Row::empty(&plan.row),
            partial_refusal: None,
            input_end: None,
            finishing: false,
            stats: EngineStats::default(),
        }
    }

    /// The watermark of this engine's partition, which judges lateness
    /// and fires windows of its keys.
    pub fn watermark(&self) -> Micros {
        self.wm.current()
    }

    /// The source partition whose keys this engine holds.
    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// Whether the partition is idle (SPEC 2): its watermark then follows
    /// the floor its owner computes ([`crate::time::watermark::idle_floor`]).
    pub fn is_idle(&self) -> bool {
        self.wm.is_idle()
    }

    /// Current processing time.
    pub fn processing_time(&self) -> Micros {
        self.now
    }

    /// Sets the wall clock used for the `max_future` check.
    pub fn set_wall_clock(&mut self, wall: Micros) {
        self.wall = wall;
    }

    /// Number of windows held now.
    pub fn open_windows(&self) -> usize {
        self.live_windows
    }

    /// Number of distinct keys seen.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Tells whether the partition's consumer is at the end of its log.
    /// Returns true when that changed whether the partition is idle.
    pub fn set_end_of_log(&mut self, at_end: bool) -> bool {
        let now = self.now;
        self.wm.set_end_of_log(at_end, now)
    }

    /// Moves processing time forward (external mode, or tests): fires due
    /// processing-time triggers and re-evaluates idleness (which moves no
    /// watermark by itself: see [`Engine::is_idle`]).
    pub fn set_processing_time(&mut self, now: Micros, out: &mut PaneBuf) {
        if now <= self.now {
            return;
        }
        let prev = self.now;
        self.now = now;
        if prev != WATERMARK_MIN {
            // Ticks are aligned to multiples of the period. Every listed
            // window is handled at the first tick in (prev, now]; later ticks
            // in that span have nothing new to fire.
            if let Some(e) = self.early_every {
                let tick = crate::window::trigger::next_tick(prev, e);
                if tick <= now && !self.early_list.is_empty() {
                    self.fire_tick(tick, true, out);
                }
            }
            if let LateTrigger::Every(e) = self.late {
                let tick = crate::window::trigger::next_tick(prev, e);
                if tick <= now && !self.late_list.is_empty() {
                    self.fire_tick(tick, false, out);
                }
            }
        }
        self.wm.on_processing_time(now);
    }

    /// Raises the watermark to at least `w` (the idle floor, tests) and
    /// fires what completes.
    pub fn advance_watermark(&mut self, w: Micros, out: &mut PaneBuf) {
        if self.wm.advance_to(w) {
            self.fire_timers(out);
        }
    }

    /// End of a bounded input: `W` becomes +infinity and every window fires,
    /// in `end` order (ties in the order the windows were opened).
    pub fn finish(&mut self, out: &mut PaneBuf) {
        if self.grid.is_some() {
            return self.finish_hopping(out);
        }
        self.wm.advance_to(WATERMARK_MAX);
        self.timers.clear();
        self.early_list.clear();
        self.late_list.clear();
        let mut all: Vec<(Micros, u64, u32)> = self
            .slab
            .iter()
            .enumerate()
            .filter(|(_, w)| w.live)
            .map(|(i, w)| (w.end, w.id, i as u32))
            .collect();
        all.sort_unstable();
        for (_, _, slot) in all {
            let timing = if self.slab[slot as usize].past_on_time {
                Timing::Late
            } else {
                Timing::OnTime
            };
            self.emit(slot, timing, true, self.now, Via::Closing, out);
            self.remove_window(slot);
        }
    }

    /// Replay with `--to`: events at or after `end` were not read, so hopping
    /// windows whose newest tile starts there are not emitted (SPEC 2).
    pub fn set_input_end(&mut self, end: Option<Micros>) {
        self.input_end = end;
    }

    /// The refusal that goes with the event just kept, if any (a late event
    /// that missed some of its hopping windows: it is dead-lettered too).
    pub fn take_partial_refusal(&mut self) -> Option<Refusal> {
        self.partial_refusal.take()
    }

    /// Look-ahead, step one: fetch into cache where the index starts
    /// looking for a key of this hash ([`key_hash`]). A hint: nothing changes.
    #[inline]
    pub fn prefetch_key_slot(&self, hash: u64) {
        self.keys.prefetch_slot(hash);
    }

    /// Look-ahead, step three for hopping windows (after step two): fetch
    /// the key's hopping state and its open tiles' rows, which the entry
    /// names. A hint: nothing changes.
    #[inline]
    pub fn prefetch_key_windows(&self, hash: u64) {
        if self.grid.is_none() {
            return;
        }
        if let Some(e) = self.keys.peek_tagged(hash) {
            for r in e.windows.iter().take(3) {
                if r.start == HOP_REF {
                    if let Some(h) = self.hops.get(r.slot as usize) {
                        hopping::fetch_hop_key(h);
                    }
                } else if (r.slot as usize) < self.slab.len() {
                    prefetch(&self.slab[r.slot as usize]);
                    prefetch(
                        self.words
                            .as_ptr()
                            .wrapping_add(r.slot as usize * self.row_words),
                    );
                }
            }
        }
    }

    /// Look-ahead, step four for hopping windows (after step three): fetch
    /// the newest end of the key's tiles, where its event goes.
    #[inline]
    pub fn prefetch_key_tiles(&self, hash: u64) {
        if self.grid.is_none() {
            return;
        }
        if let Some(e) = self.keys.peek_tagged(hash) {
            if let Some(r) = e.windows.first().filter(|r| r.start == HOP_REF) {
                if let Some(h) = self.hops.get(r.slot as usize) {
                    hopping::fetch_newest_tile(&h.tiles);
                }
            }
        }
    }

    /// Look-ahead, step two (some events after step one): fetch the key's
    /// entry.
    #[inline]
    pub fn prefetch_key_entry(&self, hash: u64) {
        self.keys.prefetch_entry(hash);
    }

    /// Processes one event of the engine's partition.
    ///
    /// On `Err` nothing changed except counters: the caller dead-letters the record.
    #[inline]
    pub fn process(&mut self, ev: &EventRef<'_>, out: &mut PaneBuf) -> Result<(), Refusal> {
        self.process_hashed(ev, key_hash(ev.key), out)
    }

    /// [`Engine::process`] for a caller that already hashed the event's key
    /// ([`key_hash`]), e.g. to fetch its entry ahead of time.
    pub fn process_hashed(
        &mut self,
        ev: &EventRef<'_>,
        hash: u64,
        out: &mut PaneBuf,
    ) -> Result<(), Refusal> {
        debug_assert_eq!(hash, key_hash(ev.key));
        let t = ev.time;
        self.admit(ev, self.wall)?;
        if self.mode == ProcessingTime::StreamTime && t > self.now {
            self.set_processing_time(t, out);
        }
        let w = self.wm.current();
        let slot = match self.window {
            WindowKind::Tumbling { size, offset } => {
                let start = self.last_tumbling.start(t, size, offset);
                let end = start.saturating_add(size);
                // Windows are dropped as soon as W passes end + lateness, so a
                // window still listed for a start that is not too late is live.
                if w >= end.saturating_add(self.allowed_lateness) {
                    self.stats.late_dropped += 1;
                    return Err(self.too_late(t, start, end));
                }
                let found = match self.keys.find(hash, |e| short_eq(e.key.bytes(), ev.key)) {
                    Some(e) => e.windows.iter().find(|r| r.start == start).map(|r| r.slot),
                    None => {
                        self.new_key(hash, ev.key);
                        None
                    }
                };
                match found {
                    Some(s) => {
                        debug_assert!(
                            self.slab[s as usize].live && self.slab[s as usize].start == start
                        );
                        s
                    }
                    None => self.open_window(ev.key, hash, start, end),
                }
            }
            WindowKind::Hopping { slide, offset, .. } => {
                // The tile of the event: while it is open (before the
                // watermark passes its end) it is a window of the slab, found
                // and updated as a tumbling window is; once closed it lives
                // with its key's other tiles, and events into it are late.
                let (start, n) = self.last_tumbling.start_and_number(t, slide, offset);
                let end = start.saturating_add(slide);
                // One lookup: the key's open tile for `start` (if in the
                // slab) and its hopping reference (its first entry).
                let (found, hop) = match self.keys.find(hash, |e| short_eq(e.key.bytes(), ev.key)) {
                    Some(e) => (
                        e.windows.iter().find(|r| r.start == start).map(|r| r.slot),
                        Some(e.windows.first().copied().filter(|r| r.start == HOP_REF)),
                    ),
                    None => (None, None),
                };
                if w >= end {
                    return self.process_hop(ev, hash, n, hop, out);
                }
                match found {
                    Some(s) => s,
                    // Without early panes nothing reads an open tile before
                    // it closes: the event goes straight to its key's tiles
                    // and the window it completes fires from a timer of the
                    // key (open tiles in the slab are only left by a
                    // checkpoint that has them).
                    None if self.early_every.is_none() => {
                        return self.process_hop(ev, hash, n, hop, out)
                    }
                    None => self.open_tile(ev.key, hash, start, end),
                }
            }
            WindowKind::Session { gap } => {
                let (ps, pe) = (t, t.saturating_add(gap));
                let meets = match self.keys.find(hash, |e| short_eq(e.key.bytes(), ev.key)) {
                    Some(e) => e.windows.iter().any(|r| {
                        let x = &self.slab[r.slot as usize];
                        self.valid(r.slot, r.id) && sessions_meet((x.start, x.end), (ps, pe))
                    }),
                    None => {
                        self.new_key(hash, ev.key);
                        false
                    }
                };
                if !meets && w >= pe.saturating_add(self.allowed_lateness) {
                    self.stats.late_dropped += 1;
                    return Err(self.too_late(t, ps, pe));
                }
                if meets {
                    self.merge_sessions(hash, ev.key, ps, pe, out)
                } else {
                    self.open_window(ev.key, hash, ps, pe)
                }
            }
        };
        self.stats.events += 1;
        if t < w {
            self.stats.late_kept += 1;
        }
        self.seq += 1;
        let seq = self.seq;
        let (wr, hr) = self.row_range(slot);
        let bits = &self.filter_bits;
        self.plan.row.update(
            &mut self.words[wr],
            &mut self.heavy[hr],
            |s| to_input(ev.field(s)),
            |f| bits[f],
            t,
            seq,
        );
        if self.early_every.is_some() && self.slab[slot as usize].tile_of != NO_HOP {
            self.tile_got_data(slot, ev, t, seq);
        }
        let win = &mut self.slab[slot as usize];
        win.dirty = true;
        let id = win.id;
        // Processing-time and late triggers.
        if win.past_on_time {
            match self.late {
                LateTrigger::EveryEvent => {
                    self.emit(slot, Timing::Late, false, self.now, Via::Peek, out)
                }
                LateTrigger::Every(_) => {
                    if !win.in_late_list {
                        win.in_late_list = true;
                        self.late_list.push((slot, id));
                    }
                }
                LateTrigger::None => {}
            }
        } else if self.early_every.is_some() && !win.in_early_list {
            win.in_early_list = true;
            self.early_list.push((slot, id));
        }
        let now = self.now;
        if self.wm.observe(t, now) {
            self.fire_timers(out);
        }
        Ok(())
    }

    /// The checks that do not depend on any key's state: the event time
    /// against `wall + max_future`, then the `where:` filters and the value
    /// types. `Err` is the record's dead letter; nothing changed. Parallel
    /// replay runs them where it decodes, once per event, and gives the
    /// engines a wall clock that refuses nothing.
    pub fn admit(&mut self, ev: &EventRef<'_>, wall: Micros) -> Result<(), Refusal> {
        let t = ev.time;
        if t > wall.saturating_add(self.max_future) {
            return Err(Refusal::new(
                Reason::FutureTimestamp,
                format!(
                    "event time {} is more than max_future ahead of the wall clock",
                    crate::time::format_rfc3339(t)
                ),
            ));
        }
        // Filters and value checks, before any state changes.
        for (i, f) in self.plan.filters.iter().enumerate() {
            self.filter_bits[i] = f.eval(&|s| to_val(ev.field(s))).truthy();
        }
        let bits = &self.filter_bits;
        if let Some((s, what)) = self.plan.row.check(|s| to_input(ev.field(s)), |f| bits[f]) {
            return Err(Refusal::new(
                Reason::BadValue,
                format!("field {:?} is not {what}", self.field_name(s)),
            ));
        }
        Ok(())
    }

    /// An admitted event ([`Engine::admit`]) of a key another engine holds
    /// (parallel or sharded replay): it moves this engine's clock exactly as
    /// [`Engine::process`] would (processing time in stream-time mode, then
    /// the watermark), and fires what that completes, without touching any
    /// key. The result equals one engine's: an event the owner refuses as
    /// too late is older than the greatest time already seen, so observing
    /// it moves nothing either way (docs/semantics.md, section 2).
    #[inline]
    pub fn observe_foreign(&mut self, t: Micros, out: &mut PaneBuf) {
        if self.mode == ProcessingTime::StreamTime && t > self.now {
            self.set_processing_time(t, out);
        }
        let now = self.now;
        if self.wm.observe(t, now) {
            self.fire_timers(out);
        }
    }

    fn field_name(&self, slot: usize) -> &str {
        self.plan
            .decode
            .slot_names
            .get(slot)
            .map_or("?", String::as_str)
    }

    fn too_late(&self, t: Micros, start: Micros, end: Micros) -> Refusal {
        Refusal::new(
            Reason::TooLate,
            format!(
                "event time {} falls in window [{}, {}) which was dropped at watermark {}",
                crate::time::format_rfc3339(t),
                crate::time::format_rfc3339(start),
                crate::time::format_rfc3339(end),
                crate::time::format_rfc3339(self.wm.current())
            ),
        )
    }

    fn new_key(&mut self, hash: u64, key: &[u8]) {
        let entry = KeyEntry {
            key: EncodedKey::new(key),
            windows: SmallVec::new(),
        };
        self.keys
            .insert_unique(hash, entry, |e| key_hash(e.key.bytes()));
    }

    /// Opens a window of `key` and lists it under the key.
    fn open_window(&mut self, key: &[u8], hash: u64, start: Micros, end: Micros) -> u32 {
        let w = self.wm.current();
        // A window opened when already complete gets no on-time pane: its data is late.
        let past = w >= end;
        let slot = self.alloc_window(key, hash, start, end, past);
        let id = self.slab[slot as usize].id;
        self.schedule(slot, id, end, past);
        let slab = &self.slab;
        let tumbling_gone = match self.window {
            WindowKind::Tumbling { size, .. } => {
                Some((size.saturating_add(self.allowed_lateness), w))
            }
            WindowKind::Session { .. } | WindowKind::Hopping { .. } => None,
        };
        if let Some(e) = self.keys.find_mut(hash, |e| short_eq(e.key.bytes(), key)) {
            e.windows.retain(|r| match tumbling_gone {
                // Dropped once W passed its end plus lateness: no slab access needed.
                Some((span, w)) => r.start.saturating_add(span) > w,
                None => slab[r.slot as usize].live && slab[r.slot as usize].id == r.id,
            });
            let r = WinRef { slot, id, start };
            if tumbling_gone.is_some() {
                // Newest first: in-order events mostly hit the newest window.
                e.windows.insert(0, r);
            } else {
                e.windows.push(r);
            }
        }
        slot
    }

    /// A new window in the slab with an empty row, listed nowhere and with
    /// no deadline yet.
    fn alloc_window(
        &mut self,
        key: &[u8],
        hash: u64,
        start: Micros,
        end: Micros,
        past: bool,
    ) -> u32 {
        let id = self.next_window_id;
        self.next_window_id += 1;
        self.stats.windows_opened += 1;
        self.live_windows += 1;
        match self.free.pop() {
            Some(s) => {
                let win = &mut self.slab[s as usize];
                win.id = id;
                win.key = EncodedKey::new(key);
                win.key_hash = hash;
                win.start = start;
                win.end = end;
                win.next_pane = 0;
                win.live = true;
                win.past_on_time = past;
                win.dirty = false;
                win.in_early_list = false;
                win.in_late_list = false;
                win.last = None;
                win.hop = NO_HOP;
                win.tile_of = NO_HOP;
                let (wr, hr) = self.row_range(s);
                self.plan
                    .row
                    .reset(&mut self.words[wr], &mut self.heavy[hr]);
                s
            }
            None => {
                self.slab.push(Window {
                    id,
                    key: EncodedKey::new(key),
                    key_hash: hash,
                    start,
                    end,
                    next_pane: 0,
                    live: true,
                    past_on_time: past,
                    dirty: false,
                    in_early_list: false,
                    in_late_list: false,
                    last: None,
                    hop: NO_HOP,
                    hop_m: 0,
                    tile_of: NO_HOP,
                });
                self.plan.row.push_empty(&mut self.words, &mut self.heavy);
                (self.slab.len() - 1) as u32
            }
        }
    }

    /// Registers a window's next deadline: on time at `end`, or expiry at
    /// `end + allowed_lateness` once past its on-time moment.
    fn schedule(&mut self, slot: u32, id: u64, end: Micros, past_on_time: bool) {
        if past_on_time {
            self.add_timer(
                end.saturating_add(self.allowed_lateness),
                slot,
                id,
                TimerKind::Expire,
            );
        } else {
            self.add_timer(end, slot, id, TimerKind::OnTime);
        }
    }

    #[inline]
    fn add_timer(&mut self, at: Micros, slot: u32, id: u64, kind: TimerKind) {
        self.timers
            .entry(at)
            .or_default()
            .push(Timer { slot, id, kind });
    }

    /// Merges the proto-session `[ps, pe)` with every session of `key` it
    /// meets; the earliest-starting session survives.
    fn merge_sessions(
        &mut self,
        hash: u64,
        key: &[u8],
        ps: Micros,
        pe: Micros,
        out: &mut PaneBuf,
    ) -> u32 {
        // Sessions of one key never meet each other; sorted by start, the
        // ones the new interval bridges form one run.
        let mut sessions: SmallVec<[u32; 4]> =
            match self.keys.find_mut(hash, |e| short_eq(e.key.bytes(), key)) {
                Some(e) => std::mem::take(&mut e.windows)
                    .into_iter()
                    .filter(|r| self.valid(r.slot, r.id))
                    .map(|r| r.slot)
                    .collect(),
                None => SmallVec::new(),
            };
        sessions.sort_by_key(|&s| self.slab[s as usize].start);
        let bounds: SmallVec<[(Micros, Micros); 4]> = sessions
            .iter()
            .map(|&s| (self.slab[s as usize].start, self.slab[s as usize].end))
            .collect();
        let (at, (lo, hi)) = crate::window::session::merging(&bounds, (ps, pe))
            .expect("called for an interval that meets a session");
        let members: Vec<u32> = at.iter().map(|&i| sessions[i]).collect();
        let survivor = members[0];
        self.stats.session_merges += (members.len() - 1) as u64;
        for &gone in &members[1..] {
            if self.accumulation == Accumulation::AccumulatingAndRetracting {
                if let Some(last) = self.slab[gone as usize].last.take() {
                    let k = self.slab[gone as usize].key.clone();
                    self.push_retraction(k, &last, out);
                }
            }
            self.merge_rows(survivor, gone);
            let gone_dirty = self.slab[gone as usize].dirty;
            self.slab[survivor as usize].dirty |= gone_dirty;
            self.release(gone);
        }
        sessions.retain(|s| !members[1..].contains(s));
        let listed = sessions
            .iter()
            .map(|&s| {
                let x = &self.slab[s as usize];
                WinRef {
                    slot: s,
                    id: x.id,
                    start: x.start,
                }
            })
            .collect();
        if let Some(e) = self.keys.find_mut(hash, |e| short_eq(e.key.bytes(), key)) {
            e.windows = listed;
        }
        let w = self.wm.current();
        let surv = &mut self.slab[survivor as usize];
        let changed = hi != surv.end || members.len() > 1;
        surv.start = lo;
        surv.end = hi;
        let (id, past) = (surv.id, surv.past_on_time);
        if changed {
            // A survivor not past its on-time moment ended after W, and the
            // merged session ends no earlier.
            debug_assert!(past || w < hi);
            self.schedule(survivor, id, hi, past);
        }
        survivor
    }

    fn push_retraction(&mut self, key: EncodedKey, last: &LastPane, out: &mut PaneBuf) {
        self.stats.retractions += 1;
        let meta = PaneMeta {
            key,
            window_start: last.start,
            window_end: last.end,
            pane_index: last.pane_index,
            timing: last.timing,
            is_final: false,
            retraction: true,
            partition: self.partition,
            emitted_at: self.now,
            watermark: self.visible_watermark(),
        };
        out.push(meta, &last.values);
    }

    fn visible_watermark(&self) -> Option<Micros> {
        let w = self.wm.current();
        (w != WATERMARK_MIN && w != WATERMARK_MAX).then_some(w)
    }

    /// Emits a pane of the window in `slot` (a hopping window's value is
    /// read from its key's tiles `via` the given partials).
    fn emit(
        &mut self,
        slot: u32,
        timing: Timing,
        is_final: bool,
        emitted_at: Micros,
        via: Via,
        out: &mut PaneBuf,
    ) {
        let watermark = self.visible_watermark();
        let retracting = self.accumulation == Accumulation::AccumulatingAndRetracting;
        let discarding = self.accumulation == Accumulation::Discarding;
        let win = &mut self.slab[slot as usize];
        if retracting {
            if let Some(last) = &win.last {
                self.stats.retractions += 1;
                let meta = PaneMeta {
                    key: win.key.clone(),
                    window_start: last.start,
                    window_end: last.end,
                    pane_index: last.pane_index,
                    timing: last.timing,
                    is_final: false,
                    retraction: true,
                    partition: self.partition,
                    emitted_at,
                    watermark,
                };
                out.push(meta, &last.values);
            }
        }
        self.stats.panes += 1;
        out.meta.push(PaneMeta {
            key: win.key.clone(),
            window_start: win.start,
            window_end: win.end,
            pane_index: win.next_pane,
            timing,
            is_final,
            retraction: false,
            partition: self.partition,
            emitted_at,
            watermark,
        });
        let base = out.values.len();
        let (start, end) = (win.start, win.end);
        let (wr, hr) = (
            slot as usize * self.row_words..(slot as usize + 1) * self.row_words,
            slot as usize * self.row_heavies..(slot as usize + 1) * self.row_heavies,
        );
        let (hop, hop_m, first) = (win.hop, win.hop_m, win.next_pane == 0);
        if hop != NO_HOP && (!discarding || first) {
            // The window's events are its tiles' (in discarding mode, only
            // its first pane: later ones hold what came since, in its row).
            self.hop_value(hop, hop_m, via);
            self.write_scratch(start, end, out);
        } else {
            self.plan.write_values(
                &self.words[wr.clone()],
                &self.heavy[hr.clone()],
                start,
                end,
                &mut out.values,
            );
        }
        let win = &mut self.slab[slot as usize];
        if retracting {
            win.last = Some(Box::new(LastPane {
                start: win.start,
                end: win.end,
                pane_index: win.next_pane,
                timing,
                values: out.values[base..].into(),
            }));
        }
        win.next_pane += 1;
        win.dirty = false;
        if discarding {
            self.plan
                .row
                .reset(&mut self.words[wr], &mut self.heavy[hr]);
        }
    }

    /// The values of a hopping window read into `self.scratch`, as a pane's.
    fn write_scratch(&mut self, start: Micros, end: Micros, out: &mut PaneBuf) {
        self.plan.write_values(
            &self.scratch.words,
            &self.scratch.heavy,
            start,
            end,
            &mut out.values,
        );
    }

    /// Drops a window that emitted its final pane (its key's list entry goes stale).
    fn remove_window(&mut self, slot: u32) {
        self.release(slot);
    }

    fn release(&mut self, slot: u32) {
        let w = &mut self.slab[slot as usize];
        w.live = false;
        w.last = None;
        let (hop, m) = (w.hop, w.hop_m);
        self.live_windows -= 1;
        self.free.push(slot);
        if hop != NO_HOP {
            self.hops[hop as usize].remove_window(m);
            self.hop_cleanup(hop);
        }
    }

    /// The word and heavy ranges of the row of window `slot`.
    #[inline]
    fn row_range(&self, slot: u32) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
        let s = slot as usize;
        (
            s * self.row_words..(s + 1) * self.row_words,
            s * self.row_heavies..(s + 1) * self.row_heavies,
        )
    }

    /// Folds the row of window `src` into that of window `dst`.
    fn merge_rows(&mut self, dst: u32, src: u32) {
        let (dw, dh) = self.row_range(dst);
        let (sw, sh) = self.row_range(src);
        let src_words: SmallVec<[u64; 16]> = self.words[sw].iter().copied().collect();
        let src_heavy: Vec<Heavy> = self.heavy[sh].to_vec();
        self.plan.row.merge(
            (&mut self.words[dw], &mut self.heavy[dh]),
            (&src_words, &src_heavy),
        );
    }

    #[inline]
    fn valid(&self, slot: u32, id: u64) -> bool {
        let w = &self.slab[slot as usize];
        w.live && w.id == id
    }

    /// Fires the early (or late-every) tick at processing time `tick`.
    fn fire_tick(&mut self, tick: Micros, early: bool, out: &mut PaneBuf) {
        let mut list = std::mem::take(if early {
            &mut self.early_list
        } else {
            &mut self.late_list
        });
        if early && self.grid.is_some() {
            // An open tile with new data makes the window whose newest tile
            // it is dirty; that window then fires once, whatever else
            // dirtied it since the last tick.
            self.tiles_to_windows(&mut list);
        }
        for &(slot, id) in &list {
            if !self.valid(slot, id) {
                continue;
            }
            let win = &mut self.slab[slot as usize];
            if early {
                win.in_early_list = false;
            } else {
                win.in_late_list = false;
            }
            if win.tile_of != NO_HOP {
                continue;
            }
            if win.dirty && (win.past_on_time != early) {
                let timing = if early { Timing::Early } else { Timing::Late };
                let via = if early { Via::PeekOnTime } else { Via::Peek };
                self.emit(slot, timing, false, tick, via, out);
            }
        }
        list.clear();
        let reuse = if early {
            &mut self.early_list
        } else {
            &mut self.late_list
        };
        if reuse.is_empty() {
            *reuse = list;
        }
    }

    /// The on-time pane of the window in `slot`: final when the window also
    /// expires now, else it waits for late data until its expiry.
    fn fire_on_time(&mut self, slot: u32, out: &mut PaneBuf) {
        let w = self.wm.current();
        let (id, end) = {
            let win = &self.slab[slot as usize];
            (win.id, win.end)
        };
        let expiry = end.saturating_add(self.allowed_lateness);
        if expiry <= w {
            self.emit(slot, Timing::OnTime, true, self.now, Via::OnTime, out);
            self.remove_window(slot);
        } else {
            self.emit(slot, Timing::OnTime, false, self.now, Via::OnTime, out);
            self.slab[slot as usize].past_on_time = true;
            self.add_timer(expiry, slot, id, TimerKind::Expire);
        }
    }

    /// Fires every event-time timer due at the current watermark, in time order.
    fn fire_timers(&mut self, out: &mut PaneBuf) {
        let w = self.wm.current();
        while let Some(entry) = self.timers.first_entry() {
            let at = *entry.key();
            if at > w {
                break;
            }
            let mut timers = entry.remove();
            // The window a key's timer at this deadline is for (hopping;
            // none when the deadline is not a window's end).
            let due = self.grid.and_then(|g| {
                let m = g.window_of_end(at);
                (g.at(m) == at).then_some(m)
            });
            // Deadlines that fall together fire in window-opening order, which
            // a checkpoint keeps (the order timers were added in does not
            // survive a restore, and the output must not depend on it).
            // A hopping key's next window fires after the tiles and windows
            // due with it (a tile closing first joins the window).
            // The kind breaks ties, so that the order is total and an
            // unstable sort gives the one order.
            let order = |t: &Timer| (t.kind == TimerKind::HopNext, t.id, t.kind as u8);
            if !timers.is_sorted_by_key(order) {
                timers.sort_unstable_by_key(order);
            }
            for (i, &t) in timers.iter().enumerate() {
                if self.grid.is_some() {
                    self.prefetch_tile_close(&timers, i);
                }
                if t.kind == TimerKind::HopNext {
                    if let Some(m) = due {
                        self.fire_hop_next(t.slot, t.id, m, out);
                    }
                    continue;
                }
                if !self.valid(t.slot, t.id) {
                    continue;
                }
                let (end, past) = {
                    let win = &self.slab[t.slot as usize];
                    (win.end, win.past_on_time)
                };
                let expiry = end.saturating_add(self.allowed_lateness);
                match t.kind {
                    TimerKind::OnTime => {
                        if past || end != at {
                            continue; // stale: the session grew, or already fired
                        }
                        if self.slab[t.slot as usize].tile_of != NO_HOP {
                            self.close_tile(t.slot, Some(out));
                            continue;
                        }
                        self.fire_on_time(t.slot, out);
                    }
                    TimerKind::Expire => {
                        if !past || expiry != at {
                            continue;
                        }
                        self.emit(t.slot, Timing::Late, true, self.now, Via::Closing, out);
                        self.remove_window(t.slot);
                    }
                    TimerKind::HopNext => unreachable!("handled above"),
                }
            }
        }
    }
}
