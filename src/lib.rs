//! rill: a streaming feature engine.
//!
//! The event-time core (`time`, `window`, `aggregate`, `engine`) is
//! synchronous and does no I/O; sources, sinks and the CLI wrap it.

pub mod aggregate;
pub mod checkpoint;
pub mod config;
#[cfg(feature = "kafka")]
pub mod daemon;
pub mod engine;
pub mod event;
pub mod gen;
pub mod join;
pub mod mem;
pub mod metrics;
pub mod plan;
pub mod replay;
pub mod serve;
pub mod sink;
pub mod source;
pub mod storage;
pub mod time;
pub mod window;
