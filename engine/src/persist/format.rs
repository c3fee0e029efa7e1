//! The bytes of the log, as `FORMAT.md` specifies them (format 3): manifest,
//! segment header and record framing, with encoders and decoders that never
//! panic on untrusted input.
//!
//! ```text
//! segment: [ header ][ header copy ][ record ][ record ] ... [ SEAL ][ zeros ]
//! record:  [ hcrc: u32 ][ len: u32 ][ type: u8 ][ crc: u32 ][ payload: len bytes ]
//! ```
//!
//! Each of a record's two checksums starts from a secret salt of its own
//! (both derived from the MANIFEST's log key, never written next to the
//! records), so bytes a user puts in a session cannot form a record that
//! verifies: that takes guessing 64 secret bits. The header has a checksum
//! of its own, so a record whose header verifies is skipped whole when its
//! payload is damaged: recovery never looks for records inside it.
//! Format 2 (one salt, the payload's checksum going on from the header's) is
//! read here too, and format 1 (no salt, no seals) by `format_v1.rs`, for
//! the upgrade.

use siphasher::sip::SipHasher24;

use crate::id::SessionId;
use crate::limits::{METADATA_BYTES_MAX_LIMIT, TIMEOUT_MS_MAX, TIME_MS_MAX, TOPIC_LEN_MAX};

/// Format version written in manifests and segment headers.
pub(crate) const FORMAT_VERSION: u32 = 3;
/// The format before the payload's salt: read for the upgrade only.
pub(crate) const FORMAT_ONE_SALT: u32 = 2;

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

fn put_u32(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(bytes: &mut [u8], at: usize, v: u64) {
    bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

// ---- Manifest: 80 bytes (format 1: 64, without the log key) -------------
pub(crate) const MANIFEST_MAGIC: [u8; 8] = *b"SESSMANI";
const MANIFEST_MAGIC_AT: usize = 0;
const MANIFEST_FORMAT_AT: usize = MANIFEST_MAGIC_AT + 8;
const MANIFEST_SHARDS_AT: usize = MANIFEST_FORMAT_AT + 4;
const MANIFEST_LAYOUT_AT: usize = MANIFEST_SHARDS_AT + 4;
const MANIFEST_KEY_AT: usize = MANIFEST_LAYOUT_AT + 8;
const MANIFEST_LOG_KEY_AT: usize = MANIFEST_KEY_AT + 32;
const MANIFEST_CRC_AT: usize = MANIFEST_LOG_KEY_AT + LOG_KEY_LEN;
pub(crate) const MANIFEST_LEN: usize = MANIFEST_CRC_AT + 4 + 4;
const _: () = assert!(MANIFEST_LEN == 80);
/// Format 1's manifest: the hash key, then the checksum at byte 56.
const MANIFEST_V1_CRC_AT: usize = MANIFEST_KEY_AT + 32;
const MANIFEST_V1_LEN: usize = 64;
/// Bytes of the secret key the log's salts are derived from.
pub(crate) const LOG_KEY_LEN: usize = 16;

/// The manifest's fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Manifest {
    /// Format of the layout's logs: 1 or 2 (read for the upgrade only), or 3.
    pub(crate) format: u32,
    pub(crate) shards: u32,
    pub(crate) layout: u64,
    pub(crate) hash_key: [u64; 4],
    /// Zero in a format-1 manifest (whose logs have no salt).
    pub(crate) log_key: [u8; LOG_KEY_LEN],
}

impl Manifest {
    /// Encodes a manifest of the current format.
    pub(crate) fn encode(&self) -> [u8; MANIFEST_LEN] {
        debug_assert_eq!(self.format, FORMAT_VERSION, "only the current format is written");
        let mut m = [0u8; MANIFEST_LEN];
        m[MANIFEST_MAGIC_AT..MANIFEST_MAGIC_AT + 8].copy_from_slice(&MANIFEST_MAGIC);
        put_u32(&mut m, MANIFEST_FORMAT_AT, FORMAT_VERSION);
        put_u32(&mut m, MANIFEST_SHARDS_AT, self.shards);
        put_u64(&mut m, MANIFEST_LAYOUT_AT, self.layout);
        for (i, k) in self.hash_key.iter().enumerate() {
            put_u64(&mut m, MANIFEST_KEY_AT + 8 * i, *k);
        }
        m[MANIFEST_LOG_KEY_AT..MANIFEST_LOG_KEY_AT + LOG_KEY_LEN].copy_from_slice(&self.log_key);
        let crc = crc32c::crc32c(&m[..MANIFEST_CRC_AT]);
        put_u32(&mut m, MANIFEST_CRC_AT, crc);
        debug_assert_eq!(Self::decode(&m), Ok(*self), "manifest encode/decode pair");
        m
    }

    /// Decodes a manifest of format 3 or 2, or of format 1 (`log_key` zero).
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, &'static str> {
        if bytes.len() < MANIFEST_FORMAT_AT + 4 || bytes[..8] != MANIFEST_MAGIC {
            return Err("bad manifest magic");
        }
        let format = u32_at(bytes, MANIFEST_FORMAT_AT);
        let (len, crc_at) = match format {
            1 => (MANIFEST_V1_LEN, MANIFEST_V1_CRC_AT),
            FORMAT_ONE_SALT | FORMAT_VERSION => (MANIFEST_LEN, MANIFEST_CRC_AT),
            _ => return Err("unsupported manifest format version"),
        };
        if bytes.len() != len {
            return Err("manifest has the wrong length for its format");
        }
        if crc32c::crc32c(&bytes[..crc_at]) != u32_at(bytes, crc_at) {
            return Err("manifest checksum mismatch");
        }
        if bytes[crc_at + 4..].iter().any(|&b| b != 0) {
            return Err("manifest reserved bytes are not zero");
        }
        let shards = u32_at(bytes, MANIFEST_SHARDS_AT);
        if shards == 0 || !shards.is_power_of_two() || shards as usize > crate::limits::SHARDS_MAX {
            return Err("manifest shard count is not a power of two within SHARDS_MAX");
        }
        let mut hash_key = [0u64; 4];
        for (i, k) in hash_key.iter_mut().enumerate() {
            *k = u64_at(bytes, MANIFEST_KEY_AT + 8 * i);
        }
        let mut log_key = [0u8; LOG_KEY_LEN];
        if format != 1 {
            log_key.copy_from_slice(&bytes[MANIFEST_LOG_KEY_AT..MANIFEST_LOG_KEY_AT + LOG_KEY_LEN]);
        }
        Ok(Self {
            format,
            shards,
            layout: u64_at(bytes, MANIFEST_LAYOUT_AT),
            hash_key,
            log_key,
        })
    }
}

