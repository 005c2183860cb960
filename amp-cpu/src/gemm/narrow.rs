//! Products with at most [`MAX_N`] columns (a classifier's last layer,
//! `[256, 4096] · [4096, 10]`) as dot products: the blocked path would pad
//! every tile to 16 or 32 columns and pack all of A, which is read only `n`
//! times. Here Bᵀ (`n × k`, small) is packed once in f32, and each A row is
//! read once, straight from its storage (bf16 and f16 widened in registers),
//! against every column: `n` f32 accumulators of 16 lanes per row
//! (two rows at a time for `n ≤ 6`; more accumulators than that were spilled),
//! one FMA per product, summed across lanes at the end of each depth block.
//! With AVX512-BF16, bf16 products keep Bᵀ in bf16 and use `vdpbf16ps`: two
//! products per lane and instruction, half the loads per product.
//! With AMX and a depth of whole 32-steps, bf16 products run on tiles
//! instead: B is packed once as 16-column tiles and each group of 16 rows of
//! A is loaded straight from its storage as a row tile against every B
//! tile ([`super::kernels::amx_rows_16`]; measured, alternating binaries:
//! `[256, 4096] · [4096, 10]` best 99 → 188 GFLOP/s with 64-row groups, and
//! 16-row groups +20% over those). B's tiles are packed
//! in registers ([`pair_tiles_simd`]: 32-step register transposes of its
//! columns, or rows interleaved in pairs) — element by element, packing was
//! half the product's time (alternating binaries, slow phase of this box:
//! bf16 `[256, 4096] · [4096, 10]` best 103 → 142 GFLOP/s, with an f32
//! weight read transposed and rounded 84 → 160).

use super::{BSide, Operand, PARALLEL_FLOPS};
use crate::convert::F32Convert;
use crate::isa::Isa;
use amp_dtype::DType;
use rayon::prelude::*;

/// Widest product this path takes.
pub(crate) const MAX_N: usize = 16;
/// Depth block: `n` rows of Bᵀ (at most 64 KiB) and two A rows stay in L1.
const KB: usize = 512;
/// Rows of A per parallel task.
const ROWS_PER_TASK: usize = 16;
/// Rows of A per AMX kernel call (one row tile).
const AMX_ROWS: usize = 16;

