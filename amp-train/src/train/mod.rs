//! The training loop for any model: [`Trainer`] takes a [`Module`], an
//! [`Optimizer`], a [`DataLoader`], an [`Objective`] and a [`FitConfig`], and
//! returns a [`TrainReport`]. The digits run ([`train`] with a
//! [`TrainConfig`]) is one caller of it.
//!
//! Per step it is the mission's loop: `zero_grad`, an autocast region around
//! the forward pass and the loss only, `scaler.scale(&loss)?.backward()?`
//! outside the region, `scaler.step(&mut opt)?`, `scaler.update()?`. After
//! every epoch the model is evaluated on the evaluation data (if given) under
//! `no_grad` and the same autocast region, and (if asked) a checkpoint is
//! written. The precision follows [`Precision`](crate::Precision)'s rule for the data's device;
//! f16 runs get a `GradScaler`, and a run that keeps overflowing stops with
//! [`Error::Diverged`] instead of training on with a vanishing scale.
//!
//! Resuming restores the parameters, the optimizer's state, the scaler's
//! state, the data loader's epoch (the shuffle order of epoch `e` depends only
//! on the seed and `e`) and the history, so a run stopped after epoch `k` and
//! resumed ends with bit-identical parameters to an uninterrupted run on the
//! same device.
//!
//! ```
//! use amp_tensor::{DType, Device, Tensor};
//! use amp_train::data::{DataLoader, TensorDataset};
//! use amp_train::nn::{Gelu, Linear, Module, Sequential};
//! use amp_train::optim::{AdamW, AdamWConfig};
//! use amp_train::train::{FitConfig, Trainer};
//!
//! let device = Device::reference();
//! let x = Tensor::randn(&[64, 4], DType::F32, &device, 0)?;
//! let rows = x.to_f64_vec()?;
//! let labels: Vec<f64> = rows.chunks(4).map(|r| f64::from(r.iter().sum::<f64>() > 0.0)).collect();
//! let y = Tensor::from_f64_slice(&labels, &[64], DType::I64, &device)?; // class: sum > 0
//! let data = TensorDataset::new(vec![x, y])?;
//! let model = Sequential::new()
//!     .add(Linear::new(4, 16, &device)?)
//!     .add(Gelu::new())
//!     .add(Linear::new(16, 2, &device)?);
//! let mut opt = AdamW::new(model.named_parameters(), AdamWConfig { lr: 1e-2, ..Default::default() });
//! let report = Trainer::new(&model, &mut opt)
//!     .evaluate_on("train", data.clone())
//!     .config(FitConfig { epochs: 20, ..Default::default() })
//!     .fit(&DataLoader::new(data, 16).shuffle(3))?;
//! assert!(report.eval_accuracy.unwrap() > 0.9, "{}", report.summary());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#[cfg(feature = "digits")]
mod cnn;
mod config;
#[cfg(feature = "digits")]
mod digits;
#[cfg(feature = "text")]
mod lm;
mod objective;
mod progress;
mod report;
mod resume;

#[cfg(feature = "digits")]
pub use cnn::{train_cnn, CnnConfig, CnnOutcome, DigitsCnn};
pub use config::FitConfig;
#[cfg(feature = "digits")]
pub use config::TrainConfig;
#[cfg(feature = "digits")]
pub use digits::{mlp, train, TrainOutcome};
#[cfg(feature = "text")]
pub use lm::{train_lm, LmConfig, LmOutcome};
pub use objective::{CrossEntropy, MeanSquaredError, Objective};
pub use report::{EpochRecord, OpCounts, TrainReport};

use crate::checkpoint;
use crate::data::{Batch, DataLoader, TensorDataset};
use crate::nn::Module;
use crate::optim::Optimizer;
use crate::precision::PrecisionChoice;
use crate::{Error, Result};
use amp_autocast::{Autocast, AutocastGuard};
use amp_dist::{DdpConfig, DistributedDataParallel, ProcessGroup, ScalerReduce};
use amp_scaler::GradScaler;
use amp_tensor::Device;
use progress::{finish_epoch_progress, progress_bar};
use resume::RunIdentity;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

