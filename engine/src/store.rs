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

use crate::engine::Engine;
use crate::error::Result;
use crate::id::SessionId;
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

    /// `get` of many sessions, results in order. Backends batch it (the
    /// engine overlaps the lookups' cache misses, Redis pipelines them per
    /// master); the default runs the gets one after another.
    fn get_many(&self, ids: &[SessionId]) -> impl Future<Output = Vec<Result<Session>>> + Send {
        async move {
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                out.push(self.get(id).await);
            }
            out
        }
    }

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
    fn get_many(&self, ids: &[SessionId]) -> impl Future<Output = Vec<Result<Session>>> + Send {
        ready(Engine::get_many(self, ids))
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
