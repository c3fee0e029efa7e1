//! An MCP server (rmcp, streamable HTTP) whose sessions live in the engine,
//! Redis or a Redis Cluster, so that a restarted process, or another one
//! behind the same address, carries on every client's session.
//!
//! ```text
//! cargo run -p session-mcp --example mcp_server -- --store engine:/tmp/mcp-sessions
//! cargo run -p session-mcp --example mcp_server -- --store redis+cluster://127.0.0.1:7000,127.0.0.1:7001
//! ```
//!
//! It prints `listening on http://<addr>/mcp` once bound (`--listen`,
//! default `127.0.0.1:0`: a free port), then serves MCP at `/mcp`:
//!
//! | tool | does |
//! | --- | --- |
//! | `counter` | adds one to `count` in the session's stored map, returns it |
//! | `whoami` | the session id, the `--name` of the process that answered, the client's name and protocol version as the session knows them |
//! | `notify {uri}` | fans a resource update out: `{"subscribers": n, "notifiedHere": n}` (counts: a session id is its client's credential, never shown to another) |
//!
//! `resources/subscribe` and `resources/unsubscribe` keep the session's
//! subscriptions in the store. With `--rate-capacity N --rate-per-sec R`,
//! every tool call takes one token of the session's bucket; a call without
//! one gets the error `session_mcp::RATE_LIMITED` carrying `retryAfterMs`.
//!
//! `--wait-replicas 1` makes every Redis write wait for a replica (the
//! sessions then survive the kill of a master; refused with the engine).
//! `--store` is a URL as `session_redis::open_url` reads it (`memory:`,
//! `engine:<dir>[?durability=..]`, `redis://`, `rediss://`,
//! `redis+cluster://`; `redis-cluster://` is read as `redis+cluster://`;
//! schemes in any case).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorData, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, SubscribeRequestParams, Tool,
    UnsubscribeRequestParams,
};
use rmcp::service::{NotificationContext, RequestContext, RoleServer};
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::ServerHandler;
use serde_json::{json, Map, Value};
use session_engine::{engine_config, Bucket, Engine};
use session_mcp::{McpConfig, McpSessions};
use session_redis::{RedisConfig, RedisStore, Replication};

#[derive(Parser, Debug)]
#[command(about = "MCP streamable-HTTP server with sessions in session-engine or Redis")]
struct Args {
    /// `engine:<dir>`, `memory:`, `redis://host:port`, `redis+cluster://h:p,h:p`.
    #[arg(long)]
    store: String,
    /// Address to bind (port 0: a free one; the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Inactivity timeout of a session, milliseconds.
    #[arg(long, default_value_t = 30 * 60 * 1000)]
    timeout_ms: u64,
    /// At most one touch per session per this many milliseconds (default a
    /// quarter of the timeout).
    #[arg(long)]
    touch_interval_ms: Option<u64>,
    /// The name `whoami` answers with.
    #[arg(long, default_value = "mcp")]
    name: String,
    /// Tokens of each session's bucket (0: no rate limit).
    #[arg(long, default_value_t = 0)]
    rate_capacity: u32,
    /// Tokens refilled per second.
    #[arg(long, default_value_t = 1)]
    rate_per_sec: u32,
    /// On Redis: acknowledge a write only once this many replicas have it
    /// (`WAIT`; 0: asynchronous replication, Redis' default).
    #[arg(long, default_value_t = 0)]
    wait_replicas: u32,
    /// With --wait-replicas: how long a write waits for them (ms, below
    /// the store's request timeout) before it answers that its outcome is
    /// unknown.
    #[arg(long, default_value_t = 500)]
    wait_timeout_ms: u64,
}

#[derive(Clone)]
struct Server {
    sessions: McpSessions,
    name: Arc<str>,
    bucket: Option<Bucket>,
}

fn text(value: &Value) -> CallToolResponse {
    CallToolResult::success(vec![ContentBlock::text(value.to_string())]).into()
}

fn schema(properties: &Value) -> Arc<Map<String, Value>> {
    let Value::Object(map) = json!({ "type": "object", "properties": properties }) else {
        unreachable!("a JSON object literal")
    };
    Arc::new(map)
}

