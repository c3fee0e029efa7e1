//! `loadgen sweep` steps the rate up and reports the highest rate that held.

mod support;

use support::cli::{lenient_targets, loadgen, outcome};

#[test]
fn a_short_sweep_writes_its_steps_the_knee_and_a_plot() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sweep");
    let targets = lenient_targets(tmp.path());
    let (code, stdout, stderr) = outcome(&loadgen(&[
        "sweep",
        "--scenario",
        "tiny",
        "--to",
        "3000",
        "--steps",
        "2",
        "--step-duration",
        "300ms",
        "--step-warmup",
        "100ms",
        "--targets",
        &targets,
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]));
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("knee: 3000 ops/s"), "{stdout}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("sweep.json")).unwrap()).unwrap();
    assert_eq!(r["schema"], "session-engine/loadgen-sweep");
    let steps = r["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0]["rate_target_ops_per_s"], 1500.0);
    assert_eq!(r["knee_ops_per_s"], 3000.0);
    assert!(std::fs::read_to_string(out.join("sweep.svg"))
        .unwrap()
        .starts_with("<svg"));
    assert!(out.join("sweep.md").is_file());
}

#[test]
fn a_sweep_whose_first_step_fails_has_no_knee_and_exits_1() {
    let tmp = tempfile::tempdir().unwrap();
    let impossible = tmp.path().join("impossible.toml");
    std::fs::write(&impossible, "name = \"impossible\"\n[ops.get]\np50 = \"1ns\"\n").unwrap();
    let (code, stdout, _) = outcome(&loadgen(&[
        "sweep",
        "--scenario",
        "tiny",
        "--to",
        "2000",
        "--steps",
        "4",
        "--retries",
        "1",
        "--step-duration",
        "200ms",
        "--step-warmup",
        "100ms",
        "--targets",
        impossible.to_str().unwrap(),
        "--quiet",
        "--no-output",
    ]));
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("knee: none"), "{stdout}");
    assert!(
        stdout.contains("(again)"),
        "the failed step was retried once: {stdout}"
    );
}
