//! Backends the load runs against, behind the engine's async
//! [`SessionStore`] trait.
//!
//! `--backend embedded` is the in-process [`Engine`]; `--backend null`
//! answers every call at once without storing anything, which measures the
//! loadgen's own cost per operation; `--backend peer` is
//! [`PeerStore`], the plain sharded map every run
//! also drives as its reference; `--backend redis://...` is
//! the `session-redis` crate's [`RedisStore`](session_redis::RedisStore)
//! (one server, or `redis+cluster://host:port,host:port`). Its futures do real
//! I/O (`READY_FUTURES = false`), so its clients run as tokio tasks, several
//! per worker thread with `--clients`.

use std::fmt;
use std::future::{ready, Future};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use session_engine::{Cursor, Engine, Error, Page, Result, Session, SessionId, SessionStore, Stats, Timeout};

use parking_lot::Mutex;
use session_engine::{Clock, RemovalCause};

use crate::error::Error as LoadgenError;
use crate::hist::{new_hist, Hist};
use crate::peer::PeerStore;
use crate::scenario::Scenario;
use crate::schedule::Slices;
use crate::stall::{Stall, Stalling};
use crate::units::ParseError;

/// Which backend a run uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendSpec {
    /// The in-process engine.
    Embedded,
    /// No backend: every call returns at once (loadgen overhead).
    Null,
    /// The reference peer: a plain sharded `Mutex<HashMap>`.
    Peer,
    /// A Redis URL (`redis://`, `redis+cluster://`), for the
    /// `session-redis` backend (built without TLS: `rediss://` is refused).
    Redis(String),
}

impl FromStr for BackendSpec {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        let text = s.trim();
        match text {
            "embedded" | "engine" => Ok(BackendSpec::Embedded),
            "null" => Ok(BackendSpec::Null),
            "peer" => Ok(BackendSpec::Peer),
            url if ["redis://", "redis+cluster://"]
                .iter()
                .any(|scheme| url.starts_with(scheme)) =>
            {
                Ok(BackendSpec::Redis(url.to_owned()))
            }
            url if url.starts_with("rediss://") => Err(ParseError::new(
                "backend",
                &session_engine::redact_url(s),
                "TLS (rediss://) is not supported by this build of the Redis backend",
            )),
            _ => Err(ParseError::new(
                "backend",
                &session_engine::redact_url(s),
                "expected embedded, null, peer or a redis:// URL",
            )),
        }
    }
}

impl fmt::Display for BackendSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendSpec::Embedded => f.write_str("embedded"),
            BackendSpec::Null => f.write_str("null"),
            BackendSpec::Peer => f.write_str("peer"),
            BackendSpec::Redis(url) => f.write_str(url),
        }
    }
}

/// When a load phase runs, for backends that act on it ([`crate::stall`]).
#[derive(Clone, Copy, Debug)]
pub struct LoadClock {
    /// Zero of the run's clock.
    pub origin: Instant,
    /// The slices, on the run's clock.
    pub slices: Slices,
    /// End of the warm-up, ns on the run's clock.
    pub measured_start_ns: u64,
}

/// A store the loadgen can drive.
pub trait Backend: SessionStore + 'static {
    /// True if every future the store returns is ready when first polled
    /// (then one client per worker thread runs without an executor).
    const READY_FUTURES: bool;

    /// True if the sessions outlive the run (a server): the run deletes its
    /// live population at the end, so that the next run on the same server
    /// starts from what this one did.
    const OUTLIVES_RUN: bool = false;

    /// Called just before the clients of a load phase start.
    fn load_started(&self, _load: &LoadClock) {}

    /// Engine counters, for backends that keep them.
    fn stats(&self) -> Option<Stats> {
        None
    }
}

impl Backend for Engine {
    const READY_FUTURES: bool = true;

    fn stats(&self) -> Option<Stats> {
        Some(Engine::stats(self))
    }
}

impl Backend for session_redis::RedisStore {
    const READY_FUTURES: bool = false;
    const OUTLIVES_RUN: bool = true;
}

/// Answers every call at once without storing anything: the loop, the
/// generators and the histograms cost what a run against it measures.
#[derive(Clone, Copy, Debug, Default)]
pub struct NullStore;

impl Backend for NullStore {
    const READY_FUTURES: bool = true;
}

