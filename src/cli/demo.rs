//! `rill demo`: the quickstart for a machine with only Rust. An in-process
//! Kafka-protocol broker (librdkafka's mock cluster), the standard data set
//! produced into it at a chosen rate, the daemon on the example pipelines,
//! Parquet under ./rill-data, online features in Redis (`--redis URL`) or in
//! an in-process store served on the HTTP port, and live progress until
//! Ctrl-C.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use rdkafka::mocking::MockCluster;
use rill::daemon::{RunOptions, WorkerOptions};
use rill::gen::GenOptions;
use rill::metrics::Metrics;
use rill::sink::embedded::EmbeddedStore;
use tokio_util::sync::CancellationToken;

/// The example pipelines, carried in the binary so that `rill demo` runs
/// from any directory.
pub const EXAMPLES: [(&str, &str); 4] = [
    (
        "click_sessions.yaml",
        include_str!("../../pipelines/click_sessions.yaml"),
    ),
    (
        "user_category_1h.yaml",
        include_str!("../../pipelines/user_category_1h.yaml"),
    ),
    (
        "user_spend_5m.yaml",
        include_str!("../../pipelines/user_spend_5m.yaml"),
    ),
    (
        "user_tx_30d.yaml",
        include_str!("../../pipelines/user_tx_30d.yaml"),
    ),
];

