//! [`F32Island`]: run one numerically sensitive layer in f32 inside an autocast region.

use super::Module;
use amp_tensor::{DType, Result, Tensor};

/// Wraps a module so that it runs with autocast disabled, on an f32 copy of
/// its input — PyTorch's `with autocast(enabled=False): layer(x.float())`.
/// Outside an autocast region it is the inner module unchanged.
#[derive(Debug, Clone)]
pub struct F32Island<M> {
    inner: M,
}

impl<M: Module> F32Island<M> {
    /// Wraps `inner`.
    pub fn new(inner: M) -> Self {
        F32Island { inner }
    }

    /// The wrapped module.
    pub fn inner(&self) -> &M {
        &self.inner
    }
}

impl<M: Module> Module for F32Island<M> {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let kind = x.device().kind();
        if !amp_autocast::is_enabled(kind) {
            return self.inner.forward(x);
        }
        amp_autocast::float32(kind, || {
            let x = if x.dtype().is_float() && x.dtype() != DType::F64 {
                x.to_dtype(DType::F32)?
            } else {
                x.clone()
            };
            self.inner.forward(&x)
        })
    }

    /// The inner module, transparent: its parameters keep their names.
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![(String::new(), &self.inner)]
    }
}
