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

fn with_env(yaml: &str, env: &[(&str, &str)]) -> Result<Pipeline, ConfigError> {
    let env = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Pipeline::from_yaml_with_env(yaml, "p.yaml", env)
}

const KAFKA: &str = r#"version: 1
name: g
source:
  kafka:
    brokers: broker-1.example.com:9093,broker-2.example.com:9093
    topic: events
    group_id: rill-g
    security:
      protocol: sasl_ssl
      sasl:
        mechanism: SCRAM-SHA-512
        username: ${KAFKA_USER}
        password: ${KAFKA_PASSWORD}
  key: [user_id]
  event_time: { field: ts, format: epoch_millis }
window:
  tumbling: { size: 5m }
features:
  - { name: n, agg: count }
sinks:
  online:
    redis:
      url: rediss://default:${REDIS_PASSWORD}@cache.example.com:6380
"#;

#[test]
fn environment_variables_fill_plain_scalars() {
    let p = with_env(
        KAFKA,
        &[
            ("KAFKA_USER", "svc-rill"),
            ("KAFKA_PASSWORD", "kp-s3cr3t"),
            ("REDIS_PASSWORD", "rp-s3cr3t"),
        ],
    )
    .expect("valid");
    let k = p.kafka.as_ref().unwrap();
    assert_eq!(k.security.protocol, KafkaProtocol::SaslSsl);
    let sasl = k.security.sasl.as_ref().unwrap();
    assert_eq!(sasl.mechanism, "SCRAM-SHA-512");
    assert_eq!(sasl.username.as_deref(), Some("svc-rill"));
    assert_eq!(sasl.password.as_ref().unwrap().expose(), "kp-s3cr3t");
    let r = p.redis.as_ref().unwrap();
    assert_eq!(
        r.endpoint.url,
        "rediss://default:rp-s3cr3t@cache.example.com:6380"
    );
    assert_eq!(
        r.endpoint.display(),
        "rediss://default:***@cache.example.com:6380"
    );
    // No printed form of the pipeline holds a secret.
    let shown = format!("{p:?}");
    assert!(!shown.contains("kp-s3cr3t"), "{shown}");
    #[cfg(feature = "kafka")]
    {
        let cfg = crate::source::kafka::client_config(k, &k.brokers);
        let described = crate::source::kafka::describe(&cfg).join("\n");
        assert!(described.contains("sasl.password = ***"), "{described}");
        assert!(
            described.contains("security.protocol = sasl_ssl"),
            "{described}"
        );
        assert!(!described.contains("kp-s3cr3t"), "{described}");
        assert_eq!(cfg.get("sasl.password"), Some("kp-s3cr3t"));
    }
}

#[test]
fn a_missing_variable_is_named_and_located() {
    let e = with_env(KAFKA, &[("KAFKA_USER", "u"), ("REDIS_PASSWORD", "rp")]).unwrap_err();
    assert_eq!((e.line, e.column), (13, 19), "{e}");
    assert!(e.message.contains("KAFKA_PASSWORD"), "{e}");
    assert!(e.message.contains("not set"), "{e}");
}

#[test]
fn a_substituted_value_cannot_add_yaml() {
    // A value with YAML syntax in it stays one string.
    let injected = "x\nsinks: { online: { redis: { url: redis://evil:1 } } }";
    let y = BASE.replace("name: g", "name: g\ndescription: ${DESC}");
    let p = with_env(&y, &[("DESC", injected)]).expect("valid");
    assert_eq!(p.description.as_deref(), Some(injected));
    assert!(p.redis.is_none());
    // Quoted, `${...}` is kept as written.
    let y = BASE.replace("name: g", "name: g\ndescription: \"${DESC}\"");
    let p = with_env(&y, &[]).expect("valid");
    assert_eq!(p.description.as_deref(), Some("${DESC}"));
}

