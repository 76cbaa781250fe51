//! Faults a deployment meets, against real parts: the daemon killed with
//! SIGKILL at five points of a run, Redis losing its data, a slow Redis, a
//! full disk under the Parquet files, the broker going away.
//!
//! Each test ends the fault, lets the watermark close every window and
//! compares the daemon's final Parquet panes and Redis hashes with
//! `rill replay` over the records the broker holds (written to a file in
//! the same order), with the group-by of the produced events, and counts
//! the dead letters of both. No pane row may appear twice.
//!
//! `RILL_SOAK=1` adds a one-hour run at a steady rate that samples the
//! daemon's RSS every minute.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use rdkafka::producer::Producer;
use serde_json::Value;

use super::{end_of, events, final_rows, group_by, wait_for_finals, Daemon, Ev, Kafka, PIPELINE};
use crate::util::{read_rows, rill, run_ok, wait_for, Lcg, RedisServer, SlowProxy};

/// Everything produced, in order per partition, so that a replay reads the
/// same records.
struct Log {
    lines: Vec<String>,
}

impl Log {
    fn new() -> Log {
        Log { lines: Vec::new() }
    }

    fn produce(&mut self, kafka: &Kafka, evs: &[Ev]) {
        kafka.produce(evs);
        self.lines.extend(evs.iter().map(|e| e.json.clone()));
    }

    /// A record that is not an event (a dead letter).
    fn bad(&mut self, kafka: &Kafka, partition: i32, text: &str) {
        kafka.send(partition, "bad", Some(text.as_bytes()));
        kafka
            .producer
            .flush(Duration::from_secs(30))
            .expect("flush");
        self.lines.push(text.to_string());
    }

    fn sentinels(&mut self, kafka: &Kafka, after: i64) {
        kafka.sentinels(after);
        for p in 0..kafka.partitions {
            let t = rill::time::format_rfc3339(after);
            self.lines.push(format!(
                r#"{{"user_id":"zz_sentinel_{p}","event_type":"click","amount":0,"event_time":"{t}"}}"#
            ));
        }
    }
}

/// The reference: `rill replay` of the logged records into Parquet under
/// `<dir>/ref/data` and into a Redis of its own.
struct Reference {
    dir: std::path::PathBuf,
    redis: RedisServer,
}

fn replay(dir: &Path, log: &Log) -> Reference {
    let ref_dir = dir.join("ref");
    std::fs::create_dir_all(&ref_dir).expect("ref dir");
    let input = ref_dir.join("records.jsonl");
    std::fs::write(&input, log.lines.join("\n") + "\n").expect("records");
    let pipe = ref_dir.join("spend.yaml");
    std::fs::write(&pipe, PIPELINE).expect("pipeline");
    let redis = RedisServer::start(&ref_dir.join("redis"));
    run_ok(
        rill()
            .arg("replay")
            .arg(&pipe)
            .arg("--input")
            .arg(&input)
            .arg("--output")
            .arg(ref_dir.join("data"))
            .args(["--online", "--redis", &redis.url()]),
    );
    Reference {
        dir: ref_dir,
        redis,
    }
}

/// Every entity hash of the group, without the fields that name the run
/// that wrote it (emission time, generation, pane number).
fn redis_hashes(r: &RedisServer) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut c = r.conn();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("rill:*:spend")
        .query(&mut c)
        .expect("keys");
    let mut out = BTreeMap::new();
    for k in keys {
        // The sentinels' windows close only at the end of a bounded replay.
        // Entities only: not the marker, not the freshness report.
        if !k.starts_with("rill:{") || k.contains("{%marker}") || k.contains("zz_sentinel") {
            continue;
        }
        let mut h: BTreeMap<String, String> = redis::cmd("HGETALL")
            .arg(&k)
            .query(&mut c)
            .expect("hgetall");
        // The version (`_v`) holds the generation, which differs between
        // runs, and so may the pane numbers.
        h.retain(|f, _| !matches!(f.as_str(), "_emitted_at" | "_v" | "_pane"));
        out.insert(k, h);
    }
    out
}

/// Pane rows of a Parquet tree, as comparable text, failing on a row
/// (key, window, pane, retraction) that appears twice.
fn pane_rows(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for r in read_rows(&root.join("spend")) {
        if r["user_id"]
            .as_str()
            .is_some_and(|u| u.starts_with("zz_sentinel"))
        {
            continue;
        }
        let id = format!(
            "{} {} {} {}",
            r["user_id"], r["window_start"], r["pane_index"], r["retraction"]
        );
        let vals = format!(
            "{} {} {} {}",
            r["tx_count"], r["amount_sum"], r["amount_max"], r["is_final"]
        );
        assert!(
            out.insert(id.clone(), vals).is_none(),
            "pane row {id} appears twice"
        );
    }
    out
}

