//! An axum app whose sessions live in the engine or in Redis, through
//! tower-sessions' `SessionManagerLayer` and [`TowerStore`].
//!
//! ```text
//! cargo run -p session-tower --example axum -- --store engine:/tmp/sessions
//! cargo run -p session-tower --example axum -- --store memory:
//! cargo run -p session-tower --example axum -- --store redis://127.0.0.1:6379
//! cargo run -p session-tower --example axum -- --store redis+cluster://127.0.0.1:7000,127.0.0.1:7001
//! ```
//!
//! `--store` is any URL `session_redis::open_url` reads (the engine's
//! `engine:<dir>[?durability=..]` and `memory:`, Redis' `redis://` and
//! `redis+cluster://`); `redis-cluster://` is read as `redis+cluster://`.
//!
//! It prints `listening on http://<addr>` once bound (`--listen`, default
//! `127.0.0.1:0`: a free port), then serves:
//!
//! | route | does |
//! | --- | --- |
//! | `POST /login?user=NAME` | gives the session a new id and puts `user` in it (a cookie planted before the login does not name the logged-in session: session fixation) |
//! | `GET /counter` | adds one to `counter` and returns it |
//! | `GET /whoami` | returns `user` (or `anonymous`); reads only |
//! | `POST /cycle` | gives the session a new id ([`session_tower::cycle_id`]) |
//! | `POST /logout` | ends the session (`Session::flush`) |
//!
//! `--mode sliding` (the default) ends a session after `--timeout-ms` without
//! requests, reads included: `TowerStore::sliding(true)` with
//! `inactivity_timeout`, and a cookie without `Max-Age`
//! (`Expiry::OnSessionEnd`). `--mode fixed` is tower-sessions' own rule:
//! `Expiry::OnInactivity`, the deadline moves only when a request changes
//! the session. Cookies are not `Secure` (plain HTTP on loopback); set
//! `with_secure(true)` behind TLS.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::Query;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use clap::{Parser, ValueEnum};
use serde::Deserialize;
use session_engine::SessionStore;
use session_tower::TowerStore;
use tower_sessions::{Expiry, Session, SessionManagerLayer};

/// Session keys.
const USER_KEY: &str = "user";
const COUNTER_KEY: &str = "counter";

#[derive(Parser, Debug)]
#[command(about = "axum + tower-sessions over session-engine or Redis")]
struct Args {
    /// `engine:<dir>` (persisted to dir), `memory:`, `redis://host:port`,
    /// or `redis+cluster://host:port,host:port` (`redis-cluster://` is read
    /// the same).
    #[arg(long)]
    store: String,
    /// Address to bind (port 0: a free one; the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Inactivity timeout of a session, milliseconds.
    #[arg(long, default_value_t = 30 * 60 * 1000)]
    timeout_ms: u64,
    /// Whether reads keep a session alive.
    #[arg(long, value_enum, default_value_t = Mode::Sliding)]
    mode: Mode,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Every request slides the deadline (reads included).
    Sliding,
    /// tower-sessions' rule: only requests that change the session do.
    Fixed,
}

type AppResult = Result<String, (StatusCode, String)>;

fn internal(e: &impl std::fmt::Display) -> (StatusCode, String) {
    (StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

#[derive(Deserialize)]
struct Login {
    user: String,
}

async fn login(session: Session, Query(login): Query<Login>) -> AppResult {
    session
        .insert(USER_KEY, &login.user)
        .await
        .map_err(|e| internal(&e))?;
    // A new id for the new privilege, last in the handler (tower/README.md):
    // the session is saved under it at once, and an id someone planted in
    // the browser's cookie never holds the logged-in session.
    session_tower::cycle_id(&session)
        .await
        .map_err(|e| internal(&e))?;
    Ok(format!("logged in as {}", login.user))
}

async fn counter(session: Session) -> AppResult {
    let n = session
        .get::<u64>(COUNTER_KEY)
        .await
        .map_err(|e| internal(&e))?
        .unwrap_or(0)
        + 1;
    session.insert(COUNTER_KEY, n).await.map_err(|e| internal(&e))?;
    Ok(n.to_string())
}

async fn whoami(session: Session) -> AppResult {
    let user = session.get::<String>(USER_KEY).await.map_err(|e| internal(&e))?;
    Ok(user.unwrap_or_else(|| "anonymous".to_owned()))
}

async fn cycle(session: Session) -> AppResult {
    session_tower::cycle_id(&session)
        .await
        .map_err(|e| internal(&e))?;
    Ok("cycled".to_owned())
}

async fn logout(session: Session) -> AppResult {
    session.flush().await.map_err(|e| internal(&e))?;
    Ok("logged out".to_owned())
}

fn app<S: SessionStore + 'static>(store: S, args: &Args) -> Result<Router, session_engine::Error> {
    let timeout = Duration::from_millis(args.timeout_ms);
    let layer = match args.mode {
        Mode::Sliding => {
            let store = TowerStore::new(store).sliding(true).inactivity_timeout(timeout)?;
            SessionManagerLayer::new(store).with_expiry(Expiry::OnSessionEnd)
        }
        Mode::Fixed => {
            let inactivity = time::Duration::try_from(timeout)
                .map_err(|e| session_engine::Error::InvalidConfig(format!("--timeout-ms: {e}")))?;
            SessionManagerLayer::new(TowerStore::new(store)).with_expiry(Expiry::OnInactivity(inactivity))
        }
    };
    Ok(Router::new()
        .route("/login", post(login))
        .route("/counter", get(counter))
        .route("/whoami", get(whoami))
        .route("/cycle", post(cycle))
        .route("/logout", post(logout))
        .layer(layer.with_secure(false)))
}

async fn serve(router: Router, listen: SocketAddr) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    // A test reads this line to find the port.
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let url = match args.store.strip_prefix("redis-cluster://") {
        Some(nodes) => format!("redis+cluster://{nodes}"),
        None => args.store.clone(),
    };
    // One type for every backend; a program that knows its backend can
    // wrap the `Engine` or `RedisStore` itself (no dynamic dispatch).
    let store = session_redis::open_url(&url).await?;
    serve(app(store, &args)?, args.listen).await?;
    Ok(())
}
