//! `rill run PIPELINE_OR_DIR...`: the daemon.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use rill::config::Pipeline;
use rill::daemon::{RunOptions, WorkerOptions};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
pub struct Args {
    /// Pipeline files, or directories of them (*.yaml, *.yml).
    #[arg(required = true)]
    pub pipelines: Vec<PathBuf>,
    /// Checkpoints: one file per partition, in a directory every instance
    /// of the consumer group can reach, or one object per partition in
    /// object storage (`s3://bucket/state`: conditional writes fence off a
    /// former owner, docs/storage.md).
    #[arg(long, default_value = "./rill-state")]
    pub state_dir: PathBuf,
    /// Root of the Parquet output, a directory or an object-storage URL
    /// (default: each pipeline's offline path).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Kafka bootstrap servers (default: each pipeline's `brokers`).
    #[arg(long)]
    pub brokers: Option<String>,
    /// Redis URL for every pipeline (default: each pipeline's online sink).
    #[arg(long)]
    pub redis: Option<String>,
    /// HTTP address for /metrics, /healthz, /readyz, the catalog page (`/`),
    /// /v1/freshness and the registry; `off` for none.
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub http: String,
    /// Also serve feature values (`/v1/features`, as `rill serve` does) on
    /// the HTTP port.
    #[arg(long)]
    pub read_api: bool,
    /// Time between checkpoints (files roll at least this often).
    #[arg(long, default_value = "10s")]
    pub checkpoint_interval: String,
    /// Rows per Parquet file before it rolls.
    #[arg(long, default_value_t = 1_000_000)]
    pub max_file_rows: usize,
    /// Time allowed for the final flush and checkpoint after a signal.
    #[arg(long, default_value = "30s")]
    pub drain_deadline: String,
    /// Batches of online rows (up to 2,048 each) that may wait for a slow
    /// Redis before the daemon pauses its partitions.
    #[arg(long, default_value_t = rill::daemon::ONLINE_QUEUE)]
    pub online_queue: usize,
    /// Kafka static membership: a stable id per instance (`group.instance.id`)
    /// lets a restarted instance take its partitions back without a
    /// rebalance. Default: the POD_NAME environment variable when set.
    #[arg(long, env = "POD_NAME")]
    pub group_instance_id: Option<String>,
    #[command(flatten)]
    pub http_security: super::serve::HttpArgs,
}

/// Reads pipeline files and directories.
pub fn load_pipelines(paths: &[PathBuf]) -> anyhow::Result<Vec<Pipeline>> {
    let mut out: Vec<Pipeline> = Vec::new();
    for path in paths {
        let mut files = Vec::new();
        if path.is_dir() {
            for e in std::fs::read_dir(path)
                .with_context(|| format!("failed to read {}", path.display()))?
            {
                let f = e?.path();
                if matches!(f.extension().and_then(|x| x.to_str()), Some("yaml" | "yml")) {
                    files.push(f);
                }
            }
            files.sort();
        } else {
            files.push(path.clone());
        }
        for f in files {
            let p = Pipeline::from_file(&f).map_err(|e| anyhow::anyhow!("{e}"))?;
            if let Some(other) = out.iter().find(|o| o.name == p.name) {
                anyhow::bail!(
                    "two pipelines are named {:?}: {} and {}",
                    p.name,
                    other
                        .source_file
                        .as_ref()
                        .map_or("?".into(), |x| x.display().to_string()),
                    f.display()
                );
            }
            out.push(p);
        }
    }
    Ok(out)
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let pipelines = load_pipelines(&a.pipelines)?;
    let runnable: Vec<Pipeline> = pipelines
        .into_iter()
        .filter(|p| {
            if p.kafka.is_none() {
                tracing::warn!(pipeline = %p.name, "no kafka source: not run by the daemon");
            }
            p.kafka.is_some()
        })
        .collect();
    anyhow::ensure!(
        !runnable.is_empty(),
        "no pipeline with a kafka source to run"
    );
    let ci = rill::time::parse_duration(&a.checkpoint_interval)
        .map_err(|e| anyhow::anyhow!("--checkpoint-interval: {e}"))?;
    let dd = rill::time::parse_duration(&a.drain_deadline)
        .map_err(|e| anyhow::anyhow!("--drain-deadline: {e}"))?;
    let http: Option<SocketAddr> = if a.http.is_empty() || a.http == "off" {
        None
    } else {
        Some(
            a.http
                .parse()
                .with_context(|| format!("--http {:?} is not an address", a.http))?,
        )
    };
    let http_options = match http {
        Some(addr) => a.http_security.options(addr)?,
        None => Default::default(),
    };
    let opts = RunOptions {
        pipelines: runnable,
        worker: WorkerOptions {
            state_dir: a.state_dir,
            data_dir: a.data_dir,
            brokers: a.brokers,
            checkpoint_interval: Duration::from_micros(ci as u64),
            max_file_rows: a.max_file_rows,
            instance: format!(
                "{}-{}",
                std::process::id(),
                rill::time::Clock::now(&rill::time::SystemClock) / 1000
            ),
            group_instance_id: a.group_instance_id,
        },
        redis_url: a.redis,
        http,
        http_options,
        drain_deadline: Duration::from_micros(dd as u64),
        embedded: None,
        read_api: a.read_api,
        online_queue: a.online_queue,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let token = CancellationToken::new();
        rill::daemon::install_signals(token.clone());
        rill::daemon::run(opts, Arc::new(rill::metrics::Metrics::default()), token).await
    })?;
    // Workers on blocking threads are done or abandoned past the deadline.
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}
