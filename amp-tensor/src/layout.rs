//! Shapes, strides and offsets: how a tensor's elements sit in its storage.

use crate::{Error, Result};

/// The shape, element strides and starting offset of a view into storage.
///
/// Strides are in elements; a stride of 0 repeats an element (broadcasting).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Layout {
    shape: Vec<usize>,
    strides: Vec<usize>,
    offset: usize,
}

/// Row-major strides of a contiguous tensor of `shape`.
pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![0; shape.len()];
    let mut acc = 1usize;
    for (s, &d) in strides.iter_mut().zip(shape).rev() {
        *s = acc;
        // Saturating: past a zero-sized dimension the strides are never used,
        // and a shape whose element count fits never saturates.
        acc = acc.saturating_mul(d.max(1));
    }
    strides
}

impl Layout {
    /// A contiguous row-major layout starting at offset 0.
    pub fn contiguous(shape: &[usize]) -> Self {
        Layout {
            shape: shape.to_vec(),
            strides: contiguous_strides(shape),
            offset: 0,
        }
    }

    /// A layout from its parts (no validation against a storage size).
    pub fn new(shape: Vec<usize>, strides: Vec<usize>, offset: usize) -> Self {
        debug_assert_eq!(shape.len(), strides.len());
        Layout {
            shape,
            strides,
            offset,
        }
    }

    /// The dimensions.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The element strides.
    pub fn strides(&self) -> &[usize] {
        &self.strides
    }

    /// The element offset of the first element.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// True if elements are stored row-major without gaps (offset may be non-zero).
    pub fn is_contiguous(&self) -> bool {
        let mut acc = 1;
        for (&d, &s) in self.shape.iter().zip(&self.strides).rev() {
            if d != 1 && s != acc {
                return false;
            }
            acc *= d;
        }
        true
    }

    /// The storage range `offset..offset + numel` when contiguous.
    pub fn contiguous_range(&self) -> Option<std::ops::Range<usize>> {
        self.is_contiguous()
            .then(|| self.offset..self.offset + self.numel())
    }

    /// One past the largest storage index this view touches (0 for empty views).
    pub fn storage_extent(&self) -> usize {
        if self.numel() == 0 {
            return self.offset;
        }
        self.offset
            + self
                .shape
                .iter()
                .zip(&self.strides)
                .map(|(&d, &s)| (d - 1) * s)
                .sum::<usize>()
            + 1
    }

    /// Storage indices of every element, in row-major logical order.
    pub fn indices(&self) -> StridedIndex<'_> {
        StridedIndex::new(self)
    }

    /// Normalises a possibly negative dimension index.
    pub fn dim(&self, op: &'static str, dim: isize) -> Result<usize> {
        let rank = self.rank() as isize;
        let d = if dim < 0 { dim + rank } else { dim };
        if d < 0 || d >= rank.max(1) || (rank == 0) {
            return Err(Error::IndexOutOfRange {
                op,
                index: dim as i64,
                size: self.rank(),
                shape: self.shape.clone(),
            });
        }
        Ok(d as usize)
    }

    /// Swaps two dimensions (a view).
    pub fn transpose(&self, a: usize, b: usize) -> Layout {
        let mut l = self.clone();
        l.shape.swap(a, b);
        l.strides.swap(a, b);
        l
    }

    /// Reorders dimensions (a view); `perm` must be a permutation (checked by the caller).
    pub fn permute(&self, perm: &[usize]) -> Layout {
        Layout {
            shape: perm.iter().map(|&p| self.shape[p]).collect(),
            strides: perm.iter().map(|&p| self.strides[p]).collect(),
            offset: self.offset,
        }
    }

    /// Restricts dimension `dim` to `start..start + len` (a view).
    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Layout {
        let mut l = self.clone();
        l.offset += start * self.strides[dim];
        l.shape[dim] = len;
        l
    }

    /// A view with `shape` if the current strides allow it without copying.
    pub fn reshape(&self, shape: &[usize]) -> Option<Layout> {
        if self.is_contiguous() {
            return Some(Layout {
                shape: shape.to_vec(),
                strides: contiguous_strides(shape),
                offset: self.offset,
            });
        }
        // Non-contiguous: allowed only when dimensions of size 1 are added or removed.
        let old: Vec<(usize, usize)> = self
            .shape
            .iter()
            .zip(&self.strides)
            .filter(|(&d, _)| d != 1)
            .map(|(&d, &s)| (d, s))
            .collect();
        let new_non_one: Vec<usize> = shape.iter().copied().filter(|&d| d != 1).collect();
        if old.iter().map(|p| p.0).collect::<Vec<_>>() != new_non_one {
            return None;
        }
        let mut it = old.iter();
        let strides = shape
            .iter()
            .map(|&d| {
                if d == 1 {
                    1
                } else {
                    it.next().map_or(1, |p| p.1)
                }
            })
            .collect();
        Some(Layout {
            shape: shape.to_vec(),
            strides,
            offset: self.offset,
        })
    }

    /// Broadcasts to `shape` (numpy rules) as a view with zero strides.
    pub fn broadcast_to(&self, op: &'static str, shape: &[usize]) -> Result<Layout> {
        crate::memory::checked_numel(op, shape)?;
        if shape.len() < self.rank() {
            return Err(Error::ShapeMismatch {
                op,
                lhs: self.shape.clone(),
                rhs: shape.to_vec(),
            });
        }
        let lead = shape.len() - self.rank();
        let mut strides = vec![0; shape.len()];
        for (i, &d) in shape.iter().enumerate().skip(lead) {
            let (sd, ss) = (self.shape[i - lead], self.strides[i - lead]);
            strides[i] = if sd == d {
                ss
            } else if sd == 1 {
                0
            } else {
                return Err(Error::ShapeMismatch {
                    op,
                    lhs: self.shape.clone(),
                    rhs: shape.to_vec(),
                });
            };
        }
        Ok(Layout {
            shape: shape.to_vec(),
            strides,
            offset: self.offset,
        })
    }

    /// Inserts a dimension of size 1 at `dim` (a view).
    pub fn unsqueeze(&self, dim: usize) -> Layout {
        let mut l = self.clone();
        let stride = if dim < self.rank() {
            self.strides[dim] * self.shape[dim]
        } else {
            1
        };
        l.shape.insert(dim, 1);
        l.strides.insert(dim, stride);
        l
    }

    /// Removes dimension `dim`, which must have size 1 (a view).
    pub fn squeeze(&self, dim: usize) -> Layout {
        let mut l = self.clone();
        l.shape.remove(dim);
        l.strides.remove(dim);
        l
    }
}

