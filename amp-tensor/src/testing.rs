//! Test helpers shared by the backend crates: a [`Tolerance`] with per-dtype
//! presets, [`assert_close`] to compare a tensor with a reference tensor, and
//! the [`test_device!`](crate::test_device) macro that instantiates one test
//! body per device.
//!
//! ```
//! use amp_tensor::testing::{assert_close, Tolerance};
//! use amp_tensor::{DType, Device, Result, Tensor};
//!
//! amp_tensor::test_device!(exp_matches_reference, |device: &Device| -> Result<()> {
//!     let x = Tensor::randn(&[3, 5], DType::F32, device, 0)?;
//!     let expected = x.to_device(&Device::reference())?.exp()?;
//!     assert_close(&x.exp()?, &expected, Tolerance::for_dtype(DType::F32))
//! }, [reference => Device::reference()]);
//! ```

use crate::{Device, Error, Result, Tensor};
use amp_dtype::DType;

/// An allowed difference: `|actual - expected| <= abs + rel · |expected|`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    /// Relative part.
    pub rel: f64,
    /// Absolute part (for results near zero).
    pub abs: f64,
}

impl Tolerance {
    /// Exact equality (NaN still never passes; inf must match inf).
    pub const EXACT: Tolerance = Tolerance { rel: 0.0, abs: 0.0 };

    /// The tolerance for one rounding to `dtype` plus a few f32 ulps of
    /// computation — the presets every backend test uses, stated here once:
    ///
    /// - f64: rel 1e-12 (f64 kernels are the reference's own code, or f64 sums in another order).
    /// - f32: rel 1e-5, abs 1e-6 — about 80 f32 ulps: f32 polynomials are
    ///   within a few ulps, f32 accumulation of short sums a few more.
    /// - bf16: rel 1e-2, abs 1e-3 — 2.5 bf16 ulps (2^-8): one rounding of an f32
    ///   result that may lie on the other side of a rounding boundary from the f64 one.
    /// - f16: rel 2e-3, abs 1e-4 — 2 f16 ulps (2^-10), for the same reason.
    /// - fp8: rel 0.15, abs 1e-2 — 2 E4M3 ulps.
    /// - integers and bool: exact.
    pub fn for_dtype(dtype: DType) -> Tolerance {
        match dtype {
            DType::F64 => Tolerance {
                rel: 1e-12,
                abs: 1e-14,
            },
            DType::F32 => Tolerance {
                rel: 1e-5,
                abs: 1e-6,
            },
            DType::BF16 => Tolerance {
                rel: 1e-2,
                abs: 1e-3,
            },
            DType::F16 => Tolerance {
                rel: 2e-3,
                abs: 1e-4,
            },
            DType::F8E4M3 | DType::F8E5M2 => Tolerance {
                rel: 0.15,
                abs: 1e-2,
            },
            DType::I64 | DType::U8 | DType::Bool => Tolerance::EXACT,
        }
    }

    /// This tolerance with the absolute part scaled by `factor` (e.g. `√K` for a dot product of length K).
    pub fn scale_abs(self, factor: f64) -> Tolerance {
        Tolerance {
            rel: self.rel,
            abs: self.abs * factor,
        }
    }

    /// This tolerance with both parts scaled by `factor`.
    pub fn scale(self, factor: f64) -> Tolerance {
        Tolerance {
            rel: self.rel * factor,
            abs: self.abs * factor,
        }
    }

    /// True if `actual` is within this tolerance of `expected`: NaN never
    /// passes unless both are NaN, and an infinity only matches the same infinity.
    pub fn accepts(&self, actual: f64, expected: f64) -> bool {
        if expected.is_nan() || actual.is_nan() {
            return expected.is_nan() && actual.is_nan();
        }
        if expected.is_infinite() || actual.is_infinite() {
            return actual == expected;
        }
        (actual - expected).abs() <= self.abs + self.rel * expected.abs()
    }
}

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

/// Turns a device argument of [`test_device!`](crate::test_device) into an
/// optional device (`Device` or `Option<Device>`; `None` skips the test).
pub fn optional_device(d: impl Into<Option<Device>>) -> Option<Device> {
    d.into()
}

/// Instantiates one `#[test]` per device for one test body.
///
/// `test_device!(name, body, [ident => device_expr, ...])` defines a module
/// `name` with a test per `ident`, each calling `body(&device)`. The body is a
/// closure `|device: &Device| -> Result<()>`; a device expression may be a
/// `Device` or an `Option<Device>` (`None`, e.g. no GPU here, prints
/// `skipped: <ident> not available` and passes without running the body).
/// amp-tensor knows no backend crate: the caller lists its devices.
#[macro_export]
macro_rules! test_device {
    ($name:ident, $body:expr, [$($dev:ident => $device:expr),+ $(,)?]) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[test]
                fn $dev() -> $crate::Result<()> {
                    match $crate::testing::optional_device($device) {
                        Some(device) => {
                            let body = $body;
                            body(&device)
                        }
                        None => {
                            eprintln!("skipped: {} not available", stringify!($dev));
                            Ok(())
                        }
                    }
                }
            )+
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerance_rejects_nan_and_misplaced_inf() {
        let t = Tolerance::for_dtype(DType::F32);
        assert!(t.accepts(1.0 + 5e-6, 1.0));
        assert!(!t.accepts(1.0 + 5e-5, 1.0));
        assert!(!t.accepts(f64::NAN, 1.0));
        assert!(!t.accepts(1.0, f64::NAN));
        assert!(t.accepts(f64::NAN, f64::NAN));
        assert!(!t.accepts(f64::INFINITY, f64::NEG_INFINITY));
        assert!(!t.accepts(1e300, f64::INFINITY));
        assert!(t.accepts(f64::INFINITY, f64::INFINITY));
        assert!(check_values(&[1.0, 2.0], &[1.0, 2.5], t).is_err());
    }

    crate::test_device!(macro_runs_the_body, |device: &Device| -> Result<()> {
        let x = Tensor::from_vec(vec![1.0f32, -2.0], &[2], device)?;
        assert_close(&x.abs()?, &Tensor::from_vec(vec![1.0f32, 2.0], &[2], device)?, Tolerance::EXACT)
    }, [reference => Device::reference(), absent => None::<Device>]);
}
