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
fn x_label_area(last: bool) -> u32 {
    if last {
        48
    } else {
        28
    }
}

fn draw_loss(
    area: &DrawingArea<SVGBackend, Shift>,
    report: &TrainReport,
    layout: &Layout,
) -> DrawResult<()> {
    let ceiling = loss_ceiling(report);
    // Finite losses above the ceiling are drawn on it; NaN and inf stay as
    // they are, to break the lines.
    let clamp = |v: f64| if v.is_finite() { v.min(ceiling) } else { v };
    let split = report.eval_split.as_deref().unwrap_or("evaluation");

    let step_runs = finite_runs(
        report
            .step_losses
            .iter()
            .enumerate()
            .map(|(i, &v)| (i as u64, clamp(v))),
    );
    // The epoch means as a staircase: a bar over each epoch's steps, broken
    // where a mean is not finite.
    let mut stairs: Vec<Vec<(u64, f64)>> = vec![Vec::new()];
    // Epoch means above the ceiling: (mid-epoch step, the mean).
    let mut off_scale_means = Vec::new();
    let mut start = 0;
    for (record, &end) in report.history.iter().zip(&layout.epoch_ends) {
        if record.mean_loss.is_finite() {
            let y = clamp(record.mean_loss);
            let stair = stairs.last_mut().expect("never empty");
            stair.push((start, y));
            stair.push((end, y));
            if record.mean_loss > ceiling {
                off_scale_means.push(((start + end) / 2, record.mean_loss));
            }
        } else if !stairs.last().expect("never empty").is_empty() {
            stairs.push(Vec::new());
        }
        start = end;
    }
    stairs.retain(|s| !s.is_empty());
    // Their labels need room.
    if layout.epoch_px() < 70.0 {
        off_scale_means.clear();
    }
    let eval_runs = finite_runs(
        report
            .history
            .iter()
            .zip(&layout.epoch_ends)
            .map(|(r, &end)| (end, r.eval_loss.map_or(f64::NAN, clamp))),
    );
    let marked = |keep: &dyn Fn(f64) -> bool| -> Vec<u64> {
        report
            .step_losses
            .iter()
            .enumerate()
            .filter(|(_, v)| keep(**v))
            .map(|(i, _)| i as u64)
            .collect()
    };
    let non_finite = marked(&|v| !v.is_finite());
    let above = marked(&|v| v.is_finite() && v > ceiling);

    let mut entries = Vec::new();
    if !step_runs.is_empty() {
        entries.push((
            Glyph::Line(STEP_LOSS.mix(0.6), 1),
            "training loss per step".to_string(),
        ));
    }
    if !stairs.is_empty() {
        entries.push((
            Glyph::Line(EPOCH_LOSS.to_rgba(), 3),
            "training loss, epoch mean".to_string(),
        ));
    }
    if !eval_runs.is_empty() {
        entries.push((
            Glyph::LineDot(EVAL_LOSS),
            format!("{split} loss after each epoch"),
        ));
    }
    if !non_finite.is_empty() {
        let n = non_finite.len();
        entries.push((
            Glyph::Up(NON_FINITE),
            format!("non-finite loss (NaN/inf): {n} steps"),
        ));
    }
    if !above.is_empty() {
        let n = above.len();
        entries.push((
            Glyph::Up(OFF_SCALE),
            format!(
                "loss above {}: {n} steps, at the top",
                format_value(ceiling)
            ),
        ));
    }
    let legend = Legend::new(entries);

    // Headroom above the data for the epoch labels.
    let top = ceiling * 1.14;
    let last = !layout.accuracy && !layout.scale;
    let mut chart = ChartBuilder::on(area)
        .margin_right(RIGHT_MARGIN)
        .margin_top(legend.height())
        .x_label_area_size(x_label_area(last))
        .y_label_area_size(Y_LABEL_AREA)
        .build_cartesian_2d(layout.x_range(), 0f64..top)?;
    let y_format = |v: &f64| format_axis(*v, top);
    let mut mesh = mesh_style(&mut chart);
    mesh.y_labels(LOSS_TICKS)
        .y_label_formatter(&y_format)
        .y_desc(report.objective.as_str());
    if last {
        mesh.x_desc("step");
    }
    mesh.draw()?;
    draw_epoch_boundaries(&mut chart, layout, (0.0, top))?;
    let label_style = TextStyle::from((FONT, 13).into_font())
        .color(&NOTE)
        .pos(Pos::new(HPos::Center, VPos::Top));
    chart.draw_series(
        layout
            .epoch_labels()
            .into_iter()
            .map(|(x, label)| Text::new(label, (x, top), label_style.clone())),
    )?;

    chart.draw_series(
        step_runs
            .into_iter()
            .map(|run| PathElement::new(run, STEP_LOSS.mix(0.6).stroke_width(1))),
    )?;
    chart.draw_series(
        stairs
            .into_iter()
            .map(|stair| PathElement::new(stair, EPOCH_LOSS.stroke_width(layout.stair_width()))),
    )?;
    // A mean drawn on the ceiling says what it really is.
    let mean_style = TextStyle::from((FONT, 13).into_font())
        .color(&EPOCH_LOSS)
        .pos(Pos::new(HPos::Center, VPos::Top));
    chart.draw_series(off_scale_means.into_iter().map(|(x, mean)| {
        EmptyElement::at((x, ceiling))
            + Text::new(
                format!("mean {}", format_value(mean)),
                (0, 5),
                mean_style.clone(),
            )
    }))?;
    chart.draw_series(
        eval_runs
            .iter()
            .map(|run| PathElement::new(run.clone(), EVAL_LOSS.stroke_width(2))),
    )?;
    chart.draw_series(
        eval_runs
            .iter()
            .flatten()
            .map(|&p| Circle::new(p, layout.dot_radius(), EVAL_LOSS.filled())),
    )?;
    chart.draw_series(
        non_finite
            .into_iter()
            .map(|i| TriangleMarker::new((i, ceiling), 5, NON_FINITE.filled())),
    )?;
    chart.draw_series(
        above
            .into_iter()
            .map(|i| TriangleMarker::new((i, ceiling), 5, OFF_SCALE.filled())),
    )?;
    legend.draw(area)
}

