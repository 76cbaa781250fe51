//! Hopping windows (SPEC 1 and 3): windows of `size = k · slide` starting
//! every `slide`, kept per key as `slide`-long tiles ([`super::tiles`]).
//!
//! The grid: tile `n` is `[offset + n·slide, offset + (n+1)·slide)`;
//! window `m` is the one that *ends* at `offset + m·slide` and covers tiles
//! `m - k .. m`. An event of tile `n` belongs to windows `n+1 ..= n+k`.
//!
//! Emission on change: window `m` differs from window `m - 1` only when its
//! newest tile (`m - 1`) or the tile that left (`m - 1 - k`) has events. So
//! the windows that emit are `n + 1` and `n + 1 + k` for every non-empty
//! tile `n` (the second is the first window without `n`: a zero pane when
//! nothing else is left); every other window equals the one before it.
//! [`HopKey::next_after`] finds the next such window in end order.

use super::tiles::{Cursor, Tiles};
use crate::event::EncodedKey;
use crate::time::Micros;

/// The tile and window arithmetic of one hopping pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    pub slide: Micros,
    pub offset: Micros,
    /// Tiles per window (`size / slide`).
    pub k: i64,
}

impl Grid {
    pub fn new(size: Micros, slide: Micros, offset: Micros) -> Grid {
        Grid {
            slide,
            offset,
            k: size / slide,
        }
    }

    /// The tile holding time `t`.
    #[inline]
    pub fn tile(&self, t: Micros) -> i64 {
        (t - self.offset).div_euclid(self.slide)
    }

    /// Start of tile `n` (also the end of window `n`).
    #[inline]
    pub fn at(&self, n: i64) -> Micros {
        self.offset.saturating_add(n.saturating_mul(self.slide))
    }

    /// The window ending at `end`.
    #[inline]
    pub fn window_of_end(&self, end: Micros) -> i64 {
        (end - self.offset).div_euclid(self.slide)
    }

    /// `[start, end)` of window `m`.
    pub fn bounds(&self, m: i64) -> (Micros, Micros) {
        (self.at(m - self.k), self.at(m))
    }
}

/// The hopping state of one key: its tiles, the partials of two cursors
/// (windows firing on time, windows closing at `end + allowed_lateness`),
/// the last window fired on time, and the windows that exist for their
/// panes (fired and still kept, or opened early), by window number.
#[derive(Debug, Clone)]
// Laid out by hand, on cache-line boundaries: what every event reads
// (the tiles, the windows holding it, the window scheduled next, whether a
// cursor covers the tile) comes first, in the three lines the look-ahead
// fetches; what only a firing window reads (the key's bytes, the partials'
// rows) follows.
#[repr(C, align(64))]
pub struct HopKey {
    /// Unique for the life of the engine (timers name it).
    pub id: u64,
    /// Tiles still open (windows of the engine until they close).
    pub open_tiles: u32,
    pub live: bool,
    pub tiles: Tiles,
    /// Only made when a window is read other than on time.
    pub closing: Option<Box<Cursor>>,
    /// (window number, engine window slot), ascending; mostly empty.
    pub windows: Vec<(i64, u32)>,
    /// The last window fired on time; windows up to it have had their turn.
    pub fired: Option<i64>,
    /// The next window to fire on time, when one is scheduled (a new tile
    /// reads it).
    pub next: Option<i64>,
    pub on_time: Cursor,
    pub key: EncodedKey,
    pub key_hash: u64,
}

// Six cache lines; an event reads only the first three.
const _: () = assert!(std::mem::size_of::<HopKey>() == 384);
// The on-time cursor's positions (its first 49 bytes), which every event
// checks, end within line three, as does the window scheduled next.
const _: () = assert!(std::mem::offset_of!(HopKey, on_time) + 49 <= 192);
const _: () = assert!(std::mem::offset_of!(HopKey, next) + 16 <= 192);

impl HopKey {
    pub fn new(id: u64, key: EncodedKey, key_hash: u64) -> HopKey {
        HopKey {
            id,
            key,
            key_hash,
            live: true,
            tiles: Tiles::default(),
            on_time: Cursor::default(),
            closing: None,
            fired: None,
            next: None,
            windows: Vec::new(),
            open_tiles: 0,
        }
    }

