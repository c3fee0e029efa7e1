//! Test harness: the example app (`examples/axum.rs`) as a real process on
//! a free loopback port, a real HTTP client with a cookie jar, and the
//! Redis servers of `redis-backend/tests/support` (shared by path, not
//! copied).
//!
//! The app's binary is built if missing or older than its sources
//! (`session_testkit::example`).

#![allow(dead_code)] // each test binary uses a different part

#[path = "../../../redis-backend/tests/support/mod.rs"]
pub mod redis;

use std::io::BufReader;
use std::path::PathBuf;
use std::process::{Child, ChildStdout};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use reqwest::cookie::{CookieStore, Jar};
use reqwest::header::COOKIE;
use reqwest::{Client, StatusCode};

/// How long the app may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The session cookie's name (tower-sessions' default).
pub const COOKIE_NAME: &str = "id";

/// The example binary, up to date with its sources (see
/// `session_testkit::example`).
fn app_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| session_testkit::example::example_binary("session-tower", "axum"))
        .clone()
}

/// One running app process; killed (SIGKILL, its own PID only) and reaped
/// on drop.
pub struct App {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    args: Vec<String>,
    /// Kept open so the app never writes into a closed pipe.
    _stdout: BufReader<ChildStdout>,
}

impl App {
    /// Starts the app with these arguments (`--store` and the rest; it
    /// binds a free loopback port unless `--listen` is among them).
    pub fn start(args: &[&str]) -> Self {
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        Self::spawn(args)
    }

    fn spawn(args: Vec<String>) -> Self {
        let session_testkit::example::Listening {
            child,
            address: base,
            stdout,
        } = session_testkit::example::spawn_listening(&app_binary(), &args, START_TIMEOUT);
        Self {
            base,
            child,
            args,
            _stdout: stdout,
        }
    }

    /// `kill -9` the process and start it again with the same arguments
    /// (on another free port unless `--listen` named one).
    pub fn restart_after_kill(&mut self) {
        self.kill();
        let args = std::mem::take(&mut self.args);
        *self = Self::spawn(args);
    }

