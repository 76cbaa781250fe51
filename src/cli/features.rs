//! `rill features list | search | describe | lineage`: the feature registry
//! over a directory of pipeline files.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use rill::serve::freshness::{self, Freshness};
use rill::serve::registry::{FeatureInfo, GroupInfo, Lineage, Registry};

#[derive(Debug, Parser)]
pub struct Args {
    /// Pipeline files or directories (repeatable).
    #[arg(long = "dir", global = true, default_value = "pipelines")]
    pub dirs: Vec<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub what: What,
}

#[derive(Debug, Subcommand)]
pub enum What {
    /// Every feature group.
    List,
    /// Groups and features matching every word, best first.
    Search {
        #[arg(required = true)]
        text: Vec<String>,
    },
    /// One group (GROUP) or feature (GROUP:FEATURE), with live freshness
    /// read from Redis when a daemon publishes it.
    Describe {
        target: String,
        /// Redis URL to read freshness from (default: the group's online sink).
        #[arg(long)]
        redis: Option<String>,
        /// Do not contact Redis for freshness.
        #[arg(long)]
        no_live: bool,
    },
    /// From topic to pipeline to features to derived features and sinks.
    Lineage { target: String },
}

/// Exit code 0, or an error for unknown names.
pub fn run(a: Args) -> anyhow::Result<u8> {
    let pipelines = super::run::load_pipelines(&a.dirs)?;
    let reg = Registry::new(pipelines).map_err(|e| anyhow::anyhow!(e))?;
    match a.what {
        What::List => {
            let groups = reg.list();
            if a.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({ "groups": groups }))?
                );
            } else {
                print_list(&groups);
            }
        }
        What::Search { text } => {
            let q = text.join(" ");
            let hits = reg.search(&q);
            if a.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({ "query": q, "hits": hits }))?
                );
            } else if hits.is_empty() {
                println!("nothing matches {q:?}");
            } else {
                for h in &hits {
                    println!(
                        "{:>4}  {:<8} {:<40} {}  (matched: {})",
                        h.score,
                        h.kind,
                        h.id,
                        h.description.as_deref().unwrap_or(""),
                        h.matched.join(", ")
                    );
                }
            }
        }
        What::Describe {
            target,
            redis,
            no_live,
        } => {
            let (g, f) = reg.describe(&target).map_err(|e| anyhow::anyhow!(e))?;
            let fresh = if no_live {
                None
            } else {
                live_freshness(&reg, &g.name, redis.as_deref())
            };
            if a.json {
                let mut v = serde_json::json!({ "group": g, "freshness": fresh });
                if let Some(f) = &f {
                    v["feature"] = serde_json::to_value(f)?;
                }
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_describe(&g, f.as_ref(), fresh.as_ref());
            }
        }
        What::Lineage { target } => {
            let l = reg.lineage(&target).map_err(|e| anyhow::anyhow!(e))?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&l)?);
            } else {
                print_lineage(&l);
            }
        }
    }
    Ok(0)
}

/// The published freshness of a group; `None` (with a note on stderr) when
/// Redis cannot be reached within a second.
fn live_freshness(reg: &Registry, group: &str, redis: Option<&str>) -> Option<Freshness> {
    let p = reg.get(group)?;
    let url = redis
        .map(rill::config::RedisEndpoint::from_url)
        .or_else(|| p.redis.as_ref().map(|r| r.endpoint.clone()));
    let Some(url) = url else {
        let now = rill::time::Clock::now(&rill::time::SystemClock);
        return Some(freshness::evaluate(p, None, now));
    };
    let prefix = p.redis.as_ref().map_or("rill", |r| r.key_prefix.as_str());
    let key = freshness::status_key(prefix, &p.name);
    let read = || -> redis::RedisResult<Vec<String>> {
        rill::sink::redis::conn::blocking(&url, Duration::from_secs(1), {
            let mut cmd = redis::cmd("HVALS");
            cmd.arg(&key);
            cmd
        })
    };
    let now = rill::time::Clock::now(&rill::time::SystemClock);
    match read() {
        Ok(values) => Some(freshness::evaluate(
            p,
            freshness::merge_published(&values, now).as_ref(),
            now,
        )),
        Err(e) => {
            eprintln!(
                "note: live freshness unavailable ({}: {e}); pass --redis URL or --no-live",
                url.display()
            );
            None
        }
    }
}

