//! Batched matmul through cuBLAS `GemmStridedBatchedEx` with
//! `CUBLAS_COMPUTE_32F` (f32 stays f32: no TF32) or `CUBLAS_COMPUTE_64F` for
//! f64. cuBLAS is column-major: a row-major `C = A·B` is computed as the
//! column-major `Cᵀ = Bᵀ·Aᵀ`, i.e. with the operands swapped. Plain transposed
//! views are passed with a transpose flag; other strided views are copied.

use crate::backend::CudaBackend;
use crate::storage::CudaStorage;
use amp_dtype::DType;
use amp_tensor::backend::View;
use amp_tensor::{Error, Layout, Result};
use cudarc::cublas::sys::{
    cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType_t,
};
use std::ffi::c_void;

/// How cuBLAS reads one `rows × cols` matrix of a row-major view with strides
/// `(rs, cs)`: `Some((transpose, ld))` when no copy is needed.
fn gemm_operand(rows: usize, cols: usize, rs: usize, cs: usize) -> Option<(bool, usize)> {
    // Row-major storage (unit column stride): cuBLAS sees the transpose, no flag.
    if cs == 1 || cols == 1 {
        let ld = if rows == 1 { cols.max(1) } else { rs };
        if ld >= cols.max(1) && ld <= i32::MAX as usize {
            return Some((false, ld));
        }
    }
    // Column-major storage (a transposed view): cuBLAS sees the matrix itself; flag T.
    if rs == 1 || rows == 1 {
        let ld = if cols == 1 { rows.max(1) } else { cs };
        if ld >= rows.max(1) && ld <= i32::MAX as usize {
            return Some((true, ld));
        }
    }
    None
}

/// One operand ready for cuBLAS: address, transpose flag, leading dimension, batch stride.
struct GemmInput {
    ptr: u64,
    transpose: bool,
    ld: usize,
    batch_stride: usize,
    _copy: Option<CudaStorage>,
}

fn prepare(b: &CudaBackend, s: &CudaStorage, l: &Layout) -> Result<GemmInput> {
    let (batch, rows, cols) = (l.shape()[0], l.shape()[1], l.shape()[2]);
    let st = l.strides();
    if let Some((transpose, ld)) = gemm_operand(rows, cols, st[1], st[2]) {
        let batch_stride = if batch <= 1 { 0 } else { st[0] };
        return Ok(GemmInput {
            ptr: s.ptr_at(l.offset()),
            transpose,
            ld,
            batch_stride,
            _copy: None,
        });
    }
    let c = b.contiguous_copy("matmul", s, l)?;
    Ok(GemmInput {
        ptr: c.ptr(),
        transpose: false,
        ld: cols.max(1),
        batch_stride: rows * cols,
        _copy: Some(c),
    })
}

fn data_type(dtype: DType) -> Option<cudaDataType_t> {
    Some(match dtype {
        DType::F32 => cudaDataType_t::CUDA_R_32F,
        DType::F16 => cudaDataType_t::CUDA_R_16F,
        DType::BF16 => cudaDataType_t::CUDA_R_16BF,
        DType::F64 => cudaDataType_t::CUDA_R_64F,
        _ => return None,
    })
}

