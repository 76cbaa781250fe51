//! The daemon with its checkpoints, Parquet and dead letters in object
//! storage (a real SeaweedFS, see `seaweed`), killed between storing a
//! checkpoint and publishing its files.

use std::path::Path;

use serde_json::Value;

use super::{assert_same, end_of, events, final_rows, group_by, Daemon, Kafka, PIPELINE};
use crate::seaweed::s3;
use crate::util::{files_with, wait_for, RedisServer};

/// The bucket's `data` prefix, downloaded into a fresh `<local>/data`.
fn fetch(prefix: &str, local: &Path) {
    let _ = std::fs::remove_dir_all(local);
    s3().download(&format!("{prefix}/data"), &local.join("data"));
}

/// A test's parts: Redis, a broker, events, and the daemon's state and
/// data under a fresh prefix of the bucket.
struct Setup {
    tmp: tempfile::TempDir,
    redis: RedisServer,
    kafka: Kafka,
    evs: Vec<super::Ev>,
    prefix: String,
    state: String,
    data: String,
    env: Vec<(&'static str, String)>,
}

impl Setup {
    fn new(name: &str, seed: u64) -> Setup {
        let server = s3();
        let tmp = tempfile::tempdir().expect("tmp");
        let redis = RedisServer::start(&tmp.path().join("redis"));
        let prefix = server.prefix(name);
        Setup {
            redis,
            kafka: Kafka::start(),
            evs: events(3000, seed),
            state: format!("{prefix}/state"),
            data: format!("{prefix}/data"),
            prefix,
            env: server.env(),
            tmp,
        }
    }

    /// A daemon on the bucket, with `more` in its environment.
    fn daemon(&self, extra: &[&str], more: &[(&str, &str)]) -> Daemon {
        let mut env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        env.extend_from_slice(more);
        Daemon::start_stores(
            self.tmp.path(),
            PIPELINE,
            &self.kafka.brokers(),
            &self.redis.url(),
            (Path::new(&self.state), Path::new(&self.data)),
            extra,
            &env,
        )
    }

    fn log(&self, d: &Daemon) -> String {
        std::fs::read_to_string(self.tmp.path().join(format!("daemon-{}.log", d.http)))
            .unwrap_or_default()
    }

