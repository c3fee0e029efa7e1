//! The backend-neutral session API, as an async trait.
//!
//! The embedded [`Engine`] implements it with futures that are ready at
//! their first poll (no allocation, no executor round trip), except that
//! with `Durability::Always` a write's future completes when its group
//! commit has made it durable: the task waits, its thread does not (the
//! engine's flusher thread runs the sync). Remote backends (Redis Cluster)
//! implement it with real I/O. On every backend a call does nothing until
//! its future is first polled: a future dropped unpolled (a `select!`
//! branch whose precondition was false, which `select!` still builds)
//! neither writes nor counts as activity. Code written against `SessionStore` switches
//! backend by configuration. Semantics every implementation keeps:
//! inactivity timeouts slide on activity (`get`, `update`, `touch`,
//! `set_ttl`, `put`, `rotate`; not `peek`, `contains`, `list`), an expired
//! session is never returned, `update` and `try_update` are atomic
//! read-modify-writes that never lose a concurrent update, `put` and
//! `rotate` are one step each (nobody sees half of one), and bad input
//! returns a typed [`Error`](crate::Error).
//!
//! The trait is implemented for `&T` of every store. It is not for
//! `Arc<T>`: on an `Arc<Engine>` with the trait in scope, the trait's async
//! methods would then shadow the engine's own; the engine and the Redis
//! store are cheap `Clone` handles instead.

use std::future::Future;

