//! When data parallelism pays: a cost model of a data-parallel step.
//!
//! Gradients are averaged with a ring all-reduce (what NCCL and Open MPI
//! use for large messages): each of `n` ranks sends and receives
//! `2 (n − 1) / n` times the gradient bytes, in `2 (n − 1)` latency-bound
//! steps, so
//!
//! ```text
//! t_allreduce = 2 (n − 1) / n · bytes / bandwidth + 2 (n − 1) · latency
//! ```
//!
//! (the bandwidth of one link in one direction). The buckets' all-reduces
//! start during the backward pass and can hide behind it — except the last
//! bucket's (the first layers' gradients, ready when backward ends): a step
//! takes `compute + max(t_allreduce(all) − overlap, t_allreduce(last bucket))`,
//! where `overlap` is the part of the backward pass still running after the
//! first bucket is ready (about two thirds of the compute for a step whose
//! backward costs twice its forward). Without overlap — an engine that makes
//! progress only when the host calls it, as Open MPI's shared-memory and
//! TCP transports do — the whole all-reduce adds to the step. The scaling
//! efficiency is `compute / step`: the share of the ideal `n`-fold speed-up
//! that is kept.

/// A network or bus that carries the all-reduce.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Link {
    /// What it is.
    pub name: &'static str,
    /// Bytes per second one rank sends (and receives) at once.
    pub bandwidth: f64,
    /// Seconds per message step.
    pub latency: f64,
}

/// 10 Gb/s Ethernet (1.25 GB/s, ~20 µs per step over TCP).
pub const ETHERNET_10G: Link = Link {
    name: "10 Gb/s Ethernet",
    bandwidth: 1.25e9,
    latency: 20e-6,
};

/// 100 Gb/s (InfiniBand or RoCE: 12.5 GB/s, ~3 µs per step).
pub const NETWORK_100G: Link = Link {
    name: "100 Gb/s InfiniBand",
    bandwidth: 12.5e9,
    latency: 3e-6,
};

/// NVLink 4 between H100s: 900 GB/s per GPU in both directions together,
/// 450 GB/s each way (~2 µs per step).
pub const NVLINK4: Link = Link {
    name: "NVLink 4 (H100)",
    bandwidth: 450e9,
    latency: 2e-6,
};

/// Seconds of a ring all-reduce of `bytes` over `ranks` ranks on `link`
/// (0 for one rank).
pub fn ring_all_reduce_seconds(bytes: f64, ranks: usize, link: &Link) -> f64 {
    if ranks <= 1 {
        return 0.0;
    }
    let n = ranks as f64;
    2.0 * (n - 1.0) / n * bytes / link.bandwidth + 2.0 * (n - 1.0) * link.latency
}

/// Seconds of a data-parallel step: `compute` seconds of forward and
/// backward, plus the part of the all-reduce of `bytes` that `overlap`
/// seconds of the backward pass do not hide; the last bucket's `last_bytes`
/// are never hidden.
pub fn step_seconds(
    compute: f64,
    overlap: f64,
    bytes: f64,
    last_bytes: f64,
    ranks: usize,
    link: &Link,
) -> f64 {
    let all = ring_all_reduce_seconds(bytes, ranks, link);
    let last = ring_all_reduce_seconds(last_bytes.min(bytes), ranks, link);
    compute + (all - overlap.clamp(0.0, compute)).max(last)
}

/// The share of the ideal `ranks`-fold speed-up a data-parallel step keeps
/// (see [`step_seconds`]).
pub fn scaling_efficiency(
    compute: f64,
    overlap: f64,
    bytes: f64,
    last_bytes: f64,
    ranks: usize,
    link: &Link,
) -> f64 {
    compute / step_seconds(compute, overlap, bytes, last_bytes, ranks, link)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_formula_and_the_overlap() {
        let link = Link {
            name: "test",
            bandwidth: 1e9,
            latency: 1e-6,
        };
        // 8 ranks, 1 GB: 2·7/8 s of bytes + 14 µs.
        let t = ring_all_reduce_seconds(1e9, 8, &link);
        assert!((t - (1.75 + 14e-6)).abs() < 1e-12, "{t}");
        assert_eq!(ring_all_reduce_seconds(1e9, 1, &link), 0.0);
        // 1 s of compute hides 0.5 s of a 1.75 s all-reduce: 2.25 s.
        assert!((step_seconds(1.0, 0.5, 1e9, 0.0, 8, &link) - (2.25 + 14e-6)).abs() < 1e-9);
        // Hidden but for the last bucket (8 MB: 14 ms + 14 µs).
        let t = step_seconds(1.0, 0.9, 1e8, 8e6, 8, &link);
        assert!((t - (1.0 + 0.014 + 14e-6)).abs() < 1e-9, "{t}");
        // No overlap: the whole all-reduce adds.
        let e = scaling_efficiency(1.0, 0.0, 1e9, 1e9, 2, &link);
        assert!((e - 1.0 / (2.0 + 2e-6)).abs() < 1e-12, "{e}");
    }
}
