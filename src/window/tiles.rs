//! The tiles of one key of a hopping window, and the sliding aggregation
//! that makes a window's value out of them (SPEC 1, docs/semantics.md).
//!
//! A hopping window of `size = k · slide` covers `k` consecutive tiles of
//! `slide`; a key keeps only its non-empty tiles, each one accumulator row
//! ([`crate::aggregate::RowLayout`]). A window's value is a merge of its
//! tiles computed as two stacks flipped at fixed places: the tile grid is
//! cut into *chunks* of `k` tiles, aligned to the epoch, so a window lies
//! in at most two chunks, `c` and `c + 1`. Its value is
//!
//! `value = S_c(first tile) ⊕ P_{c+1}(last tile)`
//!
//! where `S_c(i)` folds the tiles of chunk `c` from `i` to the chunk's end
//! right to left (`t_i ⊕ (t_next ⊕ (…))`) and `P_{c+1}(j)` folds chunk
//! `c + 1` from its start to `j` left to right. A cursor that walks windows
//! in end order keeps the suffixes of one chunk (computed once, when the
//! window's start enters it) and one running prefix (extended by one tile
//! at a time), so firing a window costs O(1) merges amortized, however many
//! tiles a window has.
//!
//! Determinism: `S` and `P` are defined by the tiles alone, folded in a
//! fixed order, and a window's value by that formula alone. Caches only
//! spare work: they are dropped when a tile they cover changes (a late
//! event) and computed again the same way. So a window has the same bits
//! whenever it is evaluated, whatever the batch sizes, the watermark's
//! steps or the order windows fired in; and a tile's own state depends only
//! on its events in arrival order.

use crate::aggregate::{Heavy, RowLayout};

/// Tiles a key's storage has room for when its first tile comes.
const FIRST_TILES: usize = 4;

/// Non-empty tiles of one key, by tile number (`start = offset + n · slide`),
/// ascending, with their rows. A tile's number and the fixed-size words of
/// its row lie next to each other (`stride` words per tile), so that the
/// newest tile, where events go, is one place in memory.
#[derive(Debug, Clone, Default)]
#[repr(C)]
pub struct Tiles {
    /// Per tile: its number (as `u64` bits), then its row's words.
    data: Vec<u64>,
    pub heavy: Vec<Heavy>,
    /// Words per tile (`1 +` the layout's words); set with the first tile.
    stride: u32,
    len: u32,
}

/// The tile numbers of a [`Tiles`], read in place.
#[derive(Clone, Copy)]
struct Nums<'a> {
    data: &'a [u64],
    stride: usize,
    len: usize,
}

