//! Helpers shared by the integration tests.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{Map, Value};

pub fn rill() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rill"))
}

pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("rill runs");
    assert!(
        out.status.success(),
        "rill failed: {:?}\nstdout: {}\nstderr: {}",
        cmd,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// Every `*.parquet` file under `dir`, sorted by path.
pub fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    files_with(dir, "parquet")
}

/// Every file named `*.<ext>` under `dir` (recursively), sorted by path.
pub fn files_with(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == ext) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// `rill replay --json PIPELINE --input INPUT --output OUT` with extra
/// arguments; its summary.
pub fn replay_cli(pipeline: &Path, input: &Path, out: &Path, extra: &[&str]) -> Value {
    let o = run_ok(
        rill()
            .args(["replay", "--json"])
            .arg(pipeline)
            .arg("--input")
            .arg(input)
            .arg("--output")
            .arg(out)
            .args(extra),
    );
    serde_json::from_slice(&o.stdout).expect("summary")
}

/// Every row of the offline store under `dir`, as canonical JSON text
/// (without the file it came from), sorted.
pub fn rows(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = read_rows(dir)
        .into_iter()
        .map(|mut r| {
            r.remove("_file");
            serde_json::to_string(&r).expect("json")
        })
        .collect();
    out.sort();
    out
}

/// Every dead letter written under `<dir>/_dead_letter`, sorted (the
/// gzip copy of an input names the same input).
pub fn letters(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for p in files_with(&dir.join("_dead_letter"), "jsonl") {
        let text = std::fs::read_to_string(&p).expect("letters");
        out.extend(text.lines().map(|l| l.replace("in.jsonl.gz", "in.jsonl")));
    }
    out.sort();
    out
}

fn ts_text(us: i64) -> String {
    rill::time::format_rfc3339(us)
}

/// Rows of a record batch as JSON objects (timestamps as RFC 3339 text).
pub fn batch_rows(b: &RecordBatch) -> Vec<Map<String, Value>> {
    let mut rows = vec![Map::new(); b.num_rows()];
    for (ci, field) in b.schema().fields().iter().enumerate() {
        let col = match field.data_type() {
            DataType::Timestamp(_, _) => arrow_cast::cast(
                b.column(ci),
                &DataType::Timestamp(arrow_schema::TimeUnit::Microsecond, None),
            )
            .expect("timestamps cast to microseconds"),
            _ => b.column(ci).clone(),
        };
        for (i, row) in rows.iter_mut().enumerate() {
            let v = if col.is_null(i) {
                Value::Null
            } else {
                match field.data_type() {
                    DataType::Utf8 => Value::String(col.as_string::<i32>().value(i).to_string()),
                    DataType::Int64 => Value::from(col.as_primitive::<Int64Type>().value(i)),
                    DataType::Float64 => Value::from(col.as_primitive::<Float64Type>().value(i)),
                    DataType::Boolean => Value::Bool(col.as_boolean().value(i)),
                    DataType::Timestamp(_, _) => Value::String(ts_text(
                        col.as_primitive::<TimestampMicrosecondType>().value(i),
                    )),
                    DataType::List(_) => {
                        let items = col.as_list::<i32>().value(i);
                        let s = items.as_string::<i32>();
                        Value::Array(
                            (0..s.len())
                                .map(|j| Value::String(s.value(j).to_string()))
                                .collect(),
                        )
                    }
                    other => panic!("unexpected column type {other}"),
                }
            };
            row.insert(field.name().clone(), v);
        }
    }
    rows
}

/// All rows of all Parquet files under `dir`, each with a `_file` entry.
pub fn read_rows(dir: &Path) -> Vec<Map<String, Value>> {
    let mut all = Vec::new();
    for f in parquet_files(dir) {
        let file = std::fs::File::open(&f).expect("open parquet");
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .expect("parquet")
            .build()
            .expect("reader");
        for b in reader {
            for mut r in batch_rows(&b.expect("batch")) {
                r.insert("_file".into(), Value::String(f.display().to_string()));
                all.push(r);
            }
        }
    }
    all
}

