//! Point-in-time joins (SPEC 7): for each entity row `(keys, ts)` and each
//! feature group, the feature row that was known at `ts`, never a later one.
//!
//! A group's feature rows (only the columns asked for, retractions
//! dropped, only final panes in `final` mode) are indexed once: keys are
//! interned, rows sorted by key then by the time that makes them eligible
//! (`window_end` in `final` mode, `emitted_at` in `as_of_emit`), and for
//! each position the best row so far is precomputed. An entity row then
//! costs one hash lookup and one binary search in its key's run, and
//! entity rows stream through in batches, so the output keeps the input's
//! order and the entity side needs no memory beyond one batch. There is no
//! per-key cross product.
//!
//! Keys compare as typed values: an integer key never equals a string key,
//! and composite keys are encoded with lengths, so `(1, 12)` and `(11, 2)`
//! differ.

mod groups;
mod objects;
mod read;
mod spill;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{new_null_array, Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use rustc_hash::FxBuildHasher;

use crate::mem::prefetch;
use crate::time::Micros;

pub use groups::resolve_groups;
pub use objects::{stage_offline, StagedOffline};
pub use read::{join_batches, join_files, FileJoinOptions, JoinSummary};

/// Which feature row an entity row gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The final pane with the greatest `window_end <= ts`.
    Final,
    /// The pane greatest in `(window_end, pane_index)` among those with
    /// `emitted_at <= ts`: what the online store served at `ts`.
    AsOfEmit,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "final" => Ok(Mode::Final),
            "as_of_emit" => Ok(Mode::AsOfEmit),
            _ => Err(format!("unknown mode {s:?} (final | as_of_emit)")),
        }
    }
}

/// One requested feature group.
#[derive(Debug, Clone)]
pub struct GroupSpec {
    pub name: String,
    /// Key column names, shared by the entity rows and the feature rows.
    pub keys: Vec<String>,
    /// Features to take; `None`: all of the group's features.
    pub features: Option<Vec<String>>,
    /// Feature names of the group in order (to know which columns are features).
    pub all_features: Vec<String>,
    pub ttl: Option<Micros>,
    /// The pipeline discards between panes: its final pane is not the
    /// whole window, so `final` mode refuses it.
    pub discarding: bool,
    /// The group's compiled pipeline, when known: its request-time
    /// (`on_read:`) features can then be asked for, computed with `now` =
    /// each entity row's time.
    pub plan: Option<crate::plan::PlanRef>,
}

impl GroupSpec {
    /// The names asked for (every stored feature, then every request-time
    /// one, when none are named).
    pub fn selected(&self) -> Vec<String> {
        match &self.features {
            Some(f) => f.clone(),
            None => {
                let mut v = self.all_features.clone();
                if let Some(p) = &self.plan {
                    v.extend(p.on_read.iter().map(|r| r.name.clone()));
                }
                v
            }
        }
    }

    /// The request-time feature of this name, if it is one.
    fn on_read(&self, name: &str) -> Option<usize> {
        self.plan
            .as_ref()?
            .on_read
            .iter()
            .position(|r| r.name == name)
    }

    /// The columns to read from the group's files besides keys and pane
    /// columns: stored features asked for, those that request-time
    /// features read, and the window bounds for them.
    pub fn columns_read(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        let add = |n: &str, v: &mut Vec<String>| {
            if !v.iter().any(|x| x == n) {
                v.push(n.to_string());
            }
        };
        for n in self.selected() {
            match (self.on_read(&n), &self.plan) {
                (Some(j), Some(p)) => {
                    for &d in &p.on_read[j].deps {
                        add(&p.pipeline.features[d].name, &mut v);
                    }
                    add("window_start", &mut v);
                    add("window_end", &mut v);
                }
                _ => add(&n, &mut v),
            }
        }
        v
    }
}

/// How an output column of a group is made.
#[derive(Debug, Clone)]
enum JoinOut {
    /// A loaded column, as it is.
    Stored(usize),
    /// A request-time feature: `on_read[j]` over loaded columns (feature
    /// index, loaded column), with the window bounds loaded at `bounds`.
    OnRead {
        j: usize,
        deps: Vec<(usize, usize)>,
        bounds: (usize, usize),
    },
}

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("{0}")]
    Input(String),
    #[error("entity column {column:?} is missing (the entity columns are: {available})")]
    MissingColumn { column: String, available: String },
    #[error("feature group {group:?} has no feature {feature:?} (it has: {available})")]
    UnknownFeature {
        group: String,
        feature: String,
        available: String,
    },
    #[error("key type mismatch for {column:?}: the entity rows have {entity}, feature group {group:?} has {feature}")]
    KeyType {
        column: String,
        entity: String,
        group: String,
        feature: String,
    },
    #[error("the timestamp column {column:?} has {count} null value(s), the first at row {first} (0-based)")]
    NullTimestamps {
        column: String,
        count: usize,
        first: usize,
    },
    #[error("feature group {0:?} discards between panes: its final pane is not the whole window, so `final` mode cannot use it (use as_of_emit)")]
    Discarding(String),
    #[error("unknown feature group {group:?}: no pipeline file of that name in {pipelines} (known: {known}); give --keys {group}=COLUMNS to join it without one")]
    UnknownGroup {
        group: String,
        pipelines: String,
        known: String,
    },
    #[error("output column {0:?} would appear twice; use --full-names")]
    DuplicateColumn(String),
    #[error(transparent)]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error(transparent)]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The class of a key column, for typed comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyClass {
    Int,
    Str,
}

pub(crate) fn key_class(dt: &DataType) -> Option<KeyClass> {
    match dt {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => Some(KeyClass::Int),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Some(KeyClass::Str),
        DataType::Dictionary(_, v) => key_class(v),
        _ => None,
    }
}

fn class_name(c: Option<KeyClass>) -> &'static str {
    match c {
        Some(KeyClass::Int) => "integers",
        Some(KeyClass::Str) => "strings",
        None => "another type",
    }
}

/// Key columns of a batch, readable row by row as typed key bytes.
struct KeyCols {
    cols: Vec<KeyColumn>,
}

enum KeyColumn {
    Int(ArrayRef),
    Str(ArrayRef),
}

impl KeyCols {
    fn new(batch: &RecordBatch, names: &[String]) -> Result<KeyCols, JoinError> {
        let mut cols = Vec::new();
        for n in names {
            let a = column(batch, n)?;
            let a = match a.data_type() {
                DataType::Dictionary(_, _) => arrow_cast::cast(&a, &DataType::Utf8)?,
                _ => a,
            };
            cols.push(match key_class(a.data_type()) {
                Some(KeyClass::Int) => KeyColumn::Int(arrow_cast::cast(&a, &DataType::Int64)?),
                Some(KeyClass::Str) => KeyColumn::Str(arrow_cast::cast(&a, &DataType::Utf8)?),
                None => {
                    return Err(JoinError::Input(format!(
                        "key column {n:?} is {}, not integers or strings",
                        a.data_type()
                    )))
                }
            });
        }
        Ok(KeyCols { cols })
    }

