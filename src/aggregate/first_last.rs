//! `first` and `last`: the value with the smallest / greatest event time,
//! ties by arrival (the first to arrive for `first`, the last for `last`).
//! Any JSON scalar; the state is a heavy (variable-size) part of a row.

use serde::{Deserialize, Serialize};

use super::{f64_bits, Value};
use crate::time::Micros;

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

/// A borrowed first/last candidate.
#[derive(Debug, Clone, Copy)]
pub enum ScalarRef<'a> {
    Num(f64),
    Bool(bool),
    Str(&'a str),
}

/// Offers a candidate: `last` keeps the greatest `(time, seq)`, `first` the smallest.
#[inline]
pub fn offer(cur: &mut Option<Pick>, last: bool, time: Micros, seq: u64, value: ScalarRef<'_>) {
    let better = cur.as_ref().is_none_or(|c| {
        if last {
            (time, seq) > (c.time, c.seq)
        } else {
            (time, seq) < (c.time, c.seq)
        }
    });
    if better {
        set_pick(cur, time, seq, value);
    }
}

/// Folds another pick into `cur`.
pub fn merge(cur: &mut Option<Pick>, last: bool, other: &Option<Pick>) {
    let Some(b) = other else { return };
    let better = cur.as_ref().is_none_or(|x| {
        if last {
            (b.time, b.seq) > (x.time, x.seq)
        } else {
            (b.time, b.seq) < (x.time, x.seq)
        }
    });
    if better {
        *cur = Some(b.clone());
    }
}

pub fn finish(cur: &Option<Pick>) -> Value {
    match cur {
        None => Value::Null,
        Some(p) => match &p.value {
            Scalar::Num(n) => Value::Float(*n),
            Scalar::Bool(b) => Value::Bool(*b),
            Scalar::Str(s) => Value::Str(s.clone()),
        },
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_go_by_arrival() {
        let (mut f, mut l) = (None, None);
        for (seq, (t, v)) in [(5, "b"), (3, "a"), (3, "a2"), (9, "z"), (9, "z2")]
            .iter()
            .enumerate()
        {
            offer(&mut f, false, *t, seq as u64, ScalarRef::Str(v));
            offer(&mut l, true, *t, seq as u64, ScalarRef::Str(v));
        }
        assert_eq!(finish(&f), Value::Str("a".into()));
        assert_eq!(finish(&l), Value::Str("z2".into()));
        let mut m = None;
        merge(&mut m, true, &l);
        merge(&mut m, true, &f);
        assert_eq!(finish(&m), Value::Str("z2".into()));
    }
}
