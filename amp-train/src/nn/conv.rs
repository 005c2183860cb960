//! Convolutional layers: [`Conv2d`], [`BatchNorm2d`], the poolings,
//! [`Flatten`] and a ResNet [`ResidualBlock`].

use super::{sub_seed, Module, Parameter};
use amp_tensor::ops::{self, BatchNormOptions, Conv2dOptions, Pool2dOptions, RunningStats};
use amp_tensor::{DType, Device, Error, Result, Tensor};
use std::sync::atomic::{AtomicBool, Ordering};

/// A 2-D convolution (`torch.nn.Conv2d`): weight `[out, in/groups, k, k]`,
/// optional bias `[out]`, over NCHW inputs.
///
/// Initialised as PyTorch does: weight and bias from `U(-1/√fan_in, 1/√fan_in)`
/// with `fan_in = in/groups · k · k` (`kaiming_uniform_(a=√5)`), seeded.
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Parameter,
    bias: Option<Parameter>,
    options: Conv2dOptions,
}

impl Conv2d {
    /// A `k × k` convolution from `in_channels` to `out_channels` with the
    /// given stride, padding, dilation and groups, seeded by `seed`.
    pub fn seeded(
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        options: Conv2dOptions,
        bias: bool,
        device: &Device,
        seed: u64,
    ) -> Result<Conv2d> {
        let g = options.groups;
        if g == 0
            || in_channels == 0
            || kernel == 0
            || !in_channels.is_multiple_of(g)
            || !out_channels.is_multiple_of(g)
        {
            return Err(Error::invalid(
                "Conv2d::new",
                format!(
                    "channels ({in_channels} in, {out_channels} out) must be positive multiples \
                     of groups ({g}) and the kernel ({kernel}) positive"
                ),
            ));
        }
        let fan_in = in_channels / g * kernel * kernel;
        let bound = 1.0 / (fan_in as f64).sqrt();
        let weight = Tensor::rand_uniform(
            &[out_channels, in_channels / g, kernel, kernel],
            -bound,
            bound,
            DType::F32,
            device,
            sub_seed(seed, 0),
        )?;
        let bias = bias
            .then(|| {
                Tensor::rand_uniform(
                    &[out_channels],
                    -bound,
                    bound,
                    DType::F32,
                    device,
                    sub_seed(seed, 1),
                )
                .and_then(Parameter::new)
            })
            .transpose()?;
        Ok(Conv2d {
            weight: Parameter::new(weight)?,
            bias,
            options,
        })
    }

    /// The weight `[out, in/groups, k, k]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_deref()
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::conv2d(x, &self.weight, self.bias.as_deref(), self.options)
    }

    fn own_parameters(&self) -> Vec<(String, Tensor)> {
        let mut p = vec![self.weight.named("weight")];
        p.extend(self.bias.as_ref().map(|b| b.named("bias")));
        p
    }
}

/// Batch normalisation over the channels of NCHW inputs (`torch.nn.BatchNorm2d`):
/// affine weight (ones) and bias (zeros), f32 running mean (zeros) and
/// variance (ones) with `momentum = 0.1`, `eps = 1e-5`, and the count of
/// training batches — buffers saved in state dicts and checkpoints as
/// `running_mean`, `running_var`, `num_batches_tracked`.
///
/// Training mode normalises with the batch's statistics (in f32, whatever the
/// input's dtype) and updates the running ones; evaluation mode uses the
/// running statistics. A bf16/f16 input keeps its dtype.
#[derive(Debug)]
pub struct BatchNorm2d {
    weight: Parameter,
    bias: Parameter,
    running_mean: Tensor,
    running_var: Tensor,
    num_batches_tracked: Tensor,
    momentum: Option<f64>,
    eps: f64,
    training: AtomicBool,
}

impl BatchNorm2d {
    /// Normalises `channels` channels with PyTorch's defaults.
    pub fn new(channels: usize, device: &Device) -> Result<BatchNorm2d> {
        BatchNorm2d::with_options(channels, Some(0.1), 1e-5, device)
    }

    /// As [`BatchNorm2d::new`] with another momentum (`None`: a cumulative
    /// average over all batches, as PyTorch's `momentum=None`) and `eps`.
    pub fn with_options(
        channels: usize,
        momentum: Option<f64>,
        eps: f64,
        device: &Device,
    ) -> Result<BatchNorm2d> {
        if channels == 0
            || momentum.is_some_and(|m| !(0.0..=1.0).contains(&m))
            || eps.is_nan()
            || eps < 0.0
        {
            return Err(Error::invalid(
                "BatchNorm2d::new",
                format!(
                    "needs channels >= 1, momentum in [0, 1] and eps >= 0, got {channels}, \
                     {momentum:?}, {eps}"
                ),
            ));
        }
        Ok(BatchNorm2d {
            weight: Parameter::new(Tensor::ones(&[channels], DType::F32, device)?)?,
            bias: Parameter::new(Tensor::zeros(&[channels], DType::F32, device)?)?,
            running_mean: Tensor::zeros(&[channels], DType::F32, device)?,
            running_var: Tensor::ones(&[channels], DType::F32, device)?,
            num_batches_tracked: Tensor::from_vec(vec![0i64], &[], device)?,
            momentum,
            eps,
            training: AtomicBool::new(true),
        })
    }