    /// Writes row `i`'s key into `out`; false when a part is null.
    #[inline]
    fn encode(&self, i: usize, out: &mut Vec<u8>) -> bool {
        out.clear();
        for c in &self.cols {
            match c {
                KeyColumn::Int(a) => {
                    if a.is_null(i) {
                        return false;
                    }
                    out.push(b'i');
                    out.extend_from_slice(&a.as_primitive::<Int64Type>().value(i).to_le_bytes());
                }
                KeyColumn::Str(a) => {
                    if a.is_null(i) {
                        return false;
                    }
                    let s = a.as_string::<i32>().value(i).as_bytes();
                    out.push(b's');
                    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                    out.extend_from_slice(s);
                }
            }
        }
        true
    }
}

/// The interned id of each row's key (`None`: a null part, or a key
/// `resolve` does not know). A single dictionary-encoded string key is
/// resolved once per dictionary value, not once per row.
/// Resolved ids of a dictionary's values, by the dictionary's identity.
/// The values array is held, so its buffer cannot be freed and its
/// address reused by another dictionary while the cache names it.
pub type DictCache = Option<(ArrayRef, Vec<Option<u32>>)>;

const UNRESOLVED: Option<u32> = Some(u32::MAX);

pub(crate) fn key_ids(
    batch: &RecordBatch,
    names: &[String],
    cache: &mut DictCache,
    resolve: &mut dyn FnMut(&[u8]) -> Option<u32>,
) -> Result<Vec<Option<u32>>, JoinError> {
    let n = batch.num_rows();
    if let [name] = names {
        let col = column(batch, name)?;
        if let DataType::Dictionary(_, v) = col.data_type() {
            if key_class(v) == Some(KeyClass::Str) {
                let dict = arrow_cast::cast(
                    &col,
                    &DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
                )?;
                let dict = dict.as_dictionary::<Int32Type>();
                let values = dict.values().as_string::<i32>();
                // Batches of one row group share its dictionary: resolve each
                // value once, when a row first uses it.
                let same = |held: &ArrayRef| {
                    let h = held.as_string::<i32>();
                    h.len() == values.len()
                        && h.values().as_ptr() == values.values().as_ptr()
                        && h.offsets().as_ptr() == values.offsets().as_ptr()
                };
                if cache.as_ref().is_none_or(|c| !same(&c.0)) {
                    *cache = Some((dict.values().clone(), vec![UNRESOLVED; values.len()]));
                }
                let ids = &mut cache.as_mut().expect("set above").1;
                let mut buf = Vec::with_capacity(32);
                let codes = dict.keys();
                return Ok((0..n)
                    .map(|i| {
                        if codes.is_null(i) {
                            return None;
                        }
                        let j = codes.value(i) as usize;
                        if ids[j] == UNRESOLVED {
                            ids[j] = if values.is_null(j) {
                                None
                            } else {
                                let s = values.value(j).as_bytes();
                                buf.clear();
                                buf.push(b's');
                                buf.extend_from_slice(&(s.len() as u32).to_le_bytes());
                                buf.extend_from_slice(s);
                                resolve(&buf)
                            };
                        }
                        ids[j]
                    })
                    .collect());
            }
        }
    }
    let kc = KeyCols::new(batch, names)?;
    let mut buf = Vec::with_capacity(32);
    Ok((0..n)
        .map(|i| {
            if kc.encode(i, &mut buf) {
                resolve(&buf)
            } else {
                None
            }
        })
        .collect())
}

pub(crate) fn column(batch: &RecordBatch, name: &str) -> Result<ArrayRef, JoinError> {
    batch
        .column_by_name(name)
        .cloned()
        .ok_or_else(|| JoinError::MissingColumn {
            column: name.to_string(),
            available: names(&batch.schema()),
        })
}

/// Timestamps of a column as UTC microseconds: timestamps of any unit (no
/// zone means UTC), dates, RFC 3339 text, or epoch numbers (seconds,
/// milliseconds, microseconds or nanoseconds, told apart by magnitude).
pub fn timestamps_micros(a: &ArrayRef, column: &str) -> Result<Vec<Option<Micros>>, JoinError> {
    let n = a.len();
    let mut out = Vec::with_capacity(n);
    match a.data_type() {
        DataType::Timestamp(unit, _) => {
            let a = arrow_cast::cast(a, &DataType::Timestamp(*unit, None))?;
            let (mul, div) = match unit {
                TimeUnit::Second => (1_000_000, 1),
                TimeUnit::Millisecond => (1000, 1),
                TimeUnit::Microsecond => (1, 1),
                TimeUnit::Nanosecond => (1, 1000),
            };
            let v = arrow_cast::cast(&a, &DataType::Int64)?;
            let v = v.as_primitive::<Int64Type>();
            for i in 0..n {
                out.push((!v.is_null(i)).then(|| (v.value(i) * mul).div_euclid(div)));
            }
        }
        DataType::Date32 => {
            let v = a.as_primitive::<Date32Type>();
            for i in 0..n {
                out.push((!v.is_null(i)).then(|| i64::from(v.value(i)) * 86_400_000_000));
            }
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let s = arrow_cast::cast(a, &DataType::Utf8)?;
            let s = s.as_string::<i32>();
            let mut cache = crate::time::DateCache::default();
            for i in 0..n {
                if s.is_null(i) {
                    out.push(None);
                    continue;
                }
                let text = s.value(i);
                let t = crate::time::parse_rfc3339_cached(text, &mut cache)
                    .or_else(|_| crate::time::parse_rfc3339(&format!("{}Z", text.replace(' ', "T"))))
                    .or_else(|_| crate::time::parse_rfc3339(&format!("{text}T00:00:00Z")))
                    .map_err(|_| {
                        JoinError::Input(format!(
                            "timestamp column {column:?} row {i}: {text:?} is not an RFC 3339 time"
                        ))
                    })?;
                out.push(Some(t));
            }
        }
        DataType::Float32 | DataType::Float64 => {
            let v = arrow_cast::cast(a, &DataType::Float64)?;
            let v = v.as_primitive::<Float64Type>();
            for i in 0..n {
                out.push((!v.is_null(i)).then(|| epoch_to_micros_f(v.value(i))));
            }
        }
        dt if key_class(dt) == Some(KeyClass::Int) => {
            let v = arrow_cast::cast(a, &DataType::Int64)?;
            let v = v.as_primitive::<Int64Type>();
            for i in 0..n {
                out.push((!v.is_null(i)).then(|| epoch_to_micros(v.value(i))));
            }
        }
        dt => {
            return Err(JoinError::Input(format!(
                "timestamp column {column:?} is {dt}: expected a timestamp, RFC 3339 text or epoch numbers"
            )))
        }
    }
    Ok(out)
}

fn epoch_to_micros(v: i64) -> Micros {
    let a = v.unsigned_abs();
    if a < 100_000_000_000 {
        v.saturating_mul(1_000_000)
    } else if a < 100_000_000_000_000 {
        v.saturating_mul(1000)
    } else if a < 100_000_000_000_000_000 {
        v
    } else {
        v / 1000
    }
}

