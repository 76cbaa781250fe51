//! `rill gen`: the standard data set.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use rill::gen::{write_jsonl, write_parquet, GenFormat, GenOptions};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Number of events.
    #[arg(long, short = 'n', default_value_t = 10_000_000)]
    pub events: u64,
    /// Number of distinct users.
    #[arg(long, default_value_t = 100_000)]
    pub users: u32,
    /// Random seed: the same seed gives the same bytes.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Arrival time of the first event (RFC 3339 or YYYY-MM-DD).
    #[arg(long, default_value = "2026-01-05")]
    pub start: String,
    /// Days of event time the events span.
    #[arg(long, default_value_t = 7)]
    pub days: u32,
    /// Output file: .jsonl, .jsonl.gz, .jsonl.zst or .parquet; `-` for JSONL on standard output.
    #[arg(long, short = 'o', required_unless_present = "kafka")]
    pub output: Option<PathBuf>,
    /// Produce into Kafka (bootstrap servers) instead of a file, keyed by user_id.
    #[arg(long, conflicts_with = "output", requires = "topic")]
    pub kafka: Option<String>,
    /// Topic(s) to produce to (with --kafka); repeat for several.
    #[arg(long)]
    pub topic: Vec<String>,
    /// Events per second with --kafka (0: as fast as the broker takes them).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let opts = GenOptions {
        events: args.events,
        users: args.users,
        seed: args.seed,
        start: super::parse_time_arg(&args.start).context("invalid --start")?,
        days: args.days,
        ..Default::default()
    };
    let started = std::time::Instant::now();
    if let Some(brokers) = &args.kafka {
        let stop = std::sync::atomic::AtomicBool::new(false);
        let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let n = rill::daemon::produce::produce(
            brokers,
            &args.topic,
            opts,
            args.rate,
            &stop,
            &sent,
            &|_| {},
        )?;
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "produced {n} events to {} in {secs:.1}s",
            args.topic.join(", ")
        );
        return Ok(());
    }
    let output = args
        .output
        .clone()
        .expect("clap requires --output without --kafka");
    let n = if output.as_os_str() == "-" {
        let stdout = std::io::stdout();
        let mut lock = std::io::BufWriter::new(stdout.lock());
        let n = write_jsonl(opts, &mut lock, |_| {})?;
        lock.flush()?;
        n
    } else {
        let path = &output;
        // A file appears whole: written aside, then moved into place. Not
        // so a device, a FIFO or what a symlink such as /dev/stdout points
        // at: those are written directly (moving a file over /dev/stdout
        // would replace it).
        let special = std::fs::metadata(path).is_ok_and(|m| !m.file_type().is_file());
        let tmp = (!special).then(|| {
            path.with_file_name(format!(
                ".{}.tmp",
                path.file_name().and_then(|s| s.to_str()).unwrap_or("gen")
            ))
        });
        let file = match &tmp {
            Some(tmp) => std::fs::File::create(tmp)
                .with_context(|| format!("failed to create {}", tmp.display()))?,
            None => std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .with_context(|| format!("failed to open {}", path.display()))?,
        };
        let bar = progress_bar(args.events);
        let tick = |n: u64| bar.set_position(n);
        let n = match GenFormat::from_path(path) {
            GenFormat::Parquet => {
                write_parquet(opts, file, tick).context("failed to write parquet")?
            }
            GenFormat::Json => {
                let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
                let n = write_jsonl(opts, &mut w, tick)?;
                w.flush()?;
                n
            }
            GenFormat::JsonGzip => {
                let mut w = flate2::write::GzEncoder::new(
                    std::io::BufWriter::new(file),
                    flate2::Compression::fast(),
                );
                let n = write_jsonl(opts, &mut w, tick)?;
                w.finish()?.flush()?;
                n
            }
            GenFormat::JsonZstd => {
                let mut w = zstd::stream::write::Encoder::new(std::io::BufWriter::new(file), 3)?;
                let n = write_jsonl(opts, &mut w, tick)?;
                w.finish()?.flush()?;
                n
            }
        };
        bar.finish_and_clear();
        if let Some(tmp) = tmp {
            std::fs::rename(&tmp, path)
                .with_context(|| format!("failed to move {} into place", path.display()))?;
        }
        n
    };
    eprintln!(
        "generated {n} events in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A progress bar on a terminal, hidden otherwise.
pub fn progress_bar(len: u64) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}
