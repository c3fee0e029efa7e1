//! Per-session state beside the metadata: topic subscriptions (with the
//! reverse index a server fans out from) and per-session rate limits,
//! shared by every backend through [`SessionState`].
//!
//! The state belongs to its session and is isolated from every other
//! session's: it is removed when the session expires, is deleted or is
//! rotated (`rotate` is the defence against session fixation: the new id
//! starts with the metadata and times, and no subscriptions or bucket).
//! A `put` over a live session (and `update`, `set_ttl`) keeps it: `put`
//! replaces the metadata and timeout of the same session, whose creation
//! time it keeps too. Session-scoped timers (the seed's pending-request
//! cleanup) are an embedded-engine feature: see `Engine::arm_timer`.
//!
//! On the embedded [`Engine`]: topics are logged and recovered (rate-limit
//! buckets are not: a restart refills them), each shard keeps its sessions'
//! state under its writer mutex so that it leaves in the same step as the
//! session, and beside it an index of each topic's subscribers in that
//! shard, so `subscribers` pages by id, merging the shards' pages, without
//! a scan of the sessions.
//! `engine/README.md` has the details and the bounds.

use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::id::SessionId;
use crate::limits::TOPIC_LEN_MAX;
use crate::store::SessionStore;

/// A token bucket: up to `capacity` tokens, refilled at `refill_per_sec`
/// tokens per second. A session's bucket starts full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Bucket {
    /// The most tokens the bucket holds (the burst), at least 1.
    pub capacity: u32,
    /// Tokens added per second, at least 1.
    pub refill_per_sec: u32,
}

/// What a [`SessionState::rate_limit`] check decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateDecision {
    /// The tokens were taken; `remaining` are left.
    Allowed {
        /// Tokens left after this charge (whole tokens).
        remaining: u32,
    },
    /// Not enough tokens; nothing was taken. Retry after this long.
    Limited {
        /// When enough tokens for this cost will have refilled.
        retry_after: Duration,
    },
}

/// Where a [`SessionState::subscribers`] listing continues. Opaque: pass back
/// what the previous page returned; its text form suits HTTP APIs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct TopicCursor(u128);

impl TopicCursor {
    /// The start of a listing.
    pub const START: TopicCursor = TopicCursor(0);

    /// A backend-defined position; for backends outside this crate.
    #[must_use]
    pub const fn new(position: u128) -> Self {
        Self(position)
    }

    /// The backend-defined position.
    #[must_use]
    pub const fn position(self) -> u128 {
        self.0
    }
}

impl fmt::Display for TopicCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

impl FromStr for TopicCursor {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let invalid = || Error::InvalidCursor {
            reason: format!(
                "{} is not a topic cursor (lowercase hexadecimal, as written)",
                crate::error::shown(s)
            ),
        };
        // One spelling per cursor, as `Display` writes it: lowercase, no
        // sign, no leading zero.
        let canonical = s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            && (s == "0" || !s.starts_with('0'));
        if !canonical {
            return Err(invalid());
        }
        u128::from_str_radix(s, 16)
            .map(TopicCursor)
            .map_err(|_| invalid())
    }
}

/// The text form, hexadecimal (feature `serde`).
#[cfg(feature = "serde")]
impl serde::Serialize for TopicCursor {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for TopicCursor {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// One page of a topic's live subscribers.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct TopicPage {
    /// Live sessions subscribed to the topic, each at most once per listing.
    pub ids: Vec<SessionId>,
    /// Where the next page starts; `None` when the listing is complete.
    pub next: Option<TopicCursor>,
}

/// Per-session subscriptions and rate limits, on top of [`SessionStore`].
///
/// Every method on an unknown or expired session returns `NotFound` and
/// changes nothing; its arguments are checked first, so a malformed topic
/// or bucket is `InvalidArgument` (or `LimitExceeded`) whatever the session.
/// None of them is activity: they do not slide the
/// session's inactivity deadline (call `touch` for that).
pub trait SessionState: SessionStore {
    /// Subscribes the session to `topic`; `true` if it was not subscribed.
    /// Topics are non-empty UTF-8 of at most `limits::TOPIC_LEN_MAX` bytes, at
    /// most `limits::TOPICS_PER_SESSION_MAX` per session (typed errors past
    /// either).
    fn subscribe(&self, id: &SessionId, topic: &str) -> impl Future<Output = Result<bool>> + Send;

    /// Unsubscribes the session from `topic`; `true` if it was subscribed.
    fn unsubscribe(&self, id: &SessionId, topic: &str) -> impl Future<Output = Result<bool>> + Send;

    /// The session's topics, in no particular order.
    fn topics(&self, id: &SessionId) -> impl Future<Output = Result<Vec<String>>> + Send;