fn epoch_to_micros_f(v: f64) -> Micros {
    let a = v.abs();
    let us = if a < 1e11 {
        v * 1e6
    } else if a < 1e14 {
        v * 1e3
    } else if a < 1e17 {
        v
    } else {
        v / 1e3
    };
    us.round() as i64
}

/// Interned keys: a table of (hash, id) with short keys inline, so a lookup
/// compares the stored hash and bytes without touching other memory; longer
/// keys live in an arena.
struct KeyIndex {
    table: hashbrown::HashTable<Slot>,
    offs: Vec<u32>,
    arena: Vec<u8>,
}

const INLINE: usize = 19;

#[derive(Clone, Copy)]
struct Slot {
    hash: u64,
    id: u32,
    len: u8,
    inline: [u8; INLINE],
}

const EMPTY: Slot = Slot {
    hash: 0,
    id: 0,
    len: 0,
    inline: [0; INLINE],
};

impl KeyIndex {
    fn new() -> KeyIndex {
        KeyIndex {
            table: hashbrown::HashTable::new(),
            offs: vec![0],
            arena: Vec::new(),
        }
    }

    fn len(&self) -> usize {
        self.offs.len() - 1
    }

    #[inline]
    fn hash(key: &[u8]) -> u64 {
        use std::hash::BuildHasher;
        FxBuildHasher.hash_one(key)
    }

    #[inline]
    fn matches(&self, s: &Slot, h: u64, key: &[u8]) -> bool {
        if s.hash != h {
            return false;
        }
        if key.len() <= INLINE {
            s.len as usize == key.len() && crate::event::short_eq(&s.inline[..key.len()], key)
        } else {
            let id = s.id as usize;
            &self.arena[self.offs[id] as usize..self.offs[id + 1] as usize] == key
        }
    }

    /// The keys by id.
    fn in_order(&self) -> impl Iterator<Item = &[u8]> {
        let mut by_id: Vec<&Slot> = vec![&EMPTY; self.len()];
        for s in self.table.iter() {
            by_id[s.id as usize] = s;
        }
        by_id.into_iter().map(|s| {
            if s.len as usize <= INLINE {
                &s.inline[..s.len as usize]
            } else {
                let id = s.id as usize;
                &self.arena[self.offs[id] as usize..self.offs[id + 1] as usize]
            }
        })
    }

    #[inline]
    fn get(&self, key: &[u8]) -> Option<u32> {
        let h = Self::hash(key);
        self.table
            .find(h, |s| self.matches(s, h, key))
            .map(|s| s.id)
    }

    #[inline]
    fn intern(&mut self, key: &[u8]) -> u32 {
        let h = Self::hash(key);
        if let Some(s) = self.table.find(h, |s| self.matches(s, h, key)) {
            return s.id;
        }
        let id = self.len() as u32;
        let mut slot = Slot {
            hash: h,
            id,
            len: u8::MAX,
            inline: [0; INLINE],
        };
        if key.len() <= INLINE {
            slot.len = key.len() as u8;
            slot.inline[..key.len()].copy_from_slice(key);
        } else {
            self.arena.extend_from_slice(key);
        }
        self.offs.push(self.arena.len() as u32);
        self.table.insert_unique(h, slot, |s| s.hash);
        id
    }
}

/// The entity rows that have a key, as (key, time, row), sorted by key and
/// time: a counting sort by key (keys are dense ids), then each key's few
/// rows by time. Rows of one key at one time get the same answer, so their
/// order among themselves does not matter.
fn by_key_and_time(ids: &[Option<u32>], ts: &[Micros], keys: usize) -> Vec<(u32, Micros, u32)> {
    if keys > 4 * ids.len() {
        // Few rows against many keys: a comparison sort costs less than a
        // pass over every key.
        let mut order: Vec<(u32, Micros, u32)> = ids
            .iter()
            .zip(ts)
            .enumerate()
            .filter_map(|(i, (id, &t))| id.map(|id| (id, t, i as u32)))
            .collect();
        order.sort_unstable_by_key(|o| (o.0, o.1));
        return order;
    }
    let mut start = vec![0u32; keys + 1];
    for id in ids.iter().flatten() {
        start[*id as usize + 1] += 1;
    }
    for k in 0..keys {
        start[k + 1] += start[k];
    }
    let n = start[keys] as usize;
    let mut at = start.clone();
    let mut order: Vec<(u32, Micros, u32)> = vec![(0, 0, 0); n];
    for (i, (id, &t)) in ids.iter().zip(ts).enumerate() {
        if let Some(id) = *id {
            let p = &mut at[id as usize];
            order[*p as usize] = (id, t, i as u32);
            *p += 1;
        }
    }
    for k in 0..keys {
        let run = &mut order[start[k] as usize..start[k + 1] as usize];
        if run.len() > 1 {
            run.sort_unstable_by_key(|o| o.1);
        }
    }
    order
}

/// One offline row in the index of a group (sorted by key, then by
/// (eligibility time, window end, pane)).
trait Placed: Copy {
    fn elig(&self) -> Micros;
    fn sort_key(&self) -> (Micros, Micros, u32);
    /// The row's place among all rows read (see `FeatureTable::starts`).
    fn at(&self) -> u32;
    /// The best position of its key up to `p` (itself at `p`).
    fn best(run: &[Self], p: usize) -> usize;
}

/// In final mode a row is eligible at its window's end, so the latest
/// window (then pane) up to a time is the last row eligible by then: no
/// best to keep, 16 bytes per row.
#[derive(Clone, Copy)]
struct FinalPos {
    elig: Micros,
    pane: u32,
    at: u32,
}

impl Placed for FinalPos {
    #[inline]
    fn elig(&self) -> Micros {
        self.elig
    }
    #[inline]
    fn sort_key(&self) -> (Micros, Micros, u32) {
        (self.elig, self.elig, self.pane)
    }
    #[inline]
    fn at(&self) -> u32 {
        self.at
    }
    #[inline]
    fn best(_: &[Self], p: usize) -> usize {
        p
    }
}

/// In as-of-emit mode a row is eligible when it was emitted, and a later
/// emission may be of an older window: the best so far is kept.
#[derive(Clone, Copy)]
struct EmitPos {
    elig: Micros,
    we: Micros,
    pane: u32,
    best: u32,
    at: u32,
}

impl Placed for EmitPos {
    #[inline]
    fn elig(&self) -> Micros {
        self.elig
    }
    #[inline]
    fn sort_key(&self) -> (Micros, Micros, u32) {
        (self.elig, self.we, self.pane)
    }
    #[inline]
    fn at(&self) -> u32 {
        self.at
    }
    #[inline]
    fn best(run: &[Self], p: usize) -> usize {
        run[p].best as usize
    }
}

/// The placed rows of a group, in the layout of its mode.
enum Index {
    Final(Vec<FinalPos>),
    Emit(Vec<EmitPos>),
}

