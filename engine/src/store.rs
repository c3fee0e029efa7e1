//! The backend-neutral session API, as an async trait.
//!
//! The embedded [`Engine`] implements it with futures that are ready at once
//! (no allocation, no executor round trip), except that with
//! `Durability::Always` a write's future completes when its group commit
//! has made it durable: the task waits, its thread does not (the engine's
//! flusher thread runs the sync). Remote backends (Redis Cluster) implement
//! it with real I/O. Code written against `SessionStore` switches
//! backend by configuration. Semantics every implementation keeps:
//! inactivity timeouts slide on activity (`get`, `update`, `touch`,
//! `set_ttl`; not `peek`, `contains`, `list`), an expired session is never
//! returned, `update` is an atomic read-modify-write that never loses a
//! concurrent update, and bad input returns a typed [`Error`](crate::Error).

use std::future::{ready, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::engine::{outcome_unknown, Engine};
use crate::error::Result;
use crate::id::SessionId;
use crate::persist::{AsyncWaiter, ShardLog};
use crate::session::{Cursor, Page, Session, Timeout};

/// A session backend. See the module docs for the shared semantics.
pub trait SessionStore: Send + Sync {
    /// Creates a session with a fresh random id.
    fn create(&self, metadata: &[u8], timeout: Timeout) -> impl Future<Output = Result<SessionId>> + Send;

    /// Stores a session under a caller-chosen id; `AlreadyExists` if taken.
    fn insert(
        &self,
        id: SessionId,
        metadata: &[u8],
        timeout: Timeout,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Returns the session; counts as activity.
    fn get(&self, id: &SessionId) -> impl Future<Output = Result<Session>> + Send;

    /// Returns the session; not activity.
    fn peek(&self, id: &SessionId) -> impl Future<Output = Result<Session>> + Send;

    /// Replaces the metadata with `f(current)` atomically; counts as
    /// activity. `f` may run more than once.
    fn update<F>(&self, id: &SessionId, f: F) -> impl Future<Output = Result<Session>> + Send
    where
        F: FnMut(&[u8]) -> Vec<u8> + Send;

    /// Slides the deadline.
    fn touch(&self, id: &SessionId) -> impl Future<Output = Result<()>> + Send;

    /// Removes the session.
    fn delete(&self, id: &SessionId) -> impl Future<Output = Result<()>> + Send;

    /// Changes the timeout; counts as activity.
    fn set_ttl(&self, id: &SessionId, timeout: Timeout) -> impl Future<Output = Result<()>> + Send;

    /// True if a live session has this id; not activity.
    fn contains(&self, id: &SessionId) -> impl Future<Output = Result<bool>> + Send;

    /// Sessions held (a backend may count expired ones not yet reclaimed).
    fn len(&self) -> impl Future<Output = Result<usize>> + Send;

    /// True if no sessions are held.
    fn is_empty(&self) -> impl Future<Output = Result<bool>> + Send {
        let len = self.len();
        async move { len.await.map(|n| n == 0) }
    }

    /// One page of a listing.
    fn list(&self, cursor: Cursor, limit: usize) -> impl Future<Output = Result<Page>> + Send;

    /// Reclaims expired sessions now, returning how many (0 for a backend
    /// that expires natively).
    fn cleanup_expired(&self) -> impl Future<Output = Result<usize>> + Send;
}

/// A write's outcome, delivered once the write is durable: at once unless the
/// engine's durability is `Always`, else when a flush covers the write's log
/// position (see `ShardLog::poll_durable`).
pub(crate) struct Settle<T> {
    outcome: Option<Result<T>>,
    wait: Option<Wait>,
}

struct Wait {
    log: Arc<ShardLog>,
    position: u64,
    waiter: Option<Arc<AsyncWaiter>>,
}

impl<T> Settle<T> {
    pub(crate) fn ready(outcome: Result<T>) -> Self {
        Self {
            outcome: Some(outcome),
            wait: None,
        }
    }

    pub(crate) fn after(value: T, log: Arc<ShardLog>, position: u64) -> Self {
        Self {
            outcome: Some(Ok(value)),
            wait: Some(Wait {
                log,
                position,
                waiter: None,
            }),
        }
    }
}

impl<T: Unpin> Future for Settle<T> {
    type Output = Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        let this = self.get_mut();
        if let Some(wait) = &mut this.wait {
            match wait.log.poll_durable(wait.position, &mut wait.waiter, cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(())) => this.wait = None,
                Poll::Ready(Err(e)) => {
                    this.wait = None;
                    this.outcome = None;
                    return Poll::Ready(Err(outcome_unknown(e)));
                }
            }
        }
        Poll::Ready(this.outcome.take().expect("Settle polled after it completed"))
    }
}

impl SessionStore for Engine {
    #[inline]
    fn create(&self, metadata: &[u8], timeout: Timeout) -> impl Future<Output = Result<SessionId>> + Send {
        self.settle_later(self.create_pending(metadata, timeout))
    }

    #[inline]
    fn insert(
        &self,
        id: SessionId,
        metadata: &[u8],
        timeout: Timeout,
    ) -> impl Future<Output = Result<()>> + Send {
        self.settle_later(self.insert_pending(id, metadata, timeout))
    }

    #[inline]
    fn get(&self, id: &SessionId) -> impl Future<Output = Result<Session>> + Send {
        ready(Engine::get(self, id))
    }

    #[inline]
    fn peek(&self, id: &SessionId) -> impl Future<Output = Result<Session>> + Send {
        ready(Engine::peek(self, id))
    }

    #[inline]
    fn update<F>(&self, id: &SessionId, f: F) -> impl Future<Output = Result<Session>> + Send
    where
        F: FnMut(&[u8]) -> Vec<u8> + Send,
    {
        self.settle_later(self.update_pending(id, f))
    }

    #[inline]
    fn touch(&self, id: &SessionId) -> impl Future<Output = Result<()>> + Send {
        ready(Engine::touch(self, id))
    }

    #[inline]
    fn delete(&self, id: &SessionId) -> impl Future<Output = Result<()>> + Send {
        self.settle_later(self.delete_pending(id).map(|(_, pending)| ((), pending)))
    }

    #[inline]
    fn set_ttl(&self, id: &SessionId, timeout: Timeout) -> impl Future<Output = Result<()>> + Send {
        self.settle_later(self.set_ttl_pending(id, timeout))
    }

    #[inline]
    fn contains(&self, id: &SessionId) -> impl Future<Output = Result<bool>> + Send {
        ready(Ok(Engine::contains(self, id)))
    }

    #[inline]
    fn len(&self) -> impl Future<Output = Result<usize>> + Send {
        ready(Ok(Engine::len(self)))
    }

    #[inline]
    fn list(&self, cursor: Cursor, limit: usize) -> impl Future<Output = Result<Page>> + Send {
        ready(Engine::list(self, cursor, limit))
    }

    #[inline]
    fn cleanup_expired(&self) -> impl Future<Output = Result<usize>> + Send {
        ready(Ok(Engine::cleanup_expired(self)))
    }
}
