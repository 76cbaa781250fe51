//! Producing the standard data set into Kafka at a chosen rate (`rill gen
//! --kafka`, `rill demo`), keyed by `user_id` so that each user's events
//! stay on one partition.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use crate::gen::{write_json, GenOptions, Generator};

/// Produces `opts.events` events to every topic of `topics`, at most `rate`
/// events per second (0: as fast as the broker takes them), until done or
/// `stop` is set. Counts produced events in `sent`. `throttle(n)` is called
/// every 1,000 events and may wait (the demo waits for its consumers, since
/// the in-process broker keeps only a bounded tail of each partition).
pub fn produce(
    brokers: &str,
    topics: &[String],
    opts: GenOptions,
    rate: u64,
    stop: &AtomicBool,
    sent: &Arc<AtomicU64>,
    throttle: &dyn Fn(u64),
) -> anyhow::Result<u64> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "200000")
        .create()?;
    let started = Instant::now();
    let mut line = String::new();
    let mut n = 0u64;
    for ev in Generator::new(opts) {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        line.clear();
        write_json(&ev, &mut line);
        let payload = line.trim_end();
        let key = format!("u{}", ev.user);
        for t in topics {
            let mut rec = BaseRecord::<str, str>::to(t).key(&key).payload(payload);
            loop {
                match producer.send(rec) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        producer.poll(Duration::from_millis(10));
                        rec = back;
                    }
                    Err((e, _)) => return Err(e.into()),
                }
            }
        }
        n += 1;
        sent.store(n, Ordering::Relaxed);
        if n % 1000 == 0 {
            producer.poll(Duration::ZERO);
            throttle(n);
            if rate > 0 {
                let due = Duration::from_secs_f64(n as f64 / rate as f64);
                let el = started.elapsed();
                if due > el {
                    std::thread::sleep(due - el);
                }
            }
        }
    }
    producer.flush(Duration::from_secs(30))?;
    Ok(n)
}
