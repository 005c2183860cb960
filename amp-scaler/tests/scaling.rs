//! End-to-end scaling runs against unscaled control runs (mirrors PyTorch's
//! test_grad_scaling_{autocast,clipping,clipping_separate_unscale,accumulation,multiple}).
//!
//! Two `Linear(8, 8)` layers, SGD with lr 1, four batches, MSE loss,
//! init_scale 128, growth_interval 1; an inf is injected into the second
//! layer's weight gradient at iteration 2. The scaled run must skip exactly
//! that step and end with the control run's parameters.

mod common;

use amp_scaler::{clip_grad_norm, GradScaler, Optimizer, StepOutcome};
use amp_tensor::{DType, Device, Tensor};
use common::{assert_params_close, batches, fill_grad, mse, Sgd, TwoLinear};

const SKIP_ITER: usize = 2;

fn scaler(enabled: bool) -> GradScaler {
    GradScaler::builder()
        .init_scale(128.0)
        .growth_factor(2.0)
        .growth_interval(1)
        .enabled(enabled)
        .build()
        .unwrap()
}

/// Models, optimizers (lr 1) for a control and a scaling run with identical weights.
fn setup(device: &Device, seed: u64) -> (TwoLinear, Sgd, TwoLinear, Sgd) {
    let control = TwoLinear::new(device, seed);
    let scaling = control.deep_copy();
    let opt_control = Sgd::new(control.params.clone(), 1.0);
    let opt_scaling = Sgd::new(scaling.params.clone(), 1.0);
    (control, opt_control, scaling, opt_scaling)
}

fn refs(model: &TwoLinear) -> Vec<&Tensor> {
    model.params.iter().map(|(_, p)| p).collect()
}

/// Checks the final scale: 128 · growth^unskipped · backoff^skipped, or 1 when disabled.
fn check_scale(scaler: &GradScaler, unskipped: i32, skipped: i32) {
    if scaler.is_enabled() {
        let want =
            128.0 * scaler.growth_factor().powi(unskipped) * scaler.backoff_factor().powi(skipped);
        assert_eq!(scaler.get_scale() as f64, want);
    } else {
        assert_eq!(scaler.get_scale(), 1.0);
    }
}

fn expect_one_skip(outcomes: &[StepOutcome]) {
    for (i, o) in outcomes.iter().enumerate() {
        if i == SKIP_ITER {
            assert_eq!(
                o,
                &StepOutcome::Skipped {
                    inf_params: vec![("1.weight".into(), 64)],
                    nan_params: vec![],
                    ranks: vec![0],
                }
            );
        } else {
            assert_eq!(o, &StepOutcome::Stepped, "iteration {i}");
        }
    }
}

#[test]
fn scaling_case_matches_unscaled_control() {
    for (_, device) in amp_testkit::all_devices() {
        for enabled in [true, false] {
            let data = batches(&device);
            let (control, mut opt_c, scaling, mut opt_s) = setup(&device, 7);
            let mut scaler = scaler(enabled);
            let mut outcomes = Vec::new();
            for (i, (x, target)) in data.iter().enumerate() {
                // Control: plain f32 training, skipping the same step.
                opt_c.zero_grad();
                mse(&control.forward(x), target).backward().unwrap();
                if !enabled || i != SKIP_ITER {
                    opt_c.step().unwrap();
                }
                // Scaling run.
                opt_s.zero_grad();
                let loss = mse(&scaling.forward(x), target);
                scaler.scale(&loss).unwrap().backward().unwrap();
                if i == SKIP_ITER && enabled {
                    fill_grad(scaling.param("1.weight"), f64::INFINITY);
                }
                outcomes.push(scaler.step(&mut opt_s).unwrap());
                scaler.update().unwrap();
            }
            if enabled {
                check_scale(&scaler, 3, 1);
                assert_eq!(scaler.get_scale(), 128.0 * 8.0 * 0.5);
                expect_one_skip(&outcomes);
                assert_eq!((scaler.steps(), scaler.skips()), (3, 1));
            } else {
                check_scale(&scaler, 0, 0);
                assert!(outcomes.iter().all(StepOutcome::is_stepped));
            }
            assert_params_close(&control.values(), &scaling.values(), 1e-7);
            // Training moved the parameters (the comparison is not vacuous).
            let start = TwoLinear::new(&device, 7).values();
            assert!(start.iter().zip(control.values()).any(|(a, b)| a.1 != b.1));
        }
    }
}

