//! The engine side of [`SessionState`](crate::SessionState): each shard's
//! entries for the sessions that hold state (topics, a token bucket,
//! timers) and the shard's reverse index topic -> subscribers, all guarded
//! by the shard's writer mutex.
//!
//! Why under the writer mutex: every way a session leaves its shard
//! (delete, expiry, rotation, an insert over an expired one) already holds
//! it, so its state leaves in the same critical section and no later
//! operation can see state of a session that is gone, nor can state be
//! added to a session between its removal and the clean-up.
//!
//! **Reached from the session's table slot.** A session's entry sits in a
//! slab, named by a dense array beside the shard's table (`by_slot`: the
//! entry of the session in each table slot, 4 bytes a slot, allocated when
//! a session of the shard first holds state). A state call has found the
//! session's slot under the mutex to check that it is live, so it reaches
//! the entry without hashing the id again or probing a second table; and
//! since the first slot a lookup probes is known from the hash, the CPU
//! loads the array's line beside the table's, not after the session's
//! block (an index kept in the block would cost one dependent miss more);
//! a state call also prefetches the entry's line before its lookup.
//! A timer's slab entry names its session's entry the same way. The array
//! follows the table: an update keeps the session's slot, a removal clears
//! it, a rebuild moves it (`relocate`).
//!
//! An entry is freed when the session leaves, and also as soon as a call
//! that found the session's slot empties it (an unsubscribe, a cancel by
//! token, a failed call's new entry). A cancel by handle and a fired timer
//! reach the entry from the timer, not from the slot, so an entry they
//! empty stays, empty, until one of those calls or the session's departure
//! frees it: at most one entry (128 bytes) per session.
//!
//! Lock order: a shard's writer mutex, then the log's writer mutex (the
//! live-byte accounting of topics). A listing of subscribers takes each
//! shard's writer mutex in turn, one at a time.

use std::collections::TryReserveError;
use std::sync::Arc;
use std::time::Duration;

use ahash::RandomState;
use smallvec::SmallVec;

use crate::block::prefetch;
use crate::error::{Error, Result};
use crate::id::SessionId;
use crate::limits::{
    TIMERS_PER_SESSION_MAX, TOPICS_EMPTY_KEPT_MAX, TOPICS_EMPTY_ROOM_MAX, TOPICS_PER_SESSION_MAX,
};
use crate::members::Members;
use crate::persist::format::subscribe_len;
use crate::persist::ShardLog;
use crate::shard::LogPosition;
use crate::state::{Bucket, RateDecision};
use crate::wheel::{self, Link, Wheel, WheelStore};

/// A topic as recovery and compaction carry it.
pub(crate) type Topic = Arc<str>;

/// A topic in its shard's index, as a session's entry names it (an index
/// into the shard's topic slab, stable while the topic has subscribers).
type TopicRef = u32;

/// One topic's subscribers in one shard: a set of their entries for the
/// updates (`Members`: a hash set while sparse, a bitmap once dense), and
/// for the listings a sorted copy of their ids taken when one needs it.
///
/// Why not an ordered set: a subscribe or unsubscribe is one insert or
/// removal here, and on an ordered set of tens of thousands of random ids
/// (a `BTreeSet<u128>`) that cost about a touch on its own, most of the
/// subscribe's budget (`results/state.md`). A listing is rarer than the
/// changes and already pays per subscriber, so it pays for the order.
///
/// **Snapshots.** Pages resume by id (the cursor is the next id to list),
/// so every snapshot orders the same way and a listing can go on in any
/// snapshot taken since it began. A listing that starts (cursor 0) sorts a
/// fresh copy if the set changed since the last one; a page further on
/// uses the newest copy there is. Either way each candidate is checked
/// against the set at page time (its entry still in the set, and still
/// its: an entry freed meanwhile may hold another session), so a page
/// lists current subscribers only,
/// and every session subscribed for the whole listing is in every snapshot
/// the listing can see: listed exactly once. The copy is taken under the
/// shard's writer mutex and sorted outside it; a finished sort replaces
/// the set's copy only if it is newer, and only in the same set
/// (`instance`: the topic may have emptied and come back meanwhile).
///
/// **Costs.** Taking the copy is a linear pass under the shard's mutex (a
/// few ns a subscriber of the shard), which that shard's operations wait
/// for; it happens once per listing that starts after the topic changed,
/// never per page; it reads each subscriber's id from its entry. Each
/// listed topic keeps its newest sorted copy (32 bytes a subscriber: id
/// and entry, a `(u128, u32)` padded to the id's 16-byte alignment) until
/// it empties or a newer copy replaces it.
struct TopicSet {
    /// The subscribers' entries (`States::entries` indices): four bytes a
    /// subscriber in a hash set, or one bit an entry of the shard once a
    /// bitmap is as small (`crate::members`), where ids would take 16 bytes
    /// and a keyed hash. The set stays small enough for the cache, and a
    /// subscribe's insert and an unsubscribe's removal cost little.
    members: Members,
    /// Bumped on every change of `members`.
    version: u64,
    /// Tells this set from a later one of the same topic.
    instance: u64,
    /// The members' (id, entry) in id order as of `version`.
    sorted: Option<(u64, Sorted)>,
}

/// A topic's subscribers in id order, each with its entry then.
type Sorted = Arc<[(u128, u32)]>;

/// The id of the session holding an entry, for a listing.
pub(crate) type IdOf<'a> = &'a dyn Fn(u32) -> u128;

/// A session id as the number a topic's listing sorts and resumes by:
/// its bytes read big-endian, so the numbers' order is `SessionId`'s (its
/// bytes' order, which is also the order of the Redis backend's index).
/// The listing is documented in id order on every backend.
pub(crate) fn order_key(id: SessionId) -> u128 {
    u128::from_be_bytes(id.to_bytes())
}

/// The id whose [`order_key`] is `key`.
fn id_of_key(key: u128) -> SessionId {
    SessionId::from_bytes(key.to_be_bytes())
}

impl TopicSet {
    /// The copy a listing from `from` can use: any copy mid-listing, one
    /// as new as the set at a listing's start.
    fn usable(&self, from: u128) -> Option<Sorted> {
        match &self.sorted {
            Some((version, ids)) if from != 0 || *version == self.version => Some(Arc::clone(ids)),
            _ => None,
        }
    }
}

/// Ids an emptied topic's set keeps room for while it waits for reuse,
/// when the shard's kept room (`TOPICS_EMPTY_ROOM_MAX`) is spent.
const EMPTY_SET_ROOM: usize = 4;

/// What `Topics::lookup` finds: the topic, or else its name's hash.
type Lookup = std::result::Result<TopicRef, u64>;

/// A topic of the shard's index: its name, its hash and its set.
struct TopicEntry {
    name: Box<str>,
    hash: u64,
    set: TopicSet,
}

/// One shard's reverse index, topic -> the shard's subscribers (their
/// entries), under the shard's writer mutex like the entries that name
/// their topics.
///
/// Why per shard: a subscribe already holds its shard's mutex, so the
/// index costs it no lock and no atomic of its own (an engine-wide index
/// took a stripe's lock, and a reference count on the shared name, on
/// every subscribe and unsubscribe), and a session's entry names its
/// topics by slab index: its duplicate check compares integers, not text.
/// A listing pays instead: it visits every shard and merges their pages
/// (`page`).
pub(crate) struct Topics {
    hasher: RandomState,
    /// The topics by `TopicRef`; `None`: a free slot.
    slab: Vec<Option<TopicEntry>>,
    free: Vec<TopicRef>,
    /// Topic name -> its `TopicRef`, keyed by the name's hash.
    by_name: hashbrown::HashTable<TopicRef>,
    /// Numbers the sets created (`TopicSet::instance`).
    created: u64,
    /// Entries whose set is empty, kept for reuse (at most
    /// `TOPICS_EMPTY_KEPT_MAX`).
    empty: usize,
    /// Room (ids) the empty sets hold: at most `TOPICS_EMPTY_ROOM_MAX`,
    /// plus the few ids of each set shrunk past it.
    kept_room: usize,
}

impl Topics {
    pub(crate) fn new() -> Self {
        Self {
            hasher: RandomState::new(),
            slab: Vec::new(),
            free: Vec::new(),
            by_name: hashbrown::HashTable::new(),
            created: 0,
            empty: 0,
            kept_room: 0,
        }
    }

    fn entry(&self, r: TopicRef) -> &TopicEntry {
        self.slab[r as usize]
            .as_ref()
            .expect("a topic named by a session is held")
    }

    fn entry_mut(&mut self, r: TopicRef) -> &mut TopicEntry {
        self.slab[r as usize]
            .as_mut()
            .expect("a topic named by a session is held")
    }

    /// The topic's name.
    fn name(&self, r: TopicRef) -> &str {
        &self.entry(r).name
    }

    /// The topic called `name`, if the shard holds it.
    #[inline]
    fn find(&self, name: &str) -> Option<TopicRef> {
        self.lookup(name).ok()
    }

