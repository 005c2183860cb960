//! [`GradScaler`] and its builder.

use crate::optimizer::OptimizerKey;
use crate::replica::{FoundInfReduce, SingleProcess};
use crate::unscale::{scale_grads_in_place, GradReport};
use crate::{Error, Optimizer, Result, ScalerState, StepOutcome};
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

/// Settings shared by the builder, the setters and `load_state`.
#[derive(Debug, Clone)]
struct Settings {
    init_scale: f64,
    growth_factor: f64,
    backoff_factor: f64,
    growth_interval: u64,
    enabled: bool,
    hysteresis: u32,
    consecutive_hysteresis: bool,
    min_scale: Option<f64>,
    max_scale: Option<f64>,
    max_consecutive_skips: Option<u64>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            init_scale: 65536.0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
            enabled: true,
            hysteresis: 1,
            consecutive_hysteresis: false,
            min_scale: None,
            max_scale: None,
            max_consecutive_skips: None,
        }
    }
}

/// The smallest scale there is: the smallest normal f32, 2⁻¹²⁶. Backoff stops
/// here whatever the settings, so `1/scale` (2¹²⁶ at most) stays finite. PyTorch
/// has no floor: its scale halves through the subnormals to 0 in a long
/// overflow storm, `1/scale` becomes inf, and the next finite step writes inf
/// and NaN into every weight while reporting success.
pub const SCALE_FLOOR: f32 = f32::MIN_POSITIVE;

/// A finite f64 that is, as f32, at least [`SCALE_FLOOR`] and finite.
fn check_scale(op: &'static str, what: &str, value: f64) -> Result<f32> {
    let as_f32 = value as f32;
    if !(value.is_finite() && as_f32.is_finite() && as_f32 >= SCALE_FLOOR) {
        return Err(Error::setting(
            op,
            format!(
                "{what} must be a finite f32 value of at least {SCALE_FLOOR:e} (the smallest normal f32), got {value}"
            ),
        ));
    }
    Ok(as_f32)
}

fn check_growth_factor(op: &'static str, value: f64) -> Result<()> {
    if !(value.is_finite() && value > 1.0) {
        return Err(Error::setting(
            op,
            format!("The growth factor must be > 1.0 (and finite), got {value}"),
        ));
    }
    Ok(())
}

fn check_backoff_factor(op: &'static str, value: f64) -> Result<()> {
    if !(value > 0.0 && value < 1.0) {
        return Err(Error::setting(
            op,
            format!("The backoff factor must be < 1.0 and > 0, got {value}"),
        ));
    }
    Ok(())
}

fn check_growth_interval(op: &'static str, value: u64) -> Result<()> {
    if value == 0 {
        return Err(Error::setting(
            op,
            "growth_interval must be at least 1, got 0",
        ));
    }
    Ok(())
}

impl Settings {
    /// Checks every setting; returns the scale bounds as f32.
    /// `bounded_init`: the initial scale must lie within the bounds (a loaded
    /// scale may lie outside them after `update_to`).
    fn validate(
        &self,
        op: &'static str,
        bounded_init: bool,
    ) -> Result<(f32, Option<f32>, Option<f32>)> {
        let init = check_scale(op, "init_scale", self.init_scale)?;
        check_growth_factor(op, self.growth_factor)?;
        check_backoff_factor(op, self.backoff_factor)?;
        check_growth_interval(op, self.growth_interval)?;
        if self.hysteresis == 0 {
            return Err(Error::setting(
                op,
                "hysteresis must be at least 1 (1 backs off on every overflow), got 0",
            ));
        }
        if self.max_consecutive_skips == Some(0) {
            return Err(Error::setting(
                op,
                "max_consecutive_skips must be at least 1, got 0",
            ));
        }
        let min = self
            .min_scale
            .map(|m| check_scale(op, "min_scale", m))
            .transpose()?;
        let max = self
            .max_scale
            .map(|m| check_scale(op, "max_scale", m))
            .transpose()?;
        if let (Some(lo), Some(hi)) = (min, max) {
            if lo > hi {
                return Err(Error::setting(
                    op,
                    format!("min_scale {lo} is greater than max_scale {hi}"),
                ));
            }
        }
        if bounded_init && (min.is_some_and(|lo| init < lo) || max.is_some_and(|hi| init > hi)) {
            return Err(Error::setting(
                op,
                format!(
                    "init_scale {init} lies outside [min_scale, max_scale] = [{min:?}, {max:?}]"
                ),
            ));
        }
        Ok((init, min, max))
    }
}

