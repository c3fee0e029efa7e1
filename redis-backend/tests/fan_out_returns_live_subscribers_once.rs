//! A topic's fan-out (`subscribers`) on a 6-node cluster with the cluster
//! preset: subscribers on all three masters, listed in pages of a fixed
//! size, each live subscriber exactly once over more than one page; the
//! sessions that went away (deleted, expired, rotated, unsubscribed) are
//! never returned, and their index entries are removed lazily by the
//! listing that found them. Plus the race the index must survive: an
//! unsubscribe and a subscribe of the same topic by the same session, and
//! a fan-out's cleanup between them, never lose a standing subscription.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use session_engine::{SessionId, Timeout, TopicCursor};
use session_redis::{RedisConfig, RedisStore};
use support::{list_all, Cluster};

const TTL: Timeout = Timeout::from_secs(600);

/// `ZCARD` of the topic's index, asked of whichever master holds it.
fn index_len(cluster: &Cluster, store: &RedisStore, topic: &str) -> u64 {
    let out = cluster.nodes[0].cli(&["-c", "ZCARD", &store.topic_key(topic)]);
    out.trim().parse().unwrap_or_else(|_| panic!("ZCARD: {out:?}"))
}

/// The master (by first slot) that serves `slot`.
fn master_of_slot(first_slots: &[u32], slot: u16) -> u32 {
    *first_slots
        .iter()
        .rev()
        .find(|&&first| first <= u32::from(slot))
        .expect("slot 0 is some master's first")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_on_a_cluster_returns_each_live_subscriber_once() {
    let cluster = Cluster::start(1_000);
    let config = support::cluster_preset(cluster.urls()).key_prefix(support::unique_prefix("fanout"));
    let store = RedisStore::connect(config).await.expect("connect");
    let first_slots = cluster.first_slots();
    assert_eq!(first_slots.len(), 3);

    // 120 subscribers of one topic, and a few of another (in another slot,
    // most likely on another master) that must never show up in the first.
    let topic = "file:///project/{src}/main.rs";
    let other = "file:///project/README.md";
    let mut live = Vec::new();
    for i in 0..120u32 {
        let id = store.create(&i.to_le_bytes(), TTL).await.expect("create");
        assert!(store.subscribe(&id, topic).await.expect("subscribe"));
        assert!(
            !store.subscribe(&id, topic).await.expect("subscribe again"),
            "already subscribed"
        );
        live.push(id);
    }
    let others: Vec<SessionId> = {
        let mut v = Vec::new();
        for _ in 0..5 {
            let id = store.create(b"other", TTL).await.unwrap();
            store.subscribe(&id, other).await.unwrap();
            v.push(id);
        }
        v
    };
    let masters: BTreeSet<u32> = live
        .iter()
        .map(|id| master_of_slot(&first_slots, store.slot(id)))
        .collect();
    assert_eq!(masters.len(), 3, "subscribers on every master");
    assert_eq!(index_len(&cluster, &store, topic), 120);

    // Sessions that go away, each in its own way. The last subscriptions
    // come first: a new subscription may tidy the index (remove entries
    // found stale), and this index is to keep them for the fan-out.
    let expiring = {
        let mut v = Vec::new();
        for _ in 0..5 {
            // Made short once subscribed: replicated writes on a busy
            // machine can take longer than its life.
            let id = store.create(b"short", Timeout::from_secs(300)).await.unwrap();
            store.subscribe(&id, topic).await.unwrap();
            store.set_ttl(&id, Timeout::from_ms(300)).await.unwrap();
            v.push(id);
        }
        v
    };
    let deleted = live.split_off(100); // 20
    for id in &deleted[..10] {
        store.delete(id).await.expect("delete");
    }
    let unsubscribed = &deleted[10..15];
    for id in unsubscribed {
        assert!(store.unsubscribe(id, topic).await.expect("unsubscribe"));
        assert!(
            !store.unsubscribe(id, topic).await.expect("again"),
            "not subscribed any more"
        );
        assert!(store.topics(id).await.unwrap().is_empty());
    }
    let mut rotated_to = Vec::new();
    for id in &deleted[15..20] {
        let new = store.rotate(id).await.expect("rotate");
        assert!(
            store.topics(&new).await.unwrap().is_empty(),
            "the new id has no topics"
        );
        rotated_to.push(new);
    }
    // Wait for the server to expire them (Redis hides them at once).
    for id in &expiring {
        for _ in 0..1_000 {
            if !store.contains(id).await.unwrap() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!store.contains(id).await.unwrap(), "expired");
    }
    // Unsubscribe removed its own entries; deleted, rotated and expired
    // sessions left theirs: 100 live + 10 + 5 + 5 stale.
    assert_eq!(index_len(&cluster, &store, topic), 120);

    // Pages of 7: each live subscriber once, nothing else, in id order.
    let (listed, pages) = list_all(&store, topic, 7).await;
    assert!(pages > 1, "{pages} pages");
    let want: BTreeSet<SessionId> = live.iter().copied().collect();
    let got: BTreeSet<SessionId> = listed.iter().copied().collect();
    assert_eq!(listed.len(), got.len(), "no session twice");
    assert_eq!(got, want, "exactly the live subscribers");
    let order: Vec<u128> = listed
        .iter()
        .map(|id| u128::from_be_bytes(id.to_bytes()))
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "in id order");
    for id in others.iter().chain(&rotated_to) {
        assert!(!got.contains(id));
    }
    // The listing removed every stale entry it met.
    assert_eq!(index_len(&cluster, &store, topic), 100);
    let (again, _) = list_all(&store, topic, 1_000).await;
    assert_eq!(again, listed, "one page of 1000: the same, in the same order");
    let (one_by_one, pages) = list_all(&store, topic, 1).await;
    assert_eq!(one_by_one, listed);
    assert_eq!(pages, 100, "the last full page says there is no more");

    // The other topic and an unknown one.
    let (other_ids, _) = list_all(&store, other, 100).await;
    assert_eq!(other_ids.len(), 5);
    let (none, pages) = list_all(&store, "nobody/subscribes", 10).await;
    assert!(none.is_empty());
    assert_eq!(pages, 1);
    assert_eq!(store.stats().replication_shortfalls, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsubscribe_racing_a_subscribe_never_loses_a_standing_subscription() {
    // One server is enough: the race is between two keys, whatever their
    // masters. Two tasks subscribe and unsubscribe the same session to the
    // same topic in opposite orders while a third lists the topic (and
    // cleans up what it finds stale). Whatever the interleaving, afterwards
    // the fan-out lists the session exactly when it is subscribed (its
    // field, the truth): nothing re-subscribes to mend a lost entry.
    let server = support::Server::standalone();
    let store =
        RedisStore::connect(RedisConfig::standalone(server.url()).key_prefix(support::unique_prefix("race")))
            .await
            .expect("connect");
    let topic = "race";
    let id = store.create(b"", TTL).await.unwrap();
    let mut subscribed_rounds = 0;
    for round in 0..200 {
        let (a, b, c) = (store.clone(), store.clone(), store.clone());
        let flip = tokio::spawn(async move {
            for _ in 0..3 {
                a.subscribe(&id, topic).await.unwrap();
                a.unsubscribe(&id, topic).await.unwrap();
            }
        });
        let flop = tokio::spawn(async move {
            for _ in 0..3 {
                b.unsubscribe(&id, topic).await.unwrap();
                b.subscribe(&id, topic).await.unwrap();
            }
        });
        let reader = tokio::spawn(async move {
            for _ in 0..3 {
                c.subscribers(topic, TopicCursor::START, 10).await.unwrap();
            }
        });
        flip.await.unwrap();
        flop.await.unwrap();
        reader.await.unwrap();
        let subscribed = store.topics(&id).await.unwrap() == vec![topic.to_owned()];
        let page = store.subscribers(topic, TopicCursor::START, 10).await.unwrap();
        let listed = if subscribed { vec![id] } else { Vec::new() };
        assert_eq!(page.ids, listed, "round {round}: subscribed {subscribed}");
        subscribed_rounds += u32::from(subscribed);
        if !subscribed {
            // Start the next round subscribed half the time.
            if round % 2 == 0 {
                store.subscribe(&id, topic).await.unwrap();
            }
        }
    }
    println!("{subscribed_rounds} of 200 rounds ended subscribed");
}
