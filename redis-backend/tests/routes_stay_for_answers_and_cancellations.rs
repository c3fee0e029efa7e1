//! A direct route to a master is marked stale (its slots then take the
//! cluster client until the table is rebuilt, with new connections and the
//! scripts loaded again) only for a failure of that route: no answer within
//! the operation's deadline, a dropped connection, a redirect for good
//! (`MOVED`). Not for an answer that says the master still serves the slot,
//! and not for a caller that stops waiting.
//!
//! - `ASK`: a key moved while its slot is still migrating, as during
//!   `redis-cli --cluster reshard`. Before, every request touching such a
//!   key marked its (healthy) master stale.
//! - A request dropped mid-flight by its caller (a web framework dropping a
//!   handler, an outer timeout) before its deadline. Before, the drop
//!   marked the master stale as if the deadline had cut the request off.
//!   One cut off by its own deadline still counts.
//! - A tidying after a subscription, cut off by its own 50 ms budget by a
//!   master that is only slow: a cut-off counts after half a request
//!   timeout in flight.

mod support;

use std::future::Future;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use session_engine::{Error, SessionId};
use session_redis::{RedisConfig, RedisStore};
use support::{create_named, metadata, shard_of, Cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ask_redirect_leaves_the_route_of_its_master_in_place() {
    let cluster = Cluster::start(60_000);
    let firsts = cluster.first_slots();
    let store = RedisStore::connect(
        RedisConfig::cluster(cluster.urls()).key_prefix(support::unique_prefix("ask-route")),
    )
    .await
    .expect("connect");
    let live = create_named(&store, 30).await;
    let moved = live
        .iter()
        .position(|id| shard_of(&firsts, store.slot(id)) == firsts[0])
        .expect("a session on the first master");
    let from = cluster.master_of(firsts[0]).expect("first master");
    let to = cluster.master_of(firsts[1]).expect("second master");
    // The slot stays migrating: the first master answers `ASK` for the key.
    cluster.migrate_key(
        store.slot(&live[moved]),
        &store.key(&live[moved]),
        from,
        to,
        false,
    );
    assert_eq!(store.routes_marked_stale(), 0, "nothing failed yet");

    // Each of these gets `ASK` from the first master for the moved key.
    let got = store.get(&live[moved]).await;
    assert_eq!(metadata(&got), Some(format!("s{moved}").as_bytes()), "{got:?}");
    let updated = store.update(&live[moved], |_| b"moved".to_vec()).await;
    assert!(updated.is_ok(), "{updated:?}");
    let results = store.get_many(&live).await;
    support::assert_named_except(&results, moved, b"moved");
    assert_eq!(
        store.routes_marked_stale(),
        0,
        "an ASK is the master answering for a slot it still serves: its route stays"
    );
}

/// Polls `future` once (the request is then on its way) and drops it, as a
/// caller that stops waiting does.
async fn poll_once_then_drop<F: Future>(future: F) {
    let mut future = pin!(future);
    let first = std::future::poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx).is_pending())).await;
    assert!(first, "answered on the first poll by a frozen master");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_its_caller_drops_does_not_mark_the_route_stale() {
    // A node timeout far longer than the test: the frozen master is not
    // failed over meanwhile.
    let cluster = Cluster::start(60_000);
    let firsts = cluster.first_slots();
    // A budget the test never reaches: every drop below is the caller's.
    let patient = RedisStore::connect(
        RedisConfig::cluster(cluster.urls())
            .key_prefix(support::unique_prefix("cancel"))
            .request_timeout(Duration::from_secs(30)),
    )
    .await
    .expect("connect");
    let live = create_named(&patient, 30).await;
    let on_first: Vec<SessionId> = live
        .iter()
        .copied()
        .filter(|id| shard_of(&firsts, patient.slot(id)) == firsts[0])
        .collect();
    assert!(!on_first.is_empty(), "a session on the first master");
    // Connected before the freeze (connecting reads the topology from a
    // master the cluster client picks at random).
    // (Retried: connecting within the short budget can miss on a busy
    // machine.)
    let hasty = support::connect_short(
        RedisConfig::cluster(cluster.urls())
            .key_prefix(support::unique_prefix("cancel"))
            .request_timeout(Duration::from_millis(200)),
    )
    .await;
    let frozen = cluster.master_of(firsts[0]).expect("first master");
    cluster.nodes[frozen].freeze();

    poll_once_then_drop(patient.get(&on_first[0])).await;
    poll_once_then_drop(patient.get_many(&live)).await;
    poll_once_then_drop(patient.touch(&on_first[0])).await;
    assert_eq!(
        patient.routes_marked_stale(),
        0,
        "requests dropped by their caller before their deadline say nothing against the route"
    );

    // One cut off by its own deadline does.
    let r = hasty.get(&on_first[0]).await;
    assert!(matches!(r, Err(Error::TimedOut { .. })), "{r:?}");
    assert_eq!(hasty.routes_marked_stale(), 1, "a request its deadline cut off");

    cluster.nodes[frozen].resume();
    let got = patient.get(&on_first[0]).await;
    assert!(got.is_ok(), "{got:?}");
    assert_eq!(patient.routes_marked_stale(), 0);
}

