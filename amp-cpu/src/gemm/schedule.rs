//! The schedules: which blocks of A and B are packed when, and which thread
//! runs which tiles. The row-block schedule (the BLIS loop order,
//! [`Product::gemm_one`]), the column-parallel schedule of a short, wide
//! product ([`Product::column_strips`]), and one depth block written straight
//! to the output ([`Product::gemm_direct`]); [`Product::run_batches`] picks
//! between the first two for every batch.

use super::finish::{finish_into, gather_strips};
use super::packing::{Accum, Lines, Packer};
use super::panels::Panels;
use super::{
    Dims, Finish, Kernel, Operand, B_PANELS_PER_TASK, COLUMN_GROUP, COLUMN_MAX_M, COLUMN_MAX_M_F32,
    F32_PARALLEL_TILES, KC_AMX, MC, PARALLEL_FLOPS, PARALLEL_FLOPS_AMX,
};
use crate::cache::Blocking;
use crate::convert::F32Convert;
use crate::isa::Isa;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// The blocking of `kernel`'s products on this CPU.
#[inline]
pub(super) fn blocking(kernel: Kernel) -> Blocking {
    if kernel.packs_bf16_pairs() {
        Blocking::for_bf16_pairs(crate::cache::caches(), kernel.nr())
    } else {
        Blocking::detected(kernel.nr())
    }
}

/// The depth block of `kernel`'s products.
#[inline]
pub(super) fn depth_block(kernel: Kernel) -> usize {
    if kernel.is_amx() {
        KC_AMX
    } else {
        blocking(kernel).kc
    }
}

/// The column block of `kernel`'s products: the packed B block stays the
/// size of the blocking's `nc` columns of a `kc`-deep block (a multiple of
/// every `NR`).
#[inline]
fn column_block(kernel: Kernel) -> usize {
    let b = blocking(kernel);
    (b.nc * b.kc / depth_block(kernel)).div_ceil(32) * 32
}

/// The parallel threshold for `kernel`'s products.
#[inline]
pub(super) fn parallel_flops(kernel: Kernel) -> usize {
    if kernel.is_amx() {
        PARALLEL_FLOPS_AMX
    } else {
        PARALLEL_FLOPS
    }
}

/// Whether a single product of this shape runs on the column-parallel schedule
/// (when it is large enough to run in parallel at all).
#[inline]
pub(super) fn takes_columns(kernel: Kernel, m: usize, n: usize) -> bool {
    let threads = rayon::current_num_threads().max(1);
    let max_m = if kernel.is_f32() {
        COLUMN_MAX_M_F32
    } else {
        COLUMN_MAX_M
    };
    n.div_ceil(COLUMN_GROUP * kernel.nr()) >= 2 * threads && m <= max_m
}

/// Depth per part of the split-depth schedule ([`Product::gemm_split_depth`]).
const DEPTH_PART: usize = 1024;
/// The most parts a product's depth is split into.
const MAX_DEPTH_PARTS: usize = 8;
/// Largest output (elements per batch) split by depth: each part beyond the
/// first holds a copy of it.
const DEPTH_SPLIT_MAX_OUTPUT: usize = 1 << 17;
/// Elements per task when the parts are added.
const DEPTH_SUM_CHUNK: usize = 1 << 14;

/// How many depth ranges a product computed in parallel is split into: more
/// than one for a small output over a deep product (the depth at least two
/// [`DEPTH_PART`]s), never for AMX (unmeasured there). From the shape alone.
#[inline]
pub(super) fn depth_parts(kernel: Kernel, m: usize, k: usize, n: usize) -> usize {
    if kernel.is_amx() || m * n > DEPTH_SPLIT_MAX_OUTPUT {
        return 1;
    }
    (k / DEPTH_PART).clamp(1, MAX_DEPTH_PARTS)
}

