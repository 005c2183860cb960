//! Optimizers over f32 master weights: [`Sgd`] and [`AdamW`].
//!
//! Both follow `torch.optim`'s single-tensor (`foreach=False`) update rules,
//! keep their state in f32 on the parameters' device, skip parameters that
//! have no gradient, and write the new values in place with
//! [`Tensor::assign`] under [`amp_tensor::no_grad`], so tensors held by the
//! model see the update. Both implement [`amp_scaler::Optimizer`], so a
//! `GradScaler` can unscale their gradients and skip their steps. Hyperparameters are checked when `step` runs (an
//! `Err` naming the field), so construction stays as plain as in PyTorch.
//!
//! ```
//! use amp_tensor::{DType, Device, Tensor};
//! use amp_train::optim::{AdamW, AdamWConfig};
//!
//! let device = Device::reference();
//! let w = Tensor::from_f64_slice(&[1.0, -2.0], &[2], DType::F32, &device)?;
//! w.set_requires_grad(true)?;
//! let mut opt = AdamW::new(vec![("w".into(), w.clone())], AdamWConfig { lr: 0.1, ..Default::default() });
//! w.mul(&w)?.sum_all()?.backward()?; // grad = 2w
//! opt.step()?;
//! // First Adam step moves each weight by lr against the gradient's sign (and decays it).
//! let v = w.to_f64_vec()?;
//! assert!((v[0] - (1.0 * (1.0 - 0.1 * 0.01) - 0.1)).abs() < 1e-6);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod adamw;
mod sgd;

pub use adamw::{AdamW, AdamWConfig};
pub use sgd::{Sgd, SgdConfig};

use crate::{Error, Result};
use amp_tensor::{DType, Tensor};

/// An optimizer's state, for checkpoints: its kind, hyperparameters (JSON),
/// per-parameter step counts, and state tensors named `"<param>.<slot>"`.
#[derive(Debug, Clone)]
pub struct OptimizerState {
    /// `"AdamW"` or `"SGD"`.
    pub kind: String,
    /// The hyperparameters.
    pub config: serde_json::Value,
    /// Steps taken per parameter (parameters that have state).
    pub steps: Vec<(String, u64)>,
    /// State tensors (f32), e.g. `"0.weight.exp_avg"`.
    pub tensors: Vec<(String, Tensor)>,
}

/// An optimizer the trainer can drive and checkpoint: what the scaler needs
/// ([`amp_scaler::Optimizer`]: parameters, step, zero_grad) plus its state
/// for a checkpoint (`torch.optim.Optimizer.state_dict`). [`AdamW`] and
/// [`Sgd`] implement it; a user's own optimizer implements both traits to be
/// used with [`Trainer`](crate::train::Trainer).
pub trait Optimizer: amp_scaler::Optimizer {
    /// A snapshot of the state (kind, hyperparameters, per-parameter state).
    fn state_dict(&self) -> Result<OptimizerState>;

    /// Restores a snapshot from [`Optimizer::state_dict`] (hyperparameters
    /// included, as PyTorch does), or `Err` leaving the optimizer unchanged.
    fn load_state_dict(&mut self, state: &OptimizerState) -> Result<()>;
}

impl Optimizer for AdamW {
    fn state_dict(&self) -> Result<OptimizerState> {
        AdamW::state_dict(self)
    }

    fn load_state_dict(&mut self, state: &OptimizerState) -> Result<()> {
        AdamW::load_state_dict(self, state)
    }
}

impl Optimizer for Sgd {
    fn state_dict(&self) -> Result<OptimizerState> {
        Sgd::state_dict(self)
    }

    fn load_state_dict(&mut self, state: &OptimizerState) -> Result<()> {
        Sgd::load_state_dict(self, state)
    }
}

/// Maps this crate's errors into the scaler's, for [`amp_scaler::Optimizer`].
fn to_scaler_error(e: Error) -> amp_scaler::Error {
    match e {
        Error::Tensor(e) => amp_scaler::Error::Tensor(e),
        Error::Scaler(e) => e,
        other => amp_scaler::Error::Optimizer(other.to_string()),
    }
}

impl amp_scaler::Optimizer for AdamW {
    fn params(&self) -> Vec<(String, Tensor)> {
        self.named_parameters().to_vec()
    }

    fn step(&mut self) -> amp_scaler::Result<()> {
        AdamW::step(self).map_err(to_scaler_error)
    }

    fn zero_grad(&mut self) {
        AdamW::zero_grad(self)
    }
}

impl amp_scaler::Optimizer for Sgd {
    fn params(&self) -> Vec<(String, Tensor)> {
        self.named_parameters().to_vec()
    }

    fn step(&mut self) -> amp_scaler::Result<()> {
        Sgd::step(self).map_err(to_scaler_error)
    }

    fn zero_grad(&mut self) {
        Sgd::zero_grad(self)
    }
}

/// The parameter's gradient in f32, or `None` if it has none.
fn grad_f32(param: &Tensor) -> Result<Option<Tensor>> {
    Ok(param.grad().map(|g| g.to_dtype(DType::F32)).transpose()?)
}

/// Checks that `value` is finite and at least 0.
fn check_non_negative(what: &'static str, value: f64) -> Result<()> {
    if !(value.is_finite() && value >= 0.0) {
        return Err(Error::config(
            what,
            format!("must be a finite number >= 0, got {value}"),
        ));
    }
    Ok(())
}

/// Looks up the state tensor `name` and checks it has the parameter's shape.
fn state_tensor(state: &OptimizerState, name: &str, like: &Tensor) -> Result<Tensor> {
    let t = state
        .tensors
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, t)| t.clone())
        .ok_or_else(|| {
            Error::data(
                "load_state_dict",
                format!("{} state has no tensor {name:?}", state.kind),
            )
        })?;
    if t.dims() != like.dims() {
        return Err(Error::data(
            "load_state_dict",
            format!(
                "{} state tensor {name:?} has shape {:?}, the parameter has {:?}",
                state.kind,
                t.dims(),
                like.dims()
            ),
        ));
    }
    // A copy the optimizer owns: AdamW updates its moments in place.
    owned_f32_copy(&t.to_device(like.device())?)
}

/// A new, whole, contiguous f32 tensor holding `t`'s values (never sharing its storage).
fn owned_f32_copy(t: &Tensor) -> Result<Tensor> {
    let _no_grad = amp_tensor::no_grad();
    let copy = Tensor::zeros(t.dims(), DType::F32, t.device())?;
    copy.assign(t)?;
    Ok(copy)
}

/// Checks the state's kind and that every parameter named in it exists here.
fn check_state_params(
    state: &OptimizerState,
    kind: &str,
    params: &[(String, Tensor)],
) -> Result<()> {
    if state.kind != kind {
        return Err(Error::data(
            "load_state_dict",
            format!("state is for {}, this optimizer is {kind}", state.kind),
        ));
    }
    for (name, _) in &state.steps {
        if !params.iter().any(|(n, _)| n == name) {
            return Err(Error::data(
                "load_state_dict",
                format!("{kind} state has parameter {name:?}, which this optimizer does not"),
            ));
        }
    }
    Ok(())
}
