//! Integration tests: the `rill` binary against files on disk, read back
//! with the parquet crate. One test binary, one module per area.

mod catalog;
mod cluster_util;
mod daemon;
mod docker;
mod examples;
mod fuzz_corpus;
mod golden;
mod join;
mod object_storage;
mod online_cas;
mod parallel_replay;
mod registry;
mod replay;
mod seaweed;
mod security;
mod serve;
mod util;
mod validate;
