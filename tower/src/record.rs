//! A tower-sessions [`Record`] as the session's metadata bytes.
//!
//! The id is not stored: it is the session's own id. The rest:
//!
//! ```text
//! offset  size  field
//! 0       1     FORMAT_VERSION (1)
//! 1       8     expiry_date, milliseconds since the Unix epoch, i64 little-endian
//! 9       n     data: the record's map, MessagePack (as rmp-serde writes it; see msgpack.rs)
//! ```
//!
//! The expiry date is kept beside the engine's own deadline, which may
//! differ from it: a date further out than the engine's longest timeout is
//! stored with that timeout, `inactivity_timeout` replaces it, and a
//! sliding load moves the deadline (see `store.rs`). Records stored by
//! earlier versions with `Timeout::Never` (a date beyond the longest
//! timeout) end by this date. Milliseconds, because the engine counts in
//! them; the sub-millisecond part of tower-sessions' date is dropped.
//!
//! MessagePack rather than JSON for the map: smaller (21 bytes against 29
//! on a two-field map) and faster to decode, which every load does, while a
//! save encodes once.

use std::cell::Cell;
use std::collections::HashMap;

use time::OffsetDateTime;
use tower_sessions_core::session::{Id, Record};
use tower_sessions_core::session_store::Error;

use crate::id::Shown;
use crate::limits::ENCODE_BUFFER_KEPT_BYTES_MAX;
use crate::msgpack;

/// The first byte of every stored record; a reader refuses any other.
pub(crate) const FORMAT_VERSION: u8 = 1;
/// Bytes of the fixed header: version and expiry date.
const HEADER_LEN: usize = 1 + EXPIRY_LEN;
const EXPIRY_LEN: usize = 8;
const MS_PER_S: i64 = 1_000;
const NS_PER_MS: i128 = 1_000_000;

/// The record's expiry date in milliseconds since the Unix epoch, rounded
/// down (no date `time` can hold is outside `i64` milliseconds).
pub(crate) fn unix_ms(date: OffsetDateTime) -> i64 {
    // Whole seconds round down and the millisecond counts up from them, so
    // the sum rounds down too, before the epoch as after it. No i128
    // division (a library call, the costliest step of the nanosecond path).
    unix_ms_ns(date).0
}

/// The date `ms` milliseconds after the Unix epoch, if `time` can hold it.
pub(crate) fn date_of_ms(ms: i64) -> Option<OffsetDateTime> {
    let date = OffsetDateTime::from_unix_timestamp(ms.div_euclid(MS_PER_S)).ok()?;
    let milli = u16::try_from(ms.rem_euclid(MS_PER_S)).expect("below 1000");
    Some(date.replace_millisecond(milli).expect("below 1000"))
}

/// [`unix_ms`] of `date` and its nanoseconds since the Unix epoch, the
/// calendar converted once.
pub(crate) fn unix_ms_ns(date: OffsetDateTime) -> (i64, i128) {
    let s = date.unix_timestamp();
    let ns = date.nanosecond();
    let ms = s * MS_PER_S + i64::from(ns / 1_000_000);
    (ms, i128::from(s) * 1_000_000_000 + i128::from(ns))
}

/// True once a record's date, stored as `expiry_ms` (its millisecond,
/// rounded down), has certainly passed at `now_ns`: the date lies somewhere
/// in that millisecond, so it has passed only once the millisecond has.
/// This check never ends a record before its date (at most 1 ms after).
/// The store's own deadline, the date less the wall clock at the save
/// (rounded up) counted on the store's clock, can come sooner by as much
/// as that clock lagged the wall clock at the save more than later (the
/// engine's ticking clock: a millisecond while its thread runs; on Redis,
/// the server's clock against the app's).
pub(crate) fn date_passed(expiry_ms: i64, now_ns: i128) -> bool {
    (i128::from(expiry_ms) + 1) * NS_PER_MS <= now_ns
}

