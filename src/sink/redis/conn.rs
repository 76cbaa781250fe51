//! One connection type for a single Redis server and for a Redis Cluster.
//!
//! A single server is reached over one multiplexed connection; a cluster
//! through the client library's cluster connection, which keeps one
//! multiplexed connection per node, follows `MOVED` and `ASK` redirections,
//! refreshes its slot map after a failover and retries. Commands of several
//! keys go out with [`OnlineConn::query_all`]: one pipeline on a single
//! server; on a cluster, one pipeline per hash slot, all sent at once, so
//! that each node touched receives its share in one burst and the nodes
//! work in parallel. (Every key rill writes carries its entity as a hash
//! tag, so all groups of one entity share a slot.)

use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
pub use redis::cluster_routing::Slot;
use redis::{Cmd, FromRedisValue, Pipeline, RedisFuture, RedisResult, Value};

use crate::config::RedisEndpoint;

/// A connection to the online store.
#[derive(Clone)]
pub enum OnlineConn {
    Node(MultiplexedConnection),
    /// A single server, reconnecting by itself (the read API).
    Managed(redis::aio::ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for OnlineConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            OnlineConn::Node(c) => c.req_packed_command(cmd),
            OnlineConn::Managed(c) => c.req_packed_command(cmd),
            OnlineConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            OnlineConn::Node(c) => c.req_packed_commands(cmd, offset, count),
            OnlineConn::Managed(c) => c.req_packed_commands(cmd, offset, count),
            OnlineConn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            OnlineConn::Node(c) => c.get_db(),
            OnlineConn::Managed(c) => c.get_db(),
            OnlineConn::Cluster(_) => 0,
        }
    }
}

impl OnlineConn {
    pub fn is_cluster(&self) -> bool {
        matches!(self, OnlineConn::Cluster(_))
    }

    /// Runs `cmds` (each naming its key first, as `HMGET` or `EVALSHA`
    /// do) and returns their replies in order: one pipeline on a single
    /// server, one pipeline per hash slot on a cluster, sent concurrently.
    pub async fn query_all<T: FromRedisValue>(
        &mut self,
        cmds: Vec<(Slot, Cmd)>,
    ) -> RedisResult<Vec<T>> {
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        match self {
            OnlineConn::Node(_) | OnlineConn::Managed(_) => {
                let mut pipe = redis::pipe();
                for (_, cmd) in cmds {
                    pipe.add_command(cmd);
                }
                pipe.query_async(self).await
            }
            OnlineConn::Cluster(c) => {
                let n = cmds.len();
                let mut by_slot: std::collections::HashMap<Slot, (Pipeline, Vec<usize>)> =
                    Default::default();
                for (i, (slot, cmd)) in cmds.into_iter().enumerate() {
                    let e = by_slot
                        .entry(slot)
                        .or_insert_with(|| (redis::pipe(), Vec::new()));
                    e.0.add_command(cmd);
                    e.1.push(i);
                }
                let mut tasks = tokio::task::JoinSet::new();
                for (_, (pipe, at)) in by_slot {
                    let mut c = c.clone();
                    tasks.spawn(async move {
                        let r: RedisResult<Vec<Value>> = pipe.query_async(&mut c).await;
                        (at, r)
                    });
                }
                let mut out: Vec<Option<Value>> = vec![None; n];
                let mut first_err = None;
                while let Some(done) = tasks.join_next().await {
                    match done {
                        Ok((at, Ok(values))) => {
                            for (i, v) in at.into_iter().zip(values) {
                                out[i] = Some(v);
                            }
                        }
                        Ok((_, Err(e))) => {
                            first_err.get_or_insert(e);
                        }
                        Err(e) => {
                            first_err.get_or_insert(redis::RedisError::from((
                                redis::ErrorKind::Io,
                                "cluster request task failed",
                                e.to_string(),
                            )));
                        }
                    }
                }
                if let Some(e) = first_err {
                    return Err(e);
                }
                out.into_iter()
                    .map(|v| T::from_redis_value(v.unwrap_or(Value::Nil)))
                    .collect::<Result<Vec<T>, _>>()
                    .map_err(Into::into)
            }
        }
    }
}

/// The hash slot of a key (its hash tag's, when it has one).
pub fn slot_of(key: &[u8]) -> Slot {
    Slot::for_key(key)
}

