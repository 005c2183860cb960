//! Convolutions as implicit GEMMs: the window matrix (im2col) is never
//! stored. Each task gathers one cache-sized block of it straight from the
//! NCHW input ([`windows_block`]) and packs it as a B block for the same
//! micro-kernels as [`super::gemm`].
//!
//! - Forward, per image and group: `Y[og, L] = W[og, K] · cols[K, L]` (`L =
//!   OH·OW`, `K = C/groups·KH·KW`). The weight is A (packed once, shared by
//!   every task), the windows are B, and the product's rows are the output's
//!   channels: it is written in NCHW directly, the bias added in f32 before
//!   the one rounding. Tasks are (image, group, block of positions).
//! - The weight's gradient: `dW[og, K] = Σ_images dY[og, L] · cols[K, L]ᵀ`.
//!   The output's gradient is A (contiguous along the depth `L`), the windows
//!   B. Tasks are (group, block of K) over a fixed share of the images; the
//!   shares' partial sums are added in order, so the result does not depend
//!   on the thread count.
//!
//! The input's gradient is the caller's: a forward convolution of `dY` with
//! the flipped weight at stride 1, else col2im of `dYᵀ · W`.

use super::finish::{finish_into, padded_stride};
use super::packing::{Accum, AmxPacker, F32Packer, Lines, Packer, PairPacker};
use super::panels::Panels;
use super::schedule::depth_block;
use super::Kernel;
use crate::convert::F32Convert;
use crate::isa::Isa;
use amp_tensor::backend::Im2col;
use rayon::prelude::*;

/// Output positions per forward task (a multiple of every `NR`): its window
/// block (`depth block × POSITIONS`) stays in L2 (measured as for
/// [`GRAD_PANELS`]: 128–1024 positions within 5% of each other at a depth
/// block of 256; a depth block of 128 slower).
const POSITIONS: usize = 256;
/// B panels per weight-gradient task: every task packs the output's
/// gradient (A) for its panels, so wide tasks pack it less often (measured
/// on an AVX2 EPYC, `membench conv-f32 64 56`, best of three alternated
/// runs: 4 panels 77 ms, 9 66 ms, 18 60 ms, 36 57 ms; 18 keeps a window block
/// of 256 positions under 300 KiB for a 512 KiB L2).
const GRAD_PANELS: usize = 18;
/// Weight-gradient tasks wanted per product: the images are split into this
/// many shares divided by the column tasks (at least one share, at most one
/// per image), chosen from the shape alone.
const GRAD_TASKS: usize = 16;

/// A convolution's shape: the geometry of its windows and its channel groups.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvShape<'g> {
    /// The windows of the whole input (all channels).
    pub geometry: &'g Im2col,
    /// Channel groups.
    pub groups: usize,
    /// Output channels (all groups).
    pub out_channels: usize,
}

impl ConvShape<'_> {
    /// Input channels per group.
    fn group_channels(&self) -> usize {
        self.geometry.channels / self.groups
    }
    /// Output channels per group.
    fn group_out(&self) -> usize {
        self.out_channels / self.groups
    }
    /// The depth of one group's product: `C/groups · KH · KW`.
    fn depth(&self) -> usize {
        self.group_channels() * self.geometry.kernel[0] * self.geometry.kernel[1]
    }
    /// Output positions per image.
    fn positions(&self) -> usize {
        self.geometry.out[0] * self.geometry.out[1]
    }
    /// Elements of one input image.
    fn image(&self) -> usize {
        self.geometry.channels * self.geometry.plane[0] * self.geometry.plane[1]
    }
}

