//! Batch and group normalisation over `[N, C, *]` tensors.
//!
//! Both compute their statistics in f32 (f64 for f64 inputs) whatever the
//! input's dtype, with two passes (the mean, then the mean of squared
//! deviations), so an input with a large mean and a small variance keeps its
//! variance; the result is in the input's dtype. A bf16/f16 input may come
//! with f32 weight, bias and running statistics — PyTorch's mixed-type CPU
//! kernels, and what an autocast region gives these ops after a lowered
//! convolution. The backward passes follow from the composition.

use super::{require_float, same_device};
use crate::dispatch::dispatch;
use crate::{Error, Result, Tensor};
use amp_dtype::DType;

/// Running statistics of [`batch_norm`]: updated in place in training mode,
/// used instead of the batch's in evaluation mode.
#[derive(Debug, Clone, Copy)]
pub struct RunningStats<'a> {
    /// Per-channel mean `[C]`.
    pub mean: &'a Tensor,
    /// Per-channel (unbiased) variance `[C]`.
    pub var: &'a Tensor,
}

/// Settings of [`batch_norm`] (`Default`: PyTorch's, training mode).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchNormOptions {
    /// Normalise with the batch's statistics (and update the running ones)
    /// rather than with the running statistics.
    pub training: bool,
    /// Weight of the new batch in the running statistics:
    /// `running = (1 - momentum)·running + momentum·batch`.
    pub momentum: f64,
    /// Added to the variance before the square root.
    pub eps: f64,
}

impl Default for BatchNormOptions {
    fn default() -> Self {
        BatchNormOptions {
            training: true,
            momentum: 0.1,
            eps: 1e-5,
        }
    }
}

