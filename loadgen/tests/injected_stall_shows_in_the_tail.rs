//! A real run against the engine with a 200 ms freeze injected into the
//! backend: the open-loop tail must show it (every operation due during the
//! freeze is late), as the coordinated-omission-free schedule promises.

mod support;

use support::cli::{loadgen, outcome, TINY};

#[test]
fn a_200ms_freeze_shows_in_p99_and_max() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("stall");
    let mut args = TINY.to_vec();
    args.extend([
        "11",
        "--targets",
        "none",
        "--inject-stall",
        "600ms:200ms",
        "--out",
        out.to_str().unwrap(),
    ]);
    let (code, stdout, stderr) = outcome(&loadgen(&[&["run"], &args[..]].concat()));
    assert_ne!(code, 2, "{stdout}\n{stderr}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("result.json")).unwrap()).unwrap();
    let all = &r["all_point_ops"];
    let ms = 1_000_000;
    // 2,000 ops/s: about 400 operations were due during the freeze, a fifth
    // of the measured second, late by 200 ms down to 0.
    assert!(all["max_ns"].as_u64().unwrap() >= 200 * ms, "{all}");
    assert!(all["p99_ns"].as_u64().unwrap() >= 150 * ms, "{all}");
    assert!(all["p90_ns"].as_u64().unwrap() >= 50 * ms, "{all}");
    assert_eq!(r["ops_unsent"], 0, "the backlog cleared");
}
