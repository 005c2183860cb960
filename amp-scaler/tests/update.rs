//! The scale update rule (PyTorch's `_amp_update_scale_`), growth limits,
//! hysteresis, bounds, counters and the consecutive-skip stop.

mod common;

use amp_scaler::{Error, GradScaler, Optimizer, StepOutcome};
use amp_tensor::{DType, Device, Tensor};
use common::{fill_grad, Sgd};

/// One parameter `w` of 4 elements, with loss `sum(w)`: its gradient is the scale.
fn one_param(device: &Device) -> (Tensor, Sgd) {
    let w = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[4], device).unwrap();
    w.set_requires_grad(true).unwrap();
    let opt = Sgd::new(vec![("w".into(), w.clone())], 0.0);
    (w, opt)
}

/// scale → backward → (inject) → step → update; returns the step outcome and the update result.
fn iteration(
    scaler: &mut GradScaler,
    w: &Tensor,
    opt: &mut Sgd,
    inject: Option<f64>,
) -> (StepOutcome, Result<(), Error>) {
    opt.zero_grad();
    let loss = w.sum_all().unwrap();
    scaler.scale(&loss).unwrap().backward().unwrap();
    if let Some(v) = inject {
        fill_grad(w, v);
    }
    let outcome = scaler.step(opt).unwrap();
    (outcome, scaler.update())
}

#[test]
fn update_sequence_matches_pytorch() {
    for (_, device) in amp_testkit::all_devices() {
        let (w, mut opt) = one_param(&device);
        let mut scaler = GradScaler::builder()
            .init_scale(4.0)
            .growth_factor(2.0)
            .backoff_factor(0.25)
            .growth_interval(2)
            .build()
            .unwrap();
        let mut seen = Vec::new();
        for inject in [None, None, Some(f64::INFINITY)] {
            let (_, updated) = iteration(&mut scaler, &w, &mut opt, inject);
            updated.unwrap();
            seen.push((scaler.growth_tracker(), scaler.get_scale()));
        }
        // Two clean steps: (1, 4) then (0, 8); an inf: (0, 2).
        assert_eq!(seen, vec![(1, 4.0), (0, 8.0), (0, 2.0)], "on {device:?}");
    }
}

#[test]
fn nan_counts_as_overflow_and_growth_restarts_after_it() {
    for (_, device) in amp_testkit::all_devices() {
        let (w, mut opt) = one_param(&device);
        let mut scaler = GradScaler::builder()
            .init_scale(16.0)
            .growth_interval(2)
            .build()
            .unwrap();
        iteration(&mut scaler, &w, &mut opt, None).1.unwrap();
        assert_eq!((scaler.growth_tracker(), scaler.get_scale()), (1, 16.0));
        let (outcome, updated) = iteration(&mut scaler, &w, &mut opt, Some(f64::NAN));
        updated.unwrap();
        assert_eq!(
            outcome,
            StepOutcome::Skipped {
                inf_params: vec![],
                nan_params: vec![("w".into(), 4)],
                ranks: vec![0],
            }
        );
        assert_eq!((scaler.growth_tracker(), scaler.get_scale()), (0, 8.0));
        iteration(&mut scaler, &w, &mut opt, None).1.unwrap();
        iteration(&mut scaler, &w, &mut opt, None).1.unwrap();
        assert_eq!((scaler.growth_tracker(), scaler.get_scale()), (0, 16.0));
    }
}