/// The tidying a new subscription runs now and then has a budget of its
/// own (`INDEX_TIDY_BUDGET`, 50 ms) far below the operation's: a master
/// slower than that to answer its checks has not failed, and its route
/// stays. The cut-off used to count as the deadline's, and every master
/// a tidying met while slower than 50 ms (a stall, a big pipeline ahead)
/// was marked stale, its slots sent through the cluster client and its
/// connections rebuilt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tidying_cut_off_by_its_own_budget_leaves_the_route() {
    use session_redis::limits::INDEX_TIDY_EVERY;
    // No failover while a master is frozen.
    let cluster = Cluster::start(60_000);
    let firsts = cluster.first_slots();
    let store = RedisStore::connect(
        RedisConfig::cluster(cluster.urls()).key_prefix(support::unique_prefix("tidy-route")),
    )
    .await
    .expect("connect");
    let master_of_key = |key: &str| {
        let port = cluster.nodes[cluster.master_of(firsts[0]).unwrap()].port;
        let slot: u16 = support::raw_command(port, &["CLUSTER", "KEYSLOT", key])
            .expect("KEYSLOT")
            .trim()
            .trim_start_matches(':')
            .parse()
            .expect("a slot");
        shard_of(&firsts, slot)
    };
    // The topic's index on the first master, its subscribers on the second,
    // and the session whose subscription tidies on the third.
    let topic = (0..)
        .map(|n| format!("topic-{n}"))
        .find(|t| master_of_key(&store.topic_key(t)) == firsts[0])
        .unwrap();
    let live = create_named(&store, 200).await;
    let on = |first: u32| -> Vec<SessionId> {
        live.iter()
            .copied()
            .filter(|id| shard_of(&firsts, store.slot(id)) == first)
            .collect()
    };
    let subscribers = on(firsts[1]);
    let tidier = on(firsts[2])[0];
    let n = subscribers.len() - subscribers.len() % INDEX_TIDY_EVERY as usize;
    assert!(n >= 32, "{n} subscribers on the second master");
    for id in &subscribers[..n] {
        assert!(store.subscribe(id, &topic).await.expect("subscribe"));
    }
    assert_eq!(store.routes_marked_stale(), 0);
    // The next new subscription tidies: its checks meet the frozen master.
    let frozen = &cluster.nodes[cluster.master_of(firsts[1]).unwrap()];
    frozen.freeze();
    let subscribed = store.subscribe(&tidier, &topic).await;
    frozen.resume();
    assert!(subscribed.expect("subscribe on healthy masters"));
    assert_eq!(
        store.routes_marked_stale(),
        0,
        "the tidying's own budget ran out, not a request's deadline"
    );
}
