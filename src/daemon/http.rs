//! The daemon's own HTTP routes: `/metrics` (Prometheus text), `/healthz`
//! (the process is up) and `/readyz` (every pipeline's consumer is
//! running). The read API, freshness, registry and catalog routes are
//! merged in from [`crate::serve::routes`].

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::metrics::Metrics;

pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(metrics)
}

/// OpenMetrics to a scraper that asks for it (Prometheus does), the
/// classic Prometheus text format (0.0.4) otherwise (curl, promtool).
async fn metrics_text(
    State(m): State<Arc<Metrics>>,
    headers: axum::http::HeaderMap,
) -> impl IntoResponse {
    let open = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    if open {
        (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            m.render(),
        )
    } else {
        (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            m.render_classic(),
        )
    }
}

async fn ready(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    if m.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}
