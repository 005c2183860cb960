//! The [`Backend`] trait: the primitive kernels every device implements.
//!
//! Every kernel takes its inputs as `(storage, layout)` pairs (layouts may be
//! strided or broadcast, with zero strides) and an explicit output dtype, and
//! returns a new contiguous buffer. Low-precision inputs must accumulate in at
//! least f32. Composite ops (linear, cross-entropy, the backward passes) are
//! built from these in amp-tensor.

pub use crate::storage::{DeviceStorage, HostElement, HostStorage, Storage};
pub use crate::tensor::KernelInput;
use crate::{Layout, Result};
use amp_dtype::DType;
use std::fmt;

/// Whether a device is the CPU or an NVIDIA GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeviceKind {
    /// Host CPU.
    Cpu,
    /// An NVIDIA GPU.
    Cuda,
}

impl DeviceKind {
    /// `"cpu"` or `"cuda"`, as PyTorch's `device_type`.
    pub fn name(self) -> &'static str {
        match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Cuda => "cuda",
        }
    }
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for DeviceKind {
    type Err = crate::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(DeviceKind::Cpu),
            "cuda" => Ok(DeviceKind::Cuda),
            other => Err(crate::Error::invalid(
                "DeviceKind::from_str",
                format!("unknown device kind {other:?}; valid: cpu, cuda"),
            )),
        }
    }
}

/// Elementwise functions of one input. Scalar parameters travel in the variant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum UnaryOp {
    /// `-x`
    Neg,
    /// `e^x`
    Exp,
    /// natural log
    Log,
    /// square root
    Sqrt,
    /// `1/sqrt(x)`
    Rsqrt,
    /// `|x|`
    Abs,
    /// `max(x, 0)`
    Relu,
    /// GELU with the exact erf form: `x/2 (1 + erf(x/√2))`.
    GeluErf,
    /// GELU with the tanh approximation.
    GeluTanh,
    /// hyperbolic tangent
    Tanh,
    /// logistic sigmoid
    Sigmoid,
    /// `x · sigmoid(x)`
    Silu,
    /// error function
    Erf,
    /// `1/x`
    Recip,
    /// `-1`, `0` or `1` by the sign of `x` (NaN stays NaN).
    Sign,
    /// `x^p` for a scalar `p`.
    Powf(f64),
    /// `x * mul + add` (scalar add / multiply / subtract forms).
    Affine {
        /// Multiplier.
        mul: f64,
        /// Addend.
        add: f64,
    },
    /// `x` itself (a cast or copy).
    Identity,
    /// `1.0` where `x` is non-zero (bool output for masks).
    NonZero,
}

/// Elementwise functions of two inputs of the same shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    /// `a + b`
    Add,
    /// `a - b`
    Sub,
    /// `a * b`
    Mul,
    /// `a / b`
    Div,
    /// elementwise max (NaN propagates)
    Maximum,
    /// elementwise min (NaN propagates)
    Minimum,
    /// `a == b` (bool output)
    Eq,
    /// `a > b` (bool output)
    Gt,
    /// `a < b` (bool output)
    Lt,
    /// `grad * (x > 0)`: ReLU backward with `a = grad`, `b = x`.
    ReluBackward,
    /// GELU (erf form) backward with `a = grad`, `b = x`.
    GeluErfBackward,
    /// GELU (tanh form) backward with `a = grad`, `b = x`.
    GeluTanhBackward,
    /// `grad * (1 - y²)`: tanh backward with `a = grad`, `b = y` (the output).
    TanhBackward,
    /// `grad * y (1 - y)`: sigmoid backward with `a = grad`, `b = y` (the output).
    SigmoidBackward,
    /// SiLU backward with `a = grad`, `b = x`.
    SiluBackward,
}

/// Reductions over a set of dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    /// Sum.
    Sum,
    /// Arithmetic mean.
    Mean,
    /// Maximum (NaN propagates).
    Max,
    /// Minimum (NaN propagates).
    Min,
    /// Index of the first maximum (output i64; a NaN counts as the maximum).
    ArgMax,
    /// Index of the first minimum (output i64).
    ArgMin,
}

/// Inf/NaN counts that the fused unscale found in one buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NonFiniteCount {
    /// Number of ±inf elements.
    pub inf: usize,
    /// Number of NaN elements.
    pub nan: usize,
}

