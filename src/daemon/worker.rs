//! One pipeline's consumer loop, on its own thread: Kafka records in,
//! decode, engine, panes out to the Parquet files of their partition and to
//! the Redis writer; periodic checkpoints; rebalances.
//!
//! Order of a checkpoint (every `checkpoint_interval` and at shutdown):
//! wait until Redis acknowledged every pane sent so far, close the open
//! Parquet files of each partition (still under temporary names), write the
//! partition checkpoints (state, next offset, the files to publish), rename
//! the files into place, then commit the offsets to Kafka. Committed
//! offsets are therefore never ahead of what the sinks hold.
//!
//! A revoked partition's state since its last checkpoint is dropped: its
//! next owner (this instance again, or another) loads that checkpoint and
//! recomputes the rest, with a higher generation so that its Redis writes
//! win over the dropped ones.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::{Checkpoint, CheckpointError, Store, CHECKPOINT_VERSION};
use crate::config::{Pipeline, StartPolicy};
use crate::engine::{PaneBuf, PartitionedEngine, ProcessingTime};
use crate::event::{Decoder, Reason, Refusal};
use crate::metrics::PipelineMetrics;
use crate::plan::PlanRef;
use crate::sink::dead_letter::{dead_letter_json, DeadLetterWriter, Position};
use crate::sink::parquet::ParquetSink;
use crate::sink::redis::recovery::{LossMarker, OnlineImage};
use crate::sink::redis::{OnlineBatch, OnlineMsg};
use crate::storage::Mirror;
use crate::time::{Clock, Micros, SystemClock};

/// Largest record value accepted; bigger ones are dead letters (`oversized`).
pub const MAX_RECORD_BYTES: usize = 1 << 20;

/// Settings of a worker that do not come from the pipeline file.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub state_dir: PathBuf,
    /// Root of the Parquet output (the pipeline's `offline.parquet.path` otherwise).
    pub data_dir: Option<PathBuf>,
    pub brokers: Option<String>,
    pub checkpoint_interval: Duration,
    /// Rows per Parquet file before it rolls.
    pub max_file_rows: usize,
    /// Names this process in dead-letter files.
    pub instance: String,
    /// Kafka static membership (`group.instance.id`), stable across restarts.
    pub group_instance_id: Option<String>,
}

/// A rebalance, as seen by the worker after `poll` returns.
enum Reb {
    Assign(Vec<(i32, Option<Checkpoint>)>),
    Revoke(Vec<i32>),
}

struct Ctx {
    topic: String,
    store: Store,
    start_ts: Option<i64>,
    events: Mutex<Vec<Reb>>,
    errors: Mutex<Vec<String>>,
    /// A checkpoint that cannot be read: the worker stops.
    fatal: Mutex<Option<String>>,
    /// High watermark per partition, from librdkafka's statistics (the
    /// fetch responses carry it): consumer lag without a broker round trip.
    high_watermarks: Mutex<HashMap<i32, i64>>,
}

impl ClientContext for Ctx {
    fn stats(&self, stats: rdkafka::Statistics) {
        let Some(t) = stats.topics.get(&self.topic) else {
            return;
        };
        if let Ok(mut m) = self.high_watermarks.lock() {
            for (&p, ps) in &t.partitions {
                if p >= 0 && ps.hi_offset >= 0 {
                    m.insert(p, ps.hi_offset);
                }
            }
        }
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        log_client_error(error, reason);
    }
}

/// Logs a librdkafka global error. Reaching the end of a partition is how
/// idleness is detected, not an error: librdkafka reports it as one, and it
/// is logged at debug.
pub fn log_client_error(error: rdkafka::error::KafkaError, reason: &str) {
    if error.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF) {
        tracing::debug!("librdkafka: {error}: {reason}");
    } else {
        tracing::error!("librdkafka: {error}: {reason}");
    }
}

impl ConsumerContext for Ctx {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let mut loaded = Vec::new();
                let mut no_offset = TopicPartitionList::new();
                for e in tpl.elements() {
                    let p = e.partition();
                    match self.store.load(p) {
                        Ok(c) => {
                            if c.as_ref().and_then(|c| c.next_offset).is_none() {
                                no_offset.add_partition(&self.topic, p);
                            }
                            loaded.push((p, c));
                        }
                        Err(e) => {
                            // Starting the partition over would redo and
                            // republish what the checkpoint covers: stop.
                            let mut f = self.fatal.lock().expect("lock");
                            f.get_or_insert_with(|| format!("{:#}", anyhow::Error::new(e)));
                            loaded.push((p, None));
                        }
                    }
                }
                for (p, c) in &loaded {
                    if let Some(o) = c.as_ref().and_then(|c| c.next_offset) {
                        let _ = tpl.set_partition_offset(&self.topic, *p, Offset::Offset(o));
                    }
                }
                // A partition without checkpoint and without committed
                // offset starts at the pipeline's `start` timestamp.
                if let (Some(ts), false) = (self.start_ts, no_offset.count() == 0) {
                    let committed = consumer
                        .committed_offsets(no_offset.clone(), Duration::from_secs(10))
                        .ok();
                    let mut by_time = TopicPartitionList::new();
                    for e in no_offset.elements() {
                        let has = committed
                            .as_ref()
                            .and_then(|c| c.find_partition(&self.topic, e.partition()))
                            .is_some_and(|x| matches!(x.offset(), Offset::Offset(_)));
                        if !has {
                            let _ = by_time.add_partition_offset(
                                &self.topic,
                                e.partition(),
                                Offset::Offset(ts),
                            );
                        }
                    }
                    if by_time.count() > 0 {
                        if let Ok(found) =
                            consumer.offsets_for_times(by_time, Duration::from_secs(10))
                        {
                            for e in found.elements() {
                                let _ = tpl.set_partition_offset(
                                    &self.topic,
                                    e.partition(),
                                    e.offset(),
                                );
                            }
                        }
                    }
                }
                self.events.lock().expect("lock").push(Reb::Assign(loaded));
                if let Err(e) = consumer.assign(tpl) {
                    self.errors
                        .lock()
                        .expect("lock")
                        .push(format!("assign failed: {e}"));
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let parts = tpl.elements().iter().map(|e| e.partition()).collect();
                self.events.lock().expect("lock").push(Reb::Revoke(parts));
                let _ = consumer.unassign();
            }
            other => {
                self.errors
                    .lock()
                    .expect("lock")
                    .push(format!("rebalance error: {other:?}"));
                let _ = consumer.unassign();
            }
        }
    }
}