/// Places each eligible row at its key's next position (a counting sort,
/// stable: offline rows mostly come in time order), one record written
/// once per row, uninitialised memory before; then sorts the runs that are
/// out of order (stable: rows equal in all three keys keep their input
/// order) and calls `finish` on each run with its start. On `threads`
/// threads, each owning the keys of a contiguous share of the positions:
/// every thread reads all rows and writes only its own keys' places.
fn place<P: Placed + Send>(
    ranges: &[(u32, u32)],
    row_ids: &[Vec<u32>],
    make: impl Fn(usize, usize, u32) -> P + Sync,
    threads: usize,
    finish: impl Fn(&mut [P], u32) + Sync,
) -> Vec<P> {
    let n = ranges.last().map_or(0, |r| (r.0 + r.1) as usize);
    let mut pos: Vec<P> = Vec::with_capacity(n);
    // Key cuts: thread t owns keys cuts[t]..cuts[t + 1].
    let cuts = split_even(ranges.iter().map(|r| r.1 as u64), threads.max(1));
    let base = Shared(pos.spare_capacity_mut()[..n].as_mut_ptr());
    let fill = |keys: std::ops::Range<usize>| {
        let mut at: Vec<u32> = ranges[keys.clone()].iter().map(|r| r.0).collect();
        let (lo, hi) = (keys.start as u32, keys.end as u32);
        let mut global = 0u32;
        for (bi, rid) in row_ids.iter().enumerate() {
            for (i, &k) in rid.iter().enumerate() {
                if k >= lo && k < hi {
                    let p = &mut at[(k - lo) as usize];
                    // SAFETY: positions `ranges[k]` belong to key k alone,
                    // and key k to this call alone; `p` stays inside them.
                    unsafe { (*base.get().add(*p as usize)).write(make(bi, i, global + i as u32)) };
                    *p += 1;
                }
            }
            global += rid.len() as u32;
        }
    };
    on_threads(cuts.windows(2).map(|w| w[0]..w[1]).collect(), fill);
    // SAFETY: the counting sort wrote every position below `n` once:
    // `at[k]` runs from the start of key k's range through its end, and
    // the ranges tile 0..n.
    unsafe { pos.set_len(n) };
    let order = |(pos, offset, keys): (&mut [P], u32, &[(u32, u32)])| {
        for &(start, len) in keys {
            let run = &mut pos[(start - offset) as usize..(start - offset + len) as usize];
            if !run.windows(2).all(|w| w[0].sort_key() <= w[1].sort_key()) {
                run.sort_by_key(|p| p.sort_key());
            }
            finish(run, start);
        }
    };
    let mut shares = Vec::with_capacity(cuts.len());
    let mut rest: &mut [P] = &mut pos;
    let mut offset = 0u32;
    for w in cuts.windows(2) {
        let keys = &ranges[w[0]..w[1]];
        let len: u32 = keys.iter().map(|r| r.1).sum();
        let (mine, tail) = rest.split_at_mut(len as usize);
        rest = tail;
        shares.push((mine, offset, keys));
        offset += len;
    }
    on_threads(shares, order);
    pos
}

/// `f` of each item, each on a thread of its own (on this one when there
/// is a single item), the answers in the items' order.
fn on_threads<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    if items.len() <= 1 {
        return items.into_iter().map(f).collect();
    }
    let f = &f;
    std::thread::scope(|sc| {
        let handles: Vec<_> = items
            .into_iter()
            .map(|item| sc.spawn(move || f(item)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a worker thread does not panic"))
            .collect()
    })
}

/// A pointer that threads writing disjoint places share.
struct Shared<T>(*mut T);

impl<T> Shared<T> {
    fn get(&self) -> *mut T {
        self.0
    }
}

// SAFETY: only used for writes to disjoint places (see `place`).
unsafe impl<T: Send> Send for Shared<T> {}
unsafe impl<T: Send> Sync for Shared<T> {}

/// Cuts `0..weights.len()` into at most `parts` contiguous ranges of about
/// equal total weight: the cut points, first 0, last the length.
fn split_even(weights: impl Iterator<Item = u64> + Clone, parts: usize) -> Vec<usize> {
    let total: u64 = weights.clone().sum();
    let mut cuts = vec![0];
    let mut sum = 0u64;
    let mut len = 0;
    for (i, w) in weights.enumerate() {
        let part = cuts.len() as u64;
        if part < parts as u64
            && sum >= total * part / parts as u64
            && i > *cuts.last().unwrap_or(&0)
        {
            cuts.push(i);
        }
        sum += w;
        len = i + 1;
    }
    cuts.push(len);
    cuts.dedup();
    cuts
}

/// One share of a group's batches after the first pass (see
/// `FeatureTable::from_batches_typed`): keys numbered in a table of its own.
struct Part {
    keys: KeyIndex,
    key_classes: Vec<Option<KeyClass>>,
    row_ids: Vec<Vec<u32>>,
    values: Vec<Vec<ArrayRef>>,
    we: Vec<arrow_buffer::ScalarBuffer<Micros>>,
    elig: Vec<arrow_buffer::ScalarBuffer<Micros>>,
    pane: Vec<ArrayRef>,
}

/// The first pass over a run of batches: each eligible row's key id
/// (u32::MAX: not eligible), its times and pane, and the selected columns
/// cast to their output types.
fn load_part(
    spec: &GroupSpec,
    mode: Mode,
    batches: &[RecordBatch],
    selected: &[String],
    types: &[DataType],
) -> Result<Part, JoinError> {
    let mut p = Part {
        keys: KeyIndex::new(),
        key_classes: vec![None; spec.keys.len()],
        row_ids: Vec::with_capacity(batches.len()),
        values: Vec::with_capacity(batches.len()),
        we: Vec::with_capacity(batches.len()),
        elig: Vec::with_capacity(batches.len()),
        pane: Vec::with_capacity(batches.len()),
    };
    let mut dict_cache: DictCache = None;
    for b in batches {
        for (k, name) in spec.keys.iter().enumerate() {
            let c = column(b, name).map_err(|_| {
                JoinError::Input(format!(
                    "feature group {:?} has no key column {name:?}",
                    spec.name
                ))
            })?;
            if p.key_classes[k].is_none() {
                p.key_classes[k] = key_class(c.data_type());
            }
        }
        let keys = &mut p.keys;
        let ids = key_ids(b, &spec.keys, &mut dict_cache, &mut |k: &[u8]| {
            Some(keys.intern(k))
        })?;
        let we = micros_col(b, "window_end")?;
        // In final mode a row is eligible at its window's end.
        let elig = match mode {
            Mode::Final => arrow_buffer::ScalarBuffer::from(Vec::new()),
            Mode::AsOfEmit => micros_col(b, "emitted_at")?,
        };
        let pane = arrow_cast::cast(&column(b, "pane_index")?, &DataType::Int64)?;
        let fin = column(b, "is_final")?;
        let fin = fin.as_boolean();
        let retr = column(b, "retraction")?;
        let retr = retr.as_boolean();
        let mut cols = Vec::with_capacity(selected.len());
        for (i, f) in selected.iter().enumerate() {
            let c = match b.column_by_name(f) {
                Some(c) if c.data_type() == &types[i] => c.clone(),
                Some(c) => arrow_cast::cast(c, &types[i])?,
                None => new_null_array(&types[i], b.num_rows()),
            };
            cols.push(c);
        }
        let rid: Vec<u32> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let take = !retr.value(i) && (mode == Mode::AsOfEmit || fin.value(i));
                match (take, id) {
                    (true, Some(k)) => *k,
                    _ => u32::MAX,
                }
            })
            .collect();
        p.row_ids.push(rid);
        p.values.push(cols);
        p.we.push(we);
        p.elig.push(elig);
        p.pane.push(pane);
    }
    Ok(p)
}

