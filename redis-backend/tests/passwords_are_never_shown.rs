//! A Redis URL's password never appears in an error message or in the
//! `Debug` of a configuration or a store: errors end up in logs, and a
//! store's `Debug` in traces. (Every message quoted the whole URL.)

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
}
