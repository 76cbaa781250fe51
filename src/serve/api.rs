//! The online read API: entities and feature names in, values with their
//! status, window and age out. One Redis round trip per request: every
//! `HMGET` of every (entity, group) goes in one pipeline per Redis server.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::registry::Registry;
use crate::config::{Pipeline, ValueType};
use crate::sink::embedded::EmbeddedStore;
use crate::sink::redis::conn::Slot;
use crate::sink::redis::online_key_text;
use crate::time::{parse_duration, Micros};

/// Fields read besides the features (see the Redis layout in the README).
const META: [&str; 3] = ["_window_start", "_window_end", "_emitted_at"];

/// Where values are read from.
#[derive(Clone)]
pub enum Store {
    /// Redis servers; `targets[group_target[i]]` serves pipeline `i`.
    Redis {
        targets: Vec<RedisTarget>,
        group_target: Vec<usize>,
    },
    /// The in-process store of `rill demo`.
    Embedded(Arc<EmbeddedStore>),
}

#[derive(Clone)]
pub struct RedisTarget {
    pub endpoint: crate::config::RedisEndpoint,
    /// Reconnects by itself after Redis restarts (a cluster: after a
    /// failover too).
    pub conn: crate::sink::redis::conn::StoreConn,
}

impl Store {
    /// Connections to the Redis server of every pipeline that has one;
    /// `override_url` replaces them all. They connect on first use and
    /// reconnect after failures, so a server that starts before Redis (or
    /// outlives a Redis restart) serves as soon as Redis is back. Must be
    /// called within a tokio runtime.
    pub fn redis(pipelines: &[Pipeline], override_url: Option<&str>) -> anyhow::Result<Store> {
        let mut targets: Vec<RedisTarget> = Vec::new();
        let mut group_target = Vec::with_capacity(pipelines.len());
        for p in pipelines {
            let endpoint = match (override_url, &p.redis) {
                (Some(u), _) => crate::config::RedisEndpoint::from_url(u),
                (None, Some(r)) => r.endpoint.clone(),
                (None, None) => {
                    group_target.push(usize::MAX);
                    continue;
                }
            };
            let i = match targets.iter().position(|t| t.endpoint == endpoint) {
                Some(i) => i,
                None => {
                    let conn = crate::sink::redis::conn::StoreConn::new(&endpoint)
                        .map_err(|e| anyhow::anyhow!("redis {}: {e}", endpoint.display()))?;
                    targets.push(RedisTarget { endpoint, conn });
                    targets.len() - 1
                }
            };
            group_target.push(i);
        }
        Ok(Store::Redis {
            targets,
            group_target,
        })
    }
}

/// A request error: status and a message naming what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
    fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

/// `POST /v1/features` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeaturesRequest {
    /// One object per entity: key field → value (string or integer).
    pub entities: Vec<Map<String, Value>>,
    /// `group:feature` or `group:*`.
    pub features: Vec<String>,
    /// Values older than this are `expired` (a duration such as `10m`, or
    /// seconds as a number); default: the group's `max_age`, else its `ttl`.
    #[serde(default)]
    pub max_age: Option<Value>,
}

/// Limits of one request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_entities: usize,
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_entities: 1000,
            max_body_bytes: 1 << 20,
        }
    }
}

/// One requested column: pipeline index and feature index (past the
/// stored features: a request-time feature, `on_read[feature - stored]`).
#[derive(Debug, Clone, Copy)]
struct Col {
    group: usize,
    feature: usize,
}

/// Where a column's positions in the `at` vector say "computed when read".
const ON_READ: usize = usize::MAX;

/// A resolved request.
/// Names are borrowed from the registry: nothing is copied per request.
struct Plan<'a> {
    cols: Vec<Col>,
    /// Distinct pipelines in order of first request.
    groups: Vec<usize>,
    /// Per entry of `groups`: the Redis fields read (features, then META).
    fields: Vec<Vec<&'a str>>,
    /// Per column: (entry of `groups`, position in its fields), or
    /// `ON_READ` for a request-time feature.
    col_at: Vec<(usize, usize)>,
    /// Per column: the (stored feature, position in its fields) a
    /// request-time feature reads; empty for stored features.
    deps_at: Vec<Vec<(usize, usize)>>,
    /// Key fields per entry of `groups`.
    keys: Vec<&'a [String]>,
    /// Per entry of `groups`: the age after which values expire.
    max_age: Vec<Option<Micros>>,
}

