//! Key layout: one Redis hash per session at `<prefix>{<id>}`.
//!
//! The 22-character id sits inside a hash tag (`{...}`), so Redis Cluster
//! places the key by the id alone, and any per-session key added later
//! (`<prefix>{<id>}:<suffix>`) lands in the same slot as the session: a script
//! may then touch both atomically. The prefix may not contain `{` or `}`
//! (either would move the hash tag), nor spaces or control characters.
//!
//! Each topic's reverse index (`state.rs`) is a key of its own,
//! `<prefix>t{<h>}:<topic>`: `<h>` is the topic's 64-bit FNV-1a hash in 16
//! hex digits, the hash tag that places the key, so any topic text (braces,
//! bytes a tag could not hold) is safe, and the topic itself follows in
//! full, so that two topics whose hashes collide share a slot but never an
//! index. A session key has `{` right after the prefix, a topic key `t`: no
//! session `SCAN` pattern matches one.

use std::sync::LazyLock;

use session_engine::{SessionId, SESSION_ID_TEXT_LEN};

use crate::limits::{CLUSTER_SLOTS, KEY_PREFIX_BYTES_MAX, SLOT_ID_DRAWS_MAX};

/// [`CLUSTER_SLOTS`] as the type slots are computed in.
#[allow(clippy::cast_possible_truncation)] // 16384 fits in u16
const SLOTS: u16 = CLUSTER_SLOTS as u16;

/// Formats and parses the keys of one store.
#[derive(Clone, Debug)]
pub(crate) struct KeySpace {
    prefix: String,
}

impl KeySpace {
    /// Checks the prefix (see the module docs).
    pub(crate) fn new(prefix: &str) -> Result<Self, String> {
        if prefix.len() > KEY_PREFIX_BYTES_MAX {
            return Err(format!(
                "key_prefix is {} bytes: at most {KEY_PREFIX_BYTES_MAX}",
                prefix.len()
            ));
        }
        if let Some(bad) = prefix
            .bytes()
            .find(|&b| !b.is_ascii_graphic() || b == b'{' || b == b'}')
        {
            return Err(format!(
                "key_prefix {prefix:?} contains byte {bad:#04x}: only printable ASCII without spaces, '{{' or '}}'"
            ));
        }
        Ok(Self {
            prefix: prefix.to_owned(),
        })
    }

    /// `<prefix>s{<n>}`, a key of hash slot `slot` that holds nothing (no
    /// `SCAN` pattern of sessions or topics matches it): `EXISTS` of it
    /// beside a keyless command (`SCAN`) makes a node that does not serve
    /// the slot answer `MOVED`, so a stale route is found out.
    pub(crate) fn slot_probe(&self, slot: u16) -> Vec<u8> {
        format!("{}s{{{}}}", self.prefix, SLOT_TAGS[usize::from(slot % SLOTS)]).into_bytes()
    }

    /// `<prefix>{<id>}`.
    pub(crate) fn key(&self, id: &SessionId) -> Vec<u8> {
        let mut text = [0u8; SESSION_ID_TEXT_LEN];
        let id = id.encode(&mut text);
        let mut key = Vec::with_capacity(self.prefix.len() + SESSION_ID_TEXT_LEN + 2);
        key.extend_from_slice(self.prefix.as_bytes());
        key.push(b'{');
        key.extend_from_slice(id.as_bytes());
        key.push(b'}');
        key
    }

    /// The `SCAN MATCH` pattern of exactly the session keys: the prefix with
    /// glob characters escaped, then `{`, 22 `?`, `}` (so `<prefix>{<id>}:x`
    /// keys added later are not listed as sessions).
    pub(crate) fn scan_pattern(&self) -> Vec<u8> {
        let mut pattern = self.escaped_prefix(SESSION_ID_TEXT_LEN + 2);
        pattern.push(b'{');
        pattern.extend(std::iter::repeat_n(b'?', SESSION_ID_TEXT_LEN));
        pattern.push(b'}');
        pattern
    }