/// The salts of one shard's log in one layout (`FORMAT.md`, "The log's
/// salts"): the header's, `SipHash-2-4(log key; layout, shard)`, and the
/// payload's, `SipHash-2-4(log key; layout, shard, 1)`. Secret as the key is.
#[must_use]
pub fn log_salt(log_key: &[u8; LOG_KEY_LEN], layout: u64, shard: u32) -> LogSalt {
    LogSalt::new(
        salt_hash(log_key, layout, shard, None),
        salt_hash(log_key, layout, shard, Some(1)),
    )
}

/// The one salt of a format-2 log (read for the upgrade only).
pub(crate) fn log_salt_format_2(log_key: &[u8; LOG_KEY_LEN], layout: u64, shard: u32) -> LogSalt {
    LogSalt::format_2(salt_hash(log_key, layout, shard, None))
}

fn salt_hash(log_key: &[u8; LOG_KEY_LEN], layout: u64, shard: u32, part: Option<u8>) -> u64 {
    use std::hash::Hasher;
    let mut h = SipHasher24::new_with_key(log_key);
    h.write(&layout.to_le_bytes());
    h.write(&shard.to_le_bytes());
    if let Some(part) = part {
        h.write(&[part]);
    }
    h.finish()
}

/// What a log's record checksums start from: the CRC-32C state after each
/// salt's 8 bytes, computed once per log rather than per record.
///
/// Both are secret, and independent: a CRC with a secret start is an affine
/// function of the bytes plus a 32-bit unknown, so a record whose header
/// check someone guessed (2^-32 per try) still has a payload check they
/// must guess on its own. In format 2 the payload's went on from the
/// header's value, which is written in the record: one guess forged both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogSalt {
    header: u32,
    /// `None` in format 2: the payload's check goes on from the header's.
    payload: Option<u32>,
}

impl LogSalt {
    /// The salts of a format-3 log.
    #[must_use]
    pub fn new(header: u64, payload: u64) -> Self {
        Self {
            header: crc32c::crc32c(&header.to_le_bytes()),
            payload: Some(crc32c::crc32c(&payload.to_le_bytes())),
        }
    }

    /// The one salt of a format-2 log.
    #[must_use]
    pub fn format_2(salt: u64) -> Self {
        Self {
            header: crc32c::crc32c(&salt.to_le_bytes()),
            payload: None,
        }
    }

    /// The format whose records these salts check.
    pub(crate) fn format(self) -> u32 {
        if self.payload.is_some() {
            FORMAT_VERSION
        } else {
            FORMAT_ONE_SALT
        }
    }

    /// The header check: from the header's salt, `len` and `type`.
    fn header_check(self, len_and_type: &[u8]) -> u32 {
        crc32c::crc32c_append(self.header, len_and_type)
    }

    /// The payload check of a record whose header check is `hcrc`: from the
    /// payload's salt, `len`, `type` and the payload (format 2: from `hcrc`,
    /// over the payload).
    fn payload_check(self, hcrc: u32, len_and_type: &[u8], payload: &[u8]) -> u32 {
        match self.payload {
            Some(start) => crc32c::crc32c_append(crc32c::crc32c_append(start, len_and_type), payload),
            None => crc32c::crc32c_append(hcrc, payload),
        }
    }
}

// ---- Segment header: two copies of 64 bytes -------------------------------
pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"SESSLOG\0";
const SEG_MAGIC_AT: usize = 0;
const SEG_FORMAT_AT: usize = SEG_MAGIC_AT + 8;
const SEG_SHARD_AT: usize = SEG_FORMAT_AT + 4;
const SEG_SHARDS_AT: usize = SEG_SHARD_AT + 4;
const SEG_FLAGS_AT: usize = SEG_SHARDS_AT + 4;
const SEG_SEQUENCE_AT: usize = SEG_FLAGS_AT + 4;
const SEG_CREATED_AT: usize = SEG_SEQUENCE_AT + 8;
const SEG_LAYOUT_AT: usize = SEG_CREATED_AT + 8;
const SEG_LEN_AT: usize = SEG_LAYOUT_AT + 8;
const SEG_CRC_AT: usize = SEG_LEN_AT + 8;
/// One copy of the header.
pub(crate) const SEGMENT_HEADER_COPY_LEN: usize = 64;
const _: () = assert!(SEG_CRC_AT + 4 <= SEGMENT_HEADER_COPY_LEN);
/// Both copies: records start here.
pub(crate) const SEGMENT_HEADER_LEN: usize = 2 * SEGMENT_HEADER_COPY_LEN;
/// Segment flag: a compaction replacing every lower sequence.
pub(crate) const FLAG_BASE: u32 = 1;

/// A segment's header fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub(crate) shard: u32,
    pub(crate) shards: u32,
    pub(crate) flags: u32,
    pub(crate) sequence: u64,
    pub(crate) created_ms: u64,
    pub(crate) layout: u64,
    /// The file's length: preallocated for an appendable segment, exact for
    /// a base. A file of another length was truncated or extended.
    pub(crate) len: u64,
}

