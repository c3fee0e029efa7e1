//! Running the real binary.

use std::path::Path;
use std::process::{Command, Output};

/// Runs `loadgen` with `args`; never shows a progress bar.
pub fn loadgen(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .env("CI", "1")
        .output()
        .expect("running loadgen")
}

/// Exit code, stdout and stderr as text.
pub fn outcome(out: &Output) -> (i32, String, String) {
    (
        out.status.code().expect("exited, not killed"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A targets file that any run meets: bounds of a minute.
pub fn lenient_targets(dir: &Path) -> String {
    let path = dir.join("lenient.toml");
    std::fs::write(
        &path,
        "name = \"lenient\"\n[ops.get]\np50 = \"60s\"\np99 = \"60s\"\n[ops.create]\np99 = \"60s\"\n",
    )
    .unwrap();
    path.to_string_lossy().into_owned()
}

/// The tiny scenario at a rate a debug build on a busy machine keeps.
pub const TINY: [&str; 6] = ["--scenario", "tiny", "--rate", "2000", "--quiet", "--seed"];