/// Builds a [`GradScaler`]; every setting defaults to PyTorch's.
#[derive(Clone)]
pub struct GradScalerBuilder {
    settings: Settings,
    found_inf_reduce: Arc<dyn FoundInfReduce>,
}

impl fmt::Debug for GradScalerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GradScalerBuilder")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Default for GradScalerBuilder {
    fn default() -> Self {
        GradScalerBuilder {
            settings: Settings::default(),
            found_inf_reduce: Arc::new(SingleProcess),
        }
    }
}

impl GradScalerBuilder {
    /// The scale before the first update (default 65536 = 2¹⁶); positive, finite as f32.
    pub fn init_scale(mut self, value: f64) -> Self {
        self.settings.init_scale = value;
        self
    }

    /// The factor the scale grows by after `growth_interval` clean iterations (default 2; must be > 1).
    pub fn growth_factor(mut self, value: f64) -> Self {
        self.settings.growth_factor = value;
        self
    }

    /// The factor the scale shrinks by after an overflow (default 0.5; must lie in (0, 1)).
    pub fn backoff_factor(mut self, value: f64) -> Self {
        self.settings.backoff_factor = value;
        self
    }

    /// Consecutive clean iterations before the scale grows (default 2000; at least 1).
    pub fn growth_interval(mut self, value: u64) -> Self {
        self.settings.growth_interval = value;
        self
    }

    /// `false` makes the scaler a pass-through (the bf16 path; default `true`).
    pub fn enabled(mut self, value: bool) -> Self {
        self.settings.enabled = value;
        self
    }

    /// Back off only on the `n`-th overflow since the hysteresis was last
    /// restored (DeepSpeed's `hysteresis`; default 1 = every overflow, as
    /// PyTorch). Steps with inf/NaN gradients are skipped either way.
    pub fn hysteresis(mut self, n: u32) -> Self {
        self.settings.hysteresis = n;
        self
    }

    /// Restore the hysteresis after every clean iteration (DeepSpeed's
    /// `consecutive_hysteresis`) rather than only when the scale grows (default `false`).
    pub fn consecutive_hysteresis(mut self, value: bool) -> Self {
        self.settings.consecutive_hysteresis = value;
        self
    }

    /// Automatic backoff never takes the scale below `value` (default: no
    /// bound of its own, but never below [`SCALE_FLOOR`]).
    pub fn min_scale(mut self, value: f64) -> Self {
        self.settings.min_scale = Some(value);
        self
    }

    /// Automatic growth never takes the scale above `value`.
    pub fn max_scale(mut self, value: f64) -> Self {
        self.settings.max_scale = Some(value);
        self
    }

    /// `update` returns [`Error::Diverged`] once `n` consecutive iterations
    /// have found inf/NaN gradients, so a diverged run fails instead of spinning.
    pub fn max_consecutive_skips(mut self, n: u64) -> Self {
        self.settings.max_consecutive_skips = Some(n);
        self
    }

    /// How found-inf flags are combined across data-parallel replicas (default [`SingleProcess`]).
    pub fn found_inf_reduce(mut self, reduce: Arc<dyn FoundInfReduce>) -> Self {
        self.found_inf_reduce = reduce;
        self
    }

