//! The two pictures of a run, as SVG: throughput and latency second by second, and the latency
//! percentile curve (HdrHistogram's classic plot, log-scaled towards the tail).

use std::path::Path;

use hdrhistogram::Histogram;
use plotters::prelude::*;

use super::record::Recorder;
use super::report::{Second, Summary};

const SIZE: (u32, u32) = (960, 540);

/// A latency line of the over-time plot: its label, colour and the figure it draws.
type Line = (&'static str, RGBColor, fn(&Second) -> f64);

fn err(e: impl std::fmt::Display) -> String {
    format!("plot: {e}")
}

/// Throughput (top) and p50/p99 latency (bottom) for each second of the run.
pub fn latency_over_time(summary: &Summary, path: &Path) -> Result<(), String> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (top, bottom) = root.split_vertically(SIZE.1 / 2);
    // The last, partial second would show as a fall to nothing.
    let whole = summary.elapsed_s.floor() as usize;
    let seconds = &summary.per_second[..summary.per_second.len().min(whole.max(1))];
    // Points sit at 0, 1, ... len-1: the axis ends at the last one, not a second past it.
    let last = seconds.len().saturating_sub(1).max(1) as f64;
    let max_ops = seconds.iter().map(|s| s.ops).max().unwrap_or(1).max(1) as f64;
    let max_ms = seconds
        .iter()
        .map(|s| s.p99_ms)
        .fold(0.0f64, f64::max)
        .max(0.1);

    let mut ops = ChartBuilder::on(&top)
        .caption(
            format!(
                "workload {}: {:.0} ops/s over {:.0} s",
                summary.workload_name(),
                summary.ops_per_s,
                summary.elapsed_s
            ),
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..last, 0f64..max_ops * 1.1)
        .map_err(err)?;
    ops.configure_mesh().y_desc("ops/s").draw().map_err(err)?;
    ops.draw_series(LineSeries::new(
        seconds.iter().map(|s| (s.second as f64, s.ops as f64)),
        &BLUE,
    ))
    .map_err(err)?;

    let mut lat = ChartBuilder::on(&bottom)
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..last, 0f64..max_ms * 1.1)
        .map_err(err)?;
    lat.configure_mesh()
        .x_desc("second")
        .y_desc("latency (ms)")
        .draw()
        .map_err(err)?;
    let lines: [Line; 2] = [("p50", GREEN, |s| s.p50_ms), ("p99", RED, |s| s.p99_ms)];
    for (label, color, pick) in lines {
        lat.draw_series(LineSeries::new(
            seconds.iter().map(|s| (s.second as f64, pick(s))),
            color,
        ))
        .map_err(err)?
        .label(label)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    lat.configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

/// Percentile (x, as the number of nines: 0 = p0, 1 = p90, 2 = p99, 3 = p99.9) against latency.
fn curve(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    (0..=400)
        .map(|i| {
            let nines = i as f64 / 100.0;
            let quantile = 1.0 - 10f64.powf(-nines);
            (nines, h.value_at_quantile(quantile) as f64 / 1000.0)
        })
        .collect()
}

/// One percentile curve per operation kind, titled with the run it belongs to.
pub fn percentiles(summary: &Summary, total: &Recorder, path: &Path) -> Result<(), String> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let max_ms = total
        .latency
        .values()
        .map(|h| h.max() as f64 / 1000.0)
        .fold(0.1f64, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "workload {}: latency by percentile ({} ops, {} clients, {:.0} ops/s)",
                summary.workload_name(),
                summary.ops,
                summary.settings.clients,
                summary.ops_per_s
            ),
            ("sans-serif", 18),
        )
        .margin(10)
        .margin_right(40)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..4f64, 0f64..max_ms * 1.05)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .x_labels(5)
        .x_label_formatter(&|nines| {
            let p = 100.0 * (1.0 - 10f64.powf(-nines));
            let decimals = (nines.round() as usize).saturating_sub(2);
            format!("p{p:.decimals$}")
        })
        .y_desc("latency (ms)")
        .draw()
        .map_err(err)?;
    let drawn = total.latency.iter().filter(|(_, h)| !h.is_empty());
    for (i, (kind, h)) in drawn.enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(curve(h), color))
            .map_err(err)?
            .label(kind.name())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}