impl NonFiniteCount {
    /// True if any element was inf or NaN.
    pub fn any(&self) -> bool {
        self.inf + self.nan > 0
    }
}

/// A storage with the layout of the view to read.
pub type View<'a> = (&'a Storage, &'a Layout);

/// The hyperparameters of one AdamW update ([`Backend::adamw_step`]), as
/// `torch.optim.AdamW` takes them (`amsgrad=False`, `maximize=False`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWStep {
    /// Learning rate.
    pub lr: f64,
    /// Decay rate of the first moment.
    pub beta1: f64,
    /// Decay rate of the second moment.
    pub beta2: f64,
    /// Added to the denominator.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// This update's 1-based step number (for the bias corrections).
    pub step: u64,
}

/// The per-step scalars of one AdamW update rounded once to f32, as PyTorch
/// hands them to its f32 kernels. Every backend's fused AdamW computes
/// (in f32, each operation rounded, no fused multiply-adds):
///
/// ```text
/// m ← m + (g − m)·one_minus_beta1;  v ← v·beta2 + g·g·one_minus_beta2
/// p ← p·decay − step_size · m / (√v / bias_correction2_sqrt + eps)
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[allow(missing_docs)]
pub struct AdamWCoefficients {
    pub decay: f32,
    pub one_minus_beta1: f32,
    pub beta2: f32,
    pub one_minus_beta2: f32,
    pub bias_correction2_sqrt: f32,
    pub eps: f32,
    pub step_size: f32,
}

impl AdamWStep {
    /// The step's scalars in f32 (see [`AdamWCoefficients`]).
    pub fn coefficients(&self) -> AdamWCoefficients {
        AdamWCoefficients {
            decay: (1.0 - self.lr * self.weight_decay) as f32,
            one_minus_beta1: (1.0 - self.beta1) as f32,
            beta2: self.beta2 as f32,
            one_minus_beta2: (1.0 - self.beta2) as f32,
            bias_correction2_sqrt: self.bias_correction2_sqrt() as f32,
            eps: self.eps as f32,
            step_size: self.step_size() as f32,
        }
    }

    /// `lr / (1 − β₁ᵗ)`: the step size after the first bias correction.
    pub fn step_size(&self) -> f64 {
        self.lr / (1.0 - self.beta1.powi(self.step.min(i32::MAX as u64) as i32))
    }

    /// `√(1 − β₂ᵗ)`: the second bias correction's square root.
    pub fn bias_correction2_sqrt(&self) -> f64 {
        (1.0 - self.beta2.powi(self.step.min(i32::MAX as u64) as i32)).sqrt()
    }
}

/// One fused attention problem ([`Backend::attention`],
/// [`Backend::attention_backward`]): `softmax(q·kᵀ·scale + bias) · v` for
/// each of `N` independent slices (the batch and head dimensions flattened).
///
/// - `q` is `[N, L, E]`, `k` `[N, S, E]`, `v` `[N, S, Ev]`, all of one float
///   dtype (f32, bf16, f16 or f64). The views may have any strides; the op
///   hands over contiguous ones where the tensors are.
/// - `bias`, when given, is an **f32** view of shape `[N, L, S]` added to the
///   scaled scores; its strides may be zero where it is broadcast (a mask
///   shared by every head). A bool mask arrives as `0` / `-inf`. Never given
///   together with `causal`.
/// - `causal`: query `i` attends to keys `0..=i` only (the top-left aligned
///   lower triangle, as PyTorch's `is_causal`), so a kernel can skip the
///   blocks above the diagonal.
/// - A query row whose every key is masked (bias `-inf` throughout) attends
///   to nothing: its output is 0, its log-sum-exp `-inf`, and it contributes
///   no gradient to anything.
#[derive(Debug, Clone, Copy)]
pub struct AttentionProblem<'a> {
    /// Queries `[N, L, E]`.
    pub q: View<'a>,
    /// Keys `[N, S, E]`, `q`'s dtype.
    pub k: View<'a>,
    /// Values `[N, S, Ev]`, `q`'s dtype.
    pub v: View<'a>,
    /// An f32 additive mask `[N, L, S]` (possibly broadcast, zero strides).
    pub bias: Option<View<'a>>,
    /// Mask the keys after each query.
    pub causal: bool,
    /// The factor of `q·kᵀ` (before the bias is added).
    pub scale: f64,
}

