//! A connection the server closed while the store had nothing in flight
//! on it (a server `timeout`, a proxy's or cloud's idle limit, a restart,
//! `CLIENT KILL`) is replaced before the next request needs it: the next
//! writes run once, on a fresh connection, and are answered, not put in
//! doubt. (A send on a closed connection and a request cut off in flight
//! fail alike in the `redis` crate, so a write sent on the dead connection
//! would have to be reported `OutcomeUnknown`: a delete that deletes
//! nothing, an insert of a new id that stores nothing.) Against one server
//! and a 6-node cluster, whose direct routes and cluster client are both
//! closed, and the store's own connections to a node an `ASK` named.

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use session_engine::{SessionId, Timeout};
use session_redis::{RedisConfig, RedisStore};
use support::{cli, create_named, metadata, shard_of, Cluster, Server};

const TTL: Timeout = Timeout::from_secs(600);
/// The request budget where how soon is not what a test checks.
const LONG_BUDGET: Duration = Duration::from_secs(10);
/// How long the store may take to notice the closed connections and
/// connect again: far above any stall of a loaded test machine. The test
/// goes on once it has (or at this limit, to show what the writes do).
const RECONNECT_LIMIT: Duration = Duration::from_secs(10);

/// The ids of the normal client connections at `port`, but the `redis-cli`
/// that asks.
fn client_ids(port: u16) -> HashSet<u64> {
    cli(port, &["CLIENT", "LIST", "TYPE", "normal"])
        .lines()
        .filter(|l| !l.contains("cmd=client|list"))
        .filter_map(|l| l.strip_prefix("id=")?.split(' ').next()?.parse().ok())
        .collect()
}

