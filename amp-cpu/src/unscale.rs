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

multiversion! {
    /// Scales `x` in place by `inv_scale`, then counts (inf, NaN) in the results.
    pub(crate) fn scale_and_count(isa: Isa, x: &mut [f32], inv_scale: f32) -> (usize, usize) {
        let (mut inf, mut nan) = (0usize, 0usize);
        for v in x.iter_mut() {
            *v *= inv_scale;
            let bits = v.to_bits() & 0x7FFF_FFFF;
            inf += (bits == 0x7F80_0000) as usize;
            nan += (bits > 0x7F80_0000) as usize;
        }
        (inf, nan)
    }
}

multiversion! {
    /// Counts (inf, NaN) in `x`.
    fn count_non_finite(isa: Isa, x: &[f32]) -> (usize, usize) {
        let (mut inf, mut nan) = (0usize, 0usize);
        for v in x {
            let bits = v.to_bits() & 0x7FFF_FFFF;
            inf += (bits == 0x7F80_0000) as usize;
            nan += (bits > 0x7F80_0000) as usize;
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
