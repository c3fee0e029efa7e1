//! Records the compiler that builds the load generator, and the flags it
//! was given (`LOADGEN_RUSTC_VERSION`): the instruction gate counts the
//! engine's code as this compiler generated it, so a baseline counted from
//! another compiler's build, or the same compiler's under other flags
//! (`RUSTFLAGS="-C target-cpu=native"` switches ahash to its AES hasher;
//! a profile override changes inlining), cannot tell a code change from a
//! codegen change. Without flags or overrides the text is `rustc -V`'s.

use std::process::Command;

/// Profile settings that cargo takes from the environment and that change
/// the code generated.
const PROFILE_OVERRIDES: [&str; 8] = [
    "CARGO_PROFILE_RELEASE_OPT_LEVEL",
    "CARGO_PROFILE_RELEASE_LTO",
    "CARGO_PROFILE_RELEASE_CODEGEN_UNITS",
    "CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS",
    "CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS",
    "CARGO_PROFILE_RELEASE_PANIC",
    "CARGO_PROFILE_RELEASE_INCREMENTAL",
    "CARGO_PROFILE_RELEASE_STRIP",
];

fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let mut version = Command::new(rustc)
        .arg("-V")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|v| v.trim().to_owned())
        .unwrap_or_default();
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if !version.is_empty() && !flags.is_empty() {
        version.push_str(&format!(" with RUSTFLAGS \"{}\"", flags.replace('\x1f', " ")));
    }
    for name in PROFILE_OVERRIDES {
        println!("cargo:rerun-if-env-changed={name}");
        if let (false, Ok(value)) = (version.is_empty(), std::env::var(name)) {
            version.push_str(&format!(" with {name}={value}"));
        }
    }
    println!("cargo:rustc-env=LOADGEN_RUSTC_VERSION={version}");
    println!("cargo:rerun-if-env-changed=RUSTC");
    println!("cargo:rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
    println!("cargo:rerun-if-changed=build.rs");
}
