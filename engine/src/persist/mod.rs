//! Persistence: per-shard append-only logs in a data directory, recovered at
//! open. The byte layout is in `engine/FORMAT.md` and `format.rs` (format 1,
//! read for the upgrade, in `format_v1.rs`); opening and the layout decisions
//! in `open.rs`; the directory, its lock and its MANIFEST in `directory.rs`;
//! replay and its damage rules in `recovery.rs`; the write path in
//! `appender.rs`, one segment file in `segment.rs`; group commit in
//! `commit.rs`; base segments in `base.rs`; compaction in `compaction.rs`;
//! the newest time a run reached in `time_mark.rs`.

mod appender;
mod base;
mod commit;
mod compaction;
mod directory;
pub mod format;
mod format_v1;
mod open;
mod recovery;
mod segment;
mod time_mark;

use std::fs::File;
use std::sync::Arc;

use ahash::{AHashMap, RandomState};

pub(crate) use self::appender::ShardLog;
pub(crate) use self::commit::{
    flush_all, flush_all_waiting, panic_message, AsyncWaiter, FlushRequests, GroupCommit,
};
pub use self::compaction::CompactionStep;
pub(crate) use self::compaction::{compact, wants_compaction};
pub(crate) use self::open::{open, LayoutSwitch};
pub(crate) use self::recovery::Recovered;
pub use self::recovery::{Damage, RecoveryReport, Truncation};
pub(crate) use self::time_mark::TimeMark;
use crate::id::SessionId;

/// The ahash seeds a manifest's key stands for.
/// The smallest segment that holds the largest record at
/// `metadata_bytes_max` (with the segment's headers and its closing `SEAL`).
pub(crate) fn smallest_segment(metadata_bytes_max: usize) -> usize {
    format::SEGMENT_HEADER_LEN + format::put_len(metadata_bytes_max) + format::SEAL_RECORD_LEN
}

pub(crate) fn hasher_from_key(key: [u64; 4]) -> RandomState {
    RandomState::with_seeds(key[0], key[1], key[2], key[3])
}

/// An open data directory.
pub(crate) struct Persistence {
    pub(crate) logs: Vec<Arc<ShardLog>>,
    /// Each log's group commit.
    pub(crate) commits: Vec<Arc<GroupCommit>>,
    pub(crate) report: RecoveryReport,
    pub(crate) hash_key: [u64; 4],
    /// The newest engine time reached, kept for the next run.
    pub(crate) time_mark: TimeMark,
    /// The layout this open rewrote, until `Engine::open` switches to it.
    pub(crate) switch: parking_lot::Mutex<Option<LayoutSwitch>>,
    // Held for the engine's lifetime; the kernel drops the flock with it.
    _lock: File,
}

/// What `open` hands the engine: the directory, and the sessions to load
/// into each shard.
pub(crate) struct Opened {
    pub(crate) persistence: Persistence,
    pub(crate) sessions: Vec<AHashMap<SessionId, Recovered>>,
    /// The newest time the log or the time mark holds: engine time must
    /// not run behind it (recovery judged expiry at no earlier time).
    pub(crate) newest_ms: u64,
    /// The newest time a record of the log holds (0: none): every session
    /// the log removed was created no later (see `Shard::raise_created_floor`).
    pub(crate) logged_newest_ms: u64,
}
