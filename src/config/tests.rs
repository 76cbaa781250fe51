use super::*;

fn err(yaml: &str) -> ConfigError {
    Pipeline::from_yaml(yaml, "p.yaml").expect_err("must be refused")
}

const BASE: &str = r#"version: 1
name: g
source:
  key: [user_id]
  event_time: { field: ts, format: epoch_millis }
window:
  tumbling: { size: 5m }
features:
  - { name: n, agg: count }
"#;

#[test]
fn the_example_pipeline_validates() {
    let p = Pipeline::from_file(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/pipelines/user_spend_5m.yaml"
    )))
    .expect("valid");
    assert_eq!(p.name, "user_spend_5m");
    assert_eq!(
        p.window,
        WindowKind::Tumbling {
            size: 300_000_000,
            offset: 0
        }
    );
    assert_eq!(p.allowed_lateness, 600_000_000);
    assert_eq!(p.early_every, Some(60_000_000));
    assert_eq!(p.late, LateTrigger::EveryEvent);
    assert_eq!(p.max_out_of_orderness, 30_000_000);
    assert_eq!(p.features.len(), 8);
    assert_eq!(
        p.redis.as_ref().and_then(|r| r.ttl),
        Some(7 * 86_400_000_000)
    );
}

#[test]
fn minimal_pipeline_defaults() {
    let p = Pipeline::from_yaml(BASE, "p.yaml").expect("valid");
    assert_eq!(p.accumulation, Accumulation::Accumulating);
    assert_eq!(p.late, LateTrigger::None);
    assert_eq!(p.allowed_lateness, 0);
    assert_eq!(p.max_future, 3_600_000_000);
}

#[test]
fn unknown_field_is_located() {
    let e = err(&BASE.replace("window:\n", "window:\n  sise: 3\n"));
    assert_eq!((e.line, e.file.as_str()), (7, "p.yaml"), "{e}");
    assert!(e.message.contains("sise"), "{e}");
}

#[test]
fn bad_duration_is_located() {
    let e = err(&BASE.replace("size: 5m", "size: 5 minutes"));
    assert_eq!((e.line, e.column), (7, 21), "{e}");
    assert!(e.message.contains("invalid duration"), "{e}");
}

#[test]
fn wrong_type_is_located() {
    let e = err(&BASE.replace("version: 1", "version: one"));
    assert_eq!(
        e.to_string(),
        "p.yaml:1:10: expected a non-negative integer"
    );
    let e = err("version: 1\nname: x\n");
    assert!(e.message.contains("missing field `source`"), "{e}");
}

#[test]
fn duplicate_and_unknown_features() {
    let e = err(&format!("{BASE}  - {{ name: n, agg: sum, field: x }}\n"));
    assert_eq!(e.line, 10, "{e}");
    assert!(e.message.contains("duplicate feature name"), "{e}");
    let e = err(&format!("{BASE}  - {{ name: r, expr: n / missing }}\n"));
    assert_eq!(e.line, 10, "{e}");
    assert!(e.message.contains("unknown feature \"missing\""), "{e}");
    let e = err(&format!("{BASE}  - {{ name: r, agg: median, field: x }}\n"));
    assert!(e.message.contains("unknown aggregate"), "{e}");
    let e = err(&format!(
        "{BASE}  - {{ name: a, expr: b + 1 }}\n  - {{ name: b, expr: a * 2 }}\n"
    ));
    assert!(e.message.contains("depends on itself"), "{e}");
}

#[test]
fn session_and_retracting() {
    let y = BASE.replace("tumbling: { size: 5m }", "session: { gap: 30m }")
        + "accumulation: accumulating_and_retracting\n";
    let p = Pipeline::from_yaml(&y, "p.yaml").expect("valid");
    assert_eq!(p.window, WindowKind::Session { gap: 1_800_000_000 });
    assert_eq!(p.accumulation, Accumulation::AccumulatingAndRetracting);
    let e = err(&(BASE.to_string() + "accumulation: sometimes\n"));
    assert_eq!(e.line, 10, "{e}");
}

#[test]
fn hopping_windows_are_checked() {
    let ok = Pipeline::from_yaml(
        &BASE.replace(
            "tumbling: { size: 5m }",
            "hopping: { size: 30d, slide: 1h, offset: 90m }",
        ),
        "p.yaml",
    )
    .expect("valid hopping window");
    assert_eq!(
        ok.window,
        WindowKind::Hopping {
            size: 30 * 86_400_000_000,
            slide: 3_600_000_000,
            offset: 1_800_000_000
        }
    );
    let e = err(&BASE.replace("tumbling: { size: 5m }", "hopping: { size: 5m, slide: 2m }"));
    assert!(e.message.contains("not a whole multiple of slide"), "{e}");
    assert_eq!((e.line, e.column), (7, 20), "{e}");
    let e = err(&BASE.replace("tumbling: { size: 5m }", "hopping: { size: 5m }"));
    assert!(e.message.contains("slide"), "{e}");
    let e = err(&BASE.replace(
        "tumbling: { size: 5m }",
        "tumbling: { size: 5m }\n  hopping: { size: 5m, slide: 1m }",
    ));
    assert!(e.message.contains("one window kind"), "{e}");
}

