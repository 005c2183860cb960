//! Saving and loading: [`ScalerState`], what [`GradScaler::state_dict`] saves and
//! [`GradScaler::load_state_dict`] restores.

use super::config::Settings;
use super::GradScaler;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// The scaler's saved state: PyTorch's `state_dict()` fields under PyTorch's
/// names, plus this crate's own settings and counters.
///
/// A JSON object written from PyTorch's state dict (`scale`, `growth_factor`,
/// `backoff_factor`, `growth_interval`, `_growth_tracker`) deserialises into
/// it: every other field has a default. A disabled scaler's state has
/// `enabled: false` (PyTorch saves an empty dict); loading it into an enabled
/// scaler is an `Err`, as in PyTorch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScalerState {
    /// The current scale (before the lazy initialisation: the initial scale; 1 when disabled).
    pub scale: f64,
    /// Factor applied after `growth_interval` clean iterations.
    pub growth_factor: f64,
    /// Factor applied after an iteration with inf/NaN gradients.
    pub backoff_factor: f64,
    /// Clean iterations needed before the scale grows.
    pub growth_interval: u64,
    /// Clean iterations since the last growth or backoff.
    #[serde(rename = "_growth_tracker")]
    pub growth_tracker: u64,
    /// False if saved from a disabled scaler.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Overflowing iterations tolerated before the scale backs off (1: every one, as PyTorch).
    #[serde(default = "default_one")]
    pub hysteresis: u32,
    /// Overflows left before the next backoff (`None`: as many as `hysteresis`).
    #[serde(default)]
    pub hysteresis_left: Option<u32>,
    /// Restore the hysteresis after every clean iteration instead of after every growth.
    #[serde(default)]
    pub consecutive_hysteresis: bool,
    /// Lower bound for automatic backoff.
    #[serde(default)]
    pub min_scale: Option<f64>,
    /// Upper bound for automatic growth.
    #[serde(default)]
    pub max_scale: Option<f64>,
    /// Consecutive skipped iterations after which `update` returns an `Err`.
    #[serde(default)]
    pub max_consecutive_skips: Option<u64>,
    /// Optimizer steps taken.
    #[serde(default)]
    pub steps: u64,
    /// Optimizer steps skipped for inf/NaN gradients.
    #[serde(default)]
    pub skips: u64,
    /// Consecutive iterations (updates) that found inf/NaN gradients.
    #[serde(default)]
    pub consecutive_skips: u64,
}

fn default_true() -> bool {
    true
}

fn default_one() -> u32 {
    1
}

impl GradScaler {
    /// The state to checkpoint (after `update`): PyTorch's fields plus ours.
    pub fn state_dict(&self) -> ScalerState {
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

    /// Restores a state saved by [`state_dict`](Self::state_dict) (or PyTorch's
    /// `state_dict()` fields). A disabled scaler takes only the step and skip
    /// counters from it (PyTorch's ignores it); an enabled one rejects a
    /// disabled scaler's state and invalid values. Every state that
    /// [`state_dict`](Self::state_dict) returns loads back.
    /// Whether the scale was lazily initialised is not changed.
    pub fn load_state_dict(&mut self, state: &ScalerState) -> Result<()> {
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
            .validate("load_state_dict", false)
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
