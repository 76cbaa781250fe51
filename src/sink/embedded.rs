//! The in-process online store of `rill demo`, for machines without Redis:
//! the same hashes and the same newer-wins rule as the Redis sink, held in
//! memory and served by the daemon's HTTP port. Not for production: it is
//! lost when the process ends.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::mpsc;

use super::redis::{OnlineLayout, OnlineMsg, OnlineObserver, OnlineRow};

/// Hashes by Redis key (`rill:{<entity>}:<group>`).
#[derive(Debug, Default)]
pub struct EmbeddedStore {
    map: Mutex<HashMap<String, BTreeMap<String, String>>>,
}

impl EmbeddedStore {
    /// Applies one row under the compare-and-set of the Redis script.
    pub fn apply(&self, r: &OnlineRow) -> bool {
        let mut m = self.map.lock().expect("store lock");
        let new = (r.window_end, r.generation, r.pane);
        if let Some(cur) = m.get(&r.key) {
            let stored = cur
                .get("_v")
                .and_then(|v| super::redis::parse_version(v))
                .unwrap_or_else(|| {
                    let num = |k: &str| cur.get(k).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
                    (
                        num("_window_end"),
                        num("_gen").max(0) as u64,
                        num("_pane").clamp(0, i64::from(u32::MAX)) as u32,
                    )
                });
            if stored > new {
                return false;
            }
        }
        let mut h: BTreeMap<String, String> = r.fields.iter().cloned().collect();
        let mut v = String::with_capacity(40);
        super::redis::version_field(r.window_end, r.generation, r.pane, None, &mut v);
        h.insert("_v".into(), v);
        h.insert("_window_start".into(), r.window_start.to_string());
        h.insert("_window_end".into(), r.window_end.to_string());
        h.insert("_emitted_at".into(), r.emitted_at.to_string());
        h.insert("_pane".into(), r.pane.to_string());
        m.insert(r.key.clone(), h);
        true
    }

    /// The hash at `key`.
    pub fn get(&self, key: &str) -> Option<BTreeMap<String, String>> {
        self.map.lock().expect("store lock").get(key).cloned()
    }

    pub fn len(&self) -> usize {
        self.map.lock().expect("store lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Runs the writer of the embedded store until the channel closes.
pub async fn run_writer(
    store: Arc<EmbeddedStore>,
    layout: OnlineLayout,
    mut rx: mpsc::Receiver<OnlineMsg>,
    obs: Arc<dyn OnlineObserver>,
) {
    while let Some(m) = rx.recv().await {
        match m {
            OnlineMsg::Panes(b) => {
                let t = Instant::now();
                for r in &layout.rows(&b) {
                    store.apply(r);
                }
                let done = Instant::now();
                obs.written_latency(done - t);
                obs.written(b.panes.len(), done - b.emitted);
            }
            OnlineMsg::Flush(tx) => {
                let _ = tx.send(());
            }
        }
    }
}
