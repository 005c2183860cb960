//! Casts, unary and binary ops and `where`: contiguous views run in place;
//! strided or broadcast views are gathered to a contiguous buffer first. The
//! work runs in chunks of [`CHUNK`] elements: load as f32, compute, store in
//! the output dtype — and in parallel above [`PARALLEL_MIN`] elements.

use crate::convert::{self, cast_streaming, F32Convert};
use crate::isa::Isa;
use crate::math;
use amp_tensor::backend::{BinaryOp, HostElement, HostStorage, UnaryOp};
use amp_tensor::{with_host_storage, Layout};
use rayon::prelude::*;
use std::borrow::Cow;
use std::mem::MaybeUninit;

/// Elements per inner chunk (three f32 chunks stay in L1).
pub(crate) const CHUNK: usize = 1024;
/// Elementwise work below this many elements stays on the calling thread.
pub(crate) const PARALLEL_MIN: usize = 1 << 16;
/// Elements per parallel task.
const PARALLEL_CHUNK: usize = 1 << 14;

/// A contiguous buffer holding a view's elements and the offset where they start.
pub(crate) fn dense<'a>(h: &'a HostStorage, l: &Layout) -> (Cow<'a, HostStorage>, usize) {
    match l.contiguous_range() {
        Some(r) => (Cow::Borrowed(h), r.start),
        None => (Cow::Owned(gather_view(h, l)), 0),
    }
}

/// Side of the square blocks a strided view is copied in (a transpose reads and
/// writes whole cache lines within a block).
const GATHER_BLOCK: usize = 32;

/// Copies a view into a new contiguous buffer of the same dtype (what
/// [`HostStorage::gather_view`] does), in cache blocks over the last two
/// dimensions and in parallel when large: a transposed 4096² f32 weight copies
/// at near memory speed instead of one index computation per element.
pub(crate) fn gather_view(h: &HostStorage, l: &Layout) -> HostStorage {
    if let Some(r) = l.contiguous_range() {
        return with_host_storage!(h, v => HostElement::into_host(v[r].to_vec()));
    }
    with_host_storage!(h, v => HostElement::into_host(gather_strided(v, l, |x| x, |d, s| d.copy_from_slice(s))))
}

/// [`gather_view`], except that a large contiguous view is copied by every
/// thread with non-temporal stores: a plain `to_vec` is one thread's
/// `memcpy`, which on this project's AVX2 EPYC moved 64 MiB at about 16 GB/s,
/// against about 35 for the streamed copy on both cores.
pub(crate) fn copy_view(isa: Isa, h: &HostStorage, l: &Layout) -> HostStorage {
    match l.contiguous_range() {
        Some(r) if r.len() * h.dtype().size_in_bytes() >= STREAM_MIN_BYTES => {
            with_host_storage!(h, v => HostElement::into_host(copy_streaming(isa, &v[r])))
        }
        _ => gather_view(h, l),
    }
}

/// `src.to_vec()`, in parallel pieces written with non-temporal stores where
/// the level has them.
fn copy_streaming<T: Copy + Send + Sync>(isa: Isa, src: &[T]) -> Vec<T> {
    fill_uninit(src.len(), |start, dst| {
        write_uninit(isa, dst, &src[start..start + dst.len()], true);
        stream::fence(isa);
    })
}

/// A strided view of a fast dtype cast to another fast dtype in one blocked pass
/// (the transposed weight gradients that autocast casts back to f32): the same
/// values as gathering and then casting.
pub(crate) fn gather_cast<S: F32Convert, D: F32Convert>(isa: Isa, src: &[S], l: &Layout) -> Vec<D> {
    gather_strided(
        src,
        l,
        |x: S| D::from_f32(x.to_f32()),
        |d: &mut [D], s: &[S]| {
            if let Some(d32) = D::as_f32_mut(d) {
                S::load(isa, s, d32);
            } else if let Some(s32) = S::as_f32(s) {
                D::store(isa, s32, d);
            } else {
                for (d, s) in d.iter_mut().zip(s) {
                    *d = D::from_f32(s.to_f32());
                }
            }
        },
    )
}

