//! [`MpiGroup`]: a [`ProcessGroup`] over MPI, for CPU tensors (and any tensor
//! through a host copy).
//!
//! Every collective is MPI's non-blocking form (`MPI_Iallreduce`,
//! `MPI_Ibcast`, `MPI_Ibarrier`) completed by polling `MPI_Test` against a
//! deadline, so a collective that cannot complete because another rank died
//! or hangs becomes [`Error::Timeout`] instead of a hang; the caller then
//! [`abort`](MpiGroup::abort)s the job. The group works on its own duplicate
//! of `MPI_COMM_WORLD`, with `MPI_ERRORS_RETURN` so that MPI's errors come back
//! as [`Error::Collective`]. MPI is initialised at `MPI_THREAD_SERIALIZED`, and
//! the group serialises its calls with a lock.

use crate::group::{check_reducible, check_root, ProcessGroup, ReduceOp, Work};
use crate::launch::Launch;
use crate::{Error, Result};
use amp_tensor::{DType, Device, Tensor};
use mpi::ffi;
use std::ffi::{c_int, c_void};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The default time a collective may take before it is an [`Error::Timeout`]
/// (PyTorch's process groups default to 10 minutes; a data-parallel step
/// that waits 5 minutes for a peer has lost it).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// The MPI state every collective goes through.
struct Inner {
    /// Keeps MPI initialised; finalises it when the group is dropped.
    _universe: mpi::environment::Universe,
    comm: ffi::MPI_Comm,
    rank: usize,
    world: usize,
    timeout: Duration,
    /// Serialises MPI calls (MPI_THREAD_SERIALIZED).
    lock: Mutex<()>,
}

// SAFETY: `comm` is an MPI handle, valid from the group's creation until MPI is
// finalised when `Inner` drops; MPI was initialised at MPI_THREAD_SERIALIZED,
// which allows calls from any thread as long as no two run at once, and every
// call through `Inner` holds `lock`.
unsafe impl Send for Inner {}
// SAFETY: as for `Send`: shared use is serialised by `lock`.
unsafe impl Sync for Inner {}

/// A [`ProcessGroup`] over MPI, for CPU tensors (and any tensor through a
/// host copy). Every collective is MPI's non-blocking form completed by
/// polling against a deadline, so a collective that cannot complete because
/// another rank died or hangs is an [`Error::Timeout`], not a hang; the group
/// works on its own duplicate of `MPI_COMM_WORLD` with `MPI_ERRORS_RETURN`
/// (MPI's errors come back as [`Error::Collective`]), at
/// `MPI_THREAD_SERIALIZED` with its calls serialised by a lock.
#[derive(Clone)]
pub struct MpiGroup {
    inner: Arc<Inner>,
}

impl fmt::Debug for MpiGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MpiGroup")
            .field("rank", &self.inner.rank)
            .field("world_size", &self.inner.world)
            .field("timeout", &self.inner.timeout)
            .finish()
    }
}

/// MPI's message for an error code.
fn error_string(code: c_int) -> String {
    let mut buf = vec![0u8; 512];
    let mut len: c_int = 0;
    // SAFETY: MPI_Error_string writes at most MPI_MAX_ERROR_STRING (256 in Open
    // MPI, 512 in MPICH) bytes into the buffer and their count into `len`.
    let rc = unsafe { ffi::MPI_Error_string(code, buf.as_mut_ptr().cast(), &mut len) };
    if rc != 0 {
        return format!("MPI error code {code}");
    }
    buf.truncate(len.clamp(0, 512) as usize);
    String::from_utf8_lossy(&buf).into_owned()
}

impl MpiGroup {
    /// Initialises MPI and joins the job that `mpirun` started, with
    /// [`DEFAULT_TIMEOUT`]. `Err(Launch)` when this process was not started
    /// by an MPI launcher (a plain run would silently be a job of one) or
    /// MPI was already initialised.
    pub fn init(program: &str) -> Result<MpiGroup> {
        MpiGroup::init_with_timeout(program, DEFAULT_TIMEOUT)
    }

