//! With `Replication::Wait`, no write is acknowledged (`Ok`) unless the
//! replicas confirmed it — on every path a write can take: the first try,
//! a resend after the server refused the first try (`TRYAGAIN`), a resend
//! after `NOSCRIPT`, and a resend after a try whose reply was lost (the
//! write applied, the connection closed before the answer came back; the
//! resend then finds the write already in: the insert's own token, the
//! update's own commit, the session already gone for a delete, the
//! rotation's token on the new key).
//!
//! Setup: a master, and its replica connected through a proxy the test
//! freezes (the replication link stops without an error: the master still
//! counts the replica as connected, but no acknowledgement comes back). The
//! store reaches the master through a second proxy that injects the
//! faults. Every write — create, insert, put, update, `try_update`'s
//! replace and delete, rotate, touch, set_ttl, delete — must then report
//! `OutcomeUnknown` on every path (it is applied on the
//! master, and lost if the master fails now), never `Ok`; reads still
//! answer. And `set_lifetime` on a subscribed session still carries its new
//! cap to the topic indexes when `WAIT` comes back short.

mod support;

use std::time::Duration;

use session_engine::{Error, SessionId, Timeout, Updated};
use session_redis::{RedisConfig, RedisStore, Replication};
use support::proxy::Proxy;
use support::Server;

/// What every wedged write waits out (its cost, some 60 times in the first
/// test), and the most an in-sync replica's acknowledgement may lag,
/// through the link's proxy on this test's runtime, before a setup write
/// fails: 200 ms left too little for a stall on the shared 2-core machine.
const WAIT_TIMEOUT: Duration = Duration::from_millis(500);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    FirstTry,
    AfterRefusal,
    AfterNoScript,
    AfterLostReply,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Create,
    Insert,
    Put,
    Update,
    TryReplace,
    TryDelete,
    Rotate,
    Touch,
    SetTtl,
    Delete,
}

const OPS: [Op; 10] = [
    Op::Create,
    Op::Insert,
    Op::Put,
    Op::Update,
    Op::TryReplace,
    Op::TryDelete,
    Op::Rotate,
    Op::Touch,
    Op::SetTtl,
    Op::Delete,
];
/// `AfterNoScript` last: it flushes the server's scripts before each write,
/// and a lost reply's first try must find its script loaded to apply. A
/// `put` or `set_ttl` whose first try went unanswered and whose resend
/// does not find its token in the session is `OutcomeUnknown` without
/// applying (it cannot tell a first try that never ran from one undone
/// since).
const PATHS: [Path; 4] = [
    Path::FirstTry,
    Path::AfterRefusal,
    Path::AfterLostReply,
    Path::AfterNoScript,
];

/// An id no session has yet, for `insert`.
fn fresh_id(path: Path) -> SessionId {
    SessionId::from_bytes([0x40 + path as u8; 16])
}

async fn run(store: &RedisStore, op: Op, path: Path, id: SessionId) -> Result<(), Error> {
    match op {
        Op::Create => store.create(b"created", Timeout::from_secs(600)).await.map(drop),
        Op::Insert => {
            store
                .insert(fresh_id(path), b"inserted", Timeout::from_secs(600))
                .await
        }
        Op::Put => store.put(id, b"put", Timeout::from_secs(600)).await,
        Op::Update => store.update(&id, |_| b"updated".to_vec()).await.map(drop),
        Op::TryReplace | Op::TryDelete => {
            let op = if op == Op::TryReplace {
                session_engine::Op::Replace(b"try-replaced".to_vec())
            } else {
                session_engine::Op::Delete
            };
            let updated = store
                .try_update(&id, |_| Ok::<_, ()>(op.clone()))
                .await?
                .expect("the closure decides");
            assert!(matches!(
                (op, updated),
                (session_engine::Op::Replace(_), Updated::Replaced(_))
                    | (session_engine::Op::Delete, Updated::Deleted(_))
            ));
            Ok(())
        }
        Op::Rotate => store.rotate(&id).await.map(drop),
        Op::Touch => store.touch(&id).await,
        Op::SetTtl => store.set_ttl(&id, Timeout::from_secs(1_234)).await,
        Op::Delete => store.delete(&id).await,
    }
}

