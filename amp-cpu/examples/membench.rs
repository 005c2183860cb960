//! Copy bandwidth into reused, fresh and huge-page-advised buffers, against
//! elementwise tensor ops over the same bytes (16 Mi f32).
//!
//! `cargo run --release -p amp-cpu --example membench`; one product:
//! `membench gemm-bf16[-at][-bt][-rb][-f32out] M K N` (A or B transposed, B f32 rounded
//! while packing, an f32 output); one 3×3 convolution (padding 1, batch 32):
//! `membench conv-f32 C HW` (or `conv-bf16`), its forward product and its
//! weight's gradient timed apart.

use amp_tensor::{DType, Layout, Tensor};
use std::time::Instant;

fn best(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut v: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `membench conv-f32 C HW`: the best of 20 forward products and weight
/// gradients of a `C → C` 3×3 convolution over `[32, C, HW, HW]`.
fn conv(dtype: DType, c: usize, hw: usize) -> amp_tensor::Result<()> {
    use amp_tensor::backend::Im2col;
    let dev = amp_cpu::device();
    let x = Tensor::randn(&[32, c, hw, hw], dtype, &dev, 1)?;
    let w = Tensor::randn(&[c, c, 3, 3], dtype, &dev, 2)?;
    let g = Tensor::randn(&[32, c, hw, hw], dtype, &dev, 3)?;
    let geometry = Im2col {
        batch: 32,
        channels: c,
        plane: [hw, hw],
        kernel: [3, 3],
        stride: [1, 1],
        padding: [1, 1],
        dilation: [1, 1],
        out: [hw, hw],
    };
    let (ix, iw, ig) = (
        x.materialised_input()?,
        w.materialised_input()?,
        g.materialised_input()?,
    );
    let backend = dev.backend();
    let flops = 2.0 * (32 * c * c * 9 * hw * hw) as f64;
    let fwd = best(20, || {
        drop(
            backend
                .conv2d(ix.view(), iw.view(), None, &geometry, 1, dtype)
                .unwrap(),
        );
    });
    let wgrad = best(20, || {
        drop(
            backend
                .conv2d_weight_grad(ix.view(), ig.view(), &geometry, 1, DType::F32)
                .unwrap(),
        );
    });
    println!(
        "conv {dtype} {c}c{hw}: forward {:.2} ms {:6.1} GFLOP/s, weight grad {:.2} ms {:6.1} GFLOP/s",
        fwd * 1e3,
        flops / fwd / 1e9,
        wgrad * 1e3,
        flops / wgrad / 1e9
    );
    Ok(())
}

fn main() -> amp_tensor::Result<()> {
    if let Some(arg) = std::env::args().nth(1).filter(|a| a.starts_with("conv")) {
        let dtype = if arg == "conv-bf16" {
            DType::BF16
        } else {
            DType::F32
        };
        let dims: Vec<usize> = std::env::args()
            .skip(2)
            .filter_map(|a| a.parse().ok())
            .collect();
        let (c, hw) = match dims[..] {
            [c, hw] => (c, hw),
            _ => (64, 56),
        };
        return conv(dtype, c, hw);
    }
    if let Some(arg) = std::env::args().nth(1).filter(|a| a.starts_with("gemm")) {
        // Only one product, repeated (for a profiler): `gemm-bf16` or `gemm-f32`.
        let dtype = if arg.starts_with("gemm-f32") {
            DType::F32
        } else {
            DType::BF16
        };
        // Optional shape: `gemm-bf16 M K N` (default the MLP's 256 4096 4096).
        let dims: Vec<usize> = std::env::args()
            .skip(2)
            .filter_map(|a| a.parse().ok())
            .collect();
        let (m, k, n) = match dims[..] {
            [m, k, n] => (m, k, n),
            _ => (256, 4096, 4096),
        };
        let dev = amp_cpu::device();
        // `gemm-bf16-at`: A stored transposed (a weight gradient's `gᵀ`).
        let a = if arg.contains("-at") {
            Tensor::randn(&[k, m], dtype, &dev, 3)?.t()?
        } else {
            Tensor::randn(&[m, k], dtype, &dev, 3)?
        };
        // `-rb`: B stored f32 and rounded to A's dtype while packing; `-f32out`: an f32 product.
        let b_dtype = if arg.contains("-rb") {
            DType::F32
        } else {
            dtype
        };
        let out = if arg.contains("-f32out") {
            DType::F32
        } else {
            dtype
        };
        // `-bt`: B stored transposed (a linear layer's weight `[n, k]` read as `weightᵀ`).
        let b = if arg.contains("-bt") {
            Tensor::randn(&[n, k], b_dtype, &dev, 4)?.t()?
        } else {
            Tensor::randn(&[k, n], b_dtype, &dev, 4)?
        };
        let as3 = |t: &Tensor| {
            let (l, d) = (t.layout(), t.dims());
            Layout::new(
                vec![1, d[0], d[1]],
                vec![0, l.strides()[0], l.strides()[1]],
                l.offset(),
            )
        };
        let (la, lb) = (as3(&a), as3(&b));
        let backend = dev.backend();
        // About 100 Gflop of repetitions (at least 20), so a profile sees the product.
        let reps = (1e11 / (2 * m * k * n).max(1) as f64).clamp(20.0, 5000.0) as usize;
        let (ia, ib) = (a.materialised_input()?, b.materialised_input()?);
        let s = best(reps, || {
            // A bf16/f16 A with an f32 B: B is read as A's dtype while packing.
            drop(
                backend
                    .matmul((ia.storage(), &la), (ib.storage(), &lb), out)
                    .unwrap(),
            )
        });
        println!(
            "matmul {dtype} x {b_dtype} -> {out} {m}x{k}x{n} {:7.1} GFLOP/s",
            2.0 * (m * k * n) as f64 / s / 1e9
        );
        return Ok(());
    }
    let n = 1usize << 24;
    let src: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let gb = |s: f64, bytes: usize| bytes as f64 / s / 1e9;
    let mut dst = vec![0f32; n];
    let s = best(7, || {
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&dst);
    });
    println!("memcpy reused       {:6.2} GB/s", gb(s, n * 8));
    let s = best(7, || {
        let d = std::hint::black_box(src.clone());
        drop(d);
    });
    println!("clone (fresh)       {:6.2} GB/s", gb(s, n * 8));
    let s = best(7, || {
        let d = std::hint::black_box(vec![0f32; n]);
        drop(d);
    });
    println!(
        "vec![0; n] (calloc) {:6.2} GB/s (write bytes)",
        gb(s, n * 4)
    );
    let s = best(7, || {
        let mut d: Vec<f32> = Vec::with_capacity(n);
        // SAFETY: advice on memory this vector owns.
        unsafe {
            let p = d.as_mut_ptr() as usize;
            let a = (p + (1 << 21) - 1) & !((1 << 21) - 1);
            let end = (p + n * 4) & !((1 << 21) - 1);
            if end > a {
                libc::madvise(a as *mut libc::c_void, end - a, libc::MADV_HUGEPAGE);
            }
        }
        d.extend_from_slice(&src);
        drop(std::hint::black_box(d));
    });
    println!("fresh + hugepage    {:6.2} GB/s", gb(s, n * 8));
    if std::env::args().any(|a| a == "mallopt") {
        // SAFETY: glibc tunables, set before the tensors below allocate.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        }
        let s = best(7, || {
            let d = std::hint::black_box(src.clone());
            drop(d);
        });
        println!("clone after mallopt {:6.2} GB/s", gb(s, n * 8));
    }
    let dev = amp_cpu::device();
    let x = Tensor::randn(&[4096, 4096], DType::F32, &dev, 1)?;
    let y = Tensor::randn(&[4096, 4096], DType::F32, &dev, 2)?;
    let xb = x.to_dtype(DType::BF16)?;
    let s = best(7, || drop(x.mul_scalar(0.5).unwrap()));
    println!("mul_scalar f32      {:6.2} GB/s", gb(s, n * 8));
    let s = best(7, || drop(x.add(&y).unwrap()));
    println!("add f32             {:6.2} GB/s", gb(s, n * 12));
    let s = best(7, || drop(x.to_dtype(DType::BF16).unwrap()));
    println!("cast f32->bf16      {:6.2} GB/s", gb(s, n * 6));
    let s = best(7, || drop(xb.to_dtype(DType::F32).unwrap()));
    println!("cast bf16->f32      {:6.2} GB/s", gb(s, n * 6));
    let s = best(7, || {
        drop(x.gelu(amp_tensor::ops::GeluApprox::None).unwrap())
    });
    println!("gelu f32            {:6.2} ns/elem", s / n as f64 * 1e9);
    for (m, k, n) in [(256, 4096, 4096), (1024, 1024, 1024), (2048, 2048, 2048)] {
        for dtype in [DType::F32, DType::BF16] {
            let a = Tensor::randn(&[m, k], dtype, &dev, 3)?;
            let b = Tensor::randn(&[k, n], dtype, &dev, 4)?;
            let s = best(3, || drop(amp_tensor::ops::matmul(&a, &b).unwrap()));
            println!(
                "matmul {dtype} {m}x{k}x{n}  {:7.1} GFLOP/s",
                2.0 * (m * k * n) as f64 / s / 1e9
            );
        }
    }
    let xt = x.t()?;
    let s = best(3, || drop(xt.contiguous().unwrap()));
    println!("transpose f32       {:6.2} GB/s", gb(s, n * 8));
    let xbt = xb.t()?;
    let s = best(3, || drop(xbt.to_dtype(DType::F32).unwrap()));
    println!("transposed bf16->f32 {:5.2} GB/s", gb(s, n * 6));
    Ok(())
}
