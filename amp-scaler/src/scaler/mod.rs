//! [`GradScaler`]: the type and one iteration (`scale`, `unscale`, `step`);
//! its settings and builder are in [`config`], the scale's update rule in
//! [`growth`], saving and loading in [`state`].

mod config;
mod growth;
mod state;

use config::{check_backoff_factor, check_growth_factor, check_growth_interval};
pub use config::{GradScalerBuilder, SCALE_FLOOR};
pub use state::ScalerState;

use crate::optimizer::OptimizerKey;
use crate::replica::FoundInfReduce;
use crate::unscale::{scale_grads_in_place, GradReport};
use crate::{Error, Optimizer, Result, StepOutcome};
use amp_tensor::{DType, Tensor};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

const NOT_SCALED_YET: &str =
    "but _scale is None.  This may indicate your script did not use scaler.scale(loss or outputs) earlier in the iteration.";

/// Where one optimizer is in the current iteration (PyTorch's `OptState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Ready,
    Unscaled,
    Stepped,
}

/// What the scaler knows about one optimizer since the last `update`.
#[derive(Debug, Clone)]
struct PerOptimizer {
    stage: Stage,
    /// `None`: no gradient was checked (PyTorch's empty `found_inf_per_device`).
    found_inf: Option<bool>,
    report: GradReport,
}

impl Default for PerOptimizer {
    fn default() -> Self {
        PerOptimizer {
            stage: Stage::Ready,
            found_inf: None,
            report: GradReport::default(),
        }
    }
}

/// Dynamic loss scaling with PyTorch's `torch.amp.GradScaler` semantics.
///
/// One iteration: [`scale`](Self::scale) the loss, backpropagate, optionally
/// [`unscale`](Self::unscale) (to clip or inspect gradients), [`step`](Self::step)
/// each optimizer, then [`update`](Self::update) once. See the crate docs.
///
/// The scale is an f32, as PyTorch's scale tensor. It is set from `init_scale`
/// lazily on the first `scale` call (PyTorch's `_lazy_init_scale_growth_tracker`);
/// `unscale`, `step` and `update` before that are errors.
pub struct GradScaler {
    enabled: bool,
    scale: f32,
    initialised: bool,
    growth_tracker: u64,
    growth_factor: f64,
    backoff_factor: f64,
    growth_interval: u64,
    hysteresis: u32,
    hysteresis_left: u32,
    consecutive_hysteresis: bool,
    min_scale: Option<f32>,
    max_scale: Option<f32>,
    max_consecutive_skips: Option<u64>,
    steps: u64,
    skips: u64,
    consecutive_skips: u64,
    per_optimizer: HashMap<OptimizerKey, PerOptimizer>,
    found_inf_reduce: Arc<dyn FoundInfReduce>,
}

impl fmt::Debug for GradScaler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GradScaler")
            .field("enabled", &self.enabled)
            .field("scale", &self.scale)
            .field("growth_tracker", &self.growth_tracker)
            .field("growth_factor", &self.growth_factor)
            .field("backoff_factor", &self.backoff_factor)
            .field("growth_interval", &self.growth_interval)
            .field("steps", &self.steps)
            .field("skips", &self.skips)
            .finish_non_exhaustive()
    }
}

impl Default for GradScaler {
    fn default() -> Self {
        GradScaler::new()
    }
}

impl GradScaler {
    /// An enabled scaler with PyTorch's defaults: init_scale 65536,
    /// growth_factor 2, backoff_factor 0.5, growth_interval 2000.
    pub fn new() -> Self {
        GradScaler::builder()
            .build()
            .expect("the default settings are valid")
    }

    /// A builder starting from PyTorch's defaults.
    pub fn builder() -> GradScalerBuilder {
        GradScalerBuilder::default()
    }

    // ----- queries --------------------------------------------------------

    /// False for a pass-through scaler.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// The current scale: the initial scale before the first `scale` call, 1
    /// when disabled (PyTorch's `get_scale`).
    pub fn get_scale(&self) -> f32 {
        if self.enabled {
            self.scale
        } else {
            1.0
        }
    }

