//! The client connection, for a single server or a cluster, behind one type.
//!
//! Both kinds are multiplexed: one TCP connection per server carries every
//! concurrent request of the store, pipelined (the `redis` crate's
//! `ConnectionManager` for a single server, its `ClusterConnection` for a
//! cluster, which keeps one such connection per node, follows `MOVED`/`ASK`
//! and refreshes its slot map when a node fails). Cloning a `Conn` is cheap
//! (a handle to the same connections).

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionAddr, ConnectionInfo, ErrorKind, Pipeline, RedisError, RedisResult,
    Value,
};

use crate::config::{Deployment, RedisConfig};
use crate::keys::slot_of;
use crate::limits::{CLUSTER_SLOTS, RETRY_BACKOFF_MAX, RETRY_BACKOFF_MIN};

/// Resends the cluster client makes on its own: none. It would resend a
/// request after a dropped connection too, where the first try may have
/// been applied, without the store hearing of it: an `update` would then
/// take its own commit for a conflict and apply its closure twice, and a
/// `delete` would report `NotFound` for its own delete. Every resend goes
/// through `RedisStore::run`, which tracks that doubt (redirections and
/// reconnects included: the client still refreshes its slot map and
/// reconnects on such errors, and `run` resends after them).
const CLUSTER_CLIENT_RETRIES: u32 = 0;

/// A connection to the deployment.
#[derive(Clone)]
pub(crate) enum Conn {
    /// One server.
    Standalone(ConnectionManager),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

/// One master and the slots it serves, as `CLUSTER SLOTS` reports them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Shard {
    /// The lowest slot it serves: names the shard in list cursors, and stays
    /// the same when a replica takes over.
    pub(crate) first_slot: u32,
    /// The master's address when the topology was read (for messages).
    pub(crate) host: String,
    /// The master's port when the topology was read.
    pub(crate) port: u16,
    /// The slot ranges it serves (inclusive).
    pub(crate) ranges: Vec<(u32, u32)>,
}

/// The masters by first slot, and every node's address (masters and
/// replicas) for reconnecting.
pub(crate) type Topology = (Vec<Shard>, Vec<(String, u16)>);

/// Where a request goes.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Target<'a> {
    /// The master serving this key.
    Key(&'a [u8]),
    /// This shard's master (ignored by a single server).
    Shard(&'a Shard),
}

impl Conn {
    /// Connects to `seeds` (any one that answers will do for a cluster; the
    /// first for a single server).
    pub(crate) async fn connect(config: &RedisConfig, seeds: &[ConnectionInfo]) -> RedisResult<Self> {
        match &config.deployment {
            Deployment::Standalone(_) => {
                let info = seeds.first().ok_or_else(no_seed)?;
                let client = redis::Client::open(info.clone())?;
                let manager_config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(config.connect_timeout))
                    .set_response_timeout(Some(config.request_timeout))
                    .set_min_delay(RETRY_BACKOFF_MIN)
                    .set_max_delay(RETRY_BACKOFF_MAX)
                    .set_number_of_retries(6);
                let manager = ConnectionManager::new_with_config(client, manager_config).await?;
                Ok(Conn::Standalone(manager))
            }
            Deployment::Cluster(_) => {
                if seeds.is_empty() {
                    return Err(no_seed());
                }
                let client = ClusterClientBuilder::new(seeds.to_vec())
                    .connection_timeout(config.connect_timeout)
                    .response_timeout(config.request_timeout)
                    .overall_response_timeout(Some(config.request_timeout))
                    .retries(CLUSTER_CLIENT_RETRIES)
                    .min_retry_wait(millis(RETRY_BACKOFF_MIN))
                    .max_retry_wait(millis(RETRY_BACKOFF_MAX))
                    .build()?;
                Ok(Conn::Cluster(client.get_async_connection().await?))
            }
        }
    }

    /// Sends one command to `target`.
    pub(crate) async fn query(&mut self, cmd: Cmd, target: Target<'_>) -> RedisResult<Value> {
        let value = match self {
            Conn::Standalone(c) => c.req_packed_command(&cmd).await?,
            Conn::Cluster(c) => {
                c.route_command(cmd, RoutingInfo::SingleNode(route(target)))
                    .await?
            }
        };
        server_error_to_err(value)
    }

    /// Sends `pipe` to `target` in one write; the replies come back in order,
    /// server errors as `Value::ServerError` elements.
    pub(crate) async fn pipeline(&mut self, pipe: &Pipeline, target: Target<'_>) -> RedisResult<Vec<Value>> {
        match self {
            Conn::Standalone(c) => c.req_packed_commands(pipe, 0, pipe.len()).await,
            Conn::Cluster(c) => c.route_pipeline(pipe.clone(), 0, pipe.len(), route(target)).await,
        }
    }

    /// The masters, ordered by their lowest slot (one pseudo-shard for a
    /// single server), and every node's URL (masters and replicas) for
    /// reconnecting.
    pub(crate) async fn topology(&mut self) -> RedisResult<Topology> {
        match self {
            Conn::Standalone(_) => Ok((vec![standalone_shard()], Vec::new())),
            Conn::Cluster(c) => {
                let reply = c
                    .route_command(
                        redis::cmd("CLUSTER").arg("SLOTS").clone(),
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::RandomPrimary),
                    )
                    .await?;
                parse_cluster_slots(&reply)
            }
        }
    }

    /// True if the deployment serves requests right now, as this connection
    /// sees it: `PING` for a single server, `cluster_state:ok` for a cluster.
    pub(crate) async fn serving(&mut self) -> RedisResult<bool> {
        match self {
            Conn::Standalone(c) => {
                let reply = c.req_packed_command(&redis::cmd("PING")).await?;
                Ok(matches!(reply, Value::SimpleString(ref s) if s == "PONG"))
            }
            Conn::Cluster(c) => {
                let reply = c
                    .route_command(
                        redis::cmd("CLUSTER").arg("INFO").clone(),
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::RandomPrimary),
                    )
                    .await?;
                let text = match reply {
                    Value::BulkString(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                    Value::VerbatimString { text, .. } | Value::SimpleString(text) => text,
                    _ => return Ok(false),
                };
                Ok(text.lines().any(|l| l.trim() == "cluster_state:ok"))
            }
        }
    }
}

