//! `loadgen`: see `loadgen --help` and the README's load-generator section.

#![forbid(unsafe_code)]
#![warn(clippy::pedantic)]

use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // As the results files record it: a backend URL's password hidden.
    let command_line: Vec<String> = std::env::args().map(|a| session_engine::redact_url(&a)).collect();
    let cli = loadgen::cli::Cli::parse();
    std::process::exit(loadgen::cli::main_with(cli, command_line));
}