    /// Clean iterations since the last growth or backoff (0 when disabled).
    pub fn growth_tracker(&self) -> u64 {
        if self.enabled {
            self.growth_tracker
        } else {
            0
        }
    }

    /// The growth factor.
    pub fn growth_factor(&self) -> f64 {
        self.growth_factor
    }

    /// The backoff factor.
    pub fn backoff_factor(&self) -> f64 {
        self.backoff_factor
    }

    /// The growth interval.
    pub fn growth_interval(&self) -> u64 {
        self.growth_interval
    }

    /// Overflows left before the next backoff (equals `hysteresis` when fully restored).
    pub fn hysteresis_left(&self) -> u32 {
        self.hysteresis_left
    }

    /// Optimizer steps taken through [`step`](Self::step) (disabled scalers count too).
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Optimizer steps skipped because of inf/NaN gradients.
    pub fn skips(&self) -> u64 {
        self.skips
    }

    /// Consecutive iterations (updates) that found inf/NaN gradients; 0 after a clean one.
    pub fn consecutive_skips(&self) -> u64 {
        self.consecutive_skips
    }

    // ----- setters ----------------------------------------------------------

    /// Sets the growth factor (must be > 1).
    pub fn set_growth_factor(&mut self, value: f64) -> Result<()> {
        check_growth_factor("set_growth_factor", value)?;
        self.growth_factor = value;
        Ok(())
    }

    /// Sets the backoff factor (must lie in (0, 1)).
    pub fn set_backoff_factor(&mut self, value: f64) -> Result<()> {
        check_backoff_factor("set_backoff_factor", value)?;
        self.backoff_factor = value;
        Ok(())
    }

    /// Sets the growth interval (at least 1).
    pub fn set_growth_interval(&mut self, value: u64) -> Result<()> {
        check_growth_interval("set_growth_interval", value)?;
        self.growth_interval = value;
        Ok(())
    }

    // ----- the iteration ----------------------------------------------------

    /// Multiplies `output` (usually the loss) by the scale; a disabled scaler
    /// returns it unchanged.
    ///
    /// The product keeps the output's dtype, as PyTorch's `outputs * scale`
    /// with a 0-dim f32 scale does (a 0-dim tensor does not promote a
    /// dimensioned tensor of the same category): an f16 loss stays f16, an f64
    /// loss stays f64. A non-float output becomes f32, as in PyTorch. The
    /// product is exact and rounded once to that dtype (PyTorch computes
    /// f16·f32 in f32; both agree whenever the scale is a power of two, which
    /// it stays with power-of-two factors). The first call sets the scale
    /// from `init_scale`.
    pub fn scale(&mut self, output: &Tensor) -> Result<Tensor> {
        if !self.enabled {
            return Ok(output.clone());
        }
        self.initialised = true;
        let output = if output.dtype().is_float() {
            output.clone()
        } else {
            output.to_dtype(DType::F32)?
        };
        Ok(output.mul_scalar(self.scale as f64)?)
    }

    /// [`scale`](Self::scale) for several outputs (several losses, or outputs
    /// that are backpropagated together).
    pub fn scale_all(&mut self, outputs: &[Tensor]) -> Result<Vec<Tensor>> {
        outputs.iter().map(|o| self.scale(o)).collect()
    }

    fn check_initialised(&self, funcname: &str, op: &'static str) -> Result<()> {
        if !self.initialised {
            return Err(Error::misuse(
                op,
                format!("Attempted {funcname} {NOT_SCALED_YET}"),
            ));
        }
        Ok(())
    }

