//! The backend-neutral async trait, driven through a generic function as a
//! remote backend would be.

use session_engine::{Config, Cursor, Engine, SessionStore, Timeout};

async fn exercise<S: SessionStore>(store: &S, alone: bool) {
    let id = store.create(b"a", Timeout::from_secs(60)).await.unwrap();
    assert_eq!(store.get(&id).await.unwrap().metadata(), b"a");
    let updated = store.update(&id, |m| [m, b"b"].concat()).await.unwrap();
    assert_eq!(updated.metadata(), b"ab");
    store.touch(&id).await.unwrap();
    store.set_ttl(&id, Timeout::Never).await.unwrap();
    assert!(store.contains(&id).await.unwrap());
    if alone {
        assert_eq!(store.len().await.unwrap(), 1);
        assert_eq!(store.list(Cursor::START, 10).await.unwrap().sessions.len(), 1);
    }
    assert_eq!(store.peek(&id).await.unwrap().timeout(), Timeout::Never);
    store.delete(&id).await.unwrap();
    assert!(store.get(&id).await.unwrap_err().is_not_found());
    assert_eq!(store.cleanup_expired().await.unwrap(), 0);
}

#[tokio::test]
async fn engine_implements_the_trait() {
    let engine = Engine::open(Config::default()).unwrap();
    exercise(&engine, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn futures_are_send_across_tasks() {
    let engine = std::sync::Arc::new(Engine::open(Config::default()).unwrap());
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let engine = std::sync::Arc::clone(&engine);
            tokio::spawn(async move { exercise(&*engine, false).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}
