//! Times a data-parallel training step of the bench MLP (1024-4096-4096-10,
//! 21 M parameters, 84 MB of f32 gradients in 4 buckets), with the buckets'
//! all-reduces started from the backward pass (`overlap`) and after it,
//! alternating in one process:
//!
//! ```text
//! cargo build --release -p amp-train --features mpi --example ddp_step
//! mpirun -np 2 target/release/examples/ddp_step [BATCH_PER_RANK] [ROUNDS]
//! ```
//!
//! Rank 0 prints, per round, the median ms of 5 steps (forward, backward,
//! synchronize, AdamW) in each mode, and the share of it spent in
//! `synchronize` (waiting for the all-reduces).

use amp_tensor::{ops, DType, Tensor};
use amp_train::dist::{DdpConfig, DistributedDataParallel, MpiGroup, ProcessGroup};
use amp_train::nn::{Gelu, Linear, Module, Sequential};
use amp_train::optim::{AdamW, AdamWConfig};
use std::sync::Arc;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // As the amp-train binary: large freed buffers stay mapped for reuse.
    amp_cpu::keep_freed_buffers();
    let group: Arc<dyn ProcessGroup> = Arc::new(MpiGroup::init("ddp_step")?);
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (batch, rounds) = (
        args.first().copied().unwrap_or(64),
        args.get(1).copied().unwrap_or(3),
    );
    let device = amp_cpu::device();
    let model = Sequential::new()
        .add(Linear::seeded(1024, 4096, true, &device, 0)?)
        .add(Gelu::new())
        .add(Linear::seeded(4096, 4096, true, &device, 1)?)
        .add(Gelu::new())
        .add(Linear::seeded(4096, 10, true, &device, 2)?);
    let x = Tensor::randn(&[batch, 1024], DType::F32, &device, 3 + group.rank() as u64)?;
    let y = Tensor::randint(0, 10, &[batch], &device, 4)?;
    let mut opt = AdamW::new(model.named_parameters(), AdamWConfig::default());
    for round in 0..rounds {
        for (overlap, label) in [(true, "overlap"), (false, "after backward")] {
            // A wrapper per mode and round (dropping one removes its hooks).
            let config = DdpConfig {
                overlap,
                ..DdpConfig::default()
            };
            let ddp =
                DistributedDataParallel::new(group.clone(), model.named_parameters(), config)?;
            if round == 0 && overlap && group.rank() == 0 {
                println!(
                    "{} ranks ({}), batch {batch} per rank, parameters per bucket {:?}",
                    group.world_size(),
                    group.backend(),
                    ddp.buckets().iter().map(Vec::len).collect::<Vec<_>>()
                );
            }
            let (mut steps, mut syncs) = (Vec::new(), Vec::new());
            for _ in 0..6 {
                opt.zero_grad();
                let start = Instant::now();
                let loss = ops::cross_entropy(&model.forward(&x)?, &y)?;
                loss.backward()?;
                let s = Instant::now();
                ddp.synchronize()?;
                syncs.push(s.elapsed().as_secs_f64());
                opt.step()?;
                steps.push(start.elapsed().as_secs_f64());
            }
            steps.sort_by(f64::total_cmp);
            syncs.sort_by(f64::total_cmp);
            if group.rank() == 0 {
                println!(
                    "round {round} {label:>15}: {:7.1} ms per step, {:6.1} ms in synchronize",
                    steps[3] * 1e3,
                    syncs[3] * 1e3
                );
            }
        }
    }
    Ok(())
}
