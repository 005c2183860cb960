//! Combining the found-inf flag across data-parallel replicas.

use crate::Result;

/// Combines this process's found-inf flag with those of the other
/// data-parallel replicas, by maximum: if any replica saw an inf or NaN, every
/// replica must skip the step so that the replicas' parameters stay equal.
///
/// The scaler calls [`max_reduce`](FoundInfReduce::max_reduce) once per
/// `unscale` (so once per optimizer per iteration, on every replica, also when
/// this replica's optimizer has no gradients), with `0.0` or `1.0`; a result
/// other than `0.0` counts as found. This is the `all_reduce(MAX)` that
/// PyTorch's sharded scaler performs. [`SingleProcess`] is the default.
pub trait FoundInfReduce: Send + Sync {
    /// Returns the maximum of `local_found_inf` over all replicas.
    fn max_reduce(&self, local_found_inf: f32) -> Result<f32>;
}

/// The single-process [`FoundInfReduce`]: returns the local flag unchanged.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SingleProcess;

impl FoundInfReduce for SingleProcess {
    fn max_reduce(&self, local_found_inf: f32) -> Result<f32> {
        Ok(local_found_inf)
    }
}
