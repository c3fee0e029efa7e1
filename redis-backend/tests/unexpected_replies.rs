//! Replies are validated: a reply of the wrong type or value is a protocol
//! error naming the command, never read as an answer (`AlreadyExists`,
//! `NotFound`, "id taken"). And a URL that reaches the wrong kind of server
//! — a cluster node behind `redis://`, a single server behind
//! `redis+cluster://`, or something that is not Redis — fails at `connect`
//! with a message that says so.

mod support;

use std::sync::Arc;

use session_engine::{Error, SessionId, Timeout};
use session_redis::{RedisConfig, RedisStore};
use support::fake::{bulk, name, FakeServer};
use support::Server;

/// True for a typed protocol error that names `command`.
fn is_protocol_error(e: &Error, command: &str) -> bool {
    match e {
        Error::Unavailable { reason } | Error::OutcomeUnknown { reason } => {
            reason.contains("protocol error") && reason.contains(command)
        }
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_answering_42_to_everything_gets_protocol_errors() {
    // Answers INFO like a single Redis server (so connect goes through) and
    // `:42` to everything else.
    let fake = FakeServer::start(Arc::new(|args: &[Vec<u8>]| match name(args).as_str() {
        "INFO" => bulk("# Cluster\r\ncluster_enabled:0\r\n"),
        _ => b":42\r\n".to_vec(),
    }))
    .await;
    let store = RedisStore::connect(RedisConfig::standalone(fake.url()).key_prefix("p:"))
        .await
        .expect("connect: INFO looks like Redis");
    let id = SessionId::from_bytes([9; 16]);
    let cases: Vec<(&str, &str, Result<(), Error>)> = vec![
        (
            "create",
            "insert",
            store.create(b"m", Timeout::from_secs(60)).await.map(drop),
        ),
        (
            "insert",
            "insert",
            store.insert(id, b"m", Timeout::from_secs(60)).await,
        ),
        ("get", "get", store.get(&id).await.map(drop)),
        ("peek", "HMGET", store.peek(&id).await.map(drop)),
        (
            "update",
            "HMGET",
            store.update(&id, |m| m.to_vec()).await.map(drop),
        ),
        ("touch", "touch", store.touch(&id).await),
        (
            "set_ttl",
            "set_ttl",
            store.set_ttl(&id, Timeout::from_secs(5)).await,
        ),
        ("delete", "DEL", store.delete(&id).await),
        ("contains", "EXISTS", store.contains(&id).await.map(drop)),
    ];
    let mut problems = Vec::new();
    for (op, command, r) in cases {
        match r {
            Err(e) if is_protocol_error(&e, command) => {}
            other => problems.push(format!(
                "{op}: {other:?} (expected a protocol error naming {command})"
            )),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wrong_kind_of_server_fails_at_connect() {
    // Not Redis at all.
    let fake = FakeServer::start(Arc::new(|_: &[Vec<u8>]| b":42\r\n".to_vec())).await;
    match RedisStore::connect(RedisConfig::standalone(fake.url())).await {
        Err(Error::InvalidConfig(msg)) => assert!(msg.contains("INFO") && msg.contains("Redis"), "{msg}"),
        other => panic!("a server answering :42 to INFO: {other:?}"),
    }

    // A cluster node behind redis:// (its slots would MOVE most keys away).
    let node = Server::cluster_node(1_000);
    match RedisStore::connect(RedisConfig::from_url(&node.url()).unwrap()).await {
        Err(Error::InvalidConfig(msg)) => assert!(msg.contains("redis+cluster://"), "{msg}"),
        other => panic!("redis:// to a cluster node: {other:?}"),
    }

    // A single server behind redis+cluster://.
    let single = Server::standalone();
    let url = format!("redis+cluster://{}", single.addr());
    match RedisStore::connect(RedisConfig::from_url(&url).unwrap()).await {
        Err(Error::InvalidConfig(msg)) => assert!(msg.contains("redis://"), "{msg}"),
        other => panic!("redis+cluster:// to a single server: {other:?}"),
    }
    // The right scheme works.
    RedisStore::connect(RedisConfig::standalone(single.url()))
        .await
        .expect("redis:// to a single server");
}

/// A server or proxy that refuses `HELLO` otherwise than Redis 5 does (in
/// Redis 4's words, a proxy's, or by closing the connection) is spoken to
/// in RESP2, as before the store spoke RESP3: connecting failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_hello_is_spoken_to_in_resp2() {
    let refusals: [&'static [u8]; 3] = [
        b"-ERR unknown command 'HELLO'\r\n",
        b"-ERR unsupported command\r\n",
        b"",
    ];
    for refusal in refusals {
        let fake = FakeServer::start_raw(Arc::new(move |args: &[Vec<u8>]| match name(args).as_str() {
            "HELLO" => refusal.to_vec(),
            "INFO" => bulk("# Server\r\nredis_version:4.0.14\r\n# Cluster\r\ncluster_enabled:0\r\n"),
            "PING" => b"+PONG\r\n".to_vec(),
            _ => b"-ERR not here\r\n".to_vec(),
        }))
        .await;
        RedisStore::connect(RedisConfig::standalone(fake.url()).key_prefix("p:"))
            .await
            .unwrap_or_else(|e| panic!("HELLO refused with {:?}: {e:?}", String::from_utf8_lossy(refusal)));
    }
}

/// A server whose `SCAN` never moves its cursor (and finds nothing) gets an
/// error, not an empty page that hands back the cursor it was given: a
/// caller paging to the end would loop for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_that_never_moves_is_an_error_not_a_page_that_stays_put() {
    let fake = FakeServer::start(Arc::new(|args: &[Vec<u8>]| match name(args).as_str() {
        "INFO" => bulk("# Server\r\nrun_id:f3c2a1b0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4\r\n# Cluster\r\ncluster_enabled:0\r\n"),
        "SCAN" => b"*2\r\n$1\r\n7\r\n*0\r\n".to_vec(),
        _ => b"-ERR not here\r\n".to_vec(),
    }))
    .await;
    let store = RedisStore::connect(RedisConfig::standalone(fake.url()).key_prefix("p:"))
        .await
        .expect("connect: INFO looks like Redis");
    let mut cursor = session_engine::Cursor::START;
    for _ in 0..3 {
        match store.list(cursor, 10).await {
            Ok(page) => {
                assert!(
                    !page.sessions.is_empty() || page.next != Some(cursor),
                    "an empty page handed back its own cursor {cursor}: the listing loops"
                );
                match page.next {
                    Some(next) => cursor = next,
                    None => return,
                }
            }
            Err(e) => {
                assert!(is_protocol_error(&e, "SCAN"), "{e:?}");
                return;
            }
        }
    }
    panic!("three pages, and the listing neither ended nor failed");
}
