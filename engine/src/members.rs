//! A topic's subscribers in one shard: a set of entry indices (`u32`,
//! dense: the shard's slab of per-session entries hands them out from 0),
//! kept as a hash set while it is sparse and as a bitmap over the indices
//! once it is dense.
//!
//! Why two forms: a topic most of a shard's sessions subscribe to (the
//! fan-out an MCP server runs on a popular resource) would, as a hash set,
//! take a probe of its control bytes and of its bucket, two cache lines
//! spread over a few hundred kilobytes, on every subscribe and unsubscribe;
//! as a bitmap it takes one bit of a line in an array of one bit per entry
//! of the shard (1.6 KB for 12,500 entries), which stays in the cache. A
//! topic few sessions subscribe to stays a hash set, whose few lines are
//! cached anyway and whose size follows its members, not the shard.
//!
//! **When the form changes.** A hash set becomes a bitmap when it is about
//! to grow and a bitmap up to its highest member would take no more words
//! than the set has members (8 bytes a member at most, where the hash set
//! takes about 5 to 10): checked at growth only, so the scan for the
//! highest member is paid once per doubling. A bitmap becomes a hash set
//! again when its members fall below one per `SPARSE_WORDS` words (64
//! bytes a member: an 8x hysteresis, so a set at the boundary does not
//! change form back and forth), when an entry far past its words would
//! leave it that sparse, and when it empties. So a bitmap takes at most
//! about 64 bytes a member, and a hash set about 5 to 10 bytes a member of
//! the most it held since it was last empty: a hash set does not shrink
//! as members leave (a topic whose subscribers leave and come back then
//! does not grow again; `per_session.rs` bounds the room kept by sets
//! that emptied).

use std::hash::BuildHasherDefault;

/// Hashes an entry index: a multiply by an odd constant spreads
/// consecutive indices over the table's slots and its tag bits. The shard
/// assigns the indices, so no client can aim at collisions.
#[derive(Default, Clone, Copy)]
pub(crate) struct EntryHasher(u64);

impl std::hash::Hasher for EntryHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u32(&mut self, entry: u32) {
        self.0 = u64::from(entry).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type Hashed = hashbrown::HashSet<u32, BuildHasherDefault<EntryHasher>>;

/// Members below which a hash set never becomes a bitmap: a set this small
/// fits a few cache lines in either form.
const DENSE_MIN: usize = 64;

/// A bitmap with fewer than one member per this many words becomes a hash
/// set again.
const SPARSE_WORDS: usize = 8;

/// A set of entry indices.
pub(crate) enum Members {
    Hashed(Hashed),
    /// Bit `e % 64` of word `e / 64` is entry `e`; `len` members.
    Bits {
        words: Vec<u64>,
        len: usize,
    },
}

impl Default for Members {
    fn default() -> Self {
        Self::Hashed(Hashed::default())
    }
}

impl Members {
    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Hashed(set) => set.len(),
            Self::Bits { len, .. } => *len,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline]
    pub(crate) fn contains(&self, entry: u32) -> bool {
        match self {
            Self::Hashed(set) => set.contains(&entry),
            Self::Bits { words, .. } => {
                let (word, bit) = place(entry);
                words.get(word).is_some_and(|w| w & bit != 0)
            }
        }
    }

    /// Adds `entry`; false if it was a member.
    #[inline]
    pub(crate) fn insert(&mut self, entry: u32) -> bool {
        match self {
            Self::Hashed(set) => {
                // (hashbrown grows a full table even for a member it
                // holds: the check comes first.)
                if set.len() == set.capacity() && set.len() >= DENSE_MIN {
                    return !set.contains(&entry) && self.insert_growing(entry);
                }
                set.insert(entry)
            }
            Self::Bits { words, len } => {
                let (word, bit) = place(entry);
                if word >= words.len() {
                    if word + 1 > (*len + 1) * SPARSE_WORDS {
                        // A far entry would leave the bitmap sparse.
                        self.make_hashed();
                        return self.insert(entry);
                    }
                    words.resize(word + 1, 0);
                }
                let added = words[word] & bit == 0;
                words[word] |= bit;
                *len += usize::from(added);
                added
            }
        }
    }

