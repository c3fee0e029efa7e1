//! The deterministic gate's measurement: instructions per operation,
//! counted by valgrind's callgrind inside the loops of [`crate::oploop`]
//! only. Instruction counts do not depend on what else the machine does
//! (`BENCHMARKING.md`); they move with the code, and, by an instruction or
//! two, with the engine's per-process hash seed (probe lengths).
//!
//! `loadgen gate --instructions` runs itself under
//! `valgrind --tool=callgrind` (one `--toggle-collect` per counted loop,
//! by its whole name) with the hidden
//! subcommand `loadgen op-loops`, which inserts the same sessions into the
//! engine and the peer and runs each counted loop once; then it reads each
//! loop's inclusive count from `callgrind_annotate --inclusive=yes`. The
//! counted process's allocator never purges on a timer, and the
//! environment passes it no allocator or valgrind options (see
//! `counted_command`).
//! `scripts/ensure-valgrind.sh` installs valgrind.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::limits::GATE_SESSIONS_MAX;
use crate::oploop::{self, Subject, KINDS, STATE_KINDS};
use crate::peer::PeerStore;

/// What the instruction gate counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountPlan {
    /// Live sessions in each store.
    pub sessions: usize,
    /// Metadata bytes of each.
    pub metadata_bytes: usize,
    /// Operations per loop.
    pub ops: usize,
    /// Draws the ids and the keys.
    pub seed: u64,
    /// The engine's shards ([`crate::limits::GATE_SHARDS`]; absent from a
    /// baseline written before plans recorded it, which was measured with
    /// that many).
    #[serde(default = "oploop::gate_shards")]
    pub shards: usize,
}

impl Default for CountPlan {
    /// 100K sessions of 256 B like the wall-clock gate; 20K operations a
    /// loop, which averages the probe lengths over a fifth of the table.
    /// Under callgrind most of the time goes to inserting the sessions.
    fn default() -> Self {
        Self {
            sessions: 100_000,
            metadata_bytes: 256,
            ops: 20_000,
            seed: 0x5EED_CAFE,
            shards: oploop::gate_shards(),
        }
    }
}

impl CountPlan {
    /// Checks that the plan can be measured: sessions and operations in
    /// `1..=`[`GATE_SESSIONS_MAX`] (none would divide by zero or draw keys
    /// from nothing), metadata the gates' engine accepts.
    ///
    /// # Errors
    /// A message naming the first field out of its range.
    pub fn check(&self) -> Result<(), String> {
        oploop::check_within("plan.sessions", self.sessions, 1, GATE_SESSIONS_MAX)?;
        oploop::check_within("plan.ops", self.ops, 1, GATE_SESSIONS_MAX)?;
        oploop::check_within(
            "plan.metadata_bytes",
            self.metadata_bytes,
            1,
            oploop::METADATA_BYTES_MAX,
        )
    }
}

/// Instructions per operation, per kind, for each store.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    /// The engine's.
    pub engine: BTreeMap<String, f64>,
    /// The peer's.
    pub peer: BTreeMap<String, f64>,
}

