//! `rill validate`: good files pass, broken ones are refused with file:line:column.

use crate::util::*;

#[test]
fn example_pipelines_validate() {
    run_ok(rill().arg("validate").arg(repo("pipelines")));
    run_ok(rill().arg("validate").arg(repo("benches/pipelines")));
}

#[test]
fn broken_files_are_refused_with_positions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = std::fs::read_to_string(repo("pipelines/user_spend_5m.yaml")).expect("example");
    let cases = [
        (
            "unknown_field.yaml",
            good.replace("  allowed_lateness: 10m", "  allowed_latenes: 10m"),
            ":15:3: unknown field `allowed_latenes`",
        ),
        (
            "bad_duration.yaml",
            good.replace("size: 5m", "size: 5 mins"),
            ":14:21: tumbling size: invalid duration",
        ),
        (
            "bad_ref.yaml",
            good.replace(
                "expr: amount_max - amount_min",
                "expr: amount_max - amount_mn",
            ),
            ":28:33: expr refers to unknown feature \"amount_mn\"",
        ),
        (
            "dup.yaml",
            good.replace("name: amount_mean", "name: amount_sum"),
            ":23:13: duplicate feature name \"amount_sum\"",
        ),
        (
            "wrong_type.yaml",
            good.replace("version: 1", "version: [1]"),
            ":1:10:",
        ),
    ];
    for (name, text, want) in &cases {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        let out = rill().arg("validate").arg(&path).output().expect("runs");
        assert!(!out.status.success(), "{name} must be refused");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("{}{want}", path.display())),
            "{name}: {err}"
        );
    }
}

#[test]
fn two_groups_with_one_name_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = std::fs::read_to_string(repo("pipelines/user_spend_5m.yaml")).expect("example");
    std::fs::write(dir.path().join("a.yaml"), &good).expect("write");
    std::fs::write(dir.path().join("b.yaml"), &good).expect("write");
    let out = rill()
        .arg("validate")
        .arg(dir.path())
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("b.yaml:2:7: feature group name \"user_spend_5m\" is already used by"),
        "{err}"
    );
}

#[test]
fn validate_refuses_what_run_would_refuse() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = std::fs::read_to_string(repo("pipelines/user_spend_5m.yaml")).expect("example");
    let kafka =
        r#"kafka: { brokers: "localhost:9092", topic: transactions, group_id: rill-user-spend }"#;
    assert!(good.contains(kafka));
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").expect("write");
    let cases = [
        (
            "start.yaml",
            good.replace(kafka, &kafka.replace(" }", ", start: yesterday }")),
            ":8:",
            "unknown start policy \"yesterday\"",
        ),
        (
            "brokers.yaml",
            good.replace("localhost:9092", "localhost"),
            ":8:",
            "expected host:port",
        ),
        (
            "redis.yaml",
            good.replace("redis://127.0.0.1:6379", "http://127.0.0.1:6379"),
            ":",
            "invalid Redis URL",
        ),
        (
            "path.yaml",
            good.replace("path: ./features", &format!("path: {}", file.display())),
            ":",
            "is not a directory",
        ),
        (
            "env.yaml",
            good.replace(
                r#"  online: { redis: { url: "redis://127.0.0.1:6379", ttl: 7d } }"#,
                "  online:\n    redis:\n      url: redis://:${RILL_TEST_UNSET_VARIABLE}@127.0.0.1:6379\n",
            ),
            ":32:12:",
            "environment variable RILL_TEST_UNSET_VARIABLE is not set",
        ),
    ];
    for (name, text, at, want) in &cases {
        assert_ne!(text, &good, "{name}: the example changed; update this test");
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        let out = rill()
            .arg("validate")
            .arg(&path)
            .env_remove("RILL_TEST_UNSET_VARIABLE")
            .output()
            .expect("runs");
        assert!(!out.status.success(), "{name} must be refused");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("{}{at}", path.display())) && err.contains(want),
            "{name}: {err}"
        );
    }
}