#[test]
fn secret_files_are_read_and_their_errors_are_located() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("pw");
    std::fs::write(&f, "file-s3cr3t\n").unwrap();
    let y = KAFKA.replace(
        "        password: ${KAFKA_PASSWORD}",
        &format!("        password_file: {}", f.display()),
    );
    let p = with_env(&y, &[("KAFKA_USER", "u"), ("REDIS_PASSWORD", "rp")]).expect("valid");
    let sasl = p.kafka.unwrap().security.sasl.unwrap();
    assert_eq!(sasl.password.unwrap().expose(), "file-s3cr3t");

    let y = KAFKA.replace(
        "        password: ${KAFKA_PASSWORD}",
        "        password_file: /nonexistent/pw",
    );
    let e = with_env(&y, &[("KAFKA_USER", "u"), ("REDIS_PASSWORD", "rp")]).unwrap_err();
    assert_eq!(e.line, 13, "{e}");
    assert!(e.message.contains("cannot read password_file"), "{e}");

    let y = KAFKA.replace(
        "        password: ${KAFKA_PASSWORD}",
        "        password: a\n        password_file: /x",
    );
    let e = with_env(&y, &[("KAFKA_USER", "u"), ("REDIS_PASSWORD", "rp")]).unwrap_err();
    assert!(e.message.contains("not both"), "{e}");
}

#[test]
fn security_settings_are_checked() {
    let env = [
        ("KAFKA_USER", "u"),
        ("KAFKA_PASSWORD", "p"),
        ("REDIS_PASSWORD", "r"),
    ];
    let e = with_env(&KAFKA.replace("protocol: sasl_ssl", "protocol: tls"), &env).unwrap_err();
    assert!(e.message.contains("unknown security protocol"), "{e}");
    assert_eq!(e.line, 9, "{e}");
    let e = with_env(&KAFKA.replace("SCRAM-SHA-512", "SCRAM-MD5"), &env).unwrap_err();
    assert!(e.message.contains("unknown sasl mechanism"), "{e}");
    let e = with_env(&KAFKA.replace("protocol: sasl_ssl", "protocol: ssl"), &env).unwrap_err();
    assert!(e.message.contains("needs protocol sasl_ssl"), "{e}");
    let e = with_env(
        &KAFKA.replace("        username: ${KAFKA_USER}\n", ""),
        &env,
    )
    .unwrap_err();
    assert!(e.message.contains("needs username and password"), "{e}");
    let e = with_env(
        &KAFKA.replace(
            "      protocol: sasl_ssl",
            "      protocol: ssl\n      ca_file: /nonexistent/ca.pem",
        ),
        &env,
    )
    .unwrap_err();
    assert!(e.message.contains("cannot read ca_file"), "{e}");
    let e = with_env(
        &KAFKA.replace("mechanism: SCRAM-SHA-512", "mechanism: GSSAPI"),
        &env,
    );
    if !cfg!(feature = "gssapi") {
        assert!(e.unwrap_err().message.contains("gssapi feature"));
    }
}

