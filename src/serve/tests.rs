use super::api::*;
use serde_json::Value;

#[test]
fn the_answer_is_json_with_a_window_and_age_per_value() {
    // Two groups' worth of metadata, a missing hash, strings needing escapes.
    let mk = |v: Value, st: &'static str, ws: Option<i64>, age: Option<i64>| FeatureValue {
        value: v,
        status: st,
        window_start: ws,
        window_end: ws.map(|w| w + 300_000_000),
        emitted_at: ws.map(|w| w + 301_500_000),
        age,
    };
    let r = FeaturesResponse::for_tests(
        vec!["g:a".into(), "g:b\"q".into(), "h:c".into()],
        vec![
            (
                serde_json::json!({"user_id": "u\"1"}),
                vec![
                    mk(
                        Value::from(3),
                        "present",
                        Some(1_700_000_000_000_000),
                        Some(1_234_567),
                    ),
                    mk(
                        Value::from("x\ny"),
                        "present",
                        Some(1_700_000_000_000_000),
                        Some(1_234_567),
                    ),
                    mk(Value::Null, "missing", None, None),
                ],
            ),
            (
                serde_json::json!({"user_id": 7}),
                vec![
                    mk(
                        Value::from(1.5),
                        "expired",
                        Some(1_700_000_000_123_000),
                        Some(99),
                    ),
                    mk(
                        Value::Null,
                        "missing",
                        Some(1_700_000_000_123_000),
                        Some(99),
                    ),
                    mk(
                        Value::from(false),
                        "present",
                        Some(1_600_000_000_000_001),
                        Some(5),
                    ),
                ],
            ),
        ],
    );
    let got: Value = serde_json::from_slice(&r.to_json()).expect("valid JSON");
    let window = |start: &str, end: &str, emitted: &str, age: f64| serde_json::json!({"window_start": start, "window_end": end, "emitted_at": emitted, "age_seconds": age});
    let with = |v: Value, status: &str, w: &Value| {
        let mut o = w.clone();
        o["value"] = v;
        o["status"] = Value::from(status);
        o
    };
    let w1 = window(
        "2023-11-14T22:13:20Z",
        "2023-11-14T22:18:20Z",
        "2023-11-14T22:18:21.500Z",
        1.234567,
    );
    let w2 = window(
        "2023-11-14T22:13:20.123Z",
        "2023-11-14T22:18:20.123Z",
        "2023-11-14T22:18:21.623Z",
        0.000099,
    );
    let w3 = window(
        "2020-09-13T12:26:40.000001Z",
        "2020-09-13T12:31:40.000001Z",
        "2020-09-13T12:31:41.500001Z",
        0.000005,
    );
    let none = serde_json::json!({"window_start": null, "window_end": null, "emitted_at": null, "age_seconds": null});
    let want = serde_json::json!({
        "features": ["g:a", "g:b\"q", "h:c"],
        "results": [
            {"entity": {"user_id": "u\"1"}, "features": {
                "g:a": with(Value::from(3), "present", &w1),
                "g:b\"q": with(Value::from("x\ny"), "present", &w1),
                "h:c": with(Value::Null, "missing", &none),
            }},
            {"entity": {"user_id": 7}, "features": {
                "g:a": with(Value::from(1.5), "expired", &w2),
                "g:b\"q": with(Value::Null, "missing", &w2),
                "h:c": with(Value::from(false), "present", &w3),
            }},
        ]
    });
    assert_eq!(got, want);
    // Features keep the requested order.
    let text = String::from_utf8(r.to_json()).expect("utf-8");
    assert!(text.find("\"g:a\":").expect("a") < text.find("\"h:c\":").expect("c"));
}

mod freshness_tests {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    use crate::config::Pipeline;
    use crate::serve::freshness::*;
    use crate::time::{Clock, ManualClock};

    const MIN: i64 = 60_000_000;

    fn pipeline(sla: &str) -> Pipeline {
        Pipeline::from_yaml(
            &format!(
                r#"
version: 1
name: spend
source: {{ format: json, key: [user_id], event_time: {{ field: ts }} }}
window: {{ tumbling: {{ size: 5m }} }}
features: [{{ name: n, agg: count }}]
{sla}
"#
            ),
            "t.yaml",
        )
        .expect("valid")
    }

