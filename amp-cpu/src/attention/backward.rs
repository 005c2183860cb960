//! The backward pass (FlashAttention-2's): one task per (slice, group of key
//! blocks). For each key block the task visits every query tile that can see
//! it, recomputes the weights from the saved log-sum-exp, and accumulates
//!
//! ```text
//! dV_j += Pᵀ · dO      dK_j += dSᵀ · Q · scale      dQ += dS · K_j · scale
//! P = exp(S − lse),    dP = dO · Vᵀ,    dS = P ∘ (dP − D),    D = rowsum(dO ∘ O)
//! ```
//!
//! in f32: `dK` and `dV` of the block in two tiles, `dQ` in a buffer of the
//! task. Scores are `[queries][keys]` here, so both `Pᵀ · dO` and `dSᵀ · Q`
//! take their A panels (`MR` keys at one query) as runs of a row; only
//! `dS · K` transposes its panel.

use super::{
    at, at_level, pack_columns, pack_rows, round_to, round_up, stored, Bias, Dims, Tiles, Unit,
};
use crate::convert::F32Convert;
use crate::gemm::PARALLEL_FLOPS;
use crate::isa::Isa;
use crate::math;
use rayon::prelude::*;

/// The inputs of one backward pass (contiguous `[N, ·, ·]` slices).
pub(crate) struct Inputs<'a, T> {
    pub q: &'a [T],
    pub k: &'a [T],
    pub v: &'a [T],
    pub out: &'a [T],
    pub grad_out: &'a [T],
    pub lse: &'a [f32],
    pub bias: Option<Bias<'a>>,
    pub causal: bool,
    pub scale: f32,
}

/// The gradients to fill (`[N, L, E]`, `[N, S, E]`, `[N, S, Ev]`).
pub(crate) struct Grads<'a, T> {
    pub dq: &'a mut [T],
    pub dk: &'a mut [T],
    pub dv: &'a mut [T],
}

/// What every task of one slice reads: the slice's operands packed for each
/// product they enter (A panels of `mr` lines, B panels of `nr`).
struct Slice<'a, U: Unit> {
    unit: U,
    d: Dims,
    t: Tiles,
    n: usize,
    /// `L` and `S` rounded up to the block.
    l_pad: usize,
    s_pad: usize,
    /// Queries as A panels over queries `[L_pad / mr][stored(E)][mr]` (for `Q · Kᵀ`).
    q_lines: &'a [U::Elem],
    /// Queries as B panels over `E` `[E_pad / nr][L_pad][nr]` (for `dSᵀ · Q`).
    q_columns: &'a [U::Elem],
    /// Keys as B panels over keys `[S_pad / nr][stored(E)][nr]` (for `Q · Kᵀ`).
    k_lines: &'a [U::Elem],
    /// Keys as B panels over `E` `[E_pad / nr][S_pad][nr]` (for `dS · K`).
    k_columns: &'a [U::Elem],
    /// Values as B panels over keys `[S_pad / nr][stored(Ev)][nr]` (for `dO · Vᵀ`).
    v_lines: &'a [U::Elem],
    /// dO as A panels over queries `[L_pad / mr][stored(Ev)][mr]` (for `dO · Vᵀ`).
    g_lines: &'a [U::Elem],
    /// dO as B panels over `Ev` `[Ev_pad / nr][L_pad][nr]` (for `Pᵀ · dO`).
    g_columns: &'a [U::Elem],
    /// This slice's log-sum-exp and `D = rowsum(dO ∘ O)`, `[L]`.
    lse: &'a [f32],
    dot: &'a [f32],
    bias: Option<Bias<'a>>,
    causal: bool,
    scale: f32,
}

/// What one task computed: its share of `dQ` (f32, `[L_pad][E_pad]`) and the
/// finished `dK`, `dV` rows of its key blocks.
#[derive(Default)]
struct Part<T> {
    dq: Vec<f32>,
    blocks: Vec<(usize, Vec<T>, Vec<T>)>,
}

/// One slice's index and its `dq`, `dk`, `dv` rows.
type SliceGrads<'a, T> = (usize, ((&'a mut [T], &'a mut [T]), &'a mut [T]));

