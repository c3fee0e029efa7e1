//! The session manager in process, over the embedded engine: requests for a
//! session served here touch the store at most once per interval; a session
//! the store no longer has ends the local worker; a DELETE removes it.

mod support;

use std::sync::Arc;
use std::time::Duration;

use rmcp::model::InitializeRequestParams;
use rmcp::transport::streamable_http_server::session::{
    RestoreOutcome, SessionManager, SessionState, SessionStore as _,
};
use rmcp::transport::Transport as _;
use session_engine::{Config, Engine, ManualClock, SessionId, SessionStore};
use session_mcp::{McpConfig, McpSessions};

fn engine() -> Engine {
    Engine::open(Config::development()).expect("engine")
}

#[tokio::test]
async fn requests_within_the_interval_write_nothing() {
    let engine = engine();
    let config = McpConfig::with_timeout(Duration::from_secs(7200)).touch_interval(Duration::from_secs(3600));
    let sessions = McpSessions::new(engine.clone(), config).expect("sessions");
    let (manager, text, transport) = support::initialized(&sessions).await;
    for _ in 0..100 {
        assert!(manager.has_session(&text).await.expect("has_session"));
    }
    let stats = sessions.touch_stats();
    assert_eq!((stats.written, stats.coalesced), (0, 100), "{stats:?}");
    drop(transport);
}

#[tokio::test]
async fn a_zero_interval_touches_on_every_request_and_slides_the_deadline() {
    let clock = ManualClock::new(1_000_000);
    let engine = Engine::open(Config::development().clock(clock.clock())).expect("engine");
    let config = McpConfig::with_timeout(Duration::from_secs(600)).touch_interval(Duration::ZERO);
    let sessions = McpSessions::new(engine.clone(), config).expect("sessions");
    let (manager, text, transport) = support::initialized(&sessions).await;
    let id: SessionId = text.parse().expect("our id");
    let before = engine.peek(&id).expect("stored").last_access_ms();
    clock.advance(Duration::from_secs(1));
    for _ in 0..10 {
        assert!(manager.has_session(&text).await.expect("has_session"));
    }
    assert_eq!(sessions.touch_stats().written, 10);
    assert_eq!(
        engine.peek(&id).expect("stored").last_access_ms(),
        before + 1_000,
        "touched"
    );
    drop(transport);
}

#[tokio::test]
async fn a_session_gone_from_the_store_ends_its_worker() {
    let engine = engine();
    let config = McpConfig::with_timeout(Duration::from_secs(600)).touch_interval(Duration::ZERO);
    let sessions = McpSessions::new(engine.clone(), config).expect("sessions");
    let (manager, text, transport) = support::initialized(&sessions).await;
    let id: SessionId = text.parse().expect("our id");
    // Deleted through another process (or expired).
    SessionStore::delete(&engine, &id).await.expect("delete");
    assert!(!manager.has_session(&text).await.expect("has_session"));
    // The worker is gone here too (its transport ends: a second
    // `has_session` would say false either way, from the store), and the
    // store has nothing to restore.
    let mut transport = transport;
    let ended = tokio::time::timeout(Duration::from_secs(5), transport.receive()).await;
    assert!(matches!(ended, Ok(None)), "the worker still runs: {ended:?}");
    assert_eq!(sessions.served_here(), 0);
    assert!(sessions.load(&text).await.expect("load").is_none());
}

#[tokio::test]
async fn load_restores_only_our_live_sessions_and_delete_removes_them() {
    let engine = engine();
    let sessions = McpSessions::new(engine.clone(), McpConfig::default()).expect("sessions");
    let manager = sessions.session_manager();
    let (text, transport) = manager.create_session().await.expect("create");
    let params = InitializeRequestParams::default();
    sessions
        .store(&text, &SessionState::new(params.clone()))
        .await
        .expect("store");
    let loaded = sessions.load(&text).await.expect("load").expect("stored");
    assert_eq!(
        serde_json::to_value(&loaded.initialize_params).unwrap(),
        serde_json::to_value(&params).unwrap()
    );
    // Not ids of ours: nothing, not an error.
    for foreign in [
        "",
        "0b7a4a5e-2f5e-4a55-9b58-4a3c1f0e9d11",
        "not an id",
        // 22 characters whose last holds bits past the id's 128: no id
        // writes it (`"A".repeat(22)` is the all-zero id, ours but absent).
        &format!("{}B", "A".repeat(21)),
    ] {
        assert!(
            sessions.load(foreign).await.expect("load").is_none(),
            "{foreign:?}"
        );
    }
    // A session whose bytes are someone else's is an error, not a guess.
    let other = engine
        .create(b"user=1", session_engine::Timeout::from_secs(60))
        .expect("create");
    assert!(sessions.load(&other.to_string()).await.is_err());

    sessions.delete(&text).await.expect("delete");
    assert!(sessions.load(&text).await.expect("load").is_none());
    sessions.delete(&text).await.expect("deleting twice is fine");
    drop(transport);
}