    /// Divides `opt`'s gradients by the scale, in place, and records whether
    /// any was inf or NaN. Optional: `step` unscales if this was not called;
    /// call it to clip or inspect true gradients before `step`. At most once
    /// per optimizer per iteration. A disabled scaler does nothing.
    ///
    /// `inv_scale` is computed as PyTorch does (`1/scale` in f64, rounded to
    /// f32); the gradients go through one fused backend pass per
    /// device/dtype group. f16 gradients are an `Err` (master weights must be
    /// f32), raised before any gradient is changed.
    pub fn unscale<O: Optimizer + ?Sized>(&mut self, opt: &mut O) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        self.check_initialised("unscale_", "unscale")?;
        let key = OptimizerKey::of(opt);
        match self
            .per_optimizer
            .get(&key)
            .map_or(Stage::Ready, |s| s.stage)
        {
            Stage::Unscaled => {
                return Err(Error::misuse(
                    "unscale",
                    "unscale_() has already been called on this optimizer since the last update().",
                ))
            }
            Stage::Stepped => {
                return Err(Error::misuse(
                    "unscale",
                    "unscale_() is being called after step().",
                ))
            }
            Stage::Ready => {}
        }
        let inv_scale = (1.0 / self.scale as f64) as f32;
        let report = scale_grads_in_place(
            &opt.params(),
            inv_scale,
            false,
            self.found_inf_reduce.as_ref(),
        )?;
        let found_inf = report.found_inf();
        let checked = report.checked;
        self.per_optimizer.insert(
            key,
            PerOptimizer {
                stage: Stage::Unscaled,
                found_inf: checked.then_some(found_inf),
                report,
            },
        );
        Ok(())
    }

    /// Unscales `opt`'s gradients (unless [`unscale`](Self::unscale) already
    /// did this iteration), then clips them to a joint L2 norm of at most
    /// `max_norm` with [`clip_grad_norm`](crate::clip_grad_norm), and returns
    /// the norm they had — PyTorch's `scaler.unscale_(opt)` followed by
    /// `clip_grad_norm_(params, max_norm)`. After an overflow the norm is inf
    /// or NaN and the following [`step`](Self::step) skips. A disabled scaler
    /// only clips.
    pub fn clip_grad_norm<O: Optimizer + ?Sized>(
        &mut self,
        opt: &mut O,
        max_norm: f64,
    ) -> Result<f64> {
        let unscaled = self
            .per_optimizer
            .get(&OptimizerKey::of(opt))
            .is_some_and(|s| s.stage == Stage::Unscaled);
        if !unscaled {
            self.unscale(opt)?;
        }
        let params = opt.params();
        crate::clip_grad_norm(params.iter().map(|(_, p)| p), max_norm)
    }

    /// Unscales `opt`'s gradients (unless [`unscale`](Self::unscale) already
    /// did), then runs `opt.step()` if they are all finite and skips it
    /// otherwise, saying which parameters held inf or NaN. Once per optimizer
    /// per iteration. A disabled scaler just steps.
    pub fn step<O: Optimizer + ?Sized>(&mut self, opt: &mut O) -> Result<StepOutcome> {
        if !self.enabled {
            opt.step()?;
            self.steps += 1;
            return Ok(StepOutcome::Stepped);
        }
        self.check_initialised("step", "step")?;
        let key = OptimizerKey::of(opt);
        let stage = self
            .per_optimizer
            .get(&key)
            .map_or(Stage::Ready, |s| s.stage);
        if stage == Stage::Stepped {
            return Err(Error::misuse(
                "step",
                "step() has already been called since the last update().",
            ));
        }
        if stage == Stage::Ready {
            self.unscale(opt)?;
        }
        let state = self.per_optimizer.get(&key).cloned().unwrap_or_default();
        let Some(found_inf) = state.found_inf else {
            return Err(Error::misuse(
                "step",
                "No inf checks were recorded for this optimizer. (None of its parameters has a gradient.)",
            ));
        };
        let outcome = if found_inf {
            StepOutcome::Skipped {
                inf_params: state.report.inf_params,
                nan_params: state.report.nan_params,
                ranks: state.report.ranks,
            }
        } else {
            opt.step()?;
            StepOutcome::Stepped
        };
        if let Some(s) = self.per_optimizer.get_mut(&key) {
            s.stage = Stage::Stepped;
        }
        match outcome {
            StepOutcome::Stepped => self.steps += 1,
            StepOutcome::Skipped { .. } => self.skips += 1,
        }
        Ok(outcome)
    }
}