/// The hidden `op-loops` subcommand: runs every counted loop once.
///
/// # Errors
/// [`Error`] if a store refuses an operation.
pub fn run_loops(plan: &CountPlan) -> Result<(), Error> {
    plan.check().map_err(Error::Usage)?;
    let (engine, clock) = oploop::open_engine(plan.sessions + plan.ops, plan.shards)?;
    let peer = PeerStore::default();
    let mut e = Subject::populate(&engine, plan.sessions, plan.metadata_bytes, plan.seed)
        .map_err(|e| Error::Failed(e.into()))?
        .with_clock(clock);
    let mut p = Subject::populate(&peer, plan.sessions, plan.metadata_bytes, plan.seed)
        .map_err(|e| Error::Failed(e.into()))?;
    let keys = oploop::keys(plan.ops, plan.sessions, plan.seed ^ 0x4B45_5953);
    let metadata = vec![0xCD; plan.metadata_bytes];
    for op in KINDS {
        let done = (
            oploop::run_engine(op, &mut e, &keys, &metadata),
            oploop::run_peer(op, &mut p, &keys, &metadata),
        );
        if done != (plan.ops as u64, plan.ops as u64) {
            return Err(Error::Failed(anyhow::anyhow!(
                "{op}: {done:?} of {} operations succeeded (engine, peer)",
                plan.ops
            )));
        }
    }
    let mut handles = Vec::with_capacity(plan.ops);
    oploop::warm_state(&e, &keys);
    for kind in STATE_KINDS {
        let done = oploop::run_engine_state(kind, &e, &keys, &mut handles);
        if done != plan.ops as u64 {
            return Err(Error::Failed(anyhow::anyhow!(
                "{kind}: {done} of {} calls succeeded on the engine",
                plan.ops
            )));
        }
    }
    Ok(())
}

/// Counts the loops' instructions under callgrind.
///
/// # Errors
/// [`Error::Usage`] if valgrind is missing; [`Error::Failed`] if it fails or
/// its output lacks a loop.
pub fn measure(plan: &CountPlan) -> Result<Counts, Error> {
    plan.check().map_err(Error::Usage)?;
    let exe = std::env::current_exe().map_err(|e| Error::Failed(e.into()))?;
    let dir = tempfile_dir()?;
    let out = dir.join("callgrind.out");
    let status = counted_command(&exe, &out, plan, std::env::vars_os())
        .output()
        .map_err(|e| {
            Error::Usage(format!(
                "cannot run valgrind ({e}): install it with `bash scripts/ensure-valgrind.sh`"
            ))
        })?;
    if !status.status.success() {
        return Err(Error::Failed(anyhow::anyhow!(
            "valgrind failed: {}",
            String::from_utf8_lossy(&status.stderr)
        )));
    }
    let annotated = Command::new("callgrind_annotate")
        .args(["--inclusive=yes", "--threshold=100"])
        .arg(&out)
        .output();
    let _ = std::fs::remove_dir_all(&dir);
    let annotated = annotated.map_err(|e| {
        Error::Usage(format!(
            "cannot run callgrind_annotate ({e}); it comes with valgrind"
        ))
    })?;
    if !annotated.status.success() {
        return Err(Error::Failed(anyhow::anyhow!(
            "callgrind_annotate failed ({}): {}",
            annotated.status,
            String::from_utf8_lossy(&annotated.stderr).trim()
        )));
    }
    let totals = parse_annotate(&String::from_utf8_lossy(&annotated.stdout));
    counts_of(&totals, plan.ops)
}

/// mimalloc's option (v3, as `libmimalloc-sys` builds it): milliseconds
/// before freed memory is purged, `-1` never.
const MIMALLOC_PURGE_DELAY: &str = "MIMALLOC_PURGE_DELAY";

/// Variables the counted child does not inherit: valgrind's options, and
/// those that change which `memcpy`/`memcmp` glibc runs (its tunables, a
/// preloaded library) or when symbols bind.
const NOT_INHERITED: [&str; 4] = ["VALGRIND_OPTS", "GLIBC_TUNABLES", "LD_PRELOAD", "LD_BIND_NOW"];