    /// The topic called `name`, or else its name's hash (to create it
    /// without hashing the name again).
    #[inline]
    fn lookup(&self, name: &str) -> Lookup {
        let hash = self.hasher.hash_one(name);
        let slab = &self.slab;
        self.by_name
            .find(hash, |&r| {
                slab[r as usize].as_ref().is_some_and(|e| *e.name == *name)
            })
            .copied()
            .ok_or(hash)
    }

    /// Adds `id` under `name` (`found`: what `lookup` gave for it);
    /// returns the topic's ref.
    #[inline]
    fn add(&mut self, found: Lookup, name: &str, entry: u32) -> TopicRef {
        let r = found.unwrap_or_else(|hash| self.create(name, hash));
        let set = &mut self.slab[r as usize].as_mut().expect("found or created").set;
        if set.members.is_empty() {
            self.empty -= 1;
            self.kept_room -= set.members.capacity();
        }
        if set.members.insert(entry) {
            set.version += 1;
        }
        r
    }

    /// A new, empty topic (counted as a kept empty one until `add` fills it).
    #[cold]
    fn create(&mut self, name: &str, hash: u64) -> TopicRef {
        self.created += 1;
        self.empty += 1;
        let entry = TopicEntry {
            name: name.into(),
            hash,
            set: TopicSet {
                members: Members::default(),
                version: 0,
                instance: self.created,
                sorted: None,
            },
        };
        let r = if let Some(r) = self.free.pop() {
            self.slab[r as usize] = Some(entry);
            r
        } else {
            // A topic per (session, topic) pair of the shard at most, and
            // those are bounded by its sessions times TOPICS_PER_SESSION_MAX.
            let r = u32::try_from(self.slab.len()).expect("topics of one shard fit u32");
            self.slab.push(Some(entry));
            r
        };
        let slab = &self.slab;
        self.by_name
            .insert_unique(hash, r, |&r| slab[r as usize].as_ref().map_or(0, |e| e.hash));
        r
    }

    /// Takes `member` (a session's entry) out of topic `r`; an emptied
    /// topic is kept for reuse or dropped.
    fn remove(&mut self, r: TopicRef, member: u32) {
        let entry = self.slab[r as usize]
            .as_mut()
            .expect("a topic named by a session is held");
        let set = &mut entry.set;
        if set.members.len() == 1 && set.members.contains(member) {
            // The last one: a clear also drops the removals' tombstones,
            // which count against the room an emptied set keeps.
            set.members.clear();
        } else if !set.members.remove(member) {
            return;
        }
        set.version += 1;
        if !set.members.is_empty() {
            return;
        }
        if self.empty < TOPICS_EMPTY_KEPT_MAX {
            // Kept for reuse, as a new set (a sort of the old one must not
            // land in it), without its sorted copy. It keeps its room while
            // the shard's budget allows: a topic whose subscribers all leave
            // and come back then does not grow its set again (a rehash of
            // every id and a fresh allocation at each doubling).
            self.created += 1;
            set.instance = self.created;
            set.sorted = None;
            if self.kept_room + set.members.capacity() > TOPICS_EMPTY_ROOM_MAX {
                set.members.shrink_to(EMPTY_SET_ROOM);
            }
            self.kept_room += set.members.capacity();
            self.empty += 1;
        } else {
            let hash = entry.hash;
            if let Ok(found) = self.by_name.find_entry(hash, |&x| x == r) {
                found.remove();
            }
            self.slab[r as usize] = None;
            self.free.push(r);
        }
    }

    /// Checks the counts of empty sets and of their room.
    fn check_invariants(&self) {
        let empty = self.slab.iter().flatten().filter(|e| e.set.members.is_empty());
        let (sets, room) = empty.fold((0, 0), |(n, room), e| (n + 1, room + e.set.members.capacity()));
        assert_eq!(sets, self.empty, "empty topics kept");
        assert!(sets <= TOPICS_EMPTY_KEPT_MAX, "{sets} empty topics kept");
        assert_eq!(room, self.kept_room, "room of the empty topics");
    }

    /// Topic entries held, empty ones included (tests).
    #[cfg(test)]
    fn held_topics(&self) -> usize {
        self.by_name.len()
    }

    /// Whether `entry` is in `name`'s set (checks).
    fn contains(&self, name: &str, entry: u32) -> bool {
        self.find(name)
            .is_some_and(|r| self.entry(r).set.members.contains(entry))
    }

    /// (topic, subscriber) pairs held (tests: the index holds exactly what
    /// the entries hold).
    pub(crate) fn entries(&self) -> usize {
        self.slab.iter().flatten().map(|e| e.set.members.len()).sum()
    }

    /// A copy a listing from `from` can use, or else the set's members to
    /// sort, with the set's instance and version; `None`: no subscribers.
    #[allow(clippy::type_complexity)]
    fn usable_or_copy(
        &self,
        name: &str,
        from: u128,
        id_of: IdOf<'_>,
    ) -> Option<Result<Sorted, (u64, u64, Vec<(u128, u32)>)>> {
        let set = &self.entry(self.find(name)?).set;
        if set.members.is_empty() {
            return None;
        }
        Some(match set.usable(from) {
            Some(ids) => Ok(ids),
            None => Err((
                set.instance,
                set.version,
                set.members.iter().map(|e| (id_of(e), e)).collect(),
            )),
        })
    }

    /// Keeps `ids` (sorted from `name`'s set `instance` at `version`) as
    /// the set's copy, if that set is still there and its copy is older.
    fn install(&mut self, name: &str, instance: u64, version: u64, ids: &Sorted) {
        if let Some(r) = self.find(name) {
            let set = &mut self.entry_mut(r).set;
            let newer = set.sorted.as_ref().is_none_or(|(v, _)| *v < version);
            if set.instance == instance && newer {
                set.sorted = Some((version, Arc::clone(ids)));
            }
        }
    }

    /// Up to `limit` ids of `sorted` from `from` on that are still in
    /// `name`'s set, into `out`: their entry is still in the set, and
    /// still theirs (an entry freed meanwhile may hold another session).
    fn members_from(
        &self,
        name: &str,
        sorted: &[(u128, u32)],
        from: u128,
        limit: usize,
        out: &mut Vec<u128>,
        id_of: IdOf<'_>,
    ) {
        let Some(r) = self.find(name) else {
            return;
        };
        let members = &self.entry(r).set.members;
        let first = sorted.partition_point(|&(id, _)| id < from);
        out.extend(
            sorted[first..]
                .iter()
                .filter(|&&(id, e)| members.contains(e) && id_of(e) == id)
                .map(|&(id, _)| id)
                .take(limit),
        );
    }
}

