//! The store: each operation as one script or command on the key's master,
//! resent per the error table in `error.rs` until the operation's deadline.
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

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant};

use rand::Rng;
use redis::aio::MultiplexedConnection;
use redis::{
    Cmd, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, Pipeline, RedisError, RedisResult, Value,
};
use session_engine::{Cursor, Error, Metadata, Page, Result, Session, SessionId, SessionStore, Timeout};
use tokio::time::timeout;

use crate::config::{Deployment, RedisConfig, Replication};
use crate::conn::{
    connect_node, direct_pipeline, direct_query, Conn, Direct, Lane, Master, Shard, Target, Topology,
};
use crate::error::{classify, give_up, protocol, Fault};
use crate::health::Health;
use crate::keys::KeySpace;
use crate::limits::{
    DIRECT_REBUILD_INTERVAL, RETRY_BACKOFF_MAX, RETRY_BACKOFF_MIN, UPDATE_BACKOFF_MAX, UPDATE_EAGER_TRIES,
    UPDATE_TRIES_MAX,
};
use crate::reply;
use crate::scripts::{Script, Scripts, FENCE, FENCE_SUFFIX};

/// Ids a `create` draws before it reports the id space as exhausted (a
/// collision of 128 random bits is already a 2^-128 event per live session).
const CREATE_TRIES_MAX: usize = 4;

/// The session API on Redis (one server or a cluster). Cheap to clone: clones
/// share one connection. See the crate docs for the semantics and the
/// failure model.
#[derive(Clone)]
pub struct RedisStore {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("deployment", &self.inner.config.deployment)
            .field("key_prefix", &self.inner.config.key_prefix)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// Counters of a store's life so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RedisStats {
    /// Times the client was replaced because nothing succeeded for
    /// `stuck_after` while a fresh client found the servers serving.
    pub client_rebuilds: u64,
    /// Requests resent after a failed attempt.
    pub resends: u64,
    /// `update` commits that lost a race and reran the closure.
    pub update_conflicts: u64,
    /// Writes that too few replicas acknowledged in time (`WAIT`).
    pub replication_shortfalls: u64,
}

pub(crate) struct Inner {
    pub(crate) config: RedisConfig,
    pub(crate) keys: KeySpace,
    scripts: Scripts,
    conn: RwLock<Conn>,
    /// The runtime `connect` ran on: it drives every connection of the
    /// store, so new connections are made there too.
    home: tokio::runtime::Handle,
    /// Itself, for background tasks.
    me: Weak<Inner>,
    /// The time base of `direct_retry_at_ms`.
    origin: Instant,
    cluster: bool,
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
}

/// What a request does to data, which decides its error and its `WAIT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Changes nothing the caller asked for (a `get` slides the deadline,
    /// as a side effect: not waited for).
    Read,
    /// Changes a session (`WAIT` when configured).
    Write,
}

/// How one attempt should be sent.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Attempt {
    /// Send scripts as `EVAL` (the node answered `NOSCRIPT`).
    pub(crate) eval: bool,
    /// A pipeline element was redirected: let the client follow a single
    /// command's redirect (refreshing its slot map) before resending.
    pub(crate) redirected: bool,
    /// An earlier attempt may have applied: a write that waits for replicas
    /// sends the fence before its `WAIT` (see `scripts.rs`).
    pub(crate) fence: bool,
}

/// A request's reply and what its attempts leave open.
pub(crate) struct Reply<T> {
    pub(crate) value: T,
    /// An earlier attempt failed after it may have run: the reply may be to
    /// a resend of a request that already took effect.
    pub(crate) resent_after_doubt: bool,
}

/// What the replicas said of a write.
#[derive(Debug)]
pub(crate) enum Replicas {
    /// Not asked (`Replication::Async`, or not a write).
    NotAsked,
    /// `WAIT` answered: this many replicas have everything the connection
    /// wrote up to the write (and the fence, after a doubtful try).
    Acked(i64),
    /// `WAIT` (or the fence before it) did not answer as it should.
    Unconfirmed(String),
}

/// A request's value and what the replicas said of it.
pub(crate) struct Acked {
    pub(crate) value: Value,
    pub(crate) replicas: Replicas,
}