/// The valgrind command that counts `plan`'s loops in `exe`, writing to
/// `out`; `inherited` is the environment it would inherit.
///
/// The counted process allocates with mimalloc, whose purge of freed memory
/// runs on a timer ([`MIMALLOC_PURGE_DELAY`]): under valgrind's slowdown
/// how much of that work falls inside a counted loop would depend on the
/// machine's speed. The child purges never (`-1`), and inherits no other
/// mimalloc option (mimalloc reads them case-insensitively) nor any of
/// [`NOT_INHERITED`]; valgrind reads its options from this command line
/// only (no `VALGRIND_OPTS`, no `.valgrindrc`): nothing in the environment
/// changes what is counted.
fn counted_command(
    exe: &Path,
    out: &Path,
    plan: &CountPlan,
    inherited: impl Iterator<Item = (OsString, OsString)>,
) -> Command {
    let mut command = Command::new("valgrind");
    for (name, _) in inherited {
        let upper = name.to_string_lossy().to_ascii_uppercase();
        if upper.starts_with("MIMALLOC_") || NOT_INHERITED.contains(&upper.as_str()) {
            command.env_remove(&name);
        }
    }
    command.env(MIMALLOC_PURGE_DELAY, "-1");
    command
        .args([
            "--tool=callgrind",
            "--command-line-only=yes",
            &format!("--callgrind-out-file={}", out.display()),
        ])
        // Each loop by its whole name: a pattern such as `*counted_*` also
        // matches a closure inside a loop (`counted_engine_cancel_timer::
        // {{closure}}`) that the compiler stops inlining, and callgrind
        // flips collection on entering and leaving every function that
        // matches, so the closure's work (the call the loop counts) would
        // go uncounted.
        .args(
            counted_names()
                .iter()
                .map(|name| format!("--toggle-collect=*::oploop::{name}")),
        )
        .arg(exe)
        .args([
            "op-loops",
            "--sessions",
            &plan.sessions.to_string(),
            "--metadata-bytes",
            &plan.metadata_bytes.to_string(),
            "--ops",
            &plan.ops.to_string(),
            "--seed",
            &plan.seed.to_string(),
            "--shards",
            &plan.shards.to_string(),
        ]);
    command
}

/// Each counted loop's inclusive instruction count, by function name
/// (`counted_engine_get`, ...), from `callgrind_annotate --inclusive=yes`.
#[must_use]
pub fn parse_annotate(text: &str) -> BTreeMap<String, u64> {
    let mut totals = BTreeMap::new();
    for line in text.lines() {
        let Some(at) = line.find("counted_") else { continue };
        let name: String = line[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let number: String = line
            .trim_start()
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == ',')
            .filter(char::is_ascii_digit)
            .collect();
        if let Ok(n) = number.parse::<u64>() {
            let total = totals.entry(name).or_insert(0);
            *total = (*total).max(n);
        }
    }
    totals
}

/// The counted loops' function names: each store's loop of each kind,
/// then the engine's state loops.
fn counted_names() -> Vec<String> {
    let mut names: Vec<String> = ["engine", "peer"]
        .iter()
        .flat_map(|store| {
            KINDS
                .iter()
                .map(move |op| format!("counted_{store}_{}", op.name()))
        })
        .collect();
    names.extend(STATE_KINDS.iter().map(|kind| format!("counted_engine_{kind}")));
    names
}

fn counts_of(totals: &BTreeMap<String, u64>, ops: usize) -> Result<Counts, Error> {
    let mut counts = Counts::default();
    for (store, into) in [("engine", &mut counts.engine), ("peer", &mut counts.peer)] {
        for op in KINDS {
            let name = format!("counted_{store}_{}", op.name());
            let total = totals.get(&name).ok_or_else(|| {
                Error::Failed(anyhow::anyhow!(
                    "callgrind counted no {name} (was loadgen built with its symbols?)"
                ))
            })?;
            into.insert(op.name().to_owned(), *total as f64 / ops as f64);
        }
    }
    for kind in STATE_KINDS {
        let name = format!("counted_engine_{kind}");
        let total = totals.get(&name).ok_or_else(|| {
            Error::Failed(anyhow::anyhow!(
                "callgrind counted no {name} (was loadgen built with its symbols?)"
            ))
        })?;
        counts.engine.insert(kind.to_owned(), *total as f64 / ops as f64);
    }
    Ok(counts)
}

