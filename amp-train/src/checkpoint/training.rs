//! One-call checkpoints of a training run: the model's state dict, the
//! optimizer's and the scaler's state, and the caller's own JSON — what
//! `torch.save({"model": …, "optimizer": …, "scaler": …, …})` holds, in the
//! checked, atomic checkpoint directory of [`write`](super::write).

use super::{read, write};
use crate::nn::{LoadPlan, Module, StateDict};
use crate::optim::{Optimizer, OptimizerState};
use crate::{Error, Result};
use amp_scaler::{GradScaler, ScalerState};
use amp_tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Name prefix of the model's tensors in the checkpoint.
const MODEL: &str = "model.";
/// Name prefix of the optimizer's tensors in the checkpoint.
const OPTIM: &str = "optim.";

/// The optimizer's state without its tensors.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct OptimizerMeta {
    kind: String,
    config: serde_json::Value,
    steps: Vec<(String, u64)>,
}

/// The JSON part of a training checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TrainingState {
    optimizer: OptimizerMeta,
    scaler: ScalerState,
    extra: serde_json::Value,
}

/// Saves `model`, `opt`, `scaler` and `extra` (any JSON: epoch, config, …)
/// as the checkpoint directory `path`, atomically and checksummed (see the
/// [module docs](super)). [`load`] restores them.
///
/// ```
/// use amp_scaler::GradScaler;
/// use amp_tensor::Device;
/// use amp_train::checkpoint;
/// use amp_train::nn::{Linear, Module};
/// use amp_train::optim::{AdamW, AdamWConfig};
///
/// let device = Device::reference();
/// let model = Linear::new(3, 2, &device)?;
/// let opt = AdamW::new(model.named_parameters(), AdamWConfig::default());
/// let scaler = GradScaler::new();
/// let dir = std::env::temp_dir().join(format!("amp-doc-ck-{}", std::process::id()));
/// checkpoint::save(&dir, &model, &opt, &scaler, serde_json::json!({ "epoch": 3 }))?;
///
/// let restored = Linear::new(3, 2, &device)?; // other weights
/// let mut opt2 = AdamW::new(restored.named_parameters(), AdamWConfig::default());
/// let mut scaler2 = GradScaler::new();
/// let extra = checkpoint::load(&dir, &restored, &mut opt2, &mut scaler2)?;
/// assert_eq!(extra["epoch"], 3);
/// assert_eq!(restored.weight().to_vec::<f32>()?, model.weight().to_vec::<f32>()?);
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn save<M: Module + ?Sized, O: Optimizer + ?Sized>(
    path: impl AsRef<Path>,
    model: &M,
    opt: &O,
    scaler: &GradScaler,
    extra: serde_json::Value,
) -> Result<()> {
    let path = path.as_ref();
    let optimizer = opt.state_dict()?;
    let mut tensors: Vec<(String, Tensor)> = model
        .state_dict()
        .into_iter()
        .map(|(n, t)| (format!("{MODEL}{n}"), t))
        .collect();
    tensors.extend(
        optimizer
            .tensors
            .iter()
            .map(|(n, t)| (format!("{OPTIM}{n}"), t.clone())),
    );
    let state = TrainingState {
        optimizer: OptimizerMeta {
            kind: optimizer.kind,
            config: optimizer.config,
            steps: optimizer.steps,
        },
        scaler: scaler.state_dict(),
        extra,
    };
    let json = serde_json::to_value(&state)
        .map_err(|e| Error::checkpoint(path, format!("serialising state: {e}")))?;
    write(path, &tensors, &json)
}

