//! [`McpSessions`]: the shared handle (store, per-session state, touch
//! coalescing, local peers) and rmcp's `SessionStore` on it.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use rmcp::model::{Extensions, ResourceUpdatedNotificationParam};
use rmcp::service::{Peer, RoleServer};
use rmcp::transport::streamable_http_server::session::{
    SessionRestoreMarker, SessionState as RmcpState, SessionStore as RmcpStore, SessionStoreError,
};
use rmcp::transport::streamable_http_server::StreamableHttpServerConfig;
use serde_json::{Map, Value};
use session_engine::{
    AnyStore, Bucket, Op, RateDecision, SessionId, SessionState, SessionStore, Timeout, TopicCursor,
};

use crate::error::{ClientText, Error, Result};
use crate::limits::{
    DELETED_REMEMBERED, DELETED_REMEMBERED_MAX, FANOUT_PAGE, FANOUT_PAGES_MAX, ID_DRAWS_MAX, NOTIFY_TIMEOUT,
    PEERS_PRUNE_MIN, SENDS_IN_FLIGHT_MAX, TOUCH_INTERVAL_DIVISOR,
};
use crate::manager::{McpSessionManager, RoutedTo};
use crate::record::Record;
use crate::touch::{Claim, TouchStats, Touches};

/// The header rmcp's streamable HTTP transport carries the session id in.
pub const SESSION_ID_HEADER: &str = "mcp-session-id";

/// How sessions are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct McpConfig {
    /// A session ends after this long without requests (the store's
    /// inactivity timeout). Default 30 minutes.
    pub timeout: Duration,
    /// At most one touch per session per this interval (default: a quarter
    /// of `timeout`). A client whose requests are less than `timeout -
    /// touch_interval` apart is never expired.
    pub touch_interval: Duration,
    /// How long this process keeps an idle session's in-memory worker
    /// (rmcp's `SessionConfig::keep_alive`; default: `timeout`). A request
    /// after that restores the worker from the store, so this bounds memory,
    /// not the session's life.
    pub local_keep_alive: Duration,
}

impl Default for McpConfig {
    fn default() -> Self {
        Self::with_timeout(Duration::from_secs(30 * 60))
    }
}

impl McpConfig {
    /// Sessions of this inactivity timeout, touched at most every quarter of
    /// it, with workers kept as long.
    #[must_use]
    pub fn with_timeout(timeout: Duration) -> Self {
        Self {
            timeout,
            touch_interval: timeout / u32::try_from(TOUCH_INTERVAL_DIVISOR).unwrap_or(4),
            local_keep_alive: timeout,
        }
    }

    /// Sets the touch interval.
    #[must_use]
    pub fn touch_interval(mut self, interval: Duration) -> Self {
        self.touch_interval = interval;
        self
    }

    /// Sets how long an idle worker stays in memory.
    #[must_use]
    pub fn local_keep_alive(mut self, keep_alive: Duration) -> Self {
        self.local_keep_alive = keep_alive;
        self
    }
}

/// What one send of a fan-out came to: the session, the client it was sent
/// to, and rmcp's answer unless the send timed out.
type Sent = (
    SessionId,
    Arc<Peer<RoleServer>>,
    std::result::Result<std::result::Result<(), rmcp::ServiceError>, tokio::time::error::Elapsed>,
);

/// What a [`McpSessions::notify_resource_updated`] found and did.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct FanOut {
    /// Every live session subscribed to the resource, on any process.
    pub subscribers: Vec<SessionId>,
    /// Those whose client this process serves and that were sent
    /// `notifications/resources/updated`.
    pub notified_here: usize,
    /// Those whose client this process serves but that were not: the
    /// session's worker had ended (the client is no longer served here), or
    /// the client did not take the notification within
    /// [`NOTIFY_TIMEOUT`](crate::limits::NOTIFY_TIMEOUT) (one not reading
    /// its stream; it may still get it later).
    pub failed_here: usize,
}

/// rmcp sessions in one of our stores: a cheap `Clone` handle shared by
/// the session manager, rmcp's session store and the server's handlers.
///
/// ```text
/// let sessions = McpSessions::new(engine, McpConfig::default())?;
/// let service = StreamableHttpService::new(factory, sessions.session_manager(), sessions.server_config(config));
/// ```
#[derive(Clone)]
pub struct McpSessions {
    inner: Arc<Inner>,
}

struct Inner {
    store: AnyStore,
    timeout: Timeout,
    config: McpConfig,
    touches: Touches,
    /// The client of each session served here, shared so that a fan-out
    /// whose send failed can tell whether the registered client is still
    /// the one it sent to.
    peers: DashMap<SessionId, Arc<Peer<RoleServer>>>,
    /// The count of `peers` at which the next registration first drops
    /// the clients whose worker has ended ([`PEERS_PRUNE_MIN`] or twice
    /// the count the last pruning left).
    peers_prune_at: AtomicUsize,
    /// Sessions a client ended (`DELETE`) whose store delete failed: gone
    /// for this process until the store delete succeeds (retried in the
    /// background) or the session's timeout has passed.
    ended: DashMap<SessionId, tokio::time::Instant>,
    /// Sessions whose restore state a failed write left to a background
    /// retry, each with the newest state to write and its generation
    /// (`state_generation`): one task per session, at most
    /// [`STATE_RETRIES_MAX`](crate::limits::STATE_RETRIES_MAX) at once.
    state_retries: DashMap<SessionId, (u64, RmcpState)>,
    state_generation: AtomicU64,
    /// Sessions a client deleted through this process, each until
    /// [`DELETED_REMEMBERED`] after: a restore of one that was under way
    /// (its `load` came first) must not start a worker for it. A delete
    /// that finds no MCP session in the store leaves no mark.
    deleted: DashMap<SessionId, DeletedMark>,
    /// The session manager handed out (`session_manager`), while anyone
    /// holds it: one per `McpSessions`, since the touches and the peers
    /// above are shared by every manager made from them.
    manager: std::sync::Mutex<std::sync::Weak<McpSessionManager>>,
}

