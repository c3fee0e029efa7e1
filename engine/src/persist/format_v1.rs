//! Format 1, read once to upgrade a data directory to the current format
//! (`FORMAT.md`, "Upgrading from format 1"). Format 1 has no salt and no
//! seals: its records are `[len: u32][crc: u32][type: u8][payload]` with the
//! CRC over `len`, `type` and the payload, and its segments have one 64-byte
//! header. Nothing writes it any more.

use super::format::{Decoded, Record, TIMEOUT_NEVER_STORED};
use crate::id::SessionId;
use crate::limits::{METADATA_BYTES_MAX_LIMIT, TIMEOUT_MS_MAX, TIME_MS_MAX};

const REC_LEN_AT: usize = 0;
const REC_CRC_AT: usize = 4;
const REC_TYPE_AT: usize = 8;
/// Bytes before a format-1 payload.
pub(crate) const RECORD_HEADER_LEN: usize = 9;
const ID_LEN: usize = 16;
const PUT_FIXED_LEN: usize = ID_LEN + 8 + 8 + 4;
const PAYLOAD_MIN: usize = ID_LEN;
const PAYLOAD_MAX: usize = METADATA_BYTES_MAX_LIMIT + 64;
/// A format-1 segment's header.
pub(crate) const SEGMENT_HEADER_LEN: usize = 64;
const SEG_SHARD_AT: usize = 12;
const SEG_SHARDS_AT: usize = 16;
const SEG_FLAGS_AT: usize = 20;
const SEG_SEQUENCE_AT: usize = 24;
const SEG_CRC_AT: usize = 40;
/// Format 1's stored "never" (a `u32` timeout).
const TIMEOUT_NEVER_V1: u32 = u32::MAX;

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// `(shard, shards, flags, sequence)` of a format-1 segment header.
pub(crate) fn decode_header(bytes: &[u8]) -> Result<(u32, u32, u32, u64), &'static str> {
    if bytes.len() < SEGMENT_HEADER_LEN {
        return Err("shorter than a segment header");
    }
    if bytes[..8] != super::format::SEGMENT_MAGIC {
        return Err("bad segment magic");
    }
    if crc32c::crc32c(&bytes[..SEG_CRC_AT]) != u32_at(bytes, SEG_CRC_AT) {
        return Err("segment header checksum mismatch");
    }
    if u32_at(bytes, 8) != 1 {
        return Err("not a format-1 segment");
    }
    Ok((
        u32_at(bytes, SEG_SHARD_AT),
        u32_at(bytes, SEG_SHARDS_AT),
        u32_at(bytes, SEG_FLAGS_AT),
        u64_at(bytes, SEG_SEQUENCE_AT),
    ))
}

fn widen_timeout(stored: u32) -> u64 {
    if stored == TIMEOUT_NEVER_V1 {
        TIMEOUT_NEVER_STORED
    } else {
        u64::from(stored)
    }
}

/// Decodes a format-1 record into the `Record` it stands for. Its
/// `Bad` never carries an extent: format 1's header has no checksum of its
/// own. Never panics.
pub(crate) fn decode(bytes: &[u8]) -> Decoded<'_> {
    let bad = |reason| Decoded::Bad { reason, extent: None };
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
    let total = RECORD_HEADER_LEN + len;
    if bytes.len() < total {
        return bad("length runs past the end of the segment");
    }
    let shape_fits = match bytes[REC_TYPE_AT] {
        1 => len >= PUT_FIXED_LEN,
        2 => len >= ID_LEN + 8,
        3 => len == ID_LEN + 12,
        4 => len == ID_LEN + 8,
        5 => len == ID_LEN,
        _ => return bad("unknown record type"),
    };
    if !shape_fits {
        return bad("payload does not fit its type");
    }
    let crc = crc32c::crc32c_append(
        crc32c::crc32c(&bytes[REC_LEN_AT..REC_LEN_AT + 4]),
        &bytes[REC_TYPE_AT..total],
    );
    if crc != u32_at(bytes, REC_CRC_AT) {
        return bad("checksum mismatch");
    }
    let p = &bytes[RECORD_HEADER_LEN..total];
    let id = SessionId::from_bytes(p[..ID_LEN].try_into().expect("16 bytes"));
    let record = match bytes[REC_TYPE_AT] {
        1 => Record::Put {
            id,
            created_ms: u64_at(p, ID_LEN),
            last_access_ms: u64_at(p, ID_LEN + 8),
            timeout_ms: widen_timeout(u32_at(p, ID_LEN + 16)),
            lifetime_ms: TIMEOUT_NEVER_STORED,
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
            timeout_ms: widen_timeout(u32_at(p, ID_LEN + 8)),
            lifetime_ms: TIMEOUT_NEVER_STORED,
        },
        4 => Record::Touch {
            id,
            last_access_ms: u64_at(p, ID_LEN),
        },
        _ => Record::Delete { id },
    };
    if !in_range(&record) {
        return bad("fields out of range");
    }
    Decoded::Record(record, total)
}