impl RedisStore {
    /// Connects to the deployment and checks that it answers, and that it
    /// is the kind of deployment the configuration names (a single server
    /// for `standalone`/`redis://`, cluster nodes for `cluster`/
    /// `redis+cluster://`).
    ///
    /// The runtime this runs on becomes the store's home: it drives the
    /// store's connections (and makes new ones after a failover), so it must
    /// outlive the store and keep running — a multi-thread Tokio runtime, or
    /// a current-thread one that the application keeps driving. Operations
    /// may then be awaited from any Tokio runtime with the time driver
    /// enabled (for example one current-thread runtime per worker thread).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the bad setting, or saying that the
    /// URL reaches the wrong kind of server (a cluster node behind
    /// `redis://`, a single server behind `redis+cluster://`, a server that
    /// does not answer `INFO` like Redis); [`Error::Unavailable`] if no
    /// server answers within the connect timeout.
    pub async fn connect(config: RedisConfig) -> Result<Self> {
        let keys = config.validate()?;
        let urls = config.seeds();
        let seeds = urls
            .iter()
            .map(|url| {
                url.as_str()
                    .into_connection_info()
                    .map_err(|e| Error::InvalidConfig(format!("server URL {url:?}: {e}")))
            })
            .collect::<Result<Vec<ConnectionInfo>>>()?;
        let budget = config.connect_timeout + config.request_timeout;
        let conn = match timeout(budget, Conn::connect(&config, &seeds)).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                // A single server behind redis+cluster:// refuses CLUSTER SLOTS.
                if matches!(config.deployment, Deployment::Cluster(_)) {
                    check_not_standalone(&config, &seeds, &urls).await?;
                }
                return Err(Error::Unavailable {
                    reason: format!("cannot connect to {urls:?}: {e}"),
                });
            }
            Err(_) => {
                return Err(Error::Unavailable {
                    reason: format!("cannot connect to {urls:?} within {budget:?}"),
                })
            }
        };
        let scripts = Scripts::new();
        if matches!(config.deployment, Deployment::Standalone(_)) {
            check_standalone(conn.clone(), &urls[0], budget).await?;
            let _ = timeout(budget, conn.clone().load_scripts(&scripts.codes())).await;
        }
        let inner = Arc::new_cyclic(|me| Inner {
            home: tokio::runtime::Handle::current(),
            me: me.clone(),
            origin: Instant::now(),
            cluster: matches!(config.deployment, Deployment::Cluster(_)),
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
            config,
        });
        // Learn every node now, so that a rebuild can reach the cluster even
        // if the seeds given are the ones that fail.
        inner.topology(inner.deadline()).await?;
        if inner.cluster {
            inner.build_direct().await;
        }
        Ok(Self { inner })
    }

    /// The configuration this store was connected with.
    #[must_use]
    pub fn config(&self) -> &RedisConfig {
        &self.inner.config
    }

    /// The Redis key that holds the session `id` (`<prefix>{<id>}`), for
    /// operators and tests (`CLUSTER KEYSLOT`, `TTL`, `HGETALL`).
    #[must_use]
    pub fn key(&self, id: &SessionId) -> String {
        String::from_utf8(self.inner.keys.key(id)).expect("prefix and id are ASCII")
    }

    /// The Redis Cluster hash slot of the session's key (CRC16 of the id,
    /// its hash tag, mod 16384): where the session and any per-session key
    /// added later live.
    #[must_use]
    pub fn slot(&self, id: &SessionId) -> u16 {
        crate::keys::slot_of(&self.inner.keys.key(id))
    }

    /// Counters since connect.
    #[must_use]
    pub fn stats(&self) -> RedisStats {
        let i = &self.inner;
        RedisStats {
            client_rebuilds: i.health.rebuilds(),
            resends: i.resends.load(Ordering::Relaxed),
            update_conflicts: i.update_conflicts.load(Ordering::Relaxed),
            replication_shortfalls: i.shortfalls.load(Ordering::Relaxed),
        }
    }

    /// Creates a session with a fresh random id (128 bits from the OS).
    ///
    /// # Errors
    /// [`Error::ValueTooLarge`], [`Error::InvalidTimeout`], [`Error::Entropy`]
    /// (nothing sent); the request errors of the crate docs.
    pub async fn create(&self, metadata: &[u8], timeout: Timeout) -> Result<SessionId> {
        let timeout_field = self.inner.check(metadata.len(), timeout)?;
        let deadline = self.inner.deadline();
        for _ in 0..CREATE_TRIES_MAX {
            let id = SessionId::random().map_err(Error::Entropy)?;
            match self.inner.insert(id, metadata, &timeout_field, deadline).await {
                Ok(()) => return Ok(id),
                Err(Error::AlreadyExists) => {}
                Err(e) => return Err(e),
            }
        }
        Err(Error::Unavailable {
            reason: format!(
                "{CREATE_TRIES_MAX} random ids in a row were taken: is the random source broken?"
            ),
        })
    }

    /// Creates a session with the configured default timeout.
    ///
    /// # Errors
    /// As [`RedisStore::create`].
    pub async fn create_default(&self, metadata: &[u8]) -> Result<SessionId> {
        self.create(metadata, self.inner.config.default_timeout).await
    }

    /// Stores a session under a caller-chosen id.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] if a live session has the id (untouched), and
    /// the errors of [`RedisStore::create`].
    pub async fn insert(&self, id: SessionId, metadata: &[u8], timeout: Timeout) -> Result<()> {
        let timeout_field = self.inner.check(metadata.len(), timeout)?;
        self.inner
            .insert(id, metadata, &timeout_field, self.inner.deadline())
            .await
    }

    /// Returns the session and slides its deadline (one script: read, record
    /// the access, re-arm the TTL). A read: it does not wait for replicas
    /// (a slide lost in a failover only lets the session expire earlier).
    ///
    /// # Errors
    /// [`Error::NotFound`]; the request errors of the crate docs.
    pub async fn get(&self, id: &SessionId) -> Result<Session> {
        let inner = &self.inner;
        let key = inner.keys.key(id);
        let script = &inner.scripts.get;
        let reply = inner
            .script(Kind::Read, inner.deadline(), script, &key, &[])
            .await?;
        reply::session(*id, &script.command, reply.value.value)?.ok_or(Error::NotFound)
    }

    /// Returns the session without sliding its deadline (`HMGET`).
    ///
    /// # Errors
    /// [`Error::NotFound`]; the request errors of the crate docs.
    pub async fn peek(&self, id: &SessionId) -> Result<Session> {
        let key = self.inner.keys.key(id);
        self.inner
            .peek(*id, &key, self.inner.deadline())
            .await?
            .ok_or(Error::NotFound)
    }

    /// Replaces the metadata with `f(current)` atomically (optimistic: the
    /// commit script installs the result only if the version read is still
    /// current, and otherwise hands back the newer value for `f` to run on
    /// again); slides the deadline.
    ///
    /// # Errors
    /// [`Error::NotFound`] (also if the session goes while `f` runs);
    /// [`Error::ValueTooLarge`] if `f` returns too much (nothing changed);
    /// [`Error::Contended`] after 256 lost races, or when the request timeout
    /// runs out between lost races (nothing applied); [`Error::OutcomeUnknown`]
    /// if a commit failed in doubt and a concurrent writer then moved the
    /// version on (whether this update is in is then unknowable); the request
    /// errors of the crate docs. The read, every commit and every resend
    /// share one request timeout.
    pub async fn update<F>(&self, id: &SessionId, mut f: F) -> Result<Session>
    where
        F: FnMut(&[u8]) -> Vec<u8> + Send,
    {
        let inner = &self.inner;
        let key = inner.keys.key(id);
        let deadline = inner.deadline();
        let (mut current, mut version) = inner.read_for_update(&key, deadline).await?;
        let script = &inner.scripts.commit;
        for attempt in 0..UPDATE_TRIES_MAX {
            let new = f(&current);
            inner.check_len(new.len())?;
            let token = token();
            let Reply {
                value: Acked { value, replicas },
                resent_after_doubt,
            } = inner
                .script(
                    Kind::Write,
                    deadline,
                    script,
                    &key,
                    &[&version, &new, token.as_bytes()],
                )
                .await?;
            match commit_outcome(&script.command, value)? {
                Commit::Absent => return Err(Error::NotFound),
                Commit::Done(fields) => {
                    let session = reply::session_with(*id, Metadata::from(new), &script.command, &fields)?;
                    return inner.acknowledge(replicas, session);
                }
                Commit::Moved { .. } if resent_after_doubt => {
                    return Err(Error::OutcomeUnknown {
                        reason: "an update commit failed in doubt and another writer changed the session \
                                 before the resend: it may or may not be in"
                            .into(),
                    })
                }
                Commit::Moved {
                    version: newer,
                    metadata,
                } => {
                    inner.update_conflicts.fetch_add(1, Ordering::Relaxed);
                    // Nothing of this call is in: out of time, it says so.
                    let out_of_time = |pause: Duration| {
                        (Instant::now() + pause >= deadline)
                            .then_some(Error::Contended { tries: attempt + 1 })
                    };
                    if attempt < UPDATE_EAGER_TRIES {
                        // Retry at once on the newer value the script handed back.
                        if let Some(e) = out_of_time(Duration::ZERO) {
                            return Err(e);
                        }
                        (current, version) = (metadata, newer);
                    } else {
                        // Contended: step aside for a random, growing pause, then
                        // read afresh (a value held through the pause would be stale)
                        // and commit straight after, keeping the race window at two
                        // round trips.
                        let pause = conflict_pause(attempt - UPDATE_EAGER_TRIES);
                        if let Some(e) = out_of_time(pause) {
                            return Err(e);
                        }
                        tokio::time::sleep(pause).await;
                        (current, version) = inner.read_for_update(&key, deadline).await?;
                    }
                }
            }
        }
        Err(Error::Contended {
            tries: UPDATE_TRIES_MAX,
        })
    }

    /// Slides the session's deadline. A write: with [`Replication::Wait`] it
    /// is acknowledged only once the replicas have it (a slide lost in a
    /// failover would let the session expire before the deadline this call
    /// reported).
    ///
    /// # Errors
    /// [`Error::NotFound`]; the request errors of the crate docs.
    pub async fn touch(&self, id: &SessionId) -> Result<()> {
        let inner = &self.inner;
        let key = inner.keys.key(id);
        let script = &inner.scripts.touch;
        let reply = inner
            .script(Kind::Write, inner.deadline(), script, &key, &[])
            .await?;
        if reply::flag(&script.command, &reply.value.value, true)? {
            inner.acknowledge(reply.value.replicas, ())
        } else {
            Err(Error::NotFound)
        }
    }

    /// Removes the session (`DEL`). After a resend (the first attempt failed
    /// in doubt) a missing session counts as deleted — acknowledged, like
    /// every write, only once the replicas confirm it.
    ///
    /// # Errors
    /// [`Error::NotFound`]; the request errors of the crate docs.
    pub async fn delete(&self, id: &SessionId) -> Result<()> {
        let inner = &self.inner;
        let key = inner.keys.key(id);
        let mut cmd = redis::cmd("DEL");
        cmd.arg(&key);
        let reply = inner
            .request(Kind::Write, inner.deadline(), &key, |_| cmd.clone())
            .await?;
        let deleted = reply::flag("DEL", &reply.value.value, true)?;
        if deleted || reply.resent_after_doubt {
            inner.acknowledge(reply.value.replicas, ())
        } else {
            Err(Error::NotFound)
        }
    }

    /// Changes the timeout (`Timeout::Never`: `PERSIST`); slides the deadline
    /// to now + timeout.
    ///
    /// # Errors
    /// [`Error::InvalidTimeout`] (nothing sent), [`Error::NotFound`]; the
    /// request errors of the crate docs.
    pub async fn set_ttl(&self, id: &SessionId, timeout: Timeout) -> Result<()> {
        let field = check_timeout(timeout)?;
        let inner = &self.inner;
        let key = inner.keys.key(id);
        let script = &inner.scripts.set_ttl;
        let reply = inner
            .script(Kind::Write, inner.deadline(), script, &key, &[field.as_bytes()])
            .await?;
        if reply::flag(&script.command, &reply.value.value, true)? {
            inner.acknowledge(reply.value.replicas, ())
        } else {
            Err(Error::NotFound)
        }
    }

    /// True if a live session has this id (`EXISTS`; not activity).
    ///
    /// # Errors
    /// The request errors of the crate docs.
    pub async fn contains(&self, id: &SessionId) -> Result<bool> {
        let key = self.inner.keys.key(id);
        let mut cmd = redis::cmd("EXISTS");
        cmd.arg(&key);
        let reply = self
            .inner
            .command(Kind::Read, self.inner.deadline(), &key, &cmd)
            .await?;
        reply::flag("EXISTS", &reply.value, false)
    }

    /// Live sessions under this store's prefix, counted with `SCAN` on every
    /// master: O(keys on the servers), meant for monitoring, not hot paths.
    /// The one exception to "one request timeout per operation": each `SCAN`
    /// round trip has its own (counting a large table takes as long as it
    /// takes).
    ///
    /// # Errors
    /// The request errors of the crate docs.
    pub async fn len(&self) -> Result<usize> {
        crate::list::count(&self.inner).await
    }

    /// True if [`RedisStore::len`] is 0.
    ///
    /// # Errors
    /// As [`RedisStore::len`].
    pub async fn is_empty(&self) -> Result<bool> {
        Ok(self.len().await? == 0)
    }

    /// One page of at most `limit` sessions (see the crate docs on listing).
    /// One request timeout per page; a page may come back short (with a
    /// cursor to continue) when scanning a sparse table takes half of it.
    ///
    /// # Errors
    /// [`Error::InvalidPageSize`], [`Error::InvalidCursor`]; the request
    /// errors of the crate docs.
    pub async fn list(&self, cursor: Cursor, limit: usize) -> Result<Page> {
        crate::list::page(&self.inner, cursor, limit).await
    }

    /// Always 0: Redis expires keys itself (lazily when a key is touched,
    /// and by its active expiry cycle in the background), so there is nothing
    /// to sweep, and an expired session is never returned.
    #[must_use]
    pub fn cleanup_expired(&self) -> usize {
        0
    }
}