impl fmt::Debug for McpSessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("McpSessions")
            .field("store", &self.inner.store)
            .field("config", &self.inner.config)
            .field("served_here", &self.inner.touches.tracked())
            .finish()
    }
}

impl McpSessions {
    /// Sessions (and their subscriptions and rate limits) in `store`: the
    /// `Engine`, a `RedisStore`, or any other `SessionState` store.
    ///
    /// # Errors
    /// `InvalidTimeout` if `config.timeout` is not 1 ms to 400 days;
    /// `InvalidConfig` if `config.touch_interval` is not shorter, or
    /// `config.local_keep_alive` is zero.
    pub fn new(store: impl SessionState + fmt::Debug + 'static, config: McpConfig) -> Result<Self> {
        Self::from_any(AnyStore::new(store), config)
    }

    /// Sessions in a store chosen at run time (`session_redis::open_url`).
    ///
    /// # Errors
    /// `InvalidTimeout` if `config.timeout` is not 1 ms to 400 days;
    /// `InvalidConfig` if `config.touch_interval` is not shorter, or
    /// `config.local_keep_alive` is zero.
    pub fn from_any(store: AnyStore, config: McpConfig) -> Result<Self> {
        let ms = u64::try_from(config.timeout.as_millis()).unwrap_or(u64::MAX);
        let timeout = Timeout::from_ms(ms);
        timeout.checked_ms()?;
        // Against the timeout the store keeps (whole milliseconds).
        if config.touch_interval >= Duration::from_millis(ms) {
            // The deadline would trail the last request by more than the
            // timeout: an active client could expire.
            return Err(session_engine::Error::InvalidConfig(format!(
                "touch_interval {:?} must be shorter than the timeout {:?}",
                config.touch_interval, config.timeout
            ))
            .into());
        }
        if config.local_keep_alive.is_zero() {
            // rmcp's worker would end at once, and every request restore it.
            return Err(session_engine::Error::InvalidConfig(
                "local_keep_alive must be above zero (it bounds how long an idle worker stays in memory)"
                    .to_owned(),
            )
            .into());
        }
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                timeout,
                config,
                touches: Touches::new(config.touch_interval),
                peers: DashMap::new(),
                peers_prune_at: AtomicUsize::new(PEERS_PRUNE_MIN),
                ended: DashMap::new(),
                state_retries: DashMap::new(),
                state_generation: AtomicU64::new(0),
                deleted: DashMap::new(),
                manager: std::sync::Mutex::new(std::sync::Weak::new()),
            }),
        })
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> McpConfig {
        self.inner.config
    }

    /// The store behind the sessions (named so as not to shadow rmcp's
    /// `SessionStore::store`).
    #[must_use]
    pub fn backend(&self) -> &AnyStore {
        &self.inner.store
    }

    /// The session manager to give rmcp's `StreamableHttpService`: the same
    /// one on every call while it is held (two services, on two routes or
    /// ports, share it). Two managers over the same sessions would each
    /// keep workers of their own while sharing which sessions are served
    /// here and their clients: one closing a session would forget the
    /// other's.
    #[must_use]
    pub fn session_manager(&self) -> Arc<McpSessionManager> {
        let mut held = self
            .inner
            .manager
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(manager) = held.upgrade() {
            return manager;
        }
        let manager = Arc::new(McpSessionManager::new(self.clone()));
        *held = Arc::downgrade(&manager);
        manager
    }

    /// `config` with this store as its `session_store` (rmcp then persists
    /// each session after its `initialize`, restores unknown ids from it,
    /// and deletes on `DELETE`).
    #[must_use]
    pub fn server_config(&self, mut config: StreamableHttpServerConfig) -> StreamableHttpServerConfig {
        config.session_store = Some(Arc::new(self.clone()));
        config
    }

    /// The session a request or notification belongs to: the one rmcp
    /// routed it to through this crate's [`McpSessionManager`], or the
    /// session being restored.
    ///
    /// A request rmcp serves without a session names none, whatever
    /// `Mcp-Session-Id` header it carries. rmcp serves statelessly, even
    /// with `legacy_session_mode`, a request declaring protocol
    /// `2026-07-28` or later (which has no sessions) and any request but
    /// `initialize` whose `_meta` carries the per-request protocol fields
    /// (`protocolVersion` and `clientCapabilities`), whatever version
    /// they name. That path neither touches a session nor checks for one
    /// whose `DELETE` is under way, so a handler acting on the header's
    /// session would act on it unseen.
    ///
    /// # Errors
    /// [`Error::NoSession`] if the request was not served within one of
    /// this server's sessions.
    pub fn session_id(extensions: &Extensions) -> Result<SessionId> {
        let text = extensions
            .get::<RoutedTo>()
            .map(|routed| &*routed.0)
            .or_else(|| extensions.get::<SessionRestoreMarker>().map(|m| &*m.id));
        text.and_then(|t| t.parse().ok()).ok_or(Error::NoSession)
    }

    /// Extensions naming session `id` as those of a request rmcp routed to
    /// it through this crate's manager do: for tests of handlers that call
    /// [`session_id`](Self::session_id) or
    /// [`register_peer`](Self::register_peer) without an HTTP transport.
    /// Tests only: a context built with it skips what the manager does for
    /// a routed request (the touch, the check for a `DELETE` under way).
    #[must_use]
    pub fn extensions_naming(id: &SessionId) -> Extensions {
        let mut extensions = Extensions::new();
        extensions.insert(RoutedTo(id.to_string().into()));
        extensions
    }

    /// Remembers the client of a session served here, for
    /// [`notify_resource_updated`](Self::notify_resource_updated). Call it
    /// from `ServerHandler::on_initialized` (rmcp calls that on a fresh
    /// session and on a restored one).
    ///
    /// A client whose worker has already ended is not remembered: rmcp
    /// runs `on_initialized` in a task of its own, which can come after the
    /// worker's close (a client that sends `initialize`, `initialized` and
    /// `DELETE` back to back), and the close's forgetting of the client
    /// would then be undone. Clients whose worker ends after they were
    /// remembered are dropped by a fan-out that fails to reach them, and
    /// by the registrations themselves: each time the count doubles, the
    /// ended ones go (so at most twice as many clients are remembered as
    /// were ever served here at once, or [`PEERS_PRUNE_MIN`]).
    ///
    /// # Errors
    /// [`Error::NoSession`] if the context names no session.
    pub fn register_peer(&self, extensions: &Extensions, peer: Peer<RoleServer>) -> Result<SessionId> {
        let id = Self::session_id(extensions)?;
        if peer.is_transport_closed() {
            return Ok(id);
        }
        let peers = &self.inner.peers;
        let peer = Arc::new(peer);
        peers.insert(id, Arc::clone(&peer));
        // Its worker may have ended between the check and the insert.
        if peer.is_transport_closed() {
            peers.remove_if(&id, |_, registered| Arc::ptr_eq(registered, &peer));
        }
        if peers.len() >= self.inner.peers_prune_at.load(Ordering::Relaxed) {
            peers.retain(|_, registered| !registered.is_transport_closed());
            self.inner
                .peers_prune_at
                .store((peers.len() * 2).max(PEERS_PRUNE_MIN), Ordering::Relaxed);
        }
        Ok(id)
    }

    /// Clients remembered by [`register_peer`](Self::register_peer) (tests
    /// and metrics).
    #[must_use]
    pub fn peers_registered(&self) -> usize {
        self.inner.peers.len()
    }

    /// The application's map of the session (not activity).
    ///
    /// # Errors
    /// `NotFound` if the session is gone; [`Error::Record`] if its bytes are
    /// not ours.
    pub async fn data(&self, id: &SessionId) -> Result<Map<String, Value>> {
        let session = self.gone_if_not_found(id, self.inner.store.peek(id).await)?;
        Ok(Record::decode(session.metadata())?.data)
    }

    /// Changes the application's map of the session atomically (optimistic:
    /// `f` may run more than once, on the latest map each time) and returns
    /// what the last run of `f` returned. Counts as activity.
    ///
    /// # Errors
    /// `NotFound` if the session is gone; [`Error::Record`] if its bytes are
    /// not ours (nothing is written then).
    pub async fn update_data<R, F>(&self, id: &SessionId, mut f: F) -> Result<R>
    where
        F: FnMut(&mut Map<String, Value>) -> R + Send,
        R: Send,
    {
        let mut out = None;
        let at = self.inner.touches.stamp();
        let outcome = self
            .inner
            .store
            .try_update(id, |bytes| {
                let mut record = Record::decode(bytes)?;
                out = Some(f(&mut record.data));
                Ok::<_, Error>(Op::Replace(record.encode()?))
            })
            .await;
        let outcome = self.gone_if_not_found(id, outcome)?;
        outcome?;
        self.inner.touches.mark(*id, at);
        // A try_update that succeeded ran the closure at least once.
        out.ok_or_else(|| Error::Record("the update closure never ran".to_owned()))
    }

    /// `resources/subscribe`: subscribes the session to `uri`; `true` if it
    /// was not subscribed.
    ///
    /// # Errors
    /// `NotFound`; `LimitExceeded` past the store's topic limits
    /// (`limits::TOPIC_LEN_MAX`, `TOPICS_PER_SESSION_MAX`).
    pub async fn subscribe(&self, id: &SessionId, uri: &str) -> Result<bool> {
        Ok(self.gone_if_not_found(id, self.inner.store.subscribe(id, uri).await)?)
    }

    /// `resources/unsubscribe`; `true` if it was subscribed.
    ///
    /// # Errors
    /// As [`subscribe`](Self::subscribe).
    pub async fn unsubscribe(&self, id: &SessionId, uri: &str) -> Result<bool> {
        Ok(self.gone_if_not_found(id, self.inner.store.unsubscribe(id, uri).await)?)
    }

    /// The session's subscriptions.
    ///
    /// # Errors
    /// `NotFound`.
    pub async fn topics(&self, id: &SessionId) -> Result<Vec<String>> {
        Ok(self.gone_if_not_found(id, self.inner.store.topics(id).await)?)
    }

    /// The fan-out of a resource update: every live session subscribed to
    /// `uri` (through any process sharing the store), paged from the store's
    /// reverse index; those whose client is served here are sent
    /// `notifications/resources/updated`, each given
    /// [`NOTIFY_TIMEOUT`](crate::limits::NOTIFY_TIMEOUT) to take it. The
    /// sends run at once, [`SENDS_IN_FLIGHT_MAX`](crate::limits::SENDS_IN_FLIGHT_MAX)
    /// at most, while the next pages are read: a client that stopped
    /// reading delays the others by nothing, and the fan-out by that timeout
    /// at most, wherever it falls, as long as no more clients than that
    /// bound stall ([`FanOut::failed_here`] counts them). A session served by
    /// another process is in [`FanOut::subscribers`] but is not notified:
    /// run the fan-out on every process (each notifies its own clients),
    /// e.g. on a broadcast of the update.
    ///
    /// # Errors
    /// The store's, [`Error::FanOutTooLong`]. The sends already started
    /// then go on (each within its timeout), uncounted.
    pub async fn notify_resource_updated(&self, uri: &str) -> Result<FanOut> {
        let mut out = FanOut::default();
        let mut cursor = TopicCursor::START;
        // One task per client served here, across pages, at most
        // SENDS_IN_FLIGHT_MAX at once.
        let mut sends = tokio::task::JoinSet::new();
        for _ in 0..FANOUT_PAGES_MAX {
            let page = match self.inner.store.subscribers(uri, cursor, FANOUT_PAGE).await {
                Ok(page) => page,
                Err(e) => {
                    sends.detach_all();
                    return Err(e.into());
                }
            };
            for id in &page.ids {
                let Some(peer) = self.inner.peers.get(id).map(|p| Arc::clone(&p)) else {
                    continue;
                };
                while sends.len() >= SENDS_IN_FLIGHT_MAX {
                    let Some(joined) = sends.join_next().await else {
                        break;
                    };
                    self.count_send(joined, &mut out);
                }
                let (id, update) = (*id, ResourceUpdatedNotificationParam::new(uri));
                sends.spawn(async move {
                    let sent =
                        tokio::time::timeout(NOTIFY_TIMEOUT, peer.notify_resource_updated(update)).await;
                    (id, peer, sent)
                });
            }
            out.subscribers.extend_from_slice(&page.ids);
            let Some(next) = page.next else {
                while let Some(joined) = sends.join_next().await {
                    self.count_send(joined, &mut out);
                }
                return Ok(out);
            };
            cursor = next;
        }
        sends.detach_all();
        Err(Error::FanOutTooLong {
            topic: uri.to_owned(),
            pages: FANOUT_PAGES_MAX,
        })
    }

    /// Counts one send of a fan-out in `out`.
    fn count_send(&self, joined: std::result::Result<Sent, tokio::task::JoinError>, out: &mut FanOut) {
        match joined {
            Ok((_, _, Ok(Ok(())))) => out.notified_here += 1,
            // Its worker ended: the client is no longer served here.
            // Unless the session was registered again meanwhile (a request
            // restored its worker here): that client stays.
            Ok((id, peer, Ok(Err(_)))) => {
                self.inner
                    .peers
                    .remove_if(&id, |_, registered| Arc::ptr_eq(registered, &peer));
                out.failed_here += 1;
            }
            // Not taken in time (or the task failed): the client stays
            // registered for the next fan-out.
            Ok((_, _, Err(_))) | Err(_) => out.failed_here += 1,
        }
    }

    /// Charges `cost` tokens of the session's bucket in one atomic store
    /// call.
    ///
    /// # Errors
    /// `NotFound`; `InvalidArgument` for a bucket or cost out of range.
    pub async fn rate_limit(&self, id: &SessionId, bucket: Bucket, cost: u32) -> Result<RateDecision> {
        Ok(self.gone_if_not_found(id, self.inner.store.rate_limit(id, bucket, cost).await)?)
    }

    /// [`rate_limit`](Self::rate_limit) for a handler: `Ok(remaining)`, or
    /// the MCP error a client reads its wait from
    /// ([`rate_limited`](crate::rate_limited), [`retry_after`](crate::retry_after)).
    ///
    /// # Errors
    /// The rate-limit error, or this crate's errors as MCP errors.
    pub async fn check_rate(
        &self,
        extensions: &Extensions,
        bucket: Bucket,
        cost: u32,
    ) -> std::result::Result<u32, rmcp::ErrorData> {
        let id = Self::session_id(extensions)?;
        match self.rate_limit(&id, bucket, cost).await? {
            RateDecision::Allowed { remaining } => Ok(remaining),
            RateDecision::Limited { retry_after } => Err(crate::error::rate_limited(retry_after)),
        }
    }

    /// Sessions whose worker runs in this process (created or restored
    /// here, not yet closed).
    #[must_use]
    pub fn served_here(&self) -> usize {
        self.inner.touches.tracked()
    }

    /// Counters of touch coalescing in this process.
    #[must_use]
    pub fn touch_stats(&self) -> TouchStats {
        self.inner.touches.stats()
    }

    /// A request for `id` arrived at a process that serves it: touch the
    /// store if due. `false` if the store no longer has the session.
    pub(crate) async fn touch_if_due(&self, text: &str) -> bool {
        self.touch_claimed(text, Touches::claim).await
    }

    /// [`touch_if_due`](Self::touch_if_due), with a touch due once `age`
    /// has passed since the last if that is sooner than the interval (an
    /// open stream's task, which keeps half the timeout for the store).
    pub(crate) async fn touch_if_older(&self, text: &str, age: Duration) -> bool {
        let age_ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
        self.touch_claimed(text, |touches, id| touches.claim_within(id, age_ms))
            .await
    }

    /// Touches the store if `claim` says a touch is due; `false` if the
    /// store no longer has the session.
    async fn touch_claimed(&self, text: &str, claim: impl FnOnce(&Touches, SessionId) -> Claim) -> bool {
        let Ok(id) = text.parse::<SessionId>() else {
            // Not one of ours: this process never creates such ids.
            return false;
        };
        if self.ended(&id) {
            return false;
        }
        let Claim::Due { previous } = claim(&self.inner.touches, id) else {
            return true;
        };
        // Until the store answers, the claim is put back if this future is
        // dropped (its request cancelled: the client went away, a timeout in
        // front of the server): a touch never written must not keep the
        // next requests of the interval from writing theirs.
        let mut pending = PendingTouch {
            touches: &self.inner.touches,
            id,
            previous,
            done: false,
        };
        let touched = self.inner.store.touch(&id).await;
        pending.done = true;
        match touched {
            Ok(()) => true,
            Err(session_engine::Error::NotFound) => {
                self.forget(text);
                false
            }
            // Serve the request; the next one tries again.
            Err(_) => {
                self.inner.touches.failed(id, previous);
                true
            }
        }
    }

    /// A new session in the store under a fresh id from the OS CSPRNG (a
    /// pending record: no handshake yet). Another id if one is taken: never
    /// over another session. Not yet served here: the caller tracks it once
    /// its worker has started (with the time the insert was sent, also
    /// returned), or [`discard`](Self::discard)s it.
    pub(crate) async fn create(&self) -> Result<(SessionId, u64)> {
        let record = Record::pending().encode()?;
        let store = &self.inner.store;
        let at = self.inner.touches.stamp();
        let id = insert_fresh(|id| store.insert(id, &record, self.inner.timeout)).await?;
        Ok((id, at))
    }

    /// Deletes a session [`create`](Self::create) made whose worker never
    /// started (nobody was given its id), in a task of its own: called where
    /// nothing can be awaited (a cancelled request's drop). Best effort: if
    /// the store fails, the session's timeout reclaims it.
    pub(crate) fn discard(&self, id: SessionId) {
        self.inner.touches.forget(&id);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let sessions = self.clone();
        runtime.spawn(async move {
            let _ = sessions.inner.store.delete(&id).await;
        });
    }

    /// How long until the session's next touch is due; `None` if this
    /// process does not serve it (or the text is not one of our ids).
    pub(crate) fn touch_due_in(&self, text: &str) -> Option<Duration> {
        let id = text.parse::<SessionId>().ok()?;
        self.inner.touches.due_in(&id)
    }

    /// This process now serves the session: created here by an insert sent
    /// at `at` ([`create`](Self::create)'s time), or restored (`None`: the
    /// `load` that touched it came earlier, by however long the restore
    /// took, so its next request touches it again).
    pub(crate) fn track(&self, text: &str, at: Option<u64>) {
        if let Ok(id) = text.parse::<SessionId>() {
            self.inner.touches.track(id, at);
        }
    }

    /// Remembers that a client deleted `id` through this process (see
    /// [`Inner::deleted`]), within [`DELETED_REMEMBERED_MAX`], as one more
    /// delete of it in flight; true if it is (for
    /// [`delete_done`](Self::delete_done)).
    fn remember_deleted(&self, id: SessionId) -> bool {
        let deleted = &self.inner.deleted;
        let now = tokio::time::Instant::now();
        let until = now + DELETED_REMEMBERED;
        if !deleted.contains_key(&id) {
            if deleted.len() >= DELETED_REMEMBERED_MAX {
                deleted.retain(|_, mark| mark.until > now);
            }
            if deleted.len() >= DELETED_REMEMBERED_MAX {
                return false;
            }
        }
        let mut mark = deleted.entry(id).or_insert(DeletedMark {
            until,
            in_flight: 0,
            ended: false,
        });
        mark.until = until;
        mark.in_flight += 1;
        true
    }

    /// One delete of `id` that `remember_deleted` counted is done; `ended`:
    /// it ended a session (or will, retried). The mark stays if any delete
    /// of the id ended one; else the last to finish takes it back: no
    /// delete found an MCP session, so there is no restore to stop, and
    /// ids anyone may send (at once, as often as they like) would
    /// otherwise fill the room real deletes need.
    fn delete_done(&self, id: SessionId, ended: bool) {
        let deleted = &self.inner.deleted;
        if let Some(mut mark) = deleted.get_mut(&id) {
            mark.in_flight = mark.in_flight.saturating_sub(1);
            mark.ended |= ended;
        }
        deleted.remove_if(&id, |_, mark| mark.in_flight == 0 && !mark.ended);
    }

    /// True if a client deleted the session through this process within
    /// [`DELETED_REMEMBERED`] (a restore of it must not go on), or a
    /// delete of it is under way here.
    pub(crate) fn deleted_here(&self, text: &str) -> bool {
        let Ok(id) = text.parse::<SessionId>() else {
            return false;
        };
        let now = tokio::time::Instant::now();
        let Some(until) = self.inner.deleted.get(&id).map(|m| m.until) else {
            return false;
        };
        if now < until {
            return true;
        }
        self.inner.deleted.remove_if(&id, |_, mark| mark.until <= now);
        false
    }

    /// True if a client ended the session here and its store delete is
    /// still being retried (see [`Inner::ended`]).
    fn ended(&self, id: &SessionId) -> bool {
        let Some(until) = self.inner.ended.get(id).map(|u| *u) else {
            return false;
        };
        if tokio::time::Instant::now() < until {
            return true;
        }
        self.inner.ended.remove(id);
        false
    }

    /// Deletes the session if it is an MCP session (its metadata one of
    /// our records, of this build's version or a later one's), in one step
    /// with that check; another session of the
    /// store (a web session of the same id format, in a store shared with
    /// one) is left alone, and that is `Ok` too: the id came from a client's
    /// header.
    async fn delete_ours(&self, id: &SessionId) -> session_engine::Result<bool> {
        let decided = self
            .inner
            .store
            .try_update(id, |bytes| {
                if Record::is_ours(bytes) {
                    Ok(Op::Delete)
                } else {
                    Err(())
                }
            })
            .await?;
        // Deleted (`Ok`), or not ours and left (`Err`).
        Ok(decided.is_ok())
    }

    /// Tries the store delete of a session a client ended until it
    /// succeeds, finds the session gone, or the session's timeout has
    /// passed (by then the store expired it), backing off; the session is
    /// gone for this process meanwhile.
    ///
    /// One task per session (a second failed delete of it moves the
    /// deadline its task already works to), and at most
    /// [`DELETE_RETRIES_MAX`](crate::limits::DELETE_RETRIES_MAX) sessions.
    fn retry_delete(&self, id: SessionId) {
        let until = tokio::time::Instant::now() + self.inner.config.timeout;
        let ended = &self.inner.ended;
        if ended.len() >= crate::limits::DELETE_RETRIES_MAX && !ended.contains_key(&id) {
            return;
        }
        if ended.insert(id, until).is_some() {
            return;
        }
        let sessions = self.clone();
        tokio::spawn(async move {
            let ended = &sessions.inner.ended;
            let mut wait = crate::limits::DELETE_RETRY_MIN;
            loop {
                // The deadline as the last failed delete of it set it.
                match ended.get(&id).map(|until| *until) {
                    None => return,
                    Some(until) if tokio::time::Instant::now() >= until => {
                        // Unless a failed delete moved the deadline since it
                        // was read: then this task goes on (that delete
                        // started none, finding it here).
                        if ended
                            .remove_if(&id, |_, until| tokio::time::Instant::now() >= *until)
                            .is_some()
                        {
                            return;
                        }
                        continue;
                    }
                    Some(_) => {}
                }
                tokio::time::sleep(wait).await;
                match sessions.delete_ours(&id).await {
                    // Gone from the store: whatever failed delete came since
                    // (a later one starts a task of its own).
                    Ok(_) | Err(session_engine::Error::NotFound) => {
                        ended.remove(&id);
                        return;
                    }
                    Err(_) => wait = (wait * 2).min(crate::limits::DELETE_RETRY_MAX),
                }
            }
        });
    }

    /// Writes rmcp's restore state into the session's record in the
    /// background after the store failed the write for a reason another
    /// try can get past ([`worth_retrying`]), keeping its data map
    /// (`try_update`), until it is there, the session is gone, or the
    /// session's timeout has passed; backing off as a failed delete does.
    ///
    /// One task per session (a later failed write of it hands the running
    /// task its newer state), and at most
    /// [`STATE_RETRIES_MAX`](crate::limits::STATE_RETRIES_MAX) sessions:
    /// `initialize` needs no credentials, and while the store fails writes
    /// every handshake would otherwise add a task living up to the session
    /// timeout, and a retry storm when the store came back.
    fn retry_state(&self, id: SessionId, state: RmcpState) {
        let pending = &self.inner.state_retries;
        if pending.len() >= crate::limits::STATE_RETRIES_MAX && !pending.contains_key(&id) {
            return;
        }
        let generation = self.inner.state_generation.fetch_add(1, Ordering::Relaxed);
        if pending.insert(id, (generation, state)).is_some() {
            return;
        }
        let timeout = self.inner.config.timeout;
        let sessions = self.clone();
        tokio::spawn(async move {
            let pending = &sessions.inner.state_retries;
            let mut wait = crate::limits::DELETE_RETRY_MIN;
            let mut tried = None;
            let mut until = tokio::time::Instant::now() + timeout;
            loop {
                let Some((generation, state)) = pending.get(&id).map(|s| s.clone()) else {
                    return;
                };
                // A newer failed write gets the whole timeout too.
                if tried.replace(generation).is_some_and(|g| g != generation) {
                    until = tokio::time::Instant::now() + timeout;
                }
                let done = tokio::time::Instant::now() >= until || {
                    tokio::time::sleep(wait).await;
                    let written = sessions
                        .inner
                        .store
                        .try_update(&id, |bytes| {
                            let mut record = Record::decode(bytes)?;
                            if record.has_state() {
                                return Ok::<_, Error>(Op::Keep);
                            }
                            record.set_state(&state)?;
                            Ok(Op::Replace(record.encode()?))
                        })
                        .await;
                    // Written, the record is not ours, the session is gone,
                    // or the store refuses this write for good.
                    !matches!(written, Err(e) if worth_retrying(&e))
                };
                // Unless a newer state came meanwhile: then it is tried.
                if done && pending.remove_if(&id, |_, (g, _)| *g == generation).is_some() {
                    return;
                }
                if !done {
                    wait = (wait * 2).min(crate::limits::DELETE_RETRY_MAX);
                }
            }
        });
    }

    /// A call found the session gone (deleted through another process,
    /// evicted): this process stops coalescing its touches, so the next
    /// request asks the store and is answered "no such session" (within
    /// the interval it would otherwise be served, every call failing).
    fn gone_if_not_found<T>(
        &self,
        id: &SessionId,
        r: session_engine::Result<T>,
    ) -> session_engine::Result<T> {
        if matches!(r, Err(session_engine::Error::NotFound)) {
            self.inner.touches.forget(id);
        }
        r
    }

    /// The session left this process (its worker ended or was closed).
    pub(crate) fn forget(&self, text: &str) {
        if let Ok(id) = text.parse::<SessionId>() {
            self.inner.touches.forget(&id);
            self.inner.peers.remove(&id);
        }
    }
}

