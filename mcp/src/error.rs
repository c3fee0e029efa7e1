//! The crate's error type and its mapping to MCP errors.

use std::time::Duration;

use rmcp::model::{ErrorCode, ErrorData};

/// The JSON-RPC error code of a rate-limited request. JSON-RPC leaves
/// -32000 to -32099 to servers; MCP names none for rate limits, so this one
/// echoes HTTP's 429. The error's `data` is `{"retryAfterMs": <ms>}`.
pub const RATE_LIMITED: ErrorCode = ErrorCode(-32029);

/// What went wrong in an MCP session operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store refused or failed (`NotFound`: the session expired, was
    /// deleted, or never existed).
    #[error(transparent)]
    Store(#[from] session_engine::Error),
    /// The request was not served within one of this server's sessions:
    /// rmcp served it statelessly (see [`McpSessions::session_id`]),
    /// whatever `Mcp-Session-Id` it carries.
    ///
    /// [`McpSessions::session_id`]: crate::McpSessions::session_id
    #[error("the request was not served within one of this server's sessions")]
    NoSession,
    /// A stored record that this version cannot read.
    #[error("session record unreadable: {0}")]
    Record(String),
    /// The OS random source failed while drawing a session id.
    #[error("drawing a session id failed: {0}")]
    Random(String),
    /// A fan-out read more than `limits::FANOUT_PAGES_MAX` pages.
    #[error("fan-out of {topic:?} did not end within {pages} pages")]
    FanOutTooLong {
        /// The topic.
        topic: String,
        /// Pages read.
        pages: usize,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The MCP error a client gets. Errors about its request keep their
/// message. The server's own failures (`INTERNAL_ERROR`) carry a fixed
/// message by kind and `data: {"retryable": <bool>}`, never the store's
/// text, which can name data directory paths, Redis nodes and their
/// replies: log the [`Error`] itself (its `Display`) before converting it,
/// for the operator.
impl From<Error> for ErrorData {
    fn from(e: Error) -> Self {
        e.for_client()
    }
}

impl Error {
    /// The MCP error a client gets for this one (see `From<Error> for
    /// ErrorData`).
    pub(crate) fn for_client(&self) -> ErrorData {
        use session_engine::Error as Store;
        let e = self;
        let internal = |message: &'static str, retryable: bool| {
            ErrorData::new(
                ErrorCode::INTERNAL_ERROR,
                message,
                Some(serde_json::json!({ "retryable": retryable })),
            )
        };
        match e {
            Error::NoSession | Error::Store(Store::NotFound) => {
                ErrorData::new(ErrorCode::INVALID_REQUEST, e.to_string(), None)
            }
            Error::Store(
                Store::InvalidId(_)
                | Store::ValueTooLarge { .. }
                | Store::LimitExceeded { .. }
                | Store::InvalidArgument { .. },
            ) => ErrorData::new(ErrorCode::INVALID_PARAMS, e.to_string(), None),
            Error::Store(Store::Unavailable { .. } | Store::TimedOut { .. } | Store::Contended { .. }) => {
                internal("the session store is unavailable or busy: retry later", true)
            }
            Error::Store(Store::CapacityExceeded { .. }) => {
                internal("the session store is full: retry later", true)
            }
            Error::Store(Store::OutcomeUnknown { .. }) => internal(
                "the session store could not confirm the change: it may or may not have been made",
                false,
            ),
            Error::FanOutTooLong { .. } => internal("a fan-out did not end within its page bound", false),
            _ => internal("the session store failed", false),
        }
    }
}

/// An error handed to rmcp, which puts its text into an HTTP 500 body: the
/// message a client may see ([`Error::for_client`]'s), never the store's
/// own text. The whole error goes to the log (`tracing`, warn) when this is
/// made.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct ClientText(String);

impl ClientText {
    /// `e`, as a client may see it; logs the whole of it, naming `what`
    /// failed.
    pub(crate) fn of(what: &str, e: &Error) -> Self {
        tracing::warn!(error = %e, "{what} failed");
        Self(e.for_client().message.into_owned())
    }
}

/// The MCP error a rate-limited request gets: code [`RATE_LIMITED`], the
/// wait in the message and as `data.retryAfterMs` (rounded up).
#[must_use]
pub fn rate_limited(retry_after: Duration) -> ErrorData {
    let ms = retry_after.as_nanos().div_ceil(1_000_000);
    let ms = u64::try_from(ms).unwrap_or(u64::MAX);
    ErrorData::new(
        RATE_LIMITED,
        format!("rate limited: retry after {ms} ms"),
        Some(serde_json::json!({ "retryAfterMs": ms })),
    )
}

/// The wait a [`rate_limited`] error carries, for clients: `None` for any
/// other error.
#[must_use]
pub fn retry_after(error: &ErrorData) -> Option<Duration> {
    if error.code != RATE_LIMITED {
        return None;
    }
    let ms = error.data.as_ref()?.get("retryAfterMs")?.as_u64()?;
    Some(Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_round_trips_rounded_up_to_the_millisecond() {
        let error = rate_limited(Duration::from_micros(1_200));
        assert_eq!(error.code, RATE_LIMITED);
        assert_eq!(retry_after(&error), Some(Duration::from_millis(2)));
        assert_eq!(
            retry_after(&rate_limited(Duration::from_secs(3))),
            Some(Duration::from_secs(3))
        );
        // Other errors, or this code without the data, carry no wait.
        assert_eq!(retry_after(&ErrorData::from(Error::NoSession)), None);
        assert_eq!(retry_after(&ErrorData::new(RATE_LIMITED, "x", None)), None);
    }

    #[test]
    fn errors_map_to_the_mcp_codes_a_client_can_act_on() {
        let code = |e: Error| ErrorData::from(e).code;
        assert_eq!(code(Error::NoSession), ErrorCode::INVALID_REQUEST);
        assert_eq!(
            code(Error::Store(session_engine::Error::NotFound)),
            ErrorCode::INVALID_REQUEST
        );
        assert_eq!(
            code(Error::Store(session_engine::Error::InvalidArgument {
                reason: "empty topic".into()
            })),
            ErrorCode::INVALID_PARAMS
        );
        assert_eq!(code(Error::Record("bad".into())), ErrorCode::INTERNAL_ERROR);
    }

    /// A server-side failure reaches the client as a kind and whether to
    /// retry, not as the store's text (paths, nodes, replies).
    #[test]
    fn the_stores_own_text_stays_on_the_server() {
        let retryable = |e: &ErrorData| e.data.as_ref().and_then(|d| d["retryable"].as_bool());
        let io = ErrorData::from(Error::Store(session_engine::Error::Io {
            context: "syncing /var/lib/secret-app/sessions/L00000001".into(),
            source: std::io::Error::other("EIO"),
        }));
        assert_eq!(io.code, ErrorCode::INTERNAL_ERROR);
        assert!(!io.message.contains("secret-app"), "{}", io.message);
        assert_eq!(retryable(&io), Some(false));
        let down = ErrorData::from(Error::Store(session_engine::Error::Unavailable {
            reason: "10.0.3.7:6379 refused the connection".into(),
        }));
        assert!(!down.message.contains("10.0.3.7"), "{}", down.message);
        assert_eq!(retryable(&down), Some(true));
        let slow = ErrorData::from(Error::Store(session_engine::Error::TimedOut { after_ms: 1_000 }));
        assert_eq!(retryable(&slow), Some(true));
        let record = ErrorData::from(Error::Record("node-7 wrote format 9".into()));
        assert!(!record.message.contains("node-7"), "{}", record.message);
    }
}