/// One training run of `model` with `optimizer` (see the [module docs](self)).
///
/// Built with [`Trainer::new`] and the setters, run with [`Trainer::fit`].
/// The objective defaults to [`CrossEntropy`] (labels in `batch[1]`); the
/// model's input is `batch[0]`.
pub struct Trainer<'a, M: Module + ?Sized, O: Optimizer + ?Sized> {
    model: &'a M,
    optimizer: &'a mut O,
    objective: Box<dyn Objective + 'a>,
    eval: Option<(String, TensorDataset)>,
    config: FitConfig,
    run: BTreeMap<String, serde_json::Value>,
}

/// What an evaluation measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    /// Mean loss per row.
    pub loss: f64,
    /// Share of correct predictions, for objectives that count them.
    pub accuracy: Option<f64>,
}

impl<'a, M: Module + ?Sized, O: Optimizer + ?Sized> Trainer<'a, M, O> {
    /// A run of `model` with `optimizer` (which must hold the model's
    /// parameters), [`CrossEntropy`] and the default [`FitConfig`].
    pub fn new(model: &'a M, optimizer: &'a mut O) -> Self {
        Trainer {
            model,
            optimizer,
            objective: Box::new(CrossEntropy),
            eval: None,
            config: FitConfig::default(),
            run: BTreeMap::new(),
        }
    }

    /// The loss to minimise (and the accuracy to report).
    pub fn objective(mut self, objective: impl Objective + 'a) -> Self {
        self.objective = Box::new(objective);
        self
    }

    /// Evaluates on `data` after every epoch; `name` labels it in the report (`"test"`).
    pub fn evaluate_on(mut self, name: impl Into<String>, data: TensorDataset) -> Self {
        self.eval = Some((name.into(), data));
        self
    }

    /// The run's settings.
    pub fn config(mut self, config: FitConfig) -> Self {
        self.config = config;
        self
    }

    /// Records `value` under `key` in the report and the checkpoints; a resume
    /// refuses a checkpoint whose record differs (the digits run records its
    /// layer widths, learning rate and seed).
    pub fn run_info(mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        self.run.insert(key.into(), value.into());
        self
    }