/// A shortcut past the cluster client for single-key requests: one
/// multiplexed connection per master and a slot table, as of the last
/// `CLUSTER SLOTS`. The cluster client routes each request through its own
/// task (two more channel hops and wake-ups per request, about 15-40 µs on a
/// busy 2-core machine); this sends straight to the master's connection.
///
/// It is only ever a first try: a stale table meets `MOVED` (Redis Cluster
/// redirects every keyed command a node does not own, replicas included) or
/// a dead connection, and then the store drops the table and resends through
/// the cluster client, which follows redirects and refreshes its own map. A
/// new table is built in the background, at most every
/// [`DIRECT_REBUILD_INTERVAL`](crate::limits::DIRECT_REBUILD_INTERVAL).
pub(crate) struct Direct {
    /// Master index for each slot.
    slots: Vec<u16>,
    masters: Vec<MultiplexedConnection>,
}

impl Direct {
    /// Reads the slot map through `conn` and connects to every master;
    /// `None` unless every slot has a master that answered.
    pub(crate) async fn build(
        conn: &mut Conn,
        config: &RedisConfig,
        seed: &ConnectionInfo,
    ) -> RedisResult<Option<Self>> {
        let (shards, _) = conn.topology().await?;
        let mut slots = vec![u16::MAX; CLUSTER_SLOTS as usize];
        let mut masters = Vec::with_capacity(shards.len());
        let connection_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.request_timeout));
        for shard in &shards {
            let info = seed
                .clone()
                .set_addr(ConnectionAddr::Tcp(shard.host.clone(), shard.port));
            let client = redis::Client::open(info)?;
            let master = client
                .get_multiplexed_async_connection_with_config(&connection_config)
                .await?;
            let index = u16::try_from(masters.len()).expect("fewer than 65535 masters");
            masters.push(master);
            for &(start, end) in &shard.ranges {
                for slot in start..=end {
                    slots[slot as usize] = index;
                }
            }
        }
        if slots.contains(&u16::MAX) {
            return Ok(None);
        }
        Ok(Some(Self { slots, masters }))
    }

    /// The connection to the master of `key`'s slot.
    pub(crate) fn for_key(&self, key: &[u8]) -> MultiplexedConnection {
        self.masters[usize::from(self.slots[usize::from(slot_of(key))])].clone()
    }
}

/// Sends one command on a direct connection.
pub(crate) async fn direct_query(conn: &mut MultiplexedConnection, cmd: &Cmd) -> RedisResult<Value> {
    server_error_to_err(conn.req_packed_command(cmd).await?)
}

/// Sends a pipeline on a direct connection.
pub(crate) async fn direct_pipeline(
    conn: &mut MultiplexedConnection,
    pipe: &Pipeline,
) -> RedisResult<Vec<Value>> {
    conn.req_packed_commands(pipe, 0, pipe.len()).await
}

fn route(target: Target<'_>) -> SingleNodeRoutingInfo {
    match target {
        Target::Key(key) => SingleNodeRoutingInfo::SpecificNode(Route::with_key(key, SlotAddr::Master)),
        // By slot, not by address: the client resolves the slot to the
        // current master (and connects to it) even when the address it had
        // for that master went away in a failover.
        Target::Shard(shard) => SingleNodeRoutingInfo::SpecificNode(Route::new(
            u16::try_from(shard.first_slot).expect("slots are below 16384"),
            SlotAddr::Master,
        )),
    }
}

