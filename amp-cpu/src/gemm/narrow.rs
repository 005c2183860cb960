//! Products with at most [`MAX_N`] columns (a classifier's last layer,
//! `[256, 4096] · [4096, 10]`) as dot products: the blocked path would pad
//! every tile to 16 or 32 columns and pack all of A, which is read only `n`
//! times. Here Bᵀ (`n × k`, small) is packed once in f32, and each A row is
//! read once, straight from its storage (f32) or widened a block at a time
//! (bf16, f16), against every column: `n` f32 accumulators of 16 lanes per row
//! (two rows at a time for `n ≤ 6`; more accumulators than that were spilled),
//! one FMA per product, summed across lanes at the end of each depth block.

use super::{BSide, Operand, PARALLEL_FLOPS};
use crate::convert::F32Convert;
use crate::isa::Isa;
use rayon::prelude::*;

/// Widest product this path takes.
pub(crate) const MAX_N: usize = 16;
/// Depth block: `n` rows of Bᵀ (at most 64 KiB) and two A rows stay in L1.
const KB: usize = 512;
/// Rows of A per parallel task.
const ROWS_PER_TASK: usize = 16;

/// `[batch, m, n]` f32 product when it qualifies (AVX-512, `n ≤ MAX_N`, rows
/// of A contiguous); `None` otherwise.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_narrow<T: F32Convert>(
    isa: Isa,
    a: &Operand<'_, T>,
    b: BSide<'_, T>,
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
) -> Option<Vec<f32>> {
    if !(isa >= Isa::Avx512 && cfg!(target_arch = "x86_64"))
        || n == 0
        || n > MAX_N
        || k == 0
        || m == 0
        || a.col_stride != 1
    {
        return None;
    }
    let mut c = vec![0f32; batch * m * n];
    let parallel = 2 * batch * m * n * k >= PARALLEL_FLOPS;
    for (bi, cb) in c.chunks_mut(m * n).enumerate() {
        // Bᵀ[j][p] = B[p][j], widened to f32 (an f32 B rounded to A's dtype first).
        let mut bt = vec![0f32; n * k];
        for (j, line) in bt.chunks_mut(k).enumerate() {
            for (p, v) in line.iter_mut().enumerate() {
                *v = match &b {
                    BSide::Same(b) => b.data
                        [b.offset + bi * b.batch_stride + p * b.row_stride + j * b.col_stride]
                        .to_f32(),
                    BSide::Rounded(b) => T::from_f32(
                        b.data
                            [b.offset + bi * b.batch_stride + p * b.row_stride + j * b.col_stride],
                    )
                    .to_f32(),
                };
            }
        }
        let a_base = a.offset + bi * a.batch_stride;
        let task = |(t, rows): (usize, &mut [f32])| {
            let i0 = t * ROWS_PER_TASK;
            rows_times_bt(
                isa,
                a,
                a_base + i0 * a.row_stride,
                rows.len() / n,
                k,
                n,
                &bt,
                rows,
            );
        };
        if parallel {
            cb.par_chunks_mut(ROWS_PER_TASK * n)
                .enumerate()
                .for_each(task);
        } else {
            cb.chunks_mut(ROWS_PER_TASK * n).enumerate().for_each(task);
        }
    }
    Some(c)
}

