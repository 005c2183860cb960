//! `cargo xtask bench`: the CPU performance table of the performance issue.
//!
//! Every figure is measured in this run: ours on amp-cpu, and — when a
//! Python with PyTorch is given (`--torch PYTHON` or `AMP_BENCH_TORCH`) —
//! PyTorch's on the same workloads (the script `torch_bench.py` beside this
//! file), with the ratio. Times are medians of several repetitions after a
//! warm-up. With PyTorch, both sides run in alternating rounds (`--rounds N`,
//! 3 by default) and each figure is the median over the rounds: this
//! machine's speed drifts by up to 2× over seconds, and alternating rounds
//! give both sides the same slow and fast phases.
//!
//! The transformer rows (attention at T = 512, 1024, 2048 and a training
//! step of `amp-train lm`'s default GPT, with each one's peak resident
//! memory from a process of its own) are in [`transformer`]; the CNN rows
//! (3×3 convolutions forward + backward, a ResNet-style training step) in [`cnn`].

pub mod cnn;
pub mod dist;
pub mod transformer;

use amp_autocast::autocast;
use amp_cpu::peak::Instruction;
use amp_tensor::ops;
use amp_tensor::{DType, Device, Tensor};
use amp_train::nn::{Gelu, Linear, Module, Sequential};
use amp_train::optim::{AdamW, AdamWConfig};
use std::collections::BTreeMap;
use std::process::{Command, ExitCode};
use std::time::Instant;

pub(crate) type Res<T> = Result<T, Box<dyn std::error::Error>>;

const TORCH_SCRIPT: &str = include_str!("torch_bench.py");

/// Median seconds of `reps` runs of `f` after one warm-up run.
pub(crate) fn median_time(reps: usize, mut f: impl FnMut() -> Res<()>) -> Res<f64> {
    f()?;
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

const GEMM_SHAPES: [(usize, usize, usize); 6] = [
    (512, 512, 512),
    (1024, 1024, 1024),
    (2048, 2048, 2048),
    (256, 1024, 4096),
    (256, 4096, 4096),
    (256, 4096, 10),
];

fn gemm(device: &Device, dtype: DType, (m, k, n): (usize, usize, usize)) -> Res<f64> {
    let a = Tensor::randn(&[m, k], dtype, device, 1)?;
    let b = Tensor::randn(&[k, n], dtype, device, 2)?;
    let reps = if m * k * n > 1 << 30 { 7 } else { 15 };
    let s = median_time(reps, || {
        ops::matmul(&a, &b)?;
        Ok(())
    })?;
    Ok(2.0 * (m * k * n) as f64 / s / 1e9)
}

/// The bench's name of the measured peak of `ins`.
fn peak_name(ins: Instruction) -> String {
    format!("peak_{}_gflops", ins.name())
}

/// The CPU's model name (`/proc/cpuinfo`), or what is known without it.
pub(crate) fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| format!("unknown {} CPU", std::env::consts::ARCH))
}

/// The bench MLP: 1024-4096-4096-10, GELU.
pub(crate) fn bench_mlp(device: &Device) -> Res<Sequential> {
    Ok(Sequential::new()
        .add(Linear::seeded(1024, 4096, true, device, 0)?)
        .add(Gelu::new())
        .add(Linear::seeded(4096, 4096, true, device, 1)?)
        .add(Gelu::new())
        .add(Linear::seeded(4096, 10, true, device, 2)?))
}

/// Milliseconds of one training step of `model` with `opt` (forward and
/// cross-entropy on `(x, y)`, under autocast to `low` if given; backward;
/// AdamW), the median of `reps`.
pub(crate) fn adamw_step_ms(
    model: &dyn Module,
    opt: &mut AdamW,
    (x, y): (&Tensor, &Tensor),
    low: Option<DType>,
    reps: usize,
) -> Res<f64> {
    let device = x.device();
    let s = median_time(reps, || {
        opt.zero_grad();
        let loss = {
            let _region = low.map(|d| autocast(device.kind(), d)).transpose()?;
            ops::cross_entropy(&model.forward(x)?, y)?
        };
        loss.backward()?;
        opt.step()?;
        Ok(())
    })?;
    Ok(s * 1e3)
}

