//! A listing returns every session present for the whole of it, at least
//! once, whatever happens between its pages: a master fails over, a
//! master's first slot moves, the bucket a page ended inside is emptied,
//! a key under the store's prefix holds foreign data.

mod support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use session_engine::{Cursor, SessionId, Timeout};
use session_redis::{RedisConfig, RedisStore, Replication};

/// Every session listed from `cursor` to the end, `limit` a page.
async fn list_from(store: &RedisStore, mut cursor: Cursor, limit: usize) -> HashSet<SessionId> {
    let mut seen = HashSet::new();
    for _ in 0..100_000 {
        let page = store.list(cursor, limit).await.expect("list");
        seen.extend(page.sessions.iter().map(session_engine::Session::id));
        match page.next {
            Some(next) => cursor = next,
            None => return seen,
        }
    }
    panic!("the listing does not end");
}

/// Pages of one session; whenever a page ends inside a bucket (a
/// resume hash in its cursor), every key of that bucket is deleted behind
/// the listing's back. The next page then finds the bucket empty, and
/// `SCAN ... COUNT 1` goes on to the keys of the next bucket, which are
/// new: every session not deleted is still listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_emptied_under_a_page_boundary_loses_no_other_session() {
    support::require_redis();
    let server = support::Server::standalone();
    let prefix = support::unique_prefix("split");
    // A long budget: what is tested is what the pages hold, not how soon.
    let store = RedisStore::connect(
        RedisConfig::standalone(server.url())
            .key_prefix(prefix.clone())
            .request_timeout(Duration::from_secs(10)),
    )
    .await
    .expect("connect");
    let ids = support::create_named(&store, 3_000).await;
    let by_key: HashMap<String, SessionId> = ids.iter().map(|id| (store.key(id), *id)).collect();
    let mut deleted = HashSet::new();
    let mut seen = HashSet::new();
    let mut cursor = Cursor::START;
    let mut emptied = 0;
    loop {
        let page = store.list(cursor, 1).await.expect("list");
        seen.extend(page.sessions.iter().map(session_engine::Session::id));
        let Some(next) = page.next else { break };
        if next.position() & 0xffff_ffff != 0 {
            let bucket = (next.position() >> 32).to_string();
            let reply = server.cli(&["SCAN", &bucket, "MATCH", &format!("{prefix}*"), "COUNT", "1"]);
            for key in reply.lines().skip(1).filter(|k| !k.is_empty()) {
                server.cli(&["DEL", key]);
                deleted.insert(by_key[key]);
            }
            emptied += 1;
        }
        cursor = next;
    }
    assert!(emptied > 10, "pages ended inside a bucket {emptied} times");
    let missing: Vec<_> = ids
        .iter()
        .filter(|id| !deleted.contains(*id) && !seen.contains(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} sessions never listed ({} buckets emptied)",
        missing.len(),
        emptied
    );
}

/// A key under the store's prefix that holds no session (a string, a hash
/// of other fields) is not one: a listing leaves it out and goes on,
/// instead of failing at that page on every try.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_keys_under_the_prefix_are_left_out_of_a_listing() {
    support::require_redis();
    let server = support::Server::standalone();
    let store = RedisStore::connect(
        RedisConfig::standalone(server.url())
            .key_prefix(support::unique_prefix("foreign"))
            .request_timeout(Duration::from_secs(10)),
    )
    .await
    .expect("connect");
    let ids: HashSet<SessionId> = support::create_named(&store, 50).await.into_iter().collect();
    let (string, hash) = (SessionId::random().unwrap(), SessionId::random().unwrap());
    server.cli(&["SET", &store.key(&string), "x"]);
    server.cli(&["HSET", &store.key(&hash), "other", "1"]);
    for limit in [1, 7, 1_000] {
        assert_eq!(
            list_from(&store, Cursor::START, limit).await,
            ids,
            "pages of {limit}"
        );
    }
}

/// Node timeout of the test cluster (short, to keep the failover fast).
const NODE_TIMEOUT_MS: u64 = 1_000;

