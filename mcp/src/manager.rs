//! [`McpSessionManager`]: rmcp's `LocalSessionManager` (the in-process
//! workers and channels) with our ids, our touches and our close.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use dashmap::DashMap;
use futures_core::Stream;
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::transport::streamable_http_server::session::local::{
    LocalSessionHandle, LocalSessionManager, LocalSessionManagerError, SessionError,
};
use rmcp::transport::streamable_http_server::session::{
    EventStore, RestoreOutcome, ServerSseMessage, SessionId as RmcpId, SessionManager,
};
use std::sync::Arc;
use tokio::sync::{oneshot, watch};

use crate::error::ClientText;
use crate::limits::{HOLD_RETRIES_PER_INTERVAL, RESTORE_CLOSE_WAIT, RESTORE_WAIT_MAX};
use crate::sessions::McpSessions;

/// What the session manager's calls fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManagerError {
    /// rmcp's in-process manager failed (an unknown session, a closed worker).
    #[error(transparent)]
    Local(#[from] LocalSessionManagerError),
    /// Drawing a session id or registering its worker failed. The text is
    /// what a client may see (rmcp sends it in the HTTP 500's body): the
    /// kind of failure, never the store's own text, which is logged.
    #[error("creating a session failed: {0}")]
    Create(String),
}

/// rmcp's `SessionManager` for [`McpSessions`]: give it to
/// `StreamableHttpService::new` (from [`McpSessions::session_manager`]).
///
/// What lives where: the per-session worker, its channels and its SSE
/// streams are rmcp's `LocalSessionManager`'s, in this process (they hold
/// live connections and cannot be stored). The session itself, the client's
/// `initialize` parameters and the application's map are in the store. A
/// request whose id this process does not hold makes rmcp load the session
/// from the store (`SessionStore::load`), ask this manager for a fresh worker
/// under the same id (`restore_session`) and replay the `initialize`
/// handshake into it, so the client goes on without noticing.
///
/// On top of the local manager it
/// - creates each session in the store first, under an id drawn from the OS
///   CSPRNG, and hands rmcp its text (22 URL-safe characters, 128 bits), so
///   the header value *is* the store's key;
/// - touches the store on requests for sessions served here, coalesced
///   (`has_session`, which rmcp calls on every request carrying an id);
/// - keeps touching whenever a touch is due while the session's `GET`
///   stream is open (a client waiting on it for notifications sends no
///   requests, yet is not idle): one task per open `GET` stream, and
///   likewise for a request's own stream once it has been open one touch
///   interval (a tool call that runs longer than the session's timeout
///   would otherwise see its session expire before it answers);
/// - ends the local worker when the store says the session is gone (it
///   expired, or a `DELETE` reached another process): the request then gets
///   rmcp's 404 and the client knows to start again.
#[derive(Debug)]
pub struct McpSessionManager {
    sessions: McpSessions,
    /// Shared with the tasks that close its workers (`close_local`).
    local: Arc<LocalSessionManager>,
    /// Sessions whose worker rmcp is restoring here: between
    /// `restore_session` and the replayed `notifications/initialized`. The
    /// sender is dropped when the restore ends, which wakes the requests
    /// waiting for it (`has_session`); nothing is ever sent.
    restoring: DashMap<RmcpId, Restoring>,
    /// The next restore's token (see [`Restoring`]).
    restore_tokens: AtomicU64,
    /// `restoring.len()`, read without locking on every request.
    restoring_count: AtomicUsize,
    /// Tests stop `has_session` here, just before it asks the local manager.
    #[cfg(test)]
    pause: tests::Pause,
    /// Tests stop `restore_session` here, between its two steps once the
    /// worker started.
    #[cfg(test)]
    restore_pause: tests::Pause,
}

impl McpSessionManager {
    pub(crate) fn new(sessions: McpSessions) -> Self {
        let mut local = LocalSessionManager::default();
        local.session_config.keep_alive = Some(sessions.config().local_keep_alive);
        Self {
            sessions,
            local: Arc::new(local),
            restoring: DashMap::new(),
            restore_tokens: AtomicU64::new(0),
            restoring_count: AtomicUsize::new(0),
            #[cfg(test)]
            pause: tests::Pause::default(),
            #[cfg(test)]
            restore_pause: tests::Pause::default(),
        }
    }

    /// Touches the session whenever a touch is due, until the returned
    /// guard drops or the store has lost the session (the free [`hold`]).
    pub(crate) fn hold(&self, id: &RmcpId) -> Holding {
        hold(&self.sessions, id)
    }

