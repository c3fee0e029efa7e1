//! `loadgen gate`: passes against itself, fails on a regression beyond the
//! tolerance with exit code 1, and writes baselines.

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use loadgen::gate::{self, Baseline};
use loadgen::report::Report;
use support::cli::{loadgen, outcome, TINY};

fn tiny_result(dir: &Path) -> std::path::PathBuf {
    let out = dir.join("candidate");
    let mut args = TINY.to_vec();
    args.extend(["5", "--targets", "none", "--out", out.to_str().unwrap()]);
    let (code, stdout, stderr) = outcome(&loadgen(&[&["run"], &args[..]].concat()));
    assert_ne!(code, 2, "{stdout}\n{stderr}");
    out.join("result.json")
}

fn write_baseline(path: &Path, report: &Report, scale: impl Fn(&str, f64) -> f64) {
    let metrics: BTreeMap<String, f64> = gate::metrics_of(report)
        .into_iter()
        .map(|(k, v)| {
            let scaled = scale(&k, v);
            (k, scaled)
        })
        .collect();
    let baseline = Baseline {
        schema: gate::BASELINE_SCHEMA.into(),
        schema_version: gate::BASELINE_SCHEMA_VERSION,
        created_at: report.started_at.clone(),
        command: vec!["test".into()],
        machine: report.machine.clone(),
        git: report.git.clone(),
        scenario: report.scenario.clone(),
        repeat: 1,
        metrics: metrics.clone(),
        runs: vec![metrics],
    };
    std::fs::write(path, serde_json::to_string_pretty(&baseline).unwrap()).unwrap();
}

#[test]
fn the_gate_passes_against_itself_and_fails_on_a_regression() {
    let tmp = tempfile::tempdir().unwrap();
    let result = tiny_result(tmp.path());
    let report = Report::read(&result).unwrap();
    let baseline = tmp.path().join("baseline.json");
    let gate_args = |b: &Path| {
        vec![
            "gate".to_owned(),
            "--baseline".into(),
            b.to_string_lossy().into_owned(),
            "--candidate".into(),
            result.to_string_lossy().into_owned(),
        ]
    };
    let run_gate = |b: &Path| {
        let args = gate_args(b);
        outcome(&loadgen(&args.iter().map(String::as_str).collect::<Vec<_>>()))
    };

    write_baseline(&baseline, &report, |_, v| v);
    let (code, stdout, _) = run_gate(&baseline);
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains("get.p50_ns/peer"),
        "ratios to the peer are judged: {stdout}"
    );
    assert!(
        stdout.contains("ok (noise)") && stdout.contains("gate: PASS"),
        "{stdout}"
    );

    // A baseline twice as fast: the candidate is a regression.
    write_baseline(&baseline, &report, |k, v| {
        if k.starts_with("throughput") {
            v * 2.0
        } else {
            v / 2.0
        }
    });
    let (code, stdout, _) = run_gate(&baseline);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("REGRESSION") && stdout.contains("gate: FAIL"),
        "{stdout}"
    );

    // A baseline twice as slow: an improvement, which passes.
    write_baseline(&baseline, &report, |k, v| {
        if k.starts_with("throughput") {
            v / 2.0
        } else {
            v * 2.0
        }
    });
    let (code, stdout, _) = run_gate(&baseline);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("improvement"), "{stdout}");

    // 5% worse everywhere is noise within the default 10%.
    write_baseline(&baseline, &report, |k, v| {
        if k.starts_with("throughput") {
            v / 0.95
        } else {
            v * 0.95
        }
    });
    let (code, stdout, _) = run_gate(&baseline);
    assert_eq!(code, 0, "{stdout}");
}

#[test]
fn a_missing_or_foreign_baseline_is_a_usage_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, _, stderr) = outcome(&loadgen(&["gate", "--baseline", "/nonexistent/baseline.json"]));
    assert_eq!(code, 2, "{stderr}");
    let foreign = tmp.path().join("foreign.json");
    std::fs::write(&foreign, "{\"schema\": \"something-else\"}").unwrap();
    let (code, _, stderr) = outcome(&loadgen(&["gate", "--baseline", foreign.to_str().unwrap()]));
    assert_eq!(code, 2, "{stderr}");
    let (code, _, stderr) = outcome(&loadgen(&["gate", "--tolerance", "0%"]));
    assert_eq!(code, 2, "{stderr}");
}

#[test]
fn write_baseline_records_medians_of_the_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("nested").join("baseline.json");
    let (code, stdout, stderr) = outcome(&loadgen(&[
        "gate",
        "--write-baseline",
        path.to_str().unwrap(),
        "--scenario",
        "tiny",
        "--repeat",
        "1",
        "--quiet",
    ]));
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let b = Baseline::read(&path).unwrap();
    assert_eq!(b.repeat, 1);
    assert_eq!(b.runs.len(), 1);
    assert_eq!(b.scenario.name, "tiny");
    assert!(b.metrics["throughput_ops_per_s"] > 0.0);
    assert!(b.metrics.contains_key("get.p99_ns"));
}
