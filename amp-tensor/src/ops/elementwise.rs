//! Elementwise ops: unary math and activations, binary arithmetic with
//! broadcasting and type promotion, comparisons, `where`, casts.

use super::{output_fits, require_float, same_device, unbroadcast};
use crate::backend::{BinaryOp, UnaryOp};
use crate::dispatch::dispatch;
use crate::layout::broadcast_shapes;
use crate::{Error, Result, Tensor};
use amp_dtype::DType;

/// GELU variants (`approximate='none'` or `'tanh'` in PyTorch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GeluApprox {
    /// The exact form with erf.
    #[default]
    None,
    /// The tanh approximation.
    Tanh,
}

/// Runs a unary kernel with output in the input's dtype and records `backward(g, x, y)`.
fn unary(
    name: &'static str,
    x: &Tensor,
    op: UnaryOp,
    float_only: bool,
    backward: impl Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor> + Send + Sync + 'static,
) -> Result<Tensor> {
    dispatch(name, &[x], |inputs| {
        let x = &inputs[0];
        if float_only {
            require_float(name, x)?;
        } else if x.dtype() == DType::Bool {
            return Err(Error::unsupported(name, x.dtype()));
        }
        output_fits(name, x.dims(), x.dtype())?;
        let storage = x.with_view(|v| x.device().backend().unary(op, v, x.dtype()))??;
        let y = Tensor::from_storage(storage, x.dims(), x.device());
        if !(crate::is_grad_enabled() && x.requires_grad()) {
            return Ok(y);
        }
        let (x_saved, y_saved) = (x.detach(), y.clone());
        Ok(y.view_op_multi(y.layout().clone(), name, &[x], move |g| {
            Ok(vec![Some(backward(g, &x_saved, &y_saved)?)])
        }))
    })
}

impl Tensor {
    /// `-x`
    pub fn neg(&self) -> Result<Tensor> {
        unary("neg", self, UnaryOp::Neg, false, |g, _, _| g.neg())
    }

    /// `e^x`
    pub fn exp(&self) -> Result<Tensor> {
        unary("exp", self, UnaryOp::Exp, true, |g, _, y| g.mul(y))
    }

    /// Natural logarithm.
    pub fn log(&self) -> Result<Tensor> {
        unary("log", self, UnaryOp::Log, true, |g, x, _| g.div(x))
    }

    /// Square root.
    pub fn sqrt(&self) -> Result<Tensor> {
        unary("sqrt", self, UnaryOp::Sqrt, true, |g, _, y| {
            g.div(y)?.mul_scalar(0.5)
        })
    }

    /// `1/sqrt(x)`
    pub fn rsqrt(&self) -> Result<Tensor> {
        unary("rsqrt", self, UnaryOp::Rsqrt, true, |g, _, y| {
            g.mul(&y.powf(3.0)?)?.mul_scalar(-0.5)
        })
    }

    /// `x^p` for a scalar exponent (`torch.pow(x, p)`).
    pub fn powf(&self, p: f64) -> Result<Tensor> {
        unary("pow", self, UnaryOp::Powf(p), true, move |g, x, _| {
            g.mul(&x.powf(p - 1.0)?)?.mul_scalar(p)
        })
    }

    /// `|x|`
    pub fn abs(&self) -> Result<Tensor> {
        unary("abs", self, UnaryOp::Abs, false, |g, x, _| {
            g.mul(&x.sign()?)
        })
    }

    /// `-1`, `0`, `1` by sign (gradient zero).
    pub fn sign(&self) -> Result<Tensor> {
        unary("sign", self, UnaryOp::Sign, false, |g, _, _| {
            g.mul_scalar(0.0)
        })
    }

    /// `1/x`
    pub fn recip(&self) -> Result<Tensor> {
        unary("reciprocal", self, UnaryOp::Recip, true, |g, _, y| {
            g.mul(&y.mul(y)?)?.neg()
        })
    }

    /// `max(x, 0)`
    pub fn relu(&self) -> Result<Tensor> {
        unary("relu", self, UnaryOp::Relu, true, |g, x, _| {
            binary_kernel(BinaryOp::ReluBackward, g, x)
        })
    }

    /// GELU, exact (erf) or tanh-approximated.
    pub fn gelu(&self, approximate: GeluApprox) -> Result<Tensor> {
        match approximate {
            GeluApprox::None => unary("gelu", self, UnaryOp::GeluErf, true, |g, x, _| {
                binary_kernel(BinaryOp::GeluErfBackward, g, x)
            }),
            GeluApprox::Tanh => unary("gelu", self, UnaryOp::GeluTanh, true, |g, x, _| {
                binary_kernel(BinaryOp::GeluTanhBackward, g, x)
            }),
        }
    }

