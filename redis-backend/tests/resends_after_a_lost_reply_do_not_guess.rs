//! A write whose reply was lost is resent; when the resend finds its
//! session (or its subscription) gone, it cannot tell "my first try never
//! ran" from "my first try ran and another client undid it since". It
//! must not guess: it reports `OutcomeUnknown`, and in particular does not
//! apply again over another client's acknowledged delete or unsubscribe;
//! nor does a resent unsubscribe remove a subscription another client made
//! after its first try.
//!
//! One server behind a proxy that loses the first try's reply and holds the
//! resend while another client (straight to the server) writes.

mod support;

use std::future::Future;
use std::time::Duration;

use session_engine::{Error, Op, SessionId, Timeout, TopicCursor};
use session_redis::{RedisConfig, RedisStore};
use support::proxy::Proxy;

const TTL: Timeout = Timeout::from_secs(600);

/// Only a hang guard: the resend reaches the proxy within milliseconds.
const HELD_WITHIN: Duration = Duration::from_secs(30);

struct Setup {
    server: support::Server,
    front: Proxy,
    /// Through the proxy.
    store: RedisStore,
    /// Another client, straight to the server.
    other: RedisStore,
    prefix: String,
}

async fn setup(tag: &str) -> Setup {
    let server = support::Server::standalone();
    let front = Proxy::start(server.port).await;
    let prefix = support::unique_prefix(tag);
    let store = RedisStore::connect(
        RedisConfig::standalone(front.url())
            .key_prefix(prefix.clone())
            .request_timeout(Duration::from_secs(10)),
    )
    .await
    .expect("connect through the proxy");
    let other = RedisStore::connect(RedisConfig::standalone(server.url()).key_prefix(prefix.clone()))
        .await
        .expect("connect");
    Setup {
        server,
        front,
        store,
        other,
        prefix,
    }
}

/// The resend reported doubt (`r`), and `id` still holds the session
/// another client stored there meanwhile, with `metadata`: the resend
/// undid nothing it had acknowledged.
async fn doubted_and_left<T: std::fmt::Debug>(
    r: session_engine::Result<T>,
    other: &RedisStore,
    id: &SessionId,
    metadata: &[u8],
) {
    assert!(matches!(r, Err(Error::OutcomeUnknown { .. })), "{r:?}");
    let stored = other.peek(id).await.expect("the other client's session stands");
    assert_eq!(stored.metadata(), metadata);
}

/// Another client deletes the session under `id` (the delete acknowledged:
/// it finds one) and inserts its own there, with `metadata`.
async fn replaced_after_a_delete(other: &RedisStore, id: SessionId, metadata: &[u8]) {
    other.delete(&id).await.expect("a session to delete");
    other
        .insert(id, metadata, TTL)
        .await
        .expect("the id is free again");
}

/// Runs `op` with the reply of its request marked `script`'s SHA-1 lost and
/// its resend held until `between` (another client's write) is done.
async fn with_a_write_between<T: Send + 'static>(
    front: &Proxy,
    script: &str,
    op: impl Future<Output = T> + Send + 'static,
    between: impl Future<Output = ()>,
) -> T {
    let (_, sha) = session_redis::script_source(script).expect("a script");
    with_a_write_between_marked(front, &sha, op, between).await
}

