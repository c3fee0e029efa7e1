//! A hierarchical timer wheel over intrusive index links, after Varghese and
//! Lauck, "Hashed and Hierarchical Timing Wheels" (SOSP 1987), in the shape of
//! tokio's `runtime/time/wheel`.
//!
//! The wheel speaks integer ticks only; the engine's tick is 1 ms, so a tick
//! is a millisecond timestamp. Each level has 64 slots and one `u64` bitmap of
//! the occupied ones:
//!
//! | level | slot width          | level span            |
//! |-------|---------------------|-----------------------|
//! | 0     | 1 tick   (1 ms)     | 64 ticks  (64 ms)     |
//! | 1     | 64 ticks (64 ms)    | 2^12 ticks (~4.1 s)   |
//! | 2     | 2^12 ticks (~4.1 s) | 2^18 ticks (~4.4 min) |
//! | 3     | 2^18 ticks (~4.4 min)| 2^24 ticks (~4.7 h)  |
//! | 4     | 2^24 ticks (~4.7 h) | 2^30 ticks (~12.4 d)  |
//! | 5     | 2^30 ticks (~12.4 d)| 2^36 ticks (~2.2 y)   |
//!
//! An entry goes to the level of the highest bit in which its deadline
//! differs from `elapsed` (the last tick processed), at the slot its deadline
//! has in that level. Slots fire in deadline order; firing a slot moves its
//! entries to a pending list. The wheel then asks the store for each entry's
//! *current* deadline: due entries expire, the rest are re-inserted relative to
//! the slot's start, which cascades them to a lower level, or re-arms them
//! further on when their deadline moved since they were scheduled. That makes
//! a touch free: it only changes the deadline the store reports. Deadlines
//! beyond the top level's span land in a top-level slot, fire early and are
//! re-armed, so no deadline is ever too far.
//!
//! The wheel stores no entries itself, only list heads: each entry's
//! `prev`/`next` links live in the store (the session blocks), so schedule and
//! cancel are O(1) and never allocate. A `prev` with the top bit set marks a
//! list head and names the list, which makes unlinking the head O(1) too.

use crate::limits::{WHEEL_LEVELS as LEVELS, WHEEL_SLOTS as SLOTS, WHEEL_SLOT_BITS as SLOT_BITS};

/// "No entry" in a link or a list head.
pub(crate) const NIL: u32 = u32::MAX;
/// Set in `prev` when the entry heads a list; the low bits name the list.
const HEAD_BIT: u32 = 1 << 31;
/// Lists `0..LEVELS * SLOTS` are the slots; this one holds fired entries.
#[allow(clippy::cast_possible_truncation)] // asserted in limits: fits in 16 bits
const PENDING_LIST: u32 = (LEVELS * SLOTS) as u32;
/// Ticks spanned by the whole wheel.
const SPAN_TICKS: u64 = 1 << (SLOT_BITS as usize * LEVELS);

/// Largest index an entry may have (the top bit of `prev` marks heads).
pub(crate) const INDEX_MAX: u32 = HEAD_BIT - 1;

/// An entry's place in a wheel list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Link {
    pub(crate) prev: u32,
    pub(crate) next: u32,
}

impl Link {
    pub(crate) const UNLINKED: Link = Link { prev: NIL, next: NIL };

    pub(crate) fn is_linked(self) -> bool {
        self.prev != NIL
    }
}

/// What the wheel needs from the container that owns the entries.
pub(crate) trait WheelStore {
    fn link(&self, index: u32) -> Link;
    fn set_link(&mut self, index: u32, link: Link);
    fn set_prev(&mut self, index: u32, prev: u32) {
        let next = self.link(index).next;
        self.set_link(index, Link { prev, next });
    }
    fn set_next(&mut self, index: u32, next: u32) {
        let prev = self.link(index).prev;
        self.set_link(index, Link { prev, next });
    }
    /// The entry's current deadline in ticks; `None` if it never expires.
    fn deadline(&self, index: u32) -> Option<u64>;
    /// Whether the entry fires at `now`: the wheel asks this of each entry
    /// of a slot that fired. A store whose deadlines move concurrently
    /// decides (and records) it atomically here.
    fn due(&mut self, index: u32, now: u64) -> Due {
        match self.deadline(index) {
            Some(deadline) if deadline <= now => Due::Fire,
            Some(deadline) => Due::At(deadline),
            None => Due::Never,
        }
    }
}

