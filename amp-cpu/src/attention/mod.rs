//! Fused attention (flash-attention style): [`Backend::attention`] and
//! [`Backend::attention_backward`] for f32, bf16 and f16 on the CPU.
//!
//! The `L × S` score matrix is never stored whole. Each slice `n` (batch ·
//! head) is cut into square blocks of [`Tiles::block`] queries and keys
//! (96 at the AVX2 and AVX-512 levels, 64 portable). The forward pass
//! ([`forward`]) runs one task per (slice, query tile): for each key block it
//! computes the block's scores, updates an online softmax (f32 running maximum
//! and sum per query, the accumulator rescaled when the maximum grows), rounds
//! the unnormalised weights to the input dtype and adds their product with
//! the value block into an f32 accumulator; the end divides by the sum and
//! stores the natural log-sum-exp. The backward pass ([`backward`], FlashAttention-2's)
//! runs one task per (slice, group of key blocks): the weights are recomputed
//! from the saved log-sum-exp, `D = rowsum(dO ∘ O)`, `dS = P ∘ (dP − D)`;
//! `dK` and `dV` of a key block accumulate in f32 tiles over every query
//! tile, `dQ` in an f32 buffer per task, summed in a fixed order at the end.
//! Memory is linear in the sequence lengths: packed copies of the inputs and
//! a few block-sized scratch tiles per task. Causal problems skip the key
//! blocks (and the micro-tiles of the diagonal blocks) above the diagonal.
//!
//! The products run on the GEMM's micro-kernels ([`Kernel`]) over panels
//! packed here: f32 panels (AVX-512 FMA 12 × 32, AVX2 6 × 16, portable 4 × 16;
//! bf16 and f16 widened exactly while packing) and, for bf16 at
//! [`Isa::Avx512Bf16`] and above, bf16 pair-interleaved panels for
//! `vdpbf16ps` (AMX falls back to it: its tiles want deeper products than a
//! head dimension). The softmax, masking and packing loops are compiled for
//! each SIMD level ([`at_level`]) and vectorised by the compiler.
//!
//! Numerics: scores, softmax and every accumulation in f32; the weights `P`
//! (and, in the backward pass, `dS`) are rounded to the input dtype before
//! they enter a product, as the composed op and PyTorch's fused CPU kernel
//! do; outputs are rounded once. A query whose keys are all masked gets a
//! zero output, a log-sum-exp of `-inf` and no gradient.
//!
//! [`Backend::attention`]: amp_tensor::backend::Backend::attention
//! [`Backend::attention_backward`]: amp_tensor::backend::Backend::attention_backward

mod backward;
mod forward;

use crate::convert::F32Convert;
use crate::elementwise::dense;
use crate::gemm::packing::{self, Lines};
use crate::gemm::Kernel;
use crate::isa::Isa;
use amp_dtype::{bf16, f16, DType};
use amp_tensor::backend::{AttentionProblem, HostElement, HostStorage, Storage, View};
use amp_tensor::{Error, Result};
use std::borrow::Cow;

const OP: &str = "scaled_dot_product_attention";

/// The sizes of one problem: `n` slices of `l` queries and `s` keys, head
/// dimensions `e` (queries and keys) and `ev` (values).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dims {
    pub n: usize,
    pub l: usize,
    pub s: usize,
    pub e: usize,
    pub ev: usize,
}

impl Dims {
    /// Multiply-adds of the two forward products (halved when causal).
    fn flops(&self, causal: bool) -> usize {
        let f = 2 * self.n * self.l * self.s * (self.e + self.ev);
        if causal {
            f / 2
        } else {
            f
        }
    }
}

/// The additive f32 bias: element `(n, i, j)` at `offset + n·sn + i·si + j·sj`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bias<'a> {
    data: &'a [f32],
    offset: usize,
    strides: [usize; 3],
}

impl Bias<'_> {
    /// `out[p] = bias(n, i, j0 + p)`.
    #[inline(always)]
    pub fn row(&self, n: usize, i: usize, j0: usize, out: &mut [f32]) {
        let [sn, si, sj] = self.strides;
        let base = self.offset + n * sn + i * si + j0 * sj;
        if sj == 1 {
            out.copy_from_slice(&self.data[base..base + out.len()]);
        } else {
            for (p, o) in out.iter_mut().enumerate() {
                *o = self.data[base + p * sj];
            }
        }
    }
}