/// What a listing needs of the shards: each one's `Topics`, under its lock.
pub(crate) trait TopicParts {
    /// Shards.
    fn parts(&self) -> usize;
    /// Runs `f` on shard `part`'s topics, with the ids of its entries,
    /// under its writer mutex.
    fn with_topics<R>(&self, part: usize, f: impl FnOnce(&mut Topics, IdOf<'_>) -> R) -> R;
}

/// Up to `limit` subscribers of `name` with ids from `from` on, into `out`,
/// in id order, merged from every shard; the id to resume from, `None`
/// when none are left. Each shard gives up to `limit + 1` (one past the
/// page tells whether more are left and where they resume), from its
/// snapshot (see `TopicSet`), checked against its set under its mutex:
/// the promises of one shard's listing hold for the merge, since every id
/// lives in one shard. After each shard only the `limit + 1` smallest ids
/// are kept, so a listing holds at most twice that many at once whatever
/// the shard count (gathering every shard's page first held up to
/// 1,024 x 10,001 ids, 160 MB, for one call).
pub(crate) fn page(
    parts: &(impl TopicParts + ?Sized),
    name: &str,
    from: u128,
    limit: usize,
    out: &mut Vec<SessionId>,
) -> Option<u128> {
    let mut ids = Vec::new();
    for part in 0..parts.parts() {
        let sorted = match parts.with_topics(part, |t, id_of| t.usable_or_copy(name, from, id_of)) {
            None => continue,
            Some(Ok(sorted)) => sorted,
            Some(Err((instance, version, mut copy))) => {
                copy.sort_unstable();
                let sorted: Sorted = copy.into();
                parts.with_topics(part, |t, _| t.install(name, instance, version, &sorted));
                sorted
            }
        };
        parts.with_topics(part, |t, id_of| {
            t.members_from(name, &sorted, from, limit + 1, &mut ids, id_of);
        });
        #[cfg(test)]
        tests::PAGE_IDS_PEAK.with(|peak| peak.set(peak.get().max(ids.len())));
        keep_smallest(&mut ids, limit + 1);
    }
    ids.sort_unstable();
    let next = ids.get(limit).copied();
    out.extend(ids.iter().take(limit).map(|&key| id_of_key(key)));
    next
}

/// Keeps the `n` smallest of `ids` (in no order).
fn keep_smallest(ids: &mut Vec<u128>, n: usize) {
    if ids.len() > n {
        if n > 0 {
            ids.select_nth_unstable(n - 1);
        }
        ids.truncate(n);
    }
}

/// `LimitExceeded`'s `what` for a session subscribed to
/// `TOPICS_PER_SESSION_MAX` topics: counted in memory, where another
/// caller's subscribe may not be durable yet (see `settle.rs`).
pub(crate) const SESSION_FULL_OF_TOPICS: &str = "topics of one session (TOPICS_PER_SESSION_MAX)";

/// `Ok` if one more than `held` stays within `max`, else the typed error.
fn room_for_one_more(what: &'static str, held: usize, max: usize) -> Result<()> {
    if held < max {
        Ok(())
    } else {
        Err(Error::LimitExceeded {
            what,
            len: held + 1,
            max,
        })
    }
}

/// Tokens are kept in thousandths, so a refill of `r` tokens a second adds
/// `r` units a millisecond.
const UNITS: u64 = 1000;

/// A session's token bucket.
#[derive(Clone, Copy, Debug)]
struct BucketState {
    shape: Bucket,
    units: u64,
    at_ms: u64,
}

impl BucketState {
    /// No bucket: a real one has a capacity of at least 1 (`check_bucket`).
    const NONE: Self = Self {
        shape: Bucket {
            capacity: 0,
            refill_per_sec: 0,
        },
        units: 0,
        at_ms: 0,
    };

    fn is_none(&self) -> bool {
        self.shape.capacity == 0
    }

    fn full(shape: Bucket, now_ms: u64) -> Self {
        Self {
            shape,
            units: u64::from(shape.capacity) * UNITS,
            at_ms: now_ms,
        }
    }

    /// Refills up to `now_ms` at the old shape, re-shapes (tokens capped at
    /// the new capacity), then charges `cost` if it fits.
    fn charge(&mut self, shape: Bucket, cost: u32, now_ms: u64) -> RateDecision {
        let elapsed = now_ms.saturating_sub(self.at_ms);
        let cap = u64::from(self.shape.capacity) * UNITS;
        self.units = cap.min(
            self.units
                .saturating_add(elapsed.saturating_mul(u64::from(self.shape.refill_per_sec))),
        );
        self.at_ms = self.at_ms.max(now_ms);
        if shape != self.shape {
            self.shape = shape;
            self.units = self.units.min(u64::from(shape.capacity) * UNITS);
        }
        let need = u64::from(cost) * UNITS;
        if self.units >= need {
            self.units -= need;
            #[allow(clippy::cast_possible_truncation)] // at most the u32 capacity
            let remaining = (self.units / UNITS) as u32;
            RateDecision::Allowed { remaining }
        } else {
            let ms = (need - self.units).div_ceil(u64::from(shape.refill_per_sec));
            RateDecision::Limited {
                retry_after: Duration::from_millis(ms),
            }
        }
    }
}

/// What one session holds, in two cache lines: a timer's arm or cancel
/// reads the first, a subscribe or a rate-limit check the second.
#[repr(C, align(64))]
struct PerSession {
    /// The session's timers.
    timers: Timers,
    /// The session's topics in the shard's index. Four inline: most
    /// sessions subscribe to few topics, and a list on the heap is one more
    /// cache miss per subscribe.
    topics: SmallVec<[TopicRef; TOPICS_INLINE]>,
    /// The session (for checks: a free entry's is stale).
    id: SessionId,
    /// The token bucket, if the session has one (`capacity` 0: none).
    bucket: BucketState,
}
const _: () = assert!(std::mem::size_of::<PerSession>() == 128);
const _: () = assert!(std::mem::offset_of!(PerSession, topics) == 64);

/// Topics a session's entry holds without a list on the heap: as many as
/// share the line with the id and the bucket.
const TOPICS_INLINE: usize = 4;

/// Topics of a session an unsubscribe compares by name (most differ in
/// length: cheaper than hashing the name to look it up); past them it
/// looks the name up in the index.
const TOPICS_COMPARED_BY_NAME: usize = 8;

/// Timers a session's entry holds on its timer line: as many as the line
/// takes beside a count and the pointer to the rest.
const TIMERS_INLINE: usize = 10;

/// A session's timers, on one cache line: up to `TIMERS_INLINE` as their
/// slots in the timer slab and an 8-bit fingerprint of each token, the
/// rest (token, slot) on the heap (a removal moves the heap's last onto
/// the line). A lookup by token compares the
/// fingerprints and confirms a match on the slab entry, which the arm or
/// cancel that looked it up then works on anyway (a false match, one
/// compare in 256, costs one slab entry loaded for nothing); a list of
/// full tokens and slots would not fit the line, and one on the heap is a
/// dependent cache miss more per arm and per cancel.
#[repr(C, align(64))]
struct Timers {
    /// The session's timers, on the line and on the heap.
    len: u16,
    fingerprints: [u8; TIMERS_INLINE],
    slots: [u32; TIMERS_INLINE],
    /// The timers past the line's `TIMERS_INLINE`: only for a session
    /// that has held more. Boxed: a pointer fits the line beside ten timers,
    /// a `Vec`'s three words do not.
    #[allow(clippy::box_collection)]
    more: Option<Box<Vec<(u64, u32)>>>,
}
const _: () = assert!(std::mem::size_of::<Timers>() == 64);
// `Timers::len` counts them all.
const _: () = assert!(TIMERS_PER_SESSION_MAX <= u16::MAX as usize);

/// A token's fingerprint in `Timers`: eight well-mixed bits (tokens are
/// often consecutive request ids).
#[inline]
fn fingerprint(token: u64) -> u8 {
    #[allow(clippy::cast_possible_truncation)] // the top 8 bits, on purpose
    let top = (token.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8;
    top
}

impl Timers {
    const NONE: Self = Self {
        len: 0,
        fingerprints: [0; TIMERS_INLINE],
        slots: [0; TIMERS_INLINE],
        more: None,
    };

    /// Timers on the line.
    #[inline]
    fn inline(&self) -> usize {
        usize::from(self.len).min(TIMERS_INLINE)
    }

    /// The timers past the line (empty for a session with no more).
    fn more(&self) -> &[(u64, u32)] {
        match &self.more {
            Some(more) if usize::from(self.len) > TIMERS_INLINE => more,
            _ => &[],
        }
    }
}

/// The cache line of a `PerSession` a state call reads.
#[derive(Clone, Copy)]
pub(crate) enum EntryLine {
    /// The timers (a cancel by token).
    Timers,
    /// The timers, and the timer slab's slot an arm takes next.
    Arm,
    /// The topics (subscriptions).
    Topics,
}

impl PerSession {
    fn new(id: SessionId) -> Self {
        Self {
            timers: Timers::NONE,
            topics: SmallVec::new(),
            id,
            bucket: BucketState::NONE,
        }
    }

    /// Where `token`'s timer is in the session's list, and its slab slot.
    /// A fingerprint's match is confirmed on the slot's entry in `slab`.
    #[inline]
    fn find_token(&self, slab: &TimerSlab, token: u64) -> Option<(usize, u32)> {
        let print = fingerprint(token);
        let t = &self.timers;
        let n = t.inline();
        let line = t.fingerprints[..n].iter().zip(&t.slots[..n]);
        for (i, (&p, &slot)) in line.enumerate() {
            if p == print && slab.entries[slot as usize].token == token {
                return Some((i, slot));
            }
        }
        let more = t.more();
        let i = more.iter().position(|&(t, _)| t == token)?;
        Some((TIMERS_INLINE + i, more[i].1))
    }

    /// Where the timer in slab slot `slot` is in the session's list.
    #[inline]
    fn find_slot(&self, slot: u32) -> Option<usize> {
        let t = &self.timers;
        if let Some(i) = t.slots[..t.inline()].iter().position(|&s| s == slot) {
            return Some(i);
        }
        let i = t.more().iter().position(|&(_, s)| s == slot)?;
        Some(TIMERS_INLINE + i)
    }

    /// Adds a timer to the session's list (its count checked by the caller).
    #[inline]
    fn push_timer(&mut self, token: u64, slot: u32) {
        let t = &mut self.timers;
        let at = usize::from(t.len);
        if at < TIMERS_INLINE {
            t.fingerprints[at] = fingerprint(token);
            t.slots[at] = slot;
        } else {
            t.more.get_or_insert_with(Box::default).push((token, slot));
        }
        t.len += 1;
    }

    /// Takes the timer at `i` in the session's list off it; the last one
    /// takes its place.
    #[inline]
    fn remove_timer(&mut self, i: usize) {
        let t = &mut self.timers;
        let len = usize::from(t.len);
        if len > TIMERS_INLINE {
            return self.remove_timer_with_more(i);
        }
        t.fingerprints[i] = t.fingerprints[len - 1];
        t.slots[i] = t.slots[len - 1];
        t.len -= 1;
    }

    /// `remove_timer` for a session with timers on the heap: the heap's
    /// last takes the place.
    #[cold]
    #[inline(never)]
    fn remove_timer_with_more(&mut self, i: usize) {
        let t = &mut self.timers;
        let more = t.more.as_mut().expect("timers past the line are on the heap");
        let (token, slot) = more.pop().expect("timers past the line are on the heap");
        if i < TIMERS_INLINE {
            t.fingerprints[i] = fingerprint(token);
            t.slots[i] = slot;
        } else if i - TIMERS_INLINE < more.len() {
            more[i - TIMERS_INLINE] = (token, slot);
        }
        t.len -= 1;
    }

    /// The slab slots of the session's timers.
    fn timer_slots(&self) -> impl Iterator<Item = u32> + '_ {
        let t = &self.timers;
        t.slots[..t.inline()]
            .iter()
            .copied()
            .chain(t.more().iter().map(|&(_, slot)| slot))
    }

    /// Whether the entry holds nothing.
    fn is_empty(&self) -> bool {
        self.topics.is_empty() && self.bucket.is_none() && self.timers.len == 0
    }
}

/// A timer: the session it belongs to, its token, its deadline, its place
/// in the shard's timer wheel, and the generation of its slab slot.
#[derive(Clone, Copy)]
struct TimerEntry {
    id: SessionId,
    /// The session's entry in `States::entries`.
    owner: u32,
    token: u64,
    deadline: u64,
    link: Link,
    /// Bumped each time the slot is freed, so a [`TimerHandle`] to a timer
    /// that fired or was cancelled never matches the slot's next timer.
    generation: u32,
}

/// An armed timer, as [`Engine::arm_timer`](crate::Engine::arm_timer)
/// returns it: [`Engine::cancel_timer_handle`](crate::Engine::cancel_timer_handle)
/// cancels it without looking its session up in the table. Re-arming the
/// same token keeps the handle. A handle cancels nothing in another engine
/// (it carries its engine's mark), nor once its timer fired or was
/// cancelled, or its session left (its slot's generation moved on; a slot
/// would have to be reused 2^32 times while the handle is held for it to
/// match again).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerHandle {
    engine: u32,
    shard: u32,
    slot: u32,
    generation: u32,
}

impl TimerHandle {
    pub(crate) fn new(engine: u32, shard: u32, (slot, generation): (u32, u32)) -> Self {
        Self {
            engine,
            shard,
            slot,
            generation,
        }
    }

