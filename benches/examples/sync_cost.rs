//! What one group-commit round costs the disk when several logs each have
//! a few records to make durable: `cargo run --release -p
//! session-engine-benches --example sync_cost -- [ROUNDS] [LOGS]`.
//!
//! Each of LOGS (default 8) preallocated files, as the engine's segments
//! are, gets 2,400 bytes (eight 300-byte records) per round, then the round
//! makes them durable one of four ways, the ways interleaved round by
//! round: every file's `fdatasync` at once on a thread each (what the
//! engine's flushers do, as `msync(MS_SYNC)` of the written range), the same
//! one file after another, one `syncfs` of the file system (which also
//! writes any other process's dirty data there), and, for scale, one file
//! alone. Prints the median time of each way, in µs. The files live under
//! `target/bench-data` (the disk the persist bench writes to).
#![forbid(unsafe_code)]

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Way {
    Parallel,
    Sequential,
    Syncfs,
    OneFile,
}

const WAYS: [Way; 4] = [Way::Parallel, Way::Sequential, Way::Syncfs, Way::OneFile];
const ROUND_BYTES: usize = 2_400;
const FILE_BYTES: u64 = 64 << 20;

/// Threads that each `fdatasync` their file when the barrier opens, and
/// wait at a second barrier until all are done.
struct Syncers {
    start: Arc<Barrier>,
    done: Arc<Barrier>,
}

impl Syncers {
    fn spawn(files: &[Arc<File>]) -> Self {
        let start = Arc::new(Barrier::new(files.len() + 1));
        let done = Arc::new(Barrier::new(files.len() + 1));
        for file in files {
            let (file, start, done) = (Arc::clone(file), Arc::clone(&start), Arc::clone(&done));
            std::thread::spawn(move || loop {
                start.wait();
                file.sync_data().expect("fdatasync");
                done.wait();
            });
        }
        Self { start, done }
    }

    fn round(&self) {
        self.start.wait();
        self.done.wait();
    }
}

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e6
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().map_or(300, |a| a.parse().expect("ROUNDS"));
    let logs: usize = args.next().map_or(8, |a| a.parse().expect("LOGS"));
    assert!(rounds > 0 && logs > 0, "ROUNDS and LOGS must be at least 1");
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-data");
    std::fs::create_dir_all(&base).expect("bench data directory");
    let dir = tempfile::tempdir_in(base).expect("bench data directory");
    let files: Vec<Arc<File>> = (0..logs)
        .map(|i| {
            let file = File::options()
                .read(true)
                .write(true)
                .create_new(true)
                .open(dir.path().join(format!("log{i}")))
                .expect("create file");
            rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, FILE_BYTES)
                .expect("fallocate");
            file.sync_all().expect("fsync");
            Arc::new(file)
        })
        .collect();
    let syncers = Syncers::spawn(&files);
    let record = vec![0x5A_u8; ROUND_BYTES];
    let mut at = 0_u64;
    let mut times: Vec<Vec<Duration>> = vec![Vec::with_capacity(rounds); WAYS.len()];
    for round in 0..rounds {
        for k in 0..WAYS.len() {
            let way = WAYS[(k + round) % WAYS.len()];
            if at + ROUND_BYTES as u64 > FILE_BYTES {
                at = 0;
            }
            let written = if way == Way::OneFile {
                &files[..1]
            } else {
                &files[..]
            };
            for file in written {
                file.write_all_at(&record, at).expect("write");
            }
            at += ROUND_BYTES as u64;
            let started = Instant::now();
            match way {
                Way::Parallel => syncers.round(),
                Way::Sequential => files.iter().for_each(|f| f.sync_data().expect("fdatasync")),
                Way::Syncfs => rustix::fs::syncfs(&*files[0]).expect("syncfs"),
                Way::OneFile => files[0].sync_data().expect("fdatasync"),
            }
            times[WAYS.iter().position(|w| *w == way).unwrap()].push(started.elapsed());
        }
    }
    println!("{rounds} rounds, {logs} logs of {ROUND_BYTES} bytes each per round; median µs per round:");
    println!("| way | µs |\n| --- | --- |");
    for (way, t) in WAYS.iter().zip(times) {
        let name = match way {
            Way::Parallel => format!("{logs} fdatasync at once (a thread each)"),
            Way::Sequential => format!("{logs} fdatasync one after another"),
            Way::Syncfs => "one syncfs".to_owned(),
            Way::OneFile => "one log's fdatasync alone".to_owned(),
        };
        println!("| {name} | {:.0} |", median(t));
    }
}
