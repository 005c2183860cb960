//! Tolerance presets, stated once: [`Tolerance`] bounds each element's error
//! (what the tests use), [`NormTolerance`] the norm-wise error of a whole
//! result (what `cargo xtask accuracy` reports).

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

    /// An f32 sum or mean accumulated in f32 (blocked or pairwise): rel 1e-6,
    /// abs 1e-6 — tighter than [`Tolerance::for_dtype`]'s f32 preset, which
    /// allows for polynomial approximations that a sum does not have. Scale
    /// the absolute part with the number of terms for long sums.
    pub const F32_SUM: Tolerance = Tolerance {
        rel: 1e-6,
        abs: 1e-6,
    };

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

/// Relative + absolute tolerance on the norm-wise error
/// `‖out − ref‖₂ ≤ rel · ‖ref‖₂ + abs · √n`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NormTolerance {
    /// Relative part.
    pub rel: f64,
    /// Absolute part (per element, for outputs whose reference is near zero).
    pub abs: f64,
}

impl NormTolerance {
    /// Exact: what a row that could not be measured (an op error) is held to.
    pub const EXACT: NormTolerance = NormTolerance { rel: 0.0, abs: 0.0 };

    /// The preset for results computed with f32 accumulation and rounded to `dtype`.
    ///
    /// - f32: 1e-5. A K = 4096 dot product accumulated in f32 has a typical
    ///   norm-wise error of about √K · 2⁻²⁴ ≈ 4e-6; the final rounding adds 6e-8.
    /// - f16: 1e-3. Rounding the output alone costs up to 2⁻¹¹ ≈ 4.9e-4
    ///   relative per element (norm-wise about 2.8e-4); f32 accumulation adds
    ///   nothing visible at this scale. An f16-accumulated reduction of a few
    ///   thousand terms exceeds it.
    /// - bf16: 1e-2. Output rounding costs up to 2⁻⁸ ≈ 3.9e-3 per element
    ///   (norm-wise about 2.2e-3); a bf16-accumulated sum of 4096 terms errs by
    ///   far more (it stalls once the partial sum is 256 times an addend).
    /// - f64: 1e-12 (the reference itself, rounded once).
    pub fn for_dtype(dtype: DType) -> NormTolerance {
        match dtype {
            DType::F64 => NormTolerance {
                rel: 1e-12,
                abs: 1e-300,
            },
            DType::F32 => NormTolerance {
                rel: 1e-5,
                abs: 1e-30,
            },
            DType::F16 => NormTolerance {
                rel: 1e-3,
                abs: 1e-7,
            },
            DType::BF16 => NormTolerance {
                rel: 1e-2,
                abs: 1e-30,
            },
            _ => NormTolerance::EXACT,
        }
    }
}
