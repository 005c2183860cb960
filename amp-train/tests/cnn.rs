//! Convolutional modules and the digits CNN: batch norm's running statistics
//! against a hand-computed sequence, evaluation against training mode, PyTorch's
//! state-dict names with buffers, a checkpoint round trip, and the digits CNN
//! in f32, bf16 and f16 (with the GradScaler) to the same accuracy.

use amp_autocast::autocast;
use amp_tensor::{DType, Device, Tensor};
use amp_train::checkpoint;
use amp_train::nn::{BatchNorm2d, Module, ResNet, ResidualBlock};
use amp_train::train::{train_cnn, CnnConfig, DigitsCnn, FitConfig};
use amp_train::Precision;

/// Per-channel mean and unbiased variance of `[n, c, l]` values, in f64.
fn channel_stats(v: &[f64], n: usize, c: usize, l: usize) -> (Vec<f64>, Vec<f64>) {
    let count = (n * l) as f64;
    let mut means = vec![0.0; c];
    let mut vars = vec![0.0; c];
    for ch in 0..c {
        let vals: Vec<f64> = (0..n)
            .flat_map(|s| (0..l).map(move |p| (s * c + ch) * l + p))
            .map(|i| v[i])
            .collect();
        means[ch] = vals.iter().sum::<f64>() / count;
        vars[ch] = vals.iter().map(|x| (x - means[ch]).powi(2)).sum::<f64>() / (count - 1.0);
    }
    (means, vars)
}

fn close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "{what}[{i}]: {g} vs {w}"
        );
    }
}

#[test]
fn batch_norm_running_statistics_follow_a_hand_computed_sequence() {
    let device = amp_cpu::device();
    for momentum in [Some(0.1), Some(0.5), None] {
        let bn = BatchNorm2d::with_options(3, momentum, 1e-5, &device).unwrap();
        let (mut rm, mut rv) = (vec![0.0; 3], vec![1.0; 3]);
        for step in 0..4u64 {
            let x = Tensor::randn(&[4, 3, 2, 5], DType::F32, &device, step)
                .unwrap()
                .mul_scalar(1.0 + step as f64)
                .unwrap()
                .add_scalar(step as f64 - 1.5)
                .unwrap();
            let (mean, var) = channel_stats(&x.to_f64_vec().unwrap(), 4, 3, 10);
            // PyTorch: momentum None is the cumulative average 1/num_batches_tracked.
            let m = momentum.unwrap_or(1.0 / (step + 1) as f64);
            for ch in 0..3 {
                rm[ch] = (1.0 - m) * rm[ch] + m * mean[ch];
                rv[ch] = (1.0 - m) * rv[ch] + m * var[ch];
            }
            bn.forward(&x).unwrap();
            let what = format!("momentum {momentum:?} step {step}");
            close(&bn.running_mean().to_f64_vec().unwrap(), &rm, 1e-5, &what);
            close(&bn.running_var().to_f64_vec().unwrap(), &rv, 1e-5, &what);
            assert_eq!(bn.num_batches_tracked().unwrap(), step as i64 + 1);
        }
        // Evaluation mode: the running statistics normalise, and nothing updates.
        bn.eval();
        let x = Tensor::randn(&[2, 3, 2, 2], DType::F32, &device, 9).unwrap();
        let y = bn.forward(&x).unwrap().to_f64_vec().unwrap();
        let want: Vec<f64> = x
            .to_f64_vec()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let ch = (i / 4) % 3;
                (v - rm[ch]) / (rv[ch] + 1e-5).sqrt()
            })
            .collect();
        close(&y, &want, 1e-5, "eval output");
        close(
            &bn.running_mean().to_f64_vec().unwrap(),
            &rm,
            1e-5,
            "eval leaves the mean",
        );
        assert_eq!(bn.num_batches_tracked().unwrap(), 4);
    }
}

