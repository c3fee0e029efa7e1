//! Per-session state on Redis ([`SessionState`]): subscriptions with the
//! reverse index a fan-out reads, and the rate-limit bucket.
//!
//! # Where it lives
//!
//! The truth is in the session's own hash (`scripts.rs` has the fields): a
//! subscription is the field `s:<topic>`, the bucket the fields `bk bt bc
//! br bw`. So the state expires, is deleted and is dropped by a rotation
//! with the session, atomically, and stays in its slot; each change is one
//! script on the session's master, which checks that the session exists
//! and the per-session bound in the same step.
//!
//! The reverse index is one sorted set per topic, at
//! `<prefix>t{<hash of the topic>}:<topic>` (`keys.rs`), in the topic's own
//! slot, so a fan-out reads one key instead of scanning every session.
//! Every member has score 0, so the set is ordered by the member's bytes:
//!
//! ```text
//!  0                16                               32
//! +----------------+--------------------------------+
//! | id (16 bytes)  | nonce (16 lowercase hex digits) |
//! +----------------+--------------------------------+
//! ```
//!
//! The id's raw bytes come first, so the order is the ids' order as
//! big-endian integers, and a page resumes "from id Y on" with the
//! inclusive bound `[Y` (Y's 16 bytes: every member whose first 16 bytes
//! are at least Y, none before, whatever bytes follow them):
//! [`TopicCursor`] is Y (0 is the start). A page that
//! filled up resumes after its last id X (Y = X + 1; the largest id has
//! nothing after it); one that stopped short (its time budget, its round
//! cap) at an id it did not return resumes at that id (see `resume_at`).
//! Within a page, each round resumes exactly past the last member read. The nonce is the random token of the subscribe that
//! made the subscription; the session's `s:<topic>` field holds the same.
//! Members of other lengths or with other bytes are not this store's: a
//! fan-out skips them (and leaves them), but counts them as read, so they
//! never make the index look exhausted.
//!
//! # The index is a hint, the field is the truth
//!
//! A session key and a topic key are in different slots (on different
//! masters, in a cluster), so no script can change both: a subscribe runs
//! its script on the session first, then adds the entry (`ZADD`, in the
//! index script, which also sets the index's TTL: below; two round
//! trips); an unsubscribe runs its script, then `ZREM`s the entry. The
//! index can therefore hold entries whose subscription is gone (the
//! `ZREM` failed, the session expired, was deleted or rotated): a fan-out
//! checks each entry's session (`HGET key s:<topic>`, pipelined per
//! master as `get_many`) and returns only sessions that still have the
//! field, removing the entries it found stale. It never returns a session
//! without the field, whatever the index says.
//!
//! The one thing the index must not lose is an entry whose subscription
//! still stands. Entries are removed in two places, and both are safe:
//!
//! - an unsubscribe removes `id ‖ n`, where `n` is the nonce its script
//!   found in the field and removed, in the same step;
//! - a fan-out removes `id ‖ n` only after it read the field and found it
//!   absent or holding another nonce.
//!
//! Either way the field held no `n` at that moment, and no later
//! subscribe can set `n` again: each subscribe call draws a fresh nonce,
//! and its index write comes after its script's last try. A subscription made
//! meanwhile has a nonce of its own, so a new member, which those removals
//! cannot touch: an unsubscribe racing a subscribe of the same topic by the
//! same session, in any order, leaves the index a superset of the truth.
//! A subscribe re-adds its entry even when the session was already
//! subscribed (with the nonce found in the field): an entry lost earlier (a
//! `ZADD` that failed, a failover under `Replication::Async`) comes back
//! with the next subscribe.
//!
//! # The index's TTL: past the latest lifetime cap of its sessions
//!
//! An index holds entries until a fan-out or an unsubscribe of its topic
//! removes them: an index nobody fans out would keep the entries of every
//! session that ever subscribed and went (expired, deleted, rotated). So
//! the index key has a TTL that ends after every session that subscribed
//! to it. A topic key lives in its own slot, so no script that slides a
//! session's deadline (every activity) can touch its topics' indexes, and
//! sliding them from the client would cost a round trip per topic on
//! every `get`: the TTL can only follow what bounds a session's life for
//! good, its lifetime cap (`l`, from `c`: the session key's TTL never
//! passes `c + l`, however active the session; `arm` in `scripts.rs`).
//!
//! - The subscribe script reports the ms the session has left before its
//!   cap; the index write is one script on the topic's key (the same round
//!   trip as a bare `ZADD`) that adds the entry and pushes the index's TTL
//!   up to that plus `TOPIC_INDEX_TTL_MARGIN` (clocks that disagree),
//!   never down. A subscribe of a session already subscribed does it too.
//! - A session without a cap has no such bound (an active one lives on
//!   indefinitely): its index write removes the TTL (`PERSIST`), and a
//!   later capped subscriber does not bring one back. Such an index
//!   shrinks by fan-outs, unsubscribes (the removal of its last entry
//!   removes the key) and tidying: every `INDEX_TIDY_EVERY`th new
//!   subscription of the store checks a few entries of its topic's index
//!   from a random point and removes the stale ones (the fan-out's
//!   removal), so an index nobody fans out but that still gets new
//!   subscribers stays near its live ones. One that gets neither is
//!   tidied by the sweep `cleanup_expired` runs
//!   ([`RedisStore::tidy_topic_indexes`]: every index key of the store,
//!   every entry checked, the fan-out's removal).
//! - `set_lifetime` (which may lengthen or lift a cap) gets the session's
//!   subscriptions back from its script and redoes each one's index write
//!   with the new bound (one request per topic, all at once): otherwise an
//!   index could expire under a live subscription.
//!
//! So an index outlives each of its sessions, and with capped sessions
//! (`RedisConfig::max_lifetime`) it expires at most the margin after the
//! latest cap among them ends, whether anyone fans it out or not. The TTL
//! is a bound, not an exact end: a cap lowered later, or the session with
//! the latest cap gone early, leaves it where it was.
//!
//! # Retries
//!
//! Subscribe and unsubscribe are idempotent (they set and remove), and
//! resent like every write (`request.rs`): a subscribe resent after a lost
//! reply finds its own nonce in the field and reports `true`, as the first
//! try would have; one that finds no subscription makes none and fails
//! with `OutcomeUnknown` (the first try may have subscribed and another
//! client unsubscribed since: subscribing again would undo that); an
//! unsubscribe resent after a doubtful try that finds
//! no subscription counts it as its own (as `delete` does). A rate-limit
//! charge is not idempotent: resent blindly it would charge twice. It
//! carries a token (as an insert does); a resend after a doubtful try
//! asks the script only whether its token is the bucket's last charge:
//! if so it reports that charge (`Allowed`, with the tokens now), and if
//! not it charges nothing and the call fails with `OutcomeUnknown` (the
//! earlier try may have charged, or been overtaken by another charge).