    /// The insert of a new member into a full hash set: becomes a bitmap
    /// if that is as small, else grows.
    #[cold]
    #[inline(never)]
    fn insert_growing(&mut self, entry: u32) -> bool {
        let Self::Hashed(set) = self else {
            unreachable!("called on a hash set");
        };
        let highest = set.iter().copied().max().unwrap_or(0).max(entry);
        let words = place(highest).0 + 1;
        if words <= set.len() + 1 {
            let mut bits = vec![0; words];
            for &e in set.iter().chain([&entry]) {
                let (word, bit) = place(e);
                bits[word] |= bit;
            }
            *self = Self::Bits {
                words: bits,
                len: set.len() + 1,
            };
            true
        } else {
            set.insert(entry)
        }
    }

    /// Takes `entry` out; false if it was not a member.
    #[inline]
    pub(crate) fn remove(&mut self, entry: u32) -> bool {
        match self {
            Self::Hashed(set) => set.remove(&entry),
            Self::Bits { words, len } => {
                let (word, bit) = place(entry);
                let Some(w) = words.get_mut(word) else {
                    return false;
                };
                if *w & bit == 0 {
                    return false;
                }
                *w &= !bit;
                *len -= 1;
                if *len == 0 {
                    *self = Self::default();
                } else if *len * SPARSE_WORDS < words.len() {
                    self.make_hashed();
                }
                true
            }
        }
    }

    /// A sparse bitmap as a hash set.
    #[cold]
    #[inline(never)]
    fn make_hashed(&mut self) {
        let mut set = Hashed::default();
        set.reserve(self.len());
        set.extend(self.iter());
        *self = Self::Hashed(set);
    }

    /// Takes every member out; a hash set keeps its room.
    pub(crate) fn clear(&mut self) {
        match self {
            Self::Hashed(set) => set.clear(),
            Self::Bits { .. } => *self = Self::default(),
        }
    }

    /// Members a hash set holds without growing; 0 for a bitmap (whose
    /// room is not kept when it empties: it becomes an empty hash set).
    pub(crate) fn capacity(&self) -> usize {
        match self {
            Self::Hashed(set) => set.capacity(),
            Self::Bits { .. } => 0,
        }
    }

    /// Shrinks a hash set's room to about `room` members.
    pub(crate) fn shrink_to(&mut self, room: usize) {
        if let Self::Hashed(set) = self {
            set.shrink_to(room);
        }
    }

    /// The members, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        let (hashed, bits) = match self {
            Self::Hashed(set) => (Some(set.iter().copied()), None),
            Self::Bits { words, .. } => (None, Some(words)),
        };
        let bits = bits.into_iter().flat_map(|words| {
            words.iter().enumerate().flat_map(|(i, &word)| {
                let base = u32::try_from(i * 64).expect("entry indices fit u32");
                BitsOf(word).map(move |bit| base + bit)
            })
        });
        hashed.into_iter().flatten().chain(bits)
    }

    /// Whether the set is a bitmap (tests).
    #[cfg(test)]
    pub(crate) fn is_bits(&self) -> bool {
        matches!(self, Self::Bits { .. })
    }
}

/// The word and bit of `entry`.
#[inline]
fn place(entry: u32) -> (usize, u64) {
    (entry as usize / 64, 1 << (entry % 64))
}

/// The set bits of a word, lowest first.
struct BitsOf(u64);

