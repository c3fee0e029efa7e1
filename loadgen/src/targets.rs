//! Latency and throughput targets (TOML), and the verdict of a run against them.
//!
//! ```toml
//! name = "seed"
//! throughput_min_ops_per_s = 1000   # optional floor, point operations
//! error_ratio_max = 0.01            # optional: failed / issued, all kinds
//! [ops.get]
//! p50 = "2us"    # any of p50, p99, p999, max
//! p99 = "100us"
//! [ops.list]
//! p99 = "100ms"
//! page_min = 10_000   # held only when the scenario lists pages this large
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::mix::Op;
use crate::table::render_table;
use crate::units::{format_ns, Dur};

/// The targets files shipped in `loadgen/targets/`, by name.
pub const BUILTIN: [(&str, &str); 2] = [
    ("seed", include_str!("../targets/seed.toml")),
    ("embedded", include_str!("../targets/embedded.toml")),
];

/// One targets file: a tier.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Targets {
    /// The tier's name, shown in the verdict table.
    pub name: String,
    /// What it stands for.
    #[serde(default)]
    pub description: String,
    /// Floor on point operations per second.
    #[serde(default)]
    pub throughput_min_ops_per_s: Option<f64>,
    /// Ceiling on failed / issued operations.
    #[serde(default)]
    pub error_ratio_max: Option<f64>,
    /// Bounds per operation kind.
    #[serde(default)]
    pub ops: BTreeMap<Op, OpTarget>,
}

/// Bounds on one operation kind's latency.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpTarget {
    /// Median.
    pub p50: Option<Dur>,
    /// 99th percentile.
    pub p99: Option<Dur>,
    /// 99.9th percentile.
    pub p999: Option<Dur>,
    /// Slowest.
    pub max: Option<Dur>,
    /// For `list`: the page size the bound is meant for.
    pub page_min: Option<usize>,
}

/// Why targets could not be loaded (a usage error).
#[derive(Debug, thiserror::Error)]
pub enum TargetsError {
    /// The file could not be read.
    #[error("cannot read targets {path}: {source}")]
    Read {
        /// The path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Bad TOML or values.
    #[error("targets {name}: {reason}")]
    Invalid {
        /// File or built-in name.
        name: String,
        /// What is wrong.
        reason: String,
    },
}

impl Targets {
    /// A shipped tier by name, or a file by path.
    ///
    /// # Errors
    /// [`TargetsError`].
    pub fn load(name_or_path: &str) -> Result<Self, TargetsError> {
        if let Some((_, text)) = BUILTIN.iter().find(|(name, _)| *name == name_or_path) {
            return Self::parse(name_or_path, text);
        }
        let text = std::fs::read_to_string(Path::new(name_or_path)).map_err(|source| TargetsError::Read {
            path: name_or_path.to_owned(),
            source,
        })?;
        Self::parse(name_or_path, &text)
    }

    /// Parses and checks TOML text.
    ///
    /// # Errors
    /// [`TargetsError::Invalid`].
    pub fn parse(name: &str, text: &str) -> Result<Self, TargetsError> {
        let invalid = |reason: String| TargetsError::Invalid {
            name: name.to_owned(),
            reason,
        };
        let targets: Targets = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        for (op, bounds) in &targets.ops {
            if bounds.p50.is_none() && bounds.p99.is_none() && bounds.p999.is_none() && bounds.max.is_none() {
                return Err(invalid(format!("ops.{op} sets no bound (p50, p99, p999 or max)")));
            }
            if bounds.page_min.is_some() && *op != Op::List {
                return Err(invalid(format!("ops.{op}: page_min applies to list only")));
            }
        }
        if let Some(r) = targets.error_ratio_max {
            if !(0.0..=1.0).contains(&r) {
                return Err(invalid(format!("error_ratio_max = {r}: must be between 0 and 1")));
            }
        }
        Ok(targets)
    }
}

/// One operation kind's measured figures, in nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OpStats {
    /// Operations measured.
    pub count: u64,
    /// Of which returned an error.
    pub errors: u64,
    /// Operations per second.
    pub throughput_ops_per_s: f64,
    /// Mean latency.
    pub mean_ns: f64,
    /// Fastest.
    pub min_ns: u64,
    /// Median.
    pub p50_ns: u64,
    /// 90th percentile.
    pub p90_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// 99.9th percentile.
    pub p999_ns: u64,
    /// 99.99th percentile.
    pub p9999_ns: u64,
    /// Slowest.
    pub max_ns: u64,
}