/// What the master holds after `op` applied (reads do not wait for
/// replicas, so the store can look).
async fn check_applied(store: &RedisStore, master: &Server, op: Op, path: Path, id: SessionId) {
    let what = format!("{op:?} {path:?}");
    match op {
        Op::Create | Op::Touch => {}
        Op::Insert => {
            let s = store.peek(&fresh_id(path)).await.expect(&what);
            assert_eq!(s.metadata(), b"inserted", "{what}");
        }
        Op::Put => {
            let s = store.peek(&id).await.expect(&what);
            assert_eq!(s.metadata(), b"put", "{what}");
        }
        Op::Update => {
            let s = store.peek(&id).await.expect(&what);
            assert_eq!(s.metadata(), b"updated", "{what}");
        }
        Op::TryReplace => {
            let s = store.peek(&id).await.expect(&what);
            assert_eq!(s.metadata(), b"try-replaced", "{what}");
        }
        // The session moved to an id only the failed call knew.
        Op::Rotate => {
            assert!(matches!(store.peek(&id).await, Err(Error::NotFound)), "{what}");
        }
        Op::SetTtl => {
            let ttl: i64 = master
                .cli(&["PTTL", &store.key(&id)])
                .trim()
                .parse()
                .expect(&what);
            assert!(ttl > 600_000, "{what}: TTL {ttl} ms, expected about 1234 s");
        }
        Op::Delete | Op::TryDelete => {
            assert!(matches!(store.peek(&id).await, Err(Error::NotFound)), "{what}");
        }
    }
}

