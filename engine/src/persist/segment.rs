//! One segment file: preallocated, mapped shared, written through raw
//! pointers by its log's single writer and synced by whoever flushes.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use memmap2::{Advice, MmapOptions, MmapRaw};
use rustix::fs::{fallocate, renameat_with, FallocateFlags, RenameFlags, CWD};

use super::format::{SegmentHeader, SEGMENT_HEADER_LEN};
use crate::limits::{PREFAULT_AHEAD_BYTES, RELEASE_MIN_BYTES};

/// File name of segment `sequence`.
pub(crate) fn segment_name(sequence: u64) -> String {
    format!("{sequence:016}.seg")
}

/// File name of a compaction in progress that will become segment `sequence`.
pub(crate) fn tmp_name(sequence: u64) -> String {
    format!("{sequence:016}.tmp")
}

/// File name of segment `sequence` while it is being created, until its
/// header is written (recovery removes one a crash left).
pub(crate) fn new_name(sequence: u64) -> String {
    format!("{sequence:016}.new")
}

/// The size of a memory page.
fn page_size() -> usize {
    rustix::param::page_size()
}

/// Creates a file readable and writable by the owner only.
pub(crate) fn create_owner_only(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// Fsyncs a directory, making renames and creations in it durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(test)]
    SYNCED_DIRS.with(|synced| synced.borrow_mut().push(dir.to_path_buf()));
    File::open(dir)?.sync_all()
}

