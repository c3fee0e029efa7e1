//! Every decoder of a server's reply: into a session, an outcome (a flag,
//! the commit script's answer, the replicas' count), a `SCAN` batch or a
//! text. A reply of the wrong type or value is a protocol error naming the
//! command (`error::protocol`), never read as an answer; nothing here
//! panics on any reply (fuzz target `redis-backend/fuzz`, `decode_reply`).

use redis::Value;
use session_engine::limits::TOPICS_PER_SESSION_MAX;
use session_engine::{Error, Metadata, Result, Session, SessionId, Timeout};

use crate::error::{protocol, shown};

/// Bytes of a bulk reply; `None` for nil.
pub(crate) fn bytes(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        _ => None,
    }
}

/// A non-negative integer, sent as a reply integer or as decimal text.
pub(crate) fn number(value: &Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(*n).ok(),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

/// The stored timeout field (`0` = never).
pub(crate) fn timeout(value: &Value) -> Option<Timeout> {
    match number(value)? {
        0 => Some(Timeout::Never),
        ms => Some(Timeout::from_ms(ms)),
    }
}

/// The stored lifetime cap: `0` or nil (a session stored before caps
/// existed) = none.
pub(crate) fn lifetime(value: &Value) -> Option<Timeout> {
    match value {
        Value::Nil => Some(Timeout::Never),
        other => timeout(other),
    }
}

/// The stored form of a timeout (`0` = never).
pub(crate) fn timeout_field(timeout: Timeout) -> String {
    timeout.as_ms().unwrap_or(0).to_string()
}

/// A session from `[m, c, a, t, l]` (the order of `GET` and `HMGET m c a t
/// l`), the reply to `command`; `Ok(None)` if the key is absent (all nil).
pub(crate) fn session(id: SessionId, command: &str, value: Value) -> Result<Option<Session>> {
    let Value::Array(mut fields) = value else {
        return match value {
            Value::Nil => Ok(None),
            other => Err(protocol(command, &other, false)),
        };
    };
    if fields.len() != 5 {
        return Err(protocol(command, &Value::Array(fields), false));
    }
    if matches!(fields[0], Value::Nil) {
        return Ok(None);
    }
    let parsed = (|| {
        let created_ms = number(&fields[1])?;
        let last_access_ms = number(&fields[2])?;
        let timeout = timeout(&fields[3])?;
        let lifetime = lifetime(&fields[4])?;
        let metadata = bytes(std::mem::take(&mut fields[0]))?;
        Some(
            Session::new(id, Metadata::from(metadata), created_ms, last_access_ms, timeout)
                .with_lifetime(lifetime),
        )
    })();
    parsed
        .map(Some)
        .ok_or_else(|| protocol(command, &Value::Array(fields), false))
}

/// A session whose metadata the caller already holds, from `[c, a, t, l]`
/// (a write's reply: a malformed one is a write's protocol error).
pub(crate) fn session_with(
    id: SessionId,
    metadata: Metadata,
    command: &str,
    fields: &[Value],
) -> Result<Session> {
    let parsed = (|| {
        let [c, a, t, l] = fields else { return None };
        Some(Session::new(id, metadata, number(c)?, number(a)?, timeout(t)?).with_lifetime(lifetime(l)?))
    })();
    parsed.ok_or_else(|| protocol(command, &Value::Array(fields.to_vec()), true))
}

/// True if `fields` are a session's `[c, a, t, l]` as [`session_with`]
/// reads them.
fn times_are_valid(fields: &[Value]) -> bool {
    let [c, a, t, l] = fields else { return false };
    number(c).is_some() && number(a).is_some() && timeout(t).is_some() && lifetime(l).is_some()
}

/// A reply that must be an integer in `codes` (a script's outcome code);
/// anything else is a protocol error.
pub(crate) fn code(
    command: &str,
    value: &Value,
    codes: std::ops::RangeInclusive<i64>,
    write: bool,
) -> Result<i64> {
    match value {
        Value::Int(n) if codes.contains(n) => Ok(*n),
        other => Err(protocol(command, other, write)),
    }
}

/// A reply that must be the integer 0 or 1 (a script's "done / not there",
/// `DEL` or `EXISTS` of one key); anything else is a protocol error.
pub(crate) fn flag(command: &str, value: &Value, write: bool) -> Result<bool> {
    match value {
        Value::Int(0) => Ok(false),
        Value::Int(1) => Ok(true),
        other => Err(protocol(command, other, write)),
    }
}

/// The error for a write that the master applied but too few replicas
/// acknowledged in time.
pub(crate) fn shortfall(acked: i64, wanted: u32, timeout_ms: u64) -> Error {
    Error::OutcomeUnknown {
        reason: format!(
            "applied on the master, but acknowledged by {acked} of {wanted} replicas within \
             {timeout_ms} ms (WAIT): it is lost if that master fails before replicating it"
        ),
    }
}

/// What the replicas said of a write.
#[derive(Debug)]
pub(crate) enum Replicas {
    /// Not asked (`Replication::Async`, or not a write).
    NotAsked,
    /// `WAIT` answered: this many replicas have everything the connection
    /// wrote up to the write (and the fence, after a doubtful try).
    Acked(i64),
    /// `WAIT` (or the fence before it) did not answer as it should.
    Unconfirmed(String),
}

/// A session as an optimistic writer read it: its metadata and version,
/// and the rest of the session, to report it as seen.
#[derive(Debug)]
pub(crate) struct Seen {
    pub(crate) metadata: Vec<u8>,
    pub(crate) version: Vec<u8>,
    pub(crate) created_ms: u64,
    pub(crate) last_access_ms: u64,
    pub(crate) timeout: Timeout,
    pub(crate) lifetime: Timeout,
}

impl Seen {
    /// From `[m, v, c, a, t, l]` (the order of `HMGET m v c a t l`), taking
    /// the metadata and version out; `None`, the fields untouched, if any is
    /// missing or malformed.
    fn take(fields: &mut [Value]) -> Option<Self> {
        let [Value::BulkString(_), Value::BulkString(_), created, last_access, timeout_ms, lifetime_ms] =
            &*fields
        else {
            return None;
        };
        let (created_ms, last_access_ms, timeout, lifetime) = (
            number(created)?,
            number(last_access)?,
            timeout(timeout_ms)?,
            lifetime(lifetime_ms)?,
        );
        Some(Self {
            metadata: bytes(std::mem::take(&mut fields[0]))?,
            version: bytes(std::mem::take(&mut fields[1]))?,
            created_ms,
            last_access_ms,
            timeout,
            lifetime,
        })
    }

    /// The session as seen, under `id`.
    pub(crate) fn into_session(self, id: SessionId) -> Session {
        Session::new(
            id,
            Metadata::from(self.metadata),
            self.created_ms,
            self.last_access_ms,
            self.timeout,
        )
        .with_lifetime(self.lifetime)
    }
}

/// What the commit script answered (see `scripts::COMMIT`).
pub(crate) enum Commit {
    /// `{0}`: no session.
    Absent,
    /// `{1, c, a, t, l}`: done (now or by an earlier attempt); `[c, a, t, l]`.
    Done(Vec<Value>),
    /// `{2, v, m, c, a, t, l}`: the version moved on; the session now.
    Moved(Seen),
}

/// Reads the commit script's reply; anything else is a protocol error.
pub(crate) fn commit_outcome(command: &str, value: Value) -> Result<Commit> {
    let Value::Array(mut fields) = value else {
        return Err(protocol(command, &value, true));
    };
    match (fields.first(), fields.len()) {
        (Some(Value::Int(0)), 1) => Ok(Commit::Absent),
        (Some(Value::Int(1)), 5) if times_are_valid(&fields[1..]) => {
            Ok(Commit::Done(fields.into_iter().skip(1).collect()))
        }
        (Some(Value::Int(2)), 7) => {
            // The script sends `v` before `m`; `HMGET`'s order has `m` first.
            fields.swap(1, 2);
            if let Some(seen) = Seen::take(&mut fields[1..]) {
                return Ok(Commit::Moved(seen));
            }
            fields.swap(1, 2);
            Err(protocol(command, &Value::Array(fields), true))
        }
        _ => Err(protocol(command, &Value::Array(fields), true)),
    }
}

/// `HMGET key m v c a t l` (a `try_update`'s read): the session as seen;
/// [`Error::NotFound`] if it is absent.
pub(crate) fn seen(value: Value) -> Result<Seen> {
    let malformed = |v: Value| protocol("HMGET (try_update read)", &v, false);
    let Value::Array(fields) = value else {
        return Err(malformed(value));
    };
    match &fields[..] {
        [Value::Nil, _, _, _, _, _] => Err(Error::NotFound),
        [_, _, _, _, _, _] => {
            let mut fields = fields;
            Seen::take(&mut fields).ok_or_else(|| malformed(Value::Array(fields)))
        }
        _ => Err(malformed(Value::Array(fields))),
    }
}

/// The replicas' answer from the replies after a write's own: the fence's
/// (after a doubtful try) and `WAIT`'s.
pub(crate) fn replicas_from(mut rest: impl Iterator<Item = Value>, fenced: bool) -> Replicas {
    if fenced {
        match rest.next() {
            Some(Value::Int(1)) => {}
            Some(other) => {
                return Replicas::Unconfirmed(format!(
                    "the replication fence (EVAL) answered {}",
                    shown(&other)
                ))
            }
            None => return Replicas::Unconfirmed("no reply to the replication fence".into()),
        }
    }
    match rest.next() {
        Some(Value::Int(n)) if n >= 0 => Replicas::Acked(n),
        Some(e @ Value::ServerError(_)) => Replicas::Unconfirmed(format!("WAIT failed: {}", shown(&e))),
        Some(other) => Replicas::Unconfirmed(format!(
            "protocol error: unexpected reply to WAIT: {}",
            shown(&other)
        )),
        None => Replicas::Unconfirmed("no reply to WAIT".into()),
    }
}

/// `HMGET key m v` (an `update`'s read): the metadata and version;
/// [`Error::NotFound`] if the session is absent.
pub(crate) fn update_read(value: Value) -> Result<(Vec<u8>, Vec<u8>)> {
    let malformed = |v: Value| protocol("HMGET (update read)", &v, false);
    let Value::Array(fields) = value else {
        return Err(malformed(value));
    };
    match <[Value; 2]>::try_from(fields) {
        Ok([Value::Nil, _]) => Err(Error::NotFound),
        Ok([m, v]) => match (bytes(m), bytes(v)) {
            (Some(m), Some(v)) => Ok((m, v)),
            (m, v) => Err(malformed(Value::Array(vec![
                m.map_or(Value::Nil, Value::BulkString),
                v.map_or(Value::Nil, Value::BulkString),
            ]))),
        },
        Err(fields) => Err(malformed(Value::Array(fields))),
    }
}

/// `SCAN`'s reply `[cursor, [key, ...]]`: the next cursor and the keys.
pub(crate) fn scan(value: Value) -> Result<(u64, Vec<Vec<u8>>)> {
    let Value::Array(parts) = value else {
        return Err(protocol("SCAN", &value, false));
    };
    let [cursor, keys] =
        <[Value; 2]>::try_from(parts).map_err(|parts| protocol("SCAN", &Value::Array(parts), false))?;
    let keys_are_strings = matches!(&keys, Value::Array(items)
        if items.iter().all(|k| matches!(k, Value::BulkString(_) | Value::SimpleString(_))));
    match (number(&cursor), keys) {
        (Some(next), Value::Array(items)) if keys_are_strings => {
            Ok((next, items.into_iter().filter_map(bytes).collect()))
        }
        (_, keys) => Err(protocol("SCAN", &Value::Array(vec![cursor, keys]), false)),
    }
}

/// The text of a reply that is text (`INFO`, `CLUSTER INFO`).
pub(crate) fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::VerbatimString { text, .. } | Value::SimpleString(text) => Some(text.clone()),
        _ => None,
    }
}

