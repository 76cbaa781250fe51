//! Per-partition watermarks and the pipeline watermark (SPEC 2).
//!
//! Each partition `p` keeps `W_p = max event time seen on p - max_out_of_orderness`.
//! The pipeline watermark is the minimum over partitions that are not idle,
//! and it never moves backwards. A partition is idle when it has delivered
//! nothing for `idle_timeout` of processing time and its source says it has
//! reached the end of its log; it rejoins the minimum when it delivers again.

use super::Micros;

/// Watermark value before any event: nothing is complete.
pub const WATERMARK_MIN: Micros = i64::MIN;
/// Watermark at the end of a bounded input: everything is complete.
pub const WATERMARK_MAX: Micros = i64::MAX;

#[derive(Debug, Clone)]
struct Partition {
    /// Greatest event time delivered on this partition.
    max_time: Option<Micros>,
    /// Processing time of the last delivery (or of assignment).
    last_activity: Micros,
    /// The source reports the consumer is at or past the high watermark.
    at_end_of_log: bool,
    idle: bool,
    assigned: bool,
}

/// Tracks `W_p` per partition and the pipeline watermark `W`.
#[derive(Debug, Clone)]
pub struct WatermarkTracker {
    out_of_orderness: Micros,
    idle_timeout: Option<Micros>,
    idle_advance: bool,
    parts: Vec<Partition>,
    current: Micros,
}

impl WatermarkTracker {
    pub fn new(out_of_orderness: Micros, idle_timeout: Option<Micros>, idle_advance: bool) -> Self {
        Self {
            out_of_orderness,
            idle_timeout,
            idle_advance,
            parts: Vec::new(),
            current: WATERMARK_MIN,
        }
    }

    /// The pipeline watermark `W`.
    pub fn current(&self) -> Micros {
        self.current
    }

    /// Makes partition `p` part of the minimum from processing time `now` on.
    pub fn assign(&mut self, p: usize, now: Micros) {
        if self.parts.len() <= p {
            self.parts.resize(
                p + 1,
                Partition {
                    max_time: None,
                    last_activity: now,
                    at_end_of_log: false,
                    idle: false,
                    assigned: false,
                },
            );
        }
        let part = &mut self.parts[p];
        part.assigned = true;
        part.idle = false;
        part.last_activity = now;
    }

    /// Takes partition `p` out of the minimum (revoked in a rebalance).
    pub fn revoke(&mut self, p: usize) {
        if let Some(part) = self.parts.get_mut(p) {
            part.assigned = false;
        }
    }

    /// Records an event of time `t` on partition `p` at processing time `now`.
    /// Returns true when `W` moved.
    #[inline]
    pub fn observe(&mut self, p: usize, t: Micros, now: Micros) -> bool {
        if p >= self.parts.len() || !self.parts[p].assigned {
            self.assign(p, now);
        }
        let part = &mut self.parts[p];
        part.last_activity = now;
        let rejoined = part.idle;
        part.idle = false;
        let raised = match part.max_time {
            Some(m) if m >= t => false,
            _ => {
                part.max_time = Some(t);
                true
            }
        };
        if raised || rejoined {
            self.recompute(now)
        } else {
            false
        }
    }

    /// Records whether `p` has reached the end of its log.
    pub fn set_end_of_log(&mut self, p: usize, at_end: bool, now: Micros) -> bool {
        if p >= self.parts.len() {
            self.assign(p, now);
        }
        self.parts[p].at_end_of_log = at_end;
        self.on_processing_time(now)
    }

    /// Re-evaluates idleness at processing time `now`. Returns true when `W` moved.
    pub fn on_processing_time(&mut self, now: Micros) -> bool {
        if self.idle_timeout.is_none() && !self.idle_advance {
            // Nothing depends on processing time.
            return false;
        }
        if let Some(timeout) = self.idle_timeout {
            for part in self.parts.iter_mut().filter(|p| p.assigned) {
                if !part.idle
                    && part.at_end_of_log
                    && now.saturating_sub(part.last_activity) >= timeout
                {
                    part.idle = true;
                }
            }
        }
        self.recompute(now)
    }

    /// Raises `W` to at least `w` (end of input, tests). Returns true when it moved.
    pub fn advance_to(&mut self, w: Micros) -> bool {
        if w > self.current {
            self.current = w;
            true
        } else {
            false
        }
    }