    /// [`init`](Self::init) with a collective timeout.
    pub fn init_with_timeout(program: &str, timeout: Duration) -> Result<MpiGroup> {
        let launch = Launch::require(program)?;
        let (universe, threading) = mpi::initialize_with_threading(mpi::Threading::Serialized)
            .ok_or_else(|| Error::Launch("MPI is already initialised in this process".into()))?;
        if threading < mpi::Threading::Serialized {
            return Err(Error::Launch(format!(
                "the MPI library offers thread level {threading:?}; amp-dist needs Serialized"
            )));
        }
        // SAFETY: a constant handle defined by the MPI library.
        let mut comm: ffi::MPI_Comm = unsafe { ffi::RSMPI_COMM_NULL };
        // SAFETY: MPI is initialised; RSMPI_COMM_WORLD is the world communicator
        // and `comm` receives a new handle.
        let rc = unsafe { ffi::MPI_Comm_dup(ffi::RSMPI_COMM_WORLD, &mut comm) };
        if rc != 0 {
            return Err(Error::Launch(format!(
                "MPI_Comm_dup failed: {}",
                error_string(rc)
            )));
        }
        // SAFETY: `comm` is the valid communicator created above.
        unsafe { ffi::MPI_Comm_set_errhandler(comm, ffi::RSMPI_ERRORS_RETURN) };
        let (mut rank, mut size): (c_int, c_int) = (0, 0);
        // SAFETY: `comm` is valid; both calls write one int.
        unsafe {
            ffi::MPI_Comm_rank(comm, &mut rank);
            ffi::MPI_Comm_size(comm, &mut size);
        }
        let (rank, world) = (rank as usize, size as usize);
        if (rank, world) != (launch.rank, launch.world_size) {
            return Err(Error::Launch(format!(
                "MPI says rank {rank} of {world}, the launcher ({}) rank {} of {}: the program \
                 and mpirun come from different MPI installations",
                launch.launcher, launch.rank, launch.world_size
            )));
        }
        Ok(MpiGroup {
            inner: Arc::new(Inner {
                _universe: universe,
                comm,
                rank,
                world,
                timeout,
                lock: Mutex::new(()),
            }),
        })
    }

    /// The collective timeout.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    fn collective_error(&self, op: &'static str, rc: c_int) -> Error {
        Error::Collective {
            op,
            rank: self.inner.rank,
            world: self.inner.world,
            reason: error_string(rc),
        }
    }

    /// Polls `request` until it completes or the timeout passes. On a
    /// timeout the request stays active: the caller must keep its buffers
    /// alive (they are leaked).
    fn complete(&self, op: &'static str, request: &mut ffi::MPI_Request) -> Result<()> {
        let start = Instant::now();
        let mut polls = 0u64;
        loop {
            if self.test(op, request)? {
                return Ok(());
            }
            if start.elapsed() > self.inner.timeout {
                return Err(Error::Timeout {
                    op,
                    rank: self.inner.rank,
                    world: self.inner.world,
                    timeout: self.inner.timeout,
                });
            }
            // MPI's non-blocking collectives progress inside MPI_Test: poll
            // without sleeping for the first 50 ms (a sleep per poll made a
            // 64 MiB all-reduce 5× slower), then back off for long waits.
            polls += 1;
            if polls % 64 != 0 || start.elapsed() < Duration::from_millis(50) {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(20));
            }
        }
    }

    /// One `MPI_Test` of `request`: advances the collective; true once it has
    /// completed (a completed request becomes null, which tests complete).
    fn test(&self, op: &'static str, request: &mut ffi::MPI_Request) -> Result<bool> {
        let mut flag: c_int = 0;
        let rc = {
            let _serial = self.inner.lock.lock().unwrap_or_else(|e| e.into_inner());
            // SAFETY: `request` is a request from this group's communicator,
            // active or null; the status is ignored.
            unsafe { ffi::MPI_Test(request, &mut flag, ffi::RSMPI_STATUS_IGNORE) }
        };
        if rc != 0 {
            return Err(self.collective_error(op, rc));
        }
        Ok(flag != 0)
    }

    /// Starts `MPI_Iallreduce` of `send` into a new buffer.
    fn start<T: MpiElement>(&self, send: Vec<T>, op: ReduceOp) -> Result<Pending<T>> {
        let mut recv = vec![T::default(); send.len()];
        let count = c_int::try_from(send.len()).map_err(|_| Error::Unsupported {
            op: "all_reduce",
            reason: format!("{} elements exceed MPI's int count", send.len()),
        })?;
        // SAFETY: a constant handle defined by the MPI library.
        let mut request = unsafe { ffi::RSMPI_REQUEST_NULL };
        let rc = {
            let _serial = self.inner.lock.lock().unwrap_or_else(|e| e.into_inner());
            // SAFETY: both buffers hold `count` elements of the datatype and
            // stay alive, unmoved on the heap, until the request completes
            // (`Pending` owns them and leaks them if it is dropped early).
            unsafe {
                ffi::MPI_Iallreduce(
                    send.as_ptr().cast::<c_void>(),
                    recv.as_mut_ptr().cast::<c_void>(),
                    count,
                    T::datatype(),
                    mpi_op(op),
                    self.inner.comm,
                    &mut request,
                )
            }
        };
        if rc != 0 {
            return Err(self.collective_error("all_reduce", rc));
        }
        Ok(Pending {
            group: self.clone(),
            request,
            send,
            recv,
            average: op == ReduceOp::Avg,
            done: false,
            op: "all_reduce",
        })
    }
}

