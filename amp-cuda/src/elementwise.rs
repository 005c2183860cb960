//! Elementwise kernels: unary ops, binary ops with broadcasting, `where`.

use crate::backend::CudaBackend;
use crate::codes;
use crate::device::{grid_for, launch};
use crate::kernels::{size_suffix, suffix, unsupported, COPY, ELEMENTWISE};
use crate::meta::StridedMeta;
use crate::transfer::Operand;
use amp_dtype::DType;
use amp_tensor::backend::{BinaryOp, Storage, UnaryOp, View};
use amp_tensor::layout::contiguous_strides;
use amp_tensor::{Error, Layout, Result};

impl CudaBackend {
    pub(crate) fn unary_kernel(&self, op: UnaryOp, src: View<'_>, out: DType) -> Result<Storage> {
        let name = "unary";
        let (s, l) = self.view(name, src)?;
        let n = l.numel();
        // Bool runs as u8 (0/1).
        let widened;
        let (input, dtype) = if s.dtype == DType::Bool {
            widened = self.cast_view(name, s, l, DType::U8)?;
            (
                Operand {
                    ptr: widened.ptr(),
                    _keep: None,
                },
                DType::U8,
            )
        } else {
            (self.operand(name, s, l)?, s.dtype)
        };
        let sfx = suffix(dtype)
            .ok_or_else(|| unsupported(name, dtype, "fp8 math is not supported on CUDA"))?;
        let y = self.gpu.alloc(name, dtype, n)?;
        if n > 0 {
            let f = self.gpu.function(&ELEMENTWISE, &format!("unary_{sfx}"))?;
            let (code, (p0, p1)) = (codes::unary(op), codes::unary_params(op));
            let (x, yp, n64) = (input.ptr, y.ptr(), n as i64);
            launch!(
                self.gpu,
                name,
                f,
                grid_for(n),
                &x,
                &yp,
                &n64,
                &code,
                &p0,
                &p1
            )?;
        }
        Ok(Self::wrap(self.cast_owned(name, y, out)?))
    }

    pub(crate) fn binary_kernel(
        &self,
        op: BinaryOp,
        lhs: View<'_>,
        rhs: View<'_>,
        out: DType,
    ) -> Result<Storage> {
        let name = "binary";
        let (sa, la) = self.view(name, lhs)?;
        let (sb, lb) = self.view(name, rhs)?;
        if sa.dtype != sb.dtype {
            return Err(Error::DTypeMismatch {
                op: name,
                lhs: sa.dtype,
                rhs: sb.dtype,
            });
        }
        if la.shape() != lb.shape() {
            return Err(Error::ShapeMismatch {
                op: name,
                lhs: la.shape().to_vec(),
                rhs: lb.shape().to_vec(),
            });
        }
        let shape = la.shape();
        let n = la.numel();
        // Bool runs as u8 (0/1), on contiguous copies.
        let (wa, wb);
        let (pa, sa_strides, pb, sb_strides, dtype): (u64, Vec<usize>, u64, Vec<usize>, DType) =
            if sa.dtype == DType::Bool {
                wa = self.cast_view(name, sa, la, DType::U8)?;
                wb = self.cast_view(name, sb, lb, DType::U8)?;
                let c = contiguous_strides(shape);
                (wa.ptr(), c.clone(), wb.ptr(), c, DType::U8)
            } else {
                (
                    sa.ptr_at(la.offset()),
                    la.strides().to_vec(),
                    sb.ptr_at(lb.offset()),
                    lb.strides().to_vec(),
                    sa.dtype,
                )
            };
        let sfx = suffix(dtype)
            .ok_or_else(|| unsupported(name, dtype, "fp8 math is not supported on CUDA"))?;
        let y = self.gpu.alloc(name, dtype, n)?;
        if n > 0 {
            let code = codes::binary(op);
            let (yp, n64) = (y.ptr(), n as i64);
            let contiguous = Layout::new(shape.to_vec(), sa_strides.clone(), 0).is_contiguous()
                && Layout::new(shape.to_vec(), sb_strides.clone(), 0).is_contiguous();
            if contiguous {
                let f = self
                    .gpu
                    .function(&ELEMENTWISE, &format!("binary_contig_{sfx}"))?;
                launch!(self.gpu, name, f, grid_for(n), &pa, &pb, &yp, &n64, &code)?;
            } else {
                let meta = StridedMeta::new(name, shape, &[&sa_strides, &sb_strides])?;
                let f = self
                    .gpu
                    .function(&ELEMENTWISE, &format!("binary_strided_{sfx}"))?;
                launch!(
                    self.gpu,
                    name,
                    f,
                    grid_for(n),
                    &pa,
                    &pb,
                    &yp,
                    &n64,
                    &code,
                    &meta
                )?;
            }
        }
        Ok(Self::wrap(self.cast_owned(name, y, out)?))
    }

    pub(crate) fn where_cond_kernel(
        &self,
        cond: View<'_>,
        on_true: View<'_>,
        on_false: View<'_>,
        out: DType,
    ) -> Result<Storage> {
        let name = "where";
        let (sc, lc) = self.view(name, cond)?;
        let (sa, la) = self.view(name, on_true)?;
        let (sb, lb) = self.view(name, on_false)?;
        if sa.dtype != sb.dtype {
            return Err(Error::DTypeMismatch {
                op: name,
                lhs: sa.dtype,
                rhs: sb.dtype,
            });
        }
        if la.shape() != lb.shape() || lc.shape() != la.shape() {
            return Err(Error::ShapeMismatch {
                op: name,
                lhs: lc.shape().to_vec(),
                rhs: la.shape().to_vec(),
            });
        }
        let shape = la.shape();
        let n = la.numel();
        // A non-bool condition is `!= 0`, as the reference reads it.
        let cond_bool;
        let (pc, c_strides) = if sc.dtype == DType::Bool {
            (sc.ptr_at(lc.offset()), lc.strides().to_vec())
        } else {
            cond_bool = self.cast_view(name, sc, lc, DType::Bool)?;
            (cond_bool.ptr(), contiguous_strides(shape))
        };
        let y = self.gpu.alloc(name, sa.dtype, n)?;
        if n > 0 {
            let meta = StridedMeta::new(name, shape, &[&c_strides, la.strides(), lb.strides()])?;
            let f = self
                .gpu
                .function(&COPY, &format!("where_{}", size_suffix(sa.dtype)))?;
            let (pa, pb, yp, n64) = (
                sa.ptr_at(la.offset()),
                sb.ptr_at(lb.offset()),
                y.ptr(),
                n as i64,
            );
            launch!(
                self.gpu,
                name,
                f,
                grid_for(n),
                &pc,
                &pa,
                &pb,
                &yp,
                &n64,
                &meta
            )?;
        }
        Ok(Self::wrap(self.cast_owned(name, y, out)?))
    }
}
