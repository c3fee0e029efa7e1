//! MCP sessions that survive a restart and move between processes:
//! [rmcp](https://docs.rs/rmcp)'s streamable HTTP server with its sessions
//! in the embedded engine, Redis or a Redis Cluster.
//!
//! ```no_run
//! use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
//! use session_engine::{Config, Engine};
//! use session_mcp::{McpConfig, McpSessions};
//! # #[derive(Clone)] struct MyServer;
//! # impl rmcp::ServerHandler for MyServer {}
//!
//! # fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let engine = Engine::open(Config::single_node_production("/var/lib/app/mcp"))?;
//! let sessions = McpSessions::new(engine, McpConfig::default())?; // 30-minute sessions
//! let service = StreamableHttpService::new(
//!     || Ok(MyServer),
//!     sessions.session_manager(),
//!     sessions.server_config(StreamableHttpServerConfig::default()),
//! );
//! let app: axum::Router = axum::Router::new().nest_service("/mcp", service);
//! # Ok(()) }
//! ```
//!
//! # What is stored, what is not
//!
//! rmcp keeps each session's worker (a task), its channels and its open SSE
//! streams in the process: they hold live connections and cannot move. What
//! makes a session is stored: the client's `initialize` parameters
//! (protocol version, client info, capabilities: rmcp's `SessionState`)
//! and the application's per-session map, in the session's metadata
//! (`record.rs` has the layout), under an inactivity timeout. A request
//! carrying an id that this process does not hold (after a restart, or
//! behind a load balancer) makes rmcp load it from the store, start a
//! worker under the same id and replay the `initialize` handshake into it:
//! the client goes on with the same `Mcp-Session-Id`.
//!
//! # Ids
//!
//! [`McpSessionManager`] draws each id from the OS CSPRNG as our
//! [`SessionId`](session_engine::SessionId) and uses its text (22 URL-safe
//! characters) as rmcp's session id: the header value is the store's key,
//! bit for bit, with no mapping to keep. An id of another form is not one
//! of ours: `load` answers `None` and rmcp answers 404.
//!
//! # Touch coalescing
//!
//! rmcp calls `has_session` on every request that carries an id; for a
//! session served here the manager then touches the store at most once per
//! [`McpConfig::touch_interval`] (default a quarter of the timeout), tracked
//! by an atomic per session in memory: a request in between costs no store
//! write. An active client is never expired while its requests are less
//! than `timeout - touch_interval` apart. A touch that finds the session gone
//! (expired, or deleted through another process) ends the local worker and
//! the request gets 404; a touch that fails otherwise (Redis unavailable),
//! or whose request is cancelled before the store answers, still serves
//! the request (if it is still there) and the next request tries again.
//!
//! # Ending a session
//!
//! A client's `DELETE` ends it everywhere: rmcp calls the store's `delete`
//! (with the session go its subscriptions and rate-limit bucket). If the
//! store fails it, the session is gone for this process at once and the
//! delete is retried in the background until the store has it or the
//! session's timeout has passed. A worker
//! that ends in the process (idle past [`McpConfig::local_keep_alive`], the
//! server shutting down) leaves the session in the store for the next
//! request; the store's timeout ends it.
//!
//! # Subscriptions, fan-out, rate limits
//!
//! Every store keeps per-session state
//! ([`SessionState`](session_engine::SessionState)): a handler maps
//! `resources/subscribe` and `resources/unsubscribe` to
//! [`McpSessions::subscribe`] / [`McpSessions::unsubscribe`],
//! [`McpSessions::notify_resource_updated`] pages the store's reverse index
//! of a resource's subscribers (sessions subscribed through any process) and
//! notifies those served here, and [`McpSessions::check_rate`] charges the
//! session's token bucket, answering a limited request with the MCP error
//! [`RATE_LIMITED`] whose `data.retryAfterMs` says when to retry
//! ([`retry_after`] reads it).

#![forbid(unsafe_code)]
#![warn(missing_docs, clippy::pedantic)]
#![allow(clippy::module_name_repetitions, clippy::doc_markdown)]

mod error;
pub mod limits;
mod manager;
mod record;
mod sessions;
mod touch;

pub use error::{rate_limited, retry_after, Error, Result, RATE_LIMITED};
pub use manager::{ManagerError, McpSessionManager};
pub use sessions::{FanOut, McpConfig, McpSessions, SESSION_ID_HEADER};
pub use touch::TouchStats;
