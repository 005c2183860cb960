//! [`Embedding`]: a lookup table of vectors.

use super::{sub_seed, Module, Parameter};
use amp_tensor::{ops, DType, Device, Result, Tensor};

/// A table of `num` vectors of length `dim` (`torch.nn.Embedding`), initialised
/// `N(0, 1)` as PyTorch does. `forward` takes i64 indices of any shape and
/// returns `[..., dim]`.
#[derive(Debug, Clone)]
pub struct Embedding {
    weight: Parameter,
}

impl Embedding {
    /// A table (`nn.Embedding(num, dim)`) seeded from the process-wide generator.
    pub fn new(num: usize, dim: usize, device: &Device) -> Result<Embedding> {
        Embedding::seeded(num, dim, device, amp_tensor::random::next_seed())
    }

    /// A table seeded by `seed`.
    pub fn seeded(num: usize, dim: usize, device: &Device, seed: u64) -> Result<Embedding> {
        Ok(Embedding {
            weight: Parameter::new(Tensor::randn(
                &[num, dim],
                DType::F32,
                device,
                sub_seed(seed, 0),
            )?)?,
        })
    }

    /// The table `[num, dim]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
}

impl Module for Embedding {
    fn forward(&self, indices: &Tensor) -> Result<Tensor> {
        ops::embedding(indices, &self.weight)
    }

    fn own_parameters(&self) -> Vec<(String, Tensor)> {
        vec![self.weight.named("weight")]
    }
}
