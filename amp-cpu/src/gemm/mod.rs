//! Batched GEMM `C[b] = A[b] · B[b]` over strided views, blocked and packed
//! (the BLIS loop order), with f32 accumulation.
//!
//! Loops: `jc` over column blocks → `pc` over depth blocks (B packed
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
//! column-parallel schedule of [`Product::column_strips`]. A small output
//! over a deep product (a weight's gradient over many tokens) splits the depth
//! into parts of at least [`schedule`]'s 1024, run in parallel into their own
//! buffers and added in order ([`Product::gemm_split_depth`]), instead of
//! joining the threads twice per depth block. A product with one
//! depth block is written to its output from per-block
//! tiles ([`Product::gemm_direct`]), a short, wide one from its column strips
//! ([`gemm_out_in_cache`]). Products with at most 16 columns run as dot
//! products ([`narrow`]). B may be f32 with a bf16/f16 A
//! ([`BSide::Rounded`]): it is rounded to A's dtype as it is packed
//! ([`RoundB`]), so an f32 weight used under autocast is never copied.
//! On AVX2, a row-major B (f32, bf16 or f16) is packed step by step across
//! all of a task's panels, widened in registers, with the step 8 ahead
//! prefetched: its rows lie a page or more apart, where the hardware
//! prefetchers do not follow (`x86::copy_rows_avx2`). The `vdpbf16ps`
//! kernel's pair panels whose lines run along the depth (a row-major A, a
//! transposed B) are interleaved by register transposes of 32-bit pairs
//! (`x86::transpose_line_pairs`), and its row-block schedule takes a depth
//! block sized in bytes ([`crate::cache::Blocking::for_bf16_pairs`]).
//!
//! Block sizes come from the CPU's caches ([`crate::cache::Blocking`]).
//!
//! Files: this one holds the entry points, the operand types and the tuning
//! constants; [`schedule`] the schedules (row blocks, column strips, one depth
//! block straight to the output) and their thresholds; [`packing`] the
//! packers ([`Packer`]: f32 panels, bf16 pair-interleaved panels, AMX tiles,
//! B rounded while packed); [`finish`] the finishing and writing of output
//! rows; [`kernels`] the micro-kernels; [`narrow`] products with few columns;
//! [`panels`] the aligned scratch buffers; `x86` the AVX-512 interleaves,
//! transposes and roundings of the packers and of [`narrow`], and the AVX2
//! transposes and row copies.

mod finish;
pub(crate) mod implicit;
mod kernels;
mod narrow;
pub(crate) mod packing;
mod panels;
mod schedule;
#[cfg(target_arch = "x86_64")]
mod x86;

use crate::convert::F32Convert;
use crate::isa::Isa;
use finish::{padded_stride, round_strips, write_rows, CLayout};
#[cfg(doc)]
use packing::Packer;
use packing::{AmxPacker, F32Packer, PairPacker, RoundB};
use panels::Panels;
use schedule::{depth_block, parallel_flops, takes_columns, Product};

#[cfg(target_arch = "x86_64")]
pub(crate) use kernels::x86::amx_peak_loop;
pub(crate) use kernels::Kernel;

/// The depth block of the AMX kernel: its accumulator tiles are loaded and
/// stored once per block, so a deeper block than the other kernels' pays
/// (measured, in one process alternating 256 and 512: 3–27% faster on the
/// bench's bf16 shapes), and a 32-row A panel (32 KiB) still fits in L1.
/// Every other kernel's blocks come from the CPU's caches
/// ([`crate::cache::Blocking`]: on the Xeon they were tuned on, a 256-deep
/// block, 128 on the row-block schedule, 2048 columns).
pub(crate) const KC_AMX: usize = 512;

/// Largest row block: one packed A block (`MC ×` a depth block, f32) stays in L2.
pub(crate) const MC: usize = 192;
/// Tiles per row block of the f32 kernel's parallel products
/// ([`schedule::row_block`]).
const F32_PARALLEL_TILES: usize = 4;
/// B panels packed by one parallel task.
const B_PANELS_PER_TASK: usize = 4;
/// Products of at least this many flops (2·B·M·N·K) run on the rayon pool.
pub(crate) const PARALLEL_FLOPS: usize = 1 << 21;
/// The same threshold for the AMX kernel, which does such a product about ten
/// times faster: below it, waking a second thread costs more than it saves.
pub(crate) const PARALLEL_FLOPS_AMX: usize = 1 << 24;