impl Nums<'_> {
    #[inline]
    fn get(&self, pos: usize) -> i64 {
        self.data[pos * self.stride] as i64
    }

    /// The first position in `[lo, hi)` whose number is `n` or more (`hi`
    /// when none is).
    #[inline]
    fn first_at_least(&self, mut lo: usize, mut hi: usize, n: i64) -> usize {
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.get(mid) < n {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// The first position from `from` on holding `n` or more, found in
    /// growing steps forwards.
    #[inline]
    fn gallop(&self, from: usize, n: i64) -> usize {
        let mut lo = from;
        let mut step = 1;
        while lo < self.len && self.get(lo) < n {
            let hi = (lo + step).min(self.len);
            if hi == self.len || self.get(hi) >= n {
                return self.first_at_least(lo + 1, hi, n);
            }
            lo = hi;
            step *= 2;
        }
        lo
    }
}

impl Tiles {
    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    fn nums(&self) -> Nums<'_> {
        Nums {
            data: &self.data,
            stride: self.stride as usize,
            len: self.len as usize,
        }
    }

    /// The number of the tile at position `pos`.
    #[inline]
    pub fn num(&self, pos: usize) -> i64 {
        self.nums().get(pos)
    }

    /// The tile numbers, oldest first.
    pub fn numbers(&self) -> impl Iterator<Item = i64> + '_ {
        let n = self.nums();
        (0..n.len).map(move |p| n.get(p))
    }

    /// Empty tiles numbered `numbers` (ascending), rows of `l` (tests and
    /// restores).
    pub fn with_numbers(l: &RowLayout, numbers: &[i64]) -> Tiles {
        let mut t = Tiles::default();
        for &n in numbers {
            t.find_or_insert(l, n);
        }
        t
    }

    #[inline]
    fn fit(&mut self, l: &RowLayout) {
        if self.stride == 0 {
            self.stride = 1 + l.words() as u32;
            // Room for a few tiles at once: a key's first tiles would
            // otherwise move it in memory at each one.
            self.data.reserve_exact(FIRST_TILES * self.stride as usize);
        }
    }

    /// Where the tile at `pos` starts in memory (look-ahead fetches).
    #[inline]
    pub fn tile_ptr(&self, pos: usize) -> *const u64 {
        self.data.as_ptr().wrapping_add(pos * self.stride as usize)
    }

    /// Where the newest tile starts in memory (look-ahead fetches).
    #[inline]
    pub fn newest_ptr(&self) -> *const u64 {
        self.tile_ptr(self.len().saturating_sub(1))
    }

    /// The row of the tile at position `pos`.
    #[inline]
    pub fn row(&self, l: &RowLayout, pos: usize) -> (&[u64], &[Heavy]) {
        let (st, h) = (self.stride as usize, l.heavies());
        (
            &self.data[pos * st + 1..(pos + 1) * st],
            &self.heavy[pos * h..(pos + 1) * h],
        )
    }

    #[inline]
    pub fn row_mut(&mut self, l: &RowLayout, pos: usize) -> (&mut [u64], &mut [Heavy]) {
        let (st, h) = (self.stride as usize, l.heavies());
        (
            &mut self.data[pos * st + 1..(pos + 1) * st],
            &mut self.heavy[pos * h..(pos + 1) * h],
        )
    }

    /// The position of tile `n`, inserting an empty one when it is new
    /// (`true` then).
    #[inline]
    pub fn find_or_insert(&mut self, l: &RowLayout, n: i64) -> (usize, bool) {
        match self.last() {
            // Events mostly go to the newest tile, or start a newer one.
            Some(last) if last == n => return (self.len() - 1, false),
            Some(last) if last > n => {}
            _ => {
                self.fit(l);
                self.data.push(n as u64);
                l.push_empty(&mut self.data, &mut self.heavy);
                self.len += 1;
                return (self.len() - 1, true);
            }
        }
        let p = self.nums().first_at_least(0, self.len(), n);
        if self.num(p) == n {
            return (p, false);
        }
        let (st, h) = (self.stride as usize, l.heavies());
        let mut row = Row::empty(l);
        self.data.splice(
            p * st..p * st,
            std::iter::once(n as u64).chain(row.words.drain(..)),
        );
        self.heavy.splice(p * h..p * h, row.heavy.drain(..));
        self.len += 1;
        (p, true)
    }

    /// Adds tile `n`, newer than every tile held, with its row (the
    /// variable-size states are moved out of `heavy`).
    #[inline]
    pub fn push(&mut self, l: &RowLayout, n: i64, words: &[u64], heavy: &mut [Heavy]) {
        debug_assert!(self.last().is_none_or(|x| x < n));
        self.fit(l);
        self.data.push(n as u64);
        self.data.extend_from_slice(words);
        self.heavy.extend(heavy.iter_mut().map(Heavy::take));
        self.len += 1;
    }

    /// The newest tile's number.
    #[inline]
    pub fn last(&self) -> Option<i64> {
        (self.len > 0).then(|| self.num(self.len() - 1))
    }

    /// The position of tile `n`, if it has events.
    pub fn position(&self, n: i64) -> Option<usize> {
        let p = self.nums().first_at_least(0, self.len(), n);
        (p < self.len() && self.num(p) == n).then_some(p)
    }

    /// Positions of the tiles with numbers in `[from, to)`.
    #[inline]
    pub fn range(&self, from: i64, to: i64) -> std::ops::Range<usize> {
        let n = self.len();
        if n == 0 {
            return 0..0;
        }
        let nums = self.nums();
        // Windows mostly reach past a key's newest tile, and long ones
        // start before its oldest: no search then.
        let b = if to > nums.get(n - 1) {
            n
        } else {
            nums.first_at_least(0, n, to)
        };
        let a = if from <= nums.get(0) {
            0
        } else {
            nums.first_at_least(0, b, from)
        };
        a..b.max(a)
    }

    /// The position of the first tile numbered `n` or more, searched from
    /// the oldest tile outwards (what callers look for is near it).
    #[inline]
    pub fn first_from_front(&self, n: i64) -> usize {
        self.nums().gallop(0, n)
    }

    /// The position of the first tile numbered `n` or more, searched from
    /// the newest tile back (what callers look for is near it).
    #[inline]
    pub fn first_from_back(&self, n: i64) -> usize {
        let nums = self.nums();
        let mut p = nums.len;
        let mut step = 1;
        // Back in growing steps to a tile below `n`, then a search in the last step.
        while p > 0 && nums.get(p - 1) >= n {
            let lo = p.saturating_sub(step);
            if nums.get(lo) >= n {
                p = lo;
                step *= 2;
            } else {
                return nums.first_at_least(lo, p, n);
            }
        }
        p
    }

    /// Drops the tiles numbered below `n`.
    pub fn drop_before(&mut self, l: &RowLayout, n: i64) {
        let cut = self.first_from_front(n);
        if cut > 0 {
            self.data.drain(..cut * self.stride as usize);
            self.heavy.drain(..cut * l.heavies());
            self.len -= cut as u32;
        }
    }

    /// Makes these tiles a copy of `src`'s tiles at `positions`.
    fn copy_range(&mut self, src: &Tiles, positions: std::ops::Range<usize>, l: &RowLayout) {
        let (st, h) = (src.stride as usize, l.heavies());
        self.stride = src.stride;
        self.data.clear();
        self.data
            .extend_from_slice(&src.data[positions.start * st..positions.end * st]);
        self.heavy.clear();
        self.heavy
            .extend_from_slice(&src.heavy[positions.start * h..positions.end * h]);
        self.len = positions.len() as u32;
    }

    /// Bytes held (memory reports).
    pub fn bytes(&self) -> usize {
        self.data.capacity() * 8
            + self.heavy.capacity() * std::mem::size_of::<Heavy>()
            + self.heavy.iter().map(Heavy::heap_bytes).sum::<usize>()
    }
}

