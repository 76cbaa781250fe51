//! Sources of events: bounded files for replay (`file`) and the Kafka
//! client settings (`kafka`; the daemon's consumer loop is
//! `daemon::worker`).

pub mod file;
#[cfg(feature = "kafka")]
pub mod kafka;
