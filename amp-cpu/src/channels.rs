//! Batch normalisation's passes over a contiguous `[N, C, L]` tensor (`L`
//! the positions of each plane): the per-channel moments, the per-channel
//! affine map (the forward's output and the input's gradient), and the
//! per-channel sums of the backward. Sums accumulate in f64 over 16 fixed
//! lanes (`reduce::sum_f64`), each channel in a fixed order, so the results
//! do not depend on the ISA level or the thread count.

use crate::convert::F32Convert;
use crate::elementwise::PARALLEL_MIN;
use crate::isa::{multiversion, Isa};
use crate::reduce::{sum_f64, sum_sq_dev_f64};
use rayon::prelude::*;

/// A channel's values are kept in f32 between the two passes of
/// [`moments`] when they take at most this many bytes (else read twice).
const CACHED_CHANNEL_BYTES: usize = 1 << 20;

/// The shape `[N, C, L]` of the tensor a pass runs over.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Planes {
    /// Images.
    pub n: usize,
    /// Channels.
    pub c: usize,
    /// Positions per plane.
    pub l: usize,
}

impl Planes {
    /// Plane `(b, ch)` of `x`.
    fn plane<'a, T>(&self, x: &'a [T], b: usize, ch: usize) -> &'a [T] {
        &x[(b * self.c + ch) * self.l..][..self.l]
    }

    /// `f(ch)` for every channel, in parallel when the tensor is large.
    fn per_channel<R: Send>(&self, f: impl Fn(usize) -> R + Sync + Send) -> Vec<R> {
        if self.n * self.c * self.l >= PARALLEL_MIN && self.c > 1 {
            (0..self.c).into_par_iter().map(f).collect()
        } else {
            (0..self.c).map(f).collect()
        }
    }
}

/// Per-channel mean and biased variance of `x`, in f64: the mean, then the
/// mean of squared deviations from it (two passes, so a large mean with a
/// small variance keeps its variance).
pub(crate) fn moments<S: F32Convert>(isa: Isa, x: &[S], p: Planes) -> Vec<(f64, f64)> {
    let count = (p.n * p.l) as f64;
    p.per_channel(|ch| {
        let cached = p.n * p.l * 4 <= CACHED_CHANNEL_BYTES;
        let mut buf = vec![0f32; if cached { p.n * p.l } else { p.l }];
        let mut sum = 0f64;
        for b in 0..p.n {
            let dst = if cached {
                &mut buf[b * p.l..][..p.l]
            } else {
                &mut buf[..]
            };
            S::load(isa, p.plane(x, b, ch), dst);
            sum += sum_f64(isa, dst);
        }
        let mean = sum / count;
        let mut sq = 0f64;
        for b in 0..p.n {
            let src = if cached {
                &buf[b * p.l..][..p.l]
            } else {
                S::load(isa, p.plane(x, b, ch), &mut buf);
                &buf[..]
            };
            sq += sum_sq_dev_f64(isa, src, mean);
        }
        (mean, sq / count)
    })
}

/// Per-channel `(Σ g, Σ g·(x − mean))` over `x` and `g` (the output's
/// gradient), in f64.
pub(crate) fn grad_sums<S: F32Convert>(
    isa: Isa,
    x: &[S],
    g: &[S],
    mean: &[f32],
    p: Planes,
) -> Vec<(f64, f64)> {
    p.per_channel(|ch| {
        let (mut xs, mut gs) = (vec![0f32; p.l], vec![0f32; p.l]);
        let (mut sum, mut dot) = (0f64, 0f64);
        for b in 0..p.n {
            S::load(isa, p.plane(x, b, ch), &mut xs);
            S::load(isa, p.plane(g, b, ch), &mut gs);
            let (s, d) = sum_and_dot_dev(isa, &gs, &xs, mean[ch]);
            sum += s;
            dot += d;
        }
        (sum, dot)
    })
}