/// A row outside the tiles (a window's value, a cached partial).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row {
    pub words: Vec<u64>,
    pub heavy: Vec<Heavy>,
}

impl Row {
    pub fn empty(l: &RowLayout) -> Row {
        let mut r = Row::default();
        l.push_empty(&mut r.words, &mut r.heavy);
        r
    }

    fn merge_from(&mut self, l: &RowLayout, words: &[u64], heavy: &[Heavy]) {
        l.merge((&mut self.words, &mut self.heavy), (words, heavy));
    }

    fn copy_from(&mut self, words: &[u64], heavy: &[Heavy]) {
        self.words.clear();
        self.words.extend_from_slice(words);
        // `clone_from` keeps the buffers of the states it overwrites.
        self.heavy.truncate(heavy.len());
        let n = self.heavy.len();
        for (d, s) in self.heavy.iter_mut().zip(heavy) {
            d.clone_from(s);
        }
        self.heavy.extend_from_slice(&heavy[n..]);
    }
}

/// The partials a cursor keeps: the suffixes of one chunk and a running
/// prefix of another. See the module documentation.
#[derive(Debug, Clone, Default)]
// The positions first (every event checks them), then the rows.
#[repr(C)]
pub struct Cursor {
    /// Chunk whose suffixes are kept: one row per tile of the chunk, by the
    /// tile number it starts at.
    s_chunk: Option<i64>,
    /// Chunk of the running prefix, which folds its tiles numbered below `p_upto`.
    p_chunk: Option<i64>,
    p_upto: i64,
    /// Where in `s` the last window's left part started (windows in end
    /// order start there or after).
    s_at: usize,
    /// Whether `p` folds any tile.
    p_any: bool,
    p: Row,
    s: Tiles,
}

