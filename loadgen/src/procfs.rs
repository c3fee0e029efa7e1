//! What the run learns about itself and the machine from `/proc` (Linux);
//! elsewhere these return `None` and the report says so.

use std::path::Path;
use std::process::Command;

use serde::Serialize;

/// Resident set size of this process, in bytes (`VmRSS`).
#[must_use]
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    kib_field(&status, "VmRSS:").map(|kib| kib * 1024)
}

fn kib_field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    line[name.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// CPU time the calling thread has run, in nanoseconds, exact to the
/// nanosecond now (`CLOCK_THREAD_CPUTIME_ID`; `schedstat`'s figure only
/// moves at scheduler ticks). `Option` for the callers that fall back to
/// wall time elsewhere.
#[must_use]
pub fn thread_cpu_ns() -> Option<u64> {
    timespec_ns(rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime))
}

fn timespec_ns(t: rustix::time::Timespec) -> Option<u64> {
    let secs = u64::try_from(t.tv_sec).ok()?;
    let nanos = u64::try_from(t.tv_nsec).ok()?;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

/// Time the calling thread has spent runnable but waiting for a CPU, in
/// nanoseconds (`schedstat`'s second field): how long other work held it
/// off its core.
#[must_use]
pub fn thread_runqueue_wait_ns() -> Option<u64> {
    schedstat_field("/proc/thread-self/schedstat", 1)
}

fn schedstat_ns(path: impl AsRef<Path>) -> Option<u64> {
    schedstat_field(path, 0)
}

fn schedstat_field(path: impl AsRef<Path>, field: usize) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.split_whitespace().nth(field)?.parse().ok()
}

/// Steal time of all CPUs so far, in nanoseconds (`/proc/stat`, 10 ms
/// resolution): time the hypervisor ran something else on our virtual CPUs.
#[must_use]
pub fn steal_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu = stat.lines().find(|l| l.starts_with("cpu "))?;
    // cpu user nice system idle iowait irq softirq steal ...
    let ticks: u64 = cpu.split_whitespace().nth(8)?.parse().ok()?;
    Some(ticks * 10_000_000)
}

/// CPU time of the whole process so far, in nanoseconds, including threads
/// that have exited (`CLOCK_PROCESS_CPUTIME_ID`).
#[must_use]
pub fn process_cpu_ns() -> Option<u64> {
    timespec_ns(rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime))
}

/// CPU nanoseconds of the thread of this process named `name`, if there is one.
#[must_use]
pub fn named_thread_cpu_ns(name: &str) -> Option<u64> {
    let tasks = std::fs::read_dir("/proc/self/task").ok()?;
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() == name {
            return schedstat_ns(task.path().join("schedstat"));
        }
    }
    None
}

/// The machine, as the report records it.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct Machine {
    /// Host name.
    pub hostname: Option<String>,
    /// CPU model name.
    pub cpu_model: Option<String>,
    /// Cores available to this process.
    pub cores: usize,
    /// Total memory, bytes.
    pub memory_bytes: Option<u64>,
    /// Kernel.
    pub os: String,
}

impl Machine {
    /// Reads what it can.
    #[must_use]
    pub fn detect() -> Self {
        let read = |p: &str| std::fs::read_to_string(p).ok().map(|s| s.trim().to_owned());
        let cpu_model = read("/proc/cpuinfo").and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        });
        let memory_bytes = read("/proc/meminfo")
            .and_then(|m| kib_field(&m, "MemTotal:"))
            .map(|k| k * 1024);
        let kernel = read("/proc/sys/kernel/osrelease").unwrap_or_default();
        Self {
            hostname: read("/proc/sys/kernel/hostname"),
            cpu_model,
            cores: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            memory_bytes,
            os: format!("{} {kernel}", std::env::consts::OS).trim().to_owned(),
        }
    }
}

/// The git commit of the working tree, and whether it has local changes.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct GitInfo {
    /// `HEAD`, if this is a git checkout.
    pub commit: Option<String>,
    /// True if tracked files outside `results/` differ from `HEAD` (the
    /// runs themselves rewrite files under `results/`, which says nothing
    /// about the code measured).
    pub dirty: Option<bool>,
}

