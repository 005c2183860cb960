//! Batched GEMM `C[b] = A[b] · B[b]` over strided views, blocked and packed
//! (the BLIS loop order), with f32 accumulation.
//!
//! Loops: `jc` over [`NC`] columns → `pc` over [`KC`] of the depth (B packed
//! into `NR`-wide panels, converted to f32 while packing) → `ic` over row
//! blocks (A packed into `MR`-high panels; these blocks run in parallel above
//! [`PARALLEL_FLOPS`], [`PARALLEL_FLOPS_AMX`] for AMX) → micro-kernel on an `MR × NR` tile. bf16/f16 inputs
//! are widened exactly while packing, so every kernel accumulates f32 products
//! in f32. The f32 product is padded to whole tiles and starts on a cache
//! line ([`gemm_finished`]): every kernel call runs on full panels, an AMX tile
//! row is one cache line, and one pass finishes each row (a linear layer's
//! bias and activation) and writes it out, rounded once to bf16/f16 if asked.
//!
//! Kernel choice is [`Kernel::select`]: bf16 inputs take the AMX tile kernel
//! (A panels tile by tile, pair-interleaved B panels, depth padded to 32) or the
//! AVX512-BF16 `vdpbf16ps` kernel (pair-interleaved panels), everything else
//! f32 panels. Short, wide products (M ≤ [`COLUMN_MAX_M`]) run on the
//! column-parallel schedule of [`column_strips`]. A product with one depth
//! block (a weight gradient) is written to its output from per-block tiles
//! ([`gemm_direct`]), a short, wide one from its column strips
//! ([`gemm_out_in_cache`]). Products with at most 16 columns run as dot
//! products ([`narrow`]). B may be f32 with a bf16/f16 A
//! ([`BSide::Rounded`]): it is rounded to A's dtype as it is packed
//! ([`RoundB`]), so an f32 weight used under autocast is never copied.

mod kernels;
mod narrow;
mod panels;

use crate::convert::F32Convert;
use crate::isa::Isa;
use amp_dtype::bf16;
use panels::{Panels, Scratch};
use rayon::prelude::*;
use std::mem::MaybeUninit;

pub(crate) use kernels::Kernel;

/// Depth block: one `NR × KC` B panel (32 KiB for NR = 32) stays in L1.
pub(crate) const KC: usize = 256;
/// The depth block of the AMX kernel: its accumulator tiles are loaded and
/// stored once per block, so a deeper block than [`KC`] pays (measured, in one
/// process alternating 256 and 512: 3–27% faster on the bench's bf16 shapes),
/// and a 32-row A panel (32 KiB) still fits in L1.
pub(crate) const KC_AMX: usize = 512;

/// The depth block of `kernel`'s products.
fn depth_block(kernel: Kernel) -> usize {
    if kernel.is_amx() {
        KC_AMX
    } else {
        KC
    }
}

/// The depth block of the f32 and `vdpbf16ps` kernels on the row-block
/// schedule, where one B panel serves every A panel of a row block: a
/// 16 KiB panel leaves L1 room for the A panels streaming past it (measured,
/// one process alternating 256 and 128: f32 2048³ 225 → 242, 2048×1024×2048
/// 177 → 210 GFLOP/s; the column schedule keeps [`KC`], where 128 was slower).
const KC_ROWS: usize = 128;

/// The column block of `kernel`'s products: the packed B block stays the
/// size of [`NC`] columns of a [`KC`]-deep block (a multiple of every `NR`).
fn column_block(kernel: Kernel) -> usize {
    NC * KC / depth_block(kernel)
}

/// Column block: the packed B block (`KC × NC` f32, 2 MiB) is shared by all threads.
pub(crate) const NC: usize = 2048;
/// Largest row block: one packed A block (`MC × KC` f32) stays in L2.
pub(crate) const MC: usize = 192;
/// Tiles per row block of the f32 kernel's parallel products ([`row_block`]).
const F32_PARALLEL_TILES: usize = 4;
/// B panels packed by one parallel task.
const B_PANELS_PER_TASK: usize = 4;
/// Products of at least this many flops (2·B·M·N·K) run on the rayon pool.
pub(crate) const PARALLEL_FLOPS: usize = 1 << 21;
/// The same threshold for the AMX kernel, which does such a product about ten
/// times faster: below it, waking a second thread costs more than it saves.
pub(crate) const PARALLEL_FLOPS_AMX: usize = 1 << 24;

/// The parallel threshold for `kernel`'s products.
fn parallel_flops(kernel: Kernel) -> usize {
    if kernel.is_amx() {
        PARALLEL_FLOPS_AMX
    } else {
        PARALLEL_FLOPS
    }
}

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

/// The B operand of a product with A of type `T`: of type `T` too, or f32
/// rounded to `T` as it is packed (an f32 weight under autocast, [`RoundB`]).
#[derive(Debug, Clone, Copy)]
pub(crate) enum BSide<'a, T> {
    /// B has A's element type.
    Same(Operand<'a, T>),
    /// B is f32, read as if cast to `T` first.
    Rounded(Operand<'a, f32>),
}

impl<'a, T> From<Operand<'a, T>> for BSide<'a, T> {
    fn from(b: Operand<'a, T>) -> BSide<'a, T> {
        BSide::Same(b)
    }
}

/// Binds `$p` (the packer), `$a`, `$b` (the operands it reads) for `$kernel`
/// and evaluates `$body`: bf16 panels for the AMX and `vdpbf16ps` kernels when
/// both sides are (or are rounded to) bf16, f32 panels otherwise.
macro_rules! with_packer {
    ($isa:expr, $kernel:expr, $a:expr, $b:expr, |$p:ident, $pa:ident, $pb:ident| $body:expr) => {{
        let (isa, kernel, a, b) = ($isa, $kernel, $a, $b);
        let bf16_unit = kernel.packs_bf16_pairs() || kernel.is_amx();
        let a16 = F32Convert::as_bf16(a.data)
            .filter(|_| bf16_unit)
            .map(|d| a.with_data(d));
        match b {
            BSide::Same(b) => match (a16, F32Convert::as_bf16(b.data)) {
                (Some($pa), Some(d)) => {
                    let $pb = b.with_data(d);
                    if kernel.is_amx() {
                        let $p = &AmxPacker;
                        $body
                    } else {
                        let $p = &PairPacker;
                        $body
                    }
                }
                _ => {
                    let ($p, $pa, $pb) = (&F32Packer { isa }, *a, b);
                    $body
                }
            },
            BSide::Rounded($pb) => match a16 {
                Some($pa) if kernel.is_amx() => {
                    let $p = &RoundB {
                        isa,
                        inner: AmxPacker,
                    };
                    $body
                }
                Some($pa) => {
                    let $p = &RoundB {
                        isa,
                        inner: PairPacker,
                    };
                    $body
                }
                None => {
                    let ($p, $pa) = (
                        &RoundB {
                            isa,
                            inner: F32Packer { isa },
                        },
                        *a,
                    );
                    $body
                }
            },
        }
    }};
}

/// `[batch, m, n]` f32 result of `a [batch, m, k] · b [batch, k, n]`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm<'b, T: F32Convert>(
    isa: Isa,
    a: Operand<'_, T>,
    b: impl Into<BSide<'b, T>>,
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
) -> Vec<f32> {
    gemm_finished(isa, a, b, batch, m, k, n, &|_, _| {})
}

/// `a · b` with `finish` applied in f32 to every output row segment, then
/// written as `D` (rounded once for bf16/f16). A product that fits
/// [`gemm_out_in_cache`] is finished there; every other one accumulates in
/// an f32 product padded to whole tiles, on cache lines (the AMX tile loads
/// and stores of C then touch one line per row, and no tile is an edge
/// case), which one pass finishes and writes out.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_finished<'b, T: F32Convert, D: F32Convert + Send + Sync>(
    isa: Isa,
    a: Operand<'_, T>,
    b: impl Into<BSide<'b, T>>,
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
    finish: &Finish<'_>,
) -> Vec<D> {
    let b = b.into();
    if rayon::current_thread_index().is_none() && 2 * batch * m * n * k >= PARALLEL_FLOPS {
        // Called from outside the pool (the usual case: the user's thread), each
        // parallel phase of the product would be injected into the pool and
        // waited for (about 8 µs each, measured with `rayon::join` of empty work);
        // run the whole product on a pool thread instead, where the phases are
        // ordinary joins (one process alternating: f32 256³ +7%, 512³ even).
        let mut out = None;
        rayon::scope(|_| out = Some(gemm_finished(isa, a, b, batch, m, k, n, finish)));
        return out.expect("the scope ran the product");
    }
    if let Some(out) = gemm_out_in_cache(isa, &a, b, batch, m, k, n, finish) {
        return out;
    }
    if let Some(mut c) = narrow::gemm_narrow(isa, &a, b, batch, m, k, n) {
        return write_rows(isa, &mut c, batch, m, m, n, n, finish);
    }
    if batch * m * n == 0 || k == 0 {
        let mut c = vec![0f32; batch * m * n];
        return write_rows(isa, &mut c, batch, m, m, n, n, finish);
    }
    let kernel = Kernel::select(isa, T::DTYPE);
    let (mp, ldc) = (
        m.div_ceil(kernel.mr()) * kernel.mr(),
        padded_stride(n, kernel.nr()),
    );
    let mut c = Panels::<f32>::new(batch * mp * ldc);
    with_packer!(isa, kernel, &a, b, |packer, a, b| {
        run_batches(packer, kernel, &a, &b, batch, m, k, n, &mut c, ldc)
    });
    write_rows(isa, &mut c, batch, m, mp, n, ldc, finish)
}

