//! CUDA benchmark for the GPU bundle (`cargo xtask gpu`): bf16 GEMM 8192³,
//! f32→bf16 cast and fused unscale bandwidth against a device-to-device copy,
//! and one training step of a 1024-4096-4096-10 MLP (batch 256) in f32, bf16
//! and f16. Prints a table and one `BENCH <name> <value> <unit>` line per figure.
//!
//! `cargo run --release -p amp-cuda --example cuda_bench [-- --quick]`

use amp_tensor::backend::View;
use amp_tensor::ops::{self, GeluApprox};
use amp_tensor::{DType, Device, Result, Tensor};
use std::time::Instant;

fn sync(d: &Device) -> Result<()> {
    // A one-element read waits for all queued work of the device's single stream.
    Tensor::zeros(&[1], DType::F32, d)?
        .to_vec::<f32>()
        .map(|_| ())
}

/// Seconds per call of `f`, after `warmup` calls, averaged over `iters`.
fn time(d: &Device, warmup: usize, iters: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..warmup {
        f()?;
    }
    sync(d)?;
    let t = Instant::now();
    for _ in 0..iters {
        f()?;
    }
    sync(d)?;
    Ok(t.elapsed().as_secs_f64() / iters as f64)
}

fn report(name: &str, value: f64, unit: &str) {
    println!("{name:<44} {value:>12.1} {unit}");
    println!("BENCH {} {value:.3} {unit}", name.replace(' ', "_"));
}

fn mlp_step(d: &Device, dtype: DType, params: &[Tensor], x: &Tensor, y: &Tensor) -> Result<()> {
    for p in params {
        p.zero_grad();
    }
    let mut h = x.to_dtype(dtype)?;
    for (i, w) in params.iter().enumerate() {
        h = ops::linear(&h, &w.to_dtype(dtype)?, None)?;
        if i + 1 < params.len() {
            h = h.gelu(GeluApprox::None)?;
        }
    }
    let loss = ops::cross_entropy(&h.to_dtype(DType::F32)?, y)?;
    loss.backward()?;
    let _ = d;
    Ok(())
}

fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let quick = std::env::args().any(|a| a == "--quick");
    let d = match amp_cuda::device(0) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    let b = amp_cuda::backend(0)?;
    println!(
        "device: {} (sm_{}{})",
        b.device_name(),
        b.compute_capability().0,
        b.compute_capability().1
    );
    // Compile every kernel module before timing anything.
    let t = Instant::now();
    let warm = Tensor::randn(&[64, 64], DType::F32, &d, 0)?;
    let _ = ops::softmax(&warm, -1)?
        .sum_all()?
        .to_dtype(DType::BF16)?
        .to_vec::<amp_tensor::bf16>()?;
    let _ = warm.index_select(0, &Tensor::from_vec(vec![0i64], &[1], &d)?)?;
    println!(
        "first use (NVRTC compiles + context): {:.2}s",
        t.elapsed().as_secs_f64()
    );

    // bf16 GEMM 8192³ (f32 accumulation in cuBLAS).
    let n = if quick { 4096 } else { 8192 };
    let a = Tensor::full(&[n, n], 0.01, DType::BF16, &d)?;
    let bm = Tensor::full(&[n, n], 0.02, DType::BF16, &d)?;
    let secs = time(&d, 2, if quick { 3 } else { 10 }, || {
        ops::matmul(&a, &bm).map(|_| ())
    })?;
    report(
        &format!("bf16 GEMM {n}^3"),
        2.0 * (n as f64).powi(3) / secs / 1e12,
        "TFLOP/s",
    );
    let secs = time(&d, 1, 3, || {
        ops::matmul(&a.to_dtype(DType::F32)?, &bm.to_dtype(DType::F32)?).map(|_| ())
    })?;
    report(
        &format!("f32 GEMM {n}^3 (incl. 2 casts, no TF32)"),
        2.0 * (n as f64).powi(3) / secs / 1e12,
        "TFLOP/s",
    );
    drop((a, bm));

    // Bandwidth: bytes read + written per second.
    let elems: usize = if quick { 16 << 20 } else { 128 << 20 };
    let x = Tensor::full(&[elems], 1.5, DType::F32, &d)?;
    let copy = time(&d, 2, 20, || {
        x.with_view(|v: View<'_>| d.backend().cast(v, DType::F32))?
            .map(|_| ())
    })?;
    report(
        "device copy f32 (read+write)",
        8.0 * elems as f64 / copy / 1e9,
        "GB/s",
    );
    let cast = time(&d, 2, 20, || x.to_dtype(DType::BF16).map(|_| ()))?;
    report(
        "cast f32->bf16 (read+write)",
        6.0 * elems as f64 / cast / 1e9,
        "GB/s",
    );
    let grads: Vec<Tensor> = (0..4)
        .map(|i| Tensor::full(&[elems / 4], 1.0 + i as f64, DType::F32, &d))
        .collect::<Result<_>>()?;
    let refs: Vec<&Tensor> = grads.iter().collect();
    let unscale = time(&d, 2, 20, || {
        ops::non_finite_check_and_unscale_(&refs, 1.0).map(|_| ())
    })?;
    report(
        "fused unscale f32, 4 buffers (read+write)",
        8.0 * elems as f64 / unscale / 1e9,
        "GB/s",
    );
    // The fused AdamW update over the same elements (param, grad, 2 moments: 4 reads, 3 writes).
    let (p, g, m, v) = (
        Tensor::randn(&[elems], DType::F32, &d, 5)?,
        Tensor::randn(&[elems], DType::F32, &d, 6)?,
        Tensor::zeros(&[elems], DType::F32, &d)?,
        Tensor::zeros(&[elems], DType::F32, &d)?,
    );
    let hyper = amp_tensor::backend::AdamWStep {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.01,
        step: 1,
    };
    let adamw = time(&d, 2, 20, || ops::adamw_step(&p, &g, &m, &v, &hyper))?;
    report(
        "fused AdamW f32 (read+write)",
        28.0 * elems as f64 / adamw / 1e9,
        "GB/s",
    );
    drop((p, g, m, v));
    drop((x, grads));

    // One training step of the MLP.
    let sizes = [1024usize, 4096, 4096, 10];
    let batch = 256;
    let params: Vec<Tensor> = sizes
        .windows(2)
        .enumerate()
        .map(|(i, w)| {
            let t = Tensor::randn(&[w[1], w[0]], DType::F32, &d, 10 + i as u64)?
                .mul_scalar(1.0 / (w[0] as f64).sqrt())?;
            t.set_requires_grad(true)?;
            Ok(t)
        })
        .collect::<Result<_>>()?;
    let xb = Tensor::randn(&[batch, sizes[0]], DType::F32, &d, 1)?;
    let yb = Tensor::randint(0, 10, &[batch], &d, 2)?;
    for dtype in [DType::F32, DType::BF16, DType::F16] {
        let secs = time(&d, 2, if quick { 3 } else { 10 }, || {
            mlp_step(&d, dtype, &params, &xb, &yb)
        })?;
        report(
            &format!("MLP 1024-4096-4096-10 b256 step {dtype}"),
            secs * 1e3,
            "ms",
        );
    }
    Ok(())
}