/// Through a cluster's changes between pages: a master's first slot moving
/// lower (a cursor naming the old first slot starts that master, not the
/// next one), and a failover of the master a page ended inside (the
/// promoted replica's `SCAN` order is another, so the listing starts that
/// master again: sessions may repeat, none is missed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_goes_through_a_moved_first_slot_and_a_failover() {
    support::require_redis();
    let cluster = support::Cluster::start(NODE_TIMEOUT_MS);
    let config = support::cluster_preset(cluster.urls())
        .key_prefix(support::unique_prefix("complete"))
        .replication(Replication::Wait {
            replicas: 1,
            timeout: support::TEST_WAIT_TIMEOUT,
        });
    let store = RedisStore::connect(config).await.expect("connect");
    let mut ids = HashSet::new();
    for i in 0..3_000u32 {
        ids.insert(
            store
                .create(&i.to_le_bytes(), Timeout::from_secs(600))
                .await
                .expect("create"),
        );
    }
    let firsts = cluster.first_slots();
    assert_eq!(firsts.len(), 3, "{firsts:?}");

    // The second master gets an empty slot of the first's range, below its
    // own first slot: its first slot moves lower.
    let second = cluster.master_of(firsts[1]).expect("second master");
    let first = cluster.master_of(firsts[0]).expect("first master");
    let empty = (firsts[0] + 1..firsts[1])
        .rev()
        .find(|s| {
            cluster.nodes[first]
                .cli(&["CLUSTER", "COUNTKEYSINSLOT", &s.to_string()])
                .trim()
                == "0"
        })
        .expect("an empty slot");
    cluster.move_empty_slot(empty as u16, first, second);
    let later: HashSet<SessionId> = ids
        .iter()
        .filter(|id| store.slot(id) >= firsts[1] as u16)
        .copied()
        .collect();
    let listed = list_from(&store, Cursor::new(firsts[1], 0), 100).await;
    assert!(
        later.is_subset(&listed),
        "{} of the later masters' sessions not listed",
        later.difference(&listed).count()
    );

    // The first master's first slot migrating (left half-done, as a
    // resharding that stopped): that master still serves the slot, so a
    // listing and a count go on (the slot's key check answers ASK there).
    cluster.begin_migration(firsts[0] as u16, first, second);
    let migrating = list_from(&store, Cursor::START, 500).await;
    assert!(
        ids.is_subset(&migrating),
        "{} sessions not listed while the first slot migrates",
        ids.difference(&migrating).count()
    );
    assert_eq!(store.len().await.expect("len while a slot migrates"), ids.len());
    cluster.cancel_migration(firsts[0] as u16, first, second);

    // A page ends inside the first master; it fails over; the rest.
    let page = store.list(Cursor::START, 100).await.expect("list");
    let next = page.next.expect("more pages");
    assert!(next.position() != 0, "the page ends inside the first master");
    let replica = cluster.replica_of(first).expect("a replica");
    support::wait_for("a synced replica", Duration::from_secs(30), || {
        cluster.has_synced_replica(first)
    });
    assert_eq!(cluster.nodes[replica].cli(&["CLUSTER", "FAILOVER"]).trim(), "OK");
    cluster.wait_promoted(firsts[0], first, Duration::from_secs(30));
    let mut listed: HashSet<SessionId> = page.sessions.iter().map(session_engine::Session::id).collect();
    listed.extend(list_from(&store, next, 100).await);
    assert!(
        ids.is_subset(&listed),
        "{} sessions not listed across the failover",
        ids.difference(&listed).count()
    );
}

/// A server whose round trip takes more than the page's scan budget (half
/// the request timeout): a page whose first `SCAN` found more keys than it
/// has room for used to stop for its budget with nothing found and the
/// cursor it was given, so a caller paging until the end looped for ever
/// on empty pages. A page now makes progress (a session, or a cursor
/// further on) or fails with an error once its deadline has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_server_never_gets_an_empty_page_that_stays_put() {
    support::require_redis();
    let server = support::Server::standalone();
    let proxy = support::proxy::Proxy::start(server.port).await;
    let prefix = support::unique_prefix("slow-list");
    let store = support::connect_short(
        RedisConfig::standalone(proxy.url())
            .key_prefix(prefix.clone())
            .request_timeout(Duration::from_millis(200)),
    )
    .await;
    // The sessions are written straight to the server with a long budget:
    // set-up, not the short budget under test.
    let setup = RedisStore::connect(
        RedisConfig::standalone(server.url())
            .key_prefix(prefix)
            .request_timeout(Duration::from_secs(10)),
    )
    .await
    .expect("connect");
    // Near one key a bucket (the table doubles at 1,024): a `SCAN ...
    // COUNT 2` often finds more than a page of 2 has room for.
    for n in 0..1_000 {
        setup
            .create(format!("s{n}").as_bytes(), Timeout::from_secs(600))
            .await
            .expect("create");
    }
    proxy.delay(Duration::from_millis(110));
    let mut cursor = Cursor::START;
    let (mut pages, mut errors) = (0, 0);
    for _ in 0..40 {
        match store.list(cursor, 2).await {
            Ok(page) => {
                pages += 1;
                assert!(
                    !page.sessions.is_empty() || page.next != Some(cursor),
                    "an empty page handed back its own cursor {cursor}: the listing loops"
                );
                match page.next {
                    Some(next) => cursor = next,
                    None => break,
                }
            }
            Err(e) => {
                assert!(matches!(e, session_engine::Error::TimedOut { .. }), "{e:?}");
                errors += 1;
            }
        }
    }
    assert!(pages + errors > 0);
}