/// Values equal, floats within 1e-9 relative.
pub fn close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs())
        }
        _ => a == b,
    }
}

/// A canonical order for pane rows: keys, window, pane index, retraction.
pub fn sort_key(r: &Map<String, Value>, keys: &[&str]) -> String {
    let mut s = String::new();
    for k in keys {
        s.push_str(&format!(
            "{:>24}|",
            r.get(*k).map(|v| v.to_string()).unwrap_or_default()
        ));
    }
    s.push_str(&format!(
        "{}|{}|{:>6}|{}",
        r["window_start"], r["window_end"], r["pane_index"], r["retraction"]
    ));
    s
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Waits for `cond`, polling; panics with `what` after four times `secs`
/// (the time it takes on an idle machine, with room for a busy 2-core one:
/// a test that passes never waits longer than it must).
pub fn wait_for(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let secs = secs * 4;
    let t = Instant::now();
    while !cond() {
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A redis-server on a free port, stopped on drop.
pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
    args: Vec<String>,
}

impl RedisServer {
    pub fn start(dir: &Path) -> RedisServer {
        RedisServer::start_with(dir, &[])
    }

    /// A server given extra command-line settings.
    pub fn start_with(dir: &Path, args: &[&str]) -> RedisServer {
        // Tests run in parallel: another one may take the chosen port before
        // this server binds it. Then this server exits (or a PING reaches
        // the other one, whose `dir` differs): try another port.
        for _ in 0..10 {
            let mut r = RedisServer {
                port: free_port(),
                dir: dir.to_path_buf(),
                child: None,
                args: args.iter().map(|a| a.to_string()).collect(),
            };
            if r.try_start() {
                return r;
            }
        }
        panic!("could not start redis-server on a free port");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port, with an append-only file so that a
    /// restart keeps the data.
    pub fn restart(&mut self) {
        assert!(
            self.try_start(),
            "redis-server restarts on port {}",
            self.port
        );
    }

    /// Starts the server; false when it could not take its port.
    fn try_start(&mut self) -> bool {
        std::fs::create_dir_all(&self.dir).expect("redis dir");
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "yes", "--dir"])
            .arg(&self.dir)
            .args(&self.args)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test.sh installs it)");
        self.child = Some(child);
        let url = self.url();
        let want_dir = std::fs::canonicalize(&self.dir).expect("redis dir");
        let t = Instant::now();
        loop {
            if let Some(c) = self.child.as_mut() {
                if c.try_wait().expect("wait").is_some() {
                    self.child = None;
                    return false;
                }
            }
            let answer = redis::Client::open(url.as_str())
                .and_then(|c| c.get_connection())
                .and_then(|mut c| {
                    redis::cmd("CONFIG")
                        .arg("GET")
                        .arg("dir")
                        .query::<Vec<String>>(&mut c)
                });
            if let Ok(v) = answer {
                if v.get(1).map(PathBuf::from) == Some(want_dir.clone()) {
                    return true;
                }
                // Someone else's server answers on this port.
                if let Some(mut c) = self.child.take() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                return false;
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "timed out waiting for redis-server"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server (SIGTERM: it syncs its append-only file first).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe_kill(c.id(), "TERM");
            let _ = c.wait();
        }
    }

    /// Kills the server (SIGKILL) and restarts it on the same port with
    /// nothing on disk: a Redis without persistence that lost its data.
    pub fn lose_data_and_restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for e in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let p = e.path();
            let _ = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
        self.restart();
    }

    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url().as_str())
            .expect("url")
            .get_connection()
            .expect("redis connection")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn unsafe_kill(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// One HTTP/1.1 request over a fresh connection: (status, body).
pub fn http(port: u16, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    try_http(port, method, path, body)
        .unwrap_or_else(|| panic!("no HTTP answer to {method} {path} on port {port}"))
}

/// [`http`], or `None` when nothing that speaks HTTP answers.
pub fn try_http(port: u16, method: &str, path: &str, body: &[u8]) -> Option<(u16, String)> {
    try_http_with(port, method, path, "", body)
}

/// [`try_http`] with extra header lines (each ending in `\r\n`).
pub fn try_http_with(
    port: u16,
    method: &str,
    path: &str,
    headers: &str,
    body: &[u8],
) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{headers}\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).ok()?;
    // A server may answer (413) before reading a large body and close.
    let _ = s.write_all(body);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    if !text.starts_with("HTTP/1.1 ") {
        return None;
    }
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())?;
    let (headers, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if headers
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Some((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A child process killed on drop.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `rill serve` on a free port and waits until it answers. Another
/// test may take the port between choosing and binding it: then the child
/// exits and another port is tried.
pub fn start_serve(args: &[&str]) -> (ChildGuard, u16) {
    for _ in 0..5 {
        let port = free_port();
        let child = rill()
            .arg("serve")
            .args(args)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("rill serve starts");
        let mut guard = ChildGuard(child);
        let t = Instant::now();
        loop {
            if let Some(status) = guard.0.try_wait().expect("wait") {
                eprintln!("rill serve exited ({status}); trying another port");
                break;
            }
            if try_http(port, "GET", "/healthz", b"").is_some_and(|(s, b)| s == 200 && b == "ok\n")
            {
                return (guard, port);
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "rill serve did not answer"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    panic!("rill serve could not start");
}

/// Starts a tansu broker (in-memory storage) on a free port and waits
/// until it answers: the opt-in real broker of the daemon tests
/// (`RILL_TEST_TANSU=1`; `RILL_TANSU_BIN` or `tansu` on the PATH).
pub fn start_tansu() -> (ChildGuard, String) {
    let bin = std::env::var("RILL_TANSU_BIN").unwrap_or_else(|_| "tansu".into());
    let port = free_port();
    let url = format!("tcp://127.0.0.1:{port}");
    let child = Command::new(&bin)
        .args(["broker", "--storage-engine", "memory://tansu/"])
        .args(["--listener-url", &url, "--advertised-listener-url", &url])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tansu is installed (cargo install tansu --features dynostore)");
    let guard = ChildGuard(child);
    wait_for(60, "tansu to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    (guard, format!("127.0.0.1:{port}"))
}

/// Creates a topic on a tansu broker with its own command line.
pub fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    let bin = std::env::var("RILL_TANSU_BIN").unwrap_or_else(|_| "tansu".into());
    run_ok(
        Command::new(bin)
            .args(["topic", "create", "--broker", &format!("tcp://{brokers}")])
            .args(["--partitions", &partitions.to_string(), topic]),
    );
}

/// A TCP proxy in front of `upstream` that holds every chunk of the
/// server's replies for the current delay (a slow Redis: its commands run,
/// their answers come late). Set the delay to 0 to end the fault.
pub struct SlowProxy {
    pub port: u16,
    pub delay_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl SlowProxy {
    pub fn start(upstream: u16, delay_ms: u64) -> SlowProxy {
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::Arc;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let delay = Arc::new(AtomicU64::new(delay_ms));
        let d = delay.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (mut c_read, mut s_write) = (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c_read, &mut s_write);
                    let _ = s_write.shutdown(std::net::Shutdown::Both);
                });
                let (mut s_read, mut c_write) = (server, client);
                let d = d.clone();
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match s_read.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let ms = d.load(Ordering::Relaxed);
                        if ms > 0 {
                            std::thread::sleep(Duration::from_millis(ms));
                        }
                        if c_write.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = c_write.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        SlowProxy {
            port,
            delay_ms: delay,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

/// A small deterministic generator (a 64-bit LCG, high bits): the seed is
/// in the test, so a failure repeats.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}
