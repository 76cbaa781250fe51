//! The example pipelines of `pipelines/` over the standard data set, with
//! the expected values computed here from the events themselves: the
//! 30-day sliding transaction features (hopping windows, distinct counts,
//! sets, quantiles, request-time features) and the click sessions with
//! their pages.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;

use crate::util::*;

struct Ev {
    user: String,
    time: i64,
    kind: String,
    amount: f64,
    merchant: String,
    category: String,
    page: Option<String>,
    time_on_page: Option<f64>,
}

fn events(path: &Path) -> Vec<Ev> {
    std::fs::read_to_string(path)
        .expect("events")
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("json");
            Ev {
                user: v["user_id"].as_str().expect("user").into(),
                time: rill::time::parse_rfc3339(v["event_time"].as_str().expect("time"))
                    .expect("time"),
                kind: v["event_type"].as_str().expect("type").into(),
                amount: v["amount"].as_f64().expect("amount"),
                merchant: v["merchant_id"].as_str().expect("merchant").into(),
                category: v["category"].as_str().expect("category").into(),
                page: v["page"].as_str().map(str::to_string),
                time_on_page: v["time_on_page"].as_f64(),
            }
        })
        .collect()
}

fn gen(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("events.jsonl");
    run_ok(
        rill()
            .args(["gen", "--events", "20000", "--users", "300", "--days", "3"])
            .arg("--output")
            .arg(&p),
    );
    p
}

fn micros(v: &Value) -> i64 {
    rill::time::parse_rfc3339(v.as_str().expect("time")).expect("rfc3339")
}

#[test]
fn the_30_day_features_equal_the_events_they_cover() {
    let tmp = tempfile::tempdir().expect("tmp");
    let input = gen(tmp.path());
    let evs = events(&input);
    let clicks = evs.iter().filter(|e| e.kind == "click").count();
    assert!(
        evs.iter().all(|e| (e.kind == "click") == e.page.is_some()
            && e.page.is_some() == e.time_on_page.is_some()),
        "pages and times on page come with clicks, and only with them"
    );
    assert!(clicks > 0);
    let out = tmp.path().join("out");
    run_ok(
        rill()
            .args(["replay"])
            .arg(repo("pipelines/user_tx_30d.yaml"))
            .arg("--input")
            .arg(&input)
            .arg("--output")
            .arg(&out),
    );
    let rows = read_rows(&out.join("user_tx_30d"));
    assert!(!rows.is_empty());
    let last = evs.iter().map(|e| e.time).max().expect("events");
    let hour = 3_600_000_000i64;
    let mut seen = BTreeSet::new();
    for r in rows.iter().filter(|r| r["is_final"] == Value::Bool(true)) {
        let user = r["user_id"].as_str().expect("user");
        let (start, end) = (micros(&r["window_start"]), micros(&r["window_end"]));
        assert_eq!(end - start, 30 * 24 * hour);
        assert!(
            end - hour <= last,
            "a window whose newest tile starts after the input"
        );
        assert!(
            seen.insert((user.to_string(), end)),
            "one final pane per window"
        );
        let tx: Vec<&Ev> = evs
            .iter()
            .filter(|e| {
                e.user == user
                    && e.time >= start
                    && e.time < end
                    && (e.kind == "purchase" || e.kind == "refund")
            })
            .collect();
        assert_eq!(r["transaction_count_30d"], Value::from(tx.len()), "{r:?}");
        if tx.is_empty() {
            assert_eq!(r["total_amount_30d"], Value::Null);
            assert_eq!(r["categories_30d"], Value::Null);
            continue;
        }
        let sum: f64 = tx.iter().map(|e| e.amount).sum();
        assert!(
            close(&r["total_amount_30d"], &Value::from(sum)),
            "{r:?} vs {sum}"
        );
        let lo = tx.iter().map(|e| e.amount).fold(f64::INFINITY, f64::min);
        let hi = tx
            .iter()
            .map(|e| e.amount)
            .fold(f64::NEG_INFINITY, f64::max);
        assert_eq!(r["min_amount_30d"], Value::from(lo));
        assert_eq!(r["max_amount_30d"], Value::from(hi));
        let merchants: BTreeSet<&str> = tx.iter().map(|e| e.merchant.as_str()).collect();
        assert_eq!(r["unique_merchants_30d"], Value::from(merchants.len()));
        let cats: BTreeSet<&str> = tx.iter().map(|e| e.category.as_str()).collect();
        assert_eq!(
            r["categories_30d"],
            Value::from(cats.iter().map(|c| c.to_string()).collect::<Vec<_>>())
        );
        assert_eq!(r["categories_30d_cut"], Value::Bool(false));
        let mut amounts: Vec<f64> = tx.iter().map(|e| e.amount).collect();
        amounts.sort_by(f64::total_cmp);
        let median = amounts[(0.5 * (amounts.len() - 1) as f64).floor() as usize];
        let got = r["median_amount_30d"].as_f64().expect("median");
        assert!(
            (got - median).abs() <= 0.01 * median.abs(),
            "median {got} vs {median}"
        );
        let per = r["avg_amount_per_merchant"].as_f64().expect("derived");
        assert!((per - sum / merchants.len() as f64).abs() <= 1e-9 * per.abs().max(1.0));
        let latest = tx.iter().map(|e| e.time).max().expect("tx") / 1000;
        assert_eq!(r["last_tx_ms"], Value::from(latest as f64));
        // Request-time features are not stored.
        assert!(!r.contains_key("days_since_last_transaction"));
    }
    assert!(seen.len() > 100, "{} windows", seen.len());
}

