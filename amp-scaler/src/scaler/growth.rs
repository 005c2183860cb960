//! The scale's update rule: PyTorch's `_amp_update_scale_`, with hysteresis,
//! bounds, the floor, and the skip counters.

use super::config::check_scale;
use super::{GradScaler, SCALE_FLOOR};
use crate::{Error, Result};

impl GradScaler {
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
}
