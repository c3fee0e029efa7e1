//! How a Redis failure maps onto [`session_engine::Error`].
//!
//! Every client error is first sorted by one question, "can this request
//! have run on the server?", because that decides whether the backend may
//! resend it and what the caller is told when the budget runs out:
//!
//! | class | examples | may have run? | retried | final error |
//! | --- | --- | --- | --- | --- |
//! | [`Fault::NotApplied`] | connection refused, `CLUSTERDOWN`, `TRYAGAIN`, `MOVED`/`ASK` left over, `MASTERDOWN`, `LOADING`, `READONLY`, `BUSY` (a script running past its threshold) | no | yes | `Unavailable` |
//! | [`Fault::Ambiguous`] | connection dropped after sending, I/O error mid-reply | yes | yes (writes are idempotent, see `scripts.rs`) | `OutcomeUnknown` for a write, `Unavailable` for a read |
//! | [`Fault::TimedOut`] | no answer within the request timeout | yes | no time left | `TimedOut` |
//! | [`Fault::NoScript`] | `NOSCRIPT` | no | at once, as `EVAL` | — |
//! | [`Fault::Refused`] | `WRONGTYPE`, a script error | no (or harmlessly) | no | `Unavailable` naming the server's message (`OutcomeUnknown` for a write an earlier attempt may have applied) |
//!
//! A reply of the wrong type or value is no fault of the transport: the
//! operation reports it as a protocol error naming the command ([`protocol`]).

use redis::{ErrorKind, RedisError, ServerErrorKind};
use session_engine::Error;

use crate::limits::PROTOCOL_REPLY_SHOWN_BYTES;

/// What one failed attempt says about the request (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Did not run; safe to resend.
    NotApplied(String),
    /// May have run.
    Ambiguous(String),
    /// The attempt's deadline passed; it may have run.
    TimedOut,
    /// The node lacks the script: resend the same request as `EVAL`.
    NoScript,
    /// The server answered with an error that resending will not change.
    Refused(String),
}

impl Fault {
    /// True if the server (or cluster) answered: evidence that the client's
    /// connections work, for the stuck-client detector.
    pub(crate) fn server_answered(&self) -> bool {
        matches!(self, Fault::NoScript | Fault::Refused(_))
    }

    /// True if this attempt may have been applied.
    pub(crate) fn maybe_applied(&self) -> bool {
        matches!(self, Fault::Ambiguous(_) | Fault::TimedOut)
    }
}

/// True if the node answered `err` in a way that says its connection works
/// and it still serves the request's slot: the server answered
/// ([`Fault::server_answered`]), or it is migrating the slot (`ASK`: the
/// key has moved on, the slot has not; `TRYAGAIN`: the keys are split
/// between the two nodes for now). Neither is a failure of the route to
/// that node nor of the client, though the request is resent (`NotApplied`).
/// A `MOVED` is not: the slot is another master's now.
pub(crate) fn node_answered(err: &RedisError) -> bool {
    classify(err).server_answered()
        || busy(err)
        || matches!(
            err.kind(),
            ErrorKind::Server(ServerErrorKind::Ask | ServerErrorKind::TryAgain)
        )
}

/// True for `BUSY`: the node is running a script past its
/// `busy-reply-threshold` and refuses every other command until it ends
/// (the client library has no kind for it).
fn busy(err: &RedisError) -> bool {
    err.code() == Some("BUSY")
}

/// True if `err` is a state of the whole node rather than of one key: it
/// is loading its data (`LOADING`), the cluster is down as it sees it
/// (`CLUSTERDOWN`), it is a replica that lost its master (`MASTERDOWN`),
/// a replica asked to write (`READONLY`), or it is running a script
/// (`BUSY`). Every key a pipeline sends it
/// then gets the same answer: a batch resends its pipeline, not each key.
pub(crate) fn node_wide(err: &RedisError) -> bool {
    busy(err)
        || matches!(
            err.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ReadOnly
            )
        )
}

