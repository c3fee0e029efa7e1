//! A workspace crate's example binary, for tests that run it as a real
//! process (the axum app, the MCP server), and starting such a process.
//!
//! `cargo test` builds the examples before it runs any test, so the binary
//! is at `target/<profile>/examples/<name>`. A run limited to one test
//! target (`cargo test --test <name>`) does not build it, and a binary left
//! from an older build would test old code: [`example_binary`] checks the
//! binary against the source files cargo lists for it (cargo's own
//! freshness rule, from the dep-info file beside it) and builds it if any
//! is newer.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

/// The binary of `package`'s example `example`, in this test's target
/// directory and profile, up to date with its sources (built here if not).
///
/// # Panics
/// If the binary cannot be built, or is still stale after a build.
#[must_use]
pub fn example_binary(package: &str, example: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/<test>-<hash> -> target/<profile>/examples/<example>
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
    let bin = profile_dir
        .join("examples")
        .join(format!("{example}{}", std::env::consts::EXE_SUFFIX));
    if !is_fresh(&bin) {
        build(profile_dir, package, example);
        assert!(
            is_fresh(&bin),
            "{} is still older than its sources after a build",
            bin.display()
        );
    }
    bin
}

/// True if `bin` exists and no file its dep-info (`<bin>.d`) lists is newer.
fn is_fresh(bin: &Path) -> bool {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let Some(built) = modified(bin) else {
        return false;
    };
    let Ok(dep_info) = std::fs::read_to_string(bin.with_extension("d")) else {
        return false;
    };
    let Some((_, sources)) = dep_info.lines().next().and_then(|l| l.split_once(": ")) else {
        return false;
    };
    // Paths are separated by spaces; a space inside one is escaped.
    let sources = sources.replace("\\ ", "\0");
    sources
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(|s| PathBuf::from(s.replace('\0', " ")))
        .all(|source| modified(&source).is_some_and(|m| m <= built))
}

/// `cargo build -p <package> --example <example>` into this test's target
/// directory and profile. Cargo has released its build lock by the time
/// tests run; tests of one binary that race here wait on that lock.
fn build(profile_dir: &Path, package: &str, example: &str) {
    let target_dir = profile_dir.parent().expect("target dir");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-p", package, "--example", example, "--target-dir"])
        .arg(target_dir);
    if profile_dir.file_name().is_some_and(|p| p == "release") {
        cmd.arg("--release");
    }
    eprintln!("the example {example} is missing or older than its sources: {cmd:?}");
    let status = cmd.status().expect("run cargo");
    assert!(
        status.success(),
        "building the example {example} failed: {status}"
    );
}

/// A process started by [`spawn_listening`]: the child, the address it
/// printed, and its stdout (kept open so it never writes into a closed
/// pipe).
#[derive(Debug)]
pub struct Listening {
    /// The process.
    pub child: Child,
    /// What followed `listening on ` on its first line.
    pub address: String,
    /// Its stdout, past the first line.
    pub stdout: BufReader<ChildStdout>,
}

/// Starts `bin` with `args` (stdin closed, stderr inherited) and waits up
/// to `timeout` for its first line, `listening on <address>`.
///
/// # Panics
/// If it cannot be started, prints nothing within `timeout` (it is then
/// killed), or prints something else first.
#[must_use]
pub fn spawn_listening(bin: &Path, args: &[String], timeout: Duration) -> Listening {
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    // On a thread, so that a silent process fails the test instead of
    // hanging it (the kill below closes the pipe and ends the read).
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut line = String::new();
        let read = stdout.read_line(&mut line);
        let _ = tx.send(read.map(|_| line));
        stdout
    });
    let Ok(line) = rx.recv_timeout(timeout) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "{} printed no address within {timeout:?} (args {args:?})",
            bin.display()
        );
    };
    let line = line.expect("read the process's stdout");
    let stdout = reader.join().expect("reader thread");
    let Some(address) = line.trim().strip_prefix("listening on ") else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "{}'s first line is {line:?}, not its address (args {args:?})",
            bin.display()
        );
    };
    Listening {
        address: address.to_owned(),
        child,
        stdout,
    }
}
