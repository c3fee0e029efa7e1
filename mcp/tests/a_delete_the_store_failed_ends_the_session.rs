//! A client's `DELETE` ends its session even when the store fails the
//! delete (rmcp answers 202 whatever the store said): the session is gone
//! for this process at once, neither restorable nor served, and the delete
//! is retried until the store has it. Before, the session lived on in the
//! store for whoever held its id, until its timeout. Against one real
//! Redis server, frozen (SIGSTOP) while the delete is sent.

mod support;

use std::time::{Duration, Instant};

use rmcp::transport::streamable_http_server::session::{SessionManager, SessionStore as _};
use session_engine::SessionId;
use session_mcp::{McpConfig, McpSessions};
use session_redis::{RedisConfig, RedisStore};

/// One Redis server, a store on it with `request_timeout`, MCP sessions over
/// it and one initialized session: (server, store, sessions, manager, the
/// session's text and id, its transport).
async fn one_session(
    tag: &str,
    request_timeout: Duration,
) -> (
    support::redis::Server,
    RedisStore,
    McpSessions,
    std::sync::Arc<session_mcp::McpSessionManager>,
    std::sync::Arc<str>,
    SessionId,
    support::Transport,
) {
    let server = support::redis::Server::standalone();
    let store = RedisStore::connect(
        RedisConfig::standalone(server.url())
            .key_prefix(support::redis::unique_prefix(tag))
            .request_timeout(request_timeout),
    )
    .await
    .expect("connect");
    let sessions =
        McpSessions::new(store.clone(), McpConfig::with_timeout(Duration::from_secs(600))).expect("sessions");
    let (manager, text, transport) = support::initialized(&sessions).await;
    let id: SessionId = text.parse().expect("our id");
    (server, store, sessions, manager, text, id, transport)
}

/// Waits until the store answers that `id` is gone (a check that the
/// machine stalled past the store's budget is tried again).
async fn until_gone(store: &RedisStore, id: &SessionId, what: &str) {
    let started = Instant::now();
    loop {
        let there = store.contains(id).await;
        if matches!(there, Ok(false)) {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{what}: {there:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_the_store_failed_ends_the_session_here_and_is_retried() {
    let (server, store, sessions, manager, text, id, transport) =
        one_session("mcp-delete", Duration::from_millis(500)).await;

    server.freeze();
    let deleted = sessions.delete(&text).await;
    assert!(deleted.is_err(), "the store did not answer: {deleted:?}");
    assert!(
        sessions.load(&text).await.expect("no store call").is_none(),
        "restorable after its client's DELETE"
    );
    assert!(
        !manager.has_session(&text).await.expect("has_session"),
        "served after its client's DELETE"
    );
    server.resume();
    until_gone(&store, &id, "the delete was never retried").await;
    drop(transport);
}

/// The same when the `DELETE` request itself is dropped while the store
/// delete waits (the client gave up first: rmcp's own client closes a
/// session within 5 s, less than a store's request timeout may be). The
/// delete was retried only when the store answered an error; dropped before
/// it answered, it was never retried and the session lived on in the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_dropped_while_the_store_waits_is_retried() {
    let (server, store, sessions, manager, text, id, transport) =
        one_session("mcp-delete-dropped", Duration::from_secs(30)).await;

    server.freeze();
    let dropped = tokio::time::timeout(Duration::from_millis(300), sessions.delete(&text)).await;
    assert!(dropped.is_err(), "the frozen store answered: {dropped:?}");
    assert!(
        !manager.has_session(&text).await.expect("has_session"),
        "served after its client's DELETE"
    );
    server.resume();
    until_gone(&store, &id, "the dropped delete was never retried").await;
    drop(transport);
}
