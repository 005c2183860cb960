//! Checked sizes and fallible allocation: a shape whose element count
//! overflows, or a buffer larger than the machine holds, is an `Err` naming the
//! op — never a wrapped count, a panic, or an abort in the allocator.

use crate::{Error, Result};
use amp_dtype::DType;
use std::sync::OnceLock;

/// The element count of `shape`, or [`Error::ShapeOverflow`] if it overflows `usize`.
pub fn checked_numel(op: &'static str, shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Error::ShapeOverflow {
            op,
            shape: shape.to_vec(),
        })
}

/// Bytes of physical memory plus swap (Linux: `/proc/meminfo`), read once;
/// `None` where it cannot be read.
fn machine_memory() -> Option<u128> {
    static MEMORY: OnceLock<Option<u128>> = OnceLock::new();
    *MEMORY.get_or_init(|| {
        let info = std::fs::read_to_string("/proc/meminfo").ok()?;
        let field = |name: &str| -> Option<u128> {
            let line = info.lines().find(|l| l.starts_with(name))?;
            let kib: u128 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        };
        Some(field("MemTotal:")? + field("SwapTotal:").unwrap_or(0))
    })
}

/// Errors unless a buffer of `numel` elements of `dtype` can exist here: its
/// byte size must fit in `isize` (Rust's limit for one allocation) and not
/// exceed this machine's memory plus swap. Asking is cheap (no allocation).
pub fn check_alloc(op: &'static str, numel: usize, dtype: DType) -> Result<()> {
    let bytes = numel as u128 * dtype.size_in_bytes() as u128;
    let oom = |limit: String| Error::OutOfMemory {
        op,
        numel,
        dtype,
        bytes,
        limit,
    };
    if bytes > isize::MAX as u128 {
        return Err(oom(format!(
            "more than the {} bytes one allocation may have",
            isize::MAX
        )));
    }
    match machine_memory() {
        Some(total) if bytes > total => Err(oom(format!(
            "this machine has {total} bytes of memory and swap"
        ))),
        _ => Ok(()),
    }
}

/// `n` copies of `value` in a new vector, or [`Error::OutOfMemory`] when the
/// allocator refuses (instead of aborting the process).
pub fn try_filled<T: Clone + amp_dtype::Element>(
    op: &'static str,
    n: usize,
    value: T,
) -> Result<Vec<T>> {
    check_alloc(op, n, T::DTYPE)?;
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| Error::OutOfMemory {
        op,
        numel: n,
        dtype: T::DTYPE,
        bytes: n as u128 * T::DTYPE.size_in_bytes() as u128,
        limit: String::new(),
    })?;
    v.resize(n, value);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflowing_counts_and_impossible_sizes_are_errors() {
        assert_eq!(checked_numel("t", &[2, 3, 4]).unwrap(), 24);
        assert_eq!(checked_numel("t", &[]).unwrap(), 1);
        assert!(matches!(
            checked_numel("t", &[(1 << 63) + 2, 2]),
            Err(Error::ShapeOverflow { .. })
        ));
        assert!(matches!(
            check_alloc("t", usize::MAX / 2, DType::F32),
            Err(Error::OutOfMemory { .. })
        ));
        let err = check_alloc("zeros", 1 << 50, DType::F32).unwrap_err();
        assert!(err.to_string().contains("zeros: out of memory"), "{err}");
        assert!(check_alloc("t", 1 << 20, DType::F64).is_ok());
        assert_eq!(try_filled("t", 3, 1.5f32).unwrap(), vec![1.5; 3]);
    }
}
