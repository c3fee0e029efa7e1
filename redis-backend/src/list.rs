//! Listing and counting: `SCAN` on every master, in pages.
//!
//! # Cursor layout
//!
//! A [`Cursor`] names a master by the **first hash slot** it serves (`part`;
//! always 0 for a single server): unlike an index or an address, that stays
//! the same when a replica takes over. `position` packs where to continue on
//! that master:
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
//! page rescans the same bucket and skips keys hashing at or below it (if any
//! such key is still there; if none is, the bucket changed and all are new).
//!
//! # Guarantees
//!
//! `SCAN`'s own: a session present for the whole listing is returned at least
//! once (exactly once while no master fails over or reshards meanwhile, and
//! barring a 2^-32 hash tie at a page boundary inside one bucket); one
//! created or deleted meanwhile may or may not appear. Keys are fetched after
//! they are scanned, so a session that expires in between is left out.

use std::time::Instant;

use redis::Value;
use session_engine::limits::LIST_PAGE_MAX;
use session_engine::{Cursor, Error, Page, Result, Session, SessionId};

use crate::config::Deployment;
use crate::conn::{Shard, Target};
use crate::error::protocol;
use crate::keys::resume_hash;
use crate::limits::{
    CLUSTER_SLOTS, COUNT_SCAN_CALLS_MAX, LIST_SCAN_BUDGET_DIVISOR, SCAN_CALLS_MAX, SCAN_COUNT_MAX,
    SCAN_CURSOR_BITS,
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

/// How a scan of one master ended.
enum Stop {
    /// The page is full (or the call budget spent): continue here.
    PageFull(ScanPos),
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
    if cursor.part() >= parts_max {
        return Err(Error::InvalidCursor {
            reason: format!(
                "partition {} is not a hash slot of this deployment (below {parts_max})",
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
    let mut index = match shards.iter().position(|s| s.first_slot == cursor.part()) {
        Some(i) => i,
        None if cursor.position() == 0 => match shards.iter().position(|s| s.first_slot > cursor.part()) {
            Some(i) => i,
            None => return Ok(Page::new(Vec::new(), None)),
        },
        None => {
            return Err(Error::InvalidCursor {
                reason: format!(
                    "no master starts at slot {} any more (the cluster was resharded): restart the listing",
                    cursor.part()
                ),
            })
        }
    };
    let mut pos = ScanPos::decode(cursor.position());
    let mut sessions = Vec::with_capacity(limit.min(SCAN_COUNT_MAX));
    let mut taken = 0;
    loop {
        let shard = &shards[index];
        let (found, stop) = scan_shard(inner, shard, pos, limit - taken, deadline, scan_until).await?;
        taken += found.len();
        fetch(inner, shard, found, &mut sessions, deadline).await?;
        match stop {
            Stop::PageFull(at) => {
                let next = Cursor::new(shard.first_slot, at.encode());
                return Ok(Page::new(sessions, Some(next)));
            }
            Stop::ShardDone => {
                index += 1;
                pos = ScanPos::default();
                let Some(following) = shards.get(index) else {
                    return Ok(Page::new(sessions, None));
                };
                if taken == limit {
                    let next = Cursor::new(following.first_slot, 0);
                    return Ok(Page::new(sessions, Some(next)));
                }
            }
        }
    }
}

/// Scans one master from `pos` for at most `room` session keys, until
/// `scan_until` has passed after at least one call.
async fn scan_shard(
    inner: &Inner,
    shard: &Shard,
    mut pos: ScanPos,
    room: usize,
    deadline: Instant,
    scan_until: Instant,
) -> Result<(Vec<Found>, Stop)> {
    let pattern = inner.keys.scan_pattern();
    let mut found: Vec<Found> = Vec::new();
    // Resuming inside a bucket: rescan exactly that bucket first.
    let mut count_cap = if pos.resume == 0 { SCAN_COUNT_MAX } else { 1 };
    for call in 0..SCAN_CALLS_MAX {
        let room_left = room - found.len();
        if room_left == 0 || (call > 0 && Instant::now() >= scan_until) {
            return Ok((found, Stop::PageFull(pos)));
        }
        let count = room_left.min(count_cap);
        let (next, keys) = scan(inner, shard, pos.cursor, &pattern, count, deadline).await?;
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
        if pos.resume != 0 && batch.iter().any(|f| f.hash <= pos.resume) {
            batch.retain(|f| f.hash > pos.resume);
        }
        if batch.len() <= room_left {
            found.append(&mut batch);
            pos = ScanPos {
                cursor: next,
                resume: 0,
            };
            if next == 0 {
                return Ok((found, Stop::ShardDone));
            }
        } else if count > 1 {
            count_cap = count / 2;
        } else if !found.is_empty() {
            // One bucket that does not fit after others: it opens the next page.
            return Ok((found, Stop::PageFull(pos)));
        } else {
            // One bucket larger than the whole page: split it by hash.
            batch.sort_unstable_by_key(|f| f.hash);
            batch.truncate(room_left);
            let last = batch.last().map_or(pos.resume, |f| f.hash);
            found.append(&mut batch);
            return Ok((
                found,
                Stop::PageFull(ScanPos {
                    cursor: pos.cursor,
                    resume: last,
                }),
            ));
        }
    }
    Ok((found, Stop::PageFull(pos)))
}

/// `SCAN cursor MATCH pattern COUNT count` on the shard's master.
async fn scan(
    inner: &Inner,
    shard: &Shard,
    cursor: u64,
    pattern: &[u8],
    count: usize,
    deadline: Instant,
) -> Result<(u64, Vec<Vec<u8>>)> {
    let mut cmd = redis::cmd("SCAN");
    cmd.arg(cursor).arg("MATCH").arg(pattern).arg("COUNT").arg(count);
    let cmd = &cmd;
    let reply = inner
        .run(Kind::Read, deadline, |conn, _| async move {
            inner.send_query(conn, cmd, Target::Shard(shard), deadline).await
        })
        .await?;
    let (next, keys) = reply::scan(reply.value)?;
    if next >= 1 << SCAN_CURSOR_BITS {
        return Err(Error::Unavailable {
            reason: format!(
                "SCAN cursor {next} of the master at {}:{} exceeds {SCAN_CURSOR_BITS} bits: too many keys to list",
                shard.host, shard.port
            ),
        });
    }
    Ok((next, keys))
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
            let session = match value {
                Value::ServerError(_) => {
                    let reply = inner
                        .command(Kind::Read, deadline, &f.key, &peek_cmd(&f.key))
                        .await?;
                    reply::session(f.id, "HMGET (peek)", reply.value)?
                }
                value => reply::session(f.id, "HMGET (list fetch)", value)?,
            };
            out.extend(session);
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
        loop {
            // Counting is O(keys): one request timeout per SCAN round trip.
            let (next, keys) = scan(inner, shard, cursor, &pattern, SCAN_COUNT_MAX, inner.deadline()).await?;
            total += keys.iter().filter(|k| inner.keys.parse(k).is_some()).count();
            cursor = next;
            calls += 1;
            if cursor == 0 {
                break;
            }
            if calls == COUNT_SCAN_CALLS_MAX {
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
