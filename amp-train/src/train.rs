//! The training loop on the digits set: [`TrainConfig`] → [`train`] → [`TrainOutcome`].
//!
//! Per step it is the mission's loop: `zero_grad`, an autocast region around
//! the forward pass and the loss only, `scaler.scale(&loss)?.backward()?`
//! outside the region, `scaler.step(&mut opt)?`, `scaler.update()?`. After
//! every epoch the model is evaluated on the test split under `no_grad` and
//! the same autocast region, and (if asked) a checkpoint is written.
//!
//! Resuming restores the parameters, AdamW's moments and step counts, the
//! scaler's state, the data loader's epoch (the shuffle order of epoch `e`
//! depends only on the seed and `e`) and the history, so a run stopped after
//! epoch `k` and resumed ends with bit-identical parameters to an
//! uninterrupted run on the same device.

use crate::checkpoint;
use crate::data::{digits, DataLoader, TensorDataset, DIGITS_CLASSES, DIGITS_FEATURES};
use crate::nn::{Gelu, Linear, Module, Sequential};
use crate::optim::{AdamW, AdamWConfig, OptimizerState};
use crate::precision::{Precision, PrecisionChoice};
use crate::{Error, Result};
use amp_autocast::{Autocast, AutocastGuard};
use amp_scaler::{GradScaler, ScalerState};
use amp_tensor::{ops, Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

/// A run's settings (the binary's flags).
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// Requested precision.
    pub precision: Precision,
    /// Epochs to train in total (a resumed run continues up to this many).
    pub epochs: usize,
    /// Rows per batch.
    pub batch_size: usize,
    /// AdamW learning rate.
    pub lr: f64,
    /// Seeds the initialisation and the shuffle.
    pub seed: u64,
    /// Layer widths of the GELU MLP, input first, classes last.
    pub layers: Vec<usize>,
    /// Write a checkpoint here after every epoch.
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
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            precision: Precision::Auto,
            epochs: 30,
            batch_size: 64,
            lr: 1e-3,
            seed: 0,
            layers: vec![DIGITS_FEATURES, 256, 256, DIGITS_CLASSES],
            checkpoint: None,
            resume: None,
            progress: false,
            max_consecutive_skips: Some(50),
            min_loss_scale: 1.0,
        }
    }
}

