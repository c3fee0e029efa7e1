//! `session_tower::cycle_id` under a `CachingSessionStore` whose cache and
//! backend are both `TowerStore`s (an embedded engine caching a Redis
//! server): the delete of the old id reaches both stores at once
//! (`try_join!`), and exactly one of them rotates; the other deletes. Both
//! then hold the session under the one new id the backend drew.

mod support;

use std::sync::Arc;

use session_engine::{Config, Engine};
use session_redis::{RedisConfig, RedisStore};
use session_tower::TowerStore;
use support::redis::Server;
use tower_sessions_core::session_store::CachingSessionStore;
use tower_sessions_core::{Expiry, Session, SessionStore};

/// Both stores rotated: the backend's rotate waited on Redis while the
/// cache's delete, seeing the rotation still unclaimed, rotated the
/// engine's copy too; a debug build panicked ("rotated twice in one
/// cycle_id"), a release build left the engine's copy under an id nobody
/// was given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_store_rotates_and_both_keep_the_new_id() {
    let server = Server::standalone();
    let redis = RedisStore::connect(
        RedisConfig::standalone(server.url()).key_prefix(support::redis::unique_prefix("cache")),
    )
    .await
    .expect("connect");
    let engine = Arc::new(Engine::open(Config::default()).expect("engine"));
    let caching = CachingSessionStore::new(
        TowerStore::from_arc(Arc::clone(&engine)),
        TowerStore::new(redis.clone()),
    );
    let expiry = Some(Expiry::OnInactivity(time::Duration::minutes(10)));
    let session = Session::new(None, Arc::new(caching.clone()), expiry);
    session.insert("user", "alice").await.unwrap();
    session.save().await.unwrap();
    let old = session.id().unwrap();

    session_tower::cycle_id(&session).await.expect("cycle_id");
    let new = session.id().expect("saved under a new id");
    assert_ne!(new, old);
    let ours = |id: tower_sessions_core::session::Id| -> session_engine::SessionId {
        id.to_string().parse().expect("the same text as an engine id")
    };
    assert!(
        redis.peek(&ours(old)).await.unwrap_err().is_not_found(),
        "old id gone from the backend"
    );
    assert!(
        engine.peek(&ours(old)).unwrap_err().is_not_found(),
        "and from the cache"
    );
    assert!(
        redis.peek(&ours(new)).await.is_ok(),
        "the backend holds the new id"
    );
    assert!(engine.peek(&ours(new)).is_ok(), "so does the cache");
    assert_eq!(engine.len(), 1, "no copy under an id nobody was given");
    let loaded = caching.load(&new).await.unwrap().expect("loads");
    assert_eq!(loaded.data["user"], serde_json::json!("alice"));
}
