//! Data-parallel training on a real `mpirun -np 2` (feature `mpi`).
//!
//! Without an MPI launcher in the environment this program is the driver: it
//! trains the single-process references itself and launches itself (or the
//! `amp-train` binary) under `mpirun` for the data-parallel runs, then
//! compares. Under `mpirun` it is a rank and runs the scenario named by its
//! arguments.

use amp_tensor::{Device, Tensor};
use amp_train::checkpoint::{load_safetensors, save_safetensors};
use amp_train::data::{digits, DataLoader, TensorDataset};
use amp_train::dist::{Launch, MpiGroup, ProcessGroup};
use amp_train::nn::Module;
use amp_train::optim::{Sgd, SgdConfig};
use amp_train::train::{mlp, FitConfig, Trainer};
use amp_train::Precision;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;

/// Rows of the digits training split used: 20 full batches of 64 (or of 2 × 32).
const ROWS: usize = 1280;
const EPOCHS: usize = 15;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if Launch::from_env().is_some() {
        return rank_main(&args[1..]);
    }
    let results = vec![
        (
            "two_ranks_of_batch_b_train_like_one_of_batch_2b",
            equivalence(),
        ),
        (
            "the_cli_trains_checkpoints_and_resumes_on_other_rank_counts",
            cli_runs(),
        ),
        ("bad_launches_are_clear_errors", bad_launches()),
    ];
    let failed = results.iter().filter(|(_, r)| r.is_err()).count();
    for (name, result) in &results {
        match result {
            Ok(()) => println!("test distributed::{name} ... ok"),
            Err(e) => println!("test distributed::{name} ... FAILED\n{e}"),
        }
    }
    println!(
        "distributed: {} passed, {failed} failed",
        results.len() - failed
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

type R = Result<(), String>;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("amp-distributed-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch folder");
    dir
}

/// The first `ROWS` rows of the digits training split.
fn data(device: &Device) -> TensorDataset {
    let (train, _) = digits(device).unwrap();
    let index: Vec<i64> = (0..ROWS as i64).collect();
    TensorDataset::new(train.rows(&index).unwrap()).unwrap()
}

/// Trains the digits MLP with SGD (momentum 0.9) in f32 for `EPOCHS`
/// epochs of batch `batch` (per rank) and returns its parameters.
fn train(batch: usize, group: Option<Arc<dyn ProcessGroup>>) -> Vec<(String, Tensor)> {
    let device = amp_cpu::device();
    let model = mlp(&[64, 128, 10], &device, 3).unwrap();
    let mut opt = Sgd::new(
        model.named_parameters(),
        SgdConfig {
            lr: 0.05,
            momentum: 0.9,
            ..Default::default()
        },
    );
    let config = FitConfig {
        precision: Precision::F32,
        epochs: EPOCHS,
        process_group: group,
        ..FitConfig::default()
    };
    let report = Trainer::new(&model, &mut opt)
        .config(config)
        .fit(&DataLoader::new(data(&device), batch).shuffle(11))
        .unwrap();
    assert_eq!(
        report.steps,
        (EPOCHS * ROWS / (batch * report.ranks)) as u64
    );
    model.named_parameters()
}

fn equivalence() -> R {
    let reference = train(64, None);
    let dir = scratch("equivalence");
    let out = dir.join("weights.safetensors");
    run_ranks(&["train", out.to_str().unwrap()])?;
    let got = load_safetensors(&out, &Device::reference()).map_err(|e| e.to_string())?;
    let mut worst = 0.0f64;
    if got.len() != reference.len() {
        return Err(format!(
            "{} tensors saved, {} expected",
            got.len(),
            reference.len()
        ));
    }
    for (name, want) in &reference {
        let Some((_, got)) = got.iter().find(|(n, _)| n == name) else {
            return Err(format!("parameter {name} was not saved"));
        };
        let (a, b) = (got.to_f64_vec().unwrap(), want.to_f64_vec().unwrap());
        let diff = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).powi(2))
            .sum::<f64>()
            .sqrt();
        let norm = b.iter().map(|y| y * y).sum::<f64>().sqrt();
        let moved = b.iter().map(|y| y.abs()).sum::<f64>();
        if moved == 0.0 {
            return Err(format!("{name} is all zeros"));
        }
        worst = worst.max(diff / norm);
    }
    println!(
        "  2 ranks × batch 32 vs 1 × batch 64, {} SGD steps: largest relative difference of a parameter {worst:.2e}",
        EPOCHS * ROWS / 64
    );
    let _ = std::fs::remove_dir_all(&dir);
    if worst <= 1e-6 {
        Ok(())
    } else {
        Err(format!(
            "weights differ by {worst:e} (relative), more than 1e-6"
        ))
    }
}