/// The kernels one device provides. See the module docs for the conventions.
pub trait Backend: Send + Sync + fmt::Debug {
    /// A short name of the implementation (`"reference"`, `"cpu"`, `"cuda"`).
    fn name(&self) -> &str;
    /// CPU or CUDA.
    fn kind(&self) -> DeviceKind;
    /// Device ordinal (0 for the CPU).
    fn ordinal(&self) -> usize {
        0
    }
    /// True where bf16 arithmetic is native and fast (as `torch.cuda.is_bf16_supported()`).
    fn is_bf16_supported(&self) -> bool;

    /// Moves a host buffer onto this device.
    #[allow(clippy::wrong_self_convention)] // "from host" names the direction of the copy
    fn from_host(&self, data: HostStorage) -> Result<Storage>;
    /// Copies a view's elements, in logical order, into a host buffer of the same dtype.
    fn to_host(&self, src: View<'_>) -> Result<HostStorage>;
    /// A contiguous buffer of `numel` elements of `dtype`, all equal to `value`.
    fn full(&self, numel: usize, value: f64, dtype: DType) -> Result<Storage>;

    /// Copies a view into a new contiguous buffer of dtype `out`, rounding to nearest even.
    fn cast(&self, src: View<'_>, out: DType) -> Result<Storage>;
    /// `op` applied elementwise.
    fn unary(&self, op: UnaryOp, src: View<'_>, out: DType) -> Result<Storage>;
    /// `op` applied elementwise to two views of the same shape and dtype.
    fn binary(&self, op: BinaryOp, lhs: View<'_>, rhs: View<'_>, out: DType) -> Result<Storage>;
    /// `cond ? on_true : on_false` elementwise (`cond` is bool; all views share one shape).
    fn where_cond(
        &self,
        cond: View<'_>,
        on_true: View<'_>,
        on_false: View<'_>,
        out: DType,
    ) -> Result<Storage>;
    /// Reduces over `dims` (sorted, distinct); the output has the input's shape
    /// with those dims set to 1, contiguous.
    fn reduce(&self, op: ReduceOp, src: View<'_>, dims: &[usize], out: DType) -> Result<Storage>;
    /// Batched matmul of `[B, M, K]` by `[B, K, N]` (same dtype) into `[B, M, N]`, f32 accumulation or better.
    fn matmul(&self, lhs: View<'_>, rhs: View<'_>, out: DType) -> Result<Storage>;
    /// Softmax (or log-softmax) over the last dimension, f32 accumulation or better.
    fn softmax(&self, src: View<'_>, log: bool, out: DType) -> Result<Storage>;
    /// Layer norm over the last dimension with optional affine weight and bias (both of
    /// the normalised length). Returns `(output, mean, rstd)`; mean and rstd are f32
    /// with one element per row.
    fn layer_norm(
        &self,
        src: View<'_>,
        weight: Option<View<'_>>,
        bias: Option<View<'_>>,
        eps: f64,
        out: DType,
    ) -> Result<(Storage, Storage, Storage)>;
    /// The gradients of [`Backend::layer_norm`] over the last dimension of
    /// `src`, from the f32 `mean` and `rstd` it returned (one per row) and the
    /// gradient `grad` of its output (`src`'s shape): `Some((dx, dweight,
    /// dbias))`, `dx` in `out` (`src`'s shape), `dweight = Σ grad·x̂` and
    /// `dbias = Σ grad` over the rows (length of the last dimension, in `out`;
    /// `dweight` with no `weight` is still `Σ grad·x̂`). `Ok(None)` (the
    /// default): the op composes them from elementwise ops and reductions.
    fn layer_norm_backward(
        &self,
        src: View<'_>,
        weight: Option<View<'_>>,
        mean: View<'_>,
        rstd: View<'_>,
        grad: View<'_>,
        out: DType,
    ) -> Result<Option<(Storage, Storage, Storage)>> {
        let _ = (src, weight, mean, rstd, grad, out);
        Ok(None)
    }
    /// Concatenates views (same dtype, same shape except along `dim`) along `dim`.
    fn cat(&self, inputs: &[View<'_>], dim: usize, out: DType) -> Result<Storage>;
    /// `torch.index_select`: rows of `src` along `dim` picked by the i64 `index` (1-D).
    /// Indices are checked by the caller.
    fn index_select(
        &self,
        src: View<'_>,
        dim: usize,
        index: View<'_>,
        out: DType,
    ) -> Result<Storage>;
    /// `torch.gather`: `out[i][j] = src[i][index[i][j]]` along `dim`; the output has the
    /// index's shape. Indices are checked by the caller.
    fn gather(&self, src: View<'_>, dim: usize, index: View<'_>, out: DType) -> Result<Storage>;
    /// Zeros of `shape` into which `src` is scatter-added along `dim` at `index`
    /// (`index` and `src` have one shape): the backward of `gather` and `index_select`.
    fn scatter_add(
        &self,
        shape: &[usize],
        dim: usize,
        index: View<'_>,
        src: View<'_>,
        out: DType,
    ) -> Result<Storage>;

    /// Multiplies every element of every view by `inv_scale` (in f32 for f32 and
    /// narrower buffers, rounded once to the buffer's dtype), in place, and
    /// counts the infs and NaNs among the results — one fused pass over many
    /// gradient buffers. Counting the results, not the inputs, means a finite
    /// value that overflows when unscaled is reported too: no non-finite value
    /// is ever written without being counted.
    fn non_finite_check_and_unscale(
        &self,
        buffers: &mut [(&mut Storage, &Layout)],
        inv_scale: f32,
    ) -> Result<Vec<NonFiniteCount>>;

    /// `act(x · weightᵀ + bias)`, the fused epilogue of a linear layer: `x` is a
    /// `[m, k]` view, `weight` `[n, k]`, `bias` (optional) `[n]`, all of one
    /// dtype — or, where [`Backend::fuses_cast`] says so, a wider weight and
    /// bias to be read as if cast to `x`'s dtype first. The
    /// product accumulates in f32 (f64 for f64 inputs); the bias is added and
    /// the activation applied at that precision, and the result is rounded
    /// once to `out`. The caller checks shapes and dtypes.
    ///
    /// The provided implementation casts a wider weight and bias to `x`'s
    /// dtype, then composes this backend's `matmul`, `binary` and `unary` at
    /// the accumulation precision; backends override it with one pass over
    /// the product.
    fn linear(
        &self,
        x: View<'_>,
        weight: View<'_>,
        bias: Option<View<'_>>,
        activation: Option<UnaryOp>,
        out: DType,
    ) -> Result<Storage> {
        let (xs, xl) = x;
        // A wider weight (and bias) is rounded to x's dtype first.
        let narrow = |v: View<'_>| -> Result<Option<Storage>> {
            Ok(if v.0.dtype() != xs.dtype() {
                Some(self.cast(v, xs.dtype())?)
            } else {
                None
            })
        };
        let w_cast = narrow(weight)?;
        let b_cast = bias.map(narrow).transpose()?.flatten();
        let w_flat = Layout::contiguous(weight.1.shape());
        let (ws, wl) = match &w_cast {
            Some(s) => (s, &w_flat),
            None => weight,
        };
        let b_flat = bias.map(|b| Layout::contiguous(b.1.shape()));
        let bias = match (&b_cast, &b_flat) {
            (Some(s), Some(l)) => Some((s, l)),
            _ => bias,
        };
        let acc = if xs.dtype() == DType::F64 {
            DType::F64
        } else {
            DType::F32
        };
        let (m, n) = (xl.shape()[0], wl.shape()[0]);
        let as3 = |l: &Layout| {
            let (sh, st) = (l.shape(), l.strides());
            Layout::new(vec![1, sh[0], sh[1]], vec![0, st[0], st[1]], l.offset())
        };
        let wt = wl.transpose(0, 1);
        let mut y = self.matmul((xs, &as3(xl)), (ws, &as3(&wt)), acc)?;
        let flat = Layout::contiguous(&[m, n]);
        if let Some((bs, bl)) = bias {
            let b = self.cast((bs, bl), acc)?;
            let row = Layout::new(vec![m, n], vec![0, 1], 0);
            y = self.binary(BinaryOp::Add, (&y, &flat), (&b, &row), acc)?;
        }
        if let Some(op) = activation {
            y = self.unary(op, (&y, &flat), acc)?;
        }
        if out == acc {
            Ok(y)
        } else {
            self.cast((&y, &flat), out)
        }
    }

    /// True when this backend's kernel for `op` reads its operand number
    /// `operand` of dtype `from` as if cast to `to`, fusing the cast into its
    /// loads — so a deferred cast ([`crate::Tensor::to_dtype_deferred`], what
    /// autocast makes) is handed to the kernel as its source and never
    /// computed or stored. The kernel then gets that operand in `from`, the
    /// other operands in `to`. Every other deferred cast is computed before
    /// the kernel runs, so a backend that fuses nothing (the default) never
    /// sees mixed dtypes.
    ///
    /// `op` is the op's name (`"matmul"`, `"linear"`); operands are numbered
    /// as the op takes them (`linear`: 0 input, 1 weight, 2 bias).
    fn fuses_cast(&self, op: &str, operand: usize, from: DType, to: DType) -> bool {
        let _ = (op, operand, from, to);
        false
    }

    /// One AdamW update in place, as `torch.optim.AdamW` computes it:
    ///
    /// ```text
    /// p ← p·(1 − lr·wd);  m ← m + (g − m)·(1 − β₁);  v ← v·β₂ + g²·(1 − β₂)
    /// p ← p − lr/(1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + eps)
    /// ```
    ///
    /// `param` is a whole contiguous buffer of a float dtype, updated in f32 and
    /// rounded once back; `exp_avg` and `exp_avg_sq` are whole
    /// contiguous f32 buffers of the same length; `grad` is a view with that
    /// many elements, of any float dtype. The caller checks dtypes and lengths.
    ///
    /// The provided implementation composes this backend's own kernels (one
    /// pass per arithmetic step); backends override it with one fused pass.
    fn adamw_step(
        &self,
        param: &mut Storage,
        grad: View<'_>,
        exp_avg: &mut Storage,
        exp_avg_sq: &mut Storage,
        hyper: &AdamWStep,
    ) -> Result<()> {
        composed_adamw_step(self, param, grad, exp_avg, exp_avg_sq, hyper)
    }

    /// A 2-D convolution: the NCHW input `x` (`[batch, channels, h, w]`)
    /// with `weight` (`[out_channels, channels / groups, kh, kw]`, `x`'s
    /// dtype) and `bias` (`[out_channels]`, `x`'s dtype), as NCHW `[batch,
    /// out_channels, oh, ow]` in `out` (`x`'s dtype or f32): products
    /// accumulated in f32 or better, the bias added at that precision, rounded
    /// once. `geometry` describes the windows of the whole input.
    ///
    /// `Ok(None)` (the provided implementation) means "not here": `conv2d`
    /// then gathers the windows with [`Backend::index_select`], multiplies
    /// them with `matmul`, and sums their gradients with
    /// [`Backend::scatter_add`]. A backend that answers `Some` must answer
    /// `Some` from [`Backend::conv2d_weight_grad`] and [`Backend::col2im`]
    /// for the same geometry.
    fn conv2d(
        &self,
        x: View<'_>,
        weight: View<'_>,
        bias: Option<View<'_>>,
        geometry: &Im2col,
        groups: usize,
        out: DType,
    ) -> Result<Option<Storage>> {
        let _ = (x, weight, bias, geometry, groups, out);
        Ok(None)
    }

    /// The gradient of [`Backend::conv2d`]'s weight, `[out_channels,
    /// channels / groups, kh, kw]` in `out`, from its input `x` and the
    /// gradient `grad` of its output (`[batch, out_channels, oh, ow]`, `x`'s
    /// dtype): summed over the batch in f32 or better, rounded once.
    fn conv2d_weight_grad(
        &self,
        x: View<'_>,
        grad: View<'_>,
        geometry: &Im2col,
        groups: usize,
        out: DType,
    ) -> Result<Option<Storage>> {
        let _ = (x, grad, geometry, groups, out);
        Ok(None)
    }

    /// Per-channel mean and biased variance of `x` (`[N, C, *]`) over every
    /// dimension but the channels, as two f32 `[C]` storages — accumulated
    /// in f64, the variance as the mean of squared deviations from the mean
    /// (a second pass), so a large mean with a small variance keeps its
    /// variance. For the fast dtypes (f32, bf16, f16).
    ///
    /// `Ok(None)` (the provided implementation) means "not here": batch norm
    /// is then composed of reductions and elementwise ops. A backend that
    /// answers `Some` must answer `Some` from [`Backend::channel_affine`] and
    /// [`Backend::channel_grad_sums`] for the same input.
    fn channel_moments(&self, x: View<'_>) -> Result<Option<(Storage, Storage)>> {
        let _ = x;
        Ok(None)
    }

    /// `(x − mean[c])·scale[c] + shift[c]`, plus `grad·grad_scale[c]` when
    /// `grad` is given (the same shape and dtype as `x`), for `x` `[N, C, *]`
    /// and f32 `[C]` terms: computed in f32, rounded once to `out` (batch
    /// norm's output, and its input's gradient).
    fn channel_affine(
        &self,
        x: View<'_>,
        grad: Option<View<'_>>,
        terms: &ChannelAffine<'_>,
        out: DType,
    ) -> Result<Option<Storage>> {
        let _ = (x, grad, terms, out);
        Ok(None)
    }

    /// Per-channel `Σ grad` and `Σ grad·(x − mean[c])` over `x` and `grad`
    /// (`[N, C, *]`, one dtype) with the f32 `[C]` `mean`, as two f32 `[C]`
    /// storages accumulated in f64 (batch norm's backward).
    fn channel_grad_sums(
        &self,
        x: View<'_>,
        grad: View<'_>,
        mean: View<'_>,
    ) -> Result<Option<(Storage, Storage)>> {
        let _ = (x, grad, mean);
        Ok(None)
    }

    /// The adjoint of the window gather (col2im): `cols` `[batch·oh·ow,
    /// channels·kh·kw]` — row `(b, oh, ow)`, column `(c, kh, kw)` the tap
    /// `(kh, kw)` of window `(oh, ow)` in plane `(b, c)` — summed back into
    /// NCHW `[batch, channels, h, w]`, accumulated in f32 or better and
    /// rounded once to `out` (a strided convolution's input gradient).
    fn col2im(&self, cols: View<'_>, geometry: &Im2col, out: DType) -> Result<Option<Storage>> {
        let _ = (cols, geometry, out);
        Ok(None)
    }

    /// Fused attention (a flash-attention kernel): for `problem` (see
    /// [`AttentionProblem`]) returns `Some((out, lse))` with `out` the
    /// contiguous `[N, L, Ev]` result in `q`'s dtype and `lse` the
    /// contiguous f32 `[N, L]` natural log-sum-exp of each query's scaled,
    /// biased scores (`-inf` for a fully masked row), which
    /// [`Backend::attention_backward`] takes to recompute the weights.
    ///
    /// Numerics are those of the composed op
    /// ([`crate::ops::scaled_dot_product_attention`]) up to rounding: scores
    /// and softmax in f32 (or better), the weights rounded to `q`'s dtype
    /// before their product with `v`, which accumulates in f32.
    ///
    /// `Ok(None)` (the provided implementation) means "not fused here": the
    /// op then composes the attention from this backend's other kernels. A
    /// backend may also answer `None` for the dtypes or shapes it does not
    /// cover (the CPU backend: f64 and empty problems). A backend that
    /// implements this must implement
    /// [`Backend::attention_backward`] for every problem it answers `Some`:
    /// the op records one autograd node that calls it.
    fn attention(&self, problem: &AttentionProblem<'_>) -> Result<Option<(Storage, Storage)>> {
        let _ = problem;
        Ok(None)
    }

    /// The gradients of [`Backend::attention`]: for the same `problem`, its
    /// `out` (`[N, L, Ev]`, `q`'s dtype), the gradient `grad_out` of `out`
    /// (same shape and dtype) and the f32 `lse` `[N, L]` that the forward
    /// returned, `Some((dq, dk, dv))`: contiguous `[N, L, E]`, `[N, S, E]`,
    /// `[N, S, Ev]` in `q`'s dtype, accumulated in f32 (FlashAttention-2's
    /// backward: the weights recomputed from `lse`, `D = rowsum(grad_out ∘
    /// out)`, `dS = P ∘ (dP − D)`). Fully masked rows give no gradient. No
    /// gradient is computed for the bias.
    ///
    /// `Ok(None)` (the provided implementation) means "not fused here"; a
    /// backend whose [`Backend::attention`] answered `Some` for `problem` must
    /// answer `Some` here too (the op reports an error otherwise).
    fn attention_backward(
        &self,
        problem: &AttentionProblem<'_>,
        out: View<'_>,
        grad_out: View<'_>,
        lse: View<'_>,
    ) -> Result<Option<(Storage, Storage, Storage)>> {
        let _ = (problem, out, grad_out, lse);
        Ok(None)
    }
}

/// The per-channel terms of [`Backend::channel_affine`]: f32 `[C]` views.
#[derive(Debug, Clone, Copy)]
pub struct ChannelAffine<'a> {
    /// Subtracted from `x`.
    pub mean: View<'a>,
    /// Multiplies `x − mean`.
    pub scale: View<'a>,
    /// Added.
    pub shift: View<'a>,
    /// Multiplies the gradient, when one is given.
    pub grad_scale: Option<View<'a>>,
}

/// The windows of a 2-D convolution ([`Backend::conv2d`]): `batch` NCHW
/// images of `channels` planes `plane = [h, w]`, a `kernel` with `stride`,
/// `padding` and `dilation` per direction, giving `out = [oh, ow]` positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Im2col {
    /// Images.
    pub batch: usize,
    /// Channels per image.
    pub channels: usize,
    /// `[height, width]` of each plane.
    pub plane: [usize; 2],
    /// `[height, width]` of the kernel.
    pub kernel: [usize; 2],
    /// Step between windows.
    pub stride: [usize; 2],
    /// Zeros on both sides.
    pub padding: [usize; 2],
    /// Spacing between taps.
    pub dilation: [usize; 2],
    /// Output positions `[oh, ow]`.
    pub out: [usize; 2],
}

impl Im2col {
    /// Rows of the window matrix: `batch · oh · ow`.
    pub fn rows(&self) -> usize {
        self.batch * self.out[0] * self.out[1]
    }

    /// Columns of the window matrix: `channels · kh · kw`.
    pub fn cols(&self) -> usize {
        self.channels * self.kernel[0] * self.kernel[1]
    }

    /// The input coordinate along direction `d` (0: rows, 1: columns) that
    /// output position `o` reads at kernel tap `k`, if it lies inside the plane.
    #[inline]
    pub fn source(&self, d: usize, o: usize, k: usize) -> Option<usize> {
        (o * self.stride[d] + k * self.dilation[d])
            .checked_sub(self.padding[d])
            .filter(|&c| c < self.plane[d])
    }
}

/// [`Backend::adamw_step`] composed of `backend`'s own kernels, one pass per
/// arithmetic step: the trait's default, and the fallback of fused
/// implementations for dtypes they do not cover.
pub fn composed_adamw_step<B: Backend + ?Sized>(
    backend: &B,
    param: &mut Storage,
    grad: View<'_>,
    exp_avg: &mut Storage,
    exp_avg_sq: &mut Storage,
    hyper: &AdamWStep,
) -> Result<()> {
    let n = param.len();
    let flat = Layout::contiguous(&[n]);
    let f = DType::F32;
    let affine = |x: &Storage, mul: f64, add: f64| {
        backend.unary(UnaryOp::Affine { mul, add }, (x, &flat), f)
    };
    let binary = |op, a: &Storage, b: &Storage| backend.binary(op, (a, &flat), (b, &flat), f);
    let g = backend.cast(grad, f)?;
    let p = backend.cast((param, &flat), f)?;
    let p = affine(&p, 1.0 - hyper.lr * hyper.weight_decay, 0.0)?;
    let diff = binary(BinaryOp::Sub, &g, exp_avg)?;
    let m = binary(
        BinaryOp::Add,
        exp_avg,
        &affine(&diff, 1.0 - hyper.beta1, 0.0)?,
    )?;
    let g2 = binary(BinaryOp::Mul, &g, &g)?;
    let v = binary(
        BinaryOp::Add,
        &affine(exp_avg_sq, hyper.beta2, 0.0)?,
        &affine(&g2, 1.0 - hyper.beta2, 0.0)?,
    )?;
    let denom = backend.unary(UnaryOp::Sqrt, (&v, &flat), f)?;
    let denom = affine(&denom, 1.0 / hyper.bias_correction2_sqrt(), hyper.eps)?;
    let update = binary(BinaryOp::Div, &m, &denom)?;
    let p = binary(BinaryOp::Sub, &p, &affine(&update, hyper.step_size(), 0.0)?)?;
    *param = backend.cast((&p, &flat), param.dtype())?;
    *exp_avg = m;
    *exp_avg_sq = v;
    Ok(())
}