    /// Hyperbolic tangent.
    pub fn tanh(&self) -> Result<Tensor> {
        unary("tanh", self, UnaryOp::Tanh, true, |g, _, y| {
            binary_kernel(BinaryOp::TanhBackward, g, y)
        })
    }

    /// Logistic sigmoid.
    pub fn sigmoid(&self) -> Result<Tensor> {
        unary("sigmoid", self, UnaryOp::Sigmoid, true, |g, _, y| {
            binary_kernel(BinaryOp::SigmoidBackward, g, y)
        })
    }

    /// `x · sigmoid(x)`
    pub fn silu(&self) -> Result<Tensor> {
        unary("silu", self, UnaryOp::Silu, true, |g, x, _| {
            binary_kernel(BinaryOp::SiluBackward, g, x)
        })
    }

    /// The error function.
    pub fn erf(&self) -> Result<Tensor> {
        unary("erf", self, UnaryOp::Erf, true, |g, x, _| {
            // d/dx erf(x) = 2/√π · e^{-x²}
            g.mul(&x.mul(x)?.neg()?.exp()?)?
                .mul_scalar(2.0 / std::f64::consts::PI.sqrt())
        })
    }

    /// `x * mul + add` with scalars, in one rounding.
    pub fn affine(&self, mul: f64, add: f64) -> Result<Tensor> {
        unary(
            "affine",
            self,
            UnaryOp::Affine { mul, add },
            false,
            move |g, _, _| g.mul_scalar(mul),
        )
    }

    /// `x + s`
    pub fn add_scalar(&self, s: f64) -> Result<Tensor> {
        unary(
            "add",
            self,
            UnaryOp::Affine { mul: 1.0, add: s },
            false,
            |g, _, _| Ok(g.clone()),
        )
    }

    /// `x - s`
    pub fn sub_scalar(&self, s: f64) -> Result<Tensor> {
        unary(
            "sub",
            self,
            UnaryOp::Affine { mul: 1.0, add: -s },
            false,
            |g, _, _| Ok(g.clone()),
        )
    }

    /// `x * s`
    pub fn mul_scalar(&self, s: f64) -> Result<Tensor> {
        unary(
            "mul",
            self,
            UnaryOp::Affine { mul: s, add: 0.0 },
            false,
            move |g, _, _| g.mul_scalar(s),
        )
    }

    /// `x / s`
    pub fn div_scalar(&self, s: f64) -> Result<Tensor> {
        self.mul_scalar(1.0 / s)
    }

    /// `a + b` with broadcasting and type promotion.
    pub fn add(&self, rhs: &Tensor) -> Result<Tensor> {
        binary("add", self, rhs, BinaryOp::Add, |g, _, _| {
            Ok((Some(g.clone()), Some(g.clone())))
        })
    }

    /// `a - b` with broadcasting and type promotion.
    pub fn sub(&self, rhs: &Tensor) -> Result<Tensor> {
        binary("sub", self, rhs, BinaryOp::Sub, |g, _, _| {
            Ok((Some(g.clone()), Some(g.neg()?)))
        })
    }

    /// `a * b` with broadcasting and type promotion.
    pub fn mul(&self, rhs: &Tensor) -> Result<Tensor> {
        binary("mul", self, rhs, BinaryOp::Mul, |g, a, b| {
            Ok((Some(g.mul(b)?), Some(g.mul(a)?)))
        })
    }

    /// `a / b` with broadcasting and type promotion.
    pub fn div(&self, rhs: &Tensor) -> Result<Tensor> {
        binary("div", self, rhs, BinaryOp::Div, |g, a, b| {
            let ga = g.div(b)?;
            let gb = g.mul(a)?.div(&b.mul(b)?)?.neg()?;
            Ok((Some(ga), Some(gb)))
        })
    }

    /// Elementwise maximum (gradient to the larger input; ties to both halves).
    pub fn maximum(&self, rhs: &Tensor) -> Result<Tensor> {
        binary("maximum", self, rhs, BinaryOp::Maximum, |g, a, b| {
            select_grads(g, a, b, BinaryOp::Gt)
        })
    }

    /// Elementwise minimum (gradient to the smaller input; ties to both halves).
    pub fn minimum(&self, rhs: &Tensor) -> Result<Tensor> {
        binary("minimum", self, rhs, BinaryOp::Minimum, |g, a, b| {
            select_grads(g, a, b, BinaryOp::Lt)
        })
    }

    /// `a == b` as a bool tensor.
    pub fn eq(&self, rhs: &Tensor) -> Result<Tensor> {
        compare("eq", self, rhs, BinaryOp::Eq)
    }

