//! The binary end to end on the tiny scenario: files, JSON fields, exit codes.

mod support;

use support::cli::{lenient_targets, loadgen, outcome, TINY};

fn json(dir: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("result.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn a_tiny_run_passes_writes_every_file_and_records_what_it_measured() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let targets = lenient_targets(tmp.path());
    let mut args = TINY.to_vec();
    args.extend(["42", "--targets", &targets, "--out", out.to_str().unwrap()]);
    let (code, stdout, stderr) = outcome(&loadgen(&[&["run"], &args[..]].concat()));
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains("lenient") && stdout.contains("verdict: PASS"),
        "{stdout}"
    );
    for file in ["result.json", "summary.md", "latency.svg", "latency.hlog"] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    let r = json(&out);
    assert_eq!(r["schema"], "session-engine/loadgen-result");
    assert_eq!(r["schema_version"], 1);
    assert_eq!(r["mode"], "open-loop");
    assert_eq!(r["scenario"]["sessions"], 1000);
    assert_eq!(r["scenario"]["seed"], 42);
    assert_eq!(r["rate_target_ops_per_s"], 2000.0);
    assert_eq!(r["rate_held"], true);
    assert_eq!(r["passed"], true);
    assert!(r["machine"]["cores"].as_u64().unwrap() >= 1);
    assert!(r["git"].get("commit").is_some());
    let throughput = r["throughput_ops_per_s"].as_f64().unwrap();
    // At least the offered rate: operations due in the measured second all
    // count, and late warm-up ones may join them on a busy machine.
    assert!(throughput >= 1_990.0, "{throughput}");
    for op in ["get", "peek", "update", "touch", "create", "delete", "list"] {
        let s = &r["ops"][op];
        assert!(s["count"].as_u64().unwrap() > 0, "{op} ran");
        assert!(s["p50_ns"].as_u64().unwrap() <= s["p99_ns"].as_u64().unwrap());
        assert!(s["p99_ns"].as_u64().unwrap() <= s["p999_ns"].as_u64().unwrap());
        assert!(s["p999_ns"].as_u64().unwrap() <= s["max_ns"].as_u64().unwrap());
    }
    assert_eq!(
        r["ops"]["get"]["errors"], 0,
        "the live population is always found"
    );
    assert!(r["memory"]["bytes_per_session"].as_f64().is_some());
    assert!(r["populate"]["sessions"] == 1000);
    // 100 ms churn timeout and a 10 ms sweep: sessions expire during the run.
    assert!(r["expiry"]["expired"].as_u64().unwrap() > 0, "{}", r["expiry"]);
    assert!(r["expiry"]["lag_ms_p99"].as_u64().unwrap() < 1_000);
    assert!(r["cpu"]["loadgen_ns_per_op"].as_f64().unwrap() > 0.0);
    assert!(r["cpu"]["workers_s"].as_f64().unwrap() > 0.0);
    assert!(!r["timeline"].as_array().unwrap().is_empty());
    // The reference peer ran in the same process, before and after the load.
    assert_eq!(r["peer"]["runs"], 2);
    assert!(r["peer"]["cpu_ns_per_op"].as_f64().unwrap() > 0.0);
    assert!(r["peer"]["all_point_ops"]["count"].as_u64().unwrap() > 0);
    let verdicts = r["verdicts"].as_array().unwrap();
    assert!(verdicts
        .iter()
        .any(|v| v["tier"] == "run" && v["bound"] == "rate"));
    assert!(verdicts
        .iter()
        .any(|v| v["tier"] == "lenient" && v["subject"] == "get"));
    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(md.contains("| get |") && md.contains("PASS"), "{md}");
    let log = std::fs::read_to_string(out.join("latency.hlog")).unwrap();
    assert!(log.starts_with("#[Histogram log format version 1.3]"));
    assert!(
        log.contains("Tag=get,") && log.contains("HISTF"),
        "compressed V2 histograms"
    );
}

#[test]
fn an_impossible_target_fails_with_exit_code_1() {
    let tmp = tempfile::tempdir().unwrap();
    let impossible = tmp.path().join("impossible.toml");
    std::fs::write(&impossible, "name = \"impossible\"\n[ops.get]\np50 = \"1ns\"\n").unwrap();
    let mut args = TINY.to_vec();
    args.extend(["7", "--targets", impossible.to_str().unwrap(), "--no-output"]);
    let (code, stdout, _) = outcome(&loadgen(&[&["run"], &args[..]].concat()));
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("impossible") && stdout.contains("FAIL"),
        "{stdout}"
    );
    assert!(stdout.contains("verdict: FAIL"), "{stdout}");
}

#[test]
fn a_run_that_measured_nothing_fails() {
    // 50 operations in closed loop (no rate to hold) end inside the 200 ms
    // warm-up; with no targets, nothing else could fail the run.
    let args = [
        "run",
        "--scenario",
        "tiny",
        "--rate",
        "max",
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
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("verdict: FAIL"), "{stdout}");
}

#[test]
fn usage_and_configuration_errors_exit_2_with_a_reason() {
    let cases: [(&[&str], &str); 7] = [
        (&["run", "--rate", "fast"], "rate"),
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
            &["run", "--scenario", "tiny", "--shards", "3", "--no-output"],
            "engine configuration",
        ),
        (&["frobnicate"], "unrecognized subcommand"),
    ];
    for (args, expected) in cases {
        let (code, stdout, stderr) = outcome(&loadgen(args));
        assert_eq!(code, 2, "{args:?}\nstdout {stdout}\nstderr {stderr}");
        assert!(
            stderr.contains(expected),
            "{args:?}: stderr lacks {expected:?}:\n{stderr}"
        );
    }
}

#[test]
fn a_data_dir_is_passed_to_the_engine_and_a_refusal_is_a_clean_usage_error() {
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
    let (code, stdout, stderr) = outcome(&loadgen(&[&["run"], &args[..]].concat()));
    // Until persistence lands the engine may refuse a data directory; either
    // way there is no panic and a refusal names the engine configuration.
    match code {
        0 | 1 => assert!(stdout.contains("verdict:"), "{stdout}"),
        2 => assert!(stderr.contains("engine configuration"), "{stderr}"),
        other => panic!("exit {other}: {stderr}"),
    }
    if code != 2 {
        // The engine wrote its log there; a second run must not recover it.
        let (code, _, stderr) = outcome(&loadgen(&[&["run"], &args[..]].concat()));
        assert_eq!(code, 2, "{stderr}");
        assert!(stderr.contains("not empty"), "{stderr}");
    }
}
