//! Base segments: a shard's live sessions written as `PUT` records into one
//! file that replaces every segment before it (compaction, a layout change,
//! an upgrade, a repair).

use std::fs::File;
use std::io::{BufWriter, Seek as _, SeekFrom, Write as _};
use std::path::Path;

use super::appender::LogId;
use super::directory::{io, rename_durably};
use super::format::{
    seal_record, Record, SegmentHeader, FLAG_BASE, SEAL_RECORD_LEN, SEGMENT_HEADER_LEN, TIMEOUT_NEVER_STORED,
};
use super::segment::{create_owner_only, segment_name, tmp_name};
use crate::error::Result;
use crate::per_session::Topic;
use crate::session::Session;

/// A session as a base writes it: a `PUT`, then a `SUBSCRIBE` per topic.
pub(crate) type Based = (Session, Vec<Topic>);

/// Writes a base holding `sessions` as segment `sequence` of `log`, synced
/// and durable under its final name; its seal names `next` as the segment
/// appends go on in. Returns its length.
pub(crate) fn write_base(
    log: &LogId,
    sequence: u64,
    next: u64,
    now_ms: u64,
    sessions: impl Iterator<Item = Based>,
) -> Result<u64> {
    let tmp = log.dir.join(tmp_name(sequence));
    let len = write_base_tmp(&tmp, log, sequence, next, now_ms, sessions)?;
    rename_durably(&log.dir, &tmp, &log.dir.join(segment_name(sequence)))?;
    Ok(len)
}

/// Step one of writing a base: the `.tmp` file, sealed and synced. Its
/// header, which records the file's length, is written last.
pub(crate) fn write_base_tmp(
    tmp: &Path,
    log: &LogId,
    sequence: u64,
    next: u64,
    now_ms: u64,
    sessions: impl Iterator<Item = Based>,
) -> Result<u64> {
    let file = create_owner_only(tmp).map_err(io(format!("creating {}", tmp.display())))?;
    write_base_into(file, tmp, log, sequence, next, now_ms, sessions)
}

/// Creates `tmp` with `bytes` of real blocks allocated, for a base to be
/// written into (`write_base_into`): a compaction reserves its base's room
/// before it seals the log, so that a disk without room for the base fails
/// it before anything changes (a seal rolls the log into a new segment).
/// Removes the file if the room cannot be had.
pub(crate) fn reserve_base_tmp(tmp: &Path, bytes: u64) -> Result<File> {
    let file = create_owner_only(tmp).map_err(io(format!("creating {}", tmp.display())))?;
    if let Err(e) = rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, bytes) {
        drop(file);
        let _ = std::fs::remove_file(tmp);
        return Err(io(format!(
            "reserving {bytes} bytes for a compaction's base ({})",
            tmp.display()
        ))(e.into()));
    }
    Ok(file)
}

/// `write_base_tmp` into a file already created (and perhaps reserved
/// longer than the base: it is cut to the base's length).
#[allow(clippy::too_many_arguments)] // `write_base_tmp`'s and its file
pub(crate) fn write_base_into(
    file: File,
    tmp: &Path,
    log: &LogId,
    sequence: u64,
    next: u64,
    now_ms: u64,
    sessions: impl Iterator<Item = Based>,
) -> Result<u64> {
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut header = SegmentHeader {
        shard: log.shard,
        shards: log.shards,
        flags: FLAG_BASE,
        sequence,
        created_ms: now_ms,
        layout: log.layout,
        len: 0,
    };
    let mut len = SEGMENT_HEADER_LEN as u64;
    let mut record = Vec::with_capacity(512);
    let mut records = 0u64;
    let result = (|| {
        out.write_all(&[0; SEGMENT_HEADER_LEN])?;
        for (s, topics) in sessions {
            record.clear();
            put_record(&s).encode(log.salt, &mut record);
            for topic in &topics {
                let topic: &str = topic;
                Record::Subscribe { id: s.id(), topic }.encode(log.salt, &mut record);
            }
            out.write_all(&record)?;
            len += record.len() as u64;
            records += 1 + topics.len() as u64;
        }
        let seal = seal_record(log.salt, records, next, SEAL_RECORD_LEN);
        out.write_all(&seal)?;
        len += seal.len() as u64;
        let mut file: File = out.into_inner().map_err(std::io::IntoInnerError::into_error)?;
        // A reservation longer than the base: its tail goes.
        file.set_len(len)?;
        header.len = len;
        file.seek(SeekFrom::Start(0))?;
        file.write_all(&header.encode())?;
        file.sync_all()
    })();
    if let Err(e) = result {
        // A partial base must not sit on a disk that is likely full (it
        // would be removed at the next open only).
        let _ = std::fs::remove_file(tmp);
        return Err(io(format!("writing {}", tmp.display()))(e));
    }
    Ok(len)
}

/// The `PUT` record that recreates `s`.
pub(crate) fn put_record(s: &Session) -> Record<'_> {
    Record::Put {
        id: s.id(),
        created_ms: s.created_ms(),
        last_access_ms: s.last_access_ms(),
        timeout_ms: s.timeout().as_ms().unwrap_or(TIMEOUT_NEVER_STORED),
        lifetime_ms: s.lifetime().as_ms().unwrap_or(TIMEOUT_NEVER_STORED),
        metadata: s.metadata(),
    }
}
