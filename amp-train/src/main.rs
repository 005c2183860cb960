//! `amp-train`: trains a GELU MLP on the bundled digits set in mixed
//! precision and reports what it did. `amp-train lm` trains a character-level
//! GPT on the bundled text; `amp-train demo` runs the mission's loop.

use amp_train::dist::ProcessGroup;
use amp_train::train::{
    train, train_cnn, train_lm, CnnConfig, FitConfig, LmConfig, TrainConfig, TrainReport,
};
use amp_train::{DeviceSpec, Precision};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

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
    /// A character-level GPT on the bundled text (regex-automata's source): trains, reports
    /// train/validation loss, tokens/s, peak memory and skipped steps, then samples text.
    Lm(Box<LmArgs>),
    /// A residual CNN (conv, batch norm, pooling) on the digits images (1×8×8): trains and
    /// reports test accuracy, like the default MLP run.
    Cnn(Box<CnnArgs>),
}

/// The flags every training run has.
#[derive(Args, Debug)]
struct RunArgs {
    /// Precision: auto picks bf16 where native, else f16 with loss scaling on CUDA, else f32.
    #[arg(long, value_enum, default_value_t = Precision::Auto)]
    precision: Precision,
    /// Device: auto (CUDA if usable, else CPU), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto", value_parser = parse_device)]
    device: DeviceSpec,
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
    /// Write an SVG chart of the run here.
    #[arg(long, value_name = "PATH")]
    plot: Option<PathBuf>,
    /// No progress bar or per-epoch lines.
    #[arg(long, short)]
    quiet: bool,
    /// Data-parallel training over MPI, one process per rank:
    /// `mpirun -np N amp-train --distributed ...` (the batch size is per rank).
    #[arg(long)]
    distributed: bool,
    /// Seconds a collective may wait for the other ranks before the job stops
    /// with an error (a rank died or hangs).
    #[arg(long, default_value_t = 300, value_name = "SECONDS", value_parser = parse_positive_u64, requires = "distributed")]
    dist_timeout: u64,
}

impl RunArgs {
    /// Checks `--metrics` and `--plot` before training, so a bad path fails at once.
    fn check_outputs(&self) -> Result<(), Box<dyn std::error::Error>> {
        if let Some(path) = &self.metrics {
            amp_train::output::check_writable("--metrics", path)?;
        }
        if let Some(path) = &self.plot {
            amp_train::output::check_writable("--plot", path)?;
        }
        Ok(())
    }

    /// The process group of a `--distributed` run (`None` otherwise): the
    /// MPI job this process was launched into by `mpirun`. A clear error
    /// without MPI support compiled in, or without `mpirun`.
    fn process_group(&self) -> Result<Option<Arc<dyn ProcessGroup>>, Box<dyn std::error::Error>> {
        if !self.distributed {
            return Ok(None);
        }
        #[cfg(feature = "mpi")]
        {
            let timeout = std::time::Duration::from_secs(self.dist_timeout);
            // CUDA tensors over NCCL where it is compiled in, else over MPI
            // (through host copies).
            #[cfg(feature = "nccl")]
            {
                amp_train::dist::Launch::require("amp-train")?;
                let device = self.device()?;
                if device.kind() == amp_tensor::DeviceKind::Cuda {
                    let group =
                        amp_train::dist::NcclGroup::init("amp-train", Some(&device), timeout)?;
                    return Ok(Some(Arc::new(group)));
                }
            }
            let group = amp_train::dist::MpiGroup::init_with_timeout("amp-train", timeout)?;
            Ok(Some(Arc::new(group)))
        }
        #[cfg(not(feature = "mpi"))]
        {
            Err("--distributed needs MPI, and this amp-train was built without it: install Open MPI \
                 (Debian: apt-get install openmpi-bin libopenmpi-dev libclang-dev), build with \
                 `cargo build --release -p amp-train --features mpi`, and launch with \
                 `mpirun -np 2 target/release/amp-train --distributed`"
                .into())
        }
    }

