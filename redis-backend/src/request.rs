//! The request machinery: how one operation's requests reach the servers,
//! are resent, and are acknowledged. The store's operations (`store.rs`)
//! and listing (`list.rs`) are built on it; it knows nothing of either.
//!
//! Request path, in order: the operation takes its deadline (now + the
//! request timeout: one budget for all its round trips and resends) → each
//! attempt picks a route (the key's master in the direct table unless that
//! master is stale, else the cluster client; see `conn::Direct`) and a lane
//! (writes that wait for replicas on connections of their own, see
//! `conn::Lane`) → sends (with `WAIT` in the same pipeline when the write
//! asks for replicas, and a fence before it after a doubtful try, see
//! `scripts.rs`) → on failure, classifies, tells the stuck-client detector,
//! and resends after a short doubling pause while the deadline allows → a
//! write's success is acknowledged only through [`Inner::acknowledge`],
//! which checks the `WAIT` result on every path.
//!
//! The routes are kept here too: the direct table is rebuilt in the
//! background when a master goes stale, and the cluster client is replaced
//! when the stuck-client detector (`health.rs`) finds it wedged.

use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

use redis::aio::MultiplexedConnection;
use redis::{Cmd, ConnectionAddr, ConnectionInfo, Pipeline, RedisError, RedisResult, Value};
use session_engine::{Error, OpenMetricsWriter, Result};
use tokio::time::timeout;

use crate::config::{Deployment, RedisConfig, Replication};
use crate::conn::{
    connect_node, direct_pipeline, direct_query, Conn, Direct, Lane, Master, OnClose, Shard, Target, Topology,
};
use crate::error::{classify, give_up, node_answered, node_wide, protocol, Fault};
use crate::health::Health;
use crate::keys::{slot_of, KeySpace};
use crate::limits::{
    ASKED_NODES_MAX, DIRECT_REBUILD_INTERVAL, KNOWN_NODES_MAX, PIPELINE_KEYS_MAX, RETRY_BACKOFF_MAX,
    RETRY_BACKOFF_MIN,
};
use crate::reply::{self, Replicas};
use crate::scripts::{Script, Scripts, FENCE};

/// Counters of a store's life so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RedisStats {
    /// Times the client was replaced because nothing succeeded for
    /// `stuck_after` while a fresh client found the servers serving.
    pub client_rebuilds: u64,
    /// Requests resent after a failed attempt.
    pub resends: u64,
    /// `update` and `try_update` commits that lost a race and reran the
    /// closure.
    pub update_conflicts: u64,
    /// Writes that too few replicas acknowledged in time (`WAIT`).
    pub replication_shortfalls: u64,
}

impl RedisStats {
    /// Writes the counters as a complete OpenMetrics exposition (ending in
    /// `# EOF`), each a counter family `<prefix>_<name>` (sample
    /// `<prefix>_<name>_total`): `client_rebuilds`, `resends`,
    /// `update_conflicts`, `replication_shortfalls`. Replication lag is
    /// [`RedisStore::replication_lag`](crate::RedisStore::replication_lag)'s
    /// (a round trip per master); to serve both in one exposition, write
    /// each one's families and end with one `# EOF`.
    ///
    /// # Errors
    /// Those of `out` (none for a `String`).
    ///
    /// # Panics
    /// If `prefix` is neither empty nor `[a-zA-Z_][a-zA-Z0-9_]*`.
    pub fn write_openmetrics(&self, out: &mut impl std::fmt::Write, prefix: &str) -> std::fmt::Result {
        let mut w = OpenMetricsWriter::new(out, prefix);
        self.families(&mut w)?;
        w.eof()
    }

    /// The families of [`write_openmetrics`](Self::write_openmetrics),
    /// without the closing `# EOF`.
    ///
    /// # Errors
    /// Those of `out`.
    ///
    /// # Panics
    /// If `prefix` is neither empty nor `[a-zA-Z_][a-zA-Z0-9_]*`.
    pub fn write_openmetrics_families(
        &self,
        out: &mut impl std::fmt::Write,
        prefix: &str,
    ) -> std::fmt::Result {
        self.families(&mut OpenMetricsWriter::new(out, prefix))
    }

    fn families<W: std::fmt::Write>(&self, w: &mut OpenMetricsWriter<'_, W>) -> std::fmt::Result {
        w.counter(
            "client_rebuilds",
            "Clients replaced by the stuck-client detector.",
            self.client_rebuilds,
        )?;
        w.counter("resends", "Requests resent after a failed attempt.", self.resends)?;
        w.counter(
            "update_conflicts",
            "update and try_update commits that lost a race and reran the closure.",
            self.update_conflicts,
        )?;
        w.counter(
            "replication_shortfalls",
            "Writes too few replicas acknowledged in time (WAIT).",
            self.replication_shortfalls,
        )
    }
}

/// The state every request of a store shares: its configuration, its
/// clients and routes, the stuck-client detector and the counters. One per
/// store (its clones share it).
pub(crate) struct Inner {
    pub(crate) config: RedisConfig,
    pub(crate) keys: KeySpace,
    pub(crate) scripts: Scripts,
    conn: RwLock<Conn>,
    /// The runtime `connect` ran on: it drives every connection of the
    /// store, so new connections are made there too.
    home: tokio::runtime::Handle,
    /// Itself, for background tasks.
    me: Weak<Inner>,
    /// The time base of `direct_retry_at_ms`.
    origin: Instant,
    cluster: bool,
    /// A cluster whose requests may go straight to a slot's master (not
    /// for a store configured `debug_without_direct_routes`).
    direct_routes: bool,
    /// The configured servers; the first also lends its credentials to
    /// connections to nodes learnt from the cluster.
    seeds: Vec<ConnectionInfo>,
    /// Every node `CLUSTER SLOTS` named: a rebuild connects through any that
    /// still answers, even if the seeds are the nodes that failed.
    known_nodes: RwLock<Vec<(String, u16)>>,
    health: Health,
    rebuild: tokio::sync::Mutex<()>,
    /// The store's own routes to the masters (see `conn::Direct`).
    direct: RwLock<Option<Arc<Direct>>>,
    direct_building: AtomicBool,
    /// No new `Direct` is built before this (ms since `origin`).
    direct_retry_at_ms: AtomicU64,
    request_timeout_ms: u64,
    resends: AtomicU64,
    update_conflicts: AtomicU64,
    shortfalls: AtomicU64,
    /// Direct routes marked stale (see [`Inner::mark_stale`]).
    stale_marks: Arc<AtomicU64>,
    /// New subscriptions made through this store: every
    /// `INDEX_TIDY_EVERY`th tidies its topic's index (`state.rs`).
    pub(crate) subscriptions: AtomicU64,
    /// The store's own connections to nodes `ASK` redirects named (see
    /// [`Inner::asked_connection`]): host, port, lane; the latest last, at
    /// most [`ASKED_NODES_MAX`].
    asked: Mutex<Vec<AskedConnection>>,
}

/// One of [`Inner::asked`]'s connections: host, port, lane, connection,
/// and whether the connection has closed (see [`connect_node`]: a request
/// sent on it would be in doubt, so it is connected afresh instead).
type AskedConnection = (Arc<str>, u16, Lane, MultiplexedConnection, Arc<AtomicBool>);

/// What a request does to data, which decides its error and its `WAIT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Changes nothing the caller asked for (a `get` slides the deadline,
    /// as a side effect: not waited for).
    Read,
    /// Changes a session (`WAIT` when configured).
    Write,
    /// Changes a session, but losing the change in a failover is harmless,
    /// so it never waits for replicas (which would put a replica round trip,
    /// and a shard without replica's `OutcomeUnknown`, on a hot path): a
    /// rate-limit charge (forgotten, it gives its tokens back) and the lazy
    /// removal of stale topic index entries (come back, they are removed
    /// again). Its failures are a write's: a doubtful attempt that the
    /// retries cannot settle is `OutcomeUnknown`.
    Unacked,
}