#[test]
fn scaling_with_clipping_of_scaled_gradients() {
    let max_norm = 0.2;
    for (_, device) in amp_testkit::all_devices() {
        for enabled in [true, false] {
            let data = batches(&device);
            let (control, mut opt_c, scaling, mut opt_s) = setup(&device, 11);
            let mut scaler = scaler(enabled);
            let mut outcomes = Vec::new();
            for (i, (x, target)) in data.iter().enumerate() {
                opt_c.zero_grad();
                mse(&control.forward(x), target).backward().unwrap();
                let norm = clip_grad_norm(refs(&control), max_norm).unwrap();
                assert!(
                    norm > max_norm,
                    "clipping must be active for this test to mean anything"
                );
                if !enabled || i != SKIP_ITER {
                    opt_c.step().unwrap();
                }
                opt_s.zero_grad();
                let loss = mse(&scaling.forward(x), target);
                scaler.scale(&loss).unwrap().backward().unwrap();
                // Clip the scaled gradients to the scaled bound.
                clip_grad_norm(refs(&scaling), max_norm * scaler.get_scale() as f64).unwrap();
                if i == SKIP_ITER && enabled {
                    fill_grad(scaling.param("1.weight"), f64::INFINITY);
                }
                outcomes.push(scaler.step(&mut opt_s).unwrap());
                scaler.update().unwrap();
            }
            if enabled {
                check_scale(&scaler, 3, 1);
                expect_one_skip(&outcomes);
            } else {
                check_scale(&scaler, 0, 0);
            }
            // The 1e-6 in the clip coefficient's denominator is not scaled, so
            // the runs differ by about 1e-6 relative; PyTorch allows 1e-5 here.
            assert_params_close(&control.values(), &scaling.values(), 1e-5);
        }
    }
}

#[test]
fn scaling_with_unscale_then_clip() {
    let max_norm = 0.2;
    for (_, device) in amp_testkit::all_devices() {
        for enabled in [true, false] {
            let data = batches(&device);
            let (control, mut opt_c, scaling, mut opt_s) = setup(&device, 13);
            let mut scaler = scaler(enabled);
            let mut outcomes = Vec::new();
            for (i, (x, target)) in data.iter().enumerate() {
                opt_c.zero_grad();
                mse(&control.forward(x), target).backward().unwrap();
                clip_grad_norm(refs(&control), max_norm).unwrap();
                if !enabled || i != SKIP_ITER {
                    opt_c.step().unwrap();
                }
                opt_s.zero_grad();
                let loss = mse(&scaling.forward(x), target);
                scaler.scale(&loss).unwrap().backward().unwrap();
                if i == SKIP_ITER && enabled {
                    fill_grad(scaling.param("1.weight"), f64::INFINITY);
                }
                scaler.unscale(&mut opt_s).unwrap();
                let norm = clip_grad_norm(refs(&scaling), max_norm).unwrap();
                assert_eq!(norm.is_infinite(), i == SKIP_ITER && enabled);
                outcomes.push(scaler.step(&mut opt_s).unwrap());
                scaler.update().unwrap();
            }
            if enabled {
                check_scale(&scaler, 3, 1);
                expect_one_skip(&outcomes);
            } else {
                check_scale(&scaler, 0, 0);
            }
            assert_params_close(&control.values(), &scaling.values(), 1e-7);
        }
    }
}

#[test]
fn scaling_with_gradient_accumulation() {
    let iters_to_accumulate = 2;
    for (_, device) in amp_testkit::all_devices() {
        for enabled in [true, false] {
            let data = batches(&device);
            let (control, mut opt_c, scaling, mut opt_s) = setup(&device, 17);
            let mut scaler = scaler(enabled);
            for (i, (x, target)) in data.iter().enumerate() {
                mse(&control.forward(x), target)
                    .mul_scalar(0.5)
                    .unwrap()
                    .backward()
                    .unwrap();
                let loss = mse(&scaling.forward(x), target).mul_scalar(0.5).unwrap();
                scaler.scale(&loss).unwrap().backward().unwrap();
                if (i + 1) % iters_to_accumulate == 0 {
                    opt_c.step().unwrap();
                    opt_c.zero_grad();
                    assert!(scaler.step(&mut opt_s).unwrap().is_stepped());
                    scaler.update().unwrap();
                    opt_s.zero_grad();
                }
            }
            check_scale(&scaler, if enabled { 2 } else { 0 }, 0);
            assert_params_close(&control.values(), &scaling.values(), 1e-7);
        }
    }
}

