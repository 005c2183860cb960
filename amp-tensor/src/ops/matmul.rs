//! Matrix products: `matmul` (batched, broadcast batch dims) and `linear`.

use super::{output_fits, require_float, same_device, unbroadcast, GeluApprox};
use crate::backend::ReduceOp;
use crate::backend::UnaryOp;
use crate::dispatch::dispatch;
use crate::layout::broadcast_shapes;
use crate::ops::reduce::reduce_kernel;
use crate::tensor::KernelInput;
use crate::{Error, Layout, Result, Tensor};
use amp_dtype::DType;

/// `layout` (of a `[batch..., r, c]` operand broadcast to `batch`) as a
/// `[B, r, c]` layout, when the batch dimensions merge into one stride.
fn batched_layout(layout: &Layout, batch: &[usize]) -> Option<Layout> {
    let rank = layout.rank();
    let (r, c) = (layout.shape()[rank - 2], layout.shape()[rank - 1]);
    let mut full = batch.to_vec();
    full.extend([r, c]);
    let l = layout.broadcast_to("matmul", &full).ok()?;
    let bs = &l.strides()[..batch.len()];
    let merged = if batch.is_empty() || bs.iter().all(|&s| s == 0) {
        Some(0)
    } else {
        // Mergeable when each batch stride equals the next one times its size.
        let ok = (0..batch.len().saturating_sub(1)).all(|i| bs[i] == bs[i + 1] * batch[i + 1]);
        ok.then(|| bs[batch.len() - 1])
    }?;
    let strides = vec![
        merged,
        l.strides()[batch.len()],
        l.strides()[batch.len() + 1],
    ];
    Some(Layout::new(
        vec![batch.iter().product(), r, c],
        strides,
        l.offset(),
    ))
}

/// Operand `index` of a product as the kernel reads it, with its `[B, r, c]`
/// layout: a fused deferred cast's source when that layout batches, else the
/// tensor's own elements (whose layout the caller made batchable).
fn batched_input<'a>(
    t: &'a Tensor,
    index: usize,
    batch: &[usize],
) -> Result<(KernelInput<'a>, Layout)> {
    let input = t.kernel_input("matmul", index)?;
    if let Some(l) = batched_layout(input.layout(), batch) {
        return Ok((input, l));
    }
    drop(input);
    let input = t.materialised_input()?;
    let l = batched_layout(input.layout(), batch).ok_or_else(|| {
        Error::invalid(
            "matmul",
            format!("cannot batch a view of shape {:?}", t.dims()),
        )
    })?;
    Ok((input, l))
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
    matmul_to(a, b, a.dtype())
}

