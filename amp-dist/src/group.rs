//! [`ProcessGroup`]: the collectives a data-parallel job needs, whatever
//! engine runs them (MPI for CPU tensors, NCCL for CUDA tensors).

use crate::{Error, Result};
use amp_tensor::{DType, Tensor};
use std::fmt;

/// How a collective combines the ranks' values, element-wise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    /// The sum over ranks.
    Sum,
    /// The mean over ranks (the sum times `1 / world_size`, as PyTorch's `ReduceOp.AVG`).
    Avg,
    /// The maximum over ranks.
    Max,
    /// The minimum over ranks.
    Min,
}

/// A collective in flight ([`ProcessGroup::start_all_reduce`]).
pub trait Work: Send {
    /// Lets the collective make progress without blocking (engines such as
    /// Open MPI's shared-memory and TCP transports advance a non-blocking
    /// collective only inside MPI calls); the data-parallel wrapper calls it
    /// from the backward pass. The default does nothing.
    fn progress(&mut self) -> Result<()> {
        Ok(())
    }

    /// Blocks until the collective has completed (or its timeout passed) and
    /// returns the reduced tensor.
    fn wait(self: Box<Self>) -> Result<Tensor>;
}

/// A set of processes (ranks) that run the same program and exchange tensors
/// with collectives. Every rank must call the same collectives in the same
/// order with operands of the same shape and dtype; a collective that cannot
/// complete (a rank died or runs different code) is an [`Error::Timeout`]
/// after the group's timeout rather than a hang.
pub trait ProcessGroup: Send + Sync + fmt::Debug {
    /// This process's rank, `0..world_size()`.
    fn rank(&self) -> usize;

    /// The number of ranks.
    fn world_size(&self) -> usize;

    /// The engine: `"mpi"`, `"nccl"` or `"single"`.
    fn backend(&self) -> &'static str;

    /// Starts reducing `tensor` (f32 or f64, any layout, on a device the
    /// group serves) element-wise over all ranks; [`Work::wait`] returns the
    /// result, a new contiguous tensor of the same shape, dtype and device.
    /// Other work (the rest of a backward pass) may run meanwhile.
    fn start_all_reduce(&self, tensor: &Tensor, op: ReduceOp) -> Result<Box<dyn Work>>;

    /// `tensor` as held by rank `root`, on every rank (a new tensor of the
    /// same shape, dtype and device).
    fn broadcast(&self, tensor: &Tensor, root: usize) -> Result<Tensor>;

    /// Reduces host values element-wise over all ranks, in place (flags,
    /// counts and checks; exact for integers below 2⁵³).
    fn all_reduce_f64(&self, values: &mut [f64], op: ReduceOp) -> Result<()>;

    /// Returns once every rank has called it.
    fn barrier(&self) -> Result<()>;

    /// Ends this process, and with it the job, with exit status `code`:
    /// what a rank does after an error that would leave the others waiting
    /// in a collective (MPI: `MPI_Abort`, which ends every rank).
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }

    /// [`start_all_reduce`](Self::start_all_reduce) and wait.
    fn all_reduce(&self, tensor: &Tensor, op: ReduceOp) -> Result<Tensor> {
        self.start_all_reduce(tensor, op)?.wait()
    }
}

/// The group of one process: every collective returns its input. What a
/// program gets when it is not launched by `mpirun`; it lets the same
/// training code run with or without data parallelism.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SingleProcessGroup;

/// A collective that completed when it started.
struct Done(Tensor);

impl Work for Done {
    fn wait(self: Box<Self>) -> Result<Tensor> {
        Ok(self.0)
    }
}

impl ProcessGroup for SingleProcessGroup {
    fn rank(&self) -> usize {
        0
    }

    fn world_size(&self) -> usize {
        1
    }

    fn backend(&self) -> &'static str {
        "single"
    }

    fn start_all_reduce(&self, tensor: &Tensor, _op: ReduceOp) -> Result<Box<dyn Work>> {
        check_reducible("all_reduce", tensor)?;
        Ok(Box::new(Done(tensor.contiguous()?.detach())))
    }

    fn broadcast(&self, tensor: &Tensor, root: usize) -> Result<Tensor> {
        check_root(self, "broadcast", root)?;
        Ok(tensor.contiguous()?.detach())
    }

    fn all_reduce_f64(&self, _values: &mut [f64], _op: ReduceOp) -> Result<()> {
        Ok(())
    }

    fn barrier(&self) -> Result<()> {
        Ok(())
    }
}

/// `Err` unless `tensor` is f32 or f64 (what gradients of f32 master weights are).
pub(crate) fn check_reducible(op: &'static str, tensor: &Tensor) -> Result<()> {
    match tensor.dtype() {
        DType::F32 | DType::F64 => Ok(()),
        other => Err(Error::Unsupported {
            op,
            reason: format!(
                "a {other} tensor of shape {:?} on {}: collectives reduce f32 and f64 tensors \
                 (gradients of f32 master weights); cast first",
                tensor.dims(),
                tensor.device()
            ),
        }),
    }
}

/// `Err` unless `root` is a rank of `group`.
pub(crate) fn check_root(group: &dyn ProcessGroup, op: &'static str, root: usize) -> Result<()> {
    if root >= group.world_size() {
        return Err(Error::Unsupported {
            op,
            reason: format!(
                "root rank {root} does not exist in a group of {} ranks",
                group.world_size()
            ),
        });
    }
    Ok(())
}
