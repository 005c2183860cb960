//! The digits run: a GELU MLP on the bundled digits set with AdamW, through
//! the [`Trainer`] — what the `amp-train` binary, `xtask accuracy` and
//! `xtask bench` run.

use super::{FitConfig, TrainConfig, TrainReport, Trainer};
use crate::data::{digits, DataLoader};
use crate::nn::Module;
use crate::nn::{Gelu, Linear, Sequential};
use crate::optim::{AdamW, AdamWConfig};
use crate::Result;
use amp_tensor::Device;

/// A GELU MLP: `Linear(layers[0], layers[1])`, GELU, …, `Linear(.., layers[n-1])`;
/// layer `i` is seeded with `seed + i`.
pub fn mlp(layers: &[usize], device: &Device, seed: u64) -> Result<Sequential> {
    let mut model = Sequential::new();
    for (i, w) in layers.windows(2).enumerate() {
        if i > 0 {
            model.push(Gelu::new());
        }
        model.push(Linear::seeded(
            w[0],
            w[1],
            true,
            device,
            seed.wrapping_add(i as u64),
        )?);
    }
    Ok(model)
}

/// The trained model with its report.
pub struct TrainOutcome {
    /// The model after the last epoch.
    pub model: Sequential,
    /// The report.
    pub report: TrainReport,
}

/// Trains the GELU MLP of `config.layers` on the digits training split with
/// AdamW on `device`, evaluating on the test split after every epoch.
pub fn train(config: &TrainConfig, device: &Device) -> Result<TrainOutcome> {
    config.validate()?;
    let (train_set, test_set) = digits(device)?;
    let model = mlp(&config.layers, device, config.seed)?;
    let mut opt = AdamW::new(
        model.named_parameters(),
        AdamWConfig {
            lr: config.lr,
            ..Default::default()
        },
    );
    let loader = DataLoader::new(train_set, config.batch_size).shuffle(config.seed);
    let fit: FitConfig = config.fit.clone();
    let report = Trainer::new(&model, &mut opt)
        .evaluate_on("test", test_set)
        .config(fit)
        .run_info("model", "digits GELU MLP")
        .run_info("layers", config.layers.clone())
        .run_info("seed", config.seed)
        .fit(&loader)?;
    Ok(TrainOutcome { model, report })
}
