//! A session's subscriptions and bucket live in its own hash: a rotation's
//! new id starts without them (only the core fields are carried), a delete
//! or an expiry takes them along, a `put` that replaces the metadata keeps
//! them. Subscribing is not activity, is bounded (topics per session, topic
//! length: typed errors, nothing changed), takes any topic text, and a
//! subscribe whose reply was lost reports what the first try did. Against
//! one server and the cluster preset on a 6-node cluster.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use session_engine::limits::{TOPICS_PER_SESSION_MAX, TOPIC_LEN_MAX};
use session_engine::{Bucket, Error, RateDecision, SessionId, Timeout, TopicCursor};
use session_redis::{RedisConfig, RedisStore};
use support::proxy::Proxy;

const TTL: Timeout = Timeout::from_secs(600);

const BUCKET: Bucket = Bucket {
    capacity: 5,
    refill_per_sec: 1,
};

fn set(topics: Vec<String>) -> BTreeSet<String> {
    topics.into_iter().collect()
}

async fn state_goes_with_the_session(store: &RedisStore, server: &dyn Fn(&[&str]) -> String) {
    // Any text is a topic: braces, spaces, non-ASCII.
    let topics = ["file:///a/{b}/c", "ui://x y", "résumé", "s:nested", "}{"];
    let id = store.create(b"meta", TTL).await.unwrap();
    let before = store.peek(&id).await.unwrap();
    for topic in topics {
        assert!(store.subscribe(&id, topic).await.unwrap(), "{topic}");
    }
    assert_eq!(
        set(store.topics(&id).await.unwrap()),
        topics.iter().map(|t| (*t).to_owned()).collect()
    );
    assert!(matches!(
        store.rate_limit(&id, BUCKET, 2).await.unwrap(),
        RateDecision::Allowed { remaining: 3 }
    ));
    assert_eq!(
        store.peek(&id).await.unwrap().last_access_ms(),
        before.last_access_ms(),
        "subscribe and rate_limit are not activity"
    );
    for topic in topics {
        let page = store.subscribers(topic, TopicCursor::START, 10).await.unwrap();
        assert_eq!(page.ids, vec![id], "{topic}");
        assert_eq!(page.next, None);
    }

    // A put that replaces the metadata keeps the state (the same session).
    store.put(id, b"meta2", TTL).await.unwrap();
    assert_eq!(store.topics(&id).await.unwrap().len(), topics.len());

    // Rotation: the new id has the core fields only.
    let new = store.rotate(&id).await.expect("rotate");
    assert!(store.topics(&new).await.unwrap().is_empty());
    assert_eq!(
        store.rate_limit(&new, BUCKET, 1).await.unwrap(),
        RateDecision::Allowed { remaining: 4 },
        "a full bucket"
    );
    let fields: BTreeSet<String> = server(&["HKEYS", &store.key(&new)])
        .lines()
        .map(str::to_owned)
        .collect();
    let core: BTreeSet<String> = ["m", "c", "a", "t", "v", "w", "l", "bk", "bt", "bw", "bc", "br"]
        .iter()
        .map(|f| (*f).to_owned())
        .collect();
    assert_eq!(fields, core, "only the core fields and the new bucket");
    assert_eq!(store.peek(&new).await.unwrap().metadata(), b"meta2");
    for topic in topics {
        let page = store.subscribers(topic, TopicCursor::START, 10).await.unwrap();
        assert!(page.ids.is_empty(), "neither the old id nor the new: {topic}");
    }
    assert!(matches!(store.topics(&id).await, Err(Error::NotFound)));

    // Delete, then the same id again: a fresh start.
    store.subscribe(&new, "t").await.unwrap();
    store.delete(&new).await.unwrap();
    store.insert(new, b"again", TTL).await.unwrap();
    assert!(store.topics(&new).await.unwrap().is_empty());
    assert!(store
        .subscribers("t", TopicCursor::START, 10)
        .await
        .unwrap()
        .ids
        .is_empty());
    assert_eq!(
        store.rate_limit(&new, BUCKET, 0).await.unwrap(),
        RateDecision::Allowed { remaining: 5 }
    );

    // Expiry takes the state along (the key goes).
    // Made short once subscribed (replicated writes on a busy machine can
    // take longer than its life).
    let short = store.create(b"", Timeout::from_secs(60)).await.unwrap();
    store.subscribe(&short, "t").await.unwrap();
    store.set_ttl(&short, Timeout::from_ms(200)).await.unwrap();
    while store.contains(&short).await.unwrap() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(matches!(store.topics(&short).await, Err(Error::NotFound)));
    assert!(store
        .subscribers("t", TopicCursor::START, 10)
        .await
        .unwrap()
        .ids
        .is_empty());

    // Missing sessions.
    let missing = SessionId::random().unwrap();
    assert!(matches!(
        store.subscribe(&missing, "t").await,
        Err(Error::NotFound)
    ));
    assert!(matches!(
        store.unsubscribe(&missing, "t").await,
        Err(Error::NotFound)
    ));
    assert!(matches!(store.topics(&missing).await, Err(Error::NotFound)));
    assert_eq!(
        server(&["EXISTS", &store.key(&missing)]).trim(),
        "0",
        "nothing created"
    );
}

