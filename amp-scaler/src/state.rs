//! [`ScalerState`]: what `GradScaler::state` saves and `load_state` restores.

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
