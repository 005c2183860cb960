//! The `--plot` SVG: what a mixed-precision run did, in panels that share
//! one integer step axis. Each panel's legend sits above its plot, where it
//! cannot hide data; the title names the dtype and the device.
//!
//! 1. **Loss** (y label: the report's objective): the training loss of every
//!    step (thin), the mean training loss of each epoch (a thick staircase,
//!    one stair per epoch) and the loss on the evaluation data after each
//!    epoch (dots). Dashed lines mark the epoch boundaries, labelled
//!    `epoch N` along the top (`epochs N–M` in groups when epochs are
//!    narrow). A non-finite loss (NaN, ±inf) breaks the lines and is marked
//!    by a ▲ on the panel's top edge; losses far above the rest (a
//!    divergence), which would otherwise flatten every other curve, are
//!    drawn on that edge too and marked with a grey ▲.
//! 2. **Evaluation accuracy** after each epoch, with its values where they
//!    fit (only where the run has one).
//! 3. **Loss scale** (f16 runs with a `GradScaler`): the scale each step's
//!    loss was multiplied by, on a log axis with power-of-two ticks, with a
//!    red ▼ on every step the scaler skipped for inf/NaN gradients. A run
//!    without loss scaling (bf16, f32) gets a one-line strip saying so
//!    instead.

use crate::train::TrainReport;
use crate::{Error, Result};
use plotters::chart::MeshStyle;
use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::types::RangedCoordu64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;

/// Width of the SVG in pixels.
const WIDTH: u32 = 1000;
/// Heights of the title block, the panels and the no-scaling strip.
const TITLE_H: u32 = 62;
const LOSS_H: u32 = 340;
const ACCURACY_H: u32 = 200;
const SCALE_H: u32 = 230;
const NOTE_H: u32 = 40;
/// Left (y labels) and right margins, the same for every panel so that the
/// panels' step axes line up.
const Y_LABEL_AREA: u32 = 78;
const RIGHT_MARGIN: u32 = 34;
/// The plotting area's width (about: plotters takes a few pixels more for
/// the axis).
const PLOT_W: u32 = WIDTH - Y_LABEL_AREA - RIGHT_MARGIN;

/// Series colours (the Tableau palette). Each is used by one kind of mark
/// only, so the SVG can be read back (the tests count marks by colour).
const STEP_LOSS: RGBColor = RGBColor(31, 119, 180);
const EPOCH_LOSS: RGBColor = RGBColor(18, 56, 102);
const EVAL_LOSS: RGBColor = RGBColor(255, 127, 14);
const ACCURACY: RGBColor = RGBColor(44, 160, 44);
const SCALE: RGBColor = RGBColor(148, 103, 189);
const SKIP: RGBColor = RGBColor(214, 39, 40);
const NON_FINITE: RGBColor = RGBColor(227, 0, 160);
const OFF_SCALE: RGBColor = RGBColor(127, 127, 127);
const BOUNDARY: RGBColor = RGBColor(150, 150, 150);
const NOTE: RGBColor = RGBColor(90, 90, 90);

const FONT: &str = "sans-serif";
/// Most y ticks on the loss panel.
const LOSS_TICKS: usize = 8;

type DrawResult<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Writes the run's chart (see the module docs) as an SVG to `path`.
pub fn write_loss_svg(path: &Path, report: &TrainReport) -> Result<()> {
    let plot_err = |e: String| Error::io("plotting", path, std::io::Error::other(e));
    let layout = Layout::of(report);
    let root = SVGBackend::new(path, (WIDTH, layout.height())).into_drawing_area();
    draw(&root, report, &layout).map_err(|e| plot_err(e.to_string()))?;
    root.present().map_err(|e| plot_err(e.to_string()))?;
    Ok(())
}

/// What the chart holds, worked out from the report before drawing.
struct Layout {
    /// Steps in the run (the step axis runs from 0 to this).
    steps: u64,
    /// The step count at the end of each epoch (`history`'s order).
    epoch_ends: Vec<u64>,
    /// Whether the accuracy panel is drawn.
    accuracy: bool,
    /// Whether the loss-scale panel is drawn (else the no-scaling strip).
    scale: bool,
}

