//! State dicts and one-call checkpoints: loading a PyTorch model's
//! safetensors file, strict and non-strict loads with every bad name listed,
//! nested names, and a training run that continues bit for bit from
//! `checkpoint::save` / `checkpoint::load`.

use amp_autocast::autocast;
use amp_scaler::GradScaler;
use amp_tensor::{ops, DType, Device, Tensor};
use amp_train::checkpoint;
use amp_train::nn::{self, Gelu, LayerNorm, Linear, Module, Parameter, Sequential};
use amp_train::optim::{AdamW, AdamWConfig};
use std::path::{Path, PathBuf};

/// The architecture of `tests/data/make_torch_state.py`.
fn torch_sequential(device: &Device) -> Sequential {
    Sequential::new()
        .add(Linear::new(4, 3, device).unwrap())
        .add(Gelu::new())
        .add(LayerNorm::new(3, device).unwrap())
        .add(Linear::new(3, 2, device).unwrap())
}

/// The values the Python script wrote (see its `value`).
fn torch_value(name: &str, i: usize) -> f64 {
    let mut names = [
        "0.weight", "0.bias", "2.weight", "2.bias", "3.weight", "3.bias",
    ];
    names.sort_unstable();
    let k = names.iter().position(|n| *n == name).unwrap();
    (((i + 1 + k) % 7) as f64 - 3.0) * 0.125
}

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("data")
        .join(name)
}

