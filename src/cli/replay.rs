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
    /// Also write to the pipeline's Redis sink. Not available yet (the
    /// daemon, `rill run`, writes Redis); this flag is refused until then.
    #[arg(long)]
    pub online: bool,
    /// Print the summary as JSON on standard output.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ReplaySummary> {
    let pipeline = Pipeline::from_file(&args.pipeline)?;
    if args.online {
        bail!("--online is not available yet: replay writes the offline store only; the daemon (rill run) writes Redis");
    }
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
    let summary = replay::run(ReplayOptions {
        pipeline,
        input: args.input.clone(),
        output,
        from,
        to,
        wall_clock: Arc::new(SystemClock),
        progress,
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_summary(&summary);
    }
    Ok(summary)
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
    if let Some(f) = &s.dead_letter_file {
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
        "  time           {:.2}s, {:.0} events/s",
        s.seconds, s.events_per_second
    );
    if let Some(m) = s.peak_memory_bytes {
        eprintln!("  peak memory    {:.1} MiB", m as f64 / (1024.0 * 1024.0));
    }
}
