//! Test harness: the example server (`examples/mcp_server.rs`) as real
//! processes on free loopback ports, a load balancer the test switches
//! between them, rmcp's own client over real HTTP, and the Redis servers of
//! `redis-backend/tests/support` (shared by path, not copied).
//!
//! The server's binary is built if missing or older than its sources
//! (`session_testkit::example`).

#![allow(dead_code)] // each test binary uses a different part

#[path = "../../../redis-backend/tests/support/mod.rs"]
pub mod redis;

use std::io::BufReader;
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, ClientCapabilities, ClientConfig, ErrorData, Implementation, ProtocolVersion,
    ResourceUpdatedNotificationParam,
};
use rmcp::service::{NotificationContext, RoleClient, RunningService, ServiceError};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{ClientHandler, ServiceExt};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Mutex};

/// How long the server may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The example's binary name.
const EXAMPLE: &str = "mcp_server";

/// The example binary, up to date with its sources (see
/// `session_testkit::example`).
fn server_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| session_testkit::example::example_binary("session-mcp", "mcp_server"))
        .clone()
}

/// Runs the server with `args` expecting it to refuse them: its exit
/// status and standard error, or `None` if it was still running after
/// `limit` (then killed).
pub fn run_to_exit(args: &[&str], limit: Duration) -> Option<(std::process::ExitStatus, String)> {
    let mut child = Command::new(server_binary())
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the example");
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait for the example") {
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().expect("piped"), &mut stderr)
                .expect("read stderr");
            return Some((status, stderr));
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One running server process; killed (SIGKILL, its own PID only) and
/// reaped on drop.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:<port>/mcp`.
    pub url: String,
    pub port: u16,
    args: Vec<String>,
    /// Kept open so the server never writes into a closed pipe.
    _stdout: BufReader<ChildStdout>,
}

impl Server {
    /// Starts the server with these arguments (`--store` and the rest).
    pub fn start(args: &[&str]) -> Self {
        Self::spawn(args.iter().map(|s| (*s).to_owned()).collect())
    }

    fn spawn(args: Vec<String>) -> Self {
        let session_testkit::example::Listening {
            child,
            address: url,
            stdout,
        } = session_testkit::example::spawn_listening(&server_binary(), &args, START_TIMEOUT);
        let port = url
            .strip_prefix("http://127.0.0.1:")
            .and_then(|rest| rest.split('/').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no loopback port in {url:?}"));
        Self {
            child,
            url,
            port,
            args,
            _stdout: stdout,
        }
    }

    /// `kill -9` the process and start it again with the same arguments
    /// (on another free port).
    pub fn restart_after_kill(&mut self) {
        self.kill();
        let args = std::mem::take(&mut self.args);
        *self = Self::spawn(args);
    }

    /// SIGINT (Ctrl-C, its own PID only), wait for the process to exit
    /// (it must, within the start timeout), and start it again with the
    /// same arguments. Returns the exit status.
    pub fn restart_after_interrupt(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        // The shell's built-in `kill`: a minimal machine may lack procps.
        let sent = Command::new("sh")
            .args(["-c", "kill -INT \"$0\"", &pid])
            .status()
            .expect("run sh -c kill");
        assert!(sent.success(), "kill -INT {pid} failed");
        let deadline = std::time::Instant::now() + START_TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for the server") {
                break status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the server did not stop within {START_TIMEOUT:?} of SIGINT"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let args = std::mem::take(&mut self.args);
        *self = Self::spawn(args);
        status
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill(); // SIGKILL on Unix
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A load balancer: a loopback TCP proxy whose upstream the test switches.
/// A switch also cuts every connection made before it (an HTTP keep-alive
/// connection, the client's SSE stream), so the client's next request
/// reaches the new upstream, as behind a balancer that moved it.
pub struct Balancer {
    pub port: u16,
    upstream: Arc<AtomicU16>,
    epoch: watch::Sender<u64>,
    accepted: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Balancer {
    pub async fn start(upstream_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind balancer");
        let port = listener.local_addr().expect("balancer addr").port();
        let upstream = Arc::new(AtomicU16::new(upstream_port));
        let (epoch, _) = watch::channel(0u64);
        let accepted = Arc::new(AtomicU64::new(0));
        let task = {
            let upstream = Arc::clone(&upstream);
            let epoch = epoch.clone();
            let accepted = Arc::clone(&accepted);
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    accepted.fetch_add(1, Ordering::Relaxed);
                    let to = upstream.load(Ordering::SeqCst);
                    let mut switched = epoch.subscribe();
                    switched.mark_unchanged();
                    tokio::spawn(async move {
                        let Ok(server) = TcpStream::connect(("127.0.0.1", to)).await else {
                            return; // upstream down: the client sees a closed connection
                        };
                        let (mut client, mut server) = (client, server);
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            _ = switched.changed() => {}
                        }
                    });
                }
            })
        };
        Self {
            port,
            upstream,
            epoch,
            accepted,
            task,
        }
    }