/// `c[i][j] = Σ_p A[i][p] · bt[j][p]` for `rows` rows of A from `base`.
#[allow(clippy::too_many_arguments)]
fn rows_times_bt<T: F32Convert>(
    isa: Isa,
    a: &Operand<'_, T>,
    base: usize,
    rows: usize,
    k: usize,
    n: usize,
    bt: &[f32],
    c: &mut [f32],
) {
    // Widened rows for bf16/f16 A (f32 A is read in place).
    let direct = T::as_f32(a.data);
    let mut wide = vec![0f32; if direct.is_some() { 0 } else { 2 * KB }];
    for p0 in (0..k).step_by(KB) {
        let kb = KB.min(k - p0);
        for i in (0..rows).step_by(2) {
            let pair = (rows - i).min(2);
            let starts = [
                base + i * a.row_stride + p0,
                base + (i + 1) * a.row_stride + p0,
            ];
            let lines: [&[f32]; 2] = match direct {
                Some(d) => [
                    &d[starts[0]..starts[0] + kb],
                    if pair == 2 {
                        &d[starts[1]..starts[1] + kb]
                    } else {
                        &[]
                    },
                ],
                None => {
                    let (w0, w1) = wide.split_at_mut(KB);
                    T::load(isa, &a.data[starts[0]..starts[0] + kb], &mut w0[..kb]);
                    if pair == 2 {
                        T::load(isa, &a.data[starts[1]..starts[1] + kb], &mut w1[..kb]);
                    }
                    [&w0[..kb], if pair == 2 { &w1[..kb] } else { &[] }]
                }
            };
            let out = &mut c[i * n..(i + pair) * n];
            #[cfg(target_arch = "x86_64")]
            x86::dots(lines, pair, &bt[p0..], k, kb, n, out);
            #[cfg(not(target_arch = "x86_64"))]
            let _ = (lines, out, kb);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// `out[r·n + j] += Σ_{p < kb} lines[r][p] · bt[j·ldb + p]` for `rows` (1 or 2)
    /// lines and `n ≤ 16` columns, dispatched to a kernel with `n` fixed.
    pub(super) fn dots(
        lines: [&[f32]; 2],
        rows: usize,
        bt: &[f32],
        ldb: usize,
        kb: usize,
        n: usize,
        out: &mut [f32],
    ) {
        assert!(lines[0].len() >= kb && (rows == 1 || lines[1].len() >= kb));
        assert!((1..=super::MAX_N).contains(&n) && bt.len() >= (n - 1) * ldb + kb);
        assert!(out.len() >= rows * n);
        macro_rules! arms {
            ($($n:literal)*) => {
                match n {
                    $($n => {
                        // SAFETY: AVX-512F is present (this path is taken at Isa::Avx512
                        // and above); the extents were checked above.
                        unsafe { if rows == 2 && $n <= 6 {
                            kernel::<2, $n>(kb, [lines[0].as_ptr(), lines[1].as_ptr()], bt.as_ptr(), ldb, out.as_mut_ptr())
                        } else {
                            for r in 0..rows {
                                kernel::<1, $n>(kb, [lines[r].as_ptr()], bt.as_ptr(), ldb, out.as_mut_ptr().add(r * $n))
                            }
                        } }
                    })*
                    _ => unreachable!("n checked above"),
                }
            };
        }
        arms!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16);
    }

    /// `R` (1 or 2) lines against `N` rows of Bᵀ over a depth of `kb`; the
    /// last partial 16-lane step uses masked loads.
    ///
    /// # Safety
    /// AVX-512F available; each `a[r]` holds `kb` floats; `bt` holds `N` rows of
    /// `kb` floats at stride `ldb`; `c` holds `R·N` floats.
    #[target_feature(enable = "avx512f")]
    unsafe fn kernel<const R: usize, const N: usize>(
        kb: usize,
        a: [*const f32; R],
        bt: *const f32,
        ldb: usize,
        c: *mut f32,
    ) {
        // One accumulator array per line, kept in registers.
        let mut acc0 = [_mm512_setzero_ps(); N];
        let mut acc1 = [_mm512_setzero_ps(); N];
        let a1 = a[R - 1];
        // SAFETY: every load stays within the extents stated in the contract
        // (the tail's masked loads touch only its `kb % 16` valid lanes).
        unsafe {
            // A macro, not a closure: the accumulators must stay in registers.
            macro_rules! step {
                ($p:expr, $mask:expr) => {{
                    let (p, mask): (usize, __mmask16) = ($p, $mask);
                    let x0 = _mm512_maskz_loadu_ps(mask, a[0].add(p));
                    let x1 = _mm512_maskz_loadu_ps(mask, a1.add(p));
                    // Constant indices, unrolled by hand (a loop over j is not
                    // always unrolled, and indexing by a variable spills).
                    macro_rules! column {
                        ($j:literal) => {
                            if $j < N {
                                let b = _mm512_maskz_loadu_ps(mask, bt.add($j * ldb + p));
                                acc0[$j] = _mm512_fmadd_ps(x0, b, acc0[$j]);
                                if R == 2 {
                                    acc1[$j] = _mm512_fmadd_ps(x1, b, acc1[$j]);
                                }
                            }
                        };
                    }
                    column!(0);
                    column!(1);
                    column!(2);
                    column!(3);
                    column!(4);
                    column!(5);
                    column!(6);
                    column!(7);
                    column!(8);
                    column!(9);
                    column!(10);
                    column!(11);
                    column!(12);
                    column!(13);
                    column!(14);
                    column!(15);
                }};
            }
            for q in 0..kb / 16 {
                step!(16 * q, !0);
            }
            let rem = kb % 16;
            if rem > 0 {
                step!(16 * (kb / 16), (1u16 << rem) - 1);
            }
            for j in 0..N {
                *c.add(j) += _mm512_reduce_add_ps(acc0[j]);
                if R == 2 {
                    *c.add(N + j) += _mm512_reduce_add_ps(acc1[j]);
                }
            }
        }
    }
}
