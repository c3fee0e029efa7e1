//! Every decoder of a server's reply, driven with one reply and checked
//! against what it promises, for the fuzz target `decode_reply`
//! (`redis-backend/fuzz/`) and for the unit test below, which runs it on
//! random replies in every test run. Whatever the reply, a decoder returns
//! a value or a typed error; it never panics. The assertions here are the
//! decoders' promises on their results (a session has the id asked for, a
//! flag is 0 or 1, a write's malformed reply is `OutcomeUnknown`), paired
//! with the checks inside the decoders.

use redis::Value;
use session_engine::limits::TOPICS_PER_SESSION_MAX;
use session_engine::{Error, SessionId};

use crate::conn::parse_cluster_slots;
use crate::limits::CLUSTER_SLOTS;
use crate::reply::{self, Commit, Replicas};

/// The id the session decoders are given (any will do: they must return it).
const ID: SessionId = SessionId::from_bytes([0x5a; 16]);

/// Parses `bytes` as one reply in the Redis protocol (RESP2 or RESP3, as a
/// server sends it) and, if it is one, feeds it to [`decode`]. Returns
/// whether the bytes held a reply.
#[must_use]
pub fn decode_bytes(bytes: &[u8]) -> bool {
    match redis::parse_redis_value(bytes) {
        Ok(value) => {
            decode(&value);
            true
        }
        Err(_) => false,
    }
}

/// Feeds `value` to every decoder as the reply to each request that reads
/// one, and checks the results (see the module docs). Panics only if a
/// decoder broke its promise.
pub fn decode(value: &Value) {
    sessions(value);
    outcomes(value);
    batches(value);
    texts(value);
    state(value);
}

fn is_protocol_error(e: &Error, write: bool) -> bool {
    match e {
        Error::Unavailable { reason } if !write => reason.starts_with("protocol error"),
        Error::OutcomeUnknown { reason } if write => reason.starts_with("protocol error"),
        _ => false,
    }
}

/// `get`'s script, `peek`'s `HMGET`, a list fetch; a write's `[c, a, t]`.
fn sessions(value: &Value) {
    match reply::session(ID, "HMGET (fuzz)", value.clone()) {
        Ok(Some(session)) => {
            assert_eq!(session.id(), ID, "a session decoded under another id");
            assert!(
                matches!(value, Value::Array(fields) if fields.len() == 5),
                "a session from {value:?}"
            );
        }
        Ok(None) => assert!(
            matches!(value, Value::Nil)
                || matches!(value, Value::Array(fields) if fields.len() == 5 && fields[0] == Value::Nil),
            "absent from {value:?}"
        ),
        Err(e) => assert!(is_protocol_error(&e, false), "{e:?}"),
    }
    if let Value::Array(fields) = value {
        let metadata = session_engine::Metadata::from(b"m".to_vec());
        match reply::session_with(ID, metadata, "EVALSHA (fuzz)", fields) {
            Ok(session) => {
                assert_eq!(session.id(), ID);
                assert_eq!(fields.len(), 4, "a written session from {value:?}");
            }
            Err(e) => assert!(is_protocol_error(&e, true), "{e:?}"),
        }
    }
    let _ = (
        reply::number(value),
        reply::timeout(value),
        reply::bytes(value.clone()),
    );
}

