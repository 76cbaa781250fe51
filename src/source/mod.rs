//! Sources of events: bounded files for replay (`file`); Kafka comes with the daemon.

pub mod file;
