//! Every misuse PyTorch rejects is an `Err` with PyTorch's message; invalid settings are `Err`s.

mod common;

use amp_scaler::{Error, GradScaler, Optimizer};
use amp_tensor::{DType, Device, Tensor};
use common::Sgd;

fn param_with_grad(device: &Device, name: &str, dtype: DType, grad_value: f64) -> (String, Tensor) {
    let p = Tensor::zeros(&[3], dtype, device).unwrap();
    p.set_requires_grad(true).unwrap();
    p.set_grad(Some(Tensor::full(&[3], grad_value, dtype, device).unwrap()))
        .unwrap();
    (name.to_string(), p)
}

fn message<T: std::fmt::Debug>(r: Result<T, Error>) -> String {
    r.unwrap_err().to_string()
}

fn loss(device: &Device) -> Tensor {
    Tensor::scalar(1.0, DType::F32, device).unwrap()
}

#[test]
fn calls_before_the_first_scale_are_errors() {
    for (_, device) in amp_testkit::all_devices() {
        let mut opt = Sgd::new(vec![param_with_grad(&device, "w", DType::F32, 1.0)], 0.1);
        let mut scaler = GradScaler::new();
        let fix = "This may indicate your script did not use scaler.scale(loss or outputs) earlier in the iteration.";
        let m = message(scaler.unscale(&mut opt));
        assert!(
            m.contains("Attempted unscale_ but _scale is None.") && m.contains(fix),
            "{m}"
        );
        let m = message(scaler.step(&mut opt));
        assert!(
            m.contains("Attempted step but _scale is None.") && m.contains(fix),
            "{m}"
        );
        let m = message(scaler.update());
        assert!(m.contains("Attempted update but _scale is None."), "{m}");
        // Nothing was unscaled or stepped.
        assert_eq!(
            opt.params[0].1.grad().unwrap().to_f64_vec().unwrap(),
            vec![1.0; 3]
        );
        assert_eq!(opt.params[0].1.to_f64_vec().unwrap(), vec![0.0; 3]);
    }
}

#[test]
fn state_machine_errors() {
    for (_, device) in amp_testkit::all_devices() {
        let mut opt = Sgd::new(vec![param_with_grad(&device, "w", DType::F32, 8.0)], 0.0);
        let mut scaler = GradScaler::builder().init_scale(2.0).build().unwrap();
        scaler.scale(&loss(&device)).unwrap();

        scaler.unscale(&mut opt).unwrap();
        let m = message(scaler.unscale(&mut opt));
        assert!(
            m.contains(
                "unscale_() has already been called on this optimizer since the last update()."
            ),
            "{m}"
        );
        // The failed second call did not unscale again.
        assert_eq!(
            opt.params[0].1.grad().unwrap().to_f64_vec().unwrap(),
            vec![4.0; 3]
        );

        scaler.step(&mut opt).unwrap();
        let m = message(scaler.unscale(&mut opt));
        assert!(
            m.contains("unscale_() is being called after step()."),
            "{m}"
        );
        let m = message(scaler.step(&mut opt));
        assert!(
            m.contains("step() has already been called since the last update()."),
            "{m}"
        );

        // update() resets every optimizer to READY.
        scaler.update().unwrap();
        scaler.unscale(&mut opt).unwrap();
        scaler.step(&mut opt).unwrap();
        scaler.update().unwrap();
    }
}

#[test]
fn update_without_inf_checks_is_an_error() {
    for (_, device) in amp_testkit::all_devices() {
        let mut scaler = GradScaler::new();
        scaler.scale(&loss(&device)).unwrap();
        let m = message(scaler.update());
        assert!(
            m.contains("No inf checks were recorded prior to update."),
            "{m}"
        );

        // An optimizer whose parameters have no gradients records no inf check either.
        let p = Tensor::zeros(&[2], DType::F32, &device).unwrap();
        p.set_requires_grad(true).unwrap();
        let mut opt = Sgd::new(vec![("p".into(), p)], 0.1);
        let m = message(scaler.step(&mut opt));
        assert!(
            m.contains("No inf checks were recorded for this optimizer."),
            "{m}"
        );
        let m = message(scaler.update());
        assert!(
            m.contains("No inf checks were recorded prior to update."),
            "{m}"
        );
    }
}