/// Copies the view `l` of `src` contiguously, mapping every element with `map`
/// (`row` maps a contiguous run, the same way).
fn gather_strided<S: Copy + Send + Sync, D: Copy + Send + Sync>(
    src: &[S],
    l: &Layout,
    map: impl Fn(S) -> D + Sync,
    row_map: impl Fn(&mut [D], &[S]) + Sync,
) -> Vec<D> {
    let n = l.numel();
    if n == 0 {
        return Vec::new();
    }
    let (shape, strides, rank) = (l.shape(), l.strides(), l.rank());
    // rank >= 1 here (a rank-0 view is always contiguous).
    let (rows, rs) = if rank >= 2 {
        (shape[rank - 2], strides[rank - 2])
    } else {
        (1, 0)
    };
    let (cols, cs) = (shape[rank - 1], strides[rank - 1]);
    let outer_dims = &shape[..rank.saturating_sub(2)];
    let outer_strides = &strides[..rank.saturating_sub(2)];
    let slab = rows * cols;
    let mut dst = vec![map(src[l.offset()]); n];
    let copy_slab = |o: usize, d: &mut [D]| {
        // Offset of the slab: the outer multi-index of `o` (row-major) times its strides.
        let mut base = l.offset();
        let mut rest = o;
        for (&dim, &st) in outer_dims.iter().zip(outer_strides).rev() {
            base += (rest % dim) * st;
            rest /= dim;
        }
        let block_rows = |i0: usize, d: &mut [D]| {
            let nr = d.len() / cols;
            if cs == 1 {
                for (i, row) in d.chunks_mut(cols).enumerate() {
                    let s = base + (i0 + i) * rs;
                    row_map(row, &src[s..s + cols]);
                }
                return;
            }
            for j0 in (0..cols).step_by(GATHER_BLOCK) {
                let j1 = (j0 + GATHER_BLOCK).min(cols);
                for i in 0..nr {
                    let s = base + (i0 + i) * rs;
                    let row = &mut d[i * cols + j0..i * cols + j1];
                    for (j, x) in (j0..j1).zip(row.iter_mut()) {
                        *x = map(src[s + j * cs]);
                    }
                }
            }
        };
        if slab >= PARALLEL_MIN {
            d.par_chunks_mut(GATHER_BLOCK * cols)
                .enumerate()
                .for_each(|(b, d)| block_rows(b * GATHER_BLOCK, d));
        } else {
            for (b, d) in d.chunks_mut(GATHER_BLOCK * cols).enumerate() {
                block_rows(b * GATHER_BLOCK, d);
            }
        }
    };
    if n >= PARALLEL_MIN && slab < PARALLEL_MIN {
        dst.par_chunks_mut(slab)
            .enumerate()
            .for_each(|(o, d)| copy_slab(o, d));
    } else {
        for (o, d) in dst.chunks_mut(slab).enumerate() {
            copy_slab(o, d);
        }
    }
    dst
}

/// Runs `f` on matching pieces of `dst` and of the sources, in parallel when large.
fn for_each_piece<D: Send>(dst: &mut [D], f: impl Fn(usize, &mut [D]) + Sync) {
    if dst.len() >= PARALLEL_MIN {
        dst.par_chunks_mut(PARALLEL_CHUNK)
            .enumerate()
            .for_each(|(i, d)| f(i * PARALLEL_CHUNK, d));
    } else {
        f(0, dst);
    }
}

/// A new vector of `n` elements, produced `CHUNK` at a time by `f(start, chunk)`
/// into a buffer in L1 and copied into the vector's uninitialised capacity
/// (in parallel above [`PARALLEL_MIN`]). Unlike filling an output with zeros
/// first, the output memory is written exactly once.
fn build<D: F32Convert + Send + Sync>(
    isa: Isa,
    n: usize,
    f: impl Fn(usize, &mut [D]) + Sync,
) -> Vec<D> {
    // A large output is written with non-temporal stores: it would not stay in
    // the cache anyway, and they skip reading each destination line first.
    let stream = n * std::mem::size_of::<D>() >= STREAM_MIN_BYTES;
    fill_uninit(n, |start, dst| {
        let mut buf = [D::from_f32(0.0); CHUNK];
        for (i, dc) in dst.chunks_mut(CHUNK).enumerate() {
            let b = &mut buf[..dc.len()];
            f(start + i * CHUNK, b);
            write_uninit(isa, dc, b, stream);
        }
        if stream {
            stream::fence(isa);
        }
    })
}

