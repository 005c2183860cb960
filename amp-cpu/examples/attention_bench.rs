//! `scaled_dot_product_attention` on the CPU: the fused kernel against the
//! composed path (scores, softmax, product), alternated in one process.
//!
//! `cargo run --release -p amp-cpu --example attention_bench` times forward
//! and forward + backward for batch 1, 8 heads, head dimension 64, T = 512,
//! 1024, 2048, bf16 and f32 (median of a few runs each; optional arguments:
//! `[causal] [T...]`).
//!
//! `attention_bench mem fused|composed bf16|f32 T [causal]` runs one forward
//! and backward pass in this process and prints its peak resident memory
//! (`VmHWM` of `/proc/self/status`, Linux): run each in its own process.
//! `attention_bench loop fused|composed bf16|f32 T fwd|bwd COUNT [causal]`
//! repeats one case (for a profiler).

use amp_tensor::{ops, DType, Result, Tensor};
use std::time::Instant;

const HEADS: usize = 8;
const HEAD_DIM: usize = 64;

/// q, k, v `[1, 8, T, 64]` and a read-out `w` of the output's shape.
fn inputs(t: usize, dtype: DType) -> Result<[Tensor; 4]> {
    let cpu = amp_cpu::device();
    let shape = [1, HEADS, t, HEAD_DIM];
    let make = |seed| Tensor::randn(&shape, DType::F32, &cpu, seed)?.to_dtype(dtype);
    Ok([make(1)?, make(2)?, make(3)?, make(4)?])
}

/// One pass on the fused (or composed) path; with `backward`, the gradients too.
fn pass(x: &[Tensor; 4], fused: bool, causal: bool, backward: bool) -> Result<()> {
    let [q, k, v, w] = x;
    for t in [q, k, v] {
        t.zero_grad();
        t.set_requires_grad(backward)?;
    }
    ops::set_fused_attention(fused);
    let y = ops::scaled_dot_product_attention(q, k, v, None, 0.0, causal, None)?;
    if backward {
        y.mul(w)?.sum_all()?.backward()?;
    } else {
        std::hint::black_box(y.to_f64_vec()?.len());
    }
    Ok(())
}

/// Median seconds of `reps` runs of `f` after one warm-up.
fn median(reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let start = Instant::now();
        f()?;
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[reps / 2])
}

/// Peak resident memory of this process in MiB (`VmHWM`).
fn peak_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn dtype_named(name: &str) -> DType {
    if name == "f32" {
        DType::F32
    } else {
        DType::BF16
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("mem") {
        let fused = args.get(1).map(String::as_str) != Some("composed");
        let dtype = dtype_named(args.get(2).map_or("bf16", String::as_str));
        let t: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(2048);
        let causal = args.iter().any(|a| a == "causal");
        let x = inputs(t, dtype)?;
        let before = peak_mib();
        pass(&x, fused, causal, true)?;
        println!(
            "{} {dtype} T={t}{}: peak RSS {:.0} MiB (inputs ready: {:.0} MiB)",
            if fused { "fused" } else { "composed" },
            if causal { " causal" } else { "" },
            peak_mib(),
            before
        );
        return Ok(());
    }
    amp_cpu::keep_freed_buffers();
    if args.first().map(String::as_str) == Some("loop") {
        // `loop fused|composed bf16|f32 T fwd|bwd COUNT [causal]`: one case
        // repeated, for a profiler.
        let fused = args.get(1).map(String::as_str) != Some("composed");
        let dtype = dtype_named(args.get(2).map_or("bf16", String::as_str));
        let t: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(1024);
        let backward = args.get(4).map(String::as_str) == Some("bwd");
        let count: usize = args.get(5).and_then(|a| a.parse().ok()).unwrap_or(20);
        let causal = args.iter().any(|a| a == "causal");
        let x = inputs(t, dtype)?;
        let start = Instant::now();
        for _ in 0..count {
            pass(&x, fused, causal, backward)?;
        }
        println!(
            "{:.2} ms a pass",
            start.elapsed().as_secs_f64() * 1e3 / count as f64
        );
        return Ok(());
    }
    let causal = args.iter().any(|a| a == "causal");
    let mut lengths: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    if lengths.is_empty() {
        lengths = vec![512, 1024, 2048];
    }
    println!(
        "batch 1, {HEADS} heads, d {HEAD_DIM}{}, isa {}, {} threads; median ms (composed / fused)",
        if causal { ", causal" } else { "" },
        amp_cpu::isa(),
        rayon::current_num_threads()
    );
    for dtype in [DType::BF16, DType::F32] {
        for &t in &lengths {
            let x = inputs(t, dtype)?;
            let reps = if t >= 2048 { 5 } else { 9 };
            let mut row = format!("{dtype:>4} T={t:<5}");
            for backward in [false, true] {
                // Alternate the two paths, so that both see the same machine state.
                let (mut composed, mut fused) = (Vec::new(), Vec::new());
                for _ in 0..3 {
                    composed.push(median(reps / 3 + 1, || pass(&x, false, causal, backward))?);
                    fused.push(median(reps / 3 + 1, || pass(&x, true, causal, backward))?);
                }
                composed.sort_by(f64::total_cmp);
                fused.sort_by(f64::total_cmp);
                let (c, f) = (composed[1] * 1e3, fused[1] * 1e3);
                let flops = 4.0
                    * (HEADS * t * t * HEAD_DIM) as f64
                    * if backward { 3.5 } else { 1.0 }
                    * if causal { 0.5 } else { 1.0 };
                row += &format!(
                    " | {}: {c:8.1} / {f:8.1} ({:.2}x, fused {:.0} GFLOP/s)",
                    if backward { "fwd+bwd" } else { "fwd" },
                    c / f,
                    flops / (f * 1e-3) / 1e9
                );
            }
            println!("{row}");
        }
    }
    Ok(())
}