    /// The engine's mark, the shard, and the slot and generation within
    /// the shard's timer slab.
    pub(crate) fn parts(self) -> (u32, u32, u32, u32) {
        (self.engine, self.shard, self.slot, self.generation)
    }
}

/// The timers' storage: entries addressed by index (the wheel's links are
/// indices), freed slots reused.
#[derive(Default)]
struct TimerSlab {
    entries: Vec<TimerEntry>,
    free: Vec<u32>,
}

impl TimerSlab {
    #[inline]
    fn alloc(&mut self, id: SessionId, owner: u32, token: u64, deadline: u64) -> Result<u32> {
        let mut entry = TimerEntry {
            id,
            owner,
            token,
            deadline,
            link: Link::UNLINKED,
            generation: 0,
        };
        if let Some(at) = self.free.pop() {
            entry.generation = self.entries[at as usize].generation;
            self.entries[at as usize] = entry;
            return Ok(at);
        }
        let at = u32::try_from(self.entries.len())
            .ok()
            .filter(|&at| at <= wheel::INDEX_MAX)
            .ok_or_else(|| Error::LimitExceeded {
                what: "timers in one shard",
                len: self.entries.len() + 1,
                max: wheel::INDEX_MAX as usize + 1,
            })?;
        self.entries.push(entry);
        Ok(at)
    }

    /// Frees the slot of a timer the wheel no longer holds.
    fn free(&mut self, at: u32) {
        let entry = &mut self.entries[at as usize];
        entry.generation = entry.generation.wrapping_add(1);
        self.free.push(at);
    }

    /// The slot `handle` names, if it still holds the timer it was given for.
    fn current(&self, slot: u32, generation: u32) -> Option<&TimerEntry> {
        self.entries
            .get(slot as usize)
            .filter(|e| e.generation == generation && e.link.is_linked())
    }
}

impl WheelStore for TimerSlab {
    #[inline]
    fn link(&self, index: u32) -> Link {
        self.entries[index as usize].link
    }

    #[inline]
    fn set_link(&mut self, index: u32, link: Link) {
        self.entries[index as usize].link = link;
    }

    #[inline]
    fn deadline(&self, index: u32) -> Option<u64> {
        Some(self.entries[index as usize].deadline)
    }
}

/// A session in the shard's table, as a state call names it: its table
/// slot (which names its entry) and its id.
#[derive(Clone, Copy)]
pub(crate) struct Owner {
    at: usize,
    id: SessionId,
}

impl Owner {
    /// The session `id`, found in table slot `at` under the writer mutex.
    pub(crate) fn new(at: usize, id: SessionId) -> Self {
        Self { at, id }
    }
}

/// `States::by_slot` of a slot without an entry.
const NO_ENTRY: u32 = u32::MAX;

/// A slot-to-entry map of `slots` slots, none with an entry, or the
/// allocation's error.
fn no_entries(slots: usize) -> std::result::Result<Vec<u32>, TryReserveError> {
    let mut v = Vec::new();
    v.try_reserve_exact(slots)?;
    v.resize(slots, NO_ENTRY);
    Ok(v)
}

/// One shard's per-session state, under its writer mutex.
pub(crate) struct States {
    /// The sessions' entries.
    entries: Vec<PerSession>,
    /// Entries not in use.
    free: Vec<u32>,
    /// The entry of the session in each table slot (`NO_ENTRY`: none);
    /// empty until an entry is first made, then as long as the table.
    by_slot: Vec<u32>,
    /// The table's slots.
    slots: usize,
    /// The shard's topic -> subscribers index.
    index: Topics,
    /// The shard's log, for the live-byte accounting of topics.
    log: Option<Arc<ShardLog>>,
    slab: TimerSlab,
    wheel: Wheel,
    /// Indices a timer poll fired (reused, not reallocated).
    fired: Vec<u32>,
}

impl States {
    /// The state of a shard whose table has `slots` slots.
    pub(crate) fn new(log: Option<Arc<ShardLog>>, now_ms: u64, slots: usize) -> Self {
        Self {
            entries: Vec::new(),
            free: Vec::new(),
            by_slot: Vec::new(),
            slots,
            index: Topics::new(),
            log,
            slab: TimerSlab::default(),
            wheel: Wheel::new(now_ms),
            fired: Vec::new(),
        }
    }

    /// True when no session of the shard has an entry.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.len() == self.free.len()
    }

    /// Timers armed in the shard.
    pub(crate) fn timers(&self) -> usize {
        self.wheel.len()
    }

    /// Sessions of the shard holding state (a scan: diagnostics and tests).
    pub(crate) fn sessions(&self) -> usize {
        self.held()
            .filter(|&(at, _)| !self.entries[at as usize].is_empty())
            .count()
    }

    /// The entries in use and their sessions (a scan: diagnostics, tests).
    pub(crate) fn held(&self) -> impl Iterator<Item = (u32, &SessionId)> {
        let free: std::collections::HashSet<u32> = self.free.iter().copied().collect();
        (0..self.entries.len()).filter_map(move |at| {
            let at = u32::try_from(at).expect("entries are numbered by u32");
            (!free.contains(&at)).then(|| (at, &self.entries[at as usize].id))
        })
    }

    /// The table now has `slots` slots, and no session yet.
    pub(crate) fn reset_slots(&mut self, slots: usize) {
        debug_assert!(self.is_empty(), "entries of sessions in a table being replaced");
        self.slots = slots;
        self.by_slot = Vec::new();
    }

    /// The slot-to-entry map for a table of `slots` slots, if this shard
    /// keeps one (the first step of a rebuild, before anything changes:
    /// the allocation may fail, as the table's may).
    pub(crate) fn relocation(&self, slots: usize) -> std::result::Result<Option<Vec<u32>>, TryReserveError> {
        if self.by_slot.is_empty() {
            return Ok(None);
        }
        no_entries(slots).map(Some)
    }

    /// The table was rebuilt with `slots` slots: each entry follows its
    /// session to the slot `slot_of` gives its id, in `by_slot` (from
    /// `relocation`).
    pub(crate) fn relocate(
        &mut self,
        slots: usize,
        by_slot: Option<Vec<u32>>,
        slot_of: impl Fn(&SessionId) -> Option<usize>,
    ) {
        let Some(mut by_slot) = by_slot else {
            debug_assert!(self.by_slot.is_empty(), "no map prepared for a shard with one");
            self.slots = slots;
            return;
        };
        // Filled aside: a panic here leaves the map as it was.
        for (entry, id) in self.held() {
            let at = slot_of(id).expect("a session with state is in the table");
            by_slot[at] = entry;
        }
        self.slots = slots;
        self.by_slot = by_slot;
    }

    /// Why a new entry could not be made: the slot-to-entry map (made by
    /// the shard's first entry in each table) could not be allocated.
    #[cold]
    fn slots_error(&self) -> Error {
        Error::Io {
            context: format!("a shard's per-session state map of {} slots", self.slots),
            source: std::io::Error::new(std::io::ErrorKind::OutOfMemory, "allocation failed"),
        }
    }

