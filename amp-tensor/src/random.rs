//! Seeded, reproducible random numbers: a counter-based stream, so the same
//! seed gives the same bits on every device and thread count.
//!
//! Functions that take a `seed` draw from that stream alone. Constructors that
//! take none (`Linear::new(10, 2, &device)`) draw their seed from the
//! process-wide generator: [`manual_seed`] resets it (`torch.manual_seed`),
//! and each [`next_seed`] call takes the next value, so a program that builds
//! its model in the same order gets the same weights every run. Its initial
//! seed is PyTorch's default, 67280421310721.

use std::sync::Mutex;

/// The process-wide generator's initial seed (`torch.initial_seed()` of a
/// fresh PyTorch process).
pub const DEFAULT_SEED: u64 = 67_280_421_310_721;

/// The process-wide generator: its seed and how many seeds it has handed out.
static GLOBAL: Mutex<(u64, u64)> = Mutex::new((DEFAULT_SEED, 0));

/// Resets the process-wide generator to `seed` (`torch.manual_seed`).
pub fn manual_seed(seed: u64) {
    *GLOBAL.lock().unwrap_or_else(|e| e.into_inner()) = (seed, 0);
}

/// The seed the process-wide generator was last reset to (`torch.initial_seed`).
pub fn initial_seed() -> u64 {
    GLOBAL.lock().unwrap_or_else(|e| e.into_inner()).0
}

/// The next seed from the process-wide generator: the `n`-th call after
/// [`manual_seed`]`(s)` returns `draw_u64(s, n)`.
pub fn next_seed() -> u64 {
    let mut g = GLOBAL.lock().unwrap_or_else(|e| e.into_inner());
    let seed = draw_u64(g.0, g.1);
    g.1 += 1;
    seed
}

/// The `index`-th 64-bit draw of the stream `seed` (SplitMix64 finaliser).
pub fn draw_u64(seed: u64, index: u64) -> u64 {
    let mut z = seed.wrapping_mul(0xA076_1D64_78BD_642F)
        ^ index.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The `index`-th uniform draw in `[0, 1)` of stream `seed` (53 random bits).
pub fn uniform(seed: u64, index: u64) -> f64 {
    (draw_u64(seed, index) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// `n` standard normal draws of stream `seed` (Box–Muller on pairs of uniforms).
pub fn normals(seed: u64, n: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(n);
    let mut i = 0u64;
    while out.len() < n {
        let u1 = 1.0 - uniform(seed, i); // (0, 1]: log is finite
        let u2 = uniform(seed, i + 1);
        i += 2;
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u2;
        out.push(r * theta.cos());
        if out.len() < n {
            out.push(r * theta.sin());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_global_generator_replays_after_manual_seed() {
        // One test touches the global state, so no other test races it.
        manual_seed(42);
        assert_eq!(initial_seed(), 42);
        let a: Vec<u64> = (0..3).map(|_| next_seed()).collect();
        manual_seed(42);
        let b: Vec<u64> = (0..3).map(|_| next_seed()).collect();
        assert_eq!(a, b);
        assert_eq!(a, (0..3).map(|i| draw_u64(42, i)).collect::<Vec<_>>());
        manual_seed(43);
        assert_ne!(next_seed(), a[0]);
        manual_seed(DEFAULT_SEED);
    }
}