    /// The scaler, or an `Err` naming the first invalid setting.
    pub fn build(self) -> Result<GradScaler> {
        let (init, min, max) = self.settings.validate("GradScaler::build", true)?;
        let s = self.settings;
        Ok(GradScaler {
            enabled: s.enabled,
            scale: init,
            initialised: false,
            growth_tracker: 0,
            growth_factor: s.growth_factor,
            backoff_factor: s.backoff_factor,
            growth_interval: s.growth_interval,
            hysteresis: s.hysteresis,
            hysteresis_left: s.hysteresis,
            consecutive_hysteresis: s.consecutive_hysteresis,
            min_scale: min,
            max_scale: max,
            max_consecutive_skips: s.max_consecutive_skips,
            steps: 0,
            skips: 0,
            consecutive_skips: 0,
            per_optimizer: HashMap::new(),
            found_inf_reduce: self.found_inf_reduce,
        })
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
        let report = scale_grads_in_place(&opt.params(), inv_scale, false)?;
        let local = if report.found_inf() { 1.0 } else { 0.0 };
        let combined = self.found_inf_reduce.max_reduce(local)?;
        let found_inf = combined != 0.0;
        let checked = report.checked || found_inf;
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

    /// Updates the scale from the inf checks of every optimizer unscaled
    /// since the last update (PyTorch's `_amp_update_scale_`): after an
    /// overflow anywhere, the scale is multiplied by `backoff_factor` and the
    /// growth tracker reset; otherwise the tracker counts up and, on reaching
    /// `growth_interval`, the scale is multiplied by `growth_factor` (unless
    /// that gives inf) and the tracker reset. Hysteresis and min/max bounds
    /// apply when configured. A disabled scaler does nothing.
    ///
    /// `Err` if no inf checks were recorded, and [`Error::Diverged`] (after
    /// updating) once `max_consecutive_skips` consecutive iterations overflowed.
    pub fn update(&mut self) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        self.check_initialised("update", "update")?;
        let found: Vec<bool> = self
            .per_optimizer
            .values()
            .filter_map(|s| s.found_inf)
            .collect();
        if found.is_empty() {
            return Err(Error::misuse(
                "update",
                "No inf checks were recorded prior to update.",
            ));
        }
        let found_inf = found.iter().any(|&f| f);
        self.update_scale(found_inf);
        self.finish_iteration(Some(found_inf))
    }