#[test]
fn scale_will_not_overflow() {
    for (_, device) in amp_testkit::all_devices() {
        // As PyTorch's test_grad_scale_will_not_overflow: Linear(5, 1), init 1e38, growth 16, interval 1.
        let w = Tensor::randn(&[1, 5], DType::F32, &device, 3).unwrap();
        let b = Tensor::zeros(&[1], DType::F32, &device).unwrap();
        w.set_requires_grad(true).unwrap();
        b.set_requires_grad(true).unwrap();
        let mut opt = Sgd::new(
            vec![("weight".into(), w.clone()), ("bias".into(), b.clone())],
            1e-3,
        );
        let mut scaler = GradScaler::builder()
            .init_scale(1e38)
            .growth_factor(16.0)
            .growth_interval(1)
            .build()
            .unwrap();
        let x = Tensor::randn(&[1, 5], DType::F32, &device, 4).unwrap();
        let y = Tensor::randn(&[1, 1], DType::F32, &device, 5)
            .unwrap()
            .mul_scalar(1e-30)
            .unwrap();
        for _ in 0..3 {
            opt.zero_grad();
            let out = amp_tensor::ops::linear(&x, &w, Some(&b)).unwrap();
            let loss = out.sub(&y).unwrap().powf(2.0).unwrap().mean_all().unwrap();
            scaler.scale(&loss).unwrap().backward().unwrap();
            scaler.step(&mut opt).unwrap();
            scaler.update().unwrap();
            assert!(
                scaler.get_scale().is_finite(),
                "scale became {}",
                scaler.get_scale()
            );
        }

        // A clean step at 1e38: 1.6e39 is not an f32, so the scale stays and the tracker resets.
        let p = Tensor::ones(&[2], DType::F32, &device).unwrap();
        p.set_requires_grad(true).unwrap();
        let mut opt = Sgd::new(vec![("p".into(), p.clone())], 0.0);
        let mut scaler = GradScaler::builder()
            .init_scale(1e38)
            .growth_factor(16.0)
            .growth_interval(1)
            .build()
            .unwrap();
        let loss = p.sum_all().unwrap().mul_scalar(1e-30).unwrap();
        scaler.scale(&loss).unwrap().backward().unwrap();
        assert!(scaler.step(&mut opt).unwrap().is_stepped());
        scaler.update().unwrap();
        assert_eq!(scaler.get_scale(), 1e38f32);
        assert_eq!(scaler.growth_tracker(), 0);
    }
}

#[test]
fn hysteresis_delays_backoff_until_the_nth_overflow() {
    for (_, device) in amp_testkit::all_devices() {
        let (w, mut opt) = one_param(&device);
        let mut scaler = GradScaler::builder()
            .init_scale(1024.0)
            .growth_interval(2)
            .hysteresis(3)
            .build()
            .unwrap();
        let inf = Some(f64::INFINITY);
        let mut seen = Vec::new();
        for inject in [inf, inf, inf, inf, None, None, inf] {
            let (outcome, updated) = iteration(&mut scaler, &w, &mut opt, inject);
            updated.unwrap();
            assert_eq!(outcome.is_skipped(), inject.is_some());
            seen.push((
                scaler.get_scale(),
                scaler.hysteresis_left(),
                scaler.growth_tracker(),
            ));
        }
        assert_eq!(
            seen,
            vec![
                (1024.0, 2, 0), // first overflow: tolerated
                (1024.0, 1, 0), // second: tolerated
                (512.0, 1, 0),  // third: backs off
                (256.0, 1, 0),  // and every further one until restored
                (256.0, 1, 1),
                (512.0, 3, 0), // growth restores the hysteresis
                (512.0, 2, 0),
            ]
        );

        // consecutive_hysteresis: every clean iteration restores it, so isolated overflows never back off.
        let (w, mut opt) = one_param(&device);
        let mut scaler = GradScaler::builder()
            .init_scale(1024.0)
            .growth_interval(100)
            .hysteresis(2)
            .consecutive_hysteresis(true)
            .build()
            .unwrap();
        for inject in [inf, None, inf, None, inf] {
            iteration(&mut scaler, &w, &mut opt, inject).1.unwrap();
        }
        assert_eq!((scaler.get_scale(), scaler.hysteresis_left()), (1024.0, 1));
        iteration(&mut scaler, &w, &mut opt, inf).1.unwrap();
        assert_eq!((scaler.get_scale(), scaler.hysteresis_left()), (512.0, 1));
    }
}

#[test]
fn min_and_max_scale_bound_automatic_updates() {
    for (_, device) in amp_testkit::all_devices() {
        let (w, mut opt) = one_param(&device);
        let mut scaler = GradScaler::builder()
            .init_scale(128.0)
            .min_scale(100.0)
            .build()
            .unwrap();
        iteration(&mut scaler, &w, &mut opt, Some(f64::INFINITY))
            .1
            .unwrap();
        assert_eq!(scaler.get_scale(), 100.0);
        iteration(&mut scaler, &w, &mut opt, Some(f64::INFINITY))
            .1
            .unwrap();
        assert_eq!(scaler.get_scale(), 100.0);

        let (w, mut opt) = one_param(&device);
        let mut scaler = GradScaler::builder()
            .init_scale(128.0)
            .growth_interval(1)
            .max_scale(300.0)
            .build()
            .unwrap();
        let mut seen = Vec::new();
        for _ in 0..3 {
            iteration(&mut scaler, &w, &mut opt, None).1.unwrap();
            seen.push(scaler.get_scale());
        }
        assert_eq!(seen, vec![256.0, 300.0, 300.0]);
    }
}

