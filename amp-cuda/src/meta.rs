//! Kernel parameter blocks: the [`StridedMeta`] that strided kernels walk, and
//! the coalescing of dimensions that keeps its rank small.

use amp_tensor::{Error, Result};
use cudarc::driver::DeviceRepr;

/// The most dimensions a strided kernel walks (after coalescing). Matches
/// `AMP_MAX_DIMS` in `kernels/common.cuh`.
pub const MAX_DIMS: usize = 8;

/// Mirrors `struct StridedMeta` in `kernels/common.cuh`: a shape and up to
/// three stride sets (in elements) walked together in row-major order.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct StridedMeta {
    ndim: i64,
    shape: [i64; MAX_DIMS],
    strides: [[i64; MAX_DIMS]; 3],
}

// SAFETY: `#[repr(C)]` plain integers with the same layout as the CUDA struct
// (one i64, then four arrays of MAX_DIMS i64s); every bit pattern is valid.
unsafe impl DeviceRepr for StridedMeta {}

impl StridedMeta {
    /// A meta over `shape` with up to three stride sets, coalescing dimensions
    /// that are contiguous in every set and dropping size-1 dimensions.
    /// An `Err` naming `op` if more than [`MAX_DIMS`] dimensions remain.
    pub fn new(op: &'static str, shape: &[usize], strides: &[&[usize]]) -> Result<StridedMeta> {
        debug_assert!(strides.len() <= 3 && strides.iter().all(|s| s.len() == shape.len()));
        // (size, [stride; k]) from the innermost dimension outwards.
        let mut dims: Vec<(usize, [usize; 3])> = Vec::new();
        for d in (0..shape.len()).rev() {
            if shape[d] == 1 {
                continue;
            }
            let mut s = [0usize; 3];
            for (k, st) in strides.iter().enumerate() {
                s[k] = st[d];
            }
            if let Some(last) = dims.last_mut() {
                let mergeable = (0..strides.len()).all(|k| s[k] == last.1[k] * last.0);
                if mergeable {
                    last.0 *= shape[d];
                    continue;
                }
            }
            dims.push((shape[d], s));
        }
        dims.reverse();
        if dims.len() > MAX_DIMS {
            return Err(Error::invalid(
                op,
                format!("a strided view of shape {shape:?} needs {} dimensions; the CUDA kernels walk at most {MAX_DIMS}", dims.len()),
            ));
        }
        Ok(Self::from_dims(&dims, strides.len()))
    }

    /// A meta over `shape` with one stride set, dimension by dimension (no
    /// coalescing: gather and scatter need the dimensions as they are).
    pub fn exact(op: &'static str, shape: &[usize], strides: &[usize]) -> Result<StridedMeta> {
        if shape.len() > MAX_DIMS {
            return Err(Error::invalid(
                op,
                format!(
                    "rank {} of shape {shape:?} exceeds the CUDA limit of {MAX_DIMS}",
                    shape.len()
                ),
            ));
        }
        let dims: Vec<(usize, [usize; 3])> = shape
            .iter()
            .zip(strides)
            .map(|(&d, &s)| (d, [s, 0, 0]))
            .collect();
        Ok(Self::from_dims(&dims, 1))
    }

    fn from_dims(dims: &[(usize, [usize; 3])], sets: usize) -> StridedMeta {
        let mut m = StridedMeta {
            ndim: dims.len() as i64,
            ..Default::default()
        };
        for (i, (size, s)) in dims.iter().enumerate() {
            m.shape[i] = *size as i64;
            for (set, &stride) in m.strides.iter_mut().zip(s).take(sets) {
                set[i] = stride as i64;
            }
        }
        m
    }

    /// Number of dimensions after coalescing.
    #[cfg(test)]
    pub fn ndim(&self) -> usize {
        self.ndim as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalesces_contiguous_and_drops_unit_dims() {
        let m = StridedMeta::new("t", &[2, 1, 3, 4], &[&[12, 12, 4, 1], &[12, 12, 4, 1]]).unwrap();
        assert_eq!(m.ndim(), 1);
        assert_eq!(m.shape[0], 24);
        // A transpose does not merge.
        let m = StridedMeta::new("t", &[3, 2], &[&[1, 3], &[2, 1]]).unwrap();
        assert_eq!(m.ndim(), 2);
        assert_eq!(
            (
                m.strides[0][0],
                m.strides[0][1],
                m.strides[1][0],
                m.strides[1][1]
            ),
            (1, 3, 2, 1)
        );
        // A broadcast (stride 0) dimension merges only with another broadcast one.
        let m = StridedMeta::new("t", &[4, 5, 6], &[&[0, 0, 1], &[30, 6, 1]]).unwrap();
        assert_eq!(m.ndim(), 2);
        assert_eq!(&m.shape[..2], &[20, 6]);
    }

    #[test]
    fn rank_zero_and_too_many_dims() {
        assert_eq!(StridedMeta::new("t", &[], &[&[], &[]]).unwrap().ndim(), 0);
        let shape = vec![2; 10];
        let strides: Vec<usize> = (0..10).map(|i| 1 << (2 * (9 - i))).collect();
        let e = StridedMeta::new(
            "copy",
            &shape,
            &[&strides, &strides.iter().map(|s| s / 2).collect::<Vec<_>>()],
        );
        assert!(e.is_err());
        assert!(StridedMeta::exact("gather", &[2; 9], &[1; 9]).is_err());
    }
}