/// The response to a feature request.
pub struct FeaturesResponse {
    names: Vec<String>,
    results: Vec<EntityResult>,
}

struct EntityResult {
    entity: Map<String, Value>,
    values: Vec<FeatureValue>,
}

/// One value as served.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureValue {
    pub value: Value,
    pub status: &'static str,
    pub window_start: Option<Micros>,
    pub window_end: Option<Micros>,
    pub emitted_at: Option<Micros>,
    pub age: Option<Micros>,
}

impl FeaturesResponse {
    /// The response body. Written by hand rather than through `Serialize`:
    /// the window and age of consecutive features of one group are the same
    /// and are formatted once (a 100 × 10 request has 1,000 values).
    pub fn to_json(&self) -> Vec<u8> {
        let per_value =
            150 + self.names.iter().map(String::len).sum::<usize>() / self.names.len().max(1);
        let mut out: Vec<u8> =
            Vec::with_capacity(64 + self.results.len() * self.names.len() * per_value);
        let keys: Vec<Vec<u8>> = self
            .names
            .iter()
            .map(|n| serde_json::to_vec(n).expect("a string"))
            .collect();
        out.extend_from_slice(b"{\"features\":[");
        for (i, k) in keys.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(k);
        }
        out.extend_from_slice(b"],\"results\":[");
        let mut last: Option<(
            Option<Micros>,
            Option<Micros>,
            Option<Micros>,
            Option<Micros>,
        )> = None;
        let mut tail = String::new();
        for (ei, r) in self.results.iter().enumerate() {
            if ei > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"entity\":");
            serde_json::to_writer(&mut out, &r.entity).expect("writing to memory");
            out.extend_from_slice(b",\"features\":{");
            for (j, v) in r.values.iter().enumerate() {
                if j > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(&keys[j]);
                out.extend_from_slice(b":{\"value\":");
                serde_json::to_writer(&mut out, &v.value).expect("writing to memory");
                out.extend_from_slice(b",\"status\":\"");
                out.extend_from_slice(v.status.as_bytes());
                out.push(b'"');
                let meta = (v.window_start, v.window_end, v.emitted_at, v.age);
                if last != Some(meta) {
                    tail.clear();
                    let ts = |name: &str, t: Option<Micros>, tail: &mut String| {
                        tail.push_str(",\"");
                        tail.push_str(name);
                        tail.push_str("\":");
                        match t {
                            Some(t) => {
                                tail.push('"');
                                crate::time::write_rfc3339(tail, t, false);
                                tail.push('"');
                            }
                            None => tail.push_str("null"),
                        }
                    };
                    ts("window_start", v.window_start, &mut tail);
                    ts("window_end", v.window_end, &mut tail);
                    ts("emitted_at", v.emitted_at, &mut tail);
                    tail.push_str(",\"age_seconds\":");
                    match v.age {
                        Some(a) => {
                            use std::fmt::Write as _;
                            let _ = write!(tail, "{}", a as f64 / 1e6);
                        }
                        None => tail.push_str("null"),
                    }
                    tail.push('}');
                    last = Some(meta);
                }
                out.extend_from_slice(tail.as_bytes());
            }
            out.extend_from_slice(b"}}");
        }
        out.extend_from_slice(b"]}");
        out
    }

    #[cfg(test)]
    pub(crate) fn for_tests(
        names: Vec<String>,
        rows: Vec<(Value, Vec<FeatureValue>)>,
    ) -> FeaturesResponse {
        FeaturesResponse {
            names,
            results: rows
                .into_iter()
                .map(|(e, values)| EntityResult {
                    entity: e.as_object().cloned().unwrap_or_default(),
                    values,
                })
                .collect(),
        }
    }

    /// The value of `feature` (`group:name`) for entity `i`.
    pub fn get(&self, i: usize, feature: &str) -> Option<&FeatureValue> {
        let j = self.names.iter().position(|n| n == feature)?;
        self.results.get(i)?.values.get(j)
    }
}

/// Parses `max_age` given as a duration text or a number of seconds.
fn parse_max_age(v: &Value) -> Result<Micros, ApiError> {
    let d = match v {
        Value::String(s) => {
            parse_duration(s).map_err(|e| ApiError::bad(format!("max_age: {e}")))?
        }
        Value::Number(n) => match n.as_f64() {
            Some(x) if x.is_finite() => (x * 1e6).round() as Micros,
            _ => return Err(ApiError::bad("max_age: expected a duration")),
        },
        _ => {
            return Err(ApiError::bad(
                "max_age: expected a duration such as \"10m\" or a number of seconds",
            ))
        }
    };
    if d <= 0 {
        return Err(ApiError::bad("max_age: expected a duration above zero"));
    }
    Ok(d)
}