/// `finish(col0, vals)`, then `vals` written to `dst` as `D`: copied when `D`
/// is f32, else rounded once through `rounded` (at least `vals.len()` long).
#[allow(clippy::too_many_arguments)]
fn finish_into<D: F32Convert>(
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
/// kernel with KC_ROWS, 2048³: 228 → 242 GFLOP/s).
fn padded_stride(n: usize, nr: usize) -> usize {
    let ldc = n.div_ceil(nr) * nr;
    if ldc.is_multiple_of(256) {
        ldc + 16
    } else {
        ldc
    }
}

/// The `[batch, m, n]` output of a product `c` whose batches hold `mp` rows
/// of stride `ldc` (the first `m` rows, `n` columns of each are the product):
/// each row `finish`ed, then written as `D`, rows in parallel when large.
#[allow(clippy::too_many_arguments)]
fn write_rows<D: F32Convert + Send + Sync>(
    isa: Isa,
    c: &mut [f32],
    batch: usize,
    m: usize,
    mp: usize,
    n: usize,
    ldc: usize,
    finish: &Finish<'_>,
) -> Vec<D> {
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

/// The finishing step applied in f32 to each finished output row segment
/// before it is rounded: `finish(first_column, values)`.
pub(crate) type Finish<'f> = dyn Fn(usize, &mut [f32]) + Sync + 'f;

/// A single product rounded to `D` while its f32 values are still in cache,
/// with `finish` applied first: one depth block on the row-block schedule
/// ([`gemm_direct`]), or a short, wide one from its column strips
/// ([`column_strips`]). `None` when neither applies (a batch, an f32 product of
/// f32 inputs, a deep product on the row-block schedule): the caller then
/// takes [`gemm`]. An f32 output of bf16/f16 inputs (an f32 weight's gradient
/// under autocast) qualifies too: [`gemm`] would write an f32 C, then read it back.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_out_in_cache<'b, T: F32Convert, D: F32Convert + Send + Sync>(
    isa: Isa,
    a: &Operand<'_, T>,
    b: impl Into<BSide<'b, T>>,
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
    finish: &Finish<'_>,
) -> Option<Vec<D>> {
    let kernel = Kernel::select(isa, T::DTYPE);
    let narrow = D::DTYPE != amp_dtype::DType::F32 || T::DTYPE != amp_dtype::DType::F32;
    if !(batch == 1 && narrow && k > 0 && m * n > 0) {
        return None;
    }
    let parallel = 2 * m * n * k >= parallel_flops(kernel);
    if k <= depth_block(kernel) {
        Some(with_packer!(isa, kernel, a, b.into(), |packer, a, b| {
            gemm_direct(isa, packer, kernel, &a, &b, m, k, n, finish)
        }))
    } else if parallel && takes_columns(kernel, m, n) {
        Some(with_packer!(isa, kernel, a, b.into(), |packer, a, b| {
            let (strips, width) = column_strips(packer, kernel, &a, &b, 0, m, k, n);
            round_strips(isa, &strips, width, m, n, finish)
        }))
    } else {
        None
    }
}

impl<'a, T> Operand<'a, T> {
    /// The same strides over another slice (the bf16 view of a generic slice).
    fn with_data<U>(&self, data: &'a [U]) -> Operand<'a, U> {
        Operand {
            data,
            offset: self.offset,
            batch_stride: self.batch_stride,
            row_stride: self.row_stride,
            col_stride: self.col_stride,
        }
    }
}

/// The row-block schedule for a depth of at most [`KC`], writing `out` directly:
/// per column block, B is packed once; each row block packs its A, runs every
/// tile into a padded f32 tile block (so edge tiles need no scratch), and
/// rounds its rows into `out`.
#[allow(clippy::too_many_arguments)]
fn gemm_direct<TA: Sync, TB: Sync, P: Packer<TA, TB>, D: F32Convert + Send + Sync>(
    isa: Isa,
    packer: &P,
    kernel: Kernel,
    a: &Operand<'_, TA>,
    b: &Operand<'_, TB>,
    m: usize,
    k: usize,
    n: usize,
    finish: &Finish<'_>,
) -> Vec<D> {
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
        pack_b_block(
            packer,
            kernel,
            b,
            b.offset + j0 * b.col_stride,
            nc,
            k,
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
                a.data,
                a.offset + i0 * a.row_stride,
                a.row_stride,
                a.col_stride,
                mc,
                k,
                mr,
                &mut a_packed,
            );
            // Padded to whole tiles: every kernel call is a full tile.
            for ip in 0..tiles {
                let ap = &a_packed[ip * mr * kd..(ip + 1) * mr * kd];
                let t = &mut tile[ip * mr * ldt..];
                packer.run_row(kernel, k, ap, b_packed, panels, t, ldt, true);
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
#[allow(clippy::too_many_arguments)]
fn run_batches<TA: Sync, TB: Sync, P: Packer<TA, TB>>(
    packer: &P,
    kernel: Kernel,
    a: &Operand<'_, TA>,
    b: &Operand<'_, TB>,
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
    c: &mut [f32],
    ldc: usize,
) {
    let parallel = 2 * batch * m * n * k >= parallel_flops(kernel);
    let threads = rayon::current_num_threads().max(1);
    let size = c.len() / batch;
    if parallel && batch >= threads {
        c.par_chunks_mut(size)
            .enumerate()
            .for_each(|(bi, cb)| gemm_one(packer, kernel, a, b, bi, m, k, n, cb, ldc, false));
    } else {
        let columns = parallel && takes_columns(kernel, m, n);
        for (bi, cb) in c.chunks_mut(size).enumerate() {
            if columns {
                let (strips, width) = column_strips(packer, kernel, a, b, bi, m, k, n);
                gather_strips(&strips, width, m, n, cb, ldc);
            } else {
                gemm_one(packer, kernel, a, b, bi, m, k, n, cb, ldc, parallel);
            }
        }
    }
}

/// B panels per task of the column-parallel schedule.
const COLUMN_GROUP: usize = 4;
/// Largest M for the column-parallel schedule (all of A is packed up front).
const COLUMN_MAX_M: usize = 1024;
/// The same bound for the f32 kernel, whose packed A is twice the size: past
/// it the row-block schedule is faster (measured, one process alternating the
/// two: f32 1024³ +12%, 512³ even).
const COLUMN_MAX_M_F32: usize = 512;

/// The schedule for a short, wide product (the MLP's `[256, 4096] · [4096, 4096]`):
/// all of A is packed once (it is small), and each parallel task owns a group
/// of B panels — it packs them itself, right before using them on every A
/// panel, and accumulates its columns of C in a local tile over the whole
/// depth. B, the big operand, then crosses the memory bus once and stays in
/// the cache of the core that packed it.
#[allow(clippy::too_many_arguments)]
fn column_strips<TA: Sync, TB: Sync, P: Packer<TA, TB>>(
    packer: &P,
    kernel: Kernel,
    a: &Operand<'_, TA>,
    b: &Operand<'_, TB>,
    bi: usize,
    m: usize,
    k: usize,
    n: usize,
) -> (Vec<Panels<f32>>, usize) {
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
            packer.pack_a(
                a.data,
                a_base + p0 * a.col_stride,
                a.row_stride,
                a.col_stride,
                m,
                kc,
                mr,
                &mut v,
            );
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
                packer.pack_b(
                    b.data,
                    b_base + j * b.col_stride + p0 * b.row_stride,
                    b.col_stride,
                    b.row_stride,
                    cols,
                    kc,
                    nr,
                    bp,
                );
                if kernel.is_amx() {
                    // A panel in L1, the task's B panels streamed by one tile-configured call.
                    for ip in 0..mp / mr {
                        let apan = &ap[ip * mr * kd..(ip + 1) * mr * kd];
                        packer.run_row(
                            kernel,
                            kc,
                            apan,
                            bp,
                            panels,
                            &mut local[ip * mr * width..],
                            width,
                            p0 == 0,
                        );
                    }
                    continue;
                }
                for jp in 0..panels {
                    let bpan = &bp[jp * nr * kd..(jp + 1) * nr * kd];
                    for ip in 0..mp / mr {
                        let apan = &ap[ip * mr * kd..(ip + 1) * mr * kd];
                        packer.run(
                            kernel,
                            kc,
                            apan,
                            bpan,
                            &mut local[ip * mr * width + jp * nr..],
                            width,
                            p0 == 0,
                        );
                    }
                }
            }
            local
        })
        .collect();
    (locals, width)
}

/// Whether a single product of this shape runs on the column-parallel schedule
/// (when it is large enough to run in parallel at all).
fn takes_columns(kernel: Kernel, m: usize, n: usize) -> bool {
    let threads = rayon::current_num_threads().max(1);
    let max_m = if kernel.is_f32() {
        COLUMN_MAX_M_F32
    } else {
        COLUMN_MAX_M
    };
    n.div_ceil(COLUMN_GROUP * kernel.nr()) >= 2 * threads && m <= max_m
}

/// Copies the column strips of [`column_strips`] into the f32 product `c`
/// (row stride `ldc`), rows in parallel.
fn gather_strips(
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

/// The column strips of [`column_strips`] rounded to a new `D` product, each
/// row segment `finish`ed first: no f32 product zeroed, gathered and read back.
fn round_strips<D: F32Convert + Send + Sync>(
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

/// How panels are packed and multiplied: f32 panels for the f32 kernels, bf16
/// pair-interleaved panels for `vdpbf16ps` and AMX. `TA` and `TB` are the
/// element types A and B are read from (the same but for [`RoundB`]).
trait Packer<TA, TB = TA>: Sync {
    /// Element of the packed panels.
    type Elem: Scratch;
    /// Stored depth of one panel line for a depth block of `kc`.
    fn depth(&self, kc: usize) -> usize;
    /// Packs `count` lines (columns of B) of `depth` into panels of `width`
    /// lines (zero-padded).
    #[allow(clippy::too_many_arguments)]
    fn pack_b(
        &self,
        data: &[TB],
        base: usize,
        x_stride: usize,
        p_stride: usize,
        count: usize,
        depth: usize,
        width: usize,
        out: &mut [Self::Elem],
    );
    /// Packs B like [`Packer::pack_b`] from f32 values rounded to this
    /// packer's element type, when it has a fused path for that ([`RoundB`]);
    /// `false` (nothing written) otherwise.
    #[allow(clippy::too_many_arguments)]
    fn pack_b_rounding(
        &self,
        _data: &[f32],
        _base: usize,
        _x_stride: usize,
        _p_stride: usize,
        _count: usize,
        _depth: usize,
        _width: usize,
        _out: &mut [Self::Elem],
    ) -> bool {
        false
    }
    /// Packs the A side (lines are rows of the product).
    #[allow(clippy::too_many_arguments)]
    fn pack_a(
        &self,
        data: &[TA],
        base: usize,
        x_stride: usize,
        p_stride: usize,
        count: usize,
        depth: usize,
        width: usize,
        out: &mut [Self::Elem],
    );
    /// Runs the kernel on one pair of panels of depth block `kc`, adding into
    /// C's tile — or, with `overwrite`, setting it without reading it.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        kernel: Kernel,
        kc: usize,
        a: &[Self::Elem],
        b: &[Self::Elem],
        c: &mut [f32],
        ldc: usize,
        overwrite: bool,
    );
    /// Runs the kernel on one A panel against `panels` consecutive full B
    /// panels, adding into `panels·nr` columns of `mr` rows of `c` — or, with
    /// `overwrite`, setting them (their prior contents need not be zero).
    #[allow(clippy::too_many_arguments)]
    fn run_row(
        &self,
        kernel: Kernel,
        kc: usize,
        a: &[Self::Elem],
        b: &[Self::Elem],
        panels: usize,
        c: &mut [f32],
        ldc: usize,
        overwrite: bool,
    ) {
        let (nr, kd) = (kernel.nr(), self.depth(kc));
        for jp in 0..panels {
            self.run(
                kernel,
                kc,
                a,
                &b[jp * nr * kd..(jp + 1) * nr * kd],
                &mut c[jp * nr..],
                ldc,
                overwrite,
            );
        }
    }
}

/// f32 panels, widened while packing.
struct F32Packer {
    isa: Isa,
}

impl<T: F32Convert> Packer<T> for F32Packer {
    type Elem = f32;
    fn depth(&self, kc: usize) -> usize {
        kc
    }
    fn pack_b(
        &self,
        data: &[T],
        base: usize,
        x_stride: usize,
        p_stride: usize,
        count: usize,
        depth: usize,
        width: usize,
        out: &mut [f32],
    ) {
        pack(
            self.isa, data, base, x_stride, p_stride, count, depth, width, out,
        )
    }
    fn pack_a(
        &self,
        data: &[T],
        base: usize,
        x_stride: usize,
        p_stride: usize,
        count: usize,
        depth: usize,
        width: usize,
        out: &mut [f32],
    ) {
        self.pack_b(data, base, x_stride, p_stride, count, depth, width, out)
    }
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        kernel: Kernel,
        kc: usize,
        a: &[f32],
        b: &[f32],
        c: &mut [f32],
        ldc: usize,
        overwrite: bool,
    ) {
        kernel.run(kc, a, b, c, ldc, overwrite)
    }
}

/// bf16 panels `[pair][line][2]`: two consecutive depth steps side by side.
struct PairPacker;

impl Packer<bf16> for PairPacker {
    type Elem = u16;
    fn depth(&self, kc: usize) -> usize {
        kc.div_ceil(2) * 2
    }
    fn pack_b(
        &self,
        data: &[bf16],
        base: usize,
        x_stride: usize,
        p_stride: usize,
        count: usize,
        depth: usize,
        width: usize,
        out: &mut [u16],
    ) {
        let stored = depth.div_ceil(2) * 2;
        pack_pairs(
            data, base, x_stride, p_stride, count, depth, width, stored, out,
        )
    }
    fn pack_b_rounding(
        &self,
        data: &[f32],
        base: usize,
        x_stride: usize,
        p_stride: usize,
        count: usize,
        depth: usize,
        width: usize,
        out: &mut [u16],
    ) -> bool {
        let stored = depth.div_ceil(2) * 2;
        pack_pairs_rounding(
            data, base, x_stride, p_stride, count, depth, width, stored, out,
        );
        true
    }
    fn pack_a(
        &self,
        data: &[bf16],
        base: usize,
        x_stride: usize,
        p_stride: usize,
        count: usize,
        depth: usize,
        width: usize,
        out: &mut [u16],
    ) {
        self.pack_b(data, base, x_stride, p_stride, count, depth, width, out)
    }
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        kernel: Kernel,
        kc: usize,
        a: &[u16],
        b: &[u16],
        c: &mut [f32],
        ldc: usize,
        overwrite: bool,
    ) {
        kernel.run_bf16(kc.div_ceil(2), a, b, c, ldc, overwrite)
    }
}

