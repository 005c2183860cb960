//! Shape ops: views that share storage (transpose, permute, reshape, narrow,
//! broadcast, unsqueeze, squeeze) and copies (cat, stack).

use super::same_device;
use crate::dispatch::dispatch;
use crate::{Error, Layout, Result, Tensor};
use amp_dtype::DType;

impl Tensor {
    fn dim_index(&self, op: &'static str, dim: isize) -> Result<usize> {
        self.layout().dim(op, dim)
    }

    /// Swaps two dimensions (a view).
    pub fn transpose(&self, a: isize, b: isize) -> Result<Tensor> {
        let (a, b) = (
            self.dim_index("transpose", a)?,
            self.dim_index("transpose", b)?,
        );
        Ok(
            self.view_op(self.layout().transpose(a, b), "transpose", move |g| {
                Ok(vec![Some(g.transpose(a as isize, b as isize)?)])
            }),
        )
    }

    /// Transpose of a 2-D tensor (a view).
    pub fn t(&self) -> Result<Tensor> {
        if self.rank() != 2 {
            return Err(Error::invalid(
                "t",
                format!("expects a 2-D tensor, got shape {:?}", self.dims()),
            ));
        }
        self.transpose(0, 1)
    }

    /// Reorders dimensions (a view).
    pub fn permute(&self, perm: &[usize]) -> Result<Tensor> {
        let mut sorted = perm.to_vec();
        sorted.sort_unstable();
        if sorted != (0..self.rank()).collect::<Vec<_>>() {
            return Err(Error::invalid(
                "permute",
                format!(
                    "{perm:?} is not a permutation of the dims of shape {:?}",
                    self.dims()
                ),
            ));
        }
        let mut inverse = vec![0; perm.len()];
        for (i, &p) in perm.iter().enumerate() {
            inverse[p] = i;
        }
        Ok(
            self.view_op(self.layout().permute(perm), "permute", move |g| {
                Ok(vec![Some(g.permute(&inverse)?)])
            }),
        )
    }

    /// The same elements with another shape: a view when the layout allows it,
    /// else a contiguous copy.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        let numel = crate::memory::checked_numel("reshape", shape)?;
        if numel != self.numel() {
            return Err(Error::ShapeMismatch {
                op: "reshape",
                lhs: self.shape(),
                rhs: shape.to_vec(),
            });
        }
        if shape == self.dims() {
            return Ok(self.clone());
        }
        let source = self.shape();
        let layout = if numel == 0 {
            // No element is ever read through it: any strides do.
            Some(Layout::new(
                shape.to_vec(),
                crate::layout::contiguous_strides(shape),
                self.layout().offset(),
            ))
        } else {
            self.layout().reshape(shape)
        };
        match layout {
            Some(layout) => Ok(self.view_op(layout, "reshape", move |g| {
                Ok(vec![Some(g.reshape(&source)?)])
            })),
            None => self.contiguous()?.reshape(shape),
        }
    }

    /// Collapses all dimensions into one.
    pub fn flatten_all(&self) -> Result<Tensor> {
        self.reshape(&[self.numel()])
    }

    /// Elements `start..start + len` of dimension `dim` (a view).
    pub fn narrow(&self, dim: isize, start: usize, len: usize) -> Result<Tensor> {
        let d = self.dim_index("narrow", dim)?;
        let size = self.dims()[d];
        let end = start.checked_add(len).filter(|&e| e <= size);
        if end.is_none() {
            return Err(Error::IndexOutOfRange {
                op: "narrow",
                index: i64::try_from(start.saturating_add(len)).unwrap_or(i64::MAX),
                size,
                shape: self.shape(),
            });
        }
        let source = self.shape();
        Ok(
            self.view_op(self.layout().narrow(d, start, len), "narrow", move |g| {
                // Pad the gradient back with zeros around the slice.
                let mut parts = Vec::new();
                let zeros = |n: usize| {
                    let mut s = source.clone();
                    s[d] = n;
                    Tensor::zeros(&s, g.dtype(), g.device())
                };
                if start > 0 {
                    parts.push(zeros(start)?);
                }
                parts.push(g.clone());
                if start + len < source[d] {
                    parts.push(zeros(source[d] - start - len)?);
                }
                Ok(vec![Some(cat(
                    &parts.iter().collect::<Vec<_>>(),
                    d as isize,
                )?)])
            }),
        )
    }

    /// Broadcasts to `shape` (a view with zero strides).
    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Tensor> {
        if shape == self.dims() {
            return Ok(self.clone());
        }
        let layout = self.layout().broadcast_to("broadcast_to", shape)?;
        let source = self.shape();
        Ok(self.view_op(layout, "broadcast_to", move |g| {
            Ok(vec![Some(super::unbroadcast(g, &source)?)])
        }))
    }

    /// Inserts a dimension of size 1 (a view). `dim` may be negative (counted from rank + 1).
    pub fn unsqueeze(&self, dim: isize) -> Result<Tensor> {
        let rank = self.rank() as isize + 1;
        let d = if dim < 0 { dim + rank } else { dim };
        if d < 0 || d >= rank {
            return Err(Error::IndexOutOfRange {
                op: "unsqueeze",
                index: dim as i64,
                size: rank as usize,
                shape: self.shape(),
            });
        }
        let d = d as usize;
        Ok(
            self.view_op(self.layout().unsqueeze(d), "unsqueeze", move |g| {
                Ok(vec![Some(g.squeeze(d as isize)?)])
            }),
        )
    }

    /// Removes a dimension of size 1 (a view); an `Err` if its size is not 1.
    pub fn squeeze(&self, dim: isize) -> Result<Tensor> {
        let d = self.dim_index("squeeze", dim)?;
        if self.dims()[d] != 1 {
            return Err(Error::invalid(
                "squeeze",
                format!(
                    "dimension {d} of shape {:?} has size {}, not 1",
                    self.dims(),
                    self.dims()[d]
                ),
            ));
        }
        Ok(self.view_op(self.layout().squeeze(d), "squeeze", move |g| {
            Ok(vec![Some(g.unsqueeze(d as isize)?)])
        }))
    }
}

