//! Overflow storms: however many iterations overflow in a row, the scale stays
//! a normal f32, `1/scale` stays finite, a step is never taken on gradients
//! that are not finite once unscaled, and every state the scaler reaches can
//! be saved and loaded back.

mod common;

use amp_scaler::{GradScaler, StepOutcome, SCALE_FLOOR};
use amp_tensor::{DType, Device, Tensor};
use common::{fill_grad, Sgd};

/// One parameter of 4 elements with loss `sum(w)`: its gradient is the scale.
fn setup(device: &Device) -> (Tensor, Sgd) {
    let w = Tensor::zeros(&[4], DType::F32, device).unwrap();
    w.set_requires_grad(true).unwrap();
    (w.clone(), Sgd::new(vec![("w".into(), w)], 1.0))
}

fn iteration(scaler: &mut GradScaler, w: &Tensor, opt: &mut Sgd, grad: f64) -> StepOutcome {
    w.zero_grad();
    scaler
        .scale(&w.sum_all().unwrap())
        .unwrap()
        .backward()
        .unwrap();
    fill_grad(w, grad);
    let outcome = scaler.step(opt).unwrap();
    scaler.update().unwrap();
    outcome
}

#[test]
fn a_long_storm_never_takes_the_scale_below_a_normal_f32() {
    for (_, device) in amp_testkit::all_devices() {
        let (w, mut opt) = setup(&device);
        let mut scaler = GradScaler::new();
        for _ in 0..400 {
            let outcome = iteration(&mut scaler, &w, &mut opt, f64::INFINITY);
            assert!(outcome.is_skipped());
            let s = scaler.get_scale();
            assert!(s.is_normal() && s >= SCALE_FLOOR, "scale {s}");
        }
        assert_eq!(scaler.get_scale(), SCALE_FLOOR);
        assert!((1.0 / scaler.get_scale()).is_finite());
        // The storm ends: a finite gradient steps, and the weights stay finite.
        let outcome = iteration(&mut scaler, &w, &mut opt, 1e-30);
        assert_eq!(outcome, StepOutcome::Stepped, "{device:?}");
        let values = w.to_f64_vec().unwrap();
        assert!(values.iter().all(|v| v.is_finite()), "{values:?}");
        // What it reached, it saves and loads back.
        let state = scaler.state_dict();
        let mut restored = GradScaler::new();
        restored.load_state_dict(&state).unwrap();
        assert_eq!(restored.state_dict(), state);
    }
}

#[test]
fn a_gradient_that_overflows_when_unscaled_skips_the_step() {
    for (_, device) in amp_testkit::all_devices() {
        let (w, mut opt) = setup(&device);
        let mut scaler = GradScaler::builder()
            .init_scale(f64::from(SCALE_FLOOR))
            .build()
            .unwrap();
        // 1e10 × 2^126 is not an f32: PyTorch would step and write inf into w.
        let outcome = iteration(&mut scaler, &w, &mut opt, 1e10);
        match outcome {
            StepOutcome::Skipped { inf_params, .. } => {
                assert_eq!(inf_params, vec![("w".to_string(), 4)])
            }
            StepOutcome::Stepped => panic!("stepped on an infinite unscaled gradient"),
        }
        assert_eq!(w.to_f64_vec().unwrap(), vec![0.0; 4], "{device:?}");
    }
}

#[test]
fn scales_below_the_floor_are_refused_when_set() {
    for bad in [0.0, 1e-40, -1.0, f64::NAN] {
        let err = GradScaler::builder().init_scale(bad).build().unwrap_err();
        assert!(
            err.to_string().contains("smallest normal f32"),
            "{bad}: {err}"
        );
        assert!(GradScaler::builder().min_scale(bad).build().is_err());
    }
    let mut scaler = GradScaler::new();
    let device = Device::reference();
    let (w, mut opt) = setup(&device);
    iteration(&mut scaler, &w, &mut opt, 1.0);
    assert!(scaler.update_to(1e-45).is_err());
}

#[test]
fn a_disabled_scaler_restores_its_counters() {
    let device = Device::reference();
    let (w, mut opt) = setup(&device);
    let mut scaler = GradScaler::builder().enabled(false).build().unwrap();
    for _ in 0..3 {
        iteration(&mut scaler, &w, &mut opt, 1.0);
    }
    assert_eq!(scaler.steps(), 3);
    let mut resumed = GradScaler::builder().enabled(false).build().unwrap();
    resumed.load_state_dict(&scaler.state_dict()).unwrap();
    assert_eq!(resumed.steps(), 3);
    assert_eq!(resumed.state_dict(), scaler.state_dict());
}
