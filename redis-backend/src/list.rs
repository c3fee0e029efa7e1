//! Listing and counting: `SCAN` on every master, in pages.
//!
//! # Cursor layout
//!
//! A [`Cursor`] names a master by the **first hash slot** it serves (the low
//! 14 bits of `part`; always 0 for a single server): unlike an index or an
//! address, that stays the same when a replica takes over. The bits above
//! hold the master process's mark (the head of its `run_id`, read with every
//! `SCAN`): a `SCAN` cursor means nothing to another process, whose hash
//! seed orders its buckets otherwise, so a page that resumes on a master
//! whose mark changed (a promoted replica, a restart) starts that master
//! again. A cursor whose first slot no master starts at any more (the
//! cluster was resharded) starts the master that now serves that slot.
//! `position` packs where to continue on that master:
//!
//! ```text
//!  63                           32 31                            0
//! +-------------------------------+-------------------------------+
//! |   SCAN cursor of the master   |  resume hash (0: from start)  |
//! +-------------------------------+-------------------------------+
//! ```
//!
//! `SCAN` returns whole hash buckets, so a batch can hold more keys than a
//! page has room for. The page then asks again with a smaller `COUNT`, down to
//! one bucket; if a single bucket still does not fit (a page smaller than one
//! bucket's chain), the page takes the keys with the lowest
//! [`resume_hash`] and stores the last one: the next
//! page rescans the same bucket and skips keys hashing at or below it if the
//! last key taken is still there (if it is not, the batch may be another
//! bucket's, `SCAN` having found that one empty: all its keys are new).
//!
//! # Guarantees
//!
//! A session present for the whole listing is returned at least once while
//! no slot moves between masters (exactly once while no master fails over
//! either, no master's table shrinks or grows during the listing, and the
//! last key a page took inside a bucket is still there at the next page,
//! barring a 2^-32 hash tie at such a boundary; a table resized between
//! `SCAN` calls, as after a mass removal, may return a key again, which
//! `SCAN` allows):
//! a failover or a restart starts that master again, so its sessions may
//! repeat. A resharding meanwhile can leave out the sessions of the slots
//! it moves (from a master not yet listed to one already listed: `SCAN` is
//! per node). Not yet handled: a master's *first* slot moving to another
//! master while a page is scanning it sends that page's `SCAN`s to the new
//! owner under the old master's name (requests route by that slot, and
//! the probe only checks that the answering node serves it), so if the
//! page finishes that master, the old master's other slots are left out;
//! and a page that ends inside one bucket (a page smaller than a bucket's
//! chain) resumes by hash, so if Redis shrinks its table before the next
//! page and merges that bucket with a sibling not yet scanned, the
//! sibling's keys hashing at or below the resume hash are left out. One
//! created or deleted meanwhile may or may not appear. Keys
//! are fetched after they are scanned, so a session that expires in between
//! is left out, and a key under the prefix that holds no session is too.

use std::time::Instant;

use redis::Value;
use session_engine::limits::LIST_PAGE_MAX;
use session_engine::{Cursor, Error, Page, Result, Session, SessionId};

use crate::config::Deployment;
use crate::conn::{Conn, Shard, Target};
use crate::error::protocol;
use crate::keys::resume_hash;
use crate::limits::{
    CLUSTER_SLOTS, COUNT_SCAN_CALLS_MAX, LIST_NODE_MARK_BITS, LIST_SCAN_BUDGET_DIVISOR, SCAN_CALLS_MAX,
    SCAN_COUNT_MAX, SCAN_CURSOR_BITS,
};
use crate::reply;
use crate::request::{Inner, Kind};
use crate::scripts::peek_cmd;

/// Where a listing stands on one master (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
struct ScanPos {
    cursor: u64,
    resume: u32,
}

impl ScanPos {
    fn decode(position: u64) -> Self {
        Self {
            cursor: position >> SCAN_CURSOR_BITS,
            resume: u32::try_from(position & u64::from(u32::MAX)).expect("masked to 32 bits"),
        }
    }

    fn encode(self) -> u64 {
        debug_assert!(
            self.cursor < 1 << SCAN_CURSOR_BITS,
            "cursor {} too wide",
            self.cursor
        );
        self.cursor << SCAN_CURSOR_BITS | u64::from(self.resume)
    }
}

