//! [`TransformerBlock`] (pre-LN) and [`Gpt`], a decoder-only language model.

use super::{sub_seed, Dropout, Embedding, Gelu, LayerNorm, Linear, Module, MultiheadAttention};
use amp_tensor::ops::{self, GeluApprox};
use amp_tensor::{Device, Error, Result, Tensor};

/// A pre-LN transformer layer: `x + attn(norm1(x))`, then
/// `x + linear2(gelu(linear1(norm2(x))))`, with dropout after the attention
/// and after the MLP — PyTorch's `nn.TransformerEncoderLayer(d_model, nhead,
/// 4 * d_model, dropout, activation="gelu", batch_first=True,
/// norm_first=True)` with a causal mask, and its parameter names
/// (`self_attn.in_proj_weight`, `linear1.weight`, `norm1.weight`, …). The
/// GELU is the tanh approximation (GPT-2's).
#[derive(Debug)]
pub struct TransformerBlock {
    self_attn: MultiheadAttention,
    linear1: Linear,
    linear2: Linear,
    norm1: LayerNorm,
    norm2: LayerNorm,
    gelu: Gelu,
    dropout1: Dropout,
    dropout2: Dropout,
}

impl TransformerBlock {
    /// A causal block of width `d_model` with `heads` heads and dropout `p`, seeded by `seed`.
    pub fn seeded(
        d_model: usize,
        heads: usize,
        p: f64,
        device: &Device,
        seed: u64,
    ) -> Result<Self> {
        let s = |part| sub_seed(seed, part);
        Ok(TransformerBlock {
            self_attn: MultiheadAttention::seeded(d_model, heads, true, device, s(0))?
                .with_dropout(p)?,
            linear1: Linear::seeded(d_model, 4 * d_model, true, device, s(1))?,
            linear2: Linear::seeded(4 * d_model, d_model, true, device, s(2))?,
            norm1: LayerNorm::new(d_model, device)?,
            norm2: LayerNorm::new(d_model, device)?,
            gelu: Gelu::with_approximation(GeluApprox::Tanh),
            dropout1: Dropout::seeded(p, s(3))?,
            dropout2: Dropout::seeded(p, s(4))?,
        })
    }
}

impl Module for TransformerBlock {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let a = self
            .dropout1
            .forward(&self.self_attn.forward(&self.norm1.forward(x)?)?)?;
        let x = x.add(&a)?;
        let h = self
            .gelu
            .forward(&self.linear1.forward(&self.norm2.forward(&x)?)?)?;
        x.add(&self.dropout2.forward(&self.linear2.forward(&h)?)?)
    }

    fn children(&self) -> Vec<(String, &dyn Module)> {
        super::children!(self; self_attn, linear1, linear2, norm1, norm2, gelu, dropout1, dropout2)
    }
}

/// The shape of a [`Gpt`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GptConfig {
    /// Tokens in the vocabulary.
    pub vocab: usize,
    /// The longest sequence (positions).
    pub context: usize,
    /// Transformer blocks.
    pub layers: usize,
    /// Width of the residual stream.
    pub d_model: usize,
    /// Attention heads per block.
    pub heads: usize,
}

/// A decoder-only transformer language model (GPT-2's layout, as nanoGPT
/// writes it in PyTorch): token and position embeddings (`wte`, `wpe`),
/// `layers` [`TransformerBlock`]s (`blocks.0`, …), a final `ln_f`, and an
/// output head tied to `wte` (one tensor, listed once). `forward` takes
/// i64 token ids `[B, T]` (`T ≤ context`) and gives logits `[B, T, vocab]`.
#[derive(Debug)]
pub struct Gpt {
    config: GptConfig,
    wte: Embedding,
    wpe: Embedding,
    drop: Dropout,
    blocks: Vec<TransformerBlock>,
    ln_f: LayerNorm,
}

impl Gpt {
    /// A model of `config` with dropout `p`, seeded from the process-wide generator.
    pub fn new(config: GptConfig, p: f64, device: &Device) -> Result<Gpt> {
        Gpt::seeded(config, p, device, amp_tensor::random::next_seed())
    }

