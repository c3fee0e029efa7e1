//! rmcp answers a failed `create_session` or `load` with HTTP 500 and the
//! error's text in the body. That text must be a fixed message by kind,
//! never the store's own (a Redis node's address and reply, a data
//! directory's path), as the crate promises for every server failure a
//! client sees. Against one real Redis server, behind a proxy that refuses
//! a script with a reply naming a node.

mod support;

use std::time::Duration;

use rmcp::transport::streamable_http_server::session::{SessionManager as _, SessionStore as _};
use session_mcp::{McpConfig, McpSessions};
use session_redis::{RedisConfig, RedisStore};
use support::redis::proxy::Proxy;

/// What the refused script's reply names, which no client may see.
const SECRET: &str = "10.0.3.7:6379";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_failures_reach_clients_without_the_stores_text() {
    let server = support::redis::Server::standalone();
    let proxy = Proxy::start(server.port).await;
    let store = RedisStore::connect(
        RedisConfig::standalone(proxy.url())
            .key_prefix(support::redis::unique_prefix("mcp-redact"))
            .request_timeout(Duration::from_secs(5)),
    )
    .await
    .expect("connect");
    let sessions =
        McpSessions::new(store, McpConfig::with_timeout(Duration::from_secs(600))).expect("sessions");
    let refusal = format!("ERR node {SECRET} refused the test's request");

    // rmcp's "create session" 500.
    let (_, insert) = session_redis::script_source("insert").expect("the insert script");
    proxy.refuse(&insert, &refusal);
    let created = sessions.session_manager().create_session().await;
    assert!(proxy.fault_fired());
    let error = created.err().expect("the store refused the create");
    let text = error.to_string();
    assert!(
        !text.contains(SECRET),
        "a client would see the store's text: {text}"
    );
    assert!(text.contains("unavailable"), "the kind is kept: {text}");

    // rmcp's "restore session" 500 (its `load` of a session named by a
    // request: a read, then, the session being restorable, a touch).
    let (_manager, id, _transport) = support::initialized(&sessions).await;
    let (_, touch) = session_redis::script_source("touch").expect("the touch script");
    proxy.refuse(&touch, &refusal);
    let loaded = sessions.load(&id).await;
    assert!(proxy.fault_fired());
    let error = loaded.expect_err("the store refused the load");
    let text = error.to_string();
    assert!(
        !text.contains(SECRET),
        "a client would see the store's text: {text}"
    );
    assert!(text.contains("unavailable"), "the kind is kept: {text}");
}