#[cfg(test)]
thread_local! {
    /// The directories this thread synced, for tests that check a
    /// directory entry is made durable.
    pub(crate) static SYNCED_DIRS: std::cell::RefCell<Vec<std::path::PathBuf>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

pub(crate) struct Segment {
    path: PathBuf,
    sequence: u64,
    map: MmapRaw,
    len: usize,
    /// Pages below this offset were faulted in writable (`prefault_to`).
    populated: AtomicUsize,
    /// Pages below this offset were dropped from the mapping
    /// (`release_to`).
    released: AtomicUsize,
    // Keeps the descriptor open for the mapping's lifetime (not required by
    // mmap, but it makes the file's identity explicit).
    file: File,
}

impl Segment {
    /// Creates, preallocates and maps a new segment and writes its header
    /// (whose `len` is the file's). The caller syncs the directory before
    /// relying on the file's name.
    ///
    /// The file is made under its `.new` name and renamed to `path` once
    /// its header is written and `sync_header` has made it durable (never
    /// over an existing file), so a segment file is never seen without its
    /// header, by a process or after a machine crash: a crash mid-creation
    /// leaves a `.new` file, which recovery removes. A headerless segment
    /// file would read as damage wherever the log had already rolled past
    /// it, and the log can roll past a segment still being created (a
    /// writer that outran the background thread makes the next one
    /// itself). `sync_header` gets the segment with its header written; a
    /// log syncs `0..SEGMENT_HEADER_LEN` there, whatever its durability
    /// (which also makes the preallocated length durable).
    pub(crate) fn create(
        path: &Path,
        header: &SegmentHeader,
        sync_header: impl FnOnce(&Self) -> io::Result<()>,
    ) -> io::Result<Self> {
        let len = usize::try_from(header.len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "segment larger than memory"))?;
        let creating = path.with_file_name(new_name(header.sequence));
        let file = create_owner_only(&creating)?;
        let built = (|| {
            // Real blocks, not a sparse hole: a store into the mapping can
            // then never fault for lack of space (which would be SIGBUS).
            fallocate(&file, FallocateFlags::empty(), 0, len as u64)?;
            let map = MmapOptions::new().len(len).map_raw(&file)?;
            let segment = Self {
                path: path.to_path_buf(),
                sequence: header.sequence,
                map,
                len,
                populated: AtomicUsize::new(0),
                released: AtomicUsize::new(0),
                file,
            };
            segment.prefault_to(PREFAULT_AHEAD_BYTES);
            // SAFETY: the segment is this thread's alone until it returns.
            #[allow(unsafe_code)]
            unsafe {
                segment.write(0, &header.encode());
            }
            sync_header(&segment)?;
            renameat_with(CWD, &creating, CWD, path, RenameFlags::NOREPLACE)?;
            Ok(segment)
        })();
        if built.is_err() {
            let _ = std::fs::remove_file(&creating);
        }
        built
    }

    /// Maps an existing segment for appending at `pos`: the pages below it
    /// hold what recovery read, and are neither faulted in nor released
    /// (faulting them in writable would dirty every one, and the first sync
    /// would write them all again).
    ///
    /// Its blocks are allocated again first, as `create` does: a directory
    /// copied with holes (`cp --sparse`, `rsync -S`) lost them, and a store
    /// into a hole of the mapping on a full disk is SIGBUS, where the
    /// engine promises `Error::Io` (this fails the open with it instead).
    /// Blocks already there are left as they are.
    pub(crate) fn open(path: PathBuf, sequence: u64, pos: usize) -> io::Result<Self> {
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        let len = usize::try_from(file.metadata()?.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "segment larger than memory"))?;
        if len < SEGMENT_HEADER_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "segment shorter than its header",
            ));
        }
        fallocate(&file, FallocateFlags::KEEP_SIZE, 0, len as u64)?;
        let map = MmapOptions::new().len(len).map_raw(&file)?;
        let written = pos.min(len) & !(page_size() - 1);
        Ok(Self {
            path,
            sequence,
            map,
            len,
            populated: AtomicUsize::new(written),
            released: AtomicUsize::new(written),
            file,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn sequence(&self) -> u64 {
        self.sequence
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Faults the pages up to `end` in writable, so that stores on the write
    /// path do not take a write-protect fault into the file system there.
    /// Best effort: older kernels lack `MADV_POPULATE_WRITE` and fault
    /// lazily. Called by whoever creates the segment and by the background
    /// thread, never on the write path.
    pub(crate) fn prefault_to(&self, end: usize) {
        let end = end.min(self.len);
        // Not below what was released: the writer is past those pages, and
        // faulting them in writable would dirty them again.
        let from = self
            .populated
            .load(Ordering::Relaxed)
            .max(self.released.load(Ordering::Relaxed));
        if end <= from {
            return;
        }
        if self
            .map
            .advise_range(Advice::PopulateWrite, from, end - from)
            .is_ok()
        {
            self.populated.fetch_max(end, Ordering::Relaxed);
        }
    }

    /// Drops the pages below `end` (rounded down to a page) from the
    /// mapping, once the writer is past them for good; their data stays in
    /// the page cache, dirty until written back.
    ///
    /// Writing back a page still mapped costs the kernel a walk of its
    /// mappings and a write-protect with a TLB shootdown to every core
    /// that runs this process, per page; a page no process maps is written
    /// back without either, and dropping a range costs one shootdown for
    /// the whole range. Best effort, like `prefault_to`: on error the
    /// pages stay mapped. Called by the background and flusher threads,
    /// and by a sync's leader, with no lock held; never while appending.
    pub(crate) fn release_to(&self, end: usize) {
        let end = end.min(self.len) & !(page_size() - 1);
        let from = self.released.load(Ordering::Relaxed);
        if end < from.saturating_add(RELEASE_MIN_BYTES) {
            return;
        }
        // SAFETY: `MADV_DONTNEED` on a shared file mapping keeps the data:
        // the pages' contents (dirty ones included) stay in the page cache
        // and a later access faults them back in. No Rust reference to the
        // mapped bytes exists (the segment hands out none), so nothing
        // observes the pages leaving the mapping; the range is inside it.
        #[allow(unsafe_code)]
        let released = unsafe {
            self.map
                .unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, from, end - from)
        };
        if released.is_ok() {
            self.released.fetch_max(end, Ordering::Relaxed);
        }
    }

    /// Copies `bytes` into the segment at `at`.
    ///
    /// # Safety
    /// No other thread writes into this segment meanwhile: the caller holds
    /// its log's writer mutex, or has the segment to itself (creating or
    /// recovering it). Flushers only sync and drop pages, and nothing reads
    /// through the mapping, so that leaves no other access to these bytes.
    #[allow(unsafe_code)]
    pub(crate) unsafe fn write(&self, at: usize, bytes: &[u8]) {
        assert!(
            at.checked_add(bytes.len()).is_some_and(|end| end <= self.len),
            "write of {} bytes at {at} past the end of {} ({} bytes)",
            bytes.len(),
            self.path.display(),
            self.len
        );
        // SAFETY: the mapping is `self.len` bytes long and stays mapped while
        // `self` lives; the assert keeps `at..at + bytes.len()` inside it.
        // `bytes` cannot overlap the mapping (it is an ordinary buffer of the
        // caller's). No Rust reference to the mapped bytes exists anywhere
        // (the segment hands out none), and the caller makes this the only
        // store to them (see `# Safety`), so the raw copy aliases nothing.
        #[allow(unsafe_code)]
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.map.as_mut_ptr().add(at), bytes.len());
        }
    }

    /// Asks the CPU to start loading the cache lines of the `len` bytes at
    /// `at` (as far as the segment goes): the writer's next records land
    /// there, and a store to a line that is not cached holds back the
    /// writer mutex's release until the line arrives. A prefetch reads
    /// nothing into the program and cannot fault.
    #[inline]
    pub(crate) fn prefetch(&self, at: usize, len: usize) {
        let end = at.saturating_add(len).min(self.len);
        let base = self.map.as_ptr();
        for line in (at..end).step_by(64) {
            crate::block::prefetch(base.wrapping_add(line));
        }
    }

    /// Zeroes `len` bytes at `at` and syncs them (a torn tail cleared at
    /// recovery: synced, so that a later crash cannot bring it back behind
    /// records appended after it).
    ///
    /// # Safety
    /// As for [`Segment::write`]: no other thread writes into the segment
    /// meanwhile.
    #[allow(unsafe_code)]
    pub(crate) unsafe fn zero(&self, at: usize, len: usize) -> io::Result<()> {
        const ZEROS: [u8; 4096] = [0; 4096];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(ZEROS.len());
            // SAFETY: the caller's promise (see `# Safety`).
            unsafe { self.write(at + done, &ZEROS[..n]) };
            done += n;
        }
        self.sync(at, at + len)
    }

    /// Starts writing bytes `from..to` back to the disk without waiting
    /// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`). A hint for the group
    /// commit, which syncs several logs in a row: durability still comes
    /// from `sync`. Best effort: an error here resurfaces there.
    pub(crate) fn start_writeback(&self, from: usize, to: usize) {
        if to <= from {
            return;
        }
        let (Ok(offset), Ok(len)) = (i64::try_from(from), i64::try_from(to - from)) else {
            return;
        };
        // SAFETY: `sync_file_range` reads no memory of ours; the descriptor
        // is this segment's, open for as long as `self` lives.
        #[allow(unsafe_code)]
        let _ = unsafe {
            libc::sync_file_range(
                std::os::fd::AsRawFd::as_raw_fd(&self.file),
                offset,
                len,
                libc::SYNC_FILE_RANGE_WRITE,
            )
        };
    }

    /// Makes bytes `from..to` durable (`msync(MS_SYNC)`).
    pub(crate) fn sync(&self, from: usize, to: usize) -> io::Result<()> {
        if to > from {
            self.map.flush_range(from, to - from)?;
            // Records, not just the header a new segment syncs.
            #[cfg(test)]
            if to > SEGMENT_HEADER_LEN {
                note_synced_segment(&self.path);
            }
        }
        Ok(())
    }
}