/// One AdamW training step of the 1024-4096-4096-10 GELU MLP, batch 256, in ms.
pub(crate) fn mlp_step(device: &Device, low: Option<DType>) -> Res<f64> {
    let model = bench_mlp(device)?;
    let mut opt = AdamW::new(model.named_parameters(), AdamWConfig::default());
    let x = Tensor::randn(&[256, 1024], DType::F32, device, 3)?;
    let y = Tensor::randint(0, 10, &[256], device, 4)?;
    adamw_step_ms(&model, &mut opt, (&x, &y), low, 5)
}

/// The memory-bound ops measured against the best copy: a row name (and
/// PyTorch's key) each.
const MEMORY_OPS: [&str; 8] = [
    "cast_f32_bf16_gbs",
    "cast_f32_f16_gbs",
    "cast_bf16_f32_gbs",
    "unscale_gbs",
    "relu_f32_gbs",
    "add_f32_gbs",
    "add_bf16_gbs",
    "adamw_f32_gbs",
];

/// GB/s of [`MEMORY_OPS`] and then of the two copies they are compared with,
/// each the median of 3 rounds. Each round measures the copies, then the
/// others in a rotated order, so no op follows the copy in more than one
/// round: on this project's machine the op measured right after it often ran
/// slower (up to 2×), which a fixed order would charge to one figure every time.
fn bandwidths(device: &Device) -> Res<[f64; 10]> {
    const ROUNDS: usize = 3;
    let ops = MEMORY_OPS.len();
    let op = |i: usize| match i {
        0 => cast(device, DType::F32, DType::BF16),
        1 => cast(device, DType::F32, DType::F16),
        2 => cast(device, DType::BF16, DType::F32),
        3 => unscale(device),
        4 => elementwise(device, DType::F32, 8, |x, _| x.relu()),
        5 => elementwise(device, DType::F32, 12, |x, y| x.add(y)),
        6 => elementwise(device, DType::BF16, 6, |x, y| x.add(y)),
        7 => adamw(device),
        8 => copy_bandwidth(),
        _ => streaming_copy_bandwidth(),
    };
    let mut runs: [Vec<f64>; 10] = Default::default();
    for r in 0..ROUNDS {
        for i in [ops, ops + 1]
            .into_iter()
            .chain((0..ops).map(|j| (r * 3 + j) % ops))
        {
            runs[i].push(op(i)?);
        }
    }
    Ok(runs.map(|mut v| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }))
}

/// GB/s of a cast (bytes read + written).
fn cast(device: &Device, from: DType, to: DType) -> Res<f64> {
    let n = 1usize << 24;
    let x = Tensor::randn(&[n], from, device, 5)?;
    let bytes = n * (from.size_in_bytes() + to.size_in_bytes());
    let s = median_time(9, || {
        x.to_dtype(to)?;
        Ok(())
    })?;
    Ok(bytes as f64 / s / 1e9)
}

/// GB/s of `f(x, y)` over two 16 Mi-element tensors of `dtype`, moving
/// `bytes` bytes per element (read + written).
fn elementwise(
    device: &Device,
    dtype: DType,
    bytes: usize,
    f: impl Fn(&Tensor, &Tensor) -> amp_tensor::Result<Tensor>,
) -> Res<f64> {
    let n = 1usize << 24;
    let x = Tensor::randn(&[n], dtype, device, 7)?;
    let y = Tensor::randn(&[n], dtype, device, 8)?;
    let s = median_time(9, || {
        f(&x, &y)?;
        Ok(())
    })?;
    Ok((n * bytes) as f64 / s / 1e9)
}

/// GB/s of the fused AdamW step over 16 Mi f32 parameters: reads the
/// parameter, gradient and both moments, writes the parameter and moments
/// (28 bytes per element).
fn adamw(device: &Device) -> Res<f64> {
    let n = 1usize << 24;
    let p = Tensor::randn(&[n], DType::F32, device, 9)?;
    let g = Tensor::randn(&[n], DType::F32, device, 10)?;
    let m = Tensor::zeros(&[n], DType::F32, device)?;
    let v = Tensor::zeros(&[n], DType::F32, device)?;
    let mut step = 0;
    let s = median_time(9, || {
        step += 1;
        let hyper = amp_tensor::backend::AdamWStep {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-2,
            step,
        };
        ops::adamw_step(&p, &g, &m, &v, &hyper)?;
        Ok(())
    })?;
    Ok((n * 28) as f64 / s / 1e9)
}

