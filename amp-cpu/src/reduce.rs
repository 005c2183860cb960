//! Reductions, softmax / log-softmax and layer norm over rows.
//!
//! The reduced dimensions are moved last (a view) and the view is gathered
//! when it is not already contiguous, so every kernel sees `rows × len`
//! contiguous data. Sums accumulate in f64 over 16 fixed lanes: the order is
//! the same at every [`Isa`], so every level gives the same bits.

use crate::convert::F32Convert;
use crate::elementwise::{dense, write_uninit, PARALLEL_MIN};
use crate::isa::{multiversion, Isa};
use crate::math;
use amp_dtype::DType;
use amp_tensor::backend::{HostStorage, ReduceOp};
use amp_tensor::Layout;
use rayon::prelude::*;
use std::mem::MaybeUninit;

multiversion! {
    /// Σ x in f64 over 16 fixed lanes.
    pub(crate) fn sum_f64(isa: Isa, x: &[f32]) -> f64 {
        let mut acc = [0f64; 16];
        let chunks = x.chunks_exact(16);
        let tail: f64 = chunks.remainder().iter().map(|&v| v as f64).sum();
        for c in chunks {
            for i in 0..16 {
                acc[i] += c[i] as f64;
            }
        }
        acc.iter().sum::<f64>() + tail
    }
}

multiversion! {
    /// Σ (x - mean)² in f64 over 16 fixed lanes.
    pub(crate) fn sum_sq_dev_f64(isa: Isa, x: &[f32], mean: f64) -> f64 {
        let mut acc = [0f64; 16];
        let chunks = x.chunks_exact(16);
        let tail: f64 = chunks.remainder().iter().map(|&v| (v as f64 - mean) * (v as f64 - mean)).sum();
        for c in chunks {
            for i in 0..16 {
                let d = c[i] as f64 - mean;
                acc[i] += d * d;
            }
        }
        acc.iter().sum::<f64>() + tail
    }
}

multiversion! {
    /// `x[i] = e^(x[i] - max)` and returns Σ in f64 (16 fixed lanes).
    fn exp_shift_sum(isa: Isa, x: &mut [f32], max: f32) -> f64 {
        for v in x.iter_mut() {
            *v = math::exp(*v - max);
        }
        sum_f64(isa, x)
    }
}

/// Maps `f(row, out_row)` over rows of `len` elements, in parallel when the data is large.
fn rows<S: F32Convert, T: Send>(
    isa: Isa,
    src: &[S],
    len: usize,
    n_rows: usize,
    out: &mut [T],
    out_per_row: usize,
    f: impl Fn(&mut [f32], &mut [T]) + Sync,
) {
    let body = |(r, o): (usize, &mut [T])| {
        let mut buf = vec![0f32; len];
        S::load(isa, &src[r * len..(r + 1) * len], &mut buf);
        f(&mut buf, o);
    };
    if out_per_row == 0 {
        return;
    }
    if n_rows * len >= PARALLEL_MIN && n_rows > 1 {
        out.par_chunks_mut(out_per_row).enumerate().for_each(body);
    } else {
        out.chunks_mut(out_per_row).enumerate().for_each(body);
    }
}

/// The view moved to `kept dims ++ reduced dims` and made contiguous, with (rows, len).
fn rows_view<'a>(
    h: &'a HostStorage,
    l: &Layout,
    dims: &[usize],
) -> (std::borrow::Cow<'a, HostStorage>, usize, usize, usize) {
    let rank = l.rank();
    let mut perm: Vec<usize> = (0..rank).filter(|d| !dims.contains(d)).collect();
    perm.extend_from_slice(dims);
    let p = l.permute(&perm);
    let len: usize = dims.iter().map(|&d| l.shape()[d]).product();
    let n_rows: usize = (0..rank)
        .filter(|d| !dims.contains(d))
        .map(|d| l.shape()[d])
        .product();
    let (buf, off) = dense(h, &p);
    (buf, off, n_rows, len)
}

