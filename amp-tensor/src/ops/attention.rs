//! Batched products and attention: [`bmm`], [`baddbmm`] and
//! [`scaled_dot_product_attention`].

use super::{matmul, matmul_to, require_float, same_device, softmax};
use crate::backend::AttentionProblem;
use crate::dispatch::dispatch;
use crate::{Error, Layout, Result, Tensor};
use amp_dtype::DType;
use std::cell::Cell;

/// Batched matrix product of `[B, n, m]` and `[B, m, p]` (`torch.bmm`): no
/// broadcasting, both operands 3-D, the same floating dtype.
pub fn bmm(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    dispatch("bmm", &[a, b], |inputs| {
        let (a, b) = (&inputs[0], &inputs[1]);
        if a.rank() != 3
            || b.rank() != 3
            || a.dims()[0] != b.dims()[0]
            || a.dims()[2] != b.dims()[1]
        {
            return Err(Error::invalid(
                "bmm",
                format!(
                    "expects [B, n, m] and [B, m, p] with the same B, got {:?} ({}) and {:?} ({})",
                    a.dims(),
                    a.dtype(),
                    b.dims(),
                    b.dtype()
                ),
            ));
        }
        matmul(a, b)
    })
}

/// `beta · input + alpha · bmm(b1, b2)` (`torch.baddbmm`); `input`
/// broadcasts to the product's shape. With `beta = 0` the input's values are
/// ignored (NaN and inf included), as in PyTorch.
pub fn baddbmm(input: &Tensor, b1: &Tensor, b2: &Tensor, beta: f64, alpha: f64) -> Result<Tensor> {
    dispatch("baddbmm", &[input, b1, b2], |inputs| {
        let (input, b1, b2) = (&inputs[0], &inputs[1], &inputs[2]);
        if input.dtype() != b1.dtype() {
            return Err(Error::DTypeMismatch {
                op: "baddbmm",
                lhs: input.dtype(),
                rhs: b1.dtype(),
            });
        }
        let product = bmm(b1, b2)?;
        let scaled = if alpha == 1.0 {
            product
        } else {
            product.mul_scalar(alpha)?
        };
        if beta == 0.0 {
            return Ok(scaled);
        }
        let shifted = if beta == 1.0 {
            input.clone()
        } else {
            input.mul_scalar(beta)?
        };
        scaled.add(&shifted)
    })
}

