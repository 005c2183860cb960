//! The fused `non_finite_check_and_unscale`: one pass per buffer that counts
//! infs and NaNs and multiplies every element by `inv_scale` in f32 (f64 for
//! f64 buffers), exactly as `x * inv_scale` rounded once to the buffer's dtype.

use crate::convert::F32Convert;
use crate::elementwise::{CHUNK, PARALLEL_MIN};
use crate::isa::{multiversion, Isa};
use amp_tensor::{Layout, NonFiniteCount};
use rayon::prelude::*;

multiversion! {
    /// Counts (inf, NaN) in `x`, then scales it in place by `inv_scale`.
    pub(crate) fn count_and_scale(isa: Isa, x: &mut [f32], inv_scale: f32) -> (usize, usize) {
        let (mut inf, mut nan) = (0usize, 0usize);
        for v in x.iter_mut() {
            let bits = v.to_bits() & 0x7FFF_FFFF;
            inf += (bits == 0x7F80_0000) as usize;
            nan += (bits > 0x7F80_0000) as usize;
            *v *= inv_scale;
        }
        (inf, nan)
    }
}

fn contiguous<T: F32Convert>(isa: Isa, x: &mut [T], inv_scale: f32) -> (usize, usize) {
    let run = |x: &mut [T]| -> (usize, usize) {
        if let Some(x32) = T::as_f32_mut(x) {
            return count_and_scale(isa, x32, inv_scale);
        }
        let mut buf = [0f32; CHUNK];
        let (mut inf, mut nan) = (0, 0);
        for c in x.chunks_mut(CHUNK) {
            let b = &mut buf[..c.len()];
            T::load(isa, c, b);
            let (i, n) = count_and_scale(isa, b, inv_scale);
            T::store(isa, b, c);
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

/// The f64 case: counts, then scales in f64.
pub(crate) fn unscale_f64(data: &mut [f64], layout: &Layout, inv_scale: f32) -> NonFiniteCount {
    let mut count = NonFiniteCount::default();
    let idx: Vec<usize> = match layout.contiguous_range() {
        Some(r) => r.collect(),
        None => layout.indices().collect(),
    };
    let mut vals: Vec<f64> = idx.iter().map(|&i| data[i]).collect();
    for v in vals.iter_mut() {
        count.nan += v.is_nan() as usize;
        count.inf += v.is_infinite() as usize;
        *v *= inv_scale as f64;
    }
    for (&i, v) in idx.iter().zip(vals) {
        data[i] = v;
    }
    count
}
