//! More clients than workers run as tokio tasks (the path a remote backend
//! takes); against the embedded engine the same run must work and count.

mod support;

use support::cli::{assert_passed_unless_machine_busy, loadgen, outcome, TINY};

#[test]
fn four_clients_on_one_worker_complete_the_schedule() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("tasks");
    let mut args = TINY.to_vec();
    args.extend([
        "9",
        "--workers",
        "1",
        "--clients",
        "4",
        "--list-rate",
        "0",
        // Churn sessions outlive the run: a delete that found one gone
        // would be the engine losing it, never its expiry. (At the tiny
        // scenario's 100 ms, a session is stamped early by as much as the
        // engine's clock thread lags behind, and one expired before three
        // quarters of its timeout counts as an error: a machine that kept
        // that thread off a CPU for 25 ms would fail this test.)
        "--churn-timeout",
        "30s",
        "--targets",
        "none",
        "--out",
        out.to_str().unwrap(),
    ]);
    let (code, stdout, stderr) = outcome(&loadgen(&[&["run"], &args[..]].concat()));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("result.json")).unwrap()).unwrap();
    assert_passed_unless_machine_busy(code, &r, &format!("{stdout}\n{stderr}"));
    assert_eq!(r["all_point_ops"]["errors"], 0, "{stdout}");
    assert_eq!(r["scenario"]["clients"], 4);
    // Every operation due in the backend's slices was issued: 2,000/s in
    // half of the 1.2 s of warm-up and measurement (the other half is the
    // peer's), 25 per client per 50 ms slice; except those of a client the
    // machine kept off its core past the end and the backlog's grace, which
    // gives up on them and counts them as unsent (the rate row fails then,
    // which is the machine's: see `assert_passed_unless_machine_busy`).
    let unsent = r["ops_unsent"].as_u64().unwrap();
    let issued = r["ops_issued"].as_u64().unwrap() + r["deletes_skipped"].as_u64().unwrap();
    assert_eq!(
        issued + unsent,
        1_200,
        "operations issued to the backend or unsent"
    );
    // And every one due in its measured slices (10 of them) and sent was
    // recorded, late or not.
    let skipped_at_most = r["deletes_skipped"].as_u64().unwrap();
    let measured = r["all_point_ops"]["count"].as_u64().unwrap();
    assert!(
        (1_000u64.saturating_sub(skipped_at_most + unsent)..=1_000).contains(&measured),
        "{measured} measured operations ({unsent} unsent)"
    );
}

#[test]
fn the_null_backend_measures_the_loadgen_alone() {
    let (code, stdout, stderr) = outcome(&loadgen(&[
        "run",
        "--scenario",
        "tiny",
        "--backend",
        "null",
        "--rate",
        "max",
        "--duration",
        "200ms",
        "--targets",
        "none",
        "--no-output",
        "--quiet",
    ]));
    // 200 ms measured is four backend slices: a machine that keeps the
    // worker off its core across them leaves nothing measured, which the
    // run rightly fails (and says so). A closed loop keeps both cores
    // busy, so the machine's other work disturbs its slices: with fewer
    // than a quarter judged the run is inconclusive, bound or no bound
    // (and says why); anything else must pass.
    let nothing_measured = code == 1 && stdout.contains("no operation was measured");
    let too_busy = code == 3 && stdout.contains("the machine was too busy");
    assert!(
        code == 0 || nothing_measured || too_busy,
        "exit {code}\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("closed-loop"), "{stdout}");
}
