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
        if let Some(cur) = m.get(&r.key) {
            let num = |k: &str| cur.get(k).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
            let stored = (num("_window_end"), num("_gen"), num("_pane"));
            if stored > (r.window_end, r.generation as i64, i64::from(r.pane)) {
                return false;
            }
        }
        let mut h: BTreeMap<String, String> = r.fields.iter().cloned().collect();
        h.insert("_window_start".into(), r.window_start.to_string());
        h.insert("_window_end".into(), r.window_end.to_string());
        h.insert("_emitted_at".into(), r.emitted_at.to_string());
        h.insert("_gen".into(), r.generation.to_string());
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
