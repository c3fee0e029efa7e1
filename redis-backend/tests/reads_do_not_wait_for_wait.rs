//! With `Replication::Wait`, reads never queue behind a write's `WAIT`.
//! Redis runs a connection's commands in order and holds everything behind
//! a blocked `WAIT`, so reads that shared the writes' connection would wait
//! for the replicas too: with a master that has lost its replica, each
//! write there holds its connection for the whole `WAIT` timeout, and the
//! reads on that master would crawl.
//!
//! Each case: a master with no replica to answer `WAIT`, a write blocked in
//! its `WAIT` (the server reports a blocked client: an event, not a sleep),
//! then reads of a session on the same master must come back while that
//! `WAIT` still blocks. The `WAIT` timeout (5 s) is far longer than a read,
//! so the check does not depend on the machine's speed.

mod support;

use std::time::Duration;

use session_engine::{Error, SessionId, Timeout};
use session_redis::{RedisConfig, RedisStore, Replication};
use support::{Cluster, Server};

const WAIT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(8);

fn wait_preset(config: RedisConfig) -> RedisConfig {
    config
        .key_prefix(support::unique_prefix("nowait"))
        .request_timeout(REQUEST_TIMEOUT)
        .replication(Replication::Wait {
            replicas: 1,
            timeout: WAIT_TIMEOUT,
        })
}

fn blocked_clients(server: &Server) -> u64 {
    server
        .info_field("clients", "blocked_clients")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Starts a write of `write_id` (stuck in `WAIT`), then reads `read_id`
/// while the server still reports the `WAIT` blocking.
async fn reads_pass_a_blocked_wait(
    store: &RedisStore,
    master: &Server,
    write_id: SessionId,
    read_id: SessionId,
) {
    let writer = {
        let store = store.clone();
        tokio::spawn(async move { store.update(&write_id, |m| [m, b"+"].concat()).await })
    };
    tokio::task::block_in_place(|| {
        support::wait_for("a WAIT blocking on the master", Duration::from_secs(10), || {
            blocked_clients(master) >= 1
        })
    });
    for _ in 0..3 {
        store.get(&read_id).await.expect("get");
        store.peek(&read_id).await.expect("peek");
        assert!(store.contains(&read_id).await.expect("contains"));
    }
    assert!(
        blocked_clients(master) >= 1,
        "the reads came back only after the write's WAIT ended: they queued behind it"
    );
    match writer.await.expect("writer") {
        Err(Error::OutcomeUnknown { reason }) => assert!(reason.contains("replica"), "{reason}"),
        other => panic!("a write no replica confirmed: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_reads_do_not_wait_for_a_blocked_wait() {
    // No replica at all: every WAIT runs to its timeout.
    let master = Server::standalone();
    let store = RedisStore::connect(wait_preset(RedisConfig::standalone(master.url())))
        .await
        .expect("connect");
    // Written before any WAIT could block (the shortfall is expected).
    let a = SessionId::from_bytes([1; 16]);
    let b = SessionId::from_bytes([2; 16]);
    for id in [a, b] {
        assert_eq!(
            master
                .cli(&[
                    "HSET",
                    &store.key(&id),
                    "m",
                    "x",
                    "c",
                    "1",
                    "a",
                    "1",
                    "t",
                    "0",
                    "v",
                    "7"
                ])
                .trim(),
            "5"
        );
    }
    reads_pass_a_blocked_wait(&store, &master, a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_reads_do_not_wait_for_a_blocked_wait() {
    let mut cluster = Cluster::start(1_000);
    let firsts = cluster.first_slots();
    let store = RedisStore::connect(wait_preset(RedisConfig::cluster(cluster.urls())))
        .await
        .expect("connect");
    // Two sessions on the first shard, written while its replica answers.
    let mut on_first = Vec::new();
    while on_first.len() < 2 {
        let id = store.create(b"x", Timeout::from_secs(600)).await.expect("create");
        if u32::from(store.slot(&id)) < firsts[1] {
            on_first.push(id);
        }
    }
    let master = cluster.master_of(firsts[0]).expect("master");
    let replica = cluster.replica_of(master).expect("replica");
    cluster.nodes[replica].kill9();
    let master = &cluster.nodes[master];
    tokio::task::block_in_place(|| {
        support::wait_for("the master without replica", Duration::from_secs(20), || {
            master.info_field("replication", "connected_slaves").as_deref() == Some("0")
        })
    });
    reads_pass_a_blocked_wait(&store, master, on_first[0], on_first[1]).await;
}
