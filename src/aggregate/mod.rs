//! Accumulators: update with one value, merge two states, finish to a value.
//!
//! Features over the same field and filter share one accumulator: `sum`,
//! `mean`, `std`, `std_pop`, `var`, `min` and `max` of a field all read one
//! [`Stats`], which keeps a compensated (Neumaier) sum, the Welford mean and
//! sum of squared deviations, and min/max by comparison only. Two states
//! merge with Chan's formula, so session merges lose no precision.

use serde::{Deserialize, Serialize};

use crate::config::AggKind;
use crate::time::Micros;

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

/// Count, compensated sum, Welford mean/M2, min and max of a numeric field.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub n: u64,
    #[serde(with = "f64_bits")]
    sum: f64,
    #[serde(with = "f64_bits")]
    comp: f64,
    #[serde(with = "f64_bits")]
    mean: f64,
    #[serde(with = "f64_bits")]
    m2: f64,
    #[serde(with = "f64_bits")]
    min: f64,
    #[serde(with = "f64_bits")]
    max: f64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            n: 0,
            sum: 0.0,
            comp: 0.0,
            mean: 0.0,
            m2: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }
}

#[inline]
fn neumaier(sum: &mut f64, comp: &mut f64, x: f64) {
    let t = *sum + x;
    if sum.abs() >= x.abs() {
        *comp += (*sum - t) + x;
    } else {
        *comp += (x - t) + *sum;
    }
    *sum = t;
}

impl Stats {
    #[inline]
    pub fn update(&mut self, x: f64) {
        self.n += 1;
        neumaier(&mut self.sum, &mut self.comp, x);
        let delta = x - self.mean;
        self.mean += delta / self.n as f64;
        self.m2 += delta * (x - self.mean);
        if x < self.min {
            self.min = x;
        }
        if x > self.max {
            self.max = x;
        }
    }

    /// Chan et al.'s parallel merge.
    pub fn merge(&mut self, o: &Stats) {
        if o.n == 0 {
            return;
        }
        if self.n == 0 {
            *self = *o;
            return;
        }
        let n = self.n + o.n;
        let delta = o.mean - self.mean;
        let (na, nb, nf) = (self.n as f64, o.n as f64, n as f64);
        self.mean += delta * nb / nf;
        self.m2 += o.m2 + delta * delta * na * nb / nf;
        neumaier(&mut self.sum, &mut self.comp, o.sum);
        neumaier(&mut self.sum, &mut self.comp, o.comp);
        self.n = n;
        if o.min < self.min {
            self.min = o.min;
        }
        if o.max > self.max {
            self.max = o.max;
        }
    }

    pub fn sum(&self) -> Option<f64> {
        (self.n > 0).then_some(self.sum + self.comp)
    }
    pub fn mean(&self) -> Option<f64> {
        (self.n > 0).then_some(self.mean)
    }
    pub fn var_sample(&self) -> Option<f64> {
        (self.n > 1).then(|| (self.m2 / (self.n - 1) as f64).max(0.0))
    }
    pub fn var_pop(&self) -> Option<f64> {
        (self.n > 0).then(|| (self.m2 / self.n as f64).max(0.0))
    }
    pub fn min(&self) -> Option<f64> {
        (self.n > 0).then_some(self.min)
    }
    pub fn max(&self) -> Option<f64> {
        (self.n > 0).then_some(self.max)
    }
}

/// A kept scalar of `first`/`last`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Scalar {
    Num(#[serde(with = "f64_bits")] f64),
    Bool(bool),
    Str(String),
}

/// The value picked by `first` or `last`, with its event time and arrival number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pick {
    pub time: Micros,
    pub seq: u64,
    pub value: Scalar,
}

/// One accumulator state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Acc {
    Count(u64),
    Stats(Stats),
    First(Option<Pick>),
    Last(Option<Pick>),
}

/// What an accumulator consumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccKind {
    /// Events (that pass the filter).
    CountEvents,
    /// Non-null values of a field slot.
    CountField(usize),
    /// Numeric values of a field slot.
    Stats(usize),
    First(usize),
    Last(usize),
}

impl AccKind {
    pub fn empty(self) -> Acc {
        match self {
            AccKind::CountEvents | AccKind::CountField(_) => Acc::Count(0),
            AccKind::Stats(_) => Acc::Stats(Stats::default()),
            AccKind::First(_) => Acc::First(None),
            AccKind::Last(_) => Acc::Last(None),
        }
    }
}

impl Acc {
    /// Resets to the empty state of the same kind, keeping buffers.
    pub fn reset(&mut self) {
        match self {
            Acc::Count(c) => *c = 0,
            Acc::Stats(s) => *s = Stats::default(),
            Acc::First(p) | Acc::Last(p) => *p = None,
        }
    }

    /// Offers a first/last candidate.
    pub fn pick(&mut self, time: Micros, seq: u64, value: ScalarRef<'_>) {
        match self {
            Acc::First(cur) => {
                let better = cur.as_ref().is_none_or(|c| (time, seq) < (c.time, c.seq));
                if better {
                    set_pick(cur, time, seq, value);
                }
            }
            Acc::Last(cur) => {
                let better = cur.as_ref().is_none_or(|c| (time, seq) > (c.time, c.seq));
                if better {
                    set_pick(cur, time, seq, value);
                }
            }
            _ => {}
        }
    }

