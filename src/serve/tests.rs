use super::api::*;
use serde_json::Value;

#[test]
fn hand_written_json_equals_serde() {
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
                    mk(Value::from(3), "present", Some(1_700_000_000_000_000), Some(1_234_567)),
                    mk(Value::from("x\ny"), "present", Some(1_700_000_000_000_000), Some(1_234_567)),
                    mk(Value::Null, "missing", None, None),
                ],
            ),
            (
                serde_json::json!({"user_id": 7}),
                vec![
                    mk(Value::from(1.5), "expired", Some(1_700_000_000_123_000), Some(99)),
                    mk(Value::Null, "missing", Some(1_700_000_000_123_000), Some(99)),
                    mk(Value::from(false), "present", Some(1_600_000_000_000_001), Some(5)),
                ],
            ),
        ],
    );
    let hand: Value = serde_json::from_slice(&r.to_json()).expect("valid JSON");
    let serde: Value = serde_json::to_value(&r).expect("serialisable");
    assert_eq!(hand, serde);
    assert_eq!(hand["results"][0]["features"]["g:b\"q"]["value"], "x\ny");
    assert_eq!(hand["results"][1]["features"]["h:c"]["window_start"], "2020-09-13T12:26:40.000001Z");
}