/// The request logic, shared by the HTTP handlers and the benchmarks.
pub struct ReadApi {
    pub registry: Arc<Registry>,
    pub store: Store,
    pub limits: Limits,
}

impl ReadApi {
    fn plan(&self, features: &[String], max_age: Option<&Value>) -> Result<Plan<'_>, ApiError> {
        if features.is_empty() {
            return Err(ApiError::bad(
                "features: expected at least one name such as \"group:feature\" or \"group:*\"",
            ));
        }
        let request_max_age = max_age.map(parse_max_age).transpose()?;
        let pipelines = self.registry.pipelines();
        let mut cols = Vec::new();
        let mut unknown_groups: Vec<String> = Vec::new();
        let mut unknown_features: Vec<String> = Vec::new();
        for name in features {
            let Some((g, f)) = name.split_once(':') else {
                return Err(ApiError::bad(format!(
                    "feature {name:?}: expected \"group:feature\" or \"group:*\""
                )));
            };
            let Some(gi) = pipelines.iter().position(|p| p.name == g) else {
                if !unknown_groups.iter().any(|x| x == g) {
                    unknown_groups.push(g.to_string());
                }
                continue;
            };
            let p = &pipelines[gi];
            let n = p.features.len();
            if f == "*" {
                cols.extend((0..n + p.on_read.len()).map(|feature| Col { group: gi, feature }));
            } else {
                match p.features.iter().position(|x| x.name == f) {
                    Some(feature) => cols.push(Col { group: gi, feature }),
                    None => match p.on_read.iter().position(|x| x.name == f) {
                        Some(j) => cols.push(Col {
                            group: gi,
                            feature: n + j,
                        }),
                        None => unknown_features.push(name.clone()),
                    },
                }
            }
        }
        if !unknown_groups.is_empty() || !unknown_features.is_empty() {
            let mut parts = Vec::new();
            if !unknown_groups.is_empty() {
                let mut known: Vec<&str> = pipelines.iter().map(|p| p.name.as_str()).collect();
                known.sort_unstable();
                parts.push(format!(
                    "unknown feature group(s) {} (known groups: {})",
                    unknown_groups.join(", "),
                    known.join(", ")
                ));
            }
            if !unknown_features.is_empty() {
                parts.push(format!(
                    "unknown feature(s) {}",
                    unknown_features.join(", ")
                ));
            }
            return Err(ApiError::new(StatusCode::NOT_FOUND, parts.join("; ")));
        }
        // Keep the first occurrence of a feature named twice.
        let mut seen = std::collections::HashSet::new();
        cols.retain(|c| seen.insert((c.group, c.feature)));
        let mut groups: Vec<usize> = Vec::new();
        let mut fields: Vec<Vec<&str>> = Vec::new();
        let mut col_at = Vec::with_capacity(cols.len());
        let mut deps_at = Vec::with_capacity(cols.len());
        let plans = self.registry.plans();
        for c in &cols {
            let gi = match groups.iter().position(|&g| g == c.group) {
                Some(i) => i,
                None => {
                    groups.push(c.group);
                    fields.push(Vec::new());
                    groups.len() - 1
                }
            };
            let p = &pipelines[c.group];
            if c.feature < p.features.len() {
                fields[gi].push(p.features[c.feature].name.as_str());
                col_at.push((gi, fields[gi].len() - 1));
                deps_at.push(Vec::new());
            } else {
                // The stored features it reads, each fetched once.
                let mut deps = Vec::new();
                for &j in &plans[c.group].on_read[c.feature - p.features.len()].deps {
                    let name = p.features[j].name.as_str();
                    let pos = match fields[gi].iter().position(|x| *x == name) {
                        Some(pos) => pos,
                        None => {
                            fields[gi].push(name);
                            fields[gi].len() - 1
                        }
                    };
                    deps.push((j, pos));
                }
                col_at.push((gi, ON_READ));
                deps_at.push(deps);
            }
        }
        for f in &mut fields {
            f.extend(META);
        }
        let keys = groups
            .iter()
            .map(|&g| pipelines[g].key_fields.as_slice())
            .collect();
        let max_age = groups
            .iter()
            .map(|&g| {
                request_max_age.or_else(|| {
                    pipelines[g]
                        .redis
                        .as_ref()
                        .and_then(|r| r.max_age.or(r.ttl))
                })
            })
            .collect();
        Ok(Plan {
            cols,
            groups,
            fields,
            col_at,
            deps_at,
            keys,
            max_age,
        })
    }

    /// Key texts of one entity per group of the plan.
    fn entity_keys(
        &self,
        plan: &Plan<'_>,
        i: usize,
        e: &Map<String, Value>,
    ) -> Result<Vec<String>, ApiError> {
        let pipelines = self.registry.pipelines();
        for k in e.keys() {
            if !plan.keys.iter().any(|ks| ks.contains(k)) {
                let mut all: Vec<&str> = plan
                    .keys
                    .iter()
                    .copied()
                    .flatten()
                    .map(String::as_str)
                    .collect();
                all.sort_unstable();
                all.dedup();
                return Err(ApiError::bad(format!(
                    "entities[{i}]: unknown key field {k:?} (the requested groups are keyed by {})",
                    all.join(", ")
                )));
            }
        }
        let mut out = Vec::with_capacity(plan.groups.len());
        for (gi, &g) in plan.groups.iter().enumerate() {
            let p = &pipelines[g];
            let mut parts = Vec::with_capacity(plan.keys[gi].len());
            for k in plan.keys[gi] {
                let v = e.get(k).ok_or_else(|| {
                    ApiError::bad(format!(
                        "entities[{i}]: missing key field {k:?} of feature group {}",
                        p.name
                    ))
                })?;
                parts.push(key_text(v).ok_or_else(|| {
                    ApiError::bad(format!(
                        "entities[{i}]: key field {k:?} must be a string or an integer, found {v}"
                    ))
                })?);
            }
            let prefix = p.redis.as_ref().map_or("rill", |r| r.key_prefix.as_str());
            out.push(online_key_text(prefix, &p.name, &parts));
        }
        Ok(out)
    }

    /// Answers a parsed request at time `now`.
    pub async fn features(
        &self,
        req: FeaturesRequest,
        now: Micros,
    ) -> Result<FeaturesResponse, ApiError> {
        if req.entities.len() > self.limits.max_entities {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "{} entities in one request: at most {} are served at once; split the request",
                    req.entities.len(),
                    self.limits.max_entities
                ),
            ));
        }
        let plan = self.plan(&req.features, req.max_age.as_ref())?;
        let mut keys = Vec::with_capacity(req.entities.len());
        for (i, e) in req.entities.iter().enumerate() {
            keys.push(self.entity_keys(&plan, i, e)?);
        }
        let rows = self.fetch(&plan, &keys).await?;
        let pipelines = self.registry.pipelines();
        let names: Vec<String> = plan
            .cols
            .iter()
            .map(|c| {
                let p = &pipelines[c.group];
                let name = match p.features.get(c.feature) {
                    Some(f) => f.name.as_str(),
                    None => p.on_read[c.feature - p.features.len()].name.as_str(),
                };
                format!("{}:{name}", p.name)
            })
            .collect();
        // The window metadata of every (entity, group) hash, read once.
        let metas: Vec<Meta> = rows
            .iter()
            .enumerate()
            .map(|(i, row)| row_meta(row, plan.fields[i % plan.groups.len()].len()))
            .collect();
        let mut results = Vec::with_capacity(req.entities.len());
        for (ei, entity) in req.entities.into_iter().enumerate() {
            let mut values = Vec::with_capacity(plan.cols.len());
            for (ci, c) in plan.cols.iter().enumerate() {
                let (gi, fi) = plan.col_at[ci];
                let slot = ei * plan.groups.len() + gi;
                if fi == ON_READ {
                    let p = &pipelines[c.group];
                    values.push(on_read_value(
                        &rows[slot],
                        metas[slot],
                        &self.registry.plans()[c.group],
                        c.feature - p.features.len(),
                        &plan.deps_at[ci],
                        plan.max_age[gi],
                        now,
                    ));
                    continue;
                }
                let feature = &pipelines[c.group].features[c.feature];
                values.push(make_value(
                    &rows[slot],
                    fi,
                    metas[slot],
                    feature.output_type(),
                    feature.default.as_ref(),
                    plan.max_age[gi],
                    now,
                ));
            }
            results.push(EntityResult { entity, values });
        }
        Ok(FeaturesResponse { names, results })
    }

    /// Reads every (entity, group) hash; `rows[e * groups + g]`.
    async fn fetch(
        &self,
        plan: &Plan<'_>,
        keys: &[Vec<String>],
    ) -> Result<Vec<Vec<Option<String>>>, ApiError> {
        let ng = plan.groups.len();
        let mut rows: Vec<Vec<Option<String>>> = vec![Vec::new(); keys.len() * ng];
        match &self.store {
            Store::Embedded(store) => {
                for (e, ks) in keys.iter().enumerate() {
                    for (g, k) in ks.iter().enumerate() {
                        let h = store.get(k);
                        rows[e * ng + g] = plan.fields[g]
                            .iter()
                            .map(|f| h.as_ref().and_then(|h| h.get(*f).cloned()))
                            .collect();
                    }
                }
            }
            Store::Redis {
                targets,
                group_target,
            } => {
                // One pipeline per server (on a cluster, per hash slot),
                // all sent at once.
                type Calls = Vec<(Slot, redis::Cmd)>;
                let mut per_target: HashMap<usize, (Calls, Vec<usize>)> = HashMap::new();
                for (e, ks) in keys.iter().enumerate() {
                    for (g, k) in ks.iter().enumerate() {
                        let t = group_target[plan.groups[g]];
                        if t == usize::MAX {
                            return Err(ApiError::new(
                                StatusCode::NOT_FOUND,
                                format!(
                                    "feature group {} has no online store",
                                    self.registry.pipelines()[plan.groups[g]].name
                                ),
                            ));
                        }
                        let (cmds, slots) = per_target.entry(t).or_default();
                        let mut cmd = redis::cmd("HMGET");
                        cmd.arg(k).arg(&plan.fields[g]);
                        cmds.push((crate::sink::redis::conn::slot_of(k.as_bytes()), cmd));
                        slots.push(e * ng + g);
                    }
                }
                let query = |t: usize, cmds: Calls, slots: Vec<usize>| {
                    let conn = targets[t].conn.clone();
                    let url = targets[t].endpoint.display();
                    async move {
                        let r: redis::RedisResult<Vec<Vec<Option<String>>>> =
                            async { conn.get().await?.query_all(cmds).await }.await;
                        (url, slots, r)
                    }
                };
                let mut answers = Vec::with_capacity(per_target.len());
                if per_target.len() == 1 {
                    let (t, (pipe, slots)) = per_target.into_iter().next().expect("one");
                    answers.push(query(t, pipe, slots).await);
                } else {
                    // Several servers: the round trips overlap.
                    let mut set = tokio::task::JoinSet::new();
                    for (t, (pipe, slots)) in per_target {
                        set.spawn(query(t, pipe, slots));
                    }
                    while let Some(r) = set.join_next().await {
                        answers.push(r.map_err(|e| {
                            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
                        })?);
                    }
                }
                for (url, slots, r) in answers {
                    let got = r.map_err(|e| {
                        ApiError::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("online store {url} unavailable: {e}"),
                        )
                    })?;
                    for (slot, row) in slots.into_iter().zip(got) {
                        rows[slot] = row;
                    }
                }
            }
        }
        Ok(rows)
    }
}

