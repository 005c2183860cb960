//! The CUDA C++ kernel sources, embedded in the binary.
//!
//! Every module is compiled by NVRTC as `common.cuh` followed by its own
//! source (see [`crate::compile`]).

use amp_dtype::DType;
use amp_tensor::{Error, Result};

/// The kernel-name suffix of a dtype for the cast kernels, which handle every dtype.
pub(crate) fn cast_suffix(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "f32",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        DType::F64 => "f64",
        DType::I64 => "i64",
        DType::U8 => "u8",
        DType::Bool => "bool",
        DType::F8E4M3 => "f8e4m3",
        DType::F8E5M2 => "f8e5m2",
    }
}

/// The kernel-name suffix of a dtype for the arithmetic kernels, or `None`
/// for fp8, which is only stored, cast and moved (as in PyTorch).
pub(crate) fn suffix(dtype: DType) -> Option<&'static str> {
    match dtype {
        DType::F8E4M3 | DType::F8E5M2 => None,
        other => Some(cast_suffix(other)),
    }
}

/// The kernel-name suffix of a dtype for kernels that only move its bytes.
pub(crate) fn size_suffix(dtype: DType) -> &'static str {
    match dtype.size_in_bytes() {
        1 => "b1",
        2 => "b2",
        4 => "b4",
        _ => "b8",
    }
}

/// `Error::UnsupportedDType` with a reason.
pub(crate) fn unsupported(op: &'static str, dtype: DType, reason: &str) -> Error {
    Error::UnsupportedDType {
        op,
        dtype,
        reason: reason.to_string(),
    }
}

/// The kernel-name suffix of a float dtype, or an error naming `op`.
pub(crate) fn float_suffix(op: &'static str, dtype: DType) -> Result<&'static str> {
    match dtype {
        DType::F32 | DType::F16 | DType::BF16 | DType::F64 => Ok(suffix(dtype).unwrap_or("f32")),
        other => Err(unsupported(
            op,
            other,
            "needs f32, f16, bf16 or f64 on CUDA",
        )),
    }
}

/// One kernel source file.
#[derive(Debug, Clone, Copy)]
pub struct KernelSource {
    /// Module name (the file stem), the key of the per-device module cache.
    pub name: &'static str,
    /// The file name, for messages.
    pub file: &'static str,
    /// The CUDA C++ source.
    pub source: &'static str,
}

/// The prelude shared by every module: types, conversions, block reductions.
pub const COMMON: &str = include_str!("../kernels/common.cuh");

/// Elementwise unary and binary kernels.
pub const ELEMENTWISE: KernelSource = KernelSource {
    name: "elementwise",
    file: "elementwise.cu",
    source: include_str!("../kernels/elementwise.cu"),
};
/// Casts, strided copies, fills, where, index_select, gather.
pub const COPY: KernelSource = KernelSource {
    name: "copy",
    file: "copy.cu",
    source: include_str!("../kernels/copy.cu"),
};
/// Row reductions, argmax/argmin, softmax, layer norm.
pub const REDUCE: KernelSource = KernelSource {
    name: "reduce",
    file: "reduce.cu",
    source: include_str!("../kernels/reduce.cu"),
};
/// Row reductions, softmax and layer norm split across blocks, for long rows.
pub const SPLIT: KernelSource = KernelSource {
    name: "split",
    file: "split.cu",
    source: include_str!("../kernels/split.cu"),
};
/// scatter_add.
pub const SCATTER: KernelSource = KernelSource {
    name: "scatter",
    file: "scatter.cu",
    source: include_str!("../kernels/scatter.cu"),
};
/// Fused non-finite check and unscale, fused AdamW.
pub const AMP: KernelSource = KernelSource {
    name: "amp",
    file: "amp.cu",
    source: include_str!("../kernels/amp.cu"),
};

/// Every kernel module.
pub const ALL: [KernelSource; 6] = [ELEMENTWISE, COPY, REDUCE, SPLIT, SCATTER, AMP];

impl KernelSource {
    /// The full translation unit NVRTC compiles: the prelude, then this file
    /// (with a `#line` directive so that messages name the right file and line).
    pub fn translation_unit(&self) -> String {
        format!(
            "{}#line 1 \"common.cuh\"\n{COMMON}\n#line 1 \"{}\"\n{}",
            crate::codes::defines(),
            self.file,
            self.source
        )
    }
}