/// One indexed feature group.
pub struct FeatureTable {
    pub spec: GroupSpec,
    /// Output names and types of the selected features.
    pub fields: Vec<Field>,
    /// How each output column is made from the loaded ones.
    outputs: Vec<JoinOut>,
    /// Loaded columns, one batch per input batch, plus a last one-row batch of nulls.
    values: Vec<Vec<ArrayRef>>,
    /// Interned keys; `ranges[id]` is (start, len) in the sorted arrays.
    keys: KeyIndex,
    ranges: Vec<(u32, u32)>,
    /// The rows, by key and then (eligibility time, window end, pane).
    index: Index,
    /// Where each loaded batch starts among all rows read.
    starts: Vec<u32>,
    key_classes: Vec<Option<KeyClass>>,
    pub rows: usize,
}

impl FeatureTable {
    /// Indexes a group's offline rows (the Parquet schema of SPEC 6).
    pub fn from_batches(
        spec: GroupSpec,
        mode: Mode,
        batches: &[RecordBatch],
    ) -> Result<FeatureTable, JoinError> {
        Self::from_batches_typed(spec, mode, batches, None)
    }

    /// As [`FeatureTable::from_batches`], with the features' output types
    /// given (so that every partition of a spilled join agrees).
    pub fn from_batches_typed(
        spec: GroupSpec,
        mode: Mode,
        batches: &[RecordBatch],
        given: Option<&[DataType]>,
    ) -> Result<FeatureTable, JoinError> {
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let threads = if rows < PIECE_ROWS {
            1
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        };
        Self::build(spec, mode, batches, given, threads)
    }

    /// As [`FeatureTable::from_batches`], indexed on `threads` threads (the
    /// table is the same whatever the number).
    pub fn from_batches_on(
        spec: GroupSpec,
        mode: Mode,
        batches: &[RecordBatch],
        threads: usize,
    ) -> Result<FeatureTable, JoinError> {
        Self::build(spec, mode, batches, None, threads)
    }