#[test]
fn f16_gradients_are_rejected_before_anything_changes() {
    for (_, device) in amp_testkit::all_devices() {
        let mut opt = Sgd::new(
            vec![
                param_with_grad(&device, "fp32.weight", DType::F32, 8.0),
                param_with_grad(&device, "fp16.weight", DType::F16, 8.0),
            ],
            0.1,
        );
        let mut scaler = GradScaler::builder().init_scale(2.0).build().unwrap();
        scaler.scale(&loss(&device)).unwrap();
        for result in [
            scaler.unscale(&mut opt).map(|_| ()),
            scaler.step(&mut opt).map(|_| ()),
        ] {
            let err = result.unwrap_err();
            assert!(
                matches!(&err, Error::Fp16Gradient { param } if param == "fp16.weight"),
                "{err:?}"
            );
            let m = err.to_string();
            assert!(
                m.contains("Attempting to unscale FP16 gradients.") && m.contains("fp16.weight"),
                "{m}"
            );
        }
        // Neither gradient was unscaled and no parameter moved.
        for (_, p) in &opt.params {
            assert_eq!(p.grad().unwrap().to_f64_vec().unwrap(), vec![8.0; 3]);
            assert_eq!(p.to_f64_vec().unwrap(), vec![0.0; 3]);
        }
        // The optimizer is still READY: with f32 master weights the iteration goes through.
        opt.params.retain(|(n, _)| n != "fp16.weight");
        assert!(scaler.step(&mut opt).unwrap().is_stepped());
        scaler.update().unwrap();
    }
}

#[test]
fn optimizer_identity_survives_a_move_and_separates_optimizers() {
    for (_, device) in amp_testkit::all_devices() {
        let mut scaler = GradScaler::new();
        scaler.scale(&loss(&device)).unwrap();
        let mut a = Sgd::new(vec![param_with_grad(&device, "a", DType::F32, 1.0)], 0.1);
        let mut b = Sgd::new(vec![param_with_grad(&device, "b", DType::F32, 1.0)], 0.1);
        scaler.unscale(&mut a).unwrap();
        scaler.unscale(&mut b).unwrap(); // another optimizer: its own state
        let mut moved: Box<dyn Optimizer> = Box::new(a);
        let m = message(scaler.unscale(&mut moved));
        assert!(m.contains("already been called"), "{m}");
        let m = message(scaler.unscale(&mut *moved));
        assert!(m.contains("already been called"), "{m}");
    }
}

#[test]
fn disabled_scaler_is_a_pass_through() {
    for (_, device) in amp_testkit::all_devices() {
        let mut scaler = GradScaler::builder().enabled(false).build().unwrap();
        let (name, p) = param_with_grad(&device, "w", DType::F16, 2.0);
        let mut opt = Sgd::new(vec![(name, p.clone())], 0.5);
        // No scale() call needed, f16 gradients allowed, step just steps, update is a no-op.
        scaler.unscale(&mut opt).unwrap();
        scaler.unscale(&mut opt).unwrap();
        assert!(scaler.step(&mut opt).unwrap().is_stepped());
        assert!(scaler.step(&mut opt).unwrap().is_stepped());
        scaler.update().unwrap();
        scaler.update_to(5.0).unwrap();
        assert_eq!(p.to_f64_vec().unwrap(), vec![-2.0; 3]);
        let l = loss(&device);
        assert_eq!(scaler.scale(&l).unwrap().id(), l.id());
        assert_eq!(scaler.get_scale(), 1.0);
        assert_eq!(scaler.steps(), 2);
    }
}