/// An entry's fate when its slot fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Due {
    /// Expire it.
    Fire,
    /// Re-arm it at this deadline (it moved, or the slot was a coarse one).
    At(u64),
    /// It never expires now: leave it unscheduled.
    Never,
}

/// Ticks one slot of `level` spans.
pub(crate) const fn slot_range(level: usize) -> u64 {
    1 << (SLOT_BITS as usize * level)
}

/// Ticks the whole of `level` spans.
pub(crate) const fn level_range(level: usize) -> u64 {
    1 << (SLOT_BITS as usize * (level + 1))
}

/// The level for an entry due at `when`, seen from `elapsed`.
pub(crate) fn level_for(elapsed: u64, when: u64) -> usize {
    // The slot bits are forced on so that level 0 is the floor, and the value
    // is capped so that far deadlines go to the top level.
    let masked = ((elapsed ^ when) | (SLOTS as u64 - 1)).min(SPAN_TICKS - 1);
    let significant = 63 - masked.leading_zeros() as usize;
    significant / SLOT_BITS as usize
}

/// The slot of `when` within `level`.
pub(crate) fn slot_for(when: u64, level: usize) -> usize {
    // Masked to 6 bits, so the cast cannot truncate.
    #[allow(clippy::cast_possible_truncation)]
    let slot = ((when >> (SLOT_BITS as usize * level)) & (SLOTS as u64 - 1)) as usize;
    slot
}

#[allow(clippy::cast_possible_truncation)] // < PENDING_LIST, which fits in u32
fn list_id(level: usize, slot: usize) -> u32 {
    (level * SLOTS + slot) as u32
}

/// Whether a poll stopped because it ran out of budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Poll {
    /// Everything due at `now` has been handed out.
    Done,
    /// The budget ran out; call again to continue.
    More,
}

pub(crate) struct Wheel {
    /// Last tick processed: every slot due at or before it has fired.
    elapsed: u64,
    occupied: [u64; LEVELS],
    /// List heads: `LEVELS * SLOTS` slots, then the pending list.
    heads: [u32; LEVELS * SLOTS + 1],
    /// Entries linked anywhere in the wheel.
    len: usize,
}