/// Refuses a single-server configuration that reached a cluster node, or a
/// server that does not answer `INFO` like Redis.
async fn check_standalone(mut conn: Conn, url: &str, budget: Duration) -> Result<()> {
    let reply = match timeout(budget, conn.info_cluster()).await {
        Ok(Ok(reply)) => reply,
        // INFO refused (an ACL, a proxy without it): cannot tell; go ahead.
        Ok(Err(e)) if matches!(classify(&e), Fault::Refused(_)) => return Ok(()),
        Ok(Err(e)) => {
            return Err(Error::Unavailable {
                reason: format!("cannot connect to {url:?}: {e}"),
            })
        }
        Err(_) => {
            return Err(Error::Unavailable {
                reason: format!("{url:?} did not answer INFO within {budget:?}"),
            })
        }
    };
    let text = match &reply {
        Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        Value::VerbatimString { text, .. } | Value::SimpleString(text) => text.clone(),
        other => {
            return Err(Error::InvalidConfig(format!(
                "{url:?} answered INFO with {other:?}: is it a Redis server? (protocol error)"
            )))
        }
    };
    if text.lines().any(|l| l.trim() == "cluster_enabled:1") {
        return Err(Error::InvalidConfig(format!(
            "{url:?} is a Redis Cluster node (cluster_enabled:1): connect with RedisConfig::cluster or a \
             redis+cluster:// URL (as a single server it would answer MOVED for most keys)"
        )));
    }
    Ok(())
}

