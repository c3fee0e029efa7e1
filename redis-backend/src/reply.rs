//! Reading script and command replies into sessions.

use redis::Value;
use session_engine::{Error, Metadata, Result, Session, SessionId, Timeout};

use crate::error::protocol;

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

/// The stored form of a timeout (`0` = never).
pub(crate) fn timeout_field(timeout: Timeout) -> String {
    timeout.as_ms().unwrap_or(0).to_string()
}

/// A session from `[m, c, a, t]` (the order of `GET` and `HMGET m c a t`),
/// the reply to `command`; `Ok(None)` if the key is absent (all nil).
pub(crate) fn session(id: SessionId, command: &str, value: Value) -> Result<Option<Session>> {
    let Value::Array(mut fields) = value else {
        return match value {
            Value::Nil => Ok(None),
            other => Err(protocol(command, &other, false)),
        };
    };
    if fields.len() != 4 {
        return Err(protocol(command, &Value::Array(fields), false));
    }
    if matches!(fields[0], Value::Nil) {
        return Ok(None);
    }
    let parsed = (|| {
        let created_ms = number(&fields[1])?;
        let last_access_ms = number(&fields[2])?;
        let timeout = timeout(&fields[3])?;
        let metadata = bytes(std::mem::take(&mut fields[0]))?;
        Some(Session::new(
            id,
            Metadata::from(metadata),
            created_ms,
            last_access_ms,
            timeout,
        ))
    })();
    parsed
        .map(Some)
        .ok_or_else(|| protocol(command, &Value::Array(fields), false))
}

/// A session whose metadata the caller already holds, from `[c, a, t]` (a
/// write's reply: a malformed one is a write's protocol error).
pub(crate) fn session_with(
    id: SessionId,
    metadata: Metadata,
    command: &str,
    fields: &[Value],
) -> Result<Session> {
    let parsed = (|| {
        let [c, a, t] = fields else { return None };
        Some(Session::new(id, metadata, number(c)?, number(a)?, timeout(t)?))
    })();
    parsed.ok_or_else(|| protocol(command, &Value::Array(fields.to_vec()), true))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn sessions_decode_and_absent_is_none() {
        let id = SessionId::from_bytes([1; 16]);
        let v = Value::Array(vec![bulk("meta"), bulk("10"), bulk("20"), bulk("0")]);
        let s = session(id, "get", v).unwrap().unwrap();
        assert_eq!(s.metadata(), b"meta");
        assert_eq!((s.created_ms(), s.last_access_ms()), (10, 20));
        assert_eq!(s.timeout(), Timeout::Never);
        let absent = Value::Array(vec![Value::Nil, Value::Nil, Value::Nil, Value::Nil]);
        assert!(session(id, "peek", absent).unwrap().is_none());
        assert!(session(id, "get", Value::Nil).unwrap().is_none());
        let torn = Value::Array(vec![bulk("m"), bulk("x"), bulk("20"), bulk("5")]);
        assert!(matches!(session(id, "get", torn), Err(Error::Unavailable { .. })));
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
}
