//! NCCL collectives on a CUDA device's stream (feature `nccl`): what
//! amp-dist's NCCL process group runs on. The library is loaded at run time
//! by cudarc, like the rest of CUDA, so this compiles without it.
//!
//! Each communicator works on the backend's one stream, so a collective is
//! ordered after the kernels that produced its input and before those that
//! read its output, with no host synchronisation.

use crate::CudaBackend;
use amp_tensor::{DType, Device, DeviceKind, Error, Result, Tensor};
use cudarc::nccl::{result, sys};
use std::fmt;
use std::mem::MaybeUninit;

/// The 128-byte id that every rank of one NCCL communicator must share
/// (rank 0 makes it, the others receive it, e.g. over MPI).
pub type NcclId = [u8; 128];

/// A new unique id (rank 0 calls this once per communicator).
pub fn nccl_unique_id() -> Result<NcclId> {
    let id = result::get_uniqueid().map_err(|e| nccl_error("ncclGetUniqueId", e))?;
    let mut out = [0u8; 128];
    for (o, c) in out.iter_mut().zip(id.internal.iter()) {
        *o = *c as u8;
    }
    Ok(out)
}

fn nccl_error(op: &'static str, e: result::NcclError) -> Error {
    Error::invalid(op, format!("NCCL: {e:?}"))
}

/// The reductions NCCL runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NcclOp {
    /// Sum over ranks.
    Sum,
    /// Mean over ranks (`ncclAvg`).
    Avg,
    /// Maximum.
    Max,
    /// Minimum.
    Min,
}

/// One rank's NCCL communicator on one CUDA device.
pub struct NcclComm {
    comm: sys::ncclComm_t,
    device: Device,
    rank: usize,
    world: usize,
}

// SAFETY: an NCCL communicator may be used from any thread as long as calls
// on it do not overlap; `NcclComm`'s methods take `&self` but every caller
// (amp-dist's group) serialises them, and NCCL enqueues work on the backend's
// stream, which is itself thread-safe to enqueue on.
unsafe impl Send for NcclComm {}
// SAFETY: as for `Send`.
unsafe impl Sync for NcclComm {}

impl fmt::Debug for NcclComm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NcclComm")
            .field("device", &self.device.to_string())
            .field("rank", &self.rank)
            .field("world", &self.world)
            .finish()
    }
}

/// The CUDA backend of `device`, its context current on this thread.
fn backend(device: &Device, op: &'static str) -> Result<CudaBackend> {
    if device.kind() != DeviceKind::Cuda {
        return Err(Error::invalid(
            op,
            format!("NCCL needs a CUDA device, got {device}"),
        ));
    }
    let cuda = crate::backend(device.ordinal()).map_err(|e| Error::invalid(op, e.to_string()))?;
    cuda.gpu
        .ctx
        .bind_to_thread()
        .map_err(|e| cuda.gpu.driver_err(op, e))?;
    Ok(cuda)
}

impl NcclComm {
    /// Joins the communicator of `world` ranks named by `id` as `rank`, on
    /// `device` (a CUDA device). Blocks until every rank has joined.
    pub fn new(device: &Device, rank: usize, world: usize, id: &NcclId) -> Result<NcclComm> {
        backend(device, "ncclCommInitRank")?;
        let mut internal = [0 as std::ffi::c_char; 128];
        for (i, b) in internal.iter_mut().zip(id.iter()) {
            *i = *b as std::ffi::c_char;
        }
        let mut comm = MaybeUninit::uninit();
        let (nranks, r) = (
            i32::try_from(world)
                .map_err(|_| Error::invalid("ncclCommInitRank", "too many ranks"))?,
            i32::try_from(rank)
                .map_err(|_| Error::invalid("ncclCommInitRank", "rank too large"))?,
        );
        // SAFETY: `comm` receives the new communicator; the id is the
        // 128-byte value NCCL produced on rank 0.
        let comm = unsafe {
            result::comm_init_rank(comm.as_mut_ptr(), nranks, sys::ncclUniqueId { internal }, r)
                .map_err(|e| nccl_error("ncclCommInitRank", e))?;
            comm.assume_init()
        };
        Ok(NcclComm {
            comm,
            device: device.clone(),
            rank,
            world,
        })
    }

