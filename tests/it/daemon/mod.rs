//! The daemon against real parts: librdkafka's mock cluster (a Kafka
//! protocol broker in this process), a real redis-server on a free port,
//! and Parquet read back with the parquet crate. The daemon runs as a
//! child process, so that it can be killed with SIGKILL.
//!
//! Expected values come from a group-by written here over the produced
//! events, not from rill.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::Value;

mod cluster;
mod faults;
mod objects;
mod rebalance;

use crate::util::{
    free_port, http, read_rows, rill, start_serve, unsafe_kill, wait_for, RedisServer,
};

const WINDOW_US: i64 = 300_000_000;

/// (user, window_start) -> (count, sum, max).
type Finals = BTreeMap<(String, i64), (i64, f64, f64)>;

/// One generated event, as produced.
#[derive(Debug, Clone)]
struct Ev {
    user: String,
    amount: f64,
    time: i64,
    json: String,
}

fn events(n: u64, seed: u64) -> Vec<Ev> {
    let opts = rill::gen::GenOptions {
        events: n,
        users: 40,
        days: 1,
        seed,
        ..Default::default()
    };
    rill::gen::Generator::new(opts)
        .map(|e| {
            let mut json = String::new();
            rill::gen::write_json(&e, &mut json);
            let v: Value = serde_json::from_str(json.trim()).expect("generated JSON");
            Ev {
                user: v["user_id"].as_str().expect("user").to_string(),
                amount: v["amount"].as_f64().expect("amount"),
                time: rill::time::parse_rfc3339(v["event_time"].as_str().expect("time"))
                    .expect("time"),
                json: json.trim().to_string(),
            }
        })
        .collect()
}

/// The partition a user's events go to, as a producer keying by entity does.
fn partition_of(user: &str, partitions: i32) -> i32 {
    (user.bytes().map(u32::from).sum::<u32>() % partitions as u32) as i32
}

/// A Kafka-protocol broker with topic `tx`, and a producer: librdkafka's
/// mock cluster, or with `RILL_TEST_TANSU=1` a tansu broker (which
/// coordinates groups differently) started on a free port.
struct Kafka {
    broker: Broker,
    producer: BaseProducer,
    partitions: i32,
}

