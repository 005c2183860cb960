//! [`MultiheadAttention`]: self-attention over `[batch, time, embed]`.

use super::{sub_seed, Linear, Module, Parameter};
use amp_tensor::{ops, DType, Device, Error, Result, Tensor};
use std::sync::atomic::{AtomicBool, Ordering};

/// Multi-head self-attention (`torch.nn.MultiheadAttention(embed_dim,
/// num_heads, batch_first=True)` called as `mha(x, x, x)`): one input
/// projection to queries, keys and values, `num_heads` heads attending
/// through [`ops::scaled_dot_product_attention`], and an output projection.
/// Parameters are named as PyTorch's: `in_proj_weight` `[3E, E]`,
/// `in_proj_bias` `[3E]`, `out_proj.weight`, `out_proj.bias`; initialised as
/// PyTorch does (Xavier-uniform input projection, zero biases).
#[derive(Debug)]
pub struct MultiheadAttention {
    in_proj_weight: Parameter,
    in_proj_bias: Parameter,
    out_proj: Linear,
    num_heads: usize,
    causal: bool,
    dropout: f64,
    training: AtomicBool,
}

impl MultiheadAttention {
    /// Self-attention with `num_heads` heads over vectors of `embed_dim`,
    /// seeded from the process-wide generator. `causal`: each position
    /// attends to itself and the positions before it (a decoder).
    pub fn new(embed_dim: usize, num_heads: usize, causal: bool, device: &Device) -> Result<Self> {
        Self::seeded(
            embed_dim,
            num_heads,
            causal,
            device,
            amp_tensor::random::next_seed(),
        )
    }

    /// As [`MultiheadAttention::new`], seeded by `seed`.
    pub fn seeded(
        embed_dim: usize,
        num_heads: usize,
        causal: bool,
        device: &Device,
        seed: u64,
    ) -> Result<Self> {
        if num_heads == 0 || embed_dim == 0 || !embed_dim.is_multiple_of(num_heads) {
            return Err(Error::invalid(
                "MultiheadAttention::new",
                format!(
                    "embed_dim {embed_dim} must be a positive multiple of num_heads {num_heads}"
                ),
            ));
        }
        // Xavier uniform on the [3E, E] matrix: U(±√(6 / (3E + E))).
        let bound = (6.0 / (4 * embed_dim) as f64).sqrt();
        let w = Tensor::rand_uniform(
            &[3 * embed_dim, embed_dim],
            -bound,
            bound,
            DType::F32,
            device,
            sub_seed(seed, 0),
        )?;
        let out_proj = Linear::seeded(embed_dim, embed_dim, true, device, sub_seed(seed, 1))?;
        let _no_grad = amp_tensor::no_grad();
        out_proj.bias().expect("a bias").assign(&Tensor::zeros(
            &[embed_dim],
            DType::F32,
            device,
        )?)?;
        Ok(MultiheadAttention {
            in_proj_weight: Parameter::new(w)?,
            in_proj_bias: Parameter::new(Tensor::zeros(&[3 * embed_dim], DType::F32, device)?)?,
            out_proj,
            num_heads,
            causal,
            dropout: 0.0,
            training: AtomicBool::new(true),
        })
    }

    /// Dropout on the attention weights in training mode (`dropout=p`).
    pub fn with_dropout(mut self, p: f64) -> Result<Self> {
        if !(0.0..1.0).contains(&p) {
            return Err(Error::invalid(
                "MultiheadAttention::with_dropout",
                format!("p must be in [0, 1), got {p}"),
            ));
        }
        self.dropout = p;
        Ok(self)
    }

    /// The number of heads.
    pub fn num_heads(&self) -> usize {
        self.num_heads
    }

    /// `[B, T, E]` → `[B, H, T, E/H]`.
    fn heads(&self, t: &Tensor) -> Result<Tensor> {
        let (b, n, e) = (t.dims()[0], t.dims()[1], t.dims()[2]);
        t.reshape(&[b, n, self.num_heads, e / self.num_heads])?
            .transpose(1, 2)
    }
}

impl Module for MultiheadAttention {
    /// Self-attention of `x` `[B, T, E]`, giving `[B, T, E]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let e = self.in_proj_weight.dims()[1];
        if x.rank() != 3 || x.dims()[2] != e {
            return Err(Error::invalid(
                "MultiheadAttention",
                format!(
                    "expects [batch, time, {e}], got {:?} ({})",
                    x.dims(),
                    x.dtype()
                ),
            ));
        }
        let (b, t) = (x.dims()[0], x.dims()[1]);
        // One product per third of the packed projection: q, k and v come out
        // contiguous, and their gradients flow back without the zero padding
        // and sums that splitting one [B, T, 3E] product would cost.
        let project = |i: usize| -> Result<Tensor> {
            let w = self.in_proj_weight.narrow(0, i * e, e)?;
            let bias = self.in_proj_bias.narrow(0, i * e, e)?;
            self.heads(&ops::linear(x, &w, Some(&bias))?)
        };
        let (q, k, v) = (project(0)?, project(1)?, project(2)?);
        let p = if self.is_training() {
            self.dropout
        } else {
            0.0
        };
        let y = ops::scaled_dot_product_attention(&q, &k, &v, None, p, self.causal, None)?;
        let y = y.transpose(1, 2)?.contiguous()?.reshape(&[b, t, e])?;
        self.out_proj.forward(&y)
    }

    fn own_parameters(&self) -> Vec<(String, Tensor)> {
        vec![
            self.in_proj_weight.named("in_proj_weight"),
            self.in_proj_bias.named("in_proj_bias"),
        ]
    }

    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![("out_proj".into(), &self.out_proj)]
    }

    fn set_training(&self, training: bool) {
        self.training.store(training, Ordering::Relaxed);
    }

    fn is_training(&self) -> bool {
        self.training.load(Ordering::Relaxed)
    }
}
