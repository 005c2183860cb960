//! A fast CPU backend for `amp`: f32, bf16 and f16 kernels with run-time
//! SIMD dispatch, a packed GEMM, and rayon parallelism above a size threshold.
//!
//! [`device()`] hands out the process-wide CPU [`Device`]. Tensors live in
//! host memory exactly as on the reference backend, so they move between the
//! two with [`Tensor::to_device`](amp_tensor::Tensor::to_device).
//!
//! ```
//! use amp_tensor::{ops, DType, Device, Tensor};
//!
//! let cpu = amp_cpu::device();
//! let x = Tensor::randn(&[4, 64], DType::BF16, &cpu, 0)?;
//! let w = Tensor::randn(&[8, 64], DType::BF16, &cpu, 1)?;
//! // bf16 inputs, f32 accumulation, bf16 output.
//! let y = ops::linear(&x, &w, None)?;
//! assert_eq!((y.dims(), y.dtype()), (&[4, 8][..], DType::BF16));
//!
//! // The same product on the exact f64 reference backend agrees to bf16 rounding.
//! let reference = Device::reference();
//! let r = ops::linear(&x.to_device(&reference)?, &w.to_device(&reference)?, None)?;
//! for (a, b) in y.to_f64_vec()?.iter().zip(r.to_f64_vec()?) {
//!     assert!((a - b).abs() <= 1e-2 * b.abs() + 1e-3);
//! }
//! println!("kernels run at {} (bf16 native: {})", amp_cpu::isa(), cpu.is_bf16_supported());
//! # Ok::<(), amp_tensor::Error>(())
//! ```
//!
//! # Dispatch
//!
//! The instruction-set level is detected once per process ([`isa()`]):
//! AVX-512 (F/BW/VL/DQ), AVX512-BF16, AMX-BF16 (CPUID plus the Linux
//! `arch_prctl` tile permission, [`amx_bf16_available`]), AVX2 + FMA + F16C,
//! or portable Rust. `AMP_CPU_ISA=scalar|avx2|avx512|avx512bf16|amx` forces a
//! lower level; [`CpuBackend::with_isa`] builds a backend at any supported
//! level, so tests compare every path on one machine. The GEMM's block sizes
//! follow the data caches CPUID reports ([`caches()`]; `AMP_CPU_CACHES=l1d,l2,l3`,
//! e.g. `48K,2M,105M`, replaces them). [`peak`] measures the
//! peak rate of the instruction each GEMM kernel is built on, against which
//! `cargo xtask bench` reports the GEMM rows.
//!
//! # Numerics
//!
//! - Casts f32 ↔ bf16/f16 are bit-exact with `amp_dtype`'s scalar
//!   conversions (nearest even, NaN stays NaN, subnormals kept).
//! - Elementwise ops compute in f32; sums, means, layer-norm statistics and
//!   `scatter_add` accumulate in f64; softmax sums its exponentials in f64.
//! - GEMM accumulates in f32 and rounds the output once to the requested
//!   dtype. bf16 inputs run natively: AMX tiles (`tdpbf16ps`) at
//!   [`Isa::Amx`], `vdpbf16ps` at [`Isa::Avx512Bf16`] (both flush subnormal
//!   bf16 inputs and results to zero); f16 inputs, and bf16 below those
//!   levels, are widened to f32 while packing (exact) and use FMA.
//! - `non_finite_check_and_unscale` multiplies by `inv_scale` in f32 (bit-exact
//!   with `x * inv_scale`) and counts the infs and NaNs among the stored
//!   results, in one pass.
//! - `layer_norm`'s backward is one pass per row from the saved f32
//!   statistics, vectorised, its row sums in f64 over 8 fixed lanes (the same
//!   bits on every level); the weight and bias gradients are summed over blocks of 32
//!   rows and the blocks in order, so they do not depend on the thread count.
//! - `conv2d` is an implicit GEMM on the same micro-kernels: blocks of the
//!   input's windows are gathered straight into packed panels (the window
//!   matrix is never stored), the output written in NCHW; the weight's
//!   gradient is summed over fixed shares of the batch in order. Batch norm's
//!   per-channel statistics and gradient sums accumulate in f64.
//! - `linear` runs the product and its epilogue (bias added and the optional
//!   activation applied in f32, then one rounding to the output dtype) in one
//!   pass over the output.
//! - `adamw_step` (`torch.optim.AdamW`) is one fused pass: parameter, gradient
//!   (any float dtype, any layout) and both f32 moments are read once and
//!   written back in place, in f32, each arithmetic step rounded as PyTorch's
//!   single-tensor AdamW rounds it.
//! - f64, integer, bool and fp8 inputs take the reference backend's scalar
//!   code (same storage, identical results).
//!
//! Work below 64 Ki elements (or 2 Mflop for GEMM, 16 Mflop on AMX) stays on
//! the calling thread; larger work runs on rayon's pool. Outputs of 8 MiB and
//! more are written with non-temporal stores.

mod alloc;
mod attention;
mod backend;
mod cache;
mod channels;
mod conv;
mod convert;
mod elementwise;
mod gemm;
mod index;
mod isa;
mod math;
mod optim;
pub mod peak;
mod reduce;
mod unscale;

pub use alloc::keep_freed_buffers;
pub use backend::CpuBackend;
pub use cache::{caches, Caches};
pub use isa::{amx_bf16_available, detected as detected_isa, isa, Isa};

use amp_tensor::Device;
use std::sync::{Arc, OnceLock};

/// The process-wide CPU device (`"cpu"`, [`amp_tensor::DeviceKind::Cpu`]) at level [`isa()`].
pub fn device() -> Device {
    static DEVICE: OnceLock<Device> = OnceLock::new();
    DEVICE
        .get_or_init(|| Device::new(Arc::new(CpuBackend::new())))
        .clone()
}

/// A CPU device whose kernels run at `isa` (for comparing paths); an `Err` if unsupported here.
pub fn device_with_isa(isa: Isa) -> amp_tensor::Result<Device> {
    Ok(Device::new(Arc::new(CpuBackend::with_isa(isa)?)))
}
