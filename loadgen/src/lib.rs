//! The session engine's load generator, as a library: the `loadgen` binary
//! is a thin command line over it, and the tests drive it directly.
//!
//! - [`scenario`]: what a run does (TOML, flags); [`mix`]: operations, mixes,
//!   key distributions.
//! - [`run`]: the `loadgen run` orchestration (open the backend, populate,
//!   load, judge, write); [`populate`]: the live sessions;
//!   [`workers`]: one load phase's threads and the collection of their
//!   histograms; [`client`]: what one client does, operation after
//!   operation; [`schedule`]: when each operation is intended to start (open
//!   loop, no coordinated omission); [`clock`]: waiting for it;
//!   [`hist`]: per-client `HdrHistograms` and their merging.
//! - [`backend`]: the stores behind `session_engine::SessionStore`.
//! - [`targets`]: bounds and verdicts; [`report`], [`plot`]: outputs;
//!   [`gate`]: the CI regression gate and its baseline policy; [`sweep`]:
//!   the capacity sweep; [`table`]: text tables.
//! - [`limits`]: every bound, with why; [`error`]: why a command could not
//!   do its job; [`interrupt`]: Ctrl-C during a run against Redis.

#![forbid(unsafe_code)]
#![warn(clippy::pedantic)]
#![allow(
    clippy::module_name_repetitions,
    clippy::missing_panics_doc,
    clippy::missing_errors_doc,
    clippy::cast_precision_loss
)]

pub mod backend;
pub mod callgrind;
pub mod cli;
pub mod client;
pub mod clock;
pub mod collect;
pub mod compare;
pub mod cost;
pub mod error;
pub mod gate;
pub mod hist;
pub mod interrupt;
pub mod limits;
pub mod mix;
pub mod oploop;
pub mod output;
pub mod peer;
pub mod plot;
pub mod populate;
pub mod procfs;
pub mod progress;
pub mod report;
pub mod run;
pub mod scenario;
pub mod schedule;
pub mod slices;
pub mod stall;
pub mod sweep;
pub mod table;
pub mod targets;
pub mod units;
pub mod workers;
