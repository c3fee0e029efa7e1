//! Rebuilding a shard from its segments (`FORMAT.md`, "Recovery").
//!
//! Recovery reads a shard's segments in sequence order and replays their
//! records. It changes no file itself: what it would clear (a torn tail,
//! superseded segments, segments that were being created) comes back as a
//! plan that the caller applies when it keeps the layout, and ignores when it
//! rewrites the log into a new one (a reshard, an upgrade, a repair).
//!
//! The rules, in short (`FORMAT.md` has them in full):
//! - A record that does not verify is *damage* if a verifiable record follows
//!   it anywhere later in the shard's log, and a *torn tail* if nothing does
//!   and it is in the last segment holding data (what a crash mid-write
//!   leaves). A torn tail is cleared and reported; damage stops `Strict`
//!   (naming file and offset) and is skipped and reported by `Repair`.
//! - A record whose header verifies but whose payload does not is skipped
//!   whole: recovery never looks for records inside it. One whose header does
//!   not verify is followed by a search for the next record that verifies
//!   whole, at every offset; a record's two checks start from two secret
//!   salts, so bytes inside a payload (a user's metadata) never verify as
//!   one, and a header that verifies alone (32 bits) is not taken for one.
//! - A segment that the log rolled past ends with a `SEAL`; one that ends
//!   without it while a later segment holds data lost its tail (damage).
//! - A header copy that does not verify, a file whose length is not the one
//!   its header records, a base without its seal: damage. `Repair` reads such
//!   a segment's records all the same (the salts do not come from the header).

use std::path::{Path, PathBuf};

use ahash::AHashMap;

use super::format::{
    decode, put_len, subscribe_len, Decoded, LogSalt, Record, SegmentHeader, FLAG_BASE,
    SEGMENT_HEADER_COPY_LEN, SEGMENT_HEADER_LEN, TIMEOUT_NEVER_STORED,
};
use super::format_v1;
use super::segment::segment_name;
use crate::block::Metadata;
use crate::block::{stored_timeout_ms, timeout_to_stored, TIMEOUT_NEVER};
use crate::config::RecoveryMode;
use crate::error::{Error, Result};
use crate::id::SessionId;
use crate::limits::{
    RECOVERY_REPORT_ITEMS_MAX, SEGMENT_SEQUENCE_MAX, SEGMENT_SIZE_BYTES_MAX, TIMEOUT_MS_MAX, TIME_MS_MAX,
    TOPICS_PER_SESSION_MAX,
};
use crate::per_session::Topic;

/// A session as the log left it.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub(crate) metadata: Metadata,
    pub(crate) created_ms: u64,
    pub(crate) last_access_ms: u64,
    pub(crate) timeout_ms: u32,
    /// The lifetime cap from creation, stored like the timeout.
    pub(crate) lifetime: u32,
    /// Its topics (`SUBSCRIBE` records not cancelled by an `UNSUBSCRIBE`).
    pub(crate) topics: Vec<Topic>,
}

impl Recovered {
    fn is_expired(&self, now_ms: u64) -> bool {
        let idle = stored_timeout_ms(self.timeout_ms).map(|t| self.last_access_ms.saturating_add(t));
        let end = stored_timeout_ms(self.lifetime).map(|l| self.created_ms.saturating_add(l));
        idle.into_iter().chain(end).any(|d| d <= now_ms)
    }
}

/// A torn tail cleared (or an unfinished segment removed) at recovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Truncation {
    /// The segment file.
    pub path: PathBuf,
    /// Where the cleared bytes start (0: the file was removed).
    pub offset: u64,
    /// Bytes cleared (for a removed file: its length).
    pub bytes: u64,
}

/// Damage found in the middle of a log: what `Strict` refuses and `Repair`
/// skips.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// The segment file.
    pub path: PathBuf,
    /// Where the damaged bytes start.
    pub offset: u64,
    /// Bytes skipped (0 where nothing could be read: a lost tail).
    pub bytes: u64,
    /// What was wrong.
    pub reason: String,
    /// The session a damaged record was about, where its header verified:
    /// read from its damaged payload, so very likely but not certainly right.
    pub id: Option<SessionId>,
}

