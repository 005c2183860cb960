//! Slice conversions between f32 and bf16/f16, bit-exact with amp-dtype's
//! scalar conversions (nearest-even, NaN kept NaN with the quiet bit set, the
//! payload's high bits kept, subnormals exact).
//!
//! bf16 uses integer arithmetic (the same formula as `half`), which the
//! compiler vectorises for every level; f32 → bf16 at the AVX-512 level is
//! written out with intrinsics (16 lanes a step, narrowed by `vpmovdw`:
//! measured, one process alternating the two over 16 Mi values, 6–13% more
//! GB/s than the compiler's loop). The hardware `vcvtneps2bf16` is not used
//! because it flushes subnormal inputs to zero. f16 uses F16C
//! (`vcvtps2ph` with round-to-nearest-even, `vcvtph2ps`), which is exact and
//! keeps subnormals; the AVX-512 level uses the 16-lane forms.
//!
//! Casts whose output is too large for the cache convert in registers and
//! write with non-temporal stores straight into the new tensor
//! ([`cast_streaming`], AVX2 kernels, at every level from AVX2 up), instead of
//! converting into an L1 buffer and streaming that.

use crate::isa::{multiversion, Isa};
use amp_dtype::{bf16, f16};
use amp_tensor::backend::{BinaryOp, HostElement};
use std::mem::MaybeUninit;

/// Element types the fast kernels read as f32 and write from f32.
///
/// f32, bf16 and f16 have SIMD paths; every other element type converts one
/// value at a time through [`amp_dtype::Element`] (so results equal the scalar rules).
pub(crate) trait F32Convert: HostElement {
    /// `dst[i] = src[i] as f32` (exact for every float format here).
    fn load(isa: Isa, src: &[Self], dst: &mut [f32]) {
        let _ = isa;
        for (d, s) in dst.iter_mut().zip(src) {
            *d = s.to_f32();
        }
    }
    /// `dst[i] = round(src[i])`, nearest even.
    fn store(isa: Isa, src: &[f32], dst: &mut [Self]) {
        let _ = isa;
        for (d, s) in dst.iter_mut().zip(src) {
            *d = Self::from_f32(*s);
        }
    }
    /// The slice itself when `Self` is bf16 (for the bf16-native GEMM kernels).
    fn as_bf16(src: &[Self]) -> Option<&[bf16]> {
        let _ = src;
        None
    }
    /// The slice itself when `Self` is f32 (lets kernels skip a copy).
    fn as_f32(src: &[Self]) -> Option<&[f32]> {
        let _ = src;
        None
    }
    /// The slice itself when `Self` is f32.
    fn as_f32_mut(dst: &mut [Self]) -> Option<&mut [f32]> {
        let _ = dst;
        None
    }
    /// The uninitialised slice itself when `Self` is f32.
    fn as_f32_uninit(dst: &mut [MaybeUninit<Self>]) -> Option<&mut [MaybeUninit<f32>]> {
        let _ = dst;
        None
    }
    /// The slice itself when `Self` is f16.
    fn as_f16(src: &[Self]) -> Option<&[f16]> {
        let _ = src;
        None
    }
    /// The uninitialised slice itself when `Self` is bf16.
    fn as_bf16_uninit(dst: &mut [MaybeUninit<Self>]) -> Option<&mut [MaybeUninit<bf16>]> {
        let _ = dst;
        None
    }
    /// [`F32Convert::load`] into uninitialised memory with non-temporal
    /// stores, if this format and level have such a kernel; false (nothing
    /// written) otherwise. See [`cast_streaming`].
    fn load_streaming(isa: Isa, src: &[Self], dst: &mut [MaybeUninit<f32>]) -> bool {
        let _ = (isa, src, dst);
        false
    }
    /// [`F32Convert::store`] into uninitialised memory with non-temporal
    /// stores, if this format and level have such a kernel; false (nothing
    /// written) otherwise. See [`cast_streaming`].
    fn store_streaming(isa: Isa, src: &[f32], dst: &mut [MaybeUninit<Self>]) -> bool {
        let _ = (isa, src, dst);
        false
    }
}

/// `dst[i] = bf16(op(a[i], b[i]))`, computed in f32 and rounded nearest even,
/// in one pass from registers (non-temporal stores when `stream`): true when
/// done; false, with nothing written, when `op` is not one of the four IEEE
/// operations or the level has no such kernel (empty slices ask only that).
///
/// The general path widens both inputs into an L1 buffer, runs the op over it
/// and rounds into another: three passes, about 1.3 cycles per value on this
/// project's AVX2 EPYC (in cache) against ~0.6 in one pass; the three passes
/// left a 16 Mi-value bf16 `add` at half the copy bandwidth. The bits are the
/// general path's.
pub(crate) fn bf16_binary(
    isa: Isa,
    op: BinaryOp,
    a: &[bf16],
    b: &[bf16],
    dst: &mut [MaybeUninit<bf16>],
    stream: bool,
) -> bool {
    assert!(
        a.len() == dst.len() && b.len() == dst.len(),
        "bf16_binary: lengths differ"
    );
    #[cfg(target_arch = "x86_64")]
    if isa >= Isa::Avx2 {
        // SAFETY: AVX2 is present at this level; the lengths are equal.
        return unsafe { x86::bf16_binary(op, a, b, dst, stream) };
    }
    let _ = (isa, op, stream);
    false
}

/// `dst[i] = op(a[i], b[i])` for f32 operands and output, in one pass from
/// registers (non-temporal stores when `stream`): true when done; false, with
/// nothing written, when `op` is not one of the four IEEE operations or the
/// level has no such kernel (empty slices ask only that).
///
/// The general path computes each chunk into an L1 buffer and copies it out:
/// a second pass over every value. On a Zen 4 EPYC, a 16 Mi-value `add` ran
/// at 0.68 of the best copy that way. The values are IEEE's, as the
/// general path's.
pub(crate) fn f32_binary(
    isa: Isa,
    op: BinaryOp,
    a: &[f32],
    b: &[f32],
    dst: &mut [MaybeUninit<f32>],
    stream: bool,
) -> bool {
    assert!(
        a.len() == dst.len() && b.len() == dst.len(),
        "f32_binary: lengths differ"
    );
    #[cfg(target_arch = "x86_64")]
    if isa >= Isa::Avx2 {
        // SAFETY: AVX2 is present at this level; the lengths are equal.
        return unsafe { x86::f32_binary(op, a, b, dst, stream) };
    }
    let _ = (isa, op, stream);
    false
}

