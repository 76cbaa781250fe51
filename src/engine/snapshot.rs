//! Checkpoint state of one source partition: an engine holds the keys of
//! one partition, so this is the engine's whole state: the windows, the
//! partition watermark, and the counters a restore must not move back
//! (processing time, arrival sequence).
//!
//! Producers key their records by entity, so every event of a key is on one
//! partition, which is what a consumer group needs anyway (each instance
//! sees only its partitions).

use serde::{Deserialize, Serialize};

use super::{Engine, LastPane, PaneBuf, Timing, NO_HOP};
use crate::aggregate::{AccState, Value};
use crate::time::Micros;
use crate::window::hopping::HopKey;

/// The state of one partition, as written to a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionState {
    pub partition: u32,
    /// Greatest event time seen on the partition.
    pub max_time: Option<Micros>,
    /// The partition's watermark when the snapshot was taken (checkpoint
    /// format 1 saved the pipeline watermark here, which the partition
    /// then continues from: its windows up to it had already fired).
    pub watermark: Micros,
    pub processing_time: Micros,
    /// Arrival sequence (orders `first`/`last` ties).
    pub seq: u64,
    pub windows: Vec<WindowState>,
    /// Hopping windows: each key's tiles and how far it fired.
    #[serde(default)]
    pub hop_keys: Vec<HopKeyState>,
}

/// The tiles of one key of a hopping window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HopKeyState {
    /// The encoded key, base64.
    pub key: String,
    /// Where it comes among the windows and keys (ties of deadlines fire in
    /// this order).
    pub order: u64,
    /// The last window fired on time.
    pub fired: Option<i64>,
    /// The next window to fire on time.
    pub next: Option<i64>,
    /// (tile number, one state per accumulator), ascending.
    pub tiles: Vec<(i64, Vec<AccState>)>,
}

/// One open window of a key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowState {
    /// The encoded key, base64.
    pub key: String,
    pub start: Micros,
    pub end: Micros,
    pub next_pane: u32,
    pub past_on_time: bool,
    pub dirty: bool,
    pub last: Option<LastPaneState>,
    /// One state per accumulator of the pipeline's row layout.
    pub accs: Vec<AccState>,
    /// A hopping window: its window number (its value is its key's tiles').
    #[serde(default)]
    pub hop: Option<i64>,
    /// An open tile of a hopping key.
    #[serde(default)]
    pub tile: bool,
    /// Where it comes among the windows and keys.
    #[serde(default)]
    pub order: u64,
}

/// The last emitted pane of a window (retracting mode).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastPaneState {
    pub start: Micros,
    pub end: Micros,
    pub pane_index: u32,
    pub timing: Timing,
    pub values: Vec<Value>,
}

/// Why a snapshot cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("window {index} has a key that is not base64: {source}")]
    Key {
        index: usize,
        source: base64::DecodeError,
    },
    #[error("window {index} has {found} accumulators, the pipeline needs {expected} (the pipeline's features changed)")]
    Accs {
        index: usize,
        found: usize,
        expected: usize,
    },
    #[error("window {index}: accumulator {acc} is not of the kind the pipeline needs (the pipeline's features changed)")]
    AccKind { index: usize, acc: usize },
}

impl Engine {
    /// The engine's state, in window-opening order.
    pub fn export(&self) -> PartitionState {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut slots: Vec<(u64, u32)> = self
            .slab
            .iter()
            .enumerate()
            .filter(|(_, w)| w.live)
            .map(|(i, w)| (w.id, i as u32))
            .collect();
        slots.sort_unstable();
        let windows = slots
            .iter()
            .map(|&(id, s)| {
                let w = &self.slab[s as usize];
                let (wr, hr) = self.row_range(s);
                WindowState {
                    key: b64.encode(w.key.bytes()),
                    start: w.start,
                    end: w.end,
                    next_pane: w.next_pane,
                    past_on_time: w.past_on_time,
                    dirty: w.dirty,
                    last: w.last.as_ref().map(|l| LastPaneState {
                        start: l.start,
                        end: l.end,
                        pane_index: l.pane_index,
                        timing: l.timing,
                        values: l.values.to_vec(),
                    }),
                    accs: self.plan.row.export(&self.words[wr], &self.heavy[hr]),
                    hop: (w.hop != NO_HOP).then_some(w.hop_m),
                    tile: w.tile_of != NO_HOP,
                    order: id,
                }
            })
            .collect();
        let l = &self.plan.row;
        let mut hop_keys: Vec<HopKeyState> = self
            .hops
            .iter()
            .filter(|k| k.live)
            .map(|k| HopKeyState {
                key: b64.encode(k.key.bytes()),
                order: k.id,
                fired: k.fired,
                next: k.next,
                tiles: k
                    .tiles
                    .numbers()
                    .enumerate()
                    .map(|(pos, n)| {
                        let (w, h) = k.tiles.row(l, pos);
                        (n, l.export(w, h))
                    })
                    .collect(),
            })
            .collect();
        hop_keys.sort_by_key(|k| k.order);
        PartitionState {
            partition: self.partition,
            max_time: self.wm.max_time(),
            watermark: self.wm.current(),
            processing_time: self.now,
            seq: self.seq,
            windows,
            hop_keys,
        }
    }