/// Flags, outcome codes, the commit script's answer, the replicas' count,
/// an update's and a `try_update`'s read.
fn outcomes(value: &Value) {
    for write in [false, true] {
        match reply::flag("DEL", value, write) {
            Ok(flag) => assert_eq!(*value, Value::Int(i64::from(flag)), "a flag from {value:?}"),
            Err(e) => assert!(is_protocol_error(&e, write), "{e:?}"),
        }
    }
    match reply::commit_outcome("EVALSHA (fuzz)", value.clone()) {
        Ok(Commit::Done(fields)) => assert_eq!(fields.len(), 4),
        Ok(Commit::Moved(_)) => {
            assert!(
                matches!(value, Value::Array(f) if f.len() == 7),
                "moved from {value:?}"
            );
        }
        Ok(Commit::Absent) => {}
        Err(e) => assert!(is_protocol_error(&e, true), "{e:?}"),
    }
    match reply::code("EVALSHA (fuzz)", value, 0..=2, true) {
        Ok(code) => assert_eq!(*value, Value::Int(code), "a code from {value:?}"),
        Err(e) => assert!(is_protocol_error(&e, true), "{e:?}"),
    }
    match reply::seen(value.clone()) {
        Ok(_) => assert!(
            matches!(value, Value::Array(f) if f.len() == 6),
            "seen from {value:?}"
        ),
        Err(Error::NotFound) => {}
        Err(e) => assert!(is_protocol_error(&e, false), "{e:?}"),
    }
    let rest = match value {
        Value::Array(items) => items.clone(),
        other => vec![other.clone()],
    };
    for fenced in [false, true] {
        match reply::replicas_from(rest.clone().into_iter(), fenced) {
            Replicas::Acked(n) => assert!(n >= 0, "{n} replicas"),
            Replicas::Unconfirmed(_) | Replicas::NotAsked => {}
        }
    }
    match reply::update_read(value.clone()) {
        Ok(_) | Err(Error::NotFound) => {}
        Err(e) => assert!(is_protocol_error(&e, false), "{e:?}"),
    }
}

/// `SCAN` and `CLUSTER SLOTS`.
fn batches(value: &Value) {
    match reply::scan(value.clone()) {
        Ok((_, keys)) => assert!(
            matches!(value, Value::Array(parts) if matches!(&parts[..], [_, Value::Array(k)] if k.len() == keys.len())),
            "{} keys from {value:?}",
            keys.len()
        ),
        Err(e) => assert!(is_protocol_error(&e, false), "{e:?}"),
    }
    if let Ok((shards, nodes)) = parse_cluster_slots(value, "h") {
        assert!(!shards.is_empty() && !nodes.is_empty());
        assert!(shards.windows(2).all(|w| w[0].first_slot < w[1].first_slot));
        for shard in &shards {
            assert!(shard
                .ranges
                .iter()
                .all(|&(start, end)| start <= end && end < CLUSTER_SLOTS));
            assert!(shard.ranges.iter().any(|&(start, _)| start == shard.first_slot));
        }
    }
}

