//! rill: a streaming feature engine.
//!
//! The event-time core (`time`, `window`, `aggregate`, `engine`) is
//! synchronous and does no I/O; sources, sinks and the CLI wrap it.

pub mod config;
pub mod event;
pub mod time;
pub mod aggregate;
pub mod engine;
pub mod window;
pub mod sink;
pub mod source;
pub mod replay;
pub mod gen;
