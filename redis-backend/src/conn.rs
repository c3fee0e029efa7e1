//! The connections to the deployment, for a single server or a cluster.
//!
//! Every connection is multiplexed: one TCP connection per server carries
//! every concurrent request of the store, pipelined. Two kinds, behind
//! [`Conn`]:
//!
//! - the `redis` crate's clients: `ConnectionManager` for a single server,
//!   `ClusterConnection` for a cluster (one connection per node; it follows
//!   `MOVED`/`ASK` and refreshes its slot map when a node fails);
//! - for a cluster, [`Direct`]: the store's own connection per master and
//!   slot table, which single-key requests, `SCAN` and `CLUSTER SLOTS` take
//!   first (see its docs for why).
//!
//! With `Replication::Wait`, writes take connections of their own (see
//! [`Lane`]). Cloning a `Conn` is cheap (handles to the same connections).

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionAddr, ConnectionInfo, ErrorKind, Pipeline, PushInfo, PushKind,
    RedisError, RedisResult, Value,
};

use crate::config::{Deployment, RedisConfig, Replication};
use crate::keys::slot_of;
use crate::limits::{
    CLUSTER_CLIENT_RETRIES, CLUSTER_SLOTS, RETRY_BACKOFF_MAX, RETRY_BACKOFF_MIN, STANDALONE_RECONNECT_TRIES,
};
use crate::reply;

/// Which connection a request takes. With `Replication::Wait`, writes (each
/// followed by `WAIT`) go on connections of their own: Redis runs a
/// connection's commands in order and holds everything behind a blocked
/// `WAIT` until it returns, so on a shared connection every read queued
/// behind a write would wait for the replicas too (the whole `WAIT` timeout
/// per write, when a master has lost its replica). Without `WAIT` both lanes
/// are the same connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lane {
    /// Reads, and writes that do not wait for replicas.
    Reads,
    /// Writes followed by `WAIT`.
    Writes,
}

/// The `redis` crate's clients: one for reads and, with `Replication::Wait`,
/// a second one for writes (see [`Lane`]).
#[derive(Clone)]
pub(crate) struct Conn {
    reads: Client,
    writes: Option<Client>,
}

/// One client of the `redis` crate.
#[derive(Clone)]
enum Client {
    /// One server.
    Standalone(ConnectionManager),
    /// A Redis Cluster, and the host of its first seed (see
    /// [`parse_cluster_slots`]'s `answered`).
    Cluster(ClusterConnection, String),
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
    /// The node at this host (as the redirect names it: an address or a
    /// hostname) and port, which an `ASK` redirect named for the slot (the
    /// third field: the slot is migrating there; a cluster's only).
    Node(&'a str, u16, u16),
}

impl Target<'_> {
    /// The hash slot this target is routed by.
    pub(crate) fn slot(&self) -> u16 {
        match self {
            Target::Key(key) => slot_of(key),
            Target::Shard(shard) => u16::try_from(shard.first_slot).expect("slots are below 16384"),
            Target::Node(_, _, slot) => *slot,
        }
    }
}

impl Conn {
    /// Connects to `seeds` (any one that answers will do for a cluster; the
    /// first for a single server): the reads client and, if writes wait for
    /// replicas, the writes client.
    pub(crate) async fn connect(config: &RedisConfig, seeds: &[ConnectionInfo]) -> RedisResult<Self> {
        let reads = Client::connect(config, seeds).await?;
        let writes = match config.replication {
            Replication::Wait { .. } => Some(Client::connect(config, seeds).await?),
            Replication::Async => None,
        };
        Ok(Self { reads, writes })
    }

    fn client(&mut self, lane: Lane) -> &mut Client {
        match (lane, &mut self.writes) {
            (Lane::Writes, Some(writes)) => writes,
            _ => &mut self.reads,
        }
    }

    /// Sends one command to `target`.
    pub(crate) async fn query(&mut self, cmd: &Cmd, target: Target<'_>, lane: Lane) -> RedisResult<Value> {
        self.client(lane).query(cmd, target).await
    }

    /// Sends `pipe` to `target` in one write; the replies come back in order,
    /// server errors as `Value::ServerError` elements.
    pub(crate) async fn pipeline(
        &mut self,
        pipe: &Pipeline,
        target: Target<'_>,
        lane: Lane,
    ) -> RedisResult<Vec<Value>> {
        self.client(lane).pipeline(pipe, target).await
    }