/// Bits of a cursor's `part` that hold the first slot.
const SLOT_BITS: u32 = CLUSTER_SLOTS.trailing_zeros();

/// A cursor's `part`: the master's first slot and its process's mark.
fn part(first_slot: u32, mark: u32) -> u32 {
    debug_assert!(first_slot < CLUSTER_SLOTS && mark < 1 << LIST_NODE_MARK_BITS);
    mark << SLOT_BITS | first_slot
}

/// The slot a shard's requests are routed by.
fn target_slot(shard: &Shard) -> u16 {
    u16::try_from(shard.first_slot).expect("slots are below 16384")
}

/// A pipeline for `shard`'s master that starts, in a cluster, with a read
/// of a key of the shard's first slot (`true`): a route gone stale (the
/// slot moved to another master), or a command the cluster client sent to
/// another node (it falls back to any node when the master is not
/// connected), answers `MOVED` there instead of the other node answering
/// for this master (`ASK`, the slot migrating out, is not: still its own).
pub(crate) fn probed_pipe(inner: &Inner, shard: &Shard) -> (redis::Pipeline, bool) {
    let mut pipe = redis::pipe();
    let probe = !matches!(inner.config.deployment, Deployment::Standalone(_));
    if probe {
        pipe.cmd("EXISTS").arg(inner.keys.slot_probe(target_slot(shard)));
    }
    (pipe, probe)
}

/// Sends a [`probed_pipe`] to `shard`'s master on one attempt. The probe's
/// error is the attempt's, but for `ASK` or `TRYAGAIN` (the slot migrating
/// out: this master still serves it); so is the last command's.
pub(crate) async fn send_probed(
    inner: &Inner,
    conn: Conn,
    (pipe, probe): (&redis::Pipeline, bool),
    shard: &Shard,
    deadline: Instant,
) -> redis::RedisResult<Vec<Value>> {
    let values = inner
        .send_pipeline(conn, pipe, Target::Shard(shard), deadline)
        .await?;
    let probe_error = values.first().filter(|_| probe).and_then(|v| match v {
        Value::ServerError(e) => {
            let err = redis::RedisError::from(e.clone());
            (!matches!(err.code(), Some("ASK" | "TRYAGAIN"))).then_some(err)
        }
        _ => None,
    });
    match (probe_error, values.last()) {
        (Some(err), _) => Err(err),
        (None, Some(Value::ServerError(e))) => Err(e.clone().into()),
        _ => Ok(values),
    }
}

/// How a scan of one master ended.
enum Stop {
    /// The page is full (or the call budget spent): continue here, on the
    /// process of this mark.
    PageFull(ScanPos, u32),
    /// This master has no more keys.
    ShardDone,
}

/// One scanned session key.
struct Found {
    hash: u32,
    id: SessionId,
    key: Vec<u8>,
}