use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rand::Rng;
use session_engine::limits::{LIST_PAGE_MAX, TOPICS_PER_SESSION_MAX};
use session_engine::{
    check_bucket, check_topic, Bucket, Error, RateDecision, Result, SessionId, SessionState, TopicCursor,
    TopicPage,
};

use crate::limits::{
    COUNT_SCAN_CALLS_MAX, INDEX_SWEEP_IN_FLIGHT, INDEX_TIDY_BUDGET, INDEX_TIDY_ENTRIES, INDEX_TIDY_EVERY,
    LIST_SCAN_BUDGET_DIVISOR, PIPELINES_IN_FLIGHT_MAX, SCAN_CALLS_MAX, SCAN_COUNT_MAX,
    TOPIC_INDEX_TTL_MARGIN,
};
use crate::list;
use crate::reply::{self, Charge, Life, Subscribed, Unsubscribed, NONCE_LEN};
use crate::request::{join_all, per_route, Acked, BatchReply, Inner, Kind, Reply};
use crate::store::RedisStore;

/// Bytes of an index member: the id, then the nonce (see the module docs).
const MEMBER_LEN: usize = 16 + NONCE_LEN;

/// The prefix of a subscription's field in the session's hash.
const FIELD_PREFIX: &[u8] = b"s:";

/// `s:<topic>`, the subscription's field.
fn field(topic: &str) -> Vec<u8> {
    let mut field = Vec::with_capacity(FIELD_PREFIX.len() + topic.len());
    field.extend_from_slice(FIELD_PREFIX);
    field.extend_from_slice(topic.as_bytes());
    field
}

/// A fresh nonce: a random `u64` in [`NONCE_LEN`] lowercase hex digits.
fn fresh_nonce() -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    let n: u64 = rand::rng().random();
    for (i, digit) in nonce.iter_mut().enumerate() {
        let nibble = (n >> ((NONCE_LEN - 1 - i) * 4)) & 0xf;
        *digit = b"0123456789abcdef"[usize::try_from(nibble).expect("a nibble")];
    }
    nonce
}

/// The index member of `id`'s subscription of nonce `nonce`.
fn member(id: &SessionId, nonce: &[u8; NONCE_LEN]) -> [u8; MEMBER_LEN] {
    let mut member = [0u8; MEMBER_LEN];
    member[..16].copy_from_slice(&id.to_bytes());
    member[16..].copy_from_slice(nonce);
    member
}

/// A member's id and nonce; `None` for bytes this store did not write.
fn parse_member(member: &[u8]) -> Option<(SessionId, [u8; NONCE_LEN])> {
    if member.len() != MEMBER_LEN {
        return None;
    }
    let id = SessionId::from_bytes(member[..16].try_into().ok()?);
    Some((id, reply::nonce(&member[16..])?))
}

/// The cursor of a listing that continues after `id`; `None` after the
/// largest id (nothing can follow it).
fn cursor_after(id: &SessionId) -> Option<TopicCursor> {
    u128::from_be_bytes(id.to_bytes())
        .checked_add(1)
        .map(TopicCursor::new)
}

/// The `ZRANGEBYLEX` lower bound where `cursor` resumes: `-` at the start,
/// else `[<cursor's 16 bytes>`, inclusive: every member whose first 16
/// bytes are at least the cursor (a member that is a longer string sorts
/// after its prefix), and none before it, whatever bytes follow them.
fn lower_bound(cursor: TopicCursor) -> Vec<u8> {
    if cursor == TopicCursor::START {
        return b"-".to_vec();
    }
    let mut bound = Vec::with_capacity(17);
    bound.push(b'[');
    bound.extend_from_slice(&cursor.position().to_be_bytes());
    bound
}

/// The index script's TTL argument for a subscriber that can live `left`:
/// that and the margin (no bound: `0`, no TTL).
fn index_ttl_field(left: Life) -> String {
    match left {
        Life::Unbounded => "0".to_owned(),
        Life::LeftMs(ms) => {
            let margin = u64::try_from(TOPIC_INDEX_TTL_MARGIN.as_millis()).unwrap_or(u64::MAX);
            ms.max(1).saturating_add(margin).to_string()
        }
    }
}

/// `(<member>`: the exclusive bound just past one index member.
fn after_member(member: &[u8]) -> Vec<u8> {
    let mut bound = Vec::with_capacity(1 + member.len());
    bound.push(b'(');
    bound.extend_from_slice(member);
    bound
}

/// The id an index member sorts under: its first 16 bytes (a shorter
/// member, which this store did not write, padded with zeros).
fn member_id(member: &[u8]) -> SessionId {
    let mut id = [0u8; 16];
    let n = member.len().min(16);
    id[..n].copy_from_slice(&member[..n]);
    SessionId::from_bytes(id)
}

/// Where the next page resumes when a page stops short (its time budget or
/// its round cap) after reading `last`: at `last`'s id, not past it. For a
/// member of this store's that changes nothing (any entry of a session
/// tells whether it is subscribed, so the page checked it), but a member
/// of someone else's making that starts with a session's id can sort
/// before that session's entries, which the page has not read. Past it
/// if the page returned that id (returned once), or if resuming at it
/// would not move on from `from`, the page's own cursor (every page makes
/// progress). `None` after the largest id.
fn resume_at(last: &[u8], returned: Option<&SessionId>, from: TopicCursor) -> Option<TopicCursor> {
    let id = member_id(last);
    let at = TopicCursor::new(u128::from_be_bytes(id.to_bytes()));
    if returned == Some(&id) || at.position() <= from.position() {
        cursor_after(&id)
    } else {
        Some(at)
    }
}