    fn end_restore(&self, id: &RmcpId) {
        if self.restoring.remove(id).is_some() {
            self.restoring_count.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Marks a restore of `id` under way, unless one already is: the
    /// guard that ends the mark if this restore starts no worker.
    fn mark_restore<'a>(&'a self, id: &'a RmcpId) -> Marked<'a> {
        let token = self.restore_tokens.fetch_add(1, Ordering::Relaxed);
        let owns = match self.restoring.entry(id.clone()) {
            dashmap::Entry::Occupied(_) => false,
            dashmap::Entry::Vacant(vacant) => {
                vacant.insert(Restoring::new(token));
                self.restoring_count.fetch_add(1, Ordering::AcqRel);
                true
            }
        };
        Marked {
            manager: self,
            id,
            token,
            owns,
        }
    }

    /// If a restore of `id` is under way here, what tells when it ends
    /// (`changed` fails once its sender is dropped).
    fn restore_under_way(&self, id: &RmcpId) -> Option<watch::Receiver<()>> {
        if self.restoring_count.load(Ordering::Acquire) == 0 {
            return None;
        }
        self.restoring.get(id).map(|r| r.ended.subscribe())
    }

    /// The local manager's `close_session`, without waiting: the worker's
    /// handle goes at once (or, if a call holds the local map this instant,
    /// by a task as soon as it lets go), and a task of its own hands the
    /// worker its close. rmcp's `DELETE` deletes from the store only once
    /// `close_session` returns, so any wait here was a window in which a
    /// `DELETE` its client dropped deleted nothing (the next request
    /// restored the session): a worker stuck sending to a client that
    /// stopped reading its stream takes no event, and a busy one takes its
    /// time. While the handle waits for such a task, requests for the id
    /// still reach that worker (rmcp restores no other), and its next touch
    /// finds the session gone from the store.
    fn close_local(&self, id: &RmcpId) {
        if let Ok(mut local) = self.local.sessions.try_write() {
            if let Some(handle) = local.remove(id) {
                drop(local);
                tokio::spawn(close_worker(handle));
            }
        } else {
            let (local, id) = (Arc::clone(&self.local), id.clone());
            tokio::spawn(async move {
                let handle = local.sessions.write().await.remove(&id);
                if let Some(handle) = handle {
                    close_worker(handle).await;
                }
            });
        }
    }

    /// The handle this manager serves.
    #[must_use]
    pub fn sessions(&self) -> &McpSessions {
        &self.sessions
    }
}

/// Hands a worker whose handle is gone its close; a worker already ended
/// has nothing left to close.
async fn close_worker(handle: LocalSessionHandle) {
    match handle.close().await {
        Ok(()) | Err(SessionError::SessionServiceTerminated) => {}
        Err(e) => tracing::warn!(error = %e, "closing a session's worker failed"),
    }
}

/// Put by the manager into each message it hands to a session's worker
/// (`initialize_session`, `create_stream`, `accept_message`): the session
/// rmcp routed it to ([`McpSessions::session_id`] reads it; a request rmcp
/// serves without a session carries none).
#[derive(Clone, Debug)]
pub(crate) struct RoutedTo(pub(crate) RmcpId);

fn routed(id: &RmcpId, mut message: ClientJsonRpcMessage) -> ClientJsonRpcMessage {
    message.insert_extension(RoutedTo(id.clone()));
    message
}

impl SessionManager for McpSessionManager {
    type Error = ManagerError;
    type Transport = <LocalSessionManager as SessionManager>::Transport;

    async fn create_session(&self) -> Result<(RmcpId, Self::Transport), Self::Error> {
        let (id, created_at) =
            self.sessions.create().await.map_err(|e| {
                ManagerError::Create(ClientText::of("creating an MCP session", &e).to_string())
            })?;
        // Deleted again unless its worker starts (this request may also be
        // cancelled while it waits for the local manager).
        let pending = Pending {
            sessions: &self.sessions,
            id: Some(id),
        };
        let text: RmcpId = Arc::from(id.to_string());
        // The local manager's `restore_session` is its only way to start a
        // worker under an id of the caller's choosing.
        match self.local.restore_session(text.clone()).await? {
            RestoreOutcome::Restored(transport) => {
                pending.started();
                // Served here from now on, until the worker's close forgets it.
                self.sessions.track(&text, Some(created_at));
                Ok((text, transport))
            }
            // A fresh 128-bit id already held here: not in this universe.
            _ => Err(ManagerError::Create(
                "rmcp's local manager already holds a freshly drawn id".to_owned(),
            )),
        }
    }

    async fn initialize_session(
        &self,
        id: &RmcpId,
        message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, Self::Error> {
        Ok(self.local.initialize_session(id, routed(id, message)).await?)
    }

    async fn has_session(&self, id: &RmcpId) -> Result<bool, Self::Error> {
        // rmcp's local manager lists a restored worker before the replayed
        // handshake has reached it, and a request routed to it meanwhile
        // (the client's GET stream reconnecting beside a POST) becomes the
        // worker's first event instead of `initialize`: the worker quits and
        // the restore fails (HTTP 500). Such a request waits here for the
        // restore to end, then is served by the restored worker. (Answering
        // "not here" instead would send it into rmcp's restore path, which
        // starts a second restore if the first has ended meanwhile: the
        // local manager refuses it as already present, HTTP 500 again.)
        let deadline = tokio::time::Instant::now() + RESTORE_WAIT_MAX;
        loop {
            if let Some(mut ended) = self.restore_under_way(id) {
                if tokio::time::timeout_at(deadline, ended.changed()).await.is_err() {
                    // Abandoned (its request cancelled after the worker
                    // started, the replayed handshake never sent), or far
                    // slower than any restore: the half-started worker
                    // closes and the mark ends, so rmcp's own path can
                    // restore the session (both would otherwise stay: every
                    // request waiting this long, rmcp's restore refused as
                    // already present). No worker left to close is as good.
                    let _ = self.local.close_session(id).await;
                    // The worker's task ends with a `close_session` of the
                    // id, which ends the mark: waited for, since arriving
                    // after the next restore had begun it would end that
                    // one (its mark, its tracking, its worker). Without a
                    // task to send it, the mark ends here, and so does
                    // what that close would have forgotten (its tracking,
                    // its peer).
                    if tokio::time::timeout(RESTORE_CLOSE_WAIT, ended.changed())
                        .await
                        .is_err()
                    {
                        self.end_restore(id);
                        self.sessions.forget(id);
                    }
                    return Ok(false);
                }
                continue;
            }
            #[cfg(test)]
            self.pause.here().await;
            if !self.local.has_session(id).await? {
                return Ok(false);
            }
            // Asked again after the local manager: a restore marks the
            // session before its worker is listed, so a restore that began
            // after the check above is seen now, and waited for.
            if self.restore_under_way(id).is_none() {
                break;
            }
        }
        if self.sessions.touch_if_due(id).await {
            return Ok(true);
        }
        // Gone from the store: end the worker here too. rmcp then tries
        // the store, finds nothing, and answers 404.
        self.close_local(id);
        Ok(false)
    }

    /// Ends the worker in this process. Not a delete: rmcp also calls this
    /// when a worker ends for in-process reasons (idle past
    /// `local_keep_alive`, the server shutting down), and the session must
    /// then live on in the store for the next request. A client's `DELETE`
    /// reaches the store through `SessionStore::delete`.
    async fn close_session(&self, id: &RmcpId) -> Result<(), Self::Error> {
        self.end_restore(id);
        self.sessions.forget(id);
        self.close_local(id);
        Ok(())
    }

    async fn create_stream(
        &self,
        id: &RmcpId,
        message: ClientJsonRpcMessage,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        // A request's own stream lives as long as its request, which may be
        // a tool call running longer than the session's timeout: held once
        // it has been open a touch interval (a timer per request, a task
        // only for the long ones).
        let stream = self.local.create_stream(id, routed(id, message)).await?;
        Ok(Held::after(stream, self.sessions.clone(), id.clone()))
    }

    async fn accept_message(&self, id: &RmcpId, message: ClientJsonRpcMessage) -> Result<(), Self::Error> {
        let accepted = self.local.accept_message(id, routed(id, message)).await;
        // While a session is restoring, no request reaches it (see
        // `has_session`): the first message accepted is rmcp's replayed
        // `notifications/initialized`, queued behind `initialize`. Events
        // queued after it find the worker initialized. A replay that fails
        // found the worker closed (a wait ran out on a handshake slower
        // than it): the mark then ends with that worker's own close, which
        // the waiting request waits for (ended here, that close would come
        // after the next restore had begun, and end that one).
        if accepted.is_ok() {
            self.end_restore(id);
        }
        Ok(accepted?)
    }

    async fn create_standalone_stream(
        &self,
        id: &RmcpId,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        let stream = self.local.create_standalone_stream(id).await?;
        Ok(Held::new(stream, self.hold(id)))
    }

    async fn resume(
        &self,
        id: &RmcpId,
        last_event_id: String,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        let stream = self.local.resume(id, last_event_id).await?;
        Ok(Held::new(stream, self.hold(id)))
    }

    async fn restore_session(&self, id: RmcpId) -> Result<RestoreOutcome<Self::Transport>, Self::Error> {
        // A client's DELETE reached this process after rmcp's `load` found
        // the session: its record is gone, and the restore must not start
        // a worker for it (rmcp answers 404 for `NotSupported`).
        if self.sessions.deleted_here(&id) {
            return Ok(RestoreOutcome::NotSupported);
        }
        // Marked before the worker exists, so no request can reach it
        // unmarked. A restore of this id already under way here (rmcp runs
        // one at a time per id within a service; two services may share
        // this manager) keeps its mark, and whichever of the two starts the
        // worker owns it from then on. Ended unless the worker starts: also
        // if this request is cancelled while it waits for the local manager.
        let mut mark = self.mark_restore(&id);
        let outcome = self.local.restore_session(id.clone()).await;
        if matches!(outcome, Ok(RestoreOutcome::Restored(_))) {
            mark.take_over();
            // Served here from now on, until the worker's close forgets it.
            // Tracked before the check below: a DELETE after the check
            // forgets it; one before, the check finds.
            self.sessions.track(&id, None);
            #[cfg(test)]
            self.restore_pause.here().await;
            if self.sessions.deleted_here(&id) {
                // The DELETE came while the worker started: close it (the
                // mark ends as this returns).
                drop(outcome);
                self.sessions.forget(&id);
                let _ = self.local.close_session(&id).await;
                return Ok(RestoreOutcome::NotSupported);
            }
            // Ended by the replayed handshake (`accept_message`).
            mark.restored();
        }
        Ok(outcome?)
    }

    fn event_store(&self) -> Option<Arc<dyn EventStore>> {
        self.local.event_store()
    }
}

/// A session `create_session` stored whose worker has not started yet:
/// dropped before [`started`](Self::started) (the local manager refused
/// the id, or the request was cancelled), it discards the session, whose id
/// nobody was given.
struct Pending<'a> {
    sessions: &'a McpSessions,
    id: Option<session_engine::SessionId>,
}

impl Pending<'_> {
    fn started(mut self) {
        self.id = None;
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.sessions.discard(id);
        }
    }
}

