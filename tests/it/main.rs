//! Integration tests: the `rill` binary against files on disk, read back
//! with the parquet crate. One test binary, one module per area.

mod daemon;
mod docker;
mod golden;
mod join;
mod replay;
mod serve;
mod registry;
mod catalog;
mod util;
mod validate;