/// A new vector of `n` elements computed in f32: `f(start, values, scratch)`
/// fills an L1 buffer with the f32 results of `CHUNK` elements from `start`
/// (with a scratch buffer of twice that length to use as it likes), which are
/// then rounded to `D` and written into the vector's uninitialised capacity —
/// for a large output with non-temporal stores, straight from the f32 buffer
/// when `D` is f32 or has a streaming kernel ([`F32Convert::store_streaming`]).
fn build_from_f32<D: F32Convert + Send + Sync>(
    isa: Isa,
    n: usize,
    f: impl Fn(usize, &mut [f32], &mut [f32]) + Sync,
) -> Vec<D> {
    let stream = n * std::mem::size_of::<D>() >= STREAM_MIN_BYTES;
    fill_uninit(n, |start, dst| {
        let mut wide = [0f32; CHUNK];
        let mut scratch = [0f32; 2 * CHUNK];
        let mut narrow = [D::from_f32(0.0); CHUNK];
        for (i, dc) in dst.chunks_mut(CHUNK).enumerate() {
            let w = &mut wide[..dc.len()];
            f(start + i * CHUNK, w, &mut scratch[..2 * dc.len()]);
            if let Some(d32) = D::as_f32_uninit(dc) {
                write_uninit(isa, d32, w, stream);
            } else if !(stream && D::store_streaming(isa, w, dc)) {
                let b = &mut narrow[..dc.len()];
                D::store(isa, w, b);
                write_uninit(isa, dc, b, stream);
            }
        }
        if stream {
            stream::fence(isa);
        }
    })
}

/// A new vector of `n` elements, every one written by `piece(start, part)`
/// over the parts of its uninitialised capacity (in parallel above
/// [`PARALLEL_MIN`]).
fn fill_uninit<D: Send>(n: usize, piece: impl Fn(usize, &mut [MaybeUninit<D>]) + Sync) -> Vec<D> {
    let mut v: Vec<D> = Vec::with_capacity(n);
    let spare = &mut v.spare_capacity_mut()[..n];
    if n >= PARALLEL_MIN {
        spare
            .par_chunks_mut(PARALLEL_CHUNK)
            .enumerate()
            .for_each(|(i, d)| piece(i * PARALLEL_CHUNK, d));
    } else {
        piece(0, spare);
    }
    // SAFETY: `piece` writes every element of the part it is given, and the
    // parts cover the first `n` elements of the capacity.
    unsafe { v.set_len(n) };
    v
}

/// A linear layer's epilogue on one row segment that starts at column `col0`:
/// `act(vals + bias[col0..])`, in f32, in place.
pub(crate) fn finish_row(
    isa: Isa,
    bias: Option<&[f32]>,
    act: Option<UnaryOp>,
    col0: usize,
    vals: &mut [f32],
) {
    if let Some(b) = bias {
        for (v, bj) in vals.iter_mut().zip(&b[col0..]) {
            *v += bj;
        }
    }
    if let Some(op) = act {
        let mut arg = [0f32; CHUNK];
        for part in vals.chunks_mut(CHUNK) {
            let a = &mut arg[..part.len()];
            a.copy_from_slice(part);
            math::unary(isa, op, a, part);
        }
    }
}

/// Outputs of at least this many bytes are written with non-temporal stores.
pub(crate) const STREAM_MIN_BYTES: usize = 8 << 20;

/// Writes `src` into the uninitialised `dst` (same length), with non-temporal
/// stores when `stream` asks for them and the level has them (then
/// [`stream_fence`] before the data is handed on).
pub(crate) fn write_uninit<D: Copy>(isa: Isa, dst: &mut [MaybeUninit<D>], src: &[D], stream: bool) {
    if !(stream && stream::write(isa, dst, src)) {
        for (d, s) in dst.iter_mut().zip(src) {
            d.write(*s);
        }
    }
}