/// The row-block height: at most [`MC`], small enough to give every thread
/// work. In parallel, the f32 kernel takes blocks of [`F32_PARALLEL_TILES`]
/// tiles: each block reuses the shared B block from L2 whatever its height,
/// and many small blocks leave the threads less uneven at each depth block's
/// join (measured, one process alternating: f32 2048³ +6% over `m / 4`-row
/// blocks; the AMX kernel even).
#[inline]
pub(super) fn row_block(kernel: Kernel, m: usize, parallel: bool) -> usize {
    let mr = kernel.mr();
    if parallel && kernel.is_f32() {
        return F32_PARALLEL_TILES * mr;
    }
    let target = if parallel {
        m.div_ceil(2 * rayon::current_num_threads().max(1))
    } else {
        MC
    };
    target.clamp(mr, MC).div_ceil(mr) * mr
}

/// One product to schedule: A and B as `packer` reads them, the kernel that
/// multiplies their panels, and the shape.
pub(super) struct Product<'p, P, TA, TB> {
    /// How A and B are packed and their panels multiplied.
    pub packer: &'p P,
    /// The micro-kernel.
    pub kernel: Kernel,
    /// The A operand.
    pub a: Operand<'p, TA>,
    /// The B operand.
    pub b: Operand<'p, TB>,
    /// The shape.
    pub dims: Dims,
}