    /// Loads a partition's state into this engine (an assignment after a
    /// restart or a rebalance). Panes that become due fire into `out`.
    pub fn import(
        &mut self,
        state: &PartitionState,
        out: &mut PaneBuf,
    ) -> Result<(), RestoreError> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let expected = self.plan.row.accs().len();
        let check = |index: usize, accs: &[AccState]| {
            if accs.len() != expected {
                return Err(RestoreError::Accs {
                    index,
                    found: accs.len(),
                    expected,
                });
            }
            self.plan
                .row
                .fits(accs)
                .map_err(|acc| RestoreError::AccKind { index, acc })
        };
        let mut keys = Vec::with_capacity(state.windows.len());
        for (index, w) in state.windows.iter().enumerate() {
            let key = b64
                .decode(&w.key)
                .map_err(|source| RestoreError::Key { index, source })?;
            check(index, &w.accs)?;
            keys.push(key);
        }
        let mut hop_keys = Vec::with_capacity(state.hop_keys.len());
        for (index, k) in state.hop_keys.iter().enumerate() {
            let key = b64
                .decode(&k.key)
                .map_err(|source| RestoreError::Key { index, source })?;
            for (_, accs) in &k.tiles {
                check(index, accs)?;
            }
            hop_keys.push(key);
        }
        self.seq = self.seq.max(state.seq);
        if self.now < state.processing_time {
            self.now = state.processing_time;
        }
        self.wm.restore(state.max_time, state.watermark);
        // Keys and windows come back in the order they were made, so that
        // deadlines falling together fire in the same order as before.
        let mut items: Vec<(u64, bool, usize)> = state
            .windows
            .iter()
            .enumerate()
            .map(|(i, w)| (w.order, false, i))
            .chain(
                state
                    .hop_keys
                    .iter()
                    .enumerate()
                    .map(|(i, k)| (k.order, true, i)),
            )
            .collect();
        items.sort_unstable();
        let mut restored_hops: Vec<u32> = Vec::new();
        for (_, is_key, i) in items {
            if is_key {
                let h = self.import_hop_key(&state.hop_keys[i], &hop_keys[i]);
                restored_hops.push(h);
                continue;
            }
            let (w, key) = (&state.windows[i], &keys[i]);
            let hash = super::key_hash(key);
            if self
                .keys
                .find(hash, |e| {
                    crate::event::short_eq(e.key.bytes(), key.as_slice())
                })
                .is_none()
            {
                self.new_key(hash, key);
            }
            let slot = match w.hop {
                Some(m) => {
                    let h = self.hop_of(hash, key);
                    self.open_hop_window(h, m, w.past_on_time)
                }
                None if w.tile => self.open_tile(key, hash, w.start, w.end),
                None => {
                    let slot = self.open_window(key, hash, w.start, w.end);
                    let (id, opened_past) = {
                        let win = &self.slab[slot as usize];
                        (win.id, win.past_on_time)
                    };
                    if opened_past != w.past_on_time {
                        self.schedule(slot, id, w.end, w.past_on_time);
                    }
                    slot
                }
            };
            let id = self.slab[slot as usize].id;
            let win = &mut self.slab[slot as usize];
            win.next_pane = w.next_pane;
            win.past_on_time = w.past_on_time;
            win.dirty = w.dirty;
            win.last = w.last.as_ref().map(|l| {
                Box::new(LastPane {
                    start: l.start,
                    end: l.end,
                    pane_index: l.pane_index,
                    timing: l.timing,
                    values: l.values.clone().into_boxed_slice(),
                })
            });
            let (wr, hr) = self.row_range(slot);
            self.plan
                .row
                .import(&w.accs, &mut self.words[wr], &mut self.heavy[hr])
                .expect("checked by fits above");
            if w.dirty {
                let win = &mut self.slab[slot as usize];
                if win.past_on_time {
                    if matches!(self.late, super::LateTrigger::Every(_)) && !win.in_late_list {
                        win.in_late_list = true;
                        self.late_list.push((slot, id));
                    }
                } else if self.early_every.is_some() && !win.in_early_list {
                    win.in_early_list = true;
                    self.early_list.push((slot, id));
                }
            }
        }
        for h in restored_hops {
            self.hop_resume(h);
        }
        self.fire_timers(out);
        Ok(())
    }

    /// A hopping key's tiles from a checkpoint (checked beforehand).
    fn import_hop_key(&mut self, k: &HopKeyState, key: &[u8]) -> u32 {
        let hash = super::key_hash(key);
        let h = self.hop_of(hash, key);
        let l = &self.plan.row;
        let state: &mut HopKey = &mut self.hops[h as usize];
        state.fired = k.fired;
        state.next = k.next;
        for (n, accs) in &k.tiles {
            let (pos, _) = state.tiles.find_or_insert(l, *n);
            let (w, hv) = state.tiles.row_mut(l, pos);
            l.import(accs, w, hv).expect("checked by fits above");
        }
        h
    }
}