/// GB/s of the fused unscale over 16 Mi f32 (read + write).
fn unscale(device: &Device) -> Res<f64> {
    let n = 1usize << 24;
    let g = Tensor::randn(&[n], DType::F32, device, 6)?;
    let s = median_time(9, || {
        ops::non_finite_check_and_unscale_(&[&g], 1.0)?;
        Ok(())
    })?;
    Ok((n * 8) as f64 / s / 1e9)
}

/// The machine's copy bandwidth for the same bytes (16 Mi f32, read + write):
/// `memcpy` into a reused buffer on every thread of the pool, as the casts run.
fn copy_bandwidth() -> Res<f64> {
    use rayon::prelude::*;
    let n = 1usize << 24;
    let src: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let mut dst = vec![0f32; n];
    let s = median_time(9, || {
        dst.par_chunks_mut(1 << 16)
            .zip(std::hint::black_box(&src).par_chunks(1 << 16))
            .for_each(|(d, s)| d.copy_from_slice(s));
        std::hint::black_box(&dst);
        Ok(())
    })?;
    Ok((n * 8) as f64 / s / 1e9)
}

/// The memory-bound rows: casts and the fused unscale, each against the
/// machine's best copy of the same bytes, and the copies (`--only memory`).
fn memory_rows(device: &Device, figs: &mut Vec<Figure>) -> Res<()> {
    let fig = Figure::new;
    eprintln!("  casts, elementwise, unscale, AdamW, copy");
    let measured = bandwidths(device)?;
    let (copy, streamed) = (measured[MEMORY_OPS.len()], measured[MEMORY_OPS.len() + 1]);
    // The best copy of these bytes on this machine that we know of.
    let best = copy.max(streamed);
    for (key, gbs) in MEMORY_OPS.into_iter().zip(measured) {
        figs.push(fig(key.into(), "GB/s", gbs, Some(key.into()), false, ""));
        figs.push(fig(
            format!("{key} / best copy"),
            "×",
            gbs / best,
            None,
            false,
            "≥ 0.8×",
        ));
    }
    figs.push(fig(
        "copy_gbs".into(),
        "GB/s",
        copy,
        Some("copy_gbs".into()),
        false,
        "",
    ));
    figs.push(fig(
        "copy_streaming_gbs (non-temporal stores)".into(),
        "GB/s",
        streamed,
        None,
        false,
        "",
    ));
    Ok(())
}

/// The copy of [`copy_bandwidth`] with non-temporal (streaming) stores,
/// which skip reading each destination line before writing it: the best
/// copy of a large buffer on x86 (AVX2); the plain copy elsewhere.
fn streaming_copy_bandwidth() -> Res<f64> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        use rayon::prelude::*;
        let n = 1usize << 24;
        let src: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let mut dst = vec![0f32; n];
        let s = median_time(9, || {
            dst.par_chunks_mut(1 << 16)
                .zip(std::hint::black_box(&src).par_chunks(1 << 16))
                // SAFETY: AVX2 was detected; the chunks have equal lengths.
                .for_each(|(d, s)| unsafe { stream_copy(d, s) });
            std::hint::black_box(&dst);
            Ok(())
        })?;
        return Ok((n * 8) as f64 / s / 1e9);
    }
    copy_bandwidth()
}

/// `d.copy_from_slice(s)` with 32-byte streaming stores.
///
/// # Safety
/// AVX2 available; `d.len() == s.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn stream_copy(d: &mut [f32], s: &[f32]) {
    use std::arch::x86_64::*;
    let head = d.as_ptr().align_offset(32).min(d.len());
    d[..head].copy_from_slice(&s[..head]);
    let mut i = head;
    while i + 8 <= d.len() {
        // SAFETY: i + 8 <= len for both slices; d + i is 32-byte aligned.
        unsafe {
            let v = _mm256_loadu_si256(s.as_ptr().add(i) as *const __m256i);
            _mm256_stream_si256(d.as_mut_ptr().add(i) as *mut __m256i, v);
        }
        i += 8;
    }
    d[i..].copy_from_slice(&s[i..]);
    _mm_sfence();
}