/// One `ZRANGEBYLEX` of a topic's index.
struct Batch {
    /// The members this store wrote, as id and nonce, in index order.
    entries: Vec<(SessionId, [u8; NONCE_LEN])>,
    /// Members read, those skipped included: fewer than asked for means
    /// the index ends here.
    read: usize,
    /// The last member read, whoever wrote it.
    last: Option<Vec<u8>>,
}

/// What a fan-out found for one index entry.
enum Check {
    /// The session has the field with this entry's nonce: subscribed.
    Live,
    /// The session has the field with another nonce (it subscribed again
    /// since): subscribed, and this entry is stale.
    LiveElsewhere,
    /// No field: the entry is stale.
    Stale,
    /// Undecided (the session's key holds foreign data: `HGET` met another
    /// type, or the field is not a nonce): neither returned nor removed.
    Unknown,
}

impl RedisStore {
    /// Subscribes the session to `topic` (see [`SessionState::subscribe`]):
    /// one script on the session (exists? subscribed? under the limit?),
    /// then the entry added to the topic's index (the index script on the
    /// topic's master: `ZADD`, and the index's TTL pushed up to the
    /// session's lifetime cap, see the module docs): two round trips, both
    /// writes (with
    /// [`Replication::Wait`](crate::Replication::Wait) each waits for its
    /// replicas). Not activity.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty topic, [`Error::LimitExceeded`]
    /// past `TOPIC_LEN_MAX` bytes (nothing sent) or for a session already
    /// at `TOPICS_PER_SESSION_MAX` topics (nothing changed; under `WAIT`
    /// answered once the replicas hold that count, else `OutcomeUnknown`);
    /// [`Error::NotFound`]; [`Error::OutcomeUnknown`] if a try failed in
    /// doubt and the resend found no subscription (made by that try and
    /// undone since, or never made: nothing was made again), or no session
    /// (that try may have subscribed before it went); the request
    /// errors of the crate docs. An error from the index write is
    /// [`Error::OutcomeUnknown`]: the subscription is in the session, maybe
    /// not in the index (a fan-out may miss it): subscribe again (the same
    /// call re-adds the entry).
    pub async fn subscribe(&self, id: &SessionId, topic: &str) -> Result<bool> {
        check_topic(topic)?;
        let inner = &self.inner;
        let deadline = inner.deadline();
        let key = inner.keys.key(id);
        let field = field(topic);
        let nonce = fresh_nonce();
        let max = TOPICS_PER_SESSION_MAX.to_string();
        let script = &inner.scripts.subscribe;
        let reply = inner
            .request(Kind::Write, deadline, &key, |attempt| {
                let resend: &[u8] = if attempt.fence { b"1" } else { b"0" };
                Cow::Owned(script.cmd(attempt.eval, &key, &[&field, &nonce, max.as_bytes(), resend]))
            })
            .await?;
        let outcome = match reply::subscribed(&script.command, &reply.value.value)? {
            Subscribed::Absent => {
                return Err(gone_confirmed(inner, &key, deadline, &reply, "subscribe").await)
            }
            Subscribed::Doubt => {
                return Err(Error::OutcomeUnknown {
                    reason: "a subscribe failed in doubt and on resending the session had no such \
                             subscription: it may have been made and undone since (it was not made again)"
                        .into(),
                })
            }
            Subscribed::Full(held) => {
                // Counted with what other clients subscribed, maybe not
                // replicated yet: refused once the replicas have it, as
                // a change found made.
                inner.acknowledge(reply.value.replicas, ())?;
                return Err(Error::LimitExceeded {
                    what: "topics of one session (TOPICS_PER_SESSION_MAX)",
                    len: usize::try_from(held).unwrap_or(usize::MAX).saturating_add(1),
                    max: TOPICS_PER_SESSION_MAX,
                });
            }
            Subscribed::Now(n, left) => (true, n, left),
            Subscribed::Already(n, left) => (false, n, left),
        };
        let (new, indexed, left) = outcome;
        // The subscription stands in the session on its master whatever
        // `WAIT` says: its index entry follows first, or a fan-out would
        // never list a subscriber that stands (a short `WAIT` is reported
        // after, as `set_lifetime` does). An index write's error comes
        // after the subscription was made: not "not applied".
        let entry = self
            .index_add(topic, &member(id, &indexed), left, deadline)
            .await
            .map_err(|e| Error::OutcomeUnknown {
                reason: format!(
                    "the subscription is made, but its entry in the topic's index may be missing ({e}): \
                     subscribe again"
                ),
            });
        inner.acknowledge(reply.value.replicas, ())?;
        entry?;
        if new
            && inner
                .subscriptions
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(INDEX_TIDY_EVERY)
        {
            self.tidy_index(topic, deadline.min(Instant::now() + INDEX_TIDY_BUDGET))
                .await;
        }
        Ok(new)
    }

    /// Checks [`INDEX_TIDY_ENTRIES`] entries of `topic`'s index from a
    /// random point on and removes those whose subscription is gone (see
    /// [`INDEX_TIDY_EVERY`]; the removal is the fan-out's, safe whenever an
    /// entry was found stale: module docs). Best effort, by `deadline`
    /// (the caller's, or `INDEX_TIDY_BUDGET` from now): what it cannot do,
    /// a later tidying or fan-out does.
    async fn tidy_index(&self, topic: &str, deadline: Instant) {
        let inner = &self.inner;
        let topic_key = inner.keys.topic_key(topic);
        let from = TopicCursor::new(rand::rng().random::<u128>().max(1));
        let Ok(Batch { entries, .. }) = self
            .index_range(&topic_key, &lower_bound(from), INDEX_TIDY_ENTRIES, deadline)
            .await
        else {
            return;
        };
        let Ok(checks) = self.check_entries(&entries, &field(topic), deadline).await else {
            return;
        };
        let _ = self.remove_stale(&topic_key, &entries, &checks, deadline).await;
    }

