//! `rill bench daemon`: the daemon's own path (decode, engine, Redis and
//! Parquet sinks, checkpoints) fed from a JSON-lines file through the same
//! worker and writer tasks as Kafka records, with the latency from a
//! window's completion to its value being in Redis.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use rill::daemon::worker::Worker;
use rill::daemon::WorkerOptions;
use rill::metrics::Metrics;

#[derive(Debug, Parser)]
pub struct Args {
    #[command(subcommand)]
    pub what: What,
}

#[derive(Debug, Subcommand)]
pub enum What {
    /// The daemon path from a file into Redis and Parquet.
    Daemon(DaemonArgs),
    /// Load generator for the read API (`POST /v1/features`) at a fixed rate.
    Serve(super::bench_serve::ServeArgs),
    /// A bare rdkafka consumer reading a topic to its end: the broker's own
    /// rate, to compare the daemon with (benches/daemon_vs_consumer.sh).
    Consume(ConsumeArgs),
}

#[derive(Debug, Parser)]
pub struct ConsumeArgs {
    /// Bootstrap servers.
    #[arg(long)]
    pub brokers: String,
    /// Topic to read from its beginning.
    #[arg(long)]
    pub topic: String,
    /// Stop after this many messages (0: at the end of every partition).
    #[arg(long, default_value_t = 0)]
    pub expect: u64,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Parser)]
pub struct DaemonArgs {
    /// Pipeline file (its Kafka settings are not used).
    pub pipeline: PathBuf,
    /// JSON-lines input (or `--live`).
    #[arg(long, required_unless_present = "live")]
    pub input: Option<PathBuf>,
    /// Instead of a file, generate events for this long (`3m`) at
    /// `--rate` events/s (10,000 unless given), their event time the wall
    /// clock, over `--keys` entities chosen at random: a real-time pace.
    /// Windows still open at the end are not closed.
    #[arg(long, conflicts_with = "input")]
    pub live: Option<String>,
    /// Entities of a `--live` run (`user_id` u0 to u<keys-1>).
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,
    /// Redis URL (a real redis-server).
    #[arg(long)]
    pub redis: String,
    /// Parquet output and checkpoints (emptied first).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Time between checkpoints.
    #[arg(long, default_value = "10s")]
    pub checkpoint_interval: String,
    /// Records per second to feed (0: as fast as the path takes them).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// Run without the online image the daemon keeps to rewrite a Redis
    /// that lost its data (to measure what it costs).
    #[arg(long)]
    pub without_online_image: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    match a.what {
        What::Daemon(d) => daemon(d),
        What::Serve(s) => super::bench_serve::run(s),
        What::Consume(c) => consume(c),
    }
}

