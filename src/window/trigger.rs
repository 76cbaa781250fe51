//! Processing-time triggers (SPEC 3): early and late ticks are aligned to
//! multiples of their period since the epoch (as Flink's
//! `ContinuousProcessingTimeTrigger`).

use crate::time::Micros;

/// The first tick of period `every` after processing time `prev`.
#[inline]
pub fn next_tick(prev: Micros, every: Micros) -> Micros {
    (prev.div_euclid(every) + 1).saturating_mul(every)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ticks_are_aligned() {
        assert_eq!(super::next_tick(0, 10), 10);
        assert_eq!(super::next_tick(9, 10), 10);
        assert_eq!(super::next_tick(10, 10), 20);
        assert_eq!(super::next_tick(-1, 10), 0);
    }
}