/// The node mark of an `INFO server` reply: the first
/// [`LIST_NODE_MARK_BITS`](crate::limits::LIST_NODE_MARK_BITS) bits of its
/// `run_id` (40 random hex digits, new with every process); `None` if
/// there is none (a refused `INFO`, or a server that gives no `run_id`).
pub(crate) fn node_mark(value: &Value) -> Option<u32> {
    use crate::limits::LIST_NODE_MARK_BITS;
    text(value)
        .and_then(|t| {
            let run_id = info_field(&t, "run_id")?.trim();
            let head = run_id.get(..8)?;
            u32::from_str_radix(head, 16).ok()
        })
        .map(|v| v >> (32 - LIST_NODE_MARK_BITS))
}

/// The value of `field` in an `INFO`-style text (`field:value` lines).
pub(crate) fn info_field<'a>(text: &'a str, field: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(field)?.strip_prefix(':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    /// A huge reply to `WAIT` or to the fence is cut in the reason it
    /// gives, as every protocol error's quoted reply is.
    #[test]
    fn replicas_reasons_quote_a_bounded_reply() {
        let huge = || Value::BulkString(vec![b'x'; 1 << 20]);
        for (rest, fenced) in [
            (vec![huge()], true),
            (vec![Value::Int(1), huge()], true),
            (vec![huge()], false),
        ] {
            let Replicas::Unconfirmed(reason) = replicas_from(rest.into_iter(), fenced) else {
                panic!("a huge reply confirmed replicas");
            };
            assert!(reason.len() < 1_000, "{} bytes", reason.len());
        }
    }

    #[test]
    fn node_marks_come_from_the_run_id() {
        let info =
            bulk("# Server\r\nredis_version:7.0.15\r\nrun_id:f3c2a1b0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4\r\n");
        assert_eq!(node_mark(&info), Some(0xf3c2_a1b0 >> 15));
        assert_eq!(node_mark(&bulk("run_id:zz")), None, "not hex");
        assert_eq!(node_mark(&bulk("# Server\r\n")), None, "none");
        assert_eq!(node_mark(&Value::Nil), None);
    }

    /// A commit's "done" carries the session's `c, a, t, l`: checked as
    /// every reply is, whatever the caller then uses (a delete reports the
    /// session its closure saw, and used to take any four values).
    #[test]
    fn a_commits_done_is_checked() {
        let done = |fields: [Value; 4]| {
            let mut all = vec![Value::Int(1)];
            all.extend(fields);
            commit_outcome("EVALSHA (commit script)", Value::Array(all))
        };
        assert!(matches!(
            done([bulk("10"), bulk("20"), bulk("0"), bulk("0")]),
            Ok(Commit::Done(_))
        ));
        let junk = done([bulk("x"), bulk("y"), bulk("z"), bulk("w")]);
        assert!(
            matches!(junk, Err(Error::OutcomeUnknown { .. })),
            "junk taken for done"
        );
    }

    #[test]
    fn sessions_decode_and_absent_is_none() {
        let id = SessionId::from_bytes([1; 16]);
        let v = Value::Array(vec![bulk("meta"), bulk("10"), bulk("20"), bulk("0"), bulk("0")]);
        let s = session(id, "get", v).unwrap().unwrap();
        assert_eq!(s.metadata(), b"meta");
        assert_eq!((s.created_ms(), s.last_access_ms()), (10, 20));
        assert_eq!(s.timeout(), Timeout::Never);
        assert_eq!(s.lifetime(), Timeout::Never);
        // A lifetime cap; none stored (a session from before caps): none.
        let v = Value::Array(vec![bulk("m"), bulk("10"), bulk("20"), bulk("5"), bulk("3000")]);
        assert_eq!(
            session(id, "get", v).unwrap().unwrap().lifetime(),
            Timeout::from_ms(3000)
        );
        let v = Value::Array(vec![bulk("m"), bulk("10"), bulk("20"), bulk("5"), Value::Nil]);
        assert_eq!(session(id, "get", v).unwrap().unwrap().lifetime(), Timeout::Never);
        let absent = Value::Array(vec![Value::Nil; 5]);
        assert!(session(id, "peek", absent).unwrap().is_none());
        assert!(session(id, "get", Value::Nil).unwrap().is_none());
        for torn in [
            Value::Array(vec![bulk("m"), bulk("x"), bulk("20"), bulk("5"), bulk("0")]),
            Value::Array(vec![bulk("m"), bulk("10"), bulk("20"), bulk("5"), bulk("-1")]),
            Value::Array(vec![bulk("m"), bulk("10"), bulk("20"), bulk("5")]),
        ] {
            assert!(matches!(session(id, "get", torn), Err(Error::Unavailable { .. })));
        }
    }

    #[test]
    fn flags_are_zero_or_one_and_nothing_else() {
        assert!(flag("DEL", &Value::Int(1), true).unwrap());
        assert!(!flag("DEL", &Value::Int(0), true).unwrap());
        for other in [
            Value::Int(2),
            Value::Int(-1),
            Value::Int(42),
            Value::Nil,
            bulk("1"),
        ] {
            match flag("DEL", &other, true) {
                Err(Error::OutcomeUnknown { reason }) => assert!(reason.contains("DEL"), "{reason}"),
                r => panic!("{other:?}: {r:?}"),
            }
            assert!(matches!(
                flag("EXISTS", &other, false),
                Err(Error::Unavailable { .. })
            ));
        }
    }

    #[test]
    fn timeouts_round_trip_through_the_field() {
        assert_eq!(timeout_field(Timeout::Never), "0");
        assert_eq!(timeout_field(Timeout::from_secs(2)), "2000");
        assert_eq!(timeout(&bulk("2000")), Some(Timeout::from_ms(2000)));
        assert_eq!(timeout(&Value::Int(0)), Some(Timeout::Never));
    }

    #[test]
    fn commit_replies_are_validated() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let cmd = "EVALSHA (commit script)";
        assert!(matches!(
            commit_outcome(cmd, Value::Array(vec![Value::Int(0)])),
            Ok(Commit::Absent)
        ));
        let done = Value::Array(vec![Value::Int(1), bulk("1"), bulk("2"), bulk("0"), Value::Nil]);
        assert!(matches!(commit_outcome(cmd, done), Ok(Commit::Done(f)) if f.len() == 4));
        let moved = Value::Array(vec![
            Value::Int(2),
            bulk("8"),
            bulk("m"),
            bulk("1"),
            bulk("2"),
            bulk("34560000000"),
            bulk("7000"),
        ]);
        match commit_outcome(cmd, moved) {
            Ok(Commit::Moved(seen)) => {
                assert_eq!((&seen.metadata[..], &seen.version[..]), (&b"m"[..], &b"8"[..]));
                assert_eq!((seen.created_ms, seen.last_access_ms), (1, 2));
                assert_eq!(seen.timeout, Timeout::from_ms(34_560_000_000));
                assert_eq!(seen.lifetime, Timeout::from_ms(7000));
            }
            _ => panic!("a moved reply not read as one"),
        }
        for bad in [
            Value::Int(42),
            Value::Array(vec![Value::Int(1)]),
            Value::Array(vec![Value::Int(2), bulk("8"), Value::Nil]),
            Value::Array(vec![Value::Int(2), bulk("8"), bulk("m")]),
            Value::Array(vec![
                Value::Int(2),
                bulk("8"),
                Value::Nil,
                bulk("1"),
                bulk("2"),
                bulk("0"),
                bulk("0"),
            ]),
            Value::Array(vec![
                Value::Int(2),
                bulk("8"),
                bulk("m"),
                bulk("1"),
                bulk("x"),
                bulk("0"),
                bulk("0"),
            ]),
            Value::Array(vec![Value::Int(1), bulk("1"), bulk("2"), bulk("0")]),
            Value::Array(vec![Value::Int(3)]),
        ] {
            match commit_outcome(cmd, bad) {
                Err(Error::OutcomeUnknown { reason }) => assert!(reason.contains(cmd), "{reason}"),
                _ => panic!("accepted a malformed commit reply"),
            }
        }
    }

    #[test]
    fn the_replicas_answer_comes_after_the_fence() {
        let r = replicas_from([Value::Int(1), Value::Int(1)].into_iter(), true);
        assert!(matches!(r, Replicas::Acked(1)));
        let r = replicas_from([Value::Int(0)].into_iter(), false);
        assert!(matches!(r, Replicas::Acked(0)));
        let r = replicas_from([Value::Int(42)].into_iter(), true);
        assert!(
            matches!(r, Replicas::Unconfirmed(_)),
            "the fence answered 42: {r:?}"
        );
        let r = replicas_from(std::iter::empty(), false);
        assert!(matches!(r, Replicas::Unconfirmed(_)));
        let r = replicas_from([Value::Int(-1)].into_iter(), false);
        assert!(matches!(r, Replicas::Unconfirmed(_)));
    }

    #[test]
    fn scan_and_update_reads_are_validated() {
        let ok = Value::Array(vec![bulk("17"), Value::Array(vec![bulk("k1"), bulk("k2")])]);
        assert_eq!(scan(ok).unwrap(), (17, vec![b"k1".to_vec(), b"k2".to_vec()]));
        for bad in [
            Value::Int(3),
            Value::Array(vec![bulk("17")]),
            Value::Array(vec![bulk("x"), Value::Array(vec![])]),
            Value::Array(vec![bulk("0"), Value::Array(vec![bulk("k"), Value::Int(1)])]),
            Value::Array(vec![bulk("0"), bulk("k")]),
        ] {
            match scan(bad) {
                Err(Error::Unavailable { reason }) => assert!(reason.contains("SCAN"), "{reason}"),
                other => panic!("accepted a malformed SCAN reply: {other:?}"),
            }
        }
        let read = Value::Array(vec![bulk("m"), bulk("7")]);
        assert_eq!(update_read(read).unwrap(), (b"m".to_vec(), b"7".to_vec()));
        let absent = Value::Array(vec![Value::Nil, Value::Nil]);
        assert!(matches!(update_read(absent), Err(Error::NotFound)));
        let torn = Value::Array(vec![bulk("m"), Value::Nil]);
        assert!(matches!(update_read(torn), Err(Error::Unavailable { .. })));
    }

    #[test]
    fn try_update_reads_and_outcome_codes_are_validated() {
        let read = Value::Array(vec![
            bulk("m"),
            bulk("7"),
            bulk("10"),
            bulk("20"),
            bulk("0"),
            Value::Nil,
        ]);
        let seen = seen(read).unwrap();
        assert_eq!((seen.metadata, seen.version), (b"m".to_vec(), b"7".to_vec()));
        assert_eq!(seen.timeout, Timeout::Never);
        assert_eq!(seen.lifetime, Timeout::Never);
        let absent = Value::Array(vec![Value::Nil; 6]);
        assert!(matches!(super::seen(absent), Err(Error::NotFound)));
        for torn in [
            Value::Array(vec![
                bulk("m"),
                Value::Nil,
                bulk("10"),
                bulk("20"),
                bulk("0"),
                bulk("0"),
            ]),
            Value::Array(vec![bulk("m"), bulk("7"), bulk("10"), bulk("20"), bulk("0")]),
            Value::Array(vec![
                bulk("m"),
                bulk("7"),
                bulk("-1"),
                bulk("20"),
                bulk("0"),
                bulk("0"),
            ]),
            Value::Int(1),
        ] {
            match super::seen(torn) {
                Err(Error::Unavailable { reason }) => assert!(reason.contains("try_update read"), "{reason}"),
                other => panic!("accepted a malformed read: {other:?}"),
            }
        }
        assert_eq!(
            code("EVALSHA (rotate script)", &Value::Int(2), 0..=2, true).unwrap(),
            2
        );
        for bad in [Value::Int(3), Value::Int(-1), bulk("1"), Value::Nil] {
            assert!(matches!(
                code("EVALSHA (rotate script)", &bad, 0..=2, true),
                Err(Error::OutcomeUnknown { .. })
            ));
        }
    }

    #[test]
    fn long_timeouts_are_read_back_exactly() {
        // 400 days, the engine's longest: well above u32 ms, below 2^53.
        let ms = 400 * 24 * 3_600 * 1_000;
        assert_eq!(timeout(&bulk(&ms.to_string())), Some(Timeout::from_ms(ms)));
        assert_eq!(timeout_field(Timeout::from_ms(ms)), "34560000000");
    }

    #[test]
    fn info_fields_are_read_by_exact_name() {
        let info = text(&bulk("# Cluster\r\ncluster_enabled:1\r\ncluster_state:ok\r\n")).unwrap();
        assert_eq!(info_field(&info, "cluster_enabled"), Some("1"));
        assert_eq!(info_field(&info, "cluster_state"), Some("ok"));
        assert_eq!(info_field(&info, "cluster"), None);
        assert_eq!(text(&Value::Int(1)), None);
    }
}

