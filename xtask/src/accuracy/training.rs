//! Training parity: the digits MLP with the same seed in f32, bf16 and f16
//! (with the scaler), side by side, against the amp-train issue's thresholds:
//! test accuracy ≥ 0.89 in each, and bf16/f16 within one percentage point of f32.

use amp_train::train::{train, FitConfig, TrainConfig};
use amp_train::Precision;
use std::fmt::Write as _;

/// Lowest acceptable test accuracy (a reference MLP of this size reaches about 0.91).
pub const MIN_ACCURACY: f64 = 0.89;
/// Largest acceptable gap to f32, in accuracy (one percentage point).
pub const MAX_GAP: f64 = 0.01;

/// One precision's run.
#[derive(Debug, Clone)]
pub struct TrainingRow {
    /// The device it trained on.
    pub device: String,
    /// The precision trained in.
    pub precision: Precision,
    /// Final test accuracy.
    pub test_accuracy: f64,
    /// Mean training loss of the last epoch.
    pub final_loss: f64,
    /// Steps the scaler skipped.
    pub skipped_steps: u64,
    /// Wall time in seconds.
    pub seconds: f64,
    /// Whether the thresholds hold.
    pub pass: bool,
    /// Why it failed.
    pub note: Option<String>,
}

/// Trains once per precision on `device` (30 epochs, seed 0, batch 64, AdamW lr 1e-3).
pub fn rows(device: &amp_tensor::Device) -> Vec<TrainingRow> {
    let device = device.clone();
    let mut rows: Vec<TrainingRow> = Vec::new();
    for precision in [Precision::F32, Precision::BF16, Precision::F16] {
        let config = TrainConfig {
            fit: FitConfig {
                precision,
                ..FitConfig::default()
            },
            ..Default::default()
        };
        let row = match train(&config, &device) {
            Ok(outcome) => {
                let r = outcome.report;
                TrainingRow {
                    device: device.to_string(),
                    precision,
                    test_accuracy: r.eval_accuracy.unwrap_or(f64::NAN),
                    final_loss: r.history.last().map_or(f64::NAN, |e| e.mean_loss),
                    skipped_steps: r.skipped_steps,
                    seconds: r.wall_time_s,
                    pass: true,
                    note: None,
                }
            }
            Err(e) => TrainingRow {
                device: device.to_string(),
                precision,
                test_accuracy: f64::NAN,
                final_loss: f64::NAN,
                skipped_steps: 0,
                seconds: 0.0,
                pass: false,
                note: Some(format!("training failed: {e}")),
            },
        };
        rows.push(row);
    }
    let f32_acc = rows[0].test_accuracy;
    for row in &mut rows {
        if !row.pass {
            continue;
        }
        // NaN accuracy or loss fails every check below.
        let meets = |x: f64, ok: bool| x.is_finite() && ok;
        if !meets(row.test_accuracy, row.test_accuracy >= MIN_ACCURACY) {
            row.pass = false;
            row.note = Some(format!(
                "test accuracy {:.4} below {MIN_ACCURACY}",
                row.test_accuracy
            ));
        } else if !meets(f32_acc, (row.test_accuracy - f32_acc).abs() <= MAX_GAP) {
            row.pass = false;
            row.note = Some(format!(
                "{:.4} is more than one point from f32's {f32_acc:.4}",
                row.test_accuracy
            ));
        } else if !row.final_loss.is_finite() {
            row.pass = false;
            row.note = Some("final loss is not finite".into());
        }
    }
    rows
}

/// The rows as a table.
pub fn render(rows: &[TrainingRow]) -> String {
    let device = rows.first().map_or("-", |r| r.device.as_str());
    let mut out = format!(
        "== training parity: digits 64-256-256-10 GELU MLP, 30 epochs, seed 0, {device} ==\n"
    );
    let _ = writeln!(
        out,
        "{:<10} {:>13} {:>11} {:>8} {:>8}  result",
        "precision", "test accuracy", "final loss", "skipped", "seconds"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<10} {:>13.4} {:>11.4} {:>8} {:>8.1}  {}{}",
            format!("{:?}", r.precision).to_lowercase(),
            r.test_accuracy,
            r.final_loss,
            r.skipped_steps,
            r.seconds,
            if r.pass { "ok" } else { "FAIL" },
            r.note.as_ref().map_or(String::new(), |n| format!(": {n}"))
        );
    }
    let _ = writeln!(
        out,
        "thresholds: accuracy ≥ {MIN_ACCURACY} in each precision, bf16/f16 within {} points of f32",
        MAX_GAP * 100.0
    );
    out
}

/// The rows as JSON values.
pub fn to_json(rows: &[TrainingRow]) -> Vec<serde_json::Value> {
    rows.iter()
        .map(|r| {
            serde_json::json!({
                "device": r.device, "precision": format!("{:?}", r.precision).to_lowercase(), "test_accuracy": r.test_accuracy,
                "final_loss": r.final_loss, "skipped_steps": r.skipped_steps, "seconds": r.seconds,
                "pass": r.pass, "note": r.note,
            })
        })
        .collect()
}