    /// The running mean `[C]` (f32).
    pub fn running_mean(&self) -> &Tensor {
        &self.running_mean
    }

    /// The running (unbiased) variance `[C]` (f32).
    pub fn running_var(&self) -> &Tensor {
        &self.running_var
    }

    /// Training batches seen so far.
    pub fn num_batches_tracked(&self) -> Result<i64> {
        Ok(self.num_batches_tracked.to_vec::<i64>()?[0])
    }
}

impl Module for BatchNorm2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.rank() != 4 {
            return Err(Error::invalid(
                "batch_norm",
                format!("BatchNorm2d expects a 4-D input, got shape {:?}", x.dims()),
            ));
        }
        let training = self.is_training();
        let mut momentum = self.momentum.unwrap_or(0.0);
        if training {
            let seen = self.num_batches_tracked()? + 1;
            self.num_batches_tracked
                .assign(&Tensor::from_vec(vec![seen], &[], x.device())?)?;
            if self.momentum.is_none() {
                momentum = 1.0 / seen as f64;
            }
        }
        ops::batch_norm(
            x,
            Some(RunningStats {
                mean: &self.running_mean,
                var: &self.running_var,
            }),
            Some(&self.weight),
            Some(&self.bias),
            BatchNormOptions {
                training,
                momentum,
                eps: self.eps,
            },
        )
    }

    fn own_parameters(&self) -> Vec<(String, Tensor)> {
        vec![self.weight.named("weight"), self.bias.named("bias")]
    }

    fn own_buffers(&self) -> Vec<(String, Tensor)> {
        vec![
            ("running_mean".into(), self.running_mean.clone()),
            ("running_var".into(), self.running_var.clone()),
            (
                "num_batches_tracked".into(),
                self.num_batches_tracked.clone(),
            ),
        ]
    }

    fn set_training(&self, training: bool) {
        self.training.store(training, Ordering::Relaxed);
    }

    fn is_training(&self) -> bool {
        self.training.load(Ordering::Relaxed)
    }
}

/// 2-D max pooling (`torch.nn.MaxPool2d`).
#[derive(Debug, Clone, Copy)]
pub struct MaxPool2d(pub Pool2dOptions);

impl Module for MaxPool2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::max_pool2d(x, self.0)
    }
}

/// 2-D average pooling (`torch.nn.AvgPool2d`, padding counted in the divisor).
#[derive(Debug, Clone, Copy)]
pub struct AvgPool2d(pub Pool2dOptions);

impl Module for AvgPool2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::avg_pool2d(x, self.0, true)
    }
}

/// Adaptive average pooling to a fixed `[height, width]` (`torch.nn.AdaptiveAvgPool2d`).
#[derive(Debug, Clone, Copy)]
pub struct AdaptiveAvgPool2d(pub [usize; 2]);

impl Module for AdaptiveAvgPool2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::adaptive_avg_pool2d(x, self.0)
    }
}

/// Merges every dimension after the batch into one (`torch.nn.Flatten()`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Flatten;

impl Module for Flatten {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.rank() < 2 {
            return x.reshape(&[x.numel()]);
        }
        x.flatten(1, -1)
    }
}

/// The basic block of a ResNet (torchvision's `BasicBlock`): `3×3 conv → BN
/// → ReLU → 3×3 conv → BN`, plus the input (through a `1×1` conv and BN
/// named `downsample` when the stride or the channel count changes), then
/// ReLU. The convolutions have no bias (the BN that follows has one).
#[derive(Debug)]
pub struct ResidualBlock {
    conv1: Conv2d,
    bn1: BatchNorm2d,
    conv2: Conv2d,
    bn2: BatchNorm2d,
    downsample: Option<Downsample>,
}

/// The shortcut's projection (`downsample.0`, `downsample.1`).
#[derive(Debug)]
struct Downsample {
    conv: Conv2d,
    bn: BatchNorm2d,
}

impl Module for Downsample {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.bn.forward(&self.conv.forward(x)?)
    }
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![
            ("0".into(), &self.conv as &dyn Module),
            ("1".into(), &self.bn as &dyn Module),
        ]
    }
}

