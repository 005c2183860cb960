//! Combining the found-inf decision across data-parallel replicas.

use crate::Result;

/// The collective the scaler needs from a data-parallel job: which replica am
/// I, how many are there, and an element-wise sum over all of them.
///
/// Once per `unscale` (so once per optimizer per iteration, on every replica,
/// also when this replica's optimizer has no gradients) the scaler sums one
/// vector over the replicas: a flag per rank (`1` at this replica's own rank
/// when any of its gradients held inf or NaN) followed by the inf and NaN
/// counts of every parameter of the optimizer. The step is skipped when any
/// rank's flag is set or any count is not zero — every replica takes the same decision from the same
/// sums, so the replicas' parameters and scales stay equal — and the
/// [`StepOutcome`](crate::StepOutcome) of every replica names the ranks that
/// overflowed and the parameters with their counts summed over the ranks.
/// This is the `all_reduce(MAX)` of PyTorch's sharded scaler, carrying the
/// diagnosis along in the same message.
///
/// Every replica must hold the same parameters in the same order (the
/// data-parallel wrapper checks this when it is built), so the vectors have
/// the same length everywhere. [`SingleProcess`] is the default.
pub trait FoundInfReduce: Send + Sync {
    /// This replica's rank, `0..world_size()`.
    fn rank(&self) -> usize;

    /// The number of replicas.
    fn world_size(&self) -> usize;

    /// Replaces every element of `values` by its sum over all replicas.
    /// Counts are small integers, exact in f64.
    fn sum_reduce(&self, values: &mut [f64]) -> Result<()>;

    /// Whether this replica's own gradients held inf or NaN before they were
    /// averaged with the other replicas' (data-parallel training averages
    /// them before the scaler sees them, after which every replica holds the
    /// infs). `None` (the default): the scaler's own check names the rank.
    /// The skip decision does not depend on it: any inf or NaN after
    /// averaging skips, also one that arose in the sum itself.
    fn local_overflow(&self) -> Option<bool> {
        None
    }
}

/// The single-process [`FoundInfReduce`]: rank 0 of 1, sums are the local values.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SingleProcess;

impl FoundInfReduce for SingleProcess {
    fn rank(&self) -> usize {
        0
    }

    fn world_size(&self) -> usize {
        1
    }

    fn sum_reduce(&self, _values: &mut [f64]) -> Result<()> {
        Ok(())
    }
}
