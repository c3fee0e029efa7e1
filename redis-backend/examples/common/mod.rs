//! What the small Redis examples share: their flags, medians and ranges,
//! and the line naming the machine a figure was measured on.

#![allow(dead_code)] // each example uses a different part

use std::path::PathBuf;
use std::process::Command;

/// `--<count flag> N`, `--repeats N`, `--out DIR` (default `results/redis`).
pub struct Args {
    pub count: usize,
    pub repeats: usize,
    pub out: PathBuf,
}

/// Parses the flags; `count_flag` names the first (`--ops`, `--sessions`).
pub fn parse_args(count_flag: &str, count: usize, repeats: usize) -> Args {
    let mut args = Args {
        count,
        repeats,
        out: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../results/redis"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            f if f == count_flag => args.count = value.parse().unwrap_or_else(|_| panic!("{count_flag} N")),
            "--repeats" => args.repeats = value.parse().expect("--repeats N"),
            "--out" => args.out = PathBuf::from(value),
            _ => panic!("unknown flag {flag}: {count_flag}, --repeats, --out"),
        }
    }
    assert!(
        args.count > 0 && args.repeats > 0,
        "{count_flag} and --repeats must be positive"
    );
    args
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// "min–max" of `v`, with `decimals` places.
pub fn range(v: &[f64], decimals: usize) -> String {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{lo:.decimals$}–{hi:.decimals$}")
}

/// A command's standard output, trimmed (empty if it cannot run).
pub fn output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// "Date: …; machine: N cores (CPU), shared (other work ran beside it);
/// <redis-server --version>".
pub fn machine_line() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    format!(
        "Date: {}; machine: {} cores ({cpu}), shared (other work ran beside it); {}",
        output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        output("redis-server", &["--version"]),
    )
}
