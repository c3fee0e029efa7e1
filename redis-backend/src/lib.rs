//! The session API of [`session_engine`] on Redis: one server, or a Redis
//! Cluster (Valkey speaks the same protocol). Code written against
//! [`SessionStore`](session_engine::SessionStore) moves from the embedded
//! engine to Redis by configuration.
//!
//! ```no_run
//! # async fn demo() -> Result<(), session_engine::Error> {
//! use session_engine::{SessionStore, Timeout};
//! use session_redis::{RedisConfig, RedisStore};
//!
//! // One server: RedisConfig::standalone("redis://127.0.0.1:6379")
//! let config = RedisConfig::from_url("redis+cluster://10.0.0.1:6379,10.0.0.2:6379")?;
//! let store = RedisStore::connect(config).await?;
//! let id = store.create(b"user_id=123", Timeout::from_secs(1800)).await?;
//! let session = store.get(&id).await?; // slides the deadline
//! store.update(&id, |meta| [meta, b";n=1"].concat()).await?;
//! # Ok(()) }
//! ```
//!
//! # Client: the `redis` crate
//!
//! Built on the [`redis`] crate (redis-rs) with its Tokio, cluster-async and
//! connection-manager features, rather than `fred`: it is the most widely used
//! Rust client, one `Cmd`/`Pipeline`/`Value` API serves a single server
//! (`ConnectionManager`) and a cluster (`ClusterConnection`), both multiplexed
//! and auto-reconnecting, and its cluster connection routes a request by slot
//! or to a chosen node (`route_command`/`route_pipeline`), which `SCAN` per
//! master and `WAIT` beside a write need. `fred` would serve as well; it brings
//! a larger API of its own that this crate would mostly wrap.
//!
//! For a cluster, single-key requests, `SCAN` and `CLUSTER SLOTS` first go
//! straight to the master on the store's own per-master multiplexed
//! connection (a slot table from `CLUSTER SLOTS`), skipping the cluster
//! client's routing task: that task carries every shard's requests and
//! dispatches nothing while it refreshes its slot map, so a failover of one
//! master stalled them all. A failure there (a `MOVED`, a dead connection)
//! marks only that master stale: its requests are resent through the
//! cluster client, which follows redirects, while the table is rebuilt in
//! the background from a healthy master's view; the other masters keep their
//! connections. With [`Replication::Wait`], writes take connections of their
//! own, so that reads never queue behind a blocked `WAIT`.
//!
//! Presets: [`RedisConfig::standalone`], [`RedisConfig::cluster`] (no `WAIT`)
//! and the "cluster" preset [`RedisConfig::multi_node_cluster`] mirroring the
//! seed's multi-node preset (1-hour sessions, `WAIT` for one replica).
//!
//! # Semantics (the same as the embedded engine)
//!
//! A session is one Redis hash at `<prefix>{<id>}` (layout in the source of
//! `scripts.rs`): metadata, created and last-access times (server clock,
//! ms), timeout and a version. The key's Redis TTL is the inactivity deadline.
//!
//! | operation | Redis | round trips | slides? |
//! | --- | --- | --- | --- |
//! | `create`, `insert` | script: `EXISTS`, `HSET`, `PEXPIRE` | 1 | yes |
//! | `put` | script: `HMGET v p`, `HSET` (creation time kept on a replace), `PEXPIRE` or `PERSIST` | 1 | yes |
//! | `get` | script: `HMGET`, `HSET a`, `PEXPIRE` | 1 | yes |
//! | `get_many` | the `get` script per id, pipelined per master; the masters at the same time | 1 per master, concurrently | yes |
//! | `peek` | `HMGET` | 1 | no |
//! | `update(f)` | `HMGET m v`, then a compare-version-and-set script; on a lost race the script returns the newer value and `f` runs again | 2 (+1 per lost race) | yes |
//! | `try_update(f)` | `HMGET m v c a t`, then the same script keeps (slides), or replaces or deletes if the version is still the one `f` saw; a lost race reruns `f` | 2 (+1 per lost race); 1 if `f` declines (2 under `Replication::Wait`) | yes, unless `f` declines |
//! | `rotate` | script on the old and the new key (one slot): the core fields copied (not the per-session state), `DEL` old, `PEXPIRE` | 1 | yes |
//! | `touch` | script: `HSET a`, `PEXPIRE` | 1 | yes |
//! | `set_ttl` | script: `HSET t a`, `PEXPIRE` or `PERSIST` | 1 | yes |
//! | `set_lifetime` | script: `HSET l a`, `PEXPIRE` at the earlier of the deadline and the cap (`DEL` if the cap has passed); then, for a session with subscriptions, each topic's index script (its TTL pushed to the new cap) | 1 (+1 per subscribed topic, at once) | yes |
//! | `delete` | `DEL` | 1 | — |
//! | `contains` | `EXISTS` | 1 | no |
//! | `len` | `SCAN` per master, counting | keys / 1000 | no |
//! | `list` | `SCAN` per master + pipelined `HMGET` | ~2 per page and master | no |
//! | `cleanup_expired` | no session sweep (Redis expires keys itself; returns 0); tidies the topic indexes: `SCAN ... TYPE zset` per master, then each index as `subscribers` reads it, `ZREM` of stale entries | keys / 1000 per master + ~3 per index (per 1000 of its entries), 16 indexes at once | — |
//!
//! Per-session state ([`SessionState`](session_engine::SessionState); see
//! `redis-backend/README.md`):
//!
//! | operation | Redis | round trips | slides? |
//! | --- | --- | --- | --- |
//! | `subscribe` | script on the session (exists, limit, `HSET s:<topic>`), then a script on the topic's index (`ZADD`, its TTL pushed up to the session's lifetime cap) | 2 | no |
//! | `unsubscribe` | script on the session (`HDEL`), then `ZREM` from the index | 2 (1 if not subscribed) | no |
//! | `topics` | `HKEYS` | 1 | no |
//! | `subscribers` | `ZRANGEBYLEX` of the topic's index, `HGET s:<topic>` of each entry's session pipelined per master, `ZREM` of stale entries | ~3 per page | no |
//! | `rate_limit` | script: token bucket in the session's hash, server clock | 1 | no |
//!
//! Session-scoped timers (the engine's `Engine::arm_timer`) have no Redis
//! counterpart: Redis calls nobody back, and a pending request lives in
//! one process anyway (see the README).
//!
//! With [`Replication::Wait`], each write (`create`, `insert`, `put`,
//! `update`, `try_update`'s keep, replace and delete, `rotate`, `touch`,
//! `set_ttl`, `set_lifetime` and its index writes, `delete`, `subscribe`'s
//! script and index entry, `unsubscribe`'s script) is followed by `WAIT` in the same
//! pipeline (one round trip still), and is acknowledged only if the
//! replicas confirmed it — on every path, resends included (see
//! `scripts.rs`). A `rate_limit` charge and the removal of topic index
//! entries do not wait: losing them in a failover is harmless. A write
//! call's answer that changed nothing (`NotFound`, `insert`'s
//! `AlreadyExists`, a `try_update` closure's keep or refusal) is given
//! once the node the confirmation reaches holds the state it found and its
//! replicas confirm it (a script that checks that state and writes a
//! fence, then `WAIT`, one more round trip on that path; while the slot
//! migrates, `OutcomeUnknown`),
//! as the engine's under `Always`.
//!
//! Scripts read and write only their one key (`rotate`: the session's key
//! and its new id's, drawn in the same slot), so they run atomically on the
//! key's master in a cluster too; the hash tag `{<id>}` keeps any
//! per-session key added later in the same slot. A rotated id carries 114
//! random bits instead of 128 (see [`RedisStore::rotate`]). An expired session is never returned
//! (Redis hides a key past its TTL even before reclaiming it).
//!
//! Listing names a master by the first hash slot it serves (stable across
//! failover) and its process's mark, and packs the master's `SCAN` cursor
//! into the position; see `list.rs` for the layout and the guarantees (at
//! least once while no slot moves, exactly once while the cluster does not
//! change and no master's table is resized during the listing).
//!
//! # Failures
//!
//! Every operation has one budget, [`RedisConfig::request_timeout`] (default
//! 1 s), for all its round trips and attempts (`len` excepted: one per `SCAN`
//! round trip). A failed attempt is resent when it cannot have
//! run (connection refused, `CLUSTERDOWN`, `TRYAGAIN`, `MOVED`, `READONLY`,
//! `LOADING`) and also when it may have run: every write is idempotent (a
//! token in the session makes a resent insert or update report success
//! instead of applying twice, and so does a put or a rotation;
//! `touch`/`set_ttl`/`get` set rather than add;
//! `delete` counts "already gone" as done after a doubtful attempt). When the
//! budget runs out, the error says what is known:
//!
//! | error | meaning |
//! | --- | --- |
//! | `NotFound` | the server answered: no live session (from a write under `Replication::Wait`: once the replicas confirm it) |
//! | `Unavailable` | not applied: nothing answered, or the server refused (`reason` quotes it) |
//! | `Contended` | `update` or `try_update` lost 256 races in a row to concurrent writers, or its budget ran out between lost races; not applied |
//! | `TimedOut` | no answer within the budget: a write may or may not be in |
//! | `OutcomeUnknown` | a write's attempt failed after sending, or `WAIT` came back short: it may be in; or, under `Replication::Wait`, a write's `NotFound`, `insert`'s `AlreadyExists` or a `try_update` closure's refusal that the replicas did not confirm: what it found may not last |
//!
//! A reply of the wrong type or value is a "protocol error" naming the command
//! (`Unavailable` for a read, `OutcomeUnknown` for a write), never read as an
//! answer. [`RedisStore::connect`] refuses a URL that reaches the wrong kind of
//! server ([`Error::InvalidConfig`](session_engine::Error::InvalidConfig)).
//!
//! A cluster must run with `cluster-require-full-coverage no`: with Redis'
//! default every node refuses every key while any slot lacks a master, so a
//! failover of one shard stops all of them (see `redis-backend/README.md`).
//! The cluster client follows `MOVED`/`ASK`, refreshes its slot map and
//! reconnects after a failover on its own. As a backstop against a client
//! left wedged (every request timing out while a fresh client works), the
//! store detects "nothing succeeded for [`RedisConfig::stuck_after`] while a
//! fresh client finds the deployment serving and this one does not answer"
//! and swaps in the fresh client ([`RedisStats::client_rebuilds`]).
//!
//! What survives which failure is tabled under [`Replication`].

