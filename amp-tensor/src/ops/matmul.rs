//! Matrix products: `matmul` (batched, broadcast batch dims) and `linear`.

use super::{output_fits, require_float, same_device, unbroadcast, GeluApprox};
use crate::backend::ReduceOp;
use crate::dispatch::{dispatch, dispatch_rounding};
use crate::layout::broadcast_shapes;
use crate::ops::reduce::reduce_kernel;
use crate::{Error, Layout, Result, Tensor, UnaryOp};
use amp_dtype::DType;

/// Views `t` (shape `[batch..., r, c]` broadcast to `batch`) as `[B, r, c]`,
/// copying only when the batch dims cannot be merged.
fn as_batched(t: &Tensor, batch: &[usize]) -> Result<Tensor> {
    let (r, c) = (t.dims()[t.rank() - 2], t.dims()[t.rank() - 1]);
    let mut full = batch.to_vec();
    full.extend([r, c]);
    let b: usize = batch.iter().product();
    let t = t.broadcast_to(&full)?;
    let l = t.layout();
    let bs = &l.strides()[..batch.len()];
    let merged_stride = if batch.is_empty() || bs.iter().all(|&s| s == 0) {
        Some(0)
    } else {
        // Mergeable when each batch stride equals the next one times its size.
        let ok = (0..batch.len().saturating_sub(1)).all(|i| bs[i] == bs[i + 1] * batch[i + 1]);
        ok.then(|| bs[batch.len() - 1])
    };
    match merged_stride {
        Some(s) => {
            let strides = vec![s, l.strides()[batch.len()], l.strides()[batch.len() + 1]];
            Ok(t.view_op(
                Layout::new(vec![b, r, c], strides, l.offset()),
                "reshape",
                {
                    let full = full.clone();
                    move |g| Ok(vec![Some(g.reshape(&full)?)])
                },
            ))
        }
        None => t.contiguous()?.reshape(&[b, r, c]),
    }
}

/// Matrix product with PyTorch's rules: 1-D operands are promoted to
/// matrices and the added dimension removed afterwards; batch dimensions broadcast.
/// Both operands must have the same floating dtype (as in PyTorch); the
/// product accumulates in f32 or better and is returned in that dtype.
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    dispatch("matmul", &[a, b], |inputs| {
        matmul_impl(&inputs[0], &inputs[1])
    })
}

fn matmul_impl(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    same_device("matmul", &[a, b])?;
    if a.dtype() != b.dtype() {
        return Err(Error::DTypeMismatch {
            op: "matmul",
            lhs: a.dtype(),
            rhs: b.dtype(),
        });
    }
    require_float("matmul", a)?;
    if a.rank() == 0 || b.rank() == 0 {
        return Err(Error::invalid(
            "matmul",
            format!(
                "both arguments need at least 1 dimension, got {:?} and {:?}",
                a.dims(),
                b.dims()
            ),
        ));
    }
    let a2 = if a.rank() == 1 {
        a.unsqueeze(0)?
    } else {
        a.clone()
    };
    let b2 = if b.rank() == 1 {
        b.unsqueeze(1)?
    } else {
        b.clone()
    };
    let (m, k) = (a2.dims()[a2.rank() - 2], a2.dims()[a2.rank() - 1]);
    let (k2, n) = (b2.dims()[b2.rank() - 2], b2.dims()[b2.rank() - 1]);
    if k != k2 {
        return Err(Error::ShapeMismatch {
            op: "matmul",
            lhs: a.shape(),
            rhs: b.shape(),
        });
    }
    let batch = broadcast_shapes(
        "matmul",
        &a2.dims()[..a2.rank() - 2],
        &b2.dims()[..b2.rank() - 2],
    )
    .map_err(|_| Error::ShapeMismatch {
        op: "matmul",
        lhs: a.shape(),
        rhs: b.shape(),
    })?;
    let mut out_shape = batch.clone();
    out_shape.extend([m, n]);
    output_fits("matmul", &out_shape, a.dtype())?;
    let ab = as_batched(&a2.detach(), &batch)?;
    let bb = as_batched(&b2.detach(), &batch)?;
    let storage = {
        let (sa, sb) = (ab.storage(), bb.storage());
        a.device()
            .backend()
            .matmul((&sa, ab.layout()), (&sb, bb.layout()), a.dtype())?
    };
    let (a_saved, b_saved) = (a2.detach(), b2.detach());
    let (a2_shape, b2_shape) = (a2.shape(), b2.shape());
    let full = Tensor::from_op(
        storage,
        &out_shape,
        a.device(),
        "matmul",
        &[&a2, &b2],
        move |g| {
            let ga = matmul_impl(g, &b_saved.transpose(-1, -2)?)?;
            // A transposed `b` (a linear layer's `weight.t()`) gets its gradient
            // computed as `(gᵀ a)ᵀ`: the same sums, laid out so that the
            // gradient of the stored weight comes out contiguous (no later copy).
            let gb = if is_transposed(&b_saved) {
                matmul_impl(&g.transpose(-1, -2)?, &a_saved)?.transpose(-1, -2)?
            } else {
                matmul_impl(&a_saved.transpose(-1, -2)?, g)?
            };
            Ok(vec![
                Some(unbroadcast(&ga, &a2_shape)?),
                Some(unbroadcast(&gb, &b2_shape)?),
            ])
        },
    );
    let mut out = full;
    if b.rank() == 1 {
        out = out.squeeze(-1)?;
    }
    if a.rank() == 1 {
        out = out.squeeze(if b.rank() == 1 { -1 } else { -2 })?;
    }
    Ok(out)
}

