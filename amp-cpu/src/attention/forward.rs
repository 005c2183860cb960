//! The forward pass: one task per (slice, query tile), an online softmax over
//! the key blocks.
//!
//! A tile's scores are computed transposed, `Sᵀ = K_block · Q_tileᵀ`
//! (`[keys][queries]`): every per-query quantity (running maximum, sum,
//! rescale factor) is then a vector along a row, so the softmax loops run
//! across queries with no horizontal reductions, and the weights of `MR`
//! queries at one key are `MR` adjacent values — the A panels of `P · V`
//! are packed by copying runs, not by transposing.

use super::{
    at, at_level, pack_columns, pack_rows, round_to, round_up, stored, Bias, Dims, Tiles, Unit,
};
use crate::convert::F32Convert;
use crate::gemm::PARALLEL_FLOPS;
use crate::isa::Isa;
use crate::math;
use rayon::prelude::*;

/// The inputs of one forward pass (contiguous `[N, ·, ·]` slices).
pub(crate) struct Inputs<'a, T> {
    pub q: &'a [T],
    pub k: &'a [T],
    pub v: &'a [T],
    pub bias: Option<Bias<'a>>,
    pub causal: bool,
    pub scale: f32,
}

/// What every tile of one slice reads.
struct Slice<'a, T, U: Unit> {
    unit: U,
    d: Dims,
    t: Tiles,
    n: usize,
    /// This slice's queries `[L][E]`.
    q: &'a [T],
    /// Keys as A panels of `mr` keys: `[S_pad / mr][stored(E)][mr]`.
    keys: &'a [U::Elem],
    /// Values as B panels of `nr` columns: `[Ev_pad / nr][S_pad][nr]`.
    values: &'a [U::Elem],
    /// Rows in each value panel (`S` rounded up to the block).
    s_pad: usize,
    bias: Option<Bias<'a>>,
    causal: bool,
    scale: f32,
}

/// Fills `out` (`[N, L, Ev]`) and `lse` (`[N, L]`).
pub(crate) fn run<T: F32Convert, U: Unit>(
    isa: Isa,
    unit: U,
    d: Dims,
    x: Inputs<'_, T>,
    out: &mut [T],
    lse: &mut [f32],
) {
    let t = Tiles::new(unit.kernel());
    let s_pad = round_up(d.s, t.block);
    let parallel = d.flops(x.causal) >= PARALLEL_FLOPS;
    let slice = |(n, (out, lse)): (usize, (&mut [T], &mut [f32]))| {
        let k = &x.k[n * d.s * d.e..(n + 1) * d.s * d.e];
        let v = &x.v[n * d.s * d.ev..(n + 1) * d.s * d.ev];
        let keys = pack_rows::<T, U>(isa, k, d.s, d.e, s_pad, t.mr);
        let values = pack_columns::<T, U>(isa, v, d.s, d.ev, s_pad, t.nr);
        let sl = Slice {
            unit,
            d,
            t,
            n,
            q: &x.q[n * d.l * d.e..(n + 1) * d.l * d.e],
            keys: &keys,
            values: &values,
            s_pad,
            bias: x.bias,
            causal: x.causal,
            scale: x.scale,
        };
        if parallel {
            out.par_chunks_mut(t.block * d.ev)
                .zip(lse.par_chunks_mut(t.block))
                .enumerate()
                .for_each(|(ti, (o, l))| tile(isa, &sl, ti, o, l));
        } else {
            out.chunks_mut(t.block * d.ev)
                .zip(lse.chunks_mut(t.block))
                .enumerate()
                .for_each(|(ti, (o, l))| tile(isa, &sl, ti, o, l));
        }
    };
    if parallel {
        out.par_chunks_mut(d.l * d.ev)
            .zip(lse.par_chunks_mut(d.l))
            .enumerate()
            .for_each(slice);
    } else {
        out.chunks_mut(d.l * d.ev)
            .zip(lse.chunks_mut(d.l))
            .enumerate()
            .for_each(slice);
    }
}