    /// `a > b` as a bool tensor.
    pub fn gt(&self, rhs: &Tensor) -> Result<Tensor> {
        compare("gt", self, rhs, BinaryOp::Gt)
    }

    /// `a < b` as a bool tensor.
    pub fn lt(&self, rhs: &Tensor) -> Result<Tensor> {
        compare("lt", self, rhs, BinaryOp::Lt)
    }

    /// A copy in `dtype`, rounded to nearest even; differentiable (the gradient
    /// comes back in this tensor's dtype). Returns `self` if the dtype already matches.
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        if dtype == self.dtype() {
            return Ok(self.clone());
        }
        dispatch("to", &[self], |inputs| {
            let x = &inputs[0];
            output_fits("to", x.dims(), dtype)?;
            let storage = x.with_view(|v| x.device().backend().cast(v, dtype))??;
            let source = x.dtype();
            let differentiable = dtype.is_float() && source.is_float();
            Ok(Tensor::from_op(
                storage,
                x.dims(),
                x.device(),
                "to",
                &[x],
                move |g| {
                    Ok(vec![differentiable
                        .then(|| g.to_dtype(source))
                        .transpose()?])
                },
            ))
        })
    }

    /// A copy in `dtype` that is computed when first read: until then no
    /// memory is taken, and a kernel that can read the source as cast does
    /// so ([`crate::backend::Backend::fuses_cast`]; the CPU backend's products read an
    /// f32 weight as bf16/f16 while packing), so the copy is never made.
    /// Values and autograd are [`Tensor::to_dtype`]'s: a cast recorded as op
    /// `"to"`, whose gradient comes back in this tensor's dtype. This is what
    /// autocast's casts are.
    pub fn to_dtype_deferred(&self, dtype: DType) -> Result<Tensor> {
        if dtype == self.dtype() {
            return Ok(self.clone());
        }
        if !(dtype.is_float() && self.dtype().is_float()) {
            return self.to_dtype(dtype);
        }
        dispatch("to", &[self], |inputs| {
            let x = &inputs[0];
            output_fits("to", x.dims(), dtype)?;
            Ok(Tensor::deferred_cast(x, dtype))
        })
    }

    /// A contiguous tensor with the same values (this one if already contiguous).
    pub fn contiguous(&self) -> Result<Tensor> {
        if self.is_contiguous() {
            return Ok(self.clone());
        }
        output_fits("contiguous", self.dims(), self.dtype())?;
        let storage = self.with_view(|v| self.device().backend().cast(v, self.dtype()))??;
        Ok(Tensor::from_op(
            storage,
            self.dims(),
            self.device(),
            "contiguous",
            &[self],
            |g| Ok(vec![Some(g.clone())]),
        ))
    }
}

/// Runs a binary kernel on two tensors of one shape and dtype, no autograd (for backward passes).
pub(crate) fn binary_kernel(op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary_kernel_to(op, a, b, a.dtype())
}

/// [`binary_kernel`] with an explicit output dtype.
pub(crate) fn binary_kernel_to(op: BinaryOp, a: &Tensor, b: &Tensor, out: DType) -> Result<Tensor> {
    let storage =
        a.with_view(|va| b.with_view(|vb| a.device().backend().binary(op, va, vb, out)))???;
    Ok(Tensor::from_op(
        storage,
        a.dims(),
        a.device(),
        "binary_backward",
        &[],
        |_| Ok(vec![]),
    ))
}

type BinaryBackward = fn(&Tensor, &Tensor, &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)>;

/// Broadcasts and promotes two operands: returns their views at the common
/// shape and dtype (casting through the differentiable `to_dtype`).
pub(crate) fn prepare_binary(
    op: &'static str,
    a: &Tensor,
    b: &Tensor,
) -> Result<(Tensor, Tensor, Vec<usize>)> {
    same_device(op, &[a, b])?;
    let dtype = DType::promote(a.dtype(), b.dtype())?;
    let shape = broadcast_shapes(op, a.dims(), b.dims())?;
    output_fits(op, &shape, dtype)?;
    Ok((a.to_dtype(dtype)?, b.to_dtype(dtype)?, shape))
}