/// Attention (`torch.nn.functional.scaled_dot_product_attention`):
/// `softmax(q kᵀ · scale + mask) v` for `q` `[..., L, E]`, `k` `[..., S, E]`,
/// `v` `[..., S, Ev]`, giving `[..., L, Ev]` in `q`'s dtype.
///
/// - `scale` defaults to `1/√E`.
/// - `attn_mask` broadcasts to `[..., L, S]`: a bool mask says which keys
///   each query may attend to (`true` = attend); a float mask is added to
///   the scores. `is_causal` masks the keys after each query (the top-left
///   aligned lower triangle, as PyTorch); it cannot be combined with a mask.
/// - Rows whose every key is masked give 0 (PyTorch ≥ 2.5's safe softmax),
///   not NaN.
/// - `dropout_p > 0` drops attention weights with a mask drawn from the
///   process-wide seed ([`crate::random::next_seed`]), scaling the rest by
///   `1/(1-p)`.
///
/// The scores are accumulated and kept in f32 whatever the inputs' dtype,
/// the softmax runs in f32, and its result is rounded to the inputs' dtype
/// for the product with `v` (accumulated in f32) — the numerics of PyTorch's
/// fused CPU kernel. Under autocast the op runs in the region's dtype.
///
/// Without dropout, the op runs on the device's fused kernel when it has one
/// ([`crate::backend::Backend::attention`]: the CPU backend's flash-attention
/// kernel never stores the `[.., L, S]` scores) and records one autograd node
/// whose backward is the fused backward; the result equals the composition
/// above up to rounding (the fused kernel rounds the weights before they are
/// normalised, as PyTorch's does). Otherwise — with dropout, a float mask
/// that requires a gradient, batch dimensions that broadcast between `q`,
/// `k` and `v`, a device without the kernel, or on a thread that called
/// [`set_fused_attention`]`(false)` — it is computed as composed above.
pub fn scaled_dot_product_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    attn_mask: Option<&Tensor>,
    dropout_p: f64,
    is_causal: bool,
    scale: Option<f64>,
) -> Result<Tensor> {
    let mut inputs = vec![q, k, v];
    inputs.extend(attn_mask);
    dispatch("scaled_dot_product_attention", &inputs, |inputs| {
        let (q, k, v) = (&inputs[0], &inputs[1], &inputs[2]);
        let mask = inputs.get(3);
        check_attention(q, k, v, mask, dropout_p, is_causal)?;
        let (l, e) = (q.dims()[q.rank() - 2], q.dims()[q.rank() - 1]);
        let s = k.dims()[k.rank() - 2];
        let scale = scale.unwrap_or(1.0 / (e as f64).sqrt());
        if dropout_p == 0.0 && fused_attention_enabled() {
            if let Some(y) = fused_attention(q, k, v, mask, is_causal, scale)? {
                return Ok(y);
            }
        }
        // Scores in f32 (f64 for f64 inputs), straight from the accumulation.
        let acc = if q.dtype() == DType::F64 {
            DType::F64
        } else {
            DType::F32
        };
        let scores = matmul_to(q, &k.transpose(-1, -2)?, acc)?.mul_scalar(scale)?;
        let bias = match (mask, is_causal) {
            (Some(m), _) => Some(additive_mask(m, acc)?),
            (None, true) => Some(additive_mask(&causal_mask(l, s, q.device())?, acc)?),
            (None, false) => None,
        };
        // Safe softmax: a row with every key masked attends to nothing. Its
        // bias is made 0 (finite scores, finite gradients), its weights 0.
        let (scores, empty) = match &bias {
            Some(b) => {
                let neg_inf = Tensor::full(&[], f64::NEG_INFINITY, acc, q.device())?;
                let empty = b.max_dim(-1, true)?.0.eq(&neg_inf)?;
                (
                    scores.add(&super::masked_fill(b, &empty, 0.0)?)?,
                    Some(empty),
                )
            }
            None => (scores, None),
        };
        let mut weights = softmax(&scores, -1)?;
        if let Some(empty) = &empty {
            weights = super::masked_fill(&weights, empty, 0.0)?;
        }
        let mut weights = weights.to_dtype(q.dtype())?;
        if dropout_p > 0.0 {
            let seed = crate::random::next_seed();
            weights = super::dropout(&weights, dropout_p, true, seed)?;
        }
        matmul(&weights, v)
    })
}

/// Errors unless `q`, `k`, `v` (and the mask) can be attended with.
fn check_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    dropout_p: f64,
    is_causal: bool,
) -> Result<()> {
    const OP: &str = "scaled_dot_product_attention";
    same_device(OP, &[q, k, v])?;
    require_float(OP, q)?;
    for t in [k, v] {
        if t.dtype() != q.dtype() {
            return Err(Error::DTypeMismatch {
                op: OP,
                lhs: q.dtype(),
                rhs: t.dtype(),
            });
        }
    }
    let shapes = || format!("q {:?}, k {:?}, v {:?}", q.dims(), k.dims(), v.dims());
    if q.rank() < 2 || k.rank() < 2 || v.rank() < 2 {
        return Err(Error::invalid(
            OP,
            format!("q, k and v need at least 2 dimensions: {}", shapes()),
        ));
    }
    let last = |t: &Tensor, i: usize| t.dims()[t.rank() - i];
    if last(q, 1) != last(k, 1) || last(k, 2) != last(v, 2) {
        return Err(Error::invalid(
            OP,
            format!(
                "q and k must share the last dimension, k and v the sequence length: {}",
                shapes()
            ),
        ));
    }
    if let Some(m) = mask {
        same_device(OP, &[q, m])?;
        if is_causal {
            return Err(Error::invalid(
                OP,
                "give either attn_mask or is_causal, not both",
            ));
        }
        if m.dtype() != DType::Bool && !m.dtype().is_float() {
            return Err(Error::UnsupportedDType {
                op: OP,
                dtype: m.dtype(),
                reason: "attn_mask must be bool (true = attend) or floating (added to the scores)"
                    .into(),
            });
        }
    }
    if !(0.0..1.0).contains(&dropout_p) {
        return Err(Error::invalid(
            OP,
            format!("dropout_p must be in [0, 1), got {dropout_p}"),
        ));
    }
    Ok(())
}

