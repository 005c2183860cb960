//! Parameter-free activations: [`Relu`], [`Gelu`], [`Tanh`].

use super::Module;
use amp_tensor::ops::{self, GeluApprox};
use amp_tensor::{Result, Tensor};

/// `max(x, 0)` (`torch.nn.ReLU`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Relu;

impl Relu {
    /// The activation.
    pub fn new() -> Relu {
        Relu
    }
}

impl Module for Relu {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::relu(x)
    }
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
}

/// GELU (`torch.nn.GELU`), exact (erf) by default or with the tanh approximation.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gelu {
    approximate: GeluApprox,
}

impl Gelu {
    /// The exact (erf) form.
    pub fn new() -> Gelu {
        Gelu {
            approximate: GeluApprox::None,
        }
    }

    /// The given form (`approximate='none'` or `'tanh'`).
    pub fn with_approximation(approximate: GeluApprox) -> Gelu {
        Gelu { approximate }
    }
}

impl Module for Gelu {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::gelu(x, self.approximate)
    }
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
}

/// `tanh(x)` (`torch.nn.Tanh`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Tanh;

impl Tanh {
    /// The activation.
    pub fn new() -> Tanh {
        Tanh
    }
}

impl Module for Tanh {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.tanh()
    }
    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }
}