/// `EVAL` calls the server has answered (`INFO commandstats`).
fn eval_calls(server: &Server) -> u64 {
    server
        .cli(&["INFO", "commandstats"])
        .lines()
        .find_map(|l| l.trim().strip_prefix("cmdstat_eval:calls="))
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

/// A master and its replica, in sync, the replication link through a proxy
/// the test can freeze.
async fn master_and_replica() -> (Server, Proxy, Server) {
    let master = Server::standalone();
    let link = Proxy::start(master.port).await;
    let replica = tokio::task::block_in_place(|| Server::replica_of(link.port()));
    tokio::task::block_in_place(|| {
        support::wait_for("the replica in sync", Duration::from_secs(20), || {
            replica.info_field("replication", "master_link_status").as_deref() == Some("up")
                && master.info_field("replication", "connected_slaves").as_deref() == Some("1")
        })
    });
    (master, link, replica)
}

/// A store on `master` under a prefix of its own, asking one replica to
/// acknowledge every write (`WAIT 1`).
fn waiting_config(master: &Server, prefix: String) -> RedisConfig {
    RedisConfig::standalone(master.url())
        .key_prefix(prefix)
        .request_timeout(REQUEST_TIMEOUT)
        .replication(Replication::Wait {
            replicas: 1,
            timeout: WAIT_TIMEOUT,
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_write_is_acknowledged_without_its_replica_on_any_path() {
    let (master, link, _replica) = master_and_replica().await;
    let front = Proxy::start(master.port).await;
    let config = RedisConfig::standalone(front.url())
        .key_prefix(support::unique_prefix("wait-paths"))
        .request_timeout(REQUEST_TIMEOUT)
        .replication(Replication::Wait {
            replicas: 1,
            timeout: WAIT_TIMEOUT,
        });
    let store = RedisStore::connect(config).await.expect("connect");

    // While the link works, every write is acknowledged: one session per
    // (path, op) to act on later.
    let mut sessions = Vec::new();
    for path in PATHS {
        for op in OPS {
            let id = store
                .create(b"before", Timeout::from_secs(600))
                .await
                .unwrap_or_else(|e| panic!("with the replica in sync, create is acknowledged: {e}"));
            sessions.push(((path, op), id));
        }
    }
    store
        .touch(&sessions[0].1)
        .await
        .expect("touch with the replica in sync");

    link.wedge();
    let mut problems = Vec::new();
    for ((path, op), id) in sessions {
        match path {
            Path::FirstTry => {}
            Path::AfterRefusal => front.refuse("WAIT", "TRYAGAIN injected by the test"),
            Path::AfterLostReply => front.lose_reply("WAIT"),
            Path::AfterNoScript => assert_eq!(master.cli(&["SCRIPT", "FLUSH"]).trim(), "OK"),
        }
        let (resends, evals) = (store.stats().resends, eval_calls(&master));
        let r = run(&store, op, path, id).await;
        println!("{op:?} {path:?}: {r:?} resends {}", store.stats().resends);
        // The path named really was taken: a resend after the refused or
        // lost reply, the script sent whole after NOSCRIPT.
        let taken = match path {
            Path::FirstTry => true,
            Path::AfterRefusal | Path::AfterLostReply => store.stats().resends > resends,
            // A delete is no script (`DEL`, and `EXISTS` on a resend).
            Path::AfterNoScript => op == Op::Delete || eval_calls(&master) > evals,
        };
        if !taken {
            problems.push(format!("{op:?} {path:?}: the path was not taken"));
        }
        if !front.fault_fired() {
            front.disarm();
            problems.push(format!("{op:?} {path:?}: no WAIT came by with the write"));
        }
        match r {
            Err(Error::OutcomeUnknown { reason }) if reason.contains("replica") => {}
            other => problems.push(format!(
                "{op:?} {path:?}: {other:?} while the replica has not confirmed it"
            )),
        }
        check_applied(&store, &master, op, path, id).await;
    }
    assert!(
        problems.is_empty(),
        "{} of 40 cases:\n{}",
        problems.len(),
        problems.join("\n")
    );

    // Reads do not wait for replicas.
    let id = fresh_id(Path::FirstTry);
    store.get(&id).await.expect("get answers");
    store.peek(&id).await.expect("peek answers");
    assert!(store.contains(&id).await.expect("contains answers"));
    assert!(store.stats().replication_shortfalls >= 40);
}

/// `set_lifetime` on a subscribed session while the replica does not
/// acknowledge: the cap is set on the master, so the topic indexes must
/// follow it although `WAIT` comes back short (the index rewrite was
/// skipped, and an index could then expire before its subscriber, whose
/// cap had grown, silently dropping it from fan-outs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lifetime_cap_reaches_the_topic_indexes_though_wait_comes_back_short() {
    let (master, link, _replica) = master_and_replica().await;
    let config =
        waiting_config(&master, support::unique_prefix("wait-cap")).max_lifetime(Timeout::from_secs(600));
    let store = RedisStore::connect(config).await.expect("connect");
    let id = store.create(b"s", Timeout::from_secs(300)).await.unwrap();
    assert!(store.subscribe(&id, "topic").await.unwrap());
    let index_ttl = || -> i64 {
        master
            .cli(&["PTTL", &store.topic_key("topic")])
            .trim()
            .parse()
            .unwrap()
    };
    assert!(index_ttl() <= 700_000, "{}", index_ttl());

    link.wedge();
    let r = store.set_lifetime(&id, Timeout::from_secs(3_600)).await;
    assert!(matches!(r, Err(Error::OutcomeUnknown { .. })), "{r:?}");
    assert!(
        index_ttl() > 3_500_000,
        "the index kept {} ms for a subscriber capped at an hour",
        index_ttl()
    );
}

/// A subscribe while the replica does not acknowledge: the subscription
/// stands in the session on the master, so its topic index entry must be
/// written although `WAIT` comes back short (it was skipped: a fan-out
/// never listed a subscriber that stood), and the call says the outcome is
/// unknown. An index write that fails after the subscription was made is
/// not "not applied" either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_reaches_the_topic_index_though_wait_comes_back_short() {
    let (master, link, _replica) = master_and_replica().await;
    let config = waiting_config(&master, support::unique_prefix("wait-sub"));
    let store = RedisStore::connect(config).await.expect("connect");
    let id = store.create(b"s", Timeout::from_secs(300)).await.unwrap();
    link.wedge();
    let r = store.subscribe(&id, "topic").await;
    assert!(matches!(r, Err(Error::OutcomeUnknown { .. })), "{r:?}");
    let listed = store
        .subscribers("topic", session_engine::TopicCursor::START, 10)
        .await
        .expect("a read");
    assert_eq!(listed.ids, vec![id], "the subscriber standing in its session");

    // The index key holds foreign data: the subscription is made in the
    // session, its entry cannot be: doubt, not a refusal.
    master.cli(&["SET", &store.topic_key("other"), "foreign"]);
    let r = store.subscribe(&id, "other").await;
    assert!(matches!(r, Err(Error::OutcomeUnknown { .. })), "{r:?}");
    assert!(store.topics(&id).await.unwrap().contains(&"other".to_owned()));
}

/// A subscribe that finds the subscription already made, or an unsubscribe
/// that finds it already gone, on another client than the one whose
/// unreplicated write made it so, is not acknowledged (`Ok(false)`) either:
/// the replica has not seen the state it would report. This holds because
/// the script runs on the connection before its `WAIT`, and Redis (7.0)
/// takes the offset `WAIT` waits for from the master's at the connection's
/// last command, written or not (a `WAIT` alone on a fresh connection
/// returns at once). A change that answered such a no-op without its
/// `WAIT`, or sent the `WAIT` on a connection of its own, fails here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_found_already_made_by_another_client_waits_for_its_replica() {
    let (master, link, _replica) = master_and_replica().await;
    let prefix = support::unique_prefix("wait-found");
    let config = || waiting_config(&master, prefix.clone());
    // Each check on a store of its own, which writes nothing after the link
    // freezes: its `WAIT` would fail on that write of its own instead.
    let store = || async { RedisStore::connect(config()).await.expect("connect") };
    let (first, second, third) = (store().await, store().await, store().await);
    // The replica acknowledges these (and whatever the stores wrote as they
    // connected): the link freezes with it in sync.
    let id = first.create(b"s", Timeout::from_secs(300)).await.unwrap();
    assert!(first.subscribe(&id, "gone").await.unwrap());
    // With the replica in sync, a change found already made is acknowledged.
    assert!(!second.subscribe(&id, "gone").await.unwrap());
    assert!(!third.unsubscribe(&id, "never").await.unwrap());
    link.wedge();
    let r = first.subscribe(&id, "topic").await;
    assert!(matches!(r, Err(Error::OutcomeUnknown { .. })), "{r:?}");
    let r = second.subscribe(&id, "topic").await;
    assert!(
        matches!(r, Err(Error::OutcomeUnknown { .. })),
        "a subscribe found made by an unreplicated write answered {r:?}"
    );
    let r = first.unsubscribe(&id, "gone").await;
    assert!(matches!(r, Err(Error::OutcomeUnknown { .. })), "{r:?}");
    let r = third.unsubscribe(&id, "gone").await;
    assert!(
        matches!(r, Err(Error::OutcomeUnknown { .. })),
        "an unsubscribe found made by an unreplicated write answered {r:?}"
    );
}

/// A subscribe refused because the session holds the most topics it may
/// answers once that count is replicated, as a change found made does: it
/// may hold another client's subscribe the replica has not got, which a
/// failover would lose. It came back `LimitExceeded` at once, its `WAIT`
/// not looked at.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_full_of_topics_is_refused_once_replicated() {
    use session_engine::limits::TOPICS_PER_SESSION_MAX;
    let (master, link, _replica) = master_and_replica().await;
    let prefix = support::unique_prefix("wait-full");
    let config = || waiting_config(&master, prefix.clone());
    let first = RedisStore::connect(config()).await.expect("connect");
    let second = RedisStore::connect(config()).await.expect("connect");
    let id = first.create(b"s", Timeout::from_secs(300)).await.unwrap();
    for t in 0..TOPICS_PER_SESSION_MAX - 1 {
        assert!(first.subscribe(&id, &format!("t{t}")).await.unwrap());
    }
    link.wedge();
    let r = first.subscribe(&id, "last").await;
    assert!(matches!(r, Err(Error::OutcomeUnknown { .. })), "{r:?}");
    let r = second.subscribe(&id, "one more").await;
    assert!(
        matches!(r, Err(Error::OutcomeUnknown { .. })),
        "a session full of topics, one of them unreplicated, answered {r:?}"
    );
}