/// Sorts a client error (see the module docs).
pub(crate) fn classify(err: &RedisError) -> Fault {
    match err.kind() {
        ErrorKind::Server(ServerErrorKind::NoScript) => Fault::NoScript,
        ErrorKind::Server(
            ServerErrorKind::Moved
            | ServerErrorKind::Ask
            | ServerErrorKind::TryAgain
            | ServerErrorKind::ClusterDown
            | ServerErrorKind::MasterDown
            | ServerErrorKind::BusyLoading
            | ServerErrorKind::ReadOnly,
        )
        | ErrorKind::ClusterConnectionNotFound => Fault::NotApplied(err.to_string()),
        _ if busy(err) => Fault::NotApplied(err.to_string()),
        ErrorKind::Io if err.is_connection_refusal() => Fault::NotApplied(err.to_string()),
        ErrorKind::Io if err.is_timeout() => Fault::TimedOut,
        ErrorKind::Io | ErrorKind::Parse => Fault::Ambiguous(err.to_string()),
        _ => Fault::Refused(err.to_string()),
    }
}

/// The error an operation returns when it gives up after `last`.
/// `write`: the operation changes data; `maybe_applied`: some attempt may
/// have run; `request_timeout_ms`: the budget that elapsed.
pub(crate) fn give_up(last: &Fault, write: bool, maybe_applied: bool, request_timeout_ms: u64) -> Error {
    match last {
        Fault::TimedOut => Error::TimedOut {
            after_ms: request_timeout_ms,
        },
        Fault::Refused(reason) if write && maybe_applied => Error::OutcomeUnknown {
            reason: format!(
                "redis refused a resend of a request an earlier attempt may have applied: {reason}"
            ),
        },
        Fault::Refused(reason) => Error::Unavailable {
            reason: format!("redis refused the request: {reason}"),
        },
        Fault::NotApplied(reason) | Fault::Ambiguous(reason) if write && maybe_applied => {
            Error::OutcomeUnknown {
                reason: format!(
                    "an attempt failed after it was sent and the retries within {request_timeout_ms} ms \
                     could not settle it (last: {reason})"
                ),
            }
        }
        Fault::NotApplied(reason) | Fault::Ambiguous(reason) => Error::Unavailable {
            reason: format!("redis did not serve the request within {request_timeout_ms} ms: {reason}"),
        },
        Fault::NoScript if write && maybe_applied => Error::OutcomeUnknown {
            reason: "redis kept answering NOSCRIPT to EVAL, after an attempt that may have applied"
                .to_owned(),
        },
        Fault::NoScript => Error::Unavailable {
            reason: "redis kept answering NOSCRIPT to EVAL".to_owned(),
        },
    }
}

/// A server's reply as an error's text shows it: cut at
/// [`PROTOCOL_REPLY_SHOWN_BYTES`] (a broken or hostile server's reply can
/// be megabytes, which would then travel in every error and log line).
pub(crate) fn shown(value: &redis::Value) -> String {
    let mut shown = format!("{value:?}");
    if shown.len() > PROTOCOL_REPLY_SHOWN_BYTES {
        let mut end = PROTOCOL_REPLY_SHOWN_BYTES;
        while !shown.is_char_boundary(end) {
            end -= 1;
        }
        shown.truncate(end);
        shown.push_str("...");
    }
    shown
}

