//! The values the API hands out: a session snapshot, timeouts, list pages,
//! removal notices and statistics.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::block::{stored_timeout_ms, timeout_to_stored, BlockRef, Expiry, Metadata, TIMEOUT_NEVER};
use std::time::{Duration, SystemTime};

use crate::clock::ms_to_system_time;
use crate::error::{Error, Result};
use crate::id::SessionId;
use crate::limits::TIMEOUT_MS_MAX;

/// A session's inactivity timeout: it expires once this long has passed since
/// its last activity (creation, `get`, `update`, `touch`, `set_ttl`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Timeout {
    /// Never expires; only `delete` removes it.
    Never,
    /// Expires after this much inactivity: 1 ms to 400 days
    /// ([`TIMEOUT_MS_MAX`]). Sub-millisecond parts round up; a timeout over
    /// about 24.9 days ([`TIMEOUT_EXACT_MS_MAX`](crate::limits::TIMEOUT_EXACT_MS_MAX)) is kept in whole seconds,
    /// rounded up.
    After(Duration),
}

impl Timeout {
    /// A timeout of `ms` milliseconds.
    #[must_use]
    #[inline]
    pub const fn from_ms(ms: u64) -> Self {
        Timeout::After(Duration::from_millis(ms))
    }

    /// A timeout of `secs` seconds.
    #[must_use]
    pub const fn from_secs(secs: u64) -> Self {
        Timeout::After(Duration::from_secs(secs))
    }

    /// The timeout in whole milliseconds (rounded up), `None` for `Never`.
    #[must_use]
    pub fn as_ms(self) -> Option<u64> {
        match self {
            Timeout::Never => None,
            Timeout::After(d) => {
                let ms = d.as_millis() + u128::from(d.subsec_nanos() % 1_000_000 != 0);
                Some(u64::try_from(ms).unwrap_or(u64::MAX))
            }
        }
    }

    /// The timeout in milliseconds as the engine keeps it (`None` for
    /// `Never`) if it is one the engine accepts: 1 ms to [`TIMEOUT_MS_MAX`],
    /// rounded up to whole seconds above [`TIMEOUT_EXACT_MS_MAX`](crate::limits::TIMEOUT_EXACT_MS_MAX). Backends
    /// use this to apply exactly the engine's rule.
    ///
    /// # Errors
    /// [`Error::InvalidTimeout`] for zero or more than [`TIMEOUT_MS_MAX`].
    pub fn checked_ms(self) -> Result<Option<u64>> {
        self.to_stored().map(stored_timeout_ms)
    }

    /// Validates the timeout and packs it the way the engine stores it.
    ///
    /// # Errors
    /// [`Error::InvalidTimeout`] for zero or more than [`TIMEOUT_MS_MAX`].
    pub(crate) fn to_stored(self) -> Result<u32> {
        match self.as_ms() {
            None => Ok(TIMEOUT_NEVER),
            Some(ms @ 1..=TIMEOUT_MS_MAX) => Ok(timeout_to_stored(ms)),
            Some(timeout_ms) => Err(Error::InvalidTimeout {
                timeout_ms,
                max_ms: TIMEOUT_MS_MAX,
            }),
        }
    }

    #[inline]
    pub(crate) fn from_stored(stored: u32) -> Self {
        match stored_timeout_ms(stored) {
            None => Timeout::Never,
            Some(ms) => Timeout::from_ms(ms),
        }
    }
}

/// What a [`try_update`](crate::Engine::try_update) closure decides for the
/// session it was shown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Leave it as it is (counts as activity).
    Keep,
    /// Replace its metadata with these bytes.
    Replace(Vec<u8>),
    /// Remove it (only if it is still what the closure saw).
    Delete,
}

/// What a [`try_update`](crate::Engine::try_update) did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Updated {
    /// Left as the closure saw it (its deadline slid).
    Kept(Session),
    /// Replaced: the new session.
    Replaced(Session),
    /// Removed: the session as the closure saw it.
    Deleted(Session),
}

impl Updated {
    /// The session the outcome carries.
    #[must_use]
    pub fn session(&self) -> &Session {
        match self {
            Updated::Kept(s) | Updated::Replaced(s) | Updated::Deleted(s) => s,
        }
    }

    /// True if the session is gone.
    #[must_use]
    pub fn is_deleted(&self) -> bool {
        matches!(self, Updated::Deleted(_))
    }
}