/// Connects to the endpoint: one server, or a cluster through its seed
/// nodes. Errors never hold the password.
pub async fn connect(endpoint: &RedisEndpoint, timeout: Duration) -> RedisResult<OnlineConn> {
    match endpoint.cluster_nodes() {
        None => {
            let client = super::client(endpoint)?;
            let c = tokio::time::timeout(timeout, client.get_multiplexed_async_connection())
                .await
                .map_err(|_| {
                    redis::RedisError::from((redis::ErrorKind::Io, "connect timed out"))
                })??;
            Ok(OnlineConn::Node(c))
        }
        Some(nodes) => {
            let client = cluster_client(endpoint, nodes, timeout)?;
            let c = tokio::time::timeout(timeout, client.get_async_connection())
                .await
                .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "connect timed out")))?
                .map_err(|e| super::redacted_error(e, endpoint))?;
            Ok(OnlineConn::Cluster(c))
        }
    }
}

/// The cluster client of an endpoint's seed nodes.
fn cluster_client(
    endpoint: &RedisEndpoint,
    nodes: Result<Vec<String>, String>,
    timeout: Duration,
) -> RedisResult<redis::cluster::ClusterClient> {
    let invalid = |what: String| {
        redis::RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "invalid Redis Cluster",
            what,
        ))
    };
    // (ca_file and cert_file are refused with a cluster when the pipeline
    // is validated.)
    let nodes = nodes.map_err(invalid)?;
    let mut b = redis::cluster::ClusterClientBuilder::new(nodes)
        .tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true))
        .connection_timeout(timeout)
        .response_timeout(Duration::from_secs(30))
        .retries(6)
        .min_retry_wait(50)
        .max_retry_wait(2_000);
    if let Some(u) = &endpoint.username {
        b = b.username(u);
    }
    if let Some(p) = &endpoint.password {
        b = b.password(p.expose());
    }
    b.build().map_err(|e| super::redacted_error(e, endpoint))
}

/// The read API's handle on a store: connects on first use and reconnects
/// after failures, so a server that starts before Redis serves as soon as
/// Redis is up.
#[derive(Clone)]
pub enum StoreConn {
    Node(redis::aio::ConnectionManager),
    Cluster(std::sync::Arc<LazyCluster>),
}

/// A cluster connection made on first use (and again after a failed
/// connect).
pub struct LazyCluster {
    endpoint: RedisEndpoint,
    conn: tokio::sync::Mutex<Option<ClusterConnection>>,
}

impl StoreConn {
    /// A handle for `endpoint`; nothing is connected yet. Must be called
    /// within a tokio runtime.
    pub fn new(endpoint: &RedisEndpoint) -> RedisResult<StoreConn> {
        match endpoint.cluster_nodes() {
            None => {
                let client = super::client(endpoint)?;
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_number_of_retries(1)
                    .set_connection_timeout(Some(Duration::from_millis(500)))
                    .set_response_timeout(Some(Duration::from_secs(2)));
                Ok(StoreConn::Node(
                    redis::aio::ConnectionManager::new_lazy_with_config(client, config)?,
                ))
            }
            Some(nodes) => {
                nodes.map_err(|e| {
                    redis::RedisError::from((
                        redis::ErrorKind::InvalidClientConfig,
                        "invalid Redis Cluster",
                        e,
                    ))
                })?;
                Ok(StoreConn::Cluster(std::sync::Arc::new(LazyCluster {
                    endpoint: endpoint.clone(),
                    conn: tokio::sync::Mutex::new(None),
                })))
            }
        }
    }

    /// A connection to query with.
    pub async fn get(&self) -> RedisResult<OnlineConn> {
        match self {
            StoreConn::Node(c) => Ok(OnlineConn::Managed(c.clone())),
            StoreConn::Cluster(l) => {
                let mut g = l.conn.lock().await;
                if let Some(c) = g.as_ref() {
                    return Ok(OnlineConn::Cluster(c.clone()));
                }
                let OnlineConn::Cluster(c) = connect(&l.endpoint, Duration::from_secs(2)).await?
                else {
                    unreachable!("a cluster endpoint connects to a cluster")
                };
                *g = Some(c.clone());
                Ok(OnlineConn::Cluster(c))
            }
        }
    }
}

/// Runs one command on `endpoint` from synchronous code (the command
/// line), on a runtime of its own, within `timeout`.
pub fn blocking<T: FromRedisValue>(
    endpoint: &RedisEndpoint,
    timeout: Duration,
    cmd: Cmd,
) -> RedisResult<T> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| redis::RedisError::from((redis::ErrorKind::Io, "runtime", e.to_string())))?;
    rt.block_on(async {
        tokio::time::timeout(timeout, async {
            let mut c = connect(endpoint, timeout).await?;
            cmd.query_async(&mut c).await
        })
        .await
        .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "timed out")))?
    })
}