impl ResidualBlock {
    /// A block from `in_channels` to `out_channels` whose first convolution
    /// has stride `stride`, seeded by `seed`.
    pub fn seeded(
        in_channels: usize,
        out_channels: usize,
        stride: usize,
        device: &Device,
        seed: u64,
    ) -> Result<ResidualBlock> {
        let conv3 = |i, o, s, part| {
            Conv2d::seeded(
                i,
                o,
                3,
                Conv2dOptions::default().stride(s).padding(1),
                false,
                device,
                sub_seed(seed, part),
            )
        };
        let downsample = (stride != 1 || in_channels != out_channels)
            .then(|| -> Result<Downsample> {
                Ok(Downsample {
                    conv: Conv2d::seeded(
                        in_channels,
                        out_channels,
                        1,
                        Conv2dOptions::default().stride(stride),
                        false,
                        device,
                        sub_seed(seed, 2),
                    )?,
                    bn: BatchNorm2d::new(out_channels, device)?,
                })
            })
            .transpose()?;
        Ok(ResidualBlock {
            conv1: conv3(in_channels, out_channels, stride, 0)?,
            bn1: BatchNorm2d::new(out_channels, device)?,
            conv2: conv3(out_channels, out_channels, 1, 1)?,
            bn2: BatchNorm2d::new(out_channels, device)?,
            downsample,
        })
    }
}

impl Module for ResidualBlock {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = ops::relu(&self.bn1.forward(&self.conv1.forward(x)?)?)?;
        let y = self.bn2.forward(&self.conv2.forward(&y)?)?;
        let shortcut = match &self.downsample {
            Some(d) => d.forward(x)?,
            None => x.clone(),
        };
        // torchvision's in-place `out += identity`: summed in the promoted
        // dtype, kept in the branch's (bf16 under autocast, for an f32 input).
        ops::relu(&y.add(&shortcut)?.to_dtype(y.dtype())?)
    }

    fn children(&self) -> Vec<(String, &dyn Module)> {
        let mut c = super::children!(self; conv1, bn1, conv2, bn2);
        if let Some(d) = &self.downsample {
            c.push(("downsample".into(), d as &dyn Module));
        }
        c
    }
}

/// A small ResNet for images of any size (the CIFAR-style stacks, and the
/// bench's ResNet step): a stem `3×3 conv → BN → ReLU`, [`ResidualBlock`]s,
/// a global average pool and a linear classifier. Parameter names follow
/// torchvision's (`conv`, `bn`, `blocks.{i}.conv1.weight`, …, `fc`).
#[derive(Debug)]
pub struct ResNet {
    conv: Conv2d,
    bn: BatchNorm2d,
    blocks: Vec<ResidualBlock>,
    pool: AdaptiveAvgPool2d,
    fc: super::Linear,
}

impl ResNet {
    /// A stem from `in_channels` to `stem_channels`, one block per
    /// `(in, out, stride)` of `blocks`, and a classifier from the last
    /// block's channels to `classes`, seeded by `seed`.
    pub fn seeded(
        in_channels: usize,
        stem_channels: usize,
        blocks: &[(usize, usize, usize)],
        classes: usize,
        device: &Device,
        seed: u64,
    ) -> Result<ResNet> {
        let conv = Conv2d::seeded(
            in_channels,
            stem_channels,
            3,
            Conv2dOptions::default().padding(1),
            false,
            device,
            sub_seed(seed, 0),
        )?;
        let last = blocks.last().map_or(stem_channels, |b| b.1);
        let blocks = blocks
            .iter()
            .enumerate()
            .map(|(i, &(a, b, s))| {
                ResidualBlock::seeded(a, b, s, device, sub_seed(seed, 10 + i as u64))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ResNet {
            conv,
            bn: BatchNorm2d::new(stem_channels, device)?,
            blocks,
            pool: AdaptiveAvgPool2d([1, 1]),
            fc: super::Linear::seeded(last, classes, true, device, sub_seed(seed, 1))?,
        })
    }
}

impl Module for ResNet {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut y = ops::relu(&self.bn.forward(&self.conv.forward(x)?)?)?;
        for b in &self.blocks {
            y = b.forward(&y)?;
        }
        self.fc.forward(&self.pool.forward(&y)?.flatten(1, -1)?)
    }

    fn children(&self) -> Vec<(String, &dyn Module)> {
        let mut c = super::children!(self; conv, bn);
        for (i, b) in self.blocks.iter().enumerate() {
            c.push((format!("blocks.{i}"), b as &dyn Module));
        }
        c.push(("pool".into(), &self.pool as &dyn Module));
        c.push(("fc".into(), &self.fc as &dyn Module));
        c
    }
}
