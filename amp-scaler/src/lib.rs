//! Dynamic loss scaling for mixed-precision training: [`GradScaler`] with
//! the semantics of PyTorch's `torch.amp.GradScaler`, plus the diagnostics
//! its users keep asking for (was this step skipped? which parameter
//! overflowed? why did my scale collapse?).
//!
//! float16 has a narrow exponent range, so small gradients underflow to zero.
//! The scaler multiplies the loss by a large factor before `backward()`, so
//! every gradient is computed scaled; [`GradScaler::step`] divides the
//! gradients back (one fused in-place pass per device/dtype group that also
//! detects inf/NaN) and skips the optimizer step when any gradient
//! overflowed; [`GradScaler::update`] backs the scale off after an overflow
//! and grows it after `growth_interval` clean iterations.
//!
//! The loop, as in the project's design (`amp-train` provides the modules and
//! optimizers; any [`Optimizer`] works):
//!
//! ```text
//! opt.zero_grad();
//! let loss = { let _region = autocast(device.kind(), dtype)?; loss_fn(&model.forward(x)?, y)? };
//! scaler.scale(&loss)?.backward()?;   // backward outside autocast
//! scaler.step(&mut opt)?;             // skipped on inf/NaN, and says so
//! scaler.update()?;                   // a disabled scaler passes through
//! ```
//!
//! A complete, runnable version on the reference device, with a small SGD:
//!
//! ```
//! use amp_scaler::{GradScaler, Optimizer, StepOutcome};
//! use amp_tensor::{ops, DType, Device, Tensor};
//!
//! /// Plain SGD over named f32 parameters (the master weights).
//! struct Sgd {
//!     params: Vec<(String, Tensor)>,
//!     lr: f64,
//! }
//!
//! impl Optimizer for Sgd {
//!     fn params(&self) -> Vec<(String, Tensor)> {
//!         self.params.clone()
//!     }
//!     fn step(&mut self) -> amp_scaler::Result<()> {
//!         let _no_grad = amp_tensor::no_grad();
//!         for (_, p) in &self.params {
//!             if let Some(g) = p.grad() {
//!                 p.assign(&p.sub(&g.mul_scalar(self.lr)?)?)?;
//!             }
//!         }
//!         Ok(())
//!     }
//!     fn zero_grad(&mut self) {
//!         for (_, p) in &self.params {
//!             p.zero_grad();
//!         }
//!     }
//! }
//!
//! let device = Device::reference();
//! let w = Tensor::randn(&[2, 4], DType::F32, &device, 0)?.mul_scalar(0.1)?;
//! w.set_requires_grad(true)?;
//! let x = Tensor::randn(&[8, 4], DType::F32, &device, 1)?;
//! let y = Tensor::randn(&[8, 2], DType::F32, &device, 2)?;
//! let mut opt = Sgd { params: vec![("weight".into(), w.clone())], lr: 0.1 };
//!
//! // f16: scale the loss. (bf16 needs no scaling: build it with `.enabled(false)`.)
//! let mut scaler = GradScaler::builder().init_scale(1024.0).growth_interval(2).build()?;
//! for _ in 0..4 {
//!     opt.zero_grad();
//!     // The forward pass in f16 (amp-autocast inserts these casts), the loss in f32.
//!     let out = ops::linear(&x.to_dtype(DType::F16)?, &w.to_dtype(DType::F16)?, None)?;
//!     let loss = ops::mse_loss(&out.to_dtype(DType::F32)?, &y, ops::Reduction::Mean)?;
//!     scaler.scale(&loss)?.backward()?;
//!     match scaler.step(&mut opt)? {
//!         StepOutcome::Stepped => {}
//!         StepOutcome::Skipped { inf_params, nan_params, ranks } => {
//!             println!("skipped: inf in {inf_params:?}, NaN in {nan_params:?} on ranks {ranks:?}")
//!         }
//!     }
//!     scaler.update()?;
//! }
//! // Four clean iterations with growth_interval 2: the scale grew twice.
//! assert_eq!((scaler.steps(), scaler.skips()), (4, 0));
//! assert_eq!(scaler.get_scale(), 4096.0);
//! assert_eq!(w.grad().unwrap().dtype(), DType::F32); // f32 master weight, f32 gradient
//!
//! // The bf16 path: a disabled scaler is a pass-through.
//! let mut bf16_scaler = GradScaler::builder().enabled(false).build()?;
//! opt.zero_grad();
//! let out = ops::linear(&x.to_dtype(DType::BF16)?, &w.to_dtype(DType::BF16)?, None)?;
//! let loss = ops::mse_loss(&out.to_dtype(DType::F32)?, &y, ops::Reduction::Mean)?;
//! let scaled = bf16_scaler.scale(&loss)?;
//! assert_eq!(scaled.id(), loss.id()); // the very same tensor
//! scaled.backward()?;
//! assert_eq!(bf16_scaler.step(&mut opt)?, StepOutcome::Stepped);
//! bf16_scaler.update()?; // no-op
//! assert_eq!(bf16_scaler.get_scale(), 1.0);
//! # Ok::<(), amp_scaler::Error>(())
//! ```
//!
//! # Choices beyond PyTorch, and where we differ
//!
//! - [`StepOutcome`] says whether the step ran, and for a skip which
//!   parameters held inf and which NaN, with counts.
//! - Optional hysteresis (back off only on the n-th overflow, as DeepSpeed),
//!   `min_scale`/`max_scale`, counters (steps, skips, consecutive skips), and
//!   `max_consecutive_skips`, which makes [`GradScaler::update`] return
//!   [`Error::Diverged`] instead of letting a diverged run spin.
//! - [`FoundInfReduce`]: the hook that combines found-inf across
//!   data-parallel replicas (one sum over the ranks that carries each rank's
//!   flag and every parameter's counts, so every replica skips together and
//!   its [`StepOutcome`] names the ranks and parameters that overflowed);
//!   [`SingleProcess`] by default, amp-dist's process groups for MPI/NCCL.
//! - The scale never backs off below [`SCALE_FLOOR`] (2⁻¹²⁶, the smallest
//!   normal f32), and the fused unscale counts the infs and NaNs of the
//!   *unscaled* values: PyTorch's scale can underflow to 0 in an overflow
//!   storm, after which `1/scale` is inf and a finite step writes inf/NaN into
//!   every weight while reporting success. Here a step is never taken on
//!   gradients that are not finite after unscaling.
//! - Optimizers are identified by their parameters' tensor identities, not by
//!   address (see [`Optimizer`]).
//! - Misuse that PyTorch reports with an exception or assertion is an `Err`
//!   carrying PyTorch's message; invalid settings are an `Err` when built.
//! - `step` reads the found-inf flags on the host (PyTorch's `step` also
//!   synchronises, through `.item()`).
//! - [`clip_grad_norm`] is `torch.nn.utils.clip_grad_norm_`, for clipping
//!   between `unscale` and `step`.

mod clip;
mod error;
mod optimizer;
mod outcome;
mod replica;
mod scaler;
mod unscale;

pub use clip::clip_grad_norm;
pub use error::{Error, Result};
pub use optimizer::Optimizer;
pub use outcome::StepOutcome;
pub use replica::{FoundInfReduce, SingleProcess};
pub use scaler::{GradScaler, GradScalerBuilder, ScalerState, SCALE_FLOOR};
