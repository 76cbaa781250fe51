//! `min` and `max` of a numeric field, by comparison only (never by
//! subtraction, SPEC 4). Two words of a row: the empty state is
//! `(+inf, -inf)`, which no value leaves behind (JSON has no NaN).

/// Words of a row an extremes state takes.
pub const EXTREMES_WORDS: usize = 2;

/// The empty state's words.
pub const EMPTY: [u64; EXTREMES_WORDS] = [f64::INFINITY.to_bits(), f64::NEG_INFINITY.to_bits()];

#[inline]
pub fn update(w: &mut [u64], x: f64) {
    if x < f64::from_bits(w[0]) {
        w[0] = x.to_bits();
    }
    if x > f64::from_bits(w[1]) {
        w[1] = x.to_bits();
    }
}

#[inline]
pub fn merge(w: &mut [u64], o: &[u64]) {
    if f64::from_bits(o[0]) < f64::from_bits(w[0]) {
        w[0] = o[0];
    }
    if f64::from_bits(o[1]) > f64::from_bits(w[1]) {
        w[1] = o[1];
    }
}

fn is_empty(w: &[u64]) -> bool {
    f64::from_bits(w[0]) > f64::from_bits(w[1])
}

pub fn min(w: &[u64]) -> Option<f64> {
    (!is_empty(w)).then(|| f64::from_bits(w[0]))
}

pub fn max(w: &[u64]) -> Option<f64> {
    (!is_empty(w)).then(|| f64::from_bits(w[1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_single_and_merged() {
        let mut a = EMPTY;
        assert_eq!((min(&a), max(&a)), (None, None));
        update(&mut a, 3.0);
        assert_eq!((min(&a), max(&a)), (Some(3.0), Some(3.0)));
        let mut b = EMPTY;
        update(&mut b, -1.0);
        update(&mut b, f64::INFINITY);
        merge(&mut a, &b);
        assert_eq!((min(&a), max(&a)), (Some(-1.0), Some(f64::INFINITY)));
        merge(&mut a, &EMPTY);
        assert_eq!(min(&a), Some(-1.0));
    }
}
