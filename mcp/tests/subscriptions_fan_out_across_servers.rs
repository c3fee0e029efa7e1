//! (c) Two server processes share one Redis server: a subscription made
//! through one is found by the other's fan-out once the client's session
//! has moved there, and that process's notification reaches the client.
//! An unsubscribe through the second is seen by the first, and the client's
//! `DELETE` takes its subscriptions with the session.

mod support;

use std::time::Duration;

use rmcp::model::{SubscribeRequestParams, UnsubscribeRequestParams};
use serde_json::json;
use support::redis::Server as Redis;
use support::{Balancer, Client, Server};

const RESOURCE: &str = "file:///projects/report.md";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(deprecated)] // resources/subscribe: legacy-only, as sessions are
async fn a_subscription_made_through_one_server_is_fanned_out_by_the_other() {
    let redis = Redis::standalone();
    let store = redis.url();
    let a = Server::start(&["--store", &store, "--name", "a"]);
    let b = Server::start(&["--store", &store, "--name", "b"]);
    let balancer = Balancer::start(a.port).await;
    let client = Client::connect(&balancer.url()).await;
    let (session, _) = client.whoami().await;

    client
        .service
        .subscribe(SubscribeRequestParams::new(RESOURCE))
        .await
        .expect("subscribe through a");
    let fan_out = client.call("notify", Some(json!({ "uri": RESOURCE }))).await;
    assert_eq!(fan_out, json!({ "subscribers": 1, "notifiedHere": 1 }));
    assert_eq!(next_update(&client).await, RESOURCE, "a's notification");

    // The session moves to b, which has never seen it.
    balancer.switch_to(b.port);
    assert_eq!(client.whoami().await, (session.clone(), "b".to_owned()));
    let fan_out = client.call("notify", Some(json!({ "uri": RESOURCE }))).await;
    assert_eq!(
        fan_out,
        json!({ "subscribers": 1, "notifiedHere": 1 }),
        "b's fan-out finds the subscription made through a, and b serves the client now"
    );
    assert_eq!(next_update(&client).await, RESOURCE, "b's notification");

    // Unsubscribed through b: a's fan-out no longer finds it.
    client
        .service
        .unsubscribe(UnsubscribeRequestParams::new(RESOURCE))
        .await
        .expect("unsubscribe through b");
    balancer.switch_to(a.port);
    let fan_out = client.call("notify", Some(json!({ "uri": RESOURCE }))).await;
    assert_eq!(fan_out, json!({ "subscribers": 0, "notifiedHere": 0 }));

    // Subscribed again, then the client ends its session (DELETE): another
    // client's fan-out finds nothing.
    client
        .service
        .subscribe(SubscribeRequestParams::new(RESOURCE))
        .await
        .expect("subscribe again");
    client.service.cancel().await.expect("close the client");
    let other = Client::connect(&balancer.url()).await;
    let fan_out = other.call("notify", Some(json!({ "uri": RESOURCE }))).await;
    assert_eq!(fan_out, json!({ "subscribers": 0, "notifiedHere": 0 }));
}

/// The next `notifications/resources/updated` the client received.
async fn next_update(client: &Client) -> String {
    tokio::time::timeout(Duration::from_secs(10), client.updates.lock().await.recv())
        .await
        .expect("a notification within 10 s")
        .expect("the client runs")
}
