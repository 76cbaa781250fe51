//! The key index: from an encoded key to its entry (the key's windows).
//!
//! An open-addressing table of 8-byte slots (32 bits of the hash, 32 bits
//! of entry number) over a vector of entries. Keys are never removed. The
//! split lets a caller that knows keys ahead of time fetch them into cache
//! in two steps that never wait on memory: first the slot
//! ([`KeyIndex::prefetch_slot`]), later the entry the slot names
//! ([`KeyIndex::prefetch_entry`]), so that the misses of several events
//! overlap instead of stalling one after the other.

use crate::mem::prefetch;

/// Slots per entry at most (load factor 3/4).
const MAX_LOAD_NUM: usize = 3;
const MAX_LOAD_DEN: usize = 4;

#[derive(Debug)]
pub(super) struct KeyIndex<E> {
    /// 0: empty; otherwise (hash >> 32) << 32 | (entry number + 1).
    slots: Vec<u64>,
    entries: Vec<E>,
}

#[inline(always)]
fn tag(hash: u64) -> u64 {
    hash & !0xFFFF_FFFF
}

impl<E> KeyIndex<E> {
    pub fn new() -> KeyIndex<E> {
        KeyIndex {
            slots: vec![0; 16],
            entries: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    #[inline(always)]
    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    /// The entry of `hash` for which `eq` holds.
    #[inline]
    pub fn find(&self, hash: u64, mut eq: impl FnMut(&E) -> bool) -> Option<&E> {
        self.position(hash, |e| eq(e)).map(|i| &self.entries[i])
    }

    #[inline]
    pub fn find_mut(&mut self, hash: u64, mut eq: impl FnMut(&E) -> bool) -> Option<&mut E> {
        self.position(hash, |e| eq(e)).map(|i| &mut self.entries[i])
    }

    #[inline(always)]
    fn position(&self, hash: u64, mut eq: impl FnMut(&E) -> bool) -> Option<usize> {
        let mask = self.mask();
        let t = tag(hash);
        let mut i = hash as usize & mask;
        loop {
            let s = self.slots[i];
            if s == 0 {
                return None;
            }
            if s & !0xFFFF_FFFF == t {
                let n = (s & 0xFFFF_FFFF) as usize - 1;
                if eq(&self.entries[n]) {
                    return Some(n);
                }
            }
            i = (i + 1) & mask;
        }
    }

    /// Adds an entry whose key is not in the index; `rehash` gives the hash
    /// of an entry when the table grows.
    pub fn insert_unique(&mut self, hash: u64, entry: E, rehash: impl Fn(&E) -> u64) {
        if (self.entries.len() + 1) * MAX_LOAD_DEN > self.slots.len() * MAX_LOAD_NUM {
            self.grow(&rehash);
        }
        let n = self.entries.len();
        assert!(n < u32::MAX as usize, "key index full");
        self.entries.push(entry);
        self.place(hash, n);
    }

    fn place(&mut self, hash: u64, n: usize) {
        let mask = self.mask();
        let mut i = hash as usize & mask;
        while self.slots[i] != 0 {
            i = (i + 1) & mask;
        }
        self.slots[i] = tag(hash) | (n as u64 + 1);
    }

    fn grow(&mut self, rehash: &impl Fn(&E) -> u64) {
        self.slots = vec![0; self.slots.len() * 2];
        for n in 0..self.entries.len() {
            let h = rehash(&self.entries[n]);
            self.place(h, n);
        }
    }

    /// Step one of a look-ahead: fetch the slot `hash` starts probing at.
    #[inline(always)]
    pub fn prefetch_slot(&self, hash: u64) {
        prefetch(
            self.slots
                .as_ptr()
                .wrapping_add(hash as usize & self.mask()),
        );
    }

    /// The entry whose tag matches `hash` first (no key compare: a hint
    /// for a look-ahead, possibly another key's entry).
    #[inline(always)]
    pub fn peek_tagged(&self, hash: u64) -> Option<&E> {
        let mask = self.mask();
        let t = tag(hash);
        let mut i = hash as usize & mask;
        for _ in 0..4 {
            let s = self.slots[i];
            if s == 0 {
                return None;
            }
            if s & !0xFFFF_FFFF == t {
                return self.entries.get((s & 0xFFFF_FFFF) as usize - 1);
            }
            i = (i + 1) & mask;
        }
        None
    }

    /// Step two: fetch the entry the first slot with `hash`'s tag names
    /// (no key compare: a tag collision only wastes the fetch).
    #[inline(always)]
    pub fn prefetch_entry(&self, hash: u64) {
        let mask = self.mask();
        let t = tag(hash);
        let mut i = hash as usize & mask;
        // A short probe: most keys sit in their first slot or the next.
        for _ in 0..4 {
            let s = self.slots[i];
            if s == 0 {
                return;
            }
            if s & !0xFFFF_FFFF == t {
                let n = (s & 0xFFFF_FFFF) as usize - 1;
                let e = self.entries.as_ptr().wrapping_add(n) as *const u8;
                // Entries may span two cache lines.
                prefetch(e);
                if std::mem::size_of::<E>() > 64 {
                    prefetch(e.wrapping_add(64));
                }
                return;
            }
            i = (i + 1) & mask;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Against a map: every inserted key is found with its value, no
        /// other key is, whatever the hashes (collisions forced by a weak
        /// hash) and however often the table grew.
        #[test]
        fn finds_what_was_inserted(
            keys in proptest::collection::hash_set(0u32..5_000, 0..600),
            probes in proptest::collection::vec(0u32..5_000, 0..200),
            weak in any::<bool>(),
        ) {
            let hash = |k: u32| if weak { (k % 7) as u64 * 0x1_0000_0001 } else {
                (k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            };
            let mut idx: KeyIndex<(u32, u32)> = KeyIndex::new();
            let mut model = std::collections::HashMap::new();
            for (v, &k) in keys.iter().enumerate() {
                idx.insert_unique(hash(k), (k, v as u32), |e| hash(e.0));
                model.insert(k, v as u32);
            }
            prop_assert_eq!(idx.len(), model.len());
            for &k in keys.iter().chain(&probes) {
                let got = idx.find(hash(k), |e| e.0 == k).map(|e| e.1);
                prop_assert_eq!(got, model.get(&k).copied());
                idx.prefetch_slot(hash(k));
                idx.prefetch_entry(hash(k));
            }
            if let Some(&k) = keys.iter().next() {
                idx.find_mut(hash(k), |e| e.0 == k).expect("present").1 = 99_999;
                prop_assert_eq!(idx.find(hash(k), |e| e.0 == k).map(|e| e.1), Some(99_999));
            }
        }
    }
}