    fn build(
        spec: GroupSpec,
        mode: Mode,
        batches: &[RecordBatch],
        given: Option<&[DataType]>,
        threads: usize,
    ) -> Result<FeatureTable, JoinError> {
        if mode == Mode::Final && spec.discarding {
            return Err(JoinError::Discarding(spec.name.clone()));
        }
        let asked: Vec<String> = spec.selected();
        for f in &asked {
            if !spec.all_features.contains(f) && spec.on_read(f).is_none() {
                let mut available = spec.all_features.clone();
                if let Some(p) = &spec.plan {
                    available.extend(p.on_read.iter().map(|r| r.name.clone()));
                }
                return Err(JoinError::UnknownFeature {
                    group: spec.name.clone(),
                    feature: f.clone(),
                    available: available.join(", "),
                });
            }
        }
        let selected: Vec<String> = spec.columns_read();
        let given: Option<Vec<DataType>> = given.map(|g| {
            // The output types given, for the stored columns asked for;
            // what request-time features read is taken as it comes.
            selected
                .iter()
                .map(|n| {
                    asked
                        .iter()
                        .position(|a| a == n)
                        .and_then(|i| g.get(i).cloned())
                        .unwrap_or(DataType::Float64)
                })
                .collect()
        });
        let given = given.as_deref();
        // Output type of each feature: the first file that has it decides;
        // others are cast to it (or everything becomes text).
        let mut types: Vec<Option<DataType>> = vec![None; selected.len()];
        for b in batches {
            for (i, f) in selected.iter().enumerate() {
                if let (None, Some(c)) = (&types[i], b.column_by_name(f)) {
                    types[i] = Some(c.data_type().clone());
                }
            }
        }
        let mut types: Vec<DataType> = match given {
            Some(g) => g.to_vec(),
            None => types
                .into_iter()
                .map(|t| t.unwrap_or(DataType::Float64))
                .collect(),
        };
        for b in batches {
            for (i, f) in selected.iter().enumerate() {
                if let Some(c) = b.column_by_name(f) {
                    if c.data_type() != &types[i]
                        && !arrow_cast::can_cast_types(c.data_type(), &types[i])
                    {
                        types[i] = DataType::Utf8;
                    }
                }
            }
        }
        // Pass 1, on every core over contiguous runs of batches, each with
        // keys interned in a table of its own: the key id of each eligible
        // row (u32::MAX: not eligible) and the loaded columns. The tables
        // are then merged in batch order (so ids are numbered by first
        // appearance, as one pass would), and each part's ids renumbered.
        let threads = threads.clamp(1, batches.len().max(1));
        let cuts = split_even(batches.iter().map(|b| b.num_rows() as u64), threads);
        let load = |part: &[RecordBatch]| load_part(&spec, mode, part, &selected, &types);
        let runs: Vec<&[RecordBatch]> = if threads == 1 {
            vec![batches]
        } else {
            cuts.windows(2).map(|w| &batches[w[0]..w[1]]).collect()
        };
        let parts = on_threads(runs, load)
            .into_iter()
            .collect::<Result<Vec<Part>, JoinError>>()?;
        let mut key_classes: Vec<Option<KeyClass>> = vec![None; spec.keys.len()];
        for p in &parts {
            for (k, c) in key_classes.iter_mut().zip(&p.key_classes) {
                if k.is_none() {
                    *k = *c;
                }
            }
        }
        let mut parts = parts;
        let (interned, maps): (KeyIndex, Vec<Vec<u32>>) = if parts.len() == 1 {
            // One part: its numbering is the table's (no map: none needed).
            let keys = std::mem::replace(&mut parts[0].keys, KeyIndex::new());
            (keys, vec![Vec::new()])
        } else {
            let mut interned = KeyIndex::new();
            let maps = parts
                .iter()
                .map(|p| p.keys.in_order().map(|k| interned.intern(k)).collect())
                .collect();
            (interned, maps)
        };
        let keys = interned.len();
        let mut values: Vec<Vec<ArrayRef>> = Vec::with_capacity(batches.len());
        let mut row_ids: Vec<Vec<u32>> = Vec::with_capacity(batches.len());
        let mut cols_we: Vec<arrow_buffer::ScalarBuffer<Micros>> =
            Vec::with_capacity(batches.len());
        let mut cols_elig: Vec<arrow_buffer::ScalarBuffer<Micros>> =
            Vec::with_capacity(batches.len());
        let mut cols_pane: Vec<ArrayRef> = Vec::with_capacity(batches.len());
        let renumber = |(mut p, map): (Part, &Vec<u32>)| {
            let mut count = vec![0u32; keys];
            for rid in &mut p.row_ids {
                for k in rid.iter_mut().filter(|k| **k != u32::MAX) {
                    if !map.is_empty() {
                        *k = map[*k as usize];
                    }
                    count[*k as usize] += 1;
                }
            }
            (p, count)
        };
        let renumbered = on_threads(parts.into_iter().zip(&maps).collect(), renumber);
        let mut count = vec![0u32; keys];
        for (p, c) in renumbered {
            for (a, b) in count.iter_mut().zip(c) {
                *a += b;
            }
            values.extend(p.values);
            row_ids.extend(p.row_ids);
            cols_we.extend(p.we);
            cols_elig.extend(p.elig);
            cols_pane.extend(p.pane);
        }
        // Pass 2: each eligible row placed in its key's run (`place`), in
        // the layout of the mode.
        let mut ranges: Vec<(u32, u32)> = Vec::with_capacity(count.len());
        let mut total = 0u32;
        for &c in &count {
            ranges.push((total, c));
            total += c;
        }
        if row_ids.iter().map(|r| r.len() as u64).sum::<u64>() >= u32::MAX as u64 {
            return Err(JoinError::Input(format!(
                "feature group {:?} has more than {} rows in one pass",
                spec.name,
                u32::MAX
            )));
        }
        let mut starts = Vec::with_capacity(row_ids.len() + 1);
        let mut next = 0u32;
        for r in &row_ids {
            starts.push(next);
            next += r.len() as u32;
        }
        // The no-match row's batch.
        starts.push(next);
        let panes: Vec<&[i64]> = cols_pane
            .iter()
            .map(|c| c.as_primitive::<Int64Type>().values().as_ref())
            .collect();
        let pane_of = |bi: usize, i: usize| panes[bi][i].clamp(0, u32::MAX as i64) as u32;
        let index = match mode {
            Mode::Final => {
                let pos = place(
                    &ranges,
                    &row_ids,
                    |bi, i, at| FinalPos {
                        elig: cols_we[bi][i],
                        pane: pane_of(bi, i),
                        at,
                    },
                    threads,
                    |_, _| {},
                );
                Index::Final(pos)
            }
            Mode::AsOfEmit => {
                let pos = place(
                    &ranges,
                    &row_ids,
                    |bi, i, at| EmitPos {
                        elig: cols_elig[bi][i],
                        we: cols_we[bi][i],
                        pane: pane_of(bi, i),
                        best: 0,
                        at,
                    },
                    threads,
                    // The best row so far of each position.
                    |run: &mut [EmitPos], start: u32| {
                        let mut top = 0usize;
                        for j in 0..run.len() {
                            if (run[j].we, run[j].pane) >= (run[top].we, run[top].pane) {
                                top = j;
                            }
                            run[j].best = start + top as u32;
                        }
                    },
                );
                Index::Emit(pos)
            }
        };
        drop(panes);
        drop((row_ids, cols_we, cols_elig, cols_pane));
        // The no-match row.
        values.push(types.iter().map(|t| new_null_array(t, 1)).collect());
        let loaded = |name: &str| selected.iter().position(|s| s == name);
        let mut fields = Vec::with_capacity(asked.len());
        let mut outputs = Vec::with_capacity(asked.len());
        for a in &asked {
            match (spec.on_read(a), &spec.plan) {
                (Some(j), Some(p)) => {
                    fields.push(Field::new(a, DataType::Float64, true));
                    let deps = p.on_read[j]
                        .deps
                        .iter()
                        .map(|&d| {
                            let at = loaded(&p.pipeline.features[d].name).expect("read for it");
                            (d, at)
                        })
                        .collect();
                    outputs.push(JoinOut::OnRead {
                        j,
                        deps,
                        bounds: (
                            loaded("window_start").expect("read for it"),
                            loaded("window_end").expect("read for it"),
                        ),
                    });
                }
                _ => {
                    let at = loaded(a).expect("every stored feature asked for is read");
                    fields.push(Field::new(a, types[at].clone(), true));
                    outputs.push(JoinOut::Stored(at));
                }
            }
        }
        Ok(FeatureTable {
            rows: total as usize,
            spec,
            fields,
            outputs,
            values,
            keys: interned,
            ranges,
            index,
            starts,
            key_classes,
        })
    }

    /// The rows of many entities at once: sorted by (key, time), they walk
    /// the key runs in address order, each run once (a merge, not a search
    /// per row). Returns (batch, row) per entity, in the entities' order,
    /// and how many matched.
    fn lookup_all(&self, ids: &[Option<u32>], ts: &[Micros]) -> (Vec<(usize, usize)>, u64) {
        match &self.index {
            Index::Final(pos) => self.lookup_in(pos, ids, ts),
            Index::Emit(pos) => self.lookup_in(pos, ids, ts),
        }
    }

    fn lookup_in<P: Placed>(
        &self,
        pos: &[P],
        ids: &[Option<u32>],
        ts: &[Micros],
    ) -> (Vec<(usize, usize)>, u64) {
        let null = self.null_ref();
        let mut idx = vec![null; ids.len()];
        let order = by_key_and_time(ids, ts, self.ranges.len());
        let mut matched = 0;
        let mut i = 0;
        // Each key's run is read ahead: the walk below waits on its first
        // line otherwise (the runs of a piece's keys are far apart), and
        // where the range of that key is, a few keys further ahead.
        const AHEAD: usize = 8;
        while i < order.len() {
            if let Some(o) = order.get(i + 2 * AHEAD) {
                prefetch(self.ranges.as_ptr().wrapping_add(o.0 as usize));
            }
            if let Some(o) = order.get(i + AHEAD) {
                prefetch(
                    pos.as_ptr()
                        .wrapping_add(self.ranges[o.0 as usize].0 as usize),
                );
            }
            let id = order[i].0;
            let (start, len) = self.ranges[id as usize];
            let (start, end) = (start as usize, (start + len) as usize);
            let mut p = start;
            while i < order.len() && order[i].0 == id {
                let (_, t, row) = order[i];
                while p < end && pos[p].elig() <= t {
                    p += 1;
                }
                if p > start {
                    let best = &pos[P::best(pos, p - 1)];
                    // The TTL counts from the eligibility time in both modes.
                    let fresh = match self.spec.ttl {
                        Some(ttl) => t.saturating_sub(best.elig()) <= ttl,
                        None => true,
                    };
                    if fresh {
                        let at = best.at();
                        let b = self.starts.partition_point(|&s| s <= at) - 1;
                        idx[row as usize] = (b, (at - self.starts[b]) as usize);
                        matched += 1;
                    }
                }
                i += 1;
            }
        }
        (idx, matched)
    }

