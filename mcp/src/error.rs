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
    /// The request carries no `Mcp-Session-Id` naming one of our sessions
    /// (a stateless request, or an id this crate did not issue).
    #[error("the request names no session (no Mcp-Session-Id header of ours)")]
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

impl From<Error> for ErrorData {
    fn from(e: Error) -> Self {
        let message = e.to_string();
        match e {
            Error::NoSession | Error::Store(session_engine::Error::NotFound) => {
                ErrorData::new(ErrorCode::INVALID_REQUEST, message, None)
            }
            Error::Store(
                session_engine::Error::InvalidId(_)
                | session_engine::Error::ValueTooLarge { .. }
                | session_engine::Error::LimitExceeded { .. }
                | session_engine::Error::InvalidArgument { .. },
            ) => ErrorData::new(ErrorCode::INVALID_PARAMS, message, None),
            _ => ErrorData::new(ErrorCode::INTERNAL_ERROR, message, None),
        }
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
}
