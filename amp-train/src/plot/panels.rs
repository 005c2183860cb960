//! The panels of the chart: loss, evaluation accuracy, loss scale.

use super::*;

pub(super) fn x_label_area(last: bool) -> u32 {
    if last {
        48
    } else {
        28
    }
}

pub(super) fn draw_loss(
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

pub(super) fn draw_accuracy(
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

pub(super) fn draw_scale(
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
pub(super) const SKIP_MARKER: [(i32, i32); 3] = [(-5, -9), (5, -9), (0, 0)];

pub(super) fn draw_no_scaling(
    area: &DrawingArea<SVGBackend, Shift>,
    report: &TrainReport,
) -> DrawResult<()> {
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
pub(super) fn format_scale(v: f64) -> String {
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