#[test]
fn start_policies_brokers_and_urls_are_checked_before_running() {
    let env = [
        ("KAFKA_USER", "u"),
        ("KAFKA_PASSWORD", "p"),
        ("REDIS_PASSWORD", "r"),
    ];
    let at = "    group_id: rill-g\n";
    for (start, ok) in [
        ("earliest", true),
        ("latest", true),
        ("{ timestamp: 2024-01-01T00:00:00Z }", true),
        ("yesterday", false),
        ("{ timestamp: yesterday }", false),
        ("{ offset: 5 }", false),
        ("3", false),
    ] {
        let y = KAFKA.replace(at, &format!("{at}    start: {start}\n"));
        let r = with_env(&y, &env);
        assert_eq!(r.is_ok(), ok, "{start}: {:?}", r.err());
        if let Err(e) = r {
            assert_eq!((e.line, e.column), (8, 12), "{e}");
        }
    }
    let p = with_env(
        &KAFKA.replace(at, &format!("{at}    start: latest\n")),
        &env,
    )
    .unwrap();
    assert_eq!(p.kafka.unwrap().start, StartPolicy::Latest);
    for brokers in [
        "",
        "broker",
        "broker:x",
        "broker:0",
        "a:1,,b:2",
        "bad host:9092",
    ] {
        let y = KAFKA.replace(
            "brokers: broker-1.example.com:9093,broker-2.example.com:9093",
            &format!("brokers: \"{brokers}\""),
        );
        let e = with_env(&y, &env).expect_err(brokers);
        assert_eq!(e.line, 5, "{brokers}: {e}");
    }
    for url in ["http://cache:6379", "redis://cache:notaport", "cache:6379"] {
        let y = KAFKA.replace(
            "rediss://default:${REDIS_PASSWORD}@cache.example.com:6380",
            url,
        );
        let e = with_env(&y, &env).expect_err(url);
        assert_eq!(e.line, 23, "{url}: {e}");
        assert!(e.message.contains("invalid Redis URL"), "{e}");
    }
    // A bad URL's message does not repeat its password.
    let y = KAFKA.replace(
        "rediss://default:${REDIS_PASSWORD}@cache.example.com:6380",
        "redis://default:${REDIS_PASSWORD}@cache:badport",
    );
    let e = with_env(
        &y,
        &env[..2]
            .iter()
            .chain([("REDIS_PASSWORD", "pw-leak-check")].iter())
            .cloned()
            .collect::<Vec<_>>(),
    )
    .unwrap_err();
    assert!(!e.to_string().contains("pw-leak-check"), "{e}");
    // Paths: a sink directory that is a file is refused.
    let file = tempfile::NamedTempFile::new().unwrap();
    let y = format!(
        "{BASE}sinks:\n  offline:\n    parquet: {{ path: {} }}\n",
        file.path().display()
    );
    let e = with_env(&y, &[]).unwrap_err();
    assert!(e.message.contains("is not a directory"), "{e}");
    assert_eq!(e.line, 12, "{e}");
}

#[test]
fn names_follow_a_grammar_safe_in_paths_keys_and_urls() {
    for bad in [
        "user/spend",
        "a b",
        "_private",
        "1st",
        "a:b",
        "a{b}",
        "é",
        &"x".repeat(65),
    ] {
        let e = err(&BASE.replace("name: g", &format!("name: \"{bad}\"")));
        assert!(e.message.contains("invalid name"), "{bad}: {e}");
    }
    for bad in ["n-1", "a.b", "1n", "a:b"] {
        let e = err(&BASE.replace("{ name: n,", &format!("{{ name: \"{bad}\",")));
        assert!(e.message.contains("invalid feature name"), "{bad}: {e}");
    }
    let y = format!(
        "{BASE}sinks:\n  online:\n    redis: {{ url: \"redis://h:1\", key_prefix: \"a:{{b\" }}\n"
    );
    assert!(err(&y).message.contains("invalid key_prefix"));
}