// ---------------------------------------------------------------------------
// Per-session state (`state.rs`, the scripts in `scripts.rs`)
// ---------------------------------------------------------------------------

/// Hex digits of a subscription's nonce (a random `u64`; see `state.rs`).
pub(crate) const NONCE_LEN: usize = 16;

/// A subscription's nonce: exactly [`NONCE_LEN`] lowercase hex digits.
pub(crate) fn nonce(value: &[u8]) -> Option<[u8; NONCE_LEN]> {
    let nonce = <[u8; NONCE_LEN]>::try_from(value).ok()?;
    nonce
        .iter()
        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        .then_some(nonce)
}

/// How long a session can still live, as the scripts report it
/// (`left_of` in `scripts.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Life {
    /// `0`: no lifetime cap; nothing bounds its life.
    Unbounded,
    /// The milliseconds before its lifetime cap ends it.
    LeftMs(u64),
}

/// A [`Life`]; `None` for anything but a non-negative integer.
pub(crate) fn life(value: &Value) -> Option<Life> {
    match value {
        Value::Int(0) => Some(Life::Unbounded),
        Value::Int(n) => u64::try_from(*n).ok().map(Life::LeftMs),
        _ => None,
    }
}

/// What the subscribe script answered (see `scripts::SUBSCRIBE`).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Subscribed {
    /// `{0}`: no session.
    Absent,
    /// `{1, nonce, left}`: subscribed now, or by an earlier try of this
    /// call; how long the session can still live.
    Now([u8; NONCE_LEN], Life),
    /// `{2, nonce, left}`: it already was, by the subscribe of that nonce.
    Already([u8; NONCE_LEN], Life),
    /// `{3, n}`: the session has `n` topics, the most allowed.
    Full(u64),
    /// `{4}`: a resend after a doubtful try found no subscription; whether
    /// the earlier try made one (undone since) cannot be told.
    Doubt,
}

