//! Integration tests: the `rill` binary against files on disk, read back
//! with the parquet crate. One test binary, one module per area.

mod daemon;
mod docker;
mod golden;
mod join;
mod replay;
mod util;
mod validate;
