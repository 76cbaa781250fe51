//! The standard data set: a deterministic generator of transaction events.
//!
//! N events of `{user_id, merchant_id, category, event_type, amount,
//! event_time}` over a number of days, in arrival order; click events also
//! carry `page` (one of 200 pages) and `time_on_page` (seconds, log-normal
//! around 12 s, in milliseconds), drawn from a second generator so that the
//! other fields are those of the same seed without them. Users follow a
//! power law (Zipf, exponent 1.1); each event's time trails its arrival by
//! up to 20 s, and a small share (0.1% by default) trails by 2 to 10 minutes;
//! amounts are log-normal, in cents; event types are mostly click, view and
//! purchase, with a few refunds (negative amounts). The random generator is
//! xoshiro256** seeded through splitmix64, written here so that the same
//! seed gives the same bytes in every build.

use std::io::Write;
use std::sync::Arc;

use arrow_array::builder::{Float64Builder, StringBuilder, TimestampMillisecondBuilder};
use arrow_array::RecordBatch;
use arrow_schema::{DataType, Field, Schema, TimeUnit};

use crate::time::{
    write_rfc3339, Micros, MICROS_PER_DAY, MICROS_PER_MILLI, MICROS_PER_MIN, MICROS_PER_SEC,
};

/// Generator settings.
#[derive(Debug, Clone)]
pub struct GenOptions {
    pub events: u64,
    pub users: u32,
    pub merchants: u32,
    pub seed: u64,
    /// Arrival time of the first event.
    pub start: Micros,
    pub days: u32,
    /// Overrides `days`: the arrival times span this many microseconds
    /// (`rill demo` uses it so that event time follows the wall clock).
    pub span: Option<Micros>,
    /// Share of events late by 2 to 10 minutes.
    pub late_share: f64,
}

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions {
            events: 10_000_000,
            users: 100_000,
            merchants: 5_000,
            seed: 42,
            // 2026-01-05T00:00:00Z
            start: 1_767_571_200 * MICROS_PER_SEC,
            days: 7,
            span: None,
            late_share: 0.001,
        }
    }
}

/// xoshiro256**.
pub struct Rng([u64; 4]);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        Rng([next(), next(), next(), next()])
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    #[inline]
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [0, n).
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.unit();
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

const CATEGORIES: [&str; 12] = [
    "grocery",
    "electronics",
    "fashion",
    "travel",
    "dining",
    "fuel",
    "health",
    "home",
    "games",
    "books",
    "beauty",
    "sports",
];

/// One generated event.
#[derive(Debug, Clone, PartialEq)]
pub struct GenEvent {
    pub user: u32,
    pub merchant: u32,
    pub category: &'static str,
    pub event_type: &'static str,
    /// Amount in cents.
    pub amount_cents: i64,
    pub event_time: Micros,
    /// Click events: the page, and the milliseconds spent on it.
    pub page: Option<u32>,
    pub time_on_page_ms: u64,
}

/// The name of page `n` of the data set.
pub fn page_name(n: u32) -> String {
    match n {
        0 => "/".to_string(),
        1 => "/search".to_string(),
        2 => "/cart".to_string(),
        3 => "/checkout".to_string(),
        n => format!("/product/{n}"),
    }
}

/// The event stream, in arrival order.
pub struct Generator {
    opts: GenOptions,
    rng: Rng,
    /// Draws of the click fields only.
    clicks: Rng,
    cdf: Vec<f64>,
    i: u64,
    span: i64,
}

impl Generator {
    pub fn new(opts: GenOptions) -> Generator {
        let users = opts.users.max(1) as usize;
        let mut cdf = Vec::with_capacity(users);
        let mut acc = 0.0;
        for r in 0..users {
            acc += 1.0 / ((r + 1) as f64).powf(1.1);
            cdf.push(acc);
        }
        for c in cdf.iter_mut() {
            *c /= acc;
        }
        let span = opts.span.unwrap_or(opts.days as i64 * MICROS_PER_DAY);
        let rng = Rng::new(opts.seed);
        let clicks = Rng::new(opts.seed ^ 0x5eed_c11c_0000_0001);
        Generator {
            opts,
            rng,
            clicks,
            cdf,
            i: 0,
            span,
        }
    }

