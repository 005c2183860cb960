//! The settings: [`FitConfig`] for any model's run through
//! [`Trainer`](super::Trainer), and (with the `digits` feature) `TrainConfig`
//! for the digits MLP (the binary's flags), which adds the model, the data
//! and the optimizer.

#[cfg(feature = "digits")]
use crate::data::{DIGITS_CLASSES, DIGITS_FEATURES};
use crate::precision::{agree_over_ranks, Precision, PrecisionChoice};
use crate::{Error, Result};
use amp_dist::ProcessGroup;
use std::path::PathBuf;
use std::sync::Arc;

/// How a [`Trainer`](super::Trainer) runs: precision, epochs, checkpoints,
/// progress and when to stop a diverged run. The model, the data, the loss
/// and the optimizer are the trainer's arguments, not settings.
#[derive(Debug, Clone)]
pub struct FitConfig {
    /// Requested precision ([`Precision::Auto`] picks per device).
    pub precision: Precision,
    /// Epochs to train in total (a resumed run continues up to this many).
    pub epochs: usize,
    /// Write a checkpoint here after every epoch (replaced atomically).
    pub checkpoint: Option<PathBuf>,
    /// Resume from this checkpoint.
    pub resume: Option<PathBuf>,
    /// Show a progress bar per epoch (on a terminal) or a line per epoch (otherwise), on stderr.
    pub progress: bool,
    /// Stop with [`Error::Diverged`] after this many consecutive steps that
    /// were skipped for inf/NaN gradients (f16, with the `GradScaler`) or had a
    /// non-finite loss (bf16, f32); `None` never stops. Default 50: a healthy
    /// f16 run skips a handful of steps in a row at most (the scale halves on
    /// each), so 50 in a row means the run has diverged.
    pub max_consecutive_skips: Option<u64>,
    /// The lowest loss scale the f16 `GradScaler` backs off to (default 1, as
    /// DeepSpeed's and Megatron's `min_loss_scale`): below 1 the scale no
    /// longer protects small gradients, and an overflow storm then ends in the
    /// stop above instead of a scale that halves towards 0.
    pub min_loss_scale: f64,
    /// Rows per batch when evaluating.
    pub eval_batch_size: usize,
    /// Train on at most this many batches per epoch (PyTorch Lightning's
    /// `limit_train_batches`): with a shuffled loader each epoch is a fresh
    /// random subset, so a large data set trains in evaluated chunks.
    pub max_batches_per_epoch: Option<usize>,
    /// Evaluate on at most this many batches (the first ones, in order).
    pub max_eval_batches: Option<usize>,
    /// Data-parallel training over this process group (amp-dist; `None`:
    /// one process). Rank 0's parameters are copied to every rank, each rank
    /// trains on its own shard of every epoch (a disjoint slice of the
    /// epoch's permutation, PyTorch's `DistributedSampler`), gradients are
    /// averaged over the ranks in buckets, the `GradScaler` decides to skip
    /// for all ranks, and only rank 0 writes checkpoints and shows progress.
    /// The batch size is per rank: `N` ranks × batch `B` train like one
    /// process with batch `N·B`.
    pub process_group: Option<Arc<dyn ProcessGroup>>,
}

impl Default for FitConfig {
    fn default() -> Self {
        FitConfig {
            precision: Precision::Auto,
            epochs: 30,
            checkpoint: None,
            resume: None,
            progress: false,
            max_consecutive_skips: Some(50),
            min_loss_scale: 1.0,
            eval_batch_size: 512,
            max_batches_per_epoch: None,
            max_eval_batches: None,
            process_group: None,
        }
    }
}

