//! Crash points for the fault tests: with `RILL_CRASH_AT=<point>:<n>` in
//! its environment the daemon sends itself SIGKILL the `n`-th time it
//! reaches `<point>`, so a test can kill it at an exact place of a
//! checkpoint, which a signal from outside only hits by luck. Without the
//! variable a point costs one relaxed load.
//!
//! The points, in the order a checkpoint passes them:
//!
//! - `checkpoint.taken`: the partitions' state is taken and their files
//!   are closed under temporary names; the online flush has not begun;
//! - `checkpoint.stored`: one partition's checkpoint is on disk, its files
//!   are not yet renamed and the other partitions' checkpoints not written;
//! - `checkpoint.published`: every checkpoint is stored and its files
//!   published; the offsets are not yet committed to Kafka.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

fn armed() -> Option<&'static (String, u64)> {
    static AT: OnceLock<Option<(String, u64)>> = OnceLock::new();
    AT.get_or_init(|| {
        let v = std::env::var("RILL_CRASH_AT").ok()?;
        let (point, n) = v.rsplit_once(':')?;
        Some((point.to_string(), n.parse().ok()?))
    })
    .as_ref()
}

/// Kills the process here when this is the armed point's `n`-th visit.
pub fn point(name: &str) {
    static HITS: AtomicU64 = AtomicU64::new(0);
    let Some((at, n)) = armed() else {
        return;
    };
    if at == name && HITS.fetch_add(1, Ordering::Relaxed) + 1 == *n {
        tracing::warn!(point = name, "RILL_CRASH_AT: killing the process");
        // SAFETY: kill(2) on this process's own pid, no memory involved.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}
