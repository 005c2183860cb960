//! # amp — automatic mixed-precision training for Rust
//!
//! What `torch.amp` (`autocast` + `GradScaler`) gives PyTorch users: the
//! forward pass and the loss in bf16 or f16 where that is safe, f32 where
//! precision matters (softmax, norms, losses, reductions), the loss scaled so
//! f16 gradients do not underflow, steps whose gradients overflowed skipped,
//! and f32 master weights. This crate is the one dependency: it re-exports the
//! layered crates (`amp-dtype`, `amp-tensor`, `amp-cpu`, `amp-cuda`,
//! `amp-autocast`, `amp-scaler`, `amp-dist`, `amp-train`) under one roof, with a
//! [`prelude`] and one [`Error`] that every crate's error converts into.
//!
//! ```
//! use amp::prelude::*;
//!
//! fn main() -> amp::Result<()> {
//!     amp::manual_seed(0);
//!     let device = Device::cpu();
//!     let dtype = if device.is_bf16_supported() { DType::BF16 } else { DType::F16 };
//!
//!     let model = nn::Linear::new(10, 2, &device)?; // f32 master weights
//!     let x = Tensor::randn(&[40, 10], DType::F32, &device, 1)?;
//!     let y = Tensor::randint(0, 2, &[40], &device, 2)?;
//!     let loader = data::DataLoader::new(data::TensorDataset::new(vec![x, y])?, 8).pairs()?;
//!
//!     let mut opt = optim::AdamW::new(model.named_parameters(), optim::AdamWConfig::default());
//!     let mut scaler = GradScaler::builder().enabled(dtype == DType::F16).build()?;
//!     for batch in loader.iter() {
//!         let (x, y) = batch?;
//!         opt.zero_grad();
//!         let loss = {
//!             let _region = autocast(device.kind(), dtype)?; // forward and loss only
//!             ops::cross_entropy(&model.forward(&x)?, &y)?
//!         };
//!         scaler.scale(&loss)?.backward()?;
//!         scaler.step(&mut opt)?;
//!         scaler.update()?;
//!     }
//!     Ok(())
//! }
//! ```
//!
//! Where things live: tensors, devices and ops ([`Tensor`], [`Device`],
//! [`ops`]); autocast regions ([`autocast`], [`Autocast`]); loss scaling
//! ([`GradScaler`]); modules, optimizers, data, checkpoints and the reusable
//! trainer ([`nn`], [`optim`], [`data`], [`checkpoint`], [`train`]);
//! data-parallel training over MPI and NCCL ([`dist`], features `mpi` and
//! `nccl`).

#![doc = include_str!("../docs/cargo.md")]

mod device;
mod error;

pub use device::DeviceExt;
pub use error::{Error, Result};

pub use amp_autocast::{autocast, Autocast};
pub use amp_dtype::{bf16, f16};
pub use amp_scaler::{clip_grad_norm, GradScaler, StepOutcome};
pub use amp_tensor::{no_grad, ops, DType, Device, DeviceKind, Layout, Tensor};
pub use amp_train::{checkpoint, data, dist, nn, optim, train, Precision};
/// JSON for a checkpoint's extra state: `amp::json!({"epoch": 3})`.
pub use serde_json::{self, json};

/// Seeds the process-wide generator that constructors without a seed
/// argument draw from (`torch.manual_seed`): `nn::Linear::new(10, 2,
/// &device)` then gives the same weights in every run that builds its model
/// in the same order. See [`amp_tensor::random`].
pub fn manual_seed(seed: u64) {
    amp_tensor::random::manual_seed(seed)
}

/// Everything a training program uses: `use amp::prelude::*;`.
pub mod prelude {
    pub use crate::nn::{self, Module};
    pub use crate::optim::{self, Optimizer};
    pub use crate::{
        autocast, clip_grad_norm, data, no_grad, ops, train, Autocast, DType, Device, DeviceExt,
        GradScaler, Precision, StepOutcome, Tensor,
    };
}