/// erf by its Taylor series (f64; ample for |x| < 4).
fn erf(x: f64) -> f64 {
    let (mut term, mut sum) = (x, x);
    for n in 1..80 {
        term *= -x * x / n as f64;
        sum += term / (2 * n + 1) as f64;
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

/// The PyTorch model's forward pass in f64, from the script's values.
fn torch_forward(x: &[f64]) -> Vec<f64> {
    let w = |name: &str, i: usize| torch_value(name, i);
    let h: Vec<f64> = (0..3)
        .map(|o| (0..4).map(|i| x[i] * w("0.weight", o * 4 + i)).sum::<f64>() + w("0.bias", o))
        .map(|v| 0.5 * v * (1.0 + erf(v / std::f64::consts::SQRT_2)))
        .collect();
    let mean = h.iter().sum::<f64>() / 3.0;
    let var = h.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 3.0;
    let n: Vec<f64> = (0..3)
        .map(|i| (h[i] - mean) / (var + 1e-5).sqrt() * w("2.weight", i) + w("2.bias", i))
        .collect();
    (0..2)
        .map(|o| (0..3).map(|i| n[i] * w("3.weight", o * 3 + i)).sum::<f64>() + w("3.bias", o))
        .collect()
}

#[test]
fn a_pytorch_state_dict_in_safetensors_loads_into_the_same_architecture() {
    for (file, tol) in [
        ("torch_sequential_f32.safetensors", 1e-6),
        ("torch_sequential_f16.safetensors", 1e-6),
    ] {
        let device = amp_cpu::device();
        let state = checkpoint::load_safetensors(data(file), &device).unwrap();
        let model = torch_sequential(&device);
        let keys = model.load_state_dict(&state, true).unwrap();
        assert!(keys.is_empty(), "{keys:?}");
        for (name, p) in model.named_parameters() {
            assert_eq!(p.dtype(), DType::F32, "{name}: f16 values are converted");
            let want: Vec<f64> = (0..p.numel()).map(|i| torch_value(&name, i)).collect();
            assert_eq!(p.to_f64_vec().unwrap(), want, "{file}: {name}");
        }
        let x = [0.5, -1.0, 2.0, 0.25];
        let got = model
            .forward(&Tensor::from_f64_slice(&x, &[1, 4], DType::F32, &device).unwrap())
            .unwrap()
            .to_f64_vec()
            .unwrap();
        for (g, w) in got.iter().zip(torch_forward(&x)) {
            assert!(
                (g - w).abs() <= tol * w.abs().max(1.0) * 10.0,
                "{file}: {got:?} vs {w}"
            );
        }
    }
}

#[test]
fn our_safetensors_files_round_trip_bit_for_bit() {
    let device = Device::reference();
    let model = torch_sequential(&device);
    let dir = std::env::temp_dir().join(format!("amp-sd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("model.safetensors");
    checkpoint::save_safetensors(&file, &model.state_dict()).unwrap();
    let back = checkpoint::load_safetensors(&file, &device).unwrap();
    let mut want = model.state_dict();
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(back.len(), want.len());
    for ((n, t), (wn, wt)) in back.iter().zip(&want) {
        assert_eq!(n, wn);
        assert_eq!(
            t.to_vec::<f32>().unwrap(),
            wt.to_vec::<f32>().unwrap(),
            "{n}"
        );
    }
    // A directory is not a file to overwrite.
    let err = checkpoint::save_safetensors(&dir, &back)
        .unwrap_err()
        .to_string();
    assert!(err.contains("is a directory"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn strict_loads_list_every_bad_name_and_change_nothing() {
    let device = Device::reference();
    let model = torch_sequential(&device);
    let before: Vec<Vec<f32>> = model
        .parameters()
        .iter()
        .map(|p| p.to_vec().unwrap())
        .collect();
    let mut state = torch_sequential(&device).state_dict();
    state.retain(|(n, _)| n != "3.bias"); // missing
    state.push((
        "4.weight".into(),
        Tensor::zeros(&[1], DType::F32, &device).unwrap(),
    )); // unexpected
    state[0].1 = Tensor::zeros(&[4, 3], DType::F32, &device).unwrap(); // "0.weight" mis-shaped
    let err = model.load_state_dict(&state, true).unwrap_err().to_string();
    for needle in [
        "missing keys [\"3.bias\"]",
        "unexpected keys [\"4.weight\"]",
        "0.weight: [4, 3] f32 in the state, [3, 4] f32 in the module",
    ] {
        assert!(err.contains(needle), "{needle:?} not in {err}");
    }
    let after: Vec<Vec<f32>> = model
        .parameters()
        .iter()
        .map(|p| p.to_vec().unwrap())
        .collect();
    assert_eq!(after, before, "a refused load changes nothing");

    // Non-strict: the shape mismatch is still an error; without it the
    // matching names load and the others are reported.
    assert!(model.load_state_dict(&state, false).is_err());
    state[0].1 = Tensor::ones(&[3, 4], DType::F32, &device).unwrap();
    let keys = model.load_state_dict(&state, false).unwrap();
    assert_eq!(keys.missing, ["3.bias"]);
    assert_eq!(keys.unexpected, ["4.weight"]);
    assert_eq!(
        model.named_parameters()[0].1.to_vec::<f32>().unwrap(),
        vec![1.0; 12]
    );
    // An integer tensor is not a weight.
    let ints = vec![(
        "0.bias".to_string(),
        Tensor::from_vec(vec![1i64, 2, 3], &[3], &device).unwrap(),
    )];
    let err = model.load_state_dict(&ints, false).unwrap_err().to_string();
    assert!(
        err.contains("0.bias: [3] i64 in the state, [3] f32 in the module"),
        "{err}"
    );
}

/// A user's module: nested children by field name, an own parameter, a tied weight.
struct Net {
    encoder: Sequential,
    head: Linear,
    tied: Linear,
    scale: Parameter,
}

impl Module for Net {
    fn forward(&self, x: &Tensor) -> amp_tensor::Result<Tensor> {
        self.head
            .forward(&self.encoder.forward(x)?)?
            .mul(&self.scale)
    }
    fn own_parameters(&self) -> Vec<(String, Tensor)> {
        vec![self.scale.named("scale")]
    }
    fn children(&self) -> Vec<(String, &dyn Module)> {
        nn::children!(self; encoder, head, tied)
    }
}

#[test]
fn nested_names_follow_fields_and_shared_weights_appear_once() {
    let device = Device::reference();
    let head = Linear::new(3, 2, &device).unwrap();
    let net = Net {
        encoder: Sequential::new()
            .add(Linear::new(4, 3, &device).unwrap())
            .add(Gelu::new())
            .add(nn::Dropout::seeded(0.5, 0).unwrap()),
        tied: head.clone(), // the same tensors, as tied weights are
        head,
        scale: Parameter::new(Tensor::ones(&[2], DType::F32, &device).unwrap()).unwrap(),
    };
    let names: Vec<String> = net.named_parameters().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "scale",
            "encoder.0.weight",
            "encoder.0.bias",
            "head.weight",
            "head.bias"
        ]
    );
    assert_eq!(net.num_parameters(), 2 + 12 + 3 + 6 + 2);
    net.eval();
    // The mode reaches the dropout inside the encoder.
    assert!(!net.is_training() && !net.encoder.layers()[2].is_training());
    net.train();
    assert!(net.encoder.layers()[2].is_training());
}

/// Three f16 steps with the scaler: the parameters' bits after them.
fn steps(model: &Sequential, opt: &mut AdamW, scaler: &mut GradScaler, device: &Device, seed: u64) {
    for s in 0..3 {
        let x = Tensor::randn(&[8, 4], DType::F32, device, seed + s).unwrap();
        let y = Tensor::randint(0, 2, &[8], device, seed + 100 + s).unwrap();
        opt.zero_grad();
        let loss = {
            let _r = autocast(device.kind(), DType::F16).unwrap();
            ops::cross_entropy(&model.forward(&x).unwrap(), &y).unwrap()
        };
        scaler.scale(&loss).unwrap().backward().unwrap();
        scaler.clip_grad_norm(opt, 1.0).unwrap();
        scaler.step(opt).unwrap();
        scaler.update().unwrap();
    }
}

fn bits(model: &Sequential) -> Vec<Vec<u32>> {
    model
        .parameters()
        .iter()
        .map(|p| {
            p.to_vec::<f32>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect()
        })
        .collect()
}

#[test]
fn a_run_continues_bit_for_bit_from_a_one_call_checkpoint() {
    let device = amp_cpu::device();
    let dir = std::env::temp_dir().join(format!("amp-sd-ck-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    amp_tensor::random::manual_seed(1);
    let model = torch_sequential(&device);
    let config = AdamWConfig {
        lr: 1e-2,
        ..Default::default()
    };
    let mut opt = AdamW::new(model.named_parameters(), config);
    let mut scaler = GradScaler::builder()
        .init_scale(1024.0)
        .growth_interval(2)
        .build()
        .unwrap();
    steps(&model, &mut opt, &mut scaler, &device, 0);
    checkpoint::save(&dir, &model, &opt, &scaler, serde_json::json!({"epoch": 1})).unwrap();
    steps(&model, &mut opt, &mut scaler, &device, 10);

    amp_tensor::random::manual_seed(2); // other initial weights
    let restored = torch_sequential(&device);
    let mut opt2 = AdamW::new(restored.named_parameters(), config);
    let mut scaler2 = GradScaler::new();
    let extra = checkpoint::load(&dir, &restored, &mut opt2, &mut scaler2).unwrap();
    assert_eq!(extra["epoch"], 1);
    let saved_scale = checkpoint::Checkpoint::open(&dir, &device)
        .unwrap()
        .scaler_state()
        .scale;
    assert_eq!(f64::from(scaler2.get_scale()), saved_scale);
    steps(&restored, &mut opt2, &mut scaler2, &device, 10);
    assert_eq!(bits(&restored), bits(&model));
    assert_eq!(scaler2.get_scale(), scaler.get_scale());

    // Into another architecture: refused, nothing changed.
    let other = Sequential::new().add(Linear::new(4, 5, &device).unwrap());
    let mut opt3 = AdamW::new(other.named_parameters(), config);
    let before = bits(&other);
    let err = checkpoint::load(&dir, &other, &mut opt3, &mut GradScaler::new())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("model state") && err.contains("0.weight"),
        "{err}"
    );
    assert_eq!(bits(&other), before);
    std::fs::remove_dir_all(&dir).unwrap();
}
