//! Finishing: each f32 output row segment has the [`Finish`] step applied
//! (a linear layer's bias and activation), then is written out as the output
//! type, rounded once for bf16/f16 — from a padded f32 product
//! ([`write_rows`]), or from the column strips of the column-parallel
//! schedule ([`round_strips`], [`gather_strips`] for an f32 product).

use super::panels::Panels;
use super::{kernels, Finish, COLUMN_GROUP};
use crate::convert::F32Convert;
use crate::isa::Isa;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// `finish(col0, vals)`, then `vals` written to `dst` as `D`: copied when `D`
/// is f32, else rounded once through `rounded` (at least `vals.len()` long).
#[inline]
pub(super) fn finish_into<D: F32Convert>(
    isa: Isa,
    finish: &Finish<'_>,
    col0: usize,
    vals: &mut [f32],
    rounded: &mut [D],
    dst: &mut [MaybeUninit<D>],
    stream: bool,
) {
    finish(col0, vals);
    let len = vals.len();
    let src: &[D] = if D::DTYPE == amp_dtype::DType::F32 {
        // SAFETY: D is f32 (the only element type whose DTYPE is F32).
        unsafe { std::slice::from_raw_parts(vals.as_ptr() as *const D, len) }
    } else {
        D::store(isa, vals, &mut rounded[..len]);
        &rounded[..len]
    };
    crate::elementwise::write_uninit(isa, dst, src, stream);
}

/// The row stride of a product with `n` columns: whole panels of `nr`, plus
/// one cache line when the rows would be a multiple of 1 KiB apart — then
/// every row of a tile would map to the same few L1 sets (a 2048-wide
/// product: all 16 rows of an AMX tile in one 12-way set; measured on the f32
/// kernel with the row-block schedule's 128-deep blocks, 2048³: 228 → 242 GFLOP/s).
#[inline]
pub(super) fn padded_stride(n: usize, nr: usize) -> usize {
    let ldc = n.div_ceil(nr) * nr;
    if ldc.is_multiple_of(256) {
        ldc + 16
    } else {
        ldc
    }
}

/// Where an f32 product lies in its buffer: `batch` blocks of `mp` rows,
/// `ldc` apart; the first `m` rows and `n` columns of each block are the
/// product (the rest pads it to whole tiles).
#[derive(Debug, Clone, Copy)]
pub(super) struct CLayout {
    /// Products.
    pub batch: usize,
    /// Rows of each product.
    pub m: usize,
    /// Rows stored per product (`m`, padded).
    pub mp: usize,
    /// Columns of each product.
    pub n: usize,
    /// Stride between rows (`n`, padded).
    pub ldc: usize,
}

impl CLayout {
    /// An unpadded `[batch, m, n]` product.
    pub(super) fn dense(batch: usize, m: usize, n: usize) -> CLayout {
        CLayout {
            batch,
            m,
            mp: m,
            n,
            ldc: n,
        }
    }
}

/// The `[batch, m, n]` output of a product `c` laid out as `layout`: each
/// row `finish`ed, then written as `D`, rows in parallel when large.
pub(super) fn write_rows<D: F32Convert + Send + Sync>(
    isa: Isa,
    c: &mut [f32],
    layout: CLayout,
    finish: &Finish<'_>,
) -> Vec<D> {
    let CLayout {
        batch,
        m,
        mp,
        n,
        ldc,
    } = layout;
    let mut out: Vec<D> = Vec::with_capacity(batch * m * n);
    let spare = &mut out.spare_capacity_mut()[..batch * m * n];
    let stream = batch * m * n * std::mem::size_of::<D>() >= crate::elementwise::STREAM_MIN_BYTES;
    let f32_out = D::DTYPE == amp_dtype::DType::F32;
    // A group of rows: each finished, then written; non-temporal stores are
    // fenced by the thread that made them.
    let group = |(src, dst): (&mut [f32], &mut [MaybeUninit<D>])| {
        let mut rounded = vec![D::from_f32(0.0); if f32_out { 0 } else { n }];
        for (src, dst) in src.chunks_mut(ldc).zip(dst.chunks_mut(n)) {
            finish_into(isa, finish, 0, &mut src[..n], &mut rounded, dst, stream);
        }
        if stream {
            crate::elementwise::stream_fence(isa);
        }
    };
    if m * n > 0 {
        const ROWS: usize = 16;
        for (cb, ob) in c.chunks_mut(mp * ldc).zip(spare.chunks_mut(m * n)) {
            let (src, dst) = (&mut cb[..m * ldc], ob);
            if m * n >= crate::elementwise::PARALLEL_MIN {
                src.par_chunks_mut(ROWS * ldc)
                    .zip(dst.par_chunks_mut(ROWS * n))
                    .for_each(group);
            } else {
                group((src, dst));
            }
        }
    }
    // SAFETY: every row of every batch was written above, or there is nothing to write.
    unsafe { out.set_len(batch * m * n) };
    out
}

/// Copies the column strips of [`super::schedule::Product::column_strips`]
/// into the f32 product `c` (row stride `ldc`), rows in parallel.
pub(super) fn gather_strips(
    strips: &[Panels<f32>],
    width: usize,
    m: usize,
    n: usize,
    c: &mut [f32],
    ldc: usize,
) {
    let gather = |(i, row): (usize, &mut [f32])| {
        for (g, local) in strips.iter().enumerate() {
            let j = g * width;
            let cols = width.min(n - j);
            row[j..j + cols].copy_from_slice(&local[i * width..i * width + cols]);
        }
    };
    if m * n >= crate::elementwise::PARALLEL_MIN {
        c[..m * ldc]
            .par_chunks_mut(ldc)
            .enumerate()
            .for_each(gather);
    } else {
        c[..m * ldc].chunks_mut(ldc).enumerate().for_each(gather);
    }
}

/// The column strips of [`super::schedule::Product::column_strips`] rounded
/// to a new `D` product, each row segment `finish`ed first: no f32 product
/// zeroed, gathered and read back.
pub(super) fn round_strips<D: F32Convert + Send + Sync>(
    isa: Isa,
    strips: &[Panels<f32>],
    width: usize,
    m: usize,
    n: usize,
    finish: &Finish<'_>,
) -> Vec<D> {
    let mut out: Vec<D> = Vec::with_capacity(m * n);
    let spare = &mut out.spare_capacity_mut()[..m * n];
    let stream = m * n * std::mem::size_of::<D>() >= crate::elementwise::STREAM_MIN_BYTES;
    spare.par_chunks_mut(n).enumerate().for_each(|(i, row)| {
        let mut vals = [0f32; COLUMN_GROUP * kernels::MAX_NR];
        let mut rounded = [D::from_f32(0.0); COLUMN_GROUP * kernels::MAX_NR];
        for (g, local) in strips.iter().enumerate() {
            let j = g * width;
            let cols = width.min(n - j);
            let v = &mut vals[..cols];
            v.copy_from_slice(&local[i * width..i * width + cols]);
            finish_into(
                isa,
                finish,
                j,
                v,
                &mut rounded,
                &mut row[j..j + cols],
                stream,
            );
        }
        if stream {
            crate::elementwise::stream_fence(isa);
        }
    });
    // SAFETY: every row wrote every column strip, which together cover all n columns.
    unsafe { out.set_len(m * n) };
    out
}