    fn user(&mut self) -> u32 {
        let u = self.rng.unit();
        let rank = self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1) as u64;
        // A fixed bijection so that popular users are not the low ids.
        let n = self.opts.users.max(1) as u64;
        let mut a = 7919 % n;
        while a == 0 || gcd(a, n) != 1 {
            a += 1;
        }
        ((rank * a + 12_345) % n) as u32
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl Iterator for Generator {
    type Item = GenEvent;

    fn next(&mut self) -> Option<GenEvent> {
        if self.i >= self.opts.events {
            return None;
        }
        let arrival = self.opts.start
            + ((self.i as i128 * self.span as i128) / self.opts.events.max(1) as i128) as i64;
        self.i += 1;
        let user = self.user();
        let merchant = self.rng.below(self.opts.merchants.max(1) as u64) as u32;
        let category = CATEGORIES[(merchant as usize * 7 + 3) % CATEGORIES.len()];
        let roll = self.rng.below(1000);
        let event_type = match roll {
            0..=599 => "click",
            600..=899 => "view",
            900..=994 => "purchase",
            _ => "refund",
        };
        let amount = (3.0 + 1.0 * self.rng.normal()).exp();
        let mut cents = ((amount * 100.0).round() as i64).max(1);
        if event_type == "refund" {
            cents = -cents;
        }
        let delay = if self.rng.unit() < self.opts.late_share {
            2 * MICROS_PER_MIN
                + self
                    .rng
                    .below((8 * MICROS_PER_MIN / MICROS_PER_MILLI) as u64) as i64
                    * MICROS_PER_MILLI
        } else {
            self.rng
                .below((20 * MICROS_PER_SEC / MICROS_PER_MILLI) as u64) as i64
                * MICROS_PER_MILLI
        };
        // Whole milliseconds, as the RFC 3339 text carries.
        let event_time = (arrival - delay).div_euclid(MICROS_PER_MILLI) * MICROS_PER_MILLI;
        let (page, time_on_page_ms) = if event_type == "click" {
            // Popular pages first: a few landing pages, then products.
            let r = self.clicks.unit();
            let page = (r * r * 200.0) as u32;
            let secs = (2.5 + 0.9 * self.clicks.normal()).exp();
            (Some(page), (secs * 1000.0).round() as u64)
        } else {
            (None, 0)
        };
        Some(GenEvent {
            user,
            merchant,
            category,
            event_type,
            amount_cents: cents,
            event_time,
            page,
            time_on_page_ms,
        })
    }
}

/// Appends the JSON line of an event (with its newline).
pub fn write_json(ev: &GenEvent, out: &mut String) {
    use std::fmt::Write as _;
    let sign = if ev.amount_cents < 0 { "-" } else { "" };
    let c = ev.amount_cents.unsigned_abs();
    let _ = write!(
        out,
        "{{\"user_id\":\"u{}\",\"merchant_id\":\"m{}\",\"category\":\"{}\",\"event_type\":\"{}\",\"amount\":{sign}{}.{:02},\"event_time\":\"",
        ev.user,
        ev.merchant,
        ev.category,
        ev.event_type,
        c / 100,
        c % 100
    );
    if let Some(p) = ev.page {
        out.truncate(out.len() - "\"event_time\":\"".len());
        let _ = write!(
            out,
            "\"page\":\"{}\",\"time_on_page\":{}.{:03},\"event_time\":\"",
            page_name(p),
            ev.time_on_page_ms / 1000,
            ev.time_on_page_ms % 1000
        );
    }
    write_rfc3339(out, ev.event_time, true);
    out.push_str("\"}\n");
}

/// Output encodings of `rill gen`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenFormat {
    Json,
    JsonGzip,
    JsonZstd,
    Parquet,
}

impl GenFormat {
    /// From a file name's extension.
    pub fn from_path(p: &std::path::Path) -> GenFormat {
        let s = p.to_string_lossy();
        if s.ends_with(".parquet") {
            GenFormat::Parquet
        } else if s.ends_with(".gz") {
            GenFormat::JsonGzip
        } else if s.ends_with(".zst") {
            GenFormat::JsonZstd
        } else {
            GenFormat::Json
        }
    }
}

/// Writes the data set as JSON lines to `out`; returns the number of events.
pub fn write_jsonl(
    opts: GenOptions,
    out: &mut dyn Write,
    mut progress: impl FnMut(u64),
) -> std::io::Result<u64> {
    let mut buf = String::with_capacity(1 << 20);
    let mut n = 0u64;
    for ev in Generator::new(opts) {
        write_json(&ev, &mut buf);
        n += 1;
        if buf.len() > (1 << 20) - 512 {
            out.write_all(buf.as_bytes())?;
            buf.clear();
            progress(n);
        }
    }
    out.write_all(buf.as_bytes())?;
    progress(n);
    Ok(n)
}