multiversion! {
    /// `(Σ g, Σ g·(x − mean))` in f64 over 16 fixed lanes.
    fn sum_and_dot_dev(isa: Isa, g: &[f32], x: &[f32], mean: f32) -> (f64, f64) {
        let (mut s, mut d) = ([0f64; 16], [0f64; 16]);
        let (gc, xc) = (g.chunks_exact(16), x.chunks_exact(16));
        let mut tail = (0f64, 0f64);
        for (&g, &x) in gc.remainder().iter().zip(xc.remainder()) {
            tail.0 += g as f64;
            tail.1 += g as f64 * (x - mean) as f64;
        }
        for (g, x) in gc.zip(xc) {
            for i in 0..16 {
                s[i] += g[i] as f64;
                d[i] += g[i] as f64 * (x[i] - mean) as f64;
            }
        }
        (s.iter().sum::<f64>() + tail.0, d.iter().sum::<f64>() + tail.1)
    }
}

/// The per-channel terms of [`affine`]: `out = (x − mean)·scale + shift`,
/// plus `g·grad_scale` when the gradient `g` is given.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChannelAffine<'a> {
    /// Subtracted from `x`.
    pub mean: &'a [f32],
    /// Multiplies `x − mean`.
    pub scale: &'a [f32],
    /// Added.
    pub shift: &'a [f32],
    /// Multiplies `g`.
    pub grad_scale: Option<&'a [f32]>,
}

/// `out = (x − mean[c])·scale[c] + shift[c] (+ g·grad_scale[c])` over every
/// plane, in f32, rounded once to `D`.
pub(crate) fn affine<S: F32Convert, D: F32Convert + Send>(
    isa: Isa,
    x: &[S],
    g: Option<&[S]>,
    terms: ChannelAffine<'_>,
    p: Planes,
    out: &mut [D],
) {
    let l = p.l.max(1);
    // Whole planes per task, at least AFFINE_TASK elements: a task per plane
    // (1024 elements in a ResNet) spent as long scheduling and allocating its
    // buffers as computing.
    let planes = AFFINE_TASK.div_ceil(l);
    let buffers = || (vec![0f32; l], vec![0f32; if g.is_some() { l } else { 0 }]);
    let body = |(xs, gv): &mut (Vec<f32>, Vec<f32>), (task, o): (usize, &mut [D])| {
        for (i, o) in o.chunks_mut(l).enumerate() {
            let plane = task * planes + i;
            let ch = plane % p.c;
            S::load(isa, &x[plane * p.l..][..p.l], xs);
            let (m, s, t) = (terms.mean[ch], terms.scale[ch], terms.shift[ch]);
            match (g, terms.grad_scale) {
                (Some(g), Some(gs)) => {
                    S::load(isa, &g[plane * p.l..][..p.l], gv);
                    affine_grad_plane(isa, xs, gv, m, s, t, gs[ch]);
                }
                _ => affine_plane(isa, xs, m, s, t),
            }
            D::store(isa, xs, o);
        }
    };
    if p.n * p.c * p.l >= PARALLEL_MIN {
        out.par_chunks_mut(l * planes)
            .enumerate()
            .for_each_init(buffers, body);
    } else {
        let mut b = buffers();
        out.chunks_mut(l * planes)
            .enumerate()
            .for_each(|t| body(&mut b, t));
    }
}

/// Elements per task of [`affine`] (rounded up to whole planes).
const AFFINE_TASK: usize = 16 * 1024;

multiversion! {
    /// `x = (x − m)·s + t`.
    fn affine_plane(isa: Isa, x: &mut [f32], m: f32, s: f32, t: f32) {
        for v in x.iter_mut() {
            *v = (*v - m) * s + t;
        }
    }
}

