//! The scaler's pass over an optimizer's gradients: the fused op
//! `non_finite_check_and_unscale_`, with the counts mapped to parameter names.

use crate::{Error, Result};
use amp_tensor::{ops, DType, Tensor};

/// Per-parameter non-finite counts from one pass, in the optimizer's parameter order.
#[derive(Debug, Clone, Default)]
pub(crate) struct GradReport {
    /// At least one gradient was checked (PyTorch's "inf checks were recorded").
    pub checked: bool,
    /// Parameters whose gradients held ±inf, with counts.
    pub inf_params: Vec<(String, usize)>,
    /// Parameters whose gradients held NaN, with counts.
    pub nan_params: Vec<(String, usize)>,
}

impl GradReport {
    pub fn found_inf(&self) -> bool {
        !self.inf_params.is_empty() || !self.nan_params.is_empty()
    }
}

/// Multiplies every gradient of `params` by `factor` in place and counts the
/// non-finite values of the results, per parameter, with the fused op
/// [`amp_tensor::ops::non_finite_check_and_unscale_`] (one backend pass per
/// device and dtype). f16 gradients are an `Err` unless `allow_f16`; every
/// check runs before any gradient is modified.
pub(crate) fn scale_grads_in_place(
    params: &[(String, Tensor)],
    factor: f32,
    allow_f16: bool,
) -> Result<GradReport> {
    let mut names = Vec::new();
    let mut grads = Vec::new();
    for (name, param) in params {
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
        names.push(name.clone());
        grads.push(grad);
    }
    let refs: Vec<&Tensor> = grads.iter().collect();
    let counts = ops::non_finite_check_and_unscale_(&refs, factor)?;
    let mut report = GradReport {
        checked: !names.is_empty(),
        ..GradReport::default()
    };
    for (name, count) in names.into_iter().zip(counts) {
        if count.inf > 0 {
            report.inf_params.push((name.clone(), count.inf));
        }
        if count.nan > 0 {
            report.nan_params.push((name, count.nan));
        }
    }
    Ok(report)
}
