//! `amp-train`: trains a GELU MLP on the bundled digits set in mixed
//! precision and reports what it did. `amp-train demo` runs the mission's loop.

use amp_train::train::{train, TrainConfig};
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
    /// Seed for initialisation and shuffling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
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

fn parse_lr(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!(
            "{s:?} is not valid: expected a finite number > 0, e.g. 1e-3"
        )),
    }
}

fn run_train(args: TrainArgs) -> Result<(), Box<dyn std::error::Error>> {
    let device = args.device.device()?;
    let config = TrainConfig {
        precision: args.precision,
        epochs: args.epochs,
        batch_size: args.batch_size,
        lr: args.lr,
        seed: args.seed,
        checkpoint: args.checkpoint,
        resume: args.resume,
        progress: !args.quiet,
        ..TrainConfig::default()
    };
    let choice = config.precision.resolve(&device);
    println!("dtype is {} ({})", choice.dtype, choice.reason);
    let layers: Vec<String> = config.layers.iter().map(|w| w.to_string()).collect();
    println!(
        "training a {} GELU MLP on digits: {} epochs, batch {}, AdamW lr {}, seed {}, on {}",
        layers.join("-"),
        config.epochs,
        config.batch_size,
        config.lr,
        config.seed,
        device
    );
    let outcome = train(&config, &device)?;
    print!("{}", outcome.report.summary());
    if let Some(path) = &args.metrics {
        let json = serde_json::to_string_pretty(&outcome.report)?;
        std::fs::write(path, json + "\n")
            .map_err(|e| format!("writing metrics {}: {e}", path.display()))?;
        println!("metrics written to {}", path.display());
    }
    if let Some(path) = &args.plot {
        amp_train::plot::write_loss_svg(path, &outcome.report)?;
        println!("loss curve written to {}", path.display());
    }
    Ok(())
}

fn main() -> ExitCode {
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