/// The causal mask `[L, S]`: query `i` attends to keys `0..=i`.
fn causal_mask(l: usize, s: usize, device: &crate::Device) -> Result<Tensor> {
    let allowed: Vec<bool> = (0..l).flat_map(|i| (0..s).map(move |j| j <= i)).collect();
    Tensor::from_vec(allowed, &[l, s], device)
}

/// A mask in `dtype` to add to the scores: 0 / -inf for a bool mask, the
/// values of a float mask.
fn additive_mask(mask: &Tensor, dtype: DType) -> Result<Tensor> {
    if mask.dtype() == DType::Bool {
        let zero = Tensor::zeros(&[], dtype, mask.device())?;
        let neg_inf = Tensor::full(&[], f64::NEG_INFINITY, dtype, mask.device())?;
        super::where_cond(mask, &zero, &neg_inf)
    } else {
        mask.to_dtype(dtype)
    }
}

const OP: &str = "scaled_dot_product_attention";

thread_local! {
    /// Whether [`scaled_dot_product_attention`] may use a fused kernel on this thread.
    static FUSED: Cell<bool> = const { Cell::new(true) };
}

/// Allows (`true`, the default) or forbids (`false`)
/// [`scaled_dot_product_attention`] to run on the device's fused kernel on
/// the calling thread, and returns the previous setting. Forbidden, the op
/// is always the composition (scores, softmax, product) — the switch that
/// tests and benchmarks use to compare the two paths on one device. The
/// choice is made when the forward pass runs; its backward follows it.
pub fn set_fused_attention(enabled: bool) -> bool {
    FUSED.with(|f| f.replace(enabled))
}

/// Whether [`scaled_dot_product_attention`] may use a fused kernel on this
/// thread (see [`set_fused_attention`]).
pub fn fused_attention_enabled() -> bool {
    FUSED.with(|f| f.get())
}

