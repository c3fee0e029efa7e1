//! An `ASK` redirect names the node a key moved to as Redis names nodes to
//! clients: `<endpoint>:<port>`, where the endpoint is a hostname when the
//! cluster announces hostnames (`cluster-preferred-endpoint-type hostname`,
//! Redis 7), and an IPv6 address without brackets. The store follows it
//! whatever the endpoint; before, it parsed the address as a socket
//! address, which fails for both, and resent the request to the old master
//! (answering `ASK` again) until the request timeout ran out.

mod support;

use std::time::Duration;

use session_engine::{SessionId, Timeout};
use session_redis::{RedisConfig, RedisStore};
use support::{shard_of, Cluster};

const TTL: Timeout = Timeout::from_secs(600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ask_naming_a_hostname_is_followed() {
    let cluster = Cluster::start(60_000);
    for node in &cluster.nodes {
        for (name, value) in [
            ("cluster-announce-hostname", "localhost"),
            ("cluster-preferred-endpoint-type", "hostname"),
        ] {
            assert_eq!(node.cli(&["CONFIG", "SET", name, value]).trim(), "OK");
        }
    }
    // Every node names every node by its hostname (gossiped): the first
    // field of each of the 6 node entries of `CLUSTER SLOTS`, and the
    // `hostname` field beside it.
    support::wait_for("hostnames gossiped", Duration::from_secs(30), || {
        cluster
            .nodes
            .iter()
            .all(|node| node.cli(&["CLUSTER", "SLOTS"]).matches("localhost").count() >= 6)
    });
    let firsts = cluster.first_slots();
    let store = RedisStore::connect(
        RedisConfig::cluster(cluster.urls()).key_prefix(support::unique_prefix("ask-host")),
    )
    .await
    .expect("connect");
    let mut ids: Vec<SessionId> = Vec::new();
    let moved = loop {
        let id = store.create(b"moving", TTL).await.expect("create");
        ids.push(id);
        if shard_of(&firsts, store.slot(&id)) == firsts[0] {
            break id;
        }
    };
    let from = cluster.master_of(firsts[0]).expect("first master");
    let to = cluster.master_of(firsts[1]).expect("second master");
    let key = store.key(&moved);
    cluster.migrate_key(store.slot(&moved), &key, from, to, false);
    let asked = cluster.nodes[from].cli(&["HGETALL", &key]);
    assert!(asked.contains("ASK") && asked.contains("localhost:"), "{asked}");

    support::assert_moved_session_serves(&store, &moved, &ids).await;
}
