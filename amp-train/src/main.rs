//! `amp-train`: trains a GELU MLP on the bundled digits set in mixed
//! precision and reports what it did. `amp-train demo` runs the mission's loop.

use amp_train::train::{train, FitConfig, TrainConfig};
use amp_train::{DeviceSpec, Precision};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "amp-train",
    version,
    about = "Train a 64-256-256-10 GELU MLP on the digits set with automatic mixed precision",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    train: TrainArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The mission's loop: Linear(10, 2), 40 random samples, batch 2, AdamW, 10 epochs.
    Demo {
        /// Device: auto, cpu, cuda or cuda:N.
        #[arg(long, default_value = "auto", value_parser = parse_device)]
        device: DeviceSpec,
    },
}

#[derive(Args, Debug)]
struct TrainArgs {
    /// Precision: auto picks bf16 where native, else f16 with loss scaling on CUDA, else f32.
    #[arg(long, value_enum, default_value_t = Precision::Auto)]
    precision: Precision,
    /// Device: auto (CUDA if usable, else CPU), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto", value_parser = parse_device)]
    device: DeviceSpec,
    /// Epochs to train (in total, when resuming).
    #[arg(long, default_value_t = 30, value_parser = parse_positive, allow_negative_numbers = true)]
    epochs: usize,
    /// Rows per batch.
    #[arg(long, default_value_t = 64, value_parser = parse_positive, allow_negative_numbers = true)]
    batch_size: usize,
    /// AdamW learning rate.
    #[arg(long, default_value_t = 1e-3, value_parser = parse_lr, allow_negative_numbers = true)]
    lr: f64,
    /// Seed for initialisation and shuffling (a whole number >= 0).
    #[arg(long, default_value_t = 0, value_parser = parse_seed, allow_negative_numbers = true)]
    seed: u64,
    /// Stop with an error after N consecutive steps skipped for inf/NaN gradients (f16) or with a
    /// non-finite loss (bf16, f32); 0 never stops.
    #[arg(long, default_value_t = 50, value_name = "N", value_parser = parse_count, allow_negative_numbers = true)]
    max_consecutive_skips: u64,
    /// The lowest loss scale the f16 GradScaler backs off to.
    #[arg(long, default_value_t = 1.0, value_name = "SCALE", value_parser = parse_min_scale, allow_negative_numbers = true)]
    min_loss_scale: f64,
    /// Write a checkpoint directory here after every epoch (replaced atomically).
    #[arg(long, value_name = "PATH")]
    checkpoint: Option<PathBuf>,
    /// Resume from this checkpoint directory.
    #[arg(long, value_name = "PATH")]
    resume: Option<PathBuf>,
    /// Write the run's metrics as JSON here.
    #[arg(long, value_name = "PATH")]
    metrics: Option<PathBuf>,
    /// Write an SVG loss curve here.
    #[arg(long, value_name = "PATH")]
    plot: Option<PathBuf>,
    /// No progress bar or per-epoch lines.
    #[arg(long, short)]
    quiet: bool,
}

fn parse_device(s: &str) -> Result<DeviceSpec, String> {
    s.parse()
}

fn parse_positive(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{s:?} is not valid: expected a whole number >= 1")),
    }
}

fn parse_seed(s: &str) -> Result<u64, String> {
    s.trim()
        .parse::<u64>()
        .map_err(|_| format!("{s:?} is not valid: expected a whole number >= 0 (and < 2^64)"))
}

fn parse_count(s: &str) -> Result<u64, String> {
    s.trim()
        .parse::<u64>()
        .map_err(|_| format!("{s:?} is not valid: expected a whole number >= 0 (0 never stops)"))
}

fn parse_min_scale(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= f64::from(amp_scaler::SCALE_FLOOR) => Ok(v),
        _ => Err(format!(
            "{s:?} is not valid: expected a finite number >= {:e} (the smallest normal f32), e.g. 1",
            amp_scaler::SCALE_FLOOR
        )),
    }
}

fn parse_lr(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!(
            "{s:?} is not valid: expected a finite number > 0, e.g. 1e-3"
        )),
    }
}

fn run_train(args: TrainArgs) -> Result<(), Box<dyn std::error::Error>> {
    // Outputs are checked before training, so a bad path fails at once.
    if let Some(path) = &args.metrics {
        amp_train::output::check_writable("--metrics", path)?;
    }
    if let Some(path) = &args.plot {
        amp_train::output::check_writable("--plot", path)?;
    }
    let device = args.device.device()?;
    let config = TrainConfig {
        fit: FitConfig {
            precision: args.precision,
            epochs: args.epochs,
            checkpoint: args.checkpoint,
            resume: args.resume,
            progress: !args.quiet,
            max_consecutive_skips: (args.max_consecutive_skips > 0)
                .then_some(args.max_consecutive_skips),
            min_loss_scale: args.min_loss_scale,
            ..FitConfig::default()
        },
        batch_size: args.batch_size,
        lr: args.lr,
        seed: args.seed,
        ..TrainConfig::default()
    };
    let choice = config.fit.precision.resolve(&device);
    println!("dtype is {} ({})", choice.dtype, choice.reason);
    let layers: Vec<String> = config.layers.iter().map(|w| w.to_string()).collect();
    println!(
        "training a {} GELU MLP on digits: {} epochs, batch {}, AdamW lr {}, seed {}, on {}",
        layers.join("-"),
        config.fit.epochs,
        config.batch_size,
        config.lr,
        config.seed,
        device
    );
    let outcome = train(&config, &device)?;
    print!("{}", outcome.report.summary());
    // Each output is written on its own: one failing does not stop the other.
    let (written, failed) = amp_train::output::write_outputs(
        &outcome.report,
        args.metrics.as_deref(),
        args.plot.as_deref(),
    );
    for line in written {
        println!("{line}");
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("; ").into())
    }
}

fn main() -> ExitCode {
    // This program's decision: large freed buffers stay mapped for reuse.
    amp_cpu::keep_freed_buffers();
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Demo { device }) => device
            .device()
            .map_err(Into::into)
            .and_then(|d| amp_train::demo::mission_loop(&d, &mut std::io::stdout().lock())),
        None => run_train(cli.train),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
