//! Point-in-time joins: the library over Arrow batches against a
//! brute-force reference written here (differential, random data, both
//! modes), the edge cases of SPEC 7 one by one, and `rill join` end to end
//! over files written by `rill replay`.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use proptest::prelude::*;
use rill::join::{FeatureTable, GroupSpec, JoinOptions, Joiner, Mode};

use crate::util::{repo, rill, run_ok, Lcg};

/// A feature row as the offline store has it.
#[derive(Debug, Clone)]
struct FRow {
    k1: i64,
    k2: i64,
    window_end: i64,
    pane: i64,
    is_final: bool,
    retraction: bool,
    emitted_at: i64,
    /// The feature value: a unique id, so the test sees which row was taken.
    id: f64,
}

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn feature_batch(rows: &[FRow]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("k1", DataType::Int64, false),
        Field::new("k2", DataType::Int64, false),
        Field::new("window_start", ts_type(), false),
        Field::new("window_end", ts_type(), false),
        Field::new("v", DataType::Float64, true),
        Field::new("pane_index", DataType::Int64, false),
        Field::new("timing", DataType::Utf8, false),
        Field::new("is_final", DataType::Boolean, false),
        Field::new("retraction", DataType::Boolean, false),
        Field::new("emitted_at", ts_type(), false),
        Field::new("watermark", ts_type(), true),
    ]));
    let ts = |f: &dyn Fn(&FRow) -> i64| -> ArrayRef {
        Arc::new(
            TimestampMicrosecondArray::from(rows.iter().map(f).collect::<Vec<_>>())
                .with_timezone("UTC"),
        )
    };
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(
                rows.iter().map(|r| r.k1).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(
                rows.iter().map(|r| r.k2).collect::<Vec<_>>(),
            )),
            ts(&|r| r.window_end - 10),
            ts(&|r| r.window_end),
            Arc::new(Float64Array::from(
                rows.iter().map(|r| r.id).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(
                rows.iter().map(|r| r.pane).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                rows.iter().map(|_| "ON_TIME").collect::<Vec<_>>(),
            )),
            Arc::new(BooleanArray::from(
                rows.iter().map(|r| r.is_final).collect::<Vec<_>>(),
            )),
            Arc::new(BooleanArray::from(
                rows.iter().map(|r| r.retraction).collect::<Vec<_>>(),
            )),
            ts(&|r| r.emitted_at),
            Arc::new(
                TimestampMicrosecondArray::from(vec![None::<i64>; rows.len()]).with_timezone("UTC"),
            ),
        ],
    )
    .expect("batch")
}

/// Entity rows (k1, k2, ts, label); a None key part is a null.
fn entity_batch(rows: &[(Option<i64>, i64, i64)]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("k1", DataType::Int64, true),
        Field::new("k2", DataType::Int64, false),
        Field::new("event_timestamp", ts_type(), false),
        Field::new("label", DataType::Int64, false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(
                rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(
                rows.iter().map(|r| r.1).collect::<Vec<_>>(),
            )),
            Arc::new(
                TimestampMicrosecondArray::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())
                    .with_timezone("UTC"),
            ),
            Arc::new(Int64Array::from((0..rows.len() as i64).collect::<Vec<_>>())),
        ],
    )
    .expect("batch")
}

fn spec(ttl: Option<i64>) -> GroupSpec {
    GroupSpec {
        name: "g".into(),
        keys: vec!["k1".into(), "k2".into()],
        features: None,
        all_features: vec!["v".into()],
        ttl,
        discarding: false,
        plan: None,
    }
}

/// The value column of a join through the library.
fn join(
    features: &[FRow],
    entities: &[(Option<i64>, i64, i64)],
    mode: Mode,
    ttl: Option<i64>,
) -> Vec<Option<f64>> {
    let t = FeatureTable::from_batches(spec(ttl), mode, &[feature_batch(features)]).expect("table");
    let mut j = Joiner::new(
        vec![t],
        JoinOptions {
            timestamp_column: "event_timestamp".into(),
            full_names: false,
        },
    );
    let out = j.join_batch(&entity_batch(entities)).expect("join");
    assert_eq!(
        out.num_rows(),
        entities.len(),
        "one output row per input row"
    );
    let labels = out
        .column_by_name("label")
        .expect("input columns kept")
        .as_primitive::<Int64Type>();
    for i in 0..out.num_rows() {
        assert_eq!(labels.value(i), i as i64, "input order kept");
    }
    let v = out
        .column_by_name("v")
        .expect("feature column")
        .as_primitive::<Float64Type>();
    (0..v.len())
        .map(|i| (!v.is_null(i)).then(|| v.value(i)))
        .collect()
}

