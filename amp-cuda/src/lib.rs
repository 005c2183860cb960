//! The CUDA backend of `amp`: NVRTC-compiled kernels and cuBLAS matmul over
//! [cudarc](https://docs.rs/cudarc) with dynamic loading, so the crate builds
//! and runs on machines without a GPU, a driver or a CUDA toolkit — there
//! [`device`] returns [`CudaError::NoCudaDevice`] instead of panicking.
//!
//! ```
//! use amp_tensor::{ops, DType, Tensor};
//!
//! match amp_cuda::device(0) {
//!     Ok(gpu) => {
//!         let a = Tensor::randn(&[64, 32], DType::F32, &gpu, 0)?.to_dtype(DType::BF16)?;
//!         let b = Tensor::randn(&[32, 16], DType::F32, &gpu, 1)?.to_dtype(DType::BF16)?;
//!         let c = ops::matmul(&a, &b)?; // cuBLAS, f32 accumulation
//!         assert_eq!(c.dims(), &[64, 16]);
//!     }
//!     Err(e) => println!("skipped: {e}"),
//! }
//! # Ok::<(), amp_tensor::Error>(())
//! ```
//!
//! How it works:
//! - Libraries: [`libs`] probes `libcuda`, `libnvrtc` and `libcublas` once
//!   (cudarc panics on a missing library), with extra search folders from
//!   `AMP_CUDA_LIB_DIR`, `AMP_NVRTC_LIB`, `AMP_CUBLAS_LIB`, `CUDA_PATH`.
//! - Kernels: the `.cu` files in `kernels/` ([`kernels`]) are compiled by
//!   NVRTC for the GPU's compute capability on first use, to CUBIN, and
//!   cached per device ([`compile`]), with headers (`cuda_fp16.h`,
//!   `cuda_bf16.h`) of NVRTC's own version from `AMP_CUDA_INCLUDE`,
//!   `CUDA_PATH`, `/usr/local/cuda` or the `nvidia-cuda-runtime` wheel. When
//!   NVRTC is absent, newer than the driver, or fails, the precompiled CUBINs
//!   and PTX of `AMP_CUDA_KERNEL_DIR` (the `cargo xtask gpu` bundle's) load
//!   instead; which image each module came from is recorded ([`images`]).
//! - Arithmetic: f16/bf16 compute and accumulate in f32; f32 reductions,
//!   softmax and layer norm accumulate in f64; casts round to nearest even
//!   once; matmul uses cuBLAS with `CUBLAS_COMPUTE_32F` (no TF32).
//! - fp8 (`F8E4M3` = `float8_e4m3fn`, `F8E5M2` = `float8_e5m2`), as in
//!   PyTorch, is for storage and casts: host upload and download, `full`,
//!   casts to and from every other dtype (strided views included) and the ops
//!   that only move elements (contiguous copies, `cat`, `index_select`,
//!   `gather`, `where`). Casts into fp8 round once, to nearest even, directly
//!   from the source value, bit-identical with amp-dtype (E4M3 overflow gives
//!   NaN, E5M2 overflow gives infinity; a NaN keeps its sign); decoding is
//!   exact. The encoder and decoder are bit manipulation in `common.cuh`, so
//!   no `cuda_fp8.h` is needed. Arithmetic on fp8 (unary, binary, reductions,
//!   matmul, softmax, layer norm, scatter_add, the fused AMP kernels) returns
//!   `Error::UnsupportedDType` naming the op.
//! - One stream per device: every op is queued in order; reading a tensor
//!   back to the host synchronises.
//! - The fused unscale (`non_finite_check_and_unscale`) and the fused AdamW
//!   update (`adamw_step`, bit-identical with the CPU backend's) are the
//!   backend's implementations of those `Backend` methods: `GradScaler` and
//!   the optimizers reach them through `amp_tensor::ops`, as on every device.
//! - Rows too long for one block (few rows, many elements: a whole-tensor sum,
//!   a softmax over a long sequence) are reduced in chunks by many blocks and
//!   combined (`kernels/split.cu`), so they fill the GPU.
//! - Versions: at device open the driver's, NVRTC's and cuBLAS's versions are
//!   read and checked ([`versions`]); kernels come from NVRTC, else the
//!   precompiled CUBINs or PTX of a GPU bundle ([`images`]).

mod amp;
mod backend;
mod codes;
pub mod compile;
mod device;
mod elementwise;
mod error;
pub mod images;
pub mod kernels;
pub mod libs;
mod matmul;
mod meta;
#[cfg(feature = "nccl")]
pub mod nccl;
mod rows;
mod split;
mod storage;
mod transfer;
pub mod versions;

pub use backend::CudaBackend;
pub use error::{CudaError, CudaResult};
pub use storage::CudaStorage;

use amp_tensor::Device;
use device::Gpu;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

fn registry() -> &'static Mutex<HashMap<usize, (CudaBackend, Device)>> {
    static DEVICES: OnceLock<Mutex<HashMap<usize, (CudaBackend, Device)>>> = OnceLock::new();
    DEVICES.get_or_init(|| Mutex::new(HashMap::new()))
}

pub(crate) fn cached_backend(ordinal: usize) -> Option<CudaBackend> {
    registry()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&ordinal)
        .map(|(b, _)| b.clone())
}

/// The number of CUDA devices the driver reports (0 when there is no driver or GPU).
pub fn device_count() -> usize {
    device::driver_device_count().unwrap_or(0)
}

/// True when a GPU is present and the libraries the backend needs (cuBLAS, and
/// NVRTC or precompiled kernels) can be loaded — `torch.cuda.is_available()`.
pub fn is_available() -> bool {
    let status = libs::library_status();
    device_count() > 0
        && status.cublas.is_ok()
        && (status.nvrtc.is_ok() || images::kernel_dir().is_some())
}

/// The device handle of GPU `ordinal` (opened once per process and shared).
/// Without a usable GPU this is [`CudaError::NoCudaDevice`] saying why.
pub fn device(ordinal: usize) -> CudaResult<Device> {
    let mut devices = registry().lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, d)) = devices.get(&ordinal) {
        return Ok(d.clone());
    }
    let backend = CudaBackend {
        gpu: Arc::new(Gpu::open(ordinal)?),
    };
    let device = Device::new(Arc::new(backend.clone()));
    devices.insert(ordinal, (backend, device.clone()));
    Ok(device)
}

/// The backend of GPU `ordinal`, for its extra information (name, compute capability).
pub fn backend(ordinal: usize) -> CudaResult<CudaBackend> {
    device(ordinal)?;
    cached_backend(ordinal).ok_or_else(|| CudaError::NoCudaDevice {
        reason: format!("cuda:{ordinal} is not open"),
    })
}
