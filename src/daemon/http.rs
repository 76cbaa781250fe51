//! The daemon's HTTP port: `/metrics` (Prometheus text), `/healthz` (the
//! process is up) and `/readyz` (every pipeline's consumer is running).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::config::Pipeline;
use crate::metrics::Metrics;
use crate::sink::embedded::EmbeddedStore;

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    pipelines: Arc<Vec<Pipeline>>,
    embedded: Option<Arc<EmbeddedStore>>,
}

pub fn router(
    metrics: Arc<Metrics>,
    pipelines: Arc<Vec<Pipeline>>,
    embedded: Option<Arc<EmbeddedStore>>,
) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/v1/online/{group}/{entity}", get(online))
        .with_state(AppState {
            metrics,
            pipelines,
            embedded,
        })
}

/// The embedded store's hash of an entity in a group (`rill demo` without
/// Redis); `entity` is the key values joined by `|`.
async fn online(
    State(s): State<AppState>,
    Path((group, entity)): Path<(String, String)>,
) -> axum::response::Response {
    let Some(store) = &s.embedded else {
        return (
            StatusCode::NOT_FOUND,
            "no embedded online store here: features are in Redis\n",
        )
            .into_response();
    };
    let Some(p) = s.pipelines.iter().find(|p| p.name == group) else {
        return (
            StatusCode::NOT_FOUND,
            format!("unknown feature group {group:?}\n"),
        )
            .into_response();
    };
    let prefix = p.redis.as_ref().map_or("rill", |r| r.key_prefix.as_str());
    let parts: Vec<String> = entity.split('|').map(str::to_string).collect();
    let key = crate::sink::redis::online_key_text(prefix, &group, &parts);
    match store.get(&key) {
        Some(h) => axum::Json(h).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            format!("no features for {entity:?} in {group}\n"),
        )
            .into_response(),
    }
}

async fn metrics_text(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.render(),
    )
}

async fn ready(State(s): State<AppState>) -> impl IntoResponse {
    if s.metrics.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}