impl SessionStore for NullStore {
    fn create(&self, _metadata: &[u8], _timeout: Timeout) -> impl Future<Output = Result<SessionId>> + Send {
        ready(Ok(SessionId::from_bytes([7; 16])))
    }

    fn insert(
        &self,
        _id: SessionId,
        _metadata: &[u8],
        _timeout: Timeout,
    ) -> impl Future<Output = Result<()>> + Send {
        ready(Ok(()))
    }

    fn put(&self, _id: SessionId, _m: &[u8], _t: Timeout) -> impl Future<Output = Result<()>> + Send {
        ready(Ok(()))
    }
    fn rotate(&self, _id: &SessionId) -> impl Future<Output = Result<SessionId>> + Send {
        ready(Err(Error::NotFound))
    }
    fn try_update<F, E>(
        &self,
        _id: &SessionId,
        _f: F,
    ) -> impl Future<Output = Result<std::result::Result<session_engine::Updated, E>>> + Send
    where
        F: FnMut(&[u8]) -> std::result::Result<session_engine::Op, E> + Send,
        E: Send,
    {
        ready(Err(Error::NotFound))
    }

    fn get(&self, _id: &SessionId) -> impl Future<Output = Result<Session>> + Send {
        ready(Err(Error::NotFound))
    }

    fn peek(&self, _id: &SessionId) -> impl Future<Output = Result<Session>> + Send {
        ready(Err(Error::NotFound))
    }

    fn update<F>(&self, _id: &SessionId, _f: F) -> impl Future<Output = Result<Session>> + Send
    where
        F: FnMut(&[u8]) -> Vec<u8> + Send,
    {
        ready(Err(Error::NotFound))
    }

    fn touch(&self, _id: &SessionId) -> impl Future<Output = Result<()>> + Send {
        ready(Ok(()))
    }

    fn delete(&self, _id: &SessionId) -> impl Future<Output = Result<()>> + Send {
        ready(Ok(()))
    }

    fn set_ttl(&self, _id: &SessionId, _timeout: Timeout) -> impl Future<Output = Result<()>> + Send {
        ready(Ok(()))
    }

    fn set_lifetime(&self, _id: &SessionId, _lifetime: Timeout) -> impl Future<Output = Result<()>> + Send {
        ready(Ok(()))
    }

    fn contains(&self, _id: &SessionId) -> impl Future<Output = Result<bool>> + Send {
        ready(Ok(false))
    }

    fn len(&self) -> impl Future<Output = Result<usize>> + Send {
        ready(Ok(0))
    }

    fn list(&self, _cursor: Cursor, _limit: usize) -> impl Future<Output = Result<Page>> + Send {
        ready(Ok(Page::new(Vec::new(), None)))
    }

    fn cleanup_expired(&self) -> impl Future<Output = Result<usize>> + Send {
        ready(Ok(0))
    }
}

/// The engine-side observers of a run.
pub struct EngineProbe {
    lag_ms: Arc<Mutex<Hist>>,
    sweep_interval_ms: u64,
}

impl EngineProbe {
    /// How late each expiry came so far (ms), and the sweep interval (ms).
    #[must_use]
    pub fn expiry(&self) -> (Hist, u64) {
        (self.lag_ms.lock().clone(), self.sweep_interval_ms)
    }
}

/// Opens the embedded engine the scenario describes, with a listener that
/// records how late each expiry came.
///
/// # Errors
/// [`LoadgenError::Usage`] for a configuration the engine refuses.
pub fn open_engine(scenario: &Scenario) -> Result<(Engine, EngineProbe), LoadgenError> {
    if let Some(dir) = &scenario.engine.data_dir {
        // A non-empty directory would be recovered: the run would start with
        // someone else's sessions and measure recovery, not the scenario.
        let occupied = std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some());
        if occupied {
            return Err(LoadgenError::Usage(format!(
                "data dir {} is not empty: a load run starts from an empty engine (remove it or pick another)",
                dir.display()
            )));
        }
    }
    let lag_ms = Arc::new(Mutex::new(new_hist()));
    let clock = Clock::system();
    let listener_clock = clock.clone();
    let listener_lag = Arc::clone(&lag_ms);
    let config = scenario
        .engine_config()
        .map_err(|e| LoadgenError::Usage(e.to_string()))?
        .clock(clock)
        .listener(move |session, cause| {
            if cause == RemovalCause::Expired {
                if let Some(deadline_ms) = session.expires_at_ms() {
                    let lag = listener_clock.now_ms().saturating_sub(deadline_ms);
                    listener_lag.lock().saturating_record(lag);
                }
            }
        });
    let engine =
        Engine::open(config).map_err(|e| LoadgenError::Usage(format!("engine configuration: {e}")))?;
    let sweep_interval_ms = u64::try_from(scenario.engine.sweep_interval.0.as_millis()).unwrap_or(u64::MAX);
    Ok((
        engine,
        EngineProbe {
            lag_ms,
            sweep_interval_ms,
        },
    ))
}

