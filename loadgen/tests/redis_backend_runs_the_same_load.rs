//! The same scenario against a real Redis server (the `session-redis`
//! backend): clients run as tokio tasks and every figure is recorded. The
//! server is started here on a free loopback port and stopped at the end;
//! `scripts/ensure-redis.sh` installs it.

mod support;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::cli::{assert_passed_unless_machine_busy, lenient_targets, loadgen, outcome};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_redis() -> (Server, u16) {
    start_redis_with(&[])
}

fn start_redis_with(extra: &[&str]) -> (Server, u16) {
    // A port free when drawn can be taken by another test's server before
    // this one binds it: then this server exits, and the port answers for
    // the other. Drawn again until the server that answers is this one.
    for _ in 0..5 {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server not found: run scripts/ensure-redis.sh");
        let mut server = Server(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut exited = false;
        // (A server with a password answers NOAUTH: up all the same.)
        while !["PONG", "NOAUTH"]
            .iter()
            .any(|up| cli(port, &["PING"]).contains(up))
        {
            if server.0.try_wait().ok().flatten().is_some() {
                exited = true;
                break;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        if exited {
            continue;
        }
        // A server that lost the port exits within moments of starting.
        std::thread::sleep(Duration::from_millis(50));
        if server.0.try_wait().ok().flatten().is_none() {
            return (server, port);
        }
    }
    panic!("redis-server could not keep a port of its own in 5 tries");
}

/// `loadgen run` of the tiny scenario against `url`: one worker, four
/// clients, at `rate`, quiet, writing to `out`.
fn tiny_run<'a>(url: &'a str, rate: &'a str, out: &'a std::path::Path) -> Vec<&'a str> {
    vec![
        "run",
        "--scenario",
        "tiny",
        "--backend",
        url,
        "--workers",
        "1",
        "--clients",
        "4",
        "--rate",
        rate,
        "--quiet",
        // The lister's ten pages go to the backend or the peer by the
        // seed's draws: a random seed sent none to Redis once in 2^10 runs.
        "--seed",
        "7",
        "--out",
        out.to_str().unwrap(),
    ]
}

fn dbsize(port: u16) -> u64 {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "DBSIZE"])
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
}

/// Ctrl-C during a run against Redis deletes the run's live population
/// before the process ends (exit 130), as the run's normal end does: left
/// for its 30-minute timeout, it doubled the next run's population.
#[test]
fn an_interrupted_run_against_redis_deletes_its_population() {
    // The whole tiny population, and then some of the load.
    interrupt_and_check_emptied(
        "interrupted",
        &["--duration", "60s"],
        1_000,
        Duration::from_millis(500),
    );
}

/// Ctrl-C while the population is still being created: the sessions
/// created so far are deleted (exit 130), as after the populate. The
/// interrupt was only heard once the populate had ended: until then
/// Ctrl-C kept its default, and the process died leaving every session it
/// had made on the server for its timeout.
#[test]
fn an_interrupt_during_the_populate_deletes_what_it_created() {
    // Far more sessions than a populate makes before the interrupt.
    interrupt_and_check_emptied(
        "interrupted-populate",
        &["--sessions", "1000000", "--duration", "60s"],
        100,
        Duration::ZERO,
    );
}

