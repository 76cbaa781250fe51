//! The feature registry: what the pipeline files of a directory declare,
//! arranged for people looking for features (`rill features`, the catalog
//! page, `/v1/registry`). The files are the source of truth; nothing here
//! is stored anywhere else.

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;

use crate::config::{Accumulation, EventTimeSource, FeatureKind, LateTrigger, Pipeline, ValueType};
use crate::time::format_duration;

/// The pipelines of a deployment, by group name.
#[derive(Debug, Clone)]
pub struct Registry {
    pipelines: Vec<Pipeline>,
    /// Each pipeline compiled once, shared by every reader.
    plans: Vec<crate::plan::PlanRef>,
    by_name: HashMap<String, usize>,
}

/// A feature group as the registry shows it.
#[derive(Debug, Clone, Serialize)]
pub struct GroupInfo {
    pub name: String,
    pub version: u32,
    pub description: Option<String>,
    pub owner: Option<String>,
    pub team: Option<String>,
    pub tags: Vec<String>,
    pub file: Option<String>,
    pub entity_keys: Vec<String>,
    pub topic: Option<String>,
    pub brokers: Option<String>,
    pub event_time: String,
    pub window: String,
    pub allowed_lateness: String,
    pub triggers: String,
    pub accumulation: &'static str,
    pub features: Vec<FeatureInfo>,
    pub sinks: SinksInfo,
    pub freshness_sla: Option<String>,
}

/// One feature of a group.
#[derive(Debug, Clone, Serialize)]
pub struct FeatureInfo {
    /// `group:feature`, the name the read API takes.
    pub id: String,
    pub name: String,
    /// `aggregate`, `derived`, `set_cut` (the flag of a collect_set) or
    /// `on_read` (computed when read, with `now` the time of the read).
    pub kind: &'static str,
    pub agg: Option<&'static str>,
    pub field: Option<String>,
    #[serde(rename = "where")]
    pub filter: Option<String>,
    pub expr: Option<String>,
    #[serde(rename = "type")]
    pub value_type: &'static str,
    pub description: Option<String>,
    pub default: Option<serde_json::Value>,
    /// Features of the same group this one is computed from (derived only).
    pub depends_on: Vec<String>,
    /// Derived features of the same group computed from this one.
    pub used_by: Vec<String>,
}

impl FeatureInfo {
    /// `mean(amount)`, `count() where ...`, or `= a - b` for a derived feature.
    pub fn definition(&self) -> String {
        match (&self.expr, self.agg) {
            (Some(e), _) if self.kind == "on_read" => format!("= {e} (when read)"),
            (Some(e), _) => format!("= {e}"),
            (None, Some(a)) => {
                let mut d = format!("{a}({})", self.field.as_deref().unwrap_or(""));
                if let Some(w) = &self.filter {
                    d.push_str(&format!(" where {w}"));
                }
                d
            }
            _ => String::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SinksInfo {
    /// `rill:{<entity>}:<group>` with the configured prefix.
    pub online_key: Option<String>,
    pub online_url: Option<String>,
    pub online_ttl: Option<String>,
    pub online_max_age: Option<String>,
    /// `<root>/<group>/date=YYYY-MM-DD/`.
    pub offline_path: Option<String>,
}

/// A search result.
#[derive(Debug, Clone, Serialize)]
pub struct Hit {
    /// `group` or `group:feature`.
    pub id: String,
    /// `group` or `feature`.
    pub kind: &'static str,
    pub group: String,
    pub score: u32,
    /// Which attributes matched (`name`, `tag`, `description`, ...).
    pub matched: Vec<&'static str>,
    pub description: Option<String>,
}

/// A node of a lineage graph.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Node {
    /// `topic`, `field`, `pipeline`, `feature`, `derived`, `sink`.
    pub kind: &'static str,
    pub id: String,
    pub label: String,
}

/// Lineage of a group or of one feature: topic → pipeline → features →
/// derived features → sinks.
#[derive(Debug, Clone, Serialize)]
pub struct Lineage {
    pub target: String,
    pub nodes: Vec<Node>,
    /// `(from id, to id)`.
    pub edges: Vec<(String, String)>,
    /// Other groups that read the same topic.
    pub topic_shared_with: Vec<String>,
}

/// A name given on the command line or in a request that is not declared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("unknown feature group {0:?} (known: {1})")]
    Group(String, String),
    #[error("feature group {0:?} has no feature {1:?} (it has: {2})")]
    Feature(String, String, String),
}

fn type_name(t: ValueType) -> &'static str {
    match t {
        ValueType::Int => "int",
        ValueType::Float => "float",
        ValueType::Bool => "bool",
        ValueType::String => "string",
        ValueType::Inferred => "any",
        ValueType::StringList => "list<string>",
    }
}

