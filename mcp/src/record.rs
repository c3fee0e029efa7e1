//! The stored form of an MCP session: the session's metadata in the store.
//!
//! ```text
//! byte 0      RECORD_VERSION (1)
//! bytes 1..   JSON: {"rmcp": <rmcp SessionState> | null, "data": {<key>: <value>, ..}}
//! ```
//!
//! `rmcp` is what rmcp persists to restore a session on another process:
//! today the client's `initialize` parameters (protocol version, client
//! info, capabilities), kept as stored (JSON) so that fields a later rmcp
//! adds survive a rewrite by this build, as do fields a later build of this
//! crate adds to the record.
//! It is `null` from the session's creation until its `initialize`
//! handshake has completed (such a session cannot be restored).
//! `data` is the application's per-session map
//! ([`McpSessions::update_data`](crate::McpSessions::update_data)). JSON,
//! not a binary form: rmcp's types are serde types that only promise JSON.

use rmcp::transport::streamable_http_server::session::SessionState;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::limits::{JSON_DEPTH_MAX, RECORD_VERSION};

/// One stored session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    /// rmcp's restore state once the handshake has completed, as stored
    /// (JSON): a rewrite by this build (a data change) keeps the fields a
    /// later rmcp added, which a typed field dropped during a rolling
    /// upgrade.
    rmcp: Option<Value>,
    /// The application's map.
    #[serde(default)]
    pub data: Map<String, Value>,
    /// Fields a later build of this crate added to the record: kept on a
    /// rewrite, as `rmcp`'s are.
    #[serde(flatten)]
    later: Map<String, Value>,
}

impl Record {
    /// A session created, its handshake not yet complete.
    pub(crate) fn pending() -> Self {
        Self {
            rmcp: None,
            data: Map::new(),
            later: Map::new(),
        }
    }

    /// True once the handshake's state is stored (the session can be
    /// restored).
    pub(crate) fn has_state(&self) -> bool {
        self.rmcp.is_some()
    }

    /// rmcp's state, `None` before the handshake; `Err` if this build's
    /// rmcp cannot read what a later one stored.
    pub(crate) fn state(&self) -> Result<Option<SessionState>> {
        self.rmcp
            .as_ref()
            .map(|v| {
                serde_json::from_value(v.clone())
                    .map_err(|e| Error::Record(format!("rmcp's session state: {e}")))
            })
            .transpose()
    }

    /// Stores the handshake's state.
    pub(crate) fn set_state(&mut self, state: &SessionState) -> Result<()> {
        let value = serde_json::to_value(state).map_err(|e| Error::Record(format!("encode: {e}")))?;
        self.rmcp = Some(value);
        Ok(())
    }