/// The same answers on Redis 7.2 and later (and Valkey), where a
/// connection's `WAIT` counts from the last write the connection itself
/// propagated, not from its last command: a script that wrote nothing left
/// that offset behind, and its `WAIT` returned at once, the state it
/// reported unreplicated. So a subscribe found made and an unsubscribe
/// found done write the session's timeout field back as it is (one `HSET`
/// each, which Redis propagates whatever it changes): seen here as the
/// replica's count of `HSET`s, which the no-op answers did not move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_found_already_made_propagates_a_write_for_its_wait() {
    let (master, _link, replica) = master_and_replica().await;
    let config = waiting_config(&master, support::unique_prefix("wait-noop"));
    let store = RedisStore::connect(config).await.expect("connect");
    let id = store.create(b"s", Timeout::from_secs(300)).await.unwrap();
    assert!(store.subscribe(&id, "made").await.unwrap());
    let in_sync = || in_sync(&master, &replica);
    let hsets = || replica_calls(&replica, &["hset"]);
    in_sync();
    let before = hsets();
    assert!(!store.subscribe(&id, "made").await.unwrap(), "found made");
    assert!(
        !store.unsubscribe(&id, "never").await.unwrap(),
        "found not subscribed"
    );
    in_sync();
    assert_eq!(
        hsets() - before,
        2,
        "each no-op answer propagates one write for its WAIT to wait on"
    );
    assert!(store.topics(&id).await.unwrap().contains(&"made".to_owned()));
}

