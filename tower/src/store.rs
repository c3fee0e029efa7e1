//! [`TowerStore`]: tower-sessions' `SessionStore` over one of ours.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use session_engine::limits::TIMEOUT_MS_MAX;
use session_engine::{SessionId, SessionRef, SessionStore, Timeout};
use tower_sessions_core::session::{Id, Record};
use tower_sessions_core::session_store::{self, Error, ExpiredDeletion};

use crate::id::{to_session_id, to_tower_id, Shown};
use crate::limits::ID_TRIES_MAX;

/// Nanoseconds in a millisecond.
const NS_PER_MS: u64 = 1_000_000;
use crate::record::{self, date_of_ms, date_passed, unix_ms_ns};
use crate::rotate;

/// A tower-sessions store over any [`session_engine::SessionStore`]: the
/// embedded [`Engine`](session_engine::Engine), `session_redis::RedisStore`,
/// or a store of your own, owned or shared (`Arc`).
///
/// Each tower-sessions record is one session of ours under the same 128-bit
/// id (the cookie text is the same either way), its map and expiry date in
/// the metadata (MessagePack; the layout is in the crate docs), and its expiry
/// date minus now as the session's inactivity timeout, so the store expires
/// it natively.
///
/// | tower-sessions | here |
/// | --- | --- |
/// | `create(&mut record)` | `insert` under the record's id (tower-sessions draws it from its CSPRNG; a `CachingSessionStore` passes its backend's); if that is taken, under a fresh id from the OS CSPRNG, drawn again while taken: never overwrites |
/// | `save(&record)` | insert-or-replace with the new metadata and timeout; a record already past its expiry date is deleted (without [`inactivity_timeout`](Self::inactivity_timeout), which replaces the date). An insert too: see the crate docs, "A logout and a save in flight" |
/// | `load(&id)` | `peek` (the deadline stays where the last save put it); with [`sliding`](Self::sliding) `get`, which slides it |
/// | `delete(&id)` | `delete` (absent is fine); inside [`cycle_id`](crate::cycle_id) the store's rotate |
/// | `delete_expired()` | `cleanup_expired`, on tokio's blocking pool (on Redis, which expires sessions itself, the sweep of the topic indexes) |
pub struct TowerStore<S> {
    store: Arc<S>,
    sliding: bool,
    inactivity_timeout: Option<Timeout>,
}

impl<S> TowerStore<S> {
    /// Wraps a store it owns.
    #[must_use]
    pub fn new(store: S) -> Self {
        Self::from_arc(Arc::new(store))
    }

    /// Wraps a store shared with the rest of the program.
    #[must_use]
    pub fn from_arc(store: Arc<S>) -> Self {
        Self {
            store,
            sliding: false,
            inactivity_timeout: None,
        }
    }

    /// `true`: every `load` counts as activity and slides the session's
    /// deadline by its timeout (our `get`), and returns the record with the
    /// moved `expiry_date`. A session then ends after its timeout without
    /// requests, whether they wrote to it or not, without
    /// `SessionManagerLayer::with_always_save` writing every request back.
    ///
    /// `false` (the default): tower-sessions' own rule, the deadline is the
    /// `expiry_date` of the last save and a load leaves it there.
    ///
    /// Every session of the store slides, whatever its layer's expiry: not
    /// for `Expiry::AtDateTime`, whose sessions would outlive their date.
    /// The browser must keep the cookie as long as the server keeps the
    /// session: see the crate docs for the layer settings that go with it.
    #[must_use]
    pub fn sliding(mut self, sliding: bool) -> Self {
        self.sliding = sliding;
        self
    }