#[test]
fn batch_norm_keeps_a_low_precision_input_in_its_dtype() {
    let device = amp_cpu::device();
    let bn = BatchNorm2d::new(2, &device).unwrap();
    for dtype in [DType::BF16, DType::F16] {
        let x = Tensor::randn(&[3, 2, 4, 4], DType::F32, &device, 1)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let y = bn.forward(&x).unwrap();
        assert_eq!(y.dtype(), dtype);
        // The running statistics stay f32.
        assert_eq!(bn.running_var().dtype(), DType::F32);
    }
    assert!(bn
        .forward(&Tensor::zeros(&[3, 2, 4], DType::F32, &device).unwrap())
        .is_err());
    // One value per channel cannot give a batch variance.
    let err = bn
        .forward(&Tensor::zeros(&[1, 2, 1, 1], DType::F32, &device).unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("batch_norm") && err.contains("more than one value"),
        "{err}"
    );
}

#[test]
fn a_residual_block_names_its_state_like_torchvision() {
    let device = Device::reference();
    let block = ResidualBlock::seeded(2, 4, 2, &device, 0).unwrap();
    let names: Vec<String> = block.state_dict().into_iter().map(|(n, _)| n).collect();
    let bn = |p: &str| {
        [
            "weight",
            "bias",
            "running_mean",
            "running_var",
            "num_batches_tracked",
        ]
        .map(|s| format!("{p}.{s}"))
    };
    let mut want = vec!["conv1.weight".to_string()];
    want.extend(bn("bn1"));
    want.push("conv2.weight".into());
    want.extend(bn("bn2"));
    want.push("downsample.0.weight".into());
    want.extend(bn("downsample.1"));
    // Parameters first, then buffers (as named_parameters, then named_buffers).
    let (mut params, mut buffers): (Vec<String>, Vec<String>) = want
        .into_iter()
        .partition(|n| n.ends_with("weight") || n.ends_with("bias"));
    params.append(&mut buffers);
    assert_eq!(names, params);
    let y = block
        .forward(&Tensor::randn(&[2, 2, 5, 5], DType::F32, &device, 1).unwrap())
        .unwrap();
    assert_eq!(y.dims(), &[2, 4, 3, 3]);
}

#[test]
fn a_resnet_names_its_parameters_like_torchvision_and_trains_every_one() {
    let device = Device::reference();
    let net = ResNet::seeded(3, 4, &[(4, 4, 1), (4, 6, 2)], 5, &device, 0).unwrap();
    let names: Vec<String> = net.named_parameters().into_iter().map(|(n, _)| n).collect();
    let block = |i: usize, downsample: bool| {
        let mut v: Vec<String> = ["conv1.weight", "bn1.weight", "bn1.bias", "conv2.weight"]
            .iter()
            .chain(&["bn2.weight", "bn2.bias"])
            .map(|s| format!("blocks.{i}.{s}"))
            .collect();
        if downsample {
            v.extend(
                [
                    "downsample.0.weight",
                    "downsample.1.weight",
                    "downsample.1.bias",
                ]
                .map(|s| format!("blocks.{i}.{s}")),
            );
        }
        v
    };
    let mut want: Vec<String> = ["conv.weight", "bn.weight", "bn.bias"]
        .map(String::from)
        .to_vec();
    want.extend(block(0, false));
    want.extend(block(1, true));
    want.extend(["fc.weight", "fc.bias"].map(String::from));
    assert_eq!(names, want);
    let x = Tensor::randn(&[2, 3, 6, 6], DType::F32, &device, 1).unwrap();
    let logits = net.forward(&x).unwrap();
    assert_eq!(logits.dims(), &[2, 5]);
    let target = Tensor::from_vec(vec![1i64, 4], &[2], &device).unwrap();
    amp_tensor::ops::cross_entropy(&logits, &target)
        .unwrap()
        .backward()
        .unwrap();
    for (name, p) in net.named_parameters() {
        let g = p.grad().unwrap_or_else(|| panic!("{name} has no gradient"));
        let g: Vec<f32> = g.to_vec().unwrap();
        assert!(g.iter().any(|v| *v != 0.0), "{name}: gradient all zero");
    }
}

