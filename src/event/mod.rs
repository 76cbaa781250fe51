//! Bytes -> events: the decode plan of a pipeline and a JSON reader built for it.
//!
//! A [`Decoder`] reads one record (a JSON object, or a Parquet row through the
//! same builder calls) into reused buffers and hands out an [`EventRef`]: the
//! encoded entity key, the event time in micros, and the values of the fields
//! the pipeline uses. Nothing is allocated per event once the buffers have
//! grown. Fields the pipeline does not use are checked for JSON validity and
//! skipped. Every refusal carries a dead-letter [`Reason`].

pub mod json;

use std::fmt;

use crate::config::{EventTimeSource, FeatureKind, Pipeline};
use crate::time::{Micros, TimeFormat};

/// Why an event went to the dead letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// Not a JSON object (syntax error, not UTF-8, truncated).
    InvalidJson,
    /// A key field is absent or null.
    MissingKey,
    /// A key field is an object or an array.
    BadKey,
    /// The event-time field is absent or null.
    MissingEventTime,
    /// The event-time field cannot be read in the pipeline's format.
    BadEventTime,
    /// A numeric aggregate met a non-numeric value.
    BadValue,
    /// The event time is more than `max_future` ahead of the wall clock.
    FutureTimestamp,
    /// The event's window was already dropped (`W >= end + allowed_lateness`).
    TooLate,
    /// The record exceeds the size limit.
    Oversized,
}

impl Reason {
    pub const ALL: [Reason; 9] = [
        Reason::InvalidJson,
        Reason::MissingKey,
        Reason::BadKey,
        Reason::MissingEventTime,
        Reason::BadEventTime,
        Reason::BadValue,
        Reason::FutureTimestamp,
        Reason::TooLate,
        Reason::Oversized,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidJson => "invalid_json",
            Reason::MissingKey => "missing_key",
            Reason::BadKey => "bad_key",
            Reason::MissingEventTime => "missing_event_time",
            Reason::BadEventTime => "bad_event_time",
            Reason::BadValue => "bad_value",
            Reason::FutureTimestamp => "future_timestamp",
            Reason::TooLate => "too_late",
            Reason::Oversized => "oversized",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused record: the reason and a human detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reason,
    pub detail: String,
}

impl Refusal {
    pub fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.detail)
    }
}

/// A decoded field value, stored without lifetimes (strings live in the scratch).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Slot {
    Missing,
    Null,
    Bool(bool),
    Num(f64),
    /// `scratch[start..end]`.
    Str(u32, u32),
    /// An object or an array.
    Nested,
}

/// A field value as the engine sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FieldVal<'a> {
    Missing,
    Null,
    Bool(bool),
    Num(f64),
    Str(&'a str),
    Nested,
}

/// One entity-key value, as written to outputs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyValue {
    Int(i64),
    Str(String),
}

impl fmt::Display for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyValue::Int(i) => write!(f, "{i}"),
            KeyValue::Str(s) => f.write_str(s),
        }
    }
}

/// Decodes an encoded composite key (tag, length-prefixed parts: no two
/// different tuples share an encoding).
pub fn decode_key(mut b: &[u8]) -> Vec<KeyValue> {
    let mut out = Vec::new();
    while let Some((&tag, rest)) = b.split_first() {
        match tag {
            b'i' if rest.len() >= 8 => {
                let (n, r) = rest.split_at(8);
                out.push(KeyValue::Int(i64::from_le_bytes(
                    n.try_into().expect("8 bytes"),
                )));
                b = r;
            }
            b's' if rest.len() >= 4 => {
                let (n, r) = rest.split_at(4);
                let len = u32::from_le_bytes(n.try_into().expect("4 bytes")) as usize;
                let (s, r) = r.split_at(len.min(r.len()));
                out.push(KeyValue::Str(String::from_utf8_lossy(s).into_owned()));
                b = r;
            }
            _ => break,
        }
    }
    out
}

