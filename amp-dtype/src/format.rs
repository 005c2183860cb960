//! A generic description of small binary floating-point formats, with an
//! exact decoder and a single-rounding encoder from `f64`.
//!
//! Every narrow format in this crate (f16, bf16, E4M3FN, E5M2) is described by
//! a [`Format`]; `from_f64` of each type goes through [`Format::encode`], so a
//! value is rounded once, directly, with no detour through f32.

use crate::round::RoundingMode;

/// How a format behaves at the top of its range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Top {
    /// IEEE-like: the all-ones exponent holds infinities and NaNs.
    Ieee,
    /// E4M3FN: no infinities; only S.1111.111 is NaN, the rest of the top
    /// binade is finite.
    FiniteOnly,
}

/// A binary floating-point format of at most 16 bits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Format {
    pub exponent_bits: u32,
    pub mantissa_bits: u32,
    pub top: Top,
    /// Canonical positive quiet NaN bit pattern.
    pub nan: u16,
}

/// Whether finite overflow saturates to the largest finite value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Overflow {
    /// Overflow gives infinity (or NaN where the format has no infinity).
    Ieee,
    /// Overflow clamps to ±max.
    Saturate,
}

pub(crate) const F16: Format = Format {
    exponent_bits: 5,
    mantissa_bits: 10,
    top: Top::Ieee,
    nan: 0x7E00,
};
pub(crate) const BF16: Format = Format {
    exponent_bits: 8,
    mantissa_bits: 7,
    top: Top::Ieee,
    nan: 0x7FC0,
};
pub(crate) const E4M3: Format = Format {
    exponent_bits: 4,
    mantissa_bits: 3,
    top: Top::FiniteOnly,
    nan: 0x7F,
};
pub(crate) const E5M2: Format = Format {
    exponent_bits: 5,
    mantissa_bits: 2,
    top: Top::Ieee,
    nan: 0x7E,
};

impl Format {
    const fn bias(&self) -> i32 {
        (1 << (self.exponent_bits - 1)) - 1
    }

    const fn sign_bit(&self) -> u16 {
        1 << (self.exponent_bits + self.mantissa_bits)
    }

    const fn exponent_mask(&self) -> u16 {
        ((1 << self.exponent_bits) - 1) as u16
    }

    /// Largest finite value.
    pub fn max(&self) -> f64 {
        let m = self.mantissa_bits as i32;
        match self.top {
            // Exponent field all-ones minus one, mantissa all ones.
            Top::Ieee => (2.0 - 2f64.powi(-m)) * 2f64.powi(self.bias()),
            // Top exponent is finite; mantissa all-ones there is NaN.
            Top::FiniteOnly => (2.0 - 2.0 * 2f64.powi(-m)) * 2f64.powi(self.bias() + 1),
        }
    }

    /// Smallest positive normal exponent (unbiased).
    fn min_exponent(&self) -> i32 {
        1 - self.bias()
    }

    /// Decodes a bit pattern exactly.
    pub fn decode(&self, bits: u16) -> f64 {
        let m_bits = self.mantissa_bits;
        let sign = if bits & self.sign_bit() != 0 {
            -1.0
        } else {
            1.0
        };
        let exp = (bits >> m_bits) & self.exponent_mask();
        let man = bits & ((1 << m_bits) - 1);
        let all_ones = exp == self.exponent_mask();
        match self.top {
            Top::Ieee if all_ones => {
                return if man == 0 {
                    sign * f64::INFINITY
                } else {
                    f64::NAN
                };
            }
            Top::FiniteOnly if all_ones && man == (1 << m_bits) - 1 => return f64::NAN,
            _ => {}
        }
        let frac = man as f64 / 2f64.powi(m_bits as i32);
        if exp == 0 {
            sign * frac * 2f64.powi(self.min_exponent())
        } else {
            sign * (1.0 + frac) * 2f64.powi(exp as i32 - self.bias())
        }
    }

