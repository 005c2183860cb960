//! The AVX-512 helpers of the packers and of the narrow products: register
//! interleaves, transposes and gathers of bf16 and f32 lines, and the
//! rounding of f32 lanes to bf16 (nearest even) that `RoundB` packs with;
//! and the AVX2 transpose of f32 lines and row copies (widening bf16/f16).

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

/// `out[2j] = r0[j]`, `out[2j + 1] = r1[j]` for `j < n ≤ 16`: the pair
/// steps of an A panel (12 lines) from a transposed A, a weight gradient's
/// `xᵀ`. Masked loads and a masked store: nothing past `n` is read or written.
///
/// # Safety
/// AVX-512F/BW available; `r0`, `r1` hold `n` values, `out` `2n`; `n ≤ 16`.
#[target_feature(enable = "avx512f,avx512bw")]
pub unsafe fn interleave_short(r0: *const u16, r1: *const u16, n: usize, out: *mut u16) {
    let mask = ((1u32 << n) - 1) as __mmask16;
    // SAFETY: extents as stated in the contract; the masked-off lanes are not accessed.
    unsafe {
        let a = _mm512_maskz_loadu_epi16(mask as __mmask32, r0 as *const i16);
        let b = _mm512_maskz_loadu_epi16(mask as __mmask32, r1 as *const i16);
        let lo = _mm512_cvtepu16_epi32(_mm512_castsi512_si256(a));
        let hi = _mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(b)));
        _mm512_mask_storeu_epi32(out as *mut i32, mask, _mm512_or_si512(lo, hi));
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

/// Steps ahead that [`copy_rows_avx2`] prefetches.
const ROW_PREFETCH: usize = 8;

/// How [`copy_rows_avx2`] widens 8 source values to f32.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RowSource {
    /// f32 values, copied.
    F32,
    /// bf16 bit patterns, shifted into the high halves (a signalling NaN
    /// stays signalling: the products quiet it).
    Bf16,
    /// f16 bit patterns, converted by F16C (exact).
    F16,
}

