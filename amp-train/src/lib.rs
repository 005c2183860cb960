//! Training in mixed precision: nn modules ([`nn`]), optimizers with f32
//! master weights ([`optim`]), data loading ([`data`]), the training loop
//! ([`train`]), checkpoints ([`checkpoint`]), and the `amp-train` binary.
//!
//! The mission's loop, as a user writes it (here on the reference device and
//! for two epochs; [`demo::mission_loop`] is the full version, which
//! `amp-train demo` and `examples/train_loop.rs` run on [`best_device`]):
//!
//! ```
//! use amp_autocast::autocast;
//! use amp_dtype::DType;
//! use amp_scaler::GradScaler;
//! use amp_tensor::{ops, Device, Tensor};
//! use amp_train::data::{DataLoader, TensorDataset};
//! use amp_train::nn::{Linear, Module};
//! use amp_train::optim::{AdamW, AdamWConfig};
//!
//! let device = Device::reference();
//! let dtype = if device.is_bf16_supported() { DType::BF16 } else { DType::F16 };
//! println!("dtype is {dtype}");
//!
//! amp_tensor::random::manual_seed(0); // torch.manual_seed(0)
//! let model = Linear::new(10, 2, &device)?; // f32 master weights
//! let x = Tensor::randn(&[40, 10], DType::F32, &device, 1)?;
//! let y = Tensor::randint(0, 2, &[40], &device, 2)?; // I64 class labels
//! let loader = DataLoader::new(TensorDataset::new(vec![x, y])?, 2).shuffle(3).pairs()?;
//!
//! let mut opt = AdamW::new(model.named_parameters(), AdamWConfig { lr: 1e-3, ..Default::default() });
//! let mut scaler = GradScaler::builder().enabled(dtype == DType::F16).build()?;
//!
//! for epoch in 0..2 {
//!     for batch in loader.iter() {
//!         let (x, y) = batch?;
//!         opt.zero_grad();
//!         let loss = {
//!             let _region = autocast(device.kind(), dtype)?; // forward and loss only
//!             ops::cross_entropy(&model.forward(&x)?, &y)?
//!         }; // the region closes here
//!         scaler.scale(&loss)?.backward()?; // backward outside autocast
//!         scaler.step(&mut opt)?; // skipped on inf/NaN, and says so
//!         scaler.update()?; // a disabled scaler passes through
//!     }
//!     println!("Epoch {epoch} finished");
//! }
//! assert_eq!(model.weight().grad().unwrap().dtype(), DType::F32); // f32 gradients
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The same loop for any model, data set, loss and optimizer, with a
//! report, checkpoints and resume, divergence stops, metrics and a progress
//! bar, is [`train::Trainer`]. The digits run is one caller of it
//! ([`train::train`]); the binary (`cargo run --release -p amp-train`) wraps
//! that with flags, a `--metrics` JSON and a `--plot` SVG. [`Precision::Auto`] measures on a
//! CPU ([`ProductTimes`], [`choose_by_speed`]: the fastest of f32, bf16 and f16,
//! a low precision only when clearly faster); on CUDA it is bf16 where
//! `device.is_bf16_supported()`, else f16 with a `GradScaler`.

mod device;
mod error;
mod json;
mod precision;

pub mod checkpoint;
pub mod data;
pub mod nn;
pub mod optim;
#[cfg(feature = "cli")]
pub mod output;
pub mod train;

/// Data-parallel training (the amp-dist crate): process groups, DDP, the scaler across ranks.
pub use amp_dist as dist;
pub use device::{best_device, cuda_device, DeviceSpec};
pub use error::{Error, Result};
pub use precision::{choose_by_speed, Precision, PrecisionChoice, ProductTimes, AUTO_MARGIN};
pub mod demo;
#[cfg(feature = "cli")]
pub mod plot;