/// Rows `k0..k0 + rows` (taps `(c, kh, kw)` of group channels from `c0`) and
/// columns `j0..j0 + cols` (output positions `(oh, ow)`) of one image's
/// window matrix, row-major into `out` (`zero` where a tap reads padding).
///
/// A row is a run of output rows, each a shifted piece of one input line
/// (stride 1) between zeros: copied inline ([`copy_short`]), as a library
/// `memcpy` call costs more than the 64–112 bytes of a typical piece.
#[allow(clippy::too_many_arguments)]
pub(crate) fn windows_block<E: Copy>(
    image: &[E],
    g: &Im2col,
    c0: usize,
    k0: usize,
    rows: usize,
    j0: usize,
    cols: usize,
    zero: E,
    out: &mut [E],
) {
    let [h, w] = g.plane;
    let [kh, kw] = g.kernel;
    let ow = g.out[1];
    let (y_first, x_first) = (j0 / ow, j0 % ow);
    for (r, dst) in out[..rows * cols].chunks_mut(cols).enumerate() {
        let k = k0 + r;
        let (c, tap) = (c0 + k / (kh * kw), k % (kh * kw));
        let (ky, kx) = (tap / kw, tap % kw);
        let plane = &image[c * h * w..(c + 1) * h * w];
        // The input column of output column 0 at this tap, padding included.
        let shift = (kx * g.dilation[1]) as isize - g.padding[1] as isize;
        // The input row of output row `y` at this tap is `y·stride + row_shift`.
        let row_shift = (ky * g.dilation[0]) as isize - g.padding[0] as isize;
        let (mut y, mut x0, mut col) = (y_first, x_first, 0);
        while col < cols {
            let run = (ow - x0).min(cols - col);
            let seg = &mut dst[col..col + run];
            let ih = (y * g.stride[0]) as isize + row_shift;
            if !(0..h as isize).contains(&ih) {
                fill_short(seg, zero);
            } else {
                let line = &plane[ih as usize * w..(ih as usize + 1) * w];
                if g.stride[1] == 1 {
                    // Input columns x0 + i + shift: zeros outside 0..w, one copy inside.
                    let first = x0 as isize + shift;
                    let lo = (-first).clamp(0, run as isize) as usize;
                    let hi = (w as isize - first).clamp(lo as isize, run as isize) as usize;
                    fill_short(&mut seg[..lo], zero);
                    fill_short(&mut seg[hi..], zero);
                    if hi > lo {
                        let s = (first + lo as isize) as usize;
                        copy_short(&mut seg[lo..hi], &line[s..s + (hi - lo)]);
                    }
                } else {
                    for (i, v) in seg.iter_mut().enumerate() {
                        *v = g.source(1, x0 + i, kx).map_or(zero, |iw| line[iw]);
                    }
                }
            }
            col += run;
            y += 1;
            x0 = 0;
        }
    }
}

/// `dst = src` for the short runs of [`windows_block`], in 32-byte moves
/// (the last one overlapping) that the compiler keeps inline.
#[inline(always)]
fn copy_short<E: Copy>(dst: &mut [E], src: &[E]) {
    assert_eq!(dst.len(), src.len(), "copy_short: lengths differ");
    let bytes = std::mem::size_of_val(src);
    let (s, d) = (src.as_ptr().cast::<u8>(), dst.as_mut_ptr().cast::<u8>());
    /// `N` bytes from `s + at` to `d + at`.
    ///
    /// # Safety
    /// `at + N` is at most the length of both, which do not overlap.
    #[inline(always)]
    unsafe fn move_bytes<const N: usize>(s: *const u8, d: *mut u8, at: usize) {
        // SAFETY: as the caller promises.
        unsafe {
            let v = s.add(at).cast::<[u8; N]>().read_unaligned();
            d.add(at).cast::<[u8; N]>().write_unaligned(v);
        }
    }
    // SAFETY: every move lies inside the first `bytes` bytes of both slices
    // (distinct borrows, so they do not overlap): whole 32-byte moves below
    // `bytes`, then one ending at `bytes`, or two overlapping halves-or-more
    // of a shorter run.
    unsafe {
        if bytes >= 32 {
            let mut at = 0;
            while at + 32 < bytes {
                move_bytes::<32>(s, d, at);
                at += 32;
            }
            move_bytes::<32>(s, d, bytes - 32);
        } else if bytes >= 16 {
            move_bytes::<16>(s, d, 0);
            move_bytes::<16>(s, d, bytes - 16);
        } else if bytes >= 8 {
            move_bytes::<8>(s, d, 0);
            move_bytes::<8>(s, d, bytes - 8);
        } else if bytes >= 4 {
            move_bytes::<4>(s, d, 0);
            move_bytes::<4>(s, d, bytes - 4);
        } else {
            for i in 0..bytes {
                move_bytes::<1>(s, d, i);
            }
        }
    }
}

