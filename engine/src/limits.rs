//! Every bound the engine enforces, in one place, with the reason for it and
//! what it costs. Config values are checked against the hard limits here when
//! an engine opens; the `const` assertions at the bottom tie related limits
//! together so that changing one cannot silently break another.

/// Default cap on live sessions (`Config::sessions_max`). One million sessions
/// at 200 bytes of metadata hold roughly 300 MB; a server that needs more says
/// so explicitly.
pub const SESSIONS_MAX_DEFAULT: usize = 1 << 20;

/// Hard cap on `Config::sessions_max` (2^30, about a billion). The timer wheel
/// links entries by their bucket index in the shard's table, as a `u32` whose
/// top bit marks list heads; a table holding 2^30 entries has at most 2^31
/// buckets, so every index fits even if all sessions land in one shard.
pub const SESSIONS_MAX_LIMIT: usize = 1 << 30;

/// Default cap on one session's metadata (`Config::metadata_bytes_max`).
/// Session state is meant to be small (the seed reference budgets about 1 KB a
/// session); 64 KiB leaves room for generous state while keeping one `update`
/// copy cheap.
pub const METADATA_BYTES_MAX_DEFAULT: usize = 64 * 1024;

/// Hard cap on `Config::metadata_bytes_max`: the log format frames a record
/// with a `u32` length, and a 16 MiB value per session is already far beyond
/// what a session store should carry.
pub const METADATA_BYTES_MAX_LIMIT: usize = 16 * 1024 * 1024;

/// The end of engine time, in ms since the Unix epoch (2^62 - 1: about 146
/// million years; the access word keeps its top two bits for marks). A [`ManualClock`](crate::ManualClock) stops there, so
/// that deadlines (a time plus a timeout) and the timer wheel's arithmetic
/// never reach `u64::MAX`; the system clock never gets near it.
pub const TIME_MS_MAX: u64 = (1 << 62) - 1;

/// Longest finite inactivity timeout, in milliseconds: 400 days, so that a
/// year-long "remember me" fits. A session keeps its timeout in 32 bits:
/// milliseconds below [`TIMEOUT_EXACT_MS_MAX`], whole seconds (rounded up)
/// above it.
pub const TIMEOUT_MS_MAX: u64 = 400 * 24 * 3600 * 1000;

/// Longest timeout kept to the millisecond (2^31 - 1 ms, about 24.9 days);
/// longer ones are kept in whole seconds, rounded up.
pub const TIMEOUT_EXACT_MS_MAX: u64 = (1 << 31) - 1;

/// Upper bound on the shard count. Each shard costs one cache-padded lock, a
/// hash index, a slab chunk list and a timer wheel (about 3.2 KiB of wheel
/// heads), so thousands of shards only waste memory on a small machine.
pub const SHARDS_MAX: usize = 1024;

/// Shards per available core when the config leaves the count to the engine
/// (rounded up to a power of two). A few shards per core keep the chance that
/// two threads want the same lock low without spreading the data thin.
pub const SHARDS_PER_CORE_DEFAULT: usize = 4;

/// Bits of a tick that select a slot within one wheel level.
pub const WHEEL_SLOT_BITS: u32 = 6;
/// Slots per wheel level (64: one `u64` occupancy bitmap per level).
pub const WHEEL_SLOTS: usize = 1 << WHEEL_SLOT_BITS;
/// Wheel levels. Six levels of 64 slots span 2^36 ticks, which at the wheel's
/// 1 ms tick is about 2.2 years: every finite timeout (at most
/// [`TIMEOUT_MS_MAX`], 400 days) lands inside the wheel with room for a long
/// sweeper lag.
pub const WHEEL_LEVELS: usize = 6;

/// Most sessions one sweep step handles while holding a shard lock: expires,
/// or re-arms in a lower wheel level (a slot cascading) or at a deadline that
/// moved. The sweeper releases the lock between batches so that a mass
/// expiry or cascade (100K sessions created in the same millisecond) never
/// stalls the shard's callers for longer than one batch.
pub const SWEEP_BATCH_MAX: usize = 1024;