/// Fills `g` with the gradients of the attention of `x`.
pub(crate) fn run<T: F32Convert, U: Unit>(
    isa: Isa,
    unit: U,
    d: Dims,
    x: Inputs<'_, T>,
    g: Grads<'_, T>,
) {
    let t = Tiles::new(unit.kernel());
    let (mr, nr, bl) = (t.mr, t.nr, t.block);
    let (l_pad, s_pad) = (round_up(d.l, bl), round_up(d.s, bl));
    let key_blocks = d.s.div_ceil(bl);
    // Five products to the forward pass's two.
    let parallel = d.flops(x.causal) / 2 * 5 >= PARALLEL_FLOPS;
    // Enough tasks to occupy the pool when the slices are few; each group's dQ
    // share is summed in group order, so the result depends on the pool size
    // only through that order.
    let groups = if parallel {
        (2 * rayon::current_num_threads())
            .div_ceil(d.n)
            .clamp(1, key_blocks)
    } else {
        1
    };
    let e_pad = round_up(d.e, nr);
    let slice = |(n, ((dq, dk), dv)): SliceGrads<'_, T>| {
        let (l, s, e, ev) = (d.l, d.s, d.e, d.ev);
        let q = &x.q[n * l * e..(n + 1) * l * e];
        let k = &x.k[n * s * e..(n + 1) * s * e];
        let v = &x.v[n * s * ev..(n + 1) * s * ev];
        let o = &x.out[n * l * ev..(n + 1) * l * ev];
        let go = &x.grad_out[n * l * ev..(n + 1) * l * ev];
        let q_lines = pack_rows::<T, U>(isa, q, l, e, l_pad, mr);
        let q_columns = pack_columns::<T, U>(isa, q, l, e, l_pad, nr);
        let k_lines = pack_rows::<T, U>(isa, k, s, e, s_pad, nr);
        let k_columns = pack_columns::<T, U>(isa, k, s, e, s_pad, nr);
        let v_lines = pack_rows::<T, U>(isa, v, s, ev, s_pad, nr);
        let g_lines = pack_rows::<T, U>(isa, go, l, ev, l_pad, mr);
        let g_columns = pack_columns::<T, U>(isa, go, l, ev, l_pad, nr);
        let dot = row_dots(isa, o, go, ev);
        let sl = Slice {
            unit,
            d,
            t,
            n,
            l_pad,
            s_pad,
            q_lines: &q_lines,
            q_columns: &q_columns,
            k_lines: &k_lines,
            k_columns: &k_columns,
            v_lines: &v_lines,
            g_lines: &g_lines,
            g_columns: &g_columns,
            lse: &x.lse[n * l..(n + 1) * l],
            dot: &dot,
            bias: x.bias,
            causal: x.causal,
            scale: x.scale,
        };
        let mut parts: Vec<Part<T>> = (0..groups).map(|_| Part::default()).collect();
        if groups > 1 {
            parts
                .par_iter_mut()
                .enumerate()
                .for_each(|(gi, part)| group(isa, &sl, gi, groups, part));
        } else {
            group(isa, &sl, 0, 1, &mut parts[0]);
        }
        let (first, rest) = parts.split_first_mut().expect("one group at least");
        for part in rest.iter() {
            for (a, b) in first.dq.iter_mut().zip(&part.dq) {
                *a += b;
            }
        }
        for (i, row) in dq.chunks_mut(e).enumerate() {
            T::store(isa, &first.dq[i * e_pad..i * e_pad + e], row);
        }
        for part in &parts {
            for (kb, dk_rows, dv_rows) in &part.blocks {
                let j0 = kb * bl;
                dk[j0 * e..j0 * e + dk_rows.len()].copy_from_slice(dk_rows);
                dv[j0 * ev..j0 * ev + dv_rows.len()].copy_from_slice(dv_rows);
            }
        }
    };
    let Grads { dq, dk, dv } = g;
    if parallel {
        dq.par_chunks_mut(d.l * d.e)
            .zip(dk.par_chunks_mut(d.s * d.e))
            .zip(dv.par_chunks_mut(d.s * d.ev))
            .enumerate()
            .for_each(slice);
    } else {
        dq.chunks_mut(d.l * d.e)
            .zip(dk.chunks_mut(d.s * d.e))
            .zip(dv.chunks_mut(d.s * d.ev))
            .enumerate()
            .for_each(slice);
    }
}