/// Dead-letter reasons under a dead-letter directory, sorted.
fn dead_letter_reasons(dir: &Path) -> Vec<String> {
    let mut reasons = Vec::new();
    for f in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = f.file_name().to_string_lossy().to_string();
        if name.ends_with(".jsonl") && !name.starts_with('.') {
            for line in std::fs::read_to_string(f.path()).expect("read").lines() {
                let v: Value = serde_json::from_str(line).expect("dead letter JSON");
                reasons.push(v["reason"].as_str().expect("reason").to_string());
            }
        }
    }
    reasons.sort();
    reasons
}

/// The daemon's output under `dir` equals the reference: final panes (and
/// the group-by of the events), every pane row once, the Redis hashes, the
/// dead letters.
fn assert_matches_replay(dir: &Path, redis: &RedisServer, log: &Log, evs: &[Ev]) {
    let reference = replay(dir, log);
    let want = group_by(evs);
    let got = final_rows(dir).expect("no doubled final rows");
    super::assert_same(&got, &want);
    let ref_finals = final_rows(&reference.dir).expect("reference final rows");
    super::assert_same(&ref_finals, &want);
    let ours = pane_rows(&dir.join("data"));
    let theirs = pane_rows(&reference.dir.join("data"));
    assert_eq!(
        ours.len(),
        theirs.len(),
        "pane rows: daemon {} vs replay {}",
        ours.len(),
        theirs.len()
    );
    for (id, v) in &theirs {
        assert_eq!(ours.get(id), Some(v), "pane {id}");
    }
    let a = redis_hashes(redis);
    let b = redis_hashes(&reference.redis);
    let only_ours: Vec<_> = a.keys().filter(|k| !b.contains_key(*k)).collect();
    let only_theirs: Vec<_> = b.keys().filter(|k| !a.contains_key(*k)).collect();
    assert!(
        only_ours.is_empty() && only_theirs.is_empty(),
        "Redis keys only the daemon wrote: {only_ours:?}; only the replay: {only_theirs:?}"
    );
    for (k, v) in &b {
        assert_eq!(a.get(k), Some(v), "Redis hash {k}");
    }
    assert_eq!(
        dead_letter_reasons(&dir.join("data/_dead_letter/spend")),
        dead_letter_reasons(&reference.dir.join("data/_dead_letter/spend")),
        "dead letters: daemon vs replay"
    );
}

fn wait_exit(d: &mut Daemon, secs: u64, what: &str) {
    wait_for(secs, what, || d.child.try_wait().ok().flatten().is_some());
}

#[test]
fn kill_9_at_five_points_equals_an_uninterrupted_replay() {
    let tmp = tempfile::tempdir().expect("tmp");
    let redis = RedisServer::start(&tmp.path().join("redis"));
    let kafka = Kafka::start();
    let evs = events(6000, 41);
    let chunks: Vec<&[Ev]> = evs.chunks(1000).collect();
    let mut log = Log::new();
    let mut rng = Lcg(41);
    log.produce(&kafka, chunks[0]);
    log.bad(&kafka, 0, "not json at all");
    // (what kills the daemon, the RILL_CRASH_AT value if any)
    let points = [
        ("consumption", None),
        ("checkpoint.taken", Some(1 + rng.below(3))),
        ("checkpoint.stored", Some(1 + rng.below(3))),
        ("checkpoint.published", Some(1 + rng.below(3))),
        ("consumption", None),
    ];
    for (round, (point, nth)) in points.iter().enumerate() {
        let crash = nth.map(|n| format!("{point}:{n}"));
        let env: Vec<(&str, &str)> = crash
            .as_deref()
            .map(|c| vec![("RILL_CRASH_AT", c)])
            .unwrap_or_default();
        let mut d = Daemon::start_env(
            tmp.path(),
            PIPELINE,
            &kafka.brokers(),
            &redis.url(),
            &[],
            &env,
        );
        // New records while this run consumes.
        log.produce(&kafka, chunks[round + 1]);
        if round == 2 {
            log.bad(
                &kafka,
                1,
                r#"{"amount":1,"event_time":"2026-01-05T00:00:00Z"}"#,
            );
        }
        match &crash {
            Some(c) => wait_exit(&mut d, 120, &format!("the crash at {c}")),
            None => {
                // Some way into what this run reads (at least the new
                // records), at a point of the seed's choosing.
                let target = 100.0 + rng.below(800) as f64;
                wait_for(120, "records consumed before the kill", || {
                    d.metric("rill_records_total") >= target
                });
                d.child.kill().expect("SIGKILL");
                let _ = d.child.wait();
            }
        }
        let log_text = std::fs::read_to_string(tmp.path().join(format!("daemon-{}.log", d.http)))
            .unwrap_or_default();
        if let Some(c) = &crash {
            assert!(
                log_text.contains("RILL_CRASH_AT: killing the process"),
                "round {round} did not die at {c}:\n{log_text}"
            );
        }
    }
    log.sentinels(&kafka, end_of(&evs));
    let d = Daemon::start(tmp.path(), &kafka.brokers(), &redis.url(), &[]);
    let want = group_by(&evs);
    wait_for_finals(tmp.path(), &want);
    let (st, _) = d.stop();
    assert!(st.success(), "{st:?}");
    assert_matches_replay(tmp.path(), &redis, &log, &evs);
}