/// Optimistic attempts an `update` makes (closure outside the lock, commit if
/// nobody changed the session meanwhile) before it runs the closure while
/// holding the shard lock, which guarantees progress under heavy contention.
pub const UPDATE_OPTIMISTIC_TRIES: usize = 8;

/// Largest page `list` returns (one `Vec` of snapshots the caller holds).
pub const LIST_PAGE_MAX: usize = 10_000;

/// Most sessions a listing copies per epoch pin: memory the writers free
/// meanwhile waits for one batch to end, never for a whole page (a listing
/// takes no lock).
pub const LIST_LOCK_BATCH: usize = 1024;

/// Default interval of the background sweeper (the wheel itself always works
/// in 1 ms ticks; this is how often the thread advances it).
pub const SWEEP_INTERVAL_MS_DEFAULT: u64 = 100;

/// How often the sweeper thread looks after the logs (prefaulting ahead of
/// the writer, preparing the next segment, appending queued touches) when no
/// shorter sweep or flush interval wakes it: at 16 MiB segments and the 2
/// MiB prefault window, a writer outruns it only above 40 MB/s of records.
pub const LOG_CHECK_INTERVAL_MS: u64 = 50;

/// How often, at most, the sweeper thread writes the data directory's time
/// mark (`CLOCK`: the newest engine time reached, so a later run whose
/// wall clock stepped back does not bring back what this one saw expire),
/// and syncs it unless the durability is `Never` (with `Interval(d)` longer
/// than this, every `d`: the mark is not synced more often than the logs). A crash loses at most
/// about this much of the time the run reached: a session that expired
/// within it may be live again after a restart with a clock stepped back.
pub const TIME_MARK_INTERVAL_MS: u64 = 1_000;

/// How long the sweeper waits after a pass that panicked (a bug) before the
/// next: a pass that panics every time is not retried every tick.
pub const CHORE_PANIC_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// How often the compactor checks whether a shard's log is worth rewriting.
pub const COMPACTION_CHECK_INTERVAL_MS: u64 = 500;

/// After a shard's compaction failed, the next try waits this many checks,
/// doubling per failure in a row up to [`COMPACTION_BACKOFF_CHECKS_MAX`]:
/// each try seals the log into a new preallocated segment before it
/// writes the base, so on a disk too full to hold the base, retrying every
/// check turned the space left into near-empty segments.
pub const COMPACTION_BACKOFF_CHECKS_MIN: u32 = 2;

/// Restarts of one compaction's listing before the compaction gives up (a
/// failed compaction, retried after the backoff above). Each growth of the
/// shard's table restarts the listing at slot 0 (a rebuild at the same
/// size resumes it where it stood), and the whole shard goes into the base
/// again; a growth comes after the shard's sessions doubled, so a listing
/// that loses this many races is losing them to a load that would keep it
/// from ending, its base file growing by a shard each time.
pub const COMPACTION_LIST_RESTARTS_MAX: usize = 3;

/// The longest wait between failed compactions of one shard, in checks
/// (128 × 500 ms: about a minute).
pub const COMPACTION_BACKOFF_CHECKS_MAX: u32 = 128;

/// Bounds of `Config::sweep_interval`: a sweep more often than every
/// millisecond (the wheel's tick) does nothing more; less often than a
/// minute leaves expired sessions' memory held too long.
pub const SWEEP_INTERVAL_MS_MIN: u64 = 1;
/// See [`SWEEP_INTERVAL_MS_MIN`].
pub const SWEEP_INTERVAL_MS_MAX: u64 = 60_000;

/// Bounds of `Durability::Interval`: a flush more often than every
/// millisecond is `Always` without the acknowledgement; less often than an
/// hour is not a durability promise.
pub const FLUSH_INTERVAL_MS_MIN: u64 = 1;
/// See [`FLUSH_INTERVAL_MS_MIN`].
pub const FLUSH_INTERVAL_MS_MAX: u64 = 3_600_000;