    /// The feature columns for entity rows `batch` at times `ts`, and how
    /// many rows matched.
    pub fn features_for(
        &self,
        batch: &RecordBatch,
        ts: &[Micros],
        cache: &mut DictCache,
    ) -> Result<(Vec<ArrayRef>, u64), JoinError> {
        let ids = key_ids(batch, &self.spec.keys, cache, &mut |k: &[u8]| {
            self.keys.get(k)
        })?;
        let (idx, matched) = self.lookup_all(&ids, ts);
        let width = self.values.first().map_or(0, Vec::len);
        let mut picked: Vec<Option<ArrayRef>> = vec![None; width];
        let mut pick = |f: usize| -> Result<ArrayRef, JoinError> {
            if let Some(a) = &picked[f] {
                return Ok(a.clone());
            }
            let arrays: Vec<&dyn Array> = self.values.iter().map(|b| b[f].as_ref()).collect();
            let a = arrow_select::interleave::interleave(&arrays, &idx)?;
            picked[f] = Some(a.clone());
            Ok(a)
        };
        let mut cols = Vec::with_capacity(self.outputs.len());
        for o in &self.outputs {
            match o {
                JoinOut::Stored(f) => cols.push(pick(*f)?),
                JoinOut::OnRead { j, deps, bounds } => {
                    let plan = self
                        .spec
                        .plan
                        .as_ref()
                        .expect("a request-time feature has a plan");
                    let nums: Vec<(usize, arrow_array::Float64Array)> = deps
                        .iter()
                        .map(|&(d, f)| {
                            let a = arrow_cast::cast(&pick(f)?, &DataType::Float64)?;
                            Ok((d, a.as_primitive::<Float64Type>().clone()))
                        })
                        .collect::<Result<_, JoinError>>()?;
                    let starts = timestamps_micros(&pick(bounds.0)?, "window_start")?;
                    let ends = timestamps_micros(&pick(bounds.1)?, "window_end")?;
                    let null = self.null_ref();
                    let mut out = arrow_array::builder::Float64Builder::with_capacity(ts.len());
                    for (row, &at) in idx.iter().enumerate() {
                        let (Some(ws), Some(we), true) = (starts[row], ends[row], at != null)
                        else {
                            out.append_null();
                            continue;
                        };
                        let feature = |d: usize| {
                            nums.iter()
                                .find(|x| x.0 == d)
                                .and_then(|(_, a)| (!a.is_null(row)).then(|| a.value(row)))
                        };
                        out.append_option(plan.on_read_eval(*j, feature, ws, we, ts[row]));
                    }
                    cols.push(Arc::new(out.finish()) as ArrayRef);
                }
            }
        }
        Ok((cols, matched))
    }

    fn null_ref(&self) -> (usize, usize) {
        (self.values.len() - 1, 0)
    }
}

/// A timestamp column in microseconds (nulls as the earliest time): the
/// column's own buffer when it already is that, without a copy.
pub(crate) fn micros_col(
    b: &RecordBatch,
    name: &str,
) -> Result<arrow_buffer::ScalarBuffer<Micros>, JoinError> {
    let c = column(b, name)?;
    if let (DataType::Timestamp(TimeUnit::Microsecond, _), 0) = (c.data_type(), c.null_count()) {
        return Ok(c
            .as_primitive::<TimestampMicrosecondType>()
            .values()
            .clone());
    }
    let v = timestamps_micros(&c, name)?;
    Ok(v.into_iter().map(|x| x.unwrap_or(i64::MIN)).collect())
}

/// Options of a join over batches.
#[derive(Debug, Clone)]
pub struct JoinOptions {
    pub timestamp_column: String,
    pub full_names: bool,
}