/// A snapshot of one session, as of the operation that returned it.
///
/// Holding one costs no copy of the metadata: it shares the engine's bytes
/// ([`Metadata`], reference-counted), which stay valid even if the session
/// changes or goes.
#[derive(Clone, PartialEq, Eq)]
pub struct Session {
    id: SessionId,
    metadata: Metadata,
    created_ms: u64,
    last_access_ms: u64,
    /// The timeout and lifetime cap as the engine stores them
    /// (`stored_timeout_ms`): a snapshot copies two words, not two enums.
    timeout: u32,
    lifetime: u32,
}

/// A timeout as a snapshot keeps it: the engine's stored form, a value the
/// engine would refuse clamped into its range.
fn stored_clamped(t: Timeout) -> u32 {
    match t.as_ms() {
        None => TIMEOUT_NEVER,
        Some(ms) => timeout_to_stored(ms.clamp(1, TIMEOUT_MS_MAX)),
    }
}

impl Session {
    /// Assembles a snapshot; for backends outside this crate.
    #[must_use]
    #[inline]
    pub fn new(
        id: SessionId,
        metadata: Metadata,
        created_ms: u64,
        last_access_ms: u64,
        timeout: Timeout,
    ) -> Self {
        Self {
            id,
            metadata,
            created_ms,
            last_access_ms,
            timeout: stored_clamped(timeout),
            lifetime: TIMEOUT_NEVER,
        }
    }

    /// A snapshot of the engine's own, its times already stored.
    #[inline]
    pub(crate) fn stored(
        id: SessionId,
        metadata: Metadata,
        created_ms: u64,
        last_access_ms: u64,
        timeout: u32,
        lifetime: u32,
    ) -> Self {
        Self {
            id,
            metadata,
            created_ms,
            last_access_ms,
            timeout,
            lifetime,
        }
    }

    /// The same snapshot with a lifetime cap (counted from creation); for
    /// backends outside this crate.
    #[must_use]
    pub fn with_lifetime(mut self, lifetime: Timeout) -> Self {
        self.lifetime = stored_clamped(lifetime);
        self
    }

    /// The lifetime cap, counted from creation (`Timeout::Never`: none).
    #[must_use]
    pub fn lifetime(&self) -> Timeout {
        Timeout::from_stored(self.lifetime)
    }

    /// The session's id.
    #[must_use]
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// The metadata bytes (opaque to the engine).
    #[must_use]
    pub fn metadata(&self) -> &[u8] {
        &self.metadata
    }

    /// The shared metadata (clone it to keep the bytes without copying).
    #[must_use]
    pub fn metadata_shared(&self) -> &Metadata {
        &self.metadata
    }

    /// Creation time, milliseconds since the Unix epoch.
    #[must_use]
    pub fn created_ms(&self) -> u64 {
        self.created_ms
    }

    /// Creation time.
    #[must_use]
    pub fn created_at(&self) -> SystemTime {
        ms_to_system_time(self.created_ms)
    }

    /// Last activity, milliseconds since the Unix epoch.
    #[must_use]
    pub fn last_access_ms(&self) -> u64 {
        self.last_access_ms
    }

    /// Last activity.
    #[must_use]
    pub fn last_access(&self) -> SystemTime {
        ms_to_system_time(self.last_access_ms)
    }

    /// The inactivity timeout.
    #[must_use]
    pub fn timeout(&self) -> Timeout {
        Timeout::from_stored(self.timeout)
    }

    /// When the session expires unless there is activity first (`None`:
    /// never), milliseconds since the Unix epoch: the earlier of its
    /// inactivity deadline and the end of its lifetime.
    #[must_use]
    pub fn expires_at_ms(&self) -> Option<u64> {
        Expiry {
            timeout_ms: self.timeout,
            lifetime: self.lifetime,
            created_ms: self.created_ms,
        }
        .deadline(self.last_access_ms)
    }

    /// When the session expires unless there is activity first.
    #[must_use]
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.expires_at_ms().map(ms_to_system_time)
    }

    /// The snapshot as a borrowing read's view: what the default
    /// [`SessionStore::get_with`](crate::SessionStore::get_with) lends
    /// stores that read a snapshot anyway.
    #[must_use]
    pub fn view(&self) -> SessionRef<'_> {
        SessionRef {
            source: Source::Snapshot(self),
            last_access_ms: self.last_access_ms,
        }
    }
}

/// A session as a borrowing read sees it ([`SessionStore::get_with`](crate::SessionStore::get_with)):
/// its fields, and its metadata borrowed for the duration of the call. On
/// the embedded engine nothing is copied and no reference count is touched,
/// so readers of a hot session share its cache line instead of writing to
/// it; other stores lend a snapshot they read ([`Session::view`]).
pub struct SessionRef<'a> {
    source: Source<'a>,
    last_access_ms: u64,
}

