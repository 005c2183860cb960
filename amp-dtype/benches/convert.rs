//! Throughput of the scalar slice conversions (1 Mi elements), as bytes/s.

use amp_dtype::{bf16, convert_slice, f16, Element, F8E4M3, F8E5M2};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;

const N: usize = 1 << 20;

fn pair<D: Element>(c: &mut Criterion, name: &str) {
    let src: Vec<f32> = (0..N).map(|i| ((i as f32) * 0.37).sin() * 100.0).collect();
    let mut dst = vec![D::default(); N];
    let mut group = c.benchmark_group("convert");
    group.throughput(Throughput::Bytes(
        (N * (4 + std::mem::size_of::<D>())) as u64,
    ));
    group.bench_function(format!("f32->{name}"), |b| {
        b.iter(|| convert_slice(black_box(&src), black_box(&mut dst)).unwrap())
    });
    let mut back = vec![0f32; N];
    group.bench_function(format!("{name}->f32"), |b| {
        b.iter(|| convert_slice(black_box(&dst), black_box(&mut back)).unwrap())
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    pair::<bf16>(c, "bf16");
    pair::<f16>(c, "f16");
    pair::<F8E4M3>(c, "f8e4m3");
    pair::<F8E5M2>(c, "f8e5m2");
}

criterion_group!(convert, benches);
criterion_main!(convert);
