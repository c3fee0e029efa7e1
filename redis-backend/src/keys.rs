//! Key layout: one Redis hash per session at `<prefix>{<id>}`.
//!
//! The 22-character id sits inside a hash tag (`{...}`), so Redis Cluster
//! places the key by the id alone, and any per-session key added later
//! (`<prefix>{<id>}:<suffix>`) lands in the same slot as the session: a script
//! may then touch both atomically. The prefix may not contain `{` or `}`
//! (either would move the hash tag), nor spaces or control characters.

use session_engine::{SessionId, SESSION_ID_TEXT_LEN};

use crate::limits::{CLUSTER_SLOTS, KEY_PREFIX_BYTES_MAX};

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
        let mut pattern = Vec::with_capacity(self.prefix.len() * 2 + SESSION_ID_TEXT_LEN + 2);
        for b in self.prefix.bytes() {
            if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
                pattern.push(b'\\');
            }
            pattern.push(b);
        }
        pattern.push(b'{');
        pattern.extend(std::iter::repeat_n(b'?', SESSION_ID_TEXT_LEN));
        pattern.push(b'}');
        pattern
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
    fn resume_hash_is_never_zero_and_stable() {
        assert_eq!(resume_hash(b""), 0x811c_9dc5);
        assert_eq!(resume_hash(b"a"), 0xe40c_292c);
        for i in 0..10_000u32 {
            assert_ne!(resume_hash(&i.to_le_bytes()), 0);
        }
    }
}