impl Layout {
    fn of(report: &TrainReport) -> Layout {
        let steps = report.step_losses.len() as u64;
        let epochs = report.history.len() as u64;
        // The report holds no per-epoch step counts; every epoch has the
        // same number of batches, so epoch k ends at k·steps/epochs.
        let epoch_ends = (1..=epochs).map(|k| k * steps / epochs).collect();
        Layout {
            steps,
            epoch_ends,
            accuracy: report.history.iter().any(|r| finite(r.eval_accuracy)),
            scale: !report.step_loss_scales.is_empty(),
        }
    }

    fn height(&self) -> u32 {
        TITLE_H
            + LOSS_H
            + if self.accuracy { ACCURACY_H } else { 0 }
            + if self.scale { SCALE_H } else { NOTE_H }
    }

    /// The step axis' range: never empty, so a run without steps still draws.
    fn x_range(&self) -> std::ops::Range<u64> {
        0..self.steps.max(1)
    }

    /// Pixels per epoch along the step axis (about).
    fn epoch_px(&self) -> f64 {
        f64::from(PLOT_W) / self.epoch_ends.len().max(1) as f64
    }

    /// Epochs per labelled group: 1 while `epoch N` fits in an epoch's
    /// width, else the fewest of 2, 5, 10, 20, 50, 100, … whose group fits
    /// `epochs N–M`.
    fn epoch_stride(&self) -> usize {
        let px = self.epoch_px();
        if px >= 64.0 {
            return 1;
        }
        let epochs = self.epoch_ends.len();
        (0u32..)
            .flat_map(|k| [1, 2, 5].map(|m| m * 10usize.pow(k)))
            .find(|&stride| stride as f64 * px >= 96.0 || stride >= epochs)
            .unwrap_or(1)
    }

    /// The steps at which a dashed line marks an epoch boundary (every
    /// `epoch_stride()`-th), the run's end excluded.
    fn boundaries(&self) -> Vec<u64> {
        let stride = self.epoch_stride();
        self.epoch_ends
            .iter()
            .enumerate()
            .filter(|&(i, &end)| (i + 1) % stride == 0 && end < self.steps)
            .map(|(_, &end)| end)
            .collect()
    }

    /// `(step, "epoch N")` (or `"epochs N–M"`) for the labels between the
    /// boundaries.
    fn epoch_labels(&self) -> Vec<(u64, String)> {
        let stride = self.epoch_stride();
        let mut labels = Vec::new();
        let mut start = 0;
        for (group, ends) in self.epoch_ends.chunks(stride).enumerate() {
            let end = *ends.last().expect("chunks are not empty");
            let first = group * stride + 1;
            let label = if ends.len() == 1 {
                format!("epoch {first}")
            } else {
                format!("epochs {first}–{}", first + ends.len() - 1)
            };
            if end > start {
                labels.push(((start + end) / 2, label));
            }
            start = end;
        }
        labels
    }

    /// The width of the epoch means' staircase: thinner when epochs are
    /// narrow, where it would hide the per-step losses.
    fn stair_width(&self) -> u32 {
        if self.epoch_px() >= 16.0 {
            3
        } else {
            2
        }
    }

    /// The radius of a per-epoch dot: smaller when epochs are narrow.
    fn dot_radius(&self) -> i32 {
        if self.epoch_px() >= 16.0 {
            4
        } else {
            2
        }
    }
}

fn finite(v: Option<f64>) -> bool {
    v.is_some_and(f64::is_finite)
}

fn draw(
    root: &DrawingArea<SVGBackend, Shift>,
    report: &TrainReport,
    layout: &Layout,
) -> DrawResult<()> {
    root.fill(&WHITE)?;
    let (header, rest) = root.split_vertically(TITLE_H);
    draw_title(&header, report)?;
    let (loss_area, rest) = rest.split_vertically(LOSS_H);
    draw_loss(&loss_area, report, layout)?;
    let rest = if layout.accuracy {
        let (accuracy_area, rest) = rest.split_vertically(ACCURACY_H);
        draw_accuracy(&accuracy_area, report, layout)?;
        rest
    } else {
        rest
    };
    if layout.scale {
        draw_scale(&rest, report, layout)?;
    } else {
        draw_no_scaling(&rest, report)?;
    }
    Ok(())
}