/// The error for a reply of the wrong type or value to `command` (named as
/// Redis knows it, with the operation: `EVALSHA (insert script)`, `DEL`):
/// the server is not Redis, or the key holds data this backend did not
/// write. Never read as an answer ("not found", "already exists"). A write
/// may have been applied all the same, so it reports `OutcomeUnknown`; a
/// read reports `Unavailable`. (The engine's error type has no protocol
/// variant of its own; the reason starts with "protocol error".)
pub(crate) fn protocol(command: &str, value: &redis::Value, write: bool) -> Error {
    let shown = shown(value);
    let reason = format!(
        "protocol error: unexpected reply to {command}: {shown} (is the server Redis, and is the key \
         prefix used by this store alone?)"
    );
    if write {
        Error::OutcomeUnknown {
            reason: format!("{reason}; the write may or may not have been applied"),
        }
    } else {
        Error::Unavailable { reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_are_sorted_by_whether_they_ran() {
        let moved = RedisError::from((ErrorKind::Server(ServerErrorKind::Moved), "MOVED"));
        assert!(matches!(classify(&moved), Fault::NotApplied(_)));
        let down = RedisError::from((ErrorKind::Server(ServerErrorKind::ClusterDown), "down"));
        assert!(matches!(classify(&down), Fault::NotApplied(_)));
        let noscript = RedisError::from((ErrorKind::Server(ServerErrorKind::NoScript), "NOSCRIPT"));
        assert_eq!(classify(&noscript), Fault::NoScript);
        let wrongtype = RedisError::from((ErrorKind::Server(ServerErrorKind::ResponseError), "WRONGTYPE"));
        assert!(matches!(classify(&wrongtype), Fault::Refused(_)));
        let refused = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(matches!(classify(&refused), Fault::NotApplied(_)));
        let reset = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(matches!(classify(&reset), Fault::Ambiguous(_)));
        let slow = RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
        assert_eq!(classify(&slow), Fault::TimedOut);
    }

    #[test]
    fn a_node_migrating_the_slot_answered_but_a_moved_slot_did_not() {
        let ask = RedisError::from((ErrorKind::Server(ServerErrorKind::Ask), "ASK"));
        let tryagain = RedisError::from((ErrorKind::Server(ServerErrorKind::TryAgain), "TRYAGAIN"));
        let moved = RedisError::from((ErrorKind::Server(ServerErrorKind::Moved), "MOVED"));
        let down = RedisError::from((ErrorKind::Server(ServerErrorKind::ClusterDown), "down"));
        let reset = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        let wrongtype = RedisError::from((ErrorKind::Server(ServerErrorKind::ResponseError), "WRONGTYPE"));
        assert!(node_answered(&ask) && node_answered(&tryagain) && node_answered(&wrongtype));
        assert!(!node_answered(&moved) && !node_answered(&down) && !node_answered(&reset));
        // Still resent: neither ran.
        assert!(matches!(classify(&ask), Fault::NotApplied(_)));
        assert!(matches!(classify(&tryagain), Fault::NotApplied(_)));
    }

    #[test]
    fn protocol_errors_name_the_command_and_never_read_as_answers() {
        let r = protocol("EVALSHA (insert script)", &redis::Value::Int(42), true);
        match r {
            Error::OutcomeUnknown { reason } => {
                assert!(reason.starts_with("protocol error"), "{reason}");
                assert!(
                    reason.contains("EVALSHA (insert script)") && reason.contains("42"),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
        let long = redis::Value::BulkString(vec![b'x'; 10_000]);
        match protocol("HMGET", &long, false) {
            Error::Unavailable { reason } => assert!(reason.len() < 600, "{}", reason.len()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn giving_up_names_the_right_variant() {
        let dropped = Fault::Ambiguous("reset".into());
        assert!(matches!(
            give_up(&dropped, true, true, 5),
            Error::OutcomeUnknown { .. }
        ));
        assert!(matches!(
            give_up(&dropped, false, true, 5),
            Error::Unavailable { .. }
        ));
        let refused = Fault::NotApplied("refused".into());
        assert!(matches!(
            give_up(&refused, true, false, 5),
            Error::Unavailable { .. }
        ));
        assert!(matches!(
            give_up(&Fault::TimedOut, true, true, 5),
            Error::TimedOut { after_ms: 5 }
        ));
        // A server refusing the resend (-OOM, -BUSY) says nothing of the
        // attempt before it, which may have run.
        let oom = Fault::Refused("OOM".into());
        assert!(matches!(
            give_up(&oom, true, true, 5),
            Error::OutcomeUnknown { .. }
        ));
        assert!(matches!(give_up(&oom, true, false, 5), Error::Unavailable { .. }));
        assert!(matches!(give_up(&oom, false, true, 5), Error::Unavailable { .. }));
        // Nor does a NOSCRIPT to the resend, after a try that may have run.
        assert!(matches!(
            give_up(&Fault::NoScript, true, true, 5),
            Error::OutcomeUnknown { .. }
        ));
        assert!(matches!(
            give_up(&Fault::NoScript, true, false, 5),
            Error::Unavailable { .. }
        ));
    }
}