impl ServerHandler for Server {
    fn get_info(&self) -> ServerConfig {
        let capabilities = ServerCapabilities::builder()
            .enable_tools()
            .enable_resources()
            .enable_resources_subscribe()
            .build();
        ServerConfig::new(capabilities).with_server_info(Implementation::new("session-mcp-example", "0.1.0"))
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        // Fresh and restored sessions alike: this process now serves it.
        let _ = self
            .sessions
            .register_peer(&context.extensions, context.peer.clone());
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(vec![
            Tool::new("counter", "Adds one to the session's counter", schema(&json!({}))),
            Tool::new(
                "whoami",
                "The session id and the serving process",
                schema(&json!({})),
            ),
            Tool::new(
                "notify",
                "Fans out an update of a resource to its subscribers",
                schema(&json!({ "uri": { "type": "string" } })),
            ),
        ]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if let Some(bucket) = self.bucket {
            self.sessions.check_rate(&context.extensions, bucket, 1).await?;
        }
        let id = McpSessions::session_id(&context.extensions)?;
        match request.name.as_ref() {
            "counter" => {
                let n = self
                    .sessions
                    .update_data(&id, |data| {
                        let n = data.get("count").and_then(Value::as_u64).unwrap_or(0) + 1;
                        data.insert("count".into(), n.into());
                        n
                    })
                    .await?;
                Ok(text(&json!(n)))
            }
            "whoami" => {
                // What rmcp knows of the client: from its `initialize`, or,
                // in a restored session, from the stored parameters.
                let client = context.peer.peer_info();
                Ok(text(&json!({
                    "session": id.to_string(),
                    "server": &*self.name,
                    "client": client.as_ref().map(|c| format!("{} {}", c.client_info.name, c.client_info.version)),
                    "protocol": client.as_ref().map(|c| c.protocol_version.to_string()),
                })))
            }
            "notify" => {
                let uri = request
                    .arguments
                    .as_ref()
                    .and_then(|a| a.get("uri"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| ErrorData::invalid_params("notify needs a string `uri`", None))?;
                let fan_out = self.sessions.notify_resource_updated(uri).await?;
                // Counts only: a session's id is its client's only
                // credential, and the subscribers are other clients.
                Ok(text(&json!({
                    "subscribers": fan_out.subscribers.len(),
                    "notifiedHere": fan_out.notified_here,
                })))
            }
            other => Err(ErrorData::invalid_params(format!("no tool {other:?}"), None)),
        }
    }

    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let id = McpSessions::session_id(&context.extensions)?;
        self.sessions.subscribe(&id, &request.uri).await?;
        Ok(())
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let id = McpSessions::session_id(&context.extensions)?;
        self.sessions.unsubscribe(&id, &request.uri).await?;
        Ok(())
    }
}

/// Opens the store with its per-session state (subscriptions, rate limits).
async fn open(args: &Args, config: McpConfig) -> Result<McpSessions, Box<dyn std::error::Error>> {
    let Some(url) = redis_url(&args.store) else {
        if args.wait_replicas > 0 {
            return Err("--wait-replicas applies to a Redis store; --store names the embedded engine".into());
        }
        return Ok(McpSessions::new(
            Engine::open(engine_config(&args.store)?)?,
            config,
        )?);
    };
    let mut redis = RedisConfig::from_url(&url)?;
    if args.wait_replicas > 0 {
        redis = redis.replication(Replication::Wait {
            replicas: args.wait_replicas,
            timeout: Duration::from_millis(args.wait_timeout_ms),
        });
    }
    let store = RedisStore::connect(redis).await?;
    Ok(McpSessions::new(store, config)?)
}

/// `url` as `RedisConfig::from_url` reads it if it names Redis (its scheme,
/// in any case as every URL scheme: `redis`, `rediss`, `redis+cluster`,
/// `rediss+cluster`, or `redis-cluster` for `redis+cluster`), else `None`.
fn redis_url(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let scheme = match scheme.as_str() {
        "redis-cluster" => "redis+cluster",
        "redis" | "rediss" | "redis+cluster" | "rediss+cluster" => &scheme,
        _ => return None,
    };
    Some(format!("{scheme}://{rest}"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    // rmcp logs why it answered HTTP 500 (a store error, say): on stderr,
    // warnings and worse unless RUST_LOG says otherwise.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let mut config = McpConfig::with_timeout(Duration::from_millis(args.timeout_ms));
    if let Some(ms) = args.touch_interval_ms {
        config = config.touch_interval(Duration::from_millis(ms));
    }
    let sessions = open(&args, config).await?;
    let server = Server {
        sessions: sessions.clone(),
        name: args.name.into(),
        bucket: (args.rate_capacity > 0).then_some(Bucket {
            capacity: args.rate_capacity,
            refill_per_sec: args.rate_per_sec,
        }),
    };
    let config = sessions.server_config(StreamableHttpServerConfig::default());
    // On Ctrl-C (SIGINT), rmcp ends every session's worker and stream, so
    // that the open SSE connections let the server stop; the sessions stay
    // in the store for the next process.
    let shutdown = config.cancellation_token.clone();
    let service = StreamableHttpService::new(move || Ok(server.clone()), sessions.session_manager(), config);
    let router = axum::Router::new().nest_service("/mcp", service);
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    // A test reads this line to find the port.
    println!("listening on http://{}/mcp", listener.local_addr()?);
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = tokio::signal::ctrl_c().await;
            shutdown.cancel();
        })
        .await?;
    // Let rmcp close each worker (SessionManager::close_session) before the
    // runtime stops: a graceful stop goes through the same path as an idle
    // worker, and leaves every session in the store.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while sessions.served_here() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}
