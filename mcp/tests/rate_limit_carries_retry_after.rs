//! (d) A client past its session's rate limit gets the MCP error
//! `RATE_LIMITED` with the wait (`retryAfterMs`), and succeeds once it has
//! waited that long.

mod support;

use std::time::Duration;

use session_mcp::{retry_after, RATE_LIMITED};
use support::{Client, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_call_gets_its_retry_after() {
    let server = Server::start(&[
        "--store",
        "memory:",
        "--rate-capacity",
        "3",
        "--rate-per-sec",
        "1",
    ]);
    let client = Client::connect(&server.url).await;
    // A full bucket of 3 passes; then one call is refused. A stalled
    // machine may refill a token meanwhile, so count rather than expect the
    // fourth call to fail.
    let mut allowed = 0;
    let error = loop {
        match client.try_call("whoami", None).await {
            Ok(_) => allowed += 1,
            Err(e) => break e,
        }
        assert!(allowed < 100, "never rate limited");
    };
    assert!(allowed >= 3, "the bucket starts full: {allowed} calls passed");
    let data = Client::mcp_error(&error).unwrap_or_else(|| panic!("not an MCP error: {error}"));
    assert_eq!(data.code, RATE_LIMITED, "{data:?}");
    let wait = retry_after(data).unwrap_or_else(|| panic!("no retryAfterMs in {data:?}"));
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_secs(1),
        "one token refills within a second at 1/s: {wait:?}"
    );
    tokio::time::sleep(wait).await;
    // The server's engine reads a clock its own thread stores: a thread
    // kept off a CPU for a few ms more than at the refusal leaves the
    // bucket short for that long, and the refusal says so (a shorter wait).
    let mut refused_again = 0;
    while let Err(error) = client.try_call("whoami", None).await {
        let data = Client::mcp_error(&error).unwrap_or_else(|| panic!("not an MCP error: {error}"));
        assert_eq!(data.code, RATE_LIMITED, "{data:?}");
        let more = retry_after(data).unwrap_or_else(|| panic!("no retryAfterMs in {data:?}"));
        refused_again += 1;
        assert!(
            more <= wait && refused_again < 20,
            "refused again after the wait it gave ({wait:?}), now {more:?}"
        );
        tokio::time::sleep(more).await;
    }
}