fn daemon(a: DaemonArgs) -> anyhow::Result<()> {
    let p = rill::config::Pipeline::from_file(&a.pipeline).map_err(|e| anyhow::anyhow!("{e}"))?;
    let _ = std::fs::remove_dir_all(&a.data_dir);
    let ci =
        rill::time::parse_duration(&a.checkpoint_interval).map_err(|e| anyhow::anyhow!("{e}"))?;
    let metrics = Arc::new(Metrics::default());
    let pm = metrics.pipeline(&p.name);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let (tx, rx) = tokio::sync::mpsc::channel(rill::daemon::ONLINE_QUEUE);
    let layout = rill::daemon::online_layout(&p);
    // As `rill run` does: a marker in Redis and each partition's image.
    let marker = (!a.without_online_image).then(|| {
        Arc::new(rill::sink::redis::recovery::LossMarker::new(
            &layout.prefix,
            &layout.group,
        ))
    });
    let writer = rt.spawn(rill::sink::redis::run_writer_with_marker(
        rill::config::RedisEndpoint::from_url(a.redis.clone()),
        layout,
        rx,
        pm.clone(),
        marker.clone(),
    ));
    let mut p = p;
    if p.kafka.is_none() {
        p.kafka = Some(rill::config::KafkaSource {
            brokers: "127.0.0.1:1".into(),
            topic: "bench".into(),
            group_id: "bench".into(),
            start: rill::config::StartPolicy::Earliest,
            security: Default::default(),
            properties: Vec::new(),
        });
    }
    let opts = WorkerOptions {
        state_dir: a.data_dir.join("_state"),
        data_dir: Some(a.data_dir.clone()),
        brokers: None,
        checkpoint_interval: Duration::from_micros(ci as u64),
        max_file_rows: 1_000_000,
        instance: "bench".into(),
        group_instance_id: None,
    };
    let mut w = Worker::new(rill::plan::Plan::new(&p), opts, Some(tx), pm.clone())?;
    if let Some(m) = marker {
        w = w.with_marker(m);
    }
    let before = server_cost(&a.redis)?;
    let t = Instant::now();
    let n = match (&a.input, &a.live) {
        (Some(input), _) => w.run_file(input, a.rate)?,
        (None, Some(live)) => {
            let d = rill::time::parse_duration(live).map_err(|e| anyhow::anyhow!("{e}"))?;
            let rate = if a.rate == 0 { 10_000 } else { a.rate };
            w.run_lines(
                live_events(Duration::from_micros(d as u64), a.keys),
                rate,
                false,
            )?
        }
        (None, None) => anyhow::bail!("give --input or --live"),
    };
    rt.block_on(writer)?;
    let secs = t.elapsed().as_secs_f64();
    let after = server_cost(&a.redis)?;
    let panes = pm.online_rows.get().max(1) as f64;
    let (p50, p99, p999, max, count) = pm.event_to_online.quantiles();
    let (_, w99, _, _, _) = pm.redis_write.quantiles();
    let out = serde_json::json!({
        "events": n,
        "seconds": secs,
        "events_per_second": n as f64 / secs,
        "online_rows": pm.online_rows.get(),
        "offline_rows": pm.offline_rows.get(),
        "checkpoints": pm.checkpoints.get(),
        "emit_to_online_us": { "p50": p50, "p99": p99, "p999": p999, "max": max, "rows": count },
        "redis_write_p99_us": w99,
        // Redis' own accounting, summed over the primaries: the time spent
        // inside the write commands (INFO commandstats), and the server's
        // CPU time (user + system), each per pane written.
        "redis_command_us_per_pane": (after.command_us - before.command_us) / panes,
        "redis_cpu_us_per_pane": (after.cpu_us - before.cpu_us) / panes,
        "redis_hashes_written": after.hsets - before.hsets,
        "redis_cpu_us_per_hash_written": (after.cpu_us - before.cpu_us) / (after.hsets - before.hsets).max(1.0),
        "peak_memory_bytes": rill::replay::peak_memory_bytes(),
    });
    if a.json {
        println!("{out}");
    } else {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(())
}

/// Events of the standard data set's shape for `for_how_long`, their
/// event time the wall clock, each for one of `keys` entities at random.
fn live_events(
    for_how_long: Duration,
    keys: u64,
) -> impl FnMut(&mut Vec<u8>) -> anyhow::Result<bool> {
    use std::io::Write as _;
    let end = Instant::now() + for_how_long;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let keys = keys.max(1);
    move |buf| {
        if Instant::now() >= end {
            return Ok(false);
        }
        // xorshift64*: cheap and reproducible.
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let r = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        write!(
            buf,
            r#"{{"user_id":"u{}","event_type":"purchase","amount":{}.{:02},"event_time":"{now}"}}"#,
            (r >> 16) % keys,
            r % 500,
            (r >> 8) % 100
        )?;
        Ok(true)
    }
}

/// What the Redis primaries behind `url` have spent so far.
struct ServerCost {
    /// Microseconds inside `EVALSHA` and `FCALL` (INFO commandstats).
    command_us: f64,
    /// The servers' CPU time, user plus system, in microseconds.
    cpu_us: f64,
    /// `HSET` calls: the hashes written (the writer sends only the newest
    /// pane of each key it has gathered, and the compare-and-set refuses
    /// older ones).
    hsets: f64,
}

/// The cost counters of every primary behind `url` (one server, or every
/// primary a cluster's first seed node lists).
fn server_cost(url: &str) -> anyhow::Result<ServerCost> {
    let urls = match rill::config::cluster_nodes(url) {
        None => vec![url.to_string()],
        Some(nodes) => {
            let nodes = nodes.map_err(|e| anyhow::anyhow!(e))?;
            let seed = nodes
                .first()
                .ok_or_else(|| anyhow::anyhow!("no seed node"))?;
            let mut c = redis::Client::open(seed.as_str())?.get_connection()?;
            let listing: String = redis::cmd("CLUSTER").arg("NODES").query(&mut c)?;
            let scheme = seed.split_once("://").map_or("redis", |(s, _)| s);
            listing
                .lines()
                .filter(|l| l.split(' ').nth(2).is_some_and(|f| f.contains("master")))
                .filter_map(|l| l.split(' ').nth(1))
                .map(|addr| format!("{scheme}://{}", addr.split('@').next().unwrap_or(addr)))
                .collect()
        }
    };
    let mut cost = ServerCost {
        command_us: 0.0,
        cpu_us: 0.0,
        hsets: 0.0,
    };
    for u in urls {
        let mut c = redis::Client::open(u.as_str())?.get_connection()?;
        let info: String = redis::cmd("INFO").arg("all").query(&mut c)?;
        for line in info.lines() {
            let line = line.trim();
            if let Some(rest) = line
                .strip_prefix("cmdstat_evalsha:")
                .or_else(|| line.strip_prefix("cmdstat_fcall:"))
            {
                let usec = rest
                    .split(',')
                    .find_map(|kv| kv.strip_prefix("usec="))
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0);
                cost.command_us += usec;
            } else if let Some(rest) = line.strip_prefix("cmdstat_hset:") {
                cost.hsets += rest
                    .split(',')
                    .find_map(|kv| kv.strip_prefix("calls="))
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0);
            } else if let Some(v) = line
                .strip_prefix("used_cpu_user:")
                .or_else(|| line.strip_prefix("used_cpu_sys:"))
            {
                cost.cpu_us += v.parse::<f64>().unwrap_or(0.0) * 1e6;
            }
        }
    }
    Ok(cost)
}

