//! The CUDA C++ kernel sources, embedded in the binary.
//!
//! Every module is compiled by NVRTC as `common.cuh` followed by its own
//! source (see [`crate::compile`]).

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
            "#line 1 \"common.cuh\"\n{COMMON}\n#line 1 \"{}\"\n{}",
            self.file, self.source
        )
    }
}