    /// Stores every session with this inactivity timeout instead of the
    /// record's `expiry_date` minus now, unless that is sooner (a
    /// handler's `Expiry::AtDateTime` a few minutes out, or a timeout over
    /// the two weeks `Expiry::OnSessionEnd` dates: the date bounds the
    /// session, as without this timeout; with [`sliding`](Self::sliding) a
    /// load slides it by what was left at the last save). For a layer
    /// whose cookie has no
    /// `Max-Age` (`Expiry::OnSessionEnd`, where tower-sessions dates every
    /// record two weeks out): the server's deadline is then this timeout,
    /// sliding on every request that loads the session with
    /// [`sliding`](Self::sliding). A record saved with a date already past
    /// (a handler ending the session with `Expiry::AtDateTime`) is deleted
    /// all the same.
    ///
    /// # Errors
    /// [`session_engine::Error::InvalidTimeout`] for zero or more than
    /// [`TIMEOUT_MS_MAX`] (400 days).
    pub fn inactivity_timeout(mut self, timeout: Duration) -> session_engine::Result<Self> {
        let timeout = Timeout::After(timeout);
        timeout.checked_ms()?;
        self.inactivity_timeout = Some(timeout);
        Ok(self)
    }

    /// The wrapped store.
    #[must_use]
    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    /// The timeout a record expiring at `expiry_ns` (nanoseconds since the
    /// Unix epoch) gets if saved now; `None` if that has passed (it must
    /// not be stored), with an
    /// [`inactivity_timeout`](Self::inactivity_timeout) too: a date in the
    /// past is a handler's "end it now" (`Expiry::AtDateTime` of a past
    /// date), never the two weeks out that `Expiry::OnSessionEnd` dates;
    /// and a date sooner than that timeout bounds it.
    fn timeout_for(&self, expiry_ns: i128) -> Option<Timeout> {
        let remaining_ns = expiry_ns - now_ns();
        if remaining_ns <= 0 {
            return None;
        }
        // Rounded up: a record is never dropped before its expiry date,
        // unless that is further out than the longest finite timeout: then
        // it gets the longest, so that an abandoned session (its cookie
        // gone) is still reclaimed by the store (a save or a sliding load
        // sets it again).
        let timeout_ms = u64::try_from(remaining_ns)
            .map_or(u64::MAX, |ns| ns.div_ceil(NS_PER_MS))
            .min(TIMEOUT_MS_MAX);
        // An inactivity timeout replaces dates further out (the two weeks
        // `Expiry::OnSessionEnd` dates), not a sooner one a handler set.
        let timeout_ms = match self.inactivity_timeout.and_then(Timeout::as_ms) {
            Some(inactivity_ms) => timeout_ms.min(inactivity_ms),
            None => timeout_ms,
        };
        Some(Timeout::from_ms(timeout_ms))
    }
}

/// Nanoseconds since the Unix epoch, now (negative before it). The
/// system clock, as `OffsetDateTime::now_utc` reads it, without the
/// calendar arithmetic that builds a date.
fn now_ns() -> i128 {
    match SystemTime::now().duration_since(SystemTime::UNIX_EPOCH) {
        Ok(after) => i128::try_from(after.as_nanos()).expect("within i128"),
        Err(before) => -i128::try_from(before.duration().as_nanos()).expect("within i128"),
    }
}

impl<S> Clone for TowerStore<S> {
    fn clone(&self) -> Self {
        Self {
            store: Arc::clone(&self.store),
            sliding: self.sliding,
            inactivity_timeout: self.inactivity_timeout,
        }
    }
}

impl<S> fmt::Debug for TowerStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TowerStore")
            .field("store", &std::any::type_name::<S>())
            .field("sliding", &self.sliding)
            .field("inactivity_timeout", &self.inactivity_timeout)
            .finish()
    }
}

/// Our error as tower-sessions' `Backend` error, naming the operation.
fn backend(operation: &str, id: Option<Id>, e: &session_engine::Error) -> Error {
    match id {
        Some(id) => Error::Backend(format!("{operation} of session {}: {e}", Shown(id))),
        None => Error::Backend(format!("{operation}: {e}")),
    }
}