fn draw_title(area: &DrawingArea<SVGBackend, Shift>, report: &TrainReport) -> DrawResult<()> {
    let centre = (WIDTH / 2) as i32;
    let p = &report.precision;
    let title = format!("amp-train: {} on {}", p.dtype, report.device);
    let style = TextStyle::from((FONT, 24).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    area.draw_text(&title, &style, (centre, 8))?;
    let scaling = match report.final_loss_scale {
        Some(scale) => format!(
            "loss scaling, final scale {}",
            format_scale(f64::from(scale))
        ),
        None => "no loss scaling".to_string(),
    };
    let subtitle = format!(
        "{} · {} · batch {} · {} epochs, {} steps, {} skipped · {}",
        report.objective,
        report.optimizer,
        report.batch_size,
        report.epochs,
        report.steps,
        report.skipped_steps,
        scaling
    );
    let style = TextStyle::from((FONT, 15).into_font())
        .color(&NOTE)
        .pos(Pos::new(HPos::Center, VPos::Top));
    area.draw_text(&subtitle, &style, (centre, 38))?;
    Ok(())
}

/// The loss panel's y range: from 0 to a little above the largest finite
/// loss, unless a few losses are far above the rest (a divergence), which
/// are then drawn on the top edge and marked.
fn loss_ceiling(report: &TrainReport) -> f64 {
    let mut losses: Vec<f64> = report
        .step_losses
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .collect();
    losses.sort_by(f64::total_cmp);
    let others = report
        .history
        .iter()
        .flat_map(|r| [Some(r.mean_loss), r.eval_loss])
        .flatten()
        .filter(|v| v.is_finite());
    let max = losses.iter().copied().chain(others).fold(0.0f64, f64::max);
    // A healthy run's first losses are its largest and are well within 10×
    // the median; past that, cap the axis so the rest stays readable.
    let ceiling = match losses.get(losses.len() / 2) {
        Some(&median) if median > 0.0 => {
            let first = report
                .step_losses
                .iter()
                .copied()
                .find(|v| v.is_finite())
                .unwrap_or(0.0);
            let cap = (10.0 * median).max(1.2 * first);
            if cap < max {
                nice_ceil(cap).min(max)
            } else {
                max
            }
        }
        _ => max,
    };
    ceiling.max(1e-3)
}

/// The smallest of 1, 2, 2.5, 5 × 10^k at or above `v` (> 0).
fn nice_ceil(v: f64) -> f64 {
    let power = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * power)
        .find(|&c| c >= v * (1.0 - 1e-12))
        .unwrap_or(v)
}

/// Splits `(step, value)` points into runs of finite values, so that a line
/// breaks at NaN/inf instead of drawing through it.
fn finite_runs(points: impl Iterator<Item = (u64, f64)>) -> Vec<Vec<(u64, f64)>> {
    let mut runs = vec![Vec::new()];
    for (x, y) in points {
        if y.is_finite() {
            runs.last_mut().expect("never empty").push((x, y));
        } else if !runs.last().expect("never empty").is_empty() {
            runs.push(Vec::new());
        }
    }
    runs.retain(|r| !r.is_empty());
    runs
}

fn mesh_style<'a, 'b, X, Y>(
    chart: &'b mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
) -> MeshStyle<'a, 'b, X, Y, SVGBackend<'a>>
where
    X: Ranged<ValueType = u64> + ValueFormatter<u64>,
    Y: Ranged + ValueFormatter<Y::ValueType>,
{
    let mut mesh = chart.configure_mesh();
    mesh.bold_line_style(BLACK.mix(0.08))
        .light_line_style(TRANSPARENT)
        .x_labels(12)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16));
    mesh
}

fn draw_epoch_boundaries<'a, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<RangedCoordu64, Y>>,
    layout: &Layout,
    (bottom, top): (Y::ValueType, Y::ValueType),
) -> DrawResult<()>
where
    Y: Ranged,
    Y::ValueType: Clone + 'static,
{
    for end in layout.boundaries() {
        chart.draw_series(DashedLineSeries::new(
            vec![(end, bottom.clone()), (end, top.clone())],
            4,
            4,
            BOUNDARY.stroke_width(1),
        ))?;
    }
    Ok(())
}

/// A legend entry's mark.
#[derive(Clone, Copy)]
enum Glyph {
    /// A line of this colour, opacity and width.
    Line(RGBAColor, u32),
    /// A line with a dot in its middle (values after each epoch).
    LineDot(RGBColor),
    /// A ▲ (marks on the loss panel's top edge).
    Up(RGBColor),
    /// A ▼ (skipped steps).
    Down(RGBColor),
}