impl GitInfo {
    /// The commit's first 12 characters, or `unknown commit` (a document
    /// read from a file may hold anything there: cut at a character, never
    /// inside one).
    #[must_use]
    pub fn short(&self) -> &str {
        self.commit.as_deref().map_or("unknown commit", |c| {
            c.char_indices().nth(12).map_or(c, |(end, _)| &c[..end])
        })
    }

    /// Asks `git` about the checkout the process runs in (absent or
    /// failing: `None`s).
    #[must_use]
    pub fn detect() -> Self {
        Self::detect_in(Path::new("."))
    }

    /// Asks `git` about the checkout at `dir`.
    #[must_use]
    pub fn detect_in(dir: &Path) -> Self {
        let run = |args: &[&str]| {
            Command::new("git")
                .arg("-C")
                .arg(dir)
                .args(args)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        };
        let commit = run(&["rev-parse", "HEAD"]);
        let dirty = commit
            .as_ref()
            .and_then(|_| {
                run(&[
                    "status",
                    "--porcelain",
                    "--untracked-files=no",
                    "--",
                    ":(top)",
                    ":(top,exclude)results",
                ])
            })
            .map(|s| !s.is_empty());
        Self { commit, dirty }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_commit_is_cut_at_a_character() {
        let git = |c: &str| GitInfo {
            commit: Some(c.to_owned()),
            dirty: None,
        };
        assert_eq!(git("8f0d9067213b4c9322a0").short(), "8f0d9067213b");
        assert_eq!(git("abc").short(), "abc");
        // Byte 12 falls inside the sixth "é".
        assert_eq!(git("aéééééééééééééé").short(), "aééééééééééé");
        let unknown = GitInfo {
            commit: None,
            dirty: None,
        };
        assert_eq!(unknown.short(), "unknown commit");
    }

    #[test]
    fn a_checkout_is_dirty_for_code_changes_not_for_rewritten_results() {
        let dir = tempfile::tempdir().unwrap();
        let git = |args: &[&str]| {
            let out = Command::new("git").arg("-C").arg(dir.path()).args(args).output();
            out.is_ok_and(|o| o.status.success())
        };
        if !git(&["init", "-q"]) {
            return; // no git here: nothing to check
        }
        std::fs::create_dir(dir.path().join("results")).unwrap();
        std::fs::write(dir.path().join("results/run.json"), "1").unwrap();
        std::fs::write(dir.path().join("code.rs"), "1").unwrap();
        assert!(git(&["add", "."]));
        assert!(git(&[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-qm",
            "t"
        ]));
        assert_eq!(GitInfo::detect_in(dir.path()).dirty, Some(false));
        std::fs::write(dir.path().join("results/run.json"), "2").unwrap();
        assert_eq!(
            GitInfo::detect_in(dir.path()).dirty,
            Some(false),
            "a rewritten result is not a code change"
        );
        std::fs::write(dir.path().join("code.rs"), "2").unwrap();
        assert_eq!(GitInfo::detect_in(dir.path()).dirty, Some(true));
    }

    #[test]
    fn proc_readings_are_plausible_on_linux() {
        if !Path::new("/proc/self/status").exists() {
            return;
        }
        assert!(rss_bytes().unwrap() > 1024 * 1024);
        let before = thread_cpu_ns().unwrap();
        let mut x = 0u64;
        for i in 0..100_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(
            thread_cpu_ns().unwrap() > before,
            "the thread's CPU clock moves with its work"
        );
        assert!(process_cpu_ns().is_some());
        assert!(thread_runqueue_wait_ns().is_some());
        assert!(steal_ns().is_some());
        assert!(Machine::detect().cores >= 1);
    }

    #[test]
    fn kib_fields_parse() {
        assert_eq!(kib_field("VmRSS:\t  1234 kB\n", "VmRSS:"), Some(1234));
        assert_eq!(kib_field("Other: 1 kB", "VmRSS:"), None);
    }
}
