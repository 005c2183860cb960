//! Digits, same seed, 30 epochs: every precision reaches ≥ 0.89 test accuracy
//! on amp-cpu's device, and bf16/f16 land within one percentage point of f32.

use amp_tensor::DType;
use amp_train::train::{train, FitConfig, TrainConfig};
use amp_train::Precision;

#[test]
fn f32_bf16_and_f16_reach_the_same_accuracy() {
    let device = amp_cpu::device();
    let run = |precision| {
        train(
            &TrainConfig {
                fit: FitConfig {
                    precision,
                    ..FitConfig::default()
                },
                ..TrainConfig::default()
            },
            &device,
        )
        .unwrap()
        .report
    };
    let f32_run = run(Precision::F32);
    assert_eq!(f32_run.precision.dtype, DType::F32);
    assert_eq!(f32_run.ops.low_precision, 0, "f32 opens no autocast region");
    assert!(
        f32_run.eval_accuracy.unwrap() >= 0.89,
        "f32 accuracy {}",
        f32_run.eval_accuracy.unwrap()
    );
    for (precision, dtype) in [(Precision::BF16, DType::BF16), (Precision::F16, DType::F16)] {
        let r = run(precision);
        println!(
            "{dtype}: {:.4} (f32 {:.4}), {} skipped, scale {:?}",
            r.eval_accuracy.unwrap(),
            f32_run.eval_accuracy.unwrap(),
            r.skipped_steps,
            r.final_loss_scale
        );
        assert_eq!(r.precision.dtype, dtype);
        assert!(
            r.eval_accuracy.unwrap() >= 0.89,
            "{dtype} accuracy {}",
            r.eval_accuracy.unwrap()
        );
        assert!(
            (r.eval_accuracy.unwrap() - f32_run.eval_accuracy.unwrap()).abs() <= 0.01 + 1e-9,
            "{dtype} accuracy {} vs f32 {}",
            r.eval_accuracy.unwrap(),
            f32_run.eval_accuracy.unwrap()
        );
        // Autocast really ran the linears in low precision, and the loss in f32.
        assert!(r.ops.low_precision >= 30 * 23 * 3, "{:?}", r.ops);
        assert!(r.ops.f32 >= 30 * 23, "{:?}", r.ops);
        // The low-precision run trained differently from f32 (it is not silently f32).
        assert_ne!(r.step_losses, f32_run.step_losses);
        assert_eq!(r.final_loss_scale.is_some(), dtype == DType::F16);
        assert_eq!(r.steps, 30 * 23);
    }
}

#[test]
fn on_cuda_auto_precision_matches_f32_when_a_gpu_is_present() {
    if !amp_cuda::is_available() {
        println!("skipped: no CUDA device");
        return;
    }
    let device = amp_train::cuda_device(0).unwrap();
    let run = |precision| {
        train(
            &TrainConfig {
                fit: FitConfig {
                    precision,
                    ..FitConfig::default()
                },
                ..TrainConfig::default()
            },
            &device,
        )
        .unwrap()
        .report
    };
    let (f32_run, auto) = (run(Precision::F32), run(Precision::Auto));
    let expected = if device.is_bf16_supported() {
        DType::BF16
    } else {
        DType::F16
    };
    assert_eq!(auto.precision.dtype, expected);
    assert_eq!(auto.precision.grad_scaler, expected == DType::F16);
    assert!(f32_run.eval_accuracy.unwrap() >= 0.89 && auto.eval_accuracy.unwrap() >= 0.89);
    assert!((auto.eval_accuracy.unwrap() - f32_run.eval_accuracy.unwrap()).abs() <= 0.01 + 1e-9);
}
