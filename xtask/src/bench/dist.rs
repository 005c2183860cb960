//! `cargo xtask dist-model`: when data parallelism pays, for the bench MLP
//! and the default GPT. Measures one training step of each on this machine
//! (one process, f32 and bf16 autocast), takes the gradient bytes and the
//! bucket plan from amp-dist's `DistributedDataParallel`, and prints the
//! ring all-reduce time and the predicted scaling efficiency for 2, 8 and 64
//! ranks over 10 Gb/s Ethernet, 100 Gb/s InfiniBand and NVLink 4 — with and
//! without overlap of the all-reduce with the backward pass — and again for
//! the compute time an H100 would take (an estimate, stated as such).

use super::{cpu_model, mlp_step, Res};
use amp_dist::cost::{
    ring_all_reduce_seconds, scaling_efficiency, ETHERNET_10G, NETWORK_100G, NVLINK4,
};
use amp_dist::{DdpConfig, DistributedDataParallel, ProcessGroup, SingleProcessGroup};
use amp_tensor::{DType, Device, Tensor};
use amp_train::nn::Module;
use std::process::ExitCode;
use std::sync::Arc;

/// H100 SXM dense bf16 peak (FLOP/s) and the share of it a training step of
/// a small model reaches (an assumption for the estimate, not a measurement).
const H100_BF16_PEAK: f64 = 989e12;
const H100_UTILISATION: f64 = 0.4;

/// Gradient bytes (f32) of `params` and of the bucket reduced last.
fn gradient_bytes(params: Vec<(String, Tensor)>) -> Res<(f64, f64)> {
    let sizes: std::collections::HashMap<String, usize> = params
        .iter()
        .map(|(n, p)| (n.clone(), p.numel() * 4))
        .collect();
    for (_, p) in &params {
        p.set_requires_grad(true)?;
    }
    let group: Arc<dyn ProcessGroup> = Arc::new(SingleProcessGroup);
    let ddp = DistributedDataParallel::new(group, params, DdpConfig::default())?;
    let buckets = ddp.buckets();
    let total: usize = sizes.values().sum();
    let last: usize = buckets
        .last()
        .map_or(0, |b| b.iter().map(|n| sizes[n]).sum());
    Ok((total as f64, last as f64))
}

struct Workload {
    name: &'static str,
    params: usize,
    bytes: f64,
    last_bytes: f64,
    /// Rows or tokens per step (for the FLOP estimate).
    tokens: usize,
    f32_s: f64,
    bf16_s: f64,
}

fn workloads(device: &Device) -> Res<Vec<Workload>> {
    let mlp = super::bench_mlp(device)?;
    let params: usize = mlp.named_parameters().iter().map(|(_, p)| p.numel()).sum();
    let (bytes, last_bytes) = gradient_bytes(mlp.named_parameters())?;
    let mlp = Workload {
        name: "MLP 1024-4096-4096-10, batch 256",
        params,
        bytes,
        last_bytes,
        tokens: 256,
        f32_s: mlp_step(device, None)? / 1e3,
        bf16_s: mlp_step(device, Some(DType::BF16))? / 1e3,
    };
    let (gpt_params, tokens) = super::transformer::gpt_parameters(device)?;
    let params: usize = gpt_params.iter().map(|(_, p)| p.numel()).sum();
    let (bytes, last_bytes) = gradient_bytes(gpt_params)?;
    let gpt = Workload {
        name: "GPT of amp-train lm (4 layers, d 128), 32 × 128 tokens",
        params,
        bytes,
        last_bytes,
        tokens,
        f32_s: tokens as f64 / super::transformer::gpt_tokens_per_s(device, None)?,
        bf16_s: tokens as f64 / super::transformer::gpt_tokens_per_s(device, Some(DType::BF16))?,
    };
    Ok(vec![mlp, gpt])
}

fn table(w: &Workload, label: &str, compute: f64) {
    println!("  compute {label}: {:.2} ms per step", compute * 1e3);
    println!(
        "    {:<22} {:>5} {:>13} {:>15} {:>15}",
        "link", "ranks", "all-reduce", "eff. overlap", "eff. no overlap"
    );
    for link in [ETHERNET_10G, NETWORK_100G, NVLINK4] {
        for ranks in [2, 8, 64] {
            let t = ring_all_reduce_seconds(w.bytes, ranks, &link);
            let overlapped = scaling_efficiency(
                compute,
                compute * 2.0 / 3.0,
                w.bytes,
                w.last_bytes,
                ranks,
                &link,
            );
            let serial = scaling_efficiency(compute, 0.0, w.bytes, w.bytes, ranks, &link);
            println!(
                "    {:<22} {:>5} {:>10.2} ms {:>14.0}% {:>14.0}%",
                link.name,
                ranks,
                t * 1e3,
                overlapped * 100.0,
                serial * 100.0
            );
        }
    }
}

pub fn run(_args: &[String]) -> ExitCode {
    let device = amp_cpu::device();
    let result = (|| -> Res<()> {
        println!(
            "data-parallel cost model on {} ({} cores)",
            cpu_model(),
            cores()
        );
        for w in workloads(&device)? {
            println!(
                "\n{}: {} parameters, {:.1} MB of f32 gradients per step (last bucket {:.1} MB)",
                w.name,
                w.params,
                w.bytes / 1e6,
                w.last_bytes / 1e6
            );
            table(&w, "f32, this CPU (measured)", w.f32_s);
            table(&w, "bf16 autocast, this CPU (measured)", w.bf16_s);
            let h100 =
                6.0 * w.params as f64 * w.tokens as f64 / (H100_BF16_PEAK * H100_UTILISATION);
            table(
                &w,
                "bf16, H100 (estimate: 6·params·tokens FLOP at 40% of 989 TFLOP/s)",
                h100,
            );
        }
        Ok(())
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