/// Writes the data set as a Parquet file (event_time as a UTC millisecond timestamp).
pub fn write_parquet(
    opts: GenOptions,
    out: std::fs::File,
    mut progress: impl FnMut(u64),
) -> Result<u64, parquet::errors::ParquetError> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Utf8, false),
        Field::new("merchant_id", DataType::Utf8, false),
        Field::new("category", DataType::Utf8, false),
        Field::new("event_type", DataType::Utf8, false),
        Field::new("amount", DataType::Float64, false),
        Field::new("page", DataType::Utf8, true),
        Field::new("time_on_page", DataType::Float64, true),
        Field::new(
            "event_time",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
    ]));
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .build();
    let mut w = parquet::arrow::ArrowWriter::try_new(out, schema.clone(), Some(props))?;
    let mut g = Generator::new(opts).peekable();
    let mut n = 0u64;
    let batch = 65_536;
    while g.peek().is_some() {
        let (mut u, mut m, mut c, mut e) = (
            StringBuilder::with_capacity(batch, batch * 6),
            StringBuilder::with_capacity(batch, batch * 5),
            StringBuilder::with_capacity(batch, batch * 8),
            StringBuilder::with_capacity(batch, batch * 6),
        );
        let mut a = Float64Builder::with_capacity(batch);
        let mut pg = StringBuilder::with_capacity(batch, batch * 6);
        let mut top = Float64Builder::with_capacity(batch);
        let mut t = TimestampMillisecondBuilder::with_capacity(batch).with_timezone("UTC");
        for ev in g.by_ref().take(batch) {
            u.append_value(format!("u{}", ev.user));
            m.append_value(format!("m{}", ev.merchant));
            c.append_value(ev.category);
            e.append_value(ev.event_type);
            // The same decimal the JSON text carries.
            let s = format!(
                "{}{}.{:02}",
                if ev.amount_cents < 0 { "-" } else { "" },
                ev.amount_cents.unsigned_abs() / 100,
                ev.amount_cents.unsigned_abs() % 100
            );
            a.append_value(s.parse().unwrap_or(0.0));
            match ev.page {
                Some(p) => {
                    pg.append_value(page_name(p));
                    top.append_value(ev.time_on_page_ms as f64 / 1000.0);
                }
                None => {
                    pg.append_null();
                    top.append_null();
                }
            }
            t.append_value(ev.event_time / MICROS_PER_MILLI);
            n += 1;
        }
        let rb = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(u.finish()),
                Arc::new(m.finish()),
                Arc::new(c.finish()),
                Arc::new(e.finish()),
                Arc::new(a.finish()),
                Arc::new(pg.finish()),
                Arc::new(top.finish()),
                Arc::new(t.finish()),
            ],
        )?;
        w.write(&rb)?;
        progress(n);
    }
    w.close()?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_bytes_and_shape() {
        let opts = GenOptions {
            events: 20_000,
            users: 1000,
            ..Default::default()
        };
        let mut a = Vec::new();
        let mut b = Vec::new();
        write_jsonl(opts.clone(), &mut a, |_| {}).expect("memory");
        write_jsonl(opts.clone(), &mut b, |_| {}).expect("memory");
        assert_eq!(a, b);
        let evs: Vec<GenEvent> = Generator::new(opts.clone()).collect();
        assert_eq!(evs.len(), 20_000);
        // Times trail arrival: never more than 10 minutes behind the max so far, never ahead of the span.
        let mut max = i64::MIN;
        let mut late = 0;
        for e in &evs {
            if e.event_time < max.saturating_sub(20 * MICROS_PER_SEC) {
                late += 1;
            }
            assert!(e.event_time >= max.saturating_sub(10 * MICROS_PER_MIN + MICROS_PER_SEC));
            max = max.max(e.event_time);
        }
        assert!(late > 0 && late < 100, "late events: {late}");
        // Power law: the most popular user has far more than the average.
        let mut counts = vec![0u32; 1000];
        evs.iter().for_each(|e| counts[e.user as usize] += 1);
        let top = *counts.iter().max().expect("users");
        assert!(top > 20 * 20, "top user has {top}");
        let refunds = evs.iter().filter(|e| e.event_type == "refund").count();
        assert!(refunds > 0 && refunds < evs.len() / 50);
        let text = String::from_utf8(a).expect("utf8");
        let first: serde_json::Value =
            serde_json::from_str(text.lines().next().expect("a line")).expect("json");
        assert!(first["event_time"].as_str().expect("string").ends_with('Z'));
    }
}
