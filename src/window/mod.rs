//! Window assignment (SPEC 1): half-open `[start, end)` intervals.
//!
//! Tumbling windows are aligned to the epoch plus an offset with floor
//! semantics (times before 1970 included). Sessions start as `[t, t + gap)`
//! and merge when they overlap or touch; the merging itself lives in the
//! engine, which owns the per-key state.

use crate::time::Micros;

/// Start of the tumbling window of `size` (shifted by `offset`) holding `t`.
#[inline]
pub fn tumbling_start(t: Micros, size: Micros, offset: Micros) -> Micros {
    t - (t - offset).rem_euclid(size)
}

/// Whether two half-open intervals overlap or touch (sessions merge then).
#[inline]
pub fn sessions_meet(a: (Micros, Micros), b: (Micros, Micros)) -> bool {
    a.0 <= b.1 && b.0 <= a.1
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

    #[test]
    fn sessions_touching_meet() {
        assert!(sessions_meet((0, 10), (10, 20)));
        assert!(sessions_meet((5, 15), (0, 10)));
        assert!(!sessions_meet((0, 10), (11, 20)));
    }
}
