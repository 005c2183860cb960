//! [`Linear`]: `y = x Wᵀ + b`.

use super::{sub_seed, Module, Parameter};
use amp_tensor::{ops, DType, Device, Error, Result, Tensor};

/// A fully connected layer (`torch.nn.Linear`): weight `[out, in]`, optional bias `[out]`.
///
/// Initialised as PyTorch does by default: `kaiming_uniform_(a=√5)` for the
/// weight, which is `U(-1/√in, 1/√in)`, and the bias from the same range —
/// drawn from the crate's counter-based generator, so a seed gives the same
/// values on every device. [`Linear::new`] takes its seed from the
/// process-wide generator ([`amp_tensor::random::manual_seed`]);
/// [`Linear::seeded`] takes one.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Parameter,
    bias: Option<Parameter>,
}

impl Linear {
    /// A layer with bias (`nn.Linear(in_features, out_features)`), seeded
    /// from the process-wide generator.
    pub fn new(in_features: usize, out_features: usize, device: &Device) -> Result<Linear> {
        let seed = amp_tensor::random::next_seed();
        Linear::seeded(in_features, out_features, true, device, seed)
    }

    /// A layer without bias (`bias=False`), seeded from the process-wide generator.
    pub fn new_no_bias(in_features: usize, out_features: usize, device: &Device) -> Result<Linear> {
        let seed = amp_tensor::random::next_seed();
        Linear::seeded(in_features, out_features, false, device, seed)
    }

    /// A layer with or without bias, seeded by `seed`.
    pub fn seeded(
        in_features: usize,
        out_features: usize,
        bias: bool,
        device: &Device,
        seed: u64,
    ) -> Result<Linear> {
        if in_features == 0 {
            return Err(Error::invalid(
                "Linear::new",
                format!("in_features must be positive, got {in_features}"),
            ));
        }
        let bound = 1.0 / (in_features as f64).sqrt();
        let weight = Tensor::rand_uniform(
            &[out_features, in_features],
            -bound,
            bound,
            DType::F32,
            device,
            sub_seed(seed, 0),
        )?;
        let bias = if bias {
            Some(Parameter::new(Tensor::rand_uniform(
                &[out_features],
                -bound,
                bound,
                DType::F32,
                device,
                sub_seed(seed, 1),
            )?)?)
        } else {
            None
        };
        Ok(Linear {
            weight: Parameter::new(weight)?,
            bias,
        })
    }

    /// A layer from given tensors (`weight` `[out, in]`, `bias` `[out]`), which become parameters.
    pub fn from_tensors(weight: Tensor, bias: Option<Tensor>) -> Result<Linear> {
        if weight.rank() != 2 {
            return Err(Error::invalid(
                "Linear::from_tensors",
                format!("weight must be 2-D, got {:?}", weight.dims()),
            ));
        }
        if let Some(b) = &bias {
            if b.dims() != [weight.dims()[0]] {
                return Err(Error::ShapeMismatch {
                    op: "Linear::from_tensors",
                    lhs: weight.shape(),
                    rhs: b.shape(),
                });
            }
        }
        Ok(Linear {
            weight: Parameter::new(weight)?,
            bias: bias.map(Parameter::new).transpose()?,
        })
    }

    /// The weight `[out, in]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias `[out]`, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_deref()
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::linear(x, &self.weight, self.bias.as_deref())
    }

    fn own_parameters(&self) -> Vec<(String, Tensor)> {
        let mut p = vec![self.weight.named("weight")];
        p.extend(self.bias.as_ref().map(|b| b.named("bias")));
        p
    }
}
