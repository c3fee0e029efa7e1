//! The bytes of the log, as `FORMAT.md` specifies them: manifest, segment
//! header and record framing, with encoders and a decoder that never panics
//! on untrusted input.
//!
//! ```text
//! segment: [ header: 64 bytes ][ record ][ record ] ... [ zeros ]
//! record:  [ len: u32 ][ crc: u32 ][ type: u8 ][ payload: len bytes ]
//! ```

use crate::id::SessionId;
use crate::limits::METADATA_BYTES_MAX_LIMIT;

/// Format version written in manifests and segment headers.
pub(crate) const FORMAT_VERSION: u32 = 1;

// ---- Manifest: 64 bytes -------------------------------------------------
pub(crate) const MANIFEST_MAGIC: [u8; 8] = *b"SESSMANI";
const MANIFEST_MAGIC_AT: usize = 0;
const MANIFEST_FORMAT_AT: usize = MANIFEST_MAGIC_AT + 8;
const MANIFEST_SHARDS_AT: usize = MANIFEST_FORMAT_AT + 4;
const MANIFEST_LAYOUT_AT: usize = MANIFEST_SHARDS_AT + 4;
const MANIFEST_KEY_AT: usize = MANIFEST_LAYOUT_AT + 8;
const MANIFEST_CRC_AT: usize = MANIFEST_KEY_AT + 32;
pub(crate) const MANIFEST_LEN: usize = MANIFEST_CRC_AT + 4 + 4;
const _: () = assert!(MANIFEST_LEN == 64);

// ---- Segment header: 64 bytes ---------------------------------------------
pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"SESSLOG\0";
const SEG_MAGIC_AT: usize = 0;
const SEG_FORMAT_AT: usize = SEG_MAGIC_AT + 8;
const SEG_SHARD_AT: usize = SEG_FORMAT_AT + 4;
const SEG_SHARDS_AT: usize = SEG_SHARD_AT + 4;
const SEG_FLAGS_AT: usize = SEG_SHARDS_AT + 4;
const SEG_SEQUENCE_AT: usize = SEG_FLAGS_AT + 4;
const SEG_CREATED_AT: usize = SEG_SEQUENCE_AT + 8;
const SEG_CRC_AT: usize = SEG_CREATED_AT + 8;
pub(crate) const SEGMENT_HEADER_LEN: usize = 64;
const _: () = assert!(SEG_CRC_AT + 4 <= SEGMENT_HEADER_LEN);
/// Segment flag: a compaction replacing every lower sequence.
pub(crate) const FLAG_BASE: u32 = 1;

// ---- Record ---------------------------------------------------------------
const REC_LEN_AT: usize = 0;
const REC_CRC_AT: usize = REC_LEN_AT + 4;
const REC_TYPE_AT: usize = REC_CRC_AT + 4;
/// Bytes before the payload.
pub(crate) const RECORD_HEADER_LEN: usize = REC_TYPE_AT + 1;
const ID_LEN: usize = 16;
/// Fixed part of the largest payload (`PUT`): id, created, last access, timeout.
const PUT_FIXED_LEN: usize = ID_LEN + 8 + 8 + 4;
/// Smallest valid payload: an id.
pub(crate) const PAYLOAD_MIN: usize = ID_LEN;
/// Largest valid payload: a `PUT` with the largest metadata, plus slack.
pub(crate) const PAYLOAD_MAX: usize = METADATA_BYTES_MAX_LIMIT + 64;
const _: () = assert!(PUT_FIXED_LEN <= 64);

