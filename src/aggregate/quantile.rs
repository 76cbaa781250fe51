//! `quantile` with `q` in [0, 1]: a relative-error sketch in the manner of
//! DDSketch (relative accuracy 1 %), negative values included.
//!
//! A value `x > 0` is counted in bucket `k = ceil(ln x / ln γ)` with
//! `γ = 1.01 / 0.99`, so the bucket holds `(γ^(k-1), γ^k]`; negative values
//! are counted by their magnitude in a second set of buckets, and zeros
//! apart. The q-quantile is the element of rank `floor(q · (n - 1))`
//! (0-based) of the sorted values; the sketch answers the middle of that
//! element's bucket, `2 γ^k / (γ + 1)`, which is within 1 % of it
//! (relative error at most `(γ - 1) / (γ + 1) = 0.01`), clamped to the
//! exact minimum and maximum it also keeps. The lowest rank (`q = 0`, or a
//! single value) answers the exact minimum and the highest the exact
//! maximum. Counts are integers, so merges are exact and the answer does
//! not depend on how the state was built.

use serde::{Deserialize, Serialize};

use super::f64_bits;

/// Relative accuracy.
pub const ALPHA: f64 = 0.01;

fn gamma() -> f64 {
    (1.0 + ALPHA) / (1.0 - ALPHA)
}

/// Buckets as sorted (index, count) pairs.
type Buckets = Vec<(i32, u64)>;

#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct Sketch {
    pub n: u64,
    zeros: u64,
    pos: Buckets,
    neg: Buckets,
    #[serde(with = "f64_bits")]
    min: f64,
    #[serde(with = "f64_bits")]
    max: f64,
}

impl Clone for Sketch {
    fn clone(&self) -> Sketch {
        Sketch {
            n: self.n,
            zeros: self.zeros,
            pos: self.pos.clone(),
            neg: self.neg.clone(),
            min: self.min,
            max: self.max,
        }
    }

    fn clone_from(&mut self, s: &Sketch) {
        self.n = s.n;
        self.zeros = s.zeros;
        self.pos.clone_from(&s.pos);
        self.neg.clone_from(&s.neg);
        self.min = s.min;
        self.max = s.max;
    }
}

impl Default for Sketch {
    fn default() -> Self {
        Sketch {
            n: 0,
            zeros: 0,
            pos: Vec::new(),
            neg: Vec::new(),
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }
}

#[inline]
fn bucket(x: f64) -> i32 {
    // Magnitudes below f64::MIN_POSITIVE map to the lowest buckets; above
    // f64::MAX there is nothing (infinities are clamped by min/max).
    let x = x.clamp(f64::MIN_POSITIVE, f64::MAX);
    (x.ln() / gamma().ln()).ceil() as i32
}

fn add(b: &mut Buckets, k: i32, c: u64) {
    match b.binary_search_by_key(&k, |e| e.0) {
        Ok(i) => b[i].1 += c,
        Err(i) => b.insert(i, (k, c)),
    }
}

/// Adds sorted buckets `b` into sorted buckets `a`, in one pass.
fn merge_buckets(a: &mut Buckets, b: &Buckets) {
    if b.is_empty() {
        return;
    }
    if b.len() == 1 {
        return add(a, b[0].0, b[0].1);
    }
    let mut m = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].0.cmp(&b[j].0) {
            std::cmp::Ordering::Less => {
                m.push(a[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                m.push(b[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                m.push((a[i].0, a[i].1 + b[j].1));
                i += 1;
                j += 1;
            }
        }
    }
    m.extend_from_slice(&a[i..]);
    m.extend_from_slice(&b[j..]);
    *a = m;
}

fn value_of(k: i32) -> f64 {
    let g = gamma();
    2.0 * g.powi(k) / (g + 1.0)
}

impl Sketch {
    #[inline]
    pub fn insert(&mut self, x: f64) {
        self.n += 1;
        if x < self.min {
            self.min = x;
        }
        if x > self.max {
            self.max = x;
        }
        if x > 0.0 {
            add(&mut self.pos, bucket(x), 1);
        } else if x < 0.0 {
            add(&mut self.neg, bucket(-x), 1);
        } else {
            self.zeros += 1;
        }
    }

    pub fn merge(&mut self, o: &Sketch) {
        self.n += o.n;
        self.zeros += o.zeros;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        merge_buckets(&mut self.pos, &o.pos);
        merge_buckets(&mut self.neg, &o.neg);
    }

    /// The q-quantile (see the module documentation); `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.n == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * (self.n - 1) as f64).floor() as u64).min(self.n - 1);
        if rank == 0 {
            return Some(self.min);
        }
        if rank == self.n - 1 {
            return Some(self.max);
        }
        let mut seen = 0u64;
        // Most negative first: the largest magnitudes of the negative side.
        for &(k, c) in self.neg.iter().rev() {
            seen += c;
            if seen > rank {
                return Some((-value_of(k)).clamp(self.min, self.max));
            }
        }
        seen += self.zeros;
        if seen > rank {
            return Some(0.0);
        }
        for &(k, c) in &self.pos {
            seen += c;
            if seen > rank {
                return Some(value_of(k).clamp(self.min, self.max));
            }
        }
        Some(self.max)
    }

    /// Bytes held (memory reports).
    pub fn heap_bytes(&self) -> usize {
        (self.pos.capacity() + self.neg.capacity()) * 16
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reference(xs: &[f64], q: f64) -> f64 {
        let mut v = xs.to_vec();
        v.sort_by(f64::total_cmp);
        v[(q * (v.len() - 1) as f64).floor() as usize]
    }

    #[test]
    fn single_values_and_ends_are_exact() {
        let mut s = Sketch::default();
        assert_eq!(s.quantile(0.5), None);
        s.insert(123.456);
        assert_eq!(s.quantile(0.5), Some(123.456));
        s.insert(-7.25);
        assert_eq!(s.quantile(0.0), Some(-7.25));
        assert_eq!(s.quantile(1.0), Some(123.456));
    }

    proptest! {
        /// Within the relative accuracy of the sorted reference, negative
        /// values and zeros included; merges equal inserts.
        #[test]
        fn within_one_percent_of_the_sorted_reference(
            xs in prop::collection::vec(prop_oneof![-1e6f64..1e6, Just(0.0), 1e-3f64..10.0, -10.0f64..-1e-3], 1..400),
            q in 0.0f64..=1.0,
            cut in 0usize..400,
        ) {
            let mut s = Sketch::default();
            xs.iter().for_each(|&x| s.insert(x));
            let want = reference(&xs, q);
            let got = s.quantile(q).expect("a non-empty sketch has every quantile");
            prop_assert!((got - want).abs() <= ALPHA * want.abs() + 1e-12, "q={} got {} want {}", q, got, want);
            let cut = cut.min(xs.len());
            let (mut a, mut b) = (Sketch::default(), Sketch::default());
            xs[..cut].iter().for_each(|&x| a.insert(x));
            xs[cut..].iter().rev().for_each(|&x| b.insert(x));
            a.merge(&b);
            prop_assert_eq!(a, s);
        }
    }
}
