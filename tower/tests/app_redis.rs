//! The example app on one real Redis server: the same end-to-end run as on
//! the engine, a killed and restarted app process that finds its sessions
//! in Redis, and reads that slide the deadline (Redis' `get` script).

mod support;

use std::time::Duration;

use support::redis::Server;
use support::{
    login_counter_cycle_logout, reads_keep_the_session_alive, retry_on_stall, session_survives_restart, App,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_work_end_to_end_on_redis_and_outlive_the_app() {
    let server = Server::standalone();
    let url = server.url();
    let mut app = App::start(&["--store", &url]);
    let browser = login_counter_cycle_logout(&app).await;
    app.restart_after_kill();
    session_survives_restart(&app, &browser).await;

    let timeout = Duration::from_millis(1_000);
    let ms = timeout.as_millis().to_string();
    let sliding = App::start(&["--store", &url, "--mode", "sliding", "--timeout-ms", &ms]);
    retry_on_stall("sliding on redis", || {
        reads_keep_the_session_alive(&sliding, timeout)
    })
    .await;
}
