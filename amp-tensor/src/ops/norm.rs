//! Batch and group normalisation over `[N, C, *]` tensors.
//!
//! Both compute their statistics in f32 (f64 for f64 inputs) whatever the
//! input's dtype, with two passes (the mean, then the mean of squared
//! deviations), so an input with a large mean and a small variance keeps its
//! variance; the result is in the input's dtype. A bf16/f16 input may come
//! with f32 weight, bias and running statistics — PyTorch's mixed-type CPU
//! kernels, and what an autocast region gives these ops after a lowered
//! convolution. Batch and group norm run as one autograd node each on a
//! backend with per-channel kernels (the CPU's; group norm sees its groups
//! as channels for the statistics and its channels per sample for the
//! affine map), else as a composition whose backward follows from its parts.

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
        let count = x.numel() / c.max(1);
        if options.training && count <= 1 {
            return Err(Error::invalid(
                op,
                format!(
                    "expects more than one value per channel in training mode, got input \
                     shape {:?}",
                    x.dims()
                ),
            ));
        }
        if !options.training && running.is_none() {
            return Err(Error::invalid(
                op,
                format!(
                    "evaluation mode needs running statistics (input shape {:?})",
                    x.dims()
                ),
            ));
        }
        if let Some(y) = fused_batch_norm(x, running, w, b, options)? {
            return Ok(y);
        }
        let acc = accumulation(x.dtype());
        let rank = x.rank();
        let dims: Vec<usize> = (0..rank).filter(|&d| d != 1).collect();
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
                update_running(r, &mean.reshape(&[c])?, &var.reshape(&[c])?, count, options)?;
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

/// `running ← (1 − momentum)·running + momentum·batch`, the batch's variance
/// made unbiased (PyTorch's update), in the running statistics' dtype.
fn update_running(
    r: &RunningStats<'_>,
    mean: &Tensor,
    var: &Tensor,
    count: usize,
    options: BatchNormOptions,
) -> Result<()> {
    let _no_grad = crate::no_grad();
    let m = options.momentum;
    let unbiased = count as f64 / (count - 1) as f64;
    let batch_var = var.detach().mul_scalar(unbiased)?;
    for (stat, batch) in [(r.mean, mean.detach()), (r.var, batch_var)] {
        let updated = stat
            .to_dtype(batch.dtype())?
            .mul_scalar(1.0 - m)?
            .add(&batch.mul_scalar(m)?)?;
        stat.assign(&updated)?;
    }
    Ok(())
}

/// Batch norm as one autograd node where the backend has the per-channel
/// kernels ([`Backend::channel_moments`], [`Backend::channel_affine`],
/// [`Backend::channel_grad_sums`]): one pass for the statistics (two over a
/// channel held in cache), one for the output; backward one pass for the
/// per-channel sums and one for the input's gradient,
/// `dx = w·rstd·(g − mean(g) − x̂·mean(g·x̂))` in training mode, `w·rstd·g`
/// in evaluation mode. `None` where the backend has no such kernels (the
/// composed form then runs). The checks are the caller's.
///
/// [`Backend::channel_moments`]: crate::backend::Backend::channel_moments
/// [`Backend::channel_affine`]: crate::backend::Backend::channel_affine
/// [`Backend::channel_grad_sums`]: crate::backend::Backend::channel_grad_sums
fn fused_batch_norm(
    x: &Tensor,
    running: Option<RunningStats<'_>>,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    options: BatchNormOptions,
) -> Result<Option<Tensor>> {
    if x.dtype() == DType::F64 {
        return Ok(None);
    }
    let (c, count) = (x.dims()[1], x.numel() / x.dims()[1].max(1));
    let device = x.device().clone();
    let backend = device.backend();
    let xd = x.detach().contiguous()?;
    let on_device = device.clone();
    let per_channel = move |s| Tensor::from_storage(s, &[c], &on_device);
    let (mean, var) = if options.training {
        let moments = {
            let xi = xd.materialised_input()?;
            backend.channel_moments(xi.view())?
        };
        let Some((mean, var)) = moments else {
            return Ok(None);
        };
        let (mean, var) = (per_channel(mean), per_channel(var));
        if let Some(r) = &running {
            update_running(r, &mean, &var, count, options)?;
        }
        (mean, var)
    } else {
        let r = running.expect("checked by the caller");
        (
            r.mean.detach().to_dtype(DType::F32)?,
            r.var.detach().to_dtype(DType::F32)?,
        )
    };
    // The per-channel terms are constants of the node below.
    let constants = crate::no_grad();
    let rstd = var.add_scalar(options.eps)?.rsqrt()?;
    let scale = match weight {
        Some(w) => rstd.mul(&w.detach().to_dtype(DType::F32)?)?,
        None => rstd.clone(),
    };
    let shift = match bias {
        Some(b) => b.detach().to_dtype(DType::F32)?.contiguous()?,
        None => Tensor::zeros(&[c], DType::F32, &device)?,
    };
    let y = channel_affine(&xd, None, [&mean, &scale, &shift], None, x.dtype())?;
    let Some(y) = y else {
        return Ok(None);
    };
    let y = Tensor::from_storage(y, x.dims(), &device);
    drop(constants);
    let (recorded, grad_dtypes) = recorded_inputs(x, weight, bias);
    let training = options.training;
    Ok(Some(y.view_op_multi(
        y.layout().clone(),
        "batch_norm",
        &recorded,
        move |grad| {
            let (x_grad, w_grad, b_grad) = grad_dtypes;
            let g = grad.to_dtype(xd.dtype())?.contiguous()?;
            let sums = channel_grad_sums("batch_norm", &xd, &g, &mean)?;
            let (sum_g, sum_gxmu) = (per_channel(sums.0), per_channel(sums.1));
            // dx = g·scale + (x − mean)·x_scale + x_shift, scale = w·rstd.
            let (x_scale, x_shift) = if training {
                let n = count as f64;
                (
                    scale
                        .mul(&rstd)?
                        .mul(&rstd)?
                        .mul(&sum_gxmu)?
                        .mul_scalar(-1.0 / n)?,
                    scale.mul(&sum_g)?.mul_scalar(-1.0 / n)?,
                )
            } else {
                let zero = Tensor::zeros(&[c], DType::F32, xd.device())?;
                (zero.clone(), zero)
            };
            let dx = channel_affine(
                &xd,
                Some(&g),
                [&mean, &x_scale, &x_shift],
                Some(&scale),
                x_grad,
            )?
            .ok_or_else(|| {
                Error::invalid("batch_norm", "the backend has no per-channel affine kernel")
            })?;
            let mut grads = vec![Some(Tensor::from_storage(dx, xd.dims(), xd.device()))];
            if let Some(dtype) = w_grad {
                grads.push(Some(sum_gxmu.mul(&rstd)?.to_dtype(dtype)?));
            }
            if let Some(dtype) = b_grad {
                grads.push(Some(sum_g.to_dtype(dtype)?));
            }
            Ok(grads)
        },
    )))
}

