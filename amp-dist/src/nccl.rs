//! [`NcclGroup`]: a [`ProcessGroup`] whose CUDA tensors travel over NCCL,
//! and everything else (host values, CPU tensors, the unique id) over MPI.
//!
//! Rank 0 creates NCCL's unique id and sends it to the others over MPI; each
//! rank then joins the communicator on its CUDA device (`cuda:<local rank>`
//! by default). NCCL's collectives are enqueued on the device backend's one
//! stream, so they are ordered with the kernels around them and overlap the
//! host: a bucket's all-reduce started from the backward pass runs while the
//! host enqueues the rest of it.
//!
//! The MPI collectives keep their timeout; a hung NCCL collective shows up
//! at the next host synchronisation (a `.to_vec()`, the scaler's check),
//! which then blocks — NCCL's own watchdog (`NCCL_TIMEOUT`-style abort)
//! is not wired in yet.

use crate::group::{check_reducible, ProcessGroup, ReduceOp, Work};
use crate::mpi::MpiGroup;
use crate::{Error, Launch, Result};
use amp_cuda::nccl::{nccl_unique_id, NcclComm, NcclOp};
use amp_tensor::{Device, DeviceKind, Tensor};
use std::fmt;
use std::time::Duration;

/// A [`ProcessGroup`] whose CUDA tensors travel over NCCL, on the device
/// backend's stream (ordered with the kernels around them, overlapping the
/// host), and everything else — host values, CPU tensors, NCCL's unique id —
/// over MPI. MPI collectives keep their timeout; a hung NCCL collective shows
/// at the next host synchronisation, which then blocks (NCCL's watchdog is
/// not wired in yet).
pub struct NcclGroup {
    mpi: MpiGroup,
    comm: NcclComm,
}

impl fmt::Debug for NcclGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NcclGroup")
            .field("rank", &self.comm.rank())
            .field("world_size", &self.comm.world_size())
            .field("device", &self.comm.device().to_string())
            .finish()
    }
}

/// A collective already enqueued on the device's stream.
struct Enqueued(Tensor);

impl Work for Enqueued {
    fn wait(self: Box<Self>) -> Result<Tensor> {
        Ok(self.0)
    }
}

fn nccl_op(op: ReduceOp) -> NcclOp {
    match op {
        ReduceOp::Sum => NcclOp::Sum,
        ReduceOp::Avg => NcclOp::Avg,
        ReduceOp::Max => NcclOp::Max,
        ReduceOp::Min => NcclOp::Min,
    }
}

impl NcclGroup {
    /// Joins the MPI job `mpirun` started (as [`MpiGroup::init_with_timeout`])
    /// and an NCCL communicator on `device` (a CUDA device; `None`:
    /// `cuda:<local rank>`).
    pub fn init(program: &str, device: Option<&Device>, timeout: Duration) -> Result<NcclGroup> {
        let mpi = MpiGroup::init_with_timeout(program, timeout)?;
        let device = match device {
            Some(d) => d.clone(),
            None => {
                let local = Launch::from_env().map_or(0, |l| l.local_rank);
                amp_cuda::device(local)
                    .map_err(|e| Error::Launch(format!("rank {}: {e}", mpi.rank())))?
            }
        };
        if device.kind() != DeviceKind::Cuda {
            return Err(Error::Launch(format!(
                "NCCL needs a CUDA device, got {device}"
            )));
        }
        // Rank 0's id, to every rank: a sum in which only rank 0 contributes
        // (bytes, exact in f64).
        let mut id = [0f64; 128];
        if mpi.rank() == 0 {
            for (v, b) in id.iter_mut().zip(nccl_unique_id()?) {
                *v = f64::from(b);
            }
        }
        mpi.all_reduce_f64(&mut id, ReduceOp::Sum)?;
        let mut bytes = [0u8; 128];
        for (b, v) in bytes.iter_mut().zip(id) {
            *b = v as u8;
        }
        let comm = NcclComm::new(&device, mpi.rank(), mpi.world_size(), &bytes)?;
        Ok(NcclGroup { mpi, comm })
    }

    /// The CUDA device this rank's communicator runs on.
    pub fn device(&self) -> &Device {
        self.comm.device()
    }
}

impl ProcessGroup for NcclGroup {
    fn rank(&self) -> usize {
        self.comm.rank()
    }

    fn world_size(&self) -> usize {
        self.comm.world_size()
    }

    fn backend(&self) -> &'static str {
        "nccl"
    }

    fn start_all_reduce(&self, tensor: &Tensor, op: ReduceOp) -> Result<Box<dyn Work>> {
        check_reducible("all_reduce", tensor)?;
        if tensor.device().kind() != DeviceKind::Cuda {
            return self.mpi.start_all_reduce(tensor, op);
        }
        Ok(Box::new(Enqueued(
            self.comm.all_reduce(tensor, nccl_op(op))?,
        )))
    }

    fn broadcast(&self, tensor: &Tensor, root: usize) -> Result<Tensor> {
        crate::group::check_root(self, "broadcast", root)?;
        check_reducible("broadcast", tensor)?;
        if tensor.device().kind() != DeviceKind::Cuda {
            return self.mpi.broadcast(tensor, root);
        }
        Ok(self.comm.broadcast(tensor, root)?)
    }

    fn all_reduce_f64(&self, values: &mut [f64], op: ReduceOp) -> Result<()> {
        self.mpi.all_reduce_f64(values, op)
    }

    fn barrier(&self) -> Result<()> {
        self.mpi.barrier()
    }

    fn abort(&self, code: i32) -> ! {
        self.mpi.abort(code)
    }
}
