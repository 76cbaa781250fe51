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

#[test]
fn a_daemon_on_object_storage_killed_between_checkpoint_and_publication_loses_nothing() {
    let server = s3();
    let tmp = tempfile::tempdir().expect("tmp");
    let redis = RedisServer::start(&tmp.path().join("redis"));
    let kafka = Kafka::start();
    let evs = events(3000, 23);
    let (a, b) = evs.split_at(1500);
    let prefix = server.prefix("daemon");
    let (state, data) = (format!("{prefix}/state"), format!("{prefix}/data"));
    let stores = (Path::new(&state), Path::new(&data));
    let env: Vec<(&str, String)> = server.env();
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();

    kafka.produce(a);
    kafka.send(0, "bad", Some(b"not json at all"));
    // One checkpoint only, at SIGTERM, killed once the first partition's
    // is stored: its files are uploaded under temporary names, listed by
    // the stored checkpoint and not yet moved into place.
    env.push(("RILL_CRASH_AT", "checkpoint.stored:1"));
    let mut d = Daemon::start_stores(
        tmp.path(),
        PIPELINE,
        &kafka.brokers(),
        &redis.url(),
        stores,
        &["--checkpoint-interval", "1h"],
        &env,
    );
    wait_for(120, "the first batch consumed", || {
        d.metric("rill_events_total") >= a.len() as f64
    });
    crate::util::unsafe_kill(d.child.id(), "TERM");
    wait_for(120, "the crash after a stored checkpoint", || {
        d.child.try_wait().ok().flatten().is_some()
    });
    env.pop();
    let log = std::fs::read_to_string(tmp.path().join(format!("daemon-{}.log", d.http)))
        .unwrap_or_default();
    assert!(log.contains("RILL_CRASH_AT: killing the process"), "{log}");
    assert!(
        rill::storage::exists(&format!("{state}/spend/tx/partition-0.json")).expect("lookup"),
        "the checkpoint is an object"
    );

    // What the killed run stored but did not publish: temporary objects
    // its checkpoints list (the restart rolls them forward).
    let mut listed_pending = 0;
    for p in 0..kafka.partitions {
        let url = format!("{state}/spend/tx/partition-{p}.json");
        if let Some((body, _)) = rill::storage::get(&url).expect("read") {
            let c: Value = serde_json::from_slice(&body).expect("checkpoint JSON");
            for pair in c["pending_files"].as_array().into_iter().flatten() {
                let tmp = pair[0].as_str().expect("url");
                assert!(tmp.starts_with(&data), "{tmp}");
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

    kafka.produce(b);
    kafka.sentinels(end_of(&evs));
    let d = Daemon::start_stores(
        tmp.path(),
        PIPELINE,
        &kafka.brokers(),
        &redis.url(),
        stores,
        &[],
        &env,
    );
    let want = group_by(&evs);
    let got = tmp.path().join("got");
    wait_for(150, "every final pane in the bucket", || {
        fetch(&prefix, &got);
        final_rows(&got).is_ok_and(|g| g.len() >= want.len())
    });
    let (st, _) = d.stop();
    assert!(st.success(), "clean exit on SIGTERM: {st:?}");
    fetch(&prefix, &got);
    assert_same(&final_rows(&got).expect("no doubled rows"), &want);
    let listed = rill::storage::list(&data).expect("list");
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
    let server = s3();
    let tmp = tempfile::tempdir().expect("tmp");
    let redis = RedisServer::start(&tmp.path().join("redis"));
    let kafka = Kafka::start();
    let evs = events(3000, 29);
    let (a, b) = evs.split_at(1500);
    let prefix = server.prefix("zombie");
    let (state, data) = (format!("{prefix}/state"), format!("{prefix}/data"));
    let stores = (Path::new(&state), Path::new(&data));
    let env: Vec<(&str, String)> = server.env();
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    kafka.produce(a);
    // The first instance stops itself in its second checkpoint, after
    // storing the first partition's checkpoint and before storing the
    // second's: when it wakes up it goes straight on to that write, as an
    // instance cut off from the group would, without learning that the
    // group moved its partitions.
    env.push(("RILL_STOP_AT", "checkpoint.stored:3"));
    let zombie = Daemon::start_stores(
        tmp.path(),
        PIPELINE,
        &kafka.brokers(),
        &redis.url(),
        stores,
        &[],
        &env,
    );
    wait_for(120, "the first instance to stop in a checkpoint", || {
        stopped(zombie.child.id())
    });
    env.pop();
    let gens = generations(&state, kafka.partitions);
    assert!(gens.iter().all(|&g| g >= 1), "{gens:?}");
    // A second instance takes both partitions over once the first one's
    // session times out, and claims them.
    let owner = Daemon::start_stores(
        tmp.path(),
        PIPELINE,
        &kafka.brokers(),
        &redis.url(),
        stores,
        &[],
        &env,
    );
    wait_for(120, "the second instance to claim both partitions", || {
        generations(&state, kafka.partitions)
            .iter()
            .zip(&gens)
            .all(|(now, before)| now > before)
    });
    // The zombie wakes up where it stopped: its checkpoint writes are refused.
    crate::util::unsafe_kill(zombie.child.id(), "CONT");
    wait_for(120, "the zombie to be fenced", || {
        zombie.metric("rill_fenced_partitions_total") >= 1.0
    });
    let log = std::fs::read_to_string(tmp.path().join(format!("daemon-{}.log", zombie.http)))
        .unwrap_or_default();
    assert!(
        log.contains("partition claimed by another instance"),
        "{log}"
    );
    kafka.produce(b);
    kafka.sentinels(end_of(&evs));
    let want = group_by(&evs);
    let got = tmp.path().join("got");
    wait_for(150, "every final pane in the bucket", || {
        fetch(&prefix, &got);
        final_rows(&got).is_ok_and(|g| g.len() >= want.len())
    });
    let _ = zombie.stop();
    let _ = owner.stop();
    fetch(&prefix, &got);
    assert_same(&final_rows(&got).expect("no doubled rows"), &want);
}
