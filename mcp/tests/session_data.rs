//! The application's per-session map and the configuration checks, in
//! process over the embedded engine.

mod support;

use std::time::Duration;

use rmcp::transport::streamable_http_server::session::SessionStore as _;
use serde_json::Value;
use session_engine::{Config, Engine, SessionId, SessionStore, Timeout};
use session_mcp::{Error, McpConfig, McpSessions};

fn engine() -> Engine {
    Engine::open(Config::development()).expect("engine")
}

#[tokio::test]
async fn update_data_changes_the_map_and_keeps_rmcps_state() {
    let engine = engine();
    let sessions = McpSessions::new(engine.clone(), McpConfig::default()).expect("sessions");
    let (_manager, text, transport) = support::initialized(&sessions).await;
    let id: SessionId = text.parse().expect("our id");
    for expected in 1..=3u64 {
        let n = sessions
            .update_data(&id, |data| {
                let n = data.get("n").and_then(Value::as_u64).unwrap_or(0) + 1;
                data.insert("n".into(), n.into());
                n
            })
            .await
            .expect("update");
        assert_eq!(n, expected);
    }
    assert_eq!(sessions.data(&id).await.expect("data")["n"], 3);
    assert!(
        sessions.load(&text).await.expect("load").is_some(),
        "rmcp's state kept"
    );
    drop(transport);
}

#[tokio::test]
async fn update_data_refuses_what_is_not_ours_and_writes_nothing() {
    let engine = engine();
    let sessions = McpSessions::new(engine.clone(), McpConfig::default()).expect("sessions");
    let other = engine.create(b"user=1", Timeout::from_secs(60)).expect("create");
    let result = sessions.update_data(&other, |_| ()).await;
    assert!(matches!(result, Err(Error::Record(_))), "{result:?}");
    assert_eq!(engine.peek(&other).expect("there").metadata(), b"user=1");
    let gone = SessionId::from_bytes([7; 16]);
    let result = sessions.update_data(&gone, |_| ()).await;
    assert!(
        matches!(result, Err(Error::Store(session_engine::Error::NotFound))),
        "{result:?}"
    );
    SessionStore::delete(&engine, &other).await.expect("delete");
}

/// Data nested deeper than a stored record is read back is refused, and
/// the session stays as it was (readable, restorable, deleted by a
/// `DELETE`); it was stored, and every read of the session failed after.
#[tokio::test]
async fn update_data_refuses_a_value_nested_past_what_is_read_back() {
    let engine = engine();
    let sessions = McpSessions::new(engine.clone(), McpConfig::default()).expect("sessions");
    let (_manager, text, transport) = support::initialized(&sessions).await;
    let id: SessionId = text.parse().expect("our id");
    let deep = (0..126).fold(Value::from(0), |v, _| Value::Array(vec![v]));
    let result = sessions
        .update_data(&id, |data| {
            data.insert("deep".into(), deep.clone());
        })
        .await;
    assert!(
        matches!(
            result,
            Err(Error::Store(session_engine::Error::InvalidArgument { .. }))
        ),
        "{result:?}"
    );
    assert!(sessions.data(&id).await.expect("still readable").is_empty());
    assert!(sessions.load(&text).await.expect("load").is_some(), "restorable");
    sessions.delete(&text).await.expect("DELETE");
    assert!(engine.peek(&id).unwrap_err().is_not_found(), "deleted");
    drop(transport);
}

/// A client's `DELETE` (rmcp's `SessionStore::delete`) removes an MCP
/// session, and leaves alone a session of the same store that is not one
/// (a web session of the same id format, in a store shared with it): the
/// header's id is the client's word, not proof the session is an MCP one.
#[tokio::test]
async fn a_delete_removes_our_sessions_only() {
    let engine = engine();
    let sessions = McpSessions::new(engine.clone(), McpConfig::default()).expect("sessions");
    let other = engine.create(b"user=1", Timeout::from_secs(60)).expect("create");
    sessions
        .delete(&other.to_string())
        .await
        .expect("a delete answers");
    assert_eq!(
        engine.peek(&other).expect("left alone").metadata(),
        b"user=1",
        "a session that is not an MCP one is not deleted"
    );
    let (_manager, text, transport) = support::initialized(&sessions).await;
    let ours: SessionId = text.parse().expect("our id");
    sessions.delete(&text).await.expect("delete");
    assert!(!engine.contains(&ours), "an MCP session is deleted");
    drop(transport);
}

#[test]
fn a_touch_interval_not_shorter_than_the_timeout_is_refused() {
    let timeout = Duration::from_secs(60);
    for interval in [timeout, timeout * 2] {
        let config = McpConfig::with_timeout(timeout).touch_interval(interval);
        let result = McpSessions::new(engine(), config);
        assert!(
            matches!(result, Err(Error::Store(session_engine::Error::InvalidConfig(_)))),
            "{interval:?}: {result:?}"
        );
    }
    assert!(McpSessions::new(engine(), McpConfig::with_timeout(Duration::ZERO)).is_err());
    assert!(McpSessions::new(engine(), McpConfig::with_timeout(timeout)).is_ok());
    // The store keeps whole milliseconds: an interval that is shorter only
    // by a fraction of one is not shorter there.
    let fraction =
        McpConfig::with_timeout(Duration::from_micros(10_900)).touch_interval(Duration::from_micros(10_500));
    assert!(McpSessions::new(engine(), fraction).is_err());
}

#[test]
fn a_worker_kept_no_time_at_all_is_refused() {
    // rmcp's worker would end at once, and every request restore it.
    let config = McpConfig::with_timeout(Duration::from_secs(60)).local_keep_alive(Duration::ZERO);
    let result = McpSessions::new(engine(), config);
    assert!(
        matches!(result, Err(Error::Store(session_engine::Error::InvalidConfig(ref m))) if m.contains("local_keep_alive")),
        "{result:?}"
    );
}

/// Every call hands out the same session manager while it is held: two
/// managers over one `McpSessions` shared its record of which sessions are
/// served here, and one closing a session made the other's client lose its
/// touches and its notifications.
#[tokio::test]
async fn one_session_manager_per_sessions() {
    let sessions = McpSessions::new(engine(), McpConfig::default()).expect("sessions");
    let first = sessions.session_manager();
    assert!(std::sync::Arc::ptr_eq(&first, &sessions.session_manager()));
    drop(first);
    let _again = sessions.session_manager();
}

/// rmcp's `store` (the handshake's state) keeps the session's data map and
/// does not bring back a session that is gone: it wrote a whole record
/// (`put`), the map empty, and recreated a session deleted meanwhile.
#[tokio::test]
async fn storing_rmcps_state_keeps_the_data_and_no_deleted_session_comes_back() {
    let engine = engine();
    let sessions = McpSessions::new(engine.clone(), McpConfig::default()).expect("sessions");
    let (_manager, text, transport) = support::initialized(&sessions).await;
    let id: SessionId = text.parse().expect("our id");
    sessions
        .update_data(&id, |data| {
            data.insert("kept".into(), 1.into());
        })
        .await
        .expect("update");
    let state = rmcp::transport::streamable_http_server::session::SessionState::new(
        rmcp::model::InitializeRequestParams::default(),
    );
    sessions.store(&text, &state).await.expect("store");
    assert_eq!(sessions.data(&id).await.expect("data")["kept"], 1);
    SessionStore::delete(&engine, &id).await.expect("delete");
    assert!(
        sessions.store(&text, &state).await.is_err(),
        "a store of a deleted session"
    );
    assert!(!engine.contains(&id), "the deleted session came back");
    drop(transport);
}