/// The backend a scenario names, or a usage error.
///
/// # Errors
/// Unknown backends.
pub fn backend_of(scenario: &Scenario) -> Result<BackendSpec, LoadgenError> {
    scenario
        .backend
        .parse()
        .map_err(|e: crate::units::ParseError| LoadgenError::Usage(e.to_string()))
}

/// Connects to Redis on a runtime of its own, which must outlive the store:
/// the client's connections are driven there, whichever runtime the clients
/// use.
///
/// # Errors
/// [`LoadgenError::Usage`] for a bad URL or a server that does not answer.
pub fn connect_redis(
    url: &str,
) -> Result<(tokio::runtime::Runtime, session_redis::RedisStore), LoadgenError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("loadgen-redis-home")
        .enable_all()
        .build()
        .map_err(|e| LoadgenError::Failed(e.into()))?;
    let shown = session_engine::redact_url(url);
    let config = session_redis::RedisConfig::from_url(url)
        .map_err(|e| LoadgenError::Usage(format!("backend {shown}: {e}")))?;
    let store = runtime
        .block_on(session_redis::RedisStore::connect(config))
        .map_err(|e| LoadgenError::Usage(format!("backend {shown}: {e}")))?;
    Ok((runtime, store))
}

/// Something to run on whichever backend a scenario names: a closure
/// generic over the store's type, which Rust closures cannot be.
pub trait BackendJob {
    /// What it returns.
    type Output;
    /// Runs on `store`; `probe` observes the embedded engine.
    ///
    /// # Errors
    /// [`LoadgenError`].
    fn run<B: Backend>(
        self,
        store: &Arc<B>,
        probe: Option<&EngineProbe>,
    ) -> Result<Self::Output, LoadgenError>;
}

/// Opens the backend `scenario` names, wrapped in a [`Stalling`] if `stall`
/// is given, and runs `job` on it.
///
/// # Errors
/// [`LoadgenError::Usage`] for a backend that cannot be opened; the job's.
pub fn with_backend<J: BackendJob>(
    scenario: &Scenario,
    stall: Option<Stall>,
    job: J,
) -> Result<J::Output, LoadgenError> {
    match backend_of(scenario)? {
        BackendSpec::Embedded => {
            let (engine, probe) = open_engine(scenario)?;
            with_stall(Arc::new(engine), Some(&probe), stall, job)
        }
        BackendSpec::Null => with_stall(Arc::new(NullStore), None, stall, job),
        BackendSpec::Peer => with_stall(Arc::new(PeerStore::default()), None, stall, job),
        BackendSpec::Redis(url) => {
            let (runtime, store) = connect_redis(&url)?;
            let out = with_stall(Arc::new(store), None, stall, job);
            // The store (and its connections) are gone; now its runtime may go.
            drop(runtime);
            out
        }
    }
}

fn with_stall<B: Backend, J: BackendJob>(
    store: Arc<B>,
    probe: Option<&EngineProbe>,
    stall: Option<Stall>,
    job: J,
) -> Result<J::Output, LoadgenError> {
    match stall {
        Some(stall) => job.run(&Arc::new(Stalling::new(store, stall.at, stall.length)), probe),
        None => job.run(&store, probe),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_specs_parse() {
        assert_eq!("embedded".parse::<BackendSpec>().unwrap(), BackendSpec::Embedded);
        assert_eq!("null".parse::<BackendSpec>().unwrap(), BackendSpec::Null);
        assert_eq!(
            "redis://127.0.0.1:6379".parse::<BackendSpec>().unwrap(),
            BackendSpec::Redis("redis://127.0.0.1:6379".into())
        );
        assert!("mnesia".parse::<BackendSpec>().is_err());
        assert_eq!("peer".parse::<BackendSpec>().unwrap(), BackendSpec::Peer);
    }
}