/// One page of at most `limit` sessions, starting at `cursor`.
pub(crate) async fn page(inner: &Inner, cursor: Cursor, limit: usize) -> Result<Page> {
    if limit == 0 || limit > LIST_PAGE_MAX {
        return Err(Error::InvalidPageSize {
            limit,
            max: LIST_PAGE_MAX,
        });
    }
    let standalone = matches!(inner.config.deployment, Deployment::Standalone(_));
    let parts_max = if standalone { 1 } else { CLUSTER_SLOTS };
    let (slot, mark) = (cursor.part() & (CLUSTER_SLOTS - 1), cursor.part() >> SLOT_BITS);
    if slot >= parts_max || mark >= 1 << LIST_NODE_MARK_BITS {
        return Err(Error::InvalidCursor {
            reason: format!(
                "partition {} does not name a hash slot of this deployment (below {parts_max}) and a node mark",
                cursor.part()
            ),
        });
    }
    // One request timeout for the page; scanning stops early, with what it
    // has, once part of it is gone (a sparse table can take many calls).
    let started = Instant::now();
    let deadline = started + inner.config.request_timeout;
    let scan_until = started + inner.config.request_timeout / LIST_SCAN_BUDGET_DIVISOR;
    let shards = inner.topology(deadline).await?;
    let (mut index, mut pos) =
        start(&shards, slot, cursor.position()).unwrap_or((shards.len(), ScanPos::default()));
    if index == shards.len() {
        return Ok(Page::new(Vec::new(), None));
    }
    let mut expected = (pos != ScanPos::default()).then_some(mark);
    let mut sessions = Vec::with_capacity(limit.min(SCAN_COUNT_MAX));
    let mut taken = 0;
    loop {
        let shard = &shards[index];
        let budget = (limit - taken, deadline, scan_until);
        let (found, stop) = scan_shard(inner, shard, pos, expected, budget).await?;
        taken += found.len();
        fetch(inner, shard, found, &mut sessions, deadline).await?;
        match stop {
            Stop::PageFull(at, mark) => {
                let next = Cursor::new(part(shard.first_slot, mark), at.encode());
                return Ok(Page::new(sessions, Some(next)));
            }
            Stop::ShardDone => {
                index += 1;
                pos = ScanPos::default();
                expected = None;
                let Some(following) = shards.get(index) else {
                    return Ok(Page::new(sessions, None));
                };
                // Full, or past the budget: the next master is a page of
                // its own (a cursor further on is progress), not a round
                // trip more on every master left, which on many or slow
                // masters outlasts the deadline and fails the page.
                if taken == limit || Instant::now() >= scan_until {
                    let next = Cursor::new(following.first_slot, 0);
                    return Ok(Page::new(sessions, Some(next)));
                }
            }
        }
    }
}

/// Where a page starting at the master of first slot `slot` begins: that
/// master at `position`; or, once resharded (no master starts there any
/// more), the master that serves the slot now, from its start (its first
/// slot may have moved below the cursor's), else the next one; `None` past
/// the last.
fn start(shards: &[Shard], slot: u32, position: u64) -> Option<(usize, ScanPos)> {
    if let Some(i) = shards.iter().position(|s| s.first_slot == slot) {
        return Some((i, ScanPos::decode(position)));
    }
    let serving = shards
        .iter()
        .position(|s| s.ranges.iter().any(|&(lo, hi)| lo <= slot && slot <= hi));
    serving
        .or_else(|| shards.iter().position(|s| s.first_slot > slot))
        .map(|i| (i, ScanPos::default()))
}