impl Cursor {
    /// Forgets what covers tile `n` (it changed, or was added).
    /// (Every event calls this: a chunk is compared by its bounds, with
    /// no division.)
    #[inline]
    pub fn invalidate(&mut self, n: i64, k: i64) {
        let within = |c: i64| in_chunk(n, c, k);
        if self.s_chunk.is_some_and(within) {
            self.s_chunk = None;
        }
        if n < self.p_upto && self.p_chunk.is_some_and(within) {
            self.p_chunk = None;
        }
    }

    /// Where the running prefix lives (look-ahead fetches).
    pub fn prefix_ptr(&self) -> *const u64 {
        self.p.words.as_ptr()
    }

    /// Where the next window in end order finds its left part: the
    /// suffix at the last window's place (look-ahead fetches).
    pub fn suffix_ptr(&self) -> *const u64 {
        self.s.tile_ptr(self.s_at)
    }

    /// The running prefix's first word, when it has a row.
    pub fn prefix_row(&self) -> Option<*const u64> {
        (!self.p.words.is_empty()).then(|| self.p.words.as_ptr())
    }

    /// The suffix at the last window's place, when there is one.
    pub fn suffix_row(&self) -> Option<*const u64> {
        (self.s_at < self.s.len()).then(|| self.s.tile_ptr(self.s_at))
    }

    /// Bytes held (memory reports).
    pub fn bytes(&self) -> usize {
        self.s.bytes()
            + self.p.words.capacity() * 8
            + self.p.heavy.capacity() * std::mem::size_of::<Heavy>()
            + self.p.heavy.iter().map(Heavy::heap_bytes).sum::<usize>()
    }
}

/// Whether tile `n` is in chunk `c` (tiles `[c·k, (c+1)·k)`), without
/// the division that finds a tile's chunk.
#[inline]
fn in_chunk(n: i64, c: i64, k: i64) -> bool {
    n >= c.saturating_mul(k) && n < c.saturating_add(1).saturating_mul(k)
}

/// How a query may use a cursor's partials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Windows in end order over finished tiles: extend the partials.
    Advance,
    /// Anything else: read what fits, compute the rest aside.
    Peek,
}

/// The value of the window of tiles numbered `[i0, i0 + k)` into `out`.
pub fn window_value(
    tiles: &Tiles,
    l: &RowLayout,
    k: i64,
    i0: i64,
    cur: &mut Cursor,
    how: Use,
    out: &mut Row,
) {
    // The chunk of `i0`: mostly the one the cursor's suffixes are of.
    let c = match cur.s_chunk {
        Some(c) if in_chunk(i0, c, k) => c,
        _ => i0.div_euclid(k),
    };
    let split = (c + 1) * k;
    let i1 = i0 + k;
    if how == Use::Advance {
        // The chunk's suffixes (made once per chunk, empty or not) say
        // where the left part starts; the prefix takes the tiles since the
        // last window from the newest end. No search of the key's tiles.
        if cur.s_chunk != Some(c) {
            fill_suffixes(tiles, l, k, c, cur);
        }
        let nums = cur.s.nums();
        if cur.s_at > 0 && (cur.s_at > nums.len || nums.get(cur.s_at - 1) >= i0) {
            cur.s_at = 0;
        }
        let at = nums.gallop(cur.s_at, i0);
        cur.s_at = at;
        if at == cur.s.len() {
            l.reset(&mut out.words, &mut out.heavy);
        } else {
            let (w, h) = cur.s.row(l, at);
            out.copy_from(w, h);
        }
        advance_prefix(tiles, l, c + 1, split, i1, cur, out);
        return;
    }
    // Peek: S_c(first tile at or after i0), from the cursor's suffixes
    // when they are of this chunk, else computed aside.
    let left = tiles.range(i0, split.min(i1));
    if left.is_empty() {
        l.reset(&mut out.words, &mut out.heavy);
    } else {
        let first = tiles.num(left.start);
        if cur.s_chunk != Some(c) {
            suffix_aside(tiles, l, tiles.range(first, split), out);
            peek_right_part(tiles, l, c + 1, split, i1, cur, out);
            return;
        }
        let at = cur.s.nums().first_at_least(0, cur.s.len(), first);
        let (w, h) = cur.s.row(l, at);
        out.copy_from(w, h);
    }
    peek_right_part(tiles, l, c + 1, split, i1, cur, out);
}