    /// The masters, ordered by their lowest slot (one pseudo-shard for a
    /// single server), and every node's address (masters and replicas) for
    /// reconnecting.
    pub(crate) async fn topology(&mut self) -> RedisResult<Topology> {
        self.reads.topology().await
    }

    /// True if the deployment serves requests right now, as both clients
    /// see it.
    pub(crate) async fn serving(&mut self) -> RedisResult<bool> {
        if !self.reads.serving().await? {
            return Ok(false);
        }
        match &mut self.writes {
            Some(writes) => writes.serving().await,
            None => Ok(true),
        }
    }

    /// Loads the store's scripts on a single server (see [`load_scripts`]).
    pub(crate) async fn load_scripts(&mut self, scripts: &[&str]) {
        if let Client::Standalone(c) = &mut self.reads {
            load_scripts(c, scripts).await;
        }
    }

    /// `INFO cluster` of a single server: whether it is a cluster node.
    pub(crate) async fn info_cluster(&mut self) -> RedisResult<Value> {
        self.reads
            .query(redis::cmd("INFO").arg("cluster"), Target::Key(b""))
            .await
    }
}

impl Client {
    async fn connect(config: &RedisConfig, seeds: &[ConnectionInfo]) -> RedisResult<Self> {
        match &config.deployment {
            Deployment::Standalone(_) => {
                let info = seeds.first().ok_or_else(no_seed)?;
                let client = redis::Client::open(info.clone())?;
                let manager_config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(config.connect_timeout))
                    .set_response_timeout(Some(config.request_timeout))
                    .set_min_delay(RETRY_BACKOFF_MIN)
                    .set_max_delay(RETRY_BACKOFF_MAX)
                    .set_number_of_retries(STANDALONE_RECONNECT_TRIES);
                let manager = ConnectionManager::new_with_config(client, manager_config).await?;
                Ok(Client::Standalone(manager))
            }
            Deployment::Cluster(_) => {
                if seeds.is_empty() {
                    return Err(no_seed());
                }
                // The cluster client connects with its own TCP settings,
                // not its seeds'.
                let client = ClusterClientBuilder::new(seeds.to_vec())
                    .tcp_settings(config.tcp_settings())
                    .connection_timeout(config.connect_timeout)
                    .response_timeout(config.request_timeout)
                    .overall_response_timeout(Some(config.request_timeout))
                    .retries(CLUSTER_CLIENT_RETRIES)
                    .min_retry_wait(millis(RETRY_BACKOFF_MIN))
                    .max_retry_wait(millis(RETRY_BACKOFF_MAX))
                    .build()?;
                let seed_host = match seeds.first().map(ConnectionInfo::addr) {
                    Some(ConnectionAddr::Tcp(host, _)) => host.clone(),
                    _ => String::new(),
                };
                Ok(Client::Cluster(client.get_async_connection().await?, seed_host))
            }
        }
    }

    async fn query(&mut self, cmd: &Cmd, target: Target<'_>) -> RedisResult<Value> {
        let value = match self {
            Client::Standalone(c) => c.req_packed_command(cmd).await?,
            // The cluster client takes its command by value.
            Client::Cluster(c, _) => {
                c.route_command(cmd.clone(), RoutingInfo::SingleNode(route(target)))
                    .await?
            }
        };
        server_error_to_err(value)
    }

    async fn pipeline(&mut self, pipe: &Pipeline, target: Target<'_>) -> RedisResult<Vec<Value>> {
        match self {
            Client::Standalone(c) => c.req_packed_commands(pipe, 0, pipe.len()).await,
            Client::Cluster(c, _) => c.route_pipeline(pipe.clone(), 0, pipe.len(), route(target)).await,
        }
    }

    async fn topology(&mut self) -> RedisResult<Topology> {
        match self {
            Client::Standalone(_) => Ok((vec![standalone_shard()], Vec::new())),
            Client::Cluster(c, seed_host) => {
                let reply = c
                    .route_command(
                        redis::cmd("CLUSTER").arg("SLOTS").clone(),
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::RandomPrimary),
                    )
                    .await?;
                // Which node answered is not known here: a node without an
                // endpoint of its own is reached as the seed is (one
                // address in front of every node, or a one-node cluster).
                parse_cluster_slots(&reply, seed_host)
            }
        }
    }

    /// `PING` for a single server, `cluster_state:ok` for a cluster.
    async fn serving(&mut self) -> RedisResult<bool> {
        match self {
            Client::Standalone(c) => {
                let reply = c.req_packed_command(&redis::cmd("PING")).await?;
                Ok(matches!(reply, Value::SimpleString(ref s) if s == "PONG"))
            }
            Client::Cluster(c, _) => {
                let reply = c
                    .route_command(
                        redis::cmd("CLUSTER").arg("INFO").clone(),
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::RandomPrimary),
                    )
                    .await?;
                let text = reply::text(&reply).unwrap_or_default();
                Ok(reply::info_field(&text, "cluster_state") == Some("ok"))
            }
        }
    }
}