/// Waits until the replica has all the master wrote (blocking this worker
/// thread, which the test runtime can spare).
fn in_sync(master: &Server, replica: &Server) {
    tokio::task::block_in_place(|| {
        support::wait_for("the replica in sync", Duration::from_secs(20), || {
            let offset = |s: &Server| s.info_field("replication", "master_repl_offset");
            offset(master).is_some() && offset(master) == offset(replica)
        });
    });
}

/// How many of these commands the replica has run (`INFO commandstats`).
fn replica_calls(replica: &Server, commands: &[&str]) -> u64 {
    commands
        .iter()
        .map(|c| {
            replica
                .info_field("commandstats", &format!("cmdstat_{c}"))
                .and_then(|s| s.split(['=', ',']).nth(1).and_then(|n| n.parse::<u64>().ok()))
                .unwrap_or(0)
        })
        .sum()
}

/// The same for a topic's index: a subscribe found made, or a lifetime
/// change that leaves the index as it was, still has its index write
/// acknowledged by `WAIT`. When the index script changed nothing (the entry
/// there, the TTL already long enough or none), it propagated nothing, and
/// on Redis 7.2+ and Valkey its `WAIT` covered no write: it could return
/// at once while another client's entry or TTL had not reached a replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_found_as_it_should_be_propagates_a_write_for_its_wait() {
    let (master, _link, replica) = master_and_replica().await;
    let config = waiting_config(&master, support::unique_prefix("wait-index-noop"));
    let store = RedisStore::connect(config).await.expect("connect");
    let id = store.create(b"s", Timeout::from_secs(300)).await.unwrap();
    assert!(store.subscribe(&id, "made").await.unwrap());
    let in_sync = || in_sync(&master, &replica);
    let index_writes = || replica_calls(&replica, &["zadd", "zrem", "pexpire", "pexpireat", "persist"]);
    in_sync();
    let before = index_writes();
    assert!(!store.subscribe(&id, "made").await.unwrap(), "found made");
    in_sync();
    let after_subscribe = index_writes();
    assert!(
        after_subscribe > before,
        "the index write of a subscribe found made propagated nothing"
    );
    store.set_lifetime(&id, Timeout::Never).await.unwrap();
    in_sync();
    assert!(
        index_writes() > after_subscribe,
        "the index write of a lifetime change that left the index as it was propagated nothing"
    );
}