impl<S: SessionStore + 'static> TowerStore<S> {
    /// Inserts `record` under its own id if that is free (tower-sessions'
    /// `CachingSessionStore` creates in its cache under the id its backend
    /// chose), else under fresh ids of ours, drawing again while the id is
    /// taken. Never over another session.
    async fn insert_new(
        &self,
        record: &mut Record,
        bytes: &[u8],
        timeout: Timeout,
    ) -> session_store::Result<()> {
        match self.store.insert(to_session_id(record.id), bytes, timeout).await {
            Ok(()) => return Ok(()),
            Err(session_engine::Error::AlreadyExists) => {}
            Err(e) => return Err(backend("create", Some(record.id), &e)),
        }
        for _ in 0..ID_TRIES_MAX {
            let id = SessionId::random()
                .map_err(|e| backend("create", None, &session_engine::Error::Entropy(e)))?;
            record.id = to_tower_id(id);
            match self.store.insert(id, bytes, timeout).await {
                Ok(()) => return Ok(()),
                Err(session_engine::Error::AlreadyExists) => {}
                Err(e) => return Err(backend("create", Some(record.id), &e)),
            }
        }
        Err(Error::Backend(format!(
            "create: the caller's id and {ID_TRIES_MAX} fresh ids in a row were taken (is the random source broken?)"
        )))
    }
}

#[async_trait]
impl<S: SessionStore + 'static> session_store::SessionStore for TowerStore<S> {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        let (expiry_ms, expiry_nanos) = unix_ms_ns(record.expiry_date);
        // Taken first: a record that cannot be encoded must not leave the
        // rotated copy under an id nobody is given.
        let rotated = rotate::take_rotated();
        let bytes = match record::encode(record, expiry_ms) {
            Ok(bytes) => bytes,
            Err(e) => {
                if let Some(new) = rotated {
                    let _ = self.store.delete(&new).await;
                }
                return Err(e);
            }
        };
        let timeout = self.timeout_for(expiry_nanos);
        if let Some(new) = rotated {
            // `cycle_id` already moved the stored session to `new`; store the
            // record as it is now (it may have changed in this request).
            record.id = to_tower_id(new);
            return match timeout {
                Some(timeout) => match self.store.put(new, &bytes, timeout).await {
                    Ok(()) => Ok(()),
                    Err(e) => {
                        // The caller never learns `new` (tower-sessions
                        // keeps no id after a failed create): the rotated
                        // copy would sit under an id nobody knows until
                        // its timeout. Best effort: if the store is down,
                        // the timeout still reclaims it.
                        let _ = self.store.delete(&new).await;
                        Err(backend("create (after rotate)", Some(record.id), &e))
                    }
                },
                None => plain_delete(&*self.store, "create (after rotate)", record.id).await,
            };
        }
        // A record created already expired is still stored (the caller
        // expects its id to name a session) with a 1 ms life: the next
        // load does not find it.
        let timeout = timeout.unwrap_or(Timeout::from_ms(1));
        self.insert_new(record, &bytes, timeout).await
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let id = to_session_id(record.id);
        let (expiry_ms, expiry_nanos) = unix_ms_ns(record.expiry_date);
        let Some(timeout) = self.timeout_for(expiry_nanos) else {
            // A plain delete: never taken for a `cycle_id`'s rotation.
            return plain_delete(&*self.store, "save (delete expired)", record.id).await;
        };
        let bytes = record::encode(record, expiry_ms)?;
        self.store
            .put(id, &bytes, timeout)
            .await
            .map_err(|e| backend("save", Some(record.id), &e))
    }

    async fn load(&self, session_id: &Id) -> session_store::Result<Option<Record>> {
        let id = to_session_id(*session_id);
        // Decoded from the session's bytes as the store lends them: on the
        // embedded engine in place, with no snapshot (no reference count
        // taken and dropped).
        let decode = |session: SessionRef<'_>| {
            record::decode(*session_id, session.metadata()).map(|stored| (stored, session.expires_at_ms()))
        };
        let read = if self.sliding {
            self.store.get_with(&id, decode).await
        } else {
            self.store.peek_with(&id, decode).await
        };
        let (stored, expires_ms) = match read {
            Ok(Ok(decoded)) => decoded,
            // Bytes this build cannot read as a record (written by another
            // application or a newer build, or damaged) are no session to
            // it, as Django's and Rails' stores treat them: tower-sessions
            // then starts an empty session, drops the cookie unless the
            // handler writes (which creates a new id), and the stored bytes
            // stay as they are for whoever can read them, until their
            // deadline. An error instead would fail every request that
            // carries the cookie, logins included. (A sliding load has moved
            // the record's deadline by then, as for any id a client
            // presents: a client holding another application's id keeps that
            // record alive by presenting it, which holding the id allows
            // anyway.)
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "session-tower: a stored session that is not a readable record is loaded as none");
                return Ok(None);
            }
            Err(session_engine::Error::NotFound) => return Ok(None),
            Err(e) => return Err(backend("load", Some(*session_id), &e)),
        };
        // Without sliding the record's date ends it to the millisecond: the
        // store's deadline for one past 24.9 days is in whole seconds,
        // rounded up (and reclaims it then). With an inactivity timeout
        // too, which a sooner date bounds (`timeout_for`); a later date
        // (`Expiry::OnSessionEnd`'s two weeks) is never reached first.
        let fixed = !self.sliding;
        if fixed && expires_ms.is_some() && date_passed(stored.expiry_ms, now_ns()) {
            return Ok(None);
        }
        let expiry_date = if let Some(expires_ms) = expires_ms {
            // The store's deadline is the truth (moved by this read if
            // sliding), but for a fixed date, which it may pass (whole
            // seconds; on Redis the server's clock): the earlier of the two.
            let expires_ms = i64::try_from(expires_ms).unwrap_or(i64::MAX);
            let deadline = date_of_ms(expires_ms).unwrap_or_else(|| stored.expiry_date());
            if fixed {
                deadline.min(stored.expiry_date())
            } else {
                deadline
            }
        } else if date_passed(stored.expiry_ms, now_ns()) {
            // Stored without a timeout (by an earlier version, for a date
            // beyond the longest one): its own date ends it. A plain
            // delete, never a rotation.
            return plain_delete(&*self.store, "load (delete expired)", *session_id)
                .await
                .map(|()| None);
        } else {
            stored.expiry_date()
        };
        Ok(Some(stored.into_record(*session_id, expiry_date)))
    }

    async fn delete(&self, session_id: &Id) -> session_store::Result<()> {
        let id = to_session_id(*session_id);
        if rotate::claims_delete(id) {
            return match self.store.rotate(&id).await {
                Ok(new) => {
                    rotate::rotated(Some(new));
                    Ok(())
                }
                Err(session_engine::Error::NotFound) => {
                    rotate::rotated(None);
                    Ok(())
                }
                Err(e) => Err(backend("rotate", Some(*session_id), &e)),
            };
        }
        plain_delete(&*self.store, "delete", *session_id).await
    }
}

