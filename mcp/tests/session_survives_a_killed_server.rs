//! (a) The example server on the embedded engine with a data directory,
//! driven by rmcp's client over HTTP through a balancer: the server process
//! is killed (SIGKILL) and started again, and the client's session goes on
//! under the same `Mcp-Session-Id` with its stored counter. The client's
//! `DELETE` then ends the session in the store. A graceful stop (SIGINT:
//! rmcp closes every session's worker) leaves the sessions in the store too.

mod support;

use session_engine::{Config, Engine, SessionId};
use support::{Balancer, Client, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_and_restarted_server_carries_on_the_session() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = format!("engine:{}", dir.path().display());
    let mut server = Server::start(&["--store", &store, "--name", "first"]);
    let balancer = Balancer::start(server.port).await;
    let client = Client::connect(&balancer.url()).await;

    for expected in 1..=3 {
        assert_eq!(client.counter().await, expected);
    }
    let (session, name) = client.whoami().await;
    assert_eq!(name, "first");
    assert_eq!(session.len(), 22, "our id's text: {session}");

    // The engine flushes its log every second, but a killed process loses
    // nothing that reached the page cache.
    server.restart_after_kill();
    balancer.switch_to(server.port);

    // rmcp's client re-initializes on a 404 only if told to; it is not:
    // these calls succeed only if the new process restored the session.
    assert_eq!(client.counter().await, 4, "the count survived the kill");
    assert_eq!(client.whoami().await, (session.clone(), "first".to_owned()));

    // The client ends the session (HTTP DELETE): gone from the store.
    client.service.cancel().await.expect("close the client");
    server.kill();
    let engine = Engine::open(Config::default().data_dir(dir.path())).expect("open the data dir");
    let id: SessionId = session.parse().expect("our id");
    assert!(!engine.contains(&id), "DELETE left the session in the store");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gracefully_stopped_server_leaves_its_sessions_in_the_store() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = format!("engine:{}", dir.path().display());
    let mut server = Server::start(&["--store", &store, "--name", "first"]);
    let balancer = Balancer::start(server.port).await;
    let client = Client::connect(&balancer.url()).await;
    assert_eq!(client.counter().await, 1);
    assert_eq!(client.counter().await, 2);
    let (session, _) = client.whoami().await;

    // Ctrl-C: rmcp ends every worker (SessionManager::close_session), the
    // server stops; none of that is a DELETE.
    let status = server.restart_after_interrupt();
    assert!(status.success(), "the server's exit after SIGINT: {status}");
    balancer.switch_to(server.port);
    assert_eq!(
        client.counter().await,
        3,
        "the session outlived the graceful stop"
    );
    assert_eq!(client.whoami().await, (session, "first".to_owned()));
}