/// The text of a key value as the daemon writes it: strings as they are,
/// integers in decimal.
fn key_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

/// Turns stored text back into a JSON value of the feature's type.
pub fn parse_value(text: &str, t: ValueType) -> Value {
    let float = |s: &str| -> Value {
        match s.parse::<f64>() {
            Ok(x) if x.is_finite() => {
                serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
            }
            // JSON has no NaN or infinities: the text is passed on as it is.
            _ => Value::String(s.to_string()),
        }
    };
    match t {
        ValueType::Int => text
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| float(text)),
        ValueType::Float => float(text),
        ValueType::Bool => match text {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            other => Value::String(other.to_string()),
        },
        ValueType::String => Value::String(text.to_string()),
        // A JSON array of strings, as the sink writes it.
        ValueType::StringList => {
            serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
        }
        ValueType::Inferred => {
            // Only text that is exactly how the sink writes a number is read
            // as one: "007" or "1e3" stay strings.
            match (text.parse::<i64>(), text.parse::<f64>()) {
                (Ok(i), _) if i.to_string() == text => Value::from(i),
                (_, Ok(x)) if x.is_finite() && crate::sink::format_f64(x) == text => float(text),
                _ if text == "true" || text == "false" => Value::Bool(text == "true"),
                _ => Value::String(text.to_string()),
            }
        }
    }
}

