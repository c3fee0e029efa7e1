//! `open_url` opens Redis or the embedded engine behind one `AnyStore`
//! (per-session state included), and refuses a URL neither reads with a
//! message that says what it accepts.

mod support;

use session_engine::{Bucket, Error, RateDecision, SessionState, SessionStore, Timeout, TopicCursor};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_call_opens_either_backend() {
    let server = support::Server::standalone();
    let redis = session_redis::open_url(&server.url()).await.unwrap();
    assert!(format!("{redis:?}").contains("RedisStore"), "{redis:?}");
    let id = redis.create(b"on redis", Timeout::from_secs(60)).await.unwrap();
    assert_eq!(redis.get(&id).await.unwrap().metadata(), b"on redis");
    // The state goes through the boxed twin to the Redis store.
    assert!(redis.subscribe(&id, "t").await.unwrap());
    assert_eq!(redis.topics(&id).await.unwrap(), vec!["t".to_owned()]);
    let page = redis.subscribers("t", TopicCursor::START, 10).await.unwrap();
    assert_eq!(page.ids, vec![id]);
    let one = Bucket {
        capacity: 1,
        refill_per_sec: 1,
    };
    assert_eq!(
        redis.rate_limit(&id, one, 1).await.unwrap(),
        RateDecision::Allowed { remaining: 0 }
    );
    assert_eq!(
        server
            .cli(&["HEXISTS", &format!("session:{{{id}}}"), "bw"])
            .trim(),
        "1",
        "the bucket is in the session's hash on the server"
    );

    let memory = session_redis::open_url("memory:").await.unwrap();
    assert!(format!("{memory:?}").contains("Engine"), "{memory:?}");
    let id = memory.create(b"in memory", Timeout::from_secs(60)).await.unwrap();
    assert_eq!(memory.get(&id).await.unwrap().metadata(), b"in memory");

    match session_redis::open_url("mysql://db").await {
        Err(Error::InvalidConfig(why)) => assert!(why.contains("redis"), "{why}"),
        other => panic!("{other:?}"),
    }
    drop(server);
}

/// A TLS URL is refused with what is wrong with it (no TLS in this build),
/// not as an unknown scheme, and without its password; a scheme is read in
/// any case.
#[tokio::test]
async fn a_tls_url_is_refused_as_tls() {
    let cluster =
        session_redis::RedisConfig::from_url("Redis+Cluster://127.0.0.1:7000,127.0.0.1:7001").unwrap();
    let shown = format!("{cluster:?}");
    assert!(shown.contains("Cluster") && shown.contains("7001"), "{shown}");
    let one = session_redis::RedisConfig::from_url("REDIS://127.0.0.1:7000/2").unwrap();
    let shown = format!("{one:?}");
    assert!(shown.contains("\"redis://127.0.0.1:7000/2\""), "{shown}");
    for url in ["rediss://:secret@127.0.0.1:6380", "REDISS://127.0.0.1:6380"] {
        match session_redis::open_url(url).await {
            Err(Error::InvalidConfig(why)) => {
                assert!(why.contains("TLS"), "{url}: {why}");
                assert!(!why.contains("secret"), "{url}: {why}");
            }
            other => panic!("{url}: {other:?}"),
        }
    }
}