/// One part of an encoded key, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPart<'a> {
    Int(i64),
    Str(&'a str),
}

/// An encoded composite key, inline when short (no allocation, no pointer to follow).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EncodedKey {
    Inline(u8, [u8; 30]),
    Heap(Box<[u8]>),
}

impl EncodedKey {
    pub fn new(b: &[u8]) -> EncodedKey {
        if b.len() <= 30 {
            let mut a = [0u8; 30];
            a[..b.len()].copy_from_slice(b);
            EncodedKey::Inline(b.len() as u8, a)
        } else {
            EncodedKey::Heap(b.into())
        }
    }

    /// From key values.
    pub fn from_values(vals: &[KeyValue]) -> EncodedKey {
        let mut b = Vec::new();
        encode_key(vals, &mut b);
        EncodedKey::new(&b)
    }

    #[inline]
    pub fn bytes(&self) -> &[u8] {
        match self {
            EncodedKey::Inline(n, a) => &a[..*n as usize],
            EncodedKey::Heap(b) => b,
        }
    }

    /// The key values.
    pub fn values(&self) -> Vec<KeyValue> {
        decode_key(self.bytes())
    }

    /// Part `i` of the key, without allocating.
    pub fn part(&self, i: usize) -> Option<KeyPart<'_>> {
        let mut b = self.bytes();
        let mut n = 0;
        while let Some((&tag, rest)) = b.split_first() {
            let (part, r) = match tag {
                b'i' if rest.len() >= 8 => {
                    let (x, r) = rest.split_at(8);
                    (KeyPart::Int(i64::from_le_bytes(x.try_into().ok()?)), r)
                }
                b's' if rest.len() >= 4 => {
                    let (x, r) = rest.split_at(4);
                    let len = u32::from_le_bytes(x.try_into().ok()?) as usize;
                    let (s, r) = r.split_at(len.min(r.len()));
                    let text = if s.is_ascii() {
                        // SAFETY: ASCII is valid UTF-8 (most keys are ASCII;
                        // a short check beats the general validation).
                        unsafe { std::str::from_utf8_unchecked(s) }
                    } else {
                        std::str::from_utf8(s).ok()?
                    };
                    (KeyPart::Str(text), r)
                }
                _ => return None,
            };
            if n == i {
                return Some(part);
            }
            n += 1;
            b = r;
        }
        None
    }
}

impl fmt::Display for EncodedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.values().iter().map(|v| v.to_string()).collect();
        f.write_str(&parts.join("|"))
    }
}

/// Encodes key values the way the decoder does.
pub fn encode_key(vals: &[KeyValue], out: &mut Vec<u8>) {
    for v in vals {
        match v {
            KeyValue::Int(i) => {
                out.push(b'i');
                out.extend_from_slice(&i.to_le_bytes());
            }
            KeyValue::Str(s) => push_str_part(s.as_bytes(), out),
        }
    }
}

/// Encodes a key of one text value into `out` (cleared first), as
/// [`Decoder`] encodes it.
#[inline]
pub fn encode_str_key(s: &str, out: &mut Vec<u8>) {
    out.clear();
    push_str_part(s.as_bytes(), out);
}

/// Appends one text part of an encoded key: `s`, its length, its bytes.
#[inline]
pub fn push_str_part(s: &[u8], out: &mut Vec<u8>) {
    out.push(b's');
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s);
}

/// A decoded event, borrowing the decoder's buffers.
#[derive(Debug, Clone, Copy)]
pub struct EventRef<'a> {
    /// Encoded composite key ([`decode_key`]).
    pub key: &'a [u8],
    /// Event time, micros since the epoch.
    pub time: Micros,
    slots: &'a [Slot],
    scratch: &'a str,
}