fn trigger_text(p: &Pipeline) -> String {
    let mut parts = Vec::new();
    if let Some(e) = p.early_every {
        parts.push(format!("early every {}", format_duration(e)));
    }
    parts.push("on time".to_string());
    match p.late {
        LateTrigger::EveryEvent => parts.push("late every event".into()),
        LateTrigger::Every(d) => parts.push(format!("late every {}", format_duration(d))),
        LateTrigger::None => {}
    }
    parts.join(", ")
}

impl Registry {
    /// Builds the registry; refuses two pipelines with one name.
    pub fn new(pipelines: Vec<Pipeline>) -> Result<Registry, String> {
        let mut by_name = HashMap::new();
        for (i, p) in pipelines.iter().enumerate() {
            if let Some(&j) = by_name.get(&p.name) {
                let at = |q: &Pipeline| {
                    q.source_file
                        .as_ref()
                        .map_or_else(|| "<inline>".to_string(), |f| f.display().to_string())
                };
                return Err(format!(
                    "{}:{}:{}: feature group name {:?} is already used by {}",
                    at(p),
                    p.name_position.0,
                    p.name_position.1,
                    p.name,
                    at(&pipelines[j])
                ));
            }
            by_name.insert(p.name.clone(), i);
        }
        let plans = pipelines.iter().map(crate::plan::Plan::new).collect();
        Ok(Registry {
            pipelines,
            plans,
            by_name,
        })
    }

    pub fn pipelines(&self) -> &[Pipeline] {
        &self.pipelines
    }

    /// The compiled plans, in the order of [`Registry::pipelines`].
    pub fn plans(&self) -> &[crate::plan::PlanRef] {
        &self.plans
    }

    pub fn get(&self, group: &str) -> Option<&Pipeline> {
        self.by_name.get(group).map(|&i| &self.pipelines[i])
    }

    fn known_groups(&self) -> String {
        let mut v: Vec<&str> = self.pipelines.iter().map(|p| p.name.as_str()).collect();
        v.sort_unstable();
        v.join(", ")
    }

