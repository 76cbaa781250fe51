//! Scaling out and in (SPEC 2, docs/daemon.md "Rebalances"): a second
//! instance joins the group before the first one's first checkpoint or
//! after several, then the first one leaves (SIGTERM) or dies (kill -9).
//! Every partition that moves is recomputed from its checkpoint or from
//! its start against its own watermark: the final Parquet panes and the
//! Redis values equal a group-by of all events, no pane row appears twice,
//! and no event that was on time in the input is a `too_late` dead letter.
//!
//! With `RILL_TEST_TANSU=1` the same tests run against a tansu broker.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use super::{
    assert_same, check_redis, end_of, events, final_rows, group_by, wait_for_finals, Daemon, Kafka,
    PIPELINE,
};
use crate::util::{read_rows, wait_for, RedisServer};

/// The example pipeline's lateness and idle settings. The idle timeout is
/// longer than any test, so only a moment with no partition assigned could
/// move the watermark to the wall clock (which it must not).
fn pipeline() -> String {
    PIPELINE
        .replace(
            "watermark: { max_out_of_orderness: 15m }",
            "watermark: { max_out_of_orderness: 15m, idle_timeout: 1h, idle_advance: true }",
        )
        .replace(
            "tumbling: { size: 5m }",
            "tumbling: { size: 5m }\n  allowed_lateness: 1h",
        )
}

#[derive(Clone, Copy, PartialEq)]
enum Stop {
    Term,
    Kill,
}

/// Every pane row once: (user, window start, pane index, retraction).
fn assert_no_row_twice(dir: &Path) {
    let mut seen = BTreeSet::new();
    for r in read_rows(&dir.join("data").join("spend")) {
        let k = (
            r["user_id"].as_str().unwrap_or_default().to_string(),
            r["window_start"].as_str().unwrap_or_default().to_string(),
            r["pane_index"].as_i64().unwrap_or(-1),
            r["retraction"] == Value::Bool(true),
        );
        assert!(seen.insert(k.clone()), "pane row twice: {k:?}");
    }
}

/// The dead letters of every instance, as (reason, detail).
fn dead_letters(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let d = dir.join("data").join("_dead_letter").join("spend");
    for f in std::fs::read_dir(d).into_iter().flatten().flatten() {
        let name = f.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".jsonl") {
            continue;
        }
        for line in std::fs::read_to_string(f.path())
            .unwrap_or_default()
            .lines()
        {
            let v: Value = serde_json::from_str(line).expect("dead letters are JSON lines");
            out.push((
                v["reason"].as_str().unwrap_or_default().to_string(),
                v["detail"].as_str().unwrap_or_default().to_string(),
            ));
        }
    }
    out
}

fn scale_out_then_in(seed: u64, first_checkpoints: u32, stop: Stop) {
    let tmp = tempfile::tempdir().expect("tmp");
    let redis = RedisServer::start(&tmp.path().join("redis"));
    let kafka = Kafka::with_partitions(4);
    let yaml = pipeline();
    let evs = events(6000, seed);
    let (a, b) = evs.split_at(3000);
    kafka.produce(a);
    // Before the first checkpoint: the first instance never writes one on its own.
    let interval = if first_checkpoints == 0 {
        "1h"
    } else {
        "300ms"
    };
    let d1 = Daemon::start_with(
        tmp.path(),
        &yaml,
        &kafka.brokers(),
        &redis.url(),
        &["--checkpoint-interval", interval],
    );
    let t = std::time::Instant::now();
    while d1.metric("rill_events_total") < 3000.0 {
        if t.elapsed().as_secs() > 20 {
            let log = std::fs::read_dir(tmp.path())
                .unwrap()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("daemon-"))
                .map(|e| std::fs::read_to_string(e.path()).unwrap())
                .collect::<String>();
            panic!("{}\n{log}", d1.metrics());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    if first_checkpoints > 0 {
        wait_for(120, "checkpoints of the first instance", || {
            d1.metric("rill_checkpoints_total") >= f64::from(first_checkpoints)
        });
    }
    // A second instance joins: in the eager rebalance the first one loses
    // every partition, then gets half of them back.
    let d2 = Daemon::start_with(
        tmp.path(),
        &yaml,
        &kafka.brokers(),
        &redis.url(),
        &["--checkpoint-interval", "300ms"],
    );
    wait_for(120, "the second instance to own a partition", || {
        d2.metrics().contains("rill_consumer_lag{")
    });
    kafka.produce(b);
    match stop {
        Stop::Term => {
            let (st, _) = d1.stop();
            assert!(st.success(), "clean exit on SIGTERM: {st:?}");
        }
        Stop::Kill => d1.kill9(),
    }
    // tansu keeps a dead group leader's partitions assigned to it (the
    // survivor is not given them when the dead member's session ends), so
    // there the killed instance is restarted, as an orchestrator would.
    let d3 = (stop == Stop::Kill && kafka.is_tansu())
        .then(|| Daemon::start_with(tmp.path(), &yaml, &kafka.brokers(), &redis.url(), &[]));
    kafka.sentinels(end_of(&evs));
    let want = group_by(&evs);
    wait_for_finals(tmp.path(), &want);
    if let Some(d3) = d3 {
        let (st, _) = d3.stop();
        assert!(st.success(), "clean exit on SIGTERM: {st:?}");
    }
    let (st, _) = d2.stop();
    assert!(st.success(), "clean exit on SIGTERM: {st:?}");
    assert_same(
        &final_rows(tmp.path()).expect("no doubled final rows"),
        &want,
    );
    assert_no_row_twice(tmp.path());
    check_redis(&redis, &want);
    let late: Vec<_> = dead_letters(tmp.path())
        .into_iter()
        .filter(|(r, _)| r == "too_late")
        .collect();
    assert!(
        late.is_empty(),
        "{} on-time events were dead-lettered as too late, e.g. {:?}",
        late.len(),
        late.first()
    );
}

#[test]
fn a_second_instance_before_the_first_checkpoint_then_sigterm() {
    scale_out_then_in(31, 0, Stop::Term);
}

#[test]
fn a_second_instance_before_the_first_checkpoint_then_kill_9() {
    scale_out_then_in(37, 0, Stop::Kill);
}

#[test]
fn a_second_instance_after_several_checkpoints_then_sigterm() {
    scale_out_then_in(41, 3, Stop::Term);
}

#[test]
fn a_second_instance_after_several_checkpoints_then_kill_9() {
    scale_out_then_in(43, 3, Stop::Kill);
}
