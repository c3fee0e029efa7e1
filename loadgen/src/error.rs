//! The loadgen's error type: why a command could not do its job. Every
//! variant maps to exit code 2 ([`crate::cli::EXIT_USAGE`]); a run that did
//! its job and found a bound broken is not an error but a verdict.

/// Why a command could not do its job.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad flags, scenario, targets or engine configuration.
    #[error("{0}")]
    Usage(String),
    /// Something failed while running (I/O, a backend error while populating).
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}
