//! Backends the load runs against, behind the engine's async
//! [`SessionStore`] trait.
//!
//! `--backend embedded` is the in-process [`Engine`]; `--backend null`
//! answers every call at once without storing anything, which measures the
//! loadgen's own cost per operation; `--backend redis://...` is reserved for
//! the `session-redis` crate: it plugs in by implementing [`Backend`] for its
//! store (with `READY_FUTURES = false`, so that clients run as tokio tasks)
//! and adding one arm to the dispatch in `run.rs`.

use std::fmt;
use std::future::{ready, Future};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use session_engine::{Cursor, Engine, Error, Page, Result, Session, SessionId, SessionStore, Stats, Timeout};

use crate::units::ParseError;

/// Which backend a run uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendSpec {
    /// The in-process engine.
    Embedded,
    /// No backend: every call returns at once (loadgen overhead).
    Null,
    /// A Redis (Cluster) URL, for the `session-redis` backend.
    Redis(String),
}

impl FromStr for BackendSpec {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        let text = s.trim();
        match text {
            "embedded" | "engine" => Ok(BackendSpec::Embedded),
            "null" => Ok(BackendSpec::Null),
            url if url.starts_with("redis://") || url.starts_with("rediss://") => {
                Ok(BackendSpec::Redis(url.to_owned()))
            }
            _ => Err(ParseError::new(
                "backend",
                s,
                "expected embedded, null or a redis:// URL",
            )),
        }
    }
}

impl fmt::Display for BackendSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendSpec::Embedded => f.write_str("embedded"),
            BackendSpec::Null => f.write_str("null"),
            BackendSpec::Redis(url) => f.write_str(url),
        }
    }
}

/// A store the loadgen can drive.
pub trait Backend: SessionStore + 'static {
    /// True if every future the store returns is ready when first polled
    /// (then one client per worker thread runs without an executor).
    const READY_FUTURES: bool;

    /// Called with the load's time origin just before clients start.
    fn load_started(&self, _origin: Instant) {}

    /// Engine counters, for backends that keep them.
    fn stats(&self) -> Option<Stats> {
        None
    }
}

impl Backend for Engine {
    const READY_FUTURES: bool = true;

    fn stats(&self) -> Option<Stats> {
        Some(Engine::stats(self))
    }
}

/// Answers every call at once without storing anything: the loop, the
/// generators and the histograms cost what a run against it measures.
#[derive(Clone, Copy, Debug, Default)]
pub struct NullStore;

impl Backend for NullStore {
    const READY_FUTURES: bool = true;
}

impl SessionStore for NullStore {
    fn create(&self, _metadata: &[u8], _timeout: Timeout) -> impl Future<Output = Result<SessionId>> + Send {
        ready(Ok(SessionId::from_bytes([7; 16])))
    }

    fn insert(
        &self,
        _id: SessionId,
        _metadata: &[u8],
        _timeout: Timeout,
    ) -> impl Future<Output = Result<()>> + Send {
        ready(Ok(()))
    }

    fn get(&self, _id: &SessionId) -> impl Future<Output = Result<Session>> + Send {
        ready(Err(Error::NotFound))
    }

    fn peek(&self, _id: &SessionId) -> impl Future<Output = Result<Session>> + Send {
        ready(Err(Error::NotFound))
    }

    fn update<F>(&self, _id: &SessionId, _f: F) -> impl Future<Output = Result<Session>> + Send
    where
        F: FnMut(&[u8]) -> Vec<u8> + Send,
    {
        ready(Err(Error::NotFound))
    }

    fn touch(&self, _id: &SessionId) -> impl Future<Output = Result<()>> + Send {
        ready(Ok(()))
    }

    fn delete(&self, _id: &SessionId) -> impl Future<Output = Result<()>> + Send {
        ready(Ok(()))
    }

    fn set_ttl(&self, _id: &SessionId, _timeout: Timeout) -> impl Future<Output = Result<()>> + Send {
        ready(Ok(()))
    }

    fn contains(&self, _id: &SessionId) -> impl Future<Output = Result<bool>> + Send {
        ready(Ok(false))
    }

    fn len(&self) -> impl Future<Output = Result<usize>> + Send {
        ready(Ok(0))
    }

    fn list(&self, _cursor: Cursor, _limit: usize) -> impl Future<Output = Result<Page>> + Send {
        ready(Ok(Page {
            sessions: Vec::new(),
            next: None,
        }))
    }

