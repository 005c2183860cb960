//! [`StepOutcome`]: what `GradScaler::step` did.

use serde::{Deserialize, Serialize};

/// Whether [`GradScaler::step`](crate::GradScaler::step) ran the optimizer,
/// and if not, which gradients held infinities or NaNs, and on which
/// data-parallel ranks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StepOutcome {
    /// Every gradient was finite; `optimizer.step()` ran.
    Stepped,
    /// Some gradient held inf or NaN; `optimizer.step()` was skipped.
    ///
    /// In a data-parallel job (see [`FoundInfReduce`](crate::FoundInfReduce))
    /// every replica gets the same outcome: the counts are summed over the
    /// ranks, and `ranks` lists the ranks whose own gradients overflowed.
    Skipped {
        /// Parameters whose (scaled) gradients held ±inf, with the number of such elements.
        inf_params: Vec<(String, usize)>,
        /// Parameters whose gradients held NaN, with the number of such elements.
        nan_params: Vec<(String, usize)>,
        /// The ranks whose own gradients held inf or NaN (`[0]` in a single
        /// process; empty when the overflow arose in the sum over the ranks).
        ranks: Vec<usize>,
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