/// What recovery found, summed over the shards.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// Live sessions recovered.
    pub sessions: usize,
    /// Records replayed.
    pub records: u64,
    /// Segment files read.
    pub segments: usize,
    /// Bytes of records read.
    pub bytes: u64,
    /// Torn tails cleared, and unfinished segment files removed (the normal
    /// traces of a crash mid-write).
    pub torn_tails: usize,
    /// Bytes of torn tails cleared.
    pub torn_bytes: u64,
    /// Damaged stretches skipped in `Repair` mode.
    pub corrupt_skipped: usize,
    /// Bytes in damaged stretches skipped in `Repair` mode.
    pub corrupt_bytes: u64,
    /// Sessions found expired at recovery time and dropped.
    pub expired_dropped: usize,
    /// `(old, new)` shard counts when the layout changed.
    pub reshard: Option<(u32, u32)>,
    /// The format the directory was upgraded from (`Some(1)` or `Some(2)`),
    /// if it was.
    pub upgraded_from: Option<u32>,
    /// `Repair` skipped damage and rewrote the log without it: the next
    /// open (`Strict` or not) finds none.
    pub rewritten: bool,
    /// The logs had been routed to their shards by another hash than the
    /// one this build computes (another build of the hash function: a
    /// recovered session routes to another shard than its log's): every
    /// session was re-routed into a new layout.
    pub rerouted: bool,
    /// Each torn tail cleared and unfinished segment removed (the first
    /// `RECOVERY_REPORT_ITEMS_MAX`; the counts above are complete).
    pub truncations: Vec<Truncation>,
    /// Each damaged stretch `Repair` skipped (the first
    /// `RECOVERY_REPORT_ITEMS_MAX`; the counts above are complete).
    pub damage: Vec<Damage>,
    /// Time recovery took, in milliseconds.
    pub duration_ms: u64,
    /// Segment files synced at the open, before any write could land after
    /// them (0 with `Durability::Never`): what recovery read may have been
    /// in the page cache only (a process that died in `Interval` or `Never`
    /// mode), and a write acknowledged once synced must not depend on
    /// records a power loss could still take.
    pub synced_segments: usize,
    /// Files of shards whose log sync failed in an earlier run since the
    /// machine booted, read from the disk rather than the page cache: after
    /// a failed writeback the kernel keeps the pages cached and clean
    /// although the disk never got them, so the open synced each such file
    /// and dropped its cached pages before recovery read it (0 normally).
    pub reread_after_failed_sync: usize,
}

impl RecoveryReport {
    pub(crate) fn add(&mut self, other: &RecoveryReport) {
        self.sessions += other.sessions;
        self.records += other.records;
        self.segments += other.segments;
        self.bytes += other.bytes;
        self.torn_tails += other.torn_tails;
        self.torn_bytes += other.torn_bytes;
        self.corrupt_skipped += other.corrupt_skipped;
        self.corrupt_bytes += other.corrupt_bytes;
        self.expired_dropped += other.expired_dropped;
        self.reread_after_failed_sync += other.reread_after_failed_sync;
        for t in &other.truncations {
            push_bounded(&mut self.truncations, t.clone());
        }
        for d in &other.damage {
            push_bounded(&mut self.damage, d.clone());
        }
    }
}

fn push_bounded<T>(list: &mut Vec<T>, item: T) {
    if list.len() < RECOVERY_REPORT_ITEMS_MAX {
        list.push(item);
    }
}

/// How a layout's records are framed.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Codec {
    /// Format 1: no salt, no seals (read for the upgrade only).
    V1,
    /// Format 3, or format 2 (read for the upgrade only), with the shard
    /// log's salts (which say which).
    Salted { salt: LogSalt },
}

impl Codec {
    fn header_len(self) -> usize {
        match self {
            Codec::V1 => format_v1::SEGMENT_HEADER_LEN,
            Codec::Salted { .. } => SEGMENT_HEADER_LEN,
        }
    }

    fn decode(self, bytes: &[u8]) -> Decoded<'_> {
        match self {
            Codec::V1 => format_v1::decode(bytes),
            Codec::Salted { salt } => decode(bytes, salt),
        }
    }
}

/// The shard a recovery reads.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ShardFiles<'a> {
    pub(crate) dir: &'a Path,
    pub(crate) layout: u64,
    pub(crate) shard: u32,
    pub(crate) shards: u32,
    pub(crate) codec: Codec,
}

/// A file change recovery asks for when the layout is kept.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Fix {
    /// Zero (and sync) `from..to` of a segment: a torn tail.
    Zero { path: PathBuf, from: usize, to: usize },
    /// Remove a segment: superseded by a base, unfinished, or empty past the
    /// append position.
    Remove { path: PathBuf },
}

/// Where appends continue when the layout is kept.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Tail {
    pub(crate) path: PathBuf,
    pub(crate) sequence: u64,
    pub(crate) pos: usize,
    /// Records already in the segment.
    pub(crate) records: u64,
}

/// One shard's recovered state and the plan to keep appending to it.
pub(crate) struct ShardRecovery {
    pub(crate) sessions: AHashMap<SessionId, Recovered>,
    pub(crate) report: RecoveryReport,
    /// Changes to make before appending (only if the layout is kept).
    pub(crate) fixes: Vec<Fix>,
    /// The segment to append to; `None`: create `next_sequence`.
    pub(crate) tail: Option<Tail>,
    pub(crate) next_sequence: u64,
    /// Oldest segment sequence kept.
    pub(crate) first_sequence: u64,
    /// Bytes of headers and records in the kept segments.
    pub(crate) log_bytes: u64,
    /// `Repair` skipped damage: the log must be rewritten without it.
    pub(crate) damaged: bool,
    /// The newest time a record holds: the last run's clock reached it.
    pub(crate) newest_ms: u64,
}

