//! The online read API (`rill serve`) against a real redis-server filled by
//! `rill replay --online`. Expected values come from a group-by written
//! here over the events, not from rill.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};

use crate::util::{http, rill, run_ok, start_serve, RedisServer};

const WINDOW_US: i64 = 300_000_000;

const SPEND: &str = r#"
version: 1
name: spend
description: test spend
source: { format: json, key: [user_id], event_time: { field: ts, format: epoch_millis } }
window: { tumbling: { size: 5m } }
features:
  - { name: n, agg: count, default: 0 }
  - { name: total, agg: sum, field: amount }
  - { name: avg, agg: mean, field: amount, default: -1.5 }
  - { name: sd, agg: std, field: amount }
  - { name: top, agg: max, field: amount }
  - { name: last_kind, agg: last, field: kind, type: string, default: "none" }
sinks:
  online: { redis: { url: "redis://127.0.0.1:1", ttl: 1d } }
"#;

const CLICKS: &str = r#"
version: 1
name: clicks
source: { format: json, key: [user_id], event_time: { field: ts, format: epoch_millis } }
window: { tumbling: { size: 1m } }
features:
  - { name: c, agg: count, where: 'kind == "click"' }
sinks:
  online: { redis: { url: "redis://127.0.0.1:1", ttl: 1d, max_age: 1m } }
"#;

struct Ev {
    user: String,
    ts_ms: i64,
    amount: f64,
    kind: &'static str,
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_micros() as i64
}

/// Events of users u0..u9 in two 5-minute windows ending 10 to 20 minutes ago.
fn events(now: i64) -> (Vec<Ev>, i64) {
    let base = (now - 30 * 60_000_000).div_euclid(WINDOW_US) * WINDOW_US;
    let mut evs = Vec::new();
    for u in 0..10i64 {
        let user = format!("u{u}");
        // Window 1: u+1 events.
        for k in 0..=u {
            evs.push(Ev {
                user: user.clone(),
                ts_ms: (base + 1_000_000 * (10 + 7 * k + u)) / 1000,
                amount: 1.25 * (k + 1) as f64 + u as f64,
                kind: if k % 2 == 0 { "click" } else { "view" },
            });
        }
        // Window 2 for users 1..9: (u % 3) + 1 events (one event: no std).
        if u > 0 {
            for k in 0..(u % 3 + 1) {
                evs.push(Ev {
                    user: user.clone(),
                    ts_ms: (base + WINDOW_US + 1_000_000 * (5 + 11 * k + u)) / 1000,
                    amount: 10.0 + 0.5 * k as f64 * u as f64,
                    kind: if k == 0 { "purchase" } else { "click" },
                });
            }
        }
    }
    evs.sort_by_key(|e| e.ts_ms);
    (evs, base)
}

/// (count, sum, mean, sample std, max, last kind, window start) of each
/// user's latest window.
type Expect = BTreeMap<String, (i64, f64, f64, Option<f64>, f64, String, i64)>;