#[test]
fn sessions_count_their_pages_and_time_on_page() {
    let tmp = tempfile::tempdir().expect("tmp");
    let input = gen(tmp.path());
    let evs = events(&input);
    let out = tmp.path().join("out");
    run_ok(
        rill()
            .args(["replay"])
            .arg(repo("pipelines/click_sessions.yaml"))
            .arg("--input")
            .arg(&input)
            .arg("--output")
            .arg(&out),
    );
    // Sessions of 30 minutes of inactivity, from all of a user's events.
    let gap = 30 * 60_000_000i64;
    let mut by_user: BTreeMap<&str, Vec<&Ev>> = BTreeMap::new();
    for e in &evs {
        by_user.entry(e.user.as_str()).or_default().push(e);
    }
    let mut want: BTreeMap<(String, i64), (BTreeSet<String>, f64, usize)> = BTreeMap::new();
    for (u, mut es) in by_user {
        es.sort_by_key(|e| e.time);
        let mut cur: Vec<&Ev> = Vec::new();
        let mut flush = |cur: &mut Vec<&Ev>| {
            if let Some(first) = cur.first() {
                let pages: BTreeSet<String> = cur.iter().filter_map(|e| e.page.clone()).collect();
                let tops: Vec<f64> = cur.iter().filter_map(|e| e.time_on_page).collect();
                let mean = tops.iter().sum::<f64>() / tops.len().max(1) as f64;
                want.insert((u.to_string(), first.time), (pages, mean, tops.len()));
            }
            cur.clear();
        };
        for e in es {
            if cur.last().is_some_and(|l| e.time > l.time + gap) {
                flush(&mut cur);
            }
            cur.push(e);
        }
        flush(&mut cur);
    }
    let rows = read_rows(&out.join("click_sessions"));
    let finals: Vec<_> = rows
        .iter()
        .filter(|r| r["is_final"] == Value::Bool(true) && r["retraction"] == Value::Bool(false))
        .collect();
    assert_eq!(finals.len(), want.len());
    for r in finals {
        let key = (
            r["user_id"].as_str().expect("user").to_string(),
            micros(&r["window_start"]),
        );
        let (pages, mean, n) = want
            .get(&key)
            .unwrap_or_else(|| panic!("no session {key:?}"));
        assert_eq!(r["unique_pages"], Value::from(pages.len()), "{r:?}");
        if *n == 0 {
            assert_eq!(r["avg_time_on_page"], Value::Null);
            assert_eq!(r["pages"], Value::Null);
        } else {
            assert!(close(&r["avg_time_on_page"], &Value::from(*mean)), "{r:?}");
            let mut sorted: Vec<String> = pages.iter().cloned().collect();
            sorted.sort();
            let cut = sorted.len() > 10;
            sorted.truncate(10);
            assert_eq!(r["pages"], Value::from(sorted));
            assert_eq!(r["pages_cut"], Value::Bool(cut));
        }
    }
}

/// `rill demo` carries its pipelines: it writes them from any directory,
/// and they validate.
#[test]
fn demo_pipelines_come_from_the_binary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_dir = dir.path().join("mine");
    let out = crate::util::rill()
        .current_dir(dir.path())
        .args(["demo", "--write-pipelines"])
        .arg(&out_dir)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut names: Vec<String> = std::fs::read_dir(&out_dir)
        .expect("written")
        .map(|e| e.expect("entry").file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    assert_eq!(names.len(), 4, "{names:?}");
    for n in &names {
        let ours = std::fs::read_to_string(out_dir.join(n)).expect("read");
        let repo = std::fs::read_to_string(crate::util::repo(&format!("pipelines/{n}")))
            .expect("repo copy");
        assert_eq!(ours, repo, "{n} is the repository's example");
    }
    crate::util::run_ok(
        crate::util::rill()
            .current_dir(dir.path())
            .arg("validate")
            .arg(&out_dir),
    );
}

/// `rill demo` started outside the repository runs the built-in pipelines.
#[test]
fn demo_runs_from_any_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let child = rill()
        .current_dir(dir.path())
        .args(["demo", "--events", "2000", "--rate", "2000"])
        .args(["--http", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("rill demo");
    let mut demo = ChildGuard(child);
    wait_for(120, "the demo to be ready", || {
        assert!(
            demo.0.try_wait().expect("wait").is_none(),
            "rill demo exited"
        );
        try_http(port, "GET", "/readyz", b"").is_some_and(|(s, _)| s == 200)
    });
    let (status, body) = http(port, "GET", "/v1/registry", b"");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["groups"].as_array().map(Vec::len), Some(4), "{v}");
}