/// `_window_start`, `_window_end`, `_emitted_at` of a hash row.
pub(crate) type Meta = (Option<Micros>, Option<Micros>, Option<Micros>);

/// The META fields at the end of a row `nfields` long.
pub(crate) fn row_meta(row: &[Option<String>], nfields: usize) -> Meta {
    let meta = |k: usize| -> Option<Micros> {
        row.get(nfields - META.len() + k)
            .and_then(|v| v.as_deref())
            .and_then(|v| v.parse().ok())
    };
    (meta(0), meta(1), meta(2))
}

/// One served value from a hash row.
pub(crate) fn make_value(
    row: &[Option<String>],
    at: usize,
    (ws, we, em): Meta,
    t: ValueType,
    default: Option<&Value>,
    max_age: Option<Micros>,
    now: Micros,
) -> FeatureValue {
    let fallback = || default.cloned().unwrap_or(Value::Null);
    let text = row.get(at).and_then(|v| v.as_deref());
    let Some(we) = we else {
        // No window: either no hash (the entity has no values in this group,
        // or they expired out of Redis), or a hash written without the
        // window fields, whose values are served without an age.
        let (value, status) = match text {
            Some(s) => (parse_value(s, t), "present"),
            None => (fallback(), "missing"),
        };
        return FeatureValue {
            value,
            status,
            window_start: ws,
            window_end: None,
            emitted_at: em,
            age: None,
        };
    };
    // A value is as old as the data it covers: up to the window's end, or up
    // to its emission for an early pane of a still-open window.
    let covered = em.map_or(we, |e| e.min(we));
    let age = now - covered;
    let (value, status) = match text {
        _ if max_age.is_some_and(|m| age > m) => (fallback(), "expired"),
        None => (fallback(), "missing"),
        Some(s) => (parse_value(s, t), "present"),
    };
    FeatureValue {
        value,
        status,
        window_start: ws,
        window_end: Some(we),
        emitted_at: em,
        age: Some(age),
    }
}