/// Scans one master from `pos` (made on the process of mark `expected`, if
/// any) for at most `room` session keys, until `scan_until` has passed after
/// at least one call and some progress (a key found, or a position past
/// `pos`). A call answered by another process than the one
/// `pos` was made on starts the master again.
async fn scan_shard(
    inner: &Inner,
    shard: &Shard,
    mut pos: ScanPos,
    mut expected: Option<u32>,
    (room, deadline, scan_until): (usize, Instant, Instant),
) -> Result<(Vec<Found>, Stop)> {
    let pattern = inner.keys.scan_pattern();
    let mut found: Vec<Found> = Vec::new();
    // Resuming inside a bucket: rescan exactly that bucket first.
    let mut count_cap = if pos.resume == 0 { SCAN_COUNT_MAX } else { 1 };
    let mut mark = expected.unwrap_or(0);
    let entry = pos;
    for call in 0..SCAN_CALLS_MAX {
        let room_left = room - found.len();
        // The budget ends a scan only once it got somewhere: a page that
        // stopped with nothing found where it began would hand back its own
        // cursor, and a caller paging to the end would loop for ever (a
        // server whose round trip outlasts the budget, a first batch too
        // large for the page). Without progress it goes on until it makes
        // some or its deadline fails it.
        let progressed = !found.is_empty() || pos != entry;
        if room_left == 0 || (call > 0 && progressed && Instant::now() >= scan_until) {
            return Ok((found, Stop::PageFull(pos, mark)));
        }
        let count = room_left.min(count_cap);
        let (next, keys, answered_by) =
            scan(inner, shard, (pos.cursor, &pattern, None), count, deadline).await?;
        mark = answered_by;
        if expected.is_some_and(|m| m != answered_by) {
            // Another process: `pos` means nothing there. From its start
            // (what this page found stays: sessions may repeat).
            expected = Some(answered_by);
            if pos != ScanPos::default() {
                pos = ScanPos::default();
                count_cap = SCAN_COUNT_MAX;
                continue;
            }
        }
        expected = Some(answered_by);
        let mut batch: Vec<Found> = keys
            .into_iter()
            .filter_map(|key| {
                let id = inner.keys.parse(&key)?;
                Some(Found {
                    hash: resume_hash(&key),
                    id,
                    key,
                })
            })
            .collect();
        // The bucket a page ended inside still holds the last key that page
        // took: the keys hashing at or below it were taken too. Without that
        // key, the batch is not known to be that bucket (emptied meanwhile,
        // `SCAN` goes on to the next ones): every key of it is new.
        if pos.resume != 0 && batch.iter().any(|f| f.hash == pos.resume) {
            batch.retain(|f| f.hash > pos.resume);
        }
        if batch.len() <= room_left {
            found.append(&mut batch);
            pos = ScanPos {
                cursor: next,
                resume: 0,
            };
            // Past the bucket that was rescanned or too large: the next
            // buckets are asked for at the full count again (left at 1 or
            // halved, the rest of the page took a round trip a bucket).
            count_cap = SCAN_COUNT_MAX;
            if next == 0 {
                return Ok((found, Stop::ShardDone));
            }
        } else if count > 1 {
            count_cap = count / 2;
        } else if !found.is_empty() {
            // One bucket that does not fit after others: it opens the next page.
            return Ok((found, Stop::PageFull(pos, mark)));
        } else {
            // One bucket larger than the whole page: split it by hash.
            batch.sort_unstable_by_key(|f| f.hash);
            batch.truncate(room_left);
            let last = batch.last().map_or(pos.resume, |f| f.hash);
            found.append(&mut batch);
            return Ok((
                found,
                Stop::PageFull(
                    ScanPos {
                        cursor: pos.cursor,
                        resume: last,
                    },
                    mark,
                ),
            ));
        }
    }
    if found.is_empty() && pos == entry {
        // Every call answered the cursor it was given, with nothing in it:
        // a page that handed that cursor back would be asked for again,
        // for ever. Redis' SCAN always moves on (or ends at 0).
        return Err(Error::Unavailable {
            reason: format!(
                "protocol error: unexpected reply to SCAN: the master at {}:{} answered cursor {} \
                 with itself and no keys {SCAN_CALLS_MAX} times (is the server Redis?)",
                shard.host, shard.port, pos.cursor
            ),
        });
    }
    Ok((found, Stop::PageFull(pos, mark)))
}

/// `SCAN cursor MATCH pattern COUNT count [TYPE kind]` on the shard's
/// master, after `INFO server` in the same pipeline: the keys, the next
/// cursor and the mark of the process that answered (see the module docs).
pub(crate) async fn scan(
    inner: &Inner,
    shard: &Shard,
    (cursor, pattern, kind): (u64, &[u8], Option<&str>),
    count: usize,
    deadline: Instant,
) -> Result<(u64, Vec<Vec<u8>>, u32)> {
    let (mut pipe, probe) = probed_pipe(inner, shard);
    pipe.cmd("INFO").arg("server");
    let scan = pipe
        .cmd("SCAN")
        .arg(cursor)
        .arg("MATCH")
        .arg(pattern)
        .arg("COUNT")
        .arg(count);
    if let Some(kind) = kind {
        scan.arg("TYPE").arg(kind);
    }
    let pipe = &pipe;
    // The SCAN's errors are the attempt's (a node loading); the probe's
    // too. INFO's fails the page below: without the mark a resumed
    // cursor cannot be checked.
    let reply = inner
        .run(Kind::Read, deadline, |conn, _| {
            send_probed(inner, conn, (pipe, probe), shard, deadline)
        })
        .await?;
    let mut values = reply.value;
    if probe && !values.is_empty() {
        values.remove(0);
    }
    let [info, scanned] = <[Value; 2]>::try_from(values)
        .map_err(|values| protocol("INFO server + SCAN", &Value::Array(values), false))?;
    let (next, keys) = reply::scan(scanned)?;
    if next >= 1 << SCAN_CURSOR_BITS {
        return Err(Error::Unavailable {
            reason: format!(
                "SCAN cursor {next} of the master at {}:{} exceeds {SCAN_CURSOR_BITS} bits: too many keys to list",
                shard.host, shard.port
            ),
        });
    }
    let Some(mark) = reply::node_mark(&info) else {
        let answer = match &info {
            Value::ServerError(e) => format!("refused INFO: {}", redis::RedisError::from(e.clone())),
            _ => "gave no run_id in INFO server".to_owned(),
        };
        return Err(Error::Unavailable {
            reason: format!(
                "listing tells a restarted or promoted master by its run_id (INFO server): a page's SCAN \
                 cursor means nothing on another process, and resumed there it would skip sessions; the \
                 master at {}:{} {answer} (grant this user +info to list)",
                shard.host, shard.port
            ),
        });
    };
    Ok((next, keys, mark))
}