    /// The `SCAN MATCH` pattern of the topic index keys: the escaped
    /// prefix, then `t{`, 16 `?`, `}:*`.
    pub(crate) fn topic_scan_pattern(&self) -> Vec<u8> {
        let mut pattern = self.escaped_prefix(TOPIC_TAG_LEN + 5);
        pattern.extend_from_slice(b"t{");
        pattern.extend(std::iter::repeat_n(b'?', TOPIC_TAG_LEN));
        pattern.extend_from_slice(b"}:*");
        pattern
    }

    /// The prefix with `SCAN MATCH`'s glob characters escaped, with room
    /// for `more` bytes.
    fn escaped_prefix(&self, more: usize) -> Vec<u8> {
        let mut pattern = Vec::with_capacity(self.prefix.len() * 2 + more);
        for b in self.prefix.bytes() {
            if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
                pattern.push(b'\\');
            }
            pattern.push(b);
        }
        pattern
    }

    /// The key of `topic`'s reverse index, `<prefix>t{<h>}:<topic>` (see
    /// the module docs).
    pub(crate) fn topic_key(&self, topic: &str) -> Vec<u8> {
        let mut key = Vec::with_capacity(self.prefix.len() + TOPIC_TAG_LEN + 4 + topic.len());
        key.extend_from_slice(self.prefix.as_bytes());
        key.extend_from_slice(b"t{");
        key.extend_from_slice(&topic_tag(topic.as_bytes()));
        key.extend_from_slice(b"}:");
        key.extend_from_slice(topic.as_bytes());
        key
    }

    /// The topic whose index `key` is ([`KeySpace::topic_key`] of it), `None`
    /// for any other key (another prefix's, a hash tag that is not the
    /// topic's, a topic that is not UTF-8).
    pub(crate) fn parse_topic_key<'k>(&self, key: &'k [u8]) -> Option<&'k str> {
        let rest = key.strip_prefix(self.prefix.as_bytes())?.strip_prefix(b"t{")?;
        let (tag, topic) = rest.split_at_checked(TOPIC_TAG_LEN)?;
        let topic = std::str::from_utf8(topic.strip_prefix(b"}:")?).ok()?;
        (*tag == topic_tag(topic.as_bytes())).then_some(topic)
    }

    /// The id of a session key, `None` for any other key.
    pub(crate) fn parse(&self, key: &[u8]) -> Option<SessionId> {
        let rest = key.strip_prefix(self.prefix.as_bytes())?;
        let text = rest.strip_prefix(b"{")?.strip_suffix(b"}")?;
        std::str::from_utf8(text).ok()?.parse().ok()
    }
}