use crate::engine::Engine;
use crate::error::Result;
use crate::id::SessionId;
use crate::session::{Cursor, Op, Page, Session, SessionRef, Timeout, Updated};

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

    /// Stores the session whether or not one is there: new, or the live
    /// one's metadata and timeout replaced in one step (creation time
    /// kept); counts as activity.
    fn put(
        &self,
        id: SessionId,
        metadata: &[u8],
        timeout: Timeout,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Moves the session to a fresh random id in one step (the old id is
    /// gone, the new one holds the same metadata and times); counts as
    /// activity.
    fn rotate(&self, id: &SessionId) -> impl Future<Output = Result<SessionId>> + Send;

    /// Returns the session; counts as activity.
    fn get(&self, id: &SessionId) -> impl Future<Output = Result<Session>> + Send;

    /// Returns the session; not activity.
    fn peek(&self, id: &SessionId) -> impl Future<Output = Result<Session>> + Send;

    /// Reads the session through `f`; counts as activity, as
    /// [`get`](Self::get). The embedded engine lends the session in place
    /// (no snapshot: no copy, no reference count); the default reads a
    /// snapshot and lends that ([`Session::view`]).
    fn get_with<R, F>(&self, id: &SessionId, f: F) -> impl Future<Output = Result<R>> + Send
    where
        F: FnOnce(SessionRef<'_>) -> R + Send,
        R: Send,
    {
        let read = self.get(id);
        async move { read.await.map(|session| f(session.view())) }
    }

    /// [`get_with`](Self::get_with) without counting as activity, as
    /// [`peek`](Self::peek).
    fn peek_with<R, F>(&self, id: &SessionId, f: F) -> impl Future<Output = Result<R>> + Send
    where
        F: FnOnce(SessionRef<'_>) -> R + Send,
        R: Send,
    {
        let read = self.peek(id);
        async move { read.await.map(|session| f(session.view())) }
    }

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

    /// [`get_many`](Self::get_many) reading each live session through `f`,
    /// as [`get_with`](Self::get_with) does for one; results in order, `f`
    /// called once per live session in the order of `ids`. The embedded
    /// engine lends each session in place; the default reads the snapshots
    /// with `get_many` and lends those.
    fn get_many_with<R, F>(&self, ids: &[SessionId], mut f: F) -> impl Future<Output = Vec<Result<R>>> + Send
    where
        F: FnMut(SessionRef<'_>) -> R + Send,
        R: Send,
    {
        let read = self.get_many(ids);
        async move {
            let sessions = read.await;
            sessions
                .into_iter()
                .map(|session| session.map(|session| f(session.view())))
                .collect()
        }
    }

    /// Replaces the metadata with `f(current)` atomically; counts as
    /// activity. `f` may run more than once.
    fn update<F>(&self, id: &SessionId, f: F) -> impl Future<Output = Result<Session>> + Send
    where
        F: FnMut(&[u8]) -> Vec<u8> + Send;

    /// A read-modify-write whose closure keeps, replaces or deletes the
    /// session it saw, or fails (`Ok(Err(e))`, nothing changed); `f` may
    /// run more than once. A delete applies only to the version `f` saw.
    fn try_update<F, E>(
        &self,
        id: &SessionId,
        f: F,
    ) -> impl Future<Output = Result<std::result::Result<Updated, E>>> + Send
    where
        F: FnMut(&[u8]) -> std::result::Result<Op, E> + Send,
        E: Send;

    /// Slides the deadline.
    fn touch(&self, id: &SessionId) -> impl Future<Output = Result<()>> + Send;

    /// Removes the session.
    fn delete(&self, id: &SessionId) -> impl Future<Output = Result<()>> + Send;

    /// Changes the timeout; counts as activity.
    fn set_ttl(&self, id: &SessionId, timeout: Timeout) -> impl Future<Output = Result<()>> + Send;

    /// Caps the session's lifetime: it expires `lifetime` after its creation
    /// however active it is (`Timeout::Never` lifts the cap; a cap already
    /// passed ends it). Counts as activity. New sessions get the backend's
    /// configured `max_lifetime`.
    fn set_lifetime(&self, id: &SessionId, lifetime: Timeout) -> impl Future<Output = Result<()>> + Send;

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

/// A write's outcome as its call's output: at once, in line, unless a
/// flush must cover it first (`Durability::Always`) or it failed, which
/// go through `Settle` (`settle_later`).
macro_rules! settle {
    ($engine:expr, $outcome:expr) => {
        match $outcome {
            Ok((value, None)) => Ok(value),
            outcome => $engine.settle_later(outcome).await,
        }
    };
}

/// `settle!` for a write on `id` (`settle_found_later`).
macro_rules! settle_found {
    ($engine:expr, $id:expr, $outcome:expr) => {
        match $outcome {
            Ok((value, None)) => Ok(value),
            outcome => $engine.settle_found_later($id, outcome).await,
        }
    };
}

impl SessionStore for Engine {
    #[inline]
    async fn create(&self, metadata: &[u8], timeout: Timeout) -> Result<SessionId> {
        settle!(self, self.create_pending(metadata, timeout))
    }

    #[inline]
    async fn insert(&self, id: SessionId, metadata: &[u8], timeout: Timeout) -> Result<()> {
        settle_found!(self, &id, self.insert_pending(id, metadata, timeout))
    }

    #[inline]
    async fn put(&self, id: SessionId, metadata: &[u8], timeout: Timeout) -> Result<()> {
        settle!(self, self.put_pending(id, metadata, timeout))
    }

    #[inline]
    async fn rotate(&self, id: &SessionId) -> Result<SessionId> {
        settle_found!(self, id, self.rotate_pending(id))
    }

    #[inline]
    async fn try_update<F, E>(&self, id: &SessionId, f: F) -> Result<std::result::Result<Updated, E>>
    where
        F: FnMut(&[u8]) -> std::result::Result<Op, E> + Send,
        E: Send,
    {
        settle_found!(self, id, self.try_update_pending(id, f))
    }

    #[inline]
    async fn get(&self, id: &SessionId) -> Result<Session> {
        Engine::get(self, id)
    }

    #[inline]
    async fn peek(&self, id: &SessionId) -> Result<Session> {
        Engine::peek(self, id)
    }

    #[inline]
    async fn get_with<R, F>(&self, id: &SessionId, f: F) -> Result<R>
    where
        F: FnOnce(SessionRef<'_>) -> R + Send,
        R: Send,
    {
        Engine::get_with(self, id, f)
    }

    #[inline]
    async fn peek_with<R, F>(&self, id: &SessionId, f: F) -> Result<R>
    where
        F: FnOnce(SessionRef<'_>) -> R + Send,
        R: Send,
    {
        Engine::peek_with(self, id, f)
    }

    #[inline]
    async fn get_many(&self, ids: &[SessionId]) -> Vec<Result<Session>> {
        Engine::get_many(self, ids)
    }

    #[inline]
    async fn get_many_with<R, F>(&self, ids: &[SessionId], f: F) -> Vec<Result<R>>
    where
        F: FnMut(SessionRef<'_>) -> R + Send,
        R: Send,
    {
        Engine::get_many_with(self, ids, f)
    }

    #[inline]
    async fn update<F>(&self, id: &SessionId, f: F) -> Result<Session>
    where
        F: FnMut(&[u8]) -> Vec<u8> + Send,
    {
        settle_found!(self, id, self.update_pending(id, f))
    }

    #[inline]
    async fn touch(&self, id: &SessionId) -> Result<()> {
        Engine::touch(self, id)
    }

    #[inline]
    async fn delete(&self, id: &SessionId) -> Result<()> {
        settle_found!(
            self,
            id,
            self.delete_pending(id).map(|(_, pending)| ((), pending))
        )
    }

    #[inline]
    async fn set_ttl(&self, id: &SessionId, timeout: Timeout) -> Result<()> {
        settle_found!(self, id, self.set_ttl_pending(id, timeout))
    }

    async fn set_lifetime(&self, id: &SessionId, lifetime: Timeout) -> Result<()> {
        settle_found!(self, id, self.set_lifetime_pending(id, lifetime))
    }

    #[inline]
    async fn contains(&self, id: &SessionId) -> Result<bool> {
        Ok(Engine::contains(self, id))
    }

    #[inline]
    async fn len(&self) -> Result<usize> {
        Ok(Engine::len(self))
    }

    #[inline]
    async fn list(&self, cursor: Cursor, limit: usize) -> Result<Page> {
        Engine::list(self, cursor, limit)
    }

    #[inline]
    async fn cleanup_expired(&self) -> Result<usize> {
        Ok(Engine::cleanup_expired(self))
    }
}

/// A shared reference to a store is a store (every call goes to `T`).
impl<T: SessionStore> SessionStore for &T {
    #[inline]
    fn create(&self, metadata: &[u8], timeout: Timeout) -> impl Future<Output = Result<SessionId>> + Send {
        T::create(self, metadata, timeout)
    }

    #[inline]
    fn insert(
        &self,
        id: SessionId,
        metadata: &[u8],
        timeout: Timeout,
    ) -> impl Future<Output = Result<()>> + Send {
        T::insert(self, id, metadata, timeout)
    }

    #[inline]
    fn put(
        &self,
        id: SessionId,
        metadata: &[u8],
        timeout: Timeout,
    ) -> impl Future<Output = Result<()>> + Send {
        T::put(self, id, metadata, timeout)
    }

    #[inline]
    fn rotate(&self, id: &SessionId) -> impl Future<Output = Result<SessionId>> + Send {
        T::rotate(self, id)
    }

    #[inline]
    fn get(&self, id: &SessionId) -> impl Future<Output = Result<Session>> + Send {
        T::get(self, id)
    }

    #[inline]
    fn peek(&self, id: &SessionId) -> impl Future<Output = Result<Session>> + Send {
        T::peek(self, id)
    }

    #[inline]
    fn get_with<R, F>(&self, id: &SessionId, f: F) -> impl Future<Output = Result<R>> + Send
    where
        F: FnOnce(SessionRef<'_>) -> R + Send,
        R: Send,
    {
        T::get_with(self, id, f)
    }

    #[inline]
    fn peek_with<R, F>(&self, id: &SessionId, f: F) -> impl Future<Output = Result<R>> + Send
    where
        F: FnOnce(SessionRef<'_>) -> R + Send,
        R: Send,
    {
        T::peek_with(self, id, f)
    }

    #[inline]
    fn touch(&self, id: &SessionId) -> impl Future<Output = Result<()>> + Send {
        T::touch(self, id)
    }

    #[inline]
    fn delete(&self, id: &SessionId) -> impl Future<Output = Result<()>> + Send {
        T::delete(self, id)
    }

    #[inline]
    fn set_ttl(&self, id: &SessionId, timeout: Timeout) -> impl Future<Output = Result<()>> + Send {
        T::set_ttl(self, id, timeout)
    }

    #[inline]
    fn set_lifetime(&self, id: &SessionId, lifetime: Timeout) -> impl Future<Output = Result<()>> + Send {
        T::set_lifetime(self, id, lifetime)
    }

    #[inline]
    fn contains(&self, id: &SessionId) -> impl Future<Output = Result<bool>> + Send {
        T::contains(self, id)
    }

    #[inline]
    fn len(&self) -> impl Future<Output = Result<usize>> + Send {
        T::len(self)
    }

    #[inline]
    fn is_empty(&self) -> impl Future<Output = Result<bool>> + Send {
        T::is_empty(self)
    }

    #[inline]
    fn list(&self, cursor: Cursor, limit: usize) -> impl Future<Output = Result<Page>> + Send {
        T::list(self, cursor, limit)
    }

    #[inline]
    fn cleanup_expired(&self) -> impl Future<Output = Result<usize>> + Send {
        T::cleanup_expired(self)
    }

    #[inline]
    fn get_many(&self, ids: &[SessionId]) -> impl Future<Output = Vec<Result<Session>>> + Send {
        T::get_many(self, ids)
    }

    #[inline]
    fn get_many_with<R, F>(&self, ids: &[SessionId], f: F) -> impl Future<Output = Vec<Result<R>>> + Send
    where
        F: FnMut(SessionRef<'_>) -> R + Send,
        R: Send,
    {
        T::get_many_with(self, ids, f)
    }

    #[inline]
    fn update<F>(&self, id: &SessionId, f: F) -> impl Future<Output = Result<Session>> + Send
    where
        F: FnMut(&[u8]) -> Vec<u8> + Send,
    {
        T::update(self, id, f)
    }

    #[inline]
    fn try_update<F, E>(
        &self,
        id: &SessionId,
        f: F,
    ) -> impl Future<Output = Result<std::result::Result<Updated, E>>> + Send
    where
        F: FnMut(&[u8]) -> std::result::Result<Op, E> + Send,
        E: Send,
    {
        T::try_update(self, id, f)
    }
}
