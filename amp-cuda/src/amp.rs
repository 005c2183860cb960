//! Mixed-precision kernels beyond the `Backend` trait: the fused multi-tensor
//! non-finite check and unscale (also in a form that only sets a device-side
//! found-inf flag), and a fused AdamW step that skips itself on that flag
//! without a host round trip.

use crate::backend::CudaBackend;
use crate::device::{grid_for, launch};
use crate::kernels::AMP;
use amp_dtype::DType;
use amp_tensor::backend::NonFiniteCount;
use amp_tensor::{Error, Layout, Result, Storage, Tensor};
use cudarc::driver::LaunchConfig;

/// Elements per block of the fused unscale.
const CHUNK: usize = 32 * 1024;

fn dtype_code(op: &'static str, dtype: DType) -> Result<i64> {
    Ok(match dtype {
        DType::F32 => 0,
        DType::F16 => 1,
        DType::BF16 => 2,
        DType::F64 => 3,
        other => {
            return Err(Error::UnsupportedDType {
                op,
                dtype: other,
                reason: "gradients must be f32, f16, bf16 or f64".into(),
            })
        }
    })
}

/// The fused unscale over CUDA buffers (see `Backend::non_finite_check_and_unscale`).
/// `found_inf`, when given, is the address of an f32 that is set to 1 if any
/// element was not finite. Counts are read back only when `read_counts`.
pub(crate) fn unscale_storages(
    backend: &CudaBackend,
    buffers: &mut [(&mut Storage, &Layout)],
    inv_scale: f32,
    found_inf: Option<u64>,
    read_counts: bool,
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
        return Ok(vec![
            NonFiniteCount::default();
            if read_counts { table.len() } else { 0 }
        ]);
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
    let (tp, cp, np, kp, fp) = (
        table_dev.ptr(),
        chunks_dev.ptr(),
        chunks.len() as i64,
        counts.ptr(),
        found_inf.unwrap_or(0),
    );
    let cfg = LaunchConfig {
        grid_dim: (chunks.len().min(65535) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    launch!(gpu, op, f, cfg, &tp, &cp, &np, &kp, &fp, &inv_scale)?;
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
    if !read_counts {
        return Ok(Vec::new());
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

/// The CUDA backend a tensor lives on, or an error naming `op`.
fn backend_of(op: &'static str, t: &Tensor) -> Result<CudaBackend> {
    if t.device().backend_name() != "cuda" {
        return Err(Error::DeviceMismatch {
            op,
            lhs: "cuda".into(),
            rhs: t.device().to_string(),
        });
    }
    crate::cached_backend(t.device().ordinal()).ok_or_else(|| {
        Error::invalid(
            op,
            format!("{} was not opened by amp_cuda::device", t.device()),
        )
    })
}

fn check_distinct(op: &'static str, tensors: &[&Tensor]) -> Result<()> {
    for (i, a) in tensors.iter().enumerate() {
        for b in &tensors[i + 1..] {
            if a.shares_storage_with(b) {
                return Err(Error::invalid(
                    op,
                    "every tensor must have its own storage (two share one)",
                ));
            }
            if !a.device().same_device(b.device()) {
                return Err(Error::DeviceMismatch {
                    op,
                    lhs: a.device().to_string(),
                    rhs: b.device().to_string(),
                });
            }
        }
    }
    Ok(())
}

/// Unscales gradients in place (`g *= inv_scale`, in f32 for f32 and narrower)
/// in one fused pass and sets the one-element f32 `found_inf` to 1 if any
/// element was inf or NaN (it is never cleared here). Nothing is read back to
/// the host, so a following [`adamw_step`] can skip on the flag without a sync.
pub fn unscale_grads_on_device(
    grads: &[&Tensor],
    inv_scale: f32,
    found_inf: &Tensor,
) -> Result<()> {
    let op = "unscale_grads_on_device";
    let backend = backend_of(op, found_inf)?;
    let mut all: Vec<&Tensor> = grads.to_vec();
    all.push(found_inf);
    check_distinct(op, &all)?;
    if found_inf.dtype() != DType::F32 || found_inf.numel() != 1 {
        return Err(Error::invalid(
            op,
            format!("found_inf must be one f32 element, got {:?}", found_inf),
        ));
    }
    let flag = {
        let s = found_inf.storage();
        backend.storage(op, &s)?.ptr_at(found_inf.layout().offset())
    };
    let mut guards: Vec<_> = grads.iter().map(|g| g.storage_mut()).collect();
    let mut buffers: Vec<(&mut Storage, &Layout)> = guards
        .iter_mut()
        .zip(grads)
        .map(|(s, g)| (&mut **s, g.layout()))
        .collect();
    unscale_storages(&backend, &mut buffers, inv_scale, Some(flag), false).map(|_| ())
}

/// Hyper-parameters of [`adamw_step`] (PyTorch's `torch.optim.AdamW` defaults via `Default`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWHyper {
    /// Learning rate.
    pub lr: f32,
    /// Decay of the first moment.
    pub beta1: f32,
    /// Decay of the second moment.
    pub beta2: f32,
    /// Added to the denominator.
    pub eps: f32,
    /// Decoupled weight decay.
    pub weight_decay: f32,
    /// Multiplies each gradient before use (an inverse loss scale to fuse the unscale; 1 otherwise).
    pub grad_scale: f32,
    /// Maximise the objective instead of minimising it.
    pub maximize: bool,
}

impl Default for AdamWHyper {
    fn default() -> Self {
        AdamWHyper {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-2,
            grad_scale: 1.0,
            maximize: false,
        }
    }
}

/// One fused AdamW step on the GPU, in place, as `torch.optim.AdamW` computes it:
/// `p ← p·(1 − lr·wd)`, `m ← β₁m + (1 − β₁)g`, `v ← β₂v + (1 − β₂)g²`,
/// `p ← p − lr/(1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + ε)` with `t = step + 1`, then
/// `step ← t`. `param`, `exp_avg`, `exp_avg_sq` are f32 (master weights and
/// moments), `grad` f32, f16 or bf16, `step` a one-element f32 counter, all
/// contiguous with one element count. When `found_inf` (one f32) holds a
/// non-zero value on the device the whole step — including `step` — is
/// skipped by the kernels themselves, without a host round trip.
pub fn adamw_step(
    param: &Tensor,
    grad: &Tensor,
    exp_avg: &Tensor,
    exp_avg_sq: &Tensor,
    step: &Tensor,
    found_inf: Option<&Tensor>,
    hyper: &AdamWHyper,
) -> Result<()> {
    let op = "adamw_step";
    let backend = backend_of(op, param)?;
    let mut all = vec![param, grad, exp_avg, exp_avg_sq, step];
    all.extend(found_inf);
    check_distinct(op, &all)?;
    for (what, t) in [
        ("param", param),
        ("exp_avg", exp_avg),
        ("exp_avg_sq", exp_avg_sq),
        ("step", step),
    ] {
        if t.dtype() != DType::F32 {
            return Err(Error::UnsupportedDType {
                op,
                dtype: t.dtype(),
                reason: format!("{what} must be f32"),
            });
        }
    }
    let gsfx = match grad.dtype() {
        DType::F32 => "f32",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        other => {
            return Err(Error::UnsupportedDType {
                op,
                dtype: other,
                reason: "grad must be f32, f16 or bf16".into(),
            })
        }
    };
    let n = param.numel();
    for t in [grad, exp_avg, exp_avg_sq] {
        if t.numel() != n {
            return Err(Error::ShapeMismatch {
                op,
                lhs: param.shape(),
                rhs: t.shape(),
            });
        }
    }
    if step.numel() != 1 || found_inf.is_some_and(|f| f.numel() != 1 || f.dtype() != DType::F32) {
        return Err(Error::invalid(
            op,
            "step and found_inf must be one-element f32 tensors",
        ));
    }
    for t in &all {
        if !t.is_contiguous() {
            return Err(Error::invalid(op, format!("{t:?} must be contiguous")));
        }
    }
    let ptr = |t: &Tensor| -> Result<u64> {
        let s = t.storage();
        Ok(backend.storage(op, &s)?.ptr_at(t.layout().offset()))
    };
    let (pp, gp, mp, vp, sp) = (
        ptr(param)?,
        ptr(grad)?,
        ptr(exp_avg)?,
        ptr(exp_avg_sq)?,
        ptr(step)?,
    );
    let fp = match found_inf {
        Some(f) => ptr(f)?,
        None => 0,
    };
    // Hold the write locks of the updated tensors while the kernels are queued.
    let _locks = (
        param.storage_mut(),
        exp_avg.storage_mut(),
        exp_avg_sq.storage_mut(),
        step.storage_mut(),
    );
    let gpu = &backend.gpu;
    let f = gpu.function(&AMP, &format!("adamw_step_{gsfx}"))?;
    let n64 = n as i64;
    let maximize = i32::from(hyper.maximize);
    let h = hyper;
    launch!(
        gpu,
        op,
        f,
        grid_for(n),
        &pp,
        &gp,
        &mp,
        &vp,
        &n64,
        &sp,
        &fp,
        &h.lr,
        &h.beta1,
        &h.beta2,
        &h.eps,
        &h.weight_decay,
        &h.grad_scale,
        &maximize
    )?;
    let advance = gpu.function(&AMP, "adamw_advance_step")?;
    let one = LaunchConfig {
        grid_dim: (1, 1, 1),
        block_dim: (1, 1, 1),
        shared_mem_bytes: 0,
    };
    launch!(gpu, op, advance, one, &sp, &fp)
}