fn draw_accuracy(
    area: &DrawingArea<SVGBackend, Shift>,
    report: &TrainReport,
    layout: &Layout,
) -> DrawResult<()> {
    let runs = finite_runs(
        report
            .history
            .iter()
            .zip(&layout.epoch_ends)
            .map(|(r, &end)| (end, r.eval_accuracy.unwrap_or(f64::NAN))),
    );
    let points: Vec<(u64, f64)> = runs.iter().flatten().copied().collect();
    let lowest = points.iter().map(|p| p.1).fold(1.0f64, f64::min);
    // 0..1 would squash a run between 0.9 and 0.98 into a line: start at the
    // tenth below the lowest accuracy instead.
    let bottom = ((lowest - 0.02) * 10.0).floor().clamp(0.0, 9.0) / 10.0;
    // Headroom above 1 for the value labels.
    let top = 1.0 + (1.0 - bottom) * 0.12;
    let split = report.eval_split.as_deref().unwrap_or("evaluation");
    let legend = Legend::new(vec![(
        Glyph::LineDot(ACCURACY),
        format!("{split} accuracy after each epoch"),
    )]);
    let last = !layout.scale;
    let mut chart = ChartBuilder::on(area)
        .margin_right(RIGHT_MARGIN)
        .margin_top(legend.height())
        .x_label_area_size(x_label_area(last))
        .y_label_area_size(Y_LABEL_AREA)
        .build_cartesian_2d(layout.x_range(), bottom..top)?;
    // No label on the headroom above 1.
    let y_format = |v: &f64| {
        if *v > 1.0 + 1e-9 {
            String::new()
        } else {
            format!("{v:.2}")
        }
    };
    let mut mesh = mesh_style(&mut chart);
    mesh.y_labels(6)
        .y_label_formatter(&y_format)
        .y_desc(format!("{split} accuracy"));
    if last {
        mesh.x_desc("step");
    }
    mesh.draw()?;
    draw_epoch_boundaries(&mut chart, layout, (bottom, top))?;
    // The 1.0 line: the best an accuracy can be.
    chart.draw_series(LineSeries::new(
        [(0, 1.0), (layout.x_range().end, 1.0)],
        BLACK.mix(0.3).stroke_width(1),
    ))?;
    chart.draw_series(
        runs.iter()
            .map(|run| PathElement::new(run.clone(), ACCURACY.stroke_width(2))),
    )?;
    chart.draw_series(
        points
            .iter()
            .map(|&p| Circle::new(p, layout.dot_radius(), ACCURACY.filled())),
    )?;
    // The values themselves, where there is room for them.
    if layout.epoch_px() >= 44.0 {
        let style = TextStyle::from((FONT, 13).into_font())
            .color(&ACCURACY)
            .pos(Pos::new(HPos::Center, VPos::Bottom));
        chart.draw_series(points.iter().map(|&(x, y)| {
            EmptyElement::at((x, y)) + Text::new(format!("{y:.3}"), (0, -6), style.clone())
        }))?;
    }
    legend.draw(area)
}

