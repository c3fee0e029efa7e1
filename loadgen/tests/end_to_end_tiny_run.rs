//! The binary end to end on the tiny scenario: files, JSON fields, exit codes.

mod support;

use support::cli::{
    assert_passed_unless_machine_busy, lenient_targets, loadgen, outcome, EXIT_INCONCLUSIVE, TINY,
};

fn json(dir: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("result.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn a_tiny_run_with_lenient_targets_passes_and_writes_every_file() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let targets = lenient_targets(tmp.path());
    let mut args = TINY.to_vec();
    args.extend(["42", "--targets", &targets, "--out", out.to_str().unwrap()]);
    let (code, stdout, stderr) = outcome(&loadgen(&[&["run"], &args[..]].concat()));
    let r = json(&out);
    assert_passed_unless_machine_busy(code, &r, &format!("stdout:\n{stdout}\nstderr:\n{stderr}"));
    assert!(
        stdout.contains("lenient") && stdout.contains("verdict: "),
        "{stdout}"
    );
    assert!(
        stdout.contains("p99.99") && stdout.contains("peer (point ops)"),
        "the percentile table: {stdout}"
    );
    for file in [
        "result.json",
        "summary.md",
        "latency.svg",
        "timeline.svg",
        "latency.hlog",
        "get.hgrm",
        "list.hgrm",
    ] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    assert_eq!(r["schema"], "session-engine/loadgen-result");
    assert_eq!(r["schema_version"], 2);
    // Attempts before this one were inconclusive (the machine too busy),
    // each kept with its reason, and said so above the verdict.
    for earlier in r["earlier_attempts"].as_array().expect("earlier_attempts") {
        assert!(earlier["judged_share"].as_f64().unwrap() < 1.0, "{earlier}");
        assert!(
            earlier["reason"].as_str().unwrap().contains("machine"),
            "{earlier}"
        );
        assert!(stdout.contains("was inconclusive"), "{stdout}");
    }
    assert_eq!(r["mode"], "open-loop");
    assert_eq!(r["scenario"]["sessions"], 1000);
    assert_eq!(r["scenario"]["seed"], 42);
    assert_eq!(r["rate_target_ops_per_s"], 2000.0);
    assert!(r["machine"]["cores"].as_u64().unwrap() >= 1);
    assert!(r["git"].get("commit").is_some());
    // 1 s measured in slices of 50 ms: 10 for the backend, 10 for the peer.
    assert_eq!(r["slices"]["backend"]["measured"], 10);
    assert_eq!(r["slices"]["peer"]["measured"], 10);
    assert_eq!(
        r["slices"]["list"].as_array().unwrap().len(),
        24,
        "warm-up included"
    );
    if r["verdict"] == "pass" {
        assert_eq!(r["rate_held"], true);
    }
    // Every operation due in the backend's measured slices is recorded,
    // late or not: 2,000/s for 0.5 s (deletes with nothing to delete are
    // skipped), less those a client held off its core past the end and
    // the backlog's grace gave up on (unsent).
    let count = r["all_point_ops"]["count"].as_u64().unwrap();
    let unsent = r["ops_unsent"].as_u64().unwrap();
    assert!(
        (950u64.saturating_sub(unsent)..=1_000).contains(&count),
        "{count} ({unsent} unsent)"
    );
    for op in ["get", "peek", "update", "touch", "create", "delete", "list"] {
        let s = &r["ops"][op];
        assert!(s["count"].as_u64().unwrap() > 0, "{op} ran");
        assert!(s["p50_ns"].as_u64().unwrap() <= s["p99_ns"].as_u64().unwrap());
        assert!(s["p99_ns"].as_u64().unwrap() <= s["p999_ns"].as_u64().unwrap());
        assert!(s["p999_ns"].as_u64().unwrap() <= s["max_ns"].as_u64().unwrap());
        assert!(
            r["peer"]["ops"][op]["count"].as_u64().unwrap() > 0,
            "{op} ran on the peer"
        );
    }
    assert_eq!(
        r["ops"]["get"]["errors"], 0,
        "the live population is always found"
    );
    assert_eq!(r["peer"]["ops"]["get"]["errors"], 0);
    assert!(r["memory"]["bytes_per_session"].as_f64().is_some());
    assert!(r["populate"]["sessions"] == 1000);
    // 100 ms churn timeout and a 10 ms sweep: sessions expire during the run.
    assert!(r["expiry"]["expired"].as_u64().unwrap() > 0, "{}", r["expiry"]);
    // Expired sessions are reclaimed by the sweep, not left for a read to
    // find: the median lag is far under a second. (Not the p99: a few dozen
    // expire, so their p99 is their slowest, which one stall of the
    // machine decides.)
    assert!(
        r["expiry"]["lag_ms_p50"].as_u64().unwrap() < 1_000,
        "{}",
        r["expiry"]
    );
    assert!(r["cpu"]["loadgen_ns_per_op"].as_f64().unwrap() > 0.0);
    assert!(r["cpu"]["workers_s"].as_f64().unwrap() > 0.0);
    assert!(r["cpu"]["peer_workers_s"].as_f64().unwrap() > 0.0);
    let timeline = r["timeline"].as_array().unwrap();
    assert_eq!(
        timeline.len(),
        12,
        "one point per 100 ms interval, warm-up included"
    );
    assert!(timeline[0]["warmup"] == true && timeline[11]["warmup"] == false);
    assert!(timeline[11]["peer_p99_ns"].as_u64().is_some());
    let verdicts = r["verdicts"].as_array().unwrap();
    assert!(verdicts
        .iter()
        .any(|v| v["tier"] == "run" && v["bound"] == "rate"));
    assert!(verdicts
        .iter()
        .any(|v| v["tier"] == "lenient" && v["subject"] == "get" && v["bound"] == "p99 added"));
    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(
        md.contains("| get | backend |") && md.contains("| get | peer |"),
        "{md}"
    );
    assert!(md.contains("p99 added"), "{md}");
    let log = std::fs::read_to_string(out.join("latency.hlog")).unwrap();
    assert!(log.starts_with("#[Histogram log format version 1.3]"));
    assert!(
        log.contains("Tag=get,") && log.contains("Tag=peer,") && log.contains("HISTF"),
        "compressed V2 histograms"
    );
    let hgrm = std::fs::read_to_string(out.join("get.hgrm")).unwrap();
    assert!(
        hgrm.contains("1/(1-Percentile)") && hgrm.contains("#[Max     ="),
        "{hgrm}"
    );
    let svg = std::fs::read_to_string(out.join("timeline.svg")).unwrap();
    assert!(svg.contains("backend p99"), "timeline plot");
}

#[test]
fn an_impossible_target_fails_with_exit_code_1() {
    let tmp = tempfile::tempdir().unwrap();
    let impossible = tmp.path().join("impossible.toml");
    std::fs::write(&impossible, "name = \"impossible\"\n[ops.get]\np50 = \"1ns\"\n").unwrap();
    let mut args = TINY.to_vec();
    args.extend(["7", "--targets", impossible.to_str().unwrap(), "--no-output"]);
    let (code, stdout, _) = outcome(&loadgen(&[&["run"], &args[..]].concat()));
    let row = stdout
        .lines()
        .find(|l| l.starts_with("impossible") && l.contains("p50 typical"))
        .unwrap_or_else(|| panic!("no row for the bound: {stdout}"));
    // A machine too busy to judge the run makes it inconclusive (exit 3),
    // which says so, and the bound is failed or, if too few of its samples
    // fell in judged slices (none, or every one in a disturbed slice), not
    // judged; otherwise the failed bound fails the run.
    match code {
        1 => assert!(
            row.contains("FAIL") && stdout.contains("verdict: FAIL"),
            "{stdout}"
        ),
        EXIT_INCONCLUSIVE => {
            assert!(stdout.contains("verdict: INCONCLUSIVE"), "{stdout}");
            assert!(
                row.contains("FAIL")
                    || row.contains("in disturbed slices")
                    || row.contains("samples in judged slices"),
                "{row}"
            );
        }
        other => panic!("exit {other}: {stdout}"),
    }
}

#[test]
fn a_run_that_measured_nothing_fails() {
    // At 1 operation a second in all, every one is intended on a whole
    // second: none falls in the measured 200 ms after a 1.5 s warm-up. With
    // no targets, nothing else could fail the run.
    let args = [
        "run",
        "--scenario",
        "tiny",
        "--rate",
        "1",
        "--warmup",
        "1500ms",
        "--duration",
        "200ms",
        "--quiet",
        "--seed",
        "7",
        "--targets",
        "none",
        "--no-output",
    ];
    let (code, stdout, _) = outcome(&loadgen(&args));
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("verdict: FAIL"), "{stdout}");
    assert!(stdout.contains("no operation was measured"), "{stdout}");
}

