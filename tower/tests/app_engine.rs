//! The example app on the embedded engine, as a real process driven over
//! HTTP: login, counter, `cycle_id`, logout, a `kill -9` and restart on the
//! same data directory that keeps the session, and the two deadline rules.

mod support;

use std::time::Duration;

use support::{
    login_counter_cycle_logout, reads_do_not_keep_a_fixed_session, reads_keep_the_session_alive,
    retry_on_stall, session_survives_restart, App,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_work_end_to_end_and_survive_a_killed_app() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = format!("engine:{}", dir.path().display());
    let mut app = App::start(&["--store", &store]);
    let browser = login_counter_cycle_logout(&app).await;
    // The engine flushes its log every second, but a killed process loses
    // nothing that reached the page cache.
    app.restart_after_kill();
    session_survives_restart(&app, &browser).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sliding_mode_reads_keep_a_session_alive_until_idle() {
    let timeout = Duration::from_millis(1_000);
    let ms = timeout.as_millis().to_string();
    let app = App::start(&["--store", "memory:", "--mode", "sliding", "--timeout-ms", &ms]);
    retry_on_stall("sliding", || reads_keep_the_session_alive(&app, timeout)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_mode_ends_a_session_on_time_despite_reads() {
    // Whole seconds: tower-sessions writes the cookie's Max-Age in seconds.
    let timeout = Duration::from_millis(2_000);
    let ms = timeout.as_millis().to_string();
    let app = App::start(&["--store", "memory:", "--mode", "fixed", "--timeout-ms", &ms]);
    retry_on_stall("fixed", || reads_do_not_keep_a_fixed_session(&app, timeout)).await;
}
