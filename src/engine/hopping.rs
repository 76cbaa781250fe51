//! The engine's side of hopping windows: events go to their key's tiles
//! (`window::hopping`, `window::tiles`); the windows that differ from the
//! one before them fire in end order from one timer per key; a window
//! exists in the slab only while it has panes to give (opened early, fired
//! and kept for late data, or opened late), and its value is read from the
//! tiles when a pane fires.

use smallvec::SmallVec;

use super::{to_input, Engine, PaneBuf, TimerKind, Timing, Via, WinRef, NO_HOP};

/// The start that marks a key's reference to its hopping state (open tiles'
/// references carry their starts).
pub(super) const HOP_REF: Micros = i64::MIN;
use crate::config::{Accumulation, LateTrigger};
use crate::event::{short_eq, EventRef, Reason, Refusal};
use crate::time::watermark::WATERMARK_MAX;
use crate::time::Micros;
use crate::window::hopping::{Grid, HopKey};
use crate::window::tiles::{window_value, Use};

/// Look-ahead: the lines of a key's hopping state an event reads (the
/// first three of [`HopKey`]'s six).
#[inline]
pub(super) fn fetch_hop_key(k: &HopKey) {
    let p = (k as *const HopKey).cast::<u8>();
    crate::mem::prefetch(p);
    crate::mem::prefetch(p.wrapping_add(64));
    crate::mem::prefetch(p.wrapping_add(128));
}

/// Look-ahead: the newest tile's number and row, where events and the
/// window it completes go.
#[inline]
pub(super) fn fetch_newest_tile(t: &crate::window::tiles::Tiles) {
    let p = t.newest_ptr();
    crate::mem::prefetch(p);
    crate::mem::prefetch(p.cast::<u8>().wrapping_add(64));
}

/// Timers whose keys' state is read ahead together (see `warm_hop_block`).
const HOP_BLOCK: usize = 32;

impl Engine {
    fn grid(&self) -> Grid {
        self.grid.expect("a hopping pipeline has a grid")
    }

    /// The first window number not yet expired at watermark `w`: windows
    /// below it are gone.
    fn first_kept_window(&self, w: Micros) -> i64 {
        let g = self.grid();
        if w == crate::time::watermark::WATERMARK_MIN {
            return i64::MIN / 4;
        }
        // Window m is kept while at(m) + lateness > w.
        g.window_of_end(w.saturating_sub(self.allowed_lateness))
            .saturating_add(1)
    }

    /// The hopping state of a key, created when new. Its reference is the
    /// key's first entry, marked by a start of `i64::MIN` (open tiles follow).
    pub(super) fn hop_of(&mut self, hash: u64, key: &[u8]) -> u32 {
        let found = self
            .keys
            .find(hash, |e| short_eq(e.key.bytes(), key))
            .map(|e| e.windows.first().copied().filter(|r| r.start == HOP_REF));
        self.hop_from(found, hash, key)
    }

    /// [`Engine::hop_of`] after the key's lookup: `found` is `None` for a
    /// key not in the table, else its hopping reference if it has one.
    pub(super) fn hop_from(&mut self, found: Option<Option<WinRef>>, hash: u64, key: &[u8]) -> u32 {
        let found = match found {
            Some(f) => f,
            None => {
                self.new_key(hash, key);
                None
            }
        };
        if let Some(r) = found {
            let h = &self.hops[r.slot as usize];
            if h.live && h.id == r.id {
                return r.slot;
            }
        }
        let id = self.next_window_id;
        self.next_window_id += 1;
        let state = HopKey::new(id, crate::event::EncodedKey::new(key), hash);
        let slot = match self.hop_free.pop() {
            Some(s) => {
                self.hops[s as usize] = state;
                s
            }
            None => {
                self.hops.push(state);
                (self.hops.len() - 1) as u32
            }
        };
        if let Some(e) = self.keys.find_mut(hash, |e| short_eq(e.key.bytes(), key)) {
            let r = WinRef {
                slot,
                id,
                start: HOP_REF,
            };
            if e.windows.first().is_some_and(|r| r.start == HOP_REF) {
                e.windows[0] = r;
            } else {
                e.windows.insert(0, r);
            }
        }
        slot
    }