    fn kill(&mut self) {
        let _ = self.child.kill(); // SIGKILL on Unix
        let _ = self.child.wait();
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A browser: an HTTP client with its own cookie jar.
pub struct Browser {
    pub client: Client,
    pub jar: Arc<Jar>,
}

impl Browser {
    pub fn new() -> Self {
        let jar = Arc::new(Jar::default());
        let client = Client::builder()
            .cookie_provider(Arc::clone(&jar))
            .timeout(Duration::from_secs(10))
            .build()
            .expect("HTTP client");
        Self { client, jar }
    }

    /// The session cookie's value as the jar holds it for `app`.
    pub fn session_cookie(&self, app: &App) -> Option<String> {
        let url = app.base.parse().expect("app URL");
        let header = self.jar.cookies(&url)?;
        header
            .to_str()
            .expect("ASCII cookies")
            .split("; ")
            .find_map(|c| c.strip_prefix(&format!("{COOKIE_NAME}=")).map(str::to_owned))
    }

    pub async fn get(&self, app: &App, path: &str) -> String {
        let res = self.client.get(app.url(path)).send().await.expect("GET");
        ok_text(res, path).await
    }

    pub async fn post(&self, app: &App, path: &str) -> String {
        let res = self.client.post(app.url(path)).send().await.expect("POST");
        ok_text(res, path).await
    }
}

async fn ok_text(res: reqwest::Response, path: &str) -> String {
    let status = res.status();
    let body = res.text().await.expect("body");
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    body
}

/// `GET path` with exactly this session cookie and no jar (an attacker or
/// a stale tab replaying an old cookie).
pub async fn get_with_cookie(app: &App, path: &str, cookie: &str) -> String {
    let res = Client::new()
        .get(app.url(path))
        .header(COOKIE, format!("{COOKIE_NAME}={cookie}"))
        .send()
        .await
        .expect("GET");
    ok_text(res, path).await
}

/// Login, a counter across requests, `cycle_id` (the data stays, the old
/// cookie stops working), logout (the cookie is dropped and its id is dead).
/// Returns after logging in a second time, the counter at 3, for the caller's
/// restart check.
pub async fn login_counter_cycle_logout(app: &App) -> Browser {
    let browser = Browser::new();
    assert_eq!(browser.get(app, "/whoami").await, "anonymous");
    assert_eq!(
        browser.session_cookie(app),
        None,
        "a read of no session sets no cookie"
    );
    assert_eq!(browser.post(app, "/login?user=alice").await, "logged in as alice");
    let first = browser.session_cookie(app).expect("a session cookie after login");
    assert_eq!(first.len(), 22, "the id's text: {first}");
    for expected in 1..=3 {
        assert_eq!(browser.get(app, "/counter").await, expected.to_string());
    }
    assert_eq!(browser.get(app, "/whoami").await, "alice");
    assert_eq!(browser.session_cookie(app).as_deref(), Some(first.as_str()));

    // cycle_id: a new id holding the same data; the old one is dead.
    assert_eq!(browser.post(app, "/cycle").await, "cycled");
    let second = browser.session_cookie(app).expect("a cookie after cycle");
    assert_ne!(second, first, "cycle_id must change the id");
    assert_eq!(browser.get(app, "/whoami").await, "alice");
    assert_eq!(browser.get(app, "/counter").await, "4");
    assert_eq!(get_with_cookie(app, "/whoami", &first).await, "anonymous");
    assert_eq!(get_with_cookie(app, "/whoami", &second).await, "alice");

    // logout: the cookie goes, and its id no longer names a session.
    assert_eq!(browser.post(app, "/logout").await, "logged out");
    assert_eq!(browser.session_cookie(app), None, "logout removes the cookie");
    assert_eq!(browser.get(app, "/whoami").await, "anonymous");
    assert_eq!(get_with_cookie(app, "/whoami", &second).await, "anonymous");

    // A fresh login for the caller's next step.
    browser.post(app, "/login?user=bob").await;
    for expected in 1..=3 {
        assert_eq!(browser.get(app, "/counter").await, expected.to_string());
    }
    browser
}

/// After the app process was killed and started again: the same cookie
/// still names the session, with its data.
pub async fn session_survives_restart(app: &App, browser: &Browser) {
    assert_eq!(browser.get(app, "/whoami").await, "bob");
    assert_eq!(browser.get(app, "/counter").await, "4");
}

/// Times a timing check is run again when the machine stalled so long that
/// its outcome proves nothing.
pub const STALL_RETRIES: usize = 3;

/// With `--mode sliding --timeout-ms <timeout>`: reads alone keep the
/// session alive well past its timeout, and it ends once idle for longer.
/// `Err` if a stall between two requests made the check meaningless.
pub async fn reads_keep_the_session_alive(app: &App, timeout: Duration) -> Result<(), String> {
    let browser = Browser::new();
    browser.post(app, "/login?user=carol").await;
    let mut last = Instant::now();
    let step = timeout / 4;
    let start = Instant::now();
    while start.elapsed() < timeout * 2 {
        tokio::time::sleep(step).await;
        let sent = Instant::now();
        let who = browser.get(app, "/whoami").await;
        // The server handled the previous request after `last` and this one
        // before now: at most `gap` apart. Only a gap well inside the
        // timeout proves that reads alone kept the session.
        let gap = sent.elapsed() + sent.duration_since(last);
        if gap >= timeout * 3 / 4 {
            return Err(format!("a {gap:?} gap between reads (timeout {timeout:?})"));
        }
        assert_eq!(
            who,
            "carol",
            "a read {:?} after login, {gap:?} after the previous",
            start.elapsed()
        );
        last = sent;
    }
    tokio::time::sleep(timeout + timeout / 2).await;
    assert_eq!(
        browser.get(app, "/whoami").await,
        "anonymous",
        "idle past the timeout"
    );
    Ok(())
}

/// With `--mode fixed --timeout-ms <timeout>` (tower-sessions' rule): reads
/// do not move the deadline, so the session ends `timeout` after the last
/// write however busy its reader is.
pub async fn reads_do_not_keep_a_fixed_session(app: &App, timeout: Duration) -> Result<(), String> {
    let browser = Browser::new();
    // The login's write happened between these two instants, so its
    // deadline lies between them plus the timeout.
    let login_sent = Instant::now();
    browser.post(app, "/login?user=dave").await;
    let login_done = Instant::now();
    // The reads send the cookie as it was set, past its `Max-Age` too: a
    // cookie jar drops it then, which would say "anonymous" whatever the
    // store did.
    let cookie = browser
        .session_cookie(app)
        .ok_or("no session cookie after the login")?;
    let step = timeout / 4;
    let mut saw_alive = false;
    loop {
        tokio::time::sleep(step).await;
        let sent = Instant::now();
        let who = get_with_cookie(app, "/whoami", &cookie).await;
        if sent.elapsed() + sent.duration_since(login_sent) < timeout * 3 / 4 {
            assert_eq!(who, "dave", "{:?} after the login", sent - login_sent);
            saw_alive = true;
        } else if sent.duration_since(login_done) > timeout + timeout / 4 {
            assert_eq!(
                who,
                "anonymous",
                "{:?} after the login, only reads since",
                sent - login_done
            );
            break;
        }
    }
    if saw_alive {
        Ok(())
    } else {
        Err("no read landed early enough to see the session alive".to_owned())
    }
}

/// Runs a timing check, again after a stall, up to [`STALL_RETRIES`] times.
pub async fn retry_on_stall<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    for attempt in 1..=STALL_RETRIES {
        match check().await {
            Ok(()) => return,
            Err(stall) => eprintln!("{what}: attempt {attempt} stalled ({stall}); again"),
        }
    }
    panic!("{what}: the machine stalled in all {STALL_RETRIES} attempts");
}
