//! Comparing a result with an expected one: same shape, every element within
//! a [`Tolerance`], NaN only where NaN is expected, infinities in place.

use crate::Tolerance;
use amp_tensor::{Error, Result, Tensor};

/// Compares two equal-length value lists; an `Err` naming the worst mismatches.
pub fn check_values(actual: &[f64], expected: &[f64], tol: Tolerance) -> Result<()> {
    if actual.len() != expected.len() {
        return Err(Error::invalid(
            "assert_close",
            format!("{} values vs {} expected", actual.len(), expected.len()),
        ));
    }
    let bad: Vec<(usize, f64, f64)> = actual
        .iter()
        .zip(expected)
        .enumerate()
        .filter(|(_, (a, e))| !tol.accepts(**a, **e))
        .map(|(i, (a, e))| (i, *a, *e))
        .collect();
    if bad.is_empty() {
        return Ok(());
    }
    let shown: Vec<String> = bad
        .iter()
        .take(5)
        .map(|(i, a, e)| format!("[{i}] {a} vs {e}"))
        .collect();
    Err(Error::invalid(
        "assert_close",
        format!(
            "{} of {} values outside rel {} abs {}: {}",
            bad.len(),
            actual.len(),
            tol.rel,
            tol.abs,
            shown.join(", ")
        ),
    ))
}

/// Compares `actual` with `expected` (any devices): same shape, every value
/// within `tol` (NaN never passes alone, infinities must match in place and
/// sign); an `Err` that lists the first mismatches.
pub fn assert_close(actual: &Tensor, expected: &Tensor, tol: Tolerance) -> Result<()> {
    if actual.dims() != expected.dims() {
        return Err(Error::ShapeMismatch {
            op: "assert_close",
            lhs: actual.shape(),
            rhs: expected.shape(),
        });
    }
    check_values(&actual.to_f64_vec()?, &expected.to_f64_vec()?, tol)
}

/// Compares with the preset tolerance of `actual`'s dtype (see [`Tolerance::for_dtype`]).
pub fn assert_close_dtype(actual: &Tensor, expected: &Tensor) -> Result<()> {
    assert_close(actual, expected, Tolerance::for_dtype(actual.dtype()))
}

/// Compares a device result with the expected one (usually the reference
/// backend's), naming the case on failure; dtypes must agree too.
pub fn check(case: &str, actual: &Tensor, expected: &Tensor, tol: Tolerance) -> Result<()> {
    if actual.dtype() != expected.dtype() {
        return Err(Error::invalid(
            "check",
            format!(
                "{case}: dtype {} vs expected {}",
                actual.dtype(),
                expected.dtype()
            ),
        ));
    }
    assert_close(actual, expected, tol).map_err(|e| Error::invalid("check", format!("{case}: {e}")))
}