/// `D[i] = Σ_c o[i][c] · g[i][c]` in f32 over rows of `ev`.
fn row_dots<T: F32Convert>(isa: Isa, o: &[T], g: &[T], ev: usize) -> Vec<f32> {
    let (mut a, mut b) = (vec![0f32; ev], vec![0f32; ev]);
    o.chunks(ev)
        .zip(g.chunks(ev))
        .map(|(o, g)| {
            T::load(isa, o, &mut a);
            T::load(isa, g, &mut b);
            a.iter().zip(&b).map(|(x, y)| x * y).sum()
        })
        .collect()
}

at_level! {
    /// The key blocks `gi, gi + groups, …` of one slice, into `part`.
    fn group<T: F32Convert, U: Unit>(
        isa: Isa,
        c: &Slice<'_, U>,
        gi: usize,
        groups: usize,
        part: &mut Part<T>,
    ) {
        let Dims { l, s, e, ev, .. } = c.d;
        let Tiles { mr, nr, block: bl } = c.t;
        let (unit, causal, scale) = (c.unit, c.causal, c.scale);
        let (e_st, ev_st) = (stored::<U>(e), stored::<U>(ev));
        let (e_pad, ev_pad) = (round_up(e, nr), round_up(ev, nr));
        let panel = stored::<U>(bl) * mr;
        part.dq = vec![0f32; c.l_pad * e_pad];
        let mut sc = vec![0f32; bl * bl];
        let mut dp = vec![0f32; bl * bl];
        let mut p_t = vec![U::Elem::default(); bl / mr * panel];
        let mut ds_t = vec![U::Elem::default(); bl / mr * panel];
        let mut ds = vec![U::Elem::default(); panel];
        let mut dv_acc = vec![0f32; bl * ev_pad];
        let mut dk_acc = vec![0f32; bl * e_pad];
        let mut bias_row = vec![0f32; bl];
        let mut scratch: Vec<T> = Vec::new();
        for kb in (gi..s.div_ceil(bl)).step_by(groups) {
            let j0 = kb * bl;
            let keys = bl.min(s - j0);
            let k_cols = round_up(keys, nr);
            let k_panels = keys.div_ceil(mr);
            dv_acc.fill(0.0);
            dk_acc.fill(0.0);
            // Causal: the queries before j0 see none of these keys.
            let first_tile = if causal { j0 / bl } else { 0 };
            for ti in first_tile..l.div_ceil(bl) {
                let i0 = ti * bl;
                let rows = bl.min(l - i0);
                let q_panels = rows.div_ceil(mr);
                // S = Q · Kᵀ and dP = dO · Vᵀ, micro-tiles above the diagonal skipped.
                for mp in 0..q_panels {
                    let q_last = i0 + mp * mr + mr - 1;
                    for np in 0..k_cols / nr {
                        if causal && j0 + np * nr > q_last {
                            break;
                        }
                        let at_c = mp * mr * bl + np * nr;
                        unit.run(
                            e,
                            &c.q_lines[(i0 + mp * mr) * e_st..],
                            &c.k_lines[(j0 + np * nr) * e_st..],
                            &mut sc[at_c..],
                            bl,
                            true,
                        );
                        unit.run(
                            ev,
                            &c.g_lines[(i0 + mp * mr) * ev_st..],
                            &c.v_lines[(j0 + np * nr) * ev_st..],
                            &mut dp[at_c..],
                            bl,
                            true,
                        );
                    }
                }
                // P = exp(S·scale + bias − lse) and dS·scale = P ∘ (dP − D)·scale,
                // 0 where masked, for a fully masked query, and past the keys.
                for r in 0..rows {
                    let i = i0 + r;
                    let (lse, dot) = (c.lse[i], c.dot[i]);
                    let mut seen = if causal { keys.min((i + 1).saturating_sub(j0)) } else { keys };
                    if lse == f32::NEG_INFINITY {
                        seen = 0;
                    }
                    let s_row = &mut sc[r * bl..(r + 1) * bl];
                    let d_row = &mut dp[r * bl..(r + 1) * bl];
                    if let Some(b) = &c.bias {
                        b.row(c.n, i, j0, &mut bias_row[..seen]);
                        let terms = s_row[..seen]
                            .iter_mut()
                            .zip(&mut d_row[..seen])
                            .zip(&bias_row[..seen]);
                        for ((x, dpx), &b) in terms {
                            let w = math::exp(*x * scale + b - lse);
                            *x = w;
                            *dpx = w * (*dpx - dot) * scale;
                        }
                    } else {
                        for (x, dpx) in s_row[..seen].iter_mut().zip(&mut d_row[..seen]) {
                            let w = math::exp(*x * scale - lse);
                            *x = w;
                            *dpx = w * (*dpx - dot) * scale;
                        }
                    }
                    s_row[seen..].fill(0.0);
                    d_row[seen..].fill(0.0);
                }
                // Rows past the queries read by whole panels or pairs are 0.
                let used = round_up(rows, mr).max(stored::<U>(rows));
                sc[rows * bl..used * bl].fill(0.0);
                dp[rows * bl..used * bl].fill(0.0);
                round_to::<T>(isa, &mut sc[..used * bl], &mut scratch);
                round_to::<T>(isa, &mut dp[..used * bl], &mut scratch);
                // Pᵀ and dSᵀ as A panels of mr keys, the depth along the queries.
                let depth = stored::<U>(rows);
                for kp in 0..k_panels {
                    let (pt, dt) = (&mut p_t[kp * panel..], &mut ds_t[kp * panel..]);
                    for p in 0..depth {
                        let at_row = p * bl + kp * mr;
                        for rr in 0..mr {
                            let to = at::<U>(mr, rr, p);
                            pt[to] = U::elem(sc[at_row + rr]);
                            dt[to] = U::elem(dp[at_row + rr]);
                        }
                    }
                }
                // dV += Pᵀ · dO, dK += dSᵀ · Q.
                for kp in 0..k_panels {
                    for cp in 0..ev_pad / nr {
                        unit.run(
                            rows,
                            &p_t[kp * panel..],
                            &c.g_columns[cp * c.l_pad * nr + i0 * nr..],
                            &mut dv_acc[kp * mr * ev_pad + cp * nr..],
                            ev_pad,
                            false,
                        );
                    }
                    for cp in 0..e_pad / nr {
                        unit.run(
                            rows,
                            &ds_t[kp * panel..],
                            &c.q_columns[cp * c.l_pad * nr + i0 * nr..],
                            &mut dk_acc[kp * mr * e_pad + cp * nr..],
                            e_pad,
                            false,
                        );
                    }
                }
                // dQ += dS · K_block, one A panel of mr queries at a time, its
                // depth cut at the last key its queries see.
                for mp in 0..q_panels {
                    let q_last = i0 + mp * mr + mr - 1;
                    let depth = if causal {
                        keys.min((q_last + 1).saturating_sub(j0))
                    } else {
                        keys
                    };
                    if depth == 0 {
                        continue;
                    }
                    let d_st = stored::<U>(depth);
                    for rr in 0..mr {
                        let src = &dp[(mp * mr + rr) * bl..(mp * mr + rr) * bl + d_st];
                        for (p, &x) in src.iter().enumerate() {
                            ds[at::<U>(mr, rr, p)] = U::elem(x);
                        }
                    }
                    for cp in 0..e_pad / nr {
                        unit.run(
                            depth,
                            &ds,
                            &c.k_columns[cp * c.s_pad * nr + j0 * nr..],
                            &mut part.dq[(i0 + mp * mr) * e_pad + cp * nr..],
                            e_pad,
                            false,
                        );
                    }
                }
            }
            let mut dk_rows = vec![T::default(); keys * e];
            let mut dv_rows = vec![T::default(); keys * ev];
            for j in 0..keys {
                let (dk_acc, dv_acc) = (&dk_acc[j * e_pad..], &dv_acc[j * ev_pad..]);
                T::store(isa, &dk_acc[..e], &mut dk_rows[j * e..(j + 1) * e]);
                T::store(isa, &dv_acc[..ev], &mut dv_rows[j * ev..(j + 1) * ev]);
            }
            part.blocks.push((kb, dk_rows, dv_rows));
        }
    }
}