    /// Encodes a finite non-negative value that is exactly representable.
    fn encode_exact(&self, value: f64) -> u16 {
        if value == 0.0 {
            return 0;
        }
        let m = self.mantissa_bits as i32;
        let min_e = self.min_exponent();
        if value < 2f64.powi(min_e) {
            return (value / 2f64.powi(min_e - m)) as u16;
        }
        let e = exponent_of(value);
        let man = (value / 2f64.powi(e - m)) as u16 - (1 << m);
        (((e + self.bias()) as u16) << m) | man
    }

    /// The value the bit pattern of positive infinity, or NaN where the format has none.
    fn overflow_bits(&self) -> u16 {
        match self.top {
            Top::Ieee => self.exponent_mask() << self.mantissa_bits,
            Top::FiniteOnly => self.nan,
        }
    }

    /// Rounds `x` into this format once, with the given rounding mode and overflow rule.
    pub fn encode(&self, x: f64, mode: RoundingMode, overflow: Overflow, index: u64) -> u16 {
        let sign = if x.is_sign_negative() {
            self.sign_bit()
        } else {
            0
        };
        if x.is_nan() {
            return self.nan | sign;
        }
        let a = x.abs();
        let max = self.max();
        if a.is_infinite() {
            return sign
                | match (overflow, self.top) {
                    (Overflow::Saturate, Top::FiniteOnly) => self.encode_exact(max),
                    _ => self.overflow_bits(),
                };
        }
        // The spacing of representable values around `a`.
        let m = self.mantissa_bits as i32;
        let min_e = self.min_exponent();
        let e = if a < 2f64.powi(min_e) {
            min_e
        } else {
            exponent_of(a)
        };
        let quantum = 2f64.powi(e - m);
        let scaled = a / quantum; // exact: division by a power of two
        let lower = scaled.floor();
        let frac = scaled - lower;
        let up = match mode {
            RoundingMode::NearestEven => frac > 0.5 || (frac == 0.5 && lower % 2.0 == 1.0),
            RoundingMode::TowardZero => false,
            RoundingMode::Stochastic { seed } => {
                frac > 0.0 && crate::round::uniform(seed, index) < frac
            }
        };
        let rounded = (lower + if up { 1.0 } else { 0.0 }) * quantum;
        if rounded > max {
            let clamp = overflow == Overflow::Saturate || mode == RoundingMode::TowardZero;
            return sign
                | if clamp {
                    self.encode_exact(max)
                } else {
                    self.overflow_bits()
                };
        }
        sign | self.encode_exact(rounded)
    }
}

/// `floor(log2(a))` for a positive finite `a`, exactly.
fn exponent_of(a: f64) -> i32 {
    let bits = a.to_bits();
    let biased = ((bits >> 52) & 0x7FF) as i32;
    if biased == 0 {
        // f64 subnormal: far below every format here, but be exact anyway.
        -1074 + (63 - (bits & ((1 << 52) - 1)).leading_zeros() as i32)
    } else {
        biased - 1023
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_values() {
        assert_eq!(F16.max(), 65504.0);
        assert_eq!(E4M3.max(), 448.0);
        assert_eq!(E5M2.max(), 57344.0);
        assert_eq!(BF16.max(), half::bf16::MAX.to_f64());
    }

    #[test]
    fn exact_values_round_trip_through_encode() {
        for fmt in [F16, BF16, E4M3, E5M2] {
            let n = 1u32 << (1 + fmt.exponent_bits + fmt.mantissa_bits);
            for bits in 0..n {
                let v = fmt.decode(bits as u16);
                if v.is_nan() {
                    continue;
                }
                let back = fmt.encode(v, RoundingMode::NearestEven, Overflow::Ieee, 0);
                assert_eq!(back, bits as u16, "{fmt:?} {bits:#x} {v}");
            }
        }
    }
}
