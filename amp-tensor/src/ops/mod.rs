//! Functional ops. Every op is named as PyTorch names it, passes through
//! [`crate::dispatch::dispatch()`], runs a backend kernel and records its backward pass.
//! Most are also methods on [`Tensor`].

mod attention;
mod conv;
mod elementwise;
mod matmul;
mod nn;
mod norm;
mod optim;
mod reduce;
mod shape;

pub use attention::*;
pub use conv::*;
pub use elementwise::*;
pub use matmul::*;
pub use nn::*;
pub use norm::*;
pub use optim::*;
pub use reduce::*;
pub use shape::*;

use crate::{Error, Result, Tensor};
use amp_dtype::DType;

/// Errors unless every tensor is on the first one's device.
pub(crate) fn same_device(op: &'static str, tensors: &[&Tensor]) -> Result<()> {
    if let Some(first) = tensors.first() {
        for t in &tensors[1..] {
            if !t.device().same_device(first.device()) {
                return Err(Error::DeviceMismatch {
                    op,
                    lhs: first.device().to_string(),
                    rhs: t.device().to_string(),
                });
            }
        }
    }
    Ok(())
}

/// Errors unless an output of `shape` and `dtype` can be allocated (checked
/// element count, at most the machine's memory).
pub(crate) fn output_fits(op: &'static str, shape: &[usize], dtype: DType) -> Result<()> {
    let numel = crate::memory::checked_numel(op, shape)?;
    crate::memory::check_alloc(op, numel, dtype)
}

/// Errors unless `t` has a floating dtype.
pub(crate) fn require_float(op: &'static str, t: &Tensor) -> Result<()> {
    if !t.dtype().is_float() {
        return Err(Error::UnsupportedDType {
            op,
            dtype: t.dtype(),
            reason: "needs a floating-point tensor".into(),
        });
    }
    Ok(())
}

/// Errors unless `t` is a tensor of i64 indices.
pub(crate) fn require_index(op: &'static str, t: &Tensor) -> Result<()> {
    if t.dtype() != DType::I64 {
        return Err(Error::UnsupportedDType {
            op,
            dtype: t.dtype(),
            reason: "indices must be i64".into(),
        });
    }
    Ok(())
}

/// Sums a broadcast gradient back down to `shape`.
pub(crate) fn unbroadcast(g: &Tensor, shape: &[usize]) -> Result<Tensor> {
    if g.dims() == shape {
        return Ok(g.clone());
    }
    let lead = g.rank() - shape.len();
    let mut dims: Vec<usize> = (0..lead).collect();
    for (i, &d) in shape.iter().enumerate() {
        if d == 1 && g.dims()[lead + i] != 1 {
            dims.push(lead + i);
        }
    }
    let summed = if dims.is_empty() {
        g.clone()
    } else {
        g.sum_dims(&dims, true)?
    };
    summed.reshape(shape)
}
