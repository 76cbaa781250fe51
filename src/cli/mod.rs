//! The command line: one file per subcommand. Errors are `anyhow` here and
//! are printed with their whole chain by `main`.

pub mod bench;
pub mod bench_serve;
pub mod demo;
pub mod features;
pub mod gen;
pub mod join;
pub mod replay;
pub mod run;
pub mod serve;
pub mod validate;

use clap::{Parser, Subcommand};

/// rill: a streaming feature engine (event-time windows into Redis and Parquet).
#[derive(Debug, Parser)]
#[command(name = "rill", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log lines on standard error as text or as JSON objects (one per line).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check pipeline files; prints `file:line:column: problem` for each bad one.
    Validate(validate::Args),
    /// Run a pipeline over history (JSONL, .gz, .zst or Parquet) into the offline store.
    Replay(replay::Args),
    /// Benchmarks of whole paths (the daemon from a file into Redis and Parquet).
    Bench(bench::Args),
    /// Try rill with nothing installed: in-process broker, data, daemon, live progress.
    Demo(demo::Args),
    /// The daemon: consume Kafka, keep features fresh in Redis and Parquet.
    Run(run::Args),
    /// Point-in-time training set: entity rows joined with the features known at their time.
    Join(join::Args),
    /// Generate the standard data set (deterministic for a seed).
    Gen(gen::Args),
    /// The online read API, registry, freshness and catalog page over Redis.
    Serve(serve::Args),
    /// The feature registry: list, search, describe and lineage of feature groups.
    Features(features::Args),
}

/// Parses a time given on the command line: RFC 3339 or a date `YYYY-MM-DD`.
pub fn parse_time_arg(s: &str) -> anyhow::Result<rill::time::Micros> {
    if s.len() == 10 {
        return Ok(rill::time::parse_rfc3339(&format!("{s}T00:00:00Z"))?);
    }
    Ok(rill::time::parse_rfc3339(s)?)
}
