//! Batched products and attention: [`bmm`], [`baddbmm`] and
//! [`scaled_dot_product_attention`].

use super::{matmul, matmul_to, require_float, same_device, softmax};
use crate::dispatch::dispatch;
use crate::{Error, Result, Tensor};
use amp_dtype::DType;

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
