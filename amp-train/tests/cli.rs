//! The `amp-train` binary: the demo prints the mission's lines, bad flags exit
//! with code 2 naming the flag and its valid values, runs write metrics and plots.

mod common;
use common::{amp_train, text};

#[test]
fn demo_prints_the_missions_lines() {
    let out = amp_train(&["demo", "--device", "cpu"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    let want_dtype = if amp_cpu::device().is_bf16_supported() {
        "dtype is bf16"
    } else {
        "dtype is f16"
    };
    assert_eq!(lines[0], want_dtype);
    let epochs: Vec<String> = (0..10).map(|e| format!("Epoch {e} finished")).collect();
    assert_eq!(&lines[1..], &epochs[..]);
}

#[test]
fn bad_values_exit_2_naming_the_flag_and_valid_values() {
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["--precision", "fp8"],
            &["--precision", "auto", "f32", "bf16", "f16"],
        ),
        (&["--device", "tpu"], &["--device", "auto", "cpu", "cuda:N"]),
        (&["--epochs", "0"], &["--epochs", ">= 1"]),
        (&["--batch-size", "0"], &["--batch-size", ">= 1"]),
        (&["--batch-size", "-3"], &["--batch-size", ">= 1"]),
        (&["--lr", "-1"], &["--lr", "> 0"]),
        (&["--lr", "nan"], &["--lr", "> 0"]),
        (&["--epochs", "many"], &["--epochs"]),
        (&["--no-such-flag"], &["--no-such-flag"]),
        (&["--seed", "-1"], &["--seed", ">= 0"]),
        (
            &["--max-consecutive-skips", "-2"],
            &["--max-consecutive-skips", ">= 0"],
        ),
        (
            &["--min-loss-scale", "0"],
            &["--min-loss-scale", "smallest normal"],
        ),
    ];
    for (args, needles) in cases {
        let out = amp_train(args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        for n in *needles {
            assert!(stderr.contains(n), "{args:?}: {n:?} not in {stderr}");
        }
    }
}

#[test]
fn a_corrupt_checkpoint_is_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("amp-train-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let ck = dir.join("ck");
    let out = amp_train(&[
        "--device",
        "cpu",
        "--epochs",
        "1",
        "-q",
        "--checkpoint",
        ck.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    std::fs::write(
        ck.join("state.json"),
        b"{\"format\": \"amp-train-checkpoint\", \"vers",
    )
    .unwrap();
    let out = amp_train(&[
        "--device",
        "cpu",
        "--epochs",
        "2",
        "-q",
        "--resume",
        ck.to_str().unwrap(),
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("checkpoint") && stderr.contains("state.json is damaged (not valid JSON"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_short_run_reports_and_writes_metrics_and_plot() {
    let dir = std::env::temp_dir().join(format!("amp-train-cli-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (metrics, plot) = (dir.join("m.json"), dir.join("loss.svg"));
    let out = amp_train(&[
        "--device",
        "cpu",
        "--precision",
        "f16",
        "--epochs",
        "2",
        "-q",
        "--metrics",
        metrics.to_str().unwrap(),
        "--plot",
        plot.to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for needle in [
        "dtype is f16",
        "device:",
        "test accuracy:",
        "wall time:",
        "samples/s",
        "steps skipped:",
        "final loss scale",
        "autocast ops:",
    ] {
        assert!(stdout.contains(needle), "{needle:?} not in {stdout}");
    }
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&metrics).unwrap()).unwrap();
    assert_eq!(m["precision"]["dtype"], "f16");
    assert_eq!(m["history"].as_array().unwrap().len(), 2);
    assert_eq!(m["step_losses"].as_array().unwrap().len(), 2 * 23);
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("<polyline"),
        "not an SVG line chart"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn cuda_is_refused_with_a_reason_when_absent() {
    if amp_cuda::is_available() {
        println!("skipped: a CUDA device is present (the digits tests cover it)");
        return;
    }
    let out = amp_train(&["--device", "cuda", "--epochs", "1", "-q"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--device") && stderr.contains("cuda:0 is not available"),
        "{stderr}"
    );
    // auto falls back to the CPU.
    let out = amp_train(&["--device", "auto", "--epochs", "1", "-q"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("device:          cpu"));
}

#[test]
fn lm_trains_reports_and_samples() {
    let dir = std::env::temp_dir().join(format!("amp-cli-lm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let metrics = dir.join("m.json");
    let out = amp_train(&[
        "lm",
        "--device",
        "cpu",
        "--precision",
        "f16",
        "--steps",
        "4",
        "--eval-interval",
        "2",
        "--layers",
        "1",
        "--d-model",
        "16",
        "--heads",
        "2",
        "--context",
        "16",
        "--batch-size",
        "4",
        "--sample",
        "30",
        "--quiet",
        "--metrics",
        metrics.to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}{}", stdout, text(&out.stderr));
    for needle in [
        "dtype is f16",
        "validation loss:",
        "train loss:",
        "tokens/s:",
        "peak memory:",
        "steps skipped:",
        "final loss scale",
        "sample (temperature 0.8):",
    ] {
        assert!(stdout.contains(needle), "{needle:?} not in {stdout}");
    }
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&metrics).unwrap()).unwrap();
    assert_eq!(m["step_losses"].as_array().unwrap().len(), 4);
    assert_eq!(m["eval_split"], "validation");
    // Bad model shapes are refused by name.
    let out = amp_train(&["lm", "--d-model", "10", "--heads", "4", "--steps", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("d_model"),
        "{}",
        text(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Built without the `mpi` feature (the default), `--distributed` says how
/// to get it; with it, tests/distributed.rs checks the launch under mpirun.
#[cfg(not(feature = "mpi"))]
#[test]
fn distributed_without_mpi_compiled_in_says_how_to_get_it() {
    for args in [
        &["--distributed", "--epochs", "1"][..],
        &["cnn", "--distributed", "--epochs", "1"][..],
    ] {
        let out = amp_train(args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("--distributed needs MPI")
                && err.contains("--features mpi")
                && err.contains("libopenmpi-dev")
                && err.contains("mpirun -np 2"),
            "{err}"
        );
    }
}
