//! `loadgen compare A.json B.json`: two runs' result documents side by side,
//! one row per operation kind, with the change from A to B.

use std::fmt::Write as _;
use std::path::Path;

use crate::error::Error;
use crate::report::{thousands, Report};
use crate::table::render;
use crate::targets::OpStats;
use crate::units::format_ns;

fn change(a: f64, b: f64) -> String {
    if a <= 0.0 {
        return "-".into();
    }
    format!("{:+.1}%", (b / a - 1.0) * 100.0)
}

fn cell_ns(a: u64, b: u64) -> String {
    format!(
        "{} → {} ({})",
        format_ns(a),
        format_ns(b),
        change(a as f64, b as f64)
    )
}

fn cell_rate(a: f64, b: f64) -> String {
    format!("{} → {} ({})", thousands(a), thousands(b), change(a, b))
}

fn row(name: &str, a: &OpStats, b: &OpStats) -> Vec<String> {
    vec![
        name.to_owned(),
        cell_rate(a.throughput_ops_per_s, b.throughput_ops_per_s),
        cell_ns(a.p50_ns, b.p50_ns),
        cell_ns(a.p99_ns, b.p99_ns),
        cell_ns(a.p999_ns, b.p999_ns),
        cell_ns(a.max_ns, b.max_ns),
    ]
}

/// The comparison as text: who A and B are, then the per-kind table.
#[must_use]
pub fn table(a: &Report, b: &Report) -> String {
    let who = |label: &str, r: &Report| {
        format!(
            "{label}: {} {} at {}, {} ({}), verdict {}\n",
            r.scenario.name,
            r.mode,
            r.started_at,
            r.scenario.backend,
            r.git.short(),
            r.verdict.shout()
        )
    };
    let mut out = who("A", a) + &who("B", b);
    out.push('\n');
    let mut body: Vec<Vec<String>> = a
        .ops
        .iter()
        .filter_map(|(op, sa)| b.ops.get(op).map(|sb| row(op, sa, sb)))
        .collect();
    body.push(row("all point ops", &a.all_point_ops, &b.all_point_ops));
    let only: Vec<&String> = a
        .ops
        .keys()
        .filter(|k| !b.ops.contains_key(*k))
        .chain(b.ops.keys().filter(|k| !a.ops.contains_key(*k)))
        .collect();
    out.push_str(&render(&["op", "ops/s", "p50", "p99", "p99.9", "max"], &body));
    if !only.is_empty() {
        let _ = writeln!(
            out,
            "\nin one run only: {}",
            only.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        );
    }
    out
}

/// Reads both documents and prints the comparison.
///
/// # Errors
/// [`Error::Usage`] for a file that is not a result document this loadgen reads.
pub fn execute(a: &Path, b: &Path) -> Result<(), Error> {
    let read = |p: &Path| Report::read(p).map_err(|e| Error::Usage(format!("{e:#}")));
    print!("{}", table(&read(a)?, &read(b)?));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_signed_percentages_from_a_to_b() {
        assert_eq!(change(100.0, 112.0), "+12.0%");
        assert_eq!(change(100.0, 90.0), "-10.0%");
        assert_eq!(change(0.0, 5.0), "-");
        assert_eq!(cell_ns(1_000, 1_500), "1us → 1.5us (+50.0%)");
    }
}