#[test]
fn a_cnn_checkpoint_restores_parameters_and_running_statistics() {
    let device = amp_cpu::device();
    let model = DigitsCnn::seeded(4, &device, 3).unwrap();
    let x = Tensor::rand_uniform(&[8, 64], 0.0, 1.0, DType::F32, &device, 4).unwrap();
    for _ in 0..3 {
        model.forward(&x).unwrap();
    }
    let dir = std::env::temp_dir().join(format!("amp-cnn-state-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("cnn.safetensors");
    checkpoint::save_safetensors(&path, &model.state_dict()).unwrap();
    let other = DigitsCnn::seeded(4, &device, 99).unwrap();
    let loaded = checkpoint::load_safetensors(&path, &device).unwrap();
    other.load_state_dict(&loaded, true).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    for ((n, a), (m, b)) in model.state_dict().iter().zip(other.state_dict().iter()) {
        assert_eq!(n, m);
        assert_eq!(a.to_f64_vec().unwrap(), b.to_f64_vec().unwrap(), "{n}");
    }
    model.eval();
    other.eval();
    assert_eq!(
        model.forward(&x).unwrap().to_vec::<f32>().unwrap(),
        other.forward(&x).unwrap().to_vec::<f32>().unwrap()
    );
}

#[test]
fn conv_batch_norm_relu_pool_chains_keep_the_region_dtype() {
    // PyTorch's CPU autocast: conv2d lowers, batch_norm takes the bf16
    // activation with its f32 parameters and keeps bf16, pooling passes through.
    let device = amp_cpu::device();
    let block = ResidualBlock::seeded(3, 3, 1, &device, 0).unwrap();
    let x = Tensor::randn(&[2, 3, 6, 6], DType::F32, &device, 2).unwrap();
    for dtype in [DType::BF16, DType::F16] {
        let _region = autocast(device.kind(), dtype).unwrap();
        let y = block.forward(&x).unwrap();
        assert_eq!(y.dtype(), dtype);
        let pooled =
            amp_tensor::ops::max_pool2d(&y, amp_tensor::ops::Pool2dOptions::new(2)).unwrap();
        assert_eq!(pooled.dtype(), dtype);
    }
}

#[test]
fn the_digits_cnn_reaches_the_same_accuracy_in_every_precision() {
    let device = amp_cpu::device();
    let run = |precision| {
        let config = CnnConfig {
            fit: FitConfig {
                precision,
                ..CnnConfig::default().fit
            },
            ..CnnConfig::default()
        };
        train_cnn(&config, &device).unwrap().report
    };
    let f32_run = run(Precision::F32);
    let f32_acc = f32_run.eval_accuracy.unwrap();
    assert!(f32_acc >= 0.97, "f32 accuracy {f32_acc}");
    for (precision, dtype) in [(Precision::BF16, DType::BF16), (Precision::F16, DType::F16)] {
        let r = run(precision);
        let acc = r.eval_accuracy.unwrap();
        println!(
            "{dtype}: {acc:.4} (f32 {f32_acc:.4}), {} skipped, scale {:?}",
            r.skipped_steps, r.final_loss_scale
        );
        assert_eq!(r.precision.dtype, dtype);
        assert!(acc >= 0.97, "{dtype} accuracy {acc}");
        assert!(
            (acc - f32_acc).abs() <= 0.01 + 1e-9,
            "{dtype} {acc} vs f32 {f32_acc}"
        );
        // The convolutions ran in low precision; f16 had the GradScaler.
        assert!(r.ops.low_precision > 0, "{:?}", r.ops);
        assert_ne!(r.step_losses, f32_run.step_losses);
        assert_eq!(r.final_loss_scale.is_some(), dtype == DType::F16);
    }
}