    #[test]
    fn sla_holds_while_the_watermark_lag_is_within_it() {
        let p = pipeline("freshness_sla: 10m");
        let t0 = 1_800_000_000_000_000;
        let r = Report {
            watermark: Some(t0),
            last_online_write: Some(t0 + 5 * MIN),
            last_offline_write: None,
            consumer_lag: Some(42),
            at: t0,
        };
        let f = evaluate(&p, Some(&r), t0 + 10 * MIN);
        assert_eq!(
            (f.status, f.sla_holds),
            ("fresh", Some(true)),
            "exactly at the SLA it holds"
        );
        assert_eq!(f.watermark_lag_seconds, Some(600.0));
        assert_eq!(f.seconds_since_online_write, Some(300.0));
        assert_eq!(f.seconds_since_offline_write, None);
        assert_eq!(f.consumer_lag, Some(42));
        let f = evaluate(&p, Some(&r), t0 + 10 * MIN + 1);
        assert_eq!((f.status, f.sla_holds), ("late", Some(false)));
        // No watermark yet: unknown, not a breach.
        let f = evaluate(&p, None, t0);
        assert_eq!((f.status, f.sla_holds), ("unknown", None));
        // No SLA declared: fresh once there is a watermark, never late.
        let f = evaluate(&pipeline(""), Some(&r), t0 + 1000 * MIN);
        assert_eq!((f.status, f.sla_holds), ("fresh", None));
    }