fn reduce_row(isa: Isa, op: ReduceOp, x: &[f32]) -> f64 {
    match op {
        ReduceOp::Sum => sum_f64(isa, x),
        ReduceOp::Mean => sum_f64(isa, x) / x.len() as f64,
        ReduceOp::Max => x.iter().fold(f32::NEG_INFINITY, |m, &v| {
            if v.is_nan() || m.is_nan() {
                f32::NAN
            } else {
                m.max(v)
            }
        }) as f64,
        ReduceOp::Min => x.iter().fold(f32::INFINITY, |m, &v| {
            if v.is_nan() || m.is_nan() {
                f32::NAN
            } else {
                m.min(v)
            }
        }) as f64,
        ReduceOp::ArgMax | ReduceOp::ArgMin => {
            let max = op == ReduceOp::ArgMax;
            let mut best: Option<(f32, usize)> = None;
            for (i, &v) in x.iter().enumerate() {
                best = match best {
                    None => Some((v, i)),
                    Some((b, _)) if b.is_nan() => best,
                    Some(_) if v.is_nan() => Some((v, i)),
                    Some((b, _)) if (max && v > b) || (!max && v < b) => Some((v, i)),
                    keep => keep,
                };
            }
            best.map_or(0.0, |b| b.1 as f64)
        }
    }
}

multiversion! {
    /// `acc[j] += x[j]` in f64.
    fn add_f64(isa: Isa, acc: &mut [f64], x: &[f32]) {
        for (a, &v) in acc.iter_mut().zip(x) {
            *a += v as f64;
        }
    }
}

/// Sums (or means) of a contiguous `[rows, cols]` block over its rows — a
/// bias gradient's `Σ over the batch` — reading each row once, in order, and
/// accumulating every column in f64 (columns split among threads).
fn sum_leading<S: F32Convert>(
    isa: Isa,
    src: &[S],
    rows: usize,
    cols: usize,
    mean: bool,
) -> Vec<f64> {
    const COLS: usize = 1024;
    let mut acc = vec![0f64; cols];
    let body = |(c, acc): (usize, &mut [f64])| {
        let c0 = c * COLS;
        let mut buf = [0f32; COLS];
        let b = &mut buf[..acc.len()];
        for r in 0..rows {
            let start = r * cols + c0;
            S::load(isa, &src[start..start + acc.len()], b);
            add_f64(isa, acc, b);
        }
        if mean {
            for a in acc.iter_mut() {
                *a /= rows as f64;
            }
        }
    };
    if rows * cols >= PARALLEL_MIN && cols > COLS {
        acc.par_chunks_mut(COLS).enumerate().for_each(body);
    } else {
        acc.chunks_mut(COLS).enumerate().for_each(body);
    }
    acc
}

/// Reduces a float view (f32/bf16/f16 elements `S`) over `dims`; results rounded once to `out`.
pub(crate) fn reduce<S: F32Convert>(
    isa: Isa,
    op: ReduceOp,
    h: &HostStorage,
    l: &Layout,
    dims: &[usize],
    out: DType,
) -> HostStorage {
    // Sum or mean over the leading dimensions of a contiguous view.
    let leading =
        !dims.is_empty() && dims.iter().enumerate().all(|(i, &d)| d == i) && dims.len() < l.rank();
    if matches!(op, ReduceOp::Sum | ReduceOp::Mean) && leading {
        if let Some(range) = l.contiguous_range() {
            let rows: usize = l.shape()[..dims.len()].iter().product();
            let cols: usize = l.shape()[dims.len()..].iter().product();
            if rows > 0 {
                let src = &S::slice(h).expect("dtype checked by the caller")[range];
                let results = sum_leading(isa, src, rows, cols, op == ReduceOp::Mean);
                return HostStorage::from_f64(out, &results);
            }
        }
    }
    let (buf, off, n_rows, len) = rows_view(h, l, dims);
    let src = &S::slice(&buf).expect("dtype checked by the caller")[off..];
    let mut results = vec![0f64; n_rows];
    rows(isa, src, len, n_rows, &mut results, 1, |x, o| {
        o[0] = reduce_row(isa, op, x)
    });
    HostStorage::from_f64(out, &results)
}

/// Softmax or log-softmax over the last dimension.
pub(crate) fn softmax<S: F32Convert, D: F32Convert>(
    isa: Isa,
    h: &HostStorage,
    l: &Layout,
    log: bool,
    dst: &mut [D],
) {
    let rank = l.rank();
    let (buf, off, n_rows, len) = rows_view(h, l, &[rank - 1]);
    let src = &S::slice(&buf).expect("dtype checked by the caller")[off..];
    rows(isa, src, len, n_rows, dst, len, |x, o| {
        // As the reference (PyTorch's semantics): shift by the row's maximum as
        // it is, so a row with NaN or +inf, or all -inf, is NaN throughout.
        let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        if log {
            let mut e = x.to_vec();
            let lse = (exp_shift_sum(isa, &mut e, max).ln()) as f32;
            for v in x.iter_mut() {
                *v = *v - max - lse;
            }
        } else {
            let sum = exp_shift_sum(isa, x, max) as f32;
            for v in x.iter_mut() {
                *v /= sum;
            }
        }
        D::store(isa, x, o);
    });
}

