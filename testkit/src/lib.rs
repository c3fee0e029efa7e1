//! The behaviour suite every session backend passes, written once, generic
//! over [`SessionStore`].
//!
//! Each case gets a fresh, empty store from the caller's factory (a new
//! engine, or a Redis store under a key prefix of its own), runs in its own
//! task, and is reported by name; the suite fails at the end, listing every
//! failed case with its message. Cases that depend on real time use short
//! timeouts (100-400 ms) and check their own timing: if the machine stalled
//! long enough to make an "still alive" check meaningless, the case reports
//! itself stalled and is run again (at most [`STALL_RETRIES`] times) instead
//! of failing on noise.
//!
//! ```no_run
//! # async fn demo() {
//! use session_engine::{Config, Engine};
//! use session_testkit::{run_suite, SuiteOptions};
//!
//! run_suite("engine", SuiteOptions::default(), || async {
//!     Engine::open(Config::default()).unwrap()
//! })
//! .await;
//! # }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs, clippy::pedantic)]
#![allow(clippy::missing_panics_doc, clippy::module_name_repetitions)]

/// After a sleep past a deadline, before checking that a session is gone
/// (or a bucket refilled): waits until the backend's clock has reached the
/// wall clock's time at the end of the sleep (less a few ms of skew), so the
/// sleep's margin holds in the backend's time too. The engine's clock is a
/// cache its own thread stores; one kept off a CPU for longer than the
/// margin left an expired session alive on that clock, and the check
/// failed on a correct build. A clock that does not catch up within 5 s
/// makes the case a stall, retried as the suite's other stalls are.
macro_rules! caught_up {
    ($s:expr, $what:expr) => {{
        if let Err(lag_ms) = $crate::cases::backend_caught_up(&*$s).await {
            return $crate::Verdict::Stalled(format!(
                "{}: the backend's clock stayed {lag_ms} ms behind the wall clock",
                $what
            ));
        }
    }};
}

#[macro_use]
mod cases;
pub mod example;
mod state_cases;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use session_engine::limits::METADATA_BYTES_MAX_DEFAULT;
use session_engine::{SessionState, SessionStore};

/// Times a case that reports a stall is run again before it counts as failed.
pub const STALL_RETRIES: usize = 3;

/// What the suite needs to know about a backend.
#[derive(Clone, Copy, Debug)]
pub struct SuiteOptions {
    /// The backend's metadata limit (for the `ValueTooLarge` cases).
    pub metadata_bytes_max: usize,
    /// The backend expires natively (`cleanup_expired` always returns 0).
    pub native_expiry: bool,
    /// Tasks in the concurrent-update case.
    pub writers: usize,
    /// Updates each of them makes.
    pub updates_per_writer: usize,
}

impl Default for SuiteOptions {
    /// The embedded engine's defaults: 64 KiB metadata, swept expiry, 16
    /// writers of 50 updates.
    fn default() -> Self {
        Self {
            metadata_bytes_max: METADATA_BYTES_MAX_DEFAULT,
            native_expiry: false,
            writers: 16,
            updates_per_writer: 50,
        }
    }
}

/// How a case ended, short of a panic (a failed assertion).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every check held.
    Pass,
    /// The machine stalled so long that a timing check proved nothing; the
    /// text says which.
    Stalled(String),
}

type CaseFuture = Pin<Box<dyn Future<Output = Verdict> + Send>>;

/// One case of the suite, as a function of a fresh store.
pub type Case<S> = fn(Arc<S>, SuiteOptions) -> CaseFuture;

/// Every case, by name.
#[must_use]
pub fn cases<S: SessionStore + 'static>() -> Vec<(&'static str, Case<S>)> {
    cases::all()
}

/// Every per-session state case ([`SessionState`]), by name.
#[must_use]
pub fn state_cases<S: SessionState + 'static>() -> Vec<(&'static str, Case<S>)> {
    state_cases::all()
}

/// Runs every case against fresh stores from `make`, printing one line per
/// case; panics at the end naming each failed case and why.
pub async fn run_suite<S, F, Fut>(backend: &str, options: SuiteOptions, make: F)
where
    S: SessionStore + 'static,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    run_cases(backend, options, make, cases::<S>()).await;
}

/// [`run_suite`] for the per-session state cases (subscriptions, the topic
/// fan-out, rate limits).
pub async fn run_state_suite<S, F, Fut>(backend: &str, options: SuiteOptions, make: F)
where
    S: SessionState + 'static,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    run_cases(backend, options, make, state_cases::<S>()).await;
}

async fn run_cases<S, F, Fut>(
    backend: &str,
    options: SuiteOptions,
    make: F,
    all: Vec<(&'static str, Case<S>)>,
) where
    S: SessionStore + 'static,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    let started = Instant::now();
    let mut failed: Vec<String> = Vec::new();
    for (name, case) in &all {
        let outcome = run_case(options, &make, *case).await;
        let line = match &outcome {
            Ok((elapsed, 1)) => format!("ok ({} ms)", elapsed.as_millis()),
            Ok((elapsed, tries)) => format!("ok ({} ms, {tries} tries after stalls)", elapsed.as_millis()),
            Err(why) => format!("FAILED: {why}"),
        };
        println!("suite[{backend}] {name} ... {line}");
        if let Err(why) = outcome {
            failed.push(format!("{name}: {why}"));
        }
    }
    println!(
        "suite[{backend}]: {} passed, {} failed in {:.1} s",
        all.len() - failed.len(),
        failed.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failed.is_empty(),
        "suite[{backend}]: {} of {} cases failed:\n{}",
        failed.len(),
        all.len(),
        failed.join("\n")
    );
}

/// Runs one case (again after a stall), in its own task so that a panic is
/// reported as that case's failure.
async fn run_case<S, F, Fut>(
    options: SuiteOptions,
    make: &F,
    case: Case<S>,
) -> Result<(Duration, usize), String>
where
    S: SessionStore + 'static,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    let started = Instant::now();
    let mut stalls = Vec::new();
    for attempt in 1..=STALL_RETRIES {
        let store = Arc::new(make().await);
        match tokio::spawn(case(store, options)).await {
            Ok(Verdict::Pass) => return Ok((started.elapsed(), attempt)),
            Ok(Verdict::Stalled(why)) => stalls.push(why),
            Err(join) => return Err(panic_message(join)),
        }
    }
    Err(format!(
        "stalled on every one of {STALL_RETRIES} tries (machine too busy): {}",
        stalls.join("; ")
    ))
}

fn panic_message(join: tokio::task::JoinError) -> String {
    if !join.is_panic() {
        return join.to_string();
    }
    let payload = join.into_panic();
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "panic with a non-text payload".to_owned())
}
