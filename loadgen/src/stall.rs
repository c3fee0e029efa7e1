//! `--inject-stall AT:LENGTH`: a backend that freezes once, to show that a
//! stall reaches the open-loop tail and fails the verdict.

use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use session_engine::{Cursor, Page, Result, Session, SessionId, SessionStore, Stats, Timeout};

use crate::backend::{Backend, LoadClock};
use crate::schedule::Side;
use crate::units::{Dur, ParseError};

/// `--inject-stall AT:LENGTH` (e.g. `2s:100ms`): freeze the backend for
/// LENGTH from its first slice at or after AT past the warm-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stall {
    /// When, after the warm-up.
    pub at: Duration,
    /// How long.
    pub length: Duration,
}

impl FromStr for Stall {
    type Err = ParseError;

    fn from_str(text: &str) -> std::result::Result<Self, ParseError> {
        let (at, length) = text
            .split_once(':')
            .ok_or_else(|| ParseError::new("stall", text, "expected AT:LENGTH, e.g. 2s:100ms"))?;
        let at: Dur = at.parse()?;
        let length: Dur = length.parse()?;
        if length.0.is_zero() {
            return Err(ParseError::new("stall", text, "LENGTH must be more than zero"));
        }
        Ok(Stall {
            at: at.0,
            length: length.0,
        })
    }
}

impl fmt::Display for Stall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", Dur(self.at), Dur(self.length))
    }
}

/// A store that freezes once, for `length`, from the start of the
/// backend's first slice at or after `at` past the warm-up: every operation
/// issued during the freeze waits until it ends before it runs. It stands
/// for a GC pause, an fsync stall or a network hiccup. Starting on a slice
/// boundary keeps the whole stall in the backend's own slices (at
/// `--inject-stall 2s:100ms` with 100 ms slices, one slice of it), where the
/// verdict is meant to find it; a stall that began late in a slice would
/// leave only a sliver of its tail there.
pub struct Stalling<S> {
    inner: Arc<S>,
    at: Duration,
    length: Duration,
    from: OnceLock<Instant>,
}

impl<S> Stalling<S> {
    /// Wraps `inner`.
    pub fn new(inner: Arc<S>, at: Duration, length: Duration) -> Self {
        Self {
            inner,
            at,
            length,
            from: OnceLock::new(),
        }
    }

    /// The wrapped store.
    #[must_use]
    pub fn inner(&self) -> &Arc<S> {
        &self.inner
    }

    fn maybe_stall(&self) {
        if let Some(from) = self.from.get() {
            let now = Instant::now();
            if now >= *from {
                if let Some(left) = (*from + self.length).checked_duration_since(now) {
                    std::thread::sleep(left);
                }
            }
        }
    }
}

impl<S: Backend> Backend for Stalling<S> {
    const READY_FUTURES: bool = S::READY_FUTURES;
    // A stalled Redis store's sessions outlive the run as the store's do:
    // the run deletes them at its end and on Ctrl-C.
    const OUTLIVES_RUN: bool = S::OUTLIVES_RUN;

    fn load_started(&self, load: &LoadClock) {
        let slices = load.slices;
        let at_ns = load
            .measured_start_ns
            .saturating_add(u64::try_from(self.at.as_nanos()).unwrap_or(u64::MAX));
        // The first slice that starts at or after `at_ns`, then the backend's.
        let first = at_ns.saturating_sub(slices.start_ns).div_ceil(slices.slice_ns);
        let from_ns = slices.start_of(slices.next_of(Side::Backend, first));
        let _ = self.from.set(load.origin + Duration::from_nanos(from_ns));
        self.inner.load_started(load);
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

    fn put(
        &self,
        id: SessionId,
        metadata: &[u8],
        timeout: Timeout,
    ) -> impl Future<Output = Result<()>> + Send {
        self.maybe_stall();
        self.inner.put(id, metadata, timeout)
    }

    fn rotate(&self, id: &SessionId) -> impl Future<Output = Result<SessionId>> + Send {
        self.maybe_stall();
        self.inner.rotate(id)
    }

    fn try_update<F, E>(
        &self,
        id: &SessionId,
        f: F,
    ) -> impl Future<Output = Result<std::result::Result<session_engine::Updated, E>>> + Send
    where
        F: FnMut(&[u8]) -> std::result::Result<session_engine::Op, E> + Send,
        E: Send,
    {
        self.maybe_stall();
        self.inner.try_update(id, f)
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

    fn set_lifetime(&self, id: &SessionId, lifetime: Timeout) -> impl Future<Output = Result<()>> + Send {
        self.maybe_stall();
        self.inner.set_lifetime(id, lifetime)
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

    /// A stalled backend keeps what it wraps says of its sessions (it fell
    /// back to "they die with the run": a `--inject-stall` run against
    /// Redis left its whole population on the server).
    #[test]
    fn a_stalled_backend_outlives_the_run_as_its_store_does() {
        const { assert!(<Stalling<session_redis::RedisStore> as Backend>::OUTLIVES_RUN) };
        const { assert!(!<Stalling<session_engine::Engine> as Backend>::OUTLIVES_RUN) };
    }
}