/// The entity columns, then each group's features (named `GROUP__FEATURE`
/// with `full_names`); a name that would appear twice is refused.
pub(crate) fn output_schema<'a>(
    input: &Schema,
    groups: impl Iterator<Item = (&'a str, &'a [Field])>,
    full_names: bool,
) -> Result<SchemaRef, JoinError> {
    let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
    let mut seen: std::collections::HashSet<String> =
        fields.iter().map(|f| f.name().clone()).collect();
    for (group, features) in groups {
        for f in features {
            let name = if full_names {
                format!("{group}__{}", f.name())
            } else {
                f.name().clone()
            };
            if !seen.insert(name.clone()) {
                return Err(JoinError::DuplicateColumn(name));
            }
            fields.push(Field::new(name, f.data_type().clone(), true));
        }
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// The column names of a schema, for error messages.
fn names(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks that the entity schema has the timestamp and key columns, and
/// that each key column's type class agrees with the group's (`None`: not
/// known).
pub(crate) fn check_entities<'a>(
    input: &Schema,
    timestamp_column: &str,
    groups: impl Iterator<Item = (&'a GroupSpec, Vec<Option<KeyClass>>)>,
) -> Result<(), JoinError> {
    let missing = |column: &str| JoinError::MissingColumn {
        column: column.to_string(),
        available: names(input),
    };
    input
        .field_with_name(timestamp_column)
        .map_err(|_| missing(timestamp_column))?;
    for (spec, classes) in groups {
        for (k, name) in spec.keys.iter().enumerate() {
            let f = input.field_with_name(name).map_err(|_| missing(name))?;
            let ec = key_class(f.data_type());
            let fc = classes.get(k).copied().flatten();
            if ec.is_none() || (fc.is_some() && ec != fc) {
                return Err(JoinError::KeyType {
                    column: name.clone(),
                    entity: format!("{} ({})", class_name(ec), f.data_type()),
                    group: spec.name.clone(),
                    feature: class_name(fc).to_string(),
                });
            }
        }
    }
    Ok(())
}

/// Joins entity batches with indexed feature groups.
pub struct Joiner {
    pub tables: Vec<FeatureTable>,
    pub opts: JoinOptions,
    schema: Option<SchemaRef>,
    /// Matched entity rows per group.
    pub matched: Vec<u64>,
    pub rows: u64,
    row_base: usize,
    dict_caches: Vec<DictCache>,
}

impl Joiner {
    pub fn new(tables: Vec<FeatureTable>, opts: JoinOptions) -> Joiner {
        let n = tables.len();
        Joiner {
            tables,
            opts,
            schema: None,
            matched: vec![0; n],
            rows: 0,
            row_base: 0,
            dict_caches: vec![None; n],
        }
    }

    /// The output schema for entity rows of schema `input`.
    pub fn output_schema(&self, input: &Schema) -> Result<SchemaRef, JoinError> {
        output_schema(
            input,
            self.tables
                .iter()
                .map(|t| (t.spec.name.as_str(), t.fields.as_slice())),
            self.opts.full_names,
        )
    }

    /// Checks that the entity schema has the key and timestamp columns and
    /// that key types agree with each group.
    pub fn check(&self, input: &Schema) -> Result<(), JoinError> {
        check_entities(
            input,
            &self.opts.timestamp_column,
            self.tables.iter().map(|t| (&t.spec, t.key_classes.clone())),
        )
    }

    /// Joins one batch of entity rows: the same rows, in order, with the
    /// features appended.
    pub fn join_batch(&mut self, batch: &RecordBatch) -> Result<RecordBatch, JoinError> {
        let schema = self.schema_for(batch)?;
        let (out, matched) = join_piece(
            &self.tables,
            &self.opts.timestamp_column,
            schema,
            batch,
            &mut self.dict_caches,
            self.row_base,
        )?;
        for (m, n) in self.matched.iter_mut().zip(matched) {
            *m += n;
        }
        self.rows += batch.num_rows() as u64;
        self.row_base += batch.num_rows();
        Ok(out)
    }

    /// Joins many batches of entity rows on up to `threads` threads: the
    /// same rows in the same order as [`Joiner::join_batch`] over each in
    /// turn, batches larger than a share of the rows cut into pieces
    /// (slices, not copies). Threads take pieces in turn, each with
    /// dictionary caches of its own; the feature tables are shared, read
    /// only. On errors, the one of the earliest piece is returned, as a
    /// sequential join would have met it first.
    pub fn join_all(
        &mut self,
        batches: &[RecordBatch],
        threads: usize,
    ) -> Result<Vec<RecordBatch>, JoinError> {
        let Some(first) = batches.first() else {
            return Ok(Vec::new());
        };
        let schema = self.schema_for(first)?;
        // Null times are counted over all the batches, not per piece.
        no_null_times(batches, &self.opts.timestamp_column, self.row_base)?;
        if threads <= 1 {
            return batches.iter().map(|b| self.join_batch(b)).collect();
        }
        // Pieces as large as two per thread allow: each piece walks the
        // runs of the keys it holds once, so smaller pieces revisit runs.
        let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let target = PIECE_ROWS.max(total.div_ceil(threads * 2));
        let mut pieces: Vec<(RecordBatch, usize)> = Vec::new();
        let mut base = self.row_base;
        for b in batches {
            let n = b.num_rows().div_ceil(target).max(1);
            let len = b.num_rows().div_ceil(n);
            let mut at = 0;
            while at < b.num_rows() {
                let len = len.min(b.num_rows() - at);
                pieces.push((b.slice(at, len), base + at));
                at += len;
            }
            base += b.num_rows();
        }
        let threads = threads.clamp(1, pieces.len().max(1));
        if threads == 1 {
            return pieces.iter().map(|(p, _)| self.join_batch(p)).collect();
        }
        // Each thread takes the next piece not yet taken, so pieces are
        // taken in order: when one fails, every earlier one has been taken
        // and is finished, and the earliest error is among the answers.
        type Piece = Result<(RecordBatch, Vec<u64>), JoinError>;
        let next = std::sync::atomic::AtomicUsize::new(0);
        let failed = std::sync::atomic::AtomicBool::new(false);
        let tables = &self.tables;
        let column = &self.opts.timestamp_column;
        let mut answers: Vec<(usize, Piece)> = std::thread::scope(|sc| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    let (pieces, schema, next, failed) = (&pieces, schema.clone(), &next, &failed);
                    sc.spawn(move || {
                        use std::sync::atomic::Ordering::SeqCst;
                        let mut caches: Vec<DictCache> = vec![None; tables.len()];
                        let mut out = Vec::new();
                        while !failed.load(SeqCst) {
                            let i = next.fetch_add(1, SeqCst);
                            let Some((p, base)) = pieces.get(i) else {
                                break;
                            };
                            let r =
                                join_piece(tables, column, schema.clone(), p, &mut caches, *base);
                            if r.is_err() {
                                failed.store(true, SeqCst);
                            }
                            out.push((i, r));
                        }
                        out
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("a joining thread does not panic"))
                .collect()
        });
        answers.sort_unstable_by_key(|a| a.0);
        let mut out = Vec::with_capacity(pieces.len());
        for (i, r) in answers {
            let (joined, matched) = r?;
            let p = &pieces[i].0;
            for (m, n) in self.matched.iter_mut().zip(matched) {
                *m += n;
            }
            self.rows += p.num_rows() as u64;
            self.row_base += p.num_rows();
            out.push(joined);
        }
        Ok(out)
    }

    /// The output schema, checked and set by the first batch.
    fn schema_for(&mut self, batch: &RecordBatch) -> Result<SchemaRef, JoinError> {
        if self.schema.is_none() {
            self.check(&batch.schema())?;
            self.schema = Some(self.output_schema(&batch.schema())?);
        }
        Ok(self.schema.clone().expect("set above"))
    }
}

/// Rows per piece of a parallel join at least ([`Joiner::join_all`]); also
/// the fewest rows worth indexing on several threads.
pub const PIECE_ROWS: usize = 64 * 1024;

/// Refuses entity rows without a time: the count over `batches` and the
/// first such row, counted from `row_base`.
fn no_null_times(
    batches: &[RecordBatch],
    column_name: &str,
    row_base: usize,
) -> Result<(), JoinError> {
    let mut count = 0;
    let mut first = None;
    let mut base = row_base;
    for b in batches {
        let t = column(b, column_name)?;
        if t.null_count() > 0 {
            count += t.null_count();
            first = first.or_else(|| (0..t.len()).find(|&i| t.is_null(i)).map(|i| base + i));
        }
        base += b.num_rows();
    }
    match first {
        None => Ok(()),
        Some(first) => Err(JoinError::NullTimestamps {
            column: column_name.to_string(),
            count,
            first,
        }),
    }
}

/// One batch of entity rows joined with every table: the joined batch and
/// the rows matched per table. `row_base` is the batch's first row among
/// all entity rows (for errors).
fn join_piece(
    tables: &[FeatureTable],
    timestamp_column: &str,
    schema: SchemaRef,
    batch: &RecordBatch,
    caches: &mut [DictCache],
    row_base: usize,
) -> Result<(RecordBatch, Vec<u64>), JoinError> {
    no_null_times(std::slice::from_ref(batch), timestamp_column, row_base)?;
    let ts = micros_col(batch, timestamp_column)?;
    let mut cols: Vec<ArrayRef> = batch.columns().to_vec();
    let mut matched = Vec::with_capacity(tables.len());
    for (t, cache) in tables.iter().zip(caches.iter_mut()) {
        let (features, m) = t.features_for(batch, &ts, cache)?;
        matched.push(m);
        cols.extend(features);
    }
    Ok((RecordBatch::try_new(schema, cols)?, matched))
}

/// Loads a group's offline Parquet files (`DIR/<group>/date=*/part-*.parquet`).
pub fn load_group_files(dir: &Path) -> Result<Vec<PathBuf>, JoinError> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let rd = std::fs::read_dir(&d).map_err(|source| JoinError::Io {
            path: d.clone(),
            source,
        })?;
        for e in rd.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if p.is_dir() && !name.starts_with('_') && !name.starts_with('.') {
                stack.push(p);
            } else if name.ends_with(".parquet") && !name.starts_with('.') {
                files.push(p);
            }
        }
    }
    files.sort();
    Ok(files)
}
