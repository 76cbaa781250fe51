//! Tumbling windows: `[start, start + size)` aligned to the epoch plus an
//! offset, with floor semantics (times before 1970 included).

use crate::time::Micros;

/// Start of the tumbling window of `size` (shifted by `offset`) holding `t`.
#[inline]
pub fn tumbling_start(t: Micros, size: Micros, offset: Micros) -> Micros {
    t - (t - offset).rem_euclid(size)
}

/// The tumbling window found last: consecutive events of a stream mostly
/// fall into the same one, and finding a window takes an integer division.
#[derive(Debug, Clone, Copy, Default)]
pub struct LastTumbling {
    start: Micros,
    end: Micros,
    /// The window's number, `(start - offset) / size` (hopping tiles).
    n: i64,
}

impl LastTumbling {
    /// [`tumbling_start`], answered from the last window when `t` is in it.
    #[inline]
    pub fn start(&mut self, t: Micros, size: Micros, offset: Micros) -> Micros {
        if self.start <= t && t < self.end {
            return self.start;
        }
        // One division gives both the window's number and its start (as
        // `tumbling_start`: the remainder is `d - n·size`).
        let d = t - offset;
        let n = d.div_euclid(size);
        let start = t - (d - n * size);
        *self = LastTumbling {
            start,
            end: start.saturating_add(size),
            n,
        };
        start
    }

    /// [`LastTumbling::start`] and the window's number
    /// (`(t - offset).div_euclid(size)`), both remembered.
    #[inline]
    pub fn start_and_number(&mut self, t: Micros, size: Micros, offset: Micros) -> (Micros, i64) {
        let start = self.start(t, size, offset);
        (start, self.n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tumbling_floor_semantics() {
        assert_eq!(tumbling_start(0, 10, 0), 0);
        assert_eq!(tumbling_start(9, 10, 0), 0);
        assert_eq!(tumbling_start(10, 10, 0), 10);
        assert_eq!(tumbling_start(-1, 10, 0), -10);
        assert_eq!(tumbling_start(-10, 10, 0), -10);
        assert_eq!(tumbling_start(12, 10, 3), 3);
        assert_eq!(tumbling_start(2, 10, 3), -7);
    }

    use proptest::prelude::*;

    proptest! {
        /// The remembered window never changes an answer, whatever the
        /// order of times (near and far, before 1970, near the limits).
        #[test]
        fn last_window_agrees_with_the_division(
            size in 1i64..1_000_000,
            offset in -1_000_000i64..1_000_000,
            times in prop::collection::vec(prop_oneof![
                -3_000_000i64..3_000_000,
                any::<i64>().prop_map(|t| t / 2),
                (i64::MAX - 2_000_000)..(i64::MAX - 1_000_000),
            ], 1..60),
        ) {
            let mut last = LastTumbling::default();
            let mut numbered = LastTumbling::default();
            for t in times {
                prop_assert_eq!(last.start(t, size, offset), tumbling_start(t, size, offset));
                prop_assert_eq!(
                    numbered.start_and_number(t, size, offset),
                    (tumbling_start(t, size, offset), (t - offset).div_euclid(size))
                );
            }
        }
    }
}