    /// Starts loading the entry named by table slot `at`, the first slot a
    /// state call's lookup probes: issued before the lookup, the entry's
    /// miss overlaps the table's and the block's instead of following them
    /// (a session that sits further on gets its entry loaded late, and
    /// another session's entry loaded for nothing).
    /// Only the `line` the call reads: a second prefetch would cost the
    /// timer calls more bandwidth than it saves. An arm also
    /// starts loading the timer slab's slot it will take (the top of the
    /// free list, known before the lookup): a slot freed long ago is as
    /// cold as the entry.
    #[inline]
    pub(crate) fn prefetch(&self, at: usize, line: EntryLine) {
        if let Some(entry) = self.by_slot.get(at).and_then(|&e| self.entries.get(e as usize)) {
            let offset = match line {
                EntryLine::Timers | EntryLine::Arm => 0,
                EntryLine::Topics => std::mem::offset_of!(PerSession, topics),
            };
            prefetch(std::ptr::from_ref(entry).cast::<u8>().wrapping_add(offset));
        }
        if let (EntryLine::Arm, Some(&slot)) = (line, self.slab.free.last()) {
            if let Some(timer) = self.slab.entries.get(slot as usize) {
                prefetch(std::ptr::from_ref(timer).cast::<u8>());
            }
        }
    }

    /// The entry of the session in `owner`'s slot, if it has one.
    #[inline]
    fn slot(&self, owner: Owner) -> Option<u32> {
        self.by_slot.get(owner.at).copied().filter(|&at| at != NO_ENTRY)
    }

    fn set_slot(&mut self, owner: Owner, entry: Option<u32>) {
        // Made by `new_entry` before any entry exists.
        self.by_slot[owner.at] = entry.unwrap_or(NO_ENTRY);
    }

    /// The session's entry, made if it has none (`None`: no memory for the
    /// slot-to-entry map, which `slots_error` reports).
    #[inline]
    fn entry(&mut self, owner: Owner) -> Option<u32> {
        match self.slot(owner) {
            Some(at) => Some(at),
            None => self.new_entry(owner),
        }
    }

    /// A new entry for the session, which has none.
    #[cold]
    #[inline(never)]
    fn new_entry(&mut self, owner: Owner) -> Option<u32> {
        if self.by_slot.is_empty() {
            self.by_slot = no_entries(self.slots).ok()?;
        }
        let at = if let Some(at) = self.free.pop() {
            self.entries[at as usize] = PerSession::new(owner.id);
            at
        } else {
            // At most one entry per session in the table, whose slots are
            // bounded by `shard::SLOTS_MAX`.
            let at = u32::try_from(self.entries.len()).expect("one entry per session of the shard");
            self.entries.push(PerSession::new(owner.id));
            at
        };
        self.set_slot(owner, Some(at));
        Some(at)
    }

    /// Frees the session's entry if it holds nothing.
    fn free_if_empty(&mut self, owner: Owner) {
        if let Some(at) = self.slot(owner) {
            if self.entries[at as usize].is_empty() {
                self.entries[at as usize] = PerSession::new(owner.id);
                self.free.push(at);
                self.set_slot(owner, None);
            }
        }
    }

    /// Drops everything the session holds: it is leaving its table slot
    /// and the shard (deleted, expired, rotated away). Its timers are
    /// cancelled without a callback.
    #[cold]
    pub(crate) fn drop_session(&mut self, owner: Owner) {
        let Some(at) = self.slot(owner) else {
            return;
        };
        self.set_slot(owner, None);
        let state = std::mem::replace(&mut self.entries[at as usize], PerSession::new(owner.id));
        self.free.push(at);
        let mut bytes = 0;
        for &topic in &state.topics {
            bytes += subscribe_len(self.index.name(topic).len());
            self.index.remove(topic, at);
        }
        for slot in state.timer_slots() {
            self.wheel.remove(&mut self.slab, slot);
            self.slab.free(slot);
        }
        self.unaccount(bytes);
    }

    fn unaccount(&self, bytes: usize) {
        if let (Some(log), true) = (&self.log, bytes > 0) {
            log.account(-i64::try_from(bytes).unwrap_or(i64::MAX));
        }
    }

    /// Whether the session is subscribed to any topic.
    pub(crate) fn has_topics(&self, owner: Owner) -> bool {
        self.slot(owner)
            .is_some_and(|at| !self.entries[at as usize].topics.is_empty())
    }

    /// The names of the session's topics.
    fn topic_names(&self, owner: Owner) -> impl Iterator<Item = &str> {
        let topics = self
            .slot(owner)
            .map_or(&[][..], |at| &self.entries[at as usize].topics[..]);
        topics.iter().map(|&t| self.index.name(t))
    }

    /// The session's topics.
    pub(crate) fn topics(&self, owner: Owner) -> Vec<String> {
        self.topic_names(owner).map(String::from).collect()
    }

    /// The session's topics, as compaction carries them.
    pub(crate) fn topics_shared(&self, owner: Owner) -> Vec<Topic> {
        self.topic_names(owner).map(Topic::from).collect()
    }

    /// Subscribes the session to `topic`, logging through `append` (given
    /// the live-byte change) first; false if it was subscribed already.
    #[inline]
    pub(crate) fn subscribe(
        &mut self,
        owner: Owner,
        topic: &str,
        append: impl FnOnce(i64) -> Result<LogPosition>,
    ) -> Result<(bool, LogPosition)> {
        // The entry may be new (and then empty, which the error paths free).
        let Some(entry) = self.entry(owner) else {
            return Err(self.slots_error());
        };
        let at = entry as usize;
        let state = &self.entries[at];
        let found = self.index.lookup(topic);
        if found.is_ok_and(|r| state.topics.contains(&r)) {
            return Ok((false, None));
        }
        let outcome = room_for_one_more(SESSION_FULL_OF_TOPICS, state.topics.len(), TOPICS_PER_SESSION_MAX)
            .and_then(|()| append(i64::try_from(subscribe_len(topic.len())).unwrap_or(i64::MAX)));
        match outcome {
            Ok(position) => {
                let r = self.index.add(found, topic, entry);
                self.entries[at].topics.push(r);
                Ok((true, position))
            }
            Err(e) => {
                self.free_if_empty(owner);
                Err(e)
            }
        }
    }

    /// Unsubscribes the session from `topic`, logging first; false if it
    /// was not subscribed (nothing logged).
    #[inline]
    pub(crate) fn unsubscribe(
        &mut self,
        owner: Owner,
        topic: &str,
        append: impl FnOnce(i64) -> Result<LogPosition>,
    ) -> Result<(bool, LogPosition)> {
        let Some(at) = self.slot(owner) else {
            return Ok((false, None));
        };
        let topics = &self.entries[at as usize].topics;
        let found = if topics.len() <= TOPICS_COMPARED_BY_NAME {
            topics.iter().position(|&t| self.index.name(t) == topic)
        } else {
            self.index
                .find(topic)
                .and_then(|r| topics.iter().position(|&t| t == r))
        };
        let Some(i) = found else {
            return Ok((false, None));
        };
        let r = topics[i];
        let topics = &mut self.entries[at as usize].topics;
        // The SUBSCRIBE it cancels is dead from now on.
        let position = append(-i64::try_from(subscribe_len(topic.len())).unwrap_or(i64::MAX))?;
        topics.swap_remove(i);
        self.index.remove(r, at);
        self.free_if_empty(owner);
        Ok((true, position))
    }

    /// Topics recovered from the log (at open: nothing is logged).
    pub(crate) fn restore(&mut self, owner: Owner, topics: &[Topic]) -> Result<()> {
        let Some(entry) = self.entry(owner) else {
            return Err(self.slots_error());
        };
        let at = entry as usize;
        for topic in topics.iter().take(TOPICS_PER_SESSION_MAX) {
            let found = self.index.lookup(topic);
            if found.is_ok_and(|r| self.entries[at].topics.contains(&r)) {
                continue;
            }
            let r = self.index.add(found, topic, entry);
            self.entries[at].topics.push(r);
        }
        self.free_if_empty(owner);
        Ok(())
    }

    /// Checks and charges the session's bucket.
    pub(crate) fn rate_limit(
        &mut self,
        owner: Owner,
        bucket: Bucket,
        cost: u32,
        now_ms: u64,
    ) -> Result<RateDecision> {
        let Some(at) = self.entry(owner) else {
            return Err(self.slots_error());
        };
        let at = at as usize;
        let entry = &mut self.entries[at];
        if entry.bucket.is_none() {
            entry.bucket = BucketState::full(bucket, now_ms);
        }
        Ok(entry.bucket.charge(bucket, cost, now_ms))
    }