/// Orders this thread's non-temporal stores before anything it does next.
pub(crate) fn stream_fence(isa: Isa) {
    stream::fence(isa)
}

/// Non-temporal stores of whole 64-byte lines (AVX-512).
mod stream {
    use crate::isa::Isa;
    use std::mem::MaybeUninit;

    /// Writes `src` into `dst` (same length) with streaming stores for the
    /// aligned middle (64-byte lines with AVX-512, 32-byte halves with AVX2)
    /// and plain stores for the ends; false (nothing written) below AVX2.
    pub(super) fn write<D: Copy>(isa: Isa, dst: &mut [MaybeUninit<D>], src: &[D]) -> bool {
        #[cfg(target_arch = "x86_64")]
        if isa >= Isa::Avx2 && dst.len() == src.len() {
            let bytes = std::mem::size_of_val(src);
            let (d, s) = (dst.as_mut_ptr() as *mut u8, src.as_ptr() as *const u8);
            if isa >= Isa::Avx512 {
                // SAFETY: AVX-512F is present at this level; both regions hold
                // `bytes` bytes and do not overlap (one is a stack buffer, one a
                // new vector).
                unsafe { copy(d, s, bytes) };
            } else {
                // SAFETY: AVX2 is present at this level; as above.
                unsafe { copy256(d, s, bytes) };
            }
            return true;
        }
        let _ = (isa, dst, src);
        false
    }

    /// Orders this thread's streaming stores before anything it does next.
    pub(super) fn fence(isa: Isa) {
        #[cfg(target_arch = "x86_64")]
        if isa >= Isa::Avx2 {
            // SAFETY: SSE is part of x86-64.
            unsafe { std::arch::x86_64::_mm_sfence() };
        }
        let _ = isa;
    }

    /// # Safety
    /// AVX-512F available; `dst` and `src` valid for `bytes` bytes, not overlapping.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn copy(dst: *mut u8, src: *const u8, bytes: usize) {
        use std::arch::x86_64::*;
        // SAFETY: every access stays within the `bytes` both regions hold.
        unsafe {
            let head = (dst.align_offset(64)).min(bytes);
            std::ptr::copy_nonoverlapping(src, dst, head);
            let mut i = head;
            while i + 64 <= bytes {
                let v = _mm512_loadu_si512(src.add(i) as *const _);
                _mm512_stream_si512(dst.add(i) as *mut _, v);
                i += 64;
            }
            std::ptr::copy_nonoverlapping(src.add(i), dst.add(i), bytes - i);
        }
    }

    /// [`copy`] with 32-byte streaming stores (AMD's Zen 2/3 and other
    /// AVX2-only CPUs: 37.5 against 27.2 GB/s for a plain copy of 64 MiB on
    /// this project's AVX2 EPYC).
    ///
    /// # Safety
    /// AVX2 available; `dst` and `src` valid for `bytes` bytes, not overlapping.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn copy256(dst: *mut u8, src: *const u8, bytes: usize) {
        use std::arch::x86_64::*;
        // SAFETY: every access stays within the `bytes` both regions hold.
        unsafe {
            let head = (dst.align_offset(32)).min(bytes);
            std::ptr::copy_nonoverlapping(src, dst, head);
            let mut i = head;
            while i + 32 <= bytes {
                let v = _mm256_loadu_si256(src.add(i) as *const _);
                _mm256_stream_si256(dst.add(i) as *mut _, v);
                i += 32;
            }
            std::ptr::copy_nonoverlapping(src.add(i), dst.add(i), bytes - i);
        }
    }
}

/// `src` converted (nearest even) into a new vector; a large output is
/// converted in registers and streamed where the level has such a kernel
/// ([`crate::convert::cast_streaming`]).
pub(crate) fn cast_vec<S: F32Convert, D: F32Convert + Send + Sync>(isa: Isa, src: &[S]) -> Vec<D> {
    let large = src.len() * std::mem::size_of::<D>() >= STREAM_MIN_BYTES;
    if large && cast_streaming::<S, D>(isa, &[], &mut []) {
        return fill_uninit(src.len(), |start, dst| {
            let done = cast_streaming(isa, &src[start..start + dst.len()], dst);
            // An unwritten part would be uninitialised memory in the vector.
            assert!(done, "the streaming kernel found above wrote this part");
        });
    }
    build(isa, src.len(), |start, d| {
        let s = &src[start..start + d.len()];
        if let Some(s32) = S::as_f32(s) {
            D::store(isa, s32, d);
        } else if let Some(d32) = D::as_f32_mut(d) {
            S::load(isa, s, d32);
        } else {
            let mut buf = [0f32; CHUNK];
            let b = &mut buf[..s.len()];
            S::load(isa, s, b);
            D::store(isa, b, d);
        }
    })
}