/// `[B, M, K] · [B, K, N] → [B, M, N]` in the inputs' dtype, then cast to `out`.
pub(crate) fn matmul(
    b: &CudaBackend,
    lhs: View<'_>,
    rhs: View<'_>,
    out: DType,
) -> Result<CudaStorage> {
    let name = "matmul";
    let (sa, la) = b.view(name, lhs)?;
    let (sb, lb) = b.view(name, rhs)?;
    if sa.dtype != sb.dtype {
        return Err(Error::DTypeMismatch {
            op: name,
            lhs: sa.dtype,
            rhs: sb.dtype,
        });
    }
    let dtype = sa.dtype;
    let data = data_type(dtype).ok_or_else(|| Error::UnsupportedDType {
        op: name,
        dtype,
        reason: "CUDA matmul supports f32, f16, bf16 and f64".into(),
    })?;
    if la.rank() != 3
        || lb.rank() != 3
        || la.shape()[0] != lb.shape()[0]
        || la.shape()[2] != lb.shape()[1]
    {
        return Err(Error::ShapeMismatch {
            op: name,
            lhs: la.shape().to_vec(),
            rhs: lb.shape().to_vec(),
        });
    }
    let (batch, m, k, n) = (la.shape()[0], la.shape()[1], la.shape()[2], lb.shape()[2]);
    let limit = i32::MAX as usize;
    if batch > limit || m > limit || n > limit || k > limit {
        return Err(Error::invalid(
            name,
            format!(
                "dimensions {:?} · {:?} exceed cuBLAS's 32-bit sizes",
                la.shape(),
                lb.shape()
            ),
        ));
    }
    let total = batch * m * n;
    if total == 0 {
        return b.cast_owned(name, b.gpu.alloc(name, dtype, 0)?, out);
    }
    if k == 0 {
        return b.cast_owned(name, b.gpu.zeros(name, dtype, total)?, out);
    }
    let a = prepare(b, sa, la)?;
    let bm = prepare(b, sb, lb)?;
    let c = b.gpu.alloc(name, dtype, total)?;
    let op = |t: bool| {
        if t {
            cublasOperation_t::CUBLAS_OP_T
        } else {
            cublasOperation_t::CUBLAS_OP_N
        }
    };
    let (alpha32, beta32) = (1.0f32, 0.0f32);
    let (alpha64, beta64) = (1.0f64, 0.0f64);
    let (alpha, beta, compute): (*const c_void, *const c_void, cublasComputeType_t) =
        if dtype == DType::F64 {
            (
                (&alpha64 as *const f64).cast(),
                (&beta64 as *const f64).cast(),
                cublasComputeType_t::CUBLAS_COMPUTE_64F,
            )
        } else {
            (
                (&alpha32 as *const f32).cast(),
                (&beta32 as *const f32).cast(),
                cublasComputeType_t::CUBLAS_COMPUTE_32F,
            )
        };
    b.gpu
        .ctx
        .bind_to_thread()
        .map_err(|e| b.gpu.driver_err(name, e))?;
    let blas = b.gpu.blas.lock().unwrap_or_else(|e| e.into_inner());
    // Column-major Cᵀ (n × m, ldc = n) = op(B') · op(A') with B' = rhs and A' = lhs as stored.
    // SAFETY: the pointers address live buffers of this GPU holding the
    // [batch, rows, cols] views described by (transpose, ld, batch stride), which
    // `prepare` checked cuBLAS can read; C has batch·m·n elements; alpha and beta
    // point at scalars of the compute type and outlive the (stream-ordered) call.
    let status = unsafe {
        cudarc::cublas::result::gemm_strided_batched_ex(
            *blas.handle(),
            op(bm.transpose),
            op(a.transpose),
            n as i32,
            m as i32,
            k as i32,
            alpha,
            bm.ptr as *const c_void,
            data,
            bm.ld as i32,
            bm.batch_stride as i64,
            a.ptr as *const c_void,
            data,
            a.ld as i32,
            a.batch_stride as i64,
            beta,
            c.ptr() as *mut c_void,
            data,
            n as i32,
            (m * n) as i64,
            batch as i32,
            compute,
            cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )
    };
    drop(blas);
    status.map_err(|e| {
        b.gpu.blas_err(
            format!("{name}: cublasGemmStridedBatchedEx({dtype}, {batch}×{m}×{k}×{n})"),
            e,
        )
    })?;
    b.cast_owned(name, c, out)
}

#[cfg(test)]
mod tests {
    use super::gemm_operand;

    #[test]
    fn operand_layouts() {
        // Row-major 3×4: no transpose, ld 4.
        assert_eq!(gemm_operand(3, 4, 4, 1), Some((false, 4)));
        // Transposed view of a row-major 4×3 (shape 3×4, strides (1, 3)): flag T, ld 3.
        assert_eq!(gemm_operand(3, 4, 1, 3), Some((true, 3)));
        // A narrowed row-major view keeps its row stride as ld.
        assert_eq!(gemm_operand(3, 2, 4, 1), Some((false, 4)));
        // Broadcast rows (stride 0) and odd strides need a copy.
        assert_eq!(gemm_operand(3, 4, 0, 1), None);
        assert_eq!(gemm_operand(3, 4, 8, 2), None);
        // Vectors: any stride on the unit dimension.
        assert_eq!(gemm_operand(1, 5, 999, 1), Some((false, 5)));
        assert_eq!(gemm_operand(5, 1, 1, 999), Some((false, 1)));
    }
}
