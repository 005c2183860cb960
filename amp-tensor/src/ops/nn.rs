//! Neural-network ops: softmax, log-softmax, layer norm, losses, gather and
//! index-select (embedding lookup), dropout.

use super::{require_float, require_index, same_device};
use crate::dispatch::dispatch;
use crate::{random, Error, Result, Tensor};
use amp_dtype::DType;

/// How a loss reduces over the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reduction {
    /// Mean over the (non-ignored) elements.
    #[default]
    Mean,
    /// Sum.
    Sum,
    /// One loss per element.
    None,
}

/// Options of [`cross_entropy_with`] (PyTorch's defaults via `Default`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CrossEntropyOptions {
    /// Reduction over the batch.
    pub reduction: Reduction,
    /// Targets equal to this are ignored (PyTorch's default is -100).
    pub ignore_index: i64,
    /// Label smoothing in `[0, 1]`.
    pub label_smoothing: f64,
}

impl Default for CrossEntropyOptions {
    fn default() -> Self {
        CrossEntropyOptions {
            reduction: Reduction::Mean,
            ignore_index: -100,
            label_smoothing: 0.0,
        }
    }
}

/// Moves dimension `d` last (a view) and returns the inverse permutation.
fn move_dim_last(x: &Tensor, d: usize) -> Result<(Tensor, Option<Vec<usize>>)> {
    let r = x.rank();
    if d + 1 == r {
        return Ok((x.clone(), None));
    }
    let mut perm: Vec<usize> = (0..r).filter(|&i| i != d).collect();
    perm.push(d);
    let mut inverse = vec![0; r];
    for (i, &p) in perm.iter().enumerate() {
        inverse[p] = i;
    }
    Ok((x.permute(&perm)?, Some(inverse)))
}

fn softmax_impl(name: &'static str, x: &Tensor, dim: isize, log: bool) -> Result<Tensor> {
    dispatch(name, &[x], |inputs| {
        let x = &inputs[0];
        require_float(name, x)?;
        if x.rank() == 0 {
            return Err(Error::invalid(name, "expects at least one dimension"));
        }
        let d = x.layout().dim(name, dim)?;
        let (moved, inverse) = move_dim_last(&x.detach(), d)?;
        let storage = moved.with_view(|v| x.device().backend().softmax(v, log, x.dtype()))??;
        let y_moved = Tensor::from_storage(storage, moved.dims(), x.device());
        let y = match &inverse {
            Some(inv) => y_moved.permute(inv)?,
            None => y_moved,
        };
        let y_saved = y.clone();
        Ok(y.view_op_multi(y.layout().clone(), name, &[x], move |g| {
            let d = d as isize;
            let gx = if log {
                // d/dx log_softmax: g - softmax · Σ g
                g.sub(&y_saved.exp()?.mul(&g.sum_dim(d, true)?)?)?
            } else {
                // d/dx softmax: y · (g - Σ g·y)
                y_saved.mul(&g.sub(&g.mul(&y_saved)?.sum_dim(d, true)?)?)?
            };
            Ok(vec![Some(gx)])
        }))
    })
}

/// Softmax over `dim`, accumulating in f32 or better; output in the input's dtype.
pub fn softmax(x: &Tensor, dim: isize) -> Result<Tensor> {
    softmax_impl("softmax", x, dim, false)
}

/// Log-softmax over `dim`, accumulating in f32 or better; output in the input's dtype.
pub fn log_softmax(x: &Tensor, dim: isize) -> Result<Tensor> {
    softmax_impl("log_softmax", x, dim, true)
}

