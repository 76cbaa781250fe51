//! Counters, gauges and latency histograms of the daemon, rendered as
//! Prometheus text for `/metrics`.
//!
//! Latencies are recorded in hdrhistogram (exact quantiles for the logs and
//! the benchmarks) and exported as Prometheus histograms with fixed bounds.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

/// Upper bounds of the exported latency buckets, in seconds.
const BOUNDS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// A latency histogram in microseconds.
#[derive(Debug, Clone)]
pub struct Latency(Arc<Mutex<Histogram<u64>>>);

impl Default for Latency {
    fn default() -> Self {
        Latency(Arc::new(Mutex::new(
            Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds"),
        )))
    }
}

impl Latency {
    pub fn record(&self, d: Duration, count: u64) {
        let us = (d.as_micros() as u64).clamp(1, 3_600_000_000);
        if let Ok(mut h) = self.0.lock() {
            let _ = h.record_n(us, count);
        }
    }

    /// (p50, p99, p999, max, count) in microseconds.
    pub fn quantiles(&self) -> (u64, u64, u64, u64, u64) {
        let h = self.0.lock().expect("latency lock");
        (
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max(),
            h.len(),
        )
    }
}

impl EncodeMetric for Latency {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let h = self.0.lock().map_err(|_| std::fmt::Error)?;
        let mut buckets: Vec<(f64, u64)> = BOUNDS
            .iter()
            .map(|&b| (b, h.count_between(0, (b * 1e6) as u64)))
            .collect();
        buckets.push((f64::INFINITY, h.len()));
        let sum: f64 = h
            .iter_recorded()
            .map(|v| v.value_iterated_to() as f64 * v.count_at_value() as f64)
            .sum::<f64>()
            / 1e6;
        encoder.encode_histogram::<Labels>(sum, h.len(), &buckets, None)
    }
    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// The metrics of one pipeline.
#[derive(Debug, Default)]
pub struct PipelineMetrics {
    /// Records read from the source (accepted or dead-lettered).
    pub records: Counter,
    pub events: Counter,
    pub dead_letters: Family<Labels, Counter>,
    pub late_kept: Counter,
    pub late_dropped: Counter,
    pub panes: Counter,
    pub watermark: Gauge<f64, AtomicU64>,
    pub watermark_lag: Gauge<f64, AtomicU64>,
    pub consumer_lag: Family<Labels, Gauge>,
    pub redis_write: Latency,
    pub parquet_write: Latency,
    pub event_to_online: Latency,
    pub redis_errors: Counter,
    pub checkpoints: Counter,
    pub online_rows: Counter,
    pub offline_rows: Counter,
    /// Wall time (epoch µs) of the last acknowledged write per sink.
    pub last_online_write: AtomicI64,
    pub last_offline_write: AtomicI64,
    /// Current pipeline watermark (epoch µs, i64::MIN before any).
    pub watermark_us: AtomicI64,
    /// Total consumer lag over the assigned partitions.
    pub total_lag: AtomicI64,
    /// The declared freshness SLA (absent without one).
    pub freshness_sla: Gauge<f64, AtomicU64>,
    /// 1 while the watermark lags the wall clock by more than the SLA.
    pub freshness_breached: Gauge,
    /// Wall time since the last pane reached each sink (`sink` label).
    pub since_last_write: Family<Labels, Gauge<f64, AtomicU64>>,
    /// 1 while consumption is paused because the online store is behind.
    pub consumer_paused: Gauge,
    /// Times consumption was paused for the online store.
    pub backpressure_pauses: Counter,
    /// Failed writes of Parquet files, dead letters or checkpoints.
    pub storage_errors: Counter,
    /// 1 while storage writes fail (partitions rewound and paused).
    pub storage_failing: Gauge,
    /// Panes written again to an online store that lost its data.
    pub online_rewrites: Counter,
    /// Partitions given up because another instance claimed their
    /// checkpoint (this instance was a zombie: its writes were refused).
    pub fenced_partitions: Counter,
}

/// Every metric of the process.
pub struct Metrics {
    registry: Mutex<Registry>,
    pipelines: Mutex<Vec<(String, Arc<PipelineMetrics>)>>,
    pub ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            registry: Mutex::new(Registry::with_prefix("rill")),
            pipelines: Mutex::new(Vec::new()),
            ready: AtomicBool::new(false),
        }
    }
}

