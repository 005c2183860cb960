//! The runtime [`DType`] enum, its names, `finfo` and type promotion.

use crate::{Error, Result};
use std::fmt;
use std::str::FromStr;

/// The element type of a tensor, known at run time.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum DType {
    /// IEEE 754 binary64.
    F64,
    /// IEEE 754 binary32.
    F32,
    /// IEEE 754 binary16.
    F16,
    /// bfloat16: f32's exponent range with 8 significant bits.
    BF16,
    /// OCP 8-bit float E4M3FN: bias 7, max 448, no infinities, NaN = S.1111.111.
    F8E4M3,
    /// OCP 8-bit float E5M2: bias 15, max 57344, has infinities.
    F8E5M2,
    /// 64-bit signed integer (class labels, indices).
    I64,
    /// 8-bit unsigned integer.
    U8,
    /// Boolean (stored as one byte, 0 or 1).
    Bool,
}

/// Every dtype, in a fixed order (useful for tables and tests).
pub const ALL_DTYPES: [DType; 9] = [
    DType::F64,
    DType::F32,
    DType::F16,
    DType::BF16,
    DType::F8E4M3,
    DType::F8E5M2,
    DType::I64,
    DType::U8,
    DType::Bool,
];

/// Accepted spellings for [`DType::from_str`], PyTorch's and Rust's.
const NAMES: &[(&str, DType)] = &[
    ("f64", DType::F64),
    ("float64", DType::F64),
    ("double", DType::F64),
    ("f32", DType::F32),
    ("float32", DType::F32),
    ("float", DType::F32),
    ("f16", DType::F16),
    ("float16", DType::F16),
    ("half", DType::F16),
    ("bf16", DType::BF16),
    ("bfloat16", DType::BF16),
    ("f8e4m3", DType::F8E4M3),
    ("float8_e4m3fn", DType::F8E4M3),
    ("e4m3", DType::F8E4M3),
    ("f8e5m2", DType::F8E5M2),
    ("float8_e5m2", DType::F8E5M2),
    ("e5m2", DType::F8E5M2),
    ("i64", DType::I64),
    ("int64", DType::I64),
    ("long", DType::I64),
    ("u8", DType::U8),
    ("uint8", DType::U8),
    ("bool", DType::Bool),
];

