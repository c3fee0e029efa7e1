//! Rebuilding a shard from its segments (`FORMAT.md`, "What makes a record
//! bad" and "Crash cases").

use std::path::{Path, PathBuf};

use ahash::AHashMap;

use super::format::{
    decode, put_len, Decoded, Record, SegmentHeader, FLAG_BASE, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN,
};
use super::log::Reopened;
use super::segment::Segment;
use crate::block::Metadata;
use crate::config::RecoveryMode;
use crate::error::{Error, Result};
use crate::id::SessionId;
use crate::session::TIMEOUT_NEVER;

/// A session as the log left it.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub(crate) metadata: Metadata,
    pub(crate) created_ms: u64,
    pub(crate) last_access_ms: u64,
    pub(crate) timeout_ms: u32,
}

impl Recovered {
    fn is_expired(&self, now_ms: u64) -> bool {
        self.timeout_ms != TIMEOUT_NEVER
            && self.last_access_ms.saturating_add(u64::from(self.timeout_ms)) <= now_ms
    }
}

/// What recovery found, summed over the shards.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Live sessions recovered.
    pub sessions: usize,
    /// Records replayed.
    pub records: u64,
    /// Segment files read.
    pub segments: usize,
    /// Bytes of records read.
    pub bytes: u64,
    /// Torn tails truncated (the normal trace of a crash mid-write).
    pub torn_tails: usize,
    /// Bytes of torn tails zeroed.
    pub torn_bytes: u64,
    /// Corrupt stretches skipped in `Repair` mode.
    pub corrupt_skipped: usize,
    /// Bytes in corrupt stretches skipped in `Repair` mode.
    pub corrupt_bytes: u64,
    /// Sessions found expired at recovery time and dropped.
    pub expired_dropped: usize,
    /// `(old, new)` shard counts when the layout changed.
    pub reshard: Option<(u32, u32)>,
    /// Time recovery took, in milliseconds.
    pub duration_ms: u64,
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
    }
}

/// One shard's recovered state.
pub(crate) struct ShardRecovery {
    pub(crate) sessions: AHashMap<SessionId, Recovered>,
    pub(crate) report: RecoveryReport,
    /// The segment to append to, and where; `None` if the shard has no
    /// usable segment (a new one gets `next_sequence`).
    pub(crate) tail: Option<Reopened>,
    pub(crate) next_sequence: u64,
    /// Oldest segment sequence kept.
    pub(crate) first_sequence: u64,
    /// Bytes of headers and records in the kept segments.
    pub(crate) log_bytes: u64,
}

fn corrupt(path: &Path, offset: usize, reason: &str) -> Error {
    Error::Corrupt {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason: reason.to_string(),
    }
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { context, source }
}

/// The segments of a shard directory in sequence order; removes
/// unfinished compactions (`.tmp`).
fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut segments = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(io(format!("listing {}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(io(format!("listing {}", dir.display())))?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(stem) = name.strip_suffix(".tmp") {
            if stem.parse::<u64>().is_ok() {
                std::fs::remove_file(&path).map_err(io(format!("removing {}", path.display())))?;
            }
        } else if let Some(stem) = name.strip_suffix(".seg") {
            if let Ok(sequence) = stem.parse::<u64>() {
                segments.push((sequence, path));
            }
        }
    }
    segments.sort_unstable_by_key(|s| s.0);
    Ok(segments)
}

fn read_header(path: &Path) -> Option<SegmentHeader> {
    use std::io::Read;
    let mut buf = [0u8; SEGMENT_HEADER_LEN];
    let mut file = std::fs::File::open(path).ok()?;
    file.read_exact(&mut buf).ok()?;
    SegmentHeader::decode(&buf).ok()
}

/// Where the next valid record after a bad one starts, if any.
fn resync(bytes: &[u8], from: usize) -> Option<usize> {
    (from..bytes.len().saturating_sub(RECORD_HEADER_LEN))
        .find(|&at| matches!(decode(&bytes[at..]), Decoded::Record(..)))
}

