//! `rill bench serve`: an open-loop load generator for the read API.
//!
//! It fills a real Redis with `--population` entities of the bench pipeline,
//! starts the read API in this process on its own runtime (or targets
//! `--url`), and sends `POST /v1/features` at a fixed rate over keep-alive
//! connections. Each request has a scheduled send time, released by a
//! dispatcher thread; when its connection is still busy with an earlier
//! request at that time, the latency counts from the scheduled time, so a
//! slow server cannot hide its queueing (no coordinated omission); otherwise
//! it counts from the send. Latencies are recorded in an hdrhistogram.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rill::config::Pipeline;
use rill::gen::Rng;
use rill::sink::redis::online_key_text;

#[derive(Debug, Parser)]
pub struct ServeArgs {
    /// The pipeline whose features are read.
    #[arg(default_value = "benches/pipelines/bench_serve.yaml")]
    pub pipeline: PathBuf,
    /// Redis URL (a real redis-server); filled with the test entities.
    #[arg(long)]
    pub redis: String,
    /// Entities per request.
    #[arg(long, default_value_t = 1)]
    pub entities: usize,
    /// Features per request (the pipeline's first N).
    #[arg(long, default_value_t = 10)]
    pub features: usize,
    /// Requests per second.
    #[arg(long, default_value_t = 5000)]
    pub rate: u64,
    /// Measured time.
    #[arg(long, default_value = "10s")]
    pub duration: String,
    /// Time at the start that is not recorded.
    #[arg(long, default_value = "2s")]
    pub warmup: String,
    /// Keep-alive connections.
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Entities written to Redis and drawn from.
    #[arg(long, default_value_t = 100_000)]
    pub population: usize,
    /// An already running server (`rill serve PIPELINE --redis URL`)
    /// instead of one in this process.
    #[arg(long)]
    pub url: Option<String>,
    /// Worker threads of the in-process server (as `rill serve --threads`).
    #[arg(long, default_value_t = 2)]
    pub server_threads: usize,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Writes `population` entities with every feature of `p`, in the daemon's layout.
fn populate(p: &Pipeline, url: &str, population: usize) -> anyhow::Result<()> {
    let client = redis::Client::open(url)?;
    let mut c = client
        .get_connection()
        .with_context(|| format!("cannot connect to {url}"))?;
    let prefix = p.redis.as_ref().map_or("rill", |r| r.key_prefix.as_str());
    let now = rill::time::Clock::now(&rill::time::SystemClock);
    let end = now - now.rem_euclid(300_000_000);
    let mut rng = Rng::new(7);
    let mut i = 0;
    while i < population {
        let mut pipe = redis::pipe();
        for u in i..(i + 1000).min(population) {
            let key = online_key_text(prefix, &p.name, &[format!("u{u}")]);
            let mut fields: Vec<(String, String)> = Vec::new();
            for f in &p.features {
                let v = match f.output_type() {
                    rill::config::ValueType::Int => (rng.below(50) + 1).to_string(),
                    rill::config::ValueType::String => "electronics".to_string(),
                    _ => rill::sink::format_f64((rng.unit() * 1000.0 * 100.0).round() / 100.0),
                };
                fields.push((f.name.clone(), v));
            }
            let mut v = String::new();
            rill::sink::redis::version_field(end, 0, 0, None, &mut v);
            fields.push(("_v".into(), v));
            fields.push(("_window_start".into(), (end - 300_000_000).to_string()));
            fields.push(("_window_end".into(), end.to_string()));
            fields.push(("_emitted_at".into(), end.to_string()));
            fields.push(("_pane".into(), "0".into()));
            pipe.hset_multiple(&key, &fields).ignore();
        }
        pipe.query::<()>(&mut c)?;
        i += 1000;
    }
    Ok(())
}

pub fn run(a: ServeArgs) -> anyhow::Result<()> {
    let p = Pipeline::from_file(&a.pipeline).map_err(|e| anyhow::anyhow!("{e}"))?;
    anyhow::ensure!(
        a.features >= 1 && a.features <= p.features.len(),
        "--features: 1 to {}",
        p.features.len()
    );
    anyhow::ensure!(
        a.entities >= 1 && a.connections >= 1 && a.rate >= 1,
        "--entities, --connections and --rate must be positive"
    );
    let duration = Duration::from_micros(
        rill::time::parse_duration(&a.duration).map_err(|e| anyhow::anyhow!("--duration: {e}"))?
            as u64,
    );
    let warmup = Duration::from_micros(
        rill::time::parse_duration(&a.warmup).map_err(|e| anyhow::anyhow!("--warmup: {e}"))? as u64,
    );
    populate(&p, &a.redis, a.population)?;

    // The server, on its own runtime and threads.
    let server_rt;
    let addr = match &a.url {
        Some(u) => u
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string(),
        None => {
            server_rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(a.server_threads.max(1))
                .thread_name("rill-serve")
                .enable_all()
                .build()?;
            let svc = server_rt.block_on(async {
                super::serve::service(vec![p.clone()], Some(&a.redis), Default::default())
            })?;
            let listener = server_rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
            let local = listener.local_addr()?;
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                let _ = tcp.set_nodelay(true);
            });
            server_rt.spawn(async move {
                let _ = axum::serve(listener, rill::serve::routes::router(svc, true)).await;
            });
            local.to_string()
        }
    };

    // Request bodies, drawn ahead of time.
    let names: Vec<String> = p.features[..a.features]
        .iter()
        .map(|f| format!("{}:{}", p.name, f.name))
        .collect();
    let mut rng = Rng::new(42);
    let bodies: Vec<Bytes> = (0..1024)
        .map(|_| {
            let entities: Vec<serde_json::Value> = (0..a.entities)
                .map(|_| serde_json::json!({ &p.key_fields[0]: format!("u{}", rng.below(a.population as u64)) }))
                .collect();
            Bytes::from(serde_json::to_vec(&serde_json::json!({ "entities": entities, "features": names })).expect("json"))
        })
        .collect();
    let bodies = Arc::new(bodies);

    let hist = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let not_present = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let total = warmup + duration;
    let period = Duration::from_secs_f64(1.0 / a.rate as f64);
    let n_requests = (total.as_secs_f64() * a.rate as f64) as u64;
    // One queue per connection; a dispatcher thread releases each request at
    // its scheduled time, round robin (the tokio timer ticks in whole
    // milliseconds, which would send requests in bursts).
    let mut queues = Vec::new();
    let mut receivers = Vec::new();
    for _ in 0..a.connections {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
        queues.push(tx);
        receivers.push(rx);
    }
    let start = Instant::now() + Duration::from_millis(200);
    let dispatcher = std::thread::spawn(move || {
        for seq in 0..n_requests {
            let due = start + period.mul_f64(seq as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if queues[(seq % queues.len() as u64) as usize]
                .send((seq, due))
                .is_err()
            {
                break;
            }
        }
    });
    let started = client_rt.block_on(async {
        let mut tasks = Vec::new();
        for mut rx in receivers {
            let addr = addr.clone();
            let bodies = bodies.clone();
            let hist = hist.clone();
            let errors = errors.clone();
            let not_present = not_present.clone();
            tasks.push(tokio::spawn(async move {
                let stream = tokio::net::TcpStream::connect(&addr).await?;
                stream.set_nodelay(true)?;
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                tokio::spawn(conn);
                let mut first = true;
                let mut free_since = Instant::now();
                while let Some((seq, due)) = rx.recv().await {
                    // Behind schedule (the previous response on this
                    // connection came after this request was due): latency
                    // counts from the scheduled time, so queueing behind a
                    // slow response is included. On schedule: from the send,
                    // so the dispatcher thread's own wake-up lag is not.
                    let from = if free_since > due {
                        due
                    } else {
                        Instant::now()
                    };
                    let body = bodies[(seq % bodies.len() as u64) as usize].clone();
                    let req = hyper::Request::post("/v1/features")
                        .header("host", "bench")
                        .header("content-type", "application/json")
                        .body(Full::new(body))?;
                    let ok = match sender.send_request(req).await {
                        Ok(resp) => {
                            let status = resp.status();
                            let bytes = resp.into_body().collect().await?.to_bytes();
                            if first {
                                first = false;
                                // Every value is in Redis: any other status is a bug.
                                let text = String::from_utf8_lossy(&bytes);
                                let present = text.matches("\"present\"").count();
                                if present != names_len(&bytes) {
                                    not_present.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                }
                            }
                            status.is_success()
                        }
                        Err(_) => false,
                    };
                    let done = Instant::now();
                    free_since = done;
                    if due.duration_since(start) >= warmup {
                        if ok {
                            let us = done.duration_since(from).as_micros() as u64;
                            hist.lock().expect("hist").record(us.max(1)).ok();
                        } else {
                            errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                }
                anyhow::Ok(())
            }));
        }
        let t0 = Instant::now();
        for t in tasks {
            t.await??;
        }
        anyhow::Ok(t0)
    })?;
    dispatcher
        .join()
        .map_err(|_| anyhow::anyhow!("dispatcher thread panicked"))?;
    let elapsed = started.elapsed().as_secs_f64();
    let h = hist.lock().expect("hist");
    let measured = h.len();
    let out = serde_json::json!({
        "entities_per_request": a.entities,
        "features_per_request": a.features,
        "target_rate": a.rate,
        "requests_measured": measured,
        "achieved_rate": measured as f64 / duration.as_secs_f64(),
        "errors": errors.load(std::sync::atomic::Ordering::Relaxed),
        "incomplete_first_responses": not_present.load(std::sync::atomic::Ordering::Relaxed),
        "latency_us": {
            "p50": h.value_at_quantile(0.5),
            "p90": h.value_at_quantile(0.9),
            "p99": h.value_at_quantile(0.99),
            "p999": h.value_at_quantile(0.999),
            "max": h.max(),
        },
        "wall_seconds": elapsed,
        "server": if a.url.is_some() { "external" } else { "in-process" },
        "server_threads": a.server_threads,
        "connections": a.connections,
    });
    if a.json {
        println!("{out}");
    } else {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(())
}

/// Entities × features of a response (from its `features` list and `results`).
fn names_len(body: &[u8]) -> usize {
    let v: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => return usize::MAX,
    };
    let nf = v["features"].as_array().map_or(0, Vec::len);
    let ne = v["results"].as_array().map_or(0, Vec::len);
    nf * ne
}
