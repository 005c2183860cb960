//! [`CpuBackend`]: the [`Backend`] trait on host memory with SIMD kernels.
//!
//! f32, bf16 and f16 run on the fast kernels (computing in f32, or f64 for
//! sums and statistics). Every other dtype (f64, i64, u8, bool, fp8 inputs)
//! takes the generic scalar path, which is the reference backend's code: it
//! stores tensors in the same [`HostStorage`], so the results are identical.

use crate::elementwise::{self, dense, zeros};
use crate::gemm::{self, BSide, Operand};
use crate::isa::{self, Isa};
use crate::{channels, index, optim, reduce, unscale};
use amp_dtype::DType;
use amp_tensor::backend::{
    AdamWStep, Backend, BinaryOp, ChannelAffine, HostElement, HostStorage, Im2col, NonFiniteCount,
    ReduceOp, Storage, UnaryOp, View,
};
use amp_tensor::reference::ReferenceBackend;
use amp_tensor::{with_host_storage, DeviceKind, Error, Layout, Result};

/// The CPU backend. Cheap to copy; holds only the instruction-set level its kernels use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuBackend {
    isa: Isa,
}

impl Default for CpuBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl CpuBackend {
    /// A backend at the process-wide level [`crate::isa()`] (detected, or lowered by `AMP_CPU_ISA`).
    ///
    /// The process's allocator is left as it is unless `AMP_CPU_KEEP_FREED_BUFFERS=1`
    /// asks otherwise (see [`crate::keep_freed_buffers`], which programs call to opt in).
    pub fn new() -> Self {
        crate::alloc::keep_freed_buffers_if_asked();
        CpuBackend { isa: isa::isa() }
    }

    /// A backend whose kernels run at `isa` — for testing every path on one machine.
    /// An `Err` if this CPU does not support `isa`.
    pub fn with_isa(isa: Isa) -> Result<Self> {
        let best = isa::detected();
        if isa > best {
            return Err(Error::invalid(
                "CpuBackend::with_isa",
                format!("{isa} is not supported by this CPU (best: {best})"),
            ));
        }
        crate::alloc::keep_freed_buffers_if_asked();
        Ok(CpuBackend { isa })
    }

    /// The level the kernels run at.
    pub fn isa(&self) -> Isa {
        self.isa
    }
}

/// The B operand over `h` (element `(b, p, j)` at `offset + b·bs + p·rs + j·cs`):
/// of A's type `S`, or with `rounded` f32 read as `S`.
fn b_side<S: crate::convert::F32Convert>(
    h: &HostStorage,
    offset: usize,
    batch_stride: usize,
    row_stride: usize,
    col_stride: usize,
    rounded: bool,
) -> BSide<'_, S> {
    if rounded {
        let data = f32::slice(h).expect("an f32 operand");
        BSide::Rounded(Operand {
            data,
            offset,
            batch_stride,
            row_stride,
            col_stride,
        })
    } else {
        let data = S::slice(h).expect("same dtype");
        BSide::Same(Operand {
            data,
            offset,
            batch_stride,
            row_stride,
            col_stride,
        })
    }
}

/// True for the dtypes with fast kernels.
fn fast(d: DType) -> bool {
    matches!(d, DType::F32 | DType::BF16 | DType::F16)
}

/// Runs `$body` with `$v` bound to the typed slice and `$T` to its element type (f32, bf16, f16).
macro_rules! with_fast {
    ($h:expr, $v:ident, $T:ident => $body:expr) => {
        match $h {
            HostStorage::F32($v) => {
                type $T = f32;
                $body
            }
            HostStorage::BF16($v) => {
                type $T = amp_dtype::bf16;
                $body
            }
            HostStorage::F16($v) => {
                type $T = amp_dtype::f16;
                $body
            }
            other => unreachable!("fast kernel reached with {}", other.dtype()),
        }
    };
}

impl CpuBackend {
    /// The values of `v` in logical order, as f32 (the parameters and
    /// statistics of the normalisation kernels).
    fn f32_values(&self, op: &'static str, v: View<'_>) -> Result<Vec<f32>> {
        let (h, l) = host(op, v)?;
        let (buf, off) = dense(h, l);
        match elementwise::cast_range(self.isa, &buf, off, l.numel(), DType::F32) {
            HostStorage::F32(v) => Ok(v),
            _ => unreachable!("cast to f32"),
        }
    }