multiversion! {
    /// `x = (x − m)·s + t + g·gs`.
    fn affine_grad_plane(isa: Isa, x: &mut [f32], g: &[f32], m: f32, s: f32, t: f32, gs: f32) {
        for (v, &g) in x.iter_mut().zip(g) {
            *v = (*v - m) * s + t + g * gs;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amp_dtype::bf16;

    fn tensor(p: Planes, seed: usize) -> Vec<f32> {
        // A large mean and a small spread per channel: the case a one-pass
        // variance (E[x²] − E[x]²) in f32 gets wrong.
        (0..p.n * p.c * p.l)
            .map(|i| {
                let ch = i / p.l % p.c;
                1000.0 + ch as f32 + ((i * 7 + seed) % 13) as f32 / 64.0
            })
            .collect()
    }

    #[test]
    fn moments_sums_and_affine_match_f64_on_every_isa() {
        for p in [
            Planes { n: 3, c: 5, l: 37 },
            Planes { n: 2, c: 2, l: 1 },
            Planes { n: 4, c: 3, l: 700 },
            // Parallel, several planes per affine task, a partial last task.
            Planes {
                n: 3,
                c: 7,
                l: 5000,
            },
        ] {
            let x = tensor(p, 1);
            let g: Vec<f32> = tensor(p, 2).iter().map(|v| v - 1000.5).collect();
            let count = (p.n * p.l) as f64;
            let values = |v: &[f32], ch: usize| -> Vec<f64> {
                (0..p.n)
                    .flat_map(|b| p.plane(v, b, ch).iter().map(|&v| f64::from(v)))
                    .collect()
            };
            for isa in Isa::available() {
                let got = moments(isa, &x, p);
                let mean32: Vec<f32> = got.iter().map(|m| m.0 as f32).collect();
                let sums = grad_sums(isa, &x, &g, &mean32, p);
                for ch in 0..p.c {
                    let (xs, gs) = (values(&x, ch), values(&g, ch));
                    let mean = xs.iter().sum::<f64>() / count;
                    let var = xs.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / count;
                    assert!((got[ch].0 - mean).abs() <= 1e-12 * mean, "{isa} mean {ch}");
                    assert!(
                        (got[ch].1 - var).abs() <= 1e-9 * var.max(1e-6),
                        "{isa} var {ch}: {} vs {var}",
                        got[ch].1
                    );
                    let m = f64::from(mean32[ch]);
                    let sum: f64 = gs.iter().sum();
                    let dot: f64 = gs.iter().zip(&xs).map(|(g, x)| g * (x - m)).sum();
                    assert!(
                        (sums[ch].0 - sum).abs() <= 1e-9 * sum.abs().max(1.0),
                        "{isa} Σg {ch}"
                    );
                    assert!(
                        (sums[ch].1 - dot).abs() <= 1e-9 * dot.abs().max(1.0),
                        "{isa} Σg(x-m) {ch}"
                    );
                }
                // The affine map, with and without the gradient term, rounded once to bf16.
                let scale: Vec<f32> = (0..p.c).map(|c| 0.5 + c as f32).collect();
                let shift: Vec<f32> = (0..p.c).map(|c| c as f32 - 1.0).collect();
                let gsc: Vec<f32> = (0..p.c).map(|c| 0.25 * c as f32).collect();
                for with_grad in [false, true] {
                    let terms = ChannelAffine {
                        mean: &mean32,
                        scale: &scale,
                        shift: &shift,
                        grad_scale: with_grad.then_some(&gsc[..]),
                    };
                    let mut out = vec![bf16::from_f32(0.0); x.len()];
                    affine(isa, &x, with_grad.then_some(&g[..]), terms, p, &mut out);
                    for (i, o) in out.iter().enumerate() {
                        let ch = i / p.l % p.c;
                        let mut want = (x[i] - mean32[ch]) * scale[ch] + shift[ch];
                        if with_grad {
                            want += g[i] * gsc[ch];
                        }
                        assert_eq!(*o, bf16::from_f32(want), "{isa} [{i}] grad {with_grad}");
                    }
                }
            }
        }
    }
}