    /// Greatest event time seen on partition `p` (checkpoints).
    pub fn max_time(&self, p: usize) -> Option<Micros> {
        self.parts.get(p).and_then(|x| x.max_time)
    }

    /// Assigns partition `p` with the greatest event time a checkpoint
    /// recorded for it, and raises `W` towards `saved`, the pipeline
    /// watermark of that checkpoint, but never above the minimum of the
    /// assigned partitions' `W_p` (a partition moved here from another
    /// instance must not make this instance's own partitions late).
    /// Returns true when `W` moved.
    pub fn restore(
        &mut self,
        p: usize,
        max_time: Option<Micros>,
        saved: Micros,
        now: Micros,
    ) -> bool {
        self.assign(p, now);
        let part = &mut self.parts[p];
        part.max_time = part.max_time.max(max_time);
        let floor = self
            .parts
            .iter()
            .filter(|x| x.assigned)
            .map(|x| match x.max_time {
                Some(m) => m.saturating_sub(self.out_of_orderness),
                None => WATERMARK_MIN,
            })
            .min()
            .unwrap_or(WATERMARK_MIN);
        self.advance_to(saved.min(floor))
    }

    /// Whether partition `p` is idle now.
    pub fn is_idle(&self, p: usize) -> bool {
        self.parts.get(p).is_some_and(|x| x.idle)
    }

    fn recompute(&mut self, now: Micros) -> bool {
        let mut min: Option<Micros> = None;
        let mut any_active = false;
        for part in self.parts.iter().filter(|p| p.assigned && !p.idle) {
            any_active = true;
            let wp = match part.max_time {
                Some(m) => m.saturating_sub(self.out_of_orderness),
                None => WATERMARK_MIN,
            };
            min = Some(min.map_or(wp, |m: Micros| m.min(wp)));
        }
        let candidate = if any_active {
            min.unwrap_or(WATERMARK_MIN)
        } else if self.idle_advance && !self.parts.is_empty() {
            now.saturating_sub(self.out_of_orderness)
        } else {
            WATERMARK_MIN
        };
        let before = self.current;
        self.current = self.current.max(candidate);
        debug_assert!(self.current >= before, "the watermark never moves back");
        self.current > before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimum_over_partitions_and_never_back() {
        let mut w = WatermarkTracker::new(10, None, false);
        w.assign(0, 0);
        w.assign(1, 0);
        assert!(!w.observe(0, 100, 0));
        assert_eq!(w.current(), WATERMARK_MIN);
        assert!(w.observe(1, 50, 0));
        assert_eq!(w.current(), 40);
        w.observe(1, 200, 0);
        assert_eq!(w.current(), 90);
        // An older event does not move anything back.
        w.observe(0, 10, 0);
        assert_eq!(w.current(), 90);
    }

    #[test]
    fn idle_needs_timeout_and_end_of_log() {
        let mut w = WatermarkTracker::new(0, Some(1000), false);
        w.assign(0, 0);
        w.assign(1, 0);
        w.observe(0, 500, 0);
        // Partition 1 never delivers: W waits for it.
        assert!(!w.on_processing_time(5000));
        assert_eq!(w.current(), WATERMARK_MIN);
        // At the end of its log, and silent long enough: it is idle.
        assert!(w.set_end_of_log(1, true, 5000));
        assert_eq!(w.current(), 500);
        assert!(w.is_idle(1));
        // It rejoins when it delivers again, and W does not move back.
        w.observe(1, 100, 6000);
        assert!(!w.is_idle(1));
        assert_eq!(w.current(), 500);
    }

    #[test]
    fn all_idle_advances_only_when_asked() {
        let mut w = WatermarkTracker::new(10, Some(100), true);
        w.assign(0, 0);
        w.observe(0, 50, 0);
        w.set_end_of_log(0, true, 0);
        assert!(w.on_processing_time(1000));
        assert_eq!(w.current(), 990);
        let mut w = WatermarkTracker::new(10, Some(100), false);
        w.assign(0, 0);
        w.observe(0, 50, 0);
        w.set_end_of_log(0, true, 0);
        w.on_processing_time(1000);
        assert_eq!(w.current(), 40);
    }
}