    /// Opens tile `[start, end)` of a key as a window of the slab (events
    /// find it as they find a tumbling window); it closes at `end`.
    pub(super) fn open_tile(&mut self, key: &[u8], hash: u64, start: Micros, end: Micros) -> u32 {
        let h = self.hop_of(hash, key);
        let slot = self.alloc_window(key, hash, start, end, false);
        let id = self.slab[slot as usize].id;
        self.slab[slot as usize].tile_of = h;
        self.hops[h as usize].open_tiles += 1;
        self.schedule(slot, id, end, false);
        let w = self.wm.current();
        let slide = self.grid().slide;
        if let Some(e) = self.keys.find_mut(hash, |e| short_eq(e.key.bytes(), key)) {
            // Closed tiles' entries are stale once the watermark passed their end.
            e.windows
                .retain(|r| r.start == HOP_REF || r.start.saturating_add(slide) > w);
            e.windows.push(WinRef { slot, id, start });
        }
        slot
    }

    /// Hopping windows: the closed tiles held and the bytes of their state
    /// (rows, tile numbers, the cursors' partials), for memory reports.
    pub fn tile_memory(&self) -> Option<(u64, u64)> {
        self.grid?;
        let mut n = 0u64;
        let mut bytes = 0u64;
        for k in self.hops.iter().filter(|k| k.live) {
            n += k.tiles.len() as u64;
            bytes += (k.tiles.bytes()
                + k.on_time.bytes()
                + k.closing.as_ref().map_or(0, |c| c.bytes())) as u64;
        }
        Some((n, bytes))
    }

    /// Look-ahead for a batch of deadlines (a window boundary closes a tile
    /// of every active key at once): what closing the tiles of timers a few
    /// places ahead will read is fetched into cache in stages that never
    /// wait on memory (the tile's window, then its key's hopping state, then
    /// the key's newest tile and running prefix), so their misses overlap.
    #[inline]
    pub(super) fn prefetch_tile_close(&self, timers: &[super::Timer], i: usize) {
        use crate::mem::prefetch as fetch;
        // A key's newest tile, its running prefix and where its next
        // window's suffix is.
        let fetch_newest = |k: &HopKey| {
            fetch_newest_tile(&k.tiles);
            fetch(k.on_time.prefix_ptr());
            fetch(k.on_time.suffix_ptr());
        };
        // Keys' next windows (events go straight to the tiles without
        // early panes) are read in blocks ahead (`warm_hop_block`).
        if i % HOP_BLOCK == 0 {
            let end = (i + HOP_BLOCK).min(timers.len());
            self.warm_hop_block(&timers[i..end]);
        }
        if let Some(t) = timers.get(i + 12) {
            if t.kind != TimerKind::HopNext {
                fetch(&self.slab[t.slot as usize]);
            }
        }
        if let Some(t) = timers.get(i + 6) {
            if t.kind != TimerKind::HopNext {
                let win = &self.slab[t.slot as usize];
                if win.tile_of != NO_HOP {
                    fetch(&self.hops[win.tile_of as usize]);
                    fetch(
                        self.words
                            .as_ptr()
                            .wrapping_add(t.slot as usize * self.row_words),
                    );
                }
            }
        }
        if let Some(t) = timers.get(i + 2) {
            if t.kind != TimerKind::HopNext {
                let win = &self.slab[t.slot as usize];
                if win.tile_of != NO_HOP {
                    fetch_newest(&self.hops[win.tile_of as usize]);
                }
            }
        }
    }

    /// Look-ahead for the keys whose next windows fire among `timers`: their
    /// state's six lines, then their newest and oldest tiles, running
    /// prefixes and suffixes, read in two passes of loads that do not wait
    /// on each other, so that their misses (and the page walks of keys
    /// spread over many pages) overlap, instead of each firing waiting on
    /// its own chain of them.
    fn warm_hop_block(&self, timers: &[super::Timer]) {
        let keys = || {
            timers
                .iter()
                .filter(|t| t.kind == TimerKind::HopNext)
                .filter_map(|t| self.hops.get(t.slot as usize))
        };
        // SAFETY (both passes): each read is of a live object's own memory:
        // a `HopKey`'s six lines (it is 384 bytes, 64-aligned), and the
        // first word of a tile, prefix or suffix only where one exists.
        let mut acc = 0u64;
        for k in keys() {
            let p = (k as *const HopKey).cast::<u64>();
            for line in 0..6 {
                acc ^= unsafe { std::ptr::read_volatile(p.wrapping_add(line * 8)) };
            }
        }
        for k in keys() {
            if !k.tiles.is_empty() {
                acc ^= unsafe { std::ptr::read_volatile(k.tiles.newest_ptr()) };
                acc ^= unsafe { std::ptr::read_volatile(k.tiles.tile_ptr(0)) };
            }
            if let Some(p) = k.on_time.prefix_row() {
                acc ^= unsafe { std::ptr::read_volatile(p) };
            }
            if let Some(p) = k.on_time.suffix_row() {
                acc ^= unsafe { std::ptr::read_volatile(p) };
            }
        }
        std::hint::black_box(acc);
    }