fn expected(evs: &[Ev]) -> Expect {
    let mut latest: BTreeMap<String, i64> = BTreeMap::new();
    for e in evs {
        let w = (e.ts_ms * 1000).div_euclid(WINDOW_US) * WINDOW_US;
        let l = latest.entry(e.user.clone()).or_insert(w);
        *l = (*l).max(w);
    }
    let mut out = Expect::new();
    for (user, w) in latest {
        let mine: Vec<&Ev> = evs
            .iter()
            .filter(|e| e.user == user && (e.ts_ms * 1000).div_euclid(WINDOW_US) * WINDOW_US == w)
            .collect();
        let n = mine.len() as f64;
        let sum: f64 = mine.iter().map(|e| e.amount).sum();
        let mean = sum / n;
        let sd = (mine.len() > 1).then(|| {
            (mine.iter().map(|e| (e.amount - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
        });
        let max = mine.iter().map(|e| e.amount).fold(f64::MIN, f64::max);
        let last = mine
            .iter()
            .max_by_key(|e| e.ts_ms)
            .expect("events")
            .kind
            .to_string();
        out.insert(user, (mine.len() as i64, sum, mean, sd, max, last, w));
    }
    out
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

fn rfc3339_us(s: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{s:?} is not RFC 3339: {e}"))
        .timestamp_micros()
}

/// Writes the pipelines and events, replays them into Redis, starts `rill serve`.
fn setup(
    dir: &Path,
    redis: &RedisServer,
    extra: &[&str],
) -> (crate::util::ChildGuard, u16, Expect, i64) {
    setup_url(dir, &redis.url(), extra)
}

/// [`setup`] with the store's URL (a server or a cluster).
fn setup_url(
    dir: &Path,
    redis_url: &str,
    extra: &[&str],
) -> (crate::util::ChildGuard, u16, Expect, i64) {
    let now = now_us();
    let (evs, base) = events(now);
    let pipes = dir.join("pipelines");
    std::fs::create_dir_all(&pipes).expect("dir");
    std::fs::write(pipes.join("spend.yaml"), SPEND).expect("write");
    std::fs::write(pipes.join("clicks.yaml"), CLICKS).expect("write");
    let mut jsonl = String::new();
    for e in &evs {
        jsonl.push_str(
            &json!({"user_id": e.user, "ts": e.ts_ms, "amount": e.amount, "kind": e.kind})
                .to_string(),
        );
        jsonl.push('\n');
    }
    let input = dir.join("events.jsonl");
    std::fs::write(&input, jsonl).expect("write");
    for p in ["spend.yaml", "clicks.yaml"] {
        run_ok(
            rill()
                .arg("replay")
                .arg(pipes.join(p))
                .arg("--input")
                .arg(&input)
                .arg("--output")
                .arg(dir.join("out"))
                .args(["--online", "--redis", redis_url]),
        );
    }
    let mut args = vec![pipes.to_str().expect("utf-8"), "--redis"];
    args.push(redis_url);
    args.extend_from_slice(extra);
    let (guard, port) = start_serve(&args);
    (guard, port, expected(&evs), base)
}

fn post(port: u16, body: &Value) -> (u16, Value) {
    let (status, text) = http(port, "POST", "/v1/features", body.to_string().as_bytes());
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, v)
}

#[test]
fn values_statuses_defaults_and_expiry_match_a_group_by() {
    let dir = tempfile::tempdir().expect("tmp");
    let redis = RedisServer::start(&dir.path().join("redis"));
    let (_serve, port, want, _) = setup(dir.path(), &redis, &[]);
    check_values(port, &want);
}

/// The same reads against a Redis Cluster (three primaries, three
/// replicas): the entities' hashes spread over the nodes, and every value
/// is the group-by's.
#[test]
fn values_match_a_group_by_on_a_redis_cluster() {
    let dir = tempfile::tempdir().expect("tmp");
    let cluster = crate::cluster_util::RedisCluster::start(&dir.path().join("cluster"));
    let (_serve, port, want, _) = setup_url(dir.path(), &cluster.url(), &[]);
    let primaries: std::collections::BTreeSet<u16> = want
        .keys()
        .map(|u| cluster.primary_of(&format!("rill:{{{u}}}:spend")))
        .collect();
    assert!(primaries.len() >= 2, "the entities span several primaries");
    // Every hash is where the cluster says its slot is, and it is whole.
    for u in want.keys() {
        let h = cluster.hgetall(&format!("rill:{{{u}}}:spend"));
        assert_eq!(h.get("n"), Some(&want[u].0.to_string()), "{u}: {h:?}");
    }
    check_values(port, &want);
}

/// Reads every user's features (and a missing entity's) and compares them
/// with the group-by.
fn check_values(port: u16, want: &Expect) {
    let users: Vec<String> = want.keys().cloned().collect();
    let mut entities: Vec<Value> = users.iter().map(|u| json!({ "user_id": u })).collect();
    entities.push(json!({ "user_id": "nobody" }));
    let (status, r) = post(
        port,
        &json!({ "entities": entities, "features": ["spend:*", "clicks:c"] }),
    );
    assert_eq!(status, 200, "{r}");
    let names: Vec<&str> = r["features"]
        .as_array()
        .expect("features")
        .iter()
        .map(|v| v.as_str().expect("name"))
        .collect();
    assert_eq!(
        names,
        [
            "spend:n",
            "spend:total",
            "spend:avg",
            "spend:sd",
            "spend:top",
            "spend:last_kind",
            "clicks:c"
        ]
    );
    let results = r["results"].as_array().expect("results");
    assert_eq!(
        results.len(),
        users.len() + 1,
        "one result per entity, in order"
    );
    let now = now_us();
    for (i, u) in users.iter().enumerate() {
        let (n, sum, mean, sd, max, last, w) = &want[u];
        let res = &results[i];
        assert_eq!(res["entity"]["user_id"], *u);
        let f = &res["features"];
        for name in [
            "spend:n",
            "spend:total",
            "spend:avg",
            "spend:top",
            "spend:last_kind",
        ] {
            assert_eq!(f[name]["status"], "present", "{u} {name}: {}", f[name]);
            assert_eq!(
                rfc3339_us(f[name]["window_start"].as_str().expect("start")),
                *w,
                "{u} {name}"
            );
            assert_eq!(
                rfc3339_us(f[name]["window_end"].as_str().expect("end")),
                w + WINDOW_US
            );
            // Age: since the end of what the value covers, the window's end
            // or an earlier emission (the last window of a replay is emitted
            // at the end of the input, before the window ends).
            let age = f[name]["age_seconds"].as_f64().expect("age");
            let emitted = rfc3339_us(f[name]["emitted_at"].as_str().expect("emitted_at"));
            let want_age = (now - emitted.min(w + WINDOW_US)) as f64 / 1e6;
            assert!(
                (age - want_age).abs() < 60.0,
                "{u} {name}: age {age}, about {want_age}"
            );
        }
        assert_eq!(f["spend:n"]["value"], json!(n), "{u}");
        assert!(
            close(f["spend:total"]["value"].as_f64().expect("total"), *sum),
            "{u}: {}",
            f["spend:total"]
        );
        assert!(
            close(f["spend:avg"]["value"].as_f64().expect("avg"), *mean),
            "{u}"
        );
        assert!(
            close(f["spend:top"]["value"].as_f64().expect("top"), *max),
            "{u}"
        );
        assert_eq!(f["spend:last_kind"]["value"], json!(last), "{u}");
        match sd {
            Some(sd) => {
                assert_eq!(f["spend:sd"]["status"], "present", "{u}");
                assert!(
                    close(f["spend:sd"]["value"].as_f64().expect("sd"), *sd),
                    "{u}"
                );
            }
            None => {
                // A single event has no sample std: the field is absent
                // from the hash and there is no default.
                assert_eq!(f["spend:sd"]["status"], "missing", "{u}");
                assert_eq!(f["spend:sd"]["value"], Value::Null, "{u}");
                assert!(
                    f["spend:sd"]["window_end"].is_string(),
                    "the window is still known"
                );
            }
        }
        // The clicks group's max_age (1m) is long past: expired, no default.
        assert_eq!(f["clicks:c"]["status"], "expired", "{u}: {}", f["clicks:c"]);
        assert_eq!(f["clicks:c"]["value"], Value::Null);
        assert!(f["clicks:c"]["age_seconds"].as_f64().expect("age") > 60.0);
    }
    // An entity nothing was computed for: missing, with the declared defaults.
    let f = &results[users.len()]["features"];
    assert_eq!(
        f["spend:n"],
        json!({"value": 0, "status": "missing", "window_start": null, "window_end": null, "emitted_at": null, "age_seconds": null})
    );
    assert_eq!(f["spend:avg"]["value"], json!(-1.5));
    assert_eq!(f["spend:last_kind"]["value"], json!("none"));
    assert_eq!(f["spend:total"]["value"], Value::Null);
    assert_eq!(f["clicks:c"]["status"], "missing");

    // max_age in the request overrides the groups': stricter and looser.
    let (_, r) = post(
        port,
        &json!({ "entities": [{"user_id": "u4"}], "features": ["spend:n", "clicks:c"], "max_age": "1s" }),
    );
    assert_eq!(r["results"][0]["features"]["spend:n"]["status"], "expired");
    assert_eq!(
        r["results"][0]["features"]["spend:n"]["value"],
        json!(0),
        "an expired value gives the default"
    );
    let (_, r) = post(
        port,
        &json!({ "entities": [{"user_id": "u4"}], "features": ["clicks:c"], "max_age": 86400 }),
    );
    assert_eq!(r["results"][0]["features"]["clicks:c"]["status"], "present");

    // The GET form answers exactly like the POST form.
    let (s, get) = http(
        port,
        "GET",
        "/v1/features?user_id=u7&features=spend:*,clicks:c",
        b"",
    );
    assert_eq!(s, 200, "{get}");
    let mut get: Value = serde_json::from_str(&get).expect("json");
    let (_, mut post_r) = post(
        port,
        &json!({ "entities": [{"user_id": "u7"}], "features": ["spend:*", "clicks:c"] }),
    );
    for v in [&mut get, &mut post_r] {
        // Ages differ by the time between the two calls.
        for (_, f) in v["results"][0]["features"]
            .as_object_mut()
            .expect("map")
            .iter_mut()
        {
            f.as_object_mut().expect("obj").remove("age_seconds");
        }
    }
    assert_eq!(get, post_r);
}

#[test]
fn bad_requests_get_4xx_naming_the_problem() {
    let dir = tempfile::tempdir().expect("tmp");
    let redis = RedisServer::start(&dir.path().join("redis"));
    let (_serve, port, _, _) = setup(
        dir.path(),
        &redis,
        &["--max-entities", "50", "--max-body-bytes", "20000"],
    );
    let err = |status: u16, body: &[u8]| -> String {
        let (s, text) = http(port, "POST", "/v1/features", body);
        assert_eq!(s, status, "{}: {text}", String::from_utf8_lossy(body));
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        v["error"].as_str().expect("an error message").to_string()
    };
    let m = err(
        404,
        br#"{"entities":[{"user_id":"u1"}],"features":["nosuch:x","spend:nope","spend:n"]}"#,
    );
    assert!(m.contains("nosuch") && m.contains("spend:nope"), "{m}");
    assert!(
        m.contains("spend") && m.contains("clicks"),
        "lists the known groups: {m}"
    );
    let m = err(
        400,
        br#"{"entities":[{"user_id":"u1","account":"a"}],"features":["spend:n"]}"#,
    );
    assert!(m.contains("account") && m.contains("user_id"), "{m}");
    let m = err(400, br#"{"entities":[{}],"features":["spend:n"]}"#);
    assert!(
        m.contains("missing key field") && m.contains("user_id"),
        "{m}"
    );
    let m = err(
        400,
        br#"{"entities":[{"user_id":1.5}],"features":["spend:n"]}"#,
    );
    assert!(m.contains("user_id") && m.contains("1.5"), "{m}");
    let m = err(
        400,
        br#"{"entities":[{"user_id":"u1"}],"features":["spend:n"]"#,
    );
    assert!(m.contains("malformed JSON"), "{m}");
    let m = err(400, br#"{"entities":[{"user_id":"u1"}],"features":[]}"#);
    assert!(m.contains("features"), "{m}");
    let m = err(
        400,
        br#"{"entities":[{"user_id":"u1"}],"features":["spend"]}"#,
    );
    assert!(m.contains("group:feature"), "{m}");
    let m = err(
        400,
        br#"{"entities":[{"user_id":"u1"}],"features":["spend:n"],"colour":1}"#,
    );
    assert!(m.contains("colour"), "{m}");
    // Too many entities, and too many bytes.
    let many: Vec<Value> = (0..51)
        .map(|i| json!({"user_id": format!("u{i}")}))
        .collect();
    let m = err(
        413,
        json!({"entities": many, "features": ["spend:n"]})
            .to_string()
            .as_bytes(),
    );
    assert!(m.contains("51") && m.contains("50"), "{m}");
    let long = "x".repeat(30_000);
    let m = err(
        413,
        json!({"entities": [{"user_id": long}], "features": ["spend:n"]})
            .to_string()
            .as_bytes(),
    );
    assert!(m.contains("20000"), "{m}");
    // The GET form names what is wrong too.
    let (s, text) = http(port, "GET", "/v1/features?features=spend:n", b"");
    assert_eq!(s, 400, "{text}");
    assert!(text.contains("key field"), "{text}");
    // The server still serves after all that.
    let (s, _) = post(
        port,
        &json!({"entities": [{"user_id": "u1"}], "features": ["spend:n"]}),
    );
    assert_eq!(s, 200);
}

#[test]
fn one_redis_round_trip_per_request_and_an_openapi_document() {
    let dir = tempfile::tempdir().expect("tmp");
    let redis = RedisServer::start(&dir.path().join("redis"));
    let (_serve, port, _, _) = setup(dir.path(), &redis, &[]);
    // Warm the server's connection up first.
    let body = json!({
        "entities": [{"user_id": "u1"}, {"user_id": "u2"}, {"user_id": "u3"}],
        "features": ["spend:*", "clicks:c"]
    });
    assert_eq!(post(port, &body).0, 200);
    let mut c = redis.conn();
    let reads = |c: &mut redis::Connection| -> i64 {
        let info: String = redis::cmd("INFO").arg("stats").query(c).expect("INFO");
        info.lines()
            .find_map(|l| l.strip_prefix("total_reads_processed:"))
            .expect("total_reads_processed")
            .trim()
            .parse()
            .expect("a number")
    };
    let before = reads(&mut c);
    let (s, r) = post(port, &body);
    assert_eq!(s, 200);
    assert_eq!(r["results"][2]["features"]["spend:n"]["status"], "present");
    let after = reads(&mut c);
    // One read for our second INFO, one for the whole request: 3 entities x
    // 2 groups = 6 HMGETs in one pipeline.
    assert_eq!(after - before, 2, "Redis reads for one request of 6 hashes");

    let (s, text) = http(port, "GET", "/openapi.json", b"");
    assert_eq!(s, 200);
    let doc: Value = serde_json::from_str(&text).expect("openapi is JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/v1/features"]["post"].is_object());
    assert!(doc["paths"]["/v1/features"]["get"].is_object());
    assert!(doc["paths"]["/v1/freshness"]["get"].is_object());
    let examples = doc["components"]["schemas"]["FeaturesRequest"]["properties"]["features"]
        ["items"]["examples"]
        .as_array()
        .expect("examples");
    assert!(examples.contains(&json!("spend:avg")) && examples.contains(&json!("clicks:*")));
}