/// `dst[q·width·depth + p·width + r] = f32(src[p·stride + q·width + r])` for
/// the `panels` full panels `q` of `width` (a multiple of 8) lines, over
/// `p < depth`: step by step, so each step reads one contiguous run of
/// `panels · width` values, with the run [`ROW_PREFETCH`] steps ahead
/// prefetched. The runs of a row-major B lie a whole row apart — a new page
/// each — where the hardware prefetchers do not follow. `src` points to
/// values of `kind` (f32, or 16-bit patterns).
///
/// # Safety
/// AVX2 and F16C available; `width % 8 == 0`; `src + p·stride` (in values of
/// `kind`) holds `panels · width` values for each `p < depth`; `dst` holds
/// `panels · width · depth` values.
#[target_feature(enable = "avx2,f16c")]
pub unsafe fn copy_rows_avx2(
    kind: RowSource,
    src: *const u8,
    stride: usize,
    panels: usize,
    width: usize,
    depth: usize,
    dst: *mut f32,
) {
    let size = if kind == RowSource::F32 { 4 } else { 2 };
    let run = panels * width * size;
    if run == 0 {
        return;
    }
    let load8 = |p: *const u8| {
        // SAFETY: the loop below reads 8 values at `p`, inside a step's run.
        unsafe {
            match kind {
                RowSource::F32 => _mm256_loadu_ps(p as *const f32),
                RowSource::Bf16 => {
                    let h = _mm_loadu_si128(p as *const __m128i);
                    _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
                }
                RowSource::F16 => _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)),
            }
        }
    };
    // SAFETY: extents as stated in the contract; prefetches never fault and
    // their addresses are only formed for steps that exist.
    unsafe {
        for p in 0..depth {
            if p + ROW_PREFETCH < depth {
                let ahead = src.add((p + ROW_PREFETCH) * stride * size) as *const i8;
                for line in (0..run).step_by(64) {
                    _mm_prefetch::<_MM_HINT_T0>(ahead.add(line));
                }
                _mm_prefetch::<_MM_HINT_T0>(ahead.add(run - 1));
            }
            let s = src.add(p * stride * size);
            for q in 0..panels {
                let d = dst.add((q * depth + p) * width);
                for r in (0..width).step_by(8) {
                    _mm256_storeu_ps(d.add(r), load8(s.add((q * width + r) * size)));
                }
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
pub unsafe fn column_pair_tile_bits(src: *const u16, stride: usize, lines: usize, dst: *mut u16) {
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

/// The AVX2 form of [`transpose_lines_f32`], 8 lines × 8 steps at a time:
/// `dst[p·dst_stride + r] = src[r·stride + p]` for `r < lines`, 0 for
/// `lines ≤ r < lanes`, over `p < depth`.
///
/// # Safety
/// AVX2 available; `lines ≤ lanes ≤ 8`; `src + r·stride` holds `depth` values
/// for each `r < lines`; `dst + p·dst_stride` holds `lanes` values for each
/// `p < depth`.
#[target_feature(enable = "avx2")]
pub unsafe fn transpose_lines_f32_avx2(
    src: *const f32,
    stride: usize,
    lines: usize,
    depth: usize,
    dst: *mut f32,
    dst_stride: usize,
    lanes: usize,
) {
    let store = lane_mask(lanes);
    // Rows of fewer than 8 lanes laid end to end (the 6-wide A panels): a full
    // store's surplus lanes land at the start of the next row, which the next
    // store overwrites, so only the last row needs the masked store — which
    // Zen executes slowly (measured: A packing took 9% of a 4096×128×512
    // product on this project's AVX2 EPYC with a masked store per row).
    let spill = (4..8).contains(&lanes) && dst_stride == lanes;
    // SAFETY: extents as stated in the contract; masked-off lanes are not
    // accessed, and a spilling store writes only lanes of row p + 1 < depth.
    unsafe {
        for p0 in (0..depth).step_by(8) {
            let steps = 8.min(depth - p0);
            let load = lane_mask(steps);
            let mut v = [_mm256_setzero_ps(); 8];
            for (r, v) in v.iter_mut().enumerate().take(lines) {
                *v = if steps == 8 {
                    _mm256_loadu_ps(src.add(r * stride + p0))
                } else {
                    _mm256_maskload_ps(src.add(r * stride + p0), load)
                };
            }
            let w = transpose_8x8_ps(&v);
            for (j, w) in w.iter().enumerate().take(steps) {
                let d = dst.add((p0 + j) * dst_stride);
                if lanes == 8 || spill && p0 + j + 1 < depth {
                    _mm256_storeu_ps(d, *w);
                } else {
                    _mm256_maskstore_ps(d, store, *w);
                }
            }
        }
    }
}

/// `w[j]` holds element `j` of every `v[i]` (an 8 × 8 transpose of f32 lanes).
#[target_feature(enable = "avx2")]
fn transpose_8x8_ps(v: &[__m256; 8]) -> [__m256; 8] {
    // Pairs of rows interleaved: t[2i], t[2i + 1] hold columns {0, 1, 4, 5}
    // and {2, 3, 6, 7} of rows 2i and 2i + 1.
    let t0 = _mm256_unpacklo_ps(v[0], v[1]);
    let t1 = _mm256_unpackhi_ps(v[0], v[1]);
    let t2 = _mm256_unpacklo_ps(v[2], v[3]);
    let t3 = _mm256_unpackhi_ps(v[2], v[3]);
    let t4 = _mm256_unpacklo_ps(v[4], v[5]);
    let t5 = _mm256_unpackhi_ps(v[4], v[5]);
    let t6 = _mm256_unpacklo_ps(v[6], v[7]);
    let t7 = _mm256_unpackhi_ps(v[6], v[7]);
    // u_q (rows 0–3) and x_q (rows 4–7): columns q and q + 4.
    let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let x0 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let x1 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let x2 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let x3 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    // The 128-bit halves: low halves give columns 0–3, high halves 4–7.
    [
        _mm256_permute2f128_ps::<0x20>(u0, x0),
        _mm256_permute2f128_ps::<0x20>(u1, x1),
        _mm256_permute2f128_ps::<0x20>(u2, x2),
        _mm256_permute2f128_ps::<0x20>(u3, x3),
        _mm256_permute2f128_ps::<0x31>(u0, x0),
        _mm256_permute2f128_ps::<0x31>(u1, x1),
        _mm256_permute2f128_ps::<0x31>(u2, x2),
        _mm256_permute2f128_ps::<0x31>(u3, x3),
    ]
}

/// The first `n` of 8 lanes on (sign bit set), for AVX2's masked loads and stores.
#[target_feature(enable = "avx2")]
fn lane_mask(n: usize) -> __m256i {
    let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    _mm256_cmpgt_epi32(_mm256_set1_epi32(n.min(8) as i32), lanes)
}

/// Pair-interleaves `lines` lines of bf16 bits that are contiguous along the
/// depth (a row-major A's `MR` rows, a transposed B):
/// `out[pp·2·lines + 2r + e] = src[r·stride + 2pp + e]` for `r < lines`,
/// `pp < pairs`, `e < 2`. Four lines at a time, 16 pairs of each loaded in
/// one register and transposed as 32-bit values (4 × 4 blocks in each
/// 128-bit lane); each lane's four pairs of four lines are one 16-byte store.
/// Replaces a 16-bit load and store per value (A) and a gather per pair (B).
///
/// # Safety
/// AVX-512F available; `lines` a multiple of 4; `src + r·stride` holds
/// `2·pairs` values for each `r < lines`; `out` holds `2·lines·pairs`.
#[target_feature(enable = "avx512f")]
pub unsafe fn transpose_line_pairs(
    src: *const u16,
    stride: usize,
    lines: usize,
    pairs: usize,
    out: *mut u16,
) {
    // SAFETY: extents as stated in the contract.
    unsafe {
        let row = 2 * lines; // u16 values per packed pair step
        for g in (0..lines).step_by(4) {
            let line = |r: usize, pp: usize| src.add((g + r) * stride + 2 * pp);
            let dst = |pp: usize| out.add(pp * row + 2 * g) as *mut __m128i;
            let mut pp = 0;
            while pp + 16 <= pairs {
                let r0 = _mm512_loadu_si512(line(0, pp) as *const _);
                let r1 = _mm512_loadu_si512(line(1, pp) as *const _);
                let r2 = _mm512_loadu_si512(line(2, pp) as *const _);
                let r3 = _mm512_loadu_si512(line(3, pp) as *const _);
                let t0 = _mm512_unpacklo_epi32(r0, r1);
                let t1 = _mm512_unpacklo_epi32(r2, r3);
                let t2 = _mm512_unpackhi_epi32(r0, r1);
                let t3 = _mm512_unpackhi_epi32(r2, r3);
                // Pair 4l + i of the four lines is lane l of o[i].
                let o = [
                    _mm512_unpacklo_epi64(t0, t1),
                    _mm512_unpackhi_epi64(t0, t1),
                    _mm512_unpacklo_epi64(t2, t3),
                    _mm512_unpackhi_epi64(t2, t3),
                ];
                for (i, &v) in o.iter().enumerate() {
                    _mm_storeu_si128(dst(pp + i), _mm512_castsi512_si128(v));
                    _mm_storeu_si128(dst(pp + 4 + i), _mm512_extracti32x4_epi32::<1>(v));
                    _mm_storeu_si128(dst(pp + 8 + i), _mm512_extracti32x4_epi32::<2>(v));
                    _mm_storeu_si128(dst(pp + 12 + i), _mm512_extracti32x4_epi32::<3>(v));
                }
                pp += 16;
            }
            while pp + 4 <= pairs {
                let r0 = _mm_loadu_si128(line(0, pp) as *const _);
                let r1 = _mm_loadu_si128(line(1, pp) as *const _);
                let r2 = _mm_loadu_si128(line(2, pp) as *const _);
                let r3 = _mm_loadu_si128(line(3, pp) as *const _);
                let t0 = _mm_unpacklo_epi32(r0, r1);
                let t1 = _mm_unpacklo_epi32(r2, r3);
                let t2 = _mm_unpackhi_epi32(r0, r1);
                let t3 = _mm_unpackhi_epi32(r2, r3);
                _mm_storeu_si128(dst(pp), _mm_unpacklo_epi64(t0, t1));
                _mm_storeu_si128(dst(pp + 1), _mm_unpackhi_epi64(t0, t1));
                _mm_storeu_si128(dst(pp + 2), _mm_unpacklo_epi64(t2, t3));
                _mm_storeu_si128(dst(pp + 3), _mm_unpackhi_epi64(t2, t3));
                pp += 4;
            }
            for pp in pp..pairs {
                for r in 0..4 {
                    (out.add(pp * row + 2 * (g + r)) as *mut u32)
                        .write_unaligned((line(r, pp) as *const u32).read_unaligned());
                }
            }
        }
    }
}