enum Polled {
    Nothing,
    Record {
        p: i32,
        offset: i64,
        ts: Option<Micros>,
        /// The value is in `Worker::record` (`false`: a tombstone).
        has_payload: bool,
    },
    Eof(i32),
    Error(KafkaError),
}

/// A partition this worker owns.
struct Part {
    generation: u64,
    epoch: u64,
    next_offset: Option<i64>,
    sink: Option<ParquetSink>,
    /// Dead letters of the current epoch (file dead letters only).
    dead: Option<DeadLetterWriter>,
    at_eof: bool,
    high_watermark: Option<i64>,
    /// First offset read since the partition was loaded.
    first_offset: Option<i64>,
    /// The latest online pane of each key, and the store token it was
    /// written under (kept only with a marker, see `sink::redis::recovery`).
    image: OnlineImage,
    image_token: Option<String>,
}

/// A write to the offline store, the dead letters or the checkpoint store
/// failed (a full disk, a lost mount). The worker does not stop: it drops
/// what its partitions computed since their last stored checkpoint,
/// pauses them, and later reloads them from those checkpoints and reads
/// again from their offsets (the path of a crash, without the restart).
#[derive(Debug)]
struct StorageFailure(anyhow::Error);

impl std::fmt::Display for StorageFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for StorageFailure {}

fn storage(e: impl Into<anyhow::Error>) -> anyhow::Error {
    anyhow::Error::new(StorageFailure(e.into()))
}

/// Partitions rewound after a storage failure, waiting to be reloaded.
struct Rewound {
    /// Partition -> first offset read since its last load (where to read
    /// again when its checkpoint holds no offset).
    parts: BTreeMap<i32, Option<i64>>,
    retry_at: Instant,
    backoff: Duration,
}

/// Where dead letters go: files per partition and checkpoint epoch,
/// published with the checkpoint (exactly once, as the Parquet rows), or a
/// Kafka topic (at least once).
enum DeadLetters {
    Files {
        dir: PathBuf,
    },
    Topic {
        producer: BaseProducer,
        topic: String,
    },
}

pub struct Worker {
    p: Pipeline,
    plan: PlanRef,
    opts: WorkerOptions,
    consumer: BaseConsumer<Ctx>,
    topic: String,
    store: Store,
    engine: PartitionedEngine,
    dec: Decoder,
    out: PaneBuf,
    parts: BTreeMap<i32, Part>,
    online: Option<mpsc::Sender<OnlineMsg>>,
    online_buf: OnlineBatch,
    /// The current record's value, reused from record to record.
    record: Vec<u8>,
    feature_names: Vec<String>,
    parquet_root: Option<PathBuf>,
    dead: DeadLetters,
    /// Object storage behind the Parquet root and the dead-letter
    /// directory: files are written to a local staging directory, go up
    /// under temporary names before their checkpoint is stored and are
    /// moved into place after it (`storage`).
    data_mirror: Option<Mirror>,
    dead_mirror: Option<Mirror>,
    metrics: Arc<PipelineMetrics>,
    clock: SystemClock,
    /// Fed from a file (benchmarks): no group, no commits.
    file_mode: bool,
    /// Online messages the writer had no room for, in order. While any
    /// wait, the assigned partitions are paused and the loop keeps polling
    /// (rebalances and the group's liveness go on).
    stash: std::collections::VecDeque<OnlineMsg>,
    paused: bool,
    /// Set while a checkpoint waits for the writer's flush.
    in_checkpoint: bool,
    /// Set once a shutdown began: no more records are taken.
    stopping: bool,
    runtime: Option<tokio::runtime::Handle>,
    last_tick: Instant,
    last_lag: Instant,
    /// Set while storage fails: the rewound partitions and when to retry.
    rewound: Option<Rewound>,
    /// Since when storage fails (logged once at the start and at the end).
    storage_failing_since: Option<Instant>,
    /// The offsets the partitions had read when storage failed: the fault
    /// is over once a checkpoint stores offsets as far.
    storage_reached: BTreeMap<i32, i64>,
    /// The online store's marker (a store that lost its data gets every
    /// partition's image again), and the version of it last acted on.
    marker: Option<Arc<LossMarker>>,
    marker_seen: u64,
    /// When a backpressure pause was last logged at info.
    pause_logged: Option<Instant>,
}

