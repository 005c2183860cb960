//! The adjoint of a convolution's window gather (col2im): a strided
//! convolution's input gradient. (The forward product and the weight's
//! gradient never store the windows: `gemm::implicit`.)
//!
//! col2im accumulates each image in f32 from its rows in order, images in
//! parallel, so no two threads write the same element and the sums do not
//! depend on the thread count.

use amp_tensor::backend::Im2col;
use rayon::prelude::*;

/// The source row (`d` = 0) or column (1) of each (output position, kernel
/// tap) pair along direction `d`, output-major, if it lies inside the plane.
fn sources(g: &Im2col, d: usize) -> Vec<Option<usize>> {
    (0..g.out[d])
        .flat_map(|o| (0..g.kernel[d]).map(move |k| g.source(d, o, k)))
        .collect()
}

/// The adjoint of the window gather: the f32 window matrix `cols`
/// (`[batch·oh·ow, channels·kh·kw]`) summed back into
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
    use crate::gemm::implicit::windows_block;

    /// col2im is the adjoint of the window gather: ⟨windows(x), c⟩ = ⟨x,
    /// col2im(c)⟩, with the windows gathered block by block as the implicit
    /// GEMM gathers them (`[C·KH·KW, OH·OW]` per image, the transpose of
    /// col2im's rows), and those blocks match a direct reading of the definition.
    #[test]
    fn col2im_is_the_adjoint_of_the_window_gather() {
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
        let (k, l, image) = (g.cols(), 9, 3 * 5 * 4);
        let probe: Vec<f32> = (0..g.rows() * k).map(|i| (i % 7) as f32 - 3.0).collect();
        let mut lhs = 0f64;
        for b in 0..2 {
            // Two blocks of taps and of positions, as the tasks split them.
            let mut block = vec![0f32; k * l];
            for (k0, rows) in [(0, 7), (7, k - 7)] {
                for (j0, cols) in [(0, 4), (4, 5)] {
                    let mut part = vec![0f32; rows * cols];
                    windows_block(
                        &x[b * image..][..image],
                        &g,
                        0,
                        k0,
                        rows,
                        j0,
                        cols,
                        0.0,
                        &mut part,
                    );
                    for r in 0..rows {
                        for j in 0..cols {
                            block[(k0 + r) * l + j0 + j] = part[r * cols + j];
                        }
                    }
                }
            }
            for pos in 0..l {
                let (y, x0) = (pos / 3, pos % 3);
                for c in 0..3 {
                    for ky in 0..3 {
                        for kx in 0..2 {
                            let tap = (c * 3 + ky) * 2 + kx;
                            let want = match (g.source(0, y, ky), g.source(1, x0, kx)) {
                                (Some(ih), Some(iw)) => x[((b * 3 + c) * 5 + ih) * 4 + iw],
                                _ => 0.0,
                            };
                            assert_eq!(
                                block[tap * l + pos],
                                want,
                                "image {b} tap {tap} position {pos}"
                            );
                            lhs += f64::from(want * probe[(b * l + pos) * k + tap]);
                        }
                    }
                }
            }
        }
        let back = col2im(&probe, &g);
        let rhs: f64 = x.iter().zip(&back).map(|(a, b)| f64::from(a * b)).sum();
        assert_eq!(lhs, rhs);
    }
}