/// A restore under way: what its waiting requests watch (the sender is
/// dropped when it ends; nothing is ever sent), and the token of the
/// restore that owns the mark.
#[derive(Debug)]
struct Restoring {
    ended: watch::Sender<()>,
    token: u64,
}

impl Restoring {
    fn new(token: u64) -> Self {
        Self {
            ended: watch::channel(()).0,
            token,
        }
    }
}

/// A restore's hold on the mark of its id: dropped before
/// [`restored`](Self::restored) (the local manager refused the id or
/// failed, or the request was cancelled while it waited), it ends the
/// mark if it owns it, which no replayed handshake will end. It does not
/// own it where another restore's mark was there first, until it starts
/// the worker itself ([`take_over`](Self::take_over)): of two restores at
/// once, the one that marked first may lose the local manager's race, and
/// its end must not end the mark the winner's worker waits under.
struct Marked<'a> {
    manager: &'a McpSessionManager,
    id: &'a RmcpId,
    token: u64,
    owns: bool,
}

impl Marked<'_> {
    /// This restore started the worker: the mark is its own (the other
    /// restore's end leaves it), put back if that one ended it already.
    fn take_over(&mut self) {
        if self.owns {
            return;
        }
        let m = self.manager;
        match m.restoring.entry(self.id.clone()) {
            dashmap::Entry::Occupied(mut occupied) => occupied.get_mut().token = self.token,
            dashmap::Entry::Vacant(vacant) => {
                vacant.insert(Restoring::new(self.token));
                m.restoring_count.fetch_add(1, Ordering::AcqRel);
            }
        }
        self.owns = true;
    }

    /// The replayed handshake ends the mark from now on.
    fn restored(mut self) {
        self.owns = false;
    }
}