/// `insert(id)` under fresh ids from the OS CSPRNG while the id is taken:
/// the id it took, or `AlreadyExists` after [`ID_DRAWS_MAX`] taken ids.
async fn insert_fresh<F, Fut>(mut insert: F) -> Result<SessionId>
where
    F: FnMut(SessionId) -> Fut,
    Fut: std::future::Future<Output = session_engine::Result<()>>,
{
    for _ in 0..ID_DRAWS_MAX {
        let id = SessionId::random().map_err(|e| Error::Random(e.to_string()))?;
        match insert(id).await {
            Ok(()) => return Ok(id),
            Err(session_engine::Error::AlreadyExists) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Err(session_engine::Error::AlreadyExists.into())
}

#[async_trait::async_trait]
impl RmcpStore for McpSessions {
    /// The session's restore state, or `None` if the id is not ours, the
    /// session is gone or its handshake never completed. Activity only
    /// when there is a state to restore (a `peek`, then a `touch`):
    /// requests naming a session that cannot be restored here (each a 404)
    /// do not keep it alive.
    async fn load(&self, session_id: &str) -> std::result::Result<Option<RmcpState>, SessionStoreError> {
        let Ok(id) = session_id.parse::<SessionId>() else {
            return Ok(None);
        };
        if self.ended(&id) {
            return Ok(None);
        }
        // rmcp sends these errors' text to the client (HTTP 500).
        let failed =
            |e: session_engine::Error| Box::new(ClientText::of("loading an MCP session", &Error::from(e)));
        let session = match self.inner.store.peek(&id).await {
            Ok(session) => session,
            Err(session_engine::Error::NotFound) => return Ok(None),
            Err(e) => return Err(failed(e)),
        };
        let record = Record::decode(session.metadata())
            .map_err(|e| Box::new(ClientText::of("loading an MCP session", &e)))?;
        if record.has_state() {
            match self.inner.store.touch(&id).await {
                Ok(()) => {}
                Err(session_engine::Error::NotFound) => return Ok(None),
                Err(e) => return Err(failed(e)),
            }
        }
        // Not tracked here: rmcp starts a worker only if this returns a
        // state and the manager's `restore_session` succeeds, which tracks
        // it (a 404 would leave an entry no close ever removes). A session
        // whose handshake never completed cannot be replayed.
        record
            .state()
            .map_err(|e| Box::new(ClientText::of("loading an MCP session", &e)) as SessionStoreError)
    }

    /// A `put` of the record with rmcp's state (after the handshake of a
    /// session [`McpSessionManager`] created; the map is empty then).
    async fn store(&self, session_id: &str, state: &RmcpState) -> std::result::Result<(), SessionStoreError> {
        let id: SessionId = session_id
            .parse()
            .map_err(|e: session_engine::ParseIdError| Box::new(Error::Store(e.into())))?;
        // Into the record the session was created with, its data map kept;
        // a session gone meanwhile (a client's DELETE) is not made again.
        let at = self.inner.touches.stamp();
        let written = self
            .inner
            .store
            .try_update(&id, |bytes| {
                let mut record = Record::decode(bytes)?;
                record.set_state(state)?;
                Ok::<_, Error>(Op::Replace(record.encode()?))
            })
            .await;
        match written {
            Ok(Ok(_)) => {
                self.inner.touches.mark(id, at);
                Ok(())
            }
            Ok(Err(not_ours)) => Err(Box::new(not_ours)),
            Err(e) => {
                if worth_retrying(&e) {
                    // rmcp ignores this error: without its state the
                    // session could never be restored elsewhere (a 404 for
                    // its client there).
                    self.retry_state(id, state.clone());
                }
                Err(Box::new(Error::from(e)))
            }
        }
    }

    /// The session and its state (subscriptions, bucket) go; an unknown id
    /// is not an error, and a session of the store that is not an MCP one
    /// is left alone. If the store fails the delete (rmcp answers the
    /// client 202 whatever this returns), the session is gone for this
    /// process at once and the delete is retried in the background, so a
    /// client's `DELETE` is never a session this process leaves to whoever
    /// holds its id. The retry is in memory only: another process on the
    /// store, or this one restarted, restores the session until a retry
    /// succeeds or its timeout ends it (README, "Ending a session").
    async fn delete(&self, session_id: &str) -> std::result::Result<(), SessionStoreError> {
        let Ok(id) = session_id.parse::<SessionId>() else {
            return Ok(());
        };
        let counted = self.remember_deleted(id);
        self.forget(session_id);
        // Dropped before the store answers (the client gave up on its
        // DELETE, and the request went with it), the delete is retried as
        // a failed one is.
        let mut pending = PendingDelete {
            sessions: self,
            id,
            counted,
            done: false,
        };
        let deleted = self.delete_ours(&id).await;
        pending.done = true;
        let ended = !matches!(deleted, Ok(false) | Err(session_engine::Error::NotFound));
        if counted {
            self.delete_done(id, ended);
        }
        match deleted {
            Ok(_) | Err(session_engine::Error::NotFound) => Ok(()),
            Err(e) => {
                self.retry_delete(id);
                Err(Box::new(Error::from(e)))
            }
        }
    }
}

/// A client's delete of a session through this process, remembered for
/// [`DELETED_REMEMBERED`] (see [`Inner::deleted`]).
#[derive(Debug)]
struct DeletedMark {
    until: tokio::time::Instant,
    /// Deletes of the id under way here.
    in_flight: u32,
    /// Some delete of it ended a session (or is retried until it does).
    ended: bool,
}

/// A store delete not yet answered; dropped before [`done`](Self::done),
/// the delete is retried in the background (`retry_delete`).
struct PendingDelete<'a> {
    sessions: &'a McpSessions,
    id: SessionId,
    /// Counted in the id's remembered-delete mark.
    counted: bool,
    done: bool,
}

impl Drop for PendingDelete<'_> {
    fn drop(&mut self) {
        // A request is dropped on its runtime; outside one (a runtime shut
        // down under it) no task can be started, and the session expires
        // in the store on its own.
        if self.done {
            return;
        }
        // Retried: it will end the session, so its mark stays.
        if self.counted {
            self.sessions.delete_done(self.id, true);
        }
        if tokio::runtime::Handle::try_current().is_ok() {
            self.sessions.retry_delete(self.id);
        }
    }
}