    /// Produces the second half of the events and the sentinels, waits for
    /// every final pane in the bucket, stops the daemons and checks each
    /// window is there once with the group-by's values.
    fn finish(&self, rest: &[super::Ev], daemons: Vec<Daemon>) -> std::path::PathBuf {
        self.kafka.produce(rest);
        self.kafka.sentinels(end_of(&self.evs));
        let want = group_by(&self.evs);
        let got = self.tmp.path().join("got");
        wait_for(150, "every final pane in the bucket", || {
            fetch(&self.prefix, &got);
            final_rows(&got).is_ok_and(|g| g.len() >= want.len())
        });
        for d in daemons {
            let (st, _) = d.stop();
            assert!(st.success(), "clean exit on SIGTERM: {st:?}");
        }
        fetch(&self.prefix, &got);
        assert_same(&final_rows(&got).expect("no doubled rows"), &want);
        got
    }
}

#[test]
fn a_daemon_on_object_storage_killed_between_checkpoint_and_publication_loses_nothing() {
    let t = Setup::new("daemon", 23);
    let (a, b) = t.evs.split_at(1500);
    t.kafka.produce(a);
    t.kafka.send(0, "bad", Some(b"not json at all"));
    // One checkpoint only, at SIGTERM, killed once the first partition's
    // is stored: its files are uploaded under temporary names, listed by
    // the stored checkpoint and not yet moved into place.
    let mut d = t.daemon(
        &["--checkpoint-interval", "1h"],
        &[("RILL_CRASH_AT", "checkpoint.stored:1")],
    );
    wait_for(120, "the first batch consumed", || {
        d.metric("rill_events_total") >= a.len() as f64
    });
    crate::util::unsafe_kill(d.child.id(), "TERM");
    wait_for(120, "the crash after a stored checkpoint", || {
        d.child.try_wait().ok().flatten().is_some()
    });
    let log = t.log(&d);
    assert!(log.contains("RILL_CRASH_AT: killing the process"), "{log}");
    // What the killed run stored but did not publish: temporary objects
    // its checkpoints list (the restart rolls them forward).
    let mut listed_pending = 0;
    for p in 0..t.kafka.partitions {
        let url = format!("{}/spend/tx/partition-{p}.json", t.state);
        if let Some((body, _)) = rill::storage::get(&url).expect("read") {
            let c: Value = serde_json::from_slice(&body).expect("checkpoint JSON");
            for pair in c["pending_files"].as_array().into_iter().flatten() {
                let tmp = pair[0].as_str().expect("url");
                assert!(tmp.starts_with(&t.data), "{tmp}");
                if rill::storage::exists(tmp).expect("lookup") {
                    listed_pending += 1;
                }
            }
        }
    }
    assert!(
        listed_pending > 0,
        "the stored checkpoint lists no unpublished object"
    );

    let d = t.daemon(&[], &[]);
    let got = t.finish(b, vec![d]);
    let listed = rill::storage::list(&t.data).expect("list");
    assert!(
        listed.iter().all(|n| !n.ends_with(".tmp")),
        "unpublished objects left: {listed:?}"
    );
    // The bad record is a dead letter, once.
    let mut letters = Vec::new();
    for f in files_with(&got.join("data").join("_dead_letter"), "jsonl") {
        for line in std::fs::read_to_string(&f).expect("read").lines() {
            let v: Value = serde_json::from_str(line).expect("dead letter JSON");
            letters.push(v["reason"].as_str().expect("reason").to_string());
        }
    }
    assert_eq!(letters.len(), 1, "{letters:?}");
}

/// The generation stored in each partition's checkpoint object.
fn generations(state: &str, partitions: i32) -> Vec<u64> {
    (0..partitions)
        .map(|p| {
            let url = format!("{state}/spend/tx/partition-{p}.json");
            rill::storage::get(&url)
                .expect("read")
                .map_or(0, |(body, _)| {
                    let c: Value = serde_json::from_slice(&body).expect("checkpoint JSON");
                    c["generation"].as_u64().expect("generation")
                })
        })
        .collect()
}

/// Whether process `pid` is stopped (SIGSTOP).
fn stopped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('T')))
        .unwrap_or(false)
}

#[test]
fn a_zombie_waking_in_a_checkpoint_is_fenced_and_nothing_is_doubled() {
    let t = Setup::new("zombie", 29);
    let (a, b) = t.evs.split_at(1500);
    t.kafka.produce(a);
    // The first instance stops itself in its second checkpoint, after
    // storing the first partition's checkpoint and before storing the
    // second's: when it wakes up it goes straight on to that write, as an
    // instance cut off from the group would, without learning that the
    // group moved its partitions.
    let zombie = t.daemon(&[], &[("RILL_STOP_AT", "checkpoint.stored:3")]);
    wait_for(120, "the first instance to stop in a checkpoint", || {
        stopped(zombie.child.id())
    });
    let gens = generations(&t.state, t.kafka.partitions);
    assert!(gens.iter().all(|&g| g >= 1), "{gens:?}");
    // A second instance takes both partitions over once the first one's
    // session times out, and claims them.
    let owner = t.daemon(&[], &[]);
    wait_for(120, "the second instance to claim both partitions", || {
        generations(&t.state, t.kafka.partitions)
            .iter()
            .zip(&gens)
            .all(|(now, before)| now > before)
    });
    // The zombie wakes up where it stopped: its checkpoint writes are refused.
    crate::util::unsafe_kill(zombie.child.id(), "CONT");
    wait_for(120, "the zombie to be fenced", || {
        zombie.metric("rill_fenced_partitions_total") >= 1.0
    });
    let log = t.log(&zombie);
    assert!(
        log.contains("partition claimed by another instance"),
        "{log}"
    );
    let _ = zombie.stop();
    t.finish(b, vec![owner]);
}
