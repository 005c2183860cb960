//! Times the MPI group's all-reduce of f32 buffers from 4 KiB to 64 MiB and
//! checks the ring model of [`amp_dist::cost`] against it:
//!
//! ```text
//! cargo build --release -p amp-dist --features mpi --example allreduce
//! mpirun -np 2 target/release/examples/allreduce
//! ```
//!
//! Rank 0 prints, per size, the median time of 20 all-reduces (after 3
//! warm-up ones), the algorithmic bandwidth, and the time the model predicts
//! with the latency and bandwidth fitted (least squares) to all sizes.

use amp_dist::cost::{ring_all_reduce_seconds, Link};
use amp_dist::{MpiGroup, ProcessGroup, ReduceOp};
use amp_tensor::{DType, Tensor};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let group = MpiGroup::init("allreduce")?;
    let device = amp_cpu::device();
    let n = group.world_size();
    let mut rows = Vec::new();
    for kib in [4usize, 16, 64, 256, 1024, 4096, 16384, 65536] {
        let elems = kib * 1024 / 4;
        let t = Tensor::ones(&[elems], DType::F32, &device)?;
        let mut times = Vec::new();
        for rep in 0..23 {
            group.barrier()?;
            let start = Instant::now();
            let out = group.all_reduce(&t, ReduceOp::Sum)?;
            let s = start.elapsed().as_secs_f64();
            if rep >= 3 {
                times.push(s);
            }
            drop(out);
        }
        times.sort_by(f64::total_cmp);
        rows.push(((kib * 1024) as f64, times[times.len() / 2]));
    }
    // Fit t = a + b·x with x = 2(n−1)/n · bytes (a = 2(n−1)·latency,
    // b = 1/bandwidth), least squares on the relative error (weights 1/t²),
    // so that every size counts alike.
    let x: Vec<f64> = rows
        .iter()
        .map(|(bytes, _)| 2.0 * (n as f64 - 1.0) / n as f64 * bytes)
        .collect();
    let y: Vec<f64> = rows.iter().map(|(_, t)| *t).collect();
    let w: Vec<f64> = y.iter().map(|t| 1.0 / (t * t)).collect();
    let sw: f64 = w.iter().sum();
    let mx = x.iter().zip(&w).map(|(a, w)| a * w).sum::<f64>() / sw;
    let my = y.iter().zip(&w).map(|(a, w)| a * w).sum::<f64>() / sw;
    let b = x
        .iter()
        .zip(&y)
        .zip(&w)
        .map(|((xi, yi), wi)| wi * (xi - mx) * (yi - my))
        .sum::<f64>()
        / x.iter()
            .zip(&w)
            .map(|(xi, wi)| wi * (xi - mx).powi(2))
            .sum::<f64>();
    let a = (my - b * mx).max(0.0);
    let link = Link {
        name: "fitted",
        bandwidth: 1.0 / b,
        latency: a / (2.0 * (n as f64 - 1.0)).max(1.0),
    };
    if group.rank() == 0 {
        println!(
            "all-reduce over {n} ranks ({}), f32 tensors on {}; fitted ring model: {:.2} GB/s per direction, {:.1} µs per step",
            group.backend(),
            device,
            link.bandwidth / 1e9,
            link.latency * 1e6
        );
        println!(
            "{:>10} {:>12} {:>12} {:>12} {:>8}",
            "size", "measured", "algbw", "model", "model/measured"
        );
        for (bytes, t) in &rows {
            let model = ring_all_reduce_seconds(*bytes, n, &link);
            println!(
                "{:>8} KiB {:>9.1} µs {:>7.2} GB/s {:>9.1} µs {:>8.2}",
                bytes / 1024.0,
                t * 1e6,
                bytes / t / 1e9,
                model * 1e6,
                model / t
            );
        }
    }
    Ok(())
}