impl<'a> EventRef<'a> {
    /// The value of value slot `i` (see [`DecodePlan::slot_of`]).
    #[inline]
    pub fn field(&self, i: usize) -> FieldVal<'a> {
        match self.slots[i] {
            Slot::Missing => FieldVal::Missing,
            Slot::Null => FieldVal::Null,
            Slot::Bool(b) => FieldVal::Bool(b),
            Slot::Num(n) => FieldVal::Num(n),
            Slot::Str(s, e) => FieldVal::Str(&self.scratch[s as usize..e as usize]),
            Slot::Nested => FieldVal::Nested,
        }
    }

    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }
}

/// What a top-level field of a record is used for.
#[derive(Debug, Clone, Copy, Default)]
pub struct FieldUse {
    pub slot: Option<usize>,
    pub key_pos: Option<usize>,
    pub is_time: bool,
}

/// The fields a pipeline reads, and what each is for.
#[derive(Debug, Clone)]
pub struct DecodePlan {
    /// Top-level field names and their uses.
    pub fields: Vec<(String, FieldUse)>,
    /// Value slot names, in slot order.
    pub slot_names: Vec<String>,
    pub key_fields: Vec<String>,
    /// The declared type of each key field: a value of another type is `bad_key`.
    pub key_types: Vec<crate::config::KeyType>,
    pub time: EventTimeSource,
    /// The value slot fed with the event time itself (`$event_time`), if used.
    pub event_time_slot: Option<usize>,
}

/// A pseudo-field: the event time in milliseconds since the epoch, as a
/// number, usable by aggregates (`min`/`max` of it give a session's bounds).
pub const EVENT_TIME_FIELD: &str = "$event_time";

impl DecodePlan {
    pub fn new(p: &Pipeline) -> Self {
        let mut slot_names: Vec<String> = Vec::new();
        let add = |n: &str, slot_names: &mut Vec<String>| {
            if !slot_names.iter().any(|s| s == n) {
                slot_names.push(n.to_string());
            }
        };
        for f in &p.features {
            if let FeatureKind::Agg { field, filter, .. } = &f.kind {
                if let Some(field) = field {
                    add(field, &mut slot_names);
                }
                if let Some(flt) = filter {
                    for id in flt.idents() {
                        add(id, &mut slot_names);
                    }
                }
            }
        }
        let mut fields: Vec<(String, FieldUse)> = Vec::new();
        fn entry(fields: &mut Vec<(String, FieldUse)>, name: &str) -> usize {
            if let Some(i) = fields.iter().position(|(n, _)| n == name) {
                i
            } else {
                fields.push((name.to_string(), FieldUse::default()));
                fields.len() - 1
            }
        }
        for (i, k) in p.key_fields.iter().enumerate() {
            let e = entry(&mut fields, k);
            fields[e].1.key_pos = Some(i);
        }
        if let EventTimeSource::Field { name, .. } = &p.event_time {
            let e = entry(&mut fields, name);
            fields[e].1.is_time = true;
        }
        for (i, s) in slot_names.iter().enumerate() {
            if s == EVENT_TIME_FIELD {
                continue;
            }
            let e = entry(&mut fields, s);
            fields[e].1.slot = Some(i);
        }
        let event_time_slot = slot_names.iter().position(|s| s == EVENT_TIME_FIELD);
        DecodePlan {
            fields,
            slot_names,
            key_fields: p.key_fields.clone(),
            key_types: p.key_types.clone(),
            time: p.event_time.clone(),
            event_time_slot,
        }
    }

    /// The value slot of a field name.
    pub fn slot_of(&self, name: &str) -> Option<usize> {
        self.slot_names.iter().position(|s| s == name)
    }

    /// The time format of the event-time field.
    pub fn time_format(&self) -> TimeFormat {
        match &self.time {
            EventTimeSource::Field { format, .. } => *format,
            EventTimeSource::KafkaTimestamp => TimeFormat::EpochMillis,
        }
    }

