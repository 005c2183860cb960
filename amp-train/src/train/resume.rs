//! Saving a run after an epoch and resuming it: the model's parameters
//! (`model.*`), the optimizer's state (`optim.*`), and in the JSON state the
//! scaler, the loader's epoch, the history and what the caller recorded about
//! the run. A resume checks everything before it changes anything.

use super::report::{EpochRecord, TrainReport};
use crate::checkpoint;
use crate::nn::Module;
use crate::optim::{Optimizer, OptimizerState};
use crate::precision::{Precision, PrecisionChoice};
use crate::{Error, Result};
use amp_scaler::{GradScaler, ScalerState};
use amp_tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// Everything except tensors that a checkpoint needs to resume.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct ResumeState {
    pub epochs_done: usize,
    pub batch_size: usize,
    pub shuffle_seed: Option<u64>,
    pub precision: Precision,
    pub dtype: String,
    pub loader_epoch: u64,
    pub optimizer: OptimizerMeta,
    pub scaler: ScalerState,
    pub steps: u64,
    pub skipped_steps: u64,
    pub history: Vec<EpochRecord>,
    #[serde(with = "crate::json::float_vec")]
    pub step_losses: Vec<f64>,
    #[serde(with = "crate::json::float_vec")]
    pub step_loss_scales: Vec<f64>,
    pub skipped_step_indices: Vec<u64>,
    /// The caller's record of the run, which a resume must match.
    pub run: BTreeMap<String, serde_json::Value>,
}

/// The optimizer's state without its tensors.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct OptimizerMeta {
    kind: String,
    config: serde_json::Value,
    steps: Vec<(String, u64)>,
}

/// What a resume and a save need to know about the run beyond its parts.
pub(super) struct RunIdentity<'a> {
    pub choice: &'a PrecisionChoice,
    pub batch_size: usize,
    pub shuffle_seed: Option<u64>,
    pub run: &'a BTreeMap<String, serde_json::Value>,
}

/// Writes the checkpoint after `epochs_done` epochs.
pub(super) fn save<M: Module + ?Sized, O: Optimizer + ?Sized>(
    path: &Path,
    id: &RunIdentity<'_>,
    model: &M,
    opt: &O,
    scaler: &GradScaler,
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
        epochs_done: report.epochs,
        batch_size: id.batch_size,
        shuffle_seed: id.shuffle_seed,
        precision: id.choice.requested,
        dtype: id.choice.dtype.name().to_string(),
        loader_epoch: report.epochs as u64,
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
        step_loss_scales: report.step_loss_scales.clone(),
        skipped_step_indices: report.skipped_step_indices.clone(),
        run: id.run.clone(),
    };
    let json = serde_json::to_value(&state)
        .map_err(|e| Error::checkpoint(path, format!("serialising state: {e}")))?;
    checkpoint::save(path, &tensors, &json)
}

/// A JSON value as a message shows it (strings without quotes).
fn shown(v: Option<&serde_json::Value>) -> String {
    match v {
        None => "none".to_string(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    }
}

/// Restores the run from `path` into `model`, `opt` and `scaler`, after
/// checking that the checkpoint is of this run (the caller's record, batch
/// size, shuffle seed, dtype, optimizer and hyperparameters, every
/// parameter's name, shape and dtype). On `Err` nothing was changed.
pub(super) fn load<M: Module + ?Sized, O: Optimizer + ?Sized>(
    path: &Path,
    id: &RunIdentity<'_>,
    device: &Device,
    model: &M,
    opt: &mut O,
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
    let keys: std::collections::BTreeSet<&String> = state.run.keys().chain(id.run.keys()).collect();
    for key in keys {
        let (saved, now) = (state.run.get(key), id.run.get(key));
        if saved != now {
            return Err(mismatch(key, shown(saved), shown(now)));
        }
    }
    if state.batch_size != id.batch_size {
        return Err(mismatch(
            "batch size",
            state.batch_size.to_string(),
            id.batch_size.to_string(),
        ));
    }
    if state.shuffle_seed != id.shuffle_seed {
        let show = |s: Option<u64>| s.map_or("none (no shuffle)".into(), |s| s.to_string());
        return Err(mismatch(
            "shuffle seed",
            show(state.shuffle_seed),
            show(id.shuffle_seed),
        ));
    }
    if state.dtype != id.choice.dtype.name() {
        return Err(mismatch(
            "dtype",
            state.dtype.clone(),
            format!("{} (precision {})", id.choice.dtype, id.choice.requested),
        ));
    }
    let current = opt.state_dict()?;
    if state.optimizer.kind != current.kind {
        return Err(mismatch(
            "optimizer",
            state.optimizer.kind.clone(),
            current.kind,
        ));
    }
    if let (Some(saved), Some(now)) = (
        state.optimizer.config.as_object(),
        current.config.as_object(),
    ) {
        let keys: std::collections::BTreeSet<&String> = saved.keys().chain(now.keys()).collect();
        for key in keys {
            if saved.get(key) != now.get(key) {
                return Err(mismatch(key, shown(saved.get(key)), shown(now.get(key))));
            }
        }
    }
    let mut model_tensors = BTreeMap::new();
    let mut optim_tensors = Vec::new();
    for (name, t) in tensors {
        if let Some(n) = name.strip_prefix("model.") {
            model_tensors.insert(n.to_string(), t);
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
    let mut assignments = Vec::with_capacity(params.len());
    for (name, p) in &params {
        let saved = model_tensors
            .get(name)
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
        assignments.push((p, saved));
    }
    // The optimizer and the scaler check their state before they take it;
    // a refusal after the optimizer took its state puts the old one back.
    opt.load_state_dict(&OptimizerState {
        kind: state.optimizer.kind.clone(),
        config: state.optimizer.config.clone(),
        steps: state.optimizer.steps.clone(),
        tensors: optim_tensors,
    })
    .map_err(|e| bad(format!("optimizer state: {e}")))?;
    if let Err(e) = scaler.load_state(&state.scaler) {
        opt.load_state_dict(&current)?;
        return Err(bad(format!("scaler state: {e}")));
    }
    // Only now, with everything checked, overwrite the parameters.
    let _no_grad = amp_tensor::no_grad();
    for (p, saved) in assignments {
        p.assign(saved)?;
    }
    Ok(state)
}