/// A rerun into the directory of an earlier run: a histogram of a kind
/// this run has none of was left beside its results.
#[test]
fn a_rerun_into_the_same_directory_leaves_no_histogram_of_the_last() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("create.hgrm"), "an earlier run's").unwrap();
    let args = [
        "run",
        "--scenario",
        "tiny",
        "--mix",
        "get=100",
        "--duration",
        "1s",
        "--quiet",
        "--seed",
        "7",
        "--targets",
        "none",
        "--out",
        out.to_str().unwrap(),
    ];
    let (code, stdout, stderr) = outcome(&loadgen(&args));
    assert_ne!(code, 2, "{stdout}\n{stderr}");
    assert!(out.join("get.hgrm").is_file(), "{stdout}\n{stderr}");
    assert!(
        !out.join("create.hgrm").exists(),
        "the last run's histogram stayed"
    );
}

/// `--ops` counts measured operations only: 50 of them, far fewer than a
/// 2 s closed-loop warm-up issues, still end in the measured time, however
/// fast the sitting (they used to end inside the warm-up on a fast one,
/// failing the run, and after it on a slow one).
#[test]
fn an_ops_limit_counts_no_warm_up_operation() {
    let args = [
        "run",
        "--scenario",
        "tiny",
        "--rate",
        "max",
        "--warmup",
        "2s",
        "--quiet",
        "--seed",
        "7",
        "--ops",
        "50",
        "--targets",
        "none",
        "--no-output",
    ];
    let (code, stdout, _) = outcome(&loadgen(&args));
    assert!(!stdout.contains("no operation was measured"), "{stdout}");
    assert_ne!(code, 1, "{stdout}");
}

