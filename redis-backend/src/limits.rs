//! Every bound the Redis backend enforces or relies on, in one place, with
//! the reason for it. The `const` assertions at the bottom tie related values
//! together.

use std::time::Duration;

/// Hash slots in a Redis Cluster (fixed by the protocol: CRC16 mod 16384).
pub const CLUSTER_SLOTS: u32 = 16_384;

/// Longest key prefix accepted (`RedisConfig::key_prefix`). Every command
/// carries the key, so a long prefix costs bandwidth and memory per session.
pub const KEY_PREFIX_BYTES_MAX: usize = 64;

/// Default for `RedisConfig::request_timeout`: the most one operation may
/// take, retries included. Loopback round trips are ~50 µs and a failover
/// window is seconds, so 1 s separates "slow" from "not answering".
pub const REQUEST_TIMEOUT_DEFAULT: Duration = Duration::from_secs(1);

/// Bounds on `RedisConfig::request_timeout`.
pub const REQUEST_TIMEOUT_MIN: Duration = Duration::from_millis(10);
/// See [`REQUEST_TIMEOUT_MIN`].
pub const REQUEST_TIMEOUT_MAX: Duration = Duration::from_secs(60);

/// Default for `RedisConfig::connect_timeout`: one TCP connect + handshake.
pub const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(1);

/// Default for `RedisConfig::stuck_after`: how long every request may fail
/// while the servers still answer a fresh client before the client is rebuilt.
/// Longer than a request timeout (so one slow request is not "stuck"), short
/// enough that recovery stays within the cluster node timeout plus 3 s.
pub const STUCK_AFTER_DEFAULT: Duration = Duration::from_secs(2);

/// Shortest `stuck_after`: rebuilding faster than this would churn
/// connections during an ordinary failover.
pub const STUCK_AFTER_MIN: Duration = Duration::from_millis(100);

/// First pause between two attempts of one operation; doubled per attempt.
pub const RETRY_BACKOFF_MIN: Duration = Duration::from_millis(5);
/// Longest pause between two attempts of one operation.
pub const RETRY_BACKOFF_MAX: Duration = Duration::from_millis(100);

/// Attempts one `update` makes to commit before it gives up under contention
/// (each lost race costs one round trip and hands back the newer value, so
/// some writer always wins; this bounds one caller's work; its time is
/// bounded by the request timeout, which ends the retries too).
pub const UPDATE_TRIES_MAX: u32 = 256;
/// Lost races after which `update` stops retrying at once on the value the
/// commit script hands back, and instead pauses (randomly, growing) and reads
/// afresh: two eager retries settle light contention in one round trip each.
pub const UPDATE_EAGER_TRIES: u32 = 2;
/// Longest random pause after a lost `update` race. The doubling up to it
/// spreads 64+ writers of one session over enough time that each finds a
/// clear window; the request timeout bounds the sum.
pub const UPDATE_BACKOFF_MAX: Duration = Duration::from_millis(50);

/// Keys a `SCAN` call is asked to visit (its `COUNT`) for `len` and for the
/// bulk of a `list` page. Redis answers in about 1 µs per key; 1000 keys per
/// call keeps each call well under a millisecond of server time.
pub const SCAN_COUNT_MAX: usize = 1_000;

/// `SCAN` calls one `list` page or one `len` per node may make before it
/// returns what it has (a sparse table can return empty batches): bounds the
/// work of one call at about 1000 × 1000 keys.
pub const SCAN_CALLS_MAX: usize = 1_000;

/// Bits of a list position that hold the node's `SCAN` cursor (the high bits;
/// the low 32 bits hold the resume point inside one hash bucket). A Redis 7
/// cursor is below the hash table size, so 32 bits cover 2^32 buckets, more
/// keys than one node holds in any real deployment.
pub const SCAN_CURSOR_BITS: u32 = 32;

/// Least time between two builds of the direct (per-master) routes of a
/// cluster store while some slots have no working route: bounds the work
/// while a failover settles (one `CLUSTER SLOTS` and at most one connection
/// per changed master each time) and adds at most this much to the time
/// until the promoted replica is used.
pub const DIRECT_REBUILD_INTERVAL: Duration = Duration::from_millis(200);

/// Nodes a client rebuild may connect through, beside the seeds: the
/// latest topology's first, then those seen before (under node or address
/// churn the list would otherwise only grow). Each is a host and a port.
pub const KNOWN_NODES_MAX: usize = 64;

/// Replicas a `WAIT` may ask for: more than any sane cluster has per master.
pub const WAIT_REPLICAS_MAX: u32 = 16;

const _: () = assert!(REQUEST_TIMEOUT_MIN.as_millis() < REQUEST_TIMEOUT_DEFAULT.as_millis());
const _: () = assert!(REQUEST_TIMEOUT_DEFAULT.as_millis() <= REQUEST_TIMEOUT_MAX.as_millis());
const _: () = assert!(STUCK_AFTER_MIN.as_millis() <= STUCK_AFTER_DEFAULT.as_millis());
const _: () = assert!(RETRY_BACKOFF_MIN.as_millis() <= RETRY_BACKOFF_MAX.as_millis());
const _: () = assert!(SCAN_CURSOR_BITS <= 48);
const _: () = assert!(CLUSTER_SLOTS.is_power_of_two());
const _: () = assert!(UPDATE_TRIES_MAX > UPDATE_EAGER_TRIES && SCAN_CALLS_MAX > 0 && SCAN_COUNT_MAX > 0);