    /// The watermark passed an open tile's end: it joins its key's tiles,
    /// and the window whose newest tile it is comes due.
    /// (`out: None`: at the end of a bounded input, where the window only
    /// comes due: every window fires then.)
    pub(super) fn close_tile(&mut self, slot: u32, out: Option<&mut PaneBuf>) {
        let g = self.grid();
        let (h, n) = {
            let win = &self.slab[slot as usize];
            (win.tile_of, g.tile(win.start))
        };
        let (wr, hr) = self.row_range(slot);
        {
            let l = &self.plan.row;
            let key = &mut self.hops[h as usize];
            if key.tiles.last().is_none_or(|x| x < n) {
                key.tiles.push(l, n, &self.words[wr], &mut self.heavy[hr]);
            } else {
                let (pos, _) = key.tiles.find_or_insert(l, n);
                let (tw, th) = key.tiles.row_mut(l, pos);
                tw.copy_from_slice(&self.words[wr]);
                th.clone_from_slice(&self.heavy[hr]);
            }
            key.invalidate(n, g.k);
            key.open_tiles -= 1;
        }
        self.release(slot);
        // Its window is due now (this is its end): fired at once, unless a
        // window before it is still due (then it comes in turn).
        let (id, next) = {
            let k = &self.hops[h as usize];
            (k.id, k.next)
        };
        match (next, out) {
            (Some(x), _) if x < n + 1 => self.hop_schedule(h, n + 1),
            (_, None) => self.hops[h as usize].next = Some(n + 1),
            (_, Some(out)) => {
                self.hops[h as usize].next = Some(n + 1);
                self.fire_hop_next(h, id, n + 1, out);
            }
        }
    }

    /// An event went to an open tile while early panes are on: in
    /// discarding mode the windows that exist and hold the tile keep what
    /// came since their last pane.
    pub(super) fn tile_got_data(&mut self, slot: u32, ev: &EventRef<'_>, t: Micros, seq: u64) {
        if self.accumulation != Accumulation::Discarding {
            return;
        }
        let g = self.grid();
        let (h, n) = {
            let win = &self.slab[slot as usize];
            (win.tile_of, g.tile(win.start))
        };
        let holding: SmallVec<[(i64, u32); 4]> =
            self.hops[h as usize].windows_holding(n, g.k).collect();
        for (_, w) in holding {
            let (wr, hr) = self.row_range(w);
            let bits = &self.filter_bits;
            self.plan.row.update(
                &mut self.words[wr],
                &mut self.heavy[hr],
                |s| to_input(ev.field(s)),
                |f| bits[f],
                t,
                seq,
            );
        }
    }

    /// At an early tick: each open tile with new data in `list` makes the
    /// window whose newest tile it is (opened when new) dirty and listed.
    pub(super) fn tiles_to_windows(&mut self, list: &mut Vec<(u32, u64)>) {
        let g = self.grid();
        let tiles: SmallVec<[u32; 8]> = list
            .iter()
            .filter(|&&(s, id)| self.valid(s, id) && self.slab[s as usize].tile_of != NO_HOP)
            .map(|&(s, _)| s)
            .collect();
        for slot in tiles {
            let (h, n, dirty) = {
                let win = &mut self.slab[slot as usize];
                let d = win.dirty;
                win.dirty = false;
                (win.tile_of, g.tile(win.start), d)
            };
            if !dirty {
                continue;
            }
            let w = match self.hops[h as usize].window(n + 1) {
                Some(w) => w,
                None => self.open_hop_window(h, n + 1, false),
            };
            let win = &mut self.slab[w as usize];
            win.dirty = true;
            if !win.in_early_list {
                win.in_early_list = true;
                list.push((w, win.id));
            }
        }
    }

