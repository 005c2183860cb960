//! CPU backend benchmarks: casts, elementwise add/GELU, softmax, the fused
//! unscale (bytes moved per second), and square GEMM (flops per second: the
//! "elem/s" criterion reports for the `gemm` group are flop/s).
//!
//! Run one group at a time, briefly, e.g.
//! `cargo bench -p amp-cpu --bench kernels -- gemm/f32/1024 --warm-up-time 1 --measurement-time 2`.

use amp_tensor::backend::Backend;
use amp_tensor::ops::{self, GeluApprox};
use amp_tensor::{DType, Layout, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;

const N: usize = 1 << 22; // 4 Mi elements: 16 MiB of f32, past the L2

fn casts(c: &mut Criterion) {
    let device = amp_cpu::device();
    let mut g = c.benchmark_group("cast");
    for (from, to) in [
        (DType::F32, DType::BF16),
        (DType::BF16, DType::F32),
        (DType::F32, DType::F16),
        (DType::F16, DType::F32),
    ] {
        let x = Tensor::randn(&[N], from, &device, 0).unwrap();
        g.throughput(Throughput::Bytes(
            (N * (from.size_in_bytes() + to.size_in_bytes())) as u64,
        ));
        g.bench_function(format!("{from}->{to}"), |b| {
            b.iter(|| black_box(x.to_dtype(to).unwrap()))
        });
    }
    g.finish();
}

fn elementwise(c: &mut Criterion) {
    let device = amp_cpu::device();
    let mut g = c.benchmark_group("elementwise");
    for dtype in [DType::F32, DType::BF16] {
        let x = Tensor::randn(&[N], dtype, &device, 0).unwrap();
        let y = Tensor::randn(&[N], dtype, &device, 1).unwrap();
        let s = dtype.size_in_bytes();
        g.throughput(Throughput::Bytes((3 * N * s) as u64));
        g.bench_function(format!("add/{dtype}"), |b| {
            b.iter(|| black_box(x.add(&y).unwrap()))
        });
        g.throughput(Throughput::Bytes((2 * N * s) as u64));
        g.bench_function(format!("gelu/{dtype}"), |b| {
            b.iter(|| black_box(x.gelu(GeluApprox::None).unwrap()))
        });
    }
    g.finish();
}

fn softmax(c: &mut Criterion) {
    let device = amp_cpu::device();
    let mut g = c.benchmark_group("softmax");
    for dtype in [DType::F32, DType::BF16] {
        let x = Tensor::randn(&[4096, 1024], dtype, &device, 0).unwrap();
        g.throughput(Throughput::Bytes(
            (2 * x.numel() * dtype.size_in_bytes()) as u64,
        ));
        g.bench_function(format!("4096x1024/{dtype}"), |b| {
            b.iter(|| black_box(ops::softmax(&x, -1).unwrap()))
        });
    }
    g.finish();
}

fn unscale(c: &mut Criterion) {
    let backend = amp_cpu::CpuBackend::new();
    let mut g = c.benchmark_group("unscale");
    for dtype in [DType::F32, DType::BF16, DType::F16] {
        let x = Tensor::randn(&[N], dtype, &amp_cpu::device(), 0).unwrap();
        let mut storage = amp_tensor::backend::Storage::Host(
            x.with_view(|v| backend.to_host(v)).unwrap().unwrap(),
        );
        let layout = Layout::contiguous(&[N]);
        // Read and write every element once.
        g.throughput(Throughput::Bytes((2 * N * dtype.size_in_bytes()) as u64));
        g.bench_function(format!("{dtype}"), |b| {
            b.iter(|| {
                black_box(
                    backend
                        .non_finite_check_and_unscale(&mut [(&mut storage, &layout)], 1.0)
                        .unwrap(),
                )
            })
        });
    }
    g.finish();
}

fn gemm(c: &mut Criterion) {
    let device = amp_cpu::device();
    let mut g = c.benchmark_group("gemm");
    g.sample_size(10);
    for dtype in [DType::F32, DType::BF16, DType::F16] {
        for n in [256usize, 1024, 2048] {
            let a = Tensor::randn(&[n, n], dtype, &device, 0).unwrap();
            let b = Tensor::randn(&[n, n], dtype, &device, 1).unwrap();
            g.throughput(Throughput::Elements((2 * n * n * n) as u64));
            g.bench_with_input(BenchmarkId::new(format!("{dtype}"), n), &n, |bench, _| {
                bench.iter(|| black_box(a.matmul(&b).unwrap()))
            });
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = casts, elementwise, softmax, unscale, gemm
}
criterion_main!(benches);