/// [`matmul`] with the product rounded to `out` (the backward passes ask for
/// their inputs' [`Tensor::grad_dtype`]).
pub(crate) fn matmul_to(a: &Tensor, b: &Tensor, out: DType) -> Result<Tensor> {
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
    output_fits("matmul", &out_shape, out)?;
    // Operands whose batch dimensions do not merge are copied first, broadcast.
    let batchable = |t: &Tensor| -> Result<Tensor> {
        if batched_layout(t.layout(), &batch).is_some() {
            Ok(t.detach())
        } else {
            let mut full = batch.clone();
            full.extend_from_slice(&t.dims()[t.rank() - 2..]);
            t.detach().broadcast_to(&full)?.contiguous()
        }
    };
    let (a3, b3) = (batchable(&a2)?, batchable(&b2)?);
    let storage = {
        let (ia, la) = batched_input(&a3, 0, &batch)?;
        let (ib, lb) = batched_input(&b3, 1, &batch)?;
        a.device()
            .backend()
            .matmul((ia.storage(), &la), (ib.storage(), &lb), out)?
    };
    let (a_saved, b_saved) = (a2.detach(), b2.detach());
    let (a2_shape, b2_shape) = (a2.shape(), b2.shape());
    let (a_grad, b_grad) = (a2.grad_dtype(), b2.grad_dtype());
    let full = Tensor::from_op(
        storage,
        &out_shape,
        a.device(),
        "matmul",
        &[&a2, &b2],
        move |g| {
            // A product kept wider than its operands (attention's f32 scores
            // of bf16 q and k) brings a gradient of that width: the backward
            // products take it in the operands' dtype, as PyTorch's do.
            let g = &if g.dtype() == a_saved.dtype() {
                g.clone()
            } else {
                g.to_dtype(a_saved.dtype())?
            };
            let ga = matmul_to(g, &b_saved.transpose(-1, -2)?, a_grad)?;
            // A transposed `b` (a linear layer's `weight.t()`) gets its gradient
            // computed as `(gᵀ a)ᵀ`: the same sums, laid out so that the
            // gradient of the stored weight comes out contiguous (no later copy).
            let gb = if is_transposed(&b_saved) {
                matmul_to(&g.transpose(-1, -2)?, &a_saved, b_grad)?.transpose(-1, -2)?
            } else {
                matmul_to(&a_saved.transpose(-1, -2)?, g, b_grad)?
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
/// by [`crate::backend::Backend::linear`].
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let mut inputs = vec![x, weight];
    inputs.extend(bias);
    dispatch("linear", &inputs, |inputs| {
        linear_impl(&inputs[0], &inputs[1], inputs.get(2), None)
    })
}

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
    dispatch("linear", &inputs, |inputs| {
        linear_impl(
            &inputs[0],
            &inputs[1],
            inputs.get(2),
            Some(activation.kernel()),
        )
    })
}

/// The linear layer's forward and backward. Each operand is read through
/// [`Tensor::kernel_input`], so a deferred cast of an f32 weight or bias is
/// handed to a backend that fuses it as the f32 source (the CPU GEMM rounds it
/// while packing) and computed first for every other. The gradients come in
/// each input's [`Tensor::grad_dtype`]: for autocast's cast of an f32 weight,
/// f32 straight from the product's f32 accumulation, unrounded.
fn linear_impl(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    activation: Option<UnaryOp>,
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
    if x.dtype() != w.dtype() {
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
        if b.dtype() != x.dtype() {
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
    let mut out_shape = lead.clone();
    out_shape.push(n);
    output_fits(op, &out_shape, x.dtype())?;
    // The rows of x as a [m, k] matrix (a view when its layout allows).
    let x2 = x.detach().reshape(&[m, k])?;
    let storage = {
        let ix = x2.kernel_input(op, 0)?;
        let iw = w.kernel_input(op, 1)?;
        let ib = bias.map(|b| b.kernel_input(op, 2)).transpose()?;
        x.device().backend().linear(
            ix.view(),
            iw.view(),
            ib.as_ref().map(|b| b.view()),
            activation,
            x.dtype(),
        )?
    };
    let (x_saved, w_saved) = (x2, w.detach());
    let x_shape = x.shape();
    let (x_grad, w_grad) = (x.grad_dtype(), w.grad_dtype());
    let bias_grad = bias.map(|b| b.grad_dtype());
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
            let gx = product(&g2, &w_saved, x_grad)?.reshape(&x_shape)?;
            // [n, k], contiguous: the stored weight's orientation.
            let gw = product(&g2.t()?, &x_saved, w_grad)?;
            let mut grads = vec![Some(gx), Some(gw)];
            if let Some(dtype) = bias_grad {
                let sum = reduce_kernel(ReduceOp::Sum, &g2, &[0], dtype)?;
                grads.push(Some(Tensor::from_storage(sum, &[n], g2.device())));
            }
            Ok(grads)
        },
    ))
}

/// The 2-D product `a · b` rounded to `out`, unrecorded (backward passes run
/// without grad); `b` is read as a `matmul` right operand (a deferred cast
/// the backend fuses stays unmaterialised).
fn product(a: &Tensor, b: &Tensor, out: DType) -> Result<Tensor> {
    let as3 = |l: &Layout| {
        let (sh, st) = (l.shape(), l.strides());
        Layout::new(vec![1, sh[0], sh[1]], vec![0, st[0], st[1]], l.offset())
    };
    let storage = {
        let (ia, ib) = (a.kernel_input("matmul", 0)?, b.kernel_input("matmul", 1)?);
        let (la, lb) = (as3(ia.layout()), as3(ib.layout()));
        a.device()
            .backend()
            .matmul((ia.storage(), &la), (ib.storage(), &lb), out)?
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