    /// Arms (or re-arms) the session's timer `token` at `deadline`; its slab
    /// slot and that slot's generation (the handle's parts).
    #[inline]
    pub(crate) fn arm(&mut self, owner: Owner, token: u64, deadline: u64) -> Result<(u32, u32)> {
        let Some(at) = self.entry(owner) else {
            return Err(self.slots_error());
        };
        let state = &self.entries[at as usize];
        if let Some((_, slot)) = state.find_token(&self.slab, token) {
            self.wheel.remove(&mut self.slab, slot);
            self.slab.entries[slot as usize].deadline = deadline;
            self.wheel.insert(&mut self.slab, slot, deadline);
            return Ok((slot, self.slab.entries[slot as usize].generation));
        }
        let slot = room_for_one_more(
            "timers of one session (TIMERS_PER_SESSION_MAX)",
            usize::from(state.timers.len),
            TIMERS_PER_SESSION_MAX,
        )
        .and_then(|()| self.slab.alloc(owner.id, at, token, deadline));
        match slot {
            Ok(slot) => {
                self.entries[at as usize].push_timer(token, slot);
                self.wheel.insert(&mut self.slab, slot, deadline);
                Ok((slot, self.slab.entries[slot as usize].generation))
            }
            Err(e) => {
                // The entry may be new (and so empty).
                self.free_if_empty(owner);
                Err(e)
            }
        }
    }

    /// Cancels the session's timer `token`; false if it had none.
    pub(crate) fn cancel(&mut self, owner: Owner, token: u64) -> bool {
        let Some(at) = self.slot(owner) else {
            return false;
        };
        let state = &mut self.entries[at as usize];
        let Some((i, slot)) = state.find_token(&self.slab, token) else {
            return false;
        };
        state.remove_timer(i);
        // The rest of the entry is on other lines: read only once the
        // timers are gone.
        let last = state.timers.len == 0;
        self.wheel.remove(&mut self.slab, slot);
        self.slab.free(slot);
        if last {
            self.free_if_empty(owner);
        }
        true
    }

    /// Cancels the timer in `slot` if it is still the one armed at
    /// `generation`; false if it fired, was cancelled or left with its
    /// session. The slot names the timer and the timer its session's
    /// entry: no lookup of the session at all (an entry this empties stays
    /// until the session leaves or another call frees it).
    #[inline]
    pub(crate) fn cancel_slot(&mut self, slot: u32, generation: u32) -> bool {
        let Some(&TimerEntry { owner, .. }) = self.slab.current(slot, generation) else {
            return false;
        };
        self.wheel.remove(&mut self.slab, slot);
        self.slab.free(slot);
        self.forget_timer(owner, slot);
        true
    }

    /// Takes the timer in `slot` off its session's list.
    fn forget_timer(&mut self, owner: u32, slot: u32) {
        let state = &mut self.entries[owner as usize];
        if let Some(i) = state.find_slot(slot) {
            state.remove_timer(i);
        }
    }

    /// Fires up to `budget` timers due at `now_ms`: those of sessions
    /// `live` finds live go to `out` (id, token, and the creation time
    /// `live` gives, which names that session among any later one under
    /// the id), the rest (sessions on their way out) are dropped silently.
    pub(crate) fn fire(
        &mut self,
        now_ms: u64,
        budget: usize,
        live: impl Fn(&SessionId) -> Option<u64>,
        out: &mut Vec<(SessionId, u64, u64)>,
    ) -> wheel::Poll {
        let mut fired = std::mem::take(&mut self.fired);
        let (_, poll) = self
            .wheel
            .poll(&mut self.slab, now_ms, budget, |_, index| fired.push(index));
        for at in fired.drain(..) {
            let TimerEntry { id, owner, token, .. } = self.slab.entries[at as usize];
            self.slab.free(at);
            self.forget_timer(owner, at);
            if let Some(created_ms) = live(&id) {
                out.push((id, token, created_ms));
            }
        }
        self.fired = fired;
        poll
    }