impl SegmentHeader {
    /// Both copies, as they open the file.
    pub(crate) fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut h = [0u8; SEGMENT_HEADER_LEN];
        let copy = &mut h[..SEGMENT_HEADER_COPY_LEN];
        copy[SEG_MAGIC_AT..SEG_MAGIC_AT + 8].copy_from_slice(&SEGMENT_MAGIC);
        put_u32(copy, SEG_FORMAT_AT, FORMAT_VERSION);
        put_u32(copy, SEG_SHARD_AT, self.shard);
        put_u32(copy, SEG_SHARDS_AT, self.shards);
        put_u32(copy, SEG_FLAGS_AT, self.flags);
        put_u64(copy, SEG_SEQUENCE_AT, self.sequence);
        put_u64(copy, SEG_CREATED_AT, self.created_ms);
        put_u64(copy, SEG_LAYOUT_AT, self.layout);
        put_u64(copy, SEG_LEN_AT, self.len);
        let crc = crc32c::crc32c(&copy[..SEG_CRC_AT]);
        put_u32(copy, SEG_CRC_AT, crc);
        h.copy_within(..SEGMENT_HEADER_COPY_LEN, SEGMENT_HEADER_COPY_LEN);
        debug_assert_eq!(
            Self::decode_copy(&h, FORMAT_VERSION),
            Ok(*self),
            "header encode/decode pair"
        );
        h
    }

    /// Decodes one copy (the first `SEGMENT_HEADER_COPY_LEN` bytes given)
    /// of a segment of a layout of `format` (2 or 3).
    pub(crate) fn decode_copy(bytes: &[u8], format: u32) -> Result<Self, &'static str> {
        if bytes.len() < SEGMENT_HEADER_COPY_LEN {
            return Err("shorter than a segment header");
        }
        if bytes[SEG_MAGIC_AT..SEG_MAGIC_AT + 8] != SEGMENT_MAGIC {
            return Err("bad segment magic");
        }
        if crc32c::crc32c(&bytes[..SEG_CRC_AT]) != u32_at(bytes, SEG_CRC_AT) {
            return Err("segment header checksum mismatch");
        }
        if u32_at(bytes, SEG_FORMAT_AT) != format {
            return Err("segment format version is not its layout's");
        }
        if bytes[SEG_CRC_AT + 4..SEGMENT_HEADER_COPY_LEN]
            .iter()
            .any(|&b| b != 0)
        {
            return Err("segment header reserved bytes are not zero");
        }
        Ok(Self {
            shard: u32_at(bytes, SEG_SHARD_AT),
            shards: u32_at(bytes, SEG_SHARDS_AT),
            flags: u32_at(bytes, SEG_FLAGS_AT),
            sequence: u64_at(bytes, SEG_SEQUENCE_AT),
            created_ms: u64_at(bytes, SEG_CREATED_AT),
            layout: u64_at(bytes, SEG_LAYOUT_AT),
            len: u64_at(bytes, SEG_LEN_AT),
        })
    }

    /// What both copies say: `(first, second)`.
    pub(crate) fn decode_both(
        bytes: &[u8],
        format: u32,
    ) -> (Result<Self, &'static str>, Result<Self, &'static str>) {
        let second = bytes
            .get(SEGMENT_HEADER_COPY_LEN..)
            .map_or(Err("shorter than a segment header"), |b| {
                Self::decode_copy(b, format)
            });
        (Self::decode_copy(bytes, format), second)
    }
}

// ---- Record ---------------------------------------------------------------
const REC_HCRC_AT: usize = 0;
const REC_LEN_AT: usize = REC_HCRC_AT + 4;
const REC_TYPE_AT: usize = REC_LEN_AT + 4;
const REC_CRC_AT: usize = REC_TYPE_AT + 1;
/// Bytes before the payload.
pub(crate) const RECORD_HEADER_LEN: usize = REC_CRC_AT + 4;
const ID_LEN: usize = 16;
/// Fixed part of the largest payload (`PUT`): id, created, last access,
/// timeout, lifetime.
const PUT_FIXED_LEN: usize = ID_LEN + 8 + 8 + 8 + 8;
const UPDATE_FIXED_LEN: usize = ID_LEN + 8;
const TIMEOUT_LEN: usize = ID_LEN + 8 + 8 + 8;
const TOUCH_LEN: usize = ID_LEN + 8;
const DELETE_LEN: usize = ID_LEN;
const ROTATE_LEN: usize = ID_LEN + ID_LEN + 8;
/// A `SEAL`: the records before it, then the sequence of the segment the
/// log went on in.
const SEAL_LEN: usize = 16;
/// A `SEAL` written before seals named the next segment: the count alone.
const SEAL_COUNT_ONLY_LEN: usize = 8;
/// `SUBSCRIBE` and `UNSUBSCRIBE`: the id, then the topic's UTF-8 bytes
/// (1 to `TOPIC_LEN_MAX`).
const TOPIC_FIXED_LEN: usize = ID_LEN;
const TOPIC_RECORD_MAX: usize = TOPIC_FIXED_LEN + TOPIC_LEN_MAX;
/// Smallest valid payload (a `SEAL` of the record count alone).
pub(crate) const PAYLOAD_MIN: usize = SEAL_COUNT_ONLY_LEN;
/// Largest valid payload: a `PUT` with the largest metadata.
pub(crate) const PAYLOAD_MAX: usize = PUT_FIXED_LEN + METADATA_BYTES_MAX_LIMIT;
/// Bytes a `SEAL` record takes: every segment keeps this much room at its end.
pub(crate) const SEAL_RECORD_LEN: usize = RECORD_HEADER_LEN + SEAL_LEN;
/// Bytes a `TOUCH` record takes (encoded on the stack by readers).
pub(crate) const TOUCH_RECORD_LEN: usize = RECORD_HEADER_LEN + TOUCH_LEN;
/// Bytes a `SUBSCRIBE` to a topic of this length takes (live-byte accounting).
pub(crate) const fn subscribe_len(topic_len: usize) -> usize {
    RECORD_HEADER_LEN + TOPIC_FIXED_LEN + topic_len
}
/// The stored timeout for "never expires".
pub(crate) const TIMEOUT_NEVER_STORED: u64 = u64::MAX;