impl ShardRecovery {
    pub(crate) fn empty() -> Self {
        Self {
            sessions: AHashMap::new(),
            report: RecoveryReport::default(),
            fixes: Vec::new(),
            tail: None,
            next_sequence: 1,
            first_sequence: 1,
            log_bytes: 0,
            damaged: false,
            newest_ms: 0,
        }
    }

    /// Drops the sessions expired at `at_ms`, counting them in the report.
    pub(crate) fn drop_expired(&mut self, at_ms: u64) {
        let before = self.sessions.len();
        self.sessions.retain(|_, s| !s.is_expired(at_ms));
        self.report.expired_dropped += before - self.sessions.len();
        self.report.sessions = self.sessions.len();
    }

    /// Bytes the live sessions' `PUT` records take.
    pub(crate) fn live_bytes(&self) -> u64 {
        live_bytes(&self.sessions)
    }
}

pub(crate) fn live_bytes(sessions: &AHashMap<SessionId, Recovered>) -> u64 {
    sessions
        .values()
        .map(|s| {
            let topics: usize = s.topics.iter().map(|t| subscribe_len(t.len())).sum();
            (put_len(s.metadata.len()) + topics) as u64
        })
        .sum()
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { context, source }
}

/// Segment files by sequence.
type Segments = Vec<(u64, PathBuf)>;

/// The segments of a shard directory in sequence order, and the files to
/// remove: unfinished compactions (`.tmp`) and segments whose creation a
/// crash cut short (`.new`).
fn list_segments(dir: &Path) -> Result<(Segments, Vec<PathBuf>)> {
    let mut segments = Vec::new();
    let mut tmps = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(io(format!("listing {}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(io(format!("listing {}", dir.display())))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(stem) = name.strip_suffix(".tmp").or_else(|| name.strip_suffix(".new")) {
            if stem.parse::<u64>().is_ok() {
                tmps.push(entry.path());
            }
        } else if let Some(stem) = name.strip_suffix(".seg") {
            match stem.parse::<u64>() {
                Ok(sequence) if sequence <= SEGMENT_SEQUENCE_MAX => segments.push((sequence, entry.path())),
                // Not a name this engine gives (see SEGMENT_SEQUENCE_MAX).
                _ => {}
            }
        }
    }
    segments.sort_unstable_by_key(|s| s.0);
    Ok((segments, tmps))
}

/// What a segment's header says, once checked against where the file is.
#[derive(Debug)]
struct HeaderCheck {
    /// The header, if a copy verified and names this shard and sequence.
    header: Option<SegmentHeader>,
    /// Damage to a copy, or to both: `(offset, reason)`.
    damage: Option<(usize, &'static str)>,
}

fn check_header(files: ShardFiles<'_>, sequence: u64, bytes: &[u8]) -> HeaderCheck {
    let names_us = |h: &SegmentHeader| {
        h.shard == files.shard
            && h.shards == files.shards
            && h.sequence == sequence
            && h.layout == files.layout
    };
    match files.codec {
        Codec::V1 => match format_v1::decode_header(bytes) {
            Ok((shard, shards, flags, seq))
                if shard == files.shard && shards == files.shards && seq == sequence =>
            {
                let header = SegmentHeader {
                    shard,
                    shards,
                    flags,
                    sequence,
                    created_ms: 0,
                    layout: files.layout,
                    len: bytes.len() as u64,
                };
                HeaderCheck {
                    header: Some(header),
                    damage: None,
                }
            }
            Ok(_) => HeaderCheck {
                header: None,
                damage: Some((0, "segment header names another shard, layout or sequence")),
            },
            Err(reason) => HeaderCheck {
                header: None,
                damage: Some((0, reason)),
            },
        },
        Codec::Salted { salt } => {
            let (first, second) = SegmentHeader::decode_both(bytes, salt.format());
            let check = |copy: Result<SegmentHeader, &'static str>| {
                copy.and_then(|h| {
                    if names_us(&h) {
                        Ok(h)
                    } else {
                        Err("segment header names another shard, layout or sequence")
                    }
                })
            };
            match (check(first), check(second)) {
                (Ok(a), Ok(b)) if a == b => HeaderCheck {
                    header: Some(a),
                    damage: None,
                },
                (Ok(a), Ok(_)) => HeaderCheck {
                    header: Some(a),
                    damage: Some((SEGMENT_HEADER_COPY_LEN, "the segment header's copies differ")),
                },
                (Ok(a), Err(reason)) => HeaderCheck {
                    header: Some(a),
                    damage: Some((SEGMENT_HEADER_COPY_LEN, reason)),
                },
                (Err(reason), Ok(b)) => HeaderCheck {
                    header: Some(b),
                    damage: Some((0, reason)),
                },
                (Err(reason), Err(_)) => HeaderCheck {
                    header: None,
                    damage: Some((0, reason)),
                },
            }
        }
    }
}

/// A segment file's bytes for replay, and the file's length: at most its
/// verified header's `len` (past it the engine never wrote: a file extended
/// beyond it costs no memory), or, with no verified header, see
/// [`unverified_read_len`]. Read, not mapped: a disk error is then
/// `Error::Io` naming the file, where a mapping would kill the process
/// with `SIGBUS`.
fn read_segment(files: ShardFiles<'_>, sequence: u64, path: &Path) -> Result<(Vec<u8>, u64)> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let context = || format!("reading {}", path.display());
    let file = std::fs::File::open(path).map_err(io(context()))?;
    let meta = file.metadata().map_err(io(context()))?;
    let file_len = meta.len();
    let head = read_header_bytes(path, files.codec.header_len())?;
    let want = match (files.codec, check_header(files, sequence, &head).header) {
        (Codec::Salted { .. }, Some(h)) => file_len.min(h.len),
        (Codec::Salted { .. }, None) => unverified_read_len(file_len, meta.blocks().saturating_mul(512)),
        (Codec::V1, _) => file_len,
    };
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(usize::try_from(want).unwrap_or(usize::MAX))
        .map_err(|_| Error::Io {
            context: context(),
            source: std::io::Error::new(std::io::ErrorKind::OutOfMemory, format!("{want} bytes")),
        })?;
    file.take(want).read_to_end(&mut bytes).map_err(io(context()))?;
    Ok((bytes, file_len))
}

/// How much of a segment whose header copies are both damaged to read: the
/// largest segment the engine appends to, or as much as the file holds on
/// disk if that is more. A compaction base is written whole and may pass
/// the append limit (a shard of more than 1 GiB of sessions): capped at
/// the limit, Repair dropped every record past it, all of which verify. A
/// file extended by a hole (sparse: no blocks on disk) is not read past
/// what it holds, so such damage costs no memory.
fn unverified_read_len(file_len: u64, on_disk: u64) -> u64 {
    file_len.min((SEGMENT_SIZE_BYTES_MAX as u64).max(on_disk))
}

fn read_header_bytes(path: &Path, len: usize) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::with_capacity(len);
    std::fs::File::open(path)
        .and_then(|f| f.take(len as u64).read_to_end(&mut buf))
        .map_err(io(format!("reading {}", path.display())))?;
    Ok(buf)
}