thread_local! {
    /// The last encode's buffer, handed back by [`Encoded`]'s drop on
    /// whichever thread that runs: a save then allocates nothing for its
    /// bytes once its thread has saved before.
    static SPARE: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// A record's stored bytes; its buffer goes back to the thread's spare when
/// dropped (unless it grew past [`ENCODE_BUFFER_KEPT_BYTES_MAX`]).
pub(crate) struct Encoded(Vec<u8>);

impl std::ops::Deref for Encoded {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Encoded {
    fn drop(&mut self) {
        if self.0.capacity() <= ENCODE_BUFFER_KEPT_BYTES_MAX {
            let buffer = std::mem::take(&mut self.0);
            // A thread being torn down has no spare to keep it in.
            let _ = SPARE.try_with(|spare| spare.set(buffer));
        }
    }
}

/// The stored bytes of `record` (everything but its id), its expiry date
/// given as [`unix_ms`] of it.
///
/// # Errors
/// [`Error::Encode`] if the map holds a string, array or map longer than
/// MessagePack can say (2^32 - 1), or arrays and maps nested deeper than
/// `decode` reads back (`NESTING_DEPTH_MAX`, 128 levels with the map).
pub(crate) fn encode(record: &Record, expiry_ms: i64) -> Result<Encoded, Error> {
    debug_assert_eq!(expiry_ms, unix_ms(record.expiry_date));
    let mut out = Encoded(SPARE.try_with(Cell::take).unwrap_or_default());
    out.0.clear();
    out.0.push(FORMAT_VERSION);
    out.0.extend_from_slice(&expiry_ms.to_le_bytes());
    msgpack::encode_map(&mut out.0, &record.data).map_err(|e| {
        Error::Encode(match e {
            msgpack::EncodeError::TooLong(len) => format!(
                "session data as MessagePack: a value of length {len} (the most is {})",
                u32::MAX
            ),
            msgpack::EncodeError::TooDeep => format!(
                "session data as MessagePack: arrays and maps nested deeper than {}",
                crate::limits::NESTING_DEPTH_MAX
            ),
            msgpack::EncodeError::Number(text) => format!(
                "session data as MessagePack: the number {text} is neither a 64-bit integer nor a float \
                 (serde_json's arbitrary_precision feature keeps such numbers)"
            ),
        })
    })?;
    debug_assert!(out.len() > HEADER_LEN, "a map encodes to at least one byte");
    Ok(out)
}

/// A stored record, read: its expiry date (in range for `time`) and map.
#[derive(Debug)]
pub(crate) struct Stored {
    pub(crate) expiry_ms: i64,
    pub(crate) data: HashMap<String, serde_json::Value>,
}

impl Stored {
    /// The record under `id`, expiring at `expiry_date`.
    pub(crate) fn into_record(self, id: Id, expiry_date: OffsetDateTime) -> Record {
        Record {
            id,
            data: self.data,
            expiry_date,
        }
    }

    /// The stored expiry date.
    pub(crate) fn expiry_date(&self) -> OffsetDateTime {
        date_of_ms(self.expiry_ms).expect("checked by decode")
    }
}

/// The record stored in `bytes` (of the session `id`, for messages).
///
/// # Errors
/// [`Error::Decode`] naming what is wrong: too short, another format version,
/// a date out of range, or a map that is not MessagePack.
pub(crate) fn decode(id: Id, bytes: &[u8]) -> Result<Stored, Error> {
    if bytes.len() <= HEADER_LEN {
        return Err(Error::Decode(format!(
            "session {}: {} bytes of metadata, a stored record has more than {HEADER_LEN}",
            Shown(id),
            bytes.len()
        )));
    }
    if bytes[0] != FORMAT_VERSION {
        return Err(Error::Decode(format!(
            "session {}: record format {} (this build reads {FORMAT_VERSION}): not written by session-tower",
            Shown(id),
            bytes[0]
        )));
    }
    let expiry_ms = i64::from_le_bytes(bytes[1..HEADER_LEN].try_into().expect("8 bytes"));
    if OffsetDateTime::from_unix_timestamp(expiry_ms.div_euclid(MS_PER_S)).is_err() {
        return Err(Error::Decode(format!(
            "session {}: expiry date {expiry_ms} ms is out of range",
            Shown(id)
        )));
    }
    let data = msgpack::decode_map(&bytes[HEADER_LEN..]).map_err(|e| {
        Error::Decode(format!(
            "session {}: data is not a MessagePack map: {e}",
            Shown(id)
        ))
    })?;
    Ok(Stored { expiry_ms, data })
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_date_has_passed_only_once_its_millisecond_has() {
        // 1,000 ms: the date was somewhere in 1,000.000..1,001.000 ms.
        assert!(!date_passed(1_000, 1_000_000_000));
        assert!(!date_passed(1_000, 1_000_900_000));
        assert!(!date_passed(1_000, 1_000_999_999));
        assert!(date_passed(1_000, 1_001_000_000));
        // Before the epoch alike.
        assert!(!date_passed(-1, -1));
        assert!(date_passed(-1, 0));
    }

    use serde_json::json;

    use super::*;

    fn record(data: &[(&str, serde_json::Value)]) -> Record {
        Record {
            id: Id(7),
            data: data.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect(),
            expiry_date: date_of_ms(1_700_000_000_123).unwrap(),
        }
    }

    fn bytes_of(r: &Record) -> Vec<u8> {
        encode(r, unix_ms(r.expiry_date)).unwrap().to_vec()
    }

    /// `r` stored and read back, with the stored date.
    fn round_trip(r: &Record) -> Record {
        let stored = decode(r.id, &bytes_of(r)).unwrap();
        let date = stored.expiry_date();
        stored.into_record(r.id, date)
    }

    #[test]
    fn round_trips_every_json_kind() {
        let r = record(&[
            ("user", json!("alice")),
            ("counter", json!(42)),
            ("negative", json!(-5)),
            ("big", json!(u64::MAX)),
            ("ratio", json!(0.25)),
            ("none", json!(null)),
            ("flag", json!(true)),
            ("nested", json!({"a": [1, "two", {"three": 3.5}], "empty": {}})),
        ]);
        assert_eq!(bytes_of(&r)[0], FORMAT_VERSION);
        assert_eq!(round_trip(&r), r);
        let empty = record(&[]);
        assert_eq!(round_trip(&empty), empty);
    }

    #[test]
    fn expiry_keeps_milliseconds() {
        let mut r = record(&[]);
        r.expiry_date = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_999_999).unwrap();
        assert_eq!(unix_ms(round_trip(&r).expiry_date), 1_700_000_000_123);
        let before_epoch = OffsetDateTime::from_unix_timestamp_nanos(-1).unwrap();
        assert_eq!(unix_ms(before_epoch), -1, "rounds down, not toward zero");
        // Every millisecond near the epoch and near the ends of `time`'s
        // range, as the nanosecond arithmetic would say.
        let min_ms = unix_ms(OffsetDateTime::new_utc(time::Date::MIN, time::Time::MIDNIGHT));
        let max_ms = unix_ms(OffsetDateTime::new_utc(time::Date::MAX, time::Time::MAX));
        for ms in (-2_500..2_500)
            .chain(min_ms..min_ms + 2_500)
            .chain(max_ms - 2_500..=max_ms)
        {
            let date = date_of_ms(ms).unwrap();
            assert_eq!(date.unix_timestamp_nanos(), i128::from(ms) * 1_000_000, "{ms}");
            assert_eq!(unix_ms(date), ms);
            let later = date + time::Duration::nanoseconds(999_999);
            assert_eq!(unix_ms(later), ms, "{ms} + 999999 ns");
            assert_eq!(unix_ms_ns(later).1, later.unix_timestamp_nanos());
        }
        assert_eq!(date_of_ms(min_ms - 1), None);
        assert_eq!(date_of_ms(max_ms + 1), None);
    }

    #[test]
    fn bad_bytes_are_decode_errors_naming_the_fault() {
        let message = |bytes: &[u8]| match decode(Id(3), bytes) {
            Err(Error::Decode(m)) => m,
            other => panic!("expected a decode error, got {other:?}"),
        };
        assert!(message(b"").contains("0 bytes"));
        assert!(message(&[FORMAT_VERSION; 9]).contains("more than 9"));
        assert!(message(&[2, 0, 0, 0, 0, 0, 0, 0, 0, 0x80]).contains("format 2"));
        assert!(message(b"user_id=123;x").contains("format 117"));
        let mut not_a_map = vec![FORMAT_VERSION];
        not_a_map.extend_from_slice(&0i64.to_le_bytes());
        not_a_map.push(0xc1); // never used in MessagePack
        assert!(message(&not_a_map).contains("not a MessagePack map"));
        let mut far = vec![FORMAT_VERSION];
        far.extend_from_slice(&i64::MAX.to_le_bytes());
        far.push(0x80);
        assert!(message(&far).contains("out of range"));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = crate::test_rng::Rng(0x9e37_79b9_7f4a_7c15);
        let mut next = || rng.next();
        for _ in 0..20_000 {
            let len = usize::try_from(next() % 40).unwrap();
            let mut bytes: Vec<u8> = (0..len).map(|_| next().to_le_bytes()[0]).collect();
            if let Some(first) = bytes.first_mut() {
                *first = FORMAT_VERSION;
            }
            let _ = decode(Id(0), &bytes);
        }
    }
}