/// How the products' operands are packed and multiplied: f32 panels for the
/// FMA kernels, bf16 pair-interleaved panels for `vdpbf16ps`.
pub(crate) trait Unit: Copy + Send + Sync {
    /// The packed element.
    type Elem: Copy + Default + Send + Sync;
    /// Depth steps stored together (1 for f32 panels, 2 for bf16 pairs).
    const STEP: usize;
    /// The micro-kernel.
    fn kernel(self) -> Kernel;
    /// The packed form of `x`, a value exactly representable in the input dtype.
    fn elem(x: f32) -> Self::Elem;
    /// `src`'s lines packed into panels of `width` lines, `stored` depth
    /// steps each (a multiple of `STEP`, at least `src.depth`), with the
    /// GEMM's packers (SIMD transposes and interleaves): panel `q` from
    /// `out[q·width·stored]`. Depth past `src.depth` and lines past
    /// `src.count` are left as `out` holds them.
    fn pack<T: F32Convert>(
        isa: Isa,
        src: Lines<'_, T>,
        width: usize,
        stored: usize,
        out: &mut [Self::Elem],
    );
    /// `c[r·ldc + j] (+)= Σ_{p < kc} a(r, p) · b(p, j)` for one `MR × NR` tile.
    fn run(
        self,
        kc: usize,
        a: &[Self::Elem],
        b: &[Self::Elem],
        c: &mut [f32],
        ldc: usize,
        overwrite: bool,
    );
}

/// f32 panels `[depth][width]` (f32 inputs, and bf16/f16 widened exactly).
#[derive(Debug, Clone, Copy)]
pub(crate) struct F32Panels(Kernel);

impl Unit for F32Panels {
    type Elem = f32;
    const STEP: usize = 1;
    #[inline(always)]
    fn kernel(self) -> Kernel {
        self.0
    }
    #[inline(always)]
    fn elem(x: f32) -> f32 {
        x
    }
    fn pack<T: F32Convert>(
        isa: Isa,
        src: Lines<'_, T>,
        width: usize,
        stored: usize,
        out: &mut [f32],
    ) {
        // The GEMM's panels are exactly `depth` long: one call per panel.
        for q in 0..src.count.div_ceil(width) {
            let panel = Lines {
                base: src.base + q * width * src.x_stride,
                count: width.min(src.count - q * width),
                ..src
            };
            packing::pack(isa, panel, width, &mut out[q * width * stored..]);
        }
    }
    #[inline(always)]
    fn run(self, kc: usize, a: &[f32], b: &[f32], c: &mut [f32], ldc: usize, overwrite: bool) {
        self.0.run(kc, self.0.mr(), a, b, c, ldc, overwrite)
    }
}

/// bf16 panels `[depth / 2][width][2]` for `vdpbf16ps` (bf16 inputs only).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PairPanels(Kernel);

impl Unit for PairPanels {
    type Elem = u16;
    const STEP: usize = 2;
    #[inline(always)]
    fn kernel(self) -> Kernel {
        self.0
    }
    #[inline(always)]
    fn elem(x: f32) -> u16 {
        // x is a bf16 value: its f32 bits end in 16 zeros.
        (x.to_bits() >> 16) as u16
    }
    fn pack<T: F32Convert>(
        _isa: Isa,
        src: Lines<'_, T>,
        width: usize,
        stored: usize,
        out: &mut [u16],
    ) {
        match T::as_bf16(src.data) {
            Some(data) => {
                let src = Lines {
                    data,
                    base: src.base,
                    x_stride: src.x_stride,
                    p_stride: src.p_stride,
                    count: src.count,
                    depth: src.depth,
                };
                packing::pack_pairs(src, width, stored, out)
            }
            None => {
                // Pair panels are chosen for bf16 inputs only; any other input
                // would be taken value by value (exact: its values are bf16's).
                let mut line = vec![0f32; src.depth];
                for r in 0..src.count {
                    for (p, v) in line.iter_mut().enumerate() {
                        *v = src.data[src.base + r * src.x_stride + p * src.p_stride].to_f32();
                    }
                    let panel = &mut out[(r / width) * width * stored..];
                    for (p, &x) in line.iter().enumerate() {
                        panel[at::<Self>(width, r % width, p)] = Self::elem(x);
                    }
                }
            }
        }
    }
    #[inline(always)]
    fn run(self, kc: usize, a: &[u16], b: &[u16], c: &mut [f32], ldc: usize, overwrite: bool) {
        self.0
            .run_bf16(kc.div_ceil(2), self.0.mr(), a, b, c, ldc, overwrite)
    }
}