/// Framework overhead: µs per `add` of two 8-element f32 tensors.
fn tiny_add(device: &Device) -> Res<f64> {
    let a = Tensor::randn(&[8], DType::F32, device, 7)?;
    let b = Tensor::randn(&[8], DType::F32, device, 8)?;
    let reps = 20_000;
    let t = Instant::now();
    for _ in 0..reps {
        std::hint::black_box(a.add(&b)?);
    }
    Ok(t.elapsed().as_secs_f64() / reps as f64 * 1e6)
}

/// Seconds for the digits run of the amp-train issue (30 epochs, batch 64).
fn digits(device: &Device, precision: amp_train::Precision) -> Res<f64> {
    let config = amp_train::train::TrainConfig {
        fit: amp_train::train::FitConfig {
            precision,
            ..amp_train::train::FitConfig::default()
        },
        ..Default::default()
    };
    let t = Instant::now();
    amp_train::train::train(&config, device)?;
    Ok(t.elapsed().as_secs_f64())
}

/// One line of the table.
struct Figure {
    name: String,
    unit: &'static str,
    ours: f64,
    /// The key of PyTorch's figure, if there is one.
    torch_key: Option<String>,
    /// True if smaller is better (times).
    lower_is_better: bool,
    /// The target, as text.
    target: &'static str,
    /// The figure (a measured instruction peak) this one is a fraction of.
    peak: Option<String>,
}

impl Figure {
    /// A row that is no fraction of a peak.
    fn new(
        name: String,
        unit: &'static str,
        ours: f64,
        torch_key: Option<String>,
        lower_is_better: bool,
        target: &'static str,
    ) -> Figure {
        Figure {
            name,
            unit,
            ours,
            torch_key,
            lower_is_better,
            target,
            peak: None,
        }
    }
}

/// The measured peaks, the GEMM rows (each against its peak) and the MLP
/// training step (`--only gemm`).
fn gemm_rows(device: &Device, figs: &mut Vec<Figure>) -> Res<()> {
    let fig = Figure::new;
    // The peak of the instruction each GEMM row's kernel is built on.
    let isa = amp_cpu::isa();
    let mut peaks: Vec<Instruction> = Vec::new();
    for dtype in [DType::BF16, DType::F32] {
        let ins = Instruction::of_gemm(isa, dtype);
        if peaks.contains(&ins) {
            continue;
        }
        if let Some(gflops) = amp_cpu::peak::peak_gflops(ins, rayon_threads()) {
            eprintln!("  peak of {}", ins.name());
            figs.push(fig(
                peak_name(ins),
                "GFLOP/s",
                gflops,
                None,
                false,
                "measured",
            ));
            peaks.push(ins);
        }
    }
    for (dtype, tag, target) in [
        (DType::BF16, "bf16", "≥ 1.0× torch"),
        (DType::F32, "f32", "≥ 0.9× torch"),
    ] {
        for shape in GEMM_SHAPES {
            let key = format!("gemm_{tag}_{}x{}x{}", shape.0, shape.1, shape.2);
            eprintln!("  {key}");
            let ins = Instruction::of_gemm(isa, dtype);
            figs.push(Figure {
                peak: peaks.contains(&ins).then(|| peak_name(ins)),
                ..fig(
                    key.clone(),
                    "GFLOP/s",
                    gemm(device, dtype, shape)?,
                    Some(key),
                    false,
                    target,
                )
            });
        }
    }
    eprintln!("  mlp step f32 / bf16");
    let step_f32 = mlp_step(device, None)?;
    let step_bf16 = mlp_step(device, Some(DType::BF16))?;
    figs.push(fig(
        "step_f32_ms".into(),
        "ms",
        step_f32,
        Some("step_f32_ms".into()),
        true,
        "",
    ));
    figs.push(fig(
        "step_bf16_ms".into(),
        "ms",
        step_bf16,
        Some("step_bf16_ms".into()),
        true,
        "≥ 1.25× torch",
    ));
    figs.push(fig(
        "step bf16 speed-up over our f32".into(),
        "×",
        step_f32 / step_bf16,
        None,
        false,
        // The performance issue's targets: AMX's bf16 peak is many times the
        // f32 one; `vdpbf16ps`'s twice (Zen 4); without either, bf16 widens to f32.
        match Instruction::of_gemm(isa, DType::BF16) {
            Instruction::Tdpbf16 => "≥ 3× (AMX)",
            Instruction::Dpbf16 => "≥ 1.8× (vdpbf16ps)",
            _ => "none: no bf16 arithmetic",
        },
    ));
    Ok(())
}

