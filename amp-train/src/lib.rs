//! Training in mixed precision: nn modules, optimizers, data loading, the
//! training loop, checkpoints, and the `amp-train` binary.

mod error;

pub mod checkpoint;
pub mod data;
pub mod nn;
pub mod optim;

pub use error::{Error, Result};