impl Worker {
    pub fn new(
        plan: PlanRef,
        opts: WorkerOptions,
        online: Option<mpsc::Sender<OnlineMsg>>,
        metrics: Arc<PipelineMetrics>,
    ) -> anyhow::Result<Worker> {
        let p = plan.pipeline.clone();
        let kafka = p
            .kafka
            .clone()
            .ok_or_else(|| anyhow::anyhow!("pipeline {} has no kafka source", p.name))?;
        let brokers = opts.brokers.clone().unwrap_or(kafka.brokers.clone());
        let (reset, start_ts) = match kafka.start {
            StartPolicy::Earliest => ("earliest", None),
            StartPolicy::Latest => ("latest", None),
            StartPolicy::Timestamp(t) => ("earliest", Some(t / 1000)),
        };
        let store = Store::new(&opts.state_dir, &p.name, &kafka.topic);
        let ctx = Ctx {
            topic: kafka.topic.clone(),
            store: store.clone(),
            start_ts,
            events: Mutex::new(Vec::new()),
            errors: Mutex::new(Vec::new()),
            fatal: Mutex::new(None),
            high_watermarks: Mutex::new(HashMap::new()),
        };
        let mut cfg = crate::source::kafka::client_config(&kafka, &brokers);
        cfg.set("group.id", &kafka.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", reset)
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            // The loop polls at least every 50 ms, paused or not (a slow
            // online store pauses the partitions, it does not block the
            // loop), so the group's default bound holds.
            .set("max.poll.interval.ms", "300000")
            .set("partition.assignment.strategy", "range")
            // Statistics carry each partition's high watermark (for the lag).
            .set("statistics.interval.ms", "1000");
        // Static membership: a restarted instance with the same id takes
        // its partitions back without a rebalance.
        if let Some(id) = &opts.group_instance_id {
            cfg.set("group.instance.id", id);
        }
        // The pipeline's own properties override rill's defaults.
        for (k, v) in &kafka.properties {
            cfg.set(k, v);
        }
        let consumer: BaseConsumer<Ctx> = cfg.create_with_context(ctx)?;
        let engine = PartitionedEngine::new(&plan, ProcessingTime::External);
        let dec = Decoder::new(plan.decode.clone());
        let out = PaneBuf::new(p.features.len());
        let parquet_root = opts.data_dir.clone().or(p.parquet_path.clone());
        let data_mirror = match &parquet_root {
            Some(r) => Mirror::of(r)?,
            None => None,
        };
        let mut dead_mirror = None;
        let dead = match &p.dead_letter_topic {
            Some(t) => DeadLetters::Topic {
                producer: crate::source::kafka::client_config(&kafka, &brokers).create()?,
                topic: t.clone(),
            },
            None => {
                let dir = p
                    .dead_letter_path
                    .clone()
                    .or_else(|| parquet_root.as_ref().map(|r| r.join("_dead_letter")))
                    .unwrap_or_else(|| opts.state_dir.join("_dead_letter"));
                dead_mirror = Mirror::of(&dir)?;
                let dir = dead_mirror.as_ref().map_or(dir, |m| m.local.clone());
                DeadLetters::Files { dir }
            }
        };
        let parquet_root = match &data_mirror {
            Some(m) => Some(m.local.clone()),
            None => parquet_root,
        };
        Ok(Worker {
            data_mirror,
            dead_mirror,
            record: Vec::with_capacity(4096),
            online_buf: OnlineBatch {
                panes: PaneBuf::new(p.features.len()),
                generations: Vec::new(),
                emitted: Instant::now(),
                rewrite: false,
            },
            feature_names: p.features.iter().map(|f| f.name.clone()).collect(),
            topic: kafka.topic,
            p,
            plan,
            opts,
            consumer,
            store,
            engine,
            dec,
            out,
            parts: BTreeMap::new(),
            online,
            parquet_root,
            dead,
            metrics,
            clock: SystemClock,
            file_mode: false,
            stash: std::collections::VecDeque::new(),
            paused: false,
            in_checkpoint: false,
            stopping: false,
            runtime: tokio::runtime::Handle::try_current().ok(),
            last_tick: Instant::now(),
            last_lag: Instant::now(),
            rewound: None,
            storage_failing_since: None,
            storage_reached: BTreeMap::new(),
            marker: None,
            marker_seen: 0,
            pause_logged: None,
        })
    }

    /// Keeps each partition's latest online panes and writes them again
    /// when `marker` shows the store lost them.
    pub fn with_marker(mut self, marker: Arc<LossMarker>) -> Worker {
        self.marker = Some(marker);
        self
    }

    /// Writes the image of every partition whose token is not the store's
    /// current one (the store lost its data, or the partition was restored
    /// from a checkpoint taken before it did).
    fn rewrite_images(&mut self) -> anyhow::Result<()> {
        let Some(m) = &self.marker else {
            return Ok(());
        };
        let (version, token) = m.current();
        self.marker_seen = version;
        let Some(token) = token else {
            return Ok(());
        };
        let now = self.clock.now();
        let ttl = self.p.redis.as_ref().and_then(|r| r.ttl).unwrap_or(0);
        let width = self.feature_names.len();
        let mut batches = Vec::new();
        for (&p, part) in self.parts.iter_mut() {
            if part.image_token.as_deref() == Some(token.as_str()) {
                continue;
            }
            part.image_token = Some(token.clone());
            if part.image.is_empty() {
                continue;
            }
            tracing::info!(pipeline = %self.p.name, partition = p, keys = part.image.len(), "writing the partition's latest online panes again");
            batches.extend(part.image.batches(width, p as u32, now, ttl, 2048));
        }
        for (panes, generations) in batches {
            self.metrics.online_rewrites.inc_by(panes.len() as u64);
            self.offer_online(OnlineMsg::Panes(OnlineBatch {
                panes,
                generations,
                emitted: Instant::now(),
                rewrite: true,
            }))?;
        }
        Ok(())
    }

    /// Feeds the records of a JSON-lines file through the same path as
    /// Kafka records (as partition 0, offsets = line numbers): decode,
    /// engine, Parquet, Redis, checkpoints. At the end of the file every
    /// window fires and a final checkpoint is written. Returns the number
    /// of records read (benchmarks of the daemon's own path). `rate` caps
    /// the records per second (0: as fast as the path goes).
    pub fn run_file(self, path: &std::path::Path, rate: u64) -> anyhow::Result<u64> {
        let opened = crate::source::file::open(path, 4096, &[])?;
        let crate::source::file::Input::Lines(mut lines) = opened.input else {
            anyhow::bail!("the daemon benchmark reads JSON lines");
        };
        self.run_lines(
            |buf| {
                let Some(line) = lines.next_line()? else {
                    return Ok(false);
                };
                buf.extend_from_slice(line.bytes);
                Ok(true)
            },
            rate,
            true,
        )
    }

    /// Like [`Self::run_file`], with records from `next` (which appends one
    /// to the buffer, or returns false at the end). `finish`: close every
    /// window at the end, as the end of a bounded input does (else what is
    /// open is only checkpointed).
    pub fn run_lines(
        mut self,
        mut next: impl FnMut(&mut Vec<u8>) -> anyhow::Result<bool>,
        rate: u64,
        finish: bool,
    ) -> anyhow::Result<u64> {
        self.file_mode = true;
        let c = self.store.load(0)?;
        self.load_partition(0, c)?;
        let started = Instant::now();
        let mut last_tick = Instant::now();
        let mut last_ckpt = Instant::now();
        let mut n: i64 = 0;
        let mut buf = Vec::new();
        loop {
            buf.clear();
            if !next(&mut buf)? {
                break;
            }
            self.on_record(0, n, None, Some(&buf))?;
            n += 1;
            // Slow paced runs look at the clock more often (at 10,000
            // records/s, 1,024 records are a tenth of a second).
            let every = if rate > 0 && rate < 100_000 { 64 } else { 1024 };
            if n % every == 0 {
                if rate > 0 {
                    let due = Duration::from_secs_f64(n as f64 / rate as f64);
                    let el = started.elapsed();
                    if due > el {
                        // Idle until the next events are due: hand what is
                        // buffered to the writer now, as the consume loop
                        // does when a poll returns nothing.
                        self.send_online(true)?;
                        std::thread::sleep(due - el);
                    }
                }
                if last_tick.elapsed() >= Duration::from_millis(50) {
                    last_tick = Instant::now();
                    let now = self.clock.now();
                    self.engine.set_wall_clock(now);
                    self.engine.set_processing_time(now, &mut self.out);
                }
                if last_ckpt.elapsed() >= self.opts.checkpoint_interval {
                    self.checkpoint()?;
                    last_ckpt = Instant::now();
                }
            }
            self.route()?;
        }
        if finish {
            self.engine.finish(&mut self.out);
        }
        self.route()?;
        self.checkpoint()?;
        Ok(n as u64)
    }

    /// Runs until `shutdown` fires, then checkpoints and returns.
    pub fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        self.consumer.subscribe(&[&self.topic])?;
        let mut last_ckpt = Instant::now();
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            let turn = self.step().and_then(|()| {
                if last_ckpt.elapsed() >= self.opts.checkpoint_interval && self.checkpoint()? {
                    last_ckpt = Instant::now();
                }
                Ok(())
            });
            match turn {
                Err(e) if e.downcast_ref::<StorageFailure>().is_some() => self.storage_failed(e),
                other => other?,
            }
        }
        // Drain: take no more records; what the engine holds stays in the
        // checkpoint, and the sinks get everything emitted so far.
        self.stopping = true;
        self.pause_all();
        self.route()?;
        while !self.stash.is_empty() {
            self.step()?;
        }
        self.checkpoint()?;
        tracing::info!(pipeline = %self.p.name, "stopped after a final checkpoint");
        Ok(())
    }

    /// One turn of the consume loop: give the writer what waits for it,
    /// poll (records, end of partition, rebalances), and on time: the
    /// processing-time clock, the watermark gauges and the lag.
    fn step(&mut self) -> anyhow::Result<()> {
        if self
            .rewound
            .as_ref()
            .is_some_and(|r| r.retry_at <= Instant::now())
        {
            self.reload_rewound()?;
        }
        if self
            .marker
            .as_ref()
            .is_some_and(|m| m.version() != self.marker_seen)
        {
            self.rewrite_images()?;
        }
        if !self.stash.is_empty() {
            self.wait_for_writer(Duration::from_millis(50));
            self.retry_stash()?;
        }
        // Paused, the poll only serves rebalances and errors: do not wait in it.
        let wait = if self.paused {
            Duration::ZERO
        } else {
            Duration::from_millis(20)
        };
        let polled = match self.consumer.poll(wait) {
            None => Polled::Nothing,
            Some(Ok(msg)) => {
                // Copied into a reused buffer: the message borrows the
                // consumer, which rebalance handling needs next.
                self.record.clear();
                if let Some(b) = msg.payload() {
                    self.record.extend_from_slice(b);
                }
                Polled::Record {
                    p: msg.partition(),
                    offset: msg.offset(),
                    ts: msg.timestamp().to_millis().map(|ms| ms * 1000),
                    has_payload: msg.payload().is_some(),
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => Polled::Eof(p),
            Some(Err(e)) => Polled::Error(e),
        };
        // Rebalance callbacks ran inside poll: apply them before the record.
        self.handle_rebalances()?;
        match polled {
            Polled::Nothing => self.send_online(true)?,
            Polled::Record {
                p,
                offset,
                ts,
                has_payload,
            } => {
                let buf = std::mem::take(&mut self.record);
                let r = self.on_record(p, offset, ts, has_payload.then_some(buf.as_slice()));
                self.record = buf;
                r?
            }
            Polled::Eof(p) => {
                if let Some(part) = self.parts.get_mut(&p) {
                    part.at_eof = true;
                }
                self.engine.set_end_of_log(p as u32, true, &mut self.out);
            }
            Polled::Error(e) => {
                tracing::warn!(pipeline = %self.p.name, error = %e, "kafka error");
            }
        }
        if self.last_tick.elapsed() >= Duration::from_millis(50) {
            self.last_tick = Instant::now();
            let now = self.clock.now();
            self.engine.set_wall_clock(now);
            self.engine.set_processing_time(now, &mut self.out);
            let w = self.engine.watermark();
            self.metrics
                .watermark_us
                .store(w, std::sync::atomic::Ordering::Relaxed);
            if w > i64::MIN && w < i64::MAX {
                self.metrics.watermark.set(w as f64 / 1e6);
                self.metrics.watermark_lag.set((now - w) as f64 / 1e6);
            }
        }
        self.route()?;
        if self.last_lag.elapsed() >= Duration::from_secs(2) {
            self.last_lag = Instant::now();
            self.update_lag();
        }
        Ok(())
    }

    /// Pauses every assigned partition (backpressure, or draining).
    fn pause_all(&mut self) {
        if self.file_mode {
            return;
        }
        self.pause_assigned();
        if !self.paused {
            self.paused = true;
            self.metrics.consumer_paused.set(1);
            if !self.stopping {
                self.metrics.backpressure_pauses.inc();
                // At most one line a minute: a slow store pauses often.
                if self
                    .pause_logged
                    .is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
                {
                    self.pause_logged = Some(Instant::now());
                    tracing::info!(pipeline = %self.p.name, pauses = self.metrics.backpressure_pauses.get(), "online store behind: partitions paused until the writer catches up");
                } else {
                    tracing::debug!(pipeline = %self.p.name, "online store behind: partitions paused");
                }
            }
        }
    }

    fn pause_assigned(&mut self) {
        let mut tpl = TopicPartitionList::new();
        for &p in self.parts.keys() {
            tpl.add_partition(&self.topic, p);
        }
        if tpl.count() > 0 {
            if let Err(e) = self.consumer.pause(&tpl) {
                tracing::warn!(pipeline = %self.p.name, error = %e, "pausing partitions");
            }
        }
    }

    /// Resumes the assigned partitions once the writer took everything.
    fn resume_all(&mut self) {
        if !self.paused || self.stopping {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for &p in self.parts.keys() {
            tpl.add_partition(&self.topic, p);
        }
        if tpl.count() > 0 {
            if let Err(e) = self.consumer.resume(&tpl) {
                tracing::warn!(pipeline = %self.p.name, error = %e, "resuming partitions");
                return;
            }
        }
        self.paused = false;
        self.metrics.consumer_paused.set(0);
        tracing::debug!(pipeline = %self.p.name, "online store caught up: partitions resumed");
    }

    /// Hands `msg` to the online writer. Benchmarks fed from a file block
    /// when the writer is full; the consumer stashes the message, pauses
    /// its partitions and goes on polling.
    fn offer_online(&mut self, msg: OnlineMsg) -> anyhow::Result<()> {
        let Some(tx) = &self.online else {
            return Ok(());
        };
        if self.file_mode {
            return tx
                .blocking_send(msg)
                .map_err(|_| anyhow::anyhow!("the redis writer stopped"));
        }
        if !self.stash.is_empty() {
            self.stash.push_back(msg);
            return Ok(());
        }
        match tx.try_send(msg) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(msg)) => {
                self.stash.push_back(msg);
                self.pause_all();
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                anyhow::bail!("the redis writer stopped")
            }
        }
    }

    /// Moves stashed messages to the writer while it has room; resumes
    /// consumption when none is left.
    fn retry_stash(&mut self) -> anyhow::Result<()> {
        let Some(tx) = &self.online else {
            self.stash.clear();
            return Ok(());
        };
        while let Some(msg) = self.stash.pop_front() {
            match tx.try_send(msg) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(msg)) => {
                    self.stash.push_front(msg);
                    return Ok(());
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    anyhow::bail!("the redis writer stopped")
                }
            }
        }
        self.resume_all();
        Ok(())
    }

    /// Waits at most `limit` for the writer to have room (returns at once
    /// when it has).
    fn wait_for_writer(&mut self, limit: Duration) {
        let (Some(tx), Some(rt)) = (&self.online, &self.runtime) else {
            std::thread::sleep(Duration::from_millis(5));
            return;
        };
        let Some(msg) = self.stash.pop_front() else {
            return;
        };
        let tx = tx.clone();
        let sent = rt.block_on(async move {
            match tokio::time::timeout(limit, tx.reserve()).await {
                Ok(Ok(permit)) => {
                    permit.send(msg);
                    None
                }
                _ => Some(msg),
            }
        });
        if let Some(msg) = sent {
            self.stash.push_front(msg);
        }
    }

    fn handle_rebalances(&mut self) -> anyhow::Result<()> {
        let errors: Vec<String> =
            std::mem::take(&mut *self.consumer.context().errors.lock().expect("lock"));
        for e in errors {
            tracing::error!(pipeline = %self.p.name, error = %e, "rebalance");
        }
        if let Some(e) = self.consumer.context().fatal.lock().expect("lock").take() {
            anyhow::bail!("{e}");
        }
        let events: Vec<Reb> =
            std::mem::take(&mut *self.consumer.context().events.lock().expect("lock"));
        // A storage failure does not stop the rebalance: every partition is
        // still dropped or taken (a partition that could not be loaded
        // waits among the rewound ones), and the failure is returned last.
        let mut failed: Option<anyhow::Error> = None;
        let mut keep = |r: anyhow::Result<()>| -> anyhow::Result<()> {
            match r {
                Err(e) if e.downcast_ref::<StorageFailure>().is_some() => {
                    failed.get_or_insert(e);
                    Ok(())
                }
                other => other,
            }
        };
        for ev in events {
            match ev {
                Reb::Revoke(ps) => {
                    keep(self.route())?;
                    for p in ps {
                        if let Some(r) = &mut self.rewound {
                            r.parts.remove(&p);
                        }
                        self.drop_partition(p);
                    }
                }
                Reb::Assign(list) => {
                    for (p, c) in list {
                        if let Some(r) = &mut self.rewound {
                            r.parts.remove(&p);
                        }
                        keep(self.load_partition(p, c))?;
                    }
                    // New partitions start fetching: hold them too while
                    // the writer is behind or the worker drains.
                    if self.paused {
                        self.pause_assigned();
                    }
                }
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn drop_partition(&mut self, p: i32) {
        let Some(mut part) = self.parts.remove(&p) else {
            return;
        };
        self.engine.revoke(p as u32, &mut self.out);
        if let Some(mut s) = part.sink.take() {
            if let Ok(files) = s.take_pending() {
                for (tmp, _) in files {
                    let _ = std::fs::remove_file(tmp);
                }
            }
        }
        if let Some(d) = &mut part.dead {
            d.discard();
        }
        tracing::info!(pipeline = %self.p.name, partition = p, "partition revoked");
    }

    /// Another instance claimed partition `p` (its checkpoint in object
    /// storage moved past the version this worker knew): this worker is a
    /// zombie for it. The partition's unpublished epoch is dropped and it
    /// stays paused until the group assigns it here again.
    fn fenced(&mut self, p: i32, e: &CheckpointError) {
        self.metrics.fenced_partitions.inc();
        tracing::warn!(pipeline = %self.p.name, partition = p, error = %e, "partition claimed by another instance: its unpublished work is dropped and it is paused");
        self.drop_partition(p);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.topic, p);
        if let Err(e) = self.consumer.pause(&tpl) {
            tracing::warn!(pipeline = %self.p.name, error = %e, "pausing partitions");
        }
    }

    /// The checkpoint that claims partition `p` from its loaded checkpoint
    /// `c`: the same state, offsets and files to publish, the generation
    /// raised (1 without a checkpoint).
    fn claim_of(&self, p: i32, c: Option<Checkpoint>) -> Checkpoint {
        let keep_image = self.marker.is_some();
        let fresh = Checkpoint {
            version: CHECKPOINT_VERSION,
            pipeline: self.p.name.clone(),
            topic: self.topic.clone(),
            partition: p,
            generation: 1,
            next_offset: None,
            epoch: 0,
            state: None,
            pending_files: Vec::new(),
            online_image: Vec::new(),
            online_token: None,
        };
        match c {
            None => fresh,
            Some(c) => Checkpoint {
                generation: c.generation + 1,
                next_offset: c.next_offset,
                epoch: c.epoch,
                state: c.state,
                pending_files: c.pending_files,
                online_image: if keep_image {
                    c.online_image
                } else {
                    Vec::new()
                },
                online_token: c.online_token.filter(|_| keep_image),
                ..fresh
            },
        }
    }

    /// Takes partition `p` from its checkpoint. When storage fails on the
    /// way, the partition waits among the rewound ones (paused) and is
    /// loaded again with them.
    fn load_partition(&mut self, p: i32, c: Option<Checkpoint>) -> anyhow::Result<()> {
        let r = self.load_partition_now(p, c);
        if let Err(e) = &r {
            if e.downcast_ref::<StorageFailure>().is_some() && !self.parts.contains_key(&p) {
                let rewound = self.rewound.get_or_insert_with(|| Rewound {
                    parts: BTreeMap::new(),
                    retry_at: Instant::now(),
                    backoff: Duration::from_millis(500),
                });
                rewound.parts.entry(p).or_insert(None);
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition(&self.topic, p);
                if let Err(e) = self.consumer.pause(&tpl) {
                    tracing::warn!(pipeline = %self.p.name, error = %e, "pausing partitions");
                }
            }
        }
        r
    }

    fn load_partition_now(&mut self, p: i32, mut c: Option<Checkpoint>) -> anyhow::Result<()> {
        if self.parts.contains_key(&p) {
            return Ok(());
        }
        // Claim the partition first: store its checkpoint again with a
        // raised generation (before any pane of it reaches Redis, and, in
        // object storage, fencing off a former owner that still runs)
        // before touching any of its files. The claim carries the files
        // the loaded checkpoint publishes, so a crash before they are
        // rolled forward below leaves them listed.
        let mut tries = 0;
        let ck = loop {
            let ck = self.claim_of(p, c.take());
            match self.store.store(&ck) {
                Ok(()) => break ck,
                // Written by another instance between our load and this
                // claim: load what it wrote and claim again.
                Err(CheckpointError::Fenced { .. }) if tries < 3 => {
                    tries += 1;
                    c = self.store.load(p).map_err(storage)?;
                }
                Err(e @ CheckpointError::Fenced { .. }) => {
                    self.fenced(p, &e);
                    return Ok(());
                }
                Err(e) => return Err(storage(e)),
            }
        };
        let (generation, epoch, next_offset) = (ck.generation, ck.epoch, ck.next_offset);
        let image = OnlineImage::from_entries(&ck.online_image);
        let image_token = ck.online_token.clone();
        // Roll forward what the checkpoint published (a crash may have come
        // between storing it and moving the files into place), then remove
        // every other unpublished file of the partition.
        crate::sink::publish(&ck.pending_files).map_err(storage)?;
        let prefix = format!("p{p}o");
        let mut sink = self.parquet_root.as_ref().map(|root| {
            ParquetSink::new(root, &self.plan, &run_id(p, epoch, next_offset))
                .deferred(self.opts.max_file_rows)
        });
        let mut removed = 0;
        if let Some(s) = &mut sink {
            removed += s.remove_unpublished(&prefix, &[]);
        }
        // The group's directory under each store: `<root>/<pipeline>` for
        // Parquet and for dead letters alike.
        for m in self.data_mirror.iter().chain(&self.dead_mirror) {
            let dir = std::path::Path::new(&m.url).join(&self.p.name);
            removed += crate::sink::remove_unpublished_objects(&dir, &prefix).map_err(storage)?;
        }
        let dead = match &self.dead {
            DeadLetters::Files { dir } => {
                removed +=
                    crate::sink::dead_letter::remove_unpublished(dir, &self.p.name, &prefix, &[]);
                Some(DeadLetterWriter::new(
                    dir,
                    &self.p.name,
                    &run_id(p, epoch, next_offset),
                ))
            }
            DeadLetters::Topic { .. } => None,
        };
        if removed > 0 {
            tracing::info!(pipeline = %self.p.name, partition = p, removed, "removed unpublished files of a crashed or revoked run");
        }
        self.engine
            .assign(p as u32, ck.state.as_ref(), &mut self.out)
            .map_err(|e| anyhow::anyhow!("checkpoint of partition {p}: {e}"))?;
        self.parts.insert(
            p,
            Part {
                generation,
                epoch,
                next_offset,
                sink,
                dead,
                at_eof: false,
                high_watermark: None,
                first_offset: None,
                image,
                image_token,
            },
        );
        // Restored from before the store lost its data: write it again.
        if self.marker.is_some() {
            self.rewrite_images()?;
        }
        tracing::info!(pipeline = %self.p.name, partition = p, generation, ?next_offset, "partition assigned");
        Ok(())
    }

    fn on_record(
        &mut self,
        p: i32,
        offset: i64,
        ts: Option<Micros>,
        payload: Option<&[u8]>,
    ) -> anyhow::Result<()> {
        let Some(part) = self.parts.get_mut(&p) else {
            // Not (or no longer) ours: its owner reads it from its checkpoint.
            return Ok(());
        };
        if part.next_offset.is_some_and(|n| offset < n) {
            return Ok(()); // already in the restored state
        }
        part.next_offset = Some(offset + 1);
        part.first_offset.get_or_insert(offset);
        self.metrics.records.inc();
        if part.at_eof {
            part.at_eof = false;
            self.engine.set_end_of_log(p as u32, false, &mut self.out);
        }
        let refusal = match payload {
            None => Some(Refusal::new(
                Reason::InvalidJson,
                "record has no value (a tombstone)",
            )),
            Some(b) if b.len() > MAX_RECORD_BYTES => Some(Refusal::new(
                Reason::Oversized,
                format!(
                    "record value of {} bytes exceeds {MAX_RECORD_BYTES}",
                    b.len()
                ),
            )),
            Some(b) => {
                self.dec.set_external_time(ts);
                match self.dec.decode_json(b) {
                    Ok(ev) => match self.engine.process(p as u32, &ev, &mut self.out) {
                        Ok(()) => {
                            self.metrics.events.inc();
                            // Kept, and missed some of its hopping windows.
                            self.engine.take_partial_refusal(p as u32)
                        }
                        Err(r) => Some(r),
                    },
                    Err(r) => Some(r),
                }
            }
        };
        if let Some(r) = refusal {
            let pos = Position::Kafka {
                topic: self.topic.clone(),
                partition: p,
                offset,
            };
            self.dead_letter(p, &r, &pos, payload.unwrap_or_default())?;
        }
        Ok(())
    }

    fn dead_letter(
        &mut self,
        p: i32,
        r: &Refusal,
        pos: &Position,
        raw: &[u8],
    ) -> anyhow::Result<()> {
        self.metrics
            .dead_letters
            .get_or_create(&vec![("reason".to_string(), r.reason.as_str().to_string())])
            .inc();
        if r.reason == Reason::TooLate {
            self.metrics.late_dropped.inc();
        }
        match &mut self.dead {
            DeadLetters::Files { .. } => {
                if let Some(w) = self.parts.get_mut(&p).and_then(|x| x.dead.as_mut()) {
                    w.write(r, pos, raw).map_err(storage)?;
                }
            }
            DeadLetters::Topic { producer, topic } => {
                let line = dead_letter_json(&self.p.name, r, pos, raw);
                let mut rec = BaseRecord::<(), str>::to(topic).payload(&line);
                loop {
                    match producer.send(rec) {
                        Ok(()) => break,
                        Err((
                            KafkaError::MessageProduction(
                                rdkafka::types::RDKafkaErrorCode::QueueFull,
                            ),
                            back,
                        )) => {
                            producer.poll(Duration::from_millis(50));
                            rec = back;
                        }
                        Err((e, _)) => return Err(e.into()),
                    }
                }
                producer.poll(Duration::ZERO);
            }
        }
        Ok(())
    }

    /// Sends emitted panes to the sinks.
    fn route(&mut self) -> anyhow::Result<()> {
        if self.out.is_empty() {
            return self.send_online(false);
        }
        let emitted = Instant::now();
        let n = self.out.len() as u64;
        self.metrics.panes.inc_by(n);
        self.metrics.late_kept.inner().store(
            self.engine.stats().late_kept,
            std::sync::atomic::Ordering::Relaxed,
        );
        let started = Instant::now();
        let online = self.online.is_some();
        for (m, values) in self.out.iter() {
            let p = m.partition as i32;
            let Some(part) = self.parts.get_mut(&p) else {
                continue;
            };
            if let Some(s) = &mut part.sink {
                s.write_row(m, values).map_err(storage)?;
            }
            if online && !m.retraction {
                if self.online_buf.panes.is_empty() {
                    self.online_buf.emitted = emitted;
                }
                self.online_buf.panes.push(m.clone(), values);
                self.online_buf.generations.push(part.generation);
                if self.marker.is_some() {
                    part.image.note(m, values, part.generation);
                }
            }
        }
        self.out.clear();
        self.metrics.parquet_write.record(started.elapsed(), 1);
        self.metrics.offline_rows.inc_by(n);
        self.metrics
            .last_offline_write
            .store(self.clock.now(), std::sync::atomic::Ordering::Relaxed);
        self.send_online(false)
    }

    /// Hands the buffered online panes to the writer when there are enough
    /// of them, when the oldest waited 2 ms, or when `force`d.
    fn send_online(&mut self, force: bool) -> anyhow::Result<()> {
        if self.online.is_none() {
            return Ok(());
        }
        let b = &self.online_buf;
        if b.panes.is_empty()
            || !(force || b.panes.len() >= 2048 || b.emitted.elapsed() >= Duration::from_millis(2))
        {
            return Ok(());
        }
        let batch = std::mem::replace(
            &mut self.online_buf,
            OnlineBatch {
                panes: PaneBuf::new(self.feature_names.len()),
                generations: Vec::new(),
                emitted: Instant::now(),
                rewrite: false,
            },
        );
        self.offer_online(OnlineMsg::Panes(batch))
    }

    /// Flush sinks, write checkpoints, publish files, commit offsets.
    ///
    /// The state of every partition is taken first (its epoch ends there),
    /// then the online writer flushes everything emitted up to that point
    /// while the loop goes on polling (a slow Redis pauses the partitions
    /// but never stops the group's liveness), and only then are the
    /// checkpoints stored and their files published. A partition revoked
    /// meanwhile keeps its last stored checkpoint and its new files are
    /// removed. Returns false, checkpointing nothing, while the writer is
    /// behind (the online store is slow or down): the next turn tries again.
    pub fn checkpoint(&mut self) -> anyhow::Result<bool> {
        if self.in_checkpoint {
            return Ok(false);
        }
        self.route()?;
        self.send_online(true)?;
        if !self.stash.is_empty() {
            return Ok(false);
        }
        struct Taken {
            generation: u64,
            ck: Checkpoint,
            pending: Vec<(PathBuf, PathBuf)>,
        }
        let mut taken = Vec::new();
        let ps: Vec<i32> = self.parts.keys().copied().collect();
        for p in ps {
            let state = self
                .engine
                .export(p as u32)
                .expect("every partition of the worker has an engine");
            let part = self.parts.get_mut(&p).expect("listed");
            let mut pending = match &mut part.sink {
                Some(s) => s.take_pending().map_err(storage)?,
                None => Vec::new(),
            };
            if let Some(d) = &mut part.dead {
                pending.extend(d.close_deferred().map_err(storage)?);
            }
            // Files bound for object storage go up now, under temporary
            // names: the checkpoint lists them where any next owner finds them.
            let mirrors: Vec<&Mirror> = self.data_mirror.iter().chain(&self.dead_mirror).collect();
            let pending = crate::sink::upload_pending(&mirrors, pending).map_err(storage)?;
            part.epoch += 1;
            if self.marker.is_some() {
                let ttl = self.p.redis.as_ref().and_then(|r| r.ttl).unwrap_or(0);
                part.image.expire(self.clock.now(), ttl);
            }
            let ck = Checkpoint {
                version: CHECKPOINT_VERSION,
                pipeline: self.p.name.clone(),
                topic: self.topic.clone(),
                partition: p,
                generation: part.generation,
                next_offset: part.next_offset,
                epoch: part.epoch,
                state: Some(state),
                pending_files: pending.clone(),
                online_image: part.image.entries(),
                online_token: part.image_token.clone(),
            };
            let next_run = run_id(p, part.epoch, part.next_offset);
            if let Some(s) = &mut part.sink {
                s.set_run_id(&next_run);
            }
            if let DeadLetters::Files { dir } = &self.dead {
                part.dead = Some(DeadLetterWriter::new(dir, &self.p.name, &next_run));
            }
            taken.push(Taken {
                generation: part.generation,
                ck,
                pending,
            });
        }
        if !taken.is_empty() {
            super::crash_points::point("checkpoint.taken");
        }
        if self.online.is_some() {
            let (done_tx, mut done_rx) = tokio::sync::oneshot::channel();
            self.offer_online(OnlineMsg::Flush(done_tx))?;
            self.in_checkpoint = true;
            let waited = loop {
                match done_rx.try_recv() {
                    Ok(()) => break Ok(()),
                    Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                        break Err(anyhow::anyhow!("the redis writer stopped"))
                    }
                    Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {
                        if self.file_mode {
                            std::thread::sleep(Duration::from_millis(1));
                        } else if let Err(e) = self.step() {
                            break Err(e);
                        }
                    }
                }
            };
            self.in_checkpoint = false;
            waited?;
        }
        self.flush_dead_letters()?;
        let mut commit = TopicPartitionList::new();
        let mut stored = BTreeMap::new();
        for t in taken {
            let p = t.ck.partition;
            let still_ours = self
                .parts
                .get(&p)
                .is_some_and(|part| part.generation == t.generation);
            if !still_ours {
                crate::sink::discard(&t.pending);
                continue;
            }
            match self.store.store(&t.ck) {
                Ok(()) => {}
                Err(e @ CheckpointError::Fenced { .. }) => {
                    crate::sink::discard(&t.pending);
                    self.fenced(p, &e);
                    continue;
                }
                Err(e) => return Err(storage(e)),
            }
            super::crash_points::point("checkpoint.stored");
            stored.insert(p, t.ck.next_offset.unwrap_or(-1));
            crate::sink::publish(&t.pending).map_err(storage)?;
            if let Some(o) = t.ck.next_offset {
                commit.add_partition_offset(&self.topic, p, Offset::Offset(o))?;
            }
        }
        super::crash_points::point("checkpoint.published");
        if commit.count() > 0 && !self.file_mode {
            if let Err(e) = self.consumer.commit(&commit, CommitMode::Async) {
                tracing::warn!(pipeline = %self.p.name, error = %e, "offset commit failed (the checkpoint holds the offsets)");
            }
        }
        self.metrics.checkpoints.inc();
        let caught_up = self
            .storage_reached
            .iter()
            .all(|(p, &o)| !self.parts.contains_key(p) || stored.get(p).is_some_and(|&s| s >= o));
        if self.rewound.is_none() && caught_up {
            self.storage_reached.clear();
            if let Some(since) = self.storage_failing_since.take() {
                self.metrics.storage_failing.set(0);
                tracing::info!(pipeline = %self.p.name, lasted_s = since.elapsed().as_secs_f64(), "storage writable again: checkpoint stored");
            }
        }
        Ok(true)
    }

    /// A storage write failed: every partition goes back to its last
    /// stored checkpoint (what it computed since is dropped, its temporary
    /// files removed, its Redis panes superseded by the recomputation's
    /// higher generation) and is paused until [`Worker::reload_rewound`].
    fn storage_failed(&mut self, e: anyhow::Error) {
        self.metrics.storage_errors.inc();
        self.metrics.storage_failing.set(1);
        if self.storage_failing_since.is_none() {
            self.storage_failing_since = Some(Instant::now());
            tracing::warn!(pipeline = %self.p.name, error = %format!("{e:#}"), "storage write failed (full disk?): partitions rewound to their last checkpoint and paused; retrying");
        } else {
            tracing::debug!(pipeline = %self.p.name, error = %format!("{e:#}"), "storage write failed again");
        }
        let backoff = self
            .rewound
            .as_ref()
            .map_or(Duration::from_millis(500), |r| {
                (r.backoff * 2).min(Duration::from_secs(10))
            });
        let mut rewound = self.rewound.take().map(|r| r.parts).unwrap_or_default();
        let mut tpl = TopicPartitionList::new();
        let ps: Vec<i32> = self.parts.keys().copied().collect();
        for p in ps {
            let Some(mut part) = self.parts.remove(&p) else {
                continue;
            };
            self.engine.revoke(p as u32, &mut self.out);
            let prefix = format!("p{p}o");
            if let Some(s) = part.sink.take() {
                s.remove_unpublished(&prefix, &[]);
            }
            if let Some(d) = &mut part.dead {
                d.discard();
            }
            rewound.insert(p, part.first_offset);
            if let Some(o) = part.next_offset {
                let r = self.storage_reached.entry(p).or_insert(o);
                *r = (*r).max(o);
            }
            tpl.add_partition(&self.topic, p);
        }
        // Panes of the dropped epochs: the recomputation emits them again.
        self.out.clear();
        if tpl.count() > 0 {
            if let Err(e) = self.consumer.pause(&tpl) {
                tracing::warn!(pipeline = %self.p.name, error = %e, "pausing partitions");
            }
        }
        self.rewound = Some(Rewound {
            parts: rewound,
            retry_at: Instant::now() + backoff,
            backoff,
        });
    }

    /// Reloads the rewound partitions from their stored checkpoints and
    /// reads them again from the checkpoints' offsets.
    fn reload_rewound(&mut self) -> anyhow::Result<()> {
        let Some(r) = &self.rewound else {
            return Ok(());
        };
        let todo: Vec<(i32, Option<i64>)> = r.parts.iter().map(|(&p, &o)| (p, o)).collect();
        for (p, first) in todo {
            let c = self.store.load(p).map_err(storage)?;
            let from = c.as_ref().and_then(|c| c.next_offset).or(first);
            if let Some(o) = from {
                self.consumer
                    .seek(&self.topic, p, Offset::Offset(o), Duration::from_secs(10))
                    .map_err(|e| {
                        storage(anyhow::anyhow!(
                            "seeking partition {p} back to offset {o}: {e}"
                        ))
                    })?;
            }
            self.load_partition(p, c)?;
            if let Some(r) = &mut self.rewound {
                r.parts.remove(&p);
            }
            if !self.paused {
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition(&self.topic, p);
                if let Err(e) = self.consumer.resume(&tpl) {
                    tracing::warn!(pipeline = %self.p.name, error = %e, "resuming partitions");
                }
            }
        }
        self.rewound = None;
        Ok(())
    }

    /// Flushes the dead-letter topic's producer (file dead letters are
    /// published with the checkpoint).
    fn flush_dead_letters(&mut self) -> anyhow::Result<()> {
        if let DeadLetters::Topic { producer, .. } = &mut self.dead {
            producer.flush(Duration::from_secs(30))?;
        }
        Ok(())
    }

    /// Consumer lag per partition from the high watermarks of librdkafka's
    /// statistics: asking the broker here (`fetch_watermarks`) would stop
    /// consumption for a round trip per partition, which halved the
    /// consumption rate against a real broker.
    fn update_lag(&mut self) {
        let highs = self
            .consumer
            .context()
            .high_watermarks
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default();
        let mut total = 0;
        for (&p, part) in self.parts.iter_mut() {
            if let Some(&high) = highs.get(&p) {
                part.high_watermark = Some(high);
                let lag = (high - part.next_offset.unwrap_or(0)).max(0);
                total += lag;
                self.metrics
                    .consumer_lag
                    .get_or_create(&vec![("partition".to_string(), p.to_string())])
                    .set(lag);
            }
        }
        self.metrics
            .total_lag
            .store(total, std::sync::atomic::Ordering::Relaxed);
    }
}

/// File-name run id of a partition's epoch: the checkpoint epoch it
/// follows and the offset it starts at. Unique per epoch (two epochs can
/// start at one offset when a partition has no new records but its windows
/// keep firing), and the same when the same epoch is re-processed after a
/// crash.
fn run_id(p: i32, epoch: u64, next_offset: Option<i64>) -> String {
    format!("p{p}o{}e{epoch}", next_offset.unwrap_or(0))
}
