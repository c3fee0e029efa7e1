//! Each failure class surfaces as its own `session_engine::Error` variant,
//! against a real server: a short `WAIT` is `OutcomeUnknown` (and the write
//! is on the master; reads do not wait), a server that does not answer is
//! `TimedOut`, foreign data under a session key is `Unavailable` quoting
//! Redis, bad settings are `InvalidConfig`.

mod support;

use std::time::{Duration, Instant};

use session_engine::{Error, SessionStore, Timeout};
use session_redis::{RedisConfig, RedisStore, Replication};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_map_onto_typed_errors() {
    let server = support::Server::standalone();
    let prefix = support::unique_prefix("typed");
    let base = || RedisConfig::standalone(server.url()).key_prefix(prefix.clone());
    // A budget far above any stall of a loaded test machine, for each step
    // whose budget is not what it checks.
    let long = Duration::from_secs(10);

    // WAIT for a replica that does not exist: applied, but not acknowledged.
    let waiting = RedisStore::connect(base().request_timeout(long).replication(Replication::Wait {
        replicas: 1,
        timeout: Duration::from_millis(50),
    }))
    .await
    .expect("connect");
    let id = session_engine::SessionId::from_bytes([4; 16]);
    let r = waiting.insert(id, b"w", Timeout::from_secs(60)).await;
    match r {
        Err(Error::OutcomeUnknown { reason }) => assert!(reason.contains("0 of 1 replicas"), "{reason}"),
        other => panic!("WAIT shortfall: {other:?}"),
    }
    assert_eq!(waiting.peek(&id).await.expect("on the master").metadata(), b"w");
    assert_eq!(waiting.stats().replication_shortfalls, 1);
    // Reads do not wait (a get's slide included); touch, a write, does.
    waiting.get(&id).await.expect("get does not WAIT");
    match waiting.touch(&id).await {
        Err(Error::OutcomeUnknown { reason }) => assert!(reason.contains("0 of 1 replicas"), "{reason}"),
        other => panic!("touch WAITs like every write: {other:?}"),
    }

    // A frozen server (stopped until the test resumes it, not for a time
    // that a busy machine could outlast): no answer within the request
    // timeout; served again once it runs (a try that the machine stalled
    // past the short budget is tried again).
    let short = support::connect_short(base().request_timeout(Duration::from_millis(150))).await;
    let store = RedisStore::connect(base().request_timeout(long))
        .await
        .expect("connect");
    let id = store.create(b"p", Timeout::from_secs(60)).await.expect("create");
    server.freeze();
    let r = short.get(&id).await;
    server.resume();
    assert!(
        matches!(r, Err(Error::TimedOut { after_ms: 150 })),
        "frozen: {r:?}"
    );
    let resumed = Instant::now();
    loop {
        match short.get(&id).await {
            Ok(session) => {
                assert_eq!(session.metadata(), b"p");
                break;
            }
            Err(Error::TimedOut { .. }) if resumed.elapsed() < Duration::from_secs(30) => {}
            Err(e) => panic!("not served again once resumed: {e:?}"),
        }
    }

    // Foreign data under a session key: Redis refuses, the error quotes it.
    let foreign = session_engine::SessionId::from_bytes([5; 16]);
    let key = store.key(&foreign);
    assert_eq!(server.cli(&["SET", &key, "not a hash"]).trim(), "OK");
    for r in [
        store.get(&foreign).await.map(drop),
        store.peek(&foreign).await.map(drop),
    ] {
        match r {
            Err(Error::Unavailable { reason }) => assert!(reason.contains("WRONGTYPE"), "{reason}"),
            other => panic!("foreign value: {other:?}"),
        }
    }
    assert!(store.contains(&foreign).await.unwrap(), "EXISTS sees the key");

    // A session whose topic count (`sn`) is not a number (written by
    // someone else): the unsubscribe fails before it changes anything
    // (Redis does not roll back what a failing script wrote), so its
    // `Unavailable` ("not applied") is true and the subscription stands.
    let id = store.create(b"s", Timeout::from_secs(60)).await.expect("create");
    assert!(store.subscribe(&id, "t").await.expect("subscribe"));
    server.cli(&["HSET", &store.key(&id), "sn", "not a number"]);
    match store.unsubscribe(&id, "t").await {
        Err(Error::Unavailable { .. }) => {}
        other => panic!("a foreign topic count: {other:?}"),
    }
    assert_eq!(
        store.topics(&id).await.expect("topics"),
        ["t"],
        "an unsubscribe that failed removed the subscription"
    );

    // Settings out of range never reach the server.
    for config in [
        base().key_prefix("bad{prefix"),
        base().request_timeout(Duration::ZERO),
        base().replication(Replication::Wait {
            replicas: 1,
            timeout: Duration::from_secs(5),
        }),
    ] {
        let r = RedisStore::connect(config).await;
        assert!(matches!(r, Err(Error::InvalidConfig(_))), "{r:?}");
    }
    assert!(matches!(
        RedisConfig::from_url("memcached://x"),
        Err(Error::InvalidConfig(_))
    ));
    assert_eq!(SessionStore::cleanup_expired(&store).await.unwrap(), 0);
}