/// Bytes a `PUT` for this much metadata takes (live-byte accounting).
pub(crate) const fn put_len(metadata_len: usize) -> usize {
    RECORD_HEADER_LEN + PUT_FIXED_LEN + metadata_len
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum RecordType {
    Put = 1,
    Update = 2,
    Timeout = 3,
    Touch = 4,
    Delete = 5,
}

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
        /// Stored timeout (`u32::MAX`: never).
        timeout_ms: u32,
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
    /// New timeout (a `set_ttl`).
    Timeout {
        /// Session id.
        id: SessionId,
        /// Last activity, ms since the epoch.
        last_access_ms: u64,
        /// Stored timeout (`u32::MAX`: never).
        timeout_ms: u32,
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
}

impl Record<'_> {
    /// The session the record is about.
    #[must_use]
    pub fn id(&self) -> SessionId {
        match *self {
            Record::Put { id, .. }
            | Record::Update { id, .. }
            | Record::Timeout { id, .. }
            | Record::Touch { id, .. }
            | Record::Delete { id } => id,
        }
    }

    /// Appends the encoded record to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; RECORD_HEADER_LEN]);
        let kind = match *self {
            Record::Put {
                id,
                created_ms,
                last_access_ms,
                timeout_ms,
                metadata,
            } => {
                out.extend_from_slice(&id.to_bytes());
                out.extend_from_slice(&created_ms.to_le_bytes());
                out.extend_from_slice(&last_access_ms.to_le_bytes());
                out.extend_from_slice(&timeout_ms.to_le_bytes());
                out.extend_from_slice(metadata);
                RecordType::Put
            }
            Record::Update {
                id,
                last_access_ms,
                metadata,
            } => {
                out.extend_from_slice(&id.to_bytes());
                out.extend_from_slice(&last_access_ms.to_le_bytes());
                out.extend_from_slice(metadata);
                RecordType::Update
            }
            Record::Timeout {
                id,
                last_access_ms,
                timeout_ms,
            } => {
                out.extend_from_slice(&id.to_bytes());
                out.extend_from_slice(&last_access_ms.to_le_bytes());
                out.extend_from_slice(&timeout_ms.to_le_bytes());
                RecordType::Timeout
            }
            Record::Touch { id, last_access_ms } => {
                out.extend_from_slice(&id.to_bytes());
                out.extend_from_slice(&last_access_ms.to_le_bytes());
                RecordType::Touch
            }
            Record::Delete { id } => {
                out.extend_from_slice(&id.to_bytes());
                RecordType::Delete
            }
        };
        let payload_len = out.len() - start - RECORD_HEADER_LEN;
        debug_assert!(
            (PAYLOAD_MIN..=PAYLOAD_MAX).contains(&payload_len),
            "payload of {payload_len} bytes"
        );
        let len = u32::try_from(payload_len).expect("payload bounded by PAYLOAD_MAX");
        let record = &mut out[start..];
        record[REC_LEN_AT..REC_LEN_AT + 4].copy_from_slice(&len.to_le_bytes());
        record[REC_TYPE_AT] = kind as u8;
        let crc = record_crc(&record[REC_LEN_AT..REC_LEN_AT + 4], &record[REC_TYPE_AT..]);
        record[REC_CRC_AT..REC_CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
        debug_assert_eq!(
            decode(record),
            Decoded::Record(*self, record.len()),
            "encode/decode pair"
        );
    }
}

fn record_crc(len: &[u8], type_and_payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(len), type_and_payload)
}

