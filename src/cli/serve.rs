//! `rill serve PIPELINE_OR_DIR...`: the online read API, the registry, the
//! freshness endpoint and the catalog page over the pipelines' Redis.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use rill::serve::api::{Limits, ReadApi, Store};
use rill::serve::registry::Registry;
use rill::serve::routes::{self, FreshnessSource, Service};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
pub struct Args {
    /// Pipeline files, or directories of them (*.yaml, *.yml).
    #[arg(required = true)]
    pub pipelines: Vec<PathBuf>,
    /// Address to listen on (`HOST:PORT`, or a port on 127.0.0.1).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Redis URL for every group (default: each pipeline's online sink).
    #[arg(long)]
    pub redis: Option<String>,
    /// Most entities in one request; more are refused with 413.
    #[arg(long, default_value_t = 1000)]
    pub max_entities: usize,
    /// Largest request body in bytes; larger ones are refused with 413.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_body_bytes: usize,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
}

/// Builds the service of `rill serve` (also used by `rill bench serve`).
pub fn service(
    pipelines: Vec<rill::config::Pipeline>,
    redis: Option<&str>,
    limits: Limits,
) -> anyhow::Result<Service> {
    let store = Store::redis(&pipelines, redis)?;
    let registry = Arc::new(Registry::new(pipelines).map_err(|e| anyhow::anyhow!(e))?);
    Ok(Service {
        api: Arc::new(ReadApi {
            registry,
            store,
            limits,
        }),
        freshness: FreshnessSource::Published,
        clock: Arc::new(rill::time::SystemClock),
    })
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let pipelines = super::run::load_pipelines(&a.pipelines)?;
    anyhow::ensure!(!pipelines.is_empty(), "no pipeline files given");
    let addr: SocketAddr = match a.listen.parse::<u16>() {
        Ok(port) => SocketAddr::from(([127, 0, 0, 1], port)),
        Err(_) => a
            .listen
            .parse()
            .with_context(|| format!("--listen {:?} is not an address", a.listen))?,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(a.threads.max(1))
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let limits = Limits {
            max_entities: a.max_entities,
            max_body_bytes: a.max_body_bytes,
        };
        let svc = service(pipelines, a.redis.as_deref(), limits)?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        tracing::info!(addr = %local, groups = svc.registry().pipelines().len(), "serving");
        eprintln!("rill serve: listening on http://{local}/ (catalog at /, API at /v1/features, /openapi.json)");
        let token = CancellationToken::new();
        rill::daemon::install_signals(token.clone());
        let app = routes::router(svc, true).route("/healthz", axum::routing::get(|| async { "ok\n" }));
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { token.cancelled().await })
            .await?;
        anyhow::Ok(())
    })
}
