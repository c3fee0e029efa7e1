//! tower-sessions' [`Id`] and our [`SessionId`] are the same 128 bits.
//!
//! tower-sessions writes an `Id(i128)` as unpadded URL-safe base64 of
//! `i128::to_le_bytes`; the engine writes a `SessionId` as unpadded URL-safe
//! base64 of its 16 bytes. Taking the little-endian bytes of the `i128` as
//! the id's bytes therefore gives the same 22 cookie characters on both
//! sides, and every `i128` maps to exactly one id and back.

use session_engine::SessionId;
use tower_sessions_core::session::Id;

/// The engine's id for a tower-sessions id (same bits, same text).
#[must_use]
pub(crate) fn to_session_id(id: Id) -> SessionId {
    SessionId::from(id.0)
}

/// The tower-sessions id for an engine id (same bits, same text).
#[must_use]
pub(crate) fn to_tower_id(id: SessionId) -> Id {
    Id(i128::from(id))
}

/// How an id shows in error text: its first four characters (24 of its
/// 128 bits), enough to tell sessions apart in a log and far too few to take
/// one over. tower-sessions logs a store's errors (`tracing`), and a
/// session's id is the bearer's key to it.
pub(crate) struct Shown(pub(crate) Id);

impl std::fmt::Display for Shown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = self.0.to_string();
        write!(f, "{}…", text.get(..4).unwrap_or(&text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_bits_are_the_same_both_ways() {
        let edges = [
            0,
            1,
            -1,
            i128::MIN,
            i128::MAX,
            0x0123_4567_89ab_cdef_0011_2233_4455_6677,
        ];
        for value in edges {
            let id = Id(value);
            let ours = to_session_id(id);
            assert_eq!(ours.to_string(), id.to_string(), "text of {value:#x}");
            assert_eq!(to_tower_id(ours), id, "round trip of {value:#x}");
            assert_eq!(ours.to_string().parse::<Id>().unwrap(), id);
        }
        for _ in 0..1000 {
            let ours = SessionId::random().unwrap();
            let theirs = to_tower_id(ours);
            assert_eq!(theirs.to_string(), ours.to_string());
            assert_eq!(to_session_id(theirs), ours);
            assert_eq!(ours.to_string().parse::<Id>().unwrap(), theirs);
        }
    }
}
