//! Freshness: how far behind real time a pipeline's features are, and
//! whether its declared `freshness_sla` holds.
//!
//! The figures come from the daemon (its own metrics, or the status each
//! daemon instance publishes in Redis for `rill serve`); the judgement is
//! made here, against an injected clock, so that it is testable.
//!
//! The SLA holds while the watermark lag (now minus the watermark) is at most
//! the SLA. Before a pipeline has a watermark its state is `unknown`.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::config::Pipeline;
use crate::time::{format_rfc3339, Micros};

/// What a running pipeline reports (epoch microseconds; `None`: not yet).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub watermark: Option<Micros>,
    pub last_online_write: Option<Micros>,
    pub last_offline_write: Option<Micros>,
    /// Messages behind the end of the assigned partitions.
    pub consumer_lag: Option<i64>,
    /// When the report was made (wall clock).
    pub at: Micros,
}

impl Report {
    /// Combines the reports of several instances of one pipeline (each owns
    /// some partitions): the slowest watermark, the latest writes, the sum
    /// of the lags.
    pub fn merge(reports: &[Report]) -> Option<Report> {
        let first = reports.first()?;
        let mut r = *first;
        for x in &reports[1..] {
            r.watermark = match (r.watermark, x.watermark) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            r.last_online_write = r.last_online_write.max(x.last_online_write);
            r.last_offline_write = r.last_offline_write.max(x.last_offline_write);
            r.consumer_lag = match (r.consumer_lag, x.consumer_lag) {
                (Some(a), Some(b)) => Some(a + b),
                (a, b) => a.or(b),
            };
            r.at = r.at.max(x.at);
        }
        Some(r)
    }
}

/// The freshness of one pipeline at one instant.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Freshness {
    pub pipeline: String,
    /// `fresh`, `late` (SLA breached) or `unknown` (no watermark yet, or no
    /// running daemon has reported).
    pub status: &'static str,
    pub sla_seconds: Option<f64>,
    /// Whether the SLA holds; `None` without an SLA or a watermark.
    pub sla_holds: Option<bool>,
    pub watermark: Option<String>,
    pub watermark_lag_seconds: Option<f64>,
    pub seconds_since_online_write: Option<f64>,
    pub seconds_since_offline_write: Option<f64>,
    pub consumer_lag: Option<i64>,
    /// When the figures were reported by the daemon.
    pub reported_at: Option<String>,
    pub evaluated_at: String,
}

fn secs(d: Micros) -> f64 {
    d.max(0) as f64 / 1e6
}

/// Judges a pipeline's report at `now`.
pub fn evaluate(p: &Pipeline, report: Option<&Report>, now: Micros) -> Freshness {
    let r = report.copied().unwrap_or_default();
    let lag = r.watermark.map(|w| now - w);
    let sla_holds = match (p.freshness_sla, lag) {
        (Some(sla), Some(l)) => Some(l <= sla),
        _ => None,
    };
    let status = match (lag, sla_holds) {
        (None, _) => "unknown",
        (Some(_), Some(false)) => "late",
        (Some(_), _) => "fresh",
    };
    Freshness {
        pipeline: p.name.clone(),
        status,
        sla_seconds: p.freshness_sla.map(secs),
        sla_holds,
        watermark: r.watermark.map(format_rfc3339),
        watermark_lag_seconds: lag.map(secs),
        seconds_since_online_write: r.last_online_write.map(|t| secs(now - t)),
        seconds_since_offline_write: r.last_offline_write.map(|t| secs(now - t)),
        consumer_lag: r.consumer_lag,
        reported_at: report.map(|r| format_rfc3339(r.at)),
        evaluated_at: format_rfc3339(now),
    }
}

/// A change of a pipeline's SLA state.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// The SLA stopped holding.
    BreachStarted {
        pipeline: String,
        lag_seconds: f64,
        sla_seconds: f64,
    },
    /// The SLA holds again after `lasted` microseconds.
    BreachEnded { pipeline: String, lasted: Micros },
}

/// Remembers which pipelines are in breach, so that each breach is
/// reported once when it starts and once when it ends.
#[derive(Debug, Default)]
pub struct BreachTracker {
    since: HashMap<String, Micros>,
}

impl BreachTracker {
    /// Feeds one evaluation made at `now`; returns the transition, if any.
    pub fn observe(&mut self, f: &Freshness, now: Micros) -> Option<Transition> {
        let breached = f.sla_holds == Some(false);
        match (breached, self.since.get(&f.pipeline).copied()) {
            (true, None) => {
                self.since.insert(f.pipeline.clone(), now);
                Some(Transition::BreachStarted {
                    pipeline: f.pipeline.clone(),
                    lag_seconds: f.watermark_lag_seconds.unwrap_or(0.0),
                    sla_seconds: f.sla_seconds.unwrap_or(0.0),
                })
            }
            (false, Some(start)) if f.sla_holds == Some(true) => {
                self.since.remove(&f.pipeline);
                Some(Transition::BreachEnded {
                    pipeline: f.pipeline.clone(),
                    lasted: now - start,
                })
            }
            _ => None,
        }
    }

    /// Observes and logs the transition (a warning when a breach starts, an
    /// info line when it ends).
    pub fn observe_and_log(&mut self, f: &Freshness, now: Micros) -> Option<Transition> {
        let t = self.observe(f, now);
        match &t {
            Some(Transition::BreachStarted {
                pipeline,
                lag_seconds,
                sla_seconds,
            }) => tracing::warn!(
                pipeline = %pipeline,
                watermark_lag_s = lag_seconds,
                sla_s = sla_seconds,
                "freshness SLA breached: the watermark lags the wall clock by more than the SLA"
            ),
            Some(Transition::BreachEnded { pipeline, lasted }) => tracing::info!(
                pipeline = %pipeline,
                breach_lasted_s = secs(*lasted),
                "freshness SLA holds again"
            ),
            None => {}
        }
        t
    }
}

/// The Redis hash where daemon instances publish their reports for a
/// pipeline: one field per instance, a JSON [`Report`] as value.
pub fn status_key(prefix: &str, pipeline: &str) -> String {
    format!("{prefix}:_freshness:{pipeline}")
}

/// Reports older than this are from instances that have stopped (or lost
/// their partitions) and are left out, unless no instance is newer.
pub const REPORT_STALE_AFTER: Micros = 60_000_000;

/// Merges the instance reports read from a status hash.
pub fn merge_published(values: &[String], now: Micros) -> Option<Report> {
    let reports: Vec<Report> = values
        .iter()
        .filter_map(|v| serde_json::from_str(v).ok())
        .collect();
    let live: Vec<Report> = reports
        .iter()
        .copied()
        .filter(|r| now - r.at <= REPORT_STALE_AFTER)
        .collect();
    if live.is_empty() {
        // Every instance is gone: the newest report shows how stale things are.
        reports.iter().max_by_key(|r| r.at).copied()
    } else {
        Report::merge(&live)
    }
}
