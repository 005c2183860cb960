//! The CNN rows of `cargo xtask bench`: one 3×3 convolution forward +
//! backward (batch 32: 64→64 channels at 56×56 and 128→128 at 28×28), and
//! one training step of a ResNet-style stack (four residual blocks, batch
//! 32, 32×32 inputs), each in f32 and under bf16 autocast. `torch_bench.py`
//! runs the same workloads with `F.conv2d` and torchvision-style blocks.

use super::{median_time, Res};
use amp_autocast::autocast;
use amp_tensor::ops::{self, Conv2dOptions};
use amp_tensor::{DType, Device, Tensor};
use amp_train::nn::{Module, ResNet};
use amp_train::optim::{AdamW, AdamWConfig};

/// The convolution rows: (name, channels, height = width).
pub const CONVS: [(&str, usize, usize); 2] = [("64c56", 64, 56), ("128c28", 128, 28)];

/// Images per batch in every CNN row.
pub const BATCH: usize = 32;

/// Milliseconds of one `3×3, padding 1` convolution forward + backward
/// (gradients of the input and the weight) on `[32, c, hw, hw]`, f32 or
/// under autocast to `low`.
pub fn conv_ms(device: &Device, c: usize, hw: usize, low: Option<DType>) -> Res<f64> {
    let x = Tensor::randn(&[BATCH, c, hw, hw], DType::F32, device, 31)?;
    let w = Tensor::randn(&[c, c, 3, 3], DType::F32, device, 32)?.mul_scalar(0.04)?;
    let probe = Tensor::randn(&[BATCH, c, hw, hw], DType::F32, device, 33)?;
    x.set_requires_grad(true)?;
    w.set_requires_grad(true)?;
    let s = median_time(5, || {
        x.zero_grad();
        w.zero_grad();
        let y = {
            let _region = low.map(|d| autocast(device.kind(), d)).transpose()?;
            ops::conv2d(&x, &w, None, Conv2dOptions::default().padding(1))?
        };
        y.backward_with(&probe.to_dtype(y.dtype())?)?;
        Ok(())
    })?;
    Ok(s * 1e3)
}

/// The bench's ResNet: `conv 3→64, BN, ReLU`, blocks 64→64, 64→64, 64→128
/// (stride 2), 128→128, global average pool, `Linear(128, 10)`.
fn resnet(device: &Device) -> amp_tensor::Result<ResNet> {
    ResNet::seeded(3, 64, &RESNET_BLOCKS, 10, device, 1)
}

/// The bench ResNet's blocks: (in channels, out channels, stride).
const RESNET_BLOCKS: [(usize, usize, usize); 4] =
    [(64, 64, 1), (64, 64, 1), (64, 128, 2), (128, 128, 1)];

/// Milliseconds of one training step (forward, cross-entropy, backward,
/// AdamW) of the ResNet stack on a random batch `[32, 3, 32, 32]`, f32 or
/// under autocast to `low`.
pub fn resnet_step_ms(device: &Device, low: Option<DType>) -> Res<f64> {
    let model = resnet(device)?;
    let mut opt = AdamW::new(model.named_parameters(), AdamWConfig::lr(1e-3));
    let x = Tensor::randn(&[BATCH, 3, 32, 32], DType::F32, device, 40)?;
    let y = Tensor::randint(0, 10, &[BATCH], device, 41)?;
    super::adamw_step_ms(&model, &mut opt, (&x, &y), low, 3)
}
