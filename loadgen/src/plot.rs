//! SVG plots: latency by percentile (one line per operation kind), the
//! run's timeline (throughput, p50 and p99 per second, disturbed seconds
//! marked), and latency against throughput for a sweep.

use std::path::Path;

use plotters::prelude::*;

use crate::collect::IntervalPoint;
use crate::hist::Hist;

/// Deepest percentile plotted: 99.9999% (x = 1 / (1 − q) = 10^6).
const X_MAX: f64 = 1e6;

/// Latency-by-percentile plot in the usual `HdrHistogram` form: the x axis is
/// `1 / (1 − quantile)` on a log scale (50%, 90%, 99%, 99.9% ... equally
/// spaced), the y axis latency in microseconds on a log scale.
///
/// # Errors
/// If the file cannot be written.
pub fn percentiles(path: &Path, title: &str, series: &[(&str, &Hist)]) -> anyhow::Result<()> {
    let lines: Vec<(&str, Vec<(f64, f64)>)> = series
        .iter()
        .filter(|(_, h)| !h.is_empty())
        .map(|(name, h)| (*name, percentile_points(h)))
        .collect();
    let (y_min, y_max) = bounds(lines.iter().flat_map(|(_, pts)| pts.iter().map(|p| p.1)));
    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .margin_right(48)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((1.0..X_MAX).log_scale(), (y_min..y_max).log_scale())
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (µs)")
        .x_label_formatter(&|x| percentile_label(*x))
        .y_label_formatter(&|y| format!("{y}"))
        .draw()
        .map_err(plot_error)?;
    for (i, (name, points)) in lines.into_iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(plot_error)?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(plot_error)?;
    root.present().map_err(plot_error)?;
    Ok(())
}

/// One step of a sweep, as plotted.
pub struct SweepPoint {
    /// Achieved point operations per second.
    pub throughput_ops_per_s: f64,
    /// Median latency, ns.
    pub p50_ns: u64,
    /// 99th percentile, ns.
    pub p99_ns: u64,
    /// 99.9th percentile, ns.
    pub p999_ns: u64,
}

/// Latency against achieved throughput, one point per sweep step, with the
/// knee marked.
///
/// # Errors
/// If the file cannot be written.
pub fn sweep(
    path: &Path,
    title: &str,
    points: &[SweepPoint],
    knee_ops_per_s: Option<f64>,
) -> anyhow::Result<()> {
    let us = |ns: u64| (ns as f64 / 1e3).max(1e-3);
    let series: [(&str, Vec<(f64, f64)>); 3] = [
        (
            "p50",
            points
                .iter()
                .map(|p| (p.throughput_ops_per_s, us(p.p50_ns)))
                .collect(),
        ),
        (
            "p99",
            points
                .iter()
                .map(|p| (p.throughput_ops_per_s, us(p.p99_ns)))
                .collect(),
        ),
        (
            "p99.9",
            points
                .iter()
                .map(|p| (p.throughput_ops_per_s, us(p.p999_ns)))
                .collect(),
        ),
    ];
    let (y_min, y_max) = bounds(series.iter().flat_map(|(_, pts)| pts.iter().map(|p| p.1)));
    let x_max = points.iter().map(|p| p.throughput_ops_per_s).fold(1.0, f64::max) * 1.1;
    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, (y_min..y_max).log_scale())
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("throughput (ops/s)")
        .y_desc("latency (µs)")
        .x_label_formatter(&|x| format!("{:.0}k", x / 1e3))
        .y_label_formatter(&|y| format!("{y}"))
        .draw()
        .map_err(plot_error)?;
    for (i, (name, pts)) in series.into_iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(plot_error)?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        chart
            .draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))
            .map_err(plot_error)?;
    }
    if let Some(knee) = knee_ops_per_s {
        chart
            .draw_series(LineSeries::new(
                vec![(knee, y_min), (knee, y_max)],
                BLACK.stroke_width(1),
            ))
            .map_err(plot_error)?
            .label(format!("knee {:.0}k ops/s", knee / 1e3))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(plot_error)?;
    root.present().map_err(plot_error)?;
    Ok(())
}

/// Where the timeline is shaded: warm-up seconds grey, disturbed ones red.
fn shading(points: &[IntervalPoint]) -> Vec<(f64, RGBAColor)> {
    points
        .iter()
        .filter_map(|p| {
            let colour = if p.warmup {
                RGBColor(200, 200, 200).mix(0.4)
            } else if p.disturbed {
                RGBColor(230, 80, 80).mix(0.25)
            } else {
                return None;
            };
            Some((p.start_s, colour))
        })
        .collect()
}