fn draw_scale(
    area: &DrawingArea<SVGBackend, Shift>,
    report: &TrainReport,
    layout: &Layout,
) -> DrawResult<()> {
    let scales: Vec<(u64, f64)> = report
        .step_loss_scales
        .iter()
        .enumerate()
        .map(|(i, &s)| (i as u64, s))
        .filter(|(_, s)| s.is_finite() && *s > 0.0)
        .collect();
    let (lo, hi) = scales
        .iter()
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), &(_, s)| {
            (lo.min(s), hi.max(s))
        });
    let (lo, hi) = if hi > 0.0 { (lo, hi) } else { (1.0, 1.0) };
    // Whole powers of two around the data.
    let bottom = 2f64.powf(lo.log2().floor() - 1.0);
    let top = 2f64.powf(hi.log2().ceil() + 1.0);
    let skips: Vec<(u64, f64)> = report
        .skipped_step_indices
        .iter()
        .map(|&i| {
            let scale = report
                .step_loss_scales
                .get(i as usize)
                .copied()
                .filter(|s| s.is_finite() && *s > 0.0)
                .unwrap_or(bottom);
            (i, scale)
        })
        .collect();
    let last_scale = scales.last().map_or(String::new(), |&(_, s)| {
        format!(" (last {})", format_scale(s))
    });
    let legend = Legend::new(vec![
        (
            Glyph::Line(SCALE.to_rgba(), 2),
            format!("loss scale of each step{last_scale}"),
        ),
        (
            Glyph::Down(SKIP),
            format!(
                "step skipped for inf/NaN gradients: {} of {}",
                skips.len(),
                report.step_losses.len()
            ),
        ),
    ]);
    let mut chart = ChartBuilder::on(area)
        .margin_right(RIGHT_MARGIN)
        .margin_top(legend.height())
        .margin_bottom(4)
        .x_label_area_size(x_label_area(true))
        .y_label_area_size(Y_LABEL_AREA)
        .build_cartesian_2d(layout.x_range(), (bottom..top).log_scale().base(2.0))?;
    mesh_style(&mut chart)
        .y_labels(7)
        .y_label_formatter(&|v: &f64| format_scale(*v))
        .y_desc("loss scale (log axis)")
        .x_desc("step")
        .draw()?;
    draw_epoch_boundaries(&mut chart, layout, (bottom, top))?;
    // A step line: each step's scale holds until the next step.
    let mut line = Vec::with_capacity(2 * scales.len());
    for &(i, s) in &scales {
        line.push((i, s));
        line.push((i + 1, s));
    }
    chart.draw_series(LineSeries::new(line, SCALE.stroke_width(2)))?;
    chart.draw_series(
        skips
            .into_iter()
            .map(|at| EmptyElement::at(at) + Polygon::new(SKIP_MARKER.to_vec(), SKIP.filled())),
    )?;
    legend.draw(area)
}

/// The red ▼ of a skipped step, in pixels from its tip (on the step's scale).
const SKIP_MARKER: [(i32, i32); 3] = [(-5, -9), (5, -9), (0, 0)];

