//! HTTP routes of the read API, the registry, freshness and the catalog
//! page, served by `rill serve` and by the daemon's HTTP port.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use super::api::{self, ApiError, ReadApi, Store};
use super::freshness::{self, Freshness, Report};
use super::page;
use super::registry::Registry;
use crate::metrics::Metrics;
use crate::time::Clock;

/// Where freshness figures come from.
#[derive(Clone)]
pub enum FreshnessSource {
    /// The daemon in this process.
    Metrics(Arc<Metrics>),
    /// The reports daemon instances publish in Redis (`rill serve`).
    Published,
    /// Nothing runs the pipelines here.
    None,
}

/// Shared state of the routes.
#[derive(Clone)]
pub struct Service {
    pub api: Arc<ReadApi>,
    pub freshness: FreshnessSource,
    pub clock: Arc<dyn Clock>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

impl Service {
    pub fn registry(&self) -> &Registry {
        &self.api.registry
    }

    /// The latest report of every pipeline that has one.
    pub async fn reports(&self) -> HashMap<String, Report> {
        let now = self.clock.now();
        match &self.freshness {
            FreshnessSource::None => HashMap::new(),
            FreshnessSource::Metrics(m) => m
                .snapshot()
                .into_iter()
                .map(|s| (s.name.clone(), report_of(&s, now)))
                .collect(),
            FreshnessSource::Published => {
                let Store::Redis {
                    targets,
                    group_target,
                } = &self.api.store
                else {
                    return HashMap::new();
                };
                let pipelines = self.registry().pipelines();
                let mut out = HashMap::new();
                for (t, target) in targets.iter().enumerate() {
                    let mut cmds = Vec::new();
                    let mut names = Vec::new();
                    for (i, p) in pipelines.iter().enumerate() {
                        if group_target[i] == t {
                            let prefix = p.redis.as_ref().map_or("rill", |r| r.key_prefix.as_str());
                            let key = freshness::status_key(prefix, &p.name);
                            let slot = crate::sink::redis::conn::slot_of(key.as_bytes());
                            let mut cmd = redis::cmd("HVALS");
                            cmd.arg(key);
                            cmds.push((slot, cmd));
                            names.push(p.name.clone());
                        }
                    }
                    let conn = target.conn.clone();
                    let got: redis::RedisResult<Vec<Vec<String>>> =
                        async { conn.get().await?.query_all(cmds).await }.await;
                    match got {
                        Ok(v) => {
                            for (name, values) in names.into_iter().zip(v) {
                                if let Some(r) = freshness::merge_published(&values, now) {
                                    out.insert(name, r);
                                }
                            }
                        }
                        Err(e) => tracing::debug!(error = %e, "reading freshness reports"),
                    }
                }
                out
            }
        }
    }

    /// Freshness of every pipeline, in registry order.
    pub async fn freshness(&self) -> Vec<Freshness> {
        let reports = self.reports().await;
        let now = self.clock.now();
        self.registry()
            .pipelines()
            .iter()
            .map(|p| freshness::evaluate(p, reports.get(&p.name), now))
            .collect()
    }
}

/// A daemon pipeline's figures as a freshness report.
pub fn report_of(s: &crate::metrics::Snapshot, now: crate::time::Micros) -> Report {
    Report {
        watermark: (s.watermark != i64::MIN).then_some(s.watermark),
        last_online_write: (s.last_online_write > 0).then_some(s.last_online_write),
        last_offline_write: (s.last_offline_write > 0).then_some(s.last_offline_write),
        consumer_lag: Some(s.lag),
        at: now,
    }
}

/// The routes; merge them into another router or serve them alone.
/// Without `read_api` the feature values (`/v1/features`) are left out.
pub fn router(service: Service, read_api: bool) -> Router {
    let r = Router::new();
    let r = if read_api {
        r.route("/v1/features", get(features_get).post(features_post))
    } else {
        r
    };
    r.route("/v1/freshness", get(freshness_all))
        .route("/v1/freshness/{group}", get(freshness_one))
        .route("/v1/registry", get(registry_list))
        .route("/v1/registry/{target}", get(registry_describe))
        .route("/v1/lineage/{target}", get(registry_lineage))
        .route("/v1/search", get(search))
        .route("/openapi.json", get(openapi))
        .route("/", get(catalog))
        .route("/groups/{group}", get(group_page))
        .with_state(service)
}

async fn features_post(State(s): State<Service>, headers: HeaderMap, body: Body) -> Response {
    let limit = s.api.limits.max_body_bytes;
    let too_big = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body over {limit} bytes; split the request"),
        )
        .into_response()
    };
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        if len > limit {
            return too_big();
        }
    }
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => return too_big(),
    };
    let req = match api::parse_request(&bytes) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    answer(&s, req).await
}

async fn features_get(State(s): State<Service>, RawQuery(q): RawQuery) -> Response {
    match api::request_from_query(q.as_deref().unwrap_or("")) {
        Ok(req) => answer(&s, req).await,
        Err(e) => e.into_response(),
    }
}

async fn answer(s: &Service, req: api::FeaturesRequest) -> Response {
    let now = s.clock.now();
    match s.api.features(req, now).await {
        Ok(r) => {
            let body = r.to_json();
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Err(e) => e.into_response(),
    }
}

async fn freshness_all(State(s): State<Service>) -> Response {
    Json(serde_json::json!({ "pipelines": s.freshness().await })).into_response()
}

async fn freshness_one(State(s): State<Service>, Path(group): Path<String>) -> Response {
    match s
        .freshness()
        .await
        .into_iter()
        .find(|f| f.pipeline == group)
    {
        Some(f) => Json(f).into_response(),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            format!("unknown feature group {group:?}"),
        )
        .into_response(),
    }
}

async fn registry_list(State(s): State<Service>) -> Response {
    Json(serde_json::json!({ "groups": s.registry().list() })).into_response()
}

async fn registry_describe(State(s): State<Service>, Path(target): Path<String>) -> Response {
    match s.registry().describe(&target) {
        Ok((g, None)) => Json(serde_json::to_value(g).expect("json")).into_response(),
        Ok((_, Some(f))) => Json(serde_json::to_value(f).expect("json")).into_response(),
        Err(e) => ApiError::new(StatusCode::NOT_FOUND, e.to_string()).into_response(),
    }
}

async fn registry_lineage(State(s): State<Service>, Path(target): Path<String>) -> Response {
    match s.registry().lineage(&target) {
        Ok(l) => Json(l).into_response(),
        Err(e) => ApiError::new(StatusCode::NOT_FOUND, e.to_string()).into_response(),
    }
}

async fn search(State(s): State<Service>, RawQuery(q): RawQuery) -> Response {
    let text = form_urlencoded::parse(q.as_deref().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "q")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    Json(serde_json::json!({ "query": text, "hits": s.registry().search(&text) })).into_response()
}

async fn openapi(State(s): State<Service>) -> Response {
    Json(super::openapi::document(s.registry())).into_response()
}

async fn catalog(State(s): State<Service>, RawQuery(q): RawQuery) -> Response {
    let text = form_urlencoded::parse(q.as_deref().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "q")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let fresh = s.freshness().await;
    Html(page::index(s.registry(), &fresh, &text)).into_response()
}

async fn group_page(State(s): State<Service>, Path(group): Path<String>) -> Response {
    let fresh = s.freshness().await;
    match page::group(s.registry(), &fresh, &group) {
        Some(html) => Html(html).into_response(),
        None => (StatusCode::NOT_FOUND, Html(page::not_found(&group))).into_response(),
    }
}