#[test]
fn new_aggregates_take_their_parameters() {
    let with = |f: &str| BASE.replace("  - { name: n, agg: count }", f);
    let p = Pipeline::from_yaml(
        &with("  - { name: med, agg: quantile, field: amount, q: 0.5 }\n  - { name: u, agg: count_distinct, field: m, exact_up_to: 50 }\n  - { name: cats, agg: collect_set, field: c, max: 3 }\n  - { name: per, expr: n_or_zero }"),
        "p.yaml",
    );
    assert!(p.is_err(), "unknown feature in expr");
    let p = Pipeline::from_yaml(
        &with("  - { name: med, agg: quantile, field: amount, q: 0.5 }\n  - { name: u, agg: count_distinct, field: m, exact_up_to: 50 }\n  - { name: cats, agg: collect_set, field: c, max: 3 }\n  - { name: span, expr: window_end - window_start }\n  - { name: age_ms, on_read: now - window_end }"),
        "p.yaml",
    )
    .expect("valid");
    let names: Vec<&str> = p.features.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["med", "u", "cats", "cats_cut", "span"]);
    assert_eq!(p.features[2].output_type(), ValueType::StringList);
    assert_eq!(p.on_read.len(), 1);
    let e = err(&with("  - { name: med, agg: quantile, field: amount }"));
    assert!(e.message.contains("needs `q:`"), "{e}");
    let e = err(&with(
        "  - { name: med, agg: quantile, field: amount, q: 1.5 }",
    ));
    assert!(e.message.contains("from 0 to 1"), "{e}");
    let e = err(&with("  - { name: s, agg: sum, field: amount, max: 3 }"));
    assert!(e.message.contains("does not apply"), "{e}");
    let e = err(&with(
        "  - { name: cats, agg: collect_set, field: c }\n  - { name: cats_cut, agg: count }",
    ));
    assert!(e.message.contains("duplicate feature name"), "{e}");
    let e = err(&with("  - { name: a, on_read: now - missing }"));
    assert!(e.message.contains("unknown feature"), "{e}");
    let e = err(&with(
        "  - { name: a, on_read: now }\n  - { name: b, expr: a + 1 }",
    ));
    assert!(e.message.contains("computed when read"), "{e}");
}

#[test]
fn key_types_are_declared_per_key_field() {
    let p = Pipeline::from_yaml(
        &BASE.replace(
            "  key: [user_id]",
            "  key: [user_id]\n  key_types: { user_id: int }",
        ),
        "p.yaml",
    )
    .expect("valid");
    assert_eq!(p.key_types, vec![KeyType::Int]);
    let e = err(&BASE.replace(
        "  key: [user_id]",
        "  key: [user_id]\n  key_types: { uid: int }",
    ));
    assert!(e.message.contains("not a key field"), "{e}");
    let e = err(&BASE.replace(
        "  key: [user_id]",
        "  key: [user_id]\n  key_types: { user_id: uuid }",
    ));
    assert!(e.message.contains("expected string or int"), "{e}");
}

#[test]
fn empty_file_is_refused() {
    let e = err("");
    assert_eq!(e.file, "p.yaml");
}

mod never_panics {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any text, and any cut or splice of a valid file, gives a pipeline or
        /// a located error: never a panic.
        #[test]
        fn arbitrary_yaml(text in "\\PC{0,200}", cut in 0usize..2000, splice in "[ :{}\\[\\],'\"#\\n-]{0,5}") {
            let _ = Pipeline::from_yaml(&text, "fuzz.yaml");
            let good = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/pipelines/user_spend_5m.yaml")).expect("example");
            let mut at = cut % good.len();
            while !good.is_char_boundary(at) {
                at -= 1;
            }
            let mutated = format!("{}{}{}", &good[..at], splice, &good[at..]);
            if let Err(e) = Pipeline::from_yaml(&mutated, "fuzz.yaml") {
                prop_assert!(e.line >= 1 && e.column >= 1, "{e}");
                prop_assert!(e.to_string().starts_with("fuzz.yaml:"));
            }
        }
    }
}

#[test]
fn parquet_compression_choices() {
    assert_eq!(
        Pipeline::from_yaml(BASE, "p.yaml")
            .expect("valid")
            .parquet_compression,
        ParquetCompression::Lz4
    );
    for (name, want) in [
        ("lz4", ParquetCompression::Lz4),
        ("snappy", ParquetCompression::Snappy),
        ("zstd", ParquetCompression::Zstd),
        ("none", ParquetCompression::None),
    ] {
        let y = format!(
            "{BASE}sinks:\n  offline: {{ parquet: {{ path: /tmp/x, compression: {name} }} }}\n"
        );
        let p = Pipeline::from_yaml(&y, "p.yaml").expect("valid");
        assert_eq!(p.parquet_compression, want, "{name}");
    }
    let e = err(&format!(
        "{BASE}sinks:\n  offline: {{ parquet: {{ path: /tmp/x, compression: brotli }} }}\n"
    ));
    assert_eq!((e.line, e.column), (11, 52), "{e}");
    assert!(e.message.contains("lz4, snappy, zstd or none"), "{e}");
}