#![forbid(unsafe_code)]
#![warn(missing_docs, clippy::pedantic)]
#![allow(clippy::module_name_repetitions, clippy::missing_panics_doc)]

mod any;
mod config;
mod conn;
mod error;
#[doc(hidden)]
pub mod fuzz;
mod health;
mod keys;
pub mod limits;
mod list;
mod replication;
mod reply;
mod request;
mod scripts;
mod state;
mod store;

pub use any::open_url;
pub use config::{Deployment, RedisConfig, Replication, CLUSTER_URL_SCHEME};
pub use replication::{MasterLag, ReplicaLag, ReplicationLag};
pub use request::RedisStats;
pub use store::RedisStore;

/// The scripts' text and SHA-1 by operation name (`insert`, `get`, `touch`,
/// `set_ttl`, `commit`, `put`, `rotate`, `subscribe`, `index_add`, `unsubscribe`,
/// `rate_limit`, `set_lifetime`), for
/// benchmarks and tests that replay the backend's exact
/// commands through `redis-benchmark`. Not a stable API.
#[doc(hidden)]
#[must_use]
pub fn script_source(name: &str) -> Option<(String, String)> {
    let s = scripts::Scripts::new();
    let script = match name {
        "insert" => s.insert,
        "get" => s.get,
        "touch" => s.touch,
        "set_ttl" => s.set_ttl,
        "commit" => s.commit,
        "put" => s.put,
        "rotate" => s.rotate,
        "subscribe" => s.subscribe,
        "index_add" => s.index_add,
        "unsubscribe" => s.unsubscribe,
        "rate_limit" => s.rate_limit,
        "set_lifetime" => s.set_lifetime,
        _ => return None,
    };
    Some((script.code, script.sha1))
}

/// The Redis Cluster hash slot of session `id`'s key under `prefix`, for
/// benchmarks that place sessions on a chosen master. Not a stable API.
#[doc(hidden)]
#[must_use]
pub fn key_slot(prefix: &str, id: &session_engine::SessionId) -> Option<u16> {
    let keys = keys::KeySpace::new(prefix).ok()?;
    Some(keys::slot_of(&keys.key(id)))
}

/// A random session id whose key lies in hash slot `slot` (below 16384),
/// as `rotate` draws it; `None` if the random source fails or never fits.
/// For benchmarks. Not a stable API.
#[doc(hidden)]
#[must_use]
pub fn random_id_in_slot(slot: u16) -> Option<session_engine::SessionId> {
    keys::random_id_in_slot(slot, session_engine::SessionId::random)
        .ok()
        .flatten()
}

/// The hash slot of session `id`'s key (any prefix: the id is the hash
/// tag). For benchmarks. Not a stable API.
#[doc(hidden)]
#[must_use]
pub fn id_slot(id: &session_engine::SessionId) -> u16 {
    keys::id_slot(id)
}
