//! Every bound the Redis backend enforces or relies on, and every default,
//! in one place, with the reason for it. The `const` assertions at the
//! bottom tie related values together. The engine's own bounds (metadata
//! size, timeouts, page size) come from `session_engine::limits`.

use std::time::Duration;

// ---------------------------------------------------------------------------
// The protocol and the stored form
// ---------------------------------------------------------------------------

/// Hash slots in a Redis Cluster (fixed by the protocol: CRC16 mod 16384).
pub const CLUSTER_SLOTS: u32 = 16_384;

/// Longest key prefix accepted (`RedisConfig::key_prefix`). Every command
/// carries the key, so a long prefix costs bandwidth and memory per session.
pub const KEY_PREFIX_BYTES_MAX: usize = 64;

/// A new session's first version is drawn below this (see
/// `scripts::INSERT`): the scripts do arithmetic on versions in Lua 5.1,
/// whose numbers are doubles, exact only below 2^53; one below 2^52
/// leaves room for 2^52 updates.
pub const VERSION_FIRST_MAX: u64 = 1 << 52;

// ---------------------------------------------------------------------------
// Time budgets (settings' defaults and ranges)
// ---------------------------------------------------------------------------

/// Default for `RedisConfig::request_timeout`: the most one operation may
/// take, retries included. A round trip on a LAN is well under a
/// millisecond and a failover takes seconds, so 1 s separates "slow" from
/// "not answering".
pub const REQUEST_TIMEOUT_DEFAULT: Duration = Duration::from_secs(1);

/// Bounds on `RedisConfig::request_timeout`: below 10 ms a loaded server's
/// ordinary pauses would fail requests; above a minute a caller waits
/// longer than any failover takes.
pub const REQUEST_TIMEOUT_MIN: Duration = Duration::from_millis(10);
/// See [`REQUEST_TIMEOUT_MIN`].
pub const REQUEST_TIMEOUT_MAX: Duration = Duration::from_secs(60);

/// Default for `RedisConfig::connect_timeout`: one TCP connect + handshake.
pub const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(1);

/// Default for `RedisConfig::default_timeout`, the inactivity timeout of
/// `create_default`: the seed's default session lifetime.
pub const SESSION_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30 * 60);

/// The session timeout of the "cluster" preset
/// (`RedisConfig::multi_node_cluster`), as the seed's multi-node preset.
pub const PRESET_SESSION_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// How long a write of the "cluster" preset waits for its replica
/// (`WAIT 1 100`): a replica on the same LAN answers in well under a
/// millisecond, so this only runs out when the replica is gone or
/// stalled, and then bounds what each write there costs.
pub const PRESET_WAIT_TIMEOUT: Duration = Duration::from_millis(100);

/// Replicas a `WAIT` may ask for: more than any sane cluster has per master.
pub const WAIT_REPLICAS_MAX: u32 = 16;

// ---------------------------------------------------------------------------
// Resends
// ---------------------------------------------------------------------------

/// First pause between two attempts of one operation; doubled per attempt.
pub const RETRY_BACKOFF_MIN: Duration = Duration::from_millis(5);
/// Longest pause between two attempts of one operation.
pub const RETRY_BACKOFF_MAX: Duration = Duration::from_millis(100);

/// Resends the cluster client makes on its own: none. It would resend a
/// request after a dropped connection too, where the first try may have
/// been applied, without the store hearing of it: an `update` would then
/// take its own commit for a conflict and apply its closure twice, and a
/// `delete` would report `NotFound` for its own delete. Every resend goes
/// through the store's own loop (`request.rs`), which tracks that doubt.
pub const CLUSTER_CLIENT_RETRIES: u32 = 0;

/// Connection attempts one reconnection of the single-server client makes
/// (pauses doubling from [`RETRY_BACKOFF_MIN`] to [`RETRY_BACKOFF_MAX`]:
/// about a quarter second in all) before it reports the server down; the
/// store's own resends then carry on within the operation's budget, and
/// the next request starts a new reconnection.
pub const STANDALONE_RECONNECT_TRIES: usize = 6;

/// Ids a `create` draws before it reports the random source as broken: a
/// collision of 128 random bits is a 2^-128 event per live session, so a
/// second collision in a row already says the ids are not random.
pub const CREATE_TRIES_MAX: usize = 4;

