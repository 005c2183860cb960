//! [`Embedding`]: a lookup table of vectors.

use super::{parameter, sub_seed, Module};
use amp_tensor::{ops, DType, Device, Result, Tensor};

/// A table of `num` vectors of length `dim` (`torch.nn.Embedding`), initialised
/// `N(0, 1)` as PyTorch does. `forward` takes i64 indices of any shape and
/// returns `[..., dim]`.
#[derive(Debug, Clone)]
pub struct Embedding {
    weight: Tensor,
}

impl Embedding {
    /// A table seeded by `seed`.
    pub fn new(num: usize, dim: usize, device: &Device, seed: u64) -> Result<Embedding> {
        Ok(Embedding {
            weight: parameter(Tensor::randn(
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

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        vec![("weight".into(), self.weight.clone())]
    }
}