fn binary(
    name: &'static str,
    a: &Tensor,
    b: &Tensor,
    op: BinaryOp,
    backward: BinaryBackward,
) -> Result<Tensor> {
    dispatch(name, &[a, b], |inputs| {
        let (a, b, shape) = prepare_binary(name, &inputs[0], &inputs[1])?;
        if a.dtype() == DType::Bool {
            return Err(Error::unsupported(name, a.dtype()));
        }
        let la = a.layout().broadcast_to(name, &shape)?;
        let lb = b.layout().broadcast_to(name, &shape)?;
        let storage = {
            let (sa, sb) = (a.storage()?, b.storage()?);
            a.device()
                .backend()
                .binary(op, (&sa, &la), (&sb, &lb), a.dtype())?
        };
        let (a_saved, b_saved) = (a.detach(), b.detach());
        let (a_shape, b_shape) = (a.shape(), b.shape());
        Ok(Tensor::from_op(
            storage,
            &shape,
            a.device(),
            name,
            &[&a, &b],
            move |g| {
                let (ga, gb) = backward(g, &a_saved, &b_saved)?;
                Ok(vec![
                    ga.map(|t| unbroadcast(&t, &a_shape)).transpose()?,
                    gb.map(|t| unbroadcast(&t, &b_shape)).transpose()?,
                ])
            },
        ))
    })
}

fn select_grads(
    g: &Tensor,
    a: &Tensor,
    b: &Tensor,
    pick_a: BinaryOp,
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    let shape = g.shape();
    let a_b = a.broadcast_to(&shape)?;
    let b_b = b.broadcast_to(&shape)?;
    let a_wins = binary_kernel_to(pick_a, &a_b, &b_b, DType::Bool)?;
    let tie = binary_kernel_to(BinaryOp::Eq, &a_b, &b_b, DType::Bool)?;
    let zero = Tensor::zeros(&shape, g.dtype(), g.device())?;
    let half = g.mul_scalar(0.5)?;
    let ga = where_cond(&a_wins, g, &where_cond(&tie, &half, &zero)?)?;
    let gb = g.sub(&ga)?;
    Ok((Some(ga), Some(gb)))
}

fn compare(name: &'static str, a: &Tensor, b: &Tensor, op: BinaryOp) -> Result<Tensor> {
    dispatch(name, &[a, b], |inputs| {
        let (a, b, shape) = prepare_binary(name, &inputs[0].detach(), &inputs[1].detach())?;
        let la = a.layout().broadcast_to(name, &shape)?;
        let lb = b.layout().broadcast_to(name, &shape)?;
        let storage = {
            let (sa, sb) = (a.storage()?, b.storage()?);
            a.device()
                .backend()
                .binary(op, (&sa, &la), (&sb, &lb), DType::Bool)?
        };
        Ok(Tensor::from_op(
            storage,
            &shape,
            a.device(),
            name,
            &[],
            |_| Ok(vec![]),
        ))
    })
}

/// `cond ? a : b` elementwise with broadcasting (`torch.where`); `cond` is bool.
pub fn where_cond(cond: &Tensor, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    dispatch("where", &[cond, a, b], |inputs| {
        let (cond, a, b) = (&inputs[0], &inputs[1], &inputs[2]);
        if cond.dtype() != DType::Bool {
            return Err(Error::UnsupportedDType {
                op: "where",
                dtype: cond.dtype(),
                reason: "condition must be bool".into(),
            });
        }
        same_device("where", &[cond, a, b])?;
        let (a, b, shape) = prepare_binary("where", a, b)?;
        let shape = broadcast_shapes("where", &shape, cond.dims())?;
        let lc = cond.layout().broadcast_to("where", &shape)?;
        let la = a.layout().broadcast_to("where", &shape)?;
        let lb = b.layout().broadcast_to("where", &shape)?;
        let storage = {
            let (sc, sa, sb) = (cond.storage()?, a.storage()?, b.storage()?);
            a.device()
                .backend()
                .where_cond((&sc, &lc), (&sa, &la), (&sb, &lb), a.dtype())?
        };
        let cond_saved = cond.detach();
        let (a_shape, b_shape) = (a.shape(), b.shape());
        Ok(Tensor::from_op(
            storage,
            &shape,
            a.device(),
            "where",
            &[&a, &b],
            move |g| {
                let zero = Tensor::zeros(&[], g.dtype(), g.device())?;
                let ga = where_cond(&cond_saved, g, &zero)?;
                let gb = where_cond(&cond_saved, &zero, g)?;
                Ok(vec![
                    Some(unbroadcast(&ga, &a_shape)?),
                    Some(unbroadcast(&gb, &b_shape)?),
                ])
            },
        ))
    })
}

/// `x` with `value` where `mask` is true (`Tensor.masked_fill`).
pub fn masked_fill(x: &Tensor, mask: &Tensor, value: f64) -> Result<Tensor> {
    dispatch("masked_fill", &[x, mask], |inputs| {
        let fill = Tensor::full(&[], value, inputs[0].dtype(), inputs[0].device())?;
        where_cond(&inputs[1], &fill, &inputs[0])
    })
}