/// `dst` set to `value`, element by element: the runs of padding in a
/// window are a few elements long.
#[inline(always)]
fn fill_short<E: Copy>(dst: &mut [E], value: E) {
    for v in dst {
        *v = value;
    }
}

/// A pointer that tasks writing disjoint elements share.
#[derive(Clone, Copy)]
struct Shared<T>(*mut T);

impl<T> Shared<T> {
    /// `count` elements from element `at`.
    ///
    /// # Safety
    /// They lie inside the allocation, and no one else reads or writes them
    /// while the slice lives.
    #[allow(clippy::mut_from_ref)]
    unsafe fn slice(&self, at: usize, count: usize) -> &mut [T] {
        // SAFETY: as the caller promises.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(at), count) }
    }
}
// SAFETY: every task writes elements no other task writes (see the users).
unsafe impl<T: Send> Send for Shared<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for Shared<T> {}

/// Runs `body` with the packer for `kernel` and the element type it reads:
/// bf16 pairs for the `vdpbf16ps` and AMX kernels when the inputs are bf16,
/// f32 panels (widened while packing) otherwise.
macro_rules! with_conv_packer {
    ($isa:expr, $kernel:expr, [$($x:ident),+], |$p:ident| $body:expr) => {{
        let (isa, kernel) = ($isa, $kernel);
        let pairs = kernel.packs_bf16_pairs() || kernel.is_amx();
        match ($(F32Convert::as_bf16($x).filter(|_| pairs),)+) {
            ($(Some($x),)+) => {
                if kernel.is_amx() {
                    let $p = &AmxPacker;
                    $body
                } else {
                    let $p = &PairPacker;
                    $body
                }
            }
            _ => {
                let $p = &F32Packer { isa };
                $body
            }
        }
    }};
}

/// One forward task's buffers, reused by the tasks of a thread.
struct Scratch<E, Q: super::panels::Scratch, D> {
    /// The f32 product of the task's positions, `mp × ldc`.
    tile: Panels<f32>,
    /// One depth block of the windows, row-major.
    block: Vec<E>,
    /// The block packed as B panels.
    b_packed: Panels<Q>,
    /// One output row rounded to `D`.
    rounded: Vec<D>,
}

/// The convolution of the NCHW `x` with `weight` `[OC, C/groups, KH, KW]`
/// (and `bias`), NCHW `[N, OC, OH, OW]` as `D`: products accumulated in f32,
/// the bias added in f32, rounded once.
pub(crate) fn conv2d<T: F32Convert, D: F32Convert + Send + Sync>(
    isa: Isa,
    x: &[T],
    weight: &[T],
    bias: Option<&[f32]>,
    shape: ConvShape<'_>,
) -> Vec<D> {
    let kernel = Kernel::select(isa, T::DTYPE);
    with_conv_packer!(isa, kernel, [x, weight], |packer| {
        forward(packer, kernel, isa, x, weight, bias, shape)
    })
}