    /// Trains for the configured epochs on `loader`'s data (whose device the
    /// model's parameters must be on) and returns the report.
    pub fn fit<B: Batch>(self, loader: &DataLoader<B>) -> Result<TrainReport> {
        let Trainer {
            model,
            optimizer: opt,
            objective,
            eval,
            config,
            run,
        } = self;
        config.validate()?;
        let device = loader.dataset().device().clone();
        check_devices(model, eval.as_ref().map(|(_, d)| d), &device)?;
        if let Some(path) = &config.checkpoint {
            // Refuse a path that is not ours before training, not after the first epoch.
            checkpoint::check_target(path)?;
        }
        let choice = config.resolve_precision(&device)?;
        let group = config.process_group.clone();
        let rank0 = group.as_ref().is_none_or(|g| g.rank() == 0);
        let mut scaler = build_scaler(&config, &choice, None)?;
        let identity = RunIdentity {
            choice: &choice,
            batch_size: loader.batch_size(),
            shuffle_seed: loader.shuffle_seed(),
            run: &run,
        };
        let optimizer_state = opt.state_dict()?;
        let mut report = TrainReport {
            device: device.to_string(),
            backend: device.backend_name().to_string(),
            precision: choice.clone(),
            objective: objective.name().to_string(),
            optimizer: optimizer_state.kind,
            optimizer_config: optimizer_state.config,
            run: run.clone(),
            epochs: 0,
            start_epoch: 0,
            batch_size: loader.batch_size(),
            ranks: group.as_ref().map_or(1, |g| g.world_size()),
            eval_split: eval.as_ref().map(|(name, _)| name.clone()),
            eval_loss: None,
            eval_accuracy: None,
            wall_time_s: 0.0,
            samples_per_s: 0.0,
            steps: 0,
            skipped_steps: 0,
            final_loss_scale: None,
            ops: OpCounts::default(),
            history: Vec::new(),
            step_losses: Vec::new(),
            step_loss_scales: Vec::new(),
            skipped_step_indices: Vec::new(),
        };
        if let Some(path) = &config.resume {
            let state = resume::load(path, &identity, &device, model, opt, &mut scaler)?;
            loader.set_epoch(state.loader_epoch);
            report.start_epoch = state.epochs_done;
            report.epochs = state.epochs_done;
            report.steps = state.steps;
            report.skipped_steps = state.skipped_steps;
            report.history = state.history;
            report.step_losses = state.step_losses;
            report.step_loss_scales = state.step_loss_scales;
            report.skipped_step_indices = state.skipped_step_indices;
        }
        // Data parallel: rank 0's parameters everywhere, and a scaler that
        // decides for all ranks (carrying over a resumed scaler's state).
        let ddp = match &group {
            Some(g) => {
                let ddp = DistributedDataParallel::new(
                    g.clone(),
                    model.named_parameters(),
                    DdpConfig::default(),
                )?;
                let state = scaler.state_dict();
                scaler = build_scaler(&config, &choice, Some(&ddp))?;
                scaler.load_state_dict(&state)?;
                Some(ddp)
            }
            None => None,
        };
        let config = FitConfig {
            progress: config.progress && rank0,
            ..config
        };

        let steps = Steps {
            model,
            objective: objective.as_ref(),
            device: &device,
            choice: &choice,
            max_consecutive_skips: config.max_consecutive_skips,
            non_finite_run: Cell::new(0),
            ddp: ddp.as_ref(),
        };
        let shard = group.as_ref().map(|g| (g.rank(), g.world_size()));
        amp_autocast::reset_stats();
        let start = Instant::now();
        let mut samples = 0usize;
        let mut last_eval = None;
        model.train();
        for epoch in report.start_epoch..config.epochs {
            let epoch_start = Instant::now();
            let batches = loader.iter_tensors(shard);
            let limit = config.max_batches_per_epoch.unwrap_or(usize::MAX);
            let pb = progress_bar(&config, epoch, batches.len().min(limit));
            let batches = batches.take(limit);
            let (mut loss_sum, mut n_batches, mut skipped) = (0.0, 0usize, 0u64);
            for batch in batches {
                let batch = batch?;
                let step = report.steps + n_batches as u64 + 1;
                let scale = scaler.is_enabled().then(|| f64::from(scaler.get_scale()));
                let (loss, was_skipped) = steps.step(&batch, opt, &mut scaler, epoch + 1, step)?;
                skipped += u64::from(was_skipped);
                if was_skipped {
                    report.skipped_step_indices.push(step - 1);
                }
                report.step_loss_scales.extend(scale);
                report.step_losses.push(loss);
                loss_sum += loss;
                n_batches += 1;
                samples += batch
                    .first()
                    .map_or(0, |x| x.dims().first().copied().unwrap_or(1));
                pb.set_message(format!("{loss:.4}"));
                pb.inc(1);
            }
            let mut mean_loss = loss_sum / n_batches.max(1) as f64;
            if let (Some(g), Some(ddp)) = (&group, &ddp) {
                // Every rank holds the same model, buffers, scaler and record.
                broadcast_buffers(model, g.as_ref())?;
                amp_dist::check_scalers_agree(g.as_ref(), &scaler)?;
                ddp.check_parameters_agree()?;
                let mut mean = [mean_loss];
                g.all_reduce_f64(&mut mean, amp_dist::ReduceOp::Avg)?;
                mean_loss = mean[0];
            }
            let evaluation = match &eval {
                Some((_, data)) => {
                    Some(steps.evaluate(data, config.eval_batch_size, config.max_eval_batches)?)
                }
                None => None,
            };
            last_eval = evaluation;
            let record = EpochRecord {
                epoch,
                mean_loss,
                eval_loss: evaluation.map(|e| e.loss),
                eval_accuracy: evaluation.and_then(|e| e.accuracy),
                skipped_steps: skipped,
                seconds: epoch_start.elapsed().as_secs_f64(),
            };
            finish_epoch_progress(&pb, &config, report.eval_split.as_deref(), &record);
            report.steps += n_batches as u64;
            report.skipped_steps += skipped;
            report.history.push(record);
            report.epochs = epoch + 1;
            if let Some(path) = config.checkpoint.as_ref().filter(|_| rank0) {
                resume::save(path, &identity, model, opt, &scaler, &report)?;
            }
        }
        report.ops = OpCounts::since_reset();
        // A resumed run that had nothing left to train evaluates once.
        let evaluation = match (&eval, last_eval) {
            (Some(_), Some(e)) => Some(e),
            (Some((_, data)), None) => {
                Some(steps.evaluate(data, config.eval_batch_size, config.max_eval_batches)?)
            }
            (None, _) => None,
        };
        report.eval_loss = evaluation.map(|e| e.loss);
        report.eval_accuracy = evaluation.and_then(|e| e.accuracy);
        report.wall_time_s = start.elapsed().as_secs_f64();
        report.samples_per_s = (samples * report.ranks) as f64 / report.wall_time_s.max(1e-9);
        report.final_loss_scale = scaler.is_enabled().then(|| scaler.get_scale());
        Ok(report)
    }
}