fn draw_no_scaling(area: &DrawingArea<SVGBackend, Shift>, report: &TrainReport) -> DrawResult<()> {
    let dtype = report.precision.dtype;
    let mut note = format!(
        "no loss scaling in this {dtype} run (only f16 runs scale the loss and skip steps)"
    );
    if !report.skipped_step_indices.is_empty() {
        note += &format!(", {} skipped steps", report.skipped_step_indices.len());
    }
    let style = TextStyle::from((FONT, 15).into_font())
        .color(&NOTE)
        .pos(Pos::new(HPos::Center, VPos::Center));
    area.draw_text(&note, &style, ((WIDTH / 2) as i32, (NOTE_H / 2) as i32))?;
    Ok(())
}

/// A loss scale as people write it: `65536`, `0.5`, or `2^-20` for a power of
/// two too small or large to read as a number.
fn format_scale(v: f64) -> String {
    let exp = v.log2().round();
    let power_of_two = (v - 2f64.powf(exp)).abs() <= v * 1e-9;
    if power_of_two && !(-4.0..=20.0).contains(&exp) {
        format!("2^{exp}")
    } else if power_of_two || v.fract() == 0.0 {
        format!("{v}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::precision::{Precision, PrecisionChoice};
    use crate::train::{EpochRecord, OpCounts};
    use amp_tensor::DType;
    use std::collections::BTreeMap;

    const STEPS: usize = 120;
    const EPOCHS: usize = 4;

    /// A report of `STEPS` steps in `EPOCHS` epochs with a falling loss and
    /// a test accuracy, in `dtype` on the CPU, with no loss scaling.
    fn report(dtype: DType) -> TrainReport {
        let step_losses: Vec<f64> = (0..STEPS).map(|i| 2.3 / (1.0 + i as f64 / 10.0)).collect();
        let per_epoch = STEPS / EPOCHS;
        let history = (0..EPOCHS)
            .map(|epoch| {
                let losses = &step_losses[epoch * per_epoch..(epoch + 1) * per_epoch];
                EpochRecord {
                    epoch,
                    mean_loss: losses.iter().sum::<f64>() / per_epoch as f64,
                    eval_loss: Some(0.5 / (1.0 + epoch as f64)),
                    eval_accuracy: Some(0.8 + 0.03 * epoch as f64),
                    skipped_steps: 0,
                    seconds: 0.1,
                }
            })
            .collect();
        TrainReport {
            device: "cpu".into(),
            backend: "cpu".into(),
            precision: PrecisionChoice {
                requested: Precision::Auto,
                dtype,
                grad_scaler: dtype == DType::F16,
                reason: "a test".into(),
            },
            objective: "cross-entropy loss".into(),
            optimizer: "AdamW".into(),
            optimizer_config: serde_json::Value::Null,
            run: BTreeMap::new(),
            epochs: EPOCHS,
            start_epoch: 0,
            batch_size: 64,
            eval_split: Some("test".into()),
            eval_loss: Some(0.125),
            eval_accuracy: Some(0.89),
            wall_time_s: 1.0,
            samples_per_s: 1000.0,
            steps: STEPS as u64,
            skipped_steps: 0,
            final_loss_scale: None,
            ops: OpCounts::default(),
            history,
            step_losses,
            step_loss_scales: Vec::new(),
            skipped_step_indices: Vec::new(),
        }
    }

    /// Writes `report`'s chart to a file of its own and reads it back.
    fn render(name: &str, report: &TrainReport) -> String {
        let path = std::env::temp_dir().join(format!("amp-plot-{}-{name}.svg", std::process::id()));
        write_loss_svg(&path, report).expect("the chart is written");
        let svg = std::fs::read_to_string(&path).expect("the chart reads back");
        std::fs::remove_file(&path).ok();
        assert!(svg.trim_end().ends_with("</svg>"), "a complete SVG");
        svg
    }

    fn hex(c: RGBColor) -> String {
        format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2)
    }

    /// The SVG elements `<tag …>` whose `attr` is `color`.
    fn count(svg: &str, tag: &str, attr: &str, color: RGBColor) -> usize {
        let want = format!("{attr}=\"{}\"", hex(color));
        svg.split('<')
            .filter(|e| e.starts_with(&format!("{tag} ")) && e.contains(&want))
            .count()
    }

    /// The text of every `<text>` element (plotters writes it on its own line).
    fn texts(svg: &str) -> Vec<String> {
        svg.split("<text ")
            .skip(1)
            .map(|t| {
                let body = &t[t.find('>').expect("a text tag") + 1..];
                body[..body.find("</text>").expect("a closed text")]
                    .trim()
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn scaled_run_shows_the_scale_and_each_skipped_step() {
        let mut r = report(DType::F16);
        let skipped = [10u64, 11, 57];
        let mut scale = 65536.0;
        for i in 0..STEPS as u64 {
            r.step_loss_scales.push(scale);
            if skipped.contains(&i) {
                scale /= 2.0;
            }
        }
        r.skipped_step_indices = skipped.to_vec();
        r.skipped_steps = skipped.len() as u64;
        r.final_loss_scale = Some(scale as f32);
        // One divergent spike, to be drawn on the panel's top edge.
        r.step_losses[3] = 1e4;
        let svg = render("scaled", &r);
        let texts = texts(&svg);
        let has = |s: &str| texts.iter().any(|t| t.contains(s));

        assert!(has("amp-train: f16 on cpu"), "title: {texts:?}");
        assert!(texts.iter().any(|t| t == "cross-entropy loss"), "y label");
        assert!(texts.iter().any(|t| t == "step"), "x label");
        // Integer step ticks.
        for tick in ["0", "50", "100"] {
            assert!(texts.iter().any(|t| t == tick), "tick {tick}: {texts:?}");
        }
        assert!(!svg.contains("100.0"), "no float step ticks");
        for epoch in 1..=EPOCHS {
            assert!(
                texts.contains(&format!("epoch {epoch}")),
                "epoch {epoch} label"
            );
        }
        // The accuracy: a dot per epoch (and one in the legend) and its values.
        assert!(has("test accuracy after each epoch"));
        assert_eq!(count(&svg, "circle", "fill", ACCURACY), EPOCHS + 1);
        assert!(
            texts.iter().any(|t| t == "0.890"),
            "the last accuracy, 0.8 + 3 × 0.03"
        );
        // The test loss: a dot per epoch (and one in the legend).
        assert_eq!(count(&svg, "circle", "fill", EVAL_LOSS), EPOCHS + 1);
        // The scale: its line and legend, and a ▼ per skipped step (and one
        // in the legend).
        assert!(count(&svg, "polyline", "stroke", SCALE) >= 2);
        assert!(has("loss scale of each step (last 8192)"), "{texts:?}");
        assert_eq!(count(&svg, "polygon", "fill", SKIP), skipped.len() + 1);
        assert!(has("step skipped for inf/NaN gradients: 3 of 120"));
        assert!(texts.iter().any(|t| t == "65536"), "scale ticks as numbers");
        assert!(!has("no loss scaling"));
        // The spike: on the top edge, marked once (and in the legend).
        assert_eq!(count(&svg, "polygon", "fill", OFF_SCALE), 2);
        assert!(has("loss above"), "{texts:?}");
        assert_eq!(count(&svg, "polygon", "fill", NON_FINITE), 0);
    }

    #[test]
    fn unscaled_run_with_non_finite_losses_draws_around_them() {
        let mut r = report(DType::BF16);
        let bad = [
            (5usize, f64::NAN),
            (6, f64::NAN),
            (40, f64::INFINITY),
            (41, f64::NEG_INFINITY),
        ];
        for (i, v) in bad {
            r.step_losses[i] = v;
        }
        // The epochs holding them have no finite mean; one has no accuracy.
        r.history[0].mean_loss = f64::NAN;
        r.history[1].mean_loss = f64::NAN;
        r.history[1].eval_accuracy = Some(f64::NAN);
        r.history[2].eval_loss = None;
        let svg = render("unscaled", &r);
        let texts = texts(&svg);
        let has = |s: &str| texts.iter().any(|t| t.contains(s));

        assert!(has("amp-train: bf16 on cpu"));
        assert!(has("no loss scaling"), "{texts:?}");
        assert_eq!(count(&svg, "polyline", "stroke", SCALE), 0, "no scale line");
        assert_eq!(count(&svg, "polygon", "fill", SKIP), 0, "no skip markers");
        assert!(!has("skipped for inf/NaN"));
        // A marker per non-finite loss (and one in the legend).
        assert_eq!(count(&svg, "polygon", "fill", NON_FINITE), bad.len() + 1);
        assert!(has("non-finite loss (NaN/inf): 4 steps"));
        // The per-step line breaks at them: steps 0–4, 7–39 and 42–119 (and
        // the legend's line).
        assert_eq!(count(&svg, "polyline", "stroke", STEP_LOSS), 3 + 1);
        // No coordinate came out of a NaN.
        let marks: String = svg
            .split("<text ")
            .map(|t| t.split_once("</text>").map_or(t, |(_, rest)| rest))
            .collect();
        assert!(
            !marks.contains("NaN") && !marks.contains("inf"),
            "finite coordinates only"
        );
        // Accuracy dots for the three finite accuracies (and the legend's).
        assert_eq!(count(&svg, "circle", "fill", ACCURACY), EPOCHS - 1 + 1);
        // Test-loss dots for the three epochs that have one (and the legend's).
        assert_eq!(count(&svg, "circle", "fill", EVAL_LOSS), EPOCHS - 1 + 1);
        assert!(texts.iter().any(|t| t == "100") && !svg.contains("100.0"));
    }

    #[test]
    fn a_run_without_evaluation_or_steps_still_draws() {
        let mut r = report(DType::F32);
        r.eval_split = None;
        for e in &mut r.history {
            e.eval_loss = None;
            e.eval_accuracy = None;
        }
        let svg = render("no-eval", &r);
        assert_eq!(
            count(&svg, "circle", "fill", ACCURACY),
            0,
            "no accuracy panel"
        );
        assert!(!texts(&svg).iter().any(|t| t.contains("accuracy")));

        r.step_losses.clear();
        r.history.clear();
        let svg = render("empty", &r);
        assert!(texts(&svg).iter().any(|t| t.contains("no loss scaling")));
    }

    #[test]
    fn many_epochs_are_labelled_in_groups() {
        let mut r = report(DType::BF16);
        let template = r.history[0].clone();
        r.history = (0..100)
            .map(|epoch| EpochRecord {
                epoch,
                ..template.clone()
            })
            .collect();
        r.step_losses = vec![1.0; 2300];
        let svg = render("many-epochs", &r);
        let texts = texts(&svg);
        assert!(texts.contains(&"epochs 1–20".to_string()), "{texts:?}");
        assert!(texts.contains(&"epochs 81–100".to_string()));
        assert!(
            !texts.iter().any(|t| t.starts_with("epoch ")),
            "no single-epoch labels"
        );
        // Dashed lines only at the 4 boundaries between the five groups.
        let want = format!("stroke=\"{}\"", hex(BOUNDARY));
        let xs: std::collections::BTreeSet<&str> = svg
            .split('<')
            .filter(|e| e.starts_with("polyline ") && e.contains(&want))
            .map(|e| {
                let points = e.split("points=\"").nth(1).expect("points");
                points.split(',').next().expect("an x")
            })
            .collect();
        assert_eq!(xs.len(), 4, "boundary x positions: {xs:?}");
    }

    #[test]
    fn labels_read_as_people_write_them() {
        assert_eq!(format_scale(65536.0), "65536");
        assert_eq!(format_scale(0.5), "0.5");
        assert_eq!(format_scale(2f64.powi(-30)), "2^-30");
        assert_eq!(format_scale(2f64.powi(24)), "2^24");
        assert_eq!(format_axis(1.0, 2.6), "1.0");
        assert_eq!(format_axis(20.0, 28.0), "20");
        assert_eq!(format_value(2577.4), "2577");
        assert_eq!(format_value(7.7e8), "7.7e8");
        assert_eq!(format_value(0.4), "0.4");
        assert_eq!(nice_ceil(20.7), 25.0);
        assert_eq!(nice_ceil(3.0), 5.0);
    }
}
