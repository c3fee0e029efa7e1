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
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("sweep.json")).unwrap()).unwrap();
    assert_eq!(r["schema"], "session-engine/loadgen-sweep");
    // A capacity sweep judges the backend's latency as measured: no
    // reference peer, whose own queueing past its capacity would make any
    // tail "added over the peer" small (the knee would climb to the top).
    assert_eq!(r["scenario"]["peer"], false, "{}", r["scenario"]);
    let steps = r["steps"].as_array().unwrap();
    assert_eq!(steps[0]["rate_target_ops_per_s"], 1500.0);
    // Whether a debug build on this machine holds 3,000 ops/s, and whether
    // the machine is quiet enough to judge a step, are the machine's
    // business (speed is for benchmarks); what the sweep must do is report
    // as its knee the highest step that held, and exit 3 if a step could
    // not be judged on any attempt (the search stopped there), else 0 iff
    // it found a knee.
    let held: Vec<f64> = steps
        .iter()
        .filter(|s| s["passed"] == true)
        .map(|s| s["rate_target_ops_per_s"].as_f64().unwrap())
        .collect();
    let inconclusive = !r["inconclusive_at_ops_per_s"].is_null();
    assert_eq!(
        inconclusive,
        stdout.contains("inconclusive: the machine was too busy"),
        "{stdout}"
    );
    match held.iter().copied().reduce(f64::max) {
        Some(knee) => {
            assert_eq!(code, if inconclusive { 3 } else { 0 }, "{stdout}\n{stderr}");
            assert_eq!(r["knee_ops_per_s"], knee);
            assert!(stdout.contains(&format!("knee: {knee:.0} ops/s")), "{stdout}");
        }
        // No knee: every step broke (1), or one could not be judged on any
        // attempt (3).
        None => {
            assert_eq!(code, if inconclusive { 3 } else { 1 }, "{stdout}\n{stderr}");
            assert!(r["knee_ops_per_s"].is_null());
        }
    }
    assert!(std::fs::read_to_string(out.join("sweep.svg"))
        .unwrap()
        .starts_with("<svg"));
    let md = std::fs::read_to_string(out.join("sweep.md")).unwrap();
    assert_eq!(
        inconclusive,
        md.contains("too busy to judge"),
        "the summary says where the search stopped: {md}"
    );
    if inconclusive {
        assert!(!md.contains("nothing broke"), "{md}");
    }
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
    // A machine too busy to judge the step on either attempt (3) is the
    // machine's business; judged, the impossible bound fails it (1).
    if stdout.contains("inconclusive: the machine was too busy to judge 500 ops/s") {
        assert_eq!(code, 3, "{stdout}");
        assert!(stdout.contains("knee: none judged"), "{stdout}");
    } else {
        assert_eq!(code, 1, "{stdout}");
        assert!(
            stdout.contains("knee: none (the first step already broke"),
            "{stdout}"
        );
    }
    assert!(
        stdout.contains("(again)"),
        "the failed step was retried once: {stdout}"
    );
}
