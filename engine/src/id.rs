//! Session ids: 128 bits from the operating system's CSPRNG, written as 22
//! characters of unpadded URL-safe base64 (RFC 4648 §5).
//!
//! Ids are drawn [`ID_BATCH`] at a time into a
//! thread-local buffer, so a create costs one `getrandom` system call per 256
//! ids instead of one each. Every id is still raw OS CSPRNG output; no
//! userspace generator stretches it. (A process that `fork`s without `exec`
//! must not create sessions in both parent and child: both would hand out the
//! rest of the same buffer.)

use std::cell::RefCell;
use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use crate::limits::ID_BATCH;

/// Length of the text form: 16 bytes in unpadded base64.
pub const SESSION_ID_TEXT_LEN: usize = 22;

/// A session id: 128 random bits.
///
/// Aligned to 8 bytes: ids are compared and copied as two words on every
/// lookup (byte-aligned, the compiler copied them in pieces that stalled
/// the loads reading them back).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(C, align(8))]
pub struct SessionId([u8; 16]);

impl SessionId {
    /// Draws a fresh id from the OS CSPRNG (buffered, see the module docs).
    ///
    /// # Errors
    /// [`getrandom::Error`] when the operating system's random source fails.
    pub fn random() -> Result<Self, getrandom::Error> {
        thread_local! {
            static BATCH: RefCell<IdBatch> = const { RefCell::new(IdBatch::empty()) };
        }
        BATCH.with(|batch| batch.borrow_mut().next())
    }

    /// Wraps raw bytes, for callers that mint their own ids.
    #[must_use]
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    #[must_use]
    pub const fn to_bytes(self) -> [u8; 16] {
        self.0
    }

    /// The id as a little-endian integer (what the shard hash consumes).
    #[must_use]
    pub const fn to_u128(self) -> u128 {
        u128::from_le_bytes(self.0)
    }

    /// Writes the text form into `out` and returns it as a `&str`, without
    /// allocating.
    pub fn encode<'a>(&self, out: &'a mut [u8; SESSION_ID_TEXT_LEN]) -> &'a str {
        let written = URL_SAFE_NO_PAD
            .encode_slice(self.0, out)
            .expect("22 bytes hold the base64 of 16 bytes");
        debug_assert_eq!(written, SESSION_ID_TEXT_LEN);
        std::str::from_utf8(out).expect("base64 output is ASCII")
    }
}

/// The id whose little-endian bytes are `n`'s: the mapping
/// `tower-sessions` uses for its `Id(i128)`, so both print the same text.
impl From<i128> for SessionId {
    fn from(n: i128) -> Self {
        Self(n.to_le_bytes())
    }
}

/// The inverse of `From<i128>`.
impl From<SessionId> for i128 {
    fn from(id: SessionId) -> Self {
        i128::from_le_bytes(id.0)
    }
}

/// The same 16 bytes (feature `uuid`).
#[cfg(feature = "uuid")]
impl From<uuid::Uuid> for SessionId {
    fn from(u: uuid::Uuid) -> Self {
        Self(u.into_bytes())
    }
}

/// The same 16 bytes (feature `uuid`). A random id is not a version-4
/// UUID (all 128 bits are random); tools that check the version bits may
/// refuse it.
#[cfg(feature = "uuid")]
impl From<SessionId> for uuid::Uuid {
    fn from(id: SessionId) -> Self {
        uuid::Uuid::from_bytes(id.0)
    }
}

/// The text form (feature `serde`).
#[cfg(feature = "serde")]
impl serde::Serialize for SessionId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut text = [0u8; SESSION_ID_TEXT_LEN];
        serializer.serialize_str(self.encode(&mut text))
    }
}

/// From the text form, with `FromStr`'s checks (feature `serde`).
#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for SessionId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

struct IdBatch {
    bytes: [u8; ID_BATCH * 16],
    /// Ids still unused in `bytes`, taken from the end.
    left: usize,
}

impl IdBatch {
    const fn empty() -> Self {
        Self {
            bytes: [0; ID_BATCH * 16],
            left: 0,
        }
    }