/// The store's own routes to a cluster's masters: a slot table and, per
/// master, a multiplexed connection for reads (and one for writes with
/// `Replication::Wait`). Single-key requests, `SCAN` and `CLUSTER SLOTS` go
/// here first.
///
/// Why not only the cluster client: it routes every request of every shard
/// through one task, and while it refreshes its slot map after a failure it
/// dispatches nothing (the refresh holds its topology lock across network
/// round trips to the nodes). A failover of one master would pause requests
/// to all of them, and any stall in that task (a wedge: every request on
/// every shard timing out until the client is replaced) would stop the
/// whole store. Here each master is a route of its
/// own: a request that fails on one master marks only that master
/// [stale](Master::stale) (its slots go through the cluster client until
/// the table is rebuilt, which it is in the background, reading
/// `CLUSTER SLOTS` from a healthy master's connection, not through the
/// cluster client); the other masters keep their connections and never see
/// the failover. It also saves the cluster client's two channel hops per
/// request.
///
/// A stale table is harmless: Redis Cluster redirects (`MOVED`) every keyed
/// command a node does not own, replicas included, and the store then marks
/// that master stale and resends through the cluster client, which follows
/// the redirect.
pub(crate) struct Direct {
    /// Master index for each slot; `u16::MAX` where no master answered.
    slots: Vec<u16>,
    masters: Vec<Arc<Master>>,
}

/// One master's routes in a [`Direct`] table.
pub(crate) struct Master {
    pub(crate) host: String,
    pub(crate) port: u16,
    reads: MultiplexedConnection,
    writes: Option<MultiplexedConnection>,
    /// A request here failed without an answer or was redirected, or the
    /// server closed one of its connections: its slots take the cluster
    /// client until the next table. Shared with the connections' push
    /// senders (see [`connect_node`]).
    stale: Arc<AtomicBool>,
}

