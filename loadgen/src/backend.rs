//! Backends the load runs against, behind the engine's async
//! [`SessionStore`] trait.
//!
//! `--backend embedded` is the in-process [`Engine`]; `--backend null`
//! answers every call at once without storing anything, which measures the
//! loadgen's own cost per operation; `--backend peer` is [`PeerStore`], a
//! plain sharded `Mutex<HashMap>` that every run also measures briefly as
//! the reference its figures are compared with; `--backend redis://...` is reserved for
//! the `session-redis` crate's [`RedisStore`](session_redis::RedisStore)
//! (one server, or `redis+cluster://host:port,host:port`). Its futures do real
//! I/O (`READY_FUTURES = false`), so its clients run as tokio tasks, several
//! per worker thread with `--clients`.

use std::fmt;
use std::future::{ready, Future};
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use session_engine::{
    Cursor, Engine, Error, Metadata, Page, Result, Session, SessionId, SessionStore, Stats, Timeout,
};

use crate::units::ParseError;

/// Which backend a run uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendSpec {
    /// The in-process engine.
    Embedded,
    /// No backend: every call returns at once (loadgen overhead).
    Null,
    /// The reference peer: a plain sharded `Mutex<HashMap>`.
    Peer,
    /// A Redis URL (`redis://`, `rediss://`, `redis+cluster://`), for the
    /// `session-redis` backend.
    Redis(String),
}

impl FromStr for BackendSpec {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        let text = s.trim();
        match text {
            "embedded" | "engine" => Ok(BackendSpec::Embedded),
            "null" => Ok(BackendSpec::Null),
            "peer" => Ok(BackendSpec::Peer),
            url if ["redis://", "rediss://", "redis+cluster://"]
                .iter()
                .any(|scheme| url.starts_with(scheme)) =>
            {
                Ok(BackendSpec::Redis(url.to_owned()))
            }
            _ => Err(ParseError::new(
                "backend",
                s,
                "expected embedded, null, peer or a redis:// URL",
            )),
        }
    }
}

impl fmt::Display for BackendSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendSpec::Embedded => f.write_str("embedded"),
            BackendSpec::Null => f.write_str("null"),
            BackendSpec::Peer => f.write_str("peer"),
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

impl Backend for session_redis::RedisStore {
    const READY_FUTURES: bool = false;
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

/// Shards of the peer map (a power of two, as many as the engine's default on
/// 2 cores so that lock contention is comparable).
pub const PEER_SHARDS: usize = 8;

struct PeerEntry {
    metadata: Metadata,
    created_ms: u64,
}

type PeerShard = parking_lot::Mutex<std::collections::HashMap<SessionId, PeerEntry, ahash::RandomState>>;

/// The reference peer: a plain sharded `parking_lot::Mutex<HashMap>` keyed
/// by session id, with no expiry, no timer wheel and no last-access
/// tracking. It is what "a sharded store" costs at its simplest; the gate
/// divides the engine's figures by the peer's, measured in the same run, so
/// that a busy or slow machine moves both sides of the ratio.
pub struct PeerStore {
    shards: Box<[PeerShard]>,
    hasher: ahash::RandomState,
}

impl Default for PeerStore {
    fn default() -> Self {
        Self {
            shards: (0..PEER_SHARDS)
                .map(|_| parking_lot::Mutex::new(std::collections::HashMap::default()))
                .collect(),
            hasher: ahash::RandomState::new(),
        }
    }
}

impl PeerStore {
    fn shard(&self, id: &SessionId) -> &PeerShard {
        // The map's own hasher uses the low bits; take the shard from the high ones.
        #[allow(clippy::cast_possible_truncation)]
        let index = (self.hasher.hash_one(id.to_u128()) >> 56) as usize & (PEER_SHARDS - 1);
        &self.shards[index]
    }

    fn session(id: SessionId, entry: &PeerEntry) -> Session {
        Session::new(
            id,
            entry.metadata.clone(),
            entry.created_ms,
            entry.created_ms,
            Timeout::Never,
        )
    }
}

impl Backend for PeerStore {
    const READY_FUTURES: bool = true;
}

impl SessionStore for PeerStore {
    fn create(&self, metadata: &[u8], _timeout: Timeout) -> impl Future<Output = Result<SessionId>> + Send {
        ready(SessionId::random().map_err(Error::Entropy).inspect(|id| {
            let entry = PeerEntry {
                metadata: Metadata::from(metadata),
                created_ms: 0,
            };
            self.shard(id).lock().insert(*id, entry);
        }))
    }

    fn insert(
        &self,
        id: SessionId,
        metadata: &[u8],
        _timeout: Timeout,
    ) -> impl Future<Output = Result<()>> + Send {
        let entry = PeerEntry {
            metadata: Metadata::from(metadata),
            created_ms: 0,
        };
        let mut shard = self.shard(&id).lock();
        ready(match shard.entry(id) {
            std::collections::hash_map::Entry::Occupied(_) => Err(Error::AlreadyExists),
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(entry);
                Ok(())
            }
        })
    }

    fn get(&self, id: &SessionId) -> impl Future<Output = Result<Session>> + Send {
        let found = self.shard(id).lock().get(id).map(|e| Self::session(*id, e));
        ready(found.ok_or(Error::NotFound))
    }

    fn peek(&self, id: &SessionId) -> impl Future<Output = Result<Session>> + Send {
        self.get(id)
    }