    /// `matmul`: an f32 `rhs` with a bf16/f16 `lhs` is a deferred cast read
    /// as `lhs`'s dtype, rounded while packing ([`Backend::fuses_cast`]).
    fn product(&self, lhs: View<'_>, rhs: View<'_>, out: DType) -> Result<Storage> {
        let op = "matmul";
        let (ha, la) = host(op, lhs)?;
        let (hb, lb) = host(op, rhs)?;
        let (sa, sb) = (la.shape(), lb.shape());
        if sa.len() != 3 || sb.len() != 3 || sa[0] != sb[0] || sa[2] != sb[1] {
            return Err(Error::ShapeMismatch {
                op,
                lhs: sa.to_vec(),
                rhs: sb.to_vec(),
            });
        }
        let rounded = hb.dtype() == DType::F32 && matches!(ha.dtype(), DType::BF16 | DType::F16);
        if !rounded && ha.dtype() != hb.dtype() || rounded && !fast(ha.dtype()) {
            return Err(Error::DTypeMismatch {
                op,
                lhs: ha.dtype(),
                rhs: hb.dtype(),
            });
        }
        if !fast(ha.dtype()) {
            return ReferenceBackend.matmul(lhs, rhs, out);
        }
        let (batch, m, k, n) = (sa[0], sa[1], sa[2], sb[2]);
        let result = with_fast!(ha, a, S => {
            let (ta, tb) = (la.strides(), lb.strides());
            let a = Operand { data: a, offset: la.offset(), batch_stride: ta[0], row_stride: ta[1], col_stride: ta[2] };
            let b = b_side::<S>(hb, lb.offset(), tb[0], tb[1], tb[2], rounded);
            match out {
                DType::BF16 => HostStorage::BF16(gemm::gemm_finished::<S, amp_dtype::bf16>(self.isa, a, b, batch, m, k, n, &|_, _| {})),
                DType::F16 => HostStorage::F16(gemm::gemm_finished::<S, amp_dtype::f16>(self.isa, a, b, batch, m, k, n, &|_, _| {})),
                DType::F32 => HostStorage::F32(gemm::gemm::<S>(self.isa, a, b, batch, m, k, n)),
                _ => {
                    let c = HostStorage::F32(gemm::gemm::<S>(self.isa, a, b, batch, m, k, n));
                    elementwise::cast_range(self.isa, &c, 0, c.len(), out)
                }
            }
        });
        Ok(Storage::Host(result))
    }
}

/// `x` as `[N, C, L]` planes for the per-channel kernels, or `None` when its
/// dtype is not a fast one or it has fewer than two dimensions.
fn planes(h: &HostStorage, l: &Layout) -> Option<channels::Planes> {
    let d = l.shape();
    (fast(h.dtype()) && d.len() >= 2).then(|| channels::Planes {
        n: d[0],
        c: d[1],
        l: d[2..].iter().product(),
    })
}

/// The shape of a convolution over `x` with `out_channels` output channels,
/// or `None` when `x` does not hold the geometry's input or the channels do
/// not split into `groups` (the caller checks shapes; the kernels then decline).
fn conv_shape<'g>(
    geometry: &'g Im2col,
    groups: usize,
    x: &Layout,
    out_channels: Option<usize>,
) -> Option<gemm::implicit::ConvShape<'g>> {
    let g = geometry;
    let numel = g.batch * g.channels * g.plane[0] * g.plane[1];
    let out_channels = out_channels?;
    let splits =
        groups > 0 && g.channels.is_multiple_of(groups) && out_channels.is_multiple_of(groups);
    // No input channels: no product to run (the composed form gives the bias).
    let ok = x.numel() == numel && splits && out_channels > 0 && g.channels > 0;
    ok.then_some(gemm::implicit::ConvShape {
        geometry,
        groups,
        out_channels,
    })
}

fn host<'a>(op: &'static str, v: View<'a>) -> Result<(&'a HostStorage, &'a Layout)> {
    Ok((v.0.host(op)?, v.1))
}

fn same_shape(op: &'static str, a: &Layout, b: &Layout) -> Result<()> {
    if a.shape() != b.shape() {
        return Err(Error::ShapeMismatch {
            op,
            lhs: a.shape().to_vec(),
            rhs: b.shape().to_vec(),
        });
    }
    Ok(())
}

impl Backend for CpuBackend {
    fn name(&self) -> &str {
        "cpu"
    }

    fn kind(&self) -> DeviceKind {
        DeviceKind::Cpu
    }

    fn is_bf16_supported(&self) -> bool {
        // Native bf16 arithmetic only: AVX512-BF16 (vdpbf16ps) or AMX-BF16 with permission.
        self.isa >= Isa::Avx512Bf16
    }

    fn from_host(&self, data: HostStorage) -> Result<Storage> {
        Ok(Storage::Host(data))
    }

    fn to_host(&self, src: View<'_>) -> Result<HostStorage> {
        let (h, l) = host("to_host", src)?;
        Ok(elementwise::copy_view(self.isa, h, l))
    }

    fn full(&self, numel: usize, value: f64, dtype: DType) -> Result<Storage> {
        Ok(Storage::Host(HostStorage::try_filled(
            "full", dtype, numel, value,
        )?))
    }