/// A session whose inactivity timeout `t` is not a whole number of ms
/// (written by someone else, or absent): every operation that would slide
/// or re-arm the session fails with `Unavailable` (or, with no `t`, may
/// find no session) before it writes anything. Redis keeps what a failing script wrote, so a script that
/// recorded the access time and then failed on `PEXPIRE` left half a
/// change (a rotation: the new key written, the old one gone, no TTL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_timeout_field_fails_before_anything_is_written() {
    let server = support::Server::standalone();
    let store = RedisStore::connect(
        RedisConfig::standalone(server.url())
            .key_prefix(support::unique_prefix("malformed"))
            .request_timeout(Duration::from_secs(10)),
    )
    .await
    .expect("connect");
    for bad in [
        Some("abc"),
        Some("1.5"),
        Some(""),
        Some("-5"),
        Some("99999999999999999999"),
        None,
    ] {
        for op in [
            "get",
            "touch",
            "set_ttl",
            "set_lifetime",
            "rotate",
            "update",
            "put",
            "subscribe",
        ] {
            let id = store.create(b"s", Timeout::from_secs(60)).await.expect("create");
            let key = store.key(&id);
            match bad {
                Some(t) => server.cli(&["HSET", &key, "t", t]),
                None => server.cli(&["HDEL", &key, "t"]),
            };
            let before = server.cli(&["HGETALL", &key]);
            let r = match op {
                "get" => store.get(&id).await.map(drop),
                "touch" => store.touch(&id).await,
                "set_ttl" => store.set_ttl(&id, Timeout::from_secs(30)).await,
                "set_lifetime" => store.set_lifetime(&id, Timeout::from_secs(3600)).await,
                "rotate" => store.rotate(&id).await.map(drop),
                "update" => store.update(&id, |m| m.to_vec()).await.map(drop),
                "put" => store.put(id, b"p", Timeout::from_secs(30)).await,
                "subscribe" => session_engine::SessionState::subscribe(&store, &id, "t")
                    .await
                    .map(drop),
                _ => unreachable!(),
            };
            // Without `t` the scripts that find a session by it see none.
            let refused = matches!(r, Err(Error::Unavailable { .. }))
                || (bad.is_none() && matches!(r, Err(Error::NotFound)));
            assert!(refused, "t = {bad:?}, {op}: {r:?}");
            assert_eq!(
                server.cli(&["HGETALL", &key]),
                before,
                "t = {bad:?}, {op}: the failing call changed the record"
            );
            let pttl: i64 = server.cli(&["PTTL", &key]).trim().parse().expect("PTTL");
            assert!(
                pttl > 0,
                "t = {bad:?}, {op}: PTTL {pttl} (the key lost its TTL or is gone)"
            );
            assert_eq!(
                server.cli(&["KEYS", &format!("{key}*")]).lines().count(),
                1,
                "{op}: keys beside it"
            );
        }
    }
}
