//! [`StepOutcome`]: what `GradScaler::step` did.

use serde::{Deserialize, Serialize};

/// Whether [`GradScaler::step`](crate::GradScaler::step) ran the optimizer,
/// and if not, which gradients held infinities or NaNs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepOutcome {
    /// Every gradient was finite; `optimizer.step()` ran.
    Stepped,
    /// Some gradient held inf or NaN; `optimizer.step()` was skipped.
    ///
    /// Both lists are empty when only another data-parallel replica saw an
    /// overflow (reported through [`FoundInfReduce`](crate::FoundInfReduce)).
    Skipped {
        /// Parameters whose (scaled) gradients held ±inf, with the number of such elements.
        inf_params: Vec<(String, usize)>,
        /// Parameters whose gradients held NaN, with the number of such elements.
        nan_params: Vec<(String, usize)>,
    },
}

impl StepOutcome {
    /// True if the optimizer step was skipped.
    pub fn is_skipped(&self) -> bool {
        matches!(self, StepOutcome::Skipped { .. })
    }

    /// True if the optimizer stepped.
    pub fn is_stepped(&self) -> bool {
        matches!(self, StepOutcome::Stepped)
    }
}