impl Master {
    /// Connects to a master: a reads connection and, with `Replication::Wait`,
    /// a writes connection. When the server closes either, the master is
    /// marked stale and `marks` counts it (as `Inner::mark_stale` does).
    pub(crate) async fn connect(
        config: &RedisConfig,
        seed: &ConnectionInfo,
        host: &str,
        port: u16,
        scripts: &[&str],
        marks: &Arc<AtomicU64>,
    ) -> RedisResult<Self> {
        let stale = Arc::new(AtomicBool::new(false));
        let on_close: OnClose = {
            let stale = Arc::clone(&stale);
            let marks = Arc::clone(marks);
            Arc::new(move || {
                if !stale.swap(true, Ordering::Relaxed) {
                    marks.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        let mut reads = connect_node(config, seed, host, port, Some(&on_close)).await?;
        load_scripts(&mut reads, scripts).await;
        let writes = match config.replication {
            Replication::Wait { .. } => Some(connect_node(config, seed, host, port, Some(&on_close)).await?),
            Replication::Async => None,
        };
        Ok(Self {
            host: host.to_owned(),
            port,
            reads,
            writes,
            stale,
        })
    }

    /// The connection for `lane`.
    pub(crate) fn connection(&self, lane: Lane) -> MultiplexedConnection {
        match (lane, &self.writes) {
            (Lane::Writes, Some(writes)) => writes.clone(),
            _ => self.reads.clone(),
        }
    }

    /// Routes nothing more here until the next table; true if it was not
    /// stale before.
    pub(crate) fn mark_stale(&self) -> bool {
        !self.stale.swap(true, Ordering::Relaxed)
    }

    pub(crate) fn is_stale(&self) -> bool {
        self.stale.load(Ordering::Relaxed)
    }

    /// `CLUSTER SLOTS` as this master sees it.
    pub(crate) async fn topology(&self) -> RedisResult<Topology> {
        let mut conn = self.reads.clone();
        let reply = direct_query(&mut conn, redis::cmd("CLUSTER").arg("SLOTS")).await?;
        parse_cluster_slots(&reply, &self.host)
    }
}

impl Direct {
    /// A table for `shards`, reusing the masters of `previous` that are at
    /// the same address and not stale (their connections, and the requests
    /// on them, carry on undisturbed) and connecting to the others. A master
    /// that cannot be reached leaves its slots unrouted (they take the
    /// cluster client) rather than failing the table.
    pub(crate) async fn build(
        shards: &[Shard],
        previous: Option<&Direct>,
        config: &RedisConfig,
        seed: &ConnectionInfo,
        scripts: &[&str],
        marks: &Arc<AtomicU64>,
    ) -> Self {
        let mut slots = vec![u16::MAX; CLUSTER_SLOTS as usize];
        let mut masters: Vec<Arc<Master>> = Vec::with_capacity(shards.len());
        for shard in shards {
            let reused = previous.and_then(|p| {
                p.masters
                    .iter()
                    .find(|m| m.host == shard.host && m.port == shard.port && !m.is_stale())
                    .cloned()
            });
            let master = match reused {
                Some(m) => m,
                None => match Master::connect(config, seed, &shard.host, shard.port, scripts, marks).await {
                    Ok(m) => Arc::new(m),
                    Err(_) => continue,
                },
            };
            let index = u16::try_from(masters.len()).expect("fewer than 65535 masters");
            masters.push(master);
            for &(start, end) in &shard.ranges {
                for slot in start..=end {
                    slots[slot as usize] = index;
                }
            }
        }
        Self { slots, masters }
    }

    /// The master of `slot`, unless none answered or it is stale.
    pub(crate) fn master(&self, slot: u16) -> Option<&Arc<Master>> {
        let index = *self.slots.get(usize::from(slot))?;
        self.masters.get(usize::from(index)).filter(|m| !m.is_stale())
    }

    /// Which master serves `slot` (an index into this table), unless none
    /// answered or it is stale: keys with the same index go to one master.
    pub(crate) fn master_index(&self, slot: u16) -> Option<usize> {
        let index = usize::from(*self.slots.get(usize::from(slot))?);
        self.masters.get(index).filter(|m| !m.is_stale()).map(|_| index)
    }

    /// The masters that are not stale (to read the topology from).
    pub(crate) fn healthy_masters(&self) -> impl Iterator<Item = &Arc<Master>> {
        self.masters.iter().filter(|m| !m.is_stale())
    }
}

/// What to do when a connection closes (see [`connect_node`]).
pub(crate) type OnClose = Arc<dyn Fn() + Send + Sync>;

/// One multiplexed connection to a node, with the seed's credentials and
/// protocol; `on_close` runs when the connection closes (RESP3 only: the
/// `redis` crate tells a push sender, which it takes only with RESP3).
///
/// Why: a request sent on a connection the server has closed fails as one
/// cut off in flight does (`BrokenPipe` both), so a write would be in
/// doubt though it never left. The closed connection's master is marked
/// stale the moment its driver reads the close, and the next request takes
/// another route while the table is rebuilt.
pub(crate) async fn connect_node(
    config: &RedisConfig,
    seed: &ConnectionInfo,
    host: &str,
    port: u16,
    on_close: Option<&OnClose>,
) -> RedisResult<MultiplexedConnection> {
    let info = seed.clone().set_addr(ConnectionAddr::Tcp(host.to_owned(), port));
    let resp3 = info.redis_settings().protocol().supports_resp3();
    let client = redis::Client::open(info)?;
    let mut connection_config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(config.connect_timeout))
        .set_response_timeout(Some(config.request_timeout));
    if let (Some(on_close), true) = (on_close, resp3) {
        let on_close = Arc::clone(on_close);
        connection_config = connection_config.set_push_sender(move |push: PushInfo| {
            if push.kind == PushKind::Disconnection {
                on_close();
            }
            Ok::<(), Infallible>(())
        });
    }
    client
        .get_multiplexed_async_connection_with_config(&connection_config)
        .await
}

/// Loads the store's scripts on the server behind `conn` (best effort), so
/// that a master new to the store — a replica just promoted: scripts run
/// with `EVAL` are not copied to replicas — does not answer `NOSCRIPT` to
/// the first write of each. That costs a resend, and with `Replication::Wait`
/// on a master without replicas the `WAIT` sent with the refused try blocks
/// for its whole timeout first.
pub(crate) async fn load_scripts(conn: &mut impl ConnectionLike, scripts: &[&str]) {
    let mut pipe = redis::pipe();
    for code in scripts {
        pipe.cmd("SCRIPT").arg("LOAD").arg(*code);
    }
    let _ = conn.req_packed_commands(&pipe, 0, pipe.len()).await;
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
        // The cluster client knows its nodes by the endpoints of
        // `CLUSTER SLOTS`, which an `ASK` names them by too. It connects to
        // no node it does not know (a master just added): the store sends
        // an asked try on a connection of its own instead
        // (`Inner::asked_connection`).
        Target::Node(host, port, _) => SingleNodeRoutingInfo::ByAddress {
            host: host.to_owned(),
            port,
        },
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
/// A node whose endpoint is unknown (null or `?`: a cluster configured
/// `cluster-preferred-endpoint-type unknown-endpoint`, behind one address)
/// or empty (a one-node cluster that no other node told its address) is
/// reached at `answered`, the host that gave the reply, as the Redis docs
/// say a client should.
pub(crate) fn parse_cluster_slots(reply: &Value, answered: &str) -> RedisResult<Topology> {
    let bad = || RedisError::from((ErrorKind::UnexpectedReturnType, "malformed CLUSTER SLOTS reply"));
    let Value::Array(ranges) = reply else {
        return Err(bad());
    };
    let mut shards: Vec<Shard> = Vec::new();
    let mut nodes: Vec<(String, u16)> = Vec::new();
    // A slot claimed by two ranges (two masters, or one range twice) is not
    // a topology: routes and list cursors need one master per slot.
    let mut claimed = vec![false; CLUSTER_SLOTS as usize];
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
        if start > end {
            // Backwards, or empty (`end = start - 1`, which slicing takes
            // for an empty range: the shard would get a first slot another
            // serves, and a listing would scan that one twice, this never).
            return Err(bad());
        }
        let slots = &mut claimed[start as usize..=end as usize];
        if slots.iter().any(|c| *c) {
            return Err(bad());
        }
        slots.fill(true);
        let mut addrs = fields
            .iter()
            .skip(2)
            .map(|node| node_addr(node, answered).ok_or_else(bad));
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

fn node_addr(node: &Value, answered: &str) -> Option<(String, u16)> {
    let Value::Array(parts) = node else { return None };
    let host = match parts.first()? {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok()?,
        Value::SimpleString(s) => s.clone(),
        Value::Nil => String::new(),
        _ => return None,
    };
    let host = match host.as_str() {
        "" | "?" if answered.is_empty() => return None,
        "" | "?" => answered.to_owned(),
        _ => host,
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
        let (shards, nodes) = parse_cluster_slots(&reply, "127.0.0.1").unwrap();
        let firsts: Vec<_> = shards.iter().map(|s| (s.first_slot, s.port)).collect();
        assert_eq!(firsts, vec![(0, 7001), (5461, 7002), (10923, 7003)]);
        assert_eq!(nodes.len(), 4);
        assert!(nodes.contains(&("127.0.0.1".to_owned(), 7004)));
        assert_eq!(shards[1].ranges, vec![(5461, 9000), (9001, 10922)]);
    }

    #[test]
    fn malformed_cluster_slots_is_an_error() {
        assert!(parse_cluster_slots(&Value::Int(3), "h").is_err());
        assert!(parse_cluster_slots(&Value::Array(vec![]), "h").is_err());
        assert!(parse_cluster_slots(&Value::Array(vec![Value::Array(vec![Value::Int(0)])]), "h").is_err());
        let beyond = Value::Array(vec![Value::Array(vec![
            Value::Int(0),
            Value::Int(16_384),
            node("h", 1),
        ])]);
        assert!(parse_cluster_slots(&beyond, "h").is_err());
        let range = |start: i64, end: i64, port: i64| {
            Value::Array(vec![Value::Int(start), Value::Int(end), node("h", port)])
        };
        let backwards = Value::Array(vec![range(10, 5, 1)]);
        assert!(parse_cluster_slots(&backwards, "h").is_err(), "start after end");
        // An empty range (end = start - 1) inside another node's: its node
        // would be listed from a slot the other serves.
        let empty = Value::Array(vec![
            range(0, 5000, 1),
            range(3000, 2999, 2),
            range(5001, 16383, 2),
        ]);
        assert!(parse_cluster_slots(&empty, "h").is_err(), "an empty range");
        let overlap = Value::Array(vec![range(0, 100, 1), range(100, 200, 2)]);
        assert!(
            parse_cluster_slots(&overlap, "h").is_err(),
            "slot 100 claimed twice"
        );
        let twice = Value::Array(vec![range(0, 100, 1), range(0, 100, 1)]);
        assert!(
            parse_cluster_slots(&twice, "h").is_err(),
            "one range listed twice"
        );
        assert!(parse_cluster_slots(&Value::Array(vec![range(0, 100, 1), range(101, 200, 2)]), "h").is_ok());
    }
}