/// Where the next record that verifies starts, from `from` to `to`. A
/// record whose header alone verifies is not one: the header's check is 32
/// bits, which a user's bytes pass once in 2^32 offsets, and its extent
/// would hide the records after it.
fn resync(codec: Codec, bytes: &[u8], from: usize, to: usize) -> Option<usize> {
    (from..to).find(|&at| matches!(codec.decode(&bytes[at..]), Decoded::Record(..)))
}

fn stored_timeout(timeout_ms: u64) -> u32 {
    if timeout_ms == TIMEOUT_NEVER_STORED {
        TIMEOUT_NEVER
    } else {
        debug_assert!(
            (1..=TIMEOUT_MS_MAX).contains(&timeout_ms),
            "decode checked the range"
        );
        timeout_to_stored(timeout_ms)
    }
}

fn apply(sessions: &mut AHashMap<SessionId, Recovered>, record: Record<'_>) {
    match record {
        Record::Put {
            id,
            created_ms,
            last_access_ms,
            timeout_ms,
            lifetime_ms,
            metadata,
        } => {
            // A `put` over a live session keeps its creation time and its
            // topics, and never moves its last access back (its record's
            // time was read before the writer mutex: a touch logged later
            // can come before it); a PUT with another creation time is a
            // new session under the id (the old one expired or was
            // deleted), which starts with none.
            let (topics, last_access_ms) = match sessions.remove(&id) {
                Some(old) if old.created_ms == created_ms => {
                    (old.topics, old.last_access_ms.max(last_access_ms))
                }
                _ => (Vec::new(), last_access_ms),
            };
            sessions.insert(
                id,
                Recovered {
                    metadata: Metadata::copy_from(metadata),
                    created_ms,
                    last_access_ms,
                    timeout_ms: stored_timeout(timeout_ms),
                    lifetime: stored_timeout(lifetime_ms),
                    topics,
                },
            );
        }
        Record::Subscribe { id, topic } => {
            if let Some(s) = sessions.get_mut(&id) {
                // No bound here: a compaction's base holds a session's topics
                // as they were when it was listed, and the records after the
                // seal replay over that later set, so a session at the bound
                // can pass it for a while (a topic subscribed late, then one
                // whose unsubscribe and subscribe came earlier). The bound is
                // applied once the shard is replayed.
                if !s.topics.iter().any(|t| &**t == topic) {
                    s.topics.push(Topic::from(topic));
                }
            }
        }
        Record::Unsubscribe { id, topic } => {
            if let Some(s) = sessions.get_mut(&id) {
                s.topics.retain(|t| &**t != topic);
            }
        }
        Record::Update {
            id,
            last_access_ms,
            metadata,
        } => {
            if let Some(s) = sessions.get_mut(&id) {
                s.metadata = Metadata::copy_from(metadata);
                s.last_access_ms = s.last_access_ms.max(last_access_ms);
            }
        }
        Record::Timeout {
            id,
            last_access_ms,
            timeout_ms,
            lifetime_ms,
        } => {
            if let Some(s) = sessions.get_mut(&id) {
                s.timeout_ms = stored_timeout(timeout_ms);
                s.lifetime = stored_timeout(lifetime_ms);
                s.last_access_ms = s.last_access_ms.max(last_access_ms);
            }
        }
        Record::Touch { id, last_access_ms } => {
            if let Some(s) = sessions.get_mut(&id) {
                s.last_access_ms = s.last_access_ms.max(last_access_ms);
            }
        }
        Record::Delete { id } => {
            sessions.remove(&id);
        }
        Record::Rotate {
            id,
            new_id,
            last_access_ms,
        } => {
            // The old id is gone either way. A new id already here was put
            // in the base by a compaction that listed it after the rotate
            // (fresh ids are never taken, so nothing else holds it): the
            // base's copy is the later one, and the old id may by then
            // hold a new session of its own (whose records follow), which
            // must not move.
            let old = sessions.remove(&id);
            if let (Some(mut s), false) = (old, sessions.contains_key(&new_id)) {
                s.last_access_ms = s.last_access_ms.max(last_access_ms);
                // The new id starts with no subscriptions (`rotate`).
                s.topics.clear();
                sessions.insert(new_id, s);
            }
        }
        Record::Seal { .. } => unreachable!("seals end a segment's scan"),
    }
}