impl OpStats {
    /// Figures of a histogram measured over `seconds`, in which `completed`
    /// operations count towards the rate (open loop: those that completed
    /// within the schedule; the histogram also holds the late ones).
    #[must_use]
    pub fn of(hist: &crate::hist::Hist, errors: u64, completed: u64, seconds: f64) -> Self {
        if hist.is_empty() {
            return Self {
                errors,
                ..Self::default()
            };
        }

        let throughput_ops_per_s = completed as f64 / seconds.max(1e-9);
        Self {
            count: hist.len(),
            errors,
            throughput_ops_per_s,
            mean_ns: hist.mean(),
            min_ns: hist.min(),
            p50_ns: hist.value_at_quantile(0.5),
            p90_ns: hist.value_at_quantile(0.9),
            p99_ns: hist.value_at_quantile(0.99),
            p999_ns: hist.value_at_quantile(0.999),
            p9999_ns: hist.value_at_quantile(0.9999),
            max_ns: hist.max(),
        }
    }
}

/// What the verdict needs to know about a run.
#[derive(Clone, Debug, Default)]
pub struct RunFacts {
    /// Figures per kind that ran.
    pub ops: BTreeMap<Op, OpStats>,
    /// Kinds the scenario issues (a kind absent here is "not run", not failed).
    pub issued: Vec<Op>,
    /// The lister's page size.
    pub list_page: usize,
    /// Point operations per second.
    pub throughput_ops_per_s: f64,
}

/// Pass, fail, or not applicable to this scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The bound held.
    Pass,
    /// The bound did not hold.
    Fail,
    /// The scenario does not exercise what the bound is about.
    NotRun,
}

/// One row of the verdict table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Tier (targets file name), or `run` for the load's own checks.
    pub tier: String,
    /// Operation kind, or `all` for run-wide bounds.
    pub subject: String,
    /// Which figure: `p50`, `p99`, `p999`, `max`, `throughput`, `errors`, `rate`.
    pub bound: String,
    /// The limit, as written.
    pub limit: String,
    /// The measurement, in the same unit.
    pub measured: String,
    /// Limit / measured for upper bounds (measured / limit for floors): how
    /// many times over the bound holds (< 1: it does not).
    pub margin: Option<f64>,
    /// The outcome.
    pub status: Status,
    /// Why it is not run, or a remark.
    pub note: String,
}