impl TrainConfig {
    /// Checks the ranges: epochs, batch size ≥ 1; lr finite and > 0; layers
    /// start at 64 inputs and end at 10 classes.
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 {
            return Err(Error::config("epochs", "must be at least 1, got 0"));
        }
        if self.batch_size == 0 {
            return Err(Error::config("batch_size", "must be at least 1, got 0"));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::config(
                "lr",
                format!("must be a finite number > 0, got {}", self.lr),
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

/// A GELU MLP: `Linear(layers[0], layers[1])`, GELU, …, `Linear(.., layers[n-1])`;
/// layer `i` is seeded with `seed + i`.
pub fn mlp(layers: &[usize], device: &Device, seed: u64) -> Result<Sequential> {
    let mut model = Sequential::new();
    for (i, w) in layers.windows(2).enumerate() {
        if i > 0 {
            model.push(Gelu::new());
        }
        model.push(Linear::new(
            w[0],
            w[1],
            device,
            seed.wrapping_add(i as u64),
        )?);
    }
    Ok(model)
}

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

/// One epoch's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epoch number, from 0.
    pub epoch: usize,
    /// Mean training loss over the epoch's batches.
    #[serde(with = "crate::json::float")]
    pub mean_loss: f64,
    /// Accuracy on the test split after the epoch.
    #[serde(with = "crate::json::float")]
    pub test_accuracy: f64,
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
    /// Epochs trained in total (including those before a resume).
    pub epochs: usize,
    /// Epoch this session started at (0 unless resumed).
    pub start_epoch: usize,
    /// Rows per batch.
    pub batch_size: usize,
    /// Learning rate.
    pub lr: f64,
    /// Seed.
    pub seed: u64,
    /// Final accuracy on the test split.
    #[serde(with = "crate::json::float")]
    pub test_accuracy: f64,
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
}

/// The trained model with its report.
pub struct TrainOutcome {
    /// The model after the last epoch.
    pub model: Sequential,
    /// The report.
    pub report: TrainReport,
}

/// Everything except tensors that a checkpoint needs to resume.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ResumeState {
    epochs_done: usize,
    seed: u64,
    batch_size: usize,
    layers: Vec<usize>,
    precision: Precision,
    dtype: String,
    loader_epoch: u64,
    optimizer: OptimizerMeta,
    scaler: ScalerState,
    steps: u64,
    skipped_steps: u64,
    history: Vec<EpochRecord>,
    #[serde(with = "crate::json::float_vec")]
    step_losses: Vec<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OptimizerMeta {
    kind: String,
    config: serde_json::Value,
    steps: Vec<(String, u64)>,
}

/// Opens the run's autocast region (none for f32).
fn region(device: &Device, choice: &PrecisionChoice) -> Result<Option<AutocastGuard>> {
    match choice.autocast_dtype() {
        Some(dtype) => Ok(Some(
            Autocast::new(device.kind())
                .dtype(dtype)
                .device(device)
                .enter()?,
        )),
        None => Ok(None),
    }
}

/// Test accuracy of `model` on `data`, under `no_grad` and the run's autocast region.
pub fn evaluate(
    model: &dyn Module,
    data: &TensorDataset,
    device: &Device,
    choice: &PrecisionChoice,
) -> Result<f64> {
    let was_training = model.is_training();
    model.eval();
    let result = (|| {
        let _no_grad = amp_tensor::no_grad();
        let _region = region(device, choice)?;
        let mut correct = 0usize;
        for batch in DataLoader::new(data.clone(), 512).iter_epoch(0)? {
            let batch = batch?;
            let predicted = model
                .forward(&batch[0])?
                .argmax(-1, false)?
                .to_vec::<i64>()?;
            let labels = batch[1].to_vec::<i64>()?;
            correct += predicted
                .iter()
                .zip(&labels)
                .filter(|(p, l)| p == l)
                .count();
        }
        Ok(correct as f64 / data.len().max(1) as f64)
    })();
    model.set_training(was_training);
    result
}

fn load_resume(
    path: &std::path::Path,
    config: &TrainConfig,
    choice: &PrecisionChoice,
    device: &Device,
    model: &Sequential,
    opt: &mut AdamW,
    scaler: &mut GradScaler,
) -> Result<ResumeState> {
    let (tensors, state) = checkpoint::load(path, device)?;
    let bad = |msg: String| Error::checkpoint(path, msg);
    let state: ResumeState = serde_json::from_value(state).map_err(|e| {
        bad(format!(
            "state.json does not describe an amp-train run: {e}"
        ))
    })?;
    let mismatch = |what: &str, saved: String, now: String| {
        bad(format!(
            "was written with {what} {saved}, this run uses {now}; resume with the same {what}"
        ))
    };
    if state.layers != config.layers {
        return Err(mismatch(
            "layers",
            format!("{:?}", state.layers),
            format!("{:?}", config.layers),
        ));
    }
    if state.seed != config.seed {
        return Err(mismatch(
            "seed",
            state.seed.to_string(),
            config.seed.to_string(),
        ));
    }
    if state.batch_size != config.batch_size {
        return Err(mismatch(
            "batch size",
            state.batch_size.to_string(),
            config.batch_size.to_string(),
        ));
    }
    let saved_lr = state.optimizer.config.get("lr").and_then(|v| v.as_f64());
    if saved_lr != Some(config.lr) {
        return Err(mismatch(
            "lr",
            saved_lr.map_or("none".into(), |v| v.to_string()),
            config.lr.to_string(),
        ));
    }
    if state.dtype != choice.dtype.name() {
        return Err(mismatch(
            "dtype",
            state.dtype.clone(),
            format!("{} (--precision {})", choice.dtype, choice.requested),
        ));
    }
    let mut model_tensors = Vec::new();
    let mut optim_tensors = Vec::new();
    for (name, t) in tensors {
        if let Some(n) = name.strip_prefix("model.") {
            model_tensors.push((n.to_string(), t));
        } else if let Some(n) = name.strip_prefix("optim.") {
            optim_tensors.push((n.to_string(), t));
        } else {
            return Err(bad(format!(
                "unexpected tensor {name:?} (expected model.* and optim.* tensors)"
            )));
        }
    }
    let params = model.named_parameters();
    if model_tensors.len() != params.len() {
        return Err(bad(format!(
            "has {} model tensors, the model has {} parameters",
            model_tensors.len(),
            params.len()
        )));
    }
    for (name, p) in &params {
        let saved = model_tensors
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t)
            .ok_or_else(|| bad(format!("has no tensor for parameter {name:?}")))?;
        if saved.dims() != p.dims() || saved.dtype() != p.dtype() {
            return Err(bad(format!(
                "parameter {name:?} is {:?} {} in the checkpoint, {:?} {} in the model",
                saved.dims(),
                saved.dtype(),
                p.dims(),
                p.dtype()
            )));
        }
    }
    opt.load_state_dict(&OptimizerState {
        kind: state.optimizer.kind.clone(),
        config: state.optimizer.config.clone(),
        steps: state.optimizer.steps.clone(),
        tensors: optim_tensors,
    })
    .map_err(|e| bad(format!("optimizer state: {e}")))?;
    scaler
        .load_state(&state.scaler)
        .map_err(|e| bad(format!("scaler state: {e}")))?;
    // Only now, with everything checked, overwrite the parameters.
    let _no_grad = amp_tensor::no_grad();
    for (name, p) in &params {
        let saved = &model_tensors
            .iter()
            .find(|(n, _)| n == name)
            .expect("checked above")
            .1;
        p.assign(saved)?;
    }
    Ok(state)
}

#[allow(clippy::too_many_arguments)]
fn save_checkpoint(
    path: &std::path::Path,
    config: &TrainConfig,
    choice: &PrecisionChoice,
    model: &Sequential,
    opt: &AdamW,
    scaler: &GradScaler,
    epochs_done: usize,
    report: &TrainReport,
) -> Result<()> {
    let optimizer = opt.state_dict()?;
    let mut tensors: Vec<(String, Tensor)> = model
        .named_parameters()
        .into_iter()
        .map(|(n, t)| (format!("model.{n}"), t))
        .collect();
    tensors.extend(
        optimizer
            .tensors
            .iter()
            .map(|(n, t)| (format!("optim.{n}"), t.clone())),
    );
    let state = ResumeState {
        epochs_done,
        seed: config.seed,
        batch_size: config.batch_size,
        layers: config.layers.clone(),
        precision: choice.requested,
        dtype: choice.dtype.name().to_string(),
        loader_epoch: epochs_done as u64,
        optimizer: OptimizerMeta {
            kind: optimizer.kind,
            config: optimizer.config,
            steps: optimizer.steps,
        },
        scaler: scaler.state(),
        steps: report.steps,
        skipped_steps: report.skipped_steps,
        history: report.history.clone(),
        step_losses: report.step_losses.clone(),
    };
    let json = serde_json::to_value(&state)
        .map_err(|e| Error::checkpoint(path, format!("serialising state: {e}")))?;
    checkpoint::save(path, &tensors, &json)
}

fn progress_bar(config: &TrainConfig, epoch: usize, batches: usize) -> ProgressBar {
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

/// Trains the GELU MLP of `config.layers` on the digits training split with
/// AdamW on `device`, and evaluates it on the test split.
pub fn train(config: &TrainConfig, device: &Device) -> Result<TrainOutcome> {
    config.validate()?;
    if let Some(path) = &config.checkpoint {
        // Refuse a path that is not ours before training, not after the first epoch.
        checkpoint::check_target(path)?;
    }
    let choice = config.precision.resolve(device);
    let (train_set, test_set) = digits(device)?;
    let model = mlp(&config.layers, device, config.seed)?;
    let mut opt = AdamW::new(
        model.named_parameters(),
        AdamWConfig {
            lr: config.lr,
            ..Default::default()
        },
    );
    let mut builder = GradScaler::builder()
        .enabled(choice.grad_scaler)
        .min_scale(config.min_loss_scale)
        .init_scale(65536f64.max(config.min_loss_scale));
    if let Some(limit) = config.max_consecutive_skips {
        builder = builder.max_consecutive_skips(limit);
    }
    let mut scaler = builder.build()?;
    let loader = DataLoader::new(train_set.clone(), config.batch_size).shuffle(config.seed);

    let mut report = TrainReport {
        device: device.to_string(),
        backend: device.backend_name().to_string(),
        precision: choice.clone(),
        epochs: 0,
        start_epoch: 0,
        batch_size: config.batch_size,
        lr: config.lr,
        seed: config.seed,
        test_accuracy: f64::NAN,
        wall_time_s: 0.0,
        samples_per_s: 0.0,
        steps: 0,
        skipped_steps: 0,
        final_loss_scale: None,
        ops: OpCounts::default(),
        history: Vec::new(),
        step_losses: Vec::new(),
    };
    if let Some(path) = &config.resume {
        let state = load_resume(path, config, &choice, device, &model, &mut opt, &mut scaler)?;
        loader.set_epoch(state.loader_epoch);
        report.start_epoch = state.epochs_done;
        report.epochs = state.epochs_done;
        report.steps = state.steps;
        report.skipped_steps = state.skipped_steps;
        report.history = state.history;
        report.step_losses = state.step_losses;
    }

    amp_autocast::reset_stats();
    let mut bad_losses = 0u64;
    let start = Instant::now();
    let mut samples = 0usize;
    model.train();
    for epoch in report.start_epoch..config.epochs {
        let epoch_start = Instant::now();
        let batches = loader.try_iter()?;
        let pb = progress_bar(config, epoch, batches.len());
        let (mut loss_sum, mut n_batches, mut skipped) = (0.0, 0usize, 0u64);
        for batch in batches {
            let batch = batch?;
            let (x, y) = (&batch[0], &batch[1]);
            opt.zero_grad();
            let loss = {
                let _region = region(device, &choice)?; // forward and loss only
                ops::cross_entropy(&model.forward(x)?, y)?
            };
            scaler.scale(&loss)?.backward()?; // backward outside autocast
            if scaler.step(&mut opt)?.is_skipped() {
                skipped += 1;
            }
            let step = report.steps + n_batches as u64 + 1;
            scaler.update().map_err(|e| match e {
                amp_scaler::Error::Diverged {
                    consecutive_skips,
                    scale,
                    inf_params,
                    nan_params,
                    ..
                } => {
                    let names = |p: &[(String, usize)]| {
                        p.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
                    };
                    Error::Diverged {
                        epoch: epoch + 1,
                        step,
                        cause: format!(
                            "{consecutive_skips} consecutive steps were skipped for inf/NaN gradients (loss scale now {scale}); \
                             in the last one inf in [{}], NaN in [{}]",
                            names(&inf_params),
                            names(&nan_params)
                        ),
                    }
                }
                other => other.into(),
            })?;
            let loss = loss.scalar_f64()?;
            // Without loss scaling nothing skips: a non-finite loss is the sign.
            if !scaler.is_enabled() {
                bad_losses = if loss.is_finite() { 0 } else { bad_losses + 1 };
                if config
                    .max_consecutive_skips
                    .is_some_and(|limit| bad_losses >= limit)
                {
                    return Err(Error::Diverged {
                        epoch: epoch + 1,
                        step,
                        cause: format!(
                            "the loss was not finite ({loss}) in {bad_losses} consecutive steps (no loss scaling in {})",
                            choice.dtype
                        ),
                    });
                }
            }
            report.step_losses.push(loss);
            loss_sum += loss;
            n_batches += 1;
            samples += x.dims()[0];
            pb.set_message(format!("{loss:.4}"));
            pb.inc(1);
        }
        let accuracy = evaluate(&model, &test_set, device, &choice)?;
        let record = EpochRecord {
            epoch,
            mean_loss: loss_sum / n_batches.max(1) as f64,
            test_accuracy: accuracy,
            skipped_steps: skipped,
            seconds: epoch_start.elapsed().as_secs_f64(),
        };
        pb.finish_with_message(format!(
            "{:.4}, test accuracy {:.4}",
            record.mean_loss, accuracy
        ));
        if config.progress && pb.is_hidden() {
            eprintln!(
                "epoch {}/{}: loss {:.4}, test accuracy {:.4} ({:.2} s)",
                epoch + 1,
                config.epochs,
                record.mean_loss,
                accuracy,
                record.seconds
            );
        }
        report.steps += n_batches as u64;
        report.skipped_steps += skipped;
        report.history.push(record);
        report.epochs = epoch + 1;
        if let Some(path) = &config.checkpoint {
            save_checkpoint(
                path,
                config,
                &choice,
                &model,
                &opt,
                &scaler,
                epoch + 1,
                &report,
            )?;
        }
    }
    let stats = amp_autocast::stats();
    report.ops = OpCounts {
        low_precision: stats.ops_low_precision,
        f32: stats.ops_f32,
        other: stats.ops_other,
        casts: stats.casts,
        cache_hits: stats.cache_hits,
    };
    report.test_accuracy = match report.history.last() {
        Some(r) if report.epochs == config.epochs && report.start_epoch < config.epochs => {
            r.test_accuracy
        }
        _ => evaluate(&model, &test_set, device, &choice)?,
    };
    report.wall_time_s = start.elapsed().as_secs_f64();
    report.samples_per_s = samples as f64 / report.wall_time_s.max(1e-9);
    report.final_loss_scale = scaler.is_enabled().then(|| scaler.get_scale());
    Ok(TrainOutcome { model, report })
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
        s += &format!(
            "test accuracy:   {:.4} after {} epochs\n",
            self.test_accuracy, self.epochs
        );
        s += &format!(
            "wall time:       {:.2} s (this session, from epoch {})\n",
            self.wall_time_s,
            self.start_epoch + 1
        );
        s += &format!("throughput:      {:.0} samples/s\n", self.samples_per_s);
        match self.final_loss_scale {
            Some(scale) => {
                s += &format!(
                    "steps skipped:   {} of {} (final loss scale {scale})\n",
                    self.skipped_steps, self.steps
                )
            }
            None => {
                s += &format!(
                    "steps skipped:   {} of {} (no loss scaling)\n",
                    self.skipped_steps, self.steps
                )
            }
        }
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
