//! The record's map as MessagePack, written and read by hand: the same bytes
//! `rmp-serde` 1.3 writes for a `HashMap<String, serde_json::Value>`, and
//! the same values it reads back (nested no deeper than
//! [`NESTING_DEPTH_MAX`], 128 levels, where rmp-serde reads 1,023), without
//! serde's visitor machinery. A
//! request decodes the map on every load and encodes it on every save, and
//! serde's visitors were most of that cost (`results/tower.md`). The tests
//! below check both directions against `rmp-serde`, on random
//! values and on random bytes.
//!
//! What is written, per `serde_json::Value` (as `rmp::encode` picks it):
//!
//! | value | marker |
//! | --- | --- |
//! | null, false, true | `0xc0`, `0xc2`, `0xc3` |
//! | unsigned integer | the smallest of fixint, `0xcc` u8, `0xcd` u16, `0xce` u32, `0xcf` u64 |
//! | negative integer | the smallest of negative fixint, `0xd0` i8, `0xd1` i16, `0xd2` i32, `0xd3` i64 |
//! | float | `0xcb` f64 |
//! | string | fixstr, `0xd9` str8, `0xda` str16, `0xdb` str32 |
//! | array | fixarray, `0xdc` array16, `0xdd` array32 |
//! | object | fixmap, `0xde` map16, `0xdf` map32 (keys are strings) |
//!
//! Lengths and numbers are big-endian. Read: all of the above, and also the
//! signed markers holding non-negative values and `0xca` f32, as
//! `rmp-serde` reads them; binary, extension and the unused `0xc1` are
//! errors (a JSON value has no such kind), and so are arrays and maps nested
//! deeper than [`NESTING_DEPTH_MAX`] (both directions recurse once a level:
//! the bound keeps them within a tokio worker's stack; `limits.rs` has the
//! reason). Bytes after the map are ignored, as `rmp_serde::from_slice`
//! ignores them.

use std::collections::HashMap;

use serde_json::{Map, Number, Value};

use crate::limits::{NESTING_DEPTH_MAX, RESERVED_ITEMS_MAX};

/// Why bytes are not a map of JSON values.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// The bytes end inside a value.
    Truncated,
    /// A marker that no JSON value is written as (binary, extension, `0xc1`),
    /// or one that is not a map where the record's map must be.
    Unexpected { marker: u8, offset: usize },
    /// A map key that is not a string.
    KeyNotString { offset: usize },
    /// A string that is not UTF-8.
    NotUtf8 { offset: usize },
    /// Arrays and maps nested deeper than [`NESTING_DEPTH_MAX`].
    TooDeep,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Truncated => f.write_str("the bytes end inside a value"),
            Self::Unexpected { marker, offset } => {
                write!(f, "unexpected marker {marker:#04x} at byte {offset}")
            }
            Self::KeyNotString { offset } => write!(f, "a map key at byte {offset} is not a string"),
            Self::NotUtf8 { offset } => write!(f, "the string at byte {offset} is not UTF-8"),
            Self::TooDeep => write!(f, "arrays and maps nested deeper than {NESTING_DEPTH_MAX}"),
        }
    }
}

/// What MessagePack (as this crate reads it back) cannot hold.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum EncodeError {
    /// A length over `u32::MAX`.
    TooLong(usize),
    /// Arrays and maps nested deeper than [`NESTING_DEPTH_MAX`]: `decode`
    /// would refuse the record, so it is not written.
    TooDeep,
    /// A number that is no `u64`, `i64` or `f64` (serde_json with its
    /// `arbitrary_precision` feature, which any crate of a build can turn
    /// on, keeps e.g. `1e400` as text): its text.
    Number(String),
}

impl From<TooLong> for EncodeError {
    fn from(TooLong(len): TooLong) -> Self {
        Self::TooLong(len)
    }
}

/// A length that MessagePack cannot hold (more than `u32::MAX`).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct TooLong(pub(crate) usize);

/// Appends `map` to `out`.
pub(crate) fn encode_map(out: &mut Vec<u8>, map: &HashMap<String, Value>) -> Result<(), EncodeError> {
    write_len(out, map.len(), 0x80, 0xde)?;
    for (key, value) in map {
        write_str(out, key)?;
        // As `decode_map` reads them: the map is one level.
        write_value(out, value, NESTING_DEPTH_MAX - 1)?;
    }
    Ok(())
}