/// After a failed cluster connect: refuses it clearly if a seed is a single
/// server (`cluster_enabled:0`); otherwise leaves the error as it was.
async fn check_not_standalone(config: &RedisConfig, seeds: &[ConnectionInfo], urls: &[String]) -> Result<()> {
    let budget = config.connect_timeout + config.request_timeout;
    for (seed, url) in seeds.iter().zip(urls) {
        let ConnectionAddr::Tcp(host, port) = seed.addr() else {
            continue;
        };
        let probe = async {
            let mut conn = connect_node(config, seed, host, *port).await?;
            direct_query(&mut conn, redis::cmd("INFO").arg("cluster")).await
        };
        if let Ok(Ok(Value::BulkString(bytes))) = timeout(budget, probe).await {
            if String::from_utf8_lossy(&bytes)
                .lines()
                .any(|l| l.trim() == "cluster_enabled:0")
            {
                return Err(Error::InvalidConfig(format!(
                    "{url:?} is a single Redis server (cluster_enabled:0), not a cluster node: connect with \
                     RedisConfig::standalone or a redis:// URL"
                )));
            }
        }
    }
    Ok(())
}

/// `HMGET key m c a t`: a session as `peek` and `list` read it.
pub(crate) fn peek_cmd(key: &[u8]) -> Cmd {
    let mut cmd = sized_cmd("HMGET", 5, key.len() + 4);
    cmd.arg(key).arg("m").arg("c").arg("a").arg("t");
    cmd
}

