//! The progress line on stderr: elapsed time, and for a load the backend's
//! ops/s and p99 of the last second, as wrk2 and memtier show them. Drawn
//! only when stderr is a terminal, and never in CI or with `--quiet`.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::report::thousands;
use crate::units::format_ns;

/// A progress line, or nothing (see the module doc).
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A progress line labelled `label`, or `None` when stderr is not a
    /// terminal, in CI, or when asked to be quiet.
    #[must_use]
    pub fn new(quiet: bool, label: &str) -> Option<Self> {
        if quiet || std::env::var_os("CI").is_some() || !std::io::stderr().is_terminal() {
            return None;
        }
        let bar = ProgressBar::with_draw_target(Some(1), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("{prefix} [{bar:24}] {pos}/{len} ms {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(label.to_owned());
        Some(Self { bar })
    }

    /// Changes the label.
    pub fn set_prefix(&self, label: String) {
        self.bar.set_prefix(label);
    }

    /// Says what is happening (populating, calibrating).
    pub fn set_message(&self, message: String) {
        self.bar.set_message(message);
    }

    /// A load of `total_ns` begins.
    pub fn start_load(&self, total_ns: u64) {
        self.bar.set_length(total_ns / 1_000_000);
        self.bar.set_position(0);
    }

    /// `elapsed_ns` into the load; `latest` is the backend's last second
    /// (ops/s, p99 ns, slices disturbed so far).
    pub fn update_load(&self, elapsed_ns: u64, ops_seen: u64, latest: Option<(f64, u64, u64)>) {
        self.bar.set_position(elapsed_ns / 1_000_000);
        let message = match latest {
            Some((ops_per_s, p99_ns, disturbed)) => format!(
                "{} ops/s  p99 {}  {disturbed} slices disturbed",
                thousands(ops_per_s),
                format_ns(p99_ns)
            ),
            None => format!("{} ops", thousands(ops_seen as f64)),
        };
        self.bar.set_message(message);
    }

    /// Clears the line.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