impl Drop for Marked<'_> {
    fn drop(&mut self) {
        let m = self.manager;
        if self.owns
            && m.restoring
                .remove_if(self.id, |_, r| r.token == self.token)
                .is_some()
        {
            m.restoring_count.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// The touch interval a holding task works with: the configured one, or
/// for a zero interval (touch on every request, which would spin here) a
/// quarter of the timeout.
fn hold_period(sessions: &McpSessions) -> Duration {
    let config = sessions.config();
    if config.touch_interval.is_zero() {
        config.timeout / 4
    } else {
        config.touch_interval
    }
    .max(Duration::from_millis(1))
}

/// Touches the session whenever a touch is due (one touch interval after
/// the last write that counted as activity: a request's touch, a data
/// update, this task's own touch), until the returned guard drops or the
/// store has lost the session. So an open stream's session is touched at
/// most one interval after its last activity, however the requests in
/// between fell: a task ticking on a schedule of its own would skip a tick
/// that came just before a touch was due and touch up to two intervals
/// apart. Never later than half the timeout after the last, whatever the
/// interval: the other half is the touch's to reach the store (one interval
/// just under the timeout left it a millisecond). A failed touch is tried
/// again after `interval / HOLD_RETRIES_PER_INTERVAL`.
fn hold(sessions: &McpSessions, id: &RmcpId) -> Holding {
    let (guard, mut dropped) = oneshot::channel::<()>();
    let (gone_tx, gone) = oneshot::channel::<()>();
    let sessions = sessions.clone();
    let id = id.clone();
    let half = sessions.config().timeout / 2;
    let every = hold_period(&sessions).min(half);
    // How much sooner than the coalescing interval this task touches.
    let sooner = sessions.config().touch_interval.saturating_sub(half);
    let fixed = sessions.config().touch_interval.is_zero();
    let retry = (every / HOLD_RETRIES_PER_INTERVAL).max(Duration::from_millis(1));
    tokio::spawn(async move {
        // The first wait takes no retry pause: a task started when a touch
        // is due (`Held::after`) touches at once.
        let mut pause = Duration::ZERO;
        loop {
            let wait = if fixed {
                every
            } else {
                // Not served here (a close racing this task): touch on a
                // fixed schedule, as a request would.
                sessions
                    .touch_due_in(&id)
                    .map_or(every, |due| due.saturating_sub(sooner))
                    .max(pause)
            };
            pause = retry;
            tokio::select! {
                _ = &mut dropped => return,
                () = tokio::time::sleep(wait) => {
                    if !sessions.touch_if_older(&id, half).await {
                        // The stream ends: its client is told the session
                        // is gone at its next request.
                        let _ = gone_tx.send(());
                        return;
                    }
                }
            }
        }
    });
    Holding {
        _guard: guard,
        gone: Some(gone),
        ended: false,
    }
}

/// A [`hold`]'s task, seen from its stream: dropping `_guard` stops it;
/// `gone` fires if it found the session gone from the store, which ends
/// the stream.
pub(crate) struct Holding {
    _guard: oneshot::Sender<()>,
    gone: Option<oneshot::Receiver<()>>,
    ended: bool,
}

impl Holding {
    /// True once the task found the session gone (polls `gone` until it
    /// answers, never after).
    fn ended(&mut self, cx: &mut Context<'_>) -> bool {
        if let Some(gone) = &mut self.gone {
            if let Poll::Ready(fired) = Pin::new(gone).poll(cx) {
                self.ended = fired.is_ok();
                self.gone = None;
            }
        }
        self.ended
    }
}

/// A session's stream that keeps the session touched while it is open:
/// through [`McpSessionManager::hold`]'s task, from the start (the `GET`
/// streams, open for as long as the client listens) or once the stream is
/// still open when the session's next touch falls due (a request's,
/// usually gone long before).
/// Dropping the stream stops the task.
struct Held<S> {
    inner: S,
    holding: Option<Holding>,
    /// Until the task starts: the session, and when to start it.
    later: Option<(McpSessions, RmcpId, Pin<Box<tokio::time::Sleep>>)>,
}

impl<S> Held<S> {
    fn new(inner: S, holding: Holding) -> Self {
        Self {
            inner,
            holding: Some(holding),
            later: None,
        }
    }

    fn after(inner: S, sessions: McpSessions, id: RmcpId) -> Self {
        // When the session's next touch falls due (a request that came just
        // before it was due was not touched): a full interval from now
        // could be past the deadline. With a zero interval every request
        // touches, and the task's period is its own.
        // As the task's own waits: never later than half the timeout after
        // the last touch, whatever the interval.
        let period = hold_period(&sessions);
        let half = sessions.config().timeout / 2;
        let sooner = sessions.config().touch_interval.saturating_sub(half);
        let wait = if sessions.config().touch_interval.is_zero() {
            period
        } else {
            sessions
                .touch_due_in(&id)
                .map_or(period, |due| due.saturating_sub(sooner).min(period))
        };
        Self {
            inner,
            holding: None,
            later: Some((sessions, id, Box::pin(tokio::time::sleep(wait)))),
        }
    }
}

impl<S: Stream + Unpin> Stream for Held<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let this = &mut *self;
        if let Some((sessions, id, wake)) = &mut this.later {
            if wake.as_mut().poll(cx).is_ready() {
                this.holding = Some(hold(sessions, id));
                this.later = None;
            }
        }
        // The store lost the session: the stream ends (it stayed open and
        // silent, no fan-out and no 404 for its client).
        if this.holding.as_mut().is_some_and(|h| h.ended(cx)) {
            return Poll::Ready(None);
        }
        Pin::new(&mut this.inner).poll_next(cx)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rmcp::model::InitializeRequestParams;
    use rmcp::transport::streamable_http_server::session::{SessionState, SessionStore as _};
    use session_engine::{Config, Engine, ManualClock, SessionId};

    use super::*;
    use crate::McpConfig;

    /// The transport of a session `create_session` made; kept by a test for
    /// as long as the session's worker must live.
    type Transport = <McpSessionManager as SessionManager>::Transport;

    /// (clock, engine, sessions, their manager, the session's id text, its
    /// transport).
    type OneSession = (
        ManualClock,
        Engine,
        McpSessions,
        Arc<McpSessionManager>,
        RmcpId,
        Transport,
    );

    /// An engine on a manual clock with one stored MCP session of this
    /// timeout.
    async fn one_session(timeout: Duration) -> OneSession {
        one_session_with(McpConfig::with_timeout(timeout)).await
    }

    /// `one_session` with this configuration.
    async fn one_session_with(config: McpConfig) -> OneSession {
        let clock = ManualClock::new(1_000_000);
        let engine = Engine::open(Config::development().clock(clock.clock())).expect("engine");
        let sessions = McpSessions::new(engine.clone(), config).expect("sessions");
        let manager = sessions.session_manager();
        let (text, transport) = manager.create_session().await.expect("create");
        sessions
            .store(&text, &SessionState::new(InitializeRequestParams::default()))
            .await
            .expect("store");
        (clock, engine, sessions, manager, text, transport)
    }

    /// A session created and stored by another process on `engine`'s
    /// store (its worker's transport, kept by the test).
    async fn created_elsewhere(engine: &Engine) -> (RmcpId, Transport) {
        let creator = McpSessions::new(engine.clone(), McpConfig::default()).expect("sessions");
        let (text, transport) = creator.session_manager().create_session().await.expect("create");
        creator
            .store(&text, &SessionState::new(InitializeRequestParams::default()))
            .await
            .expect("store");
        (text, transport)
    }

    /// Waits until a restore of `text` has marked it, as it does before it
    /// waits for the local manager to start its worker.
    async fn until_marked(manager: &McpSessionManager, text: &RmcpId) {
        for _ in 0..1_000 {
            if manager.restore_under_way(text).is_some() {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(
            manager.restore_under_way(text).is_some(),
            "the restore marks the id before the local manager starts its worker"
        );
    }

    /// Fills the event channel of `text`'s worker after handing it a
    /// handshake it waits on for ever (nothing serves the transport): it
    /// drains no more events, as one stuck sending to a client that stopped
    /// reading its stream does. Returns the handshake's task.
    async fn stuck_worker(manager: &Arc<McpSessionManager>, text: &RmcpId) -> tokio::task::JoinHandle<()> {
        let event = || {
            ClientJsonRpcMessage::notification(rmcp::model::ClientNotification::InitializedNotification(
                rmcp::model::InitializedNotification::default(),
            ))
        };
        let initialize = ClientJsonRpcMessage::request(
            rmcp::model::ClientRequest::InitializeRequest(rmcp::model::InitializeRequest::new(
                InitializeRequestParams::default(),
            )),
            rmcp::model::NumberOrString::Number(0),
        );
        let handshake = {
            let (manager, text) = (Arc::clone(manager), text.clone());
            tokio::spawn(async move {
                let _ = manager.local.initialize_session(&text, initialize).await;
            })
        };
        // Until the worker has taken it (time is paused: this sleep ends
        // once every task waits).
        tokio::time::sleep(Duration::from_millis(10)).await;
        // Queue events until one no longer fits: the channel is full.
        let mut queued = 0;
        while let Ok(pushed) = tokio::time::timeout(
            Duration::from_millis(1),
            manager.local.accept_message(text, event()),
        )
        .await
        {
            pushed.expect("the worker is alive");
            queued += 1;
            assert!(queued < 10_000, "the worker's channel never filled");
        }
        handshake
    }

    /// A close that the session's worker does not take returns at once,
    /// with the worker's handle gone: rmcp's `DELETE` deletes from the
    /// store only after the close, which waited for ever (later for up to
    /// a second), and a `DELETE` its client dropped meanwhile never deleted
    /// (the next request restored the session).
    #[tokio::test(start_paused = true)]
    async fn a_close_the_worker_does_not_take_returns_at_once() {
        let (_clock, _engine, _sessions, manager, text, _transport) =
            one_session(Duration::from_secs(60)).await;
        let handshake = stuck_worker(&manager, &text).await;
        let closed = tokio::time::timeout(Duration::from_millis(1), manager.close_session(&text)).await;
        assert!(
            matches!(closed, Ok(Ok(()))),
            "the close waited for the worker: {closed:?}"
        );
        assert!(
            !manager.local.has_session(&text).await.unwrap(),
            "the worker's handle stayed"
        );
        handshake.abort();
    }

    /// A close while another call holds the local manager's map (a
    /// request looking up its worker) returns at once all the same; the
    /// worker's handle goes as soon as the map is free.
    #[tokio::test(start_paused = true)]
    async fn a_close_while_the_local_map_is_held_returns_at_once() {
        let (_clock, _engine, _sessions, manager, text, _transport) =
            one_session(Duration::from_secs(60)).await;
        let held = manager.local.sessions.read().await;
        let closed = tokio::time::timeout(Duration::from_millis(1), manager.close_session(&text)).await;
        assert!(
            matches!(closed, Ok(Ok(()))),
            "the close waited for the map: {closed:?}"
        );
        assert!(held.contains_key(&text), "removed while the map was held");
        drop(held);
        for _ in 0..1_000 {
            if !manager.local.has_session(&text).await.unwrap() {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(
            !manager.local.has_session(&text).await.unwrap(),
            "the handle stayed once the map was free"
        );
    }

    /// A `DELETE` whose client goes away while the session's worker is
    /// slow to take its close still deletes the session from the store.
    /// rmcp's `DELETE` awaits `close_session`, then the store's `delete`:
    /// a close that waited for the worker (up to a second) was a
    /// window in which a dropped `DELETE` (its client disconnected, a
    /// proxy's timeout) deleted nothing, and the next request with the id
    /// restored the session its client had ended.
    #[tokio::test(start_paused = true)]
    async fn a_delete_dropped_while_the_worker_is_slow_still_deletes() {
        let (_clock, _engine, sessions, manager, text, _transport) =
            one_session(Duration::from_secs(60)).await;
        let handshake = stuck_worker(&manager, &text).await;
        // rmcp's `handle_delete`, dropped 1 ms in.
        let delete = async {
            manager.close_session(&text).await.expect("close");
            sessions.delete(&text).await.expect("delete");
        };
        let _ = tokio::time::timeout(Duration::from_millis(1), delete).await;
        assert!(
            sessions.load(&text).await.expect("load").is_none(),
            "the dropped DELETE left the session in the store"
        );
        handshake.abort();
    }

    /// Where a test stops [`McpSessionManager::has_session`]: it says it
    /// arrived, then waits while the test holds `gate`.
    #[derive(Debug, Default)]
    pub(super) struct Pause {
        arrived: tokio::sync::Notify,
        gate: tokio::sync::Mutex<()>,
    }

    impl Pause {
        pub(super) async fn here(&self) {
            self.arrived.notify_one();
            drop(self.gate.lock().await);
        }
    }

    /// A request that checked for a restore just before one began here, and
    /// asks the local manager just after it listed the restored worker, must
    /// still wait for the replayed handshake: routed to the worker before
    /// `initialize`, it would become its first event and the restore would
    /// fail (HTTP 500).
    #[tokio::test]
    async fn a_request_that_checked_just_before_a_restore_waits_for_its_handshake() {
        use rmcp::model::{ClientNotification, InitializedNotification};

        let engine = Engine::open(Config::development()).expect("engine");
        let (text, _creator_transport) = created_elsewhere(&engine).await;
        // Another process on the same store: a request for the session has
        // found no restore under way, and stops before the local lookup.
        let sessions = McpSessions::new(engine.clone(), McpConfig::default()).expect("sessions");
        let manager = sessions.session_manager();
        let gate = manager.pause.gate.lock().await;
        let request = tokio::spawn({
            let (manager, text) = (Arc::clone(&manager), text.clone());
            async move { manager.has_session(&text).await.expect("has_session") }
        });
        manager.pause.arrived.notified().await;
        // rmcp restores the session for another request: the worker is listed.
        let outcome = manager.restore_session(text.clone()).await.expect("restore");
        let RestoreOutcome::Restored(_transport) = outcome else {
            panic!("not restored");
        };
        drop(gate);
        settle().await;
        assert!(
            !request.is_finished(),
            "answered before the replayed handshake: {:?}",
            request.await
        );
        // The replayed `notifications/initialized` ends the restore.
        let initialized = ClientJsonRpcMessage::notification(ClientNotification::InitializedNotification(
            InitializedNotification::default(),
        ));
        manager.accept_message(&text, initialized).await.expect("accept");
        let served = tokio::time::timeout(Duration::from_secs(60), request)
            .await
            .expect("answered once the restore ended")
            .expect("the request's task");
        assert!(served, "the restored session is served here");
    }

    /// A client's DELETE that lands while a restore of its session starts
    /// the worker here leaves nothing served: the restore checked for a
    /// DELETE, then tracked the session; a DELETE between the two found
    /// nothing tracked to forget, and the restored worker was then tracked,
    /// served from touch coalescing for up to a touch interval.
    #[tokio::test]
    async fn a_delete_during_a_restore_leaves_nothing_served() {
        use rmcp::transport::streamable_http_server::session::SessionStore as _;

        let engine = Engine::open(Config::development()).expect("engine");
        let (text, _creator_transport) = created_elsewhere(&engine).await;
        let sessions = McpSessions::new(engine.clone(), McpConfig::default()).expect("sessions");
        let manager = sessions.session_manager();
        let gate = manager.restore_pause.gate.lock().await;
        let restore = tokio::spawn({
            let (manager, text) = (Arc::clone(&manager), text.clone());
            async move { manager.restore_session(text).await.map(|_| ()) }
        });
        manager.restore_pause.arrived.notified().await;
        sessions.delete(&text).await.expect("delete");
        drop(gate);
        restore.await.expect("the restore's task").expect("restore");
        assert_eq!(sessions.served_here(), 0, "a deleted session is tracked here");
    }

    /// A `create_session` that never gets its worker (its request cancelled
    /// while the local manager was busy; the same cleanup serves a local
    /// manager that refuses the id) leaves nothing behind: no touch entry,
    /// which no close would ever remove, and no pending record in the store
    /// under an id nobody was given.
    #[tokio::test]
    async fn a_create_that_gets_no_worker_leaves_nothing_behind() {
        let engine = Engine::open(Config::development()).expect("engine");
        let sessions = McpSessions::new(engine.clone(), McpConfig::default()).expect("sessions");
        let manager = sessions.session_manager();
        let busy = manager.local.sessions.write().await;
        let create = tokio::spawn({
            let manager = Arc::clone(&manager);
            async move { manager.create_session().await.map(|(id, _)| id) }
        });
        // Stored, and waiting for the local manager.
        for _ in 0..1_000 {
            if engine.len() == 1 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(engine.len(), 1, "the pending record is stored first");
        create.abort();
        assert!(create.await.expect_err("cancelled").is_cancelled());
        drop(busy);

        assert_eq!(sessions.served_here(), 0, "a touch entry no close will remove");
        for _ in 0..1_000 {
            if engine.is_empty() {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(engine.is_empty(), "a pending record under an id nobody has");
    }

    /// Two restores of one id at once (two services sharing one manager;
    /// rmcp runs one at a time per id only within a service): the one
    /// that marked the id first can lose the local manager's race to the
    /// other. The winner's worker then waits for its replayed handshake,
    /// and the mark must stay until that arrives; the loser's end took it
    /// away, and a request could reach the half-started worker first.
    #[tokio::test(start_paused = true)]
    async fn a_restore_that_loses_the_race_leaves_the_winners_mark() {
        let engine = Engine::open(Config::development()).expect("engine");
        let (text, _creator) = created_elsewhere(&engine).await;
        let sessions = McpSessions::new(engine, McpConfig::default()).expect("sessions");
        let manager = sessions.session_manager();
        // The first restore marks the id; its local restore is still to come.
        let first = manager.mark_restore(&text);
        // The second wins the local manager's race...
        let second = manager.restore_session(text.clone()).await.expect("restore");
        assert!(matches!(second, RestoreOutcome::Restored(_)));
        // ...and the first, told the worker is already there, ends.
        drop(first);
        assert!(
            manager.restore_under_way(&text).is_some(),
            "the winner's worker waits for its handshake unmarked"
        );
    }

    /// A `restore_session` cancelled while it waits for the local manager
    /// (its request dropped: the client went away) leaves no restore mark:
    /// a mark nothing ends would turn the fast path off for every request
    /// (`restoring_count` above zero) and make the next request for the id
    /// wait [`RESTORE_WAIT_MAX`] for a restore that never ends.
    #[tokio::test(start_paused = true)]
    async fn a_restore_cancelled_before_its_worker_starts_leaves_no_mark() {
        let engine = Engine::open(Config::development()).expect("engine");
        let sessions = McpSessions::new(engine, McpConfig::default()).expect("sessions");
        let manager = sessions.session_manager();
        let text: RmcpId = Arc::from(SessionId::random().expect("id").to_string());
        let busy = manager.local.sessions.write().await;
        let restore = tokio::spawn({
            let (manager, text) = (Arc::clone(&manager), text.clone());
            async move { manager.restore_session(text).await.map(|_| ()) }
        });
        // Marked, and waiting for the local manager.
        until_marked(&manager, &text).await;
        restore.abort();
        assert!(restore.await.expect_err("cancelled").is_cancelled());
        drop(busy);

        assert_eq!(manager.restoring.len(), 0, "the cancelled restore's mark is left");
        assert_eq!(
            manager.restoring_count.load(Ordering::Acquire),
            0,
            "the fast path stays off for every request"
        );
        // The next request for the id is answered at once: no worker here.
        let asked = tokio::time::Instant::now();
        assert!(!manager.has_session(&text).await.expect("has_session"));
        assert_eq!(
            asked.elapsed(),
            Duration::ZERO,
            "waited for a restore that had ended"
        );
    }

    /// A client's `DELETE` that lands while the restore of its session
    /// waits for the local manager (its `load` already read the session,
    /// and the check before the worker starts found no delete): once the
    /// worker has started, the restore closes it and answers "not here",
    /// so the deleted session is not served from the touch coalescing.
    #[tokio::test(start_paused = true)]
    async fn a_delete_while_the_worker_starts_is_not_undone() {
        let engine = Engine::open(Config::development()).expect("engine");
        let (text, _creator_transport) = created_elsewhere(&engine).await;
        // Another process restores it for a request.
        let sessions = McpSessions::new(engine.clone(), McpConfig::default()).expect("sessions");
        let manager = sessions.session_manager();
        let busy = manager.local.sessions.write().await;
        let restore = tokio::spawn({
            let (manager, text) = (Arc::clone(&manager), text.clone());
            async move { manager.restore_session(text).await }
        });
        until_marked(&manager, &text).await;
        // The client's DELETE reaches this process meanwhile.
        sessions.delete(&text).await.expect("delete");
        drop(busy);
        let outcome = restore.await.expect("the restore's task").expect("restore");
        assert!(
            matches!(outcome, RestoreOutcome::NotSupported),
            "the deleted session was restored"
        );
        assert!(
            !manager.local.has_session(&text).await.expect("has_session"),
            "its worker runs"
        );
        assert_eq!(sessions.served_here(), 0, "served from the touch coalescing");
        assert!(!manager.has_session(&text).await.expect("has_session"));
    }

    /// A restore whose request was cancelled after its worker started
    /// (the replayed handshake never came) is cleared by the next request
    /// for the id once it has waited [`RESTORE_WAIT_MAX`]: the mark ends
    /// and the half-started worker is closed, so rmcp's own restore can run.
    /// Both stayed: every later request waited the full wait, and rmcp's
    /// restore was refused as already present (HTTP 500).
    #[tokio::test(start_paused = true)]
    async fn a_restore_abandoned_after_its_worker_started_is_cleared() {
        let (_clock, engine, _sessions, _manager, text, _transport) =
            one_session(Duration::from_secs(600)).await;
        let other =
            McpSessions::new(engine, McpConfig::with_timeout(Duration::from_secs(600))).expect("sessions");
        let manager = other.session_manager();
        let abandoned = manager.restore_session(text.clone()).await.expect("restore");
        assert!(matches!(abandoned, RestoreOutcome::Restored(_)));
        drop(abandoned);
        assert_eq!(other.served_here(), 1, "tracked while restored");
        assert!(
            !manager.has_session(&text).await.expect("has_session"),
            "not served by a worker whose handshake never came"
        );
        assert_eq!(
            other.served_here(),
            0,
            "no worker task will close it: not counted as served here"
        );
        let again = manager.restore_session(text.clone()).await.expect("restore");
        assert!(
            matches!(again, RestoreOutcome::Restored(_)),
            "rmcp's own restore refused after the wait"
        );
    }

    /// As above, with the abandoned worker's task doing what rmcp's does
    /// when its transport closes: it calls `close_session` for the id. That
    /// close, keyed only by the id, came after the wait had already given
    /// the session back to rmcp, and tore down the restore that followed
    /// (its mark, its tracking and its new worker: HTTP 500 for the
    /// client). The wait now ends once that close has come.
    #[tokio::test(start_paused = true)]
    async fn the_abandoned_workers_own_close_spares_the_next_restore() {
        use rmcp::transport::Transport as _;
        let (_clock, engine, _sessions, _manager, text, _transport) =
            one_session(Duration::from_secs(600)).await;
        let other =
            McpSessions::new(engine, McpConfig::with_timeout(Duration::from_secs(600))).expect("sessions");
        let manager = Arc::new(other.session_manager());
        let RestoreOutcome::Restored(mut abandoned) =
            manager.restore_session(text.clone()).await.expect("restore")
        else {
            panic!("not restored");
        };
        let worker = {
            let (manager, text) = (Arc::clone(&manager), text.clone());
            tokio::spawn(async move {
                while abandoned.receive().await.is_some() {}
                let _ = manager.close_session(&text).await;
            })
        };
        assert!(!manager.has_session(&text).await.expect("has_session"));
        let again = manager.restore_session(text.clone()).await.expect("restore");
        assert!(
            matches!(again, RestoreOutcome::Restored(_)),
            "rmcp's own restore refused"
        );
        settle().await;
        worker.await.expect("the abandoned worker's task");
        settle().await;
        assert!(
            manager.local.has_session(&text).await.expect("has_session"),
            "the new restore's worker was closed"
        );
        assert!(
            manager.restore_under_way(&text).is_some(),
            "the new restore's mark was ended"
        );
    }

    /// A replayed handshake that lands after the wait closed its worker
    /// (the app's `initialize` slower than [`RESTORE_WAIT_MAX`]) fails, and
    /// must not end the restore's mark: the request waiting for that
    /// worker's own close went on at once, and the close, coming after the
    /// next restore had begun, tore that one down (its mark, tracking and
    /// worker). The mark now ends with the worker's close, as it does
    /// without a failed replay.
    #[tokio::test(start_paused = true)]
    async fn a_failed_replay_leaves_the_wait_for_the_workers_close() {
        use rmcp::model::{ClientNotification, InitializedNotification};
        use rmcp::transport::Transport as _;
        let (_clock, engine, _sessions, _manager, text, _transport) =
            one_session(Duration::from_secs(600)).await;
        let other =
            McpSessions::new(engine, McpConfig::with_timeout(Duration::from_secs(600))).expect("sessions");
        let manager = Arc::new(other.session_manager());
        let RestoreOutcome::Restored(mut slow) =
            manager.restore_session(text.clone()).await.expect("restore")
        else {
            panic!("not restored");
        };
        let waiter = tokio::spawn({
            let (manager, text) = (Arc::clone(&manager), text.clone());
            async move { manager.has_session(&text).await.expect("has_session") }
        });
        // The wait runs out and closes the worker; the waiter now waits for
        // the worker's task to close the id.
        tokio::time::sleep(RESTORE_WAIT_MAX + Duration::from_millis(1)).await;
        settle().await;
        assert!(!waiter.is_finished(), "waits for the worker's close");
        // The slow handshake's replay lands on the closed worker.
        let initialized = ClientJsonRpcMessage::notification(ClientNotification::InitializedNotification(
            InitializedNotification::default(),
        ));
        assert!(manager.accept_message(&text, initialized).await.is_err());
        settle().await;
        assert!(
            !waiter.is_finished(),
            "the failed replay ended the wait before the worker's close"
        );
        assert!(manager.restore_under_way(&text).is_some(), "the mark ended");
        // The worker's task ends with its close: the wait ends with it.
        while slow.receive().await.is_some() {}
        manager.close_session(&text).await.expect("close");
        assert!(!waiter.await.expect("the waiter"), "not served here");
    }

    /// Lets the spawned tasks run (time is paused: nothing else moves it).
    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_stream_keeps_the_session_alive_and_stops_when_dropped() {
        let timeout = Duration::from_secs(8);
        let (clock, engine, sessions, manager, text, _transport) = one_session(timeout).await;
        let id: SessionId = text.parse().expect("our id");

        // No requests for five timeouts, the stream open all along (the
        // engine's clock and tokio's move together, 3 s a step).
        let guard = manager.hold(&text);
        let step = Duration::from_secs(3);
        for _ in 0..14 {
            clock.advance(step);
            tokio::time::advance(step).await;
            settle().await;
            assert!(engine.peek(&id).is_ok(), "expired while its stream was open");
        }
        // About one touch a step (ticks every 2 s, delayed to the step).
        assert!(
            sessions.touch_stats().written >= 10,
            "{:?}",
            sessions.touch_stats()
        );

        // Closed: no more touches, and the session ends a timeout later.
        drop(guard);
        settle().await;
        let written = sessions.touch_stats().written;
        clock.advance(timeout + step);
        tokio::time::advance(timeout + step).await;
        settle().await;
        assert_eq!(
            sessions.touch_stats().written,
            written,
            "touched after the stream closed"
        );
        assert!(
            engine.peek(&id).is_err(),
            "still alive with no stream and no request"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn requests_closer_than_timeout_minus_interval_keep_a_session_alive() {
        let timeout = Duration::from_secs(8);
        // Touches at most every 2 s: requests less than 8 - 2 = 6 s apart
        // keep it alive.
        let (clock, _engine, sessions, manager, text, _transport) = one_session(timeout).await;
        // The worst case: a request just inside the interval (coalesced, so
        // the store's deadline stays at the last touch + 8 s), then the
        // longest allowed gap: 1.9 + 5.9 = 7.8 s after that touch.
        for (step_ms, due) in [(1_900, false), (5_900, true)].repeat(10) {
            let step = Duration::from_millis(step_ms);
            clock.advance(step);
            tokio::time::advance(step).await;
            let written = sessions.touch_stats().written;
            assert!(
                manager.has_session(&text).await.expect("has_session"),
                "expired while active"
            );
            assert_eq!(sessions.touch_stats().written, written + u64::from(due));
        }
        let stats = sessions.touch_stats();
        assert_eq!((stats.written, stats.coalesced), (10, 10), "{stats:?}");
        // Idle past the timeout: the store ends it, and so does the next request.
        clock.advance(timeout + Duration::from_millis(1));
        tokio::time::advance(timeout + Duration::from_millis(1)).await;
        assert!(!manager.has_session(&text).await.expect("has_session"));
    }

    /// A restore's touch (in rmcp's `load`) counts from when it was written,
    /// not from when the worker started (after the load, and a replayed
    /// handshake later): requests less than `timeout - touch_interval`
    /// apart keep the session alive however long the restore took. Counted
    /// from the worker's start, a request an interval after the load was
    /// coalesced and the next one, within the allowed gap, came past the
    /// store's deadline.
    #[tokio::test(start_paused = true)]
    async fn a_restored_session_counts_its_touch_from_the_load() {
        use rmcp::model::{ClientNotification, InitializedNotification};

        // Touches at most every 2 s: requests less than 6 s apart keep it.
        let timeout = Duration::from_secs(8);
        let clock = ManualClock::new(1_000_000);
        let engine = Engine::open(Config::development().clock(clock.clock())).expect("engine");
        let creator = McpSessions::new(engine.clone(), McpConfig::with_timeout(timeout)).expect("sessions");
        let (text, _creator_transport) = creator.session_manager().create_session().await.expect("create");
        creator
            .store(&text, &SessionState::new(InitializeRequestParams::default()))
            .await
            .expect("store");
        // Another process: rmcp loads the session (a touch), and its worker
        // starts half a second later.
        let sessions = McpSessions::new(engine.clone(), McpConfig::with_timeout(timeout)).expect("sessions");
        let manager = sessions.session_manager();
        sessions
            .load(&text)
            .await
            .expect("load")
            .expect("a state to replay");
        advance(&clock, Duration::from_millis(500)).await;
        let RestoreOutcome::Restored(_transport) =
            manager.restore_session(text.clone()).await.expect("restore")
        else {
            panic!("not restored");
        };
        let initialized = ClientJsonRpcMessage::notification(ClientNotification::InitializedNotification(
            InitializedNotification::default(),
        ));
        manager.accept_message(&text, initialized).await.expect("accept");
        // 2.4 s after the load's touch (1.9 s after the worker started),
        // then the longest allowed gap.
        for step_ms in [1_900, 5_900] {
            advance(&clock, Duration::from_millis(step_ms)).await;
            assert!(
                manager.has_session(&text).await.expect("has_session"),
                "expired while active ({step_ms} ms step)"
            );
        }
    }

    /// Moves the engine's clock and tokio's together, then lets the tasks run.
    async fn advance(clock: &ManualClock, by: Duration) {
        clock.advance(by);
        tokio::time::advance(by).await;
        settle().await;
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_stream_touches_when_due_whatever_touched_in_between() {
        // An interval of half the timeout (the longest a stream's task
        // waits, see the next test): a stream's touches must come at most
        // one interval apart, however other writes fall between them (a
        // task ticking on its own schedule skips a tick that comes just
        // before the touch is due, and the next one is too late).
        let config = McpConfig::with_timeout(Duration::from_secs(10)).touch_interval(Duration::from_secs(5));
        let (clock, engine, sessions, manager, text, _transport) = one_session_with(config).await;
        let id: SessionId = text.parse().expect("our id");
        advance(&clock, Duration::from_secs(1)).await;
        let _guard = manager.hold(&text);
        settle().await;
        // A write just after: the session's last activity is now at 1.01 s.
        advance(&clock, Duration::from_millis(10)).await;
        sessions
            .store(&text, &SessionState::new(InitializeRequestParams::default()))
            .await
            .expect("store");
        // The stream's task wakes at 6 s, 10 ms before a touch is due; then
        // a request comes at 6.01 s and touches.
        advance(&clock, Duration::from_millis(4_995)).await;
        assert_eq!(sessions.touch_stats().coalesced, 1, "the stream's task woke");
        advance(&clock, Duration::from_millis(5)).await;
        let written = sessions.touch_stats().written;
        assert!(manager.has_session(&text).await.expect("has_session"));
        assert_eq!(sessions.touch_stats().written, written + 1, "the request touched");
        // The task's next wake (5 s after its last, 5 ms before the touch
        // is due), then twenty seconds more of an open stream, no request.
        advance(&clock, Duration::from_millis(4_995)).await;
        for _ in 0..40 {
            advance(&clock, Duration::from_millis(500)).await;
            assert!(engine.peek(&id).is_ok(), "expired while its stream was open");
        }
    }

    /// An interval just under the timeout (which the configuration
    /// accepts): an open stream's touches still leave half the timeout for
    /// the store to take them. They came one interval after the last, so a
    /// touch that took longer than the 1 ms left expired the session of a
    /// client listening on its stream.
    #[tokio::test(start_paused = true)]
    async fn an_open_stream_touches_within_half_the_timeout_whatever_the_interval() {
        let config =
            McpConfig::with_timeout(Duration::from_secs(8)).touch_interval(Duration::from_millis(7_999));
        let (clock, _engine, sessions, manager, text, _transport) = one_session_with(config).await;
        let _guard = manager.hold(&text);
        settle().await;
        let written = sessions.touch_stats().written;
        advance(&clock, Duration::from_millis(4_100)).await;
        assert!(
            sessions.touch_stats().written > written,
            "no touch within half the timeout: {:?}",
            sessions.touch_stats()
        );
    }

    /// A response stream with nothing to send yet: a tool call still running.
    struct Silent;

    impl Stream for Silent {
        type Item = ();
        fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<()>> {
            Poll::Pending
        }
    }

    /// An open stream (a client's GET) whose session the store lost (its
    /// client's DELETE through another process, an expiry during an
    /// outage) ends when its task finds the session gone: it stayed open
    /// and silent, no fan-out and no 404 to tell the client to start again.
    #[tokio::test(start_paused = true)]
    async fn an_open_stream_ends_when_the_store_lost_its_session() {
        let timeout = Duration::from_secs(8);
        let (clock, engine, _sessions, manager, text, _transport) = one_session(timeout).await;
        let id: SessionId = text.parse().expect("our id");
        let mut stream = Held::new(Silent, manager.hold(&text));
        let listen =
            tokio::spawn(async move { std::future::poll_fn(|cx| Pin::new(&mut stream).poll_next(cx)).await });
        settle().await;
        engine.delete(&id).expect("deleted elsewhere");
        for _ in 0..6 {
            advance(&clock, Duration::from_secs(3)).await;
        }
        assert!(listen.is_finished(), "the stream stayed open");
        assert_eq!(listen.await.expect("the stream's task"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_open_past_the_timeout_keeps_its_session_alive() {
        // A tool call answered after far longer than the session's timeout:
        // its response stream (as `create_stream` wraps it) is open, and
        // nothing else comes meanwhile.
        let timeout = Duration::from_secs(8);
        let (clock, engine, sessions, _manager, text, _transport) = one_session(timeout).await;
        let id: SessionId = text.parse().expect("our id");
        let mut stream = Held::after(Silent, sessions.clone(), text.clone());
        let call =
            tokio::spawn(async move { std::future::poll_fn(|cx| Pin::new(&mut stream).poll_next(cx)).await });
        settle().await;
        for _ in 0..12 {
            advance(&clock, Duration::from_secs(3)).await;
            assert!(engine.peek(&id).is_ok(), "expired while a request was open");
        }
        assert!(
            sessions.touch_stats().written >= 5,
            "{:?}",
            sessions.touch_stats()
        );
        // The call ends (its stream dropped): no more touches.
        call.abort();
        let _ = call.await;
        settle().await;
        advance(&clock, timeout + Duration::from_secs(3)).await;
        assert!(engine.peek(&id).is_err(), "touched after the request ended");
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_that_comes_just_before_a_touch_is_due_keeps_its_session_alive() {
        // An interval above half the timeout (8 s, 5 s): a request at 4.9 s
        // is not touched (not due), and its stream's task must start when
        // the touch falls due (5 s), not one interval after the request
        // (9.9 s, past the deadline at 8 s).
        let config = McpConfig::with_timeout(Duration::from_secs(8)).touch_interval(Duration::from_secs(5));
        an_open_request_keeps_its_session_alive(config, Duration::from_millis(4_900), 20).await;
    }

    /// An interval just under the timeout (which the configuration
    /// accepts): a request's open stream touches within half the timeout
    /// of the last touch, as an open `GET` does. Its task started one
    /// interval after that touch and then waited a retry, so the first
    /// touch came after the store's deadline: the session expired under a
    /// running tool call.
    #[tokio::test(start_paused = true)]
    async fn a_request_open_with_an_interval_near_the_timeout_keeps_its_session_alive() {
        let config =
            McpConfig::with_timeout(Duration::from_secs(8)).touch_interval(Duration::from_millis(7_999));
        an_open_request_keeps_its_session_alive(config, Duration::from_millis(100), 40).await;
    }

    /// One session under `config`; `before` later a request comes
    /// (`has_session`) and its response stream stays open, silent, for
    /// `steps` half-seconds: the session never expires meanwhile.
    async fn an_open_request_keeps_its_session_alive(config: McpConfig, before: Duration, steps: usize) {
        let (clock, engine, sessions, manager, text, _transport) = one_session_with(config).await;
        let id: SessionId = text.parse().expect("our id");
        advance(&clock, before).await;
        assert!(manager.has_session(&text).await.expect("has_session"));
        let mut stream = Held::after(Silent, sessions.clone(), text.clone());
        let call =
            tokio::spawn(async move { std::future::poll_fn(|cx| Pin::new(&mut stream).poll_next(cx)).await });
        settle().await;
        for _ in 0..steps {
            advance(&clock, Duration::from_millis(500)).await;
            assert!(engine.peek(&id).is_ok(), "expired while a request was open");
        }
        call.abort();
        let _ = call.await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_short_request_starts_no_task() {
        let (_clock, _engine, sessions, _manager, text, _transport) =
            one_session(Duration::from_secs(8)).await;
        let mut stream = Held::after(futures_stream_once(), sessions.clone(), text.clone());
        let first = std::future::poll_fn(|cx| Pin::new(&mut stream).poll_next(cx)).await;
        assert_eq!(first, Some(()));
        assert!(
            stream.holding.is_none(),
            "a touching task started for a request that answered at once"
        );
    }

    /// A stream answering at once.
    fn futures_stream_once() -> impl Stream<Item = ()> + Unpin {
        struct Once(bool);
        impl Stream for Once {
            type Item = ();
            fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<()>> {
                Poll::Ready(std::mem::replace(&mut self.0, false).then_some(()))
            }
        }
        Once(true)
    }
}