/// Bytes a `PUT` for this much metadata takes (live-byte accounting).
pub(crate) const fn put_len(metadata_len: usize) -> usize {
    RECORD_HEADER_LEN + PUT_FIXED_LEN + metadata_len
}

const TYPE_PUT: u8 = 1;
const TYPE_UPDATE: u8 = 2;
const TYPE_TIMEOUT: u8 = 3;
const TYPE_TOUCH: u8 = 4;
const TYPE_DELETE: u8 = 5;
const TYPE_SEAL: u8 = 6;
const TYPE_ROTATE: u8 = 7;
const TYPE_SUBSCRIBE: u8 = 8;
const TYPE_UNSUBSCRIBE: u8 = 9;

/// A decoded record, borrowing its metadata from the segment bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record<'a> {
    /// Create or replace a whole session.
    Put {
        /// Session id.
        id: SessionId,
        /// Creation time, ms since the epoch.
        created_ms: u64,
        /// Last activity, ms since the epoch.
        last_access_ms: u64,
        /// Timeout in ms (`u64::MAX`: never).
        timeout_ms: u64,
        /// Lifetime cap in ms from creation (`u64::MAX`: none).
        lifetime_ms: u64,
        /// Metadata bytes.
        metadata: &'a [u8],
    },
    /// New metadata (an `update`).
    Update {
        /// Session id.
        id: SessionId,
        /// Last activity, ms since the epoch.
        last_access_ms: u64,
        /// Metadata bytes.
        metadata: &'a [u8],
    },
    /// New timeout and lifetime cap (`set_ttl`, `set_lifetime`).
    Timeout {
        /// Session id.
        id: SessionId,
        /// Last activity, ms since the epoch.
        last_access_ms: u64,
        /// Timeout in ms (`u64::MAX`: never).
        timeout_ms: u64,
        /// Lifetime cap in ms from creation (`u64::MAX`: none).
        lifetime_ms: u64,
    },
    /// Activity.
    Touch {
        /// Session id.
        id: SessionId,
        /// Last activity, ms since the epoch.
        last_access_ms: u64,
    },
    /// Removal.
    Delete {
        /// Session id.
        id: SessionId,
    },
    /// The session moves to a new id (`rotate`): the old id is gone, the new
    /// one holds its metadata, creation time and timeout.
    Rotate {
        /// The id it had.
        id: SessionId,
        /// The id it has now.
        new_id: SessionId,
        /// Last activity, ms since the epoch.
        last_access_ms: u64,
    },
    /// The session subscribes to a topic (`SessionState::subscribe`).
    Subscribe {
        /// Session id.
        id: SessionId,
        /// The topic: 1 to `TOPIC_LEN_MAX` bytes of UTF-8.
        topic: &'a str,
    },
    /// The session unsubscribes from a topic.
    Unsubscribe {
        /// Session id.
        id: SessionId,
        /// The topic.
        topic: &'a str,
    },
    /// The end of a segment that the log rolled past: nothing after it in the
    /// segment is data.
    Seal {
        /// Records in the segment before this one.
        records: u64,
        /// The sequence of the segment the log went on in, which recovery
        /// then expects as the next segment holding data (`None`: a seal
        /// written before seals named it).
        next: Option<u64>,
    },
}