    /// The device to train on. In a `--distributed` run each rank on a
    /// machine takes its own GPU: `cuda:N` (and `cuda`, `auto` resolving to a
    /// GPU) means `cuda:(N + local rank)`, as PyTorch scripts pick
    /// `cuda:LOCAL_RANK`.
    fn device(&self) -> Result<amp_tensor::Device, Box<dyn std::error::Error>> {
        let device = self.device.device()?;
        let local = amp_train::dist::Launch::from_env()
            .filter(|_| self.distributed)
            .map_or(0, |l| l.local_rank);
        if local > 0 && device.kind() == amp_tensor::DeviceKind::Cuda {
            return Ok(DeviceSpec::Cuda(device.ordinal() + local).device()?);
        }
        Ok(device)
    }

    /// The trainer's settings for `epochs` epochs.
    fn fit(&self, epochs: usize) -> FitConfig {
        FitConfig {
            precision: self.precision,
            epochs,
            checkpoint: self.checkpoint.clone(),
            resume: self.resume.clone(),
            progress: !self.quiet,
            max_consecutive_skips: (self.max_consecutive_skips > 0)
                .then_some(self.max_consecutive_skips),
            min_loss_scale: self.min_loss_scale,
            ..FitConfig::default()
        }
    }

    /// [`fit`](Self::fit) with the process group of a `--distributed` run.
    fn fit_in(&self, epochs: usize, group: &Option<Arc<dyn ProcessGroup>>) -> FitConfig {
        FitConfig {
            process_group: group.clone(),
            ..self.fit(epochs)
        }
    }

    /// Writes `--metrics` and `--plot`, each on its own: one failing does not stop the other.
    fn write_outputs(&self, report: &TrainReport) -> Result<(), Box<dyn std::error::Error>> {
        let (written, failed) =
            amp_train::output::write_outputs(report, self.metrics.as_deref(), self.plot.as_deref());
        for line in written {
            println!("{line}");
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(failed.join("; ").into())
        }
    }
}

#[derive(Args, Debug)]
struct TrainArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Epochs to train (in total, when resuming).
    #[arg(long, default_value_t = 30, value_parser = parse_positive, allow_negative_numbers = true)]
    epochs: usize,
    /// Rows per batch.
    #[arg(long, default_value_t = 64, value_parser = parse_positive, allow_negative_numbers = true)]
    batch_size: usize,
    /// AdamW learning rate.
    #[arg(long, default_value_t = 1e-3, value_parser = parse_lr, allow_negative_numbers = true)]
    lr: f64,
}

#[derive(Args, Debug)]
struct LmArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Optimizer steps in total.
    #[arg(long, default_value_t = 600, value_parser = parse_positive, allow_negative_numbers = true)]
    steps: usize,
    /// Steps between validation losses.
    #[arg(long, default_value_t = 100, value_parser = parse_positive, allow_negative_numbers = true)]
    eval_interval: usize,
    /// Sequences per batch.
    #[arg(long, default_value_t = 32, value_parser = parse_positive, allow_negative_numbers = true)]
    batch_size: usize,
    /// AdamW learning rate.
    #[arg(long, default_value_t = 3e-3, value_parser = parse_lr, allow_negative_numbers = true)]
    lr: f64,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 128, value_parser = parse_positive, allow_negative_numbers = true)]
    context: usize,
    /// Transformer blocks.
    #[arg(long, default_value_t = 4, value_parser = parse_positive, allow_negative_numbers = true)]
    layers: usize,
    /// Width of the model.
    #[arg(long, default_value_t = 128, value_parser = parse_positive, allow_negative_numbers = true)]
    d_model: usize,
    /// Attention heads (d-model must be a multiple).
    #[arg(long, default_value_t = 4, value_parser = parse_positive, allow_negative_numbers = true)]
    heads: usize,
    /// Characters to sample at the end (0: none).
    #[arg(long, default_value_t = 400)]
    sample: usize,
    /// Sampling temperature (0: always the most likely character).
    #[arg(long, default_value_t = 0.8)]
    temperature: f64,
}