/// B panels per task of the column-parallel schedule.
const COLUMN_GROUP: usize = 4;
/// Largest M for the column-parallel schedule (all of A is packed up front).
const COLUMN_MAX_M: usize = 1024;
/// The same bound for the f32 kernel, whose packed A is twice the size: past
/// it the row-block schedule is faster (measured, one process alternating the
/// two: f32 1024³ +12%, 512³ even).
const COLUMN_MAX_M_F32: usize = 512;

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

/// The shape of a product: `batch` products `[m, k] · [k, n]`.
#[derive(Debug, Clone, Copy)]
struct Dims {
    /// Products.
    batch: usize,
    /// Rows of A and C.
    m: usize,
    /// The depth: columns of A, rows of B.
    k: usize,
    /// Columns of B and C.
    n: usize,
}

/// The finishing step applied in f32 to each finished output row segment
/// before it is rounded: `finish(first_column, values)`.
pub(crate) type Finish<'f> = dyn Fn(usize, &mut [f32]) + Sync + 'f;

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
// The signature the backend calls (the shape as four plain arguments, as in
// `gemm`); the schedules below take it as one `Dims`.
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
        return write_rows(isa, &mut c, CLayout::dense(batch, m, n), finish);
    }
    if batch * m * n == 0 || k == 0 {
        let mut c = vec![0f32; batch * m * n];
        return write_rows(isa, &mut c, CLayout::dense(batch, m, n), finish);
    }
    let kernel = Kernel::select(isa, T::DTYPE);
    let (mp, ldc) = (
        m.div_ceil(kernel.mr()) * kernel.mr(),
        padded_stride(n, kernel.nr()),
    );
    let mut c = Panels::<f32>::new(batch * mp * ldc);
    let dims = Dims { batch, m, k, n };
    with_packer!(isa, kernel, &a, b, |packer, a, b| {
        let product = Product {
            packer,
            kernel,
            a,
            b,
            dims,
        };
        product.run_batches(&mut c, ldc)
    });
    let layout = CLayout {
        batch,
        m,
        mp,
        n,
        ldc,
    };
    write_rows(isa, &mut c, layout, finish)
}