/// A write that finds the session gone (or, for an insert, its id taken)
/// answers once the replicas have the state it found, as a change found
/// made does: another client's delete (or insert) the master applied may
/// not have reached a replica, and after a failover that lost it the
/// session would be back (or the id free) while this caller was told
/// `NotFound` (or `AlreadyExists`) and acted on it. The engine answers so
/// under `Durability::Always` only once its log is durable. (A rate-limit
/// charge is not waited for at all, its `NotFound` neither.) Here the
/// delete and the insert are another store's, made while the replica's
/// link is frozen: every answer from them is `OutcomeUnknown`, none
/// `NotFound` or `AlreadyExists`; with the replica in sync they are
/// `NotFound` and `AlreadyExists`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_found_gone_or_taken_is_answered_once_replicated() {
    use session_engine::Op;
    let (master, link, _replica) = master_and_replica().await;
    let prefix = support::unique_prefix("wait-gone");
    let config = || waiting_config(&master, prefix.clone());
    let writer = RedisStore::connect(config()).await.expect("connect");
    // Each write on a store of its own, connected while the replica is in
    // sync: after one unconfirmed write of its own, every later `WAIT` of a
    // connection comes back short whatever it covers, which would hide a
    // check that sent no fence (on Redis 7.2+).
    let mut readers = Vec::new();
    for _ in 0..12 {
        readers.push(RedisStore::connect(config()).await.expect("connect"));
    }
    // Every write that finds no session under `id`, or (for the insert)
    // finds `taken` held, or (keep and refusal) decides on `live`.
    let answers = |id: SessionId, taken: SessionId, live: SessionId, r: &[RedisStore]| {
        let r = r.to_vec();
        async move {
            vec![
                ("touch", r[0].touch(&id).await),
                ("update", r[1].update(&id, |m| m.to_vec()).await.map(drop)),
                (
                    "try_update",
                    r[2].try_update(&id, |_| Ok::<_, ()>(Op::Replace(b"x".to_vec())))
                        .await
                        .map(drop),
                ),
                ("set_ttl", r[3].set_ttl(&id, Timeout::from_secs(60)).await),
                (
                    "set_lifetime",
                    r[4].set_lifetime(&id, Timeout::from_secs(60)).await,
                ),
                ("rotate", r[5].rotate(&id).await.map(drop)),
                ("delete", r[6].delete(&id).await),
                ("subscribe", r[7].subscribe(&id, "t").await.map(drop)),
                ("unsubscribe", r[8].unsubscribe(&id, "t").await.map(drop)),
                (
                    "insert",
                    r[9].insert(taken, b"again", Timeout::from_secs(60)).await,
                ),
                (
                    "keep",
                    r[10]
                        .try_update(&live, |_| Ok::<_, ()>(Op::Keep))
                        .await
                        .map(|kept| {
                            assert!(matches!(kept, Ok(Updated::Kept(_))), "{kept:?}");
                        }),
                ),
                (
                    "refusal",
                    r[11]
                        .try_update(&live, |_| Err::<Op, _>("no"))
                        .await
                        .map(|refused| {
                            assert_eq!(refused.unwrap_err(), "no");
                        }),
                ),
            ]
        }
    };
    // In sync: the plain answers.
    let gone = writer.create(b"s", Timeout::from_secs(300)).await.unwrap();
    writer.delete(&gone).await.unwrap();
    let taken = writer.create(b"t", Timeout::from_secs(300)).await.unwrap();
    let live = writer.create(b"v", Timeout::from_secs(300)).await.unwrap();
    for (op, answer) in answers(gone, taken, live, &readers).await {
        let plain = match op {
            "insert" => matches!(answer, Err(Error::AlreadyExists)),
            "keep" | "refusal" => answer.is_ok(),
            _ => matches!(answer, Err(Error::NotFound)),
        };
        assert!(plain, "{op} with the replica in sync: {answer:?}");
    }
    // Frozen: another client's delete, insert and update are on the
    // master only. Fresh stores, whose connections have no write of their
    // own unconfirmed.
    let gone = writer.create(b"s", Timeout::from_secs(300)).await.unwrap();
    let mut fresh = Vec::new();
    for _ in 0..12 {
        fresh.push(RedisStore::connect(config()).await.expect("connect"));
    }
    link.wedge();
    let r = writer.delete(&gone).await;
    assert!(matches!(r, Err(Error::OutcomeUnknown { .. })), "{r:?}");
    let taken = SessionId::random().unwrap();
    let r = writer.insert(taken, b"t", Timeout::from_secs(300)).await;
    assert!(matches!(r, Err(Error::OutcomeUnknown { .. })), "{r:?}");
    let r = writer.update(&live, |_| b"v2".to_vec()).await;
    assert!(matches!(r, Err(Error::OutcomeUnknown { .. })), "{r:?}");
    for (op, answer) in answers(gone, taken, live, &fresh).await {
        assert!(
            matches!(answer, Err(Error::OutcomeUnknown { .. })),
            "{op} answered {answer:?} from a state the replica has not got"
        );
    }
}

