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

//!
//! `RILL_STOP_AT=<point>:<n>` stops the process instead (SIGSTOP): it
//! goes on from there when it gets SIGCONT, which is how a test makes a
//! zombie that wakes up in the middle of a checkpoint after another
//! instance took its partitions over.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

fn armed(
    var: &str,
    slot: &'static OnceLock<Option<(String, u64)>>,
) -> Option<&'static (String, u64)> {
    slot.get_or_init(|| {
        let v = std::env::var(var).ok()?;
        let (point, n) = v.rsplit_once(':')?;
        Some((point.to_string(), n.parse().ok()?))
    })
    .as_ref()
}

/// Kills (or stops) the process here when this is the armed point's
/// `n`-th visit.
pub fn point(name: &str) {
    static CRASH: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static STOP: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static CRASH_HITS: AtomicU64 = AtomicU64::new(0);
    static STOP_HITS: AtomicU64 = AtomicU64::new(0);
    for (var, slot, hits, sig) in [
        ("RILL_CRASH_AT", &CRASH, &CRASH_HITS, libc::SIGKILL),
        ("RILL_STOP_AT", &STOP, &STOP_HITS, libc::SIGSTOP),
    ] {
        let Some((at, n)) = armed(var, slot) else {
            continue;
        };
        if at == name && hits.fetch_add(1, Ordering::Relaxed) + 1 == *n {
            let what = if sig == libc::SIGKILL {
                "killing"
            } else {
                "stopping"
            };
            tracing::warn!(point = name, "{var}: {what} the process");
            // SAFETY: kill(2) on this process's own pid, no memory involved.
            unsafe {
                libc::kill(libc::getpid(), sig);
            }
        }
    }
}
