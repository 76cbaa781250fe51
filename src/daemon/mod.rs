//! `rill run`: the long-running daemon. Each pipeline gets a consumer
//! thread (decode, engine, Parquet, checkpoints; see [`worker`]) and, when
//! it has an online sink, a Redis writer task on the tokio runtime that
//! also serves HTTP (`/metrics`, `/healthz`, `/readyz`) and watches for
//! signals.
//!
//! Shutdown: the first SIGTERM or SIGINT cancels one token; every worker
//! stops reading, sends what it emitted to the sinks, writes a final
//! checkpoint and commits. Past the drain deadline, or on a second signal,
//! the process exits at once (the last checkpoint still holds).

pub mod crash_points;
pub mod http;
pub mod produce;
pub mod worker;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Pipeline;
use crate::metrics::Metrics;
use crate::sink::embedded::EmbeddedStore;
pub use worker::WorkerOptions;

/// Batches of online rows buffered per pipeline before the engine waits
/// (`rill run --online-queue`).
pub const ONLINE_QUEUE: usize = 64;

/// What `rill run` needs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub pipelines: Vec<Pipeline>,
    pub worker: WorkerOptions,
    /// Overrides every pipeline's Redis URL.
    pub redis_url: Option<String>,
    pub http: Option<SocketAddr>,
    /// Keys, TLS and limits of the HTTP port.
    pub http_options: crate::serve::http::HttpOptions,
    pub drain_deadline: Duration,
    /// The in-process online store for pipelines without Redis (`rill demo`).
    pub embedded: Option<Arc<EmbeddedStore>>,
    /// Serve `/v1/features` on the HTTP port too.
    pub read_api: bool,
    /// Batches of online rows waiting for the writer before consumption
    /// pauses (default [`ONLINE_QUEUE`]).
    pub online_queue: usize,
}

/// Runs until `shutdown` is cancelled (or a worker fails), then drains.
pub async fn run(
    opts: RunOptions,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut http_task = None;
    let names: Vec<&str> = opts.pipelines.iter().map(|p| p.name.as_str()).collect();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        pipelines = %names.join(","),
        state_dir = %opts.worker.state_dir.display(),
        group_instance_id = opts.worker.group_instance_id.as_deref().unwrap_or("-"),
        "rill run starting"
    );
    let registry = Arc::new(
        crate::serve::registry::Registry::new(opts.pipelines.clone())
            .map_err(|e| anyhow::anyhow!(e))?,
    );
    let read_store = match (&opts.embedded, &opts.redis_url) {
        (Some(store), None) => crate::serve::api::Store::Embedded(store.clone()),
        _ => crate::serve::api::Store::redis(&opts.pipelines, opts.redis_url.as_deref())?,
    };
    let monitor = tokio::spawn(freshness_monitor(
        registry.clone(),
        metrics.clone(),
        if opts.embedded.is_some() && opts.redis_url.is_none() {
            None
        } else {
            Some(read_store.clone())
        },
        opts.worker.instance.clone(),
        shutdown.clone(),
    ));
    if let Some(addr) = opts.http {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        tracing::info!(
            addr = %listener.local_addr()?,
            tls = opts.http_options.tls.is_some(),
            api_keys = opts.http_options.keys.is_some(),
            "http listening"
        );
        let service = crate::serve::routes::Service {
            api: Arc::new(crate::serve::api::ReadApi {
                registry: registry.clone(),
                store: read_store,
                limits: crate::serve::api::Limits::default(),
            }),
            freshness: crate::serve::routes::FreshnessSource::Metrics(metrics.clone()),
            clock: Arc::new(crate::time::SystemClock),
        };
        let app = http::router(metrics.clone())
            .merge(crate::serve::routes::router(service, opts.read_api));
        let stop = shutdown.clone();
        let http_options = opts.http_options.clone();
        http_task = Some(tokio::spawn(async move {
            let _ = crate::serve::http::serve(listener, app, http_options, stop).await;
        }));
    }
    let mut workers = Vec::new();
    let mut writers = Vec::new();
    for p in &opts.pipelines {
        let pm = metrics.pipeline(&p.name);
        // With an embedded store (the demo) only an explicit URL means Redis.
        let url = match &opts.embedded {
            Some(_) => opts
                .redis_url
                .clone()
                .map(crate::config::RedisEndpoint::from_url),
            None => opts
                .redis_url
                .clone()
                .map(crate::config::RedisEndpoint::from_url)
                .or_else(|| p.redis.as_ref().map(|r| r.endpoint.clone())),
        };
        let layout = online_layout(p);
        let marker = url.as_ref().map(|_| {
            Arc::new(crate::sink::redis::recovery::LossMarker::new(
                &layout.prefix,
                &layout.group,
            ))
        });
        let online = url.map(|url| {
            // Full: the worker blocks in `blocking_send` and stops reading.
            let (tx, rx) = mpsc::channel(opts.online_queue.max(1));
            writers.push(tokio::spawn(crate::sink::redis::run_writer_with_marker(
                url,
                layout.clone(),
                rx,
                pm.clone(),
                marker.clone(),
            )));
            tx
        });
        let online = online.or_else(|| {
            opts.embedded.clone().map(|store| {
                let (tx, rx) = mpsc::channel(opts.online_queue.max(1));
                writers.push(tokio::spawn(crate::sink::embedded::run_writer(
                    store,
                    layout.clone(),
                    rx,
                    pm.clone(),
                )));
                tx
            })
        });
        let plan = registry
            .plans()
            .iter()
            .find(|x| x.pipeline.name == p.name)
            .expect("the registry holds every pipeline")
            .clone();
        let mut w = worker::Worker::new(plan, opts.worker.clone(), online, pm)?;
        if let Some(m) = marker {
            w = w.with_marker(m);
        }
        let token = shutdown.clone();
        let name = p.name.clone();
        let failed = shutdown.clone();
        workers.push(tokio::task::spawn_blocking(move || {
            let r = w.run(token);
            if let Err(e) = &r {
                tracing::error!(pipeline = %name, error = format!("{e:#}"), "pipeline stopped");
                failed.cancel();
            }
            r
        }));
    }
    metrics
        .ready
        .store(true, std::sync::atomic::Ordering::Relaxed);
    shutdown.cancelled().await;
    tracing::info!(
        deadline_s = opts.drain_deadline.as_secs_f64(),
        "shutting down"
    );
    let drain = async {
        let mut first_err = None;
        for w in workers {
            match w.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => first_err = first_err.or(Some(e)),
                Err(e) => first_err = first_err.or(Some(anyhow::anyhow!("worker panicked: {e}"))),
            }
        }
        // Workers dropped their senders: the writers flush and end.
        for w in writers {
            let _ = w.await;
        }
        first_err
    };
    match tokio::time::timeout(opts.drain_deadline, drain).await {
        Ok(None) => {}
        Ok(Some(e)) => return Err(e),
        Err(_) => anyhow::bail!(
            "drain deadline of {:?} passed; exiting with the last checkpoint",
            opts.drain_deadline
        ),
    }
    if let Some(t) = http_task {
        let _ = t.await;
    }
    let _ = monitor.await;
    Ok(())
}