    /// Runs `f` on the shard's topic index, with the ids of its entries
    /// (listings).
    pub(crate) fn with_topics_index<R>(&mut self, f: impl FnOnce(&mut Topics, IdOf<'_>) -> R) -> R {
        let entries = &self.entries;
        f(&mut self.index, &|e| order_key(entries[e as usize].id))
    }

    /// (session, topic) pairs held in this shard (tests).
    pub(crate) fn topic_entries(&self) -> usize {
        self.held()
            .map(|(at, _)| self.entries[at as usize].topics.len())
            .sum()
    }

    /// The entry of the session in `owner`'s slot (tests).
    pub(crate) fn entry_of(&self, owner: Owner) -> Option<u32> {
        self.slot(owner)
    }

    /// The entry table slot `at` names (tests).
    pub(crate) fn entry_at(&self, at: usize) -> Option<u32> {
        self.by_slot.get(at).copied().filter(|&e| e != NO_ENTRY)
    }

    /// Whether entry `at` is in use by `id` (tests).
    pub(crate) fn holds(&self, at: u32, id: &SessionId) -> bool {
        !self.free.contains(&at) && self.entries.get(at as usize).is_some_and(|e| e.id == *id)
    }

    /// Checks that the entries, the index and the timers agree (tests).
    pub(crate) fn check_invariants(&self) {
        let mut timers = 0;
        for (at, id) in self.held() {
            let state = &self.entries[at as usize];
            assert!(state.topics.len() <= TOPICS_PER_SESSION_MAX);
            for &topic in &state.topics {
                let name = self.index.name(topic);
                assert!(
                    self.index.contains(name, at),
                    "{id:?} missing from the index of {name:?}"
                );
            }
            let t = &state.timers;
            assert_eq!(
                usize::from(t.len),
                t.inline() + t.more().len(),
                "{id:?}'s timer count"
            );
            for (i, slot) in state.timer_slots().enumerate() {
                let e = self.slab.entries[slot as usize];
                assert_eq!((e.id, e.owner), (*id, at), "timer slot {slot}");
                assert!(e.link.is_linked(), "timer {} of {id:?} not in the wheel", e.token);
                if i < TIMERS_INLINE {
                    assert_eq!(
                        t.fingerprints[i],
                        fingerprint(e.token),
                        "timer slot {slot}'s fingerprint"
                    );
                } else {
                    assert_eq!(
                        t.more()[i - TIMERS_INLINE].0,
                        e.token,
                        "timer slot {slot}'s token"
                    );
                }
                assert_eq!(
                    state.find_token(&self.slab, e.token),
                    Some((i, slot)),
                    "token {}",
                    e.token
                );
            }
            timers += usize::from(t.len);
        }
        assert_eq!(timers, self.wheel.len(), "timers in the wheel");
        self.index.check_invariants();
        assert_eq!(
            self.index.entries(),
            self.topic_entries(),
            "the topic index holds what the sessions hold"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::TOPIC_LEN_MAX;
    use crate::state::{check_bucket, check_topic};

    #[test]
    fn a_bucket_refills_caps_and_reshapes() {
        let shape = Bucket {
            capacity: 3,
            refill_per_sec: 2,
        };
        let mut b = BucketState::full(shape, 0);
        assert_eq!(b.charge(shape, 2, 0), RateDecision::Allowed { remaining: 1 });
        assert_eq!(b.charge(shape, 1, 0), RateDecision::Allowed { remaining: 0 });
        // One token takes 500 ms at 2 a second.
        assert_eq!(
            b.charge(shape, 1, 100),
            RateDecision::Limited {
                retry_after: Duration::from_millis(400)
            }
        );
        assert_eq!(b.charge(shape, 1, 500), RateDecision::Allowed { remaining: 0 });
        // A long wait refills to the capacity, no further.
        assert_eq!(b.charge(shape, 0, 60_000), RateDecision::Allowed { remaining: 3 });
        let small = Bucket {
            capacity: 1,
            refill_per_sec: 1,
        };
        assert_eq!(b.charge(small, 1, 60_000), RateDecision::Allowed { remaining: 0 });
        // A clock that goes back refills nothing and breaks nothing.
        assert_eq!(
            b.charge(small, 1, 59_000),
            RateDecision::Limited {
                retry_after: Duration::from_secs(1)
            }
        );
    }

    /// Tokens for the timer-list test: half share the fingerprint of
    /// token 0 (every compare of the line matches, and the slab entry
    /// decides), the rest are small numbers; more than the line holds.
    fn timer_tokens() -> Vec<u64> {
        let shared: Vec<u64> = (1..u64::MAX)
            .filter(|&t| fingerprint(t) == fingerprint(0))
            .take(TIMERS_INLINE + 3)
            .collect();
        [0].into_iter()
            .chain(shared)
            .chain(1..TIMERS_INLINE as u64)
            .collect()
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config { cases: 64, ..Default::default() })]
        /// Arms, re-arms and cancels (by token and by handle) on one
        /// session's timers, past the line into the heap and back, against
        /// a map token -> handle: every call answers as the map does, and
        /// the line, the heap list, the slab and the wheel agree after each.
        #[test]
        fn a_sessions_timer_list_matches_a_map(ops in proptest::collection::vec((0..3u8, 0..27usize), 1..300)) {
            use std::collections::HashMap;
            let tokens = timer_tokens();
            let mut states = States::new(None, 0, 8);
            let owner = Owner::new(3, sid(7));
            let mut model: HashMap<u64, (u32, u32)> = HashMap::new();
            for (kind, pick) in ops {
                let token = tokens[pick % tokens.len()];
                match kind {
                    0 => {
                        let handle = states.arm(owner, token, 1_000 + pick as u64).unwrap();
                        if let Some(&armed) = model.get(&token) {
                            proptest::prop_assert_eq!(handle, armed, "a re-arm keeps the slot");
                        }
                        model.insert(token, handle);
                    }
                    1 => {
                        proptest::prop_assert_eq!(states.cancel(owner, token), model.remove(&token).is_some());
                    }
                    _ => {
                        let Some(&(slot, generation)) = model.get(&token) else { continue };
                        proptest::prop_assert!(states.cancel_slot(slot, generation));
                        proptest::prop_assert!(!states.cancel_slot(slot, generation), "a handle cancels once");
                        model.remove(&token);
                    }
                }
                states.check_invariants();
                proptest::prop_assert_eq!(states.timers(), model.len());
            }
            // The session leaves: its timers go with it, silently.
            states.drop_session(owner);
            proptest::prop_assert_eq!(states.timers(), 0);
            let mut fired = Vec::new();
            states.fire(u64::MAX, usize::MAX, |_| Some(0), &mut fired);
            proptest::prop_assert!(fired.is_empty());
        }
    }

    #[test]
    fn timers_past_the_line_fire_and_leave_the_list() {
        let tokens = timer_tokens();
        let mut states = States::new(None, 0, 8);
        let owner = Owner::new(5, sid(9));
        for (i, &token) in tokens.iter().enumerate() {
            states.arm(owner, token, 10 + i as u64).unwrap();
        }
        states.check_invariants();
        let mut fired = Vec::new();
        // The first half due: some on the line, some on the heap.
        states.fire(10 + tokens.len() as u64 / 2, usize::MAX, |_| Some(0), &mut fired);
        let got: Vec<u64> = fired.iter().map(|&(_, token, _)| token).collect();
        assert_eq!(got, tokens[..=tokens.len() / 2].to_vec());
        states.check_invariants();
        for &token in &tokens[tokens.len() / 2 + 1..] {
            assert!(states.cancel(owner, token), "token {token}");
        }
        assert_eq!(states.timers(), 0);
        states.check_invariants();
        assert!(states.is_empty(), "the last cancel frees the entry");
    }

    #[test]
    fn bad_buckets_and_topics_are_typed_errors() {
        let b = |capacity, refill_per_sec| Bucket {
            capacity,
            refill_per_sec,
        };
        assert!(matches!(
            check_bucket(b(0, 1), 0),
            Err(Error::InvalidArgument { .. })
        ));
        assert!(matches!(
            check_bucket(b(1, 0), 0),
            Err(Error::InvalidArgument { .. })
        ));
        assert!(matches!(
            check_bucket(b(2, 1), 3),
            Err(Error::InvalidArgument { .. })
        ));
        assert!(check_bucket(b(2, 1), 2).is_ok());
        assert!(matches!(check_topic(""), Err(Error::InvalidArgument { .. })));
        assert!(check_topic(&"x".repeat(TOPIC_LEN_MAX)).is_ok());
        assert!(matches!(
            check_topic(&"x".repeat(TOPIC_LEN_MAX + 1)),
            Err(Error::LimitExceeded { .. })
        ));
    }

    /// The id whose listing order is `n`'s.
    fn sid(n: u128) -> SessionId {
        super::id_of_key(n)
    }

    /// A shard's index, with the ids its entries stand for (an entry per
    /// id, as `States` gives a session one).
    #[derive(Default)]
    struct Part {
        topics: Option<Topics>,
        ids: Vec<u128>,
    }

    impl Part {
        fn new() -> Self {
            Self {
                topics: Some(Topics::new()),
                ids: Vec::new(),
            }
        }

        fn topics(&mut self) -> &mut Topics {
            self.topics.as_mut().expect("made by new")
        }

        fn entry_of(&mut self, id: SessionId) -> u32 {
            let id = super::order_key(id);
            let at = self.ids.iter().position(|&x| x == id).unwrap_or_else(|| {
                self.ids.push(id);
                self.ids.len() - 1
            });
            u32::try_from(at).unwrap()
        }
    }

    /// The shards' indexes, each under a lock as a shard's is; an id lives
    /// in the part its low bits pick.
    struct Index(Vec<parking_lot::Mutex<Part>>);

    impl Index {
        fn new() -> Self {
            Self((0..3).map(|_| parking_lot::Mutex::new(Part::new())).collect())
        }

        fn part(&self, id: SessionId) -> parking_lot::MutexGuard<'_, Part> {
            #[allow(clippy::cast_possible_truncation)] // below the part count
            let part = (super::order_key(id) % self.0.len() as u128) as usize;
            self.0[part].lock()
        }

        fn add(&self, topic: &str, id: SessionId) {
            let mut p = self.part(id);
            let entry = p.entry_of(id);
            let t = p.topics();
            let found = t.lookup(topic);
            t.add(found, topic, entry);
        }

        fn remove(&self, topic: &str, id: SessionId) {
            let mut p = self.part(id);
            let entry = p.entry_of(id);
            let t = p.topics();
            if let Some(r) = t.find(topic) {
                t.remove(r, entry);
            }
        }

        fn entries(&self) -> usize {
            self.0.iter().map(|p| p.lock().topics().entries()).sum()
        }

        fn held_topics(&self) -> usize {
            self.0.iter().map(|p| p.lock().topics().held_topics()).sum()
        }
    }

    impl TopicParts for Index {
        fn parts(&self) -> usize {
            self.0.len()
        }

        fn with_topics<R>(&self, part: usize, f: impl FnOnce(&mut Topics, IdOf<'_>) -> R) -> R {
            let mut p = self.0[part].lock();
            let Part { topics, ids } = &mut *p;
            f(topics.as_mut().expect("made by new"), &|e| ids[e as usize])
        }
    }