fn apply(sessions: &mut AHashMap<SessionId, Recovered>, record: Record<'_>) {
    match record {
        Record::Put {
            id,
            created_ms,
            last_access_ms,
            timeout_ms,
            metadata,
        } => {
            sessions.insert(
                id,
                Recovered {
                    metadata: Metadata::copy_from(metadata),
                    created_ms,
                    last_access_ms,
                    timeout_ms,
                },
            );
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
        } => {
            if let Some(s) = sessions.get_mut(&id) {
                s.timeout_ms = timeout_ms;
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
    }
}

/// Replays one shard directory. `append` reopens the last segment for
/// appending (after zeroing a torn tail); without it the files are only read.
#[allow(clippy::too_many_lines)]
pub(crate) fn recover_shard(
    dir: &Path,
    shard: u32,
    shards: u32,
    mode: RecoveryMode,
    now_ms: u64,
    append: bool,
) -> Result<ShardRecovery> {
    let mut segments = list_segments(dir)?;
    // The newest BASE segment replaces everything before it.
    if let Some(base) = segments
        .iter()
        .rposition(|(_, path)| read_header(path).is_some_and(|h| h.flags & FLAG_BASE != 0))
    {
        for (_, path) in segments.drain(..base) {
            std::fs::remove_file(&path).map_err(io(format!("removing superseded {}", path.display())))?;
        }
    }
    let mut report = RecoveryReport::default();
    let mut sessions: AHashMap<SessionId, Recovered> = AHashMap::new();
    let mut tail = None;
    let first_sequence = segments.first().map_or(1, |s| s.0);
    let mut log_bytes = 0u64;
    let next_sequence = segments.last().map_or(1, |s| s.0 + 1);
    let count = segments.len();
    for (n, (sequence, path)) in segments.into_iter().enumerate() {
        let last = n + 1 == count;
        let bytes = std::fs::read(&path).map_err(io(format!("reading {}", path.display())))?;
        report.segments += 1;
        let header = SegmentHeader::decode(&bytes).and_then(|h| {
            if h.shard != shard || h.shards != shards || h.sequence != sequence {
                Err("segment header names another shard, layout or sequence")
            } else {
                Ok(h)
            }
        });
        if let Err(reason) = header {
            if bytes
                .get(SEGMENT_HEADER_LEN..)
                .is_none_or(|data| data.iter().all(|&b| b == 0))
            {
                // Torn creation: the process died while creating (or
                // preparing) the segment, before any record went into it.
                report.torn_tails += 1;
                std::fs::remove_file(&path).map_err(io(format!("removing torn {}", path.display())))?;
                continue;
            }
            match mode {
                RecoveryMode::Strict => return Err(corrupt(&path, 0, reason)),
                RecoveryMode::Repair => {
                    report.corrupt_skipped += 1;
                    report.corrupt_bytes += bytes.len() as u64;
                    continue;
                }
            }
        }
        let mut pos = SEGMENT_HEADER_LEN;
        let mut torn = None;
        loop {
            let reason = match decode(&bytes[pos..]) {
                Decoded::Record(record, len) => {
                    apply(&mut sessions, record);
                    report.records += 1;
                    report.bytes += len as u64;
                    pos += len;
                    continue;
                }
                // The end of the data only if nothing but zeros follows: a
                // record header read back as zeros (a lost page, a block
                // the device returned blank) with records after it is
                // damage, not the end, or everything after it would be
                // dropped unseen and later overwritten.
                Decoded::End if bytes[pos..].iter().all(|&b| b == 0) => break,
                Decoded::End => "a zeroed record header with data after it",
                Decoded::Bad(reason) => reason,
            };
            if let Some(next) = resync(&bytes, pos + 1) {
                match mode {
                    RecoveryMode::Strict => return Err(corrupt(&path, pos, reason)),
                    RecoveryMode::Repair => {
                        report.corrupt_skipped += 1;
                        report.corrupt_bytes += (next - pos) as u64;
                        pos = next;
                    }
                }
            } else {
                // Nothing valid follows: what a crash mid-write leaves.
                let dirty_end = bytes.iter().rposition(|&b| b != 0).map_or(pos, |i| i + 1);
                report.torn_tails += 1;
                report.torn_bytes += (dirty_end - pos) as u64;
                torn = Some(dirty_end);
                break;
            }
        }
        log_bytes += pos as u64;
        if !append {
            continue;
        }
        let reopen =
            || Segment::open(path.clone(), sequence).map_err(io(format!("opening {}", path.display())));
        let mut segment = None;
        if let Some(dirty_end) = torn {
            // Cleared so that the next recovery does not meet it again. Not
            // synced: if a crash loses the zeroing, the leftover bytes are a
            // torn tail again (a prefix of one record cannot hold a valid one).
            let s = reopen()?;
            s.zero(pos, dirty_end - pos);
            segment = Some(s);
        }
        if last {
            let segment = match segment {
                Some(s) => s,
                None => reopen()?,
            };
            tail = Some(Reopened {
                current: segment,
                pos,
                first_sequence,
                log_bytes: 0,
                live_bytes: 0,
            });
        }
    }
    let before = sessions.len();
    sessions.retain(|_, s| !s.is_expired(now_ms));
    report.expired_dropped = before - sessions.len();
    report.sessions = sessions.len();
    if let Some(t) = tail.as_mut() {
        t.log_bytes = log_bytes;
    }
    let live_bytes = sessions.values().map(|s| put_len(s.metadata.len()) as u64).sum();
    if let Some(t) = tail.as_mut() {
        t.live_bytes = live_bytes;
    }
    Ok(ShardRecovery {
        sessions,
        report,
        tail,
        next_sequence,
        first_sequence,
        log_bytes,
    })
}