/// Closes every client connection at `ports` from the server's side and
/// waits until each port has a connection that was not there before (the
/// store connected again), or [`RECONNECT_LIMIT`].
async fn close_from_the_server(ports: &[u16]) {
    let before: Vec<HashSet<u64>> = ports.iter().map(|&p| client_ids(p)).collect();
    assert!(
        before.iter().all(|ids| !ids.is_empty()),
        "the store has a connection to every node"
    );
    for &port in ports {
        let killed = cli(port, &["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"]);
        assert!(
            killed.trim().parse::<u32>().is_ok_and(|n| n > 0),
            "killed {killed:?}"
        );
    }
    let started = Instant::now();
    while started.elapsed() < RECONNECT_LIMIT {
        let again = ports
            .iter()
            .zip(&before)
            .all(|(&p, old)| client_ids(p).difference(old).next().is_some());
        if again {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// After the connections closed: deleting a session deletes it, inserting
/// and putting a new id stores it, each answered `Ok`.
async fn writes_are_answered(store: &RedisStore, kept: &[SessionId]) {
    for (i, id) in kept.iter().enumerate() {
        store
            .delete(id)
            .await
            .unwrap_or_else(|e| panic!("delete {i}: {e:?}"));
        assert!(!store.contains(id).await.expect("contains"), "deleted {i}");
        let fresh = SessionId::random().expect("random id");
        store
            .insert(fresh, b"new", TTL)
            .await
            .unwrap_or_else(|e| panic!("insert after {i}: {e:?}"));
        assert_eq!(metadata(&store.peek(&fresh).await), Some(&b"new"[..]));
        let put = SessionId::random().expect("random id");
        store
            .put(put, b"put", TTL)
            .await
            .unwrap_or_else(|e| panic!("put after {i}: {e:?}"));
        assert_eq!(metadata(&store.peek(&put).await), Some(&b"put"[..]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_server_writes_after_its_connection_was_closed() {
    let server = Server::standalone();
    let store = RedisStore::connect(
        RedisConfig::standalone(server.url())
            .key_prefix(support::unique_prefix("idle"))
            .request_timeout(LONG_BUDGET),
    )
    .await
    .expect("connect");
    let kept = create_named(&store, 1).await;
    close_from_the_server(&[server.port]).await;
    writes_are_answered(&store, &kept).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_writes_after_its_connections_were_closed() {
    let cluster = Cluster::start(5_000);
    let store = RedisStore::connect(
        support::cluster_preset(cluster.urls()).key_prefix(support::unique_prefix("idle")),
    )
    .await
    .expect("connect");
    // Sessions on every master, so that every direct route is used.
    let kept = create_named(&store, 12).await;
    let masters: Vec<u16> = cluster
        .first_slots()
        .iter()
        .map(|&slot| cluster.nodes[cluster.master_of(slot).expect("a master")].port)
        .collect();
    let marked = store.routes_marked_stale();
    close_from_the_server(&masters).await;
    writes_are_answered(&store, &kept).await;
    // Each master's route was marked stale when its connection closed,
    // and counted.
    assert!(
        store.routes_marked_stale() >= marked + masters.len() as u64,
        "{} routes marked stale, {marked} before",
        store.routes_marked_stale()
    );
}

/// The store speaks RESP3 unless the URL names a protocol: `?protocol=resp2`
/// (a proxy without `HELLO`) is spoken to as asked, and works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_protocol_is_resp3_unless_the_url_names_one() {
    let server = Server::standalone();
    let protocols = |port: u16| -> Vec<String> {
        cli(port, &["CLIENT", "LIST", "TYPE", "normal"])
            .lines()
            .filter(|l| !l.contains("cmd=client|list"))
            .filter_map(|l| {
                l.split(' ')
                    .find_map(|f| f.strip_prefix("resp="))
                    .map(str::to_owned)
            })
            .collect()
    };
    let store = RedisStore::connect(RedisConfig::standalone(server.url()))
        .await
        .expect("connect");
    assert_eq!(protocols(server.port), ["3"]);
    drop(store);
    support::wait_for("the store's connection closed", LONG_BUDGET, || {
        protocols(server.port).is_empty()
    });
    let url = format!("{}/0?protocol=resp2", server.url());
    let store = RedisStore::connect(RedisConfig::from_url(&url).expect("url"))
        .await
        .expect("connect");
    assert_eq!(protocols(server.port), ["2"]);
    let id = store.create(b"in resp2", TTL).await.expect("create");
    assert_eq!(metadata(&store.get(&id).await), Some(&b"in resp2"[..]));
}

/// The store's own connections to a node an `ASK` named (a slot being
/// migrated), kept for the next redirect: one the server closed is not
/// written on again; the next write connects afresh and is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_connection_to_an_asked_node_is_not_written_on() {
    let cluster = Cluster::start(60_000);
    let firsts = cluster.first_slots();
    let store = RedisStore::connect(
        support::cluster_preset(cluster.urls()).key_prefix(support::unique_prefix("idle-ask")),
    )
    .await
    .expect("connect");
    let moved = loop {
        let id = store.create(b"moving", TTL).await.expect("create");
        if shard_of(&firsts, store.slot(&id)) == firsts[0] {
            break id;
        }
    };
    let from = cluster.master_of(firsts[0]).expect("first master");
    let to = cluster.master_of(firsts[1]).expect("second master");
    cluster.migrate_key(store.slot(&moved), &store.key(&moved), from, to, false);
    // A read and a write follow the ASK on connections of the store's own.
    assert_eq!(metadata(&store.get(&moved).await), Some(&b"moving"[..]));
    store.touch(&moved).await.expect("touch through the ASK");
    assert!(store.debug_asked_connections_open() > 0, "asked connections kept");

    let killed = cluster.nodes[to].cli(&["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"]);
    assert!(
        killed.trim().parse::<u32>().is_ok_and(|n| n > 0),
        "killed {killed:?}"
    );
    let started = Instant::now();
    while store.debug_asked_connections_open() > 0 && started.elapsed() < RECONNECT_LIMIT {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    store.delete(&moved).await.expect("delete after the close");
    assert!(!store.contains(&moved).await.expect("contains"), "deleted");
}