#[test]
fn scaling_with_two_models_two_optimizers_two_losses() {
    for (_, device) in amp_testkit::all_devices() {
        for enabled in [true, false] {
            let data = batches(&device);
            let (control0, mut opt_c0, scaling0, mut opt_s0) = setup(&device, 19);
            let (control1, mut opt_c1, scaling1, mut opt_s1) = setup(&device, 23);
            let mut scaler = scaler(enabled);
            let losses = |m0: &TwoLinear, m1: &TwoLinear, x: &Tensor, target: &Tensor| {
                let (o0, o1) = (m0.forward(x), m1.forward(x));
                let mix0 = o0
                    .mul_scalar(0.3)
                    .unwrap()
                    .add(&o1.mul_scalar(0.7).unwrap())
                    .unwrap();
                let mix1 = o0
                    .mul_scalar(0.6)
                    .unwrap()
                    .sub(&o1.mul_scalar(0.4).unwrap())
                    .unwrap();
                (mse(&mix0, target), mse(&mix1, target))
            };
            for (i, (x, target)) in data.iter().enumerate() {
                opt_c0.zero_grad();
                opt_c1.zero_grad();
                let (l0, l1) = losses(&control0, &control1, x, target);
                l0.backward().unwrap();
                l1.backward().unwrap();
                opt_c0.step().unwrap();
                if !enabled || i != SKIP_ITER {
                    opt_c1.step().unwrap();
                }

                opt_s0.zero_grad();
                opt_s1.zero_grad();
                let (l0, l1) = losses(&scaling0, &scaling1, x, target);
                let scaled = scaler.scale_all(&[l0, l1]).unwrap();
                scaled[0].backward().unwrap();
                scaled[1].backward().unwrap();
                if i == SKIP_ITER && enabled {
                    fill_grad(scaling1.param("1.weight"), f64::INFINITY);
                }
                // As an extra stress test, unscale one optimizer separately.
                scaler.unscale(&mut opt_s0).unwrap();
                let o0 = scaler.step(&mut opt_s0).unwrap();
                let o1 = scaler.step(&mut opt_s1).unwrap();
                assert!(o0.is_stepped());
                assert_eq!(o1.is_skipped(), enabled && i == SKIP_ITER);
                scaler.update().unwrap();
            }
            check_scale(
                &scaler,
                if enabled { 3 } else { 0 },
                if enabled { 1 } else { 0 },
            );
            assert_params_close(&control0.values(), &scaling0.values(), 1e-7);
            assert_params_close(&control1.values(), &scaling1.values(), 1e-7);
        }
    }
}

#[test]
fn scale_keeps_the_loss_dtype() {
    for (_, device) in amp_testkit::all_devices() {
        let mut scaler = GradScaler::builder().init_scale(1024.0).build().unwrap();
        for dtype in [DType::F16, DType::BF16, DType::F32, DType::F64] {
            let loss = Tensor::scalar(1.5, dtype, &device).unwrap();
            let scaled = scaler.scale(&loss).unwrap();
            assert_eq!(scaled.dtype(), dtype);
            assert_eq!(scaled.scalar_f64().unwrap(), 1536.0);
        }
        // An f16 loss whose scaled value exceeds f16's range becomes inf, as in PyTorch.
        let big = Tensor::scalar(100.0, DType::F16, &device).unwrap();
        assert_eq!(
            scaler.scale(&big).unwrap().scalar_f64().unwrap(),
            f64::INFINITY
        );
        // A non-float output is promoted to f32, as by a 0-dim f32 tensor.
        let ints = Tensor::from_vec(vec![2i64, 3], &[2], &device).unwrap();
        let scaled = scaler.scale(&ints).unwrap();
        assert_eq!(scaled.dtype(), DType::F32);
        assert_eq!(scaled.to_f64_vec().unwrap(), vec![2048.0, 3072.0]);
    }
}

#[test]
fn f16_forward_gradients_reach_f32_master_weights_scaled() {
    // The mixed-precision path: f16 compute, f32 parameters; unscaled gradients match an f32 reference.
    for (_, device) in amp_testkit::all_devices() {
        let model = TwoLinear::new(&device, 29);
        let (x, target) = batches(&device).remove(0);
        let forward16 = |m: &TwoLinear| {
            let p = |n: &str| m.param(n).to_dtype(DType::F16).unwrap();
            let h = amp_tensor::ops::linear(
                &x.to_dtype(DType::F16).unwrap(),
                &p("0.weight"),
                Some(&p("0.bias")),
            )
            .unwrap();
            amp_tensor::ops::linear(&h, &p("1.weight"), Some(&p("1.bias")))
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap()
        };
        let mut opt = Sgd::new(model.params.clone(), 0.0);
        let mut scaler = GradScaler::builder().init_scale(1024.0).build().unwrap();
        scaler
            .scale(&mse(&forward16(&model), &target))
            .unwrap()
            .backward()
            .unwrap();
        scaler.unscale(&mut opt).unwrap();
        let scaled_grads: Vec<Vec<f64>> = model
            .params
            .iter()
            .map(|(_, p)| p.grad().unwrap().to_f64_vec().unwrap())
            .collect();
        opt.zero_grad();
        mse(&model.forward(&x), &target).backward().unwrap();
        for ((name, p), got) in model.params.iter().zip(scaled_grads) {
            assert_eq!(p.grad().unwrap().dtype(), DType::F32);
            let want = p.grad().unwrap().to_f64_vec().unwrap();
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() <= 2e-2 * w.abs().max(0.05),
                    "{name}: {g} vs f32 {w}"
                );
            }
        }
    }
}
