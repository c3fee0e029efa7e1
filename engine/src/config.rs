//! Engine configuration: a builder with sane defaults and the seed's presets.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::id::SessionId;
use crate::limits::SEGMENT_SIZE_BYTES_DEFAULT;
use crate::limits::{
    FLUSH_INTERVAL_MS_MAX, FLUSH_INTERVAL_MS_MIN, SWEEP_INTERVAL_MS_MAX, SWEEP_INTERVAL_MS_MIN,
};
use crate::limits::{
    METADATA_BYTES_MAX_DEFAULT, METADATA_BYTES_MAX_LIMIT, SESSIONS_MAX_DEFAULT, SESSIONS_MAX_LIMIT,
    SHARDS_MAX, SHARDS_PER_CORE_DEFAULT, SWEEP_INTERVAL_MS_DEFAULT,
};
use crate::limits::{SEGMENT_SIZE_BYTES_MAX, SEGMENT_SIZE_BYTES_MIN};
use crate::session::{Listener, RemovalCause, Session, Timeout};

/// Told when a session timer fires: the session's id and the timer's token.
/// Called on the sweeper thread (or whichever thread runs
/// `cleanup_expired`), never under a lock, like the removal [`Listener`];
/// keep it short. A timer fires at most once, and never for a session that
/// expired, was deleted or rotated first (those timers die silently). A panic
/// in it is caught and counted in `Stats::listener_panics`.
///
/// "First" is before the timer is taken off under its shard's lock; the
/// call comes after that lock is let go. So a session deleted in between
/// is still told, and if its id was meanwhile inserted again and armed a
/// timer with the same token, the call cannot be told from one for that
/// new timer (which is still armed: `cancel_timer` finds it). A listener
/// that must tell them apart uses tokens that are never reused under one
/// id (a counter, or the time the timer was armed).
pub type TimerListener = Arc<dyn Fn(&SessionId, u64) + Send + Sync>;

/// How an engine is set up. Start from [`Config::default`] or a preset and
/// chain the setters; [`Engine::open`](crate::Engine::open) validates it.
#[derive(Clone)]
pub struct Config {
    pub(crate) shards: Option<usize>,
    pub(crate) sessions_max: usize,
    pub(crate) initial_capacity: usize,
    pub(crate) metadata_bytes_max: usize,
    pub(crate) default_timeout: Timeout,
    pub(crate) max_lifetime: Timeout,
    pub(crate) sweep_interval: Option<Duration>,
    pub(crate) clock: Option<Clock>,
    pub(crate) listener: Option<Listener>,
    pub(crate) timer_listener: Option<TimerListener>,
    pub(crate) data_dir: Option<PathBuf>,
    pub(crate) durability: Durability,
    /// Whether [`Config::durability`] was called: without a data directory
    /// that is refused (nothing would be durable).
    durability_set: bool,
    pub(crate) recovery: RecoveryMode,
    pub(crate) sync_scope: SyncScope,
    pub(crate) segment_size_bytes: usize,
    pub(crate) touch_persist_fraction: f64,
    pub(crate) compaction_threshold: f64,
    /// Tests: the background thread (counted from 0 in start order) whose
    /// spawn fails, as when the process is out of threads.
    pub(crate) fail_thread_spawn: Option<usize>,
    /// Tests: every recovery thread's spawn fails.
    pub(crate) fail_recovery_threads: bool,
}

/// When an acknowledged write is on disk (only with a data directory).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Durability {
    /// An operation returns only after its record is durable (fdatasync);
    /// concurrent writers share each flush (group commit). Survives power loss.
    /// Through the async `SessionStore` trait a write's future completes at
    /// that point without blocking the thread that polls it (a `flusher`
    /// thread runs the sync). Each shard's log is synced on its own, so a
    /// write-heavy `Always` engine wants few shards.
    Always,
    /// A background flush at most this often (Redis' `everysec` at 1 s): a
    /// crash of the machine loses at most about one interval of writes; a
    /// crash of the process alone loses nothing (the page cache survives it).
    Interval(Duration),
    /// The operating system writes back when it likes: survives a process
    /// crash, not a machine crash.
    Never,
}