impl Record<'_> {
    /// The session the record is about (`None` for a `SEAL`).
    #[must_use]
    pub fn id(&self) -> Option<SessionId> {
        match *self {
            Record::Put { id, .. }
            | Record::Update { id, .. }
            | Record::Timeout { id, .. }
            | Record::Touch { id, .. }
            | Record::Delete { id }
            | Record::Rotate { id, .. }
            | Record::Subscribe { id, .. }
            | Record::Unsubscribe { id, .. } => Some(id),
            Record::Seal { .. } => None,
        }
    }

    fn payload_len(&self) -> usize {
        match *self {
            Record::Put { metadata, .. } => PUT_FIXED_LEN + metadata.len(),
            Record::Update { metadata, .. } => UPDATE_FIXED_LEN + metadata.len(),
            Record::Timeout { .. } => TIMEOUT_LEN,
            Record::Touch { .. } => TOUCH_LEN,
            Record::Delete { .. } => DELETE_LEN,
            Record::Rotate { .. } => ROTATE_LEN,
            Record::Subscribe { topic, .. } | Record::Unsubscribe { topic, .. } => {
                TOPIC_FIXED_LEN + topic.len()
            }
            Record::Seal { next: Some(_), .. } => SEAL_LEN,
            Record::Seal { next: None, .. } => SEAL_COUNT_ONLY_LEN,
        }
    }

    /// Bytes the encoded record takes.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        RECORD_HEADER_LEN + self.payload_len()
    }

    /// Appends the encoded record, checksummed from `salt`, to `out`.
    pub fn encode(&self, salt: LogSalt, out: &mut Vec<u8>) {
        let start = out.len();
        out.resize(start + self.encoded_len(), 0);
        self.encode_into(salt, &mut out[start..]);
    }

    /// Encodes the record into `buf`, which is exactly `encoded_len()` long.
    pub fn encode_into(&self, salt: LogSalt, buf: &mut [u8]) {
        assert_eq!(buf.len(), self.encoded_len(), "record buffer of the wrong size");
        let p = &mut buf[RECORD_HEADER_LEN..];
        let kind = match *self {
            Record::Put {
                id,
                created_ms,
                last_access_ms,
                timeout_ms,
                lifetime_ms,
                metadata,
            } => {
                p[..ID_LEN].copy_from_slice(&id.to_bytes());
                put_u64(p, ID_LEN, created_ms);
                put_u64(p, ID_LEN + 8, last_access_ms);
                put_u64(p, ID_LEN + 16, timeout_ms);
                put_u64(p, ID_LEN + 24, lifetime_ms);
                p[PUT_FIXED_LEN..].copy_from_slice(metadata);
                TYPE_PUT
            }
            Record::Update {
                id,
                last_access_ms,
                metadata,
            } => {
                p[..ID_LEN].copy_from_slice(&id.to_bytes());
                put_u64(p, ID_LEN, last_access_ms);
                p[UPDATE_FIXED_LEN..].copy_from_slice(metadata);
                TYPE_UPDATE
            }
            Record::Timeout {
                id,
                last_access_ms,
                timeout_ms,
                lifetime_ms,
            } => {
                p[..ID_LEN].copy_from_slice(&id.to_bytes());
                put_u64(p, ID_LEN, last_access_ms);
                put_u64(p, ID_LEN + 8, timeout_ms);
                put_u64(p, ID_LEN + 16, lifetime_ms);
                TYPE_TIMEOUT
            }
            Record::Touch { id, last_access_ms } => {
                p[..ID_LEN].copy_from_slice(&id.to_bytes());
                put_u64(p, ID_LEN, last_access_ms);
                TYPE_TOUCH
            }
            Record::Delete { id } => {
                p[..ID_LEN].copy_from_slice(&id.to_bytes());
                TYPE_DELETE
            }
            Record::Rotate {
                id,
                new_id,
                last_access_ms,
            } => {
                p[..ID_LEN].copy_from_slice(&id.to_bytes());
                p[ID_LEN..2 * ID_LEN].copy_from_slice(&new_id.to_bytes());
                put_u64(p, 2 * ID_LEN, last_access_ms);
                TYPE_ROTATE
            }
            Record::Subscribe { id, topic } | Record::Unsubscribe { id, topic } => {
                p[..ID_LEN].copy_from_slice(&id.to_bytes());
                p[TOPIC_FIXED_LEN..].copy_from_slice(topic.as_bytes());
                if matches!(self, Record::Subscribe { .. }) {
                    TYPE_SUBSCRIBE
                } else {
                    TYPE_UNSUBSCRIBE
                }
            }
            Record::Seal { records, next } => {
                put_u64(p, 0, records);
                if let Some(next) = next {
                    put_u64(p, 8, next);
                }
                TYPE_SEAL
            }
        };
        let payload_len = buf.len() - RECORD_HEADER_LEN;
        debug_assert!(
            (PAYLOAD_MIN..=PAYLOAD_MAX).contains(&payload_len),
            "payload of {payload_len} bytes"
        );
        let len = u32::try_from(payload_len).expect("payload bounded by PAYLOAD_MAX");
        put_u32(buf, REC_LEN_AT, len);
        buf[REC_TYPE_AT] = kind;
        let (header, payload) = buf.split_at_mut(RECORD_HEADER_LEN);
        let hcrc = salt.header_check(&header[REC_LEN_AT..REC_CRC_AT]);
        let crc = salt.payload_check(hcrc, &header[REC_LEN_AT..REC_CRC_AT], payload);
        put_u32(header, REC_HCRC_AT, hcrc);
        put_u32(header, REC_CRC_AT, crc);
        debug_assert_eq!(
            decode(buf, salt),
            Decoded::Record(*self, buf.len()),
            "record encode/decode pair"
        );
    }
}

/// A record header's check for `len` and `kind` (tests stand in for an
/// attacker who guessed it).
pub(crate) fn header_check(salt: LogSalt, len: u32, kind: u8) -> u32 {
    let mut len_and_type = [0u8; 5];
    len_and_type[..4].copy_from_slice(&len.to_le_bytes());
    len_and_type[4] = kind;
    salt.header_check(&len_and_type)
}

/// A `SEAL` record naming the next segment, encoded on the stack (the
/// writer seals under its mutex); `room` is what the segment has left. A
/// segment an older engine appended to may keep room for a seal without
/// the next segment's sequence only: it then gets that one.
pub(crate) fn seal_record(salt: LogSalt, records: u64, next: u64, room: usize) -> SealRecord {
    let seal = Record::Seal {
        records,
        next: (room >= SEAL_RECORD_LEN).then_some(next),
    };
    let mut buf = [0u8; SEAL_RECORD_LEN];
    let len = seal.encoded_len();
    seal.encode_into(salt, &mut buf[..len]);
    SealRecord { buf, len }
}

/// An encoded `SEAL` (see [`seal_record`]).
pub(crate) struct SealRecord {
    buf: [u8; SEAL_RECORD_LEN],
    len: usize,
}

