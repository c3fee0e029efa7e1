//! A scenario: the population, the load and the engine setup of one run,
//! read from a TOML file (or a shipped one by name) and overridden by flags.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use session_engine::{Config, Durability, SyncScope, Timeout};

use crate::mix::{KeyDist, Mix};
use crate::units::{Dur, ParseError, Rate};

/// The scenarios shipped in `loadgen/scenarios/`, by name.
pub const BUILTIN: [(&str, &str); 3] = [
    ("default", include_str!("../scenarios/default.toml")),
    ("peak", include_str!("../scenarios/peak.toml")),
    ("tiny", include_str!("../scenarios/tiny.toml")),
];

/// Everything one run does. Field names carry their unit where it is not
/// in the value (`"20s"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scenario {
    /// Short name, used in result directory names.
    pub name: String,
    /// One line on what it models.
    pub description: String,
    /// Live sessions created before the load starts and kept alive throughout.
    pub sessions: usize,
    /// Worker threads issuing point operations (0: one per core).
    pub workers: usize,
    /// Concurrent clients, spread over the workers (0: one per worker). More
    /// clients than workers run as async tasks, for remote backends.
    pub clients: usize,
    /// Total point operations per second (open loop), or `"max"` (closed loop).
    pub rate: Rate,
    /// Measured time, after the warm-up.
    pub duration: Dur,
    /// Stop once this many measured operations were issued (the warm-up's
    /// not counted; 0: no limit).
    pub ops_max: u64,
    /// Load before measuring, excluded from every figure (rounded up to whole intervals).
    pub warmup: Dur,
    /// Width of one histogram interval in the interval log and the
    /// timeline (a whole number of slices).
    pub interval: Dur,
    /// Length of one slice: the load alternates slices between the backend
    /// and the reference peer (see `loadgen/src/schedule.rs`).
    pub slice: Dur,
    /// Interleave the reference peer (a plain sharded map) with the backend,
    /// which the verdict's tail bounds are judged against. Off: every slice
    /// is the backend's and tails are judged as measured.
    pub peer: bool,
    /// Metadata bytes per session (created and written by `update`).
    pub metadata_bytes: usize,
    /// Key distribution over the live population: `uniform` or `zipf:S`.
    pub keys: KeyDist,
    /// Inactivity timeout of the live population (`"never"` or a duration).
    pub timeout: String,
    /// Short timeout of sessions created under load, so expiry churns while
    /// the load runs.
    pub churn_timeout: Dur,
    /// Point-operation weights.
    pub mix: Mix,
    /// The listing load.
    pub list: ListLoad,
    /// Engine settings.
    pub engine: EngineSettings,
    /// `embedded` (the in-process engine), `null` (no backend: measures the
    /// loadgen's own cost), or a remote backend's URL (`redis://...`).
    pub backend: String,
    /// Seed of the key and mix generators (0: drawn and printed).
    pub seed: u64,
}

/// The lister: one client that pages through the sessions on its own schedule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListLoad {
    /// List pages per second (0: no listing).
    pub rate_per_s: f64,
    /// Sessions per page (at most 10,000, the engine's `LIST_PAGE_MAX`).
    pub page: usize,
}

impl Default for ListLoad {
    fn default() -> Self {
        Self {
            rate_per_s: 5.0,
            page: 10_000,
        }
    }
}

/// Engine configuration (`session_engine::Config`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSettings {
    /// Shards (0: the engine's default, 4 per core rounded to a power of two).
    pub shards: usize,
    /// `Config::sessions_max`.
    pub sessions_max: usize,
    /// `Config::initial_capacity`: sessions each table has room for up
    /// front (0: tables grow as sessions come, the engine's default).
    pub initial_capacity: usize,
    /// `Config::metadata_bytes_max` (0: the engine's default).
    pub metadata_bytes_max: usize,
    /// `Config::sweep_interval`.
    pub sweep_interval: Dur,
    /// `Config::data_dir`: persist to per-shard logs here.
    pub data_dir: Option<PathBuf>,
    /// `always`, `interval:MS` or `never` (only with `data_dir`).
    pub durability: String,
    /// `logs` or `filesystem` (`Config::sync_scope`; only with `data_dir`).
    pub sync_scope: String,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            shards: 0,
            sessions_max: 1 << 20,
            initial_capacity: 0,
            metadata_bytes_max: 0,
            sweep_interval: Dur::from_ms(100),
            data_dir: None,
            durability: "interval:1000".into(),
            sync_scope: "logs".into(),
        }
    }
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            name: "custom".into(),
            description: String::new(),
            sessions: 100_000,
            workers: 0,
            clients: 0,
            rate: Rate::PerSec(100_000.0),
            duration: Dur(Duration::from_secs(20)),
            ops_max: 0,
            warmup: Dur(Duration::from_secs(2)),
            interval: Dur(Duration::from_secs(1)),
            slice: Dur::from_ms(100),
            peer: true,
            metadata_bytes: 256,
            keys: KeyDist::Zipf(0.99),
            timeout: "30m".into(),
            churn_timeout: Dur(Duration::from_secs(2)),
            mix: Mix::default(),
            list: ListLoad::default(),
            engine: EngineSettings::default(),
            backend: "embedded".into(),
            seed: 0,
        }
    }
}

