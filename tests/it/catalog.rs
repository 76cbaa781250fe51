//! The catalog page in a real browser: headless Chromium (Debian's
//! `chromium`, installed by scripts/test.sh) driven over the DevTools
//! protocol. It loads the page, types a search, clicks a group and reads
//! what is shown, with live freshness published in a real redis-server.

use std::io::Read;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

use crate::util::{http, repo, start_serve, wait_for, RedisServer};

/// Chromium in its own process group, killed (with its helpers) on drop.
struct Browser {
    child: Child,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromium() -> &'static str {
    for c in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new(c)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            return c;
        }
    }
    panic!("headless Chromium is needed (scripts/test.sh installs Debian's chromium package)");
}

/// A DevTools protocol session with one page.
struct Cdp {
    ws: WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>,
    next: u64,
}

impl Cdp {
    fn start(profile: &Path) -> (Browser, Cdp) {
        use std::os::unix::process::CommandExt;
        let child = Command::new(chromium())
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-port=0",
                "--window-size=1200,900",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromium starts");
        let browser = Browser { child };
        let port_file = profile.join("DevToolsActivePort");
        let mut port = 0u16;
        wait_for(60, "chromium's DevToolsActivePort", || {
            std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|t| t.lines().next().and_then(|l| l.trim().parse().ok()))
                .map(|p| port = p)
                .is_some()
        });
        // The page target's websocket.
        let mut ws_url = String::new();
        wait_for(30, "a page target", || {
            let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
                return false;
            };
            use std::io::Write;
            // The websocket URLs in the answer are built from the Host header.
            let _ = s.write_all(
                format!("GET /json/list HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n").as_bytes(),
            );
            // Chromium may keep the connection open: read up to Content-Length.
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut out = Vec::new();
            let mut buf = [0u8; 8192];
            let body = loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break None,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                }
                let text = String::from_utf8_lossy(&out).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().to_string())
                        })
                        .and_then(|v| v.parse::<usize>().ok());
                    if len.is_some_and(|n| body.len() >= n) {
                        break Some(body.to_string());
                    }
                }
            };
            let Some(body) = body else { return false };
            let body = body.as_str();
            let Ok(list) = serde_json::from_str::<Value>(body) else {
                return false;
            };
            match list
                .as_array()
                .and_then(|l| l.iter().find(|t| t["type"] == "page"))
                .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            {
                Some(u) => {
                    ws_url = u.to_string();
                    true
                }
                None => false,
            }
        });
        let (ws, _) = tungstenite::connect(ws_url.as_str()).expect("devtools websocket");
        (browser, Cdp { ws, next: 1 })
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next;
        self.next += 1;
        self.ws
            .send(Message::text(
                json!({"id": id, "method": method, "params": params}).to_string(),
            ))
            .expect("send");
        loop {
            let msg = self.ws.read().expect("devtools message");
            let Message::Text(t) = msg else { continue };
            let v: Value = serde_json::from_str(t.as_str()).expect("json");
            if v["id"] == id {
                assert!(v["error"].is_null(), "{method}: {}", v["error"]);
                return v["result"].clone();
            }
        }
    }

    /// Evaluates JavaScript in the page and returns its value.
    fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        );
        assert!(
            r["exceptionDetails"].is_null(),
            "{expr}: {}",
            r["exceptionDetails"]
        );
        r["result"]["value"].clone()
    }

    /// Polls `expr` until it equals `want`; panics with the last value.
    fn wait_eq(&mut self, expr: &str, want: Value) {
        let t = Instant::now();
        loop {
            let got = self.eval(expr);
            if got == want {
                return;
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "{expr}: {got} (want {want})"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url }));
        self.wait_eq(
            &format!("location.href === {} && document.readyState", json!(url)),
            json!("complete"),
        );
    }

    /// A real mouse click in the middle of the element `selector` finds.
    fn click(&mut self, selector: &str) {
        let r = self.eval(&format!(
            "(() => {{ const r = document.querySelector({}).getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()",
            json!(selector)
        ));
        let (x, y) = (r[0].as_f64().expect("x"), r[1].as_f64().expect("y"));
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
            );
        }
    }
}

const VISIBLE: &str = "Array.from(document.querySelectorAll('li.group')).filter(l => !l.hidden).map(l => l.dataset.name)";

