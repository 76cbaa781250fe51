//! Security against real parts: TLS to Redis (redis-server's own TLS port,
//! with a client certificate and an ACL user), TLS to Kafka through stunnel
//! in front of librdkafka's mock cluster, API keys, limits and TLS on the
//! HTTP port, and no secret in any output. The certificates come from a CA
//! each test makes with the openssl command line.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::Value;

use crate::util::{free_port, rill, try_http_with, wait_for, ChildGuard};

/// A CA, a server certificate for 127.0.0.1 and localhost, and a client
/// certificate, all PEM (keys in PKCS #8).
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn pki(dir: &Path) -> Pki {
    std::fs::create_dir_all(dir).expect("pki dir");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=rill test CA",
        ],
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .expect("ext");
    for who in ["server", "client"] {
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{who}.key"),
                "-out",
                &format!("{who}.csr"),
                "-subj",
                &format!("/CN={who}"),
            ],
        );
        let mut args = vec![
            "x509",
            "-req",
            "-in",
            "",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "",
            "-days",
            "2",
        ];
        let csr = format!("{who}.csr");
        let pem = format!("{who}.pem");
        args[3] = &csr;
        args[10] = &pem;
        if who == "server" {
            args.extend(["-extfile", "server.ext"]);
        }
        openssl(dir, &args);
    }
    Pki {
        ca: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
    }
}

const REDIS_PASSWORD: &str = "redis-Pa55-not-for-logs";
const API_KEY: &str = "api-key-0123456789abcdef";

/// redis-server with only a TLS port that requires a client certificate,
/// the default user off and the ACL user `rill`.
fn tls_redis(dir: &Path, pki: &Pki) -> (ChildGuard, u16) {
    std::fs::create_dir_all(dir).expect("redis dir");
    for _ in 0..5 {
        let port = free_port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--tls-port",
                &port.to_string(),
            ])
            .arg("--tls-cert-file")
            .arg(&pki.server_cert)
            .arg("--tls-key-file")
            .arg(&pki.server_key)
            .arg("--tls-ca-cert-file")
            .arg(&pki.ca)
            .args(["--tls-auth-clients", "yes"])
            .args(["--user", "default", "off"])
            .args([
                "--user",
                "rill",
                "on",
                &format!(">{REDIS_PASSWORD}"),
                // The least the user needs (docs/security.md), and HGETALL
                // for this test to read back.
                "~rill:*",
                "+fcall",
                "+function|load",
                "+evalsha",
                "+script|load",
                "+hget",
                "+hset",
                "+hdel",
                "+hmget",
                "+pexpire",
                "+get",
                "+set",
                "+ping",
                "+hvals",
                "+hgetall",
            ])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        let mut guard = ChildGuard(child);
        let endpoint = endpoint(port, pki);
        let t = Instant::now();
        loop {
            if guard.0.try_wait().expect("wait").is_some() {
                break;
            }
            let pong = rill::sink::redis::client(&endpoint)
                .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            if pong.is_ok() {
                return (guard, port);
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "TLS redis-server did not answer: {pong:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("could not start a TLS redis-server");
}

fn endpoint(port: u16, pki: &Pki) -> rill::config::RedisEndpoint {
    rill::config::RedisEndpoint {
        url: format!("rediss://127.0.0.1:{port}"),
        username: Some("rill".into()),
        password: Some(rill::config::Secret::new(REDIS_PASSWORD)),
        ca_file: Some(pki.ca.clone()),
        cert_file: Some(pki.client_cert.clone()),
        key_file: Some(pki.client_key.clone()),
    }
}

fn spend_pipeline(redis_port: u16, pki: &Pki) -> String {
    format!(
        r#"version: 1
name: spend
description: spend per user
source:
  format: json
  key: [user_id]
  event_time: {{ field: ts, format: epoch_millis }}
window: {{ tumbling: {{ size: 5m }} }}
features:
  - {{ name: n, agg: count }}
  - {{ name: total, agg: sum, field: amount }}
sinks:
  online:
    redis:
      url: rediss://127.0.0.1:{redis_port}
      username: rill
      password: ${{RILL_TEST_REDIS_PASSWORD}}
      ca_file: {}
      cert_file: {}
      key_file: {}
      ttl: 30d
"#,
        pki.ca.display(),
        pki.client_cert.display(),
        pki.client_key.display()
    )
}

/// Events of three users in one recent 5-minute window, and their counts
/// and sums.
fn events_file(path: &Path) -> Vec<(String, i64, f64)> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let base = now_ms - now_ms % 300_000 - 600_000;
    let mut lines = String::new();
    let mut want = Vec::new();
    for (u, n) in [("u1", 3), ("u:2{x}", 5), ("u3", 1)] {
        let mut sum = 0.0;
        for i in 0..n {
            let amount = 1.25 * (i + 1) as f64;
            sum += amount;
            lines.push_str(&format!(
                "{{\"user_id\":\"{u}\",\"ts\":{},\"amount\":{amount}}}\n",
                base + i * 1000
            ));
        }
        want.push((u.to_string(), n, sum));
    }
    std::fs::write(path, lines).expect("events");
    want
}