fn tempfile_dir() -> Result<std::path::PathBuf, Error> {
    let dir = std::env::temp_dir().join(format!("loadgen-callgrind-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::Failed(e.into()))?;
    Ok(dir)
}

/// The version valgrind reports (`valgrind-3.19.0`), if it runs.
#[must_use]
pub fn valgrind_version() -> Option<String> {
    let out = Command::new("valgrind").arg("--version").output().ok()?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_owned()).filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The counted process's allocator must not purge freed memory on a
    /// timer (under valgrind's slowdown, how much of that work lands in a
    /// counted loop would depend on the machine's speed), and no inherited
    /// mimalloc option (read case-insensitively) or valgrind option may
    /// change what is counted.
    #[test]
    fn the_counted_child_runs_mimalloc_without_timed_purges_and_nothing_inherited() {
        let inherited = [
            ("MIMALLOC_PURGE_DELAY", "10"),
            ("mimalloc_verbose", "1"),
            ("MIMALLOC_ARENA_EAGER_COMMIT", "0"),
            ("VALGRIND_OPTS", "--instr-atstart=no"),
            ("GLIBC_TUNABLES", "glibc.cpu.hwcaps=-AVX2_Usable"),
            ("LD_PRELOAD", "/x/libfast-memcpy.so"),
            ("LD_BIND_NOW", "1"),
            ("PATH", "/usr/bin"),
            ("MY_MIMALLOC_NOTES", "kept"),
        ]
        .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let command = counted_command(
            Path::new("/x/loadgen"),
            Path::new("/tmp/out"),
            &CountPlan::default(),
            inherited.into_iter(),
        );
        let envs: BTreeMap<String, Option<String>> = command
            .get_envs()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.map(|v| v.to_string_lossy().into_owned()),
                )
            })
            .collect();
        let expected: BTreeMap<String, Option<String>> = [
            ("MIMALLOC_PURGE_DELAY", Some("-1")),
            ("mimalloc_verbose", None),
            ("MIMALLOC_ARENA_EAGER_COMMIT", None),
            ("VALGRIND_OPTS", None),
            ("GLIBC_TUNABLES", None),
            ("LD_PRELOAD", None),
            ("LD_BIND_NOW", None),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.map(str::to_owned)))
        .collect();
        assert_eq!(envs, expected, "PATH and the rest are inherited untouched");
        let args: Vec<String> = command
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(
            args.iter().any(|a| a == "--command-line-only=yes"),
            "no .valgrindrc read: {args:?}"
        );
        // Collection toggles on each counted loop by its whole name: a
        // closure inside a loop must not toggle it off again.
        let toggles: Vec<&str> = args
            .iter()
            .filter_map(|a| a.strip_prefix("--toggle-collect="))
            .collect();
        assert_eq!(toggles.len(), 2 * KINDS.len() + STATE_KINDS.len(), "{toggles:?}");
        for toggle in &toggles {
            let name = toggle
                .strip_prefix("*::oploop::counted_")
                .unwrap_or_else(|| panic!("{toggle}"));
            assert!(
                name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{toggle} matches more than one loop"
            );
        }
        assert!(toggles.contains(&"*::oploop::counted_engine_cancel_timer"));
    }

    #[test]
    fn inclusive_counts_parse_from_callgrind_annotate() {
        let text = "\
--------------------------------------------------------------------------------
Ir                   
--------------------------------------------------------------------------------
98,765,432 (100.0%)  PROGRAM TOTALS

--------------------------------------------------------------------------------
Ir                    file:function
--------------------------------------------------------------------------------
 4,000,000 (40.00%)  ???:loadgen::oploop::counted_engine_get [/x/loadgen]
 3,000,000 (30.00%)  ???:loadgen::oploop::counted_peer_get [/x/loadgen]
 2,000,000 (20.00%)  ???:session_engine::engine::Engine::get [/x/loadgen]
";
        let totals = parse_annotate(text);
        assert_eq!(totals["counted_engine_get"], 4_000_000);
        assert_eq!(totals["counted_peer_get"], 3_000_000);
        assert_eq!(totals.len(), 2);
        let err = counts_of(&totals, 20_000).unwrap_err().to_string();
        assert!(err.contains("counted_engine_peek"), "{err}");
    }
}