fn forward<E: F32Convert, P: Packer<E>, D: F32Convert + Send + Sync>(
    packer: &P,
    kernel: Kernel,
    isa: Isa,
    x: &[E],
    weight: &[E],
    bias: Option<&[f32]>,
    shape: ConvShape<'_>,
) -> Vec<D> {
    let g = shape.geometry;
    let (mr, nr) = (kernel.mr(), kernel.nr());
    let (og, depth, l) = (shape.group_out(), shape.depth(), shape.positions());
    let mp = og.div_ceil(mr) * mr;
    let kcb = depth_block(kernel);
    let blocks: Vec<(usize, usize)> = (0..depth)
        .step_by(kcb)
        .map(|p0| (p0, kcb.min(depth - p0)))
        .collect();
    // The weight as A, packed once per group and depth block.
    let a_packed: Vec<Vec<Panels<P::Elem>>> = (0..shape.groups)
        .map(|gi| {
            blocks
                .iter()
                .map(|&(p0, kc)| {
                    let mut v = Panels::new(mp * packer.depth(kc));
                    let rows = Lines {
                        data: weight,
                        base: gi * og * depth + p0,
                        x_stride: depth,
                        p_stride: 1,
                        count: og,
                        depth: kc,
                    };
                    packer.pack_a(rows, mr, &mut v);
                    v
                })
                .collect()
        })
        .collect();
    let total = g.batch * shape.out_channels * l;
    let mut out: Vec<D> = Vec::with_capacity(total);
    let dst = Shared(out.spare_capacity_mut().as_mut_ptr());
    let stream = total * std::mem::size_of::<D>() >= crate::elementwise::STREAM_MIN_BYTES;
    let spans = l.div_ceil(POSITIONS);
    let tasks = g.batch * shape.groups * spans;
    let ldc = padded_stride(POSITIONS.min(l), nr);
    let zero = E::from_f32(0.0);
    let scratch = || Scratch {
        tile: Panels::<f32>::new(mp * ldc),
        block: vec![zero; kcb * POSITIONS.min(l)],
        b_packed: Panels::<P::Elem>::new(POSITIONS.min(l).div_ceil(nr) * nr * packer.depth(kcb)),
        rounded: vec![D::from_f32(0.0); POSITIONS],
    };
    let task = |s: &mut Scratch<E, P::Elem, D>, t: usize| {
        let Scratch {
            tile: c,
            block,
            b_packed,
            rounded,
        } = s;
        let (b, rest) = (t / (shape.groups * spans), t % (shape.groups * spans));
        let (gi, j0) = (rest / spans, rest % spans * POSITIONS);
        let cols = POSITIONS.min(l - j0);
        let panels = cols.div_ceil(nr);
        let image = &x[b * shape.image()..(b + 1) * shape.image()];
        for (bi, &(p0, kc)) in blocks.iter().enumerate() {
            let c0 = gi * shape.group_channels();
            windows_block(image, g, c0, p0, kc, j0, cols, zero, block);
            let bp = &mut b_packed[..panels * nr * packer.depth(kc)];
            let src = Lines {
                data: &block[..],
                base: 0,
                x_stride: 1,
                p_stride: cols,
                count: cols,
                depth: kc,
            };
            packer.pack_b(src, nr, bp);
            let ap = &a_packed[gi][bi];
            let kd = packer.depth(kc);
            for ip in 0..mp / mr {
                let acc = Accum {
                    c: &mut c[ip * mr * ldc..],
                    ldc,
                    overwrite: bi == 0,
                    rows: og - ip * mr,
                };
                packer.run_row(
                    kernel,
                    kc,
                    &ap[ip * mr * kd..(ip + 1) * mr * kd],
                    bp,
                    panels,
                    acc,
                );
            }
        }
        let channel0 = b * shape.out_channels + gi * og;
        for r in 0..og {
            let vals = &mut c[r * ldc..r * ldc + cols];
            if let Some(bias) = bias {
                let add = bias[gi * og + r];
                vals.iter_mut().for_each(|v| *v += add);
            }
            // SAFETY: task (b, gi, span) alone writes columns j0..j0 + cols of
            // output rows (b, gi·og + r), all inside the `total` reserved.
            let row = unsafe { dst.slice((channel0 + r) * l + j0, cols) };
            finish_into(isa, &|_, _| {}, j0, vals, rounded, row, stream);
        }
        if stream {
            crate::elementwise::stream_fence(isa);
        }
    };
    if 2 * total * depth >= super::PARALLEL_FLOPS {
        (0..tasks).into_par_iter().for_each_init(scratch, task);
    } else {
        let mut s = scratch();
        (0..tasks).for_each(|t| task(&mut s, t));
    }
    // SAFETY: the tasks cover every (image, channel, position) once.
    unsafe { out.set_len(total) };
    out
}