fn measure(device: &Device, only: Option<&str>) -> Res<Vec<Figure>> {
    let mut figs = Vec::new();
    if only == Some("cnn") {
        cnn_rows(device, &mut figs)?;
        return Ok(figs);
    }
    if only == Some("gemm") {
        gemm_rows(device, &mut figs)?;
        return Ok(figs);
    }
    if only == Some("memory") {
        memory_rows(device, &mut figs)?;
        return Ok(figs);
    }
    if only == Some("transformer") {
        transformer_rows(device, &mut figs)?;
        return Ok(figs);
    }
    gemm_rows(device, &mut figs)?;
    let fig = Figure::new;
    memory_rows(device, &mut figs)?;
    figs.push(fig(
        "tiny_add_us".into(),
        "µs/op",
        tiny_add(device)?,
        Some("tiny_add_us".into()),
        true,
        "",
    ));
    eprintln!("  digits f32 / bf16");
    let d32 = digits(device, amp_train::Precision::F32)?;
    let d16 = digits(device, amp_train::Precision::BF16)?;
    figs.push(fig(
        "digits_f32_s".into(),
        "s",
        d32,
        Some("digits_f32_s".into()),
        true,
        "",
    ));
    figs.push(fig(
        "digits_bf16_s".into(),
        "s",
        d16,
        Some("digits_bf16_s".into()),
        true,
        "< f32, < torch bf16",
    ));
    figs.push(fig(
        "digits bf16 speed-up over our f32".into(),
        "×",
        d32 / d16,
        None,
        false,
        "≥ 1×",
    ));
    cnn_rows(device, &mut figs)?;
    // Last: the GPT leaves a heap of freed buffers that the rows above should not see.
    transformer_rows(device, &mut figs)?;
    Ok(figs)
}

/// Convolution forward + backward and the ResNet step, f32 and bf16 autocast.
fn cnn_rows(device: &Device, figs: &mut Vec<Figure>) -> Res<()> {
    let mut add = |name: String, ours, torch: bool, unit, target| {
        figs.push(Figure {
            torch_key: torch.then(|| name.clone()),
            name,
            unit,
            ours,
            lower_is_better: unit == "ms",
            target,
            peak: None,
        })
    };
    eprintln!("  conv2d 3x3 forward + backward, ResNet step");
    for (tag, c, hw) in cnn::CONVS {
        let f32_ms = cnn::conv_ms(device, c, hw, None)?;
        let bf16_ms = cnn::conv_ms(device, c, hw, Some(DType::BF16))?;
        add(
            format!("conv_f32_{tag}_ms"),
            f32_ms,
            true,
            "ms",
            "≥ 0.8× torch",
        );
        add(
            format!("conv_bf16_{tag}_ms"),
            bf16_ms,
            true,
            "ms",
            "≥ 1.0× torch",
        );
    }
    let f32_ms = cnn::resnet_step_ms(device, None)?;
    let bf16_ms = cnn::resnet_step_ms(device, Some(DType::BF16))?;
    add("resnet_step_f32_ms".into(), f32_ms, true, "ms", "");
    add(
        "resnet_step_bf16_ms".into(),
        bf16_ms,
        true,
        "ms",
        "≥ 1.0× torch",
    );
    add(
        "resnet bf16 speed-up over our f32".into(),
        f32_ms / bf16_ms,
        false,
        "×",
        "≥ 2×",
    );
    Ok(())
}