/// Concatenates tensors along `dim` (`torch.cat`); dtypes are promoted.
pub fn cat(tensors: &[&Tensor], dim: isize) -> Result<Tensor> {
    dispatch("cat", tensors, |inputs| {
        let first = inputs
            .first()
            .ok_or_else(|| Error::invalid("cat", "expects at least one tensor"))?;
        same_device("cat", &inputs.iter().collect::<Vec<_>>())?;
        let d = first.layout().dim("cat", dim)?;
        let mut dtype = first.dtype();
        for t in &inputs[1..] {
            dtype = DType::promote(dtype, t.dtype())?;
            let ok = t.rank() == first.rank()
                && t.dims()
                    .iter()
                    .zip(first.dims())
                    .enumerate()
                    .all(|(i, (a, b))| i == d || a == b);
            if !ok {
                return Err(Error::ShapeMismatch {
                    op: "cat",
                    lhs: first.shape(),
                    rhs: t.shape(),
                });
            }
        }
        let cast: Vec<Tensor> = inputs
            .iter()
            .map(|t| t.to_dtype(dtype))
            .collect::<Result<_>>()?;
        let mut shape = first.shape();
        shape[d] = cast
            .iter()
            .try_fold(0usize, |acc, t| acc.checked_add(t.dims()[d]))
            .ok_or_else(|| Error::ShapeOverflow {
                op: "cat",
                shape: first.shape(),
            })?;
        super::output_fits("cat", &shape, dtype)?;
        let guards = cast
            .iter()
            .map(|t| t.storage())
            .collect::<Result<Vec<_>>>()?;
        let views: Vec<_> = guards
            .iter()
            .zip(&cast)
            .map(|(g, t)| (&**g, t.layout()))
            .collect();
        let storage = first.device().backend().cat(&views, d, dtype)?;
        drop(guards);
        let sizes: Vec<usize> = cast.iter().map(|t| t.dims()[d]).collect();
        let refs: Vec<&Tensor> = cast.iter().collect();
        Ok(Tensor::from_op(
            storage,
            &shape,
            first.device(),
            "cat",
            &refs,
            move |g| {
                let mut start = 0;
                sizes
                    .iter()
                    .map(|&n| {
                        let part = g.narrow(d as isize, start, n);
                        start += n;
                        part.map(Some)
                    })
                    .collect()
            },
        ))
    })
}

/// Stacks tensors of one shape along a new dimension `dim` (`torch.stack`).
pub fn stack(tensors: &[&Tensor], dim: isize) -> Result<Tensor> {
    dispatch("stack", tensors, |inputs| {
        let first = inputs
            .first()
            .ok_or_else(|| Error::invalid("stack", "expects at least one tensor"))?;
        for t in &inputs[1..] {
            if t.dims() != first.dims() {
                return Err(Error::ShapeMismatch {
                    op: "stack",
                    lhs: first.shape(),
                    rhs: t.shape(),
                });
            }
        }
        let unsqueezed: Vec<Tensor> = inputs
            .iter()
            .map(|t| t.unsqueeze(dim))
            .collect::<Result<_>>()?;
        cat(&unsqueezed.iter().collect::<Vec<_>>(), dim)
    })
}