    /// This rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The number of ranks.
    pub fn world_size(&self) -> usize {
        self.world
    }

    /// The device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Checks `t` and returns it contiguous with NCCL's datatype.
    fn operand(&self, op: &'static str, t: &Tensor) -> Result<(Tensor, sys::ncclDataType_t)> {
        if !t.device().same_device(&self.device) {
            return Err(Error::DeviceMismatch {
                op,
                lhs: self.device.to_string(),
                rhs: t.device().to_string(),
            });
        }
        let dtype = match t.dtype() {
            DType::F32 => sys::ncclDataType_t::ncclFloat32,
            DType::F64 => sys::ncclDataType_t::ncclFloat64,
            other => {
                return Err(Error::UnsupportedDType {
                    op,
                    dtype: other,
                    reason: format!(
                        "NCCL collectives here reduce f32 and f64 tensors; shape {:?}",
                        t.dims()
                    ),
                })
            }
        };
        Ok((t.contiguous()?, dtype))
    }

    /// Runs `f(send, recv, count, stream)` with device pointers of `t`
    /// (contiguous) and of a new output tensor of the same shape.
    fn launch(
        &self,
        op: &'static str,
        t: &Tensor,
        f: impl FnOnce(
            u64,
            u64,
            usize,
            sys::cudaStream_t,
        ) -> std::result::Result<result::NcclStatus, result::NcclError>,
    ) -> Result<Tensor> {
        let cuda = backend(&self.device, op)?;
        let out = Tensor::zeros(t.dims(), t.dtype(), &self.device)?;
        let input = t.kernel_input(op, 0)?;
        let (src, layout) = cuda.view(op, input.view())?;
        let output = out.kernel_input(op, 0)?;
        let (dst, _) = cuda.view(op, output.view())?;
        let stream = cuda.gpu.stream.cu_stream() as sys::cudaStream_t;
        f(src.ptr_at(layout.offset()), dst.ptr(), t.numel(), stream)
            .map_err(|e| nccl_error(op, e))?;
        drop((input, output));
        Ok(out)
    }

    /// The element-wise reduction of `t` over all ranks (a new tensor).
    pub fn all_reduce(&self, t: &Tensor, op: NcclOp) -> Result<Tensor> {
        let (t, dtype) = self.operand("ncclAllReduce", t)?;
        let red = match op {
            NcclOp::Sum => sys::ncclRedOp_t::ncclSum,
            NcclOp::Avg => sys::ncclRedOp_t::ncclAvg,
            NcclOp::Max => sys::ncclRedOp_t::ncclMax,
            NcclOp::Min => sys::ncclRedOp_t::ncclMin,
        };
        let comm = self.comm;
        self.launch("ncclAllReduce", &t, |src, dst, count, stream| {
            // SAFETY: `src` and `dst` address `count` elements of `dtype` in
            // live device buffers of this communicator's GPU (the tensors are
            // held by `launch` until the call returns, and the output's
            // buffer is freed stream-ordered after the collective).
            unsafe { result::all_reduce(src as _, dst as _, count, dtype, red, comm, stream) }
        })
    }

    /// `t` as held by rank `root`, on every rank (a new tensor).
    pub fn broadcast(&self, t: &Tensor, root: usize) -> Result<Tensor> {
        let (t, dtype) = self.operand("ncclBroadcast", t)?;
        let root =
            i32::try_from(root).map_err(|_| Error::invalid("ncclBroadcast", "root too large"))?;
        let comm = self.comm;
        self.launch("ncclBroadcast", &t, |src, dst, count, stream| {
            // SAFETY: as in `all_reduce`.
            unsafe { result::broadcast(src as _, dst as _, count, dtype, root, comm, stream) }
        })
    }
}

impl Drop for NcclComm {
    fn drop(&mut self) {
        // SAFETY: the communicator was created by `new` and is not used after this.
        let _ = unsafe { result::comm_destroy(self.comm) };
    }
}