/// A claimed touch not yet answered by the store; dropped before
/// [`done`](Self::done), it puts the claim back as a failed touch.
struct PendingTouch<'a> {
    touches: &'a Touches,
    id: SessionId,
    previous: Option<u64>,
    done: bool,
}

impl Drop for PendingTouch<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.touches.failed(self.id, self.previous);
        }
    }
}

/// A store error another try can get past: the store down, slow or busy,
/// or a write whose outcome is unknown. Not one that refuses the write for
/// good (a record over the store's metadata limit: a client's handshake
/// can make one; a limit; a bad argument), which a retry would repeat
/// until the session's timeout, one task per such handshake.
fn worth_retrying(e: &session_engine::Error) -> bool {
    use session_engine::Error as E;
    matches!(
        e,
        E::Unavailable { .. }
            | E::TimedOut { .. }
            | E::OutcomeUnknown { .. }
            | E::Contended { .. }
            | E::Io { .. }
    )
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn sessions_for_retries() -> McpSessions {
        let engine = session_engine::Engine::open(session_engine::Config::development()).expect("engine");
        McpSessions::new(engine, crate::McpConfig::with_timeout(Duration::from_secs(60))).expect("sessions")
    }

    fn alive_tasks() -> usize {
        tokio::runtime::Handle::current().metrics().num_alive_tasks()
    }

    /// Calls `retry` 100 times for one session, then `max + 100` times for
    /// as many fresh ones: one task per session, and at most `max` pending
    /// (`pending`). Returns the tasks alive before.
    fn check_retries_are_bounded(
        retry: impl Fn(SessionId),
        pending: impl Fn() -> usize,
        max: usize,
    ) -> usize {
        let before = alive_tasks();
        let id = SessionId::random().expect("id");
        for _ in 0..100 {
            retry(id);
        }
        assert_eq!(alive_tasks(), before + 1, "one retry for one session");
        for _ in 0..max + 100 {
            retry(SessionId::random().expect("id"));
        }
        assert_eq!(pending(), max);
        assert_eq!(alive_tasks(), before + max);
        before
    }

    /// `DELETE`s of ids the store does not hold (anyone can send them, as
    /// many as they like) take no place among the ids a process remembers
    /// deleting: each took one of the `DELETED_REMEMBERED_MAX` for a
    /// minute, so a flood of them left a client's real `DELETE`
    /// unremembered, and a restore of that session under way here went on.
    #[tokio::test(start_paused = true)]
    async fn deletes_of_unknown_ids_take_no_room_from_real_ones() {
        use rmcp::model::InitializeRequestParams;
        use rmcp::transport::streamable_http_server::session::{
            SessionManager as _, SessionState, SessionStore as _,
        };
        let sessions = sessions_for_retries();
        for _ in 0..DELETED_REMEMBERED_MAX {
            // Each twice at once: the second renewed the first's mark,
            // which the first then could not tell for its own and left.
            let unknown = SessionId::random().expect("id").to_string();
            let (a, b) = tokio::join!(sessions.delete(&unknown), sessions.delete(&unknown));
            a.and(b).expect("an unknown id is no error");
            assert!(!sessions.deleted_here(&unknown));
        }
        let stored = || async {
            let (text, transport) = sessions.session_manager().create_session().await.expect("create");
            sessions
                .store(&text, &SessionState::new(InitializeRequestParams::default()))
                .await
                .expect("store");
            (text, transport)
        };
        let (text, _transport) = stored().await;
        sessions.delete(&text).await.expect("delete");
        assert!(sessions.deleted_here(&text), "the real DELETE is remembered");
        assert!(sessions.load(&text).await.expect("load").is_none());
        // A client's DELETE sent twice at once: the one that finds the
        // session gone does not take back the mark of the one that ended it.
        let (text, _transport) = stored().await;
        let (a, b) = tokio::join!(sessions.delete(&text), sessions.delete(&text));
        a.and(b).expect("delete");
        assert!(sessions.deleted_here(&text), "a repeated DELETE is remembered");
    }

    /// The marks' bookkeeping with deletes of one id overlapping (the
    /// engine's store answers at once, so `delete`s joined above do not
    /// overlap): the mark goes once the last delete is done and none of
    /// them ended a session, whichever order they finish in; it stays if
    /// any did.
    #[tokio::test(start_paused = true)]
    async fn overlapping_deletes_of_one_id_share_its_mark() {
        let sessions = sessions_for_retries();
        let id = SessionId::random().expect("id");
        let text = id.to_string();
        for ended in [[false, false], [true, false], [false, true]] {
            assert!(sessions.remember_deleted(id) && sessions.remember_deleted(id));
            sessions.delete_done(id, ended[0]);
            assert!(sessions.deleted_here(&text), "one delete still under way");
            sessions.delete_done(id, ended[1]);
            assert_eq!(sessions.deleted_here(&text), ended.contains(&true), "{ended:?}");
            sessions.inner.deleted.clear();
        }
    }

    /// A client's `DELETE`s while the store fails them (any ids, the same
    /// one again and again): one background retry per session, and at most
    /// `DELETE_RETRIES_MAX` at once. Each call spawned a task of its own,
    /// living up to the session timeout: a client's requests grew the
    /// process's tasks without bound, and the store got a retry storm when
    /// it came back.
    #[tokio::test(start_paused = true)]
    async fn failed_deletes_are_retried_once_per_session_and_within_a_bound() {
        let sessions = sessions_for_retries();
        check_retries_are_bounded(
            |id| sessions.retry_delete(id),
            || sessions.inner.ended.len(),
            crate::limits::DELETE_RETRIES_MAX,
        );
    }

    /// A failed delete that comes again while its session's retry sleeps
    /// moves the deadline; when the retry's store delete then succeeds
    /// (here the store has no such session: `NotFound`), the entry goes
    /// all the same. It stayed, with no task left to remove it: such
    /// entries piled up against `DELETE_RETRIES_MAX` until failed deletes
    /// were no longer retried.
    #[tokio::test(start_paused = true)]
    async fn a_retry_that_succeeds_removes_its_entry_whatever_its_deadline() {
        let sessions = sessions_for_retries();
        let id = SessionId::random().expect("id");
        sessions.retry_delete(id);
        // The retry reads the deadline and sleeps; a second failure moves it.
        tokio::time::sleep(Duration::from_millis(1)).await;
        sessions.retry_delete(id);
        tokio::time::sleep(crate::limits::DELETE_RETRY_MIN * 4).await;
        assert_eq!(sessions.inner.ended.len(), 0, "the delete went through");
    }

    /// Failed state writes while the store fails them: one background retry
    /// per session, handed the newest state, and at most
    /// `STATE_RETRIES_MAX` at once. Each failed write spawned a task of its
    /// own, living up to the session timeout, with no bound.
    #[tokio::test(start_paused = true)]
    async fn failed_state_writes_are_retried_once_per_session_and_within_a_bound() {
        let sessions = sessions_for_retries();
        let state = RmcpState::new(rmcp::model::InitializeRequestParams::default());
        let before = check_retries_are_bounded(
            |id| sessions.retry_state(id, state.clone()),
            || sessions.inner.state_retries.len(),
            crate::limits::STATE_RETRIES_MAX,
        );
        // The sessions are not in the store: each retry ends at its first
        // try, and takes its entry with it.
        tokio::time::sleep(crate::limits::DELETE_RETRY_MIN * 2).await;
        assert_eq!(sessions.inner.state_retries.len(), 0);
        assert_eq!(alive_tasks(), before);
    }

    #[tokio::test]
    async fn a_create_draws_at_most_id_draws_max_ids() {
        let tried = AtomicUsize::new(0);
        let taken = insert_fresh(|_| {
            tried.fetch_add(1, Ordering::Relaxed);
            std::future::ready(Err(session_engine::Error::AlreadyExists))
        })
        .await;
        assert!(
            matches!(taken, Err(Error::Store(session_engine::Error::AlreadyExists))),
            "{taken:?}"
        );
        assert_eq!(tried.load(Ordering::Relaxed), ID_DRAWS_MAX);

        let tried = AtomicUsize::new(0);
        let id = insert_fresh(|_| {
            let n = tried.fetch_add(1, Ordering::Relaxed);
            std::future::ready(if n == 0 {
                Err(session_engine::Error::AlreadyExists)
            } else {
                Ok(())
            })
        })
        .await;
        assert!(id.is_ok(), "{id:?}");
        assert_eq!(tried.load(Ordering::Relaxed), 2, "the second id was free");
    }
}