/// Why a scenario cannot run; a usage error (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read scenario {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown fields.
    #[error("scenario {name}: {source}")]
    Toml {
        /// File or built-in name.
        name: String,
        /// What the parser said.
        source: Box<toml::de::Error>,
    },
    /// A value is out of range.
    #[error("scenario {name}: {reason}")]
    Invalid {
        /// Scenario name.
        name: String,
        /// What is wrong.
        reason: String,
    },
}

impl Scenario {
    /// A shipped scenario by name, or a TOML file by path.
    ///
    /// # Errors
    /// [`ScenarioError`] if it cannot be read or parsed.
    pub fn load(name_or_path: &str) -> Result<Self, ScenarioError> {
        if let Some((_, text)) = BUILTIN.iter().find(|(name, _)| *name == name_or_path) {
            return Self::parse(name_or_path, text);
        }
        let path = Path::new(name_or_path);
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(name_or_path, &text)
    }

    /// Parses TOML text (`name` labels errors).
    ///
    /// # Errors
    /// [`ScenarioError::Toml`].
    pub fn parse(name: &str, text: &str) -> Result<Self, ScenarioError> {
        toml::from_str(text).map_err(|source| ScenarioError::Toml {
            name: name.to_owned(),
            source: Box::new(source),
        })
    }

    /// Whether the backend keeps its sessions in this process (the engine,
    /// the reference peer): only then is the process's memory theirs.
    #[must_use]
    pub fn holds_sessions_in_process(&self) -> bool {
        matches!(
            self.backend.parse(),
            Ok(crate::backend::BackendSpec::Embedded | crate::backend::BackendSpec::Peer)
        )
    }

    fn invalid(&self, reason: impl Into<String>) -> ScenarioError {
        ScenarioError::Invalid {
            name: self.name.clone(),
            reason: reason.into(),
        }
    }

