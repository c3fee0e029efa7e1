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
//! tidy it as they come.

mod support;

use std::time::Duration;

use session_engine::{SessionId, Timeout, TopicCursor};
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
