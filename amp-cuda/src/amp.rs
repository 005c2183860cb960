//! The fused mixed-precision kernels behind two `Backend` methods: the
//! multi-tensor non-finite check and unscale, and the AdamW update.

use crate::backend::CudaBackend;
use crate::device::{grid_for, launch};
use crate::kernels::AMP;
use amp_dtype::DType;
use amp_tensor::backend::Storage;
use amp_tensor::backend::{AdamWStep, NonFiniteCount, View};
use amp_tensor::{Error, Layout, Result};
use cudarc::driver::LaunchConfig;

/// Elements per block of the fused unscale.
const CHUNK: usize = 32 * 1024;

fn dtype_code(op: &'static str, dtype: DType) -> Result<i64> {
    match crate::codes::unscale_dtype(dtype) {
        code if code >= 0 => Ok(code as i64),
        _ => Err(Error::UnsupportedDType {
            op,
            dtype,
            reason: "gradients must be f32, f16, bf16 or f64".into(),
        }),
    }
}

/// The fused unscale over CUDA buffers (see `Backend::non_finite_check_and_unscale`).
pub(crate) fn unscale_storages(
    backend: &CudaBackend,
    buffers: &mut [(&mut Storage, &Layout)],
    inv_scale: f32,
) -> Result<Vec<NonFiniteCount>> {
    let op = "non_finite_check_and_unscale";
    let gpu = &backend.gpu;
    // (address, len, dtype code) per buffer; strided views run on a contiguous copy written back after.
    let mut table: Vec<(u64, usize, i64)> = Vec::with_capacity(buffers.len());
    let mut write_back = Vec::new();
    for (storage, layout) in buffers.iter_mut() {
        let s = backend.storage_mut(op, storage)?;
        let code = dtype_code(op, s.dtype)?;
        if layout.storage_extent() > s.len {
            return Err(Error::invalid(
                op,
                format!(
                    "view {layout:?} reaches past a buffer of {} elements",
                    s.len
                ),
            ));
        }
        if layout.is_contiguous() {
            table.push((s.ptr_at(layout.offset()), layout.numel(), code));
        } else {
            let copy = backend.contiguous_copy(op, s, layout)?;
            table.push((copy.ptr(), layout.numel(), code));
            write_back.push((copy, s.ptr_at(layout.offset()), (*layout).clone(), s.dtype));
        }
    }
    let mut chunks: Vec<[i64; 3]> = Vec::new();
    for (b, &(_, len, _)) in table.iter().enumerate() {
        let mut start = 0;
        while start < len {
            let part = CHUNK.min(len - start);
            chunks.push([b as i64, start as i64, part as i64]);
            start += part;
        }
    }
    if chunks.is_empty() {
        return Ok(vec![NonFiniteCount::default(); table.len()]);
    }
    let table_bytes: Vec<u8> = table
        .iter()
        .flat_map(|&(ptr, len, code)| {
            [
                ptr.to_ne_bytes(),
                (len as i64).to_ne_bytes(),
                code.to_ne_bytes(),
            ]
        })
        .flatten()
        .collect();
    let chunk_bytes: Vec<u8> = chunks
        .iter()
        .flatten()
        .flat_map(|v| v.to_ne_bytes())
        .collect();
    let table_dev = gpu.upload(op, DType::U8, table_bytes.len(), &table_bytes)?;
    let chunks_dev = gpu.upload(op, DType::U8, chunk_bytes.len(), &chunk_bytes)?;
    let counts = gpu.zeros(op, DType::I64, 2 * table.len())?;
    let f = gpu.function(&AMP, "non_finite_check_and_unscale")?;
    let (tp, cp, np, kp) = (
        table_dev.ptr(),
        chunks_dev.ptr(),
        chunks.len() as i64,
        counts.ptr(),
    );
    let cfg = LaunchConfig {
        grid_dim: (chunks.len().min(65535) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    launch!(gpu, op, f, cfg, &tp, &cp, &np, &kp, &inv_scale)?;
    for (copy, dst, layout, dtype) in &write_back {
        let src_strides = amp_tensor::layout::contiguous_strides(layout.shape());
        backend.copy_strided(
            op,
            *dtype,
            layout.shape(),
            copy.ptr(),
            &src_strides,
            *dst,
            layout.strides(),
        )?;
    }
    let bytes = gpu.download(op, &counts, 0, counts.len)?;
    let values: Vec<u64> = bytes
        .chunks_exact(8)
        .map(|c| {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            u64::from_ne_bytes(w)
        })
        .collect();
    Ok(values
        .chunks_exact(2)
        .map(|p| NonFiniteCount {
            inf: p[0] as usize,
            nan: p[1] as usize,
        })
        .collect())
}

/// One fused AdamW update in place on the GPU (`Backend::adamw_step`): a
/// parameter of f32, f16 or bf16 and a gradient of any of them (a strided
/// gradient is made contiguous first), f32 moments; `None` for dtypes the
/// kernel does not cover (f64), which take the composed path.
pub(crate) fn adamw(
    backend: &CudaBackend,
    param: &mut Storage,
    grad: View<'_>,
    exp_avg: &mut Storage,
    exp_avg_sq: &mut Storage,
    hyper: &AdamWStep,
) -> Result<Option<()>> {
    let op = "adamw_step";
    let short = |d: DType| match d {
        DType::F32 => Some("f32"),
        DType::F16 => Some("f16"),
        DType::BF16 => Some("bf16"),
        _ => None,
    };
    let (gs, gl) = backend.view(op, grad)?;
    let (Some(p_sfx), Some(g_sfx)) = (short(param.dtype()), short(gs.dtype)) else {
        return Ok(None);
    };
    let n = param.len();
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
    let g = backend.operand(op, gs, gl)?;
    let pp = backend.storage_mut(op, param)?.ptr();
    let mp = backend.storage_mut(op, exp_avg)?.ptr();
    let vp = backend.storage_mut(op, exp_avg_sq)?.ptr();
    for (what, s) in [("exp_avg", &*exp_avg), ("exp_avg_sq", &*exp_avg_sq)] {
        if s.dtype() != DType::F32 {
            return Err(Error::UnsupportedDType {
                op,
                dtype: s.dtype(),
                reason: format!("{what} must be f32"),
            });
        }
    }
    if n == 0 {
        return Ok(Some(()));
    }
    let c = hyper.coefficients();
    let gpu = &backend.gpu;
    let f = gpu.function(&AMP, &format!("adamw_{p_sfx}_{g_sfx}"))?;
    let n64 = n as i64;
    launch!(
        gpu,
        op,
        f,
        grid_for(n),
        &pp,
        &g.ptr,
        &mp,
        &vp,
        &n64,
        &c.decay,
        &c.one_minus_beta1,
        &c.beta2,
        &c.one_minus_beta2,
        &c.bias_correction2_sqrt,
        &c.eps,
        &c.step_size
    )?;
    Ok(Some(()))
}
