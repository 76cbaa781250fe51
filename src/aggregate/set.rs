//! `collect_set` with `max: N` (default 100): the distinct values of a
//! field, sorted (by their text, bytewise); with more than `N` distinct
//! values, the `N` smallest, and the state remembers that it was cut. The
//! `N` smallest of a union are the `N` smallest of the parts' `N`
//! smallest, so merges are exact in any order.
//!
//! Values are kept as text: strings as they are, numbers in shortest
//! round-trip form, booleans as `true`/`false`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SetState {
    pub values: Vec<String>,
    /// Some value was left out because of the bound.
    pub cut: bool,
}

impl Clone for SetState {
    fn clone(&self) -> SetState {
        SetState {
            values: self.values.clone(),
            cut: self.cut,
        }
    }

    fn clone_from(&mut self, s: &SetState) {
        self.values.clone_from(&s.values);
        self.cut = s.cut;
    }
}

impl SetState {
    #[inline]
    pub fn insert(&mut self, v: &str, max: usize) {
        match self.values.binary_search_by(|x| x.as_str().cmp(v)) {
            Ok(_) => {}
            Err(i) if i < max => {
                self.values.insert(i, v.to_string());
                if self.values.len() > max {
                    self.values.pop();
                    self.cut = true;
                }
            }
            Err(_) => self.cut = true,
        }
    }

    pub fn merge(&mut self, o: &SetState, max: usize) {
        if o.values.len() <= 2 {
            for v in &o.values {
                self.insert(v, max);
            }
        } else {
            // Two sorted sets: one pass, keeping the `max` smallest.
            let a = std::mem::take(&mut self.values);
            let total = a.len() + o.values.len();
            let mut m: Vec<String> = Vec::with_capacity(total.min(max));
            let (mut ai, mut bi) = (a.into_iter().peekable(), o.values.iter().peekable());
            let mut distinct = 0usize;
            loop {
                let next = match (ai.peek(), bi.peek()) {
                    (Some(x), Some(y)) => match x.as_str().cmp(y.as_str()) {
                        std::cmp::Ordering::Less => ai.next(),
                        std::cmp::Ordering::Greater => bi.next().cloned(),
                        std::cmp::Ordering::Equal => {
                            bi.next();
                            ai.next()
                        }
                    },
                    (Some(_), None) => ai.next(),
                    (None, Some(_)) => bi.next().cloned(),
                    (None, None) => break,
                };
                distinct += 1;
                if m.len() < max {
                    m.extend(next);
                }
            }
            if distinct > max {
                self.cut = true;
            }
            self.values = m;
        }
        self.cut |= o.cut;
    }

    /// Bytes held (memory reports).
    pub fn heap_bytes(&self) -> usize {
        self.values.capacity() * 24 + self.values.iter().map(|s| s.capacity()).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn the_smallest_distinct_values_whatever_the_merges(
            xs in prop::collection::vec("[a-e]{1,2}", 0..60), max in 1usize..8, cut in 0usize..60,
        ) {
            let mut want: Vec<String> = xs.clone();
            want.sort();
            want.dedup();
            let was_cut = want.len() > max;
            want.truncate(max);
            let cut = cut.min(xs.len());
            let (mut a, mut b) = (SetState::default(), SetState::default());
            xs[..cut].iter().for_each(|x| a.insert(x, max));
            xs[cut..].iter().rev().for_each(|x| b.insert(x, max));
            a.merge(&b, max);
            prop_assert_eq!(a.values, want);
            prop_assert_eq!(a.cut, was_cut);
        }
    }
}