/// B read from f32 and rounded to the A side's dtype `T` (nearest even) as it
/// is packed: the product equals the product with B cast to `T` first, without
/// the cast copy (an f32 weight used under autocast). Each packed group is
/// first converted into a small buffer that keeps the source's contiguous
/// direction (SIMD conversion), then packed by `inner`.
struct RoundB<P> {
    isa: Isa,
    inner: P,
}

impl<T: F32Convert, P: Packer<T>> Packer<T, f32> for RoundB<P> {
    type Elem = P::Elem;
    fn depth(&self, kc: usize) -> usize {
        self.inner.depth(kc)
    }
    fn pack_b(
        &self,
        data: &[f32],
        base: usize,
        x_stride: usize,
        p_stride: usize,
        count: usize,
        depth: usize,
        width: usize,
        out: &mut [Self::Elem],
    ) {
        let inner = &self.inner;
        if inner.pack_b_rounding(data, base, x_stride, p_stride, count, depth, width, out) {
            return;
        }
        let mut stage = vec![T::from_f32(0.0); count * depth];
        if x_stride == 1 && p_stride != 1 {
            // Lines side by side along x (a row-major B): stage [depth][count].
            for p in 0..depth {
                let s = base + p * p_stride;
                T::store(
                    self.isa,
                    &data[s..s + count],
                    &mut stage[p * count..(p + 1) * count],
                );
            }
            self.inner
                .pack_b(&stage, 0, 1, count, count, depth, width, out)
        } else {
            // Each line along the depth (a transposed B, a linear weight): stage [count][depth].
            for (r, line) in stage.chunks_mut(depth.max(1)).take(count).enumerate() {
                let s = base + r * x_stride;
                if p_stride == 1 {
                    T::store(self.isa, &data[s..s + depth], line);
                } else {
                    for (p, v) in line.iter_mut().enumerate() {
                        *v = T::from_f32(data[s + p * p_stride]);
                    }
                }
            }
            self.inner
                .pack_b(&stage, 0, depth, 1, count, depth, width, out)
        }
    }
    fn pack_a(
        &self,
        data: &[T],
        base: usize,
        x_stride: usize,
        p_stride: usize,
        count: usize,
        depth: usize,
        width: usize,
        out: &mut [Self::Elem],
    ) {
        self.inner
            .pack_a(data, base, x_stride, p_stride, count, depth, width, out)
    }
    fn run(
        &self,
        kernel: Kernel,
        kc: usize,
        a: &[Self::Elem],
        b: &[Self::Elem],
        c: &mut [f32],
        ldc: usize,
        overwrite: bool,
    ) {
        self.inner.run(kernel, kc, a, b, c, ldc, overwrite)
    }
    fn run_row(
        &self,
        kernel: Kernel,
        kc: usize,
        a: &[Self::Elem],
        b: &[Self::Elem],
        panels: usize,
        c: &mut [f32],
        ldc: usize,
        overwrite: bool,
    ) {
        self.inner
            .run_row(kernel, kc, a, b, panels, c, ldc, overwrite)
    }
}

