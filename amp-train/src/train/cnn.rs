//! The CNN run: a small residual network on the digits images (1×8×8) with
//! AdamW, through the [`Trainer`] — what `amp-train cnn` runs.

use super::{FitConfig, TrainReport, Trainer};
use crate::data::{digits, DataLoader, DIGITS_CLASSES};
use crate::nn::{
    self, AdaptiveAvgPool2d, BatchNorm2d, Conv2d, Flatten, Linear, Module, ResidualBlock,
};
use crate::optim::{AdamW, AdamWConfig};
use crate::{Error, Result};
use amp_tensor::ops::{self, Conv2dOptions};
use amp_tensor::{Device, Tensor};

/// The CNN run's settings (`amp-train cnn`'s flags).
#[derive(Debug, Clone)]
pub struct CnnConfig {
    /// Precision, epochs, checkpoints, progress and the divergence stop.
    pub fit: FitConfig,
    /// Images per batch.
    pub batch_size: usize,
    /// AdamW learning rate.
    pub lr: f64,
    /// Seeds the initialisation and the shuffle.
    pub seed: u64,
    /// Channels of the stem and the first residual block (the second has twice as many).
    pub channels: usize,
}

impl Default for CnnConfig {
    fn default() -> Self {
        CnnConfig {
            fit: FitConfig {
                epochs: 20,
                ..FitConfig::default()
            },
            batch_size: 64,
            lr: 3e-3,
            seed: 0,
            channels: 32,
        }
    }
}

impl CnnConfig {
    /// Checks the ranges: those of [`FitConfig::validate`], batch size and
    /// channels ≥ 1, lr finite and > 0.
    pub fn validate(&self) -> Result<()> {
        self.fit.validate()?;
        for (what, v) in [("batch_size", self.batch_size), ("channels", self.channels)] {
            if v == 0 {
                return Err(Error::config(what, "must be at least 1, got 0"));
            }
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::config(
                "lr",
                format!("must be a finite number > 0, got {}", self.lr),
            ));
        }
        Ok(())
    }
}

/// A residual CNN for 8×8 digit images given as rows of 64 pixels:
/// `3×3 conv (1→c) → BN → ReLU → block (c→c) → block (c→2c, stride 2) →
/// global average pool → Linear(2c, 10)`.
#[derive(Debug)]
pub struct DigitsCnn {
    conv: Conv2d,
    bn: BatchNorm2d,
    layer1: ResidualBlock,
    layer2: ResidualBlock,
    pool: AdaptiveAvgPool2d,
    flatten: Flatten,
    fc: Linear,
}

impl DigitsCnn {
    /// The network with `channels` channels in the stem, seeded by `seed`.
    pub fn seeded(channels: usize, device: &Device, seed: u64) -> Result<DigitsCnn> {
        let c = channels;
        Ok(DigitsCnn {
            conv: Conv2d::seeded(
                1,
                c,
                3,
                Conv2dOptions::default().padding(1),
                false,
                device,
                seed,
            )?,
            bn: BatchNorm2d::new(c, device)?,
            layer1: ResidualBlock::seeded(c, c, 1, device, seed.wrapping_add(1))?,
            layer2: ResidualBlock::seeded(c, 2 * c, 2, device, seed.wrapping_add(2))?,
            pool: AdaptiveAvgPool2d([1, 1]),
            flatten: Flatten,
            fc: Linear::seeded(2 * c, DIGITS_CLASSES, true, device, seed.wrapping_add(3))?,
        })
    }
}

impl Module for DigitsCnn {
    fn forward(&self, x: &Tensor) -> amp_tensor::Result<Tensor> {
        let images = x.reshape(&[x.dims()[0], 1, 8, 8])?;
        let y = ops::relu(&self.bn.forward(&self.conv.forward(&images)?)?)?;
        let y = self.layer2.forward(&self.layer1.forward(&y)?)?;
        self.fc
            .forward(&self.flatten.forward(&self.pool.forward(&y)?)?)
    }

    fn children(&self) -> Vec<(String, &dyn Module)> {
        nn::children!(self; conv, bn, layer1, layer2, pool, flatten, fc)
    }
}

/// The trained model with its report.
pub struct CnnOutcome {
    /// The model after the last epoch.
    pub model: DigitsCnn,
    /// The report (`eval_accuracy`: on the digits test split).
    pub report: TrainReport,
}

/// Trains a [`DigitsCnn`] on the digits training split with AdamW on
/// `device`, evaluating on the test split after every epoch.
pub fn train_cnn(config: &CnnConfig, device: &Device) -> Result<CnnOutcome> {
    config.validate()?;
    let (train_set, test_set) = digits(device)?;
    let model = DigitsCnn::seeded(config.channels, device, config.seed)?;
    let mut opt = AdamW::new(model.named_parameters(), AdamWConfig::lr(config.lr));
    let loader = DataLoader::new(train_set, config.batch_size).shuffle(config.seed);
    let report = Trainer::new(&model, &mut opt)
        .evaluate_on("test", test_set)
        .config(config.fit.clone())
        .run_info("model", "digits residual CNN")
        .run_info("channels", config.channels)
        .run_info("seed", config.seed)
        .fit(&loader)?;
    Ok(CnnOutcome { model, report })
}