impl std::ops::Deref for SealRecord {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// A `TOUCH` record, encoded on the stack (readers log touches).
pub(crate) fn touch_record(salt: LogSalt, id: SessionId, last_access_ms: u64) -> [u8; TOUCH_RECORD_LEN] {
    let mut buf = [0u8; TOUCH_RECORD_LEN];
    Record::Touch { id, last_access_ms }.encode_into(salt, &mut buf);
    buf
}

/// What the bytes at a record boundary hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A valid record and its length in bytes.
    Record(Record<'a>, usize),
    /// A zero header (or only zeros left): the end of the data.
    End,
    /// Not a valid record.
    Bad {
        /// What is wrong.
        reason: &'static str,
        /// The record's length if its header verified (its payload is what
        /// is damaged): recovery skips it whole and never looks inside it.
        extent: Option<usize>,
    },
}

fn bad(reason: &'static str) -> Decoded<'static> {
    Decoded::Bad { reason, extent: None }
}

fn id_at(bytes: &[u8], at: usize) -> SessionId {
    SessionId::from_bytes(bytes[at..at + ID_LEN].try_into().expect("16 bytes"))
}

/// Decodes the record at the start of `bytes` for a log salted with `salt`.
/// Never panics, whatever the bytes (this is the function the fuzz target
/// drives).
///
/// The cheap checks come first: recovery tries every offset after a record
/// whose header is damaged, and the length, type and shape reject almost
/// every offset before a checksum is computed.
#[must_use]
pub fn decode(bytes: &[u8], salt: LogSalt) -> Decoded<'_> {
    let header = &bytes[..bytes.len().min(RECORD_HEADER_LEN)];
    if header.iter().all(|&b| b == 0) {
        return Decoded::End;
    }
    if header.len() < RECORD_HEADER_LEN {
        return bad("record header cut short by the end of the segment");
    }
    let len = u32_at(bytes, REC_LEN_AT) as usize;
    if !(PAYLOAD_MIN..=PAYLOAD_MAX).contains(&len) {
        return bad("length out of range");
    }
    let kind = bytes[REC_TYPE_AT];
    let shape_fits = match kind {
        TYPE_PUT => len >= PUT_FIXED_LEN,
        TYPE_UPDATE => len >= UPDATE_FIXED_LEN,
        TYPE_TIMEOUT => len == TIMEOUT_LEN,
        TYPE_TOUCH => len == TOUCH_LEN,
        TYPE_DELETE => len == DELETE_LEN,
        TYPE_SEAL => len == SEAL_LEN || len == SEAL_COUNT_ONLY_LEN,
        TYPE_ROTATE => len == ROTATE_LEN,
        TYPE_SUBSCRIBE | TYPE_UNSUBSCRIBE => (TOPIC_FIXED_LEN + 1..=TOPIC_RECORD_MAX).contains(&len),
        _ => return bad("unknown record type"),
    };
    if !shape_fits {
        return bad("payload length does not fit its type");
    }
    let hcrc = u32_at(bytes, REC_HCRC_AT);
    if salt.header_check(&bytes[REC_LEN_AT..REC_CRC_AT]) != hcrc {
        return bad("record header checksum mismatch");
    }
    let total = RECORD_HEADER_LEN + len;
    if bytes.len() < total {
        return bad("record runs past the end of the segment");
    }
    let damaged = |reason| Decoded::Bad {
        reason,
        extent: Some(total),
    };
    let payload_check = salt.payload_check(
        hcrc,
        &bytes[REC_LEN_AT..REC_CRC_AT],
        &bytes[RECORD_HEADER_LEN..total],
    );
    if payload_check != u32_at(bytes, REC_CRC_AT) {
        return damaged("payload checksum mismatch");
    }
    decode_payload(kind, &bytes[RECORD_HEADER_LEN..total], total)
}

/// The record of a verified payload `p` of type `kind` (its shape checked),
/// if its fields are in range.
fn decode_payload(kind: u8, p: &[u8], total: usize) -> Decoded<'_> {
    let damaged = |reason| Decoded::Bad {
        reason,
        extent: Some(total),
    };
    let time_ok = |at| u64_at(p, at) <= TIME_MS_MAX;
    let timeout_ok = |at| {
        let t = u64_at(p, at);
        t == TIMEOUT_NEVER_STORED || (1..=TIMEOUT_MS_MAX).contains(&t)
    };
    let record = match kind {
        TYPE_PUT => {
            if !(time_ok(ID_LEN) && time_ok(ID_LEN + 8) && timeout_ok(ID_LEN + 16) && timeout_ok(ID_LEN + 24))
            {
                return damaged("PUT fields out of range");
            }
            Record::Put {
                id: id_at(p, 0),
                created_ms: u64_at(p, ID_LEN),
                last_access_ms: u64_at(p, ID_LEN + 8),
                timeout_ms: u64_at(p, ID_LEN + 16),
                lifetime_ms: u64_at(p, ID_LEN + 24),
                metadata: &p[PUT_FIXED_LEN..],
            }
        }
        TYPE_UPDATE => {
            if !time_ok(ID_LEN) {
                return damaged("UPDATE time out of range");
            }
            Record::Update {
                id: id_at(p, 0),
                last_access_ms: u64_at(p, ID_LEN),
                metadata: &p[UPDATE_FIXED_LEN..],
            }
        }
        TYPE_TIMEOUT => {
            if !(time_ok(ID_LEN) && timeout_ok(ID_LEN + 8) && timeout_ok(ID_LEN + 16)) {
                return damaged("TIMEOUT fields out of range");
            }
            Record::Timeout {
                id: id_at(p, 0),
                last_access_ms: u64_at(p, ID_LEN),
                timeout_ms: u64_at(p, ID_LEN + 8),
                lifetime_ms: u64_at(p, ID_LEN + 16),
            }
        }
        TYPE_TOUCH => {
            if !time_ok(ID_LEN) {
                return damaged("TOUCH time out of range");
            }
            Record::Touch {
                id: id_at(p, 0),
                last_access_ms: u64_at(p, ID_LEN),
            }
        }
        TYPE_DELETE => Record::Delete { id: id_at(p, 0) },
        TYPE_ROTATE => {
            if !time_ok(2 * ID_LEN) {
                return damaged("ROTATE time out of range");
            }
            Record::Rotate {
                id: id_at(p, 0),
                new_id: id_at(p, ID_LEN),
                last_access_ms: u64_at(p, 2 * ID_LEN),
            }
        }
        TYPE_SUBSCRIBE | TYPE_UNSUBSCRIBE => {
            let Ok(topic) = std::str::from_utf8(&p[TOPIC_FIXED_LEN..]) else {
                return damaged("topic is not UTF-8");
            };
            let id = id_at(p, 0);
            if kind == TYPE_SUBSCRIBE {
                Record::Subscribe { id, topic }
            } else {
                Record::Unsubscribe { id, topic }
            }
        }
        _ => Record::Seal {
            records: u64_at(p, 0),
            next: (p.len() == SEAL_LEN).then(|| u64_at(p, 8)),
        },
    };
    Decoded::Record(record, total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HEADER_SALT: u64 = 0x0123_4567_89AB_CDEF;
    const PAYLOAD_SALT: u64 = 0x0F1E_2D3C_4B5A_6978;

    fn salt() -> LogSalt {
        LogSalt::new(HEADER_SALT, PAYLOAD_SALT)
    }

    fn id(n: u8) -> SessionId {
        SessionId::from_bytes([n; 16])
    }

    fn samples(meta: &[u8]) -> Vec<Record<'_>> {
        vec![
            Record::Put {
                id: id(1),
                created_ms: 10,
                last_access_ms: 20,
                timeout_ms: 30,
                lifetime_ms: 3_000,
                metadata: meta,
            },
            Record::Update {
                id: id(2),
                last_access_ms: 40,
                metadata: meta,
            },
            Record::Timeout {
                id: id(3),
                last_access_ms: 50,
                timeout_ms: TIMEOUT_NEVER_STORED,
                lifetime_ms: TIMEOUT_NEVER_STORED,
            },
            Record::Touch {
                id: id(4),
                last_access_ms: 60,
            },
            Record::Delete { id: id(5) },
            Record::Rotate {
                id: id(6),
                new_id: id(7),
                last_access_ms: 70,
            },
            Record::Subscribe {
                id: id(6),
                topic: "file:///a/b.txt",
            },
            Record::Unsubscribe {
                id: id(6),
                topic: "t",
            },
            Record::Seal {
                records: 7,
                next: Some(12),
            },
            Record::Seal {
                records: 7,
                next: None,
            },
        ]
    }