/// Makes the data of every segment in `dir` after segment `after` and
/// before segment `before` durable, found by name (`fdatasync` of each
/// file: on Linux it writes back what a shared mapping of the file dirtied,
/// as `msync` does). For what no log keeps account of: with
/// `Durability::Never`, a segment the writer rolled out of is not synced
/// by the log.
pub(crate) fn sync_segments_between(dir: &Path, after: u64, before: u64) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let sequence = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".seg"))
            .and_then(|n| n.parse::<u64>().ok());
        if sequence.is_none_or(|sequence| sequence <= after || sequence >= before) {
            continue;
        }
        let file = match File::open(&path) {
            Ok(file) => file,
            // Gone meanwhile: nothing of it to keep.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        file.sync_data()?;
        #[cfg(test)]
        note_synced_segment(&path);
    }
    Ok(())
}

/// The segment files whose records were synced, by `Segment::sync` or
/// `sync_segments_between`, for tests that check a segment was made durable (each test filters by
/// its own directory).
#[cfg(test)]
pub(crate) static SYNCED_SEGMENTS: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

#[cfg(test)]
fn note_synced_segment(path: &Path) {
    SYNCED_SEGMENTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(path.to_path_buf());
}

#[cfg(test)]
#[allow(unsafe_code)] // `Segment::write`, by a test thread that has the segment alone
mod tests {
    use super::*;