/// bf16 panels for the AMX kernel, depth padded to 32: A as the 16 × 32 bf16
/// tiles `tileloadd` reads, one after another (`[depth / 32][line][32]`, each
/// tile row one cache line), B pair-interleaved as for
/// `vdpbf16ps` (16 pairs × 16 columns per tile).
struct AmxPacker;

impl Packer<bf16> for AmxPacker {
    type Elem = u16;
    fn depth(&self, kc: usize) -> usize {
        kc.div_ceil(32) * 32
    }
    fn pack_b(
        &self,
        data: &[bf16],
        base: usize,
        x_stride: usize,
        p_stride: usize,
        count: usize,
        depth: usize,
        width: usize,
        out: &mut [u16],
    ) {
        let stored = <Self as Packer<bf16>>::depth(self, depth);
        pack_pairs(
            data, base, x_stride, p_stride, count, depth, width, stored, out,
        )
    }
    fn pack_b_rounding(
        &self,
        data: &[f32],
        base: usize,
        x_stride: usize,
        p_stride: usize,
        count: usize,
        depth: usize,
        width: usize,
        out: &mut [u16],
    ) -> bool {
        let stored = <Self as Packer<bf16>>::depth(self, depth);
        pack_pairs_rounding(
            data, base, x_stride, p_stride, count, depth, width, stored, out,
        );
        true
    }
    fn pack_a(
        &self,
        data: &[bf16],
        base: usize,
        x_stride: usize,
        p_stride: usize,
        count: usize,
        depth: usize,
        width: usize,
        out: &mut [u16],
    ) {
        let stored = <Self as Packer<bf16>>::depth(self, depth);
        // Element (r, p) of a panel: step p / 32 holds its 32 rows of 32 values.
        let at = |r: usize, p: usize| ((p / 32) * width + r) * 32 + p % 32;
        for q in 0..count.div_ceil(width) {
            let panel = &mut out[q * width * stored..(q + 1) * width * stored];
            let lines = width.min(count - q * width);
            if lines < width || depth < stored {
                panel.fill(0);
            }
            if p_stride == 1 {
                for r in 0..lines {
                    let s = base + (q * width + r) * x_stride;
                    let runs = data[s..s + depth].chunks_exact(32);
                    let (rest, whole) = (runs.remainder(), depth / 32);
                    for (t, run) in runs.enumerate() {
                        // Fixed-size copies: one vector move each, not a `memcpy` call
                        // per 64 bytes (measured: 14% of a 2048³ product's time).
                        let run: &[bf16; 32] = run.try_into().expect("32 values");
                        let dst: &mut [u16; 32] = (&mut panel[at(r, 32 * t)..][..32])
                            .try_into()
                            .expect("32 values");
                        for (d, v) in dst.iter_mut().zip(run) {
                            *d = v.to_bits();
                        }
                    }
                    if !rest.is_empty() {
                        let dst = &mut panel[at(r, 32 * whole)..][..rest.len()];
                        for (d, v) in dst.iter_mut().zip(rest) {
                            *d = v.to_bits();
                        }
                    }
                }
            } else {
                // Strided along the depth (a transposed A): 32 × 32 blocks
                // transposed in registers where whole, else read along the lines.
                let s0 = base + q * width * x_stride;
                let mut p0 = 0;
                #[cfg(target_arch = "x86_64")]
                if x_stride == 1 && lines == 32 && std::arch::is_x86_feature_detected!("avx512bw") {
                    while p0 + 32 <= depth {
                        let s = s0 + p0 * p_stride;
                        assert!(s + 31 * p_stride + 32 <= data.len());
                        let dst = &mut panel[at(0, p0)..at(0, p0) + 1024];
                        // SAFETY: AVX-512F/BW detected above; 32 rows of 32 values
                        // at stride p_stride from s lie inside `data` (checked); 1024 written.
                        unsafe {
                            x86::transpose_32x32(
                                data.as_ptr().add(s) as *const u16,
                                p_stride,
                                dst.as_mut_ptr(),
                            )
                        };
                        p0 += 32;
                    }
                }
                for p in p0..depth {
                    let s = s0 + p * p_stride;
                    for r in 0..lines {
                        panel[at(r, p)] = data[s + r * x_stride].to_bits();
                    }
                }
            }
        }
    }
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        kernel: Kernel,
        kc: usize,
        a: &[u16],
        b: &[u16],
        c: &mut [f32],
        ldc: usize,
        overwrite: bool,
    ) {
        kernel.run_amx_row(kc.div_ceil(32) * 32, a, b, 1, c, ldc, overwrite)
    }
    fn run_row(
        &self,
        kernel: Kernel,
        kc: usize,
        a: &[u16],
        b: &[u16],
        panels: usize,
        c: &mut [f32],
        ldc: usize,
        overwrite: bool,
    ) {
        kernel.run_amx_row(kc.div_ceil(32) * 32, a, b, panels, c, ldc, overwrite)
    }
}

