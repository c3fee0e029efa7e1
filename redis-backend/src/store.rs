//! The public API: [`RedisStore`], each operation as one script or command
//! on the key's master (see the crate docs for the table), built on the
//! request machinery of `request.rs` and, for `len` and `list`, on
//! `list.rs`.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use redis::{Cmd, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, ProtocolVersion, Value};
use session_engine::{
    redact_url, Cursor, Error, Metadata, Op, Page, Result, Session, SessionId, SessionStore, Timeout, Updated,
};
use tokio::time::timeout;

use crate::config::{names_protocol, Deployment, RedisConfig};
use crate::conn::{connect_node, direct_query, Conn};
use crate::error::{classify, Fault};
use crate::keys::{id_slot, random_id_in_slot};
use crate::limits::{
    CREATE_TRIES_MAX, GET_MANY_IDS_MAX, PIPELINES_IN_FLIGHT_MAX, SLOT_ID_DRAWS_MAX, UPDATE_BACKOFF_MAX,
    UPDATE_BACKOFF_MIN, UPDATE_EAGER_TRIES, UPDATE_TRIES_MAX, VERSION_FIRST_MAX,
};
use crate::replication::ReplicationLag;
use crate::reply::{self, Commit, LifetimeSet, Seen};
use crate::request::{join_all, per_route, Acked, BatchReply, Expect, Inner, Kind, RedisStats, Reply};
use crate::scripts::{peek_cmd, try_update_read_cmd, update_read_cmd, Scripts, ROTATED_SUFFIX};

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
        let defaulted = !urls.iter().any(|url| names_protocol(url));
        let seeds = urls
            .iter()
            .map(|url| {
                let info = url
                    .as_str()
                    .into_connection_info()
                    .map_err(|e| Error::InvalidConfig(format!("server URL {:?}: {e}", redact_url(url))))?
                    .set_tcp_settings(config.tcp_settings());
                if !defaulted {
                    return Ok(info);
                }
                // RESP3 unless a URL says otherwise: the `redis` crate's
                // clients then replace a connection the server closes as
                // soon as it closes, and the direct routes are marked
                // stale (`conn::connect_node`), before a request is sent
                // on it; the request would be in doubt.
                let settings = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
                Ok(info.set_redis_settings(settings))
            })
            .collect::<Result<Vec<ConnectionInfo>>>()?;
        let budget = config.connect_timeout + config.request_timeout;
        let (conn, seeds) = match connect_speaking(&config, seeds, defaulted, budget).await {
            (Ok(Ok(conn)), seeds) => (conn, seeds),
            (Ok(Err(e)), seeds) => {
                // A single server behind redis+cluster:// refuses CLUSTER SLOTS.
                if matches!(config.deployment, Deployment::Cluster(_)) {
                    check_not_standalone(&config, &seeds, &urls).await?;
                }
                return Err(Error::Unavailable {
                    reason: format!("cannot connect to {:?}: {e}", redacted(&urls)),
                });
            }
            (Err(_), _) => {
                return Err(Error::Unavailable {
                    reason: format!("cannot connect to {:?} within {budget:?}", redacted(&urls)),
                })
            }
        };
        let scripts = Scripts::new();
        if matches!(config.deployment, Deployment::Standalone(_)) {
            check_standalone(conn.clone(), &urls[0], budget).await?;
            let _ = timeout(budget, conn.clone().load_scripts(&scripts.codes())).await;
        }
        let inner = Inner::new(config, keys, scripts, conn, seeds);
        // Learn every node now, so that a rebuild can reach the cluster even
        // if the seeds given are the ones that fail.
        inner.topology(inner.deadline()).await?;
        if inner.is_cluster() {
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

    /// The Redis key of `topic`'s reverse index (`<prefix>t{<hash>}:<topic>`,
    /// see `state.rs`), for operators and tests (`ZCARD`, `CLUSTER KEYSLOT`).
    #[must_use]
    pub fn topic_key(&self, topic: &str) -> String {
        String::from_utf8(self.inner.keys.topic_key(topic)).expect("prefix, hex and topic are UTF-8")
    }

    /// The Redis Cluster hash slot of the session's key (CRC16 of the id,
    /// its hash tag, mod 16384): where the session and any per-session key
    /// added later live.
    #[must_use]
    pub fn slot(&self, id: &SessionId) -> u16 {
        crate::keys::slot_of(&self.inner.keys.key(id))
    }

    /// Tests: the store's connections to nodes an `ASK` named that are
    /// kept for the next redirect and have not closed.
    #[doc(hidden)]
    #[must_use]
    pub fn debug_asked_connections_open(&self) -> usize {
        self.inner.asked_connections_open()
    }

    /// Counters since connect.
    #[must_use]
    pub fn stats(&self) -> RedisStats {
        self.inner.stats()
    }

    /// Times a direct route to a master was marked stale since connect
    /// (its slots then take the cluster client until the table is rebuilt;
    /// a request failed on it, or the server closed one of its connections):
    /// for tests of what does and does not count against a route. Not a
    /// stable API.
    #[doc(hidden)]
    #[must_use]
    pub fn routes_marked_stale(&self) -> u64 {
        self.inner.routes_marked_stale()
    }

    /// Creates a session with a fresh random id (128 bits from the OS).
    ///
    /// # Errors
    /// [`Error::ValueTooLarge`], [`Error::InvalidTimeout`], [`Error::Entropy`]
    /// (nothing sent); the request errors of the crate docs.
    pub async fn create(&self, metadata: &[u8], timeout: Timeout) -> Result<SessionId> {
        let timeout_field = self.check(metadata.len(), timeout)?;
        let deadline = self.inner.deadline();
        for _ in 0..CREATE_TRIES_MAX {
            let id = SessionId::random().map_err(Error::Entropy)?;
            match self
                .insert_at(id, metadata, &timeout_field, deadline, false)
                .await
            {
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
        let timeout_field = self.check(metadata.len(), timeout)?;
        self.insert_at(id, metadata, &timeout_field, self.inner.deadline(), true)
            .await
    }

    /// Returns the session and slides its deadline (one script: read, record
    /// the access, re-arm the TTL). A read: it does not wait for replicas
    /// (a slide lost in a failover only lets the session expire earlier).
    ///
    /// # Errors
    /// [`Error::NotFound`]; the request errors of the crate docs.
    pub async fn get(&self, id: &SessionId) -> Result<Session> {
        self.get_within(id, self.inner.deadline()).await
    }

    /// [`RedisStore::get`] of many sessions, the results in the order of
    /// `ids`: one pipeline of the `get` script per master (per 1000 ids),
    /// the masters' pipelines sent at the same time, so that a batch costs
    /// about one round trip instead of one per id. Each id's result is what
    /// `get` would say of it: the session with its deadline slid,
    /// [`Error::NotFound`], or an error of its own (a key holding foreign
    /// data is that id's `Unavailable`). An id the pipeline could not serve
    /// (its slot moved to another master: `MOVED`, `ASK`) is read on its
    /// own; a pipeline a node refused whole for now (`LOADING`,
    /// `CLUSTERDOWN`...) is resent after a pause. One request timeout covers the whole call. An id
    /// given twice is read twice, as two `get`s would. At most
    /// [`PIPELINES_IN_FLIGHT_MAX`] pipelines of one call are in flight on
    /// one master's connection at a time.
    ///
    /// # Errors
    /// Per id, those of [`RedisStore::get`]; if a master's pipeline gets no
    /// answer within the request timeout, each of its ids reports the
    /// request error. More than [`GET_MANY_IDS_MAX`] ids are read that many
    /// at a time, one batch after another, each within a request timeout
    /// of its own (as the embedded engine, which has no bound, answers
    /// them all).
    pub async fn get_many(&self, ids: &[SessionId]) -> Vec<Result<Session>> {
        if ids.len() <= GET_MANY_IDS_MAX {
            return self.get_many_within(ids).await;
        }
        let mut results = Vec::with_capacity(ids.len());
        for batch in ids.chunks(GET_MANY_IDS_MAX) {
            results.extend(self.get_many_within(batch).await);
        }
        results
    }

    /// [`RedisStore::get_many`] of at most [`GET_MANY_IDS_MAX`] ids, within
    /// one request timeout.
    async fn get_many_within(&self, ids: &[SessionId]) -> Vec<Result<Session>> {
        if ids.is_empty() {
            return Vec::new();
        }
        let inner = &self.inner;
        let deadline = inner.deadline();
        let keys: Vec<Vec<u8>> = ids.iter().map(|id| inner.keys.key(id)).collect();
        let batches = inner.batches(&keys);
        // Each master's pipeline, then at once the ids it could not serve,
        // read one by one: a master that answers late (or not at all)
        // holds up only its own ids.
        let served = per_route(&batches, PIPELINES_IN_FLIGHT_MAX, |batch| {
            self.get_batch(ids, &keys, batch, deadline)
        })
        .await;
        let mut results: Vec<Option<Result<Session>>> = ids.iter().map(|_| None).collect();
        for (i, result) in served.into_iter().flatten() {
            results[i] = Some(result);
        }
        results
            .into_iter()
            .map(|result| result.expect("the batches cover every id"))
            .collect()
    }

    /// One master's share of [`RedisStore::get_many`]: the ids at the
    /// indices `batch` of `ids` in one pipeline, then those it could not
    /// serve on their own; each index with its result.
    async fn get_batch(
        &self,
        ids: &[SessionId],
        keys: &[Vec<u8>],
        batch: &[usize],
        deadline: Instant,
    ) -> Vec<(usize, Result<Session>)> {
        let inner = &self.inner;
        let script = &inner.scripts.get;
        let batch_keys: Vec<&[u8]> = batch.iter().map(|&i| keys[i].as_slice()).collect();
        let replies = match inner.script_batch(deadline, script, &batch_keys).await {
            Ok(replies) => replies,
            Err(e) => return batch.iter().map(|&i| (i, Err(same_error(&e)))).collect(),
        };
        let mut results = Vec::with_capacity(batch.len());
        let mut resend = Vec::new();
        for (&i, reply) in batch.iter().zip(replies) {
            match reply {
                BatchReply::Value(value) => results.push((
                    i,
                    reply::session(ids[i], &script.command, value).and_then(|s| s.ok_or(Error::NotFound)),
                )),
                BatchReply::Failed(e) | BatchReply::Foreign(e) => results.push((i, Err(e))),
                BatchReply::Resend => resend.push(i),
            }
        }
        let again = join_all(
            resend
                .iter()
                .map(|&i| self.get_within(&ids[i], deadline))
                .collect(),
        )
        .await;
        results.extend(resend.into_iter().zip(again));
        results
    }

    /// Returns the session without sliding its deadline (`HMGET`).
    ///
    /// # Errors
    /// [`Error::NotFound`]; the request errors of the crate docs.
    pub async fn peek(&self, id: &SessionId) -> Result<Session> {
        let inner = &self.inner;
        let key = inner.keys.key(id);
        let reply = inner
            .command(Kind::Read, inner.deadline(), &key, &peek_cmd(&key))
            .await?;
        reply::session(*id, "HMGET (peek)", reply.value)?.ok_or(Error::NotFound)
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
    /// version on, or the session was gone by the resend (whether this
    /// update is in is then unknowable); the request
    /// errors of the crate docs. The read, every commit and every resend
    /// share one request timeout.
    pub async fn update<F>(&self, id: &SessionId, mut f: F) -> Result<Session>
    where
        F: FnMut(&[u8]) -> Vec<u8> + Send,
    {
        let inner = &self.inner;
        let key = inner.keys.key(id);
        let deadline = inner.deadline();
        let (mut current, mut version) = self.read_for_update(&key, deadline).await?;
        let script = &inner.scripts.commit;
        for attempt in 0..UPDATE_TRIES_MAX {
            let new = f(&current);
            self.check_len(new.len())?;
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
            match reply::commit_outcome(&script.command, value)? {
                // Gone after a doubtful try: that try may have committed
                // before someone deleted or rotated the session.
                Commit::Absent if resent_after_doubt => return Err(gone_after_doubt("an update")),
                Commit::Absent => {
                    return Err(inner
                        .confirm_found(&key, deadline, Error::NotFound, Some(&replicas))
                        .await)
                }
                Commit::Done(fields) => {
                    let session = reply::session_with(*id, Metadata::from(new), &script.command, &fields)?;
                    return inner.acknowledge(replicas, session);
                }
                Commit::Moved(_) if resent_after_doubt => return Err(moved_after_doubt("an update")),
                Commit::Moved(newer) => {
                    if self.after_lost_race(attempt, deadline).await? {
                        (current, version) = self.read_for_update(&key, deadline).await?;
                    } else {
                        (current, version) = (newer.metadata, newer.version);
                    }
                }
            }
        }
        Err(Error::Contended {
            tries: UPDATE_TRIES_MAX,
        })
    }

    /// Runs `f` on the current metadata and does what it decides, atomically
    /// against the version it saw (optimistic, as [`RedisStore::update`]:
    /// one read, then the commit script, which replaces or deletes only if
    /// the version is still the one `f` saw and otherwise hands back the
    /// newer session for `f` to run on again):
    ///
    /// - `Ok(Op::Keep)`: nothing changes but the last access (activity, as
    ///   `get`). If the version moved
    ///   on meanwhile, `f` runs again on the newer value (the slide stands,
    ///   as the engine's keep). [`Updated::Kept`] with the session as `f`
    ///   saw it, its last access now.
    /// - `Ok(Op::Replace(bytes))`: as `update`. [`Updated::Replaced`] with
    ///   the new session.
    /// - `Ok(Op::Delete)`: deletes the session only if it is still the
    ///   version `f` saw (a concurrent update makes `f` run again on the
    ///   newer value). [`Updated::Deleted`] with the session as `f` saw it.
    /// - `Err(e)`: nothing changes, not even the last access; `Ok(Err(e))`.
    ///
    /// `f` may run more than once; its last decision is the one applied.
    /// With [`Replication::Wait`](crate::Replication::Wait) every outcome
    /// waits for the replicas, a keep and a refusal too: `f` decided on
    /// what the master holds, maybe another client's update no replica has
    /// yet (`Error::OutcomeUnknown` if they do not confirm it).
    ///
    /// # Errors
    /// The outer error is the backend's, as for [`RedisStore::update`]:
    /// [`Error::NotFound`] (also if the session goes while `f` runs);
    /// [`Error::ValueTooLarge`] if `f` returns too much (nothing changed);
    /// [`Error::Contended`] after 256 lost races, or when the request timeout
    /// runs out between lost races (nothing applied);
    /// [`Error::OutcomeUnknown`] if a replace or delete failed in doubt and
    /// a concurrent writer then changed the session, or if a replace failed
    /// in doubt and the session was gone by the resend; the request errors of
    /// the crate docs. The read, every commit and every resend share one
    /// request timeout. A delete resent after a doubtful try that finds the
    /// session gone counts it as deleted, as [`RedisStore::delete`] does.
    pub async fn try_update<F, E>(&self, id: &SessionId, mut f: F) -> Result<std::result::Result<Updated, E>>
    where
        F: FnMut(&[u8]) -> std::result::Result<Op, E> + Send,
        E: Send,
    {
        let inner = &self.inner;
        let key = inner.keys.key(id);
        let deadline = inner.deadline();
        let mut seen = self.read_seen(&key, deadline).await?;
        let script = &inner.scripts.commit;
        for attempt in 0..UPDATE_TRIES_MAX {
            let op = match f(&seen.metadata) {
                Ok(op) => op,
                // Decided on what the master holds: its replicas first.
                Err(e) => {
                    inner
                        .confirm_state(
                            &key,
                            deadline,
                            "the metadata a try_update closure refused",
                            Expect::Version(&seen.version, &seen.metadata),
                            None,
                        )
                        .await?;
                    return Ok(Err(e));
                }
            };
            // The commit script's operation codes (see `scripts::COMMIT`).
            let (code, new, kind): (&[u8], &[u8], Kind) = match &op {
                // A keep slides (`HSET a`), a write: its `WAIT` confirms
                // what `f` decided on, as every other decision's does.
                Op::Keep => (b"k", b"", Kind::Write),
                Op::Replace(new) => {
                    self.check_len(new.len())?;
                    (b"r", new, Kind::Write)
                }
                Op::Delete => (b"d", b"", Kind::Write),
            };
            let token = token();
            let Reply {
                value: Acked { value, replicas },
                resent_after_doubt,
            } = inner
                .script(
                    kind,
                    deadline,
                    script,
                    &key,
                    &[&seen.version, new, token.as_bytes(), code],
                )
                .await?;
            let updated = match (reply::commit_outcome(&script.command, value)?, op) {
                (Commit::Done(fields), Op::Keep) => {
                    // The session as `f` saw it, last accessed now (the
                    // reply's `a`).
                    let now = reply::session_with(*id, Metadata::from(Vec::new()), &script.command, &fields)?;
                    let kept = Seen {
                        last_access_ms: now.last_access_ms(),
                        ..seen
                    };
                    return inner.acknowledge(replicas, Ok(Updated::Kept(kept.into_session(*id))));
                }
                (Commit::Done(fields), Op::Replace(new)) => Updated::Replaced(reply::session_with(
                    *id,
                    Metadata::from(new),
                    &script.command,
                    &fields,
                )?),
                // The session `f` saw (the reply's fields were checked).
                (Commit::Done(_), Op::Delete) => Updated::Deleted(seen.into_session(*id)),
                // Gone after a doubtful try: this delete, by the try whose
                // reply was lost, or another's; as `delete`, counted done.
                (Commit::Absent, Op::Delete) if resent_after_doubt => {
                    Updated::Deleted(seen.into_session(*id))
                }
                // A replace: that try may have committed before someone
                // deleted or rotated the session.
                (Commit::Absent, Op::Replace(_)) if resent_after_doubt => {
                    return Err(gone_after_doubt("a try_update"))
                }
                (Commit::Absent, _) => {
                    return Err(inner
                        .confirm_found(&key, deadline, Error::NotFound, Some(&replicas))
                        .await)
                }
                (Commit::Moved(_), Op::Replace(_) | Op::Delete) if resent_after_doubt => {
                    return Err(moved_after_doubt("a try_update"))
                }
                (Commit::Moved(newer), _) => {
                    seen = if self.after_lost_race(attempt, deadline).await? {
                        self.read_seen(&key, deadline).await?
                    } else {
                        newer
                    };
                    continue;
                }
            };
            return inner.acknowledge(replicas, Ok(updated));
        }
        Err(Error::Contended {
            tries: UPDATE_TRIES_MAX,
        })
    }

    /// Stores the session under `id`, replacing any live one (one script):
    /// sets the metadata and the timeout, and counts as activity. A
    /// replaced session keeps its creation time (and gets a new version: an
    /// `update` that read the old metadata loses its race and runs again on
    /// this); a new one is created now.
    ///
    /// A resend after a doubtful try does not apply twice (its token is
    /// kept in the session, and an `update` does not remove it); after
    /// another `put` (or a `set_ttl` or `set_lifetime`) in between, it
    /// stores nothing and reports [`Error::OutcomeUnknown`] (that write may
    /// have come after the first try). A
    /// resend that finds no session stores nothing (see `scripts.rs`): the
    /// first try may have stored it and another client deleted it or
    /// rotated it away since, and storing again would bring back an id a
    /// rotation retired.
    ///
    /// # Errors
    /// [`Error::ValueTooLarge`], [`Error::InvalidTimeout`] (nothing sent);
    /// [`Error::OutcomeUnknown`] if a try failed in doubt and the resend
    /// found no session (nothing was stored again);
    /// [`Error::Unavailable`] if the id's key holds data that is not a
    /// session (nothing written: `insert` calls it taken); the request
    /// errors of the crate docs.
    pub async fn put(&self, id: SessionId, metadata: &[u8], timeout: Timeout) -> Result<()> {
        let timeout_field = self.check(metadata.len(), timeout)?;
        let inner = &self.inner;
        let script = &inner.scripts.put;
        let reply = self
            .store_script(script, &id, metadata, &timeout_field, inner.deadline(), true)
            .await?;
        let code = reply::code(&script.command, &reply.value.value, 1..=3, true)?;
        if code == 3 {
            return Err(Error::Unavailable {
                reason: "the session's key holds data that is not a session (another program's, under this \
                         store's key prefix): not overwritten"
                    .into(),
            });
        }
        if code == 2 {
            return Err(Error::OutcomeUnknown {
                reason:
                    "a put failed in doubt and, when it was resent, the session was gone or not the one it \
                         wrote: it may have been stored and then deleted, rotated away or written by another \
                         client (it was not stored again)"
                        .into(),
            });
        }
        inner.acknowledge(reply.value.replicas, ())
    }

    /// Moves the session to a fresh random id, atomically (one script: the
    /// core fields copied to the new key, the old key deleted, the
    /// activity): afterwards the old id is gone and the new one holds the
    /// same metadata, creation time and timeout, its last access now, and
    /// no per-session state (no subscriptions, a full rate-limit bucket:
    /// see [`SessionState`](session_engine::SessionState)). The defence
    /// against session fixation: call it when the session's privileges
    /// change (at login).
    ///
    /// The new id is drawn from the OS CSPRNG, uniformly among the ids
    /// whose key falls in the old one's hash slot, since a cluster runs a
    /// script only on keys of one slot: 114 random bits (2^128 ids / 2^14
    /// slots), the same on one server. It costs about 4 draws and a few
    /// microseconds (see `keys::random_id_in_slot`). A resend after a lost
    /// reply finds the rotation done (its token is on the new key, or on a
    /// mark beside the old key that lives for the request timeout) and does
    /// not rotate twice, nor a session someone inserted under the old id
    /// after the new one expired.
    ///
    /// # Errors
    /// [`Error::NotFound`] if no live session has the id; [`Error::Entropy`]
    /// (nothing sent); [`Error::OutcomeUnknown`] if a try failed in doubt
    /// and the resend found the session gone or that try's mark (it moved
    /// the session to a new id, which then expired); the request errors of the crate
    /// docs, `Unavailable` too while the session's slot migrates (Redis
    /// refuses a script over keys some of which are not there yet:
    /// `TRYAGAIN`, until the migration ends). After
    /// [`Error::OutcomeUnknown`] or [`Error::TimedOut`] the session may
    /// have moved to an id that only this call knew: treat it as ended
    /// (delete the old id; a session left under the new one expires by its
    /// timeout).
    pub async fn rotate(&self, id: &SessionId) -> Result<SessionId> {
        let inner = &self.inner;
        let old = inner.keys.key(id);
        let deadline = inner.deadline();
        let script = &inner.scripts.rotate;
        let mark_ms = inner.config.request_timeout.as_millis().max(1).to_string();
        for _ in 0..CREATE_TRIES_MAX {
            let new_id = Self::fresh_id_beside(id)?;
            let new = inner.keys.key(&new_id);
            let token = token();
            let mark = [&old[..], ROTATED_SUFFIX, token.as_bytes()].concat();
            let reply = inner
                .request(Kind::Write, deadline, &old, |attempt| {
                    let resend: &[u8] = if attempt.fence { b"1" } else { b"0" };
                    Cow::Owned(script.cmd_keys(
                        attempt.eval,
                        &[&old, &new, &mark],
                        &[token.as_bytes(), resend, mark_ms.as_bytes()],
                    ))
                })
                .await?;
            match reply::code(&script.command, &reply.value.value, 0..=2, true)? {
                1 => return inner.acknowledge(reply.value.replicas, new_id),
                // Gone after a doubtful try (or found again under its old
                // id, by someone who inserted it since): that try may have
                // rotated it to an id only this call knew, which then
                // expired.
                0 if reply.resent_after_doubt => {
                    return Err(Error::OutcomeUnknown {
                        reason: "a rotation failed in doubt, and when it was resent the session was gone or \
                                 that first try was found to have moved it (to a new id, which expired since; \
                                 a session under the old id now is someone else's)"
                            .into(),
                    })
                }
                0 => return Err(inner.confirm_found(&old, deadline, Error::NotFound, Some(&reply.value.replicas)).await),
                // The new id is taken (a 2^-114 event): draw another.
                _ => {}
            }
        }
        Err(Error::Unavailable {
            reason: format!(
                "{CREATE_TRIES_MAX} random ids in a row were taken: is the random source broken?"
            ),
        })
    }

    /// Slides the session's deadline. A write: with [`Replication::Wait`](crate::Replication::Wait) it
    /// is acknowledged only once the replicas have it (a slide lost in a
    /// failover would let the session expire before the deadline this call
    /// reported).
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::OutcomeUnknown`] if a try failed in
    /// doubt and the resend found the session gone (that try may have
    /// applied before it went); the request errors of the crate docs.
    pub async fn touch(&self, id: &SessionId) -> Result<()> {
        self.write_existing(id, |s| &s.touch, &[]).await
    }

    /// Runs a write script (`pick` of the store's scripts) on an existing
    /// session: the script answers whether the session was there, and the
    /// write is acknowledged as every write is (replicas first under
    /// `Replication::Wait`); `NotFound` if it was not there.
    async fn write_existing(
        &self,
        id: &SessionId,
        pick: impl FnOnce(&Scripts) -> &crate::scripts::Script,
        args: &[&[u8]],
    ) -> Result<()> {
        let inner = &self.inner;
        let key = inner.keys.key(id);
        let script = pick(&inner.scripts);
        let deadline = inner.deadline();
        let reply = inner.script(Kind::Write, deadline, script, &key, args).await?;
        if reply::flag(&script.command, &reply.value.value, true)? {
            inner.acknowledge(reply.value.replicas, ())
        } else if reply.resent_after_doubt {
            // Gone after a doubtful try: that try may have applied before
            // the session went (a very short timeout it set, a delete).
            Err(Error::OutcomeUnknown {
                reason: format!(
                    "a write ({}) failed in doubt and the session was gone when it was resent: the first try \
                     may have applied before it went",
                    script.command
                ),
            })
        } else {
            Err(inner
                .confirm_found(&key, deadline, Error::NotFound, Some(&reply.value.replicas))
                .await)
        }
    }

    /// Removes the session (`DEL`). After an attempt that failed in doubt
    /// the resend deletes nothing: it asks whether the session is there
    /// (`EXISTS`). Gone counts as deleted — acknowledged, like every write,
    /// only once the replicas confirm it; there is `OutcomeUnknown`, since
    /// the first try may not have run, or may have and another client
    /// inserted a session under this id since (which a second `DEL` would
    /// delete).
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::OutcomeUnknown`] as above; the request
    /// errors of the crate docs.
    pub async fn delete(&self, id: &SessionId) -> Result<()> {
        let inner = &self.inner;
        let key = inner.keys.key(id);
        let mut del = redis::cmd("DEL");
        del.arg(&key);
        let mut exists = redis::cmd("EXISTS");
        exists.arg(&key);
        let deadline = inner.deadline();
        let reply = inner
            .request(Kind::Write, deadline, &key, |attempt| {
                Cow::Borrowed(if attempt.fence { &exists } else { &del })
            })
            .await?;
        if reply.resent_after_doubt {
            if reply::flag("EXISTS", &reply.value.value, true)? {
                return Err(Error::OutcomeUnknown {
                    reason: "a delete failed in doubt and on resending the session was there: the first try \
                             may not have run, or may have and another client inserted a session under this id \
                             since (nothing was deleted: delete again to delete it)"
                        .into(),
                });
            }
            inner.acknowledge(reply.value.replicas, ())
        } else if reply::flag("DEL", &reply.value.value, true)? {
            inner.acknowledge(reply.value.replicas, ())
        } else {
            Err(inner
                .confirm_found(&key, deadline, Error::NotFound, Some(&reply.value.replicas))
                .await)
        }
    }

    /// Changes the timeout (`Timeout::Never`: `PERSIST`); slides the deadline
    /// to now + timeout.
    ///
    /// # Errors
    /// [`Error::InvalidTimeout`] (nothing sent), [`Error::NotFound`];
    /// [`Error::OutcomeUnknown`] if a try failed in doubt and the resend
    /// found the session gone (that try may have applied, a very short
    /// timeout then ending it); the request errors of the crate docs.
    pub async fn set_ttl(&self, id: &SessionId, timeout: Timeout) -> Result<()> {
        let field = check_timeout(timeout)?;
        let inner = &self.inner;
        let key = inner.keys.key(id);
        let script = &inner.scripts.set_ttl;
        let deadline = inner.deadline();
        let reply = self
            .tokened_script(script, &key, &[field.as_bytes()], deadline)
            .await?;
        match reply::code(&script.command, &reply.value.value, 0..=2, true)? {
            1 => inner.acknowledge(reply.value.replicas, ()),
            0 if !reply.resent_after_doubt => Err(inner
                .confirm_found(&key, deadline, Error::NotFound, Some(&reply.value.replicas))
                .await),
            // Gone, or not the session the first try wrote, after a
            // doubtful try: that try may have applied, and the session
            // then been deleted (and inserted again), or its timeout set
            // by another call since. Nothing written again.
            _ => Err(Error::OutcomeUnknown {
                reason: "a timeout change failed in doubt and, when it was resent, the session was gone or \
                         not the one it wrote: the first try may have applied (it was not applied again)"
                    .into(),
            }),
        }
    }

    /// Runs `script` (one that sets a session's timeout or cap) on `key`
    /// with `args`, then this call's token and `1` on a try after one that
    /// failed in doubt (else `0`): the script writes the token into the
    /// session and, on such a try, writes nothing unless it finds it there
    /// (see `scripts::SET_TTL`).
    async fn tokened_script(
        &self,
        script: &crate::scripts::Script,
        key: &[u8],
        args: &[&[u8]],
        deadline: Instant,
    ) -> Result<Reply<Acked>> {
        let token = token();
        self.inner
            .request(Kind::Write, deadline, key, |attempt| {
                let resend: &[u8] = if attempt.fence { b"1" } else { b"0" };
                let mut all = args.to_vec();
                all.extend([token.as_bytes(), resend]);
                Cow::Owned(script.cmd(attempt.eval, key, &all))
            })
            .await
    }

    /// Caps the session's lifetime, as the engine's `Engine::set_lifetime`:
    /// it expires `lifetime` after its creation however active it is
    /// (`Timeout::Never` lifts the cap). One script: the cap stored (`l`)
    /// and the key's TTL re-armed at the earlier of the inactivity deadline
    /// and the cap. Counts as activity; a write. A cap that has already
    /// passed ends the session at once (the key is deleted). New sessions
    /// get [`RedisConfig::max_lifetime`](crate::RedisConfig::max_lifetime).
    /// A session with subscriptions then has each topic's index entry
    /// written again (one request per topic, all at once), so that the
    /// index's TTL reaches the new cap (see `state.rs`).
    ///
    /// # Errors
    /// [`Error::InvalidTimeout`] (nothing sent), [`Error::NotFound`]; the
    /// request errors of the crate docs. An index write that fails comes
    /// after the cap was set: [`Error::OutcomeUnknown`] (calling again, or
    /// subscribing again, mends it). [`Error::OutcomeUnknown`] too if a try
    /// failed in doubt and the resend found the session gone: that try may
    /// have ended it. After any [`Error::TimedOut`] or
    /// [`Error::OutcomeUnknown`] the cap may be stored without the index
    /// writes: call again (a fan-out may miss the session once an index's
    /// old TTL runs out).
    pub async fn set_lifetime(&self, id: &SessionId, lifetime: Timeout) -> Result<()> {
        let field = check_timeout(lifetime)?;
        let inner = &self.inner;
        let key = inner.keys.key(id);
        let deadline = inner.deadline();
        let script = &inner.scripts.set_lifetime;
        let reply = self
            .tokened_script(script, &key, &[field.as_bytes()], deadline)
            .await?;
        match reply::lifetime_set(&script.command, &reply.value.value)? {
            // A resend after a doubtful try found a session the first try
            // did not write: that try may have ended the session (a cap
            // already passed), and another been inserted since.
            LifetimeSet::InDoubt => Err(Error::OutcomeUnknown {
                reason: "a lifetime change failed in doubt and, when it was resent, the session was not the one \
                         it wrote: the first try may have applied, or ended it (it was not applied again; call \
                         again to be sure, which also redoes the topic indexes' writes)"
                    .into(),
            }),
            // Gone after a doubtful try: that try may have ended it (a cap
            // already passed), or another client deleted it.
            LifetimeSet::Absent if reply.resent_after_doubt => Err(Error::OutcomeUnknown {
                reason: "a lifetime change failed in doubt and the session was gone when it was resent: \
                         the first try may have ended it (a cap already passed) or been applied before it went"
                    .into(),
            }),
            LifetimeSet::Absent => Err(inner.confirm_found(&key, deadline, Error::NotFound, Some(&reply.value.replicas)).await),
            LifetimeSet::Done => inner.acknowledge(reply.value.replicas, ()),
            LifetimeSet::Subscribed { left, subscriptions } => {
                // The cap is set on the master whatever `WAIT` says: the
                // indexes follow it first, or they could expire before a
                // subscriber whose cap grew (a short `WAIT` is reported
                // after). An index write's error comes after the cap was
                // set: not "not applied", whatever the request's error.
                let indexed = self
                    .rearm_indexes(id, left, &subscriptions, deadline)
                    .await
                    .map_err(|e| Error::OutcomeUnknown {
                        reason: format!(
                            "the lifetime cap is set, but a topic index was not updated for it ({e}); set it again"
                        ),
                    });
                inner.acknowledge(reply.value.replicas, ())?;
                indexed
            }
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
    /// takes). A master that restarts or fails over during the count is
    /// counted again from its start on the new process (its `run_id`, read
    /// with every `SCAN`, tells), where a `SCAN` cursor of the old one
    /// would count some keys twice and others never.
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

    /// The replication lag of every master: its offset and each replica's,
    /// from one `INFO replication` per master (all concurrently, within one
    /// request timeout). An explicit call, for monitoring: nothing else
    /// pays for it. A replica acknowledges its offset about once a second,
    /// so a lag of a few hundred bytes under steady writes is normal; a lag
    /// that keeps growing is a replica falling behind (what a failover
    /// would lose with `Replication::Async`).
    ///
    /// # Errors
    /// The request errors of the crate docs; `Unavailable` if a master
    /// answers as a replica (a failover under way: ask again).
    pub async fn replication_lag(&self) -> Result<ReplicationLag> {
        crate::replication::lag(&self.inner).await
    }

    /// Tidies the topic indexes ([`RedisStore::tidy_topic_indexes`]) and
    /// returns 0: Redis expires sessions itself (lazily when a key is
    /// touched, and by its active expiry cycle in the background), so no
    /// session is left to reclaim, and an expired one is never returned.
    /// What needs sweeping is the topic indexes' entries of sessions gone:
    /// call this every few minutes (as tower-sessions' `ExpiredDeletion`
    /// does) when sessions subscribe to topics without a lifetime cap.
    ///
    /// # Errors
    /// The request errors of the crate docs.
    pub async fn cleanup_expired(&self) -> Result<usize> {
        self.tidy_topic_indexes().await?;
        Ok(0)
    }
}

/// The parts of the operations that are not public API.
impl RedisStore {
    fn check_len(&self, len: usize) -> Result<()> {
        let max = self.inner.config.metadata_bytes_max;
        if len > max {
            return Err(Error::ValueTooLarge { len, max });
        }
        Ok(())
    }

    /// [`RedisStore::get`] within `deadline`.
    async fn get_within(&self, id: &SessionId, deadline: Instant) -> Result<Session> {
        let inner = &self.inner;
        let key = inner.keys.key(id);
        let script = &inner.scripts.get;
        let reply = inner.script(Kind::Read, deadline, script, &key, &[]).await?;
        reply::session(*id, &script.command, reply.value.value)?.ok_or(Error::NotFound)
    }

    /// Checks a new session's metadata and timeout; the timeout's field.
    fn check(&self, len: usize, timeout: Timeout) -> Result<String> {
        self.check_len(len)?;
        check_timeout(timeout)
    }

    /// After the `attempt`-th lost race (from 0) of an optimistic write:
    /// counts it, then either says to retry at once on the value the commit
    /// script handed back (`false`: the first [`UPDATE_EAGER_TRIES`]), or
    /// steps aside for a random, growing pause and says to read afresh
    /// (`true`: a value held through the pause would be stale; committing
    /// straight after the read keeps the race window at two round trips).
    /// [`Error::Contended`] if the deadline would pass first: nothing of the
    /// operation is in, and it says so.
    async fn after_lost_race(&self, attempt: u32, deadline: Instant) -> Result<bool> {
        self.inner.count_update_conflict();
        let eager = attempt < UPDATE_EAGER_TRIES;
        let pause = if eager {
            Duration::ZERO
        } else {
            conflict_pause(attempt - UPDATE_EAGER_TRIES)
        };
        if Instant::now() + pause >= deadline {
            return Err(Error::Contended { tries: attempt + 1 });
        }
        if !eager {
            tokio::time::sleep(pause).await;
        }
        Ok(!eager)
    }

    /// The session and its version for a `try_update` (`HMGET m v c a t`).
    async fn read_seen(&self, key: &[u8], deadline: Instant) -> Result<Seen> {
        self.read_confirmed(key, deadline, &try_update_read_cmd(key), reply::seen)
            .await
    }

    /// A read (`cmd`, decoded by `decode`) whose `NotFound` is an answer
    /// only once confirmed where it was read (`confirm_found`).
    async fn read_confirmed<T>(
        &self,
        key: &[u8],
        deadline: Instant,
        cmd: &Cmd,
        decode: fn(Value) -> Result<T>,
    ) -> Result<T> {
        let reply = self.inner.command(Kind::Read, deadline, key, cmd).await?;
        match decode(reply.value) {
            Err(Error::NotFound) => Err(self
                .inner
                .confirm_found(key, deadline, Error::NotFound, None)
                .await),
            read => read,
        }
    }

    /// A fresh random id for the session `id` to move to, whose key is in
    /// the same slot. On one server too: a script of keys in two slots is
    /// refused by a cluster and by services that put one behind a single
    /// address (and apply its same-slot rule), and one path is one to test;
    /// 114 random bits are far beyond what guessing can reach.
    fn fresh_id_beside(id: &SessionId) -> Result<SessionId> {
        match random_id_in_slot(id_slot(id), SessionId::random) {
            Ok(Some(new)) => Ok(new),
            Ok(None) => Err(Error::Unavailable {
                reason: format!(
                    "{SLOT_ID_DRAWS_MAX} random ids in a row did not fit the session's slot: is the random \
                     source broken?"
                ),
            }),
            Err(e) => Err(Error::Entropy(e)),
        }
    }

    /// Metadata and version for an update (`HMGET m v`).
    async fn read_for_update(&self, key: &[u8], deadline: Instant) -> Result<(Vec<u8>, Vec<u8>)> {
        self.read_confirmed(key, deadline, &update_read_cmd(key), reply::update_read)
            .await
    }

    /// Sends a script that stores a session (`INSERT`, `PUT`), with their
    /// arguments: the metadata, the timeout, a fresh idempotency token and
    /// first version, the configured lifetime cap, and whether this try
    /// comes after a doubtful one (`1` only when `flag_resends`).
    async fn store_script(
        &self,
        script: &crate::scripts::Script,
        id: &SessionId,
        metadata: &[u8],
        timeout_field: &str,
        deadline: Instant,
        flag_resends: bool,
    ) -> Result<Reply<Acked>> {
        let inner = &self.inner;
        let key = inner.keys.key(id);
        let token = token();
        let first_version = first_version();
        let lifetime = lifetime_field(&inner.config);
        inner
            .request(Kind::Write, deadline, &key, |attempt| {
                let resend: &[u8] = if flag_resends && attempt.fence { b"1" } else { b"0" };
                let args: [&[u8]; 6] = [
                    metadata,
                    timeout_field.as_bytes(),
                    token.as_bytes(),
                    first_version.as_bytes(),
                    lifetime.as_bytes(),
                    resend,
                ];
                Cow::Owned(script.cmd(attempt.eval, &key, &args))
            })
            .await
    }

    /// Stores a new session under `id` within `deadline`. `shared`: the
    /// caller chose the id, so others may know it (`insert`), and a resend
    /// after a doubtful try that finds no session must not store it again
    /// (see `scripts::INSERT`); a fresh id of `create`'s is known to no one
    /// else until it returns, so nobody can have deleted it in between.
    async fn insert_at(
        &self,
        id: SessionId,
        metadata: &[u8],
        timeout_field: &str,
        deadline: Instant,
        shared: bool,
    ) -> Result<()> {
        let inner = &self.inner;
        let script = &inner.scripts.insert;
        let reply = self
            .store_script(script, &id, metadata, timeout_field, deadline, shared)
            .await?;
        match reply::code(&script.command, &reply.value.value, 0..=2, true)? {
            1 => inner.acknowledge(reply.value.replicas, ()),
            // The id is taken by another token. After a doubtful try that
            // may be this insert's own session, changed since by someone
            // who knew the id.
            0 if reply.resent_after_doubt => Err(Error::OutcomeUnknown {
                reason: "an insert failed in doubt and on resending the id was taken by a session \
                         changed since: it may be this insert's"
                    .into(),
            }),
            // Taken: under `insert`, maybe by another client's write no
            // replica has yet (a fresh id of `create`'s, drawn again).
            0 if shared => {
                let key = inner.keys.key(&id);
                let found = Error::AlreadyExists.to_string();
                match inner
                    .confirm_state(&key, deadline, &found, Expect::Held, Some(&reply.value.replicas))
                    .await
                {
                    Ok(()) => Err(Error::AlreadyExists),
                    Err(e) => Err(e),
                }
            }
            0 => Err(Error::AlreadyExists),
            _ => Err(Error::OutcomeUnknown {
                reason: "an insert failed in doubt and on resending no session had the id: it may have \
                         been stored and deleted since (it was not stored again)"
                    .into(),
            }),
        }
    }
}

/// The URLs without their passwords, for messages.
fn redacted(urls: &[String]) -> Vec<String> {
    urls.iter().map(|u| redact_url(u)).collect()
}

/// Connects in the seeds' protocol within `budget`. If the store chose it
/// (`defaulted`: no URL names one) and the connect failed with an answer
/// (not the budget running out: nothing answered), connects again in RESP2
/// within a budget of its own, and if that works returns seeds that say
/// so: the store's later connections are made from them. A server without
/// `HELLO` (Redis 5) or a proxy that refuses it (whatever its words, or by
/// closing the connection) is then spoken to as before RESP3; a failure of
/// both returns the first one's error.
async fn connect_speaking(
    config: &RedisConfig,
    seeds: Vec<ConnectionInfo>,
    defaulted: bool,
    budget: Duration,
) -> (
    std::result::Result<redis::RedisResult<Conn>, tokio::time::error::Elapsed>,
    Vec<ConnectionInfo>,
) {
    let first = timeout(budget, Conn::connect(config, &seeds)).await;
    if !defaulted || !matches!(first, Ok(Err(_))) {
        return (first, seeds);
    }
    let resp2: Vec<ConnectionInfo> = seeds
        .iter()
        .map(|info| {
            let settings = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP2);
            info.clone().set_redis_settings(settings)
        })
        .collect();
    match timeout(budget, Conn::connect(config, &resp2)).await {
        Ok(Ok(conn)) => (Ok(Ok(conn)), resp2),
        _ => (first, seeds),
    }
}

/// Refuses a single-server configuration that reached a cluster node, or a
/// server that does not answer `INFO` like Redis.
async fn check_standalone(mut conn: Conn, url: &str, budget: Duration) -> Result<()> {
    let url = &redact_url(url);
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
    let Some(text) = reply::text(&reply) else {
        return Err(Error::InvalidConfig(format!(
            "{url:?} answered INFO with {reply:?}: is it a Redis server? (protocol error)"
        )));
    };
    if reply::info_field(&text, "cluster_enabled") == Some("1") {
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
        let url = &redact_url(url);
        let ConnectionAddr::Tcp(host, port) = seed.addr() else {
            continue;
        };
        let probe = async {
            let mut conn = connect_node(config, seed, host, *port, None).await?;
            direct_query(&mut conn, redis::cmd("INFO").arg("cluster")).await
        };
        if let Ok(Ok(value)) = timeout(budget, probe).await {
            let text = reply::text(&value).unwrap_or_default();
            if reply::info_field(&text, "cluster_enabled") == Some("0") {
                return Err(Error::InvalidConfig(format!(
                    "{url:?} is a single Redis server (cluster_enabled:0), not a cluster node: connect with \
                     RedisConfig::standalone or a redis:// URL"
                )));
            }
        }
    }
    Ok(())
}

/// The error of a batch that failed as a whole, once for each of its ids:
/// a read's errors (no answer within the budget, the servers did not serve
/// it, a reply that was not Redis's).
fn same_error(e: &Error) -> Error {
    match e {
        Error::TimedOut { after_ms } => Error::TimedOut { after_ms: *after_ms },
        Error::Unavailable { reason } => Error::Unavailable {
            reason: reason.clone(),
        },
        other => Error::Unavailable {
            reason: other.to_string(),
        },
    }
}

/// The error of an optimistic write whose try failed in doubt and whose
/// resend found the version moved on: whether the try is in cannot be told.
fn moved_after_doubt(what: &str) -> Error {
    Error::OutcomeUnknown {
        reason: format!(
            "{what} commit failed in doubt and another writer changed the session before the resend: it \
             may or may not be in"
        ),
    }
}

/// The error of an optimistic write whose try failed in doubt and whose
/// resend found the session gone: the try may have applied before another
/// client deleted (or rotated) the session.
fn gone_after_doubt(what: &str) -> Error {
    Error::OutcomeUnknown {
        reason: format!(
            "{what} commit failed in doubt and the session was gone when it was resent: it may have been \
             applied before the session went"
        ),
    }
}

/// A fresh idempotency token (see `scripts.rs`).
fn token() -> String {
    rand::rng().random::<u64>().to_string()
}

/// A new session's first version: random below [`VERSION_FIRST_MAX`] (see
/// `scripts::INSERT`).
fn first_version() -> String {
    rand::rng().random_range(1..VERSION_FIRST_MAX).to_string()
}

/// A random pause up to [`UPDATE_BACKOFF_MIN`] × 2^`round`, at most
/// [`UPDATE_BACKOFF_MAX`]: colliding writers spread out in time, so that
/// each one's read-compute-commit window soon finds no one else in it.
fn conflict_pause(round: u32) -> Duration {
    // 2^16 × the minimum is far past the maximum: the shift stays in range.
    let cap = UPDATE_BACKOFF_MIN
        .saturating_mul(1 << round.min(16))
        .min(UPDATE_BACKOFF_MAX);
    let cap_us = u64::try_from(cap.as_micros()).unwrap_or(u64::MAX);
    Duration::from_micros(rand::rng().random_range(0..=cap_us))
}

/// The stored form of the configured lifetime cap (`0`: none; checked by
/// `RedisConfig::validate`).
/// The configured cap on new sessions as `set_lifetime` stores one: in
/// whole seconds, rounded up, past 2^31 - 1 ms, as the engine keeps it
/// (`connect` refused one out of range).
fn lifetime_field(config: &RedisConfig) -> String {
    check_timeout(config.max_lifetime).unwrap_or_else(|_| reply::timeout_field(config.max_lifetime))
}

fn check_timeout(timeout: Timeout) -> Result<String> {
    Ok(match timeout.checked_ms()? {
        None => reply::timeout_field(Timeout::Never),
        Some(ms) => ms.to_string(),
    })
}

impl SessionStore for RedisStore {
    async fn create(&self, metadata: &[u8], timeout: Timeout) -> Result<SessionId> {
        RedisStore::create(self, metadata, timeout).await
    }

    async fn insert(&self, id: SessionId, metadata: &[u8], timeout: Timeout) -> Result<()> {
        RedisStore::insert(self, id, metadata, timeout).await
    }

    async fn put(&self, id: SessionId, metadata: &[u8], timeout: Timeout) -> Result<()> {
        RedisStore::put(self, id, metadata, timeout).await
    }

    async fn rotate(&self, id: &SessionId) -> Result<SessionId> {
        RedisStore::rotate(self, id).await
    }

    async fn try_update<F, E>(&self, id: &SessionId, f: F) -> Result<std::result::Result<Updated, E>>
    where
        F: FnMut(&[u8]) -> std::result::Result<Op, E> + Send,
        E: Send,
    {
        RedisStore::try_update(self, id, f).await
    }

    async fn get(&self, id: &SessionId) -> Result<Session> {
        RedisStore::get(self, id).await
    }

    async fn peek(&self, id: &SessionId) -> Result<Session> {
        RedisStore::peek(self, id).await
    }

    async fn get_many(&self, ids: &[SessionId]) -> Vec<Result<Session>> {
        RedisStore::get_many(self, ids).await
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

    async fn set_lifetime(&self, id: &SessionId, lifetime: Timeout) -> Result<()> {
        RedisStore::set_lifetime(self, id, lifetime).await
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
        RedisStore::cleanup_expired(self).await
    }
}