/// `d` rounded up to whole depth steps of `U`.
#[inline(always)]
pub(crate) fn stored<U: Unit>(d: usize) -> usize {
    d.div_ceil(U::STEP) * U::STEP
}

/// Index of line `r`, depth `p` in a panel of `width` lines.
#[inline(always)]
pub(crate) fn at<U: Unit>(width: usize, r: usize, p: usize) -> usize {
    if U::STEP == 1 {
        p * width + r
    } else {
        (p / 2) * width * 2 + r * 2 + (p & 1)
    }
}

/// `x` rounded up to a multiple of `m`.
#[inline(always)]
pub(crate) fn round_up(x: usize, m: usize) -> usize {
    x.div_ceil(m) * m
}

/// The blocking of one kernel: micro-tile `mr × nr`, and `block` queries
/// (keys) per tile — a multiple of both, so that every tile is made of whole
/// micro-tiles whichever side the queries are on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tiles {
    pub mr: usize,
    pub nr: usize,
    pub block: usize,
}

impl Tiles {
    pub fn new(kernel: Kernel) -> Tiles {
        let (mr, nr) = (kernel.mr(), kernel.nr());
        let (mut a, mut b) = (mr, nr);
        while b != 0 {
            (a, b) = (b, a % b);
        }
        let mut block = mr / a * nr;
        while block < 64 {
            block *= 2;
        }
        Tiles { mr, nr, block }
    }
}

/// Panels of `width` lines over the rows of `src` (`rows × cols`, row-major):
/// line `r` is row `r`, the depth runs along it. `lines` (a multiple of
/// `width`, at least `rows`) lines are stored, zero-padded:
/// `[lines / width][stored(cols)][width]`.
pub(crate) fn pack_rows<T: F32Convert, U: Unit>(
    isa: Isa,
    src: &[T],
    rows: usize,
    cols: usize,
    lines: usize,
    width: usize,
) -> Vec<U::Elem> {
    let depth = stored::<U>(cols);
    let mut out = vec![U::Elem::default(); lines / width * depth * width];
    let src = Lines {
        data: src,
        base: 0,
        x_stride: cols,
        p_stride: 1,
        count: rows,
        depth: cols,
    };
    U::pack(isa, src, width, depth, &mut out);
    out
}

/// Panels of `width` lines over the columns of `src` (`rows × cols`,
/// row-major): line `c` is column `c`, the depth runs down it. `depth` (at
/// least `rows`, a multiple of the step) rows are stored, zero-padded:
/// `[cols.div_ceil(width)][depth][width]`.
pub(crate) fn pack_columns<T: F32Convert, U: Unit>(
    isa: Isa,
    src: &[T],
    rows: usize,
    cols: usize,
    depth: usize,
    width: usize,
) -> Vec<U::Elem> {
    let stored = stored::<U>(depth);
    let mut out = vec![U::Elem::default(); cols.div_ceil(width) * stored * width];
    let src = Lines {
        data: src,
        base: 0,
        x_stride: 1,
        p_stride: cols,
        count: cols,
        depth: rows,
    };
    U::pack(isa, src, width, stored, &mut out);
    out
}

/// Rounds `x` to `T`'s precision in place (nearest even; nothing for f32).
#[inline(always)]
pub(crate) fn round_to<T: F32Convert>(isa: Isa, x: &mut [f32], scratch: &mut Vec<T>) {
    if T::DTYPE == DType::F32 {
        return;
    }
    scratch.resize(x.len(), T::default());
    T::store(isa, x, scratch);
    T::load(isa, scratch, x);
}

/// Defines `fn $name<T, U>(isa: Isa, args...)` from one body generic over the
/// element and panel types, compiled for AVX-512, for AVX2 + FMA + F16C and
/// plain, and dispatched on `isa` — what `multiversion!` does for
/// non-generic bodies. The body's loops are vectorised for each level.
macro_rules! at_level {
    (
        $(#[$meta:meta])*
        $vis:vis fn $name:ident<$($g:ident: $b:path),*>(
            $isa:ident: Isa $(, $arg:ident: $ty:ty)* $(,)?
        ) $body:block
    ) => {
        $(#[$meta])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name<$($g: $b),*>($isa: Isa $(, $arg: $ty)*) {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn body<$($g: $b),*>($isa: Isa $(, $arg: $ty)*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx512<$($g: $b),*>($isa: Isa $(, $arg: $ty)*) {
                    body($isa $(, $arg)*)
                }
                #[target_feature(enable = "avx2,fma,f16c")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx2<$($g: $b),*>($isa: Isa $(, $arg: $ty)*) {
                    body($isa $(, $arg)*)
                }
                if $isa >= Isa::Avx512 {
                    // SAFETY: an `Isa` at or above Avx512 is only used when detected.
                    return unsafe { avx512($isa $(, $arg)*) };
                }
                if $isa >= Isa::Avx2 {
                    // SAFETY: an `Isa` at or above Avx2 is only used when detected.
                    return unsafe { avx2($isa $(, $arg)*) };
                }
            }
            body($isa $(, $arg)*)
        }
    };
}
pub(crate) use at_level;

