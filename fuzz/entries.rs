//! What each fuzz target checks, shared by the fuzz targets (`fuzz/`) and
//! the regression tests that replay the corpus and every crash found
//! (`tests/it/fuzz_corpus.rs`). Each entry panics only on a bug: bad input
//! must give an error, never a panic.

use std::collections::HashMap;
use std::sync::OnceLock;

/// The pipeline whose decode plan the JSON target uses: string and int
/// keys, an RFC 3339 time, a filter and fields of every kind.
const PIPELINE: &str = r#"version: 1
name: fuzz
source:
  key: [user_id, shard]
  key_types: { shard: int }
  event_time: { field: ts, format: rfc3339 }
window: { tumbling: { size: 5m } }
features:
  - { name: n, agg: count }
  - { name: total, agg: sum, field: amount }
  - { name: clicks, agg: count, where: 'kind == "click" and amount >= 0' }
  - { name: last_page, agg: last, field: page, type: string }
  - { name: merchants, agg: count_distinct, field: merchant }
"#;

fn decode_plan() -> &'static rill::event::DecodePlan {
    static PLAN: OnceLock<rill::event::DecodePlan> = OnceLock::new();
    PLAN.get_or_init(|| {
        let p = rill::config::Pipeline::from_yaml_with_env(PIPELINE, "fuzz.yaml", HashMap::new())
            .expect("the fuzz pipeline is valid");
        rill::event::DecodePlan::new(&p)
    })
}

/// A record through the validating JSON decoder: an event or a refusal.
pub fn json_decoder(data: &[u8]) {
    let mut d = rill::event::Decoder::new(decode_plan().clone());
    let _ = d.decode_json(data);
}

/// RFC 3339 text: a time or an error; a time read prints back to text that
/// reads as the same time.
pub fn rfc3339(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(t) = rill::time::parse_rfc3339(s) {
        let again = rill::time::format_rfc3339(t);
        assert_eq!(
            rill::time::parse_rfc3339(&again).ok(),
            Some(t),
            "{s:?} read as {t}, printed as {again:?}"
        );
    }
}

/// A pipeline file: a pipeline or a located error.
pub fn yaml_loader(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let env = HashMap::from([("FUZZ_VAR".to_string(), "x: [1".to_string())]);
    if let Err(e) = rill::config::Pipeline::from_yaml_with_env(s, "fuzz.yaml", env) {
        assert!(e.line >= 1 && e.column >= 1, "unlocated error: {e}");
    }
}

/// A `where:`/`expr:` expression: a tree or an error.
pub fn expr_parser(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = rill::config::expr::parse(s);
}