/// `redis::cmd(name)` with room for `args` arguments (the name included) of
/// `bytes` bytes besides the name: a command built argument by argument
/// otherwise regrows its two buffers several times (callgrind, example
/// `client_layers`: 1,200 instructions per `peek`, a fifth of what this
/// crate added to a request).
pub(crate) fn sized_cmd(name: &str, args: usize, bytes: usize) -> Cmd {
    let mut cmd = Cmd::with_capacity(args, name.len() + bytes);
    cmd.arg(name);
    cmd
}

/// Nodes a rebuild may connect through, beside the seeds: the latest
/// topology's first, then those seen before, at most this many (under node
/// or address churn the list would otherwise only grow).
const KNOWN_NODES_MAX: usize = 64;

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

/// A fresh idempotency token (see `scripts.rs`).
fn token() -> String {
    rand::rng().random::<u64>().to_string()
}

/// A new session's first version: random below 2^52 (see `scripts::INSERT`).
fn first_version() -> String {
    rand::rng().random_range(1..1u64 << 52).to_string()
}

/// A random pause up to 100 µs × 2^`round` (at most
/// [`UPDATE_BACKOFF_MAX`]): colliding writers spread out in time, so that
/// each one's read-compute-commit window soon finds no one else in it.
fn conflict_pause(round: u32) -> Duration {
    let cap_us =
        (100u64 << round.min(16)).min(u64::try_from(UPDATE_BACKOFF_MAX.as_micros()).unwrap_or(u64::MAX));
    Duration::from_micros(rand::rng().random_range(0..=cap_us))
}

fn check_timeout(timeout: Timeout) -> Result<String> {
    Ok(match timeout.checked_ms()? {
        None => reply::timeout_field(Timeout::Never),
        Some(ms) => ms.to_string(),
    })
}

/// What the commit script answered (see `scripts::COMMIT`).
enum Commit {
    /// `{0}`: no session.
    Absent,
    /// `{1, c, a, t}`: committed (now or by an earlier attempt); `[c, a, t]`.
    Done(Vec<Value>),
    /// `{2, v, m}`: the version moved on; the newer version and metadata.
    Moved { version: Vec<u8>, metadata: Vec<u8> },
}

/// Reads the commit script's reply; anything else is a protocol error.
fn commit_outcome(command: &str, value: Value) -> Result<Commit> {
    let Value::Array(fields) = value else {
        return Err(protocol(command, &value, true));
    };
    match (fields.first(), fields.len()) {
        (Some(Value::Int(0)), 1) => Ok(Commit::Absent),
        (Some(Value::Int(1)), 4) => Ok(Commit::Done(fields.into_iter().skip(1).collect())),
        (Some(Value::Int(2)), 3) => {
            let [flag, version, metadata]: [Value; 3] = fields.try_into().expect("three fields");
            match (version, metadata) {
                (Value::BulkString(version), Value::BulkString(metadata)) => {
                    Ok(Commit::Moved { version, metadata })
                }
                (version, metadata) => Err(protocol(
                    command,
                    &Value::Array(vec![flag, version, metadata]),
                    true,
                )),
            }
        }
        _ => Err(protocol(command, &Value::Array(fields), true)),
    }
}

/// The replicas' answer from the replies after a write's own: the fence's
/// (after a doubtful try) and `WAIT`'s.
fn replicas_from(mut rest: impl Iterator<Item = Value>, fenced: bool) -> Replicas {
    if fenced {
        match rest.next() {
            Some(Value::Int(1)) => {}
            Some(other) => {
                return Replicas::Unconfirmed(format!("the replication fence (EVAL) answered {other:?}"))
            }
            None => return Replicas::Unconfirmed("no reply to the replication fence".into()),
        }
    }
    match rest.next() {
        Some(Value::Int(n)) if n >= 0 => Replicas::Acked(n),
        Some(Value::ServerError(e)) => Replicas::Unconfirmed(format!("WAIT failed: {e:?}")),
        Some(other) => Replicas::Unconfirmed(format!("protocol error: unexpected reply to WAIT: {other:?}")),
        None => Replicas::Unconfirmed("no reply to WAIT".into()),
    }
}

/// Marks a direct route's master stale unless disarmed: an attempt that
/// was cut off by its deadline (the future dropped mid-flight) counts as a
/// failure of the route.
struct StaleGuard {
    master: Arc<Master>,
    armed: bool,
}

