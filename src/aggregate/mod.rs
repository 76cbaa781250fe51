//! Aggregates (SPEC 4): one table of aggregate kinds ([`AGGREGATES`]) and
//! the accumulators behind them, one file per family:
//!
//! - [`moments`]: `count`, `sum`, `mean`, `std`, `std_pop`, `var`;
//! - [`extremes`]: `min`, `max`;
//! - [`first_last`]: `first`, `last`;
//! - [`distinct`]: `count_distinct`;
//! - [`quantile`]: `quantile`;
//! - [`set`]: `collect_set`.
//!
//! Features over the same field and filter share an accumulator (`sum`,
//! `mean` and `std` of a field read one [`moments::Moments`]). The
//! accumulators of a window, session or tile form a *row*: fixed-size
//! words (counts, moments, extremes) and, when the pipeline has them,
//! variable-size states ([`Heavy`]: first/last, distinct, quantile, set).
//! [`RowLayout`] knows where each accumulator lives in a row and updates,
//! merges, resets and finishes rows; every state merges, so tiles and
//! sessions combine, and every state is restored bit for bit from a
//! checkpoint ([`AccState`]).
//!
//! A new aggregate is one file (its state) plus one entry in [`AGGREGATES`]
//! and its arms in [`AccKind`] and [`RowLayout`].

pub mod distinct;
pub mod extremes;
pub mod first_last;
pub mod moments;
pub mod quantile;
pub mod set;

use serde::{Deserialize, Serialize};

pub use first_last::{Pick, Scalar, ScalarRef};
pub use moments::Moments;

use distinct::Distinct;
use quantile::Sketch;
use set::SetState;

/// Serde of an `f64` as its bit pattern: checkpoints keep NaN, infinities
/// and every last bit of a running sum.
pub(crate) mod f64_bits {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(x.to_bits())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        u64::deserialize(d).map(f64::from_bits)
    }
}

/// A feature value in a pane.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    Null,
    Int(i64),
    Float(#[serde(with = "f64_bits")] f64),
    Bool(bool),
    Str(String),
    /// `collect_set`: sorted distinct values as text.
    List(Vec<String>),
}

impl Value {
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }
}

/// An aggregate function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AggKind {
    Count,
    Sum,
    Mean,
    Std,
    StdPop,
    Var,
    Min,
    Max,
    First,
    Last,
    CountDistinct,
    Quantile,
    CollectSet,
}

/// The accumulator family an aggregate reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Count,
    Moments,
    Extremes,
    First,
    Last,
    Distinct,
    Quantile,
    Set,
}

/// The type of an aggregate's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    Int,
    Float,
    /// first/last: the declared `type:`, or taken from the values.
    Scalar,
    /// A list of strings.
    StrList,
}

/// One row of the aggregate table.
#[derive(Debug, Clone, Copy)]
pub struct AggDef {
    pub name: &'static str,
    pub kind: AggKind,
    pub family: Family,
    /// Needs `field:` (only `count` counts events without one).
    pub needs_field: bool,
    /// Non-numeric values are bad input.
    pub numeric: bool,
    pub output: OutputKind,
}

const fn def(
    name: &'static str,
    kind: AggKind,
    family: Family,
    needs_field: bool,
    numeric: bool,
    output: OutputKind,
) -> AggDef {
    AggDef {
        name,
        kind,
        family,
        needs_field,
        numeric,
        output,
    }
}

/// Every aggregate rill knows.
pub const AGGREGATES: [AggDef; 13] = {
    use AggKind as A;
    use Family as F;
    use OutputKind as O;
    [
        def("count", A::Count, F::Count, false, false, O::Int),
        def("sum", A::Sum, F::Moments, true, true, O::Float),
        def("mean", A::Mean, F::Moments, true, true, O::Float),
        def("std", A::Std, F::Moments, true, true, O::Float),
        def("std_pop", A::StdPop, F::Moments, true, true, O::Float),
        def("var", A::Var, F::Moments, true, true, O::Float),
        def("min", A::Min, F::Extremes, true, true, O::Float),
        def("max", A::Max, F::Extremes, true, true, O::Float),
        def("first", A::First, F::First, true, false, O::Scalar),
        def("last", A::Last, F::Last, true, false, O::Scalar),
        def(
            "count_distinct",
            A::CountDistinct,
            F::Distinct,
            true,
            false,
            O::Int,
        ),
        def("quantile", A::Quantile, F::Quantile, true, true, O::Float),
        def(
            "collect_set",
            A::CollectSet,
            F::Set,
            true,
            false,
            O::StrList,
        ),
    ]
};