/// Packs `count` lines of `depth` bf16 values into pair-interleaved panels of
/// `width` lines, `[panel][p / 2][width][p % 2]`, zero-padding the depth to
/// `stored` (even) and the last panel to `width` lines.
#[allow(clippy::too_many_arguments)]
fn pack_pairs(
    data: &[bf16],
    base: usize,
    x_stride: usize,
    p_stride: usize,
    count: usize,
    depth: usize,
    width: usize,
    stored: usize,
    out: &mut [u16],
) {
    #[cfg(target_arch = "x86_64")]
    if row_pairs(
        data,
        base,
        x_stride,
        p_stride,
        count,
        depth,
        width,
        stored,
        out,
        |r0, r1, dst| {
            // SAFETY: AVX-512F/BW detected by `row_pairs`; 32 values from each row, 64 written.
            unsafe {
                x86::interleave_rows(
                    r0.as_ptr() as *const u16,
                    r1.as_ptr() as *const u16,
                    dst.as_mut_ptr(),
                )
            }
        },
    ) {
        return;
    }
    for q in 0..count.div_ceil(width) {
        let panel = &mut out[q * width * stored..(q + 1) * width * stored];
        let lines = width.min(count - q * width);
        if lines < width || depth < stored {
            panel.fill(0);
        }
        #[cfg(target_arch = "x86_64")]
        let simd = width == 32 && lines == 32 && std::arch::is_x86_feature_detected!("avx512bw");
        #[cfg(not(target_arch = "x86_64"))]
        let simd = false;
        if p_stride == 1 {
            // Each line is contiguous along the depth (a transposed B, e.g. a linear weight).
            let mut pp0 = 0;
            #[cfg(target_arch = "x86_64")]
            if simd && x_stride * 64 < i32::MAX as usize {
                let s = base + q * width * x_stride;
                // Whole pairs only; the line ends are checked against the slice first.
                let pairs = depth / 2;
                if pairs > 0 {
                    let last = s + 31 * x_stride + 2 * pairs;
                    assert!(last <= data.len());
                    for pp in 0..pairs {
                        // SAFETY: AVX-512F/BW detected above; the 32 lines read 4 bytes at
                        // s + r·x_stride + 2·pp, inside `data` (checked), and write 64 values.
                        unsafe {
                            x86::gather_pairs(
                                data.as_ptr().add(s + 2 * pp) as *const u16,
                                (x_stride * 2) as i32,
                                panel[pp * 64..pp * 64 + 64].as_mut_ptr(),
                            )
                        };
                    }
                    pp0 = pairs;
                }
            }
            for r in 0..lines {
                let s = base + (q * width + r) * x_stride;
                let line = &data[s..s + depth];
                for (pp, pair) in line.chunks(2).enumerate().skip(pp0) {
                    let at = pp * width * 2 + r * 2;
                    panel[at] = pair[0].to_bits();
                    if let Some(v) = pair.get(1) {
                        panel[at + 1] = v.to_bits();
                    }
                }
            }
        } else {
            let mut p0 = 0;
            #[cfg(target_arch = "x86_64")]
            if simd && x_stride == 1 {
                let s = base + q * width;
                while p0 + 2 <= depth {
                    let (r0, r1) = (s + p0 * p_stride, s + (p0 + 1) * p_stride);
                    let (l0, l1) = (&data[r0..r0 + 32], &data[r1..r1 + 32]);
                    let out = &mut panel[(p0 / 2) * 64..(p0 / 2) * 64 + 64];
                    // SAFETY: AVX-512F/BW detected above; 32 values from each row, 64 written.
                    unsafe {
                        x86::interleave_rows(
                            l0.as_ptr() as *const u16,
                            l1.as_ptr() as *const u16,
                            out.as_mut_ptr(),
                        )
                    };
                    p0 += 2;
                }
            }
            for p in p0..depth {
                let s = base + q * width * x_stride + p * p_stride;
                let row = &mut panel[(p / 2) * width * 2..(p / 2 + 1) * width * 2];
                let e = p % 2;
                if x_stride == 1 {
                    for (r, v) in data[s..s + lines].iter().enumerate() {
                        row[r * 2 + e] = v.to_bits();
                    }
                } else {
                    for r in 0..lines {
                        row[r * 2 + e] = data[s + r * x_stride].to_bits();
                    }
                }
            }
        }
    }
}

/// [`pack_pairs`] from f32 values, each rounded to bf16 (nearest even, as
/// `f32_to_bf16_bits`) as it is packed: the panels equal those packed from the
/// cast values. Full 32-line panels of a row-major B (lines side by side) or
/// of a transposed B (each line along the depth) take AVX-512 paths.
#[allow(clippy::too_many_arguments)]
fn pack_pairs_rounding(
    data: &[f32],
    base: usize,
    x_stride: usize,
    p_stride: usize,
    count: usize,
    depth: usize,
    width: usize,
    stored: usize,
    out: &mut [u16],
) {
    use crate::convert::f32_to_bf16_bits as round;
    #[cfg(target_arch = "x86_64")]
    if row_pairs(
        data,
        base,
        x_stride,
        p_stride,
        count,
        depth,
        width,
        stored,
        out,
        |r0, r1, dst| {
            // SAFETY: AVX-512F/BW detected by `row_pairs`; 32 values from each row, 64 written.
            unsafe { x86::round_interleave_rows(r0.as_ptr(), r1.as_ptr(), dst.as_mut_ptr()) }
        },
    ) {
        return;
    }
    for q in 0..count.div_ceil(width) {
        let panel = &mut out[q * width * stored..(q + 1) * width * stored];
        let lines = width.min(count - q * width);
        if lines < width || depth < stored {
            panel.fill(0);
        }
        let first = base + q * width * x_stride;
        #[cfg(target_arch = "x86_64")]
        let simd = width == 32 && lines == 32 && std::arch::is_x86_feature_detected!("avx512bw");
        #[cfg(not(target_arch = "x86_64"))]
        let simd = false;
        // Depth steps (p) and whole 32-step chunks (lines along the depth) already packed.
        let mut p0 = 0;
        #[cfg(target_arch = "x86_64")]
        if simd && x_stride == 1 {
            while p0 + 2 <= depth {
                let (r0, r1) = (first + p0 * p_stride, first + (p0 + 1) * p_stride);
                let (l0, l1) = (&data[r0..r0 + 32], &data[r1..r1 + 32]);
                let dst = &mut panel[(p0 / 2) * 64..(p0 / 2) * 64 + 64];
                // SAFETY: AVX-512F/BW detected above; 32 values from each row, 64 written.
                unsafe { x86::round_interleave_rows(l0.as_ptr(), l1.as_ptr(), dst.as_mut_ptr()) };
                p0 += 2;
            }
        } else if simd && p_stride == 1 {
            while p0 + 32 <= depth {
                // 32 lines × 32 steps: the last line's 32 values end inside `data`.
                let s = first + p0;
                let last = s + 31 * x_stride + 32;
                assert!(last <= data.len());
                let dst = &mut panel[(p0 / 2) * 64..(p0 / 2 + 16) * 64];
                // SAFETY: AVX-512F/BW detected above; 32 lines of 32 values from `s`
                // at `x_stride` (the last ends inside `data`, checked); 1024 written.
                unsafe {
                    x86::round_transpose_pairs(data[s..].as_ptr(), x_stride, dst.as_mut_ptr())
                };
                p0 += 32;
            }
        }
        for p in p0..depth {
            let row = &mut panel[(p / 2) * width * 2..(p / 2 + 1) * width * 2];
            for r in 0..lines {
                row[r * 2 + p % 2] = round(data[first + r * x_stride + p * p_stride]);
            }
        }
    }
}

