//! Row kernels: reductions over any dimensions, softmax and layer norm over
//! the last one (one block per row, or chunks of long rows split across
//! blocks, [`crate::split`]).

use crate::backend::CudaBackend;
use crate::codes;
use crate::device::{grid_for_rows, launch};
use crate::kernels::{float_suffix, suffix, unsupported, REDUCE};
use crate::split;
use crate::storage::CudaStorage;
use amp_dtype::DType;
use amp_tensor::backend::{ReduceOp, Storage, View};
use amp_tensor::{Error, Result};

impl CudaBackend {
    pub(crate) fn reduce_kernel(
        &self,
        op: ReduceOp,
        src: View<'_>,
        dims: &[usize],
        out: DType,
    ) -> Result<Storage> {
        let name = "reduce";
        let (s, l) = self.view(name, src)?;
        let shape = l.shape();
        let rank = shape.len();
        let mut sorted = dims.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != dims.len() || sorted.iter().any(|&d| d >= rank) {
            return Err(Error::invalid(
                name,
                format!("dims {dims:?} are not distinct dimensions of shape {shape:?}"),
            ));
        }
        // Kept dimensions first, reduced ones last: rows × n.
        let mut perm: Vec<usize> = (0..rank).filter(|d| !sorted.contains(d)).collect();
        let rows: usize = perm.iter().map(|&d| shape[d]).product();
        let n: usize = sorted.iter().map(|&d| shape[d]).product();
        perm.extend(&sorted);
        let permuted = l.permute(&perm);
        let dtype = match s.dtype {
            DType::U8 | DType::Bool => DType::I64,
            DType::F32 | DType::F16 | DType::BF16 | DType::F64 | DType::I64 => s.dtype,
            other => {
                return Err(unsupported(
                    name,
                    other,
                    "fp8 reductions are not supported on CUDA",
                ))
            }
        };
        let input_copy;
        let x = if dtype != s.dtype {
            input_copy = self.cast_view(name, s, &permuted, dtype)?;
            input_copy.ptr()
        } else if permuted.is_contiguous() {
            s.ptr_at(permuted.offset())
        } else {
            input_copy = self.contiguous_copy(name, s, &permuted)?;
            input_copy.ptr()
        };
        let sfx = suffix(dtype).unwrap_or("f32");
        let (rows64, n64) = (rows as i64, n as i64);
        let result = match op {
            ReduceOp::ArgMax | ReduceOp::ArgMin => {
                let y = self.gpu.alloc(name, DType::I64, rows)?;
                if rows > 0 {
                    let f = self.gpu.function(&REDUCE, &format!("argreduce_{sfx}"))?;
                    let (yp, greater) = (y.ptr(), i32::from(op == ReduceOp::ArgMax));
                    launch!(
                        self.gpu,
                        name,
                        f,
                        grid_for_rows(rows, n),
                        &x,
                        &yp,
                        &rows64,
                        &n64,
                        &greater
                    )?;
                }
                y
            }
            _ => {
                let code = codes::reduction(op);
                let parts = split::parts(rows, n);
                if parts > 1 && dtype.is_float() {
                    // Few long rows: each cut into chunks with blocks of their own.
                    let input = split::Rows { x, rows, n, parts };
                    let y = split::reduce(self, name, input, dtype, code)?;
                    return Ok(Self::wrap(self.cast_owned(name, y, out)?));
                }
                let y = self.gpu.alloc(name, dtype, rows)?;
                if rows > 0 {
                    let f = self.gpu.function(&REDUCE, &format!("reduce_{sfx}"))?;
                    let yp = y.ptr();
                    launch!(
                        self.gpu,
                        name,
                        f,
                        grid_for_rows(rows, n),
                        &x,
                        &yp,
                        &rows64,
                        &n64,
                        &code
                    )?;
                }
                y
            }
        };
        Ok(Self::wrap(self.cast_owned(name, result, out)?))
    }