impl DType {
    /// Bytes one element occupies in storage.
    pub const fn size_in_bytes(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::F8E4M3 | DType::F8E5M2 | DType::U8 | DType::Bool => 1,
        }
    }

    /// True for the floating-point dtypes (f64, f32, f16, bf16, fp8).
    pub const fn is_float(self) -> bool {
        matches!(
            self,
            DType::F64 | DType::F32 | DType::F16 | DType::BF16 | DType::F8E4M3 | DType::F8E5M2
        )
    }

    /// True for the 16- and 8-bit floating formats that mixed precision runs in.
    pub const fn is_low_precision_float(self) -> bool {
        matches!(
            self,
            DType::F16 | DType::BF16 | DType::F8E4M3 | DType::F8E5M2
        )
    }

    /// The canonical short name (`"bf16"`, `"f32"`, …).
    pub const fn name(self) -> &'static str {
        match self {
            DType::F64 => "f64",
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F8E4M3 => "f8e4m3",
            DType::F8E5M2 => "f8e5m2",
            DType::I64 => "i64",
            DType::U8 => "u8",
            DType::Bool => "bool",
        }
    }

    /// PyTorch's name for the dtype (`"bfloat16"`, `"float32"`, …).
    pub const fn torch_name(self) -> &'static str {
        match self {
            DType::F64 => "float64",
            DType::F32 => "float32",
            DType::F16 => "float16",
            DType::BF16 => "bfloat16",
            DType::F8E4M3 => "float8_e4m3fn",
            DType::F8E5M2 => "float8_e5m2",
            DType::I64 => "int64",
            DType::U8 => "uint8",
            DType::Bool => "bool",
        }
    }

    /// Machine limits of a floating dtype, as `torch.finfo`; an `Err` for integer dtypes.
    pub fn finfo(self) -> Result<FInfo> {
        let f = |bits, exponent_bits, mantissa_bits, max: f64, has_inf| {
            let bias = (1i32 << (exponent_bits - 1)) - 1;
            let min_exp = 1 - bias;
            FInfo {
                bits,
                exponent_bits,
                mantissa_bits,
                eps: 2f64.powi(-(mantissa_bits as i32)),
                max,
                min: -max,
                smallest_normal: 2f64.powi(min_exp),
                smallest_subnormal: 2f64.powi(min_exp - mantissa_bits as i32),
                has_inf,
            }
        };
        Ok(match self {
            DType::F64 => f(64, 11, 52, f64::MAX, true),
            DType::F32 => f(32, 8, 23, f32::MAX as f64, true),
            DType::F16 => f(16, 5, 10, 65504.0, true),
            DType::BF16 => f(16, 8, 7, half::bf16::MAX.to_f64(), true),
            DType::F8E4M3 => f(8, 4, 3, 448.0, false),
            DType::F8E5M2 => f(8, 5, 2, 57344.0, true),
            other => {
                return Err(Error::NotFloat {
                    op: "finfo",
                    dtype: other,
                })
            }
        })
    }

    /// The dtype two operands are computed in, as `torch.promote_types`.
    ///
    /// Floats beat integers, integers beat bool, the wider float wins, and
    /// f16 with bf16 gives f32. Float8 types only promote with themselves;
    /// any other pairing is an `Err`, as in PyTorch.
    pub fn promote(a: DType, b: DType) -> Result<DType> {
        use DType::*;
        if a == b {
            return Ok(a);
        }
        if matches!(a, F8E4M3 | F8E5M2) || matches!(b, F8E4M3 | F8E5M2) {
            return Err(Error::PromotionNotSupported { lhs: a, rhs: b });
        }
        let rank = |d: DType| match d {
            Bool => 0,
            U8 => 1,
            I64 => 2,
            F16 | BF16 => 3,
            F32 => 4,
            F64 => 5,
            F8E4M3 | F8E5M2 => unreachable!("handled above"),
        };
        if matches!((a, b), (F16, BF16) | (BF16, F16)) {
            return Ok(F32);
        }
        Ok(if rank(a) >= rank(b) { a } else { b })
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DType {
    type Err = Error;

    fn from_str(s: &str) -> Result<DType> {
        let key = s.trim().to_ascii_lowercase();
        let key = key.strip_prefix("torch.").unwrap_or(&key);
        NAMES
            .iter()
            .find(|(name, _)| *name == key)
            .map(|(_, d)| *d)
            .ok_or_else(|| Error::UnknownDType {
                name: s.to_string(),
                valid: NAMES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "),
            })
    }
}

/// Machine limits of a floating-point format (`torch.finfo`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FInfo {
    /// Total bits.
    pub bits: u32,
    /// Exponent field width.
    pub exponent_bits: u32,
    /// Stored mantissa (fraction) bits.
    pub mantissa_bits: u32,
    /// Difference between 1.0 and the next larger value.
    pub eps: f64,
    /// Largest finite value.
    pub max: f64,
    /// Most negative finite value (`-max`).
    pub min: f64,
    /// Smallest positive normal value (`torch.finfo.tiny`).
    pub smallest_normal: f64,
    /// Smallest positive subnormal value.
    pub smallest_subnormal: f64,
    /// Whether the format can represent infinities.
    pub has_inf: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_names_and_errors() {
        assert_eq!("bf16".parse::<DType>().unwrap(), DType::BF16);
        assert_eq!("bfloat16".parse::<DType>().unwrap(), DType::BF16);
        assert_eq!("torch.float16".parse::<DType>().unwrap(), DType::F16);
        assert_eq!("Float32".parse::<DType>().unwrap(), DType::F32);
        let err = "float128".parse::<DType>().unwrap_err().to_string();
        assert!(
            err.contains("float128") && err.contains("bfloat16") && err.contains("f32"),
            "{err}"
        );
        for d in ALL_DTYPES {
            assert_eq!(d.name().parse::<DType>().unwrap(), d);
            assert_eq!(d.torch_name().parse::<DType>().unwrap(), d);
        }
    }

    #[test]
    fn finfo_matches_torch_published_values() {
        // Values printed by torch.finfo(...) for each type.
        let f16 = DType::F16.finfo().unwrap();
        assert_eq!(
            (f16.eps, f16.max, f16.smallest_normal),
            (0.0009765625, 65504.0, 6.103515625e-05)
        );
        assert_eq!(f16.smallest_subnormal, 5.960464477539063e-08);
        let bf16 = DType::BF16.finfo().unwrap();
        assert_eq!((bf16.eps, bf16.max), (0.0078125, 3.3895313892515355e38));
        assert_eq!(bf16.smallest_normal, 1.1754943508222875e-38);
        let e4 = DType::F8E4M3.finfo().unwrap();
        assert_eq!(
            (e4.eps, e4.max, e4.smallest_normal),
            (0.125, 448.0, 0.015625)
        );
        let e5 = DType::F8E5M2.finfo().unwrap();
        assert_eq!(
            (e5.eps, e5.max, e5.smallest_normal),
            (0.25, 57344.0, 6.103515625e-05)
        );
        let f32i = DType::F32.finfo().unwrap();
        assert_eq!(f32i.eps, f32::EPSILON as f64);
        assert_eq!(f32i.smallest_normal, f32::MIN_POSITIVE as f64);
        assert!(DType::I64.finfo().is_err());
    }

    #[test]
    fn promote_matches_torch_promote_types() {
        use DType::*;
        // (a, b, torch.promote_types(a, b)) as published by PyTorch.
        let table = [
            (F16, BF16, F32),
            (F16, F32, F32),
            (BF16, F32, F32),
            (F32, F64, F64),
            (F16, F64, F64),
            (BF16, BF16, BF16),
            (I64, F16, F16),
            (I64, BF16, BF16),
            (I64, F32, F32),
            (Bool, I64, I64),
            (U8, I64, I64),
            (Bool, U8, U8),
            (Bool, F16, F16),
            (U8, BF16, BF16),
            (F8E4M3, F8E4M3, F8E4M3),
        ];
        for (a, b, want) in table {
            assert_eq!(DType::promote(a, b).unwrap(), want, "{a} {b}");
            assert_eq!(DType::promote(b, a).unwrap(), want, "{b} {a}");
        }
        assert!(DType::promote(F8E4M3, F8E5M2).is_err());
        assert!(DType::promote(F8E4M3, F32).is_err());
    }

    #[test]
    fn promote_full_table_matches_torch() {
        use DType::*;
        // torch.promote_types(row, column), printed by PyTorch 2.x.
        let order = [Bool, U8, I64, F16, BF16, F32, F64];
        let table = [
            [Bool, U8, I64, F16, BF16, F32, F64],
            [U8, U8, I64, F16, BF16, F32, F64],
            [I64, I64, I64, F16, BF16, F32, F64],
            [F16, F16, F16, F16, F32, F32, F64],
            [BF16, BF16, BF16, F32, BF16, F32, F64],
            [F32, F32, F32, F32, F32, F32, F64],
            [F64, F64, F64, F64, F64, F64, F64],
        ];
        for (i, a) in order.into_iter().enumerate() {
            for (j, b) in order.into_iter().enumerate() {
                assert_eq!(DType::promote(a, b).unwrap(), table[i][j], "{a} {b}");
            }
        }
        // Float8 types promote only with themselves; every other pairing is
        // PyTorch's "Promotion for Float8 Types is not supported" error.
        for f8 in [F8E4M3, F8E5M2] {
            assert_eq!(DType::promote(f8, f8).unwrap(), f8);
            for other in ALL_DTYPES.into_iter().filter(|&d| d != f8) {
                for (a, b) in [(f8, other), (other, f8)] {
                    let err = DType::promote(a, b).unwrap_err().to_string();
                    assert!(
                        err.contains(a.name()) && err.contains(b.name()) && err.contains("float8"),
                        "{err}"
                    );
                }
            }
        }
    }
}