    /// Checks ranges and resolves defaults that depend on the machine
    /// (workers, clients, seed).
    ///
    /// # Errors
    /// [`ScenarioError::Invalid`] naming the field.
    pub fn resolve(mut self) -> Result<Self, ScenarioError> {
        if !(1..=session_engine::limits::SESSIONS_MAX_LIMIT).contains(&self.sessions) {
            return Err(self.invalid(format!(
                "sessions = {}: must be between 1 and {} (the most an engine holds)",
                self.sessions,
                session_engine::limits::SESSIONS_MAX_LIMIT
            )));
        }
        // The embedded engine must hold the population: more would fail
        // its creates under load, a FAIL that blamed the engine for the
        // run's own configuration.
        let embedded = matches!(self.backend.parse(), Ok(crate::backend::BackendSpec::Embedded));
        let engine_metadata_max = match self.engine.metadata_bytes_max {
            0 => session_engine::limits::METADATA_BYTES_MAX_DEFAULT,
            max => max,
        };
        if embedded && self.metadata_bytes > engine_metadata_max {
            return Err(self.invalid(format!(
                "metadata_bytes = {} exceed what the engine takes, metadata_bytes_max = {engine_metadata_max} \
                 (--metadata-bytes-max)",
                self.metadata_bytes
            )));
        }
        if embedded && self.sessions > self.engine.sessions_max {
            return Err(self.invalid(format!(
                "sessions = {} exceed the engine's capacity, sessions_max = {} (--sessions-max)",
                self.sessions, self.engine.sessions_max
            )));
        }
        if self.workers == 0 {
            self.workers = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        }
        if self.workers > crate::limits::WORKERS_MAX {
            return Err(self.invalid(format!(
                "workers = {}: at most {}",
                self.workers,
                crate::limits::WORKERS_MAX
            )));
        }
        if self.clients == 0 {
            self.clients = self.workers;
        }
        if self.clients < self.workers || self.clients > crate::limits::CLIENTS_MAX {
            return Err(self.invalid(format!(
                "clients = {}: must be between workers ({}) and {}",
                self.clients,
                self.workers,
                crate::limits::CLIENTS_MAX
            )));
        }
        self.check_times()?;
        if !(1..=session_engine::limits::METADATA_BYTES_MAX_LIMIT).contains(&self.metadata_bytes) {
            return Err(self.invalid(format!(
                "metadata_bytes = {}: must be between 1 and {} (the most a session holds)",
                self.metadata_bytes,
                session_engine::limits::METADATA_BYTES_MAX_LIMIT
            )));
        }
        if !(self.list.rate_per_s == 0.0
            || (crate::limits::LIST_RATE_MIN_PER_S..=crate::limits::LIST_RATE_MAX_PER_S)
                .contains(&self.list.rate_per_s))
        {
            return Err(self.invalid(
                "list.rate_per_s must be 0 (no listing) or between 0.001 and 1e6 pages per second",
            ));
        }
        if self.list.rate_per_s > 0.0
            && !(1..=session_engine::limits::LIST_PAGE_MAX).contains(&self.list.page)
        {
            return Err(self.invalid(format!(
                "list.page = {}: must be between 1 and {}",
                self.list.page,
                session_engine::limits::LIST_PAGE_MAX
            )));
        }
        self.mix.validate().map_err(|reason| self.invalid(reason))?;
        self.check_timeouts()?;
        self.durability().map_err(|e| self.invalid(e.to_string()))?;
        if self.engine.data_dir.is_none() && self.engine.durability != EngineSettings::default().durability {
            return Err(self.invalid(format!(
                "durability applies only with a data dir (--data-dir): without one the engine keeps nothing on disk \
                 (durability {:?})",
                self.engine.durability
            )));
        }
        self.sync_scope().map_err(|e| self.invalid(e.to_string()))?;
        if self.engine.data_dir.is_none() && self.engine.sync_scope != EngineSettings::default().sync_scope {
            return Err(self.invalid(format!(
                "sync_scope applies only with a data dir (--data-dir): without one the engine syncs nothing \
                 (sync_scope {:?})",
                self.engine.sync_scope
            )));
        }
        if self.seed == 0 {
            self.seed = fresh_seed();
        }
        Ok(self)
    }

    /// The run's times: something to measure, slices and intervals in
    /// range and whole numbers of each other.
    pub(crate) fn check_times(&self) -> Result<(), ScenarioError> {
        // `ops_max` stops a run early, within its duration: it does not
        // replace one (a zero duration measured one pair of slices,
        // however many operations were asked for).
        if self.duration.0.is_zero() {
            return Err(self.invalid(
                "duration is zero: the run would measure nothing (ops_max stops a run early, within its duration)",
            ));
        }
        if self.interval.as_ns() < crate::limits::INTERVAL_MIN_NS {
            return Err(self.invalid("interval must be at least 10ms"));
        }
        let slice_ns = self.slice.as_ns();
        if !(crate::limits::SLICE_MIN_NS..=crate::limits::SLICE_MAX_NS).contains(&slice_ns) {
            return Err(self.invalid(format!(
                "slice = {}: must be between {} and {}",
                self.slice,
                Dur(Duration::from_nanos(crate::limits::SLICE_MIN_NS)),
                Dur(Duration::from_nanos(crate::limits::SLICE_MAX_NS))
            )));
        }
        if !self.interval.as_ns().is_multiple_of(slice_ns) {
            return Err(self.invalid(format!(
                "interval = {} is not a whole number of slices of {}",
                self.interval, self.slice
            )));
        }
        // The run measures whole pairs of slices (one each side) and warms
        // up for whole intervals: times that are not are refused rather
        // than rounded up behind the user's back.
        if !self.duration.0.is_zero() {
            if self.interval.0 > self.duration.0 {
                return Err(self.invalid(format!(
                    "interval = {} is longer than duration = {}",
                    self.interval, self.duration
                )));
            }
            let pair_ns = if self.peer { 2 * slice_ns } else { slice_ns };
            if !self.duration.as_ns().is_multiple_of(pair_ns) {
                return Err(self.invalid(format!(
                    "duration = {} is not a whole number of {} (the run measures whole {})",
                    self.duration,
                    Dur(Duration::from_nanos(pair_ns)),
                    if self.peer {
                        "pairs of slices, one each side"
                    } else {
                        "slices"
                    }
                )));
            }
        }
        if !self.warmup.as_ns().is_multiple_of(self.interval.as_ns()) {
            return Err(self.invalid(format!(
                "warmup = {} is not a whole number of intervals of {}",
                self.warmup, self.interval
            )));
        }
        // Measured time starting inside a pair would not be whole pairs:
        // by the seed, one side could get both slices of a pair, the
        // other none.
        if self.peer && !self.warmup.as_ns().is_multiple_of(2 * slice_ns) {
            return Err(self.invalid(format!(
                "warmup = {} is not a whole number of pairs of slices of {} (one each side: the measured time \
                 starts with a pair)",
                self.warmup, self.slice
            )));
        }
        Ok(())
    }