/// Reads the subscribe script's reply; anything else is a write's protocol
/// error.
pub(crate) fn subscribed(command: &str, value: &Value) -> Result<Subscribed> {
    let decoded = match value {
        Value::Array(fields) => match &fields[..] {
            [Value::Int(0)] => Some(Subscribed::Absent),
            [Value::Int(1), Value::BulkString(n), left] => {
                nonce(n).zip(life(left)).map(|(n, left)| Subscribed::Now(n, left))
            }
            [Value::Int(2), Value::BulkString(n), left] => nonce(n)
                .zip(life(left))
                .map(|(n, left)| Subscribed::Already(n, left)),
            [Value::Int(3), Value::Int(n)] => u64::try_from(*n).ok().map(Subscribed::Full),
            [Value::Int(4)] => Some(Subscribed::Doubt),
            _ => None,
        },
        _ => None,
    };
    decoded.ok_or_else(|| protocol(command, value, true))
}

/// What the `set_lifetime` script answered (see `scripts::SET_LIFETIME`).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LifetimeSet {
    /// `{0}`: no session.
    Absent,
    /// `{1}`: done; the session has no subscriptions (or ended at once).
    Done,
    /// `{3}`: a resend after a doubtful try found a session that does not
    /// carry its token; nothing written.
    InDoubt,
    /// `{2, left, topic, nonce, ...}`: done; how long the session can
    /// still live and its subscriptions, whose index entries the caller
    /// re-adds with a TTL that reaches the new cap.
    Subscribed {
        left: Life,
        subscriptions: Vec<(String, [u8; NONCE_LEN])>,
    },
}