impl FitConfig {
    /// The precision this run computes in on `device`: [`Precision::resolve`];
    /// for `Auto` resuming a checkpoint, the dtype that run computed in (a
    /// measurement must not change a run halfway); then, over a process
    /// group, the ranks' most conservative choice, so all of them agree.
    pub fn resolve_precision(&self, device: &amp_tensor::Device) -> Result<PrecisionChoice> {
        let mut choice = self.precision.resolve(device);
        let resumed = self
            .resume
            .as_deref()
            .filter(|_| self.precision == Precision::Auto);
        if let Some(saved) = resumed.and_then(|path| super::resume::saved_dtype(path, device)) {
            if saved != choice.dtype {
                choice = PrecisionChoice {
                    dtype: saved,
                    grad_scaler: saved == amp_tensor::DType::F16,
                    reason: format!(
                        "auto: {saved}, the dtype of the run being resumed (measured now: {})",
                        choice.reason
                    ),
                    ..choice
                };
            }
        }
        Ok(agree_over_ranks(
            choice,
            device,
            self.process_group.as_ref(),
        )?)
    }

    /// Checks the ranges: epochs and the evaluation batch ≥ 1, a skip limit
    /// ≥ 1 (or none), a finite minimum loss scale ≥ the smallest normal f32.
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 {
            return Err(Error::config("epochs", "must be at least 1, got 0"));
        }
        for (what, limit) in [
            ("max_batches_per_epoch", self.max_batches_per_epoch),
            ("max_eval_batches", self.max_eval_batches),
        ] {
            if limit == Some(0) {
                return Err(Error::config(
                    what,
                    "must be at least 1 (None: no limit), got 0",
                ));
            }
        }
        if self.eval_batch_size == 0 {
            return Err(Error::config(
                "eval_batch_size",
                "must be at least 1, got 0",
            ));
        }
        if self.max_consecutive_skips == Some(0) {
            return Err(Error::config(
                "max_consecutive_skips",
                "must be at least 1 (None never stops), got 0",
            ));
        }
        if !(self.min_loss_scale.is_finite()
            && self.min_loss_scale >= f64::from(amp_scaler::SCALE_FLOOR))
        {
            return Err(Error::config(
                "min_loss_scale",
                format!(
                    "must be a finite number >= {:e} (the smallest normal f32), got {}",
                    amp_scaler::SCALE_FLOOR,
                    self.min_loss_scale
                ),
            ));
        }
        Ok(())
    }
}

/// The digits run's settings (the binary's flags): how to run ([`FitConfig`])
/// plus the MLP's widths, the batch size, AdamW's learning rate and the seed.
///
/// ```
/// use amp_train::train::{FitConfig, TrainConfig};
/// use amp_train::Precision;
///
/// let config = TrainConfig {
///     fit: FitConfig { precision: Precision::BF16, epochs: 3, ..Default::default() },
///     lr: 3e-3,
///     ..Default::default()
/// };
/// config.validate()?;
/// # Ok::<(), amp_train::Error>(())
/// ```
#[cfg(feature = "digits")]
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// Precision, epochs, checkpoints, progress and the divergence stop.
    pub fit: FitConfig,
    /// Rows per batch.
    pub batch_size: usize,
    /// AdamW learning rate.
    pub lr: f64,
    /// Seeds the initialisation and the shuffle.
    pub seed: u64,
    /// Layer widths of the GELU MLP, input first, classes last.
    pub layers: Vec<usize>,
}

#[cfg(feature = "digits")]
impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            fit: FitConfig::default(),
            batch_size: 64,
            lr: 1e-3,
            seed: 0,
            layers: vec![DIGITS_FEATURES, 256, 256, DIGITS_CLASSES],
        }
    }
}

#[cfg(feature = "digits")]
impl TrainConfig {
    /// Checks the ranges: those of [`FitConfig::validate`], a batch size ≥ 1,
    /// lr finite and > 0, and layers that start at 64 inputs and end at 10
    /// classes.
    pub fn validate(&self) -> Result<()> {
        self.fit.validate()?;
        if self.batch_size == 0 {
            return Err(Error::config("batch_size", "must be at least 1, got 0"));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::config(
                "lr",
                format!("must be a finite number > 0, got {}", self.lr),
            ));
        }
        if self.layers.len() < 2
            || self.layers[0] != DIGITS_FEATURES
            || self.layers[self.layers.len() - 1] != DIGITS_CLASSES
            || self.layers.contains(&0)
        {
            return Err(Error::config(
                "layers",
                format!("must start with {DIGITS_FEATURES}, end with {DIGITS_CLASSES}, no zero widths; got {:?}", self.layers),
            ));
        }
        Ok(())
    }
}
