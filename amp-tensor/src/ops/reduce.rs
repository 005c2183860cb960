//! Reductions: sum, mean, max/argmax over dimensions (f32 accumulation or better).

use crate::backend::ReduceOp;
use crate::dispatch::dispatch;
use crate::{Error, Result, Tensor};
use amp_dtype::DType;

/// Normalises, sorts and dedups reduction dims, checking them against `t`.
fn reduction_dims(op: &'static str, t: &Tensor, dims: &[usize]) -> Result<Vec<usize>> {
    let mut d = dims.to_vec();
    for &x in &d {
        if x >= t.rank() {
            return Err(Error::IndexOutOfRange {
                op,
                index: x as i64,
                size: t.rank(),
                shape: t.shape(),
            });
        }
    }
    d.sort_unstable();
    d.dedup();
    Ok(d)
}

/// Shape after reducing `dims`, with or without keeping them as size 1.
fn reduced_shape(shape: &[usize], dims: &[usize], keepdim: bool) -> Vec<usize> {
    shape
        .iter()
        .enumerate()
        .filter_map(|(i, &s)| match (dims.contains(&i), keepdim) {
            (true, true) => Some(1),
            (true, false) => None,
            (false, _) => Some(s),
        })
        .collect()
}

pub(crate) fn reduce_kernel(
    op: ReduceOp,
    x: &Tensor,
    dims: &[usize],
    out: DType,
) -> Result<crate::backend::Storage> {
    x.with_view(|v| x.device().backend().reduce(op, v, dims, out))?
}

fn sum_or_mean(
    name: &'static str,
    x: &Tensor,
    dims: &[usize],
    keepdim: bool,
    mean: bool,
) -> Result<Tensor> {
    dispatch(name, &[x], |inputs| {
        let x = &inputs[0];
        let dims = reduction_dims(name, x, dims)?;
        let out_dtype = match (x.dtype().is_float(), mean) {
            (true, _) => x.dtype(),
            (false, false) => DType::I64,
            (false, true) => {
                return Err(Error::UnsupportedDType {
                    op: name,
                    dtype: x.dtype(),
                    reason: "mean needs a floating-point tensor".into(),
                })
            }
        };
        let op = if mean { ReduceOp::Mean } else { ReduceOp::Sum };
        let storage = reduce_kernel(op, x, &dims, out_dtype)?;
        let shape = reduced_shape(x.dims(), &dims, keepdim);
        let keep_shape = reduced_shape(x.dims(), &dims, true);
        let source = x.shape();
        let count: usize = dims.iter().map(|&d| source[d]).product();
        Ok(Tensor::from_op(
            storage,
            &shape,
            x.device(),
            name,
            &[x],
            move |g| {
                let g = g.reshape(&keep_shape)?.broadcast_to(&source)?;
                Ok(vec![Some(if mean {
                    g.mul_scalar(1.0 / count as f64)?
                } else {
                    g
                })])
            },
        ))
    })
}

impl Tensor {
    /// Sum over `dims` (f32 accumulation for low-precision inputs; output in the input's dtype).
    pub fn sum_dims(&self, dims: &[usize], keepdim: bool) -> Result<Tensor> {
        sum_or_mean("sum", self, dims, keepdim, false)
    }

    /// Sum over one (possibly negative) dimension.
    pub fn sum_dim(&self, dim: isize, keepdim: bool) -> Result<Tensor> {
        let d = self.layout().dim("sum", dim)?;
        self.sum_dims(&[d], keepdim)
    }

    /// Sum of all elements, as a tensor of shape `[]`.
    pub fn sum_all(&self) -> Result<Tensor> {
        self.sum_dims(&(0..self.rank()).collect::<Vec<_>>(), false)
    }

    /// Mean over `dims`.
    pub fn mean_dims(&self, dims: &[usize], keepdim: bool) -> Result<Tensor> {
        sum_or_mean("mean", self, dims, keepdim, true)
    }

    /// Mean over one (possibly negative) dimension.
    pub fn mean_dim(&self, dim: isize, keepdim: bool) -> Result<Tensor> {
        let d = self.layout().dim("mean", dim)?;
        self.mean_dims(&[d], keepdim)
    }

    /// Mean of all elements, as a tensor of shape `[]`.
    pub fn mean_all(&self) -> Result<Tensor> {
        self.mean_dims(&(0..self.rank()).collect::<Vec<_>>(), false)
    }

    /// Maximum over `dim` and the index of its first occurrence (`torch.max(x, dim)`).
    /// The gradient flows to that index.
    pub fn max_dim(&self, dim: isize, keepdim: bool) -> Result<(Tensor, Tensor)> {
        dispatch("max", &[self], |inputs| {
            let x = &inputs[0];
            let d = x.layout().dim("max", dim)?;
            if x.dims()[d] == 0 {
                return Err(Error::invalid(
                    "max",
                    format!(
                        "cannot reduce an empty dimension {d} of shape {:?}",
                        x.dims()
                    ),
                ));
            }
            let idx_storage = reduce_kernel(ReduceOp::ArgMax, x, &[d], DType::I64)?;
            let keep_shape = reduced_shape(x.dims(), &[d], true);
            let indices = Tensor::from_storage(idx_storage, &keep_shape, x.device());
            let values = x.detach().gather(d as isize, &indices)?;
            let source = x.shape();
            let idx_saved = indices.clone();
            let values = values.view_op_multi(values.layout().clone(), "max", &[x], move |g| {
                let g = g.reshape(&idx_saved.shape())?;
                Ok(vec![Some(super::nn::scatter_add_into(
                    &source, d, &idx_saved, &g,
                )?)])
            });
            if keepdim {
                Ok((values, indices))
            } else {
                Ok((values.squeeze(d as isize)?, indices.squeeze(d as isize)?))
            }
        })
    }

    /// Index of the first maximum over `dim` (i64).
    pub fn argmax(&self, dim: isize, keepdim: bool) -> Result<Tensor> {
        dispatch("argmax", &[self], |inputs| {
            let x = &inputs[0];
            let d = x.layout().dim("argmax", dim)?;
            if x.dims()[d] == 0 {
                return Err(Error::invalid(
                    "argmax",
                    format!(
                        "cannot reduce an empty dimension {d} of shape {:?}",
                        x.dims()
                    ),
                ));
            }
            let storage = reduce_kernel(ReduceOp::ArgMax, x, &[d], DType::I64)?;
            let t = Tensor::from_storage(storage, &reduced_shape(x.dims(), &[d], true), x.device());
            if keepdim {
                Ok(t)
            } else {
                t.squeeze(d as isize)
            }
        })
    }
}

/// Sum of all elements (`torch.sum(x)`).
pub fn sum(x: &Tensor) -> Result<Tensor> {
    x.sum_all()
}

/// Mean of all elements (`torch.mean(x)`).
pub fn mean(x: &Tensor) -> Result<Tensor> {
    x.mean_all()
}
