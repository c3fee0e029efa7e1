//! A fan-out reaches every subscriber served here while one of them never
//! takes its notification (a client that stopped reading its stream), and
//! ends, counting that one as not delivered.
//!
//! The peers are rmcp servers on in-process transports (what a session's
//! worker gives `register_peer`); time is tokio's, paused: it moves only
//! when every task waits, so a wait that never ends shows as the hang
//! guard's timeout, and the fan-out's own bound passes at once.

use std::time::Duration;

use rmcp::model::{
    ClientJsonRpcMessage, ClientNotification, ClientRequest, Extensions, InitializeRequest,
    InitializeRequestParams, InitializedNotification, NumberOrString, ServerJsonRpcMessage,
    ServerNotification,
};
use rmcp::service::{Peer, RoleServer, RunningService};
use rmcp::transport::Transport;
use rmcp::ServerHandler;
use session_engine::{Config, Engine, SessionId, Timeout};
use session_mcp::{McpConfig, McpSessions, SESSION_ID_HEADER};
use tokio::sync::mpsc;

const RESOURCE: &str = "file:///projects/report.md";

#[derive(Clone)]
struct Server;

impl ServerHandler for Server {}

/// A client's end of a session, in process: it sends the handshake, takes
/// the server's answer to it, then takes every message (`stalled: false`,
/// passing them on to `received`) or none (`stalled: true`: the send never
/// completes, as a write to a stream nobody reads).
struct Client {
    from_client: mpsc::UnboundedReceiver<ClientJsonRpcMessage>,
    received: mpsc::UnboundedSender<ServerJsonRpcMessage>,
    stalled: bool,
    sent: usize,
}

impl Transport<RoleServer> for Client {
    type Error = std::io::Error;

    fn send(
        &mut self,
        item: ServerJsonRpcMessage,
    ) -> impl std::future::Future<Output = Result<(), Self::Error>> + Send + 'static {
        let hangs = self.stalled && self.sent > 0;
        self.sent += 1;
        let received = self.received.clone();
        async move {
            if hangs {
                std::future::pending::<()>().await;
            }
            let _ = received.send(item);
            Ok(())
        }
    }

    fn receive(&mut self) -> impl std::future::Future<Output = Option<ClientJsonRpcMessage>> + Send {
        self.from_client.recv()
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// A session subscribed to [`RESOURCE`] whose client is served here.
struct Subscriber {
    id: SessionId,
    /// What its client received.
    reads: mpsc::UnboundedReceiver<ServerJsonRpcMessage>,
    /// The server (the session's worker) and the client's way to it, kept
    /// open for the test.
    _server: RunningService<RoleServer, Server>,
    _to_server: mpsc::UnboundedSender<ClientJsonRpcMessage>,
}

async fn subscriber(sessions: &McpSessions, engine: &Engine, stalled: bool) -> Subscriber {
    let id = engine.create(b"", Timeout::from_secs(600)).expect("session");
    sessions.subscribe(&id, RESOURCE).await.expect("subscribe");

    let (to_server, from_client) = mpsc::unbounded_channel();
    let (received, mut reads) = mpsc::unbounded_channel();
    let initialize = ClientJsonRpcMessage::request(
        ClientRequest::InitializeRequest(InitializeRequest::new(InitializeRequestParams::default())),
        NumberOrString::Number(0),
    );
    let initialized = ClientJsonRpcMessage::notification(ClientNotification::InitializedNotification(
        InitializedNotification::default(),
    ));
    to_server.send(initialize).expect("queued");
    to_server.send(initialized).expect("queued");
    let client = Client {
        from_client,
        received,
        stalled,
        sent: 0,
    };
    let server = rmcp::serve_server(Server, client).await.expect("handshake");
    reads.recv().await.expect("the answer to initialize");

    let mut extensions = Extensions::new();
    let (parts, ()) = http::Request::builder()
        .header(SESSION_ID_HEADER, id.to_string())
        .body(())
        .expect("request")
        .into_parts();
    extensions.insert(parts);
    let peer: Peer<RoleServer> = server.peer().clone();
    assert_eq!(sessions.register_peer(&extensions, peer).expect("register"), id);
    Subscriber {
        id,
        reads,
        _server: server,
        _to_server: to_server,
    }
}

/// The URI of the next `notifications/resources/updated` a client received.
async fn next_update(reads: &mut mpsc::UnboundedReceiver<ServerJsonRpcMessage>) -> String {
    let message = reads.recv().await.expect("the server runs");
    let ServerJsonRpcMessage::Notification(notification) = message else {
        panic!("not a notification: {message:?}");
    };
    let ServerNotification::ResourceUpdatedNotification(updated) = notification.notification else {
        panic!("not resources/updated: {:?}", notification.notification);
    };
    updated.params.uri
}

#[tokio::test(start_paused = true)]
async fn a_client_that_never_reads_delays_no_other_and_is_counted() {
    let engine = Engine::open(Config::development()).expect("engine");
    let sessions = McpSessions::new(engine.clone(), McpConfig::default()).expect("sessions");
    // The fan-out goes in the store's order, not this one: wherever the
    // stalled client falls, a fan-out one client at a time either leaves the
    // clients after it unnotified or never ends.
    let mut subscribers = Vec::new();
    for stalled in [false, true, false, false] {
        subscribers.push((subscriber(&sessions, &engine, stalled).await, stalled));
    }

    let fan_out = tokio::spawn({
        let sessions = sessions.clone();
        async move { sessions.notify_resource_updated(RESOURCE).await }
    });
    for (subscriber, _) in subscribers.iter_mut().filter(|(_, stalled)| !stalled) {
        let uri = tokio::time::timeout(Duration::from_secs(3600), next_update(&mut subscriber.reads))
            .await
            .expect("notified while another client is stalled");
        assert_eq!(uri, RESOURCE);
    }
    let fan_out = tokio::time::timeout(Duration::from_secs(3600), fan_out)
        .await
        .expect("the fan-out ends with a client stalled")
        .expect("its task")
        .expect("the fan-out");
    let mut found = fan_out.subscribers.clone();
    found.sort_unstable();
    let mut all: Vec<SessionId> = subscribers.iter().map(|(s, _)| s.id).collect();
    all.sort_unstable();
    assert_eq!(found, all);
    assert_eq!(fan_out.notified_here, 3, "{fan_out:?}");
    assert_eq!(fan_out.failed_here, 1, "{fan_out:?}");
}