    /// Opens window `m` of hopping key `h` in the slab (for its panes).
    /// A window past its on-time moment waits for its expiry.
    pub(super) fn open_hop_window(&mut self, h: u32, m: i64, past: bool) -> u32 {
        let g = self.grid();
        let (start, end) = g.bounds(m);
        let (key, hash) = {
            let k = &self.hops[h as usize];
            (k.key.clone(), k.key_hash)
        };
        let slot = self.alloc_window(key.bytes(), hash, start, end, past);
        let win = &mut self.slab[slot as usize];
        win.hop = h;
        win.hop_m = m;
        let id = win.id;
        self.hops[h as usize].add_window(m, slot);
        if past {
            self.add_timer(
                end.saturating_add(self.allowed_lateness),
                slot,
                id,
                TimerKind::Expire,
            );
        }
        slot
    }

    /// Schedules the key's next window to fire on time, if it comes before
    /// the one scheduled.
    fn hop_schedule(&mut self, h: u32, m: i64) {
        let g = self.grid();
        let k = &mut self.hops[h as usize];
        if k.next.is_none_or(|x| m < x) {
            k.next = Some(m);
            let id = k.id;
            self.add_timer(g.at(m), h, id, TimerKind::HopNext);
        }
    }

    /// A window's value into `self.scratch` (see `window::tiles`).
    pub(super) fn hop_value(&mut self, h: u32, m: i64, via: Via) {
        let k = self.grid().k;
        let key = &mut self.hops[h as usize];
        let how = match via {
            Via::OnTime | Via::Closing => Use::Advance,
            Via::PeekOnTime | Via::Peek => Use::Peek,
        };
        if matches!(via, Via::Closing | Via::Peek) {
            key.closing();
        }
        let cur = match via {
            Via::OnTime | Via::PeekOnTime => &mut key.on_time,
            Via::Closing | Via::Peek => key.closing.as_deref_mut().expect("made above"),
        };
        window_value(
            &key.tiles,
            &self.plan.row,
            k,
            m - k,
            cur,
            how,
            &mut self.scratch,
        );
        if via == Via::PeekOnTime {
            // An early pane: the window's newest tiles may still be open.
            let (hash, key) = (key.key_hash, key.key.clone());
            let g = self.grid();
            let (lo, hi) = g.bounds(m);
            let open: SmallVec<[u32; 4]> = match self.keys.find(hash, |e| e.key == key) {
                Some(e) => e
                    .windows
                    .iter()
                    .filter(|r| r.start != HOP_REF && r.start >= lo && r.start < hi)
                    .map(|r| r.slot)
                    .collect(),
                None => SmallVec::new(),
            };
            for s in open {
                let win = &self.slab[s as usize];
                if win.live && win.tile_of == h {
                    let (wr, hr) = self.row_range(s);
                    self.plan.row.merge(
                        (&mut self.scratch.words, &mut self.scratch.heavy),
                        (&self.words[wr], &self.heavy[hr]),
                    );
                }
            }
        }
    }

