//! Casts, unary and binary ops and `where`: contiguous views run in place;
//! strided or broadcast views are gathered to a contiguous buffer first. The
//! work runs in chunks of [`CHUNK`] elements: load as f32, compute, store in
//! the output dtype — and in parallel above [`PARALLEL_MIN`] elements.

use crate::convert::F32Convert;
use crate::isa::Isa;
use crate::math;
use amp_tensor::{with_host_storage, BinaryOp, HostStorage, Layout, UnaryOp};
use rayon::prelude::*;
use std::borrow::Cow;

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
        None => (Cow::Owned(h.gather_view(l)), 0),
    }
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

/// `dst = src` converted (nearest even), any element types.
pub(crate) fn cast_slice<S: F32Convert, D: F32Convert>(isa: Isa, src: &[S], dst: &mut [D]) {
    for_each_piece(dst, |start, d| {
        let s = &src[start..start + d.len()];
        if let Some(s32) = S::as_f32(s) {
            D::store(isa, s32, d);
            return;
        }
        if let Some(d32) = D::as_f32_mut(d) {
            S::load(isa, s, d32);
            return;
        }
        let mut buf = [0f32; CHUNK];
        for (sc, dc) in s.chunks(CHUNK).zip(d.chunks_mut(CHUNK)) {
            let b = &mut buf[..sc.len()];
            S::load(isa, sc, b);
            D::store(isa, b, dc);
        }
    });
}

/// `dst = op(src)` computed in f32.
pub(crate) fn unary_slice<S: F32Convert, D: F32Convert>(
    isa: Isa,
    op: UnaryOp,
    src: &[S],
    dst: &mut [D],
) {
    for_each_piece(dst, |start, d| {
        let s = &src[start..start + d.len()];
        let mut buf = [0f32; CHUNK];
        for (sc, dc) in s.chunks(CHUNK).zip(d.chunks_mut(CHUNK)) {
            let b = &mut buf[..sc.len()];
            S::load(isa, sc, b);
            math::unary(isa, op, b);
            D::store(isa, b, dc);
        }
    });
}

/// `dst = op(a, b)` computed in f32.
pub(crate) fn binary_slice<S: F32Convert, D: F32Convert>(
    isa: Isa,
    op: BinaryOp,
    a: &[S],
    b: &[S],
    dst: &mut [D],
) {
    for_each_piece(dst, |start, d| {
        let (a, b) = (&a[start..start + d.len()], &b[start..start + d.len()]);
        let mut ba = [0f32; CHUNK];
        let mut bb = [0f32; CHUNK];
        for (i, dc) in d.chunks_mut(CHUNK).enumerate() {
            let r = i * CHUNK..i * CHUNK + dc.len();
            let (xa, xb) = (&mut ba[..dc.len()], &mut bb[..dc.len()]);
            S::load(isa, &a[r.clone()], xa);
            S::load(isa, &b[r], xb);
            math::binary(isa, op, xa, xb);
            D::store(isa, xa, dc);
        }
    });
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
    let mut dst = zeros(out, n);
    with_host_storage!(src, s => with_host_storage!(&mut dst, d => cast_slice(isa, &s[offset..offset + n], d)));
    dst
}