    pub(crate) fn softmax_kernel(&self, src: View<'_>, log: bool, out: DType) -> Result<Storage> {
        let name = if log { "log_softmax" } else { "softmax" };
        let (s, l) = self.view(name, src)?;
        let sfx = float_suffix(name, s.dtype)?;
        let numel = l.numel();
        let n = l.shape().last().copied().unwrap_or(1);
        let rows = numel.checked_div(n).unwrap_or(0);
        let input = self.operand(name, s, l)?;
        let y = self.gpu.alloc(name, s.dtype, numel)?;
        let parts = split::parts(rows, n);
        if parts > 1 {
            let rows = split::Rows {
                x: input.ptr,
                rows,
                n,
                parts,
            };
            split::softmax(self, name, rows, &y, log)?;
        } else if rows > 0 {
            let f = self.gpu.function(&REDUCE, &format!("softmax_{sfx}"))?;
            let (yp, rows64, n64, log32) = (y.ptr(), rows as i64, n as i64, i32::from(log));
            launch!(
                self.gpu,
                name,
                f,
                grid_for_rows(rows, n),
                &input.ptr,
                &yp,
                &rows64,
                &n64,
                &log32
            )?;
        }
        Ok(Self::wrap(self.cast_owned(name, y, out)?))
    }

    pub(crate) fn layer_norm_kernel(
        &self,
        src: View<'_>,
        weight: Option<View<'_>>,
        bias: Option<View<'_>>,
        eps: f64,
        out: DType,
    ) -> Result<(Storage, Storage, Storage)> {
        let name = "layer_norm";
        let (s, l) = self.view(name, src)?;
        let sfx = float_suffix(name, s.dtype)?;
        let numel = l.numel();
        let n = l.shape().last().copied().unwrap_or(1);
        let rows = numel.checked_div(n).unwrap_or(0);
        let input = self.operand(name, s, l)?;
        let affine = |v: Option<View<'_>>| -> Result<Option<CudaStorage>> {
            let Some(v) = v else { return Ok(None) };
            let (ps, pl) = self.view(name, v)?;
            if pl.numel() != n {
                return Err(Error::ShapeMismatch {
                    op: name,
                    lhs: l.shape().to_vec(),
                    rhs: pl.shape().to_vec(),
                });
            }
            Ok(Some(self.cast_view(name, ps, pl, s.dtype)?))
        };
        let w = affine(weight)?;
        let b = affine(bias)?;
        let y = self.gpu.alloc(name, s.dtype, numel)?;
        let mean = self.gpu.alloc(name, DType::F32, rows)?;
        let rstd = self.gpu.alloc(name, DType::F32, rows)?;
        let wp = w.as_ref().map_or(0u64, |w| w.ptr());
        let bp = b.as_ref().map_or(0u64, |b| b.ptr());
        let parts = split::parts(rows, n);
        if parts > 1 {
            let out_buffers = split::LayerNormOut {
                y: &y,
                mean: &mean,
                rstd: &rstd,
            };
            let rows = split::Rows {
                x: input.ptr,
                rows,
                n,
                parts,
            };
            split::layer_norm(self, name, rows, (wp, bp), out_buffers, eps)?;
        } else if rows > 0 {
            let f = self.gpu.function(&REDUCE, &format!("layer_norm_{sfx}"))?;
            let (yp, mp, rp, rows64, n64) =
                (y.ptr(), mean.ptr(), rstd.ptr(), rows as i64, n as i64);
            launch!(
                self.gpu,
                name,
                f,
                grid_for_rows(rows, n),
                &input.ptr,
                &wp,
                &bp,
                &yp,
                &mp,
                &rp,
                &rows64,
                &n64,
                &eps
            )?;
        }
        Ok((
            Self::wrap(self.cast_owned(name, y, out)?),
            Self::wrap(mean),
            Self::wrap(rstd),
        ))
    }
}