    const LEN: usize = 1 << 20;

    fn segment(dir: &Path) -> Segment {
        let header = SegmentHeader {
            shard: 0,
            shards: 1,
            flags: 0,
            sequence: 1,
            created_ms: 1,
            layout: 1,
            len: LEN as u64,
        };
        Segment::create(&dir.join(segment_name(1)), &header, |_| Ok(())).expect("create segment")
    }

    /// The resident kilobytes of this process's mapping of `path`.
    fn mapped_kib(path: &Path) -> usize {
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
        let mut lines = smaps.lines();
        while let Some(line) = lines.next() {
            if line.ends_with(path.to_str().expect("utf-8 path")) {
                let rss = lines.find(|l| l.starts_with("Rss:")).expect("Rss line");
                return rss
                    .split_whitespace()
                    .nth(1)
                    .and_then(|n| n.parse().ok())
                    .expect("Rss value");
            }
        }
        panic!("{} is not mapped", path.display());
    }

    /// Reopened after recovery, a segment faults in only the pages ahead of
    /// its writer: it faulted in (writable, so dirty) every page from the
    /// start, and the first sync wrote the whole recovered prefix again.
    #[test]
    fn a_reopened_segment_faults_in_only_what_lies_ahead() {
        let dir = tempfile::tempdir().expect("temp dir");
        let segment = segment(dir.path());
        let pos = SEGMENT_HEADER_LEN + LEN / 2;
        // SAFETY: the test's thread has the segment to itself.
        unsafe { segment.write(SEGMENT_HEADER_LEN, &vec![7u8; LEN / 2]) };
        segment.sync(0, pos).expect("sync");
        let path = segment.path().to_path_buf();
        drop(segment);
        let reopened = Segment::open(path.clone(), 1, pos).expect("reopen");
        reopened.prefault_to(pos + LEN / 4);
        let kib = mapped_kib(&path);
        assert!(
            kib <= (LEN / 4 + 8192) / 1024,
            "{kib} KiB mapped: the recovered prefix was faulted in"
        );
        // Nor does a release below the position map anything again.
        reopened.release_to(pos);
        reopened.prefault_to(pos + LEN / 4);
        assert!(mapped_kib(&path) <= kib);
    }

    #[test]
    fn released_pages_leave_the_mapping_and_keep_their_data() {
        let dir = tempfile::tempdir().expect("temp dir");
        let segment = segment(dir.path());
        let data: Vec<u8> = (0..LEN - SEGMENT_HEADER_LEN)
            .map(|i| u8::try_from(i % 251).expect("under 251"))
            .collect();
        // SAFETY: the test's thread has the segment to itself.
        unsafe { segment.write(SEGMENT_HEADER_LEN, &data) };
        let before = mapped_kib(segment.path());
        assert!(before >= LEN / 1024, "written pages are mapped: {before} KiB");

        // Less than `RELEASE_MIN_BYTES` is left mapped; a page-unaligned end
        // rounds down.
        segment.release_to(RELEASE_MIN_BYTES - 1);
        assert_eq!(mapped_kib(segment.path()), before);
        segment.release_to(LEN / 2 + 100);
        let after = mapped_kib(segment.path());
        assert_eq!(after, before - LEN / 2 / 1024, "the first half left the mapping");

        // Nothing is lost: the page cache has it before and after the sync,
        // and a write into a released page maps it again.
        let on_file = std::fs::read(segment.path()).expect("read segment");
        assert_eq!(&on_file[SEGMENT_HEADER_LEN..], &data[..]);
        // SAFETY: the test's thread has the segment to itself.
        unsafe { segment.write(LEN / 4, b"written again") };
        segment.sync(0, LEN).expect("sync");
        let on_file = std::fs::read(segment.path()).expect("read segment");
        assert_eq!(&on_file[LEN / 4..LEN / 4 + 13], b"written again");
        assert_eq!(
            &on_file[LEN / 4 + 13..],
            &data[LEN / 4 + 13 - SEGMENT_HEADER_LEN..]
        );
        assert!(mapped_kib(segment.path()) > after);
    }
}