/// What the bytes at a record boundary hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A valid record and its length in bytes.
    Record(Record<'a>, usize),
    /// A zero header (or only zeros left): the end of the data.
    End,
    /// Not a valid record; the reason.
    Bad(&'static str),
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

fn id_at(bytes: &[u8], at: usize) -> SessionId {
    SessionId::from_bytes(bytes[at..at + ID_LEN].try_into().expect("16 bytes"))
}

/// Decodes the record at the start of `bytes`. Never panics, whatever the
/// bytes (this is the function the fuzz target drives).
#[must_use]
pub fn decode(bytes: &[u8]) -> Decoded<'_> {
    let header = &bytes[..bytes.len().min(RECORD_HEADER_LEN)];
    if header.iter().all(|&b| b == 0) {
        return Decoded::End;
    }
    if header.len() < RECORD_HEADER_LEN {
        return Decoded::Bad("record header cut short by the end of the segment");
    }
    let len = u32_at(bytes, REC_LEN_AT) as usize;
    if !(PAYLOAD_MIN..=PAYLOAD_MAX).contains(&len) {
        return Decoded::Bad("length out of range");
    }
    let total = RECORD_HEADER_LEN + len;
    if bytes.len() < total {
        return Decoded::Bad("length runs past the end of the segment");
    }
    // The type and its payload's shape are checked before the checksum:
    // recovery looks for the next valid record at every offset after a bad
    // one, and random bytes (a torn record's metadata) pass the length
    // check often enough that checksumming each would cost seconds.
    let shape_fits = match bytes[REC_TYPE_AT] {
        1 => len >= PUT_FIXED_LEN,
        2 => len >= ID_LEN + 8,
        3 => len == ID_LEN + 12,
        4 => len == ID_LEN + 8,
        5 => len == ID_LEN,
        _ => return Decoded::Bad("unknown record type"),
    };
    if !shape_fits {
        return Decoded::Bad("payload does not fit its type");
    }
    let crc = u32_at(bytes, REC_CRC_AT);
    if record_crc(&bytes[REC_LEN_AT..REC_LEN_AT + 4], &bytes[REC_TYPE_AT..total]) != crc {
        return Decoded::Bad("checksum mismatch");
    }
    let p = &bytes[RECORD_HEADER_LEN..total];
    let id = id_at(p, 0);
    let record = match bytes[REC_TYPE_AT] {
        1 => Record::Put {
            id,
            created_ms: u64_at(p, ID_LEN),
            last_access_ms: u64_at(p, ID_LEN + 8),
            timeout_ms: u32_at(p, ID_LEN + 16),
            metadata: &p[PUT_FIXED_LEN..],
        },
        2 => Record::Update {
            id,
            last_access_ms: u64_at(p, ID_LEN),
            metadata: &p[ID_LEN + 8..],
        },
        3 => Record::Timeout {
            id,
            last_access_ms: u64_at(p, ID_LEN),
            timeout_ms: u32_at(p, ID_LEN + 8),
        },
        4 => Record::Touch {
            id,
            last_access_ms: u64_at(p, ID_LEN),
        },
        5 => Record::Delete { id },
        _ => unreachable!("type and shape checked above"),
    };
    Decoded::Record(record, total)
}

/// A segment's header fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub(crate) shard: u32,
    pub(crate) shards: u32,
    pub(crate) flags: u32,
    pub(crate) sequence: u64,
    pub(crate) created_ms: u64,
}

impl SegmentHeader {
    pub(crate) fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut h = [0u8; SEGMENT_HEADER_LEN];
        h[SEG_MAGIC_AT..SEG_MAGIC_AT + 8].copy_from_slice(&SEGMENT_MAGIC);
        h[SEG_FORMAT_AT..SEG_FORMAT_AT + 4].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        h[SEG_SHARD_AT..SEG_SHARD_AT + 4].copy_from_slice(&self.shard.to_le_bytes());
        h[SEG_SHARDS_AT..SEG_SHARDS_AT + 4].copy_from_slice(&self.shards.to_le_bytes());
        h[SEG_FLAGS_AT..SEG_FLAGS_AT + 4].copy_from_slice(&self.flags.to_le_bytes());
        h[SEG_SEQUENCE_AT..SEG_SEQUENCE_AT + 8].copy_from_slice(&self.sequence.to_le_bytes());
        h[SEG_CREATED_AT..SEG_CREATED_AT + 8].copy_from_slice(&self.created_ms.to_le_bytes());
        let crc = crc32c::crc32c(&h[..SEG_CRC_AT]);
        h[SEG_CRC_AT..SEG_CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
        h
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, &'static str> {
        if bytes.len() < SEGMENT_HEADER_LEN {
            return Err("shorter than a segment header");
        }
        if bytes[SEG_MAGIC_AT..SEG_MAGIC_AT + 8] != SEGMENT_MAGIC {
            return Err("bad segment magic");
        }
        if crc32c::crc32c(&bytes[..SEG_CRC_AT]) != u32_at(bytes, SEG_CRC_AT) {
            return Err("segment header checksum mismatch");
        }
        if u32_at(bytes, SEG_FORMAT_AT) != FORMAT_VERSION {
            return Err("unsupported segment format version");
        }
        Ok(Self {
            shard: u32_at(bytes, SEG_SHARD_AT),
            shards: u32_at(bytes, SEG_SHARDS_AT),
            flags: u32_at(bytes, SEG_FLAGS_AT),
            sequence: u64_at(bytes, SEG_SEQUENCE_AT),
            created_ms: u64_at(bytes, SEG_CREATED_AT),
        })
    }
}

/// The manifest's fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Manifest {
    pub(crate) shards: u32,
    pub(crate) layout: u64,
    pub(crate) hash_key: [u64; 4],
}