/// How one attempt should be sent.
#[derive(Clone, Debug, Default)]
// Each flag is an independent fact about the attempts so far, read on its own.
#[allow(clippy::struct_excessive_bools)]
pub(crate) struct Attempt {
    /// Send scripts as `EVAL` (the node answered `NOSCRIPT`).
    pub(crate) eval: bool,
    /// A pipeline element was redirected (`MOVED`): let the client follow a
    /// single command's redirect (refreshing its slot map) before resending.
    pub(crate) redirected: bool,
    /// The node an `ASK` redirect named, and the slot: the key's slot is
    /// migrating there and the key has moved, so the next attempt goes to
    /// that node (on a connection of the store's own, see
    /// [`Inner::asked_connection`]) after `ASKING`, in one pipeline (the slot map does not
    /// change until the migration ends, and the client does not follow
    /// redirects itself: `CLUSTER_CLIENT_RETRIES`).
    pub(crate) ask: Option<AskNode>,
    /// An earlier attempt may have applied: a write that waits for replicas
    /// sends the fence before its `WAIT` (see `scripts.rs`).
    pub(crate) fence: bool,
    /// Where the attempts that may have applied went: `None` by the key's
    /// route (its master then, which a `MOVED` or a failover may change:
    /// the new owner holds what the old one applied, or a migrated key
    /// carried it), else the node an `ASK` named. A fence and `WAIT` on one
    /// node say nothing of a write another node applied: a resend by
    /// another route than a doubtful try (an `ASK` while the slot
    /// migrates) confirms no replica.
    pub(crate) doubt_at: Vec<Option<AskNode>>,
    /// An earlier attempt was answered `TRYAGAIN`: the key's slot
    /// migrates, and a multi-key command with one of its keys still on
    /// the old node and another not is refused there until the keys move.
    pub(crate) try_again: bool,
}

/// The node an `ASK` redirect named (see [`Attempt::ask`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AskNode {
    /// As the redirect names it: an IP address (IPv6 without brackets) or,
    /// in a cluster that announces hostnames, a hostname: the endpoint the
    /// node has in `CLUSTER SLOTS` too, which the cluster client knows it by.
    pub(crate) host: Arc<str>,
    pub(crate) port: u16,
    /// The slot the redirect was for.
    pub(crate) slot: u16,
}

impl AskNode {
    /// The node of `ASK <slot> <endpoint>:<port>` (`endpoint_port` is the
    /// part after the slot): split at the last `:`, since an IPv6 endpoint
    /// holds colons itself; brackets around it are taken off.
    pub(crate) fn parse(endpoint_port: &str, slot: u16) -> Option<Self> {
        let (host, port) = endpoint_port.rsplit_once(':')?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() {
            return None;
        }
        Some(Self {
            host: host.into(),
            port: port.parse().ok()?,
            slot,
        })
    }
}

/// A request's reply and what its attempts leave open.
pub(crate) struct Reply<T> {
    pub(crate) value: T,
    /// An earlier attempt failed after it may have run: the reply may be to
    /// a resend of a request that already took effect.
    pub(crate) resent_after_doubt: bool,
}

/// How the confirmation script is named in a protocol error (it is sent
/// as `EVAL` only).
const CONFIRM_COMMAND: &str = "EVAL (confirm script)";

/// The state a write call answered from without writing it, which
/// [`Inner::confirm_state`] checks where its fence runs.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Expect<'a> {
    /// No live session (`NotFound`).
    Gone,
    /// A live session (`insert`'s `AlreadyExists`).
    Held,
    /// A live session at this version, with this metadata (what a
    /// `try_update` closure refused: after a failover that lost an update,
    /// another client's update can give the same version other metadata).
    Version(&'a [u8], &'a [u8]),
}

/// A request's value and what the replicas said of it.
pub(crate) struct Acked {
    pub(crate) value: Value,
    pub(crate) replicas: Replicas,
}

/// One key's reply in a batch (see [`Inner::script_batch`]).
#[derive(Debug)]
pub(crate) enum BatchReply {
    /// The script's reply, to decode as a single request's.
    Value(Value),
    /// The server refused this key's request (a script error, `NOPERM`...):
    /// the error a single request would report.
    Failed(Error),
    /// The key holds another type (`WRONGTYPE`): data that is not a
    /// session's, with the error a single request would report.
    Foreign(Error),
    /// Not run for this key (its slot moved: `MOVED`, `ASK`; `TRYAGAIN`):
    /// to send on its own, which follows redirects and retries. A state of
    /// the whole node (`LOADING`, `CLUSTERDOWN`...) resends the pipeline
    /// instead (see [`Inner::batch`]).
    Resend,
}

/// Where the keys of one batch go (see [`Inner::batches`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum BatchRoute {
    /// A master of the direct table, by index.
    Master(usize),
    /// A slot whose master has no direct route: the cluster client routes
    /// a pipeline by its first key, so its keys must share a slot.
    Slot(u16),
    /// The single server.
    Server,
}

/// Judges one attempt on a direct route: a failure of the route marks its
/// master stale (see [`StaleGuard::settle`]), and so does an attempt cut
/// off by its deadline (the future dropped mid-flight once the deadline has
/// passed) after waiting at least half a request timeout for the master.
/// An attempt dropped earlier was dropped by its caller (a handler
/// cancelled, an outer timeout): that says nothing of the route. Nor does
/// one cut off sooner: a budget of its own far below the operation's (a
/// tidying's 50 ms) runs out on a master that is merely slow, and the
/// next operation's full budget judges it.
struct StaleGuard<'a> {
    inner: &'a Inner,
    master: Arc<Master>,
    /// Since when a request is in flight (`None`: none is).
    armed: Option<Instant>,
    /// The operation's deadline.
    deadline: Instant,
}

impl StaleGuard<'_> {
    /// The attempt ended: marks the master stale if `failed` (the route
    /// failed it, see [`Via::answered`]).
    fn settle(&mut self, failed: bool) {
        self.armed = None;
        if failed {
            self.inner.mark_stale(&self.master);
        }
    }

    fn arm(&mut self) {
        self.armed = Some(Instant::now());
    }
}

impl Drop for StaleGuard<'_> {
    fn drop(&mut self) {
        let Some(since) = self.armed else { return };
        let now = Instant::now();
        if now >= self.deadline && now.duration_since(since) >= self.inner.config.request_timeout / 2 {
            self.inner.mark_stale(&self.master);
        }
    }
}

/// A connection of the store's own to a node an `ASK` named (see
/// [`Inner::asked_connection`]), forgotten when an attempt on it fails
/// without an answer (the next attempt connects afresh).
struct AskedGuard<'a> {
    inner: &'a Inner,
    host: Arc<str>,
    port: u16,
    lane: Lane,
}

impl AskedGuard<'_> {
    fn settle(&self, failed: bool) {
        if failed {
            self.inner.forget_asked(&self.host, self.port, self.lane);
        }
    }
}

/// The connection one attempt goes out on.
enum Via<'a> {
    /// Straight to the slot's master (cluster: see `conn::Direct`).
    Direct(StaleGuard<'a>, MultiplexedConnection),
    /// Straight to the node an `ASK` named.
    Asked(AskedGuard<'a>, MultiplexedConnection),
    /// Through the `redis` crate's client.
    Client(Conn, Lane),
}

impl Via<'_> {
    /// A failure that says nothing against the route: the master answered
    /// for a slot it still serves (an `ASK` or `TRYAGAIN` too: the slot is
    /// still this master's while it migrates). See [`node_answered`].
    fn answered(err: &RedisError) -> bool {
        node_answered(err)
    }

    async fn query(&mut self, cmd: &Cmd, target: Target<'_>) -> RedisResult<Value> {
        match self {
            Via::Direct(guard, conn) => {
                guard.arm();
                let r = direct_query(conn, cmd).await;
                guard.settle(!r.as_ref().err().is_none_or(Via::answered));
                r
            }
            Via::Asked(guard, conn) => {
                let r = direct_query(conn, cmd).await;
                guard.settle(!r.as_ref().err().is_none_or(Via::answered));
                r
            }
            Via::Client(conn, lane) => conn.query(cmd, target, *lane).await,
        }
    }

    async fn pipeline(&mut self, pipe: &Pipeline, target: Target<'_>) -> RedisResult<Vec<Value>> {
        match self {
            Via::Direct(guard, conn) => {
                guard.arm();
                let r = direct_pipeline(conn, pipe).await;
                guard.settle(match &r {
                    Ok(values) => values.iter().any(|v| match v {
                        Value::ServerError(e) => !Via::answered(&e.clone().into()),
                        _ => false,
                    }),
                    Err(e) => !Via::answered(e),
                });
                r
            }
            Via::Asked(guard, conn) => {
                let r = direct_pipeline(conn, pipe).await;
                guard.settle(r.as_ref().err().is_some_and(|e| !Via::answered(e)));
                r
            }
            Via::Client(conn, lane) => conn.pipeline(pipe, target, *lane).await,
        }
    }
}

