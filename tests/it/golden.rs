//! Golden pipelines: a pipeline, an input and the expected rows, derived
//! independently (tests/golden/derive_expected.py).

use std::path::Path;

use serde_json::{Map, Value};

use crate::util::*;

fn check_case(case: &str, keys: &[&str]) {
    let dir = repo(&format!("tests/golden/{case}"));
    let out = tempfile::tempdir().expect("tempdir");
    run_ok(
        rill()
            .args(["replay"])
            .arg(dir.join("pipeline.yaml"))
            .arg("--input")
            .arg(dir.join("input.jsonl"))
            .arg("--output")
            .arg(out.path()),
    );
    let mut got = read_rows(out.path());
    let expected_text = std::fs::read_to_string(dir.join("expected.jsonl")).expect("expected rows");
    let mut want: Vec<Map<String, Value>> = expected_text
        .lines()
        .map(|l| serde_json::from_str(l).expect("expected row is JSON"))
        .collect();
    assert_eq!(got.len(), want.len(), "row count of {case}: {got:#?}");
    // Each row sits in the file of its window_end's UTC date.
    for r in &got {
        let date = &r["window_end"].as_str().expect("text")[..10];
        assert!(
            r["_file"]
                .as_str()
                .expect("path")
                .contains(&format!("date={date}")),
            "{r:?}"
        );
    }
    got.sort_by_key(|r| sort_key(r, keys));
    want.sort_by_key(|r| sort_key(r, keys));
    for (g, w) in got.iter().zip(&want) {
        for (k, wv) in w {
            let gv = g
                .get(k)
                .unwrap_or_else(|| panic!("{case}: column {k} missing in {g:?}"));
            assert!(
                close(gv, wv),
                "{case}: column {k}: got {gv}, want {wv}\n got row {g:?}\nwant row {w:?}"
            );
        }
        let extra: Vec<&String> = g
            .keys()
            .filter(|k| *k != "_file" && !w.contains_key(*k))
            .collect();
        assert!(extra.is_empty(), "{case}: unexpected columns {extra:?}");
    }
}

#[test]
fn tumbling_basic() {
    check_case("tumbling_basic", &["user_id"]);
}

#[test]
fn session_clicks() {
    check_case("session_clicks", &["user_id"]);
}

#[test]
fn late_retracting() {
    check_case("late_retracting", &["user_id", "region"]);
    // The one event that came after its window was dropped is a dead letter.
    let dir = repo("tests/golden/late_retracting");
    let out = tempfile::tempdir().expect("tempdir");
    let o = run_ok(
        rill()
            .args(["replay", "--json"])
            .arg(dir.join("pipeline.yaml"))
            .arg("--input")
            .arg(dir.join("input.jsonl"))
            .arg("--output")
            .arg(out.path()),
    );
    let s: Value = serde_json::from_slice(&o.stdout).expect("summary json");
    assert_eq!(s["late_events_dropped"], 1);
    assert_eq!(s["late_events_kept"], 1);
    assert_eq!(s["dead_letters"]["too_late"], 1);
    let dl = std::fs::read_to_string(Path::new(s["dead_letter_file"].as_str().expect("path")))
        .expect("dead letters");
    let line: Value = serde_json::from_str(dl.lines().next().expect("a line")).expect("json");
    assert_eq!(line["reason"], "too_late");
    assert_eq!(line["source"]["line"], 6);
    assert!(line["raw"].as_str().expect("raw").contains("1767571209.5"));
}
