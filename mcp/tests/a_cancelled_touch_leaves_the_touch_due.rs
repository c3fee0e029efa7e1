//! A request whose touch of the store is cancelled before the store answers
//! (its client went away, a timeout in front of the server dropped it, the
//! store was in a failover's backoff) leaves the touch due: the next request
//! touches. Before, the claim stood as if the touch had been written, and
//! every request of the next interval skipped its touch, so a session used
//! steadily could expire sooner than `timeout - touch_interval` after its
//! last real touch. Against one real Redis server, behind a proxy that
//! wedges the connection.

mod support;

use std::time::Duration;

use rmcp::transport::streamable_http_server::session::SessionManager as _;
use session_mcp::{McpConfig, McpSessions};
use session_redis::{RedisConfig, RedisStore};
use support::redis::proxy::Proxy;

/// How long a request may wait on the wedged store before its caller gives
/// up (the cancellation under test).
const GIVE_UP: Duration = Duration::from_millis(200);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_touch_leaves_the_touch_due() {
    let server = support::redis::Server::standalone();
    let proxy = Proxy::start(server.port).await;
    let store = RedisStore::connect(
        RedisConfig::standalone(proxy.url())
            .key_prefix(support::redis::unique_prefix("mcp-cancel"))
            .request_timeout(Duration::from_secs(30)),
    )
    .await
    .expect("connect");
    let config = McpConfig::with_timeout(Duration::from_secs(600)).touch_interval(Duration::from_secs(1));
    let sessions = McpSessions::new(store, config).expect("sessions");
    let (manager, text, _transport) = support::initialized(&sessions).await;
    tokio::time::sleep(Duration::from_millis(1_100)).await; // a touch is due

    proxy.wedge(); // the touch never reaches Redis
    let before = sessions.touch_stats();
    let first = tokio::time::timeout(GIVE_UP, manager.has_session(&text)).await;
    assert!(first.is_err(), "the wedged touch answered: {first:?}");
    let after_first = sessions.touch_stats();
    assert_eq!(
        after_first.written,
        before.written + 1,
        "the first request claimed the touch"
    );

    // The next request, well within the interval of the cancelled claim,
    // must find the touch still due and try it.
    let second = tokio::time::timeout(GIVE_UP, manager.has_session(&text)).await;
    assert!(second.is_err(), "the wedged touch answered: {second:?}");
    let after = sessions.touch_stats();
    assert_eq!(
        after.coalesced, after_first.coalesced,
        "the request after a cancelled touch skipped its own: {after:?}"
    );
    assert_eq!(after.written, after_first.written + 1, "{after:?}");
    assert_eq!(
        after.failed,
        after_first.failed + 1,
        "a cancelled touch counts as failed: {after:?}"
    );
}
