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
    #[command(flatten)]
    pub http: HttpArgs,
}

/// Who may use the HTTP port and how it is encrypted (`rill serve`, `rill run`).
#[derive(Debug, Clone, clap::Args)]
pub struct HttpArgs {
    /// API keys, one per line (or `sha256:<hex>` of a key): every route
    /// but /healthz, /readyz and /metrics then needs `Authorization:
    /// Bearer <key>`.
    #[arg(long)]
    pub api_key_file: Option<PathBuf>,
    /// Serve a non-loopback address without API keys.
    #[arg(long)]
    pub insecure_no_auth: bool,
    /// PEM certificate chain: serve HTTPS (with --tls-key).
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS #8) of --tls-cert.
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// Time a client has to send a request's headers (and a TLS handshake).
    #[arg(long, default_value = "10s")]
    pub header_timeout: String,
    /// Time within which a whole request, its body included, is answered;
    /// later: 408.
    #[arg(long, default_value = "30s")]
    pub request_timeout: String,
}

impl HttpArgs {
    /// The server options, after refusing an open non-loopback address.
    pub fn options(&self, addr: SocketAddr) -> anyhow::Result<rill::serve::http::HttpOptions> {
        let mut opts = rill::serve::http::HttpOptions::load(
            self.api_key_file.as_deref(),
            self.tls_cert.as_deref(),
            self.tls_key.as_deref(),
        )?;
        let secs = |s: &str, flag: &str| -> anyhow::Result<std::time::Duration> {
            let us = rill::time::parse_duration(s).map_err(|e| anyhow::anyhow!("{flag}: {e}"))?;
            anyhow::ensure!(us > 0, "{flag}: expected a duration above zero");
            Ok(std::time::Duration::from_micros(us as u64))
        };
        opts.limits.header_timeout = secs(&self.header_timeout, "--header-timeout")?;
        opts.limits.request_timeout = secs(&self.request_timeout, "--request-timeout")?;
        rill::serve::http::check_bind(addr, opts.keys.is_some(), self.insecure_no_auth)?;
        Ok(opts)
    }
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
    let http = a.http.options(addr)?;
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
        tracing::info!(
            addr = %local,
            groups = svc.registry().pipelines().len(),
            tls = http.tls.is_some(),
            api_keys = http.keys.is_some(),
            "serving"
        );
        eprintln!(
            "rill serve: listening on {}://{local}/ (catalog at /, API at /v1/features, /openapi.json){}",
            http.scheme(),
            if http.keys.is_some() { "; API keys required" } else { "" }
        );
        let token = CancellationToken::new();
        rill::daemon::install_signals(token.clone());
        let app = routes::router(svc, true).route("/healthz", axum::routing::get(|| async { "ok\n" }));
        rill::serve::http::serve(listener, app, http, token).await?;
        anyhow::Ok(())
    })
}