    fn cast(&self, src: View<'_>, out: DType) -> Result<Storage> {
        let (h, l) = host("cast", src)?;
        if h.dtype() == out {
            return Ok(Storage::Host(elementwise::copy_view(self.isa, h, l)));
        }
        if !fast(h.dtype()) {
            return ReferenceBackend.cast(src, out);
        }
        if !l.is_contiguous() && fast(out) {
            let mut dst = zeros(out, 0);
            with_fast!(h, s, S => with_fast!(&mut dst, d, D => {
                *d = elementwise::gather_cast::<S, D>(self.isa, s, l);
            }));
            return Ok(Storage::Host(dst));
        }
        let (buf, off) = dense(h, l);
        Ok(Storage::Host(elementwise::cast_range(
            self.isa,
            &buf,
            off,
            l.numel(),
            out,
        )))
    }

    fn unary(&self, op: UnaryOp, src: View<'_>, out: DType) -> Result<Storage> {
        let (h, l) = host("unary", src)?;
        if !fast(h.dtype()) {
            return ReferenceBackend.unary(op, src, out);
        }
        let n = l.numel();
        let (buf, off) = dense(h, l);
        let mut dst = zeros(out, 0);
        with_fast!(&*buf, s, S => with_host_storage!(&mut dst, d => *d = elementwise::unary_vec::<S, _>(self.isa, op, &s[off..off + n])));
        Ok(Storage::Host(dst))
    }

    fn binary(&self, op: BinaryOp, lhs: View<'_>, rhs: View<'_>, out: DType) -> Result<Storage> {
        let (ha, la) = host("binary", lhs)?;
        let (hb, lb) = host("binary", rhs)?;
        same_shape("binary", la, lb)?;
        if ha.dtype() != hb.dtype() {
            return Err(Error::DTypeMismatch {
                op: "binary",
                lhs: ha.dtype(),
                rhs: hb.dtype(),
            });
        }
        if !fast(ha.dtype()) {
            return ReferenceBackend.binary(op, lhs, rhs, out);
        }
        let n = la.numel();
        let (ba, oa) = dense(ha, la);
        let (bb, ob) = dense(hb, lb);
        let mut dst = zeros(out, 0);
        with_fast!(&*ba, a, S => {
            let b = S::slice(&bb).expect("same dtype");
            with_host_storage!(&mut dst, d => *d = elementwise::binary_vec::<S, _>(self.isa, op, &a[oa..oa + n], &b[ob..ob + n]))
        });
        Ok(Storage::Host(dst))
    }

    fn where_cond(
        &self,
        cond: View<'_>,
        on_true: View<'_>,
        on_false: View<'_>,
        out: DType,
    ) -> Result<Storage> {
        let (hc, lc) = host("where", cond)?;
        let (ht, lt) = host("where", on_true)?;
        let (hf, lf) = host("where", on_false)?;
        same_shape("where", lc, lt)?;
        same_shape("where", lt, lf)?;
        if hc.dtype() != DType::Bool || ht.dtype() != hf.dtype() || !fast(ht.dtype()) {
            return ReferenceBackend.where_cond(cond, on_true, on_false, out);
        }
        let n = lt.numel();
        let (bc, oc) = dense(hc, lc);
        let (bt, ot) = dense(ht, lt);
        let (bf, of) = dense(hf, lf);
        let c = &bool::slice(&bc).expect("bool")[oc..oc + n];
        let mut dst = zeros(out, n);
        with_fast!(&*bt, t, S => {
            let f = S::slice(&bf).expect("same dtype");
            with_host_storage!(&mut dst, d => elementwise::where_slice::<S, _>(self.isa, c, &t[ot..ot + n], &f[of..of + n], d))
        });
        Ok(Storage::Host(dst))
    }

    fn reduce(&self, op: ReduceOp, src: View<'_>, dims: &[usize], out: DType) -> Result<Storage> {
        let (h, l) = host("reduce", src)?;
        if dims.iter().any(|&d| d >= l.rank()) {
            return Err(Error::invalid(
                "reduce",
                format!("dims {dims:?} out of range for shape {:?}", l.shape()),
            ));
        }
        if !fast(h.dtype()) {
            return ReferenceBackend.reduce(op, src, dims, out);
        }
        Ok(Storage::Host(
            with_fast!(h, _s, S => reduce::reduce::<S>(self.isa, op, h, l, dims, out)),
        ))
    }

    fn matmul(&self, lhs: View<'_>, rhs: View<'_>, out: DType) -> Result<Storage> {
        self.product(lhs, rhs, out)
    }

    /// The products read an f32 right operand (`matmul`'s `rhs`, `linear`'s
    /// weight) as bf16/f16 while packing it (`BSide::Rounded`), and `linear`'s
    /// f32 bias rounded once before its f32 epilogue.
    fn fuses_cast(&self, op: &str, operand: usize, from: DType, to: DType) -> bool {
        let narrowing = from == DType::F32 && matches!(to, DType::BF16 | DType::F16);
        narrowing && matches!((op, operand), ("matmul", 1) | ("linear", 1) | ("linear", 2))
    }