/// What a [`SessionRef`] borrows.
enum Source<'a> {
    /// The engine's block, in place.
    Block(BlockRef<'a>),
    /// A snapshot (a remote store's reply).
    Snapshot(&'a Session),
}

impl<'a> SessionRef<'a> {
    pub(crate) fn new(block: BlockRef<'a>, last_access_ms: u64) -> Self {
        Self {
            source: Source::Block(block),
            last_access_ms,
        }
    }

    /// The session's id.
    #[must_use]
    pub fn id(&self) -> SessionId {
        match &self.source {
            Source::Block(block) => block.id,
            Source::Snapshot(session) => session.id,
        }
    }

    /// The metadata bytes, borrowed.
    #[must_use]
    pub fn metadata(&self) -> &'a [u8] {
        match &self.source {
            Source::Block(block) => block.bytes(),
            Source::Snapshot(session) => &session.metadata,
        }
    }

    /// Creation time, milliseconds since the Unix epoch.
    #[must_use]
    pub fn created_ms(&self) -> u64 {
        match &self.source {
            Source::Block(block) => block.created_ms,
            Source::Snapshot(session) => session.created_ms,
        }
    }

    /// Last activity (this read's, if it slid the deadline), milliseconds
    /// since the Unix epoch.
    #[must_use]
    pub fn last_access_ms(&self) -> u64 {
        self.last_access_ms
    }

    /// The stored timeout and lifetime cap.
    fn stored(&self) -> (u32, u32) {
        match &self.source {
            Source::Block(block) => (block.timeout_ms, block.lifetime),
            Source::Snapshot(session) => (session.timeout, session.lifetime),
        }
    }

    /// The inactivity timeout.
    #[must_use]
    pub fn timeout(&self) -> Timeout {
        Timeout::from_stored(self.stored().0)
    }

    /// The lifetime cap, counted from creation (`Timeout::Never`: none).
    #[must_use]
    pub fn lifetime(&self) -> Timeout {
        Timeout::from_stored(self.stored().1)
    }

    /// When the session expires unless there is activity first (`None`:
    /// never), milliseconds since the Unix epoch: the earlier of its
    /// inactivity deadline and the end of its lifetime.
    #[must_use]
    pub fn expires_at_ms(&self) -> Option<u64> {
        match &self.source {
            Source::Block(block) => block.expiry().deadline(self.last_access_ms),
            Source::Snapshot(session) => session.expires_at_ms(),
        }
    }

    /// An owned snapshot (shares the metadata: one reference count
    /// increment, no copy).
    #[must_use]
    pub fn to_session(&self) -> Session {
        match &self.source {
            Source::Block(block) => Session::stored(
                block.id,
                block.share(),
                block.created_ms,
                self.last_access_ms,
                block.timeout_ms,
                block.lifetime,
            ),
            Source::Snapshot(session) => (*session).clone(),
        }
    }
}

impl fmt::Debug for SessionRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionRef")
            .field("id", &self.id())
            .field("metadata_len", &self.metadata().len())
            .field("created_ms", &self.created_ms())
            .field("last_access_ms", &self.last_access_ms)
            .field("timeout", &self.timeout())
            .finish()
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("metadata_len", &self.metadata.len())
            .field("created_ms", &self.created_ms)
            .field("last_access_ms", &self.last_access_ms)
            .field("timeout", &self.timeout())
            .field("lifetime", &self.lifetime())
            .finish()
    }
}

/// Why a session left the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RemovalCause {
    /// Its inactivity timeout passed.
    Expired,
    /// `delete` removed it.
    Deleted,
}

/// A callback told about every removal, once, with its cause. It runs outside
/// any shard lock: for expiries on the sweeper thread, the `cleanup_expired`
/// caller, or a `create`/`insert` caller (one that finds the engine full
/// reclaims expired sessions before refusing, and one whose id belonged to
/// an expired session not yet swept replaces it); for deletes on the
/// deleting thread. Keep it short; to hand work
/// elsewhere, send into a channel from it. A panic in it is caught and counted
/// in [`Stats::listener_panics`]. One that calls back into the engine holds a
/// [`WeakEngine`](crate::WeakEngine), not an `Engine`: the engine holds its
/// listener, so a handle in it would keep the engine open for good (threads
/// running, the data directory locked).
pub type Listener = Arc<dyn Fn(&Session, RemovalCause) + Send + Sync>;