#[tokio::test]
async fn a_session_whose_handshake_never_completed_is_kept_but_not_restored() {
    let engine = engine();
    let config = McpConfig::with_timeout(Duration::from_secs(600)).touch_interval(Duration::ZERO);
    let sessions = McpSessions::new(engine.clone(), config).expect("sessions");
    let manager = sessions.session_manager();
    // Created (in the store, under our id) but rmcp never called `store`.
    let (text, transport) = manager.create_session().await.expect("create");
    let id: SessionId = text.parse().expect("our id");
    assert!(engine.contains(&id), "created in the store first");
    assert!(
        manager.has_session(&text).await.expect("has_session"),
        "touches find it"
    );
    assert!(
        sessions.load(&text).await.expect("load").is_none(),
        "nothing to replay the handshake from"
    );
    // Ending its worker here leaves it in the store (only DELETE removes).
    manager.close_session(&text).await.expect("close");
    assert!(!manager.has_session(&text).await.expect("has_session"));
    assert!(engine.contains(&id), "close_session is not a delete");
    drop(transport);
}

/// A request for a session while its restore is under way here waits for
/// the replayed handshake, then is served by the restored worker. (It was
/// answered "not here", which sent it into rmcp's restore path: if the
/// restore ended meanwhile, that path started a second one, which the local
/// manager refused as already present: HTTP 500.)
#[tokio::test]
async fn a_request_during_a_restore_is_served_once_its_handshake_is_replayed() {
    use rmcp::model::{ClientJsonRpcMessage, ClientNotification, InitializedNotification};
    use rmcp::transport::streamable_http_server::session::RestoreOutcome;

    let engine = engine();
    let first = McpSessions::new(engine.clone(), McpConfig::default()).expect("sessions");
    let (text, _transport) = first.session_manager().create_session().await.expect("create");
    first
        .store(&text, &SessionState::new(InitializeRequestParams::default()))
        .await
        .expect("store");
    // Another process on the same store restores it.
    let second = McpSessions::new(engine.clone(), McpConfig::default()).expect("sessions");
    let manager = second.session_manager();
    let outcome = manager.restore_session(text.clone()).await.expect("restore");
    let RestoreOutcome::Restored(_restored) = outcome else {
        panic!("not restored");
    };
    // Its worker exists here, but the handshake has not been replayed: a
    // request must not reach it yet, nor be turned away.
    let request = tokio::spawn({
        let (manager, text) = (Arc::clone(&manager), text.clone());
        async move { manager.has_session(&text).await.expect("has_session") }
    });
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    assert!(
        !request.is_finished(),
        "answered during the restore: {:?}",
        request.await
    );
    // The replayed `notifications/initialized` ends the restore.
    let initialized = ClientJsonRpcMessage::notification(ClientNotification::InitializedNotification(
        InitializedNotification::default(),
    ));
    manager.accept_message(&text, initialized).await.expect("accept");
    let served = tokio::time::timeout(Duration::from_secs(60), request)
        .await
        .expect("answered once the restore ended")
        .expect("the request's task");
    assert!(served, "served by the restored worker");
    assert!(manager.has_session(&text).await.expect("has_session"));
}