    fn cleanup_expired(&self) -> impl Future<Output = Result<usize>> + Send {
        ready(Ok(0))
    }
}

/// A store that freezes once: the first operation issued `at` after the load
/// starts blocks its caller for `length` before it runs. It stands for a GC
/// pause, an fsync stall or a network hiccup, and lets tests check that such a
/// stall shows in the latency tail (`--inject-stall AT:LENGTH`).
pub struct Stalling<S> {
    inner: Arc<S>,
    at: Duration,
    length: Duration,
    origin: OnceLock<Instant>,
    fired: AtomicBool,
}

impl<S> Stalling<S> {
    /// Wraps `inner`.
    pub fn new(inner: Arc<S>, at: Duration, length: Duration) -> Self {
        Self {
            inner,
            at,
            length,
            origin: OnceLock::new(),
            fired: AtomicBool::new(false),
        }
    }

    /// The wrapped store.
    #[must_use]
    pub fn inner(&self) -> &Arc<S> {
        &self.inner
    }

    fn maybe_stall(&self) {
        if self.fired.load(Ordering::Relaxed) {
            return;
        }
        if let Some(origin) = self.origin.get() {
            if origin.elapsed() >= self.at && !self.fired.swap(true, Ordering::Relaxed) {
                std::thread::sleep(self.length);
            }
        }
    }
}

impl<S: Backend> Backend for Stalling<S> {
    const READY_FUTURES: bool = S::READY_FUTURES;

    fn load_started(&self, origin: Instant) {
        let _ = self.origin.set(origin);
        self.inner.load_started(origin);
    }

    fn stats(&self) -> Option<Stats> {
        self.inner.stats()
    }
}

impl<S: SessionStore> SessionStore for Stalling<S> {
    fn create(&self, metadata: &[u8], timeout: Timeout) -> impl Future<Output = Result<SessionId>> + Send {
        self.maybe_stall();
        self.inner.create(metadata, timeout)
    }

    fn insert(
        &self,
        id: SessionId,
        metadata: &[u8],
        timeout: Timeout,
    ) -> impl Future<Output = Result<()>> + Send {
        self.maybe_stall();
        self.inner.insert(id, metadata, timeout)
    }

    fn get(&self, id: &SessionId) -> impl Future<Output = Result<Session>> + Send {
        self.maybe_stall();
        self.inner.get(id)
    }

    fn peek(&self, id: &SessionId) -> impl Future<Output = Result<Session>> + Send {
        self.maybe_stall();
        self.inner.peek(id)
    }

    fn update<F>(&self, id: &SessionId, f: F) -> impl Future<Output = Result<Session>> + Send
    where
        F: FnMut(&[u8]) -> Vec<u8> + Send,
    {
        self.maybe_stall();
        self.inner.update(id, f)
    }

    fn touch(&self, id: &SessionId) -> impl Future<Output = Result<()>> + Send {
        self.maybe_stall();
        self.inner.touch(id)
    }

    fn delete(&self, id: &SessionId) -> impl Future<Output = Result<()>> + Send {
        self.maybe_stall();
        self.inner.delete(id)
    }

    fn set_ttl(&self, id: &SessionId, timeout: Timeout) -> impl Future<Output = Result<()>> + Send {
        self.maybe_stall();
        self.inner.set_ttl(id, timeout)
    }

    fn contains(&self, id: &SessionId) -> impl Future<Output = Result<bool>> + Send {
        self.maybe_stall();
        self.inner.contains(id)
    }

    fn len(&self) -> impl Future<Output = Result<usize>> + Send {
        self.inner.len()
    }

    fn list(&self, cursor: Cursor, limit: usize) -> impl Future<Output = Result<Page>> + Send {
        self.maybe_stall();
        self.inner.list(cursor, limit)
    }

    fn cleanup_expired(&self) -> impl Future<Output = Result<usize>> + Send {
        self.inner.cleanup_expired()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_specs_parse() {
        assert_eq!("embedded".parse::<BackendSpec>().unwrap(), BackendSpec::Embedded);
        assert_eq!("null".parse::<BackendSpec>().unwrap(), BackendSpec::Null);
        assert_eq!(
            "redis://127.0.0.1:6379".parse::<BackendSpec>().unwrap(),
            BackendSpec::Redis("redis://127.0.0.1:6379".into())
        );
        assert!("mnesia".parse::<BackendSpec>().is_err());
    }
}
