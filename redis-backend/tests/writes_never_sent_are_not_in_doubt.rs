//! A write that never reached a server is not in doubt: when the store
//! follows an `ASK` to a node whose connection fails before anything is
//! sent there, the write is `Unavailable` (not applied), not
//! `OutcomeUnknown` or `TimedOut` ("may be in"), and no resend treats it
//! as a retry of something that may have run.

mod support;

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

use session_engine::{Error, SessionId, Timeout};
use session_redis::{RedisConfig, RedisStore};
use support::fake::{bulk, name, FakeServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_asked_to_a_node_that_cannot_be_reached_is_not_applied() {
    // The asked node: accepts connections and closes them at once (the
    // connection fails with an I/O error, not a refusal).
    let gone = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let gone_port = gone.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = gone.accept().await {
            drop(socket);
        }
    });
    // A one-node cluster holding every slot, which answers every script
    // and every `DEL` with `ASK` to that node.
    let port = Arc::new(AtomicU16::new(0));
    let me = Arc::clone(&port);
    let node = FakeServer::start(Arc::new(move |args: &[Vec<u8>]| {
        let port = me.load(Ordering::SeqCst);
        match name(args).as_str() {
            "INFO" => bulk("# Server\r\nredis_version:7.0.15\r\n# Cluster\r\ncluster_enabled:1\r\n"),
            "CLUSTER" => format!(
                "*1\r\n*3\r\n:0\r\n:16383\r\n*3\r\n$9\r\n127.0.0.1\r\n:{port}\r\n$40\r\n{}\r\n",
                "a".repeat(40)
            )
            .into_bytes(),
            "PING" => b"+PONG\r\n".to_vec(),
            "SCRIPT" => bulk(&"0".repeat(40)),
            "EVALSHA" | "EVAL" | "DEL" => format!("-ASK 1 127.0.0.1:{gone_port}\r\n").into_bytes(),
            _ => b"+OK\r\n".to_vec(),
        }
    }))
    .await;
    port.store(node.addr.port(), Ordering::SeqCst);
    let store = RedisStore::connect(
        RedisConfig::cluster(vec![format!("redis://127.0.0.1:{}", node.addr.port())])
            .key_prefix("p:")
            .request_timeout(Duration::from_millis(300)),
    )
    .await
    .expect("connect to the fake cluster");
    let id = SessionId::from_bytes([7; 16]);
    for (op, r) in [
        ("insert", store.insert(id, b"m", Timeout::from_secs(60)).await),
        ("put", store.put(id, b"m", Timeout::from_secs(60)).await),
        ("touch", store.touch(&id).await),
        ("delete", store.delete(&id).await),
    ] {
        // `TimedOut` if the deadline cut the last try short while it was
        // connecting (a loaded machine); never a doubt.
        assert!(
            matches!(r, Err(Error::Unavailable { .. } | Error::TimedOut { .. })),
            "{op}: {r:?} (nothing was sent to a server that could apply it)"
        );
    }
}