    /// A model of `config` with dropout `p`, seeded by `seed`. Embeddings
    /// are drawn from N(0, 0.02²) as GPT-2's.
    pub fn seeded(config: GptConfig, p: f64, device: &Device, seed: u64) -> Result<Gpt> {
        let GptConfig {
            vocab,
            context,
            layers,
            d_model,
            heads,
        } = config;
        if vocab == 0 || context == 0 || layers == 0 {
            return Err(Error::invalid(
                "Gpt::new",
                format!("every size must be positive: {config:?}"),
            ));
        }
        let s = |part| sub_seed(seed, part);
        let small = |e: Embedding| -> Result<Embedding> {
            let _no_grad = amp_tensor::no_grad();
            e.weight().assign(&e.weight().mul_scalar(0.02)?)?;
            Ok(e)
        };
        Ok(Gpt {
            config,
            wte: small(Embedding::seeded(vocab, d_model, device, s(0))?)?,
            wpe: small(Embedding::seeded(context, d_model, device, s(1))?)?,
            drop: Dropout::seeded(p, s(2))?,
            blocks: (0..layers)
                .map(|i| TransformerBlock::seeded(d_model, heads, p, device, s(3 + i as u64)))
                .collect::<Result<_>>()?,
            ln_f: LayerNorm::new(d_model, device)?,
        })
    }

    /// The model's shape.
    pub fn config(&self) -> GptConfig {
        self.config
    }

    /// Continues `prompt` (token ids) by `new_tokens` tokens, each drawn from
    /// the softmax of the last position's logits divided by `temperature`
    /// (the most likely token when `temperature` is 0), reproducibly from
    /// `seed`; the model sees at most the last `context` tokens. Runs under
    /// `no_grad` in evaluation mode (restored afterwards), in whatever
    /// autocast region the caller opened. Returns the new tokens.
    pub fn generate(
        &self,
        prompt: &[i64],
        new_tokens: usize,
        temperature: f64,
        seed: u64,
        device: &Device,
    ) -> Result<Vec<i64>> {
        if prompt.is_empty() || !(temperature >= 0.0 && temperature.is_finite()) {
            return Err(Error::invalid(
                "Gpt::generate",
                format!(
                    "needs a non-empty prompt and a finite temperature >= 0, got {} tokens and {temperature}",
                    prompt.len()
                ),
            ));
        }
        let was_training = self.is_training();
        self.eval();
        let _no_grad = amp_tensor::no_grad();
        let mut tokens = prompt.to_vec();
        let result = (|| {
            for step in 0..new_tokens {
                let window = &tokens[tokens.len().saturating_sub(self.config.context)..];
                let idx = Tensor::from_vec(window.to_vec(), &[1, window.len()], device)?;
                let logits = self.forward(&idx)?;
                let last = logits.narrow(1, window.len() - 1, 1)?.to_f64_vec()?;
                tokens.push(sample(&last, temperature, seed, step as u64) as i64);
            }
            Ok(tokens[prompt.len()..].to_vec())
        })();
        self.set_training(was_training);
        result
    }
}

/// A draw from `softmax(logits / temperature)` (the argmax at temperature 0).
fn sample(logits: &[f64], temperature: f64, seed: u64, index: u64) -> usize {
    let argmax = || {
        logits
            .iter()
            .enumerate()
            .fold((0, f64::NEG_INFINITY), |best, (i, &l)| {
                if l > best.1 {
                    (i, l)
                } else {
                    best
                }
            })
            .0
    };
    if temperature == 0.0 {
        return argmax();
    }
    let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let weights: Vec<f64> = logits
        .iter()
        .map(|l| ((l - max) / temperature).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    if !(total.is_finite() && total > 0.0) {
        return argmax();
    }
    let mut u = amp_tensor::random::uniform(seed, index) * total;
    for (i, w) in weights.iter().enumerate() {
        if u < *w {
            return i;
        }
        u -= w;
    }
    weights.len() - 1
}

impl Module for Gpt {
    fn forward(&self, idx: &Tensor) -> Result<Tensor> {
        if idx.rank() != 2 || idx.dims()[1] > self.config.context || idx.dims()[1] == 0 {
            return Err(Error::invalid(
                "Gpt",
                format!(
                    "expects token ids [batch, time] with 1 <= time <= {}, got {:?} ({})",
                    self.config.context,
                    idx.dims(),
                    idx.dtype()
                ),
            ));
        }
        let t = idx.dims()[1];
        let positions = Tensor::from_vec((0..t as i64).collect(), &[t], idx.device())?;
        let mut x = self.wte.forward(idx)?.add(&self.wpe.forward(&positions)?)?;
        x = self.drop.forward(&x)?;
        for block in &self.blocks {
            x = block.forward(&x)?;
        }
        // The output head shares the token embedding's tensor.
        ops::linear(&self.ln_f.forward(&x)?, self.wte.weight(), None)
    }

    fn children(&self) -> Vec<(String, &dyn Module)> {
        let mut c: Vec<(String, &dyn Module)> = vec![
            ("wte".into(), &self.wte),
            ("wpe".into(), &self.wpe),
            ("drop".into(), &self.drop),
        ];
        c.extend(
            self.blocks
                .iter()
                .enumerate()
                .map(|(i, b)| (format!("blocks.{i}"), b as &dyn Module)),
        );
        c.push(("ln_f".into(), &self.ln_f));
        c
    }
}
