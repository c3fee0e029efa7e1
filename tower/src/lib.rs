//! [tower-sessions](https://docs.rs/tower-sessions) (0.15) on the session
//! engine: one adapter, [`TowerStore`], serves the embedded
//! [`Engine`](session_engine::Engine), `session_redis::RedisStore` (one
//! server or a Redis Cluster) and any other
//! [`session_engine::SessionStore`].
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use axum::{routing::get, Router};
//! use session_engine::{Config, Engine};
//! use session_tower::TowerStore;
//! use tower_sessions::{Expiry, Session, SessionManagerLayer};
//!
//! async fn counter(session: Session) -> String {
//!     let n: u64 = session.get("n").await.unwrap().unwrap_or(0) + 1;
//!     session.insert("n", n).await.unwrap();
//!     n.to_string()
//! }
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let engine = Engine::open(Config::single_node_production("/var/lib/app/sessions"))?;
//! // A session ends after 30 minutes without requests, reads included.
//! let store = TowerStore::new(engine)
//!     .sliding(true)
//!     .inactivity_timeout(Duration::from_secs(30 * 60))?;
//! let app: Router = Router::new()
//!     .route("/", get(counter))
//!     .layer(SessionManagerLayer::new(store).with_expiry(Expiry::OnSessionEnd));
//! # Ok(()) }
//! ```
//!
//! # Ids
//!
//! A tower-sessions `Id` is an `i128` written as URL-safe base64 of its
//! little-endian bytes; ours is 16 bytes written as URL-safe base64. The
//! adapter takes the one for the other bit for bit, so a cookie names the
//! same session on both sides (`id.to_string()` is the same text). `create`
//! inserts the record under its own id (tower-sessions draws it from its
//! CSPRNG; `CachingSessionStore` creates in its cache under the id its
//! backend chose, so both layers keep one id); an id that is taken is never
//! overwritten: the record gets a fresh id from the engine's source (the OS
//! CSPRNG), drawn again while taken.
//!
//! One consequence, shared with tower-sessions' `MemoryStore` (not its
//! Redis store, whose `save` replaces only a key still there): after
//! `Session::flush` (a logout) the session keeps its record, with the id
//! it had (the request's cookie's; or, if the handler read the session
//! first and the cookie named no stored one, a fresh id), and a handler
//! that writes to it again in the same request (a flash message) has it
//! created under that id, now free. Call
//! `Session::cycle_id` after the `flush` in such a handler: the new session
//! then gets a fresh id.
//!
//! # Deadlines: fixed (tower-sessions' rule) or sliding
//!
//! Each save stores the record's `expiry_date` minus now as the session's
//! inactivity timeout (rounded up to the millisecond). A date more than
//! [`TIMEOUT_MS_MAX`](session_engine::limits::TIMEOUT_MS_MAX), 400
//! days, away gets that longest timeout, so that an abandoned session is
//! still reclaimed: such a session ends 400 days after its last save (or
//! sliding load), before its date, unless it is saved again meanwhile.
//! By default a `load` is a `peek`: the deadline stays where the
//! last save put it, as in every tower-sessions store, so a session whose
//! requests only read ends on time even while in use
//! ([tower-sessions issue #74](https://github.com/maxcountryman/tower-sessions/issues/74);
//! tower-sessions' answer is `with_always_save(true)`, a write on every
//! request).
//!
//! With [`TowerStore::sliding`] a `load` is our `get`, which counts as
//! activity: the deadline moves to now plus the session's timeout in the
//! same operation, no write of the record, and the record comes back with
//! that `expiry_date`. The server side is then fixed. The browser side is
//! not the store's to fix: tower-sessions gives the cookie a `Max-Age` only
//! on responses that save the session. So:
//!
//! - **`Expiry::OnSessionEnd` on the layer, with
//!   [`TowerStore::inactivity_timeout`]** (the example above): the cookie
//!   has no `Max-Age` (the browser keeps it until it closes), the store
//!   holds every session with that timeout, and every request that loads
//!   the session slides it (tower-sessions loads a record lazily: a handler
//!   that takes `Session` but never reads or writes it does not load it). A
//!   session ends after the timeout without such requests, or when the
//!   browser closes. This is the setting for "log out after 30 minutes of
//!   inactivity" without `with_always_save`.
//! - `Expiry::OnInactivity(d)` with `sliding(true)`: the store's deadline
//!   slides on reads, but the cookie's `Max-Age = d` is sent only with saves,
//!   so the browser drops the cookie `d` after the last request that
//!   *changed* the session, whatever came after it. Use it only where every
//!   request writes anyway, or where the client ignores `Max-Age`.
//! - `Expiry::AtDateTime(t)`: the default (fixed) store. Not with
//!   `sliding(true)`: a sliding load moves every session's deadline by the
//!   timeout its last save gave it (`t` minus the time of that save), and
//!   the store cannot tell a fixed date from an inactivity one, so the
//!   session would outlive `t`.
//!
//! # `cycle_id`
//!
//! `Session::cycle_id` (the session-fixation defence after a login) works
//! with this store: the old id is deleted at once, and the record is
//! inserted under a new id when the middleware saves it at the end of the
//! request. It cannot go through the engine's atomic rotate: tower-sessions
//! sends a `delete(old)` and, later, a `create(record)` with a fresh id, and
//! nothing in either call says they belong together (the same `delete`
//! comes from a logout). Between the two the session is under no id, and a
//! failure in between (a crash, a 5xx response, which the middleware does
//! not save) loses it.
//!
//! [`cycle_id`] (this crate's) does the same through the store's rotate: it
//! wraps `Session::cycle_id` and an immediate `Session::save` in a
//! task-local scope naming the old id, in which this store's `delete(old)`
//! rotates (old id gone, new id holding the data, one step) and the
//! following `create` takes the rotated id. Call it instead of
//! `session.cycle_id()`.
//!
//! # A logout and a save in flight
//!
//! `save` stores the record whether or not the session is still there (an
//! insert-or-replace, as tower-sessions' `MemoryStore` does; its Redis
//! store's `save` replaces only a key still there). So a request that
//! loaded the session before a concurrent logout (`Session::flush` in
//! another request with the same cookie), and saves it after (it changed
//! the session, or the layer has `with_always_save(true)`), **writes the
//! session back under the old id: the logout is undone** for that cookie.
//! A save that only replaces a live session would break tower-sessions'
//! `CachingSessionStore`, which fills its cache on a load with a `save` of
//! an id the cache never created, and our stores have no replace-only write
//! of metadata and timeout in one step. A logout that must hold against
//! requests in flight needs a check of its own on the server, such as a
//! per-user logout time compared with the session's login time on every
//! request.
//!
//! # Errors
//!
//! Our errors become `session_store::Error::Backend` with our message
//! prefixed by the operation and the session id ("load of session …:
//! session backend timed out after 1000 ms; …"); a map that cannot be
//! written becomes `Encode`. Metadata that is not a stored record this
//! build reads (another application's, a newer format, damage) is no
//! session: `load` returns `None` and logs a `tracing` warning naming what
//! is wrong, and the bytes stay as they are until their deadline. A session that is not there is not an error:
//! `load` returns `None` and `delete` succeeds.
//!
//! # Stored form
//!
//! The record's map and expiry date, in the session's metadata; the layout
//! is in the source of `record.rs` (a version byte, the date, MessagePack).
//! The engine's metadata limit (64 KiB by default,
//! `Config::metadata_bytes_max`) bounds a record's size.

#![forbid(unsafe_code)]
#![warn(missing_docs, clippy::pedantic)]
// doc_markdown: it takes "MessagePack" for an item name.
#![allow(clippy::module_name_repetitions, clippy::doc_markdown)]

#[doc(hidden)]
pub mod fuzz;
mod id;
mod limits;
mod msgpack;
mod record;
mod rotate;
mod store;
#[cfg(test)]
mod test_rng;

pub use rotate::cycle_id;
pub use store::TowerStore;