    #[test]
    fn a_breach_is_reported_once_when_it_starts_and_once_when_it_ends() {
        let p = pipeline("freshness_sla: 2m");
        let clock = ManualClock::new(1_800_000_000_000_000);
        let mut tracker = BreachTracker::default();
        let mut watermark = clock.now();
        let mut transitions = Vec::new();
        // Twenty seconds per step: the watermark stalls for 4 minutes, then catches up.
        for step in 0..40 {
            clock.advance(20_000_000);
            if !(10..22).contains(&step) {
                watermark = clock.now() - 30_000_000;
            }
            let r = Report {
                watermark: Some(watermark),
                at: clock.now(),
                ..Default::default()
            };
            let f = evaluate(&p, Some(&r), clock.now());
            if let Some(t) = tracker.observe(&f, clock.now()) {
                transitions.push((step, t));
            }
        }
        assert_eq!(transitions.len(), 2, "{transitions:?}");
        // The watermark last moved at step 9 (to 170 s after t0); at step 14
        // the clock reads 300 s, a lag of 130 s, past the 120 s SLA.
        match &transitions[0] {
            (
                14,
                Transition::BreachStarted {
                    pipeline,
                    lag_seconds,
                    sla_seconds,
                },
            ) => {
                assert_eq!(pipeline, "spend");
                assert_eq!(*lag_seconds, 130.0);
                assert_eq!(*sla_seconds, 120.0);
            }
            other => panic!("{other:?}"),
        }
        match &transitions[1] {
            (22, Transition::BreachEnded { lasted, .. }) => assert_eq!(*lasted, 8 * 20_000_000),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn published_reports_merge_live_instances_and_fall_back_to_the_newest() {
        let now = 1_800_000_000_000_000;
        let rep = |w: i64, lag: i64, at: i64| {
            serde_json::to_string(&Report {
                watermark: Some(w),
                last_online_write: Some(at - 1),
                last_offline_write: None,
                consumer_lag: Some(lag),
                at,
            })
            .expect("json")
        };
        // Two live instances: the slower watermark, the summed lag.
        let r = merge_published(
            &[
                rep(now - 5 * MIN, 10, now - 1),
                rep(now - 2 * MIN, 5, now - 2),
            ],
            now,
        )
        .expect("report");
        assert_eq!(r.watermark, Some(now - 5 * MIN));
        assert_eq!(r.consumer_lag, Some(15));
        assert_eq!(r.last_online_write, Some(now - 2));
        // A stopped instance's report is left out while others are live.
        let r = merge_published(
            &[
                rep(now - 50 * MIN, 10, now - 2 * REPORT_STALE_AFTER),
                rep(now - MIN, 1, now),
            ],
            now,
        )
        .expect("report");
        assert_eq!(r.watermark, Some(now - MIN));
        // Every instance gone: the newest report still shows how stale things are.
        let r = merge_published(
            &[
                rep(now - 50 * MIN, 10, now - 3 * REPORT_STALE_AFTER),
                rep(now - 40 * MIN, 1, now - 2 * REPORT_STALE_AFTER),
            ],
            now,
        )
        .expect("report");
        assert_eq!(r.watermark, Some(now - 40 * MIN));
        assert!(merge_published(&["not json".to_string()], now).is_none());
    }

    #[tokio::test]
    async fn the_service_judges_the_daemon_figures_by_its_clock() {
        let p = pipeline("freshness_sla: 10m");
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let pm = metrics.pipeline("spend");
        let t0 = 1_800_000_000_000_000;
        let clock = Arc::new(ManualClock::new(t0));
        let registry = Arc::new(crate::serve::registry::Registry::new(vec![p]).expect("registry"));
        let svc = crate::serve::routes::Service {
            api: Arc::new(crate::serve::api::ReadApi {
                registry,
                store: crate::serve::api::Store::Embedded(Default::default()),
                limits: Default::default(),
            }),
            freshness: crate::serve::routes::FreshnessSource::Metrics(metrics.clone()),
            clock: clock.clone(),
        };
        assert_eq!(svc.freshness().await[0].status, "unknown");
        pm.watermark_us.store(t0 - MIN, Ordering::Relaxed);
        pm.total_lag.store(7, Ordering::Relaxed);
        let f = &svc.freshness().await[0];
        assert_eq!(
            (f.status, f.watermark_lag_seconds, f.consumer_lag),
            ("fresh", Some(60.0), Some(7))
        );
        clock.advance(10 * MIN);
        assert_eq!(svc.freshness().await[0].status, "late");
    }
}

mod value_tests {
    use serde_json::{json, Value};

    use crate::config::ValueType;
    use crate::serve::api::{make_value, parse_value, row_meta};

    fn row(fields: &[Option<&str>]) -> Vec<Option<String>> {
        fields.iter().map(|f| f.map(str::to_string)).collect()
    }

    #[test]
    fn statuses_from_stored_hashes() {
        let now = 10_000_000_000;
        // [feature a, feature b, _window_start, _window_end, _emitted_at]
        let full = row(&[
            Some("4"),
            None,
            Some("9000000000"),
            Some("9300000000"),
            Some("9310000000"),
        ]);
        let m = row_meta(&full, 5);
        assert_eq!(
            m,
            (
                Some(9_000_000_000),
                Some(9_300_000_000),
                Some(9_310_000_000)
            )
        );
        let d = json!(0);
        let v = make_value(&full, 0, m, ValueType::Int, Some(&d), None, now);
        assert_eq!(
            (v.value.clone(), v.status, v.age),
            (json!(4), "present", Some(700_000_000))
        );
        let v = make_value(&full, 1, m, ValueType::Float, Some(&d), None, now);
        assert_eq!(
            (v.value, v.status),
            (json!(0), "missing"),
            "a null feature gets the default"
        );
        // Older than the limit: expired, with the default, the window still known.
        let v = make_value(
            &full,
            0,
            m,
            ValueType::Int,
            Some(&d),
            Some(600_000_000),
            now,
        );
        assert_eq!(
            (v.value, v.status, v.window_end),
            (json!(0), "expired", Some(9_300_000_000))
        );
        let v = make_value(&full, 0, m, ValueType::Int, None, Some(600_000_000), now);
        assert_eq!(v.value, Value::Null);
        // An early pane of an open window: its age runs from its emission.
        let early = row(&[
            Some("1"),
            None,
            Some("9900000000"),
            Some("10200000000"),
            Some("9950000000"),
        ]);
        let v = make_value(
            &early,
            0,
            row_meta(&early, 5),
            ValueType::Int,
            None,
            Some(60_000_000),
            now,
        );
        assert_eq!((v.status, v.age), ("present", Some(50_000_000)));
        // No hash at all.
        let none = row(&[None, None, None, None, None]);
        let v = make_value(
            &none,
            0,
            row_meta(&none, 5),
            ValueType::Int,
            Some(&d),
            Some(1),
            now,
        );
        assert_eq!(
            (v.value, v.status, v.window_end),
            (json!(0), "missing", None)
        );
        // A hash written without the window fields: served, without an age.
        let bare = row(&[Some("2.5"), None, None, None, None]);
        let v = make_value(
            &bare,
            0,
            row_meta(&bare, 5),
            ValueType::Float,
            None,
            Some(1),
            now,
        );
        assert_eq!((v.value, v.status, v.age), (json!(2.5), "present", None));
    }

    #[test]
    fn stored_text_becomes_the_feature_type() {
        assert_eq!(parse_value("42", ValueType::Int), json!(42));
        assert_eq!(parse_value("17.35", ValueType::Float), json!(17.35));
        assert_eq!(parse_value("12", ValueType::Float), json!(12.0));
        assert_eq!(parse_value("nan", ValueType::Float), json!("nan"));
        assert_eq!(parse_value("-inf", ValueType::Float), json!("-inf"));
        assert_eq!(parse_value("true", ValueType::Bool), json!(true));
        assert_eq!(parse_value("007", ValueType::String), json!("007"));
        assert_eq!(parse_value("7", ValueType::Inferred), json!(7));
        assert_eq!(parse_value("0.25", ValueType::Inferred), json!(0.25));
        assert_eq!(parse_value("007", ValueType::Inferred), json!("007"));
        assert_eq!(parse_value("1e3", ValueType::Inferred), json!("1e3"));
        assert_eq!(parse_value("false", ValueType::Inferred), json!(false));
        assert_eq!(parse_value("/home", ValueType::Inferred), json!("/home"));
    }
}

mod embedded_tests {
    use std::sync::Arc;

    use serde_json::json;

    use crate::config::Pipeline;
    use crate::serve::api::{parse_request, Limits, ReadApi, Store};
    use crate::serve::registry::Registry;
    use crate::sink::embedded::EmbeddedStore;
    use crate::sink::redis::{online_key_text, OnlineRow};

    /// `rill demo` serves from its in-process store with the same rules.
    #[tokio::test]
    async fn the_embedded_store_serves_like_redis() {
        let p = Pipeline::from_yaml(
            r#"
version: 1
name: g
source: { format: json, key: [user_id, shop], event_time: { field: ts } }
window: { tumbling: { size: 5m } }
features:
  - { name: n, agg: count, default: 0 }
  - { name: s, agg: sum, field: x }
sinks:
  online: { redis: { url: "redis://127.0.0.1:1", ttl: 1h } }
"#,
            "g.yaml",
        )
        .expect("valid");
        let store = Arc::new(EmbeddedStore::default());
        let row = |pane: u32, n: &str, end: i64| OnlineRow {
            key: online_key_text("rill", "g", &["u|1".into(), "7".into()]),
            window_start: end - 300_000_000,
            window_end: end,
            emitted_at: end,
            generation: 0,
            pane,
            fields: vec![("n".into(), n.into()), ("s".into(), "2.5".into())],
        };
        let now = 1_800_000_000_000_000;
        assert!(store.apply(&row(0, "3", now - 60_000_000)));
        // An older window never replaces a newer one.
        assert!(!store.apply(&row(5, "99", now - 400_000_000)));
        let api = ReadApi {
            registry: Arc::new(Registry::new(vec![p]).expect("registry")),
            store: Store::Embedded(store),
            limits: Limits::default(),
        };
        let req = parse_request(
            json!({"entities": [{"user_id": "u|1", "shop": 7}, {"user_id": "u|1", "shop": 8}], "features": ["g:*"]})
                .to_string()
                .as_bytes(),
        )
        .expect("request");
        let r = api.features(req, now).await.expect("answer");
        let v = r.get(0, "g:n").expect("value");
        assert_eq!(
            (v.value.clone(), v.status, v.age),
            (json!(3), "present", Some(60_000_000))
        );
        assert_eq!(r.get(0, "g:s").expect("value").value, json!(2.5));
        let v = r.get(1, "g:n").expect("value");
        assert_eq!((v.value.clone(), v.status), (json!(0), "missing"));
        // Past the ttl (1h), expired.
        let req =
            parse_request(br#"{"entities": [{"user_id": "u|1", "shop": 7}], "features": ["g:n"]}"#)
                .expect("request");
        let r = api
            .features(req, now + 3_600_000_000)
            .await
            .expect("answer");
        assert_eq!(r.get(0, "g:n").expect("value").status, "expired");
    }
}

/// Request-time features: the read API (now = the request time) and the
/// point-in-time join (now = the entity row's time) give the same value for
/// the same pane and the same now, through one shared function; a
/// collect_set is a list in both.
mod on_read_tests {
    use std::sync::Arc;

    use arrow_array::cast::AsArray;
    use arrow_array::types::Float64Type;
    use arrow_array::{Array, RecordBatch};
    use serde_json::json;

    use crate::aggregate::Value;
    use crate::config::Pipeline;
    use crate::engine::{PaneBuf, PaneMeta, Timing};
    use crate::event::EncodedKey;
    use crate::join::{FeatureTable, GroupSpec, Mode};
    use crate::plan::Plan;
    use crate::serve::api::{parse_request, Limits, ReadApi, Store};
    use crate::serve::registry::Registry;
    use crate::sink::embedded::EmbeddedStore;
    use crate::sink::redis::OnlineRow;

    #[tokio::test]
    async fn the_read_api_and_the_join_agree_on_request_time_features() {
        let p = Pipeline::from_yaml(
            r#"
version: 1
name: g
source: { format: json, key: [user_id], event_time: { field: ts } }
window: { hopping: { size: 2h, slide: 1h } }
features:
  - { name: n, agg: count }
  - { name: last_ms, agg: max, field: $event_time }
  - { name: cats, agg: collect_set, field: c }
  - { name: age_days, on_read: (now - last_ms) / 86400000 }
  - { name: to_end_ms, on_read: window_end - now }
sinks:
  online: { redis: { url: "redis://127.0.0.1:1" } }
"#,
            "g.yaml",
        )
        .expect("valid");
        let plan = Plan::new(&p);
        let end: i64 = 1_800_000_000_000_000;
        let meta = PaneMeta {
            key: {
                let mut k = Vec::new();
                crate::event::push_str_part(b"u1", &mut k);
                EncodedKey::new(&k)
            },
            window_start: end - 7_200_000_000,
            window_end: end,
            pane_index: 0,
            timing: Timing::OnTime,
            is_final: true,
            retraction: false,
            partition: 0,
            emitted_at: end,
            watermark: Some(end),
        };
        let values = vec![
            Value::Int(4),
            Value::Float(((end - 5_000_000_000) / 1000) as f64),
            Value::List(vec!["a".into(), "b".into()]),
            Value::Bool(false),
        ];
        // Online.
        let store = Arc::new(EmbeddedStore::default());
        let names: Vec<String> = p.features.iter().map(|f| f.name.clone()).collect();
        assert!(store.apply(&OnlineRow::of("rill", "g", &names, &meta, &values, 0)));
        let api = ReadApi {
            registry: Arc::new(Registry::new(vec![p.clone()]).expect("registry")),
            store: Store::Embedded(store),
            limits: Limits::default(),
        };
        let now = end + 86_400_000_000 + 123_456_000;
        let req = parse_request(
            json!({"entities": [{"user_id": "u1"}], "features": ["g:age_days", "g:to_end_ms", "g:cats"], "max_age": "100d"})
                .to_string()
                .as_bytes(),
        )
        .expect("request");
        let r = api.features(req, now).await.expect("answer");
        let online_age = r
            .get(0, "g:age_days")
            .expect("value")
            .value
            .as_f64()
            .expect("a number");
        let online_to_end = r
            .get(0, "g:to_end_ms")
            .expect("value")
            .value
            .as_f64()
            .expect("a number");
        assert_eq!(r.get(0, "g:cats").expect("value").value, json!(["a", "b"]));
        assert_eq!(
            online_age,
            (now / 1000 - (end - 5_000_000_000) / 1000) as f64 / 86_400_000.0
        );
        assert_eq!(online_to_end, ((end - now) / 1000) as f64);
        // Offline, through the sink's files and the join.
        let tmp = tempfile::tempdir().expect("tmp");
        let mut sink = crate::sink::parquet::ParquetSink::new(tmp.path(), &plan, "r1");
        let mut panes = PaneBuf::new(values.len());
        panes.push(meta, &values);
        sink.write(&mut panes).expect("write");
        sink.finish().expect("finish");
        let mut batches: Vec<RecordBatch> = Vec::new();
        for f in sink.files() {
            let file = std::fs::File::open(f).expect("file");
            let r = parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(file, 1024)
                .expect("parquet");
            batches.extend(r.map(|b| b.expect("batch")));
        }
        let spec = GroupSpec {
            name: "g".into(),
            keys: vec!["user_id".into()],
            features: Some(vec!["age_days".into(), "to_end_ms".into(), "cats".into()]),
            all_features: names.clone(),
            ttl: None,
            discarding: false,
            plan: Some(plan.clone()),
        };
        let table = FeatureTable::from_batches(spec, Mode::Final, &batches).expect("table");
        let entities = RecordBatch::try_from_iter(vec![(
            "user_id",
            Arc::new(arrow_array::StringArray::from(vec!["u1"])) as arrow_array::ArrayRef,
        )])
        .expect("entities");
        let (cols, matched) = table
            .features_for(&entities, &[now], &mut None)
            .expect("join");
        assert_eq!(matched, 1);
        assert_eq!(cols[0].as_primitive::<Float64Type>().value(0), online_age);
        assert_eq!(
            cols[1].as_primitive::<Float64Type>().value(0),
            online_to_end
        );
        let list = cols[2].as_list::<i32>();
        let inner = list.value(0);
        let got: Vec<&str> = (0..inner.len())
            .map(|i| inner.as_string::<i32>().value(i))
            .collect();
        assert_eq!(got, ["a", "b"]);
    }
}