    /// The record's bytes; a record nested deeper than
    /// [`JSON_DEPTH_MAX`] is refused (`InvalidArgument`): `decode` could
    /// never read it back.
    pub(crate) fn encode(&self) -> Result<Vec<u8>> {
        // The record's object, then its members (`data` an object of its own).
        let data = 1 + self.data.values().map(depth).max().unwrap_or(0);
        let deepest = 1 + [self.rmcp.as_ref().map_or(0, depth), data]
            .into_iter()
            .chain(self.later.values().map(depth))
            .max()
            .unwrap_or(0);
        if deepest > JSON_DEPTH_MAX {
            return Err(Error::Store(session_engine::Error::InvalidArgument {
                reason: format!(
                    "a session record nested {deepest} levels deep: stored JSON is read back to {JSON_DEPTH_MAX} \
                     levels (the client's initialize parameters or the session's data nest too deep)"
                ),
            }));
        }
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

/// How deep `value` nests: 0 for a scalar, 1 for an array or object of
/// scalars. Iterative: a value as deep as serde_json builds is no threat
/// to the stack here.
fn depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((value, above)) = stack.pop() {
        match value {
            Value::Array(items) => stack.extend(items.iter().map(|child| (child, above + 1))),
            Value::Object(members) => stack.extend(members.values().map(|child| (child, above + 1))),
            _ => continue,
        }
        deepest = deepest.max(above + 1);
    }
    deepest
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

    /// A value `levels` arrays deep around a number.
    fn nested(levels: usize) -> Value {
        (0..levels).fold(Value::from(0), |v, _| Value::Array(vec![v]))
    }

    /// What is encoded decodes: a record nested deeper than serde_json
    /// reads back (128 levels) is refused when written, with nothing
    /// stored, where it was stored and then unreadable for good (every
    /// restore an error, and a `DELETE` took it for another application's
    /// record and left it).
    #[test]
    fn what_encodes_decodes_or_is_refused() {
        let deepest_readable = crate::limits::JSON_DEPTH_MAX - 2;
        let mut record = Record::pending();
        record.data.insert("k".into(), nested(deepest_readable));
        let bytes = record.encode().expect("deep, but readable");
        assert!(Record::decode(&bytes).is_ok() && Record::is_ours(&bytes));
        record.data.insert("k".into(), nested(deepest_readable + 1));
        match record.encode() {
            Err(Error::Store(session_engine::Error::InvalidArgument { reason })) => {
                assert!(reason.contains("nested"), "{reason}");
            }
            other => panic!("a record decode cannot read was encoded: {other:?}"),
        }
        let mut record = Record::pending();
        record.rmcp = Some(nested(crate::limits::JSON_DEPTH_MAX - 1));
        assert!(Record::decode(&record.encode().expect("readable")).is_ok());
        record.rmcp = Some(nested(crate::limits::JSON_DEPTH_MAX));
        assert!(record.encode().is_err(), "rmcp's state nested too deep");
    }

    #[test]
    fn round_trips_and_refuses_what_it_cannot_read() {
        let mut record = Record::pending();
        record
            .set_state(&SessionState::new(InitializeRequestParams::default()))
            .unwrap();
        record.data.insert("n".into(), Value::from(3));
        let bytes = record.encode().unwrap();
        assert_eq!(bytes[0], RECORD_VERSION);
        let back = Record::decode(&bytes).unwrap();
        assert_eq!(back.data, record.data);
        assert_eq!(
            serde_json::to_value(back.state().unwrap()).unwrap(),
            serde_json::to_value(record.state().unwrap()).unwrap()
        );
        assert!(!Record::decode(&Record::pending().encode().unwrap())
            .unwrap()
            .has_state());
        assert!(matches!(Record::decode(b""), Err(Error::Record(_))));
        assert!(matches!(Record::decode(b"\x02{}"), Err(Error::Record(_))));
        assert!(matches!(Record::decode(b"\x01{not json"), Err(Error::Record(_))));
        // Another application's bytes in the session (JSON but not a record).
        assert!(matches!(Record::decode(b"\x01[1]"), Err(Error::Record(_))));
    }

    /// A record written by a later rmcp (a field its `SessionState` added)
    /// or a later build of this crate (a field of the record) keeps those
    /// fields when this build rewrites it for a data change: the typed
    /// state dropped them, and the later build's restore then lacked them.
    #[test]
    fn a_rewrite_keeps_the_fields_a_later_build_added() {
        let mut written =
            serde_json::to_value(SessionState::new(InitializeRequestParams::default())).unwrap();
        written["added_by_a_later_rmcp"] = Value::from(1);
        let mut bytes = vec![RECORD_VERSION];
        serde_json::to_writer(
            &mut bytes,
            &serde_json::json!({"rmcp": written, "data": {}, "added_by_a_later_build": true}),
        )
        .unwrap();
        let mut record = Record::decode(&bytes).unwrap();
        assert!(record.state().unwrap().is_some(), "this build reads the state");
        record.data.insert("n".into(), Value::from(1));
        let rewritten: Value = serde_json::from_slice(&record.encode().unwrap()[1..]).unwrap();
        assert_eq!(rewritten["rmcp"]["added_by_a_later_rmcp"], 1, "{rewritten}");
        assert_eq!(rewritten["added_by_a_later_build"], true, "{rewritten}");
        assert_eq!(rewritten["data"]["n"], 1);
    }
}