#[test]
fn redis_losing_its_data_is_noticed_and_rewritten_from_state() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut redis = RedisServer::start(&tmp.path().join("redis"));
    let kafka = Kafka::start();
    let evs = events(4000, 43);
    let (a, rest) = evs.split_at(2000);
    let (b, c) = rest.split_at(1000);
    let mut log = Log::new();
    log.produce(&kafka, a);
    let d = Daemon::start(tmp.path(), &kafka.brokers(), &redis.url(), &[]);
    wait_for(120, "the first records consumed", || {
        d.metric("rill_records_total") >= 2000.0
    });
    // Two checkpoints after the last record: every pane so far is in Redis.
    let n = d.metric("rill_checkpoints_total");
    wait_for(120, "two checkpoints", || {
        d.metric("rill_checkpoints_total") >= n + 2.0
    });
    let before = redis_hashes(&redis);
    assert!(before.len() >= 30, "{} keys", before.len());

    // Redis dies and comes back empty while the daemon runs.
    redis.lose_data_and_restart();
    wait_for(120, "the lost keys written again", || {
        redis_hashes(&redis) == before
    });
    assert!(d.metric("rill_online_rewrites_total") >= before.len() as f64);
    let log_text =
        std::fs::read_to_string(tmp.path().join(format!("daemon-{}.log", d.http))).expect("log");
    assert!(
        log_text.contains("the online store lost its data"),
        "{log_text}"
    );
    // The TTL left is kept.
    let mut conn = redis.conn();
    for k in before.keys() {
        let ttl: i64 = redis::cmd("TTL").arg(k).query(&mut conn).expect("ttl");
        assert!(ttl > 29 * 86400 && ttl <= 30 * 86400, "{k} ttl {ttl}");
    }

    // Again while the daemon is down: the restarted daemon rewrites from
    // its checkpoints.
    log.produce(&kafka, b);
    wait_for(120, "the second records consumed", || {
        d.metric("rill_records_total") >= 3000.0
    });
    let n = d.metric("rill_checkpoints_total");
    wait_for(120, "two checkpoints", || {
        d.metric("rill_checkpoints_total") >= n + 2.0
    });
    let (st, _) = d.stop();
    assert!(st.success());
    let before = redis_hashes(&redis);
    redis.lose_data_and_restart();
    let d = Daemon::start(tmp.path(), &kafka.brokers(), &redis.url(), &[]);
    wait_for(
        120,
        "the keys lost while the daemon was down written again",
        || redis_hashes(&redis) == before,
    );
    log.produce(&kafka, c);
    log.sentinels(&kafka, end_of(&evs));
    wait_for_finals(tmp.path(), &group_by(&evs));
    let (st, _) = d.stop();
    assert!(st.success());
    assert_matches_replay(tmp.path(), &redis, &log, &evs);
}

/// Events of many users, so that a window boundary completes many keys.
fn many_user_events(n: u64, seed: u64) -> Vec<Ev> {
    let mut evs = events(n, seed);
    for (i, e) in evs.iter_mut().enumerate() {
        let user = format!("{}_{}", e.user, i % 50);
        e.json = e
            .json
            .replacen(&format!("\"{}\"", e.user), &format!("\"{user}\""), 1);
        e.user = user;
    }
    evs
}