    /// The index in `fields` of a top-level name.
    #[inline]
    pub fn lookup(&self, name: &[u8]) -> Option<usize> {
        // Length and first byte rule out most names without a compare call.
        let first = *name.first()?;
        self.fields.iter().position(|(n, _)| {
            let n = n.as_bytes();
            n.len() == name.len() && n[0] == first && n.iter().zip(name).all(|(a, b)| a == b)
        })
    }
}

#[derive(Debug, Clone, Copy)]
enum KeyTmp {
    Missing,
    Null,
    Int(i64),
    /// In the decoder's scratch text.
    Str(u32, u32),
    /// A number that is not an integer, or a boolean: no key type takes it.
    Other,
    /// In the record's own text ([`Decoder::finish_text`]): not copied.
    Text(u32, u32),
    Bad,
}

/// Reused buffers for decoding records into [`EventRef`]s.
#[derive(Debug)]
pub struct Decoder {
    pub plan: DecodePlan,
    slots: Vec<Slot>,
    keys: Vec<KeyTmp>,
    key_buf: Vec<u8>,
    scratch: String,
    time: Option<Result<Micros, String>>,
    /// Per top-level field: (kind, start, end) of the raw JSON value.
    raw: Vec<Option<json::RawValue>>,
    dates: crate::time::DateCache,
    /// Per member position, the `"name":` bytes, target and value type of
    /// the last record (see `decode_json`).
    shape: Vec<json::ShapeMember>,
    /// The shapes of the last compact records (no white space, names
    /// remembered, values strings or numbers), the most recent first.
    compact: Vec<Vec<json::ShapeMember>>,
    /// The record's time from outside the payload (`kafka_timestamp`).
    external_time: Option<Micros>,
}

impl Decoder {
    pub fn new(plan: DecodePlan) -> Self {
        let n_slots = plan.slot_names.len();
        let n_keys = plan.key_fields.len();
        let n_fields = plan.fields.len();
        Decoder {
            plan,
            slots: vec![Slot::Missing; n_slots],
            keys: vec![KeyTmp::Missing; n_keys],
            key_buf: Vec::with_capacity(64),
            scratch: String::with_capacity(256),
            time: None,
            raw: vec![None; n_fields],
            dates: crate::time::DateCache::default(),
            shape: Vec::new(),
            compact: Vec::new(),
            external_time: None,
        }
    }

    /// Sets the time of the next records when the pipeline takes event
    /// time from the source (`event_time: { kafka_timestamp: true }`).
    pub fn set_external_time(&mut self, t: Option<Micros>) {
        self.external_time = t;
    }

    /// Starts a record.
    #[inline]
    pub fn begin(&mut self) {
        self.slots.iter_mut().for_each(|s| *s = Slot::Missing);
        self.keys.iter_mut().for_each(|k| *k = KeyTmp::Missing);
        self.scratch.clear();
        self.time = match self.plan.time {
            EventTimeSource::KafkaTimestamp => self.external_time.map(Ok),
            EventTimeSource::Field { .. } => None,
        };
    }

    fn push_str(&mut self, s: &str) -> (u32, u32) {
        let start = self.scratch.len() as u32;
        self.scratch.push_str(s);
        (start, self.scratch.len() as u32)
    }

    /// Sets a key part from a string.
    pub fn key_str(&mut self, pos: usize, s: &str) {
        let (a, b) = self.push_str(s);
        self.keys[pos] = KeyTmp::Str(a, b);
    }
    /// Sets a key part from a scalar that is neither a string nor an integer.
    pub fn key_other(&mut self, pos: usize, _text: &str) {
        self.keys[pos] = KeyTmp::Other;
    }
    pub fn key_int(&mut self, pos: usize, v: i64) {
        self.keys[pos] = KeyTmp::Int(v);
    }
    pub fn key_null(&mut self, pos: usize) {
        self.keys[pos] = KeyTmp::Null;
    }
    pub fn key_bad(&mut self, pos: usize) {
        self.keys[pos] = KeyTmp::Bad;
    }