    fn linear(
        &self,
        x: View<'_>,
        weight: View<'_>,
        bias: Option<View<'_>>,
        activation: Option<UnaryOp>,
        out: DType,
    ) -> Result<Storage> {
        let op = "linear";
        let (hx, lx) = host(op, x)?;
        let (hw, lw) = host(op, weight)?;
        let (sx, sw) = (lx.shape(), lw.shape());
        if sx.len() != 2 || sw.len() != 2 || sx[1] != sw[1] {
            return Err(Error::ShapeMismatch {
                op,
                lhs: sx.to_vec(),
                rhs: sw.to_vec(),
            });
        }
        // An f32 weight with a bf16/f16 x is rounded while packing.
        let rounded = hw.dtype() == DType::F32 && matches!(hx.dtype(), DType::BF16 | DType::F16);
        if hx.dtype() != hw.dtype() && !rounded {
            return Err(Error::DTypeMismatch {
                op,
                lhs: hx.dtype(),
                rhs: hw.dtype(),
            });
        }
        if !fast(hx.dtype()) || !matches!(out, DType::F32 | DType::BF16 | DType::F16) {
            return ReferenceBackend.linear(x, weight, bias, activation, out);
        }
        let (m, k, n) = (sx[0], sx[1], sw[0]);
        let bias = match bias {
            Some(b) => {
                if b.1.shape() != [n] {
                    return Err(Error::ShapeMismatch {
                        op,
                        lhs: sw.to_vec(),
                        rhs: b.1.shape().to_vec(),
                    });
                }
                // A wider bias is rounded to x's dtype first, as the weight is.
                let narrowed = if b.0.dtype() != hx.dtype() {
                    Some(self.cast(b, hx.dtype())?)
                } else {
                    None
                };
                let flat = Layout::contiguous(&[n]);
                let b = match &narrowed {
                    Some(s) => (s, &flat),
                    None => b,
                };
                let b32 = self.cast(b, DType::F32)?;
                Some(b32.host(op)?.typed::<f32>(op)?.to_vec())
            }
            None => None,
        };
        let isa = self.isa;
        // The epilogue on a finished row segment starting at column `col0`.
        let finish = |col0: usize, vals: &mut [f32]| {
            elementwise::finish_row(isa, bias.as_deref(), activation, col0, vals)
        };
        let c = with_fast!(hx, a, S => {
            let (tx, tw) = (lx.strides(), lw.strides());
            let a = Operand { data: a, offset: lx.offset(), batch_stride: 0, row_stride: tx[0], col_stride: tx[1] };
            // Element (p, j) of weightᵀ is weight[j][p].
            let b = b_side::<S>(hw, lw.offset(), 0, tw[1], tw[0], rounded);
            // The epilogue runs on each finished row segment of the f32 product, which is rounded once.
            match out {
                DType::BF16 => HostStorage::BF16(gemm::gemm_finished::<S, amp_dtype::bf16>(isa, a, b, 1, m, k, n, &finish)),
                DType::F16 => HostStorage::F16(gemm::gemm_finished::<S, amp_dtype::f16>(isa, a, b, 1, m, k, n, &finish)),
                _ => HostStorage::F32(gemm::gemm_finished::<S, f32>(isa, a, b, 1, m, k, n, &finish)),
            }
        });
        Ok(Storage::Host(c))
    }

    fn softmax(&self, src: View<'_>, log: bool, out: DType) -> Result<Storage> {
        let (h, l) = host("softmax", src)?;
        if l.rank() == 0 {
            return Err(Error::invalid("softmax", "expects at least one dimension"));
        }
        if !fast(h.dtype()) {
            return ReferenceBackend.softmax(src, log, out);
        }
        let mut dst = zeros(out, l.numel());
        with_fast!(h, _s, S => with_host_storage!(&mut dst, d => reduce::softmax::<S, _>(self.isa, h, l, log, d)));
        Ok(Storage::Host(dst))
    }

