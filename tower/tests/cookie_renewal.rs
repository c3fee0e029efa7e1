//! Why the sliding mode goes with `Expiry::OnSessionEnd`: tower-sessions
//! sends the cookie (and its `Max-Age`) only with responses that saved the
//! session, so a read slides the store's deadline but not the browser's.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::{Request, Response};
use axum::routing::get;
use axum::Router;
use session_engine::{Config, Engine, SessionId};
use session_tower::TowerStore;
use tower::ServiceExt as _;
use tower_sessions::{Expiry, Session, SessionManagerLayer};

async fn write(session: Session) -> &'static str {
    session.insert("user", "alice").await.unwrap();
    "written"
}

async fn read(session: Session) -> String {
    session.get::<String>("user").await.unwrap().unwrap_or_default()
}

fn app(store: TowerStore<Engine>, expiry: Expiry) -> Router {
    Router::new()
        .route("/write", get(write))
        .route("/read", get(read))
        .layer(SessionManagerLayer::new(store).with_expiry(expiry))
}

async fn call(app: &Router, path: &str, cookie: Option<&str>) -> Response<Body> {
    let mut req = Request::get(path);
    if let Some(cookie) = cookie {
        req = req.header(COOKIE, cookie);
    }
    app.clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap()
}

fn set_cookie(res: &Response<Body>) -> Option<String> {
    res.headers()
        .get(SET_COOKIE)
        .map(|v| v.to_str().unwrap().to_owned())
}

#[tokio::test]
async fn a_read_slides_the_store_but_renews_no_cookie() {
    let engine = Arc::new(Engine::open(Config::default()).unwrap());
    let store = TowerStore::from_arc(Arc::clone(&engine)).sliding(true);
    let app = app(store, Expiry::OnInactivity(time::Duration::seconds(60)));

    let written = call(&app, "/write", None).await;
    let cookie = set_cookie(&written).expect("a save sends the cookie");
    assert!(cookie.contains("Max-Age=60"), "{cookie}");
    let pair = cookie.split(';').next().unwrap().to_owned();
    let id: SessionId = pair.strip_prefix("id=").unwrap().parse().unwrap();
    let before = engine.peek(&id).unwrap().last_access_ms();

    // Until the engine's clock has moved (its thread may wait for a core).
    let give_up = std::time::Instant::now() + Duration::from_secs(10);
    while engine.clock().now_ms() <= before {
        assert!(
            std::time::Instant::now() < give_up,
            "the engine's clock stood still"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let read = call(&app, "/read", Some(&pair)).await;
    assert_eq!(set_cookie(&read), None, "a read-only response renews no Max-Age");
    assert!(
        engine.peek(&id).unwrap().last_access_ms() > before,
        "but the store's deadline slid"
    );
}

#[tokio::test]
async fn on_session_end_cookies_carry_no_max_age() {
    let engine = Engine::open(Config::default()).unwrap();
    let store = TowerStore::new(engine)
        .sliding(true)
        .inactivity_timeout(Duration::from_secs(60))
        .unwrap();
    let app = app(store, Expiry::OnSessionEnd);
    let cookie = set_cookie(&call(&app, "/write", None).await).unwrap();
    assert!(
        !cookie.contains("Max-Age") && !cookie.contains("Expires"),
        "{cookie}"
    );
}