/// `Err` unless every parameter and the evaluation data are on `device`.
fn check_devices<M: Module + ?Sized>(
    model: &M,
    eval: Option<&TensorDataset>,
    device: &Device,
) -> Result<()> {
    for (name, p) in model.named_parameters() {
        if p.device() != device {
            return Err(Error::data(
                "Trainer::fit",
                format!(
                    "parameter {name:?} ({:?} {}) is on {}, the training data on {device}",
                    p.dims(),
                    p.dtype(),
                    p.device()
                ),
            ));
        }
    }
    if let Some(data) = eval {
        if data.device() != device {
            return Err(Error::data(
                "Trainer::fit",
                format!(
                    "the evaluation data is on {}, the training data on {device}",
                    data.device()
                ),
            ));
        }
    }
    Ok(())
}

/// The run's `GradScaler`: enabled for f16, with the configured floor and
/// stop; over `ddp`'s ranks in a data-parallel run.
fn build_scaler(
    config: &FitConfig,
    choice: &PrecisionChoice,
    ddp: Option<&DistributedDataParallel>,
) -> Result<GradScaler> {
    let mut builder = GradScaler::builder()
        .enabled(choice.grad_scaler)
        .min_scale(config.min_loss_scale)
        .init_scale(65536f64.max(config.min_loss_scale));
    if let Some(ddp) = ddp {
        builder = builder.found_inf_reduce(Arc::new(ScalerReduce::for_ddp(ddp)));
    }
    if let Some(limit) = config.max_consecutive_skips {
        builder = builder.max_consecutive_skips(limit);
    }
    Ok(builder.build()?)
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

/// What one step and one evaluation need.
struct Steps<'r, M: ?Sized> {
    model: &'r M,
    objective: &'r dyn Objective,
    device: &'r Device,
    choice: &'r PrecisionChoice,
    max_consecutive_skips: Option<u64>,
    /// Consecutive steps with a non-finite loss so far (runs without a scaler).
    non_finite_run: Cell<u64>,
    /// Averages the gradients over the ranks (data-parallel runs).
    ddp: Option<&'r DistributedDataParallel>,
}

