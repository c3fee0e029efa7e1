//! A topic's index (the sorted set a fan-out reads) gets a TTL that keeps
//! it past the end of every session that subscribed to it, and no longer
//! than the latest of their lifetime caps plus a margin: an index whose
//! sessions are all gone expires instead of growing with stale entries
//! until a fan-out or an unsubscribe of that topic. A session whose life
//! nothing bounds (no lifetime cap) keeps its topics' indexes without a
//! TTL, as it must: an active session can live on indefinitely. A cap made
//! longer or lifted after subscribing pushes the indexes' TTL along. On one
//! server and on a cluster with the cluster preset (topic keys in slots of
//! their own). Such an index without a TTL does not grow with the stale
//! entries of sessions gone either, fanned out or not: new subscriptions
//! tidy it as they come, and `cleanup_expired` sweeps the indexes that
//! get no new subscription either.

mod support;

use std::time::Duration;

use session_engine::{SessionId, SessionStore, Timeout, TopicCursor};
use session_redis::limits::TOPIC_INDEX_TTL_MARGIN;
use session_redis::{RedisConfig, RedisStore};

const TTL: Timeout = Timeout::from_secs(300);
const CAP: Duration = Duration::from_secs(600);

/// `PTTL` of a key, in ms (-1: none; -2: no key).
fn pttl(cli: &dyn Fn(&[&str]) -> String, key: &str) -> i64 {
    let out = cli(&["PTTL", key]);
    out.trim()
        .parse()
        .unwrap_or_else(|_| panic!("PTTL {key}: {out:?}"))
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap()
}

/// The index outlives each of `ids` (their keys' TTL, whatever their
/// inactivity deadline slides to, is below the cap they have).
fn outlives(cli: &dyn Fn(&[&str]) -> String, store: &RedisStore, topic: &str, ids: &[SessionId]) {
    let index = pttl(cli, &store.topic_key(topic));
    for id in ids {
        let session = pttl(cli, &store.key(id));
        assert!(session > 0, "{id}: {session}");
        assert!(
            index == -1 || index > session,
            "index {index} ms, session {session} ms"
        );
    }
}

