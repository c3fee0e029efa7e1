//! Helpers shared by the engine's integration tests.

#![allow(dead_code)] // each test file uses its own part

use session_engine::{Config, Durability};

/// An `Always` engine on `dir` with `shards` shards and small segments.
pub fn always_config(dir: &std::path::Path, shards: usize) -> Config {
    Config::default()
        .shards(shards)
        .data_dir(dir)
        .durability(Durability::Always)
        .segment_size_bytes(256 * 1024)
}

/// Ends the test process if the test has not finished within a minute: a
/// writer stuck in the group commit must fail CI, not hang it.
pub struct Watchdog(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Watchdog {
    pub fn start() -> Self {
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = std::sync::Arc::clone(&done);
        std::thread::spawn(move || {
            for _ in 0..600 {
                std::thread::sleep(std::time::Duration::from_millis(100));
                if seen.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
            }
            eprintln!("the test did not finish within 60 s: a writer is stuck");
            std::process::exit(101);
        });
        Self(done)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
