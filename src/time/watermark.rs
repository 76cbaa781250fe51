//! Watermarks (SPEC 2, docs/semantics.md section 2).
//!
//! [`PartitionWatermark`] is the watermark of one source partition:
//! `W_p = max event time seen on p - max_out_of_orderness`, raised further
//! only by [`PartitionWatermark::advance_to`] (an idle partition following
//! the others, the end of a bounded input). It never moves backwards. The
//! lateness and the firing of a partition's keys are judged against it, so
//! a partition's panes depend on its own log only, whatever the other
//! partitions of the instance did or which instance held it before.
//!
//! A partition is idle when it has delivered nothing for `idle_timeout` of
//! processing time and its source says it has reached the end of its log;
//! it rejoins when it delivers again. [`idle_floor`] says where the idle
//! partitions of an instance are raised to: the minimum over the partitions
//! that are not idle (so they never hold the others back), or, with every
//! assigned partition idle and `idle_advance`, `now - max_out_of_orderness`.
//! With nothing assigned there is no floor: no assignment is not idleness.

use super::Micros;

/// Watermark value before any event: nothing is complete.
pub const WATERMARK_MIN: Micros = i64::MIN;
/// Watermark at the end of a bounded input: everything is complete.
pub const WATERMARK_MAX: Micros = i64::MAX;

/// The watermark of one partition. See the module documentation.
#[derive(Debug, Clone)]
pub struct PartitionWatermark {
    out_of_orderness: Micros,
    idle_timeout: Option<Micros>,
    /// Greatest event time delivered on this partition.
    max_time: Option<Micros>,
    current: Micros,
    /// Processing time of the last delivery (or of assignment).
    last_activity: Micros,
    /// The source reports the consumer is at or past the high watermark.
    at_end_of_log: bool,
    idle: bool,
}

impl PartitionWatermark {
    /// A partition assigned at processing time `now`, before any event.
    pub fn new(out_of_orderness: Micros, idle_timeout: Option<Micros>, now: Micros) -> Self {
        Self {
            out_of_orderness,
            idle_timeout,
            max_time: None,
            current: WATERMARK_MIN,
            last_activity: now,
            at_end_of_log: false,
            idle: false,
        }
    }

    /// `W_p`.
    #[inline]
    pub fn current(&self) -> Micros {
        self.current
    }

    /// Greatest event time seen (checkpoints).
    pub fn max_time(&self) -> Option<Micros> {
        self.max_time
    }

    /// Whether the partition is idle now.
    pub fn is_idle(&self) -> bool {
        self.idle
    }

    /// Records an event of time `t` at processing time `now`. Returns true
    /// when `W_p` moved.
    #[inline]
    pub fn observe(&mut self, t: Micros, now: Micros) -> bool {
        self.last_activity = now;
        self.idle = false;
        if self.max_time.is_some_and(|m| m >= t) {
            return false;
        }
        self.max_time = Some(t);
        self.advance_to(t.saturating_sub(self.out_of_orderness))
    }

    /// Records whether the partition has reached the end of its log, and
    /// re-evaluates idleness. Returns true when idleness changed.
    pub fn set_end_of_log(&mut self, at_end: bool, now: Micros) -> bool {
        self.at_end_of_log = at_end;
        let was = self.idle;
        if !at_end {
            self.idle = false;
        }
        self.on_processing_time(now) || was != self.idle
    }

    /// Re-evaluates idleness at processing time `now`. Returns true when
    /// the partition became idle.
    pub fn on_processing_time(&mut self, now: Micros) -> bool {
        let Some(timeout) = self.idle_timeout else {
            return false;
        };
        if self.last_activity == WATERMARK_MIN {
            // Assigned before any processing time was known: silence counts from now.
            self.last_activity = now;
        }
        if !self.idle && self.at_end_of_log && now.saturating_sub(self.last_activity) >= timeout {
            self.idle = true;
            return true;
        }
        false
    }

    /// Raises `W_p` to at least `w`. Returns true when it moved.
    #[inline]
    pub fn advance_to(&mut self, w: Micros) -> bool {
        if w > self.current {
            self.current = w;
            true
        } else {
            false
        }
    }

    /// Continues from a checkpoint: its greatest event time and the
    /// partition watermark it saved (never below what the events imply).
    pub fn restore(&mut self, max_time: Option<Micros>, saved: Micros) {
        self.max_time = self.max_time.max(max_time);
        if let Some(m) = self.max_time {
            self.advance_to(m.saturating_sub(self.out_of_orderness));
        }
        self.advance_to(saved);
    }
}

/// Where the idle partitions of an instance are raised to, from each
/// assigned partition's `(W_p, idle)`: the minimum `W_p` of the partitions
/// that are not idle; with every one idle, `now - out_of_orderness` when
/// `idle_advance` is set; `None` (nothing moves) when nothing is assigned
/// or every partition is idle without `idle_advance`.
pub fn idle_floor(
    parts: impl IntoIterator<Item = (Micros, bool)>,
    idle_advance: bool,
    now: Micros,
    out_of_orderness: Micros,
) -> Option<Micros> {
    let mut any = false;
    let mut min_active: Option<Micros> = None;
    for (w, idle) in parts {
        any = true;
        if !idle {
            min_active = Some(min_active.map_or(w, |m| m.min(w)));
        }
    }
    match (any, min_active) {
        (false, _) => None,
        (true, Some(m)) => Some(m),
        (true, None) => idle_advance.then(|| now.saturating_sub(out_of_orderness)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_greatest_event_time_and_never_moves_back() {
        let mut w = PartitionWatermark::new(10, None, 0);
        assert_eq!(w.current(), WATERMARK_MIN);
        assert!(w.observe(100, 0));
        assert_eq!(w.current(), 90);
        assert!(!w.observe(50, 0), "an older event moves nothing");
        assert_eq!(w.current(), 90);
        assert!(w.advance_to(500));
        assert!(!w.observe(200, 0), "W_p stays where it was raised to");
        assert_eq!(w.current(), 500);
    }

    #[test]
    fn idle_needs_timeout_and_end_of_log() {
        let mut w = PartitionWatermark::new(0, Some(1000), 0);
        w.observe(500, 0);
        assert!(!w.on_processing_time(5000), "not at the end of its log");
        assert!(w.set_end_of_log(true, 5000));
        assert!(w.is_idle());
        // It rejoins when it delivers again.
        w.observe(100, 6000);
        assert!(!w.is_idle());
        assert!(!w.set_end_of_log(true, 6500), "silent for only 500");
        assert!(w.on_processing_time(7000));
    }

    #[test]
    fn the_floor_of_idle_partitions() {
        // The minimum over the partitions that are not idle.
        assert_eq!(
            idle_floor([(40, false), (90, false), (5, true)], true, 1000, 10),
            Some(40)
        );
        // Every partition idle: processing time, only when asked.
        assert_eq!(idle_floor([(40, true)], true, 1000, 10), Some(990));
        assert_eq!(idle_floor([(40, true)], false, 1000, 10), None);
        // Nothing assigned is not "every partition idle".
        assert_eq!(idle_floor([], true, 1000, 10), None);
    }

    #[test]
    fn a_restore_continues_from_the_saved_partition_watermark() {
        let mut w = PartitionWatermark::new(10, None, 0);
        w.restore(Some(100), 300);
        assert_eq!(
            w.current(),
            300,
            "raised by an idle floor before the checkpoint"
        );
        let mut w = PartitionWatermark::new(10, None, 0);
        w.restore(Some(100), WATERMARK_MIN);
        assert_eq!(w.current(), 90);
        assert_eq!(w.max_time(), Some(100));
    }
}
