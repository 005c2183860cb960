//! Fused optimizer updates: in place, outside autograd.

use super::{require_float, same_device};
use crate::{AdamWStep, Error, Result, Tensor};
use amp_dtype::DType;

/// Errors unless `t` is a whole contiguous tensor (it owns its buffer).
fn require_whole(op: &'static str, what: &str, t: &Tensor) -> Result<()> {
    let layout = t.layout();
    if layout.is_contiguous() && layout.offset() == 0 && t.storage().len() == t.numel() {
        return Ok(());
    }
    Err(Error::invalid(
        op,
        format!(
            "{what} of shape {:?} is a view; it must be a whole contiguous tensor",
            t.dims()
        ),
    ))
}

/// One AdamW update (`torch.optim.AdamW`, `amsgrad=False`) of `param` and its
/// f32 moments `exp_avg`, `exp_avg_sq`, in place, from `grad` — one fused pass
/// on backends that provide it (see [`crate::Backend::adamw_step`]).
///
/// `param` may be any float dtype (updated in f32, rounded once back); `grad`
/// any float dtype and layout with `param`'s shape; the moments f32 with
/// `param`'s shape. `param` and the moments must be whole contiguous tensors
/// with separate storages. Not recorded on the autograd tape.
pub fn adamw_step(
    param: &Tensor,
    grad: &Tensor,
    exp_avg: &Tensor,
    exp_avg_sq: &Tensor,
    hyper: &AdamWStep,
) -> Result<()> {
    let op = "adamw_step";
    same_device(op, &[param, grad, exp_avg, exp_avg_sq])?;
    require_float(op, param)?;
    require_float(op, grad)?;
    for (what, t) in [("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq)] {
        if t.dtype() != DType::F32 {
            return Err(Error::UnsupportedDType {
                op,
                dtype: t.dtype(),
                reason: format!("{what} must be f32"),
            });
        }
    }
    for (what, t) in [
        ("grad", grad),
        ("exp_avg", exp_avg),
        ("exp_avg_sq", exp_avg_sq),
    ] {
        if t.dims() != param.dims() {
            return Err(Error::invalid(
                op,
                format!(
                    "{what} has shape {:?}, param has shape {:?}",
                    t.dims(),
                    param.dims()
                ),
            ));
        }
    }
    for (what, t) in [
        ("param", param),
        ("exp_avg", exp_avg),
        ("exp_avg_sq", exp_avg_sq),
    ] {
        require_whole(op, what, t)?;
    }
    let all = [param, grad, exp_avg, exp_avg_sq];
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            if a.shares_storage_with(b) {
                return Err(Error::invalid(
                    op,
                    "param, grad, exp_avg and exp_avg_sq must not share storage",
                ));
            }
        }
    }
    if !(hyper.lr.is_finite()
        && hyper.eps.is_finite()
        && hyper.weight_decay.is_finite()
        && (0.0..1.0).contains(&hyper.beta1)
        && (0.0..1.0).contains(&hyper.beta2)
        && hyper.step >= 1)
    {
        return Err(Error::invalid(
            op,
            format!("hyperparameters out of range: {hyper:?} (betas in [0, 1), step ≥ 1)"),
        ));
    }
    let g = grad.storage();
    let mut p = param.storage_mut();
    let mut m = exp_avg.storage_mut();
    let mut v = exp_avg_sq.storage_mut();
    param
        .device()
        .backend()
        .adamw_step(&mut p, (&g, grad.layout()), &mut m, &mut v, hyper)
}
