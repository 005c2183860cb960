//! The windows of a convolution (im2col) and their adjoint (col2im), for
//! `conv2d`'s product on the packed GEMM: f32/bf16/f16 inputs, windows in
//! the input's dtype or f32.
//!
//! im2col writes each row `(b, oh, ow)` — its `C·KH·KW` taps — in one
//! pass, rows in parallel; col2im accumulates each image in f32 from its
//! rows in order, images in parallel, so no two threads write the same
//! element and the sums do not depend on the thread count.

use amp_tensor::backend::Im2col;
use rayon::prelude::*;

/// Rows of the window matrix written per parallel task.
const ROWS_PER_TASK: usize = 64;

/// The source row (`d` = 0) or column (1) of each (output position, kernel
/// tap) pair along direction `d`, output-major, if it lies inside the plane.
fn sources(g: &Im2col, d: usize) -> Vec<Option<usize>> {
    (0..g.out[d])
        .flat_map(|o| (0..g.kernel[d]).map(move |k| g.source(d, o, k)))
        .collect()
}

/// The windows of the contiguous NCHW `x` as a row-major `[rows, cols]`
/// matrix of `D` (`zero` where a tap reads padding), each element `read`.
pub(crate) fn im2col<S: Sync, D: Copy + Send>(
    x: &[S],
    g: &Im2col,
    zero: D,
    read: impl Fn(&S) -> D + Sync,
) -> Vec<D> {
    let (rows, cols) = (g.rows(), g.cols());
    let [h, w] = g.plane;
    let [kh, kw] = g.kernel;
    let [oh, ow] = g.out;
    let mut out = vec![zero; rows * cols];
    let (ih_of, iw_of) = (sources(g, 0), sources(g, 1));
    out.par_chunks_mut(ROWS_PER_TASK * cols)
        .enumerate()
        .for_each(|(task, chunk)| {
            for (i, row) in chunk.chunks_mut(cols).enumerate() {
                let r = task * ROWS_PER_TASK + i;
                let (b, p) = (r / (oh * ow), r % (oh * ow));
                let (y, x0) = (p / ow, p % ow);
                let ihs = &ih_of[y * kh..(y + 1) * kh];
                let iws = &iw_of[x0 * kw..(x0 + 1) * kw];
                for (c, taps) in row.chunks_mut(kh * kw).enumerate() {
                    let plane = &x[(b * g.channels + c) * h * w..][..h * w];
                    for (ky, line) in taps.chunks_mut(kw).enumerate() {
                        let Some(ih) = ihs[ky] else { continue };
                        let src = &plane[ih * w..(ih + 1) * w];
                        for (v, iw) in line.iter_mut().zip(iws) {
                            if let Some(iw) = iw {
                                *v = read(&src[*iw]);
                            }
                        }
                    }
                }
            }
        });
    out
}

/// The adjoint of [`im2col`]: the f32 window matrix `cols` summed back into
/// NCHW planes, in f32. Images in parallel: each reads its rows of `cols`
/// in order (one stream) and adds every tap into its own planes, which stay
/// in cache (`C·H·W` f32 per image).
pub(crate) fn col2im(cols: &[f32], g: &Im2col) -> Vec<f32> {
    let [h, w] = g.plane;
    let [kh, kw] = g.kernel;
    let [oh, ow] = g.out;
    let width = g.cols();
    let image = g.channels * h * w;
    let mut out = vec![0f32; g.batch * image];
    let (ih_of, iw_of) = (sources(g, 0), sources(g, 1));
    out.par_chunks_mut(image)
        .enumerate()
        .for_each(|(b, planes)| {
            for y in 0..oh {
                let ihs = &ih_of[y * kh..(y + 1) * kh];
                for x0 in 0..ow {
                    let iws = &iw_of[x0 * kw..(x0 + 1) * kw];
                    let row = &cols[((b * oh + y) * ow + x0) * width..][..width];
                    for (c, taps) in row.chunks(kh * kw).enumerate() {
                        let plane = &mut planes[c * h * w..(c + 1) * h * w];
                        for (ky, line) in taps.chunks(kw).enumerate() {
                            let Some(ih) = ihs[ky] else { continue };
                            let dst = &mut plane[ih * w..(ih + 1) * w];
                            for (v, iw) in line.iter().zip(iws) {
                                if let Some(iw) = iw {
                                    dst[*iw] += v;
                                }
                            }
                        }
                    }
                }
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// im2col and col2im are adjoint: ⟨im2col(x), c⟩ = ⟨x, col2im(c)⟩, and
    /// im2col matches a direct reading of the definition.
    #[test]
    fn im2col_matches_its_definition_and_col2im_is_its_adjoint() {
        let g = Im2col {
            batch: 2,
            channels: 3,
            plane: [5, 4],
            kernel: [3, 2],
            stride: [2, 1],
            padding: [1, 1],
            dilation: [1, 2],
            out: [3, 3],
        };
        let x: Vec<f32> = (0..2 * 3 * 5 * 4).map(|i| (i % 17) as f32 - 8.0).collect();
        let cols = im2col(&x, &g, 0.0, |v| *v);
        assert_eq!(cols.len(), g.rows() * g.cols());
        for r in 0..g.rows() {
            let (b, y, x0) = (r / 9, (r % 9) / 3, r % 3);
            for c in 0..3 {
                for ky in 0..3 {
                    for kx in 0..2 {
                        let want = match (g.source(0, y, ky), g.source(1, x0, kx)) {
                            (Some(ih), Some(iw)) => x[((b * 3 + c) * 5 + ih) * 4 + iw],
                            _ => 0.0,
                        };
                        assert_eq!(cols[r * g.cols() + (c * 3 + ky) * 2 + kx], want);
                    }
                }
            }
        }
        let probe: Vec<f32> = (0..cols.len()).map(|i| (i % 7) as f32 - 3.0).collect();
        let back = col2im(&probe, &g);
        let lhs: f64 = cols.iter().zip(&probe).map(|(a, b)| f64::from(a * b)).sum();
        let rhs: f64 = x.iter().zip(&back).map(|(a, b)| f64::from(a * b)).sum();
        assert_eq!(lhs, rhs);
    }
}