    #[test]
    fn every_record_type_round_trips() {
        for meta in [&b""[..], b"x", &[7u8; 1000]] {
            for record in samples(meta) {
                let mut buf = Vec::new();
                record.encode(salt(), &mut buf);
                assert_eq!(decode(&buf, salt()), Decoded::Record(record, buf.len()));
                assert_eq!(buf.len(), record.encoded_len());
                if let Record::Put { metadata, .. } = record {
                    assert_eq!(buf.len(), put_len(metadata.len()));
                }
            }
        }
        assert_eq!(seal_record(salt(), 3, 4, SEAL_RECORD_LEN).len(), SEAL_RECORD_LEN);
        let short = seal_record(salt(), 3, 4, SEAL_RECORD_LEN - 1);
        assert_eq!(
            decode(&short, salt()),
            Decoded::Record(
                Record::Seal {
                    records: 3,
                    next: None
                },
                short.len()
            )
        );
        assert_eq!(touch_record(salt(), id(1), 5).len(), TOUCH_RECORD_LEN);
    }

    #[test]
    fn topic_records_catch_every_bit_flip_and_truncation() {
        for record in [
            Record::Subscribe {
                id: id(9),
                topic: "resource://x",
            },
            Record::Unsubscribe {
                id: id(9),
                topic: "resource://x",
            },
        ] {
            let mut buf = Vec::new();
            record.encode(salt(), &mut buf);
            assert_eq!(buf.len(), subscribe_len("resource://x".len()));
            for cut in 0..buf.len() {
                assert!(!matches!(decode(&buf[..cut], salt()), Decoded::Record(..)));
            }
            for byte in 0..buf.len() {
                for bit in 0..8 {
                    let mut bad = buf.clone();
                    bad[byte] ^= 1 << bit;
                    assert!(
                        !matches!(decode(&bad, salt()), Decoded::Record(..)),
                        "flip {byte}:{bit} of {record:?} decoded"
                    );
                }
            }
        }
        // A topic longer than the bound is not a record of that type.
        let long = "x".repeat(TOPIC_LEN_MAX + 1);
        let mut buf = vec![0u8; RECORD_HEADER_LEN + ID_LEN + long.len()];
        buf[RECORD_HEADER_LEN + ID_LEN..].copy_from_slice(long.as_bytes());
        put_u32(&mut buf, REC_LEN_AT, u32::try_from(ID_LEN + long.len()).unwrap());
        buf[REC_TYPE_AT] = TYPE_SUBSCRIBE;
        assert!(matches!(decode(&buf, salt()), Decoded::Bad { extent: None, .. }));
    }

    #[test]
    fn a_record_never_verifies_under_another_salt() {
        for record in samples(b"metadata") {
            let mut buf = Vec::new();
            record.encode(salt(), &mut buf);
            for other in [0, 1, HEADER_SALT ^ 1, HEADER_SALT ^ (1 << 63), u64::MAX] {
                for other in [LogSalt::new(other, PAYLOAD_SALT), LogSalt::format_2(other)] {
                    assert!(
                        matches!(decode(&buf, other), Decoded::Bad { extent: None, .. }),
                        "{record:?} verified under salt {other:?}"
                    );
                }
            }
            // The header's salt alone: the header verifies, the payload not.
            for other in [
                LogSalt::new(HEADER_SALT, PAYLOAD_SALT ^ 1),
                LogSalt::format_2(HEADER_SALT),
            ] {
                assert!(
                    matches!(decode(&buf, other), Decoded::Bad { extent: Some(_), .. }),
                    "{record:?} verified under salt {other:?}"
                );
            }
        }
    }