/// The broadcast shape of two shapes (numpy rules), or a `ShapeMismatch` naming `op`.
pub fn broadcast_shapes(op: &'static str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let da = if i + a.len() >= rank {
            a[i + a.len() - rank]
        } else {
            1
        };
        let db = if i + b.len() >= rank {
            b[i + b.len() - rank]
        } else {
            1
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => {
                return Err(Error::ShapeMismatch {
                    op,
                    lhs: a.to_vec(),
                    rhs: b.to_vec(),
                })
            }
        };
    }
    Ok(out)
}

/// Iterator over the storage indices of a layout in row-major logical order.
pub struct StridedIndex<'a> {
    layout: &'a Layout,
    index: Vec<usize>,
    next: Option<usize>,
    remaining: usize,
}

impl<'a> StridedIndex<'a> {
    fn new(layout: &'a Layout) -> Self {
        let n = layout.numel();
        StridedIndex {
            layout,
            index: vec![0; layout.rank()],
            next: (n > 0).then_some(layout.offset),
            remaining: n,
        }
    }
}

impl Iterator for StridedIndex<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        let current = self.next?;
        self.remaining -= 1;
        if self.remaining == 0 {
            self.next = None;
            return Some(current);
        }
        let mut pos = current;
        for d in (0..self.index.len()).rev() {
            self.index[d] += 1;
            pos += self.layout.strides[d];
            if self.index[d] < self.layout.shape[d] {
                self.next = Some(pos);
                return Some(current);
            }
            pos -= self.layout.strides[d] * self.index[d];
            self.index[d] = 0;
        }
        self.next = None;
        Some(current)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for StridedIndex<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_index_of_transpose() {
        let l = Layout::contiguous(&[2, 3]).transpose(0, 1);
        assert_eq!(l.indices().collect::<Vec<_>>(), vec![0, 3, 1, 4, 2, 5]);
        let b = Layout::contiguous(&[3]).broadcast_to("t", &[2, 3]).unwrap();
        assert_eq!(b.indices().collect::<Vec<_>>(), vec![0, 1, 2, 0, 1, 2]);
        let n = Layout::contiguous(&[4, 4]).narrow(1, 1, 2).narrow(0, 2, 2);
        assert_eq!(n.indices().collect::<Vec<_>>(), vec![9, 10, 13, 14]);
        assert!(Layout::contiguous(&[0, 3]).indices().next().is_none());
        assert_eq!(
            Layout::contiguous(&[]).indices().collect::<Vec<_>>(),
            vec![0]
        );
    }

    #[test]
    fn broadcast_rules() {
        assert_eq!(broadcast_shapes("t", &[3, 1], &[4]).unwrap(), vec![3, 4]);
        assert!(broadcast_shapes("t", &[3], &[4]).is_err());
    }
}
