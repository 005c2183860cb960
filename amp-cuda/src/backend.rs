//! [`CudaBackend`]: the `amp_tensor` backend of one GPU. The kernels' Rust
//! sides are by concept: storage, transfers and data movement in
//! [`crate::transfer`], elementwise ops in [`crate::elementwise`], row
//! reductions, softmax and layer norm in [`crate::rows`], products in
//! [`crate::matmul`], the fused unscale and AdamW in [`crate::amp`].

use crate::device::Gpu;
use amp_dtype::DType;
use amp_tensor::backend::{
    composed_adamw_step, AdamWStep, Backend, BinaryOp, DeviceKind, HostStorage, NonFiniteCount,
    ReduceOp, Storage, UnaryOp, View,
};
use amp_tensor::{Layout, Result};
use std::sync::Arc;

/// The CUDA backend of one GPU (hand-outs: [`crate::device`]).
#[derive(Debug, Clone)]
pub struct CudaBackend {
    pub(crate) gpu: Arc<Gpu>,
}

impl CudaBackend {
    /// The GPU's name as the driver reports it.
    pub fn device_name(&self) -> &str {
        &self.gpu.name
    }

    /// Compute capability `(major, minor)`.
    pub fn compute_capability(&self) -> (i32, i32) {
        self.gpu.compute_capability
    }

    /// Waits for every queued kernel of this device; reports asynchronous errors.
    pub fn synchronize(&self) -> Result<()> {
        self.gpu.synchronize("synchronize")
    }

    /// The driver and library versions this device was opened with.
    pub fn versions(&self) -> &crate::versions::Versions {
        &self.gpu.versions
    }

    /// Loads every kernel module now (instead of at first use) and returns,
    /// for each, the image it came from or why none loaded.
    pub fn load_all_kernels(&self) -> Vec<(&'static str, std::result::Result<String, String>)> {
        crate::kernels::ALL
            .iter()
            .map(|source| {
                let result = self.gpu.module(source).map_err(|e| e.to_string());
                let image = self
                    .gpu
                    .loaded_images()
                    .into_iter()
                    .find(|(m, _)| *m == source.name)
                    .map(|(_, image)| image.to_string());
                (source.name, result.map(|_| image.unwrap_or_default()))
            })
            .collect()
    }

    /// Which image each kernel module loaded so far came from (NVRTC, a precompiled CUBIN or PTX).
    pub fn kernel_images(&self) -> Vec<(&'static str, crate::images::ImageSource)> {
        self.gpu.loaded_images()
    }
}

impl Backend for CudaBackend {
    fn name(&self) -> &str {
        "cuda"
    }

    fn kind(&self) -> DeviceKind {
        DeviceKind::Cuda
    }

    fn ordinal(&self) -> usize {
        self.gpu.ordinal
    }

    fn is_bf16_supported(&self) -> bool {
        self.gpu.compute_capability.0 >= 8
    }

    fn from_host(&self, data: HostStorage) -> Result<Storage> {
        self.upload_host(data)
    }

    fn to_host(&self, src: View<'_>) -> Result<HostStorage> {
        self.to_host_kernel(src)
    }

    fn full(&self, numel: usize, value: f64, dtype: DType) -> Result<Storage> {
        self.full_kernel(numel, value, dtype)
    }

    fn cast(&self, src: View<'_>, out: DType) -> Result<Storage> {
        self.cast_kernel(src, out)
    }

    fn unary(&self, op: UnaryOp, src: View<'_>, out: DType) -> Result<Storage> {
        self.unary_kernel(op, src, out)
    }

    fn binary(&self, op: BinaryOp, lhs: View<'_>, rhs: View<'_>, out: DType) -> Result<Storage> {
        self.binary_kernel(op, lhs, rhs, out)
    }

    fn where_cond(
        &self,
        cond: View<'_>,
        on_true: View<'_>,
        on_false: View<'_>,
        out: DType,
    ) -> Result<Storage> {
        self.where_cond_kernel(cond, on_true, on_false, out)
    }

    fn reduce(&self, op: ReduceOp, src: View<'_>, dims: &[usize], out: DType) -> Result<Storage> {
        self.reduce_kernel(op, src, dims, out)
    }

    fn matmul(&self, lhs: View<'_>, rhs: View<'_>, out: DType) -> Result<Storage> {
        Ok(Self::wrap(crate::matmul::matmul(self, lhs, rhs, out)?))
    }

    fn softmax(&self, src: View<'_>, log: bool, out: DType) -> Result<Storage> {
        self.softmax_kernel(src, log, out)
    }

    fn layer_norm(
        &self,
        src: View<'_>,
        weight: Option<View<'_>>,
        bias: Option<View<'_>>,
        eps: f64,
        out: DType,
    ) -> Result<(Storage, Storage, Storage)> {
        self.layer_norm_kernel(src, weight, bias, eps, out)
    }

    fn cat(&self, inputs: &[View<'_>], dim: usize, out: DType) -> Result<Storage> {
        self.cat_kernel(inputs, dim, out)
    }

    fn index_select(
        &self,
        src: View<'_>,
        dim: usize,
        index: View<'_>,
        out: DType,
    ) -> Result<Storage> {
        self.index_select_kernel(src, dim, index, out)
    }

    fn gather(&self, src: View<'_>, dim: usize, index: View<'_>, out: DType) -> Result<Storage> {
        self.gather_kernel(src, dim, index, out)
    }

    fn scatter_add(
        &self,
        shape: &[usize],
        dim: usize,
        index: View<'_>,
        src: View<'_>,
        out: DType,
    ) -> Result<Storage> {
        self.scatter_add_kernel(shape, dim, index, src, out)
    }

    fn non_finite_check_and_unscale(
        &self,
        buffers: &mut [(&mut Storage, &Layout)],
        inv_scale: f32,
    ) -> Result<Vec<NonFiniteCount>> {
        crate::amp::unscale_storages(self, buffers, inv_scale)
    }

    fn adamw_step(
        &self,
        param: &mut Storage,
        grad: View<'_>,
        exp_avg: &mut Storage,
        exp_avg_sq: &mut Storage,
        hyper: &AdamWStep,
    ) -> Result<()> {
        match crate::amp::adamw(self, param, grad, exp_avg, exp_avg_sq, hyper)? {
            Some(()) => Ok(()),
            // f64 parameters or gradients: the composed kernels.
            None => composed_adamw_step(self, param, grad, exp_avg, exp_avg_sq, hyper),
        }
    }
}