/// Attention forward + backward and the GPT step, with their peak memory.
fn transformer_rows(device: &Device, figs: &mut Vec<Figure>) -> Res<()> {
    let mut add = |name: String, unit, ours, torch: bool, lower, target| {
        figs.push(Figure {
            torch_key: torch.then(|| name.clone()),
            name,
            unit,
            ours,
            lower_is_better: lower,
            target,
            peak: None,
        })
    };
    eprintln!("  attention bf16 forward + backward");
    for t in transformer::LENGTHS {
        let ms = transformer::attention_ms(device, t)?;
        add(
            format!("attn_bf16_T{t}_ms"),
            "ms",
            ms,
            true,
            true,
            "≥ 1.0× torch",
        );
    }
    let mut above = Vec::new();
    for t in transformer::LENGTHS {
        let (peak, base) = transformer::rss_in_child(&format!("attn-{t}"))?;
        above.push(peak - base);
        add(
            format!("attn_bf16_T{t}_rss_mib"),
            "MiB",
            peak - base,
            true,
            true,
            "",
        );
    }
    add(
        "attn memory T2048 / T1024 (linear: 2)".into(),
        "×",
        above[2] / above[1],
        false,
        true,
        "≈ 2× (not 4×)",
    );
    eprintln!("  GPT step f32 / bf16");
    let f32_tok = transformer::gpt_tokens_per_s(device, None)?;
    let bf16_tok = transformer::gpt_tokens_per_s(device, Some(DType::BF16))?;
    add(
        "gpt_step_f32_tok_s".into(),
        "tok/s",
        f32_tok,
        true,
        false,
        "",
    );
    add(
        "gpt_step_bf16_tok_s".into(),
        "tok/s",
        bf16_tok,
        true,
        false,
        "≥ 1.25× torch",
    );
    add(
        "gpt bf16 speed-up over our f32".into(),
        "×",
        bf16_tok / f32_tok,
        false,
        false,
        "≥ 2×",
    );
    for (workload, key) in [("gpt-f32", "gpt_f32"), ("gpt-bf16", "gpt_bf16")] {
        let (peak, base) = transformer::rss_in_child(workload)?;
        add(
            format!("{key}_peak_rss_mib"),
            "MiB",
            peak,
            true,
            true,
            "report",
        );
        add(
            format!("{key}_step_rss_mib"),
            "MiB",
            peak - base,
            true,
            true,
            "report",
        );
    }
    Ok(())
}

