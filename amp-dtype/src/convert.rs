//! Exact scalar slice conversion between any two element types.

use crate::{Element, Error, Result};

/// Converts every element of `src` into `dst`, rounding once to nearest even.
///
/// Floats go through f64, which holds every value of every format here
/// exactly, so the only rounding is the final one. A length mismatch is an
/// `Err`, never a panic. amp-cpu has the SIMD-fast equivalent; it must agree
/// with this function bit for bit.
///
/// ```
/// use amp_dtype::{convert_slice, bf16};
/// let src = [1.0f32, 2.5, -0.1];
/// let mut dst = [bf16::ZERO; 3];
/// convert_slice(&src, &mut dst)?;
/// assert_eq!(dst[1].to_f32(), 2.5);
/// # Ok::<(), amp_dtype::Error>(())
/// ```
pub fn convert_slice<S: Element, D: Element>(src: &[S], dst: &mut [D]) -> Result<()> {
    if src.len() != dst.len() {
        return Err(Error::LengthMismatch { op: "convert_slice", src: src.len(), dst: dst.len() });
    }
    for (s, d) in src.iter().zip(dst.iter_mut()) {
        *d = D::from_f64(s.to_f64());
    }
    Ok(())
}