at_level! {
    /// One query tile: rows `ti·block ..` of the slice, written to `out`
    /// (`rows × Ev`) and `lse` (`rows`).
    fn tile<T: F32Convert, U: Unit>(
        isa: Isa,
        c: &Slice<'_, T, U>,
        ti: usize,
        out: &mut [T],
        lse: &mut [f32],
    ) {
        let Dims { s, e, ev, .. } = c.d;
        let Tiles { mr, nr, block: bl } = c.t;
        let (unit, causal) = (c.unit, c.causal);
        let e_st = stored::<U>(e);
        let ev_pad = round_up(ev, nr);
        let i0 = ti * bl;
        let rows = lse.len();
        // Queries as B panels of nr: [bl / nr][stored(E)][nr].
        let queries = pack_rows::<T, U>(isa, &c.q[i0 * e..(i0 + rows) * e], rows, e, bl, nr);
        // The queries the products compute (whole B panels) and those of whole A panels.
        let q_cols = round_up(rows, nr);
        let a_panels = rows.div_ceil(mr);
        let mut st = vec![0f32; bl * bl];
        let mut bias_t = if c.bias.is_some() { vec![0f32; bl * bl] } else { Vec::new() };
        let mut bias_row = vec![0f32; bl];
        let mut pa = vec![U::Elem::default(); stored::<U>(bl) * mr];
        let mut acc = vec![0f32; bl * ev_pad];
        let mut max = vec![f32::NEG_INFINITY; bl];
        let mut sum = vec![0f32; bl];
        let mut new_max = vec![0f32; bl];
        let mut shift = vec![0f32; bl];
        let mut alpha = vec![0f32; bl];
        let mut block_sum = vec![0f32; bl];
        let mut scratch: Vec<T> = Vec::new();
        let last_query = i0 + rows - 1;
        let key_end = if causal { s.min(last_query + 1) } else { s };
        for j0 in (0..key_end).step_by(bl) {
            let keys = bl.min(s - j0);
            // Sᵀ = K_block · Q_tileᵀ, micro-tiles above the diagonal skipped.
            for np in 0..q_cols / nr {
                let q_last = i0 + np * nr + nr - 1;
                for mp in 0..keys.div_ceil(mr) {
                    if causal && j0 + mp * mr > q_last {
                        break;
                    }
                    unit.run(
                        e,
                        &c.keys[(j0 + mp * mr) * e_st..],
                        &queries[np * nr * e_st..],
                        &mut st[mp * mr * bl + np * nr..],
                        bl,
                        true,
                    );
                }
            }
            if let Some(b) = &c.bias {
                for r in 0..rows {
                    b.row(c.n, i0 + r, j0, &mut bias_row[..keys]);
                    for (p, &x) in bias_row[..keys].iter().enumerate() {
                        bias_t[p * bl + r] = x;
                    }
                }
            }
            // Scale, mask, and the block's maximum per query.
            new_max[..q_cols].copy_from_slice(&max[..q_cols]);
            for p in 0..keys {
                let row = &mut st[p * bl..p * bl + q_cols];
                // Causal: key j0 + p is masked for the queries before it.
                let cut = if causal { (j0 + p).saturating_sub(i0).min(q_cols) } else { 0 };
                row[..cut].fill(f32::NEG_INFINITY);
                let (row, m) = (&mut row[cut..], &mut new_max[cut..q_cols]);
                if c.bias.is_some() {
                    let b = &bias_t[p * bl + cut..p * bl + q_cols];
                    for ((x, m), &b) in row.iter_mut().zip(m).zip(b) {
                        *x = *x * c.scale + b;
                        *m = m.max(*x);
                    }
                } else {
                    for (x, m) in row.iter_mut().zip(m) {
                        *x *= c.scale;
                        *m = m.max(*x);
                    }
                }
            }
            // A query with no key yet shifts by 0: its weights are exp(-inf) = 0.
            for (((sh, a), m), &nm) in shift[..q_cols]
                .iter_mut()
                .zip(&mut alpha[..q_cols])
                .zip(&mut max[..q_cols])
                .zip(&new_max[..q_cols])
            {
                *sh = if nm == f32::NEG_INFINITY { 0.0 } else { nm };
                *a = math::exp(*m - *sh);
                *m = nm;
            }
            block_sum[..q_cols].fill(0.0);
            for p in 0..keys {
                let row = &mut st[p * bl..p * bl + q_cols];
                let lanes = row.iter_mut().zip(&shift[..q_cols]).zip(&mut block_sum[..q_cols]);
                for ((x, &sh), bs) in lanes {
                    let w = math::exp(*x - sh);
                    *x = w;
                    *bs += w;
                }
            }
            let lanes = sum[..q_cols].iter_mut().zip(&alpha[..q_cols]).zip(&block_sum[..q_cols]);
            for ((l, &a), &bs) in lanes {
                *l = *l * a + bs;
            }
            for r in 0..rows {
                let a = alpha[r];
                if a != 1.0 {
                    for x in &mut acc[r * ev_pad..r * ev_pad + ev] {
                        *x *= a;
                    }
                }
            }
            // The weights rounded to the input dtype; a pair's missing half is 0.
            round_to::<T>(isa, &mut st[..keys * bl], &mut scratch);
            if stored::<U>(keys) > keys {
                st[keys * bl..(keys + 1) * bl].fill(0.0);
            }
            // acc += P · V_block, one A panel of mr queries at a time, its depth
            // cut at the last key its queries see.
            for mp in 0..a_panels {
                let q_last = i0 + mp * mr + mr - 1;
                let depth = if causal { keys.min((q_last + 1).saturating_sub(j0)) } else { keys };
                if depth == 0 {
                    continue;
                }
                let d_st = stored::<U>(depth);
                for p in 0..d_st {
                    let src = &st[p * bl + mp * mr..p * bl + mp * mr + mr];
                    for (rr, &x) in src.iter().enumerate() {
                        pa[at::<U>(mr, rr, p)] = U::elem(x);
                    }
                }
                for cp in 0..ev_pad / nr {
                    unit.run(
                        depth,
                        &pa,
                        &c.values[cp * c.s_pad * nr + j0 * nr..],
                        &mut acc[mp * mr * ev_pad + cp * nr..],
                        ev_pad,
                        false,
                    );
                }
            }
        }
        // Normalise and store; a query with every key masked gives 0 and -inf.
        let mut row = vec![0f32; ev];
        for r in 0..rows {
            let (m, l) = (max[r], sum[r]);
            if m == f32::NEG_INFINITY || l == 0.0 {
                row.fill(0.0);
                lse[r] = f32::NEG_INFINITY;
            } else {
                for (o, &a) in row.iter_mut().zip(&acc[r * ev_pad..r * ev_pad + ev]) {
                    *o = a / l;
                }
                lse[r] = m + l.ln();
            }
            T::store(isa, &row, &mut out[r * ev..(r + 1) * ev]);
        }
    }
}
