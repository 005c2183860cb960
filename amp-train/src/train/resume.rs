//! Saving a run after an epoch and resuming it, through the one-call
//! [`checkpoint::save`] / [`checkpoint::Checkpoint`]: the model, the
//! optimizer and the scaler, plus (as the checkpoint's extra JSON) the
//! loader's epoch, the history and what the caller recorded about the run. A
//! resume checks that the checkpoint is of this run before it changes
//! anything.

use super::report::{EpochRecord, TrainReport};
use crate::checkpoint::{self, Checkpoint};
use crate::nn::Module;
use crate::optim::Optimizer;
use crate::precision::{Precision, PrecisionChoice};
use crate::{Error, Result};
use amp_scaler::GradScaler;
use amp_tensor::Device;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The run's part of a checkpoint (its extra JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct ResumeState {
    pub epochs_done: usize,
    pub batch_size: usize,
    pub shuffle_seed: Option<u64>,
    pub precision: Precision,
    pub dtype: String,
    pub loader_epoch: u64,
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

/// What a resume and a save need to know about the run beyond its parts.
pub(super) struct RunIdentity<'a> {
    pub choice: &'a PrecisionChoice,
    pub batch_size: usize,
    pub shuffle_seed: Option<u64>,
    pub run: &'a BTreeMap<String, serde_json::Value>,
}

/// The dtype the run checkpointed at `path` computed in, if `path` holds a
/// readable checkpoint of an amp-train run (else `None`: the resume itself
/// then reports what is wrong).
pub(crate) fn saved_dtype(path: &Path, device: &Device) -> Option<amp_tensor::DType> {
    let ck = Checkpoint::open(path, device).ok()?;
    let state: ResumeState = serde_json::from_value(ck.extra().clone()).ok()?;
    state.dtype.parse().ok()
}

/// Writes the checkpoint after `report.epochs` epochs.
pub(super) fn save<M: Module + ?Sized, O: Optimizer + ?Sized>(
    path: &Path,
    id: &RunIdentity<'_>,
    model: &M,
    opt: &O,
    scaler: &GradScaler,
    report: &TrainReport,
) -> Result<()> {
    let state = ResumeState {
        epochs_done: report.epochs,
        batch_size: id.batch_size,
        shuffle_seed: id.shuffle_seed,
        precision: id.choice.requested,
        dtype: id.choice.dtype.name().to_string(),
        loader_epoch: report.epochs as u64,
        steps: report.steps,
        skipped_steps: report.skipped_steps,
        history: report.history.clone(),
        step_losses: report.step_losses.clone(),
        step_loss_scales: report.step_loss_scales.clone(),
        skipped_step_indices: report.skipped_step_indices.clone(),
        run: id.run.clone(),
    };
    let extra = serde_json::to_value(&state)
        .map_err(|e| Error::checkpoint(path, format!("serialising state: {e}")))?;
    checkpoint::save(path, model, opt, scaler, extra)
}

/// A JSON value as a message shows it (strings without quotes).
fn shown(v: Option<&serde_json::Value>) -> String {
    match v {
        None => "none".to_string(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    }
}

/// The first key whose value differs between `saved` and `now`, with both values.
fn first_difference<'k>(
    saved: impl IntoIterator<Item = (&'k String, &'k serde_json::Value)>,
    now: impl IntoIterator<Item = (&'k String, &'k serde_json::Value)>,
) -> Option<(String, String, String)> {
    let saved: BTreeMap<_, _> = saved.into_iter().collect();
    let now: BTreeMap<_, _> = now.into_iter().collect();
    let keys: BTreeSet<&String> = saved.keys().chain(now.keys()).copied().collect();
    keys.into_iter().find_map(|k| {
        let (a, b) = (saved.get(k).copied(), now.get(k).copied());
        (a != b).then(|| (k.clone(), shown(a), shown(b)))
    })
}

/// Restores the run from `path` into `model`, `opt` and `scaler`, after
/// checking that the checkpoint is of this run (the caller's record, batch
/// size, shuffle seed, dtype, optimizer and hyperparameters; the checkpoint
/// itself checks every parameter's name and shape). On `Err` nothing was
/// changed.
pub(super) fn load<M: Module + ?Sized, O: Optimizer + ?Sized>(
    path: &Path,
    id: &RunIdentity<'_>,
    device: &Device,
    model: &M,
    opt: &mut O,
    scaler: &mut GradScaler,
) -> Result<ResumeState> {
    let ck = Checkpoint::open(path, device)?;
    let bad = |msg: String| Error::checkpoint(path, msg);
    let state: ResumeState = serde_json::from_value(ck.extra().clone()).map_err(|e| {
        bad(format!(
            "state.json does not describe an amp-train run: {e}"
        ))
    })?;
    let mismatch = |what: &str, saved: String, now: String| {
        bad(format!(
            "was written with {what} {saved}, this run uses {now}; resume with the same {what}"
        ))
    };
    if let Some((key, saved, now)) = first_difference(&state.run, id.run) {
        return Err(mismatch(&key, saved, now));
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
    if ck.optimizer_kind() != current.kind {
        return Err(mismatch(
            "optimizer",
            ck.optimizer_kind().to_string(),
            current.kind,
        ));
    }
    if let (Some(saved), Some(now)) = (
        ck.optimizer_config().as_object(),
        current.config.as_object(),
    ) {
        if let Some((key, a, b)) = first_difference(saved, now) {
            return Err(mismatch(&key, a, b));
        }
    }
    ck.restore(model, opt, scaler)?;
    Ok(state)
}