#[test]
fn usage_and_configuration_errors_exit_2_with_a_reason() {
    let cases: [(&[&str], &str); 23] = [
        (&["run", "--rate", "fast"], "rate"),
        (
            &["run", "--scenario", "tiny", "--attempts", "0", "--no-output"],
            "--attempts must be between 1",
        ),
        (
            &[
                "run",
                "--scenario",
                "tiny",
                "--attempts",
                "2",
                "--data-dir",
                "/nonexistent/loadgen-data",
                "--durability",
                "never",
                "--no-output",
            ],
            "the data directory keeps the first attempt's log",
        ),
        (
            &["run", "--scenario", "/nonexistent/scenario.toml"],
            "cannot read scenario",
        ),
        (
            &[
                "run",
                "--targets",
                "/nonexistent/targets.toml",
                "--scenario",
                "tiny",
            ],
            "cannot read targets",
        ),
        (
            &[
                "run",
                "--scenario",
                "tiny",
                "--backend",
                "redis://127.0.0.1:1",
                "--no-output",
            ],
            "backend redis://127.0.0.1:1",
        ),
        (
            &["run", "--scenario", "tiny", "--durability", "sometimes"],
            "durability",
        ),
        (
            &[
                "run",
                "--scenario",
                "tiny",
                "--durability",
                "always",
                "--no-output",
            ],
            "durability applies only with a data dir",
        ),
        (
            &["run", "--scenario", "tiny", "--shards", "3", "--no-output"],
            "engine configuration",
        ),
        (
            &["sweep", "--scenario", "tiny", "--retries", "11", "--no-output"],
            "--retries must be at most 10",
        ),
        (
            &[
                "run",
                "--scenario",
                "tiny",
                "--inject-stall",
                "900ms:200ms",
                "--no-output",
            ],
            "must fit in --duration",
        ),
        (
            // AT + LENGTH is the duration, but the stall starts with the
            // backend's first slice at or after AT: up to three slices
            // later, past the end of the load.
            &[
                "run",
                "--scenario",
                "tiny",
                "--inject-stall",
                "950ms:50ms",
                "--no-output",
            ],
            "must fit in --duration",
        ),
        (
            &[
                "sweep",
                "--scenario",
                "tiny",
                "--step-duration",
                "0s",
                "--no-output",
            ],
            "the run would measure nothing",
        ),
        // --ops bounds a run within its duration; it does not replace one.
        (
            &[
                "run",
                "--scenario",
                "tiny",
                "--duration",
                "0s",
                "--ops",
                "5000",
                "--no-output",
            ],
            "the run would measure nothing",
        ),
        (
            &[
                "sweep",
                "--scenario",
                "tiny",
                "--step-duration",
                "1s",
                "--step-warmup",
                "150ms",
                "--no-output",
            ],
            "not a whole number of intervals",
        ),
        // An odd number of warm-up slices started the measured time inside
        // a pair: one side could get both of its slices, by the seed.
        (
            &[
                "run",
                "--scenario",
                "tiny",
                "--slice",
                "100ms",
                "--interval",
                "100ms",
                "--warmup",
                "100ms",
                "--duration",
                "200ms",
                "--no-output",
            ],
            "whole number of pairs of slices",
        ),
        // A sweep's steps run their own times: an --ops limit stopped no
        // step but was read as each kind's share when judging.
        (
            &[
                "sweep",
                "--scenario",
                "tiny",
                "--to",
                "1000",
                "--ops",
                "100",
                "--no-output",
            ],
            "does not apply to a sweep",
        ),
        // Nor a run's times: each step runs --step-warmup + --step-duration
        // (a --duration was taken and ignored).
        (
            &[
                "sweep",
                "--scenario",
                "tiny",
                "--to",
                "1000",
                "--duration",
                "30s",
                "--no-output",
            ],
            "--duration does not apply to a sweep",
        ),
        (
            &[
                "sweep",
                "--scenario",
                "tiny",
                "--to",
                "1000",
                "--warmup",
                "5s",
                "--no-output",
            ],
            "--warmup does not apply to a sweep",
        ),
        // The population must outlive the whole sweep, not one run.
        (
            &[
                "sweep",
                "--scenario",
                "tiny",
                "--to",
                "1000",
                "--steps",
                "8",
                "--timeout",
                "3s",
                "--no-output",
            ],
            "shorter than the sweep can take",
        ),
        // At 5K ops/s, 100 operations are issued in 20 ms, long before the
        // stall: it would delay nothing and pass unseen.
        (
            &[
                "run",
                "--scenario",
                "tiny",
                "--inject-stall",
                "300ms:100ms",
                "--ops",
                "100",
                "--no-output",
            ],
            "stopped before the stall ends",
        ),
        (
            &[
                "run",
                "--scenario",
                "tiny",
                "--rate",
                "max",
                "--inject-stall",
                "300ms:100ms",
                "--ops",
                "1000000",
                "--no-output",
            ],
            "in closed loop",
        ),
        (&["frobnicate"], "unrecognized subcommand"),
    ];
    // A population the engine cannot hold is the configuration's fault,
    // under either of the engine's names.
    let over_capacity = ["--sessions", "2000", "--sessions-max", "1000", "--no-output"];
    let capacity_cases = ["embedded", "engine"].map(|backend| {
        let mut args = vec!["run", "--scenario", "tiny", "--backend", backend];
        args.extend(over_capacity);
        args
    });
    let cases = cases.into_iter().chain(
        capacity_cases
            .iter()
            .map(|args| (&args[..], "exceed the engine's capacity")),
    );
    for (args, expected) in cases {
        let (code, stdout, stderr) = outcome(&loadgen(args));
        assert_eq!(code, 2, "{args:?}\nstdout {stdout}\nstderr {stderr}");
        assert!(
            stderr.contains(expected),
            "{args:?}: stderr lacks {expected:?}:\n{stderr}"
        );
    }
}

