//! The scaler's settings: their checks, and [`GradScalerBuilder`].

use super::GradScaler;
use crate::replica::{FoundInfReduce, SingleProcess};
use crate::{Error, Result};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// Settings shared by the builder, the setters and `load_state_dict`.
#[derive(Debug, Clone)]
pub(super) struct Settings {
    pub(super) init_scale: f64,
    pub(super) growth_factor: f64,
    pub(super) backoff_factor: f64,
    pub(super) growth_interval: u64,
    pub(super) enabled: bool,
    pub(super) hysteresis: u32,
    pub(super) consecutive_hysteresis: bool,
    pub(super) min_scale: Option<f64>,
    pub(super) max_scale: Option<f64>,
    pub(super) max_consecutive_skips: Option<u64>,
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
pub(super) fn check_scale(op: &'static str, what: &str, value: f64) -> Result<f32> {
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

pub(super) fn check_growth_factor(op: &'static str, value: f64) -> Result<()> {
    if !(value.is_finite() && value > 1.0) {
        return Err(Error::setting(
            op,
            format!("The growth factor must be > 1.0 (and finite), got {value}"),
        ));
    }
    Ok(())
}

pub(super) fn check_backoff_factor(op: &'static str, value: f64) -> Result<()> {
    if !(value > 0.0 && value < 1.0) {
        return Err(Error::setting(
            op,
            format!("The backoff factor must be < 1.0 and > 0, got {value}"),
        ));
    }
    Ok(())
}

pub(super) fn check_growth_interval(op: &'static str, value: u64) -> Result<()> {
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
    pub(super) fn validate(
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

    /// How the overflow check is combined across data-parallel replicas (default
    /// [`SingleProcess`]; amp-dist provides one over MPI or NCCL).
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