impl AggKind {
    /// The table row of this aggregate.
    pub fn def(self) -> &'static AggDef {
        AGGREGATES
            .iter()
            .find(|d| d.kind == self)
            .expect("every aggregate kind has a table row")
    }

    pub fn name(self) -> &'static str {
        self.def().name
    }

    /// The aggregate of a name.
    pub fn parse(name: &str) -> Option<AggKind> {
        AGGREGATES.iter().find(|d| d.name == name).map(|d| d.kind)
    }

    /// The names of every aggregate, for messages.
    pub fn names() -> String {
        let n: Vec<&str> = AGGREGATES.iter().map(|d| d.name).collect();
        n.join(", ")
    }

    /// Aggregates that need a numeric field.
    pub fn is_numeric(self) -> bool {
        self.def().numeric
    }
}

/// Parameters of an aggregate (each applies to one kind).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AggParams {
    /// `quantile`: which quantile, in [0, 1].
    pub q: f64,
    /// `count_distinct`: distinct values counted exactly.
    pub exact_up_to: u32,
    /// `collect_set`: values kept.
    pub max: u32,
}

/// Default `exact_up_to` of `count_distinct`.
pub const DEFAULT_EXACT_UP_TO: u32 = 1000;
/// Default `max` of `collect_set`.
pub const DEFAULT_SET_MAX: u32 = 100;

impl Default for AggParams {
    fn default() -> Self {
        AggParams {
            q: 0.5,
            exact_up_to: DEFAULT_EXACT_UP_TO,
            max: DEFAULT_SET_MAX,
        }
    }
}

/// What an accumulator consumes (its field's value slot, and the
/// parameters that shape its state).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccKind {
    /// Events (that pass the filter).
    CountEvents,
    /// Non-null values of a field slot.
    CountField(usize),
    Moments(usize),
    Extremes(usize),
    First(usize),
    Last(usize),
    Distinct {
        slot: usize,
        exact_up_to: u32,
    },
    Quantile(usize),
    Set {
        slot: usize,
        max: u32,
    },
}

impl AccKind {
    /// The accumulator an aggregate of `field` slot reads.
    pub fn of(agg: AggKind, slot: Option<usize>, params: &AggParams) -> AccKind {
        let Some(s) = slot else {
            return AccKind::CountEvents;
        };
        match agg.def().family {
            Family::Count => AccKind::CountField(s),
            Family::Moments => AccKind::Moments(s),
            Family::Extremes => AccKind::Extremes(s),
            Family::First => AccKind::First(s),
            Family::Last => AccKind::Last(s),
            Family::Distinct => AccKind::Distinct {
                slot: s,
                exact_up_to: params.exact_up_to,
            },
            Family::Quantile => AccKind::Quantile(s),
            Family::Set => AccKind::Set {
                slot: s,
                max: params.max,
            },
        }
    }

    /// The field slot read, if any.
    pub fn slot(self) -> Option<usize> {
        match self {
            AccKind::CountEvents => None,
            AccKind::CountField(s)
            | AccKind::Moments(s)
            | AccKind::Extremes(s)
            | AccKind::First(s)
            | AccKind::Last(s)
            | AccKind::Quantile(s)
            | AccKind::Distinct { slot: s, .. }
            | AccKind::Set { slot: s, .. } => Some(s),
        }
    }

    /// Whether a non-numeric value is bad input.
    pub fn numeric(self) -> bool {
        matches!(
            self,
            AccKind::Moments(_) | AccKind::Extremes(_) | AccKind::Quantile(_)
        )
    }

    /// Fixed-size words in a row.
    fn words(self) -> usize {
        match self {
            AccKind::CountEvents | AccKind::CountField(_) => 1,
            AccKind::Moments(_) => moments::MOMENTS_WORDS,
            AccKind::Extremes(_) => extremes::EXTREMES_WORDS,
            _ => 0,
        }
    }

    fn empty_heavy(self) -> Option<Heavy> {
        match self {
            AccKind::First(_) | AccKind::Last(_) => Some(Heavy::Pick(None)),
            AccKind::Distinct { .. } => Some(Heavy::Distinct(Distinct::default())),
            AccKind::Quantile(_) => Some(Heavy::Quantile(Box::default())),
            AccKind::Set { .. } => Some(Heavy::Set(SetState::default())),
            _ => None,
        }
    }
}

