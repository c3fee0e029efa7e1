//! What a run writes: the result directory's files (JSON, markdown, plots,
//! the interval log, one `.hgrm` per operation) and the per-operation
//! percentile table on stdout.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::SystemTime;

use crate::hist::{quantile_ns, Hist, OpHists};
use crate::limits::HISTOGRAM_SIGFIG;
use crate::mix::Op;
use crate::report::{thousands, thousands_u, Report};
use crate::table::render;
use crate::units::{format_ns, ParseError};
use crate::workers::Outcome;

/// The default results directory for a run of `scenario` started now.
#[must_use]
pub fn default_dir(root: &Path, scenario: &str) -> PathBuf {
    let base = crate::report::default_out_dir(root, scenario, SystemTime::now());
    // Named to the second: a second run in the same second gets its own.
    let mut dir = base.clone();
    let mut n = 2;
    while dir.exists() {
        dir = PathBuf::from(format!("{}-{n}", base.display()));
        n += 1;
    }
    dir
}

/// Makes sure the results can go to `dir` before a load runs (created,
/// and a file written and removed there): a run that could not write them
/// would end with an error in place of its verdict.
///
/// # Errors
/// Why not, naming the directory.
pub fn prepare(dir: &Path) -> anyhow::Result<()> {
    let probe = dir.join(".loadgen-probe");
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&probe, b""))
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| anyhow::anyhow!("cannot write results to {}: {e}", dir.display()))
}

/// Writes the JSON, markdown, plots, interval log and `.hgrm` files into `dir`.
///
/// # Errors
/// I/O.
pub fn write(dir: &Path, report: &Report, outcome: &Outcome) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    let files = &report.files;
    let write = |name: &str, bytes: &[u8]| {
        std::fs::write(dir.join(name), bytes)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", dir.join(name).display()))
    };
    write(
        &files.json,
        format!("{}\n", serde_json::to_string_pretty(report)?).as_bytes(),
    )?;
    write(&files.markdown, report.markdown().as_bytes())?;
    write(&files.interval_log, &outcome.interval_log)?;
    let all = &outcome.backend.tally.all;
    let backend: Vec<(&str, &Hist)> = Op::ALL
        .iter()
        .map(|op| (op.name(), all.get(*op)))
        .filter(|(_, h)| !h.is_empty())
        .collect();
    for (name, hist) in &backend {
        write(&format!("{name}.hgrm"), hgrm(hist).as_bytes())?;
    }
    // A rerun into the same directory: an earlier run's histogram of a kind
    // this run has none of would sit beside this run's results.
    for op in Op::ALL {
        if all.get(op).is_empty() {
            let stale = dir.join(format!("{}.hgrm", op.name()));
            match std::fs::remove_file(&stale) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(anyhow::anyhow!("cannot remove {}: {e}", stale.display()));
                }
                _ => {}
            }
        }
    }
    let peer_all = outcome.peer.as_ref().map(|p| p.tally.all.point_ops());
    let mut series = backend;
    if let Some(peer) = &peer_all {
        series.push(("peer (all point ops)", peer));
    }
    let title = format!(
        "{}: latency by percentile ({}, {} live sessions)",
        report.scenario.name, report.mode, report.scenario.sessions
    );
    crate::plot::percentiles(&dir.join(&files.plot_svg), &title, &series)?;
    let title = format!("{}: the backend per second", report.scenario.name);
    crate::plot::timeline(&dir.join(&files.timeline_svg), &title, &report.timeline)?;
    Ok(())
}

/// A histogram's percentile distribution in `HdrHistogram`'s `.hgrm` text
/// form (as `outputPercentileDistribution` writes it, 5 ticks per half
/// distance), values in milliseconds, which is what the `HdrHistogram`
/// plotter and wrk2 expect.
#[must_use]
pub fn hgrm(hist: &Hist) -> String {
    const NS_PER_MS: f64 = 1e6;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    for v in hist.iter_quantiles(5) {
        total += v.count_since_last_iteration();
        let value = v.value_iterated_to() as f64 / NS_PER_MS;
        let q = v.quantile_iterated_to();
        if q < 1.0 {
            let _ = writeln!(out, "{value:12.6} {q:2.12} {total:10} {:14.2}", 1.0 / (1.0 - q));
        } else {
            let _ = writeln!(out, "{value:12.6} {q:2.12} {total:10}");
        }
    }
    // HdrHistogram's sub-bucket count: 2 × 10^digits rounded up to a power of two.
    let sub_buckets = (2 * 10u64.pow(u32::from(HISTOGRAM_SIGFIG))).next_power_of_two();
    let _ = writeln!(
        out,
        "#[Mean    = {:12.6}, StdDeviation   = {:12.6}]",
        hist.mean() / NS_PER_MS,
        hist.stdev() / NS_PER_MS
    );
    let _ = writeln!(
        out,
        "#[Max     = {:12.6}, Total count    = {:12}]",
        hist.max() as f64 / NS_PER_MS,
        hist.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        hist.buckets(),
        sub_buckets
    );
    out
}

/// One column of the percentile table: a percentile or the maximum.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Column {
    /// A percentile, 0 to 100.
    Percentile(f64),
    /// The slowest.
    Max,
}

impl Column {
    /// The default columns: p50, p90, p99, p99.9, p99.99, max.
    #[must_use]
    pub fn defaults() -> Vec<Column> {
        [50.0, 90.0, 99.0, 99.9, 99.99]
            .map(Column::Percentile)
            .into_iter()
            .chain([Column::Max])
            .collect()
    }

    fn header(self) -> String {
        match self {
            Column::Percentile(p) => format!("p{p}"),
            Column::Max => "max".into(),
        }
    }

