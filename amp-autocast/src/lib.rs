//! Automatic mixed precision for `amp`, as `torch.autocast`: inside a region,
//! every op is looked up in a **policy** and its floating inputs are cast to
//! the region's low-precision dtype where that is stable (matmul, linear) or
//! kept in f32 where precision matters (softmax, layer norm, losses on
//! CUDA), without rewriting the model.
//!
//! PyTorch's
//!
//! ```python
//! with autocast(device_type='cuda', dtype=torch.float16):
//!     output = model(input)
//!     loss = loss_fn(output, target)
//! ```
//!
//! reads in Rust (here on the reference device, whose kind is CPU; on a CUDA
//! device `device.kind()` is `DeviceKind::Cuda` and the CUDA table applies):
//!
//! ```
//! use amp_autocast::autocast;
//! use amp_tensor::ops::{self, Reduction};
//! use amp_tensor::{DType, Device, Tensor};
//!
//! let device = Device::reference();
//! let weight = Tensor::randn(&[2, 10], DType::F32, &device, 0)?; // f32 master weights
//! let bias = Tensor::zeros(&[2], DType::F32, &device)?;
//! weight.set_requires_grad(true)?;
//! bias.set_requires_grad(true)?;
//! let model = |x: &Tensor| ops::linear(x, &weight, Some(&bias));
//! let input = Tensor::randn(&[4, 10], DType::F32, &device, 1)?;
//! let target = Tensor::randn(&[4, 2], DType::F32, &device, 2)?;
//!
//! let (output, loss) = {
//!     let _region = autocast(device.kind(), DType::F16)?;
//!     let output = model(&input)?;
//!     let loss = ops::mse_loss(&output, &target, Reduction::Mean)?;
//!     (output, loss)
//! }; // the region closes here; backward runs outside it
//! assert_eq!(output.dtype(), DType::F16); // linear: lower precision
//! assert_eq!(loss.dtype(), DType::F32); // mse_loss: f32
//! loss.backward()?;
//! assert_eq!(weight.grad().unwrap().dtype(), DType::F32); // f32 gradients for f32 weights
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Regions
//!
//! [`autocast`]`(kind, dtype)` opens an enabled region; [`Autocast`] is the
//! builder for the rest (`.dtype(..).enabled(..).cache(..).policy(..)
//! .rule(op, rule).device(&device).enter()`). Regions are per thread and
//! nest: dropping the guard (also during a panic unwind) restores the
//! enclosing state. Options left unset are inherited from the enclosing
//! region of the same kind, else default as in PyTorch (CPU → bf16, CUDA →
//! f16, cache on). `Autocast::new(kind).enabled(false).enter()` opens an f32
//! island; [`float32`] and [`run_in_f32`] are its closure forms, the latter
//! casting the function's floating inputs to f32 first (as PyTorch's
//! `custom_fwd(cast_inputs=torch.float32)`). [`is_enabled`] and
//! [`current_dtype`] read the state.
//!
//! The dtype must be f16 or bf16 ([`Error::NotLowPrecision`]); given a device
//! with `.device(&device)`, bf16 on a CUDA device without native bf16 is
//! [`Error::UnsupportedDType`] — an error, never a silent disable.
//!
//! # Which inputs are cast
//!
//! Exactly PyTorch's eligibility: floating tensors on the region's device
//! kind that are not f64. Integer, bool and f64 tensors, and tensors on
//! another kind, pass untouched. A [`CastRule::LowerPrecision`] op that gets
//! an f64 input together with inputs it casts is an `Err` naming the op and
//! the dtypes (PyTorch fails inside the kernel on the dtype mismatch).
//! [`CastRule::Promote`] casts the eligible inputs to their widest dtype by
//! [`amp_dtype::DType::promote`] (PyTorch errors on f16 mixed with bf16; here
//! they meet in f32, as `torch.promote_types` says). Ops called inside another
//! op, and backward passes, are not intercepted: casts happen once, at the
//! outermost op, through the differentiable [`amp_tensor::Tensor::to_dtype`],
//! so f32 parameters receive f32 gradients.
//!
//! # The cast cache
//!
//! Casts to the region's dtype of f32 leaf tensors that require grad, made
//! while grad mode is on and the region's cache is enabled, are cached by
//! tensor identity (id and target dtype) until the thread's outermost region
//! closes, so each weight is cast once per forward. Casts made under
//! `no_grad` are never cached: they carry no autograd history, and a later
//! forward that needs gradients must not reuse them (PyTorch bug #158232).
//! [`cache_len`] shows the cache's size; [`stats`] counts casts, cache hits,
//! and ops per rule and per precision.
//!
//! # Deferred casts: weights are not held twice (beyond PyTorch)
//!
//! Every cast autocast makes is a *deferred* cast
//! ([`amp_tensor::Tensor::to_dtype_deferred`]): a tensor of the region's dtype
//! whose elements are computed when first read. What the user sees is
//! PyTorch's: the op's output dtype, the values (the cast rounds to nearest
//! even exactly as an eager cast), and autograd (an ordinary cast, op `"to"`).
//! What changes is memory and passes: a backend whose kernel reads the source
//! as cast ([`amp_tensor::backend::Backend::fuses_cast`] — the CPU backend's products
//! read an f32 weight and bias as bf16/f16 while packing them) is handed the
//! f32 source, so the low-precision copy of a weight is never made, and the
//! cast cache holds nothing but the deferred handle: per weight, no 2 bytes
//! per element for bf16/f16 (a 4096×4096 layer: 32 MiB not allocated). On
//! other backends (CUDA, the reference) the copy is computed once, on first
//! read, and cached as before.
//!
//! Gradients: a cast's backward widens its gradient back to f32 at once, so
//! ops compute the gradient of a narrowing cast's output directly in the
//! source's dtype ([`amp_tensor::Tensor::grad_dtype`]): `linear` and `matmul`
//! give f32 weights and biases their gradient straight from the f32
//! accumulation. PyTorch rounds that gradient to bf16/f16 before casting it
//! back: rounded to bf16/f16 ours equal PyTorch's; unrounded they are closer
//! to the exact gradient, and one rounding pass is saved.
//!
//! # The policy
//!
//! [`Policy::pytorch`] holds PyTorch 2.x's lists from
//! `aten/src/ATen/autocast_mode.cpp` (every ATen name in them, so a custom op
//! dispatched as `"bmm"` or `"cumsum"` gets PyTorch's rule) and a rule for
//! every op of this project. Users register rules for their own op names
//! process-wide with [`register_op_rule`], override rules per region with
//! [`Autocast::rule`] or [`Autocast::policy`], and write policies as strings
//! (`"cuda: matmul=lower, softmax=f32"`, see [`Policy`]); a bad string is a
//! [`PolicyParseError`] with the column and text of the bad token.
//!
//! The project's ops (`lower` = region dtype, `f32`, `promote`, `passthrough`):
//!
//! | op | CUDA | CPU | from PyTorch's lists |
//! |----|------|-----|----------------------|
//! | `matmul` | lower | lower | `lower_precision_fp` on both |
//! | `linear` | lower | lower | `lower_precision_fp` on both |
//! | `bmm` | lower | lower | `lower_precision_fp` on both |
//! | `baddbmm` | lower | lower | `lower_precision_fp` on both |
//! | `scaled_dot_product_attention` | lower | lower | `lower_precision_fp` on both |
//! | `conv1d` | lower | lower | `lower_precision_fp` on both |
//! | `conv2d` | lower | lower | `lower_precision_fp` on both |
//! | `batch_norm` | passthrough | passthrough | not listed (a bf16/f16 input takes f32 parameters) |
//! | `group_norm` | f32 | passthrough | CUDA `fp32` (not in the CPU list) |
//! | `max_pool2d` | passthrough | passthrough | not listed |
//! | `avg_pool2d` | passthrough | passthrough | not listed |
//! | `adaptive_avg_pool2d` | passthrough | passthrough | not listed |
//! | `add` | passthrough | passthrough | not listed |
//! | `sub` | passthrough | passthrough | not listed |
//! | `mul` | passthrough | passthrough | not listed |
//! | `div` | passthrough | passthrough | not listed |
//! | `maximum` | passthrough | passthrough | not listed |
//! | `minimum` | passthrough | passthrough | not listed |
//! | `eq` | passthrough | passthrough | not listed |
//! | `gt` | passthrough | passthrough | not listed |
//! | `lt` | passthrough | passthrough | not listed |
//! | `neg` | passthrough | passthrough | not listed |
//! | `exp` | f32 | passthrough | CUDA `fp32` |
//! | `log` | f32 | passthrough | CUDA `fp32` |
//! | `sqrt` | passthrough | passthrough | not listed |
//! | `rsqrt` | f32 | passthrough | CUDA `fp32` |
//! | `pow` | f32 | passthrough | CUDA `fp32` |
//! | `abs` | passthrough | passthrough | not listed |
//! | `sign` | passthrough | passthrough | not listed |
//! | `reciprocal` | f32 | passthrough | CUDA `fp32` |
//! | `relu` | passthrough | passthrough | not listed |
//! | `gelu` | passthrough | passthrough | not listed |
//! | `tanh` | passthrough | passthrough | not listed |
//! | `sigmoid` | passthrough | passthrough | not listed |
//! | `silu` | passthrough | passthrough | not listed |
//! | `erf` | passthrough | passthrough | not listed |
//! | `affine` | passthrough | passthrough | scalar `x * a + b`, no ATen autocast entry |
//! | `to` | passthrough | passthrough | casts are never recast |
//! | `where` | passthrough | passthrough | not listed |
//! | `masked_fill` | passthrough | passthrough | not listed |
//! | `sum` | f32 | passthrough | CUDA `fp32_set_opt_dtype` |
//! | `mean` | passthrough | passthrough | not listed |
//! | `max` | passthrough | passthrough | not listed |
//! | `argmax` | passthrough | passthrough | not listed |
//! | `softmax` | f32 | passthrough | CUDA `fp32_set_opt_dtype` |
//! | `log_softmax` | f32 | passthrough | CUDA `fp32_set_opt_dtype` |
//! | `layer_norm` | f32 | passthrough | CUDA `fp32` (not in the CPU list) |
//! | `gather` | passthrough | passthrough | not listed |
//! | `index_select` | passthrough | passthrough | not listed |
//! | `embedding` | passthrough | passthrough | not listed |
//! | `nll_loss` | f32 | f32 | `fp32` on both |
//! | `cross_entropy` | f32 | f32 | CPU `fp32` (`cross_entropy_loss`); on CUDA composed of `log_softmax` and `nll_loss`, both f32 |
//! | `mse_loss` | f32 | f32 | `fp32` on both |
//! | `dropout` | passthrough | passthrough | not listed |
//! | `cat` | passthrough | promote | CPU `promote`; CUDA `cat` type-promotes natively and is not listed |
//! | `stack` | passthrough | promote | CPU `promote`; CUDA `stack` type-promotes natively and is not listed |
//!
//! PyTorch's `fp32_set_opt_dtype` and `fp32_append_dtype` ops (softmax,
//! log_softmax, sum, cumsum, prod, norm, …) run in f32 by passing
//! `dtype=float32`; here they are [`CastRule::Float32`], with the same result.

mod cache;
mod cast;
mod error;
mod policy;
mod pytorch;
mod region;
mod rule;
mod stats;

pub use cache::cache_len;
pub use error::{Error, PolicyParseError, Result};
pub use policy::{default_policy, register_op_rule, reset_default_policy, Policy};
pub use region::{
    autocast, current_dtype, current_policy, default_dtype, float32, is_cache_enabled, is_enabled,
    nesting_depth, run_in_f32, Autocast, AutocastGuard,
};
pub use rule::CastRule;
pub use stats::{reset_stats, stats, AutocastStats};
