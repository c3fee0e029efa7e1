//! A fan-out reaches every subscriber served here while one of them never
//! takes its notification (a client that stopped reading its stream), and
//! ends, counting that one as not delivered; stalled clients on several
//! pages of subscribers hold it up once, not once a page; and a send that
//! fails drops only the client it was sent to, not one registered for the
//! session since (its worker restored here meanwhile); and clients whose
//! worker has ended are not kept.
//!
//! The peers are rmcp servers on in-process transports (what a session's
//! worker gives `register_peer`); time is tokio's, paused: it moves only
//! when every task waits, so a wait that never ends shows as the hang
//! guard's timeout, and the fan-out's own bound passes at once.

use std::time::Duration;

use rmcp::model::{
    ClientJsonRpcMessage, ClientNotification, ClientRequest, InitializeRequest, InitializeRequestParams,
    InitializedNotification, NumberOrString, ServerJsonRpcMessage, ServerNotification,
};
use rmcp::service::{Peer, RoleServer, RunningService};
use rmcp::transport::Transport;
use rmcp::ServerHandler;
use session_engine::{Config, Engine, SessionId, SessionState, Timeout, TopicCursor};
use session_mcp::limits::{FANOUT_PAGE, NOTIFY_TIMEOUT, PEERS_PRUNE_MIN, SENDS_IN_FLIGHT_MAX};
use session_mcp::{McpConfig, McpSessions};
use tokio::sync::{mpsc, watch};

const RESOURCE: &str = "file:///projects/report.md";

#[derive(Clone)]
struct Server;

impl ServerHandler for Server {}

/// What a client does with the messages after the answer to its handshake.
#[derive(Clone)]
enum Takes {
    /// Takes every one, passing it on to the test.
    All,
    /// Takes none: the send never completes, as a write to a stream nobody
    /// reads.
    Nothing,
    /// Says so on `sending`, then fails each send once `open` is `true` (a
    /// connection that broke while the fan-out was sending to it).
    FailsWhenOpened {
        sending: mpsc::UnboundedSender<()>,
        open: watch::Receiver<bool>,
    },
}

/// A client's end of a session, in process: it sends the handshake, takes
/// the server's answer to it, then does with every other message what
/// `takes` says.
struct Client {
    from_client: mpsc::UnboundedReceiver<ClientJsonRpcMessage>,
    received: mpsc::UnboundedSender<ServerJsonRpcMessage>,
    takes: Takes,
    sent: usize,
}

impl Transport<RoleServer> for Client {
    type Error = std::io::Error;