    /// The population's and the churn's timeouts, as the engine takes them
    /// and long enough for the run.
    fn check_timeouts(&self) -> Result<(), ScenarioError> {
        let population = self
            .population_timeout()
            .map_err(|e| self.invalid(format!("timeout = {:?}: {e}", self.timeout)))?;
        population
            .checked_ms()
            .map_err(|e| self.invalid(format!("timeout = {}: {e}", self.timeout)))?;
        let run = self.warmup.0 + self.duration.0;
        if matches!(population, Timeout::After(d) if d < run) {
            return Err(self.invalid(format!(
                "timeout = {} is shorter than warmup + duration ({}): sessions of the live population \
                 the load does not reach in time would expire mid-run and fail its reads",
                self.timeout,
                Dur(run)
            )));
        }
        Timeout::After(self.churn_timeout.0)
            .checked_ms()
            .map_err(|e| self.invalid(format!("churn_timeout = {}: {e}", self.churn_timeout)))?;
        Ok(())
    }

    /// The population's timeout.
    ///
    /// # Errors
    /// When `timeout` is neither `never` nor a duration.
    pub fn population_timeout(&self) -> Result<Timeout, ParseError> {
        if self.timeout.trim() == "never" {
            return Ok(Timeout::Never);
        }
        let d: Dur = self.timeout.parse()?;
        Ok(Timeout::After(d.0))
    }

    /// The engine's durability mode.
    ///
    /// # Errors
    /// When `engine.durability` is not `always`, `interval:MS` or `never`.
    pub fn durability(&self) -> Result<Durability, ParseError> {
        parse_durability(&self.engine.durability)
    }

    /// How the engine's flush rounds sync its logs.
    ///
    /// # Errors
    /// When `engine.sync_scope` is not `logs` or `filesystem`.
    pub fn sync_scope(&self) -> Result<SyncScope, ParseError> {
        parse_sync_scope(&self.engine.sync_scope)
    }

    /// The engine configuration this scenario asks for (without listener).
    ///
    /// # Errors
    /// When the durability string is malformed.
    pub fn engine_config(&self) -> Result<Config, ParseError> {
        let mut config = Config::default()
            .sessions_max(self.engine.sessions_max)
            .sweep_interval(self.engine.sweep_interval.0);
        if self.engine.shards > 0 {
            config = config.shards(self.engine.shards);
        }
        if self.engine.initial_capacity > 0 {
            config = config.initial_capacity(self.engine.initial_capacity);
        }
        if self.engine.metadata_bytes_max > 0 {
            config = config.metadata_bytes_max(self.engine.metadata_bytes_max);
        }
        if let Some(dir) = &self.engine.data_dir {
            config = config
                .data_dir(dir)
                .durability(self.durability()?)
                .sync_scope(self.sync_scope()?);
        }
        Ok(config)
    }

    /// Warm-up in whole intervals.
    #[must_use]
    pub fn warmup_intervals(&self) -> u64 {
        self.warmup.as_ns().div_ceil(self.interval.as_ns())
    }
}

/// `logs` or `filesystem`.
///
/// # Errors
/// [`ParseError`] naming the accepted forms.
pub fn parse_sync_scope(text: &str) -> Result<SyncScope, ParseError> {
    match text.trim() {
        "logs" => Ok(SyncScope::Logs),
        "filesystem" => Ok(SyncScope::FileSystem),
        _ => Err(ParseError::new("sync_scope", text, "logs or filesystem")),
    }
}