/// Starts a tiny run against a fresh server with `extra` arguments, sends
/// it SIGINT once the server holds `keys` keys and `then` has passed, and
/// checks that it ends with 130, saying so, and leaves no key behind.
fn interrupt_and_check_emptied(tag: &str, extra: &[&str], keys: u64, then: Duration) {
    let (_server, port) = start_redis();
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("redis://127.0.0.1:{port}");
    let out = tmp.path().join(tag);
    let mut args = tiny_run(&url, "200", &out);
    args.extend(extra);
    let run = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(&args)
        .env("CI", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("loadgen");
    let deadline = Instant::now() + Duration::from_secs(60);
    while dbsize(port) < keys {
        assert!(Instant::now() < deadline, "the population never arrived");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(then);
    // The shell's built-in `kill`: a minimal machine may lack procps.
    let killed = Command::new("sh")
        .args(["-c", "kill -INT \"$0\"", &run.id().to_string()])
        .status()
        .expect("sh -c kill");
    assert!(killed.success());
    let out = run.wait_with_output().expect("loadgen ends");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(130), "{text}");
    assert!(text.contains("interrupted"), "{text}");
    assert_emptied(port);
}

/// The server holds no key within 20 s (a run's churn sessions expire on
/// their own, in 100 ms; its live population is the run's to delete).
fn assert_emptied(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while dbsize(port) > 0 {
        assert!(
            Instant::now() < deadline,
            "the run left {} keys behind",
            dbsize(port)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_tiny_run_against_redis_completes_its_schedule() {
    let (_server, port) = start_redis();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("redis");
    let url = format!("redis://127.0.0.1:{port}");
    let targets = lenient_targets(tmp.path());
    let mut args = tiny_run(&url, "1000", &out);
    args.extend(["--targets", &targets]);
    let (code, stdout, stderr) = outcome(&loadgen(&args));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("result.json")).unwrap()).unwrap();
    // On one 2-core machine the server and its client compete for the
    // cores, which the slices show as the machine taking them.
    assert_passed_unless_machine_busy(code, &r, &format!("{stdout}\n{stderr}"));
    assert_eq!(r["scenario"]["backend"], url);
    // (Operations left unsent by a client the machine held past the end
    // fail the rate row, which the check above allows: the machine's.)
    for op in ["get", "update", "create", "delete", "list"] {
        assert!(
            r["ops"][op]["count"].as_u64().unwrap() > 0,
            "{op} ran against Redis"
        );
    }
    assert_eq!(r["ops"]["get"]["errors"], 0, "the live population is in Redis");
    assert!(
        r["expiry"].is_null() && r["engine"].is_null(),
        "engine-only figures are absent"
    );
    // The run deletes its live population: the next run on this server
    // starts from what this one did (it left 1,000 sessions for 30 minutes,
    // and the next run's list pages covered twice as many).
    assert_emptied(port);
}

fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A populate that fails part-way (the server out of memory here) deletes
/// the sessions it had created before it reports the failure: they stayed
/// on the server for their 30-minute timeout.
#[test]
fn a_populate_that_fails_part_way_leaves_nothing_behind() {
    let (_server, port) = start_redis();
    let used: u64 = cli(port, &["INFO", "memory"])
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory");
    // Room for a few hundred sessions of the tiny scenario, not 20,000.
    let limit = (used + 300_000).to_string();
    cli(port, &["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    cli(port, &["CONFIG", "SET", "maxmemory", &limit]);
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("redis://127.0.0.1:{port}");
    let out = tmp.path().join("oom");
    let mut args = tiny_run(&url, "200", &out);
    args.extend(["--sessions", "20000"]);
    let (code, stdout, stderr) = outcome(&loadgen(&args));
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert!(stderr.contains("creating live session"), "{stderr}");
    assert_eq!(dbsize(port), 0, "the sessions created before the failure stayed");
}

/// A backend URL's password appears nowhere a run writes: not in what it
/// prints, not in its results (the command line and the scenario went into
/// result.json and report.md as given), not in a failed connect's error.
#[test]
fn a_backend_password_is_never_written() {
    let (_server, port) = start_redis_with(&["--requirepass", "hunter2"]);
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("redis://:hunter2@127.0.0.1:{port}");
    let out = tmp.path().join("secret");
    let targets = lenient_targets(tmp.path());
    let mut args = tiny_run(&url, "500", &out);
    args.extend(["--targets", &targets]);
    let (code, stdout, stderr) = outcome(&loadgen(&args));
    assert!(matches!(code, 0 | 1 | 3), "{stdout}\n{stderr}");
    assert!(
        !format!("{stdout}{stderr}").contains("hunter2"),
        "{stdout}\n{stderr}"
    );
    let mut files = 0;
    for entry in std::fs::read_dir(&out).unwrap() {
        let path = entry.unwrap().path();
        if let Ok(text) = std::fs::read_to_string(&path) {
            files += 1;
            assert!(!text.contains("hunter2"), "{} holds the password", path.display());
        }
    }
    assert!(files >= 3, "the run wrote its results");
    let bad = format!("redis://:hunter2@127.0.0.1:{}", port.wrapping_add(1).max(1));
    let (code, stdout, stderr) = outcome(&loadgen(&tiny_run(&bad, "500", &tmp.path().join("refused"))));
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert!(!format!("{stdout}{stderr}").contains("hunter2"), "{stderr}");
    assert!(stderr.contains(":***@"), "{stderr}");
}