/// Group norm as one autograd node on the per-channel kernels that batch norm
/// uses, or `None` where the backend has none (then it is composed). The
/// statistics are the per-"channel" moments of `x` seen as `[1, N·G, C/G·L]`
/// (one channel per group of every sample); the normalisation is the
/// per-channel affine map of `x` seen as `[1, N·C, L]`, with each group's
/// mean and `w·rstd` spread over its channels; backward takes the sums
/// `Σ g` and `Σ g·(x − mean)` per `(sample, channel)` in one pass, combines
/// them per group (small tensors), and writes
/// `dx = g·w·rstd + (x − mean)·(−rstd³·a₂) − rstd·a₁` in one more, where
/// `a₁`, `a₂` are the group means of `g·w` and `g·w·(x − mean)`.
fn fused_group_norm(
    x: &Tensor,
    groups: usize,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<Option<Tensor>> {
    if x.dtype() == DType::F64 || x.numel() == 0 {
        return Ok(None);
    }
    let (n, c) = (x.dims()[0], x.dims()[1]);
    let (l, cg) = (x.numel() / (n * c), c / groups);
    let per_group = cg * l;
    let device = x.device().clone();
    let backend = device.backend();
    let xd = x.detach().contiguous()?;
    let grouped = xd.reshape(&[1, n * groups, per_group])?;
    let moments = {
        let gi = grouped.materialised_input()?;
        backend.channel_moments(gi.view())?
    };
    let Some((mean, var)) = moments else {
        return Ok(None);
    };
    // The per-(sample, channel) terms are constants of the node below.
    let constants = crate::no_grad();
    let per_group_term = |s| Tensor::from_storage(s, &[n, groups, 1], &device);
    let (mean, var) = (per_group_term(mean), per_group_term(var));
    let rstd = var.add_scalar(eps)?.rsqrt()?;
    // [N, G, 1] → [N·C]: a group's value for each of its channels.
    let spread = move |t: &Tensor| -> Result<Tensor> {
        t.broadcast_to(&[n, groups, cg])?
            .contiguous()?
            .reshape(&[n * c])
    };
    // [C] → [N·C]: a channel's value for every sample.
    let per_sample = move |t: &Tensor| -> Result<Tensor> {
        t.to_dtype(DType::F32)?
            .reshape(&[1, c])?
            .broadcast_to(&[n, c])?
            .contiguous()?
            .reshape(&[n * c])
    };
    let w = weight.map(|w| per_sample(&w.detach())).transpose()?;
    let (mean_nc, rstd_nc) = (spread(&mean)?, spread(&rstd)?);
    let scale = match &w {
        Some(w) => rstd_nc.mul(w)?,
        None => rstd_nc.clone(),
    };
    let shift = match bias {
        Some(b) => per_sample(&b.detach())?,
        None => Tensor::zeros(&[n * c], DType::F32, &device)?,
    };
    let xc = xd.reshape(&[1, n * c, l])?;
    let Some(y) = channel_affine(&xc, None, [&mean_nc, &scale, &shift], None, x.dtype())? else {
        return Ok(None);
    };
    let y = Tensor::from_storage(y, x.dims(), &device);
    drop(constants);
    let (recorded, grad_dtypes) = recorded_inputs(x, weight, bias);
    let dims = x.dims().to_vec();
    Ok(Some(y.view_op_multi(
        y.layout().clone(),
        "group_norm",
        &recorded,
        move |grad| {
            let (x_grad, w_grad, b_grad) = grad_dtypes;
            let g = grad
                .to_dtype(xc.dtype())?
                .contiguous()?
                .reshape(&[1, n * c, l])?;
            let sums = channel_grad_sums("group_norm", &xc, &g, &mean_nc)?;
            let on = xc.device();
            let (sum_g, sum_gxmu) = (
                Tensor::from_storage(sums.0, &[n * c], on),
                Tensor::from_storage(sums.1, &[n * c], on),
            );
            // The group means of g·w and g·w·(x − mean), [N, G, 1].
            let group_mean = |t: Tensor| -> Result<Tensor> {
                let t = match &w {
                    Some(w) => t.mul(w)?,
                    None => t,
                };
                t.reshape(&[n, groups, cg])?
                    .sum_dim(2, true)?
                    .mul_scalar(1.0 / per_group as f64)
            };
            let (a1, a2) = (group_mean(sum_g.clone())?, group_mean(sum_gxmu.clone())?);
            let x_scale = spread(&rstd.mul(&rstd)?.mul(&rstd)?.mul(&a2)?.neg()?)?;
            let x_shift = spread(&rstd.mul(&a1)?.neg()?)?;
            let dx = channel_affine(
                &xc,
                Some(&g),
                [&mean_nc, &x_scale, &x_shift],
                Some(&scale),
                x_grad,
            )?
            .ok_or_else(|| {
                Error::invalid("group_norm", "the backend has no per-channel affine kernel")
            })?;
            let mut grads = vec![Some(Tensor::from_storage(dx, &dims, on))];
            if let Some(dtype) = w_grad {
                let dw = sum_gxmu
                    .mul(&rstd_nc)?
                    .reshape(&[n, c])?
                    .sum_dim(0, false)?;
                grads.push(Some(dw.to_dtype(dtype)?));
            }
            if let Some(dtype) = b_grad {
                grads.push(Some(
                    sum_g.reshape(&[n, c])?.sum_dim(0, false)?.to_dtype(dtype)?,
                ));
            }
            Ok(grads)
        },
    )))
}

/// The dtypes of the gradients of `x`, the weight and the bias.
type GradDTypes = (DType, Option<DType>, Option<DType>);

/// The inputs a fused normalisation records (`x`, then the weight and bias
/// it was given) and the dtypes their gradients take.
fn recorded_inputs<'a>(
    x: &'a Tensor,
    weight: Option<&'a Tensor>,
    bias: Option<&'a Tensor>,
) -> (Vec<&'a Tensor>, GradDTypes) {
    let mut recorded = vec![x];
    recorded.extend(weight);
    recorded.extend(bias);
    let grad_dtypes = (
        x.grad_dtype(),
        weight.map(|w| w.grad_dtype()),
        bias.map(|b| b.grad_dtype()),
    );
    (recorded, grad_dtypes)
}