/// What a round that makes several shards' logs durable at once syncs:
/// each log, or the whole file system they are on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum SyncScope {
    /// Each log's unsynced range (`msync`, an `fdatasync` of it), all at
    /// the same time. The default: it writes back nothing but the logs.
    #[default]
    Logs,
    /// One `syncfs` of the file system the data directory is on, for all
    /// the logs a round syncs: one device flush instead of one per log, so
    /// `Always` rounds over many shards take about what one log's sync
    /// takes (`results/sync-cost.md`). It also writes back every other
    /// file's dirty data on that file system, so it is for a data
    /// directory on a file system of its own; and once a `syncfs` reports
    /// a writeback error there, whichever file's, every log on it fails
    /// its waiting writers and refuses writes from then on, as after any
    /// failed sync. Used by the `Always` rounds of async writers (the
    /// `SessionStore` trait) when several logs have writers waiting, and by
    /// the `Interval` flush; a blocking writer's own sync, and `close`'s,
    /// stay per log. Needs ext4 (whose `syncfs` ends with a flush of the
    /// device's write cache, journal or not; another file system's may not)
    /// and Linux 5.17 or later (before 5.8 `syncfs` reported no writeback
    /// error, before 5.17 not the journal's or the device flush's):
    /// `Engine::open` refuses it elsewhere (`InvalidConfig`), as it does
    /// without a data directory or with `Durability::Never` (nothing to
    /// sync).
    FileSystem,
}

/// What recovery does with a corrupt record in the middle of a log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum RecoveryMode {
    /// Refuse to open, naming the file and offset. The default: nothing is
    /// dropped silently.
    #[default]
    Strict,
    /// Skip the damaged bytes, resynchronise on the next valid record, and
    /// count what was skipped in the recovery report.
    Repair,
}

impl Default for Config {
    /// In memory, shards from the core count, 1M sessions of at most 64 KiB
    /// metadata, a 30-minute default timeout, swept every 100 ms.
    fn default() -> Self {
        Self {
            shards: None,
            sessions_max: SESSIONS_MAX_DEFAULT,
            initial_capacity: 0,
            metadata_bytes_max: METADATA_BYTES_MAX_DEFAULT,
            default_timeout: Timeout::from_secs(30 * 60),
            max_lifetime: Timeout::Never,
            sweep_interval: Some(Duration::from_millis(SWEEP_INTERVAL_MS_DEFAULT)),
            clock: None,
            listener: None,
            timer_listener: None,
            data_dir: None,
            durability: Durability::Interval(Duration::from_secs(1)),
            durability_set: false,
            recovery: RecoveryMode::Strict,
            sync_scope: SyncScope::Logs,
            segment_size_bytes: SEGMENT_SIZE_BYTES_DEFAULT,
            touch_persist_fraction: 0.1,
            compaction_threshold: 0.5,
            fail_thread_spawn: None,
            fail_recovery_threads: false,
        }
    }
}

impl Config {
    /// The seed's development preset: in memory, 5-minute sessions, at most
    /// 100K of them.
    #[must_use]
    pub fn development() -> Self {
        Self::default()
            .default_timeout(Timeout::from_secs(5 * 60))
            .sessions_max(100_000)
    }

    /// The seed's single-node production preset: 1-hour sessions, up to the
    /// default 1M, persisted to `data_dir` with a flush every second (Redis'
    /// `everysec`).
    #[must_use]
    pub fn single_node_production(data_dir: impl Into<PathBuf>) -> Self {
        Self::default()
            .default_timeout(Timeout::from_secs(60 * 60))
            .data_dir(data_dir)
            .durability(Durability::Interval(Duration::from_secs(1)))
    }