/// Results that cannot be written are refused before the load: a run
/// whose `--out` is a file ran to the end, then failed with exit 2 and no
/// verdict.
#[test]
fn results_that_cannot_be_written_are_refused_before_the_load() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let started = std::time::Instant::now();
    let mut args = vec!["run"];
    args.extend(TINY);
    args.extend(["42", "--out", file.to_str().unwrap()]);
    let (code, stdout, stderr) = outcome(&loadgen(&args));
    assert_eq!(code, 2, "stdout {stdout}\nstderr {stderr}");
    assert!(stderr.contains("results"), "{stderr}");
    assert!(!stdout.contains("verdict"), "the load ran: {stdout}");
    // The tiny run measures 1 s after a 1 s warm-up: refused before that.
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}

#[test]
fn a_data_dir_is_passed_to_the_engine_and_a_second_run_refuses_it() {
    let tmp = tempfile::tempdir().unwrap();
    let mut args = TINY.to_vec();
    let dir = tmp.path().join("data");
    args.extend([
        "3",
        "--duration",
        "300ms",
        "--targets",
        "none",
        "--no-output",
        "--data-dir",
        dir.to_str().unwrap(),
        "--durability",
        "interval:50",
    ]);
    let run = |args: &[&str]| outcome(&loadgen(&[&["run", "--json"], args].concat()));
    let (code, stdout, stderr) = run(&args);
    assert_ne!(code, 2, "the engine accepts a data directory: {stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("--json: the result on stdout");
    assert_passed_unless_machine_busy(code, &report, &stderr);
    assert_eq!(report["scenario"]["engine"]["durability"], "interval:50");
    assert!(
        std::fs::read_dir(&dir).unwrap().next().is_some(),
        "the engine wrote its log in {}",
        dir.display()
    );
    // A second run must not recover the first one's sessions.
    let (code, _, stderr) = run(&args);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("not empty"), "{stderr}");
}