#[derive(Debug, Parser)]
pub struct Args {
    /// Pipeline files or directories (default: the example pipelines, which
    /// the binary carries).
    pub pipelines: Vec<PathBuf>,
    /// Write the example pipelines into this directory (to edit them and
    /// pass the directory back) and exit.
    #[arg(long, value_name = "DIR")]
    pub write_pipelines: Option<PathBuf>,
    /// Events per second produced into the broker. The mock broker keeps
    /// only a bounded tail per partition, so the data is produced as it is
    /// consumed.
    #[arg(long, default_value_t = 20_000)]
    pub rate: u64,
    /// Events to produce (the standard data set has 10,000,000).
    #[arg(long, default_value_t = 10_000_000)]
    pub events: u64,
    /// Keep online features in this Redis instead of the in-process store.
    #[arg(long)]
    pub redis: Option<String>,
    /// Parquet output and checkpoints.
    #[arg(long, default_value = "./rill-data")]
    pub data_dir: PathBuf,
    /// HTTP address: the catalog page (/), /v1/features, /v1/freshness,
    /// /metrics, /healthz, /readyz.
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub http: String,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    if let Some(dir) = &a.write_pipelines {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
        for (name, text) in EXAMPLES {
            let path = dir.join(name);
            anyhow::ensure!(!path.exists(), "{} exists; not overwritten", path.display());
            std::fs::write(&path, text)
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
            println!("wrote {}", path.display());
        }
        println!(
            "edit them, then: rill demo {} (or rill validate {})",
            dir.display(),
            dir.display()
        );
        return Ok(());
    }
    let loaded = if a.pipelines.is_empty() {
        EXAMPLES
            .iter()
            .map(|(name, text)| {
                rill::config::Pipeline::from_yaml(text, &format!("<built-in>/{name}"))
                    .map_err(|e| anyhow::anyhow!("{e}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?
    } else {
        super::run::load_pipelines(&a.pipelines)?
    };
    let pipelines: Vec<_> = loaded.into_iter().filter(|p| p.kafka.is_some()).collect();
    anyhow::ensure!(!pipelines.is_empty(), "no pipeline with a kafka source");
    let mut topics: Vec<String> = pipelines
        .iter()
        .filter_map(|p| p.kafka.as_ref().map(|k| k.topic.clone()))
        .collect();
    topics.sort();
    topics.dedup();
    let cluster = MockCluster::new(1)?;
    for t in &topics {
        cluster.create_topic(t, 2, 1)?;
    }
    let brokers = cluster.bootstrap_servers();
    let metrics = Arc::new(Metrics::default());
    let embedded = a
        .redis
        .is_none()
        .then(|| Arc::new(EmbeddedStore::default()));
    let http: std::net::SocketAddr = a.http.parse()?;
    // The demo serves open: only on loopback.
    rill::serve::http::check_bind(http, false, false)?;
    let opts = RunOptions {
        pipelines: pipelines.clone(),
        worker: WorkerOptions {
            state_dir: a.data_dir.join("_state"),
            data_dir: Some(a.data_dir.clone()),
            brokers: Some(brokers.clone()),
            checkpoint_interval: Duration::from_secs(5),
            max_file_rows: 1_000_000,
            instance: format!("demo-{}", std::process::id()),
            group_instance_id: None,
        },
        redis_url: a.redis.clone(),
        http: Some(http),
        http_options: Default::default(),
        drain_deadline: Duration::from_secs(30),
        embedded: embedded.clone(),
        read_api: true,
        online_queue: rill::daemon::ONLINE_QUEUE,
    };
    println!(
        "rill demo: broker {brokers} (in-process), topics {}, {} events at {}/s",
        topics.join(", "),
        a.events,
        a.rate
    );
    println!("  Parquet under {}", a.data_dir.display());
    match &a.redis {
        Some(r) => println!("  online features in {r}"),
        None => println!(
            "  online features: curl 'http://{http}/v1/features?user_id=u1&features=user_spend_5m:*' (in-process store)"
        ),
    }
    println!("  feature catalog: http://{http}/");
    println!("  metrics: curl http://{http}/metrics     Ctrl-C to stop");
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let producer = {
        let (stop, sent, topics, brokers) =
            (stop.clone(), sent.clone(), topics.clone(), brokers.clone());
        // Event time follows the wall clock: the events start now and span
        // the time they take to produce at the chosen rate, so watermarks,
        // freshness and the ages served online look like a live system.
        let gen = GenOptions {
            events: a.events,
            start: rill::time::Clock::now(&rill::time::SystemClock),
            span: (a.rate > 0).then(|| (a.events as i128 * 1_000_000 / a.rate as i128) as i64),
            ..Default::default()
        };
        let rate = a.rate;
        let m = metrics.clone();
        std::thread::spawn(move || {
            // Produce as the slowest pipeline consumes: at most 30,000
            // records ahead, within what the mock broker keeps.
            let throttle = |n: u64| loop {
                let snap = m.snapshot();
                let slowest = snap.iter().map(|s| s.records).min().unwrap_or(n);
                if snap.is_empty()
                    || n.saturating_sub(slowest) < 30_000
                    || stop.load(Ordering::Relaxed)
                {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            rill::daemon::produce::produce(&brokers, &topics, gen, rate, &stop, &sent, &throttle)
        })
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let names: Vec<String> = pipelines.iter().map(|p| p.name.clone()).collect();
    let result = rt.block_on(async {
        let token = CancellationToken::new();
        rill::daemon::install_signals(token.clone());
        let progress = {
            let (metrics, token, sent) = (metrics.clone(), token.clone(), sent.clone());
            tokio::spawn(async move {
                let bar = indicatif::ProgressBar::new_spinner();
                let mut last: Option<(std::time::Instant, u64)> = None;
                loop {
                    tokio::select! {
                        biased;
                        _ = token.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                    let snap = metrics.snapshot();
                    let events: u64 = snap.iter().map(|s| s.events).sum();
                    let rate = match last {
                        Some((t, n)) => {
                            (events.saturating_sub(n)) as f64 / t.elapsed().as_secs_f64()
                        }
                        None => 0.0,
                    };
                    last = Some((std::time::Instant::now(), events));
                    let mut msg = format!(
                        "produced {} | consumed {:.0}/s",
                        sent.load(Ordering::Relaxed),
                        rate
                    );
                    for s in &snap {
                        let wm = if s.watermark > i64::MIN && s.watermark < i64::MAX {
                            rill::time::format_rfc3339(s.watermark)
                        } else {
                            "-".into()
                        };
                        msg.push_str(&format!(
                            " | {}: events {} panes {} W {} lag {}",
                            s.name, s.events, s.panes, wm, s.lag
                        ));
                    }
                    bar.set_message(msg);
                    bar.tick();
                }
                bar.finish();
            })
        };
        let r = rill::daemon::run(opts, metrics.clone(), token.clone()).await;
        token.cancel();
        let _ = progress.await;
        r
    });
    stop.store(true, Ordering::Relaxed);
    let produced = producer
        .join()
        .map_err(|_| anyhow::anyhow!("producer panicked"))??;
    drop(cluster);
    let snap = metrics.snapshot();
    println!(
        "stopped: produced {produced} events; {}",
        snap.iter()
            .map(|s| format!(
                "{} consumed {} events, emitted {} panes",
                s.name, s.events, s.panes
            ))
            .collect::<Vec<_>>()
            .join("; ")
    );
    if let Some(e) = &embedded {
        println!("in-process online store held {} entities x groups", e.len());
    }
    let _ = names;
    rt.shutdown_timeout(Duration::from_secs(1));
    result
}