/// The gradient of a convolution's weight, `[OC, C/groups, KH, KW]` in f32:
/// `Σ_images dY · windowsᵀ` per group, from the NCHW input `x` and output
/// gradient `grad` (`[N, OC, OH, OW]`, the input's dtype).
pub(crate) fn conv2d_weight_grad<T: F32Convert>(
    isa: Isa,
    x: &[T],
    grad: &[T],
    shape: ConvShape<'_>,
) -> Vec<f32> {
    let kernel = Kernel::select(isa, T::DTYPE);
    with_conv_packer!(isa, kernel, [x, grad], |packer| {
        weight_grad(packer, kernel, x, grad, shape)
    })
}

fn weight_grad<E: F32Convert, P: Packer<E>>(
    packer: &P,
    kernel: Kernel,
    x: &[E],
    grad: &[E],
    shape: ConvShape<'_>,
) -> Vec<f32> {
    let g = shape.geometry;
    let (mr, nr) = (kernel.mr(), kernel.nr());
    let (og, depth, l) = (shape.group_out(), shape.depth(), shape.positions());
    let mp = og.div_ceil(mr) * mr;
    let kcb = depth_block(kernel);
    let width = GRAD_PANELS * nr;
    let strips = depth.div_ceil(width);
    let columns = shape.groups * strips;
    let shares = GRAD_TASKS.div_ceil(columns).clamp(1, g.batch.max(1));
    let per_share = g.batch.div_ceil(shares);
    let ldc = padded_stride(width, nr);
    let zero = E::from_f32(0.0);
    let total_flops = 2 * g.batch * shape.out_channels * depth * l;
    // One tile of `mp × ldc` per (share, group, strip).
    let task = |t: usize| -> Panels<f32> {
        let (share, column) = (t / columns, t % columns);
        let (gi, k0) = (column / strips, column % strips * width);
        let cols = width.min(depth - k0);
        let panels = cols.div_ceil(nr);
        let mut c = Panels::<f32>::new(mp * ldc);
        let mut block = vec![zero; cols * kcb.min(l)];
        let mut a_packed = Panels::<P::Elem>::new(mp * packer.depth(kcb));
        let mut b_packed = Panels::<P::Elem>::new(panels * nr * packer.depth(kcb));
        let mut first = true;
        for b in share * per_share..((share + 1) * per_share).min(g.batch) {
            let image = &x[b * shape.image()..(b + 1) * shape.image()];
            for l0 in (0..l).step_by(kcb) {
                let lc = kcb.min(l - l0);
                let kd = packer.depth(lc);
                let c0 = gi * shape.group_channels();
                windows_block(image, g, c0, k0, cols, l0, lc, zero, &mut block);
                // B's column j is row j of the block (contiguous along the depth).
                let src = Lines {
                    data: &block[..],
                    base: 0,
                    x_stride: lc,
                    p_stride: 1,
                    count: cols,
                    depth: lc,
                };
                let bp = &mut b_packed[..panels * nr * kd];
                packer.pack_b(src, nr, bp);
                let rows = Lines {
                    data: grad,
                    base: (b * shape.out_channels + gi * og) * l + l0,
                    x_stride: l,
                    p_stride: 1,
                    count: og,
                    depth: lc,
                };
                let ap = &mut a_packed[..mp * kd];
                packer.pack_a(rows, mr, ap);
                for ip in 0..mp / mr {
                    let acc = Accum {
                        c: &mut c[ip * mr * ldc..],
                        ldc,
                        overwrite: first,
                        rows: og - ip * mr,
                    };
                    packer.run_row(
                        kernel,
                        lc,
                        &ap[ip * mr * kd..(ip + 1) * mr * kd],
                        bp,
                        panels,
                        acc,
                    );
                }
                first = false;
            }
        }
        if first {
            c.fill(0.0);
        }
        c
    };
    let tiles: Vec<Panels<f32>> = if total_flops >= super::PARALLEL_FLOPS {
        (0..shares * columns).into_par_iter().map(task).collect()
    } else {
        (0..shares * columns).map(task).collect()
    };
    // The shares' sums added in order; rows per output channel, columns per tap.
    let mut out = vec![0f32; shape.out_channels * depth];
    for (t, tile) in tiles.iter().enumerate() {
        let column = t % columns;
        let (gi, k0) = (column / strips, column % strips * width);
        let cols = width.min(depth - k0);
        for r in 0..og {
            let dst = &mut out[(gi * og + r) * depth + k0..][..cols];
            for (d, v) in dst.iter_mut().zip(&tile[r * ldc..r * ldc + cols]) {
                *d += v;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use amp_dtype::bf16;

    /// Calls `f(y, x, w)` with the flat indices of every (output, input,
    /// weight) element triple the convolution's definition multiplies
    /// (`y[b, o, oy, ox] += x[b, c, ih, iw] · w[o, c, ky, kx]`, padding skipped).
    fn for_each_term(shape: ConvShape<'_>, mut f: impl FnMut(usize, usize, usize)) {
        let g = shape.geometry;
        let (cg, og) = (shape.group_channels(), shape.group_out());
        let [kh, kw] = g.kernel;
        let [h, wd] = g.plane;
        for b in 0..g.batch {
            for o in 0..shape.out_channels {
                let gi = o / og;
                for oy in 0..g.out[0] {
                    for ox in 0..g.out[1] {
                        let yi = ((b * shape.out_channels + o) * g.out[0] + oy) * g.out[1] + ox;
                        for c in 0..cg {
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    if let (Some(ih), Some(iw)) =
                                        (g.source(0, oy, ky), g.source(1, ox, kx))
                                    {
                                        let xi =
                                            ((b * g.channels + gi * cg + c) * h + ih) * wd + iw;
                                        f(yi, xi, ((o * cg + c) * kh + ky) * kw + kx);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// `(x, weight)`'s convolution by its definition, in f64.
    fn conv_by_definition(x: &[f32], w: &[f32], shape: ConvShape<'_>) -> Vec<f64> {
        let g = shape.geometry;
        let mut y = vec![0f64; g.batch * shape.out_channels * shape.positions()];
        for_each_term(shape, |yi, xi, wi| {
            y[yi] += f64::from(x[xi]) * f64::from(w[wi])
        });
        y
    }

    /// `dW[o, c, ky, kx] = Σ_b Σ_(oy, ox) dY[b, o, oy, ox] · x[b, c, ih, iw]` in f64.
    fn weight_grad_by_definition(x: &[f32], dy: &[f32], shape: ConvShape<'_>) -> Vec<f64> {
        let mut dw = vec![0f64; shape.out_channels * shape.depth()];
        for_each_term(shape, |yi, xi, wi| {
            dw[wi] += f64::from(x[xi]) * f64::from(dy[yi])
        });
        dw
    }

    fn geometries() -> Vec<(Im2col, usize, usize)> {
        let geo = |batch,
                   channels,
                   plane: [usize; 2],
                   kernel: [usize; 2],
                   stride,
                   padding,
                   dilation: [usize; 2]| {
            let out = [0, 1]
                .map(|d| (plane[d] + 2 * padding - dilation[d] * (kernel[d] - 1) - 1) / stride + 1);
            Im2col {
                batch,
                channels,
                plane,
                kernel,
                stride: [stride; 2],
                padding: [padding; 2],
                dilation,
                out,
            }
        };
        vec![
            // (geometry, groups, out channels): 3×3 padding 1; odd sizes; stride 2 with
            // dilation; 1×1; grouped and depthwise; more positions than one task takes.
            (geo(2, 5, [7, 6], [3, 3], 1, 1, [1, 1]), 1, 13),
            (geo(3, 4, [9, 11], [3, 2], 2, 1, [2, 1]), 2, 6),
            (geo(1, 7, [5, 5], [1, 1], 1, 0, [1, 1]), 1, 9),
            (geo(2, 6, [8, 8], [3, 3], 1, 1, [1, 1]), 6, 6),
            (geo(2, 3, [23, 19], [5, 3], 1, 2, [1, 2]), 1, 17),
            (geo(1, 2, [4, 4], [3, 3], 1, 2, [1, 1]), 1, 3),
            // A depth (360 taps) wider than one weight-gradient task's panels.
            (geo(2, 40, [5, 4], [3, 3], 1, 1, [1, 1]), 1, 7),
        ]
    }

    fn values(n: usize, seed: usize) -> Vec<f32> {
        // Multiples of 1/8 in [-2, 2]: every product and sum here is exact in f32.
        (0..n)
            .map(|i| ((i * 7 + seed * 13) % 33) as f32 / 8.0 - 2.0)
            .collect()
    }

    #[test]
    fn forward_and_weight_gradient_equal_their_definitions_on_every_isa() {
        for isa in Isa::available() {
            for (g, groups, oc) in geometries() {
                let shape = ConvShape {
                    geometry: &g,
                    groups,
                    out_channels: oc,
                };
                let x = values(g.batch * shape.image(), 1);
                let w = values(oc * shape.depth(), 2);
                let bias: Vec<f32> = (0..oc).map(|i| i as f32 * 0.25 - 1.0).collect();
                let want = conv_by_definition(&x, &w, shape);
                let y: Vec<f32> = conv2d(isa, &x, &w, Some(&bias), shape);
                let l = shape.positions();
                for (i, (got, want)) in y.iter().zip(&want).enumerate() {
                    let want = want + f64::from(bias[i / l % oc]);
                    assert_eq!(f64::from(*got), want, "{isa} {g:?} groups {groups} [{i}]");
                }
                let dy = values(y.len(), 3);
                let dw = conv2d_weight_grad(isa, &x, &dy, shape);
                let want = weight_grad_by_definition(&x, &dy, shape);
                for (i, (got, want)) in dw.iter().zip(&want).enumerate() {
                    assert_eq!(
                        f64::from(*got),
                        *want,
                        "{isa} {g:?} groups {groups} dW[{i}]"
                    );
                }
            }
        }
    }

    #[test]
    fn low_precision_inputs_accumulate_in_f32_and_round_once() {
        let (g, groups, oc) = geometries().remove(0);
        let shape = ConvShape {
            geometry: &g,
            groups,
            out_channels: oc,
        };
        let x = values(g.batch * shape.image(), 4);
        let w = values(oc * shape.depth(), 5);
        let want = conv_by_definition(&x, &w, shape);
        let xb: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
        let wb: Vec<bf16> = w.iter().map(|&v| bf16::from_f32(v)).collect();
        for isa in Isa::available() {
            let y: Vec<bf16> = conv2d(isa, &xb, &wb, None, shape);
            for (got, want) in y.iter().zip(&want) {
                assert_eq!(*got, bf16::from_f64(*want), "{isa}");
            }
            let yf: Vec<f32> = conv2d(isa, &xb, &wb, None, shape);
            assert_eq!(
                yf.iter().map(|&v| f64::from(v)).collect::<Vec<_>>(),
                want,
                "{isa}"
            );
        }
    }
}