    fn of(self, hist: &Hist) -> u64 {
        match self {
            Column::Percentile(p) => quantile_ns(hist, p / 100.0),
            Column::Max => hist.max(),
        }
    }
}

impl FromStr for Column {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        let text = s.trim().trim_start_matches('p');
        if text == "max" || text == "100" {
            return Ok(Column::Max);
        }
        match text.parse::<f64>() {
            Ok(p) if p > 0.0 && p < 100.0 => Ok(Column::Percentile(p)),
            _ => Err(ParseError::new(
                "percentile",
                s,
                "expected a percentile between 0 and 100 (50, 99.9, p99) or max",
            )),
        }
    }
}

/// The backend's per-operation percentile table over every measured slice,
/// with the peer's point operations below for comparison.
#[must_use]
pub fn percentile_table(outcome: &Outcome, columns: &[Column]) -> String {
    let mut header = vec!["op".to_owned(), "count".into(), "ops/s".into()];
    header.extend(columns.iter().map(|c| c.header()));
    header.push("errors".into());
    let peer = outcome.peer.as_ref().map(|p| (&p.tally.all, p.active_s));
    let body = percentile_rows(
        &outcome.backend.tally.all,
        (outcome.backend.active_s, outcome.backend.measured_s),
        peer,
        columns,
    );
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    render(&header, &body)
}

/// The table's rows: per kind, then all point operations, then the peer's.
/// The rate counts the operations completed within their slice, as every
/// other rate of a run does (a late completion's latency counts, not its
/// rate): counting late ones made an overloaded backend look as if it
/// kept up.
/// `(active_s, list_s)`: the point operations' rates are over the slices
/// their clients ran in, the lister's over every measured slice (it runs
/// to the end, past the point clients' with `--ops`).
fn percentile_rows(
    all: &OpHists,
    (active_s, list_s): (f64, f64),
    peer: Option<(&OpHists, f64)>,
    columns: &[Column],
) -> Vec<Vec<String>> {
    let row = |name: &str, hist: &Hist, completed: u64, errors: u64, seconds: f64| {
        let mut cells = vec![
            name.to_owned(),
            thousands_u(hist.len()),
            thousands(completed as f64 / seconds.max(1e-9)),
        ];
        cells.extend(columns.iter().map(|c| format_ns(c.of(hist))));
        cells.push(errors.to_string());
        cells
    };
    let mut body: Vec<Vec<String>> = Op::ALL
        .iter()
        .filter(|op| !all.get(**op).is_empty())
        .map(|op| {
            row(
                op.name(),
                all.get(*op),
                all.completed(*op),
                all.errors[op.index()],
                if *op == Op::List { list_s } else { active_s },
            )
        })
        .collect();
    let errors = |h: &OpHists| {
        Op::ALL
            .iter()
            .filter(|op| **op != Op::List)
            .map(|op| h.errors[op.index()])
            .sum()
    };
    body.push(row(
        "all point ops",
        &all.point_ops(),
        all.completed_point_ops(),
        errors(all),
        active_s,
    ));
    if let Some((p, seconds)) = peer {
        body.push(row(
            "peer (point ops)",
            &p.point_ops(),
            p.completed_point_ops(),
            errors(p),
            seconds,
        ));
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ops/s column counts operations completed within their slice,
    /// as the run's other rates do: 100 in time and 30 late over a second
    /// is 100 a second, not 130.
    #[test]
    fn the_tables_rate_counts_operations_completed_in_time() {
        let mut all = OpHists::default();
        for i in 0..130 {
            all.record(Op::Get, 1_000, true);
            if i >= 100 {
                all.mark_late(Op::Get);
            }
        }
        for _ in 0..50 {
            all.record(Op::List, 1_000, true);
        }
        // The point clients ran for 1 s of a 10 s run (`--ops`); the
        // lister ran all 10: 5 pages a second, not 50.
        let rows = percentile_rows(&all, (1.0, 10.0), None, &[]);
        let get = rows.iter().find(|r| r[0] == "get").expect("a get row");
        assert_eq!((get[1].as_str(), get[2].as_str()), ("130", "100"), "{get:?}");
        let list = rows.iter().find(|r| r[0] == "list").expect("a list row");
        assert_eq!((list[1].as_str(), list[2].as_str()), ("50", "5"), "{list:?}");
        let point = rows
            .iter()
            .find(|r| r[0] == "all point ops")
            .expect("a total row");
        assert_eq!(point[2], "100", "{point:?}");
    }

    #[test]
    fn an_hgrm_file_has_the_hdrhistogram_layout() {
        let mut h = crate::hist::new_hist();
        for i in 1..=10_000u64 {
            h.record(i * 100).unwrap();
        }
        let text = hgrm(&h);
        let mut lines = text.lines();
        assert!(lines.next().unwrap().contains("Value") && text.contains("1/(1-Percentile)"));
        let rows: Vec<Vec<&str>> = text
            .lines()
            .skip(2)
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert!(rows.len() > 20);
        let last = rows.last().unwrap();
        assert_eq!(last[2], "10000", "the last row counts every value");
        assert!(
            (last[0].parse::<f64>().unwrap() - 1.0).abs() < 0.001,
            "1 ms max: {last:?}"
        );
        assert!(text.contains("#[Max     =") && text.contains("Total count    =        10000"));
    }

    #[test]
    fn percentile_columns_parse_and_refuse_nonsense() {
        assert_eq!("99.9".parse::<Column>().unwrap(), Column::Percentile(99.9));
        assert_eq!("p50".parse::<Column>().unwrap(), Column::Percentile(50.0));
        assert_eq!("max".parse::<Column>().unwrap(), Column::Max);
        for bad in ["0", "101", "fast", ""] {
            assert!(bad.parse::<Column>().is_err(), "{bad}");
        }
    }
}