    /// Sets a value slot.
    pub fn slot_str(&mut self, i: usize, s: &str) {
        let (a, b) = self.push_str(s);
        self.slots[i] = Slot::Str(a, b);
    }
    pub fn slot(&mut self, i: usize, v: Slot) {
        self.slots[i] = v;
    }

    /// Sets the event time (or why it could not be read).
    pub fn time(&mut self, t: Result<Micros, String>) {
        self.time = Some(t);
    }

    /// Parses the event time from text in the pipeline's format.
    pub fn time_text(&mut self, s: &str) {
        let r = match self.plan.time_format() {
            TimeFormat::Rfc3339 => crate::time::parse_rfc3339_cached(s, &mut self.dates),
            f => crate::time::parse_time_text(s, f),
        };
        self.time = Some(r.map_err(|e| e.to_string()));
    }

    /// A key part of another type than the pipeline declares.
    #[cold]
    fn key_type_refusal(&self, pos: usize) -> Refusal {
        let found = match self.keys[pos] {
            KeyTmp::Int(_) => "an integer",
            KeyTmp::Other => "a number or boolean",
            _ => "a string",
        };
        Refusal::new(
            Reason::BadKey,
            format!(
                "key field {:?} is {found}; the pipeline's key_types declare it {}",
                self.plan.key_fields[pos],
                self.plan.key_types[pos].as_str()
            ),
        )
    }

    /// Finishes a record: checks key and time, encodes the key.
    pub fn finish(&mut self) -> Result<EventRef<'_>, Refusal> {
        self.finish_text("")
    }

    /// Sets a key part to bytes `start..end` of the record's text, which
    /// [`Decoder::finish_text`] then receives.
    pub(crate) fn key_text(&mut self, pos: usize, start: u32, end: u32) {
        self.keys[pos] = KeyTmp::Text(start, end);
    }

    /// [`Decoder::finish`] for a record whose key parts may lie in its
    /// text ([`Decoder::key_text`]).
    pub(crate) fn finish_text(&mut self, text: &str) -> Result<EventRef<'_>, Refusal> {
        self.key_buf.clear();
        use crate::config::KeyType;
        for (pos, k) in self.keys.iter().enumerate() {
            let declared = self.plan.key_types[pos];
            match *k {
                KeyTmp::Missing | KeyTmp::Null => {
                    let what = if matches!(k, KeyTmp::Null) {
                        "is null"
                    } else {
                        "is missing"
                    };
                    return Err(Refusal::new(
                        Reason::MissingKey,
                        format!("key field {:?} {what}", self.plan.key_fields[pos]),
                    ));
                }
                KeyTmp::Bad => {
                    return Err(Refusal::new(
                        Reason::BadKey,
                        format!(
                            "key field {:?} is not a string or a number",
                            self.plan.key_fields[pos]
                        ),
                    ))
                }
                KeyTmp::Int(v) if declared == KeyType::Int => {
                    self.key_buf.push(b'i');
                    self.key_buf.extend_from_slice(&v.to_le_bytes());
                }
                KeyTmp::Str(a, b) if declared == KeyType::String => push_str_part(
                    &self.scratch.as_bytes()[a as usize..b as usize],
                    &mut self.key_buf,
                ),
                KeyTmp::Text(a, b) if declared == KeyType::String => {
                    push_str_part(&text.as_bytes()[a as usize..b as usize], &mut self.key_buf)
                }
                _ => return Err(self.key_type_refusal(pos)),
            }
        }
        let time = match self.time.take() {
            Some(Ok(t)) => t,
            Some(Err(e)) => return Err(Refusal::new(Reason::BadEventTime, e)),
            None => {
                let name = match &self.plan.time {
                    EventTimeSource::Field { name, .. } => name.as_str(),
                    EventTimeSource::KafkaTimestamp => "kafka timestamp",
                };
                return Err(Refusal::new(
                    Reason::MissingEventTime,
                    format!("event-time field {name:?} is missing or null"),
                ));
            }
        };
        if let Some(i) = self.plan.event_time_slot {
            self.slots[i] = Slot::Num(time as f64 / 1000.0);
        }
        Ok(EventRef {
            key: &self.key_buf,
            time,
            slots: &self.slots,
            scratch: &self.scratch,
        })
    }
}