/// A pipeline's headline figures (progress display, freshness).
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub name: String,
    pub records: u64,
    pub events: u64,
    pub panes: u64,
    pub watermark: i64,
    pub lag: i64,
    pub last_online_write: i64,
    pub last_offline_write: i64,
}

impl Metrics {
    /// Registers the metrics of a pipeline under the label `pipeline`.
    pub fn pipeline(&self, name: &str) -> Arc<PipelineMetrics> {
        let m = Arc::new(PipelineMetrics::default());
        let mut reg = self.registry.lock().expect("registry lock");
        let r = reg.sub_registry_with_label(("pipeline".into(), name.to_string().into()));
        r.register("records", "Records read from the source", m.records.clone());
        r.register("events", "Events accepted by the engine", m.events.clone());
        r.register(
            "dead_letters",
            "Records refused, by reason",
            m.dead_letters.clone(),
        );
        r.register(
            "late_events_kept",
            "Late events added to a window still kept",
            m.late_kept.clone(),
        );
        r.register(
            "late_events_dropped",
            "Late events whose window was gone (dead-lettered as too_late)",
            m.late_dropped.clone(),
        );
        r.register("panes_emitted", "Panes emitted", m.panes.clone());
        r.register(
            "watermark_seconds",
            "Pipeline watermark, epoch seconds",
            m.watermark.clone(),
        );
        r.register(
            "watermark_lag_seconds",
            "Wall clock minus the watermark",
            m.watermark_lag.clone(),
        );
        r.register(
            "consumer_lag",
            "High watermark minus position, per partition",
            m.consumer_lag.clone(),
        );
        r.register(
            "redis_write_seconds",
            "Latency of one pipelined Redis write",
            m.redis_write.clone(),
        );
        r.register(
            "parquet_write_seconds",
            "Latency of one Parquet write of emitted panes",
            m.parquet_write.clone(),
        );
        r.register(
            "event_to_online_seconds",
            "From a pane's emission (its window completing) to its value being readable in Redis",
            m.event_to_online.clone(),
        );
        r.register(
            "redis_errors",
            "Failed Redis writes (retried)",
            m.redis_errors.clone(),
        );
        r.register(
            "checkpoints",
            "Checkpoints completed",
            m.checkpoints.clone(),
        );
        r.register(
            "online_rows",
            "Rows acknowledged by Redis",
            m.online_rows.clone(),
        );
        r.register(
            "offline_rows",
            "Rows written to Parquet",
            m.offline_rows.clone(),
        );
        r.register(
            "freshness_sla_seconds",
            "The pipeline's declared freshness SLA",
            m.freshness_sla.clone(),
        );
        r.register(
            "freshness_sla_breached",
            "1 while the watermark lags the wall clock by more than the freshness SLA",
            m.freshness_breached.clone(),
        );
        r.register(
            "seconds_since_last_write",
            "Wall time since the last pane reached the sink",
            m.since_last_write.clone(),
        );
        r.register(
            "consumer_paused",
            "1 while the consumer's partitions are paused because the online store is behind",
            m.consumer_paused.clone(),
        );
        r.register(
            "backpressure_pauses",
            "Times consumption was paused because the online store was behind",
            m.backpressure_pauses.clone(),
        );
        r.register(
            "storage_errors",
            "Failed writes of Parquet files, dead letters or checkpoints (each rewinds the partitions to their last checkpoint)",
            m.storage_errors.clone(),
        );
        r.register(
            "storage_failing",
            "1 while writes of Parquet files, dead letters or checkpoints fail and the partitions wait to be reloaded",
            m.storage_failing.clone(),
        );
        r.register(
            "fenced_partitions",
            "Partitions given up because another instance claimed their checkpoint in object storage (this instance's writes were refused)",
            m.fenced_partitions.clone(),
        );
        r.register(
            "online_rewrites",
            "Latest panes written again to an online store that lost its data (its marker key was gone)",
            m.online_rewrites.clone(),
        );
        m.watermark_us.store(i64::MIN, Ordering::Relaxed);
        self.pipelines
            .lock()
            .expect("pipelines lock")
            .push((name.to_string(), m.clone()));
        m
    }

    /// The metrics of every pipeline, by name.
    pub fn handles(&self) -> Vec<(String, Arc<PipelineMetrics>)> {
        self.pipelines.lock().expect("pipelines lock").clone()
    }

