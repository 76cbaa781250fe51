//! Sources of events: bounded files for replay (`file`). The daemon reads
//! Kafka itself (`daemon::worker`).

pub mod file;
