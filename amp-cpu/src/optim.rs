//! The fused AdamW update: one pass that reads the parameter, its gradient and
//! both moments once and writes the parameter and moments once, in f32, with
//! the arithmetic of `torch.optim.AdamW` (each step rounded to f32 as PyTorch's
//! single-tensor path rounds it).

use crate::convert::F32Convert;
use crate::elementwise::{CHUNK, PARALLEL_MIN};
use crate::isa::{multiversion, Isa};
use amp_tensor::backend::{AdamWCoefficients as Coeffs, AdamWStep};
use rayon::prelude::*;

multiversion! {
    /// The update over f32 slices of one length.
    fn update(isa: Isa, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], c: Coeffs) {
        let n = p.len();
        let (g, m, v) = (&g[..n], &mut m[..n], &mut v[..n]);
        for i in 0..n {
            let gi = g[i];
            let mi = m[i] + (gi - m[i]) * c.one_minus_beta1;
            let vi = v[i] * c.beta2 + gi * gi * c.one_minus_beta2;
            let denom = vi.sqrt() / c.bias_correction2_sqrt + c.eps;
            p[i] = p[i] * c.decay - c.step_size * (mi / denom);
            m[i] = mi;
            v[i] = vi;
        }
    }
}

/// One serial run over a range: parameters and gradients of any float
/// dtype go through f32 chunk buffers; f32 ones are used in place.
fn run<P: F32Convert, G: F32Convert>(
    isa: Isa,
    p: &mut [P],
    g: &[G],
    m: &mut [f32],
    v: &mut [f32],
    c: Coeffs,
) {
    let (mut pbuf, mut gbuf) = ([0f32; CHUNK], [0f32; CHUNK]);
    for (start, ((p, m), v)) in p
        .chunks_mut(CHUNK)
        .zip(m.chunks_mut(CHUNK))
        .zip(v.chunks_mut(CHUNK))
        .enumerate()
        .map(|(i, x)| (i * CHUNK, x))
    {
        let len = p.len();
        let g = &g[start..start + len];
        let g32: &[f32] = match G::as_f32(g) {
            Some(g) => g,
            None => {
                G::load(isa, g, &mut gbuf[..len]);
                &gbuf[..len]
            }
        };
        match P::as_f32_mut(p) {
            Some(p32) => update(isa, p32, g32, m, v, c),
            None => {
                let pb = &mut pbuf[..len];
                P::load(isa, p, pb);
                update(isa, pb, g32, m, v, c);
                P::store(isa, pb, p);
            }
        }
    }
}

/// The fused update over whole contiguous buffers of one length, in parallel
/// for large ones.
pub(crate) fn adamw<P: F32Convert, G: F32Convert>(
    isa: Isa,
    p: &mut [P],
    g: &[G],
    m: &mut [f32],
    v: &mut [f32],
    hyper: &AdamWStep,
) {
    let c = hyper.coefficients();
    const TASK: usize = 1 << 15;
    if p.len() < PARALLEL_MIN {
        return run(isa, p, g, m, v, c);
    }
    p.par_chunks_mut(TASK)
        .zip(m.par_chunks_mut(TASK))
        .zip(v.par_chunks_mut(TASK))
        .enumerate()
        .for_each(|(i, ((p, m), v))| {
            let start = i * TASK;
            run(isa, p, &g[start..start + p.len()], m, v, c)
        });
}