#[test]
fn catalog_page_searches_opens_a_group_and_shows_freshness() {
    let dir = tempfile::tempdir().expect("tmp");
    let redis = RedisServer::start(&dir.path().join("redis"));
    // A daemon's published reports: spend a minute behind (fresh against its
    // 10m SLA), sessions an hour behind (late against 15m).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_micros() as i64;
    let mut c = redis.conn();
    for (group, lag) in [
        ("user_spend_5m", 60_000_000i64),
        ("click_sessions", 3_600_000_000),
    ] {
        let report = json!({"watermark": now - lag, "last_online_write": now - 1_000_000,
            "last_offline_write": now - 2_000_000, "consumer_lag": 12, "at": now});
        redis::cmd("HSET")
            .arg(format!("rill:_freshness:{group}"))
            .arg("instance-1")
            .arg(report.to_string())
            .query::<()>(&mut c)
            .expect("HSET");
    }
    let url = redis.url();
    let pipelines = repo("pipelines");
    let (_serve, port) = start_serve(&[pipelines.to_str().expect("utf-8"), "--redis", &url]);
    // The same figures through the JSON endpoint.
    let (s, body) = http(port, "GET", "/v1/freshness/click_sessions", b"");
    assert_eq!(s, 200, "{body}");
    let f: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(f["status"], "late");
    assert_eq!(f["consumer_lag"], 12);

    // `rill features describe` reads the same reports.
    let out = crate::util::run_ok(
        crate::util::rill()
            .args(["features", "--dir"])
            .arg(&pipelines)
            .args(["--json", "describe", "click_sessions", "--redis", &url]),
    );
    let d: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(d["freshness"]["status"], "late", "{d}");
    assert_eq!(d["freshness"]["consumer_lag"], 12);
    let lag = d["freshness"]["watermark_lag_seconds"]
        .as_f64()
        .expect("lag");
    assert!((3600.0..3700.0).contains(&lag), "{lag}");

    let profile = dir.path().join("chromium");
    std::fs::create_dir_all(&profile).expect("dir");
    let (_browser, mut cdp) = Cdp::start(&profile);
    let base = format!("http://127.0.0.1:{port}/");
    cdp.navigate(&base);
    assert_eq!(cdp.eval("document.title"), json!("rill feature catalog"));
    cdp.wait_eq(
        VISIBLE,
        json!([
            "click_sessions",
            "user_category_1h",
            "user_spend_5m",
            "user_tx_30d"
        ]),
    );
    let badge =
        |g: &str| format!("document.querySelector('.badge[data-group={g}]').dataset.status");
    assert_eq!(cdp.eval(&badge("user_spend_5m")), json!("fresh"));
    assert_eq!(cdp.eval(&badge("click_sessions")), json!("late"));
    assert_eq!(cdp.eval(&badge("user_category_1h")), json!("unknown"));
    // The green and red come from the stylesheet.
    assert_eq!(
        cdp.eval(&format!("getComputedStyle(document.querySelector('.badge[data-group=user_spend_5m]')).backgroundColor")),
        json!("rgb(46, 133, 64)")
    );

    // Type a search as a user would.
    cdp.eval("document.getElementById('search').focus()");
    cdp.call("Input.insertText", json!({"text": "conversion"}));
    cdp.wait_eq(VISIBLE, json!(["click_sessions"]));
    let matched = cdp.eval("document.querySelector('li.group:not([hidden]) .matched').textContent");
    assert!(
        matched.as_str().expect("text").contains("conversion_rate"),
        "{matched}"
    );
    assert_eq!(cdp.eval("location.search"), json!("?q=conversion"));
    // Another search re-ranks: the group named after the word first.
    cdp.eval("document.getElementById('search').select()");
    cdp.call("Input.insertText", json!({"text": "spend"}));
    cdp.wait_eq(
        VISIBLE,
        json!(["user_spend_5m", "user_category_1h", "user_tx_30d"]),
    );
    let count = cdp.eval("document.getElementById('count').textContent");
    assert_eq!(count, json!("3 of 4 feature groups match"));

    // Open the first result with a click.
    cdp.click("li.group:not([hidden]) a.name");
    cdp.wait_eq(
        "location.pathname + ' ' + document.readyState",
        json!("/groups/user_spend_5m complete"),
    );
    assert_eq!(
        cdp.eval("document.getElementById('group-name').textContent"),
        json!("user_spend_5m")
    );
    assert_eq!(
        cdp.eval("document.getElementById('owner').textContent"),
        json!("payments-ml@example.com")
    );
    assert_eq!(
        cdp.eval("document.getElementById('team').textContent"),
        json!("payments")
    );
    let features = cdp.eval("Array.from(document.querySelectorAll('#features tr.feature td:first-child')).map(td => td.textContent)");
    assert_eq!(
        features,
        json!([
            "tx_count",
            "amount_sum",
            "amount_mean",
            "amount_std",
            "amount_min",
            "amount_max",
            "click_count",
            "amount_range"
        ])
    );
    let range =
        cdp.eval("document.querySelector('#feature-amount_range td:nth-child(2)').textContent");
    assert!(
        range
            .as_str()
            .expect("text")
            .contains("amount_max - amount_min"),
        "{range}"
    );
    let lineage = cdp.eval("document.getElementById('lineage').textContent");
    let lineage = lineage.as_str().expect("text");
    assert!(lineage.contains("topic transactions"), "{lineage}");
    assert!(
        lineage.contains("the same topic also feeds user_category_1h"),
        "{lineage}"
    );
    assert_eq!(cdp.eval(&badge("user_spend_5m")), json!("fresh"));
    let lag = cdp.eval("document.getElementById('lag').textContent");
    let lag: f64 = lag
        .as_str()
        .expect("text")
        .trim_end_matches(" s")
        .parse()
        .expect("seconds");
    assert!((60.0..120.0).contains(&lag), "watermark lag shown: {lag}");

    // A group that does not exist.
    cdp.navigate(&format!("{base}groups/nope"));
    assert!(cdp
        .eval("document.body.textContent")
        .as_str()
        .expect("text")
        .contains("No feature group named nope"));
}