/// Where a listing continues. Opaque to callers: pass back what the previous
/// page returned. Its text form (`Display`/`FromStr`) suits HTTP APIs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Cursor {
    part: u32,
    position: u64,
}

impl Cursor {
    /// The start of a listing.
    pub const START: Cursor = Cursor { part: 0, position: 0 };

    /// A cursor at `position` within partition `part` (a shard, or a node of a
    /// remote backend); for backends outside this crate.
    #[must_use]
    pub const fn new(part: u32, position: u64) -> Self {
        Self { part, position }
    }

    /// The partition the listing is in (a node of a remote backend; the
    /// embedded engine packs its shard and how to resume in a rebuilt table
    /// here).
    #[must_use]
    pub const fn part(self) -> u32 {
        self.part
    }

    /// The backend-defined position within the partition.
    #[must_use]
    pub const fn position(self) -> u64 {
        self.position
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.part, self.position)
    }
}

impl FromStr for Cursor {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let invalid = || Error::InvalidCursor {
            reason: format!("{} is not of the form <part>.<position>", crate::error::shown(s)),
        };
        let (part, position) = s.split_once('.').ok_or_else(invalid)?;
        // Digits as `Display` writes them, one spelling per cursor (no
        // sign, no leading zero): a cache or a signature keyed on the text
        // sees one value as one.
        let canonical = |digits: &str| {
            digits.bytes().all(|b| b.is_ascii_digit()) && (digits == "0" || !digits.starts_with('0'))
        };
        if !canonical(part) || !canonical(position) {
            return Err(invalid());
        }
        Ok(Cursor {
            part: part.parse().map_err(|_| invalid())?,
            position: position.parse().map_err(|_| invalid())?,
        })
    }
}

/// One page of a listing.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Page {
    /// Live sessions in this page (as `peek` sees them: listing is not activity).
    pub sessions: Vec<Session>,
    /// Where the next page starts; `None` when the listing is complete.
    pub next: Option<Cursor>,
}

/// Milliseconds, or the string `"never"` (feature `serde`); in a format
/// that is not human-readable (bincode, `MessagePack`, CBOR), an optional
/// number, `None` for never (in `MessagePack` and CBOR, which write
/// `Some(x)` as `x`, an `Option<Timeout>` holding `Some(Never)` comes back
/// `None`; bincode keeps it). Not `null` in a human-readable
/// one: a deserializer reads a field that is absent as `null`, so a config
/// that left the timeout out (or misspelt its key) would have made
/// sessions that never expire, and `Some(Never)` would have come back
/// `None`.
#[cfg(feature = "serde")]
impl serde::Serialize for Timeout {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        match (self.as_ms(), serializer.is_human_readable()) {
            (Some(ms), true) => serializer.serialize_u64(ms),
            (None, true) => serializer.serialize_str(TIMEOUT_NEVER_TEXT),
            (ms, false) => ms.serialize(serializer),
        }
    }
}

/// The word a human-readable serde form writes for [`Timeout::Never`].
#[cfg(feature = "serde")]
const TIMEOUT_NEVER_TEXT: &str = "never";

/// From milliseconds (zero refused; as a number, or as decimal digits in
/// text), or `"never"` (feature `serde`; see `Serialize`): `null`, or a
/// field left out, is refused.
#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Timeout {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = Timeout;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(
                    f,
                    "a timeout: whole milliseconds above 0, or \"{TIMEOUT_NEVER_TEXT}\""
                )
            }
            fn visit_u64<E: serde::de::Error>(self, ms: u64) -> std::result::Result<Timeout, E> {
                if ms == 0 {
                    return Err(E::custom(format!(
                        "a timeout of 0 ms: write \"{TIMEOUT_NEVER_TEXT}\" for never"
                    )));
                }
                Ok(Timeout::from_ms(ms))
            }
            fn visit_i64<E: serde::de::Error>(self, ms: i64) -> std::result::Result<Timeout, E> {
                match u64::try_from(ms) {
                    Ok(ms) => self.visit_u64(ms),
                    Err(_) => Err(E::invalid_value(serde::de::Unexpected::Signed(ms), &self)),
                }
            }
            /// `"never"`, or the milliseconds as decimal digits: formats
            /// that carry every value as text (query strings, environment
            /// variables) hand numbers over so.
            fn visit_str<E: serde::de::Error>(self, text: &str) -> std::result::Result<Timeout, E> {
                if text == TIMEOUT_NEVER_TEXT {
                    return Ok(Timeout::Never);
                }
                match text.parse::<u64>() {
                    Ok(ms) if text.bytes().all(|b| b.is_ascii_digit()) => self.visit_u64(ms),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(text), &self)),
                }
            }
        }
        if !deserializer.is_human_readable() {
            return match Option::<u64>::deserialize(deserializer)? {
                None => Ok(Timeout::Never),
                Some(ms) => serde::de::Visitor::visit_u64(Visit, ms),
            };
        }
        deserializer.deserialize_any(Visit)
    }
}