/// Reads the `set_lifetime` script's reply; anything else (more than
/// `TOPICS_PER_SESSION_MAX` subscriptions, a topic that is not text, a
/// value that is not a nonce) is a write's protocol error.
pub(crate) fn lifetime_set(command: &str, value: &Value) -> Result<LifetimeSet> {
    let decoded = match value {
        Value::Array(fields) => match &fields[..] {
            [Value::Int(0)] => Some(LifetimeSet::Absent),
            [Value::Int(1)] => Some(LifetimeSet::Done),
            [Value::Int(3)] => Some(LifetimeSet::InDoubt),
            [Value::Int(2), left, pairs @ ..]
                if pairs.len() % 2 == 0 && pairs.len() / 2 <= TOPICS_PER_SESSION_MAX =>
            {
                let subscriptions = pairs
                    .chunks_exact(2)
                    .map(|pair| match pair {
                        [Value::BulkString(topic), Value::BulkString(n)] => {
                            Some((String::from_utf8(topic.clone()).ok()?, nonce(n)?))
                        }
                        _ => None,
                    })
                    .collect::<Option<Vec<_>>>();
                subscriptions.and_then(|subscriptions| {
                    Some(LifetimeSet::Subscribed {
                        left: life(left)?,
                        subscriptions,
                    })
                })
            }
            _ => None,
        },
        _ => None,
    };
    decoded.ok_or_else(|| protocol(command, value, true))
}