fn print_list(groups: &[GroupInfo]) {
    println!(
        "{:<24} {:>3}  {:<26} {:<10} {:<12} {:<22} {:>4}  {:<6} TAGS",
        "GROUP", "VER", "OWNER", "TEAM", "KEY", "WINDOW", "FEAT", "SLA"
    );
    for g in groups {
        println!(
            "{:<24} {:>3}  {:<26} {:<10} {:<12} {:<22} {:>4}  {:<6} {}",
            g.name,
            g.version,
            g.owner.as_deref().unwrap_or("-"),
            g.team.as_deref().unwrap_or("-"),
            g.entity_keys.join(","),
            g.window,
            g.features.len(),
            g.freshness_sla.as_deref().unwrap_or("-"),
            g.tags.join(",")
        );
    }
}

fn feature_line(f: &FeatureInfo) -> String {
    let mut s = format!("{:<22} {:<40} {:<6}", f.name, f.definition(), f.value_type);
    if let Some(d) = &f.default {
        s.push_str(&format!(" default {d}"));
    }
    if let Some(d) = &f.description {
        s.push_str(&format!("  {d}"));
    }
    s
}

fn print_describe(g: &GroupInfo, f: Option<&FeatureInfo>, fresh: Option<&Freshness>) {
    let o = |x: &Option<String>| x.clone().unwrap_or_else(|| "-".into());
    println!("group        {} (version {})", g.name, g.version);
    println!("description  {}", o(&g.description));
    println!("owner        {}", o(&g.owner));
    println!("team         {}", o(&g.team));
    println!("tags         {}", g.tags.join(", "));
    println!("entity key   {}", g.entity_keys.join(", "));
    match (&g.topic, &g.brokers) {
        (Some(t), Some(b)) => println!(
            "source       kafka topic {t} ({b}), event time {}",
            g.event_time
        ),
        _ => println!("source       files only, event time {}", g.event_time),
    }
    println!(
        "window       {}, allowed lateness {}",
        g.window, g.allowed_lateness
    );
    println!("triggers     {}", g.triggers);
    println!("accumulation {}", g.accumulation);
    if let Some(k) = &g.sinks.online_key {
        println!(
            "online       redis {k} at {}{}",
            o(&g.sinks.online_url),
            g.sinks
                .online_ttl
                .as_ref()
                .map_or(String::new(), |t| format!(", ttl {t}"))
        );
    }
    if let Some(p) = &g.sinks.offline_path {
        println!("offline      parquet {p}");
    }
    println!("freshness    SLA {}", o(&g.freshness_sla));
    if let Some(fr) = fresh {
        let s = |x: Option<f64>| x.map_or("unknown".to_string(), |v| format!("{v:.1} s"));
        println!(
            "  status {}; watermark {} (lag {}); last pane in Redis {} ago, in Parquet {} ago; consumer lag {}",
            fr.status,
            fr.watermark.as_deref().unwrap_or("none"),
            s(fr.watermark_lag_seconds),
            s(fr.seconds_since_online_write),
            s(fr.seconds_since_offline_write),
            fr.consumer_lag.map_or("unknown".to_string(), |l| l.to_string())
        );
    }
    if let Some(file) = &g.file {
        println!("file         {file}");
    }
    match f {
        Some(f) => {
            println!("\nfeature {}", f.id);
            println!("  {}", feature_line(f));
            if !f.depends_on.is_empty() {
                println!("  computed from: {}", f.depends_on.join(", "));
            }
            if !f.used_by.is_empty() {
                println!("  used by: {}", f.used_by.join(", "));
            }
        }
        None => {
            println!("\nfeatures");
            for f in &g.features {
                println!("  {}", feature_line(f));
            }
        }
    }
}

fn print_lineage(l: &Lineage) {
    let label = |id: &str| {
        l.nodes
            .iter()
            .find(|n| n.id == id)
            .map_or(id.to_string(), |n| format!("{} {}", n.kind, n.label))
    };
    let roots: Vec<&str> = l
        .nodes
        .iter()
        .filter(|n| !l.edges.iter().any(|(_, b)| *b == n.id))
        .map(|n| n.id.as_str())
        .collect();
    fn walk(l: &Lineage, id: &str, depth: usize, label: &dyn Fn(&str) -> String) {
        println!(
            "{}{}",
            "  ".repeat(depth),
            if depth == 0 {
                label(id)
            } else {
                format!("→ {}", label(id))
            }
        );
        for (_, b) in l.edges.iter().filter(|(a, _)| a == id) {
            if b.starts_with("sink:") {
                continue;
            }
            walk(l, b, depth + 1, label);
        }
    }
    for r in roots {
        walk(l, r, 0, &label);
    }
    let sinks: Vec<&str> = l
        .nodes
        .iter()
        .filter(|n| n.kind == "sink")
        .map(|n| n.label.as_str())
        .collect();
    if !sinks.is_empty() {
        println!("sinks: {}", sinks.join("; "));
    }
    if !l.topic_shared_with.is_empty() {
        println!(
            "the same topic also feeds: {}",
            l.topic_shared_with.join(", ")
        );
    }
}