/// Ids a `rotate` in a cluster draws to find one in its session's slot
/// before it reports the random source as broken: each draw is accepted
/// with probability 1/4 (see `keys::random_id_in_slot`), so 256 rejected in
/// a row happen with probability (3/4)^256, below 10^-31, to a random
/// source. A draw is one random id and one CRC16 (`results/redis/rotate.md`
/// measures it), so this bounds the work at 256 of them.
pub const SLOT_ID_DRAWS_MAX: usize = 256;

/// Attempts one `update` makes to commit before it gives up under contention
/// (each lost race costs one round trip and hands back the newer value, so
/// some writer always wins; this bounds one caller's work; its time is
/// bounded by the request timeout, which ends the retries too).
pub const UPDATE_TRIES_MAX: u32 = 256;
/// Lost races after which `update` stops retrying at once on the value the
/// commit script hands back, and instead pauses (randomly, growing) and reads
/// afresh: two eager retries settle light contention in one round trip each.
pub const UPDATE_EAGER_TRIES: u32 = 2;
/// Longest random pause after the first lost `update` race past the eager
/// ones; it doubles per further lost race. About one round trip on a LAN:
/// enough to let the writer that won commit before this one reads again.
pub const UPDATE_BACKOFF_MIN: Duration = Duration::from_micros(100);
/// Longest random pause after a lost `update` race. The doubling up to it
/// spreads 64+ writers of one session over enough time that each finds a
/// clear window; the request timeout bounds the sum.
pub const UPDATE_BACKOFF_MAX: Duration = Duration::from_millis(50);

// ---------------------------------------------------------------------------
// Routes and the stuck-client detector
// ---------------------------------------------------------------------------

/// Default for `RedisConfig::stuck_after`: how long every request may fail
/// while the servers still answer a fresh client before the client is rebuilt.
/// Longer than a request timeout (so one slow request is not "stuck"), short
/// enough that recovery stays within the cluster node timeout plus 3 s.
pub const STUCK_AFTER_DEFAULT: Duration = Duration::from_secs(2);

/// Shortest `stuck_after`: rebuilding faster than this would churn
/// connections during an ordinary failover.
pub const STUCK_AFTER_MIN: Duration = Duration::from_millis(100);

/// How long a connection to a server stays idle before the kernel sends it
/// TCP keepalive probes (`RedisConfig::tcp_keepalive`). Below the shortest
/// idle limits of common middleboxes (60 s for some cloud load balancers;
/// NAT gateways and firewalls allow minutes), so the probes keep a quiet
/// connection's state alive there, and a flow dropped silently anyway is
/// found dead by the kernel, not by the next request.
pub const TCP_KEEPALIVE_DEFAULT: Duration = Duration::from_secs(30);

/// Unanswered keepalive probes before the kernel drops the connection; they
/// go every third of the idle time (at least 1 s), so a dead flow is found
/// about twice the idle time after its last traffic.
pub const TCP_KEEPALIVE_PROBES: u32 = 3;

/// Shortest and longest idle times before the first probe: the kernel
/// counts them in whole seconds, up to 32,767 (Linux's `TCP_KEEPIDLE`).
pub const TCP_KEEPALIVE_MIN: Duration = Duration::from_secs(1);
/// See [`TCP_KEEPALIVE_MIN`].
pub const TCP_KEEPALIVE_MAX: Duration = Duration::from_secs(32_767);

/// Least time between two probes with a fresh client by the stuck-client
/// detector: a deployment that is really down then costs one connection
/// attempt per interval, not one per failing request.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(250);

/// Least time between two builds of the direct (per-master) routes of a
/// cluster store while some slots have no working route: bounds the work
/// while a failover settles (one `CLUSTER SLOTS` and at most one connection
/// per changed master each time) and adds at most this much to the time
/// until the promoted replica is used.
pub const DIRECT_REBUILD_INTERVAL: Duration = Duration::from_millis(200);

/// Nodes an `ASK` redirect named that the store keeps a connection of its
/// own to (the latest; an older one is closed when a newer one is made):
/// a resharding moves slots to a few nodes at a time.
pub const ASKED_NODES_MAX: usize = 16;

/// Nodes a client rebuild may connect through, beside the seeds: the
/// latest topology's first, then those seen before (under node or address
/// churn the list would otherwise only grow). Each is a host and a port.
pub const KNOWN_NODES_MAX: usize = 64;