impl<M: Module + ?Sized> Steps<'_, M> {
    /// One optimizer step on `batch`: the loss and whether the scaler skipped
    /// the step. `Err(Diverged)` once the run has stopped making progress.
    fn step<O: Optimizer + ?Sized>(
        &self,
        batch: &[amp_tensor::Tensor],
        opt: &mut O,
        scaler: &mut GradScaler,
        epoch: usize,
        step: u64,
    ) -> Result<(f64, bool)> {
        let input = batch.first().ok_or_else(|| {
            Error::data(
                "Trainer::fit",
                "a batch has no tensors; expected the inputs first",
            )
        })?;
        opt.zero_grad();
        let loss = {
            let _region = region(self.device, self.choice)?; // forward and loss only
            self.objective.loss(&self.model.forward(input)?, batch)?
        };
        scaler.scale(&loss)?.backward()?; // backward outside autocast
        if let Some(ddp) = self.ddp {
            ddp.synchronize()?; // gradients = their mean over the ranks
        }
        let skipped = scaler.step(opt)?.is_skipped();
        scaler
            .update()
            .map_err(|e| diverged_from_scaler(e, epoch, step))?;
        if let Some(ddp) = self.ddp.filter(|_| cfg!(debug_assertions)) {
            // Debug builds check every step that the ranks' scalers agree
            // (release builds check after every epoch).
            amp_dist::check_scalers_agree(ddp.group().as_ref(), scaler)?;
        }
        let loss = loss.scalar_f64()?;
        // Without loss scaling nothing skips: a run of non-finite losses is the sign.
        if !scaler.is_enabled() {
            let bad = if loss.is_finite() {
                0
            } else {
                self.non_finite_run.get() + 1
            };
            self.non_finite_run.set(bad);
            if self.max_consecutive_skips.is_some_and(|limit| bad >= limit) {
                return Err(Error::Diverged {
                    epoch,
                    step,
                    cause: format!(
                        "the loss was not finite ({loss}) in {bad} consecutive steps (no loss scaling in {})",
                        self.choice.dtype
                    ),
                });
            }
        }
        Ok((loss, skipped))
    }

    /// Mean loss and accuracy of the model on `data`, under `no_grad` and the
    /// run's autocast region, in evaluation mode (restored afterwards).
    fn evaluate(
        &self,
        data: &TensorDataset,
        batch_size: usize,
        max_batches: Option<usize>,
    ) -> Result<Evaluation> {
        let was_training = self.model.is_training();
        self.model.eval();
        let result = (|| {
            let _no_grad = amp_tensor::no_grad();
            let _region = region(self.device, self.choice)?;
            let (mut loss_sum, mut rows) = (0.0, 0usize);
            let mut counted: Option<(usize, usize)> = None;
            let loader = DataLoader::new(data.clone(), batch_size);
            for batch in loader.iter_epoch(0).take(max_batches.unwrap_or(usize::MAX)) {
                let batch = batch?;
                let output = self.model.forward(&batch[0])?;
                let n = batch[0].dims().first().copied().unwrap_or(1);
                loss_sum += self.objective.loss(&output, &batch)?.scalar_f64()? * n as f64;
                rows += n;
                if let Some((c, k)) = self.objective.correct(&output, &batch)? {
                    let (sc, sk) = counted.unwrap_or((0, 0));
                    counted = Some((sc + c, sk + k));
                }
            }
            Ok(Evaluation {
                loss: loss_sum / rows.max(1) as f64,
                accuracy: counted.map(|(c, k)| c as f64 / k.max(1) as f64),
            })
        })();
        self.model.set_training(was_training);
        result
    }
}

/// The free function form of an evaluation: mean loss and accuracy of `model`
/// on `data` under `no_grad` and the autocast region of `choice`.
pub fn evaluate(
    model: &dyn Module,
    objective: &dyn Objective,
    data: &TensorDataset,
    choice: &PrecisionChoice,
) -> Result<Evaluation> {
    Steps {
        model,
        objective,
        device: data.device(),
        choice,
        max_consecutive_skips: None,
        non_finite_run: Cell::new(0),
        ddp: None,
    }
    .evaluate(data, FitConfig::default().eval_batch_size, None)
}

/// Copies rank 0's floating-point buffers (batch norm's running statistics)
/// to every rank, as PyTorch's DDP does (`broadcast_buffers`), so that
/// evaluation and checkpoints agree across ranks.
fn broadcast_buffers<M: Module + ?Sized>(model: &M, group: &dyn ProcessGroup) -> Result<()> {
    let _no_grad = amp_tensor::no_grad();
    for (_, buffer) in model.named_buffers() {
        if buffer.dtype().is_float() {
            let wide = buffer.to_dtype(amp_tensor::DType::F32)?;
            buffer.assign(&group.broadcast(&wide, 0)?)?;
        }
    }
    Ok(())
}

/// The scaler's divergence stop as this crate's error, naming the parameters.
fn diverged_from_scaler(e: amp_scaler::Error, epoch: usize, step: u64) -> Error {
    match e {
        amp_scaler::Error::Diverged {
            consecutive_skips,
            scale,
            inf_params,
            nan_params,
            ..
        } => {
            let names = |p: &[(String, usize)]| {
                p.iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            Error::Diverged {
                epoch,
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
    }
}