    /// An event of a hopping pipeline (after the checks every event passes),
    /// of tile `n` (`grid.tile(ev.time)`), straight to its key's tiles.
    pub(super) fn process_hop(
        &mut self,
        ev: &EventRef<'_>,
        hash: u64,
        n: i64,
        found: Option<Option<WinRef>>,
        out: &mut PaneBuf,
    ) -> Result<(), Refusal> {
        let g = self.grid();
        let (t, w) = (ev.time, self.wm.current());
        debug_assert_eq!(n, g.tile(t));
        // The event belongs to windows n+1 ..= n+k; those below `kept` are
        // gone (remembered for the watermark it was found at).
        let kept = match self.kept_at {
            Some((at, kept)) if at == w => kept,
            _ => {
                let kept = self.first_kept_window(w);
                self.kept_at = Some((w, kept));
                kept
            }
        };
        if n + g.k < kept {
            self.stats.late_dropped += 1;
            let (start, end) = g.bounds(n + g.k);
            return Err(self.too_late(t, start, end));
        }
        let missed = (kept - (n + 1)).clamp(0, g.k);
        let h = self.hop_from(found, hash, ev.key);
        let (pos, new_tile) = {
            let row = &self.plan.row;
            let key = &mut self.hops[h as usize];
            let (pos, new) = key.tiles.find_or_insert(row, n);
            key.invalidate(n, g.k);
            (pos, new)
        };
        self.stats.events += 1;
        if t < w {
            self.stats.late_kept += 1;
        }
        self.seq += 1;
        let seq = self.seq;
        {
            let bits = &self.filter_bits;
            let (tw, th) = self.hops[h as usize].tiles.row_mut(&self.plan.row, pos);
            self.plan
                .row
                .update(tw, th, |s| to_input(ev.field(s)), |f| bits[f], t, seq);
        }
        if missed > 0 {
            self.partial_refusal = Some(Refusal::new(
                Reason::TooLate,
                format!(
                    "event time {} missed {missed} of its {} windows, dropped at watermark {} (it was added to the others)",
                    crate::time::format_rfc3339(t),
                    g.k,
                    crate::time::format_rfc3339(w)
                ),
            ));
        }
        // The windows that exist and hold the tile see the event.
        let holding: SmallVec<[(i64, u32); 4]> = if self.hops[h as usize].windows.is_empty() {
            SmallVec::new()
        } else {
            self.hops[h as usize].windows_holding(n, g.k).collect()
        };
        for (_, slot) in holding {
            if self.accumulation == Accumulation::Discarding {
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
            }
            self.touch(slot, out);
        }
        // Some windows of the event expired: the first kept one now differs
        // from the (final) one before it, and gives a pane.
        if missed > 0 {
            if g.at(kept) <= w {
                if self.hops[h as usize].window(kept).is_none() {
                    let slot = self.open_hop_window(h, kept, true);
                    self.touch(slot, out);
                }
            } else {
                self.hop_schedule(h, kept);
            }
        }
        // A new tile: its two windows now differ from the ones before them.
        if new_tile {
            for m in [n + 1, n + 1 + g.k] {
                if g.at(m) <= w {
                    // Complete already: a late window, while it is kept.
                    if m >= kept && self.hops[h as usize].window(m).is_none() {
                        let slot = self.open_hop_window(h, m, true);
                        self.touch(slot, out);
                    }
                } else {
                    self.hop_schedule(h, m);
                }
            }
        }
        let now = self.now;
        if self.wm.observe(t, now) {
            self.fire_timers(out);
        }
        Ok(())
    }

    /// A window got data: late panes or early panes per the triggers.
    fn touch(&mut self, slot: u32, out: &mut PaneBuf) {
        let win = &mut self.slab[slot as usize];
        win.dirty = true;
        let id = win.id;
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
    }

    /// The timer of hopping key `h` for window `m` (the deadline is its end).
    pub(super) fn fire_hop_next(&mut self, h: u32, id: u64, m: i64, out: &mut PaneBuf) {
        let g = self.grid();
        {
            let k = &self.hops[h as usize];
            if !k.live || k.id != id || k.next != Some(m) {
                return; // stale: an earlier window was scheduled since
            }
        }
        self.hops[h as usize].fired = Some(m);
        self.hops[h as usize].next = None;
        match self.hops[h as usize].window(m) {
            // Opened late: its panes are late ones.
            Some(slot) if self.slab[slot as usize].past_on_time => {}
            Some(slot) => self.fire_on_time(slot, out),
            // Final at once (no lateness to wait for): the pane straight
            // from the tiles, with no window in the slab.
            None if g.at(m).saturating_add(self.allowed_lateness) <= self.wm.current() => {
                self.emit_final_hop(h, m, out)
            }
            None => {
                let slot = self.open_hop_window(h, m, false);
                self.fire_on_time(slot, out);
            }
        }
        if let Some(next) = self.hops[h as usize].next_after(Some(m), g.k) {
            self.hop_schedule(h, next);
        }
        self.hop_cleanup(h);
    }