#[test]
fn counters_and_consecutive_skip_stop() {
    for (_, device) in amp_testkit::all_devices() {
        let (w, mut opt) = one_param(&device);
        let mut scaler = GradScaler::builder()
            .init_scale(64.0)
            .max_consecutive_skips(3)
            .build()
            .unwrap();
        let inf = Some(f64::INFINITY);
        // inf, inf, clean resets the run; then inf, inf, NaN → the third consecutive one is an Err.
        for inject in [inf, inf, None, inf, inf] {
            iteration(&mut scaler, &w, &mut opt, inject).1.unwrap();
        }
        assert_eq!(
            (scaler.steps(), scaler.skips(), scaler.consecutive_skips()),
            (1, 4, 2)
        );
        let (outcome, updated) = iteration(&mut scaler, &w, &mut opt, Some(f64::NAN));
        assert!(outcome.is_skipped());
        match updated {
            Err(Error::Diverged {
                consecutive_skips,
                limit,
                scale,
                inf_params,
                nan_params,
            }) => {
                assert_eq!((consecutive_skips, limit), (3, 3));
                // Five backoffs from 64.
                assert_eq!(scale, 2.0);
                assert_eq!(scale, scaler.get_scale());
                assert!(inf_params.is_empty());
                assert_eq!(nan_params, vec![("w".to_string(), 4)]);
            }
            other => panic!("expected Diverged, got {other:?}"),
        }
        let message = scaler_err_message(&mut scaler, &w, &mut opt);
        assert!(
            message.contains("4 consecutive iterations skipped"),
            "{message}"
        );
        // The scaler stays usable: a clean iteration resets the run.
        iteration(&mut scaler, &w, &mut opt, None).1.unwrap();
        assert_eq!(scaler.consecutive_skips(), 0);
    }
}

fn scaler_err_message(scaler: &mut GradScaler, w: &Tensor, opt: &mut Sgd) -> String {
    iteration(scaler, w, opt, Some(f64::INFINITY))
        .1
        .unwrap_err()
        .to_string()
}

#[test]
fn update_to_sets_the_scale_and_validates_it() {
    for (_, device) in amp_testkit::all_devices() {
        let (w, mut opt) = one_param(&device);
        let mut scaler = GradScaler::builder()
            .init_scale(8.0)
            .growth_interval(2)
            .build()
            .unwrap();
        iteration(&mut scaler, &w, &mut opt, None).1.unwrap();
        opt.zero_grad();
        scaler
            .scale(&w.sum_all().unwrap())
            .unwrap()
            .backward()
            .unwrap();
        scaler.step(&mut opt).unwrap();
        scaler.update_to(3.0).unwrap();
        // The tracker is left alone, and the per-optimizer state is reset.
        assert_eq!((scaler.get_scale(), scaler.growth_tracker()), (3.0, 1));
        scaler.scale(&w.sum_all().unwrap()).unwrap();
        scaler.unscale(&mut opt).unwrap();
        for bad in [0.0, -1.0, f64::INFINITY, f64::NAN, 1e39] {
            let err = scaler.update_to(bad).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::InvalidSetting {
                        op: "update_to",
                        ..
                    }
                ),
                "{bad}: {err}"
            );
        }
        assert_eq!(scaler.get_scale(), 3.0);
    }
}

#[test]
fn found_inf_combines_over_all_optimizers_stepped() {
    for (_, device) in amp_testkit::all_devices() {
        let (w0, mut opt0) = one_param(&device);
        let (w1, mut opt1) = one_param(&device);
        let mut scaler = GradScaler::builder()
            .init_scale(32.0)
            .growth_interval(1)
            .build()
            .unwrap();
        opt0.zero_grad();
        opt1.zero_grad();
        let loss = w0.sum_all().unwrap().add(&w1.sum_all().unwrap()).unwrap();
        scaler.scale(&loss).unwrap().backward().unwrap();
        fill_grad(&w1, f64::INFINITY);
        assert!(scaler.step(&mut opt0).unwrap().is_stepped());
        assert_eq!(
            scaler.step(&mut opt1).unwrap(),
            StepOutcome::Skipped {
                inf_params: vec![("w".into(), 4)],
                nan_params: vec![],
                ranks: vec![0],
            }
        );
        scaler.update().unwrap();
        assert_eq!(scaler.get_scale(), 16.0);
        assert_eq!(
            (scaler.steps(), scaler.skips(), scaler.consecutive_skips()),
            (1, 1, 1)
        );
    }
}