    /// Resolves `GROUP` or `GROUP:FEATURE`.
    pub fn resolve<'a>(
        &'a self,
        target: &str,
    ) -> Result<(&'a Pipeline, Option<usize>), LookupError> {
        let (g, f) = match target.split_once(':') {
            Some((g, f)) => (g, Some(f)),
            None => (target, None),
        };
        let p = self
            .get(g)
            .ok_or_else(|| LookupError::Group(g.to_string(), self.known_groups()))?;
        match f {
            None | Some("*") => Ok((p, None)),
            // Stored features, then request-time ones (the order of
            // `GroupInfo::features`).
            Some(f) => match p
                .features
                .iter()
                .map(|x| x.name.as_str())
                .chain(p.on_read.iter().map(|x| x.name.as_str()))
                .position(|x| x == f)
            {
                Some(i) => Ok((p, Some(i))),
                None => Err(LookupError::Feature(
                    g.to_string(),
                    f.to_string(),
                    p.features
                        .iter()
                        .map(|x| x.name.as_str())
                        .chain(p.on_read.iter().map(|x| x.name.as_str()))
                        .collect::<Vec<_>>()
                        .join(", "),
                )),
            },
        }
    }

    /// Every group, sorted by name.
    pub fn list(&self) -> Vec<GroupInfo> {
        let mut v: Vec<GroupInfo> = self.pipelines.iter().map(describe).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Groups and features matching every word of `query`, best first.
    ///
    /// Each word scores against each attribute; an entry counts only when
    /// every word matches somewhere. Name matches weigh most (exact, then
    /// prefix, then a `_`-separated part, then a substring), then tags,
    /// owner and team, then descriptions and definitions.
    pub fn search(&self, query: &str) -> Vec<Hit> {
        let words: Vec<String> = query.split_whitespace().map(|w| w.to_lowercase()).collect();
        let mut hits = Vec::new();
        if words.is_empty() {
            return hits;
        }
        for p in &self.pipelines {
            let mut attrs: Vec<(&'static str, Vec<String>, u32)> = vec![
                ("name", vec![p.name.to_lowercase()], 100),
                ("tag", p.tags.iter().map(|t| t.to_lowercase()).collect(), 40),
                (
                    "team",
                    p.team.iter().map(|t| t.to_lowercase()).collect(),
                    30,
                ),
                (
                    "owner",
                    p.owner.iter().map(|t| t.to_lowercase()).collect(),
                    30,
                ),
                (
                    "description",
                    p.description.iter().map(|t| t.to_lowercase()).collect(),
                    10,
                ),
            ];
            if let Some(k) = &p.kafka {
                attrs.push(("topic", vec![k.topic.to_lowercase()], 20));
            }
            if let Some((score, matched)) = score_entry(&words, &attrs) {
                hits.push(Hit {
                    id: p.name.clone(),
                    kind: "group",
                    group: p.name.clone(),
                    score,
                    matched,
                    description: p.description.clone(),
                });
            }
            for f in &p.features {
                let def = definition_text(&f.kind);
                let attrs: Vec<(&'static str, Vec<String>, u32)> = vec![
                    ("name", vec![f.name.to_lowercase()], 100),
                    (
                        "description",
                        f.description.iter().map(|t| t.to_lowercase()).collect(),
                        10,
                    ),
                    ("definition", vec![def.to_lowercase()], 8),
                    // A feature is found through its group too, a little less.
                    ("group", vec![p.name.to_lowercase()], 5),
                    ("tag", p.tags.iter().map(|t| t.to_lowercase()).collect(), 4),
                    ("team", p.team.iter().map(|t| t.to_lowercase()).collect(), 3),
                ];
                if let Some((score, matched)) = score_entry(&words, &attrs) {
                    // Only its own attributes make a feature a result; one that
                    // matches through its group alone is covered by the group's hit.
                    if matched
                        .iter()
                        .any(|m| matches!(*m, "name" | "description" | "definition"))
                    {
                        hits.push(Hit {
                            id: format!("{}:{}", p.name, f.name),
                            kind: "feature",
                            group: p.name.clone(),
                            score,
                            matched,
                            description: f.description.clone(),
                        });
                    }
                }
            }
        }
        hits.sort_by(|a, b| {
            b.score
                .cmp(&a.score)
                .then_with(|| (a.kind != "group").cmp(&(b.kind != "group")))
                .then_with(|| a.id.cmp(&b.id))
        });
        hits
    }

    /// The registry entry of a group, or of one feature within it.
    pub fn describe(&self, target: &str) -> Result<(GroupInfo, Option<FeatureInfo>), LookupError> {
        let (p, f) = self.resolve(target)?;
        let g = describe(p);
        let fi = f.map(|i| g.features[i].clone());
        Ok((g, fi))
    }

    /// Lineage of a group or a feature.
    pub fn lineage(&self, target: &str) -> Result<Lineage, LookupError> {
        let (p, f) = self.resolve(target)?;
        let g = describe(p);
        let mut nodes: BTreeSet<Node> = BTreeSet::new();
        let mut edges: Vec<(String, String)> = Vec::new();
        let topic_id = p.kafka.as_ref().map(|k| format!("topic:{}", k.topic));
        let pipe_id = format!("pipeline:{}", p.name);
        if let (Some(id), Some(k)) = (&topic_id, &p.kafka) {
            nodes.insert(Node {
                kind: "topic",
                id: id.clone(),
                label: format!("{} ({})", k.topic, k.brokers),
            });
            edges.push((id.clone(), pipe_id.clone()));
        }
        nodes.insert(Node {
            kind: "pipeline",
            id: pipe_id.clone(),
            label: format!(
                "{} (key {}, {})",
                p.name,
                p.key_fields.join(", "),
                p.window_text()
            ),
        });
        // Which features are in scope: all, or the target's ancestors and descendants.
        let in_scope: BTreeSet<usize> = match f {
            None => (0..g.features.len()).collect(),
            Some(i) => {
                let mut s = BTreeSet::new();
                let idx = |n: &str| g.features.iter().position(|x| x.name == n);
                let mut stack = vec![i];
                while let Some(j) = stack.pop() {
                    if s.insert(j) {
                        stack.extend(g.features[j].depends_on.iter().filter_map(|n| idx(n)));
                    }
                }
                let mut stack = vec![i];
                let mut down = BTreeSet::new();
                while let Some(j) = stack.pop() {
                    if down.insert(j) {
                        stack.extend(g.features[j].used_by.iter().filter_map(|n| idx(n)));
                    }
                }
                s.extend(down);
                s
            }
        };
        for &i in &in_scope {
            let fi = &g.features[i];
            let id = fi.id.clone();
            let definition = match p.features.get(i) {
                Some(f) => definition_text(&f.kind),
                None => format!("{} (when read)", fi.expr.as_deref().unwrap_or("")),
            };
            nodes.insert(Node {
                kind: match fi.kind {
                    "derived" => "derived",
                    "on_read" => "on_read",
                    _ => "feature",
                },
                id: id.clone(),
                label: format!("{} = {definition}", fi.name),
            });
            if fi.kind == "derived" || fi.kind == "on_read" {
                for d in &fi.depends_on {
                    if let Some(j) = g.features.iter().position(|x| &x.name == d) {
                        if in_scope.contains(&j) {
                            edges.push((g.features[j].id.clone(), id.clone()));
                        }
                    }
                }
            } else {
                edges.push((pipe_id.clone(), id.clone()));
            }
            if let Some(key) = &g.sinks.online_key {
                let sid = format!("sink:redis:{}", p.name);
                nodes.insert(Node {
                    kind: "sink",
                    id: sid.clone(),
                    label: format!("redis {key}"),
                });
                edges.push((id.clone(), sid));
            }
            if let Some(path) = &g.sinks.offline_path {
                let sid = format!("sink:parquet:{}", p.name);
                nodes.insert(Node {
                    kind: "sink",
                    id: sid.clone(),
                    label: format!("parquet {path}"),
                });
                edges.push((id.clone(), sid));
            }
        }
        let mut shared: Vec<String> = match &p.kafka {
            Some(k) => self
                .pipelines
                .iter()
                .filter(|q| q.name != p.name)
                .filter(|q| q.kafka.as_ref().is_some_and(|qk| qk.topic == k.topic))
                .map(|q| q.name.clone())
                .collect(),
            None => Vec::new(),
        };
        shared.sort();
        // Nodes in flow order: topic, pipeline, features, derived, sinks.
        let rank = |k: &str| match k {
            "topic" => 0,
            "pipeline" => 1,
            "feature" => 2,
            "derived" => 3,
            _ => 4,
        };
        let mut nodes: Vec<Node> = nodes.into_iter().collect();
        nodes.sort_by(|a, b| {
            rank(a.kind)
                .cmp(&rank(b.kind))
                .then_with(|| a.id.cmp(&b.id))
        });
        Ok(Lineage {
            target: target.to_string(),
            nodes,
            edges,
            topic_shared_with: shared,
        })
    }
}