fn assert_no_secret(what: &str, text: &str) {
    for s in [REDIS_PASSWORD, API_KEY] {
        assert!(!text.contains(s), "{what} shows a secret:\n{text}");
    }
}

#[test]
fn redis_over_tls_with_a_client_certificate_and_an_acl_user_and_no_secret_in_any_output() {
    let tmp = tempfile::tempdir().expect("tmp");
    let pki = pki(&tmp.path().join("pki"));
    let (_redis, port) = tls_redis(&tmp.path().join("redis"), &pki);
    let pipes = tmp.path().join("pipelines");
    std::fs::create_dir_all(&pipes).expect("dir");
    let pipe = pipes.join("spend.yaml");
    std::fs::write(&pipe, spend_pipeline(port, &pki)).expect("pipeline");
    let input = tmp.path().join("events.jsonl");
    let want = events_file(&input);

    // Without the variable the file is refused, naming the variable.
    let out = rill()
        .arg("validate")
        .arg(&pipe)
        .env_remove("RILL_TEST_REDIS_PASSWORD")
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("RILL_TEST_REDIS_PASSWORD") && err.contains(":17:"),
        "{err}"
    );

    let env = ("RILL_TEST_REDIS_PASSWORD", REDIS_PASSWORD);
    let out = rill()
        .arg("validate")
        .arg(&pipe)
        .env(env.0, env.1)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_no_secret(
        "rill validate",
        &format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    );

    // The writer: replay into Redis over TLS as the ACL user.
    let out = rill()
        .arg("replay")
        .arg(&pipe)
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(tmp.path().join("out"))
        .arg("--online")
        .env(env.0, env.1)
        .env("RILL_LOG", "debug")
        .output()
        .expect("runs");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{all}");
    assert_no_secret("rill replay --online (debug logs)", &all);
    let mut c = rill::sink::redis::client(&endpoint(port, &pki))
        .and_then(|c| c.get_connection())
        .expect("TLS connection");
    for (u, n, sum) in &want {
        let key = rill::sink::redis::online_key_text("rill", "spend", std::slice::from_ref(u));
        let h: std::collections::BTreeMap<String, String> = redis::cmd("HGETALL")
            .arg(&key)
            .query(&mut c)
            .expect("hgetall");
        assert_eq!(h.get("n"), Some(&n.to_string()), "{key}: {h:?}");
        let got: f64 = h["total"].parse().expect("number");
        assert!((got - sum).abs() < 1e-9, "{key}: {got} vs {sum}");
    }

    // A wrong password: refused, and the error does not show it.
    let out = rill()
        .arg("replay")
        .arg(&pipe)
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(tmp.path().join("out2"))
        .arg("--online")
        .env(env.0, "wrong-Pa55-not-for-logs")
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "a wrong password is refused");
    assert!(!err.contains("wrong-Pa55-not-for-logs"), "{err}");

    // The read API over TLS to Redis, behind an API key; every document
    // it serves is free of secrets.
    let keys = tmp.path().join("keys.txt");
    std::fs::write(&keys, format!("{API_KEY}\n")).expect("keys");
    let http_port = free_port();
    let log = tmp.path().join("serve.log");
    let child = rill()
        .arg("serve")
        .arg(&pipes)
        .args(["--listen", &format!("127.0.0.1:{http_port}")])
        .arg("--api-key-file")
        .arg(&keys)
        .env(env.0, env.1)
        .env("RILL_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("rill serve");
    let _serve = ChildGuard(child);
    let auth = format!("Authorization: Bearer {API_KEY}\r\n");
    wait_for(60, "rill serve", || {
        try_http_with(http_port, "GET", "/healthz", "", b"").is_some_and(|(s, _)| s == 200)
    });
    let (status, body) = try_http_with(
        http_port,
        "GET",
        "/v1/features?user_id=u1&features=spend:*",
        &auth,
        b"",
    )
    .expect("answer");
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        v["results"][0]["features"]["spend:n"]["value"],
        serde_json::json!(3),
        "{v}"
    );
    for path in [
        "/v1/registry",
        "/v1/registry/spend",
        "/v1/lineage/spend",
        "/",
        "/groups/spend",
        "/openapi.json",
        "/v1/freshness",
    ] {
        let (status, body) = try_http_with(http_port, "GET", path, &auth, b"").expect("answer");
        assert_eq!(status, 200, "{path}: {body}");
        assert_no_secret(path, &body);
    }
    let out = rill()
        .args(["features", "describe", "spend", "--dir"])
        .arg(&pipes)
        .env(env.0, env.1)
        .output()
        .expect("runs");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{all}");
    assert!(all.contains("rediss://127.0.0.1"), "{all}");
    assert_no_secret("rill features describe", &all);
    let out = rill()
        .args(["features", "describe", "spend", "--json", "--dir"])
        .arg(&pipes)
        .env(env.0, env.1)
        .output()
        .expect("runs");
    assert_no_secret(
        "rill features describe --json",
        &String::from_utf8_lossy(&out.stdout),
    );
    drop(_serve);
    assert_no_secret(
        "rill serve's log",
        &std::fs::read_to_string(&log).unwrap_or_default(),
    );
}

