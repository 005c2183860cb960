//! Training in mixed precision: nn modules, optimizers, data loading, the
//! training loop, checkpoints, and the `amp-train` binary.

mod device;
mod error;
mod precision;

pub mod checkpoint;
pub mod data;
pub mod nn;
pub mod optim;
pub mod train;

pub use device::{best_device, cuda_device, DeviceSpec};
pub use error::{Error, Result};
pub use precision::{Precision, PrecisionChoice};
pub mod demo;
pub mod plot;