/// At a rate so low that a client's schedule ends before the measured time
/// does (3 ops/s: the last is due at about 667 ms of 1 s), the throughput
/// is over the whole measured time, as the README says of slices in which
/// nothing was due: the slices after the last operation were taken for
/// those after an `--ops` stop and left out (3.53 ops/s over 0.85 s).
#[test]
fn a_schedule_that_ends_early_is_measured_over_the_whole_run() {
    let args = [
        "run",
        "--json",
        "-s",
        "tiny",
        "--rate",
        "3",
        "--no-peer",
        "--list-rate",
        "0",
        "--targets",
        "none",
        "--no-output",
        // Fixed: with three operations measured, a seed that drew three
        // deletes and no create before them would measure nothing.
        "--seed",
        "7",
    ];
    let (code, stdout, stderr) = outcome(&loadgen(&args));
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("--json: the result on stdout");
    // Three operations: a busy machine can disturb every slice they fall in
    // (inconclusive, not a failure of what this test checks).
    assert_passed_unless_machine_busy(code, &report, &stderr);
    // tiny: 1 s measured in 50 ms slices, all the backend's without a peer.
    assert_eq!(report["slices"]["backend"]["measured"], 20, "{stdout}");
    let over = report["throughput_over_s"].as_f64().unwrap();
    assert!((over - 1.0).abs() < 1e-9, "throughput over {over} s");
}