/// A mock cluster whose broker advertises `advertised_port` (where stunnel
/// listens) instead of its own plaintext port.
struct TlsKafka {
    cluster: *mut rdkafka_sys::RDKafkaMockCluster,
    _handle: BaseProducer,
    plain: String,
}

impl TlsKafka {
    fn start(advertised_port: u16) -> TlsKafka {
        let handle: BaseProducer = ClientConfig::new().create().expect("client");
        let cluster =
            unsafe { rdkafka_sys::rd_kafka_mock_cluster_new(handle.client().native_ptr(), 1) };
        assert!(!cluster.is_null(), "mock cluster");
        let plain = unsafe {
            std::ffi::CStr::from_ptr(rdkafka_sys::rd_kafka_mock_cluster_bootstraps(cluster))
                .to_string_lossy()
                .to_string()
        };
        let topic = std::ffi::CString::new("tx").expect("c string");
        let host = std::ffi::CString::new("127.0.0.1").expect("c string");
        unsafe {
            rdkafka_sys::rd_kafka_mock_topic_create(cluster, topic.as_ptr(), 2, 1);
            rdkafka_sys::rd_kafka_mock_broker_set_host_port(
                cluster,
                1,
                host.as_ptr(),
                advertised_port as i32,
            );
        }
        TlsKafka {
            cluster,
            _handle: handle,
            plain,
        }
    }
}

impl Drop for TlsKafka {
    fn drop(&mut self) {
        unsafe { rdkafka_sys::rd_kafka_mock_cluster_destroy(self.cluster) };
    }
}

fn stunnel(dir: &Path, pki: &Pki, accept: u16, connect: &str) -> ChildGuard {
    let conf = dir.join("stunnel.conf");
    std::fs::write(
        &conf,
        format!(
            "foreground = yes\npid =\n[kafka]\naccept = 127.0.0.1:{accept}\nconnect = {connect}\ncert = {}\nkey = {}\nCAfile = {}\nverifyChain = yes\nrequireCert = yes\n",
            pki.server_cert.display(),
            pki.server_key.display(),
            pki.ca.display()
        ),
    )
    .expect("stunnel conf");
    let bin = if Command::new("stunnel4").arg("-version").output().is_ok() {
        "stunnel4"
    } else {
        "stunnel"
    };
    let child = Command::new(bin)
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stunnel.log")).expect("log"))
        .spawn()
        .expect("stunnel is installed (scripts/test.sh installs stunnel4)");
    let guard = ChildGuard(child);
    wait_for(30, "stunnel to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", accept)).is_ok()
    });
    guard
}

