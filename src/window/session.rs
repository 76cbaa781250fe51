//! Session windows: an event makes `[t, t + gap)`; sessions of one key that
//! overlap or touch merge into `[min start, max end)`, and an event that
//! bridges two sessions merges all three ([`merging`]).

use crate::time::Micros;

/// Whether two half-open intervals overlap or touch (sessions merge then).
#[inline]
pub fn sessions_meet(a: (Micros, Micros), b: (Micros, Micros)) -> bool {
    a.0 <= b.1 && b.0 <= a.1
}

/// Which of a key's sessions (bounds sorted by start) an interval `new`
/// merges with, and the merged bounds: the run of sessions it meets,
/// growing as it takes each in. `None` when it meets none.
pub fn merging(
    sessions: &[(Micros, Micros)],
    new: (Micros, Micros),
) -> Option<(Vec<usize>, (Micros, Micros))> {
    let (mut lo, mut hi) = new;
    let mut members = Vec::new();
    for (i, &s) in sessions.iter().enumerate() {
        if sessions_meet(s, (lo, hi)) {
            members.push(i);
            lo = lo.min(s.0);
            hi = hi.max(s.1);
        }
    }
    (!members.is_empty()).then_some((members, (lo, hi)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_touching_meet() {
        assert!(sessions_meet((0, 10), (10, 20)));
        assert!(sessions_meet((5, 15), (0, 10)));
        assert!(!sessions_meet((0, 10), (11, 20)));
    }

    #[test]
    fn a_bridging_interval_merges_both_sides() {
        let s = [(0, 10), (20, 30), (50, 60)];
        assert_eq!(merging(&s, (10, 20)), Some((vec![0, 1], (0, 30))));
        assert_eq!(merging(&s, (35, 40)), None);
    }
}