/// The variable-size state of an accumulator.
#[derive(Debug, PartialEq)]
pub enum Heavy {
    Pick(Option<Pick>),
    Distinct(Distinct),
    Quantile(Box<Sketch>),
    Set(SetState),
}

impl Clone for Heavy {
    fn clone(&self) -> Heavy {
        match self {
            Heavy::Pick(p) => Heavy::Pick(p.clone()),
            Heavy::Distinct(d) => Heavy::Distinct(d.clone()),
            Heavy::Quantile(s) => Heavy::Quantile(s.clone()),
            Heavy::Set(s) => Heavy::Set(s.clone()),
        }
    }

    /// Reuses the buffers of a state of the same kind (windows' values are
    /// copied out of partials once per pane).
    fn clone_from(&mut self, src: &Heavy) {
        match (self, src) {
            (Heavy::Distinct(Distinct::Exact(d)), Heavy::Distinct(Distinct::Exact(s))) => {
                d.clone_from(s)
            }
            (Heavy::Quantile(d), Heavy::Quantile(s)) => d.clone_from(s),
            (Heavy::Set(d), Heavy::Set(s)) => d.clone_from(s),
            (d, s) => *d = s.clone(),
        }
    }
}

impl Heavy {
    /// Moves the state out, leaving an empty one of the same kind.
    pub fn take(&mut self) -> Heavy {
        let empty = match self {
            Heavy::Pick(_) => Heavy::Pick(None),
            Heavy::Distinct(_) => Heavy::Distinct(Distinct::default()),
            Heavy::Quantile(_) => Heavy::Quantile(Box::default()),
            Heavy::Set(_) => Heavy::Set(SetState::default()),
        };
        std::mem::replace(self, empty)
    }

    fn reset(&mut self) {
        match self {
            Heavy::Pick(p) => *p = None,
            Heavy::Distinct(d) => *d = Distinct::default(),
            Heavy::Quantile(s) => **s = Sketch::default(),
            Heavy::Set(s) => *s = SetState::default(),
        }
    }

    /// Bytes held on the heap (memory reports).
    pub fn heap_bytes(&self) -> usize {
        match self {
            Heavy::Pick(Some(Pick {
                value: Scalar::Str(s),
                ..
            })) => s.capacity(),
            Heavy::Pick(_) => 0,
            Heavy::Distinct(d) => d.heap_bytes(),
            Heavy::Quantile(s) => 96 + s.heap_bytes(),
            Heavy::Set(s) => s.heap_bytes(),
        }
    }
}

/// One accumulator's state in a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AccState {
    Count(u64),
    Moments(Moments),
    Extremes {
        #[serde(with = "f64_bits")]
        min: f64,
        #[serde(with = "f64_bits")]
        max: f64,
    },
    Pick(Option<Pick>),
    Distinct(Distinct),
    Quantile(Sketch),
    Set(SetState),
}

/// A field value offered to an accumulator.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// Absent or null: skipped.
    Missing,
    /// An object or array (bad input for every aggregate but `count`).
    Nested,
    Num(f64),
    Bool(bool),
    Str(&'a str),
}

/// An accumulator's place in a row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AccSpec {
    pub kind: AccKind,
    /// Index of the `where:` filter that gates it.
    pub filter: Option<usize>,
    word: usize,
    heavy: usize,
}

/// Where each accumulator of a pipeline lives in a row; see the module
/// documentation.
#[derive(Debug, Clone, Default)]
pub struct RowLayout {
    accs: Vec<AccSpec>,
    words: usize,
    heavies: usize,
    empty_words: Vec<u64>,
    /// What [`RowLayout::check`] looks at: (slot, filter, needs a number),
    /// once per field and filter.
    checks: Vec<(usize, Option<usize>, bool)>,
}

