//! Server URLs: what the `redis` crate would read otherwise than meant is
//! refused at connect, and a URL's password never appears in an error
//! message or in the `Debug` of a configuration or a store (errors end up
//! in logs, and a store's `Debug` in traces; every message quoted the
//! whole URL).

use std::time::Duration;

use session_redis::{RedisConfig, RedisStore};

const SECRET: &str = "hunter2";

fn assert_hidden(what: &str, text: &str) {
    assert!(!text.contains(SECRET), "{what} shows the password: {text}");
}

#[tokio::test]
async fn a_password_is_never_shown() {
    for url in [
        "redis+cluster://u:hunter2@",
        "rediss://u:hunter2@h:1",
        "http://:hunter2@h",
    ] {
        let e = RedisConfig::from_url(url).unwrap_err().to_string();
        assert_hidden(url, &e);
    }
    let config = RedisConfig::from_url("redis+cluster://app:hunter2@127.0.0.1:1,127.0.0.1:2").unwrap();
    assert_hidden("a cluster configuration's Debug", &format!("{config:?}"));
    let config = RedisConfig::standalone("redis://:hunter2@127.0.0.1:1")
        .connect_timeout(Duration::from_millis(100))
        .request_timeout(Duration::from_millis(100));
    assert_hidden("a configuration's Debug", &format!("{config:?}"));
    let e = RedisStore::connect(config).await.unwrap_err().to_string();
    assert!(e.contains("127.0.0.1:1"), "the error still names the server: {e}");
    assert_hidden("a failed connect", &e);
    let e = RedisStore::connect(RedisConfig::standalone("redis://:hunter2@[::1"))
        .await
        .unwrap_err()
        .to_string();
    assert_hidden("a malformed URL", &e);
    // A password holding `/` or `?` unencoded: what follows it read as a
    // database or a parameter was quoted, password and all. A password
    // in the query (a form other clients read) is hidden too.
    for url in [
        "redis://app:x/hunter2@127.0.0.1:1",
        "redis://app:ab?hunter2@127.0.0.1:1",
        "redis+cluster://u:x/hunter2@127.0.0.1:1,127.0.0.1:2",
        "redis://127.0.0.1:1?password=hunter2",
    ] {
        let shown = match RedisConfig::from_url(url) {
            Err(e) => e.to_string(),
            Ok(config) => {
                assert_hidden(url, &format!("{config:?}"));
                RedisStore::connect(config.connect_timeout(Duration::from_millis(100)))
                    .await
                    .unwrap_err()
                    .to_string()
            }
        };
        assert_hidden(url, &shown);
    }
}

/// What the `redis` crate would read otherwise than meant is refused at
/// connect, naming it: `?db=3` (it wrote to database 0), unknown or
/// repeated parameters, a database that is not a number, a database other
/// than 0 in a cluster (every node then refused `SELECT`: a late
/// `Unavailable`), TLS (not built in).
#[tokio::test]
async fn what_the_client_would_misread_is_refused_at_connect() {
    for (url, says) in [
        ("redis://127.0.0.1:1/?db=3", "unknown parameter \"db\""),
        (
            "redis://127.0.0.1:1?protocol=resp2&protocol=resp3",
            "protocol is given twice",
        ),
        ("redis://127.0.0.1:1/-1", "is not a number"),
        ("redis+cluster://127.0.0.1:1,127.0.0.1:2/3", "database 0 only"),
        // An `@` after the host's first `/` or `?` is a credential that
        // needed encoding (or a typo): refused, not read either way.
        ("redis://127.0.0.1:1/?db=3&x=a@b", "must be percent-encoded"),
        ("redis://u:p@127.0.0.1:1/?db=3&x=a@b", "must be percent-encoded"),
        ("redis://127.0.0.1:1/x@y", "must be percent-encoded"),
    ] {
        let config = RedisConfig::from_url(url)
            .unwrap()
            .connect_timeout(Duration::from_millis(100));
        match RedisStore::connect(config).await {
            Err(session_engine::Error::InvalidConfig(why)) => assert!(why.contains(says), "{url}: {why}"),
            other => panic!("{url}: {other:?}"),
        }
    }
    match RedisConfig::from_url("redis+cluster://u:p@h1:7000,v:hunter2@h2:7001") {
        Err(session_engine::Error::InvalidConfig(why)) => {
            assert!(why.contains("one credential") && !why.contains(SECRET), "{why}");
        }
        other => panic!("per-node credentials: {other:?}"),
    }
    match RedisConfig::from_url("rediss://u:hunter2@h:1") {
        Err(session_engine::Error::InvalidConfig(why)) => {
            assert!(why.contains("TLS") && !why.contains(SECRET), "{why}");
        }
        other => panic!("{other:?}"),
    }
}