impl Inner {
    /// The shared state of a store connected through `conn` to `seeds`,
    /// on the current runtime (its home: see `RedisStore::connect`).
    pub(crate) fn new(
        config: RedisConfig,
        keys: KeySpace,
        scripts: Scripts,
        conn: Conn,
        seeds: Vec<ConnectionInfo>,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| Inner {
            home: tokio::runtime::Handle::current(),
            me: me.clone(),
            origin: Instant::now(),
            cluster: matches!(config.deployment, Deployment::Cluster(_)),
            direct_routes: matches!(config.deployment, Deployment::Cluster(_)) && config.direct_routes,
            request_timeout_ms: u64::try_from(config.request_timeout.as_millis()).unwrap_or(u64::MAX),
            health: Health::new(config.stuck_after),
            keys,
            scripts,
            conn: RwLock::new(conn),
            seeds,
            known_nodes: RwLock::new(Vec::new()),
            rebuild: tokio::sync::Mutex::new(()),
            direct: RwLock::new(None),
            direct_building: AtomicBool::new(false),
            direct_retry_at_ms: AtomicU64::new(0),
            resends: AtomicU64::new(0),
            update_conflicts: AtomicU64::new(0),
            shortfalls: AtomicU64::new(0),
            stale_marks: Arc::default(),
            subscriptions: AtomicU64::new(0),
            asked: Mutex::new(Vec::new()),
            config,
        })
    }

    /// The first configured server's address (`host:port`; names a single
    /// server, whose topology has no address).
    pub(crate) fn server_address(&self) -> String {
        self.seeds
            .first()
            .map_or_else(String::new, |seed| seed.addr().to_string())
    }

    /// True for a Redis Cluster (direct routes, slots), false for one server.
    pub(crate) fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// Counters since connect.
    pub(crate) fn stats(&self) -> RedisStats {
        RedisStats {
            client_rebuilds: self.health.rebuilds(),
            resends: self.resends.load(Ordering::Relaxed),
            update_conflicts: self.update_conflicts.load(Ordering::Relaxed),
            replication_shortfalls: self.shortfalls.load(Ordering::Relaxed),
        }
    }

    /// Routes nothing more to `master` until the next direct table.
    fn mark_stale(&self, master: &Master) {
        if master.mark_stale() {
            self.stale_marks.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The store's own connection to the node an `ASK` named, on `lane`:
    /// kept from an earlier redirect to it, else made now (on the home
    /// runtime, with the seed's credentials). Not through the cluster
    /// client: it reaches only the nodes of its slot map, and a master
    /// added for a resharding is in none until its first slot is migrated.
    async fn asked_connection(&self, node: &AskNode, lane: Lane) -> RedisResult<Via<'_>> {
        let lane = match self.config.replication {
            Replication::Wait { .. } => lane,
            Replication::Async => Lane::Reads,
        };
        let guard = AskedGuard {
            inner: self,
            host: Arc::clone(&node.host),
            port: node.port,
            lane,
        };
        let kept = self
            .asked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|(h, p, l, _, closed)| {
                *h == node.host && *p == node.port && *l == lane && !closed.load(Ordering::Relaxed)
            })
            .map(|(_, _, _, c, _)| c.clone());
        if let Some(conn) = kept {
            return Ok(Via::Asked(guard, conn));
        }
        let (config, seed) = (self.config.clone(), self.seeds[0].clone());
        let (host, port) = (node.host.to_string(), node.port);
        let closed = Arc::new(AtomicBool::new(false));
        let on_close: OnClose = {
            let closed = Arc::clone(&closed);
            Arc::new(move || closed.store(true, Ordering::Relaxed))
        };
        let conn = self
            .home
            .spawn(async move { connect_node(&config, &seed, &host, port, Some(&on_close)).await })
            .await
            .map_err(|e| RedisError::from((redis::ErrorKind::Io, "connect task failed", e.to_string())))??;
        {
            let mut asked = self.asked.lock().unwrap_or_else(PoisonError::into_inner);
            asked.retain(|(h, p, l, ..)| !(*h == node.host && *p == node.port && *l == lane));
            if asked.len() >= ASKED_NODES_MAX {
                asked.remove(0);
            }
            asked.push((Arc::clone(&node.host), node.port, lane, conn.clone(), closed));
        }
        Ok(Via::Asked(guard, conn))
    }

    /// Drops the connection to an asked node (see [`Inner::asked_connection`]).
    fn forget_asked(&self, host: &str, port: u16, lane: Lane) {
        self.asked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(h, p, l, ..)| !(&**h == host && *p == port && *l == lane));
    }

    /// The connections to asked nodes kept open (tests).
    pub(crate) fn asked_connections_open(&self) -> usize {
        self.asked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(.., closed)| !closed.load(Ordering::Relaxed))
            .count()
    }

    /// Direct routes marked stale since connect (for tests).
    pub(crate) fn routes_marked_stale(&self) -> u64 {
        self.stale_marks.load(Ordering::Relaxed)
    }

    /// An `update` lost a race (see [`RedisStats::update_conflicts`]).
    pub(crate) fn count_update_conflict(&self) {
        self.update_conflicts.fetch_add(1, Ordering::Relaxed);
    }

    /// The deadline of an operation starting now: one request timeout for
    /// all its round trips and resends.
    pub(crate) fn deadline(&self) -> Instant {
        Instant::now() + self.config.request_timeout
    }

    /// A write call's answer found on the master without a write of its
    /// own that no session backs (`NotFound`: the session gone), given as
    /// the engine gives such answers under `Durability::Always`: only once
    /// the state it reports is safe ([`Inner::confirm_state`]). `answer`,
    /// or `OutcomeUnknown` if the replicas did not confirm it.
    pub(crate) async fn confirm_found(
        &self,
        key: &[u8],
        deadline: Instant,
        answer: Error,
        first: Option<&Replicas>,
    ) -> Error {
        match self
            .confirm_state(key, deadline, &answer.to_string(), Expect::Gone, first)
            .await
        {
            Ok(()) => answer,
            Err(e) => e,
        }
    }

    /// Confirms that the replicas have the state of `key`'s slot that a
    /// write call found and answers from without writing it (`found`, for
    /// the error; `expect`, for the check): a session gone, an id taken,
    /// metadata a `try_update` closure refused. With [`Replication::Wait`]
    /// that state may be another client's write that no replica has yet,
    /// which a failover would undo. The confirmation is one script on the
    /// session's slot ([`CONFIRM`](crate::scripts)) that checks the state
    /// where it runs and writes the fence (so that this connection's `WAIT`
    /// covers everything the master applied before it, on Redis 7.2+ and
    /// Valkey as on 7.0), then `WAIT`, within `deadline`; `OutcomeUnknown`
    /// unless the state is there and the replicas confirm it. Without
    /// `Replication::Wait`, `Ok` at once.
    ///
    /// The check is what makes the master the confirmation reaches speak
    /// for the answer, whichever it is (a resend after a failover or a
    /// lost reply, a `MOVED` to the slot's new owner): after a failover
    /// between the answer and the confirmation, the promoted replica may
    /// never have had the delete, insert or update answered from, and its
    /// replicas would confirm that it has not. While the slot migrates
    /// (`ASK`, or `TRYAGAIN` from the old node while the session is still
    /// there and the fence key is not), the node answered from may be
    /// either, and neither runs a two-key script with one key on each
    /// side: the next try sends a no-op instead, whose 0 is
    /// `OutcomeUnknown` (after that one round trip and its `WAIT`, and the
    /// `ASK` a no-op on the old node gets).
    ///
    /// `first`: what the `WAIT` in the answering write's own pipeline said,
    /// if it had one. Short, it already tells that the replicas lag: the
    /// answer is `OutcomeUnknown` without a second wait (on a shard without
    /// a replica, a second `WAIT` timeout).
    pub(crate) async fn confirm_state(
        &self,
        key: &[u8],
        deadline: Instant,
        found: &str,
        expect: Expect<'_>,
        first: Option<&Replicas>,
    ) -> Result<()> {
        let Replication::Wait { replicas: wanted, .. } = self.config.replication else {
            return Ok(());
        };
        if first.is_some_and(|first| !matches!(first, Replicas::Acked(n) if *n >= i64::from(wanted))) {
            self.shortfalls.fetch_add(1, Ordering::Relaxed);
            return Err(Error::OutcomeUnknown {
                reason: format!(
                    "the master answered from a state ({found}) its replicas did not confirm, which a failover \
                     could undo: the write's WAIT came back short"
                ),
            });
        }
        let fence_key = crate::keys::fence_key(key);
        let args: &[&[u8]] = match expect {
            Expect::Gone => &[b"gone"],
            Expect::Held => &[b"held"],
            Expect::Version(version, metadata) => &[b"version", version, metadata],
        };
        let confirm = self.scripts.confirm.cmd_keys(true, &[key, &fence_key], args);
        let mut no_op = redis::cmd("EVAL");
        no_op.arg("return 0").arg(1).arg(&fence_key);
        let reply = self
            .request(Kind::Write, deadline, &fence_key, |attempt| {
                if attempt.ask.is_none() && !attempt.try_again {
                    Cow::Borrowed(&confirm)
                } else {
                    Cow::Borrowed(&no_op)
                }
            })
            .await;
        let unconfirmed = |why: String| Error::OutcomeUnknown {
            reason: format!(
                "the master answered from a state ({found}) its replicas did not confirm, which a failover \
                 could undo: {why}"
            ),
        };
        let reply = match reply {
            Ok(reply) => reply.value,
            Err(e) => return Err(unconfirmed(format!("asking them failed ({e})"))),
        };
        if !reply::flag(CONFIRM_COMMAND, &reply.value, true)? {
            return Err(unconfirmed(
                "the master the confirmation reached does not hold that state (it changed since, or the \
                 master that answered failed over and its successor never had it), or the slot migrates"
                    .into(),
            ));
        }
        match self.acknowledge(reply.replicas, ()) {
            Ok(()) => Ok(()),
            Err(Error::OutcomeUnknown { .. }) => {
                Err(unconfirmed(match replicas_said(&self.config.replication) {
                    Some(wanted) => format!("fewer than {wanted} replicas confirmed it in time"),
                    None => "no replica confirmed it".into(),
                }))
            }
            Err(e) => Err(unconfirmed(e.to_string())),
        }
    }

    /// The one way a write that took effect (now or by an earlier attempt)
    /// is acknowledged: with [`Replication::Wait`], only if the replicas
    /// confirmed it (on every path: the `WAIT` of a resend after a doubtful
    /// try covers the earlier try through the fence, see `scripts.rs`).
    pub(crate) fn acknowledge<T>(&self, replicas: Replicas, value: T) -> Result<T> {
        let Replication::Wait {
            replicas: wanted,
            timeout,
        } = self.config.replication
        else {
            return Ok(value);
        };
        let shortfall = |reason: String| {
            self.shortfalls.fetch_add(1, Ordering::Relaxed);
            Err(Error::OutcomeUnknown { reason })
        };
        match replicas {
            Replicas::Acked(n) if n >= i64::from(wanted) => Ok(value),
            Replicas::Acked(n) => {
                let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
                self.shortfalls.fetch_add(1, Ordering::Relaxed);
                Err(reply::shortfall(n, wanted, ms))
            }
            Replicas::Unconfirmed(reason) => shortfall(format!(
                "applied on the master, but no replica confirmed it ({reason}): it is lost if that master \
                 fails before replicating it"
            )),
            Replicas::NotAsked => {
                debug_assert!(false, "a write under Replication::Wait went without WAIT");
                shortfall("applied on the master; no replica was asked (a bug: please report)".into())
            }
        }
    }

    pub(crate) fn conn(&self) -> Conn {
        self.conn.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Runs `script` on the master of `key`.
    pub(crate) async fn script(
        &self,
        kind: Kind,
        deadline: Instant,
        script: &Script,
        key: &[u8],
        args: &[&[u8]],
    ) -> Result<Reply<Acked>> {
        self.request(kind, deadline, key, |attempt| {
            Cow::Owned(script.cmd(attempt.eval, key, args))
        })
        .await
    }

    /// Runs a plain read `cmd` on the master of `key`.
    pub(crate) async fn command(
        &self,
        kind: Kind,
        deadline: Instant,
        key: &[u8],
        cmd: &Cmd,
    ) -> Result<Reply<Value>> {
        let reply = self.request(kind, deadline, key, |_| Cow::Borrowed(cmd)).await?;
        Ok(Reply {
            value: reply.value.value,
            resent_after_doubt: reply.resent_after_doubt,
        })
    }

    /// `WAIT`'s arguments for a request of this kind, if it waits.
    fn wait_args(&self, kind: Kind) -> Option<(u32, u64)> {
        match self.config.replication {
            Replication::Wait { replicas, timeout } if kind == Kind::Write => {
                // Whole milliseconds, rounded up (at least 1: `validate`).
                let ms = timeout.as_micros().div_ceil(1000);
                Some((replicas, u64::try_from(ms).unwrap_or(u64::MAX)))
            }
            _ => None,
        }
    }

    /// The route of one attempt to `target`: its master's direct connection
    /// (on `lane`) unless the attempt follows a redirect or there is none,
    /// else the client.
    fn via(
        &self,
        conn: Conn,
        target: Target<'_>,
        lane: Lane,
        redirected: bool,
        deadline: Instant,
    ) -> Via<'_> {
        // A single server has no direct routes: no slot to hash (CRC16 of
        // the key) on every request.
        if self.direct_routes && !redirected {
            if let Some(master) = self.direct_master(target.slot()) {
                let connection = master.connection(lane);
                let guard = StaleGuard {
                    inner: self,
                    master,
                    armed: None,
                    deadline,
                };
                return Via::Direct(guard, connection);
            }
        }
        Via::Client(conn, lane)
    }

    /// Sends a pipeline to `target` on one attempt (see [`Inner::via`]).
    pub(crate) async fn send_pipeline(
        &self,
        conn: Conn,
        pipe: &Pipeline,
        target: Target<'_>,
        deadline: Instant,
    ) -> RedisResult<Vec<Value>> {
        self.via(conn, target, Lane::Reads, false, deadline)
            .pipeline(pipe, target)
            .await
    }

    /// Sends the command `make` builds to the master of `key`, followed in
    /// the same pipeline by `WAIT` for a write when replication asks for it
    /// (after a doubtful try, by the fence and `WAIT` in a pipeline of
    /// their own: `fence_and_wait`). `make` may lend a
    /// command built beforehand (a plain command: not copied per attempt).
    pub(crate) async fn request<'c>(
        &self,
        kind: Kind,
        deadline: Instant,
        key: &[u8],
        make: impl Fn(&Attempt) -> Cow<'c, Cmd>,
    ) -> Result<Reply<Acked>> {
        let wait = self.wait_args(kind);
        let lane = if wait.is_some() { Lane::Writes } else { Lane::Reads };
        let make = &make;
        self.run(kind, deadline, move |conn, attempt| async move {
            let cmd = make(&attempt);
            let (target, mut via) = match &attempt.ask {
                Some(node) => {
                    drop(conn);
                    (
                        Target::Node(&node.host, node.port, node.slot),
                        self.asked_connection(node, lane).await.map_err(not_sent)?,
                    )
                }
                None => (
                    Target::Key(key),
                    self.via(conn, Target::Key(key), lane, attempt.redirected, deadline),
                ),
            };
            if attempt.redirected {
                // A single keyed command follows MOVED inside the client
                // and refreshes its slot map; the pipeline below cannot.
                let mut probe = redis::cmd("EXISTS");
                probe.arg(key);
                via.query(&probe, target).await.map_err(not_sent)?;
            }
            if wait.is_none() && attempt.ask.is_none() {
                return Ok(Acked {
                    value: via.query(&cmd, target).await?,
                    replicas: Replicas::NotAsked,
                });
            }
            let asked = attempt.ask.is_some();
            let mut pipe = redis::pipe();
            if asked {
                pipe.cmd("ASKING");
            }
            pipe.add_command(cmd.into_owned());
            let fenced = match wait {
                Some(wait) if attempt.fence => Some(wait),
                Some((replicas, timeout_ms)) => {
                    pipe.cmd("WAIT").arg(replicas).arg(timeout_ms);
                    None
                }
                None => None,
            };
            let mut values = via.pipeline(&pipe, target).await?.into_iter();
            if asked {
                first_reply(&mut values)?;
            }
            let value = first_reply(&mut values)?;
            let replicas = match (wait, fenced) {
                (_, Some(_)) if attempt.doubt_at.iter().any(|at| *at != attempt.ask) => {
                    Replicas::Unconfirmed(
                        "a try that may have applied went to another node than the resend (the slot is \
                     migrating), whose replicas the resend cannot ask"
                            .into(),
                    )
                }
                (_, Some(wait)) => fence_and_wait(&mut via, target, key, asked, wait).await,
                (Some(_), None) => reply::replicas_from(values, false),
                (None, _) => Replicas::NotAsked,
            };
            Ok(Acked { value, replicas })
        })
        .await
    }

    /// The direct route's master of `slot` (cluster only), starting a
    /// background rebuild of the table if it has none for that slot and it
    /// is time to try again.
    fn direct_master(&self, slot: u16) -> Option<Arc<Master>> {
        if !self.direct_routes {
            return None;
        }
        let table = self.direct.read().unwrap_or_else(PoisonError::into_inner).clone();
        if let Some(master) = table.as_ref().and_then(|t| t.master(slot)) {
            return Some(Arc::clone(master));
        }
        self.schedule_direct();
        None
    }

    /// The indices of `keys` grouped by the master that serves them, each
    /// group a pipeline of at most [`PIPELINE_KEYS_MAX`] keys, in the order
    /// given, with its route: per master of the direct table (cluster), per
    /// slot where a master has no direct route, one route for a single
    /// server. Send them with [`per_route`].
    pub(crate) fn batches(&self, keys: &[Vec<u8>]) -> Vec<(BatchRoute, Vec<usize>)> {
        let table = if self.cluster {
            self.direct.read().unwrap_or_else(PoisonError::into_inner).clone()
        } else {
            None
        };
        let mut unrouted = false;
        let mut batches: Vec<(BatchRoute, Vec<usize>)> = Vec::new();
        // The batch still open for each route.
        let mut open: HashMap<BatchRoute, usize> = HashMap::new();
        for (i, key) in keys.iter().enumerate() {
            let route = if self.cluster {
                let slot = slot_of(key);
                if let Some(index) = table.as_ref().and_then(|t| t.master_index(slot)) {
                    BatchRoute::Master(index)
                } else {
                    unrouted = true;
                    BatchRoute::Slot(slot)
                }
            } else {
                BatchRoute::Server
            };
            match open.get(&route) {
                Some(&b) if batches[b].1.len() < PIPELINE_KEYS_MAX => batches[b].1.push(i),
                _ => {
                    open.insert(route, batches.len());
                    batches.push((route, vec![i]));
                }
            }
        }
        if unrouted {
            self.schedule_direct();
        }
        batches
    }

    /// Runs `script` (without arguments) on each of `keys`, pipelined in one
    /// request to the master of the first key: the caller groups the keys
    /// by master ([`Inner::batches`]). See [`Inner::batch`].
    pub(crate) async fn script_batch(
        &self,
        deadline: Instant,
        script: &Script,
        keys: &[&[u8]],
    ) -> Result<Vec<BatchReply>> {
        self.batch(deadline, &script.command, keys, |i, eval| {
            script.cmd(eval, keys[i], &[])
        })
        .await
    }

    /// Sends `make(i, eval)` for each of `keys` (`i` its index; `eval`: send
    /// scripts as `EVAL`), pipelined in one request to the master of the
    /// first key: the caller groups the keys by master ([`Inner::batches`]).
    /// A read: the pipeline is resent whole, as any read's request, until
    /// one attempt is answered or `deadline` passes; a `NOSCRIPT` for any key
    /// resends it as `EVAL`, and a state of the whole node for any key
    /// (`LOADING`, `CLUSTERDOWN`, `MASTERDOWN`, `READONLY`: see
    /// [`node_wide`]) resends it after a pause, as a single request's would
    /// be (not each key on its own: one retry loop, not one per key). Each
    /// key's reply is then its own
    /// ([`BatchReply`]); `command` names the requests in protocol errors.
    pub(crate) async fn batch(
        &self,
        deadline: Instant,
        command: &str,
        keys: &[&[u8]],
        make: impl Fn(usize, bool) -> Cmd,
    ) -> Result<Vec<BatchReply>> {
        let Some(first) = keys.first() else {
            return Ok(Vec::new());
        };
        let target = Target::Key(first);
        let make = &make;
        let reply = self
            .run(Kind::Read, deadline, |conn, attempt| async move {
                let mut pipe = redis::pipe();
                for i in 0..keys.len() {
                    pipe.add_command(make(i, attempt.eval));
                }
                // Never the redirected route: a batch is not resent whole
                // after a redirect (below), so nothing here follows one.
                let mut via = self.via(conn, target, Lane::Reads, false, deadline);
                let values = match via.pipeline(&pipe, target).await {
                    Ok(values) => values,
                    // Through the cluster client (the master's direct route
                    // stale), one key's redirect fails the whole pipeline,
                    // which goes by its first key: resent whole, it would
                    // meet the same redirect until the deadline. Each key
                    // is read on its own instead, following its redirect.
                    Err(e) if redirect(&e) => return Ok(None),
                    Err(e) => return Err(e),
                };
                // A `NOSCRIPT` (resent as `EVAL`) or a state of the whole
                // node (resent after a pause) for any key is the pipeline's.
                let whole = values.iter().find_map(|v| match v {
                    Value::ServerError(e) => {
                        let err: RedisError = e.clone().into();
                        (classify(&err) == Fault::NoScript || node_wide(&err)).then_some(err)
                    }
                    _ => None,
                });
                match whole {
                    Some(err) => Err(err),
                    None => Ok(Some(values)),
                }
            })
            .await?;
        let Some(values) = reply.value else {
            return Ok((0..keys.len()).map(|_| BatchReply::Resend).collect());
        };
        if values.len() != keys.len() {
            return Err(protocol(
                &format!("{command} (pipeline of {})", keys.len()),
                &Value::Array(values),
                false,
            ));
        }
        let replies = values.into_iter().map(|value| match value {
            Value::ServerError(e) => {
                let e = RedisError::from(e);
                match classify(&e) {
                    fault @ Fault::Refused(_) => {
                        let error = give_up(&fault, false, false, self.request_timeout_ms);
                        if e.code() == Some("WRONGTYPE") {
                            BatchReply::Foreign(error)
                        } else {
                            BatchReply::Failed(error)
                        }
                    }
                    _ => BatchReply::Resend,
                }
            }
            value => BatchReply::Value(value),
        });
        Ok(replies.collect())
    }

    /// Starts a background rebuild of the direct table, at most one at a
    /// time and one per [`DIRECT_REBUILD_INTERVAL`].
    fn schedule_direct(&self) {
        let now = self.since_origin_ms();
        if now >= self.direct_retry_at_ms.load(Ordering::Relaxed)
            && !self.direct_building.swap(true, Ordering::AcqRel)
        {
            if let Some(me) = self.me.upgrade() {
                // On the home runtime: the new connections' drivers must
                // live there, not on whatever runtime this caller uses.
                self.home.spawn(async move {
                    me.build_direct().await;
                    me.direct_building.store(false, Ordering::Release);
                });
            } else {
                self.direct_building.store(false, Ordering::Release);
            }
        }
    }

    /// Builds the direct table from the current topology (bounded by the
    /// connect and request timeouts), keeping the routes of the masters
    /// that did not change; masters that do not answer stay unrouted.
    pub(crate) async fn build_direct(&self) {
        let interval_ms = u64::try_from(DIRECT_REBUILD_INTERVAL.as_millis()).unwrap_or(u64::MAX);
        self.direct_retry_at_ms
            .store(self.since_origin_ms() + interval_ms, Ordering::Relaxed);
        let previous = self.direct.read().unwrap_or_else(PoisonError::into_inner).clone();
        let budget = self.config.connect_timeout + self.config.request_timeout;
        let built = timeout(budget, async {
            let (shards, nodes) = self.topology_for_direct(previous.as_deref()).await?;
            self.remember(nodes);
            let scripts = self.scripts.codes();
            Ok::<_, RedisError>(
                Direct::build(
                    &shards,
                    previous.as_deref(),
                    &self.config,
                    &self.seeds[0],
                    &scripts,
                    &self.stale_marks,
                )
                .await,
            )
        })
        .await;
        if let Ok(Ok(direct)) = built {
            *self.direct.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(direct));
        }
    }

    /// `CLUSTER SLOTS` for a new direct table: from a master whose route
    /// works (not through the cluster client, so that a stalled client
    /// cannot keep the table stale), else through the client, else from
    /// any known node over a fresh connection.
    async fn topology_for_direct(&self, previous: Option<&Direct>) -> RedisResult<Topology> {
        let per_try = self.config.request_timeout;
        let mut last = None;
        for master in previous.into_iter().flat_map(Direct::healthy_masters) {
            match timeout(per_try, master.topology()).await {
                Ok(Ok(topology)) => return Ok(topology),
                Ok(Err(e)) => last = Some(e),
                Err(_) => {}
            }
        }
        let mut conn = self.conn();
        match timeout(per_try, conn.topology()).await {
            Ok(Ok(topology)) => return Ok(topology),
            Ok(Err(e)) => last = Some(e),
            Err(_) => {}
        }
        let known = self
            .known_nodes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for (host, port) in known {
            let probe = async {
                let mut c = connect_node(&self.config, &self.seeds[0], &host, port, None).await?;
                let reply = direct_query(&mut c, redis::cmd("CLUSTER").arg("SLOTS")).await?;
                crate::conn::parse_cluster_slots(&reply, &host)
            };
            match timeout(per_try, probe).await {
                Ok(Ok(topology)) => return Ok(topology),
                Ok(Err(e)) => last = Some(e),
                Err(_) => {}
            }
        }
        Err(last
            .unwrap_or_else(|| RedisError::from((redis::ErrorKind::Io, "no node answered CLUSTER SLOTS"))))
    }

    fn since_origin_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Runs attempts of one request until one succeeds, one fails for good,
    /// or `deadline` passes (see the module docs and `error.rs`).
    pub(crate) async fn run<T, F, Fut>(
        &self,
        kind: Kind,
        deadline: Instant,
        mut attempt: F,
    ) -> Result<Reply<T>>
    where
        F: FnMut(Conn, Attempt) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let mut how = Attempt::default();
        let mut doubt = false;
        let mut backoff = RETRY_BACKOFF_MIN;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                // No budget left to send in (a batch's read of an id its
                // pipeline could not serve, after a slow answer): not sent,
                // and no failure of the deployment either.
                return Err(give_up(
                    &Fault::TimedOut,
                    kind != Kind::Read,
                    doubt,
                    self.request_timeout_ms,
                ));
            }
            let sent_to = how.ask.clone();
            let (fault, answered) = match timeout(left, attempt(self.conn(), how.clone())).await {
                Ok(Ok(value)) => {
                    self.health.success();
                    return Ok(Reply {
                        value,
                        resent_after_doubt: doubt,
                    });
                }
                Ok(Err(err)) => {
                    match err.kind() {
                        redis::ErrorKind::Server(redis::ServerErrorKind::Moved) => {
                            how.redirected = true;
                            how.ask = None;
                        }
                        redis::ErrorKind::Server(redis::ServerErrorKind::Ask) => {
                            how.redirected = false;
                            how.ask = err
                                .redirect_node()
                                .and_then(|(node, slot)| AskNode::parse(node, slot));
                        }
                        redis::ErrorKind::Server(redis::ServerErrorKind::TryAgain) => {
                            how.redirected = false;
                            how.try_again = true;
                        }
                        // Anything else from the node asked keeps asking it.
                        _ => how.redirected = false,
                    }
                    (classify(&err), node_answered(&err))
                }
                Err(_) => (Fault::TimedOut, false),
            };
            if answered {
                self.health.success();
            } else if self.health.failure() {
                // The rebuild runs on the home runtime and outlives this
                // request; the request waits for it only as long as its own
                // deadline allows (a fresh client can take
                // `connect_timeout + request_timeout` to prove itself).
                if let Some(me) = self.me.upgrade() {
                    let rebuild = self.home.spawn(async move { me.rebuild().await });
                    let _ = timeout(deadline.saturating_duration_since(Instant::now()), rebuild).await;
                }
            }
            if fault.maybe_applied() && !how.doubt_at.contains(&sent_to) {
                how.doubt_at.push(sent_to);
            }
            doubt |= fault.maybe_applied();
            how.fence = doubt;
            let give_up = |fault: &Fault| give_up(fault, kind != Kind::Read, doubt, self.request_timeout_ms);
            match fault {
                Fault::NoScript if !how.eval => {
                    how.eval = true;
                    continue;
                }
                Fault::NoScript | Fault::Refused(_) | Fault::TimedOut => return Err(give_up(&fault)),
                Fault::NotApplied(_) | Fault::Ambiguous(_) => {}
            }
            if Instant::now() + backoff >= deadline {
                return Err(give_up(&fault));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
            self.resends.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Replaces the client if a fresh one finds the deployment serving (see
    /// `health.rs`). One caller at a time; the others carry on failing.
    async fn rebuild(&self) {
        let Ok(_guard) = self.rebuild.try_lock() else {
            return;
        };
        self.health.probing();
        let mut seeds = self.seeds.clone();
        for (host, port) in self
            .known_nodes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            seeds.push(
                self.seeds[0]
                    .clone()
                    .set_addr(ConnectionAddr::Tcp(host.clone(), *port)),
            );
        }
        let budget = self.config.connect_timeout + self.config.request_timeout;
        let config = self.config.clone();
        // Connected on the home runtime, which drives the store's
        // connections; awaited from here, whatever runtime this is.
        let fresh = self.home.spawn(async move {
            let mut conn = Conn::connect(&config, &seeds).await.ok()?;
            conn.serving().await.ok()?.then_some(conn)
        });
        let Ok(Ok(Some(conn))) = timeout(budget, fresh).await else {
            return;
        };
        // Wedged means the fresh client works and this one does not. If this
        // one answers too, its requests failed for another reason (a
        // failover still settling, all of them on the shard that failed):
        // keep it.
        let mut current = self.conn();
        if let Ok(Ok(true)) = timeout(self.config.request_timeout, current.serving()).await {
            return;
        }
        *self.conn.write().unwrap_or_else(PoisonError::into_inner) = conn;
        self.health.rebuilt();
        #[cfg(feature = "tracing")]
        tracing::warn!(
            rebuilds = self.health.rebuilds(),
            stuck_after = ?self.config.stuck_after,
            "session-redis: client replaced: every request failed for stuck_after while a fresh client \
             found the servers serving"
        );
    }

    fn remember(&self, nodes: Vec<(String, u16)>) {
        if !nodes.is_empty() {
            remember_nodes(
                &mut self.known_nodes.write().unwrap_or_else(PoisonError::into_inner),
                nodes,
            );
        }
    }

    /// The masters by first slot (one pseudo-shard for a single server);
    /// remembers every node for rebuilds. Asked of a master with a working
    /// direct route first (cluster), else through the client.
    pub(crate) async fn topology(&self, deadline: Instant) -> Result<Vec<Shard>> {
        let table = self.direct.read().unwrap_or_else(PoisonError::into_inner).clone();
        for master in table.iter().flat_map(|t| t.healthy_masters()) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if let Ok(Ok((shards, nodes))) = timeout(left, master.topology()).await {
                self.remember(nodes);
                return Ok(shards);
            }
            self.mark_stale(master);
        }
        let reply = self
            .run(Kind::Read, deadline, |mut conn, _| async move {
                conn.topology().await
            })
            .await?;
        let (shards, nodes) = reply.value;
        self.remember(nodes);
        Ok(shards)
    }
}