/// Scores one entry: every word must match some attribute; a word counts
/// its best attribute.
fn score_entry(
    words: &[String],
    attrs: &[(&'static str, Vec<String>, u32)],
) -> Option<(u32, Vec<&'static str>)> {
    let mut total = 0;
    let mut matched: Vec<&'static str> = Vec::new();
    for w in words {
        let mut best: Option<(u32, &'static str)> = None;
        for (attr, values, weight) in attrs {
            for v in values {
                let s = match_strength(w, v);
                if s > 0 {
                    let sc = weight * s / 4;
                    if best.is_none_or(|(b, _)| sc > b) {
                        best = Some((sc, attr));
                    }
                }
            }
        }
        let (sc, attr) = best?;
        total += sc.max(1);
        if !matched.contains(&attr) {
            matched.push(attr);
        }
    }
    Some((total, matched))
}

/// 4: equal, 3: prefix, 2: a whole `_`/space/punctuation-separated word, 1: substring.
fn match_strength(word: &str, value: &str) -> u32 {
    if value == word {
        4
    } else if value.starts_with(word) {
        3
    } else if value
        .split(|c: char| !c.is_alphanumeric())
        .any(|part| part == word)
    {
        2
    } else if value.contains(word) {
        1
    } else {
        0
    }
}

/// How a feature is computed, as text: `mean(amount)`, `count() where ...`,
/// `amount_max - amount_min`.
pub fn definition_text(k: &FeatureKind) -> String {
    match k {
        FeatureKind::Agg {
            agg,
            field,
            filter,
            params,
        } => {
            let mut s = format!("{}({}", agg.name(), field.as_deref().unwrap_or(""));
            match agg {
                crate::config::AggKind::Quantile => s.push_str(&format!(", q={}", params.q)),
                crate::config::AggKind::CountDistinct => {
                    s.push_str(&format!(", exact_up_to={}", params.exact_up_to))
                }
                crate::config::AggKind::CollectSet => s.push_str(&format!(", max={}", params.max)),
                _ => {}
            }
            s.push(')');
            if let Some(f) = filter {
                s.push_str(&format!(" where {f}"));
            }
            s
        }
        FeatureKind::Derived(e) => e.to_string(),
        FeatureKind::SetCut(_) => "cut(set)".to_string(),
    }
}

/// The registry entry of one pipeline.
pub fn describe(p: &Pipeline) -> GroupInfo {
    let names: Vec<&str> = p.features.iter().map(|f| f.name.as_str()).collect();
    let deps: Vec<Vec<String>> = p
        .features
        .iter()
        .map(|f| match &f.kind {
            FeatureKind::Derived(e) => {
                let mut v: Vec<String> = e
                    .idents()
                    .into_iter()
                    .filter(|n| names.contains(n))
                    .map(str::to_string)
                    .collect();
                v.sort();
                v.dedup();
                v
            }
            FeatureKind::Agg { .. } => Vec::new(),
            FeatureKind::SetCut(set) => vec![p.features[*set].name.clone()],
        })
        .chain(p.on_read.iter().map(|r| {
            let mut v: Vec<String> = r
                .expr
                .idents()
                .into_iter()
                .filter(|n| names.contains(n))
                .map(str::to_string)
                .collect();
            v.sort();
            v.dedup();
            v
        }))
        .collect();
    let all_names: Vec<&str> = names
        .iter()
        .copied()
        .chain(p.on_read.iter().map(|r| r.name.as_str()))
        .collect();
    let mut features: Vec<FeatureInfo> = p
        .features
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let (kind, agg, field, filter, expr) = match &f.kind {
                FeatureKind::Agg {
                    agg, field, filter, ..
                } => (
                    "aggregate",
                    Some(agg.name()),
                    field.clone(),
                    filter.as_ref().map(|e| e.to_string()),
                    None,
                ),
                FeatureKind::Derived(e) => ("derived", None, None, None, Some(e.to_string())),
                FeatureKind::SetCut(_) => ("set_cut", None, None, None, None),
            };
            let used_by = deps
                .iter()
                .enumerate()
                .filter(|(_, d)| d.iter().any(|n| *n == f.name))
                .map(|(j, _)| all_names[j].to_string())
                .collect();
            FeatureInfo {
                id: format!("{}:{}", p.name, f.name),
                name: f.name.clone(),
                kind,
                agg,
                field,
                filter,
                expr,
                value_type: type_name(f.output_type()),
                description: f.description.clone(),
                default: f.default.clone(),
                depends_on: deps[i].clone(),
                used_by,
            }
        })
        .collect();
    for (j, r) in p.on_read.iter().enumerate() {
        features.push(FeatureInfo {
            id: format!("{}:{}", p.name, r.name),
            name: r.name.clone(),
            kind: "on_read",
            agg: None,
            field: None,
            filter: None,
            expr: Some(r.expr.to_string()),
            value_type: "float",
            description: r.description.clone(),
            default: None,
            depends_on: deps[p.features.len() + j].clone(),
            used_by: Vec::new(),
        });
    }
    let event_time = match &p.event_time {
        EventTimeSource::Field { name, format } => {
            format!("field {name} ({format:?})").to_lowercase()
        }
        EventTimeSource::KafkaTimestamp => "kafka message timestamp".into(),
    };
    GroupInfo {
        name: p.name.clone(),
        version: p.version,
        description: p.description.clone(),
        owner: p.owner.clone(),
        team: p.team.clone(),
        tags: p.tags.clone(),
        file: p.source_file.as_ref().map(|f| f.display().to_string()),
        entity_keys: p.key_fields.clone(),
        topic: p.kafka.as_ref().map(|k| k.topic.clone()),
        brokers: p.kafka.as_ref().map(|k| k.brokers.clone()),
        event_time,
        window: p.window_text(),
        allowed_lateness: format_duration(p.allowed_lateness),
        triggers: trigger_text(p),
        accumulation: p.accumulation.as_str(),
        features,
        sinks: SinksInfo {
            online_key: p.redis.as_ref().map(|r| {
                format!(
                    "{}:{{<{}>}}:{}",
                    r.key_prefix,
                    p.key_fields.join("|"),
                    p.name
                )
            }),
            online_url: p.redis.as_ref().map(|r| r.endpoint.display()),
            online_ttl: p.redis.as_ref().and_then(|r| r.ttl.map(format_duration)),
            online_max_age: p
                .redis
                .as_ref()
                .and_then(|r| r.max_age.map(format_duration)),
            offline_path: p
                .parquet_path
                .as_ref()
                .map(|d| d.join(&p.name).display().to_string()),
        },
        freshness_sla: p.freshness_sla.map(format_duration),
    }
}

pub use crate::config::redact_url;

/// A difference between two versions of a group.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Change {
    pub group: String,
    /// `removed_group`, `removed_feature`, `renamed_feature`,
    /// `changed_aggregate`, `changed_type`, `changed_window`, `changed_key`,
    /// `changed_accumulation`, `added_feature`, `added_group`.
    pub kind: &'static str,
    pub detail: String,
    /// Breaks readers of the group (training sets, models, the read API).
    pub breaking: bool,
    /// The version went up with it, so it is allowed.
    pub versioned: bool,
    /// `file:line:column` of the new group's name, when there is one.
    pub at: Option<String>,
}