/// `dst[i] = relu(src[i])` (a NaN kept, −0 to +0, as the general path) for
/// f32 or bf16 input and output, both of one type, in one pass from registers
/// (non-temporal stores when `stream`): true when done; false, with nothing
/// written, when the type or level has no such kernel (empty slices ask only
/// that). The general path computes each chunk into an L1 buffer in f32
/// and copies it out (bf16: widens first and rounds after — exact for ReLU);
/// on a Zen 4 EPYC, `cargo xtask bench --only memory` alternated twice: a
/// 16 Mi-value f32 ReLU 28–35 → 38–42 GB/s (best copy 39–49).
pub(crate) fn relu<S: F32Convert, D: F32Convert>(
    isa: Isa,
    src: &[S],
    dst: &mut [MaybeUninit<D>],
    stream: bool,
) -> bool {
    assert_eq!(src.len(), dst.len(), "relu: lengths differ");
    #[cfg(target_arch = "x86_64")]
    if isa >= Isa::Avx2 {
        if let (Some(s), Some(d)) = (S::as_f32(src), D::as_f32_uninit(dst)) {
            // SAFETY: AVX2 is present at this level; the lengths are equal.
            unsafe { x86::relu_f32(s, d, stream) };
            return true;
        }
        if let (Some(s), Some(d)) = (S::as_bf16(src), D::as_bf16_uninit(dst)) {
            // SAFETY: AVX2 is present at this level; the lengths are equal.
            unsafe { x86::relu_bf16(s, d, stream) };
            return true;
        }
    }
    let _ = (isa, src, dst, stream);
    false
}

/// `dst[i] = src[i]` converted (nearest even), written straight from the
/// registers with non-temporal stores — for outputs too large to stay in the
/// cache. True when done; false, with nothing written, when the pair of formats
/// has no such kernel at this level (empty slices ask only that).
///
/// The kernels are AVX2 (32-byte streaming stores) and run at every level
/// from AVX2 up. On this project's AVX2 EPYC, converting in registers and
/// streaming the result measured 33 GB/s against 27 for converting into an L1
/// buffer and streaming that (f32 → f16, 16 Mi values, two threads, medians of
/// 8 alternated rounds). On a Zen 4 EPYC (AVX512-BF16) against the AVX-512
/// buffered path with 64-byte streaming stores, `cargo xtask bench --only
/// memory` alternated twice: f32 → f16 28–32 → 35–41 GB/s, bf16 → f32 24–25
/// → 34–36, f32 → bf16 32–39 → 39–42 (the best copy there: 38–43).
pub(crate) fn cast_streaming<S: F32Convert, D: F32Convert>(
    isa: Isa,
    src: &[S],
    dst: &mut [MaybeUninit<D>],
) -> bool {
    debug_assert_eq!(src.len(), dst.len());
    if let Some(s) = S::as_f32(src) {
        return D::store_streaming(isa, s, dst);
    }
    if let Some(d) = D::as_f32_uninit(dst) {
        return S::load_streaming(isa, src, d);
    }
    false
}

impl F32Convert for f32 {
    fn load(_: Isa, src: &[f32], dst: &mut [f32]) {
        dst.copy_from_slice(&src[..dst.len()]);
    }
    fn store(_: Isa, src: &[f32], dst: &mut [f32]) {
        let n = dst.len();
        dst.copy_from_slice(&src[..n]);
    }
    fn as_f32(src: &[f32]) -> Option<&[f32]> {
        Some(src)
    }
    fn as_f32_mut(dst: &mut [f32]) -> Option<&mut [f32]> {
        Some(dst)
    }
    fn as_f32_uninit(dst: &mut [MaybeUninit<f32>]) -> Option<&mut [MaybeUninit<f32>]> {
        Some(dst)
    }
}

impl F32Convert for bf16 {
    fn as_bf16(src: &[bf16]) -> Option<&[bf16]> {
        Some(src)
    }
    fn as_bf16_uninit(dst: &mut [MaybeUninit<bf16>]) -> Option<&mut [MaybeUninit<bf16>]> {
        Some(dst)
    }
    fn load(isa: Isa, src: &[bf16], dst: &mut [f32]) {
        bf16_to_f32(isa, src, dst)
    }
    fn store(isa: Isa, src: &[f32], dst: &mut [bf16]) {
        f32_to_bf16(isa, src, dst)
    }
    fn load_streaming(isa: Isa, src: &[bf16], dst: &mut [MaybeUninit<f32>]) -> bool {
        #[cfg(target_arch = "x86_64")]
        if isa >= Isa::Avx2 && src.len() == dst.len() {
            // SAFETY: AVX2 is present at this level; the lengths are equal.
            unsafe { x86::bf16_to_f32_streaming(src, dst) };
            return true;
        }
        let _ = (isa, src, dst);
        false
    }
    fn store_streaming(isa: Isa, src: &[f32], dst: &mut [MaybeUninit<bf16>]) -> bool {
        #[cfg(target_arch = "x86_64")]
        if isa >= Isa::Avx2 && src.len() == dst.len() {
            // SAFETY: AVX2 is present at this level; the lengths are equal.
            unsafe { x86::f32_to_bf16_streaming(src, dst) };
            return true;
        }
        let _ = (isa, src, dst);
        false
    }
}

impl F32Convert for f16 {
    fn as_f16(src: &[f16]) -> Option<&[f16]> {
        Some(src)
    }
    fn load(isa: Isa, src: &[f16], dst: &mut [f32]) {
        f16_to_f32(isa, src, dst)
    }
    fn store(isa: Isa, src: &[f32], dst: &mut [f16]) {
        f32_to_f16(isa, src, dst)
    }
    fn load_streaming(isa: Isa, src: &[f16], dst: &mut [MaybeUninit<f32>]) -> bool {
        #[cfg(target_arch = "x86_64")]
        if isa >= Isa::Avx2 && src.len() == dst.len() {
            // SAFETY: AVX2 and F16C are present at this level; the lengths are equal.
            unsafe { x86::f16_to_f32_streaming(src, dst) };
            return true;
        }
        let _ = (isa, src, dst);
        false
    }
    fn store_streaming(isa: Isa, src: &[f32], dst: &mut [MaybeUninit<f16>]) -> bool {
        #[cfg(target_arch = "x86_64")]
        if isa >= Isa::Avx2 && src.len() == dst.len() {
            // SAFETY: AVX2 and F16C are present at this level; the lengths are equal.
            unsafe { x86::f32_to_f16_streaming(src, dst) };
            return true;
        }
        let _ = (isa, src, dst);
        false
    }
}

impl F32Convert for f64 {}
impl F32Convert for i64 {}
impl F32Convert for u8 {}
impl F32Convert for bool {}
impl F32Convert for amp_dtype::F8E4M3 {}
impl F32Convert for amp_dtype::F8E5M2 {}

/// One bf16 bit pattern widened to f32 bits, quieting a signalling NaN as `half` does.
#[inline(always)]
pub(crate) fn bf16_bits_to_f32(b: u16) -> f32 {
    let w = b as u32;
    let w = if w & 0x7FFF > 0x7F80 { w | 0x0040 } else { w };
    f32::from_bits(w << 16)
}

/// One f32 rounded to bf16 bits, nearest even; NaN keeps its high payload with the quiet bit set.
#[inline(always)]
pub(crate) fn f32_to_bf16_bits(x: f32) -> u16 {
    let x = x.to_bits();
    let rounded = (x.wrapping_add(0x7FFF + ((x >> 16) & 1))) >> 16;
    let nan = (x >> 16) | 0x0040;
    if x & 0x7FFF_FFFF > 0x7F80_0000 {
        nan as u16
    } else {
        rounded as u16
    }
}

