//! A fan-out listing (`subscribers`) says "no more" (`next == None`) only
//! at the end of the topic's index: a page that gives up early (its round
//! cap, its time budget) hands back a cursor to resume from, however many
//! stale entries (sessions deleted or expired while subscribed) come before
//! the next live subscriber. On one server, with the index's stale entries
//! written straight into it.

mod support;

use support::list_all;

use std::time::Duration;

use session_engine::{SessionId, Timeout};
use session_redis::limits::SCAN_CALLS_MAX;
use session_redis::{RedisConfig, RedisStore};

const TTL: Timeout = Timeout::from_secs(600);

/// A nonce as the store writes them (16 lowercase hex digits).
const NONCE: &str = "0123456789abcdef";

/// The index member of a session that does not exist (an entry left by a
/// session that was deleted or expired): the id `n` in 16 ASCII digits,
/// which sort before any id whose first byte is above `'9'`.
fn stale_member(n: usize) -> String {
    format!("{n:016}{NONCE}")
}

/// `ZADD key 0 m ...` of `members`, 1000 to a command, straight to the
/// server.
fn zadd(server: &support::Server, key: &str, members: &[String]) {
    for chunk in members.chunks(1_000) {
        let mut args = vec!["ZADD", key];
        for m in chunk {
            args.extend(["0", m.as_str()]);
        }
        let reply = support::raw_command(server.port, &args).expect("ZADD");
        assert_eq!(reply.trim(), format!(":{}", chunk.len()), "ZADD");
    }
}

/// A live subscriber whose id sorts after every stale member.
async fn live_subscriber(store: &RedisStore, topic: &str) -> SessionId {
    let id = SessionId::from_bytes([0xf0; 16]);
    store.insert(id, b"live", TTL).await.expect("insert");
    assert!(store.subscribe(&id, topic).await.expect("subscribe"));
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_that_runs_out_of_rounds_hands_back_a_cursor() {
    let server = support::Server::standalone();
    // A budget far beyond what the rounds take here: the page ends on its
    // round cap (SCAN_CALLS_MAX), not on its time.
    let store = RedisStore::connect(
        RedisConfig::standalone(server.url())
            .key_prefix(support::unique_prefix("rounds"))
            .request_timeout(Duration::from_secs(60)),
    )
    .await
    .expect("connect");
    let topic = "crowded";
    let live = live_subscriber(&store, topic).await;
    // A page of 1 reads its entries at most 1 + 8 at a round: more stale
    // entries than its rounds can read, all before the live subscriber.
    let stale_count = SCAN_CALLS_MAX * (1 + 8) + 1_000;
    let stale: Vec<String> = (0..stale_count).map(stale_member).collect();
    zadd(&server, &store.topic_key(topic), &stale);

    let (ids, pages) = list_all(&store, topic, 1).await;
    println!("{pages} pages through {stale_count} stale entries");
    assert_eq!(ids, vec![live], "the live subscriber behind the stale entries");
    assert!(pages > 1, "the first page ran out of rounds: {pages} page(s)");
    // Every stale entry met was removed (at most 1000 a page); a second
    // listing finds the live subscriber again.
    let (again, _) = list_all(&store, topic, 1).await;
    assert_eq!(again, vec![live]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_the_store_did_not_write_do_not_end_the_listing() {
    let server = support::Server::standalone();
    let store = RedisStore::connect(
        RedisConfig::standalone(server.url()).key_prefix(support::unique_prefix("foreign")),
    )
    .await
    .expect("connect");
    let topic = "foreign";
    let live = live_subscriber(&store, topic).await;
    // Stale entries and members of someone else's making (too long, not a
    // nonce, too short) in turn, all before the live subscriber: every
    // batch the fan-out reads holds members it skips.
    let mut members = Vec::new();
    for n in 0..100 {
        members.push(stale_member(n));
        members.push(match n % 3 {
            0 => format!("{n:016}{NONCE}-and-more"),
            1 => format!("{n:016}NOT-A-HEX-NONCE!"),
            _ => format!("{n:016}"),
        });
    }
    zadd(&server, &store.topic_key(topic), &members);

    for limit in [1, 2, 7, 1_000] {
        let (ids, pages) = list_all(&store, topic, limit).await;
        assert_eq!(ids, vec![live], "pages of {limit} ({pages} pages)");
    }
    // The stale entries are gone; the foreign members are left alone.
    let left = server.cli(&["ZCARD", &store.topic_key(topic)]);
    assert_eq!(left.trim(), "101", "100 foreign members and the live entry");
}