impl Wheel {
    pub(crate) fn new(start_tick: u64) -> Self {
        Self {
            elapsed: start_tick,
            occupied: [0; LEVELS],
            heads: [NIL; LEVELS * SLOTS + 1],
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// An empty wheel at this one's time (`elapsed`): for relinking the
    /// entries after their owner moved them, built aside so that the old
    /// wheel stands until the move is done.
    pub(crate) fn emptied(&self) -> Self {
        Self::new(self.elapsed)
    }

    /// Schedules `index` at tick `when`. A deadline at or before `elapsed`
    /// is already due: it goes on the pending list, which the next poll
    /// drains first (filed a tick later, it waited for the clock to move,
    /// and a poll in the same millisecond reclaimed nothing).
    ///
    /// Always inlined (three callers, each on a hot path): left to the
    /// compiler, whether it was inlined into a timer's arming followed how
    /// the engine's code happened to be split into codegen units, so
    /// unrelated changes moved the instruction gate's count for
    /// `arm_timer` either way, past its tolerance.
    #[allow(clippy::inline_always)] // the reason above, measured
    #[inline(always)]
    pub(crate) fn insert(&mut self, store: &mut impl WheelStore, index: u32, when: u64) {
        debug_assert!(index <= INDEX_MAX, "index {index} collides with the head marker");
        debug_assert!(
            !store.link(index).is_linked(),
            "entry {index} is already scheduled: {:?}",
            store.link(index)
        );
        if when <= self.elapsed {
            self.insert_due(store, index);
            return;
        }
        let level = level_for(self.elapsed, when);
        let slot = slot_for(when, level);
        self.push_front(store, index, list_id(level, slot));
        self.occupied[level] |= 1 << slot;
    }

    /// [`Wheel::insert`] of a deadline already due (rare: out of line, so
    /// the common insert stays small).
    #[cold]
    #[inline(never)]
    fn insert_due(&mut self, store: &mut impl WheelStore, index: u32) {
        self.push_front(store, index, PENDING_LIST);
    }

    /// Unschedules `index`; false if it was not scheduled.
    #[inline]
    pub(crate) fn remove(&mut self, store: &mut impl WheelStore, index: u32) -> bool {
        let Link { prev, next } = store.link(index);
        if prev == NIL {
            return false;
        }
        if prev & HEAD_BIT == 0 {
            store.set_next(prev, next);
        } else {
            let list = prev & !HEAD_BIT;
            debug_assert_eq!(self.heads[list as usize], index, "list {list} head mismatch");
            self.heads[list as usize] = next;
            if next == NIL && list < PENDING_LIST {
                let (level, slot) = (list as usize / SLOTS, list as usize % SLOTS);
                self.occupied[level] &= !(1 << slot);
            }
        }
        if next != NIL {
            store.set_prev(next, prev);
        }
        store.set_link(index, Link::UNLINKED);
        self.len -= 1;
        true
    }

    /// Fires every entry due at or before `now`, handing the due ones to
    /// `on_expire` (each already unlinked when handed out) and re-arming the
    /// rest at their current deadline (moved since they were scheduled, or
    /// cascading to a lower level). Handles at most `budget` entries either
    /// way, so that a slot of many sessions cascading down costs its caller
    /// no more than a batch of expiries; returns how many expired.
    pub(crate) fn poll<S: WheelStore>(
        &mut self,
        store: &mut S,
        now: u64,
        budget: usize,
        mut on_expire: impl FnMut(&mut S, u32),
    ) -> (usize, Poll) {
        // Time the wheel has reached stays reached: a caller whose clock
        // reads a little behind (another thread's TSC) must not see the
        // deadlines between the two as not due, which put them back on the
        // pending list until the budget ran out.
        let now = now.max(self.elapsed);
        let mut expired = 0;
        let mut handled = 0;
        loop {
            while self.heads[PENDING_LIST as usize] != NIL {
                if handled == budget {
                    return (expired, Poll::More);
                }
                handled += 1;
                let index = self.heads[PENDING_LIST as usize];
                self.remove(store, index);
                match store.due(index, now) {
                    Due::Fire => {
                        on_expire(store, index);
                        expired += 1;
                    }
                    Due::At(deadline) => self.insert(store, index, deadline),
                    // The owner made it immortal without unscheduling it:
                    // nothing to fire, and it is now unlinked.
                    Due::Never => {}
                }
            }
            match self.next_expiration() {
                Some((list, deadline)) if deadline <= now => {
                    debug_assert!(
                        deadline >= self.elapsed,
                        "slot {list} due at {deadline} is behind elapsed {}",
                        self.elapsed
                    );
                    self.fire(store, list);
                    self.elapsed = deadline;
                }
                _ => {
                    self.elapsed = self.elapsed.max(now);
                    return (expired, Poll::Done);
                }
            }
        }
    }

    /// The earliest occupied slot and the tick it is due at.
    fn next_expiration(&self) -> Option<(u32, u64)> {
        for level in 0..LEVELS {
            let occupied = self.occupied[level];
            if occupied == 0 {
                continue;
            }
            // Search from the slot after `elapsed`'s: below the top level the
            // current slot is always empty (it fired when `elapsed` entered
            // it); at the top level it can only hold deadlines a whole
            // rotation away, which must come after every other slot.
            let first = (slot_for(self.elapsed, level) + 1) % SLOTS;
            #[allow(clippy::cast_possible_truncation)] // first < 64
            let ahead = occupied.rotate_right(first as u32).trailing_zeros() as usize;
            let slot = (first + ahead) % SLOTS;
            let level_start = self.elapsed & !(level_range(level) - 1);
            let mut deadline = level_start + slot as u64 * slot_range(level);
            if deadline <= self.elapsed {
                // Only a deadline beyond the wheel's span, parked in the top
                // level, can sit in a slot behind `elapsed`: it belongs to
                // the next rotation.
                debug_assert_eq!(
                    level,
                    LEVELS - 1,
                    "slot {slot} of level {level} is behind elapsed {} (occupied {occupied:#x})",
                    self.elapsed
                );
                deadline += level_range(level);
            }
            // Lower levels hold earlier deadlines than any slot above them.
            return Some((list_id(level, slot), deadline));
        }
        None
    }

    /// Moves the whole list of a due slot onto the (empty) pending list.
    fn fire(&mut self, store: &mut impl WheelStore, list: u32) {
        debug_assert_eq!(self.heads[PENDING_LIST as usize], NIL, "pending list not drained");
        let head = std::mem::replace(&mut self.heads[list as usize], NIL);
        let (level, slot) = (list as usize / SLOTS, list as usize % SLOTS);
        self.occupied[level] &= !(1 << slot);
        if head != NIL {
            store.set_prev(head, HEAD_BIT | PENDING_LIST);
            self.heads[PENDING_LIST as usize] = head;
        }
    }

    /// Always inlined, as `insert` is, for the same reason: left to the
    /// compiler, it was called out of line in some code-unit layouts (an
    /// unrelated change elsewhere in the crate), and the instruction
    /// gate's `arm_timer` moved past its tolerance.
    #[allow(clippy::inline_always)] // the reason above, measured
    #[inline(always)]
    fn push_front(&mut self, store: &mut impl WheelStore, index: u32, list: u32) {
        let head = self.heads[list as usize];
        store.set_link(
            index,
            Link {
                prev: HEAD_BIT | list,
                next: head,
            },
        );
        if head != NIL {
            store.set_prev(head, index);
        }
        self.heads[list as usize] = index;
        self.len += 1;
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// A store of `n` entries with settable deadlines.
    struct VecStore {
        links: Vec<Link>,
        deadlines: Vec<Option<u64>>,
    }

    impl VecStore {
        fn new(n: usize) -> Self {
            Self {
                links: vec![Link::UNLINKED; n],
                deadlines: vec![None; n],
            }
        }
    }

    impl WheelStore for VecStore {
        fn link(&self, index: u32) -> Link {
            self.links[index as usize]
        }
        fn set_link(&mut self, index: u32, link: Link) {
            self.links[index as usize] = link;
        }
        fn deadline(&self, index: u32) -> Option<u64> {
            self.deadlines[index as usize]
        }
    }

    fn poll_all(wheel: &mut Wheel, store: &mut VecStore, now: u64) -> Vec<u32> {
        let mut fired = Vec::new();
        let (count, poll) = wheel.poll(store, now, usize::MAX, |s, i| {
            s.deadlines[i as usize] = None;
            fired.push(i);
        });
        assert_eq!(poll, Poll::Done);
        assert_eq!(count, fired.len());
        fired.sort_unstable();
        fired
    }

    #[test]
    fn level_and_slot_sweep_every_boundary() {
        for level in 0..LEVELS {
            for slot in 0..SLOTS as u64 {
                let when = slot * slot_range(level);
                if when == 0 {
                    continue;
                }
                let expected_level = level_for(0, when);
                // The first tick of a slot at `level` differs from 0 in a bit
                // of `level` or below.
                assert!(expected_level <= level, "when {when} level {expected_level}");
                assert_eq!(slot_for(when, level) as u64, slot);
                assert_eq!(slot_for(when - 1, level) as u64, (slot + 63) % 64);
            }
            // The last tick of the level's range stays in the level; the next
            // one moves up (or caps at the top level).
            let last = level_range(level) - 1;
            assert_eq!(level_for(0, last), level);
            assert_eq!(level_for(0, last + 1), (level + 1).min(LEVELS - 1));
        }
        assert_eq!(level_for(0, u64::MAX), LEVELS - 1);
        assert_eq!(level_for(5, 6), 0);
    }

    #[test]
    fn fires_exactly_at_the_deadline_at_every_level_boundary() {
        for start in [0u64, 1, 63, 64, 4095, 1_700_000_000_123] {
            for level in 0..LEVELS {
                let range = slot_range(level);
                let offsets = [
                    range - 1,
                    range,
                    range + 1,
                    level_range(level) - 1,
                    level_range(level),
                    level_range(level) + 1,
                ];
                for offset in offsets.into_iter().filter(|&o| o > 0) {
                    let mut wheel = Wheel::new(start);
                    let mut store = VecStore::new(1);
                    let when = start + offset;
                    store.deadlines[0] = Some(when);
                    wheel.insert(&mut store, 0, when);
                    // Polling in a few uneven steps up to just before the deadline.
                    for step in [when - 1 - (when - 1 - start) / 2, when - 1] {
                        assert!(
                            poll_all(&mut wheel, &mut store, step).is_empty(),
                            "start {start} level {level} offset {offset} fired early at {step}"
                        );
                    }
                    assert_eq!(
                        poll_all(&mut wheel, &mut store, when),
                        vec![0],
                        "start {start} level {level} offset {offset}"
                    );
                    assert_eq!(wheel.len(), 0);
                }
            }
        }
    }

    #[test]
    fn far_deadlines_beyond_the_span_fire_on_time() {
        let start = 1_000;
        let mut wheel = Wheel::new(start);
        let mut store = VecStore::new(2);
        let far = start + 3 * SPAN_TICKS + 12_345;
        store.deadlines[0] = Some(far);
        wheel.insert(&mut store, 0, far);
        store.deadlines[1] = Some(u64::MAX - 1);
        wheel.insert(&mut store, 1, u64::MAX - 1);
        let mut now = start;
        while now < far - 1 {
            now = (now + SPAN_TICKS / 3).min(far - 1);
            assert!(
                poll_all(&mut wheel, &mut store, now).is_empty(),
                "fired early at {now}"
            );
        }
        assert_eq!(poll_all(&mut wheel, &mut store, far), vec![0]);
        assert_eq!(wheel.len(), 1, "the u64::MAX - 1 entry stays armed");
    }

    #[test]
    fn deadlines_in_the_past_fire_on_the_next_poll() {
        let mut wheel = Wheel::new(500);
        let mut store = VecStore::new(1);
        store.deadlines[0] = Some(10);
        wheel.insert(&mut store, 0, 10);
        // Already due: fired by a poll at the same tick (it used to wait
        // for the clock to move on).
        assert_eq!(poll_all(&mut wheel, &mut store, 500), vec![0]);
        assert_eq!(wheel.len(), 0);
        store.deadlines[0] = Some(500);
        wheel.insert(&mut store, 0, 500);
        assert_eq!(
            poll_all(&mut wheel, &mut store, 500),
            vec![0],
            "due at elapsed itself"
        );
    }

    /// A poll whose `now` is behind the wheel's (threads whose TSCs differ
    /// a little, say) fires what is due by the wheel's time: a deadline it
    /// had already reached went back on the pending list over and over
    /// until the budget ran out, and the sweep spun until the clock caught
    /// up.
    #[test]
    fn a_poll_behind_the_wheel_fires_what_the_wheel_reached() {
        let mut wheel = Wheel::new(0);
        let mut store = VecStore::new(1);
        assert_eq!(poll_all(&mut wheel, &mut store, 100), Vec::<u32>::new());
        store.deadlines[0] = Some(100);
        wheel.insert(&mut store, 0, 100);
        let (expired, poll) = wheel.poll(&mut store, 99, 10, |_, _| {});
        assert_eq!((expired, poll), (1, Poll::Done));
        assert_eq!(wheel.len(), 0);
    }

    #[test]
    fn moved_deadlines_are_rearmed_not_fired() {
        let mut wheel = Wheel::new(0);
        let mut store = VecStore::new(1);
        store.deadlines[0] = Some(100);
        wheel.insert(&mut store, 0, 100);
        // A touch: only the deadline the store reports changes.
        store.deadlines[0] = Some(5_000);
        assert!(poll_all(&mut wheel, &mut store, 4_999).is_empty());
        assert_eq!(wheel.len(), 1);
        assert_eq!(poll_all(&mut wheel, &mut store, 5_000), vec![0]);
    }

    #[test]
    fn remove_unlinks_head_middle_tail_and_pending() {
        let mut wheel = Wheel::new(0);
        let mut store = VecStore::new(4);
        for i in 0..4 {
            store.deadlines[i] = Some(10);
            wheel.insert(&mut store, i as u32, 10);
        }
        // The list is 3 2 1 0 (pushed at the front).
        assert!(wheel.remove(&mut store, 2)); // middle
        assert!(wheel.remove(&mut store, 3)); // head
        assert!(wheel.remove(&mut store, 0)); // tail
        assert!(!wheel.remove(&mut store, 0));
        assert_eq!(wheel.len(), 1);
        assert_eq!(poll_all(&mut wheel, &mut store, 10), vec![1]);
        assert_eq!(wheel.occupied, [0; LEVELS]);

        // An entry on the pending list (a poll that ran out of budget).
        for i in 0..4 {
            store.deadlines[i] = Some(20);
            wheel.insert(&mut store, i as u32, 20);
        }
        let (n, poll) = wheel.poll(&mut store, 20, 1, |s, i| s.deadlines[i as usize] = None);
        assert_eq!((n, poll), (1, Poll::More));
        let left: Vec<u32> = (0..4).filter(|&i| store.links[i as usize].is_linked()).collect();
        assert_eq!(left.len(), 3);
        assert!(wheel.remove(&mut store, left[1]));
        let rest = poll_all(&mut wheel, &mut store, 20);
        assert_eq!(rest, vec![left[0], left[2]]);
        assert_eq!(wheel.len(), 0);
    }

    #[test]
    fn budget_bounds_each_poll() {
        let mut wheel = Wheel::new(0);
        let n = 3_000u32;
        let mut store = VecStore::new(n as usize);
        for i in 0..n {
            store.deadlines[i as usize] = Some(7);
            wheel.insert(&mut store, i, 7);
        }
        let mut total = 0;
        let mut polls = 0;
        loop {
            let (count, poll) = wheel.poll(&mut store, 7, 1024, |s, i| s.deadlines[i as usize] = None);
            assert!(count <= 1024);
            total += count;
            polls += 1;
            if poll == Poll::Done {
                break;
            }
        }
        assert_eq!(total, n as usize);
        assert_eq!(polls, 3);
    }

    #[test]
    fn budget_bounds_cascades_and_rearms_too() {
        // 3,000 entries in one level-3 slot: when it fires, none is due yet;
        // each must cascade to a lower level, at most `budget` per poll.
        let mut wheel = Wheel::new(0);
        let n = 3_000u32;
        let mut store = VecStore::new(n as usize);
        let slot_start = 3 * slot_range(3);
        for i in 0..n {
            let when = slot_start + 1 + u64::from(i);
            store.deadlines[i as usize] = Some(when);
            wheel.insert(&mut store, i, when);
        }
        let mut polls = 0;
        loop {
            let (expired, poll) = wheel.poll(&mut store, slot_start, 1_024, |_, _| {});
            assert_eq!(expired, 0, "nothing is due at the slot's start");
            polls += 1;
            if poll == Poll::Done {
                break;
            }
        }
        assert_eq!(polls, 3, "3,000 re-arms in batches of 1,024");
        assert_eq!(wheel.len(), n as usize);
        let last = slot_start + u64::from(n);
        assert_eq!(poll_all(&mut wheel, &mut store, last), (0..n).collect::<Vec<_>>());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert {
            index: u32,
            delta: u64,
        },
        Remove {
            index: u32,
        },
        Move {
            index: u32,
            delta: u64,
        },
        Advance {
            delta: u64,
        },
        /// A poll that may run out of budget, leaving fired entries pending
        /// while the other operations go on.
        AdvanceSome {
            delta: u64,
            budget: usize,
        },
    }

    fn delta() -> impl Strategy<Value = u64> {
        // Spread over every level, with a bias to small steps.
        (0u32..40, any::<u64>()).prop_map(|(bits, r)| if bits == 0 { 0 } else { r % (1u64 << bits) })
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u32..32, delta()).prop_map(|(index, delta)| Op::Insert { index, delta }),
            1 => (0u32..32).prop_map(|index| Op::Remove { index }),
            2 => (0u32..32, delta()).prop_map(|(index, delta)| Op::Move { index, delta }),
            3 => delta().prop_map(|delta| Op::Advance { delta }),
            2 => (delta(), 0usize..4).prop_map(|(delta, budget)| Op::AdvanceSome { delta, budget }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// The wheel fires exactly the entries whose deadline is at or before
        /// the polled time, never early, never late, never twice.
        #[test]
        fn matches_a_sorted_map_model(start in 0u64..(1 << 40), ops in prop::collection::vec(op(), 1..200)) {
            let mut wheel = Wheel::new(start);
            let mut store = VecStore::new(32);
            let mut model: BTreeMap<u32, u64> = BTreeMap::new();
            let mut now = start;
            for op in ops {
                match op {
                    Op::Insert { index, delta } => {
                        if model.contains_key(&index) { continue; }
                        let when = now + delta.max(1);
                        store.deadlines[index as usize] = Some(when);
                        wheel.insert(&mut store, index, when);
                        model.insert(index, when);
                    }
                    Op::Remove { index } => {
                        let was = model.remove(&index).is_some();
                        prop_assert_eq!(wheel.remove(&mut store, index), was);
                        store.deadlines[index as usize] = None;
                    }
                    Op::Move { index, delta } => {
                        // Later: a touch (no wheel call). Earlier: re-schedule.
                        let Some(&old) = model.get(&index) else { continue };
                        let new = now + delta.max(1);
                        if new < old {
                            wheel.remove(&mut store, index);
                            wheel.insert(&mut store, index, new);
                        }
                        store.deadlines[index as usize] = Some(new);
                        model.insert(index, new);
                    }
                    Op::Advance { delta } => {
                        now += delta;
                        let fired = poll_all(&mut wheel, &mut store, now);
                        let due: Vec<u32> = model.iter().filter(|&(_, &d)| d <= now).map(|(&i, _)| i).collect();
                        prop_assert_eq!(&fired, &due, "now {}", now);
                        for i in due { model.remove(&i); }
                    }
                    Op::AdvanceSome { delta, budget } => {
                        now += delta;
                        let mut fired = Vec::new();
                        let (count, _) = wheel.poll(&mut store, now, budget, |s, i| {
                            s.deadlines[i as usize] = None;
                            fired.push(i);
                        });
                        prop_assert!(count <= budget);
                        prop_assert_eq!(count, fired.len());
                        for i in fired {
                            let deadline = model.remove(&i);
                            prop_assert!(deadline.is_some_and(|d| d <= now), "{} fired at {} due {:?}", i, now, deadline);
                        }
                    }
                }
                prop_assert_eq!(wheel.len(), model.len());
            }
        }
    }
}