    /// The MCP endpoint through the balancer.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    /// New connections go to `port`; the old ones are cut.
    pub fn switch_to(&self, port: u16) {
        self.upstream.store(port, Ordering::SeqCst);
        self.epoch.send_modify(|e| *e += 1);
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A client handler that records `notifications/resources/updated`.
#[derive(Clone)]
pub struct Recorder {
    updates: mpsc::UnboundedSender<String>,
}

/// The client's name and version in its `initialize`, and the protocol
/// version it asks for (not rmcp's latest, so that a server that lost the
/// parameters and replayed defaults would answer differently).
pub const CLIENT_NAME: &str = "session-mcp-test-client";
pub const CLIENT_VERSION: &str = "7.7.7";
pub const PROTOCOL: ProtocolVersion = ProtocolVersion::V_2025_06_18;

impl ClientHandler for Recorder {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new(CLIENT_NAME, CLIENT_VERSION),
        )
        .with_protocol_version(PROTOCOL)
    }

    async fn on_resource_updated(
        &self,
        params: ResourceUpdatedNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        let _ = self.updates.send(params.uri);
    }
}

/// rmcp's client over real HTTP, with transparent re-initialization off:
/// a session the server lost is an error here, never a silent new session.
pub struct Client {
    pub service: RunningService<RoleClient, Recorder>,
    pub updates: Mutex<mpsc::UnboundedReceiver<String>>,
}

impl Client {
    pub async fn connect(url: &str) -> Self {
        Self::try_connect(url).await.expect("initialize an MCP session")
    }

    /// [`Client::connect`], its failure returned.
    pub async fn try_connect(url: &str) -> Result<Self, String> {
        let config =
            StreamableHttpClientTransportConfig::with_uri(url.to_owned()).reinit_on_expired_session(false);
        let transport = StreamableHttpClientTransport::from_config(config);
        let (tx, rx) = mpsc::unbounded_channel();
        let service = Recorder { updates: tx }
            .serve(transport)
            .await
            .map_err(|e| format!("{e:?}"))?;
        Ok(Self {
            service,
            updates: Mutex::new(rx),
        })
    }

    /// Calls a tool; its text content parsed as JSON.
    pub async fn try_call(
        &self,
        tool: &'static str,
        arguments: Option<Value>,
    ) -> Result<Value, ServiceError> {
        let mut params = CallToolRequestParams::new(tool);
        if let Some(Value::Object(map)) = arguments {
            params = params.with_arguments(map);
        }
        let result = self.service.call_tool(params).await?;
        let text = result
            .content
            .first()
            .and_then(|c| c.as_text())
            .map(|t| t.text.clone())
            .unwrap_or_else(|| panic!("{tool}: no text content in {result:?}"));
        Ok(serde_json::from_str(&text).unwrap_or_else(|e| panic!("{tool}: {text:?} is not JSON: {e}")))
    }

    pub async fn call(&self, tool: &'static str, arguments: Option<Value>) -> Value {
        self.try_call(tool, arguments)
            .await
            .unwrap_or_else(|e| panic!("{tool}: {e}"))
    }

    /// `counter`: the session's count after adding one.
    pub async fn counter(&self) -> u64 {
        self.call("counter", None).await.as_u64().expect("a count")
    }

    /// `whoami`: (session id, server name). Checks that the session knows
    /// this client's `initialize` parameters (restored ones included).
    pub async fn whoami(&self) -> (String, String) {
        let v = self.call("whoami", None).await;
        assert_eq!(v["client"], format!("{CLIENT_NAME} {CLIENT_VERSION}"), "{v}");
        assert_eq!(v["protocol"], PROTOCOL.to_string(), "{v}");
        (
            v["session"].as_str().expect("session").to_owned(),
            v["server"].as_str().expect("server").to_owned(),
        )
    }

    /// The MCP error of a failed call, if it was one.
    pub fn mcp_error(e: &ServiceError) -> Option<&ErrorData> {
        match e {
            ServiceError::McpError(data) => Some(data),
            _ => None,
        }
    }
}

/// The transport of a session the manager created; kept by a test for as
/// long as the session's local worker must live.
pub type Transport =
    <session_mcp::McpSessionManager as rmcp::transport::streamable_http_server::session::SessionManager>::Transport;

/// A session created through `sessions`' manager and stored as rmcp stores
/// one after its handshake: (the manager, the session's id text, its
/// transport, to keep the local worker alive).
pub async fn initialized(
    sessions: &session_mcp::McpSessions,
) -> (Arc<session_mcp::McpSessionManager>, Arc<str>, Transport) {
    use rmcp::transport::streamable_http_server::session::{SessionManager as _, SessionStore as _};
    let manager = sessions.session_manager();
    let (text, transport) = manager.create_session().await.expect("create");
    sessions
        .store(
            &text,
            &rmcp::transport::streamable_http_server::session::SessionState::new(
                rmcp::model::InitializeRequestParams::default(),
            ),
        )
        .await
        .expect("store");
    (manager, text, transport)
}