#[test]
fn a_slow_redis_pauses_consumption_reports_it_and_loses_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let redis = RedisServer::start(&tmp.path().join("redis"));
    let proxy = SlowProxy::start(redis.port, 400);
    let kafka = Kafka::start();
    let evs = many_user_events(20_000, 47);
    let mut log = Log::new();
    log.produce(&kafka, &evs);
    log.sentinels(&kafka, end_of(&evs));
    // One batch may wait for the writer: the second one emitted while the
    // first is written pauses consumption, whatever the machine's speed.
    let d = Daemon::start(
        tmp.path(),
        &kafka.brokers(),
        &proxy.url(),
        &["--online-queue", "1"],
    );
    wait_for(120, "a pause for the slow online store", || {
        d.metric("rill_backpressure_pauses_total") >= 1.0
    });
    // The slow writes show in the write latency.
    wait_for(60, "a slow write acknowledged", || {
        d.metric("rill_redis_write_seconds_count") >= 1.0
    });
    let m = d.metrics();
    let sum = d.metric("rill_redis_write_seconds_sum");
    let count = d.metric("rill_redis_write_seconds_count");
    assert!(count >= 1.0 && sum / count >= 0.3, "{m}");
    let log_text =
        std::fs::read_to_string(tmp.path().join(format!("daemon-{}.log", d.http))).expect("log");
    assert!(log_text.contains("online store behind"), "{log_text}");
    // The fault ends: everything arrives.
    proxy
        .delay_ms
        .store(0, std::sync::atomic::Ordering::Relaxed);
    wait_for_finals(tmp.path(), &group_by(&evs));
    wait_for(120, "consumption resumed", || {
        d.metric("rill_consumer_paused") == 0.0
    });
    let (st, _) = d.stop();
    assert!(st.success());
    assert_matches_replay(tmp.path(), &redis, &log, &evs);
}

/// A tmpfs of `mb` MiB at `dir`, unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, mb: u32) -> Tmpfs {
        std::fs::create_dir_all(dir).expect("mount point");
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("mount runs");
        assert!(
            st.success(),
            "mounting a tmpfs needs root (CAP_SYS_ADMIN); the test command runs as root"
        );
        Tmpfs(dir.to_path_buf())
    }

    /// Fills the file system but for `leave` bytes.
    fn fill(&self, leave: u64) -> std::path::PathBuf {
        use std::io::Write;
        let filler = self.0.join("filler");
        let mut f = std::fs::File::create(&filler).expect("filler");
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let _ = f.flush();
        drop(f);
        let len = std::fs::metadata(&filler).expect("filler").len();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&filler)
            .expect("filler");
        file.set_len(len.saturating_sub(leave)).expect("truncate");
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .args(["-l"])
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_full_disk_for_parquet_pauses_reports_and_recovers() {
    let tmp = tempfile::tempdir().expect("tmp");
    let redis = RedisServer::start(&tmp.path().join("redis"));
    let kafka = Kafka::start();
    let disk = Tmpfs::mount(&tmp.path().join("data"), 8);
    let filler = disk.fill(0);
    let evs = events(4000, 53);
    let mut log = Log::new();
    log.produce(&kafka, &evs);
    log.bad(&kafka, 0, "not json at all");
    log.sentinels(&kafka, end_of(&evs));
    let d = Daemon::start(tmp.path(), &kafka.brokers(), &redis.url(), &[]);
    wait_for(120, "failed storage writes", || {
        d.metric("rill_storage_errors_total") >= 2.0
    });
    assert_eq!(d.metric("rill_storage_failing"), 1.0, "{}", d.metrics());
    // Nothing is published while the disk is full.
    assert!(final_rows(tmp.path()).is_ok_and(|r| r.len() < group_by(&evs).len()));
    let log_text =
        std::fs::read_to_string(tmp.path().join(format!("daemon-{}.log", d.http))).expect("log");
    assert_eq!(
        log_text.matches("storage write failed").count(),
        1,
        "logged once when it starts: {log_text}"
    );
    // The disk gets room again.
    std::fs::remove_file(filler).expect("remove filler");
    wait_for_finals(tmp.path(), &group_by(&evs));
    wait_for(120, "storage writable again", || {
        d.metric("rill_storage_failing") == 0.0
    });
    let http = d.http;
    let (st, _) = d.stop();
    assert!(st.success());
    let log_text =
        std::fs::read_to_string(tmp.path().join(format!("daemon-{http}.log"))).expect("log");
    assert!(log_text.contains("storage writable again"), "{log_text}");
    assert_matches_replay(tmp.path(), &redis, &log, &evs);
    drop(disk);
}