    #[inline]
    fn next(&mut self) -> Result<SessionId, getrandom::Error> {
        if self.left == 0 {
            getrandom::fill(&mut self.bytes)?;
            self.left = ID_BATCH;
        }
        self.left -= 1;
        let at = self.left * 16;
        let mut id = [0u8; 16];
        id.copy_from_slice(&self.bytes[at..at + 16]);
        // Handed out once: do not leave a live token's bytes behind.
        self.bytes[at..at + 16].fill(0);
        Ok(SessionId(id))
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; SESSION_ID_TEXT_LEN];
        f.write_str(self.encode(&mut buf))
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({self})")
    }
}

/// Why a string is not a session id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseIdError {
    /// The text does not have the 22 characters of an id.
    #[error("malformed session id: expected {SESSION_ID_TEXT_LEN} characters, got {len} bytes")]
    Length {
        /// Length of the rejected text, in bytes.
        len: usize,
    },
    /// A character outside the URL-safe base64 alphabet (`A-Z a-z 0-9 - _`).
    #[error("malformed session id: byte {byte:#04x} at position {position} is not URL-safe base64")]
    Character {
        /// Offending byte.
        byte: u8,
        /// Its position in the text.
        position: usize,
    },
    /// The last character carries bits beyond the 128 of an id, so the text
    /// is not the canonical form of any id.
    #[error("malformed session id: not the canonical encoding of 128 bits (last character)")]
    NonCanonical,
}

impl FromStr for SessionId {
    type Err = ParseIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.as_bytes();
        if text.len() != SESSION_ID_TEXT_LEN {
            return Err(ParseIdError::Length { len: text.len() });
        }
        if let Some(position) = text
            .iter()
            .position(|&b| !(b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        {
            return Err(ParseIdError::Character {
                byte: text[position],
                position,
            });
        }
        // Alphabet and length are valid, so the only decode failure left is
        // non-zero trailing bits in the last character.
        let mut out = [0u8; 18];
        match URL_SAFE_NO_PAD.decode_slice(text, &mut out) {
            Ok(16) => {
                let mut id = [0u8; 16];
                id.copy_from_slice(&out[..16]);
                Ok(SessionId(id))
            }
            _ => Err(ParseIdError::NonCanonical),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips() {
        for _ in 0..1000 {
            let id = SessionId::random().unwrap();
            let text = id.to_string();
            assert_eq!(text.len(), SESSION_ID_TEXT_LEN);
            assert!(text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            assert_eq!(text.parse::<SessionId>().unwrap(), id);
        }
    }

    #[test]
    fn ids_are_distinct_across_batches() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..(ID_BATCH * 4) {
            assert!(seen.insert(SessionId::random().unwrap()));
        }
    }

    #[test]
    fn malformed_text_is_rejected_with_reason() {
        assert_eq!("abc".parse::<SessionId>(), Err(ParseIdError::Length { len: 3 }));
        assert_eq!("".parse::<SessionId>(), Err(ParseIdError::Length { len: 0 }));
        let bad = "AAAAAAAAAA+AAAAAAAAAAA";
        assert_eq!(
            bad.parse::<SessionId>(),
            Err(ParseIdError::Character {
                byte: b'+',
                position: 10
            })
        );
        // 'B' in the last position sets one of the 4 bits past 128.
        assert_eq!(
            "AAAAAAAAAAAAAAAAAAAAAB".parse::<SessionId>(),
            Err(ParseIdError::NonCanonical)
        );
        // Multi-byte UTF-8 of the right byte length is rejected, not split.
        let err = "ééééééééééé".parse::<SessionId>().unwrap_err();
        assert!(matches!(err, ParseIdError::Character { position: 0, .. }));
        assert!(err.to_string().contains("malformed session id"));
    }

    #[test]
    fn known_vector() {
        let id = SessionId::from_bytes([0xff; 16]);
        assert_eq!(id.to_string(), "_____________________w");
        assert_eq!(SessionId::from_bytes([0; 16]).to_string(), "A".repeat(22));
    }
}