/// Layer norm over the last dimension; statistics in f64, output rounded once from f32.
#[allow(clippy::too_many_arguments)]
pub(crate) fn layer_norm<S: F32Convert, D: F32Convert>(
    isa: Isa,
    h: &HostStorage,
    l: &Layout,
    weight: Option<&[f32]>,
    bias: Option<&[f32]>,
    eps: f64,
    dst: &mut [D],
    mean_out: &mut [f32],
    rstd_out: &mut [f32],
) {
    let rank = l.rank();
    if l.shape()[rank - 1] == 0 {
        return; // no rows (the reference's convention for an empty normalised dim)
    }
    let (buf, off, n_rows, len) = rows_view(h, l, &[rank - 1]);
    let src = &S::slice(&buf).expect("dtype checked by the caller")[off..];
    let mut stats = vec![(0f64, 0f64); n_rows];
    // Pass 1: statistics per row.
    rows(isa, src, len, n_rows, &mut stats, 1, |x, o| {
        let mean = sum_f64(isa, x) / len as f64;
        let var = sum_sq_dev_f64(isa, x, mean) / len as f64;
        o[0] = (mean, 1.0 / (var + eps).sqrt());
    });
    for (i, &(m, r)) in stats.iter().enumerate() {
        mean_out[i] = m as f32;
        rstd_out[i] = r as f32;
    }
    // Pass 2: normalise.
    let stats = &stats;
    let body = |(r, o): (usize, &mut [D])| {
        let mut x = vec![0f32; len];
        S::load(isa, &src[r * len..(r + 1) * len], &mut x);
        let (mean, rstd) = stats[r];
        normalise(isa, &mut x, mean, rstd, weight, bias);
        D::store(isa, &x, o);
    };
    if n_rows * len >= PARALLEL_MIN && n_rows > 1 {
        dst.par_chunks_mut(len).enumerate().for_each(body);
    } else {
        dst.chunks_mut(len).enumerate().for_each(body);
    }
}

multiversion! {
    /// `x = (x - mean)·rstd·w + b`, in f64 per element (rounded once to f32).
    fn normalise(isa: Isa, x: &mut [f32], mean: f64, rstd: f64, weight: Option<&[f32]>, bias: Option<&[f32]>) {
        match (weight, bias) {
            (Some(w), Some(b)) => {
                for ((v, &w), &b) in x.iter_mut().zip(w).zip(b) {
                    *v = ((*v as f64 - mean) * rstd * w as f64 + b as f64) as f32;
                }
            }
            (Some(w), None) => {
                for (v, &w) in x.iter_mut().zip(w) {
                    *v = ((*v as f64 - mean) * rstd * w as f64) as f32;
                }
            }
            (None, Some(b)) => {
                for (v, &b) in x.iter_mut().zip(b) {
                    *v = ((*v as f64 - mean) * rstd + b as f64) as f32;
                }
            }
            (None, None) => {
                for v in x.iter_mut() {
                    *v = ((*v as f64 - mean) * rstd) as f32;
                }
            }
        }
    }
}

/// One row of [`layer_norm_backward`]'s inputs: `x` (as f32), its output's
/// gradient `g`, the weight, and the row's saved statistics.
#[derive(Clone, Copy)]
struct NormRow<'a> {
    x: &'a [f32],
    g: &'a [f32],
    weight: Option<&'a [f32]>,
    mean: f64,
    rstd: f64,
}