    thread_local! {
        /// The most ids `page` held after a shard, on this thread.
        pub(super) static PAGE_IDS_PEAK: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    #[test]
    fn a_listing_across_many_shards_holds_two_pages_at_most() {
        let index = Index((0..64).map(|_| parking_lot::Mutex::new(Part::new())).collect());
        // 20 subscribers in each of the 64 parts (ids pick their part).
        let all: Vec<u128> = (1..=64 * 20).collect();
        for &n in &all {
            index.add("t", sid(n));
        }
        let limit = 10;
        PAGE_IDS_PEAK.with(|peak| peak.set(0));
        let (first, next) = page(&index, "t", 0, limit);
        assert_eq!(first, all[..limit]);
        assert_eq!(next, Some(all[limit]));
        let peak = PAGE_IDS_PEAK.with(std::cell::Cell::get);
        assert!(
            peak <= 2 * (limit + 1),
            "{peak} ids held at once for a page of {limit} (each shard's page gathered before the merge)"
        );
        // Paging on gives every subscriber once, in order.
        let (mut listed, mut from) = (first, next);
        while let Some(at) = from {
            let (more, next) = page(&index, "t", at, 7);
            listed.extend(more);
            from = next;
        }
        assert_eq!(listed, all);
    }

    #[test]
    fn keep_smallest_keeps_the_n_smallest() {
        let mut ids = vec![9, 3, 7, 1, 8, 2];
        super::keep_smallest(&mut ids, 3);
        ids.sort_unstable();
        assert_eq!(ids, [1, 2, 3]);
        super::keep_smallest(&mut ids, 5);
        assert_eq!(ids.len(), 3, "fewer than n: all kept");
        super::keep_smallest(&mut ids, 0);
        assert!(ids.is_empty());
    }

    fn page(index: &Index, topic: &str, from: u128, limit: usize) -> (Vec<u128>, Option<u128>) {
        let mut out = Vec::new();
        let next = super::page(index, topic, from, limit, &mut out);
        (out.iter().map(|&id| super::order_key(id)).collect(), next)
    }

    #[test]
    fn a_listing_goes_on_in_id_order_across_changes() {
        let index = Index::new();
        for n in (10..=100).step_by(10) {
            index.add("t", sid(n));
        }
        let (first, next) = page(&index, "t", 0, 3);
        assert_eq!(first, [10, 20, 30]);
        assert_eq!(next, Some(40));
        // Mid-listing: one leaves, one joins behind the cursor, one ahead.
        index.remove("t", sid(70));
        index.add("t", sid(5));
        index.add("t", sid(85));
        let (rest, next) = page(&index, "t", 40, 100);
        assert_eq!(next, None);
        assert!(!rest.contains(&70), "listed after it left: {rest:?}");
        assert!(rest.windows(2).all(|w| w[0] < w[1]), "{rest:?}");
        for n in [40, 50, 60, 80, 90, 100] {
            assert!(
                rest.contains(&n),
                "{n} subscribed throughout, not listed: {rest:?}"
            );
        }
        // A new listing sees the set as it is now.
        let (all, next) = page(&index, "t", 0, 100);
        assert_eq!(next, None);
        assert_eq!(all, [5, 10, 20, 30, 40, 50, 60, 80, 85, 90, 100]);
        assert_eq!(page(&index, "none", 0, 10), (vec![], None));
    }

    #[test]
    fn a_finished_sort_replaces_only_an_older_copy_of_the_same_set() {
        // One part: the ids below all live in it.
        let index = Index(vec![parking_lot::Mutex::new(Part::new())]);
        index.add("t", sid(1));
        let Some(Err((instance, old_version, _))) =
            index.with_topics(0, |t, id_of| t.usable_or_copy("t", 0, id_of))
        else {
            panic!("a fresh set has no sorted copy");
        };
        index.add("t", sid(2));
        // A newer sort lands first ...
        assert_eq!(page(&index, "t", 0, 10), (vec![1, 2], None));
        // ... and the slower, older one must not replace it (a page further
        // on uses the copy there is).
        index.with_topics(0, |t, _| {
            t.install("t", instance, old_version, &Arc::from(vec![(1u128, 0u32)]));
        });
        assert_eq!(page(&index, "t", 1, 10), (vec![1, 2], None));
        // The topic empties and comes back: a sort of the old set is not its.
        index.remove("t", sid(1));
        index.remove("t", sid(2));
        index.add("t", sid(3));
        index.with_topics(0, |t, _| {
            t.install("t", instance, u64::MAX, &Arc::from(vec![(1u128, 0u32), (2, 1)]));
        });
        assert_eq!(page(&index, "t", 1, 10), (vec![3], None));
        assert_eq!(index.entries(), 1);
    }

    #[test]
    fn a_reused_entry_is_not_listed_as_the_session_that_left_it() {
        let mut topics = Topics::new();
        // Entry 0 holds session 10, entry 1 session 20; both subscribe.
        let mut ids = [10u128, 20];
        for entry in 0..2 {
            let found = topics.lookup("t");
            topics.add(found, "t", entry);
        }
        // A listing sorts its copy.
        let Some(Err((instance, version, mut copy))) = topics.usable_or_copy("t", 0, &|e| ids[e as usize])
        else {
            panic!("a fresh set has no sorted copy");
        };
        copy.sort_unstable();
        let sorted: Sorted = copy.into();
        topics.install("t", instance, version, &sorted);
        // Session 10 leaves; session 30 gets its entry and subscribes.
        let r = topics.find("t").unwrap();
        topics.remove(r, 0);
        ids[0] = 30;
        let found = topics.lookup("t");
        topics.add(found, "t", 0);
        // The copy names entry 0 for 10: entry 0 is in the set, but 30's now.
        let mut out = Vec::new();
        topics.members_from("t", &sorted, 0, 10, &mut out, &|e| ids[e as usize]);
        assert_eq!(out, [20]);
    }

    #[test]
    fn emptied_topics_are_kept_for_reuse_and_bounded() {
        let index = Index::new();
        // One subscriber coming and going: the entry stays, listings agree.
        for round in 0..100u128 {
            index.add("solo", sid(round));
            assert_eq!(page(&index, "solo", 0, 10), (vec![round], None));
            index.remove("solo", sid(round));
            assert_eq!(page(&index, "solo", 0, 10), (vec![], None));
        }
        assert_eq!(index.entries(), 0);
        // Many topics emptied: at most TOPICS_EMPTY_KEPT_MAX a part stay.
        for n in 0..10_000u128 {
            let topic = format!("t/{n}");
            index.add(&topic, sid(n));
            index.remove(&topic, sid(n));
        }
        assert!(
            index.held_topics() <= 3 * TOPICS_EMPTY_KEPT_MAX,
            "{} empty topics held",
            index.held_topics()
        );
        // Live topics are unaffected.
        for n in 0..2_000u128 {
            index.add(&format!("live/{n}"), sid(n));
        }
        for n in 0..10_000u128 {
            let topic = format!("gone/{n}");
            index.add(&topic, sid(n));
            index.remove(&topic, sid(n));
        }
        assert!(index.held_topics() <= 2_000 + 3 * TOPICS_EMPTY_KEPT_MAX);
        assert_eq!(index.entries(), 2_000);
        for part in &index.0 {
            part.lock().topics().check_invariants();
        }
    }

    #[test]
    fn an_emptied_topic_keeps_its_room_within_the_budget() {
        let mut topics = Topics::new();
        // Entries 100 apart: sparse sets, which stay hash sets (a dense
        // one becomes a bitmap, whose room is not kept).
        let entry = |i: u128| u32::try_from(i * 100).unwrap();
        let fill = |topics: &mut Topics, name: &str, n: u128| {
            for i in 0..n {
                let found = topics.lookup(name);
                topics.add(found, name, entry(i));
            }
        };
        let empty_out = |topics: &mut Topics, name: &str, n: u128| {
            let r = topics.find(name).unwrap();
            for i in 0..n {
                topics.remove(r, entry(i));
            }
        };
        let room =
            |topics: &Topics, name: &str| topics.entry(topics.find(name).unwrap()).set.members.capacity();
        // Its subscribers leave and come back: the set keeps its room.
        fill(&mut topics, "big", 10_000);
        let big_room = room(&topics, "big");
        empty_out(&mut topics, "big", 10_000);
        topics.check_invariants();
        assert_eq!(room(&topics, "big"), big_room);
        fill(&mut topics, "big", 10_000);
        assert_eq!(room(&topics, "big"), big_room);
        topics.check_invariants();
        // A second big topic emptied while the first is empty would take the
        // kept room past the budget: it shrinks.
        empty_out(&mut topics, "big", 10_000);
        fill(&mut topics, "other", 10_000);
        empty_out(&mut topics, "other", 10_000);
        topics.check_invariants();
        assert!(big_room + room(&topics, "other") <= TOPICS_EMPTY_ROOM_MAX + EMPTY_SET_ROOM * 2);
        assert!(room(&topics, "other") < 10_000);
        assert_eq!(topics.entries(), 0);
    }

    #[derive(Clone, Debug)]
    enum IndexOp {
        Add(u8),
        Remove(u8),
        /// A page of this many from listing 0 or 1 (under way, or a new one).
        Page(usize, usize),
    }

    /// What one listing under way has seen.
    #[derive(Default)]
    struct Listing {
        cursor: Option<u128>,
        listed: std::collections::BTreeSet<u128>,
        /// Members since the listing began.
        throughout: std::collections::BTreeSet<u128>,
    }

    use proptest::prelude::*;

    /// The ids of the proptest: `n << 64`, so id 0 (the START cursor's
    /// value) is among them.
    fn nth(n: u8) -> u128 {
        u128::from(n) << 64
    }

    proptest! {
        /// Random changes between the pages of two interleaved listings,
        /// against the promises: pages in id order and past the cursor,
        /// only current members listed, none twice in a listing, and every
        /// id that was a member for a whole listing listed in it.
        #[test]
        fn listings_keep_their_promises_under_changes(ops in proptest::collection::vec(
            prop_oneof![
                3 => (0..40u8).prop_map(IndexOp::Add),
                2 => (0..40u8).prop_map(IndexOp::Remove),
                2 => (0..2usize, 1..6usize).prop_map(|(l, n)| IndexOp::Page(l, n)),
            ], 1..200)) {
            let index = Index::new();
            let mut members = std::collections::BTreeSet::new();
            let mut listings = [Listing::default(), Listing::default()];
            for op in ops {
                match op {
                    IndexOp::Add(n) => {
                        index.add("t", sid(nth(n)));
                        members.insert(nth(n));
                    }
                    IndexOp::Remove(n) => {
                        index.remove("t", sid(nth(n)));
                        members.remove(&nth(n));
                        for l in &mut listings {
                            l.throughout.remove(&nth(n));
                        }
                    }
                    IndexOp::Page(which, limit) => {
                        let l = &mut listings[which];
                        let from = if let Some(from) = l.cursor {
                            from
                        } else {
                            l.listed.clear();
                            l.throughout.clone_from(&members);
                            0
                        };
                        let (ids, next) = page(&index, "t", from, limit);
                        prop_assert!(ids.len() <= limit);
                        prop_assert!(ids.windows(2).all(|w| w[0] < w[1]), "{:?}", ids);
                        for id in &ids {
                            prop_assert!(*id >= from);
                            prop_assert!(members.contains(id), "{} is not a member", id);
                            prop_assert!(l.listed.insert(*id), "{} listed twice", id);
                        }
                        if let Some(next) = next {
                            prop_assert!(ids.last().is_none_or(|last| next > *last));
                        } else {
                            prop_assert!(
                                l.throughout.is_subset(&l.listed),
                                "missed {:?}",
                                l.throughout.difference(&l.listed).collect::<Vec<_>>()
                            );
                        }
                        l.cursor = next;
                    }
                }
            }
            prop_assert_eq!(index.entries(), members.len());
        }
    }
}
