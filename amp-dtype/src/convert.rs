//! Exact scalar slice conversion between any two element types.

use crate::{Element, Error, Result};
use std::any::{Any, TypeId};

/// Converts every element of `src` into `dst`, rounding once to nearest even.
///
/// Floats go through f64, which holds every value of every float format here
/// exactly, so the only rounding is the final one. `i64` values beyond 2^53
/// are not exact in f64: they are widened with round-to-odd (which makes the
/// final nearest-even rounding come out as if done directly, for every
/// target narrower than f64), and go to f64 and i64 directly. Float to
/// integer truncates toward zero and saturates (NaN gives 0); anything to
/// bool is `x != 0`. A length mismatch is an `Err`, never a panic. amp-cpu has
/// the SIMD-fast equivalent; it must agree with this function bit for bit.
///
/// ```
/// use amp_dtype::{convert_slice, bf16};
/// let src = [1.0f32, 2.5, -0.1];
/// let mut dst = [bf16::ZERO; 3];
/// convert_slice(&src, &mut dst)?;
/// assert_eq!(dst[1].to_f32(), 2.5);
///
/// // Large integers round once, as `as` does.
/// let big = [(1i64 << 60) + (1 << 36) + 1];
/// let mut out = [0f32];
/// convert_slice(&big, &mut out)?;
/// assert_eq!(out[0], big[0] as f32);
/// # Ok::<(), amp_dtype::Error>(())
/// ```
pub fn convert_slice<S: Element, D: Element>(src: &[S], dst: &mut [D]) -> Result<()> {
    if src.len() != dst.len() {
        return Err(Error::LengthMismatch {
            op: "convert_slice",
            src: src.len(),
            dst: dst.len(),
        });
    }
    if TypeId::of::<S>() == TypeId::of::<i64>() {
        for (s, d) in src.iter().zip(dst.iter_mut()) {
            let v = *(s as &dyn Any).downcast_ref::<i64>().expect("S is i64");
            *d = from_i64(v);
        }
    } else {
        for (s, d) in src.iter().zip(dst.iter_mut()) {
            *d = D::from_f64(s.to_f64());
        }
    }
    Ok(())
}

/// One `i64` into any element type, rounding once.
fn from_i64<D: Element>(v: i64) -> D {
    let mut out = D::default();
    let slot = &mut out as &mut dyn Any;
    if let Some(o) = slot.downcast_mut::<i64>() {
        *o = v;
    } else if let Some(o) = slot.downcast_mut::<f64>() {
        *o = v as f64;
    } else {
        out = D::from_f64(i64_to_f64_round_to_odd(v));
    }
    out
}

/// `v` as f64, rounded to odd: exact when it fits in 53 bits, else the
/// truncated value with its last mantissa bit forced to 1. Rounding that to
/// any format of at most 51 bits of precision equals rounding `v` directly.
fn i64_to_f64_round_to_odd(v: i64) -> f64 {
    let a = v.unsigned_abs();
    let significant = 64 - a.leading_zeros();
    let magnitude = if significant <= 53 {
        a as f64
    } else {
        let shift = significant - 53;
        let truncated = (a >> shift) << shift;
        let t = truncated as f64; // exact: 53 significant bits
        if truncated == a {
            t
        } else {
            f64::from_bits(t.to_bits() | 1)
        }
    };
    if v < 0 {
        -magnitude
    } else {
        magnitude
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_to_odd_widening() {
        assert_eq!(i64_to_f64_round_to_odd(1 << 53), 2f64.powi(53));
        assert_eq!(i64_to_f64_round_to_odd((1 << 53) + 1), 2f64.powi(53) + 2.0);
        assert_eq!(i64_to_f64_round_to_odd((1 << 53) + 2), 2f64.powi(53) + 2.0);
        assert_eq!(i64_to_f64_round_to_odd((1 << 53) + 3), 2f64.powi(53) + 2.0);
        assert_eq!(
            i64_to_f64_round_to_odd(-((1 << 54) + 4)),
            -(2f64.powi(54) + 4.0)
        );
        assert_eq!(i64_to_f64_round_to_odd(i64::MIN), -(2f64.powi(63)));
        assert_eq!(i64_to_f64_round_to_odd(i64::MAX), 2f64.powi(63) - 1024.0);
        assert_eq!(i64_to_f64_round_to_odd(-7), -7.0);
    }
}