    /// Ends the iteration with the scale set to `new_scale` (PyTorch's
    /// `update(new_scale)`): the growth tracker and hysteresis are left as
    /// they are, and the bounds do not apply. `new_scale` must be positive
    /// and finite as f32. Skip counters still see this iteration's inf checks.
    pub fn update_to(&mut self, new_scale: f64) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        self.check_initialised("update", "update_to")?;
        self.scale = check_scale("update_to", "new_scale", new_scale)?;
        let found: Vec<bool> = self
            .per_optimizer
            .values()
            .filter_map(|s| s.found_inf)
            .collect();
        let found_inf = (!found.is_empty()).then(|| found.iter().any(|&f| f));
        self.finish_iteration(found_inf)
    }

    /// `_amp_update_scale_`, with hysteresis and bounds. Products are taken in
    /// f64 and rounded to f32, as PyTorch's kernel multiplies the f32 scale by
    /// a double factor.
    fn update_scale(&mut self, found_inf: bool) {
        if found_inf {
            if self.hysteresis_left <= 1 {
                let mut backed_off = (self.scale as f64 * self.backoff_factor) as f32;
                backed_off = backed_off.max(self.min_scale.unwrap_or(SCALE_FLOOR));
                self.scale = backed_off;
            } else {
                self.hysteresis_left -= 1;
            }
            self.growth_tracker = 0;
        } else {
            if self.consecutive_hysteresis {
                self.hysteresis_left = self.hysteresis;
            }
            let successful = self.growth_tracker + 1;
            // `>=` rather than PyTorch's `==`: a tracker loaded above a newly
            // shortened interval still grows.
            if successful >= self.growth_interval {
                let mut grown = self.scale as f64 * self.growth_factor;
                if let Some(max) = self.max_scale {
                    grown = grown.min(max as f64);
                }
                let grown = grown as f32;
                if grown.is_finite() {
                    self.scale = grown;
                }
                self.growth_tracker = 0;
                self.hysteresis_left = self.hysteresis;
            } else {
                self.growth_tracker = successful;
            }
        }
    }

    /// Clears the per-optimizer states and updates the skip counters.
    fn finish_iteration(&mut self, found_inf: Option<bool>) -> Result<()> {
        let mut inf_params = Vec::new();
        let mut nan_params = Vec::new();
        for state in self.per_optimizer.values() {
            inf_params.extend(state.report.inf_params.iter().cloned());
            nan_params.extend(state.report.nan_params.iter().cloned());
        }
        self.per_optimizer.clear();
        match found_inf {
            Some(true) => self.consecutive_skips += 1,
            Some(false) => self.consecutive_skips = 0,
            None => {}
        }
        if let Some(limit) = self.max_consecutive_skips {
            if found_inf == Some(true) && self.consecutive_skips >= limit {
                inf_params.sort();
                nan_params.sort();
                return Err(Error::Diverged {
                    consecutive_skips: self.consecutive_skips,
                    limit,
                    scale: self.scale,
                    inf_params,
                    nan_params,
                });
            }
        }
        Ok(())
    }

    // ----- state --------------------------------------------------------------

    /// The state to checkpoint (after `update`): PyTorch's fields plus ours.
    pub fn state(&self) -> ScalerState {
        ScalerState {
            scale: self.get_scale() as f64,
            growth_factor: self.growth_factor,
            backoff_factor: self.backoff_factor,
            growth_interval: self.growth_interval,
            growth_tracker: self.growth_tracker(),
            enabled: self.enabled,
            hysteresis: self.hysteresis,
            hysteresis_left: Some(self.hysteresis_left),
            consecutive_hysteresis: self.consecutive_hysteresis,
            min_scale: self.min_scale.map(f64::from),
            max_scale: self.max_scale.map(f64::from),
            max_consecutive_skips: self.max_consecutive_skips,
            steps: self.steps,
            skips: self.skips,
            consecutive_skips: self.consecutive_skips,
        }
    }

    /// Restores a state saved by [`state`](Self::state) (or PyTorch's
    /// `state_dict()` fields). A disabled scaler takes only the step and skip
    /// counters from it (PyTorch's ignores it); an enabled one rejects a
    /// disabled scaler's state and invalid values. Every state that
    /// [`state`](Self::state) returns loads back.
    /// Whether the scale was lazily initialised is not changed.
    pub fn load_state(&mut self, state: &ScalerState) -> Result<()> {
        if !self.enabled {
            // Nothing to scale, but the counters are ours and a resumed run continues them.
            self.steps = state.steps;
            self.skips = state.skips;
            self.consecutive_skips = state.consecutive_skips;
            return Ok(());
        }
        if !state.enabled {
            return Err(Error::InvalidState {
                msg: "The source state dict is empty, possibly because it was saved from a disabled instance of \
                      GradScaler."
                    .into(),
            });
        }
        let settings = Settings {
            init_scale: state.scale,
            growth_factor: state.growth_factor,
            backoff_factor: state.backoff_factor,
            growth_interval: state.growth_interval,
            enabled: true,
            hysteresis: state.hysteresis,
            consecutive_hysteresis: state.consecutive_hysteresis,
            min_scale: state.min_scale,
            max_scale: state.max_scale,
            max_consecutive_skips: state.max_consecutive_skips,
        };
        let (scale, min, max) = settings
            .validate("load_state", false)
            .map_err(|e| Error::InvalidState { msg: e.to_string() })?;
        let hysteresis_left = state.hysteresis_left.unwrap_or(state.hysteresis);
        if hysteresis_left == 0 || hysteresis_left > state.hysteresis {
            return Err(Error::InvalidState {
                msg: format!(
                    "hysteresis_left {hysteresis_left} must lie in [1, hysteresis = {}]",
                    state.hysteresis
                ),
            });
        }
        self.scale = scale;
        self.growth_factor = state.growth_factor;
        self.backoff_factor = state.backoff_factor;
        self.growth_interval = state.growth_interval;
        self.growth_tracker = state.growth_tracker;
        self.hysteresis = state.hysteresis;
        self.hysteresis_left = hysteresis_left;
        self.consecutive_hysteresis = state.consecutive_hysteresis;
        self.min_scale = min;
        self.max_scale = max;
        self.max_consecutive_skips = state.max_consecutive_skips;
        self.steps = state.steps;
        self.skips = state.skips;
        self.consecutive_skips = state.consecutive_skips;
        Ok(())
    }
}