/// Appends `value`, with `depth` levels of arrays and maps left to nest.
fn write_value(out: &mut Vec<u8>, value: &Value, depth: usize) -> Result<(), EncodeError> {
    match value {
        Value::Null => out.push(0xc0),
        Value::Bool(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
        Value::Number(n) => write_number(out, n)?,
        Value::String(s) => write_str(out, s)?,
        Value::Array(items) => {
            let depth = depth.checked_sub(1).ok_or(EncodeError::TooDeep)?;
            write_len(out, items.len(), 0x90, 0xdc)?;
            for item in items {
                write_value(out, item, depth)?;
            }
        }
        Value::Object(map) => {
            let depth = depth.checked_sub(1).ok_or(EncodeError::TooDeep)?;
            write_len(out, map.len(), 0x80, 0xde)?;
            for (key, value) in map {
                write_str(out, key)?;
                write_value(out, value, depth)?;
            }
        }
    }
    Ok(())
}

fn write_number(out: &mut Vec<u8>, n: &Number) -> Result<(), EncodeError> {
    if let Some(u) = n.as_u64() {
        write_uint(out, u);
    } else if let Some(i) = n.as_i64() {
        // Negative: `as_u64` took every non-negative integer, but for
        // `arbitrary_precision`'s `-0`, which reads as the i64 0.
        if i < 0 {
            write_negative(out, i);
        } else {
            write_uint(out, i.unsigned_abs());
        }
    } else {
        let f = n.as_f64().ok_or_else(|| EncodeError::Number(n.to_string()))?;
        out.push(0xcb);
        out.extend_from_slice(&f.to_be_bytes());
    }
    Ok(())
}

fn write_uint(out: &mut Vec<u8>, u: u64) {
    if let Ok(small @ 0..0x80) = u8::try_from(u) {
        out.push(small);
    } else if let Ok(u8) = u8::try_from(u) {
        out.extend_from_slice(&[0xcc, u8]);
    } else if let Ok(u16) = u16::try_from(u) {
        out.push(0xcd);
        out.extend_from_slice(&u16.to_be_bytes());
    } else if let Ok(u32) = u32::try_from(u) {
        out.push(0xce);
        out.extend_from_slice(&u32.to_be_bytes());
    } else {
        out.push(0xcf);
        out.extend_from_slice(&u.to_be_bytes());
    }
}

fn write_negative(out: &mut Vec<u8>, i: i64) {
    debug_assert!(i < 0, "{i} is not negative");
    if let Ok(i8 @ -32..0) = i8::try_from(i) {
        out.extend_from_slice(&i8.to_be_bytes()); // negative fixint: 0xe0..=0xff
    } else if let Ok(i8) = i8::try_from(i) {
        out.push(0xd0);
        out.extend_from_slice(&i8.to_be_bytes());
    } else if let Ok(i16) = i16::try_from(i) {
        out.push(0xd1);
        out.extend_from_slice(&i16.to_be_bytes());
    } else if let Ok(i32) = i32::try_from(i) {
        out.push(0xd2);
        out.extend_from_slice(&i32.to_be_bytes());
    } else {
        out.push(0xd3);
        out.extend_from_slice(&i.to_be_bytes());
    }
}

fn write_str(out: &mut Vec<u8>, s: &str) -> Result<(), TooLong> {
    let len = s.len();
    let len32 = u32::try_from(len).map_err(|_| TooLong(len))?;
    if len < 32 {
        #[allow(clippy::cast_possible_truncation)] // below 32
        out.push(0xa0 | len as u8);
    } else if let Ok(len8) = u8::try_from(len) {
        out.extend_from_slice(&[0xd9, len8]);
    } else if let Ok(len16) = u16::try_from(len) {
        out.push(0xda);
        out.extend_from_slice(&len16.to_be_bytes());
    } else {
        out.push(0xdb);
        out.extend_from_slice(&len32.to_be_bytes());
    }
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

/// An array's or map's length: the fix form (`fix | len`, below 16), then
/// the 16-bit marker `wide16`, then the 32-bit one (`wide16 + 1`).
fn write_len(out: &mut Vec<u8>, len: usize, fix: u8, wide16: u8) -> Result<(), TooLong> {
    let len32 = u32::try_from(len).map_err(|_| TooLong(len))?;
    if len < 16 {
        #[allow(clippy::cast_possible_truncation)] // below 16
        out.push(fix | len as u8);
    } else if let Ok(len16) = u16::try_from(len) {
        out.push(wide16);
        out.extend_from_slice(&len16.to_be_bytes());
    } else {
        out.push(wide16 + 1);
        out.extend_from_slice(&len32.to_be_bytes());
    }
    Ok(())
}

/// The map at the start of `bytes`.
pub(crate) fn decode_map(bytes: &[u8]) -> Result<HashMap<String, Value>, DecodeError> {
    let mut reader = Reader {
        bytes,
        at: 0,
        reservable: bytes.len(),
    };
    let offset = reader.at;
    let marker = reader.byte()?;
    let len = reader
        .map_len(marker)?
        .ok_or(DecodeError::Unexpected { marker, offset })?;
    // Each entry takes at least two bytes: a length the bytes cannot hold
    // must not reserve memory for it.
    let mut map = HashMap::with_capacity(len.min(reader.left() / 2).min(RESERVED_ITEMS_MAX));
    for _ in 0..len {
        let key = reader.top_key()?;
        // The record's map is the first level.
        let value = reader.value(NESTING_DEPTH_MAX - 1)?;
        map.insert(key, value);
    }
    Ok(map)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    /// Array items this decode may still reserve room for before reading
    /// them: at first one per byte of the input.
    reservable: usize,
}

impl<'a> Reader<'a> {
    fn left(&self) -> usize {
        self.bytes.len() - self.at
    }

    /// Room to reserve for an array claiming `len` items: no more than the
    /// bytes left can hold (one byte an item), than [`RESERVED_ITEMS_MAX`],
    /// or than what is left of the decode's budget. The items of all the
    /// arrays open at once share the bytes left, so sized by those bytes
    /// alone, each of a thousand nested arrays claiming 2^32 items reserved
    /// room for all of them (2 GiB for a 64 KiB record); within the budget,
    /// a record reserves at most one item per byte in all, what a genuine
    /// record of its size may hold. An array longer than what it reserved
    /// grows as its items are read.
    fn reservation(&mut self, len: usize) -> usize {
        let items = len.min(self.left()).min(RESERVED_ITEMS_MAX).min(self.reservable);
        self.reservable -= items;
        items
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.left() < n {
            return Err(DecodeError::Truncated);
        }
        let taken = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }

    fn byte(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn len16(&mut self) -> Result<usize, DecodeError> {
        Ok(usize::from(u16::from_be_bytes(self.array()?)))
    }

    fn len32(&mut self) -> Result<usize, DecodeError> {
        let len = u32::from_be_bytes(self.array()?);
        // A length beyond the address space cannot fit the bytes anyway.
        Ok(usize::try_from(len).unwrap_or(usize::MAX))
    }

    /// The entry count if `marker` starts a map.
    fn map_len(&mut self, marker: u8) -> Result<Option<usize>, DecodeError> {
        Ok(match marker {
            0x80..=0x8f => Some(usize::from(marker & 0x0f)),
            0xde => Some(self.len16()?),
            0xdf => Some(self.len32()?),
            _ => None,
        })
    }

    /// The byte length if `marker` starts a string.
    fn str_len(&mut self, marker: u8) -> Result<Option<usize>, DecodeError> {
        Ok(match marker {
            0xa0..=0xbf => Some(usize::from(marker & 0x1f)),
            0xd9 => Some(usize::from(self.byte()?)),
            0xda => Some(self.len16()?),
            0xdb => Some(self.len32()?),
            _ => None,
        })
    }

    fn string(&mut self, len: usize, offset: usize) -> Result<String, DecodeError> {
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| DecodeError::NotUtf8 { offset })
    }

    /// A key of a map inside the record's map.
    fn key(&mut self) -> Result<String, DecodeError> {
        let offset = self.at;
        let marker = self.byte()?;
        match self.str_len(marker)? {
            Some(len) => self.string(len, offset),
            None => Err(DecodeError::KeyNotString { offset }),
        }
    }

    /// A key of the record's map: a string, or UTF-8 bytes (binary), as
    /// serde reads a `String` from rmp-serde. Never written so.
    fn top_key(&mut self) -> Result<String, DecodeError> {
        let offset = self.at;
        let marker = self.byte()?;
        let len = match marker {
            0xc4 => usize::from(self.byte()?),
            0xc5 => self.len16()?,
            0xc6 => self.len32()?,
            _ => match self.str_len(marker)? {
                Some(len) => len,
                None => return Err(DecodeError::KeyNotString { offset }),
            },
        };
        self.string(len, offset)
    }

    /// One value; `depth` more arrays or maps may open inside it.
    fn value(&mut self, depth: usize) -> Result<Value, DecodeError> {
        let offset = self.at;
        let marker = self.byte()?;
        if let Some(len) = self.str_len(marker)? {
            return self.string(len, offset).map(Value::String);
        }
        if let Some(len) = self.map_len(marker)? {
            let depth = depth.checked_sub(1).ok_or(DecodeError::TooDeep)?;
            let mut map = Map::new();
            for _ in 0..len {
                let key = self.key()?;
                let value = self.value(depth)?;
                map.insert(key, value);
            }
            return Ok(Value::Object(map));
        }
        let array_len = match marker {
            0x90..=0x9f => Some(usize::from(marker & 0x0f)),
            0xdc => Some(self.len16()?),
            0xdd => Some(self.len32()?),
            _ => None,
        };
        if let Some(len) = array_len {
            let depth = depth.checked_sub(1).ok_or(DecodeError::TooDeep)?;
            let mut items = Vec::with_capacity(self.reservation(len));
            for _ in 0..len {
                items.push(self.value(depth)?);
            }
            return Ok(Value::Array(items));
        }
        Ok(match marker {
            0x00..=0x7f => Value::from(marker),
            #[allow(clippy::cast_possible_wrap)] // negative fixint: the byte is the i8
            0xe0..=0xff => Value::from(marker as i8),
            0xc0 => Value::Null,
            0xc2 => Value::Bool(false),
            0xc3 => Value::Bool(true),
            0xcc => Value::from(self.byte()?),
            0xcd => Value::from(u16::from_be_bytes(self.array()?)),
            0xce => Value::from(u32::from_be_bytes(self.array()?)),
            0xcf => Value::from(u64::from_be_bytes(self.array()?)),
            0xd0 => Value::from(i8::from_be_bytes(self.array()?)),
            0xd1 => Value::from(i16::from_be_bytes(self.array()?)),
            0xd2 => Value::from(i32::from_be_bytes(self.array()?)),
            0xd3 => Value::from(i64::from_be_bytes(self.array()?)),
            // As serde_json reads a float: NaN and the infinities are null.
            0xca => float(f64::from(f32::from_be_bytes(self.array()?))),
            0xcb => float(f64::from_be_bytes(self.array()?)),
            _ => return Err(DecodeError::Unexpected { marker, offset }),
        })
    }
}

fn float(f: f64) -> Value {
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ours(map: &HashMap<String, Value>) -> Vec<u8> {
        let mut out = Vec::new();
        encode_map(&mut out, map).unwrap();
        out
    }

    use crate::test_rng::Rng;

    /// Random values for the round trips.
    impl Rng {
        fn string(&mut self) -> String {
            // Lengths around each form's bounds (fixstr, str8, str16).
            let len = [0, 1, 31, 32, 255, 256, 70_000][self.below(7)];
            (0..len)
                .map(|i| ['a', 'é', '€', '😀'][(i + self.below(4)) % 4])
                .collect()
        }

        fn number(&mut self) -> Value {
            let bounds: [i128; 16] = [
                0,
                127,
                128,
                255,
                256,
                65_535,
                65_536,
                u32::MAX.into(),
                u64::MAX.into(),
                -1,
                -32,
                -33,
                -128,
                -129,
                -32_769,
                i64::MIN.into(),
            ];
            let base = bounds[self.below(16)];
            let near = base + i128::try_from(self.below(3)).unwrap() - 1;
            match self.below(4) {
                0 => json!(f64::from_bits(self.next())),
                1 => json!(0.25),
                _ => u64::try_from(near)
                    .map(Value::from)
                    .or_else(|_| i64::try_from(near).map(Value::from))
                    .unwrap_or(Value::Null),
            }
        }

        fn value(&mut self, depth: u32) -> Value {
            match self.below(if depth == 0 { 5 } else { 7 }) {
                0 => Value::Null,
                1 => Value::Bool(self.next().is_multiple_of(2)),
                2 | 3 => self.number(),
                4 => Value::String(self.string()),
                5 => Value::Array(
                    (0..[0, 1, 15, 16, 17][self.below(5)])
                        .map(|_| self.value(depth - 1))
                        .collect(),
                ),
                _ => Value::Object(
                    (0..[0, 1, 15, 16][self.below(4)])
                        .map(|i| (format!("k{i}"), self.value(depth - 1)))
                        .collect(),
                ),
            }
        }
    }

    #[test]
    fn writes_what_rmp_serde_writes_and_reads_it_back() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..300 {
            let map: HashMap<String, Value> = (0..[0, 1, 2, 15, 16, 20][rng.below(6)])
                .map(|_| (rng.string(), rng.value(3)))
                .collect();
            let bytes = ours(&map);
            assert_eq!(bytes, rmp_serde::to_vec(&map).unwrap());
            assert_eq!(decode_map(&bytes).unwrap(), map);
        }
    }

    #[test]
    fn reads_what_rmp_serde_reads_from_any_bytes() {
        // Random bytes after a map header, and mutations of valid records:
        // whenever either side reads a map, the other reads the same one.
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let valid = ours(
            &[(
                "user".to_owned(),
                json!({"name": "alice", "roles": [1, -2, 3.5, null, true]}),
            )]
            .into_iter()
            .collect(),
        );
        let mut agreed_ok = 0;
        for round in 0..200_000_u32 {
            let bytes: Vec<u8> = if round.is_multiple_of(2) {
                let len = rng.below(24);
                let mut b: Vec<u8> = (0..len).map(|_| rng.next().to_le_bytes()[0]).collect();
                if let Some(first) = b.first_mut() {
                    *first = 0x80 | (*first & 0x03);
                }
                b
            } else {
                let mut b = valid.clone();
                for _ in 0..=rng.below(3) {
                    let at = rng.below(b.len() as u64);
                    b[at] = rng.next().to_le_bytes()[0];
                }
                b.truncate(rng.below(b.len() as u64 + 1).max(1));
                b
            };
            let theirs = rmp_serde::from_slice::<HashMap<String, Value>>(&bytes).ok();
            let mine = decode_map(&bytes).ok();
            assert_eq!(mine, theirs, "{bytes:02x?}");
            agreed_ok += usize::from(mine.is_some());
        }
        assert!(
            agreed_ok > 1_000,
            "only {agreed_ok} inputs decoded: the test exercises little"
        );
    }

    #[test]
    fn every_kind_and_the_markers_for_it() {
        let map: HashMap<String, Value> = [(
            "k".to_owned(),
            json!([null, false, true, 1, -1, 200, -100, 0.5, "s", {}]),
        )]
        .into_iter()
        .collect();
        let bytes = ours(&map);
        assert_eq!(
            bytes,
            [
                0x81, 0xa1, b'k', 0x9a, 0xc0, 0xc2, 0xc3, 0x01, 0xff, 0xcc, 200, 0xd0, 0x9c, 0xcb, 0x3f,
                0xe0, 0, 0, 0, 0, 0, 0, 0xa1, b's', 0x80
            ]
        );
    }

    #[test]
    fn refuses_what_is_not_a_map_of_json_values() {
        assert_eq!(decode_map(&[]), Err(DecodeError::Truncated));
        assert_eq!(
            decode_map(&[0x91, 0x01]),
            Err(DecodeError::Unexpected {
                marker: 0x91,
                offset: 0
            })
        );
        assert_eq!(
            decode_map(&[0x81, 0x01, 0x01]),
            Err(DecodeError::KeyNotString { offset: 1 })
        );
        assert_eq!(
            decode_map(&[0x81, 0xa1, 0xff, 0x01]),
            Err(DecodeError::NotUtf8 { offset: 1 })
        );
        // Binary and extension values, and the unused marker.
        for marker in [0xc4, 0xc7, 0xd4, 0xc1] {
            assert_eq!(
                decode_map(&[0x81, 0xa1, b'k', marker, 0x01, 0x01, 0x01]),
                Err(DecodeError::Unexpected { marker, offset: 3 })
            );
        }
        // A map32 claiming 4 billion entries in 5 bytes: an error, no huge allocation.
        assert_eq!(
            decode_map(&[0xdf, 0xff, 0xff, 0xff, 0xff]),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            decode_map(&[0x81, 0xa1, b'k', 0xdd, 0xff, 0xff, 0xff, 0xff]),
            Err(DecodeError::Truncated)
        );
    }

    /// serde_json's own recursion limit when it parses text: the depth a
    /// record may nest to (the record's map counted).
    const DEPTH_MAX: usize = 128;

    /// `{"k": [[...[null]...]]}`, `depth` levels with the record's map,
    /// and its bytes.
    fn nested_arrays(depth: usize) -> (HashMap<String, Value>, Vec<u8>) {
        let mut value = Value::Null;
        for _ in 1..depth {
            value = Value::Array(vec![value]);
        }
        let mut bytes = vec![0x81, 0xa1, b'k'];
        bytes.extend(std::iter::repeat_n(0x91, depth - 1));
        bytes.push(0xc0);
        (HashMap::from([("k".to_owned(), value)]), bytes)
    }

    /// `{"k": {"k": ...{"k": null}...}}`, `depth` levels with the record's
    /// map, and its bytes.
    fn nested_maps(depth: usize) -> (HashMap<String, Value>, Vec<u8>) {
        let mut value = Value::Null;
        for _ in 1..depth {
            value = Value::Object(Map::from_iter([("k".to_owned(), value)]));
        }
        let mut bytes = Vec::new();
        for _ in 0..depth {
            bytes.extend_from_slice(&[0x81, 0xa1, b'k']);
        }
        bytes.push(0xc0);
        (HashMap::from([("k".to_owned(), value)]), bytes)
    }

    /// Runs `f` on a thread with a tokio worker's stack (2 MiB), where a
    /// server decodes and encodes records.
    fn on_a_workers_stack(f: fn()) {
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(f)
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn nesting_is_bounded_within_a_workers_stack() {
        // Both recurse once per level: in an unoptimised build (this one),
        // a record at the bound is written and read on a tokio worker's
        // stack, and one nested deeper, however deep, is refused there
        // (it used to abort the process with a stack overflow).
        on_a_workers_stack(nesting_bound);
    }

    fn nesting_bound() {
        for nested in [nested_arrays, nested_maps] {
            for depth in [1, 2, DEPTH_MAX - 1, DEPTH_MAX] {
                let (map, bytes) = nested(depth);
                assert_eq!(ours(&map), bytes, "depth {depth}");
                assert_eq!(decode_map(&bytes).as_ref(), Ok(&map), "depth {depth}");
            }
            // What is written can be read back: a map nested deeper than
            // the bound is refused at encoding, not stored to fail every load.
            for depth in [DEPTH_MAX + 1, 1_023] {
                let (map, bytes) = nested(depth);
                assert_eq!(decode_map(&bytes), Err(DecodeError::TooDeep), "depth {depth}");
                assert_eq!(
                    encode_map(&mut Vec::new(), &map),
                    Err(EncodeError::TooDeep),
                    "depth {depth}"
                );
            }
        }
        // Hostile bytes, nested far deeper than anything rmp-serde reads.
        let mut bytes = vec![0x81, 0xa1, b'k'];
        bytes.extend(std::iter::repeat_n(0x91, 100_000));
        bytes.push(0xc0);
        assert_eq!(decode_map(&bytes), Err(DecodeError::TooDeep));
    }

    #[test]
    fn nesting_within_the_bound_reads_as_rmp_serde_reads_it() {
        // rmp-serde's decoder needs more than a test thread's stack for
        // its own recursion in an unoptimised build: a thread of its own.
        // It reads records nested up to 1,023 levels; ours refuses those
        // past the bound, which this crate never writes.
        std::thread::Builder::new()
            .stack_size(64 << 20)
            .spawn(|| {
                for nested in [nested_arrays, nested_maps] {
                    for depth in [DEPTH_MAX - 1, DEPTH_MAX] {
                        let (map, bytes) = nested(depth);
                        let theirs = rmp_serde::from_slice::<HashMap<String, Value>>(&bytes).ok();
                        assert_eq!(theirs.as_ref(), Some(&map), "depth {depth}");
                        assert_eq!(decode_map(&bytes).ok(), theirs, "depth {depth}");
                        assert_eq!(rmp_serde::to_vec(&map).unwrap(), bytes, "depth {depth}");
                    }
                }
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