/// Runs this test binary under `mpirun -np 2` with `args`.
fn run_ranks(args: &[&str]) -> R {
    let exe = std::env::current_exe().unwrap();
    let out = amp_testkit::mpirun(2)
        .arg(exe)
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "mpirun failed ({:?}):\n{}{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn rank_main(args: &[String]) -> ExitCode {
    let group = MpiGroup::init("distributed-test").expect("MPI starts");
    match args.first().map(String::as_str) {
        Some("train") => {
            let group: Arc<dyn ProcessGroup> = Arc::new(group);
            let params = train(32, Some(group.clone()));
            if group.rank() == 0 {
                save_safetensors(Path::new(&args[1]), &params).unwrap();
            }
            ExitCode::SUCCESS
        }
        other => {
            eprintln!("unknown scenario {other:?}");
            group.abort(2)
        }
    }
}

/// Runs `cmd`, returning stdout + stderr, `Err` with both if it failed.
fn output(mut cmd: Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| e.to_string())?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("{cmd:?} failed ({:?}):\n{text}", out.status.code()))
    }
}

/// The CLI's flags of these runs: f16 with the GradScaler, batch 32, `epochs` epochs.
fn f16_run(epochs: &str) -> [&str; 7] {
    [
        "--epochs",
        epochs,
        "--batch-size",
        "32",
        "--precision",
        "f16",
        "--quiet",
    ]
}

fn cli_runs() -> R {
    let bin = env!("CARGO_BIN_EXE_amp-train");
    let dir = scratch("cli");
    let ckpt = dir.join("ckpt");
    // f16 with the GradScaler on 2 ranks, a checkpoint written by rank 0.
    let mut cmd = amp_testkit::mpirun(2);
    cmd.arg(bin)
        .arg("--distributed")
        .args(f16_run("2"))
        .arg("--checkpoint")
        .arg(&ckpt);
    let text = output(cmd)?;
    for needle in [
        "data parallel: 2 ranks over mpi",
        "2 ranks × batch 32 (global batch 64)",
        "steps skipped:",
    ] {
        if !text.contains(needle) {
            return Err(format!("no {needle:?} in:\n{text}"));
        }
    }
    if text.matches("test accuracy").count() != 1 {
        return Err(format!("rank 0 alone reports:\n{text}"));
    }
    // Resume the 2-rank checkpoint in one process, then that one on 2 ranks again.
    let mut cmd = Command::new(bin);
    cmd.args(f16_run("3"))
        .arg("--resume")
        .arg(&ckpt)
        .arg("--checkpoint")
        .arg(dir.join("ckpt1"));
    let text = output(cmd)?;
    if !text.contains("from epoch 3") {
        return Err(format!("one process did not resume at epoch 3:\n{text}"));
    }
    let mut cmd = amp_testkit::mpirun(2);
    cmd.arg(bin)
        .arg("--distributed")
        .args(f16_run("4"))
        .arg("--resume")
        .arg(dir.join("ckpt1"));
    let text = output(cmd)?;
    if !text.contains("from epoch 4") || !text.contains("global batch 64") {
        return Err(format!("2 ranks did not resume at epoch 4:\n{text}"));
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn bad_launches() -> R {
    let bin = env!("CARGO_BIN_EXE_amp-train");
    // Not started by mpirun: a clear error, no silent one-rank run.
    let mut cmd = Command::new(bin);
    cmd.args(["--distributed", "--epochs", "1"]);
    let out = cmd.output().map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    if out.status.success()
        || !text.contains("must be started by an MPI launcher")
        || !text.contains("mpirun -np 2")
    {
        return Err(format!("without mpirun: {:?}\n{text}", out.status.code()));
    }
    // --dist-timeout without --distributed is refused by the parser.
    let out = Command::new(bin)
        .args(["--dist-timeout", "5"])
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        return Err("--dist-timeout alone was accepted".into());
    }
    Ok(())
}