    /// Number of shards, a power of two up to 1024. Default: 4 per available
    /// core, rounded up to a power of two.
    #[must_use]
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = Some(shards);
        self
    }

    /// Most sessions held at once; `create` beyond it fails with
    /// [`Error::CapacityExceeded`]. Default 2^20.
    #[must_use]
    pub fn sessions_max(mut self, sessions_max: usize) -> Self {
        self.sessions_max = sessions_max;
        self
    }

    /// Sessions to make room for when the engine opens: each shard's table
    /// starts sized for its share (plus 1/16 for an uneven spread), so
    /// filling the engine up to this many never waits for a table to grow (a
    /// shard's table grows by rebuilding itself under the shard's lock, in
    /// time proportional to its sessions). Under churn a table that is more
    /// than half full may still double once, when the marks deleted
    /// sessions leave (tombstones, most emptied again at once) use up its
    /// room. The room costs 21-43 bytes per session (each slot's tagged
    /// 8-byte pointer and 8-byte timer-wheel link, 4/3 to 8/3 slots per
    /// session: a power of two) whether used or not. Default 0 (tables grow as sessions come); at most
    /// `sessions_max`.
    #[must_use]
    pub fn initial_capacity(mut self, sessions: usize) -> Self {
        self.initial_capacity = sessions;
        self
    }

    /// Largest metadata accepted, in bytes; larger fails with
    /// [`Error::ValueTooLarge`]. Default 64 KiB, at most 16 MiB.
    #[must_use]
    pub fn metadata_bytes_max(mut self, bytes: usize) -> Self {
        self.metadata_bytes_max = bytes;
        self
    }

    /// The timeout [`Engine::create_default`](crate::Engine::create_default) uses.
    #[must_use]
    pub fn default_timeout(mut self, timeout: Timeout) -> Self {
        self.default_timeout = timeout;
        self
    }

    /// A lifetime cap every new session gets (`create`, `insert`, a `put`
    /// of a new id): it expires this long after its creation however active
    /// it is (moka's time-to-live beside the time-to-idle; tower-sessions'
    /// absolute expiry). Default `Timeout::Never`: no cap. Per session:
    /// [`Engine::set_lifetime`](crate::Engine::set_lifetime).
    #[must_use]
    pub fn max_lifetime(mut self, lifetime: Timeout) -> Self {
        self.max_lifetime = lifetime;
        self
    }

    /// How often the background sweeper advances the timer wheels (at least
    /// 1 ms, at most 1 minute). Expired sessions are reclaimed within about
    /// one interval of their deadline; they are never returned meanwhile.
    #[must_use]
    pub fn sweep_interval(mut self, interval: Duration) -> Self {
        self.sweep_interval = Some(interval);
        self
    }

    /// Runs no sweeper thread: expired sessions are reclaimed only by
    /// [`Engine::cleanup_expired`](crate::Engine::cleanup_expired) (or on
    /// `insert` of the same id). For hosts that drive expiry themselves.
    /// (The default clock still runs its own thread; with
    /// [`Clock::precise`] or a manual clock an in-memory engine runs none.)
    #[must_use]
    pub fn without_sweeper(mut self) -> Self {
        self.sweep_interval = None;
        self
    }

    /// Tests: makes the spawn of the engine's `nth` background thread (from
    /// 0, in start order) fail, as when the process is out of threads.
    #[doc(hidden)]
    #[must_use]
    pub fn debug_fail_thread_spawn(mut self, nth: usize) -> Self {
        self.fail_thread_spawn = Some(nth);
        self
    }

    /// Tests: makes the spawn of every recovery thread (`open` reads the
    /// shards' logs on several) fail, as when the process is out of threads.
    #[doc(hidden)]
    #[must_use]
    pub fn debug_fail_recovery_threads(mut self) -> Self {
        self.fail_recovery_threads = true;
        self
    }

    /// The clock. Default: a [`Clock::system`] of the engine's own, made
    /// when it opens (time in ticks of [`CLOCK_TICK`](crate::CLOCK_TICK));
    /// [`Clock::precise`] reads the hardware clock on every operation;
    /// tests pass a [`ManualClock`](crate::ManualClock)'s.
    #[must_use]
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// A callback told when a session timer fires (see
    /// [`Engine::arm_timer`](crate::Engine::arm_timer) and [`TimerListener`]).
    #[must_use]
    pub fn timer_listener(mut self, listener: impl Fn(&SessionId, u64) + Send + Sync + 'static) -> Self {
        self.timer_listener = Some(Arc::new(listener));
        self
    }

    /// A callback told about every removal (see [`Listener`]).
    #[must_use]
    pub fn listener(mut self, listener: impl Fn(&Session, RemovalCause) + Send + Sync + 'static) -> Self {
        self.listener = Some(Arc::new(listener));
        self
    }

    /// Persists sessions to per-shard append-only logs in `dir` (created if
    /// missing), recovered on the next open. Without it the engine is purely
    /// in memory.
    #[must_use]
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// When writes are durable (default `Interval(1 s)`); only with
    /// [`Config::data_dir`]: an engine opened with a durability but no data
    /// directory is refused (`InvalidConfig`), as it would keep nothing.
    #[must_use]
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self.durability_set = true;
        self
    }

    /// What recovery does with corrupt records (default `Strict`).
    #[must_use]
    pub fn recovery_mode(mut self, mode: RecoveryMode) -> Self {
        self.recovery = mode;
        self
    }

    /// What a round that syncs several logs syncs (default
    /// [`SyncScope::Logs`]; see [`SyncScope::FileSystem`] for a data
    /// directory on a file system of its own).
    #[must_use]
    pub fn sync_scope(mut self, scope: SyncScope) -> Self {
        self.sync_scope = scope;
        self
    }

    /// Size of each preallocated log segment (default 16 MiB). Every shard
    /// keeps at least one, so the data directory starts at shards x this.
    #[must_use]
    pub fn segment_size_bytes(mut self, bytes: usize) -> Self {
        self.segment_size_bytes = bytes;
        self
    }

    /// How far, as a fraction of a session's timeout, its last access on disk
    /// may lag the real one before a read writes a `TOUCH` record (default
    /// 0.1). A recovered session expires at most this fraction of its timeout
    /// early. Smaller: more log writes on reads; larger: earlier expiry after
    /// a restart. A read logs when it slides the session into a new touch
    /// period, the largest power of two of milliseconds not over this
    /// fraction of its timeout (so between half of it and all of it: an
    /// active session logs one to two touches per fraction of its timeout).
    #[must_use]
    pub fn touch_persist_fraction(mut self, fraction: f64) -> Self {
        self.touch_persist_fraction = fraction;
        self
    }

    /// Fraction of a shard's log that must be dead (superseded records) for
    /// the background compaction to rewrite it (default 0.5), once the log
    /// spans more than two segments.
    #[must_use]
    pub fn compaction_threshold(mut self, fraction: f64) -> Self {
        self.compaction_threshold = fraction;
        self
    }

    /// The configured default timeout.
    #[must_use]
    pub fn get_default_timeout(&self) -> Timeout {
        self.default_timeout
    }

    /// The table room each of `shards` shards starts with.
    pub(crate) fn shard_capacity(&self, shards: usize) -> usize {
        let share = self.initial_capacity.div_ceil(shards);
        share + share.div_ceil(16)
    }

    /// Checks every value and resolves defaults; returns the shard count.
    pub(crate) fn validate(&self) -> Result<usize> {
        let shards = self.shards.unwrap_or_else(|| {
            let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
            (cores * SHARDS_PER_CORE_DEFAULT)
                .next_power_of_two()
                .min(SHARDS_MAX)
        });
        if shards == 0 || !shards.is_power_of_two() || shards > SHARDS_MAX {
            return Err(Error::InvalidConfig(format!(
                "shards = {shards}: must be a power of two between 1 and {SHARDS_MAX}"
            )));
        }
        if self.sessions_max == 0 || self.sessions_max > SESSIONS_MAX_LIMIT {
            return Err(Error::InvalidConfig(format!(
                "sessions_max = {}: must be between 1 and {SESSIONS_MAX_LIMIT}",
                self.sessions_max
            )));
        }
        if self.initial_capacity > self.sessions_max {
            return Err(Error::InvalidConfig(format!(
                "initial_capacity = {}: must be at most sessions_max ({})",
                self.initial_capacity, self.sessions_max
            )));
        }
        if self.metadata_bytes_max > METADATA_BYTES_MAX_LIMIT {
            return Err(Error::InvalidConfig(format!(
                "metadata_bytes_max = {}: must be at most {METADATA_BYTES_MAX_LIMIT} (16 MiB)",
                self.metadata_bytes_max
            )));
        }
        if let Some(interval) = self.sweep_interval {
            if interval < Duration::from_millis(SWEEP_INTERVAL_MS_MIN)
                || interval > Duration::from_millis(SWEEP_INTERVAL_MS_MAX)
            {
                return Err(Error::InvalidConfig(format!(
                    "sweep_interval = {interval:?}: must be between {SWEEP_INTERVAL_MS_MIN} ms and {SWEEP_INTERVAL_MS_MAX} ms"
                )));
            }
        }
        self.default_timeout
            .to_stored()
            .map_err(|e| Error::InvalidConfig(format!("default_timeout: {e}")))?;
        self.max_lifetime
            .to_stored()
            .map_err(|e| Error::InvalidConfig(format!("max_lifetime: {e}")))?;
        if self.durability_set && self.data_dir.is_none() {
            return Err(Error::InvalidConfig(format!(
                "durability = {:?} without a data_dir: an engine without a data directory keeps nothing on \
                 disk, so no write would be durable (set data_dir, or leave durability unset for an \
                 in-memory engine)",
                self.durability
            )));
        }
        if self.sync_scope == SyncScope::FileSystem {
            check_file_system_scope(self.data_dir.is_some(), self.durability, &kernel_release())?;
        }
        if let Durability::Interval(interval) = self.durability {
            if interval < Duration::from_millis(FLUSH_INTERVAL_MS_MIN)
                || interval > Duration::from_millis(FLUSH_INTERVAL_MS_MAX)
            {
                return Err(Error::InvalidConfig(format!(
                    "durability = Interval({interval:?}): must be between {FLUSH_INTERVAL_MS_MIN} ms and {FLUSH_INTERVAL_MS_MAX} ms"
                )));
            }
        }
        if self.segment_size_bytes < SEGMENT_SIZE_BYTES_MIN
            || self.segment_size_bytes > SEGMENT_SIZE_BYTES_MAX
        {
            return Err(Error::InvalidConfig(format!(
                "segment_size_bytes = {}: must be between {SEGMENT_SIZE_BYTES_MIN} and {SEGMENT_SIZE_BYTES_MAX}",
                self.segment_size_bytes
            )));
        }
        if !(self.touch_persist_fraction > 0.0 && self.touch_persist_fraction <= 1.0) {
            return Err(Error::InvalidConfig(format!(
                "touch_persist_fraction = {}: must be in (0, 1]",
                self.touch_persist_fraction
            )));
        }
        if !(self.compaction_threshold > 0.0 && self.compaction_threshold < 1.0) {
            return Err(Error::InvalidConfig(format!(
                "compaction_threshold = {}: must be in (0, 1)",
                self.compaction_threshold
            )));
        }
        Ok(shards)
    }
}