/// The backend's [`crate::backend::Backend::channel_grad_sums`] of the
/// contiguous `x` and `grad` with the f32 `mean`: `(Σ grad, Σ grad·(x − mean))`
/// per channel — an error for `op` if the backend, which computed the
/// statistics, has no kernel for their gradient.
fn channel_grad_sums(
    op: &'static str,
    x: &Tensor,
    grad: &Tensor,
    mean: &Tensor,
) -> Result<(crate::backend::Storage, crate::backend::Storage)> {
    let (xi, gi, mi) = (
        x.materialised_input()?,
        grad.materialised_input()?,
        mean.materialised_input()?,
    );
    x.device()
        .backend()
        .channel_grad_sums(xi.view(), gi.view(), mi.view())?
        .ok_or_else(|| {
            Error::invalid(
                op,
                "the backend computed the statistics but has no kernel for their gradient",
            )
        })
}

/// The backend's [`crate::backend::Backend::channel_affine`] of the
/// contiguous `x` (and `grad`) with the f32 `[C]` terms `[mean, scale, shift]`.
fn channel_affine(
    x: &Tensor,
    grad: Option<&Tensor>,
    [mean, scale, shift]: [&Tensor; 3],
    grad_scale: Option<&Tensor>,
    out: DType,
) -> Result<Option<crate::backend::Storage>> {
    let (xi, mi, si, ti) = (
        x.materialised_input()?,
        mean.materialised_input()?,
        scale.materialised_input()?,
        shift.materialised_input()?,
    );
    let gi = grad.map(Tensor::materialised_input).transpose()?;
    let gsi = grad_scale.map(Tensor::materialised_input).transpose()?;
    let terms = crate::backend::ChannelAffine {
        mean: mi.view(),
        scale: si.view(),
        shift: ti.view(),
        grad_scale: gsi.as_ref().map(|v| v.view()),
    };
    x.device()
        .backend()
        .channel_affine(xi.view(), gi.as_ref().map(|v| v.view()), &terms, out)
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
        if let Some(y) = fused_group_norm(x, groups, w, b, eps)? {
            return Ok(y);
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
