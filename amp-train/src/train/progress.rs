//! What a run shows while it trains: a progress bar per epoch on a
//! terminal, a line per epoch otherwise (both on stderr, both only with
//! [`FitConfig::progress`]). Without the `cli` feature (no indicatif) there
//! is no bar: the line per epoch only.

use super::{EpochRecord, FitConfig};
#[cfg(feature = "cli")]
use indicatif::{ProgressBar, ProgressStyle};
#[cfg(feature = "cli")]
use std::io::IsTerminal;

/// The epoch's progress bar on stderr: drawn on a terminal when `progress`
/// is on, hidden otherwise.
#[cfg(feature = "cli")]
pub(super) fn progress_bar(config: &FitConfig, epoch: usize, batches: usize) -> ProgressBar {
    if !(config.progress && std::io::stderr().is_terminal()) {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(batches as u64);
    let style =
        ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} batches, loss {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
    pb.set_style(style);
    pb.set_prefix(format!("{}/{}", epoch + 1, config.epochs));
    pb
}

/// Without the `cli` feature: a progress bar that is never drawn.
#[cfg(not(feature = "cli"))]
pub(super) struct ProgressBar;

#[cfg(not(feature = "cli"))]
impl ProgressBar {
    /// Does nothing (indicatif's `set_message`).
    pub(super) fn set_message(&self, _message: String) {}

    /// Does nothing (indicatif's `inc`).
    pub(super) fn inc(&self, _delta: u64) {}

    /// Always hidden: the epoch's line is printed instead.
    fn is_hidden(&self) -> bool {
        true
    }

    /// Does nothing (indicatif's `finish_with_message`).
    fn finish_with_message(&self, _message: String) {}
}

/// Without the `cli` feature: the hidden bar.
#[cfg(not(feature = "cli"))]
pub(super) fn progress_bar(_config: &FitConfig, _epoch: usize, _batches: usize) -> ProgressBar {
    ProgressBar
}

/// Ends the epoch's progress bar, or prints the epoch's line when there is no
/// terminal to draw the bar on.
pub(super) fn finish_epoch_progress(
    pb: &ProgressBar,
    config: &FitConfig,
    split: Option<&str>,
    record: &EpochRecord,
) {
    let split = split.unwrap_or("eval");
    let eval = match (record.eval_accuracy, record.eval_loss) {
        (Some(accuracy), _) => format!(", {split} accuracy {accuracy:.4}"),
        (None, Some(loss)) => format!(", {split} loss {loss:.4}"),
        (None, None) => String::new(),
    };
    pb.finish_with_message(format!("{:.4}{eval}", record.mean_loss));
    if config.progress && pb.is_hidden() {
        eprintln!(
            "epoch {}/{}: loss {:.4}{eval} ({:.2} s)",
            record.epoch + 1,
            config.epochs,
            record.mean_loss,
            record.seconds
        );
    }
}
