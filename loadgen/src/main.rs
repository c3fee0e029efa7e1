//! `loadgen`: see `loadgen --help` and the README's load-generator section.

#![forbid(unsafe_code)]
#![warn(clippy::pedantic)]

use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let command_line: Vec<String> = std::env::args().collect();
    let cli = loadgen::cli::Cli::parse();
    std::process::exit(loadgen::cli::main_with(cli, command_line));
}
