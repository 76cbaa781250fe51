//! `rill join`: point-in-time training sets from the offline store.

use std::path::PathBuf;

use clap::Parser;
use rill::config::Pipeline;
use rill::join::{FileJoinOptions, JoinOptions, Mode};

#[derive(Debug, Parser)]
pub struct Args {
    /// Entity rows: Parquet or CSV with the key columns and a timestamp.
    #[arg(long)]
    pub entities: PathBuf,
    /// A feature group, optionally with features: NAME or NAME:f1,f2. Repeatable.
    #[arg(long = "group", required = true)]
    pub groups: Vec<String>,
    /// Root of the offline store (the groups' Parquet directories): a
    /// directory or an object-storage URL (`s3://bucket/prefix`), whose
    /// joined groups are fetched into a local staging directory first.
    #[arg(long)]
    pub offline: PathBuf,
    /// Output file: Parquet, or CSV when it ends in .csv.
    #[arg(long)]
    pub output: PathBuf,
    /// final: the last final pane with window_end <= ts; as_of_emit: what
    /// the online store served at ts.
    #[arg(long, default_value = "final")]
    pub mode: Mode,
    /// The entity rows' time column.
    #[arg(long, default_value = "event_timestamp")]
    pub timestamp_column: String,
    /// Name feature columns GROUP__FEATURE.
    #[arg(long)]
    pub full_names: bool,
    /// Where to find the groups' pipeline files (keys, TTL, features).
    #[arg(long, default_value = "./pipelines")]
    pub pipelines: PathBuf,
    /// Key columns of a group without a pipeline file: NAME=col1,col2.
    #[arg(long = "keys")]
    pub keys: Vec<String>,
    /// TTL of a group (overrides its pipeline): NAME=DURATION, or NAME=none.
    #[arg(long = "ttl")]
    pub ttl: Vec<String>,
    /// Memory budget (e.g. 1GB, 512MB); past it the join partitions the
    /// key space on disk. Default: a quarter of the machine's memory.
    #[arg(long, value_parser = parse_size)]
    pub memory_limit: Option<u64>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `1GB`, `512MB`, `64KiB`, `1000`: bytes (K/M/G are powers of 1024).
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size such as 1GB or 512MB"))?;
    let mul = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1u64,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        u => {
            return Err(format!(
                "unknown size unit {u:?} in {s:?} (B, KB, MB, GB, TB)"
            ))
        }
    };
    Ok((n * mul as f64) as u64)
}

pub fn run(mut a: Args) -> anyhow::Result<()> {
    let staged = rill::join::stage_offline(&a.offline, &a.groups)?;
    if let Some(s) = &staged {
        a.offline = s.dir.clone();
    }
    let pipelines: Vec<Pipeline> = if a.pipelines.is_dir() {
        rill::config::load_dir(&a.pipelines).map_err(|e| anyhow::anyhow!("{e}"))?
    } else {
        Vec::new()
    };
    let groups = rill::join::resolve_groups(
        &a.groups,
        &pipelines,
        &a.pipelines,
        &a.offline,
        &a.keys,
        &a.ttl,
    )?;
    let opts = FileJoinOptions {
        entities: a.entities,
        groups,
        offline: a.offline,
        output: a.output,
        mode: a.mode,
        memory_limit: a.memory_limit,
        join: JoinOptions {
            timestamp_column: a.timestamp_column,
            full_names: a.full_names,
        },
    };
    let s = rill::join::join_files(&opts)?;
    if a.json {
        println!("{}", serde_json::to_string(&s)?);
    } else {
        println!(
            "joined {} rows in {:.2}s into {}",
            s.rows, s.seconds, s.output
        );
        for g in &s.groups {
            println!(
                "  {}: {} feature rows, {} rows matched ({:.1}%)",
                g.group,
                g.feature_rows,
                g.matched_rows,
                100.0 * g.matched_share
            );
        }
    }
    Ok(())
}
