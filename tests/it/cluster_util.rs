//! A real Redis Cluster for the tests: six local `redis-server
//! --cluster-enabled yes` nodes joined by `redis-cli --cluster create
//! --cluster-replicas 1` (three primaries, each with a replica).

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisCluster {
    pub ports: Vec<u16>,
    children: Vec<Option<Child>>,
    dir: PathBuf,
}

/// A free port whose cluster bus port (the port + 10000) is free too.
fn free_cluster_port(taken: &[u16]) -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let p = l.local_addr().expect("addr").port();
        if !(1024..=55_000).contains(&p) || taken.contains(&p) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok() {
            return p;
        }
    }
}

impl RedisCluster {
    pub fn start(dir: &Path) -> RedisCluster {
        for _ in 0..5 {
            if let Some(c) = RedisCluster::try_start(dir) {
                return c;
            }
        }
        panic!("could not start a Redis Cluster on free ports");
    }

    fn try_start(dir: &Path) -> Option<RedisCluster> {
        let _ = std::fs::remove_dir_all(dir);
        let mut ports = Vec::new();
        for _ in 0..6 {
            let p = free_cluster_port(&ports);
            ports.push(p);
        }
        let mut c = RedisCluster {
            ports: ports.clone(),
            children: Vec::new(),
            dir: dir.to_path_buf(),
        };
        for i in 0..6 {
            let child = c.spawn(i);
            c.children.push(Some(child));
        }
        for (i, p) in ports.iter().enumerate() {
            let t = Instant::now();
            loop {
                if let Some(ch) = c.children[i].as_mut() {
                    if ch.try_wait().expect("wait").is_some() {
                        // The port was taken meanwhile.
                        return None;
                    }
                }
                if ping(*p) {
                    break;
                }
                assert!(
                    t.elapsed() < Duration::from_secs(60),
                    "redis node {p} starts"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let nodes: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&nodes)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli is installed (scripts/test.sh installs it)");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        c.wait_healthy();
        Some(c)
    }

    fn spawn(&self, i: usize) -> Child {
        let p = self.ports[i];
        let d = self.dir.join(p.to_string());
        std::fs::create_dir_all(&d).expect("node dir");
        Command::new("redis-server")
            .args(["--port", &p.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ])
            .args([
                "--cluster-node-timeout",
                "2000",
                "--save",
                "",
                "--appendonly",
                "yes",
            ])
            .args(["--logfile", "redis.log"])
            .arg("--dir")
            .arg(&d)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed")
    }

    /// The `redis+cluster://` URL of every node.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    fn live_ports(&self) -> Vec<u16> {
        self.ports
            .iter()
            .zip(&self.children)
            .filter(|(_, c)| c.is_some())
            .map(|(p, _)| *p)
            .collect()
    }

    /// Waits until every live node reports `cluster_state:ok`, every
    /// slot is served by a live primary and every live replica is in sync
    /// with its primary (a replica that never synced would not take over).
    pub fn wait_healthy(&self) {
        let live = self.live_ports();
        let healthy = || {
            live.iter().all(|p| {
                info(*p, "CLUSTER", "INFO").is_some_and(|s| s.contains("cluster_state:ok"))
                    && info(*p, "INFO", "replication").is_some_and(|s| {
                        s.contains("role:master") || s.contains("master_link_status:up")
                    })
            }) && self.primaries().iter().all(|(_, _, p)| live.contains(p))
        };
        let t = Instant::now();
        while !healthy() {
            if t.elapsed() > Duration::from_secs(240) {
                let nodes: Vec<String> = live
                    .iter()
                    .map(|p| format!("{p}: {:?}", info(*p, "CLUSTER", "NODES")))
                    .collect();
                panic!(
                    "timed out waiting for the Redis Cluster to be healthy:\n{}",
                    nodes.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// (first slot, last slot, primary port) of each slot range.
    pub fn primaries(&self) -> Vec<(i64, i64, u16)> {
        for p in self.live_ports() {
            let Ok(mut c) = conn(p) else { continue };
            let Ok(v) = redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query::<Vec<redis::Value>>(&mut c)
            else {
                continue;
            };
            let mut out = Vec::new();
            for r in v {
                let redis::Value::Array(r) = r else { continue };
                let (
                    Some(redis::Value::Int(a)),
                    Some(redis::Value::Int(b)),
                    Some(redis::Value::Array(n)),
                ) = (r.first(), r.get(1), r.get(2))
                else {
                    continue;
                };
                if let Some(redis::Value::Int(port)) = n.get(1) {
                    out.push((*a, *b, *port as u16));
                }
            }
            return out;
        }
        Vec::new()
    }

    /// The port of the primary serving `key`.
    pub fn primary_of(&self, key: &str) -> u16 {
        let slot = slot(key);
        self.primaries()
            .into_iter()
            .find(|(a, b, _)| (*a..=*b).contains(&slot))
            .map(|(_, _, p)| p)
            .expect("every slot is served")
    }

    /// SIGKILL of the node on `port` (its replica takes over after the
    /// node timeout).
    pub fn kill(&mut self, port: u16) {
        let i = self.ports.iter().position(|p| *p == port).expect("a node");
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A connection to the cluster through its live nodes.
    fn connection(&self) -> redis::cluster::ClusterConnection {
        let nodes: Vec<String> = self
            .live_ports()
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect();
        let client = redis::cluster::ClusterClient::new(nodes).expect("cluster client");
        client.get_connection().expect("cluster connection")
    }

    /// Every field of `key`, read through a cluster connection.
    pub fn hgetall(&self, key: &str) -> BTreeMap<String, String> {
        redis::cmd("HGETALL")
            .arg(key)
            .query(&mut self.connection())
            .expect("hgetall")
    }

    /// The remaining time to live of `key` in seconds.
    pub fn ttl(&self, key: &str) -> i64 {
        redis::cmd("TTL")
            .arg(key)
            .query(&mut self.connection())
            .expect("ttl")
    }

    /// The keys of every primary, sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut out = Vec::new();
        let primaries: std::collections::BTreeSet<u16> =
            self.primaries().into_iter().map(|(_, _, p)| p).collect();
        for p in primaries {
            let mut c = conn(p).expect("node");
            let ks: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut c).expect("keys");
            out.extend(ks);
        }
        out.sort();
        out
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for c in self.children.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn conn(port: u16) -> redis::RedisResult<redis::Connection> {
    let c = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    let c = c.get_connection_with_timeout(Duration::from_secs(1))?;
    c.set_read_timeout(Some(Duration::from_secs(2)))?;
    Ok(c)
}

fn ping(port: u16) -> bool {
    conn(port)
        .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
        .is_ok()
}

fn info(port: u16, a: &str, b: &str) -> Option<String> {
    let mut c = conn(port).ok()?;
    redis::cmd(a).arg(b).query::<String>(&mut c).ok()
}

/// The hash slot of a key (CRC16 of its hash tag, mod 16384), computed
/// here (not with rill's code).
pub fn slot(key: &str) -> i64 {
    let b = key.as_bytes();
    let tagged = match b.iter().position(|&c| c == b'{') {
        Some(s) => match b[s + 1..].iter().position(|&c| c == b'}') {
            Some(len) if len > 0 => &b[s + 1..s + 1 + len],
            _ => b,
        },
        None => b,
    };
    let mut crc: u16 = 0;
    for &x in tagged {
        crc ^= (x as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    (crc % 16384) as i64
}