    /// The one pane of window `m` of key `h`, on time and final: what
    /// opening the window, firing it and removing it would emit.
    fn emit_final_hop(&mut self, h: u32, m: i64, out: &mut PaneBuf) {
        let (start, end) = self.grid().bounds(m);
        let watermark = self.visible_watermark();
        // As a window opened and closed: the ids after it are the same.
        self.next_window_id += 1;
        self.stats.windows_opened += 1;
        self.stats.panes += 1;
        self.hop_value(h, m, Via::OnTime);
        out.meta.push(super::PaneMeta {
            key: self.hops[h as usize].key.clone(),
            window_start: start,
            window_end: end,
            pane_index: 0,
            timing: Timing::OnTime,
            is_final: true,
            retraction: false,
            partition: self.partition,
            emitted_at: self.now,
            watermark,
        });
        self.write_scratch(start, end, out);
    }

    /// After a restore: schedules the key's next window.
    pub(super) fn hop_resume(&mut self, h: u32) {
        if let Some(next) = self.hops[h as usize].next.take() {
            self.hop_schedule(h, next);
        }
    }

    /// Drops the tiles of key `h` that no kept window holds, and the key
    /// when nothing is left.
    pub(super) fn hop_cleanup(&mut self, h: u32) {
        let g = self.grid();
        let kept = self.first_kept_window(self.wm.current());
        let key = &mut self.hops[h as usize];
        if !key.live || self.finishing {
            return;
        }
        // Tile n is held by windows up to n + k, and window n + 1 + k (the
        // first without it) is found by it: it goes once no kept window
        // holds it and the on-time cursor has passed n + 1 + k.
        // Windows that still exist may be due to close in this very step.
        let needed = key
            .fired
            .map_or(i64::MIN / 4, |f| f)
            .min(kept)
            .min(key.windows.first().map_or(i64::MAX, |w| w.0));
        key.tiles.drop_before(&self.plan.row, needed - g.k);
        if key.is_done() {
            key.live = false;
            key.tiles = Default::default();
            key.on_time = Default::default();
            key.closing = None;
            self.hop_free.push(h);
        }
    }

    /// End of a bounded input (SPEC 2): every window that exists fires its
    /// final pane, and so does every window still to come whose newest tile
    /// starts at or before the greatest event time (before `--to`); the
    /// windows that would only show the data ageing out after the input
    /// are not emitted. In end order (ties: keys in the order they came).
    pub(super) fn finish_hopping(&mut self, out: &mut PaneBuf) {
        let g = self.grid();
        // Open tiles close first: every tile is then with its key.
        let mut open: Vec<(u64, u32)> = self
            .slab
            .iter()
            .enumerate()
            .filter(|(_, w)| w.live && w.tile_of != NO_HOP)
            .map(|(i, w)| (w.id, i as u32))
            .collect();
        open.sort_unstable();
        for (_, slot) in open {
            self.close_tile(slot, None);
        }
        let last_tile = {
            let mut t = self.wm.max_time().unwrap_or(i64::MIN);
            if let Some(e) = self.input_end {
                t = t.min(e.saturating_sub(1));
            }
            g.tile(t)
        };
        self.timers.clear();
        self.early_list.clear();
        self.late_list.clear();
        // (end, tie, key, window number, existing slot)
        let mut all: Vec<(Micros, u64, u32, i64, u32)> = Vec::new();
        for (h, key) in self.hops.iter().enumerate() {
            if !key.live {
                continue;
            }
            for &(m, slot) in &key.windows {
                all.push((g.at(m), key.id, h as u32, m, slot));
            }
            let mut at = key.next;
            while let Some(m) = at {
                if m - 1 > last_tile {
                    break;
                }
                if key.window(m).is_none() {
                    all.push((g.at(m), key.id, h as u32, m, NO_HOP));
                }
                at = key.next_after(Some(m), g.k);
            }
        }
        all.sort_unstable();
        self.wm.advance_to(WATERMARK_MAX);
        self.finishing = true;
        for (_, _, h, m, slot) in all {
            let (slot, timing, via) = if slot == NO_HOP {
                (
                    self.open_hop_window(h, m, false),
                    Timing::OnTime,
                    Via::OnTime,
                )
            } else if self.slab[slot as usize].past_on_time {
                (slot, Timing::Late, Via::Closing)
            } else {
                (slot, Timing::OnTime, Via::OnTime)
            };
            self.emit(slot, timing, true, self.now, via, out);
            self.remove_window(slot);
        }
        for key in self.hops.iter_mut() {
            key.live = false;
        }
        self.hops.clear();
        self.hop_free.clear();
        self.finishing = false;
    }
}
