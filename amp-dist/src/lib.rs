//! Data-parallel mixed-precision training for amp, on proven collective
//! engines: **MPI** for CPU tensors (`MpiGroup`, feature `mpi`, over the
//! system's MPI library such as Open MPI) and **NCCL** for CUDA tensors
//! (`NcclGroup`, feature `nccl`, its unique id broadcast over MPI). Without
//! features the crate has the [`ProcessGroup`] abstraction, the
//! [`SingleProcessGroup`] and the data-parallel logic, and needs no system
//! library.
//!
//! What a data-parallel job needs from an AMP library, and what this crate
//! gives:
//!
//! - **The same start**: [`DistributedDataParallel::new`] checks that every
//!   rank holds the same parameters and copies rank 0's values to all.
//! - **The same gradients**: after `backward`, every gradient is the mean
//!   over the ranks, reduced in buckets (25 MiB, the first 1 MiB, as PyTorch's
//!   DDP) whose all-reduces start from the backward pass as soon as their
//!   gradients are final.
//! - **The same step decision**: [`ScalerReduce`] makes the `GradScaler`
//!   combine its overflow check over the ranks before it decides to skip, so
//!   every rank skips or steps together and holds the same scale; the
//!   `StepOutcome` names the ranks and parameters that overflowed.
//!   [`check_scalers_agree`] and
//!   [`DistributedDataParallel::check_parameters_agree`] verify it.
//! - **No hang**: every MPI collective has a deadline; a rank that died makes
//!   the others fail with [`Error::Timeout`] (and `mpirun` ends the job).
//!
//! The loop (amp-train's `Trainer` runs it with `--distributed`):
//!
//! ```text
//! let group: Arc<dyn ProcessGroup> = Arc::new(MpiGroup::init("my-program")?);
//! let ddp = DistributedDataParallel::new(group.clone(), model.named_parameters(), DdpConfig::default())?;
//! let mut scaler = GradScaler::builder().found_inf_reduce(Arc::new(ScalerReduce::new(group.clone()))).build()?;
//! for batch in loader.shard(group.rank(), group.world_size()).iter() {
//!     opt.zero_grad();
//!     let loss = { let _region = autocast(...)?; loss_fn(&model.forward(x)?, y)? };
//!     scaler.scale(&loss)?.backward()?;   // buckets start reducing during backward
//!     ddp.synchronize()?;                 // gradients = mean over ranks
//!     scaler.step(&mut opt)?;             // every rank steps or skips together
//!     scaler.update()?;
//! }
//! ```
//!
//! A runnable example on the single-process group:
//!
//! ```
//! use amp_dist::{DdpConfig, DistributedDataParallel, ProcessGroup, SingleProcessGroup};
//! use amp_tensor::{DType, Device, Tensor};
//! use std::sync::Arc;
//!
//! let device = Device::reference();
//! let w = Tensor::randn(&[3, 2], DType::F32, &device, 0)?;
//! w.set_requires_grad(true)?;
//! let group: Arc<dyn ProcessGroup> = Arc::new(SingleProcessGroup);
//! let ddp = DistributedDataParallel::new(group, vec![("w".into(), w.clone())], DdpConfig::default())?;
//! w.mul(&w)?.sum_all()?.backward()?;
//! ddp.synchronize()?;
//! assert_eq!(w.grad().unwrap().to_f64_vec()?, w.mul_scalar(2.0)?.to_f64_vec()?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod cost;
mod ddp;
mod error;
mod group;
mod launch;
#[cfg(feature = "mpi")]
mod mpi;
#[cfg(feature = "nccl")]
mod nccl;
mod scaler;

pub use ddp::{DdpConfig, DistributedDataParallel};
pub use error::{Error, Result};
pub use group::{ProcessGroup, ReduceOp, SingleProcessGroup, Work};
pub use launch::Launch;
#[cfg(feature = "mpi")]
pub use mpi::{MpiGroup, DEFAULT_TIMEOUT};
#[cfg(feature = "nccl")]
pub use nccl::NcclGroup;
pub use scaler::{check_scalers_agree, ScalerReduce};