#[derive(Args, Debug)]
struct CnnArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Epochs to train (in total, when resuming).
    #[arg(long, default_value_t = 20, value_parser = parse_positive, allow_negative_numbers = true)]
    epochs: usize,
    /// Images per batch.
    #[arg(long, default_value_t = 64, value_parser = parse_positive, allow_negative_numbers = true)]
    batch_size: usize,
    /// AdamW learning rate.
    #[arg(long, default_value_t = 3e-3, value_parser = parse_lr, allow_negative_numbers = true)]
    lr: f64,
    /// Channels of the stem (the last residual block has twice as many).
    #[arg(long, default_value_t = 32, value_parser = parse_positive, allow_negative_numbers = true)]
    channels: usize,
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

fn parse_positive_u64(s: &str) -> Result<u64, String> {
    match s.trim().parse::<u64>() {
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

fn run_train(
    args: TrainArgs,
    group: &Option<Arc<dyn ProcessGroup>>,
) -> Result<(), Box<dyn std::error::Error>> {
    args.run.check_outputs()?;
    let device = args.run.device()?;
    let config = TrainConfig {
        fit: args.run.fit_in(args.epochs, group),
        batch_size: args.batch_size,
        lr: args.lr,
        seed: args.run.seed,
        ..TrainConfig::default()
    };
    let choice = config.fit.resolve_precision(&device)?;
    if leads(group) {
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
    }
    let outcome = train(&config, &device)?;
    finish(&args.run, &outcome.report, group)
}

fn run_cnn(
    args: CnnArgs,
    group: &Option<Arc<dyn ProcessGroup>>,
) -> Result<(), Box<dyn std::error::Error>> {
    args.run.check_outputs()?;
    let device = args.run.device()?;
    let config = CnnConfig {
        fit: args.run.fit_in(args.epochs, group),
        batch_size: args.batch_size,
        lr: args.lr,
        seed: args.run.seed,
        channels: args.channels,
    };
    let choice = config.fit.resolve_precision(&device)?;
    if leads(group) {
        println!("dtype is {} ({})", choice.dtype, choice.reason);
        println!(
            "training a residual CNN ({} and {} channels) on the digits images: {} epochs, batch {}, \
             AdamW lr {}, seed {}, on {}",
            config.channels,
            2 * config.channels,
            config.fit.epochs,
            config.batch_size,
            config.lr,
            config.seed,
            device
        );
    }
    let outcome = train_cnn(&config, &device)?;
    finish(&args.run, &outcome.report, group)
}

/// This process's peak resident memory in MiB (Linux `VmHWM`), if known.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn run_lm(
    args: LmArgs,
    group: &Option<Arc<dyn ProcessGroup>>,
) -> Result<(), Box<dyn std::error::Error>> {
    args.run.check_outputs()?;
    if !(args.temperature >= 0.0 && args.temperature.is_finite()) {
        return Err(format!(
            "--temperature must be a finite number >= 0, got {}",
            args.temperature
        )
        .into());
    }
    let device = args.run.device()?;
    let config = LmConfig {
        fit: args.run.fit_in(1, group),
        steps: args.steps,
        eval_interval: args.eval_interval,
        batch_size: args.batch_size,
        lr: args.lr,
        seed: args.run.seed,
        context: args.context,
        layers: args.layers,
        d_model: args.d_model,
        heads: args.heads,
        ..LmConfig::default()
    };
    let choice = config.fit.resolve_precision(&device)?;
    if leads(group) {
        println!("dtype is {} ({})", choice.dtype, choice.reason);
        println!(
            "training a character-level GPT ({} layers, d_model {}, {} heads, context {}) on regex-automata's source: \
             {} steps, batch {}, AdamW lr {}, seed {}, on {}",
            config.layers,
            config.d_model,
            config.heads,
            config.context,
            config.steps,
            config.batch_size,
            config.lr,
            config.seed,
            device
        );
    }
    let outcome = train_lm(&config, &device)?;
    if !leads(group) {
        return Ok(()); // rank 0 reports and samples
    }
    let report = &outcome.report;
    print!("{}", report.summary());
    println!(
        "tokens/s:        {:.0} (training)",
        report.samples_per_s * config.context as f64
    );
    match peak_rss_mib() {
        Some(mib) => println!("peak memory:     {mib:.0} MiB (resident, whole process)"),
        None => println!("peak memory:     unknown (no /proc/self/status)"),
    }
    if args.sample > 0 {
        let vocab = outcome.corpus.vocab();
        let prompt = vocab.encode(b"/// ")?;
        let _region = choice
            .autocast_dtype()
            .map(|dt| amp_autocast::autocast(device.kind(), dt))
            .transpose()?;
        let tokens =
            outcome
                .model
                .generate(&prompt, args.sample, args.temperature, config.seed, &device)?;
        println!(
            "sample (temperature {}):\n/// {}",
            args.temperature,
            vocab.decode(&tokens)?
        );
    }
    args.run.write_outputs(report)
}

/// True for the process that reports: rank 0, or the only one.
fn leads(group: &Option<Arc<dyn ProcessGroup>>) -> bool {
    group.as_ref().is_none_or(|g| g.rank() == 0)
}

/// The end of a run: rank 0 (or the only process) prints the summary and
/// writes `--metrics` and `--plot`.
fn finish(
    run: &RunArgs,
    report: &TrainReport,
    group: &Option<Arc<dyn ProcessGroup>>,
) -> Result<(), Box<dyn std::error::Error>> {
    if !leads(group) {
        return Ok(());
    }
    print!("{}", report.summary());
    run.write_outputs(report)
}

fn main() -> ExitCode {
    // This program's decision: large freed buffers stay mapped for reuse.
    amp_cpu::keep_freed_buffers();
    let cli = Cli::parse();
    let run = match &cli.command {
        Some(Command::Lm(args)) => Some(&args.run),
        Some(Command::Cnn(args)) => Some(&args.run),
        Some(Command::Demo { .. }) => None,
        None => Some(&cli.train.run),
    };
    let group = match run.map(RunArgs::process_group).transpose() {
        Ok(group) => group.flatten(),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(g) = &group {
        // The ranks on this machine share its cores (unless RAYON_NUM_THREADS says otherwise).
        if std::env::var_os("RAYON_NUM_THREADS").is_none() {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            let threads =
                amp_train::dist::Launch::from_env().map_or(cores, |l| l.threads_per_rank(cores));
            std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
        }
        if g.rank() == 0 {
            println!(
                "data parallel: {} ranks over {}",
                g.world_size(),
                g.backend()
            );
        }
    }
    let result = match cli.command {
        Some(Command::Demo { device }) => device
            .device()
            .map_err(Into::into)
            .and_then(|d| amp_train::demo::mission_loop(&d, &mut std::io::stdout().lock())),
        Some(Command::Lm(args)) => run_lm(*args, &group),
        Some(Command::Cnn(args)) => run_cnn(*args, &group),
        None => run_train(cli.train, &group),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match &group {
                Some(g) => eprintln!("error on rank {} of {}: {e}", g.rank(), g.world_size()),
                None => eprintln!("error: {e}"),
            }
            // The other ranks would wait for this one in a collective until
            // their timeout: end the whole job now.
            if let Some(g) = group.filter(|g| g.world_size() > 1) {
                g.abort(1);
            }
            ExitCode::FAILURE
        }
    }
}