/// The dtype statistics are computed in for an input of `dtype`.
fn accumulation(dtype: DType) -> DType {
    if dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

/// Errors unless `p` (a per-channel tensor named `what`) is `[c]` and of
/// `x`'s dtype, or f32 for a bf16/f16 `x`.
fn per_channel(op: &'static str, x: &Tensor, p: &Tensor, c: usize) -> Result<()> {
    if p.dims() != [c] {
        return Err(Error::ShapeMismatch {
            op,
            lhs: x.shape(),
            rhs: p.shape(),
        });
    }
    let mixed = matches!(x.dtype(), DType::F16 | DType::BF16) && p.dtype() == DType::F32;
    if p.dtype() != x.dtype() && !mixed {
        return Err(Error::DTypeMismatch {
            op,
            lhs: x.dtype(),
            rhs: p.dtype(),
        });
    }
    Ok(())
}

/// `[1, C, 1, …]` for a per-channel tensor against an input of rank `rank`.
fn channel_view(p: &Tensor, rank: usize, acc: DType) -> Result<Tensor> {
    let mut shape = vec![1; rank];
    shape[1] = p.numel();
    p.to_dtype(acc)?.reshape(&shape)
}

/// `xhat · weight + bias` with per-channel parameters, in the input's dtype.
fn affine(
    xhat: Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    rank: usize,
    dtype: DType,
) -> Result<Tensor> {
    let acc = xhat.dtype();
    let mut y = xhat;
    if let Some(w) = weight {
        y = y.mul(&channel_view(w, rank, acc)?)?;
    }
    if let Some(b) = bias {
        y = y.add(&channel_view(b, rank, acc)?)?;
    }
    y.to_dtype(dtype)
}

/// Batch normalisation (`torch.nn.functional.batch_norm`) of `x` `[N, C, *]`
/// over every dimension but the channels. In training mode the batch's
/// statistics normalise and, when `running` is given, update it in place
/// (the unbiased variance, as PyTorch); in evaluation mode `running` is
/// required and normalises. Statistics in f32; the result in `x`'s dtype.
pub fn batch_norm(
    x: &Tensor,
    running: Option<RunningStats<'_>>,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    options: BatchNormOptions,
) -> Result<Tensor> {
    let op = "batch_norm";
    let mut inputs = vec![x];
    inputs.extend(weight);
    inputs.extend(bias);
    let (has_w, has_b) = (weight.is_some(), bias.is_some());
    dispatch(op, &inputs, |inputs| {
        let x = &inputs[0];
        let w = has_w.then(|| &inputs[1]);
        let b = has_b.then(|| &inputs[if has_w { 2 } else { 1 }]);
        require_float(op, x)?;
        let mut all: Vec<&Tensor> = inputs.iter().collect();
        if let Some(r) = &running {
            all.extend([r.mean, r.var]);
        }
        same_device(op, &all)?;
        if x.rank() < 2 {
            return Err(Error::invalid(
                op,
                format!("expects a [N, C, *] input, got shape {:?}", x.dims()),
            ));
        }
        let c = x.dims()[1];
        for p in w.into_iter().chain(b) {
            per_channel(op, x, p, c)?;
        }
        if let Some(r) = &running {
            per_channel(op, x, r.mean, c)?;
            per_channel(op, x, r.var, c)?;
        }
        if !(options.eps >= 0.0 && options.momentum.is_finite()) {
            return Err(Error::invalid(
                op,
                format!(
                    "eps must be >= 0 and momentum finite, got eps {} and momentum {}",
                    options.eps, options.momentum
                ),
            ));
        }
        let acc = accumulation(x.dtype());
        let rank = x.rank();
        let dims: Vec<usize> = (0..rank).filter(|&d| d != 1).collect();
        let count = x.numel() / c.max(1);
        let xa = x.to_dtype(acc)?;
        let xhat = if options.training {
            if count <= 1 {
                return Err(Error::invalid(
                    op,
                    format!(
                        "expects more than one value per channel in training mode, got input \
                         shape {:?}",
                        x.dims()
                    ),
                ));
            }
            let mean = xa.mean_dims(&dims, true)?;
            let centred = xa.sub(&mean)?;
            let var = centred.mul(&centred)?.mean_dims(&dims, true)?;
            if let Some(r) = &running {
                let _no_grad = crate::no_grad();
                let m = options.momentum;
                let unbiased = count as f64 / (count - 1) as f64;
                let batch_mean = mean.detach().reshape(&[c])?;
                let batch_var = var.detach().reshape(&[c])?.mul_scalar(unbiased)?;
                for (stat, batch) in [(r.mean, batch_mean), (r.var, batch_var)] {
                    let updated = stat
                        .to_dtype(acc)?
                        .mul_scalar(1.0 - m)?
                        .add(&batch.mul_scalar(m)?)?;
                    stat.assign(&updated)?;
                }
            }
            centred.mul(&var.add_scalar(options.eps)?.rsqrt()?)?
        } else {
            let r = running.ok_or_else(|| {
                Error::invalid(
                    op,
                    format!(
                        "evaluation mode needs running statistics (input shape {:?})",
                        x.dims()
                    ),
                )
            })?;
            let mean = channel_view(r.mean, rank, acc)?;
            let rstd = channel_view(r.var, rank, acc)?
                .add_scalar(options.eps)?
                .rsqrt()?;
            xa.sub(&mean)?.mul(&rstd)?
        };
        affine(xhat, w, b, rank, x.dtype())
    })
}

/// Group normalisation (`torch.nn.functional.group_norm`) of `x` `[N, C, *]`:
/// the channels split into `groups` groups, each sample's group normalised
/// over its channels and positions, then the per-channel affine. Statistics
/// in f32; the result in `x`'s dtype.
pub fn group_norm(
    x: &Tensor,
    groups: usize,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<Tensor> {
    let op = "group_norm";
    let mut inputs = vec![x];
    inputs.extend(weight);
    inputs.extend(bias);
    let (has_w, has_b) = (weight.is_some(), bias.is_some());
    dispatch(op, &inputs, |inputs| {
        let x = &inputs[0];
        let w = has_w.then(|| &inputs[1]);
        let b = has_b.then(|| &inputs[if has_w { 2 } else { 1 }]);
        require_float(op, x)?;
        same_device(op, &inputs.iter().collect::<Vec<_>>())?;
        if x.rank() < 2 {
            return Err(Error::invalid(
                op,
                format!("expects a [N, C, *] input, got shape {:?}", x.dims()),
            ));
        }
        let (n, c) = (x.dims()[0], x.dims()[1]);
        if groups == 0 || c % groups != 0 {
            return Err(Error::invalid(
                op,
                format!(
                    "channels ({c}) must be a multiple of groups ({groups}), input shape {:?}",
                    x.dims()
                ),
            ));
        }
        for p in w.into_iter().chain(b) {
            per_channel(op, x, p, c)?;
        }
        if eps.is_nan() || eps < 0.0 {
            return Err(Error::invalid(op, format!("eps must be >= 0, got {eps}")));
        }
        let acc = accumulation(x.dtype());
        let per_group = x.numel() / (n * groups).max(1);
        let grouped = x.to_dtype(acc)?.reshape(&[n, groups, per_group])?;
        let mean = grouped.mean_dim(2, true)?;
        let centred = grouped.sub(&mean)?;
        let var = centred.mul(&centred)?.mean_dim(2, true)?;
        let xhat = centred
            .mul(&var.add_scalar(eps)?.rsqrt()?)?
            .reshape(x.dims())?;
        affine(xhat, w, b, x.rank(), x.dtype())
    })
}