    /// Folds another state of the same kind into this one.
    pub fn merge(&mut self, other: &Acc) {
        match (self, other) {
            (Acc::Count(a), Acc::Count(b)) => *a += b,
            (Acc::Stats(a), Acc::Stats(b)) => a.merge(b),
            (Acc::First(a), Acc::First(Some(b)))
                if a.as_ref().is_none_or(|x| (b.time, b.seq) < (x.time, x.seq)) =>
            {
                *a = Some(b.clone());
            }
            (Acc::Last(a), Acc::Last(Some(b)))
                if a.as_ref().is_none_or(|x| (b.time, b.seq) > (x.time, x.seq)) =>
            {
                *a = Some(b.clone());
            }
            _ => {}
        }
    }
}

/// A borrowed first/last candidate.
#[derive(Debug, Clone, Copy)]
pub enum ScalarRef<'a> {
    Num(f64),
    Bool(bool),
    Str(&'a str),
}

fn set_pick(cur: &mut Option<Pick>, time: Micros, seq: u64, value: ScalarRef<'_>) {
    // Reuse the string buffer of the previous pick: `last` changes on most events.
    match (cur.as_mut(), value) {
        (Some(p), ScalarRef::Str(s)) => {
            p.time = time;
            p.seq = seq;
            if let Scalar::Str(buf) = &mut p.value {
                buf.clear();
                buf.push_str(s);
            } else {
                p.value = Scalar::Str(s.to_string());
            }
        }
        (_, v) => {
            let value = match v {
                ScalarRef::Num(n) => Scalar::Num(n),
                ScalarRef::Bool(b) => Scalar::Bool(b),
                ScalarRef::Str(s) => Scalar::Str(s.to_string()),
            };
            *cur = Some(Pick { time, seq, value });
        }
    }
}

/// The value of aggregate `agg` from its accumulator.
pub fn finish(agg: AggKind, acc: &Acc) -> Value {
    let f = |o: Option<f64>| o.map_or(Value::Null, Value::Float);
    match (agg, acc) {
        (AggKind::Count, Acc::Count(c)) => Value::Int(*c as i64),
        (AggKind::Sum, Acc::Stats(s)) => f(s.sum()),
        (AggKind::Mean, Acc::Stats(s)) => f(s.mean()),
        (AggKind::Std, Acc::Stats(s)) => f(s.var_sample().map(f64::sqrt)),
        (AggKind::StdPop, Acc::Stats(s)) => f(s.var_pop().map(f64::sqrt)),
        (AggKind::Var, Acc::Stats(s)) => f(s.var_sample()),
        (AggKind::Min, Acc::Stats(s)) => f(s.min()),
        (AggKind::Max, Acc::Stats(s)) => f(s.max()),
        (AggKind::First | AggKind::Last, Acc::First(p) | Acc::Last(p)) => match p {
            None => Value::Null,
            Some(p) => match &p.value {
                Scalar::Num(n) => Value::Float(*n),
                Scalar::Bool(b) => Value::Bool(*b),
                Scalar::Str(s) => Value::Str(s.clone()),
            },
        },
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn exact_mean_var(xs: &[f64]) -> (f64, f64) {
        // Two-pass reference.
        let n = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0);
        (mean, var)
    }

    #[test]
    fn welford_is_stable_with_a_large_offset() {
        let xs: Vec<f64> = (0..1000).map(|i| 1e6 + (i % 7) as f64 * 0.25).collect();
        let mut s = Stats::default();
        xs.iter().for_each(|&x| s.update(x));
        let (m, v) = exact_mean_var(&xs);
        assert!((s.mean().expect("n>0") - m).abs() / m < 1e-12);
        assert!(
            (s.var_sample().expect("n>1") - v).abs() / v < 1e-9,
            "{:?} vs {v}",
            s.var_sample()
        );
    }

    #[test]
    fn empty_and_single() {
        let mut s = Stats::default();
        assert_eq!(finish(AggKind::Sum, &Acc::Stats(s)), Value::Null);
        s.update(3.0);
        assert_eq!(finish(AggKind::Std, &Acc::Stats(s)), Value::Null);
        assert_eq!(finish(AggKind::StdPop, &Acc::Stats(s)), Value::Float(0.0));
        assert_eq!(finish(AggKind::Min, &Acc::Stats(s)), Value::Float(3.0));
    }

    #[test]
    fn first_last_ties_go_by_arrival() {
        let mut f = Acc::First(None);
        let mut l = Acc::Last(None);
        for (seq, (t, v)) in [(5, "b"), (3, "a"), (3, "a2"), (9, "z"), (9, "z2")]
            .iter()
            .enumerate()
        {
            f.pick(*t, seq as u64, ScalarRef::Str(v));
            l.pick(*t, seq as u64, ScalarRef::Str(v));
        }
        assert_eq!(finish(AggKind::First, &f), Value::Str("a".into()));
        assert_eq!(finish(AggKind::Last, &l), Value::Str("z2".into()));
    }

    proptest! {
        #[test]
        fn merge_equals_sequential(xs in prop::collection::vec(-1e6f64..1e6, 0..60), cut in 0usize..60) {
            let cut = cut.min(xs.len());
            let (mut a, mut b, mut all) = (Stats::default(), Stats::default(), Stats::default());
            xs[..cut].iter().for_each(|&x| a.update(x));
            xs[cut..].iter().for_each(|&x| b.update(x));
            xs.iter().for_each(|&x| all.update(x));
            a.merge(&b);
            prop_assert_eq!(a.n, all.n);
            let close = |x: Option<f64>, y: Option<f64>| match (x, y) {
                (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0),
                (None, None) => true,
                _ => false,
            };
            prop_assert!(close(a.sum(), all.sum()));
            prop_assert!(close(a.mean(), all.mean()));
            prop_assert!(close(a.var_sample(), all.var_sample()));
            prop_assert_eq!(a.min(), all.min());
            prop_assert_eq!(a.max(), all.max());
        }
    }
}
