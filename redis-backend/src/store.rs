//! The store: each operation as one script or command on the key's master,
//! resent per the error table in `error.rs` until the request timeout.
//!
//! Request path, in order: clone the connection handle (a read lock held for
//! a pointer copy) → send (with `WAIT` in the same pipeline when the write
//! asks for replicas) → on failure, classify, tell the stuck-client detector,
//! and resend after a short doubling pause while the budget lasts.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant};

use rand::Rng;
use redis::aio::MultiplexedConnection;
use redis::{Cmd, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisResult, Value};
use session_engine::{Cursor, Error, Metadata, Page, Result, Session, SessionId, SessionStore, Timeout};
use tokio::time::timeout;

use crate::config::{Deployment, RedisConfig, Replication};
use crate::conn::{direct_pipeline, direct_query, Conn, Direct, Shard, Target};
use crate::error::{classify, give_up, Fault};
use crate::health::Health;
use crate::keys::KeySpace;
use crate::limits::{
    DIRECT_REBUILD_INTERVAL, RETRY_BACKOFF_MAX, RETRY_BACKOFF_MIN, UPDATE_BACKOFF_MAX, UPDATE_EAGER_TRIES,
    UPDATE_TRIES_MAX,
};
use crate::reply;
use crate::scripts::{Script, Scripts};

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
    /// The cluster shortcut (see `conn::Direct`), `None` while stale.
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
    /// Changes nothing.
    Read,
    /// Slides a deadline only (idempotent; no `WAIT`).
    Slide,
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
}

/// A request's reply and what its attempts leave open.
pub(crate) struct Reply<T> {
    pub(crate) value: T,
    /// An earlier attempt failed after it may have run: the reply may be to
    /// a resend of a request that already took effect.
    pub(crate) resent_after_doubt: bool,
}