#[test]
fn hostile_yaml_is_refused_quickly() {
    // A billion laughs under a field that takes any value: ten levels of
    // ten aliases each.
    let mut y = String::from(
        "version: 1\nname: g\nsource:\n  kafka:\n    brokers: a:1\n    topic: t\n    group_id: g\n    start:\n      a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n",
    );
    for i in 1..10 {
        let prev = format!("*a{}", i - 1);
        let list = vec![prev.as_str(); 10].join(", ");
        y.push_str(&format!("      a{i}: &a{i} [{list}]\n"));
    }
    y.push_str(&BASE["version: 1\nname: g\nsource:\n".len()..]);
    let started = std::time::Instant::now();
    let e = err(&y);
    let took = started.elapsed();
    assert!(e.line >= 1, "{e}");
    assert!(
        e.message.contains("budget") || e.message.contains("alias") || e.message.contains("limit"),
        "{e}"
    );
    // Not a timing assertion on speed: a refusal within a minute rather
    // than an expansion that never ends.
    assert!(took < std::time::Duration::from_secs(60));
    // Deep nesting.
    let deep = format!(
        "version: 1\nname: g\nsource:\n  kafka:\n    brokers: a:1\n    topic: t\n    group_id: g\n    start: {}x{}\n{}",
        "[".repeat(200),
        "]".repeat(200),
        &BASE["version: 1\nname: g\nsource:\n".len()..]
    );
    let e = err(&deep);
    assert!(
        e.message.contains("depth") || e.message.contains("nest") || e.message.contains("limit"),
        "{e}"
    );
    // Size.
    let big = format!("{BASE}description: {}\n", "x".repeat(MAX_FILE_BYTES));
    assert!(err(&big).message.contains("at most"));
}

#[test]
fn a_redis_cluster_is_given_by_seed_nodes_and_refuses_a_database_index() {
    let online = |redis: &str| format!("{BASE}sinks:\n  online:\n    redis: {redis}\n");
    // A list of seed nodes and the equivalent cluster URL.
    let p = Pipeline::from_yaml(
        &online("{ cluster: [\"redis://u:pw@h1:7000\", \"redis://u:pw@h2:7001/\"] }"),
        "p.yaml",
    )
    .unwrap();
    let ep = &p.redis.as_ref().unwrap().endpoint;
    assert_eq!(ep.url, "redis+cluster://u:pw@h1:7000,h2:7001");
    assert_eq!(
        ep.cluster_nodes().unwrap().unwrap(),
        ["redis://u:pw@h1:7000", "redis://u:pw@h2:7001"]
    );
    let p = Pipeline::from_yaml(
        &online("{ url: \"rediss+cluster://h1:7000,h2:7001\" }"),
        "p.yaml",
    )
    .unwrap();
    let ep = &p.redis.as_ref().unwrap().endpoint;
    assert_eq!(
        ep.cluster_nodes().unwrap().unwrap(),
        ["rediss://h1:7000", "rediss://h2:7001"]
    );
    // A single server is not a cluster.
    let p = Pipeline::from_yaml(&online("{ url: \"redis://h1:6379/2\" }"), "p.yaml").unwrap();
    assert!(p.redis.as_ref().unwrap().endpoint.cluster_nodes().is_none());
    // Refusals, located at the offending value.
    for (redis, line, col, says) in [
        (
            "{ cluster: [\"redis://h1:7000/3\"] }",
            12,
            24,
            "no database index",
        ),
        (
            "{ url: \"redis+cluster://h1:7000,h2:7001/1\" }",
            12,
            19,
            "no database index",
        ),
        ("{ cluster: [] }", 12, 23, "at least one seed node"),
        (
            "{ cluster: [\"redis://h1:7000\", \"rediss://h2:7001\"] }",
            12,
            43,
            "same scheme",
        ),
        (
            "{ cluster: [\"redis://a:x@h1:7000\", \"redis://b:y@h2:7001\"] }",
            12,
            47,
            "same user",
        ),
        (
            "{ cluster: [\"http://h1:7000\"] }",
            12,
            24,
            "invalid Redis URL",
        ),
        (
            "{ url: \"redis://h:1\", cluster: [\"redis://h:2\"] }",
            12,
            19,
            "not both",
        ),
        ("{ key_prefix: r }", 12, 12, "needs url"),
        (
            "{ cluster: [\"rediss://h1:7000\"], ca_file: /etc/hostname }",
            12,
            54,
            "not supported with a Redis Cluster",
        ),
    ] {
        let e = err(&online(redis));
        assert!(e.message.contains(says), "{redis}: {e}");
        assert!(!e.to_string().contains(":y@"), "{e}");
        assert_eq!((e.line, e.column), (line, col), "{redis}: {e}");
    }
}