/// Logs librdkafka's errors as the daemon does (the end of a partition is expected).
struct QuietEof;

impl rdkafka::ClientContext for QuietEof {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        rill::daemon::worker::log_client_error(error, reason);
    }
}

impl rdkafka::consumer::ConsumerContext for QuietEof {}

/// Reads `topic` with a fresh consumer group, the way the daemon's consumer
/// is configured (no commits, partition EOF on), touching every payload.
fn consume(a: ConsumeArgs) -> anyhow::Result<()> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    let group = format!("rill-bench-consume-{}", std::process::id());
    let consumer: BaseConsumer<QuietEof> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &a.brokers)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .create_with_context(QuietEof)?;
    consumer.subscribe(&[a.topic.as_str()])?;
    let started = Instant::now();
    let (mut n, mut bytes, mut checksum) = (0u64, 0u64, 0u64);
    let mut first: Option<Instant> = None;
    let mut eof: std::collections::BTreeSet<i32> = Default::default();
    let mut partitions = 0usize;
    let (mut t10, mut t90) = (None, None);
    loop {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                first.get_or_insert_with(Instant::now);
                n += 1;
                let p = m.payload().unwrap_or(&[]);
                bytes += p.len() as u64;
                checksum = checksum.wrapping_add(p.first().copied().unwrap_or(0) as u64);
                eof.remove(&m.partition());
                if a.expect > 0 {
                    if t10.is_none() && n * 10 >= a.expect {
                        t10 = Some((Instant::now(), n));
                    }
                    if t90.is_none() && n * 10 >= a.expect * 9 {
                        t90 = Some((Instant::now(), n));
                    }
                    if n >= a.expect {
                        break;
                    }
                }
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                eof.insert(p);
                if partitions == 0 {
                    if let Ok(md) = consumer.fetch_metadata(Some(&a.topic), Duration::from_secs(5))
                    {
                        partitions = md.topics().first().map_or(0, |t| t.partitions().len());
                    }
                }
                if a.expect == 0 && n > 0 && partitions > 0 && eof.len() >= partitions {
                    break;
                }
            }
            Some(Err(e)) => anyhow::bail!("consumer: {e}"),
            None => {}
        }
    }
    let total = started.elapsed().as_secs_f64();
    let from_first = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
    let steady = match (t10, t90) {
        (Some((a0, n0)), Some((a1, n1))) if a1 > a0 => {
            Some((n1 - n0) as f64 / (a1 - a0).as_secs_f64())
        }
        _ => None,
    };
    let out = serde_json::json!({
        "messages": n,
        "bytes": bytes,
        "seconds_total": total,
        "seconds_from_first_message": from_first,
        "messages_per_second": n as f64 / from_first.max(1e-9),
        "steady_messages_per_second_10_to_90": steady,
        "checksum": checksum,
    });
    if a.json {
        println!("{out}");
    } else {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(())
}