/// Deletes `id` (gone already is done), never taking the call for a
/// [`cycle_id`](crate::cycle_id)'s rotation: the adapter's own deletes of
/// expired records go through here, not through `delete`, so that inside a
/// `cycle_id` scope they cannot claim the rotation meant for the session's
/// `delete(old)`.
async fn plain_delete<S: SessionStore>(store: &S, operation: &str, id: Id) -> session_store::Result<()> {
    match store.delete(&to_session_id(id)).await {
        Ok(()) | Err(session_engine::Error::NotFound) => Ok(()),
        Err(e) => Err(backend(operation, Some(id), &e)),
    }
}

#[async_trait]
impl<S: SessionStore + 'static> ExpiredDeletion for TowerStore<S> {
    /// Reclaims expired sessions now (the store's `cleanup_expired`). Not
    /// needed for their correctness (an expired session is never loaded,
    /// and the engine's sweeper and Redis reclaim them anyway): a hook for
    /// an engine configured without a sweeper, and on Redis the sweep of
    /// the topic indexes (which only per-session state uses).
    ///
    /// A failure of the store's sweep (a Redis master that does not
    /// answer, say) is logged (`tracing` warning) and not returned:
    /// tower-sessions' `continuously_delete_expired` ends its loop for good
    /// on the first error, and the next round tries again. A failure of the
    /// task that runs the sweep is returned.
    ///
    /// On tokio's blocking pool: the engine's sweep is synchronous work over
    /// every shard (its future does it all when first polled), which on the
    /// runtime's thread would stall every task there meanwhile. Outside a
    /// tokio runtime, in place.
    async fn delete_expired(&self) -> session_store::Result<()> {
        let cleaned = match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let store = Arc::clone(&self.store);
                tokio::task::spawn_blocking(move || runtime.block_on(store.cleanup_expired()))
                    .await
                    .map_err(|e| Error::Backend(format!("delete_expired: the sweep's task failed: {e}")))?
            }
            Err(_) => self.store.cleanup_expired().await,
        };
        if let Err(e) = cleaned {
            tracing::warn!(error = %e, "session-tower: delete_expired: the store's sweep failed; the next one tries again");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use session_engine::{Config, Engine};
    use tower_sessions_core::session_store::SessionStore as _;

    /// The stores the fixed-date tests run on: no sliding, without and
    /// with an inactivity timeout (longer than the date is away, so the
    /// date bounds the stored timeout).
    fn fixed_stores(engine: &Arc<Engine>) -> [TowerStore<Engine>; 2] {
        [
            TowerStore::from_arc(Arc::clone(engine)),
            TowerStore::from_arc(Arc::clone(engine))
                .inactivity_timeout(Duration::from_secs(40 * 24 * 3600))
                .unwrap(),
        ]
    }

    /// Without sliding the record's own date ends it, to the millisecond:
    /// the store's deadline for a date past 24.9 days is in whole seconds,
    /// rounded up, and a load that took the store's deadline alone
    /// returned the record for up to a second past its date (here a record
    /// stored with its date passed). With an inactivity timeout too: a
    /// date sooner than the timeout bounds it, and the load skipped the
    /// check.
    #[tokio::test]
    async fn a_fixed_date_ends_the_record_whatever_the_stores_deadline() {
        let engine = Arc::new(Engine::open(Config::default()).unwrap());
        for store in fixed_stores(&engine) {
            let record = Record {
                id: Id::default(),
                data: std::collections::HashMap::default(),
                expiry_date: time::OffsetDateTime::now_utc() - time::Duration::milliseconds(5),
            };
            let (expiry_ms, _) = unix_ms_ns(record.expiry_date);
            let bytes = record::encode(&record, expiry_ms).unwrap();
            engine
                .put(to_session_id(record.id), &bytes, Timeout::from_secs(60))
                .unwrap();
            assert!(
                store.load(&record.id).await.unwrap().is_none(),
                "a record loaded past its date ({:?})",
                store.inactivity_timeout
            );
        }
    }

    /// A fixed date is the record's `expiry_date` when loaded, not the
    /// store's deadline, which can be later: past 24.9 days the engine
    /// keeps it in whole seconds, rounded up (on Redis, the server's clock
    /// may run ahead). A cache filled from the load (tower-sessions'
    /// `CachingSessionStore`) would serve the session past its date.
    #[tokio::test]
    async fn a_fixed_date_is_the_loaded_records_date() {
        let engine = Arc::new(Engine::open(Config::default()).unwrap());
        for store in fixed_stores(&engine) {
            let record = Record {
                id: Id::default(),
                data: std::collections::HashMap::default(),
                expiry_date: time::OffsetDateTime::now_utc()
                    + time::Duration::days(30)
                    + time::Duration::milliseconds(500),
            };
            store.create(&mut record.clone()).await.unwrap();
            let loaded = store.load(&record.id).await.unwrap().expect("loaded");
            assert!(
                unix_ms_ns(loaded.expiry_date).0 <= unix_ms_ns(record.expiry_date).0,
                "loaded until {}, stored until {} ({:?})",
                loaded.expiry_date,
                record.expiry_date,
                store.inactivity_timeout
            );
        }
    }
}