/// The CRC16-XMODEM table (polynomial 0x1021), as Redis Cluster uses it.
const CRC16_TABLE: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        #[allow(clippy::cast_possible_truncation)] // i < 256
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 == 0 {
                crc << 1
            } else {
                (crc << 1) ^ 0x1021
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

fn crc16(data: &[u8]) -> u16 {
    data.iter().fold(0u16, |crc, &b| {
        (crc << 8) ^ CRC16_TABLE[usize::from((crc >> 8) as u8 ^ b)]
    })
}

/// The Redis Cluster hash slot of `key`: CRC16 of its hash tag (the bytes
/// between the first `{` and the next `}`, if not empty) or of the whole key,
/// mod 16384.
pub(crate) fn slot_of(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    crc16(tagged) % SLOTS
}

/// The slot of a session key, from the id alone (its text is the hash tag;
/// see the module docs).
pub(crate) fn id_slot(id: &SessionId) -> u16 {
    let mut text = [0u8; SESSION_ID_TEXT_LEN];
    crc16(id.encode(&mut text).as_bytes()) % SLOTS
}

// ---------------------------------------------------------------------------
// Random ids in a given slot (`rotate` in a cluster)
// ---------------------------------------------------------------------------
//
// A script may only touch keys of one slot, so a rotated session's new id
// must hash to its old id's slot. Drawing ids until one lands there takes
// 16,384 draws on average (and a long tail); instead, one draw is bent into
// the slot, keeping the result uniform over every id of that slot.
//
// The id's text is unpadded base64 of its 16 bytes. Its last three
// characters carry exactly the low 6 bits of byte 14 and all of byte 15
// (6 + 6 + 2 bits): the *suffix*, 14 bits, as many as a slot number; the
// first 19 characters depend only on the other 114 bits (the *prefix*).
// CRC16-XMODEM (initial value 0, no final xor) is linear over equal-length
// messages, `crc(x ^ y) == crc(x) ^ crc(y)`, so for a prefix P and a suffix s
//
//     crc(P . chars(s)) == crc(P . chars(0)) ^ crc(chars(0) ^ chars(s))
//
// and the slot (the low 14 bits) of P with suffix s is
// `slot(P, 0) ^ shift(s)`, where `shift` depends on s alone. So an id lands
// in slot t exactly when `shift(s) == slot(P, 0) ^ t`. `shift` is not a
// bijection (the base64 alphabet is not linear): a value has 0 to 4 suffixes
// ([`SUFFIXES_PER_SHIFT_MAX`]), 1 on average. To draw uniformly among the
// ids of slot t, each (prefix, suffix) pair of it must come out equally
// often: draw a prefix (114 random bits) and an index j below 4 (2 more
// random bits of the same draw); accept if the prefix's list of suffixes
// for `slot(P, 0) ^ t` has a j-th entry, and use it; else draw again. Each
// id of the slot then has probability 2^-114 / 4 per draw, and a draw is
// accepted with probability 1/4 (4 draws on average; more than
// [`SLOT_ID_DRAWS_MAX`] in a row: (3/4)^256 < 10^-31). The id keeps 114
// bits of entropy: exactly as many as the ids of one slot hold (2^128 /
// 2^14), the same as any rejection sampling by slot would leave.

/// Bits of an id that its text's last three characters carry (the low 6
/// bits of byte 14, all of byte 15): as many as a slot number has.
const SUFFIX_BITS: u32 = 14;
/// Characters of the id's text that carry the suffix.
const SUFFIX_CHARS: usize = 3;
/// Most suffixes that shift the slot by one same value (4 for base64url
/// with CRC16-XMODEM; checked when the index is built); a power of two, so
/// that 2 random bits pick one uniformly.
const SUFFIXES_PER_SHIFT_MAX: usize = 4;

const _: () = assert!(1 << SUFFIX_BITS == CLUSTER_SLOTS);
const _: () = assert!(SUFFIXES_PER_SHIFT_MAX.is_power_of_two() && SUFFIXES_PER_SHIFT_MAX <= 1 << 2);

/// `id` with its suffix bits replaced by `suffix` (below 2^14).
fn with_suffix(id: [u8; 16], suffix: u16) -> [u8; 16] {
    debug_assert!(
        suffix < 1 << SUFFIX_BITS,
        "suffix {suffix:#x} has more than 14 bits"
    );
    let mut bytes = id;
    let [high, low] = suffix.to_be_bytes();
    bytes[14] = (bytes[14] & 0xc0) | high;
    bytes[15] = low;
    bytes
}

/// For each slot shift (14 bits), the suffixes that cause it: the suffixes
/// sorted by shift, and where each shift's run starts. 64 KiB, built on
/// first use (about a millisecond: 16,384 encodings).
struct ShiftIndex {
    /// `starts[d]..starts[d + 1]` indexes `suffixes` for shift `d`.
    starts: Box<[u16]>,
    suffixes: Box<[u16]>,
}

static SHIFTS: LazyLock<ShiftIndex> = LazyLock::new(ShiftIndex::build);

/// For each slot, the smallest number whose decimal text hashes to it (a
/// hash tag of that slot): about 170K CRC16s of short texts, once.
static SLOT_TAGS: LazyLock<Box<[u32]>> = LazyLock::new(|| {
    let mut tags = vec![u32::MAX; usize::from(SLOTS)];
    let mut left = tags.len();
    let mut n = 0u32;
    while left > 0 {
        let slot = usize::from(crc16(n.to_string().as_bytes()) % SLOTS);
        if tags[slot] == u32::MAX {
            tags[slot] = n;
            left -= 1;
        }
        n += 1;
    }
    tags.into_boxed_slice()
});

impl ShiftIndex {
    fn build() -> Self {
        let slots = usize::from(SLOTS);
        let suffix_text = |suffix: u16| {
            let mut text = [0u8; SESSION_ID_TEXT_LEN];
            SessionId::from_bytes(with_suffix([0; 16], suffix)).encode(&mut text);
            text
        };
        let zero = suffix_text(0);
        let split = SESSION_ID_TEXT_LEN - SUFFIX_CHARS;
        let mut shift = vec![0u16; slots];
        for (suffix, d) in (0..SLOTS).zip(shift.iter_mut()) {
            let text = suffix_text(suffix);
            assert_eq!(
                text[..split],
                zero[..split],
                "suffix {suffix:#x} changed the id's first {split} characters: the id encoding changed"
            );
            let mut diff = [0u8; SUFFIX_CHARS];
            for (out, (a, b)) in diff.iter_mut().zip(text[split..].iter().zip(&zero[split..])) {
                *out = a ^ b;
            }
            *d = crc16(&diff) % SLOTS;
        }
        // Counting sort of the suffixes by shift.
        let mut starts = vec![0u16; slots + 1];
        for &d in &shift {
            starts[usize::from(d) + 1] += 1;
        }
        let most = starts.iter().copied().max().unwrap_or(0);
        assert!(
            usize::from(most) <= SUFFIXES_PER_SHIFT_MAX,
            "a slot shift has {most} suffixes, more than {SUFFIXES_PER_SHIFT_MAX}: draws would not be uniform"
        );
        for d in 0..slots {
            starts[d + 1] += starts[d];
        }
        let mut next = starts.clone();
        let mut suffixes = vec![0u16; slots];
        for (suffix, &d) in (0..SLOTS).zip(&shift) {
            let at = &mut next[usize::from(d)];
            suffixes[usize::from(*at)] = suffix;
            *at += 1;
        }
        Self {
            starts: starts.into_boxed_slice(),
            suffixes: suffixes.into_boxed_slice(),
        }
    }

    fn of(&self, shift: u16) -> &[u16] {
        let d = usize::from(shift);
        &self.suffixes[usize::from(self.starts[d])..usize::from(self.starts[d + 1])]
    }
}

/// A random id whose key lies in `slot`, uniform over all ids of that slot
/// (114 bits of entropy: see the notes above), from ids `draw` returns
/// (which must be uniformly random, as `SessionId::random`'s are). About 4
/// draws; `Ok(None)` after [`SLOT_ID_DRAWS_MAX`] rejected in a row (the
/// source is not random).
pub(crate) fn random_id_in_slot<E>(
    slot: u16,
    mut draw: impl FnMut() -> Result<SessionId, E>,
) -> Result<Option<SessionId>, E> {
    debug_assert!(slot < SLOTS, "slot {slot} out of range");
    let shifts = &*SHIFTS;
    for _ in 0..SLOT_ID_DRAWS_MAX {
        let bytes = draw()?.to_bytes();
        // Two random bits that the suffix will overwrite pick the entry.
        let pick = usize::from(bytes[15]) % SUFFIXES_PER_SHIFT_MAX;
        let prefix = with_suffix(bytes, 0);
        let base = id_slot(&SessionId::from_bytes(prefix));
        if let Some(&suffix) = shifts.of(base ^ slot).get(pick) {
            let id = SessionId::from_bytes(with_suffix(prefix, suffix));
            debug_assert_eq!(id_slot(&id), slot, "{id} landed in the wrong slot");
            return Ok(Some(id));
        }
    }
    Ok(None)
}

/// What a fence's key has after the hash tag it shares with the written
/// key (see [`fence_key`]).
const FENCE_MARK: &[u8] = b"!fence";

/// The key of the fence (`scripts::FENCE`, which sets and deletes it) for a
/// write routed by `key`: `key` up to the end of its hash tag, then
/// `!fence`. The same slot as `key`, and no key of any store: after its tag
/// a session key has nothing or `:` (its rotation mark), a topic index
/// `:`, so the fence's `DEL` can never remove one. (A suffix after the
/// whole key could: `<index of t>:fence` has the shape of topic
/// `t:fence`'s index, and is that index whenever the two topics' hashes
/// agree.) A prefix holds no `{`, so the first `}` ends the tag.
pub(crate) fn fence_key(key: &[u8]) -> Vec<u8> {
    let tag_end = key.iter().position(|&b| b == b'}').map_or(key.len(), |i| i + 1);
    [&key[..tag_end], FENCE_MARK].concat()
}

/// Hex digits of a topic key's hash tag (a 64-bit hash).
const TOPIC_TAG_LEN: usize = 16;

/// The 64-bit FNV-1a hash of a topic's text, the hash tag of its index key:
/// fixed and portable (every process must find the same key), and only a
/// placement: the key carries the topic in full.
fn topic_hash(topic: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    topic
        .iter()
        .fold(OFFSET, |h, &b| (h ^ u64::from(b)).wrapping_mul(PRIME))
}

/// The hash tag of a topic's index key: [`topic_hash`] in 16 lowercase hex
/// digits.
fn topic_tag(topic: &[u8]) -> [u8; TOPIC_TAG_LEN] {
    let hash = topic_hash(topic);
    let mut tag = [0u8; TOPIC_TAG_LEN];
    for (i, digit) in tag.iter_mut().enumerate() {
        let nibble = (hash >> ((TOPIC_TAG_LEN - 1 - i) * 4)) & 0xf;
        *digit = b"0123456789abcdef"[usize::try_from(nibble).expect("a nibble")];
    }
    tag
}

/// A 32-bit FNV-1a hash of a key, never 0: orders the keys of one `SCAN`
/// batch so that a page can end inside it (0 in a list position means "the
/// batch from its start"). Fixed and portable: positions outlive processes.
pub(crate) fn resume_hash(key: &[u8]) -> u32 {
    const OFFSET: u32 = 0x811c_9dc5;
    const PRIME: u32 = 0x0100_0193;
    let h = key
        .iter()
        .fold(OFFSET, |h, &b| (h ^ u32::from(b)).wrapping_mul(PRIME));
    h.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_round_trips_and_carries_a_hash_tag() {
        let keys = KeySpace::new("sess:").unwrap();
        let id = SessionId::from_bytes([7; 16]);
        let key = keys.key(&id);
        let text = std::str::from_utf8(&key).unwrap();
        assert_eq!(text, format!("sess:{{{id}}}"));
        assert_eq!(keys.parse(&key), Some(id));
        assert_eq!(keys.parse(b"sess:{short}"), None);
        assert_eq!(keys.parse(b"other:{AAAAAAAAAAAAAAAAAAAAAA}"), None);
        assert_eq!(
            keys.parse(format!("sess:{{{id}}}:extra").as_bytes()),
            None,
            "per-session side keys are not sessions"
        );
    }

    #[test]
    fn bad_prefixes_are_rejected_with_reason() {
        assert!(KeySpace::new("").is_ok());
        assert!(KeySpace::new("a{b").unwrap_err().contains("0x7b"));
        assert!(KeySpace::new("a}b").is_err());
        assert!(KeySpace::new("a b").is_err());
        assert!(KeySpace::new(&"x".repeat(KEY_PREFIX_BYTES_MAX + 1))
            .unwrap_err()
            .contains("at most"));
    }

    #[test]
    fn slot_probes_hash_to_their_slot_and_match_no_pattern() {
        let keys = KeySpace::new("app:").unwrap();
        for slot in [0, 1, 5460, 5461, 16_383] {
            let probe = keys.slot_probe(slot);
            assert_eq!(slot_of(&probe), slot, "{}", String::from_utf8_lossy(&probe));
            assert!(keys.parse(&probe).is_none(), "not a session key");
        }
        assert!((0..SLOTS).all(|s| slot_of(&keys.slot_probe(s)) == s));
    }

    #[test]
    fn scan_pattern_escapes_glob_characters() {
        let keys = KeySpace::new("a*b?[c]\\:").unwrap();
        let pattern = String::from_utf8(keys.scan_pattern()).unwrap();
        assert_eq!(pattern, format!("a\\*b\\?\\[c\\]\\\\:{{{}}}", "?".repeat(22)));
    }

    #[test]
    fn slots_match_redis_cluster() {
        assert_eq!(crc16(b"123456789"), 0x31c3, "the XMODEM check value");
        // Values from the CLUSTER KEYSLOT documentation.
        assert_eq!(slot_of(b"somekey"), 11_058);
        assert_eq!(slot_of(b"foo{hash_tag}"), 2_515);
        assert_eq!(slot_of(b"{hash_tag}:anything"), 2_515);
        // Values from `CLUSTER KEYSLOT` of redis-server 7.0.15: the hash tag
        // rules' edge cases.
        assert_eq!(slot_of(b"foo{}{bar}"), 8_363, "empty first tag: the whole key");
        assert_eq!(slot_of(b"{}"), 15_257, "empty tag alone: the whole key");
        assert_eq!(slot_of(b"foo{{bar}}zap"), 4_015, "the tag is `{{bar`");
        assert_eq!(slot_of(b"foo{bar}{zap}"), 5_061, "the first tag only");
        assert_eq!(slot_of(b"bar"), 5_061);
        assert_eq!(slot_of(b"foo{"), 7_673, "no closing brace: the whole key");
        assert_eq!(
            slot_of(b"foo}{bar"),
            7_624,
            "a `}}` before the `{{`: the whole key"
        );
        let session = KeySpace::new("session:")
            .unwrap()
            .key(&"AAAAAAAAAAAAAAAAAAAAAA".parse().unwrap());
        assert_eq!(slot_of(&session), 4_813, "a session key goes by its id");
    }

    #[test]
    fn ids_land_in_every_slot_asked_for() {
        let keys = KeySpace::new("session:").unwrap();
        let mut draws = 0u64;
        let mut counter = 0u64;
        for slot in 0..SLOTS {
            let id = random_id_in_slot(slot, || {
                draws += 1;
                SessionId::random()
            })
            .unwrap()
            .expect("a random source is accepted within the draw limit");
            assert_eq!(slot_of(&keys.key(&id)), slot, "{id}");
            // A deterministic source too: the prefix bits come through
            // untouched.
            let fixed = random_id_in_slot(slot, || {
                counter += 1;
                let mut b = [0u8; 16];
                b[..8].copy_from_slice(&counter.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
                b[8..].copy_from_slice(&counter.to_le_bytes());
                Ok::<_, ()>(SessionId::from_bytes(b))
            })
            .unwrap();
            if let Some(id) = fixed {
                assert_eq!(id_slot(&id), slot);
            }
        }
        // 4 on average (geometric, variance 12): over 16,384 ids the mean
        // is 4 +- 0.03 (one standard deviation).
        let per_id_x100 = draws * 100 / u64::from(SLOTS);
        assert!(
            (370..430).contains(&per_id_x100),
            "{per_id_x100} draws per 100 ids"
        );
    }

    #[test]
    fn every_slot_shift_has_at_most_four_suffixes_and_all_are_indexed() {
        let shifts = &*SHIFTS;
        let mut seen = vec![false; usize::from(SLOTS)];
        for d in 0..SLOTS {
            let list = shifts.of(d);
            assert!(list.len() <= SUFFIXES_PER_SHIFT_MAX);
            for &s in list {
                assert!(
                    !std::mem::replace(&mut seen[usize::from(s)], true),
                    "suffix {s} twice"
                );
                // The shift is what the whole id's slot shows, for any prefix.
                let prefix = [0x3c; 16];
                let base = id_slot(&SessionId::from_bytes(with_suffix(prefix, 0)));
                assert_eq!(id_slot(&SessionId::from_bytes(with_suffix(prefix, s))), base ^ d);
            }
        }
        assert!(seen.iter().all(|&s| s), "every suffix is indexed");
    }

    #[test]
    fn a_source_that_never_fits_is_reported() {
        // An all-zero prefix always gives shift `slot ^ base`; pick a slot
        // whose shift has no suffix: every draw is rejected.
        let base = id_slot(&SessionId::from_bytes([0; 16]));
        let empty = (0..SLOTS)
            .find(|&d| SHIFTS.of(d).is_empty())
            .expect("some shift has no suffix");
        let mut draws = 0;
        let got = random_id_in_slot(base ^ empty, || {
            draws += 1;
            Ok::<_, ()>(SessionId::from_bytes([0; 16]))
        });
        assert_eq!(got, Ok(None));
        assert_eq!(draws, SLOT_ID_DRAWS_MAX);
    }

    #[test]
    fn topic_keys_parse_back_to_their_topic_and_nothing_else_does() {
        let keys = KeySpace::new("sess:").unwrap();
        for topic in ["a", "", "doc/42", "file:///{x}/\u{0}é", "x}:y"] {
            assert_eq!(keys.parse_topic_key(&keys.topic_key(topic)), Some(topic));
        }
        let other = KeySpace::new("sess:x").unwrap();
        assert_eq!(
            keys.parse_topic_key(&other.topic_key("a")),
            None,
            "another prefix"
        );
        assert_eq!(other.parse_topic_key(&keys.topic_key("a")), None);
        // The shape of an index, with a tag that is not the topic's.
        let mut forged = keys.topic_key("a");
        forged.extend_from_slice(b":fence");
        assert_eq!(keys.parse_topic_key(&forged), None);
        assert_eq!(
            keys.parse_topic_key(&keys.key(&SessionId::from_bytes([7; 16]))),
            None
        );
        assert_eq!(keys.parse_topic_key(b"sess:t{af63dc4c8601ec8c}"), None);
        assert_eq!(keys.parse_topic_key(b"sess:t{af63}:a"), None);
        let pattern = String::from_utf8(keys.topic_scan_pattern()).unwrap();
        assert_eq!(pattern, format!("sess:t{{{}}}:*", "?".repeat(16)));
        let escaped = KeySpace::new("a*b?[c]\\:").unwrap().topic_scan_pattern();
        assert!(escaped.starts_with(b"a\\*b\\?\\[c\\]\\\\:t{"));
    }

    /// The fence sets and deletes its key: it must share the written key's
    /// slot and be no key a store keeps. A topic index's fence used to be
    /// `<index>:fence`, the shape of another topic's index.
    #[test]
    fn a_fence_key_shares_the_slot_and_is_no_stored_key() {
        let keys = KeySpace::new("sess:").unwrap();
        let id = SessionId::from_bytes([7; 16]);
        let mut written = vec![keys.key(&id), [&keys.key(&id)[..], b":rotated:1"].concat()];
        written.extend(["a", "a:fence", "x}:y", ""].map(|t| keys.topic_key(t)));
        for key in written {
            let fence = fence_key(&key);
            let shown = String::from_utf8_lossy(&fence).into_owned();
            assert_eq!(slot_of(&fence), slot_of(&key), "{shown}");
            assert_ne!(fence, key);
            assert_eq!(keys.parse(&fence), None, "{shown}");
            assert_eq!(keys.parse_topic_key(&fence), None, "{shown}");
            // Every stored key has nothing or `:` after its tag: a session,
            // its rotation mark, any topic's index (whatever its hash).
            let after_tag = fence[fence.iter().position(|&b| b == b'}').unwrap() + 1..].first();
            assert!(!matches!(after_tag, None | Some(b':')), "{shown}");
        }
    }

    #[test]
    fn topic_keys_are_tagged_by_a_hash_and_hold_the_topic() {
        let keys = KeySpace::new("sess:").unwrap();
        // FNV-1a 64 check values: "" and "a".
        assert_eq!(topic_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(topic_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(keys.topic_key("a"), b"sess:t{af63dc4c8601ec8c}:a".to_vec());
        // Braces and any text in a topic leave the tag alone.
        let tricky = "file:///{x}/\u{0}é";
        let key = keys.topic_key(tricky);
        assert!(key.ends_with(tricky.as_bytes()));
        let tag = format!("{:016x}", topic_hash(tricky.as_bytes()));
        assert_eq!(slot_of(&key), slot_of(format!("{{{tag}}}").as_bytes()));
        // Never a session key.
        assert_eq!(keys.parse(&key), None);
        let pattern = keys.scan_pattern();
        assert_eq!(key[..5], pattern[..5], "same prefix");
        assert_ne!(key[5], pattern[5], "then `t` against `{{`");
    }

    #[test]
    fn resume_hash_is_never_zero_and_stable() {
        assert_eq!(resume_hash(b""), 0x811c_9dc5);
        assert_eq!(resume_hash(b"a"), 0xe40c_292c);
        for i in 0..10_000u32 {
            assert_ne!(resume_hash(&i.to_le_bytes()), 0);
        }
    }
}