multiversion! {
    /// One row of [`layer_norm_backward`], in f64: `x̂` and `gx̂ = g·w` into
    /// the scratch rows, `Σ g·x̂` and `Σ g` added into `dw` and `db`, the row
    /// sums of `gx̂` and `gx̂·x̂` over 8 fixed lanes (so the loops vectorise),
    /// and `dx = rstd·(gx̂ − mean(gx̂) − x̂·mean(gx̂·x̂))` rounded once into `dx`.
    fn layer_norm_backward_row(
        isa: Isa,
        row: NormRow<'_>,
        xhat: &mut [f64],
        gxhat: &mut [f64],
        dw: &mut [f64],
        db: &mut [f64],
        dx: &mut [f32],
    ) {
        let NormRow { x, g, weight, mean, rstd } = row;
        let len = x.len();
        let cols = xhat.iter_mut().zip(gxhat.iter_mut()).zip(dw.iter_mut().zip(db.iter_mut()));
        let step = |xj: f32, gj: f32, wj: f64, ((xh, gh), (dwj, dbj)): ((&mut f64, &mut f64), (&mut f64, &mut f64))| {
            let (xv, gv) = ((xj as f64 - mean) * rstd, gj as f64);
            *xh = xv;
            *gh = gv * wj;
            *dwj += gv * xv;
            *dbj += gv;
        };
        match weight {
            Some(w) => {
                for (((&xj, &gj), &wj), c) in x.iter().zip(g).zip(w).zip(cols) {
                    step(xj, gj, wj as f64, c);
                }
            }
            None => {
                for ((&xj, &gj), c) in x.iter().zip(g).zip(cols) {
                    step(xj, gj, 1.0, c);
                }
            }
        }
        let (mut s1, mut s2) = ([0f64; 8], [0f64; 8]);
        let (gc, xc) = (gxhat.chunks_exact(8), xhat.chunks_exact(8));
        let tail = gc.remainder().iter().zip(xc.remainder());
        let (t1, t2) = tail.fold((0f64, 0f64), |(a, b), (&gh, &xh)| (a + gh, b + gh * xh));
        for (gh, xh) in gc.zip(xc) {
            for k in 0..8 {
                s1[k] += gh[k];
                s2[k] += gh[k] * xh[k];
            }
        }
        let m1 = (s1.iter().sum::<f64>() + t1) / len as f64;
        let m2 = (s2.iter().sum::<f64>() + t2) / len as f64;
        for ((o, &gh), &xh) in dx.iter_mut().zip(gxhat.iter()).zip(xhat.iter()) {
            *o = (rstd * (gh - m1 - xh * m2)) as f32;
        }
    }
}

/// Rows per task of [`layer_norm_backward`]: fixed, so that the weight and
/// bias gradients are summed in the same order on any number of threads.
const NORM_BACKWARD_ROWS: usize = 32;

/// The gradients of [`layer_norm`] over rows of `len` (see
/// `Backend::layer_norm_backward`), every step in f64 from the f32 statistics:
/// `x̂ = (x − mean)·rstd`, `gx̂ = g·w`, `dx = rstd·(gx̂ − mean(gx̂) − x̂·mean(gx̂·x̂))`
/// rounded once into `dx`, every element of which is written; returns
/// `(Σ g·x̂, Σ g)` over the rows, rounded to f32.
#[allow(clippy::too_many_arguments)]
pub(crate) fn layer_norm_backward<S: F32Convert, G: F32Convert, D: F32Convert>(
    isa: Isa,
    x: &[S],
    g: &[G],
    weight: Option<&[f32]>,
    mean: &[f32],
    rstd: &[f32],
    len: usize,
    dx: &mut [MaybeUninit<D>],
) -> (Vec<f32>, Vec<f32>) {
    let task = |(c, out): (usize, &mut [MaybeUninit<D>])| {
        let (mut dw, mut db) = (vec![0f64; len], vec![0f64; len]);
        let (mut xr, mut gr, mut o) = (vec![0f32; len], vec![0f32; len], vec![0f32; len]);
        let mut narrow = vec![D::from_f32(0.0); len];
        let (mut xhat, mut gxhat) = (vec![0f64; len], vec![0f64; len]);
        for (i, orow) in out.chunks_mut(len).enumerate() {
            let r = c * NORM_BACKWARD_ROWS + i;
            S::load(isa, &x[r * len..(r + 1) * len], &mut xr);
            G::load(isa, &g[r * len..(r + 1) * len], &mut gr);
            let row = NormRow {
                x: &xr,
                g: &gr,
                weight,
                mean: mean[r] as f64,
                rstd: rstd[r] as f64,
            };
            layer_norm_backward_row(isa, row, &mut xhat, &mut gxhat, &mut dw, &mut db, &mut o);
            D::store(isa, &o, &mut narrow);
            write_uninit(isa, orow, &narrow, false);
        }
        (dw, db)
    };
    let chunk = NORM_BACKWARD_ROWS * len;
    let partials: Vec<(Vec<f64>, Vec<f64>)> = if dx.len() >= PARALLEL_MIN && dx.len() > chunk {
        dx.par_chunks_mut(chunk).enumerate().map(task).collect()
    } else {
        dx.chunks_mut(chunk).enumerate().map(task).collect()
    };
    let (mut dw, mut db) = (vec![0f64; len], vec![0f64; len]);
    for (pw, pb) in &partials {
        for j in 0..len {
            dw[j] += pw[j];
            db[j] += pb[j];
        }
    }
    let f32s = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect();
    (f32s(dw), f32s(db))
}