impl RowLayout {
    /// The accumulator of `(kind, filter)`, added when new.
    pub fn acc(&mut self, kind: AccKind, filter: Option<usize>) -> usize {
        if let Some(i) = self
            .accs
            .iter()
            .position(|a| a.kind == kind && a.filter == filter)
        {
            return i;
        }
        let spec = AccSpec {
            kind,
            filter,
            word: self.words,
            heavy: self.heavies,
        };
        self.words += kind.words();
        if kind.empty_heavy().is_some() {
            self.heavies += 1;
        }
        self.empty_words.extend(match kind {
            AccKind::Extremes(_) => extremes::EMPTY.to_vec(),
            k => vec![0; k.words()],
        });
        if let (Some(s), false) = (kind.slot(), matches!(kind, AccKind::CountField(_))) {
            match self.checks.iter_mut().find(|c| c.0 == s && c.1 == filter) {
                Some(c) => c.2 |= kind.numeric(),
                None => self.checks.push((s, filter, kind.numeric())),
            }
        }
        self.accs.push(spec);
        self.accs.len() - 1
    }

    pub fn accs(&self) -> &[AccSpec] {
        &self.accs
    }

    /// The first word of accumulator `acc` in a row.
    pub fn word_of(&self, acc: usize) -> usize {
        self.accs[acc].word
    }

    /// Fixed-size words per row.
    pub fn words(&self) -> usize {
        self.words
    }

    /// Variable-size states per row.
    pub fn heavies(&self) -> usize {
        self.heavies
    }

    /// Appends an empty row.
    pub fn push_empty(&self, words: &mut Vec<u64>, heavy: &mut Vec<Heavy>) {
        words.extend_from_slice(&self.empty_words);
        if self.heavies > 0 {
            heavy.extend(self.accs.iter().filter_map(|a| a.kind.empty_heavy()));
        }
    }

    /// Empties a row, keeping its buffers where it can.
    #[inline]
    pub fn reset(&self, words: &mut [u64], heavy: &mut [Heavy]) {
        words.copy_from_slice(&self.empty_words);
        heavy.iter_mut().for_each(Heavy::reset);
    }

