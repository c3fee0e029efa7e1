//! The time mark: the newest engine time a run reached, kept in the data
//! directory's `CLOCK` file (`FORMAT.md`, "CLOCK").
//!
//! Recovery judges expiry at no earlier time than the newest time the logs
//! hold, so a wall clock that stepped back between two runs (a VM restored,
//! an NTP step at boot) does not bring back what the last run saw expire.
//! But a session that expires by the clock writes nothing: a run that only
//! saw time pass left no record of it. The mark closes that gap. The
//! sweeper thread writes it about once a second while the time moves
//! ([`limits::TIME_MARK_INTERVAL_MS`](crate::limits::TIME_MARK_INTERVAL_MS)),
//! and a clean close writes it last; it is synced unless the durability is
//! `Never`. So a later run starts its clock no earlier than about a second
//! before the time the last one reached (its last mark), whatever its wall
//! clock says.
//!
//! Two 16-byte slots, written in turn, so that a torn write leaves the
//! other slot whole: the open takes the newest slot that verifies, and
//! writes over the older one first. A mark
//! that does not verify only loses the floor it would have raised (as
//! before the mark existed); it is never an error, since no session is in
//! it.

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::Path;

use parking_lot::Mutex;

use super::directory::{io, open_kept};
use super::segment::sync_dir;
use crate::error::Result;
use crate::limits::TIME_MS_MAX;

/// The file's name in the data directory.
pub(crate) const TIME_MARK_FILE: &str = "CLOCK";
/// A slot's magic.
const MAGIC: [u8; 4] = *b"SECK";
/// A slot: magic, time in ms, CRC-32C of the 12 bytes before it.
const SLOT_LEN: usize = 16;
const SLOTS: usize = 2;

fn encode(time_ms: u64) -> [u8; SLOT_LEN] {
    let mut slot = [0u8; SLOT_LEN];
    slot[..4].copy_from_slice(&MAGIC);
    slot[4..12].copy_from_slice(&time_ms.to_le_bytes());
    let crc = crc32c::crc32c(&slot[..12]);
    slot[12..].copy_from_slice(&crc.to_le_bytes());
    slot
}

/// A slot's time, if the slot verifies: its magic, its CRC, and a time
/// below the engine's last millisecond (a log record's time past it is
/// damage too; a mark at it is no time a run reached, and would pin the
/// clock there).
fn decode(slot: &[u8]) -> Option<u64> {
    let slot: &[u8; SLOT_LEN] = slot.try_into().ok()?;
    let crc = u32::from_le_bytes(slot[12..].try_into().ok()?);
    let time = u64::from_le_bytes(slot[4..12].try_into().ok()?);
    (slot[..4] == MAGIC && crc32c::crc32c(&slot[..12]) == crc && time < TIME_MS_MAX).then_some(time)
}

/// The open mark file.
pub(crate) struct TimeMark {
    file: File,
    sync: bool,
    /// The slot to write next, and the time written last.
    state: Mutex<(usize, u64)>,
}