/// `op(src)` computed in f32 into a new vector — ReLU with f32 or bf16 input
/// and output of that type in one pass from registers ([`convert::relu`]),
/// else chunk by chunk through L1 buffers.
pub(crate) fn unary_vec<S: F32Convert, D: F32Convert + Send + Sync>(
    isa: Isa,
    op: UnaryOp,
    src: &[S],
) -> Vec<D> {
    if op == UnaryOp::Relu && convert::relu::<S, D>(isa, &[], &mut [], false) {
        let n = src.len();
        let stream = n * std::mem::size_of::<D>() >= STREAM_MIN_BYTES;
        return fill_uninit(n, |start, dst| {
            let done = convert::relu(isa, &src[start..start + dst.len()], dst, stream);
            // An unwritten part would be uninitialised memory in the vector.
            assert!(done, "the one-pass kernel found above wrote this part");
        });
    }
    build_from_f32(isa, src.len(), |start, w, scratch| {
        let s = &src[start..start + w.len()];
        match S::as_f32(s) {
            Some(s32) => math::unary(isa, op, s32, w),
            None => {
                let wide = &mut scratch[..w.len()];
                S::load(isa, s, wide);
                math::unary(isa, op, wide, w);
            }
        }
    })
}

/// `op(a, b)` computed in f32 into a new vector — for bf16 (or f32) operands
/// and output and the four IEEE operations in one pass from registers
/// ([`convert::bf16_binary`], [`convert::f32_binary`]), else chunk by chunk
/// through L1 buffers.
pub(crate) fn binary_vec<S: F32Convert, D: F32Convert + Send + Sync>(
    isa: Isa,
    op: BinaryOp,
    a: &[S],
    b: &[S],
) -> Vec<D> {
    if let (Some(a16), Some(b16)) = (S::as_bf16(a), S::as_bf16(b)) {
        let n = a.len();
        if D::as_bf16_uninit(&mut []).is_some()
            && convert::bf16_binary(isa, op, &[], &[], &mut [], false)
        {
            let stream = n * 2 >= STREAM_MIN_BYTES;
            return fill_uninit(n, |start, dst| {
                let d = D::as_bf16_uninit(dst).expect("D is bf16");
                let r = start..start + d.len();
                let done = convert::bf16_binary(isa, op, &a16[r.clone()], &b16[r], d, stream);
                // An unwritten part would be uninitialised memory in the vector.
                assert!(done, "the one-pass kernel found above wrote this part");
            });
        }
    }
    if let (Some(a32), Some(b32)) = (S::as_f32(a), S::as_f32(b)) {
        let n = a.len();
        if D::as_f32_uninit(&mut []).is_some()
            && convert::f32_binary(isa, op, &[], &[], &mut [], false)
        {
            let stream = n * 4 >= STREAM_MIN_BYTES;
            return fill_uninit(n, |start, dst| {
                let d = D::as_f32_uninit(dst).expect("D is f32");
                let r = start..start + d.len();
                let done = convert::f32_binary(isa, op, &a32[r.clone()], &b32[r], d, stream);
                // An unwritten part would be uninitialised memory in the vector.
                assert!(done, "the one-pass kernel found above wrote this part");
            });
        }
    }
    build_from_f32(isa, a.len(), |start, w, scratch| {
        let r = start..start + w.len();
        match (S::as_f32(&a[r.clone()]), S::as_f32(&b[r.clone()])) {
            (Some(a32), Some(b32)) => math::binary(isa, op, a32, b32, w),
            _ => {
                let (wa, wb) = scratch.split_at_mut(w.len());
                S::load(isa, &a[r.clone()], wa);
                S::load(isa, &b[r], wb);
                math::binary(isa, op, wa, wb, w);
            }
        }
    })
}