async fn limits_are_typed_errors(store: &RedisStore) {
    let id = store.create(b"", TTL).await.unwrap();
    assert!(matches!(
        store.subscribe(&id, "").await,
        Err(Error::InvalidArgument { .. })
    ));
    let longest = "x".repeat(TOPIC_LEN_MAX);
    assert!(store.subscribe(&id, &longest).await.unwrap());
    assert!(matches!(
        store.subscribe(&id, &"x".repeat(TOPIC_LEN_MAX + 1)).await,
        Err(Error::LimitExceeded { len, max, .. }) if len == TOPIC_LEN_MAX + 1 && max == TOPIC_LEN_MAX
    ));
    for page in [
        store.subscribers("t", TopicCursor::START, 0).await,
        store
            .subscribers("t", TopicCursor::START, session_engine::limits::LIST_PAGE_MAX + 1)
            .await,
    ] {
        assert!(matches!(page, Err(Error::InvalidPageSize { .. })), "{page:?}");
    }
    for i in 1..TOPICS_PER_SESSION_MAX {
        assert!(store.subscribe(&id, &format!("topic-{i}")).await.unwrap());
    }
    assert_eq!(store.topics(&id).await.unwrap().len(), TOPICS_PER_SESSION_MAX);
    assert!(matches!(
        store.subscribe(&id, "one-too-many").await,
        Err(Error::LimitExceeded { len, max, .. })
            if len == TOPICS_PER_SESSION_MAX + 1 && max == TOPICS_PER_SESSION_MAX
    ));
    assert!(
        !store.subscribe(&id, "topic-1").await.unwrap(),
        "at the limit, a topic it has is still just `false`"
    );
    assert!(store
        .subscribers("one-too-many", TopicCursor::START, 5)
        .await
        .unwrap()
        .ids
        .is_empty());
    assert!(store.unsubscribe(&id, "topic-1").await.unwrap());
    assert!(store.subscribe(&id, "one-too-many").await.unwrap(), "room again");
    assert_eq!(store.topics(&id).await.unwrap().len(), TOPICS_PER_SESSION_MAX);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_one_server() {
    let server = support::Server::standalone();
    let store = RedisStore::connect(
        RedisConfig::standalone(server.url()).key_prefix(support::unique_prefix("state")),
    )
    .await
    .expect("connect");
    state_goes_with_the_session(&store, &|args| server.cli(args)).await;
    limits_are_typed_errors(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_with_the_cluster_preset() {
    let cluster = support::Cluster::start(1_000);
    let store = RedisStore::connect(
        support::cluster_preset(cluster.urls()).key_prefix(support::unique_prefix("state")),
    )
    .await
    .expect("connect");
    let node = &cluster.nodes[0];
    let cli = |args: &[&str]| {
        let mut with_redirects = vec!["-c"];
        with_redirects.extend_from_slice(args);
        node.cli(&with_redirects)
    };
    state_goes_with_the_session(&store, &cli).await;
    limits_are_typed_errors(&store).await;
    assert_eq!(store.stats().replication_shortfalls, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_whose_reply_was_lost_reports_what_it_did() {
    let server = support::Server::standalone();
    let proxy = Proxy::start(server.port).await;
    let store = RedisStore::connect(
        RedisConfig::standalone(proxy.url())
            .key_prefix(support::unique_prefix("sub-lost"))
            .request_timeout(Duration::from_secs(5)),
    )
    .await
    .expect("connect");
    let id = store.create(b"", TTL).await.unwrap();
    let (_, sha) = session_redis::script_source("subscribe").unwrap();
    proxy.lose_reply(&sha);
    assert!(
        store.subscribe(&id, "t").await.expect("resent"),
        "the resend finds its own nonce: newly subscribed"
    );
    assert!(proxy.fault_fired());
    assert_eq!(
        store.subscribers("t", TopicCursor::START, 5).await.unwrap().ids,
        vec![id]
    );
    // The index write's reply lost: resent (a set operation), listed once.
    let other = store.create(b"", TTL).await.unwrap();
    let (_, sha) = session_redis::script_source("index_add").unwrap();
    proxy.lose_reply(&sha);
    assert!(store.subscribe(&other, "t").await.expect("resent"));
    assert!(proxy.fault_fired());
    let page = store.subscribers("t", TopicCursor::START, 5).await.unwrap();
    assert_eq!(set_of(&page.ids), set_of(&[id, other]));
    // An unsubscribe whose reply was lost: done once, reported done.
    let (_, sha) = session_redis::script_source("unsubscribe").unwrap();
    proxy.lose_reply(&sha);
    assert!(store.unsubscribe(&id, "t").await.expect("resent"));
    assert!(proxy.fault_fired());
    assert_eq!(
        store.subscribers("t", TopicCursor::START, 5).await.unwrap().ids,
        vec![other]
    );
    assert!(store.stats().resends >= 3);

    // An unsubscribe whose index removal is refused leaves a stale entry;
    // subscribing again adds a second entry (another nonce) for the same
    // session. The fan-out lists the session once and removes the stale
    // entry, never the live one.
    let topic_key = store.topic_key("t");
    proxy.refuse("ZREM", "ERR refused by the test");
    assert!(
        store.unsubscribe(&other, "t").await.unwrap(),
        "done in the session"
    );
    assert!(proxy.fault_fired());
    assert_eq!(server.cli(&["ZCARD", &topic_key]).trim(), "1", "the stale entry");
    assert!(store
        .subscribers("t", TopicCursor::START, 5)
        .await
        .unwrap()
        .ids
        .is_empty());
    assert_eq!(
        server.cli(&["ZCARD", &topic_key]).trim(),
        "0",
        "removed by the fan-out"
    );
    assert!(store.subscribe(&other, "t").await.unwrap());
    proxy.refuse("ZREM", "ERR refused by the test");
    assert!(store.unsubscribe(&other, "t").await.unwrap());
    assert!(proxy.fault_fired());
    assert!(store.subscribe(&other, "t").await.unwrap());
    assert_eq!(
        server.cli(&["ZCARD", &topic_key]).trim(),
        "2",
        "a stale and a live entry"
    );
    let page = store.subscribers("t", TopicCursor::START, 1).await.unwrap();
    assert_eq!(
        (page.ids, page.next),
        (vec![other], None),
        "once, and nothing after it"
    );
    assert_eq!(
        server.cli(&["ZCARD", &topic_key]).trim(),
        "1",
        "the stale one removed"
    );
    assert_eq!(
        store.subscribers("t", TopicCursor::START, 5).await.unwrap().ids,
        vec![other]
    );
}

fn set_of(ids: &[SessionId]) -> BTreeSet<SessionId> {
    ids.iter().copied().collect()
}

/// A master busy running a script (`-BUSY`, a state of the whole node)
/// while a fan-out checks its subscribers: the check is resent, and the
/// page never leaves out a subscriber that stands (the refusal read as
/// "unknown": neither listed nor removed, and the page went on past it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_master_does_not_drop_subscribers_from_a_fan_out() {
    let server = support::Server::standalone();
    let proxy = Proxy::start(server.port).await;
    let store = RedisStore::connect(
        RedisConfig::standalone(proxy.url())
            .key_prefix(support::unique_prefix("busy"))
            .request_timeout(Duration::from_secs(5)),
    )
    .await
    .expect("connect");
    let ids = support::create_named(&store, 3).await;
    for id in &ids {
        assert!(store.subscribe(id, "t").await.unwrap());
    }
    proxy.refuse(
        "HGET",
        "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.",
    );
    let page = store.subscribers("t", TopicCursor::START, 10).await;
    assert!(proxy.fault_fired());
    let page = page.expect("served once the node is free");
    assert_eq!(set_of(&page.ids), set_of(&ids), "{page:?}");
    assert_eq!(page.next, None);
}
