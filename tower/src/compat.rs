//! `put` and `rotate` in terms of the operations every `SessionStore` has
//! today. TEMPORARY: the engine's trait is gaining both as single steps
//! (`SessionStore::put`: one log record or one Redis script;
//! `SessionStore::rotate`: old id gone and new id present at once); when they
//! land this file goes and the callers use them. Until then neither is
//! atomic, which the comments below spell out.

use session_engine::{Error, Result, SessionId, SessionStore, Timeout};

use crate::limits::ID_TRIES_MAX;

/// Rounds of insert-then-replace before `put` gives up: each round loses
/// only to a concurrent delete or expiry of the same id between its two
/// steps, so more than a few means something keeps deleting it.
const PUT_ROUNDS_MAX: usize = 4;

/// Stores `metadata` with `timeout` under `id`, replacing what is there.
///
/// Not one step yet: a replace is an `update` then a `set_ttl`, so a reader
/// between them sees the new metadata with the old timeout.
pub(crate) async fn put<S: SessionStore>(
    store: &S,
    id: SessionId,
    metadata: &[u8],
    timeout: Timeout,
) -> Result<()> {
    for _ in 0..PUT_ROUNDS_MAX {
        match store.insert(id, metadata, timeout).await {
            Err(Error::AlreadyExists) => {}
            done => return done,
        }
        match store.update(&id, |_| metadata.to_vec()).await {
            Ok(_) => {}
            Err(Error::NotFound) => continue, // gone between the steps: insert again
            Err(e) => return Err(e),
        }
        match store.set_ttl(&id, timeout).await {
            Err(Error::NotFound) => {}
            done => return done,
        }
    }
    Err(Error::Contended {
        tries: u32::try_from(PUT_ROUNDS_MAX).expect("small"),
    })
}

/// Moves the session at `old` to a fresh id, keeping metadata and timeout.
///
/// Not one step yet: a copy under a new id, then the delete of the old one.
/// A crash between them leaves both; a write to `old` between the read and
/// the delete is lost.
pub(crate) async fn rotate<S: SessionStore>(store: &S, old: &SessionId) -> Result<SessionId> {
    let session = store.peek(old).await?;
    for _ in 0..ID_TRIES_MAX {
        let new = SessionId::random().map_err(Error::Entropy)?;
        match store.insert(new, session.metadata(), session.timeout()).await {
            Ok(()) => {}
            Err(Error::AlreadyExists) => continue,
            Err(e) => return Err(e),
        }
        return match store.delete(old).await {
            Ok(()) | Err(Error::NotFound) => Ok(new),
            Err(e) => Err(e),
        };
    }
    Err(Error::AlreadyExists)
}