/// What the unsubscribe script answered (see `scripts::UNSUBSCRIBE`).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Unsubscribed {
    /// `{0}`: no session.
    Absent,
    /// `{1, nonce}`: it was subscribed, by the subscribe of that nonce.
    Was([u8; NONCE_LEN]),
    /// `{2}`: it was not (or, on a resend, this call's earlier try
    /// removed it).
    WasNot,
    /// `{3}`: a resend that found a subscription it cannot tell from one
    /// made after its earlier try removed the one it was called for.
    Doubt,
}

/// Reads the unsubscribe script's reply; anything else is a write's
/// protocol error.
pub(crate) fn unsubscribed(command: &str, value: &Value) -> Result<Unsubscribed> {
    let decoded = match value {
        Value::Array(fields) => match &fields[..] {
            [Value::Int(0)] => Some(Unsubscribed::Absent),
            [Value::Int(1), Value::BulkString(n)] => nonce(n).map(Unsubscribed::Was),
            [Value::Int(2)] => Some(Unsubscribed::WasNot),
            [Value::Int(3)] => Some(Unsubscribed::Doubt),
            _ => None,
        },
        _ => None,
    };
    decoded.ok_or_else(|| protocol(command, value, true))
}

/// What the rate-limit script answered (see `scripts::RATE_LIMIT`).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Charge {
    /// `{0}`: no session.
    Absent,
    /// `{1, remaining}`: charged; whole tokens left.
    Allowed(u32),
    /// `{2, wait_ms}`: not charged; enough tokens in this many ms.
    Limited(u64),
    /// `{3}`: a resend that cannot tell whether the earlier try charged.
    Doubt,
}