impl Drop for StaleGuard {
    fn drop(&mut self) {
        if self.armed {
            self.master.mark_stale();
        }
    }
}

/// The connection one attempt goes out on.
enum Via {
    /// Straight to the slot's master (cluster: see `conn::Direct`).
    Direct(StaleGuard, MultiplexedConnection),
    /// Through the `redis` crate's client.
    Client(Conn, Lane),
}

impl Via {
    /// A failure that says nothing against the route: the master answered.
    fn answered(err: &RedisError) -> bool {
        classify(err).server_answered()
            && !matches!(
                err.kind(),
                redis::ErrorKind::Server(redis::ServerErrorKind::Moved | redis::ServerErrorKind::Ask)
            )
    }

    async fn query(&mut self, cmd: &Cmd, target: Target<'_>) -> RedisResult<Value> {
        match self {
            Via::Direct(guard, conn) => {
                guard.armed = true;
                let r = direct_query(conn, cmd).await;
                guard.armed = !r.as_ref().err().is_none_or(Via::answered);
                r
            }
            Via::Client(conn, lane) => conn.query(cmd.clone(), target, *lane).await,
        }
    }

    async fn pipeline(&mut self, pipe: &Pipeline, target: Target<'_>) -> RedisResult<Vec<Value>> {
        match self {
            Via::Direct(guard, conn) => {
                guard.armed = true;
                let r = direct_pipeline(conn, pipe).await;
                guard.armed = match &r {
                    Ok(values) => values.iter().any(|v| match v {
                        Value::ServerError(e) => !Via::answered(&e.clone().into()),
                        _ => false,
                    }),
                    Err(e) => !Via::answered(e),
                };
                r
            }
            Via::Client(conn, lane) => conn.pipeline(pipe, target, *lane).await,
        }
    }
}

impl Inner {
    fn check_len(&self, len: usize) -> Result<()> {
        let max = self.config.metadata_bytes_max;
        if len > max {
            return Err(Error::ValueTooLarge { len, max });
        }
        Ok(())
    }

    fn check(&self, len: usize, timeout: Timeout) -> Result<String> {
        self.check_len(len)?;
        check_timeout(timeout)
    }

    /// The deadline of an operation starting now: one request timeout for
    /// all its round trips and resends.
    pub(crate) fn deadline(&self) -> Instant {
        Instant::now() + self.config.request_timeout
    }

    /// Metadata and version for an update (`HMGET m v`).
    async fn read_for_update(&self, key: &[u8], deadline: Instant) -> Result<(Vec<u8>, Vec<u8>)> {
        let mut read = sized_cmd("HMGET", 4, key.len() + 2);
        read.arg(key).arg("m").arg("v");
        let reply = self.command(Kind::Read, deadline, key, &read).await?;
        let malformed = |v: Value| protocol("HMGET (update read)", &v, false);
        let Value::Array(fields) = reply.value else {
            return Err(malformed(reply.value));
        };
        match <[Value; 2]>::try_from(fields) {
            Ok([Value::Nil, _]) => Err(Error::NotFound),
            Ok([m, v]) => match (reply::bytes(m), reply::bytes(v)) {
                (Some(m), Some(v)) => Ok((m, v)),
                (m, v) => Err(malformed(Value::Array(vec![
                    m.map_or(Value::Nil, Value::BulkString),
                    v.map_or(Value::Nil, Value::BulkString),
                ]))),
            },
            Err(fields) => Err(malformed(Value::Array(fields))),
        }
    }

    /// The session at `key` without sliding it; `None` if absent.
    pub(crate) async fn peek(&self, id: SessionId, key: &[u8], deadline: Instant) -> Result<Option<Session>> {
        let reply = self.command(Kind::Read, deadline, key, &peek_cmd(key)).await?;
        reply::session(id, "HMGET (peek)", reply.value)
    }

    async fn insert(
        &self,
        id: SessionId,
        metadata: &[u8],
        timeout_field: &str,
        deadline: Instant,
    ) -> Result<()> {
        let key = self.keys.key(&id);
        let token = token();
        let first_version = first_version();
        let args: [&[u8]; 4] = [
            metadata,
            timeout_field.as_bytes(),
            token.as_bytes(),
            first_version.as_bytes(),
        ];
        let script = &self.scripts.insert;
        let reply = self.script(Kind::Write, deadline, script, &key, &args).await?;
        match reply::flag(&script.command, &reply.value.value, true)? {
            true => self.acknowledge(reply.value.replicas, ()),
            // The id is taken by another token. After a doubtful try that
            // may be this insert's own session, changed since by someone
            // who knew the id.
            false if reply.resent_after_doubt => Err(Error::OutcomeUnknown {
                reason: "an insert failed in doubt and on resending the id was taken by a session \
                         changed since: it may be this insert's"
                    .into(),
            }),
            false => Err(Error::AlreadyExists),
        }
    }