/// Layer normalisation over the last dimension (`normalized_shape = [n]`)
/// with optional affine `weight` and `bias` of length `n`, of `x`'s dtype —
/// or f32 for a bf16/f16 `x` (PyTorch's mixed type: computed in f32, the
/// result in `x`'s dtype), which is what a CPU autocast region passes it.
pub fn layer_norm(
    x: &Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f64,
) -> Result<Tensor> {
    let mut inputs = vec![x];
    inputs.extend(weight);
    inputs.extend(bias);
    let (has_w, has_b) = (weight.is_some(), bias.is_some());
    dispatch("layer_norm", &inputs, |inputs| {
        let x = &inputs[0];
        let w = has_w.then(|| inputs[1].clone());
        let b = has_b.then(|| inputs[if has_w { 2 } else { 1 }].clone());
        require_float("layer_norm", x)?;
        same_device("layer_norm", &inputs.iter().collect::<Vec<_>>())?;
        if x.rank() == 0 {
            return Err(Error::invalid(
                "layer_norm",
                "expects at least one dimension",
            ));
        }
        let n = x.dims()[x.rank() - 1];
        for p in w.iter().chain(b.iter()) {
            if p.dims() != [n] {
                return Err(Error::ShapeMismatch {
                    op: "layer_norm",
                    lhs: x.shape(),
                    rhs: p.shape(),
                });
            }
            let mixed = matches!(x.dtype(), DType::F16 | DType::BF16) && p.dtype() == DType::F32;
            if p.dtype() != x.dtype() && !mixed {
                return Err(Error::DTypeMismatch {
                    op: "layer_norm",
                    lhs: x.dtype(),
                    rhs: p.dtype(),
                });
            }
        }
        if w.iter().chain(b.iter()).any(|p| p.dtype() != x.dtype()) {
            // PyTorch's mixed-type layer norm (bf16/f16 input, f32 weight and
            // bias, as an autocast region on the CPU gives it): computed in
            // f32 with the f32 parameters, the result rounded to the input's
            // dtype. The casts carry the gradients.
            let y = layer_norm(&x.to_dtype(DType::F32)?, w.as_ref(), b.as_ref(), eps)?;
            return y.to_dtype(x.dtype());
        }
        let (y, mean, rstd) = {
            let xs = x.storage()?;
            let ws = w.as_ref().map(|t| t.storage()).transpose()?;
            let bs = b.as_ref().map(|t| t.storage()).transpose()?;
            x.device().backend().layer_norm(
                (&xs, x.layout()),
                w.as_ref().zip(ws.as_ref()).map(|(t, s)| (&**s, t.layout())),
                b.as_ref().zip(bs.as_ref()).map(|(t, s)| (&**s, t.layout())),
                eps,
                x.dtype(),
            )?
        };
        let mut stat_shape = x.shape();
        stat_shape[x.rank() - 1] = 1;
        let mean = Tensor::from_storage(mean, &stat_shape, x.device());
        let rstd = Tensor::from_storage(rstd, &stat_shape, x.device());
        let y = Tensor::from_storage(y, x.dims(), x.device());
        let mut recorded: Vec<&Tensor> = vec![x];
        recorded.extend(w.iter());
        recorded.extend(b.iter());
        let (x_saved, w_saved) = (x.detach(), w.as_ref().map(|t| t.detach()));
        let dtype = x.dtype();
        Ok(
            y.view_op_multi(y.layout().clone(), "layer_norm", &recorded, move |g| {
                // One fused pass where the backend has one.
                let fused = {
                    let xs = x_saved.storage()?;
                    let ws = w_saved.as_ref().map(|t| t.storage()).transpose()?;
                    let (ms, rs, gs) = (mean.storage()?, rstd.storage()?, g.storage()?);
                    g.device().backend().layer_norm_backward(
                        (&xs, x_saved.layout()),
                        w_saved
                            .as_ref()
                            .zip(ws.as_ref())
                            .map(|(t, s)| (&**s, t.layout())),
                        (&ms, mean.layout()),
                        (&rs, rstd.layout()),
                        (&gs, g.layout()),
                        dtype,
                    )?
                };
                if let Some((gx, gw, gb)) = fused {
                    let n = [x_saved.dims()[x_saved.rank() - 1]];
                    let mut grads =
                        vec![Some(Tensor::from_storage(gx, x_saved.dims(), g.device()))];
                    if has_w {
                        grads.push(Some(Tensor::from_storage(gw, &n, g.device())));
                    }
                    if has_b {
                        grads.push(Some(Tensor::from_storage(gb, &n, g.device())));
                    }
                    return Ok(grads);
                }
                // In f32 (or f64): x̂ = (x - mean)·rstd, gx̂ = g·w,
                // gx = rstd·(gx̂ - mean(gx̂) - x̂·mean(gx̂·x̂)), gw = Σ g·x̂, gb = Σ g.
                let acc = if dtype == DType::F64 {
                    DType::F64
                } else {
                    DType::F32
                };
                let g32 = g.to_dtype(acc)?;
                let xhat = x_saved.to_dtype(acc)?.sub(&mean)?.mul(&rstd)?;
                let gxhat = match &w_saved {
                    Some(w) => g32.mul(&w.to_dtype(acc)?)?,
                    None => g32.clone(),
                };
                let m1 = gxhat.mean_dim(-1, true)?;
                let m2 = gxhat.mul(&xhat)?.mean_dim(-1, true)?;
                let gx = gxhat
                    .sub(&m1)?
                    .sub(&xhat.mul(&m2)?)?
                    .mul(&rstd)?
                    .to_dtype(dtype)?;
                let rows: Vec<usize> = (0..g.rank() - 1).collect();
                let mut grads = vec![Some(gx)];
                if has_w {
                    grads.push(Some(
                        g32.mul(&xhat)?.sum_dims(&rows, false)?.to_dtype(dtype)?,
                    ));
                }
                if has_b {
                    grads.push(Some(g32.sum_dims(&rows, false)?.to_dtype(dtype)?));
                }
                Ok(grads)
            }),
        )
    })
}