/// As [`with_a_write_between`], for the requests that contain `marker`.
async fn with_a_write_between_marked<T: Send + 'static>(
    front: &Proxy,
    marker: &str,
    op: impl Future<Output = T> + Send + 'static,
    between: impl Future<Output = ()>,
) -> T {
    let held = front.held();
    front.lose_reply_then_hold(marker);
    let op = tokio::spawn(op);
    let start = std::time::Instant::now();
    while front.held() == held {
        assert!(start.elapsed() < HELD_WITHIN, "the resend never came");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    between.await;
    front.release();
    op.await.expect("the operation's task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insert_does_not_undo_a_delete() {
    let s = setup("insert").await;
    let (front, store, other) = (&s.front, &s.store, &s.other);
    let id = SessionId::random().unwrap();
    let r = with_a_write_between(
        front,
        "insert",
        {
            let store = store.clone();
            async move { store.insert(id, b"mine", TTL).await }
        },
        async {
            other.delete(&id).await.expect("the first try is in: deleted");
        },
    )
    .await;
    assert!(matches!(r, Err(Error::OutcomeUnknown { .. })), "{r:?}");
    assert!(
        !other.contains(&id).await.unwrap(),
        "the acknowledged delete stands"
    );
    assert_eq!(front.held(), 1);

    // With nothing in between, the resend finds its own token: done.
    let (_, sha) = session_redis::script_source("insert").unwrap();
    front.lose_reply(&sha);
    store
        .insert(id, b"mine", TTL)
        .await
        .expect("resent, found its own");
    assert!(front.fault_fired());
    assert_eq!(other.peek(&id).await.unwrap().metadata(), b"mine");
}

/// A delete whose first try ran (its reply lost), then another client
/// inserted a session under the same id: the resend must not delete that
/// acknowledged session. It sent `DEL` again and did; now it asks whether
/// the session is there and, finding one, reports doubt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_does_not_undo_an_insert() {
    let s = setup("delete").await;
    let (front, store, other) = (&s.front, &s.store, &s.other);
    let id = SessionId::random().unwrap();
    store.insert(id, b"first", TTL).await.unwrap();
    // The key marks both the first try (`DEL`) and the resend.
    let key = store.key(&id);
    let r = with_a_write_between_marked(
        front,
        &key,
        {
            let store = store.clone();
            async move { store.delete(&id).await }
        },
        async {
            other
                .insert(id, b"second", TTL)
                .await
                .expect("the first try is in: inserted anew");
        },
    )
    .await;
    doubted_and_left(r, other, &id, b"second").await;

    // With nothing in between, the resend finds the session gone: done.
    front.lose_reply("DEL");
    store.delete(&id).await.expect("resent, found it gone");
    assert!(front.fault_fired());
    assert!(!other.contains(&id).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_stores_its_session_again() {
    // No one else can know a fresh id before `create` returns it: a
    // session gone before the resend can only have expired, and storing it
    // again undoes no one's write.
    let Setup {
        server,
        front,
        store,
        other,
        prefix,
    } = setup("create").await;
    let pattern = format!("{prefix}*");
    let id = with_a_write_between(
        &front,
        "insert",
        {
            let store = store.clone();
            async move { store.create(b"fresh", TTL).await }
        },
        async {
            // As if it expired: the test reads the key off the server.
            let keys = server.cli(&["KEYS", &pattern]);
            let key = keys.trim();
            assert!(!key.is_empty() && !key.contains('\n'), "one session: {keys:?}");
            assert_eq!(server.cli(&["DEL", key]).trim(), "1");
        },
    )
    .await
    .expect("created");
    assert_eq!(other.peek(&id).await.unwrap().metadata(), b"fresh");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_does_not_undo_an_unsubscribe() {
    let s = setup("subscribe").await;
    let (front, store, other) = (&s.front, &s.store, &s.other);
    let id = store.create(b"", TTL).await.unwrap();
    let r = with_a_write_between(
        front,
        "subscribe",
        {
            let store = store.clone();
            async move { store.subscribe(&id, "t").await }
        },
        async {
            assert!(
                other.unsubscribe(&id, "t").await.unwrap(),
                "the first try is in: unsubscribed"
            );
        },
    )
    .await;
    assert!(matches!(r, Err(Error::OutcomeUnknown { .. })), "{r:?}");
    assert!(
        other.topics(&id).await.unwrap().is_empty(),
        "the acknowledged unsubscribe stands"
    );
    let page = other.subscribers("t", TopicCursor::START, 10).await.unwrap();
    assert!(page.ids.is_empty(), "{page:?}");

    // Subscribed again by another client in between (another nonce): the
    // resend finds it subscribed, not by itself.
    let r = with_a_write_between(
        front,
        "subscribe",
        {
            let store = store.clone();
            async move { store.subscribe(&id, "t").await }
        },
        async {
            assert!(other.unsubscribe(&id, "t").await.unwrap());
            assert!(other.subscribe(&id, "t").await.unwrap());
        },
    )
    .await;
    assert!(!r.expect("subscribed"), "already, by the other client");
    let page = other.subscribers("t", TopicCursor::START, 10).await.unwrap();
    assert_eq!(page.ids, vec![id]);
}

/// `store.unsubscribe(id, "t")` with its first reply lost and its resend
/// held while `between` runs.
async fn unsubscribe_around(
    front: &Proxy,
    store: &RedisStore,
    id: SessionId,
    between: impl Future<Output = ()>,
) -> Result<bool, Error> {
    let store = store.clone();
    with_a_write_between(
        front,
        "unsubscribe",
        async move { store.unsubscribe(&id, "t").await },
        between,
    )
    .await
}

/// An unsubscribe whose first try ran (its reply lost), then another
/// client subscribed the session to the topic again: the resend must not
/// remove that acknowledged subscription. It found the field, took it for
/// its own, and removed it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsubscribe_does_not_undo_a_subscribe() {
    let s = setup("unsubscribe").await;
    let (front, store, other) = (&s.front, &s.store, &s.other);
    let id = store.create(b"", TTL).await.unwrap();
    assert!(store.subscribe(&id, "t").await.unwrap());
    let r = unsubscribe_around(front, store, id, async {
        assert!(
            other.subscribe(&id, "t").await.unwrap(),
            "the first try is in: subscribed anew"
        );
    })
    .await;
    assert!(r.expect("the first try removed it"), "unsubscribed");
    assert_eq!(
        other.topics(&id).await.unwrap(),
        vec!["t".to_owned()],
        "the acknowledged subscribe stands"
    );
    let page = other.subscribers("t", TopicCursor::START, 10).await.unwrap();
    assert_eq!(page.ids, vec![id]);

    // Another unsubscribe came in between too: the resend cannot tell
    // whose removal was last, and removes nothing.
    let r = unsubscribe_around(front, store, id, async {
        assert!(other.subscribe(&id, "t").await.unwrap());
        assert!(other.unsubscribe(&id, "t").await.unwrap());
        assert!(other.subscribe(&id, "t").await.unwrap());
    })
    .await;
    assert!(matches!(r, Err(Error::OutcomeUnknown { .. })), "{r:?}");
    assert_eq!(other.topics(&id).await.unwrap(), vec!["t".to_owned()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_that_finds_the_session_gone_may_be_in() {
    // The first try committed; the session was deleted before the resend.
    // "Not found" would say the update never applied.
    let s = setup("update").await;
    let (front, store, other) = (&s.front, &s.store, &s.other);
    let id = store.create(b"n", TTL).await.unwrap();
    let r = with_a_write_between(
        front,
        "commit",
        {
            let store = store.clone();
            async move { store.update(&id, |m| [m, b"+1"].concat()).await }
        },
        async {
            other.delete(&id).await.expect("deleted");
        },
    )
    .await;
    assert!(matches!(r, Err(Error::OutcomeUnknown { .. })), "{r:?}");

    // try_update's Replace, the same.
    let id = store.create(b"n", TTL).await.unwrap();
    let r = with_a_write_between(
        front,
        "commit",
        {
            let store = store.clone();
            async move {
                store
                    .try_update(&id, |m| Ok::<_, ()>(Op::Replace([m, b"+1"].concat())))
                    .await
            }
        },
        async {
            other.delete(&id).await.expect("deleted");
        },
    )
    .await;
    assert!(matches!(r, Err(Error::OutcomeUnknown { .. })), "{r:?}");

    // Without a lost reply, a session gone is `NotFound`.
    assert!(matches!(
        store.update(&id, |m| m.to_vec()).await,
        Err(Error::NotFound)
    ));
}

/// A put whose first try ran (its reply lost), then another client rotated
/// the session: the put's data went to the new id with it, and the old id
/// must stay gone (a rotation is the defence against session fixation). A
/// resend that stored the put again would bring the old id back beside the
/// new one; it reports doubt instead. The same after a delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_does_not_revive_a_rotated_or_deleted_id() {
    let s = setup("put").await;
    let (front, store, other) = (&s.front, &s.store, &s.other);
    let id = other.create(b"before", TTL).await.unwrap();
    let (rotated_tx, rotated_rx) = tokio::sync::oneshot::channel();
    let r = with_a_write_between(
        front,
        "put",
        {
            let store = store.clone();
            async move { store.put(id, b"mine", TTL).await }
        },
        async {
            let new = other.rotate(&id).await.expect("the first try is in: rotated");
            rotated_tx.send(new).unwrap();
        },
    )
    .await;
    let new = rotated_rx.await.unwrap();
    assert!(matches!(r, Err(Error::OutcomeUnknown { .. })), "{r:?}");
    assert!(
        !other.contains(&id).await.unwrap(),
        "the rotated-away id stays gone"
    );
    assert_eq!(other.peek(&new).await.unwrap().metadata(), b"mine");

    let id = other.create(b"before", TTL).await.unwrap();
    let r = with_a_write_between(
        front,
        "put",
        {
            let store = store.clone();
            async move { store.put(id, b"mine", TTL).await }
        },
        async {
            other.delete(&id).await.expect("the first try is in: deleted");
        },
    )
    .await;
    assert!(matches!(r, Err(Error::OutcomeUnknown { .. })), "{r:?}");
    assert!(
        !other.contains(&id).await.unwrap(),
        "the acknowledged delete stands"
    );

    // With nothing in between, the resend finds its own token: done, and
    // a put of a new id whose reply was lost stores it once.
    let (_, sha) = session_redis::script_source("put").unwrap();
    front.lose_reply(&sha);
    store.put(id, b"fresh", TTL).await.expect("resent, found its own");
    assert!(front.fault_fired());
    assert_eq!(other.peek(&id).await.unwrap().metadata(), b"fresh");
}

/// A `set_lifetime` whose cap has already passed ends the session; when
/// its reply was lost, the resend finds the session gone and cannot tell
/// its own first try's end from another client's delete: `OutcomeUnknown`,
/// not `NotFound` (which says the call did nothing, while it ended the
/// session).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lifetime_change_that_finds_the_session_gone_may_have_ended_it() {
    let s = setup("lifetime").await;
    let (front, store, other) = (&s.front, &s.store, &s.other);
    let id = other.create(b"m", TTL).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let (_, sha) = session_redis::script_source("set_lifetime").unwrap();
    front.lose_reply(&sha);
    let r = store.set_lifetime(&id, Timeout::from_ms(1)).await;
    assert!(front.fault_fired());
    assert!(matches!(r, Err(Error::OutcomeUnknown { .. })), "{r:?}");
    assert!(!other.contains(&id).await.unwrap(), "ended by the first try");

    // Without a lost reply: done, and a session gone is `NotFound`.
    let id = other.create(b"m", TTL).await.unwrap();
    store.set_lifetime(&id, Timeout::from_secs(60)).await.unwrap();
    other.delete(&id).await.unwrap();
    assert!(matches!(
        store.set_lifetime(&id, Timeout::from_secs(60)).await,
        Err(Error::NotFound)
    ));
}

/// A `set_ttl` or a `rotate` whose first try ran (its reply lost) and left
/// a session that expired before the resend (a very short timeout; the
/// rotated session keeps its timeout under the new id, which only the
/// call knew): the resend finds nothing, and cannot tell that from "no
/// such session": `OutcomeUnknown`, not `NotFound` (which says the call
/// did nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_session_expired_after_its_first_try_may_be_in() {
    let s = setup("expired-after").await;
    let (front, store, other) = (&s.front, &s.store, &s.other);
    let expire = || tokio::time::sleep(Duration::from_millis(600));
    let id = other.create(b"m", TTL).await.unwrap();
    let r = with_a_write_between(
        front,
        "set_ttl",
        {
            let store = store.clone();
            async move { store.set_ttl(&id, Timeout::from_ms(1)).await }
        },
        expire(),
    )
    .await;
    assert!(matches!(r, Err(Error::OutcomeUnknown { .. })), "{r:?}");
    assert!(!other.contains(&id).await.unwrap());

    let id = other.create(b"m", Timeout::from_ms(300)).await.unwrap();
    let r = with_a_write_between(
        front,
        "rotate",
        {
            let store = store.clone();
            async move { store.rotate(&id).await }
        },
        expire(),
    )
    .await;
    assert!(matches!(r, Err(Error::OutcomeUnknown { .. })), "{r:?}");

    // Without a lost reply, a session gone is `NotFound`.
    assert!(matches!(store.rotate(&id).await, Err(Error::NotFound)));
    assert!(matches!(store.set_ttl(&id, TTL).await, Err(Error::NotFound)));
    assert!(matches!(store.touch(&id).await, Err(Error::NotFound)));
}

/// A rotation whose reply was lost, and whose new session then expired
/// while someone who knew the old id inserted it again: the resend finds no
/// token and no new key, and must not move that other client's session to
/// a new id only this call knows (it did, and answered `Ok`: the other
/// client's acknowledged session vanished from its id).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_does_not_take_an_id_inserted_again_after_its_first_try() {
    let s = setup("rotate-again").await;
    let (front, store, other) = (&s.front, &s.store, &s.other);
    let id = other.create(b"victim", Timeout::from_ms(300)).await.unwrap();
    let r = with_a_write_between(
        front,
        "rotate",
        {
            let store = store.clone();
            async move { store.rotate(&id).await }
        },
        async {
            // The first try's new session expires; the old id comes back.
            tokio::time::sleep(Duration::from_millis(600)).await;
            other
                .insert(id, b"mallory", TTL)
                .await
                .expect("the old id is free");
        },
    )
    .await;
    doubted_and_left(r, other, &id, b"mallory").await;
}

/// A per-session state write whose reply was lost, and whose session
/// another client then deleted: the resend finds the session gone, and
/// cannot tell whether its first try applied; it reports `OutcomeUnknown`
/// as the other writes do (they said `NotFound`: "nothing was done").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_writes_that_find_the_session_gone_may_be_in() {
    let s = setup("state-gone").await;
    let (front, store, other) = (&s.front, &s.store, &s.other);
    let bucket = session_engine::Bucket {
        capacity: 5,
        refill_per_sec: 1,
    };
    for op in ["subscribe", "unsubscribe", "rate_limit"] {
        let id = other.create(b"m", TTL).await.unwrap();
        other.subscribe(&id, "t").await.unwrap();
        let store = store.clone();
        let call = async move {
            match op {
                "subscribe" => store.subscribe(&id, "u").await.map(drop),
                "unsubscribe" => store.unsubscribe(&id, "t").await.map(drop),
                _ => store.rate_limit(&id, bucket, 1).await.map(drop),
            }
        };
        let r = with_a_write_between(front, op, call, async {
            other.delete(&id).await.expect("deleted");
        })
        .await;
        assert!(matches!(r, Err(Error::OutcomeUnknown { .. })), "{op}: {r:?}");
    }
}

/// A `put` whose first try stored a session under a new id (its reply
/// lost), which another client then deleted (acknowledged: it existed only
/// through that first try) and inserted again: the resend must not
/// overwrite the session inserted after the delete. It finds a session
/// that does not carry its token, and cannot tell "my first try never ran"
/// from "it ran and was undone": `OutcomeUnknown`, nothing written. Before,
/// it replaced the other client's session, a put applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_does_not_overwrite_a_session_inserted_after_its_first_try() {
    let s = setup("put-again").await;
    let (front, store, other) = (&s.front, &s.store, &s.other);
    let id = SessionId::random().unwrap();
    let r = with_a_write_between(
        front,
        "put",
        {
            let store = store.clone();
            async move { store.put(id, b"mine", TTL).await }
        },
        replaced_after_a_delete(other, id, b"theirs"),
    )
    .await;
    doubted_and_left(r, other, &id, b"theirs").await;
}