/// Decoded events kept side by side (copies of [`EventRef`]s with their
/// key hashes), so that a reader can decode a block of records and then
/// hand them to the engine with their keys' memory already on its way.
#[derive(Debug, Default)]
pub struct EventBatch {
    keys: Vec<u8>,
    key_ends: Vec<u32>,
    times: Vec<Micros>,
    hashes: Vec<u64>,
    slots: Vec<Slot>,
    scratch: String,
    width: usize,
}

impl EventBatch {
    pub fn new() -> EventBatch {
        EventBatch::default()
    }

    pub fn clear(&mut self) {
        self.keys.clear();
        self.key_ends.clear();
        self.times.clear();
        self.hashes.clear();
        self.slots.clear();
        self.scratch.clear();
    }

    pub fn len(&self) -> usize {
        self.times.len()
    }

    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }

    /// The event time of event `i`.
    #[inline]
    pub fn time(&self, i: usize) -> Micros {
        self.times[i]
    }

    /// Copies `ev` in, with the hash of its key.
    pub fn push(&mut self, ev: &EventRef<'_>, hash: u64) {
        if self.times.is_empty() {
            self.width = ev.slots.len();
        }
        debug_assert_eq!(self.width, ev.slots.len());
        self.keys.extend_from_slice(ev.key);
        self.key_ends.push(self.keys.len() as u32);
        self.times.push(ev.time);
        self.hashes.push(hash);
        // Text values move into the batch's scratch: their offsets shift.
        let base = self.scratch.len() as u32;
        if !ev.scratch.is_empty() {
            self.scratch.push_str(ev.scratch);
        }
        self.slots.extend(ev.slots.iter().map(|s| match *s {
            Slot::Str(a, b) => Slot::Str(a + base, b + base),
            other => other,
        }));
    }

    /// The hash of event `i`'s key.
    #[inline]
    pub fn hash(&self, i: usize) -> u64 {
        self.hashes[i]
    }

    /// Event `i`.
    #[inline]
    pub fn get(&self, i: usize) -> EventRef<'_> {
        let start = if i == 0 {
            0
        } else {
            self.key_ends[i - 1] as usize
        };
        EventRef {
            key: &self.keys[start..self.key_ends[i] as usize],
            time: self.times[i],
            slots: &self.slots[i * self.width..(i + 1) * self.width],
            scratch: &self.scratch,
        }
    }
}

#[cfg(test)]
mod tests;

/// Byte equality for short slices (keys) without a call to `memcmp`: two
/// overlapping word loads cover any length up to 32 bytes.
#[inline(always)]
pub fn short_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    #[inline(always)]
    fn w8(s: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(s[at..at + 8].try_into().expect("8 bytes"))
    }
    #[inline(always)]
    fn w16(s: &[u8], at: usize) -> u128 {
        u128::from_le_bytes(s[at..at + 16].try_into().expect("16 bytes"))
    }
    #[inline(always)]
    fn w4(s: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(s[at..at + 4].try_into().expect("4 bytes"))
    }
    match n {
        0 => true,
        1..=3 => a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1],
        4..=7 => w4(a, 0) == w4(b, 0) && w4(a, n - 4) == w4(b, n - 4),
        8..=16 => w8(a, 0) == w8(b, 0) && w8(a, n - 8) == w8(b, n - 8),
        17..=32 => w16(a, 0) == w16(b, 0) && w16(a, n - 16) == w16(b, n - 16),
        _ => a == b,
    }
}