impl TimeMark {
    /// Opens (or creates) the directory's mark and reads the newest time
    /// it holds (0 when none verifies). `sync`: sync each write.
    ///
    /// # Errors
    /// [`Error::Io`](crate::Error::Io) if the file cannot be opened, created
    /// or read.
    pub(crate) fn open(dir: &Path, sync: bool) -> Result<(Self, u64)> {
        let path = dir.join(TIME_MARK_FILE);
        let created = !path.exists();
        let file = open_kept(&path)?;
        if created && sync {
            // The new name must survive a crash, or the floor goes with it
            // (the data directory is locked: no one else creates it).
            sync_dir(dir).map_err(io(format!("syncing {}", dir.display())))?;
        }
        let mut bytes = [0u8; SLOTS * SLOT_LEN];
        let mut read = 0;
        while read < bytes.len() {
            match file.read_at(&mut bytes[read..], read as u64) {
                Ok(0) => break,
                Ok(n) => read += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io(format!("reading {}", path.display()))(e)),
            }
        }
        let slots: Vec<u64> = bytes.chunks(SLOT_LEN).map(|s| decode(s).unwrap_or(0)).collect();
        let newest_ms = slots.iter().copied().max().unwrap_or(0);
        // The next write goes over the older slot, keeping the newest.
        let next = usize::from(slots[1] < slots[0]);
        let mark = Self {
            file,
            sync,
            state: Mutex::new((next, newest_ms)),
        };
        Ok((mark, newest_ms))
    }

    /// Records that engine time reached `now_ms`; nothing when it has not
    /// moved since the last mark. Writes the slot not written last, so a
    /// torn write leaves the other one whole.
    ///
    /// # Errors
    /// [`Error::Io`](crate::Error::Io) if the write or its sync fails (the
    /// last mark that was written stays).
    pub(crate) fn mark(&self, now_ms: u64) -> Result<()> {
        let mut state = self.state.lock();
        let (slot, last) = *state;
        if now_ms <= last {
            return Ok(());
        }
        let context = || format!("writing the time mark {TIME_MARK_FILE}");
        self.file
            .write_all_at(&encode(now_ms), (slot * SLOT_LEN) as u64)
            .map_err(io(context()))?;
        if self.sync {
            self.file.sync_data().map_err(io(context()))?;
        }
        *state = ((slot + 1) % SLOTS, now_ms);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The newest time a verified slot of `bytes` holds (0: none).
    fn newest(bytes: &[u8]) -> u64 {
        bytes
            .chunks(SLOT_LEN)
            .take(SLOTS)
            .filter_map(decode)
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn the_newest_verified_slot_counts_and_damage_only_loses_a_floor() {
        let (a, b) = (encode(1_000), encode(2_000));
        let both = [a, b].concat();
        assert_eq!(newest(&both), 2_000);
        assert_eq!(newest(&[b, a].concat()), 2_000, "in either slot");
        let mut torn = both.clone();
        torn[SLOT_LEN + 5] ^= 1;
        assert_eq!(newest(&torn), 1_000, "a torn slot leaves the other");
        assert_eq!(newest(&[0u8; 32]), 0);
        assert_eq!(newest(&both[..20]), 1_000, "a short file");
        assert_eq!(newest(&[]), 0);
        let mut magic = a;
        magic[0] = b'X';
        assert_eq!(newest(&magic), 0);
        // A slot that verifies but holds a time past the engine's range.
        assert_eq!(newest(&[encode(TIME_MS_MAX + 1), a].concat()), 1_000);
        assert_eq!(newest(&encode(u64::MAX)), 0);
        assert_eq!(
            newest(&encode(TIME_MS_MAX)),
            0,
            "the last millisecond is no time a run reached"
        );
        assert_eq!(newest(&encode(TIME_MS_MAX - 1)), TIME_MS_MAX - 1);
    }

    fn read(dir: &Path) -> u64 {
        TimeMark::open(dir, false).unwrap().1
    }

    #[test]
    fn marks_alternate_slots_and_only_move_forward() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()), 0, "no file");
        let (mark, _) = TimeMark::open(dir.path(), false).unwrap();
        mark.mark(10).unwrap();
        mark.mark(20).unwrap();
        mark.mark(15).unwrap();
        let bytes = std::fs::read(dir.path().join(TIME_MARK_FILE)).unwrap();
        assert_eq!(bytes.len(), SLOTS * SLOT_LEN);
        assert_eq!((decode(&bytes[..16]), decode(&bytes[16..])), (Some(10), Some(20)));
        mark.mark(30).unwrap();
        let bytes = std::fs::read(dir.path().join(TIME_MARK_FILE)).unwrap();
        assert_eq!(decode(&bytes[..16]), Some(30), "over the older slot");
        assert_eq!(read(dir.path()), 30);
        let (reopened, newest) = TimeMark::open(dir.path(), false).unwrap();
        assert_eq!(newest, 30);
        reopened.mark(25).unwrap();
        assert_eq!(read(dir.path()), 30, "never back");
        reopened.mark(40).unwrap();
        let bytes = std::fs::read(dir.path().join(TIME_MARK_FILE)).unwrap();
        assert_eq!(
            (decode(&bytes[..16]), decode(&bytes[16..])),
            (Some(30), Some(40)),
            "a reopened mark writes over the older slot first"
        );
    }
}