impl Manifest {
    pub(crate) fn encode(&self) -> [u8; MANIFEST_LEN] {
        let mut m = [0u8; MANIFEST_LEN];
        m[MANIFEST_MAGIC_AT..MANIFEST_MAGIC_AT + 8].copy_from_slice(&MANIFEST_MAGIC);
        m[MANIFEST_FORMAT_AT..MANIFEST_FORMAT_AT + 4].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        m[MANIFEST_SHARDS_AT..MANIFEST_SHARDS_AT + 4].copy_from_slice(&self.shards.to_le_bytes());
        m[MANIFEST_LAYOUT_AT..MANIFEST_LAYOUT_AT + 8].copy_from_slice(&self.layout.to_le_bytes());
        for (i, k) in self.hash_key.iter().enumerate() {
            let at = MANIFEST_KEY_AT + 8 * i;
            m[at..at + 8].copy_from_slice(&k.to_le_bytes());
        }
        let crc = crc32c::crc32c(&m[..MANIFEST_CRC_AT]);
        m[MANIFEST_CRC_AT..MANIFEST_CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
        m
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, &'static str> {
        if bytes.len() != MANIFEST_LEN {
            return Err("manifest has the wrong length");
        }
        if bytes[..8] != MANIFEST_MAGIC {
            return Err("bad manifest magic");
        }
        if crc32c::crc32c(&bytes[..MANIFEST_CRC_AT]) != u32_at(bytes, MANIFEST_CRC_AT) {
            return Err("manifest checksum mismatch");
        }
        if u32_at(bytes, MANIFEST_FORMAT_AT) != FORMAT_VERSION {
            return Err("unsupported manifest format version");
        }
        let mut hash_key = [0u64; 4];
        for (i, k) in hash_key.iter_mut().enumerate() {
            *k = u64_at(bytes, MANIFEST_KEY_AT + 8 * i);
        }
        Ok(Self {
            shards: u32_at(bytes, MANIFEST_SHARDS_AT),
            layout: u64_at(bytes, MANIFEST_LAYOUT_AT),
            hash_key,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
                timeout_ms: u32::MAX,
            },
            Record::Touch {
                id: id(4),
                last_access_ms: 60,
            },
            Record::Delete { id: id(5) },
        ]
    }

    #[test]
    fn every_record_type_round_trips() {
        for meta in [&b""[..], b"x", &[7u8; 1000]] {
            for record in samples(meta) {
                let mut buf = Vec::new();
                record.encode(&mut buf);
                assert_eq!(decode(&buf), Decoded::Record(record, buf.len()));
                if let Record::Put { metadata, .. } = record {
                    assert_eq!(buf.len(), put_len(metadata.len()));
                }
            }
        }
    }

    #[test]
    fn every_truncation_and_every_bit_flip_is_caught() {
        let mut buf = Vec::new();
        samples(b"metadata")[0].encode(&mut buf);
        for cut in 0..buf.len() {
            assert!(
                !matches!(decode(&buf[..cut]), Decoded::Record(..)),
                "prefix of {cut} bytes decoded"
            );
        }
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[byte] ^= 1 << bit;
                assert!(
                    !matches!(decode(&bad), Decoded::Record(..)),
                    "flip {byte}:{bit} decoded"
                );
            }
        }
    }

    #[test]
    fn zeros_are_the_end() {
        assert_eq!(decode(&[0; 64]), Decoded::End);
        assert_eq!(decode(&[0; 3]), Decoded::End);
        assert_eq!(decode(&[]), Decoded::End);
        assert!(
            matches!(decode(&[7, 0, 0]), Decoded::Bad(_)),
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
        };
        let bytes = h.encode();
        assert_eq!(SegmentHeader::decode(&bytes), Ok(h));
        let mut bad = bytes;
        bad[SEG_SEQUENCE_AT] ^= 1;
        assert!(SegmentHeader::decode(&bad).is_err());
        let m = Manifest {
            shards: 16,
            layout: 7,
            hash_key: [1, 2, 3, u64::MAX],
        };
        let bytes = m.encode();
        assert_eq!(Manifest::decode(&bytes), Ok(m));
        let mut bad = bytes;
        bad[MANIFEST_KEY_AT + 5] ^= 0x80;
        assert!(Manifest::decode(&bad).is_err());
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes);
            let _ = SegmentHeader::decode(&bytes);
            let _ = Manifest::decode(&bytes);
        }
    }
}
