//! `rill replay PIPELINE --input FILE`: backfill history into the offline store.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use rill::config::Pipeline;
use rill::replay::{self, ReplayOptions, ReplaySummary};
use rill::time::SystemClock;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// Input: JSON lines (optionally .gz or .zst) or Parquet; `-` reads standard input.
    #[arg(long, short = 'i')]
    pub input: PathBuf,
    /// Root of the offline store (default: the pipeline's offline parquet path).
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
    /// Only events at or after this time (RFC 3339 or YYYY-MM-DD).
    #[arg(long)]
    pub from: Option<String>,
    /// Only events before this time (RFC 3339 or YYYY-MM-DD).
    #[arg(long)]
    pub to: Option<String>,
    /// Also write every pane to the pipeline's Redis sink, with the daemon's
    /// writer and its newer-wins compare-and-set (a replay never replaces a
    /// newer window).
    #[arg(long)]
    pub online: bool,
    /// Redis URL for `--online` (default: the pipeline's online sink).
    #[arg(long)]
    pub redis: Option<String>,
    /// Print the summary as JSON on standard output.
    #[arg(long)]
    pub json: bool,
    /// Engine threads (default: one per core). Keys are split over them by
    /// a stable hash; the rows equal a one-thread replay's.
    #[arg(long, default_value_t = 0, hide_default_value = true)]
    pub threads: usize,
    /// Compute only shard I of N (0-based), e.g. `--shard 2/8` for one job
    /// of a Kubernetes indexed job: together the N shards equal one run.
    #[arg(long, value_name = "I/N", value_parser = parse_shard)]
    pub shard: Option<rill::replay::Shard>,
    /// Bytes of JSON lines per parallel chunk (tests).
    #[arg(long, hide = true)]
    pub chunk_bytes: Option<usize>,
}

fn parse_shard(s: &str) -> Result<rill::replay::Shard, String> {
    rill::replay::Shard::parse(s)
}

pub fn run(args: Args) -> anyhow::Result<ReplaySummary> {
    let pipeline = Pipeline::from_file(&args.pipeline)?;
    let online_url = if args.online {
        match (&args.redis, &pipeline.redis) {
            (Some(u), _) => Some(rill::config::RedisEndpoint::from_url(u)),
            (None, Some(r)) => Some(r.endpoint.clone()),
            (None, None) => bail!(
                "--online: pipeline {} has no online sink; give --redis URL",
                pipeline.name
            ),
        }
    } else {
        if args.redis.is_some() {
            bail!("--redis is for --online");
        }
        None
    };
    let output = match (&args.output, &pipeline.parquet_path) {
        (Some(o), _) => o.clone(),
        (None, Some(p)) => p.clone(),
        (None, None) => bail!(
            "no --output given and pipeline {} has no offline parquet sink",
            pipeline.name
        ),
    };
    let from = args
        .from
        .as_deref()
        .map(super::parse_time_arg)
        .transpose()
        .context("invalid --from")?;
    let to = args
        .to
        .as_deref()
        .map(super::parse_time_arg)
        .transpose()
        .context("invalid --to")?;
    let progress: Option<rill::replay::Progress> = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta}) {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Some(Box::new(
            move |bytes: u64, size: Option<u64>, records: u64| {
                if let Some(s) = size {
                    bar.set_length(s);
                }
                bar.set_position(bytes);
                bar.set_message(format!("{records} records"));
            },
        ))
    } else {
        None
    };
    // The online writer runs on its own runtime while the replay feeds it.
    let mut online = None;
    let mut writer = None;
    let mut observer = None;
    let rt = match &online_url {
        Some(url) => {
            check_redis(url)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()?;
            let (tx, rx) = tokio::sync::mpsc::channel(rill::daemon::ONLINE_QUEUE);
            let metrics = rill::metrics::Metrics::default();
            let pm = metrics.pipeline(&pipeline.name);
            writer = Some(rt.spawn(rill::sink::redis::run_writer(
                url.clone(),
                rill::daemon::online_layout(&pipeline),
                rx,
                pm.clone(),
            )));
            observer = Some(pm);
            online = Some(tx);
            Some(rt)
        }
        None => None,
    };
    let summary = replay::run(ReplayOptions {
        pipeline,
        input: args.input.clone(),
        output,
        from,
        to,
        wall_clock: Arc::new(SystemClock),
        progress,
        online,
        threads: args.threads,
        shard: args.shard,
        chunk_bytes: args.chunk_bytes,
    });
    if let (Some(rt), Some(w)) = (&rt, writer) {
        // The replay dropped its sender: the writer flushes what is left and ends.
        rt.block_on(w)?;
    }
    let mut summary = summary?;
    if let Some(pm) = observer {
        summary.online_rows = Some(pm.online_rows.get());
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_summary(&summary);
    }
    Ok(summary)
}

/// Fails fast when Redis does not answer, rather than retrying forever.
fn check_redis(endpoint: &rill::config::RedisEndpoint) -> anyhow::Result<()> {
    let shown = endpoint.display();
    rill::sink::redis::conn::blocking(
        endpoint,
        std::time::Duration::from_secs(2),
        redis::cmd("PING"),
    )
    .map(|_: String| ())
    .with_context(|| format!("--online: {shown} does not answer"))?;
    Ok(())
}

fn print_summary(s: &ReplaySummary) {
    eprintln!("replay of {} from {}", s.pipeline, s.input);
    eprintln!("  records        {}", s.records);
    eprintln!(
        "  events         {} into windows ({} outside --from/--to)",
        s.events, s.out_of_range
    );
    eprintln!("  dead letters   {}", s.dead_letters_total);
    for (r, n) in &s.dead_letters {
        eprintln!("    {r:<18} {n}");
    }
    if s.dead_letter_files.len() > 1 {
        for f in &s.dead_letter_files {
            eprintln!("    written to {f}");
        }
    } else if let Some(f) = &s.dead_letter_file {
        eprintln!("    written to {f}");
    }
    eprintln!(
        "  late events    {} kept, {} dropped",
        s.late_events_kept, s.late_events_dropped
    );
    eprintln!("  windows        {}", s.windows);
    eprintln!(
        "  panes          {} ({} retractions), {} rows in {} files",
        s.panes,
        s.retractions,
        s.rows,
        s.files.len()
    );
    eprintln!(
        "  time           {:.2}s, {:.0} events/s on {} thread{}{}",
        s.seconds,
        s.events_per_second,
        s.threads,
        if s.threads == 1 { "" } else { "s" },
        s.shard
            .as_deref()
            .map(|t| format!(", shard {t}"))
            .unwrap_or_default()
    );
    if let Some(n) = s.online_rows {
        eprintln!("  online         {n} panes written to Redis");
    }
    if let Some(m) = s.peak_memory_bytes {
        eprintln!("  peak memory    {:.1} MiB", m as f64 / (1024.0 * 1024.0));
    }
}