    /// Headline figures of every pipeline.
    pub fn snapshot(&self) -> Vec<Snapshot> {
        self.pipelines
            .lock()
            .expect("pipelines lock")
            .iter()
            .map(|(name, m)| Snapshot {
                name: name.clone(),
                records: m.records.get(),
                events: m.events.get(),
                panes: m.panes.get(),
                watermark: m.watermark_us.load(Ordering::Relaxed),
                lag: m.total_lag.load(Ordering::Relaxed),
                last_online_write: m.last_online_write.load(Ordering::Relaxed),
                last_offline_write: m.last_offline_write.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Prometheus text (OpenMetrics): one family per metric, with the
    /// samples of every pipeline under it.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let reg = self.registry.lock().expect("registry lock");
        prometheus_client::encoding::text::encode(&mut s, &reg).expect("writing to a string");
        merge_families(&s)
    }
}

impl Metrics {
    /// The classic Prometheus text format (0.0.4): a counter family is
    /// named as its samples (`rill_events_total`), there are no `# UNIT`
    /// lines and no `# EOF`.
    pub fn render_classic(&self) -> String {
        let open = self.render();
        let mut counters: std::collections::HashSet<String> = Default::default();
        for l in open.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                if let Some((name, "counter")) = rest.split_once(' ') {
                    counters.insert(name.to_string());
                }
            }
        }
        let mut out = String::with_capacity(open.len());
        for l in open.lines() {
            if l == "# EOF" || l.starts_with("# UNIT ") {
                continue;
            }
            let meta = l
                .strip_prefix("# HELP ")
                .map(|r| ("# HELP ", r))
                .or_else(|| l.strip_prefix("# TYPE ").map(|r| ("# TYPE ", r)));
            match meta {
                Some((kind, rest)) => {
                    let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                    if counters.contains(name) {
                        out.push_str(&format!("{kind}{name}_total {tail}\n"));
                    } else {
                        out.push_str(l);
                        out.push('\n');
                    }
                }
                None => {
                    out.push_str(l);
                    out.push('\n');
                }
            }
        }
        out
    }
}

/// Each pipeline's metrics live in a sub-registry labelled with its name,
/// and the encoder writes a family's `# HELP`/`# TYPE`/`# UNIT` lines once
/// per sub-registry; a family must appear once, so the blocks of one name
/// are joined under the first one's metadata (in first-seen order).
fn merge_families(text: &str) -> String {
    let mut order: Vec<String> = Vec::new();
    let mut meta: std::collections::HashMap<String, Vec<&str>> = Default::default();
    let mut samples: std::collections::HashMap<String, Vec<&str>> = Default::default();
    let mut current = String::new();
    for line in text.lines() {
        if line == "# EOF" {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (_, name) = (parts.next(), parts.next().unwrap_or_default());
            if name != current {
                current = name.to_string();
            }
            if !meta.contains_key(&current) {
                order.push(current.clone());
                meta.insert(current.clone(), Vec::new());
                samples.insert(current.clone(), Vec::new());
            }
            let m = meta.get_mut(&current).expect("inserted above");
            if m.len() < 3
                && !m
                    .iter()
                    .any(|x| x.split(' ').nth(1) == line.split(' ').nth(1))
            {
                m.push(line);
            }
            continue;
        }
        samples.entry(current.clone()).or_default().push(line);
    }
    let mut out = String::with_capacity(text.len());
    for name in &order {
        for l in &meta[name] {
            out.push_str(l);
            out.push('\n');
        }
        for l in &samples[name] {
            out.push_str(l);
            out.push('\n');
        }
    }
    out.push_str("# EOF\n");
    out
}

impl crate::sink::redis::OnlineObserver for PipelineMetrics {
    fn written_latency(&self, write_latency: Duration) {
        self.redis_write.record(write_latency, 1);
    }
    fn written(&self, rows: usize, emit_to_online: Duration) {
        self.event_to_online.record(emit_to_online, rows as u64);
        self.online_rows.inc_by(rows as u64);
        self.last_online_write.store(
            crate::time::Clock::now(&crate::time::SystemClock),
            Ordering::Relaxed,
        );
    }
    fn failed(&self, _error: &str) {
        self.redis_errors.inc();
    }
}