/// Pair-interleaved panels of a row-major B in whole 32-line panels, with
/// AVX-512BW: each pair of rows is read once, left to right, across every
/// panel (a row-major walk the prefetchers follow); `interleave(row0, row1,
/// out)` packs 32 values of each row into 64. `false` (nothing written) when
/// the block does not qualify.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
fn row_pairs<E>(
    data: &[E],
    base: usize,
    x_stride: usize,
    p_stride: usize,
    count: usize,
    depth: usize,
    width: usize,
    stored: usize,
    out: &mut [u16],
    interleave: impl Fn(&[E], &[E], &mut [u16]),
) -> bool {
    if !(width == 32
        && x_stride == 1
        && count.is_multiple_of(32)
        && depth == stored
        && std::arch::is_x86_feature_detected!("avx512bw"))
    {
        return false;
    }
    // Rows this far ahead are prefetched: each row is a short run far from the
    // last one, which the hardware prefetchers do not follow in time.
    const AHEAD: usize = 8;
    let line_elems = (64 / std::mem::size_of::<E>().max(1)).max(1);
    for pp in 0..depth / 2 {
        let (r0, r1) = (base + 2 * pp * p_stride, base + (2 * pp + 1) * p_stride);
        let (l0, l1) = (&data[r0..r0 + count], &data[r1..r1 + count]);
        if 2 * pp + AHEAD + 1 < depth {
            for r in [r0 + AHEAD * p_stride, r1 + AHEAD * p_stride] {
                for e in (0..count).step_by(line_elems) {
                    // SAFETY: a prefetch is only a hint; the address is inside `data`
                    // (the row is one of this block's, read later).
                    unsafe {
                        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                            data[r + e..].as_ptr() as *const i8,
                        )
                    };
                }
            }
        }
        for q in 0..count / 32 {
            let at = q * 32 * stored + pp * 64;
            let rows = (&l0[32 * q..32 * q + 32], &l1[32 * q..32 * q + 32]);
            interleave(rows.0, rows.1, &mut out[at..at + 64]);
        }
    }
    true
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// `out[2j] = r0[j]`, `out[2j + 1] = r1[j]` for 32 `j`.
    ///
    /// # Safety
    /// AVX-512F/BW available; `r0`, `r1` hold 32 values, `out` 64.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn interleave_rows(r0: *const u16, r1: *const u16, out: *mut u16) {
        // SAFETY: extents as stated in the contract.
        unsafe {
            let a = _mm512_loadu_si512(r0 as *const _);
            let b = _mm512_loadu_si512(r1 as *const _);
            let mut lo = [0i16; 32];
            let mut hi = [0i16; 32];
            for j in 0..16 {
                lo[2 * j] = j as i16;
                lo[2 * j + 1] = 32 + j as i16;
                hi[2 * j] = 16 + j as i16;
                hi[2 * j + 1] = 48 + j as i16;
            }
            let il = _mm512_loadu_si512(lo.as_ptr() as *const _);
            let ih = _mm512_loadu_si512(hi.as_ptr() as *const _);
            _mm512_storeu_si512(out as *mut _, _mm512_permutex2var_epi16(a, il, b));
            _mm512_storeu_si512(out.add(32) as *mut _, _mm512_permutex2var_epi16(a, ih, b));
        }
    }

    /// `dst[r·32 + p] = src[p·stride + r]` for `r, p < 32`: a 32 × 32 block of
    /// 16-bit values transposed (an A panel's 32-deep step from a transposed
    /// A, a weight gradient's `gᵀ`). Rows `p` are first interleaved in pairs
    /// (32-bit values `(src[2q][r], src[2q+1][r])`), then the two 16 × 16
    /// matrices of pairs are transposed (32-bit, 64-bit, then 128-bit lane
    /// shuffles).
    ///
    /// # Safety
    /// AVX-512F/BW available; `src` holds 32 rows of 32 values at `stride`, `dst` 1024 values.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn transpose_32x32(src: *const u16, stride: usize, dst: *mut u16) {
        // SAFETY: extents as stated in the contract.
        unsafe {
            let mut lo = [_mm512_setzero_si512(); 16];
            let mut hi = [_mm512_setzero_si512(); 16];
            for q in 0..16 {
                let a = _mm512_loadu_si512(src.add(2 * q * stride) as *const _);
                let b = _mm512_loadu_si512(src.add((2 * q + 1) * stride) as *const _);
                // Pair s = 4L + e of lane L: r = 8L + e (lo), 8L + 4 + e (hi).
                lo[q] = _mm512_unpacklo_epi16(a, b);
                hi[q] = _mm512_unpackhi_epi16(a, b);
            }
            for (half, v) in [lo, hi].iter().enumerate() {
                let w = transpose_16x16_epi32(v);
                for (s, row) in w.iter().enumerate() {
                    let r = 8 * (s / 4) + 4 * half + s % 4;
                    _mm512_storeu_si512(dst.add(32 * r) as *mut _, *row);
                }
            }
        }
    }

    /// `dst[p·dst_stride + r] = src[r·stride + p]` for `r < lines`, and 0 for
    /// `lines ≤ r < lanes`, over `p < depth`: up to 16 lines of f32 values,
    /// 16 steps at a time, transposed in registers (an f32 panel from lines
    /// contiguous along the depth).
    ///
    /// # Safety
    /// AVX-512F available; `lines ≤ lanes ≤ 16`; each of the `lines` lines at
    /// `src + r·stride` holds `depth` values; `dst` holds `depth` rows of
    /// `dst_stride ≥ lanes` values.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn transpose_lines_f32(
        src: *const f32,
        stride: usize,
        lines: usize,
        depth: usize,
        dst: *mut f32,
        dst_stride: usize,
        lanes: usize,
    ) {
        let store: __mmask16 = ((1u32 << lanes) - 1) as __mmask16;
        // SAFETY: extents as stated in the contract; masked-off lanes are not accessed.
        unsafe {
            for p0 in (0..depth).step_by(16) {
                let steps = 16.min(depth - p0);
                let load: __mmask16 = ((1u32 << steps) - 1) as __mmask16;
                let mut v = [_mm512_setzero_si512(); 16];
                for (r, v) in v.iter_mut().enumerate().take(lines) {
                    *v = _mm512_maskz_loadu_epi32(load, src.add(r * stride + p0) as *const i32);
                }
                let w = transpose_16x16_epi32(&v);
                for (j, w) in w.iter().enumerate().take(steps) {
                    _mm512_mask_storeu_epi32(dst.add((p0 + j) * dst_stride) as *mut i32, store, *w);
                }
            }
        }
    }

    /// `dst[p·width + r] = src[p·stride + r]` for `r < lines`, and 0 for
    /// `lines ≤ r < width`, over `p < depth`.
    ///
    /// # Safety
    /// AVX-512F available; `lines ≤ width ≤ 32`; `src + p·stride` holds `lines`
    /// values for each `p < depth`; `dst` holds `depth · width` values.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn copy_lines_f32(
        src: *const f32,
        stride: usize,
        lines: usize,
        depth: usize,
        dst: *mut f32,
        width: usize,
    ) {
        let mask = |n: usize| ((1u32 << n.min(16)) - 1) as __mmask16;
        let (load0, load1) = (mask(lines), mask(lines.saturating_sub(16)));
        let (store0, store1) = (mask(width), mask(width.saturating_sub(16)));
        // SAFETY: extents as stated in the contract; masked-off lanes are not accessed.
        unsafe {
            for p in 0..depth {
                let (s, d) = (src.add(p * stride), dst.add(p * width));
                let v = _mm512_maskz_loadu_ps(load0, s);
                _mm512_mask_storeu_ps(d, store0, v);
                if width > 16 {
                    let v = _mm512_maskz_loadu_ps(load1, s.add(16));
                    _mm512_mask_storeu_ps(d.add(16), store1, v);
                }
            }
        }
    }

    /// One 32-deep step of a narrow product's B tile (16 pairs × 16 columns,
    /// `dst[32q + 2j + e]` = value `2q + e` of column `j`) from `lines ≤ 16`
    /// columns of 32 contiguous bf16 values at `stride`; columns past `lines` are 0.
    ///
    /// # Safety
    /// AVX-512F available; each column at `src + j·stride` (`j < lines`) holds 32
    /// values; `dst` holds 512.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn column_pair_tile_bits(
        src: *const u16,
        stride: usize,
        lines: usize,
        dst: *mut u16,
    ) {
        // SAFETY: extents as stated in the contract.
        unsafe {
            let mut v = [_mm512_setzero_si512(); 16];
            for (j, v) in v.iter_mut().enumerate().take(lines) {
                // 32 bf16 values: 16 pairs, pair q in 32-bit lane q.
                *v = _mm512_loadu_si512(src.add(j * stride) as *const _);
            }
            store_pair_tile(&v, dst);
        }
    }

    /// [`column_pair_tile_bits`] from f32 columns, rounded to bf16 (nearest even).
    ///
    /// # Safety
    /// AVX-512F/BW available; each column at `src + j·stride` (`j < lines`) holds
    /// 32 values; `dst` holds 512.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn column_pair_tile_rounded(
        src: *const f32,
        stride: usize,
        lines: usize,
        dst: *mut u16,
    ) {
        // SAFETY: extents as stated in the contract.
        unsafe {
            let mut v = [_mm512_setzero_si512(); 16];
            for (j, v) in v.iter_mut().enumerate().take(lines) {
                *v = round_line_pairs(src.add(j * stride));
            }
            store_pair_tile(&v, dst);
        }
    }

    /// `dst[32q + 2j + e]` = 32-bit lane `q` of `v[j]`.
    #[target_feature(enable = "avx512f")]
    unsafe fn store_pair_tile(v: &[__m512i; 16], dst: *mut u16) {
        // SAFETY: `dst` holds 512 values (the callers' contracts).
        unsafe {
            for (q, w) in transpose_16x16_epi32(v).iter().enumerate() {
                _mm512_storeu_si512(dst.add(32 * q) as *mut _, *w);
            }
        }
    }

    /// One pair row of a narrow product's B tile from two rows of bf16 bits:
    /// `dst[2j + e] = row_e[j]` for `j < n`, 0 for `n ≤ j < 16`.
    ///
    /// # Safety
    /// AVX-512F/BW/VL available; `n ≤ 16`; `r0`, `r1` hold `n` values, `dst` 32.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub unsafe fn row_pair_bits(r0: *const u16, r1: *const u16, n: usize, dst: *mut u16) {
        let m = ((1u32 << n) - 1) as __mmask16;
        // SAFETY: extents as stated in the contract; masked-off lanes are not read.
        unsafe {
            let a = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, r0 as *const i16));
            let b = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, r1 as *const i16));
            store_row_pair(a, b, dst);
        }
    }

    /// [`row_pair_bits`] from two f32 rows, rounded to bf16 (nearest even).
    ///
    /// # Safety
    /// AVX-512F available; `n ≤ 16`; `r0`, `r1` hold `n` values, `dst` 32.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn row_pair_rounded(r0: *const f32, r1: *const f32, n: usize, dst: *mut u16) {
        let m = ((1u32 << n) - 1) as __mmask16;
        // SAFETY: extents as stated in the contract; masked-off lanes are not read.
        unsafe {
            let a = round_bf16(_mm512_maskz_loadu_epi32(m, r0 as *const i32));
            let b = round_bf16(_mm512_maskz_loadu_epi32(m, r1 as *const i32));
            store_row_pair(a, b, dst);
        }
    }

    /// `dst[2j] = lo[j]`, `dst[2j + 1] = hi[j]` for 16 `j`: the low 16 bits of
    /// each 32-bit lane of `lo` and `hi` (upper halves zero) as pairs.
    ///
    /// # Safety
    /// `dst` holds 32 values.
    #[target_feature(enable = "avx512f")]
    unsafe fn store_row_pair(lo: __m512i, hi: __m512i, dst: *mut u16) {
        // SAFETY: extent as stated in the contract.
        unsafe {
            _mm512_storeu_si512(
                dst as *mut _,
                _mm512_or_si512(lo, _mm512_slli_epi32::<16>(hi)),
            )
        }
    }

    /// The 32 f32 values at `line` rounded to bf16, in order, as 16 pairs (pair
    /// `q` in 32-bit lane `q`).
    ///
    /// # Safety
    /// AVX-512F/BW available; `line` holds 32 values.
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn round_line_pairs(line: *const f32) -> __m512i {
        // The low half of every 32-bit lane of a, then of b: the 32 values in order.
        let mut even = [0i16; 32];
        for (j, e) in even.iter_mut().enumerate() {
            *e = 2 * j as i16;
        }
        // SAFETY: extent as stated in the contract.
        unsafe {
            let idx = _mm512_loadu_si512(even.as_ptr() as *const _);
            let a = round_bf16(_mm512_loadu_si512(line as *const _));
            let b = round_bf16(_mm512_loadu_si512(line.add(16) as *const _));
            _mm512_permutex2var_epi16(a, idx, b)
        }
    }

    /// `w[j]` holds element `j` of every `v[i]` (a 16 × 16 transpose of 32-bit values).
    #[target_feature(enable = "avx512f")]
    fn transpose_16x16_epi32(v: &[__m512i; 16]) -> [__m512i; 16] {
        let mut a = [_mm512_setzero_si512(); 16];
        for i in 0..8 {
            a[2 * i] = _mm512_unpacklo_epi32(v[2 * i], v[2 * i + 1]);
            a[2 * i + 1] = _mm512_unpackhi_epi32(v[2 * i], v[2 * i + 1]);
        }
        // b[4i + c], lane L: element 4L + c of v[4i..4i + 4].
        let mut b = [_mm512_setzero_si512(); 16];
        for i in 0..4 {
            b[4 * i] = _mm512_unpacklo_epi64(a[4 * i], a[4 * i + 2]);
            b[4 * i + 1] = _mm512_unpackhi_epi64(a[4 * i], a[4 * i + 2]);
            b[4 * i + 2] = _mm512_unpacklo_epi64(a[4 * i + 1], a[4 * i + 3]);
            b[4 * i + 3] = _mm512_unpackhi_epi64(a[4 * i + 1], a[4 * i + 3]);
        }
        // w[4L + c] gathers lane L of b[c], b[4 + c], b[8 + c], b[12 + c].
        let mut w = [_mm512_setzero_si512(); 16];
        for c in 0..4 {
            let t0 = _mm512_shuffle_i32x4::<0x44>(b[c], b[4 + c]);
            let t1 = _mm512_shuffle_i32x4::<0xEE>(b[c], b[4 + c]);
            let t2 = _mm512_shuffle_i32x4::<0x44>(b[8 + c], b[12 + c]);
            let t3 = _mm512_shuffle_i32x4::<0xEE>(b[8 + c], b[12 + c]);
            w[c] = _mm512_shuffle_i32x4::<0x88>(t0, t2);
            w[4 + c] = _mm512_shuffle_i32x4::<0xDD>(t0, t2);
            w[8 + c] = _mm512_shuffle_i32x4::<0x88>(t1, t3);
            w[12 + c] = _mm512_shuffle_i32x4::<0xDD>(t1, t3);
        }
        w
    }

    /// f32 lanes rounded to bf16 bits (nearest even; NaN keeps its high payload,
    /// quiet bit set), in the low half of each 32-bit lane.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn round_bf16(x: __m512i) -> __m512i {
        let lsb = _mm512_and_si512(_mm512_srli_epi32::<16>(x), _mm512_set1_epi32(1));
        let bias = _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF));
        let rounded = _mm512_srli_epi32::<16>(_mm512_add_epi32(x, bias));
        let quiet = _mm512_or_si512(_mm512_srli_epi32::<16>(x), _mm512_set1_epi32(0x40));
        let abs = _mm512_and_si512(x, _mm512_set1_epi32(0x7FFF_FFFF));
        let nan = _mm512_cmpgt_epu32_mask(abs, _mm512_set1_epi32(0x7F80_0000));
        _mm512_mask_blend_epi32(nan, rounded, quiet)
    }

    /// `out[2j] = bf16(r0[j])`, `out[2j + 1] = bf16(r1[j])` for 32 `j`.
    ///
    /// # Safety
    /// AVX-512F/BW available; `r0`, `r1` hold 32 values, `out` 64.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn round_interleave_rows(r0: *const f32, r1: *const f32, out: *mut u16) {
        // SAFETY: extents as stated in the contract.
        unsafe {
            for h in 0..2 {
                let a = round_bf16(_mm512_loadu_si512(r0.add(16 * h) as *const _));
                let b = round_bf16(_mm512_loadu_si512(r1.add(16 * h) as *const _));
                let pairs = _mm512_or_si512(a, _mm512_slli_epi32::<16>(b));
                _mm512_storeu_si512(out.add(32 * h) as *mut _, pairs);
            }
        }
    }

    /// `dst[64·j + 2r + e] = round(src[r·stride + 2j + e])` for 32 lines `r`,
    /// 16 pairs `j`, `e < 2`: 32 f32 lines along the depth rounded to bf16 and
    /// packed as one 32-deep step of a pair-interleaved panel (a transposed f32
    /// weight under autocast). Each line's rounded values become 16 pairs in
    /// one register; two 16 × 16 transposes of the pairs put each pair index's
    /// 32 lines side by side.
    ///
    /// # Safety
    /// AVX-512F/BW available; each of the 32 lines at `src + r·stride` holds 32
    /// values; `dst` holds 1024.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn round_transpose_pairs(src: *const f32, stride: usize, dst: *mut u16) {
        // SAFETY: extents as stated in the contract.
        unsafe {
            let mut pairs = [[_mm512_setzero_si512(); 16]; 2];
            for r in 0..32 {
                let line = src.add(r * stride);
                // Two steps ahead on each line: 32 lines 16 KiB apart are more
                // streams than the prefetchers follow (measured, one process
                // alternating: 256×4096×4096 with a transposed f32 B +12%).
                _mm_prefetch::<_MM_HINT_T0>(line.wrapping_add(64) as *const i8);
                _mm_prefetch::<_MM_HINT_T0>(line.wrapping_add(80) as *const i8);
                pairs[r / 16][r % 16] = round_line_pairs(line);
            }
            for (half, v) in pairs.iter().enumerate() {
                for (j, w) in transpose_16x16_epi32(v).iter().enumerate() {
                    _mm512_storeu_si512(dst.add(64 * j + 32 * half) as *mut _, *w);
                }
            }
        }
    }

    /// `out[2r..2r + 2]` = the two values at `src + r·stride_bytes` for 32 lines `r`.
    ///
    /// # Safety
    /// AVX-512F available; 4 bytes readable at every `src + r·stride_bytes` (r < 32), `out` holds 64.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn gather_pairs(src: *const u16, stride_bytes: i32, out: *mut u16) {
        // SAFETY: extents as stated in the contract.
        unsafe {
            let step = _mm512_set1_epi32(stride_bytes);
            let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
            let idx0 = _mm512_mullo_epi32(lanes, step);
            let idx1 = _mm512_add_epi32(idx0, _mm512_slli_epi32::<4>(step));
            let g0 = _mm512_i32gather_epi32::<1>(idx0, src as *const i32);
            let g1 = _mm512_i32gather_epi32::<1>(idx1, src as *const i32);
            _mm512_storeu_si512(out as *mut _, g0);
            _mm512_storeu_si512(out.add(32) as *mut _, g1);
        }
    }
}

