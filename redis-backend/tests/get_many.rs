//! `get_many` reads many sessions in one pipeline per master, with the
//! semantics of `get` for each id: the results in the caller's order, the
//! deadline slid, `NotFound` for a missing or expired id, an error of its
//! own for an id whose key holds foreign data, each occurrence of a
//! duplicate read, nothing sent for an empty slice. Against one server
//! and a 6-node cluster (ids on every master, and one whose slot moved to
//! another master after the store built its routes).

mod support;

use std::time::Duration;

use session_engine::{Error, SessionId, SessionStore, Timeout};
use session_redis::{RedisConfig, RedisStore};
use support::proxy::Proxy;
use support::{create_named, metadata, Cluster, Server};

const TTL: Timeout = Timeout::from_secs(600);
/// The request budget where how soon is not what a test checks: far above
/// any stall of a loaded test machine.
const LONG_BUDGET: Duration = Duration::from_secs(10);

/// A session that has expired: created with a 1 ms timeout, then polled
/// until the server no longer has it (Redis expires keys itself).
async fn expired_session(store: &RedisStore) -> SessionId {
    let id = store
        .create(b"short-lived", Timeout::from_ms(1))
        .await
        .expect("create");
    for _ in 0..1_000 {
        if !store.contains(&id).await.expect("contains") {
            return id;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("a session with a 1 ms timeout never expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_get_many_answers_each_id_as_get_would() {
    let server = Server::standalone();
    let store = RedisStore::connect(
        RedisConfig::standalone(server.url())
            .key_prefix(support::unique_prefix("many"))
            .request_timeout(LONG_BUDGET),
    )
    .await
    .expect("connect");
    assert!(
        store.get_many(&[]).await.is_empty(),
        "nothing asked, nothing answered"
    );

    let live = create_named(&store, 5).await;
    let missing = SessionId::random().expect("random id");
    let expired = expired_session(&store).await;
    let foreign = SessionId::random().expect("random id");
    assert_eq!(
        server.cli(&["SET", &store.key(&foreign), "not a hash"]).trim(),
        "OK"
    );
    let ids = [
        live[3], missing, live[0], expired, live[3], foreign, live[1], live[2], live[4],
    ];
    // The deadline slides: shorten one key's TTL behind the store's back.
    assert_eq!(server.cli(&["PEXPIRE", &store.key(&live[0]), "5000"]).trim(), "1");
    let before = store.peek(&live[0]).await.expect("peek");

    let results = store.get_many(&ids).await;
    assert_eq!(results.len(), ids.len());
    let expected: [Option<&[u8]>; 9] = [
        Some(b"s3"),
        None,
        Some(b"s0"),
        None,
        Some(b"s3"),
        None,
        Some(b"s1"),
        Some(b"s2"),
        Some(b"s4"),
    ];
    for (i, (result, want)) in results.iter().zip(expected).enumerate() {
        assert_eq!(metadata(result), want, "id {i}: {result:?}");
        if let Ok(session) = result {
            assert_eq!(session.id(), ids[i], "id {i}: results in the caller's order");
        }
    }
    for i in [1, 3] {
        assert!(
            matches!(results[i], Err(Error::NotFound)),
            "id {i}: {:?}",
            results[i]
        );
    }
    match &results[5] {
        Err(Error::Unavailable { reason }) => assert!(reason.contains("WRONGTYPE"), "{reason}"),
        other => panic!("foreign data under a session key: {other:?}"),
    }
    let pttl: u64 = server
        .cli(&["PTTL", &store.key(&live[0])])
        .trim()
        .parse()
        .expect("PTTL");
    assert!(
        pttl > 5_000,
        "get_many re-armed the TTL to the session's 600 s: {pttl} ms"
    );
    let slid = results[2].as_ref().expect("live[0]");
    assert!(slid.last_access_ms() >= before.last_access_ms());
    assert_eq!(slid.created_ms(), before.created_ms());
    assert_eq!(slid.timeout(), TTL);

    // The same through the trait, and against single gets.
    let through_trait = SessionStore::get_many(&store, &live).await;
    for (id, result) in live.iter().zip(&through_trait) {
        let single = store.get(id).await.expect("get");
        let batched = result.as_ref().expect("get_many");
        assert_eq!(batched.metadata(), single.metadata());
        assert_eq!(batched.created_ms(), single.created_ms());
        assert_eq!(batched.timeout(), single.timeout());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_lost_the_scripts_still_answers_the_batch() {
    let server = Server::standalone();
    let store = RedisStore::connect(
        RedisConfig::standalone(server.url())
            .key_prefix(support::unique_prefix("noscript"))
            .request_timeout(LONG_BUDGET),
    )
    .await
    .expect("connect");
    let ids = create_named(&store, 4).await;
    // A restarted server, or a replica just promoted: the scripts are gone
    // and every key of the pipeline answers NOSCRIPT.
    assert_eq!(server.cli(&["SCRIPT", "FLUSH"]).trim(), "OK");
    let results = store.get_many(&ids).await;
    for (i, result) in results.iter().enumerate() {
        assert_eq!(metadata(result), Some(format!("s{i}").as_bytes()), "{result:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_one_round_trip_within_one_budget() {
    // The proxy counts what the client sends: the 16 gets of a batch travel
    // as one pipeline. And every request waits 2 s in the proxy while the
    // budget of the whole call is 3 s: one round trip fits (with 1 s to
    // spare, for a machine that stalls), two in a row (4 s or more) would
    // not.
    const BUDGET_MS: u64 = 3_000;
    let server = Server::standalone();
    let proxy = Proxy::start(server.port).await;
    let store = RedisStore::connect(
        RedisConfig::standalone(proxy.url())
            .key_prefix(support::unique_prefix("oneround"))
            .request_timeout(Duration::from_millis(BUDGET_MS)),
    )
    .await
    .expect("connect");
    let ids = create_named(&store, 16).await;
    store.get(&ids[0]).await.expect("get: the script is loaded");
    proxy.delay(Duration::from_secs(2));
    let reads_before = proxy.client_reads();
    let results = store.get_many(&ids).await;
    for (i, result) in results.iter().enumerate() {
        assert_eq!(metadata(result), Some(format!("s{i}").as_bytes()), "{result:?}");
    }
    assert_eq!(proxy.client_reads() - reads_before, 1, "16 gets in one request");

    // No answer at all: every id reports the operation's budget.
    proxy.black_hole();
    let results = store.get_many(&ids).await;
    assert_eq!(results.len(), ids.len());
    for result in &results {
        assert!(
            matches!(result, Err(Error::TimedOut { after_ms: BUDGET_MS })),
            "{result:?}"
        );
    }
}

/// Which master's range (by first slot) holds `slot`.
fn shard_of(firsts: &[u32], slot: u16) -> u32 {
    *firsts
        .iter()
        .rev()
        .find(|f| **f <= u32::from(slot))
        .expect("slot 0 starts the first range")
}

/// Moves the key of the first of `live` on the first master to the second
/// master, and its slot too if `finish`: its index in `live`.
fn move_off_first_master(cluster: &Cluster, store: &RedisStore, live: &[SessionId], finish: bool) -> usize {
    let firsts = cluster.first_slots();
    let moved = live
        .iter()
        .position(|id| shard_of(&firsts, store.slot(id)) == firsts[0])
        .expect("a session on the first master");
    let from = cluster.master_of(firsts[0]).expect("first master");
    let to = cluster.master_of(firsts[1]).expect("second master");
    let (slot, key) = (store.slot(&live[moved]), store.key(&live[moved]));
    cluster.migrate_key(slot, &key, from, to, finish);
    moved
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_get_many_spans_every_master_and_follows_a_moved_slot() {
    let cluster = Cluster::start(1_000);
    let firsts = cluster.first_slots();
    assert_eq!(firsts.len(), 3);
    let store = RedisStore::connect(
        RedisConfig::cluster(cluster.urls())
            .key_prefix(support::unique_prefix("many-cluster"))
            .request_timeout(LONG_BUDGET),
    )
    .await
    .expect("connect");
    assert!(store.get_many(&[]).await.is_empty());

    let live = create_named(&store, 30).await;
    let on: Vec<u32> = live.iter().map(|id| shard_of(&firsts, store.slot(id))).collect();
    for first in &firsts {
        assert!(
            on.contains(first),
            "no session on the master of slot {first}: {on:?}"
        );
    }
    let missing = SessionId::random().expect("random id");
    let expired = expired_session(&store).await;
    let mut ids = live.clone();
    ids.insert(7, missing);
    ids.insert(3, expired);
    ids.push(live[0]);
    let results = store.get_many(&ids).await;
    assert_eq!(results.len(), ids.len());
    for (id, result) in ids.iter().zip(&results) {
        match live.iter().position(|l| l == id) {
            Some(n) => assert_eq!(metadata(result), Some(format!("s{n}").as_bytes()), "{result:?}"),
            None => assert!(matches!(result, Err(Error::NotFound)), "{result:?}"),
        }
    }

    // Move one session's slot from its master to another behind the
    // store's back: its routes still send that id to the old master, which
    // answers MOVED for it alone in the pipeline.
    move_off_first_master(&cluster, &store, &live, true);
    let results = store.get_many(&live).await;
    for (n, result) in results.iter().enumerate() {
        assert_eq!(metadata(result), Some(format!("s{n}").as_bytes()), "{result:?}");
    }
    assert_eq!(store.stats().client_rebuilds, 0);
}

/// The keys of the migration test (its own cluster: no other test's keys).
const PREFIX_ASKING: &str = "many-asking:";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_mid_migration_is_served_and_a_frozen_master_holds_up_only_its_ids() {
    // A node timeout far longer than the test: the frozen master is not
    // failed over meanwhile.
    let cluster = Cluster::start(60_000);
    let firsts = cluster.first_slots();
    let store = RedisStore::connect(RedisConfig::cluster(cluster.urls()).key_prefix(PREFIX_ASKING))
        .await
        .expect("connect");
    let live = create_named(&store, 30).await;
    let on: Vec<u32> = live.iter().map(|id| shard_of(&firsts, store.slot(id))).collect();
    // The key moves, its slot stays migrating (as during `redis-cli
    // --cluster reshard`, key by key): the first master answers `ASK` for
    // it, and only a command after `ASKING` is served by the second.
    let moved = move_off_first_master(&cluster, &store, &live, false);
    let got = store.get(&live[moved]).await;
    assert_eq!(metadata(&got), Some(format!("s{moved}").as_bytes()), "{got:?}");
    // Writes too, and those that wait for a replica (`WAIT` after the
    // write, on the node asked): through a store configured so.
    let waiting = RedisStore::connect(support::cluster_preset(cluster.urls()).key_prefix(PREFIX_ASKING))
        .await
        .expect("connect");
    let updated = waiting
        .update(&live[moved], |_| b"during the migration".to_vec())
        .await;
    assert!(updated.is_ok(), "{updated:?}");
    let results = store.get_many(&live).await;
    support::assert_named_except(&results, moved, b"during the migration");

    // The first master answers `ASK` for `moved` at once while the third
    // gives its pipeline no answer: `moved` is read from the second right
    // away, as `get` would read it, not after the third's budget ran out.
    let frozen = cluster.master_of(firsts[2]).expect("third master");
    cluster.nodes[frozen].freeze();
    let results = store.get_many(&live).await;
    cluster.nodes[frozen].resume();
    for (n, result) in results.iter().enumerate() {
        if on[n] == firsts[2] {
            assert!(result.is_err(), "{n}: answered by a frozen master: {result:?}");
        } else if n != moved {
            assert_eq!(
                metadata(result),
                Some(format!("s{n}").as_bytes()),
                "{n}: {result:?}"
            );
        } else {
            assert_eq!(metadata(result), Some(&b"during the migration"[..]), "{result:?}");
        }
    }
}

/// More ids than one batch reads within a request timeout are read in
/// batches of that many, one after another: every id answered, in order
/// across the batches' boundary, as the embedded engine answers them (the
/// call refused them all with `LimitExceeded`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_over_the_limit_is_read_in_batches() {
    let server = Server::standalone();
    let store = RedisStore::connect(
        RedisConfig::standalone(server.url())
            .key_prefix(support::unique_prefix("many-limit"))
            .request_timeout(LONG_BUDGET),
    )
    .await
    .expect("connect");
    let id = store.create(b"one", TTL).await.expect("create");
    let missing = SessionId::random().expect("random id");
    let max = session_redis::limits::GET_MANY_IDS_MAX;
    // The missing id is the first of the second batch.
    let mut over = vec![id; max];
    over.extend([missing, id]);
    for results in [
        store.get_many(&over).await,
        SessionStore::get_many(&store, &over).await,
    ] {
        assert_eq!(results.len(), over.len(), "one result per id");
        for (n, result) in results.iter().enumerate() {
            if n == max {
                assert!(matches!(result, Err(Error::NotFound)), "{n}: {result:?}");
            } else {
                assert_eq!(metadata(result), Some(&b"one"[..]), "{n}: {result:?}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_wide_refusal_resends_the_pipeline_not_each_id() {
    // A node loading its data set, a cluster down, a master without its
    // replicas answers every command of the pipeline with the same error:
    // the pipeline is resent whole after a pause (one request), not each
    // id on its own (one request and one retry loop per id).
    let server = Server::standalone();
    let proxy = Proxy::start(server.port).await;
    let store = RedisStore::connect(
        RedisConfig::standalone(proxy.url()).key_prefix(support::unique_prefix("many-loading")),
    )
    .await
    .expect("connect");
    let ids = create_named(&store, 16).await;
    store.get(&ids[0]).await.expect("get: the script is loaded");
    for (n, error) in [
        "LOADING Redis is loading the dataset in memory",
        "CLUSTERDOWN The cluster is down",
        "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
    ]
    .into_iter()
    .enumerate()
    {
        let resends_before = store.stats().resends;
        proxy.refuse("EVALSHA", error);
        let results = store.get_many(&ids).await;
        assert!(proxy.fault_fired(), "{error}: the pipeline was refused");
        for (i, result) in results.iter().enumerate() {
            assert_eq!(
                metadata(result),
                Some(format!("s{i}").as_bytes()),
                "{error}: {result:?}"
            );
        }
        assert_eq!(
            store.stats().resends - resends_before,
            1,
            "{error}: the pipeline resent once, not each id on its own"
        );
        assert_eq!(proxy.faults_fired(), n as u64 + 1);
    }
}

/// A batch that goes through the cluster client (its master's direct
/// route marked stale by an earlier batch of the same call, which met a
/// `MOVED`) and holds an id whose slot moved: the client fails the whole
/// pipeline with that id's `MOVED`, and resent whole (by its first key, to
/// the same master) it met it again until the deadline: every id of the
/// batch was `Unavailable`. Each is now read on its own. (Whether the
/// third batch goes through the client depends on when the stale mark
/// lands: a fresh-clone CI run failed here before the fix.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_through_the_cluster_client_survives_a_moved_id() {
    let cluster = Cluster::start(1_000);
    let firsts = cluster.first_slots();
    let store = RedisStore::connect(
        RedisConfig::cluster(cluster.urls()).key_prefix(support::unique_prefix("many-moved")),
    )
    .await
    .expect("connect");
    // Three pipelines' worth on the first master (two in flight at a time).
    let mut on_first = Vec::new();
    while on_first.len() < 2_100 {
        let id = store.create(b"m", TTL).await.expect("create");
        if shard_of(&firsts, store.slot(&id)) == firsts[0] {
            on_first.push(id);
        }
    }
    // An id alone in its slot among these: moving the slot moves no other.
    let alone = (0..on_first.len())
        .find(|&i| {
            let slot = store.slot(&on_first[i]);
            on_first.iter().filter(|id| store.slot(id) == slot).count() == 1
        })
        .expect("an id alone in its slot");
    let moved = on_first.remove(alone);
    let from = cluster.master_of(firsts[0]).expect("first master");
    let to = cluster.master_of(firsts[1]).expect("second master");
    cluster.migrate_key(store.slot(&moved), &store.key(&moved), from, to, true);
    // The moved id opens the first pipeline (its MOVED marks the route
    // stale) and is second in the third, behind an id still on the master
    // (the cluster client routes a pipeline by its first key).
    let mut ids = vec![moved];
    ids.extend_from_slice(&on_first[..1_999]);
    ids.push(on_first[1_999]);
    ids.push(moved);
    ids.extend_from_slice(&on_first[2_000..]);
    assert_eq!(ids[2_001], moved);
    let results = store.get_many(&ids).await;
    let failed: Vec<(usize, &Result<session_engine::Session, Error>)> = results
        .iter()
        .enumerate()
        .filter(|(_, r)| metadata(r) != Some(&b"m"[..]))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} ids not served, the first: {:?}",
        failed.len(),
        ids.len(),
        failed.first()
    );
    assert!(store.routes_marked_stale() >= 1, "the scenario did not happen");
}
