//! The mission's training loop, as written in ARCHITECTURE.md: bf16 where the
//! device supports it, else f16 with a GradScaler; autocast around the forward
//! pass and the loss only; backward and the optimizer step outside it.
//!
//! Run with `cargo run --release -p amp-train --example train_loop`.

use amp_autocast::autocast;
use amp_dtype::DType;
use amp_scaler::GradScaler;
use amp_tensor::{ops, Tensor};
use amp_train::data::{DataLoader, TensorDataset};
use amp_train::nn::{Linear, Module};
use amp_train::optim::{AdamW, AdamWConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let device = amp_train::best_device(); // CUDA if usable, else CPU
    let dtype = if device.is_bf16_supported() {
        DType::BF16
    } else {
        DType::F16
    };
    println!("dtype is {dtype}");

    let model = Linear::new(10, 2, &device, 0)?; // f32 master weights, seeded init
    let x = Tensor::randn(&[40, 10], DType::F32, &device, 1)?;
    let y = Tensor::randint(0, 2, &[40], &device, 2)?; // I64 class labels
    let loader = DataLoader::new(TensorDataset::new(vec![x, y])?, 2).shuffle(3);

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
            let (x, y) = (&batch[0], &batch[1]);
            opt.zero_grad();
            let loss = {
                let _region = autocast(device.kind(), dtype)?; // forward and loss only
                ops::cross_entropy(&model.forward(x)?, y)?
            }; // the region closes here
            scaler.scale(&loss)?.backward()?; // backward outside autocast
            scaler.step(&mut opt)?; // skipped on inf/NaN, and says so
            scaler.update()?; // a disabled scaler passes through
        }
        println!("Epoch {epoch} finished");
    }

    let _no_grad = amp_tensor::no_grad(); // inference
    let _region = autocast(device.kind(), dtype)?;
    let _out = model.forward(&Tensor::randn(&[4, 10], DType::F32, &device, 9)?)?;
    Ok(())
}
