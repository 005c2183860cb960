//! What a run did: [`TrainReport`] (the binary's summary and `--metrics`
//! JSON), one [`EpochRecord`] per epoch, and autocast's [`OpCounts`].

use crate::precision::PrecisionChoice;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Autocast's op counters for the run (zero for f32, which opens no region).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpCounts {
    /// Ops that ran with low-precision (f16/bf16) inputs.
    pub low_precision: u64,
    /// Ops that ran in f32 inside a region.
    pub f32: u64,
    /// Other ops (integer or f64 inputs).
    pub other: u64,
    /// Casts autocast made.
    pub casts: u64,
    /// Casts answered from the cast cache.
    pub cache_hits: u64,
}

impl OpCounts {
    /// Autocast's counters since the last `amp_autocast::reset_stats()`.
    pub(crate) fn since_reset() -> OpCounts {
        let stats = amp_autocast::stats();
        OpCounts {
            low_precision: stats.ops_low_precision,
            f32: stats.ops_f32,
            other: stats.ops_other,
            casts: stats.casts,
            cache_hits: stats.cache_hits,
        }
    }
}

/// One epoch's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epoch number, from 0.
    pub epoch: usize,
    /// Mean training loss over the epoch's batches.
    #[serde(with = "crate::json::float")]
    pub mean_loss: f64,
    /// Mean loss on the evaluation data after the epoch (`None` without evaluation data).
    #[serde(default, with = "crate::json::opt_float")]
    pub eval_loss: Option<f64>,
    /// Accuracy on the evaluation data after the epoch (`None` without
    /// evaluation data, or for an objective without accuracy).
    #[serde(default, alias = "test_accuracy", with = "crate::json::opt_float")]
    pub eval_accuracy: Option<f64>,
    /// Steps skipped by the scaler in this epoch.
    pub skipped_steps: u64,
    /// Wall time of the epoch in seconds (training and evaluation).
    #[serde(with = "crate::json::float")]
    pub seconds: f64,
}

/// What a run did: the binary's report and `--metrics` JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainReport {
    /// The device (`cpu`, `cuda:0`).
    pub device: String,
    /// The backend implementation.
    pub backend: String,
    /// The precision choice and its reason.
    pub precision: PrecisionChoice,
    /// The loss minimised ([`Objective::name`](super::Objective::name)).
    pub objective: String,
    /// The optimizer's kind (`"AdamW"`).
    pub optimizer: String,
    /// The optimizer's hyperparameters.
    pub optimizer_config: serde_json::Value,
    /// What the caller recorded about the run ([`Trainer::run_info`](super::Trainer::run_info)):
    /// the digits run records `layers`, `lr` and `seed`.
    pub run: BTreeMap<String, serde_json::Value>,
    /// Epochs trained in total (including those before a resume).
    pub epochs: usize,
    /// Epoch this session started at (0 unless resumed).
    pub start_epoch: usize,
    /// Rows per training batch (per rank in a data-parallel run).
    pub batch_size: usize,
    /// Data-parallel ranks that trained (1: one process).
    #[serde(default = "one_rank")]
    pub ranks: usize,
    /// The evaluation data's name (`"test"`), if the run evaluates.
    pub eval_split: Option<String>,
    /// Final loss on the evaluation data.
    #[serde(default, with = "crate::json::opt_float")]
    pub eval_loss: Option<f64>,
    /// Final accuracy on the evaluation data (classification objectives).
    #[serde(default, with = "crate::json::opt_float")]
    pub eval_accuracy: Option<f64>,
    /// Wall time of this session's training and evaluation, in seconds.
    #[serde(with = "crate::json::float")]
    pub wall_time_s: f64,
    /// Training samples per second in this session.
    #[serde(with = "crate::json::float")]
    pub samples_per_s: f64,
    /// Optimizer steps attempted (all sessions).
    pub steps: u64,
    /// Steps the scaler skipped for inf/NaN gradients (all sessions).
    pub skipped_steps: u64,
    /// The loss scale at the end (f16 runs), else `None`.
    pub final_loss_scale: Option<f32>,
    /// Autocast's counters for this session.
    pub ops: OpCounts,
    /// Per-epoch records (all sessions).
    pub history: Vec<EpochRecord>,
    /// Every step's training loss (all sessions); NaN and infinite losses
    /// are written to JSON as `"NaN"`, `"inf"`, `"-inf"`.
    #[serde(with = "crate::json::float_vec")]
    pub step_losses: Vec<f64>,
    /// The loss scale each step's loss was multiplied by (all sessions;
    /// empty for runs without loss scaling).
    #[serde(default, with = "crate::json::float_vec")]
    pub step_loss_scales: Vec<f64>,
    /// The steps the scaler skipped, as indices into `step_losses` (all sessions).
    #[serde(default)]
    pub skipped_step_indices: Vec<u64>,
}

fn one_rank() -> usize {
    1
}

impl TrainReport {
    /// The human-readable summary the binary prints.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let p = &self.precision;
        s += &format!(
            "device:          {} ({} backend)\n",
            self.device, self.backend
        );
        s += &format!("dtype:           {} — {}\n", p.dtype, p.reason);
        if let Some(split) = &self.eval_split {
            // Padded to the other lines' column, one space at least.
            let label = |what: &str| format!("{:<16} ", format!("{split} {what}:"));
            if let Some(accuracy) = self.eval_accuracy {
                s += &format!(
                    "{}{accuracy:.4} after {} epochs\n",
                    label("accuracy"),
                    self.epochs
                );
            }
            if let Some(loss) = self.eval_loss {
                s += &format!("{}{loss:.4} ({})\n", label("loss"), self.objective);
            }
        }
        if let Some(last) = self.history.last() {
            s += &format!(
                "train loss:      {:.4} (mean of epoch {})\n",
                last.mean_loss,
                last.epoch + 1
            );
        }
        s += &format!(
            "wall time:       {:.2} s (this session, from epoch {})\n",
            self.wall_time_s,
            self.start_epoch + 1
        );
        s += &format!("throughput:      {:.0} samples/s\n", self.samples_per_s);
        if self.ranks > 1 {
            s += &format!(
                "data parallel:   {} ranks × batch {} (global batch {})\n",
                self.ranks,
                self.batch_size,
                self.ranks * self.batch_size
            );
        }
        let scaling = match self.final_loss_scale {
            Some(scale) => format!("final loss scale {scale}"),
            None => "no loss scaling".to_string(),
        };
        s += &format!(
            "steps skipped:   {} of {} ({scaling})\n",
            self.skipped_steps, self.steps
        );
        if p.autocast_dtype().is_some() {
            s += &format!(
                "autocast ops:    {} in {}, {} in f32, {} other ({} casts, {} cache hits)\n",
                self.ops.low_precision,
                p.dtype,
                self.ops.f32,
                self.ops.other,
                self.ops.casts,
                self.ops.cache_hits
            );
        } else {
            s += "autocast ops:    none (f32 run, autocast off)\n";
        }
        s
    }
}
