//! The [`Element`] trait: the static side of [`DType`], one impl per storage type.

use crate::round::{RoundFrom, RoundingMode};
use crate::{DType, F8E4M3, F8E5M2};
use half::{bf16, f16};

/// A Rust type that tensor storage can hold, tied to its [`DType`].
///
/// Conversions from f64 round once, directly, to nearest even; integer types
/// truncate toward zero and saturate, booleans are `x != 0`.
pub trait Element: Copy + Send + Sync + std::fmt::Debug + PartialEq + Default + 'static {
    /// The runtime dtype of this type.
    const DTYPE: DType;
    /// Exact widening to f64 (integers beyond 2^53 round).
    fn to_f64(self) -> f64;
    /// Rounds once from f64.
    fn from_f64(v: f64) -> Self;
    /// Conversion to f32 (exact for every 16/8-bit float).
    fn to_f32(self) -> f32;
    /// Rounds once from f32.
    fn from_f32(v: f32) -> Self;
}

impl Element for f64 {
    const DTYPE: DType = DType::F64;
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f64(v: f64) -> Self {
        v
    }
    fn to_f32(self) -> f32 {
        self as f32
    }
    fn from_f32(v: f32) -> Self {
        v as f64
    }
}

impl Element for f32 {
    const DTYPE: DType = DType::F32;
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn to_f32(self) -> f32 {
        self
    }
    fn from_f32(v: f32) -> Self {
        v
    }
}

macro_rules! narrow_float {
    ($ty:ty, $dtype:expr, $from_f32:expr, $to_f32:expr) => {
        impl Element for $ty {
            const DTYPE: DType = $dtype;
            fn to_f64(self) -> f64 {
                #[allow(clippy::redundant_closure_call)]
                ($to_f32(self) as f64)
            }
            fn from_f64(v: f64) -> Self {
                <$ty as RoundFrom>::round_from_f64(v, RoundingMode::NearestEven, 0)
            }
            fn to_f32(self) -> f32 {
                #[allow(clippy::redundant_closure_call)]
                $to_f32(self)
            }
            fn from_f32(v: f32) -> Self {
                #[allow(clippy::redundant_closure_call)]
                $from_f32(v)
            }
        }
    };
}

narrow_float!(f16, DType::F16, f16::from_f32, f16::to_f32);
narrow_float!(bf16, DType::BF16, bf16::from_f32, bf16::to_f32);
narrow_float!(F8E4M3, DType::F8E4M3, F8E4M3::from_f32, F8E4M3::to_f32);
narrow_float!(F8E5M2, DType::F8E5M2, F8E5M2::from_f32, F8E5M2::to_f32);

macro_rules! integer {
    ($ty:ty, $dtype:expr) => {
        impl Element for $ty {
            const DTYPE: DType = $dtype;
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn from_f64(v: f64) -> Self {
                v as $ty
            }
            fn to_f32(self) -> f32 {
                self as f32
            }
            fn from_f32(v: f32) -> Self {
                v as $ty
            }
        }
    };
}

integer!(i64, DType::I64);
integer!(u8, DType::U8);

impl Element for bool {
    const DTYPE: DType = DType::Bool;
    fn to_f64(self) -> f64 {
        if self {
            1.0
        } else {
            0.0
        }
    }
    fn from_f64(v: f64) -> Self {
        v != 0.0
    }
    fn to_f32(self) -> f32 {
        self.to_f64() as f32
    }
    fn from_f32(v: f32) -> Self {
        v != 0.0
    }
}