/// Whether the last two dimensions of `t` are stored column-major (a `.t()` of a
/// contiguous matrix) rather than row-major.
fn is_transposed(t: &Tensor) -> bool {
    let r = t.rank();
    if r < 2 {
        return false;
    }
    let (shape, strides) = (t.dims(), t.layout().strides());
    strides[r - 2] == 1 && shape[r - 2] > 1 && shape[r - 1] > 1 && strides[r - 1] >= shape[r - 2]
}

/// `x @ weight^T + bias` (`torch.nn.functional.linear`): `x` is `[..., in]`,
/// `weight` is `[out, in]`, `bias` is `[out]`. The bias is added in the
/// product's epilogue (in f32, before the one rounding to the output dtype)
/// by [`crate::Backend::linear`].
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let mut inputs = vec![x, weight];
    inputs.extend(bias);
    dispatch_rounding("linear", &inputs, ROUNDABLE, |inputs, round_to| {
        linear_impl(&inputs[0], &inputs[1], inputs.get(2), None, round_to)
    })
}

/// `linear` reads its weight and bias rounded to a narrower dtype when
/// autocast asks it to (see [`crate::Interceptor::intercept_rounding`]).
const ROUNDABLE: &[bool] = &[false, true, true];

/// The activations [`linear_act`] can fuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `max(x, 0)`
    Relu,
    /// GELU, exact or tanh-approximated.
    Gelu(GeluApprox),
    /// `tanh(x)`
    Tanh,
    /// `1 / (1 + e^-x)`
    Sigmoid,
    /// `x · sigmoid(x)`
    Silu,
}

impl Activation {
    fn kernel(self) -> UnaryOp {
        match self {
            Activation::Relu => UnaryOp::Relu,
            Activation::Gelu(GeluApprox::None) => UnaryOp::GeluErf,
            Activation::Gelu(GeluApprox::Tanh) => UnaryOp::GeluTanh,
            Activation::Tanh => UnaryOp::Tanh,
            Activation::Sigmoid => UnaryOp::Sigmoid,
            Activation::Silu => UnaryOp::Silu,
        }
    }

    /// The activation as a differentiable op.
    pub fn apply(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Activation::Relu => x.relu(),
            Activation::Gelu(a) => x.gelu(a),
            Activation::Tanh => x.tanh(),
            Activation::Sigmoid => x.sigmoid(),
            Activation::Silu => x.silu(),
        }
    }
}

/// `activation(linear(x, weight, bias))`. Without autograd (no input needs a
/// gradient, or inside [`crate::no_grad`]) the activation runs in the
/// product's epilogue too — one pass over the output, one rounding; with
/// autograd it is applied as its own op, since its backward needs the
/// pre-activation values.
pub fn linear_act(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    activation: Activation,
) -> Result<Tensor> {
    let mut inputs = vec![x, weight];
    inputs.extend(bias);
    let records = crate::is_grad_enabled() && inputs.iter().any(|t| t.requires_grad());
    if records {
        return activation.apply(&linear(x, weight, bias)?);
    }
    dispatch_rounding("linear", &inputs, ROUNDABLE, |inputs, round_to| {
        linear_impl(
            &inputs[0],
            &inputs[1],
            inputs.get(2),
            Some(activation.kernel()),
            round_to,
        )
    })
}

