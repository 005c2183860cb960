//! Numeric formats for mixed-precision training.
//!
//! `amp-dtype` is the bottom layer of `amp`: the runtime [`DType`] enum, the
//! [`Element`] trait tying Rust storage types to it, the 8-bit float formats
//! [`F8E4M3`] and [`F8E5M2`], rounding modes, exact slice conversion and
//! PyTorch's type promotion.
//!
//! ```
//! use amp_dtype::{bf16, DType, Element, F8E4M3, RoundingMode, RoundFrom};
//!
//! // Names parse as PyTorch spells them.
//! let dtype: DType = "bfloat16".parse()?;
//! assert_eq!(dtype, DType::BF16);
//! assert_eq!(DType::promote(DType::F16, DType::BF16)?, DType::F32);
//!
//! // Conversions round once, to nearest even.
//! assert_eq!(bf16::from_f64(1.0 + 1.0 / 256.0).to_f32(), 1.0); // a tie: to even
//! assert_eq!(F8E4M3::from_f32(300.0).to_f32(), 288.0);
//! assert!(F8E4M3::from_f32(1000.0).is_nan()); // E4M3FN has no infinity
//! assert_eq!(F8E4M3::from_f32_saturating(1000.0).to_f32(), 448.0);
//!
//! // Stochastic rounding is deterministic for a seed and element index.
//! let r = bf16::round_from_f32(1.001, RoundingMode::Stochastic { seed: 3 }, 17);
//! assert!(r.to_f32() == 1.0 || r.to_f32() == 1.0078125);
//! # Ok::<(), amp_dtype::Error>(())
//! ```

mod convert;
mod dtype;
mod element;
mod error;
mod format;
mod fp8;
mod round;

pub use convert::convert_slice;
pub use dtype::{DType, FInfo, ALL_DTYPES};
pub use element::Element;
pub use error::{Error, Result};
pub use fp8::{F8E4M3, F8E5M2};
pub use half::{bf16, f16};
pub use round::{round_slice, RoundFrom, RoundingMode};

/// Exact decoding of a narrow format's bit pattern, for tests and the accuracy suite.
pub mod bits {
    use crate::format;

    /// The exact value of an f16 bit pattern (independent of `half`).
    pub fn decode_f16(bits: u16) -> f64 {
        format::F16.decode(bits)
    }
    /// The exact value of a bf16 bit pattern (independent of `half`).
    pub fn decode_bf16(bits: u16) -> f64 {
        format::BF16.decode(bits)
    }
}