multiversion! {
    /// bf16 → f32 over a slice (`dst.len()` elements).
    pub(crate) fn bf16_to_f32(isa: Isa, src: &[bf16], dst: &mut [f32]) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = bf16_bits_to_f32(s.to_bits());
        }
    }
}

/// f32 → bf16 over a slice, nearest even (`dst.len()` elements).
pub(crate) fn f32_to_bf16(isa: Isa, src: &[f32], dst: &mut [bf16]) {
    let n = dst.len();
    let src = &src[..n];
    #[cfg(target_arch = "x86_64")]
    if isa >= Isa::Avx512 {
        // SAFETY: AVX-512F/BW are present at this level; both slices hold `n` elements.
        return unsafe { x86::f32_to_bf16_avx512(src, dst) };
    }
    f32_to_bf16_auto(isa, src, dst)
}

multiversion! {
    /// f32 → bf16 over a slice by the scalar rule, vectorised by the compiler.
    fn f32_to_bf16_auto(isa: Isa, src: &[f32], dst: &mut [bf16]) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = bf16::from_bits(f32_to_bf16_bits(*s));
        }
    }
}

/// f16 → f32 over a slice (`dst.len()` elements).
pub(crate) fn f16_to_f32(isa: Isa, src: &[f16], dst: &mut [f32]) {
    let n = dst.len();
    let src = &src[..n];
    #[cfg(target_arch = "x86_64")]
    {
        if isa >= Isa::Avx512 {
            // SAFETY: AVX-512F is present at this level; both slices hold `n` elements.
            return unsafe { x86::f16_to_f32_avx512(src, dst) };
        }
        if isa >= Isa::Avx2 {
            // SAFETY: F16C is present at this level; both slices hold `n` elements.
            return unsafe { x86::f16_to_f32_f16c(src, dst) };
        }
    }
    let _ = isa;
    for (d, s) in dst.iter_mut().zip(src) {
        *d = s.to_f32();
    }
}