/// A named line: label, colour, stroke width, points.
type Line = (&'static str, RGBColor, u32, Vec<(f64, f64)>);

/// The run second by second: the backend's throughput above, its p50 and
/// p99 below (with the peer's p99 beside), warm-up seconds greyed and
/// seconds with a disturbed slice shaded red.
///
/// # Errors
/// If the file cannot be written.
pub fn timeline(path: &Path, title: &str, points: &[IntervalPoint]) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (960, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let root = root.titled(title, ("sans-serif", 18)).map_err(plot_error)?;
    let (upper, lower) = root.split_vertically(240);
    let width = points
        .windows(2)
        .map(|w| w[1].start_s - w[0].start_s)
        .next()
        .unwrap_or(1.0);
    let x_max = points.last().map_or(1.0, |p| p.start_s + width);
    let shaded = shading(points);
    let mid = |p: &IntervalPoint| p.start_s + width / 2.0;
    let us = |ns: u64| (ns as f64 / 1e3).max(1e-3);

    let y_max = points.iter().map(|p| p.ops_per_s).fold(1.0, f64::max) * 1.15;
    let mut top = ChartBuilder::on(&upper)
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(plot_error)?;
    top.configure_mesh()
        .y_desc("ops/s")
        .y_label_formatter(&|y| format!("{:.0}k", y / 1e3))
        .draw()
        .map_err(plot_error)?;
    top.draw_series(
        shaded
            .iter()
            .map(|(x, c)| Rectangle::new([(*x, 0.0), (x + width, y_max)], c.filled())),
    )
    .map_err(plot_error)?;
    top.draw_series(LineSeries::new(
        points.iter().map(|p| (mid(p), p.ops_per_s)),
        BLUE.stroke_width(2),
    ))
    .map_err(plot_error)?;

    let lines: [Line; 3] = [
        (
            "backend p50",
            RGBColor(0, 120, 0),
            2,
            points.iter().map(|p| (mid(p), us(p.p50_ns))).collect(),
        ),
        (
            "backend p99",
            RGBColor(200, 0, 0),
            2,
            points.iter().map(|p| (mid(p), us(p.p99_ns))).collect(),
        ),
        (
            "peer p99",
            RGBColor(120, 120, 120),
            1,
            points
                .iter()
                .filter_map(|p| p.peer_p99_ns.map(|v| (mid(p), us(v))))
                .collect(),
        ),
    ];
    let (y_lo, y_hi) = bounds(lines.iter().flat_map(|l| l.3.iter().map(|p| p.1)));
    let mut bottom = ChartBuilder::on(&lower)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, (y_lo..y_hi).log_scale())
        .map_err(plot_error)?;
    bottom
        .configure_mesh()
        .x_desc("seconds since the load started (grey: warm-up; red: a disturbed slice)")
        .y_desc("latency (µs)")
        .y_label_formatter(&|y| format!("{y}"))
        .draw()
        .map_err(plot_error)?;
    bottom
        .draw_series(
            shaded
                .iter()
                .map(|(x, c)| Rectangle::new([(*x, y_lo), (x + width, y_hi)], c.filled())),
        )
        .map_err(plot_error)?;
    for (name, color, stroke, series) in lines {
        bottom
            .draw_series(LineSeries::new(series, color.stroke_width(stroke)))
            .map_err(plot_error)?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(stroke)));
    }
    bottom
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(plot_error)?;
    root.present().map_err(plot_error)?;
    Ok(())
}

fn percentile_points(hist: &Hist) -> Vec<(f64, f64)> {
    hist.iter_quantiles(4)
        .map(|v| {
            let q = v.quantile_iterated_to();
            let x = if q >= 1.0 {
                X_MAX
            } else {
                (1.0 / (1.0 - q)).min(X_MAX)
            };

            let y = (v.value_iterated_to() as f64 / 1e3).max(1e-3);
            (x, y)
        })
        .collect()
}

fn percentile_label(x: f64) -> String {
    let q = 100.0 * (1.0 - 1.0 / x);
    if q < 1.0 {
        "0%".into()
    } else {
        let text = format!("{q:.4}");
        format!("{}%", text.trim_end_matches('0').trim_end_matches('.'))
    }
}

/// Log-scale bounds: a decade-aligned range around the values.
fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return (0.1, 10.0);
    }
    let lo = 10f64.powf(lo.max(1e-3).log10().floor());
    let hi = 10f64.powf(hi.max(lo * 10.0).log10().ceil());
    (lo, hi)
}

fn plot_error<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("plotting: {e:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_bounds() {
        assert_eq!(percentile_label(1.0), "0%");
        assert_eq!(percentile_label(10.0), "90%");
        assert_eq!(percentile_label(1000.0), "99.9%");
        assert_eq!(bounds([0.35, 42.0].into_iter()), (0.1, 100.0));
    }

    #[test]
    fn a_percentile_plot_is_an_svg_with_every_series() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.svg");
        let mut a = crate::hist::new_hist();
        let mut b = crate::hist::new_hist();
        for i in 1..10_000u64 {
            a.record(200 + i % 700).unwrap();
            b.record(1_000 + i * 3).unwrap();
        }
        percentiles(&path, "test", &[("get", &a), ("update", &b)]).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("update") && svg.contains("99.9%"));
    }

    #[test]
    fn a_timeline_marks_disturbed_seconds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.svg");
        let points: Vec<IntervalPoint> = (0..6u32)
            .map(|i| IntervalPoint {
                start_s: f64::from(i),
                warmup: i == 0,
                ops: 1_000,
                ops_per_s: 2_000.0,
                p50_ns: 400,
                p99_ns: 9_000,
                max_ns: 20_000,
                peer_p99_ns: Some(8_000),
                disturbed: i == 3,
                taken_ms: 0.0,
            })
            .collect();
        timeline(&path, "test", &points).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("backend p99") && svg.contains("peer p99"));
        assert!(svg.contains("#E65050"), "a disturbed second is shaded");
    }
}