/// Reads the found keys from the shard's master, pipelined, into `out`
/// (skipping those gone meanwhile). A key that moved slots is read on its own.
async fn fetch(
    inner: &Inner,
    shard: &Shard,
    found: Vec<Found>,
    out: &mut Vec<Session>,
    deadline: Instant,
) -> Result<()> {
    for chunk in found.chunks(SCAN_COUNT_MAX) {
        let mut pipe = redis::pipe();
        for f in chunk {
            pipe.add_command(peek_cmd(&f.key));
        }
        let pipe = &pipe;
        let reply = inner
            .run(Kind::Read, deadline, |conn, _| async move {
                inner
                    .send_pipeline(conn, pipe, Target::Shard(shard), deadline)
                    .await
            })
            .await?;
        if reply.value.len() != chunk.len() {
            return Err(protocol("HMGET (list fetch)", &Value::Array(reply.value), false));
        }
        for (f, value) in chunk.iter().zip(reply.value) {
            let value = match value {
                Value::ServerError(e) if redis::RedisError::from(e.clone()).code() == Some("WRONGTYPE") => {
                    continue
                }
                Value::ServerError(_) => {
                    inner
                        .command(Kind::Read, deadline, &f.key, &peek_cmd(&f.key))
                        .await?
                        .value
                }
                value => value,
            };
            // A key under the prefix that holds no session of ours (another
            // program's hash) is not one: left out, as a `get` of it is that
            // id's own error, not the whole listing's.
            if let Ok(session) = reply::session(f.id, "HMGET (list fetch)", value) {
                out.extend(session);
            }
        }
    }
    Ok(())
}

/// Session keys on every master (see [`RedisStore::len`](crate::RedisStore::len)).
pub(crate) async fn count(inner: &Inner) -> Result<usize> {
    let pattern = inner.keys.scan_pattern();
    let mut total = 0;
    for shard in &inner.topology(inner.deadline()).await? {
        let mut cursor = 0;
        let mut calls = 0;
        let mut counted = 0;
        let mut process = None;
        loop {
            // Counting is O(keys): one request timeout per SCAN round trip.
            let (next, keys, answered_by) = scan(
                inner,
                shard,
                (cursor, &pattern, None),
                SCAN_COUNT_MAX,
                inner.deadline(),
            )
            .await?;
            if process.is_some_and(|mark| mark != answered_by) && cursor != 0 {
                // Another process (a restart, a promoted replica): the
                // cursor means nothing there, as in a listing. This master
                // is counted again from its start (the calls stay counted:
                // a master failing over for ever still ends the count).
                process = Some(answered_by);
                (cursor, counted) = (0, 0);
                calls += 1;
                continue;
            }
            process = Some(answered_by);
            counted += keys.iter().filter(|k| inner.keys.parse(k).is_some()).count();
            cursor = next;
            calls += 1;
            if cursor == 0 {
                total += counted;
                break;
            }
            if calls >= COUNT_SCAN_CALLS_MAX {
                return Err(Error::Unavailable {
                    reason: format!(
                        "the master at {}:{} holds more than {COUNT_SCAN_CALLS_MAX} × {SCAN_COUNT_MAX} keys: \
                         too many to count with SCAN",
                        shard.host, shard.port
                    ),
                });
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip() {
        for (cursor, resume) in [
            (0, 0),
            (1, 0),
            (0, 7),
            (u64::from(u32::MAX), u32::MAX),
            (12_345, 99),
        ] {
            let pos = ScanPos { cursor, resume };
            assert_eq!(ScanPos::decode(pos.encode()), pos);
        }
        assert_eq!(ScanPos::decode(0), ScanPos::default());
    }
}
