//! The reference peer: a plain sharded `Mutex<HashMap>`, what "a sharded
//! store" costs at its simplest. Every run drives it in alternating slices
//! with the backend under test (see [`crate::schedule`]), and every verdict
//! and gate figure is judged against it.

use std::future::{ready, Future};

use session_engine::{
    Cursor, Error, Metadata, Op, Page, Result, Session, SessionId, SessionStore, Timeout, Updated,
};

use crate::backend::Backend;

/// What the peer is, in one line for reports.
pub const PEER_STORE: &str = "plain sharded parking_lot Mutex<HashMap> (8 shards, ahash), no expiry";

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
/// tracking. Verdicts and gates compare the backend with it, measured in the
/// same run, so that a busy or slow machine moves both sides.
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

    fn put(
        &self,
        id: SessionId,
        metadata: &[u8],
        _timeout: Timeout,
    ) -> impl Future<Output = Result<()>> + Send {
        let mut shard = self.shard(&id).lock();
        let entry = shard.entry(id).or_insert_with(|| PeerEntry {
            metadata: Metadata::from(&[][..]),
            created_ms: 0,
        });
        entry.metadata = Metadata::from(metadata);
        ready(Ok(()))
    }

    fn rotate(&self, id: &SessionId) -> impl Future<Output = Result<SessionId>> + Send {
        // Two shards' locks one after the other: the peer is a reference
        // for speed, not for rotation's atomicity.
        let Some(entry) = self.shard(id).lock().remove(id) else {
            return ready(Err(Error::NotFound));
        };
        ready(SessionId::random().map_err(Error::Entropy).inspect(|new| {
            self.shard(new).lock().insert(*new, entry);
        }))
    }

    fn try_update<F, E>(
        &self,
        id: &SessionId,
        mut f: F,
    ) -> impl Future<Output = Result<std::result::Result<Updated, E>>> + Send
    where
        F: FnMut(&[u8]) -> std::result::Result<Op, E> + Send,
        E: Send,
    {
        let mut shard = self.shard(id).lock();
        let Some(entry) = shard.get_mut(id) else {
            return ready(Err(Error::NotFound));
        };
        let outcome = match f(&entry.metadata) {
            Err(e) => Err(e),
            Ok(Op::Keep) => Ok(Updated::Kept(Self::session(*id, entry))),
            Ok(Op::Replace(bytes)) => {
                entry.metadata = Metadata::from(bytes);
                Ok(Updated::Replaced(Self::session(*id, entry)))
            }
            Ok(Op::Delete) => {
                let session = Self::session(*id, entry);
                shard.remove(id);
                Ok(Updated::Deleted(session))
            }
        };
        ready(Ok(outcome))
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

    fn set_lifetime(&self, id: &SessionId, _lifetime: Timeout) -> impl Future<Output = Result<()>> + Send {
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
                    return ready(Ok(Page::new(
                        sessions,
                        Some(Cursor::new(part, (skip + taken) as u64)),
                    )));
                }
                sessions.push(Self::session(*id, entry));
            }
            drop(shard);
            part += 1;
            skip = 0;
        }
        ready(Ok(Page::new(sessions, None)))
    }

    fn cleanup_expired(&self) -> impl Future<Output = Result<usize>> + Send {
        ready(Ok(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::block_on_ready;

    #[test]
    fn the_description_names_the_shard_count() {
        assert!(PEER_STORE.contains(&format!("{PEER_SHARDS} shards")));
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