/// The same answers on Redis 7.2 and later (and Valkey), where a
/// connection's `WAIT` counts from the last write the connection itself
/// propagated: a write that found the session gone wrote nothing, so it
/// sends the fence (a write in the session's slot) before its `WAIT`,
/// seen here as the replica's count of `SET`s, one per such answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_found_gone_propagates_a_write_for_its_wait() {
    let (master, _link, replica) = master_and_replica().await;
    let config = waiting_config(&master, support::unique_prefix("wait-gone-fence"));
    let store = RedisStore::connect(config).await.expect("connect");
    let id = store.create(b"s", Timeout::from_secs(300)).await.unwrap();
    store.delete(&id).await.unwrap();
    let in_sync = || in_sync(&master, &replica);
    let sets = || replica_calls(&replica, &["set"]);
    in_sync();
    let before = sets();
    assert!(matches!(store.touch(&id).await, Err(Error::NotFound)));
    assert!(matches!(store.delete(&id).await, Err(Error::NotFound)));
    in_sync();
    assert_eq!(
        sets() - before,
        2,
        "each answer found gone propagates one write for its WAIT to wait on"
    );
}

/// A state a write answered from is confirmed only if the master holds it
/// when the fence runs: the fence checks it in the same script, so that its
/// `WAIT` vouches for that state and not just for whatever the node it
/// reached holds (after a failover between the answer and the fence, a
/// promoted replica that never had the delete, insert or update the answer
/// came from). Here the session is updated by another client while a
/// `try_update` closure refuses the metadata it read: the refusal is
/// `OutcomeUnknown`, the fence finding another version than the one the
/// closure decided on, as it would on a master that missed that version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_is_confirmed_only_against_the_metadata_it_was_decided_on() {
    let (master, _link, _replica) = master_and_replica().await;
    let config = waiting_config(&master, support::unique_prefix("wait-refusal"));
    let store = RedisStore::connect(config.clone()).await.expect("connect");
    let other = RedisStore::connect(config).await.expect("connect");
    let id = store.create(b"v1", Timeout::from_secs(300)).await.unwrap();
    let refused = store
        .try_update(&id, |_| {
            tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current()
                    .block_on(other.update(&id, |_| b"v2".to_vec()))
                    .expect("the other client's update")
            });
            Err::<session_engine::Op, _>("no")
        })
        .await;
    assert!(
        matches!(refused, Err(Error::OutcomeUnknown { .. })),
        "a refusal of v1 confirmed while the master held v2: {refused:?}"
    );
    // Nothing changed meanwhile: the refusal is answered.
    let refused = store
        .try_update(&id, |_| Err::<session_engine::Op, _>("no"))
        .await;
    assert_eq!(refused.unwrap().unwrap_err(), "no");
}
