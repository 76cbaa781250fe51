//! `rill bench daemon`: the daemon's own path (decode, engine, Redis and
//! Parquet sinks, checkpoints) fed from a JSON-lines file through the same
//! worker and writer tasks as Kafka records, with the latency from a
//! window's completion to its value being in Redis.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use rill::daemon::worker::Worker;
use rill::daemon::WorkerOptions;
use rill::metrics::Metrics;

#[derive(Debug, Parser)]
pub struct Args {
    #[command(subcommand)]
    pub what: What,
}

#[derive(Debug, Subcommand)]
pub enum What {
    /// The daemon path from a file into Redis and Parquet.
    Daemon(DaemonArgs),
    /// Load generator for the read API (`POST /v1/features`) at a fixed rate.
    Serve(super::bench_serve::ServeArgs),
}

#[derive(Debug, Parser)]
pub struct DaemonArgs {
    /// Pipeline file (its Kafka settings are not used).
    pub pipeline: PathBuf,
    /// JSON-lines input.
    #[arg(long)]
    pub input: PathBuf,
    /// Redis URL (a real redis-server).
    #[arg(long)]
    pub redis: String,
    /// Parquet output and checkpoints (emptied first).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Time between checkpoints.
    #[arg(long, default_value = "10s")]
    pub checkpoint_interval: String,
    /// Records per second to feed (0: as fast as the path takes them).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    match a.what {
        What::Daemon(d) => daemon(d),
        What::Serve(s) => super::bench_serve::run(s),
    }
}

fn daemon(a: DaemonArgs) -> anyhow::Result<()> {
    let p = rill::config::Pipeline::from_file(&a.pipeline).map_err(|e| anyhow::anyhow!("{e}"))?;
    let _ = std::fs::remove_dir_all(&a.data_dir);
    let ci =
        rill::time::parse_duration(&a.checkpoint_interval).map_err(|e| anyhow::anyhow!("{e}"))?;
    let metrics = Arc::new(Metrics::default());
    let pm = metrics.pipeline(&p.name);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let (tx, rx) = tokio::sync::mpsc::channel(rill::daemon::ONLINE_QUEUE);
    let layout = rill::daemon::online_layout(&p);
    let writer = rt.spawn(rill::sink::redis::run_writer(
        a.redis.clone(),
        layout,
        rx,
        pm.clone(),
    ));
    let mut p = p;
    if p.kafka.is_none() {
        p.kafka = Some(rill::config::KafkaSource {
            brokers: "127.0.0.1:1".into(),
            topic: "bench".into(),
            group_id: "bench".into(),
            start: None,
            properties: Vec::new(),
        });
    }
    let opts = WorkerOptions {
        state_dir: a.data_dir.join("_state"),
        data_dir: Some(a.data_dir.clone()),
        brokers: None,
        checkpoint_interval: Duration::from_micros(ci as u64),
        max_file_rows: 1_000_000,
        instance: "bench".into(),
    };
    let w = Worker::new(p, opts, Some(tx), pm.clone())?;
    let t = Instant::now();
    let n = w.run_file(&a.input, a.rate)?;
    rt.block_on(writer)?;
    let secs = t.elapsed().as_secs_f64();
    let (p50, p99, p999, max, count) = pm.event_to_online.quantiles();
    let (_, w99, _, _, _) = pm.redis_write.quantiles();
    let out = serde_json::json!({
        "events": n,
        "seconds": secs,
        "events_per_second": n as f64 / secs,
        "online_rows": pm.online_rows.get(),
        "offline_rows": pm.offline_rows.get(),
        "checkpoints": pm.checkpoints.get(),
        "emit_to_online_us": { "p50": p50, "p99": p99, "p999": p999, "max": max, "rows": count },
        "redis_write_p99_us": w99,
        "peak_memory_bytes": rill::replay::peak_memory_bytes(),
    });
    if a.json {
        println!("{out}");
    } else {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(())
}