#[test]
fn the_broker_going_away_mid_stream_loses_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let redis = RedisServer::start(&tmp.path().join("redis"));
    let kafka = Kafka::start();
    if kafka.is_tansu() {
        return; // broker_down is the mock cluster's
    }
    let evs = events(4000, 59);
    let (a, b) = evs.split_at(2000);
    let mut log = Log::new();
    log.produce(&kafka, a);
    let d = Daemon::start(tmp.path(), &kafka.brokers(), &redis.url(), &[]);
    wait_for(120, "the first records consumed", || {
        d.metric("rill_records_total") >= 1000.0
    });
    let super::Broker::Mock(cluster) = &kafka.broker else {
        unreachable!("checked above")
    };
    cluster.broker_down(1).expect("broker down");
    // The daemon goes on without it (checkpoints, no records) and logs it.
    let n = d.metric("rill_checkpoints_total");
    let t = Instant::now();
    wait_for(60, "checkpoints while the broker is down", || {
        d.metric("rill_checkpoints_total") >= n + 2.0 && t.elapsed() >= Duration::from_secs(3)
    });
    cluster.broker_up(1).expect("broker up");
    // The producer reconnects in its own time.
    for e in b {
        kafka.send(
            super::partition_of(&e.user, kafka.partitions),
            &e.user,
            Some(e.json.as_bytes()),
        );
    }
    let t = Instant::now();
    while kafka.producer.flush(Duration::from_secs(10)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(240),
            "the producer never reconnected"
        );
    }
    log.lines.extend(b.iter().map(|e| e.json.clone()));
    log.sentinels(&kafka, end_of(&evs));
    wait_for_finals(tmp.path(), &group_by(&evs));
    let (st, _) = d.stop();
    assert!(st.success());
    assert_matches_replay(tmp.path(), &redis, &log, &evs);
}

/// One hour at a steady rate (opt in: `RILL_SOAK=1`): the daemon's RSS,
/// sampled every minute, stays flat, and nothing is lost.
#[test]
fn soak_one_hour_at_a_steady_rate() {
    if std::env::var("RILL_SOAK").map_or(true, |v| v != "1") {
        return;
    }
    let minutes: u64 = std::env::var("RILL_SOAK_MINUTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let tmp = tempfile::tempdir().expect("tmp");
    let redis = RedisServer::start(&tmp.path().join("redis"));
    let kafka = Kafka::start();
    // 100 events/s: 6,000 a minute, each minute's events one day of event time.
    let per_minute = 6000;
    let all = events(per_minute * minutes, 61);
    let mut log = Log::new();
    let d = Daemon::start(tmp.path(), &kafka.brokers(), &redis.url(), &[]);
    let rss = |pid: u32| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0)
    };
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut second = 0u64;
    for (m, chunk) in all.chunks(per_minute as usize).enumerate() {
        for part in chunk.chunks(100) {
            log.produce(&kafka, part);
            // Paced by the wall clock: 100 events every second.
            second += 1;
            let due = started + Duration::from_secs(second);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let kib = rss(d.child.id());
        eprintln!("soak minute {}: RSS {} MiB", m + 1, kib / 1024);
        samples.push(kib);
        // The daemon keeps up (and the mock cluster's bounded tail holds).
        let produced = ((m + 1) as u64 * per_minute) as f64;
        wait_for(120, "the daemon keeping up", || {
            d.metric("rill_records_total") >= produced
        });
    }
    log.sentinels(&kafka, end_of(&all));
    wait_for_finals(tmp.path(), &group_by(&all));
    let (st, _) = d.stop();
    assert!(st.success());
    // Flat: the last quarter's median within 1.5 times the second quarter's.
    let q = samples.len() / 4;
    if q >= 1 {
        let mut early: Vec<u64> = samples[q..2 * q].to_vec();
        let mut late: Vec<u64> = samples[samples.len() - q..].to_vec();
        early.sort_unstable();
        late.sort_unstable();
        let (e, l) = (early[early.len() / 2], late[late.len() / 2]);
        eprintln!(
            "soak: {} minutes, RSS median {} MiB then {} MiB, {:.0} s",
            samples.len(),
            e / 1024,
            l / 1024,
            started.elapsed().as_secs_f64()
        );
        assert!(l as f64 <= e as f64 * 1.5, "RSS grew: {samples:?}");
    }
    assert_matches_replay(tmp.path(), &redis, &log, &all);
}