/// The largest segment sequence a shard's log uses: sequences count from 1,
/// one per segment, so 2^62 is out of reach; a file named `<n>.seg` above it
/// was not written by this engine and is left alone (numbering the next
/// segment after it would overflow).
pub const SEGMENT_SEQUENCE_MAX: u64 = 1 << 62;

/// Default size of a log segment. Sixteen MiB hold about 60K 200-byte
/// sessions; each shard preallocates one, so 8 shards start at 128 MiB of disk.
pub const SEGMENT_SIZE_BYTES_DEFAULT: usize = 16 * 1024 * 1024;

/// Smallest segment accepted (tests use small ones to exercise rollover).
pub const SEGMENT_SIZE_BYTES_MIN: usize = 64 * 1024;

/// Largest segment accepted: segments are mapped whole, and one gigabyte per
/// shard is already more address space than a log needs.
pub const SEGMENT_SIZE_BYTES_MAX: usize = 1 << 30;

/// How far ahead of its writer a segment's pages are faulted in, writable.
/// The kernel zeroes each new page-cache page, so populating a whole
/// segment up front made every open and every new segment pay for space
/// not yet needed (8 shards: 128 MiB at each open; `results/README.md`,
/// "Persistence", has the timings). The background thread keeps this window populated every
/// 50 ms; a writer faster than that takes the remaining faults itself.
pub const PREFAULT_AHEAD_BYTES: usize = 2 << 20;

/// The fewest bytes of whole pages behind a log's writer that are dropped
/// from its mapping at once, before they are written back. Writing back a
/// mapped page costs a TLB shootdown to every core this process runs on,
/// per page; dropping a range costs one for the range. Below this, as in
/// `Always` mode's small sync rounds, the drop would cost as much as it
/// saves.
pub const RELEASE_MIN_BYTES: usize = 64 << 10;

/// Truncations and damaged stretches a [`RecoveryReport`](crate::RecoveryReport)
/// lists one by one (its counts are complete): a log damaged all over would
/// otherwise make a report as large as the log.
pub const RECOVERY_REPORT_ITEMS_MAX: usize = 1024;

/// `TOUCH` records a shard's log queues for its next append or the
/// background thread (every 50 ms at most): readers never wait for the log,
/// so they hand their touches over. A read queues one only when it slides a
/// session into a new touch period (at most `touch_persist_fraction` of its
/// timeout, at least half that), so
/// 4,096 per shard per tick is room for 80K periods crossed a second; a full
/// queue drops the touch (the lag then lasts one period more). Costs 128 KiB
/// per shard with persistence (32-byte slots).
pub const TOUCH_QUEUE_MAX: usize = 4096;

/// Session ids drawn from the OS random source per system call. 256 ids are
/// 4 KiB: one `getrandom` call serves 256 creates.
pub const ID_BATCH: usize = 256;

/// Longest topic (`SessionState::subscribe`), in bytes of UTF-8: an MCP
/// resource URI fits with room to spare, and a topic is held twice in memory
/// (the session's set and the reverse index shares one allocation) and once
/// per `SUBSCRIBE` record in the log, so a 1 KiB cap keeps a session's
/// subscriptions at most `TOPICS_PER_SESSION_MAX` KiB.
pub const TOPIC_LEN_MAX: usize = 1024;

/// Most topics one session subscribes to. A subscribe searches the session's
/// topics linearly under the shard's writer mutex (a few hundred short
/// comparisons at most), and a removed session's topics leave the reverse
/// index under that mutex too, so the bound also bounds how long one expiry
/// or delete holds the shard. An MCP client subscribes to the resources it
/// shows, tens at a time; a server needing more wants a coarser topic.
pub const TOPICS_PER_SESSION_MAX: usize = 256;

/// Most timers (`Engine::arm_timer`) one session holds at once. A timer is a
/// pending request of the session (the seed's 5 s cleanup); tokens are found
/// by a linear search of the session's timers, and a removed session's timers
/// are cancelled under the shard's writer mutex, so the bound keeps both
/// short. Concurrent requests per MCP session are far fewer.
pub const TIMERS_PER_SESSION_MAX: usize = 256;