    /// The one way a write that took effect (now or by an earlier attempt)
    /// is acknowledged: with [`Replication::Wait`], only if the replicas
    /// confirmed it (on every path: the `WAIT` of a resend after a doubtful
    /// try covers the earlier try through the fence, see `scripts.rs`).
    fn acknowledge<T>(&self, replicas: Replicas, value: T) -> Result<T> {
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

    fn conn(&self) -> Conn {
        self.conn.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Runs `script` on the master of `key`.
    async fn script(
        &self,
        kind: Kind,
        deadline: Instant,
        script: &Script,
        key: &[u8],
        args: &[&[u8]],
    ) -> Result<Reply<Acked>> {
        self.request(kind, deadline, key, |attempt| {
            let bytes = key.len() + 1 + args.iter().map(|a| a.len()).sum::<usize>();
            let mut cmd = if attempt.eval {
                let mut c = sized_cmd("EVAL", 4 + args.len(), script.code.len() + bytes);
                c.arg(&script.code);
                c
            } else {
                let mut c = sized_cmd("EVALSHA", 4 + args.len(), script.sha1.len() + bytes);
                c.arg(&script.sha1);
                c
            };
            cmd.arg(1).arg(key);
            for arg in args {
                cmd.arg(*arg);
            }
            cmd
        })
        .await
    }

    /// Runs a plain read `cmd` on the master of `key`.
    async fn command(&self, kind: Kind, deadline: Instant, key: &[u8], cmd: &Cmd) -> Result<Reply<Value>> {
        let reply = self.request(kind, deadline, key, |_| cmd.clone()).await?;
        Ok(Reply {
            value: reply.value.value,
            resent_after_doubt: reply.resent_after_doubt,
        })
    }

    /// `WAIT`'s arguments for a request of this kind, if it waits.
    fn wait_args(&self, kind: Kind) -> Option<(u32, u64)> {
        match self.config.replication {
            Replication::Wait { replicas, timeout } if kind == Kind::Write => {
                Some((replicas, u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)))
            }
            _ => None,
        }
    }

    /// The route of one attempt to `target`: its master's direct connection
    /// (on `lane`) unless the attempt follows a redirect or there is none,
    /// else the client.
    fn via(&self, conn: Conn, target: Target<'_>, lane: Lane, redirected: bool) -> Via {
        if !redirected {
            if let Some(master) = self.direct_master(target.slot()) {
                let connection = master.connection(lane);
                return Via::Direct(StaleGuard { master, armed: false }, connection);
            }
        }
        Via::Client(conn, lane)
    }

    /// Sends one command to `target` on one attempt (see [`Inner::via`]).
    pub(crate) async fn send_query(&self, conn: Conn, cmd: &Cmd, target: Target<'_>) -> RedisResult<Value> {
        self.via(conn, target, Lane::Reads, false)
            .query(cmd, target)
            .await
    }

    /// Sends a pipeline to `target` on one attempt (see [`Inner::via`]).
    pub(crate) async fn send_pipeline(
        &self,
        conn: Conn,
        pipe: &Pipeline,
        target: Target<'_>,
    ) -> RedisResult<Vec<Value>> {
        self.via(conn, target, Lane::Reads, false)
            .pipeline(pipe, target)
            .await
    }

    /// Sends the command `make` builds to the master of `key`, followed in
    /// the same pipeline by `WAIT` for a write when replication asks for it
    /// (and by the fence before it after a doubtful try).
    pub(crate) async fn request(
        &self,
        kind: Kind,
        deadline: Instant,
        key: &[u8],
        make: impl Fn(Attempt) -> Cmd,
    ) -> Result<Reply<Acked>> {
        let wait = self.wait_args(kind);
        let lane = if wait.is_some() { Lane::Writes } else { Lane::Reads };
        let make = &make;
        self.run(kind, deadline, move |conn, attempt| async move {
            let cmd = make(attempt);
            let target = Target::Key(key);
            let mut via = self.via(conn, target, lane, attempt.redirected);
            if attempt.redirected {
                // A single keyed command follows MOVED/ASK inside the client
                // and refreshes its slot map; the pipeline below cannot.
                let mut probe = redis::cmd("EXISTS");
                probe.arg(key);
                via.query(&probe, target).await?;
            }
            let Some((replicas, timeout_ms)) = wait else {
                return Ok(Acked {
                    value: via.query(&cmd, target).await?,
                    replicas: Replicas::NotAsked,
                });
            };
            let mut pipe = redis::pipe();
            pipe.add_command(cmd);
            if attempt.fence {
                let mut fence_key = Vec::with_capacity(key.len() + FENCE_SUFFIX.len());
                fence_key.extend_from_slice(key);
                fence_key.extend_from_slice(FENCE_SUFFIX);
                pipe.cmd("EVAL").arg(FENCE).arg(1).arg(fence_key);
            }
            pipe.cmd("WAIT").arg(replicas).arg(timeout_ms);
            let mut values = via.pipeline(&pipe, target).await?.into_iter();
            let value = match values.next() {
                Some(Value::ServerError(e)) => return Err(e.into()),
                Some(v) => v,
                None => {
                    return Err(RedisError::from((
                        redis::ErrorKind::Parse,
                        "empty pipeline reply",
                    )))
                }
            };
            Ok(Acked {
                value,
                replicas: replicas_from(values, attempt.fence),
            })
        })
        .await
    }

    /// The direct route's master of `slot` (cluster only), starting a
    /// background rebuild of the table if it has none for that slot and it
    /// is time to try again.
    fn direct_master(&self, slot: u16) -> Option<Arc<Master>> {
        if !self.cluster {
            return None;
        }
        let table = self.direct.read().unwrap_or_else(PoisonError::into_inner).clone();
        if let Some(master) = table.as_ref().and_then(|t| t.master(slot)) {
            return Some(Arc::clone(master));
        }
        self.schedule_direct();
        None
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
    async fn build_direct(&self) {
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
                let mut c = connect_node(&self.config, &self.seeds[0], &host, port).await?;
                let reply = direct_query(&mut c, redis::cmd("CLUSTER").arg("SLOTS")).await?;
                crate::conn::parse_cluster_slots(&reply)
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
            let fault = match timeout(left, attempt(self.conn(), how)).await {
                Ok(Ok(value)) => {
                    self.health.success();
                    return Ok(Reply {
                        value,
                        resent_after_doubt: doubt,
                    });
                }
                Ok(Err(err)) => {
                    how.redirected = matches!(
                        err.kind(),
                        redis::ErrorKind::Server(redis::ServerErrorKind::Moved | redis::ServerErrorKind::Ask)
                    );
                    classify(&err)
                }
                Err(_) => Fault::TimedOut,
            };
            if fault.server_answered() {
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
            doubt |= fault.maybe_applied();
            how.fence = doubt;
            let give_up = |fault: &Fault| give_up(fault, kind == Kind::Write, doubt, self.request_timeout_ms);
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
            master.mark_stale();
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

impl SessionStore for RedisStore {
    async fn create(&self, metadata: &[u8], timeout: Timeout) -> Result<SessionId> {
        RedisStore::create(self, metadata, timeout).await
    }

    async fn insert(&self, id: SessionId, metadata: &[u8], timeout: Timeout) -> Result<()> {
        RedisStore::insert(self, id, metadata, timeout).await
    }

    async fn get(&self, id: &SessionId) -> Result<Session> {
        RedisStore::get(self, id).await
    }

    async fn peek(&self, id: &SessionId) -> Result<Session> {
        RedisStore::peek(self, id).await
    }

    async fn update<F>(&self, id: &SessionId, f: F) -> Result<Session>
    where
        F: FnMut(&[u8]) -> Vec<u8> + Send,
    {
        RedisStore::update(self, id, f).await
    }

    async fn touch(&self, id: &SessionId) -> Result<()> {
        RedisStore::touch(self, id).await
    }

    async fn delete(&self, id: &SessionId) -> Result<()> {
        RedisStore::delete(self, id).await
    }

    async fn set_ttl(&self, id: &SessionId, timeout: Timeout) -> Result<()> {
        RedisStore::set_ttl(self, id, timeout).await
    }

    async fn contains(&self, id: &SessionId) -> Result<bool> {
        RedisStore::contains(self, id).await
    }

    async fn len(&self) -> Result<usize> {
        RedisStore::len(self).await
    }

    async fn list(&self, cursor: Cursor, limit: usize) -> Result<Page> {
        RedisStore::list(self, cursor, limit).await
    }

    async fn cleanup_expired(&self) -> Result<usize> {
        Ok(RedisStore::cleanup_expired(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(port: u16) -> (String, u16) {
        ("10.0.0.1".to_owned(), port)
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

    #[test]
    fn commit_replies_are_validated() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let cmd = "EVALSHA (commit script)";
        assert!(matches!(
            commit_outcome(cmd, Value::Array(vec![Value::Int(0)])),
            Ok(Commit::Absent)
        ));
        let done = Value::Array(vec![Value::Int(1), bulk("1"), bulk("2"), bulk("0")]);
        assert!(matches!(commit_outcome(cmd, done), Ok(Commit::Done(f)) if f.len() == 3));
        let moved = Value::Array(vec![Value::Int(2), bulk("8"), bulk("m")]);
        assert!(matches!(commit_outcome(cmd, moved), Ok(Commit::Moved { .. })));
        for bad in [
            Value::Int(42),
            Value::Array(vec![Value::Int(1)]),
            Value::Array(vec![Value::Int(2), bulk("8"), Value::Nil]),
            Value::Array(vec![Value::Int(3)]),
        ] {
            match commit_outcome(cmd, bad) {
                Err(Error::OutcomeUnknown { reason }) => assert!(reason.contains(cmd), "{reason}"),
                _ => panic!("accepted a malformed commit reply"),
            }
        }
    }

    #[test]
    fn the_replicas_answer_comes_after_the_fence() {
        let r = replicas_from([Value::Int(1), Value::Int(1)].into_iter(), true);
        assert!(matches!(r, Replicas::Acked(1)));
        let r = replicas_from([Value::Int(0)].into_iter(), false);
        assert!(matches!(r, Replicas::Acked(0)));
        let r = replicas_from([Value::Int(42)].into_iter(), true);
        assert!(
            matches!(r, Replicas::Unconfirmed(_)),
            "the fence answered 42: {r:?}"
        );
        let r = replicas_from(std::iter::empty(), false);
        assert!(matches!(r, Replicas::Unconfirmed(_)));
        let r = replicas_from([Value::Int(-1)].into_iter(), false);
        assert!(matches!(r, Replicas::Unconfirmed(_)));
    }
}
