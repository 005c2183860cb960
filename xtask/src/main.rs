//! `cargo xtask <command>`: the workspace's own tools.
//!
//! - `accuracy [--quick|--full] [--json PATH]`: conversion checks of every
//!   narrow float format against independent references; prints a table and
//!   exits non-zero on any mismatch.

mod accuracy;
mod bench;
mod gpu;
mod kernels;
mod report;
mod report_ops;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  accuracy [--quick|--full] [--cuda-only] [--json PATH]
      conversion checks for f16, bf16, f8e4m3 and f8e5m2 against independent
      references: exhaustive decode, round trips, nearest-even / saturating /
      toward-zero encoding. --quick (default) sweeps 1 in 257 f32 bit
      patterns (seconds); --full sweeps every f32 through the f16/bf16
      from_f32 and 1 in 17 through the others (a few minutes). --json PATH
      also writes the rows as JSON. Then every op x dtype x backend (CPU
      ISA paths, CUDA when present) against the f64 reference backend, and
      the dtype each op runs in under each autocast policy preset, and
      digits training parity. --cuda-only keeps what a GPU adds (CUDA op
      rows, autocast rows, training on cuda:0).
  kernels
      compiles every CUDA kernel with NVRTC for sm_80 and sm_90.
  gpu [--out DIR]
      builds the bundle for a machine with an NVIDIA GPU and no Rust.
  bench [--torch PYTHON] [--rounds N] [--only cnn|gemm|memory|transformer]
      the CPU performance table (GEMM, MLP step, conv2d and ResNet step,
      attention, GPT step and their peak memory, casts, unscale, digits
      run); with --torch (or AMP_BENCH_TORCH) PyTorch runs the same
      workloads and the table shows the ratios. --only cnn: the conv2d and
      ResNet rows alone; --only gemm: the peaks, GEMM rows and MLP step;
      --only memory: the casts, unscale and copies; --only transformer:
      the attention and GPT rows.
  dist-model
      when data parallelism pays: measures a training step of the bench MLP
      and the default GPT here, and prints the ring all-reduce time of their
      gradients and the predicted scaling efficiency for 2, 8 and 64 ranks
      over 10 Gb/s, 100 Gb/s and NVLink 4 (also for an H100's estimated
      compute time).
";

fn usage_error(message: &str) -> ExitCode {
    eprintln!("error: {message}\n\n{USAGE}");
    ExitCode::from(2)
}

/// The options of `accuracy`.
#[derive(Debug)]
struct AccuracyArgs {
    mode: accuracy::Mode,
    json: Option<PathBuf>,
    /// Only what a GPU adds: op rows on CUDA (and the reference floor),
    /// autocast rows, training parity on cuda:0; no CPU-only conversion sweeps.
    cuda_only: bool,
}

fn parse_accuracy(args: &[String]) -> Result<AccuracyArgs, String> {
    let mut parsed = AccuracyArgs {
        mode: accuracy::Mode::Quick,
        json: None,
        cuda_only: false,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => parsed.mode = accuracy::Mode::Quick,
            "--full" => parsed.mode = accuracy::Mode::Full,
            "--cuda-only" => parsed.cuda_only = true,
            "--json" => match it.next() {
                Some(path) => parsed.json = Some(PathBuf::from(path)),
                None => return Err("--json needs a PATH".to_string()),
            },
            other => match other.strip_prefix("--json=") {
                Some(path) => parsed.json = Some(PathBuf::from(path)),
                None => return Err(format!("unknown argument to accuracy: {other:?}")),
            },
        }
    }
    Ok(parsed)
}

fn run_accuracy(args: AccuracyArgs) -> ExitCode {
    let start = Instant::now();
    eprintln!("accuracy ({}):", args.mode.name());
    let training_device = if args.cuda_only {
        match amp_cuda::device(0) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("error: --cuda-only needs a CUDA device: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        amp_cpu::device()
    };
    let rows = if args.cuda_only {
        Vec::new()
    } else {
        accuracy::run(args.mode)
    };
    print!("{}", report::render(&rows));
    let op_rows = accuracy::run_ops(args.mode, args.cuda_only);
    println!();
    print!("{}", report_ops::render(&op_rows));
    let autocast_rows = accuracy::autocast_rows::rows();
    println!();
    print!("{}", accuracy::autocast_rows::render(&autocast_rows));
    let training_rows = accuracy::training::rows(&training_device);
    println!();
    print!("{}", accuracy::training::render(&training_rows));
    let all_pass = rows.iter().all(|r| r.pass)
        && op_rows.iter().all(|r| r.pass)
        && autocast_rows.iter().all(|r| r.pass)
        && training_rows.iter().all(|r| r.pass);
    if let Some(path) = &args.json {
        let mut doc = report::to_json(&rows, args.mode.name());
        doc["op_rows"] = serde_json::Value::Array(report_ops::to_json(&op_rows));
        doc["autocast_rows"] =
            serde_json::Value::Array(accuracy::autocast_rows::to_json(&autocast_rows));
        doc["training_rows"] =
            serde_json::Value::Array(accuracy::training::to_json(&training_rows));
        doc["pass"] = serde_json::Value::Bool(all_pass);
        let text = serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n";
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("error: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        eprintln!("wrote {}", path.display());
    }
    eprintln!(
        "accuracy ({}) took {:.1?}",
        args.mode.name(),
        start.elapsed()
    );
    if all_pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("accuracy") => match parse_accuracy(&args[1..]) {
            Ok(parsed) => run_accuracy(parsed),
            Err(message) => usage_error(&message),
        },
        Some("bench") => bench::run(&args[1..]),
        Some("bench-rss") => bench::run_rss(&args[1..]),
        Some("dist-model") => bench::dist::run(&args[1..]),
        Some("kernels") => kernels::run(),
        Some("gpu") => gpu::run(&args[1..]),
        Some("gpu-kernels") => gpu::precompile_here(&args[1..]),
        Some("-h" | "--help" | "help") => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some(other) => usage_error(&format!("unknown command {other:?}")),
        None => usage_error("no command given"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_accuracy_flags() {
        let a = parse_accuracy(&strings(&["--full", "--json", "out.json"])).unwrap();
        assert_eq!(a.mode, accuracy::Mode::Full);
        assert_eq!(a.json, Some(PathBuf::from("out.json")));
        let a = parse_accuracy(&[]).unwrap();
        assert_eq!(a.mode, accuracy::Mode::Quick);
        assert!(parse_accuracy(&strings(&["--json"])).is_err());
        assert!(parse_accuracy(&strings(&["--fast"]))
            .unwrap_err()
            .contains("--fast"));
    }
}
