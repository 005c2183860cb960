//! The mission's training loop, verbatim: what `amp-train demo` and
//! `examples/train_loop.rs` run.

use crate::data::{DataLoader, TensorDataset};
use crate::nn::{Linear, Module};
use crate::optim::{AdamW, AdamWConfig};
use amp_autocast::autocast;
use amp_dtype::DType;
use amp_scaler::GradScaler;
use amp_tensor::{ops, Device, Tensor};
use std::io::Write;

/// Runs the mission's loop on `device` — `Linear(10, 2)`, 40 random samples,
/// batch 2, shuffled, AdamW lr 1e-3, 10 epochs, bf16 where supported else f16
/// with a `GradScaler` — printing `dtype is …` and `Epoch N finished` to `out`.
pub fn mission_loop(
    device: &Device,
    out: &mut dyn Write,
) -> Result<(), Box<dyn std::error::Error>> {
    let dtype = if device.is_bf16_supported() {
        DType::BF16
    } else {
        DType::F16
    };
    writeln!(out, "dtype is {dtype}")?;

    amp_tensor::random::manual_seed(0); // torch.manual_seed(0)
    let model = Linear::new(10, 2, device)?; // f32 master weights
    let x = Tensor::randn(&[40, 10], DType::F32, device, 1)?;
    let y = Tensor::randint(0, 2, &[40], device, 2)?; // I64 class labels
    let loader = DataLoader::new(TensorDataset::new(vec![x, y])?, 2)
        .shuffle(3)
        .pairs()?;

    let mut opt = AdamW::new(
        model.named_parameters(),
        AdamWConfig {
            lr: 1e-3,
            ..Default::default()
        },
    );
    let mut scaler = GradScaler::builder().enabled(dtype == DType::F16).build()?;

    for epoch in 0..10 {
        for batch in loader.iter() {
            let (x, y) = batch?;
            opt.zero_grad();
            let loss = {
                let _region = autocast(device.kind(), dtype)?; // forward and loss only
                ops::cross_entropy(&model.forward(&x)?, &y)?
            }; // the region closes here
            scaler.scale(&loss)?.backward()?; // backward outside autocast
            scaler.step(&mut opt)?; // skipped on inf/NaN, and says so
            scaler.update()?; // a disabled scaler passes through
        }
        writeln!(out, "Epoch {epoch} finished")?;
    }

    let _no_grad = amp_tensor::no_grad(); // inference
    let _region = autocast(device.kind(), dtype)?;
    let _out = model.forward(&Tensor::randn(&[4, 10], DType::F32, device, 9)?)?;
    Ok(())
}
