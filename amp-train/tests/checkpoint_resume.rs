//! Stop after epoch k, resume, and end with the parameters of an
//! uninterrupted run, bit for bit; bad checkpoints are errors that change nothing.

use amp_train::checkpoint::{STATE_FILE, TENSORS_FILE};
use amp_train::train::{train, FitConfig, TrainConfig};
use amp_train::Precision;
use std::fs;
use std::path::PathBuf;

mod common;
use common::{param_bits as params, temp_path as temp};

#[test]
fn resumed_runs_are_bit_identical_to_uninterrupted_ones() {
    let device = amp_cpu::device();
    for precision in [Precision::F16, Precision::BF16, Precision::F32] {
        let config = TrainConfig {
            fit: FitConfig {
                precision,
                epochs: 5,
                ..FitConfig::default()
            },
            seed: 7,
            ..TrainConfig::default()
        };
        let full = train(&config, &device).unwrap();

        let dir = temp(&format!("{precision}"));
        let first = TrainConfig {
            fit: FitConfig {
                epochs: 2,
                checkpoint: Some(dir.clone()),
                ..config.fit.clone()
            },
            ..config.clone()
        };
        train(&first, &device).unwrap();
        assert!(dir.join(TENSORS_FILE).is_file() && dir.join(STATE_FILE).is_file());
        let resumed = train(
            &TrainConfig {
                fit: FitConfig {
                    resume: Some(dir.clone()),
                    checkpoint: Some(dir.clone()),
                    ..config.fit.clone()
                },
                ..config.clone()
            },
            &device,
        )
        .unwrap();

        assert_eq!(
            params(&resumed),
            params(&full),
            "{precision}: parameters differ after resume"
        );
        assert_eq!(resumed.report.start_epoch, 2);
        assert_eq!(resumed.report.step_losses, full.report.step_losses);
        assert_eq!(resumed.report.history.len(), 5);
        assert_eq!(resumed.report.steps, full.report.steps);
        assert_eq!(
            resumed.report.final_loss_scale,
            full.report.final_loss_scale
        );
        assert_eq!(resumed.report.eval_accuracy, full.report.eval_accuracy);
        assert_eq!(resumed.report.eval_loss, full.report.eval_loss);
        fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn mismatched_truncated_and_missing_checkpoints_are_clear_errors() {
    let device = amp_cpu::device();
    let dir = temp("bad");
    let config = TrainConfig {
        fit: FitConfig {
            precision: Precision::F32,
            epochs: 1,
            checkpoint: Some(dir.clone()),
            ..FitConfig::default()
        },
        seed: 3,
        ..TrainConfig::default()
    };
    train(&config, &device).unwrap();
    let snapshot = |d: &PathBuf| {
        (
            fs::read(d.join(TENSORS_FILE)).unwrap(),
            fs::read(d.join(STATE_FILE)).unwrap(),
        )
    };
    let before = snapshot(&dir);
    let resume = |c: TrainConfig| {
        train(
            &TrainConfig {
                fit: FitConfig {
                    resume: Some(dir.clone()),
                    epochs: 2,
                    ..c.fit.clone()
                },
                ..c
            },
            &device,
        )
        .err()
        .expect("should fail")
        .to_string()
    };

    let err = resume(TrainConfig {
        batch_size: 32,
        ..config.clone()
    });
    assert!(err.contains("batch size 64") && err.contains("32"), "{err}");
    let err = resume(TrainConfig {
        seed: 4,
        ..config.clone()
    });
    assert!(err.contains("seed"), "{err}");
    let err = resume(TrainConfig {
        fit: FitConfig {
            precision: Precision::F16,
            ..config.fit.clone()
        },
        ..config.clone()
    });
    assert!(err.contains("dtype f32") && err.contains("f16"), "{err}");
    let err = resume(TrainConfig {
        lr: 0.01,
        ..config.clone()
    });
    assert!(err.contains("lr 0.001") && err.contains("0.01"), "{err}");
    let err = resume(TrainConfig {
        layers: vec![64, 32, 10],
        ..config.clone()
    });
    assert!(err.contains("layers"), "{err}");
    // The failed resumes wrote nothing.
    assert_eq!(snapshot(&dir), before);

    let bytes = &before.0;
    fs::write(dir.join(TENSORS_FILE), &bytes[..bytes.len() / 2]).unwrap();
    let err = resume(config.clone());
    assert!(err.contains("truncated"), "{err}");
    let truncated = snapshot(&dir);
    assert_eq!(
        truncated.0.len(),
        bytes.len() / 2,
        "a failed resume must not overwrite the checkpoint"
    );

    let missing = temp("missing");
    let err = train(
        &TrainConfig {
            fit: FitConfig {
                resume: Some(missing.clone()),
                ..config.fit.clone()
            },
            ..config.clone()
        },
        &device,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("does not exist"), "{err}");
    assert!(!missing.exists());
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn auto_resuming_a_checkpoint_keeps_the_dtype_that_run_computed_in() {
    // Whatever `auto` measures on this machine, a resumed run continues in the
    // checkpoint's dtype and says so; an explicit request is left alone (and a
    // different one is refused by the resume, as before).
    let device = amp_cpu::device();
    let dir = temp("auto-resume");
    let config = TrainConfig {
        fit: FitConfig {
            precision: Precision::BF16,
            epochs: 1,
            checkpoint: Some(dir.clone()),
            ..FitConfig::default()
        },
        seed: 5,
        ..TrainConfig::default()
    };
    train(&config, &device).unwrap();
    let auto = FitConfig {
        precision: Precision::Auto,
        epochs: 2,
        resume: Some(dir.clone()),
        checkpoint: Some(dir.clone()),
        ..config.fit.clone()
    };
    let choice = auto.resolve_precision(&device).unwrap();
    assert_eq!(choice.dtype, amp_tensor::DType::BF16, "{}", choice.reason);
    assert!(!choice.grad_scaler);
    let measured = Precision::Auto.resolve(&device);
    if measured.dtype != amp_tensor::DType::BF16 {
        assert!(
            choice.reason.contains("the run being resumed"),
            "{}",
            choice.reason
        );
    }
    let resumed = train(
        &TrainConfig {
            fit: auto,
            ..config.clone()
        },
        &device,
    )
    .unwrap();
    assert_eq!(resumed.report.precision.dtype, amp_tensor::DType::BF16);
    assert_eq!(resumed.report.start_epoch, 1);
    let explicit = FitConfig {
        precision: Precision::F32,
        resume: Some(dir.clone()),
        ..config.fit.clone()
    };
    assert_eq!(
        explicit.resolve_precision(&device).unwrap().dtype,
        amp_tensor::DType::F32
    );
    fs::remove_dir_all(&dir).unwrap();
}