impl RedisStore {
    /// Connects to the deployment and checks that it answers.
    ///
    /// The runtime this runs on becomes the store's home: it drives the
    /// store's connections (and makes new ones after a failover), so it must
    /// outlive the store and keep running — a multi-thread Tokio runtime, or
    /// a current-thread one that the application keeps driving. Operations
    /// may then be awaited from any Tokio runtime with the time driver
    /// enabled (for example one current-thread runtime per worker thread).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the bad setting; [`Error::Unavailable`]
    /// if no server answers within the connect timeout.
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
                return Err(Error::Unavailable {
                    reason: format!("cannot connect to {urls:?}: {e}"),
                })
            }
            Err(_) => {
                return Err(Error::Unavailable {
                    reason: format!("cannot connect to {urls:?} within {budget:?}"),
                })
            }
        };
        let inner = Arc::new_cyclic(|me| Inner {
            home: tokio::runtime::Handle::current(),
            me: me.clone(),
            origin: Instant::now(),
            cluster: matches!(config.deployment, Deployment::Cluster(_)),
            request_timeout_ms: u64::try_from(config.request_timeout.as_millis()).unwrap_or(u64::MAX),
            health: Health::new(config.stuck_after),
            keys,
            scripts: Scripts::new(),
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
        inner.topology().await?;
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
        for _ in 0..CREATE_TRIES_MAX {
            let id = SessionId::random().map_err(Error::Entropy)?;
            match self.inner.insert(id, metadata, &timeout_field).await {
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
        self.inner.insert(id, metadata, &timeout_field).await
    }

    /// Returns the session and slides its deadline (one script: read, record
    /// the access, re-arm the TTL).
    ///
    /// # Errors
    /// [`Error::NotFound`]; the request errors of the crate docs.
    pub async fn get(&self, id: &SessionId) -> Result<Session> {
        let key = self.inner.keys.key(id);
        let reply = self
            .inner
            .script(Kind::Read, &self.inner.scripts.get, &key, &[])
            .await?;
        reply::session(*id, "get", reply.value.value)?.ok_or(Error::NotFound)
    }

    /// Returns the session without sliding its deadline (`HMGET`).
    ///
    /// # Errors
    /// [`Error::NotFound`]; the request errors of the crate docs.
    pub async fn peek(&self, id: &SessionId) -> Result<Session> {
        let key = self.inner.keys.key(id);
        self.inner.peek(*id, &key).await?.ok_or(Error::NotFound)
    }

    /// Replaces the metadata with `f(current)` atomically (optimistic: the
    /// commit script installs the result only if the version read is still
    /// current, and otherwise hands back the newer value for `f` to run on
    /// again); slides the deadline.
    ///
    /// # Errors
    /// [`Error::NotFound`] (also if the session goes while `f` runs);
    /// [`Error::ValueTooLarge`] if `f` returns too much (nothing changed);
    /// [`Error::Contended`] after 256 lost races; [`Error::OutcomeUnknown`]
    /// if a commit failed in doubt and a concurrent writer then moved the
    /// version on (whether this update is in is then unknowable); the request
    /// errors of the crate docs.
    pub async fn update<F>(&self, id: &SessionId, mut f: F) -> Result<Session>
    where
        F: FnMut(&[u8]) -> Vec<u8> + Send,
    {
        let inner = &self.inner;
        let key = inner.keys.key(id);
        let (mut current, mut version) = inner.read_for_update(&key).await?;
        for attempt in 0..UPDATE_TRIES_MAX {
            let new = f(&current);
            inner.check_len(new.len())?;
            let token = token();
            let reply = inner
                .script(
                    Kind::Write,
                    &inner.scripts.commit,
                    &key,
                    &[&version, &new, token.as_bytes()],
                )
                .await?;
            let fields = match reply.value.value {
                Value::Array(fields) => fields,
                other => return Err(crate::error::bad_reply("commit", &other)),
            };
            match fields.first().map(|v| reply::int("commit", v)).transpose()? {
                Some(0) => return Err(Error::NotFound),
                Some(1) => {
                    let session = reply::session_with(*id, Metadata::from(new), "commit", &fields[1..])?;
                    inner.settle_wait(reply.value.acked)?;
                    return Ok(session);
                }
                Some(2) if reply.resent_after_doubt => {
                    return Err(Error::OutcomeUnknown {
                        reason: "an update commit failed in doubt and another writer changed the session \
                                 before the resend: it may or may not be in"
                            .into(),
                    })
                }
                Some(2) if fields.len() == 3 => {
                    inner.update_conflicts.fetch_add(1, Ordering::Relaxed);
                    if attempt < UPDATE_EAGER_TRIES {
                        // Retry at once on the newer value the script handed back.
                        let mut rest = fields.into_iter().skip(1);
                        version = rest.next().and_then(reply::bytes).unwrap_or_default();
                        current = rest.next().and_then(reply::bytes).unwrap_or_default();
                    } else {
                        // Contended: step aside for a random, growing pause, then
                        // read afresh (a value held through the pause would be stale)
                        // and commit straight after, keeping the race window at two
                        // round trips.
                        conflict_pause(attempt - UPDATE_EAGER_TRIES).await;
                        (current, version) = inner.read_for_update(&key).await?;
                    }
                }
                _ => return Err(crate::error::bad_reply("commit", &Value::Array(fields))),
            }
        }
        Err(Error::Contended {
            tries: UPDATE_TRIES_MAX,
        })
    }

    /// Slides the session's deadline.
    ///
    /// # Errors
    /// [`Error::NotFound`]; the request errors of the crate docs.
    pub async fn touch(&self, id: &SessionId) -> Result<()> {
        let key = self.inner.keys.key(id);
        let reply = self
            .inner
            .script(Kind::Slide, &self.inner.scripts.touch, &key, &[])
            .await?;
        match reply::int("touch", &reply.value.value)? {
            1 => Ok(()),
            _ => Err(Error::NotFound),
        }
    }

    /// Removes the session (`DEL`). After a resend (the first attempt failed
    /// in doubt) a missing session counts as deleted.
    ///
    /// # Errors
    /// [`Error::NotFound`]; the request errors of the crate docs.
    pub async fn delete(&self, id: &SessionId) -> Result<()> {
        let key = self.inner.keys.key(id);
        let mut cmd = redis::cmd("DEL");
        cmd.arg(&key);
        let reply = self.inner.request(Kind::Write, &key, |_| cmd.clone()).await?;
        match reply::int("delete", &reply.value.value)? {
            1 => self.inner.settle_wait(reply.value.acked),
            _ if reply.resent_after_doubt => Ok(()),
            _ => Err(Error::NotFound),
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
        let key = self.inner.keys.key(id);
        let reply = self
            .inner
            .script(
                Kind::Write,
                &self.inner.scripts.set_ttl,
                &key,
                &[field.as_bytes()],
            )
            .await?;
        match reply::int("set_ttl", &reply.value.value)? {
            1 => self.inner.settle_wait(reply.value.acked),
            _ => Err(Error::NotFound),
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
        let reply = self.inner.command(Kind::Read, &key, &cmd).await?;
        Ok(reply::int("contains", &reply.value)? == 1)
    }

    /// Live sessions under this store's prefix, counted with `SCAN` on every
    /// master: O(keys on the servers), meant for monitoring, not hot paths.
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
async fn conflict_pause(round: u32) {
    let cap_us =
        (100u64 << round.min(16)).min(u64::try_from(UPDATE_BACKOFF_MAX.as_micros()).unwrap_or(u64::MAX));
    let pause_us = rand::rng().random_range(0..=cap_us);
    tokio::time::sleep(Duration::from_micros(pause_us)).await;
}

fn check_timeout(timeout: Timeout) -> Result<String> {
    Ok(match timeout.checked_ms()? {
        None => reply::timeout_field(Timeout::Never),
        Some(ms) => ms.to_string(),
    })
}

/// A request's value and, for a write sent with `WAIT`, the replicas that
/// acknowledged it.
pub(crate) struct Acked {
    pub(crate) value: Value,
    pub(crate) acked: Option<i64>,
}

/// The connection one attempt goes out on.
enum Via {
    /// Straight to the key's master (cluster shortcut).
    Direct(MultiplexedConnection),
    /// Through the client (single server, or the cluster client's routing).
    Conn(Conn),
}

impl Via {
    async fn query(&mut self, cmd: Cmd, key: &[u8]) -> RedisResult<Value> {
        match self {
            Via::Direct(c) => direct_query(c, &cmd).await,
            Via::Conn(c) => c.query(cmd, Target::Key(key)).await,
        }
    }

    async fn pipeline(&mut self, pipe: &redis::Pipeline, key: &[u8]) -> RedisResult<Vec<Value>> {
        match self {
            Via::Direct(c) => direct_pipeline(c, pipe).await,
            Via::Conn(c) => c.pipeline(pipe, Target::Key(key)).await,
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

    /// Metadata and version for an update (`HMGET m v`).
    async fn read_for_update(&self, key: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
        let mut read = sized_cmd("HMGET", 4, key.len() + 2);
        read.arg(key).arg("m").arg("v");
        let reply = self.command(Kind::Read, key, &read).await?;
        let malformed = |v: Value| crate::error::bad_reply("update read", &v);
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
    pub(crate) async fn peek(&self, id: SessionId, key: &[u8]) -> Result<Option<Session>> {
        let reply = self.command(Kind::Read, key, &peek_cmd(key)).await?;
        reply::session(id, "peek", reply.value)
    }

    async fn insert(&self, id: SessionId, metadata: &[u8], timeout_field: &str) -> Result<()> {
        let key = self.keys.key(&id);
        let token = token();
        let first_version = first_version();
        let args: [&[u8]; 4] = [
            metadata,
            timeout_field.as_bytes(),
            token.as_bytes(),
            first_version.as_bytes(),
        ];
        let reply = self
            .script(Kind::Write, &self.scripts.insert, &key, &args)
            .await?;
        match reply::int("insert", &reply.value.value)? {
            1 => self.settle_wait(reply.value.acked),
            _ => Err(Error::AlreadyExists),
        }
    }

    /// For a write that took effect: an error if `WAIT` came back short.
    fn settle_wait(&self, acked: Option<i64>) -> Result<()> {
        match (self.config.replication, acked) {
            (Replication::Wait { replicas, timeout }, Some(acked)) if acked < i64::from(replicas) => {
                self.shortfalls.fetch_add(1, Ordering::Relaxed);
                let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
                Err(reply::shortfall(acked, replicas, ms))
            }
            _ => Ok(()),
        }
    }

    fn conn(&self) -> Conn {
        self.conn.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Runs `script` on the master of `key`.
    async fn script(&self, kind: Kind, script: &Script, key: &[u8], args: &[&[u8]]) -> Result<Reply<Acked>> {
        self.request(kind, key, |attempt| {
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
    async fn command(&self, kind: Kind, key: &[u8], cmd: &Cmd) -> Result<Reply<Value>> {
        let reply = self.request(kind, key, |_| cmd.clone()).await?;
        Ok(Reply {
            value: reply.value.value,
            resent_after_doubt: reply.resent_after_doubt,
        })
    }

    /// Sends the command `make` builds to the master of `key`, followed in
    /// the same pipeline by `WAIT` for a write when replication asks for it.
    pub(crate) async fn request(
        &self,
        kind: Kind,
        key: &[u8],
        make: impl Fn(Attempt) -> Cmd,
    ) -> Result<Reply<Acked>> {
        let wait = match self.config.replication {
            Replication::Wait { replicas, timeout } if kind == Kind::Write => {
                Some((replicas, u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)))
            }
            _ => None,
        };
        let make = &make;
        self.run(kind, move |conn, attempt| async move {
            let cmd = make(attempt);
            let mut via = match self.direct_for(key) {
                Some(direct) if !attempt.redirected => Via::Direct(direct),
                _ => Via::Conn(conn),
            };
            if attempt.redirected {
                // A single keyed command follows MOVED/ASK inside the client
                // and refreshes its slot map; the pipeline below cannot.
                let mut probe = redis::cmd("EXISTS");
                probe.arg(key);
                via.query(probe, key).await?;
            }
            match wait {
                None => Ok(Acked {
                    value: via.query(cmd, key).await?,
                    acked: None,
                }),
                Some((replicas, timeout_ms)) => {
                    let mut pipe = redis::pipe();
                    pipe.add_command(cmd).cmd("WAIT").arg(replicas).arg(timeout_ms);
                    let mut values = via.pipeline(&pipe, key).await?.into_iter();
                    let value = match values.next() {
                        Some(Value::ServerError(e)) => return Err(e.into()),
                        Some(v) => v,
                        None => {
                            return Err(redis::RedisError::from((
                                redis::ErrorKind::Parse,
                                "empty pipeline reply",
                            )))
                        }
                    };
                    let acked = match values.next() {
                        Some(Value::Int(n)) => n,
                        _ => 0,
                    };
                    Ok(Acked {
                        value,
                        acked: Some(acked),
                    })
                }
            }
        })
        .await
    }

    /// The direct connection for `key` (cluster only), starting a background
    /// build of the table if there is none and it is time to try again.
    fn direct_for(&self, key: &[u8]) -> Option<MultiplexedConnection> {
        if !self.cluster {
            return None;
        }
        if let Some(direct) = self
            .direct
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            return Some(direct.for_key(key));
        }
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
        None
    }

    /// Builds the direct table from the current topology (bounded by the
    /// connect and request timeouts); leaves none if any master fails.
    async fn build_direct(&self) {
        let interval_ms = u64::try_from(DIRECT_REBUILD_INTERVAL.as_millis()).unwrap_or(u64::MAX);
        self.direct_retry_at_ms
            .store(self.since_origin_ms() + interval_ms, Ordering::Relaxed);
        let mut conn = self.conn();
        let budget = self.config.connect_timeout + self.config.request_timeout;
        let built = timeout(budget, Direct::build(&mut conn, &self.config, &self.seeds[0])).await;
        if let Ok(Ok(Some(direct))) = built {
            *self.direct.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(direct));
        }
    }

    /// Forgets the direct table (a request on it failed: it may be stale).
    fn drop_direct(&self) {
        if self.cluster
            && self
                .direct
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .is_some()
        {
            *self.direct.write().unwrap_or_else(PoisonError::into_inner) = None;
        }
    }

    fn since_origin_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Runs attempts of one request until one succeeds, one fails for good,
    /// or the request timeout passes (see the module docs and `error.rs`).
    pub(crate) async fn run<T, F, Fut>(&self, kind: Kind, mut attempt: F) -> Result<Reply<T>>
    where
        F: FnMut(Conn, Attempt) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let deadline = Instant::now() + self.config.request_timeout;
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
            } else {
                // A routing or transport failure: the direct table may be
                // stale; the resend goes through the cluster client.
                self.drop_direct();
                if self.health.failure() {
                    // The rebuild runs on the home runtime and outlives
                    // this request; the request waits for it only as long
                    // as its own deadline allows (a fresh client can take
                    // `connect_timeout + request_timeout` to prove itself).
                    if let Some(me) = self.me.upgrade() {
                        let rebuild = self.home.spawn(async move { me.rebuild().await });
                        let _ = timeout(deadline.saturating_duration_since(Instant::now()), rebuild).await;
                    }
                }
            }
            if how.redirected {
                self.drop_direct();
            }
            doubt |= fault.maybe_applied();
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
        if let Ok(Ok(Some(conn))) = timeout(budget, fresh).await {
            *self.conn.write().unwrap_or_else(PoisonError::into_inner) = conn;
            self.drop_direct();
            self.health.rebuilt();
        }
    }

    /// The masters by first slot (one pseudo-shard for a single server);
    /// remembers every node for rebuilds.
    pub(crate) async fn topology(&self) -> Result<Vec<Shard>> {
        let reply = self
            .run(Kind::Read, |mut conn, _| async move { conn.topology().await })
            .await?;
        let (shards, nodes) = reply.value;
        if !nodes.is_empty() {
            remember_nodes(
                &mut self.known_nodes.write().unwrap_or_else(PoisonError::into_inner),
                nodes,
            );
        }
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
}