impl<TA: Sync, TB: Sync, P: Packer<TA, TB>> Product<'_, P, TA, TB> {
    /// The row-block schedule for a single product with a depth of at most
    /// one depth block, writing its `D` output directly: per column block, B is packed
    /// once; each row block packs its A, runs every tile into a padded f32
    /// tile block (so edge tiles need no scratch), and rounds its rows into
    /// the output, `finish`ed first.
    pub(super) fn gemm_direct<D: F32Convert + Send + Sync>(
        &self,
        isa: Isa,
        finish: &Finish<'_>,
    ) -> Vec<D> {
        let Product {
            packer,
            kernel,
            ref a,
            ref b,
            dims: Dims { m, k, n, .. },
        } = *self;
        let (mr, nr) = (kernel.mr(), kernel.nr());
        let parallel = 2 * m * n * k >= parallel_flops(kernel);
        let mc_block = row_block(kernel, m, parallel);
        let kd = packer.depth(k);
        // Written once, from the tiles: no zeroing first. A large output is
        // written with non-temporal stores (it would not stay in the cache).
        let mut out: Vec<D> = Vec::with_capacity(m * n);
        let spare = &mut out.spare_capacity_mut()[..m * n];
        let stream = m * n * std::mem::size_of::<D>() >= crate::elementwise::STREAM_MIN_BYTES;
        let ncb = column_block(kernel);
        let mut b_packed = Panels::new(ncb.min(n).div_ceil(nr) * nr * kd);
        // One tile block per task, reused: every kernel call overwrites its tile.
        let tile_len = mc_block.div_ceil(mr) * mr * ncb.min(n).div_ceil(nr) * nr;
        for j0 in (0..n).step_by(ncb) {
            let nc = ncb.min(n - j0);
            let panels = nc.div_ceil(nr);
            let b_len = panels * nr * kd;
            let b_packed = &mut b_packed[..b_len];
            self.pack_b_block(
                b.columns(b.offset + j0 * b.col_stride, nc, k),
                parallel,
                b_packed,
            );
            let b_packed = &*b_packed;
            let ldt = panels * nr;
            let block = |tile: &mut Panels<f32>, (ib, rows_out): (usize, &mut [MaybeUninit<D>])| {
                let i0 = ib * mc_block;
                let mc = rows_out.len() / n;
                let tiles = mc.div_ceil(mr);
                let mut a_packed = Panels::new(tiles * mr * kd);
                packer.pack_a(
                    a.rows(a.offset + i0 * a.row_stride, mc, k),
                    mr,
                    &mut a_packed,
                );
                // Padded to whole tiles: every kernel call is a full tile.
                for ip in 0..tiles {
                    let ap = &a_packed[ip * mr * kd..(ip + 1) * mr * kd];
                    let t = Accum {
                        c: &mut tile[ip * mr * ldt..],
                        ldc: ldt,
                        overwrite: true,
                        rows: mc - ip * mr,
                    };
                    packer.run_row(kernel, k, ap, b_packed, panels, t);
                }
                let f32_out = D::DTYPE == amp_dtype::DType::F32;
                let mut rounded = vec![D::from_f32(0.0); if f32_out { 0 } else { nc }];
                for r in 0..mc {
                    let row = &mut tile[r * ldt..r * ldt + nc];
                    let dst = &mut rows_out[r * n + j0..r * n + j0 + nc];
                    finish_into(isa, finish, j0, row, &mut rounded, dst, stream);
                }
                if stream {
                    crate::elementwise::stream_fence(isa);
                }
            };
            let rows = spare.chunks_mut(mc_block * n).enumerate();
            if parallel {
                spare
                    .par_chunks_mut(mc_block * n)
                    .enumerate()
                    .for_each_init(|| Panels::new(tile_len), block);
            } else {
                let mut tile = Panels::new(tile_len);
                rows.for_each(|x| block(&mut tile, x));
            }
        }
        // SAFETY: each column block wrote its columns of every row (the row blocks
        // cover all m rows), so all m·n elements are initialised.
        unsafe { out.set_len(m * n) };
        out
    }

    /// Runs every batch into `c`: `[batch][mp][ldc]`, rows and columns padded
    /// to whole tiles (the padding holds products of zero padding).
    pub(super) fn run_batches(&self, c: &mut [f32], ldc: usize) {
        let Product {
            kernel,
            dims: Dims { batch, m, k, n },
            ..
        } = *self;
        let parallel = 2 * batch * m * n * k >= parallel_flops(kernel);
        let threads = rayon::current_num_threads().max(1);
        let size = c.len() / batch;
        if parallel && batch >= threads {
            c.par_chunks_mut(size)
                .enumerate()
                .for_each(|(bi, cb)| self.gemm_one(bi, cb, ldc, false));
        } else {
            let columns = parallel && takes_columns(kernel, m, n);
            let parts = if parallel {
                depth_parts(kernel, m, k, n)
            } else {
                1
            };
            for (bi, cb) in c.chunks_mut(size).enumerate() {
                if columns {
                    let (strips, width) = self.column_strips(bi);
                    gather_strips(&strips, width, m, n, cb, ldc);
                } else if parts > 1 {
                    self.gemm_split_depth(bi, cb, ldc, parts);
                } else {
                    self.gemm_one(bi, cb, ldc, parallel);
                }
            }
        }
    }

    /// The schedule for a short, wide product (the MLP's `[256, 4096] · [4096, 4096]`),
    /// batch `bi`: all of A is packed once (it is small), and each parallel
    /// task owns a group of B panels — it packs them itself, right before
    /// using them on every A panel, and accumulates its columns of C in a
    /// local tile over the whole depth. B, the big operand, then crosses the
    /// memory bus once and stays in the cache of the core that packed it.
    /// Returns the strips (each `mp` rows of `width`) and their width.
    pub(super) fn column_strips(&self, bi: usize) -> (Vec<Panels<f32>>, usize) {
        let Product {
            packer,
            kernel,
            ref a,
            ref b,
            dims: Dims { m, k, n, .. },
        } = *self;
        let (mr, nr) = (kernel.mr(), kernel.nr());
        let mp = m.div_ceil(mr) * mr;
        let a_base = a.offset + bi * a.batch_stride;
        let b_base = b.offset + bi * b.batch_stride;
        let kcb = depth_block(kernel);
        let blocks: Vec<(usize, usize)> = (0..k)
            .step_by(kcb)
            .map(|p0| (p0, kcb.min(k - p0)))
            .collect();
        let a_packed: Vec<Panels<P::Elem>> = blocks
            .par_iter()
            .map(|&(p0, kc)| {
                let mut v = Panels::new(mp * packer.depth(kc));
                packer.pack_a(a.rows(a_base + p0 * a.col_stride, m, kc), mr, &mut v);
                v
            })
            .collect();
        let width = COLUMN_GROUP * nr;
        let locals: Vec<Panels<f32>> = (0..n.div_ceil(width))
            .into_par_iter()
            .map(|g| {
                let j = g * width;
                let cols = width.min(n - j);
                let panels = cols.div_ceil(nr);
                let mut local = Panels::<f32>::new(mp * width);
                let mut b_packed = Panels::new(width * packer.depth(kcb.min(k)));
                for (&(p0, kc), ap) in blocks.iter().zip(&a_packed) {
                    let kd = packer.depth(kc);
                    let bp = &mut b_packed[..panels * nr * kd];
                    let base = b_base + j * b.col_stride + p0 * b.row_stride;
                    packer.pack_b(b.columns(base, cols, kc), nr, bp);
                    if kernel.is_amx() {
                        // A panel in L1, the task's B panels streamed by one tile-configured call.
                        for ip in 0..mp / mr {
                            let apan = &ap[ip * mr * kd..(ip + 1) * mr * kd];
                            let acc = Accum {
                                c: &mut local[ip * mr * width..],
                                ldc: width,
                                overwrite: p0 == 0,
                                rows: m - ip * mr,
                            };
                            packer.run_row(kernel, kc, apan, bp, panels, acc);
                        }
                        continue;
                    }
                    for jp in 0..panels {
                        let bpan = &bp[jp * nr * kd..(jp + 1) * nr * kd];
                        for ip in 0..mp / mr {
                            let apan = &ap[ip * mr * kd..(ip + 1) * mr * kd];
                            let acc = Accum {
                                c: &mut local[ip * mr * width + jp * nr..],
                                ldc: width,
                                overwrite: p0 == 0,
                                rows: m - ip * mr,
                            };
                            packer.run(kernel, kc, apan, bpan, acc);
                        }
                    }
                }
                local
            })
            .collect();
        (locals, width)
    }

    /// Packs `block` (columns of B: `count` columns × `depth`) into `nr`-wide
    /// panels in `out` — in groups of [`B_PANELS_PER_TASK`] panels, in
    /// parallel for large products (with a short, wide A, packing the big B
    /// is most of the memory traffic).
    fn pack_b_block(&self, block: Lines<'_, TB>, parallel: bool, out: &mut [P::Elem]) {
        let (packer, nr) = (self.packer, self.kernel.nr());
        let pack_group = |(g, dst): (usize, &mut [P::Elem])| {
            let j = g * B_PANELS_PER_TASK * nr;
            let group = Lines {
                base: block.base + j * block.x_stride,
                count: (block.count - j).min(B_PANELS_PER_TASK * nr),
                ..block
            };
            packer.pack_b(group, nr, dst);
        };
        let group = B_PANELS_PER_TASK * nr * packer.depth(block.depth);
        if parallel {
            out.par_chunks_mut(group).enumerate().for_each(pack_group);
        } else {
            out.chunks_mut(group).enumerate().for_each(pack_group);
        }
    }

    /// Batch `bi` of a small, deep product (a weight's gradient: `[d, tokens]
    /// · [tokens, d]`) into `c` as `parts` products over consecutive equal
    /// ranges of the depth, run in parallel, each on the row-block schedule
    /// into its own buffer, then added in order. The row-block schedule alone
    /// would join its threads twice per depth block, for little work each
    /// time. `parts` depends on the shape only, not on the thread count.
    fn gemm_split_depth(&self, bi: usize, c: &mut [f32], ldc: usize, parts: usize) {
        let k = self.dims.k;
        let threads = rayon::current_num_threads().max(1);
        let range = |i: usize| (i * k / parts, (i + 1) * k / parts);
        let part = |i: usize, out: &mut [f32]| {
            let (p0, p1) = range(i);
            let sub = Product {
                packer: self.packer,
                kernel: self.kernel,
                a: Operand {
                    offset: self.a.offset + p0 * self.a.col_stride,
                    ..self.a
                },
                b: Operand {
                    offset: self.b.offset + p0 * self.b.row_stride,
                    ..self.b
                },
                dims: Dims {
                    k: p1 - p0,
                    ..self.dims
                },
            };
            sub.gemm_one(bi, out, ldc, parts < threads);
        };
        let mut rest: Vec<Panels<f32>> = (1..parts).map(|_| Panels::new(c.len())).collect();
        rayon::join(
            || part(0, c),
            || {
                rest.par_iter_mut()
                    .enumerate()
                    .for_each(|(i, buf)| part(i + 1, buf))
            },
        );
        c.par_chunks_mut(DEPTH_SUM_CHUNK)
            .enumerate()
            .for_each(|(ci, chunk)| {
                let at = ci * DEPTH_SUM_CHUNK;
                for buf in &rest {
                    for (x, &y) in chunk.iter_mut().zip(&buf[at..]) {
                        *x += y;
                    }
                }
            });
    }

    /// Batch `bi` on the row-block schedule (the BLIS loop order) into `c`:
    /// `mp` rows of stride `ldc`, both padded to whole tiles, so every kernel
    /// call runs on full panels; the first depth block sets C, later ones add
    /// to it.
    fn gemm_one(&self, bi: usize, c: &mut [f32], ldc: usize, parallel: bool) {
        let Product {
            packer,
            kernel,
            ref a,
            ref b,
            dims: Dims { m, k, n, .. },
        } = *self;
        let (mr, nr) = (kernel.mr(), kernel.nr());
        let mc_block = row_block(kernel, m, parallel);
        let (kcb, ncb) = if kernel.is_amx() {
            (KC_AMX, column_block(kernel))
        } else {
            let b = blocking(kernel);
            (b.kc_rows, b.nc)
        };
        let mut b_packed = Panels::new(ncb.min(n).div_ceil(nr) * nr * packer.depth(kcb.min(k)));
        let a_base = a.offset + bi * a.batch_stride;
        let b_base = b.offset + bi * b.batch_stride;
        for j0 in (0..n).step_by(ncb) {
            let nc = ncb.min(n - j0);
            let panels = nc.div_ceil(nr);
            for p0 in (0..k).step_by(kcb) {
                let kc = kcb.min(k - p0);
                let kd = packer.depth(kc);
                // B's lines run along j (columns), its depth along p (rows).
                let b_packed = &mut b_packed[..panels * nr * kd];
                let base = b_base + j0 * b.col_stride + p0 * b.row_stride;
                self.pack_b_block(b.columns(base, nc, kc), parallel, b_packed);
                let b_packed = &*b_packed;
                let block = |(ib, c_rows): (usize, &mut [f32])| {
                    let i0 = ib * mc_block;
                    // Whole tiles of rows; the A panels are zero-padded past row m.
                    let tiles = c_rows.len() / (mr * ldc);
                    let mut a_packed = Panels::new(tiles * mr * kd);
                    let base = a_base + i0 * a.row_stride + p0 * a.col_stride;
                    packer.pack_a(a.rows(base, mc_block.min(m - i0), kc), mr, &mut a_packed);
                    for ip in 0..tiles {
                        let ap = &a_packed[ip * mr * kd..(ip + 1) * mr * kd];
                        let acc = Accum {
                            c: &mut c_rows[ip * mr * ldc + j0..],
                            ldc,
                            overwrite: p0 == 0,
                            rows: m.saturating_sub(i0 + ip * mr),
                        };
                        packer.run_row(kernel, kc, ap, b_packed, panels, acc);
                    }
                };
                let rows = &mut c[..m.div_ceil(mr) * mr * ldc];
                if parallel {
                    rows.par_chunks_mut(mc_block * ldc)
                        .enumerate()
                        .for_each(block);
                } else {
                    rows.chunks_mut(mc_block * ldc).enumerate().for_each(block);
                }
            }
        }
    }
}
