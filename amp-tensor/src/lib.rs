//! Tensors with autograd, devices, the [`Backend`](backend::Backend) trait, the f64 reference
//! backend, and op dispatch — the core of `amp`.
//!
//! Every op is named as in PyTorch and passes through [`dispatch()`](dispatch::dispatch), where
//! an [`Interceptor`](dispatch::Interceptor) (amp-autocast's region) may recast its inputs before
//! the backend kernel runs and the autograd node is recorded.
//!
//! ```
//! use amp_tensor::{ops, DType, Device, Tensor};
//!
//! let device = Device::reference();
//! let w = Tensor::randn(&[3, 4], DType::F32, &device, 0)?;
//! w.set_requires_grad(true)?;
//! let x = Tensor::randn(&[2, 4], DType::F32, &device, 1)?;
//! let y = Tensor::from_vec(vec![0i64, 2], &[2], &device)?;
//!
//! // Forward in bf16 (the cast is differentiable), loss in f32.
//! let logits = ops::linear(&x.to_dtype(DType::BF16)?, &w.to_dtype(DType::BF16)?, None)?;
//! let loss = ops::cross_entropy(&logits.to_dtype(DType::F32)?, &y)?;
//! loss.backward()?;
//!
//! // The f32 parameter receives an f32 gradient.
//! assert_eq!(w.grad().unwrap().dtype(), DType::F32);
//! # Ok::<(), amp_tensor::Error>(())
//! ```

//! # Non-finite values
//!
//! Every backend gives PyTorch's answers where inf and NaN meet an op:
//! elementwise ops follow IEEE 754; `max`/`min` (elementwise and reductions)
//! propagate NaN; `softmax` and `log_softmax` shift each row by its maximum as
//! it is, so a row holding NaN or `+inf`, or a row that is all `-inf` (fully
//! masked), is NaN throughout, while `-inf` entries beside finite ones are
//! zeros; `cross_entropy` of a row with a `+inf` or NaN logit is NaN; a mean
//! over nothing is NaN. The fused unscale counts the infs and NaNs of the
//! values it writes ([`Backend::non_finite_check_and_unscale`](backend::Backend::non_finite_check_and_unscale)).
//!
//! # Sizes
//!
//! Element counts are computed with checked arithmetic: a shape whose count
//! overflows is [`Error::ShapeOverflow`], a buffer larger than the machine
//! (memory plus swap) or than one allocation may be is [`Error::OutOfMemory`]
//! — never a wrapped count, a panic or an abort ([`memory`]).

mod autograd;
pub mod backend;
mod device;
pub mod dispatch;
mod error;
pub mod layout;
pub mod memory;
pub mod ops;
pub mod random;
pub mod reference;
mod storage;
mod tensor;

pub use amp_dtype::{self, bf16, f16, DType, Element};
pub use autograd::{is_grad_enabled, no_grad, NoGradGuard};
pub use backend::DeviceKind;
pub use device::Device;
pub use error::{Error, Result};
pub use layout::Layout;
pub use tensor::{GradHook, GradHookId, Tensor};