/// A request-time feature of a hash row at time `now`: computed from the
/// stored values it reads (`deps`: feature index, position in the row) by
/// the plan's shared function; its status is the row's.
fn on_read_value(
    row: &[Option<String>],
    meta: Meta,
    plan: &crate::plan::Plan,
    j: usize,
    deps: &[(usize, usize)],
    max_age: Option<Micros>,
    now: Micros,
) -> FeatureValue {
    let (ws, we, _) = meta;
    let mut v = make_value(row, usize::MAX, meta, ValueType::Float, None, max_age, now);
    let present = we.is_some() && v.status != "expired";
    v.status = if present { "present" } else { v.status };
    if present {
        let number = |f: usize| {
            let pos = deps.iter().find(|d| d.0 == f)?.1;
            row.get(pos)?.as_deref()?.parse::<f64>().ok()
        };
        v.value = plan
            .on_read_eval(
                j,
                number,
                ws.unwrap_or_default(),
                we.unwrap_or_default(),
                now,
            )
            .and_then(serde_json::Number::from_f64)
            .map_or(Value::Null, Value::Number);
    }
    v
}

/// Parses a `POST /v1/features` body.
pub fn parse_request(body: &[u8]) -> Result<FeaturesRequest, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        let what = if e.is_data() {
            "invalid request"
        } else {
            "malformed JSON"
        };
        ApiError::bad(format!(
            "{what} at line {} column {}: {e}",
            e.line(),
            e.column()
        ))
    })
}

/// Builds a request from the query of `GET /v1/features`: `features`
/// (comma-separated, may repeat), `max_age`, and the entity's key fields.
pub fn request_from_query(query: &str) -> Result<FeaturesRequest, ApiError> {
    let mut entity = Map::new();
    let mut features = Vec::new();
    let mut max_age = None;
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "features" | "feature" => {
                features.extend(v.split(',').filter(|s| !s.is_empty()).map(str::to_string))
            }
            "max_age" => max_age = Some(Value::String(v.into_owned())),
            _ => {
                entity.insert(k.into_owned(), Value::String(v.into_owned()));
            }
        }
    }
    if entity.is_empty() {
        return Err(ApiError::bad(
            "give the entity's key fields as query parameters, e.g. ?user_id=u1&features=group:*",
        ));
    }
    Ok(FeaturesRequest {
        entities: vec![entity],
        features,
        max_age,
    })
}