/// A verdict that waits for the rest of the log: fine if no later segment
/// holds data, damage if one does.
#[derive(Debug)]
enum Deferred {
    /// Bytes from `pos` to `dirty_end` hold no record that verifies.
    Torn {
        path: PathBuf,
        pos: usize,
        dirty_end: usize,
        reason: &'static str,
    },
    /// The segment's data ends at `pos` without a `SEAL`.
    Unsealed { path: PathBuf, pos: usize },
    /// A segment whose header does not verify, with nothing after it.
    Unfinished {
        path: PathBuf,
        len: u64,
        reason: &'static str,
    },
}

/// How a segment's scan ended.
enum Ending {
    /// At a `SEAL`; `end` is just past it; `next`, the segment it names as
    /// the one the log went on in.
    Sealed { end: usize, next: Option<u64> },
    /// Data ends at `pos` (followed by zeros) without a seal.
    Open { pos: usize, records: u64 },
    /// Nothing from `pos` on verifies (bytes up to `dirty_end`).
    Torn {
        pos: usize,
        dirty_end: usize,
        records: u64,
        reason: &'static str,
    },
}

/// Replays one shard directory. Its sessions are all kept, expired or not:
/// the caller drops the expired ones (`ShardRecovery::drop_expired`) once it
/// knows the newest time of every shard.
pub(crate) fn recover_shard(files: ShardFiles<'_>, mode: RecoveryMode) -> Result<ShardRecovery> {
    let mut r = Replay {
        files,
        mode,
        out: ShardRecovery::empty(),
    };
    r.run()?;
    let mut out = r.out;
    for s in out.sessions.values_mut() {
        // What replay gives back is what the sessions held, within the
        // bound; only a log the engine did not write could pass it.
        s.topics.truncate(TOPICS_PER_SESSION_MAX);
    }
    out.report.sessions = out.sessions.len();
    Ok(out)
}

/// The time a record says its run had reached.
fn logged_time_ms(record: &Record<'_>) -> u64 {
    match *record {
        Record::Put {
            created_ms,
            last_access_ms,
            ..
        } => created_ms.max(last_access_ms),
        Record::Update { last_access_ms, .. }
        | Record::Timeout { last_access_ms, .. }
        | Record::Touch { last_access_ms, .. }
        | Record::Rotate { last_access_ms, .. } => last_access_ms,
        _ => 0,
    }
}

struct Replay<'a> {
    files: ShardFiles<'a>,
    mode: RecoveryMode,
    out: ShardRecovery,
}

/// A segment with data, as the scan left it: the append candidate.
struct LastData {
    path: PathBuf,
    sequence: u64,
    appendable: bool,
    pos: usize,
    records: u64,
}