    /// Removes from the index at `topic_key` the `entries` whose `checks`
    /// found them stale (the fan-out's rule: module docs), in one `ZREM`:
    /// the number removed (nothing sent if none is).
    async fn remove_stale(
        &self,
        topic_key: &[u8],
        entries: &[(SessionId, [u8; NONCE_LEN])],
        checks: &[Check],
        deadline: Instant,
    ) -> Result<usize> {
        let mut zrem = redis::cmd("ZREM");
        zrem.arg(topic_key);
        let mut stale = 0;
        for ((id, nonce), check) in entries.iter().zip(checks) {
            if matches!(check, Check::Stale | Check::LiveElsewhere) {
                zrem.arg(&member(id, nonce)[..]);
                stale += 1;
            }
        }
        if stale == 0 {
            return Ok(0);
        }
        let reply = self
            .inner
            .request(Kind::Unacked, deadline, topic_key, |_| Cow::Borrowed(&zrem))
            .await?;
        let value = &reply.value.value;
        let n = reply::number(value).ok_or_else(|| crate::error::protocol("ZREM", value, true))?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// Checks every entry of `topic`'s index at `topic_key`, from the
    /// start, and removes the stale ones (see
    /// [`RedisStore::tidy_topic_indexes`]): the number removed.
    async fn tidy_whole_index(&self, topic_key: &[u8], topic: &str) -> Result<usize> {
        let inner = &self.inner;
        let field = field(topic);
        let mut lower = lower_bound(TopicCursor::START);
        let mut removed = 0;
        loop {
            let deadline = inner.deadline();
            let Batch { entries, read, last } = self
                .index_range(topic_key, &lower, SCAN_COUNT_MAX, deadline)
                .await?;
            let checks = self.check_entries(&entries, &field, deadline).await?;
            removed += self.remove_stale(topic_key, &entries, &checks, deadline).await?;
            match last {
                Some(last) if read == SCAN_COUNT_MAX => lower = after_member(&last),
                _ => return Ok(removed),
            }
        }
    }

    /// Adds `member` to `topic`'s index and pushes the index's TTL up to
    /// the subscriber's life `left` and [`TOPIC_INDEX_TTL_MARGIN`] (none
    /// if nothing bounds its life: see the module docs): the index script, on the topic's
    /// master; a write, acknowledged as every write.
    async fn index_add(
        &self,
        topic: &str,
        member: &[u8; MEMBER_LEN],
        left: Life,
        deadline: Instant,
    ) -> Result<()> {
        let inner = &self.inner;
        let topic_key = inner.keys.topic_key(topic);
        let ttl = index_ttl_field(left);
        let script = &inner.scripts.index_add;
        let added = inner
            .script(
                Kind::Write,
                deadline,
                script,
                &topic_key,
                &[member, ttl.as_bytes()],
            )
            .await?;
        reply::flag(&script.command, &added.value.value, true)?;
        inner.acknowledge(added.value.replicas, ())
    }

    /// After `set_lifetime` changed the cap of session `id`, which has the
    /// `subscriptions` (topic, nonce) and now `left` to live: each entry
    /// re-added with an index TTL that reaches the new cap (a longer or
    /// lifted cap must not let an index expire before the session), all
    /// topics at once. The first error is returned; the cap is set either
    /// way, and subscribing again (or the same `set_lifetime` again) mends
    /// an index whose TTL fell short.
    pub(crate) async fn rearm_indexes(
        &self,
        id: &SessionId,
        left: Life,
        subscriptions: &[(String, [u8; NONCE_LEN])],
        deadline: Instant,
    ) -> Result<()> {
        let members: Vec<[u8; MEMBER_LEN]> = subscriptions.iter().map(|(_, n)| member(id, n)).collect();
        let done = join_all(
            subscriptions
                .iter()
                .zip(&members)
                .map(|((topic, _), member)| self.index_add(topic, member, left, deadline))
                .collect(),
        )
        .await;
        done.into_iter().collect()
    }

    /// Unsubscribes the session from `topic` (see
    /// [`SessionState::unsubscribe`]): one script on the session, then, if
    /// it was subscribed, its entry removed from the topic's index (`ZREM`,
    /// not waited for: an entry left behind is stale, and a fan-out removes
    /// it). Not activity.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`], [`Error::LimitExceeded`] for a topic as
    /// [`RedisStore::subscribe`]; [`Error::NotFound`];
    /// [`Error::OutcomeUnknown`] if a try failed in doubt and the resend
    /// found the session subscribed, by a subscription it cannot tell from
    /// one made after its first try removed the one it was called for
    /// (nothing was removed), or found no session (that try may have
    /// removed it before the session went); the request errors of the
    /// crate docs.
    pub async fn unsubscribe(&self, id: &SessionId, topic: &str) -> Result<bool> {
        check_topic(topic)?;
        let inner = &self.inner;
        let deadline = inner.deadline();
        let key = inner.keys.key(id);
        let field = field(topic);
        let token = fresh_nonce();
        let script = &inner.scripts.unsubscribe;
        let reply = inner
            .request(Kind::Write, deadline, &key, |attempt| {
                let resend: &[u8] = if attempt.fence { b"1" } else { b"0" };
                Cow::Owned(script.cmd(attempt.eval, &key, &[&field, &token, resend]))
            })
            .await?;
        let nonce = match reply::unsubscribed(&script.command, &reply.value.value)? {
            Unsubscribed::Absent => {
                return Err(gone_confirmed(inner, &key, deadline, &reply, "unsubscribe").await)
            }
            // After a doubtful try: most likely that try's own (as `delete`).
            Unsubscribed::WasNot => return inner.acknowledge(reply.value.replicas, reply.resent_after_doubt),
            Unsubscribed::Was(nonce) => nonce,
            Unsubscribed::Doubt => {
                return Err(Error::OutcomeUnknown {
                    reason: "an unsubscribe failed in doubt and on resending the session was subscribed: \
                             by a subscribe made after the first try removed the subscription, or the first \
                             try did not run (nothing was removed: unsubscribe again to remove it)"
                        .into(),
                })
            }
        };
        inner.acknowledge(reply.value.replicas, ())?;
        let topic_key = inner.keys.topic_key(topic);
        let mut zrem = redis::cmd("ZREM");
        zrem.arg(&topic_key).arg(&member(id, &nonce)[..]);
        // The subscription is gone (the truth); a failure here leaves a
        // stale entry, which the next fan-out finds and removes.
        let _ = inner
            .request(Kind::Unacked, deadline, &topic_key, |_| Cow::Borrowed(&zrem))
            .await;
        Ok(true)
    }

    /// The session's topics, in no particular order (`HKEYS`: one round
    /// trip, at most `TOPICS_PER_SESSION_MAX` topics and the session's own
    /// dozen fields). Not activity.
    ///
    /// # Errors
    /// [`Error::NotFound`]; the request errors of the crate docs.
    pub async fn topics(&self, id: &SessionId) -> Result<Vec<String>> {
        let inner = &self.inner;
        let key = inner.keys.key(id);
        let mut hkeys = redis::cmd("HKEYS");
        hkeys.arg(&key);
        let reply = inner.command(Kind::Read, inner.deadline(), &key, &hkeys).await?;
        let fields = reply::strings("HKEYS", reply.value)?;
        if fields.is_empty() {
            return Err(Error::NotFound);
        }
        fields
            .into_iter()
            .filter_map(|f| f.strip_prefix(FIELD_PREFIX).map(<[u8]>::to_vec))
            .map(|topic| {
                String::from_utf8(topic).map_err(|e| {
                    crate::error::protocol("HKEYS", &redis::Value::BulkString(e.into_bytes()), false)
                })
            })
            .collect()
    }

    /// A page of at most `limit` live sessions subscribed to `topic` (see
    /// [`SessionState::subscribers`]), in the order of their ids' bytes.
    /// Each round: `ZRANGEBYLEX` of the index from the cursor, then the
    /// entries' sessions checked (`HGET key s:<topic>`, one pipeline per
    /// master, all at once); entries found stale are removed at the end of
    /// the page (one `ZREM`, not waited for). So a page costs about 3 round
    /// trips, more if stale entries crowd it. One request timeout for the
    /// page.
    ///
    /// A page may hold fewer than `limit` sessions and still have a `next`:
    /// when half the request timeout is gone, or after `SCAN_CALLS_MAX`
    /// rounds, it returns what it found (stale entries make rounds that
    /// find nothing). `next` is `None` only when the index is exhausted. A
    /// session subscribed for the whole listing is returned exactly once;
    /// one that subscribes or goes away meanwhile may or may not be.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`], [`Error::LimitExceeded`] for a topic as
    /// [`RedisStore::subscribe`]; [`Error::InvalidPageSize`] for a `limit`
    /// of 0 or above `LIST_PAGE_MAX`; the request errors of the crate docs.
    pub async fn subscribers(&self, topic: &str, cursor: TopicCursor, limit: usize) -> Result<TopicPage> {
        check_topic(topic)?;
        if limit == 0 || limit > LIST_PAGE_MAX {
            return Err(Error::InvalidPageSize {
                limit,
                max: LIST_PAGE_MAX,
            });
        }
        let inner = &self.inner;
        let started = Instant::now();
        let deadline = started + inner.config.request_timeout;
        let rounds_until = started + inner.config.request_timeout / LIST_SCAN_BUDGET_DIVISOR;
        let topic_key = inner.keys.topic_key(topic);
        let field = field(topic);
        let mut ids = Vec::with_capacity(limit);
        let mut stale: Vec<[u8; MEMBER_LEN]> = Vec::new();
        let mut lower = lower_bound(cursor);
        let mut next = None;
        for _ in 0..SCAN_CALLS_MAX {
            // A few more than the room left: stale entries take no room.
            let want = (limit - ids.len() + 8).min(SCAN_COUNT_MAX);
            let Batch { entries, read, last } = self.index_range(&topic_key, &lower, want, deadline).await?;
            // By what the index held, not by what parsed: a member of
            // someone else's making takes its place in the batch too.
            let exhausted = read < want;
            let checks = self.check_entries(&entries, &field, deadline).await?;
            let mut full_at = None;
            for (k, ((id, nonce), check)) in entries.iter().zip(&checks).enumerate() {
                let live = matches!(check, Check::Live | Check::LiveElsewhere);
                if live && full_at.is_none() && ids.last() != Some(id) {
                    ids.push(*id);
                    if ids.len() == limit {
                        full_at = Some(k);
                    }
                }
                // Past the page's end too: removing an entry is safe
                // whenever it was found stale (module docs).
                let entry_stale = matches!(check, Check::Stale | Check::LiveElsewhere);
                if entry_stale && stale.len() < SCAN_COUNT_MAX {
                    stale.push(member(id, nonce));
                }
            }
            if let Some(k) = full_at {
                // The next page resumes past every entry of the last id;
                // none if nothing but stale entries follow it.
                let last = ids[limit - 1];
                let more = entries[k + 1..]
                    .iter()
                    .zip(&checks[k + 1..])
                    .any(|((id, _), check)| *id != last && !matches!(check, Check::Stale));
                // (An undecided entry counts as more: the next page says.)
                next = if exhausted && !more {
                    None
                } else {
                    cursor_after(&last)
                };
                break;
            }
            let Some(last) = last.filter(|_| !exhausted) else {
                next = None; // the index is exhausted
                break;
            };
            // Until a later round says otherwise, the listing resumes
            // here: a page that stops for its time budget or its round cap
            // (`SCAN_CALLS_MAX`) has not seen the index's end.
            next = resume_at(&last, ids.last(), cursor);
            if next.is_none() || Instant::now() >= rounds_until {
                break;
            }
            // Within the page, exactly past the last member read, whoever
            // wrote it (a batch of foreign members alone still moves on).
            lower = after_member(&last);
        }
        if !stale.is_empty() {
            let mut zrem = redis::cmd("ZREM");
            zrem.arg(&topic_key);
            for m in &stale {
                zrem.arg(&m[..]);
            }
            // A hint's cleanup: if it fails, the next fan-out finds them.
            let _ = inner
                .request(Kind::Unacked, deadline, &topic_key, |_| Cow::Borrowed(&zrem))
                .await;
        }
        let mut page = TopicPage::default();
        page.ids = ids;
        page.next = next;
        Ok(page)
    }

    /// Sweeps every topic index of this store (`SCAN` of the index keys on
    /// each master) and removes the entries whose subscription is gone,
    /// the index keys left with none (Redis removes an emptied sorted set):
    /// what keeps an index without a TTL (an uncapped subscriber's) bounded
    /// when its topic gets no fan-out and no new subscriber after its
    /// subscribers went. [`RedisStore::cleanup_expired`] runs it. Returns
    /// the entries removed.
    ///
    /// Every entry's session is checked: per index about three round trips
    /// (`ZRANGEBYLEX`, one `HGET` pipeline per master, `ZREM` if any is
    /// stale) per [`SCAN_COUNT_MAX`] entries, each such batch within a
    /// request timeout of its own, [`INDEX_SWEEP_IN_FLIGHT`] indexes at a
    /// time; plus a `SCAN` per 1000 keys of each master. Its time grows
    /// with the number of topics: run it from a background task, not per
    /// request. Removes only entries it found stale (the
    /// fan-out's rule: module docs), so it never loses a live subscription,
    /// whatever runs beside it.
    ///
    /// # Errors
    /// The first error met (the request errors of the crate docs), once
    /// the sweep has gone on past it: an index that fails is left for the
    /// next sweep, a master whose `SCAN` fails ends that master's part, and
    /// what was removed stays removed.
    pub async fn tidy_topic_indexes(&self) -> Result<usize> {
        let inner = &self.inner;
        let pattern = inner.keys.topic_scan_pattern();
        let mut removed = 0;
        let mut first_error = None;
        for shard in &inner.topology(inner.deadline()).await? {
            let mut cursor = 0;
            let mut process = None;
            for calls in 1.. {
                if calls > COUNT_SCAN_CALLS_MAX {
                    first_error.get_or_insert(Error::Unavailable {
                        reason: format!(
                            "the master at {}:{} gave more than {COUNT_SCAN_CALLS_MAX} SCAN cursors: \
                             its topic indexes were swept in part",
                            shard.host, shard.port
                        ),
                    });
                    break;
                }
                let found = (cursor, &pattern[..], Some("zset"));
                let (next, keys, answered_by) =
                    match list::scan(inner, shard, found, SCAN_COUNT_MAX, inner.deadline()).await {
                        Ok(scanned) => scanned,
                        Err(e) => {
                            first_error.get_or_insert(e);
                            break;
                        }
                    };
                if process
                    .replace(answered_by)
                    .is_some_and(|mark| mark != answered_by)
                    && cursor != 0
                {
                    // Another process (a restart, a promoted replica): the
                    // cursor means nothing there; this master from its
                    // start (tidying an index again removes nothing more).
                    cursor = 0;
                    continue;
                }
                // Another program's key that matches the pattern is not an
                // index: its tag is not its topic's hash.
                let indexes: Vec<(&[u8], &str)> = keys
                    .iter()
                    .filter_map(|key| Some((&key[..], inner.keys.parse_topic_key(key)?)))
                    .collect();
                for group in indexes.chunks(INDEX_SWEEP_IN_FLIGHT) {
                    let tidied = join_all(
                        group
                            .iter()
                            .map(|&(key, topic)| self.tidy_whole_index(key, topic))
                            .collect(),
                    )
                    .await;
                    for outcome in tidied {
                        match outcome {
                            Ok(n) => removed += n,
                            Err(e) => {
                                first_error.get_or_insert(e);
                            }
                        }
                    }
                }
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        first_error.map_or(Ok(removed), Err)
    }

    /// Checks and charges `cost` tokens of the session's bucket (see
    /// [`SessionState::rate_limit`]): one script, one round trip, on the
    /// session's master, timed by the server's clock. Not activity. Not
    /// waited for with [`Replication::Wait`](crate::Replication::Wait): a
    /// charge lost in a failover gives its tokens back, which is cheaper
    /// for everyone than a replica round trip on every request.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a capacity or refill of 0 or a `cost`
    /// above the capacity (nothing sent); [`Error::NotFound`];
    /// [`Error::OutcomeUnknown`] if a try failed in doubt and the resend
    /// cannot tell whether it charged (see the module docs: it charges
    /// nothing itself), or finds no session; the request errors of the
    /// crate docs.
    pub async fn rate_limit(&self, id: &SessionId, bucket: Bucket, cost: u32) -> Result<RateDecision> {
        check_bucket(bucket, cost)?;
        let inner = &self.inner;
        let key = inner.keys.key(id);
        let capacity = bucket.capacity.to_string();
        let refill = bucket.refill_per_sec.to_string();
        let cost_text = cost.to_string();
        let token = rand::rng().random::<u64>().to_string();
        let script = &inner.scripts.rate_limit;
        let reply = inner
            .request(Kind::Unacked, inner.deadline(), &key, |attempt| {
                let resend: &[u8] = if attempt.fence { b"1" } else { b"0" };
                Cow::Owned(script.cmd(
                    attempt.eval,
                    &key,
                    &[
                        capacity.as_bytes(),
                        refill.as_bytes(),
                        cost_text.as_bytes(),
                        token.as_bytes(),
                        resend,
                    ],
                ))
            })
            .await?;
        match reply::charge(&script.command, &reply.value.value)? {
            Charge::Absent => Err(gone(reply.resent_after_doubt, "rate-limit charge")),
            Charge::Allowed(remaining) => Ok(RateDecision::Allowed { remaining }),
            Charge::Limited(ms) => Ok(RateDecision::Limited {
                retry_after: Duration::from_millis(ms),
            }),
            Charge::Doubt => Err(Error::OutcomeUnknown {
                reason: "a rate-limit charge failed in doubt and, on resending, the bucket's last charge \
                         was not this one: it may or may not have been charged (nothing was charged again)"
                    .into(),
            }),
        }
    }
}

/// A state write that found its session absent: `NotFound`, unless a try
/// of it failed in doubt before (that try may have applied, and the
/// session have been deleted or rotated since: whether it is in cannot be
/// told).
fn gone(resent_after_doubt: bool, what: &str) -> Error {
    if resent_after_doubt {
        Error::OutcomeUnknown {
            reason: format!(
                "a {what} failed in doubt and the session was gone when it was resent: the first try may \
                 have applied before the session went"
            ),
        }
    } else {
        Error::NotFound
    }
}

/// `gone` for a write that waits for its replicas: a `NotFound` answered
/// once they have the session's end (see `Inner::confirm_found`).
async fn gone_confirmed(
    inner: &crate::request::Inner,
    key: &[u8],
    deadline: Instant,
    reply: &Reply<Acked>,
    what: &str,
) -> Error {
    match gone(reply.resent_after_doubt, what) {
        Error::NotFound => {
            inner
                .confirm_found(key, deadline, Error::NotFound, Some(&reply.value.replicas))
                .await
        }
        doubt => doubt,
    }
}

/// The parts of a fan-out that are not public API.
impl RedisStore {
    /// Up to `want` index members from `lower` on (`ZRANGEBYLEX`), as
    /// entries; members this store did not write are skipped, but counted
    /// in [`Batch::read`] and [`Batch::last`].
    async fn index_range(
        &self,
        topic_key: &[u8],
        lower: &[u8],
        want: usize,
        deadline: Instant,
    ) -> Result<Batch> {
        let mut range = redis::cmd("ZRANGEBYLEX");
        range
            .arg(topic_key)
            .arg(lower)
            .arg("+")
            .arg("LIMIT")
            .arg(0)
            .arg(want);
        let reply = self
            .inner
            .command(Kind::Read, deadline, topic_key, &range)
            .await?;
        let members = reply::strings("ZRANGEBYLEX", reply.value)?;
        if members.len() > want {
            return Err(crate::error::protocol(
                "ZRANGEBYLEX",
                &redis::Value::Int(i64::try_from(members.len()).unwrap_or(i64::MAX)),
                false,
            ));
        }
        Ok(Batch {
            entries: members.iter().filter_map(|m| parse_member(m)).collect(),
            read: members.len(),
            last: members.last().cloned(),
        })
    }

    /// Checks each entry's session: `HGET key s:<topic>`, pipelined per
    /// master as `get_many` (a key its master could not serve is asked on
    /// its own). A master that does not answer fails the page: a session
    /// is never left out of a fan-out because its master was slow.
    async fn check_entries(
        &self,
        entries: &[(SessionId, [u8; NONCE_LEN])],
        field: &[u8],
        deadline: Instant,
    ) -> Result<Vec<Check>> {
        const COMMAND: &str = "HGET (subscribers)";
        let inner: &Inner = &self.inner;
        let keys: Vec<Vec<u8>> = entries.iter().map(|(id, _)| inner.keys.key(id)).collect();
        let hget = |key: &[u8]| {
            let mut cmd = redis::cmd("HGET");
            cmd.arg(key).arg(field);
            cmd
        };
        let batches = inner.batches(&keys);
        let sent = per_route(&batches, PIPELINES_IN_FLIGHT_MAX, |batch| {
            let batch_keys: Vec<&[u8]> = batch.iter().map(|&i| keys[i].as_slice()).collect();
            async move {
                inner
                    .batch(deadline, COMMAND, &batch_keys, |i, _| hget(batch_keys[i]))
                    .await
            }
        })
        .await;
        let decide = |i: usize, value: &redis::Value| match reply::subscription(COMMAND, value) {
            Ok(Some(nonce)) if nonce == entries[i].1 => Check::Live,
            Ok(Some(_)) => Check::LiveElsewhere,
            Ok(None) => Check::Stale,
            Err(_) => Check::Unknown,
        };
        let mut checks: Vec<Option<Check>> = entries.iter().map(|_| None).collect();
        let mut resend = Vec::new();
        for ((_, batch), outcome) in batches.iter().zip(sent) {
            for (&i, reply) in batch.iter().zip(outcome?) {
                checks[i] = match reply {
                    BatchReply::Value(value) => Some(decide(i, &value)),
                    BatchReply::Foreign(_) => Some(Check::Unknown),
                    // Refused for another reason (an ACL without `HGET`):
                    // the page fails, as the check sent on its own does.
                    BatchReply::Failed(e) => return Err(e),
                    BatchReply::Resend => {
                        resend.push(i);
                        None
                    }
                };
            }
        }
        let single: Vec<redis::Cmd> = resend.iter().map(|&i| hget(&keys[i])).collect();
        let again = join_all(
            resend
                .iter()
                .zip(&single)
                .map(|(&i, cmd)| inner.command(Kind::Read, deadline, &keys[i], cmd))
                .collect(),
        )
        .await;
        for (i, result) in resend.into_iter().zip(again) {
            checks[i] = Some(decide(i, &result?.value));
        }
        Ok(checks
            .into_iter()
            .map(|check| check.expect("the batches cover every entry"))
            .collect())
    }
}

impl SessionState for RedisStore {
    async fn subscribe(&self, id: &SessionId, topic: &str) -> Result<bool> {
        RedisStore::subscribe(self, id, topic).await
    }

    async fn unsubscribe(&self, id: &SessionId, topic: &str) -> Result<bool> {
        RedisStore::unsubscribe(self, id, topic).await
    }

    async fn topics(&self, id: &SessionId) -> Result<Vec<String>> {
        RedisStore::topics(self, id).await
    }

    async fn subscribers(&self, topic: &str, cursor: TopicCursor, limit: usize) -> Result<TopicPage> {
        RedisStore::subscribers(self, topic, cursor, limit).await
    }

    async fn rate_limit(&self, id: &SessionId, bucket: Bucket, cost: u32) -> Result<RateDecision> {
        RedisStore::rate_limit(self, id, bucket, cost).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use session_engine::limits::TOPIC_LEN_MAX;

    #[test]
    fn members_order_as_big_endian_ids_and_round_trip() {
        let a = SessionId::from_bytes([0; 16]);
        let mut b_bytes = [0u8; 16];
        b_bytes[15] = 1;
        let b = SessionId::from_bytes(b_bytes);
        let max = SessionId::from_bytes([0xff; 16]);
        let n = fresh_nonce();
        assert!(reply::nonce(&n).is_some());
        let (first, second, last) = (member(&a, &n), member(&b, &n), member(&max, &n));
        assert!(first < second && second < last, "byte order is id order");
        assert_eq!(parse_member(&second), Some((b, n)));
        assert_eq!(parse_member(&second[..31]), None);
        let mut upper = second;
        upper[20] = b'X';
        assert_eq!(parse_member(&upper), None);
    }

    #[test]
    fn cursors_resume_past_every_member_of_the_last_id() {
        assert_eq!(lower_bound(TopicCursor::START), b"-".to_vec());
        let id = SessionId::from_bytes([0x11; 16]);
        let cursor = cursor_after(&id).expect("not the largest id");
        assert_ne!(cursor, TopicCursor::START, "even after the smallest id");
        let bound = lower_bound(cursor);
        assert_eq!(bound[0], b'[');
        // The bound (inclusive) is past every member of the id and at or
        // before every member of the next id.
        let past = &bound[1..];
        for nonce in [[b'0'; NONCE_LEN], [b'f'; NONCE_LEN], fresh_nonce()] {
            assert!(member(&id, &nonce)[..] < *past);
        }
        let mut next = [0x11; 16];
        next[15] = 0x12;
        assert!(member(&SessionId::from_bytes(next), &[b'0'; NONCE_LEN])[..] > *past);
        assert_eq!(
            cursor_after(&SessionId::from_bytes([0; 16])),
            Some(TopicCursor::new(1))
        );
        assert_eq!(cursor_after(&SessionId::from_bytes([0xff; 16])), None);
        // Any position is a valid cursor (text round trip too).
        let text = cursor.to_string();
        assert_eq!(text.parse::<TopicCursor>().unwrap(), cursor);
    }

    #[test]
    fn a_page_stopped_short_resumes_at_an_id_it_did_not_return() {
        let x = SessionId::from_bytes([0x22; 16]);
        let last = member(&x, &fresh_nonce());
        let at = TopicCursor::new(u128::from_be_bytes(x.to_bytes()));
        // Not returned: at its id, so that its later members are read.
        assert_eq!(resume_at(&last, None, TopicCursor::START), Some(at));
        assert!(lower_bound(at)[1..] < last[..], "the member is read again");
        // Returned: past it, never twice.
        assert_eq!(resume_at(&last, Some(&x), TopicCursor::START), cursor_after(&x));
        // At the page's own cursor: past it, so every page moves on.
        assert_eq!(resume_at(&last, None, at), cursor_after(&x));
        assert_eq!(
            resume_at(
                &member(&SessionId::from_bytes([0xff; 16]), &fresh_nonce()),
                None,
                at
            ),
            { Some(TopicCursor::new(u128::MAX)) }
        );
        // A member this store did not write sorts under its first 16 bytes.
        assert_eq!(member_id(b"abc"), {
            let mut id = [0u8; 16];
            id[..3].copy_from_slice(b"abc");
            SessionId::from_bytes(id)
        });
        let foreign = b"abc";
        let cursor = resume_at(foreign, None, TopicCursor::START).expect("a cursor");
        // Not read again (it sorts before its padded id), but every member
        // this store wrote under that id is.
        assert!(foreign[..] < lower_bound(cursor)[1..]);
        assert!(member(&member_id(foreign), &[b'0'; NONCE_LEN])[..] >= lower_bound(cursor)[1..]);
        // Within a page: exactly past the member.
        assert_eq!(after_member(&last)[1..], last[..]);
        assert_eq!(after_member(&last)[0], b'(');
    }

    /// A member someone else wrote under the id before a cursor, with bytes
    /// after `0xff`, sorted past the old exclusive bound `(Y-1 ‖ 0xff`:
    /// a page read it, and resuming at its id gave the page's own cursor
    /// back (a listing of such members never ended). A page reads only
    /// members whose first 16 bytes are at least its cursor.
    #[test]
    fn a_page_reads_nothing_before_its_cursor_and_always_moves_on() {
        let from = TopicCursor::new(0x3333);
        let before = SessionId::from_bytes((0x3332_u128).to_be_bytes());
        let mut foreign = before.to_bytes().to_vec();
        foreign.extend_from_slice(&[0xff, b'x', b'y']);
        let bound = lower_bound(from);
        assert_eq!(bound[0], b'[', "inclusive");
        assert!(foreign[..] < bound[1..], "a member before the cursor is not read");
        // Whatever a page read, it resumes past its own cursor.
        let at = SessionId::from_bytes(from.position().to_be_bytes());
        for last in [member(&at, &fresh_nonce()).to_vec(), at.to_bytes().to_vec(), {
            let mut m = at.to_bytes().to_vec();
            m.push(0xff);
            m
        }] {
            assert!(last[..] >= bound[1..]);
            let next = resume_at(&last, None, from).expect("a cursor");
            assert!(next.position() > from.position());
        }
    }

    #[test]
    fn an_index_outlives_its_sessions_by_the_margin() {
        let margin = u64::try_from(TOPIC_INDEX_TTL_MARGIN.as_millis()).unwrap();
        assert_eq!(index_ttl_field(Life::Unbounded), "0", "no TTL");
        assert_eq!(index_ttl_field(Life::LeftMs(5_000)), (5_000 + margin).to_string());
        assert_eq!(index_ttl_field(Life::LeftMs(0)), (1 + margin).to_string());
        assert_eq!(index_ttl_field(Life::LeftMs(u64::MAX)), u64::MAX.to_string());
    }

    #[test]
    fn bad_input_is_typed() {
        assert!(matches!(check_topic(""), Err(Error::InvalidArgument { .. })));
        assert!(check_topic(&"x".repeat(TOPIC_LEN_MAX)).is_ok());
        assert!(matches!(
            check_topic(&"x".repeat(TOPIC_LEN_MAX + 1)),
            Err(Error::LimitExceeded { len, max, .. }) if len == TOPIC_LEN_MAX + 1 && max == TOPIC_LEN_MAX
        ));
        let ok = Bucket {
            capacity: 5,
            refill_per_sec: 1,
        };
        assert!(check_bucket(ok, 5).is_ok());
        assert!(check_bucket(ok, 0).is_ok());
        assert!(matches!(check_bucket(ok, 6), Err(Error::InvalidArgument { .. })));
        for bad in [
            Bucket {
                capacity: 0,
                refill_per_sec: 1,
            },
            Bucket {
                capacity: 1,
                refill_per_sec: 0,
            },
        ] {
            assert!(matches!(check_bucket(bad, 0), Err(Error::InvalidArgument { .. })));
        }
    }
}
