//! Crash tests with real processes: a child writes sessions and reports each
//! acknowledged operation; the parent kills it with SIGKILL at random moments,
//! reopens the directory and checks that every acknowledged create, update
//! and delete is reflected, that the unacknowledged one in flight is either
//! fully applied or absent, and that recovery never fails. At least 50 kill
//! points per run, rotating the durability modes. A second child rewrites a
//! session of up to 2 MiB whose metadata is full of encoded records (a
//! `DELETE` of a victim session, a `PUT` of an admin one): `Strict` recovery
//! must open after every kill, and never apply what the metadata holds.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use session_engine::{Config, Durability, Engine, SessionId, Timeout};

mod support;

const CHILD_ENV: &str = "SESSION_CRASH_CHILD";
const IDS: u8 = 64;
const KILLS: usize = 54;

fn config(dir: &Path, durability: Durability) -> Config {
    Config::default()
        .shards(4)
        .data_dir(dir)
        .durability(durability)
        .segment_size_bytes(128 * 1024)
        .metadata_bytes_max(4096)
        .without_sweeper()
}

fn durability(name: &str) -> Durability {
    match name {
        "always" => Durability::Always,
        "interval" => Durability::Interval(Duration::from_millis(3)),
        _ => Durability::Never,
    }
}

fn id(k: u8) -> SessionId {
    SessionId::from_bytes([k.wrapping_add(1); 16])
}

/// The child: runs only when the parent sets the environment variable.
#[test]
fn crash_child() {
    let Ok(arg) = std::env::var(CHILD_ENV) else { return };
    let (dir, mode, seed) = {
        let mut parts = arg.split('|');
        (
            parts.next().unwrap().to_string(),
            parts.next().unwrap().to_string(),
            parts.next().unwrap().parse::<u64>().unwrap(),
        )
    };
    let engine = support::open_when_free(&config(Path::new(&dir), durability(&mode)));
    let mut out = std::io::stdout().lock();
    writeln!(out, "READY").unwrap();
    out.flush().unwrap();
    let mut x = seed;
    for n in 0u64.. {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let k = ((x >> 33) % u64::from(IDS)) as u8;
        // Metadata of varying size, so that records straddle pages and segments.
        let value = format!("v{n}-{}", "x".repeat((x >> 50) as usize % 600));
        let op = if engine.contains(&id(k)) {
            if (x >> 20) % 4 == 0 {
                "D"
            } else {
                "U"
            }
        } else {
            "C"
        };
        writeln!(out, "INTENT {op} {k} {value}").unwrap();
        out.flush().unwrap();
        match op {
            "C" => engine.insert(id(k), value.as_bytes(), Timeout::Never).unwrap(),
            "U" => drop(engine.update(&id(k), |_| value.clone().into_bytes()).unwrap()),
            _ => drop(engine.delete(&id(k)).unwrap()),
        }
        writeln!(out, "ACK").unwrap();
        out.flush().unwrap();
    }
}

#[derive(Default, Clone)]
struct Model {
    /// Acknowledged state: id -> value (absent: no session).
    acked: HashMap<u8, String>,
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut model = Model::default();
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    println!("seed {seed} (replay: set it here)");
    let started = Instant::now();
    let mut total_acks = 0usize;
    for kill in 0..KILLS {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let mode = ["always", "interval", "never"][kill % 3];
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, format!("{}|{mode}|{seed}", dir.path().display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        // Wait until it has opened (recovered) the directory, let it write for
        // a random 0-30 ms, then SIGKILL it.
        let mut lines = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !lines.last().is_some_and(|l: &String| l.ends_with("READY")) {
            let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) else {
                // Not left writing forever into a directory about to go.
                let _ = child.kill();
                let _ = child.wait();
                panic!("kill {kill}: the child never opened the directory");
            };
            lines.push(line);
        }
        std::thread::sleep(Duration::from_millis((seed >> 40) % 31));
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
        lines.extend(rx.try_iter());

        // Replay the child's report onto the model: acked ops apply; the last
        // intent without an ack may or may not have happened.
        let mut in_flight: Option<(String, u8, String)> = None;
        for line in &lines {
            if let Some(rest) = line.strip_prefix("INTENT ") {
                let mut p = rest.splitn(3, ' ');
                let (op, k, v) = (
                    p.next().unwrap(),
                    p.next().unwrap().parse().unwrap(),
                    p.next().unwrap(),
                );
                in_flight = Some((op.to_string(), k, v.to_string()));
            } else if line == "ACK" {
                let (op, k, v) = in_flight.take().expect("ack without intent");
                if op == "D" {
                    model.acked.remove(&k);
                } else {
                    model.acked.insert(k, v);
                }
                total_acks += 1;
            }
        }

        let engine = Engine::open(config(dir.path(), Durability::Never))
            .unwrap_or_else(|e| panic!("kill {kill} ({mode}): recovery failed: {e}"));
        for k in 0..IDS {
            let got = engine
                .peek(&id(k))
                .ok()
                .map(|s| String::from_utf8(s.metadata().to_vec()).unwrap());
            let want = model.acked.get(&k).cloned();
            let alternative = match &in_flight {
                Some((op, key, v)) if *key == k => Some(if op == "D" { None } else { Some(v.clone()) }),
                _ => None,
            };
            assert!(
                got == want || alternative.as_ref() == Some(&got),
                "kill {kill} ({mode}), id {k}: recovered {got:?}, acknowledged {want:?}, in flight {in_flight:?}"
            );
            // The recovered state is the truth the next child continues from.
            match got {
                Some(v) => model.acked.insert(k, v),
                None => model.acked.remove(&k),
            };
        }
        engine.debug_check_invariants();
    }
    println!(
        "{KILLS} kills, {total_acks} acknowledged operations, {:?}",
        started.elapsed()
    );
    assert!(
        total_acks > KILLS,
        "the children made progress before being killed"
    );
}