/// Checks that every index lies in `[0, size)` (or equals `allowed`, when given).
fn check_indices(
    op: &'static str,
    index: &Tensor,
    size: usize,
    shape: &[usize],
    allowed: Option<i64>,
) -> Result<()> {
    for &i in &index.to_vec::<i64>()? {
        if Some(i) == allowed {
            continue;
        }
        if i < 0 || i as usize >= size {
            return Err(Error::IndexOutOfRange {
                op,
                index: i,
                size,
                shape: shape.to_vec(),
            });
        }
    }
    Ok(())
}

/// Zeros of `shape` with `src` scatter-added along `dim` at `index` (same shape as `src`).
pub(crate) fn scatter_add_into(
    shape: &[usize],
    dim: usize,
    index: &Tensor,
    src: &Tensor,
) -> Result<Tensor> {
    let storage = {
        let (ii, is) = (index.materialised_input()?, src.materialised_input()?);
        src.device()
            .backend()
            .scatter_add(shape, dim, ii.view(), is.view(), src.dtype())?
    };
    let index_saved = index.clone();
    Ok(Tensor::from_op(
        storage,
        shape,
        src.device(),
        "scatter_add",
        &[src],
        move |g| Ok(vec![Some(g.gather(dim as isize, &index_saved)?)]),
    ))
}

impl Tensor {
    /// `out[..., j, ...] = self[..., index[..., j, ...], ...]` along `dim` (`torch.gather`);
    /// `index` (i64) has this tensor's rank and the output has its shape.
    pub fn gather(&self, dim: isize, index: &Tensor) -> Result<Tensor> {
        dispatch("gather", &[self, index], |inputs| {
            let (x, index) = (&inputs[0], &inputs[1]);
            require_index("gather", index)?;
            same_device("gather", &[x, index])?;
            let d = x.layout().dim("gather", dim)?;
            let ok = index.rank() == x.rank()
                && index
                    .dims()
                    .iter()
                    .zip(x.dims())
                    .enumerate()
                    .all(|(i, (a, b))| i == d || a <= b);
            if !ok {
                return Err(Error::ShapeMismatch {
                    op: "gather",
                    lhs: x.shape(),
                    rhs: index.shape(),
                });
            }
            check_indices("gather", index, x.dims()[d], x.dims(), None)?;
            let storage = {
                let (ix, ii) = (x.materialised_input()?, index.materialised_input()?);
                x.device()
                    .backend()
                    .gather(ix.view(), d, ii.view(), x.dtype())?
            };
            let (index_saved, source) = (index.clone(), x.shape());
            Ok(Tensor::from_op(
                storage,
                index.dims(),
                x.device(),
                "gather",
                &[x],
                move |g| Ok(vec![Some(scatter_add_into(&source, d, &index_saved, g)?)]),
            ))
        })
    }