/// The per-session state scripts' replies, `HKEYS`/`ZRANGEBYLEX` and a
/// fan-out's `HGET`.
fn state(value: &Value) {
    let two = |code: i64| matches!(value, Value::Array(f) if f.len() == 2 && f[0] == Value::Int(code));
    let three = |code: i64| matches!(value, Value::Array(f) if f.len() == 3 && f[0] == Value::Int(code));
    let int_of = |left: reply::Life| match left {
        reply::Life::Unbounded => Value::Int(0),
        reply::Life::LeftMs(ms) => Value::Int(i64::try_from(ms).unwrap_or(-1)),
    };
    let left_is =
        |left: reply::Life| matches!(value, Value::Array(f) if f.len() >= 2 && f[1] == int_of(left));
    let one = |code: i64| matches!(value, Value::Array(f) if f.len() == 1 && f[0] == Value::Int(code));
    match reply::subscribed("EVALSHA (fuzz)", value) {
        Ok(reply::Subscribed::Absent) => assert!(one(0), "absent from {value:?}"),
        Ok(reply::Subscribed::Now(n, left)) => assert!(
            three(1)
                && reply::nonce(&n).is_some()
                && matches!(value, Value::Array(f)
                if f[2] == int_of(left)),
            "{value:?}"
        ),
        Ok(reply::Subscribed::Already(n, left)) => assert!(
            three(2)
                && reply::nonce(&n).is_some()
                && matches!(value, Value::Array(f)
                if f[2] == int_of(left)),
            "{value:?}"
        ),
        Ok(reply::Subscribed::Full(_)) => assert!(two(3), "full from {value:?}"),
        Ok(reply::Subscribed::Doubt) => assert!(one(4), "doubt from {value:?}"),
        Err(e) => assert!(is_protocol_error(&e, true), "{e:?}"),
    }
    match reply::lifetime_set("EVALSHA (fuzz)", value) {
        Ok(reply::LifetimeSet::Absent) => assert!(one(0), "absent from {value:?}"),
        Ok(reply::LifetimeSet::Done) => assert!(one(1), "done from {value:?}"),
        Ok(reply::LifetimeSet::InDoubt) => assert!(one(3), "in doubt from {value:?}"),
        Ok(reply::LifetimeSet::Subscribed { left, subscriptions }) => {
            assert!(left_is(left), "left {left:?} from {value:?}");
            assert!(subscriptions.len() <= TOPICS_PER_SESSION_MAX);
            assert!(
                matches!(value, Value::Array(f) if f[0] == Value::Int(2) && f.len() == 2 + 2 * subscriptions.len()),
                "{value:?}"
            );
        }
        Err(e) => assert!(is_protocol_error(&e, true), "{e:?}"),
    }
    match reply::unsubscribed("EVALSHA (fuzz)", value) {
        Ok(reply::Unsubscribed::Absent) => assert!(one(0), "absent from {value:?}"),
        Ok(reply::Unsubscribed::Was(_)) => assert!(two(1), "was from {value:?}"),
        Ok(reply::Unsubscribed::WasNot) => assert!(one(2), "was not from {value:?}"),
        Ok(reply::Unsubscribed::Doubt) => assert!(one(3), "doubt from {value:?}"),
        Err(e) => assert!(is_protocol_error(&e, true), "{e:?}"),
    }
    match reply::charge("EVALSHA (fuzz)", value) {
        Ok(reply::Charge::Absent) => assert!(one(0), "absent from {value:?}"),
        Ok(reply::Charge::Allowed(n)) => {
            assert!(two(1), "allowed from {value:?}");
            assert!(matches!(value, Value::Array(f) if f[1] == Value::Int(i64::from(n))));
        }
        Ok(reply::Charge::Limited(_)) => assert!(two(2), "limited from {value:?}"),
        Ok(reply::Charge::Doubt) => assert!(one(3), "doubt from {value:?}"),
        Err(e) => assert!(is_protocol_error(&e, true), "{e:?}"),
    }
    match reply::strings("HKEYS", value.clone()) {
        Ok(items) => assert!(
            matches!(value, Value::Array(f) if f.len() == items.len()),
            "{value:?}"
        ),
        Err(e) => assert!(is_protocol_error(&e, false), "{e:?}"),
    }
    match reply::subscription("HGET (fuzz)", value) {
        Ok(None) => assert_eq!(*value, Value::Nil),
        Ok(Some(n)) => assert_eq!(*value, Value::BulkString(n.to_vec())),
        Err(e) => assert!(is_protocol_error(&e, false), "{e:?}"),
    }
}

