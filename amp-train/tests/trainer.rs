//! The trainer with models, losses and optimizers other than the digits run's:
//! a user's own module, mean squared error and a closure objective, SGD with
//! momentum, resume of such a run, and the errors for mismatched input.

use amp_tensor::{DType, Device, Tensor};
use amp_train::data::{DataLoader, TensorDataset};
use amp_train::nn::{Linear, Module};
use amp_train::optim::{AdamW, AdamWConfig, Sgd, SgdConfig};
use amp_train::train::{FitConfig, MeanSquaredError, Trainer};
use amp_train::Precision;
use std::path::PathBuf;

/// A user's module: `y = x · w + b` through a `Linear(2, 1)`, squeezed to `[N]`.
struct Regression {
    linear: Linear,
}

impl Module for Regression {
    fn forward(&self, x: &Tensor) -> amp_tensor::Result<Tensor> {
        let y = self.linear.forward(x)?;
        y.reshape(&[y.dims()[0]])
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        self.linear
            .named_parameters()
            .into_iter()
            .map(|(n, t)| (format!("linear.{n}"), t))
            .collect()
    }
}

/// Noiseless data from `y = 2 x0 - 3 x1 + 1`.
fn plane(device: &Device) -> TensorDataset {
    let x = Tensor::randn(&[96, 2], DType::F32, device, 11).unwrap();
    let v = x.to_f64_vec().unwrap();
    let y: Vec<f64> = v.chunks(2).map(|r| 2.0 * r[0] - 3.0 * r[1] + 1.0).collect();
    let y = Tensor::from_f64_slice(&y, &[96], DType::F32, device).unwrap();
    TensorDataset::new(vec![x, y]).unwrap()
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("amp-trainer-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn bits(model: &dyn Module) -> Vec<(String, Vec<u32>)> {
    model
        .named_parameters()
        .into_iter()
        .map(|(n, t)| {
            (
                n,
                t.to_vec::<f32>()
                    .unwrap()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect(),
            )
        })
        .collect()
}

fn sgd(model: &Regression) -> Sgd {
    Sgd::new(
        model.named_parameters(),
        SgdConfig {
            lr: 0.05,
            momentum: 0.9,
            ..Default::default()
        },
    )
}

#[test]
fn a_users_regression_model_recovers_the_plane() {
    let device = amp_cpu::device();
    for precision in [Precision::F32, Precision::BF16, Precision::F16] {
        let model = Regression {
            linear: Linear::seeded(2, 1, true, &device, 5).unwrap(),
        };
        let mut opt = sgd(&model);
        let data = plane(&device);
        let report = Trainer::new(&model, &mut opt)
            .objective(MeanSquaredError)
            .evaluate_on("train", data.clone())
            .config(FitConfig {
                precision,
                epochs: 40,
                ..Default::default()
            })
            .fit(&DataLoader::new(data, 16).shuffle(1))
            .unwrap();
        // The generating plane is the exact answer; bf16/f16 forward passes
        // round the inputs and weights to 8 or 11 significant bits.
        let w = model.linear.weight().to_f64_vec().unwrap();
        let b = model.linear.bias().unwrap().to_f64_vec().unwrap();
        let tol = if precision == Precision::F32 {
            1e-3
        } else {
            3e-2
        };
        assert!(
            (w[0] - 2.0).abs() < tol && (w[1] + 3.0).abs() < tol && (b[0] - 1.0).abs() < tol,
            "{precision}: w {w:?} b {b:?}\n{}",
            report.summary()
        );
        assert_eq!(report.objective, "mean squared error");
        assert_eq!(report.optimizer, "SGD");
        assert_eq!(report.eval_accuracy, None, "no accuracy for a regression");
        assert!(report.eval_loss.unwrap() < 1e-2, "{}", report.summary());
        assert_eq!(report.steps, 40 * 6);
        assert_eq!(report.history.len(), 40);
    }
}

#[test]
fn a_closure_objective_trains_and_is_named_loss() {
    let device = Device::reference();
    let model = Regression {
        linear: Linear::seeded(2, 1, true, &device, 5).unwrap(),
    };
    let mut opt = AdamW::new(
        model.named_parameters(),
        AdamWConfig {
            lr: 0.05,
            ..Default::default()
        },
    );
    let mae = |out: &Tensor, batch: &[Tensor]| -> amp_train::Result<Tensor> {
        Ok(out.sub(&batch[1])?.abs()?.mean_all()?)
    };
    let data = plane(&device);
    let report = Trainer::new(&model, &mut opt)
        .objective(mae)
        .evaluate_on("train", data.clone())
        .config(FitConfig {
            precision: Precision::F32,
            epochs: 30,
            ..Default::default()
        })
        .fit(&DataLoader::new(data.clone(), 16))
        .unwrap();
    assert_eq!(report.objective, "loss");
    // The evaluation's loss is the closure's, recomputed here in f64.
    let x = data.tensors()[0].to_f64_vec().unwrap();
    let y = data.tensors()[1].to_f64_vec().unwrap();
    let w = model.linear.weight().to_f64_vec().unwrap();
    let b = model.linear.bias().unwrap().to_f64_vec().unwrap()[0];
    let want = x
        .chunks(2)
        .zip(&y)
        .map(|(r, y)| (r[0] * w[0] + r[1] * w[1] + b - y).abs())
        .sum::<f64>()
        / y.len() as f64;
    let got = report.eval_loss.unwrap();
    assert!((got - want).abs() < 1e-5 * want.max(1.0), "{got} vs {want}");
    assert!(got < 0.2, "{}", report.summary());
}

#[test]
fn a_resumed_sgd_run_of_a_users_model_is_bit_identical() {
    let device = amp_cpu::device();
    let data = plane(&device);
    let run = |epochs: usize, checkpoint: Option<PathBuf>, resume: Option<PathBuf>| {
        let model = Regression {
            linear: Linear::seeded(2, 1, true, &device, 5).unwrap(),
        };
        let mut opt = sgd(&model);
        let report = Trainer::new(&model, &mut opt)
            .objective(MeanSquaredError)
            .run_info("model", "plane")
            .config(FitConfig {
                precision: Precision::F16,
                epochs,
                checkpoint,
                resume,
                ..Default::default()
            })
            .fit(&DataLoader::new(data.clone(), 16).shuffle(4))
            .unwrap();
        (bits(&model), report)
    };
    let (full, full_report) = run(6, None, None);
    let dir = temp("sgd");
    run(2, Some(dir.clone()), None);
    let (resumed, report) = run(6, None, Some(dir.clone()));
    assert_eq!(resumed, full);
    assert_eq!(report.start_epoch, 2);
    assert_eq!(report.steps, full_report.steps);
    assert_eq!(
        report
            .step_losses
            .iter()
            .map(|v| v.to_bits())
            .collect::<Vec<_>>(),
        full_report
            .step_losses
            .iter()
            .map(|v| v.to_bits())
            .collect::<Vec<_>>()
    );
    assert_eq!(report.final_loss_scale, full_report.final_loss_scale);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn resuming_into_another_run_is_refused_before_anything_changes() {
    let device = Device::reference();
    let data = plane(&device);
    let dir = temp("refuse");
    let model = Regression {
        linear: Linear::seeded(2, 1, true, &device, 5).unwrap(),
    };
    let mut opt = sgd(&model);
    Trainer::new(&model, &mut opt)
        .objective(MeanSquaredError)
        .run_info("model", "plane")
        .config(FitConfig {
            precision: Precision::F32,
            epochs: 1,
            checkpoint: Some(dir.clone()),
            ..Default::default()
        })
        .fit(&DataLoader::new(data.clone(), 16))
        .unwrap();

    let fresh = Regression {
        linear: Linear::seeded(2, 1, true, &device, 6).unwrap(),
    };
    let before = bits(&fresh);
    let resume = |opt: &mut dyn FnMut() -> amp_train::Result<amp_train::train::TrainReport>| {
        opt().unwrap_err().to_string()
    };
    let config = FitConfig {
        precision: Precision::F32,
        epochs: 2,
        resume: Some(dir.clone()),
        ..Default::default()
    };
    // Another record of the run.
    let err = resume(&mut || {
        Trainer::new(&fresh, &mut sgd(&fresh))
            .objective(MeanSquaredError)
            .run_info("model", "cube")
            .config(config.clone())
            .fit(&DataLoader::new(data.clone(), 16))
    });
    assert!(err.contains("model plane") && err.contains("cube"), "{err}");
    // Another optimizer.
    let err = resume(&mut || {
        let mut adamw = AdamW::new(fresh.named_parameters(), AdamWConfig::default());
        Trainer::new(&fresh, &mut adamw)
            .objective(MeanSquaredError)
            .run_info("model", "plane")
            .config(config.clone())
            .fit(&DataLoader::new(data.clone(), 16))
    });
    assert!(
        err.contains("optimizer SGD") && err.contains("AdamW"),
        "{err}"
    );
    // Another momentum.
    let err = resume(&mut || {
        let mut other = Sgd::new(
            fresh.named_parameters(),
            SgdConfig {
                lr: 0.05,
                momentum: 0.5,
                ..Default::default()
            },
        );
        Trainer::new(&fresh, &mut other)
            .objective(MeanSquaredError)
            .run_info("model", "plane")
            .config(config.clone())
            .fit(&DataLoader::new(data.clone(), 16))
    });
    assert!(err.contains("momentum 0.9") && err.contains("0.5"), "{err}");
    // Another shuffle.
    let err = resume(&mut || {
        Trainer::new(&fresh, &mut sgd(&fresh))
            .objective(MeanSquaredError)
            .run_info("model", "plane")
            .config(config.clone())
            .fit(&DataLoader::new(data.clone(), 16).shuffle(1))
    });
    assert!(err.contains("shuffle seed"), "{err}");
    assert_eq!(
        bits(&fresh),
        before,
        "a refused resume changes no parameter"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn mismatched_devices_and_batches_are_errors() {
    let reference = Device::reference();
    let cpu = amp_cpu::device();
    let model = Regression {
        linear: Linear::seeded(2, 1, true, &reference, 5).unwrap(),
    };
    let err = Trainer::new(&model, &mut sgd(&model))
        .fit(&DataLoader::new(plane(&cpu), 16))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Trainer::fit") && err.contains("linear.weight") && err.contains("[1, 2]"),
        "{err}"
    );
    // Inputs without targets: the objective names what it needs.
    let inputs = TensorDataset::new(vec![plane(&reference).tensors()[0].clone()]).unwrap();
    let err = Trainer::new(&model, &mut sgd(&model))
        .objective(MeanSquaredError)
        .config(FitConfig {
            precision: Precision::F32,
            epochs: 1,
            ..Default::default()
        })
        .fit(&DataLoader::new(inputs, 16))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("MeanSquaredError") && err.contains("1 tensor"),
        "{err}"
    );
    // A bad setting is refused before anything runs.
    let err = Trainer::new(&model, &mut sgd(&model))
        .config(FitConfig {
            epochs: 0,
            ..Default::default()
        })
        .fit(&DataLoader::new(plane(&reference), 16))
        .unwrap_err()
        .to_string();
    assert!(err.contains("epochs"), "{err}");
}

#[test]
fn batch_limits_train_and_evaluate_on_part_of_an_epoch() {
    let device = Device::reference();
    let model = Regression {
        linear: Linear::seeded(2, 1, true, &device, 5).unwrap(),
    };
    let data = plane(&device); // 96 rows: 6 batches of 16
    let report = Trainer::new(&model, &mut sgd(&model))
        .objective(MeanSquaredError)
        .evaluate_on("train", data.clone())
        .config(FitConfig {
            precision: Precision::F32,
            epochs: 3,
            max_batches_per_epoch: Some(2),
            max_eval_batches: Some(1),
            eval_batch_size: 10,
            ..Default::default()
        })
        .fit(&DataLoader::new(data.clone(), 16).shuffle(2))
        .unwrap();
    assert_eq!(report.steps, 3 * 2);
    assert_eq!(report.step_losses.len(), 6);
    // The evaluation saw the first 10 rows only: their mean squared error, in f64.
    let x = data.tensors()[0].to_f64_vec().unwrap();
    let y = data.tensors()[1].to_f64_vec().unwrap();
    let w = model.linear.weight().to_f64_vec().unwrap();
    let b = model.linear.bias().unwrap().to_f64_vec().unwrap()[0];
    let want = (0..10)
        .map(|i| (x[2 * i] * w[0] + x[2 * i + 1] * w[1] + b - y[i]).powi(2))
        .sum::<f64>()
        / 10.0;
    let got = report.eval_loss.unwrap();
    assert!((got - want).abs() < 1e-5 * want.max(1.0), "{got} vs {want}");
    let err = Trainer::new(&model, &mut sgd(&model))
        .config(FitConfig {
            max_batches_per_epoch: Some(0),
            ..Default::default()
        })
        .fit(&DataLoader::new(data, 16))
        .unwrap_err()
        .to_string();
    assert!(err.contains("max_batches_per_epoch"), "{err}");
}