/// A single product rounded to `D` while its f32 values are still in cache,
/// with `finish` applied first: one depth block on the row-block schedule
/// ([`Product::gemm_direct`]), or a short, wide one from its column strips
/// ([`Product::column_strips`]). `None` when neither applies (a batch, a
/// deep f32 product of f32 inputs, a deep product on the row-block schedule): the
/// caller then takes [`gemm`]. An f32 output of bf16/f16 inputs (an f32
/// weight's gradient under autocast) qualifies too: [`gemm`] would write an
/// f32 C, then read it back.
// The same plain arguments as `gemm_finished`, whose shortcut this is.
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
    let low_precision = D::DTYPE != amp_dtype::DType::F32 || T::DTYPE != amp_dtype::DType::F32;
    // An f32 product of f32 inputs with one depth block qualifies too: its
    // padded C would be written, then read back and copied (measured, one
    // process alternating the two on an AVX2 EPYC: 4096×128×{128, 384, 512}
    // and 512×128×512 about 5% faster written from the tiles). Narrow ones
    // keep their own path ([`narrow::gemm_narrow`]).
    let one_block = k <= depth_block(kernel) && n > narrow::MAX_N;
    if !(batch == 1 && (low_precision || one_block) && k > 0 && m * n > 0) {
        return None;
    }
    let parallel = 2 * m * n * k >= parallel_flops(kernel);
    let dims = Dims { batch, m, k, n };
    if k <= depth_block(kernel) {
        Some(with_packer!(isa, kernel, a, b.into(), |packer, a, b| {
            let product = Product {
                packer,
                kernel,
                a,
                b,
                dims,
            };
            product.gemm_direct(isa, finish)
        }))
    } else if parallel && takes_columns(kernel, m, n) {
        Some(with_packer!(isa, kernel, a, b.into(), |packer, a, b| {
            let product = Product {
                packer,
                kernel,
                a,
                b,
                dims,
            };
            let (strips, width) = product.column_strips(0);
            round_strips(isa, &strips, width, m, n, finish)
        }))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amp_dtype::{bf16, DType};

    /// Runs a kernel call `run(rows, c, overwrite)` on a tile of `mr × nr`
    /// (row stride `ldc`) filled with 7.5, for rows 1..=mr, adding and
    /// overwriting: the first `rows` rounded up to 4 must hold `dot(r, j)`
    /// (plus 7.5 when adding), the others 7.5 still.
    fn check_live_rows(
        what: &str,
        (mr, nr, ldc): (usize, usize, usize),
        dot: impl Fn(usize, usize) -> f32,
        run: impl Fn(usize, &mut [f32], bool),
    ) {
        for rows in 1..=mr {
            for overwrite in [false, true] {
                let mut c = vec![7.5f32; mr * ldc];
                run(rows, &mut c, overwrite);
                let live = rows.div_ceil(4) * 4;
                for r in 0..mr {
                    for j in 0..nr {
                        let want = match (r < live, overwrite) {
                            (false, _) => 7.5,
                            (true, true) => dot(r, j),
                            (true, false) => 7.5 + dot(r, j),
                        };
                        let ctx = format!("{what} rows {rows} overwrite {overwrite}");
                        assert_eq!(c[r * ldc + j], want, "{ctx} C[{r}][{j}]");
                    }
                }
            }
        }
    }

    #[test]
    fn the_f32_avx512_kernel_computes_the_rows_asked_for_and_leaves_the_others() {
        for isa in Isa::available() {
            let kernel = Kernel::select(isa, DType::F32);
            if kernel != Kernel::Avx512 {
                continue;
            }
            let (mr, nr, kc, ldc) = (kernel.mr(), kernel.nr(), 9, 40);
            // Packed panels: a[p][r] = A[r][p], b[p][j] = B[p][j].
            let av = |r: usize, p: usize| ((r * 3 + p * 5) % 17) as f32 / 8.0 - 1.0;
            let bv = |p: usize, j: usize| ((p * 7 + j) % 13) as f32 / 4.0 - 1.5;
            let a: Vec<f32> = (0..kc * mr).map(|i| av(i % mr, i / mr)).collect();
            let b: Vec<f32> = (0..kc * nr).map(|i| bv(i / nr, i % nr)).collect();
            let dot = |r: usize, j: usize| (0..kc).map(|p| av(r, p) * bv(p, j)).sum();
            check_live_rows(
                &format!("{isa}"),
                (mr, nr, ldc),
                dot,
                |rows, c, overwrite| kernel.run(kc, rows, &a, &b, c, ldc, overwrite),
            );
        }
    }

    #[test]
    fn the_vdpbf16ps_kernel_computes_the_rows_asked_for_and_leaves_the_others() {
        for isa in Isa::available() {
            let kernel = Kernel::select(isa, DType::BF16);
            if !kernel.packs_bf16_pairs() {
                continue;
            }
            let (mr, nr, kp, ldc) = (kernel.mr(), kernel.nr(), 5, 40);
            // Packed panels: a[p][r][h] = A[r][2p + h], b[p][j][h] = B[2p + h][j].
            let av = |r: usize, d: usize| ((r * 3 + d * 5) % 17) as f32 / 8.0 - 1.0;
            let bv = |d: usize, j: usize| ((d * 7 + j) % 13) as f32 / 4.0 - 1.5;
            let mut a = vec![0u16; kp * mr * 2];
            let mut b = vec![0u16; kp * nr * 2];
            for p in 0..kp {
                for h in 0..2 {
                    for r in 0..mr {
                        a[(p * mr + r) * 2 + h] = bf16::from_f32(av(r, 2 * p + h)).to_bits();
                    }
                    for j in 0..nr {
                        b[(p * nr + j) * 2 + h] = bf16::from_f32(bv(2 * p + h, j)).to_bits();
                    }
                }
            }
            let dot = |r: usize, j: usize| (0..2 * kp).map(|d| av(r, d) * bv(d, j)).sum();
            check_live_rows(
                &format!("{isa}"),
                (mr, nr, ldc),
                dot,
                |rows, c, overwrite| kernel.run_bf16(kp, rows, &a, &b, c, ldc, overwrite),
            );
        }
    }

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
                // Last A panels of 8 and 7 rows (the 8-row kernel).
                (20, 130, 47, false, false),
                (67, 65, 33, true, false),
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
