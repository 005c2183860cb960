//! Batched GEMM `C[b] = A[b] · B[b]` over strided views, blocked and packed
//! (the BLIS loop order), with f32 accumulation.
//!
//! Loops: `jc` over [`NC`] columns → `pc` over [`KC`] of the depth (B packed
//! into `NR`-wide panels, converted to f32 while packing) → `ic` over row
//! blocks (A packed into `MR`-high panels; these blocks run in parallel above
//! [`PARALLEL_FLOPS`]) → micro-kernel on an `MR × NR` tile. bf16/f16 inputs
//! are widened exactly while packing, so every kernel accumulates f32 products
//! in f32. Edge tiles run on a zero-padded panel into a scratch tile.
//!
//! Kernel choice is [`Kernel::select`]: the place where the AMX tile kernel and
//! the AVX512-BF16 `vdpbf16ps` kernel (the CPU-performance issue) plug in.

mod kernels;

use crate::convert::F32Convert;
use crate::isa::Isa;
use rayon::prelude::*;

pub(crate) use kernels::Kernel;

/// Depth block: one `NR × KC` B panel (32 KiB for NR = 32) stays in L1.
pub(crate) const KC: usize = 256;
/// Column block: the packed B block (`KC × NC` f32, 2 MiB) is shared by all threads.
pub(crate) const NC: usize = 2048;
/// Largest row block: one packed A block (`MC × KC` f32) stays in L2.
pub(crate) const MC: usize = 192;
/// Products of at least this many flops (2·B·M·N·K) run on the rayon pool.
pub(crate) const PARALLEL_FLOPS: usize = 1 << 21;

/// One operand: element `(b, i, j)` is at `offset + b·batch_stride + i·row_stride + j·col_stride`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Operand<'a, T> {
    /// The storage.
    pub data: &'a [T],
    /// Offset of element (0, 0, 0).
    pub offset: usize,
    /// Stride between batches (0 when broadcast).
    pub batch_stride: usize,
    /// Stride between rows.
    pub row_stride: usize,
    /// Stride between columns.
    pub col_stride: usize,
}

/// `[batch, m, n]` f32 result of `a [batch, m, k] · b [batch, k, n]`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm<T: F32Convert>(
    isa: Isa,
    a: Operand<'_, T>,
    b: Operand<'_, T>,
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
) -> Vec<f32> {
    let mut c = vec![0f32; batch * m * n];
    if m * n == 0 || k == 0 {
        return c;
    }
    let kernel = Kernel::select(isa, T::DTYPE);
    let parallel = 2 * batch * m * n * k >= PARALLEL_FLOPS;
    let threads = rayon::current_num_threads().max(1);
    if parallel && batch >= threads {
        c.par_chunks_mut(m * n)
            .enumerate()
            .for_each(|(bi, cb)| gemm_one(isa, kernel, &a, &b, bi, m, k, n, cb, false));
    } else {
        for (bi, cb) in c.chunks_mut(m * n).enumerate() {
            gemm_one(isa, kernel, &a, &b, bi, m, k, n, cb, parallel);
        }
    }
    c
}

/// Packs `count` lines (along x) of `depth` elements (along p) into panels of
/// `width` lines, `[panel][p][width]`, zero-padding the last panel.
#[allow(clippy::too_many_arguments)]
fn pack<T: F32Convert>(
    isa: Isa,
    data: &[T],
    base: usize,
    x_stride: usize,
    p_stride: usize,
    count: usize,
    depth: usize,
    width: usize,
    out: &mut [f32],
) {
    let panels = count.div_ceil(width);
    let mut line = vec![0f32; if p_stride == 1 { depth } else { 0 }];
    for q in 0..panels {
        let panel = &mut out[q * width * depth..(q + 1) * width * depth];
        let lines = width.min(count - q * width);
        if x_stride == 1 && lines == width {
            // Contiguous along x: each p is one load of `width` elements.
            for p in 0..depth {
                let s = base + q * width + p * p_stride;
                T::load(
                    isa,
                    &data[s..s + width],
                    &mut panel[p * width..(p + 1) * width],
                );
            }
            continue;
        }
        for r in 0..width {
            if r >= lines {
                for p in 0..depth {
                    panel[p * width + r] = 0.0;
                }
                continue;
            }
            let s = base + (q * width + r) * x_stride;
            if p_stride == 1 {
                T::load(isa, &data[s..s + depth], &mut line);
                for (p, &v) in line.iter().enumerate() {
                    panel[p * width + r] = v;
                }
            } else {
                for p in 0..depth {
                    panel[p * width + r] = data[s + p * p_stride].to_f32();
                }
            }
        }
    }
}