/// `dst = cond ? t : f`.
pub(crate) fn where_slice<S: F32Convert, D: F32Convert>(
    isa: Isa,
    cond: &[bool],
    t: &[S],
    f: &[S],
    dst: &mut [D],
) {
    for_each_piece(dst, |start, d| {
        let n = d.len();
        let (c, t, f) = (
            &cond[start..start + n],
            &t[start..start + n],
            &f[start..start + n],
        );
        let mut bt = [0f32; CHUNK];
        let mut bf = [0f32; CHUNK];
        for (i, dc) in d.chunks_mut(CHUNK).enumerate() {
            let r = i * CHUNK..i * CHUNK + dc.len();
            let (xt, xf) = (&mut bt[..dc.len()], &mut bf[..dc.len()]);
            S::load(isa, &t[r.clone()], xt);
            S::load(isa, &f[r.clone()], xf);
            for ((x, y), &c) in xt.iter_mut().zip(xf.iter()).zip(&c[r]) {
                if !c {
                    *x = *y;
                }
            }
            D::store(isa, xt, dc);
        }
    });
}

/// A new buffer of `dtype` with `n` zeros.
pub(crate) fn zeros(dtype: amp_dtype::DType, n: usize) -> HostStorage {
    HostStorage::filled(dtype, n, 0.0)
}