// ---------------------------------------------------------------------------
// Batches: SCAN, list pages, get_many
// ---------------------------------------------------------------------------

/// Keys a `SCAN` call is asked to visit (its `COUNT`) for `len` and for the
/// bulk of a `list` page, and sessions one pipeline reads (a `list` page's
/// fetch). Redis answers in about
/// 1 µs per key; 1000 keys per call keep each call well under a
/// millisecond of server time, so a batch does not hold up other clients,
/// and bound a pipeline's reply at 1000 sessions.
pub const SCAN_COUNT_MAX: usize = 1_000;

/// Keys one pipeline of `get_many` reads (ids on one master beyond this go
/// in further pipelines, sent at the same time): bounds one reply at 1000
/// sessions, about as much server time as one [`SCAN_COUNT_MAX`] batch, so
/// that one batch does not hold up the master's other clients for long.
pub const PIPELINE_KEYS_MAX: usize = 1_000;

/// Ids one batch of a `get_many` call reads at most, within one request
/// timeout: as many as the largest `list` page
/// (`session_engine::limits::LIST_PAGE_MAX`, the most sessions any other
/// call returns at once). At about 1 µs of server time per key 10,000 ids
/// are about 10 ms of one master's time (in pipelines of
/// [`PIPELINE_KEYS_MAX`], at most [`PIPELINES_IN_FLIGHT_MAX`] at a time per
/// master). A call with more ids reads them in batches of this size, one
/// after another, each with a request timeout of its own: it answers every
/// id, as the embedded engine (which has no bound) does.
pub const GET_MANY_IDS_MAX: usize = session_engine::limits::LIST_PAGE_MAX;

/// Pipelines of one batch (`get_many`, a fan-out page's checks) in flight
/// at once on one route (one master's connection, shared with every other
/// request of the store): two keep the route busy (one is answered while
/// the next is sent) without queuing a whole batch's requests, and
/// [`PIPELINE_KEYS_MAX`] replies each, ahead of other callers' requests.
pub const PIPELINES_IN_FLIGHT_MAX: usize = 2;

/// `SCAN` calls one `list` page may make per master before it returns what
/// it has (a sparse table can return empty batches): bounds the work of
/// one page at about 1000 × 1000 keys. Also the rounds (a `ZRANGEBYLEX` and
/// its checks) one fan-out page (`subscribers`) makes through stale index
/// entries before it returns what it has, with a cursor to resume from.
pub const SCAN_CALLS_MAX: usize = 1_000;

/// One new subscription in this many (per store) also tidies its topic's
/// index: it checks [`INDEX_TIDY_ENTRIES`] entries from a random point and
/// removes those whose subscription is gone. Each new subscription adds
/// one entry, which goes stale when its session does; checking two entries
/// per new subscription on average keeps the stale ones under about half
/// the index (stale entries are found in proportion to their share, and
/// removed twice as fast as they come once they are half), so an index
/// nobody fans out, without a TTL (sessions with no lifetime cap), holds
/// about its live subscribers rather than every session that ever
/// subscribed. The call that tidies pays three more round trips: the
/// index read on the topic's master, the checks on the masters of the
/// entries' sessions, the removal; at most [`INDEX_TIDY_BUDGET`] of them.
pub const INDEX_TIDY_EVERY: u64 = 8;

/// Topic indexes a sweep (`RedisStore::tidy_topic_indexes`) tidies at
/// once. Each costs about three round trips in turn (its read, its
/// entries' checks, the removal), so one at a time would leave the
/// connections idle between them; 16 keep them busy while adding at most
/// 16 small requests to other callers' queues.
pub const INDEX_SWEEP_IN_FLIGHT: usize = 16;

/// The most time a tidying (see [`INDEX_TIDY_EVERY`]) adds to the
/// subscribe that runs it: past this, it stops where it is (a later one
/// goes on). Loopback round trips are a fraction of a millisecond; a slow
/// topic master does not hold a subscribe that already succeeded for its
/// whole request timeout.
pub const INDEX_TIDY_BUDGET: Duration = Duration::from_millis(50);

/// Entries one tidying of a topic's index checks (see [`INDEX_TIDY_EVERY`]).
pub const INDEX_TIDY_ENTRIES: usize = 16;