#[test]
fn invalid_settings_are_errors() {
    let cases: Vec<(&str, amp_scaler::GradScalerBuilder)> = vec![
        ("growth_factor 1", GradScaler::builder().growth_factor(1.0)),
        (
            "growth_factor 0.5",
            GradScaler::builder().growth_factor(0.5),
        ),
        (
            "growth_factor NaN",
            GradScaler::builder().growth_factor(f64::NAN),
        ),
        (
            "growth_factor inf",
            GradScaler::builder().growth_factor(f64::INFINITY),
        ),
        (
            "backoff_factor 1",
            GradScaler::builder().backoff_factor(1.0),
        ),
        (
            "backoff_factor 1.5",
            GradScaler::builder().backoff_factor(1.5),
        ),
        (
            "backoff_factor 0",
            GradScaler::builder().backoff_factor(0.0),
        ),
        (
            "backoff_factor -0.5",
            GradScaler::builder().backoff_factor(-0.5),
        ),
        (
            "backoff_factor NaN",
            GradScaler::builder().backoff_factor(f64::NAN),
        ),
        ("init_scale 0", GradScaler::builder().init_scale(0.0)),
        ("init_scale -1", GradScaler::builder().init_scale(-1.0)),
        (
            "init_scale inf",
            GradScaler::builder().init_scale(f64::INFINITY),
        ),
        ("init_scale NaN", GradScaler::builder().init_scale(f64::NAN)),
        (
            "init_scale beyond f32",
            GradScaler::builder().init_scale(1e39),
        ),
        (
            "init_scale below f32",
            GradScaler::builder().init_scale(1e-50),
        ),
        (
            "growth_interval 0",
            GradScaler::builder().growth_interval(0),
        ),
        ("hysteresis 0", GradScaler::builder().hysteresis(0)),
        (
            "max_consecutive_skips 0",
            GradScaler::builder().max_consecutive_skips(0),
        ),
        (
            "min > max",
            GradScaler::builder()
                .min_scale(10.0)
                .max_scale(1.0)
                .init_scale(5.0),
        ),
        ("init below min", GradScaler::builder().min_scale(1e6)),
        ("init above max", GradScaler::builder().max_scale(1.0)),
        ("min_scale 0", GradScaler::builder().min_scale(0.0)),
    ];
    for (what, builder) in cases {
        match builder.build() {
            Err(Error::InvalidSetting {
                op: "GradScaler::build",
                msg,
            }) => assert!(!msg.is_empty(), "{what}"),
            other => panic!("{what}: expected InvalidSetting, got {other:?}"),
        }
    }
    // Settings are checked for disabled scalers too.
    assert!(GradScaler::builder()
        .enabled(false)
        .growth_factor(0.9)
        .build()
        .is_err());

    let mut scaler = GradScaler::new();
    assert!(scaler.set_growth_factor(1.0).is_err());
    assert!(scaler.set_backoff_factor(1.0).is_err());
    assert!(scaler.set_growth_interval(0).is_err());
    scaler.set_growth_factor(4.0).unwrap();
    scaler.set_backoff_factor(0.125).unwrap();
    scaler.set_growth_interval(7).unwrap();
    assert_eq!(
        (
            scaler.growth_factor(),
            scaler.backoff_factor(),
            scaler.growth_interval()
        ),
        (4.0, 0.125, 7)
    );
}

#[test]
fn defaults_are_pytorchs() {
    let scaler = GradScaler::new();
    assert!(scaler.is_enabled());
    assert_eq!(scaler.get_scale(), 65536.0);
    assert_eq!(scaler.growth_factor(), 2.0);
    assert_eq!(scaler.backoff_factor(), 0.5);
    assert_eq!(scaler.growth_interval(), 2000);
    assert_eq!(scaler.growth_tracker(), 0);
    assert_eq!(scaler.hysteresis_left(), 1);
}