/// Runs `futures` concurrently on the caller's task (no spawn: they may
/// borrow, and the caller's runtime need not be the store's); their outputs
/// in the same order. Each future has a waker of its own, so a wake-up polls
/// only the futures that were woken (as `FuturesUnordered` does), not every
/// one still pending: a batch of thousands of requests (a failover splits
/// one `get_many` into up to 16,384 per-slot groups, then single-id
/// resends) costs polls in proportion to its wake-ups, not their product.
pub(crate) async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let n = futures.len();
    let mut pending: Vec<Option<Pin<Box<F>>>> = futures.into_iter().map(|f| Some(Box::pin(f))).collect();
    let mut outputs: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    let woken = Arc::new(Woken {
        // Every future is polled once to start.
        queue: Mutex::new(((0..n).collect(), vec![true; n])),
        task: Mutex::new(None),
    });
    let wakers: Vec<Waker> = (0..n)
        .map(|index| {
            Waker::from(Arc::new(ChildWaker {
                index,
                woken: Arc::clone(&woken),
            }))
        })
        .collect();
    let mut left = n;
    std::future::poll_fn(|cx| {
        // Before taking the queue: a wake-up after it wakes this task.
        {
            let mut task = woken.task.lock().unwrap_or_else(PoisonError::into_inner);
            if !task.as_ref().is_some_and(|t| t.will_wake(cx.waker())) {
                *task = Some(cx.waker().clone());
            }
        }
        // One pass over those woken so far; one woken again meanwhile is
        // polled on the next (its wake-up woke this task): a future that
        // wakes itself at once (a spent cooperative budget) cannot keep
        // this poll from returning.
        let due = {
            let mut queue = woken.queue.lock().unwrap_or_else(PoisonError::into_inner);
            let due = std::mem::take(&mut queue.0);
            for &i in &due {
                queue.1[i] = false;
            }
            due
        };
        for i in due {
            let Some(future) = pending[i].as_mut() else {
                continue;
            };
            if let Poll::Ready(value) = future.as_mut().poll(&mut Context::from_waker(&wakers[i])) {
                outputs[i] = Some(value);
                pending[i] = None;
                left -= 1;
            }
        }
        if left == 0 {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|output| output.expect("poll_fn returned only once every future was ready"))
        .collect()
}

/// The futures of one [`join_all`] woken since it last looked.
struct Woken {
    /// Their indices, each once, and whether each is queued.
    queue: Mutex<(Vec<usize>, Vec<bool>)>,
    /// The task running the join.
    task: Mutex<Option<Waker>>,
}

/// The waker of one future of a [`join_all`].
struct ChildWaker {
    index: usize,
    woken: Arc<Woken>,
}

impl Wake for ChildWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        {
            let mut queue = self.woken.queue.lock().unwrap_or_else(PoisonError::into_inner);
            if !queue.1[self.index] {
                queue.1[self.index] = true;
                queue.0.push(self.index);
            }
        }
        if let Some(task) = self
            .woken
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            task.wake_by_ref();
        }
    }
}

