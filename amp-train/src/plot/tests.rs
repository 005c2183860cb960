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
        ranks: 1,
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