/// Checks `facts` against one tier.
#[must_use]
#[allow(clippy::too_many_lines)] // one flat pass: per-kind bounds, then the run-wide ones
pub fn evaluate(targets: &Targets, facts: &RunFacts) -> Vec<Verdict> {
    let mut rows = Vec::new();
    let row = |subject: &str,
               bound: &str,
               limit: String,
               measured: String,
               margin: Option<f64>,
               status,
               note: &str| {
        Verdict {
            tier: targets.name.clone(),
            subject: subject.to_owned(),
            bound: bound.to_owned(),
            limit,
            measured,
            margin,
            status,
            note: note.to_owned(),
        }
    };
    for (op, bounds) in &targets.ops {
        let checks = [
            ("p50", bounds.p50, (|s: &OpStats| s.p50_ns) as fn(&OpStats) -> u64),
            ("p99", bounds.p99, |s| s.p99_ns),
            ("p999", bounds.p999, |s| s.p999_ns),
            ("max", bounds.max, |s| s.max_ns),
        ];
        let not_run_reason = if facts.issued.contains(op) {
            bounds
                .page_min
                .filter(|min| facts.list_page < *min)
                .map(|page_min| format!("pages of {} < page_min {page_min}", facts.list_page))
        } else {
            Some("not in this scenario".to_owned())
        };
        for (bound, limit, figure) in checks {
            let Some(limit) = limit else { continue };
            let limit_text = limit.to_string();
            if let Some(reason) = &not_run_reason {
                rows.push(row(
                    op.name(),
                    bound,
                    limit_text,
                    "-".into(),
                    None,
                    Status::NotRun,
                    reason,
                ));
                continue;
            }
            match facts.ops.get(op).filter(|s| s.count > 0) {
                None => rows.push(row(
                    op.name(),
                    bound,
                    limit_text,
                    "-".into(),
                    None,
                    Status::Fail,
                    "no samples",
                )),
                Some(op_stats) => {
                    let value_ns = figure(op_stats);
                    let margin = limit.as_ns() as f64 / value_ns.max(1) as f64;
                    let status = if value_ns <= limit.as_ns() {
                        Status::Pass
                    } else {
                        Status::Fail
                    };
                    rows.push(row(
                        op.name(),
                        bound,
                        limit_text,
                        format_ns(value_ns),
                        Some(margin),
                        status,
                        "",
                    ));
                }
            }
        }
    }
    if let Some(min) = targets.throughput_min_ops_per_s {
        let measured = facts.throughput_ops_per_s;
        let status = if measured >= min {
            Status::Pass
        } else {
            Status::Fail
        };
        rows.push(row(
            "all",
            "throughput",
            format!("{min:.0} ops/s"),
            format!("{measured:.0} ops/s"),
            Some(measured / min.max(1e-9)),
            status,
            "floor",
        ));
    }
    if let Some(max) = targets.error_ratio_max {
        let issued: u64 = facts.ops.values().map(|s| s.count).sum();
        let failed: u64 = facts.ops.values().map(|s| s.errors).sum();

        let ratio = failed as f64 / issued.max(1) as f64;
        let status = if ratio <= max { Status::Pass } else { Status::Fail };
        rows.push(row(
            "all",
            "errors",
            format!("{max}"),
            format!("{ratio:.6}"),
            None,
            status,
            &format!("{failed} of {issued} failed"),
        ));
    }
    rows
}

/// True if no row failed.
#[must_use]
pub fn all_pass(rows: &[Verdict]) -> bool {
    rows.iter().all(|r| r.status != Status::Fail)
}

/// The verdict table as text, for stdout.
#[must_use]
pub fn table(rows: &[Verdict]) -> String {
    let header = ["tier", "op", "bound", "limit", "measured", "margin", "verdict"];
    let body: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            let verdict = match r.status {
                Status::Pass => "pass".to_owned(),
                Status::Fail => "FAIL".to_owned(),
                Status::NotRun => format!("n/a ({})", r.note),
            };
            let verdict = match (r.status, r.note.is_empty()) {
                (Status::Fail, false) => format!("FAIL ({})", r.note),
                _ => verdict,
            };
            [
                r.tier.clone(),
                r.subject.clone(),
                r.bound.clone(),
                r.limit.clone(),
                r.measured.clone(),
                r.margin.map_or_else(|| "-".into(), format_margin),
                verdict,
            ]
        })
        .collect();
    render_table(&header, &body)
}

