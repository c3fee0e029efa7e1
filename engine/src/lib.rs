//! A sharded, in-memory session engine with timer-wheel expiry.
//!
//! Servers embed it to hold hundreds of thousands of live sessions with
//! sub-microsecond operations: sessions are hash-partitioned across
//! cache-padded shards, each with a table of session blocks that reads
//! search without any lock, a writer lock for changes, and a hierarchical
//! timer wheel; a background sweeper reclaims expired sessions at a cost
//! proportional to the sessions expiring.
//!
//! ```
//! use session_engine::{Config, Engine, Timeout};
//!
//! let engine = Engine::open(Config::development())?;
//! let id = engine.create(b"user_id=123", Timeout::from_secs(1800))?;
//! let session = engine.get(&id)?; // counts as activity
//! assert_eq!(session.metadata(), b"user_id=123");
//! engine.update(&id, |meta| [meta, b";counter=1"].concat())?;
//! let text = id.to_string(); // 22 URL-safe characters, for a cookie
//! assert_eq!(text.parse::<session_engine::SessionId>()?, id);
//! engine.delete(&id)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Semantics: a session expires once its inactivity timeout has passed since
//! its last activity (create, `get`, `update`, `touch`, `set_ttl`); an
//! expired session is never returned, even before the sweeper reclaims it.
//! See [`SessionStore`] for the backend-neutral async API, and
//! [`SessionState`] for per-session subscriptions (with the topic fan-out)
//! and rate limits; [`Engine::arm_timer`] adds session-scoped timers.

// Unsafe code is confined to `block.rs` (the session blocks' allocation and
// reference count), `table.rs` (tagged pointers read under an epoch guard),
// `shard.rs` (the epoch's table swap) and `persist/segment.rs` (writes into
// a mapped file), each block with a SAFETY argument; their tests run under
// Miri but the mapped file's (Miri has no mmap). Everything else is safe.
#![deny(unsafe_code)]
#![warn(missing_docs, clippy::pedantic)]
#![allow(clippy::module_name_repetitions, clippy::missing_panics_doc)]

mod any;
mod background;
mod block;
mod clock;
mod config;
mod core;
mod engine;
mod error;
mod id;
pub mod limits;
mod members;
mod metrics;
mod per_session;
mod persist;
mod session;
mod settle;
mod shard;
mod state;
mod store;
mod table;
mod wheel;

pub use any::{engine_config, AnyStore, BoxError, BoxFuture, DynSessionStore, ReadFn, TryUpdateFn, UpdateFn};
pub use block::Metadata;
pub use clock::{
    ms_to_system_time, system_time_to_ms, Clock, ManualClock, CLOCK_TICK, CLOCK_TICK_MAX, CLOCK_TICK_MIN,
};
pub use config::{Config, Durability, RecoveryMode, SyncScope, TimerListener};
pub use engine::{Engine, WeakEngine};
pub use error::{redact_url, Error, Result};
pub use id::{ParseIdError, SessionId, SESSION_ID_TEXT_LEN};
pub use metrics::OpenMetricsWriter;
pub use per_session::TimerHandle;
pub use persist::{CompactionStep, Damage, RecoveryReport, Truncation};
pub use session::{Cursor, Listener, Op, Page, RemovalCause, Session, SessionRef, Stats, Timeout, Updated};
pub use state::{check_bucket, check_topic, Bucket, RateDecision, SessionState, TopicCursor, TopicPage};
pub use store::SessionStore;

/// The log's record codec, for fuzzing, tests and tools (see `engine/FORMAT.md`).
#[doc(hidden)]
pub mod log_format {
    pub use crate::persist::format::{decode, log_salt, Decoded, LogSalt, Record};

    /// Bytes of a segment's header (both copies): its records start here.
    pub const SEGMENT_HEADER_LEN: usize = crate::persist::format::SEGMENT_HEADER_LEN;

    /// The salts of `shard`'s log, from a MANIFEST's bytes (`None` if they
    /// are not a manifest of the current format): what a tool needs to read
    /// the records.
    #[must_use]
    pub fn shard_salt(manifest: &[u8], shard: u32) -> Option<LogSalt> {
        let m = crate::persist::format::Manifest::decode(manifest).ok()?;
        (m.format == crate::persist::format::FORMAT_VERSION).then(|| log_salt(&m.log_key, m.layout, shard))
    }

    /// What a record header's check (`hcrc`) is for `len` and `kind` in
    /// `shard`'s log (`None` if the bytes are not a MANIFEST of the current
    /// format): a test stands in for an attacker who guessed those 32 bits.
    #[must_use]
    pub fn header_check(manifest: &[u8], shard: u32, len: u32, kind: u8) -> Option<u32> {
        let m = crate::persist::format::Manifest::decode(manifest).ok()?;
        (m.format == crate::persist::format::FORMAT_VERSION)
            .then(|| crate::persist::format::header_check(log_salt(&m.log_key, m.layout, shard), len, kind))
    }

    /// Decodes one segment header copy and, if it verifies, encodes it
    /// again (one copy): fuzzing checks that this gives back the input.
    #[must_use]
    pub fn segment_header_round_trip(bytes: &[u8]) -> Option<Vec<u8>> {
        let header =
            crate::persist::format::SegmentHeader::decode_copy(bytes, crate::persist::format::FORMAT_VERSION)
                .ok()?;
        Some(header.encode()[..crate::persist::format::SEGMENT_HEADER_COPY_LEN].to_vec())
    }

    /// Decodes a MANIFEST and, if it is a valid one of the current format, encodes it
    /// again: fuzzing checks that this gives back the input. A format-1
    /// manifest decodes (for the upgrade) but is never written: `None`.
    #[must_use]
    pub fn manifest_round_trip(bytes: &[u8]) -> Option<Vec<u8>> {
        let m = crate::persist::format::Manifest::decode(bytes).ok()?;
        (m.format == crate::persist::format::FORMAT_VERSION).then(|| m.encode().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn engine_is_send_and_sync() {
        assert_send_sync::<Engine>();
        assert_send_sync::<Session>();
        assert_send_sync::<Metadata>();
    }
}
