//! Disabling autocast for one numerically sensitive layer (an f32 island),
//! as PyTorch's `with autocast(enabled=False): layer(x.float())`.
//!
//! Inside a bf16/f16 region the linears run in low precision; the layer norm
//! here is kept in f32 explicitly — first with a nested disabled region, then
//! with the reusable `F32Island` wrapper inside a `Sequential`.
//!
//! Run with `cargo run --release -p amp-train --example f32_island`.

use amp_autocast::{autocast, Autocast};
use amp_dtype::DType;
use amp_tensor::Tensor;
use amp_train::nn::{F32Island, Gelu, LayerNorm, Linear, Module, Sequential};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let device = amp_train::best_device();
    let dtype = if device.is_bf16_supported() {
        DType::BF16
    } else {
        DType::F16
    };
    let (fc1, norm, fc2) = (
        Linear::seeded(16, 32, true, &device, 0)?,
        LayerNorm::new(32, &device)?,
        Linear::seeded(32, 4, true, &device, 1)?,
    );
    let x = Tensor::randn(&[8, 16], DType::F32, &device, 2)?;

    let _region = autocast(device.kind(), dtype)?;
    let h = fc1.forward(&x)?;
    println!("fc1 output: {} (autocast {dtype})", h.dtype());
    let h = {
        // The f32 island: autocast off, and the input cast up explicitly.
        let _off = Autocast::new(device.kind()).enabled(false).enter()?;
        norm.forward(&h.to_dtype(DType::F32)?)?
    };
    println!(
        "layer norm output: {} (autocast disabled for this layer)",
        h.dtype()
    );
    let y = fc2.forward(&h)?;
    println!("fc2 output: {} (autocast back on)", y.dtype());

    // The same as a module: F32Island wraps any layer.
    let model = Sequential::new()
        .add(Linear::seeded(16, 32, true, &device, 0)?)
        .add(F32Island::new(LayerNorm::new(32, &device)?))
        .add(Gelu::new())
        .add(Linear::seeded(32, 4, true, &device, 1)?);
    let y = model.forward(&x)?;
    println!(
        "Sequential with an F32Island: output {}, {} parameters",
        y.dtype(),
        model.num_parameters()
    );
    Ok(())
}