enum Broker {
    Mock(MockCluster<'static, rdkafka::producer::DefaultProducerContext>),
    /// The broker process (stopped on drop) and its address.
    Tansu(#[allow(dead_code)] crate::util::ChildGuard, String),
}

impl Kafka {
    fn start() -> Kafka {
        Kafka::with_partitions(2)
    }

    fn with_partitions(partitions: i32) -> Kafka {
        let broker = if std::env::var("RILL_TEST_TANSU").is_ok_and(|v| v == "1") {
            let (child, brokers) = crate::util::start_tansu();
            crate::util::create_topic(&brokers, "tx", partitions);
            Broker::Tansu(child, brokers)
        } else {
            let cluster = MockCluster::new(1).expect("mock cluster");
            cluster.create_topic("tx", partitions, 1).expect("topic");
            Broker::Mock(cluster)
        };
        let brokers = match &broker {
            Broker::Mock(c) => c.bootstrap_servers(),
            Broker::Tansu(_, b) => b.clone(),
        };
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("message.max.bytes", "4000000")
            .create()
            .expect("producer");
        Kafka {
            broker,
            producer,
            partitions,
        }
    }

    fn is_tansu(&self) -> bool {
        matches!(self.broker, Broker::Tansu(..))
    }

    fn brokers(&self) -> String {
        match &self.broker {
            Broker::Mock(c) => c.bootstrap_servers(),
            Broker::Tansu(_, b) => b.clone(),
        }
    }

    fn send(&self, partition: i32, key: &str, payload: Option<&[u8]>) {
        let mut rec = BaseRecord::<str, [u8]>::to("tx")
            .key(key)
            .partition(partition);
        if let Some(p) = payload {
            rec = rec.payload(p);
        }
        loop {
            match self.producer.send(rec) {
                Ok(()) => break,
                Err((_, back)) => {
                    self.producer.poll(Duration::from_millis(10));
                    rec = back;
                }
            }
        }
    }

    fn produce(&self, evs: &[Ev]) {
        for e in evs {
            self.send(
                partition_of(&e.user, self.partitions),
                &e.user,
                Some(e.json.as_bytes()),
            );
        }
        self.producer.flush(Duration::from_secs(30)).expect("flush");
    }

    /// One event per partition far after the data: the watermark passes
    /// every window of the data and they all fire.
    fn sentinels(&self, after: i64) {
        for p in 0..self.partitions {
            let t = rill::time::format_rfc3339(after);
            let json = format!(
                r#"{{"user_id":"zz_sentinel_{p}","event_type":"click","amount":0,"event_time":"{t}"}}"#
            );
            self.send(p, "sentinel", Some(json.as_bytes()));
        }
        self.producer.flush(Duration::from_secs(30)).expect("flush");
    }
}

const PIPELINE: &str = r#"version: 1
name: spend
source:
  kafka: { brokers: "unused:9092", topic: tx, group_id: rill-test }
  format: json
  key: [user_id]
  event_time: { field: event_time, format: rfc3339 }
watermark: { max_out_of_orderness: 15m }
window:
  tumbling: { size: 5m }
features:
  - { name: tx_count, agg: count }
  - { name: amount_sum, agg: sum, field: amount }
  - { name: amount_max, agg: max, field: amount }
sinks:
  online: { redis: { url: "redis://unused", ttl: 30d } }
  offline: { parquet: { path: ./unused } }
freshness_sla: 10m
"#;

struct Daemon {
    child: Child,
    pub http: u16,
}

impl Daemon {
    fn start(dir: &Path, brokers: &str, redis: &str, extra: &[&str]) -> Daemon {
        Daemon::start_with(dir, PIPELINE, brokers, redis, extra)
    }

    fn start_with(dir: &Path, yaml: &str, brokers: &str, redis: &str, extra: &[&str]) -> Daemon {
        Daemon::start_env(dir, yaml, brokers, redis, extra, &[])
    }

    fn start_env(
        dir: &Path,
        yaml: &str,
        brokers: &str,
        redis: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        let (state, data) = (dir.join("state"), dir.join("data"));
        Daemon::start_stores(dir, yaml, brokers, redis, (&state, &data), extra, env)
    }

    /// A daemon with its state and data where `stores` says (directories
    /// or object-storage URLs).
    fn start_stores(
        dir: &Path,
        yaml: &str,
        brokers: &str,
        redis: &str,
        (state, data): (&Path, &Path),
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        let http = free_port();
        let pipe = dir.join("spend.yaml");
        if !pipe.exists() {
            std::fs::write(&pipe, yaml).expect("pipeline file");
        }
        let child = rill()
            .arg("run")
            .arg(&pipe)
            .arg("--state-dir")
            .arg(state)
            .arg("--data-dir")
            .arg(data)
            .args(["--brokers", brokers, "--redis", redis])
            .args(["--http", &format!("127.0.0.1:{http}")])
            .args(if extra.contains(&"--checkpoint-interval") {
                &[][..]
            } else {
                &["--checkpoint-interval", "300ms"][..]
            })
            .args(extra)
            .envs(env.iter().copied())
            .env("RILL_LOG", "info")
            .stderr(std::fs::File::create(dir.join(format!("daemon-{http}.log"))).expect("log"))
            .spawn()
            .expect("rill run starts");
        Daemon { child, http }
    }

    fn metrics(&self) -> String {
        let mut s = String::new();
        if let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", self.http)) {
            use std::io::{Read, Write};
            let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = c.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n");
            let _ = c.read_to_string(&mut s);
        }
        s
    }

    fn metric(&self, name: &str) -> f64 {
        self.metrics()
            .lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM; returns the exit status and how long the drain took.
    fn stop(mut self) -> (std::process::ExitStatus, Duration) {
        let t = Instant::now();
        unsafe_kill(self.child.id(), "TERM");
        let st = self.child.wait().expect("wait");
        (st, t.elapsed())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (user, window_start) -> (count, sum, max), from the events.
fn group_by(evs: &[Ev]) -> Finals {
    let mut m: BTreeMap<(String, i64), (i64, f64, f64)> = BTreeMap::new();
    for e in evs {
        let s = e.time.div_euclid(WINDOW_US) * WINDOW_US;
        let x = m.entry((e.user.clone(), s)).or_insert((0, 0.0, f64::MIN));
        x.0 += 1;
        x.1 += e.amount;
        x.2 = x.2.max(e.amount);
    }
    m
}

/// Final, non-retraction Parquet rows by (user, window_start), failing on doubles.
fn final_rows(dir: &Path) -> Result<Finals, String> {
    let mut out = BTreeMap::new();
    for r in read_rows(&dir.join("data").join("spend")) {
        if r["is_final"] != Value::Bool(true) || r["retraction"] != Value::Bool(false) {
            continue;
        }
        let user = r["user_id"].as_str().unwrap_or_default().to_string();
        if user.starts_with("zz_sentinel") {
            continue;
        }
        let start = rill::time::parse_rfc3339(r["window_start"].as_str().unwrap_or_default())
            .map_err(|e| e.to_string())?;
        let v = (
            r["tx_count"].as_i64().unwrap_or(-1),
            r["amount_sum"].as_f64().unwrap_or(f64::NAN),
            r["amount_max"].as_f64().unwrap_or(f64::NAN),
        );
        if out.insert((user.clone(), start), v).is_some() {
            return Err(format!("two final rows for ({user}, {start})"));
        }
    }
    Ok(out)
}

fn assert_same(
    got: &BTreeMap<(String, i64), (i64, f64, f64)>,
    want: &BTreeMap<(String, i64), (i64, f64, f64)>,
) {
    let gk: BTreeSet<_> = got.keys().collect();
    let wk: BTreeSet<_> = want.keys().collect();
    assert_eq!(
        gk.difference(&wk).count(),
        0,
        "rows that should not exist: {:?}",
        gk.difference(&wk).take(5).collect::<Vec<_>>()
    );
    assert_eq!(
        wk.difference(&gk).count(),
        0,
        "missing rows: {:?}",
        wk.difference(&gk).take(5).collect::<Vec<_>>()
    );
    for (k, w) in want {
        let g = got[k];
        assert_eq!(g.0, w.0, "count of {k:?}");
        assert!(
            (g.1 - w.1).abs() <= 1e-9 * w.1.abs().max(1.0),
            "sum of {k:?}: {} vs {}",
            g.1,
            w.1
        );
        assert_eq!(g.2, w.2, "max of {k:?}");
    }
}

/// Every user's hash in Redis holds its latest window's values.
fn check_redis(r: &RedisServer, want: &BTreeMap<(String, i64), (i64, f64, f64)>) {
    let mut c = r.conn();
    check_hashes(
        |key| {
            let h = redis::cmd("HGETALL")
                .arg(key)
                .query(&mut c)
                .expect("hgetall");
            let ttl: i64 = redis::cmd("TTL").arg(key).query(&mut c).expect("ttl");
            (h, ttl)
        },
        want,
    );
}

/// [`check_redis`] through `get`, which gives a key's fields and TTL.
fn check_hashes(
    mut get: impl FnMut(&str) -> (BTreeMap<String, String>, i64),
    want: &BTreeMap<(String, i64), (i64, f64, f64)>,
) {
    let mut latest: BTreeMap<&str, (i64, (i64, f64, f64))> = BTreeMap::new();
    for ((u, s), v) in want {
        let e = latest.entry(u.as_str()).or_insert((*s, *v));
        if *s >= e.0 {
            *e = (*s, *v);
        }
    }
    for (u, (start, v)) in latest {
        let key = format!("rill:{{{u}}}:spend");
        let (h, ttl) = get(&key);
        assert_eq!(
            h.get("_window_start").map(String::as_str),
            Some(start.to_string().as_str()),
            "{key}: {h:?}"
        );
        assert_eq!(
            h.get("_window_end"),
            Some(&(start + WINDOW_US).to_string()),
            "{key}"
        );
        assert_eq!(h.get("tx_count"), Some(&v.0.to_string()), "{key}");
        let sum: f64 = h["amount_sum"].parse().expect("decimal text");
        assert!(
            (sum - v.1).abs() <= 1e-9 * v.1.abs().max(1.0),
            "{key}: {sum} vs {}",
            v.1
        );
        assert!(ttl > 29 * 86400 && ttl <= 30 * 86400, "{key} ttl {ttl}");
    }
}

/// Waits until Parquet holds as many final rows as expected.
fn wait_for_finals(dir: &Path, want: &Finals) {
    let t = Instant::now();
    loop {
        let got = final_rows(dir);
        if got.as_ref().is_ok_and(|g| g.len() >= want.len()) {
            return;
        }
        if t.elapsed() > Duration::from_secs(600) {
            let mut logs = String::new();
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                if e.file_name().to_string_lossy().starts_with("daemon-") {
                    logs += &format!(
                        "--- {}\n{}\n",
                        e.path().display(),
                        std::fs::read_to_string(e.path()).unwrap_or_default()
                    );
                }
            }
            let state = match &got {
                Ok(g) => {
                    let missing: Vec<_> = want
                        .keys()
                        .filter(|k| !g.contains_key(*k))
                        .take(5)
                        .collect();
                    format!(
                        "{} of {} final rows; missing e.g. {missing:?}",
                        g.len(),
                        want.len()
                    )
                }
                Err(e) => e.clone(),
            };
            panic!("timed out waiting for every final pane in Parquet: {state}\n{logs}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for every final row, stops the daemon with SIGTERM, and checks
/// Parquet (each window once, with the group-by's values) and Redis.
fn drain_and_check(d: Daemon, dir: &Path, redis: &RedisServer, want: &Finals) {
    wait_for_finals(dir, want);
    let (st, _) = d.stop();
    assert!(st.success(), "clean exit on SIGTERM: {st:?}");
    assert_same(&final_rows(dir).expect("no doubled rows"), want);
    check_redis(redis, want);
}

fn end_of(evs: &[Ev]) -> i64 {
    evs.iter().map(|e| e.time).max().expect("events") + 86_400_000_000
}

#[test]
fn kafka_to_redis_and_parquet_with_exact_values_and_metrics() {
    let tmp = tempfile::tempdir().expect("tmp");
    let redis = RedisServer::start(&tmp.path().join("redis"));
    let kafka = Kafka::start();
    let evs = events(3000, 7);
    kafka.produce(&evs);
    kafka.sentinels(end_of(&evs));
    let d = Daemon::start(tmp.path(), &kafka.brokers(), &redis.url(), &["--read-api"]);
    let want = group_by(&evs);
    wait_for_finals(tmp.path(), &want);
    assert!(d.metric("rill_events_total") >= 3002.0, "{}", d.metrics());
    assert!(d.metrics().contains("rill_event_to_online_seconds_bucket"));

    // Freshness: the events are from the past, so the watermark lags the
    // wall clock by far more than the 10m SLA.
    wait_for(30, "the SLA breach in /metrics", || {
        d.metric("rill_freshness_sla_breached") == 1.0
    });
    assert_eq!(d.metric("rill_freshness_sla_seconds"), 600.0);
    // Consumer lag per partition, from librdkafka's statistics: caught up.
    wait_for(30, "consumer lag per partition in /metrics", || {
        d.metrics()
            .lines()
            .filter(|l| l.starts_with("rill_consumer_lag{"))
            .count()
            >= 1
    });
    assert_eq!(d.metric("rill_consumer_lag{"), 0.0, "{}", d.metrics());
    assert!(
        d.metrics()
            .contains("rill_seconds_since_last_write{sink=\"online\",pipeline=\"spend\"}")
            || d.metrics()
                .contains("rill_seconds_since_last_write{pipeline=\"spend\",sink=\"online\"}"),
        "{}",
        d.metrics()
    );
    let (s, body) = http(d.http, "GET", "/v1/freshness/spend", b"");
    assert_eq!(s, 200, "{body}");
    let f: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(f["status"], "late", "{f}");
    assert_eq!(f["sla_holds"], false);
    let wm =
        rill::time::parse_rfc3339(f["watermark"].as_str().expect("a watermark")).expect("rfc3339");
    assert!(
        wm >= end_of(&evs) - 86_400_000_000 - 15 * 60_000_000,
        "watermark {wm} follows the events"
    );
    assert!(f["seconds_since_online_write"].as_f64().is_some(), "{f}");
    assert!(f["seconds_since_offline_write"].as_f64().is_some(), "{f}");
    // The same report, published in Redis, is what `rill serve` shows.
    wait_for(10, "the published freshness report", || {
        let mut c = redis.conn();
        redis::cmd("HLEN")
            .arg("rill:_freshness:spend")
            .query::<i64>(&mut c)
            .unwrap_or(0)
            == 1
    });
    let pipe = tmp.path().join("spend.yaml");
    let url = redis.url();
    let (_serve, port) = start_serve(&[pipe.to_str().expect("utf-8"), "--redis", &url]);
    let (_, body) = http(port, "GET", "/v1/freshness/spend", b"");
    let served: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(served["status"], "late", "{served}");
    assert_eq!(served["watermark"], f["watermark"], "{served}");

    // The daemon's read API serves what it wrote: the latest window of a user.
    let (user, start, count) = want
        .iter()
        .map(|((u, s), v)| (u.clone(), *s, v.0))
        .max_by_key(|(u, s, _)| (u == "u1", *s))
        .expect("rows");
    let (s, body) = http(
        d.http,
        "POST",
        "/v1/features",
        serde_json::json!({"entities": [{"user_id": user}], "features": ["spend:tx_count"], "max_age": "100000d"}).to_string().as_bytes(),
    );
    assert_eq!(s, 200, "{body}");
    let r: Value = serde_json::from_str(&body).expect("json");
    let v = &r["results"][0]["features"]["spend:tx_count"];
    assert_eq!(v["status"], "present", "{r}");
    assert_eq!(v["value"], count, "{r}");
    assert_eq!(
        rill::time::parse_rfc3339(v["window_start"].as_str().expect("start")).expect("rfc3339"),
        start
    );

    let d_http = d.http;
    let (st, _) = d.stop();
    assert!(st.success(), "clean exit on SIGTERM");
    assert_same(&final_rows(tmp.path()).expect("no doubles"), &want);
    check_redis(&redis, &want);
    // The breach was logged once, when it started.
    let log =
        std::fs::read_to_string(tmp.path().join(format!("daemon-{}.log", d_http))).expect("log");
    assert_eq!(log.matches("freshness SLA breached").count(), 1, "{log}");
}

#[test]
fn kill_9_mid_stream_then_restart_loses_and_doubles_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let redis = RedisServer::start(&tmp.path().join("redis"));
    let kafka = Kafka::start();
    let evs = events(4000, 11);
    let (a, rest) = evs.split_at(1500);
    let (b, c) = rest.split_at(1000);
    kafka.produce(a);
    let d = Daemon::start(
        tmp.path(),
        &kafka.brokers(),
        &redis.url(),
        &["--checkpoint-interval", "1s"],
    );
    wait_for(60, "a first checkpoint", || {
        d.metric("rill_checkpoints_total") >= 1.0
    });
    kafka.produce(b);
    wait_for(60, "the second batch consumed", || {
        d.metric("rill_events_total") >= 2500.0
    });
    // Killed between checkpoints: Redis and unpublished files hold work
    // that the last checkpoint does not.
    d.kill9();
    kafka.produce(c);
    kafka.sentinels(end_of(&evs));
    let d = Daemon::start(tmp.path(), &kafka.brokers(), &redis.url(), &[]);
    let want = group_by(&evs);
    drain_and_check(d, tmp.path(), &redis, &want);
}

#[test]
fn redis_down_and_back_mid_stream_loses_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut redis = RedisServer::start(&tmp.path().join("redis"));
    let kafka = Kafka::start();
    let evs = events(3000, 13);
    let (a, b) = evs.split_at(1500);
    kafka.produce(a);
    let d = Daemon::start(tmp.path(), &kafka.brokers(), &redis.url(), &[]);
    wait_for(60, "the first batch consumed", || {
        d.metric("rill_events_total") >= 1500.0
    });
    redis.stop();
    kafka.produce(b);
    kafka.sentinels(end_of(&evs));
    wait_for(60, "failed redis writes", || {
        d.metric("rill_redis_errors_total") >= 1.0
    });
    redis.restart();
    let want = group_by(&evs);
    drain_and_check(d, tmp.path(), &redis, &want);
}

#[test]
fn bad_messages_go_to_dead_letters_with_reasons() {
    let tmp = tempfile::tempdir().expect("tmp");
    let redis = RedisServer::start(&tmp.path().join("redis"));
    let kafka = Kafka::start();
    let evs = events(500, 17);
    kafka.produce(&evs);
    kafka.send(0, "x", Some(b"not json at all"));
    kafka.send(
        1,
        "x",
        Some(br#"{"amount":1,"event_time":"2026-01-05T00:00:00Z"}"#),
    );
    kafka.send(0, "x", None);
    let huge = format!(
        r#"{{"user_id":"u1","event_time":"2026-01-05T00:00:00Z","pad":"{}"}}"#,
        "x".repeat(1_500_000)
    );
    kafka.send(1, "x", Some(huge.as_bytes()));
    kafka
        .producer
        .flush(Duration::from_secs(30))
        .expect("flush");
    kafka.sentinels(end_of(&evs));
    let d = Daemon::start(tmp.path(), &kafka.brokers(), &redis.url(), &[]);
    let want = group_by(&evs);
    wait_for_finals(tmp.path(), &want);
    wait_for(30, "four dead letters", || {
        d.metric("rill_dead_letters_total") >= 4.0
    });
    let (st, _) = d.stop();
    assert!(st.success());
    assert_same(&final_rows(tmp.path()).expect("no doubled rows"), &want);
    let mut reasons = Vec::new();
    let dl = tmp.path().join("data").join("_dead_letter").join("spend");
    for f in std::fs::read_dir(&dl).expect("dead-letter dir").flatten() {
        if f.file_name().to_string_lossy().ends_with(".jsonl") {
            for line in std::fs::read_to_string(f.path()).expect("read").lines() {
                let v: Value = serde_json::from_str(line).expect("dead letter JSON");
                assert_eq!(v["source"]["topic"], "tx");
                reasons.push(v["reason"].as_str().expect("reason").to_string());
            }
        }
    }
    reasons.sort();
    assert_eq!(
        reasons,
        ["invalid_json", "invalid_json", "missing_key", "oversized"]
    );
}

#[test]
fn rebalance_between_two_instances_keeps_every_value_once() {
    let tmp = tempfile::tempdir().expect("tmp");
    let redis = RedisServer::start(&tmp.path().join("redis"));
    let kafka = Kafka::start();
    let evs = events(4000, 19);
    let (a, b) = evs.split_at(2000);
    kafka.produce(a);
    let d1 = Daemon::start(tmp.path(), &kafka.brokers(), &redis.url(), &[]);
    wait_for(60, "the first batch consumed", || {
        d1.metric("rill_events_total") >= 2000.0
    });
    wait_for(60, "a checkpoint", || {
        d1.metric("rill_checkpoints_total") >= 1.0
    });
    // A second instance joins the group: the partitions are shared out and
    // the moved one is loaded from its checkpoint.
    let d2 = Daemon::start(tmp.path(), &kafka.brokers(), &redis.url(), &[]);
    wait_for(60, "the second instance to own a partition", || {
        d2.metrics().contains("rill_consumer_lag{")
    });
    kafka.produce(b);
    kafka.sentinels(end_of(&evs));
    let want = group_by(&evs);
    wait_for_finals(tmp.path(), &want);
    let (s1, _) = d1.stop();
    let (s2, _) = d2.stop();
    assert!(s1.success() && s2.success());
    assert_same(&final_rows(tmp.path()).expect("no doubled rows"), &want);
    check_redis(&redis, &want);
}

#[test]
fn sigterm_drains_within_the_deadline_and_checkpoints() {
    let tmp = tempfile::tempdir().expect("tmp");
    let redis = RedisServer::start(&tmp.path().join("redis"));
    let kafka = Kafka::start();
    let evs = events(1000, 23);
    kafka.produce(&evs);
    let d = Daemon::start(
        tmp.path(),
        &kafka.brokers(),
        &redis.url(),
        &["--checkpoint-interval", "1h", "--drain-deadline", "10s"],
    );
    wait_for(60, "the events consumed", || {
        d.metric("rill_events_total") >= 1000.0
    });
    let (st, took) = d.stop();
    assert!(st.success(), "exit status {st:?}");
    assert!(took < Duration::from_secs(10), "drained in {took:?}");
    // The final checkpoint holds every offset.
    let mut next = 0;
    for p in 0..2 {
        let f = tmp
            .path()
            .join(format!("state/spend/tx/partition-{p}.json"));
        let v: Value =
            serde_json::from_str(&std::fs::read_to_string(&f).expect("checkpoint")).expect("json");
        next += v["next_offset"].as_i64().unwrap_or(0);
    }
    assert_eq!(next, 1000);
}

/// `(window_end, generation, pane)` of a hash's `_v` field: 16 hex digits
/// of the window end with its sign bit flipped, 16 of the generation, 8 of
/// the pane (README, Output).
fn version_of(h: &BTreeMap<String, String>) -> (i64, u64, u32) {
    let v = &h["_v"];
    let hex = |a: usize, b: usize| u64::from_str_radix(&v[a..b], 16).expect("hex");
    (
        (hex(0, 16) ^ (1 << 63)) as i64,
        hex(16, 32),
        hex(32, 40) as u32,
    )
}

/// The compare-and-set against a real redis-server, as a Redis Function:
/// newer windows win, an older window never replaces a newer one, a later
/// generation wins within a window whatever its pane number, a null feature
/// removes its field, rows of one key superseded in a batch are not
/// written, and a hash of the old layout is compared by its own fields and
/// migrated.
#[test]
fn redis_compare_and_set_orders_by_window_generation_and_pane() {
    compare_and_set_rules(&[]);
}

/// The same rules on a server without Redis Functions (`FUNCTION` renamed
/// away, as on Redis 6): the writer falls back to a script.
#[test]
fn redis_compare_and_set_without_functions_falls_back_to_a_script() {
    compare_and_set_rules(&["--rename-command", "FUNCTION", ""]);
}

fn compare_and_set_rules(server_args: &[&str]) {
    use rill::aggregate::Value;
    use rill::engine::{PaneBuf, PaneMeta, Timing};
    use rill::sink::redis::{run_writer, OnlineBatch, OnlineLayout, OnlineMsg, OnlineObserver};
    struct Quiet;
    impl OnlineObserver for Quiet {
        fn written(&self, _: usize, _: Duration) {}
        fn written_latency(&self, _: Duration) {}
        fn failed(&self, e: &str) {
            panic!("redis write failed: {e}");
        }
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let redis = RedisServer::start_with(&tmp.path().join("redis"), server_args);
    let layout = OnlineLayout {
        prefix: "rill".into(),
        group: "g".into(),
        names: vec!["n".into(), "sd".into()],
        ttl_ms: 60_000,
    };
    let key = {
        let p = crate::util::repo("pipelines/user_spend_5m.yaml");
        let pl = rill::config::Pipeline::from_file(&p).expect("pipeline");
        let mut d = rill::event::Decoder::new(rill::event::DecodePlan::new(&pl));
        let ev = d
            .decode_json(br#"{"user_id":"u|1{x}","event_time":"2026-01-05T00:00:00Z","amount":1}"#)
            .expect("decodes");
        rill::event::EncodedKey::new(ev.key)
    };
    let row = |end: i64, pane: u32, n: i64, sd: Option<f64>| {
        (
            PaneMeta {
                key: key.clone(),
                window_start: end - 10,
                window_end: end,
                pane_index: pane,
                timing: Timing::OnTime,
                is_final: true,
                retraction: false,
                partition: 0,
                emitted_at: 1,
                watermark: None,
            },
            vec![Value::Int(n), sd.map_or(Value::Null, Value::Float)],
        )
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let send = |rows: Vec<((PaneMeta, Vec<Value>), u64)>| {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let mut panes = PaneBuf::new(2);
        let mut generations = Vec::new();
        for ((m, v), g) in rows {
            panes.push(m, &v);
            generations.push(g);
        }
        rt.block_on(async {
            tx.send(OnlineMsg::Panes(OnlineBatch {
                panes,
                generations,
                emitted: Instant::now(),
                rewrite: false,
            }))
            .await
            .expect("send");
            drop(tx);
            run_writer(
                rill::config::RedisEndpoint::from_url(redis.url()),
                layout.clone(),
                rx,
                std::sync::Arc::new(Quiet),
            )
            .await;
        });
    };
    let mut c = redis.conn();
    let redis_key = "rill:{u%7C1%7Bx%7D}:g";
    let get = |c: &mut redis::Connection| -> BTreeMap<String, String> {
        redis::cmd("HGETALL")
            .arg(redis_key)
            .query(c)
            .expect("hgetall")
    };
    send(vec![(row(100, 0, 3, Some(1.5)), 1)]);
    let h = get(&mut c);
    assert_eq!(
        (h["n"].as_str(), h["sd"].as_str(), h["_window_end"].as_str()),
        ("3", "1.5", "100")
    );
    let ttl: i64 = redis::cmd("PTTL")
        .arg(redis_key)
        .query(&mut c)
        .expect("pttl");
    assert!(ttl > 50_000 && ttl <= 60_000, "ttl {ttl}");
    // Same window, next pane, the feature became null: its field goes.
    send(vec![(row(100, 1, 4, None), 1)]);
    let h = get(&mut c);
    assert_eq!(h["n"], "4");
    assert!(!h.contains_key("sd"), "{h:?}");
    // An older window never replaces a newer one.
    send(vec![(row(90, 7, 99, Some(2.0)), 9)]);
    assert_eq!(get(&mut c)["n"], "4");
    // Same window, lower pane number but a later generation: wins.
    send(vec![(row(100, 1, 5, Some(0.5)), 2)]);
    let h = get(&mut c);
    assert_eq!((h["n"].as_str(), version_of(&h)), ("5", (100, 2, 1)));
    assert_eq!(h["sd"], "0.5");
    // Same window and generation, lower pane: refused.
    send(vec![(row(100, 0, 6, None), 2)]);
    assert_eq!(get(&mut c)["n"], "5");
    // One batch: the newest of a key's rows is what lands.
    send(vec![
        (row(300, 0, 7, None), 2),
        (row(200, 0, 8, None), 2),
        (row(300, 1, 9, None), 2),
    ]);
    let h = get(&mut c);
    assert_eq!(
        (
            h["n"].as_str(),
            h["_window_end"].as_str(),
            h["_pane"].as_str(),
            version_of(&h)
        ),
        ("9", "300", "1", (300, 2, 1))
    );
    assert!(!h.contains_key("sd"), "{h:?}");
    // A null again: the field stays absent; a value again: it is back.
    send(vec![(row(400, 0, 10, None), 2)]);
    let h = get(&mut c);
    assert_eq!(h["n"], "10");
    assert!(!h.contains_key("sd"), "{h:?}");
    send(vec![(row(500, 0, 11, Some(4.0)), 2)]);
    assert_eq!(get(&mut c)["sd"], "4");
    send(vec![(row(600, 0, 12, None), 2)]);
    assert!(!get(&mut c).contains_key("sd"));
    // A hash of the old layout (no `_v`; `_window_end`, `_gen`, `_pane`):
    // compared by its own fields, then migrated when written.
    let legacy = |c: &mut redis::Connection, end: i64, generation: u64, pane: u32| {
        let _: () = redis::cmd("DEL").arg(redis_key).query(c).expect("del");
        let _: () = redis::cmd("HSET")
            .arg(redis_key)
            .arg(&["n", "70", "sd", "7.5", "_window_start", "0"])
            .arg("_window_end")
            .arg(end)
            .arg("_emitted_at")
            .arg(1)
            .arg("_gen")
            .arg(generation)
            .arg("_pane")
            .arg(pane)
            .query(c)
            .expect("hset");
    };
    legacy(&mut c, 700, 3, 2);
    send(vec![(row(600, 9, 13, Some(1.0)), 9)]); // older window
    send(vec![(row(700, 1, 14, Some(1.0)), 3)]); // same window, older pane
    send(vec![(row(700, 9, 15, Some(1.0)), 2)]); // same window, older generation
    let h = get(&mut c);
    assert_eq!((h["n"].as_str(), h["_gen"].as_str()), ("70", "3"), "{h:?}");
    assert!(!h.contains_key("_v"));
    send(vec![(row(700, 2, 16, None), 3)]); // the same version: written
    let h = get(&mut c);
    assert_eq!(h["n"], "16");
    assert_eq!((version_of(&h), h["_pane"].as_str()), ((700, 3, 2), "2"));
    for gone in ["sd", "_gen"] {
        assert!(!h.contains_key(gone), "{gone}: {h:?}");
    }
    legacy(&mut c, 700, 3, 2);
    send(vec![(row(800, 0, 17, Some(2.5)), 1)]); // a newer window
    let h = get(&mut c);
    assert_eq!((h["n"].as_str(), h["sd"].as_str()), ("17", "2.5"));
    assert!(!h.contains_key("_gen"), "{h:?}");
    assert_eq!(h["_pane"], "0");
    let ttl: i64 = redis::cmd("PTTL")
        .arg(redis_key)
        .query(&mut c)
        .expect("pttl");
    assert!(ttl > 50_000 && ttl <= 60_000, "ttl {ttl}");
    // The writes went through a function where the server has them.
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut c)
        .expect("info");
    let functions = server_args.is_empty();
    assert_eq!(stats.contains("cmdstat_fcall:"), functions, "{stats}");
    assert_eq!(stats.contains("cmdstat_evalsha:"), !functions, "{stats}");
}

/// A partition that gets no new records while the watermark, moved by the
/// other partition, fires its windows in several checkpoint epochs: every
/// epoch's file is kept (file names are unique per epoch).
#[test]
fn an_idle_partition_firing_across_epochs_keeps_every_file() {
    let tmp = tempfile::tempdir().expect("tmp");
    let redis = RedisServer::start(&tmp.path().join("redis"));
    let kafka = Kafka::start();
    let yaml = PIPELINE.replace(
        "watermark: { max_out_of_orderness: 15m }",
        "watermark: { max_out_of_orderness: 1m, idle_timeout: 300ms }",
    );
    let t0 = 1_767_571_200_000_000i64; // 2026-01-05T00:00:00Z
    let ev = |user: &str, t: i64, amount: f64| Ev {
        user: user.into(),
        amount,
        time: t,
        json: format!(
            r#"{{"user_id":"{user}","event_type":"click","amount":{amount},"event_time":"{}"}}"#,
            rill::time::format_rfc3339(t)
        ),
    };
    let hour = 3_600_000_000i64;
    // Partition 1: two windows, hours apart, and then nothing more.
    let p1 = [ev("u1", t0 + 2 * hour, 1.0), ev("u1", t0 + 6 * hour, 2.0)];
    for e in &p1 {
        kafka.send(1, &e.user, Some(e.json.as_bytes()));
    }
    let chunk = |from: i64, to: i64| -> Vec<Ev> {
        (0..40)
            .map(|i| ev("u2", from + (to - from) * i / 40, 1.0))
            .collect()
    };
    let send = |evs: &[Ev]| {
        for e in evs {
            kafka.send(0, &e.user, Some(e.json.as_bytes()));
        }
        kafka
            .producer
            .flush(Duration::from_secs(30))
            .expect("flush");
    };
    // Partition 0 moves the watermark in steps, each after checkpoints in
    // which partition 1 got nothing new.
    let zero = chunk(t0, t0 + hour);
    send(&zero);
    let d = Daemon::start_with(tmp.path(), &yaml, &kafka.brokers(), &redis.url(), &[]);
    let checkpoints = |n: f64| {
        let seen = d.metric("rill_checkpoints_total");
        wait_for(60, "checkpoints", || {
            d.metric("rill_checkpoints_total") >= seen + n
        });
    };
    wait_for(60, "the first events", || {
        d.metric("rill_events_total") >= 42.0
    });
    checkpoints(2.0);
    let first = chunk(t0 + hour, t0 + 3 * hour);
    send(&first);
    wait_for(60, "the first window of partition 1 published", || {
        final_rows(tmp.path()).is_ok_and(|g| g.contains_key(&("u1".to_string(), t0 + 2 * hour)))
    });
    checkpoints(2.0);
    let second = chunk(t0 + 3 * hour, t0 + 12 * hour);
    send(&second);
    let mut all: Vec<Ev> = p1.to_vec();
    all.extend(zero);
    all.extend(first);
    all.extend(second.iter().cloned());
    // The last windows of u2 stay open (the watermark trails u2's latest event).
    let cut = second.last().expect("events").time - 60_000_000 - WINDOW_US;
    let want: Finals = group_by(&all)
        .into_iter()
        .filter(|((_, s), _)| *s < cut)
        .collect();
    wait_for(60, "both windows of partition 1", || {
        final_rows(tmp.path()).is_ok_and(|g| want.keys().all(|k| g.contains_key(k)))
    });
    let (st, _) = d.stop();
    assert!(st.success());
    let got: Finals = final_rows(tmp.path())
        .expect("no doubled rows")
        .into_iter()
        .filter(|(k, _)| want.contains_key(k))
        .collect();
    assert_same(&got, &want);
}

/// `/metrics` with three pipelines running passes Prometheus' own checker
/// (promtool, from Debian's prometheus package): one family per metric,
/// with every pipeline's samples under it.
#[test]
fn metrics_with_three_pipelines_pass_promtool() {
    let tmp = tempfile::tempdir().expect("tmp");
    let redis = RedisServer::start(&tmp.path().join("redis"));
    let kafka = Kafka::start();
    let evs = events(500, 29);
    kafka.produce(&evs);
    let dir = tmp.path().join("pipelines");
    std::fs::create_dir_all(&dir).expect("dir");
    for n in ["spend", "spend_b", "spend_c"] {
        std::fs::write(
            dir.join(format!("{n}.yaml")),
            PIPELINE
                .replace("name: spend", &format!("name: {n}"))
                .replace("group_id: rill-test", &format!("group_id: rill-{n}")),
        )
        .expect("pipeline");
    }
    let http = free_port();
    let child = rill()
        .arg("run")
        .arg(&dir)
        .arg("--state-dir")
        .arg(tmp.path().join("state"))
        .arg("--data-dir")
        .arg(tmp.path().join("data"))
        .args(["--brokers", &kafka.brokers(), "--redis", &redis.url()])
        .args(["--http", &format!("127.0.0.1:{http}")])
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("rill run starts");
    let d = Daemon { child, http };
    wait_for(120, "every pipeline consuming", || {
        let m = d.metrics();
        ["spend", "spend_b", "spend_c"].iter().all(|p| {
            m.lines().any(|l| {
                l.starts_with(&format!("rill_events_total{{pipeline=\"{p}\"}}"))
                    && !l.ends_with(" 0")
            })
        })
    });
    let body = d.metrics();
    let text = body.split_once("\r\n\r\n").map_or(body.as_str(), |x| x.1);
    let mut check = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is installed (scripts/test.sh installs Debian's prometheus)");
    {
        use std::io::Write;
        check
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write");
    }
    let out = check.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        text.matches("# HELP rill_events_total ").count(),
        1,
        "{text}"
    );
}

/// Whether a daemon's log says it was assigned a partition.
fn log_has(dir: &Path, d: &Daemon, what: &str) -> bool {
    std::fs::read_to_string(dir.join(format!("daemon-{}.log", d.http)))
        .is_ok_and(|l| l.contains(what))
}

#[test]
fn a_rebalance_completes_while_redis_is_down() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut redis = RedisServer::start(&tmp.path().join("redis"));
    let kafka = Kafka::start();
    let evs = events(4000, 29);
    let (a, b) = evs.split_at(2000);
    kafka.produce(a);
    let d1 = Daemon::start(tmp.path(), &kafka.brokers(), &redis.url(), &[]);
    wait_for(120, "the first batch consumed", || {
        d1.metric("rill_events_total") >= 2000.0
    });
    wait_for(120, "a checkpoint", || {
        d1.metric("rill_checkpoints_total") >= 1.0
    });
    // Redis goes away while panes are waiting to be written: the first
    // instance's writer retries, its checkpoints wait for the flush, and
    // its consumer must keep serving the group all the same.
    redis.stop();
    kafka.produce(b);
    kafka.sentinels(end_of(&evs));
    wait_for(120, "failed redis writes", || {
        d1.metric("rill_redis_errors_total") >= 1.0
    });
    let d2 = Daemon::start(tmp.path(), &kafka.brokers(), &redis.url(), &[]);
    wait_for(
        120,
        "the second instance to own a partition while Redis is down",
        || log_has(tmp.path(), &d2, "partition assigned"),
    );
    assert!(
        d1.metric("rill_redis_errors_total") >= 1.0,
        "Redis was still down during the rebalance"
    );
    redis.restart();
    let want = group_by(&evs);
    wait_for_finals(tmp.path(), &want);
    let (s1, _) = d1.stop();
    let (s2, _) = d2.stop();
    assert!(s1.success() && s2.success(), "{s1:?} {s2:?}");
    assert_same(&final_rows(tmp.path()).expect("no doubled rows"), &want);
    check_redis(&redis, &want);
}

#[test]
fn kill_9_and_an_immediate_restart_resume_within_the_session_timeout() {
    let tmp = tempfile::tempdir().expect("tmp");
    let redis = RedisServer::start(&tmp.path().join("redis"));
    let kafka = Kafka::start();
    let evs = events(3000, 31);
    let (a, b) = evs.split_at(1500);
    kafka.produce(a);
    // Static membership as a StatefulSet gives it (librdkafka's mock
    // cluster does not implement the replacement of a static member, so
    // here the restart waits for the killed member's 10 s session).
    let id = ["--group-instance-id", "rill-test-0"];
    let d1 = Daemon::start(tmp.path(), &kafka.brokers(), &redis.url(), &id);
    wait_for(120, "the first batch consumed", || {
        d1.metric("rill_events_total") >= 1500.0
    });
    wait_for(120, "a checkpoint", || {
        d1.metric("rill_checkpoints_total") >= 1.0
    });
    d1.kill9();
    let d2 = Daemon::start(tmp.path(), &kafka.brokers(), &redis.url(), &id);
    let t = Instant::now();
    while !log_has(tmp.path(), &d2, "partition assigned") {
        if t.elapsed() > Duration::from_secs(300) {
            let log = std::fs::read_to_string(tmp.path().join(format!("daemon-{}.log", d2.http)));
            panic!("the restarted instance owns nothing after 300 s:\n{log:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    kafka.produce(b);
    kafka.sentinels(end_of(&evs));
    let want = group_by(&evs);
    drain_and_check(d2, tmp.path(), &redis, &want);
}
