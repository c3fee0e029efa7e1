//! More clients than workers run as tokio tasks (the path a remote backend
//! takes); against the embedded engine the same run must work and count.

mod support;

use support::cli::{loadgen, outcome, TINY};

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
        "--targets",
        "none",
        "--out",
        out.to_str().unwrap(),
    ]);
    let (code, stdout, stderr) = outcome(&loadgen(&[&["run"], &args[..]].concat()));
    assert_ne!(code, 2, "{stdout}\n{stderr}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("result.json")).unwrap()).unwrap();
    assert_eq!(r["scenario"]["clients"], 4);
    assert_eq!(r["ops_unsent"], 0);
    // Every scheduled operation was issued: 2,000/s of point operations and
    // 10/s of list pages for the 1.2 s of warm-up and measurement. (How many
    // land in the measured window depends on how late a busy machine ran
    // the warm-up's, so that count is not pinned.)
    let issued = r["ops_issued"].as_u64().unwrap() + r["deletes_skipped"].as_u64().unwrap();
    assert!((2_400..=2_420).contains(&issued), "{issued} operations issued");
    assert!(r["all_point_ops"]["count"].as_u64().unwrap() >= 1_990);
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
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("closed-loop"), "{stdout}");
}