/// `always`, `interval:MS` or `never`.
///
/// # Errors
/// [`ParseError`] naming the accepted forms.
pub fn parse_durability(text: &str) -> Result<Durability, ParseError> {
    match text.trim() {
        "always" => Ok(Durability::Always),
        "never" => Ok(Durability::Never),
        other => {
            let ms = other
                .strip_prefix("interval:")
                .and_then(|ms| ms.parse::<u64>().ok())
                .filter(|ms| *ms > 0)
                .ok_or_else(|| {
                    ParseError::new(
                        "durability",
                        text,
                        "expected always, interval:MS (MS > 0) or never",
                    )
                })?;
            Ok(Durability::Interval(Duration::from_millis(ms)))
        }
    }
}

fn fresh_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos());
    #[allow(clippy::cast_possible_truncation)]
    let mixed = (nanos as u64) ^ u64::from(std::process::id()).rotate_left(32);
    mixed.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `[mix]` table gives the kinds it does not name weight 0, as
    /// `--mix` does: filled from the default mix, `get = 100` ran 29% of
    /// other kinds, judged against bounds the file never asked for.
    #[test]
    fn a_mix_table_runs_only_the_kinds_it_names() {
        let s = Scenario::parse("t", "[mix]\nget = 100\n").unwrap();
        assert_eq!(s.mix, "get=100".parse::<Mix>().unwrap());
        assert!(!s.mix.includes(crate::mix::Op::Create));
        let s = Scenario::parse("t", "rate = 1000\n").unwrap();
        assert_eq!(s.mix, Mix::default(), "no table: the default mix");
    }

    /// Timeouts the engine refuses made every create fail at run time
    /// (counted as the backend's errors: a FAIL that blamed the backend),
    /// and a population that expires before the run ends made its gets
    /// fail: both are the scenario's mistakes, refused with its field named.
    #[test]
    fn timeouts_the_run_cannot_use_are_refused() {
        let refused = |s: Scenario, field: &str| {
            let err = s.resolve().unwrap_err().to_string();
            assert!(err.contains(field), "{field}: {err}");
        };
        refused(
            Scenario {
                churn_timeout: Dur(Duration::ZERO),
                ..Scenario::default()
            },
            "churn_timeout",
        );
        refused(
            Scenario {
                churn_timeout: Dur(Duration::from_secs(401 * 24 * 3600)),
                ..Scenario::default()
            },
            "churn_timeout",
        );
        refused(
            Scenario {
                timeout: "9700h".into(),
                ..Scenario::default()
            },
            "timeout",
        );
        refused(
            Scenario {
                timeout: "10s".into(),
                duration: Dur(Duration::from_secs(20)),
                ..Scenario::default()
            },
            "timeout",
        );
        assert!(Scenario {
            timeout: "never".into(),
            ..Scenario::default()
        }
        .resolve()
        .is_ok());
    }

    /// Times the run would round up are refused, saying why: an interval
    /// of an hour turned a 3 s warm-up into an hour, and slices of 10 s
    /// turned a 1 s run into 20 s, while the start line printed the times
    /// asked for.
    #[test]
    fn times_the_run_would_round_up_are_refused() {
        let refused = |s: Scenario, field: &str| {
            let err = s.resolve().unwrap_err().to_string();
            assert!(err.contains(field), "{field}: {err}");
        };
        refused(
            Scenario {
                interval: Dur(Duration::from_secs(3_600)),
                ..Scenario::default()
            },
            "interval",
        );
        refused(
            Scenario {
                warmup: Dur(Duration::from_millis(1_500)),
                interval: Dur(Duration::from_secs(1)),
                ..Scenario::default()
            },
            "warmup",
        );
        refused(
            Scenario {
                duration: Dur(Duration::from_secs(1)),
                slice: Dur(Duration::from_secs(10)),
                interval: Dur(Duration::from_secs(10)),
                warmup: Dur(Duration::ZERO),
                ..Scenario::default()
            },
            "duration",
        );
    }

    #[test]
    fn every_builtin_scenario_parses_and_resolves() {
        for (name, _) in BUILTIN {
            let s = Scenario::load(name).unwrap().resolve().unwrap();
            assert_eq!(s.name, name);
            assert!(s.workers >= 1 && s.clients >= s.workers && s.seed != 0);
        }
    }

    #[test]
    fn the_default_scenario_is_the_mission() {
        let s = Scenario::load("default").unwrap();
        assert_eq!(s.sessions, 100_000);
        assert!(matches!(s.rate, Rate::PerSec(_)), "open loop by default");
        assert!(
            s.churn_timeout.0 <= Duration::from_secs(5),
            "expiry churns during the run"
        );
        assert!(s.duration.0 + s.warmup.0 <= Duration::from_secs(40));
    }

    #[test]
    fn unknown_fields_and_bad_values_are_refused() {
        let err = Scenario::parse("t", "sesions = 5").unwrap_err().to_string();
        assert!(err.contains("sesions"), "{err}");
        let bad = Scenario {
            sessions: 0,
            ..Scenario::default()
        };
        assert!(bad.resolve().unwrap_err().to_string().contains("sessions"));
        // Sizes past what any store takes are refused before anything is
        // allocated for them.
        let bad = Scenario {
            sessions: 1_000_000_000_000,
            ..Scenario::default()
        };
        assert!(bad.resolve().unwrap_err().to_string().contains("sessions"));
        let bad = Scenario {
            metadata_bytes: 10_000_000_000_000,
            ..Scenario::default()
        };
        assert!(bad.resolve().unwrap_err().to_string().contains("metadata_bytes"));
        // Sessions bigger than the embedded engine takes: refused before a
        // data dir is written (the populate failed, and left it behind).
        for (metadata_bytes, metadata_bytes_max) in [(100_000, 0), (2_000, 1_000)] {
            let bad = Scenario {
                metadata_bytes,
                engine: EngineSettings {
                    metadata_bytes_max,
                    ..EngineSettings::default()
                },
                ..Scenario::default()
            };
            let err = bad.resolve().unwrap_err().to_string();
            assert!(err.contains("--metadata-bytes-max"), "{err}");
        }
        // Clients past what their histograms' memory allows (ten thousand
        // clients' 1.7 MB sets would abort the run on an allocation).
        let bad = Scenario {
            clients: 10_000,
            ..Scenario::default()
        };
        assert!(bad.resolve().unwrap_err().to_string().contains("clients"));
        let ok = Scenario {
            clients: crate::limits::CLIENTS_MAX,
            ..Scenario::default()
        };
        assert!(ok.resolve().is_ok());
        let bad = Scenario {
            engine: EngineSettings {
                durability: "sometimes".into(),
                ..EngineSettings::default()
            },
            ..Scenario::default()
        };
        assert!(bad.resolve().unwrap_err().to_string().contains("durability"));
        for rate in [1e-9, -1.0, f64::NAN] {
            let bad = Scenario {
                list: ListLoad {
                    rate_per_s: rate,
                    ..ListLoad::default()
                },
                ..Scenario::default()
            };
            let err = bad.resolve().unwrap_err().to_string();
            assert!(err.contains("list.rate_per_s"), "{rate}: {err}");
        }
    }

    #[test]
    fn initial_capacity_reaches_the_engine_config() {
        let s = Scenario::parse("t", "[engine]\ninitial_capacity = 5_000").unwrap();
        let config = s.engine_config().unwrap();
        assert!(
            format!("{config:?}").contains("initial_capacity: 5000"),
            "{config:?}"
        );
        let unset = Scenario::default().engine_config().unwrap();
        assert!(format!("{unset:?}").contains("initial_capacity: 0"), "{unset:?}");
    }

    #[test]
    fn sync_scope_maps_to_the_engine_enum_and_needs_a_data_dir() {
        assert_eq!(parse_sync_scope("logs").unwrap(), SyncScope::Logs);
        assert_eq!(parse_sync_scope("filesystem").unwrap(), SyncScope::FileSystem);
        assert!(parse_sync_scope("fs")
            .unwrap_err()
            .to_string()
            .contains("logs or filesystem"));
        let mut s = Scenario::default();
        s.engine.sync_scope = "filesystem".into();
        let err = s.clone().resolve().unwrap_err().to_string();
        assert!(err.contains("only with a data dir"), "{err}");
        s.engine.data_dir = Some("/tmp/x".into());
        let config = s.resolve().unwrap().engine_config().unwrap();
        assert!(
            format!("{config:?}").contains("sync_scope: FileSystem"),
            "{config:?}"
        );
        let mut bad = Scenario::default();
        bad.engine.data_dir = Some("/tmp/x".into());
        bad.engine.sync_scope = "everything".into();
        assert!(bad.resolve().unwrap_err().to_string().contains("sync_scope"));
    }

    #[test]
    fn durability_maps_to_the_engine_enum() {
        assert_eq!(parse_durability("always").unwrap(), Durability::Always);
        assert_eq!(parse_durability("never").unwrap(), Durability::Never);
        assert_eq!(
            parse_durability("interval:250").unwrap(),
            Durability::Interval(Duration::from_millis(250))
        );
        assert!(parse_durability("interval:0").is_err());
        assert!(parse_durability("interval:").is_err());
    }
}
