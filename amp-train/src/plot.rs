//! The `--plot` SVG: training loss per step and per epoch.

use crate::train::TrainReport;
use crate::{Error, Result};
use plotters::prelude::*;
use std::path::Path;

/// Writes an SVG line chart of `report`'s per-step losses (thin) and
/// per-epoch mean losses (thick) to `path`.
pub fn write_loss_svg(path: &Path, report: &TrainReport) -> Result<()> {
    let plot_err = |e: String| Error::io("plotting", path, std::io::Error::other(e));
    let steps = report.step_losses.len().max(1);
    let per_epoch = steps as f64 / report.history.len().max(1) as f64;
    let max_loss = report
        .step_losses
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max)
        .max(1e-3)
        * 1.05;
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(e.to_string()))?;
    let title = format!(
        "amp-train: training loss ({}, {})",
        report.precision.dtype, report.device
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(52)
        .build_cartesian_2d(0f64..steps as f64, 0f64..max_loss)
        .map_err(|e| plot_err(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc(report.objective.as_str())
        .draw()
        .map_err(|e| plot_err(e.to_string()))?;
    chart
        .draw_series(LineSeries::new(
            report
                .step_losses
                .iter()
                .enumerate()
                .map(|(i, &l)| (i as f64, l)),
            BLUE.mix(0.35).stroke_width(1),
        ))
        .map_err(|e| plot_err(e.to_string()))?
        .label("per step")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.mix(0.35)));
    chart
        .draw_series(LineSeries::new(
            report
                .history
                .iter()
                .enumerate()
                .map(|(i, r)| ((i as f64 + 1.0) * per_epoch, r.mean_loss)),
            RED.stroke_width(3),
        ))
        .map_err(|e| plot_err(e.to_string()))?
        .label("epoch mean")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(3)));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| plot_err(e.to_string()))?;
    root.present().map_err(|e| plot_err(e.to_string()))?;
    Ok(())
}
