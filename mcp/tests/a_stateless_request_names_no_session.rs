//! A request rmcp serves without a session (one declaring protocol
//! `2026-07-28`, which has no sessions, or carrying the per-request
//! protocol fields in its `_meta`: rmcp takes its stateless path even with
//! `legacy_session_mode`) names no session to a handler, whatever
//! `Mcp-Session-Id` header it carries: that path touches no session and
//! does not look for one being deleted, so a handler that acted on the
//! header's session would act on it unseen.

mod support;

use support::{Client, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One HTTP/1.1 POST of `body` to the server, with these extra headers;
/// the whole response as text.
async fn post(server: &Server, headers: &[(&str, &str)], body: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .expect("connect");
    let path = server
        .url
        .split_once("127.0.0.1:")
        .and_then(|(_, rest)| rest.find('/').map(|at| &rest[at..]))
        .unwrap_or("/");
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\n",
        server.port,
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut response = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        stream.read_to_end(&mut response),
    )
    .await
    .expect("the server answers within 30 s")
    .expect("read");
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_a_session_acts_on_none_its_header_names() {
    let server = Server::start(&["--store", "memory:"]);
    let client = Client::connect(&server.url).await;
    let (id, _) = client.whoami().await;
    assert_eq!(client.counter().await, 1);

    // rmcp serves statelessly a request declaring 2026-07-28, and one
    // carrying the per-request protocol fields in its `_meta` whatever
    // version they name.
    for version in ["2026-07-28", "2025-11-25"] {
        let call = format!(
            r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"counter","arguments":{{}},
            "_meta":{{"io.modelcontextprotocol/protocolVersion":"{version}","io.modelcontextprotocol/clientCapabilities":{{}}}}}}}}"#
        );
        let answer = post(
            &server,
            &[
                ("MCP-Protocol-Version", version),
                ("Mcp-Method", "tools/call"),
                ("Mcp-Name", "counter"),
                ("Mcp-Session-Id", &id),
            ],
            &call,
        )
        .await;
        // rmcp served it and the handler answered that it found no session
        // (a request refused before the handler would prove nothing) ...
        assert!(answer.starts_with("HTTP/1.1 200 "), "{version}: {answer}");
        assert!(answer.contains(r#""id":7"#), "{version}: {answer}");
        assert!(
            answer.contains("not served within one of this server's sessions"),
            "{version}: the stateless request was not refused for want of a session: {answer}"
        );
    }
    // ... and the session's own requests see it untouched by them.
    assert_eq!(client.counter().await, 2);
}
