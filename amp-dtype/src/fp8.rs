//! The two OCP 8-bit float formats, as newtypes over their bit patterns.

use crate::format::{self, Overflow};
use crate::round::RoundingMode;
use std::fmt;

macro_rules! fp8_type {
    ($(#[$doc:meta])* $name:ident, $fmt:expr, $max:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
        #[repr(transparent)]
        pub struct $name(u8);

        impl $name {
            /// Largest finite value.
            pub const MAX: f32 = $max;

            /// Wraps a raw bit pattern.
            pub const fn from_bits(bits: u8) -> Self {
                Self(bits)
            }

            /// The raw bit pattern.
            pub const fn to_bits(self) -> u8 {
                self.0
            }

            /// Rounds to nearest even; overflow does not saturate (see the type docs).
            pub fn from_f32(x: f32) -> Self {
                Self::from_f64(x as f64)
            }

            /// Rounds to nearest even once, directly from f64; overflow does not saturate.
            pub fn from_f64(x: f64) -> Self {
                Self($fmt.encode(x, RoundingMode::NearestEven, Overflow::Ieee, 0) as u8)
            }

            /// Rounds to nearest even, clamping finite overflow to ±max.
            /// Infinities stay infinite where the format has them, else become ±max.
            pub fn from_f32_saturating(x: f32) -> Self {
                Self($fmt.encode(x as f64, RoundingMode::NearestEven, Overflow::Saturate, 0) as u8)
            }

            /// The exact value as f32.
            pub fn to_f32(self) -> f32 {
                $fmt.decode(self.0 as u16) as f32
            }

            /// The exact value as f64.
            pub fn to_f64(self) -> f64 {
                $fmt.decode(self.0 as u16)
            }

            /// True for any NaN pattern.
            pub fn is_nan(self) -> bool {
                self.to_f64().is_nan()
            }

            /// True for values that are neither infinite nor NaN.
            pub fn is_finite(self) -> bool {
                self.to_f64().is_finite()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.to_f32(), f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.to_f32(), f)
            }
        }
    };
}

fp8_type!(
    /// OCP FP8 E4M3FN: 1 sign, 4 exponent (bias 7), 3 mantissa bits; max 448,
    /// no infinities, NaN = S.1111.111. `from_f32` overflow gives NaN (as
    /// ml_dtypes does); use `from_f32_saturating` to clamp.
    F8E4M3,
    format::E4M3,
    448.0
);

fp8_type!(
    /// OCP FP8 E5M2: 1 sign, 5 exponent (bias 15), 2 mantissa bits; max 57344,
    /// IEEE-like infinities and NaNs. `from_f32` overflow gives ±inf.
    F8E5M2,
    format::E5M2,
    57344.0
);