    /// Picks entries along `dim` by a 1-D i64 `index` (`torch.index_select`).
    pub fn index_select(&self, dim: isize, index: &Tensor) -> Result<Tensor> {
        dispatch("index_select", &[self, index], |inputs| {
            let (x, index) = (&inputs[0], &inputs[1]);
            require_index("index_select", index)?;
            same_device("index_select", &[x, index])?;
            if index.rank() != 1 {
                return Err(Error::invalid(
                    "index_select",
                    format!("index must be 1-D, got shape {:?}", index.dims()),
                ));
            }
            let d = x.layout().dim("index_select", dim)?;
            check_indices("index_select", index, x.dims()[d], x.dims(), None)?;
            let storage = {
                let (ix, ii) = (x.materialised_input()?, index.materialised_input()?);
                x.device()
                    .backend()
                    .index_select(ix.view(), d, ii.view(), x.dtype())?
            };
            let mut shape = x.shape();
            shape[d] = index.numel();
            let (index_saved, source) = (index.clone(), x.shape());
            Ok(Tensor::from_op(
                storage,
                &shape,
                x.device(),
                "index_select",
                &[x],
                move |g| {
                    // Broadcast the 1-D index along every other dim, then scatter-add.
                    let mut view_shape = vec![1; g.rank()];
                    view_shape[d] = index_saved.numel();
                    let idx = index_saved.reshape(&view_shape)?.broadcast_to(g.dims())?;
                    Ok(vec![Some(scatter_add_into(&source, d, &idx, g)?)])
                },
            ))
        })
    }
}

/// Embedding lookup: rows of `weight` (`[num, dim]`) for i64 `indices` of any shape.
pub fn embedding(indices: &Tensor, weight: &Tensor) -> Result<Tensor> {
    dispatch("embedding", &[indices, weight], |inputs| {
        let (idx, w) = (&inputs[0], &inputs[1]);
        if w.rank() != 2 {
            return Err(Error::invalid(
                "embedding",
                format!("weight must be 2-D, got shape {:?}", w.dims()),
            ));
        }
        let rows = w.index_select(0, &idx.flatten_all()?)?;
        let mut shape = idx.shape();
        shape.push(w.dims()[1]);
        rows.reshape(&shape)
    })
}

/// Negative log-likelihood of log-probabilities `[N, C]` (or `[C]`) at i64 class `targets`.
pub fn nll_loss(
    log_probs: &Tensor,
    targets: &Tensor,
    reduction: Reduction,
    ignore_index: i64,
) -> Result<Tensor> {
    dispatch("nll_loss", &[log_probs, targets], |inputs| {
        nll_impl(&inputs[0], &inputs[1], reduction, ignore_index, 0.0)
    })
}

