//! What a careless or hostile user does to the trainer and the CLI: point the
//! checkpoint at a folder of their own, resume after a NaN loss, edit a digit
//! of the saved state, put a FIFO or `/dev/zero` where the state file goes,
//! kill a save halfway, give unwritable output paths, train into an overflow
//! storm. Nothing is lost, nothing resumes wrongly, nothing hangs.

use amp_train::checkpoint::{self, STATE_FILE, TENSORS_FILE};
use amp_train::train::{train, FitConfig, TrainConfig};
use amp_train::Precision;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

mod common;
use common::{amp_train, param_bits, temp_dir as temp, text};

#[test]
fn a_folder_that_merely_holds_a_state_json_is_never_replaced() {
    let dir = temp("foreign");
    let p = dir.join("p");
    fs::create_dir_all(p.join("src")).unwrap();
    fs::write(p.join("src").join("main.rs"), "fn main() {}").unwrap();
    fs::write(p.join(STATE_FILE), "{}").unwrap();
    fs::write(p.join("notes.txt"), "x").unwrap();
    let out = amp_train(&[
        "--device",
        "cpu",
        "--epochs",
        "1",
        "-q",
        "--checkpoint",
        p.to_str().unwrap(),
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("refusing to replace") && stderr.contains("notes.txt"),
        "{stderr}"
    );
    // Refused before training, and everything is still there.
    assert!(!text(&out.stdout).contains("test accuracy"));
    assert_eq!(fs::read_to_string(p.join("notes.txt")).unwrap(), "x");
    assert_eq!(fs::read_to_string(p.join(STATE_FILE)).unwrap(), "{}");
    assert!(p.join("src").join("main.rs").is_file());

    // Only our two file names, but a state.json without our marker: refused too.
    let q = dir.join("q");
    fs::create_dir_all(&q).unwrap();
    fs::write(q.join(STATE_FILE), "{\"mine\": true}").unwrap();
    let device = amp_tensor::Device::reference();
    let t = amp_tensor::Tensor::zeros(&[2], amp_tensor::DType::F32, &device).unwrap();
    let err = checkpoint::write(&q, &[("t".into(), t)], &serde_json::json!({}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("not an amp-train checkpoint"), "{err}");
    assert_eq!(
        fs::read_to_string(q.join(STATE_FILE)).unwrap(),
        "{\"mine\": true}"
    );
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_run_with_nan_losses_checkpoints_and_resumes_bit_for_bit() {
    let device = amp_cpu::device();
    let dir = temp("nan");
    let ck = dir.join("ck");
    // lr 1 in f16 diverges: NaN losses, a storm of skipped steps. No stop here.
    let config = TrainConfig {
        fit: FitConfig {
            precision: Precision::F16,
            epochs: 3,
            max_consecutive_skips: None,
            ..FitConfig::default()
        },
        lr: 1.0,
        ..TrainConfig::default()
    };
    let full = train(&config, &device).unwrap();
    assert!(
        full.report.step_losses.iter().any(|l| !l.is_finite()),
        "the case needs non-finite losses"
    );
    // The per-step records: one scale per step, the skipped steps by index,
    // and after each skip the scale halved (to the floor of 1 at most).
    let r = &full.report;
    assert_eq!(r.step_loss_scales.len(), r.step_losses.len());
    assert_eq!(r.skipped_step_indices.len() as u64, r.skipped_steps);
    for &i in &r.skipped_step_indices {
        let i = i as usize;
        if let Some(&next) = r.step_loss_scales.get(i + 1) {
            let want = (r.step_loss_scales[i] * 0.5).max(1.0);
            assert_eq!(next, want, "step {i}");
        }
    }
    train(
        &TrainConfig {
            fit: FitConfig {
                epochs: 2,
                checkpoint: Some(ck.clone()),
                ..config.fit.clone()
            },
            ..config.clone()
        },
        &device,
    )
    .unwrap();
    let resumed = train(
        &TrainConfig {
            fit: FitConfig {
                resume: Some(ck.clone()),
                checkpoint: Some(ck.clone()),
                ..config.fit.clone()
            },
            ..config.clone()
        },
        &device,
    )
    .unwrap();
    assert_eq!(param_bits(&resumed), param_bits(&full));
    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(
        bits(&resumed.report.step_losses),
        bits(&full.report.step_losses)
    );
    assert_eq!(
        bits(&resumed.report.step_loss_scales),
        bits(&full.report.step_loss_scales)
    );
    assert_eq!(
        resumed.report.skipped_step_indices,
        full.report.skipped_step_indices
    );
    assert_eq!(
        resumed.report.final_loss_scale,
        full.report.final_loss_scale
    );
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_changed_digit_anywhere_in_the_state_is_refused() {
    let device = amp_cpu::device();
    let dir = temp("digits");
    let ck = dir.join("ck");
    let config = TrainConfig {
        fit: FitConfig {
            precision: Precision::F16,
            epochs: 2,
            ..FitConfig::default()
        },
        seed: 3,
        ..TrainConfig::default()
    };
    train(
        &TrainConfig {
            fit: FitConfig {
                checkpoint: Some(ck.clone()),
                ..config.fit.clone()
            },
            ..config.clone()
        },
        &device,
    )
    .unwrap();
    let original = fs::read_to_string(ck.join(STATE_FILE)).unwrap();
    // Fields the old checksum did not cover: epochs, loader epoch, AdamW settings, step counts, the scale.
    let edits = [
        ("\"epochs_done\": 2", "\"epochs_done\": 1"),
        ("\"loader_epoch\": 2", "\"loader_epoch\": 3"),
        ("0.9,\n", "0.8,\n"),
        ("\"weight_decay\": 0.01", "\"weight_decay\": 0.02"),
        ("\"4.bias\",\n          46", "\"4.bias\",\n          45"),
        ("\"steps\": 46", "\"steps\": 47"),
        ("\"scale\": 65536.0", "\"scale\": 65537.0"),
    ];
    for (from, to) in edits {
        assert!(
            original.contains(from),
            "{from:?} not in the state:\n{original}"
        );
        fs::write(ck.join(STATE_FILE), original.replacen(from, to, 1)).unwrap();
        let err = train(
            &TrainConfig {
                fit: FitConfig {
                    epochs: 3,
                    resume: Some(ck.clone()),
                    ..config.fit.clone()
                },
                ..config.clone()
            },
            &device,
        )
        .err()
        .unwrap_or_else(|| panic!("{from} -> {to} resumed"))
        .to_string();
        assert!(
            err.contains("state.json is damaged"),
            "{from} -> {to}: {err}"
        );
    }
    fs::write(ck.join(STATE_FILE), &original).unwrap();
    train(
        &TrainConfig {
            fit: FitConfig {
                epochs: 3,
                resume: Some(ck.clone()),
                ..config.fit.clone()
            },
            ..config.clone()
        },
        &device,
    )
    .unwrap();
    fs::remove_dir_all(&dir).unwrap();
}

/// Runs `f` on another thread and fails the test if it takes longer than `limit`.
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).expect("the call hung")
}

#[cfg(unix)]
#[test]
fn a_fifo_or_dev_zero_as_the_state_file_is_an_error_not_a_hang() {
    let device = amp_tensor::Device::reference();
    let dir = temp("fifo");
    let ck = dir.join("ck");
    let t = amp_tensor::Tensor::zeros(&[2], amp_tensor::DType::F32, &device).unwrap();
    checkpoint::write(&ck, &[("t".into(), t)], &serde_json::json!({})).unwrap();
    fs::remove_file(ck.join(STATE_FILE)).unwrap();
    let made = Command::new("mkfifo").arg(ck.join(STATE_FILE)).status();
    if matches!(made, Ok(s) if s.success()) {
        let path = ck.clone();
        let err = within(Duration::from_secs(20), move || {
            checkpoint::read(&path, &amp_tensor::Device::reference())
                .map(|_| ())
                .unwrap_err()
                .to_string()
        });
        assert!(err.contains("not a regular file"), "{err}");
        fs::remove_file(ck.join(STATE_FILE)).unwrap();
    }
    std::os::unix::fs::symlink("/dev/zero", ck.join(STATE_FILE)).unwrap();
    let path = ck.clone();
    let err = within(Duration::from_secs(20), move || {
        checkpoint::read(&path, &amp_tensor::Device::reference())
            .map(|_| ())
            .unwrap_err()
            .to_string()
    });
    assert!(err.contains("not a regular file"), "{err}");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn leftovers_of_a_killed_save_are_cleaned_and_foreign_ones_kept() {
    let device = amp_tensor::Device::reference();
    let dir = temp("leftovers");
    let ck = dir.join("ck");
    // A save killed halfway (its process, pid 4294967295, is gone): our files only.
    let stale = dir.join(".ck.tmp-4294967295-0");
    fs::create_dir_all(&stale).unwrap();
    fs::write(stale.join(TENSORS_FILE), b"partial").unwrap();
    // Same pattern, but it holds something we never write: kept.
    let foreign = dir.join(".ck.tmp-4294967295-1");
    fs::create_dir_all(&foreign).unwrap();
    fs::write(foreign.join("thesis.tex"), b"keep").unwrap();
    let t = amp_tensor::Tensor::zeros(&[2], amp_tensor::DType::F32, &device).unwrap();
    checkpoint::write(&ck, &[("t".into(), t)], &serde_json::json!({})).unwrap();
    assert!(!stale.exists(), "the stale temporary directory is removed");
    assert_eq!(fs::read(foreign.join("thesis.tex")).unwrap(), b"keep");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unwritable_output_paths_fail_before_training() {
    let dir = temp("outputs");
    let missing = dir.join("no-such-dir").join("m.json");
    for (flag, path) in [
        ("--metrics", missing.to_str().unwrap()),
        ("--plot", dir.to_str().unwrap()),
        ("--metrics", "/dev/full"),
    ] {
        if path == "/dev/full" && !Path::new(path).exists() {
            continue;
        }
        let out = amp_train(&["--device", "cpu", "--epochs", "30", "-q", flag, path]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{flag} {path}: {stderr}");
        assert!(stderr.contains(flag), "{stderr}");
        assert!(
            !text(&out.stdout).contains("training a"),
            "{flag} {path}: it trained first"
        );
    }
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn each_output_is_written_even_when_the_other_fails() {
    let dir = temp("independent");
    let config = TrainConfig {
        fit: FitConfig {
            precision: Precision::F32,
            epochs: 1,
            ..FitConfig::default()
        },
        ..TrainConfig::default()
    };
    let outcome = train(&config, &amp_cpu::device()).unwrap();
    let (plot, missing) = (dir.join("loss.svg"), dir.join("gone").join("m.json"));
    let (written, failed) =
        amp_train::output::write_outputs(&outcome.report, Some(&missing), Some(&plot));
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].contains("writing metrics"), "{failed:?}");
    assert_eq!(written.len(), 1);
    assert!(fs::read_to_string(&plot).unwrap().starts_with("<svg"));
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_overflow_storm_stops_loudly_with_the_documented_default() {
    let out = amp_train(&[
        "--device",
        "cpu",
        "--precision",
        "f16",
        "--lr",
        "1",
        "--epochs",
        "3",
        "-q",
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("training diverged")
            && stderr.contains("50 consecutive steps")
            && stderr.contains("--max-consecutive-skips"),
        "{stderr}"
    );
    // Without the stop (0), the run ends, with the scale at its floor of 1, and says so.
    let out = amp_train(&[
        "--device",
        "cpu",
        "--precision",
        "f16",
        "--lr",
        "1",
        "--epochs",
        "3",
        "-q",
        "--max-consecutive-skips",
        "0",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("final loss scale 1)"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn non_finite_losses_without_loss_scaling_stop_loudly() {
    // bf16 and f32 have no scaler to skip steps: a run of NaN losses is the sign.
    for precision in ["bf16", "f32"] {
        let out = amp_train(&[
            "--device",
            "cpu",
            "--precision",
            precision,
            "--lr",
            "1e30",
            "--epochs",
            "3",
            "-q",
            "--max-consecutive-skips",
            "5",
        ]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        let expected = format!(
            "the loss was not finite (NaN) in 5 consecutive steps (no loss scaling in {precision})"
        );
        assert!(
            stderr.contains("training diverged") && stderr.contains(&expected),
            "{stderr}"
        );
    }
}
