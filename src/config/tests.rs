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
fn hopping_is_refused_clearly() {
    let e = err(&BASE.replace("tumbling: { size: 5m }", "hopping: { size: 5m, slide: 1m }"));
    assert!(e.message.contains("hopping"), "{e}");
    assert_eq!(e.line, 7, "{e}");
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