impl Iterator for BitsOf {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        if self.0 == 0 {
            return None;
        }
        let bit = self.0.trailing_zeros();
        self.0 &= self.0 - 1;
        Some(bit)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    fn check(members: &Members, model: &BTreeSet<u32>) {
        assert_eq!(members.len(), model.len());
        let mut listed: Vec<u32> = members.iter().collect();
        listed.sort_unstable();
        assert_eq!(listed, model.iter().copied().collect::<Vec<_>>());
        if let Members::Bits { words, len } = members {
            let bits: u32 = words.iter().map(|w| w.count_ones()).sum();
            assert_eq!(bits as usize, *len);
            assert!(*len > 0, "an empty bitmap is a hash set");
        }
    }
    #[test]
    fn a_dense_set_becomes_a_bitmap_and_a_sparse_one_a_hash_set_again() {
        let mut members = Members::default();
        let mut model = BTreeSet::new();
        // Every other entry of 0..2048: 1024 members over 32 words.
        for e in (0..2048).step_by(2) {
            assert!(members.insert(e));
            assert!(!members.insert(e), "a member is not added twice");
            model.insert(e);
        }
        assert!(members.is_bits(), "1024 members over 32 words are dense");
        check(&members, &model);
        assert!(members.contains(1000) && !members.contains(1001) && !members.contains(1 << 20));
        assert!(!members.remove(1001), "not a member");
        assert!(!members.remove(1 << 20), "beyond the bitmap");
        // Down to one member per 8 words, then one fewer: a hash set.
        let keep: Vec<u32> = (0..2048)
            .step_by(2)
            .filter(|e| e % 2048 == 0 || e % 512 == 2)
            .collect();
        for e in (0..2048).step_by(2) {
            if !keep.contains(&e) {
                assert!(members.remove(e));
                model.remove(&e);
            }
        }
        assert_eq!(members.len(), 5);
        assert!(members.remove(0));
        model.remove(&0);
        assert!(members.is_bits(), "4 members over 32 words: kept");
        assert!(members.remove(2));
        model.remove(&2);
        assert!(!members.is_bits(), "3 members over 32 words: sparse");
        check(&members, &model);
    }

    #[test]
    fn a_far_entry_turns_a_bitmap_into_a_hash_set() {
        let mut members = Members::default();
        let mut model = BTreeSet::new();
        for e in 0..200 {
            members.insert(e);
            model.insert(e);
        }
        assert!(members.is_bits());
        // Within 8 words a member: the bitmap grows.
        assert!(members.insert(201 * 8 * 64 - 1));
        model.insert(201 * 8 * 64 - 1);
        assert!(members.is_bits());
        check(&members, &model);
        // Past them: a hash set, not a bitmap of mostly zeros.
        assert!(members.insert(1 << 30));
        model.insert(1 << 30);
        assert!(!members.is_bits());
        check(&members, &model);
    }

    #[test]
    fn a_sparse_set_stays_a_hash_set() {
        let mut members = Members::default();
        let mut model = BTreeSet::new();
        for e in (0..100_000).step_by(1000) {
            members.insert(e);
            model.insert(e);
        }
        assert!(!members.is_bits(), "100 members over 1563 words");
        check(&members, &model);
    }

    #[test]
    fn an_emptied_bitmap_is_an_empty_hash_set() {
        let mut members = Members::default();
        for e in 0..200 {
            members.insert(e);
        }
        assert!(members.is_bits());
        for e in 0..200 {
            assert!(members.remove(e));
        }
        assert!(members.is_empty() && !members.is_bits());
        for e in 0..200 {
            members.insert(e);
        }
        members.clear();
        assert!(members.is_empty() && !members.is_bits());
        assert!(members.iter().next().is_none());
    }

    proptest! {
        /// Against a `BTreeSet`, through both forms and their changes:
        /// entries from a range as small as a few words or as large as the
        /// sparse side, inserts and removals in runs.
        #[test]
        fn behaves_as_a_set(
            span in prop_oneof![Just(200u32), Just(5_000u32), Just(100_000u32)],
            ops in proptest::collection::vec((any::<bool>(), 0u32..1_000_000, 1usize..400), 1..40),
        ) {
            let mut members = Members::default();
            let mut model = BTreeSet::new();
            for (add, seed, run) in ops {
                for k in 0..run {
                    #[allow(clippy::cast_possible_truncation)]
                    let e = seed.wrapping_add(k as u32 * 7_919) % span;
                    if add {
                        prop_assert_eq!(members.insert(e), model.insert(e));
                    } else {
                        prop_assert_eq!(members.remove(e), model.remove(&e));
                    }
                    prop_assert_eq!(members.contains(e), model.contains(&e));
                }
                check(&members, &model);
            }
        }
    }
}
