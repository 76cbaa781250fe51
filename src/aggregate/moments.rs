//! Counts and moments: `count`, `sum`, `mean`, `std`, `std_pop`, `var`.
//!
//! [`Moments`] keeps a compensated (Neumaier) sum and Welford's sum of
//! squared deviations; two states merge with Chan's formula, never through
//! `sum_sq - sum²/n` (SPEC 4). The mean both recurrences use is the
//! compensated sum over the count, so it is not stored: a state is four
//! words of a row (a hopping tile of the six basic aggregates is then one
//! 64-byte line with its number, benches/README.md).

use super::f64_bits;

/// Words of a row a [`Moments`] takes.
pub const MOMENTS_WORDS: usize = 4;

/// Count, compensated sum and Welford M2 of a numeric field.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Moments {
    pub n: u64,
    #[serde(with = "f64_bits")]
    pub sum: f64,
    #[serde(with = "f64_bits")]
    pub comp: f64,
    #[serde(with = "f64_bits")]
    pub m2: f64,
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

impl Moments {
    #[inline]
    pub fn load(w: &[u64]) -> Moments {
        Moments {
            n: w[0],
            sum: f64::from_bits(w[1]),
            comp: f64::from_bits(w[2]),
            m2: f64::from_bits(w[3]),
        }
    }

    #[inline]
    pub fn store(&self, w: &mut [u64]) {
        w[0] = self.n;
        w[1] = self.sum.to_bits();
        w[2] = self.comp.to_bits();
        w[3] = self.m2.to_bits();
    }

    /// The mean of a non-empty state: the compensated sum over the count.
    #[inline]
    fn mean_of(&self) -> f64 {
        (self.sum + self.comp) / self.n as f64
    }

    /// Welford's step, `M2 += (x - mean_before) · (x - mean_after)`.
    #[inline]
    pub fn update(&mut self, x: f64) {
        if self.n == 0 {
            // One value: its mean is itself and M2 stays 0.
            self.n = 1;
            self.sum = x;
            self.comp = 0.0;
            return;
        }
        let before = self.mean_of();
        self.n += 1;
        neumaier(&mut self.sum, &mut self.comp, x);
        self.m2 += (x - before) * (x - self.mean_of());
    }

    /// Chan et al.'s parallel merge.
    pub fn merge(&mut self, o: &Moments) {
        if o.n == 0 {
            return;
        }
        if self.n == 0 {
            *self = *o;
            return;
        }
        let n = self.n + o.n;
        let delta = o.mean_of() - self.mean_of();
        let (na, nb, nf) = (self.n as f64, o.n as f64, n as f64);
        self.m2 += o.m2 + delta * delta * na * nb / nf;
        neumaier(&mut self.sum, &mut self.comp, o.sum);
        neumaier(&mut self.sum, &mut self.comp, o.comp);
        self.n = n;
    }

    pub fn sum(&self) -> Option<f64> {
        (self.n > 0).then_some(self.sum + self.comp)
    }
    pub fn mean(&self) -> Option<f64> {
        (self.n > 0).then(|| self.mean_of())
    }
    pub fn var_sample(&self) -> Option<f64> {
        (self.n > 1).then(|| (self.m2 / (self.n - 1) as f64).max(0.0))
    }
    pub fn var_pop(&self) -> Option<f64> {
        (self.n > 0).then(|| (self.m2 / self.n as f64).max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn exact_mean_var(xs: &[f64]) -> (f64, f64) {
        let n = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0);
        (mean, var)
    }

    #[test]
    fn welford_is_stable_with_a_large_offset() {
        let xs: Vec<f64> = (0..1000).map(|i| 1e6 + (i % 7) as f64 * 0.25).collect();
        let mut s = Moments::default();
        xs.iter().for_each(|&x| s.update(x));
        let (m, v) = exact_mean_var(&xs);
        assert!((s.mean().expect("n>0") - m).abs() / m < 1e-12);
        assert!((s.var_sample().expect("n>1") - v).abs() / v < 1e-9);
    }

    #[test]
    fn words_round_trip() {
        let mut s = Moments::default();
        [1.5, -2.25, 1e300].iter().for_each(|&x| s.update(x));
        let mut w = [0u64; MOMENTS_WORDS];
        s.store(&mut w);
        assert_eq!(Moments::load(&w), s);
    }

    proptest! {
        #[test]
        fn merge_equals_sequential(xs in prop::collection::vec(-1e6f64..1e6, 0..60), cut in 0usize..60) {
            let cut = cut.min(xs.len());
            let (mut a, mut b, mut all) = (Moments::default(), Moments::default(), Moments::default());
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
        }
    }
}