/// `INFO` and `CLUSTER INFO`.
fn texts(value: &Value) {
    if let Some(text) = reply::text(value) {
        let _ = reply::info_field(&text, "cluster_enabled");
    }
    let _ = crate::error::protocol("HMGET (fuzz)", value, false);
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    /// Text a decoder might take for a field: numbers, signs, junk.
    fn word(rng: &mut StdRng) -> Vec<u8> {
        match rng.random_range(0..7) {
            0 => rng.random::<u64>().to_string().into_bytes(),
            5 => format!("{:016x}", rng.random::<u64>()).into_bytes(),
            1 => rng.random_range(0..3u8).to_string().into_bytes(),
            2 => format!("-{}", rng.random::<u32>()).into_bytes(),
            3 => b"cluster_enabled:1\r\ncluster_state:ok".to_vec(),
            4 => Vec::new(),
            _ => (0..rng.random_range(0..8)).map(|_| rng.random()).collect(),
        }
    }

    fn value(rng: &mut StdRng, depth: u32) -> Value {
        match rng.random_range(0..if depth == 0 { 6 } else { 8 }) {
            0 => Value::Nil,
            1 => Value::Int(match rng.random_range(0..3) {
                0 => rng.random_range(-2..4),
                1 => rng.random_range(0..16_400),
                _ => rng.random(),
            }),
            2 | 3 => Value::BulkString(word(rng)),
            4 => Value::SimpleString(String::from_utf8_lossy(&word(rng)).into_owned()),
            5 => match rng.random_range(0..3) {
                0 => Value::Okay,
                1 => Value::Double(f64::from(rng.random::<i32>()) / 7.0),
                _ => Value::Boolean(rng.random()),
            },
            6 if rng.random_range(0..4) == 0 => {
                let len = rng.random_range(0..4);
                Value::Map(
                    (0..len)
                        .map(|_| (value(rng, depth - 1), value(rng, depth - 1)))
                        .collect(),
                )
            }
            _ => {
                let len = rng.random_range(0..6);
                Value::Array((0..len).map(|_| value(rng, depth - 1)).collect())
            }
        }
    }

    #[test]
    fn every_decoder_survives_random_replies() {
        let seed: u64 = std::env::var("REPLY_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| rand::rng().random());
        println!("seed {seed} (replay: REPLY_FUZZ_SEED={seed})");
        let mut rng = StdRng::seed_from_u64(seed);
        for _ in 0..20_000 {
            decode(&value(&mut rng, 3));
        }
        for _ in 0..5_000 {
            let mut bytes: Vec<u8> = (0..rng.random_range(0..40)).map(|_| rng.random()).collect();
            bytes.insert(0, *b"*$:+-_,#".get(rng.random_range(0..8)).expect("in range"));
            let _ = decode_bytes(&bytes);
        }
    }

    #[test]
    fn well_formed_replies_decode() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        decode(&Value::Array(vec![
            bulk("m"),
            bulk("1"),
            bulk("2"),
            bulk("0"),
            Value::Nil,
        ]));
        assert!(decode_bytes(
            b"*5\r\n$1\r\nm\r\n$1\r\n1\r\n$1\r\n2\r\n$1\r\n0\r\n$1\r\n0\r\n"
        ));
        assert!(decode_bytes(
            b"*1\r\n*3\r\n:0\r\n:16383\r\n*2\r\n$9\r\n127.0.0.1\r\n:7000\r\n"
        ));
        assert!(!decode_bytes(b"*4\r\n$1\r\nm"), "a torn reply is no reply");
        let nonce = bulk("0123456789abcdef");
        decode(&Value::Array(vec![Value::Int(1), nonce.clone()]));
        decode(&Value::Array(vec![Value::Int(1), nonce.clone(), Value::Int(3)]));
        assert_eq!(
            reply::subscribed(
                "s",
                &Value::Array(vec![Value::Int(2), nonce.clone(), Value::Int(0)])
            )
            .unwrap(),
            reply::Subscribed::Already(*b"0123456789abcdef", reply::Life::Unbounded)
        );
        assert_eq!(
            reply::subscribed(
                "s",
                &Value::Array(vec![Value::Int(1), nonce.clone(), Value::Int(5)])
            )
            .unwrap(),
            reply::Subscribed::Now(*b"0123456789abcdef", reply::Life::LeftMs(5))
        );
        assert!(reply::subscribed(
            "s",
            &Value::Array(vec![Value::Int(1), nonce.clone(), Value::Int(-1)])
        )
        .is_err());
        assert_eq!(
            reply::lifetime_set(
                "l",
                &Value::Array(vec![Value::Int(2), Value::Int(7), bulk("t"), nonce.clone()])
            )
            .unwrap(),
            reply::LifetimeSet::Subscribed {
                left: reply::Life::LeftMs(7),
                subscriptions: vec![("t".to_owned(), *b"0123456789abcdef")]
            }
        );
        assert!(
            reply::lifetime_set("l", &Value::Array(vec![Value::Int(2), Value::Int(7), bulk("t")])).is_err()
        );
        assert_eq!(
            reply::subscribed("s", &Value::Array(vec![Value::Int(4)])).unwrap(),
            reply::Subscribed::Doubt
        );
        assert!(
            reply::subscription("h", &bulk("0123456789ABCDEF")).is_err(),
            "upper case"
        );
        assert_eq!(
            reply::charge("r", &Value::Array(vec![Value::Int(2), Value::Int(250)])).unwrap(),
            reply::Charge::Limited(250)
        );
    }
}