/// `SCAN` calls `len` (and the sweep of topic indexes) may make per master
/// before it reports the table too large to go through: 100 million keys
/// at [`SCAN_COUNT_MAX`] a call; it also ends a master that keeps failing
/// over (each new process starts that master's count again).
pub const COUNT_SCAN_CALLS_MAX: usize = 100_000;

/// A `list` page stops scanning once 1/this of its budget is gone, and
/// returns what it has with a cursor: the rest of the budget is left for
/// reading the sessions found.
pub const LIST_SCAN_BUDGET_DIVISOR: u32 = 2;

/// Bits of a list position that hold the node's `SCAN` cursor (the high bits;
/// the low 32 bits hold the resume point inside one hash bucket). A Redis 7
/// cursor is below the hash table size, so 32 bits cover 2^32 buckets, more
/// keys than one node holds in any real deployment.
pub const SCAN_CURSOR_BITS: u32 = 32;

/// Bits of a list cursor's `part` above the master's first slot (which
/// takes the low 14) that name the master's process: the first hex digits
/// of its `run_id`. A `SCAN` cursor means nothing to another process (its
/// hash seed orders the buckets otherwise: a promoted replica, a restarted
/// master), so a page resuming on a master whose mark differs starts that
/// master again. Two processes share a mark once in 2^17; the top bit stays
/// clear, so not every `part` is a cursor of this store.
pub const LIST_NODE_MARK_BITS: u32 = 17;

// ---------------------------------------------------------------------------
// Per-session state
// ---------------------------------------------------------------------------

/// How long a topic's index is kept past the end of the latest lifetime cap
/// among the sessions that subscribed to it (see `state.rs`). The index's
/// TTL is computed from the session's remaining life on the session's
/// master and armed on the topic's master, later: in real time the index
/// outlives the session already. But each key expires by its own master's
/// wall clock (a replica promoted later, by its own): the margin absorbs
/// clocks that disagree by up to a minute (NTP keeps them within
/// milliseconds). It costs a minute of an index's memory after its last
/// session ends.
pub const TOPIC_INDEX_TTL_MARGIN: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// Longest part of an unexpected reply quoted in a protocol error: enough
/// to recognise it, without copying a megabyte of someone else's value into
/// an error message.
pub const PROTOCOL_REPLY_SHOWN_BYTES: usize = 200;

const _: () = assert!(REQUEST_TIMEOUT_MIN.as_millis() < REQUEST_TIMEOUT_DEFAULT.as_millis());
const _: () = assert!(REQUEST_TIMEOUT_DEFAULT.as_millis() <= REQUEST_TIMEOUT_MAX.as_millis());
const _: () = assert!(CONNECT_TIMEOUT_DEFAULT.as_millis() <= REQUEST_TIMEOUT_MAX.as_millis());
const _: () = assert!(PRESET_WAIT_TIMEOUT.as_millis() < REQUEST_TIMEOUT_DEFAULT.as_millis());
const _: () = assert!(STUCK_AFTER_MIN.as_millis() <= STUCK_AFTER_DEFAULT.as_millis());
const _: () = assert!(STUCK_AFTER_DEFAULT.as_millis() > REQUEST_TIMEOUT_DEFAULT.as_millis());
const _: () = assert!(RETRY_BACKOFF_MIN.as_millis() <= RETRY_BACKOFF_MAX.as_millis());
const _: () = assert!(UPDATE_BACKOFF_MIN.as_micros() <= UPDATE_BACKOFF_MAX.as_micros());
const _: () = assert!(SCAN_CURSOR_BITS <= 48);
const _: () = assert!(CLUSTER_SLOTS.is_power_of_two() && CLUSTER_SLOTS <= 1 << 16);
const _: () = assert!(CLUSTER_SLOTS.trailing_zeros() + LIST_NODE_MARK_BITS <= 32);
const _: () = assert!(VERSION_FIRST_MAX < 1 << 53);
const _: () = assert!(UPDATE_TRIES_MAX > UPDATE_EAGER_TRIES && SCAN_CALLS_MAX > 0 && SCAN_COUNT_MAX > 0);
const _: () = assert!(CREATE_TRIES_MAX > 1 && LIST_SCAN_BUDGET_DIVISOR >= 2);
const _: () = assert!(SLOT_ID_DRAWS_MAX >= 64);
const _: () = assert!(PIPELINES_IN_FLIGHT_MAX >= 1 && GET_MANY_IDS_MAX >= PIPELINE_KEYS_MAX);