/// Restores a checkpoint written by [`save`] into `model`, `opt` and
/// `scaler` and returns its `extra` JSON. Everything is checked first (the
/// files, every parameter's name, shape and dtype kind, the optimizer's kind
/// and state, the scaler's state): on `Err` nothing was changed. The tensors
/// are read onto the model's device.
pub fn load<M: Module + ?Sized, O: Optimizer + ?Sized>(
    path: impl AsRef<Path>,
    model: &M,
    opt: &mut O,
    scaler: &mut GradScaler,
) -> Result<serde_json::Value> {
    let device = model
        .state_dict()
        .first()
        .map_or_else(Device::reference, |(_, t)| t.device().clone());
    Checkpoint::open(path, &device)?.restore(model, opt, scaler)
}

/// A training checkpoint read and checked but not yet restored: look at what
/// it holds (to refuse one of another run) before [`Checkpoint::restore`].
#[derive(Debug)]
pub struct Checkpoint {
    path: PathBuf,
    model: StateDict,
    optim: Vec<(String, Tensor)>,
    state: TrainingState,
}

impl Checkpoint {
    /// Reads the checkpoint directory `path` (its tensors onto `device`).
    pub fn open(path: impl AsRef<Path>, device: &Device) -> Result<Checkpoint> {
        let path = path.as_ref();
        let bad = |msg: String| Error::checkpoint(path, msg);
        let (tensors, json) = read(path, device)?;
        let state: TrainingState = serde_json::from_value(json).map_err(|e| {
            bad(format!(
                "state.json does not describe a training checkpoint: {e}"
            ))
        })?;
        let mut model = Vec::new();
        let mut optim = Vec::new();
        for (name, t) in tensors {
            if let Some(n) = name.strip_prefix(MODEL) {
                model.push((n.to_string(), t));
            } else if let Some(n) = name.strip_prefix(OPTIM) {
                optim.push((n.to_string(), t));
            } else {
                return Err(bad(format!(
                    "unexpected tensor {name:?} (expected {MODEL}* and {OPTIM}* tensors)"
                )));
            }
        }
        Ok(Checkpoint {
            path: path.to_path_buf(),
            model,
            optim,
            state,
        })
    }

    /// The caller's JSON given to [`save`].
    pub fn extra(&self) -> &serde_json::Value {
        &self.state.extra
    }

    /// The model's saved state dict.
    pub fn model_state(&self) -> &StateDict {
        &self.model
    }

    /// The saved optimizer's kind (`"AdamW"`).
    pub fn optimizer_kind(&self) -> &str {
        &self.state.optimizer.kind
    }

    /// The saved optimizer's hyperparameters.
    pub fn optimizer_config(&self) -> &serde_json::Value {
        &self.state.optimizer.config
    }

    /// The saved scaler state.
    pub fn scaler_state(&self) -> &ScalerState {
        &self.state.scaler
    }

    /// Restores the checkpoint into `model`, `opt` and `scaler` (strictly:
    /// every parameter and buffer name must match) and returns the `extra`
    /// JSON. On `Err` nothing was changed.
    pub fn restore<M: Module + ?Sized, O: Optimizer + ?Sized>(
        self,
        model: &M,
        opt: &mut O,
        scaler: &mut GradScaler,
    ) -> Result<serde_json::Value> {
        let bad = |msg: String| Error::checkpoint(&self.path, msg);
        let plan = LoadPlan::new(&model.state_dict(), &self.model, true)
            .map_err(|e| bad(format!("model state: {e}")))?;
        let before = opt.state_dict()?;
        opt.load_state_dict(&OptimizerState {
            kind: self.state.optimizer.kind.clone(),
            config: self.state.optimizer.config.clone(),
            steps: self.state.optimizer.steps.clone(),
            tensors: self.optim,
        })
        .map_err(|e| bad(format!("optimizer state: {e}")))?;
        if let Err(e) = scaler.load_state_dict(&self.state.scaler) {
            // Put the optimizer back as it was.
            opt.load_state_dict(&before)?;
            return Err(bad(format!("scaler state: {e}")));
        }
        // Only now, with everything checked, overwrite the parameters.
        plan.apply()?;
        Ok(self.state.extra)
    }
}