fn feature_signature(f: &crate::config::Feature) -> String {
    format!("{} :: {:?}", definition_text(&f.kind), f.output_type())
}

/// Changes from `old` to `new` pipelines, matched by group name.
pub fn diff(old: &[Pipeline], new: &[Pipeline]) -> Vec<Change> {
    let mut out = Vec::new();
    for o in old {
        let Some(n) = new.iter().find(|n| n.name == o.name) else {
            out.push(Change {
                group: o.name.clone(),
                kind: "removed_group",
                detail: format!("feature group {:?} was removed", o.name),
                breaking: true,
                versioned: false,
                at: o.source_file.as_ref().map(|f| {
                    format!(
                        "{}:{}:{}",
                        f.display(),
                        o.name_position.0,
                        o.name_position.1
                    )
                }),
            });
            continue;
        };
        let versioned = n.version > o.version;
        let at = n.source_file.as_ref().map(|f| {
            format!(
                "{}:{}:{}",
                f.display(),
                n.name_position.0,
                n.name_position.1
            )
        });
        let mut push = |kind: &'static str, detail: String, breaking: bool| {
            out.push(Change {
                group: n.name.clone(),
                kind,
                detail,
                breaking,
                versioned,
                at: at.clone(),
            })
        };
        if o.key_fields != n.key_fields {
            push(
                "changed_key",
                format!(
                    "entity key changed from [{}] to [{}]",
                    o.key_fields.join(", "),
                    n.key_fields.join(", ")
                ),
                true,
            );
        }
        if o.window != n.window {
            push(
                "changed_window",
                format!(
                    "window changed from {} to {}",
                    o.window_text(),
                    n.window_text()
                ),
                true,
            );
        }
        if o.accumulation != n.accumulation && accumulation_breaks(o.accumulation, n.accumulation) {
            push(
                "changed_accumulation",
                format!(
                    "accumulation changed from {} to {}",
                    o.accumulation.as_str(),
                    n.accumulation.as_str()
                ),
                true,
            );
        }
        let removed: Vec<&crate::config::Feature> = o
            .features
            .iter()
            .filter(|f| !n.features.iter().any(|g| g.name == f.name))
            .collect();
        let added: Vec<&crate::config::Feature> = n
            .features
            .iter()
            .filter(|f| !o.features.iter().any(|g| g.name == f.name))
            .collect();
        let mut renamed_to: Vec<&str> = Vec::new();
        for f in &removed {
            let sig = feature_signature(f);
            match added
                .iter()
                .find(|a| feature_signature(a) == sig && !renamed_to.contains(&a.name.as_str()))
            {
                Some(a) => {
                    renamed_to.push(&a.name);
                    push(
                        "renamed_feature",
                        format!("feature {:?} was renamed to {:?}", f.name, a.name),
                        true,
                    );
                }
                None => push(
                    "removed_feature",
                    format!("feature {:?} was removed", f.name),
                    true,
                ),
            }
        }
        for a in &added {
            if !renamed_to.contains(&a.name.as_str()) {
                push(
                    "added_feature",
                    format!("feature {:?} was added", a.name),
                    false,
                );
            }
        }
        for f in &o.features {
            if let Some(g) = n.features.iter().find(|g| g.name == f.name) {
                let (od, nd) = (definition_text(&f.kind), definition_text(&g.kind));
                if od != nd {
                    push(
                        "changed_aggregate",
                        format!("feature {:?} changed from {od} to {nd}", f.name),
                        true,
                    );
                } else if f.output_type() != g.output_type() {
                    push(
                        "changed_type",
                        format!(
                            "feature {:?} changed type from {} to {}",
                            f.name,
                            type_name(f.output_type()),
                            type_name(g.output_type())
                        ),
                        true,
                    );
                }
            }
        }
    }
    for n in new {
        if !old.iter().any(|o| o.name == n.name) {
            out.push(Change {
                group: n.name.clone(),
                kind: "added_group",
                detail: format!("feature group {:?} was added", n.name),
                breaking: false,
                versioned: false,
                at: None,
            });
        }
    }
    out
}

/// Whether switching accumulation changes what the values mean. Accumulating
/// and accumulating-and-retracting emit the same values (the latter adds
/// retraction rows); discarding panes hold only the new part of a window.
fn accumulation_breaks(a: Accumulation, b: Accumulation) -> bool {
    (a == Accumulation::Discarding) != (b == Accumulation::Discarding)
}
