//! The engines of one instance's assigned partitions (the daemon), one
//! [`Engine`] per source partition, and the pipeline watermark over them
//! (SPEC 2, docs/semantics.md section 2).
//!
//! Each engine judges lateness and fires the windows of its own keys by
//! its partition's watermark, so what a partition emits depends on its own
//! log only: a partition assigned at start, after a crash or in a
//! rebalance, from its checkpoint or from its start offset, gives the panes
//! and dead letters an uninterrupted run gives, whatever the other
//! partitions did. The pipeline watermark (metrics, freshness) is the
//! minimum over the assigned partitions. Idle partitions are raised to the
//! floor of [`idle_floor`] at every processing-time step and whenever
//! idleness or the assignment changes; with nothing assigned nothing moves.

use super::{Engine, EngineStats, PaneBuf, PartitionState, ProcessingTime, RestoreError};
use crate::event::{EventRef, Refusal};
use crate::plan::PlanRef;
use crate::time::watermark::{idle_floor, WATERMARK_MIN};
use crate::time::Micros;

/// See the module documentation.
pub struct PartitionedEngine {
    plan: PlanRef,
    mode: ProcessingTime,
    /// Indexed by partition number.
    engines: Vec<Option<Box<Engine>>>,
    now: Micros,
    wall: Micros,
    /// The pipeline watermark when the last partition was revoked.
    watermark: Micros,
    /// Counters of engines that were revoked (counters never move back).
    retired: EngineStats,
}

impl PartitionedEngine {
    pub fn new(plan: &PlanRef, mode: ProcessingTime) -> Self {
        PartitionedEngine {
            plan: plan.clone(),
            mode,
            engines: Vec::new(),
            now: WATERMARK_MIN,
            wall: i64::MAX,
            watermark: WATERMARK_MIN,
            retired: EngineStats::default(),
        }
    }

    /// Assigns partition `p`, from its checkpointed state or empty (its
    /// watermark then starts at -infinity). Panes due at once fire into
    /// `out`. A partition already assigned keeps its engine.
    pub fn assign(
        &mut self,
        p: u32,
        state: Option<&PartitionState>,
        out: &mut PaneBuf,
    ) -> Result<(), RestoreError> {
        if self.engine(p).is_some() {
            return Ok(());
        }
        let mut e = Engine::for_partition(&self.plan, self.mode, p);
        e.set_wall_clock(self.wall);
        e.set_processing_time(self.now, out);
        if let Some(s) = state {
            e.import(s, out)?;
        }
        let i = p as usize;
        if self.engines.len() <= i {
            self.engines.resize_with(i + 1, || None);
        }
        self.engines[i] = Some(Box::new(e));
        self.follow_floor(out);
        Ok(())
    }

    /// Drops partition `p` and its state (revoked in a rebalance; its next
    /// owner continues from the last checkpoint).
    pub fn revoke(&mut self, p: u32, out: &mut PaneBuf) {
        self.watermark = self.watermark();
        if let Some(e) = self.engines.get_mut(p as usize).and_then(Option::take) {
            self.retired.add(&e.stats);
            self.follow_floor(out);
        }
    }

    pub fn engine(&self, p: u32) -> Option<&Engine> {
        self.engines.get(p as usize)?.as_deref()
    }

    /// The assigned partitions, in order.
    pub fn partitions(&self) -> impl Iterator<Item = u32> + '_ {
        self.live().map(Engine::partition)
    }

    fn live(&self) -> impl Iterator<Item = &Engine> {
        self.engines.iter().filter_map(|e| e.as_deref())
    }

    fn live_mut(&mut self) -> impl Iterator<Item = &mut Engine> {
        self.engines.iter_mut().filter_map(|e| e.as_deref_mut())
    }

    /// Processes one event of partition `p` (assigned now if it was not).
    #[inline]
    pub fn process(&mut self, p: u32, ev: &EventRef<'_>, out: &mut PaneBuf) -> Result<(), Refusal> {
        let i = p as usize;
        if self.engines.get(i).is_none_or(Option::is_none) {
            self.assign(p, None, out)
                .expect("an empty state always loads");
        }
        self.engines[i]
            .as_deref_mut()
            .expect("assigned above")
            .process(ev, out)
    }

    /// The refusal that goes with the event just kept, if any
    /// ([`Engine::take_partial_refusal`]).
    pub fn take_partial_refusal(&mut self, p: u32) -> Option<Refusal> {
        self.engines
            .get_mut(p as usize)?
            .as_deref_mut()?
            .take_partial_refusal()
    }

    /// Tells whether partition `p`'s consumer is at the end of its log.
    pub fn set_end_of_log(&mut self, p: u32, at_end: bool, out: &mut PaneBuf) {
        let changed = self
            .engines
            .get_mut(p as usize)
            .and_then(|e| e.as_deref_mut())
            .is_some_and(|e| e.set_end_of_log(at_end));
        if changed {
            self.follow_floor(out);
        }
    }

    /// Sets the wall clock used for the `max_future` check.
    pub fn set_wall_clock(&mut self, wall: Micros) {
        self.wall = wall;
        self.live_mut().for_each(|e| e.set_wall_clock(wall));
    }

    /// Moves processing time forward: every engine's processing-time
    /// triggers and idleness, then the idle partitions' floor.
    pub fn set_processing_time(&mut self, now: Micros, out: &mut PaneBuf) {
        if now > self.now {
            self.now = now;
        }
        let now = self.now;
        for e in self.engines.iter_mut().filter_map(|e| e.as_deref_mut()) {
            e.set_processing_time(now, out);
        }
        self.follow_floor(out);
    }

    /// Raises every partition's watermark to at least `w` (tests).
    pub fn advance_watermark(&mut self, w: Micros, out: &mut PaneBuf) {
        for e in self.engines.iter_mut().filter_map(|e| e.as_deref_mut()) {
            e.advance_watermark(w, out);
        }
        self.follow_floor(out);
    }

    /// End of a bounded input: every window of every partition fires
    /// (partition by partition, each in `end` order).
    pub fn finish(&mut self, out: &mut PaneBuf) {
        for e in self.engines.iter_mut().filter_map(|e| e.as_deref_mut()) {
            e.finish(out);
        }
    }

    /// The state of partition `p`, for its checkpoint.
    pub fn export(&self, p: u32) -> Option<PartitionState> {
        self.engine(p).map(Engine::export)
    }

    /// The pipeline watermark: the minimum over the assigned partitions
    /// (idle ones follow the others, so they never hold it back). It keeps
    /// its value while nothing is assigned.
    pub fn watermark(&self) -> Micros {
        self.live()
            .map(Engine::watermark)
            .min()
            .unwrap_or(self.watermark)
    }

    /// Counters over every partition this instance held.
    pub fn stats(&self) -> EngineStats {
        let mut s = self.retired.clone();
        self.live().for_each(|e| s.add(&e.stats));
        s
    }

    /// Windows held now.
    pub fn open_windows(&self) -> usize {
        self.live().map(Engine::open_windows).sum()
    }

    /// Raises the idle partitions to the floor the others give.
    fn follow_floor(&mut self, out: &mut PaneBuf) {
        if self.live().any(Engine::is_idle) {
            let floor = idle_floor(
                self.live().map(|e| (e.watermark(), e.is_idle())),
                self.plan.pipeline.idle_advance,
                self.now,
                self.plan.pipeline.max_out_of_orderness,
            );
            if let Some(f) = floor {
                for e in self.live_mut().filter(|e| e.is_idle()) {
                    e.advance_watermark(f, out);
                }
            }
        }
    }
}
