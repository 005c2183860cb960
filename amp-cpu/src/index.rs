//! `cat`, `index_select`, `gather` and `scatter_add`: copies of whole rows
//! where the layout allows, any element type (values are moved, not computed),
//! and `scatter_add` accumulating in f64.

use crate::convert::F32Convert;
use crate::elementwise::{cast_range, dense};
use crate::isa::Isa;
use amp_dtype::DType;
use amp_tensor::backend::{HostElement, HostStorage};
use amp_tensor::layout::contiguous_strides;
use amp_tensor::{with_host_storage, Layout};

/// The elements of an i64 view in logical order, as indices (checked by the caller).
pub(crate) fn indices(h: &HostStorage, l: &Layout) -> Option<Vec<usize>> {
    let (buf, off) = dense(h, l);
    let v = i64::slice(&buf)?;
    Some(
        v[off..off + l.numel()]
            .iter()
            .map(|&i| i as usize)
            .collect(),
    )
}

/// A view as a contiguous buffer of dtype `out` (a copy).
fn contiguous_in(isa: Isa, h: &HostStorage, l: &Layout, out: DType) -> HostStorage {
    let (buf, off) = dense(h, l);
    if buf.dtype() == out {
        return match buf {
            std::borrow::Cow::Owned(b) => b,
            std::borrow::Cow::Borrowed(b) => {
                b.gather_view(&Layout::new(vec![l.numel()], vec![1], off))
            }
        };
    }
    cast_range(isa, &buf, off, l.numel(), out)
}

/// Concatenation along `dim` of views, written in dtype `out`.
pub(crate) fn cat(
    isa: Isa,
    inputs: &[(&HostStorage, &Layout)],
    dim: usize,
    out: DType,
) -> HostStorage {
    let first = inputs[0].1.shape();
    let outer: usize = first[..dim].iter().product();
    let parts: Vec<(HostStorage, usize)> = inputs
        .iter()
        .map(|(h, l)| {
            (
                contiguous_in(isa, h, l, out),
                l.shape()[dim..].iter().product::<usize>(),
            )
        })
        .collect();
    let mut probe = HostStorage::filled(out, 0, 0.0);
    with_host_storage!(&mut probe, p => join_typed(&parts, outer, p))
}

/// Joins the parts, `outer` times one chunk of each; `_witness` only names the element type.
fn join_typed<T: HostElement>(
    parts: &[(HostStorage, usize)],
    outer: usize,
    _witness: &mut Vec<T>,
) -> HostStorage {
    let total: usize = parts.iter().map(|p| p.1).sum::<usize>() * outer;
    let mut v: Vec<T> = Vec::with_capacity(total);
    let slices: Vec<(&[T], usize)> = parts
        .iter()
        .map(|(h, c)| (T::slice(h).expect("cast to out"), *c))
        .collect();
    for o in 0..outer {
        for (s, c) in &slices {
            v.extend_from_slice(&s[o * c..(o + 1) * c]);
        }
    }
    T::into_host(v)
}

/// `index_select` along `dim`: whole inner rows are copied.
pub(crate) fn index_select(
    isa: Isa,
    h: &HostStorage,
    l: &Layout,
    dim: usize,
    idx: &[usize],
    out: DType,
) -> HostStorage {
    let shape = l.shape();
    let (outer, size, inner): (usize, usize, usize) = (
        shape[..dim].iter().product(),
        shape[dim],
        shape[dim + 1..].iter().product(),
    );
    let (buf, off) = dense(h, l);
    fn pick<T: HostElement>(
        s: &[T],
        outer: usize,
        size: usize,
        inner: usize,
        idx: &[usize],
    ) -> HostStorage {
        let mut v = Vec::with_capacity(outer * idx.len() * inner);
        for o in 0..outer {
            for &i in idx {
                let start = (o * size + i) * inner;
                v.extend_from_slice(&s[start..start + inner]);
            }
        }
        T::into_host(v)
    }
    let picked = with_host_storage!(&*buf, s => pick(&s[off..], outer, size, inner, idx));
    if picked.dtype() == out {
        picked
    } else {
        cast_range(isa, &picked, 0, picked.len(), out)
    }
}

/// Walks every position of `idx_shape` in row-major order, giving (flat, position with `dim` replaced).
fn for_each_indexed(
    idx_shape: &[usize],
    dim: usize,
    idx: &[usize],
    target_strides: &[usize],
    mut f: impl FnMut(usize, usize),
) {
    let rank = idx_shape.len();
    let mut coord = vec![0usize; rank];
    for (flat, &i) in idx.iter().enumerate() {
        let mut pos = 0;
        for d in 0..rank {
            pos += if d == dim { i } else { coord[d] } * target_strides[d];
        }
        f(flat, pos);
        for d in (0..rank).rev() {
            coord[d] += 1;
            if coord[d] < idx_shape[d] {
                break;
            }
            coord[d] = 0;
        }
    }
}

/// `gather` along `dim`; the output has the index's shape.
pub(crate) fn gather(
    isa: Isa,
    h: &HostStorage,
    l: &Layout,
    dim: usize,
    idx: &[usize],
    idx_shape: &[usize],
    out: DType,
) -> HostStorage {
    let (buf, off) = dense(h, l);
    let strides = contiguous_strides(l.shape());
    fn pick<T: HostElement>(
        s: &[T],
        idx_shape: &[usize],
        dim: usize,
        idx: &[usize],
        strides: &[usize],
    ) -> HostStorage {
        let mut v = Vec::with_capacity(idx.len());
        for_each_indexed(idx_shape, dim, idx, strides, |_, pos| v.push(s[pos]));
        T::into_host(v)
    }
    let picked = with_host_storage!(&*buf, s => pick(&s[off..], idx_shape, dim, idx, &strides));
    if picked.dtype() == out {
        picked
    } else {
        cast_range(isa, &picked, 0, picked.len(), out)
    }
}

/// Zeros of `shape` with `src` (f32/bf16/f16 elements `S`) added at `idx` along `dim`, in f64.
pub(crate) fn scatter_add<S: F32Convert>(
    isa: Isa,
    shape: &[usize],
    dim: usize,
    idx: &[usize],
    idx_shape: &[usize],
    src: &[S],
    out: DType,
) -> HostStorage {
    let mut vals = vec![0f32; src.len()];
    S::load(isa, src, &mut vals);
    let mut acc = vec![0f64; shape.iter().product()];
    let strides = contiguous_strides(shape);
    for_each_indexed(idx_shape, dim, idx, &strides, |flat, pos| {
        acc[pos] += vals[flat] as f64
    });
    HostStorage::from_f64(out, &acc)
}