/// Extends the running prefix of `chunk` to `P_{chunk}(i1)` (tiles
/// numbered `[split, i1)`) and merges it into `out` (windows in end order).
fn advance_prefix(
    tiles: &Tiles,
    l: &RowLayout,
    chunk: i64,
    split: i64,
    i1: i64,
    cur: &mut Cursor,
    out: &mut Row,
) {
    if i1 <= split {
        return;
    }
    if !(cur.p_chunk == Some(chunk) && cur.p_upto <= i1) {
        cur.p_chunk = Some(chunk);
        cur.p_upto = split;
        cur.p_any = false;
        if cur.p.words.len() == l.words() && cur.p.heavy.len() == l.heavies() {
            l.reset(&mut cur.p.words, &mut cur.p.heavy);
        } else {
            cur.p = Row::empty(l);
        }
    }
    let b = tiles.first_from_back(i1);
    let a = b.min(tiles.first_from_back(cur.p_upto));
    for pos in a..b {
        let (w, h) = tiles.row(l, pos);
        cur.p.merge_from(l, w, h);
    }
    cur.p_any |= a < b;
    cur.p_upto = i1;
    if cur.p_any {
        out.merge_from(l, &cur.p.words, &cur.p.heavy);
    }
}

/// Merges `P_{chunk}(i1)` (tiles numbered `[split, i1)`) into `out`,
/// leaving the cursor as it is (any window, any order).
fn peek_right_part(
    tiles: &Tiles,
    l: &RowLayout,
    chunk: i64,
    split: i64,
    i1: i64,
    cur: &Cursor,
    out: &mut Row,
) {
    if i1 <= split || tiles.range(split, i1).is_empty() {
        return;
    }
    // From the cached prefix when it covers no more than the window.
    let (mut p, from) = if cur.p_chunk == Some(chunk) && cur.p_upto <= i1 {
        (cur.p.clone(), cur.p_upto)
    } else {
        (Row::empty(l), split)
    };
    for pos in tiles.range(from, i1) {
        let (w, h) = tiles.row(l, pos);
        p.merge_from(l, w, h);
    }
    out.merge_from(l, &p.words, &p.heavy);
}

/// Computes the suffixes of chunk `c` into the cursor: the chunk's tiles,
/// then each row folded with the one after it, right to left.
fn fill_suffixes(tiles: &Tiles, l: &RowLayout, k: i64, c: i64, cur: &mut Cursor) {
    let r = tiles.range(c * k, (c + 1) * k);
    let (st, hh) = (tiles.stride as usize, l.heavies());
    cur.s_chunk = Some(c);
    cur.s_at = 0;
    let s = &mut cur.s;
    s.copy_range(tiles, r.clone(), l);
    for j in (0..r.len().saturating_sub(1)).rev() {
        let (wa, wb) = s.data.split_at_mut((j + 1) * st);
        let (ha, hb) = s.heavy.split_at_mut((j + 1) * hh);
        l.merge(
            (&mut wa[j * st + 1..], &mut ha[j * hh..]),
            (&wb[1..st], &hb[..hh]),
        );
    }
}