    /// Format 3's payload check has a secret of its own: a record whose
    /// header check is known (guessed) but whose payload check is computed
    /// from it, as format 2 did, does not verify. Format 2 accepted it.
    #[test]
    fn a_known_header_check_does_not_give_the_payload_check() {
        for record in samples(b"metadata") {
            for (salt, forged_verifies) in [(salt(), false), (LogSalt::format_2(HEADER_SALT), true)] {
                let mut buf = Vec::new();
                record.encode(salt, &mut buf);
                let crc = crc32c::crc32c_append(u32_at(&buf, REC_HCRC_AT), &buf[RECORD_HEADER_LEN..]);
                put_u32(&mut buf, REC_CRC_AT, crc);
                assert_eq!(
                    matches!(decode(&buf, salt), Decoded::Record(..)),
                    forged_verifies,
                    "{record:?} under {salt:?}"
                );
            }
        }
    }

    #[test]
    fn every_truncation_and_every_bit_flip_is_caught() {
        let mut buf = Vec::new();
        samples(b"metadata")[0].encode(salt(), &mut buf);
        for cut in 0..buf.len() {
            assert!(
                !matches!(decode(&buf[..cut], salt()), Decoded::Record(..)),
                "prefix of {cut} bytes decoded"
            );
        }
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[byte] ^= 1 << bit;
                match decode(&bad, salt()) {
                    Decoded::Record(..) => panic!("flip {byte}:{bit} decoded"),
                    // A verified header means the damage is in the payload,
                    // and the extent it reports is the record's own.
                    Decoded::Bad { extent: Some(n), .. } => {
                        assert!(byte >= REC_CRC_AT, "flip {byte}:{bit} in the header verified");
                        assert_eq!(n, buf.len());
                    }
                    _ => {}
                }
            }
        }
    }

    #[test]
    fn out_of_range_fields_are_damage() {
        let put = |created_ms, timeout_ms| Record::Put {
            id: id(1),
            created_ms,
            last_access_ms: 1,
            timeout_ms,
            lifetime_ms: TIMEOUT_NEVER_STORED,
            metadata: b"",
        };
        for (created, timeout) in [(TIME_MS_MAX + 1, 5), (1, 0), (1, TIMEOUT_MS_MAX + 1)] {
            // Encoded without the pairing assertion (these are not records
            // the engine writes): build by hand from a good one.
            let mut buf = Vec::new();
            put(1, 5).encode(salt(), &mut buf);
            put_u64(&mut buf, RECORD_HEADER_LEN + ID_LEN, created);
            put_u64(&mut buf, RECORD_HEADER_LEN + ID_LEN + 16, timeout);
            let (header, payload) = buf.split_at_mut(RECORD_HEADER_LEN);
            let crc = salt().payload_check(0, &header[REC_LEN_AT..REC_CRC_AT], payload);
            put_u32(&mut buf, REC_CRC_AT, crc);
            assert!(
                matches!(decode(&buf, salt()), Decoded::Bad { extent: Some(_), .. }),
                "created {created} timeout {timeout}"
            );
        }
    }

    #[test]
    fn zeros_are_the_end() {
        assert_eq!(decode(&[0; 64], salt()), Decoded::End);
        assert_eq!(decode(&[0; 3], salt()), Decoded::End);
        assert_eq!(decode(&[], salt()), Decoded::End);
        assert!(
            matches!(decode(&[7, 0, 0], salt()), Decoded::Bad { .. }),
            "a cut header is not the end"
        );
    }

    #[test]
    fn headers_round_trip_and_reject_damage() {
        let h = SegmentHeader {
            shard: 3,
            shards: 8,
            flags: FLAG_BASE,
            sequence: 42,
            created_ms: 1_700_000_000_000,
            layout: 2,
            len: 1 << 20,
        };
        let bytes = h.encode();
        assert_eq!(SegmentHeader::decode_both(&bytes, FORMAT_VERSION), (Ok(h), Ok(h)));
        let (first, second) = SegmentHeader::decode_both(&bytes, FORMAT_ONE_SALT);
        assert!(
            first.is_err() && second.is_err(),
            "a format-3 header is no format-2 layout's"
        );
        for at in 0..SEGMENT_HEADER_LEN {
            let mut bad = bytes;
            bad[at] ^= 0x10;
            let (first, second) = SegmentHeader::decode_both(&bad, FORMAT_VERSION);
            assert!(first.is_err() != second.is_err(), "flip at {at}: one copy breaks");
            assert_eq!(first.or(second), Ok(h), "flip at {at}: the other copy holds");
        }
        let m = Manifest {
            format: FORMAT_VERSION,
            shards: 16,
            layout: 7,
            hash_key: [1, 2, 3, u64::MAX],
            log_key: [9; LOG_KEY_LEN],
        };
        let bytes = m.encode();
        assert_eq!(Manifest::decode(&bytes), Ok(m));
        for at in 0..MANIFEST_LEN {
            let mut bad = bytes;
            bad[at] ^= 0x80;
            assert!(Manifest::decode(&bad).is_err(), "manifest flip at {at}");
        }
        assert!(Manifest::decode(&bytes[..64]).is_err(), "cut short");
    }

    #[test]
    fn salts_differ_by_key_layout_and_shard() {
        let key = [7u8; LOG_KEY_LEN];
        let a = log_salt(&key, 1, 0);
        assert_ne!(a.header, a.payload.unwrap(), "two salts");
        assert_eq!(
            log_salt_format_2(&key, 1, 0).header,
            a.header,
            "format 2's is the header's"
        );
        assert_ne!(a, log_salt(&key, 2, 0));
        assert_ne!(a, log_salt(&key, 1, 1));
        assert_ne!(a, log_salt(&[8u8; LOG_KEY_LEN], 1, 0));
        assert_eq!(a, log_salt(&key, 1, 0), "stable");
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200), salt in any::<u64>()) {
            let _ = decode(&bytes, LogSalt::new(salt, !salt));
            let _ = decode(&bytes, LogSalt::format_2(salt));
            let _ = SegmentHeader::decode_both(&bytes, FORMAT_VERSION);
            let _ = Manifest::decode(&bytes);
        }
    }
}
