//! Seeded, reproducible random numbers: a counter-based stream, so the same
//! seed gives the same bits on every device and thread count.

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