/// SPEC 7, brute force.
fn reference(
    features: &[FRow],
    entities: &[(Option<i64>, i64, i64)],
    mode: Mode,
    ttl: Option<i64>,
) -> Vec<Option<f64>> {
    entities
        .iter()
        .map(|&(k1, k2, ts)| {
            let k1 = k1?;
            let cands = features
                .iter()
                .filter(|f| f.k1 == k1 && f.k2 == k2 && !f.retraction);
            match mode {
                Mode::Final => {
                    let best = cands
                        .filter(|f| f.is_final && f.window_end <= ts)
                        .max_by_key(|f| (f.window_end, f.pane))?;
                    if ttl.is_some_and(|t| ts - best.window_end > t) {
                        return None;
                    }
                    Some(best.id)
                }
                Mode::AsOfEmit => {
                    let best = cands
                        .filter(|f| f.emitted_at <= ts)
                        .max_by_key(|f| (f.window_end, f.pane))?;
                    if ttl.is_some_and(|t| ts - best.emitted_at > t) {
                        return None;
                    }
                    Some(best.id)
                }
            }
        })
        .collect()
}

fn arb_features() -> impl Strategy<Value = Vec<FRow>> {
    prop::collection::vec(
        (
            0i64..3,
            0i64..3,
            0i64..12,
            0i64..3,
            any::<bool>(),
            prop::bool::weighted(0.15),
            0i64..40,
        ),
        0..60,
    )
    .prop_map(|v| {
        let mut seen = std::collections::HashSet::new();
        v.into_iter()
            .filter(|&(k1, k2, w, p, ..)| seen.insert((k1, k2, w, p)))
            .enumerate()
            .map(|(i, (k1, k2, w, p, fin, retr, lag))| FRow {
                k1,
                k2,
                window_end: w * 10,
                pane: p,
                is_final: fin,
                retraction: retr,
                emitted_at: w * 10 + lag - 10,
                id: i as f64,
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn join_equals_brute_force(features in arb_features(),
                               entities in prop::collection::vec((prop::option::weighted(0.95, 0i64..4), 0i64..3, -10i64..160), 0..50),
                               as_of in any::<bool>(), ttl in prop::option::of(0i64..40)) {
        let mode = if as_of { Mode::AsOfEmit } else { Mode::Final };
        prop_assert_eq!(join(&features, &entities, mode, ttl), reference(&features, &entities, mode, ttl));
    }
}

#[allow(clippy::too_many_arguments)]
fn fr(k1: i64, k2: i64, we: i64, pane: i64, fin: bool, retr: bool, em: i64, id: f64) -> FRow {
    FRow {
        k1,
        k2,
        window_end: we,
        pane,
        is_final: fin,
        retraction: retr,
        emitted_at: em,
        id,
    }
}

#[test]
fn entity_time_exactly_at_window_end_sees_that_window() {
    let f = [
        fr(1, 1, 100, 0, true, false, 105, 1.0),
        fr(1, 1, 200, 0, true, false, 205, 2.0),
    ];
    assert_eq!(
        join(
            &f,
            &[(Some(1), 1, 200), (Some(1), 1, 199)],
            Mode::Final,
            None
        ),
        [Some(2.0), Some(1.0)]
    );
}

#[test]
fn ttl_edge_is_inclusive() {
    let f = [fr(1, 1, 100, 0, true, false, 105, 1.0)];
    assert_eq!(
        join(
            &f,
            &[(Some(1), 1, 150), (Some(1), 1, 151)],
            Mode::Final,
            Some(50)
        ),
        [Some(1.0), None]
    );
}

#[test]
fn entity_rows_older_than_every_feature_row_get_nulls_and_stay() {
    let f = [fr(1, 1, 100, 0, true, false, 105, 1.0)];
    assert_eq!(
        join(&f, &[(Some(1), 1, 5), (Some(1), 1, 99)], Mode::Final, None),
        [None, None]
    );
}

#[test]
fn a_key_with_only_future_feature_rows_is_kept_with_nulls() {
    let f = [
        fr(2, 2, 500, 0, true, false, 505, 1.0),
        fr(1, 1, 100, 0, true, false, 105, 2.0),
    ];
    assert_eq!(
        join(
            &f,
            &[(Some(2), 2, 300), (Some(1), 1, 300)],
            Mode::Final,
            None
        ),
        [None, Some(2.0)]
    );
}

#[test]
fn duplicate_entity_rows_are_separate_rows() {
    let f = [fr(1, 1, 100, 0, true, false, 105, 1.0)];
    assert_eq!(
        join(
            &f,
            &[(Some(1), 1, 150), (Some(1), 1, 150), (Some(1), 1, 150)],
            Mode::Final,
            None
        ),
        [Some(1.0); 3]
    );
}

#[test]
fn composite_keys_whose_concatenations_collide_do_not_match() {
    // (1, 12) and (11, 2) both read "112" when concatenated.
    let f = [
        fr(1, 12, 100, 0, true, false, 105, 1.0),
        fr(11, 2, 100, 0, true, false, 105, 2.0),
    ];
    assert_eq!(
        join(
            &f,
            &[(Some(11), 2, 150), (Some(1), 12, 150), (Some(1), 2, 150)],
            Mode::Final,
            None
        ),
        [Some(2.0), Some(1.0), None]
    );
}

#[test]
fn null_keys_get_nulls() {
    let f = [fr(1, 1, 100, 0, true, false, 105, 1.0)];
    assert_eq!(join(&f, &[(None, 1, 150)], Mode::Final, None), [None]);
}

#[test]
fn panes_of_one_window_early_on_time_late_and_retractions() {
    // Window ending at 100: early pane 0 (emitted 50), on-time pane 1
    // (emitted 100), a retraction of pane 1 and late pane 2 (emitted 130, final).
    let f = [
        fr(1, 1, 100, 0, false, false, 50, 10.0),
        fr(1, 1, 100, 1, false, false, 100, 11.0),
        fr(1, 1, 100, 1, false, true, 130, 99.0),
        fr(1, 1, 100, 2, true, false, 130, 12.0),
    ];
    let e = [(Some(1), 1, 60), (Some(1), 1, 110), (Some(1), 1, 140)];
    assert_eq!(
        join(&f, &e, Mode::AsOfEmit, None),
        [Some(10.0), Some(11.0), Some(12.0)]
    );
    // `final` sees only the final pane, from window_end on.
    assert_eq!(
        join(&f, &e, Mode::Final, None),
        [None, Some(12.0), Some(12.0)]
    );
}

#[test]
fn rows_emitted_after_the_entity_time_are_excluded_in_as_of_emit() {
    // The final pane of the window ending at 100 was emitted at 150.
    let f = [fr(1, 1, 100, 0, true, false, 150, 1.0)];
    assert_eq!(join(&f, &[(Some(1), 1, 120)], Mode::AsOfEmit, None), [None]);
    assert_eq!(
        join(&f, &[(Some(1), 1, 120)], Mode::Final, None),
        [Some(1.0)]
    );
}

#[test]
fn empty_inputs() {
    assert_eq!(join(&[], &[(Some(1), 1, 10)], Mode::Final, None), [None]);
    assert_eq!(
        join(
            &[fr(1, 1, 100, 0, true, false, 105, 1.0)],
            &[],
            Mode::Final,
            None
        ),
        Vec::<Option<f64>>::new()
    );
}

/// SPEC 7 per key: the same rule as `reference`, over each key's own rows.
fn reference_by_key(
    features: &[FRow],
    entities: &[(Option<i64>, i64, i64)],
    mode: Mode,
    ttl: Option<i64>,
) -> Vec<Option<f64>> {
    let mut by_key: std::collections::HashMap<(i64, i64), Vec<FRow>> = Default::default();
    for f in features {
        by_key.entry((f.k1, f.k2)).or_default().push(f.clone());
    }
    entities
        .iter()
        .map(|&(k1, k2, ts)| {
            let rows = by_key.get(&(k1?, k2))?;
            reference(rows, &[(k1, k2, ts)], mode, ttl)[0]
        })
        .collect()
}

/// At a size where the index is built and the entity rows joined on
/// several threads (pieces of 65,536 rows): the same answers as a
/// per-key brute force, and the same as on one thread, in both modes.
#[test]
fn threaded_index_and_join_equal_the_reference_at_scale() {
    let mut rng = Lcg(7);
    let mut features = Vec::new();
    for k1 in 0..120 {
        for k2 in 0..40 {
            for w in 0..80 {
                if rng.below(3) == 0 {
                    continue;
                }
                for p in 0..=rng.below(2) as i64 {
                    features.push(FRow {
                        k1,
                        k2,
                        window_end: w * 10,
                        pane: p,
                        is_final: rng.below(4) != 0,
                        retraction: rng.below(10) == 0,
                        emitted_at: w * 10 + rng.below(30) as i64 - 5,
                        id: features.len() as f64,
                    });
                }
            }
        }
    }
    // Out of order in places, so that some key runs need sorting.
    for i in (1..features.len()).rev() {
        if rng.below(5) == 0 {
            let j = i.saturating_sub(rng.below(200) as usize);
            features.swap(i, j);
        }
    }
    assert!(features.len() > 4 * 65_536, "{} rows", features.len());
    let fbatches: Vec<RecordBatch> = features.chunks(50_000).map(feature_batch).collect();
    let entities: Vec<(Option<i64>, i64, i64)> = (0..150_000)
        .map(|_| {
            let k1 = (rng.below(50) != 0).then(|| rng.below(125) as i64);
            (k1, rng.below(40) as i64, rng.below(900) as i64 - 20)
        })
        .collect();
    let ebatches = [
        entity_batch(&entities[..100_000]),
        entity_batch(&entities[100_000..]),
    ];
    let opts = JoinOptions {
        timestamp_column: "event_timestamp".into(),
        full_names: false,
    };
    for (mode, ttl) in [
        (Mode::Final, None),
        (Mode::AsOfEmit, Some(25)),
        (Mode::Final, Some(40)),
    ] {
        let want = reference_by_key(&features, &entities, mode, ttl);
        let mut got_by_threads = Vec::new();
        for threads in [1, 3] {
            let t =
                FeatureTable::from_batches_on(spec(ttl), mode, &fbatches, threads).expect("table");
            let mut j = Joiner::new(vec![t], opts.clone());
            let out = j.join_all(&ebatches, threads).expect("join");
            let mut got = Vec::new();
            for b in &out {
                let labels = b
                    .column_by_name("label")
                    .expect("label")
                    .as_primitive::<Int64Type>();
                let v = b
                    .column_by_name("v")
                    .expect("v")
                    .as_primitive::<Float64Type>();
                for i in 0..b.num_rows() {
                    // Labels count from 0 in each entity batch.
                    let row = got.len();
                    let want_label = if row < 100_000 { row } else { row - 100_000 };
                    assert_eq!(labels.value(i) as usize, want_label, "input order kept");
                    got.push((!v.is_null(i)).then(|| v.value(i)));
                }
            }
            assert_eq!(got.len(), entities.len(), "one output row per entity row");
            let wrong = got.iter().zip(&want).filter(|(a, b)| a != b).count();
            assert_eq!(
                wrong, 0,
                "{mode:?} ttl {ttl:?} on {threads} threads: rows differing"
            );
            assert_eq!(j.rows, entities.len() as u64);
            got_by_threads.push((got, j.matched.clone()));
        }
        assert_eq!(got_by_threads[0], got_by_threads[1]);
    }
}

/// Null entity times across batches joined on several threads: the error
/// counts them over all batches and names the first row, whatever piece
/// or thread met it.
#[test]
fn threaded_join_names_the_first_null_time_of_all_batches() {
    let features = vec![fr(1, 1, 100, 0, true, false, 105, 1.0)];
    let t = FeatureTable::from_batches(spec(None), Mode::Final, &[feature_batch(&features)])
        .expect("table");
    let with_nulls = |rows: usize, nulls: &[usize]| {
        let b = entity_batch(&vec![(Some(1), 1, 200); rows]);
        let ts: ArrayRef = Arc::new(
            TimestampMicrosecondArray::from(
                (0..rows)
                    .map(|i| (!nulls.contains(&i)).then_some(200))
                    .collect::<Vec<_>>(),
            )
            .with_timezone("UTC"),
        );
        let mut cols = b.columns().to_vec();
        cols[2] = ts;
        let schema = Schema::new(
            b.schema()
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
        );
        RecordBatch::try_new(Arc::new(schema), cols).expect("batch")
    };
    let batches = [
        with_nulls(140_000, &[]),
        with_nulls(140_000, &[139_999]),
        with_nulls(140_000, &[5, 70_000]),
    ];
    let mut j = Joiner::new(
        vec![t],
        JoinOptions {
            timestamp_column: "event_timestamp".into(),
            full_names: false,
        },
    );
    let e = j.join_all(&batches, 3).err().expect("refused");
    let msg = e.to_string();
    assert!(
        msg.contains("3 null value(s), the first at row 279999"),
        "{msg}"
    );
}

#[test]
fn discarding_pipelines_are_refused_in_final_mode() {
    let mut s = spec(None);
    s.discarding = true;
    let e = FeatureTable::from_batches(s.clone(), Mode::Final, &[])
        .err()
        .expect("refused");
    assert!(e.to_string().contains("discards"), "{e}");
    assert!(FeatureTable::from_batches(s, Mode::AsOfEmit, &[]).is_ok());
}

/// `rill join` over `entities` with the pipelines of the repository.
fn join_cmd(
    entities: &std::path::Path,
    offline: &std::path::Path,
    output: &std::path::Path,
) -> std::process::Command {
    let mut c = rill();
    c.arg("join")
        .arg("--entities")
        .arg(entities)
        .arg("--offline")
        .arg(offline)
        .arg("--pipelines")
        .arg(repo("pipelines"))
        .arg("--output")
        .arg(output);
    c
}

/// The two groups of the end-to-end test, with full names, JSON summary, no TTL.
const TWO_GROUPS: [&str; 12] = [
    "--group",
    "user_spend_5m:tx_count,amount_sum",
    "--group",
    "user_category_1h",
    "--full-names",
    "--json",
    "--ttl",
    "user_spend_5m=none",
    "--ttl",
    "user_category_1h=none",
    "--mode",
    "final",
];

/// End to end: `rill replay` writes two groups, `rill join` joins a CSV of
/// entity rows with both, and every value equals a brute-force answer
/// computed from the replay's own Parquet rows.
#[test]
fn cli_joins_two_groups_from_csv_and_reports_errors() {
    let tmp = tempfile::tempdir().expect("tmp");
    let events = tmp.path().join("ev.jsonl");
    run_ok(
        rill()
            .args([
                "gen", "--events", "20000", "--users", "50", "--days", "1", "--output",
            ])
            .arg(&events),
    );
    let offline = tmp.path().join("offline");
    for p in ["user_spend_5m", "user_category_1h"] {
        run_ok(
            rill()
                .arg("replay")
                .arg(repo(&format!("pipelines/{p}.yaml")))
                .arg("--input")
                .arg(&events)
                .arg("--output")
                .arg(&offline),
        );
    }
    // Entity rows: users at times over the day, one unknown user, one duplicate.
    let mut csv = String::from("user_id,category,event_timestamp,label\n");
    let cats = ["books", "electronics", "grocery", "fashion", "home"];
    for i in 0..300 {
        let t = 1_767_571_200 + (i * 287) % 86_400;
        csv.push_str(&format!(
            "u{},{},{},{}\n",
            (i * 7) % 50,
            cats[i as usize % 5],
            rill::time::format_rfc3339(t * 1_000_000),
            i % 2
        ));
    }
    csv.push_str("nobody,books,2026-01-05T12:00:00Z,1\n");
    csv.push_str("u1,books,2026-01-05T12:00:00Z,0\nu1,books,2026-01-05T12:00:00Z,0\n");
    let ent = tmp.path().join("entities.csv");
    std::fs::write(&ent, &csv).expect("csv");
    std::fs::create_dir_all(tmp.path().join("train")).expect("dir");
    let out = tmp.path().join("train").join("train.parquet");
    let o = run_ok(join_cmd(&ent, &offline, &out).args(TWO_GROUPS));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json summary");
    assert_eq!(summary["rows"], 303);
    let rows = crate::util::read_rows(&tmp.path().join("train"));
    assert_eq!(rows.len(), 303);
    // Brute force over the replay's rows: final panes, greatest window_end <= ts.
    let spend = crate::util::read_rows(&offline.join("user_spend_5m"));
    let lines: Vec<&str> = csv.lines().skip(1).collect();
    for (i, r) in rows.iter().enumerate() {
        let f: Vec<&str> = lines[i].split(',').collect();
        assert_eq!(r["user_id"], f[0], "input order");
        let ts = rill::time::parse_rfc3339(f[2]).expect("ts");
        let best = spend
            .iter()
            .filter(|s| s["user_id"] == f[0] && s["is_final"] == true && s["retraction"] == false)
            .filter(|s| rill::time::parse_rfc3339(s["window_end"].as_str().unwrap()).unwrap() <= ts)
            .max_by_key(|s| rill::time::parse_rfc3339(s["window_end"].as_str().unwrap()).unwrap());
        match best {
            Some(b) => {
                assert_eq!(r["user_spend_5m__tx_count"], b["tx_count"], "row {i}");
                assert_eq!(r["user_spend_5m__amount_sum"], b["amount_sum"], "row {i}");
            }
            None => assert!(r["user_spend_5m__tx_count"].is_null(), "row {i}: {r:?}"),
        }
    }
    assert!(
        rows[300]["user_spend_5m__tx_count"].is_null(),
        "unknown user"
    );
    assert_eq!(
        rows[301]["user_spend_5m__tx_count"],
        rows[302]["user_spend_5m__tx_count"]
    );

    // Past the memory budget the join partitions the key space on disk and
    // gives the same rows.
    std::fs::create_dir_all(tmp.path().join("spilled")).expect("dir");
    let o = run_ok(
        join_cmd(
            &ent,
            &offline,
            &tmp.path().join("spilled").join("train.parquet"),
        )
        .args(TWO_GROUPS)
        .args(["--memory-limit", "64KB"]),
    );
    let s2: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json summary");
    assert!(s2["partitions"].as_u64().unwrap_or(0) > 1, "{s2}");
    assert_eq!(s2["groups"], summary["groups"]);
    let spilled = crate::util::read_rows(&tmp.path().join("spilled"));
    let strip = |mut r: serde_json::Map<String, serde_json::Value>| {
        r.remove("_file");
        r
    };
    assert_eq!(
        spilled.into_iter().map(strip).collect::<Vec<_>>(),
        rows.iter().cloned().map(strip).collect::<Vec<_>>()
    );
    assert!(
        std::fs::read_dir(tmp.path().join("spilled"))
            .expect("dir")
            .count()
            == 1,
        "spill files are removed"
    );

    // Errors name what is wrong, and leave no output behind.
    let x = tmp.path().join("x.parquet");
    let fails = |entities: &std::path::Path, args: &[&str]| {
        let o = join_cmd(entities, &offline, &x)
            .args(args)
            .output()
            .expect("runs");
        assert!(!o.status.success(), "{args:?} should fail");
        String::from_utf8_lossy(&o.stderr).to_string()
    };
    assert!(fails(&ent, &["--group", "nope"]).contains("unknown feature group \"nope\""));
    assert!(fails(&ent, &["--group", "user_spend_5m:tx_cnt"]).contains("no feature \"tx_cnt\""));
    assert!(fails(
        &ent,
        &["--group", "user_spend_5m", "--timestamp-column", "ts"]
    )
    .contains("\"ts\" is missing"));
    let bad = tmp.path().join("nulls.csv");
    std::fs::write(
        &bad,
        "user_id,event_timestamp\nu1,2026-01-05T00:00:00Z\nu2,\nu3,\n",
    )
    .expect("csv");
    let msg = fails(&bad, &["--group", "user_spend_5m"]);
    assert!(msg.contains("2 null value(s), the first at row 1"), "{msg}");
    let ints = tmp.path().join("ints.csv");
    std::fs::write(&ints, "user_id,event_timestamp\n1,2026-01-05T00:00:00Z\n").expect("csv");
    let msg = fails(&ints, &["--group", "user_spend_5m"]);
    assert!(msg.contains("key type mismatch for \"user_id\""), "{msg}");
    let garbage = tmp.path().join("garbage.parquet");
    std::fs::write(&garbage, b"PAR1 this is not parquet at all").expect("file");
    let msg = fails(&garbage, &["--group", "user_spend_5m"]);
    assert!(
        msg.contains("garbage.parquet: not a readable Parquet file"),
        "{msg}"
    );
    let msg = fails(
        &tmp.path().join("absent.csv"),
        &["--group", "user_spend_5m"],
    );
    assert!(msg.contains("absent.csv"), "{msg}");
    let msg = fails(
        &ints,
        &["--group", "user_spend_5m", "--memory-limit", "1KB"],
    );
    assert!(
        msg.contains("key type mismatch for \"user_id\""),
        "partitioned path too: {msg}"
    );
    assert!(!tmp.path().join("x.parquet").exists(), "no partial output");
}
