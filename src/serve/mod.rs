//! Serving: the online read API, the feature registry, freshness and the
//! catalog page (`rill serve`, `rill features`, the daemon's HTTP port).

pub mod api;
pub mod freshness;
pub mod http;
pub mod openapi;
pub mod page;
pub mod registry;
pub mod routes;

#[cfg(test)]
mod tests;