    fn send(
        &mut self,
        item: ServerJsonRpcMessage,
    ) -> impl std::future::Future<Output = Result<(), Self::Error>> + Send + 'static {
        let takes = if self.sent == 0 {
            Takes::All
        } else {
            self.takes.clone()
        };
        self.sent += 1;
        let received = self.received.clone();
        async move {
            match takes {
                Takes::All => {}
                Takes::Nothing => std::future::pending::<()>().await,
                Takes::FailsWhenOpened { sending, mut open } => {
                    let _ = sending.send(());
                    let _ = open.wait_for(|open| *open).await;
                    return Err(std::io::Error::other("the connection broke"));
                }
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

/// A client served here: the session's worker, after its handshake.
struct Served {
    /// What the client received.
    reads: mpsc::UnboundedReceiver<ServerJsonRpcMessage>,
    /// The server (the session's worker) and the client's way to it, kept
    /// open for the test.
    server: RunningService<RoleServer, Server>,
    _to_server: mpsc::UnboundedSender<ClientJsonRpcMessage>,
}

/// A worker for a client that does what `takes` says, its handshake done.
async fn serve(takes: Takes) -> Served {
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
        takes,
        sent: 0,
    };
    let server = rmcp::serve_server(Server, client).await.expect("handshake");
    reads.recv().await.expect("the answer to initialize");
    Served {
        reads,
        server,
        _to_server: to_server,
    }
}

/// Registers `peer` as the client of session `id` (as the worker's
/// `on_initialized` does).
fn register_peer(sessions: &McpSessions, id: SessionId, peer: Peer<RoleServer>) {
    let extensions = McpSessions::extensions_naming(&id);
    assert_eq!(sessions.register_peer(&extensions, peer).expect("register"), id);
}

/// Registers the worker's client as the session's.
fn register(sessions: &McpSessions, id: SessionId, served: &Served) {
    register_peer(sessions, id, served.server.peer().clone());
}

/// A session subscribed to [`RESOURCE`].
async fn subscribed(sessions: &McpSessions, engine: &Engine) -> SessionId {
    let id = engine.create(b"", Timeout::from_secs(600)).expect("session");
    sessions.subscribe(&id, RESOURCE).await.expect("subscribe");
    id
}

/// A session subscribed to [`RESOURCE`] whose client is served here.
struct Subscriber {
    id: SessionId,
    served: Served,
}

async fn subscriber(sessions: &McpSessions, engine: &Engine, stalled: bool) -> Subscriber {
    let id = subscribed(sessions, engine).await;
    let served = serve(if stalled { Takes::Nothing } else { Takes::All }).await;
    register(sessions, id, &served);
    Subscriber { id, served }
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
        let uri = tokio::time::timeout(
            Duration::from_secs(3600),
            next_update(&mut subscriber.served.reads),
        )
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

/// A send that fails while the session's client has been registered again
/// meanwhile (its worker ended, and a request restored it here) drops the
/// client it was sent to, not the new one: that one still gets the next
/// fan-out's notification.
#[tokio::test(start_paused = true)]
async fn a_failed_send_drops_only_the_client_it_was_sent_to() {
    let engine = Engine::open(Config::development()).expect("engine");
    let sessions = McpSessions::new(engine.clone(), McpConfig::default()).expect("sessions");
    let id = subscribed(&sessions, &engine).await;
    let (opened, open) = watch::channel(false);
    let (sending, mut sent_to_old) = mpsc::unbounded_channel();
    let old = serve(Takes::FailsWhenOpened { sending, open }).await;
    register(&sessions, id, &old);

    let fan_out = tokio::spawn({
        let sessions = sessions.clone();
        async move { sessions.notify_resource_updated(RESOURCE).await }
    });
    tokio::time::timeout(Duration::from_secs(3600), sent_to_old.recv())
        .await
        .expect("the fan-out sends to the old client")
        .expect("its transport");
    // The session's worker is restored here meanwhile: a new client.
    let mut new = serve(Takes::All).await;
    register(&sessions, id, &new);
    opened.send(true).expect("the old client's transport waits");
    let first = tokio::time::timeout(Duration::from_secs(3600), fan_out)
        .await
        .expect("the fan-out ends")
        .expect("its task")
        .expect("the fan-out");
    assert_eq!((first.notified_here, first.failed_here), (0, 1), "{first:?}");

    let second = tokio::time::timeout(
        Duration::from_secs(3600),
        sessions.notify_resource_updated(RESOURCE),
    )
    .await
    .expect("the fan-out ends")
    .expect("the fan-out");
    assert_eq!(
        (second.notified_here, second.failed_here),
        (1, 0),
        "the new client was dropped with the old one: {second:?}"
    );
    let uri = tokio::time::timeout(Duration::from_secs(3600), next_update(&mut new.reads))
        .await
        .expect("the new client is notified");
    assert_eq!(uri, RESOURCE);
}

/// Stalled clients on several pages of subscribers hold the fan-out up by
/// one [`NOTIFY_TIMEOUT`], not one a page: a page's sends used to be waited
/// for before the next page was read, so a stalled client on each of three
/// pages took three timeouts (a hundred on a hundred pages, minutes). The
/// counts stay exact.
#[tokio::test(start_paused = true)]
async fn stalled_clients_on_several_pages_hold_the_fan_out_up_once() {
    let engine = Engine::open(Config::development()).expect("engine");
    let sessions = McpSessions::new(engine.clone(), McpConfig::default()).expect("sessions");
    // Three pages of subscribers, most of them served elsewhere.
    for _ in 0..2 * FANOUT_PAGE + 2 {
        subscribed(&sessions, &engine).await;
    }
    // The pages as the fan-out reads them (the store's order): on each, the
    // first subscriber's client is served here and stalls, the last one's
    // is served here and reads.
    let mut pages = Vec::new();
    let mut cursor = TopicCursor::START;
    loop {
        let page = SessionState::subscribers(&engine, RESOURCE, cursor, FANOUT_PAGE)
            .await
            .expect("a page");
        pages.push(page.ids);
        match page.next {
            Some(next) => cursor = next,
            None => break,
        }
    }
    assert_eq!(pages.len(), 3, "three pages");
    let mut stalled = Vec::new();
    let mut reading = Vec::new();
    for page in &pages {
        let (first, last) = (page[0], page[page.len() - 1]);
        let served = serve(Takes::Nothing).await;
        register(&sessions, first, &served);
        stalled.push(served);
        let served = serve(Takes::All).await;
        register(&sessions, last, &served);
        reading.push(served);
    }

    let started = tokio::time::Instant::now();
    let fan_out = tokio::time::timeout(
        Duration::from_secs(3600),
        sessions.notify_resource_updated(RESOURCE),
    )
    .await
    .expect("the fan-out ends with clients stalled")
    .expect("the fan-out");
    let took = started.elapsed();
    assert_eq!(fan_out.subscribers, pages.concat(), "read page by page");
    assert_eq!(
        (fan_out.notified_here, fan_out.failed_here),
        (3, 3),
        "{:?}",
        (fan_out.notified_here, fan_out.failed_here)
    );
    for served in &mut reading {
        assert_eq!(next_update(&mut served.reads).await, RESOURCE);
    }
    assert!(
        took < 2 * NOTIFY_TIMEOUT,
        "three stalled clients on three pages held the fan-out up {took:?} (one timeout is {NOTIFY_TIMEOUT:?})"
    );
}

/// The sends under way at once are bounded: one stalled client past
/// [`SENDS_IN_FLIGHT_MAX`] waits for a slot, and is sent to (and times
/// out) once the first ones have timed out.
#[tokio::test(start_paused = true)]
async fn sends_in_flight_are_bounded() {
    let engine = Engine::open(Config::development()).expect("engine");
    let sessions = McpSessions::new(engine.clone(), McpConfig::default()).expect("sessions");
    let mut stalled = Vec::new();
    for _ in 0..=SENDS_IN_FLIGHT_MAX {
        stalled.push(subscriber(&sessions, &engine, true).await);
    }
    let started = tokio::time::Instant::now();
    let fan_out = tokio::time::timeout(
        Duration::from_secs(3600),
        sessions.notify_resource_updated(RESOURCE),
    )
    .await
    .expect("the fan-out ends with clients stalled")
    .expect("the fan-out");
    assert_eq!(
        (fan_out.notified_here, fan_out.failed_here),
        (0, SENDS_IN_FLIGHT_MAX + 1)
    );
    // Two timeouts (tokio's timers round to the millisecond): the last
    // send started once a slot was free, not with the others.
    let took = started.elapsed();
    assert!(
        (2 * NOTIFY_TIMEOUT..3 * NOTIFY_TIMEOUT).contains(&took),
        "{took:?}"
    );
}

/// A client whose worker has ended is not remembered (rmcp's
/// `on_initialized` runs in a task of its own, which can come after a
/// back-to-back `DELETE` has closed the worker and forgotten its client),
/// and clients whose worker ends once remembered are dropped as the
/// registrations double.
#[tokio::test(start_paused = true)]
async fn clients_whose_worker_ended_are_not_kept() {
    let engine = Engine::open(Config::development()).expect("engine");
    let sessions = McpSessions::new(engine.clone(), McpConfig::default()).expect("sessions");
    let late = subscribed(&sessions, &engine).await;
    let ended = serve(Takes::All).await;
    let peer = ended.server.peer().clone();
    ended.server.cancel().await.expect("the worker ends");
    register_peer(&sessions, late, peer);
    assert_eq!(sessions.peers_registered(), 0, "a client already gone was kept");
    // One that ends after its registration goes once the count reaches
    // the first pruning's.
    let first = subscriber(&sessions, &engine, false).await;
    first.served.server.cancel().await.expect("the worker ends");
    let mut live = Vec::new();
    for _ in 1..PEERS_PRUNE_MIN - 1 {
        live.push(subscriber(&sessions, &engine, false).await);
    }
    assert_eq!(sessions.peers_registered(), PEERS_PRUNE_MIN - 1, "not pruned yet");
    live.push(subscriber(&sessions, &engine, false).await);
    assert_eq!(
        sessions.peers_registered(),
        PEERS_PRUNE_MIN - 1,
        "the ended client was kept"
    );
    // The fan-out reaches every live one.
    let fan_out = sessions.notify_resource_updated(RESOURCE).await.expect("fan-out");
    assert_eq!(
        (fan_out.notified_here, fan_out.failed_here),
        (PEERS_PRUNE_MIN - 1, 0)
    );
}