fn standalone_shard() -> Shard {
    Shard {
        first_slot: 0,
        host: String::new(),
        port: 0,
        ranges: vec![(0, CLUSTER_SLOTS - 1)],
    }
}

fn no_seed() -> RedisError {
    RedisError::from((ErrorKind::InvalidClientConfig, "no server address to connect to"))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A reply that is a server error becomes an `Err`, as for pipelines.
fn server_error_to_err(value: Value) -> RedisResult<Value> {
    match value {
        Value::ServerError(e) => Err(e.into()),
        other => Ok(other),
    }
}

/// Parses `CLUSTER SLOTS`: `[[start, end, [host, port, id, ...], replicas...], ...]`.
fn parse_cluster_slots(reply: &Value) -> RedisResult<Topology> {
    let bad = || RedisError::from((ErrorKind::UnexpectedReturnType, "malformed CLUSTER SLOTS reply"));
    let Value::Array(ranges) = reply else {
        return Err(bad());
    };
    let mut shards: Vec<Shard> = Vec::new();
    let mut nodes: Vec<(String, u16)> = Vec::new();
    for range in ranges {
        let Value::Array(fields) = range else {
            return Err(bad());
        };
        let slot = |v: Option<&Value>| match v {
            Some(Value::Int(n)) => u32::try_from(*n)
                .ok()
                .filter(|s| *s < CLUSTER_SLOTS)
                .ok_or_else(bad),
            _ => Err(bad()),
        };
        let (start, end) = (slot(fields.first())?, slot(fields.get(1))?);
        let mut addrs = fields.iter().skip(2).map(|node| node_addr(node).ok_or_else(bad));
        let (host, port) = addrs.next().ok_or_else(bad)??;
        for addr in std::iter::once(Ok((host.clone(), port))).chain(addrs) {
            let addr = addr?;
            if !nodes.contains(&addr) {
                nodes.push(addr);
            }
        }
        match shards.iter_mut().find(|s| s.host == host && s.port == port) {
            Some(shard) => {
                shard.first_slot = shard.first_slot.min(start);
                shard.ranges.push((start, end));
            }
            None => shards.push(Shard {
                first_slot: start,
                host,
                port,
                ranges: vec![(start, end)],
            }),
        }
    }
    if shards.is_empty() {
        return Err(RedisError::from((
            ErrorKind::Server(redis::ServerErrorKind::ClusterDown),
            "CLUSTER SLOTS lists no master",
        )));
    }
    shards.sort_by_key(|s| s.first_slot);
    Ok((shards, nodes))
}

fn node_addr(node: &Value) -> Option<(String, u16)> {
    let Value::Array(parts) = node else { return None };
    let host = match parts.first()? {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok()?,
        Value::SimpleString(s) => s.clone(),
        _ => return None,
    };
    let port = match parts.get(1)? {
        Value::Int(n) => u16::try_from(*n).ok()?,
        _ => return None,
    };
    Some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(host: &str, port: i64) -> Value {
        Value::Array(vec![
            Value::BulkString(host.as_bytes().to_vec()),
            Value::Int(port),
            Value::BulkString(b"id".to_vec()),
        ])
    }

    #[test]
    fn cluster_slots_group_by_master_and_sort_by_first_slot() {
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(10923),
                Value::Int(16383),
                node("127.0.0.1", 7003),
                node("127.0.0.1", 7004),
            ]),
            Value::Array(vec![Value::Int(0), Value::Int(5460), node("127.0.0.1", 7001)]),
            Value::Array(vec![Value::Int(5461), Value::Int(9000), node("127.0.0.1", 7002)]),
            Value::Array(vec![Value::Int(9001), Value::Int(10922), node("127.0.0.1", 7002)]),
        ]);
        let (shards, nodes) = parse_cluster_slots(&reply).unwrap();
        let firsts: Vec<_> = shards.iter().map(|s| (s.first_slot, s.port)).collect();
        assert_eq!(firsts, vec![(0, 7001), (5461, 7002), (10923, 7003)]);
        assert_eq!(nodes.len(), 4);
        assert!(nodes.contains(&("127.0.0.1".to_owned(), 7004)));
        assert_eq!(shards[1].ranges, vec![(5461, 9000), (9001, 10922)]);
    }

    #[test]
    fn malformed_cluster_slots_is_an_error() {
        assert!(parse_cluster_slots(&Value::Int(3)).is_err());
        assert!(parse_cluster_slots(&Value::Array(vec![])).is_err());
        assert!(parse_cluster_slots(&Value::Array(vec![Value::Array(vec![Value::Int(0)])])).is_err());
        let beyond = Value::Array(vec![Value::Array(vec![
            Value::Int(0),
            Value::Int(16_384),
            node("h", 1),
        ])]);
        assert!(parse_cluster_slots(&beyond).is_err());
    }
}
