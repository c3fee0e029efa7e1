//! rmcp writes a session's restore state once its handshake completes, and
//! ignores the store's error. A write the store failed (refused, unavailable)
//! is retried in the background, keeping the session's data: the session
//! becomes restorable on another process. Before, it stayed without its
//! state, and every other process answered its client 404 (a store error
//! turned into a silent session drop). Against one real Redis server, behind
//! a proxy that refuses the write once.

mod support;

use std::time::{Duration, Instant};

use rmcp::model::InitializeRequestParams;
use rmcp::transport::streamable_http_server::session::{SessionManager, SessionState, SessionStore as _};
use session_mcp::{McpConfig, McpSessions};
use session_redis::{RedisConfig, RedisStore};
use support::redis::proxy::Proxy;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_the_store_failed_is_written_later() {
    let server = support::redis::Server::standalone();
    let proxy = Proxy::start(server.port).await;
    let prefix = support::redis::unique_prefix("mcp-state");
    let connect = |url: String| {
        RedisStore::connect(
            RedisConfig::standalone(url)
                .key_prefix(prefix.clone())
                .request_timeout(Duration::from_secs(5)),
        )
    };
    let config = McpConfig::with_timeout(Duration::from_secs(600));
    let here = McpSessions::new(connect(proxy.url()).await.expect("connect"), config).expect("sessions");
    let manager = here.session_manager();
    let (text, _transport) = manager.create_session().await.expect("create");
    let id: session_engine::SessionId = text.parse().expect("our id");
    here.update_data(&id, |data| {
        data.insert("kept".into(), 1.into());
    })
    .await
    .expect("data before the handshake's write");

    // The handshake's write is a `try_update` (it keeps the data map): on
    // Redis, the commit script.
    let (_, commit) = session_redis::script_source("commit").expect("the commit script");
    proxy.refuse(&commit, "ERR refused by the test");
    let stored = here
        .store(&text, &SessionState::new(InitializeRequestParams::default()))
        .await;
    assert!(proxy.fault_fired());
    assert!(stored.is_err(), "the write was refused: {stored:?}");

    let elsewhere =
        McpSessions::new(connect(server.url()).await.expect("connect"), config).expect("sessions");
    let started = Instant::now();
    while elsewhere.load(&text).await.expect("load").is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the session never became restorable"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let data = elsewhere.data(&id).await.expect("data");
    assert_eq!(
        data.get("kept"),
        Some(&1.into()),
        "the data map was kept: {data:?}"
    );
}

/// A handshake write the store refuses for good (a client's `initialize`
/// too large for the store's metadata limit) is not retried: each such
/// handshake left a task retrying it until the session's timeout (30
/// minutes by default), so a client sending them in a loop grew the tasks,
/// and their store traffic, without bound.
#[tokio::test(flavor = "current_thread")]
async fn a_handshake_write_refused_for_good_is_not_retried() {
    let engine =
        session_engine::Engine::open(session_engine::Config::development().metadata_bytes_max(4 * 1024))
            .expect("engine");
    let sessions =
        McpSessions::new(engine, McpConfig::with_timeout(Duration::from_secs(600))).expect("sessions");
    let manager = sessions.session_manager();
    let (text, _transport) = manager.create_session().await.expect("create");
    let tasks = tokio::runtime::Handle::current().metrics().num_alive_tasks();
    let mut params = InitializeRequestParams::default();
    params.client_info.name = "x".repeat(100_000);
    let stored = sessions.store(&text, &SessionState::new(params)).await;
    assert!(stored.is_err(), "over the metadata limit: {stored:?}");
    assert_eq!(
        tokio::runtime::Handle::current().metrics().num_alive_tasks(),
        tasks,
        "a task was left retrying a write that can never succeed"
    );
}