/// Reads the rate-limit script's reply; anything else is a write's protocol
/// error (`remaining` must fit the `u32` capacity it is below).
pub(crate) fn charge(command: &str, value: &Value) -> Result<Charge> {
    let decoded = match value {
        Value::Array(fields) => match &fields[..] {
            [Value::Int(0)] => Some(Charge::Absent),
            [Value::Int(1), Value::Int(n)] => u32::try_from(*n).ok().map(Charge::Allowed),
            [Value::Int(2), Value::Int(ms)] => u64::try_from(*ms).ok().map(Charge::Limited),
            [Value::Int(3)] => Some(Charge::Doubt),
            _ => None,
        },
        _ => None,
    };
    decoded.ok_or_else(|| protocol(command, value, true))
}

/// An array of strings (`HKEYS`, `ZRANGEBYLEX`): each one's bytes.
pub(crate) fn strings(command: &str, value: Value) -> Result<Vec<Vec<u8>>> {
    let all_strings = matches!(&value, Value::Array(items)
        if items.iter().all(|v| matches!(v, Value::BulkString(_) | Value::SimpleString(_))));
    match value {
        Value::Array(items) if all_strings => Ok(items.into_iter().filter_map(bytes).collect()),
        other => Err(protocol(command, &other, false)),
    }
}

/// `HGET key s:<topic>` (a fan-out's check): the subscription's nonce, or
/// `None` if the session is gone or not subscribed. A value that is not a
/// nonce is a read's protocol error.
pub(crate) fn subscription(command: &str, value: &Value) -> Result<Option<[u8; NONCE_LEN]>> {
    match value {
        Value::Nil => Ok(None),
        Value::BulkString(n) => nonce(n).map(Some).ok_or_else(|| protocol(command, value, false)),
        _ => Err(protocol(command, value, false)),
    }
}
