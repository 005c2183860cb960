//! The scaler's pass over an optimizer's gradients: the fused op
//! `non_finite_check_and_unscale_`, with the counts mapped to parameter names.

use crate::{Error, FoundInfReduce, Result};
use amp_tensor::{ops, DType, Tensor};

/// Per-parameter non-finite counts from one pass, in the optimizer's parameter
/// order, combined over the data-parallel replicas.
#[derive(Debug, Clone, Default)]
pub(crate) struct GradReport {
    /// At least one gradient was checked (PyTorch's "inf checks were recorded"),
    /// or another replica found an overflow.
    pub checked: bool,
    /// Parameters whose gradients held ±inf, with counts (summed over ranks).
    pub inf_params: Vec<(String, usize)>,
    /// Parameters whose gradients held NaN, with counts (summed over ranks).
    pub nan_params: Vec<(String, usize)>,
    /// The ranks whose own gradients held inf or NaN.
    pub ranks: Vec<usize>,
    /// Some replica's gradients held inf or NaN: skip.
    pub found: bool,
}

impl GradReport {
    pub fn found_inf(&self) -> bool {
        self.found
    }
}

/// Multiplies every gradient of `params` by `factor` in place and counts the
/// non-finite values of the results, per parameter, with the fused op
/// [`amp_tensor::ops::non_finite_check_and_unscale_`] (one backend pass per
/// device and dtype), then sums the counts over the replicas with `reduce`
/// (one collective). f16 gradients are an `Err` unless `allow_f16`; every
/// check runs before any gradient is modified.
pub(crate) fn scale_grads_in_place(
    params: &[(String, Tensor)],
    factor: f32,
    allow_f16: bool,
    reduce: &dyn FoundInfReduce,
) -> Result<GradReport> {
    let mut slots = Vec::new();
    let mut grads = Vec::new();
    for (slot, (name, param)) in params.iter().enumerate() {
        let Some(grad) = param.grad() else { continue };
        let dtype = grad.dtype();
        if dtype == DType::F16 && !allow_f16 {
            return Err(Error::Fp16Gradient {
                param: name.clone(),
            });
        }
        if !dtype.is_float() {
            return Err(amp_tensor::Error::UnsupportedDType {
                op: "non_finite_check_and_unscale",
                dtype,
                reason: format!("gradient of parameter {name:?} is not floating-point"),
            }
            .into());
        }
        slots.push(slot);
        grads.push(grad);
    }
    let refs: Vec<&Tensor> = grads.iter().collect();
    let counts = ops::non_finite_check_and_unscale_(&refs, factor)?;
    // [a flag per rank | inf count per parameter | NaN count per parameter |
    //  any gradient checked | any overflow]
    let (world, n) = (reduce.world_size(), params.len());
    let mut sums = vec![0.0f64; world + 2 * n + 2];
    for (&slot, count) in slots.iter().zip(&counts) {
        sums[world + slot] = count.inf as f64;
        sums[world + n + slot] = count.nan as f64;
    }
    let found_here = counts.iter().any(|c| c.inf > 0 || c.nan > 0);
    if reduce.local_overflow().unwrap_or(found_here) {
        sums[reduce.rank()] = 1.0;
    }
    sums[world + 2 * n] = f64::from(u8::from(!slots.is_empty()));
    sums[world + 2 * n + 1] = f64::from(u8::from(found_here));
    reduce.sum_reduce(&mut sums)?;
    let nonzero = |i: usize| sums[i] != 0.0;
    let ranks: Vec<usize> = (0..world).filter(|&r| nonzero(r)).collect();
    let named = |base: usize| -> Vec<(String, usize)> {
        (0..n)
            .filter(|&i| nonzero(base + i))
            .map(|i| (params[i].0.clone(), sums[base + i] as usize))
            .collect()
    };
    let found = nonzero(world + 2 * n + 1) || !ranks.is_empty();
    Ok(GradReport {
        checked: nonzero(world + 2 * n) || found,
        found,
        inf_params: named(world),
        nan_params: named(world + n),
        ranks,
    })
}