fn format_margin(margin: f64) -> String {
    if margin >= 10.0 {
        format!("{margin:.0}x")
    } else {
        format!("{margin:.2}x")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(get_p99_ns: u64) -> RunFacts {
        let stats = OpStats {
            count: 1000,
            p50_ns: 300,
            p99_ns: get_p99_ns,
            p999_ns: get_p99_ns * 2,
            max_ns: get_p99_ns * 10,
            ..OpStats::default()
        };
        RunFacts {
            ops: [(Op::Get, stats), (Op::Create, stats)].into_iter().collect(),
            issued: vec![Op::Get, Op::Create, Op::List],
            list_page: 100,
            throughput_ops_per_s: 5_000.0,
        }
    }

    #[test]
    fn shipped_tiers_parse() {
        for (name, _) in BUILTIN {
            let t = Targets::load(name).unwrap();
            assert_eq!(t.name, name);
            assert!(t.ops.contains_key(&Op::Get));
        }
        let seed = Targets::load("seed").unwrap();
        assert_eq!(seed.ops[&Op::Create].p99.unwrap().as_ns(), 10_000_000);
        assert_eq!(seed.ops[&Op::Get].p99.unwrap().as_ns(), 100_000);
        assert_eq!(seed.ops[&Op::List].page_min, Some(10_000));
    }

    #[test]
    fn retrieve_is_an_alias_and_bad_files_say_why() {
        let t = Targets::parse("t", "name = \"t\"\n[ops.retrieve]\np99 = \"1ms\"").unwrap();
        assert!(t.ops.contains_key(&Op::Get));
        let err = Targets::parse("t", "name = \"t\"\n[ops.get]\np98 = \"1ms\"").unwrap_err();
        assert!(err.to_string().contains("p98"), "{err}");
        let err = Targets::parse("t", "name = \"t\"\n[ops.get]\n").unwrap_err();
        assert!(err.to_string().contains("no bound"), "{err}");
        let err = Targets::parse("t", "name = \"t\"\n[ops.get]\np99 = \"fast\"").unwrap_err();
        assert!(err.to_string().contains("fast"), "{err}");
        assert!(Targets::parse("t", "name = \"t\"\n[ops.get]\np99 = \"1ms\"\npage_min = 5").is_err());
    }

    #[test]
    fn verdicts_pass_fail_and_not_run() {
        let t = Targets::parse(
            "t",
            r#"
            name = "t"
            throughput_min_ops_per_s = 1000
            [ops.get]
            p50 = "1us"
            p99 = "10us"
            [ops.delete]
            p99 = "1ms"
            [ops.list]
            p99 = "100ms"
            page_min = 10000
            "#,
        )
        .unwrap();
        let rows = evaluate(&t, &facts(5_000));
        let find = |op: &str, bound: &str| rows.iter().find(|r| r.subject == op && r.bound == bound).unwrap();
        assert_eq!(find("get", "p50").status, Status::Pass);
        assert_eq!(find("get", "p99").status, Status::Pass);
        assert!((find("get", "p99").margin.unwrap() - 2.0).abs() < 1e-9);
        assert_eq!(find("delete", "p99").status, Status::NotRun);
        assert_eq!(find("list", "p99").status, Status::NotRun);
        assert!(find("list", "p99").note.contains("page_min"));
        assert_eq!(find("all", "throughput").status, Status::Pass);
        assert!(all_pass(&rows));

        let rows = evaluate(&t, &facts(50_000));
        assert_eq!(
            rows.iter()
                .find(|r| r.bound == "p99" && r.subject == "get")
                .unwrap()
                .status,
            Status::Fail
        );
        assert!(!all_pass(&rows));
        let text = table(&rows);
        assert!(
            text.contains("FAIL") && text.contains("n/a (not in this scenario)"),
            "{text}"
        );
    }

    #[test]
    fn an_issued_kind_without_samples_fails() {
        let t = Targets::parse("t", "name = \"t\"\n[ops.list]\np99 = \"1s\"").unwrap();
        let rows = evaluate(&t, &facts(1));
        assert_eq!(rows[0].status, Status::Fail);
        assert_eq!(rows[0].note, "no samples");
    }

    #[test]
    fn error_ratio_is_checked() {
        let t = Targets::parse("t", "name = \"t\"\nerror_ratio_max = 0.01").unwrap();
        let mut f = facts(1);
        f.ops.get_mut(&Op::Get).unwrap().errors = 100;
        let rows = evaluate(&t, &f);
        assert_eq!(rows[0].status, Status::Fail, "100 of 2000 failed: {rows:?}");
        f.ops.get_mut(&Op::Get).unwrap().errors = 10;
        assert_eq!(evaluate(&t, &f)[0].status, Status::Pass, "10 of 2000 failed");
    }
}
