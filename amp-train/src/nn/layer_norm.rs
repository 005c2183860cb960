//! [`LayerNorm`] over the last dimension.

use super::{Module, Parameter};
use amp_tensor::{ops, DType, Device, Result, Tensor};

/// Layer normalisation over the last dimension (`torch.nn.LayerNorm([n])`),
/// with affine weight (ones) and bias (zeros), `eps = 1e-5`.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Parameter,
    bias: Parameter,
    eps: f64,
}

impl LayerNorm {
    /// Normalises vectors of length `n` with PyTorch's defaults.
    pub fn new(n: usize, device: &Device) -> Result<LayerNorm> {
        LayerNorm::with_eps(n, 1e-5, device)
    }

    /// As [`LayerNorm::new`] with another `eps`.
    pub fn with_eps(n: usize, eps: f64, device: &Device) -> Result<LayerNorm> {
        Ok(LayerNorm {
            weight: Parameter::new(Tensor::ones(&[n], DType::F32, device)?)?,
            bias: Parameter::new(Tensor::zeros(&[n], DType::F32, device)?)?,
            eps,
        })
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::layer_norm(x, Some(&self.weight), Some(&self.bias), self.eps)
    }

    fn own_parameters(&self) -> Vec<(String, Tensor)> {
        vec![self.weight.named("weight"), self.bias.named("bias")]
    }
}