/// [`pack`] for f32 lines with AVX-512: lines contiguous along the depth by
/// 16 × 16 register transposes, lines contiguous across it by masked copies.
/// `false` (nothing written) when the ISA or the layout does not qualify.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
fn pack_f32_simd(
    isa: Isa,
    src: &[f32],
    base: usize,
    x_stride: usize,
    p_stride: usize,
    count: usize,
    depth: usize,
    width: usize,
    out: &mut [f32],
) -> bool {
    if !(isa >= Isa::Avx512 && width <= kernels::MAX_NR) {
        return false;
    }
    let panels = count.div_ceil(width);
    if p_stride == 1 {
        // Lines contiguous along p (a row-major A, a transposed B):
        // 16 lines × 16 steps at a time, transposed in registers.
        for q in 0..panels {
            let panel = &mut out[q * width * depth..(q + 1) * width * depth];
            let first = base + q * width * x_stride;
            let lines = width.min(count - q * width);
            // The last line read ends inside `src`.
            assert!(lines == 0 || first + (lines - 1) * x_stride + depth <= src.len());
            for r0 in (0..width).step_by(16) {
                let lanes = 16.min(width - r0);
                let valid = lines.saturating_sub(r0).min(lanes);
                // SAFETY: AVX-512F present (isa ≥ Avx512); lines r0..r0 + valid
                // start at `first + r·x_stride` and hold `depth` values (checked
                // above); the panel holds `depth` rows of `width`, and lanes
                // r0..r0 + lanes lie within a row.
                unsafe {
                    x86::transpose_lines_f32(
                        src.as_ptr().add(first + r0 * x_stride),
                        x_stride,
                        valid,
                        depth,
                        panel.as_mut_ptr().add(r0),
                        width,
                        lanes,
                    )
                }
            }
        }
        return true;
    }
    if x_stride == 1 {
        // Lines contiguous along x (a row-major B): each step one masked copy.
        for q in 0..panels {
            let panel = &mut out[q * width * depth..(q + 1) * width * depth];
            let first = base + q * width;
            let lines = width.min(count - q * width);
            assert!(depth == 0 || first + (depth - 1) * p_stride + lines <= src.len());
            // SAFETY: AVX-512F present (isa ≥ Avx512); step p reads `lines` values
            // at `first + p·p_stride`, inside `src` (checked above); the panel
            // holds `depth` rows of `width ≤ 32`.
            unsafe {
                x86::copy_lines_f32(
                    src.as_ptr().add(first),
                    p_stride,
                    lines,
                    depth,
                    panel.as_mut_ptr(),
                    width,
                )
            }
        }
        return true;
    }
    false
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
    #[cfg(target_arch = "x86_64")]
    if let Some(src) = T::as_f32(data) {
        if pack_f32_simd(isa, src, base, x_stride, p_stride, count, depth, width, out) {
            return;
        }
    }
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

/// The row-block height: at most [`MC`], small enough to give every thread
/// work. In parallel, the f32 kernel takes blocks of [`F32_PARALLEL_TILES`]
/// tiles: each block reuses the shared B block from L2 whatever its height,
/// and many small blocks leave the threads less uneven at each depth block's
/// join (measured, one process alternating: f32 2048³ +6% over `m / 4`-row
/// blocks; the AMX kernel even).
fn row_block(kernel: Kernel, m: usize, parallel: bool) -> usize {
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

/// Packs `nc` columns × `kc` depth of B, starting at element `base`, into
/// `nr`-wide panels in `out` — in groups of [`B_PANELS_PER_TASK`] panels, in
/// parallel for large products (with a short, wide A, packing the big B is
/// most of the memory traffic).
#[allow(clippy::too_many_arguments)]
fn pack_b_block<TA: Sync, TB: Sync, P: Packer<TA, TB>>(
    packer: &P,
    kernel: Kernel,
    b: &Operand<'_, TB>,
    base: usize,
    nc: usize,
    kc: usize,
    parallel: bool,
    out: &mut [P::Elem],
) {
    let nr = kernel.nr();
    let pack_group = |(g, dst): (usize, &mut [P::Elem])| {
        let j = g * B_PANELS_PER_TASK * nr;
        packer.pack_b(
            b.data,
            base + j * b.col_stride,
            b.col_stride,
            b.row_stride,
            (nc - j).min(B_PANELS_PER_TASK * nr),
            kc,
            nr,
            dst,
        );
    };
    let group = B_PANELS_PER_TASK * nr * packer.depth(kc);
    if parallel {
        out.par_chunks_mut(group).enumerate().for_each(pack_group);
    } else {
        out.chunks_mut(group).enumerate().for_each(pack_group);
    }
}

/// One batch on the row-block schedule (the BLIS loop order) into `c`: `mp`
/// rows of stride `ldc`, both padded to whole tiles, so every kernel call
/// runs on full panels; the first depth block sets C, later ones add to it.
#[allow(clippy::too_many_arguments)]
fn gemm_one<TA: Sync, TB: Sync, P: Packer<TA, TB>>(
    packer: &P,
    kernel: Kernel,
    a: &Operand<'_, TA>,
    b: &Operand<'_, TB>,
    bi: usize,
    m: usize,
    k: usize,
    n: usize,
    c: &mut [f32],
    ldc: usize,
    parallel: bool,
) {
    let (mr, nr) = (kernel.mr(), kernel.nr());
    let mc_block = row_block(kernel, m, parallel);
    let (kcb, ncb) = if kernel.is_amx() {
        (KC_AMX, column_block(kernel))
    } else {
        (KC_ROWS, NC)
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
            pack_b_block(packer, kernel, b, base, nc, kc, parallel, b_packed);
            let b_packed = &*b_packed;
            let block = |(ib, c_rows): (usize, &mut [f32])| {
                let i0 = ib * mc_block;
                // Whole tiles of rows; the A panels are zero-padded past row m.
                let tiles = c_rows.len() / (mr * ldc);
                let mut a_packed = Panels::new(tiles * mr * kd);
                packer.pack_a(
                    a.data,
                    a_base + i0 * a.row_stride + p0 * a.col_stride,
                    a.row_stride,
                    a.col_stride,
                    mc_block.min(m - i0),
                    kc,
                    mr,
                    &mut a_packed,
                );
                for ip in 0..tiles {
                    let ap = &a_packed[ip * mr * kd..(ip + 1) * mr * kd];
                    let c = &mut c_rows[ip * mr * ldc + j0..];
                    packer.run_row(kernel, kc, ap, b_packed, panels, c, ldc, p0 == 0);
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

#[cfg(test)]
mod tests {
    use super::*;
    use amp_dtype::DType;

    #[test]
    fn bf16_inputs_take_the_native_kernel_where_present_and_match_f64() {
        // The two last shapes take the column-parallel schedule on up to two threads.
        const {
            assert!(2 * 40 * 700 * 600 >= PARALLEL_FLOPS_AMX);
            assert!(2 * 45 * 721 * 530 >= PARALLEL_FLOPS_AMX && 530 / (COLUMN_GROUP * 32) >= 4);
        };
        for isa in Isa::available() {
            let kernel = Kernel::select(isa, DType::BF16);
            assert_eq!(kernel.packs_bf16_pairs(), isa == Isa::Avx512Bf16, "{isa}");
            assert_eq!(kernel.is_amx(), isa == Isa::Amx, "{isa}");
            assert!(!Kernel::select(isa, DType::F32).packs_bf16_pairs());
            // Odd depths (pair and 32-padding), edge tiles (M, N, K not multiples of 16/32),
            // several depth blocks, transposed A and B.
            for (m, k, n, at, bt) in [
                (13, 301, 37, false, true),
                (33, 600, 65, true, false),
                (64, 64, 64, false, false),
                (1, 31, 1, true, true),
                (40, 257, 33, true, true),
                // Large enough for the column-parallel schedule (short and wide).
                (40, 700, 600, false, false),
                (45, 721, 530, true, true),
            ] {
                let a: Vec<bf16> = (0..m * k)
                    .map(|i| bf16::from_f32(((i * 7 % 23) as f32 - 11.0) / 8.0))
                    .collect();
                let b: Vec<bf16> = (0..k * n)
                    .map(|i| bf16::from_f32(((i * 5 % 19) as f32 - 9.0) / 4.0))
                    .collect();
                // Element (i, p) of A is a[i·k + p] (or a[p·m + i] when transposed); B alike.
                let oa = Operand {
                    data: &a[..],
                    offset: 0,
                    batch_stride: 0,
                    row_stride: if at { 1 } else { k },
                    col_stride: if at { m } else { 1 },
                };
                let ob = Operand {
                    data: &b[..],
                    offset: 0,
                    batch_stride: 0,
                    row_stride: if bt { 1 } else { n },
                    col_stride: if bt { k } else { 1 },
                };
                let c = gemm(isa, oa, ob, 1, m, k, n);
                for i in 0..m {
                    for j in 0..n {
                        let want: f64 = (0..k)
                            .map(|p| {
                                let x = if at { a[p * m + i] } else { a[i * k + p] };
                                let y = if bt { b[j * k + p] } else { b[p * n + j] };
                                x.to_f64() * y.to_f64()
                            })
                            .sum();
                        // Products of these bf16 values and their partial sums are exact in f32.
                        assert_eq!(c[i * n + j] as f64, want, "{isa} {m}x{k}x{n} [{i}][{j}]");
                    }
                }
            }
        }
    }
}