    fn update<F>(&self, id: &SessionId, mut f: F) -> impl Future<Output = Result<Session>> + Send
    where
        F: FnMut(&[u8]) -> Vec<u8> + Send,
    {
        let mut shard = self.shard(id).lock();
        let updated = shard.get_mut(id).map(|entry| {
            entry.metadata = Metadata::from(f(&entry.metadata));
            Self::session(*id, entry)
        });
        ready(updated.ok_or(Error::NotFound))
    }

    fn touch(&self, id: &SessionId) -> impl Future<Output = Result<()>> + Send {
        let found = self.shard(id).lock().contains_key(id);
        ready(if found { Ok(()) } else { Err(Error::NotFound) })
    }

    fn delete(&self, id: &SessionId) -> impl Future<Output = Result<()>> + Send {
        let removed = self.shard(id).lock().remove(id);
        ready(removed.map(drop).ok_or(Error::NotFound))
    }

    fn set_ttl(&self, id: &SessionId, _timeout: Timeout) -> impl Future<Output = Result<()>> + Send {
        self.touch(id)
    }

    fn contains(&self, id: &SessionId) -> impl Future<Output = Result<bool>> + Send {
        ready(Ok(self.shard(id).lock().contains_key(id)))
    }

    fn len(&self) -> impl Future<Output = Result<usize>> + Send {
        ready(Ok(self.shards.iter().map(|s| s.lock().len()).sum()))
    }

    fn list(&self, cursor: Cursor, limit: usize) -> impl Future<Output = Result<Page>> + Send {
        let mut sessions = Vec::with_capacity(limit.min(1024));
        let mut part = cursor.part() as usize;
        let mut skip = usize::try_from(cursor.position()).unwrap_or(usize::MAX);
        while part < PEER_SHARDS {
            let shard = self.shards[part].lock();
            for (taken, (id, entry)) in shard.iter().skip(skip).enumerate() {
                if sessions.len() == limit {
                    let part = u32::try_from(part).expect("few shards");
                    return ready(Ok(Page {
                        sessions,
                        next: Some(Cursor::new(part, (skip + taken) as u64)),
                    }));
                }
                sessions.push(Self::session(*id, entry));
            }
            drop(shard);
            part += 1;
            skip = 0;
        }
        ready(Ok(Page { sessions, next: None }))
    }

    fn cleanup_expired(&self) -> impl Future<Output = Result<usize>> + Send {
        ready(Ok(0))
    }
}

/// A store that freezes once: every operation issued between `at` and
/// `at + length` after the load starts waits until the freeze ends before it
/// runs, whichever client issued it. It stands for a GC pause, an fsync stall
/// or a network hiccup, and lets tests check that such a stall shows in the
/// latency tail (`--inject-stall AT:LENGTH`).
pub struct Stalling<S> {
    inner: Arc<S>,
    at: Duration,
    length: Duration,
    origin: OnceLock<Instant>,
}

impl<S> Stalling<S> {
    /// Wraps `inner`.
    pub fn new(inner: Arc<S>, at: Duration, length: Duration) -> Self {
        Self {
            inner,
            at,
            length,
            origin: OnceLock::new(),
        }
    }

    /// The wrapped store.
    #[must_use]
    pub fn inner(&self) -> &Arc<S> {
        &self.inner
    }

    fn maybe_stall(&self) {
        if let Some(origin) = self.origin.get() {
            let now = origin.elapsed();
            if now >= self.at {
                if let Some(left) = (self.at + self.length).checked_sub(now) {
                    std::thread::sleep(left);
                }
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
    use crate::clock::block_on_ready;

    #[test]
    fn backend_specs_parse() {
        assert_eq!("embedded".parse::<BackendSpec>().unwrap(), BackendSpec::Embedded);
        assert_eq!("null".parse::<BackendSpec>().unwrap(), BackendSpec::Null);
        assert_eq!(
            "redis://127.0.0.1:6379".parse::<BackendSpec>().unwrap(),
            BackendSpec::Redis("redis://127.0.0.1:6379".into())
        );
        assert!("mnesia".parse::<BackendSpec>().is_err());
        assert_eq!("peer".parse::<BackendSpec>().unwrap(), BackendSpec::Peer);
    }

    #[test]
    fn the_peer_map_keeps_the_store_semantics_it_claims() {
        let peer = PeerStore::default();
        let id = block_on_ready(peer.create(b"a", Timeout::Never)).unwrap();
        assert_eq!(block_on_ready(peer.get(&id)).unwrap().metadata(), b"a");
        let updated = block_on_ready(peer.update(&id, |m| [m, b"b"].concat())).unwrap();
        assert_eq!(updated.metadata(), b"ab");
        assert!(matches!(
            block_on_ready(peer.insert(id, b"x", Timeout::Never)),
            Err(Error::AlreadyExists)
        ));
        for _ in 0..99 {
            block_on_ready(peer.create(b"m", Timeout::Never)).unwrap();
        }
        let mut listed = 0;
        let mut cursor = Cursor::START;
        loop {
            let page = block_on_ready(peer.list(cursor, 7)).unwrap();
            listed += page.sessions.len();
            match page.next {
                Some(next) => cursor = next,
                None => break,
            }
        }
        assert_eq!(listed, 100);
        block_on_ready(peer.delete(&id)).unwrap();
        assert!(block_on_ready(peer.get(&id)).is_err());
        assert_eq!(block_on_ready(peer.len()).unwrap(), 99);
    }
}