    /// Adds one event's values: `value(slot)` reads a field, `pass(filter)`
    /// says whether a filter passed. Values were checked beforehand
    /// ([`RowLayout::check`]), so a wrong type here is skipped.
    #[inline]
    pub fn update<'a>(
        &self,
        words: &mut [u64],
        heavy: &mut [Heavy],
        value: impl Fn(usize) -> Input<'a>,
        pass: impl Fn(usize) -> bool,
        time: i64,
        seq: u64,
    ) {
        // Features of one field (sum and max of `amount`) read it once.
        let mut last: (usize, Input<'a>) = (usize::MAX, Input::Missing);
        let mut value = |s: usize| {
            if last.0 != s {
                last = (s, value(s));
            }
            last.1
        };
        for a in &self.accs {
            if a.filter.is_some_and(|f| !pass(f)) {
                continue;
            }
            let w = a.word;
            match a.kind {
                AccKind::CountEvents => words[w] += 1,
                AccKind::CountField(s) => {
                    if !matches!(value(s), Input::Missing | Input::Nested) {
                        words[w] += 1
                    }
                }
                AccKind::Moments(s) => {
                    if let Input::Num(x) = value(s) {
                        let mut m = Moments::load(&words[w..w + moments::MOMENTS_WORDS]);
                        m.update(x);
                        m.store(&mut words[w..w + moments::MOMENTS_WORDS]);
                    }
                }
                AccKind::Extremes(s) => {
                    if let Input::Num(x) = value(s) {
                        extremes::update(&mut words[w..w + 2], x);
                    }
                }
                AccKind::First(s) | AccKind::Last(s) => {
                    let v = match value(s) {
                        Input::Num(x) => ScalarRef::Num(x),
                        Input::Str(x) => ScalarRef::Str(x),
                        Input::Bool(x) => ScalarRef::Bool(x),
                        Input::Missing | Input::Nested => continue,
                    };
                    if let Heavy::Pick(p) = &mut heavy[a.heavy] {
                        let last = matches!(a.kind, AccKind::Last(_));
                        first_last::offer(p, last, time, seq, v);
                    }
                }
                AccKind::Distinct { slot, exact_up_to } => {
                    let h = match value(slot) {
                        Input::Num(x) => distinct::number_hash(x),
                        Input::Str(x) => distinct::value_hash(b's', x.as_bytes()),
                        Input::Bool(x) => distinct::value_hash(b'b', &[x as u8]),
                        Input::Missing | Input::Nested => continue,
                    };
                    if let Heavy::Distinct(d) = &mut heavy[a.heavy] {
                        d.insert(h, exact_up_to as usize);
                    }
                }
                AccKind::Quantile(s) => {
                    if let (Input::Num(x), Heavy::Quantile(q)) = (value(s), &mut heavy[a.heavy]) {
                        q.insert(x);
                    }
                }
                AccKind::Set { slot, max } => {
                    if let Heavy::Set(st) = &mut heavy[a.heavy] {
                        match value(slot) {
                            Input::Str(x) => st.insert(x, max as usize),
                            Input::Num(x) => st.insert(&crate::sink::format_f64(x), max as usize),
                            Input::Bool(x) => {
                                st.insert(if x { "true" } else { "false" }, max as usize)
                            }
                            Input::Missing | Input::Nested => {}
                        }
                    }
                }
            }
        }
    }

    /// The first refused value of an event, as (slot, what was expected):
    /// numeric aggregates need numbers; no aggregate takes an object or array
    /// (`nested(slot)`).
    #[inline]
    pub fn check<'a>(
        &self,
        value: impl Fn(usize) -> Input<'a>,
        pass: impl Fn(usize) -> bool,
    ) -> Option<(usize, &'static str)> {
        for &(s, filter, numeric) in &self.checks {
            if filter.is_some_and(|f| !pass(f)) {
                continue;
            }
            match value(s) {
                Input::Nested if numeric => return Some((s, "a number")),
                Input::Nested => return Some((s, "a scalar")),
                Input::Str(_) | Input::Bool(_) if numeric => return Some((s, "a number")),
                _ => {}
            }
        }
        None
    }

    /// Folds row `src` into row `dst`.
    pub fn merge(&self, dst: (&mut [u64], &mut [Heavy]), src: (&[u64], &[Heavy])) {
        let (dw, dh) = dst;
        let (sw, sh) = src;
        for a in &self.accs {
            let w = a.word;
            match a.kind {
                AccKind::CountEvents | AccKind::CountField(_) => dw[w] += sw[w],
                AccKind::Moments(_) => {
                    let r = w..w + moments::MOMENTS_WORDS;
                    let mut m = Moments::load(&dw[r.clone()]);
                    m.merge(&Moments::load(&sw[r.clone()]));
                    m.store(&mut dw[r]);
                }
                AccKind::Extremes(_) => extremes::merge(&mut dw[w..w + 2], &sw[w..w + 2]),
                _ => match (&mut dh[a.heavy], &sh[a.heavy], a.kind) {
                    (Heavy::Pick(d), Heavy::Pick(s), k) => {
                        first_last::merge(d, matches!(k, AccKind::Last(_)), s)
                    }
                    (
                        Heavy::Distinct(d),
                        Heavy::Distinct(s),
                        AccKind::Distinct { exact_up_to, .. },
                    ) => d.merge(s, exact_up_to as usize),
                    (Heavy::Quantile(d), Heavy::Quantile(s), _) => d.merge(s),
                    (Heavy::Set(d), Heavy::Set(s), AccKind::Set { max, .. }) => {
                        d.merge(s, max as usize)
                    }
                    _ => {}
                },
            }
        }
    }

    /// The value of aggregate `agg` of accumulator `acc` in a row.
    pub fn finish(
        &self,
        acc: usize,
        agg: AggKind,
        params: &AggParams,
        words: &[u64],
        heavy: &[Heavy],
    ) -> Value {
        let a = &self.accs[acc];
        let w = a.word;
        let f = |o: Option<f64>| o.map_or(Value::Null, Value::Float);
        match (agg, a.kind) {
            (AggKind::Count, _) => Value::Int(words[w] as i64),
            (AggKind::Sum | AggKind::Mean | AggKind::Std | AggKind::StdPop | AggKind::Var, _) => {
                let m = Moments::load(&words[w..w + moments::MOMENTS_WORDS]);
                f(match agg {
                    AggKind::Sum => m.sum(),
                    AggKind::Mean => m.mean(),
                    AggKind::Std => m.var_sample().map(f64::sqrt),
                    AggKind::StdPop => m.var_pop().map(f64::sqrt),
                    _ => m.var_sample(),
                })
            }
            (AggKind::Min, _) => f(extremes::min(&words[w..w + 2])),
            (AggKind::Max, _) => f(extremes::max(&words[w..w + 2])),
            _ => match &heavy[a.heavy] {
                Heavy::Pick(p) => first_last::finish(p),
                Heavy::Distinct(d) => Value::Int(d.count() as i64),
                Heavy::Quantile(s) => f(s.quantile(params.q)),
                Heavy::Set(s) => {
                    if s.values.is_empty() {
                        Value::Null
                    } else {
                        Value::List(s.values.clone())
                    }
                }
            },
        }
    }

    /// Whether the set of accumulator `acc` was cut by its bound.
    pub fn set_cut(&self, acc: usize, heavy: &[Heavy]) -> bool {
        matches!(&heavy[self.accs[acc].heavy], Heavy::Set(s) if s.cut)
    }

    /// A row as checkpoint states, one per accumulator.
    pub fn export(&self, words: &[u64], heavy: &[Heavy]) -> Vec<AccState> {
        self.accs
            .iter()
            .map(|a| {
                let w = a.word;
                match a.kind {
                    AccKind::CountEvents | AccKind::CountField(_) => AccState::Count(words[w]),
                    AccKind::Moments(_) => {
                        AccState::Moments(Moments::load(&words[w..w + moments::MOMENTS_WORDS]))
                    }
                    AccKind::Extremes(_) => AccState::Extremes {
                        min: f64::from_bits(words[w]),
                        max: f64::from_bits(words[w + 1]),
                    },
                    _ => match &heavy[a.heavy] {
                        Heavy::Pick(p) => AccState::Pick(p.clone()),
                        Heavy::Distinct(d) => AccState::Distinct(d.clone()),
                        Heavy::Quantile(s) => AccState::Quantile((**s).clone()),
                        Heavy::Set(s) => AccState::Set(s.clone()),
                    },
                }
            })
            .collect()
    }

    /// Whether checkpoint states fit this layout; `Err` names the first that
    /// does not (the pipeline's features changed).
    pub fn fits(&self, states: &[AccState]) -> Result<(), usize> {
        if states.len() != self.accs.len() {
            return Err(states.len().min(self.accs.len()));
        }
        for (i, (a, st)) in self.accs.iter().zip(states).enumerate() {
            let ok = matches!(
                (a.kind, st),
                (
                    AccKind::CountEvents | AccKind::CountField(_),
                    AccState::Count(_)
                ) | (AccKind::Moments(_), AccState::Moments(_))
                    | (AccKind::Extremes(_), AccState::Extremes { .. })
                    | (AccKind::First(_) | AccKind::Last(_), AccState::Pick(_))
                    | (AccKind::Distinct { .. }, AccState::Distinct(_))
                    | (AccKind::Quantile(_), AccState::Quantile(_))
                    | (AccKind::Set { .. }, AccState::Set(_))
            );
            if !ok {
                return Err(i);
            }
        }
        Ok(())
    }

    /// Loads checkpoint states into a row; `Err` names the first state that
    /// does not fit the layout (the pipeline's features changed).
    pub fn import(
        &self,
        states: &[AccState],
        words: &mut [u64],
        heavy: &mut [Heavy],
    ) -> Result<(), usize> {
        if states.len() != self.accs.len() {
            return Err(states.len().min(self.accs.len()));
        }
        for (i, (a, st)) in self.accs.iter().zip(states).enumerate() {
            let w = a.word;
            match (a.kind, st) {
                (AccKind::CountEvents | AccKind::CountField(_), AccState::Count(c)) => {
                    words[w] = *c
                }
                (AccKind::Moments(_), AccState::Moments(m)) => {
                    m.store(&mut words[w..w + moments::MOMENTS_WORDS])
                }
                (AccKind::Extremes(_), AccState::Extremes { min, max }) => {
                    words[w] = min.to_bits();
                    words[w + 1] = max.to_bits();
                }
                (AccKind::First(_) | AccKind::Last(_), AccState::Pick(p)) => {
                    heavy[a.heavy] = Heavy::Pick(p.clone())
                }
                (AccKind::Distinct { .. }, AccState::Distinct(d)) => {
                    heavy[a.heavy] = Heavy::Distinct(d.clone())
                }
                (AccKind::Quantile(_), AccState::Quantile(s)) => {
                    heavy[a.heavy] = Heavy::Quantile(Box::new(s.clone()))
                }
                (AccKind::Set { .. }, AccState::Set(s)) => heavy[a.heavy] = Heavy::Set(s.clone()),
                _ => return Err(i),
            }
        }
        Ok(())
    }
}