/// A contiguous buffer of a view of `T` of `shape` (gathered if strided) and its offset.
fn operand<'a, T: HostElement>(
    view: View<'a>,
    shape: &[usize],
) -> Result<(Cow<'a, HostStorage>, usize)> {
    let (s, l) = view;
    let h = s.host(OP)?;
    if l.shape() != shape {
        return Err(Error::invalid(
            OP,
            format!("expected a view of shape {shape:?}, got {:?}", l.shape()),
        ));
    }
    if h.dtype() != T::DTYPE {
        return Err(Error::DTypeMismatch {
            op: OP,
            lhs: T::DTYPE,
            rhs: h.dtype(),
        });
    }
    Ok(dense(h, l))
}

/// The typed elements of an [`operand`].
fn typed<'a, T: HostElement>(buf: &'a (Cow<'_, HostStorage>, usize), len: usize) -> &'a [T] {
    let s = T::slice(&buf.0).expect("dtype checked by operand");
    &s[buf.1..buf.1 + len]
}

/// The problem's sizes, after checking that the views agree.
fn dims(p: &AttentionProblem<'_>) -> Result<Dims> {
    let (q, k, v) = (p.q.1.shape(), p.k.1.shape(), p.v.1.shape());
    let ok = q.len() == 3
        && k.len() == 3
        && v.len() == 3
        && q[0] == k[0]
        && k[0] == v[0]
        && q[2] == k[2]
        && k[1] == v[1];
    if !ok {
        return Err(Error::invalid(
            OP,
            format!("expects q [N, L, E], k [N, S, E], v [N, S, Ev]; got {q:?}, {k:?}, {v:?}"),
        ));
    }
    Ok(Dims {
        n: q[0],
        l: q[1],
        s: k[1],
        e: q[2],
        ev: v[2],
    })
}

/// The bias view, checked: f32, `[N, L, S]`, inside its storage.
fn bias<'a>(view: Option<View<'a>>, d: Dims) -> Result<Option<Bias<'a>>> {
    let Some((s, l)) = view else { return Ok(None) };
    let data = s.host(OP)?.typed::<f32>(OP)?;
    if l.shape() != [d.n, d.l, d.s] {
        return Err(Error::invalid(
            OP,
            format!(
                "the bias must be [N, L, S] = {:?}, got {:?}",
                [d.n, d.l, d.s],
                l.shape()
            ),
        ));
    }
    if l.storage_extent() > data.len() {
        return Err(Error::invalid(OP, "the bias view exceeds its storage"));
    }
    let st = l.strides();
    Ok(Some(Bias {
        data,
        offset: l.offset(),
        strides: [st[0], st[1], st[2]],
    }))
}

/// The panel format for `dtype` at `isa`, or `None` for a dtype without a fast path.
#[derive(Debug, Clone, Copy)]
enum Panels {
    F32(F32Panels),
    Pairs(PairPanels),
}

fn panels(isa: Isa, dtype: DType) -> Panels {
    // AMX tiles want depths of 32 and more at every step; the head dimension
    // and the blocks here are products of 16 to 128: vdpbf16ps serves better.
    let kernel = Kernel::select(isa.min(Isa::Avx512Bf16), dtype);
    if kernel.packs_bf16_pairs() {
        Panels::Pairs(PairPanels(kernel))
    } else {
        Panels::F32(F32Panels(kernel))
    }
}

/// Runs `$body` with `$T` the element type of `$dtype` and `$U` its panel
/// type (`$unit` the value), for f32, bf16 and f16.
macro_rules! with_types {
    ($isa:expr, $dtype:expr, |$T:ident, $U:ident, $unit:ident| $body:expr) => {
        match ($dtype, panels($isa, $dtype)) {
            (DType::F32, Panels::F32($unit)) => {
                type $T = f32;
                type $U = F32Panels;
                $body
            }
            (DType::F16, Panels::F32($unit)) => {
                type $T = f16;
                type $U = F32Panels;
                $body
            }
            (DType::BF16, Panels::F32($unit)) => {
                type $T = bf16;
                type $U = F32Panels;
                $body
            }
            (DType::BF16, Panels::Pairs($unit)) => {
                type $T = bf16;
                type $U = PairPanels;
                $body
            }
            (other, _) => unreachable!("fused attention reached with {other}"),
        }
    };
}