impl MpiGroup {
    /// `MPI_Ibcast` of `values` (the root's are sent, the others' replaced).
    fn bcast<T: MpiElement>(&self, values: Vec<T>, root: usize) -> Result<Vec<T>> {
        let count = c_int::try_from(values.len()).map_err(|_| Error::Unsupported {
            op: "broadcast",
            reason: format!("{} elements exceed MPI's int count", values.len()),
        })?;
        // SAFETY: a constant handle defined by the MPI library.
        let mut request = unsafe { ffi::RSMPI_REQUEST_NULL };
        let mut pending = Pending {
            group: self.clone(),
            request,
            send: Vec::new(),
            recv: values,
            average: false,
            done: false,
            op: "broadcast",
        };
        let rc = {
            let _serial = self.inner.lock.lock().unwrap_or_else(|e| e.into_inner());
            // SAFETY: the buffer holds `count` elements of the datatype and is
            // owned by `pending`, which keeps it alive (or leaks it) until the
            // request completes.
            unsafe {
                ffi::MPI_Ibcast(
                    pending.recv.as_mut_ptr().cast::<c_void>(),
                    count,
                    T::datatype(),
                    root as c_int,
                    self.inner.comm,
                    &mut request,
                )
            }
        };
        if rc != 0 {
            pending.done = true;
            return Err(self.collective_error("broadcast", rc));
        }
        pending.request = request;
        pending.op = "broadcast";
        pending.finish()
    }
}

/// An f32 or f64 host element as MPI sees it.
trait MpiElement: Copy + Default + Send + 'static {
    fn datatype() -> ffi::MPI_Datatype;
    fn scale(values: &mut [Self], factor: f64);
    fn tensor(values: Vec<Self>, shape: &[usize], device: &Device) -> Result<Tensor>;
}

impl MpiElement for f32 {
    fn datatype() -> ffi::MPI_Datatype {
        // SAFETY: a constant handle defined by the MPI library.
        unsafe { ffi::RSMPI_FLOAT }
    }
    fn tensor(values: Vec<f32>, shape: &[usize], device: &Device) -> Result<Tensor> {
        Ok(Tensor::from_vec(values, shape, device)?)
    }
    fn scale(values: &mut [f32], factor: f64) {
        values
            .iter_mut()
            .for_each(|v| *v = (*v as f64 * factor) as f32);
    }
}

impl MpiElement for f64 {
    fn datatype() -> ffi::MPI_Datatype {
        // SAFETY: a constant handle defined by the MPI library.
        unsafe { ffi::RSMPI_DOUBLE }
    }
    fn tensor(values: Vec<f64>, shape: &[usize], device: &Device) -> Result<Tensor> {
        Ok(Tensor::from_vec(values, shape, device)?)
    }
    fn scale(values: &mut [f64], factor: f64) {
        values.iter_mut().for_each(|v| *v *= factor);
    }
}

/// MPI's operation for `op` (the average is a sum, divided afterwards).
fn mpi_op(op: ReduceOp) -> ffi::MPI_Op {
    // SAFETY: constant handles defined by the MPI library.
    unsafe {
        match op {
            ReduceOp::Sum | ReduceOp::Avg => ffi::RSMPI_SUM,
            ReduceOp::Max => ffi::RSMPI_MAX,
            ReduceOp::Min => ffi::RSMPI_MIN,
        }
    }
}