/// Casts a whole contiguous range of `src` (from `offset`, `n` elements) into a new buffer of `out`.
pub(crate) fn cast_range(
    isa: Isa,
    src: &HostStorage,
    offset: usize,
    n: usize,
    out: amp_dtype::DType,
) -> HostStorage {
    let mut dst = zeros(out, 0);
    with_host_storage!(src, s => with_host_storage!(&mut dst, d => *d = cast_vec(isa, &s[offset..offset + n])));
    dst
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_outputs_written_with_streaming_stores_equal_plain_conversion() {
        use amp_dtype::{bf16, f16};
        // Outputs of 10 and 20 MB (above STREAM_MIN_BYTES), lengths that are
        // no multiple of a vector or a chunk, and a source that starts off
        // alignment: every ISA level this CPU has, against per-element casts.
        let n = 5_000_003;
        let src: Vec<f32> = (0..n + 1)
            .map(|i| ((i as f32) * 0.37).sin() * 1e3)
            .collect();
        let src = &src[1..];
        assert!(n * 2 >= STREAM_MIN_BYTES);
        let want16: Vec<bf16> = src.iter().map(|&x| bf16::from_f32(x)).collect();
        let wanth: Vec<f16> = src.iter().map(|&x| f16::from_f32(x)).collect();
        let wide: Vec<f32> = want16.iter().map(|x| x.to_f32()).collect();
        for isa in Isa::available() {
            let got: Vec<bf16> = cast_vec(isa, src);
            assert!(
                got.iter()
                    .zip(&want16)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{isa:?} f32 -> bf16"
            );
            let got: Vec<f16> = cast_vec(isa, src);
            assert!(
                got.iter()
                    .zip(&wanth)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{isa:?} f32 -> f16"
            );
            let got: Vec<f32> = cast_vec(isa, &want16);
            assert_eq!(got, wide, "{isa:?} bf16 -> f32");
        }
    }

    #[test]
    fn large_contiguous_copies_equal_the_view_on_every_isa() {
        use amp_dtype::bf16;
        // A contiguous view that starts at an odd offset and ends off a vector,
        // above STREAM_MIN_BYTES for every dtype here.
        let n = 5_000_003;
        let range = Layout::new(vec![n - 10], vec![1], 7);
        let storages = [
            HostElement::into_host((0..n).map(|i| i as f32 * 0.5).collect::<Vec<_>>()),
            HostElement::into_host((0..n).map(|i| bf16::from_f32(i as f32)).collect::<Vec<_>>()),
            HostElement::into_host((0..n as i64).map(|i| i * 3 - 7).collect::<Vec<_>>()),
            HostElement::into_host((0..n).map(|i| i % 3 == 0).collect::<Vec<_>>()),
        ];
        for h in &storages {
            let want = h.gather_view(&range);
            for isa in Isa::available() {
                let got = copy_view(isa, h, &range);
                assert!(got == want, "{isa} {}", h.dtype());
            }
        }
    }

    #[test]
    fn blocked_gather_equals_the_element_by_element_gather() {
        // Permuted, sliced and broadcast views, small and above the parallel threshold.
        for &(a, b, c) in &[
            (1, 1, 1),
            (2, 3, 5),
            (3, 37, 70),
            (2, 300, 260),
            (1, 513, 129),
        ] {
            let data: Vec<f32> = (0..a * b * c).map(|i| i as f32).collect();
            let h = HostStorage::F32(data);
            let base = Layout::contiguous(&[a, b, c]);
            let views = [
                base.transpose(1, 2),
                base.permute(&[2, 0, 1]),
                base.permute(&[1, 2, 0]),
                Layout::new(vec![a, c], vec![b * c, 1], 0),
                Layout::new(vec![4, b, c], vec![0, c, 1], 0),
                Layout::new(vec![c, b], vec![1, c], 0),
                Layout::new(vec![b * c], vec![1], 0),
            ];
            for l in views {
                let got = gather_view(&h, &l);
                let want = h.gather_view(&l);
                assert_eq!(
                    f32::slice(&got),
                    f32::slice(&want),
                    "{:?} {:?}",
                    l.shape(),
                    l.strides()
                );
            }
        }
    }
    #[test]
    fn strided_casts_equal_gather_then_scalar_cast() {
        use amp_dtype::{bf16, f16, Element};
        let (a, b) = (300, 260);
        let x: Vec<f32> = (0..a * b)
            .map(|i| ((i * 37 % 1001) as f32 - 500.0) / 7.0)
            .collect();
        let xb: Vec<bf16> = x.iter().map(|&v| <bf16 as Element>::from_f32(v)).collect();
        for isa in Isa::available() {
            for l in [
                Layout::contiguous(&[a, b]).transpose(0, 1),
                Layout::new(vec![5, 7], vec![1, 11], 3),
            ] {
                let idx: Vec<usize> = l.indices().collect();
                let to_bf16: Vec<bf16> = gather_cast(isa, &x, &l);
                let to_f16: Vec<f16> = gather_cast(isa, &x, &l);
                let to_f32: Vec<f32> = gather_cast(isa, &xb, &l);
                for (k, &i) in idx.iter().enumerate() {
                    assert_eq!(
                        to_bf16[k].to_bits(),
                        <bf16 as Element>::from_f32(x[i]).to_bits()
                    );
                    assert_eq!(
                        to_f16[k].to_bits(),
                        <f16 as Element>::from_f32(x[i]).to_bits()
                    );
                    assert_eq!(to_f32[k].to_bits(), Element::to_f32(xb[i]).to_bits());
                }
            }
        }
    }
    #[test]
    fn built_outputs_equal_the_per_element_results_above_the_parallel_threshold() {
        use amp_dtype::{bf16, Element};
        let n = PARALLEL_MIN * 3 + 1037;
        let x: Vec<f32> = (0..n)
            .map(|i| ((i * 37 % 1001) as f32 - 500.0) / 7.0)
            .collect();
        let y: Vec<f32> = (0..n)
            .map(|i| ((i * 13 % 97) as f32 - 48.0) / 3.0)
            .collect();
        for isa in Isa::available() {
            let c: Vec<bf16> = cast_vec(isa, &x);
            let u: Vec<f32> = unary_vec(isa, UnaryOp::Neg, &x);
            let b: Vec<f32> = binary_vec(isa, BinaryOp::Mul, &x, &y);
            assert_eq!((c.len(), u.len(), b.len()), (n, n, n));
            for i in 0..n {
                assert_eq!(
                    c[i].to_bits(),
                    <bf16 as Element>::from_f32(x[i]).to_bits(),
                    "{isa} {i}"
                );
                assert_eq!(u[i], -x[i], "{isa} {i}");
                assert_eq!(b[i], x[i] * y[i], "{isa} {i}");
            }
        }
    }
}
