//! The daemon writing to a real Redis Cluster (three primaries, each with
//! a replica), and a primary killed mid-stream.

use super::*;
use crate::cluster_util::RedisCluster;

#[test]
fn a_redis_cluster_takes_every_pane_and_a_primary_failover_loses_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut cluster = RedisCluster::start(&tmp.path().join("cluster"));
    let kafka = Kafka::start();
    let evs = events(4000, 23);
    let (a, b) = evs.split_at(2000);
    kafka.produce(a);
    let d = Daemon::start(tmp.path(), &kafka.brokers(), &cluster.url(), &[]);
    wait_for(
        60,
        "the first batch consumed and panes written online",
        || d.metric("rill_events_total") >= 2000.0 && d.metric("rill_online_rows_total") >= 1.0,
    );
    // The primary of the first user's hash dies; its replica takes over
    // after the node timeout. Writes to its slots fail meanwhile and are
    // retried.
    let victim = cluster.primary_of(&format!("rill:{{{}}}:spend", a[0].user));
    cluster.kill(victim);
    kafka.produce(b);
    kafka.sentinels(end_of(&evs));
    cluster.wait_healthy();
    assert_ne!(
        cluster.primary_of(&format!("rill:{{{}}}:spend", a[0].user)),
        victim,
        "a replica took over"
    );
    let want = group_by(&evs);
    wait_for_finals(tmp.path(), &want);
    let (st, _) = d.stop();
    assert!(st.success(), "clean exit on SIGTERM: {st:?}");
    assert_same(&final_rows(tmp.path()).expect("no doubled rows"), &want);
    check_hashes(
        |key| {
            let h = cluster.hgetall(key);
            (h, cluster.ttl(key))
        },
        &want,
    );
    // Every hash of the group is one of a user's (nothing written under a
    // wrong or doubled key); the loss markers and the freshness report sit on
    // their own keys, and the sentinels' windows never close in a daemon.
    let users: BTreeSet<String> = evs.iter().map(|e| e.user.clone()).collect();
    let keys: Vec<String> = cluster
        .keys()
        .into_iter()
        .filter(|k| {
            k.starts_with("rill:{")
                && k.ends_with(":spend")
                && !k.contains("{%")
                && !k.contains("zz_sentinel")
        })
        .collect();
    let want_keys: Vec<String> = users
        .iter()
        .filter(|u| !u.starts_with("zz_sentinel"))
        .map(|u| format!("rill:{{{u}}}:spend"))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(keys, want_keys);
}
