//! [`clip_grad_norm`]: `torch.nn.utils.clip_grad_norm_` for use between
//! `GradScaler::unscale` and `GradScaler::step`.

use crate::unscale::scale_grads_in_place;
use crate::{Error, Result};
use amp_tensor::{DType, Tensor};

/// Scales the gradients of `params` in place so that their joint L2 norm is at
/// most `max_norm`, and returns the norm they had before (as
/// `torch.nn.utils.clip_grad_norm_(params, max_norm)`).
///
/// The coefficient is `max_norm / (total_norm + 1e-6)` clamped to 1, rounded to
/// f32, applied with the backend's fused in-place pass (strided gradient views
/// included). Each gradient's sum of squares is computed in f32 on its device;
/// the total is combined in f64. As in PyTorch (`error_if_nonfinite=False`), a
/// non-finite norm is returned, not an error, and the gradients are multiplied
/// by the resulting coefficient. Parameters without a gradient are skipped; with
/// none at all the norm is 0. A negative or NaN `max_norm` is an `Err`.
///
/// With a [`GradScaler`](crate::GradScaler), call
/// [`unscale`](crate::GradScaler::unscale) first so that `max_norm` applies to
/// the true gradients.
pub fn clip_grad_norm<'a>(
    params: impl IntoIterator<Item = &'a Tensor>,
    max_norm: f64,
) -> Result<f64> {
    if max_norm.is_nan() || max_norm < 0.0 {
        return Err(Error::setting(
            "clip_grad_norm",
            format!("max_norm must be >= 0, got {max_norm}"),
        ));
    }
    let _no_grad = amp_tensor::no_grad();
    let params: Vec<(String, Tensor)> = params
        .into_iter()
        .map(|p| (String::new(), p.clone()))
        .collect();
    let mut sum_of_squares = 0.0f64;
    let mut any = false;
    for (_, p) in &params {
        if let Some(g) = p.grad() {
            let g32 = g.to_dtype(DType::F32)?;
            sum_of_squares += g32.mul(&g32)?.sum_all()?.scalar_f64()?;
            any = true;
        }
    }
    if !any {
        return Ok(0.0);
    }
    let total_norm = sum_of_squares.sqrt();
    let coefficient = (max_norm / (total_norm + 1e-6)).min(1.0) as f32;
    // `min` drops a NaN coefficient (NaN norm); PyTorch's clamp keeps it.
    let coefficient = if total_norm.is_nan() {
        f32::NAN
    } else {
        coefficient
    };
    if coefficient != 1.0 {
        scale_grads_in_place(&params, coefficient, true, &crate::SingleProcess)?;
    }
    Ok(total_norm)
}