/// `round_to`: the dtype autocast runs the op in, when it left an f32 weight
/// (and bias) uncast for the backend to round while packing — the result
/// equals that of the cast inputs; their gradients come back in f32, without
/// a rounding to `round_to` (the product accumulates in f32 anyway).
fn linear_impl(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    activation: Option<UnaryOp>,
    round_to: Option<DType>,
) -> Result<Tensor> {
    let op = "linear";
    let mut all = vec![x, w];
    all.extend(bias);
    same_device(op, &all)?;
    if w.rank() != 2 || x.rank() == 0 || x.dims()[x.rank() - 1] != w.dims()[1] {
        return Err(Error::ShapeMismatch {
            op,
            lhs: x.shape(),
            rhs: w.shape(),
        });
    }
    // A wide operand is read rounded to x's dtype only when autocast asked for it.
    let read_rounded = |t: &Tensor| {
        round_to == Some(x.dtype())
            && matches!(x.dtype(), DType::BF16 | DType::F16)
            && t.dtype() == DType::F32
    };
    if x.dtype() != w.dtype() && !read_rounded(w) {
        return Err(Error::DTypeMismatch {
            op,
            lhs: x.dtype(),
            rhs: w.dtype(),
        });
    }
    require_float(op, x)?;
    if let Some(b) = bias {
        if b.dims() != [w.dims()[0]] {
            return Err(Error::ShapeMismatch {
                op,
                lhs: w.shape(),
                rhs: b.shape(),
            });
        }
        if b.dtype() != x.dtype() && !read_rounded(b) {
            return Err(Error::DTypeMismatch {
                op,
                lhs: x.dtype(),
                rhs: b.dtype(),
            });
        }
    }
    let (k, n) = (w.dims()[1], w.dims()[0]);
    let lead: Vec<usize> = x.dims()[..x.rank() - 1].to_vec();
    let m: usize = lead.iter().product();
    // The rows of x as a [m, k] matrix (a view when its layout allows).
    let x2 = x.detach().reshape(&[m, k])?;
    let storage = {
        let (sx, sw) = (x2.storage(), w.storage());
        let sb = bias.map(|b| b.storage());
        let bview = match (&sb, bias) {
            (Some(s), Some(b)) => Some((&**s, b.layout())),
            _ => None,
        };
        x.device().backend().linear(
            (&sx, x2.layout()),
            (&sw, w.layout()),
            bview,
            activation,
            x.dtype(),
        )?
    };
    let mut out_shape = lead.clone();
    out_shape.push(n);
    let (x_saved, w_saved) = (x2, w.detach());
    let x_shape = x.shape();
    let bias_dtype = bias.map(|b| b.dtype());
    Ok(Tensor::from_op(
        storage,
        &out_shape,
        x.device(),
        op,
        &all,
        move |g| {
            if activation.is_some() {
                return Err(Error::invalid(
                    op,
                    "a fused activation has no backward (linear_act records it as its own op)",
                ));
            }
            let g2 = g.reshape(&[m, n])?;
            // Each gradient is computed in the dtype of the input it belongs to
            // (f32 for a weight read rounded), straight from the f32 accumulation.
            let gx = product(&g2, &w_saved, g2.dtype())?.reshape(&x_shape)?;
            // [n, k], contiguous: the stored weight's orientation.
            let gw = product(&g2.t()?, &x_saved, w_saved.dtype())?;
            let mut grads = vec![Some(gx), Some(gw)];
            if let Some(dtype) = bias_dtype {
                let sum = reduce_kernel(ReduceOp::Sum, &g2, &[0], dtype)?;
                grads.push(Some(Tensor::from_storage(sum, &[n], g2.device())));
            }
            Ok(grads)
        },
    ))
}

/// The 2-D product `a · b` rounded to `out`, unrecorded (backward passes run
/// without grad): an f32 `b` with a narrower `a` is read rounded to `a`'s dtype.
fn product(a: &Tensor, b: &Tensor, out: DType) -> Result<Tensor> {
    let as3 = |t: &Tensor| {
        let (l, d) = (t.layout(), t.dims());
        Layout::new(
            vec![1, d[0], d[1]],
            vec![0, l.strides()[0], l.strides()[1]],
            l.offset(),
        )
    };
    let (la, lb) = (as3(a), as3(b));
    let storage = {
        let (sa, sb) = (a.storage(), b.storage());
        let backend = a.device().backend();
        if a.dtype() == b.dtype() {
            backend.matmul((&sa, &la), (&sb, &lb), out)?
        } else {
            backend.matmul_rounding_rhs((&sa, &la), (&sb, &lb), out)?
        }
    };
    Ok(Tensor::from_storage(
        storage,
        &[a.dims()[0], b.dims()[1]],
        a.device(),
    ))
}

impl Tensor {
    /// Matrix product (see [`matmul`]).
    pub fn matmul(&self, rhs: &Tensor) -> Result<Tensor> {
        matmul(self, rhs)
    }
}