/// The attention on the device's fused kernel ([`crate::backend::Backend::attention`])
/// with one autograd node, or `None` where the composed path must run: batch
/// dimensions that differ between `q`, `k` and `v` (or a mask with more), a
/// float mask that needs a gradient, or a backend without the kernel.
fn fused_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    causal: bool,
    scale: f64,
) -> Result<Option<Tensor>> {
    let (qr, kr, vr) = (q.rank(), k.rank(), v.rank());
    let batch = &q.dims()[..qr - 2];
    if &k.dims()[..kr - 2] != batch || &v.dims()[..vr - 2] != batch {
        return Ok(None);
    }
    let (l, e) = (q.dims()[qr - 2], q.dims()[qr - 1]);
    let (s, ev) = (k.dims()[kr - 2], v.dims()[vr - 1]);
    let n: usize = batch.iter().product();
    let mut scores_shape = batch.to_vec();
    scores_shape.extend([l, s]);
    let bias = match mask {
        Some(m) if m.requires_grad() => return Ok(None),
        Some(m) => {
            // A mask that widens the batch (or does not broadcast) is left to
            // the composition, which broadcasts (or reports) it.
            let fits = m.rank() <= scores_shape.len()
                && crate::layout::broadcast_shapes(OP, m.dims(), &scores_shape)
                    .is_ok_and(|b| b == scores_shape);
            if !fits {
                return Ok(None);
            }
            Some(flat_bias(m, &scores_shape, n)?)
        }
        None => None,
    };
    // [N, L, E] views: the batch dimensions flattened (a copy only where the
    // layout cannot be viewed so).
    let q3 = q.detach().reshape(&[n, l, e])?;
    let k3 = k.detach().reshape(&[n, s, e])?;
    let v3 = v.detach().reshape(&[n, s, ev])?;
    let device = q.device().clone();
    let forward = {
        let (qs, ks, vs) = (q3.storage()?, k3.storage()?, v3.storage()?);
        let bs = bias.as_ref().map(|(t, _)| t.storage()).transpose()?;
        let problem = AttentionProblem {
            q: (&qs, q3.layout()),
            k: (&ks, k3.layout()),
            v: (&vs, v3.layout()),
            bias: bias
                .as_ref()
                .zip(bs.as_ref())
                .map(|((_, layout), s)| (&**s, layout)),
            causal,
            scale,
        };
        device.backend().attention(&problem)?
    };
    let Some((out, lse)) = forward else {
        return Ok(None);
    };
    let mut out_shape = batch.to_vec();
    out_shape.extend([l, ev]);
    let y = Tensor::from_storage(out, &out_shape, &device);
    let lse = Tensor::from_storage(lse, &[n, l], &device);
    let saved = y.clone();
    let (q_dims, k_dims, v_dims) = (q.shape(), k.shape(), v.shape());
    let dtype = q.dtype();
    Ok(Some(y.view_op_multi(
        y.layout().clone(),
        OP,
        &[q, k, v],
        move |g| {
            let g3 = g.to_dtype(dtype)?.reshape(&[n, l, ev])?;
            let out3 = Layout::contiguous(&[n, l, ev]);
            let grads = {
                let (qs, ks, vs) = (q3.storage()?, k3.storage()?, v3.storage()?);
                let bs = bias.as_ref().map(|(t, _)| t.storage()).transpose()?;
                let (ys, gs, ls) = (saved.storage()?, g3.storage()?, lse.storage()?);
                let problem = AttentionProblem {
                    q: (&qs, q3.layout()),
                    k: (&ks, k3.layout()),
                    v: (&vs, v3.layout()),
                    bias: bias
                        .as_ref()
                        .zip(bs.as_ref())
                        .map(|((_, layout), s)| (&**s, layout)),
                    causal,
                    scale,
                };
                device.backend().attention_backward(
                    &problem,
                    (&ys, &out3),
                    (&gs, g3.layout()),
                    (&ls, lse.layout()),
                )?
            };
            let Some((dq, dk, dv)) = grads else {
                return Err(Error::invalid(
                    OP,
                    format!(
                        "backend {:?} ran the fused forward pass but has no fused backward",
                        device.backend().name()
                    ),
                ));
            };
            Ok(vec![
                Some(Tensor::from_storage(dq, &q_dims, &device)),
                Some(Tensor::from_storage(dk, &k_dims, &device)),
                Some(Tensor::from_storage(dv, &v_dims, &device)),
            ])
        },
    )))
}

/// The mask as the f32 additive bias of the fused kernel: broadcast to
/// `scores_shape` (`[batch.., L, S]`) and viewed as `[N, L, S]` — without a
/// copy when the broadcast batch dimensions merge into one stride (a mask
/// shared by every batch and head has stride 0), else copied.
fn flat_bias(mask: &Tensor, scores_shape: &[usize], n: usize) -> Result<(Tensor, Layout)> {
    let bias = additive_mask(&mask.detach(), DType::F32)?.broadcast_to(scores_shape)?;
    let rank = scores_shape.len();
    let (l, s) = (scores_shape[rank - 2], scores_shape[rank - 1]);
    let layout = bias.layout();
    let strides = layout.strides();
    // The batch dimensions of size > 1, outermost first, with their strides.
    let dims: Vec<(usize, usize)> = (0..rank - 2)
        .filter(|&d| scores_shape[d] > 1)
        .map(|d| (scores_shape[d], strides[d]))
        .collect();
    let merged = dims.windows(2).all(|w| w[0].1 == w[1].1 * w[1].0);
    if merged {
        let stride = dims.last().map_or(0, |d| d.1);
        let flat = Layout::new(
            vec![n, l, s],
            vec![stride, strides[rank - 2], strides[rank - 1]],
            layout.offset(),
        );
        return Ok((bias, flat));
    }
    let bias = bias.contiguous()?;
    Ok((bias, Layout::contiguous(&[n, l, s])))
}
