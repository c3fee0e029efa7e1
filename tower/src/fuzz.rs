//! The stored record's decoder, driven with arbitrary bytes and checked
//! against what it promises, for the fuzz target `decode_record`
//! (`tower/fuzz/`, which also compares the map with rmp-serde's reading)
//! and for the unit test below, which runs it on random and mutated records
//! in every test run. Whatever the bytes, decoding returns a record or a
//! typed error, never panics; a record that decodes encodes back to bytes
//! that decode to the same record.

use std::collections::HashMap;

use serde_json::Value;
use tower_sessions_core::session::Id;

use crate::limits::NESTING_DEPTH_MAX;
use crate::record::{self, unix_ms};

/// Decodes `bytes` as a stored record and, if they are one, checks that it
/// survives being written and read again. Returns whether they were one.
///
/// # Panics
/// If a promise is broken: that is the finding.
#[must_use]
pub fn decode_record(bytes: &[u8]) -> bool {
    let id = Id(0x5a);
    let Ok(stored) = record::decode(id, bytes) else {
        return false;
    };
    let expiry_ms = stored.expiry_ms;
    let date = stored.expiry_date();
    assert_eq!(
        unix_ms(date),
        expiry_ms,
        "the stored date reads back to its millisecond"
    );
    let map = stored.data.clone();
    let again = record::encode(&stored.into_record(id, date), expiry_ms).expect("a decoded map encodes");
    let back = record::decode(id, &again).expect("an encoded record decodes");
    assert_eq!(back.expiry_ms, expiry_ms);
    assert_eq!(back.data, map, "the map survives a round trip");
    true
}

/// The map part of a record (the bytes after its 9-byte header), as this
/// crate reads it; `None` where it refuses them. For the fuzz target's
/// comparison with rmp-serde.
#[must_use]
pub fn decode_map(bytes: &[u8]) -> Option<HashMap<String, Value>> {
    crate::msgpack::decode_map(bytes).ok()
}

/// Whether a record's map nests arrays and maps deeper than this crate
/// reads and writes (`limits::NESTING_DEPTH_MAX`, the map counted): such a
/// map is one rmp-serde reads (up to 1,023 levels) and [`decode_map`]
/// refuses. For the fuzz target's comparison with rmp-serde. Not recursive:
/// the map may be nested 1,023 levels deep.
#[must_use]
pub fn nested_past_the_bound<S: std::hash::BuildHasher>(map: &HashMap<String, Value, S>) -> bool {
    // (value, its level): a value in the record's map is on level 2.
    let mut open: Vec<(&Value, usize)> = map.values().map(|value| (value, 2)).collect();
    while let Some((value, level)) = open.pop() {
        let inner: Vec<&Value> = match value {
            Value::Array(items) => items.iter().collect(),
            Value::Object(map) => map.values().collect(),
            _ => continue,
        };
        if level > NESTING_DEPTH_MAX {
            return true;
        }
        open.extend(inner.into_iter().map(|value| (value, level + 1)));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_map_nested_past_the_bound_is_told_apart() {
        let nested = |depth: usize, array: bool| {
            let mut value = Value::Null;
            for _ in 1..depth {
                value = if array {
                    Value::Array(vec![Value::Null, value])
                } else {
                    Value::Object([("k".to_owned(), value)].into_iter().collect())
                };
            }
            HashMap::from([("a".to_owned(), Value::Null), ("k".to_owned(), value)])
        };
        for array in [true, false] {
            for depth in [1, 2, NESTING_DEPTH_MAX] {
                let map = nested(depth, array);
                assert!(!nested_past_the_bound(&map), "depth {depth}");
                let mut bytes = Vec::new();
                crate::msgpack::encode_map(&mut bytes, &map).expect("within the bound");
                assert_eq!(decode_map(&bytes), Some(map));
            }
            for depth in [NESTING_DEPTH_MAX + 1, 1_023] {
                assert!(nested_past_the_bound(&nested(depth, array)), "depth {depth}");
            }
        }
    }

    #[test]
    fn random_and_mutated_records_keep_the_promises() {
        let mut rng = crate::test_rng::Rng(0x9e37_79b9_7f4a_7c15);
        let mut next = || rng.next();
        let mut valid = vec![record::FORMAT_VERSION];
        valid.extend_from_slice(&1_700_000_000_123_i64.to_le_bytes());
        // {"user": {"name": "alice", "roles": [1, -2, 3.5, null, true]}, "n": 7}
        valid.extend_from_slice(&[
            0x82, 0xa4, b'u', b's', b'e', b'r', 0x82, 0xa4, b'n', b'a', b'm', b'e', 0xa5, b'a', b'l', b'i',
            b'c', b'e', 0xa5, b'r', b'o', b'l', b'e', b's', 0x95, 0x01, 0xfe, 0xcb, 0x40, 0x0c, 0, 0, 0, 0,
            0, 0, 0xc0, 0xc3, 0xa1, b'n', 0x07,
        ]);
        assert!(decode_record(&valid));
        let mut decoded = 0;
        for round in 0..50_000_u32 {
            let mut bytes = valid.clone();
            if round.is_multiple_of(2) {
                let len = usize::try_from(next() % 48).unwrap();
                bytes.truncate(10);
                bytes.extend((0..len).map(|_| next().to_le_bytes()[0]));
            } else {
                for _ in 0..=next() % 3 {
                    let at = usize::try_from(next() % bytes.len() as u64).unwrap();
                    bytes[at] = next().to_le_bytes()[0];
                }
            }
            decoded += usize::from(decode_record(&bytes));
        }
        assert!(
            decoded > 1_000,
            "only {decoded} inputs decoded: the test exercises little"
        );
    }
}