impl Replay<'_> {
    /// Reports damage: `Strict` stops with it, `Repair` records it and
    /// goes on (the log will be rewritten).
    fn damage(
        &mut self,
        path: &Path,
        offset: usize,
        bytes: usize,
        reason: &str,
        id: Option<SessionId>,
    ) -> Result<()> {
        match self.mode {
            RecoveryMode::Strict => Err(Error::Corrupt {
                path: path.to_path_buf(),
                offset: offset as u64,
                reason: format!("{reason} (open with RecoveryMode::Repair to skip damaged records)"),
            }),
            RecoveryMode::Repair => {
                let report = &mut self.out.report;
                report.corrupt_skipped += 1;
                report.corrupt_bytes += bytes as u64;
                push_bounded(
                    &mut report.damage,
                    Damage {
                        path: path.to_path_buf(),
                        offset: offset as u64,
                        bytes: bytes as u64,
                        reason: reason.to_string(),
                        id,
                    },
                );
                self.out.damaged = true;
                Ok(())
            }
        }
    }

    fn deferred_is_damage(&mut self, deferred: Deferred) -> Result<()> {
        match deferred {
            Deferred::Torn {
                path,
                pos,
                dirty_end,
                reason,
            } => self.damage(
                &path,
                pos,
                dirty_end - pos,
                &format!("{reason}, and later segments hold data"),
                None,
            ),
            Deferred::Unsealed { path, pos } => self.damage(
                &path,
                pos,
                0,
                "the segment's data ends without a seal while later segments hold data: its tail was lost",
                None,
            ),
            Deferred::Unfinished { path, len, reason } => self.damage(
                &path,
                0,
                usize::try_from(len).unwrap_or(usize::MAX),
                &format!("{reason}, and later segments hold data"),
                None,
            ),
        }
    }

    #[allow(clippy::too_many_lines)] // one pass over the segments, in the order FORMAT.md gives
    fn run(&mut self) -> Result<()> {
        let files = self.files;
        let hlen = files.codec.header_len();
        let (mut segments, tmps) = list_segments(files.dir)?;
        self.out
            .fixes
            .extend(tmps.into_iter().map(|path| Fix::Remove { path }));
        self.out.next_sequence = segments.last().map_or(1, |s| s.0 + 1);
        // The newest base (by a verified header) replaces everything before it.
        let mut base_at = None;
        for (i, (sequence, path)) in segments.iter().enumerate() {
            let head = read_header_bytes(path, hlen)?;
            if check_header(files, *sequence, &head)
                .header
                .is_some_and(|h| h.flags & FLAG_BASE != 0)
            {
                base_at = Some(i);
            }
        }
        if let Some(base) = base_at {
            for (_, path) in segments.drain(..base) {
                self.out.fixes.push(Fix::Remove { path });
            }
        }
        self.out.first_sequence = segments.first().map_or(1, |s| s.0);

        let mut deferred: Vec<Deferred> = Vec::new();
        let mut last_data: Option<LastData> = None;
        // An unfinished segment (no verified header, no data) is what a crash
        // leaves while creating a segment ahead of need: after the open
        // segment being written, or after another prepared one. Right after
        // a sealed segment (the writer had rolled into it, so it was whole)
        // or as the first segment, it is a segment that lost its header.
        let mut may_be_unfinished = false;
        let mut empties: Vec<(u64, PathBuf)> = Vec::new();
        // The segment the last seal names as the next, and the sealed one.
        let mut named_next: Option<(u64, u64)> = None;
        // The newest base was found without its data (reported once).
        let mut base_lost = false;
        for (sequence, path) in segments {
            let (read, file_len) = read_segment(files, sequence, &path)?;
            self.out.report.segments += 1;
            let check = check_header(files, sequence, &read);
            if let Some(header) = &check.header {
                // Made when its run's clock read this (an empty segment
                // prepared ahead included): a time that run reached. One at
                // or past the engine's last millisecond is not (the
                // header's check is a plain CRC): taken, it expired every
                // session and pinned the clock there.
                if header.created_ms < TIME_MS_MAX {
                    self.out.newest_ms = self.out.newest_ms.max(header.created_ms);
                }
            }
            // A file whose length is not its verified header's was
            // truncated or extended (a crash cannot change a preallocated
            // file's length): damage, found before any data is read. Only
            // the header's length is read: past it the engine never wrote.
            let bytes = &read[..];
            let resized = match (files.codec, check.header) {
                (Codec::Salted { .. }, Some(h)) if h.len != file_len => {
                    let reason = format!(
                        "the segment file is {file_len} bytes, its header says {}: it was truncated or extended",
                        h.len
                    );
                    self.damage(&path, bytes.len(), 0, &reason, None)?;
                    true
                }
                (Codec::Salted { .. }, None) if file_len > bytes.len() as u64 => {
                    let reason = format!(
                        "the segment file is {file_len} bytes with no verified header, longer than any segment the engine appends to: only its first {} bytes are read",
                        bytes.len()
                    );
                    self.damage(&path, bytes.len(), 0, &reason, None)?;
                    false
                }
                _ => false,
            };
            let has_data = bytes.get(hlen..).is_some_and(|d| d.iter().any(|&b| b != 0));
            if !has_data && resized {
                // An empty segment of the wrong length holds nothing to keep.
                self.out.fixes.push(Fix::Remove { path });
                continue;
            }
            if !has_data {
                let reason = check.damage.map_or("segment header damaged", |d| d.1);
                // A base is written whole, sealed and synced before its
                // name exists: one without data lost it, and the segments
                // it replaced are gone. (A format-1 base has no seal: with
                // no sessions it is a header alone.)
                let v2 = matches!(files.codec, Codec::Salted { .. });
                if v2 && check.header.is_some_and(|h| h.flags & FLAG_BASE != 0) {
                    let reason = "a base segment holds no data: the sessions it held are lost";
                    self.damage(&path, hlen, 0, reason, None)?;
                    base_lost = true;
                    continue;
                }
                match check.header {
                    Some(_) if check.damage.is_none() => {
                        empties.push((sequence, path));
                        may_be_unfinished = true;
                    }
                    _ if may_be_unfinished => deferred.push(Deferred::Unfinished {
                        path,
                        len: bytes.len() as u64,
                        reason,
                    }),
                    _ => {
                        let reason = format!("{reason}, in a segment the log had already written to");
                        self.damage(&path, check.damage.map_or(0, |d| d.0), bytes.len(), &reason, None)?;
                        self.out.fixes.push(Fix::Remove { path });
                    }
                }
                continue;
            }
            // Data here: whatever waited for a later segment with data was damage.
            for d in std::mem::take(&mut deferred) {
                self.deferred_is_damage(d)?;
            }
            // A log starts at segment 1 or at a base (which replaced every
            // segment before it): a first segment with data that is
            // neither had segments before it that are gone.
            let is_base = check.header.is_some_and(|h| h.flags & FLAG_BASE != 0);
            let v2 = matches!(files.codec, Codec::Salted { .. });
            if last_data.is_none() && sequence != 1 && !is_base && !base_lost && v2 {
                let reason = format!(
                    "the log's first segment with data is {sequence}, neither segment 1 nor a base: the segments before it are missing or hold no data"
                );
                self.damage(&path, 0, 0, &reason, None)?;
            }
            // The log went on in the segment the last seal names: data past
            // it means that segment's records are gone (its file, or its
            // pages), and this one would replay without them.
            if let Some((next, sealed)) = named_next.take() {
                if sequence > next {
                    let reason = format!(
                        "segment {next}, which the seal of segment {sealed} names as the next, is missing or holds no data, while segment {sequence} after it does"
                    );
                    self.damage(&files.dir.join(segment_name(next)), 0, 0, &reason, None)?;
                }
            }
            // Empty segments before one with data are harmless (a prepared
            // segment the writer rolled past): removed when the layout is kept.
            for (_, p) in empties.drain(..) {
                self.out.fixes.push(Fix::Remove { path: p });
            }
            if let Some((offset, reason)) = check.damage {
                self.damage(&path, offset, 0, reason, None)?;
            }
            let ending = self.scan(&path, bytes)?;
            let seals = matches!(files.codec, Codec::Salted { .. });
            may_be_unfinished = !matches!(ending, Ending::Sealed { .. });
            match ending {
                Ending::Sealed { end, next } => {
                    if next.is_some_and(|next| next <= sequence) {
                        let reason = format!("the seal names segment {next:?} as the next, not one after it");
                        self.damage(&path, end, 0, &reason, None)?;
                    }
                    named_next = next.filter(|&next| next > sequence).map(|next| (next, sequence));
                    self.out.log_bytes += end as u64;
                    last_data = Some(LastData {
                        path,
                        sequence,
                        appendable: false,
                        pos: end,
                        records: 0,
                    });
                }
                Ending::Open { pos, records } => {
                    self.out.log_bytes += pos as u64;
                    if is_base && seals {
                        self.damage(&path, pos, 0, "a base segment ends without its seal", None)?;
                    } else if seals {
                        deferred.push(Deferred::Unsealed {
                            path: path.clone(),
                            pos,
                        });
                    }
                    last_data = Some(LastData {
                        path,
                        sequence,
                        appendable: !is_base,
                        pos,
                        records,
                    });
                }
                Ending::Torn {
                    pos,
                    dirty_end,
                    records,
                    reason,
                } => {
                    self.out.log_bytes += pos as u64;
                    if is_base {
                        self.damage(&path, pos, dirty_end - pos, reason, None)?;
                    } else {
                        deferred.push(Deferred::Torn {
                            path: path.clone(),
                            pos,
                            dirty_end,
                            reason,
                        });
                    }
                    last_data = Some(LastData {
                        path,
                        sequence,
                        appendable: !is_base,
                        pos,
                        records,
                    });
                }
            }
        }
        // What is still deferred sits past the last segment with data: the
        // traces of a crash, cleared.
        for d in deferred {
            match d {
                Deferred::Torn {
                    path, pos, dirty_end, ..
                } => {
                    let report = &mut self.out.report;
                    report.torn_tails += 1;
                    report.torn_bytes += (dirty_end - pos) as u64;
                    push_bounded(
                        &mut report.truncations,
                        Truncation {
                            path: path.clone(),
                            offset: pos as u64,
                            bytes: (dirty_end - pos) as u64,
                        },
                    );
                    self.out.fixes.push(Fix::Zero {
                        path,
                        from: pos,
                        to: dirty_end,
                    });
                }
                Deferred::Unsealed { .. } => {}
                Deferred::Unfinished { path, len, .. } => {
                    self.out.report.torn_tails += 1;
                    push_bounded(
                        &mut self.out.report.truncations,
                        Truncation {
                            path: path.clone(),
                            offset: 0,
                            bytes: len,
                        },
                    );
                    self.out.fixes.push(Fix::Remove { path });
                }
            }
        }
        // Appends continue after the last data if that segment can take
        // them. After a seal, in the segment it names (the empty one there,
        // else a new one under its name: data in a later one would read as
        // that segment lost). Else in the first empty segment, or a new one.
        let named = named_next.map(|(next, _)| next);
        let empty_at = match named {
            Some(next) => empties.iter().position(|(sequence, _)| *sequence == next),
            None => (!empties.is_empty()).then_some(0),
        };
        self.out.tail = match last_data {
            Some(d) if d.appendable => Some(Tail {
                path: d.path,
                sequence: d.sequence,
                pos: d.pos,
                records: d.records,
            }),
            _ => {
                if let Some(i) = empty_at {
                    let (sequence, path) = empties.remove(i);
                    self.out.log_bytes += hlen as u64;
                    Some(Tail {
                        path,
                        sequence,
                        pos: hlen,
                        records: 0,
                    })
                } else {
                    if let Some(next) = named {
                        // The empty segments left are removed first.
                        self.out.next_sequence = next;
                    }
                    None
                }
            }
        };
        self.out
            .fixes
            .extend(empties.into_iter().map(|(_, path)| Fix::Remove { path }));
        Ok(())
    }

    /// Replays one segment's records.
    fn scan(&mut self, path: &Path, bytes: &[u8]) -> Result<Ending> {
        let codec = self.files.codec;
        let mut pos = codec.header_len().min(bytes.len());
        // No record starts in the zeros after the last non-zero byte.
        let dirty_end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        let mut records = 0u64;
        // The last record `resync` found: the first that verifies from
        // where that search began, so from anywhere up to it too. A run of
        // damaged records whose headers verify is skipped by their extents,
        // and each would search again over the same bytes (time quadratic
        // in the run's length).
        let mut found_ahead: Option<usize> = None;
        loop {
            let (reason, extent) = match codec.decode(&bytes[pos..]) {
                Decoded::Record(
                    Record::Seal {
                        records: sealed,
                        next,
                    },
                    len,
                ) => {
                    if sealed != records {
                        let reason = format!("the seal counts {sealed} records, the segment holds {records}");
                        self.damage(path, pos, len, &reason, None)?;
                    }
                    self.out.report.records += 1;
                    self.out.report.bytes += len as u64;
                    return Ok(Ending::Sealed { end: pos + len, next });
                }
                Decoded::Record(record, len) => {
                    debug_assert!(record.id().is_some(), "only seals have no id");
                    self.out.newest_ms = self.out.newest_ms.max(logged_time_ms(&record));
                    apply(&mut self.out.sessions, record);
                    records += 1;
                    self.out.report.records += 1;
                    self.out.report.bytes += len as u64;
                    pos += len;
                    continue;
                }
                Decoded::End if bytes[pos..].iter().all(|&b| b == 0) => {
                    return Ok(Ending::Open { pos, records });
                }
                // A record header read back as zeros (a lost page, a block
                // the device returned blank) with data after it is not the end.
                Decoded::End => ("a zeroed record header with data after it", None),
                Decoded::Bad { reason, extent } => (reason, extent),
            };
            // Never look inside a record whose header verified: its extent is
            // known, and its payload is a user's bytes.
            let resume = extent.map_or(pos + 1, |len| pos + len);
            // Damage if a record follows anywhere; a torn tail if none does.
            let found = match found_ahead {
                Some(found) if resume <= found => Some(found),
                _ => resync(codec, bytes, resume, dirty_end),
            };
            found_ahead = found;
            if let Some(found) = found {
                // Resume after the record whose header verified (what
                // follows it is read as a record, and reported on its own
                // if damaged too), else at the record found.
                let next = if extent.is_some() { resume } else { found };
                let id = extent.and_then(|_| damaged_id(codec, &bytes[pos..]));
                self.damage(path, pos, next - pos, reason, id)?;
                pos = next;
                continue;
            }
            return Ok(Ending::Torn {
                pos,
                dirty_end: dirty_end.max(pos),
                records,
                reason,
            });
        }
    }
}

