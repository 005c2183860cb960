//! The language-model run: a character-level [`Gpt`] on the bundled text
//! corpus with AdamW, through the [`Trainer`] — what `amp-train lm` runs.

use super::{FitConfig, TrainReport, Trainer};
use crate::data::text::{regex_automata, TextCorpus};
use crate::data::DataLoader;
use crate::nn::{Gpt, GptConfig, Module};
use crate::optim::{AdamW, AdamWConfig};
use crate::{Error, Result};
use amp_tensor::Device;

/// The LM run's settings (`amp-train lm`'s flags).
#[derive(Debug, Clone)]
pub struct LmConfig {
    /// Precision, checkpoints, progress and the divergence stop; `epochs`
    /// and the batch limits are set from `steps` and `eval_interval`.
    pub fit: FitConfig,
    /// Optimizer steps in total.
    pub steps: usize,
    /// Steps between evaluations on the validation text (one "epoch").
    pub eval_interval: usize,
    /// Sequences per batch.
    pub batch_size: usize,
    /// AdamW learning rate.
    pub lr: f64,
    /// Seeds the initialisation, the shuffle and dropout.
    pub seed: u64,
    /// Tokens per sequence.
    pub context: usize,
    /// Transformer blocks.
    pub layers: usize,
    /// Width of the residual stream.
    pub d_model: usize,
    /// Attention heads.
    pub heads: usize,
    /// Dropout probability.
    pub dropout: f64,
}

impl Default for LmConfig {
    fn default() -> Self {
        LmConfig {
            fit: FitConfig::default(),
            steps: 600,
            eval_interval: 100,
            batch_size: 32,
            lr: 3e-3,
            seed: 0,
            context: 128,
            layers: 4,
            d_model: 128,
            heads: 4,
            dropout: 0.0,
        }
    }
}

impl LmConfig {
    /// The model these settings describe, for a vocabulary of `vocab` tokens.
    pub fn gpt(&self, vocab: usize) -> GptConfig {
        GptConfig {
            vocab,
            context: self.context,
            layers: self.layers,
            d_model: self.d_model,
            heads: self.heads,
        }
    }

    /// Checks the ranges: positive sizes, `d_model` a multiple of `heads`,
    /// lr finite and > 0, dropout in [0, 1).
    pub fn validate(&self) -> Result<()> {
        for (what, v) in [
            ("steps", self.steps),
            ("eval_interval", self.eval_interval),
            ("batch_size", self.batch_size),
            ("context", self.context),
            ("layers", self.layers),
            ("d_model", self.d_model),
            ("heads", self.heads),
        ] {
            if v == 0 {
                return Err(Error::config(what, "must be at least 1, got 0"));
            }
        }
        if !self.d_model.is_multiple_of(self.heads) {
            return Err(Error::config(
                "d_model",
                format!(
                    "must be a multiple of heads ({}), got {}",
                    self.heads, self.d_model
                ),
            ));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::config(
                "lr",
                format!("must be a finite number > 0, got {}", self.lr),
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::config(
                "dropout",
                format!("must be in [0, 1), got {}", self.dropout),
            ));
        }
        Ok(())
    }

    /// The trainer's settings: `steps / eval_interval` epochs (rounded up)
    /// of `eval_interval` batches, 8 validation batches.
    pub fn fit_config(&self) -> FitConfig {
        FitConfig {
            epochs: self.steps.div_ceil(self.eval_interval),
            max_batches_per_epoch: Some(self.eval_interval),
            max_eval_batches: Some(8),
            eval_batch_size: self.batch_size,
            ..self.fit.clone()
        }
    }
}

/// The trained model, its report and a sample of its text.
pub struct LmOutcome {
    /// The model after the last step.
    pub model: Gpt,
    /// The report; `eval_loss` is the validation loss per token (nats).
    pub report: TrainReport,
    /// The corpus (its vocabulary decodes the model's tokens).
    pub corpus: &'static TextCorpus,
}

/// Trains a [`Gpt`] of `config` on the bundled corpus on `device`,
/// evaluating the validation loss every `eval_interval` steps.
pub fn train_lm(config: &LmConfig, device: &Device) -> Result<LmOutcome> {
    config.validate()?;
    let corpus = regex_automata()?;
    let train = corpus.windows(config.context, false, device)?;
    let valid = corpus.windows(config.context, true, device)?;
    let model = Gpt::seeded(
        config.gpt(corpus.vocab().len()),
        config.dropout,
        device,
        config.seed,
    )?;
    let mut opt = AdamW::new(model.named_parameters(), AdamWConfig::lr(config.lr));
    let loader = DataLoader::new(train, config.batch_size).shuffle(config.seed);
    let report = Trainer::new(&model, &mut opt)
        .evaluate_on("validation", valid)
        .config(config.fit_config())
        .run_info("model", "character-level GPT on regex-automata's source")
        .run_info("context", config.context)
        .run_info("layers", config.layers)
        .run_info("d_model", config.d_model)
        .run_info("heads", config.heads)
        .run_info("dropout", config.dropout)
        .run_info("seed", config.seed)
        .fit(&loader)?;
    Ok(LmOutcome {
        model,
        report,
        corpus,
    })
}
