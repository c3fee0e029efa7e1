//! The session engine's load generator, as a library: the `loadgen` binary
//! is a thin command line over it, and the tests drive it directly.
//!
//! - [`scenario`]: what a run does (TOML, flags); [`mix`]: operations, mixes,
//!   key distributions.
//! - [`driver`]: the client loop, open loop from intended start times (no
//!   coordinated omission) or closed loop; [`load`]: threads, populate,
//!   collection; [`hist`]: per-client `HdrHistograms` and their merging.
//! - [`backend`]: the stores behind `session_engine::SessionStore`.
//! - [`targets`]: bounds and verdicts; [`report`], [`plot`]: outputs;
//!   [`gate`]: the CI regression gate; [`sweep`]: the capacity sweep.

#![forbid(unsafe_code)]
#![warn(clippy::pedantic)]
#![allow(
    clippy::module_name_repetitions,
    clippy::missing_panics_doc,
    clippy::missing_errors_doc,
    clippy::cast_precision_loss
)]

pub mod backend;
pub mod cli;
pub mod driver;
pub mod gate;
pub mod hist;
pub mod limits;
pub mod load;
pub mod mix;
pub mod plot;
pub mod procfs;
pub mod report;
pub mod run;
pub mod scenario;
pub mod sweep;
pub mod targets;
pub mod units;