/// The text form, `<part>.<position>` (feature `serde`).
#[cfg(feature = "serde")]
impl serde::Serialize for Cursor {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// From the text form (feature `serde`).
#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Cursor {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Page {
    /// A page of `sessions`, followed by `next` (`None`: the listing is
    /// complete); for backends outside this crate.
    #[must_use]
    pub fn new(sessions: Vec<Session>, next: Option<Cursor>) -> Self {
        Self { sessions, next }
    }
}

/// Counters and sizes, read shard by shard (not one atomic snapshot).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct Stats {
    /// Sessions held, including expired ones not yet reclaimed (at most about
    /// one sweep interval old).
    pub sessions: usize,
    /// The configured cap.
    pub sessions_max: usize,
    /// Sessions in each shard.
    pub sessions_per_shard: Vec<usize>,
    /// Sessions created (including `insert`) since open.
    pub created_total: u64,
    /// Sessions removed by `delete` since open.
    pub deleted_total: u64,
    /// Sessions removed by expiry since open: by sweeps, and the few a
    /// create reclaims when it finds its id held by an expired session.
    pub expired_total: u64,
    /// Sweep passes since open (the sweeper's, `cleanup_expired`'s, and a
    /// full engine's before it refuses a create): with `expired_total`, the
    /// sessions expired per sweep.
    pub sweeps_total: u64,
    /// Sessions the last sweep pass expired (whoever ran it).
    pub expired_last_sweep: u64,
    /// Mean age of the sessions held (now minus creation, in ms, rounded
    /// down; 0 when there are none), counting expired ones not yet swept as
    /// `sessions` does. O(1) per shard: each keeps the sum of its sessions'
    /// creation times.
    pub average_age_ms: u64,
    /// Bytes of metadata the sessions held carry.
    pub metadata_bytes: u64,
    /// An estimate of the memory the sessions take: each one's block
    /// (a 48-byte header and its metadata) plus each shard's table and
    /// wheel links (16 bytes a slot). Not counted: the allocator's rounding
    /// of each block to its size class (up to an eighth more with
    /// mimalloc), snapshots and replaced blocks still held by readers, the
    /// logs' mapped segments (`log_bytes`), and per-session state (topics
    /// and their indexes, rate-limit buckets, timers: about 128 bytes per
    /// session holding any, plus its topics and timers).
    pub memory_bytes: u64,
    /// Entries scheduled in the timer wheels (sessions with a deadline: a
    /// finite timeout, a lifetime cap, or both).
    pub wheel_entries: usize,
    /// Panics caught in the removal listener and the timer listener.
    pub listener_panics: u64,
    /// Table rebuilds (growth or tombstone cleanup) since open, each an O(n)
    /// pause of one shard's writers (readers go on): a write latency spike
    /// to watch for.
    pub rehashes_total: u64,
    /// Bytes in the logs (persistence only).
    pub log_bytes: u64,
    /// Bytes the live sessions would take in a freshly compacted log.
    pub log_live_bytes: u64,
    /// Successful log flushes since open that synced something
    /// (persistence only; a flush of a log with nothing new is not one).
    /// In `Always` mode, acknowledged writes divided by this is the
    /// group-commit size.
    pub log_syncs: u64,
    /// Of `log_syncs`, those a `syncfs` of the logs' file system made
    /// (`SyncScope::FileSystem`): one `syncfs` counts once per log it
    /// synced.
    pub log_syncs_by_file_system: u64,
    /// Background compactions that failed (each retried on the next check).
    pub compaction_errors: u64,
    /// Panics caught in a pass of the sweeper or the compactor thread (a
    /// bug): the pass is cut short, counted, logged with the `tracing`
    /// feature, and the thread goes on with the next, so expiry and the
    /// `Interval` flushes never stop unseen.
    pub background_panics: u64,
    /// Touches a read could not hand to its log's queue (full): each leaves
    /// that session's logged access time one touch period further behind.
    pub touches_dropped: u64,
}