#[test]
fn kafka_over_mutual_tls_through_stunnel() {
    let tmp = tempfile::tempdir().expect("tmp");
    let pki = pki(&tmp.path().join("pki"));
    let tls_port = free_port();
    let kafka = TlsKafka::start(tls_port);
    let _proxy = stunnel(tmp.path(), &pki, tls_port, &kafka.plain);
    let brokers = format!("127.0.0.1:{tls_port}");
    let tls = |c: &mut ClientConfig| {
        c.set("bootstrap.servers", &brokers)
            .set("security.protocol", "ssl")
            .set("ssl.ca.location", pki.ca.display().to_string())
            .set(
                "ssl.certificate.location",
                pki.client_cert.display().to_string(),
            )
            .set("ssl.key.location", pki.client_key.display().to_string());
    };
    let mut cfg = ClientConfig::new();
    tls(&mut cfg);
    let producer: BaseProducer = cfg.create().expect("TLS producer");
    let base = 1_704_067_200_000i64;
    let mut want = std::collections::BTreeMap::new();
    for i in 0..200i64 {
        let user = format!("u{}", i % 7);
        *want.entry(user.clone()).or_insert(0i64) += 1;
        let json = format!(
            "{{\"user_id\":\"{user}\",\"ts\":{},\"amount\":1}}",
            base + i * 100
        );
        let mut rec = BaseRecord::<str, str>::to("tx")
            .key(&user)
            .payload(&json)
            .partition(((i % 7) % 2) as i32);
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((_, back)) => {
                    producer.poll(Duration::from_millis(10));
                    rec = back;
                }
            }
        }
    }
    // Sentinels a day later close the window on both partitions.
    for p in 0..2 {
        let json = format!(
            "{{\"user_id\":\"zz_sentinel\",\"ts\":{},\"amount\":0}}",
            base + 86_400_000
        );
        producer
            .send(
                BaseRecord::<str, str>::to("tx")
                    .key("s")
                    .payload(&json)
                    .partition(p),
            )
            .expect("send");
    }
    producer
        .flush(Duration::from_secs(60))
        .expect("produced over TLS");

    let pipe = tmp.path().join("tls.yaml");
    std::fs::write(
        &pipe,
        format!(
            r#"version: 1
name: tls_spend
source:
  kafka:
    brokers: {brokers}
    topic: tx
    group_id: rill-tls
    security:
      protocol: ssl
      ca_file: {}
      cert_file: {}
      key_file: {}
  format: json
  key: [user_id]
  event_time: {{ field: ts, format: epoch_millis }}
window: {{ tumbling: {{ size: 5m }} }}
features:
  - {{ name: n, agg: count }}
sinks:
  offline: {{ parquet: {{ path: {} }} }}
"#,
            pki.ca.display(),
            pki.client_cert.display(),
            pki.client_key.display(),
            tmp.path().join("data").display()
        ),
    )
    .expect("pipeline");
    let http = free_port();
    let child = rill()
        .arg("run")
        .arg(&pipe)
        .arg("--state-dir")
        .arg(tmp.path().join("state"))
        .args([
            "--http",
            &format!("127.0.0.1:{http}"),
            "--checkpoint-interval",
            "300ms",
        ])
        .env("RILL_LOG", "info")
        .stderr(std::fs::File::create(tmp.path().join("daemon.log")).expect("log"))
        .spawn()
        .expect("rill run");
    let mut daemon = ChildGuard(child);
    let data = tmp.path().join("data");
    let t = Instant::now();
    let got = loop {
        let rows = if data.exists() {
            crate::util::read_rows(&data)
        } else {
            Vec::new()
        };
        let finals: std::collections::BTreeMap<String, i64> = rows
            .iter()
            .filter(|r| r["is_final"] == Value::Bool(true) && r["user_id"] != "zz_sentinel")
            .map(|r| {
                (
                    r["user_id"].as_str().unwrap_or("").to_string(),
                    r["n"].as_i64().unwrap_or(-1),
                )
            })
            .collect();
        if finals.len() >= want.len() {
            break finals;
        }
        if t.elapsed() > Duration::from_secs(400) {
            panic!(
                "no final panes over TLS after 180 s; daemon log:\n{}\nstunnel log:\n{}",
                std::fs::read_to_string(tmp.path().join("daemon.log")).unwrap_or_default(),
                std::fs::read_to_string(tmp.path().join("stunnel.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    crate::util::unsafe_kill(daemon.0.id(), "TERM");
    let _ = daemon.0.wait();
    assert_eq!(got, want);
}

/// `rill serve` with keys and TLS, and the limits, against raw sockets.
#[test]
fn api_keys_tls_bind_refusal_and_limits_on_the_http_port() {
    let tmp = tempfile::tempdir().expect("tmp");
    let pki = pki(&tmp.path().join("pki"));
    let pipes = tmp.path().join("pipelines");
    std::fs::create_dir_all(&pipes).expect("dir");
    std::fs::write(pipes.join("spend.yaml"), spend_pipeline(1, &pki)).expect("pipeline");
    let env = ("RILL_TEST_REDIS_PASSWORD", REDIS_PASSWORD);
    let hashed: String = {
        use sha2::Digest;
        sha2::Sha256::digest(b"second-key-fedcba9876543210")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let keys = tmp.path().join("keys.txt");
    std::fs::write(&keys, format!("# test keys\n{API_KEY}\nsha256:{hashed}\n")).expect("keys");

    // A non-loopback address without keys is refused; with
    // --insecure-no-auth it is served.
    let port = free_port();
    let out = rill()
        .arg("serve")
        .arg(&pipes)
        .args(["--listen", &format!("0.0.0.0:{port}")])
        .env(env.0, env.1)
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--api-key-file") && err.contains("--insecure-no-auth"),
        "{err}"
    );
    let child = rill()
        .arg("serve")
        .arg(&pipes)
        .args(["--listen", &format!("0.0.0.0:{port}"), "--insecure-no-auth"])
        .env(env.0, env.1)
        .stderr(Stdio::null())
        .spawn()
        .expect("runs");
    let open = ChildGuard(child);
    wait_for(60, "an open server", || {
        try_http_with(port, "GET", "/v1/registry", "", b"").is_some_and(|(s, _)| s == 200)
    });
    drop(open);

    // Keys on plain HTTP, with short limits.
    let port = free_port();
    let child = rill()
        .arg("serve")
        .arg(&pipes)
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--header-timeout",
            "2s",
            "--request-timeout",
            "3s",
        ])
        .arg("--api-key-file")
        .arg(&keys)
        .env(env.0, env.1)
        .stderr(Stdio::null())
        .spawn()
        .expect("runs");
    let _keyed = ChildGuard(child);
    wait_for(60, "rill serve", || {
        try_http_with(port, "GET", "/healthz", "", b"").is_some_and(|(s, _)| s == 200)
    });
    let get =
        |path: &str, headers: &str| try_http_with(port, "GET", path, headers, b"").expect("answer");
    assert_eq!(get("/v1/registry", "").0, 401);
    assert_eq!(get("/", "").0, 401, "the catalog page needs a key too");
    assert_eq!(
        get(
            "/v1/registry",
            "Authorization: Bearer not-the-key-at-all\r\n"
        )
        .0,
        401
    );
    assert_eq!(
        get(
            "/v1/registry",
            &format!("Authorization: Bearer {API_KEY}\r\n")
        )
        .0,
        200
    );
    assert_eq!(
        get(
            "/v1/registry",
            "Authorization: bearer second-key-fedcba9876543210\r\n"
        )
        .0,
        200
    );
    assert_eq!(get("/healthz", "").0, 200);

    // Oversized headers: 431, not a held connection.
    let big = format!("X-Filler: {}\r\n", "a".repeat(64 * 1024));
    let (status, _) =
        try_http_with(port, "GET", "/healthz", &big, b"").unwrap_or((431, String::new()));
    assert_eq!(status, 431);

    // A client that never finishes its headers is disconnected.
    let mut slow = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .expect("write");
    slow.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let mut buf = Vec::new();
    let _ = slow.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    // A body that never comes: 408.
    let mut slow = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    slow.write_all(
        format!("POST /v1/features HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{").as_bytes(),
    )
    .expect("write");
    slow.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let mut buf = Vec::new();
    let _ = slow.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");

    // TLS on the port: HTTPS with the test CA works, plain HTTP does not.
    let port = free_port();
    let child = rill()
        .arg("serve")
        .arg(&pipes)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--api-key-file")
        .arg(&keys)
        .arg("--tls-cert")
        .arg(&pki.server_cert)
        .arg("--tls-key")
        .arg(&pki.server_key)
        .env(env.0, env.1)
        .stderr(Stdio::null())
        .spawn()
        .expect("runs");
    let _tls = ChildGuard(child);
    let curl = |path: &str, key: Option<&str>| -> (bool, String) {
        let mut c = Command::new("curl");
        c.args([
            "-sS",
            "--max-time",
            "20",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "--cacert",
        ])
        .arg(&pki.ca)
        .arg(format!("https://127.0.0.1:{port}{path}"));
        if let Some(k) = key {
            c.arg("-H").arg(format!("Authorization: Bearer {k}"));
        }
        let out = c.output().expect("curl is installed");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    wait_for(60, "rill serve over TLS", || curl("/healthz", None).0);
    let (ok, out) = curl("/v1/registry", Some(API_KEY));
    assert!(ok && out.ends_with("\n200"), "{out}");
    let (ok, out) = curl("/v1/registry", None);
    assert!(ok && out.ends_with("\n401"), "{out}");
    assert!(
        try_http_with(port, "GET", "/healthz", "", b"").is_none(),
        "plain HTTP on the TLS port gets no HTTP answer"
    );
}

/// A SASL login the broker cannot take (the mock cluster has no SASL):
/// the daemon reports the failure, and neither its log nor its registry
/// shows the password.
#[test]
fn a_failing_sasl_login_never_shows_the_password() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cluster = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("tx", 1, 1).expect("topic");
    let password = "kafka-Pa55-not-for-logs";
    let pipe = tmp.path().join("sasl.yaml");
    std::fs::write(
        &pipe,
        format!(
            r#"version: 1
name: sasl_spend
source:
  kafka:
    brokers: {}
    topic: tx
    group_id: rill-sasl
    security:
      protocol: sasl_plaintext
      sasl:
        mechanism: SCRAM-SHA-256
        username: rill
        password: ${{RILL_TEST_KAFKA_PASSWORD}}
  format: json
  key: [user_id]
  event_time: {{ field: ts, format: epoch_millis }}
window: {{ tumbling: {{ size: 5m }} }}
features:
  - {{ name: n, agg: count }}
"#,
            cluster.bootstrap_servers()
        ),
    )
    .expect("pipeline");
    let http = free_port();
    let log = tmp.path().join("daemon.log");
    let child = rill()
        .arg("run")
        .arg(&pipe)
        .arg("--state-dir")
        .arg(tmp.path().join("state"))
        .arg("--data-dir")
        .arg(tmp.path().join("data"))
        .args(["--http", &format!("127.0.0.1:{http}")])
        .env("RILL_TEST_KAFKA_PASSWORD", password)
        .env("RILL_LOG", "debug")
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("rill run");
    let mut daemon = ChildGuard(child);
    wait_for(60, "the daemon to report the failed login", || {
        std::fs::read_to_string(&log)
            .is_ok_and(|l| l.contains("SASL") && l.contains("Authentication"))
    });
    for path in [
        "/v1/registry",
        "/v1/registry/sasl_spend",
        "/",
        "/groups/sasl_spend",
        "/metrics",
    ] {
        if let Some((_, body)) = try_http_with(http, "GET", path, "", b"") {
            assert!(!body.contains(password), "{path} shows the password");
        }
    }
    crate::util::unsafe_kill(daemon.0.id(), "TERM");
    let _ = daemon.0.wait();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!text.is_empty());
    assert!(
        !text.contains(password),
        "the log shows the password:\n{text}"
    );
}