/// `[batch, m, n]` f32 product when it qualifies (AVX-512, `n ≤ MAX_N`, rows
/// of A contiguous); `None` otherwise.
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
        || !matches!(T::DTYPE, DType::F32 | DType::BF16 | DType::F16)
    {
        return None;
    }
    let mut c = vec![0f32; batch * m * n];
    let parallel = 2 * batch * m * n * k >= PARALLEL_FLOPS;
    #[cfg(target_arch = "x86_64")]
    if isa >= Isa::Amx && k.is_multiple_of(32) {
        if let Some(a16) = T::as_bf16(a.data) {
            // bf16 A on AMX: A tiles straight from its rows, Bᵀ as 16-column tiles.
            let a16 = a.with_data(a16);
            for (bi, cb) in c.chunks_mut(m * n).enumerate() {
                let tiles = match &b {
                    BSide::Same(b) => {
                        let b16 = b.with_data(T::as_bf16(b.data).expect("same dtype as A"));
                        pair_tiles(&b16, bi, k, n, |v| v.to_bits())
                    }
                    BSide::Rounded(b) => {
                        pair_tiles(b, bi, k, n, |v| crate::convert::f32_to_bf16_bits(*v))
                    }
                };
                let a_base = a16.offset + bi * a16.batch_stride;
                let task = |(g, rows): (usize, &mut [f32])| {
                    let count = rows.len() / n;
                    let start = a_base + g * AMX_ROWS * a16.row_stride;
                    let mut out = [0f32; AMX_ROWS * 16];
                    // Rows read in place unless they overlap (a broadcast A, stride < k).
                    if count == AMX_ROWS && a16.row_stride >= k {
                        let a_rows = &a16.data[start..start + (AMX_ROWS - 1) * a16.row_stride + k];
                        // SAFETY: bf16 is a 16-bit transparent wrapper, read as its bits.
                        let a_bits = unsafe {
                            std::slice::from_raw_parts(a_rows.as_ptr() as *const u16, a_rows.len())
                        };
                        super::kernels::amx_rows_16(
                            isa,
                            k,
                            a_bits,
                            a16.row_stride,
                            &tiles,
                            &mut out,
                        );
                    } else {
                        // The last rows (or overlapping ones), copied and zero-padded.
                        let mut pad = vec![0u16; AMX_ROWS * k];
                        for (r, line) in pad.chunks_mut(k).take(count).enumerate() {
                            let s = start + r * a16.row_stride;
                            for (d, v) in line.iter_mut().zip(&a16.data[s..s + k]) {
                                *d = v.to_bits();
                            }
                        }
                        super::kernels::amx_rows_16(isa, k, &pad, k, &tiles, &mut out);
                    }
                    for (r, dst) in rows.chunks_mut(n).enumerate() {
                        dst.copy_from_slice(&out[r * 16..r * 16 + n]);
                    }
                };
                if parallel {
                    cb.par_chunks_mut(AMX_ROWS * n).enumerate().for_each(task);
                } else {
                    cb.chunks_mut(AMX_ROWS * n).enumerate().for_each(task);
                }
            }
            return Some(c);
        }
    }
    #[cfg(target_arch = "x86_64")]
    if isa >= Isa::Avx512Bf16 {
        if let Some(a16) = T::as_bf16(a.data) {
            // bf16 A: `vdpbf16ps` on bf16 pairs, two products per lane and instruction.
            let a16 = a.with_data(a16);
            for (bi, cb) in c.chunks_mut(m * n).enumerate() {
                let mut bt = vec![0u16; n * k];
                match &b {
                    BSide::Same(b) => {
                        let b16 = b.with_data(T::as_bf16(b.data).expect("same dtype as A"));
                        transpose_into(&b16, bi, k, n, &mut bt, parallel, |v| v.to_bits())
                    }
                    BSide::Rounded(b) => transpose_into(b, bi, k, n, &mut bt, parallel, |v| {
                        crate::convert::f32_to_bf16_bits(*v)
                    }),
                }
                let a_base = a16.offset + bi * a16.batch_stride;
                let task = |(t, rows): (usize, &mut [f32])| {
                    let base = a_base + t * ROWS_PER_TASK * a16.row_stride;
                    for p0 in (0..k).step_by(KB) {
                        let kb = KB.min(k - p0);
                        for (i, out) in rows.chunks_mut(n).enumerate() {
                            let s = base + i * a16.row_stride + p0;
                            x86::dots_bf16(&a16.data[s..s + kb], &bt[p0..], k, kb, n, out);
                        }
                    }
                };
                if parallel {
                    cb.par_chunks_mut(ROWS_PER_TASK * n)
                        .enumerate()
                        .for_each(task);
                } else {
                    cb.chunks_mut(ROWS_PER_TASK * n).enumerate().for_each(task);
                }
            }
            return Some(c);
        }
    }
    for (bi, cb) in c.chunks_mut(m * n).enumerate() {
        // Bᵀ[j][p] = B[p][j], widened to f32 (an f32 B rounded to A's dtype first).
        let mut bt = vec![0f32; n * k];
        match &b {
            BSide::Same(b) => transpose_into(b, bi, k, n, &mut bt, parallel, |v: &T| v.to_f32()),
            BSide::Rounded(b) => transpose_into(b, bi, k, n, &mut bt, parallel, |v: &f32| {
                T::from_f32(*v).to_f32()
            }),
        }
        let a_base = a.offset + bi * a.batch_stride;
        let task = |(t, rows): (usize, &mut [f32])| {
            let i0 = t * ROWS_PER_TASK;
            rows_times_bt(
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

/// B (batch `bi`, `k × n`, `k` a multiple of 32) as the AMX B tiles of
/// [`super::kernels::amx_rows_16`], `bits` giving each value's bf16 bits: per
/// 32-deep step, 16 pairs × 16 columns × 2, columns past `n` zero. B is read
/// along whichever direction is contiguous.
fn pair_tiles<E: F32Convert>(
    b: &Operand<'_, E>,
    bi: usize,
    k: usize,
    n: usize,
    bits: impl Fn(&E) -> u16,
) -> super::Panels<u16> {
    let mut tiles = super::Panels::<u16>::new(k * 32);
    let base = b.offset + bi * b.batch_stride;
    #[cfg(target_arch = "x86_64")]
    if k.is_multiple_of(32) && pair_tiles_simd(b, base, k, n, &mut tiles) {
        return tiles;
    }
    tiles.fill(0);
    // Value (p, j) goes to step p / 32, pair (p % 32) / 2, column j, half p % 2.
    let at = |p: usize, j: usize| (p / 32) * 512 + (p % 32) / 2 * 32 + j * 2 + p % 2;
    if b.row_stride == 1 && b.col_stride != 1 {
        // Each column of B contiguous along the depth (a weight read transposed).
        for j in 0..n {
            let s = base + j * b.col_stride;
            for (p, v) in b.data[s..s + k].iter().enumerate() {
                tiles[at(p, j)] = bits(v);
            }
        }
    } else {
        for p in 0..k {
            let s = base + p * b.row_stride;
            for j in 0..n {
                tiles[at(p, j)] = bits(&b.data[s + j * b.col_stride]);
            }
        }
    }
    tiles
}

/// [`pair_tiles`] with AVX-512 (the AMX path's CPUs have it) for bf16 or f32
/// (rounded) values: columns contiguous along the depth are transposed 32
/// steps at a time in registers, contiguous rows interleaved in pairs. `false`
/// (nothing written) when the layout or element type does not qualify.
#[cfg(target_arch = "x86_64")]
fn pair_tiles_simd<E: F32Convert>(
    b: &Operand<'_, E>,
    base: usize,
    k: usize,
    n: usize,
    tiles: &mut [u16],
) -> bool {
    use super::x86;
    if !(std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vl"))
        || n > MAX_N
        || tiles.len() < k * 16
    {
        return false;
    }
    let (bits, f32s) = (E::as_bf16(b.data), E::as_f32(b.data));
    if bits.is_none() && f32s.is_none() {
        return false;
    }
    if b.row_stride == 1 && b.col_stride != 1 {
        // Column j holds k contiguous values from base + j·col_stride.
        if base + (n - 1) * b.col_stride + k > b.data.len() {
            return false;
        }
        for (s, dst) in tiles[..k * 16].chunks_mut(512).enumerate() {
            let first = base + 32 * s;
            // SAFETY: AVX-512F/BW detected above; n ≤ 16 columns of 32 values from
            // `first` at col_stride end inside the data (checked); 512 written.
            unsafe {
                if let Some(d) = bits {
                    let src = d[first..].as_ptr() as *const u16;
                    x86::column_pair_tile_bits(src, b.col_stride, n, dst.as_mut_ptr());
                } else if let Some(d) = f32s {
                    let src = d[first..].as_ptr();
                    x86::column_pair_tile_rounded(src, b.col_stride, n, dst.as_mut_ptr());
                }
            }
        }
        return true;
    }
    if b.col_stride == 1 {
        // Row p holds n contiguous values from base + p·row_stride.
        if base + (k - 1) * b.row_stride + n > b.data.len() {
            return false;
        }
        for p in (0..k).step_by(2) {
            let (r0, r1) = (base + p * b.row_stride, base + (p + 1) * b.row_stride);
            let dst = &mut tiles[(p / 32) * 512 + (p % 32) / 2 * 32..][..32];
            // SAFETY: AVX-512F/BW/VL detected above; rows p and p + 1 < k hold n ≤ 16
            // values inside the data (checked); 32 written.
            unsafe {
                if let Some(d) = bits {
                    let (a, c) = (
                        d[r0..].as_ptr() as *const u16,
                        d[r1..].as_ptr() as *const u16,
                    );
                    x86::row_pair_bits(a, c, n, dst.as_mut_ptr());
                } else if let Some(d) = f32s {
                    x86::row_pair_rounded(d[r0..].as_ptr(), d[r1..].as_ptr(), n, dst.as_mut_ptr());
                }
            }
        }
        return true;
    }
    false
}

/// `bt[j·k + p] = widen(B[p][j])` for batch `bi`: B read row by row, in
/// parallel depth blocks (each task writes its block of every Bᵀ line).
fn transpose_into<E: Sync, O: Copy + Default + Send>(
    b: &Operand<'_, E>,
    bi: usize,
    k: usize,
    n: usize,
    bt: &mut [O],
    parallel: bool,
    widen: impl Fn(&E) -> O + Sync,
) {
    const PB: usize = 512;
    let base = b.offset + bi * b.batch_stride;
    // blocks[q][j]: depth block q of line j.
    let mut blocks: Vec<Vec<&mut [O]>> = (0..k.div_ceil(PB)).map(|_| Vec::new()).collect();
    for line in bt[..n * k].chunks_mut(k) {
        for (q, piece) in line.chunks_mut(PB).enumerate() {
            blocks[q].push(piece);
        }
    }
    let block = |(q, lines): (usize, Vec<&mut [O]>)| {
        let p0 = q * PB;
        let mut lines = lines;
        let mut row_vals = [O::default(); MAX_N];
        for dp in 0..lines[0].len() {
            let row = base + (p0 + dp) * b.row_stride;
            if b.col_stride == 1 {
                for (v, e) in row_vals.iter_mut().zip(&b.data[row..row + n]) {
                    *v = widen(e);
                }
            } else {
                for (j, v) in row_vals[..n].iter_mut().enumerate() {
                    *v = widen(&b.data[row + j * b.col_stride]);
                }
            }
            for (line, &v) in lines.iter_mut().zip(&row_vals) {
                line[dp] = v;
            }
        }
    };
    if parallel {
        blocks.into_par_iter().enumerate().for_each(block);
    } else {
        blocks.into_iter().enumerate().for_each(block);
    }
}

/// `c[i][j] = Σ_p A[i][p] · bt[j][p]` for `rows` rows of A from `base`.
fn rows_times_bt<T: F32Convert>(
    a: &Operand<'_, T>,
    base: usize,
    rows: usize,
    k: usize,
    n: usize,
    bt: &[f32],
    c: &mut [f32],
) {
    for p0 in (0..k).step_by(KB) {
        let kb = KB.min(k - p0);
        for i in (0..rows).step_by(2) {
            let pair = (rows - i).min(2);
            let line = |r: usize| {
                let s = base + (i + r) * a.row_stride + p0;
                if r < pair {
                    &a.data[s..s + kb]
                } else {
                    &[]
                }
            };
            let out = &mut c[i * n..(i + pair) * n];
            #[cfg(target_arch = "x86_64")]
            x86::dots([line(0), line(1)], pair, &bt[p0..], k, kb, n, out);
            #[cfg(not(target_arch = "x86_64"))]
            let _ = (line, out, kb);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use crate::convert::F32Convert;

    /// `$m!(0); … $m!(15);` — column steps with constant indices (a loop over
    /// the columns is not always unrolled, and a variable index spills).
    macro_rules! unroll16 {
        ($m:ident) => {
            $m!(0);
            $m!(1);
            $m!(2);
            $m!(3);
            $m!(4);
            $m!(5);
            $m!(6);
            $m!(7);
            $m!(8);
            $m!(9);
            $m!(10);
            $m!(11);
            $m!(12);
            $m!(13);
            $m!(14);
            $m!(15);
        };
    }
    use amp_dtype::DType;
    use std::arch::x86_64::*;

    /// 16 lanes of a line, widened to f32 in registers (`mask`ed lanes zero).
    trait Lanes {
        /// # Safety
        /// AVX-512F/BW/VL available; the unmasked lanes at `p..p + 16` readable.
        unsafe fn load(p: *const Self, mask: __mmask16) -> __m512;
    }

    impl Lanes for f32 {
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
        unsafe fn load(p: *const f32, mask: __mmask16) -> __m512 {
            // SAFETY: as the trait states.
            unsafe { _mm512_maskz_loadu_ps(mask, p) }
        }
    }

    impl Lanes for amp_dtype::bf16 {
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
        unsafe fn load(p: *const amp_dtype::bf16, mask: __mmask16) -> __m512 {
            // SAFETY: as the trait states. bf16 is the top half of an f32.
            unsafe {
                let h = _mm256_maskz_loadu_epi16(mask, p as *const i16);
                _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
            }
        }
    }

    impl Lanes for amp_dtype::f16 {
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
        unsafe fn load(p: *const amp_dtype::f16, mask: __mmask16) -> __m512 {
            // SAFETY: as the trait states; `vcvtph2ps` is exact.
            unsafe { _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, p as *const i16)) }
        }
    }

    /// `out[r·n + j] += Σ_{p < kb} lines[r][p] · bt[j·ldb + p]` for `rows` (1 or 2)
    /// lines and `n ≤ 16` columns, dispatched to a kernel with `n` fixed.
    pub(super) fn dots<T: F32Convert>(
        lines: [&[T]; 2],
        rows: usize,
        bt: &[f32],
        ldb: usize,
        kb: usize,
        n: usize,
        out: &mut [f32],
    ) {
        match T::DTYPE {
            DType::F32 => {
                // SAFETY: T::DTYPE is F32, so T is f32 and the cast is an identity;
                // the extents are checked in `typed`.
                let lines = unsafe { cast::<T, f32>(lines) };
                typed(lines, rows, bt, ldb, kb, n, out)
            }
            DType::BF16 => {
                // SAFETY: T::DTYPE is BF16, so T is bf16 and the cast is an identity.
                let lines = unsafe { cast::<T, amp_dtype::bf16>(lines) };
                typed(lines, rows, bt, ldb, kb, n, out)
            }
            DType::F16 => {
                // SAFETY: T::DTYPE is F16, so T is f16 and the cast is an identity.
                let lines = unsafe { cast::<T, amp_dtype::f16>(lines) };
                typed(lines, rows, bt, ldb, kb, n, out)
            }
            other => unreachable!("narrow products are taken for f32, bf16 and f16, not {other}"),
        }
    }

    /// # Safety
    /// `T` and `U` are the same type.
    unsafe fn cast<T, U>(lines: [&[T]; 2]) -> [&[U]; 2] {
        // SAFETY: the caller guarantees T = U.
        lines.map(|l| unsafe { std::slice::from_raw_parts(l.as_ptr() as *const U, l.len()) })
    }

    fn typed<T: Lanes>(
        lines: [&[T]; 2],
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
                        // SAFETY: AVX-512F/BW/VL are present (this path is taken at
                        // Isa::Avx512 and above); the extents were checked above.
                        unsafe { if rows == 2 && $n <= 6 {
                            kernel::<T, 2, $n>(kb, [lines[0].as_ptr(), lines[1].as_ptr()], bt.as_ptr(), ldb, out.as_mut_ptr())
                        } else {
                            for r in 0..rows {
                                kernel::<T, 1, $n>(kb, [lines[r].as_ptr()], bt.as_ptr(), ldb, out.as_mut_ptr().add(r * $n))
                            }
                        } }
                    })*
                    _ => unreachable!("n checked above"),
                }
            };
        }
        arms!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16);
    }

    /// `out[j] += Σ_{p < kb} line[p] · bt[j·ldb + p]` for bf16 values (bits in
    /// `bt`) and `n ≤ 16` columns, dispatched to a kernel with `n` fixed.
    pub(super) fn dots_bf16(
        line: &[amp_dtype::bf16],
        bt: &[u16],
        ldb: usize,
        kb: usize,
        n: usize,
        out: &mut [f32],
    ) {
        assert!(line.len() >= kb && out.len() >= n);
        assert!((1..=super::MAX_N).contains(&n) && bt.len() >= (n - 1) * ldb + kb);
        let a = line.as_ptr() as *const u16;
        macro_rules! arms {
            ($($n:literal)*) => {
                match n {
                    // SAFETY: AVX512-BF16 is present (this path is taken at
                    // Isa::Avx512Bf16 and above); the extents were checked above.
                    $($n => unsafe { kernel_bf16::<$n>(kb, a, bt.as_ptr(), ldb, out.as_mut_ptr()) },)*
                    _ => unreachable!("n checked above"),
                }
            };
        }
        arms!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16);
    }

    /// One bf16 line against `N` rows of Bᵀ (bf16 bits) over a depth of `kb`:
    /// `vdpbf16ps` adds the products of 16 pairs per instruction (exact
    /// products, f32 accumulation rounded to nearest even). The last partial
    /// 32-value step uses masked loads (zeros pair with zeros).
    ///
    /// # Safety
    /// AVX-512F/BW and AVX512-BF16 available; `a` holds `kb` values, `bt` `N`
    /// rows of `kb` at stride `ldb`, `c` `N` floats.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn kernel_bf16<const N: usize>(
        kb: usize,
        a: *const u16,
        bt: *const u16,
        ldb: usize,
        c: *mut f32,
    ) {
        let mut acc = [_mm512_setzero_ps(); N];
        // SAFETY: every load stays within the extents stated in the contract (the
        // tail's masked loads touch only its valid values); the transmutes
        // reinterpret 32 bf16 values as the `__m512bh` they are.
        unsafe {
            macro_rules! step {
                ($p:expr, $mask:expr) => {{
                    let (p, mask): (usize, __mmask32) = ($p, $mask);
                    let x: __m512bh =
                        std::mem::transmute(_mm512_maskz_loadu_epi16(mask, a.add(p) as *const i16));
                    macro_rules! column {
                        ($j:literal) => {
                            if $j < N {
                                let b: __m512bh = std::mem::transmute(_mm512_maskz_loadu_epi16(
                                    mask,
                                    bt.add($j * ldb + p) as *const i16,
                                ));
                                acc[$j] = _mm512_dpbf16_ps(acc[$j], x, b);
                            }
                        };
                    }
                    unroll16!(column);
                }};
            }
            for q in 0..kb / 32 {
                step!(32 * q, !0);
            }
            let rem = kb % 32;
            if rem > 0 {
                step!(32 * (kb / 32), (1u32 << rem) - 1);
            }
            for (j, v) in acc.iter().enumerate() {
                *c.add(j) += _mm512_reduce_add_ps(*v);
            }
        }
    }

    /// `R` (1 or 2) lines against `N` rows of Bᵀ over a depth of `kb`; the
    /// last partial 16-lane step uses masked loads.
    ///
    /// # Safety
    /// AVX-512F/BW/VL available; each `a[r]` holds `kb` values; `bt` holds `N` rows of
    /// `kb` floats at stride `ldb`; `c` holds `R·N` floats.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn kernel<T: Lanes, const R: usize, const N: usize>(
        kb: usize,
        a: [*const T; R],
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
                    let x0 = T::load(a[0].add(p), mask);
                    let x1 = T::load(a1.add(p), mask);
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
                    unroll16!(column);
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