/// A `set_ttl` whose first try ran (its reply lost), then the session was
/// deleted and another inserted under its id: the resend must not set the
/// new session's timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_change_does_not_reach_a_session_inserted_after_its_first_try() {
    let s = setup("ttl-again").await;
    let (front, store, other) = (&s.front, &s.store, &s.other);
    let id = other.create(b"before", TTL).await.unwrap();
    let r = with_a_write_between(
        front,
        "set_ttl",
        {
            let store = store.clone();
            async move { store.set_ttl(&id, Timeout::from_secs(5)).await }
        },
        replaced_after_a_delete(other, id, b"theirs"),
    )
    .await;
    doubted_and_left(r, other, &id, b"theirs").await;
    assert_eq!(
        other.peek(&id).await.unwrap().timeout(),
        TTL,
        "the inserted session keeps its own timeout"
    );

    // With nothing in between, the resend applies (to the same session).
    let (_, sha) = session_redis::script_source("set_ttl").unwrap();
    front.lose_reply(&sha);
    store.set_ttl(&id, Timeout::from_secs(7)).await.expect("resent");
    assert!(front.fault_fired());
    assert_eq!(other.peek(&id).await.unwrap().timeout(), Timeout::from_secs(7));
}

/// A `set_lifetime` whose cap had already passed ended the session on its
/// first try (its reply lost); another client then inserted a session
/// under the id: the resend must not end that one, nor cap it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lifetime_change_does_not_reach_a_session_inserted_after_its_first_try() {
    let s = setup("lifetime-again").await;
    let (front, store, other) = (&s.front, &s.store, &s.other);
    let id = other.create(b"before", TTL).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let r = with_a_write_between(
        front,
        "set_lifetime",
        {
            let store = store.clone();
            async move { store.set_lifetime(&id, Timeout::from_ms(10)).await }
        },
        async {
            other
                .insert(id, b"theirs", TTL)
                .await
                .expect("the first try ended it");
            // Older than the cap by the time the resend runs.
            tokio::time::sleep(Duration::from_millis(20)).await;
        },
    )
    .await;
    doubted_and_left(r, other, &id, b"theirs").await;
    assert_eq!(
        other.peek(&id).await.unwrap().lifetime(),
        Timeout::Never,
        "the inserted session is not capped"
    );
}