/// The id in a damaged record whose header verified (type known).
fn damaged_id(codec: Codec, record: &[u8]) -> Option<SessionId> {
    let Codec::Salted { .. } = codec else { return None };
    let header = super::format::RECORD_HEADER_LEN;
    let kind = *record.get(8)?;
    // The types whose payload starts with the session's id (`ROTATE`'s
    // old id, `SUBSCRIBE` and `UNSUBSCRIBE` included): every type but `SEAL`.
    if !matches!(kind, 1..=5 | 7..=9) {
        return None;
    }
    let id: [u8; 16] = record.get(header..header + 16)?.try_into().ok()?;
    Some(SessionId::from_bytes(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    /// A segment without a verified header is read whole when the disk
    /// holds it whole (a base past the append limit keeps its records
    /// past 1 GiB), and a hole past the limit is not read.
    #[test]
    fn a_headerless_segment_is_read_as_far_as_the_disk_holds_it() {
        assert_eq!(SEGMENT_SIZE_BYTES_MAX as u64, GIB);
        assert_eq!(unverified_read_len(3 * GIB, 3 * GIB + 4096), 3 * GIB);
        assert_eq!(unverified_read_len(1 << 40, 200 << 20), GIB);
        assert_eq!(unverified_read_len(1 << 40, 2 * GIB), 2 * GIB);
        assert_eq!(unverified_read_len(100 << 20, 0), 100 << 20);
    }
}