fn nll_impl(
    logp: &Tensor,
    targets: &Tensor,
    reduction: Reduction,
    ignore_index: i64,
    smoothing: f64,
) -> Result<Tensor> {
    require_float("nll_loss", logp)?;
    require_index("nll_loss", targets)?;
    same_device("nll_loss", &[logp, targets])?;
    let (logp, targets) = if logp.rank() == 1 {
        (logp.unsqueeze(0)?, targets.reshape(&[1])?)
    } else {
        (logp.clone(), targets.clone())
    };
    if logp.rank() != 2 || targets.rank() != 1 || targets.dims()[0] != logp.dims()[0] {
        return Err(Error::ShapeMismatch {
            op: "nll_loss",
            lhs: logp.shape(),
            rhs: targets.shape(),
        });
    }
    if !(0.0..=1.0).contains(&smoothing) {
        return Err(Error::invalid(
            "cross_entropy",
            format!("label_smoothing must be in [0, 1], got {smoothing}"),
        ));
    }
    let c = logp.dims()[1];
    check_indices("nll_loss", &targets, c, logp.dims(), Some(ignore_index))?;
    let t = targets.to_vec::<i64>()?;
    let valid: Vec<f64> = t
        .iter()
        .map(|&i| if i == ignore_index { 0.0 } else { 1.0 })
        .collect();
    let safe: Vec<i64> = t
        .iter()
        .map(|&i| if i == ignore_index { 0 } else { i })
        .collect();
    let n = t.len();
    let device = logp.device();
    let safe = Tensor::from_vec(safe, &[n, 1], device)?;
    let mask = Tensor::from_f64_slice(&valid, &[n], logp.dtype(), device)?;
    let picked = logp.gather(1, &safe)?.reshape(&[n])?;
    let mut per_row = picked.neg()?;
    if smoothing > 0.0 {
        // (1 - ε)·nll + ε·mean_c(-log p)
        let uniform = logp.mean_dim(1, false)?.neg()?;
        per_row = per_row
            .mul_scalar(1.0 - smoothing)?
            .add(&uniform.mul_scalar(smoothing)?)?;
    }
    let per_row = per_row.mul(&mask)?;
    match reduction {
        Reduction::None => Ok(per_row),
        Reduction::Sum => per_row.sum_all(),
        Reduction::Mean => {
            let count: f64 = valid.iter().sum();
            // All targets ignored: 0/0 = NaN, as PyTorch.
            per_row.sum_all()?.mul_scalar(1.0 / count)
        }
    }
}

/// Cross-entropy of logits `[N, C]` (or `[C]`) against i64 class `targets`,
/// mean-reduced (`torch.nn.functional.cross_entropy`).
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    cross_entropy_with(logits, targets, CrossEntropyOptions::default())
}

/// Cross-entropy with reduction, `ignore_index` and label smoothing.
pub fn cross_entropy_with(
    logits: &Tensor,
    targets: &Tensor,
    options: CrossEntropyOptions,
) -> Result<Tensor> {
    dispatch("cross_entropy", &[logits, targets], |inputs| {
        let logits = &inputs[0];
        require_float("cross_entropy", logits)?;
        let logp = log_softmax(logits, -1)?;
        nll_impl(
            &logp,
            &inputs[1],
            options.reduction,
            options.ignore_index,
            options.label_smoothing,
        )
    })
}

/// Mean squared error (`torch.nn.functional.mse_loss`); shapes must match or broadcast.
pub fn mse_loss(input: &Tensor, target: &Tensor, reduction: Reduction) -> Result<Tensor> {
    dispatch("mse_loss", &[input, target], |inputs| {
        let (a, b) = (&inputs[0], &inputs[1]);
        require_float("mse_loss", a)?;
        let diff = a.sub(b)?;
        let sq = diff.mul(&diff)?;
        match reduction {
            Reduction::None => Ok(sq),
            Reduction::Sum => sq.sum_all(),
            Reduction::Mean => sq.mean_all(),
        }
    })
}

/// Inverted dropout: zeroes each element with probability `p` (seeded) and
/// scales the rest by `1/(1-p)`; the identity when `train` is false.
pub fn dropout(x: &Tensor, p: f64, train: bool, seed: u64) -> Result<Tensor> {
    dispatch("dropout", &[x], |inputs| {
        let x = &inputs[0];
        if !(0.0..=1.0).contains(&p) {
            return Err(Error::invalid(
                "dropout",
                format!("probability must be in [0, 1], got {p}"),
            ));
        }
        if !train || p == 0.0 {
            return Ok(x.clone());
        }
        require_float("dropout", x)?;
        let keep = if p == 1.0 { 0.0 } else { 1.0 / (1.0 - p) };
        let mask: Vec<f64> = (0..x.numel() as u64)
            .map(|i| {
                if random::uniform(seed, i) >= p {
                    keep
                } else {
                    0.0
                }
            })
            .collect();
        let mask = Tensor::from_f64_slice(&mask, x.dims(), x.dtype(), x.device())?;
        x.mul(&mask)
    })
}

/// GELU (`torch.nn.functional.gelu`).
pub fn gelu(x: &Tensor, approximate: super::GeluApprox) -> Result<Tensor> {
    x.gelu(approximate)
}

/// ReLU.
pub fn relu(x: &Tensor) -> Result<Tensor> {
    x.relu()
}