/// True when the fused kernel covers `p`'s dtype and sizes (else the op composes).
fn covered(p: &AttentionProblem<'_>, d: Dims) -> Result<bool> {
    let dtype = p.q.0.dtype();
    for (name, view) in [("k", p.k), ("v", p.v)] {
        if view.0.dtype() != dtype {
            return Err(Error::invalid(
                OP,
                format!("{name} is {}, q is {dtype}", view.0.dtype()),
            ));
        }
    }
    let fast = matches!(dtype, DType::F32 | DType::BF16 | DType::F16);
    Ok(fast && d.n * d.l * d.s * d.e * d.ev != 0)
}

/// [`Backend::attention`](amp_tensor::backend::Backend::attention) at `isa`.
pub(crate) fn attention(isa: Isa, p: &AttentionProblem<'_>) -> Result<Option<(Storage, Storage)>> {
    let d = dims(p)?;
    if !covered(p, d)? {
        return Ok(None);
    }
    let bias = bias(p.bias, d)?;
    let dtype = p.q.0.dtype();
    let result = with_types!(isa, dtype, |T, U, unit| {
        let q = operand::<T>(p.q, &[d.n, d.l, d.e])?;
        let k = operand::<T>(p.k, &[d.n, d.s, d.e])?;
        let v = operand::<T>(p.v, &[d.n, d.s, d.ev])?;
        let mut out = vec![T::default(); d.n * d.l * d.ev];
        let mut lse = vec![0f32; d.n * d.l];
        forward::run::<T, U>(
            isa,
            unit,
            d,
            forward::Inputs {
                q: typed(&q, d.n * d.l * d.e),
                k: typed(&k, d.n * d.s * d.e),
                v: typed(&v, d.n * d.s * d.ev),
                bias,
                causal: p.causal,
                scale: p.scale as f32,
            },
            &mut out,
            &mut lse,
        );
        (T::into_host(out), HostStorage::F32(lse))
    });
    Ok(Some((Storage::Host(result.0), Storage::Host(result.1))))
}

/// [`Backend::attention_backward`](amp_tensor::backend::Backend::attention_backward) at `isa`.
pub(crate) fn attention_backward(
    isa: Isa,
    p: &AttentionProblem<'_>,
    out: View<'_>,
    grad_out: View<'_>,
    lse: View<'_>,
) -> Result<Option<(Storage, Storage, Storage)>> {
    let d = dims(p)?;
    if !covered(p, d)? {
        return Ok(None);
    }
    let bias = bias(p.bias, d)?;
    let dtype = p.q.0.dtype();
    let lse_buf = operand::<f32>(lse, &[d.n, d.l])?;
    let grads = with_types!(isa, dtype, |T, U, unit| {
        let q = operand::<T>(p.q, &[d.n, d.l, d.e])?;
        let k = operand::<T>(p.k, &[d.n, d.s, d.e])?;
        let v = operand::<T>(p.v, &[d.n, d.s, d.ev])?;
        let o = operand::<T>(out, &[d.n, d.l, d.ev])?;
        let g = operand::<T>(grad_out, &[d.n, d.l, d.ev])?;
        let mut dq = vec![T::default(); d.n * d.l * d.e];
        let mut dk = vec![T::default(); d.n * d.s * d.e];
        let mut dv = vec![T::default(); d.n * d.s * d.ev];
        backward::run::<T, U>(
            isa,
            unit,
            d,
            backward::Inputs {
                q: typed(&q, d.n * d.l * d.e),
                k: typed(&k, d.n * d.s * d.e),
                v: typed(&v, d.n * d.s * d.ev),
                out: typed(&o, d.n * d.l * d.ev),
                grad_out: typed(&g, d.n * d.l * d.ev),
                lse: typed(&lse_buf, d.n * d.l),
                bias,
                causal: p.causal,
                scale: p.scale as f32,
            },
            backward::Grads {
                dq: &mut dq,
                dk: &mut dk,
                dv: &mut dv,
            },
        );
        (T::into_host(dq), T::into_host(dk), T::into_host(dv))
    });
    Ok(Some((
        Storage::Host(grads.0),
        Storage::Host(grads.1),
        Storage::Host(grads.2),
    )))
}