/// f32 → f16 over a slice, nearest even (`dst.len()` elements).
pub(crate) fn f32_to_f16(isa: Isa, src: &[f32], dst: &mut [f16]) {
    let n = dst.len();
    let src = &src[..n];
    #[cfg(target_arch = "x86_64")]
    {
        if isa >= Isa::Avx512 {
            // SAFETY: AVX-512F is present at this level; both slices hold `n` elements.
            return unsafe { x86::f32_to_f16_avx512(src, dst) };
        }
        if isa >= Isa::Avx2 {
            // SAFETY: F16C is present at this level; both slices hold `n` elements.
            return unsafe { x86::f32_to_f16_f16c(src, dst) };
        }
    }
    let _ = isa;
    for (d, s) in dst.iter_mut().zip(src) {
        *d = f16::from_f32(*s);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use amp_dtype::{bf16, f16};
    use amp_tensor::backend::BinaryOp;
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    /// Runs a streaming conversion: `one(i)` converts element `i` with plain
    /// stores until the output is 32-byte aligned and for the tail; `block(i)`
    /// converts `STEP` elements from `i` (output 32-byte aligned there) with
    /// non-temporal stores; then a store fence, so the data is visible before
    /// the caller hands the buffer on.
    ///
    /// # Safety
    /// `dst` points to `n` elements; `block(i)` is sound for every `i` with
    /// `i + STEP <= n` and `dst + i` 32-byte aligned, `one(i)` for every `i < n`.
    #[inline(always)]
    unsafe fn streamed<D, const STEP: usize>(
        dst: *mut D,
        n: usize,
        mut one: impl FnMut(usize),
        mut block: impl FnMut(usize),
    ) {
        let head = dst.align_offset(32).min(n);
        (0..head).for_each(&mut one);
        let mut i = head;
        while i + STEP <= n {
            block(i);
            i += STEP;
        }
        (i..n).for_each(one);
        // SAFETY: SSE is part of x86-64.
        unsafe { _mm_sfence() };
    }

    /// Writes `n` outputs in one pass from registers: `block(i)` computes the
    /// 32 bytes of outputs `i..i + STEP`, stored non-temporally through
    /// [`streamed`] when `stream`, else with plain unaligned stores; `one(i)`
    /// writes output `i` alone (the head before alignment, the tail).
    ///
    /// # Safety
    /// AVX2 available; `dst` points to `n` elements, `STEP` of them 32 bytes;
    /// `block(i)` is sound for every `i` with `i + STEP <= n`, `one(i)` for
    /// every `i < n`.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn one_pass<D, const STEP: usize>(
        dst: *mut D,
        n: usize,
        stream: bool,
        mut one: impl FnMut(usize),
        block: impl Fn(usize) -> __m256i,
    ) {
        // SAFETY: every store covers outputs i..i + STEP with i + STEP <= n
        // (32 bytes, aligned where streamed); the rest as the caller promises.
        unsafe {
            if stream {
                let put = |i: usize| _mm256_stream_si256(dst.add(i) as *mut __m256i, block(i));
                streamed::<_, STEP>(dst, n, one, put)
            } else {
                let mut i = 0;
                while i + STEP <= n {
                    _mm256_storeu_si256(dst.add(i) as *mut __m256i, block(i));
                    i += STEP;
                }
                (i..n).for_each(&mut one);
            }
        }
    }

    /// f32 → f16 (F16C, nearest even), 16 values per 32-byte streaming store.
    ///
    /// # Safety
    /// AVX2 and F16C must be available; `src.len() == dst.len()`.
    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn f32_to_f16_streaming(src: &[f32], dst: &mut [MaybeUninit<f16>]) {
        let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
        let one = |i: usize| {
            // SAFETY: i < n, in bounds of both slices.
            unsafe { (*d.add(i)).write(f16::from_f32(*s.add(i))) };
        };
        let block = |i: usize| {
            // SAFETY: i + 16 <= n; d + i is 32-byte aligned.
            unsafe {
                let lo = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(s.add(i)));
                let hi =
                    _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(s.add(i + 8)));
                _mm256_stream_si256(d.add(i) as *mut __m256i, _mm256_set_m128i(hi, lo));
            }
        };
        // SAFETY: as `streamed` requires, by the two closures' bounds.
        unsafe { streamed::<_, 16>(d, dst.len(), one, block) }
    }

    /// f16 → f32 (F16C, exact), 8 values per 32-byte streaming store.
    ///
    /// # Safety
    /// AVX2 and F16C must be available; `src.len() == dst.len()`.
    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn f16_to_f32_streaming(src: &[f16], dst: &mut [MaybeUninit<f32>]) {
        let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
        let one = |i: usize| {
            // SAFETY: i < n, in bounds of both slices.
            unsafe { (*d.add(i)).write((*s.add(i)).to_f32()) };
        };
        let block = |i: usize| {
            // SAFETY: i + 8 <= n; d + i is 32-byte aligned.
            unsafe {
                let h = _mm_loadu_si128(s.add(i) as *const __m128i);
                _mm256_stream_ps(d.add(i) as *mut f32, _mm256_cvtph_ps(h));
            }
        };
        // SAFETY: as `streamed` requires, by the two closures' bounds.
        unsafe { streamed::<_, 8>(d, dst.len(), one, block) }
    }

    /// [`super::f32_to_bf16_bits`] on 8 lanes (nearest even; a NaN keeps its
    /// high payload with the quiet bit set), in 32-bit lanes.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn bf16_bits_avx2(x: __m256i) -> __m256i {
        let high = _mm256_srli_epi32::<16>(x);
        let odd = _mm256_and_si256(high, _mm256_set1_epi32(1));
        let bias = _mm256_add_epi32(_mm256_set1_epi32(0x7FFF), odd);
        let rounded = _mm256_srli_epi32::<16>(_mm256_add_epi32(x, bias));
        let abs = _mm256_and_si256(x, _mm256_set1_epi32(0x7FFF_FFFF));
        let nan = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x7F80_0000));
        let quiet = _mm256_or_si256(high, _mm256_set1_epi32(0x0040));
        _mm256_blendv_epi8(rounded, quiet, nan)
    }

    /// f32 → bf16 by [`super::f32_to_bf16_bits`], 16 values per 32-byte streaming store.
    ///
    /// # Safety
    /// AVX2 must be available; `src.len() == dst.len()`.
    #[target_feature(enable = "avx2")]
    pub unsafe fn f32_to_bf16_streaming(src: &[f32], dst: &mut [MaybeUninit<bf16>]) {
        let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
        let one = |i: usize| {
            // SAFETY: i < n, in bounds of both slices.
            unsafe { (*d.add(i)).write(bf16::from_bits(super::f32_to_bf16_bits(*s.add(i)))) };
        };
        let block = |i: usize| {
            // SAFETY: i + 16 <= n; d + i is 32-byte aligned.
            unsafe {
                let lo = bf16_bits_avx2(_mm256_loadu_si256(s.add(i) as *const __m256i));
                let hi = bf16_bits_avx2(_mm256_loadu_si256(s.add(i + 8) as *const __m256i));
                // Every lane is below 2^16, so the saturating pack is exact; it
                // interleaves 128-bit halves, which the permute puts back in order.
                let packed = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packus_epi32(lo, hi));
                _mm256_stream_si256(d.add(i) as *mut __m256i, packed);
            }
        };
        // SAFETY: as `streamed` requires, by the two closures' bounds.
        unsafe { streamed::<_, 16>(d, dst.len(), one, block) }
    }

    /// `dst[i] = bf16(op(a[i], b[i]))` for an IEEE arithmetic `op` (`vop` on 8
    /// lanes, `sop` on one), computed in f32 and rounded nearest even, in one
    /// pass from registers: 16 values per 32-byte store, non-temporal when
    /// `stream`.
    ///
    /// The widening skips the quieting of signalling NaNs and the rounding
    /// skips the NaN test of [`bf16_bits_avx2`]: the arithmetic quiets a
    /// signalling NaN operand itself, and every NaN it returns (an operand's,
    /// or the default NaN) has the 16 low bits of a widened bf16 — zero — so
    /// adding the rounding bias cannot carry into its exponent. The bits are
    /// those of widening, `sop` and [`super::f32_to_bf16_bits`].
    ///
    /// # Safety
    /// AVX2 must be available; `a`, `b` and `dst` have equal lengths.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn bf16_arith(
        a: &[bf16],
        b: &[bf16],
        dst: &mut [MaybeUninit<bf16>],
        stream: bool,
        vop: impl Fn(__m256, __m256) -> __m256,
        sop: impl Fn(f32, f32) -> f32,
    ) {
        let (pa, pb, d) = (a.as_ptr(), b.as_ptr(), dst.as_mut_ptr());
        let one = |i: usize| {
            // SAFETY: i < n, in bounds of the three slices.
            unsafe {
                let x = super::bf16_bits_to_f32((*pa.add(i)).to_bits());
                let y = super::bf16_bits_to_f32((*pb.add(i)).to_bits());
                (*d.add(i)).write(bf16::from_bits(super::f32_to_bf16_bits(sop(x, y))));
            }
        };
        let widen = |p: *const bf16| {
            // SAFETY: the callers below read 8 values in bounds.
            unsafe {
                let h = _mm_loadu_si128(p as *const __m128i);
                _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
            }
        };
        let round = |v: __m256| {
            let x = _mm256_castps_si256(v);
            let odd = _mm256_and_si256(_mm256_srli_epi32::<16>(x), _mm256_set1_epi32(1));
            let bias = _mm256_add_epi32(_mm256_set1_epi32(0x7FFF), odd);
            _mm256_srli_epi32::<16>(_mm256_add_epi32(x, bias))
        };
        let block = |i: usize| {
            // SAFETY: i + 16 <= n, in bounds of the three slices.
            unsafe {
                let lo = round(vop(widen(pa.add(i)), widen(pb.add(i))));
                let hi = round(vop(widen(pa.add(i + 8)), widen(pb.add(i + 8))));
                // Lanes below 2^16: the saturating pack is exact; the permute
                // undoes its interleaving of 128-bit halves.
                _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packus_epi32(lo, hi))
            }
        };
        // SAFETY: as `one_pass` requires, by the closures' bounds.
        unsafe { one_pass::<_, 16>(d, dst.len(), stream, one, block) }
    }

    /// [`bf16_arith`] for `op` when it is one of the four IEEE operations;
    /// false, with nothing written, otherwise.
    ///
    /// # Safety
    /// AVX2 must be available; `a`, `b` and `dst` have equal lengths.
    #[target_feature(enable = "avx2")]
    pub unsafe fn bf16_binary(
        op: BinaryOp,
        a: &[bf16],
        b: &[bf16],
        dst: &mut [MaybeUninit<bf16>],
        stream: bool,
    ) -> bool {
        let d = dst;
        match op {
            // SAFETY: as this function requires.
            BinaryOp::Add => unsafe {
                bf16_arith(a, b, d, stream, |x, y| _mm256_add_ps(x, y), |x, y| x + y)
            },
            // SAFETY: as this function requires.
            BinaryOp::Sub => unsafe {
                bf16_arith(a, b, d, stream, |x, y| _mm256_sub_ps(x, y), |x, y| x - y)
            },
            // SAFETY: as this function requires.
            BinaryOp::Mul => unsafe {
                bf16_arith(a, b, d, stream, |x, y| _mm256_mul_ps(x, y), |x, y| x * y)
            },
            // SAFETY: as this function requires.
            BinaryOp::Div => unsafe {
                bf16_arith(a, b, d, stream, |x, y| _mm256_div_ps(x, y), |x, y| x / y)
            },
            _ => return false,
        }
        true
    }

    /// `dst[i] = op(a[i], b[i])` on f32 for an IEEE arithmetic `op` (`vop` on
    /// 8 lanes, `sop` on one), in one pass from registers: 8 values per
    /// 32-byte store, non-temporal when `stream`.
    ///
    /// # Safety
    /// AVX2 must be available; `a`, `b` and `dst` have equal lengths.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn f32_arith(
        a: &[f32],
        b: &[f32],
        dst: &mut [MaybeUninit<f32>],
        stream: bool,
        vop: impl Fn(__m256, __m256) -> __m256,
        sop: impl Fn(f32, f32) -> f32,
    ) {
        let (pa, pb, d) = (a.as_ptr(), b.as_ptr(), dst.as_mut_ptr());
        let one = |i: usize| {
            // SAFETY: i < n, in bounds of the three slices.
            unsafe { (*d.add(i)).write(sop(*pa.add(i), *pb.add(i))) };
        };
        let block = |i: usize| {
            // SAFETY: the callers pass i + 8 <= n, in bounds of the three slices.
            unsafe { vop(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i))) }
        };
        // SAFETY: as `one_pass` requires, by the closures' bounds.
        unsafe { one_pass::<_, 8>(d, dst.len(), stream, one, |i| _mm256_castps_si256(block(i))) }
    }

    /// [`f32_arith`] for `op` when it is one of the four IEEE operations;
    /// false, with nothing written, otherwise.
    ///
    /// # Safety
    /// AVX2 must be available; `a`, `b` and `dst` have equal lengths.
    #[target_feature(enable = "avx2")]
    pub unsafe fn f32_binary(
        op: BinaryOp,
        a: &[f32],
        b: &[f32],
        dst: &mut [MaybeUninit<f32>],
        stream: bool,
    ) -> bool {
        let d = dst;
        match op {
            // SAFETY: as this function requires.
            BinaryOp::Add => unsafe {
                f32_arith(a, b, d, stream, |x, y| _mm256_add_ps(x, y), |x, y| x + y)
            },
            // SAFETY: as this function requires.
            BinaryOp::Sub => unsafe {
                f32_arith(a, b, d, stream, |x, y| _mm256_sub_ps(x, y), |x, y| x - y)
            },
            // SAFETY: as this function requires.
            BinaryOp::Mul => unsafe {
                f32_arith(a, b, d, stream, |x, y| _mm256_mul_ps(x, y), |x, y| x * y)
            },
            // SAFETY: as this function requires.
            BinaryOp::Div => unsafe {
                f32_arith(a, b, d, stream, |x, y| _mm256_div_ps(x, y), |x, y| x / y)
            },
            _ => return false,
        }
        true
    }

    /// `dst[i] = relu(src[i])` on f32: `x` where `x > 0` or `x` is a NaN,
    /// else +0 (an unordered compare as the mask), 8 values per 32-byte store,
    /// non-temporal when `stream`.
    ///
    /// # Safety
    /// AVX2 must be available; `src.len() == dst.len()`.
    #[target_feature(enable = "avx2")]
    pub unsafe fn relu_f32(src: &[f32], dst: &mut [MaybeUninit<f32>], stream: bool) {
        let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
        let scalar = |v: f32| if v > 0.0 || v.is_nan() { v } else { 0.0 };
        let one = |i: usize| {
            // SAFETY: i < n, in bounds of both slices.
            unsafe { (*d.add(i)).write(scalar(*s.add(i))) };
        };
        let block = |i: usize| {
            // SAFETY: the callers pass i + 8 <= n, in bounds of `src`.
            let v = unsafe { _mm256_loadu_ps(s.add(i)) };
            _mm256_and_ps(v, _mm256_cmp_ps::<_CMP_NLE_UQ>(v, _mm256_setzero_ps()))
        };
        // SAFETY: as `one_pass` requires, by the closures' bounds.
        unsafe { one_pass::<_, 8>(d, dst.len(), stream, one, |i| _mm256_castps_si256(block(i))) }
    }

    /// `dst[i] = relu(src[i])` on bf16 bits: zero where the sign is set and the
    /// value is not a NaN (magnitude bits above `0x7F80`), a NaN with its quiet
    /// bit set, else the bits as they are — what widening (which quiets a
    /// signalling NaN), the f32 ReLU and rounding give. 16 values per 32-byte
    /// store, non-temporal when `stream`.
    ///
    /// # Safety
    /// AVX2 must be available; `src.len() == dst.len()`.
    #[target_feature(enable = "avx2")]
    pub unsafe fn relu_bf16(src: &[bf16], dst: &mut [MaybeUninit<bf16>], stream: bool) {
        let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
        let scalar = |x: u16| {
            if x & 0x7FFF > 0x7F80 {
                x | 0x0040
            } else if x & 0x8000 != 0 {
                0
            } else {
                x
            }
        };
        let one = |i: usize| {
            // SAFETY: i < n, in bounds of both slices.
            unsafe { (*d.add(i)).write(bf16::from_bits(scalar((*s.add(i)).to_bits()))) };
        };
        let block = |i: usize| {
            // SAFETY: the callers pass i + 16 <= n, in bounds of `src`.
            let x = unsafe { _mm256_loadu_si256(s.add(i) as *const __m256i) };
            let negative = _mm256_cmpgt_epi16(_mm256_setzero_si256(), x);
            let magnitude = _mm256_and_si256(x, _mm256_set1_epi16(0x7FFF));
            let nan = _mm256_cmpgt_epi16(magnitude, _mm256_set1_epi16(0x7F80));
            // Zero where negative and not a NaN; a NaN quieted.
            let kept = _mm256_andnot_si256(_mm256_andnot_si256(nan, negative), x);
            _mm256_or_si256(kept, _mm256_and_si256(nan, _mm256_set1_epi16(0x0040)))
        };
        // SAFETY: as `one_pass` requires, by the closures' bounds.
        unsafe { one_pass::<_, 16>(d, dst.len(), stream, one, block) }
    }

    /// bf16 → f32 (exact; a signalling NaN quieted as `half` does), 8 values
    /// per 32-byte streaming store.
    ///
    /// # Safety
    /// AVX2 must be available; `src.len() == dst.len()`.
    #[target_feature(enable = "avx2")]
    pub unsafe fn bf16_to_f32_streaming(src: &[bf16], dst: &mut [MaybeUninit<f32>]) {
        let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
        let one = |i: usize| {
            // SAFETY: i < n, in bounds of both slices.
            unsafe { (*d.add(i)).write(super::bf16_bits_to_f32((*s.add(i)).to_bits())) };
        };
        let block = |i: usize| {
            // SAFETY: i + 8 <= n; d + i is 32-byte aligned.
            unsafe {
                let h = _mm_loadu_si128(s.add(i) as *const __m128i);
                let x = _mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h));
                let abs = _mm256_and_si256(x, _mm256_set1_epi32(0x7FFF_FFFF));
                let nan = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x7F80_0000));
                let quiet = _mm256_and_si256(nan, _mm256_set1_epi32(0x0040_0000));
                _mm256_stream_si256(d.add(i) as *mut __m256i, _mm256_or_si256(x, quiet));
            }
        };
        // SAFETY: as `streamed` requires, by the two closures' bounds.
        unsafe { streamed::<_, 8>(d, dst.len(), one, block) }
    }

    /// # Safety
    /// F16C and AVX must be available; `src.len() == dst.len()`.
    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn f16_to_f32_f16c(src: &[f16], dst: &mut [f32]) {
        let n = dst.len();
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: i + 8 <= n elements are in bounds of both slices.
            unsafe {
                let h = _mm_loadu_si128(src.as_ptr().add(i) as *const __m128i);
                _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
            }
            i += 8;
        }
        for j in i..n {
            dst[j] = src[j].to_f32();
        }
    }

    /// # Safety
    /// F16C and AVX must be available; `src.len() == dst.len()`.
    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn f32_to_f16_f16c(src: &[f32], dst: &mut [f16]) {
        let n = dst.len();
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: i + 8 <= n elements are in bounds of both slices.
            unsafe {
                let v = _mm256_loadu_ps(src.as_ptr().add(i));
                let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
                _mm_storeu_si128(dst.as_mut_ptr().add(i) as *mut __m128i, h);
            }
            i += 8;
        }
        for j in i..n {
            dst[j] = f16::from_f32(src[j]);
        }
    }

    /// # Safety
    /// AVX-512F must be available; `src.len() == dst.len()`.
    #[target_feature(enable = "avx512f,avx2,f16c")]
    pub unsafe fn f16_to_f32_avx512(src: &[f16], dst: &mut [f32]) {
        let n = dst.len();
        let mut i = 0;
        while i + 16 <= n {
            // SAFETY: i + 16 <= n elements are in bounds of both slices.
            unsafe {
                let h = _mm256_loadu_si256(src.as_ptr().add(i) as *const __m256i);
                _mm512_storeu_ps(dst.as_mut_ptr().add(i), _mm512_cvtph_ps(h));
            }
            i += 16;
        }
        // SAFETY: same features; the tail slices have equal lengths.
        unsafe { f16_to_f32_f16c(&src[i..n], &mut dst[i..n]) }
    }

    /// [`super::f32_to_bf16_bits`] on 16 lanes at a time.
    ///
    /// # Safety
    /// AVX-512F and AVX-512BW must be available; `src.len() == dst.len()`.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn f32_to_bf16_avx512(src: &[f32], dst: &mut [bf16]) {
        let n = dst.len();
        let (one, half, abs, inf) = (
            _mm512_set1_epi32(1),
            _mm512_set1_epi32(0x7FFF),
            _mm512_set1_epi32(0x7FFF_FFFF),
            _mm512_set1_epi32(0x7F80_0000),
        );
        let quiet = _mm512_set1_epi32(0x0040);
        let mut i = 0;
        while i + 16 <= n {
            // SAFETY: i + 16 <= n elements are in bounds of both slices.
            unsafe {
                let x = _mm512_loadu_si512(src.as_ptr().add(i) as *const __m512i);
                let high = _mm512_srli_epi32::<16>(x);
                let odd = _mm512_and_si512(high, one);
                let rounded =
                    _mm512_srli_epi32::<16>(_mm512_add_epi32(x, _mm512_add_epi32(half, odd)));
                let nan = _mm512_cmpgt_epi32_mask(_mm512_and_si512(x, abs), inf);
                let bits = _mm512_mask_blend_epi32(nan, rounded, _mm512_or_si512(high, quiet));
                _mm256_storeu_si256(
                    dst.as_mut_ptr().add(i) as *mut __m256i,
                    _mm512_cvtepi32_epi16(bits),
                );
            }
            i += 16;
        }
        for j in i..n {
            dst[j] = bf16::from_bits(super::f32_to_bf16_bits(src[j]));
        }
    }

    /// # Safety
    /// AVX-512F must be available; `src.len() == dst.len()`.
    #[target_feature(enable = "avx512f,avx2,f16c")]
    pub unsafe fn f32_to_f16_avx512(src: &[f32], dst: &mut [f16]) {
        let n = dst.len();
        let mut i = 0;
        while i + 16 <= n {
            // SAFETY: i + 16 <= n elements are in bounds of both slices.
            unsafe {
                let v = _mm512_loadu_ps(src.as_ptr().add(i));
                let h = _mm512_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v);
                _mm256_storeu_si256(dst.as_mut_ptr().add(i) as *mut __m256i, h);
            }
            i += 16;
        }
        // SAFETY: same features; the tail slices have equal lengths.
        unsafe { f32_to_f16_f16c(&src[i..n], &mut dst[i..n]) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amp_dtype::Element;

    /// f32 inputs that exercise every rounding case: ties, subnormals, NaN payloads, overflow.
    pub(crate) fn tricky_f32() -> Vec<f32> {
        let mut v = vec![
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            f32::MIN,
            f32::MIN_POSITIVE,
            f32::EPSILON,
        ];
        for bits in [
            0x7F80_0001u32,
            0x7FC0_0000,
            0x7FBF_FFFF,
            0xFF80_0001,
            0x7F7F_FFFF,
            0x7F7F_8000,
            0x0000_0001,
            0x8000_0001,
            0x007F_FFFF,
            0x477F_F000,
            0x477F_E000,
            0x3380_0000,
            0x3300_0000,
            0x3300_0001,
            0x387F_C000,
        ] {
            v.push(f32::from_bits(bits));
        }
        // Every bf16 tie and its neighbours, and f16 ties, over a spread of exponents.
        let mut state = 0x1234_5678_9ABC_DEF0u64;
        for _ in 0..200_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let bits = state as u32;
            v.push(f32::from_bits(bits));
            v.push(f32::from_bits((bits & 0xFFFF_0000) | 0x8000)); // bf16 tie
            v.push(f32::from_bits((bits & 0xFFFF_E000) | 0x1000)); // f16 tie (normal range)
            v.push(f32::from_bits((bits & 0x87FF_FFFF) | 0x3000_0000)); // near the f16 range
        }
        v
    }

    /// Runs [`cast_streaming`] from `src` into a buffer at `offset` elements
    /// past a 64-byte boundary: `Some(output)`, or None where the level has no
    /// kernel for the pair (then nothing may have been written).
    fn streamed<S: F32Convert, D: F32Convert>(
        isa: Isa,
        src: &[S],
        offset: usize,
    ) -> Option<Vec<D>> {
        let mut buf: Vec<MaybeUninit<D>> = Vec::with_capacity(src.len() + 64);
        // SAFETY: MaybeUninit needs no initialisation.
        unsafe { buf.set_len(src.len() + 64) };
        let skew = buf.as_ptr().align_offset(64).min(32);
        let dst = &mut buf[skew + offset..skew + offset + src.len()];
        if !cast_streaming(isa, src, dst) {
            return None;
        }
        // SAFETY: cast_streaming returned true, so it wrote every element of `dst`.
        Some(dst.iter().map(|d| unsafe { d.assume_init() }).collect())
    }

    #[test]
    fn one_pass_bf16_arithmetic_matches_widen_compute_round_on_every_level() {
        // Every bf16 value against a scrambled copy (so NaNs, infinities,
        // subnormals and overflowing pairs all meet), plus short and odd
        // lengths at every offset from a 32-byte boundary, plain and streamed.
        let a: Vec<bf16> = (0..=u16::MAX).map(bf16::from_bits).collect();
        let b: Vec<bf16> = (0..=u16::MAX as u32)
            .map(|i| bf16::from_bits((i.wrapping_mul(40_503) ^ 0x5A5A) as u16))
            .collect();
        let widen = |x: bf16| bf16_bits_to_f32(x.to_bits());
        type Scalar = fn(f32, f32) -> f32;
        let ops: [(BinaryOp, Scalar); 4] = [
            (BinaryOp::Add, |x, y| x + y),
            (BinaryOp::Sub, |x, y| x - y),
            (BinaryOp::Mul, |x, y| x * y),
            (BinaryOp::Div, |x, y| x / y),
        ];
        let mut ran = 0;
        for isa in Isa::available() {
            for (op, f) in ops {
                for (len, offset) in [
                    (a.len(), 0),
                    (a.len() - 5, 3),
                    (17, 1),
                    (16, 0),
                    (33, 7),
                    (5, 2),
                    (0, 0),
                ] {
                    for stream in [false, true] {
                        let mut buf: Vec<MaybeUninit<bf16>> = Vec::with_capacity(len + 64);
                        // SAFETY: MaybeUninit needs no initialisation.
                        unsafe { buf.set_len(len + 64) };
                        let skew = buf.as_ptr().align_offset(32).min(16);
                        let dst = &mut buf[skew + offset..skew + offset + len];
                        let (x, y) = (&a[offset..offset + len], &b[offset..offset + len]);
                        if !bf16_binary(isa, op, x, y, dst, stream) {
                            assert!(isa < Isa::Avx2, "{isa:?} has the kernel");
                            continue;
                        }
                        ran += 1;
                        for i in 0..len {
                            // SAFETY: bf16_binary returned true: every element is written.
                            let got = unsafe { dst[i].assume_init() };
                            let want =
                                bf16::from_bits(f32_to_bf16_bits(f(widen(x[i]), widen(y[i]))));
                            if want.is_nan() {
                                assert!(got.is_nan() && got.to_bits() & 0x0040 != 0,
                                    "{isa:?} {op:?}: {:#06x} {:#06x} gave {:#06x}, want a quiet NaN",
                                    x[i].to_bits(), y[i].to_bits(), got.to_bits());
                            } else {
                                assert_eq!(
                                    got.to_bits(),
                                    want.to_bits(),
                                    "{isa:?} {op:?} stream {stream}: {:#06x} {:#06x}",
                                    x[i].to_bits(),
                                    y[i].to_bits()
                                );
                            }
                        }
                    }
                }
            }
            // Other ops have no one-pass kernel: nothing written, false.
            assert!(!bf16_binary(
                isa,
                BinaryOp::Maximum,
                &a[..3],
                &b[..3],
                &mut [MaybeUninit::uninit(); 3],
                false
            ));
        }
        #[cfg(target_arch = "x86_64")]
        assert!(
            ran > 0 || !Isa::available().contains(&Isa::Avx2),
            "the AVX2 kernel ran"
        );
    }

    #[test]
    fn one_pass_f32_arithmetic_matches_ieee_on_every_level() {
        // The tricky values against scrambled ones (NaNs, infinities,
        // subnormals, overflowing pairs meet), plus short and odd lengths at
        // offsets from a 32-byte boundary, plain and streamed.
        let mut xs = tricky_f32();
        xs.truncate(100_000);
        let n = xs.len();
        // Each value against the values 1 and 31 places on (wrapping).
        let a: Vec<f32> = [1, 31].iter().flat_map(|_| xs.iter().copied()).collect();
        let b: Vec<f32> = [1, 31]
            .iter()
            .flat_map(|&d| (0..n).map(move |i| (i + d) % n))
            .map(|i| xs[i])
            .collect();
        type Scalar = fn(f32, f32) -> f32;
        let ops: [(BinaryOp, Scalar); 4] = [
            (BinaryOp::Add, |x, y| x + y),
            (BinaryOp::Sub, |x, y| x - y),
            (BinaryOp::Mul, |x, y| x * y),
            (BinaryOp::Div, |x, y| x / y),
        ];
        let mut ran = 0;
        for isa in Isa::available() {
            for (op, f) in ops {
                for (len, offset) in [
                    (a.len(), 0),
                    (a.len() - 5, 3),
                    (17, 1),
                    (8, 0),
                    (5, 2),
                    (0, 0),
                ] {
                    for stream in [false, true] {
                        let mut buf: Vec<MaybeUninit<f32>> = Vec::with_capacity(len + 16);
                        // SAFETY: MaybeUninit needs no initialisation.
                        unsafe { buf.set_len(len + 16) };
                        let skew = buf.as_ptr().align_offset(32).min(8);
                        let dst = &mut buf[skew + offset..skew + offset + len];
                        let (x, y) = (&a[offset..offset + len], &b[offset..offset + len]);
                        if !f32_binary(isa, op, x, y, dst, stream) {
                            assert!(isa < Isa::Avx2, "{isa:?} has the kernel");
                            continue;
                        }
                        ran += 1;
                        for i in 0..len {
                            // SAFETY: f32_binary returned true: every element is written.
                            let got = unsafe { dst[i].assume_init() };
                            let want = f(x[i], y[i]);
                            // NaN payloads may come from either operand, as in the general path.
                            assert!(
                                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                                "{isa:?} {op:?} stream {stream}: {:#010x} {:#010x} gave {:#010x}",
                                x[i].to_bits(),
                                y[i].to_bits(),
                                got.to_bits()
                            );
                        }
                    }
                }
            }
            // Other ops have no one-pass kernel: nothing written, false.
            assert!(!f32_binary(
                isa,
                BinaryOp::Maximum,
                &a[..3],
                &b[..3],
                &mut [MaybeUninit::uninit(); 3],
                false
            ));
        }
        #[cfg(target_arch = "x86_64")]
        assert!(
            ran > 0 || !Isa::available().contains(&Isa::Avx2),
            "the AVX2 kernel ran"
        );
    }

    #[test]
    fn one_pass_relu_matches_the_general_path_bit_for_bit_on_every_level() {
        // Every bf16 value and the tricky f32 ones, plain and streamed, short and
        // odd lengths at offsets from a 32-byte boundary; the general path's
        // rule: x where x > 0 or a NaN (bf16: widened, so a NaN comes out
        // quiet), else +0.
        let b: Vec<bf16> = (0..=u16::MAX).map(bf16::from_bits).collect();
        let mut xs = tricky_f32();
        xs.truncate(100_000);
        let rule = |v: f32| if v > 0.0 || v.is_nan() { v } else { 0.0 };
        let mut ran = 0;
        for isa in Isa::available() {
            for (len, offset) in [
                (b.len(), 0),
                (b.len() - 5, 3),
                (17, 1),
                (16, 0),
                (5, 2),
                (0, 0),
            ] {
                for stream in [false, true] {
                    let mut buf: Vec<MaybeUninit<bf16>> = Vec::with_capacity(len + 32);
                    // SAFETY: MaybeUninit needs no initialisation.
                    unsafe { buf.set_len(len + 32) };
                    let skew = buf.as_ptr().align_offset(32).min(16);
                    let dst = &mut buf[skew + offset..skew + offset + len];
                    let src = &b[offset..offset + len];
                    if !relu(isa, src, dst, stream) {
                        assert!(isa < Isa::Avx2, "{isa:?} has the bf16 kernel");
                        continue;
                    }
                    ran += 1;
                    for (x, d) in src.iter().zip(dst.iter()) {
                        // SAFETY: relu returned true: every element is written.
                        let got = unsafe { d.assume_init() }.to_bits();
                        let want = f32_to_bf16_bits(rule(bf16_bits_to_f32(x.to_bits())));
                        assert_eq!(
                            got,
                            want,
                            "{isa:?} stream {stream}: bf16 {:#06x}",
                            x.to_bits()
                        );
                    }
                }
                let len = len.min(xs.len() - offset);
                for stream in [false, true] {
                    let mut buf: Vec<MaybeUninit<f32>> = Vec::with_capacity(len + 16);
                    // SAFETY: MaybeUninit needs no initialisation.
                    unsafe { buf.set_len(len + 16) };
                    let skew = buf.as_ptr().align_offset(32).min(8);
                    let dst = &mut buf[skew + offset..skew + offset + len];
                    let src = &xs[offset..offset + len];
                    if !relu(isa, src, dst, stream) {
                        assert!(isa < Isa::Avx2, "{isa:?} has the f32 kernel");
                        continue;
                    }
                    for (x, d) in src.iter().zip(dst.iter()) {
                        // SAFETY: relu returned true: every element is written.
                        let got = unsafe { d.assume_init() }.to_bits();
                        assert_eq!(
                            got,
                            rule(*x).to_bits(),
                            "{isa:?} stream {stream}: f32 {:#010x}",
                            x.to_bits()
                        );
                    }
                }
            }
            // Different input and output types have no one-pass kernel.
            assert!(!relu::<f32, bf16>(isa, &[], &mut [], false));
            assert!(!relu::<f16, f16>(isa, &[], &mut [], false));
        }
        #[cfg(target_arch = "x86_64")]
        assert!(
            ran > 0 || !Isa::available().contains(&Isa::Avx2),
            "the AVX2 kernel ran"
        );
    }

    #[test]
    fn streaming_casts_match_the_scalar_rules_bit_for_bit() {
        let all16: Vec<u16> = (0..=u16::MAX).collect();
        let b: Vec<bf16> = all16.iter().map(|&x| bf16::from_bits(x)).collect();
        let h: Vec<f16> = all16.iter().map(|&x| f16::from_bits(x)).collect();
        let xs = tricky_f32();
        let mut streamed_levels = 0;
        for isa in Isa::available() {
            // Outputs starting on and off a 32-byte boundary; lengths shorter than
            // a vector, with and without a tail.
            for offset in [0, 1, 3, 8] {
                for len in [0, 1, 15, 17, 1000] {
                    let got: Option<Vec<f32>> = streamed(isa, &b[..len], offset);
                    if let Some(got) = got {
                        let want: Vec<u32> = b[..len]
                            .iter()
                            .map(|x| Element::to_f32(*x).to_bits())
                            .collect();
                        let got: Vec<u32> = got.iter().map(|x| x.to_bits()).collect();
                        assert_eq!(got, want, "{isa} bf16 -> f32, offset {offset}, {len}");
                    }
                }
                if let Some(got) = streamed::<bf16, f32>(isa, &b, offset) {
                    streamed_levels += 1;
                    for (s, d) in b.iter().zip(&got) {
                        let want = Element::to_f32(*s).to_bits();
                        assert_eq!(d.to_bits(), want, "{isa} bf16 {:#06x}", s.to_bits());
                    }
                }
                if let Some(got) = streamed::<f16, f32>(isa, &h, offset) {
                    for (s, d) in h.iter().zip(&got) {
                        let want = Element::to_f32(*s).to_bits();
                        assert_eq!(d.to_bits(), want, "{isa} f16 {:#06x}", s.to_bits());
                    }
                }
                for len in [xs.len(), xs.len() - 7, 17, 15, 1, 0] {
                    let src = &xs[..len];
                    if let Some(got) = streamed::<f32, bf16>(isa, src, offset) {
                        for (x, d) in src.iter().zip(&got) {
                            let want = <bf16 as Element>::from_f32(*x).to_bits();
                            assert_eq!(d.to_bits(), want, "{isa} f32->bf16 {:#010x}", x.to_bits());
                        }
                    }
                    if let Some(got) = streamed::<f32, f16>(isa, src, offset) {
                        for (x, d) in src.iter().zip(&got) {
                            let want = <f16 as Element>::from_f32(*x).to_bits();
                            assert_eq!(d.to_bits(), want, "{isa} f32->f16 {:#010x}", x.to_bits());
                        }
                    }
                }
            }
            // Pairs without a kernel say so (f32 -> f32 is a copy, not a cast).
            assert!(streamed::<f32, f32>(isa, &xs[..9], 0).is_none());
        }
        // Every level from AVX2 up has the kernels (once per offset above).
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            streamed_levels,
            4 * Isa::available()
                .into_iter()
                .filter(|&isa| isa >= Isa::Avx2)
                .count(),
            "a level from AVX2 up did not stream"
        );
    }

    #[test]
    fn every_level_matches_the_scalar_rules_bit_for_bit() {
        let all16: Vec<u16> = (0..=u16::MAX).collect();
        let b: Vec<bf16> = all16.iter().map(|&x| bf16::from_bits(x)).collect();
        let h: Vec<f16> = all16.iter().map(|&x| f16::from_bits(x)).collect();
        let xs = tricky_f32();
        for isa in Isa::available() {
            // All 2^16 bf16 and f16 values to f32.
            let mut out = vec![0f32; b.len()];
            bf16_to_f32(isa, &b, &mut out);
            for (s, d) in b.iter().zip(&out) {
                assert_eq!(
                    d.to_bits(),
                    Element::to_f32(*s).to_bits(),
                    "{isa} bf16 {:#06x}",
                    s.to_bits()
                );
            }
            f16_to_f32(isa, &h, &mut out);
            for (s, d) in h.iter().zip(&out) {
                assert_eq!(
                    d.to_bits(),
                    Element::to_f32(*s).to_bits(),
                    "{isa} f16 {:#06x}",
                    s.to_bits()
                );
            }
            // f32 to bf16/f16 over ties, subnormals and NaN payloads; odd lengths hit the tails.
            for len in [xs.len(), xs.len() - 7, 15, 1, 0] {
                let src = &xs[..len];
                let mut ob = vec![bf16::ZERO; len];
                f32_to_bf16(isa, src, &mut ob);
                let mut oh = vec![f16::ZERO; len];
                f32_to_f16(isa, src, &mut oh);
                for (i, &x) in src.iter().enumerate() {
                    assert_eq!(
                        ob[i].to_bits(),
                        <bf16 as Element>::from_f32(x).to_bits(),
                        "{isa} f32->bf16 {:#010x}",
                        x.to_bits()
                    );
                    assert_eq!(
                        oh[i].to_bits(),
                        <f16 as Element>::from_f32(x).to_bits(),
                        "{isa} f32->f16 {:#010x}",
                        x.to_bits()
                    );
                }
            }
        }
    }
}