/// Every second: judges each pipeline's freshness, logs SLA breaches when
/// they start and end, updates the freshness gauges, and publishes this
/// instance's report in Redis for `rill serve` (see
/// [`crate::serve::freshness::status_key`]).
async fn freshness_monitor(
    registry: Arc<crate::serve::registry::Registry>,
    metrics: Arc<Metrics>,
    publish: Option<crate::serve::api::Store>,
    instance: String,
    shutdown: CancellationToken,
) {
    use crate::serve::freshness::{evaluate, status_key, BreachTracker};
    use crate::time::Clock;
    let mut tracker = BreachTracker::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let now = crate::time::SystemClock.now();
        let handles = metrics.handles();
        for s in metrics.snapshot() {
            let Some(p) = registry.get(&s.name) else {
                continue;
            };
            let report = crate::serve::routes::report_of(&s, now);
            let f = evaluate(p, Some(&report), now);
            tracker.observe_and_log(&f, now);
            if let Some(m) = handles.iter().find(|(n, _)| *n == s.name).map(|(_, m)| m) {
                if let Some(sla) = f.sla_seconds {
                    m.freshness_sla.set(sla);
                }
                m.freshness_breached
                    .set(i64::from(f.sla_holds == Some(false)));
                if let Some(l) = f.watermark_lag_seconds {
                    m.watermark_lag.set(l);
                }
                for (sink, v) in [
                    ("online", f.seconds_since_online_write),
                    ("offline", f.seconds_since_offline_write),
                ] {
                    if let Some(v) = v {
                        m.since_last_write
                            .get_or_create(&vec![("sink".to_string(), sink.to_string())])
                            .set(v);
                    }
                }
            }
            if let Some(crate::serve::api::Store::Redis {
                targets,
                group_target,
            }) = &publish
            {
                let Some(i) = registry.pipelines().iter().position(|q| q.name == s.name) else {
                    continue;
                };
                let Some(t) = targets.get(group_target[i]) else {
                    continue;
                };
                let prefix = p.redis.as_ref().map_or("rill", |r| r.key_prefix.as_str());
                let key = status_key(prefix, &p.name);
                let value = serde_json::to_string(&report).expect("json");
                let conn = t.conn.clone();
                // One key: one slot, also on a cluster.
                let r: redis::RedisResult<()> = async {
                    redis::pipe()
                        .cmd("HSET")
                        .arg(&key)
                        .arg(&instance)
                        .arg(value)
                        .ignore()
                        .cmd("PEXPIRE")
                        .arg(&key)
                        .arg(86_400_000)
                        .ignore()
                        .query_async(&mut conn.get().await?)
                        .await
                }
                .await;
                if let Err(e) = r {
                    tracing::debug!(pipeline = %p.name, error = %e, "publishing freshness");
                }
            }
        }
    }
}

/// How a pipeline's panes are written online.
pub fn online_layout(p: &Pipeline) -> crate::sink::redis::OnlineLayout {
    crate::sink::redis::OnlineLayout::of(p)
}

/// Cancels `token` on the first SIGTERM/SIGINT; exits on the second.
pub fn install_signals(token: CancellationToken) {
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    return;
                }
            };
        let mut n = 0;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            n += 1;
            if n == 1 {
                tracing::info!("signal received: draining (a second signal exits at once)");
                token.cancel();
            } else {
                tracing::warn!("second signal: exiting now");
                std::process::exit(130);
            }
        }
    });
}
