//! The fused `non_finite_check_and_unscale`: one pass per buffer that
//! multiplies every element by `inv_scale` in f32 (f64 for f64 buffers),
//! exactly as `x * inv_scale` rounded once to the buffer's dtype, and counts
//! the infs and NaNs among the results — so a value that overflows when
//! unscaled counts too, and no non-finite value is ever written unseen.

use crate::convert::F32Convert;
use crate::elementwise::{CHUNK, PARALLEL_MIN};
use crate::isa::{multiversion, Isa};
use amp_tensor::backend::NonFiniteCount;
use amp_tensor::Layout;
use rayon::prelude::*;

/// Elements counted with 32-bit counters before they are added to the
/// totals: the counters then fill whole vector registers (8 or 16 lanes, not
/// the 4 or 8 of 64-bit ones), which keeps the pass at memory speed.
const COUNT_BLOCK: usize = 1 << 16;

multiversion! {
    /// Scales `x` in place by `inv_scale`, then counts (inf, NaN) in the results.
    pub(crate) fn scale_and_count(isa: Isa, x: &mut [f32], inv_scale: f32) -> (usize, usize) {
        let (mut inf, mut nan) = (0usize, 0usize);
        for block in x.chunks_mut(COUNT_BLOCK) {
            let (mut i, mut n) = (0u32, 0u32);
            for v in block.iter_mut() {
                *v *= inv_scale;
                let bits = v.to_bits() & 0x7FFF_FFFF;
                i += (bits == 0x7F80_0000) as u32;
                n += (bits > 0x7F80_0000) as u32;
            }
            inf += i as usize;
            nan += n as usize;
        }
        (inf, nan)
    }
}

multiversion! {
    /// Counts (inf, NaN) in `x`.
    fn count_non_finite(isa: Isa, x: &[f32]) -> (usize, usize) {
        let (mut inf, mut nan) = (0usize, 0usize);
        for block in x.chunks(COUNT_BLOCK) {
            let (mut i, mut n) = (0u32, 0u32);
            for v in block {
                let bits = v.to_bits() & 0x7FFF_FFFF;
                i += (bits == 0x7F80_0000) as u32;
                n += (bits > 0x7F80_0000) as u32;
            }
            inf += i as usize;
            nan += n as usize;
        }
        (inf, nan)
    }
}

fn contiguous<T: F32Convert>(isa: Isa, x: &mut [T], inv_scale: f32) -> (usize, usize) {
    let run = |x: &mut [T]| -> (usize, usize) {
        if let Some(x32) = T::as_f32_mut(x) {
            return scale_and_count(isa, x32, inv_scale);
        }
        let mut buf = [0f32; CHUNK];
        let (mut inf, mut nan) = (0, 0);
        for c in x.chunks_mut(CHUNK) {
            let b = &mut buf[..c.len()];
            T::load(isa, c, b);
            scale_and_count(isa, b, inv_scale);
            T::store(isa, b, c);
            // Count what was stored: a product finite in f32 may round to inf.
            T::load(isa, c, b);
            let (i, n) = count_non_finite(isa, b);
            inf += i;
            nan += n;
        }
        (inf, nan)
    };
    if x.len() >= PARALLEL_MIN {
        x.par_chunks_mut(1 << 15)
            .map(run)
            .reduce(|| (0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    } else {
        run(x)
    }
}

/// Unscales the elements of one typed buffer that `layout` views.
pub(crate) fn unscale<T: F32Convert>(
    isa: Isa,
    data: &mut [T],
    layout: &Layout,
    inv_scale: f32,
) -> NonFiniteCount {
    let (inf, nan) = match layout.contiguous_range() {
        Some(r) => contiguous(isa, &mut data[r], inv_scale),
        None => {
            // Gather, scale, scatter back (as the reference does for strided views).
            let idx: Vec<usize> = layout.indices().collect();
            let mut vals: Vec<T> = idx.iter().map(|&i| data[i]).collect();
            let counts = contiguous(isa, &mut vals, inv_scale);
            for (&i, v) in idx.iter().zip(vals) {
                data[i] = v;
            }
            counts
        }
    };
    NonFiniteCount { inf, nan }
}

/// The f64 case: scales in f64, then counts.
pub(crate) fn unscale_f64(data: &mut [f64], layout: &Layout, inv_scale: f32) -> NonFiniteCount {
    let mut count = NonFiniteCount::default();
    let idx: Vec<usize> = match layout.contiguous_range() {
        Some(r) => r.collect(),
        None => layout.indices().collect(),
    };
    let mut vals: Vec<f64> = idx.iter().map(|&i| data[i]).collect();
    for v in vals.iter_mut() {
        *v *= inv_scale as f64;
        count.nan += v.is_nan() as usize;
        count.inf += v.is_infinite() as usize;
    }
    for (&i, v) in idx.iter().zip(vals) {
        data[i] = v;
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_span_several_counter_blocks_on_every_isa() {
        // Three counter blocks and a partial one, with infs and NaNs in each
        // and at the block edges; values that overflow only once scaled count too.
        let n = 3 * COUNT_BLOCK + 1234;
        let base: Vec<f32> = (0..n)
            .map(|i| match i % 9973 {
                0 => f32::INFINITY,
                1 => f32::NAN,
                2 => f32::MAX,
                _ if i % COUNT_BLOCK == 0 || i % COUNT_BLOCK == COUNT_BLOCK - 1 => {
                    f32::NEG_INFINITY
                }
                _ => (i as f32).sin(),
            })
            .collect();
        for isa in Isa::available() {
            let mut x = base.clone();
            let (inf, nan) = scale_and_count(isa, &mut x, 4.0);
            let want: Vec<f32> = base.iter().map(|v| v * 4.0).collect();
            assert_eq!(
                x.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "{isa} products"
            );
            let want_inf = want.iter().filter(|v| v.is_infinite()).count();
            let want_nan = want.iter().filter(|v| v.is_nan()).count();
            assert!(want_inf > 8 && want_nan > 3);
            assert_eq!((inf, nan), (want_inf, want_nan), "{isa} scale_and_count");
            assert_eq!(
                count_non_finite(isa, &x),
                (want_inf, want_nan),
                "{isa} count_non_finite"
            );
        }
    }
}
