//! [`CudaStorage`]: a typed buffer in device memory.

use amp_dtype::DType;
use amp_tensor::backend::DeviceStorage;
use cudarc::driver::{CudaSlice, DevicePtr};
use std::any::Any;
use std::fmt;

/// `len` elements of `dtype` in the memory of one GPU, held as bytes (every
/// dtype shares one representation; kernels interpret the bytes). Bool is one
/// byte holding 0 or 1.
pub struct CudaStorage {
    pub(crate) dtype: DType,
    pub(crate) len: usize,
    pub(crate) ordinal: usize,
    /// At least `len * dtype.size_in_bytes()` bytes, and never empty (CUDA
    /// cannot allocate 0 bytes).
    pub(crate) buf: CudaSlice<u8>,
}

impl CudaStorage {
    /// The device address of element `offset`.
    pub(crate) fn ptr_at(&self, offset: usize) -> u64 {
        let (base, _sync) = self.buf.device_ptr(self.buf.stream());
        base + (offset * self.dtype.size_in_bytes()) as u64
    }

    /// The device address of the first element.
    pub(crate) fn ptr(&self) -> u64 {
        self.ptr_at(0)
    }

    /// Bytes of the elements (not the allocation).
    pub(crate) fn num_bytes(&self) -> usize {
        self.len * self.dtype.size_in_bytes()
    }

    /// The GPU ordinal that holds the buffer.
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }
}

impl Drop for CudaStorage {
    fn drop(&mut self) {
        // The buffer is freed (stream-ordered) when `buf` drops, right after this:
        // make its context current first, so that works from any thread.
        let ctx = self.buf.context().cu_ctx();
        if !matches!(cudarc::driver::result::ctx::get_current(), Ok(Some(current)) if current == ctx)
        {
            // SAFETY: `ctx` is the live context that owns the buffer (the slice holds it).
            let _ = unsafe { cudarc::driver::result::ctx::set_current(ctx) };
        }
    }
}

impl fmt::Debug for CudaStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CudaStorage<{}>[{}] on cuda:{}",
            self.dtype, self.len, self.ordinal
        )
    }
}

impl DeviceStorage for CudaStorage {
    fn dtype(&self) -> DType {
        self.dtype
    }
    fn len(&self) -> usize {
        self.len
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}