/// The ranges formats 2 and 3 check (`format::decode`): times within engine
/// time (a larger one would set the access word's marks), timeouts
/// "never" or at least 1 ms (format 1's `u32` keeps them under the most).
fn in_range(record: &Record<'_>) -> bool {
    let time = |t: u64| t <= TIME_MS_MAX;
    let timeout = |t: u64| t == TIMEOUT_NEVER_STORED || (1..=TIMEOUT_MS_MAX).contains(&t);
    match *record {
        Record::Put {
            created_ms,
            last_access_ms,
            timeout_ms,
            ..
        } => time(created_ms) && time(last_access_ms) && timeout(timeout_ms),
        Record::Timeout {
            last_access_ms,
            timeout_ms,
            ..
        } => time(last_access_ms) && timeout(timeout_ms),
        Record::Update { last_access_ms, .. } | Record::Touch { last_access_ms, .. } => time(last_access_ms),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A format-1 record as the engine at 3df2e6a wrote it.
    fn v1_delete(id: [u8; 16]) -> Vec<u8> {
        let mut out = vec![16, 0, 0, 0, 0, 0, 0, 0, 5];
        out.extend_from_slice(&id);
        let crc = crc32c::crc32c_append(crc32c::crc32c(&out[..4]), &out[8..]);
        out[4..8].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// A format-1 record of type `kind` with `payload`, checksummed.
    fn v1_record(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = u32::try_from(payload.len()).unwrap().to_le_bytes().to_vec();
        out.extend_from_slice(&[0, 0, 0, 0, kind]);
        out.extend_from_slice(payload);
        let crc = crc32c::crc32c_append(crc32c::crc32c(&out[..4]), &out[8..]);
        out[4..8].copy_from_slice(&crc.to_le_bytes());
        out
    }

    fn v1_put(created: u64, last: u64, timeout: u32) -> Vec<u8> {
        let mut p = vec![7; 16];
        p.extend_from_slice(&created.to_le_bytes());
        p.extend_from_slice(&last.to_le_bytes());
        p.extend_from_slice(&timeout.to_le_bytes());
        p.extend_from_slice(b"meta");
        v1_record(1, &p)
    }

    /// Format 1 checked only its checksum (a plain crc32c anyone can
    /// compute): a time over the engine's range would set the access
    /// word's marks, a zero timeout break the stored form. Refused as
    /// formats 2 and 3 refuse them.
    #[test]
    fn format_1_fields_out_of_range_are_damage() {
        assert!(matches!(
            decode(&v1_put(1, 2, 3)),
            Decoded::Record(Record::Put { .. }, _)
        ));
        assert!(matches!(
            decode(&v1_put(1, 2, TIMEOUT_NEVER_V1)),
            Decoded::Record(..)
        ));
        let over = crate::limits::TIME_MS_MAX + 1;
        for bytes in [
            v1_put(1, (1 << 62) + 1_000, 3),
            v1_put(over, 2, 3),
            v1_put(1, 2, 0),
        ] {
            assert!(
                matches!(decode(&bytes), Decoded::Bad { .. }),
                "{:?}",
                decode(&bytes)
            );
        }
        let mut touch = vec![7; 16];
        touch.extend_from_slice(&over.to_le_bytes());
        assert!(matches!(decode(&v1_record(4, &touch)), Decoded::Bad { .. }));
        let mut update = vec![7; 16];
        update.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(decode(&v1_record(2, &update)), Decoded::Bad { .. }));
        let mut timeout = vec![7; 16];
        timeout.extend_from_slice(&5_u64.to_le_bytes());
        timeout.extend_from_slice(&0_u32.to_le_bytes());
        assert!(matches!(decode(&v1_record(3, &timeout)), Decoded::Bad { .. }));
    }

    #[test]
    fn format_1_records_decode_and_damage_is_caught() {
        let bytes = v1_delete([3; 16]);
        assert_eq!(
            decode(&bytes),
            Decoded::Record(
                Record::Delete {
                    id: SessionId::from_bytes([3; 16])
                },
                bytes.len()
            )
        );
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 4;
            assert!(!matches!(decode(&bad), Decoded::Record(..)), "flip at {at}");
        }
        assert_eq!(decode(&[0; 20]), Decoded::End);
    }
}