    fn layer_norm(
        &self,
        src: View<'_>,
        weight: Option<View<'_>>,
        bias: Option<View<'_>>,
        eps: f64,
        out: DType,
    ) -> Result<(Storage, Storage, Storage)> {
        let (h, l) = host("layer_norm", src)?;
        if l.rank() == 0 {
            return Err(Error::invalid(
                "layer_norm",
                "expects at least one dimension",
            ));
        }
        if !fast(h.dtype()) {
            return ReferenceBackend.layer_norm(src, weight, bias, eps, out);
        }
        let len = l.shape()[l.rank() - 1];
        let param = |v: Option<View<'_>>| -> Result<Option<Vec<f32>>> {
            let Some(v) = v else { return Ok(None) };
            if v.1.numel() != len {
                return Err(Error::ShapeMismatch {
                    op: "layer_norm",
                    lhs: l.shape().to_vec(),
                    rhs: v.1.shape().to_vec(),
                });
            }
            self.f32_values("layer_norm", v).map(Some)
        };
        let (w, b) = (param(weight)?, param(bias)?);
        let rows = l.numel().checked_div(len).unwrap_or(0);
        let (mut mean, mut rstd) = (vec![0f32; rows], vec![0f32; rows]);
        let mut dst = zeros(out, l.numel());
        with_fast!(h, _s, S => with_host_storage!(&mut dst, d => reduce::layer_norm::<S, _>(
            self.isa, h, l, w.as_deref(), b.as_deref(), eps, d, &mut mean, &mut rstd
        )));
        Ok((
            Storage::Host(dst),
            Storage::Host(HostStorage::F32(mean)),
            Storage::Host(HostStorage::F32(rstd)),
        ))
    }

    fn layer_norm_backward(
        &self,
        src: View<'_>,
        weight: Option<View<'_>>,
        mean: View<'_>,
        rstd: View<'_>,
        grad: View<'_>,
        out: DType,
    ) -> Result<Option<(Storage, Storage, Storage)>> {
        const OP: &str = "layer_norm_backward";
        let (h, l) = host(OP, src)?;
        let (gh, gl) = host(OP, grad)?;
        let len = l.shape().last().copied().unwrap_or(0);
        if !fast(h.dtype()) || !fast(gh.dtype()) || !fast(out) || len == 0 {
            return Ok(None);
        }
        if gl.shape() != l.shape() {
            return Err(Error::ShapeMismatch {
                op: OP,
                lhs: l.shape().to_vec(),
                rhs: gl.shape().to_vec(),
            });
        }
        let rows = l.numel() / len;
        let f32s = |v: View<'_>, n: usize, what: &str| -> Result<Vec<f32>> {
            if v.1.numel() != n {
                return Err(Error::invalid(
                    OP,
                    format!("{what} has {} elements, expected {n}", v.1.numel()),
                ));
            }
            self.f32_values(OP, v)
        };
        let w = weight.map(|v| f32s(v, len, "weight")).transpose()?;
        let (mean, rstd) = (f32s(mean, rows, "mean")?, f32s(rstd, rows, "rstd")?);
        // Both read where they lie (a strided view is gathered first), a row
        // at a time; the output is written whole, so it is not zeroed first.
        let (xs, off) = dense(h, l);
        let (gs, goff) = dense(gh, gl);
        let mut dx = zeros(out, 0);
        let (dw, db) = with_fast!(&*xs, x, S => with_fast!(&*gs, g, G => with_host_storage!(&mut dx, d => {
            let mut v = Vec::with_capacity(l.numel());
            let sums = reduce::layer_norm_backward::<S, G, _>(
                self.isa, &x[off..], &g[goff..], w.as_deref(), &mean, &rstd, len, v.spare_capacity_mut()
            );
            // SAFETY: `layer_norm_backward` writes every element of the
            // `l.numel()` it is given (whole rows of `len`).
            unsafe { v.set_len(l.numel()) };
            *d = v;
            sums
        })));
        let narrow =
            |v: Vec<f32>| elementwise::cast_range(self.isa, &HostStorage::F32(v), 0, len, out);
        Ok(Some((
            Storage::Host(dx),
            Storage::Host(narrow(dw)),
            Storage::Host(narrow(db)),
        )))
    }

    fn cat(&self, inputs: &[View<'_>], dim: usize, out: DType) -> Result<Storage> {
        let first = inputs
            .first()
            .ok_or_else(|| Error::invalid("cat", "no inputs"))?
            .1;
        let mut hosts = Vec::with_capacity(inputs.len());
        for v in inputs {
            let (h, l) = host("cat", *v)?;
            let compatible = l.rank() == first.rank()
                && dim < l.rank()
                && l.shape()
                    .iter()
                    .zip(first.shape())
                    .enumerate()
                    .all(|(d, (a, b))| d == dim || a == b);
            if !compatible {
                return Err(Error::ShapeMismatch {
                    op: "cat",
                    lhs: first.shape().to_vec(),
                    rhs: l.shape().to_vec(),
                });
            }
            hosts.push((h, l));
        }
        let same = hosts.iter().all(|(h, _)| h.dtype() == out);
        let all_fast = fast(out) && hosts.iter().all(|(h, _)| fast(h.dtype()));
        if !(same || all_fast) {
            return ReferenceBackend.cat(inputs, dim, out);
        }
        Ok(Storage::Host(index::cat(self.isa, &hosts, dim, out)))
    }

    fn index_select(
        &self,
        src: View<'_>,
        dim: usize,
        index: View<'_>,
        out: DType,
    ) -> Result<Storage> {
        let (h, l) = host("index_select", src)?;
        let (hi, li) = host("index_select", index)?;
        if dim >= l.rank() {
            return Err(Error::invalid(
                "index_select",
                format!("dim {dim} out of range for shape {:?}", l.shape()),
            ));
        }
        let Some(idx) = index::indices(hi, li) else {
            return Err(Error::UnsupportedDType {
                op: "index_select",
                dtype: hi.dtype(),
                reason: "indices must be i64".into(),
            });
        };
        if !(h.dtype() == out || fast(h.dtype())) {
            return ReferenceBackend.index_select(src, dim, index, out);
        }
        Ok(Storage::Host(index::index_select(
            self.isa, h, l, dim, &idx, out,
        )))
    }

    fn gather(&self, src: View<'_>, dim: usize, index: View<'_>, out: DType) -> Result<Storage> {
        let (h, l) = host("gather", src)?;
        let (hi, li) = host("gather", index)?;
        if dim >= l.rank() || li.rank() != l.rank() {
            return Err(Error::ShapeMismatch {
                op: "gather",
                lhs: l.shape().to_vec(),
                rhs: li.shape().to_vec(),
            });
        }
        let Some(idx) = index::indices(hi, li) else {
            return Err(Error::UnsupportedDType {
                op: "gather",
                dtype: hi.dtype(),
                reason: "indices must be i64".into(),
            });
        };
        if !(h.dtype() == out || fast(h.dtype())) {
            return ReferenceBackend.gather(src, dim, index, out);
        }
        Ok(Storage::Host(index::gather(
            self.isa,
            h,
            l,
            dim,
            &idx,
            li.shape(),
            out,
        )))
    }

    fn scatter_add(
        &self,
        shape: &[usize],
        dim: usize,
        index: View<'_>,
        src: View<'_>,
        out: DType,
    ) -> Result<Storage> {
        let (hi, li) = host("scatter_add", index)?;
        let (hs, ls) = host("scatter_add", src)?;
        same_shape("scatter_add", li, ls)?;
        if dim >= shape.len() || li.rank() != shape.len() {
            return Err(Error::ShapeMismatch {
                op: "scatter_add",
                lhs: shape.to_vec(),
                rhs: li.shape().to_vec(),
            });
        }
        if !fast(hs.dtype()) {
            return ReferenceBackend.scatter_add(shape, dim, index, src, out);
        }
        let Some(idx) = index::indices(hi, li) else {
            return Err(Error::UnsupportedDType {
                op: "scatter_add",
                dtype: hi.dtype(),
                reason: "indices must be i64".into(),
            });
        };
        let n = ls.numel();
        let (buf, off) = dense(hs, ls);
        Ok(Storage::Host(
            with_fast!(&*buf, s, S => index::scatter_add::<S>(self.isa, shape, dim, &idx, li.shape(), &s[off..off + n], out)),
        ))
    }

    fn non_finite_check_and_unscale(
        &self,
        buffers: &mut [(&mut Storage, &Layout)],
        inv_scale: f32,
    ) -> Result<Vec<NonFiniteCount>> {
        let mut counts = Vec::with_capacity(buffers.len());
        for (storage, layout) in buffers.iter_mut() {
            let layout: &Layout = layout;
            let h = storage.host_mut("non_finite_check_and_unscale")?;
            if layout.storage_extent() > h.len() {
                return Err(Error::invalid(
                    "non_finite_check_and_unscale",
                    format!(
                        "view of shape {:?} reaches past a buffer of {} elements",
                        layout.shape(),
                        h.len()
                    ),
                ));
            }
            let count = match h {
                HostStorage::F32(v) => unscale::unscale(self.isa, v, layout, inv_scale),
                HostStorage::BF16(v) => unscale::unscale(self.isa, v, layout, inv_scale),
                HostStorage::F16(v) => unscale::unscale(self.isa, v, layout, inv_scale),
                HostStorage::F64(v) => unscale::unscale_f64(v, layout, inv_scale),
                _ => {
                    // fp8 (and the error for integer buffers) as the reference does it.
                    ReferenceBackend
                        .non_finite_check_and_unscale(&mut [(&mut **storage, layout)], inv_scale)?
                        [0]
                }
            };
            counts.push(count);
        }
        Ok(counts)
    }

    fn adamw_step(
        &self,
        param: &mut Storage,
        grad: View<'_>,
        exp_avg: &mut Storage,
        exp_avg_sq: &mut Storage,
        hyper: &AdamWStep,
    ) -> Result<()> {
        let op = "adamw_step";
        let n = param.len();
        let (gh, gl) = host(op, grad)?;
        if !(fast(param.dtype()) && fast(gh.dtype())) {
            return ReferenceBackend.adamw_step(param, grad, exp_avg, exp_avg_sq, hyper);
        }
        if gl.numel() != n || exp_avg.len() != n || exp_avg_sq.len() != n {
            return Err(Error::invalid(
                op,
                format!(
                    "param has {n} elements, grad {}, exp_avg {}, exp_avg_sq {}",
                    gl.numel(),
                    exp_avg.len(),
                    exp_avg_sq.len()
                ),
            ));
        }
        // A strided gradient is made contiguous first (one blocked pass).
        let dense_grad;
        let (gh, range) = match gl.contiguous_range() {
            Some(r) => (gh, r),
            None => {
                dense_grad = self.cast(grad, gh.dtype())?;
                (dense_grad.host(op)?, 0..n)
            }
        };
        let m = exp_avg.host_mut(op)?.typed_mut::<f32>(op)?;
        let v = exp_avg_sq.host_mut(op)?.typed_mut::<f32>(op)?;
        let p = param.host_mut(op)?;
        with_fast!(p, p, P => with_fast!(gh, g, G => {
            optim::adamw::<P, G>(self.isa, p, &g[range.clone()], m, v, hyper)
        }));
        Ok(())
    }

    fn conv2d(
        &self,
        x: View<'_>,
        weight: View<'_>,
        bias: Option<View<'_>>,
        geometry: &Im2col,
        groups: usize,
        out: DType,
    ) -> Result<Option<Storage>> {
        let op = "conv2d";
        let (hx, lx) = host(op, x)?;
        let (hw, lw) = host(op, weight)?;
        let Some(shape) = conv_shape(geometry, groups, lx, lw.shape().first().copied()) else {
            return Ok(None);
        };
        let depth = geometry.cols() / groups;
        let dtype = hx.dtype();
        if !fast(dtype) || hw.dtype() != dtype || !(out == dtype || out == DType::F32) {
            return Ok(None);
        }
        if lw.numel() != shape.out_channels * depth {
            return Err(Error::ShapeMismatch {
                op,
                lhs: lx.shape().to_vec(),
                rhs: lw.shape().to_vec(),
            });
        }
        let bias = bias.map(|b| self.f32_values(op, b)).transpose()?;
        let (bx, ox) = dense(hx, lx);
        let (bw, ow) = dense(hw, lw);
        let y = with_fast!(&*bx, xs, S => {
            let xs = &xs[ox..ox + lx.numel()];
            let ws = &bw.typed::<S>(op)?[ow..ow + lw.numel()];
            if out == DType::F32 {
                HostStorage::F32(gemm::implicit::conv2d::<S, f32>(self.isa, xs, ws, bias.as_deref(), shape))
            } else {
                S::into_host(gemm::implicit::conv2d::<S, S>(self.isa, xs, ws, bias.as_deref(), shape))
            }
        });
        Ok(Some(Storage::Host(y)))
    }

    fn conv2d_weight_grad(
        &self,
        x: View<'_>,
        grad: View<'_>,
        geometry: &Im2col,
        groups: usize,
        out: DType,
    ) -> Result<Option<Storage>> {
        let op = "conv2d_weight_grad";
        let (hx, lx) = host(op, x)?;
        let (hg, lg) = host(op, grad)?;
        let Some(shape) = conv_shape(geometry, groups, lx, lg.shape().get(1).copied()) else {
            return Ok(None);
        };
        let dtype = hx.dtype();
        if !fast(dtype) || hg.dtype() != dtype || !fast(out) {
            return Ok(None);
        }
        let want = [
            geometry.batch,
            shape.out_channels,
            geometry.out[0],
            geometry.out[1],
        ];
        if lg.shape() != want {
            return Err(Error::ShapeMismatch {
                op,
                lhs: lx.shape().to_vec(),
                rhs: lg.shape().to_vec(),
            });
        }
        let (bx, ox) = dense(hx, lx);
        let (bg, og) = dense(hg, lg);
        let dw = with_fast!(&*bx, xs, S => {
            let xs = &xs[ox..ox + lx.numel()];
            let gs = &bg.typed::<S>(op)?[og..og + lg.numel()];
            HostStorage::F32(gemm::implicit::conv2d_weight_grad::<S>(self.isa, xs, gs, shape))
        });
        Ok(Some(Storage::Host(if out == DType::F32 {
            dw
        } else {
            elementwise::cast_range(self.isa, &dw, 0, dw.len(), out)
        })))
    }

    fn channel_moments(&self, x: View<'_>) -> Result<Option<(Storage, Storage)>> {
        let op = "channel_moments";
        let (h, l) = host(op, x)?;
        let Some(p) = planes(h, l) else {
            return Ok(None);
        };
        let (buf, off) = dense(h, l);
        let stats = with_fast!(&*buf, v, S => channels::moments::<S>(self.isa, &v[off..off + l.numel()], p));
        let mean = stats.iter().map(|s| s.0 as f32).collect();
        let var = stats.iter().map(|s| s.1 as f32).collect();
        Ok(Some((
            Storage::Host(HostStorage::F32(mean)),
            Storage::Host(HostStorage::F32(var)),
        )))
    }

    fn channel_affine(
        &self,
        x: View<'_>,
        grad: Option<View<'_>>,
        terms: &ChannelAffine<'_>,
        out: DType,
    ) -> Result<Option<Storage>> {
        let op = "channel_affine";
        let (h, l) = host(op, x)?;
        let Some(p) = planes(h, l) else {
            return Ok(None);
        };
        if !fast(out) {
            return Ok(None);
        }
        let term = |v: View<'_>| -> Result<Vec<f32>> {
            if v.1.numel() != p.c || v.0.dtype() != DType::F32 {
                return Err(Error::invalid(
                    op,
                    format!(
                        "per-channel terms must be f32 [{}] for an input of shape {:?}, got {} {:?}",
                        p.c,
                        l.shape(),
                        v.0.dtype(),
                        v.1.shape()
                    ),
                ));
            }
            self.f32_values(op, v)
        };
        let (mean, scale, shift) = (term(terms.mean)?, term(terms.scale)?, term(terms.shift)?);
        let grad_scale = terms.grad_scale.map(term).transpose()?;
        let g = grad.map(|g| host(op, g)).transpose()?;
        if let Some((hg, lg)) = g {
            if lg.shape() != l.shape() || hg.dtype() != h.dtype() {
                return Err(Error::ShapeMismatch {
                    op,
                    lhs: l.shape().to_vec(),
                    rhs: lg.shape().to_vec(),
                });
            }
        }
        let (buf, off) = dense(h, l);
        let gbuf = g.map(|(hg, lg)| dense(hg, lg));
        let n = l.numel();
        let affine = channels::ChannelAffine {
            mean: &mean,
            scale: &scale,
            shift: &shift,
            grad_scale: grad_scale.as_deref(),
        };
        let y = with_fast!(&*buf, v, S => {
            let xs = &v[off..off + n];
            let gs = match &gbuf {
                Some((gb, goff)) => Some(&gb.typed::<S>(op)?[*goff..*goff + n]),
                None => None,
            };
            match out {
                DType::F32 => {
                    let mut o = vec![0f32; n];
                    channels::affine(self.isa, xs, gs, affine, p, &mut o);
                    HostStorage::F32(o)
                }
                DType::BF16 => {
                    let mut o = vec![amp_dtype::bf16::from_f32(0.0); n];
                    channels::affine(self.isa, xs, gs, affine, p, &mut o);
                    HostStorage::BF16(o)
                }
                _ => {
                    let mut o = vec![amp_dtype::f16::from_f32(0.0); n];
                    channels::affine(self.isa, xs, gs, affine, p, &mut o);
                    HostStorage::F16(o)
                }
            }
        });
        Ok(Some(Storage::Host(y)))
    }

    fn channel_grad_sums(
        &self,
        x: View<'_>,
        grad: View<'_>,
        mean: View<'_>,
    ) -> Result<Option<(Storage, Storage)>> {
        let op = "channel_grad_sums";
        let (h, l) = host(op, x)?;
        let (hg, lg) = host(op, grad)?;
        let Some(p) = planes(h, l) else {
            return Ok(None);
        };
        if lg.shape() != l.shape() || hg.dtype() != h.dtype() || mean.1.numel() != p.c {
            return Err(Error::ShapeMismatch {
                op,
                lhs: l.shape().to_vec(),
                rhs: lg.shape().to_vec(),
            });
        }
        let m = self.f32_values(op, mean)?;
        let (buf, off) = dense(h, l);
        let (gbuf, goff) = dense(hg, lg);
        let n = l.numel();
        let sums = with_fast!(&*buf, v, S => {
            let gs = &gbuf.typed::<S>(op)?[goff..goff + n];
            channels::grad_sums(self.isa, &v[off..off + n], gs, &m, p)
        });
        let sum = sums.iter().map(|s| s.0 as f32).collect();
        let dot = sums.iter().map(|s| s.1 as f32).collect();
        Ok(Some((
            Storage::Host(HostStorage::F32(sum)),
            Storage::Host(HostStorage::F32(dot)),
        )))
    }

    fn col2im(&self, cols: View<'_>, geometry: &Im2col, out: DType) -> Result<Option<Storage>> {
        let (h, l) = host("col2im", cols)?;
        let numel = geometry.rows() * geometry.cols();
        if h.dtype() != DType::F32 || !fast(out) || l.numel() != numel {
            return Ok(None);
        }
        let (buf, off) = dense(h, l);
        let HostStorage::F32(v) = &*buf else {
            unreachable!("checked f32")
        };
        let sums = HostStorage::F32(crate::conv::col2im(&v[off..off + numel], geometry));
        Ok(Some(Storage::Host(if out == DType::F32 {
            sums
        } else {
            elementwise::cast_range(self.isa, &sums, 0, sums.len(), out)
        })))
    }

    fn attention(
        &self,
        problem: &amp_tensor::backend::AttentionProblem<'_>,
    ) -> Result<Option<(Storage, Storage)>> {
        crate::attention::attention(self.isa, problem)
    }

    fn attention_backward(
        &self,
        problem: &amp_tensor::backend::AttentionProblem<'_>,
        out: View<'_>,
        grad_out: View<'_>,
        lse: View<'_>,
    ) -> Result<Option<(Storage, Storage, Storage)>> {
        crate::attention::attention_backward(self.isa, problem, out, grad_out, lse)
    }
}
