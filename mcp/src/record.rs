//! The stored form of an MCP session: the session's metadata in the store.
//!
//! ```text
//! byte 0      RECORD_VERSION (1)
//! bytes 1..   JSON: {"rmcp": <rmcp SessionState> | null, "data": {<key>: <value>, ..}}
//! ```
//!
//! `rmcp` is what rmcp persists to restore a session on another process:
//! today the client's `initialize` parameters (protocol version, client
//! info, capabilities), kept whole so that fields a later rmcp adds survive.
//! It is `null` from the session's creation until its `initialize`
//! handshake has completed (such a session cannot be restored).
//! `data` is the application's per-session map
//! ([`McpSessions::update_data`](crate::McpSessions::update_data)). JSON,
//! not a binary form: rmcp's types are serde types that only promise JSON.

use rmcp::transport::streamable_http_server::session::SessionState;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::limits::RECORD_VERSION;

/// One stored session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    /// rmcp's restore state, once the handshake has completed.
    pub rmcp: Option<SessionState>,
    /// The application's map.
    #[serde(default)]
    pub data: Map<String, Value>,
}

impl Record {
    /// A session created, its handshake not yet complete.
    pub(crate) fn pending() -> Self {
        Self {
            rmcp: None,
            data: Map::new(),
        }
    }

    pub(crate) fn encode(&self) -> Result<Vec<u8>> {
        let mut out = vec![RECORD_VERSION];
        serde_json::to_writer(&mut out, self).map_err(|e| Error::Record(format!("encode: {e}")))?;
        Ok(out)
    }

    /// True if `bytes` are an MCP session's record, of this build's form
    /// or a later one's (a rolling upgrade's): a version byte of ours or
    /// later, then a JSON object with an `rmcp` member. What a `DELETE`
    /// checks before it removes a session; reading one is `decode`'s.
    pub(crate) fn is_ours(bytes: &[u8]) -> bool {
        match bytes.split_first() {
            Some((&v, json)) if v >= RECORD_VERSION => {
                serde_json::from_slice::<Map<String, Value>>(json).is_ok_and(|m| m.contains_key("rmcp"))
            }
            _ => false,
        }
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self> {
        match bytes.split_first() {
            Some((&RECORD_VERSION, json)) => {
                serde_json::from_slice(json).map_err(|e| Error::Record(format!("{} bytes: {e}", bytes.len())))
            }
            Some((v, _)) => Err(Error::Record(format!(
                "version byte {v}, this build reads {RECORD_VERSION}"
            ))),
            None => Err(Error::Record("empty metadata".to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use rmcp::model::InitializeRequestParams;

    use super::*;

    #[test]
    fn a_record_of_a_later_version_is_still_ours() {
        assert!(Record::is_ours(&Record::pending().encode().unwrap()));
        let mut later = vec![RECORD_VERSION + 1];
        later.extend_from_slice(br#"{"rmcp":null,"data":{},"added":1}"#);
        assert!(Record::is_ours(&later));
        assert!(
            Record::decode(&later).is_err(),
            "not readable here, ours all the same"
        );
        for foreign in [&b"user=1"[..], b"", b"\x01\x81\xa1a\x01", b"\x01{\"data\":{}}"] {
            assert!(!Record::is_ours(foreign), "{foreign:?}");
        }
    }

    #[test]
    fn round_trips_and_refuses_what_it_cannot_read() {
        let mut record = Record {
            rmcp: Some(SessionState::new(InitializeRequestParams::default())),
            data: Map::new(),
        };
        record.data.insert("n".into(), Value::from(3));
        let bytes = record.encode().unwrap();
        assert_eq!(bytes[0], RECORD_VERSION);
        let back = Record::decode(&bytes).unwrap();
        assert_eq!(back.data, record.data);
        assert_eq!(
            serde_json::to_value(&back.rmcp).unwrap(),
            serde_json::to_value(&record.rmcp).unwrap()
        );
        assert!(Record::decode(&Record::pending().encode().unwrap())
            .unwrap()
            .rmcp
            .is_none());
        assert!(matches!(Record::decode(b""), Err(Error::Record(_))));
        assert!(matches!(Record::decode(b"\x02{}"), Err(Error::Record(_))));
        assert!(matches!(Record::decode(b"\x01{not json"), Err(Error::Record(_))));
        // Another application's bytes in the session (JSON but not a record).
        assert!(matches!(Record::decode(b"\x01[1]"), Err(Error::Record(_))));
    }
}
