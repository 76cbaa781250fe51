//! The registry (`rill features ...`) over the shipped example pipelines,
//! and breaking-change detection (`rill validate --against`).

use std::path::Path;

use serde_json::Value;

use crate::util::{repo, rill, run_ok};

fn features_json(args: &[&str]) -> Value {
    let out = run_ok(
        rill()
            .arg("features")
            .arg("--dir")
            .arg(repo("pipelines"))
            .arg("--json")
            .args(args),
    );
    serde_json::from_slice(&out.stdout).expect("--json prints JSON")
}

fn ids(hits: &Value) -> Vec<String> {
    hits["hits"]
        .as_array()
        .expect("hits")
        .iter()
        .map(|h| h["id"].as_str().expect("id").to_string())
        .collect()
}

#[test]
fn list_and_describe_show_what_the_files_declare() {
    let v = features_json(&["list"]);
    let groups = v["groups"].as_array().expect("groups");
    let names: Vec<&str> = groups
        .iter()
        .map(|g| g["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        names,
        [
            "click_sessions",
            "user_category_1h",
            "user_spend_5m",
            "user_tx_30d"
        ]
    );
    let spend = &groups[2];
    assert_eq!(spend["owner"], "payments-ml@example.com");
    assert_eq!(spend["team"], "payments");
    assert_eq!(spend["tags"], serde_json::json!(["fraud", "spend"]));
    assert_eq!(spend["entity_keys"], serde_json::json!(["user_id"]));
    assert_eq!(spend["topic"], "transactions");
    assert_eq!(spend["window"], "tumbling 5m");
    assert_eq!(spend["freshness_sla"], "10m");
    assert_eq!(spend["version"], 1);
    assert_eq!(spend["features"].as_array().expect("features").len(), 8);

    // A request-time feature: computed when read, from the features it names.
    let d = features_json(&[
        "describe",
        "user_tx_30d:days_since_last_transaction",
        "--no-live",
    ]);
    assert_eq!(d["feature"]["kind"], "on_read", "{d}");
    assert_eq!(
        d["feature"]["depends_on"],
        serde_json::json!(["last_tx_ms"])
    );
    let tx = &groups[3];
    assert_eq!(tx["window"], "hopping 30d every 1h");
    let kinds: Vec<(&str, &str)> = tx["features"]
        .as_array()
        .expect("features")
        .iter()
        .map(|f| {
            (
                f["name"].as_str().expect("name"),
                f["type"].as_str().expect("type"),
            )
        })
        .collect();
    assert!(
        kinds.contains(&("categories_30d", "list<string>")),
        "{kinds:?}"
    );
    assert!(kinds.contains(&("categories_30d_cut", "bool")), "{kinds:?}");
    assert!(kinds.contains(&("hours_since_last", "float")), "{kinds:?}");

    let d = features_json(&["describe", "user_spend_5m:amount_range", "--no-live"]);
    assert_eq!(d["group"]["name"], "user_spend_5m");
    assert_eq!(d["feature"]["kind"], "derived");
    assert_eq!(
        d["feature"]["depends_on"],
        serde_json::json!(["amount_max", "amount_min"])
    );
    let d = features_json(&["describe", "user_spend_5m:amount_max", "--no-live"]);
    assert_eq!(d["feature"]["agg"], "max");
    assert_eq!(d["feature"]["field"], "amount");
    assert_eq!(d["feature"]["used_by"], serde_json::json!(["amount_range"]));
    // Freshness is part of describe; without a daemon it is unknown.
    let d = features_json(&[
        "describe",
        "click_sessions",
        "--redis",
        "redis://127.0.0.1:1",
    ]);
    assert!(
        d["freshness"].is_null(),
        "unreachable Redis: no live figures"
    );

    // Unknown names are errors that name them and what exists.
    let out = rill()
        .args(["features", "--dir"])
        .arg(repo("pipelines"))
        .args(["describe", "user_spend_5m:nope"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nope") && err.contains("amount_mean"), "{err}");
}

#[test]
fn search_ranks_names_above_tags_above_descriptions() {
    // A group named after the word comes before one only tagged with it.
    assert_eq!(
        ids(&features_json(&["search", "spend"]))[..2],
        ["user_spend_5m", "user_category_1h"]
    );
    // Feature names: both rates, nothing else.
    let rate = ids(&features_json(&["search", "rate"]));
    assert_eq!(
        rate,
        [
            "click_sessions:click_through_rate",
            "click_sessions:conversion_rate"
        ]
    );
    // Every word must match: "session" and "page" only meet in click_sessions' pages.
    let pages = ids(&features_json(&["search", "page", "session"]));
    assert!(
        pages.contains(&"click_sessions:landing_page".to_string()),
        "{pages:?}"
    );
    assert!(
        pages.contains(&"click_sessions:exit_page".to_string()),
        "{pages:?}"
    );
    assert!(
        pages.iter().all(|h| h.starts_with("click_sessions")),
        "{pages:?}"
    );
    // Owners and teams are searchable.
    let growth = ids(&features_json(&["search", "growth"]));
    assert_eq!(growth, ["click_sessions"]);
    let payments = ids(&features_json(&["search", "payments"]));
    assert!(
        payments.contains(&"user_spend_5m".to_string())
            && payments.contains(&"user_category_1h".to_string())
    );
    assert!(!payments.contains(&"click_sessions".to_string()));
    // An exact name beats a prefix.
    let exact = ids(&features_json(&["search", "amount_max"]));
    assert_eq!(exact[0], "user_spend_5m:amount_max", "{exact:?}");
    assert!(ids(&features_json(&["search", "zebra"])).is_empty());
}

#[test]
fn lineage_runs_from_topic_to_derived_features() {
    let l = features_json(&["lineage", "click_sessions:conversion_rate"]);
    let nodes: Vec<&str> = l["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n["id"].as_str().expect("id"))
        .collect();
    for want in [
        "topic:clicks",
        "pipeline:click_sessions",
        "click_sessions:click_count",
        "click_sessions:purchase_count",
        "click_sessions:conversion_rate",
    ] {
        assert!(nodes.contains(&want), "{want} in {nodes:?}");
    }
    assert!(
        !nodes.contains(&"click_sessions:landing_page"),
        "unrelated features stay out: {nodes:?}"
    );
    let edges: Vec<(String, String)> = serde_json::from_value(l["edges"].clone()).expect("edges");
    let has = |a: &str, b: &str| edges.iter().any(|(x, y)| x == a && y == b);
    assert!(has("topic:clicks", "pipeline:click_sessions"));
    assert!(has("pipeline:click_sessions", "click_sessions:click_count"));
    assert!(has(
        "click_sessions:click_count",
        "click_sessions:conversion_rate"
    ));
    assert!(has(
        "click_sessions:purchase_count",
        "click_sessions:conversion_rate"
    ));
    assert!(
        !has("pipeline:click_sessions", "click_sessions:conversion_rate"),
        "derived features hang off their inputs"
    );

    // Downstream of an aggregate: the derived feature that uses it.
    let l = features_json(&["lineage", "user_spend_5m:amount_max"]);
    let nodes: Vec<&str> = l["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n["id"].as_str().expect("id"))
        .collect();
    assert!(nodes.contains(&"user_spend_5m:amount_range"), "{nodes:?}");
    assert!(!nodes.contains(&"user_spend_5m:amount_mean"), "{nodes:?}");
    // Two groups read the transactions topic.
    assert_eq!(
        l["topic_shared_with"],
        serde_json::json!(["user_category_1h", "user_tx_30d"])
    );

    // The text form draws the same path.
    let out = run_ok(
        rill()
            .args(["features", "--dir"])
            .arg(repo("pipelines"))
            .args(["lineage", "click_sessions:conversion_rate"]),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("topic clicks"), "{text}");
    assert!(text.contains("→ derived conversion_rate"), "{text}");
}

/// Copies the spend pipeline into `old/`, and into `new/` with `edit` applied.
fn versions(dir: &Path, edit: impl Fn(&str) -> String) -> (std::path::PathBuf, std::path::PathBuf) {
    let text = std::fs::read_to_string(repo("pipelines/user_spend_5m.yaml")).expect("read");
    let (old, new) = (dir.join("old"), dir.join("new"));
    let _ = std::fs::remove_dir_all(&old);
    let _ = std::fs::remove_dir_all(&new);
    std::fs::create_dir_all(&old).expect("dir");
    std::fs::create_dir_all(&new).expect("dir");
    std::fs::write(old.join("user_spend_5m.yaml"), &text).expect("write");
    let edited = edit(&text);
    assert_ne!(edited, text, "the edit applies");
    std::fs::write(new.join("user_spend_5m.yaml"), edited).expect("write");
    (old, new)
}

fn validate_against(old: &Path, new: &Path) -> (bool, String) {
    let out = rill()
        .arg("validate")
        .arg(new)
        .arg("--against")
        .arg(old)
        .output()
        .expect("runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn validate_against_refuses_breaking_changes_unless_the_version_goes_up() {
    let dir = tempfile::tempdir().expect("tmp");
    let cases: [(&str, &dyn Fn(&str) -> String, &str); 6] = [
        (
            "removed",
            &|t: &str| t.replace("  - { name: amount_std, agg: std, field: amount }\n", ""),
            "feature \"amount_std\" was removed",
        ),
        (
            "renamed",
            &|t: &str| t.replace("name: amount_std,", "name: amount_stddev,"),
            "feature \"amount_std\" was renamed to \"amount_stddev\"",
        ),
        (
            "aggregate",
            &|t: &str| {
                t.replace(
                    "{ name: amount_mean, agg: mean,",
                    "{ name: amount_mean, agg: sum,",
                )
            },
            "feature \"amount_mean\" changed from mean(amount) to sum(amount)",
        ),
        (
            "window",
            &|t: &str| t.replace("tumbling: { size: 5m }", "tumbling: { size: 10m }"),
            "window changed from tumbling 5m to tumbling 10m",
        ),
        (
            "key",
            &|t: &str| t.replace("key: [user_id]", "key: [user_id, merchant_id]"),
            "entity key changed from [user_id] to [user_id, merchant_id]",
        ),
        (
            "derived",
            &|t: &str| {
                t.replace(
                    "expr: amount_max - amount_min",
                    "expr: amount_max + amount_min",
                )
            },
            "feature \"amount_range\" changed",
        ),
    ];
    for (what, edit, message) in cases {
        let (old, new) = versions(dir.path(), edit);
        let (ok, text) = validate_against(&old, &new);
        assert!(!ok, "{what}: refused\n{text}");
        assert!(text.contains(message), "{what}: {message:?} in\n{text}");
        assert!(text.contains("breaking change"), "{what}: {text}");
        // Points at the group's name in the new file.
        let at = format!("{}:2:7:", new.join("user_spend_5m.yaml").display());
        assert!(text.contains(&at), "{what}: {at} in\n{text}");
        // The same change with the version raised is accepted, and noted.
        let (old, new) = versions(dir.path(), |t| {
            edit(t).replacen("version: 1", "version: 2", 1)
        });
        let (ok, text) = validate_against(&old, &new);
        assert!(ok, "{what} with version 2 is allowed\n{text}");
        assert!(
            text.contains("allowed by the new version 2"),
            "{what}: {text}"
        );
    }
    // Adding a feature or changing a description breaks nobody.
    let (old, new) = versions(dir.path(), |t| {
        t.replace(
            "  - { name: amount_range,",
            "  - { name: amount_p_count, agg: count, where: 'amount > 100' }\n  - { name: amount_range,",
        )
        .replace("Spend per user", "Spending per user")
    });
    let (ok, text) = validate_against(&old, &new);
    assert!(ok, "{text}");
    assert!(
        text.contains("feature \"amount_p_count\" was added"),
        "{text}"
    );
    // A group removed altogether is breaking.
    let (old, new) = versions(dir.path(), |t| t.replace("Spend per user", "x"));
    std::fs::remove_file(new.join("user_spend_5m.yaml")).expect("rm");
    std::fs::copy(
        repo("pipelines/click_sessions.yaml"),
        new.join("click_sessions.yaml"),
    )
    .expect("copy");
    let (ok, text) = validate_against(&old, &new);
    assert!(
        !ok && text.contains("feature group \"user_spend_5m\" was removed"),
        "{text}"
    );
}

#[test]
fn validate_refuses_two_groups_with_one_name() {
    let dir = tempfile::tempdir().expect("tmp");
    let a = dir.path().join("a.yaml");
    let b = dir.path().join("b.yaml");
    std::fs::copy(repo("pipelines/user_spend_5m.yaml"), &a).expect("copy");
    std::fs::copy(repo("pipelines/user_spend_5m.yaml"), &b).expect("copy");
    let out = rill()
        .arg("validate")
        .arg(dir.path())
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:2:7: feature group name \"user_spend_5m\" is already used by {}",
            b.display(),
            a.display()
        )),
        "{err}"
    );
    // The registry refuses it too.
    let out = rill()
        .args(["features", "--dir"])
        .arg(dir.path())
        .arg("list")
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("user_spend_5m"));
}