/// `cargo xtask bench-rss WORKLOAD`: see [`transformer::rss`].
pub fn run_rss(args: &[String]) -> ExitCode {
    let Some(workload) = args.first() else {
        eprintln!("error: bench-rss needs a workload (gpt-f32, gpt-bf16, attn-T)");
        return ExitCode::from(2);
    };
    if std::env::var("AMP_CPU_KEEP_FREED_BUFFERS").map_or(true, |v| v != "0") {
        amp_cpu::keep_freed_buffers();
    }
    match transformer::rss(workload, &amp_cpu::device()) {
        Ok((peak, base)) => {
            println!("{peak} {base}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_torch(python: &str, only: Option<&str>) -> Result<BTreeMap<String, f64>, String> {
    let dir = std::env::temp_dir().join(format!("amp-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let script = dir.join("torch_bench.py");
    std::fs::write(&script, TORCH_SCRIPT).map_err(|e| e.to_string())?;
    let vocab = transformer::vocab().map_err(|e| e.to_string())?;
    let out = Command::new(python)
        .arg(&script)
        .args(["--vocab", &vocab.to_string()])
        .args(only.map(|o| ["--only", o]).into_iter().flatten())
        .output()
        .map_err(|e| format!("cannot run {python}: {e}"))?;
    let _ = std::fs::remove_dir_all(&dir);
    if !out.status.success() {
        return Err(format!(
            "{python} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or("");
    serde_json::from_str(last).map_err(|e| format!("cannot parse PyTorch's output {last:?}: {e}"))
}

/// Runs the benchmarks and prints the table.
pub fn run(args: &[String]) -> ExitCode {
    let mut python = std::env::var("AMP_BENCH_TORCH").ok();
    let mut rounds = None;
    let mut only = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--rounds" => match it.next().and_then(|r| r.parse::<usize>().ok()) {
                Some(r) if r > 0 => rounds = Some(r),
                _ => {
                    eprintln!("error: --rounds needs a positive number");
                    return ExitCode::from(2);
                }
            },
            "--only" => match it.next().map(String::as_str) {
                Some("cnn") => only = Some("cnn"),
                Some("gemm") => only = Some("gemm"),
                Some("memory") => only = Some("memory"),
                Some("transformer") => only = Some("transformer"),
                _ => {
                    eprintln!(
                        "error: --only takes a group of rows: cnn, gemm, memory or transformer"
                    );
                    return ExitCode::from(2);
                }
            },
            "--torch" => match it.next() {
                Some(p) => python = Some(p.clone()),
                None => {
                    eprintln!("error: --torch needs a PYTHON path");
                    return ExitCode::from(2);
                }
            },
            other => {
                eprintln!("error: unknown argument to bench: {other:?}\nusage: cargo xtask bench [--torch PYTHON] [--rounds N] [--only cnn|gemm|memory|transformer]");
                return ExitCode::from(2);
            }
        }
    }
    // As amp-train's binary does (AMP_CPU_KEEP_FREED_BUFFERS=0 measures without).
    if std::env::var("AMP_CPU_KEEP_FREED_BUFFERS").map_or(true, |v| v != "0") {
        amp_cpu::keep_freed_buffers();
    }
    let device = amp_cpu::device();
    eprintln!(
        "bench on {} (isa {}, {} threads):",
        device,
        amp_cpu::isa().name(),
        rayon_threads()
    );
    let rounds = rounds.unwrap_or(if python.is_some() { 3 } else { 1 });
    // Per figure (and per PyTorch key), the values of every round.
    let mut ours: Vec<Vec<f64>> = Vec::new();
    let mut theirs: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut figs = Vec::new();
    for round in 0..rounds {
        if rounds > 1 {
            eprintln!("round {} of {rounds}", round + 1);
        }
        figs = match measure(&device, only) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        ours.resize(figs.len(), Vec::new());
        for (v, f) in ours.iter_mut().zip(&figs) {
            v.push(f.ours);
        }
        if let Some(p) = &python {
            eprintln!("  PyTorch workloads with {p}");
            match run_torch(p, only) {
                Ok(t) => {
                    for (k, v) in t {
                        theirs.entry(k).or_default().push(v);
                    }
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    for (f, v) in figs.iter_mut().zip(&mut ours) {
        f.ours = median(v);
    }
    let torch: Option<BTreeMap<String, f64>> = python.is_some().then(|| {
        theirs
            .iter_mut()
            .map(|(k, v)| (k.clone(), median(v)))
            .collect()
    });
    println!(
        "cpu: {} ({} threads; GEMM kernels: bf16 {}, f32 {}, at isa {})",
        cpu_model(),
        rayon_threads(),
        Instruction::of_gemm(amp_cpu::isa(), DType::BF16).name(),
        Instruction::of_gemm(amp_cpu::isa(), DType::F32).name(),
        amp_cpu::isa().name()
    );
    let c = amp_cpu::caches();
    println!(
        "caches (CPUID, or AMP_CPU_CACHES; the GEMM's blocks follow them): L1d {} KiB and L2 {} KiB per core, L3 {} MiB",
        c.l1d >> 10,
        c.l2 >> 10,
        c.l3 >> 20
    );
    println!(
        "{:<40} {:>12} {:>12} {:>8}  {:<8} {:<16} target",
        "figure", "amp", "pytorch", "ratio", "unit", "of peak"
    );
    let value_of = |name: &str| figs.iter().find(|f| f.name == name).map(|f| f.ours);
    for f in &figs {
        let t = f
            .torch_key
            .as_ref()
            .and_then(|k| torch.as_ref()?.get(k).copied());
        let ratio = t.map(|t| {
            if f.lower_is_better {
                t / f.ours
            } else {
                f.ours / t
            }
        });
        let of_peak = f.peak.as_deref().and_then(|p| {
            let peak = value_of(p)?;
            let ins = p.trim_start_matches("peak_").trim_end_matches("_gflops");
            Some(format!("{:.0}% {ins}", 100.0 * f.ours / peak))
        });
        println!(
            "{:<40} {:>12.3} {:>12} {:>8}  {:<8} {:<16} {}",
            f.name,
            f.ours,
            t.map_or("-".into(), |t| format!("{t:.3}")),
            ratio.map_or("-".into(), |r| format!("{r:.2}×")),
            f.unit,
            of_peak.as_deref().unwrap_or("-"),
            f.target
        );
    }
    if rounds > 1 {
        println!("each figure: the median of {rounds} rounds (ours and PyTorch's alternating)");
    }
    if torch.is_none() {
        println!("PyTorch comparison skipped: pass --torch PYTHON (or set AMP_BENCH_TORCH) to run the same workloads in PyTorch.");
    } else {
        println!("ratio = how many times better amp is (time: torch/amp; throughput: amp/torch). Digits: ours trains on the real data, PyTorch's script on random data of the same shape.");
    }
    ExitCode::SUCCESS
}

/// The median of `v` (the upper middle of an even count).
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