/// The row-block height: at most [`MC`], small enough to give every thread work.
fn row_block(m: usize, mr: usize, parallel: bool) -> usize {
    let target = if parallel {
        m.div_ceil(2 * rayon::current_num_threads().max(1))
    } else {
        MC
    };
    target.clamp(mr, MC).div_ceil(mr) * mr
}

#[allow(clippy::too_many_arguments)]
fn gemm_one<T: F32Convert>(
    isa: Isa,
    kernel: Kernel,
    a: &Operand<'_, T>,
    b: &Operand<'_, T>,
    bi: usize,
    m: usize,
    k: usize,
    n: usize,
    c: &mut [f32],
    parallel: bool,
) {
    let (mr, nr) = (kernel.mr(), kernel.nr());
    let mc_block = row_block(m, mr, parallel);
    let mut b_packed = vec![0f32; NC.min(n).div_ceil(nr) * nr * KC.min(k)];
    let a_base = a.offset + bi * a.batch_stride;
    let b_base = b.offset + bi * b.batch_stride;
    for j0 in (0..n).step_by(NC) {
        let nc = NC.min(n - j0);
        for p0 in (0..k).step_by(KC) {
            let kc = KC.min(k - p0);
            let b_len = nc.div_ceil(nr) * nr * kc;
            // B's lines run along j (columns), its depth along p (rows).
            pack(
                isa,
                b.data,
                b_base + j0 * b.col_stride + p0 * b.row_stride,
                b.col_stride,
                b.row_stride,
                nc,
                kc,
                nr,
                &mut b_packed[..b_len],
            );
            let b_packed = &b_packed[..b_len];
            let block = |(ib, c_rows): (usize, &mut [f32])| {
                let i0 = ib * mc_block;
                let mc = c_rows.len() / n;
                let mut a_packed = vec![0f32; mc.div_ceil(mr) * mr * kc];
                pack(
                    isa,
                    a.data,
                    a_base + i0 * a.row_stride + p0 * a.col_stride,
                    a.row_stride,
                    a.col_stride,
                    mc,
                    kc,
                    mr,
                    &mut a_packed,
                );
                let mut scratch = [0f32; kernels::MAX_TILE];
                for jp in 0..nc.div_ceil(nr) {
                    let bp = &b_packed[jp * nr * kc..(jp + 1) * nr * kc];
                    let cols = nr.min(nc - jp * nr);
                    for ip in 0..mc.div_ceil(mr) {
                        let ap = &a_packed[ip * mr * kc..(ip + 1) * mr * kc];
                        let rows = mr.min(mc - ip * mr);
                        let at = ip * mr * n + j0 + jp * nr;
                        if rows == mr && cols == nr {
                            kernel.run(kc, ap, bp, &mut c_rows[at..], n);
                        } else {
                            let tile = &mut scratch[..mr * nr];
                            tile.fill(0.0);
                            kernel.run(kc, ap, bp, tile, nr);
                            for r in 0..rows {
                                let dst = &mut c_rows[at + r * n..at + r * n + cols];
                                for (d, s) in dst.iter_mut().zip(&tile[r * nr..r * nr + cols]) {
                                    *d += s;
                                }
                            }
                        }
                    }
                }
            };
            if parallel {
                c.par_chunks_mut(mc_block * n).enumerate().for_each(block);
            } else {
                c.chunks_mut(mc_block * n).enumerate().for_each(block);
            }
        }
    }
}