    /// The first window after window `after` (or the first at all) that
    /// differs from the one before it: `n + 1` or `n + 1 + k` of a
    /// non-empty tile `n`.
    pub fn next_after(&self, after: Option<i64>, k: i64) -> Option<i64> {
        let t = &self.tiles;
        let Some(a) = after else {
            return (!t.is_empty()).then(|| t.num(0) + 1);
        };
        // Newest tile n with n + 1 > a (near the newest end), and tile n
        // leaving with n + 1 + k > a (near the oldest tile kept).
        let at = |p: usize| (p < t.len()).then(|| t.num(p));
        let first_new = at(t.first_from_back(a)).map(|n| n + 1);
        let first_left = at(t.first_from_front(a - k)).map(|n| n + 1 + k);
        match (first_new, first_left) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        }
    }

    /// The partials for windows read other than on time.
    pub fn closing(&mut self) -> &mut Cursor {
        self.closing.get_or_insert_with(Box::default)
    }

    /// Forgets the partials that cover tile `n`.
    pub fn invalidate(&mut self, n: i64, k: i64) {
        self.on_time.invalidate(n, k);
        if let Some(c) = &mut self.closing {
            c.invalidate(n, k);
        }
    }

    /// The engine slot of window `m`, if it exists.
    pub fn window(&self, m: i64) -> Option<u32> {
        self.windows
            .binary_search_by_key(&m, |w| w.0)
            .ok()
            .map(|i| self.windows[i].1)
    }

    pub fn add_window(&mut self, m: i64, slot: u32) {
        if let Err(i) = self.windows.binary_search_by_key(&m, |w| w.0) {
            self.windows.insert(i, (m, slot));
        }
    }

    pub fn remove_window(&mut self, m: i64) {
        if let Ok(i) = self.windows.binary_search_by_key(&m, |w| w.0) {
            self.windows.remove(i);
        }
    }

    /// The existing windows that hold tile `n` (numbers `n+1 ..= n+k`).
    pub fn windows_holding(&self, n: i64, k: i64) -> impl Iterator<Item = (i64, u32)> + '_ {
        let lo = self.windows.partition_point(|w| w.0 < n + 1);
        let hi = self.windows.partition_point(|w| w.0 <= n + k);
        self.windows[lo..hi.max(lo)].iter().copied()
    }

    /// Nothing left: no tile, no window, nothing scheduled.
    pub fn is_done(&self) -> bool {
        self.tiles.is_empty()
            && self.windows.is_empty()
            && self.next.is_none()
            && self.open_tiles == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::RowLayout;

    fn key_with(tiles: &[i64]) -> HopKey {
        let mut h = HopKey::new(0, EncodedKey::new(b"k"), 0);
        h.tiles = Tiles::with_numbers(&RowLayout::default(), tiles);
        h
    }

    #[test]
    fn windows_that_differ_from_the_one_before() {
        // k = 3: tiles 10 and 11 give windows 11, 12 (newest tile) and 14, 15
        // (the tiles leaving); 13 equals 12 and 16 on are empty like 15.
        let h = key_with(&[10, 11]);
        let mut got = Vec::new();
        let mut at = None;
        while let Some(m) = h.next_after(at, 3) {
            got.push(m);
            at = Some(m);
        }
        assert_eq!(got, [11, 12, 14, 15]);
        // A gap of more than k between tiles: each tile's windows on their own.
        let h = key_with(&[0, 10]);
        let mut got = Vec::new();
        let mut at = None;
        while let Some(m) = h.next_after(at, 2) {
            got.push(m);
            at = Some(m);
        }
        assert_eq!(got, [1, 3, 11, 13]);
    }

    #[test]
    fn grid_floors_before_the_epoch() {
        let g = Grid::new(30, 10, 3);
        assert_eq!(g.tile(3), 0);
        assert_eq!(g.tile(2), -1);
        assert_eq!(g.bounds(2), (-7, 23));
        assert_eq!(g.window_of_end(23), 2);
    }
}
