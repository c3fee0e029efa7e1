//! Persistence: per-shard append-only logs in a data directory, recovered at
//! open. The byte layout is in `engine/FORMAT.md` and `format.rs`; opening
//! and the layout decisions in `open.rs`; the directory, its lock and its
//! MANIFEST in `directory.rs`; replay and its damage rules in `recovery.rs`;
//! the write path and group commit in `log.rs`; base segments in `base.rs`;
//! compaction in `compaction.rs`.

mod base;
mod compaction;
mod directory;
pub mod format;
mod format_v1;
mod log;
mod open;
mod recovery;
mod segment;

use std::fs::File;
use std::sync::Arc;

use ahash::{AHashMap, RandomState};

pub use self::compaction::CompactionStep;
pub(crate) use self::compaction::{compact, wants_compaction};
pub(crate) use self::log::{AsyncWaiter, FlushRequests, ShardLog};
pub(crate) use self::open::open;
pub(crate) use self::recovery::Recovered;
pub use self::recovery::{Damage, RecoveryReport, Truncation};
use crate::id::SessionId;

/// The ahash seeds a manifest's key stands for.
pub(crate) fn hasher_from_key(key: [u64; 4]) -> RandomState {
    RandomState::with_seeds(key[0], key[1], key[2], key[3])
}

/// An open data directory.
pub(crate) struct Persistence {
    pub(crate) logs: Vec<Arc<ShardLog>>,
    pub(crate) report: RecoveryReport,
    pub(crate) hash_key: [u64; 4],
    // Held for the engine's lifetime; the kernel drops the flock with it.
    _lock: File,
}

/// What `open` hands the engine: the directory, and the sessions to load
/// into each shard.
pub(crate) struct Opened {
    pub(crate) persistence: Persistence,
    pub(crate) sessions: Vec<AHashMap<SessionId, Recovered>>,
}