#[tokio::test]
async fn a_load_that_restores_nothing_leaves_nothing_tracked() {
    // A session whose handshake never completed (its creator's process
    // never got to `store`): another process is asked for it, loads it,
    // finds no rmcp state and answers 404. It starts no worker there, so no
    // close ever comes for it: nothing may stay tracked.
    // Nor do the loads count as activity: requests naming it (each a 404)
    // kept it alive for as long as they came.
    let clock = session_engine::ManualClock::new(1_700_000_000_000);
    let engine = Engine::open(Config::development().clock(clock.clock())).expect("engine");
    let config = McpConfig::with_timeout(Duration::from_secs(600));
    let creator = McpSessions::new(engine.clone(), config).expect("sessions");
    let (text, transport) = creator.session_manager().create_session().await.expect("create");
    let id: session_engine::SessionId = text.parse().expect("our id");
    let created = engine.peek(&id).expect("pending").last_access_ms();
    let other = McpSessions::new(engine.clone(), config).expect("sessions");
    for _ in 0..3 {
        clock.advance_ms(1_000);
        assert!(
            other.load(&text).await.expect("load").is_none(),
            "no handshake stored"
        );
    }
    assert_eq!(other.served_here(), 0, "a 404 left an entry behind");
    assert_eq!(
        engine.peek(&id).expect("pending").last_access_ms(),
        created,
        "a load that restores nothing slid the session"
    );
    drop(transport);
}

#[tokio::test]
async fn a_restored_session_is_served_here_until_closed() {
    let engine = engine();
    let config = McpConfig::with_timeout(Duration::from_secs(600));
    let creator = McpSessions::new(engine.clone(), config).expect("sessions");
    let (_, text, transport) = support::initialized(&creator).await;
    let other = McpSessions::new(engine.clone(), config).expect("sessions");
    let manager = other.session_manager();
    assert!(other.load(&text).await.expect("load").is_some());
    let _restored = manager.restore_session(text.clone()).await.expect("restore");
    assert_eq!(other.served_here(), 1, "restored here");
    manager.close_session(&text).await.expect("close");
    assert_eq!(other.served_here(), 0, "closed here");
    drop(transport);
}

/// A session the store lost (deleted through another process, evicted)
/// while a request found it within its touch interval: the first call
/// that meets "not found" stops the coalescing, so the next request asks
/// the store and is told the session is gone (it went on being served for
/// up to an interval, every call failing, and never got the 404 that tells
/// a client to start again).
#[tokio::test]
async fn a_call_that_finds_the_session_gone_ends_the_coalescing() {
    let engine = engine();
    let config = McpConfig::with_timeout(Duration::from_secs(7200)).touch_interval(Duration::from_secs(3600));
    let sessions = McpSessions::new(engine.clone(), config).expect("sessions");
    let (manager, text, transport) = support::initialized(&sessions).await;
    let id: SessionId = text.parse().expect("our id");
    assert!(manager.has_session(&text).await.expect("has_session"));
    engine.delete(&id).expect("deleted elsewhere");
    let r = sessions.subscribe(&id, "file:///a").await;
    assert!(r.is_err(), "{r:?}");
    assert!(
        !manager.has_session(&text).await.expect("has_session"),
        "the next request was served from the coalescing window"
    );
    drop(transport);
}

/// A client's `DELETE` reaching this process between rmcp's `load` of a
/// session served elsewhere and its `restore_session`: the restore must not
/// bring the deleted session back to life here (a worker, a registered
/// client, requests served from the touch coalescing) after its record is
/// gone from the store.
#[tokio::test]
async fn a_delete_between_load_and_restore_is_not_undone() {
    let engine = engine();
    let config = McpConfig::with_timeout(Duration::from_secs(600));
    // Served by another process first.
    let creator = McpSessions::new(engine.clone(), config).expect("sessions");
    let (_creator_manager, text, _creator_transport) = support::initialized(&creator).await;
    let here = McpSessions::new(engine.clone(), config).expect("sessions");
    let manager = here.session_manager();
    // rmcp's restore path here: the load finds the session...
    assert!(here.load(&text).await.expect("load").is_some());
    // ...the client's DELETE arrives here meanwhile (rmcp closes the
    // session, then deletes it from the store)...
    manager.close_session(&text).await.expect("close");
    here.delete(&text).await.expect("delete");
    // ...then the restore goes on.
    let outcome = manager.restore_session(text.clone()).await.expect("restore");
    assert!(
        !matches!(outcome, RestoreOutcome::Restored(_)),
        "a deleted session got a worker here"
    );
    assert!(
        !manager.has_session(&text).await.expect("has_session"),
        "a deleted session is served here"
    );
    assert_eq!(engine.len(), 0, "the record stays deleted");
}