/// A page that finishes a master after its scan budget (half the request
/// timeout) stops there, with a cursor to the next master, instead of
/// making a round trip on every master left: on many masters, or slow
/// ones, those used to outlast the deadline, and the page failed with
/// `TimedOut` on every retry, the sessions it had gathered thrown away.
/// Here the second master answers only after the budget and the third
/// only after the deadline (both frozen with SIGSTOP, a node timeout long
/// enough that no replica takes over).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_past_its_budget_stops_at_the_end_of_a_master() {
    support::require_redis();
    let cluster = support::Cluster::start(30_000);
    let store = RedisStore::connect(
        support::cluster_preset(cluster.urls())
            .key_prefix(support::unique_prefix("budget"))
            .replication(Replication::Async)
            .request_timeout(Duration::from_secs(4)),
    )
    .await
    .expect("connect");
    // Few sessions: one `SCAN` finishes a master.
    let ids = support::create_named(&store, 30).await;
    let firsts = cluster.first_slots();
    let on = |master: usize| -> HashSet<SessionId> {
        let (lo, hi) = (firsts[master], firsts.get(master + 1).copied().unwrap_or(16_384));
        ids.iter()
            .filter(|id| (lo..hi).contains(&u32::from(store.slot(id))))
            .copied()
            .collect()
    };
    let (second, third) = (
        cluster.master_of(firsts[1]).expect("second master"),
        cluster.master_of(firsts[2]).expect("third master"),
    );
    cluster.nodes[second].freeze();
    cluster.nodes[third].freeze();
    let resumer = {
        let (second, third) = (cluster.nodes[second].pid(), cluster.nodes[third].pid());
        std::thread::spawn(move || {
            // The budget ends 2 s after the page starts, the deadline 4 s:
            // margins of 0.6 s and 2.5 s for a slow start of the page.
            std::thread::sleep(Duration::from_millis(2_600));
            support::signal(second.expect("running"), "-CONT");
            std::thread::sleep(Duration::from_millis(3_900));
            support::signal(third.expect("running"), "-CONT");
        })
    };
    let page = store.list(Cursor::new(firsts[1], 0), 1_000).await;
    resumer.join().unwrap();
    let page = page.expect("a page that stopped at the end of the second master");
    let listed: HashSet<SessionId> = page.sessions.iter().map(session_engine::Session::id).collect();
    assert_eq!(listed, on(1), "the page holds the second master's sessions");
    assert_eq!(
        page.next,
        Some(Cursor::new(firsts[2], 0)),
        "the page goes on at the third master"
    );
    assert_eq!(list_from(&store, page.next.unwrap(), 1_000).await, on(2));
}

/// A count through a restart of the server (a failover in a cluster): a
/// `SCAN` cursor means nothing to the new process, whose hash seed orders
/// its table otherwise, so `len` starts that master again when the `run_id`
/// its `SCAN`s read changes, as a listing does. It used to carry the old
/// cursor on, counting some keys twice and others never: a wrong count
/// with no error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_count_through_a_restart_counts_the_new_process_once() {
    support::require_redis();
    let mut server = support::Server::standalone();
    let proxy = support::proxy::Proxy::start(server.port).await;
    let prefix = support::unique_prefix("count-restart");
    let setup = RedisStore::connect(
        RedisConfig::standalone(server.url())
            .key_prefix(prefix.clone())
            .request_timeout(Duration::from_secs(10)),
    )
    .await
    .expect("connect");
    let n = 10_000;
    support::create_named(&setup, n).await;
    drop(setup);
    assert_eq!(server.cli(&["SAVE"]).trim(), "OK");
    let store = RedisStore::connect(
        RedisConfig::standalone(proxy.url())
            .key_prefix(prefix)
            .request_timeout(Duration::from_secs(10)),
    )
    .await
    .expect("connect");
    // About ten `SCAN`s of 1,000 keys, 150 ms each: the restart lands
    // between two of them.
    proxy.delay(Duration::from_millis(150));
    let restarter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(600));
        server.kill9();
        server.restart();
        support::wait_for("the dump reloaded", Duration::from_secs(30), || {
            server.cli(&["DBSIZE"]).trim() == n.to_string()
        });
        server
    });
    let counted = store.len().await.expect("len");
    let server = restarter.join().unwrap();
    let run_ids = server.info_field("server", "run_id");
    assert_eq!(counted, n, "counted through a restart (now {run_ids:?})");
}