const HOSTILE_ENV: &str = "SESSION_CRASH_HOSTILE_CHILD";
const HOSTILE_KILLS: usize = 24;
const VICTIM: SessionId = SessionId::from_bytes([0x11; 16]);
const FORGED: SessionId = SessionId::from_bytes([0x22; 16]);
const BIG: SessionId = SessionId::from_bytes([0x33; 16]);

fn hostile_config(dir: &Path, durability: Durability) -> Config {
    Config::default()
        .shards(1)
        .data_dir(dir)
        .durability(durability)
        .segment_size_bytes(8 << 20)
        .metadata_bytes_max(2 << 20)
        .without_sweeper()
}

/// The hostile child: runs only when the parent sets the environment variable.
#[test]
fn hostile_crash_child() {
    let Ok(arg) = std::env::var(HOSTILE_ENV) else {
        return;
    };
    let mut parts = arg.split('|');
    let (dir, mode, seed) = (
        parts.next().unwrap().to_string(),
        parts.next().unwrap().to_string(),
        parts.next().unwrap().parse::<u64>().unwrap(),
    );
    let engine = support::open_when_free(&hostile_config(Path::new(&dir), durability(&mode)));
    if !engine.contains(&VICTIM) {
        engine.insert(VICTIM, b"user_id=alice", Timeout::Never).unwrap();
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "READY").unwrap();
    out.flush().unwrap();
    let mut x = seed | 1;
    for n in 0u64.. {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = (64 << 10) + (x % (2 << 20)) as usize;
        let marker = format!("BIG{n}:{seed}:");
        let meta = support::hostile_metadata(marker.as_bytes(), VICTIM, FORGED, len.min(2 << 20));
        writeln!(out, "INTENT {marker}").unwrap();
        out.flush().unwrap();
        if engine.contains(&BIG) {
            drop(engine.update(&BIG, |_| meta.clone()).unwrap());
        } else {
            engine.insert(BIG, &meta, Timeout::Never).unwrap();
        }
        writeln!(out, "ACK").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn hostile_sessions_never_steer_recovery_under_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    println!("seed {seed} (replay: set it here)");
    let mut acked: Option<String> = None;
    let mut total_acks = 0;
    let (mut torn_rounds, mut big_rounds) = (0, 0);
    for kill in 0..HOSTILE_KILLS {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let mode = ["always", "interval", "never"][kill % 3];
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "hostile_crash_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(HOSTILE_ENV, format!("{}|{mode}|{seed}", dir.path().display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let errors = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut text);
            text
        });
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut lines = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !lines.last().is_some_and(|l: &String| l.ends_with("READY")) {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => lines.push(line),
                Err(why) => {
                    let _ = child.kill();
                    let status = child.wait().unwrap();
                    panic!(
                        "kill {kill} ({mode}): the child never opened the directory ({why:?}, {status}); \
                         its output: {lines:?}; its stderr:\n{}",
                        errors.join().unwrap()
                    );
                }
            }
        }
        std::thread::sleep(Duration::from_millis((seed >> 40) % 41));
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
        lines.extend(rx.try_iter());
        let mut in_flight = None;
        for line in &lines {
            if let Some(marker) = line.strip_prefix("INTENT ") {
                in_flight = Some(marker.to_string());
            } else if line == "ACK" {
                acked = in_flight.take();
                total_acks += 1;
            }
        }
        let engine = Engine::open(hostile_config(dir.path(), Durability::Never))
            .unwrap_or_else(|e| panic!("kill {kill} ({mode}): strict recovery refused to open: {e}"));
        assert!(
            engine.contains(&VICTIM),
            "kill {kill} ({mode}): the forged DELETE was applied"
        );
        assert!(
            !engine.contains(&FORGED),
            "kill {kill} ({mode}): the forged PUT was applied"
        );
        let big = engine.peek(&BIG).ok().map(|s| s.metadata().to_vec());
        torn_rounds += usize::from(in_flight.is_some());
        big_rounds += usize::from(big.is_some());
        let holds = |marker: &Option<String>| match (&big, marker) {
            (Some(meta), Some(m)) => meta.starts_with(m.as_bytes()),
            (None, None) => true,
            _ => false,
        };
        assert!(
            holds(&acked) || (in_flight.is_some() && holds(&in_flight)),
            "kill {kill} ({mode}): the big session holds {:?}, acknowledged {acked:?}, in flight {in_flight:?}",
            big.map(|m| String::from_utf8_lossy(&m[..24.min(m.len())]).into_owned())
        );
        if in_flight.is_some() && holds(&in_flight) {
            acked = in_flight;
        }
        engine.debug_check_invariants();
    }
    println!(
        "{HOSTILE_KILLS} kills, {total_acks} acknowledged rewrites of a hostile session, \
         {torn_rounds} kills during one, {big_rounds} recoveries holding it"
    );
    // The kills must have met the case they test: hostile records written,
    // acknowledged, and killed in the middle of.
    assert!(
        total_acks > 0 && torn_rounds > 0 && big_rounds > 0,
        "no kill met a hostile write: {total_acks} acknowledged, {torn_rounds} killed during one, \
         {big_rounds} recovered"
    );
}