/// `S(first)` over the tiles at `positions` (one chunk's, from `first`), into `out`.
fn suffix_aside(tiles: &Tiles, l: &RowLayout, positions: std::ops::Range<usize>, out: &mut Row) {
    let mut acc: Option<Row> = None;
    for pos in positions.rev() {
        let (w, h) = tiles.row(l, pos);
        let mut row = Row::default();
        row.copy_from(w, h);
        if let Some(a) = &acc {
            row.merge_from(l, &a.words, &a.heavy);
        }
        acc = Some(row);
    }
    match acc {
        Some(a) => *out = a,
        None => l.reset(&mut out.words, &mut out.heavy),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::{AccKind, Input, Value};
    use proptest::prelude::*;

    fn layout() -> RowLayout {
        let mut l = RowLayout::default();
        l.acc(AccKind::CountEvents, None);
        l.acc(AccKind::Moments(0), None);
        l.acc(AccKind::Quantile(0), None);
        l
    }

    fn add(t: &mut Tiles, l: &RowLayout, n: i64, x: f64) {
        let (p, _) = t.find_or_insert(l, n);
        let (w, h) = t.row_mut(l, p);
        l.update(w, h, |_| Input::Num(x), |_| true, 0, 0);
    }

    fn value(l: &RowLayout, r: &Row) -> (i64, Option<f64>, Option<f64>) {
        let a = |acc, agg| l.finish(acc, agg, &Default::default(), &r.words, &r.heavy);
        let n = match a(0, crate::aggregate::AggKind::Count) {
            Value::Int(n) => n,
            _ => -1,
        };
        (
            n,
            a(1, crate::aggregate::AggKind::Sum).as_f64(),
            a(2, crate::aggregate::AggKind::Quantile).as_f64(),
        )
    }

    proptest! {
        /// The searches from either end find what a binary search finds.
        #[test]
        fn searches_from_either_end_agree_with_a_binary_search(
            mut idx in prop::collection::vec(-50i64..50, 0..40),
            n in -60i64..60,
        ) {
            idx.sort();
            idx.dedup();
            let t = Tiles::with_numbers(&RowLayout::default(), &idx);
            let want = idx.partition_point(|&x| x < n);
            prop_assert_eq!(t.first_from_front(n), want);
            prop_assert_eq!(t.first_from_back(n), want);
        }

        /// Every way of evaluating a window (advancing, peeking, with cold
        /// or warm partials, after late changes) gives the same bits, and the
        /// count and sum of the tiles in it.
        #[test]
        fn every_evaluation_of_a_window_agrees(
            evs in prop::collection::vec((0i64..40, -100i32..100), 1..200),
            k in 1i64..9,
            late in prop::collection::vec((0i64..40, -100i32..100), 0..20),
        ) {
            let l = layout();
            let mut t = Tiles::default();
            for &(n, x) in &evs { add(&mut t, &l, n, x as f64); }
            let mut cur = Cursor::default();
            let mut out = Row::empty(&l);
            let mut fresh = Row::empty(&l);
            let mut late_i = 0;
            for i0 in -k..45 {
                window_value(&t, &l, k, i0, &mut cur, Use::Advance, &mut out);
                let mut cold = Cursor::default();
                window_value(&t, &l, k, i0, &mut cold, Use::Peek, &mut fresh);
                prop_assert_eq!(&out, &fresh, "window at {}", i0);
                let want_n = evs.iter().chain(&late[..late_i]).filter(|(n, _)| *n >= i0 && *n < i0 + k).count() as i64;
                prop_assert_eq!(value(&l, &out).0, want_n);
                // A late event into some tile: the partials that cover it are dropped.
                if let Some(&(n, x)) = late.get(late_i) {
                    add(&mut t, &l, n, x as f64);
                    cur.invalidate(n, k);
                    late_i += 1;
                }
            }
        }
    }
}
