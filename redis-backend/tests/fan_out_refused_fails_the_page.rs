//! A fan-out whose session checks the server refuses (here an ACL user
//! without `HGET`) fails the page with the server's reason. It used to
//! take each refused check for foreign data (neither returned nor removed)
//! and answer an empty last page: "nobody is subscribed", with no error.

mod support;

use session_engine::{Timeout, TopicCursor};
use session_redis::{RedisConfig, RedisStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_session_check_fails_the_page() {
    support::require_redis();
    let server = support::Server::standalone();
    let prefix = support::unique_prefix("refused");
    let store = RedisStore::connect(RedisConfig::standalone(server.url()).key_prefix(prefix.clone()))
        .await
        .expect("connect");
    let id = store.create(b"x", Timeout::from_secs(600)).await.expect("create");
    assert!(store.subscribe(&id, "news").await.expect("subscribe"));
    let page = store
        .subscribers("news", TopicCursor::START, 10)
        .await
        .expect("the default user lists it");
    assert_eq!(page.ids, vec![id]);

    let created = server.cli(&[
        "ACL", "SETUSER", "nohget", "on", ">pw", "~*", "&*", "+@all", "-hget",
    ]);
    assert!(created.contains("OK"), "{created}");
    let url = format!("redis://nohget:pw@{}", server.addr());
    let restricted = RedisStore::connect(RedisConfig::standalone(url).key_prefix(prefix))
        .await
        .expect("connect as nohget");
    let refused = restricted.subscribers("news", TopicCursor::START, 10).await;
    let err = refused.expect_err("a page with its checks refused is an error, not an empty page");
    assert!(err.to_string().to_lowercase().contains("no permissions"), "{err}");
}