/// Runs `run` on each of `batches` (each with its route), all routes at
/// once but at most `limit` batches at a time per route (the next one of a
/// route starts when one of its own ends); their outputs in the order of
/// `batches`. On the caller's task, as [`join_all`].
pub(crate) async fn per_route<'b, R, B, F, Fut>(
    batches: &'b [(R, B)],
    limit: usize,
    run: F,
) -> Vec<Fut::Output>
where
    R: Copy + Eq + std::hash::Hash,
    F: Fn(&'b B) -> Fut,
    Fut: Future,
{
    // Each route's batches (indices into `batches`), routes in the order
    // they first appear.
    let mut routes: Vec<Vec<usize>> = Vec::new();
    {
        let mut route_of: HashMap<R, usize> = HashMap::new();
        for (i, (route, _)) in batches.iter().enumerate() {
            let r = *route_of.entry(*route).or_insert_with(|| {
                routes.push(Vec::new());
                routes.len() - 1
            });
            routes[r].push(i);
        }
    }
    // The next batch each route's workers take.
    let next: Vec<AtomicUsize> = routes.iter().map(|_| AtomicUsize::new(0)).collect();
    let run = &run;
    let workers: Vec<_> = routes
        .iter()
        .zip(&next)
        .flat_map(|(members, next)| {
            (0..limit.max(1).min(members.len())).map(move |_| async move {
                let mut done = Vec::new();
                while let Some(&i) = members.get(next.fetch_add(1, Ordering::Relaxed)) {
                    done.push((i, run(&batches[i].1).await));
                }
                done
            })
        })
        .collect();
    let mut outputs: Vec<Option<Fut::Output>> = batches.iter().map(|_| None).collect();
    for (i, output) in join_all(workers).await.into_iter().flatten() {
        outputs[i] = Some(output);
    }
    outputs
        .into_iter()
        .map(|output| output.expect("each route's workers take every batch of it"))
        .collect()
}

/// Puts `latest` (a fresh topology's nodes) in front of `known`, keeping
/// earlier ones behind them up to [`KNOWN_NODES_MAX`].
fn remember_nodes(known: &mut Vec<(String, u16)>, latest: Vec<(String, u16)>) {
    let mut merged = latest;
    merged.dedup();
    for node in known.drain(..) {
        if !merged.contains(&node) {
            merged.push(node);
        }
    }
    merged.truncate(KNOWN_NODES_MAX);
    *known = merged;
}

/// After a write resent following a doubtful try: the fence (a write
/// that moves this connection's replication offset past everything the
/// master applied before it, the first try included) and `WAIT`, in a
/// pipeline of their own, after the command's. Not in the command's
/// pipeline: in a slot being migrated the fence's key (never stored)
/// answers `ASK` on the old master while the session's key is there, and
/// the redis crate's cluster client answers a pipeline with its first
/// reply that asks for a redirection: read as the command's own `ASK`, the
/// command ran again on the importing node, which does not hold the
/// session (a delete's resend, `EXISTS`, found nothing there and the
/// delete was acknowledged with the session still on its master). A fence
/// that fails, that way or any other, confirms no replica.
async fn fence_and_wait(
    via: &mut Via<'_>,
    target: Target<'_>,
    key: &[u8],
    asked: bool,
    (replicas, timeout_ms): (u32, u64),
) -> Replicas {
    let fence_key = crate::keys::fence_key(key);
    let mut pipe = redis::pipe();
    if asked {
        // The fence's key shares the session's slot: asked too.
        pipe.cmd("ASKING");
    }
    pipe.cmd("EVAL").arg(FENCE).arg(1).arg(fence_key);
    pipe.cmd("WAIT").arg(replicas).arg(timeout_ms);
    match via.pipeline(&pipe, target).await {
        Ok(values) => {
            let mut values = values.into_iter();
            if asked {
                values.next();
            }
            reply::replicas_from(values, true)
        }
        Err(e) => Replicas::Unconfirmed(format!("the replication fence failed: {e}")),
    }
}

/// The replicas `WAIT` asks for, if any.
fn replicas_said(replication: &Replication) -> Option<u32> {
    match replication {
        Replication::Wait { replicas, .. } => Some(*replicas),
        Replication::Async => None,
    }
}

/// The next reply of a pipeline, a server error as an error.
fn first_reply(values: &mut impl Iterator<Item = Value>) -> RedisResult<Value> {
    match values.next() {
        Some(Value::ServerError(e)) => Err(e.into()),
        Some(v) => Ok(v),
        None => Err(RedisError::from((
            redis::ErrorKind::Parse,
            "empty pipeline reply",
        ))),
    }
}

/// True for a redirect: the key is served elsewhere (`MOVED`), or, while
/// its slot migrates, maybe elsewhere (`ASK`, `TRYAGAIN`).
fn redirect(err: &RedisError) -> bool {
    matches!(
        err.kind(),
        redis::ErrorKind::Server(
            redis::ServerErrorKind::Moved | redis::ServerErrorKind::Ask | redis::ServerErrorKind::TryAgain
        )
    )
}

/// An error met before the request's own command was sent (opening the
/// connection to an asked node, the probe after a `MOVED`): whatever it
/// says, the command did not run, so it is not applied
/// ([`Fault::NotApplied`], never one that leaves the outcome in doubt).
/// A server's answer (`MOVED`, `ASK`, ...) keeps its kind.
fn not_sent(err: RedisError) -> RedisError {
    match classify(&err) {
        Fault::Ambiguous(text) => RedisError::from((
            redis::ErrorKind::ClusterConnectionNotFound,
            "no connection to send the request on",
            text,
        )),
        Fault::TimedOut => RedisError::from((
            redis::ErrorKind::ClusterConnectionNotFound,
            "no connection to send the request on",
            err.to_string(),
        )),
        _ => err,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(port: u16) -> (String, u16) {
        ("10.0.0.1".to_owned(), port)
    }

    /// A future that is pending `rounds` times (waking itself) before it
    /// is ready.
    async fn yield_times(rounds: usize) {
        for _ in 0..rounds {
            let mut yielded = false;
            std::future::poll_fn(|cx| {
                if yielded {
                    Poll::Ready(())
                } else {
                    yielded = true;
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
            })
            .await;
        }
    }

    #[test]
    fn per_route_bounds_each_route_and_keeps_the_order() {
        // Three routes with 7, 1 and 4 batches, interleaved.
        let routes = [0u8, 1, 0, 2, 0, 0, 2, 0, 2, 0, 2, 0];
        let batches: Vec<(u8, usize)> = routes.iter().enumerate().map(|(i, &r)| (r, i)).collect();
        let in_flight: Vec<AtomicUsize> = (0..3).map(|_| AtomicUsize::new(0)).collect();
        let most: Vec<AtomicUsize> = (0..3).map(|_| AtomicUsize::new(0)).collect();
        let outputs = block_on(per_route(&batches, 2, |&i| {
            let (in_flight, most) = (&in_flight, &most);
            async move {
                let r = usize::from(routes[i]);
                let now = in_flight[r].fetch_add(1, Ordering::SeqCst) + 1;
                most[r].fetch_max(now, Ordering::SeqCst);
                yield_times(1 + i % 3).await;
                in_flight[r].fetch_sub(1, Ordering::SeqCst);
                i * 10
            }
        }));
        assert_eq!(outputs, (0..routes.len()).map(|i| i * 10).collect::<Vec<_>>());
        let most: Vec<usize> = most.iter().map(|m| m.load(Ordering::SeqCst)).collect();
        assert_eq!(most, vec![2, 1, 2], "at most 2 at a time per route");
    }

    fn block_on<F: Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(future)
    }

    #[test]
    fn join_all_polls_only_the_woken_and_keeps_each_output_at_its_index() {
        const N: usize = 20_000;
        let polls = AtomicUsize::new(0);
        let futures: Vec<_> = (0..N)
            .map(|i| {
                let polls = &polls;
                async move {
                    // Pending `i % 4` times, each time waking itself.
                    let mut left = i % 4;
                    std::future::poll_fn(|cx| {
                        polls.fetch_add(1, Ordering::Relaxed);
                        if left == 0 {
                            Poll::Ready(())
                        } else {
                            left -= 1;
                            cx.waker().wake_by_ref();
                            Poll::Pending
                        }
                    })
                    .await;
                    i * 3
                }
            })
            .collect();
        let outputs = block_on(join_all(futures));
        assert_eq!(outputs, (0..N).map(|i| i * 3).collect::<Vec<_>>());
        // Each future polled once per wake-up, plus its first poll.
        let expected: usize = (0..N).map(|i| i % 4 + 1).sum();
        assert_eq!(polls.load(Ordering::Relaxed), expected);
        assert!(block_on(join_all(Vec::<std::future::Ready<u8>>::new())).is_empty());
    }

    #[test]
    fn join_all_does_not_repoll_futures_nobody_woke() {
        // A relay: future i is ready once the turn is `N - 1 - i` (the last
        // first), and when done hands the turn on and wakes the one before
        // it. One wake-up per join poll, the others left pending: a join
        // that polled every pending future on each wake-up would poll
        // N (N + 1) / 2 times; polling only the woken, 2 N - 1.
        const N: usize = 2_000;
        let polls = AtomicUsize::new(0);
        let turn = AtomicUsize::new(0);
        let parked: Vec<Mutex<Option<Waker>>> = (0..N).map(|_| Mutex::new(None)).collect();
        let futures: Vec<_> = (0..N)
            .map(|i| {
                let (polls, turn, parked) = (&polls, &turn, &parked);
                async move {
                    std::future::poll_fn(|cx| {
                        polls.fetch_add(1, Ordering::Relaxed);
                        if turn.load(Ordering::SeqCst) == N - 1 - i {
                            Poll::Ready(())
                        } else {
                            *parked[i].lock().unwrap() = Some(cx.waker().clone());
                            Poll::Pending
                        }
                    })
                    .await;
                    turn.fetch_add(1, Ordering::SeqCst);
                    if let Some(before) = i.checked_sub(1) {
                        if let Some(waker) = parked[before].lock().unwrap().take() {
                            waker.wake();
                        }
                    }
                    i
                }
            })
            .collect();
        let outputs = block_on(join_all(futures));
        assert_eq!(outputs, (0..N).collect::<Vec<_>>());
        assert_eq!(polls.load(Ordering::Relaxed), 2 * N - 1);
    }

    #[test]
    fn join_all_wakes_for_futures_woken_from_other_threads() {
        let outputs = block_on(async {
            let futures: Vec<_> = (0..64u64)
                .map(|i| async move {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    std::thread::spawn(move || tx.send(i * 2));
                    rx.await.expect("sent")
                })
                .collect();
            join_all(futures).await
        });
        assert_eq!(outputs, (0..64u64).map(|i| i * 2).collect::<Vec<_>>());
    }

    #[test]
    fn an_ask_names_its_node_by_address_or_hostname() {
        let node = |s: &str| AskNode::parse(s, 7).map(|n| (n.host.to_string(), n.port, n.slot));
        let some = |h: &str, p: u16| Some((h.to_owned(), p, 7));
        assert_eq!(node("127.0.0.1:7000"), some("127.0.0.1", 7000));
        assert_eq!(
            node("redis-2.example.internal:6379"),
            some("redis-2.example.internal", 6379)
        );
        // Redis writes IPv6 endpoints without brackets (`%s:%d`).
        assert_eq!(node("fd00::1:7001"), some("fd00::1", 7001));
        assert_eq!(node("::1:7001"), some("::1", 7001));
        assert_eq!(node("[fd00::1]:7001"), some("fd00::1", 7001));
        for bad in ["", "7000", ":7000", "[]:7000", "host:", "host:port", "host:70000"] {
            assert_eq!(node(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn known_nodes_keep_the_latest_first_and_stay_bounded() {
        let mut known = Vec::new();
        remember_nodes(&mut known, vec![node(1), node(2)]);
        remember_nodes(&mut known, vec![node(3), node(2)]);
        assert_eq!(known, vec![node(3), node(2), node(1)]);
        // Nodes coming and going (new addresses each time): bounded.
        for round in 0..100u16 {
            remember_nodes(&mut known, vec![node(1_000 + round), node(2_000 + round)]);
        }
        assert_eq!(known.len(), KNOWN_NODES_MAX);
        assert_eq!(known[..2], [node(1_099), node(2_099)]);
    }
}