    /// A page of at most `limit` live sessions subscribed to `topic` (the
    /// fan-out of a resource update), without scanning every session. A
    /// session subscribed for the whole listing is returned exactly once; one
    /// that subscribes or goes away meanwhile may or may not be.
    fn subscribers(
        &self,
        topic: &str,
        cursor: TopicCursor,
        limit: usize,
    ) -> impl Future<Output = Result<TopicPage>> + Send;

    /// Checks and charges `cost` tokens of the session's bucket in one
    /// atomic step. A session has one bucket; a call with other `bucket`
    /// parameters than the last re-shapes it (tokens capped at the new
    /// capacity).
    fn rate_limit(
        &self,
        id: &SessionId,
        bucket: Bucket,
        cost: u32,
    ) -> impl Future<Output = Result<RateDecision>> + Send;
}

/// The embedded engine: futures ready at their first poll (a call does
/// nothing until then), except that with `Durability::Always` a subscribe
/// or unsubscribe completes when its log record is durable (as a write of
/// `SessionStore` does).
impl SessionState for Engine {
    #[inline]
    async fn subscribe(&self, id: &SessionId, topic: &str) -> Result<bool> {
        self.settle_found_later(id, self.subscribe_pending(id, topic))
            .await
    }

    #[inline]
    async fn unsubscribe(&self, id: &SessionId, topic: &str) -> Result<bool> {
        self.settle_found_later(id, self.unsubscribe_pending(id, topic))
            .await
    }

    #[inline]
    async fn topics(&self, id: &SessionId) -> Result<Vec<String>> {
        Engine::topics(self, id)
    }

    #[inline]
    async fn subscribers(&self, topic: &str, cursor: TopicCursor, limit: usize) -> Result<TopicPage> {
        Engine::subscribers(self, topic, cursor, limit)
    }

    #[inline]
    async fn rate_limit(&self, id: &SessionId, bucket: Bucket, cost: u32) -> Result<RateDecision> {
        Engine::rate_limit(self, id, bucket, cost)
    }
}

/// A shared reference to a store with state has state (every call goes to `T`).
impl<T: SessionState> SessionState for &T {
    #[inline]
    fn subscribe(&self, id: &SessionId, topic: &str) -> impl Future<Output = Result<bool>> + Send {
        T::subscribe(self, id, topic)
    }

    #[inline]
    fn unsubscribe(&self, id: &SessionId, topic: &str) -> impl Future<Output = Result<bool>> + Send {
        T::unsubscribe(self, id, topic)
    }

    #[inline]
    fn topics(&self, id: &SessionId) -> impl Future<Output = Result<Vec<String>>> + Send {
        T::topics(self, id)
    }

    #[inline]
    fn subscribers(
        &self,
        topic: &str,
        cursor: TopicCursor,
        limit: usize,
    ) -> impl Future<Output = Result<TopicPage>> + Send {
        T::subscribers(self, topic, cursor, limit)
    }

    #[inline]
    fn rate_limit(
        &self,
        id: &SessionId,
        bucket: Bucket,
        cost: u32,
    ) -> impl Future<Output = Result<RateDecision>> + Send {
        T::rate_limit(self, id, bucket, cost)
    }
}

/// Checks a topic against the bounds every backend keeps (non-empty, at
/// most `TOPIC_LEN_MAX` bytes); for backends outside this crate too.
///
/// # Errors
/// [`Error::InvalidArgument`], [`Error::LimitExceeded`].
pub fn check_topic(topic: &str) -> Result<()> {
    if topic.is_empty() {
        return Err(Error::InvalidArgument {
            reason: "a topic is non-empty text".into(),
        });
    }
    if topic.len() > TOPIC_LEN_MAX {
        return Err(Error::LimitExceeded {
            what: "topic length in bytes (TOPIC_LEN_MAX)",
            len: topic.len(),
            max: TOPIC_LEN_MAX,
        });
    }
    Ok(())
}

/// Checks a bucket's shape and a charge against it, as every backend does;
/// for backends outside this crate too.
///
/// # Errors
/// [`Error::InvalidArgument`].
pub fn check_bucket(bucket: Bucket, cost: u32) -> Result<()> {
    if bucket.capacity == 0 || bucket.refill_per_sec == 0 {
        return Err(Error::InvalidArgument {
            reason: format!("a token bucket needs a capacity and a refill of at least 1, not {bucket:?}"),
        });
    }
    if cost > bucket.capacity {
        return Err(Error::InvalidArgument {
            reason: format!(
                "a charge of {cost} tokens can never fit a bucket of capacity {}",
                bucket.capacity
            ),
        });
    }
    Ok(())
}
