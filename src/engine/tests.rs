//! The operator harness: push events, move the watermark and the clock,
//! and check the panes, one rule of SPEC 1-3 per test.

use super::*;
use crate::config::Pipeline;
use crate::event::Decoder;

pub(crate) struct Harness {
    pub engine: PartitionedEngine,
    pub dec: Decoder,
    pub out: PaneBuf,
    pub dead: Vec<(Reason, String)>,
    /// The last dead letter of an event that was also kept.
    pub partial: Option<Refusal>,
}

/// A pipeline over `{"k": .., "t": <millis>, "v": ..}` with the given window
/// and extra settings.
pub(crate) fn pipeline(window: &str, extra: &str, features: &str) -> Pipeline {
    let yaml = format!(
        "version: 1\nname: t\nsource:\n  key: [k]\n  event_time: {{ field: t, format: epoch_millis }}\nwindow:\n{window}\n{extra}\nfeatures:\n{features}\n"
    );
    Pipeline::from_yaml(&yaml, "test.yaml").unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

pub(crate) const BASIC: &str = "  - { name: n, agg: count }\n  - { name: s, agg: sum, field: v }";

impl Harness {
    pub fn new(p: &Pipeline, mode: ProcessingTime) -> Harness {
        let plan = crate::plan::Plan::new(p);
        let dec = Decoder::new(plan.decode.clone());
        let mut engine = PartitionedEngine::new(&plan, mode);
        let mut out = PaneBuf::new(p.features.len());
        engine.assign(0, None, &mut out).expect("empty state");
        Harness {
            engine,
            dec,
            out,
            dead: Vec::new(),
            partial: None,
        }
    }

    pub fn replay(window: &str, extra: &str) -> Harness {
        Harness::new(&pipeline(window, extra, BASIC), ProcessingTime::StreamTime)
    }

    pub fn push_on(&mut self, partition: usize, json: &str) -> Result<(), Reason> {
        let r = match self.dec.decode_json(json.as_bytes()) {
            Ok(ev) => self.engine.process(partition as u32, &ev, &mut self.out),
            Err(e) => Err(e),
        };
        if r.is_ok() {
            if let Some(p) = self.engine.take_partial_refusal(partition as u32) {
                self.partial = Some(p);
            }
        }
        r.map_err(|e| {
            self.dead.push((e.reason, json.to_string()));
            e.reason
        })
    }

    pub fn push(&mut self, json: &str) -> Result<(), Reason> {
        self.push_on(0, json)
    }

    /// Pushes `{"k": key, "t": t, "v": v}`.
    pub fn ev(&mut self, key: &str, t: i64, v: f64) -> Result<(), Reason> {
        self.push(&format!(r#"{{"k":"{key}","t":{t},"v":{v}}}"#))
    }

    pub fn advance_watermark(&mut self, ms: i64) {
        self.engine.advance_watermark(ms * 1000, &mut self.out);
    }

    pub fn set_time(&mut self, ms: i64) {
        self.engine.set_processing_time(ms * 1000, &mut self.out);
    }

    pub fn finish(&mut self) {
        self.engine.finish(&mut self.out);
    }

    /// Panes emitted since the last call, as compact tuples.
    pub fn take(&mut self) -> Vec<P> {
        self.out.take_panes().iter().map(P::of).collect()
    }
}

/// A compact pane for assertions: key, [start, end) in ms, pane index,
/// timing, final, retraction, count, sum.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct P {
    pub key: String,
    pub start: i64,
    pub end: i64,
    pub idx: u32,
    pub timing: Timing,
    pub fin: bool,
    pub retr: bool,
    pub n: i64,
    pub s: Option<f64>,
}

impl P {
    fn of(p: &Pane) -> P {
        P {
            key: p.key.to_string(),
            start: p.window_start / 1000,
            end: p.window_end / 1000,
            idx: p.pane_index,
            timing: p.timing,
            fin: p.is_final,
            retr: p.retraction,
            n: match p.values[0] {
                Value::Int(i) => i,
                _ => -1,
            },
            s: p.values.get(1).and_then(Value::as_f64),
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn p(
    key: &str,
    start: i64,
    end: i64,
    idx: u32,
    timing: Timing,
    fin: bool,
    n: i64,
    s: Option<f64>,
) -> P {
    P {
        key: key.into(),
        start,
        end,
        idx,
        timing,
        fin,
        retr: false,
        n,
        s,
    }
}

use Timing::*;

const TUMBLE_10: &str = "  tumbling: { size: 10ms }";

#[test]
fn tumbling_half_open_and_on_time() {
    let mut h = Harness::replay(TUMBLE_10, "");
    h.ev("a", 0, 1.0).unwrap();
    h.ev("a", 9, 2.0).unwrap();
    assert_eq!(h.take(), vec![]);
    // t = 10 belongs to [10, 20), and moves W to 10: [0, 10) completes.
    h.ev("a", 10, 4.0).unwrap();
    assert_eq!(h.take(), vec![p("a", 0, 10, 0, OnTime, true, 2, Some(3.0))]);
    h.finish();
    assert_eq!(
        h.take(),
        vec![p("a", 10, 20, 0, OnTime, true, 1, Some(4.0))]
    );
}

#[test]
fn times_before_1970_floor() {
    let mut h = Harness::replay(TUMBLE_10, "");
    h.ev("a", -11, 1.0).unwrap();
    h.ev("a", -10, 1.0).unwrap();
    h.ev("a", -1, 1.0).unwrap();
    h.finish();
    assert_eq!(
        h.take(),
        vec![
            p("a", -20, -10, 0, OnTime, true, 1, Some(1.0)),
            p("a", -10, 0, 0, OnTime, true, 2, Some(2.0))
        ]
    );
}

#[test]
fn out_of_orderness_delays_completion_and_panes_come_in_end_order() {
    let mut h = Harness::replay(TUMBLE_10, "watermark: { max_out_of_orderness: 5ms }");
    h.ev("a", 3, 1.0).unwrap();
    h.ev("b", 12, 1.0).unwrap(); // W = 7
    assert_eq!(h.take(), vec![]);
    h.ev("a", 8, 1.0).unwrap(); // 8 >= W: not late, same window
    h.ev("b", 26, 1.0).unwrap(); // W = 21: [0,10) and [10,20) complete
    assert_eq!(
        h.take(),
        vec![
            p("a", 0, 10, 0, OnTime, true, 2, Some(2.0)),
            p("b", 10, 20, 0, OnTime, true, 1, Some(1.0))
        ]
    );
    assert_eq!(h.engine.stats().late_kept, 0);
}

#[test]
fn late_within_lateness_fires_late_panes_then_a_closing_pane() {
    let mut h = Harness::replay(
        TUMBLE_10,
        "  allowed_lateness: 20ms\ntrigger: { late: every_event }",
    );
    h.ev("a", 1, 1.0).unwrap();
    h.ev("a", 15, 1.0).unwrap(); // W=15: [0,10) on time, not final (kept until W >= 30)
    assert_eq!(
        h.take(),
        vec![p("a", 0, 10, 0, OnTime, false, 1, Some(1.0))]
    );
    h.ev("a", 2, 5.0).unwrap(); // late, kept: LATE pane, accumulating
    assert_eq!(h.take(), vec![p("a", 0, 10, 1, Late, false, 2, Some(6.0))]);
    assert_eq!(h.engine.stats().late_kept, 1);
    h.ev("a", 31, 1.0).unwrap(); // W=31 >= 30: [0,10) expires; [10,20) completes (and its expiry is 40)
    assert_eq!(
        h.take(),
        vec![
            p("a", 10, 20, 0, OnTime, false, 1, Some(1.0)),
            p("a", 0, 10, 2, Late, true, 2, Some(6.0))
        ]
    );
    // Now [0,10) is gone: a late event for it is dropped, counted, dead-lettered.
    assert_eq!(h.ev("a", 5, 1.0), Err(Reason::TooLate));
    assert_eq!(h.engine.stats().late_dropped, 1);
    assert_eq!(h.dead.len(), 1);
    h.finish();
    assert_eq!(
        h.take(),
        vec![
            p("a", 10, 20, 1, Late, true, 1, Some(1.0)),
            p("a", 30, 40, 0, OnTime, true, 1, Some(1.0))
        ]
    );
}

#[test]
fn late_trigger_none_still_closes_with_late_data() {
    let mut h = Harness::replay(TUMBLE_10, "  allowed_lateness: 20ms");
    h.ev("a", 1, 1.0).unwrap();
    h.ev("a", 15, 1.0).unwrap();
    assert_eq!(
        h.take(),
        vec![p("a", 0, 10, 0, OnTime, false, 1, Some(1.0))]
    );
    h.ev("a", 2, 5.0).unwrap();
    assert_eq!(h.take(), vec![]);
    h.advance_watermark(30);
    assert_eq!(
        h.take(),
        vec![
            p("a", 10, 20, 0, OnTime, false, 1, Some(1.0)),
            p("a", 0, 10, 1, Late, true, 2, Some(6.0))
        ]
    );
}

#[test]
fn zero_lateness_drops_every_late_event() {
    let mut h = Harness::replay(TUMBLE_10, "");
    h.ev("a", 12, 1.0).unwrap(); // W = 12
    assert_eq!(h.ev("a", 9, 1.0), Err(Reason::TooLate)); // [0,10) gone at W >= 10
                                                         // Late (t < W) but its window [10,20) is still open: kept, no late pane.
    h.ev("a", 11, 1.0).unwrap();
    assert_eq!(h.engine.stats().late_kept, 1);
    h.finish();
    assert_eq!(
        h.take(),
        vec![p("a", 10, 20, 0, OnTime, true, 2, Some(2.0))]
    );
}

#[test]
fn late_event_opening_a_window_gets_a_late_pane_not_an_on_time_one() {
    let mut h = Harness::replay(
        TUMBLE_10,
        "  allowed_lateness: 30ms\ntrigger: { late: every_event }",
    );
    h.ev("a", 25, 1.0).unwrap(); // W = 25
    h.ev("b", 3, 7.0).unwrap(); // [0,10) of b never existed; kept until W >= 40
    assert_eq!(h.take(), vec![p("b", 0, 10, 0, Late, false, 1, Some(7.0))]);
    h.finish();
    assert_eq!(
        h.take(),
        vec![
            p("b", 0, 10, 1, Late, true, 1, Some(7.0)),
            p("a", 20, 30, 0, OnTime, true, 1, Some(1.0))
        ]
    );
}

#[test]
fn early_panes_every_period_only_with_new_data() {
    let mut h = Harness::new(
        &pipeline(
            "  tumbling: { size: 100ms }",
            "trigger: { early: { every: 10ms } }",
            BASIC,
        ),
        ProcessingTime::External,
    );
    h.set_time(1);
    h.ev("a", 1, 1.0).unwrap();
    h.ev("a", 2, 2.0).unwrap();
    h.set_time(9);
    assert_eq!(h.take(), vec![]);
    h.set_time(10); // tick at 10
    let got = h.out.clone().take_panes();
    assert_eq!(
        h.take(),
        vec![p("a", 0, 100, 0, Early, false, 2, Some(3.0))]
    );
    assert_eq!(got[0].emitted_at, 10_000);
    h.set_time(35); // no new data: nothing
    assert_eq!(h.take(), vec![]);
    h.ev("a", 3, 4.0).unwrap();
    h.set_time(45); // the tick at 40 fires
    let got = h.out.clone().take_panes();
    assert_eq!(
        h.take(),
        vec![p("a", 0, 100, 1, Early, false, 3, Some(7.0))]
    );
    assert_eq!(got[0].emitted_at, 40_000);
    h.advance_watermark(100);
    assert_eq!(
        h.take(),
        vec![p("a", 0, 100, 2, OnTime, true, 3, Some(7.0))]
    );
}

#[test]
fn replay_processing_time_is_stream_time() {
    let mut h = Harness::replay(
        "  tumbling: { size: 100ms }",
        "trigger: { early: { every: 10ms } }",
    );
    h.ev("a", 1, 1.0).unwrap();
    h.ev("a", 12, 1.0).unwrap(); // stream time 12: the tick at 10 fires before this event
    let got = h.out.clone().take_panes();
    assert_eq!(
        h.take(),
        vec![p("a", 0, 100, 0, Early, false, 1, Some(1.0))]
    );
    assert_eq!((got[0].emitted_at, got[0].watermark), (10_000, Some(1_000)));
}

#[test]
fn discarding_panes_hold_only_new_events() {
    let mut h = Harness::replay(
        TUMBLE_10,
        "  allowed_lateness: 20ms\ntrigger: { late: every_event }\naccumulation: discarding",
    );
    h.ev("a", 1, 1.0).unwrap();
    h.ev("a", 2, 2.0).unwrap();
    h.ev("a", 15, 1.0).unwrap();
    h.ev("a", 3, 4.0).unwrap();
    h.ev("a", 4, 8.0).unwrap();
    h.advance_watermark(30);
    let got = h.take();
    assert_eq!(
        got,
        vec![
            p("a", 0, 10, 0, OnTime, false, 2, Some(3.0)),
            p("a", 0, 10, 1, Late, false, 1, Some(4.0)),
            p("a", 0, 10, 2, Late, false, 1, Some(8.0)),
            p("a", 10, 20, 0, OnTime, false, 1, Some(1.0)),
            // The closing pane holds the events since the previous pane: none.
            p("a", 0, 10, 3, Late, true, 0, None),
        ]
    );
}

#[test]
fn retracting_mode_retracts_the_previous_pane() {
    let mut h = Harness::replay(TUMBLE_10, "  allowed_lateness: 20ms\ntrigger: { late: every_event }\naccumulation: accumulating_and_retracting");
    h.ev("a", 1, 1.0).unwrap();
    h.ev("a", 15, 1.0).unwrap();
    h.ev("a", 2, 2.0).unwrap();
    let got = h.take();
    let mut retr = p("a", 0, 10, 0, OnTime, false, 1, Some(1.0));
    retr.retr = true;
    assert_eq!(
        got,
        vec![
            p("a", 0, 10, 0, OnTime, false, 1, Some(1.0)),
            retr,
            p("a", 0, 10, 1, Late, false, 2, Some(3.0))
        ]
    );
}

#[test]
fn completing_and_expiring_at_once_gives_one_final_on_time_pane() {
    let mut h = Harness::replay(
        TUMBLE_10,
        "  allowed_lateness: 1h\ntrigger: { late: every_event }",
    );
    h.ev("a", 1, 1.0).unwrap();
    h.finish();
    assert_eq!(h.take(), vec![p("a", 0, 10, 0, OnTime, true, 1, Some(1.0))]);
}

const SESSION_10: &str = "  session: { gap: 10ms }";

#[test]
fn sessions_extend_and_close_after_the_gap() {
    let mut h = Harness::replay(SESSION_10, "");
    h.ev("a", 0, 1.0).unwrap();
    h.ev("a", 5, 1.0).unwrap(); // [0, 15)
    h.ev("a", 15, 1.0).unwrap(); // touches: [0, 25); W = 15 does not complete it
    assert_eq!(h.take(), vec![]);
    h.ev("a", 40, 1.0).unwrap(); // W = 40: [0,25) completes; new [40,50)
    assert_eq!(h.take(), vec![p("a", 0, 25, 0, OnTime, true, 3, Some(3.0))]);
    h.finish();
    assert_eq!(
        h.take(),
        vec![p("a", 40, 50, 0, OnTime, true, 1, Some(1.0))]
    );
}

#[test]
fn a_bridging_event_merges_three_sessions_and_swallowed_ones_are_retracted() {
    let mut h = Harness::new(
        &pipeline(SESSION_10, "trigger: { early: { every: 1ms } }\naccumulation: accumulating_and_retracting\nwatermark: { max_out_of_orderness: 100ms }", BASIC),
        ProcessingTime::External,
    );
    h.set_time(1);
    h.ev("a", 0, 1.0).unwrap(); // [0,10)
    h.ev("a", 25, 2.0).unwrap(); // [25,35)
    h.set_time(2); // early panes for both
    let got = h.take();
    assert_eq!(
        got,
        vec![
            p("a", 0, 10, 0, Early, false, 1, Some(1.0)),
            p("a", 25, 35, 0, Early, false, 1, Some(2.0))
        ]
    );
    h.ev("a", 12, 4.0).unwrap(); // [12,22) meets neither: [0,10) ends at 10, [25,35) starts at 25
    h.ev("a", 15, 8.0).unwrap(); // [12,25) now touches [25,35): merges into [12,35)
    let got = h.take();
    let mut r = p("a", 25, 35, 0, Early, false, 1, Some(2.0));
    r.retr = true;
    assert_eq!(got, vec![r]);
    h.ev("a", 10, 16.0).unwrap(); // [10,20) touches [0,10) and [12,35): all three merge
    h.set_time(3);
    let got = h.take();
    let mut r0 = p("a", 0, 10, 0, Early, false, 1, Some(1.0));
    r0.retr = true;
    assert_eq!(
        got,
        vec![r0.clone(), p("a", 0, 35, 1, Early, false, 5, Some(31.0))]
    );
    h.finish();
    let mut r1 = p("a", 0, 35, 1, Early, false, 5, Some(31.0));
    r1.retr = true;
    assert_eq!(
        h.take(),
        vec![r1, p("a", 0, 35, 2, OnTime, true, 5, Some(31.0))]
    );
    assert_eq!(h.engine.stats().session_merges, 2);
}

#[test]
fn late_session_event_past_lateness_is_dropped() {
    let mut h = Harness::replay(SESSION_10, "  allowed_lateness: 5ms");
    h.ev("a", 0, 1.0).unwrap();
    h.ev("b", 30, 1.0).unwrap(); // W = 30: a's [0,10) expired (10 + 5 <= 30)
    assert_eq!(h.ev("a", 14, 1.0), Err(Reason::TooLate)); // [14,24): 24 + 5 <= 30
    assert!(h.ev("a", 16, 1.0).is_ok()); // [16,26): 26 + 5 > 30, kept
}

#[test]
fn each_partition_fires_by_its_own_watermark_and_an_idle_one_follows_the_others() {
    let pl = pipeline(TUMBLE_10, "watermark: { idle_timeout: 100ms }", BASIC);
    let mut h = Harness::new(&pl, ProcessingTime::External);
    h.engine.assign(1, None, &mut h.out).unwrap();
    h.set_time(1);
    h.push_on(1, r#"{"k":"b","t":3,"v":1}"#).unwrap();
    h.push_on(0, r#"{"k":"a","t":5,"v":1}"#).unwrap();
    h.push_on(0, r#"{"k":"a","t":50,"v":1}"#).unwrap();
    // Partition 1 does not hold partition 0's keys back.
    assert_eq!(h.take(), vec![p("a", 0, 10, 0, OnTime, true, 1, Some(1.0))]);
    assert_eq!(
        h.engine.watermark(),
        3_000,
        "the pipeline watermark is the minimum"
    );
    h.set_time(500);
    assert_eq!(
        h.take(),
        vec![],
        "not idle before reaching the end of its log"
    );
    // Idle: partition 1 follows partition 0, and its window fires.
    h.engine.set_end_of_log(1, true, &mut h.out);
    assert_eq!(h.take(), vec![p("b", 0, 10, 0, OnTime, true, 1, Some(1.0))]);
    assert_eq!(h.engine.watermark(), 50_000);
    // It delivers again and rejoins; its watermark does not move back.
    h.push_on(1, r#"{"k":"b","t":55,"v":1}"#).unwrap();
    assert!(!h.engine.engine(1).unwrap().is_idle());
    assert_eq!(h.engine.engine(1).unwrap().watermark(), 55_000);
}

#[test]
fn no_assignment_is_not_idleness() {
    let pl = pipeline(
        TUMBLE_10,
        "watermark: { idle_timeout: 100ms, idle_advance: true }",
        BASIC,
    );
    let mut h = Harness::new(&pl, ProcessingTime::External);
    h.set_time(1);
    h.push_on(0, r#"{"k":"a","t":5,"v":1}"#).unwrap();
    // Every partition is revoked (an eager rebalance) while the wall clock runs.
    h.engine.revoke(0, &mut h.out);
    h.set_time(1_000_000);
    assert_eq!(h.engine.watermark(), 5_000, "nothing assigned: W stays");
    // Assigned back without a checkpoint, the partition reads its history
    // from the start, against its own watermark: nothing is late.
    h.engine.assign(0, None, &mut h.out).unwrap();
    assert_eq!(h.engine.watermark(), WATERMARK_MIN);
    h.push_on(0, r#"{"k":"a","t":5,"v":1}"#).unwrap();
    h.push_on(0, r#"{"k":"a","t":12,"v":2}"#).unwrap();
    assert_eq!(h.take(), vec![p("a", 0, 10, 0, OnTime, true, 1, Some(1.0))]);
    assert!(h.dead.is_empty());
    // Every assigned partition idle, with idle_advance: W follows the clock.
    h.engine.set_end_of_log(0, true, &mut h.out);
    h.set_time(2_000_000);
    assert_eq!(h.engine.watermark(), 2_000_000_000);
    assert_eq!(
        h.take(),
        vec![p("a", 10, 20, 0, OnTime, true, 1, Some(2.0))]
    );
}

#[test]
fn future_bad_and_derived() {
    let pl = pipeline(
        TUMBLE_10,
        "",
        "  - { name: n, agg: count }\n  - { name: s, agg: sum, field: v }\n  - { name: c, agg: count, where: 'kind == \"click\"' }\n  - { name: ctr, expr: c / n }\n  - { name: r, expr: s / (n - n) }\n  - { name: last_page, agg: last, field: page }\n  - { name: first_page, agg: first, field: page }",
    );
    let mut h = Harness::new(&pl, ProcessingTime::StreamTime);
    h.engine.set_wall_clock(1_000_000);
    assert_eq!(
        h.push(r#"{"k":"a","t":3602000,"v":1}"#),
        Err(Reason::FutureTimestamp)
    );
    assert_eq!(h.push(r#"{"k":"a","t":1,"v":"12"}"#), Err(Reason::BadValue));
    h.push(r#"{"k":"a","t":3,"v":1,"kind":"click","page":"/b"}"#)
        .unwrap();
    h.push(r#"{"k":"a","t":1,"v":null,"kind":"view","page":"/a"}"#)
        .unwrap();
    h.push(r#"{"k":"a","t":5,"kind":"view","page":"/c"}"#)
        .unwrap();
    h.finish();
    let panes = h.out.take_panes();
    let pane = &panes[0];
    assert_eq!(pane.values[0], Value::Int(3));
    assert_eq!(pane.values[1], Value::Float(1.0));
    assert_eq!(pane.values[2], Value::Int(1));
    assert_eq!(pane.values[3], Value::Float(1.0 / 3.0));
    assert_eq!(pane.values[4], Value::Null);
    assert_eq!(pane.values[5], Value::Str("/c".into()));
    assert_eq!(pane.values[6], Value::Str("/a".into()));
}

// ---------------------------------------------------------------------------
// Property tests against brute-force references.

use proptest::prelude::*;
use std::collections::BTreeMap;

/// Events as (key, time ms, value) in arrival order: sorted by a noisy
/// arrival time so that each event trails by at most `max_delay`.
fn stream(max_delay: i64) -> impl Strategy<Value = Vec<(u8, i64, i32)>> {
    prop::collection::vec((0u8..3, 0i64..2000, -50i32..50, 0..=max_delay), 1..120).prop_map(
        |mut v| {
            // Arrival = time + delay; sort by arrival (ties by generation order).
            v.sort_by_key(|&(_, t, _, d)| t + d);
            v.into_iter().map(|(k, t, x, _)| (k, t, x)).collect()
        },
    )
}

fn final_rows(out: &[Pane]) -> BTreeMap<(String, i64, i64), (i64, f64)> {
    let mut m = BTreeMap::new();
    for p in out.iter().filter(|p| p.is_final && !p.retraction) {
        let n = match p.values[0] {
            Value::Int(i) => i,
            _ => -1,
        };
        let s = p.values[1].as_f64().unwrap_or(0.0);
        let prev = m.insert(
            (
                p.key.to_string(),
                p.window_start / 1000,
                p.window_end / 1000,
            ),
            (n, s),
        );
        assert!(prev.is_none(), "two final panes for one window: {p:?}");
    }
    m
}

fn check_pane_sequences(out: &[Pane]) {
    // Per window: pane indexes 0, 1, 2... with the final pane last and no pane after it.
    let mut next: BTreeMap<(String, i64), (u32, bool)> = BTreeMap::new();
    for p in out.iter().filter(|p| !p.retraction) {
        let e = next
            .entry((p.key.to_string(), p.window_start))
            .or_insert((0, false));
        // Sessions may grow: the window is identified by key and start here,
        // which is stable for tumbling windows and for sessions in order.
        assert!(!e.1, "pane after the final pane: {p:?}");
        assert_eq!(p.pane_index, e.0, "pane index out of sequence: {p:?}");
        *e = (e.0 + 1, p.is_final);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Lateness above the greatest delay: the final panes equal a batch group-by.
    #[test]
    fn tumbling_finals_equal_group_by(events in stream(300), size in 5i64..200, ooo in 0i64..100,
                                      trig in 0usize..4, retract in any::<bool>()) {
        let trigger = ["", "trigger: { early: { every: 7ms } }", "trigger: { late: every_event }", "trigger: { early: { every: 3ms }, late: { every: 5ms } }"][trig];
        let acc = if retract { "accumulation: accumulating_and_retracting" } else { "" };
        let pl = pipeline(&format!("  tumbling: {{ size: {size}ms }}\n  allowed_lateness: 400ms"),
            &format!("watermark: {{ max_out_of_orderness: {ooo}ms }}\n{trigger}\n{acc}"), BASIC);
        let mut h = Harness::new(&pl, ProcessingTime::StreamTime);
        for &(k, t, x) in &events {
            let key = format!("k{k}");
            prop_assert!(h.ev(&key, t, x as f64).is_ok());
        }
        h.finish();
        let mut want: BTreeMap<(String, i64, i64), (i64, f64)> = BTreeMap::new();
        for &(k, t, x) in &events {
            let start = t - t.rem_euclid(size);
            let e = want.entry((format!("k{k}"), start, start + size)).or_insert((0, 0.0));
            e.0 += 1;
            e.1 += x as f64;
        }
        let all = h.out.take_panes();
        prop_assert_eq!(final_rows(&all), want);
        check_pane_sequences(&all);
        prop_assert!(h.dead.is_empty());
    }

    /// Zero lateness: exactly the events whose window was already dropped are
    /// missing from the finals, and each of them is a `too_late` dead letter.
    #[test]
    fn zero_lateness_drops_exactly_the_late(events in stream(300), size in 5i64..200, ooo in 0i64..60) {
        let pl = pipeline(&format!("  tumbling: {{ size: {size}ms }}"), &format!("watermark: {{ max_out_of_orderness: {ooo}ms }}"), BASIC);
        let mut h = Harness::new(&pl, ProcessingTime::StreamTime);
        let mut max_seen: Option<i64> = None;
        let mut want: BTreeMap<(String, i64, i64), (i64, f64)> = BTreeMap::new();
        let mut dropped = Vec::new();
        for &(k, t, x) in &events {
            let start = t - t.rem_euclid(size);
            let w = max_seen.map(|m| m - ooo);
            let json = format!(r#"{{"k":"k{k}","t":{t},"v":{x}}}"#);
            if w.is_some_and(|w| w >= start + size) {
                dropped.push(json.clone());
            } else {
                let e = want.entry((format!("k{k}"), start, start + size)).or_insert((0, 0.0));
                e.0 += 1;
                e.1 += x as f64;
            }
            let _ = h.push(&json);
            max_seen = Some(max_seen.map_or(t, |m| m.max(t)));
        }
        h.finish();
        let all = h.out.take_panes();
        prop_assert_eq!(final_rows(&all), want);
        let dead: Vec<String> = h.dead.iter().map(|(r, j)| { assert_eq!(*r, Reason::TooLate); j.clone() }).collect();
        prop_assert_eq!(dead, dropped);
        prop_assert_eq!(h.engine.stats().late_dropped as usize, h.dead.len());
    }

    /// Sessions: the final panes equal sessions computed from all events at once.
    #[test]
    fn session_finals_equal_batch_sessions(events in stream(200), gap in 1i64..80, ooo in 0i64..50, retract in any::<bool>()) {
        let acc = if retract { "accumulation: accumulating_and_retracting\ntrigger: { early: { every: 5ms }, late: every_event }" } else { "" };
        let pl = pipeline(&format!("  session: {{ gap: {gap}ms }}\n  allowed_lateness: 300ms"),
            &format!("watermark: {{ max_out_of_orderness: {ooo}ms }}\n{acc}"), BASIC);
        let mut h = Harness::new(&pl, ProcessingTime::StreamTime);
        for &(k, t, x) in &events {
            let key = format!("k{k}");
            prop_assert!(h.ev(&key, t, x as f64).is_ok());
        }
        h.finish();
        let mut want: BTreeMap<(String, i64, i64), (i64, f64)> = BTreeMap::new();
        for key in 0u8..3 {
            let mut evs: Vec<(i64, i32)> = events.iter().filter(|e| e.0 == key).map(|e| (e.1, e.2)).collect();
            evs.sort();
            let mut cur: Option<(i64, i64, i64, f64)> = None;
            for (t, x) in evs {
                cur = match cur {
                    Some((s, e, n, sum)) if t <= e => Some((s, e.max(t + gap), n + 1, sum + x as f64)),
                    Some((s, e, n, sum)) => {
                        want.insert((format!("k{key}"), s, e), (n, sum));
                        Some((t, t + gap, 1, x as f64))
                    }
                    None => Some((t, t + gap, 1, x as f64)),
                };
            }
            if let Some((s, e, n, sum)) = cur {
                want.insert((format!("k{key}"), s, e), (n, sum));
            }
        }
        let all = h.out.take_panes();
        prop_assert_eq!(final_rows(&all), want);
        if retract {
            // Retractions undo: summing +rows and -retractions per key gives the finals.
            let mut net: BTreeMap<String, (i64, f64)> = BTreeMap::new();
            for p in &all {
                let sign = if p.retraction { -1 } else { 1 };
                let e = net.entry(p.key.to_string()).or_insert((0, 0.0));
                if let Value::Int(n) = p.values[0] { e.0 += sign * n; }
                e.1 += sign as f64 * p.values[1].as_f64().unwrap_or(0.0);
            }
            // Each window's last non-retracted pane is its final one; every
            // earlier pane was retracted, so the net per key is the final sum.
            for (k, (n, s)) in net {
                let (wn, ws) = final_rows(&all).iter().filter(|(kk, _)| kk.0 == k).fold((0, 0.0), |a, (_, v)| (a.0 + v.0, a.1 + v.1));
                prop_assert_eq!(n, wn);
                prop_assert!((s - ws).abs() < 1e-6);
            }
        }
    }
}

fn sorted_rows(panes: &[Pane]) -> Vec<String> {
    let mut v: Vec<String> = panes
        .iter()
        .map(|p| {
            format!(
                "{} {} {} {} {:?} {} {} {} {:?}",
                p.key,
                p.window_start,
                p.window_end,
                p.pane_index,
                p.timing,
                p.is_final,
                p.retraction,
                p.partition,
                p.values
            )
        })
        .collect();
    v.sort();
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(150))]

    /// A checkpoint taken after any event, written as JSON and loaded into a
    /// fresh engine, continues exactly as the uninterrupted engine does.
    #[test]
    fn checkpoint_restore_continues_identically(events in stream(200), cut_at in 0usize..120, kind in 0usize..3,
                                                trig in 0usize..3, acc in 0usize..3) {
        let cut = cut_at.min(events.len());
        let window = ["  session: { gap: 30ms }\n  allowed_lateness: 100ms", "  tumbling: { size: 50ms }\n  allowed_lateness: 100ms",
            "  hopping: { size: 60ms, slide: 20ms }\n  allowed_lateness: 100ms"][kind];
        let trigger = ["", "trigger: { early: { every: 7ms }, late: every_event }", "trigger: { early: { every: 3ms }, late: { every: 5ms } }"][trig];
        let acc = ["", "accumulation: accumulating_and_retracting", "accumulation: discarding"][acc];
        let pl = pipeline(window, &format!("watermark: {{ max_out_of_orderness: 20ms }}\n{trigger}\n{acc}"),
            "  - { name: n, agg: count }\n  - { name: s, agg: sum, field: v }\n  - { name: f, agg: first, field: v }\n  - { name: l, agg: last, field: v }\n  - { name: u, agg: count_distinct, field: v, exact_up_to: 3 }\n  - { name: q, agg: quantile, field: v, q: 0.9 }\n  - { name: c, agg: collect_set, field: v, max: 2 }");
        let json = |&(k, t, x): &(u8, i64, i32)| format!(r#"{{"k":"k{k}","t":{t},"v":{x}}}"#);
        let mut a = Harness::new(&pl, ProcessingTime::StreamTime);
        for e in &events[..cut] { let _ = a.push_on((e.0 % 2) as usize, &json(e)); }
        let mut parts: Vec<u32> = events[..cut].iter().map(|e| (e.0 % 2) as u32).collect();
        parts.sort();
        parts.dedup();
        let saved: Vec<String> = parts.iter()
            .map(|&p| serde_json::to_string(&a.engine.export(p).unwrap()).unwrap())
            .collect();
        a.out.clear();
        let mut b = Harness::new(&pl, ProcessingTime::StreamTime);
        b.engine.revoke(0, &mut b.out);
        for s in &saved {
            let st: PartitionState = serde_json::from_str(s).unwrap();
            b.engine.assign(st.partition, Some(&st), &mut b.out).unwrap();
        }
        prop_assert!(b.out.is_empty(), "a restore fires nothing that was not due");
        for e in &events[cut..] {
            let ra = a.push_on((e.0 % 2) as usize, &json(e));
            let rb = b.push_on((e.0 % 2) as usize, &json(e));
            prop_assert_eq!(ra, rb);
        }
        a.finish();
        b.finish();
        prop_assert_eq!(sorted_rows(&a.out.take_panes()), sorted_rows(&b.out.take_panes()));
    }

    /// Rebalances (SPEC 2): random streams over three partitions, consumed
    /// in a random interleaving; at random points checkpoints, revokes of
    /// any subset of the partitions (all of them included) and assignments
    /// back, each from the partition's last checkpoint, an older one or
    /// offset 0, with idleness and `idle_advance` on and off. What the
    /// owners committed (panes and dead letters of the epochs a checkpoint
    /// closed) equals an uninterrupted run's output, partition by partition.
    #[test]
    fn rebalances_recompute_every_partition_exactly(
        events in stream(150),
        ops in prop::collection::vec((0u8..10, 0u8..8, 0u8..3), 1..200),
        idle in 0usize..3,
        retract in any::<bool>(),
        lateness in prop::sample::select(vec![0i64, 30, 300]),
        hopping in any::<bool>(),
    ) {
        let acc = if retract { "accumulation: accumulating_and_retracting" } else { "" };
        let wm = ["max_out_of_orderness: 20ms", "max_out_of_orderness: 20ms, idle_timeout: 3ms",
            "max_out_of_orderness: 20ms, idle_timeout: 3ms, idle_advance: true"][idle];
        let window = if hopping { "hopping: { size: 60ms, slide: 20ms }" } else { "tumbling: { size: 50ms }" };
        let pl = pipeline(&format!("  {window}\n  allowed_lateness: {lateness}ms"),
            &format!("watermark: {{ {wm} }}\ntrigger: {{ late: every_event }}\n{acc}"), BASIC);
        let sim = RebalanceSim::new(&pl, &events);
        let want = sim.uninterrupted(&ops);
        let got = sim.interrupted(&ops);
        for p in 0..3 {
            // With idleness, what fires a quiet partition's windows depends on
            // the others' progress: its finals may not, nor may anything else
            // but the panes' timings.
            if idle == 0 {
                prop_assert_eq!(&got.panes[p], &want.panes[p], "panes of partition {}", p);
            } else {
                // A hopping window after a partition's last event fires only
                // when the watermark reaches it (at the end of the input it
                // is not emitted), and with idleness that is a matter of timing.
                let last = events.iter().filter(|e| (e.0 % 3) as usize == p).map(|e| e.1).max().unwrap_or(0);
                let within = |v: Vec<String>| -> Vec<String> {
                    v.into_iter().filter(|f| {
                        let end: i64 = f.split_once(',').and_then(|x| x.1.split_once(')')).map_or(0, |x| x.0.parse().unwrap_or(0));
                        !hopping || end - 20_000 <= last * 1000
                    }).collect()
                };
                prop_assert_eq!(within(finals(&got.panes[p])), within(finals(&want.panes[p])), "finals of partition {}", p);
            }
            prop_assert_eq!(&got.dead[p], &want.dead[p], "dead letters of partition {}", p);
        }
    }

}

/// Committed output per partition: panes (without `emitted_at`) and dead
/// letters as (offset, reason).
#[derive(Debug, Default)]
struct Committed {
    panes: Vec<Vec<String>>,
    dead: Vec<Vec<(usize, Reason)>>,
}

fn pane_text(m: &PaneMeta, v: &[Value]) -> String {
    format!(
        "{} [{},{}) #{} {:?} final={} retr={} wm={:?} {:?}",
        m.key,
        m.window_start,
        m.window_end,
        m.pane_index,
        m.timing,
        m.is_final,
        m.retraction,
        m.watermark,
        v
    )
}

/// The final panes of one partition's output, sorted.
fn finals(panes: &[String]) -> Vec<String> {
    let mut v: Vec<String> = panes
        .iter()
        .filter(|p| p.contains("final=true"))
        .map(|p| {
            // Without pane index, timing and watermark: which pane is final
            // depends on when the window expired.
            let (head, rest) = p.split_once(" #").expect("pane text");
            format!("{head} {}", rest.rsplit_once(' ').map_or(rest, |x| x.1))
        })
        .collect();
    v.sort();
    v
}

/// One partition's owner in the simulation.
struct Owner {
    next: usize,
    panes: Vec<String>,
    dead: Vec<(usize, Reason)>,
}

/// Partition logs and the two ways of consuming them.
struct RebalanceSim<'a> {
    pl: &'a Pipeline,
    logs: Vec<Vec<String>>,
}

impl<'a> RebalanceSim<'a> {
    fn new(pl: &'a Pipeline, events: &[(u8, i64, i32)]) -> Self {
        let mut logs = vec![Vec::new(); 3];
        for &(k, t, x) in events {
            logs[(k % 3) as usize].push(format!(r#"{{"k":"k{k}","t":{t},"v":{x}}}"#));
        }
        RebalanceSim { pl, logs }
    }

    /// Consumes the next record of `p` (or reports the end of its log):
    /// panes and dead letters go to the partition's owner.
    fn step(&self, h: &mut Harness, owners: &mut [Option<Owner>], p: usize) {
        let Some(o) = owners[p].as_mut() else { return };
        if o.next >= self.logs[p].len() {
            h.engine.set_end_of_log(p as u32, true, &mut h.out);
        } else {
            h.engine.set_end_of_log(p as u32, false, &mut h.out);
            let dead_before = h.dead.len();
            let _ = h.push_on(p, &self.logs[p][o.next]);
            if let Some((r, _)) = h.dead.get(dead_before) {
                o.dead.push((o.next, *r));
            }
            o.next += 1;
        }
        Self::route(h, owners);
    }

    fn route(h: &mut Harness, owners: &mut [Option<Owner>]) {
        for (m, v) in h.out.iter() {
            let o = owners[m.partition as usize]
                .as_mut()
                .expect("panes come from owned partitions");
            o.panes.push(pane_text(m, v));
        }
        h.out.clear();
    }

    fn tick(h: &mut Harness, owners: &mut [Option<Owner>], now: &mut i64) {
        *now += 1;
        h.set_time(*now);
        Self::route(h, owners);
    }

    fn harness(&self) -> Harness {
        let mut h = Harness::new(self.pl, ProcessingTime::External);
        h.engine.revoke(0, &mut h.out);
        h
    }

    /// Runs the interleaving of `ops` to the end of every log, then fires
    /// what is left, with every partition owned all along.
    fn uninterrupted(&self, ops: &[(u8, u8, u8)]) -> Committed {
        let mut h = self.harness();
        let mut owners: Vec<Option<Owner>> = (0..3)
            .map(|_| {
                Some(Owner {
                    next: 0,
                    panes: vec![],
                    dead: vec![],
                })
            })
            .collect();
        for p in 0..3 {
            h.engine.assign(p, None, &mut h.out).unwrap();
        }
        let mut now = 0;
        for &(_, x, _) in ops {
            Self::tick(&mut h, &mut owners, &mut now);
            self.step(&mut h, &mut owners, (x % 3) as usize);
        }
        self.drain(&mut h, &mut owners, &mut now);
        let mut c = Committed::default();
        for o in owners.into_iter().map(|o| o.expect("owned")) {
            c.panes.push(o.panes);
            c.dead.push(o.dead);
        }
        c
    }

    /// Consumes everything left, then the end of input.
    fn drain(&self, h: &mut Harness, owners: &mut [Option<Owner>], now: &mut i64) {
        loop {
            let mut more = false;
            for p in 0..3 {
                if owners[p]
                    .as_ref()
                    .is_some_and(|o| o.next < self.logs[p].len())
                {
                    more = true;
                    Self::tick(h, owners, now);
                    self.step(h, owners, p);
                }
            }
            if !more {
                break;
            }
        }
        for p in 0..3 {
            self.step(h, owners, p);
        }
        for _ in 0..10 {
            Self::tick(h, owners, now);
        }
        h.finish();
        Self::route(h, owners);
    }

    /// The same interleaving with checkpoints, revokes and assignments in
    /// between. A checkpoint commits what its owner emitted since the last
    /// one; a revoke drops it; an assignment from an older checkpoint (or
    /// offset 0) takes back what was committed after it, which the new
    /// owner recomputes.
    fn interrupted(&self, ops: &[(u8, u8, u8)]) -> Committed {
        let mut h = self.harness();
        let mut owners: Vec<Option<Owner>> = (0..3).map(|_| None).collect();
        // Per partition: checkpoints as (state, next offset, committed panes and dead letters).
        type Ck = (Option<String>, usize, usize, usize);
        let mut history: Vec<Vec<Ck>> = vec![vec![(None, 0, 0, 0)]; 3];
        let mut committed = Committed {
            panes: vec![vec![]; 3],
            dead: vec![vec![]; 3],
        };
        let mut now = 0;
        let assign = |h: &mut Harness,
                      owners: &mut Vec<Option<Owner>>,
                      history: &mut Vec<Vec<Ck>>,
                      committed: &mut Committed,
                      p: usize,
                      which: u8| {
            let hist = &mut history[p];
            let k = match which {
                0 => hist.len() - 1,
                1 => hist.len().saturating_sub(2),
                _ => 0,
            };
            hist.truncate(k + 1);
            let (state, next, np, nd) = hist[k].clone();
            committed.panes[p].truncate(np);
            committed.dead[p].truncate(nd);
            let st: Option<PartitionState> = state.map(|s| serde_json::from_str(&s).unwrap());
            h.engine.assign(p as u32, st.as_ref(), &mut h.out).unwrap();
            owners[p] = Some(Owner {
                next,
                panes: vec![],
                dead: vec![],
            });
            Self::route(h, owners);
        };
        let checkpoint = |h: &mut Harness,
                          owners: &mut Vec<Option<Owner>>,
                          history: &mut Vec<Vec<Ck>>,
                          committed: &mut Committed| {
            for p in 0..3 {
                if let Some(o) = owners[p].as_mut() {
                    committed.panes[p].append(&mut o.panes);
                    committed.dead[p].append(&mut o.dead);
                    let st = serde_json::to_string(&h.engine.export(p as u32).unwrap()).unwrap();
                    history[p].push((
                        Some(st),
                        o.next,
                        committed.panes[p].len(),
                        committed.dead[p].len(),
                    ));
                }
            }
        };
        for p in 0..3 {
            assign(&mut h, &mut owners, &mut history, &mut committed, p, 0);
        }
        for &(op, x, which) in ops {
            Self::tick(&mut h, &mut owners, &mut now);
            match op {
                0 => checkpoint(&mut h, &mut owners, &mut history, &mut committed),
                1 => {
                    // Revoke a subset (bits of x; 7 is all of them).
                    for p in 0..3 {
                        if x & (1 << p) != 0 && owners[p].take().is_some() {
                            h.engine.revoke(p as u32, &mut h.out);
                            Self::route(&mut h, &mut owners);
                        }
                    }
                }
                2 => {
                    let p = (x % 3) as usize;
                    if owners[p].is_none() {
                        assign(&mut h, &mut owners, &mut history, &mut committed, p, which);
                    }
                }
                _ => self.step(&mut h, &mut owners, (x % 3) as usize),
            }
        }
        for p in 0..3 {
            if owners[p].is_none() {
                assign(&mut h, &mut owners, &mut history, &mut committed, p, 0);
            }
        }
        self.drain(&mut h, &mut owners, &mut now);
        checkpoint(&mut h, &mut owners, &mut history, &mut committed);
        committed
    }
}

mod hopping {
    use super::*;

    const HOP: &str = "  hopping: { size: 30ms, slide: 10ms }";

    #[test]
    fn windows_emit_on_change_and_a_zero_pane_follows_the_data() {
        let mut h = Harness::replay(HOP, "");
        h.ev("a", 5, 1.0).unwrap(); // tile [0,10): windows ending 10, 20, 30
        h.ev("a", 25, 2.0).unwrap(); // tile [20,30); W = 25: window ending 10 fires
        assert_eq!(
            h.take(),
            vec![p("a", -20, 10, 0, OnTime, true, 1, Some(1.0))]
        );
        h.ev("a", 75, 4.0).unwrap(); // W = 75
        assert_eq!(
            h.take(),
            vec![
                // 20 equals 10 (nothing new, nothing left): no pane.
                p("a", 0, 30, 0, OnTime, true, 2, Some(3.0)),
                // 40: tile [0,10) left.
                p("a", 10, 40, 0, OnTime, true, 1, Some(2.0)),
                // 60: tile [20,30) left, nothing else: a zero pane.
                p("a", 30, 60, 0, OnTime, true, 0, None),
            ]
        );
        h.finish();
        // Only windows whose newest tile starts at or before the last event.
        assert_eq!(
            h.take(),
            vec![p("a", 50, 80, 0, OnTime, true, 1, Some(4.0))]
        );
    }

    #[test]
    fn late_events_join_every_kept_window_and_report_the_missed_ones() {
        let mut h = Harness::replay(
            HOP,
            "  allowed_lateness: 15ms\ntrigger: { late: every_event }",
        );
        h.ev("a", 1, 1.0).unwrap();
        h.ev("a", 44, 1.0).unwrap(); // W = 44: windows 10 (final: 25 <= 44), 30 (kept to 45), 40 (to 55)
        h.take();
        // t = 8 is in windows ending 10, 20, 30: 10 and 20 expired, 30 kept.
        h.ev("a", 8, 2.0).unwrap();
        let panes = h.take();
        // Window 30 equalled window 20 and 10 before; with those gone it
        // differs from what was shown, and gives a late pane.
        assert_eq!(
            panes,
            vec![p("a", 0, 30, 0, Late, false, 2, Some(3.0))],
            "the kept window that holds it"
        );
        let r = h
            .partial
            .take()
            .expect("a dead letter for the missed windows");
        assert_eq!(r.reason, Reason::TooLate);
        assert!(
            r.detail.contains("missed 2 of its 3 windows"),
            "{}",
            r.detail
        );
        // All its windows gone: dropped.
        assert_eq!(h.ev("a", 2, 1.0), Ok(()));
        h.ev("a", 100, 1.0).unwrap();
        assert_eq!(h.ev("a", 3, 1.0), Err(Reason::TooLate));
    }
}

mod hopping_reference {
    use super::*;

    const FEATURES: &str = "  - { name: n, agg: count }\n  - { name: s, agg: sum, field: v }\n  - { name: lo, agg: min, field: v }\n  - { name: hi, agg: max, field: v }\n  - { name: u, agg: count_distinct, field: v }\n  - { name: med, agg: quantile, field: v, q: 0.5 }\n  - { name: set, agg: collect_set, field: v, max: 4 }";

    /// What a window holds, computed from the events themselves.
    fn brute(events: &[(u8, i64, i32)], key: u8, start: i64, end: i64) -> Vec<Value> {
        let mut xs: Vec<i32> = events
            .iter()
            .filter(|e| e.0 == key && e.1 >= start && e.1 < end)
            .map(|e| e.2)
            .collect();
        if xs.is_empty() {
            return vec![
                Value::Int(0),
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Int(0),
                Value::Null,
                Value::Null,
                Value::Bool(false),
            ];
        }
        let sum: f64 = xs.iter().map(|&x| x as f64).sum();
        let mut sorted = xs.clone();
        sorted.sort();
        let med = sorted[(0.5 * (sorted.len() - 1) as f64).floor() as usize] as f64;
        xs.sort();
        xs.dedup();
        let mut texts: Vec<String> = xs.iter().map(|x| x.to_string()).collect();
        texts.sort();
        let cut = texts.len() > 4;
        texts.truncate(4);
        vec![
            Value::Int(sorted.len() as i64),
            Value::Float(sum),
            Value::Float(sorted[0] as f64),
            Value::Float(*sorted.last().unwrap() as f64),
            Value::Int(xs.len() as i64),
            Value::Float(med),
            Value::List(texts),
            Value::Bool(cut),
        ]
    }

    fn same(got: &[Value], want: &[Value]) -> bool {
        got.iter()
            .zip(want)
            .enumerate()
            .all(|(i, (g, w))| match (g, w) {
                (Value::Float(a), Value::Float(b)) if i == 5 => {
                    (a - b).abs() <= 0.01 * b.abs() + 1e-9
                }
                (Value::Float(a), Value::Float(b)) => (a - b).abs() <= 1e-9 * b.abs().max(1.0),
                _ => g == w,
            })
    }

    fn run(events: &[(u8, i64, i32)], pl: &Pipeline, bumps: &[(usize, i64)]) -> Vec<Pane> {
        let mut h = Harness::new(pl, ProcessingTime::StreamTime);
        for (i, &(k, t, x)) in events.iter().enumerate() {
            for &(at, w) in bumps {
                if at == i {
                    h.advance_watermark(w);
                }
            }
            assert!(h.ev(&format!("k{k}"), t, x as f64).is_ok());
        }
        h.finish();
        h.out.take_panes()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Replay of shuffled streams: every pane's values are those of the
        /// events in its window; exactly the windows that differ from the
        /// one before them fire (a zero pane after the last data), those
        /// whose newest tile starts after the last event do not; the
        /// windows skipped equal the pane before them; and extra watermark
        /// steps change no final value by a single bit.
        #[test]
        fn hopping_panes_equal_a_brute_force_reference(
            events in stream(300),
            slide in 5i64..50, k in 1i64..8, offset in 0i64..50, ooo in 0i64..40,
            trig in 0usize..4, acc in 0usize..3,
            bumps in prop::collection::vec((0usize..120, 0i64..2000), 0..4),
            tight in any::<bool>(),
        ) {
            // Tight: no lateness, and a watermark that no event falls behind
            // (delays are at most 300 ms), so every window is final at once.
            let (lateness, ooo) = if tight { (0, ooo + 300) } else { (100000, ooo) };
            let size = slide * k;
            let trigger = ["", "trigger: { late: every_event }", "trigger: { late: { every: 5ms } }",
                "trigger: { early: { every: 7ms }, late: every_event }"][trig];
            let accumulation = ["accumulating", "accumulating_and_retracting", "discarding"][acc];
            let pl = pipeline(
                &format!("  hopping: {{ size: {size}ms, slide: {slide}ms, offset: {offset}ms }}\n  allowed_lateness: {lateness}ms"),
                &format!("watermark: {{ max_out_of_orderness: {ooo}ms }}\n{trigger}\naccumulation: {accumulation}"),
                FEATURES,
            );
            let panes = run(&events, &pl, &[]);
            let g = crate::window::hopping::Grid::new(size * 1000, slide * 1000, (offset % slide) * 1000);
            let max_t = events.iter().map(|e| e.1).max().unwrap();
            let last_tile = g.tile(max_t * 1000);
            for key in 0u8..3 {
                let name = format!("k{key}");
                let mine: Vec<&Pane> = panes.iter().filter(|p| p.key.to_string() == name && !p.retraction).collect();
                // The windows that must emit.
                let mut tiles: Vec<i64> = events.iter().filter(|e| e.0 == key).map(|e| g.tile(e.1 * 1000)).collect();
                tiles.sort();
                tiles.dedup();
                let mut want: Vec<i64> = tiles.iter().flat_map(|n| [n + 1, n + 1 + k]).filter(|m| m - 1 <= last_tile).collect();
                want.sort();
                want.dedup();
                // An early pane is of the window whose newest tile got the
                // data, and never shows more than the window's events.
                for p in mine.iter().filter(|p| p.timing == Timing::Early) {
                    let m = g.window_of_end(p.window_end);
                    prop_assert!(tiles.contains(&(m - 1)), "early pane of {} without data in its newest tile", m);
                    let w = brute(&events, key, p.window_start / 1000, p.window_end / 1000);
                    if acc != 2 {
                        let fits = match (&p.values[0], &w[0]) { (Value::Int(a), Value::Int(b)) => a <= b, _ => false };
                        prop_assert!(fits, "early pane {:?} over {:?}", p.values, w);
                    }
                }
                let finals: Vec<&&Pane> = mine.iter().filter(|p| p.is_final).collect();
                let got: Vec<i64> = finals.iter().map(|p| g.window_of_end(p.window_end)).collect();
                prop_assert_eq!(&got, &want, "windows of {}", name);
                for p in &finals {
                    let w = brute(&events, key, p.window_start / 1000, p.window_end / 1000);
                    if acc != 2 {
                        prop_assert!(same(&p.values, &w), "{} [{}, {}): {:?} vs {:?}", name, p.window_start, p.window_end, p.values, w);
                    }
                }
                if acc == 2 {
                    // Discarding: the panes of a window add up to its events.
                    for p in &finals {
                        let n: i64 = mine.iter().filter(|q| q.window_end == p.window_end)
                            .map(|q| match q.values[0] { Value::Int(i) => i, _ => 0 }).sum();
                        let w = brute(&events, key, p.window_start / 1000, p.window_end / 1000);
                        prop_assert_eq!(Value::Int(n), w[0].clone());
                    }
                } else {
                    // Windows between two emitted ones equal the earlier.
                    for pair in want.windows(2) {
                        let (a, b) = (pair[0], pair[1]);
                        let (s, e) = g.bounds(a);
                        let base = brute(&events, key, s / 1000, e / 1000);
                        for m in a + 1..b {
                            let (s, e) = g.bounds(m);
                            prop_assert_eq!(&brute(&events, key, s / 1000, e / 1000), &base, "window {} of {}", m, name);
                        }
                    }
                }
            }
            // Extra watermark steps (within the input's times, which a
            // bounded replay reaches anyway): late panes differ, final
            // values do not.
            // (Tight: a step would make events late, and they are refused.)
            let bumps: Vec<(usize, i64)> = if tight { Vec::new() } else {
                bumps.iter().map(|&(i, w)| (i, w.min(max_t))).collect()
            };
            let bumped = run(&events, &pl, &bumps);
            let fin = |v: &[Pane]| {
                let mut r: Vec<String> = v.iter().filter(|p| p.is_final && !p.retraction)
                    .map(|p| format!("{} {} {:?}", p.key, p.window_end, p.values)).collect();
                r.sort();
                r
            };
            if acc != 2 {
                prop_assert_eq!(fin(&panes), fin(&bumped));
            }
        }
    }
}