/// Topics without subscribers a shard's topic index keeps for reuse, at
/// most: a topic whose only subscriber comes and goes then reuses
/// its entry instead of allocating and freeing it every time. Past this, an
/// emptied topic's entry goes at once (no scan of the index under the
/// shard's lock).
pub const TOPICS_EMPTY_KEPT_MAX: usize = 8;

/// Room (subscriber ids) the topics a shard keeps without subscribers hold
/// for their return, at most, in all: about 280 KiB a shard. A set that
/// would take the total past this shrinks to a few ids when it empties.
/// Below it, a topic whose subscribers all leave and come back (a
/// resource's watchers reconnecting) finds its set the size it was, instead
/// of growing it again by doublings, each a rehash of every id.
pub const TOPICS_EMPTY_ROOM_MAX: usize = 16_384;

/// Flusher threads of an `Always` engine, at most (one per shard log up to
/// this many; past it, thread `t` syncs the logs `t`, `t + n`, ...). The
/// syncs async writers wait for run on these threads, and those of
/// different logs at the same time: the kernel merges device flushes that
/// arrive while one is under way, so concurrent syncs of 8 logs cost about
/// what one costs, where one thread syncing them in a row paid 8 flushes a
/// round. More threads than this add wake-ups, not merged flushes.
pub const FLUSHER_THREADS_MAX: usize = 8;

/// Longest an `Always` engine's flusher holds a round back to gather the
/// async writers the last round woke (see `FlushRequests::gather`): it
/// waits for as many to be waiting again as it woke, at most the last
/// round's own length and never longer than this. Without it, writers
/// woken by a round are still running their next write when the flusher
/// starts the next round, which covers only the few that came in
/// meanwhile: the writers alternate between a full round and a near-empty
/// one, and wait two syncs a write. A millisecond bounds what a writer
/// left alone after a burst (the others did not come back) can wait, on
/// a disk whose sync takes that long already.
pub const FLUSH_GATHER_MAX_US: u64 = 1_000;

/// Timers one sweep step fires while holding a shard's writer mutex (as
/// [`SWEEP_BATCH_MAX`] for sessions); the listener is called after the lock
/// is released.
pub const TIMER_BATCH_MAX: usize = 1024;

const _: () = assert!(SESSIONS_MAX_DEFAULT <= SESSIONS_MAX_LIMIT);
const _: () = assert!(METADATA_BYTES_MAX_DEFAULT <= METADATA_BYTES_MAX_LIMIT);
const _: () = assert!(METADATA_BYTES_MAX_LIMIT <= u32::MAX as usize);
// Timeouts in seconds fit below the flag bit, with `u32::MAX` left for never.
const _: () = assert!(TIMEOUT_MS_MAX.div_ceil(1000) < (1 << 31) - 1);
// Every finite deadline fits in the wheel's span.
const _: () = assert!(TIMEOUT_MS_MAX < 1 << (WHEEL_SLOT_BITS as usize * WHEEL_LEVELS));
const _: () = assert!(SHARDS_MAX.is_power_of_two());
// Wheel list-head markers (levels * slots + 1 pending list) fit below the marker bit.
const _: () = assert!(WHEEL_LEVELS * WHEEL_SLOTS < 1 << 16);
const _: () = assert!(SEGMENT_SIZE_BYTES_MIN <= SEGMENT_SIZE_BYTES_DEFAULT);
const _: () = assert!(SEGMENT_SIZE_BYTES_DEFAULT <= SEGMENT_SIZE_BYTES_MAX);
const _: () =
    assert!(SWEEP_BATCH_MAX > 0 && LIST_PAGE_MAX > 0 && LIST_LOCK_BATCH > 0 && UPDATE_OPTIMISTIC_TRIES > 0);
const _: () = assert!(TOPIC_LEN_MAX < METADATA_BYTES_MAX_LIMIT && TIMER_BATCH_MAX > 0);
const _: () = assert!(FLUSHER_THREADS_MAX > 0 && FLUSHER_THREADS_MAX <= 64); // one bit each in a round
