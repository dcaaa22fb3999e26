//! SVG charts of a run, next to its JSON: the latency distribution (by percentile, on the
//! scale HdrHistogram plots use, so the tail is readable) and deliveries per second over the
//! measured window. convoy and the MQTT reference share each chart when both ran.

use std::path::{Path, PathBuf};

use anyhow::Result;
use plotters::prelude::*;

use crate::measure::Report;

const SIZE: (u32, u32) = (900, 500);
/// The percentile axis ends at 99.999 %.
const NINES: f64 = 5.0;

/// Draws both charts; returns their paths.
pub fn draw(output: &Path, runs: &[(&str, &Report)]) -> Result<Vec<PathBuf>> {
    let latency = output.with_extension("latency.svg");
    let throughput = output.with_extension("throughput.svg");
    latency_chart(&latency, runs)?;
    throughput_chart(&throughput, runs)?;
    Ok(vec![latency, throughput])
}

/// A percentile as its "nines": 90 % -> 1, 99 % -> 2, 99.9 % -> 3.
fn nines(percentile: f64) -> f64 {
    (-(1.0 - percentile / 100.0).log10()).clamp(0.0, NINES)
}

fn percentile_label(nines: f64) -> String {
    let percentile = 100.0 * (1.0 - 10f64.powf(-nines));
    let decimals = (nines.round() as usize).saturating_sub(2);
    format!("{percentile:.decimals$} %")
}

fn latency_chart(path: &Path, runs: &[(&str, &Report)]) -> Result<()> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let max_ms = runs
        .iter()
        .flat_map(|(_, r)| r.latency_percentiles.iter().map(|(_, us)| *us as f64 / 1e3))
        .fold(1.0f64, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption("End-to-end latency by percentile", ("sans-serif", 22))
        .margin(16)
        .margin_right(40)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..NINES, 0.0..max_ms * 1.05)?;
    chart
        .configure_mesh()
        .x_labels(NINES as usize + 1)
        .x_label_formatter(&|x| percentile_label(*x))
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .draw()?;
    for (i, (name, report)) in runs.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let points = report.latency_percentiles.iter().map(|(p, us)| (nines(*p), *us as f64 / 1e3));
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart.configure_series_labels().border_style(BLACK).background_style(WHITE).draw()?;
    root.present()?;
    Ok(())
}

fn throughput_chart(path: &Path, runs: &[(&str, &Report)]) -> Result<()> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let seconds = runs.iter().map(|(_, r)| r.throughput_per_second.len()).max().unwrap_or(1).max(1);
    let max =
        runs.iter().flat_map(|(_, r)| r.throughput_per_second.iter().copied()).max().unwrap_or(1).max(1);
    let mut chart = ChartBuilder::on(&root)
        .caption("Deliveries per second over the measured window", ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..seconds as f64, 0.0..max as f64 * 1.1)?;
    chart
        .configure_mesh()
        .x_label_formatter(&|s| format!("{s:.0}"))
        .y_label_formatter(&|n| format!("{n:.0}"))
        .x_desc("second of the window")
        .y_desc("deliveries / s")
        .draw()?;
    for (i, (name, report)) in runs.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        // Each second's count drawn across that second.
        let points = report
            .throughput_per_second
            .iter()
            .enumerate()
            .flat_map(|(s, n)| [(s as f64, *n as f64), (s as f64 + 1.0, *n as f64)]);
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart.configure_series_labels().border_style(BLACK).background_style(WHITE).draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_percentile_axis_counts_nines() {
        assert_eq!(nines(0.0), 0.0);
        assert!((nines(90.0) - 1.0).abs() < 1e-9);
        assert!((nines(99.9) - 3.0).abs() < 1e-9);
        assert_eq!(nines(100.0), NINES);
        assert_eq!(percentile_label(0.0), "0 %");
        assert_eq!(percentile_label(2.0), "99 %");
        assert_eq!(percentile_label(4.0), "99.99 %");
    }
}