/// A legend: entries in rows above a panel's plot, where they cannot hide
/// any data.
struct Legend {
    /// Each entry with its left edge, by row.
    rows: Vec<Vec<(i32, Glyph, String)>>,
}

const LEGEND_GLYPH_W: i32 = 24;
const LEGEND_ROW_H: u32 = 19;

fn legend_style() -> TextStyle<'static> {
    TextStyle::from((FONT, 14).into_font()).pos(Pos::new(HPos::Left, VPos::Center))
}

impl Legend {
    /// Lays `entries` out in rows no wider than the plot.
    fn new(entries: Vec<(Glyph, String)>) -> Legend {
        let style = legend_style();
        let (left, right) = (Y_LABEL_AREA as i32, (WIDTH - RIGHT_MARGIN) as i32);
        let mut rows: Vec<Vec<(i32, Glyph, String)>> = vec![Vec::new()];
        let mut x = left;
        for (glyph, text) in entries {
            let text_w = style
                .font
                .box_size(&text)
                .map_or(7 * text.len() as u32, |(w, _)| w);
            let w = LEGEND_GLYPH_W + 6 + text_w as i32;
            if x > left && x + w > right {
                rows.push(Vec::new());
                x = left;
            }
            rows.last_mut().expect("never empty").push((x, glyph, text));
            x += w + 26;
        }
        rows.retain(|r| !r.is_empty());
        Legend { rows }
    }

    /// The panel's top margin that holds the legend.
    fn height(&self) -> u32 {
        8 + LEGEND_ROW_H * self.rows.len() as u32
    }

    fn draw(&self, area: &DrawingArea<SVGBackend, Shift>) -> DrawResult<()> {
        let style = legend_style();
        for (row, entries) in self.rows.iter().enumerate() {
            let y = 4 + LEGEND_ROW_H as i32 * row as i32 + LEGEND_ROW_H as i32 / 2;
            for (x, glyph, text) in entries {
                let (x, mid) = (*x, *x + LEGEND_GLYPH_W / 2);
                match *glyph {
                    Glyph::Line(color, width) => area.draw(&PathElement::new(
                        vec![(x, y), (x + LEGEND_GLYPH_W, y)],
                        color.stroke_width(width),
                    ))?,
                    Glyph::LineDot(color) => {
                        area.draw(&PathElement::new(
                            vec![(x, y), (x + LEGEND_GLYPH_W, y)],
                            color.stroke_width(2),
                        ))?;
                        area.draw(&Circle::new((mid, y), 4, color.filled()))?;
                    }
                    Glyph::Up(color) => {
                        area.draw(&TriangleMarker::new((mid, y), 5, color.filled()))?
                    }
                    Glyph::Down(color) => area.draw(&Polygon::new(
                        SKIP_MARKER.map(|(dx, dy)| (mid + dx, y + 4 + dy)).to_vec(),
                        color.filled(),
                    ))?,
                }
                area.draw_text(text, &style, (x + LEGEND_GLYPH_W + 6, y))?;
            }
        }
        Ok(())
    }
}

/// A tick label of an axis from 0 to `top` with at most `LOSS_TICKS`
/// ticks, with the decimals its tick spacing needs (`0.5`, `1.0`, `1.5`; `0`,
/// `5`, `10`). The spacing is plotters': the smallest 1, 2 or 5 × 10^k that
/// gives no more ticks than asked for.
fn format_axis(v: f64, top: f64) -> String {
    let mut exp = (top / LOSS_TICKS as f64).log10().floor() - 1.0;
    let spacing = loop {
        let power = 10f64.powf(exp);
        let fits = [1.0, 2.0, 5.0]
            .into_iter()
            .map(|m| m * power)
            .find(|s| ((top / s).floor() as usize) < LOSS_TICKS);
        match fits {
            Some(s) => break s,
            None => exp += 1.0,
        }
    };
    let decimals = (-spacing.log10().floor()).max(0.0) as usize;
    format!("{v:.decimals$}")
}

/// A value in a label: three significant digits at most, no trailing zeros,
/// and `1.2e6` from a million on.
fn format_value(v: f64) -> String {
    if v.abs() >= 1e6 {
        return format!("{v:.1e}");
    }
    let decimals = (2.0 - v.abs().log10().floor()).clamp(0.0, 6.0) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// The x label area of a panel: the last one also names the axis.
mod panels;
use panels::*;

#[cfg(test)]
mod tests;