/// `SyncScope::FileSystem` needs something to sync and a `syncfs` that
/// reports every error of its writeback, journal commit and device flush
/// (Linux 5.17 and later: `release`, the kernel's, as `uname -r` gives
/// it). The file system's type is checked when the logs open.
fn check_file_system_scope(data_dir: bool, durability: Durability, release: &str) -> Result<()> {
    if !data_dir || durability == Durability::Never {
        return Err(Error::InvalidConfig(format!(
            "sync_scope = FileSystem with {}: it changes how the logs are synced, and this engine syncs \
             none (set a data_dir with durability Always or Interval, or leave sync_scope unset)",
            if data_dir {
                "durability = Never"
            } else {
                "no data_dir"
            }
        )));
    }
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .map(str::parse::<u32>);
    let version = match (numbers.next(), numbers.next()) {
        (Some(Ok(major)), Some(Ok(minor))) => Some((major, minor)),
        _ => None,
    };
    if version.is_some_and(|v| v >= (5, 17)) {
        return Ok(());
    }
    Err(Error::InvalidConfig(format!(
        "sync_scope = FileSystem on kernel {release:?}: it needs Linux 5.17 or later, whose syncfs reports \
         every error of its writeback, journal commit and device flush (before it some went unreported, \
         and an acknowledged write could be lost); leave sync_scope unset"
    )))
}