/// An `MPI_Iallreduce` in flight, owning its buffers.
struct Pending<T: MpiElement> {
    group: MpiGroup,
    request: ffi::MPI_Request,
    send: Vec<T>,
    recv: Vec<T>,
    average: bool,
    done: bool,
    op: &'static str,
}

// SAFETY: the request handle is only used through the group, whose MPI calls
// are serialised (MPI_THREAD_SERIALIZED allows any thread); the buffers are
// plain owned vectors.
unsafe impl<T: MpiElement> Send for Pending<T> {}

impl<T: MpiElement> Pending<T> {
    fn finish(mut self) -> Result<Vec<T>> {
        self.group.complete(self.op, &mut self.request)?;
        self.done = true;
        let mut recv = std::mem::take(&mut self.recv);
        if self.average {
            T::scale(&mut recv, 1.0 / self.group.inner.world as f64);
        }
        Ok(recv)
    }
}

impl<T: MpiElement> Drop for Pending<T> {
    fn drop(&mut self) {
        if !self.done {
            // MPI may still write into the buffers: never free them.
            std::mem::forget(std::mem::take(&mut self.send));
            std::mem::forget(std::mem::take(&mut self.recv));
        }
    }
}

/// A tensor all-reduce in flight: the host buffers and where the result goes.
struct TensorWork<T: MpiElement> {
    pending: Pending<T>,
    shape: Vec<usize>,
    device: Device,
}

impl<T: MpiElement> Work for TensorWork<T> {
    fn progress(&mut self) -> Result<()> {
        let p = &mut self.pending;
        p.group.test(p.op, &mut p.request).map(|_| ())
    }

    fn wait(self: Box<Self>) -> Result<Tensor> {
        let TensorWork {
            pending,
            shape,
            device,
        } = *self;
        T::tensor(pending.finish()?, &shape, &device)
    }
}

impl ProcessGroup for MpiGroup {
    fn rank(&self) -> usize {
        self.inner.rank
    }

    fn world_size(&self) -> usize {
        self.inner.world
    }

    fn backend(&self) -> &'static str {
        "mpi"
    }

    fn start_all_reduce(&self, tensor: &Tensor, op: ReduceOp) -> Result<Box<dyn Work>> {
        check_reducible("all_reduce", tensor)?;
        let (shape, device) = (tensor.shape(), tensor.device().clone());
        Ok(match tensor.dtype() {
            DType::F64 => Box::new(TensorWork {
                pending: self.start(tensor.to_vec::<f64>()?, op)?,
                shape,
                device,
            }),
            _ => Box::new(TensorWork {
                pending: self.start(tensor.to_vec::<f32>()?, op)?,
                shape,
                device,
            }),
        })
    }

    fn broadcast(&self, tensor: &Tensor, root: usize) -> Result<Tensor> {
        check_root(self, "broadcast", root)?;
        check_reducible("broadcast", tensor)?;
        let (shape, device) = (tensor.shape(), tensor.device().clone());
        Ok(match tensor.dtype() {
            DType::F64 => {
                let values = self.bcast(tensor.to_vec::<f64>()?, root)?;
                Tensor::from_vec(values, &shape, &device)?
            }
            _ => {
                let values = self.bcast(tensor.to_vec::<f32>()?, root)?;
                Tensor::from_vec(values, &shape, &device)?
            }
        })
    }

    fn all_reduce_f64(&self, values: &mut [f64], op: ReduceOp) -> Result<()> {
        let reduced = self.start(values.to_vec(), op)?.finish()?;
        values.copy_from_slice(&reduced);
        Ok(())
    }

    fn abort(&self, code: i32) -> ! {
        // SAFETY: the communicator is valid; MPI_Abort ends every rank.
        unsafe { ffi::MPI_Abort(self.inner.comm, code) };
        std::process::exit(code)
    }

    fn barrier(&self) -> Result<()> {
        // SAFETY: a constant handle defined by the MPI library.
        let mut request = unsafe { ffi::RSMPI_REQUEST_NULL };
        let rc = {
            let _serial = self.inner.lock.lock().unwrap_or_else(|e| e.into_inner());
            // SAFETY: the communicator is valid; the request is written.
            unsafe { ffi::MPI_Ibarrier(self.inner.comm, &mut request) }
        };
        if rc != 0 {
            return Err(self.collective_error("barrier", rc));
        }
        self.complete("barrier", &mut request)
    }
}