async fn indexes_expire_after_their_sessions(store: &RedisStore, cli: &dyn Fn(&[&str]) -> String) {
    let margin = ms(TOPIC_INDEX_TTL_MARGIN);
    let cap = ms(CAP);

    // Capped by the store's max_lifetime: the index expires at most the
    // cap and the margin after the subscribe.
    let topic = "capped";
    let a = store.create(b"a", TTL).await.unwrap();
    assert!(store.subscribe(&a, topic).await.unwrap());
    let index = pttl(cli, &store.topic_key(topic));
    assert!(index > 0 && index <= cap + margin, "{index} ms");
    outlives(cli, store, topic, &[a]);
    // Subscribing again, or another subscriber with a shorter cap, never
    // brings the TTL down.
    assert!(!store.subscribe(&a, topic).await.unwrap());
    let b = store.create(b"b", TTL).await.unwrap();
    store.set_lifetime(&b, Timeout::from_secs(400)).await.unwrap();
    assert!(store.subscribe(&b, topic).await.unwrap());
    assert!(pttl(cli, &store.topic_key(topic)) > cap - 60_000);
    outlives(cli, store, topic, &[a, b]);

    // A longer cap after subscribing pushes the index's TTL along.
    store.set_lifetime(&a, Timeout::from_secs(3_600)).await.unwrap();
    let index = pttl(cli, &store.topic_key(topic));
    assert!(index > 3_500_000 && index <= 3_600_000 + margin, "{index} ms");
    // Each of its topics.
    let other = "capped-too";
    assert!(store.subscribe(&b, other).await.unwrap());
    store.set_lifetime(&b, Timeout::from_secs(7_200)).await.unwrap();
    for t in [topic, other] {
        let index = pttl(cli, &store.topic_key(t));
        assert!(
            index > 7_100_000 && index <= 7_200_000 + margin,
            "{t}: {index} ms"
        );
    }
    outlives(cli, store, topic, &[a, b]);

    // A lifted cap: the session's life has no bound, neither has the index.
    store.set_lifetime(&a, Timeout::Never).await.unwrap();
    assert_eq!(pttl(cli, &store.topic_key(topic)), -1);
    // A subscriber without a cap: no TTL.
    let unbounded = "unbounded";
    let c = store.create(b"c", TTL).await.unwrap();
    store.set_lifetime(&c, Timeout::Never).await.unwrap();
    assert!(store.subscribe(&c, unbounded).await.unwrap());
    assert_eq!(pttl(cli, &store.topic_key(unbounded)), -1);
    // ... which a capped subscriber later does not give one.
    assert!(store.subscribe(&b, unbounded).await.unwrap());
    assert_eq!(pttl(cli, &store.topic_key(unbounded)), -1);

    // The fan-out and unsubscribe still work on indexes with a TTL.
    let page = store.subscribers(other, TopicCursor::START, 10).await.unwrap();
    assert_eq!(page.ids, vec![b]);
    assert!(store.unsubscribe(&b, other).await.unwrap());
    assert_eq!(
        pttl(cli, &store.topic_key(other)),
        -2,
        "the last entry's removal removes the key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_one_server() {
    let server = support::Server::standalone();
    let store = RedisStore::connect(
        RedisConfig::standalone(server.url())
            .key_prefix(support::unique_prefix("index-ttl"))
            .max_lifetime(Timeout::from_ms(u64::try_from(CAP.as_millis()).unwrap())),
    )
    .await
    .expect("connect");
    indexes_expire_after_their_sessions(&store, &|args| server.cli(args)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_with_the_cluster_preset() {
    let cluster = support::Cluster::start(1_000);
    let store = RedisStore::connect(
        support::cluster_preset(cluster.urls())
            .key_prefix(support::unique_prefix("index-ttl"))
            .max_lifetime(Timeout::from_ms(u64::try_from(CAP.as_millis()).unwrap())),
    )
    .await
    .expect("connect");
    let node = &cluster.nodes[0];
    let cli = |args: &[&str]| {
        let mut with_redirects = vec!["-c"];
        with_redirects.extend_from_slice(args);
        node.cli(&with_redirects)
    };
    indexes_expire_after_their_sessions(&store, &cli).await;
    assert_eq!(store.stats().replication_shortfalls, 0);
}

/// An index without a TTL (its sessions have no lifetime cap) that nobody
/// fans out: the entries of the sessions that went are removed as new
/// subscriptions come, so it holds about its live subscribers, not every
/// session that ever subscribed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_nobody_fans_out_does_not_keep_its_gone_sessions() {
    const GONE: usize = 400;
    const LIVE: usize = 400;
    let server = support::Server::standalone();
    let store = RedisStore::connect(
        RedisConfig::standalone(server.url()).key_prefix(support::unique_prefix("index-tidy")),
    )
    .await
    .expect("connect");
    let topic = "news";
    for _ in 0..GONE {
        let id = store.create(b"short", Timeout::from_ms(300)).await.unwrap();
        assert!(store.subscribe(&id, topic).await.unwrap());
    }
    assert_eq!(
        pttl(&|a| server.cli(a), &store.topic_key(topic)),
        -1,
        "no TTL: no cap"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    for _ in 0..LIVE {
        let id = store.create(b"long", TTL).await.unwrap();
        assert!(store.subscribe(&id, topic).await.unwrap());
    }
    let held: usize = server
        .cli(&["ZCARD", &store.topic_key(topic)])
        .trim()
        .parse()
        .unwrap();
    assert!(
        held <= LIVE + GONE / 2,
        "the index holds {held} entries for {LIVE} live subscribers ({GONE} gone before them)"
    );
    // The tidying never removes a live subscriber.
    let mut listed = 0;
    let mut cursor = TopicCursor::START;
    loop {
        let page = store.subscribers(topic, cursor, 1_000).await.unwrap();
        listed += page.ids.len();
        match page.next {
            Some(next) => cursor = next,
            None => break,
        }
    }
    assert_eq!(listed, LIVE);
}

/// Indexes without a TTL (uncapped subscribers) that nobody fans out and
/// nobody subscribes to again after their subscribers went (deleted,
/// rotated away, expired): `cleanup_expired` removes their gone entries,
/// and with them the indexes that hold nothing else; it leaves the live
/// subscribers, and another store's indexes, alone.
async fn a_sweep_removes_what_nobody_touches_again(
    store: &RedisStore,
    other: &RedisStore,
    cli: &dyn Fn(&[&str]) -> String,
) {
    const TOPICS: usize = 12;
    let topic = |t: usize| format!("doc/{t}");
    let zcard = |store: &RedisStore, topic: &str| -> i64 {
        let out = cli(&["ZCARD", &store.topic_key(topic)]);
        out.trim()
            .parse()
            .unwrap_or_else(|_| panic!("ZCARD {topic}: {out:?}"))
    };
    let live = store.create(b"live", TTL).await.unwrap();
    for t in 0..TOPICS {
        for way in 0..3 {
            let id = store.create(b"gone", TTL).await.unwrap();
            assert!(store.subscribe(&id, &topic(t)).await.unwrap());
            match way {
                0 => store.delete(&id).await.unwrap(),
                1 => drop(store.rotate(&id).await.unwrap()),
                // Expires: made short once subscribed (replicated writes on
                // a busy machine can take longer than its life).
                _ => store.set_ttl(&id, Timeout::from_ms(300)).await.unwrap(),
            }
        }
        if t % 3 == 0 {
            assert!(store.subscribe(&live, &topic(t)).await.unwrap());
        }
        assert_eq!(pttl(cli, &store.topic_key(&topic(t))), -1, "no cap, no TTL");
    }
    let elsewhere = other.create(b"gone", TTL).await.unwrap();
    assert!(other.subscribe(&elsewhere, &topic(0)).await.unwrap());
    other.delete(&elsewhere).await.unwrap();
    // Another program's sorted set in the shape of an index, whose tag is
    // not its topic's hash: not an index, left alone.
    let real = store.topic_key("x");
    let tag = real.find('{').unwrap() + 1;
    let forged = format!("{}0123456789abcdef{}", &real[..tag], &real[tag + 16..]);
    assert_eq!(cli(&["ZADD", &forged, "0", "not-ours"]).trim(), "1");
    tokio::time::sleep(Duration::from_millis(600)).await;

    assert_eq!(
        SessionStore::cleanup_expired(store).await.unwrap(),
        0,
        "sessions: Redis expires them itself"
    );
    for t in 0..TOPICS {
        if t % 3 == 0 {
            assert_eq!(
                zcard(store, &topic(t)),
                1,
                "{}: the live subscriber's entry alone",
                topic(t)
            );
            let page = store
                .subscribers(&topic(t), TopicCursor::START, 10)
                .await
                .unwrap();
            assert_eq!(page.ids, vec![live]);
        } else {
            assert_eq!(
                pttl(cli, &store.topic_key(&topic(t))),
                -2,
                "{}: no entry left, no key",
                topic(t)
            );
        }
    }
    assert_eq!(zcard(other, &topic(0)), 1, "another store's index is its own");
    assert_eq!(cli(&["ZCARD", &forged]).trim(), "1", "{forged}");
    assert_eq!(
        store.tidy_topic_indexes().await.unwrap(),
        0,
        "nothing left to remove"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_on_one_server() {
    let server = support::Server::standalone();
    let connect = |tag: &'static str| {
        RedisStore::connect(RedisConfig::standalone(server.url()).key_prefix(support::unique_prefix(tag)))
    };
    let store = connect("index-sweep").await.expect("connect");
    let other = connect("index-sweep-other").await.expect("connect");
    a_sweep_removes_what_nobody_touches_again(&store, &other, &|args| server.cli(args)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_on_a_cluster() {
    let cluster = support::Cluster::start(1_000);
    let connect = |tag: &'static str| {
        RedisStore::connect(support::cluster_preset(cluster.urls()).key_prefix(support::unique_prefix(tag)))
    };
    let store = connect("index-sweep").await.expect("connect");
    let other = connect("index-sweep-other").await.expect("connect");
    let node = &cluster.nodes[0];
    let cli = |args: &[&str]| {
        let mut with_redirects = vec!["-c"];
        with_redirects.extend_from_slice(args);
        node.cli(&with_redirects)
    };
    a_sweep_removes_what_nobody_touches_again(&store, &other, &cli).await;
}