/// The running kernel's release (`uname -r`).
fn kernel_release() -> String {
    rustix::system::uname().release().to_string_lossy().into_owned()
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("shards", &self.shards)
            .field("sessions_max", &self.sessions_max)
            .field("initial_capacity", &self.initial_capacity)
            .field("metadata_bytes_max", &self.metadata_bytes_max)
            .field("default_timeout", &self.default_timeout)
            .field("max_lifetime", &self.max_lifetime)
            .field("sweep_interval", &self.sweep_interval)
            .field("clock", &self.clock)
            .field("listener", &self.listener.as_ref().map(|_| "Fn"))
            .field("timer_listener", &self.timer_listener.as_ref().map(|_| "Fn"))
            .field("data_dir", &self.data_dir)
            .field("durability", &self.durability)
            .field("durability_set", &self.durability_set)
            .field("recovery", &self.recovery)
            .field("sync_scope", &self.sync_scope)
            .field("segment_size_bytes", &self.segment_size_bytes)
            .field("touch_persist_fraction", &self.touch_persist_fraction)
            .field("compaction_threshold", &self.compaction_threshold)
            .field("fail_thread_spawn", &self.fail_thread_spawn)
            .field("fail_recovery_threads", &self.fail_recovery_threads)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_system_scope_needs_linux_5_17() {
        let ok = |release: &str| check_file_system_scope(true, Durability::Always, release).is_ok();
        assert!(ok("5.17.0"));
        assert!(ok("6.8.0-45-generic"));
        assert!(!ok("5.15.0-91-generic"));
        assert!(!ok("5.8.0"));
        assert!(ok("6.18.44-fc-v1272"));
        assert!(ok("10.0"));
        assert!(!ok("5.7.19"));
        assert!(!ok("4.19.0-26-amd64"));
        assert!(!ok("3.10"));
        assert!(!ok(""));
        assert!(!ok("linux"));
        let err = check_file_system_scope(true, Durability::Always, "5.4.0").unwrap_err();
        assert!(err.to_string().contains("Linux 5.17"), "{err}");
        let interval = Durability::Interval(Duration::from_secs(1));
        assert!(check_file_system_scope(true, interval, "6.1.0").is_ok());
        assert!(check_file_system_scope(true, Durability::Never, "6.1.0").is_err());
        assert!(check_file_system_scope(false, Durability::Always, "6.1.0").is_err());
    }
}
